//! Routes of the canary controller (admin listener, bearer token), merged into
//! [`crate::api::protected_admin_routes`].

use super::store::{self, Deployment, Event};
use super::{Action, CanaryError, StartRequest, Started};
use crate::api::registry::refused;
use crate::api::AdminState;
use crate::error::{ApiError, ErrorBody};
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Most events per page.
pub const MAX_EVENTS: u32 = 10_000;

pub fn router() -> OpenApiRouter<AdminState> {
    OpenApiRouter::new()
        .routes(routes!(start))
        .routes(routes!(status))
        .routes(routes!(pause))
        .routes(routes!(resume))
        .routes(routes!(abort))
        .routes(routes!(events))
        .routes(routes!(clear_upstream))
}

impl From<CanaryError> for ApiError {
    fn from(e: CanaryError) -> Self {
        match e {
            CanaryError::Invalid(m) => ApiError::BadRequest(m),
            CanaryError::NotFound(_) => ApiError::Missing(e.to_string()),
            CanaryError::Conflict { code, message } => ApiError::ConflictWith { code, message },
            CanaryError::Registry(e) => refused(e),
            CanaryError::Store(e) => ApiError::StoreUnavailable(e.to_string()),
            CanaryError::EnvoyStats(e) => ApiError::NotReady(e.to_string()),
        }
    }
}

#[utoipa::path(
    post,
    path = "/v1/operator/canary/start",
    tag = "canary",
    request_body = StartRequest,
    security(("bearer" = [])),
    responses(
        (status = 201, body = Started, description = "Recorded as pending; the leader's next tick sets the canary alias at the first step's weight and publishes the bundle"),
        (status = 400, body = ErrorBody, description = "Bad name, versions, gates (non-finite or out of range), schedule (weights not rising within (0, 1] to 1, durations outside 1 s..7 d), unknown field, malformed body; nothing recorded"),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "canary_version is not a registered model"),
        (status = 409, body = ErrorBody, description = "Code `not_champion` (control_version is not the champion), `canary_in_use` (the canary alias is set by hand), `canary_active` (another deployment is active); nothing recorded"),
        (status = 503, body = ErrorBody)
    )
)]
pub async fn start(
    State(st): State<AdminState>,
    body: Result<Json<StartRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<Started>), ApiError> {
    let Json(r) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let s = super::start(&st.db, &st.canary, &r, crate::now_ms()).await?;
    Ok((StatusCode::CREATED, Json(s)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct StatusQuery {
    /// The deployment; without it, the active one (else the newest).
    pub deployment_id: Option<String>,
}

#[utoipa::path(
    get,
    path = "/v1/operator/canary/status",
    tag = "canary",
    params(StatusQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, body = Deployment, description = "The deployment: status, current step, traffic percent, steps with their status, gates, the latest health check (per-arm stats, gate values, recommendation), a pending operator request"),
        (status = 400, body = ErrorBody, description = "Unknown parameter"),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "No such deployment (or none at all)"),
        (status = 503, body = ErrorBody)
    )
)]
pub async fn status(
    State(st): State<AdminState>,
    q: Result<Query<StatusQuery>, QueryRejection>,
) -> Result<Json<Deployment>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let d = match &q.deployment_id {
        Some(id) => store::get(&st.db, id).await.map_err(CanaryError::from)?,
        None => match store::active(&st.db).await.map_err(CanaryError::from)? {
            Some(d) => Some(d),
            None => store::list(&st.db, 1)
                .await
                .map_err(CanaryError::from)?
                .into_iter()
                .next(),
        },
    };
    d.map(Json).ok_or_else(|| {
        ApiError::Missing(match q.deployment_id {
            Some(id) => format!("no canary deployment {id}"),
            None => "no canary deployment yet".into(),
        })
    })
}

async fn act(
    st: &AdminState,
    id: &str,
    a: Action,
) -> Result<(StatusCode, Json<Deployment>), ApiError> {
    Ok((
        StatusCode::ACCEPTED,
        Json(super::request(&st.db, id, a).await?),
    ))
}

#[utoipa::path(
    post,
    path = "/v1/operator/canary/{id}/pause",
    tag = "canary",
    params(("id" = String, Path, description = "deployment id")),
    security(("bearer" = [])),
    responses(
        (status = 202, body = Deployment, description = "Pause requested (`requested: pause`); the leader's next tick pauses it: the weight holds, no step advances, the step's remaining time is kept"),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "Code `not_active` (finished) or `not_running` (already paused)"),
        (status = 503, body = ErrorBody)
    )
)]
pub async fn pause(
    State(st): State<AdminState>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Deployment>), ApiError> {
    act(&st, &id, Action::Pause).await
}

#[utoipa::path(
    post,
    path = "/v1/operator/canary/{id}/resume",
    tag = "canary",
    params(("id" = String, Path, description = "deployment id")),
    security(("bearer" = [])),
    responses(
        (status = 202, body = Deployment, description = "Resume requested; the leader's next tick resumes the step where it was paused"),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "Code `not_active` (finished) or `not_paused`"),
        (status = 503, body = ErrorBody)
    )
)]
pub async fn resume(
    State(st): State<AdminState>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Deployment>), ApiError> {
    act(&st, &id, Action::Resume).await
}

#[utoipa::path(
    post,
    path = "/v1/operator/canary/{id}/abort",
    tag = "canary",
    params(("id" = String, Path, description = "deployment id")),
    security(("bearer" = [])),
    responses(
        (status = 202, body = Deployment, description = "Abort requested; the leader's next tick removes the canary alias (weight 0, the champion serves everything) and ends the deployment as aborted (a manual rollback)"),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "Code `not_active` (finished)"),
        (status = 503, body = ErrorBody)
    )
)]
pub async fn abort(
    State(st): State<AdminState>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Deployment>), ApiError> {
    act(&st, &id, Action::Abort).await
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Only events after this id (pass the last id seen to follow the log).
    pub after_id: Option<i64>,
    /// At most this many, 1..=10000 (default 1000).
    #[param(minimum = 1, maximum = 10000)]
    pub limit: Option<u32>,
}

#[utoipa::path(
    get,
    path = "/v1/operator/canary/{id}/events",
    tag = "canary",
    params(("id" = String, Path, description = "deployment id"), EventsQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, body = Vec<Event>, description = "The transitions in order: [{id, at_ms, kind: started|step|held|paused|resumed|promoted|rolled_back|aborted, from_status, to_status, step, weight, reason, gates?}]"),
        (status = 400, body = ErrorBody, description = "limit outside 1..=10000, unknown parameter"),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 503, body = ErrorBody)
    )
)]
pub async fn events(
    State(st): State<AdminState>,
    Path(id): Path<String>,
    q: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Json<Vec<Event>>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let limit = q.limit.unwrap_or(1000);
    if !(1..=MAX_EVENTS).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit must be 1..={MAX_EVENTS} (got {limit})"
        )));
    }
    if store::get(&st.db, &id)
        .await
        .map_err(CanaryError::from)?
        .is_none()
    {
        return Err(ApiError::Missing(format!("no canary deployment {id}")));
    }
    Ok(Json(
        store::events(&st.db, &id, q.after_id, i64::from(limit))
            .await
            .map_err(CanaryError::from)?,
    ))
}

/// What `clear_upstream` answers.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = UpstreamCleared)]
pub struct UpstreamCleared {
    pub upstream: String,
    /// Always 0: the route's canary side takes no traffic.
    pub canary_weight: f64,
    /// The route's stable cluster (`kakeya_up_<name>_stable`, or `_canary` after a promotion).
    pub stable_cluster: String,
    /// The published bundle carrying it.
    pub bundle_version: i64,
}

#[utoipa::path(
    post,
    path = "/v1/operator/canary/upstream/{name}/clear",
    tag = "canary",
    params(("name" = String, Path, description = "an [[upstream]] route name")),
    security(("bearer" = [])),
    responses(
        (status = 200, body = UpstreamCleared, description = "The route's canary weight is 0 in a newly published bundle (its stable cluster stays): every Envoy sends the whole route to its stable cluster within one poll interval"),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "Not a configured [[upstream]] route"),
        (status = 409, body = ErrorBody, description = "Code `canary_active`: a deployment is canarying the route (abort it instead); nothing changed"),
        (status = 503, body = ErrorBody, description = "No bundle signing key loaded, or the store is unavailable")
    )
)]
pub async fn clear_upstream(
    State(st): State<AdminState>,
    Path(name): Path<String>,
) -> Result<Json<UpstreamCleared>, ApiError> {
    let seed = crate::api::registry::seed(&st)?;
    let v = super::upstream::clear(&st.db, seed, &st.canary, &name, crate::now_ms()).await?;
    let stable = super::upstream::stable_cluster(&st.db, &name)
        .await
        .map_err(CanaryError::from)?;
    Ok(Json(UpstreamCleared {
        canary_weight: 0.0,
        stable_cluster: super::upstream::cluster_name(&name, stable),
        upstream: name,
        bundle_version: v,
    }))
}
