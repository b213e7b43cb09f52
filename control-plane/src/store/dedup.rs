//! Tenant-scoped dedup (fixes spec §15 #19): `(tenant, pcs_id)` → the first answer, for TTL.
//!
//! First write wins *atomically* in one statement: an insert that conflicts only replaces the
//! row when it has expired. `rows_affected` tells whether this write won; if not, the winner
//! is read back. No GET-then-SET race (spec §6.1).

use sqlx::{AnyConnection, AnyPool, Row};

pub enum DedupOutcome {
    /// This write is now the stored answer.
    Won,
    /// A live earlier answer exists; serve it byte for byte.
    Existing { status: u16, body: String },
}

const UPSERT: &str =
    "INSERT INTO pcs_dedup (tenant, pcs_id, status, body, created_at_ms, expires_at_ms) \
     VALUES ($1, $2, $3, $4, $5, $6) \
     ON CONFLICT (tenant, pcs_id) DO UPDATE SET status = excluded.status, body = excluded.body, \
     created_at_ms = excluded.created_at_ms, expires_at_ms = excluded.expires_at_ms \
     WHERE pcs_dedup.expires_at_ms <= $5";

pub async fn insert_or_get(
    conn: &mut AnyConnection,
    tenant: &str,
    pcs_id: &str,
    status: u16,
    body: &str,
    now_ms: i64,
    ttl_ms: i64,
) -> Result<DedupOutcome, sqlx::Error> {
    let done = sqlx::query(UPSERT)
        .bind(tenant)
        .bind(pcs_id)
        .bind(i64::from(status))
        .bind(body)
        .bind(now_ms)
        .bind(now_ms.saturating_add(ttl_ms))
        .execute(&mut *conn)
        .await?;
    if done.rows_affected() > 0 {
        return Ok(DedupOutcome::Won);
    }
    let row = sqlx::query("SELECT status, body FROM pcs_dedup WHERE tenant = $1 AND pcs_id = $2")
        .bind(tenant)
        .bind(pcs_id)
        .fetch_one(&mut *conn)
        .await?;
    let status: i64 = row.try_get("status")?;
    Ok(DedupOutcome::Existing {
        status: u16::try_from(status).unwrap_or(500),
        body: row.try_get("body")?,
    })
}

/// The live stored answer, if any.
pub async fn get(
    pool: &AnyPool,
    tenant: &str,
    pcs_id: &str,
    now_ms: i64,
) -> Result<Option<(u16, String)>, sqlx::Error> {
    let row = sqlx::query("SELECT status, body FROM pcs_dedup WHERE tenant = $1 AND pcs_id = $2 AND expires_at_ms > $3")
        .bind(tenant)
        .bind(pcs_id)
        .bind(now_ms)
        .fetch_optional(pool)
        .await?;
    match row {
        None => Ok(None),
        Some(r) => {
            let status: i64 = r.try_get("status")?;
            Ok(Some((
                u16::try_from(status).unwrap_or(500),
                r.try_get("body")?,
            )))
        }
    }
}

/// Deletes expired rows; returns how many.
pub async fn cleanup(pool: &AnyPool, now_ms: i64) -> Result<u64, sqlx::Error> {
    Ok(
        sqlx::query("DELETE FROM pcs_dedup WHERE expires_at_ms <= $1")
            .bind(now_ms)
            .execute(pool)
            .await?
            .rows_affected(),
    )
}
