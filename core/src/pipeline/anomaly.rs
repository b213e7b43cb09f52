//! Stage 4b: the anomaly detector ([`crate::vae`]) inline, after verification.
//!
//! For a tenant the bundle's `anomaly` section scores ([`crate::anomaly_policy`]): the
//! [`crate::anomaly_features`] vector of the verified PCS and its evidence (without evidence
//! the text block is zero with `evidence_present = 0`, as the feature module defines), the
//! VAE's score, uncertainty and reconstruction error, and what the tenant's mode does with it:
//!
//! * `shadow`: recorded only ([`H_ANOMALY`], [`H_ANOMALY_FEATURES`]), the answer unchanged;
//! * `guardrail`: a score at or above the threshold is a reject vote of strategy
//!   [`STRATEGY`] in the tenant's ensemble (weight 1 unless the policy configures it); a score
//!   below it abstains (normal-looking text is no evidence of a correct answer). Without an
//!   ensemble policy a flagged answer is escalated for review (202);
//! * `blocking`: a score at or above the blocking threshold is refused, [`BLOCKED_STATUS`]
//!   with code [`BLOCKED_CODE`], the reason and the score in the body; a flagged score below
//!   it is recorded as in shadow mode.
//!
//! A non-finite score (impossible from the scorer, guarded anyway) counts as 1: the most
//! anomalous, never a silent pass.

use super::reply::{Decision, LocalReply};
use super::votes::Cast;
use crate::anomaly_features::{self, N_FEATURES, SCHEMA_VERSION};
use crate::anomaly_policy::Mode;
use crate::bundle::Scorer;
use crate::evidence::Evidence;
use crate::features::PcsSignals;
use crate::pcs::Pcs;
use crate::verify::{Outcome, VerifyResult};
use crate::vote::{Vote, VoteOutcome};

/// `<score>;<uncertainty>;<action>;<model version>` (6 decimals), set on every scored
/// forward.
pub const H_ANOMALY: &str = "x-kakeya-anomaly";
/// `<anomaly schema>;<JSON array of the values>` (shortest round-trip decimals, so the
/// decision log keeps the vector exactly), set with [`H_ANOMALY`].
pub const H_ANOMALY_FEATURES: &str = "x-kakeya-anomaly-features";
/// The ensemble strategy of guardrail mode.
pub const STRATEGY: &str = "anomaly";
/// 403: the request is authentic (not 401) and well-formed (not 400), and it is not a
/// hallucination verdict (422 `hallucination_rejected`): the tenant's policy forbids serving
/// an answer this far outside normal traffic.
pub const BLOCKED_STATUS: u32 = 403;
pub const BLOCKED_CODE: &str = "anomaly_blocked";

/// What the score did (the decision log's `anomaly_action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    None,
    Shadow,
    Guardrail,
    Blocked,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::None => "none",
            Action::Shadow => "shadow",
            Action::Guardrail => "guardrail",
            Action::Blocked => "blocked",
        }
    }

    pub fn parse(s: &str) -> Option<Action> {
        [
            Action::None,
            Action::Shadow,
            Action::Guardrail,
            Action::Blocked,
        ]
        .into_iter()
        .find(|a| a.as_str() == s)
    }
}

/// One request's anomaly assessment.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    pub score: f64,
    pub uncertainty: f64,
    pub reconstruction_error: f64,
    pub mode: Mode,
    pub threshold: f64,
    pub action: Action,
    pub features: [f64; N_FEATURES],
    pub model_version: String,
}

/// Features and score alone (what the latency bench measures): total, never panics.
pub fn score_only(
    model: &crate::vae::VaeModel,
    pcs: &Pcs,
    outcome: &Outcome,
    evidence: Option<&Evidence>,
) -> ([f64; N_FEATURES], crate::vae::VaeScore) {
    let signals = PcsSignals::from_verified(pcs, outcome.result.recomputed_d_hat);
    let x = anomaly_features::features(&signals, evidence);
    (x, model.score(&x))
}

/// Scores `tenant`'s request when its bundle says so; `Err` is the blocking reply.
pub fn assess(
    tenant: &str,
    pcs: &Pcs,
    outcome: &Outcome,
    evidence: Option<&Evidence>,
    bundle: Option<&Scorer>,
) -> Result<Option<Scored>, LocalReply> {
    let Some(b) = bundle else { return Ok(None) };
    let Some((model, t)) = b.anomaly.for_tenant(tenant) else {
        return Ok(None);
    };
    let (features, v) = score_only(model, pcs, outcome, evidence);
    let score = if v.score.is_finite() {
        v.score.clamp(0.0, 1.0)
    } else {
        1.0
    };
    let uncertainty = if v.uncertainty.is_finite() {
        v.uncertainty.max(0.0)
    } else {
        0.0
    };
    let flagged = score >= t.threshold;
    let action = match t.mode {
        Mode::Blocking if score >= t.blocks_at() => Action::Blocked,
        Mode::Guardrail if flagged => Action::Guardrail,
        Mode::Off => Action::None,
        _ if flagged => Action::Shadow,
        _ => Action::None,
    };
    let model_version = b.anomaly_version().to_string();
    if action == Action::Blocked {
        return Err(blocked_reply(score, t.blocks_at(), &model_version));
    }
    Ok(Some(Scored {
        score,
        uncertainty,
        reconstruction_error: v.reconstruction_error,
        mode: t.mode,
        threshold: t.threshold,
        action,
        features,
        model_version,
    }))
}

/// 403 `{"error", "code": "anomaly_blocked", "reason", "score"}`.
pub fn blocked_reply(score: f64, blocks_at: f64, model_version: &str) -> LocalReply {
    // Every interpolated value is a number or a `vae-<hex>` version: nothing to escape.
    let version: String = model_version
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(64)
        .collect();
    let reason = format!(
        "anomaly score {score:.6} at or above the blocking threshold {blocks_at:.6} (model {version})"
    );
    LocalReply {
        status: BLOCKED_STATUS,
        headers: Vec::new(),
        body: format!(
            "{{\"error\":\"the answer is far outside the tenant's normal traffic\",\"code\":\"{BLOCKED_CODE}\",\"reason\":\"{reason}\",\"score\":{score:.6}}}"
        ),
        code: BLOCKED_CODE,
    }
}

/// Guardrail mode's vote: reject when flagged (confidence 0.5 at the threshold, 1 at score
/// 1), else abstain. Not stacked (no probability): the score is a rarity, not a
/// hallucination probability.
pub fn vote(s: &Scored) -> Cast {
    let vote = if s.action == Action::Guardrail {
        let span = (1.0 - s.threshold).max(f64::EPSILON);
        let conf = (0.5 + 0.5 * (s.score - s.threshold) / span).clamp(0.5, 1.0);
        Vote::new(STRATEGY, VoteOutcome::Reject, conf, "anomalous")
    } else {
        Vote::abstain(STRATEGY, "not_anomalous")
    };
    Cast { vote, p: None }
}

/// Guardrail without an ensemble policy: a flagged answer is escalated for review.
pub fn escalate_flagged(result: &mut VerifyResult, s: &Scored) {
    if s.action == Action::Guardrail && !result.escalated {
        result.escalated = true;
        if result.reason.is_none() {
            result.reason = Some(format!(
                "anomaly score {:.4} at or above the threshold {:.4}: escalated for review",
                s.score, s.threshold
            ));
        }
    }
}

/// Adds [`H_ANOMALY`] and [`H_ANOMALY_FEATURES`] to a forward.
pub fn annotate(decision: &mut Decision, s: Option<&Scored>) {
    let (Decision::Forward(f), Some(s)) = (decision, s) else {
        return;
    };
    f.headers.push((
        H_ANOMALY,
        format!(
            "{:.6};{:.6};{};{}",
            s.score,
            s.uncertainty,
            s.action.as_str(),
            s.model_version
        ),
    ));
    if let Ok(json) = serde_json::to_string(&s.features[..]) {
        f.headers
            .push((H_ANOMALY_FEATURES, format!("{SCHEMA_VERSION};{json}")));
    }
}

/// Whether a forward carries a flagged anomaly score (the filter's counter).
pub fn flagged(f: &super::reply::Forward) -> bool {
    f.headers
        .iter()
        .find(|(k, _)| *k == H_ANOMALY)
        .and_then(|(_, v)| parse_header(v))
        .is_some_and(|(_, _, a, _)| a != Action::None)
}

/// The parsed [`H_ANOMALY`] value: score, uncertainty, action, model version.
pub fn parse_header(v: &str) -> Option<(f64, f64, Action, &str)> {
    let mut it = v.splitn(4, ';');
    let score: f64 = it.next()?.trim().parse().ok()?;
    let unc: f64 = it.next()?.trim().parse().ok()?;
    let action = Action::parse(it.next()?.trim())?;
    let version = it.next()?.trim();
    let unit = (0.0..=1.0).contains(&score) && unc.is_finite() && unc >= 0.0;
    unit.then_some((score, unc, action, version))
}

/// The parsed [`H_ANOMALY_FEATURES`] value: schema and values (finite, the schema's length).
pub fn parse_features_header(v: &str) -> Option<(&str, Vec<f64>)> {
    let (schema, json) = v.split_once(';')?;
    let values: Vec<f64> = serde_json::from_str(json).ok()?;
    (schema == SCHEMA_VERSION && values.len() == N_FEATURES && values.iter().all(|x| x.is_finite()))
        .then_some((schema, values))
}
