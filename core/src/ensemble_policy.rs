//! The ensemble policy a bundle carries per tenant (`bundle.ensemble`): which strategies vote,
//! their weights, the N of weighted N-of-M, the confidence thresholds, the failure policy, and
//! the stacking model whose output is the served, calibrated `risk.score`.
//!
//! Semantics (platform spec §4.1, "real implementation needs"), over the non-abstaining votes:
//! - `agreed` = number of accept votes; weighted accept confidence
//!   `a = Σ wᵢ·cᵢ·[accept] / Σ wᵢ`, weighted reject confidence `r = Σ wᵢ·cᵢ·[reject] / Σ wᵢ`;
//! - **reject** when `r ≥ reject_confidence`;
//! - else **accept** when `agreed ≥ n` and `a ≥ min_confidence`;
//! - else **escalate** (202) when `fail_open`, **reject** otherwise. `fail_open` never accepts.
//!
//! A bundle without `ensemble` (or a tenant without a policy and no `default`) decides as before
//! the ensemble existed: verification plus the HRS thresholds.
//!
//! Written by the control plane (stored policies, the adaptive tuner), read by the filter.

use crate::grounding::SourcePolicy;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The strategy names a policy may enable.
pub const STRATEGIES: [&str; 5] = [
    "pcs_recompute",
    "hrs",
    "rag_grounding",
    "micro_vote",
    "anomaly",
];

/// The ensemble section of a bundle.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnsembleSection {
    /// For tenants not listed in `tenants`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<EnsemblePolicy>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tenants: BTreeMap<String, EnsemblePolicy>,
}

impl EnsembleSection {
    pub fn is_empty(&self) -> bool {
        self.default.is_none() && self.tenants.is_empty()
    }

    /// The policy that decides `tenant`'s requests, if any.
    pub fn for_tenant(&self, tenant: &str) -> Option<&EnsemblePolicy> {
        self.tenants.get(tenant).or(self.default.as_ref())
    }

    pub fn validate(&self) -> Result<(), PolicyError> {
        self.default.iter().try_for_each(EnsemblePolicy::validate)?;
        self.tenants.values().try_for_each(EnsemblePolicy::validate)
    }
}

/// One tenant's ensemble policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnsemblePolicy {
    /// Stable identifier recorded with each decision (e.g. `default-2of3`, `tuned-<tenant>-<n>`).
    pub policy_id: String,
    /// Accept votes needed (N of M, M = the enabled strategies).
    pub n: u32,
    /// The enabled strategies by name ([`STRATEGIES`]) and their settings.
    pub strategies: BTreeMap<String, StrategyConfig>,
    /// Weighted accept confidence needed to accept, within [0, 1].
    pub min_confidence: f64,
    /// Weighted reject confidence at or above which the answer is rejected; above 1 = never.
    pub reject_confidence: f64,
    /// Undecided (not accepted, not rejected) → escalate (true) or reject (false).
    pub fail_open: bool,
    /// The calibrated ensemble probability served as `risk.score`.
    #[serde(default)]
    pub stack: Stack,
    /// The tenant's `citations[].source` allowlist for `rag_grounding`; absent = every source
    /// counts fully.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sources: Option<SourcePolicy>,
}

/// One enabled strategy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StrategyConfig {
    /// Weight ≥ 0 (finite) in the N-of-M confidences.
    pub weight: f64,
    /// The strategy's own accept/reject cut-offs on its hallucination probability, where it
    /// has one (`hrs`, `micro_vote`): accept below `accept_below`, reject at or above
    /// `reject_above`, abstain in between. Absent = the strategy's documented default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accept_below: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reject_above: Option<f64>,
    /// Hard deadline for a strategy that calls out (`micro_vote`), milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u32>,
}

/// Logistic stacking over the votes' hallucination probabilities:
/// `risk = σ(bias + Σ coef[s]·logit(pₛ) + Σ abstain[s]·[s abstained])`, with `pₛ` clamped to
/// [1e-6, 1 − 1e-6]. Fitted on labelled decisions by the control plane; the default (`hrs`
/// coefficient 1, nothing else) serves the HRS probability unchanged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stack {
    pub bias: f64,
    pub coef: BTreeMap<String, f64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub abstain: BTreeMap<String, f64>,
}

impl Default for Stack {
    fn default() -> Stack {
        Stack {
            bias: 0.0,
            coef: BTreeMap::from([("hrs".to_string(), 1.0)]),
            abstain: BTreeMap::new(),
        }
    }
}

/// Why a policy was refused (the control plane answers 422 with it; a filter refuses the
/// bundle and keeps its last good one).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PolicyError {
    #[error(
        "unknown strategy {0:?}: expected one of pcs_recompute, hrs, rag_grounding, micro_vote, anomaly"
    )]
    UnknownStrategy(String),
    #[error("policy {0:?} enables no strategy")]
    Empty(String),
    #[error("policy {policy:?}: n = {n} exceeds the {m} enabled strategies")]
    NTooLarge { policy: String, n: u32, m: usize },
    #[error("policy {0:?}: weights, confidences and stacking coefficients must be finite, weights ≥ 0, min_confidence within [0, 1], reject_confidence ≥ 0")]
    Number(String),
}

impl EnsemblePolicy {
    pub fn validate(&self) -> Result<(), PolicyError> {
        let id = || self.policy_id.clone();
        if self.strategies.is_empty() {
            return Err(PolicyError::Empty(id()));
        }
        let names = self
            .strategies
            .keys()
            .chain(self.stack.coef.keys())
            .chain(self.stack.abstain.keys());
        for name in names {
            if !STRATEGIES.contains(&name.as_str()) {
                return Err(PolicyError::UnknownStrategy(name.clone()));
            }
        }
        if self.n as usize > self.strategies.len() {
            return Err(PolicyError::NTooLarge {
                policy: id(),
                n: self.n,
                m: self.strategies.len(),
            });
        }
        let cut = |v: Option<f64>| v.is_none_or(|x| x.is_finite());
        let ok = self.strategies.values().all(|s| {
            s.weight.is_finite() && s.weight >= 0.0 && cut(s.accept_below) && cut(s.reject_above)
        }) && (0.0..=1.0).contains(&self.min_confidence)
            && self.reject_confidence.is_finite()
            && self.reject_confidence >= 0.0
            && self.stack.bias.is_finite()
            && self.stack.coef.values().all(|c| c.is_finite())
            && self.stack.abstain.values().all(|c| c.is_finite());
        if ok {
            Ok(())
        } else {
            Err(PolicyError::Number(id()))
        }
    }
}

/// One strategy's vote as the aggregation sees it: the direction and its confidence in [0, 1].
/// A strategy that abstained (or timed out, or is not enabled) simply has no vote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VoteKind {
    Accept,
    Reject,
}

/// What a policy decides for one answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Accept,
    Escalate,
    Reject,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Accept => "accept",
            Decision::Escalate => "escalate",
            Decision::Reject => "reject",
        }
    }
}

/// The weighted counts of one answer's non-abstaining votes under a policy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tally {
    /// Accept votes.
    pub agreed: u32,
    /// Weighted accept and reject confidences (`Σ wᵢ·cᵢ·[kind] / Σ wᵢ`; 0 with no vote).
    pub accept: f64,
    pub reject: f64,
    /// Whether any enabled strategy voted.
    pub voted: bool,
}

/// Counts `votes` (`(strategy name, kind, confidence)`) under `policy`. Votes of strategies the
/// policy does not enable are ignored; a confidence outside [0, 1] (or NaN) is clamped into it
/// (NaN counts as 0).
pub fn tally<'a>(
    policy: &EnsemblePolicy,
    votes: impl IntoIterator<Item = (&'a str, VoteKind, f64)>,
) -> Tally {
    let (mut total, mut acc, mut rej, mut agreed) = (0.0, 0.0, 0.0, 0u32);
    for (name, kind, c) in votes {
        let Some(s) = policy.strategies.get(name) else {
            continue;
        };
        let c = if c.is_nan() { 0.0 } else { c.clamp(0.0, 1.0) };
        total += s.weight;
        match kind {
            VoteKind::Accept => {
                agreed += 1;
                acc += s.weight * c;
            }
            VoteKind::Reject => rej += s.weight * c,
        }
    }
    let (accept, reject) = if total > 0.0 {
        (acc / total, rej / total)
    } else {
        (0.0, 0.0)
    };
    Tally {
        agreed,
        accept,
        reject,
        voted: total > 0.0,
    }
}

impl Tally {
    /// The module doc's rule. An accept needs at least one accept vote even when `n = 0`:
    /// abstentions alone never accept.
    pub fn decision(&self, policy: &EnsemblePolicy) -> Decision {
        if self.voted && self.reject >= policy.reject_confidence {
            Decision::Reject
        } else if self.agreed >= policy.n.max(1) && self.accept >= policy.min_confidence {
            Decision::Accept
        } else if policy.fail_open {
            Decision::Escalate
        } else {
            Decision::Reject
        }
    }
}

/// The decision of `policy` on `votes`: [`tally`] then [`Tally::decision`]. Pure, and the very
/// code the filter's aggregation stage runs, so the filter and the control plane's replay of
/// recorded votes cannot disagree.
pub fn decide<'a>(
    policy: &EnsemblePolicy,
    votes: impl IntoIterator<Item = (&'a str, VoteKind, f64)>,
) -> Decision {
    tally(policy, votes).decision(policy)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_of_three() -> EnsemblePolicy {
        let s = |w| StrategyConfig {
            weight: w,
            accept_below: None,
            reject_above: None,
            deadline_ms: None,
        };
        EnsemblePolicy {
            policy_id: "default-2of3".into(),
            n: 2,
            strategies: BTreeMap::from([
                ("pcs_recompute".into(), s(1.0)),
                ("hrs".into(), s(1.0)),
                ("rag_grounding".into(), s(0.9)),
            ]),
            min_confidence: 0.6,
            reject_confidence: 0.8,
            fail_open: true,
            stack: Stack::default(),
            sources: None,
        }
    }

    #[test]
    fn validates_and_round_trips() {
        let p = two_of_three();
        assert_eq!(p.validate(), Ok(()));
        let section = EnsembleSection {
            default: Some(p.clone()),
            tenants: BTreeMap::new(),
        };
        let json = serde_json::to_string(&section).unwrap_or_default();
        let back: Result<EnsembleSection, _> = serde_json::from_str(&json);
        assert_eq!(back.ok(), Some(section.clone()));
        assert_eq!(section.for_tenant("anyone"), Some(&p));
    }

    #[test]
    fn refuses_bad_policies() {
        let mut p = two_of_three();
        p.n = 4;
        assert!(matches!(p.validate(), Err(PolicyError::NTooLarge { .. })));
        let mut p = two_of_three();
        p.strategies
            .insert("lightweight".into(), p.strategies["hrs"].clone());
        assert!(matches!(p.validate(), Err(PolicyError::UnknownStrategy(_))));
        let mut p = two_of_three();
        p.min_confidence = f64::NAN;
        assert!(matches!(p.validate(), Err(PolicyError::Number(_))));
    }

    #[test]
    fn decides_by_the_documented_semantics() {
        use VoteKind::{Accept, Reject};
        let p = two_of_three();
        // 2-of-3 confident accepts → accept: a = (1·0.9 + 1·0.9) / 2.9 = 0.62 ≥ 0.6.
        let v = [
            ("pcs_recompute", Accept, 0.9),
            ("hrs", Accept, 0.9),
            ("rag_grounding", Reject, 0.2),
        ];
        assert_eq!(decide(&p, v), Decision::Accept);
        // Only one accept (the others abstain) → escalate under fail_open, reject otherwise.
        let one = [("hrs", Accept, 1.0)];
        assert_eq!(decide(&p, one), Decision::Escalate);
        let closed = EnsemblePolicy {
            fail_open: false,
            ..p.clone()
        };
        assert_eq!(decide(&closed, one), Decision::Reject);
        // Confident rejects: r = (1 + 1 + 0.9·0.9) / 2.9 = 0.97 ≥ 0.8.
        let v = [
            ("pcs_recompute", Reject, 1.0),
            ("hrs", Reject, 1.0),
            ("rag_grounding", Reject, 0.9),
        ];
        assert_eq!(decide(&p, v), Decision::Reject);
        // Every strategy abstains (or is not enabled) → never an accept.
        assert_eq!(
            decide(&p, [("micro_vote", Accept, 1.0)]),
            Decision::Escalate
        );
        assert_eq!(decide(&p, []), Decision::Escalate);
    }
}
