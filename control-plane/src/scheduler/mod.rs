//! Scheduled retraining and the auto-deploy gate.
//!
//! A **run** trains a candidate on the decisions of `[start − train_window, start)` and
//! decides whether it replaces the champion:
//!
//! 1. it queues a training job through the one path ([`jobs::enqueue`]) and runs it itself
//!    when no runner claimed it first ([`jobs::claim`]), else follows it to its end;
//! 2. a failed job is the run's outcome: `dataset_error` (too few labels, one class, … with
//!    the dataset's counts) or `training_failed`;
//! 3. a succeeded job registered a candidate: the run rebuilds the job's dataset (same range,
//!    same options: the same rows, checked by the dataset hash), scores the validation rows
//!    with the candidate and with the champion, and evaluates the gate ([`gate::evaluate`]);
//! 4. pass and `auto_deploy`: the candidate becomes the champion through
//!    [`registry::move_alias`] (bundle republished, history reason `gate`, actor `scheduler`,
//!    the gate's values in the comment): `deployed`. Pass without `auto_deploy`, or while an
//!    A/B experiment runs (a promotion would end it), or when the candidate is the champion
//!    already: `gate_passed`, nothing moves. Fail: `gate_failed` with the failing checks.
//!
//! Runs are rows of `scheduler_runs` (migration 0015, [`store`]). A **scheduled** run is the
//! run of one period (`retrain_every`, periods aligned to the Unix epoch): the leader of lease
//! [`LEASE`] looks every [`CHECK_EVERY`] whether the current period has its run, and claims it
//! with an insert that a unique index admits once per period, so neither a restart nor a
//! second replica retrains twice for one period. A **manual** run (`POST
//! /v1/hrs/scheduler/run`, `kakeya hrs schedule run`) has no period. One run is in progress at
//! a time (another unique index): a second claim is refused (409). A running run writes a
//! heartbeat; one whose heartbeat is older than [`jobs::STALE_MS`] belonged to a process that
//! died and is finished as `interrupted` by the next claim.
//!
//! Drift checks and auto-revert are not here.

pub mod api;
pub mod config;
pub mod gate;
pub mod store;
#[cfg(test)]
mod tests;

pub use config::SchedulerConfig;

use crate::learn::dataset::{self, DatasetError};
use crate::learn::jobs::{self, AbortOnDrop, EnqueueError, Job, JobParams, JobStatus, Progress};
use crate::learn::{rfc3339, TrainingOptions};
use crate::lease::LeaseStatus;
use crate::registry::{self, keys, Actor, Reason, RegistryError, Why, CHAMPION};
use crate::store::{Backend, Db};
use prometheus::{IntCounterVec, Opts};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use store::Finish;

/// The leader lease of scheduled retraining.
pub const LEASE: &str = "scheduled-retrain";
/// How often the leader looks whether the current period has its run.
pub const CHECK_EVERY: Duration = Duration::from_secs(30);
/// How often a run that follows a job run elsewhere reads it.
const FOLLOW_POLL: Duration = Duration::from_millis(500);

/// What a run needs besides the database and the signing key.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Settings {
    pub config: SchedulerConfig,
    /// `[training]`: what the training job builds its dataset with (and the gate rebuilds it).
    pub training: TrainingOptions,
}

/// What started a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RunTrigger {
    /// The leader's run of a period.
    Schedule,
    /// `POST /v1/hrs/scheduler/run` or `kakeya hrs schedule run`.
    Manual,
}

impl RunTrigger {
    pub fn as_str(self) -> &'static str {
        match self {
            RunTrigger::Schedule => "schedule",
            RunTrigger::Manual => "manual",
        }
    }

    fn parse(s: &str) -> Option<RunTrigger> {
        [RunTrigger::Schedule, RunTrigger::Manual]
            .into_iter()
            .find(|t| t.as_str() == s)
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunOutcome {
    /// The candidate passed the gate and is the champion now.
    Deployed,
    /// The candidate passed the gate and was not promoted (auto_deploy off, an A/B experiment
    /// running, or it is the champion already: `detail.not_deployed` says which).
    GatePassed,
    /// The candidate failed the gate (`detail.failed_checks`).
    GateFailed,
    /// The range had too little to train on (`detail.error`, with the dataset's counts).
    DatasetError,
    /// The training job failed for another reason (`detail.error`).
    TrainingFailed,
    /// The run itself failed (database, registry): `detail.code`, `detail.error`.
    Error,
    /// Its process stopped before it finished.
    Interrupted,
}

impl RunOutcome {
    pub const ALL: [RunOutcome; 7] = [
        RunOutcome::Deployed,
        RunOutcome::GatePassed,
        RunOutcome::GateFailed,
        RunOutcome::DatasetError,
        RunOutcome::TrainingFailed,
        RunOutcome::Error,
        RunOutcome::Interrupted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RunOutcome::Deployed => "deployed",
            RunOutcome::GatePassed => "gate_passed",
            RunOutcome::GateFailed => "gate_failed",
            RunOutcome::DatasetError => "dataset_error",
            RunOutcome::TrainingFailed => "training_failed",
            RunOutcome::Error => "error",
            RunOutcome::Interrupted => "interrupted",
        }
    }

    fn parse(s: &str) -> Option<RunOutcome> {
        RunOutcome::ALL.into_iter().find(|o| o.as_str() == s)
    }
}

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Running,
    Finished,
}

/// A run as `GET /v1/hrs/scheduler/runs` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SchedulerRun {
    pub run_id: i64,
    pub trigger: RunTrigger,
    /// The period of a scheduled run (epoch ms of its start); `null` for a manual run.
    pub period_start_ms: Option<i64>,
    pub status: RunStatus,
    /// Set when finished.
    pub outcome: Option<RunOutcome>,
    /// What it ran with: `job` (the training job's parameters: range, model kind, seed),
    /// `train_window`, `auto_deploy`, `gate` (thresholds).
    #[schema(value_type = Object)]
    pub params: Value,
    /// Its training job (`GET /v1/hrs/jobs/{job_id}`).
    pub job_id: Option<i64>,
    /// The version the job registered.
    pub candidate_version: Option<String>,
    /// The champion the candidate was compared with.
    pub champion_version: Option<String>,
    /// The gate's report ([`gate::GateReport`]): every check with its value and threshold.
    #[schema(value_type = Option<Object>)]
    pub gate: Option<Value>,
    /// What else the outcome says: the job's error with its counts, the failing checks, why
    /// a pass was not deployed, the bundle and history entry of a deployment.
    #[schema(value_type = Option<Object>)]
    pub detail: Option<Value>,
    pub started_at_ms: i64,
    pub heartbeat_at_ms: i64,
    pub finished_at_ms: Option<i64>,
}

/// `kakeya_scheduler_runs_total{outcome}`: finished scheduler runs by outcome. Process-wide
/// (runs also happen in `kakeya hrs schedule run`); every [`crate::metrics::Metrics`] registry
/// exports it.
pub fn runs_total() -> &'static IntCounterVec {
    static C: std::sync::OnceLock<IntCounterVec> = std::sync::OnceLock::new();
    C.get_or_init(|| {
        IntCounterVec::new(
            Opts::new(
                "kakeya_scheduler_runs_total",
                "Finished retraining-scheduler runs by outcome (deployed, gate_passed, \
                 gate_failed, dataset_error, training_failed, error, interrupted)",
            ),
            &["outcome"],
        )
        .expect("a valid metric name and label")
    })
}

/// `kakeya_gate_checks_total{check,result}`: auto-deploy gate checks evaluated
/// (check = auroc_floor | auroc_drop | ece_ceiling, result = pass | fail).
pub fn gate_checks_total() -> &'static IntCounterVec {
    static C: std::sync::OnceLock<IntCounterVec> = std::sync::OnceLock::new();
    C.get_or_init(|| {
        IntCounterVec::new(
            Opts::new(
                "kakeya_gate_checks_total",
                "Auto-deploy gate checks evaluated by the retraining scheduler, by check and \
                 result",
            ),
            &["check", "result"],
        )
        .expect("a valid metric name and label")
    })
}

/// The parameters a run records when claimed: its training job's, the window, the gate.
fn run_params(s: &Settings, now_ms: i64) -> Value {
    let c = &s.config;
    let job = JobParams::new(
        now_ms.saturating_sub(c.train_window_ms),
        now_ms,
        c.model_kind,
        crate::ml::eval::DEFAULT_SEED,
    );
    json!({
        "job": job,
        "train_window": c.train_window,
        "auto_deploy": c.auto_deploy,
        "gate": c.gate,
    })
}

/// What a claim found.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// This caller runs it: [`execute`] it.
    Started(i64),
    /// The current period has its run already (scheduled claims only).
    PeriodDone(Box<SchedulerRun>),
    /// Another run is in progress.
    Busy(Box<SchedulerRun>),
}

/// Claims a run (see the module docs): first finishes stale runs as `interrupted`, then
/// inserts a running row, for the period of `now_ms` when `trigger` is the schedule.
pub async fn claim(
    db: &Db,
    s: &Settings,
    trigger: RunTrigger,
    now_ms: i64,
) -> Result<Claim, sqlx::Error> {
    let stale = store::recover_interrupted(&db.pool, now_ms, jobs::STALE_MS).await?;
    for _ in 0..stale {
        runs_total()
            .with_label_values(&[RunOutcome::Interrupted.as_str()])
            .inc();
    }
    let period = (trigger == RunTrigger::Schedule).then(|| s.config.period_start(now_ms));
    let params = run_params(s, now_ms);
    // A refused insert names its reason by the rows it collided with; the one in progress
    // may finish in between, so look again a few times.
    for _ in 0..5 {
        if let Some(id) = store::insert_running(&db.pool, trigger, period, &params, now_ms).await? {
            return Ok(Claim::Started(id));
        }
        if let Some(p) = period {
            if let Some(r) = store::of_period(&db.pool, p).await? {
                return Ok(Claim::PeriodDone(Box::new(r)));
            }
        }
        if let Some(r) = store::running(&db.pool).await? {
            return Ok(Claim::Busy(Box::new(r)));
        }
    }
    Err(sqlx::Error::Protocol(
        "the scheduler run could not be claimed: concurrent claims kept colliding".into(),
    ))
}

/// The leader's periodic step: claims the current period's run and executes it when the
/// period has none; the finished run, or `None` when nothing was due.
pub async fn tick(
    db: &Db,
    seed: &[u8; 32],
    s: &Settings,
    now_ms: i64,
) -> Result<Option<SchedulerRun>, sqlx::Error> {
    match claim(db, s, RunTrigger::Schedule, now_ms).await? {
        Claim::Started(id) => execute(db, seed, s, id, None).await.map(Some),
        Claim::PeriodDone(_) | Claim::Busy(_) => Ok(None),
    }
}

/// Why a step of a run stopped it: the outcome and the detail JSON.
struct Stop(Finish);

impl Stop {
    fn error(code: &str, error: impl std::fmt::Display) -> Stop {
        Stop(Finish {
            outcome: RunOutcome::Error,
            candidate_version: None,
            champion_version: None,
            gate: None,
            detail: json!({"code": code, "error": error.to_string()}),
        })
    }
}

impl From<sqlx::Error> for Stop {
    fn from(e: sqlx::Error) -> Self {
        Stop::error("store_unavailable", e)
    }
}

impl From<RegistryError> for Stop {
    fn from(e: RegistryError) -> Self {
        let code = match &e {
            RegistryError::Integrity(_) => "integrity_failure",
            RegistryError::Store(_) => "store_unavailable",
            _ => "registry_failed",
        };
        Stop::error(code, e)
    }
}

/// Runs the claimed run `run_id` to its end (module docs) with a heartbeat, records its
/// outcome and returns it. `progress` (0..1) sees the training job's progress, then the gate.
/// A failure of a step is the run's recorded outcome (`error`), not an `Err`; `Err` only when
/// the outcome itself cannot be recorded.
pub async fn execute(
    db: &Db,
    seed: &[u8; 32],
    s: &Settings,
    run_id: i64,
    progress: Option<Progress>,
) -> Result<SchedulerRun, sqlx::Error> {
    let beat = {
        let pool = db.pool.clone();
        AbortOnDrop(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(jobs::HEARTBEAT_MS));
            loop {
                tick.tick().await;
                if let Err(e) = store::heartbeat(&pool, run_id, crate::now_ms()).await {
                    tracing::warn!(run = run_id, error = %e, "scheduler run heartbeat failed");
                }
            }
        }))
    };
    let progress = progress.unwrap_or_else(|| Arc::new(|_| {}));
    let finish = match steps(db, seed, s, run_id, &progress).await {
        Ok(f) | Err(Stop(f)) => f,
    };
    drop(beat);
    if store::finish(&db.pool, run_id, &finish, crate::now_ms()).await? {
        runs_total()
            .with_label_values(&[finish.outcome.as_str()])
            .inc();
    }
    progress(1.0);
    let run = store::get(&db.pool, run_id)
        .await?
        .ok_or(sqlx::Error::RowNotFound)?;
    tracing::info!(
        run = run_id,
        outcome = run.outcome.map(RunOutcome::as_str).unwrap_or("?"),
        candidate = run.candidate_version.as_deref().unwrap_or("-"),
        "scheduler run finished"
    );
    Ok(run)
}

/// The job of a run, run here when no runner claimed it first, else followed to its end.
async fn train(
    db: &Db,
    seed: &[u8; 32],
    s: &Settings,
    run_id: i64,
    params: &JobParams,
    progress: &Progress,
) -> Result<Job, Stop> {
    let job_id = match jobs::enqueue(db, params, crate::now_ms()).await {
        Ok(id) => id,
        Err(e @ EnqueueError::QueueFull { .. }) => return Err(Stop::error("queue_full", e)),
        Err(EnqueueError::Store(e)) => return Err(e.into()),
    };
    store::set_job(&db.pool, run_id, job_id).await?;
    let p = progress.clone();
    let scaled: Progress = Arc::new(move |x| p(0.9 * x));
    if jobs::claim(db, job_id, crate::now_ms()).await? {
        return Ok(jobs::run(db, seed, job_id, params, &s.training, Some(scaled)).await?);
    }
    loop {
        // No runner may be left to sweep a job whose process died: sweep it here too.
        jobs::recover_interrupted(db, crate::now_ms(), jobs::STALE_MS).await?;
        let job = jobs::get(db, job_id)
            .await?
            .ok_or_else(|| Stop::error("job_missing", format!("training job {job_id} vanished")))?;
        if matches!(job.status, JobStatus::Succeeded | JobStatus::Failed) {
            return Ok(job);
        }
        scaled(job.progress);
        tokio::time::sleep(FOLLOW_POLL).await;
    }
}

/// The steps of a run after its claim (module docs).
async fn steps(
    db: &Db,
    seed: &[u8; 32],
    s: &Settings,
    run_id: i64,
    progress: &Progress,
) -> Result<Finish, Stop> {
    let run = store::get(&db.pool, run_id)
        .await?
        .ok_or_else(|| Stop::error("run_missing", format!("scheduler run {run_id} vanished")))?;
    let params: JobParams = serde_json::from_value(run.params["job"].clone())
        .map_err(|e| Stop::error("bad_params", e))?;
    let job = train(db, seed, s, run_id, &params, progress).await?;
    let job_id = job.job_id;
    let (result, error) = match (job.status, job.result, job.error) {
        (JobStatus::Succeeded, Some(r), _) => (r, None),
        (_, _, e) => (
            Value::Null,
            Some(e.unwrap_or_else(|| json!({"code": "unknown"}))),
        ),
    };
    if let Some(error) = error {
        let code = error["code"].as_str().unwrap_or_default();
        let outcome = if DatasetError::DATA_CODES.contains(&code) {
            RunOutcome::DatasetError
        } else {
            RunOutcome::TrainingFailed
        };
        return Ok(Finish {
            outcome,
            candidate_version: None,
            champion_version: None,
            gate: None,
            detail: json!({"job_id": job_id, "error": error}),
        });
    }
    let candidate = result["version"].as_str().unwrap_or_default().to_string();
    let scored = score_validation(db, seed, s, &params, &result, &candidate).await?;
    let report = gate::evaluate(
        &s.config.gate,
        &scored.candidate,
        scored.champion.as_ref().map(|(_, c)| c.as_slice()),
        &scored.labels,
    );
    progress(0.95);
    for c in &report.checks {
        let result = if c.passed { "pass" } else { "fail" };
        gate_checks_total()
            .with_label_values(&[c.check.as_str(), result])
            .inc();
    }
    let champion_version = scored.champion.map(|(v, _)| v);
    let gate_json = serde_json::to_value(&report).map_err(|e| Stop::error("internal", e))?;
    let mut finish = Finish {
        outcome: RunOutcome::GateFailed,
        candidate_version: Some(candidate.clone()),
        champion_version: champion_version.clone(),
        gate: Some(gate_json),
        detail: json!({"job_id": job_id, "dataset_hash": result["dataset_hash"]}),
    };
    if !report.passed {
        finish.detail["failed_checks"] = json!(report.failed());
        return Ok(finish);
    }
    finish.outcome = RunOutcome::GatePassed;
    let not_deployed = if !s.config.auto_deploy {
        Some("auto_deploy is off".to_string())
    } else if champion_version.as_deref() == Some(candidate.as_str()) {
        Some(format!("{candidate} is the champion already"))
    } else if let Some(e) = crate::ab::store::active(&db.pool).await? {
        Some(format!(
            "A/B experiment {} is running (a promotion would end it); promote by hand or stop it",
            e.id
        ))
    } else {
        None
    };
    if let Some(why) = not_deployed {
        finish.detail["not_deployed"] = json!(why);
        return Ok(finish);
    }
    let mut comment = format!(
        "auto-deploy gate passed (scheduler run {run_id}, training job {job_id}, {} validation \
         decisions): {}",
        report.n_validation,
        report.summary()
    );
    if let Some((i, _)) = comment
        .char_indices()
        .nth(registry::history::MAX_COMMENT_CHARS)
    {
        comment.truncate(i);
    }
    let why = Why {
        actor: Actor::Scheduler,
        reason: Reason::Gate,
        comment: Some(comment),
    };
    let published =
        registry::move_alias(db, seed, CHAMPION, &candidate, None, &why, crate::now_ms()).await?;
    finish.outcome = RunOutcome::Deployed;
    finish.detail["bundle_version"] = json!(published.bundle_version);
    finish.detail["history_id"] = json!(published.moved.map(|m| m.id));
    Ok(finish)
}

/// The job's validation rows scored by the candidate and by the champion (if any, with its
/// version).
struct Scored {
    labels: Vec<u8>,
    candidate: Vec<f64>,
    champion: Option<(String, Vec<f64>)>,
}

/// Rebuilds the job's dataset (the same rows: the dataset hash must match) and scores its
/// validation rows with the candidate and with the champion.
async fn score_validation(
    db: &Db,
    seed: &[u8; 32],
    s: &Settings,
    params: &JobParams,
    result: &Value,
    candidate: &str,
) -> Result<Scored, Stop> {
    let ds = dataset::build(db, params.range(), &s.training)
        .await
        .map_err(|e| Stop::error(e.code(), e))?;
    let trained_on = result["dataset_hash"].as_str().unwrap_or_default();
    if ds.sha256 != trained_on {
        return Err(Stop::error(
            "dataset_changed",
            format!(
                "the range's dataset changed after training (labels added or changed): trained \
                 on {trained_on}, now {}; the next run trains on the new one",
                ds.sha256
            ),
        ));
    }
    let x = ds.matrix();
    let n = kakeya_core::features::N_FEATURES;
    let v: Vec<f64> = ds
        .split
        .validation
        .iter()
        .flat_map(|&i| x[i * n..(i + 1) * n].iter().copied())
        .collect();
    let labels: Vec<u8> = ds
        .split
        .validation
        .iter()
        .map(|&i| ds.rows[i].label)
        .collect();
    let key = keys::public_key_b64(seed);
    let model = registry::verified_model(db, candidate, &key).await?;
    let candidate_scores = crate::ml::eval::score_matrix(&v, &model);
    let champion = {
        let mut conn = db.pool.acquire().await?;
        registry::aliases(&mut conn)
            .await?
            .into_iter()
            .find(|a| a.alias == CHAMPION)
            .map(|a| a.version)
    };
    let champion = match champion {
        Some(version) => {
            let m = registry::verified_model(db, &version, &key).await?;
            let scores = crate::ml::eval::score_matrix(&v, &m);
            Some((version, scores))
        }
        None => None,
    };
    Ok(Scored {
        labels,
        candidate: candidate_scores,
        champion,
    })
}

/// The lease as `GET /v1/hrs/scheduler` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SchedulerLease {
    pub name: String,
    /// This process runs the schedule: its lease status (held, holder, since). `null` when
    /// this process has no scheduler job (retrain off, or a CLI command).
    pub here: Option<LeaseStatus>,
    /// Who holds the lease, as the database reports it (PostgreSQL: the holder's
    /// `application_name`, `kakeya pid=… host=…`; `null` when nobody does). On SQLite the
    /// lease is trivially held by the one `kakeya serve` that runs the schedule.
    pub holder: Option<String>,
}

/// `GET /v1/hrs/scheduler` and `kakeya hrs schedule status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SchedulerStatus {
    /// Scheduled retraining is on (`[scheduler] retrain`).
    pub enabled: bool,
    pub config: SchedulerConfig,
    pub lease: SchedulerLease,
    /// The run in progress, if any.
    pub running: Option<SchedulerRun>,
    /// The newest finished run.
    pub last_run: Option<SchedulerRun>,
    /// When the next scheduled run is due (epoch ms; the current time when the current
    /// period has no run yet); `null` when scheduled retraining is off.
    pub next_due_ms: Option<i64>,
    /// `next_due_ms` as RFC 3339.
    pub next_due: Option<String>,
}

/// The scheduler's state (`here`: this process's lease status, if it runs the schedule).
pub async fn status(
    db: &Db,
    config: &SchedulerConfig,
    here: Option<LeaseStatus>,
    now_ms: i64,
) -> Result<SchedulerStatus, sqlx::Error> {
    let holder = match (&here, db.backend) {
        (_, Backend::Postgres) => crate::lease::holder(db, LEASE).await?,
        (Some(h), Backend::Sqlite) => h.holder.clone(),
        (None, Backend::Sqlite) => None,
    };
    let next_due_ms = if config.retrain {
        let p = config.period_start(now_ms);
        Some(match store::of_period(&db.pool, p).await? {
            Some(_) => p.saturating_add(config.retrain_every_ms),
            None => now_ms,
        })
    } else {
        None
    };
    Ok(SchedulerStatus {
        enabled: config.retrain,
        config: config.clone(),
        lease: SchedulerLease {
            name: LEASE.into(),
            here,
            holder,
        },
        running: store::running(&db.pool).await?,
        last_run: store::last_finished(&db.pool).await?,
        next_due_ms,
        next_due: next_due_ms.map(rfc3339),
    })
}
