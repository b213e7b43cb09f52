//! Routes of the training jobs (admin listener, bearer token), merged into
//! [`crate::api::protected_admin_routes`] so they are served and documented together.

use super::jobs::{self, EnqueueError, Job, JobParams, JobStatus, RegisteredVersionError};
use super::{parse_rfc3339, ModelKind};
use crate::api::decisions::{finish_page, page_args};
use crate::api::AdminState;
use crate::error::{ApiError, ErrorBody};
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The training routes, with their OpenAPI description.
pub fn router() -> OpenApiRouter<AdminState> {
    OpenApiRouter::new()
        .routes(routes!(train))
        .routes(routes!(list))
        .routes(routes!(get_job))
}

fn store(e: sqlx::Error) -> ApiError {
    ApiError::StoreUnavailable(e.to_string())
}

impl From<RegisteredVersionError> for ApiError {
    fn from(e: RegisteredVersionError) -> Self {
        match e {
            RegisteredVersionError::NoJob(_) => ApiError::Missing(e.to_string()),
            RegisteredVersionError::NotSucceeded { .. } => ApiError::ConflictWith {
                code: "job_not_succeeded",
                message: e.to_string(),
            },
            RegisteredVersionError::Store(e) => store(e),
        }
    }
}

/// A training job to queue.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TrainBody {
    /// Start of the range of decisions (inclusive), RFC 3339.
    #[schema(format = DateTime, example = "2026-01-01T00:00:00Z")]
    pub start_time: String,
    /// End of the range (exclusive), RFC 3339; after `start_time`.
    #[schema(format = DateTime, example = "2026-02-01T00:00:00Z")]
    pub end_time: String,
    /// Learner (default `lr`).
    pub model_kind: Option<ModelKind>,
    /// Seed of the calibration split and the bootstrap, 0..=2⁶³−1 (default 20261126).
    #[schema(minimum = 0)]
    pub seed: Option<i64>,
}

/// A queued job.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Queued {
    pub job_id: i64,
}

/// Checks a request's times: RFC 3339, start before end.
pub fn params_of(b: &TrainBody) -> Result<JobParams, ApiError> {
    let start = parse_rfc3339(&b.start_time).map_err(ApiError::BadRequest)?;
    let end = parse_rfc3339(&b.end_time).map_err(ApiError::BadRequest)?;
    if start >= end {
        return Err(ApiError::BadRequest(format!(
            "start_time {} must be before end_time {}",
            b.start_time, b.end_time
        )));
    }
    let seed = match b.seed {
        None => crate::ml::eval::DEFAULT_SEED,
        Some(s) => u64::try_from(s)
            .map_err(|_| ApiError::BadRequest(format!("seed must be at least 0 (got {s})")))?,
    };
    Ok(JobParams::new(
        start,
        end,
        b.model_kind.unwrap_or_default(),
        seed,
    ))
}

#[utoipa::path(
    post,
    path = "/v1/hrs/train",
    tag = "training",
    request_body = TrainBody,
    security(("bearer" = [])),
    responses(
        (status = 202, body = Queued, description = "Queued; follow GET /v1/hrs/jobs/{job_id}"),
        (status = 400, body = ErrorBody, description = "A time that is not RFC 3339, start_time not before end_time, unknown model_kind, negative seed, malformed body"),
        (status = 401, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "code queue_full: 64 jobs are waiting already; nothing was queued"),
        (status = 503, body = ErrorBody)
    )
)]
pub async fn train(
    State(st): State<AdminState>,
    body: Result<Json<TrainBody>, JsonRejection>,
) -> Result<(StatusCode, Json<Queued>), ApiError> {
    let Json(b) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let params = params_of(&b)?;
    match jobs::enqueue(&st.db, &params, crate::now_ms()).await {
        Ok(job_id) => Ok((StatusCode::ACCEPTED, Json(Queued { job_id }))),
        Err(e @ EnqueueError::QueueFull { .. }) => Err(ApiError::ConflictWith {
            code: "queue_full",
            message: e.to_string(),
        }),
        Err(EnqueueError::Store(e)) => Err(store(e)),
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct JobsQuery {
    /// Only jobs of this status.
    #[param(inline)]
    pub status: Option<JobStatus>,
    /// Jobs per page, 1..=1000 (default 100); anything else is a 400.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page; omit for the newest jobs.
    pub cursor: Option<String>,
}

/// One page of training jobs.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobsPage {
    /// Newest first.
    pub jobs: Vec<Job>,
    /// Pass as `cursor` for the next (older) page; `null` on the last page.
    pub next_cursor: Option<String>,
}

#[utoipa::path(
    get,
    path = "/v1/hrs/jobs",
    tag = "training",
    params(JobsQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, body = JobsPage, description = "Training jobs, newest first; follow next_cursor for older ones"),
        (status = 400, body = ErrorBody, description = "Unknown status, limit outside 1..=1000, malformed cursor or query"),
        (status = 401, body = ErrorBody),
        (status = 503, body = ErrorBody)
    )
)]
pub async fn list(
    State(st): State<AdminState>,
    q: Result<Query<JobsQuery>, QueryRejection>,
) -> Result<Json<JobsPage>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let (limit, before) = page_args(q.limit, q.cursor.as_deref())?;
    let mut rows = jobs::page(&st.db, q.status, before, i64::from(limit) + 1)
        .await
        .map_err(store)?;
    let next_cursor = finish_page(&mut rows, limit, |j| j.job_id);
    Ok(Json(JobsPage {
        jobs: rows,
        next_cursor,
    }))
}

#[utoipa::path(
    get,
    path = "/v1/hrs/jobs/{job_id}",
    tag = "training",
    params(("job_id" = i64, Path, description = "id from POST /v1/hrs/train")),
    security(("bearer" = [])),
    responses(
        (status = 200, body = Job, description = "The job: status, progress, and its result (succeeded) or error (failed)"),
        (status = 400, body = ErrorBody, description = "job_id is not an integer"),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "No such job"),
        (status = 503, body = ErrorBody)
    )
)]
pub async fn get_job(
    State(st): State<AdminState>,
    path: Result<Path<i64>, PathRejection>,
) -> Result<Json<Job>, ApiError> {
    let Path(id) = path.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    jobs::get(&st.db, id)
        .await
        .map_err(store)?
        .map(Json)
        .ok_or_else(|| ApiError::Missing(format!("no training job {id}")))
}
