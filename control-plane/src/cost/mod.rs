//! Cost attribution, billing import, reconciliation, forecasting, budgets and the advisor
//! (`/v1/cost/*`, `kakeya cost …`, `[cost]`).
//!
//! * [`usage`] and [`record`]: every fresh decision gets a cost record of what it used, written
//!   with its decision-log row; [`prices`] turns quantities into money at roll-up time;
//! * [`billing`] reads AWS CUR (legacy and 2.0) and FOCUS exports; [`import`] upserts them;
//! * [`reconcile`]: internal against billed, per service and day and month;
//! * [`forecast`]: Holt-Winters with weekly seasonality and a rolling-origin backtest;
//! * [`budgets`]: monthly caps, recomputed on a cadence, published in the bundle;
//! * [`advisor`]: recommendations computed from the data, applied and measured;
//! * [`fixtures`]: realistic exports of each format with planted drift, for tests and demos.

pub mod advisor;
pub mod api;
pub mod bench;
pub mod billing;
pub mod budgets;
pub mod fixtures;
pub mod forecast;
pub mod import;
pub mod metrics;
pub mod options;
pub mod prices;
pub mod reconcile;
pub mod record;
pub mod store;
#[cfg(test)]
mod tests;
pub mod timing_rules;
pub mod usage;
pub mod vote_value;

use crate::store::Db;
use prices::{format_day, PriceBook};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use usage::{DayCost, ServiceCost, SERVICES};

#[derive(Debug, thiserror::Error)]
pub enum CostError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    NotConfigured(String),
    #[error("store: {0}")]
    Store(#[from] sqlx::Error),
}

/// The price book in force: `[[cost.prices]]` then the stored entries.
pub async fn book(db: &Db, opts: &options::CostOptions) -> Result<PriceBook, CostError> {
    let stored = store::stored_prices(db).await?;
    opts.book(&stored)
        .map_err(|e| CostError::Invalid(format!("the price book is invalid: {e}")))
}

/// Priced roll-up of a selection, per tenant and day.
pub async fn rollup(
    db: &Db,
    opts: &options::CostOptions,
    sel: &record::Selection,
) -> Result<Vec<DayCost>, CostError> {
    let book = book(db, opts).await?;
    Ok(usage::price_days(&book, record::sums(db, sel).await?))
}

/// Cost per trusted task of one arm or model version over days `[from_day, to_day)`, for the
/// canary's cost gate: `None` without trusted tasks or prices.
pub async fn cost_per_trusted_task(
    db: &Db,
    opts: &options::CostOptions,
    sel: &record::Selection,
) -> Result<Option<f64>, CostError> {
    Ok(usage::cost_per_trusted_task(&rollup(db, opts, sel).await?))
}

/// Longest window of a summary, import or reconciliation (days).
pub const MAX_WINDOW_DAYS: i64 = 400;

/// Lease of the budget job.
pub const LEASE: &str = "cost-budgets";

/// Today's day number.
pub fn today() -> i64 {
    prices::day_of_ms(crate::now_ms())
}

/// A roll-up summary: per tenant and service totals over a window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CostSummary {
    pub currency: String,
    pub from: String,
    /// Exclusive.
    pub to: String,
    pub days: Vec<DayCost>,
    pub tenants: Vec<TenantTotal>,
    /// Days without a price book entry in force (their cost is not in the totals).
    pub unpriced_days: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TenantTotal {
    pub tenant: String,
    pub decisions: u64,
    pub trusted: u64,
    pub cost: ServiceCost,
    pub total: f64,
    pub cost_per_trusted_task: Option<f64>,
}

pub fn summarise(currency: &str, from: i64, to: i64, days: Vec<DayCost>) -> CostSummary {
    let mut tenants: Vec<TenantTotal> = Vec::new();
    let mut unpriced_days = 0;
    for d in &days {
        if tenants.last().is_none_or(|t| t.tenant != d.tenant) {
            tenants.push(TenantTotal {
                tenant: d.tenant.clone(),
                decisions: 0,
                trusted: 0,
                cost: ServiceCost::default(),
                total: 0.0,
                cost_per_trusted_task: None,
            });
        }
        if let Some(t) = tenants.last_mut() {
            t.decisions += d.usage.decisions;
            t.trusted += d.usage.trusted;
            match &d.cost {
                Some(c) => t.cost.add(c),
                None => unpriced_days += 1,
            }
        }
    }
    for t in &mut tenants {
        t.total = t.cost.total();
        t.cost_per_trusted_task = (t.trusted > 0).then(|| t.total / t.trusted as f64);
    }
    CostSummary {
        currency: currency.to_string(),
        from: format_day(from),
        to: format_day(to),
        days,
        tenants,
        unpriced_days,
    }
}

/// Internal cost per (service, day) summed over tenants.
pub fn internal_by_service(days: &[DayCost]) -> reconcile::Sums {
    let mut m = reconcile::Sums::new();
    for d in days {
        if let Some(c) = &d.cost {
            for s in SERVICES {
                *m.entry((s.to_string(), d.day.clone())).or_default() += c.get(s).unwrap_or(0.0);
            }
        }
    }
    m
}

/// SHA-256 (hex) of a reconciliation input as canonical JSON (sorted keys, the sums' order).
pub fn sums_sha256(s: &reconcile::Sums) -> String {
    let v: Vec<(&str, &str, f64)> = s
        .iter()
        .map(|((a, b), c)| (a.as_str(), b.as_str(), *c))
        .collect();
    let bytes = serde_json::to_vec(&v).unwrap_or_default();
    Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A persisted reconciliation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReconciliationReport {
    pub id: i64,
    pub created_at: String,
    pub currency: String,
    pub from: String,
    /// Exclusive.
    pub to: String,
    pub alert_drift_pct: f64,
    /// `alert` when a cell alerts, `no_data` when no cell has both sides, else `within_target`.
    pub status: reconcile::Status,
    pub internal_total: f64,
    pub billed_total: f64,
    pub days: Vec<reconcile::Cell>,
    pub months: Vec<reconcile::Cell>,
    pub internal_sha256: String,
    pub billed_sha256: String,
}

/// Reconciles days `[from, to)` and stores the report.
pub async fn reconcile_window(
    db: &Db,
    opts: &options::CostOptions,
    from: i64,
    to: i64,
) -> Result<ReconciliationReport, CostError> {
    if to <= from || to - from > MAX_WINDOW_DAYS {
        return Err(CostError::Invalid(format!(
            "the window must be 1 to {MAX_WINDOW_DAYS} days (from before to)"
        )));
    }
    let sel = record::Selection {
        from_day: from,
        to_day: to,
        ..Default::default()
    };
    let internal = internal_by_service(&rollup(db, opts, &sel).await?);
    let mut billed = reconcile::Sums::new();
    for (svc, day, c) in store::billed_sums(db, from, to).await? {
        billed.insert((svc, format_day(day)), c);
    }
    let (days, months) = reconcile::reconcile(&internal, &billed, opts.alert_drift_pct);
    let cells = days.iter().chain(&months);
    let status = if cells.clone().any(|c| c.status == reconcile::Status::Alert) {
        reconcile::Status::Alert
    } else if cells.clone().all(|c| c.status == reconcile::Status::NoData) {
        reconcile::Status::NoData
    } else {
        reconcile::Status::WithinTarget
    };
    let now = crate::now_ms();
    let mut report = ReconciliationReport {
        id: 0,
        created_at: crate::learn::rfc3339(now),
        currency: opts.currency.clone(),
        from: format_day(from),
        to: format_day(to),
        alert_drift_pct: opts.alert_drift_pct,
        status,
        internal_total: internal.values().sum(),
        billed_total: billed.values().sum(),
        days,
        months,
        internal_sha256: sums_sha256(&internal),
        billed_sha256: sums_sha256(&billed),
    };
    let status_s = serde_json::to_value(status)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let json = serde_json::to_value(&report).map_err(|e| CostError::Invalid(e.to_string()))?;
    let hashes = (
        report.internal_sha256.as_str(),
        report.billed_sha256.as_str(),
    );
    report.id = store::insert_reconciliation(db, (from, to), &status_s, hashes, &json, now).await?;
    let json = serde_json::to_value(&report).map_err(|e| CostError::Invalid(e.to_string()))?;
    store::set_reconciliation_report(db, report.id, &json).await?;
    Ok(report)
}

/// One series' forecast.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SeriesForecast {
    /// The tenant, or `null` for the total.
    pub tenant: Option<String>,
    pub history_days: usize,
    pub fit: forecast::Fit,
    pub points: Vec<DayPoint>,
    pub backtest: Vec<forecast::Backtest>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DayPoint {
    pub day: String,
    #[serde(flatten)]
    pub point: forecast::Point,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CostForecast {
    pub generated_at: String,
    pub currency: String,
    pub horizon_days: usize,
    /// History used: complete days `[from, to)`.
    pub from: String,
    pub to: String,
    pub total: Option<SeriesForecast>,
    pub tenants: Vec<SeriesForecast>,
}

/// Most days of history a forecast reads.
pub const FORECAST_HISTORY_DAYS: i64 = 180;

/// Forecasts one daily series that ends the day before `first_day`.
pub fn forecast_series(
    tenant: Option<String>,
    y: &[f64],
    first_day: i64,
    horizon: usize,
) -> Option<SeriesForecast> {
    let fit = forecast::fit(y)?;
    let points = fit
        .forecast(horizon)
        .into_iter()
        .map(|p| DayPoint {
            day: format_day(first_day + p.h as i64 - 1),
            point: p,
        })
        .collect();
    Some(SeriesForecast {
        tenant,
        history_days: y.len(),
        fit,
        points,
        backtest: forecast::BACKTEST_HORIZONS
            .iter()
            .map(|&h| forecast::backtest(y, h))
            .collect(),
    })
}

/// Daily total series per tenant over complete days `[from, to)`, each from its first day
/// with cost (missing days are 0: no decisions, no cost).
pub fn daily_series(days: &[DayCost], from: i64, to: i64) -> Vec<(String, i64, Vec<f64>)> {
    let mut out: Vec<(String, i64, Vec<f64>)> = Vec::new();
    for d in days {
        let Some(c) = &d.cost else { continue };
        if d.day_number < from || d.day_number >= to {
            continue;
        }
        if out.last().is_none_or(|(t, _, _)| *t != d.tenant) {
            let len = usize::try_from(to - d.day_number).unwrap_or(0);
            out.push((d.tenant.clone(), d.day_number, vec![0.0; len]));
        }
        if let Some((_, start, y)) = out.last_mut() {
            if let Some(v) = usize::try_from(d.day_number - *start)
                .ok()
                .and_then(|i| y.get_mut(i))
            {
                *v += c.total();
            }
        }
    }
    out
}

/// `POST /v1/cost/forecast`: per tenant and total, from the internal cost of the last
/// [`FORECAST_HISTORY_DAYS`] complete days.
pub async fn forecast_costs(
    db: &Db,
    opts: &options::CostOptions,
    horizon: usize,
    today: i64,
) -> Result<CostForecast, CostError> {
    if !(1..=forecast::MAX_HORIZON).contains(&horizon) {
        return Err(CostError::Invalid(format!(
            "horizon_days must be 1..={} (got {horizon})",
            forecast::MAX_HORIZON
        )));
    }
    let from = today - FORECAST_HISTORY_DAYS;
    let sel = record::Selection {
        from_day: from,
        to_day: today,
        ..Default::default()
    };
    let days = rollup(db, opts, &sel).await?;
    let series = daily_series(&days, from, today);
    let mut total: Vec<f64> = Vec::new();
    let mut tenants = Vec::with_capacity(series.len());
    for (tenant, start, y) in series {
        if total.len() < y.len() {
            let pad = y.len() - total.len();
            total.splice(0..0, std::iter::repeat_n(0.0, pad));
        }
        let off = total.len() - y.len();
        for (i, v) in y.iter().enumerate() {
            total[off + i] += v;
        }
        let _ = start;
        tenants.extend(forecast_series(Some(tenant), &y, today, horizon));
    }
    Ok(CostForecast {
        generated_at: crate::learn::rfc3339(crate::now_ms()),
        currency: opts.currency.clone(),
        horizon_days: horizon,
        from: format_day(today - total.len() as i64),
        to: format_day(today),
        total: forecast_series(None, &total, today, horizon),
        tenants,
    })
}
