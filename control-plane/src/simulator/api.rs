//! Routes of the policy simulator (admin listener, bearer token), merged into
//! [`crate::api::protected_admin_routes`].

use super::{SimError, SimulateRequest, Simulation};
use crate::api::registry::refused;
use crate::api::AdminState;
use crate::error::{ApiError, ErrorBody};
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AdminState> {
    OpenApiRouter::new()
        .routes(routes!(simulate))
        .routes(routes!(simulation))
        .routes(routes!(apply))
}

impl From<SimError> for ApiError {
    fn from(e: SimError) -> Self {
        match e {
            SimError::Invalid(m) => ApiError::BadRequest(m),
            SimError::NotFound(m) => ApiError::Missing(m),
            SimError::Conflict { code, message } => ApiError::ConflictWith { code, message },
            SimError::Registry(e) => refused(e),
            SimError::Store(e) => ApiError::StoreUnavailable(e.to_string()),
        }
    }
}

fn seed(st: &AdminState) -> Result<&[u8; 32], ApiError> {
    st.bundle_seed
        .as_deref()
        .ok_or_else(|| ApiError::NotReady("no bundle signing key loaded".into()))
}

#[utoipa::path(
    post,
    path = "/v1/operator/policy/simulate",
    tag = "policy",
    request_body = SimulateRequest,
    security(("bearer" = [])),
    responses(
        (status = 201, body = Simulation, description = "Stored: the window's recorded decisions replayed through the served bundle with the diff applied; before/after outcomes (escalation rate, containment and false escalations on labelled rows, decisions per arm), impact (deltas, flips, latency 0 or not predicted, cost not predicted, risk, breached SLOs), recommendation approve|review|reject. `simulation_id` names it"),
        (status = 400, body = ErrorBody, description = "Bad policy_id, empty diff, a value out of range, window not 1 minute..366 days, unknown field; nothing stored"),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "diff.model_version is not registered"),
        (status = 409, body = ErrorBody, description = "Code `no_bundle`, `no_canary` / `no_challenger` (a weight for an alias that is not set), `no_decisions` (nothing recorded in the window), `integrity_failure`"),
        (status = 503, body = ErrorBody)
    )
)]
pub async fn simulate(
    State(st): State<AdminState>,
    body: Result<Json<SimulateRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<Simulation>), ApiError> {
    let Json(r) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let s = super::simulate(&st.db, seed(&st)?, &r, crate::now_ms()).await?;
    Ok((StatusCode::CREATED, Json(s)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SimulationQuery {
    pub simulation_id: String,
}

#[utoipa::path(
    get,
    path = "/v1/operator/policy/simulation",
    tag = "policy",
    params(SimulationQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, body = Simulation, description = "The stored simulation, with when it was applied and, once a canary of its model ran, its accuracy against what the canary measured"),
        (status = 400, body = ErrorBody, description = "Missing simulation_id, unknown parameter"),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 503, body = ErrorBody)
    )
)]
pub async fn simulation(
    State(st): State<AdminState>,
    q: Result<Query<SimulationQuery>, QueryRejection>,
) -> Result<Json<Simulation>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    super::get(&st.db, &q.simulation_id)
        .await
        .map_err(SimError::from)?
        .map(Json)
        .ok_or_else(|| ApiError::Missing(format!("no simulation {}", q.simulation_id)))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = PolicyApplyRequest)]
pub struct ApplyRequest {
    pub policy_id: String,
}

#[utoipa::path(
    post,
    path = "/v1/operator/policy/apply",
    tag = "policy",
    request_body = ApplyRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, body = Simulation, description = "Applied through the registry (a threshold change registers the champion with the new threshold as a new version and promotes it; weights move their alias), each step a published bundle; the simulation now has applied_at_ms"),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "No simulation of this policy"),
        (status = 409, body = ErrorBody, description = "Code `not_approved` (the latest simulation recommends review or reject), `already_applied`, `stale_simulation` (another bundle is served than the one replayed: simulate again), `integrity_failure`; nothing changed"),
        (status = 503, body = ErrorBody)
    )
)]
pub async fn apply(
    State(st): State<AdminState>,
    body: Result<Json<ApplyRequest>, JsonRejection>,
) -> Result<Json<Simulation>, ApiError> {
    let Json(r) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    Ok(Json(
        super::apply(&st.db, seed(&st)?, &r.policy_id, crate::now_ms()).await?,
    ))
}
