//! Routes of the feedback loop, the threshold optimiser, clusters and the active-learning
//! queue (admin listener, bearer token), merged into [`crate::api::protected_admin_routes`].

use super::active::{self, QueueParams, Queued};
use super::cluster::{self, ClusterParams};
use super::store::{self, ClusterRow, NewFeedback, Origin, ThresholdRow};
use super::threshold::{Confusion, Optimum, ThresholdError, DEFAULT_TARGET_FPR};
use super::{feedback, AnomalyError, UserLabel};
use crate::api::AdminState;
use crate::error::{ApiError, ErrorBody};
use crate::review::Source;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Largest request body of these routes (a feedback with a 4096-character comment is ~17 KiB
/// in the worst UTF-8 case).
pub const BODY_LIMIT: usize = 64 * 1024;

pub fn router() -> OpenApiRouter<AdminState> {
    OpenApiRouter::new()
        .routes(routes!(submit_feedback))
        .routes(routes!(confusion))
        .routes(routes!(optimize_threshold))
        .routes(routes!(thresholds))
        .routes(routes!(clusters))
        .routes(routes!(rebuild_clusters))
        .routes(routes!(active_learning))
        .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
}

impl From<AnomalyError> for ApiError {
    fn from(e: AnomalyError) -> Self {
        match e {
            AnomalyError::Invalid(m) => ApiError::BadRequest(m),
            AnomalyError::NoDecision { .. } => ApiError::Missing(e.to_string()),
            AnomalyError::Duplicate { .. } => ApiError::ConflictWith {
                code: "duplicate_feedback",
                message: e.to_string(),
            },
            AnomalyError::Threshold(t @ ThresholdError::BadTarget(_)) => {
                ApiError::BadRequest(t.to_string())
            }
            AnomalyError::Threshold(t @ ThresholdError::NeedsBothClasses { .. }) => {
                ApiError::ConflictWith {
                    code: "insufficient_labels",
                    message: t.to_string(),
                }
            }
            AnomalyError::Store(e) => ApiError::StoreUnavailable(e.to_string()),
        }
    }
}

/// A JSON body, or the error: 413 over [`BODY_LIMIT`], else 400.
fn body<T>(b: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    match b {
        Ok(Json(t)) => Ok(t),
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(ApiError::PayloadTooLarge),
        Err(e) => Err(ApiError::BadRequest(e.body_text())),
    }
}

/// [`body`], where no body at all means the defaults (axum refuses it as missing JSON).
fn body_or_default<T: Default>(b: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    match b {
        Err(JsonRejection::MissingJsonContentType(_)) => Ok(T::default()),
        other => body(other),
    }
}

fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(t)| t)
        .map_err(|e| ApiError::BadRequest(e.body_text()))
}

fn store_error(e: sqlx::Error) -> ApiError {
    ApiError::StoreUnavailable(e.to_string())
}

/// A label on one decision's anomaly score.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FeedbackBody {
    /// Tenant of the decision (default `default`).
    pub tenant_id: Option<String>,
    #[schema(min_length = 1, max_length = 256)]
    pub pcs_id: String,
    /// The score the label is about, within [0, 1]. Required when the decision has no
    /// recorded anomaly score; when it has one, omit it or send that score (another is a 400).
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub predicted_score: Option<f64>,
    pub user_label: UserLabel,
    /// At most 4096 characters.
    #[schema(max_length = 4096)]
    pub comment: Option<String>,
    /// Who labelled (1..=128 characters, no control characters); one feedback per decision each.
    #[schema(min_length = 1, max_length = 128)]
    pub submitted_by: String,
    /// The label store's sources: `gold` (a reviewer, e.g. of the active-learning queue),
    /// `silver` (default: the agent's owner), `bronze` (a rule).
    pub source: Option<Source>,
}

#[utoipa::path(
    post,
    path = "/v1/anomaly/feedback",
    tag = "anomaly",
    request_body = FeedbackBody,
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Stored; counted in kakeya_anomaly_feedback_total; every 100 newly labelled decisions of the tenant re-optimise its threshold"),
        (status = 400, body = ErrorBody, description = "Unknown user_label or source, empty or overlong pcs_id or submitted_by, predicted_score outside [0, 1], missing (no recorded score) or different from the recorded score, comment over 4096 characters, unknown field, malformed body; nothing stored"),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "No such decision in the decision log"),
        (status = 409, body = ErrorBody, description = "Code duplicate_feedback: this submitter gave feedback on the decision already; nothing changed"),
        (status = 413, body = ErrorBody, description = "Body over 64 KiB"),
        (status = 503, body = ErrorBody)
    )
)]
pub async fn submit_feedback(
    State(st): State<AdminState>,
    b: Result<Json<FeedbackBody>, JsonRejection>,
) -> Result<StatusCode, ApiError> {
    let b = body(b)?;
    let f = NewFeedback::checked(
        b.tenant_id.as_deref(),
        &b.pcs_id,
        b.predicted_score,
        b.user_label,
        b.comment.as_deref(),
        &b.submitted_by,
        b.source,
    )?;
    feedback::submit(&st.db, Some(&st.metrics.anomaly), &f, crate::now_ms()).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ConfusionQuery {
    /// Tenant (default `default`).
    pub tenant_id: Option<String>,
    /// Evaluate at this threshold instead of the tenant's current one.
    pub threshold: Option<f64>,
}

#[utoipa::path(
    get,
    path = "/v1/anomaly/confusion",
    tag = "anomaly",
    params(ConfusionQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, body = Confusion, description = "TP, FP, FN, TN of the tenant's labelled decisions (one label per decision: highest source, then newest) at the threshold (default the current one, else 0.98), FPR = FP/(FP+TN) and TPR = TP/(TP+FN), null without labels of the class; refreshes kakeya_anomaly_fpr/tpr/threshold"),
        (status = 400, body = ErrorBody, description = "Unknown parameter, threshold not a finite number, empty tenant_id or one with control characters"),
        (status = 401, body = ErrorBody),
        (status = 503, body = ErrorBody)
    )
)]
pub async fn confusion(
    State(st): State<AdminState>,
    q: Result<Query<ConfusionQuery>, QueryRejection>,
) -> Result<Json<Confusion>, ApiError> {
    let q = query(q)?;
    if q.threshold.is_some_and(|t| !t.is_finite()) {
        return Err(ApiError::BadRequest(
            "threshold must be a finite number".into(),
        ));
    }
    let tenant = feedback::checked_tenant(q.tenant_id.as_deref())?;
    let c = feedback::confusion(&st.db, tenant, q.threshold)
        .await
        .map_err(store_error)?;
    if q.threshold.is_none() {
        st.metrics.anomaly.set_rates(tenant, &c);
    }
    Ok(Json(c))
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OptimizeBody {
    /// Tenant (default `default`).
    pub tenant_id: Option<String>,
    /// Most share of normal decisions the threshold may flag, within [0, 1] (default 0.02).
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub target_fpr: Option<f64>,
}

#[utoipa::path(
    post,
    path = "/v1/anomaly/optimize-threshold",
    tag = "anomaly",
    request_body(content = Option<OptimizeBody>, description = "Optional; an empty body optimises tenant default at FPR ≤ 0.02"),
    security(("bearer" = [])),
    responses(
        (status = 200, body = Optimum, description = "The exact-ROC optimum: the threshold (a labelled score) with the highest TPR at FPR ≤ target_fpr, or feasible false with the lowest FPR any threshold reaches; recorded in the history, and a feasible one becomes the tenant's current threshold"),
        (status = 400, body = ErrorBody, description = "target_fpr outside [0, 1], empty tenant_id or one with control characters, unknown field, malformed body"),
        (status = 401, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "Code insufficient_labels: the tenant has no anomalous or no normal labelled decision yet"),
        (status = 413, body = ErrorBody),
        (status = 503, body = ErrorBody)
    )
)]
pub async fn optimize_threshold(
    State(st): State<AdminState>,
    b: Result<Json<OptimizeBody>, JsonRejection>,
) -> Result<Json<Optimum>, ApiError> {
    let b = body_or_default(b)?;
    let tenant = feedback::checked_tenant(b.tenant_id.as_deref())?;
    let o = feedback::optimise(
        &st.db,
        Some(&st.metrics.anomaly),
        tenant,
        b.target_fpr.unwrap_or(DEFAULT_TARGET_FPR),
        Origin::Api,
        crate::now_ms(),
    )
    .await?;
    // A feasible threshold is the tenant's current one: the next bundle carries it now.
    if o.feasible {
        if let Some(seed) = &st.bundle_seed {
            super::publication::republish(&st.db, seed).await?;
        }
    }
    Ok(Json(o))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ThresholdsQuery {
    /// Tenant (default `default`).
    pub tenant_id: Option<String>,
    /// Runs to list, 1..=1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

/// A tenant's threshold and how it got there.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Thresholds {
    /// The newest feasible run's threshold; `null` before any (the gate then uses 0.98).
    pub current: Option<f64>,
    /// Every run, newest first.
    pub history: Vec<ThresholdRow>,
}

#[utoipa::path(
    get,
    path = "/v1/anomaly/thresholds",
    tag = "anomaly",
    params(ThresholdsQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, body = Thresholds, description = "The current threshold and the optimisation runs (api, cli, or feedback every 100 labels), newest first"),
        (status = 400, body = ErrorBody, description = "Unknown parameter, limit outside 1..=1000, bad tenant_id"),
        (status = 401, body = ErrorBody),
        (status = 503, body = ErrorBody)
    )
)]
pub async fn thresholds(
    State(st): State<AdminState>,
    q: Result<Query<ThresholdsQuery>, QueryRejection>,
) -> Result<Json<Thresholds>, ApiError> {
    let q = query(q)?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::BadRequest("limit must be within 1..=1000".into()));
    }
    let tenant = feedback::checked_tenant(q.tenant_id.as_deref())?;
    Ok(Json(Thresholds {
        current: store::current_threshold(&st.db.pool, tenant)
            .await
            .map_err(store_error)?,
        history: store::threshold_history(&st.db.pool, tenant, i64::from(limit))
            .await
            .map_err(store_error)?,
    }))
}

#[utoipa::path(
    get,
    path = "/v1/anomaly/clusters",
    tag = "anomaly",
    security(("bearer" = [])),
    responses(
        (status = 200, body = Vec<ClusterRow>, description = "The stored clusters of flagged decisions (largest first): rule label, centroid in raw feature units, count, first and last seen"),
        (status = 401, body = ErrorBody),
        (status = 503, body = ErrorBody)
    )
)]
pub async fn clusters(State(st): State<AdminState>) -> Result<Json<Vec<ClusterRow>>, ApiError> {
    let c = store::clusters(&st.db.pool).await.map_err(store_error)?;
    st.metrics
        .anomaly
        .clusters
        .set(i64::try_from(c.len()).unwrap_or(i64::MAX));
    Ok(Json(c))
}

#[utoipa::path(
    post,
    path = "/v1/anomaly/clusters/rebuild",
    tag = "anomaly",
    request_body(content = Option<ClusterParams>, description = "Optional; defaults k 5, seed 7, max_distance 2.0, max_clusters 32"),
    security(("bearer" = [])),
    responses(
        (status = 200, body = Vec<ClusterRow>, description = "Clusters rebuilt from the newest 10,000 flagged decisions (k-means++ with the seed, then a new cluster per point farther than max_distance), replacing the stored ones; the same decisions and seed give the same clusters"),
        (status = 400, body = ErrorBody, description = "k outside 1..=64, max_distance not > 0, max_clusters outside 1..=256, unknown field, malformed body; nothing changed"),
        (status = 401, body = ErrorBody),
        (status = 413, body = ErrorBody),
        (status = 503, body = ErrorBody)
    )
)]
pub async fn rebuild_clusters(
    State(st): State<AdminState>,
    b: Result<Json<ClusterParams>, JsonRejection>,
) -> Result<Json<Vec<ClusterRow>>, ApiError> {
    let p = body_or_default(b)?;
    Ok(Json(
        cluster::rebuild(&st.db, Some(&st.metrics.anomaly), &p, crate::now_ms()).await?,
    ))
}

#[utoipa::path(
    post,
    path = "/v1/anomaly/active-learning",
    tag = "anomaly",
    request_body(content = Option<QueueParams>, description = "Optional; defaults 20 uncertain, 5 audit, seed 7, every tenant"),
    security(("bearer" = [])),
    responses(
        (status = 200, body = Vec<Queued>, description = "Decisions sent to the review queue: the most uncertain (|score − threshold| − uncertainty smallest; queued_for anomaly_uncertain) and a seeded random sample of the rest below the threshold (anomaly_audit)"),
        (status = 400, body = ErrorBody, description = "uncertain or audit over 1000, bad tenant_id, unknown field, malformed body; nothing queued"),
        (status = 401, body = ErrorBody),
        (status = 413, body = ErrorBody),
        (status = 503, body = ErrorBody)
    )
)]
pub async fn active_learning(
    State(st): State<AdminState>,
    b: Result<Json<QueueParams>, JsonRejection>,
) -> Result<Json<Vec<Queued>>, ApiError> {
    let p = body_or_default(b)?;
    Ok(Json(active::queue(&st.db, &p).await?))
}
