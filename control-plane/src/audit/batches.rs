//! Deep verification: every `decision_batch` entry's Merkle root recomputed from the
//! decision-log rows it names (`kakeya audit verify --deep`, `GET /v1/audit/verify?deep=true`).
//!
//! The chain pins each batch entry's payload (its record ids and root); this pins the rows:
//! each named row's leaf ([`super::store::decision_leaf`], over its identity and verdict) is
//! recomputed from `decision_log` as stored now, and the RFC 6962 root over them, in the
//! entry's order, must be the entry's. A row altered or deleted after it was recorded fails,
//! naming the batch entry (a root cannot say which of its rows changed; the detail names the
//! rows that are missing).

use super::chain::{self, Hash};
use super::verify::{Break, Problem};
use crate::store::Db;
use serde::Deserialize;
use sqlx::Row;
use std::collections::HashMap;

/// Record ids per `IN (…)` query.
const IDS_PER_QUERY: usize = 500;

#[derive(Deserialize)]
struct BatchPayload {
    rows: u64,
    merkle_root: String,
    record_ids: Vec<String>,
}

/// The current leaf of each of `ids` found in `decision_log`.
async fn leaves(db: &Db, ids: &[String]) -> Result<HashMap<String, Hash>, sqlx::Error> {
    let mut out = HashMap::with_capacity(ids.len());
    for part in ids.chunks(IDS_PER_QUERY) {
        let marks: Vec<String> = (1..=part.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT record_id, tenant, pcs_id, status, accepted, escalated, created_at_ms \
             FROM decision_log WHERE record_id IN ({})",
            marks.join(", ")
        );
        let mut q = sqlx::query(&sql);
        for id in part {
            q = q.bind(id);
        }
        for r in q.fetch_all(&db.pool).await? {
            let id: String = r.try_get("record_id")?;
            let status: i64 = r.try_get("status")?;
            let leaf = super::store::decision_leaf(
                &id,
                r.try_get("tenant")?,
                r.try_get("pcs_id")?,
                // out of range cannot be a stored status: it can only fail to match
                u16::try_from(status).unwrap_or(u16::MAX),
                r.try_get::<i64, _>("accepted")? != 0,
                r.try_get::<i64, _>("escalated")? != 0,
                r.try_get("created_at_ms")?,
            );
            out.insert(id, leaf);
        }
    }
    Ok(out)
}

/// Why the batch entry `seq` with `payload` does not match the decision log; `None` when it
/// does.
async fn check_one(db: &Db, seq: i64, payload: &str) -> Result<Option<Break>, sqlx::Error> {
    let fail = |detail: String| {
        Some(Break {
            seq,
            problem: Problem::BatchRootMismatch,
            detail,
        })
    };
    let Ok(p) = serde_json::from_str::<BatchPayload>(payload) else {
        return Ok(fail(format!(
            "decision batch entry {seq}: the payload is not a decision batch"
        )));
    };
    let found = leaves(db, &p.record_ids).await?;
    let missing: Vec<&str> = p
        .record_ids
        .iter()
        .filter(|id| !found.contains_key(*id))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        return Ok(fail(format!(
            "decision batch entry {seq}: {} of its {} rows are missing from decision_log ({})",
            missing.len(),
            p.record_ids.len(),
            missing.join(", ")
        )));
    }
    let leaves: Vec<Hash> = p
        .record_ids
        .iter()
        .filter_map(|id| found.get(id))
        .copied()
        .collect();
    let root = chain::to_hex(&chain::merkle_root(&leaves));
    if root != p.merkle_root || p.rows != p.record_ids.len() as u64 {
        return Ok(fail(format!(
            "decision batch entry {seq}: its {} decision_log rows hash to root {root}, the entry \
             says {} over {} rows: a row was altered",
            leaves.len(),
            p.merkle_root,
            p.rows
        )));
    }
    Ok(None)
}

/// Checks every `decision_batch` entry of `from..=to` (entries already verified); how many,
/// and the first that does not match.
pub async fn check(db: &Db, from: i64, to: i64) -> Result<(u64, Option<Break>), sqlx::Error> {
    let rows = sqlx::query(
        "SELECT seq, payload FROM audit_entries WHERE kind = 'decision_batch' \
         AND seq >= $1 AND seq <= $2 ORDER BY seq",
    )
    .bind(from)
    .bind(to)
    .fetch_all(&db.pool)
    .await?;
    let mut n = 0;
    for r in &rows {
        n += 1;
        let seq: i64 = r.try_get("seq")?;
        if let Some(b) = check_one(db, seq, r.try_get("payload")?).await? {
            return Ok((n, Some(b)));
        }
    }
    Ok((n, None))
}
