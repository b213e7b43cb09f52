//! Task-aware models of a registered model (admin listener, bearer token):
//! `GET /v1/models/{version}/tasks` lists its children, `PUT /v1/models/{version}/tasks/{task}`
//! attaches one ([`registry::task_models`]; republished at once when the model is the
//! champion).

use super::registry::{refused, seed};
use super::AdminState;
use crate::error::{ApiError, ErrorBody};
use crate::registry::task_models::{self, TaskChild};
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::Json;
use kakeya_core::task::TaskKind;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AdminState> {
    OpenApiRouter::new()
        .routes(routes!(list_tasks))
        .routes(routes!(put_task))
}

#[utoipa::path(
    get,
    path = "/v1/models/{version}/tasks",
    tag = "registry",
    params(("version" = String, Path, description = "The parent model")),
    security(("bearer" = [])),
    responses(
        (status = 200, body = Vec<TaskChild>, description = "Its task models, by tenant then task (none: an empty list)"),
        (status = 401, body = ErrorBody),
        (status = 503, body = ErrorBody)
    )
)]
pub async fn list_tasks(
    State(st): State<AdminState>,
    Path(version): Path<String>,
) -> Result<Json<Vec<TaskChild>>, ApiError> {
    Ok(Json(task_models::children(&st.db, &version).await?))
}

/// `PUT /v1/models/{version}/tasks/{task}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskBody {
    /// The registered model that scores this task.
    pub model: String,
    /// Only for this tenant (absent: every tenant).
    #[serde(default)]
    pub tenant: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TaskAttached {
    pub parent: String,
    pub child: TaskChild,
    /// The bundle published with it when the parent is the champion; absent otherwise (the
    /// child rides along when the parent is promoted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bundle_version: Option<i64>,
}

#[utoipa::path(
    put,
    path = "/v1/models/{version}/tasks/{task}",
    tag = "registry",
    params(
        ("version" = String, Path, description = "The parent model"),
        ("task" = String, Path, description = "qa, dialogue, summarization, rag or other")
    ),
    request_body = TaskBody,
    security(("bearer" = [])),
    responses(
        (status = 200, body = TaskAttached, description = "Attached (replacing the slot's earlier child)"),
        (status = 400, body = ErrorBody, description = "Unknown task, malformed body, the model itself, another feature schema, or a bad tenant"),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "Parent or child not registered"),
        (status = 409, body = ErrorBody, description = "A stored row failed its integrity check (code `integrity_failure`); nothing was published"),
        (status = 503, body = ErrorBody)
    )
)]
pub async fn put_task(
    State(st): State<AdminState>,
    Path((version, task)): Path<(String, String)>,
    body: Result<Json<TaskBody>, JsonRejection>,
) -> Result<Json<TaskAttached>, ApiError> {
    let kind = TaskKind::parse(&task).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "unknown task {:?}: use qa, dialogue, summarization, rag or other",
            task.chars().take(64).collect::<String>()
        ))
    })?;
    let Json(b) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let now = crate::now_ms();
    let published = task_models::attach(
        &st.db,
        seed(&st)?,
        &version,
        kind,
        b.tenant.as_deref(),
        &b.model,
        now,
    )
    .await
    .map_err(refused)?;
    tracing::info!(
        parent = %version, task = %task, child = %b.model,
        bundle = published.as_ref().map(|p| p.bundle_version),
        "task model attached"
    );
    Ok(Json(TaskAttached {
        parent: version,
        child: TaskChild {
            task: kind.as_str().into(),
            tenant: b.tenant,
            model: b.model,
            created_at_ms: now,
        },
        bundle_version: published.map(|p| p.bundle_version),
    }))
}
