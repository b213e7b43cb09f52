//! Model registry and bundle endpoints (admin listener).
//!
//! `GET /v1/bundles/current` is the one unauthenticated route besides health and readiness:
//! the gate filters poll it without a token, and what it serves is signed (they verify the
//! signature with the key in their configuration). The others ([`router`]) need the bearer
//! token. The seed's names (`POST /v1/hrs/register`, `POST /v1/hrs/activate`) and ours
//! (`/v1/models`, `/v1/aliases/*`) call the same registry functions
//! ([`registry::register_model`], [`registry::move_alias`], [`registry::move_canary`]); every
//! alias move is recorded with the actor `admin-api` (the API has one token, hence one
//! identity).

use super::decisions::{finish_page, page_args};
use super::AdminState;
use crate::error::{ApiError, ErrorBody};
use crate::registry::{
    self, card, history, Actor, AliasRow, HistoryEntry, ModelDetail, ModelSummary, Published,
    Registered, RegistryError, StatedReason, Why, CANARY, CHALLENGER, CHAMPION,
};
use axum::body::Bytes;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use kakeya_core::bundle::{ArmKey, H_SHA256, H_SIGNATURE};
use kakeya_core::model::Model;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The registry routes that need the bearer token, with their OpenAPI description.
pub fn router() -> OpenApiRouter<AdminState> {
    OpenApiRouter::new()
        .routes(routes!(list_models, post_model))
        .routes(routes!(get_model))
        .routes(routes!(history))
        .routes(routes!(list_aliases))
        .routes(routes!(set_challenger, delete_challenger))
        .routes(routes!(set_canary, delete_canary))
        .routes(routes!(set_alias))
        .routes(routes!(hrs_register))
        .routes(routes!(hrs_activate))
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::Exists(_) | RegistryError::Conflict(_) => {
                ApiError::Conflict(e.to_string())
            }
            RegistryError::NoModel(_) | RegistryError::NoChallenger | RegistryError::NoCanary => {
                ApiError::Missing(e.to_string())
            }
            RegistryError::ConflictWith { code, message } => {
                ApiError::ConflictWith { code, message }
            }
            RegistryError::Invalid(m) => ApiError::BadRequest(m),
            RegistryError::Integrity(e) => ApiError::Integrity {
                refused: false,
                message: e.to_string(),
            },
            RegistryError::Store(e) => ApiError::StoreUnavailable(e.to_string()),
        }
    }
}

/// A publication (alias change) that failed: a model row failing its integrity check refuses
/// the change (409 `integrity_failure`); nothing was published.
pub(crate) fn refused(e: RegistryError) -> ApiError {
    match e {
        RegistryError::Integrity(e) => ApiError::Integrity {
            refused: true,
            message: e.to_string(),
        },
        e => e.into(),
    }
}

fn store(e: sqlx::Error) -> ApiError {
    ApiError::StoreUnavailable(e.to_string())
}

/// True when an `If-None-Match` value names `etag` (or is `*`).
fn none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == etag || t == "*")
}

#[utoipa::path(
    get,
    path = "/v1/bundles/current",
    tag = "registry",
    responses(
        (status = 200, description = "The canonical JSON bytes of the newest signed bundle (kakeya_core::bundle::Bundle); headers x-kakeya-bundle-sha256, x-kakeya-bundle-signature, ETag"),
        (status = 304, description = "If-None-Match names the current bundle"),
        (status = 404, body = ErrorBody, description = "No bundle published yet"),
        (status = 500, body = ErrorBody, description = "Code `integrity_failure`: the stored bundle row failed its integrity check (SHA-256, signature or format); it is not served (the filters keep their last good bundle)"),
        (status = 503, body = ErrorBody)
    )
)]
pub async fn current_bundle(
    State(st): State<AdminState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let key = crate::registry::keys::public_key_b64(seed(&st)?);
    let (b, _) = registry::served_bundle(&st.db, &key)
        .await?
        .ok_or_else(|| ApiError::Missing("no bundle published yet".into()))?;
    let etag = format!("\"{}\"", b.sha256);
    let header_value =
        |v: &str| HeaderValue::from_str(v).map_err(|e| ApiError::Internal(e.to_string()));
    let mut resp = if none_match(&headers, &etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut r = b.bytes.into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        r
    };
    let h = resp.headers_mut();
    h.insert(header::ETAG, header_value(&etag)?);
    h.insert(H_SHA256, header_value(&b.sha256)?);
    h.insert(H_SIGNATURE, header_value(&b.signature)?);
    h.insert(
        "x-kakeya-bundle-version",
        header_value(&b.version.to_string())?,
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(resp)
}

#[utoipa::path(
    get,
    path = "/v1/models",
    tag = "registry",
    security(("bearer" = [])),
    responses(
        (status = 200, body = Vec<ModelSummary>, description = "Newest first, with each artifact's SHA-256 and Ed25519 signature"),
        (status = 401, body = ErrorBody),
        (status = 503, body = ErrorBody)
    )
)]
pub async fn list_models(
    State(st): State<AdminState>,
) -> Result<Json<Vec<ModelSummary>>, ApiError> {
    registry::list_models(&st.db).await.map(Json).map_err(store)
}

#[utoipa::path(
    get,
    path = "/v1/models/{version}",
    tag = "registry",
    params(("version" = String, Path, description = "lr-<12 hex> or gbdt-<12 hex>")),
    security(("bearer" = [])),
    responses(
        (status = 200, body = ModelDetail, description = "Artifact, its SHA-256 and Ed25519 signature, and model card"),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 503, body = ErrorBody)
    )
)]
pub async fn get_model(
    State(st): State<AdminState>,
    Path(version): Path<String>,
) -> Result<Json<ModelDetail>, ApiError> {
    registry::get_model(&st.db, &version)
        .await
        .map_err(store)?
        .map(Json)
        .ok_or_else(|| ApiError::Missing(format!("no model {version}")))
}

/// Parses an artifact and registers it ([`registry::register_model`], with the card of an
/// uploaded artifact): what `POST /v1/models`, `POST /v1/hrs/register` and
/// `kakeya model register` do.
pub async fn register(
    db: &crate::store::Db,
    seed: &[u8; 32],
    bytes: &[u8],
) -> Result<Registered, ApiError> {
    let m = Model::from_json(bytes)
        .map_err(|e| ApiError::BadRequest(format!("invalid model artifact: {e}")))?;
    registry::register_model(db, seed, &m, &card::from_artifact(&m), crate::now_ms())
        .await
        .map_err(refused)
}

#[utoipa::path(
    post,
    path = "/v1/models",
    tag = "registry",
    request_body(content = Object, description = "A model artifact (kakeya_core::model::Model JSON of either kind, as written by kakeya train)", content_type = "application/json"),
    security(("bearer" = [])),
    responses(
        (status = 201, body = ModelSummary),
        (status = 400, body = ErrorBody, description = "Not a valid artifact for this build's feature schema"),
        (status = 401, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "Already registered (code `conflict`; POST /v1/hrs/register answers 200 with the stored row instead), or the stored row of this version failed its integrity check (code `integrity_failure`)"),
        (status = 503, body = ErrorBody)
    )
)]
pub async fn post_model(
    State(st): State<AdminState>,
    body: Bytes,
) -> Result<(StatusCode, Json<ModelSummary>), ApiError> {
    let r = register(&st.db, seed(&st)?, &body).await?;
    if !r.new {
        return Err(RegistryError::Exists(r.summary.version).into());
    }
    Ok((StatusCode::CREATED, Json(r.summary)))
}

/// `POST /v1/hrs/register`: the registered model, in the seed's terms.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HrsRegistered {
    pub version: String,
    /// SHA-256 (hex) of the artifact's canonical bytes.
    pub binary_hash: String,
    /// Always `registered`: the model is in the registry (aliases say where it serves).
    pub status: String,
    /// Ed25519 signature of the artifact's SHA-256 by the bundle signing key.
    pub signature: Option<String>,
    /// Aliases pointing at this model.
    pub aliases: Vec<String>,
    pub created_at_ms: i64,
    /// The stored model card.
    #[schema(value_type = Object)]
    pub card: serde_json::Value,
}

impl HrsRegistered {
    fn of(s: ModelSummary, card: serde_json::Value) -> Self {
        HrsRegistered {
            version: s.version,
            binary_hash: s.sha256,
            status: "registered".into(),
            signature: s.signature,
            aliases: s.aliases,
            created_at_ms: s.created_at_ms,
            card,
        }
    }
}

#[utoipa::path(
    post,
    path = "/v1/hrs/register",
    tag = "registry",
    request_body(content = Object, description = "A model artifact (kakeya_core::model::HrsModel JSON, as written by kakeya train), or `{\"job_id\": N}` of a succeeded training job (which registered its model already: the stored row, 200)", content_type = "application/json"),
    security(("bearer" = [])),
    responses(
        (status = 201, body = HrsRegistered, description = "Registered (signed with the bundle signing key)"),
        (status = 200, body = HrsRegistered, description = "This artifact was registered already; the stored row, unchanged"),
        (status = 400, body = ErrorBody, description = "Not a valid artifact for this build's feature schema, nor a `{job_id}`"),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "`{job_id}`: no such training job"),
        (status = 409, body = ErrorBody, description = "The stored row of this version failed its integrity check (code `integrity_failure`) or holds another artifact (code `conflict`); `{job_id}`: the job has not succeeded (code `job_not_succeeded`)"),
        (status = 503, body = ErrorBody)
    )
)]
pub async fn hrs_register(
    State(st): State<AdminState>,
    body: Bytes,
) -> Result<(StatusCode, Json<HrsRegistered>), ApiError> {
    if let Some(job_id) = job_reference(&body) {
        return registered_by_job(&st, job_id).await;
    }
    let r = register(&st.db, seed(&st)?, &body).await?;
    let status = if r.new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let s = r.summary;
    Ok((status, Json(HrsRegistered::of(s, r.card))))
}

/// `{"job_id": N}` (that key only), the training-job form of `POST /v1/hrs/register`.
fn job_reference(body: &[u8]) -> Option<i64> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct JobRef {
        job_id: i64,
    }
    serde_json::from_slice::<JobRef>(body)
        .ok()
        .map(|j| j.job_id)
}

/// A succeeded training job registered its model when it finished (signed, no alias moved):
/// answer that stored row, as for an artifact registered again.
async fn registered_by_job(
    st: &AdminState,
    job_id: i64,
) -> Result<(StatusCode, Json<HrsRegistered>), ApiError> {
    let version = crate::learn::jobs::registered_version(&st.db, job_id).await?;
    let d = registry::get_model(&st.db, &version)
        .await
        .map_err(|e| ApiError::StoreUnavailable(format!("registry: {e}")))?
        .ok_or_else(|| {
            ApiError::Missing(format!("job {job_id}'s model {version} is not registered"))
        })?;
    let s = d.summary;
    Ok((StatusCode::OK, Json(HrsRegistered::of(s, d.card))))
}

/// `POST /v1/hrs/activate`: make a registered model the champion.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActivateBody {
    /// Registered model version.
    #[schema(min_length = 1)]
    pub version: String,
    /// Why (default `manual`), recorded in the alias history.
    pub reason: Option<StatedReason>,
    /// Recorded in the alias history; at most 1024 characters.
    #[schema(max_length = 1024)]
    pub comment: Option<String>,
}

/// What `POST /v1/hrs/activate` answers.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Activated {
    /// The champion now.
    pub active: String,
    /// The champion before (`null`: none).
    pub previous: Option<String>,
    /// The bundle published with the move.
    pub bundle_version: i64,
    /// The move as recorded in the alias history.
    pub moved: HistoryEntry,
}

#[utoipa::path(
    post,
    path = "/v1/hrs/activate",
    tag = "registry",
    request_body = ActivateBody,
    security(("bearer" = [])),
    responses(
        (status = 200, body = Activated, description = "The model is the champion; a new signed bundle is published and the move recorded"),
        (status = 400, body = ErrorBody, description = "Malformed body, unknown reason, comment over 1024 characters"),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "No such model"),
        (status = 409, body = ErrorBody, description = "Code `integrity_failure`: the model row (or the challenger's) failed its integrity check (SHA-256, version, signature); nothing is published"),
        (status = 503, body = ErrorBody)
    )
)]
pub async fn hrs_activate(
    State(st): State<AdminState>,
    body: Result<Json<ActivateBody>, JsonRejection>,
) -> Result<Json<Activated>, ApiError> {
    let Json(b) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let p = move_by_api(&st, CHAMPION, &b.version, None, None, b.reason, b.comment).await?;
    let moved = p
        .moved
        .ok_or_else(|| ApiError::Internal("the move was not recorded".into()))?;
    Ok(Json(Activated {
        active: b.version,
        previous: moved.previous_version.clone(),
        bundle_version: p.bundle_version,
        moved,
    }))
}

/// Who moves an alias through the API, and why.
fn api_why(reason: Option<StatedReason>, comment: Option<String>) -> Why {
    Why {
        actor: Actor::AdminApi,
        reason: reason.unwrap_or_default().into(),
        comment,
    }
}

/// [`registry::move_alias`] (the canary with a weight: [`registry::move_canary`]) for an API
/// caller, logged.
async fn move_by_api(
    st: &AdminState,
    alias: &str,
    version: &str,
    weight: Option<f64>,
    key: Option<ArmKey>,
    reason: Option<StatedReason>,
    comment: Option<String>,
) -> Result<Published, ApiError> {
    let why = api_why(reason, comment);
    let (db, seed, now) = (&st.db, seed(st)?, crate::now_ms());
    let p = match (alias, weight) {
        (CANARY, Some(w)) => registry::move_canary(db, seed, version, w, key, &why, now).await,
        _ if key.is_some() => Err(RegistryError::Invalid(format!(
            "key applies to the {CANARY} only"
        ))),
        _ => registry::move_alias(db, seed, alias, version, weight, &why, now).await,
    }
    .map_err(refused)?;
    tracing::info!(
        alias,
        version,
        bundle = p.bundle_version,
        reason = why.reason.as_str(),
        "alias moved"
    );
    Ok(p)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AliasBody {
    /// Registered model version.
    pub version: String,
    /// Challenger and canary (required for both): share (0..=1) of tenants or requests it
    /// scores. The canary takes its share first; the challenger splits the rest.
    pub weight: Option<f64>,
    /// Canary only: what its consistent hash is keyed by, `tenant` (sticky per tenant) or
    /// `request` (`tenant/pcs_id`: one tenant's requests split). Default: the canary's current
    /// key, `tenant` for a new canary.
    #[schema(value_type = Option<String>, pattern = "^(tenant|request)$")]
    pub key: Option<ArmKey>,
    /// Why (default `manual`), recorded in the alias history.
    pub reason: Option<StatedReason>,
    /// Recorded in the alias history; at most 1024 characters.
    #[schema(max_length = 1024)]
    pub comment: Option<String>,
}

/// The bundle signing key, or 503 when none is loaded.
pub(crate) fn seed(st: &AdminState) -> Result<&[u8; 32], ApiError> {
    st.bundle_seed
        .as_deref()
        .ok_or_else(|| ApiError::NotReady("no bundle signing key loaded".into()))
}

#[utoipa::path(
    post,
    path = "/v1/aliases/{alias}",
    tag = "registry",
    params(("alias" = String, Path, description = "champion, challenger or canary")),
    request_body = AliasBody,
    security(("bearer" = [])),
    responses(
        (status = 200, body = Published, description = "Alias set; a new signed bundle is published and the move recorded in the alias history (actor admin-api)"),
        (status = 400, body = ErrorBody, description = "Unknown alias, weight missing or out of range, key for an alias other than the canary, unknown reason, comment over 1024 characters, malformed body"),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "No such model"),
        (status = 409, body = ErrorBody, description = "A challenger or canary needs a champion (code `conflict`), a canary while an A/B experiment runs (code `experiment_running`), or a model row it loads failed its integrity check (code `integrity_failure`): nothing is published"),
        (status = 503, body = ErrorBody)
    )
)]
pub async fn set_alias(
    State(st): State<AdminState>,
    Path(alias): Path<String>,
    body: Result<Json<AliasBody>, JsonRejection>,
) -> Result<Json<Published>, ApiError> {
    let Json(b) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let p = move_by_api(
        &st, &alias, &b.version, b.weight, b.key, b.reason, b.comment,
    )
    .await?;
    Ok(Json(p))
}

#[utoipa::path(
    get,
    path = "/v1/aliases",
    tag = "registry",
    security(("bearer" = [])),
    responses(
        (status = 200, body = Vec<AliasRow>, description = "The aliases that are set: champion, challenger (weight), canary (weight, key)"),
        (status = 401, body = ErrorBody),
        (status = 503, body = ErrorBody)
    )
)]
pub async fn list_aliases(State(st): State<AdminState>) -> Result<Json<Vec<AliasRow>>, ApiError> {
    let mut conn = st.db.pool.acquire().await.map_err(store)?;
    registry::aliases(&mut conn).await.map(Json).map_err(store)
}

/// `POST /v1/aliases/canary` (a static route, next to its `DELETE`).
#[utoipa::path(
    post,
    path = "/v1/aliases/canary",
    tag = "registry",
    request_body = AliasBody,
    security(("bearer" = [])),
    responses(
        (status = 200, body = Published, description = "Canary set, or its weight or key changed (the same version again); a new signed bundle is published and the move recorded in the alias history (actor admin-api). Filters take it within one poll interval"),
        (status = 400, body = ErrorBody, description = "Weight missing, not a number or outside [0, 1]; unknown key or reason; comment over 1024 characters; malformed body"),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "No such model"),
        (status = 409, body = ErrorBody, description = "An A/B experiment is running (code `experiment_running`; stop it first), no champion (code `conflict`), or a model row it loads failed its integrity check (code `integrity_failure`): nothing is published"),
        (status = 503, body = ErrorBody)
    )
)]
pub async fn set_canary(
    st: State<AdminState>,
    body: Result<Json<AliasBody>, JsonRejection>,
) -> Result<Json<Published>, ApiError> {
    set_alias(st, Path(CANARY.to_string()), body).await
}

#[utoipa::path(
    delete,
    path = "/v1/aliases/canary",
    tag = "registry",
    params(RemoveQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, body = Published, description = "Canary removed; a new signed bundle is published and the removal recorded: within one poll interval no request is scored by it"),
        (status = 400, body = ErrorBody, description = "Unknown reason, comment over 1024 characters"),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "No canary"),
        (status = 409, body = ErrorBody, description = "Code `integrity_failure`: a model row of the remaining aliases failed its integrity check; nothing is published"),
        (status = 503, body = ErrorBody)
    )
)]
pub async fn delete_canary(
    st: State<AdminState>,
    q: Result<Query<RemoveQuery>, QueryRejection>,
) -> Result<Json<Published>, ApiError> {
    remove_by_api(st, CANARY, q).await
}

/// `POST /v1/aliases/challenger` (a static route, next to its `DELETE`).
#[utoipa::path(
    post,
    path = "/v1/aliases/challenger",
    tag = "registry",
    request_body = AliasBody,
    security(("bearer" = [])),
    responses(
        (status = 200, body = Published, description = "Challenger set; a new signed bundle is published and the move recorded in the alias history (actor admin-api)"),
        (status = 400, body = ErrorBody, description = "Weight missing or out of range, unknown reason, comment over 1024 characters, malformed body"),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "No such model"),
        (status = 409, body = ErrorBody, description = "A challenger needs a champion (code `conflict`), or a model row it loads failed its integrity check (code `integrity_failure`): nothing is published"),
        (status = 503, body = ErrorBody)
    )
)]
pub async fn set_challenger(
    st: State<AdminState>,
    body: Result<Json<AliasBody>, JsonRejection>,
) -> Result<Json<Published>, ApiError> {
    set_alias(st, Path(CHALLENGER.to_string()), body).await
}

/// Why the challenger or the canary is removed (query of `DELETE /v1/aliases/challenger` and
/// `DELETE /v1/aliases/canary`).
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RemoveQuery {
    /// Why (default `manual`), recorded in the alias history.
    #[param(inline)]
    pub reason: Option<StatedReason>,
    /// Recorded in the alias history; at most 1024 characters.
    #[param(max_length = 1024)]
    pub comment: Option<String>,
}

#[utoipa::path(
    delete,
    path = "/v1/aliases/challenger",
    tag = "registry",
    params(RemoveQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, body = Published, description = "Challenger removed; a new signed bundle is published and the removal recorded"),
        (status = 400, body = ErrorBody, description = "Unknown reason, comment over 1024 characters"),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "No challenger"),
        (status = 409, body = ErrorBody, description = "Code `integrity_failure`: the champion's model row failed its integrity check; nothing is published"),
        (status = 503, body = ErrorBody)
    )
)]
pub async fn delete_challenger(
    st: State<AdminState>,
    q: Result<Query<RemoveQuery>, QueryRejection>,
) -> Result<Json<Published>, ApiError> {
    remove_by_api(st, CHALLENGER, q).await
}

/// [`registry::remove_alias`] for an API caller, logged.
async fn remove_by_api(
    State(st): State<AdminState>,
    alias: &str,
    q: Result<Query<RemoveQuery>, QueryRejection>,
) -> Result<Json<Published>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let why = api_why(q.reason, q.comment);
    let p = registry::remove_alias(&st.db, seed(&st)?, alias, &why, crate::now_ms())
        .await
        .map_err(refused)?;
    tracing::info!(
        alias,
        bundle = p.bundle_version,
        reason = why.reason.as_str(),
        "alias removed"
    );
    Ok(Json(p))
}

/// The aliases whose history can be listed.
#[derive(Debug, Clone, Copy, Deserialize, utoipa::ToSchema, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum HistoryAlias {
    Champion,
    Challenger,
    Canary,
}

impl HistoryAlias {
    pub fn as_str(self) -> &'static str {
        match self {
            HistoryAlias::Champion => CHAMPION,
            HistoryAlias::Challenger => CHALLENGER,
            HistoryAlias::Canary => CANARY,
        }
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// Only this alias's moves (default: every alias).
    #[param(inline)]
    pub alias: Option<HistoryAlias>,
    /// Moves per page, 1..=1000 (default 100); anything else is a 400.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page; omit for the newest moves.
    pub cursor: Option<String>,
}

/// One page of the alias history.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HistoryPage {
    /// Newest first.
    pub items: Vec<HistoryEntry>,
    /// Pass as `cursor` for the next (older) page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// One page of the alias history (`limit` and `cursor` as `/v1/decisions` takes them): what
/// `GET /v1/aliases/history` and `kakeya model history` show.
pub async fn history_page(
    db: &crate::store::Db,
    alias: Option<HistoryAlias>,
    limit: Option<u32>,
    cursor: Option<&str>,
) -> Result<HistoryPage, ApiError> {
    let (limit, before) = page_args(limit, cursor)?;
    let mut conn = db.pool.acquire().await.map_err(store)?;
    // One row more than asked tells whether another page follows.
    let mut items = history::page(
        &mut conn,
        alias.map(HistoryAlias::as_str),
        before,
        i64::from(limit) + 1,
    )
    .await
    .map_err(store)?;
    let next_cursor = finish_page(&mut items, limit, |e| e.id);
    Ok(HistoryPage { items, next_cursor })
}

#[utoipa::path(
    get,
    path = "/v1/aliases/history",
    tag = "registry",
    params(HistoryQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, body = HistoryPage, description = "Alias moves, newest first: who (actor), why (reason, comment), from and to which version, with which bundle; follow next_cursor for older ones"),
        (status = 400, body = ErrorBody, description = "Unknown alias, limit outside 1..=1000, malformed cursor or query"),
        (status = 401, body = ErrorBody),
        (status = 503, body = ErrorBody)
    )
)]
pub async fn history(
    State(st): State<AdminState>,
    q: Result<Query<HistoryQuery>, QueryRejection>,
) -> Result<Json<HistoryPage>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    history_page(&st.db, q.alias, q.limit, q.cursor.as_deref())
        .await
        .map(Json)
}

/// Route of the current bundle.
pub const BUNDLE_ROUTE: &str = registry::BUNDLE_PATH;
