//! Internal cost against billed cost, per service and day and per service and month.
//!
//! Drift is the signed symmetric relative difference `(billed − internal) / mean(|billed|,
//! |internal|)`, in percent: symmetric so neither side is "the truth", signed so the report
//! says which way it goes, and judged on its absolute value so negative drift alerts too (the
//! reference system's sign bug). A cell where either side has no data is `no_data`, never
//! "within target".

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = ReconcileStatus)]
pub enum Status {
    WithinTarget,
    Alert,
    NoData,
}

/// One (service, period) cell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Cell {
    pub service: String,
    /// `YYYY-MM-DD` or `YYYY-MM`.
    pub period: String,
    pub internal: Option<f64>,
    pub billed: Option<f64>,
    /// Signed symmetric relative difference in percent; `null` when `no_data`.
    pub drift_pct: Option<f64>,
    pub status: Status,
}

/// The signed symmetric relative difference of `billed` against `internal`, in percent
/// (0 when both are 0).
pub fn drift_pct(internal: f64, billed: f64) -> f64 {
    let mean = (internal.abs() + billed.abs()) / 2.0;
    if mean == 0.0 {
        0.0
    } else {
        (billed - internal) / mean * 100.0
    }
}

fn cell(service: &str, period: &str, i: Option<f64>, b: Option<f64>, alert_pct: f64) -> Cell {
    let drift = i.zip(b).map(|(i, b)| drift_pct(i, b));
    let status = match drift {
        None => Status::NoData,
        Some(d) if d.abs() > alert_pct => Status::Alert,
        Some(_) => Status::WithinTarget,
    };
    Cell {
        service: service.to_string(),
        period: period.to_string(),
        internal: i,
        billed: b,
        drift_pct: drift,
        status,
    }
}

/// Sums keyed by (service, day string `YYYY-MM-DD`).
pub type Sums = BTreeMap<(String, String), f64>;

/// Day cells then month cells (the month of a day is its first 7 characters), every key of
/// either side, sorted by service then period.
pub fn reconcile(internal: &Sums, billed: &Sums, alert_pct: f64) -> (Vec<Cell>, Vec<Cell>) {
    let months = |s: &Sums| {
        let mut m: Sums = BTreeMap::new();
        for ((svc, day), v) in s {
            *m.entry((svc.clone(), day.get(..7).unwrap_or(day).to_string()))
                .or_default() += v;
        }
        m
    };
    let cells = |a: &Sums, b: &Sums| {
        let mut keys: Vec<&(String, String)> = a.keys().chain(b.keys()).collect();
        keys.sort();
        keys.dedup();
        keys.into_iter()
            .map(|k| cell(&k.0, &k.1, a.get(k).copied(), b.get(k).copied(), alert_pct))
            .collect::<Vec<_>>()
    };
    (
        cells(internal, billed),
        cells(&months(internal), &months(billed)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negative_drift_alerts_and_missing_sides_are_no_data() {
        let k = |s: &str, d: &str| (s.to_string(), d.to_string());
        let internal: Sums = [
            (k("compute", "2026-01-01"), 100.0),
            (k("storage", "2026-01-01"), 100.0),
            (k("network", "2026-01-01"), 5.0),
        ]
        .into();
        let billed: Sums = [
            (k("compute", "2026-01-01"), 102.0),
            (k("storage", "2026-01-01"), 96.0),
            (k("unallocated", "2026-01-01"), 1.0),
        ]
        .into();
        let (days, months) = reconcile(&internal, &billed, 3.0);
        let by = |s: &str| days.iter().find(|c| c.service == s).unwrap();
        assert_eq!(by("compute").status, Status::WithinTarget);
        assert!((by("compute").drift_pct.unwrap() - 2.0 / 1.01).abs() < 1e-9);
        assert_eq!(by("storage").status, Status::Alert);
        assert!(by("storage").drift_pct.unwrap() < -4.0);
        assert_eq!(by("network").status, Status::NoData);
        assert_eq!(by("unallocated").status, Status::NoData);
        assert_eq!(months.len(), 4);
        assert_eq!(months[0].period, "2026-01");
        assert_eq!(drift_pct(0.0, 0.0), 0.0);
    }
}
