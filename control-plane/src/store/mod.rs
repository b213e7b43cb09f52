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
pub mod disagreements;
#[cfg(test)]
mod tests;

pub use db::{Backend, Db};

/// A nullable JSON text column of `r`, parsed (`None` when NULL); text that is not JSON is a
/// decode error naming the column.
pub fn json_column(
    r: &sqlx::any::AnyRow,
    col: &str,
) -> Result<Option<serde_json::Value>, sqlx::Error> {
    use sqlx::Row;
    r.try_get::<Option<String>, _>(col)?
        .map(|t| {
            serde_json::from_str(&t).map_err(|e| sqlx::Error::ColumnDecode {
                index: col.into(),
                source: e.to_string().into(),
            })
        })
        .transpose()
}

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
    /// Refused with 409 `idempotency_conflict`: the `pcs_id` is taken by other signed content.
    pub conflict: bool,
    /// A new decision-log row was written (false on replay of an applied record).
    pub fresh: bool,
    pub accepted: bool,
    pub escalated: bool,
    /// The decision was drawn into the audit sample (queued for review although accepted).
    pub audit_sample: bool,
    /// The new row's leaf hash in its batch's audit entry ([`crate::audit::store::decision_leaf`]).
    pub row_hash: Option<[u8; 32]>,
    /// An ensemble disagreement was recorded for it.
    pub disagreed: bool,
}

impl Applied {
    /// 409: nothing is stored, the earlier answer stays as it was.
    fn conflict(pcs_id: &str) -> Applied {
        let body = crate::error::ErrorBody {
            error: format!(
                "pcs_id {pcs_id} was already submitted with different signed content; \
                 resend the identical PCS to get its answer, or give new content a new pcs_id"
            ),
            code: "idempotency_conflict".into(),
        };
        Applied {
            status: 409,
            body: serde_json::to_string(&body).unwrap_or_default() + "\n",
            dedup_hit: false,
            conflict: true,
            fresh: false,
            accepted: false,
            escalated: false,
            audit_sample: false,
            row_hash: None,
            disagreed: false,
        }
    }
}

/// What applying a record depends on besides the record: the same on the live path, at
/// start-up replay and in `kakeya wal replay` (all from the configuration).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ApplyParams {
    /// Dedup lifetime.
    pub dedup_ttl_ms: i64,
    /// Share of accepted, non-escalated decisions queued for review
    /// ([`crate::review::audit`]).
    pub audit_sample_rate: f64,
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
/// The record's own timestamp is the dedup clock, so replaying an old record judges expiry as
/// of when it was received; the audit sample is a hash of (tenant, pcs_id), so replay with the
/// same rate reaches the same choice.
pub async fn apply_record(
    conn: &mut AnyConnection,
    record_id: &str,
    rec: &WalRecord,
    params: &ApplyParams,
) -> Result<Applied, ApplyError> {
    let ttl_ms = params.dedup_ttl_ms;
    let (vr, pcs) = check_record(&rec.result, rec.body.as_bytes())?;
    let status = vr.status();
    let body = format!("{}\n", rec.result);
    if rec.cacheable && !pcs.pcs_id.is_empty() {
        let content_sha256 = kakeya_core::ids::content_sha256(&pcs);
        let sub = dedup::Submission {
            tenant: &rec.tenant,
            pcs_id: &pcs.pcs_id,
            content_sha256: &content_sha256,
        };
        match dedup::insert_or_get(conn, &sub, status, &body, rec.ts_ms, ttl_ms).await? {
            dedup::DedupOutcome::Existing {
                status,
                body,
                created_at_ms,
            } => {
                // Replaying a record that won finds its own answer, stored at its own
                // timestamp: not a hit (a resubmission within the same millisecond tells the
                // TTL nothing either).
                if created_at_ms != rec.ts_ms {
                    let age_ms = rec.ts_ms - created_at_ms;
                    dedup::record_hit(conn, record_id, &sub, rec.ts_ms, age_ms).await?;
                }
                return Ok(Applied {
                    status,
                    body,
                    dedup_hit: true,
                    conflict: false,
                    fresh: false,
                    accepted: false,
                    escalated: false,
                    audit_sample: false,
                    row_hash: None,
                    disagreed: false,
                });
            }
            dedup::DedupOutcome::Conflict => return Ok(Applied::conflict(&pcs.pcs_id)),
            dedup::DedupOutcome::Won => {}
        }
    }
    let mut decision = decision_log::NewDecision::new(record_id, rec, &vr, &pcs, status);
    decision.audit_sample = crate::review::audit::sampled(
        params.audit_sample_rate,
        &rec.tenant,
        &pcs.pcs_id,
        vr.accepted,
        vr.escalated,
    );
    let fresh = decision_log::insert(conn, &decision).await?;
    if let (true, Some(a)) = (fresh, &rec.anomaly) {
        crate::anomaly::inline::record(conn, &rec.tenant, &pcs.pcs_id, a).await?;
    }
    if fresh {
        // cost: the decision's measured use, in the same transaction (crate::cost::record).
        let usage = crate::cost::record::measure(rec, &decision, &body);
        crate::cost::record::insert(conn, &decision, &usage).await?;
    }
    let disagreed = match (fresh, &vr.ensemble) {
        (true, Some(e)) => {
            disagreements::record(conn, record_id, &rec.tenant, &pcs.pcs_id, e, rec.ts_ms).await?
        }
        _ => false,
    };
    let d = &decision;
    let row_hash = fresh.then(|| {
        crate::audit::store::decision_leaf(
            record_id,
            d.tenant,
            d.pcs_id,
            status,
            d.accepted,
            d.escalated,
            d.created_at_ms,
        )
    });
    Ok(Applied {
        status,
        body,
        dedup_hit: false,
        conflict: false,
        fresh,
        accepted: vr.accepted,
        escalated: vr.escalated,
        audit_sample: decision.audit_sample,
        row_hash,
        disagreed,
    })
}
