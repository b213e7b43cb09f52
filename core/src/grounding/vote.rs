//! The `rag_grounding` vote from the [`Measures`]: accept a well-supported answer, reject a
//! poorly supported one, abstain when there is nothing to judge or the evidence is in between.
//!
//! Why abstain so readily: this is an untrained lexical rule. It must never accept without
//! context (the reference's defect, platform spec §4.3) or vouch for text it did not read
//! (a response past [`MAX_RESPONSE_TOKENS`](super::support::MAX_RESPONSE_TOKENS)), nor reject
//! on the strength of a context it only partly read. The N-of-M aggregation weighs the rest.

use super::support::Measures;
use super::GroundingConfig;
use crate::vote::{Vote, VoteOutcome};

/// The strategy name in votes, metrics and policies.
pub const STRATEGY: &str = "rag_grounding";

/// A reject for low support alone needs at least this many context tokens per response
/// token.
pub const MIN_CONTEXT_RATIO: f64 = 2.0;

/// The vote for `m`. Confidence grows linearly from 0.5 at the threshold to 1 at support 1
/// (accept) or 0 (reject).
pub fn decide(m: &Measures, cfg: &GroundingConfig) -> Vote {
    if m.context_tokens == 0 {
        return Vote::abstain(STRATEGY, "no_context");
    }
    if m.content_tokens == 0 {
        return Vote::abstain(STRATEGY, "no_content");
    }
    let (accept_at, reject_at) = cfg.thresholds();
    let s = m.support;
    if s >= accept_at {
        if m.response_truncated {
            return Vote::abstain(STRATEGY, "response_truncated");
        }
        let conf = 0.5 + 0.5 * (s - accept_at) / (1.0 - accept_at).max(f64::EPSILON);
        return Vote::new(STRATEGY, VoteOutcome::Accept, conf, "supported");
    }
    if s <= reject_at {
        if m.context_truncated {
            return Vote::abstain(STRATEGY, "context_truncated");
        }
        let w = m.weakest_unsupported;
        let reason = if w.numbers > 0 {
            "unsupported_number"
        } else if w.dates > 0 {
            "unsupported_date"
        } else if w.names > 0 {
            "unsupported_name"
        } else {
            // Different words but no concrete fact the sources lack: that only means "made
            // up" when the sources could have said it, and a context barely longer than the
            // answer (a knowledge triple under a chatty reply) cannot.
            if (m.context_tokens as f64) < MIN_CONTEXT_RATIO * m.response_tokens as f64 {
                return Vote::abstain(STRATEGY, "thin_context");
            }
            "low_support"
        };
        let conf = 0.5 + 0.5 * (reject_at - s) / reject_at.max(f64::EPSILON);
        return Vote::new(STRATEGY, VoteOutcome::Reject, conf, reason);
    }
    Vote::abstain(STRATEGY, "uncertain")
}
