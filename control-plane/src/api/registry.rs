//! Model registry and bundle endpoints (admin listener).
//!
//! `GET /v1/bundles/current` is the one unauthenticated route besides health and readiness:
//! the gate filters poll it without a token, and what it serves is signed (they verify the
//! signature with the key in their configuration).

use super::AdminState;
use crate::error::{ApiError, ErrorBody};
use crate::registry::{
    self, card, ModelDetail, ModelSummary, Published, RegistryError, CHALLENGER,
};
use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use kakeya_core::bundle::{H_SHA256, H_SIGNATURE};
use kakeya_core::model::HrsModel;
use serde::Deserialize;

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::Exists(_) | RegistryError::Conflict(_) => {
                ApiError::Conflict(e.to_string())
            }
            RegistryError::NoModel(_) | RegistryError::NoChallenger => {
                ApiError::Missing(e.to_string())
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
    params(("version" = String, Path, description = "lr-<12 hex>")),
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

/// Validates, signs with `seed` and registers an artifact (the same path as
/// `kakeya model register`).
pub async fn register(
    db: &crate::store::Db,
    seed: &[u8; 32],
    bytes: &[u8],
) -> Result<ModelSummary, ApiError> {
    let m = HrsModel::from_json(bytes)
        .map_err(|e| ApiError::BadRequest(format!("invalid model artifact: {e}")))?;
    Ok(registry::insert_model(db, seed, &m, &card::from_artifact(&m), crate::now_ms()).await?)
}

#[utoipa::path(
    post,
    path = "/v1/models",
    tag = "registry",
    request_body(content = Object, description = "A model artifact (kakeya_core::model::HrsModel JSON, as written by kakeya train)", content_type = "application/json"),
    security(("bearer" = [])),
    responses(
        (status = 201, body = ModelSummary),
        (status = 400, body = ErrorBody, description = "Not a valid artifact for this build's feature schema"),
        (status = 401, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "Already registered"),
        (status = 503, body = ErrorBody)
    )
)]
pub async fn post_model(
    State(st): State<AdminState>,
    body: Bytes,
) -> Result<(StatusCode, Json<ModelSummary>), ApiError> {
    Ok((
        StatusCode::CREATED,
        Json(register(&st.db, seed(&st)?, &body).await?),
    ))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AliasBody {
    /// Registered model version.
    pub version: String,
    /// Challenger only: share of tenants (0..=1) it scores.
    pub weight: Option<f64>,
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
    params(("alias" = String, Path, description = "champion or challenger")),
    request_body = AliasBody,
    security(("bearer" = [])),
    responses(
        (status = 200, body = Published, description = "Alias set; a new signed bundle is published"),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "No such model"),
        (status = 409, body = ErrorBody, description = "A challenger needs a champion (code `conflict`), or a model row it loads failed its integrity check (code `integrity_failure`): nothing is published"),
        (status = 503, body = ErrorBody)
    )
)]
pub async fn set_alias(
    State(st): State<AdminState>,
    Path(alias): Path<String>,
    body: Result<Json<AliasBody>, JsonRejection>,
) -> Result<Json<Published>, ApiError> {
    let Json(b) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let p = registry::set_alias(
        &st.db,
        seed(&st)?,
        &alias,
        &b.version,
        b.weight,
        crate::now_ms(),
    )
    .await
    .map_err(refused)?;
    tracing::info!(alias, version = %b.version, bundle = p.bundle_version, "alias changed");
    Ok(Json(p))
}

/// `POST /v1/aliases/challenger` (a static route, next to its `DELETE`).
#[utoipa::path(
    post,
    path = "/v1/aliases/challenger",
    tag = "registry",
    request_body = AliasBody,
    security(("bearer" = [])),
    responses(
        (status = 200, body = Published, description = "Challenger set; a new signed bundle is published"),
        (status = 400, body = ErrorBody),
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

#[utoipa::path(
    delete,
    path = "/v1/aliases/challenger",
    tag = "registry",
    security(("bearer" = [])),
    responses(
        (status = 200, body = Published, description = "Challenger removed; a new signed bundle is published"),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "No challenger"),
        (status = 409, body = ErrorBody, description = "Code `integrity_failure`: the champion's model row failed its integrity check; nothing is published"),
        (status = 503, body = ErrorBody)
    )
)]
pub async fn delete_challenger(State(st): State<AdminState>) -> Result<Json<Published>, ApiError> {
    let p = registry::remove_challenger(&st.db, seed(&st)?, crate::now_ms())
        .await
        .map_err(refused)?;
    tracing::info!(
        alias = CHALLENGER,
        bundle = p.bundle_version,
        "alias removed"
    );
    Ok(Json(p))
}

/// Route of the current bundle.
pub const BUNDLE_ROUTE: &str = registry::BUNDLE_PATH;
