//! Training jobs: the `training_jobs` table (migration 0012), the one job function
//! ([`execute`]) that `kakeya serve`'s runner and `kakeya hrs train` both run, and crash
//! recovery.
//!
//! Life of a job: `queued` (`POST /v1/hrs/train`, [`enqueue`]) → `running` (claimed by one
//! runner: a conditional `UPDATE … WHERE status = 'queued'`, so two control planes on one
//! database never run a job twice) → `succeeded` (result JSON, the registered version) or
//! `failed` (error JSON: the dataset's typed error with its counts, or `interrupted`). A
//! running job writes its progress (0..1) and a heartbeat every [`HEARTBEAT_MS`]; a running
//! job whose heartbeat is older than [`STALE_MS`] belongs to a process that died (crash,
//! `kill -9`, power loss) and is marked failed, `interrupted`, by the next runner sweep: at
//! start and every poll. A graceful shutdown marks the job it interrupts at once.
//!
//! On success the artifact is registered through the registry's one signed path
//! ([`registry::insert_model`], status registered, no alias moved: promotion stays an explicit
//! step); the same data and seed give the same artifact, whose version is then already
//! registered (`already_registered: true`).

use super::dataset::{self, DatasetError, TimeRange};
use super::fit::{self, FitError};
use super::{rfc3339, ModelKind, TrainingOptions};
use crate::registry::{self, RegistryError};
use crate::store::Db;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sqlx::Row;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How often a running job writes its progress and heartbeat.
pub const HEARTBEAT_MS: u64 = 1000;
/// A running job without a heartbeat for this long was interrupted.
pub const STALE_MS: i64 = 30_000;
/// How often an idle runner looks for queued jobs (and stale running ones).
pub const POLL_MS: u64 = 1000;
/// Most jobs waiting at once; [`enqueue`] refuses more.
pub const MAX_QUEUED: i64 = 64;

/// Where a job is.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Option<JobStatus> {
        [
            JobStatus::Queued,
            JobStatus::Running,
            JobStatus::Succeeded,
            JobStatus::Failed,
        ]
        .into_iter()
        .find(|j| j.as_str() == s)
    }
}

/// What a job trains on and with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobParams {
    /// Start of the range (inclusive), RFC 3339 UTC.
    pub start_time: String,
    /// End of the range (exclusive), RFC 3339 UTC.
    pub end_time: String,
    pub start_ms: i64,
    pub end_ms: i64,
    pub model_kind: ModelKind,
    /// Seed of the calibration split and the bootstrap.
    pub seed: u64,
}

impl JobParams {
    pub fn new(start_ms: i64, end_ms: i64, model_kind: ModelKind, seed: u64) -> JobParams {
        JobParams {
            start_time: rfc3339(start_ms),
            end_time: rfc3339(end_ms),
            start_ms,
            end_ms,
            model_kind,
            seed,
        }
    }

    pub fn range(&self) -> TimeRange {
        TimeRange {
            start_ms: self.start_ms,
            end_ms: self.end_ms,
        }
    }
}

/// A job as `GET /v1/hrs/jobs/{job_id}` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Job {
    pub job_id: i64,
    pub status: JobStatus,
    /// 0..1.
    pub progress: f64,
    pub params: JobParams,
    /// Set when `succeeded`: version, dataset hash and sizes, time range, validation metrics
    /// with 95 % intervals, duration.
    #[schema(value_type = Option<Object>)]
    pub result: Option<Value>,
    /// Set when `failed`: `{code, error, …counts}`.
    #[schema(value_type = Option<Object>)]
    pub error: Option<Value>,
    /// The version registered by a succeeded job.
    pub model_version: Option<String>,
    pub created_at_ms: i64,
    pub started_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
}

/// Why a job failed (its `error` JSON: [`JobError::to_json`]).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Dataset(#[from] DatasetError),
    #[error(transparent)]
    Fit(#[from] FitError),
    #[error("registering the trained model failed: {0}")]
    Registry(String),
    #[error("database: {0}")]
    Store(String),
    /// The process running it stopped (crash, kill, shutdown).
    #[error("interrupted: {0}")]
    Interrupted(String),
    /// The fit panicked (a bug): the job fails, the server does not.
    #[error("internal error: {0}")]
    Internal(String),
}

impl JobError {
    pub fn code(&self) -> &'static str {
        match self {
            JobError::Dataset(e) => e.code(),
            JobError::Fit(_) => "fit_failed",
            JobError::Registry(_) => "registry_failed",
            JobError::Store(_) => "store_unavailable",
            JobError::Interrupted(_) => "interrupted",
            JobError::Internal(_) => "internal",
        }
    }

    pub fn to_json(&self) -> Value {
        match self {
            JobError::Dataset(e) => e.to_json(),
            e => json!({"code": e.code(), "error": e.to_string()}),
        }
    }
}

impl From<sqlx::Error> for JobError {
    fn from(e: sqlx::Error) -> Self {
        JobError::Store(e.to_string())
    }
}

/// Progress callback (0..1), callable from the blocking fit thread.
pub type Progress = Arc<dyn Fn(f64) + Send + Sync>;

/// Runs one training job: dataset → fit and measure (on a blocking thread) → register.
/// Returns the result JSON (see [`Job::result`]).
pub async fn execute(
    db: &Db,
    signing_seed: &[u8; 32],
    params: &JobParams,
    opts: &TrainingOptions,
    progress: Progress,
) -> Result<Value, JobError> {
    let t0 = Instant::now();
    progress(0.0);
    let ds = dataset::build(db, params.range(), opts).await?;
    progress(0.1);
    let (kind, seed, opts_owned) = (params.model_kind, params.seed, *opts);
    let p = progress.clone();
    let (trained, ds) = tokio::task::spawn_blocking(move || {
        let mut scaled = |f: f64| p(0.1 + 0.8 * f);
        fit::train(kind, &ds, seed, &opts_owned, &mut scaled).map(|t| (t, ds))
    })
    .await
    .map_err(|e| JobError::Internal(format!("the fit did not finish: {e}")))??;
    progress(0.9);
    let already_registered = match registry::insert_model(
        db,
        signing_seed,
        &trained.model,
        &trained.card,
        crate::now_ms(),
    )
    .await
    {
        Ok(_) => false,
        Err(RegistryError::Exists(_)) => true,
        Err(RegistryError::Store(e)) => return Err(e.into()),
        Err(e) => return Err(JobError::Registry(e.to_string())),
    };
    // Deterministic from the same data: a retry (or an identical version) stores the same bytes.
    registry::reference::store(
        db,
        &trained.model.version(),
        &trained.reference,
        crate::now_ms(),
    )
    .await?;
    let summary = ds.summary();
    let result = json!({
        "version": trained.model.version(),
        "sha256": trained.model.sha256(),
        "status": "registered",
        "already_registered": already_registered,
        "model_kind": kind,
        "seed": seed,
        "dataset_hash": ds.sha256,
        "n_samples": ds.rows.len(),
        "n_train": ds.split.train.len(),
        "n_validation": ds.split.validation.len(),
        "validation_duplicates_dropped": ds.split.validation_duplicates,
        "positive_ratio": ds.positive_ratio(),
        "class_balance": {"train": summary["train"], "validation": summary["validation"]},
        "time_range": {
            "start_time": params.start_time,
            "end_time": params.end_time,
            "start_ms": params.start_ms,
            "end_ms": params.end_ms,
            "split_at_time": rfc3339(ds.split.split_at_ms),
            "split_at_ms": ds.split.split_at_ms,
        },
        "escalate_threshold": trained.holdout.threshold,
        "metrics": trained.holdout.metrics,
        "bootstrap": {
            "resamples": trained.holdout.bootstrap.resamples,
            "seed": trained.holdout.bootstrap.seed,
            "level": trained.holdout.bootstrap.level,
        },
        "drift_reference_sha256": trained.reference.sha256(),
        "duration_ms": u64::try_from(t0.elapsed().as_millis()).unwrap_or(u64::MAX),
    });
    progress(1.0);
    Ok(result)
}

const JOB_COLUMNS: &str = "id, status, progress, params, result, error, model_version, \
                           created_at_ms, started_at_ms, finished_at_ms";

fn row_to_job(r: &sqlx::any::AnyRow) -> Result<Job, sqlx::Error> {
    let bad = |col: &str, why: String| sqlx::Error::ColumnDecode {
        index: col.into(),
        source: why.into(),
    };
    let json_col = |col: &str| crate::store::json_column(r, col);
    let status: String = r.try_get("status")?;
    let params: String = r.try_get("params")?;
    Ok(Job {
        job_id: r.try_get("id")?,
        status: JobStatus::parse(&status).ok_or_else(|| bad("status", status.clone()))?,
        progress: r.try_get("progress")?,
        params: serde_json::from_str(&params).map_err(|e| bad("params", e.to_string()))?,
        result: json_col("result")?,
        error: json_col("error")?,
        model_version: r.try_get("model_version")?,
        created_at_ms: r.try_get("created_at_ms")?,
        started_at_ms: r.try_get("started_at_ms")?,
        finished_at_ms: r.try_get("finished_at_ms")?,
    })
}

/// Why [`enqueue`] refused.
#[derive(Debug, thiserror::Error)]
pub enum EnqueueError {
    #[error("{queued} training jobs are already queued (at most {MAX_QUEUED}); wait for them")]
    QueueFull { queued: i64 },
    #[error("database: {0}")]
    Store(#[from] sqlx::Error),
}

/// Queues a job; its id.
pub async fn enqueue(db: &Db, params: &JobParams, now_ms: i64) -> Result<i64, EnqueueError> {
    let queued: i64 =
        sqlx::query("SELECT COUNT(*) AS n FROM training_jobs WHERE status = 'queued'")
            .fetch_one(&db.pool)
            .await?
            .try_get("n")?;
    if queued >= MAX_QUEUED {
        return Err(EnqueueError::QueueFull { queued });
    }
    insert(db, params, JobStatus::Queued, now_ms)
        .await
        .map_err(Into::into)
}

/// A job that is running from the start, for a caller that runs it itself
/// (`kakeya hrs train`); its id.
pub async fn create_running(db: &Db, params: &JobParams, now_ms: i64) -> Result<i64, sqlx::Error> {
    insert(db, params, JobStatus::Running, now_ms).await
}

async fn insert(
    db: &Db,
    params: &JobParams,
    status: JobStatus,
    now_ms: i64,
) -> Result<i64, sqlx::Error> {
    let text = serde_json::to_string(params).map_err(|e| sqlx::Error::Encode(e.into()))?;
    // A running job starts now and has a heartbeat; a queued one has neither (SQL NULL, not a
    // bound NULL: see `store::decision_log::insert` on the Any driver's NULL types).
    let (started, beat) = match status {
        JobStatus::Running => ("$4", "$5"),
        _ => ("NULL", "NULL"),
    };
    let q = format!(
        "INSERT INTO training_jobs (status, progress, params, created_at_ms, started_at_ms, \
         heartbeat_at_ms) VALUES ($1, 0.0, $2, $3, {started}, {beat}) RETURNING id"
    );
    let mut q = sqlx::query_scalar::<_, i64>(&q)
        .bind(status.as_str())
        .bind(text)
        .bind(now_ms);
    if status == JobStatus::Running {
        q = q.bind(now_ms).bind(now_ms);
    }
    q.fetch_one(&db.pool).await
}

/// The job `id`.
pub async fn get(db: &Db, id: i64) -> Result<Option<Job>, sqlx::Error> {
    sqlx::query(&format!(
        "SELECT {JOB_COLUMNS} FROM training_jobs WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(&db.pool)
    .await?
    .as_ref()
    .map(row_to_job)
    .transpose()
}

/// Up to `limit` jobs with an id below `before_id`, newest first, optionally of one status.
pub async fn page(
    db: &Db,
    status: Option<JobStatus>,
    before_id: Option<i64>,
    limit: i64,
) -> Result<Vec<Job>, sqlx::Error> {
    let filter = if status.is_some() {
        " AND status = $3"
    } else {
        ""
    };
    let q = format!(
        "SELECT {JOB_COLUMNS} FROM training_jobs WHERE id < $1{filter} ORDER BY id DESC LIMIT $2"
    );
    let mut query = sqlx::query(&q)
        .bind(before_id.unwrap_or(i64::MAX))
        .bind(limit);
    if let Some(s) = status {
        query = query.bind(s.as_str());
    }
    query
        .fetch_all(&db.pool)
        .await?
        .iter()
        .map(row_to_job)
        .collect()
}

/// Claims the oldest queued job for this runner (see the module docs).
pub async fn claim_next(db: &Db, now_ms: i64) -> Result<Option<Job>, sqlx::Error> {
    loop {
        let id: Option<i64> = sqlx::query_scalar(
            "SELECT id FROM training_jobs WHERE status = 'queued' ORDER BY id LIMIT 1",
        )
        .fetch_optional(&db.pool)
        .await?;
        let Some(id) = id else { return Ok(None) };
        if claim(db, id, now_ms).await? {
            return get(db, id).await;
        }
        // Another runner took it: try the next one.
    }
}

/// Claims the queued job `id` for this caller (the scheduler runs the job it queued itself
/// when no runner was quicker); false when it is no longer queued.
pub async fn claim(db: &Db, id: i64, now_ms: i64) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE training_jobs SET status = 'running', started_at_ms = $1, \
         heartbeat_at_ms = $2 WHERE id = $3 AND status = 'queued'",
    )
    .bind(now_ms)
    .bind(now_ms)
    .bind(id)
    .execute(&db.pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

async fn heartbeat(db: &Db, id: i64, progress: f64, now_ms: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE training_jobs SET progress = $1, heartbeat_at_ms = $2 \
         WHERE id = $3 AND status = 'running'",
    )
    .bind(progress.clamp(0.0, 1.0))
    .bind(now_ms)
    .bind(id)
    .execute(&db.pool)
    .await
    .map(|_| ())
}

/// Records the outcome of a running job (nothing when it is no longer running, e.g. a sweep
/// marked it interrupted meanwhile).
pub async fn finish(
    db: &Db,
    id: i64,
    outcome: &Result<Value, JobError>,
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    match outcome {
        Ok(result) => {
            sqlx::query(
                "UPDATE training_jobs SET status = 'succeeded', progress = 1.0, result = $1, \
                 model_version = $2, finished_at_ms = $3 WHERE id = $4 AND status = 'running'",
            )
            .bind(result.to_string())
            .bind(result["version"].as_str().unwrap_or_default().to_string())
            .bind(now_ms)
            .bind(id)
            .execute(&db.pool)
            .await?
        }
        Err(e) => {
            sqlx::query(
                "UPDATE training_jobs SET status = 'failed', error = $1, finished_at_ms = $2 \
                 WHERE id = $3 AND status = 'running'",
            )
            .bind(e.to_json().to_string())
            .bind(now_ms)
            .bind(id)
            .execute(&db.pool)
            .await?
        }
    };
    Ok(())
}

/// Marks failed (`interrupted`) every running job whose heartbeat is older than `stale_ms`;
/// how many.
pub async fn recover_interrupted(db: &Db, now_ms: i64, stale_ms: i64) -> Result<u64, sqlx::Error> {
    let e = JobError::Interrupted(
        "the process running the job stopped (crash, kill or power loss) before it finished; \
         submit it again"
            .into(),
    );
    let done = sqlx::query(
        "UPDATE training_jobs SET status = 'failed', error = $1, finished_at_ms = $2 \
         WHERE status = 'running' AND (heartbeat_at_ms IS NULL OR heartbeat_at_ms < $3)",
    )
    .bind(e.to_json().to_string())
    .bind(now_ms)
    .bind(now_ms.saturating_sub(stale_ms))
    .execute(&db.pool)
    .await?;
    Ok(done.rows_affected())
}

/// Aborts a task when dropped (a job future dropped mid-way must not leave its heartbeat
/// running).
pub(crate) struct AbortOnDrop(pub(crate) JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs the running job `id` to its end: [`execute`] with heartbeats, then [`finish`].
/// `on_progress` also sees every progress value (the CLI's bar). Returns the finished job.
pub async fn run(
    db: &Db,
    signing_seed: &[u8; 32],
    id: i64,
    params: &JobParams,
    opts: &TrainingOptions,
    on_progress: Option<Progress>,
) -> Result<Job, sqlx::Error> {
    let (tx, rx) = watch::channel(0.0f64);
    let progress: Progress = Arc::new(move |p| {
        tx.send_replace(p);
        if let Some(cb) = &on_progress {
            cb(p);
        }
    });
    let beat = {
        let db = db.clone();
        AbortOnDrop(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(HEARTBEAT_MS));
            loop {
                tick.tick().await;
                let p = *rx.borrow();
                if let Err(e) = heartbeat(&db, id, p, crate::now_ms()).await {
                    tracing::warn!(job = id, error = %e, "training job heartbeat failed");
                }
            }
        }))
    };
    let outcome = execute(db, signing_seed, params, opts, progress).await;
    drop(beat);
    match &outcome {
        Ok(r) => tracing::info!(job = id, version = %r["version"], "training job succeeded"),
        Err(e) => tracing::warn!(job = id, code = e.code(), error = %e, "training job failed"),
    }
    finish(db, id, &outcome, crate::now_ms()).await?;
    get(db, id).await?.ok_or(sqlx::Error::RowNotFound)
}

/// Resolves once `stop` is true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|v| *v).await;
}

/// `kakeya serve`'s runner: sweeps interrupted jobs, then runs queued jobs one at a time
/// until `stop` turns true; a job running at that moment is marked failed (`interrupted`).
pub async fn runner(
    db: Db,
    signing_seed: [u8; 32],
    opts: TrainingOptions,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        if *stop.borrow() {
            return;
        }
        match recover_interrupted(&db, crate::now_ms(), STALE_MS).await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(jobs = n, "marked interrupted training jobs failed"),
            Err(e) => tracing::warn!(error = %e, "training job sweep failed"),
        }
        match claim_next(&db, crate::now_ms()).await {
            Ok(Some(job)) => {
                tracing::info!(job = job.job_id, params = ?job.params, "training job started");
                let work = run(&db, &signing_seed, job.job_id, &job.params, &opts, None);
                tokio::select! {
                    r = work => if let Err(e) = r {
                        tracing::warn!(job = job.job_id, error = %e, "cannot record the training job's outcome");
                    },
                    _ = stopped(&mut stop) => {
                        let e = JobError::Interrupted("the control plane shut down while the job ran; submit it again".into());
                        let _ = finish(&db, job.job_id, &Err(e), crate::now_ms()).await;
                        return;
                    }
                }
                continue;
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "cannot claim a training job"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(POLL_MS)) => {}
            _ = stopped(&mut stop) => return,
        }
    }
}

/// Why [`registered_version`] has no version.
#[derive(Debug, thiserror::Error)]
pub enum RegisteredVersionError {
    #[error("no training job {0}")]
    NoJob(i64),
    #[error("training job {job_id} is {status}, not succeeded: it registered no model")]
    NotSucceeded { job_id: i64, status: &'static str },
    #[error("database: {0}")]
    Store(#[from] sqlx::Error),
}

/// The version a succeeded job registered (what `POST /v1/hrs/register {job_id}` answers
/// with): the job must exist and have succeeded.
pub async fn registered_version(db: &Db, job_id: i64) -> Result<String, RegisteredVersionError> {
    let job = get(db, job_id)
        .await?
        .ok_or(RegisteredVersionError::NoJob(job_id))?;
    match (job.status, job.model_version) {
        (JobStatus::Succeeded, Some(v)) if !v.is_empty() => Ok(v),
        (status, _) => Err(RegisteredVersionError::NotSucceeded {
            job_id,
            status: status.as_str(),
        }),
    }
}
