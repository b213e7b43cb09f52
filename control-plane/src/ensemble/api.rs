//! Routes of the adaptive ensemble (admin listener, bearer token), merged into
//! [`crate::api::protected_admin_routes`].

use super::store::{HistoryRow, RunRow};
use super::{EnsembleError, FeedbackRequest, PolicyView, Trigger, TuneReport};
use crate::api::registry::refused;
use crate::api::AdminState;
use crate::error::{ApiError, ErrorBody};
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Longest history listing.
pub const MAX_HISTORY: u32 = 1000;

pub fn router() -> OpenApiRouter<AdminState> {
    OpenApiRouter::new()
        .routes(routes!(tune))
        .routes(routes!(policy))
        .routes(routes!(feedback))
        .routes(routes!(history))
}

impl From<EnsembleError> for ApiError {
    fn from(e: EnsembleError) -> Self {
        match e {
            EnsembleError::Invalid(m) => ApiError::BadRequest(m),
            EnsembleError::NotFound(m) => ApiError::Missing(m),
            EnsembleError::Ambiguous(m) => ApiError::ConflictWith {
                code: "ambiguous_pcs_id",
                message: m,
            },
            e @ EnsembleError::InsufficientSamples { .. } => ApiError::ConflictWith {
                code: "insufficient_samples",
                message: e.to_string(),
            },
            EnsembleError::Registry(e) => refused(e),
            EnsembleError::Store(e) => ApiError::StoreUnavailable(e.to_string()),
        }
    }
}

fn json<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    body.map(|Json(b)| b)
        .map_err(|e| ApiError::BadRequest(e.body_text()))
}

/// `POST /v1/ensemble/tune`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TuneRequest {
    #[schema(max_length = 256)]
    pub tenant_id: String,
}

#[utoipa::path(
    post,
    path = "/v1/ensemble/tune",
    tag = "ensemble",
    request_body = TuneRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, body = TuneReport, description = "The run, stored: Thompson sampling over the feasible arms on the tenant's labelled outcomes, the chosen policy in the seed's shape (tenant_id, n, m, strategy_weights, agreement_rate, updated_at) with its reward interval, the IPS/SNIPS replay against the logged decisions and the outcome: `published` (stored, in the next bundle: bundle_version) or `refused` (reason; nothing changed)"),
        (status = 400, body = ErrorBody, description = "Malformed body, unknown field, empty or over-long tenant_id, no strategy with enough votes"),
        (status = 401, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "Code `insufficient_samples`: fewer labelled outcomes than `[ensemble] min_samples` (100); the message has the count"),
        (status = 503, body = ErrorBody)
    )
)]
pub async fn tune(
    State(st): State<AdminState>,
    body: Result<Json<TuneRequest>, JsonRejection>,
) -> Result<Json<TuneReport>, ApiError> {
    let req = json(body)?;
    let seed = st.bundle_seed.as_deref();
    Ok(Json(
        super::tune(
            &st.db,
            seed,
            &super::options(),
            &req.tenant_id,
            Trigger::Api,
            None,
            crate::now_ms(),
        )
        .await?,
    ))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct TenantQuery {
    pub tenant_id: String,
    /// History only: at most this many entries of each kind, newest first (1..=1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

#[utoipa::path(
    get,
    path = "/v1/ensemble/policy",
    tag = "ensemble",
    params(TenantQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, body = PolicyView, description = "The tenant's served policy (source `tenant`, or `default` from [ensemble.default]) in the seed's shape, and in full"),
        (status = 400, body = ErrorBody, description = "Missing, empty or over-long tenant_id, unknown parameter"),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "No policy for the tenant and no default configured"),
        (status = 503, body = ErrorBody)
    )
)]
pub async fn policy(
    State(st): State<AdminState>,
    q: Result<Query<TenantQuery>, QueryRejection>,
) -> Result<Json<PolicyView>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    match super::policy_view(&st.db, &q.tenant_id).await? {
        Some(v) => Ok(Json(v)),
        None => Err(ApiError::Missing(format!(
            "no ensemble policy for tenant {:?} and no [ensemble.default]: tune one with POST /v1/ensemble/tune",
            q.tenant_id
        ))),
    }
}

#[utoipa::path(
    post,
    path = "/v1/ensemble/feedback",
    tag = "ensemble",
    request_body = FeedbackRequest,
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Stored (a later feedback on the same decision replaces it)"),
        (status = 400, body = ErrorBody, description = "Malformed body, unknown field, unknown strategy name, a strategy given twice, confidence outside [0, 1]; nothing stored"),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "No such pcs_id in the decision log"),
        (status = 409, body = ErrorBody, description = "Code `ambiguous_pcs_id`: several tenants logged it; name one with tenant_id"),
        (status = 503, body = ErrorBody)
    )
)]
pub async fn feedback(
    State(st): State<AdminState>,
    body: Result<Json<FeedbackRequest>, JsonRejection>,
) -> Result<StatusCode, ApiError> {
    let req = json(body)?;
    super::feedback(&st.db, &req, crate::now_ms()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/ensemble/history`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct History {
    pub tenant_id: String,
    /// Policy changes, newest first, with their reason.
    pub policies: Vec<HistoryRow>,
    /// Tuning runs, newest first, with their reports.
    pub runs: Vec<RunRow>,
}

#[utoipa::path(
    get,
    path = "/v1/ensemble/history",
    tag = "ensemble",
    params(TenantQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, body = History, description = "The tenant's policy changes and tuning runs, newest first"),
        (status = 400, body = ErrorBody, description = "Missing tenant_id, limit outside 1..=1000, unknown parameter"),
        (status = 401, body = ErrorBody),
        (status = 503, body = ErrorBody)
    )
)]
pub async fn history(
    State(st): State<AdminState>,
    q: Result<Query<TenantQuery>, QueryRejection>,
) -> Result<Json<History>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=MAX_HISTORY).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit must be 1..={MAX_HISTORY} (got {limit})"
        )));
    }
    super::check_id("tenant_id", &q.tenant_id)?;
    let limit = i64::from(limit);
    let store_err = |e: sqlx::Error| ApiError::from(EnsembleError::from(e));
    Ok(Json(History {
        tenant_id: q.tenant_id.clone(),
        policies: super::store::history(&st.db.pool, &q.tenant_id, limit)
            .await
            .map_err(store_err)?,
        runs: super::store::runs(&st.db.pool, &q.tenant_id, limit)
            .await
            .map_err(store_err)?,
    }))
}
