//! Stage 7: weighted N-of-M over the non-abstaining votes, exactly as
//! [`crate::ensemble_policy`] documents it, and the stacked probability served as
//! `risk.score`.

use super::votes::Cast;
use crate::ensemble_policy::{self, Decision, EnsemblePolicy, Stack, VoteKind};
use crate::model::sigmoid;
use crate::vote::VoteOutcome;

/// What the policy decided: accept, escalate (undecided under `fail_open`: 202 for review)
/// or reject (422 `hallucination_rejected`).
pub type Verdict = Decision;

/// The aggregation of one request's votes.
#[derive(Debug, Clone, PartialEq)]
pub struct Aggregate {
    pub verdict: Verdict,
    /// Accept votes among the non-abstaining ones.
    pub agreed: u32,
    /// Weighted accept and reject confidences.
    pub accept: f64,
    pub reject: f64,
    /// Human-readable why, for the result's `reason`.
    pub reason: String,
}

/// Weighted N-of-M over the non-abstaining votes by [`ensemble_policy::tally`] and
/// [`ensemble_policy::Tally::decision`] (the rule the control plane's replay uses too), with
/// the reason spelled out.
pub fn aggregate(policy: &EnsemblePolicy, casts: &[Cast]) -> Aggregate {
    let votes = casts.iter().filter_map(|c| {
        let kind = match c.vote.outcome {
            VoteOutcome::Accept => VoteKind::Accept,
            VoteOutcome::Reject => VoteKind::Reject,
            VoteOutcome::Abstain => return None,
        };
        Some((c.vote.strategy.as_ref(), kind, c.vote.confidence))
    });
    let t = ensemble_policy::tally(policy, votes);
    let verdict = t.decision(policy);
    let (id, a, r, agreed) = (&policy.policy_id, t.accept, t.reject, t.agreed);
    let why = || {
        format!(
            "{agreed} accept of {} needed, weighted accept confidence {a:.3} (min {:.3}), reject {r:.3}",
            policy.n, policy.min_confidence
        )
    };
    let reason = match verdict {
        Decision::Reject if t.voted && r >= policy.reject_confidence => format!(
            "ensemble {id} rejected: weighted reject confidence {r:.3} >= {:.3}",
            policy.reject_confidence
        ),
        Decision::Accept => format!(
            "ensemble {id} accepted: {agreed} of {} accept, confidence {a:.3}",
            policy.n
        ),
        Decision::Escalate => format!("ensemble {id} undecided: {}: escalated for review", why()),
        Decision::Reject => format!(
            "ensemble {id} undecided: {}: rejected (fail_open is off)",
            why()
        ),
    };
    Aggregate {
        verdict,
        agreed,
        accept: a,
        reject: r,
        reason,
    }
}

const P_MIN: f64 = 1e-6;

fn logit(p: f64) -> f64 {
    let p = p.clamp(P_MIN, 1.0 - P_MIN);
    (p / (1.0 - p)).ln()
}

/// `σ(bias + Σ coef[s]·logit(pₛ) + Σ abstain[s]·[s abstained])`; a strategy with a
/// coefficient that did not vote (not enabled, or no probability) counts as abstained.
/// The default stack (HRS coefficient 1, nothing else) serves the HRS probability bit for bit.
pub fn stack(stack: &Stack, casts: &[Cast]) -> f64 {
    let p_of = |name: &str| {
        casts
            .iter()
            .find(|c| c.vote.strategy == name)
            .and_then(|c| c.p)
    };
    if *stack == Stack::default() {
        if let Some(p) = p_of(super::votes::HRS) {
            return p;
        }
    }
    let mut z = stack.bias;
    for (name, coef) in &stack.coef {
        if let Some(p) = p_of(name) {
            z += coef * logit(p);
        }
    }
    for (name, w) in &stack.abstain {
        if p_of(name).is_none() {
            z += w;
        }
    }
    let p = sigmoid(z);
    if p.is_finite() {
        p
    } else {
        0.5
    }
}
