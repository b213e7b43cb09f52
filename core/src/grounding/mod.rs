//! RAG grounding: is the response supported by the context and citations it was given?
//!
//! A pure, bounded function of the [`Evidence`] (so it runs inside the filter), in three steps:
//!
//! 1. [`normalize`]: NFKC, case folding, punctuation, light stemming → hashed tokens with a
//!    kind (word, name, number, date) and a sentence;
//! 2. [`support`]: the context and citations, weighted by source quality ([`sources`]: a
//!    per-tenant allowlist of `citations[].source`), indexed as n-gram sets; the response
//!    measured against them sentence by sentence ([`Measures`]);
//! 3. [`vote`]: accept / reject / abstain with a confidence ([`Vote`]); no context → abstain.
//!
//! What it is not: an entailment model. It measures lexical support, so a paraphrase with new
//! words loses support and a negation ("did not") of a copied sentence keeps it; numbers,
//! dates and names the sources lack are what it catches best. The caps (tokens and bytes per
//! field in [`support`], [`support::MAX_CITATIONS`], [`normalize::MAX_TOKEN_BYTES`],
//! [`normalize::MAX_COMBINING_RUN`]) bound the work whatever the input; docs/ARCHITECTURE.md (*RAG grounding*) has the measured
//! cost and quality.

#![deny(clippy::indexing_slicing)]

pub mod normalize;
pub mod sources;
pub mod support;
pub mod vote;

#[cfg(test)]
mod tests;

use crate::evidence::Evidence;
use crate::vote::Vote;
use serde::{Deserialize, Serialize};
pub use sources::{SourcePolicy, Sources};
pub use support::{Measures, Unsupported};
pub use vote::STRATEGY;

/// The rule's parameters (defaults untrained: chosen by hand, see docs/ARCHITECTURE.md).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GroundingConfig {
    /// Accept at or above this support.
    pub accept_at: f64,
    /// Reject at or below this support.
    pub reject_at: f64,
    /// How much a content token found only in the question counts as supported (the user said
    /// it, the sources did not).
    pub question_weight: f64,
    /// Factor on a sentence's support per number, date or name the sources lack.
    pub critical_penalty: f64,
}

impl Default for GroundingConfig {
    fn default() -> Self {
        GroundingConfig {
            accept_at: 0.5,
            reject_at: 0.25,
            question_weight: 0.5,
            critical_penalty: 0.25,
        }
    }
}

fn unit(x: f64, fallback: f64) -> f64 {
    if x.is_finite() {
        x.clamp(0.0, 1.0)
    } else {
        fallback
    }
}

impl GroundingConfig {
    /// (accept_at, reject_at), each in [0, 1] and reject_at ≤ accept_at whatever was
    /// configured (a non-finite value takes the default).
    pub fn thresholds(&self) -> (f64, f64) {
        let d = GroundingConfig::default();
        let accept = unit(self.accept_at, d.accept_at);
        (accept, unit(self.reject_at, d.reject_at).min(accept))
    }

    pub fn question_weight(&self) -> f64 {
        unit(
            self.question_weight,
            GroundingConfig::default().question_weight,
        )
    }

    pub fn critical_penalty(&self) -> f64 {
        unit(
            self.critical_penalty,
            GroundingConfig::default().critical_penalty,
        )
    }
}

/// The measures and the vote of one answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Grounding {
    pub measures: Measures,
    pub vote: Vote,
}

/// Grounds `ev`'s response in its context and citations.
pub fn ground(ev: &Evidence, cfg: &GroundingConfig, sources: &Sources) -> Grounding {
    let measures = support::measure(ev, cfg, sources);
    let vote = vote::decide(&measures, cfg);
    Grounding { measures, vote }
}
