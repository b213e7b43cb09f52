//! Stage 6: each strategy the tenant's policy enables votes accept / reject / abstain
//! ([`Vote`]) and, when it has one, reports its hallucination probability for the stack.
//!
//! Missing input, a timeout or an error is an abstention, never an accept.

use crate::bundle::Risk;
use crate::ensemble_policy::StrategyConfig;
use crate::evidence::Evidence;
use crate::grounding::{self, GroundingConfig, Sources};
use crate::microvote::MicroVoteResult;
use crate::verify::VerifyResult;
use crate::vote::{Vote, VoteOutcome};

pub const PCS_RECOMPUTE: &str = "pcs_recompute";
pub const HRS: &str = "hrs";
pub const RAG_GROUNDING: &str = grounding::STRATEGY;
pub const MICRO_VOTE: &str = "micro_vote";

/// `micro_vote`'s default cut-offs: accept below 0.35, reject at or above 0.65, abstain in
/// between (an auxiliary model is not trusted near its boundary).
pub const MICRO_VOTE_ACCEPT_BELOW: f64 = 0.35;
pub const MICRO_VOTE_REJECT_ABOVE: f64 = 0.65;

/// One strategy's vote and its hallucination probability (`None` when it abstained).
#[derive(Debug, Clone, PartialEq)]
pub struct Cast {
    pub vote: Vote,
    pub p: Option<f64>,
}

impl Cast {
    fn abstain(strategy: &'static str, reason: &'static str) -> Cast {
        Cast {
            vote: Vote::abstain(strategy, reason),
            p: None,
        }
    }
}

/// `pcs_recompute`: the verification result. Verified → accept (1); failed → reject (1);
/// accepted but escalated (regime or budget claimed wrongly) → reject (0.5).
pub fn pcs_recompute(result: &VerifyResult) -> Cast {
    let (outcome, confidence, reason, p) = match (result.accepted, result.escalated) {
        (true, false) => (VoteOutcome::Accept, 1.0, "verified", 0.0),
        (true, true) => (VoteOutcome::Reject, 0.5, "claim_inconsistent", 0.5),
        (false, _) => (VoteOutcome::Reject, 1.0, "verification_failed", 1.0),
    };
    Cast {
        vote: Vote::new(PCS_RECOMPUTE, outcome, confidence, reason),
        p: Some(p),
    }
}

/// A probability against cut-offs: accept below `accept_below`, reject at or above
/// `reject_above`, abstain in between. Confidence grows linearly from 0.5 at the cut-off to 1
/// at probability 0 (accept) or 1 (reject).
fn against_cutoffs(strategy: &'static str, p: f64, accept_below: f64, reject_above: f64) -> Cast {
    let accept_below = accept_below.clamp(0.0, 1.0);
    let reject_above = reject_above.clamp(accept_below, 1.0);
    if !p.is_finite() {
        return Cast::abstain(strategy, "invalid_probability");
    }
    let p = p.clamp(0.0, 1.0);
    let vote = if p >= reject_above {
        let conf = 0.5 + 0.5 * (p - reject_above) / (1.0 - reject_above).max(f64::EPSILON);
        Vote::new(strategy, VoteOutcome::Reject, conf, "high_risk")
    } else if p < accept_below {
        let conf = 0.5 + 0.5 * (accept_below - p) / accept_below.max(f64::EPSILON);
        Vote::new(strategy, VoteOutcome::Accept, conf, "low_risk")
    } else {
        Vote::abstain(strategy, "uncertain")
    };
    Cast { vote, p: Some(p) }
}

/// `hrs`: the calibrated risk of the bundle's model. Default cut-offs: the model's own
/// escalation threshold on both sides (accept below it, reject at or above it).
pub fn hrs(risk: Option<&Risk>, escalate_at: f64, cfg: &StrategyConfig) -> Cast {
    let Some(risk) = risk else {
        return Cast::abstain(HRS, "not_scored");
    };
    against_cutoffs(
        HRS,
        risk.risk,
        cfg.accept_below.unwrap_or(escalate_at),
        cfg.reject_above.unwrap_or(escalate_at),
    )
}

/// `rag_grounding` ([`crate::grounding`]): support of the response by its context and
/// citations, sources weighted by the tenant's allowlist. No evidence or no context → abstain.
/// Its probability for the stack is `1 − support`.
pub fn rag_grounding(evidence: Option<&Evidence>, sources: &Sources) -> Cast {
    let Some(ev) = evidence else {
        return Cast::abstain(RAG_GROUNDING, "no_evidence");
    };
    let g = grounding::ground(ev, &GroundingConfig::default(), sources);
    let p = (!g.vote.is_abstention()).then(|| (1.0 - g.measures.support).clamp(0.0, 1.0));
    Cast { vote: g.vote, p }
}

/// `micro_vote` skipped because the tenant's budget degrades it: an abstention, no call.
pub fn budget_degraded() -> Cast {
    Cast::abstain(MICRO_VOTE, super::budget::DEGRADED_REASON)
}

/// `micro_vote`: the auxiliary model's probability against its cut-offs (defaults
/// [`MICRO_VOTE_ACCEPT_BELOW`], [`MICRO_VOTE_REJECT_ABOVE`]). No evidence (no call made),
/// timeout or an unusable answer → abstain with the reason.
pub fn micro_vote(result: Option<&MicroVoteResult>, cfg: &StrategyConfig) -> Cast {
    match result {
        None => Cast::abstain(MICRO_VOTE, "no_evidence"),
        Some(MicroVoteResult::Timeout) => Cast::abstain(MICRO_VOTE, "timeout"),
        Some(MicroVoteResult::Unavailable(code)) => Cast::abstain(MICRO_VOTE, code),
        Some(MicroVoteResult::Answer { p_hallucinated, .. }) => against_cutoffs(
            MICRO_VOTE,
            *p_hallucinated,
            cfg.accept_below.unwrap_or(MICRO_VOTE_ACCEPT_BELOW),
            cfg.reject_above.unwrap_or(MICRO_VOTE_REJECT_ABOVE),
        ),
    }
}
