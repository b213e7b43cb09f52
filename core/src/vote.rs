//! One strategy's vote on an answer: accept, reject or abstain, with a confidence and a reason.
//!
//! Why three values: the reference ensemble (platform spec §4.1) had only accept/reject and
//! dropped a strategy that failed, so "no evidence" and "timed out" silently became accepts.
//! Here every strategy (`pcs_recompute`, `hrs`, `rag_grounding`, `micro_vote`) answers with a
//! [`Vote`]; an error, a timeout or missing input is an [`VoteOutcome::Abstain`], never an
//! accept, and the N-of-M aggregation counts only the non-abstaining votes.

use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// What a strategy says about an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VoteOutcome {
    Accept,
    Reject,
    Abstain,
}

impl VoteOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            VoteOutcome::Accept => "accept",
            VoteOutcome::Reject => "reject",
            VoteOutcome::Abstain => "abstain",
        }
    }
}

/// A strategy's vote. `confidence` ∈ [0, 1] is how sure the strategy is of `outcome` (0 for an
/// abstention); `reason` is a short stable code (`supported`, `no_context`, `timeout`, …) that
/// the decision log and the metrics can group by.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Vote {
    pub strategy: Cow<'static, str>,
    pub outcome: VoteOutcome,
    pub confidence: f64,
    pub reason: Cow<'static, str>,
}

impl Vote {
    /// A vote for `outcome`; a non-finite confidence becomes 0 and the rest is clamped to
    /// [0, 1], so a vote is always well-formed whatever a strategy computed.
    pub fn new(
        strategy: impl Into<Cow<'static, str>>,
        outcome: VoteOutcome,
        confidence: f64,
        reason: impl Into<Cow<'static, str>>,
    ) -> Vote {
        let confidence = if confidence.is_finite() {
            confidence.clamp(0.0, 1.0)
        } else {
            0.0
        };
        Vote {
            strategy: strategy.into(),
            outcome,
            confidence: if outcome == VoteOutcome::Abstain {
                0.0
            } else {
                confidence
            },
            reason: reason.into(),
        }
    }

    /// An abstention (confidence 0): no input to judge, an error or a timeout.
    pub fn abstain(
        strategy: impl Into<Cow<'static, str>>,
        reason: impl Into<Cow<'static, str>>,
    ) -> Vote {
        Vote::new(strategy, VoteOutcome::Abstain, 0.0, reason)
    }

    pub fn is_abstention(&self) -> bool {
        self.outcome == VoteOutcome::Abstain
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confidence_is_clamped_and_abstentions_carry_none() {
        let v = Vote::new("s", VoteOutcome::Accept, 1.7, "supported");
        assert_eq!(v.confidence, 1.0);
        assert_eq!(
            Vote::new("s", VoteOutcome::Reject, f64::NAN, "x").confidence,
            0.0
        );
        assert_eq!(
            Vote::new("s", VoteOutcome::Abstain, 0.9, "x").confidence,
            0.0
        );
        let a = Vote::abstain("rag_grounding", "no_context");
        assert!(a.is_abstention());
        assert_eq!(a.outcome.as_str(), "abstain");
    }

    #[test]
    fn serde_shape() {
        let v = Vote::new(
            "rag_grounding",
            VoteOutcome::Reject,
            0.75,
            "unsupported_number",
        );
        let s = serde_json::to_string(&v).unwrap_or_default();
        assert_eq!(
            s,
            r#"{"strategy":"rag_grounding","outcome":"reject","confidence":0.75,"reason":"unsupported_number"}"#
        );
        let back: Vote = serde_json::from_str(&s).unwrap_or_else(|_| Vote::abstain("x", "y"));
        assert_eq!(back, v);
    }
}
