//! Routes of drift monitoring (admin listener, bearer token), merged into
//! [`crate::api::protected_admin_routes`].

use super::{parse_since, By, DriftAlert, DriftError, DriftReport};
use crate::api::registry::refused;
use crate::api::AdminState;
use crate::error::{ApiError, ErrorBody};
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Longest alert listing.
pub const MAX_ALERTS: u32 = 10_000;
/// Default alert listing.
pub const DEFAULT_ALERTS: u32 = 1000;

pub fn router() -> OpenApiRouter<AdminState> {
    OpenApiRouter::new()
        .routes(routes!(check))
        .routes(routes!(alerts))
}

impl From<DriftError> for ApiError {
    fn from(e: DriftError) -> Self {
        match e {
            DriftError::Invalid(m) => ApiError::BadRequest(m),
            DriftError::NoChampion => ApiError::ConflictWith {
                code: "no_champion",
                message: e.to_string(),
            },
            DriftError::Registry(e) => refused(e),
            DriftError::Store(e) => ApiError::StoreUnavailable(e.to_string()),
        }
    }
}

/// `POST /v1/hrs/drift/check`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckRequest {
    /// Start of the window: a duration before now (`24h`, `90m`, `7d`; 1 minute to 366 days)
    /// or an RFC 3339 time in the past. Default `[drift] window` (24h).
    #[schema(max_length = 64)]
    pub since: Option<String>,
}

#[utoipa::path(
    post,
    path = "/v1/hrs/drift/check",
    tag = "drift",
    request_body(content = Option<CheckRequest>, description = "Optional: no body (or `{}`) checks the default window"),
    security(("bearer" = [])),
    responses(
        (status = 200, body = DriftReport, description = "The check, stored: per model (champion, then challenger) the per-feature KS (statistic, p-value, BH-adjusted p-value) and PSI against its training reference, the rolling labelled AUROC with its DeLong interval against the card's, and the alerts raised (with what the auto-revert did about a champion's performance alert)"),
        (status = 400, body = ErrorBody, description = "Malformed body, unknown field, since neither a duration of 1 minute to 366 days nor an RFC 3339 time in the past; nothing stored"),
        (status = 401, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "Code `no_champion` (nothing to check), or `integrity_failure` (a stored drift reference does not match its hash or the model card)"),
        (status = 503, body = ErrorBody)
    )
)]
pub async fn check(
    State(st): State<AdminState>,
    body: Bytes,
) -> Result<Json<DriftReport>, ApiError> {
    let req: CheckRequest = if body.iter().all(u8::is_ascii_whitespace) {
        CheckRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::BadRequest(format!("malformed body: {e}")))?
    };
    let now = crate::now_ms();
    let since = match &req.since {
        Some(s) => parse_since(s, now)?,
        None => now.saturating_sub(i64::try_from(st.drift.window.as_millis()).unwrap_or(i64::MAX)),
    };
    let seed = st.bundle_seed.as_deref();
    Ok(Json(
        super::check(&st.db, seed, &st.drift, since, By::Api, now).await?,
    ))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AlertsQuery {
    /// Alerts raised since: a duration before now (`24h`, default) or an RFC 3339 time.
    pub since: Option<String>,
    /// At most this many, newest first, 1..=10000 (default 1000).
    #[param(minimum = 1, maximum = 10000)]
    pub limit: Option<u32>,
    /// Only alerts with an id below this one: pass the last id of a full page for the next.
    pub before_id: Option<i64>,
}

#[utoipa::path(
    get,
    path = "/v1/hrs/drift/alerts",
    tag = "drift",
    params(AlertsQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, body = Vec<DriftAlert>, description = "Newest first: [{id, check_id, timestamp, type: feature_drift|performance_drift, test: ks|psi|auroc, feature?, statistic, p_value?, threshold, severity: warning|critical, model_version, alias, action?, action_detail?}]. A page of `limit` entries may have more: ask again with before_id = the last id"),
        (status = 400, body = ErrorBody, description = "since not a duration of 1 minute to 366 days nor an RFC 3339 time in the past, limit outside 1..=10000, unknown parameter"),
        (status = 401, body = ErrorBody),
        (status = 503, body = ErrorBody)
    )
)]
pub async fn alerts(
    State(st): State<AdminState>,
    q: Result<Query<AlertsQuery>, QueryRejection>,
) -> Result<Json<Vec<DriftAlert>>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let limit = q.limit.unwrap_or(DEFAULT_ALERTS);
    if !(1..=MAX_ALERTS).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit must be 1..={MAX_ALERTS} (got {limit})"
        )));
    }
    let since = parse_since(q.since.as_deref().unwrap_or("24h"), crate::now_ms())?;
    let alerts = super::store::alerts(&st.db, since, q.before_id, i64::from(limit))
        .await
        .map_err(DriftError::from)?;
    Ok(Json(alerts))
}
