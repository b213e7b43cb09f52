//! The statistics of an experiment, from stored data only: the decision-log rows scored by its
//! bundles (`first_bundle_version ≤ bundle_version < end_bundle_version`, arm `champion` with
//! the control's model version or `challenger` with the treatment's) and the labels of those
//! decisions.
//!
//! Per arm: requests, distinct tenants, escalations with the Wilson 95 % interval
//! ([`wilson`]), latency percentiles of `verify_ns` (NumPy's `linear` method, read from the
//! database two rows at a time, so no arm is ever loaded into memory), and over the decisions
//! with a label (the one that counts, [`effective_label`]; positive = `hallucinated`, score =
//! the stored risk) the AUROC with its DeLong interval ([`delong`]) once the arm has
//! [`MIN_PER_CLASS`] of each class. The arms are independent samples (disjoint tenants), so
//! they are compared with the unpaired DeLong test ([`compare_unpaired`], treatment − control).

use super::Experiment;
use crate::ml::stats::delong::{compare_unpaired, delong, AurocEstimate, Comparison};
use crate::ml::stats::interval::{wilson, Interval};
use crate::ml::stats::normal::Z_95;
use crate::ml::stats::psi::quantile_linear;
use crate::review::store::{effective_by_decision, JOINED_LABEL_COLUMNS};
use crate::review::Label;
use serde::{Deserialize, Serialize};
use sqlx::{AnyPool, Row};
use std::collections::BTreeMap;

/// Labelled decisions of each class an arm needs before its AUROC is reported.
pub const MIN_PER_CLASS: usize = 10;
/// Significance level of the verdict (two-sided).
pub const ALPHA: f64 = 0.05;
/// The latency percentiles reported.
pub const PERCENTILES: [f64; 3] = [0.5, 0.95, 0.99];

/// What the AUROC comparison says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The treatment's AUROC is higher, p < 0.05.
    TreatmentBetter,
    /// The control's AUROC is higher, p < 0.05.
    ControlBetter,
    /// p ≥ 0.05.
    NoDifference,
    /// An arm has fewer than 10 labelled decisions of a class, or the test has no variance.
    InsufficientData,
}

/// `verify_ns` percentiles of an arm (NumPy `quantile(method='linear')`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Latency {
    /// Decisions with a recorded `verify_ns`.
    pub n: u64,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
}

/// The numbers of one arm.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ArmStats {
    /// `champion` (control) or `challenger` (treatment), as in the decision log.
    pub arm: String,
    pub model_version: String,
    /// Scored decisions.
    pub requests: u64,
    /// Distinct tenants among them.
    pub tenants: u64,
    /// Decisions answered 202 (escalated).
    pub escalated: u64,
    /// escalated / requests; `null` without requests.
    pub escalation_rate: Option<f64>,
    /// Wilson score interval, 95 %; `null` without requests.
    pub escalation_ci95: Option<Interval>,
    /// `null` when no decision recorded its time.
    pub latency_ns: Option<Latency>,
    /// Decisions with a label (the effective one counts).
    pub labelled: u64,
    pub hallucinated: u64,
    pub faithful: u64,
    /// AUROC of the stored risk against the labels with its DeLong variance and 95 % interval;
    /// `null` below 10 labelled decisions of either class.
    pub auroc: Option<AurocEstimate>,
}

/// `GET /v1/hrs/ab/{experiment_id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Report {
    pub experiment: Experiment,
    /// The decision-log rows read: ids up to this one (the same snapshot for every number).
    pub as_of_decision_id: i64,
    pub control: ArmStats,
    pub treatment: ArmStats,
    /// Unpaired DeLong test of AUROC(treatment) − AUROC(control); `null` while either AUROC is.
    pub auroc_difference: Option<Comparison>,
    pub verdict: Verdict,
    /// Why, in words (the counts short of the minimum, or the test's p-value).
    pub verdict_reason: String,
    pub min_per_class: usize,
    pub alpha: f64,
}

/// The experiment's decision-log rows: binds $1 first bundle, $2 end bundle (exclusive),
/// $3 last decision id, $4 control, $5 treatment.
const ROWS: &str = "d.bundle_version >= $1 AND d.bundle_version < $2 AND d.id <= $3 \
     AND ((d.arm = 'champion' AND d.model_version = $4) \
       OR (d.arm = 'challenger' AND d.model_version = $5))";

struct Window<'a> {
    first: i64,
    end: i64,
    last_id: i64,
    control: &'a str,
    treatment: &'a str,
}

impl Window<'_> {
    fn bind<'q>(
        &'q self,
        q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    ) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
        q.bind(self.first)
            .bind(self.end)
            .bind(self.last_id)
            .bind(self.control)
            .bind(self.treatment)
    }
}

/// Counts of one arm from the database.
#[derive(Default)]
struct Counts {
    requests: i64,
    tenants: i64,
    escalated: i64,
    timed: i64,
}

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// The statistics of `e` (see the module docs).
pub async fn report(pool: &AnyPool, e: &Experiment) -> Result<Report, sqlx::Error> {
    let last_id: i64 = sqlx::query("SELECT COALESCE(MAX(id), 0) AS m FROM decision_log")
        .fetch_one(pool)
        .await?
        .try_get("m")?;
    let w = Window {
        // Never started (pending): no bundle carried it, so no row matches.
        first: e.first_bundle_version.unwrap_or(i64::MAX),
        end: e.end_bundle_version.unwrap_or(i64::MAX),
        last_id,
        control: &e.control,
        treatment: &e.treatment,
    };
    let counts_sql = format!(
        "SELECT d.arm AS arm, COUNT(*) AS n, COUNT(DISTINCT d.tenant) AS tenants, \
         COUNT(CASE WHEN d.escalated = 1 THEN 1 END) AS escalated, \
         COUNT(d.verify_ns) AS timed FROM decision_log d WHERE {ROWS} GROUP BY d.arm"
    );
    let mut counts: BTreeMap<String, Counts> = BTreeMap::new();
    for r in w.bind(sqlx::query(&counts_sql)).fetch_all(pool).await? {
        counts.insert(
            r.try_get("arm")?,
            Counts {
                requests: r.try_get("n")?,
                tenants: r.try_get("tenants")?,
                escalated: r.try_get("escalated")?,
                timed: r.try_get("timed")?,
            },
        );
    }
    let labelled = labelled_scores(pool, &w).await?;
    let mut arms = Vec::new();
    for (arm, version) in [("champion", &e.control), ("challenger", &e.treatment)] {
        let c = counts.remove(arm).unwrap_or_default();
        let latency = latency(pool, &w, arm, c.timed).await?;
        let (scores, labels) = labelled.get(arm).cloned().unwrap_or_default();
        let positives = labels.iter().filter(|&&l| l == 1).count();
        let negatives = labels.len() - positives;
        let auroc = arm_auroc(&scores, &labels);
        let interval = wilson(count(c.escalated), count(c.requests), Z_95).ok();
        arms.push(ArmStats {
            arm: arm.into(),
            model_version: version.clone(),
            requests: count(c.requests),
            tenants: count(c.tenants),
            escalated: count(c.escalated),
            escalation_rate: interval.map(|_| c.escalated as f64 / c.requests as f64),
            escalation_ci95: interval,
            latency_ns: latency,
            labelled: labels.len() as u64,
            hallucinated: positives as u64,
            faithful: negatives as u64,
            auroc,
        });
    }
    let (treatment, control) = match (arms.pop(), arms.pop()) {
        (Some(t), Some(c)) => (t, c),
        _ => return Err(sqlx::Error::RowNotFound),
    };
    let (auroc_difference, verdict, verdict_reason) = verdict(&control, &treatment);
    Ok(Report {
        experiment: e.clone(),
        as_of_decision_id: last_id,
        control,
        treatment,
        auroc_difference,
        verdict,
        verdict_reason,
        min_per_class: MIN_PER_CLASS,
        alpha: ALPHA,
    })
}

/// The AUROC of an arm's labelled decisions with its DeLong interval, once it has
/// [`MIN_PER_CLASS`] of each class.
pub(super) fn arm_auroc(scores: &[f64], labels: &[u8]) -> Option<AurocEstimate> {
    let positives = labels.iter().filter(|&&l| l == 1).count();
    if positives < MIN_PER_CLASS || labels.len() - positives < MIN_PER_CLASS {
        return None;
    }
    delong(scores, labels).ok()
}

/// The labelled decisions per arm: (stored risks, 1 = hallucinated / 0 = faithful), by the
/// effective label of each decision.
async fn labelled_scores(
    pool: &AnyPool,
    w: &Window<'_>,
) -> Result<BTreeMap<String, (Vec<f64>, Vec<u8>)>, sqlx::Error> {
    let sql = format!(
        "SELECT d.id AS decision_id, d.arm AS arm, d.risk AS risk, {JOINED_LABEL_COLUMNS} \
         FROM decision_log d JOIN labels l ON l.tenant = d.tenant AND l.pcs_id = d.pcs_id \
         WHERE {ROWS} AND d.risk IS NOT NULL ORDER BY d.id"
    );
    let rows = w.bind(sqlx::query(&sql)).fetch_all(pool).await?;
    let labelled = effective_by_decision(&rows, |r| {
        Ok((r.try_get::<String, _>("arm")?, r.try_get::<f64, _>("risk")?))
    })?;
    let mut out: BTreeMap<String, (Vec<f64>, Vec<u8>)> = BTreeMap::new();
    for ((arm, risk), l) in labelled {
        let slot = out.entry(arm).or_default();
        slot.0.push(risk);
        slot.1.push(u8::from(l.label == Label::Hallucinated));
    }
    Ok(out)
}

/// Percentiles of `verify_ns` of `arm`, which has `n` timed decisions: for each, the two
/// neighbouring values in sorted order (`LIMIT 2 OFFSET ⌊(n − 1)·q⌋`) and NumPy's
/// interpolation between them ([`quantile_linear`] on the pair with the fractional weight
/// gives bit for bit what it gives on the whole sorted arm).
async fn latency(
    pool: &AnyPool,
    w: &Window<'_>,
    arm: &str,
    n: i64,
) -> Result<Option<Latency>, sqlx::Error> {
    if n <= 0 {
        return Ok(None);
    }
    let sql = format!(
        "SELECT d.verify_ns AS v FROM decision_log d WHERE {ROWS} AND d.arm = $6 \
         AND d.verify_ns IS NOT NULL ORDER BY d.verify_ns LIMIT 2 OFFSET $7"
    );
    let mut p = [0.0; 3];
    for (slot, q) in p.iter_mut().zip(PERCENTILES) {
        let h = (n - 1) as f64 * q;
        let i = h.floor();
        let pair = w
            .bind(sqlx::query(&sql))
            .bind(arm)
            .bind(i as i64)
            .fetch_all(pool)
            .await?
            .iter()
            .map(|r| r.try_get::<i64, _>("v").map(|v| v as f64))
            .collect::<Result<Vec<f64>, _>>()?;
        if pair.is_empty() {
            return Ok(None);
        }
        *slot = quantile_linear(&pair, h - i);
    }
    Ok(Some(Latency {
        n: count(n),
        p50: p[0],
        p95: p[1],
        p99: p[2],
    }))
}

/// The verdict from the two arms' AUROCs.
pub(super) fn verdict(
    control: &ArmStats,
    treatment: &ArmStats,
) -> (Option<Comparison>, Verdict, String) {
    let (Some(c), Some(t)) = (&control.auroc, &treatment.auroc) else {
        return (
            None,
            Verdict::InsufficientData,
            format!(
                "each arm needs at least {MIN_PER_CLASS} hallucinated and {MIN_PER_CLASS} \
                 faithful labelled decisions: control has {} and {}, treatment {} and {}",
                control.hallucinated, control.faithful, treatment.hallucinated, treatment.faithful
            ),
        );
    };
    match compare_unpaired(c, t) {
        Err(e) => (None, Verdict::InsufficientData, e.to_string()),
        Ok(cmp) => {
            let verdict = if cmp.p_value >= ALPHA {
                Verdict::NoDifference
            } else if cmp.difference > 0.0 {
                Verdict::TreatmentBetter
            } else {
                Verdict::ControlBetter
            };
            let reason = format!(
                "AUROC treatment − control = {:.4} (DeLong z = {:.3}, p = {:.4}, α = {ALPHA})",
                cmp.difference, cmp.z, cmp.p_value
            );
            (Some(cmp), verdict, reason)
        }
    }
}
