//! SQL of the experiments table (`ab_experiments`, migration 0013), for SQLite and PostgreSQL
//! through `sqlx::Any` with `$n` placeholders.

use super::{Experiment, Status, StopReason};
use sqlx::{AnyConnection, AnyPool, Row};

const COLUMNS: &str = "id, name, scope, control, treatment, traffic_split, status, \
                       started_at_ms, ends_at_ms, stop_reason, stopped_at_ms, \
                       first_bundle_version, end_bundle_version";

/// Pending or running (the unique index allows one per scope).
const ACTIVE: &str = "status IN ('pending', 'running')";

fn row_to_experiment(r: &sqlx::any::AnyRow) -> Result<Experiment, sqlx::Error> {
    let bad = |col: &str, v: &str| sqlx::Error::ColumnDecode {
        index: col.into(),
        source: format!("unknown {col} {v:?}").into(),
    };
    let status: String = r.try_get("status")?;
    let reason: Option<String> = r.try_get("stop_reason")?;
    Ok(Experiment {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        scope: r.try_get("scope")?,
        control: r.try_get("control")?,
        treatment: r.try_get("treatment")?,
        traffic_split: r.try_get("traffic_split")?,
        status: Status::parse(&status).ok_or_else(|| bad("status", &status))?,
        started_at_ms: r.try_get("started_at_ms")?,
        ends_at_ms: r.try_get("ends_at_ms")?,
        stop_reason: reason
            .map(|s| StopReason::parse(&s).ok_or_else(|| bad("stop_reason", &s)))
            .transpose()?,
        stopped_at_ms: r.try_get("stopped_at_ms")?,
        first_bundle_version: r.try_get("first_bundle_version")?,
        end_bundle_version: r.try_get("end_bundle_version")?,
    })
}

/// Inserts `e` as pending; false when its id exists or another experiment of its scope is
/// pending or running (the unique index), so concurrent starts cannot both get in.
pub async fn insert_pending(pool: &AnyPool, e: &Experiment) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO ab_experiments (id, name, scope, control, treatment, traffic_split, status, \
         started_at_ms, ends_at_ms) VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $8) \
         ON CONFLICT DO NOTHING",
    )
    .bind(&e.id)
    .bind(&e.name)
    .bind(&e.scope)
    .bind(&e.control)
    .bind(&e.treatment)
    .bind(e.traffic_split)
    .bind(e.started_at_ms)
    .bind(e.ends_at_ms)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Removes a start that failed before it published.
pub async fn delete_pending(pool: &AnyPool, id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM ab_experiments WHERE id = $1 AND status = 'pending'")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

pub async fn get(pool: &AnyPool, id: &str) -> Result<Option<Experiment>, sqlx::Error> {
    sqlx::query(&format!(
        "SELECT {COLUMNS} FROM ab_experiments WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await?
    .as_ref()
    .map(row_to_experiment)
    .transpose()
}

/// The pending or running experiment, if any.
pub async fn active(pool: &AnyPool) -> Result<Option<Experiment>, sqlx::Error> {
    active_in(&mut *pool.acquire().await?).await
}

pub(super) async fn active_in(conn: &mut AnyConnection) -> Result<Option<Experiment>, sqlx::Error> {
    sqlx::query(&format!(
        "SELECT {COLUMNS} FROM ab_experiments WHERE {ACTIVE} ORDER BY started_at_ms DESC LIMIT 1"
    ))
    .fetch_optional(&mut *conn)
    .await?
    .as_ref()
    .map(row_to_experiment)
    .transpose()
}

/// Up to `limit` experiments, newest first.
pub async fn list(pool: &AnyPool, limit: i64) -> Result<Vec<Experiment>, sqlx::Error> {
    sqlx::query(&format!(
        "SELECT {COLUMNS} FROM ab_experiments ORDER BY started_at_ms DESC, id DESC LIMIT $1"
    ))
    .bind(limit)
    .fetch_all(pool)
    .await?
    .iter()
    .map(row_to_experiment)
    .collect()
}

/// Ids of running experiments whose `ends_at` is at or before `now_ms`.
pub async fn due(pool: &AnyPool, now_ms: i64) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query("SELECT id FROM ab_experiments WHERE status = 'running' AND ends_at_ms <= $1")
        .bind(now_ms)
        .fetch_all(pool)
        .await?
        .iter()
        .map(|r| r.try_get("id"))
        .collect()
}

/// Records a stop request on a running experiment; false when it is not running.
pub async fn request_stop(
    pool: &AnyPool,
    id: &str,
    reason: StopReason,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE ab_experiments SET stop_reason = $1 WHERE id = $2 AND status = 'running'",
    )
    .bind(reason.as_str())
    .bind(id)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Pending → running with the bundle that started it (in the publication's transaction).
pub(super) async fn mark_running(
    conn: &mut AnyConnection,
    id: &str,
    bundle_version: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE ab_experiments SET status = 'running', first_bundle_version = $1 \
         WHERE id = $2 AND status = 'pending'",
    )
    .bind(bundle_version)
    .bind(id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Running → completed or stopped, ended by the bundle `bundle_version` (in the publication's
/// transaction).
pub(super) async fn finish(
    conn: &mut AnyConnection,
    id: &str,
    reason: StopReason,
    bundle_version: i64,
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE ab_experiments SET status = $1, stop_reason = $2, stopped_at_ms = $3, \
         end_bundle_version = $4 WHERE id = $5 AND status = 'running'",
    )
    .bind(reason.final_status().as_str())
    .bind(reason.as_str())
    .bind(now_ms)
    .bind(bundle_version)
    .bind(id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
