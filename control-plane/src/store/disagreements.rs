//! Ensemble disagreements as audit events (migration 0018): a fresh decision whose votes fell
//! on both sides (`split`) or where a strategy abstained under a policy (`abstention`), one
//! row per decision, written with its decision-log row in the same transaction.
//!
//! Why keep them: they are where the policy's N-of-M, weights and `fail_open` actually
//! decided, so they are what a reviewer and the adaptive tuner look at first.

use kakeya_core::verify::EnsembleSummary;
use kakeya_core::vote::VoteOutcome;
use serde::{Deserialize, Serialize};
use sqlx::{AnyConnection, AnyPool, Row};

/// `split` when votes fell on both sides, else `abstention` when any strategy abstained;
/// `None` when every vote agreed.
pub fn kind_of(e: &EnsembleSummary) -> Option<&'static str> {
    let has = |o| e.votes.iter().any(|v| v.outcome == o);
    if has(VoteOutcome::Accept) && has(VoteOutcome::Reject) {
        Some("split")
    } else if has(VoteOutcome::Abstain) {
        Some("abstention")
    } else {
        None
    }
}

/// Records the disagreement of one fresh decision, if its votes disagree; true when written.
pub async fn record(
    conn: &mut AnyConnection,
    record_id: &str,
    tenant: &str,
    pcs_id: &str,
    e: &EnsembleSummary,
    created_at_ms: i64,
) -> Result<bool, sqlx::Error> {
    let Some(kind) = kind_of(e) else {
        return Ok(false);
    };
    let done = sqlx::query(
        "INSERT INTO ensemble_disagreements (record_id, tenant, pcs_id, policy_id, verdict, kind, \
         votes, created_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         ON CONFLICT (record_id) DO NOTHING",
    )
    .bind(record_id)
    .bind(tenant)
    .bind(pcs_id)
    .bind(e.policy_id.as_str())
    .bind(e.verdict.as_str())
    .bind(kind)
    .bind(e.to_json())
    .bind(created_at_ms)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// One disagreement as `GET /v1/ensemble/disagreements` serves it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DisagreementRow {
    pub id: i64,
    pub record_id: String,
    pub tenant: String,
    pub pcs_id: String,
    pub policy_id: String,
    /// `accept`, `escalate` or `reject`.
    pub verdict: String,
    /// `split` or `abstention`.
    pub kind: String,
    /// The ensemble summary as decided (policy_id, verdict, votes).
    #[schema(value_type = Object)]
    pub votes: serde_json::Value,
    pub created_at_ms: i64,
}

/// Newest first, below `before` (an id) when given, optionally one tenant's.
pub async fn page(
    pool: &AnyPool,
    tenant: Option<&str>,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<DisagreementRow>, sqlx::Error> {
    let before = before.unwrap_or(i64::MAX);
    let cols = "id, record_id, tenant, pcs_id, policy_id, verdict, kind, votes, created_at_ms";
    let rows = match tenant {
        Some(t) => {
            sqlx::query(&format!(
                "SELECT {cols} FROM ensemble_disagreements WHERE tenant = $1 AND id < $2 \
                 ORDER BY id DESC LIMIT $3"
            ))
            .bind(t)
            .bind(before)
            .bind(limit)
            .fetch_all(pool)
            .await?
        }
        None => {
            sqlx::query(&format!(
                "SELECT {cols} FROM ensemble_disagreements WHERE id < $1 ORDER BY id DESC LIMIT $2"
            ))
            .bind(before)
            .bind(limit)
            .fetch_all(pool)
            .await?
        }
    };
    rows.iter()
        .map(|r| {
            Ok(DisagreementRow {
                id: r.try_get("id")?,
                record_id: r.try_get("record_id")?,
                tenant: r.try_get("tenant")?,
                pcs_id: r.try_get("pcs_id")?,
                policy_id: r.try_get("policy_id")?,
                verdict: r.try_get("verdict")?,
                kind: r.try_get("kind")?,
                votes: super::json_column(r, "votes")?.unwrap_or_default(),
                created_at_ms: r.try_get("created_at_ms")?,
            })
        })
        .collect()
}
