//! Stage 8: the decision. Folds the score or the ensemble's verdict into the
//! [`VerifyResult`] and builds the forward with the `x-kakeya-*` headers the control plane
//! stores (it answers 200, 202 or 422 from the result, [`VerifyResult::status`]).

use super::aggregate::{self, Aggregate, Verdict};
use super::features::{Scoring, NO_BUNDLE_REASON};
use super::reply::{Decision, Forward};
use super::votes::Cast;
use crate::budget::BudgetAction;
use crate::bundle::{Band, Risk};
use crate::ensemble_policy::EnsemblePolicy;
use crate::feature_wire;
use crate::verify::{EnsembleSummary, Outcome, VerifyResult, REJECTED_CODE};

pub const H_TENANT: &str = "x-kakeya-tenant";
pub const H_RESULT: &str = "x-kakeya-result";
pub const H_CACHEABLE: &str = "x-kakeya-cacheable";
pub const H_VERIFY_NS: &str = "x-kakeya-verify-ns";
/// Calibrated hallucination risk, 6 decimals (the ensemble's stack under a policy).
pub const H_RISK: &str = "x-kakeya-risk";
pub const H_RISK_BAND: &str = "x-kakeya-risk-band";
pub const H_MODEL_VERSION: &str = "x-kakeya-model-version";
/// `champion`, `challenger` or `canary` ([`crate::bundle::Bundle::arm`]).
pub const H_ARM: &str = "x-kakeya-arm";
pub const H_BUNDLE_VERSION: &str = "x-kakeya-bundle-version";
/// In-guest time of features + scoring (ns), set only when a request was scored.
pub const H_SCORE_NS: &str = "x-kakeya-score-ns";
/// The feature vector the request was scored with ([`crate::feature_wire`]), set only
/// when a request was scored, so the decision log keeps the features as decided.
pub const H_FEATURES: &str = crate::feature_wire::HEADER;
/// The ensemble's verdict and votes ([`EnsembleSummary::to_json`], at most
/// [`MAX_VOTES_HEADER`] bytes), set only when the tenant has a policy.
pub const H_VOTES: &str = "x-kakeya-votes";
/// The filter's own time over this request's body stage(s), ns (its cost tracer; the
/// filter sets it, not the pipeline, which cannot see the time spent around it).
pub const H_FILTER_NS: &str = "x-kakeya-filter-ns";
/// Micro-vote calls the filter dispatched for this request (0 on a cache hit or degraded).
pub const H_MODEL_CALLS: &str = "x-kakeya-model-calls";
/// The micro-vote callout's wait, ns from dispatch to its answer or timeout (set by the
/// filter's cost tracer only when it called out), for the advisor's deadline rule.
pub const H_MICROVOTE_NS: &str = "x-kakeya-microvote-ns";
/// In-guest time of the `rag_grounding` vote, ns (set only when the tenant's policy enables
/// it and the cost tracer is on): the part of [`H_FILTER_NS`] the advisor's `rag_off` saves.
pub const H_RAG_NS: &str = "x-kakeya-rag-ns";
/// Bound of [`H_VOTES`]: four votes of short codes fit with room; a longer policy id is cut.
pub const MAX_VOTES_HEADER: usize = 1024;
/// Longest policy id echoed in results and headers.
const MAX_POLICY_ID: usize = 64;

/// Marks a result escalated because it should have been scored but no valid bundle exists
/// (failure mode `open`).
pub fn escalate_without_bundle(result: &mut VerifyResult) {
    if !result.escalated {
        result.escalated = true;
        if result.reason.is_none() {
            result.reason = Some(NO_BUNDLE_REASON.to_string());
        }
    }
}

/// The ensemble's part of a decision: the policy, the votes and the model's cut-offs for the
/// band of the stacked score.
pub struct Ensemble<'a> {
    pub policy: &'a EnsemblePolicy,
    pub casts: &'a [Cast],
    /// The scoring model's escalation threshold and the bundle's medium-risk cut-off.
    pub escalate_at: f64,
    pub medium_risk: f64,
}

/// Applies the policy's verdict to `result` and returns it with the stacked probability.
/// Verification that escalated or failed is never turned into an accept.
fn apply_ensemble(result: &mut VerifyResult, e: &Ensemble<'_>) -> (Aggregate, f64) {
    let mut agg = aggregate::aggregate(e.policy, e.casts);
    if agg.verdict == Verdict::Accept && (result.escalated || !result.accepted) {
        agg.verdict = Verdict::Escalate;
        agg.reason = format!(
            "{}; verification did not pass: escalated for review",
            agg.reason
        );
    }
    match agg.verdict {
        Verdict::Accept => result.escalated = false,
        Verdict::Escalate => result.escalated = true,
        Verdict::Reject => {
            result.accepted = false;
            result.escalated = false;
            result.code = Some(REJECTED_CODE.to_string());
        }
    }
    result.reason = Some(match result.reason.take() {
        Some(verify) if agg.verdict != Verdict::Accept => format!("{}; {verify}", agg.reason),
        _ => agg.reason.clone(),
    });
    result.ensemble = Some(EnsembleSummary {
        policy_id: e.policy.policy_id.chars().take(MAX_POLICY_ID).collect(),
        verdict: agg.verdict.as_str().to_string(),
        votes: e.casts.iter().map(|c| c.vote.clone()).collect(),
    });
    (agg, aggregate::stack(&e.policy.stack, e.casts))
}

fn band(p: f64, escalate_at: f64, medium: f64) -> Band {
    if p >= escalate_at {
        Band::High
    } else if p >= medium {
        Band::Medium
    } else {
        Band::Low
    }
}

/// Everything the decision needs.
pub struct Parts<'a> {
    pub tenant: &'a str,
    pub outcome: Outcome,
    pub scoring: Scoring,
    pub bundle_version: u64,
    pub verify_ns: u64,
    /// The tenant's budget action (`alert` and `degrade` reach here; the others reply).
    pub budget: BudgetAction,
    pub ensemble: Option<Ensemble<'a>>,
    /// Time of the `rag_grounding` vote ([`H_RAG_NS`]), when it was cast and timed.
    pub rag_ns: Option<u64>,
}

pub fn decide(parts: Parts<'_>) -> Decision {
    let Parts {
        tenant,
        mut outcome,
        scoring,
        bundle_version,
        verify_ns,
        budget,
        ensemble,
        rag_ns,
    } = parts;
    let mut risk_headers: Vec<(&'static str, String)> = Vec::new();
    let (mut scored, mut high_risk, mut no_bundle) = (false, false, false);
    let mut arm = None;
    let stacked = ensemble
        .as_ref()
        .map(|e| (apply_ensemble(&mut outcome.result, e), e));
    match scoring {
        Scoring::Scored { risk, score_ns } => {
            let served = match &stacked {
                None => {
                    outcome.result.apply_risk(&risk, bundle_version);
                    *risk
                }
                Some(((_, p), e)) => {
                    let served = Risk {
                        risk: *p,
                        band: band(*p, e.escalate_at, e.medium_risk),
                        escalate: *p >= e.escalate_at,
                        ..*risk
                    };
                    outcome.result.record_risk(&served, bundle_version);
                    served
                }
            };
            scored = true;
            arm = Some(served.arm);
            high_risk = served.escalate;
            let features = feature_wire::encode(&served.features);
            risk_headers.push((H_RISK, format!("{:.6}", served.risk)));
            risk_headers.push((H_RISK_BAND, served.band.as_str().to_string()));
            risk_headers.push((H_MODEL_VERSION, served.model_version));
            risk_headers.push((H_ARM, served.arm.as_str().to_string()));
            risk_headers.push((H_BUNDLE_VERSION, bundle_version.to_string()));
            risk_headers.push((H_SCORE_NS, score_ns.to_string()));
            risk_headers.push((H_FEATURES, features));
        }
        Scoring::NoBundle => {
            escalate_without_bundle(&mut outcome.result);
            no_bundle = true;
        }
        Scoring::NotScored => {}
    }
    if let Some(e) = &outcome.result.ensemble {
        let mut votes = e.to_json();
        if votes.len() > MAX_VOTES_HEADER {
            // Only reachable with absurd reasons; the result header still has them all.
            votes = EnsembleSummary {
                votes: Vec::new(),
                ..e.clone()
            }
            .to_json();
        }
        risk_headers.push((H_VOTES, votes));
    }
    let mut headers: Vec<(&'static str, String)> = Vec::with_capacity(4 + risk_headers.len());
    headers.push((H_TENANT, tenant.to_string()));
    headers.push((H_RESULT, outcome.result.to_json()));
    headers.push((
        H_CACHEABLE,
        if outcome.cacheable { "true" } else { "false" }.to_string(),
    ));
    headers.push((H_VERIFY_NS, verify_ns.to_string()));
    headers.append(&mut risk_headers);
    if let Some(ns) = rag_ns {
        headers.push((H_RAG_NS, ns.to_string()));
    }
    if let Some(v) = super::budget::header_value(budget) {
        headers.push((super::budget::H_BUDGET, v.to_string()));
    }
    Decision::Forward(Forward {
        headers,
        accepted: outcome.result.accepted && !outcome.result.escalated,
        escalated: outcome.result.escalated,
        scored,
        arm,
        high_risk,
        no_bundle,
        budget,
    })
}
