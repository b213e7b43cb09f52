//! Ensemble (N-of-M) policy changes in the simulator: a diff of the served bundle's ensemble
//! policies (N, the confidences, `fail_open`, strategy weights, enabled strategies), replayed
//! over the votes each decision recorded (`decision_log.votes`) through
//! [`kakeya_core::ensemble_policy::decide`], the code the filter's aggregation runs.
//!
//! Exactness: the votes are the recorded ones, so the replayed verdict is the one the filter
//! would have reached with the candidate policy, provided every strategy the candidate enables
//! voted (or abstained) in the recorded decision; a diff that enables a strategy a replayed
//! decision has no vote of is refused (`votes_not_recorded`) rather than guessed. The filter
//! never turns a decision whose verification did not pass into an accept: that is read from
//! the recorded `pcs_recompute` vote (accept = verified), or, when the recorded policy did not
//! enable it, from the recorded verdict (an accept was verified; anything else counts as not
//! verified, so replay never invents an accept).

use kakeya_core::ensemble_policy::{
    decide, Decision, EnsemblePolicy, EnsembleSection, StrategyConfig, VoteKind, STRATEGIES,
};
use kakeya_core::verify::EnsembleSummary;
use kakeya_core::vote::VoteOutcome;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A change of the ensemble policies: every field optional, at least one given.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
#[schema(as = EnsemblePolicyDiff)]
pub struct EnsembleDiff {
    /// Change only this tenant's policy (default: every policy of the bundle, the default
    /// one included).
    pub tenant: Option<String>,
    /// Accept votes needed (the N of N-of-M).
    pub n: Option<u32>,
    /// Weighted accept confidence needed to accept, within [0, 1].
    pub min_confidence: Option<f64>,
    /// Weighted reject confidence at or above which the answer is rejected (≥ 0).
    pub reject_confidence: Option<f64>,
    /// Undecided → escalate (true) or reject (false).
    pub fail_open: Option<bool>,
    /// Strategy weights to set; a strategy named here that the policy does not enable is
    /// enabled with this weight (its vote must be recorded in the replayed decisions).
    pub weights: BTreeMap<String, f64>,
    /// Strategies to disable.
    pub disable: Vec<String>,
}

impl EnsembleDiff {
    pub fn is_empty(&self) -> bool {
        *self
            == EnsembleDiff {
                tenant: self.tenant.clone(),
                ..EnsembleDiff::default()
            }
    }

    /// Why the diff is refused on its own (before it meets a policy).
    pub fn check(&self) -> Result<(), String> {
        if self.is_empty() {
            return Err("diff.ensemble changes nothing: give n, min_confidence, reject_confidence, fail_open, weights or disable".into());
        }
        if let Some(t) = &self.tenant {
            if t.is_empty() || t.len() > 128 {
                return Err("diff.ensemble.tenant must be 1..=128 characters".into());
            }
        }
        for name in self.weights.keys().chain(self.disable.iter()) {
            if !STRATEGIES.contains(&name.as_str()) {
                return Err(format!(
                    "diff.ensemble: unknown strategy {:?}: expected one of {}",
                    name.chars().take(64).collect::<String>(),
                    STRATEGIES.join(", ")
                ));
            }
        }
        if let Some(name) = self.disable.iter().find(|d| self.weights.contains_key(*d)) {
            return Err(format!(
                "diff.ensemble: {name} is both weighted and disabled"
            ));
        }
        Ok(())
    }

    /// `policy` with the diff applied, validated as the filter validates a bundle.
    pub fn apply(&self, policy: &EnsemblePolicy) -> Result<EnsemblePolicy, String> {
        let mut p = policy.clone();
        if let Some(n) = self.n {
            p.n = n;
        }
        if let Some(c) = self.min_confidence {
            p.min_confidence = c;
        }
        if let Some(c) = self.reject_confidence {
            p.reject_confidence = c;
        }
        if let Some(f) = self.fail_open {
            p.fail_open = f;
        }
        for (name, w) in &self.weights {
            p.strategies
                .entry(name.clone())
                .and_modify(|s| s.weight = *w)
                .or_insert(StrategyConfig {
                    weight: *w,
                    accept_below: None,
                    reject_above: None,
                    deadline_ms: None,
                });
        }
        for name in &self.disable {
            p.strategies.remove(name);
        }
        p.validate()
            .map_err(|e| format!("diff.ensemble gives an invalid policy: {e}"))?;
        Ok(p)
    }

    /// The bundle's ensemble section with the diff applied to the policies it covers.
    pub fn apply_section(&self, s: &EnsembleSection) -> Result<EnsembleSection, SectionError> {
        let mut out = s.clone();
        match &self.tenant {
            Some(t) => {
                let p = s.for_tenant(t).ok_or_else(|| {
                    SectionError::NoPolicy(format!(
                        "diff.ensemble.tenant {t}: the served bundle has no ensemble policy for it"
                    ))
                })?;
                out.tenants
                    .insert(t.clone(), self.apply(p).map_err(SectionError::Invalid)?);
            }
            None => {
                if s.is_empty() {
                    return Err(SectionError::NoPolicy(
                        "diff.ensemble: the served bundle has no ensemble policy".into(),
                    ));
                }
                if let Some(d) = &s.default {
                    out.default = Some(self.apply(d).map_err(SectionError::Invalid)?);
                }
                for (t, p) in &s.tenants {
                    out.tenants
                        .insert(t.clone(), self.apply(p).map_err(SectionError::Invalid)?);
                }
            }
        }
        Ok(out)
    }
}

/// Why a diff does not apply to the served bundle's ensemble section.
#[derive(Debug, Clone, PartialEq)]
pub enum SectionError {
    /// No policy to change (409 `no_ensemble_policy`).
    NoPolicy(String),
    /// The changed policy is invalid (400).
    Invalid(String),
}

/// Refuses a replay the recorded votes cannot decide exactly: `votes_not_recorded` when a
/// decision under a changed policy lacks a vote of a strategy it enables, `no_votes` when no
/// replayed decision recorded votes under one.
pub fn check_recorded(
    section: &EnsembleSection,
    rows: &[super::Recorded],
) -> Result<(), (&'static str, String)> {
    let mut any = false;
    for r in rows {
        let (Some(p), Some(v)) = (section.for_tenant(&r.tenant), r.votes.as_deref()) else {
            continue;
        };
        any = true;
        if let Some(s) = v.missing(p) {
            return Err((
                "votes_not_recorded",
                format!(
                    "policy {} enables {s}, but decision {} of tenant {} recorded no {s} vote: the replay cannot decide it exactly",
                    p.policy_id, r.pcs_id, r.tenant
                ),
            ));
        }
    }
    if any {
        Ok(())
    } else {
        Err((
            "no_votes",
            "no replayed decision recorded ensemble votes under a policy the diff changes: nothing to replay".into(),
        ))
    }
}

/// One decision's recorded ensemble votes, as replay reads them.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedVotes {
    /// Every recorded vote: strategy, direction (`None` = abstained), confidence.
    pub votes: Vec<(String, Option<VoteKind>, f64)>,
    pub verdict: Decision,
    /// Whether its verification passed (see the module doc).
    pub verified: bool,
}

impl RecordedVotes {
    /// Parses a `decision_log.votes` value (the gate's [`EnsembleSummary`] JSON); `None` when
    /// it is not one (never guessed).
    pub fn parse(json: &str) -> Option<RecordedVotes> {
        let s: EnsembleSummary = serde_json::from_str(json).ok()?;
        let verdict = crate::ensemble::outcomes::parse_decision(&s.verdict)?;
        let mut pcs = None;
        let votes = s
            .votes
            .into_iter()
            .map(|v| {
                let kind = match v.outcome {
                    VoteOutcome::Accept => Some(VoteKind::Accept),
                    VoteOutcome::Reject => Some(VoteKind::Reject),
                    VoteOutcome::Abstain => None,
                };
                if v.strategy == kakeya_core::pipeline::votes::PCS_RECOMPUTE {
                    pcs = Some(kind == Some(VoteKind::Accept));
                }
                (v.strategy.into_owned(), kind, v.confidence)
            })
            .collect();
        Some(RecordedVotes {
            votes,
            verdict,
            verified: pcs.unwrap_or(verdict == Decision::Accept),
        })
    }

    /// The first strategy `policy` enables that this decision has no recorded vote of.
    pub fn missing<'p>(&self, policy: &'p EnsemblePolicy) -> Option<&'p str> {
        policy
            .strategies
            .keys()
            .find(|s| !self.votes.iter().any(|(v, _, _)| v == *s))
            .map(String::as_str)
    }

    /// The verdict of `policy` on these votes, as the filter reaches it: an accept of a
    /// decision whose verification did not pass is escalated.
    pub fn decide(&self, policy: &EnsemblePolicy) -> Decision {
        let votes = self
            .votes
            .iter()
            .filter_map(|(s, k, c)| k.map(|k| (s.as_str(), k, *c)));
        match decide(policy, votes) {
            Decision::Accept if !self.verified => Decision::Escalate,
            d => d,
        }
    }
}

/// Applies `diff` to the stored per-tenant policies (each set by hand, itself with probability
/// 1, named `policy_id`) and republishes the bundle. The configured default policy
/// (`[ensemble.default]`) is configuration, not state: a diff that covers it is refused
/// (`not_applicable`) with nothing changed.
pub async fn apply(
    db: &crate::store::Db,
    seed: &[u8; 32],
    diff: &EnsembleDiff,
    policy_id: &str,
    now_ms: i64,
) -> Result<(), super::SimError> {
    use crate::ensemble::store::{self, LoggedArm, PolicyRow, Reason};
    let not_applicable = |message: String| super::SimError::Conflict {
        code: "not_applicable",
        message,
    };
    let mut tx = db.pool.begin().await?;
    let section = crate::ensemble::publication_section(&mut tx).await?;
    let tenants: Vec<String> = match &diff.tenant {
        Some(t) if section.tenants.contains_key(t) => vec![t.clone()],
        Some(t) => {
            return Err(not_applicable(format!(
                "tenant {t} is decided by the configured [ensemble.default]: change the configuration, or set the tenant's own policy first"
            )))
        }
        None if section.default.is_some() => {
            return Err(not_applicable(
                "the diff covers the configured [ensemble.default]: give diff.ensemble.tenant, or change the configuration".into(),
            ))
        }
        None => section.tenants.keys().cloned().collect(),
    };
    for t in tenants {
        let Some(p) = section.tenants.get(&t) else {
            continue;
        };
        let mut policy = diff.apply(p).map_err(super::SimError::Invalid)?;
        policy.policy_id = policy_id.to_string();
        let row = PolicyRow {
            tenant: t,
            arms: vec![LoggedArm {
                policy: policy.clone(),
                propensity: 1.0,
            }],
            policy,
            run_id: None,
            updated_at_ms: now_ms,
        };
        store::set_policy(&mut tx, &row, Reason::Manual).await?;
    }
    tx.commit().await?;
    crate::registry::republish(db, seed, now_ms).await?;
    Ok(())
}
