//! `GET /v1/ensemble/disagreements`: the ensemble's disagreement audit events
//! ([`crate::store::disagreements`]), newest first, a page at a time (the paging rules of
//! `/v1/decisions`).

use super::decisions::{finish_page, page_args};
use super::AdminState;
use crate::error::{ApiError, ErrorBody};
use crate::store::disagreements::{self, DisagreementRow};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DisagreementsQuery {
    /// Only this tenant's events (empty: every tenant).
    pub tenant_id: Option<String>,
    /// Rows per page, 1..=1000 (default 100); anything else is a 400.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page; omit for the newest rows.
    pub cursor: Option<String>,
}

/// One page of disagreements.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DisagreementsPage {
    /// Newest first.
    pub disagreements: Vec<DisagreementRow>,
    /// Pass as `cursor` for the next (older) page; `null` on the last page.
    pub next_cursor: Option<String>,
}

#[utoipa::path(
    get,
    path = "/v1/ensemble/disagreements",
    tag = "admin",
    params(DisagreementsQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, body = DisagreementsPage, description = "Newest first; follow next_cursor for older rows"),
        (status = 400, body = ErrorBody, description = "limit outside 1..=1000, malformed cursor or query"),
        (status = 401, body = ErrorBody),
        (status = 503, body = ErrorBody)
    )
)]
pub async fn list(
    State(st): State<AdminState>,
    q: Result<Query<DisagreementsQuery>, QueryRejection>,
) -> Result<Json<DisagreementsPage>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let (limit, before) = page_args(q.limit, q.cursor.as_deref())?;
    let tenant = q.tenant_id.as_deref().filter(|t| !t.is_empty());
    let mut rows = disagreements::page(&st.db.pool, tenant, before, i64::from(limit) + 1)
        .await
        .map_err(|e| ApiError::StoreUnavailable(e.to_string()))?;
    let next_cursor = finish_page(&mut rows, limit, |r| r.id);
    Ok(Json(DisagreementsPage {
        disagreements: rows,
        next_cursor,
    }))
}
