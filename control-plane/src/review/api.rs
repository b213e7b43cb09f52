//! Routes of the review queue and the feedback API (admin listener, bearer token), merged
//! into [`crate::api::protected_admin_routes`] so they are served and documented together.

use super::store::{self, QueueStatus, QueuedFor, ReviewItem};
use super::{Label, LabelError, LabelRow, NewLabel, Source, Submitted};
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

/// The review routes, with their OpenAPI description.
pub fn router() -> OpenApiRouter<AdminState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(review))
        .routes(routes!(feedback))
}

impl From<LabelError> for ApiError {
    fn from(e: LabelError) -> Self {
        match e {
            LabelError::Invalid(m) => ApiError::BadRequest(m),
            LabelError::NoDecision { .. } => ApiError::Missing(e.to_string()),
            LabelError::Conflict(_) => ApiError::ConflictWith {
                code: "label_conflict",
                message: e.to_string(),
            },
            LabelError::Store(e) => ApiError::StoreUnavailable(e.to_string()),
        }
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReviewsQuery {
    /// `open` (default): not labelled yet; `labelled`: with at least one label; `all`.
    #[param(inline)]
    pub status: Option<QueueStatus>,
    /// Only decisions queued for this reason: `escalated` (by the gate), `audit_sample`
    /// (accepted, drawn into the audit sample), `anomaly_uncertain` or `anomaly_audit` (sent
    /// by anomaly active learning); omit for all.
    #[param(inline)]
    pub queued_for: Option<QueuedFor>,
    /// Only this tenant's decisions (empty: every tenant).
    pub tenant_id: Option<String>,
    /// Items per page, 1..=1000 (default 100); anything else is a 400.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page; omit for the newest decisions.
    pub cursor: Option<String>,
}

/// One page of the review queue.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReviewsPage {
    /// Queued decisions (escalated or audit-sampled, see `queued_for`), newest first.
    pub items: Vec<ReviewItem>,
    /// Pass as `cursor` for the next (older) page; `null` on the last page.
    pub next_cursor: Option<String>,
    /// The names of an item's `features` when its `feature_schema` is `feature_schema_version`
    /// (the current schema), in order.
    pub feature_names: Vec<String>,
    pub feature_schema_version: String,
}

#[utoipa::path(
    get,
    path = "/v1/reviews",
    tag = "review",
    params(ReviewsQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, body = ReviewsPage, description = "Queued decisions (escalated, or accepted and drawn into the audit sample: `queued_for`), newest first, with their labels and, for tenants opted in to evidence retention, their evidence (decrypted; null when not retained or unreadable); follow next_cursor for older ones"),
        (status = 400, body = ErrorBody, description = "Unknown status or queued_for, limit outside 1..=1000, malformed cursor or query"),
        (status = 401, body = ErrorBody),
        (status = 503, body = ErrorBody)
    )
)]
pub async fn list(
    State(st): State<AdminState>,
    q: Result<Query<ReviewsQuery>, QueryRejection>,
) -> Result<Json<ReviewsPage>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let (limit, before) = page_args(q.limit, q.cursor.as_deref())?;
    let tenant = q.tenant_id.as_deref().filter(|t| !t.is_empty());
    let status = q.status.unwrap_or_default();
    // One item more than asked tells whether another page follows.
    let mut items = store::queue_page(
        &st.db.pool,
        status,
        q.queued_for,
        tenant,
        before,
        i64::from(limit) + 1,
    )
    .await
    .map_err(|e| ApiError::StoreUnavailable(e.to_string()))?;
    let next_cursor = finish_page(&mut items, limit, |i| i.decision_id);
    if let Some(vault) = &st.evidence {
        crate::evidence::attach(
            &st.db.pool,
            Some(vault),
            &vault.config.tenants,
            &mut items,
            tenant,
            crate::now_ms(),
        )
        .await
        .map_err(|e| ApiError::StoreUnavailable(e.to_string()))?;
    }
    Ok(Json(ReviewsPage {
        items,
        next_cursor,
        feature_names: kakeya_core::features::FEATURE_NAMES
            .iter()
            .map(|s| s.to_string())
            .collect(),
        feature_schema_version: kakeya_core::features::SCHEMA_VERSION.into(),
    }))
}

/// A reviewer's verdict on a decision (escalated, audit-sampled or any other logged one).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReviewBody {
    pub label: Label,
    /// Who judged (stored as the labeller); 1..=128 characters, no control characters, not
    /// `owner` (the labeller of feedback).
    #[schema(min_length = 1, max_length = 128)]
    pub reviewer: String,
    /// At most 4096 characters.
    #[schema(max_length = 4096)]
    pub comment: Option<String>,
}

/// 201 for a new label, 200 when the labeller had given this very label already.
fn answer(s: Submitted) -> (StatusCode, Json<LabelRow>) {
    match s {
        Submitted::Created(r) => (StatusCode::CREATED, Json(r)),
        Submitted::Existing(r) => (StatusCode::OK, Json(r)),
    }
}

#[utoipa::path(
    post,
    path = "/v1/reviews/{tenant}/{pcs_id}",
    tag = "review",
    params(
        ("tenant" = String, Path, description = "Tenant of the decision"),
        ("pcs_id" = String, Path, description = "pcs_id of the decision")
    ),
    request_body = ReviewBody,
    security(("bearer" = [])),
    responses(
        (status = 201, body = LabelRow, description = "Label stored (source gold, confidence 1.0, labeller = reviewer)"),
        (status = 200, body = LabelRow, description = "This reviewer had given this label already; the stored row, unchanged"),
        (status = 400, body = ErrorBody, description = "Unknown label, empty, overlong or reserved (owner) reviewer, comment over 4096 characters, malformed body"),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "No such decision in the decision log"),
        (status = 409, body = ErrorBody, description = "code label_conflict: this reviewer labelled the decision differently; nothing changed"),
        (status = 503, body = ErrorBody)
    )
)]
pub async fn review(
    State(st): State<AdminState>,
    path: Result<Path<(String, String)>, PathRejection>,
    body: Result<Json<ReviewBody>, JsonRejection>,
) -> Result<(StatusCode, Json<LabelRow>), ApiError> {
    let Path((tenant, pcs_id)) = path.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let Json(b) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let l = NewLabel::review(&tenant, &pcs_id, b.label, &b.reviewer, b.comment.as_deref())?;
    Ok(answer(super::submit(&st.db, &l, crate::now_ms()).await?))
}

/// A label from the agent's owner, possibly long after the decision.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FeedbackBody {
    /// Tenant of the decision (default `default`).
    #[schema(min_length = 1)]
    pub tenant_id: Option<String>,
    #[schema(min_length = 1)]
    pub pcs_id: String,
    pub label: Label,
    /// `silver` (default, confidence 0.8) or `bronze` (0.5); `gold` is refused (400): it is
    /// the review queue's.
    pub source: Option<Source>,
}

#[utoipa::path(
    post,
    path = "/v1/feedback",
    tag = "review",
    request_body = FeedbackBody,
    security(("bearer" = [])),
    responses(
        (status = 201, body = LabelRow, description = "Label stored (labeller owner)"),
        (status = 200, body = LabelRow, description = "The owner had given this label already; the stored row, unchanged"),
        (status = 400, body = ErrorBody, description = "Unknown label or source, gold source, empty tenant_id or pcs_id, malformed body"),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "No such decision in the decision log"),
        (status = 409, body = ErrorBody, description = "code label_conflict: the owner labelled the decision differently; nothing changed"),
        (status = 503, body = ErrorBody)
    )
)]
pub async fn feedback(
    State(st): State<AdminState>,
    body: Result<Json<FeedbackBody>, JsonRejection>,
) -> Result<(StatusCode, Json<LabelRow>), ApiError> {
    let Json(b) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let l = NewLabel::feedback(b.tenant_id.as_deref(), &b.pcs_id, b.label, b.source)?;
    Ok(answer(super::submit(&st.db, &l, crate::now_ms()).await?))
}
