//! Persistence: the dedup table and the decision log, on SQLite or PostgreSQL.
//!
//! Both backends go through `sqlx::Any` with runtime-checked SQL written with `$n`
//! placeholders (accepted by both drivers), so there is one code path to test; only the DDL
//! differs (`migrations/sqlite`, `migrations/postgres`). [`apply_record`] is *the* apply path:
//! the live committer, crash recovery and `kakeya wal replay` all use it, which is what makes
//! replay idempotent (dedup first-write-wins + decision-log `ON CONFLICT (record_id)`).

pub mod db;
pub mod decision_log;
pub mod dedup;
#[cfg(test)]
mod tests;

pub use db::{Backend, Db};

use crate::wal::WalRecord;
use kakeya_core::VerifyResult;
use sqlx::AnyConnection;

/// How one record was applied, and the HTTP answer it gets.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    pub status: u16,
    /// Response body, byte for byte (`result + "\n"`, or the stored winner's body).
    pub body: String,
    /// Answered from the dedup table (someone else's earlier write won).
    pub dedup_hit: bool,
    /// A new decision-log row was written (false on replay of an applied record).
    pub fresh: bool,
    pub accepted: bool,
    pub escalated: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The record cannot be applied at all (bad result JSON or body); never retried.
    #[error("invalid record: {0}")]
    Invalid(String),
    #[error("database: {0}")]
    Store(#[from] sqlx::Error),
}

/// Checks the gate's result header and the body the way the apply path will read them.
pub fn check_record(
    result: &str,
    body: &[u8],
) -> Result<(VerifyResult, kakeya_core::Pcs), ApplyError> {
    let vr: VerifyResult = serde_json::from_str(result)
        .map_err(|e| ApplyError::Invalid(format!("x-kakeya-result is not a VerifyResult: {e}")))?;
    let pcs = kakeya_core::parse(body).map_err(|e| ApplyError::Invalid(e.to_string()))?;
    Ok((vr, pcs))
}

/// Applies one WAL record inside the caller's transaction (see module docs).
/// `ttl_ms` is the dedup lifetime; the record's own timestamp is the clock, so replaying an
/// old record judges expiry as of when it was received.
pub async fn apply_record(
    conn: &mut AnyConnection,
    record_id: &str,
    rec: &WalRecord,
    ttl_ms: i64,
) -> Result<Applied, ApplyError> {
    let (vr, pcs) = check_record(&rec.result, rec.body.as_bytes())?;
    let status = vr.status();
    let body = format!("{}\n", rec.result);
    if rec.cacheable && !pcs.pcs_id.is_empty() {
        match dedup::insert_or_get(
            conn,
            &rec.tenant,
            &pcs.pcs_id,
            status,
            &body,
            rec.ts_ms,
            ttl_ms,
        )
        .await?
        {
            dedup::DedupOutcome::Existing { status, body } => {
                return Ok(Applied {
                    status,
                    body,
                    dedup_hit: true,
                    fresh: false,
                    accepted: false,
                    escalated: false,
                });
            }
            dedup::DedupOutcome::Won => {}
        }
    }
    let fresh = decision_log::insert(
        conn,
        &decision_log::NewDecision::new(record_id, rec, &vr, &pcs, status),
    )
    .await?;
    Ok(Applied {
        status,
        body,
        dedup_hit: false,
        fresh,
        accepted: vr.accepted,
        escalated: vr.escalated,
    })
}
