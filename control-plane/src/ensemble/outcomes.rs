//! Labelled strategy outcomes: what the tuner learns from.
//!
//! One [`Outcome`] is a logged decision with every strategy's vote, the decision the serving
//! policy took and its propensity, and (for the tuner) the decision's effective label
//! ([`crate::review::effective_label`]: ground truth, never agreement).
//!
//! **Two sources.** The votes come from `POST /v1/ensemble/feedback` (table
//! `ensemble_outcomes`) and from the decision log itself: the gate forwards each decision's
//! votes under a policy (`decision_log.votes`, migration 0018). [`labelled`] reads both,
//! joined with the labels; a pcs_id present in both counts once, from the feedback (the
//! caller's explicit report wins over the log). Nothing downstream (arms, replay, stacking)
//! tells them apart.

use crate::review::store::{effective_by_decision, JOINED_LABEL_COLUMNS};
use crate::review::Label;
use crate::store::Db;
use kakeya_core::ensemble_policy::{Decision, VoteKind, STRATEGIES};
use kakeya_core::vote::VoteOutcome;
use serde::{Deserialize, Serialize};
use sqlx::Row;

/// One strategy's result as feedback reports it (and as stored, in `ensemble_outcomes.votes`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StrategyResult {
    /// One of `pcs_recompute`, `hrs`, `rag_grounding`, `micro_vote`.
    pub strategy_name: String,
    /// The strategy voted accept (true) or reject (false); an abstaining strategy is left out.
    pub accepted: bool,
    /// Its confidence in that vote, within [0, 1].
    pub confidence: f64,
}

impl StrategyResult {
    /// The vote as [`kakeya_core::ensemble_policy::decide`] takes it.
    pub fn vote(&self) -> (&str, VoteKind, f64) {
        let kind = if self.accepted {
            VoteKind::Accept
        } else {
            VoteKind::Reject
        };
        (self.strategy_name.as_str(), kind, self.confidence)
    }

    /// The strategy's hallucination probability read from its vote: `1 − confidence` for an
    /// accept, `confidence` for a reject (what the stack is fitted on).
    pub fn p_hallucinated(&self) -> f64 {
        if self.accepted {
            1.0 - self.confidence
        } else {
            self.confidence
        }
    }
}

/// Why a list of strategy results is refused.
pub fn check_results(results: &[StrategyResult]) -> Result<(), String> {
    let mut seen = std::collections::BTreeSet::new();
    for r in results {
        if !STRATEGIES.contains(&r.strategy_name.as_str()) {
            return Err(format!(
                "unknown strategy {:?}: expected one of {}",
                r.strategy_name.chars().take(64).collect::<String>(),
                STRATEGIES.join(", ")
            ));
        }
        if !seen.insert(r.strategy_name.as_str()) {
            return Err(format!("strategy {:?} given twice", r.strategy_name));
        }
        if !(0.0..=1.0).contains(&r.confidence) {
            return Err(format!(
                "confidence of {:?} must be within [0, 1] (got {})",
                r.strategy_name, r.confidence
            ));
        }
    }
    Ok(())
}

/// Parses a stored `votes` JSON array; `None` when it is not one (a row that was not
/// written by this module: skipped, never guessed).
pub fn parse_votes(json: &str) -> Option<Vec<StrategyResult>> {
    let v: Vec<StrategyResult> = serde_json::from_str(json).ok()?;
    check_results(&v).ok()?;
    Some(v)
}

/// A logged decision with its votes.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub pcs_id: String,
    pub votes: Vec<StrategyResult>,
    /// The serving policy's decision and the logging policy's probability of it.
    pub decision: Decision,
    pub propensity: f64,
    /// Ground truth: true = hallucinated.
    pub hallucinated: bool,
}

impl Outcome {
    pub fn votes(&self) -> impl Iterator<Item = (&str, VoteKind, f64)> {
        self.votes.iter().map(StrategyResult::vote)
    }
}

/// Whether `decision` on an answer was right: accept a faithful one, escalate or reject a
/// hallucinated one.
pub fn right(decision: Decision, hallucinated: bool) -> bool {
    (decision == Decision::Accept) != hallucinated
}

pub fn parse_decision(s: &str) -> Option<Decision> {
    [Decision::Accept, Decision::Escalate, Decision::Reject]
        .into_iter()
        .find(|d| d.as_str() == s)
}

/// Every labelled outcome of `tenant`, oldest first: the feedback's, then the decision log's
/// for the pcs_ids feedback never reported (see the module doc).
pub async fn labelled(db: &Db, tenant: &str) -> Result<Vec<Outcome>, sqlx::Error> {
    let mut out = from_feedback(db, tenant).await?;
    let serving = super::store::policy(&db.pool, tenant).await?;
    let mut seen: std::collections::BTreeSet<String> =
        out.iter().map(|(_, o)| o.pcs_id.clone()).collect();
    for (at, o) in from_decision_log(db, tenant, serving.as_ref()).await? {
        // A pcs_id logged twice (its dedup slot expired in between) counts once, the first.
        if seen.insert(o.pcs_id.clone()) {
            out.push((at, o));
        }
    }
    out.sort_by_key(|(at, _)| *at);
    Ok(out.into_iter().map(|(_, o)| o).collect())
}

/// The labelled outcomes reported by feedback, with when each was logged.
async fn from_feedback(db: &Db, tenant: &str) -> Result<Vec<(i64, Outcome)>, sqlx::Error> {
    let rows = sqlx::query(&format!(
        "SELECT o.id AS decision_id, o.votes AS votes, o.decision AS decision, \
         o.propensity AS propensity, o.created_at_ms AS logged_at_ms, {JOINED_LABEL_COLUMNS} \
         FROM ensemble_outcomes o JOIN labels l ON l.tenant = o.tenant AND l.pcs_id = o.pcs_id \
         WHERE o.tenant = $1 ORDER BY o.id"
    ))
    .bind(tenant)
    .fetch_all(&db.pool)
    .await?;
    let heads = effective_by_decision(&rows, |r| {
        Ok((
            r.try_get::<String, _>("votes")?,
            r.try_get::<String, _>("decision")?,
            r.try_get::<f64, _>("propensity")?,
            r.try_get::<i64, _>("logged_at_ms")?,
        ))
    })?;
    Ok(heads
        .into_iter()
        .filter_map(|((votes, decision, propensity, at), label)| {
            let (votes, decision) = (parse_votes(&votes)?, parse_decision(&decision)?);
            Some((at, labelled_outcome(label, votes, decision, propensity)))
        })
        .collect())
}

fn labelled_outcome(
    label: crate::review::LabelRow,
    votes: Vec<StrategyResult>,
    decision: Decision,
    propensity: f64,
) -> Outcome {
    Outcome {
        pcs_id: label.pcs_id,
        votes,
        decision,
        propensity,
        hallucinated: label.label == Label::Hallucinated,
    }
}

/// The votes of a decision-log row (the gate's `EnsembleSummary`) as strategy results, the
/// verdict it reached and the policy that reached it; abstentions are left out, as feedback
/// leaves them out. `None` for a row that does not parse or names an unknown strategy
/// (skipped, never guessed).
pub fn parse_logged_votes(json: &str) -> Option<(Vec<StrategyResult>, Decision, String)> {
    let e: kakeya_core::verify::EnsembleSummary = serde_json::from_str(json).ok()?;
    let votes: Vec<StrategyResult> = e
        .votes
        .iter()
        .filter_map(|v| {
            let accepted = match v.outcome {
                VoteOutcome::Accept => true,
                VoteOutcome::Reject => false,
                VoteOutcome::Abstain => return None,
            };
            Some(StrategyResult {
                strategy_name: v.strategy.to_string(),
                accepted,
                confidence: v.confidence,
            })
        })
        .collect();
    check_results(&votes).ok()?;
    Some((votes, parse_decision(&e.verdict)?, e.policy_id))
}

/// The labelled decision-log rows with votes whose pcs_id feedback never reported, with when
/// each was logged. The propensity of the logged verdict is the serving policy's mixture
/// ([`super::logged_propensity`]) when the row was decided by that policy, else 1 (an older
/// or the default policy: deterministic as far as the store knows).
async fn from_decision_log(
    db: &Db,
    tenant: &str,
    serving: Option<&super::store::PolicyRow>,
) -> Result<Vec<(i64, Outcome)>, sqlx::Error> {
    let rows = sqlx::query(&format!(
        "SELECT d.id AS decision_id, d.votes AS votes, d.created_at_ms AS logged_at_ms, \
         {JOINED_LABEL_COLUMNS} \
         FROM decision_log d JOIN labels l ON l.tenant = d.tenant AND l.pcs_id = d.pcs_id \
         WHERE d.tenant = $1 AND d.votes IS NOT NULL AND NOT EXISTS \
         (SELECT 1 FROM ensemble_outcomes o WHERE o.tenant = d.tenant AND o.pcs_id = d.pcs_id) \
         ORDER BY d.id"
    ))
    .bind(tenant)
    .fetch_all(&db.pool)
    .await?;
    let heads = effective_by_decision(&rows, |r| {
        Ok((
            r.try_get::<String, _>("votes")?,
            r.try_get::<i64, _>("logged_at_ms")?,
        ))
    })?;
    Ok(heads
        .into_iter()
        .filter_map(|((json, at), label)| {
            let (votes, decision, policy_id) = parse_logged_votes(&json)?;
            let propensity = match serving {
                Some(p) if p.policy.policy_id == policy_id => {
                    super::logged_propensity(&p.arms, &votes, decision)
                }
                _ => 1.0,
            };
            Some((at, labelled_outcome(label, votes, decision, propensity)))
        })
        .collect())
}
