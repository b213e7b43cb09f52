//! SQL of the scheduler's runs (`scheduler_runs`, migration 0015), for SQLite and PostgreSQL
//! through `sqlx::Any` with `$n` placeholders.
//!
//! Two unique indexes make the claims safe with several replicas on one database, whatever
//! the leases do: one scheduled run per period (`period_start_ms`), one run in progress.

use super::{RunOutcome, RunStatus, RunTrigger, SchedulerRun};
use serde_json::Value;
use sqlx::{AnyPool, Row};

const COLUMNS: &str = "id, triggered_by, period_start_ms, status, outcome, params, job_id, \
                       candidate_version, champion_version, gate, detail, started_at_ms, \
                       heartbeat_at_ms, finished_at_ms";

fn row_to_run(r: &sqlx::any::AnyRow) -> Result<SchedulerRun, sqlx::Error> {
    let bad = |col: &str, why: String| sqlx::Error::ColumnDecode {
        index: col.into(),
        source: why.into(),
    };
    let json_col = |col: &str| crate::store::json_column(r, col);
    let trigger: String = r.try_get("triggered_by")?;
    let outcome: Option<String> = r.try_get("outcome")?;
    let params = json_col("params")?.unwrap_or(Value::Null);
    Ok(SchedulerRun {
        run_id: r.try_get("id")?,
        trigger: RunTrigger::parse(&trigger).ok_or_else(|| bad("triggered_by", trigger.clone()))?,
        period_start_ms: r.try_get("period_start_ms")?,
        status: match r.try_get::<String, _>("status")?.as_str() {
            "running" => RunStatus::Running,
            "finished" => RunStatus::Finished,
            other => return Err(bad("status", other.to_string())),
        },
        outcome: outcome
            .map(|o| RunOutcome::parse(&o).ok_or_else(|| bad("outcome", o.clone())))
            .transpose()?,
        params,
        job_id: r.try_get("job_id")?,
        candidate_version: r.try_get("candidate_version")?,
        champion_version: r.try_get("champion_version")?,
        gate: json_col("gate")?,
        detail: json_col("detail")?,
        started_at_ms: r.try_get("started_at_ms")?,
        heartbeat_at_ms: r.try_get("heartbeat_at_ms")?,
        finished_at_ms: r.try_get("finished_at_ms")?,
    })
}

/// Inserts a running run; its id, or `None` when a unique index refused it (the period has
/// its run already, or another run is in progress).
pub async fn insert_running(
    pool: &AnyPool,
    trigger: RunTrigger,
    period_start_ms: Option<i64>,
    params: &Value,
    now_ms: i64,
) -> Result<Option<i64>, sqlx::Error> {
    // SQL NULL for a manual run, not a bound NULL (see `store::decision_log::insert` on the
    // Any driver's NULL types).
    let period = if period_start_ms.is_some() {
        "$5"
    } else {
        "NULL"
    };
    let sql = format!(
        "INSERT INTO scheduler_runs (triggered_by, period_start_ms, status, params, \
         started_at_ms, heartbeat_at_ms) VALUES ($1, {period}, 'running', $2, $3, $4) \
         ON CONFLICT DO NOTHING RETURNING id"
    );
    let mut q = sqlx::query_scalar::<_, i64>(&sql)
        .bind(trigger.as_str())
        .bind(params.to_string())
        .bind(now_ms)
        .bind(now_ms);
    if let Some(p) = period_start_ms {
        q = q.bind(p);
    }
    q.fetch_optional(pool).await
}

/// The newest run matching `filter` (SQL with at most one placeholder, `$1` = `arg`).
async fn newest(
    pool: &AnyPool,
    filter: &str,
    arg: Option<i64>,
) -> Result<Option<SchedulerRun>, sqlx::Error> {
    let sql =
        format!("SELECT {COLUMNS} FROM scheduler_runs WHERE {filter} ORDER BY id DESC LIMIT 1");
    let mut q = sqlx::query(&sql);
    if let Some(a) = arg {
        q = q.bind(a);
    }
    q.fetch_optional(pool)
        .await?
        .as_ref()
        .map(row_to_run)
        .transpose()
}

pub async fn get(pool: &AnyPool, id: i64) -> Result<Option<SchedulerRun>, sqlx::Error> {
    newest(pool, "id = $1", Some(id)).await
}

/// The run in progress, if any.
pub async fn running(pool: &AnyPool) -> Result<Option<SchedulerRun>, sqlx::Error> {
    newest(pool, "status = 'running'", None).await
}

/// The scheduled run of the period starting at `period_start_ms`, if any.
pub async fn of_period(
    pool: &AnyPool,
    period_start_ms: i64,
) -> Result<Option<SchedulerRun>, sqlx::Error> {
    newest(pool, "period_start_ms = $1", Some(period_start_ms)).await
}

/// The newest finished run, if any.
pub async fn last_finished(pool: &AnyPool) -> Result<Option<SchedulerRun>, sqlx::Error> {
    newest(pool, "status = 'finished'", None).await
}

/// Up to `limit` runs with an id below `before_id`, newest first.
pub async fn page(
    pool: &AnyPool,
    before_id: Option<i64>,
    limit: i64,
) -> Result<Vec<SchedulerRun>, sqlx::Error> {
    sqlx::query(&format!(
        "SELECT {COLUMNS} FROM scheduler_runs WHERE id < $1 ORDER BY id DESC LIMIT $2"
    ))
    .bind(before_id.unwrap_or(i64::MAX))
    .bind(limit)
    .fetch_all(pool)
    .await?
    .iter()
    .map(row_to_run)
    .collect()
}

/// Records the training job of a running run.
pub async fn set_job(pool: &AnyPool, id: i64, job_id: i64) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE scheduler_runs SET job_id = $1 WHERE id = $2 AND status = 'running'")
        .bind(job_id)
        .bind(id)
        .execute(pool)
        .await
        .map(|_| ())
}

pub async fn heartbeat(pool: &AnyPool, id: i64, now_ms: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE scheduler_runs SET heartbeat_at_ms = $1 WHERE id = $2 AND status = 'running'",
    )
    .bind(now_ms)
    .bind(id)
    .execute(pool)
    .await
    .map(|_| ())
}

/// What a finished run records.
#[derive(Debug, Clone, PartialEq)]
pub struct Finish {
    pub outcome: RunOutcome,
    pub candidate_version: Option<String>,
    pub champion_version: Option<String>,
    pub gate: Option<Value>,
    pub detail: Value,
}

/// Finishes a running run; false when it was no longer running (a sweep marked it
/// interrupted meanwhile: that record stands).
pub async fn finish(pool: &AnyPool, id: i64, f: &Finish, now_ms: i64) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE scheduler_runs SET status = 'finished', outcome = $1, candidate_version = $2, \
         champion_version = $3, gate = $4, detail = $5, finished_at_ms = $6 \
         WHERE id = $7 AND status = 'running'",
    )
    .bind(f.outcome.as_str())
    .bind(f.candidate_version.clone())
    .bind(f.champion_version.clone())
    .bind(f.gate.as_ref().map(Value::to_string))
    .bind(f.detail.to_string())
    .bind(now_ms)
    .bind(id)
    // Optional text binds (NULL or not) would otherwise be cached with one type per connection.
    .persistent(false)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Finishes as `interrupted` every running run whose heartbeat is older than `stale_ms`; how
/// many.
pub async fn recover_interrupted(
    pool: &AnyPool,
    now_ms: i64,
    stale_ms: i64,
) -> Result<u64, sqlx::Error> {
    let detail = serde_json::json!({
        "code": "interrupted",
        "error": "the process running the scheduler run stopped (crash, kill or shutdown) \
                  before it finished; start one with POST /v1/hrs/scheduler/run",
    });
    let done = sqlx::query(
        "UPDATE scheduler_runs SET status = 'finished', outcome = 'interrupted', detail = $1, \
         finished_at_ms = $2 WHERE status = 'running' AND heartbeat_at_ms < $3",
    )
    .bind(detail.to_string())
    .bind(now_ms)
    .bind(now_ms.saturating_sub(stale_ms))
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}
