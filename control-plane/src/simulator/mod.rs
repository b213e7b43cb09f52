//! The policy simulator (issue 7): a structured policy change replayed exactly over recorded
//! decisions — the features the gate scored with and its risk, as recorded — through the
//! candidate bundle with the same `core` code the filter runs, giving predicted deltas, a risk
//! level, the SLOs the change would breach and a recommendation (approve / review / reject).
//!
//! Exactness: a decision whose candidate arm's model is the model that scored it keeps its
//! recorded risk bit for bit (a threshold change is then an exact re-threshold); one scored
//! by another model is rescored from its recorded features (`Model::decision`, Platt), with the
//! recorded tenant-statistics shift of its decision value carried over (the only input the
//! decision log does not hold; bounded by `core::bundle::TENANT_MAX_SHIFT`). The assignment to
//! arms is the candidate bundle's own consistent hash (`Bundle::arm`).

pub mod api;
pub mod ensemble;
#[cfg(test)]
mod tests;

use crate::registry::history::{Actor, Reason, Why};
use crate::registry::{self, card, keys, CANARY, CHALLENGER, CHAMPION};
use crate::store::Db;
use kakeya_core::bundle::{Arm, Bundle};
use kakeya_core::ensemble_policy::Decision;
use kakeya_core::features::{N_FEATURES, SCHEMA_VERSION};
use kakeya_core::model::Model;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use std::collections::BTreeMap;

/// Most decisions a simulation replays (the newest of the window).
pub const MAX_REPLAY: i64 = 2_000_000;
/// Longest policy id.
pub const MAX_POLICY_ID_CHARS: usize = 128;

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    #[error(transparent)]
    Registry(#[from] registry::RegistryError),
    #[error("database: {0}")]
    Store(#[from] sqlx::Error),
}

/// A policy change: every field optional, at least one given.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyDiff {
    /// Replace the champion by this registered version.
    pub model_version: Option<String>,
    /// The champion's escalation threshold on the calibrated risk, within (0, 1].
    pub escalate_threshold: Option<f64>,
    /// The canary's weight, within [0, 1] (a canary must be set).
    pub canary_weight: Option<f64>,
    /// The challenger's weight, within [0, 1] (a challenger must be set).
    pub challenger_weight: Option<f64>,
    /// A change of the ensemble (N-of-M) policies, replayed over the recorded votes.
    pub ensemble: Option<ensemble::EnsembleDiff>,
}

/// The SLOs a change is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Slos {
    /// Largest escalation rate after the change.
    pub max_escalation_rate: f64,
    /// Smallest containment (recall on labelled hallucinations) after the change, as a share
    /// of the containment before it.
    pub min_containment_ratio: f64,
}

impl Default for Slos {
    fn default() -> Self {
        Slos {
            max_escalation_rate: 0.25,
            min_containment_ratio: 0.95,
        }
    }
}

/// `POST /v1/operator/policy/simulate`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SimulateRequest {
    /// Names the change; `apply` takes the latest simulation of this id. 1..=128 characters
    /// of A-Z a-z 0-9 . _ -
    pub policy_id: String,
    pub diff: PolicyDiff,
    /// Replay the decisions of this window before now (`7d`, `24h`; default 7d).
    #[serde(default)]
    pub window: Option<String>,
    #[serde(default)]
    pub slos: Slos,
}

/// Outcomes over the replayed decisions, before (as recorded) or after (as replayed).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Outcome {
    pub decisions: u64,
    pub escalated: u64,
    pub escalation_rate: f64,
    /// Rejected by an ensemble policy (422).
    #[serde(default)]
    pub rejected: u64,
    pub labelled_hallucinated: u64,
    /// Labelled hallucinations escalated or rejected.
    pub contained: u64,
    /// contained / labelled_hallucinated (`null` without labelled hallucinations).
    pub containment: Option<f64>,
    pub labelled_faithful: u64,
    /// Labelled faithful decisions escalated or rejected.
    pub false_escalations: u64,
    /// Decisions per arm.
    pub by_arm: BTreeMap<String, u64>,
}

/// Low, medium or high.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RiskLevel {
    Low,
    Medium,
    High,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = SimulationRecommendation)]
pub enum Recommendation {
    Approve,
    Review,
    Reject,
}

impl Recommendation {
    pub fn as_str(self) -> &'static str {
        match self {
            Recommendation::Approve => "approve",
            Recommendation::Review => "review",
            Recommendation::Reject => "reject",
        }
    }
}

/// The predicted effect of a change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Impact {
    /// Escalation rate after − before, in percentage points.
    pub escalation_delta_pp: f64,
    /// Containment after − before, in percentage points (`null` without labels).
    pub containment_delta_pp: Option<f64>,
    /// Decisions whose escalation flips.
    pub flipped: u64,
    /// Added latency: 0 when no decision changes model (the filter's work is the same), else
    /// `null` (not predicted: the recorded latency belongs to the recorded model).
    pub latency_delta_pct: Option<f64>,
    /// Not predicted: no cost figures are recorded per decision yet.
    pub cost_delta_pct: Option<f64>,
    pub risk: RiskLevel,
    pub breached_slos: Vec<String>,
}

/// How a simulation compared with the canary that followed it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Accuracy {
    pub deployment_id: String,
    /// The candidate model's escalation rate the replay predicted.
    pub predicted_escalation_rate: f64,
    /// The canary arm's escalation rate over its whole run.
    pub measured_escalation_rate: f64,
    pub measured_decisions: u64,
    /// |predicted − measured| in percentage points.
    pub abs_error_pp: f64,
    /// 1 − |predicted − measured| / measured (1 when both are 0), at least 0.
    pub accuracy: f64,
}

/// A stored simulation (`GET /v1/operator/policy/simulation`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Simulation {
    pub simulation_id: String,
    pub policy_id: String,
    pub diff: PolicyDiff,
    pub slos: Slos,
    pub simulated_at_ms: i64,
    pub since_ms: i64,
    pub until_ms: i64,
    /// The served bundle the change was applied to; `apply` refuses once another is served.
    pub bundle_version: u64,
    pub before: Outcome,
    pub after: Outcome,
    /// The escalation rate of the candidate champion's model had it scored every replayed
    /// decision (what a canary of `diff.model_version` measures on its arm).
    pub candidate_model_escalation_rate: Option<f64>,
    pub impact: Impact,
    pub recommendation: Recommendation,
    pub applied_at_ms: Option<i64>,
    pub accuracy: Option<Accuracy>,
}

/// One recorded decision, as replay reads it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub tenant: String,
    pub pcs_id: String,
    pub accepted: bool,
    pub escalated: bool,
    pub risk: f64,
    pub high: bool,
    pub model_version: String,
    pub x: [f64; N_FEATURES],
    /// Effective label: Some(true) hallucinated, Some(false) faithful.
    pub label: Option<bool>,
    /// The ensemble's recorded votes and verdict, when the tenant had a policy.
    pub votes: Option<Box<ensemble::RecordedVotes>>,
}

/// The candidate: a bundle (models and weights) and the champion's threshold override.
pub struct Candidate {
    pub bundle: Bundle,
    pub champion_threshold: Option<f64>,
    /// The changed ensemble policies (`diff.ensemble`): decisions with recorded votes under
    /// one of them are decided by it over their votes.
    pub ensemble: Option<kakeya_core::ensemble_policy::EnsembleSection>,
}

fn logit(p: f64) -> f64 {
    (p / (1.0 - p)).ln()
}

/// The decision value behind a recorded calibrated risk (Platt inverted), if finite.
fn recorded_z(m: &Model, risk: f64) -> Option<f64> {
    let a = m.platt().a;
    if a == 0.0 || !(risk > 0.0 && risk < 1.0) {
        return None;
    }
    let z = (-logit(risk) - m.platt().b) / a;
    z.is_finite().then_some(z)
}

/// What happened to one decision: escalated, rejected (by an ensemble), or neither.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Fate {
    escalated: bool,
    rejected: bool,
}

impl Fate {
    fn of(d: Decision) -> Fate {
        Fate {
            escalated: d == Decision::Escalate,
            rejected: d == Decision::Reject,
        }
    }
}

fn tally(o: &mut Outcome, r: &Recorded, f: Fate, arm: &str) {
    let caught = u64::from(f.escalated || f.rejected);
    o.decisions += 1;
    o.escalated += u64::from(f.escalated);
    o.rejected += u64::from(f.rejected);
    // No allocation per decision once the arm is counted.
    match o.by_arm.get_mut(arm) {
        Some(n) => *n += 1,
        None => {
            o.by_arm.insert(arm.to_string(), 1);
        }
    }
    match r.label {
        Some(true) => {
            o.labelled_hallucinated += 1;
            o.contained += caught;
        }
        Some(false) => {
            o.labelled_faithful += 1;
            o.false_escalations += caught;
        }
        None => {}
    }
}

fn finish(o: &mut Outcome) {
    o.escalation_rate = if o.decisions > 0 {
        o.escalated as f64 / o.decisions as f64
    } else {
        0.0
    };
    o.containment =
        (o.labelled_hallucinated > 0).then(|| o.contained as f64 / o.labelled_hallucinated as f64);
}

/// What replay gives: before, after, flips, whether any decision changed model, and the
/// candidate champion model's escalation rate over every decision.
pub struct Replayed {
    pub before: Outcome,
    pub after: Outcome,
    pub flipped: u64,
    pub rescored: u64,
    pub champion_rate: f64,
}

/// Replays `rows` through `cand`; `models` holds every recorded version (a row of a version
/// not in it keeps its recorded risk under any model: counted as not rescored).
pub fn replay(rows: &[Recorded], models: &BTreeMap<String, Model>, cand: &Candidate) -> Replayed {
    let b = &cand.bundle;
    let versions: [(Arm, String); 3] =
        [Arm::Champion, Arm::Challenger, Arm::Canary].map(|a| (a, b.model(a).version()));
    let version_of = |a: Arm| {
        versions
            .iter()
            .find(|(x, _)| *x == a)
            .map_or("", |v| v.1.as_str())
    };
    let (mut before, mut after) = (Outcome::default(), Outcome::default());
    let (mut flipped, mut rescored, mut champion_escalated) = (0u64, 0u64, 0u64);
    let risk_under = |r: &Recorded, m: &Model, v: &str| -> f64 {
        if v == r.model_version {
            return r.risk;
        }
        let z0 = m.decision(&r.x);
        let shift = models
            .get(&r.model_version)
            .and_then(|rm| recorded_z(rm, r.risk).map(|z| z - rm.decision(&r.x)))
            .unwrap_or(0.0)
            .clamp(
                -kakeya_core::bundle::TENANT_MAX_SHIFT,
                kakeya_core::bundle::TENANT_MAX_SHIFT,
            );
        m.platt().apply(z0 + shift)
    };
    let threshold = |a: Arm, m: &Model| match (a, cand.champion_threshold) {
        (Arm::Champion, Some(t)) => t,
        _ => m.thresholds().escalate,
    };
    let canary_salt = version_of(Arm::Canary);
    for r in rows {
        let recorded = match &r.votes {
            Some(v) => Fate::of(v.verdict),
            None => Fate {
                escalated: r.escalated,
                rejected: false,
            },
        };
        tally(&mut before, r, recorded, "recorded");
        let arm = b.arm_with(&r.tenant, &r.pcs_id, canary_salt);
        let m = b.model(arm);
        let v = version_of(arm);
        if v != r.model_version {
            rescored += 1;
        }
        let risk = risk_under(r, m, v);
        // Escalations for other reasons than risk (verification) stay.
        let other = !r.accepted || (r.escalated && !r.high);
        let policy = cand
            .ensemble
            .as_ref()
            .and_then(|s| s.for_tenant(&r.tenant))
            .zip(r.votes.as_deref());
        let fate = match policy {
            // An ensemble decides over the recorded votes (kakeya_core::ensemble_policy).
            Some((p, votes)) => Fate::of(votes.decide(p)),
            None => Fate {
                escalated: other || risk >= threshold(arm, m),
                rejected: recorded.rejected,
            },
        };
        flipped += u64::from(fate != recorded);
        tally(&mut after, r, fate, arm.as_str());
        let cm = &b.champion;
        let cv = version_of(Arm::Champion);
        champion_escalated +=
            u64::from(other || risk_under(r, cm, cv) >= threshold(Arm::Champion, cm));
    }
    finish(&mut before);
    finish(&mut after);
    let champion_rate = if rows.is_empty() {
        0.0
    } else {
        champion_escalated as f64 / rows.len() as f64
    };
    before.by_arm.clear();
    Replayed {
        before,
        after,
        flipped,
        rescored,
        champion_rate,
    }
}

/// Risk, breaches and recommendation of a replay.
pub fn judge(r: &Replayed, slos: &Slos) -> (Impact, Recommendation) {
    let esc = (r.after.escalation_rate - r.before.escalation_rate) * 100.0;
    let cont = match (r.after.containment, r.before.containment) {
        (Some(a), Some(b)) => Some((a - b) * 100.0),
        _ => None,
    };
    let mut breached = Vec::new();
    if r.after.escalation_rate > slos.max_escalation_rate {
        breached.push(format!(
            "escalation rate {:.2} % > {:.2} %",
            r.after.escalation_rate * 100.0,
            slos.max_escalation_rate * 100.0
        ));
    }
    if let (Some(a), Some(b)) = (r.after.containment, r.before.containment) {
        if b > 0.0 && a / b < slos.min_containment_ratio {
            breached.push(format!(
                "containment {:.2} % < {:.0} % of {:.2} %",
                a * 100.0,
                slos.min_containment_ratio * 100.0,
                b * 100.0
            ));
        }
    }
    let worse_containment = -cont.unwrap_or(0.0);
    let risk = if !breached.is_empty() || esc.abs() > 5.0 || worse_containment > 5.0 {
        RiskLevel::High
    } else if esc.abs() > 1.0 || worse_containment > 1.0 {
        RiskLevel::Medium
    } else {
        RiskLevel::Low
    };
    let rec = match risk {
        _ if !breached.is_empty() => Recommendation::Reject,
        RiskLevel::High => Recommendation::Reject,
        RiskLevel::Medium => Recommendation::Review,
        RiskLevel::Low => Recommendation::Approve,
    };
    (
        Impact {
            escalation_delta_pp: esc,
            containment_delta_pp: cont,
            flipped: r.flipped,
            latency_delta_pct: (r.rescored == 0).then_some(0.0),
            cost_delta_pct: None,
            risk,
            breached_slos: breached,
        },
        rec,
    )
}

fn check_diff(d: &PolicyDiff) -> Result<(), SimError> {
    if *d == PolicyDiff::default() {
        return Err(SimError::Invalid(
            "diff changes nothing: give model_version, escalate_threshold, canary_weight, challenger_weight or ensemble".into(),
        ));
    }
    if let Some(e) = &d.ensemble {
        e.check().map_err(SimError::Invalid)?;
    }
    if let Some(t) = d.escalate_threshold {
        if !(t > 0.0 && t <= 1.0) {
            return Err(SimError::Invalid(
                "diff.escalate_threshold must be within (0, 1]".into(),
            ));
        }
    }
    for (what, w) in [
        ("canary_weight", d.canary_weight),
        ("challenger_weight", d.challenger_weight),
    ] {
        if let Some(w) = w {
            if !(0.0..=1.0).contains(&w) {
                return Err(SimError::Invalid(format!(
                    "diff.{what} must be within [0, 1]"
                )));
            }
        }
    }
    if let Some(v) = &d.model_version {
        if v.is_empty() || v.len() > 128 {
            return Err(SimError::Invalid(
                "diff.model_version must be 1..=128 characters".into(),
            ));
        }
    }
    Ok(())
}

/// The served bundle with `diff` applied.
async fn candidate(
    db: &Db,
    seed: &[u8; 32],
    diff: &PolicyDiff,
) -> Result<(u64, Candidate), SimError> {
    let pk = keys::public_key_b64(seed);
    let (_, mut b) = registry::served_bundle(db, &pk)
        .await?
        .ok_or_else(|| SimError::Conflict {
            code: "no_bundle",
            message: "no bundle is published yet: promote a champion first".into(),
        })?;
    let served = b.version;
    if let Some(v) = &diff.model_version {
        b.champion = match registry::verified_model(db, v, &pk).await {
            Ok(m) => m,
            Err(registry::RegistryError::NoModel(_)) => {
                return Err(SimError::NotFound(format!(
                    "no model {v} (register it first)"
                )))
            }
            Err(e) => return Err(e.into()),
        };
    }
    if let Some(w) = diff.canary_weight {
        match b.canary.as_mut() {
            Some(c) => c.weight = w,
            None => {
                return Err(SimError::Conflict {
                    code: "no_canary",
                    message: "diff.canary_weight needs a canary (POST /v1/aliases/canary or a canary deployment)".into(),
                })
            }
        }
    }
    if let Some(w) = diff.challenger_weight {
        if b.challenger.is_none() {
            return Err(SimError::Conflict {
                code: "no_challenger",
                message: "diff.challenger_weight needs a challenger".into(),
            });
        }
        b.challenger_weight = w;
    }
    let ensemble = match &diff.ensemble {
        Some(e) => Some(e.apply_section(&b.ensemble).map_err(|e| match e {
            ensemble::SectionError::NoPolicy(message) => SimError::Conflict {
                code: "no_ensemble_policy",
                message,
            },
            ensemble::SectionError::Invalid(m) => SimError::Invalid(m),
        })?),
        None => None,
    };
    Ok((
        served,
        Candidate {
            bundle: b,
            champion_threshold: diff.escalate_threshold,
            ensemble,
        },
    ))
}

/// The window's scored decisions with features (`$1..$2`, schema `$3`), newest first (the
/// `decision_log_created_at` index walked backwards: its entries are `(created_at_ms, id)`, so
/// no sort of a million rows), at most `$4`.
pub(crate) const RECORDED_SQL: &str =
    "SELECT d.id AS id, d.tenant AS tenant, d.pcs_id AS pcs_id, d.accepted AS accepted, \
     d.escalated AS escalated, d.risk AS risk, d.risk_band AS risk_band, \
     d.model_version AS model_version, d.features AS features, d.votes AS votes \
     FROM decision_log d \
     WHERE d.created_at_ms >= $1 AND d.created_at_ms < $2 AND d.risk IS NOT NULL \
     AND d.features IS NOT NULL AND d.feature_schema = $3 \
     ORDER BY d.created_at_ms DESC, d.id DESC LIMIT $4";

/// The labels of the window's scored decisions (`$1..$2`), unordered (they are grouped by
/// decision in memory). Each label row is joined by an index on both keys, `(tenant, pcs_id)`:
/// with bound parameters and no statistics SQLite used to pick `decision_log_tenant_created`
/// for the join (every decision of the tenant per label, quadratic: > 12 min for a million
/// decisions); migration 0036's `(tenant, pcs_id, created_at_ms)` index and the dropped
/// `ORDER BY` leave it only linear plans (pinned by
/// `simulator::tests::the_replay_reads_use_linear_plans`).
pub(crate) fn labelled_sql() -> String {
    format!(
        "SELECT d.id AS decision_id, {} FROM decision_log d JOIN labels l \
         ON l.tenant = d.tenant AND l.pcs_id = d.pcs_id \
         WHERE d.created_at_ms >= $1 AND d.created_at_ms < $2 AND d.risk IS NOT NULL",
        crate::review::store::JOINED_LABEL_COLUMNS
    )
}

/// The scored decisions of `[since, until)` with recorded features of the current schema,
/// newest first up to [`MAX_REPLAY`], with their effective labels.
pub async fn recorded(db: &Db, since: i64, until: i64) -> Result<Vec<Recorded>, sqlx::Error> {
    use futures_util::TryStreamExt;
    let mut rows = sqlx::query(RECORDED_SQL)
        .bind(since)
        .bind(until)
        .bind(SCHEMA_VERSION)
        .bind(MAX_REPLAY)
        .fetch(&db.pool);
    let (mut ids, mut out) = (Vec::new(), Vec::new());
    // Streamed: a million rows are never all held as database rows at once.
    while let Some(r) = rows.try_next().await? {
        let Ok(x) = crate::decision_features::parse_current(r.try_get::<&str, _>("features")?)
        else {
            continue;
        };
        ids.push(r.try_get::<i64, _>("id")?);
        out.push(Recorded {
            tenant: r.try_get("tenant")?,
            pcs_id: r.try_get("pcs_id")?,
            accepted: r.try_get::<i64, _>("accepted")? != 0,
            escalated: r.try_get::<i64, _>("escalated")? != 0,
            risk: r.try_get("risk")?,
            high: r.try_get::<Option<String>, _>("risk_band")?.as_deref() == Some("high"),
            model_version: r
                .try_get::<Option<String>, _>("model_version")?
                .unwrap_or_default(),
            x,
            label: None,
            votes: r
                .try_get::<Option<String>, _>("votes")?
                .and_then(|v| ensemble::RecordedVotes::parse(&v))
                .map(Box::new),
        });
    }
    // Labels of the window's decisions, by their effective label.
    let labelled = sqlx::query(&labelled_sql())
        .bind(since)
        .bind(until)
        .fetch_all(&db.pool)
        .await?;
    let by_id: BTreeMap<i64, bool> = crate::review::store::effective_by_decision(&labelled, |r| {
        r.try_get::<i64, _>("decision_id")
    })?
    .into_iter()
    .map(|(id, l)| (id, l.label == crate::review::Label::Hallucinated))
    .collect();
    for (id, r) in ids.iter().zip(out.iter_mut()) {
        r.label = by_id.get(id).copied();
    }
    Ok(out)
}

/// The models that scored `rows`, verified.
async fn recorded_models(
    db: &Db,
    seed: &[u8; 32],
    rows: &[Recorded],
) -> Result<BTreeMap<String, Model>, SimError> {
    let pk = keys::public_key_b64(seed);
    let mut out = BTreeMap::new();
    let versions: std::collections::BTreeSet<&str> =
        rows.iter().map(|r| r.model_version.as_str()).collect();
    for v in versions {
        match registry::verified_model(db, v, &pk).await {
            Ok(m) => {
                out.insert(v.to_string(), m);
            }
            Err(registry::RegistryError::NoModel(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(out)
}

fn check_policy_id(id: &str) -> Result<(), SimError> {
    let ok = (1..=MAX_POLICY_ID_CHARS).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(SimError::Invalid(format!(
            "policy_id must be 1..={MAX_POLICY_ID_CHARS} characters of A-Z a-z 0-9 . _ -"
        )))
    }
}

/// Runs and stores a simulation.
pub async fn simulate(
    db: &Db,
    seed: &[u8; 32],
    req: &SimulateRequest,
    now_ms: i64,
) -> Result<Simulation, SimError> {
    check_policy_id(&req.policy_id)?;
    check_diff(&req.diff)?;
    if !(0.0..=1.0).contains(&req.slos.max_escalation_rate)
        || !(0.0..=1.0).contains(&req.slos.min_containment_ratio)
    {
        return Err(SimError::Invalid(
            "slos values must be within [0, 1]".into(),
        ));
    }
    let window = match &req.window {
        Some(w) => {
            crate::ab::parse_duration(w).map_err(|e| SimError::Invalid(format!("window: {e}")))?
        }
        None => std::time::Duration::from_secs(7 * 86_400),
    };
    let since = now_ms.saturating_sub(i64::try_from(window.as_millis()).unwrap_or(i64::MAX));
    let (bundle_version, cand) = candidate(db, seed, &req.diff).await?;
    let rows = recorded(db, since, now_ms + 1).await?;
    if rows.is_empty() {
        return Err(SimError::Conflict {
            code: "no_decisions",
            message: format!(
                "no scored decisions with recorded features in the window ({} s); widen it",
                window.as_secs()
            ),
        });
    }
    if let Some(s) = &cand.ensemble {
        ensemble::check_recorded(s, &rows)
            .map_err(|(code, message)| SimError::Conflict { code, message })?;
    }
    let models = recorded_models(db, seed, &rows).await?;
    let r = replay(&rows, &models, &cand);
    let (impact, recommendation) = judge(&r, &req.slos);
    let sim = Simulation {
        simulation_id: format!("sim-{}-{}", req.policy_id, uuid_like(now_ms)),
        policy_id: req.policy_id.clone(),
        diff: req.diff.clone(),
        slos: req.slos,
        simulated_at_ms: now_ms,
        since_ms: since,
        until_ms: now_ms,
        bundle_version,
        before: r.before,
        after: r.after,
        candidate_model_escalation_rate: req.diff.model_version.as_ref().map(|_| r.champion_rate),
        impact,
        recommendation,
        applied_at_ms: None,
        accuracy: None,
    };
    sqlx::query(
        "INSERT INTO policy_simulations (id, policy_id, diff, result, recommendation, created_at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&sim.simulation_id)
    .bind(&sim.policy_id)
    .bind(serde_json::to_string(&sim.diff).unwrap_or_default())
    .bind(serde_json::to_string(&sim).unwrap_or_default())
    .bind(recommendation.as_str())
    .bind(now_ms)
    .execute(&db.pool)
    .await?;
    tracing::info!(simulation = %sim.simulation_id, recommendation = recommendation.as_str(), "policy simulated");
    Ok(sim)
}

/// A short unique suffix: the time and a process-wide counter.
fn uuid_like(now_ms: i64) -> String {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    format!(
        "{now_ms}-{}",
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

fn row_to_sim(r: &sqlx::any::AnyRow) -> Result<Simulation, sqlx::Error> {
    let mut s: Simulation = serde_json::from_str(&r.try_get::<String, _>("result")?)
        .map_err(|e| sqlx::Error::Decode(format!("policy_simulations.result: {e}").into()))?;
    s.applied_at_ms = r.try_get("applied_at_ms")?;
    s.accuracy = r
        .try_get::<Option<String>, _>("accuracy")?
        .map(|a| serde_json::from_str(&a))
        .transpose()
        .map_err(|e| sqlx::Error::Decode(format!("policy_simulations.accuracy: {e}").into()))?;
    Ok(s)
}

pub async fn get(db: &Db, id: &str) -> Result<Option<Simulation>, sqlx::Error> {
    sqlx::query("SELECT result, applied_at_ms, accuracy FROM policy_simulations WHERE id = $1")
        .bind(id)
        .fetch_optional(&db.pool)
        .await?
        .as_ref()
        .map(row_to_sim)
        .transpose()
}

async fn latest(db: &Db, policy_id: &str) -> Result<Option<Simulation>, sqlx::Error> {
    sqlx::query(
        "SELECT result, applied_at_ms, accuracy FROM policy_simulations WHERE policy_id = $1 \
         ORDER BY created_at_ms DESC, id DESC LIMIT 1",
    )
    .bind(policy_id)
    .fetch_optional(&db.pool)
    .await?
    .as_ref()
    .map(row_to_sim)
    .transpose()
}

/// Applies the latest simulation of `policy_id`: 409 `not_approved` unless it recommended
/// approve, `already_applied`, or `stale_simulation` when another bundle is served than the
/// one it replayed against. Each change goes through the registry (a published bundle each).
pub async fn apply(
    db: &Db,
    seed: &[u8; 32],
    policy_id: &str,
    now_ms: i64,
) -> Result<Simulation, SimError> {
    check_policy_id(policy_id)?;
    let conflict = |code, message: String| SimError::Conflict { code, message };
    let sim = latest(db, policy_id).await?.ok_or_else(|| {
        SimError::NotFound(format!(
            "no simulation of policy {policy_id}: simulate it first"
        ))
    })?;
    if sim.recommendation != Recommendation::Approve {
        return Err(conflict("not_approved", format!(
            "the latest simulation of {policy_id} ({}) recommends {}: only an approved change is applied",
            sim.simulation_id, sim.recommendation.as_str()
        )));
    }
    if sim.applied_at_ms.is_some() {
        return Err(conflict(
            "already_applied",
            format!("{} is applied already", sim.simulation_id),
        ));
    }
    let pk = keys::public_key_b64(seed);
    let served = registry::served_bundle(db, &pk)
        .await?
        .map(|(_, b)| b.version);
    if served != Some(sim.bundle_version) {
        return Err(conflict(
            "stale_simulation",
            format!(
                "{} replayed against bundle {}, but bundle {} is served now: simulate again",
                sim.simulation_id,
                sim.bundle_version,
                served.unwrap_or(0)
            ),
        ));
    }
    let why = Why {
        actor: Actor::AdminApi,
        reason: Reason::Manual,
        comment: Some(format!("policy {policy_id}: {}", sim.simulation_id)),
    };
    let d = &sim.diff;
    if let Some(e) = &d.ensemble {
        ensemble::apply(db, seed, e, policy_id, now_ms).await?;
    }
    let mut champion = match &d.model_version {
        Some(v) => v.clone(),
        None => {
            let mut conn = db.pool.acquire().await?;
            registry::aliases(&mut conn)
                .await?
                .into_iter()
                .find(|a| a.alias == CHAMPION)
                .map(|a| a.version)
                .unwrap_or_default()
        }
    };
    if let Some(t) = d.escalate_threshold {
        // The threshold lives in the artifact: the change is a new version of the champion.
        let mut m = registry::verified_model(db, &champion, &pk).await?;
        match &mut m {
            Model::Logistic(h) => h.thresholds.escalate = t,
            Model::Trees(tr) => tr.thresholds.escalate = t,
        }
        if registry::get_model(db, &m.version()).await?.is_none() {
            registry::insert_model(db, seed, &m, &card::from_artifact(&m), now_ms).await?;
        }
        champion = m.version();
    }
    if d.model_version.is_some() || d.escalate_threshold.is_some() {
        registry::move_alias(db, seed, CHAMPION, &champion, None, &why, now_ms).await?;
    }
    let version_of = |rows: &[registry::AliasRow], a: &str| {
        rows.iter()
            .find(|r| r.alias == a)
            .map(|r| r.version.clone())
    };
    let rows = {
        let mut conn = db.pool.acquire().await?;
        registry::aliases(&mut conn).await?
    };
    if let (Some(w), Some(v)) = (d.canary_weight, version_of(&rows, CANARY)) {
        registry::move_canary(db, seed, &v, w, None, &why, now_ms).await?;
    }
    if let (Some(w), Some(v)) = (d.challenger_weight, version_of(&rows, CHALLENGER)) {
        registry::move_alias(db, seed, CHALLENGER, &v, Some(w), &why, now_ms).await?;
    }
    sqlx::query("UPDATE policy_simulations SET applied_at_ms = $1 WHERE id = $2")
        .bind(now_ms)
        .bind(&sim.simulation_id)
        .execute(&db.pool)
        .await?;
    Ok(Simulation {
        applied_at_ms: Some(now_ms),
        ..sim
    })
}

/// `kakeya_policy_simulator_accuracy`: the newest computed accuracy (0..1) of a simulation
/// against the canary that followed it.
pub fn accuracy_gauge() -> &'static prometheus::Gauge {
    static G: std::sync::OnceLock<prometheus::Gauge> = std::sync::OnceLock::new();
    G.get_or_init(|| {
        prometheus::Gauge::new(
            "kakeya_policy_simulator_accuracy",
            "Accuracy (1 − relative error of the escalation rate) of the newest simulation compared with the canary that followed it",
        )
        .expect("a valid metric name")
    })
}

/// After a canary of `canary_version` ran (`measured_rate` over `n` decisions of its arm),
/// stores the accuracy of the newest simulation that predicted that model's escalation rate.
pub async fn record_accuracy(
    db: &Db,
    deployment_id: &str,
    canary_version: &str,
    measured_rate: f64,
    n: u64,
) -> Result<Option<Accuracy>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, result, applied_at_ms, accuracy FROM policy_simulations \
         ORDER BY created_at_ms DESC, id DESC LIMIT 200",
    )
    .fetch_all(&db.pool)
    .await?;
    for r in &rows {
        let s = row_to_sim(r)?;
        let (Some(v), Some(pred)) = (&s.diff.model_version, s.candidate_model_escalation_rate)
        else {
            continue;
        };
        if v != canary_version || n == 0 {
            continue;
        }
        let err = (pred - measured_rate).abs();
        let accuracy = if measured_rate > 0.0 {
            (1.0 - err / measured_rate).max(0.0)
        } else if err == 0.0 {
            1.0
        } else {
            0.0
        };
        let a = Accuracy {
            deployment_id: deployment_id.to_string(),
            predicted_escalation_rate: pred,
            measured_escalation_rate: measured_rate,
            measured_decisions: n,
            abs_error_pp: err * 100.0,
            accuracy,
        };
        sqlx::query("UPDATE policy_simulations SET accuracy = $1 WHERE id = $2")
            .bind(serde_json::to_string(&a).unwrap_or_default())
            .bind(&s.simulation_id)
            .execute(&db.pool)
            .await?;
        accuracy_gauge().set(accuracy);
        return Ok(Some(a));
    }
    Ok(None)
}

/// Registers the simulator's gauge (called by [`crate::metrics::Metrics::new`]).
pub fn register_metrics(registry: &prometheus::Registry) -> prometheus::Result<()> {
    registry.register(Box::new(accuracy_gauge().clone()))
}
