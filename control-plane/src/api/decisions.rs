//! `GET /v1/decisions`: recent decision-log rows, and the admin bearer-token guard.

use super::AdminState;
use crate::error::{ApiError, ErrorBody};
use crate::store::decision_log::{self, DecisionRow};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use axum::Json;
use serde::Deserialize;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct DecisionsQuery {
    /// Only this tenant's rows.
    pub tenant: Option<String>,
    /// 1..=1000, default 100.
    pub limit: Option<i64>,
}

#[utoipa::path(
    get,
    path = "/v1/decisions",
    tag = "admin",
    params(DecisionsQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, body = Vec<DecisionRow>, description = "Most recent first"),
        (status = 401, body = ErrorBody),
        (status = 503, body = ErrorBody)
    )
)]
pub async fn list(
    State(st): State<AdminState>,
    q: Result<Query<DecisionsQuery>, QueryRejection>,
) -> Result<Json<Vec<DecisionRow>>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let tenant = q.tenant.as_deref().filter(|t| !t.is_empty());
    decision_log::recent(&st.db.pool, tenant, limit)
        .await
        .map(Json)
        .map_err(|e| ApiError::StoreUnavailable(e.to_string()))
}

/// Constant-time-ish comparison (length leaks, content does not).
fn eq_ct(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub async fn require_admin_token(
    State(st): State<AdminState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if let Some(token) = &st.admin_token {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !eq_ct(given.as_bytes(), token.as_bytes()) {
            return Err(ApiError::Unauthorized);
        }
    }
    Ok(next.run(req).await)
}
