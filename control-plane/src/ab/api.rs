//! Routes of the A/B experiments (admin listener, bearer token), merged into
//! [`crate::api::protected_admin_routes`] so they are served and documented together.

use super::stats::{self, Report};
use super::{AbError, By, Experiment, StartRequest, Started, StopReason};
use crate::api::registry::{refused, seed};
use crate::api::AdminState;
use crate::error::{ApiError, ErrorBody};
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Longest listing.
pub const MAX_LIST: u32 = 1000;

/// The experiment routes, with their OpenAPI description.
pub fn router() -> OpenApiRouter<AdminState> {
    OpenApiRouter::new()
        .routes(routes!(start))
        .routes(routes!(list))
        .routes(routes!(status))
        .routes(routes!(stop))
}

impl From<AbError> for ApiError {
    fn from(e: AbError) -> Self {
        let conflict = |code: &'static str, e: &AbError| ApiError::ConflictWith {
            code,
            message: e.to_string(),
        };
        match e {
            AbError::Invalid(m) => ApiError::BadRequest(m),
            AbError::NoExperiment(_) => ApiError::Missing(e.to_string()),
            AbError::ControlNotChampion { .. } => conflict("control_not_champion", &e),
            AbError::ChallengerInUse(_) => conflict("challenger_in_use", &e),
            AbError::CanaryInUse(_) => conflict("canary_in_use", &e),
            AbError::Running(_) => conflict("experiment_running", &e),
            AbError::NotRunning { .. } => conflict("experiment_not_running", &e),
            AbError::Registry(e) => refused(e),
            AbError::Store(e) => ApiError::StoreUnavailable(e.to_string()),
        }
    }
}

#[utoipa::path(
    post,
    path = "/v1/hrs/ab/start",
    tag = "ab",
    request_body = StartRequest,
    security(("bearer" = [])),
    responses(
        (status = 201, body = Started, description = "Running: the treatment is the challenger with weight traffic_split, tenants split by the experiment's salted hash; a new signed bundle is published"),
        (status = 400, body = ErrorBody, description = "Bad name, traffic_split not strictly between 0 and 1, unparsable duration or outside 1 minute..366 days, treatment = control, malformed body; nothing changed"),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "control or treatment is not a registered model"),
        (status = 409, body = ErrorBody, description = "Code `control_not_champion` (promote it first), `challenger_in_use` (remove it first), `canary_in_use` (remove the canary first), `experiment_running` (one at a time), `integrity_failure` (a model row failed its check) or `conflict`; nothing changed"),
        (status = 503, body = ErrorBody)
    )
)]
pub async fn start(
    State(st): State<AdminState>,
    body: Result<Json<StartRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<Started>), ApiError> {
    let Json(r) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let s = super::start(&st.db, seed(&st)?, &r, By::Api, crate::now_ms()).await?;
    Ok((StatusCode::CREATED, Json(s)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Experiments to list, newest first, 1..=1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

/// Experiments, newest first.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ExperimentList {
    pub experiments: Vec<Experiment>,
}

#[utoipa::path(
    get,
    path = "/v1/hrs/ab",
    tag = "ab",
    params(ListQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, body = ExperimentList, description = "Newest first"),
        (status = 400, body = ErrorBody, description = "limit outside 1..=1000, malformed query"),
        (status = 401, body = ErrorBody),
        (status = 503, body = ErrorBody)
    )
)]
pub async fn list(
    State(st): State<AdminState>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<ExperimentList>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=MAX_LIST).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit must be 1..={MAX_LIST} (got {limit})"
        )));
    }
    let experiments = super::store::list(&st.db.pool, i64::from(limit))
        .await
        .map_err(AbError::from)?;
    Ok(Json(ExperimentList { experiments }))
}

#[utoipa::path(
    get,
    path = "/v1/hrs/ab/{experiment_id}",
    tag = "ab",
    params(("experiment_id" = String, Path, description = "ab-<name>-<unix seconds>")),
    security(("bearer" = [])),
    responses(
        (status = 200, body = Report, description = "The experiment and, per arm, requests, escalation rate with its Wilson interval, verify_ns percentiles, labelled decisions, AUROC with its DeLong interval; the unpaired DeLong comparison and the verdict"),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "No such experiment"),
        (status = 503, body = ErrorBody)
    )
)]
pub async fn status(
    State(st): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Json<Report>, ApiError> {
    let e = super::store::get(&st.db.pool, &id)
        .await
        .map_err(AbError::from)?
        .ok_or(AbError::NoExperiment(id))?;
    let r = stats::report(&st.db.pool, &e)
        .await
        .map_err(AbError::from)?;
    Ok(Json(r))
}

#[utoipa::path(
    post,
    path = "/v1/hrs/ab/{experiment_id}/stop",
    tag = "ab",
    params(("experiment_id" = String, Path, description = "ab-<name>-<unix seconds>")),
    security(("bearer" = [])),
    responses(
        (status = 200, body = Experiment, description = "Stopped: the challenger is removed and a new signed bundle is published; the statistics stay readable"),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "No such experiment"),
        (status = 409, body = ErrorBody, description = "Code `experiment_not_running`, or `integrity_failure` (the champion's row failed its check: nothing is published)"),
        (status = 503, body = ErrorBody)
    )
)]
pub async fn stop(
    State(st): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Json<Experiment>, ApiError> {
    let e = super::stop(
        &st.db,
        seed(&st)?,
        &id,
        StopReason::Manual,
        By::Api,
        crate::now_ms(),
    )
    .await?;
    Ok(Json(e))
}
