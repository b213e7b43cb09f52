//! Cloud billing exports, read as streams: AWS Cost and Usage Report (legacy CSV with
//! `lineItem/…` columns, and CUR 2.0 with snake_case columns) and the FinOps FOCUS 1.x CSV that
//! GCP and Azure export. Plain or gzip (`.gz`). Each line becomes a [`BillingLine`] with its
//! identity, day, tenant and service (from the configured tags), or a [`BadRow`] with its line
//! number: nothing is dropped silently.
//!
//! Credits, refunds and Savings Plans negations are lines with negative cost in all three
//! formats; they are summed like any other line, so the billed total is what the invoice says.

use super::prices::{parse_day, DAY_MS};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::Read;

/// Most malformed rows reported one by one (all are counted).
pub const MAX_BAD_ROWS_LISTED: usize = 100;
/// The service of a line without the service tag (or with an unknown value).
pub const UNALLOCATED: &str = "unallocated";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Aws,
    Gcp,
    Azure,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Aws => "aws",
            Provider::Gcp => "gcp",
            Provider::Azure => "azure",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "aws" => Some(Provider::Aws),
            "gcp" => Some(Provider::Gcp),
            "azure" => Some(Provider::Azure),
            _ => None,
        }
    }
}

/// The export format, told by the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    CurLegacy,
    Cur2,
    Focus,
}

/// One billed line, normalised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BillingLine {
    /// The line item's identity: `identity/LineItemId` + `identity/TimeInterval` in CUR, a
    /// SHA-256 of the row's fields in FOCUS (which has no line id).
    pub line_id: String,
    pub day: i64,
    pub tenant: Option<String>,
    /// One of [`super::usage::SERVICES`] or [`UNALLOCATED`].
    pub service: String,
    /// The provider's own service name (`AmazonEC2`, `Compute Engine`, …).
    pub provider_service: String,
    pub cost: f64,
    pub currency: String,
}

/// A row that could not be read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BadRow {
    /// 1-based line of the file (the header is line 1).
    pub line: u64,
    pub error: String,
}

/// What a read found.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReadStats {
    pub rows: u64,
    pub in_window: u64,
    pub outside_window: u64,
    pub malformed: u64,
    /// The first [`MAX_BAD_ROWS_LISTED`] malformed rows.
    pub bad_rows: Vec<BadRow>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{0}")]
    Header(String),
    #[error("reading the export: {0}")]
    Io(String),
    #[error("{0}")]
    Sink(String),
}

/// Which tags carry the tenant and the service (`[cost] tenant_tag`, `service_tag`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tags {
    pub tenant: String,
    pub service: String,
}

/// Column positions of one format.
struct Columns {
    format: Format,
    cost: usize,
    start: usize,
    service: usize,
    currency: Option<usize>,
    /// Identity columns (CUR); none: hash the row (FOCUS).
    identity: Vec<usize>,
    /// Per-tag columns (legacy CUR: `resourceTags/user:<tag>`).
    tenant_col: Option<usize>,
    service_col: Option<usize>,
    /// A JSON map of tags (CUR 2.0 `resource_tags`, FOCUS `Tags`).
    tags_json: Option<usize>,
}

fn find(h: &csv::StringRecord, name: &str) -> Option<usize> {
    h.iter().position(|c| c.trim() == name)
}

fn columns(h: &csv::StringRecord, provider: Provider, tags: &Tags) -> Result<Columns, ReadError> {
    let need = |name: &str| {
        find(h, name).ok_or_else(|| ReadError::Header(format!("the header has no {name} column")))
    };
    let format = if find(h, "lineItem/UnblendedCost").is_some() {
        Format::CurLegacy
    } else if find(h, "line_item_unblended_cost").is_some() {
        Format::Cur2
    } else if find(h, "BilledCost").is_some() {
        Format::Focus
    } else {
        return Err(ReadError::Header(
            "not a billing export: the header has none of lineItem/UnblendedCost (AWS CUR), \
             line_item_unblended_cost (CUR 2.0), BilledCost (FOCUS)"
                .into(),
        ));
    };
    let is_cur = format != Format::Focus;
    if is_cur != (provider == Provider::Aws) {
        return Err(ReadError::Header(format!(
            "a {format:?} export under provider {}: AWS exports CUR, GCP and Azure FOCUS",
            provider.as_str()
        )));
    }
    Ok(match format {
        Format::CurLegacy => Columns {
            format,
            cost: need("lineItem/UnblendedCost")?,
            start: need("lineItem/UsageStartDate")?,
            service: need("lineItem/ProductCode")?,
            currency: find(h, "lineItem/CurrencyCode"),
            identity: vec![need("identity/LineItemId")?, need("identity/TimeInterval")?],
            tenant_col: find(h, &format!("resourceTags/user:{}", tags.tenant)),
            service_col: find(h, &format!("resourceTags/user:{}", tags.service)),
            tags_json: None,
        },
        Format::Cur2 => Columns {
            format,
            cost: need("line_item_unblended_cost")?,
            start: need("line_item_usage_start_date")?,
            service: need("line_item_product_code")?,
            currency: find(h, "line_item_currency_code"),
            identity: vec![
                need("identity_line_item_id")?,
                need("identity_time_interval")?,
            ],
            tenant_col: None,
            service_col: None,
            tags_json: find(h, "resource_tags"),
        },
        Format::Focus => Columns {
            format,
            cost: need("BilledCost")?,
            start: need("ChargePeriodStart")?,
            service: need("ServiceName")?,
            currency: find(h, "BillingCurrency"),
            identity: vec![],
            tenant_col: None,
            service_col: None,
            tags_json: find(h, "Tags"),
        },
    })
}

/// Day of a billing timestamp: RFC 3339 (any offset), or a naive `YYYY-MM-DD[ T]HH:MM:SS`
/// / `YYYY-MM-DD` read as UTC.
pub fn day_of_timestamp(s: &str) -> Result<i64, String> {
    let s = s.trim();
    if let Ok(t) = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339) {
        return Ok((t.unix_timestamp() * 1000).div_euclid(DAY_MS));
    }
    let date = s
        .get(..10)
        .ok_or_else(|| format!("not a timestamp: {s:?}"))?;
    let rest = &s[10..];
    if !(rest.is_empty() || rest.starts_with('T') || rest.starts_with(' ')) {
        return Err(format!("not a timestamp: {s:?}"));
    }
    parse_day(date)
}

/// The tag `key` of a JSON tag map; CUR 2.0 spells user tags `user_<key>` with `-`/`:` as `_`.
fn json_tag(map: &serde_json::Map<String, serde_json::Value>, key: &str) -> Option<String> {
    let cur2 = format!("user_{}", key.replace(['-', ':', '.'], "_"));
    [key, cur2.as_str()]
        .iter()
        .find_map(|k| map.get(*k))
        .and_then(|v| v.as_str().map(str::to_string))
}

fn service_of(tag: Option<String>) -> String {
    match tag {
        Some(s) if super::usage::SERVICES.contains(&s.as_str()) => s,
        _ => UNALLOCATED.to_string(),
    }
}

fn line_of(
    rec: &csv::StringRecord,
    c: &Columns,
    tags: &Tags,
    default_currency: &str,
) -> Result<BillingLine, String> {
    let get = |i: usize, what: &str| rec.get(i).ok_or_else(|| format!("no {what} field"));
    let cost_s = get(c.cost, "cost")?.trim();
    let cost: f64 = cost_s
        .parse()
        .map_err(|_| format!("cost is not a number: {cost_s:?}"))?;
    if !cost.is_finite() {
        return Err(format!("cost is not finite: {cost_s:?}"));
    }
    let day = day_of_timestamp(get(c.start, "usage start")?)?;
    let (mut tenant, mut service) = (None, None);
    let non_empty = |s: &str| (!s.trim().is_empty()).then(|| s.trim().to_string());
    if let Some(i) = c.tenant_col {
        tenant = rec.get(i).and_then(non_empty);
    }
    if let Some(i) = c.service_col {
        service = rec.get(i).and_then(non_empty);
    }
    if let Some(i) = c.tags_json {
        let raw = rec.get(i).unwrap_or("").trim();
        if !raw.is_empty() {
            let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(raw)
                .map_err(|e| format!("tags are not a JSON object: {e}"))?;
            tenant = json_tag(&map, &tags.tenant);
            service = json_tag(&map, &tags.service);
        }
    }
    let line_id = if c.identity.is_empty() {
        let mut h = Sha256::new();
        for f in rec.iter() {
            h.update(f.as_bytes());
            h.update([0x1f]);
        }
        hex(&h.finalize())
    } else {
        let mut id = String::new();
        for (n, &i) in c.identity.iter().enumerate() {
            let v = get(i, "identity")?.trim();
            if v.is_empty() {
                return Err("empty line item identity".into());
            }
            if n > 0 {
                id.push('|');
            }
            id.push_str(v);
        }
        id
    };
    let currency = c
        .currency
        .and_then(|i| rec.get(i))
        .and_then(non_empty)
        .unwrap_or_else(|| default_currency.to_string());
    Ok(BillingLine {
        line_id,
        day,
        tenant,
        service: service_of(service),
        provider_service: get(c.service, "service")?.trim().to_string(),
        cost,
        currency,
    })
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Opens `path`, gunzipping `*.gz`.
pub fn open(path: &std::path::Path) -> std::io::Result<Box<dyn Read + Send>> {
    let f = std::fs::File::open(path)?;
    let r = std::io::BufReader::with_capacity(1 << 20, f);
    Ok(if path.extension().is_some_and(|e| e == "gz") {
        Box::new(flate2::read::MultiGzDecoder::new(r))
    } else {
        Box::new(r)
    })
}

/// Reads one export, calling `sink` with every line whose day is within `[from_day, to_day)`.
/// A currency other than `currency` makes the row malformed (one book, one currency).
pub fn read(
    input: impl Read,
    provider: Provider,
    tags: &Tags,
    (from_day, to_day): (i64, i64),
    currency: &str,
    mut sink: impl FnMut(BillingLine) -> Result<(), String>,
) -> Result<(Format, ReadStats), ReadError> {
    let mut rdr = csv::ReaderBuilder::new().flexible(true).from_reader(input);
    let header = rdr
        .headers()
        .map_err(|e| ReadError::Header(format!("unreadable header: {e}")))?
        .clone();
    let cols = columns(&header, provider, tags)?;
    let mut stats = ReadStats::default();
    let mut rec = csv::StringRecord::new();
    loop {
        let line = rdr.position().line() + 1;
        let more = match rdr.read_record(&mut rec) {
            Ok(m) => m,
            Err(e) => {
                if let csv::ErrorKind::Io(io) = e.kind() {
                    return Err(ReadError::Io(io.to_string()));
                }
                stats.rows += 1;
                bad(&mut stats, line, e.to_string());
                continue;
            }
        };
        if !more {
            break;
        }
        stats.rows += 1;
        let line = rec.position().map_or(line, |p| p.line());
        if rec.len() != header.len() {
            let msg = format!("{} fields, the header has {}", rec.len(), header.len());
            bad(&mut stats, line, msg);
            continue;
        }
        match line_of(&rec, &cols, tags, currency) {
            Err(e) => bad(&mut stats, line, e),
            Ok(l) if l.currency != currency => {
                let msg = format!("currency {} is not the price book's {currency}", l.currency);
                bad(&mut stats, line, msg)
            }
            Ok(l) if l.day < from_day || l.day >= to_day => stats.outside_window += 1,
            Ok(l) => {
                stats.in_window += 1;
                sink(l).map_err(ReadError::Sink)?;
            }
        }
    }
    Ok((cols.format, stats))
}

fn bad(stats: &mut ReadStats, line: u64, error: String) {
    stats.malformed += 1;
    if stats.bad_rows.len() < MAX_BAD_ROWS_LISTED {
        stats.bad_rows.push(BadRow { line, error });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags() -> Tags {
        Tags {
            tenant: "kakeya-tenant".into(),
            service: "kakeya-service".into(),
        }
    }

    fn all(data: &str, p: Provider) -> (Format, ReadStats, Vec<BillingLine>) {
        let mut out = vec![];
        let (f, s) = read(data.as_bytes(), p, &tags(), (0, i64::MAX), "USD", |l| {
            out.push(l);
            Ok(())
        })
        .unwrap();
        (f, s, out)
    }

    #[test]
    fn cur_legacy_with_tags_credits_and_a_bad_row() {
        let data = "identity/LineItemId,identity/TimeInterval,lineItem/LineItemType,lineItem/UsageStartDate,lineItem/ProductCode,lineItem/UnblendedCost,lineItem/CurrencyCode,resourceTags/user:kakeya-tenant,resourceTags/user:kakeya-service\n\
a1,2026-01-01T00:00:00Z/2026-01-02T00:00:00Z,Usage,2026-01-01T00:00:00Z,AmazonEC2,1.5,USD,acme,compute\n\
a2,2026-01-01T00:00:00Z/2026-01-02T00:00:00Z,Credit,2026-01-01T00:00:00Z,AmazonEC2,-0.5,USD,acme,compute\n\
a3,2026-01-01T00:00:00Z/2026-01-02T00:00:00Z,Usage,2026-01-01T00:00:00Z,AmazonS3,oops,USD,acme,storage\n\
a4,2026-01-01T00:00:00Z/2026-01-02T00:00:00Z,Usage,2026-01-01T00:00:00Z,AWSDataTransfer,2,USD,,\n";
        let (f, s, lines) = all(data, Provider::Aws);
        assert_eq!(f, Format::CurLegacy);
        assert_eq!((s.rows, s.in_window, s.malformed), (4, 3, 1));
        assert_eq!(s.bad_rows[0].line, 4);
        assert!(s.bad_rows[0].error.contains("oops"));
        assert_eq!(
            lines[0].line_id,
            "a1|2026-01-01T00:00:00Z/2026-01-02T00:00:00Z"
        );
        assert_eq!(lines[1].cost, -0.5);
        assert_eq!(lines[0].tenant.as_deref(), Some("acme"));
        assert_eq!(lines[2].service, UNALLOCATED);
        assert_eq!(lines[0].day, parse_day("2026-01-01").unwrap());
    }

    #[test]
    fn cur2_json_tags_and_focus_hash_identity() {
        let cur2 = "identity_line_item_id,identity_time_interval,line_item_usage_start_date,line_item_product_code,line_item_unblended_cost,line_item_currency_code,resource_tags\n\
b1,i,2026-01-02 00:00:00,AmazonEC2,3,USD,\"{\"\"user_kakeya_tenant\"\":\"\"acme\"\",\"\"user_kakeya_service\"\":\"\"network\"\"}\"\n";
        let (f, s, l) = all(cur2, Provider::Aws);
        assert_eq!((f, s.in_window), (Format::Cur2, 1));
        assert_eq!(l[0].service, "network");
        assert_eq!(l[0].tenant.as_deref(), Some("acme"));
        let focus = "BilledCost,EffectiveCost,BillingCurrency,ChargePeriodStart,ServiceName,Tags\n\
2.5,2.4,USD,2026-01-03T00:00:00Z,Compute Engine,\"{\"\"kakeya-tenant\"\":\"\"beta\"\",\"\"kakeya-service\"\":\"\"compute\"\"}\"\n\
1,1,USD,2026-01-03T00:00:00Z,Cloud Storage,{bad\n\
1,1,EUR,2026-01-03T00:00:00Z,Cloud Storage,\n\
1,1,USD,2026-01-03T00:00:00Z\n";
        let (f, s, l) = all(focus, Provider::Gcp);
        assert_eq!(f, Format::Focus);
        assert_eq!((s.in_window, s.malformed), (1, 3));
        assert_eq!(
            s.bad_rows.iter().map(|b| b.line).collect::<Vec<_>>(),
            vec![3, 4, 5]
        );
        assert_eq!(l[0].line_id.len(), 64);
        assert_eq!(l[0].tenant.as_deref(), Some("beta"));
        // Same bytes, same identity.
        let (_, _, again) = all(focus, Provider::Azure);
        assert_eq!(again[0].line_id, l[0].line_id);
    }

    #[test]
    fn wrong_header_provider_and_window() {
        let err = |d: &str, p| read(d.as_bytes(), p, &tags(), (0, 1), "USD", |_| Ok(())).err();
        assert!(matches!(
            err("a,b\n1,2\n", Provider::Aws),
            Some(ReadError::Header(_))
        ));
        let focus = "BilledCost,ChargePeriodStart,ServiceName\n1,2026-01-01,X\n";
        assert!(matches!(
            err(focus, Provider::Aws),
            Some(ReadError::Header(_))
        ));
        let d = parse_day("2026-01-01").unwrap();
        let (_, s) = read(
            focus.as_bytes(),
            Provider::Gcp,
            &tags(),
            (d + 1, d + 2),
            "USD",
            |_| Ok(()),
        )
        .unwrap();
        assert_eq!((s.in_window, s.outside_window), (0, 1));
        assert_eq!(
            day_of_timestamp("2026-01-01T23:00:00-02:00"),
            Ok(parse_day("2026-01-02").unwrap())
        );
        assert!(day_of_timestamp("2026-01-01X").is_err());
    }
}
