//! Stage 5: features and the HRS score from the bundle ([`Scorer::assess`]), or what the
//! failure mode says when a request should be scored and no valid bundle exists.

use super::reply::LocalReply;
use crate::bundle::{Risk, Scorer};
use crate::evidence::Evidence;
use crate::gate_config::FailureMode;
use crate::pcs::Pcs;
use crate::verify::Outcome;
use crate::Gate;

/// Reason of a request escalated because no bundle was available (failure mode `open`).
pub const NO_BUNDLE_REASON: &str = "no model bundle available: escalated for review";

/// What the scoring stage produced.
#[derive(Debug, Clone, PartialEq)]
pub enum Scoring {
    /// The bundle's model scored the request; `score_ns` is the in-guest time it took.
    Scored { risk: Box<Risk>, score_ns: u64 },
    /// Nothing to score (no bundle source, no evidence, or the policy scores none).
    NotScored,
    /// Should have been scored, no valid bundle, failure mode `open`: escalate for review.
    NoBundle,
}

/// Scores with `bundle` when the gate has a bundle source; 503 `no_bundle` (failure mode
/// `closed`) when a request with evidence finds no valid bundle. `elapsed_ns` is the time
/// since verification ended (read once, after scoring).
pub fn score(
    tenant: &str,
    pcs: &Pcs,
    outcome: &Outcome,
    evidence: Option<&Evidence>,
    gate: &Gate,
    bundle: Option<&Scorer>,
    elapsed_ns: &mut dyn FnMut() -> u64,
) -> Result<Scoring, LocalReply> {
    let Some(source) = &gate.bundle else {
        return Ok(Scoring::NotScored);
    };
    match bundle {
        Some(b) => Ok(match b.assess(tenant, pcs, outcome, evidence) {
            Some(risk) => Scoring::Scored {
                risk: Box::new(risk),
                score_ns: elapsed_ns(),
            },
            None => Scoring::NotScored,
        }),
        None if evidence.is_some() => match source.failure_mode {
            FailureMode::Open => Ok(Scoring::NoBundle),
            FailureMode::Closed => {
                let mut r = LocalReply::new(503, "no_bundle", "no model bundle available");
                r.headers.push(("retry-after".into(), "5".into()));
                Err(r)
            }
        },
        None => Ok(Scoring::NotScored),
    }
}
