//! SQL of `review_evidence` (migration 0010), for SQLite and PostgreSQL through `sqlx::Any`.

use super::crypto::Sealed;
use super::Tenants;
use sqlx::{AnyConnection, AnyPool, Row};

/// One stored (still sealed) record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvidence {
    pub tenant: String,
    pub pcs_id: String,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
    pub expires_at_ms: i64,
}

/// Stores the sealed evidence of (tenant, pcs_id) unless the decision is labelled already (a
/// label ends retention); replaces a row only once it has expired. True when written.
pub async fn insert(
    conn: &mut AnyConnection,
    tenant: &str,
    pcs_id: &str,
    sealed: &Sealed,
    now_ms: i64,
    expires_at_ms: i64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO review_evidence (tenant, pcs_id, nonce, ciphertext, created_at_ms, \
         expires_at_ms) SELECT $1, $2, $3, $4, $5, $6 WHERE NOT EXISTS \
         (SELECT 1 FROM labels l WHERE l.tenant = $1 AND l.pcs_id = $2) \
         ON CONFLICT (tenant, pcs_id) DO UPDATE SET nonce = excluded.nonce, \
         ciphertext = excluded.ciphertext, created_at_ms = excluded.created_at_ms, \
         expires_at_ms = excluded.expires_at_ms WHERE review_evidence.expires_at_ms <= $5",
    )
    .bind(tenant)
    .bind(pcs_id)
    .bind(sealed.nonce.clone())
    .bind(sealed.ciphertext.clone())
    .bind(now_ms)
    .bind(expires_at_ms)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Deletes the evidence of (tenant, pcs_id) (it was labelled); true when a row went.
pub async fn delete(
    conn: &mut AnyConnection,
    tenant: &str,
    pcs_id: &str,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("DELETE FROM review_evidence WHERE tenant = $1 AND pcs_id = $2")
        .bind(tenant)
        .bind(pcs_id)
        .execute(&mut *conn)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// The unexpired records of the decisions with ids in `oldest_id..=newest_id` (one page of
/// the review queue), narrowed to one tenant when given.
pub async fn for_decisions(
    pool: &AnyPool,
    oldest_id: i64,
    newest_id: i64,
    tenant: Option<&str>,
    now_ms: i64,
) -> Result<Vec<StoredEvidence>, sqlx::Error> {
    let q = format!(
        "SELECT e.tenant, e.pcs_id, e.nonce, e.ciphertext, e.expires_at_ms \
         FROM review_evidence e WHERE e.expires_at_ms > $1 AND EXISTS (SELECT 1 FROM \
         decision_log d WHERE d.tenant = e.tenant AND d.pcs_id = e.pcs_id \
         AND d.id BETWEEN $2 AND $3){}",
        if tenant.is_some() {
            " AND e.tenant = $4"
        } else {
            ""
        }
    );
    let mut query = sqlx::query(&q).bind(now_ms).bind(oldest_id).bind(newest_id);
    if let Some(t) = tenant {
        query = query.bind(t);
    }
    query
        .fetch_all(pool)
        .await?
        .iter()
        .map(|r| {
            Ok(StoredEvidence {
                tenant: r.try_get("tenant")?,
                pcs_id: r.try_get("pcs_id")?,
                nonce: r.try_get("nonce")?,
                ciphertext: r.try_get("ciphertext")?,
                expires_at_ms: r.try_get("expires_at_ms")?,
            })
        })
        .collect()
}

/// Deletes the records whose TTL has passed; how many went.
pub async fn delete_expired(pool: &AnyPool, now_ms: i64) -> Result<u64, sqlx::Error> {
    Ok(
        sqlx::query("DELETE FROM review_evidence WHERE expires_at_ms <= $1")
            .bind(now_ms)
            .execute(pool)
            .await?
            .rows_affected(),
    )
}

/// Deletes the records of tenants that `tenants` no longer opts in (every record when it opts
/// in nobody); how many went.
pub async fn delete_not_retained(pool: &AnyPool, tenants: &Tenants) -> Result<u64, sqlx::Error> {
    let done = match tenants {
        Tenants::All => return Ok(0),
        Tenants::Only(names) if names.is_empty() => {
            sqlx::query("DELETE FROM review_evidence")
                .execute(pool)
                .await?
        }
        Tenants::Only(names) => {
            let marks: Vec<String> = (1..=names.len()).map(|i| format!("${i}")).collect();
            let q = format!(
                "DELETE FROM review_evidence WHERE tenant NOT IN ({})",
                marks.join(", ")
            );
            let mut query = sqlx::query(&q);
            for n in names {
                query = query.bind(n.as_str());
            }
            query.execute(pool).await?
        }
    };
    Ok(done.rows_affected())
}

/// Number of stored records (expired ones included, until purged).
pub async fn count(pool: &AnyPool) -> Result<i64, sqlx::Error> {
    sqlx::query("SELECT COUNT(*) AS n FROM review_evidence")
        .fetch_one(pool)
        .await?
        .try_get("n")
}
