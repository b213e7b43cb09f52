//! SQL of the price book, billing lines, import jobs, reconciliations and budgets (migrations
//! 0020–0022), for SQLite and PostgreSQL through `sqlx::Any`.

use super::billing::{BillingLine, Provider};
use super::prices::PriceEntry;
use crate::store::{Backend, Db};
use sqlx::{AnyConnection, Connection, Row};
use std::fmt::Write;

/// The price entries added through the API, oldest first.
pub async fn stored_prices(db: &Db) -> Result<Vec<PriceEntry>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT effective_from, tenant, per_request, per_cpu_second, per_gib_stored, \
         per_gib_transferred, per_model_call FROM cost_prices ORDER BY id",
    )
    .fetch_all(&db.pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(PriceEntry {
                effective_from: r.try_get("effective_from")?,
                tenant: r.try_get("tenant")?,
                per_request: r.try_get("per_request")?,
                per_cpu_second: r.try_get("per_cpu_second")?,
                per_gib_stored: r.try_get("per_gib_stored")?,
                per_gib_transferred: r.try_get("per_gib_transferred")?,
                per_model_call: r.try_get("per_model_call")?,
            })
        })
        .collect()
}

pub async fn add_price(db: &Db, e: &PriceEntry, now_ms: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO cost_prices (effective_from, tenant, per_request, per_cpu_second, \
         per_gib_stored, per_gib_transferred, per_model_call, created_at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&e.effective_from)
    .bind(e.tenant.clone())
    .bind(e.per_request)
    .bind(e.per_cpu_second)
    .bind(e.per_gib_stored)
    .bind(e.per_gib_transferred)
    .bind(e.per_model_call)
    .bind(now_ms)
    .persistent(false)
    .execute(&db.pool)
    .await?;
    Ok(())
}

/// Lines per INSERT statement: 9 parameters each, 9,000 in all, under SQLite's 32,766 and
/// PostgreSQL's 65,535.
pub const UPSERT_CHUNK: usize = 1000;

const UPSERT_HEAD: &str = "INSERT INTO billing_lines (provider, line_id, day, tenant, service, \
     provider_service, cost, currency, job_id) VALUES ";
const UPSERT_TAIL: &str = " ON CONFLICT (provider, line_id) DO UPDATE SET day = excluded.day, \
     tenant = excluded.tenant, service = excluded.service, \
     provider_service = excluded.provider_service, cost = excluded.cost, \
     currency = excluded.currency, job_id = excluded.job_id \
     WHERE billing_lines.day <> excluded.day OR billing_lines.cost <> excluded.cost \
     OR billing_lines.service <> excluded.service \
     OR COALESCE(billing_lines.tenant, '') <> COALESCE(excluded.tenant, '') \
     OR billing_lines.currency <> excluded.currency \
     OR billing_lines.provider_service <> excluded.provider_service";

/// The upsert of `rows` lines. SQLite gets anonymous `?` placeholders: a `$n` is a *named*
/// parameter there, and SQLite looks names up in a linear list both when it parses the
/// statement and when sqlx binds each one, so 3,600 `$n` cost millions of steps per statement
/// (what made a million-line import take minutes). PostgreSQL needs `$n`.
pub fn upsert_sql(backend: Backend, rows: usize) -> String {
    let mut sql = String::with_capacity(UPSERT_HEAD.len() + UPSERT_TAIL.len() + rows * 60);
    sql.push_str(UPSERT_HEAD);
    for i in 0..rows {
        if i > 0 {
            sql.push(',');
        }
        match backend {
            Backend::Sqlite => sql.push_str("(?,?,?,?,?,?,?,?,?)"),
            Backend::Postgres => {
                sql.push('(');
                for c in 1..=9 {
                    if c > 1 {
                        sql.push(',');
                    }
                    let _ = write!(sql, "${}", i * 9 + c);
                }
                sql.push(')');
            }
        }
    }
    sql.push_str(UPSERT_TAIL);
    sql
}

/// Upserts `lines` by (provider, line id) in one transaction; the number of rows inserted or
/// changed (a line stored with the same values is not counted: re-importing is a no-op).
pub async fn upsert_lines(
    db: &Db,
    provider: Provider,
    job_id: &str,
    lines: &[BillingLine],
) -> Result<u64, sqlx::Error> {
    let mut conn = db.pool.acquire().await?;
    let mut tx = conn.begin().await?;
    let mut written = 0;
    // Every full chunk runs the same text: built once, and prepared once per connection (the
    // driver's statement cache), not parsed again for each chunk; a last partial chunk is not
    // cached.
    let full = upsert_sql(db.backend, UPSERT_CHUNK);
    for chunk in lines.chunks(UPSERT_CHUNK) {
        let is_full = chunk.len() == UPSERT_CHUNK;
        let sql = if is_full {
            std::borrow::Cow::Borrowed(full.as_str())
        } else {
            std::borrow::Cow::Owned(upsert_sql(db.backend, chunk.len()))
        };
        written += upsert_chunk(&mut tx, &sql, is_full, provider, job_id, chunk).await?;
    }
    tx.commit().await?;
    Ok(written)
}

async fn upsert_chunk(
    conn: &mut AnyConnection,
    sql: &str,
    cached: bool,
    provider: Provider,
    job_id: &str,
    lines: &[BillingLine],
) -> Result<u64, sqlx::Error> {
    let mut q = sqlx::query(sql);
    for l in lines {
        q = q
            .bind(provider.as_str())
            .bind(l.line_id.as_str())
            .bind(l.day)
            .bind(l.tenant.as_deref())
            .bind(l.service.as_str())
            .bind(l.provider_service.as_str())
            .bind(l.cost)
            .bind(l.currency.as_str())
            .bind(job_id);
    }
    Ok(q.persistent(cached)
        .execute(&mut *conn)
        .await?
        .rows_affected())
}

/// Σ billed cost per (service, day) over days `[from, to)`, every provider.
pub async fn billed_sums(
    db: &Db,
    from: i64,
    to: i64,
) -> Result<Vec<(String, i64, f64)>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT service, day, SUM(cost) AS c FROM billing_lines WHERE day >= $1 AND day < $2 \
         GROUP BY service, day ORDER BY service, day",
    )
    .bind(from)
    .bind(to)
    .fetch_all(&db.pool)
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("service")?, r.try_get("day")?, r.try_get("c")?)))
        .collect()
}

/// Σ billed cost per (tenant, day) over `[from, to)`, for tagged lines.
pub async fn billed_by_tenant(
    db: &Db,
    from: i64,
    to: i64,
) -> Result<Vec<(String, i64, f64)>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT tenant, day, SUM(cost) AS c FROM billing_lines WHERE day >= $1 AND day < $2 \
         AND tenant IS NOT NULL GROUP BY tenant, day ORDER BY tenant, day",
    )
    .bind(from)
    .bind(to)
    .fetch_all(&db.pool)
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("tenant")?, r.try_get("day")?, r.try_get("c")?)))
        .collect()
}

/// A stored JSON document (a job, a report) and its id.
pub async fn insert_job(
    db: &Db,
    id: &str,
    provider: Provider,
    (from, to): (i64, i64),
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO cost_import_jobs (id, provider, from_day, to_day, status, created_at_ms) \
         VALUES ($1, $2, $3, $4, 'running', $5)",
    )
    .bind(id)
    .bind(provider.as_str())
    .bind(from)
    .bind(to)
    .bind(now_ms)
    .execute(&db.pool)
    .await?;
    Ok(())
}

pub async fn finish_job(
    db: &Db,
    id: &str,
    result: Result<&serde_json::Value, &str>,
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    let (status, body, error) = match result {
        Ok(v) => ("succeeded", Some(v.to_string()), None),
        Err(e) => ("failed", None, Some(e.to_string())),
    };
    // The job's end and its audit entry commit together.
    let mut tx = db.pool.begin().await?;
    sqlx::query(
        "UPDATE cost_import_jobs SET status = $1, result = $2, error = $3, finished_at_ms = $4 \
         WHERE id = $5",
    )
    .bind(status)
    .bind(body)
    .bind(error)
    .bind(now_ms)
    .bind(id)
    .execute(&mut *tx)
    .await?;
    // audit: the finished import (the job row itself is a status, updated).
    let e = crate::audit::Event::BillingImport {
        job_id: id.into(),
        status: status.into(),
    };
    crate::audit::append(&mut tx, &e, now_ms).await?;
    tx.commit().await?;
    Ok(())
}

/// A job row: (provider, from_day, to_day, status, created, finished, result, error).
pub type JobRow = (
    String,
    i64,
    i64,
    String,
    i64,
    Option<i64>,
    Option<serde_json::Value>,
    Option<String>,
);

pub async fn job(db: &Db, id: &str) -> Result<Option<JobRow>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT provider, from_day, to_day, status, created_at_ms, finished_at_ms, result, error \
         FROM cost_import_jobs WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(&db.pool)
    .await?;
    row.map(|r| {
        Ok((
            r.try_get("provider")?,
            r.try_get("from_day")?,
            r.try_get("to_day")?,
            r.try_get("status")?,
            r.try_get("created_at_ms")?,
            r.try_get("finished_at_ms")?,
            crate::store::json_column(&r, "result")?,
            r.try_get("error")?,
        ))
    })
    .transpose()
}

/// Stores a reconciliation report; its id.
pub async fn insert_reconciliation(
    db: &Db,
    (from, to): (i64, i64),
    status: &str,
    (internal_sha256, billed_sha256): (&str, &str),
    report: &serde_json::Value,
    now_ms: i64,
) -> Result<i64, sqlx::Error> {
    let mut tx = db.pool.begin().await?;
    let id: i64 = sqlx::query(
        "INSERT INTO cost_reconciliations (created_at_ms, from_day, to_day, status, \
         internal_sha256, billed_sha256, report) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
    )
    .bind(now_ms)
    .bind(from)
    .bind(to)
    .bind(status)
    .bind(internal_sha256)
    .bind(billed_sha256)
    .bind(report.to_string())
    .fetch_one(&mut *tx)
    .await?
    .try_get("id")?;
    // audit: the reconciliation, in the same transaction.
    let e = crate::audit::Event::Reconciliation {
        id,
        from_day: from,
        to_day: to,
        status: status.into(),
        internal_sha256: internal_sha256.into(),
        billed_sha256: billed_sha256.into(),
    };
    crate::audit::append(&mut tx, &e, now_ms).await?;
    tx.commit().await?;
    Ok(id)
}

/// Stored reports, newest first (their JSON, id included).
pub async fn reconciliations(
    db: &Db,
    limit: i64,
    before_id: Option<i64>,
) -> Result<Vec<serde_json::Value>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT report FROM cost_reconciliations WHERE ($1 IS NULL OR id < $1) \
         ORDER BY id DESC LIMIT $2",
    )
    .bind(before_id)
    .bind(limit)
    .persistent(false)
    .fetch_all(&db.pool)
    .await?;
    rows.iter()
        .map(|r| Ok(crate::store::json_column(r, "report")?.unwrap_or_default()))
        .collect()
}

pub async fn set_reconciliation_report(
    db: &Db,
    id: i64,
    report: &serde_json::Value,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE cost_reconciliations SET report = $1 WHERE id = $2")
        .bind(report.to_string())
        .bind(id)
        .execute(&db.pool)
        .await?;
    Ok(())
}
