//! Stage 7: weighted N-of-M over the non-abstaining votes, exactly as
//! [`crate::ensemble_policy`] documents it, and the stacked probability served as
//! `risk.score`.

use super::votes::Cast;
use crate::ensemble_policy::{EnsemblePolicy, Stack};
use crate::model::sigmoid;
use crate::vote::VoteOutcome;

/// What the policy decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    /// Undecided under `fail_open`: 202 for review.
    Escalate,
    /// 422 `hallucination_rejected`.
    Reject,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Accept => "accept",
            Verdict::Escalate => "escalate",
            Verdict::Reject => "reject",
        }
    }
}

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

/// Weighted N-of-M: reject when `r ≥ reject_confidence`; else accept when `agreed ≥ n` and
/// `a ≥ min_confidence`; else escalate (`fail_open`) or reject. Votes of strategies the policy
/// does not enable are ignored. An accept needs at least one accept vote even when `n = 0`:
/// abstentions alone never accept.
pub fn aggregate(policy: &EnsemblePolicy, casts: &[Cast]) -> Aggregate {
    let (mut total, mut accept, mut reject, mut agreed) = (0.0, 0.0, 0.0, 0u32);
    for c in casts {
        let Some(cfg) = policy.strategies.get(c.vote.strategy.as_ref()) else {
            continue;
        };
        if c.vote.is_abstention() {
            continue;
        }
        let w = cfg.weight;
        total += w;
        match c.vote.outcome {
            VoteOutcome::Accept => {
                agreed += 1;
                accept += w * c.vote.confidence;
            }
            VoteOutcome::Reject => reject += w * c.vote.confidence,
            VoteOutcome::Abstain => {}
        }
    }
    let (a, r) = if total > 0.0 {
        (accept / total, reject / total)
    } else {
        (0.0, 0.0)
    };
    let id = &policy.policy_id;
    let (verdict, reason) = if total > 0.0 && r >= policy.reject_confidence {
        (
            Verdict::Reject,
            format!(
                "ensemble {id} rejected: weighted reject confidence {r:.3} >= {:.3}",
                policy.reject_confidence
            ),
        )
    } else if agreed >= policy.n.max(1) && a >= policy.min_confidence {
        (
            Verdict::Accept,
            format!(
                "ensemble {id} accepted: {agreed} of {} accept, confidence {a:.3}",
                policy.n
            ),
        )
    } else {
        let why = format!(
            "{agreed} accept of {} needed, weighted accept confidence {a:.3} (min {:.3}), reject {r:.3}",
            policy.n, policy.min_confidence
        );
        if policy.fail_open {
            (
                Verdict::Escalate,
                format!("ensemble {id} undecided: {why}: escalated for review"),
            )
        } else {
            (
                Verdict::Reject,
                format!("ensemble {id} undecided: {why}: rejected (fail_open is off)"),
            )
        }
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
