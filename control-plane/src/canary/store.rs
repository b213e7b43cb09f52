//! The deployments and their events (`canary_deployments`, `canary_events`, migration 0019).

use super::envoy_stats::Base;
use super::gates::{Gates, HealthCheck};
use super::options::Step;
use super::Action;
use crate::store::Db;
use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::Row;

/// Where a deployment is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = CanaryStatus)]
pub enum Status {
    Pending,
    Running,
    Paused,
    Promoted,
    RolledBack,
    Aborted,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Promoted => "promoted",
            Status::RolledBack => "rolled_back",
            Status::Aborted => "aborted",
        }
    }

    fn parse(s: &str) -> Option<Status> {
        [
            Status::Pending,
            Status::Running,
            Status::Paused,
            Status::Promoted,
            Status::RolledBack,
            Status::Aborted,
        ]
        .into_iter()
        .find(|x| x.as_str() == s)
    }

    pub fn is_active(self) -> bool {
        matches!(self, Status::Pending | Status::Running | Status::Paused)
    }
}

/// A step as shown: its schedule and where it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StepView {
    pub n: u32,
    pub weight: f64,
    pub duration_ms: u64,
    /// `pending`, `running`, `passed` or `failed`.
    pub status: String,
}

/// A deployment (`GET /v1/operator/canary/status`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Deployment {
    pub id: String,
    pub name: String,
    /// `upstream:<name>` for an upstream route's canary; absent for a scoring version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// An upstream canary's key and the Envoy scrapes its windows start from.
    #[serde(skip)]
    pub upstream_base: Option<Base>,
    pub control_version: String,
    pub canary_version: String,
    pub status: Status,
    /// Index of the current step (the last one reached when finished).
    pub current_step: u32,
    pub total_steps: u32,
    /// The canary's weight now, in percent (0 unless running or paused).
    pub traffic_percent: f64,
    pub steps: Vec<StepView>,
    #[serde(skip)]
    pub schedule: Vec<Step>,
    pub gates: Gates,
    pub min_requests: u64,
    pub step_started_at_ms: Option<i64>,
    pub step_due_at_ms: Option<i64>,
    pub paused_at_ms: Option<i64>,
    /// An operator's request the leader applies at its next tick.
    pub requested: Option<Action>,
    /// The latest health check of the current step.
    pub last_check: Option<HealthCheck>,
    pub revision: i64,
    pub created_at_ms: i64,
    pub finished_at_ms: Option<i64>,
}

/// One transition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Event {
    pub id: i64,
    pub deployment_id: String,
    pub at_ms: i64,
    /// `started`, `step`, `held`, `paused`, `resumed`, `promoted`, `rolled_back`, `aborted`.
    pub kind: String,
    pub from_status: Status,
    pub to_status: Status,
    pub step: u32,
    /// The canary's weight after the transition.
    pub weight: f64,
    pub reason: String,
    /// The health check that decided it, if any.
    pub gates: Option<HealthCheck>,
}

pub(super) struct NewDeployment<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub control_version: &'a str,
    pub canary_version: &'a str,
    pub steps: &'a [Step],
    pub gates: &'a Gates,
    pub min_requests: u64,
    pub now_ms: i64,
    /// An upstream canary: its target and key (the scrapes are taken when it starts).
    pub target: Option<(&'a str, &'a Base)>,
}

fn json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

/// Inserts a pending deployment; false when another is active on its target or the id exists.
pub(super) async fn insert(db: &Db, d: &NewDeployment<'_>) -> Result<bool, sqlx::Error> {
    let res = sqlx::query(
        "INSERT INTO canary_deployments (id, name, control_version, canary_version, status, \
         current_step, steps, gates, min_requests, revision, created_at_ms, target, \
         upstream_base) VALUES ($1, $2, $3, $4, 'pending', 0, $5, $6, $7, 0, $8, $9, $10)",
    )
    .bind(d.id)
    .bind(d.name)
    .bind(d.control_version)
    .bind(d.canary_version)
    .bind(json(&d.steps))
    .bind(json(d.gates))
    .bind(i64::try_from(d.min_requests).unwrap_or(i64::MAX))
    .bind(d.now_ms)
    .bind(d.target.map(|(t, _)| t))
    .bind(d.target.map(|(_, b)| json(b)))
    .execute(&db.pool)
    .await;
    match res {
        Ok(_) => Ok(true),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(false),
        Err(e) => Err(e),
    }
}

const COLUMNS: &str = "id, name, control_version, canary_version, status, current_step, steps, \
     gates, min_requests, step_started_at_ms, step_due_at_ms, paused_at_ms, requested, \
     last_check, revision, created_at_ms, finished_at_ms, target, upstream_base";

fn decode_err(what: &str, e: impl std::fmt::Display) -> sqlx::Error {
    sqlx::Error::Decode(format!("canary_deployments.{what}: {e}").into())
}

fn row_to_deployment(r: &AnyRow) -> Result<Deployment, sqlx::Error> {
    let status: String = r.try_get("status")?;
    let status = Status::parse(&status).ok_or_else(|| decode_err("status", &status))?;
    let schedule: Vec<Step> = serde_json::from_str(&r.try_get::<String, _>("steps")?)
        .map_err(|e| decode_err("steps", e))?;
    let gates: Gates = serde_json::from_str(&r.try_get::<String, _>("gates")?)
        .map_err(|e| decode_err("gates", e))?;
    let last_check = r
        .try_get::<Option<String>, _>("last_check")?
        .map(|s| serde_json::from_str(&s))
        .transpose()
        .map_err(|e| decode_err("last_check", e))?;
    let requested = r.try_get::<Option<String>, _>("requested")?.and_then(|s| {
        [Action::Pause, Action::Resume, Action::Abort]
            .into_iter()
            .find(|a| a.as_str() == s)
    });
    let current_step = u32::try_from(r.try_get::<i64, _>("current_step")?).unwrap_or(0);
    let steps = schedule
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let i = u32::try_from(i).unwrap_or(u32::MAX);
            let st = match (i.cmp(&current_step), status) {
                (std::cmp::Ordering::Less, _) => "passed",
                (std::cmp::Ordering::Equal, Status::Running | Status::Paused) => "running",
                (std::cmp::Ordering::Equal, Status::Promoted) => "passed",
                (std::cmp::Ordering::Equal, Status::RolledBack | Status::Aborted) => "failed",
                _ => "pending",
            };
            StepView {
                n: i,
                weight: s.weight,
                duration_ms: s.duration_ms,
                status: st.into(),
            }
        })
        .collect();
    let traffic_percent = match status {
        Status::Running | Status::Paused => schedule
            .get(current_step as usize)
            .map_or(0.0, |s| s.weight * 100.0),
        _ => 0.0,
    };
    let upstream_base = r
        .try_get::<Option<String>, _>("upstream_base")?
        .map(|s| serde_json::from_str(&s))
        .transpose()
        .map_err(|e| decode_err("upstream_base", e))?;
    Ok(Deployment {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        target: r.try_get("target")?,
        upstream_base,
        control_version: r.try_get("control_version")?,
        canary_version: r.try_get("canary_version")?,
        status,
        current_step,
        total_steps: u32::try_from(schedule.len()).unwrap_or(u32::MAX),
        traffic_percent,
        steps,
        schedule,
        gates,
        min_requests: u64::try_from(r.try_get::<i64, _>("min_requests")?).unwrap_or(0),
        step_started_at_ms: r.try_get("step_started_at_ms")?,
        step_due_at_ms: r.try_get("step_due_at_ms")?,
        paused_at_ms: r.try_get("paused_at_ms")?,
        requested,
        last_check,
        revision: r.try_get("revision")?,
        created_at_ms: r.try_get("created_at_ms")?,
        finished_at_ms: r.try_get("finished_at_ms")?,
    })
}

pub async fn get(db: &Db, id: &str) -> Result<Option<Deployment>, sqlx::Error> {
    sqlx::query(&format!(
        "SELECT {COLUMNS} FROM canary_deployments WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(&db.pool)
    .await?
    .as_ref()
    .map(row_to_deployment)
    .transpose()
}

/// The active deployments (pending, running or paused; at most one per target, migration
/// 0036), oldest first.
pub async fn active_all(db: &Db) -> Result<Vec<Deployment>, sqlx::Error> {
    sqlx::query(&format!(
        "SELECT {COLUMNS} FROM canary_deployments \
         WHERE status IN ('pending', 'running', 'paused') ORDER BY created_at_ms, id"
    ))
    .fetch_all(&db.pool)
    .await?
    .iter()
    .map(row_to_deployment)
    .collect()
}

/// The newest active deployment of any target, if any.
pub async fn active(db: &Db) -> Result<Option<Deployment>, sqlx::Error> {
    Ok(active_all(db).await?.pop())
}

/// The active deployment of `target` (`None`: the scoring canary), if any.
pub async fn active_on(db: &Db, target: Option<&str>) -> Result<Option<Deployment>, sqlx::Error> {
    Ok(active_all(db)
        .await?
        .into_iter()
        .find(|d| d.target.as_deref() == target))
}

/// Newest first, at most `limit`.
pub async fn list(db: &Db, limit: i64) -> Result<Vec<Deployment>, sqlx::Error> {
    sqlx::query(&format!(
        "SELECT {COLUMNS} FROM canary_deployments ORDER BY created_at_ms DESC, id DESC LIMIT $1"
    ))
    .bind(limit)
    .fetch_all(&db.pool)
    .await?
    .iter()
    .map(row_to_deployment)
    .collect()
}

/// Records an operator's request on an active deployment; false when it is not active.
pub(super) async fn set_request(db: &Db, id: &str, a: Action) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE canary_deployments SET requested = $1 WHERE id = $2 \
         AND status IN ('pending', 'running', 'paused') \
         AND (requested IS NULL OR requested <> 'abort')",
    )
    .bind(a.as_str())
    .bind(id)
    .execute(&db.pool)
    .await?;
    if done.rows_affected() > 0 {
        return Ok(true);
    }
    // An abort already pending: the request is moot but the deployment is still active.
    Ok(get(db, id).await?.is_some_and(|d| d.status.is_active()))
}

/// The new state of a deployment, written if its revision is still `d.revision`, with the
/// event, in one transaction; false when someone wrote the row meanwhile (nothing written).
pub(super) async fn transition(
    db: &Db,
    d: &Deployment,
    event: Option<(&str, Status, &str, Option<&HealthCheck>)>,
    now_ms: i64,
) -> Result<bool, sqlx::Error> {
    let mut tx = db.pool.begin().await?;
    let done = sqlx::query(
        "UPDATE canary_deployments SET status = $1, current_step = $2, steps = $3, \
         step_started_at_ms = $4, step_due_at_ms = $5, paused_at_ms = $6, requested = $7, \
         last_check = $8, finished_at_ms = $9, upstream_base = $10, revision = revision + 1 \
         WHERE id = $11 AND revision = $12",
    )
    .bind(d.status.as_str())
    .bind(i64::from(d.current_step))
    .bind(json(&d.schedule))
    .bind(d.step_started_at_ms)
    .bind(d.step_due_at_ms)
    .bind(d.paused_at_ms)
    .bind(d.requested.map(Action::as_str))
    .bind(d.last_check.as_ref().map(json))
    .bind(d.finished_at_ms)
    .bind(d.upstream_base.as_ref().map(json))
    .bind(&d.id)
    .bind(d.revision)
    .persistent(false)
    .execute(&mut *tx)
    .await?;
    if done.rows_affected() == 0 {
        let _ = tx.rollback().await;
        return Ok(false);
    }
    if let Some((kind, from, reason, check)) = event {
        let weight = match d.status {
            super::Status::Running | super::Status::Paused => d
                .schedule
                .get(d.current_step as usize)
                .map_or(0.0, |s| s.weight),
            super::Status::Promoted => 1.0,
            _ => 0.0,
        };
        sqlx::query(
            "INSERT INTO canary_events (deployment_id, at_ms, kind, from_status, to_status, \
             step, weight, reason, gates) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&d.id)
        .bind(now_ms)
        .bind(kind)
        .bind(from.as_str())
        .bind(d.status.as_str())
        .bind(i64::from(d.current_step))
        .bind(weight)
        .bind(reason)
        .bind(check.map(json))
        .persistent(false)
        .execute(&mut *tx)
        .await?;
        // audit: the transition, in the same transaction.
        let e = crate::audit::Event::CanaryTransition {
            deployment_id: d.id.clone(),
            transition: kind.to_string(),
            from_status: from.as_str().into(),
            to_status: d.status.as_str().into(),
            step: i64::from(d.current_step),
            weight,
            reason: reason.to_string(),
        };
        crate::audit::append(&mut tx, &e, now_ms).await?;
    }
    tx.commit().await?;
    Ok(true)
}

/// The events of a deployment in order, after `after_id` when given.
pub async fn events(
    db: &Db,
    id: &str,
    after_id: Option<i64>,
    limit: i64,
) -> Result<Vec<Event>, sqlx::Error> {
    sqlx::query(
        "SELECT id, deployment_id, at_ms, kind, from_status, to_status, step, weight, reason, \
         gates FROM canary_events WHERE deployment_id = $1 AND id > $2 ORDER BY id LIMIT $3",
    )
    .bind(id)
    .bind(after_id.unwrap_or(0))
    .bind(limit)
    .fetch_all(&db.pool)
    .await?
    .iter()
    .map(|r| {
        let status = |c: &str| -> Result<Status, sqlx::Error> {
            let s: String = r.try_get(c)?;
            Status::parse(&s).ok_or_else(|| decode_err(c, &s))
        };
        Ok(Event {
            id: r.try_get("id")?,
            deployment_id: r.try_get("deployment_id")?,
            at_ms: r.try_get("at_ms")?,
            kind: r.try_get("kind")?,
            from_status: status("from_status")?,
            to_status: status("to_status")?,
            step: u32::try_from(r.try_get::<i64, _>("step")?).unwrap_or(0),
            weight: r.try_get("weight")?,
            reason: r.try_get("reason")?,
            gates: r
                .try_get::<Option<String>, _>("gates")?
                .map(|s| serde_json::from_str(&s))
                .transpose()
                .map_err(|e| decode_err("gates", e))?,
        })
    })
    .collect()
}

/// The kind and step of the deployment's newest event.
pub(super) async fn last_event(db: &Db, id: &str) -> Result<Option<(String, u32)>, sqlx::Error> {
    sqlx::query(
        "SELECT kind, step FROM canary_events WHERE deployment_id = $1 ORDER BY id DESC LIMIT 1",
    )
    .bind(id)
    .fetch_optional(&db.pool)
    .await?
    .map(|r| {
        Ok((
            r.try_get("kind")?,
            u32::try_from(r.try_get::<i64, _>("step")?).unwrap_or(0),
        ))
    })
    .transpose()
}
