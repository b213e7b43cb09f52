//! Writing and summing cost records (`cost_records`, migration 0020, and their daily roll-up
//! `cost_daily`, migration 0025).
//!
//! [`insert`] runs inside the apply path's transaction, right after a fresh decision-log row,
//! with the same record id: replay never doubles a record, and a record exists exactly when its
//! decision does. A new record is added to its (tenant, day, arm, model version) row of
//! `cost_daily` in the same transaction, and [`sums`] reads that roll-up: a month of ten
//! million decisions is summed from tenants × days rows (docs/BENCHMARKS.md).

use super::usage::{row_bytes, Usage, UsageSum};
use crate::store::decision_log::NewDecision;
use crate::store::Db;
use crate::wal::WalRecord;
use sqlx::{AnyConnection, Row};

/// Counts bytes written through it.
struct Counter(u64);

impl std::io::Write for Counter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0 += b.len() as u64;
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What the decision used: the request body as logged (a body's `evidence`, never persisted,
/// is not in it), the answer's bytes, the WAL frame (header + the record's JSON, exactly what
/// the writer appends) and the decision-log row's values.
pub fn measure(rec: &WalRecord, d: &NewDecision<'_>, response: &str) -> Usage {
    let mut wal = Counter(crate::wal::segment::HEADER_LEN as u64);
    let wal_bytes = match serde_json::to_writer(&mut wal, rec) {
        Ok(()) => wal.0,
        Err(_) => 0,
    };
    let features = d
        .features
        .map(crate::decision_features::DecidedFeatures::values_json);
    let risk = d.risk;
    let texts = [
        Some(d.record_id),
        Some(d.tenant),
        Some(d.pcs_id),
        Some(d.regime),
        d.reason,
        risk.map(|r| r.band.as_str()),
        risk.map(|r| r.model_version.as_str()),
        risk.map(|r| r.arm.as_str()),
        Some(d.pcs_version),
        d.features.map(|f| f.schema.as_str()),
        features.as_deref(),
    ];
    // d_hat, coh_star, r, budget, accepted, escalated, status, cacheable, verify_ns,
    // created_at_ms, risk, bundle_version, audit_sample, id.
    let numbers = 14;
    Usage {
        request_bytes: rec.body.len() as u64,
        response_bytes: response.len() as u64,
        wal_bytes,
        decision_log_bytes: row_bytes(&texts, numbers),
        filter_cpu_ns: rec.filter_ns,
        model_calls: rec.model_calls,
        prompt_tokens: rec.prompt_tokens,
        completion_tokens: rec.completion_tokens,
        rag_cpu_ns: rec.rag_ns,
    }
}

fn i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Stores the cost record of a fresh decision (no-op when the record id has one).
pub async fn insert(
    conn: &mut AnyConnection,
    d: &NewDecision<'_>,
    u: &Usage,
) -> Result<(), sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO cost_records (record_id, tenant, created_at_ms, day, trusted, request_bytes, \
         response_bytes, wal_bytes, decision_log_bytes, filter_cpu_ns, model_calls, arm, \
         model_version, prompt_tokens, completion_tokens, rag_cpu_ns) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) \
         ON CONFLICT (record_id) DO NOTHING",
    )
    .bind(d.record_id)
    .bind(d.tenant)
    .bind(d.created_at_ms)
    .bind(super::prices::day_of_ms(d.created_at_ms))
    .bind(i64::from(d.accepted && !d.escalated))
    .bind(i(u.request_bytes))
    .bind(i(u.response_bytes))
    .bind(i(u.wal_bytes))
    .bind(i(u.decision_log_bytes))
    .bind(u.filter_cpu_ns.map(i))
    .bind(u.model_calls.map(i))
    .bind(d.risk.map(|r| r.arm.clone()))
    .bind(d.risk.map(|r| r.model_version.clone()))
    .bind(u.prompt_tokens.map(i))
    .bind(u.completion_tokens.map(i))
    .bind(u.rag_cpu_ns.map(i))
    .persistent(false)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if inserted == 0 {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO cost_daily (tenant, day, arm, model_version, decisions, trusted, \
         request_bytes, response_bytes, wal_bytes, decision_log_bytes, filter_cpu_ns, \
         model_calls) VALUES ($1, $2, $3, $4, 1, $5, $6, $7, $8, $9, $10, $11) \
         ON CONFLICT (tenant, day, arm, model_version) DO UPDATE SET \
         decisions = cost_daily.decisions + 1, trusted = cost_daily.trusted + excluded.trusted, \
         request_bytes = cost_daily.request_bytes + excluded.request_bytes, \
         response_bytes = cost_daily.response_bytes + excluded.response_bytes, \
         wal_bytes = cost_daily.wal_bytes + excluded.wal_bytes, \
         decision_log_bytes = cost_daily.decision_log_bytes + excluded.decision_log_bytes, \
         filter_cpu_ns = cost_daily.filter_cpu_ns + excluded.filter_cpu_ns, \
         model_calls = cost_daily.model_calls + excluded.model_calls",
    )
    .bind(d.tenant)
    .bind(super::prices::day_of_ms(d.created_at_ms))
    .bind(d.risk.map(|r| r.arm.clone()).unwrap_or_default())
    .bind(d.risk.map(|r| r.model_version.clone()).unwrap_or_default())
    .bind(i64::from(d.accepted && !d.escalated))
    .bind(i(u.request_bytes))
    .bind(i(u.response_bytes))
    .bind(i(u.wal_bytes))
    .bind(i(u.decision_log_bytes))
    .bind(u.filter_cpu_ns.map_or(0, i))
    .bind(u.model_calls.map_or(0, i))
    .persistent(false)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Rebuilds `cost_daily` for days `[from_day, to_day)` from `cost_records` (the statement of
/// migration 0025's backfill): for records written in bulk outside [`insert`], as the
/// reconciliation benchmark's generated month is.
pub async fn rebuild_daily(db: &Db, from_day: i64, to_day: i64) -> Result<(), sqlx::Error> {
    let mut tx = db.pool.begin().await?;
    sqlx::query("DELETE FROM cost_daily WHERE day >= $1 AND day < $2")
        .bind(from_day)
        .bind(to_day)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO cost_daily (tenant, day, arm, model_version, decisions, trusted, \
         request_bytes, response_bytes, wal_bytes, decision_log_bytes, filter_cpu_ns, \
         model_calls) \
         SELECT tenant, day, COALESCE(arm, ''), COALESCE(model_version, ''), COUNT(*), \
         SUM(trusted), SUM(request_bytes), SUM(response_bytes), SUM(wal_bytes), \
         SUM(decision_log_bytes), COALESCE(SUM(filter_cpu_ns), 0), \
         COALESCE(SUM(model_calls), 0) \
         FROM cost_records WHERE day >= $1 AND day < $2 \
         GROUP BY tenant, day, COALESCE(arm, ''), COALESCE(model_version, '')",
    )
    .bind(from_day)
    .bind(to_day)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// Which records a roll-up sums.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// Days `[from_day, to_day)`.
    pub from_day: i64,
    pub to_day: i64,
    pub tenant: Option<String>,
    /// `champion`, `challenger` or `canary` (scored decisions only).
    pub arm: Option<String>,
    pub model_version: Option<String>,
}

/// Σ usage per (tenant, day) of the selection, sorted by tenant then day, from `cost_daily`.
pub async fn sums(db: &Db, sel: &Selection) -> Result<Vec<(String, i64, UsageSum)>, sqlx::Error> {
    let rows = sqlx::query(
        // PostgreSQL sums BIGINT as NUMERIC, which sqlx's Any driver cannot decode.
        "SELECT tenant, day, CAST(SUM(decisions) AS BIGINT) AS n, \
         CAST(SUM(trusted) AS BIGINT) AS trusted, \
         CAST(SUM(request_bytes) AS BIGINT) AS req, CAST(SUM(response_bytes) AS BIGINT) AS resp, \
         CAST(SUM(wal_bytes) AS BIGINT) AS wal, CAST(SUM(decision_log_bytes) AS BIGINT) AS dl, \
         CAST(SUM(filter_cpu_ns) AS BIGINT) AS cpu, CAST(SUM(model_calls) AS BIGINT) AS calls \
         FROM cost_daily WHERE day >= $1 AND day < $2 \
         AND ($3 IS NULL OR tenant = $3) AND ($4 IS NULL OR arm = $4) \
         AND ($5 IS NULL OR model_version = $5) \
         GROUP BY tenant, day ORDER BY tenant, day",
    )
    .bind(sel.from_day)
    .bind(sel.to_day)
    .bind(sel.tenant.clone())
    .bind(sel.arm.clone())
    .bind(sel.model_version.clone())
    .persistent(false)
    .fetch_all(&db.pool)
    .await?;
    let u = |r: &sqlx::any::AnyRow, c: &str| -> Result<u64, sqlx::Error> {
        Ok(u64::try_from(r.try_get::<i64, _>(c)?).unwrap_or(0))
    };
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get("tenant")?,
                r.try_get("day")?,
                UsageSum {
                    decisions: u(r, "n")?,
                    trusted: u(r, "trusted")?,
                    request_bytes: u(r, "req")?,
                    response_bytes: u(r, "resp")?,
                    wal_bytes: u(r, "wal")?,
                    decision_log_bytes: u(r, "dl")?,
                    filter_cpu_ns: u(r, "cpu")?,
                    model_calls: u(r, "calls")?,
                },
            ))
        })
        .collect()
}

/// Σ `rag_cpu_ns` of `tenant`'s cost records per day over `[from_day, to_day)` (days with any
/// recorded RAG time only), sorted by day: what the advisor's `rag_off` prices.
pub async fn rag_sums(
    db: &Db,
    tenant: &str,
    from_day: i64,
    to_day: i64,
) -> Result<Vec<(i64, u64)>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT day, CAST(SUM(rag_cpu_ns) AS BIGINT) AS ns FROM cost_records \
         WHERE day >= $1 AND day < $2 AND tenant = $3 AND rag_cpu_ns IS NOT NULL \
         GROUP BY day ORDER BY day",
    )
    .bind(from_day)
    .bind(to_day)
    .bind(tenant)
    .persistent(false)
    .fetch_all(&db.pool)
    .await?;
    rows.iter()
        .map(|r| {
            let ns: i64 = r.try_get("ns")?;
            Ok((r.try_get("day")?, u64::try_from(ns).unwrap_or(0)))
        })
        .collect()
}
