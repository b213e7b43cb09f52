//! The price book: what one unit of each measured resource costs, per tenant, from a date on.
//!
//! Entries come from `[[cost.prices]]` in `kakeya.toml` and from `PUT /v1/cost/prices`
//! (stored, migration 0020). An entry applies from its `effective_from` day (UTC) until the
//! next entry of the same scope; a tenant's own entries win over the global ones from their
//! first day on. Prices change at day boundaries only, so a day's usage is priced by one entry
//! and roll-ups may price summed quantities (pricing is linear).

use serde::{Deserialize, Serialize};

/// Milliseconds per day.
pub const DAY_MS: i64 = 86_400_000;
/// Bytes per GiB (the unit of the byte prices).
pub const GIB: f64 = 1_073_741_824.0;

/// One price book entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PriceEntry {
    /// First day (UTC, `YYYY-MM-DD`) this entry applies.
    pub effective_from: String,
    /// The tenant it applies to; absent: every tenant without its own entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Fixed overhead per decision (compute).
    #[serde(default)]
    pub per_request: f64,
    /// Per second of filter CPU (compute), once the filter reports it.
    #[serde(default)]
    pub per_cpu_second: f64,
    /// Per GiB written to the WAL and the decision log (storage).
    #[serde(default)]
    pub per_gib_stored: f64,
    /// Per GiB of request and response bytes (network).
    #[serde(default)]
    pub per_gib_transferred: f64,
    /// Per micro-vote call (model calls), once the decision log carries them.
    #[serde(default)]
    pub per_model_call: f64,
}

/// A price book entry that failed validation.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("price entry {index}: {message}")]
pub struct PriceError {
    pub index: usize,
    pub message: String,
}

/// Day number (days since 1970-01-01) of `YYYY-MM-DD`.
pub fn parse_day(s: &str) -> Result<i64, String> {
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    let d = time::Date::parse(s.trim(), &fmt)
        .map_err(|e| format!("expected a date YYYY-MM-DD, got {s:?}: {e}"))?;
    Ok(i64::from(
        d.to_julian_day() - time::macros::date!(1970 - 01 - 01).to_julian_day(),
    ))
}

/// `YYYY-MM-DD` of a day number.
pub fn format_day(day: i64) -> String {
    let epoch = time::macros::date!(1970 - 01 - 01).to_julian_day();
    match i32::try_from(day)
        .ok()
        .and_then(|d| d.checked_add(epoch))
        .and_then(|j| time::Date::from_julian_day(j).ok())
    {
        Some(d) => format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day()),
        None => format!("day{day}"),
    }
}

/// Day number of an epoch-millisecond time.
pub fn day_of_ms(ms: i64) -> i64 {
    ms.div_euclid(DAY_MS)
}

impl PriceEntry {
    fn check(&self, index: usize) -> Result<i64, PriceError> {
        let err = |message: String| PriceError { index, message };
        let day = parse_day(&self.effective_from).map_err(err)?;
        for (name, v) in [
            ("per_request", self.per_request),
            ("per_cpu_second", self.per_cpu_second),
            ("per_gib_stored", self.per_gib_stored),
            ("per_gib_transferred", self.per_gib_transferred),
            ("per_model_call", self.per_model_call),
        ] {
            if !v.is_finite() || v < 0.0 {
                return Err(err(format!("{name} must be a finite number ≥ 0 (got {v})")));
            }
        }
        if let Some(t) = &self.tenant {
            if t.is_empty() || t.len() > 128 {
                return Err(err("tenant must be 1 to 128 characters".into()));
            }
        }
        Ok(day)
    }
}

/// A validated price book in one currency.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PriceBook {
    /// ISO 4217 code every price and cost is in.
    pub currency: String,
    /// Sorted by (tenant, effective_from).
    pub entries: Vec<PriceEntry>,
    #[serde(skip)]
    days: Vec<i64>,
}

impl PriceBook {
    /// Validates and sorts; two entries of one scope on one day are refused.
    pub fn new(currency: &str, entries: Vec<PriceEntry>) -> Result<Self, PriceError> {
        if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(PriceError {
                index: 0,
                message: format!(
                    "currency must be an ISO 4217 code such as USD (got {currency:?})"
                ),
            });
        }
        let mut keyed = Vec::with_capacity(entries.len());
        for (i, e) in entries.into_iter().enumerate() {
            keyed.push((e.check(i)?, e));
        }
        keyed.sort_by(|(da, a), (db, b)| a.tenant.cmp(&b.tenant).then(da.cmp(db)));
        for (i, w) in keyed.windows(2).enumerate() {
            if w[0].1.tenant == w[1].1.tenant && w[0].0 == w[1].0 {
                return Err(PriceError {
                    index: i + 1,
                    message: format!(
                        "two entries for {} from {}",
                        w[0].1.tenant.as_deref().unwrap_or("every tenant"),
                        w[0].1.effective_from
                    ),
                });
            }
        }
        let (days, entries) = keyed.into_iter().unzip();
        Ok(PriceBook {
            currency: currency.to_string(),
            entries,
            days,
        })
    }

    /// The entry pricing `tenant`'s usage on `day`: its own latest entry in force, else the
    /// global one; `None` when nothing is in force yet (such usage is reported unpriced).
    pub fn resolve(&self, tenant: &str, day: i64) -> Option<&PriceEntry> {
        let latest = |scope: Option<&str>| {
            self.entries
                .iter()
                .zip(&self.days)
                .filter(|(e, d)| e.tenant.as_deref() == scope && **d <= day)
                .max_by_key(|(_, d)| **d)
                .map(|(e, _)| e)
        };
        latest(Some(tenant)).or_else(|| latest(None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(from: &str, tenant: Option<&str>, per_request: f64) -> PriceEntry {
        PriceEntry {
            effective_from: from.into(),
            tenant: tenant.map(str::to_string),
            per_request,
            per_cpu_second: 0.0,
            per_gib_stored: 0.0,
            per_gib_transferred: 0.0,
            per_model_call: 0.0,
        }
    }

    #[test]
    fn days_round_trip() {
        assert_eq!(parse_day("1970-01-02"), Ok(1));
        assert_eq!(format_day(parse_day("2026-03-01").unwrap()), "2026-03-01");
        assert!(parse_day("2026-02-30").is_err());
        assert_eq!(day_of_ms(-1), -1);
    }

    #[test]
    fn tenant_entries_win_from_their_first_day_and_dates_apply() {
        let b = PriceBook::new(
            "USD",
            vec![
                entry("2026-01-01", None, 1.0),
                entry("2026-02-01", None, 2.0),
                entry("2026-01-15", Some("acme"), 5.0),
            ],
        )
        .unwrap();
        let d = |s| parse_day(s).unwrap();
        assert!(b.resolve("x", d("2025-12-31")).is_none());
        assert_eq!(b.resolve("x", d("2026-01-20")).unwrap().per_request, 1.0);
        assert_eq!(b.resolve("x", d("2026-02-01")).unwrap().per_request, 2.0);
        assert_eq!(b.resolve("acme", d("2026-01-14")).unwrap().per_request, 1.0);
        assert_eq!(b.resolve("acme", d("2026-03-01")).unwrap().per_request, 5.0);
    }

    #[test]
    fn bad_books_are_refused() {
        assert!(PriceBook::new("usd", vec![]).is_err());
        assert!(PriceBook::new("USD", vec![entry("2026-13-01", None, 1.0)]).is_err());
        assert!(PriceBook::new("USD", vec![entry("2026-01-01", None, -1.0)]).is_err());
        assert!(PriceBook::new("USD", vec![entry("2026-01-01", None, f64::NAN)]).is_err());
        let dup = vec![
            entry("2026-01-01", None, 1.0),
            entry("2026-01-01", None, 2.0),
        ];
        assert!(PriceBook::new("USD", dup).is_err());
    }
}
