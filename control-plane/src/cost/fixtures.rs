//! Realistic billing exports for tests, demos and the import benchmark (`kakeya cost
//! fixtures`): AWS CUR legacy and 2.0, FOCUS as GCP and Azure write it, built from the
//! internal cost of a window with a planted drift per service, so a reconciliation must find
//! exactly that drift. Each (tenant, service, day) cell is split over several line items;
//! compute cells carry a credit line (negative cost), as real bills do.

use super::billing::{Format, Provider};
use super::prices::{format_day, PriceEntry};
use super::usage::SERVICES;
use std::collections::BTreeMap;
use std::io::Write;

/// One internal cost cell.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    pub tenant: String,
    pub day: i64,
    pub service: String,
    pub cost: f64,
}

/// What to plant.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// Drift per service in percent (billed = internal × (1 + drift/100)); absent: 0.
    pub drift_pct: BTreeMap<String, f64>,
    /// Usage line items per cell (at least 1; a compute cell adds a credit line).
    pub lines_per_cell: usize,
    /// Write one malformed row (a cost that is not a number) after the header.
    pub corrupt_row: bool,
}

/// The cells of priced roll-up rows.
pub fn cells_of(days: &[super::usage::DayCost]) -> Vec<Cell> {
    let mut out = Vec::new();
    for d in days {
        let Some(c) = &d.cost else { continue };
        for s in SERVICES {
            let cost = c.get(s).unwrap_or(0.0);
            if cost != 0.0 {
                out.push(Cell {
                    tenant: d.tenant.clone(),
                    day: d.day_number,
                    service: s.to_string(),
                    cost,
                });
            }
        }
    }
    out
}

fn provider_service(p: Provider, service: &str) -> &'static str {
    let i = SERVICES.iter().position(|s| *s == service).unwrap_or(0);
    match p {
        Provider::Aws => ["AmazonEC2", "AmazonS3", "AWSDataTransfer", "AmazonBedrock"][i],
        Provider::Gcp => ["Compute Engine", "Cloud Storage", "Networking", "Vertex AI"][i],
        Provider::Azure => ["Virtual Machines", "Storage", "Bandwidth", "Azure OpenAI"][i],
    }
}

const CUR_LEGACY: [&str; 15] = [
    "identity/LineItemId",
    "identity/TimeInterval",
    "bill/PayerAccountId",
    "lineItem/UsageAccountId",
    "lineItem/LineItemType",
    "lineItem/UsageStartDate",
    "lineItem/UsageEndDate",
    "lineItem/ProductCode",
    "lineItem/UsageType",
    "lineItem/ResourceId",
    "lineItem/UsageAmount",
    "lineItem/CurrencyCode",
    "lineItem/UnblendedCost",
    "resourceTags/user:kakeya-tenant",
    "resourceTags/user:kakeya-service",
];
const CUR2: [&str; 14] = [
    "identity_line_item_id",
    "identity_time_interval",
    "bill_payer_account_id",
    "line_item_usage_account_id",
    "line_item_line_item_type",
    "line_item_usage_start_date",
    "line_item_usage_end_date",
    "line_item_product_code",
    "line_item_usage_type",
    "line_item_resource_id",
    "line_item_usage_amount",
    "line_item_currency_code",
    "line_item_unblended_cost",
    "resource_tags",
];
const FOCUS: [&str; 12] = [
    "BillingAccountId",
    "ChargeCategory",
    "ChargePeriodStart",
    "ChargePeriodEnd",
    "ServiceName",
    "ServiceCategory",
    "ResourceId",
    "SkuId",
    "BilledCost",
    "EffectiveCost",
    "BillingCurrency",
    "Tags",
];

/// One line item to write.
struct Item<'a> {
    n: u64,
    tenant: &'a str,
    service: &'a str,
    day: i64,
    cost: f64,
    credit: bool,
}

fn row(format: Format, p: Provider, it: &Item<'_>, currency: &str) -> Vec<String> {
    let start = format!("{}T00:00:00Z", format_day(it.day));
    let end = format!("{}T00:00:00Z", format_day(it.day + 1));
    let interval = format!("{start}/{end}");
    let ps = provider_service(p, it.service).to_string();
    let id = format!("li-{:012x}", it.n);
    let resource = format!("{}-{}-{}", it.tenant, it.service, it.n % 7);
    let cost = format!("{}", it.cost);
    let kind = if it.credit { "Credit" } else { "Usage" };
    match format {
        Format::CurLegacy => vec![
            id,
            interval,
            "111122223333".into(),
            "444455556666".into(),
            kind.into(),
            start,
            end,
            ps,
            format!("{}-Usage", it.service),
            resource,
            "1".into(),
            currency.into(),
            cost,
            it.tenant.into(),
            it.service.into(),
        ],
        Format::Cur2 => vec![
            id,
            interval,
            "111122223333".into(),
            "444455556666".into(),
            kind.into(),
            start.replace('T', " ").replace('Z', ""),
            end.replace('T', " ").replace('Z', ""),
            ps,
            format!("{}-Usage", it.service),
            resource,
            "1".into(),
            currency.into(),
            cost,
            format!(
                "{{\"user_kakeya_tenant\":\"{}\",\"user_kakeya_service\":\"{}\"}}",
                it.tenant, it.service
            ),
        ],
        Format::Focus => vec![
            "billing-account-1".into(),
            if it.credit { "Credit" } else { "Usage" }.into(),
            start,
            end,
            ps,
            "Compute".into(),
            resource,
            format!("sku-{}", it.n % 13),
            cost.clone(),
            cost,
            currency.into(),
            format!(
                "{{\"kakeya-tenant\":\"{}\",\"kakeya-service\":\"{}\"}}",
                it.tenant, it.service
            ),
        ],
    }
}

fn header(format: Format) -> &'static [&'static str] {
    match format {
        Format::CurLegacy => &CUR_LEGACY,
        Format::Cur2 => &CUR2,
        Format::Focus => &FOCUS,
    }
}

/// Writes an export of `cells` with `plan`'s drift; the number of data rows written.
pub fn write(
    format: Format,
    provider: Provider,
    currency: &str,
    cells: &[Cell],
    plan: &Plan,
    out: impl Write,
) -> Result<u64, csv::Error> {
    let mut w = csv::Writer::from_writer(out);
    w.write_record(header(format))?;
    let mut n = 0u64;
    if plan.corrupt_row {
        let bad = Item {
            n: u64::MAX,
            tenant: "corrupt",
            service: "compute",
            day: 0,
            cost: 0.0,
            credit: false,
        };
        let mut r = row(format, provider, &bad, currency);
        let cost_col = header(format)
            .iter()
            .position(|h| {
                [
                    "lineItem/UnblendedCost",
                    "line_item_unblended_cost",
                    "BilledCost",
                ]
                .contains(h)
            })
            .unwrap_or(0);
        r[cost_col] = "12,5O".into();
        w.write_record(&r)?;
        n += 1;
    }
    let k = plan.lines_per_cell.max(1);
    let weights: f64 = (1..=k).map(|i| i as f64).sum();
    for c in cells {
        let billed =
            c.cost * (1.0 + plan.drift_pct.get(&c.service).copied().unwrap_or(0.0) / 100.0);
        let credit = if c.service == "compute" {
            billed * 0.05
        } else {
            0.0
        };
        let mut items: Vec<(f64, bool)> = (1..=k)
            .map(|i| ((billed + credit) * i as f64 / weights, false))
            .collect();
        if credit != 0.0 {
            items.push((-credit, true));
        }
        for (cost, is_credit) in items {
            n += 1;
            let it = Item {
                n,
                tenant: &c.tenant,
                service: &c.service,
                day: c.day,
                cost,
                credit: is_credit,
            };
            w.write_record(row(format, provider, &it, currency))?;
        }
    }
    w.flush()?;
    Ok(n)
}

/// `lines` synthetic line items over `days` days from `first_day` and `tenants` tenants
/// (the import benchmark's input).
pub fn synthetic(
    format: Format,
    provider: Provider,
    lines: u64,
    first_day: i64,
    days: i64,
    tenants: u64,
    out: impl Write,
) -> Result<u64, csv::Error> {
    let mut w = csv::Writer::from_writer(out);
    w.write_record(header(format))?;
    let names: Vec<String> = (0..tenants.max(1))
        .map(|t| format!("tenant-{t:04}"))
        .collect();
    for n in 0..lines {
        let tenant = &names[(n % names.len() as u64) as usize];
        let service = SERVICES[(n / 7 % 4) as usize];
        let day = first_day + (n / 13) as i64 % days.max(1);
        let cost = 0.001 * ((n % 997) as f64 + 1.0);
        let it = Item {
            n,
            tenant,
            service,
            day,
            cost,
            credit: false,
        };
        w.write_record(row(format, provider, &it, "USD"))?;
    }
    w.flush()?;
    Ok(lines)
}

/// The price book of the tests and benchmarks (the docs' example): from 2026-01-01, 0.0002 per
/// decision, 40 per GiB stored, 90 per GiB transferred.
pub fn example_prices() -> Vec<PriceEntry> {
    vec![PriceEntry {
        effective_from: "2026-01-01".into(),
        tenant: None,
        per_request: 0.0002,
        per_cpu_second: 0.0,
        per_gib_stored: 40.0,
        per_gib_transferred: 90.0,
        per_model_call: 0.0,
    }]
}
