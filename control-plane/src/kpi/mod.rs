//! Buyer KPIs: the figures of the buyer dashboard (`observability/grafana/buyer_dashboard_v3.json`)
//! and of `GET /v1/kpis`, computed from stored data over a sliding window.
//!
//! Every figure is read from the decision log, the labels, the ensemble's disagreement table,
//! the cost roll-up and the advisor's recommendations; nothing is estimated. A rate whose
//! denominator is empty is `None` (JSON `null`, no gauge series), never 0 or 1.
//!
//! * **containment**: of the decisions whose effective label ([`crate::review::effective_label`])
//!   is `hallucinated`, the share the gate did not let through (escalated, or not accepted);
//!   also per scoring arm, and each arm's delta against the `champion` (the control arm of A/B
//!   experiments and canaries, as the decision log records it).
//! * **online HRS AUROC**: the served risk against the effective labels ([`crate::ml::metrics::auroc`]),
//!   overall (`all`) and per model version; with the ROC/PR points at fixed thresholds.
//! * **escalation rate**, **high-risk rate** (risk ≥ [`HIGH_RISK`] among scored decisions),
//!   **ensemble agreement** (1 − disagreements / decisions with votes), **model versions** (share
//!   of the scored decisions).
//! * **cost** per tenant and service and per trusted task, over the window's UTC days (cost is
//!   rolled up per day: `None` for the 1 h window); **savings** of the advisor (pending
//!   projections and realised savings of applied recommendations, monthly); **budgets**'
//!   utilisation as last computed.
//!
//! The gauges ([`metrics`]) are refreshed from [`compute`] when `/metrics` is scraped, at most
//! every [`metrics::REFRESH`].

pub mod api;
pub mod metrics;

#[cfg(test)]
mod tests;

use crate::cost::options::CostOptions;
use crate::cost::TenantTotal;
use crate::review::Label;
use crate::store::Db;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use std::collections::BTreeMap;

/// Risk at or above which a decision counts as high risk (the seed's "HRS ≥ 0.7").
pub const HIGH_RISK: f64 = 0.7;

/// Thresholds of the ROC/PR points: 0.1, 0.2, …, 0.9 (a bounded label set).
pub const THRESHOLDS: [f64; 9] = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9];

/// The arm every other arm is compared with.
pub const CONTROL_ARM: &str = "champion";

/// A sliding window ending now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub enum Window {
    #[serde(rename = "1h")]
    H1,
    #[serde(rename = "24h")]
    H24,
    #[serde(rename = "7d")]
    D7,
    #[serde(rename = "30d")]
    D30,
}

impl Window {
    pub const ALL: [Window; 4] = [Window::H1, Window::H24, Window::D7, Window::D30];

    pub fn as_str(self) -> &'static str {
        match self {
            Window::H1 => "1h",
            Window::H24 => "24h",
            Window::D7 => "7d",
            Window::D30 => "30d",
        }
    }

    pub fn parse(s: &str) -> Option<Window> {
        Window::ALL.into_iter().find(|w| w.as_str() == s)
    }

    pub fn millis(self) -> i64 {
        const H: i64 = 3_600_000;
        match self {
            Window::H1 => H,
            Window::H24 => 24 * H,
            Window::D7 => 7 * 24 * H,
            Window::D30 => 30 * 24 * H,
        }
    }

    /// Whole UTC days of the cost roll-up (today included); `None` below a day.
    pub fn days(self) -> Option<i64> {
        (self.millis() >= crate::cost::prices::DAY_MS)
            .then(|| self.millis() / crate::cost::prices::DAY_MS)
    }
}

/// One ROC/PR point: decisions with risk ≥ `threshold` predicted hallucinated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RocPoint {
    pub threshold: f64,
    /// True-positive rate (recall).
    pub tpr: f64,
    pub fpr: f64,
    /// `null` when nothing is at or above the threshold.
    pub precision: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EnsembleKpis {
    /// Decisions that carry ensemble votes.
    pub voted: u64,
    /// Disagreement events by kind (`split`, `abstention`).
    pub disagreements: BTreeMap<String, u64>,
    /// 1 − disagreements / voted.
    pub agreement_rate: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CostKpis {
    pub currency: String,
    /// First UTC day (`YYYY-MM-DD`) of the roll-up; the last is today.
    pub from: String,
    pub tenants: Vec<TenantTotal>,
    /// Days without a price book entry in force (not in the totals).
    pub unpriced_days: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Savings {
    /// Σ projected monthly saving of the pending recommendations.
    pub projected_monthly: f64,
    /// Σ realised monthly saving of the applied recommendations that have one.
    pub realised_monthly: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BudgetUse {
    pub tenant: String,
    /// Month-to-date spend over the hard cap, as the budget job last computed it.
    pub utilisation: Option<f64>,
}

/// `GET /v1/kpis`: the buyer KPIs of one window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Kpis {
    pub window: Window,
    /// Start of the window (RFC 3339); it ends at `at`.
    pub from: String,
    pub at: String,
    pub decisions: u64,
    pub escalated: u64,
    pub escalation_rate: Option<f64>,
    /// Decisions with a risk score.
    pub scored: u64,
    pub high_risk_rate: Option<f64>,
    /// Decisions with an effective label, and those labelled hallucinated.
    pub labelled: u64,
    pub hallucinated: u64,
    pub containment_rate: Option<f64>,
    /// Containment per scoring arm (`champion`, `challenger`, `canary`).
    pub containment_by_arm: BTreeMap<String, f64>,
    /// Each other arm's containment minus the champion's.
    pub containment_delta_vs_control: BTreeMap<String, f64>,
    /// Online AUROC of the served risk against the labels: `all` and per model version.
    pub hrs_auroc: BTreeMap<String, f64>,
    /// Empty without both classes among the labelled scored decisions.
    pub roc: Vec<RocPoint>,
    pub ensemble: EnsembleKpis,
    /// Share of the scored decisions per model version.
    pub model_versions: BTreeMap<String, f64>,
    /// `null` for windows shorter than a day.
    pub cost: Option<CostKpis>,
    pub savings: Savings,
    pub budgets: Vec<BudgetUse>,
}

#[derive(Debug, thiserror::Error)]
pub enum KpiError {
    #[error(transparent)]
    Store(#[from] sqlx::Error),
    #[error(transparent)]
    Cost(#[from] crate::cost::CostError),
}

fn ratio(num: u64, den: u64) -> Option<f64> {
    (den > 0).then(|| num as f64 / den as f64)
}

/// A labelled decision of the window.
#[derive(Debug, Clone)]
struct Labelled {
    contained: bool,
    risk: Option<f64>,
    model_version: Option<String>,
    arm: Option<String>,
    hallucinated: bool,
}

/// The KPIs of `window` ending at `now_ms`.
pub async fn compute(
    db: &Db,
    cost: &CostOptions,
    window: Window,
    now_ms: i64,
) -> Result<Kpis, KpiError> {
    let from_ms = now_ms - window.millis();
    // PostgreSQL sums BIGINT as NUMERIC, which sqlx's Any driver cannot decode: cast back.
    let r = sqlx::query(
        "SELECT COUNT(*) AS n, CAST(COALESCE(SUM(escalated), 0) AS BIGINT) AS esc, \
         CAST(COALESCE(SUM(CASE WHEN risk IS NOT NULL THEN 1 ELSE 0 END), 0) AS BIGINT) AS scored, \
         CAST(COALESCE(SUM(CASE WHEN risk >= $2 THEN 1 ELSE 0 END), 0) AS BIGINT) AS high, \
         CAST(COALESCE(SUM(CASE WHEN votes IS NOT NULL THEN 1 ELSE 0 END), 0) AS BIGINT) AS voted \
         FROM decision_log WHERE created_at_ms >= $1",
    )
    .bind(from_ms)
    .bind(HIGH_RISK)
    .fetch_one(&db.pool)
    .await?;
    let count = |c: &str| -> Result<u64, sqlx::Error> {
        Ok(u64::try_from(r.try_get::<i64, _>(c)?).unwrap_or(0))
    };
    let (decisions, escalated, scored, high, voted) = (
        count("n")?,
        count("esc")?,
        count("scored")?,
        count("high")?,
        count("voted")?,
    );

    let mut model_versions = BTreeMap::new();
    for r in sqlx::query(
        "SELECT COALESCE(model_version, '') AS v, COUNT(*) AS n FROM decision_log \
         WHERE created_at_ms >= $1 AND risk IS NOT NULL GROUP BY COALESCE(model_version, '')",
    )
    .bind(from_ms)
    .fetch_all(&db.pool)
    .await?
    {
        let n: i64 = r.try_get("n")?;
        if let Some(share) = ratio(u64::try_from(n).unwrap_or(0), scored) {
            model_versions.insert(r.try_get::<String, _>("v")?, share);
        }
    }

    let mut disagreements = BTreeMap::new();
    for r in sqlx::query(
        "SELECT kind, COUNT(*) AS n FROM ensemble_disagreements WHERE created_at_ms >= $1 \
         GROUP BY kind",
    )
    .bind(from_ms)
    .fetch_all(&db.pool)
    .await?
    {
        let n: i64 = r.try_get("n")?;
        disagreements.insert(r.try_get("kind")?, u64::try_from(n).unwrap_or(0));
    }
    let disagreed: u64 = disagreements.values().sum();
    let ensemble = EnsembleKpis {
        voted,
        agreement_rate: ratio(voted.saturating_sub(disagreed), voted),
        disagreements,
    };

    let labelled = labelled(db, from_ms).await?;
    let hallucinated: Vec<&Labelled> = labelled.iter().filter(|l| l.hallucinated).collect();
    let contained = |ls: &[&Labelled]| {
        ratio(
            ls.iter().filter(|l| l.contained).count() as u64,
            ls.len() as u64,
        )
    };
    let mut by_arm: BTreeMap<String, Vec<&Labelled>> = BTreeMap::new();
    for l in &hallucinated {
        if let Some(a) = &l.arm {
            by_arm.entry(a.clone()).or_default().push(l);
        }
    }
    let containment_by_arm: BTreeMap<String, f64> = by_arm
        .iter()
        .filter_map(|(a, ls)| Some((a.clone(), contained(ls)?)))
        .collect();
    let containment_delta_vs_control = match containment_by_arm.get(CONTROL_ARM) {
        Some(&control) => containment_by_arm
            .iter()
            .filter(|(a, _)| a.as_str() != CONTROL_ARM)
            .map(|(a, c)| (a.clone(), c - control))
            .collect(),
        None => BTreeMap::new(),
    };

    let scored_labelled: Vec<(f64, u8, Option<&str>)> = labelled
        .iter()
        .filter_map(|l| {
            Some((
                l.risk?,
                u8::from(l.hallucinated),
                l.model_version.as_deref(),
            ))
        })
        .collect();
    let mut hrs_auroc = BTreeMap::new();
    let (scores, ys): (Vec<f64>, Vec<u8>) = scored_labelled.iter().map(|s| (s.0, s.1)).unzip();
    if let Some(a) = crate::ml::metrics::auroc(&scores, &ys) {
        hrs_auroc.insert("all".to_string(), a);
    }
    let mut by_version: BTreeMap<&str, (Vec<f64>, Vec<u8>)> = BTreeMap::new();
    for (s, y, v) in &scored_labelled {
        let e = by_version.entry(v.unwrap_or("")).or_default();
        e.0.push(*s);
        e.1.push(*y);
    }
    for (v, (s, y)) in by_version {
        if let Some(a) = crate::ml::metrics::auroc(&s, &y) {
            hrs_auroc.insert(v.to_string(), a);
        }
    }

    Ok(Kpis {
        window,
        from: crate::ab::rfc3339(from_ms),
        at: crate::ab::rfc3339(now_ms),
        decisions,
        escalated,
        escalation_rate: ratio(escalated, decisions),
        scored,
        high_risk_rate: ratio(high, scored),
        labelled: labelled.len() as u64,
        hallucinated: hallucinated.len() as u64,
        containment_rate: contained(&hallucinated),
        containment_by_arm,
        containment_delta_vs_control,
        hrs_auroc,
        roc: roc(&scores, &ys),
        ensemble,
        model_versions,
        cost: cost_of(db, cost, window, now_ms).await?,
        savings: savings(db).await?,
        budgets: crate::cost::budgets::list(db)
            .await?
            .into_iter()
            .map(|b| BudgetUse {
                tenant: b.budget.tenant,
                utilisation: b.utilisation,
            })
            .collect(),
    })
}

/// The window's decisions that have labels, each with its effective label.
async fn labelled(db: &Db, from_ms: i64) -> Result<Vec<Labelled>, sqlx::Error> {
    let rows = sqlx::query(&format!(
        "SELECT d.id AS decision_id, d.accepted AS accepted, d.escalated AS escalated, \
         d.risk AS risk, d.model_version AS model_version, d.arm AS arm, \
         {} FROM decision_log d JOIN labels l ON l.tenant = d.tenant AND l.pcs_id = d.pcs_id \
         WHERE d.created_at_ms >= $1 ORDER BY d.id",
        crate::review::store::JOINED_LABEL_COLUMNS
    ))
    .bind(from_ms)
    .fetch_all(&db.pool)
    .await?;
    let heads = crate::review::store::effective_by_decision(&rows, |r| {
        let accepted: i64 = r.try_get("accepted")?;
        let escalated: i64 = r.try_get("escalated")?;
        Ok(Labelled {
            contained: escalated != 0 || accepted == 0,
            risk: r.try_get("risk")?,
            model_version: r.try_get("model_version")?,
            arm: r.try_get("arm")?,
            hallucinated: false,
        })
    })?;
    Ok(heads
        .into_iter()
        .map(|(mut l, label)| {
            l.hallucinated = label.label == Label::Hallucinated;
            l
        })
        .collect())
}

/// The ROC/PR points at [`THRESHOLDS`]; empty without both classes.
pub fn roc(scores: &[f64], labels: &[u8]) -> Vec<RocPoint> {
    let pos = labels.iter().filter(|&&y| y == 1).count() as u64;
    let neg = labels.len() as u64 - pos;
    if pos == 0 || neg == 0 {
        return Vec::new();
    }
    THRESHOLDS
        .iter()
        .map(|&t| {
            let (mut tp, mut fp) = (0u64, 0u64);
            for (s, y) in scores.iter().zip(labels) {
                if *s >= t {
                    if *y == 1 {
                        tp += 1;
                    } else {
                        fp += 1;
                    }
                }
            }
            RocPoint {
                threshold: t,
                tpr: tp as f64 / pos as f64,
                fpr: fp as f64 / neg as f64,
                precision: ratio(tp, tp + fp),
            }
        })
        .collect()
}

async fn cost_of(
    db: &Db,
    opts: &CostOptions,
    window: Window,
    now_ms: i64,
) -> Result<Option<CostKpis>, crate::cost::CostError> {
    let Some(days) = window.days() else {
        return Ok(None);
    };
    let today = crate::cost::prices::day_of_ms(now_ms);
    let sel = crate::cost::record::Selection {
        from_day: today - days + 1,
        to_day: today + 1,
        ..Default::default()
    };
    let rows = crate::cost::rollup(db, opts, &sel).await?;
    let s = crate::cost::summarise(&opts.currency, sel.from_day, sel.to_day, rows);
    Ok(Some(CostKpis {
        currency: s.currency,
        from: s.from,
        tenants: s.tenants,
        unpriced_days: s.unpriced_days,
    }))
}

async fn savings(db: &Db) -> Result<Savings, crate::cost::CostError> {
    let mut s = Savings {
        projected_monthly: 0.0,
        realised_monthly: 0.0,
    };
    for r in crate::cost::advisor::list(db).await? {
        if r.status == "pending" {
            s.projected_monthly += r.projected_monthly_saving;
        }
        if let Some(real) = r.realised {
            s.realised_monthly += real.monthly_saving;
        }
    }
    Ok(s)
}
