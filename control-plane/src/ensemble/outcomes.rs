//! Labelled strategy outcomes: what the tuner learns from.
//!
//! One [`Outcome`] is a logged decision with every strategy's vote, the decision the serving
//! policy took and its propensity, and (for the tuner) the decision's effective label
//! ([`crate::review::effective_label`]: ground truth, never agreement).
//!
//! **The seam.** Today the votes come from `POST /v1/ensemble/feedback` (table
//! `ensemble_outcomes`, [`labelled`] reads it). Once the decision log records each decision's
//! votes itself (the pipeline's `decision_log.votes` column, migration 0018), a second source
//! is added *here*: [`labelled`] also selects the labelled decision-log rows that have votes
//! and no feedback row, parsed into the same [`Outcome`] by [`parse_votes`]. Nothing
//! downstream (arms, replay, stacking) changes.

use crate::review::store::{effective_by_decision, JOINED_LABEL_COLUMNS};
use crate::review::Label;
use crate::store::Db;
use kakeya_core::ensemble_policy::{Decision, VoteKind, STRATEGIES};
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

/// Every labelled outcome of `tenant`, oldest first (see the module doc for the seam).
pub async fn labelled(db: &Db, tenant: &str) -> Result<Vec<Outcome>, sqlx::Error> {
    let rows = sqlx::query(&format!(
        "SELECT o.id AS decision_id, o.votes AS votes, o.decision AS decision, \
         o.propensity AS propensity, {JOINED_LABEL_COLUMNS} \
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
        ))
    })?;
    Ok(heads
        .into_iter()
        .filter_map(|((votes, decision, propensity), label)| {
            Some(Outcome {
                pcs_id: label.pcs_id,
                votes: parse_votes(&votes)?,
                decision: parse_decision(&decision)?,
                propensity,
                hallucinated: label.label == Label::Hallucinated,
            })
        })
        .collect())
}
