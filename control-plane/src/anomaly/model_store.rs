//! The anomaly VAE's registry and training jobs (migration 0031).
//!
//! * `anomaly_models`: each artifact's canonical JSON, SHA-256 and Ed25519 signature by the
//!   registry's signing key ([`crate::registry::keys::sign_artifact`], as HRS artifacts are
//!   signed), and its model card. A row is checked when read: the artifact's SHA-256 must be the
//!   stored one, its signature must verify under the key's public half, and core must accept
//!   the artifact (schema, shapes); a row that fails is an integrity error, never scored with.
//!   Separate from `models` because aliases and bundles serve HRS artifacts from that table.
//! * `anomaly_jobs`: `POST /v1/anomaly/train` inserts a `running` job and trains on a blocking
//!   thread; the task beats every [`HEARTBEAT_MS`] and finishes the row `succeeded` or
//!   `failed`. A running row whose heartbeat is older than [`STALE_MS`] belongs to a process
//!   that stopped; reading it marks it failed (`interrupted`).

use crate::registry::keys;
use crate::store::{json_column, Db};
use kakeya_core::vae::VaeModel;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::Row;

/// How often a running job writes its heartbeat.
pub const HEARTBEAT_MS: u64 = 1000;
/// A running job without a heartbeat for this long was interrupted.
pub const STALE_MS: i64 = 30_000;

/// Why a stored artifact cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("anomaly model {version} failed its integrity check: {why}")]
    Integrity { version: String, why: String },
}

/// Stores a signed artifact and its card; `false` when that version is already stored (the
/// same bytes: the version is their hash).
pub async fn insert_model(
    db: &Db,
    seed: &[u8; 32],
    model: &VaeModel,
    card: &Value,
    now_ms: i64,
) -> Result<bool, sqlx::Error> {
    let bytes = model.canonical_bytes();
    let signature = keys::sign_artifact(&bytes, seed);
    let done = sqlx::query(
        "INSERT INTO anomaly_models (version, sha256, signature, artifact, card, created_at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (version) DO NOTHING",
    )
    .bind(model.version())
    .bind(model.sha256())
    .bind(signature)
    .bind(String::from_utf8_lossy(&bytes).into_owned())
    .bind(card.to_string())
    .bind(now_ms)
    .execute(&db.pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The stored artifact `version`, or the newest one when `None`, checked (see the module doc)
/// against the signing key's public half; `Ok(None)` when there is none.
pub async fn load_model(
    db: &Db,
    version: Option<&str>,
    public_key_b64: &str,
) -> Result<Option<VaeModel>, StoreError> {
    load_model_in(&mut *db.pool.acquire().await?, version, public_key_b64).await
}

/// As [`load_model`], on a connection (the bundle publisher's transaction).
pub async fn load_model_in(
    conn: &mut sqlx::AnyConnection,
    version: Option<&str>,
    public_key_b64: &str,
) -> Result<Option<VaeModel>, StoreError> {
    let row = match version {
        Some(v) => sqlx::query(
            "SELECT version, sha256, signature, artifact FROM anomaly_models WHERE version = $1",
        )
        .bind(v)
        .fetch_optional(&mut *conn)
        .await?,
        None => {
            sqlx::query(
                "SELECT version, sha256, signature, artifact FROM anomaly_models \
                 ORDER BY created_at_ms DESC, version DESC LIMIT 1",
            )
            .fetch_optional(&mut *conn)
            .await?
        }
    };
    let Some(r) = row else {
        return Ok(None);
    };
    let version: String = r.try_get("version")?;
    let sha256: String = r.try_get("sha256")?;
    let signature: String = r.try_get("signature")?;
    let artifact: String = r.try_get("artifact")?;
    let fail = |why: &str| StoreError::Integrity {
        version: version.clone(),
        why: why.to_string(),
    };
    if kakeya_core::ids::sha256_hex(artifact.as_bytes()) != sha256 {
        return Err(fail("the artifact's SHA-256 is not the stored one"));
    }
    if !keys::verify_artifact(artifact.as_bytes(), &signature, public_key_b64) {
        return Err(fail(
            "the signature does not verify under the registry's key",
        ));
    }
    let model = VaeModel::from_json(artifact.as_bytes()).map_err(|e| fail(&e.to_string()))?;
    if model.version() != version {
        return Err(fail("the artifact's version is not the stored one"));
    }
    Ok(Some(model))
}

/// The card of a stored version.
pub async fn card(db: &Db, version: &str) -> Result<Option<Value>, sqlx::Error> {
    let r = sqlx::query("SELECT card FROM anomaly_models WHERE version = $1")
        .bind(version)
        .fetch_optional(&db.pool)
        .await?;
    match r {
        Some(r) => json_column(&r, "card"),
        None => Ok(None),
    }
}

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    Running,
    Succeeded,
    Failed,
}

/// A training job as `GET /v1/anomaly/jobs/{job_id}` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Job {
    pub job_id: i64,
    pub status: JobStatus,
    /// What it trains on: `{model_type, seed, n_samples}`.
    #[schema(value_type = Object)]
    pub params: Value,
    /// Set when `succeeded`: `{model_version, val_elbo, epochs, n_train, n_ecdf, …}`.
    #[schema(value_type = Option<Object>)]
    pub result: Option<Value>,
    /// Set when `failed`: `{code, error}`.
    #[schema(value_type = Option<Object>)]
    pub error: Option<Value>,
    pub model_version: Option<String>,
    pub created_at_ms: i64,
    pub finished_at_ms: Option<i64>,
}

/// Inserts a running job; its id.
pub async fn create_job(db: &Db, params: &Value, now_ms: i64) -> Result<i64, sqlx::Error> {
    let r = sqlx::query(
        "INSERT INTO anomaly_jobs (status, params, created_at_ms, heartbeat_at_ms) \
         VALUES ('running', $1, $2, $3) RETURNING id",
    )
    .bind(params.to_string())
    .bind(now_ms)
    .bind(now_ms)
    .fetch_one(&db.pool)
    .await?;
    r.try_get("id")
}

pub async fn heartbeat(db: &Db, id: i64, now_ms: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE anomaly_jobs SET heartbeat_at_ms = $1 WHERE id = $2 AND status = 'running'",
    )
    .bind(now_ms)
    .bind(id)
    .execute(&db.pool)
    .await?;
    Ok(())
}

/// Finishes a running job: `Ok(result)` succeeded, `Err(error)` failed.
pub async fn finish_job(
    db: &Db,
    id: i64,
    outcome: Result<(Value, String), Value>,
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    let (status, result, error, version) = match outcome {
        Ok((r, v)) => ("succeeded", Some(r.to_string()), None, Some(v)),
        Err(e) => ("failed", None, Some(e.to_string()), None),
    };
    sqlx::query(
        "UPDATE anomaly_jobs SET status = $1, result = $2, error = $3, model_version = $4, \
         finished_at_ms = $5 WHERE id = $6 AND status = 'running'",
    )
    .bind(status)
    .bind(result)
    .bind(error)
    .bind(version)
    .bind(now_ms)
    .bind(id)
    .execute(&db.pool)
    .await?;
    Ok(())
}

/// The job `id` (a stale running one is marked failed first).
pub async fn job(db: &Db, id: i64, now_ms: i64) -> Result<Option<Job>, sqlx::Error> {
    let interrupted = serde_json::json!({
        "code": "interrupted",
        "error": "the process running the job stopped before it finished",
    });
    sqlx::query(
        "UPDATE anomaly_jobs SET status = 'failed', error = $1, finished_at_ms = $2 \
         WHERE id = $3 AND status = 'running' AND heartbeat_at_ms < $4",
    )
    .bind(interrupted.to_string())
    .bind(now_ms)
    .bind(id)
    .bind(now_ms - STALE_MS)
    .execute(&db.pool)
    .await?;
    let Some(r) = sqlx::query(
        "SELECT id, status, params, result, error, model_version, created_at_ms, \
         finished_at_ms FROM anomaly_jobs WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(&db.pool)
    .await?
    else {
        return Ok(None);
    };
    let status: String = r.try_get("status")?;
    let status = match status.as_str() {
        "running" => JobStatus::Running,
        "succeeded" => JobStatus::Succeeded,
        _ => JobStatus::Failed,
    };
    Ok(Some(Job {
        job_id: r.try_get("id")?,
        status,
        params: json_column(&r, "params")?.unwrap_or(Value::Null),
        result: json_column(&r, "result")?,
        error: json_column(&r, "error")?,
        model_version: r.try_get("model_version")?,
        created_at_ms: r.try_get("created_at_ms")?,
        finished_at_ms: r.try_get("finished_at_ms")?,
    }))
}
