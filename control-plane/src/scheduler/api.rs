//! Routes of the retraining scheduler (admin listener, bearer token), merged into
//! [`crate::api::protected_admin_routes`] so they are served and documented together.

use super::{Claim, RunTrigger, SchedulerRun, SchedulerStatus, LEASE};
use crate::api::decisions::{finish_page, page_args};
use crate::api::registry::seed;
use crate::api::AdminState;
use crate::error::{ApiError, ErrorBody};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The scheduler routes, with their OpenAPI description.
pub fn router() -> OpenApiRouter<AdminState> {
    OpenApiRouter::new()
        .routes(routes!(status))
        .routes(routes!(runs))
        .routes(routes!(run_now))
}

fn store(e: sqlx::Error) -> ApiError {
    ApiError::StoreUnavailable(e.to_string())
}

#[utoipa::path(
    get,
    path = "/v1/hrs/scheduler",
    tag = "training",
    security(("bearer" = [])),
    responses(
        (status = 200, body = SchedulerStatus, description = "The [scheduler] configuration, the lease (this replica's status and the holder the database reports), the run in progress, the last finished run and when the next scheduled run is due"),
        (status = 401, body = ErrorBody),
        (status = 503, body = ErrorBody)
    )
)]
pub async fn status(State(st): State<AdminState>) -> Result<Json<SchedulerStatus>, ApiError> {
    let here = st.leases.snapshot().into_iter().find(|l| l.name == LEASE);
    super::status(&st.db, &st.scheduler.config, here, crate::now_ms())
        .await
        .map(Json)
        .map_err(store)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RunsQuery {
    /// Runs per page, 1..=1000 (default 100); anything else is a 400.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page; omit for the newest runs.
    pub cursor: Option<String>,
}

/// One page of scheduler runs.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RunsPage {
    /// Newest first.
    pub runs: Vec<SchedulerRun>,
    /// Pass as `cursor` for the next (older) page; `null` on the last page.
    pub next_cursor: Option<String>,
}

#[utoipa::path(
    get,
    path = "/v1/hrs/scheduler/runs",
    tag = "training",
    params(RunsQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, body = RunsPage, description = "Scheduler runs, newest first: trigger, outcome, training job, candidate and champion, the gate's checks with values and thresholds; follow next_cursor for older ones"),
        (status = 400, body = ErrorBody, description = "limit outside 1..=1000, malformed cursor or query"),
        (status = 401, body = ErrorBody),
        (status = 503, body = ErrorBody)
    )
)]
pub async fn runs(
    State(st): State<AdminState>,
    q: Result<Query<RunsQuery>, QueryRejection>,
) -> Result<Json<RunsPage>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let (limit, before) = page_args(q.limit, q.cursor.as_deref())?;
    let mut rows = super::store::page(&st.db.pool, before, i64::from(limit) + 1)
        .await
        .map_err(store)?;
    let next_cursor = finish_page(&mut rows, limit, |r| r.run_id);
    Ok(Json(RunsPage {
        runs: rows,
        next_cursor,
    }))
}

/// A started run.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RunStarted {
    pub run_id: i64,
}

#[utoipa::path(
    post,
    path = "/v1/hrs/scheduler/run",
    tag = "training",
    security(("bearer" = [])),
    responses(
        (status = 202, body = RunStarted, description = "A manual run started on this replica: training job on [now − train_window, now), then the gate (and, with auto_deploy, the promotion); follow GET /v1/hrs/scheduler/runs"),
        (status = 401, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "code run_in_progress: another run is in progress; nothing was started"),
        (status = 503, body = ErrorBody, description = "No bundle signing key loaded, or the database is unavailable")
    )
)]
pub async fn run_now(
    State(st): State<AdminState>,
) -> Result<(StatusCode, Json<RunStarted>), ApiError> {
    let seed = *seed(&st)?;
    match super::claim(&st.db, &st.scheduler, RunTrigger::Manual, crate::now_ms())
        .await
        .map_err(store)?
    {
        Claim::Started(run_id) => {
            let (db, settings) = (st.db.clone(), st.scheduler.clone());
            tokio::spawn(async move {
                if let Err(e) = super::execute(&db, &seed, &settings, run_id, None).await {
                    tracing::warn!(run = run_id, error = %e, "cannot record the scheduler run's outcome");
                }
            });
            Ok((StatusCode::ACCEPTED, Json(RunStarted { run_id })))
        }
        Claim::Busy(r) | Claim::PeriodDone(r) => Err(ApiError::ConflictWith {
            code: "run_in_progress",
            message: format!(
                "scheduler run {} ({}) is in progress since {}; wait for it (GET /v1/hrs/scheduler)",
                r.run_id,
                r.trigger.as_str(),
                crate::learn::rfc3339(r.started_at_ms)
            ),
        }),
    }
}
