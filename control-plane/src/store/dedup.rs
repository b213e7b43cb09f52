//! Tenant-scoped dedup (fixes spec §15 #19): `(tenant, pcs_id)` → the first answer, for TTL.
//!
//! First write wins *atomically* in one statement: an insert that conflicts only replaces the
//! row when it has expired. `rows_affected` tells whether this write won; if not, the winner
//! is read back. No GET-then-SET race (spec §6.1).
//!
//! Idempotency compares content, not just the key: each row keeps the SHA-256 of the winner's
//! signed content ([`kakeya_core::ids::content_sha256`]). A resubmission with the same hash is
//! the same submission and gets the stored answer byte for byte; a different one under the
//! same `pcs_id` (e.g. a properly signed `D_hat` of 1e308) is a [`DedupOutcome::Conflict`]:
//! it must not be answered with someone else's verdict, nor replace it.

use sqlx::{AnyConnection, AnyPool, Row};

pub enum DedupOutcome {
    /// This write is now the stored answer.
    Won,
    /// A live earlier answer to the same content exists; serve it byte for byte.
    /// `created_at_ms`: when that answer was stored (the hit's age is measured from it).
    Existing {
        status: u16,
        body: String,
        created_at_ms: i64,
    },
    /// A live earlier answer exists for this `pcs_id` with other signed content.
    Conflict,
}

const UPSERT: &str =
    "INSERT INTO pcs_dedup (tenant, pcs_id, status, body, created_at_ms, expires_at_ms, content_sha256) \
     VALUES ($1, $2, $3, $4, $5, $6, $7) \
     ON CONFLICT (tenant, pcs_id) DO UPDATE SET status = excluded.status, body = excluded.body, \
     created_at_ms = excluded.created_at_ms, expires_at_ms = excluded.expires_at_ms, \
     content_sha256 = excluded.content_sha256 \
     WHERE pcs_dedup.expires_at_ms <= $5";

/// The key and content of one submission.
pub struct Submission<'a> {
    pub tenant: &'a str,
    pub pcs_id: &'a str,
    /// [`kakeya_core::ids::content_sha256`] of the PCS.
    pub content_sha256: &'a str,
}

pub async fn insert_or_get(
    conn: &mut AnyConnection,
    sub: &Submission<'_>,
    status: u16,
    body: &str,
    now_ms: i64,
    ttl_ms: i64,
) -> Result<DedupOutcome, sqlx::Error> {
    let done = sqlx::query(UPSERT)
        .bind(sub.tenant)
        .bind(sub.pcs_id)
        .bind(i64::from(status))
        .bind(body)
        .bind(now_ms)
        .bind(now_ms.saturating_add(ttl_ms))
        .bind(sub.content_sha256)
        .execute(&mut *conn)
        .await?;
    if done.rows_affected() > 0 {
        return Ok(DedupOutcome::Won);
    }
    let row = sqlx::query(
        "SELECT status, body, content_sha256, created_at_ms FROM pcs_dedup \
         WHERE tenant = $1 AND pcs_id = $2",
    )
    .bind(sub.tenant)
    .bind(sub.pcs_id)
    .fetch_one(&mut *conn)
    .await?;
    // NULL: a row from before content hashes were kept; it answers as it always did.
    let stored: Option<String> = row.try_get("content_sha256")?;
    if stored.is_some_and(|h| h != sub.content_sha256) {
        return Ok(DedupOutcome::Conflict);
    }
    let status: i64 = row.try_get("status")?;
    Ok(DedupOutcome::Existing {
        status: u16::try_from(status).unwrap_or(500),
        body: row.try_get("body")?,
        created_at_ms: row.try_get("created_at_ms")?,
    })
}

/// Records that `record_id` was answered from dedup with an answer `age_ms` old (the advisor's
/// `dedup_ttl` rule reads these); a replay of the record adds nothing.
pub async fn record_hit(
    conn: &mut AnyConnection,
    record_id: &str,
    sub: &Submission<'_>,
    hit_at_ms: i64,
    age_ms: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO dedup_hits (record_id, tenant, pcs_id, hit_at_ms, age_ms) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (record_id) DO NOTHING",
    )
    .bind(record_id)
    .bind(sub.tenant)
    .bind(sub.pcs_id)
    .bind(hit_at_ms)
    .bind(age_ms.max(0))
    .execute(&mut *conn)
    .await?;
    Ok(())
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

/// How long hit records are kept: the advisor reads the last 30 days.
pub const HIT_RETENTION_MS: i64 = 35 * 86_400_000;

/// Deletes expired rows (and hit records older than [`HIT_RETENTION_MS`]); returns how many
/// dedup rows.
pub async fn cleanup(pool: &AnyPool, now_ms: i64) -> Result<u64, sqlx::Error> {
    sqlx::query("DELETE FROM dedup_hits WHERE hit_at_ms < $1")
        .bind(now_ms - HIT_RETENTION_MS)
        .execute(pool)
        .await?;
    Ok(
        sqlx::query("DELETE FROM pcs_dedup WHERE expires_at_ms <= $1")
            .bind(now_ms)
            .execute(pool)
            .await?
            .rows_affected(),
    )
}
