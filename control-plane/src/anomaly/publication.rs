//! What the bundle's `anomaly` section carries ([`kakeya_core::anomaly_policy`]) and the
//! routes that change it.
//!
//! * **Which model**: the one activated explicitly with `POST /v1/anomaly/activate
//!   {model_version}` (migration 0034, `anomaly_active`), not simply the newest trained one:
//!   a training run from the decision log may produce a worse model (its card says so), and a
//!   model that blocks answers should reach the filters only when someone chose it. The
//!   artifact is loaded with its hash and signature checked, like `detect` does.
//! * **Per-tenant modes**: `PUT /v1/anomaly/modes {tenant_id?, mode, block_threshold?}`
//!   (`tenant_id` absent = the default for tenants not listed); `GET /v1/anomaly/modes`.
//! * **Thresholds**: each tenant's flag threshold is the optimiser's current threshold
//!   ([`super::store::current_threshold`], 0.98 before any run), read at every publication, so
//!   a new threshold from feedback goes out in the next bundle; a successful
//!   `POST /v1/anomaly/optimize-threshold` publishes one at once.
//!
//! Every change here republishes the bundle (when a champion exists).

use super::model_store;
use super::store::current_threshold_in;
use super::threshold::DEFAULT_THRESHOLD;
use crate::api::AdminState;
use crate::error::{ApiError, ErrorBody};
use crate::store::Db;
use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::Json;
use kakeya_core::anomaly_policy::{AnomalySection, Mode, TenantAnomaly};
use serde::{Deserialize, Serialize};
use sqlx::{AnyConnection, Row};
use std::collections::BTreeMap;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The `anomaly_modes` key of the default.
pub const DEFAULT_KEY: &str = "*";

fn integrity(e: model_store::StoreError) -> sqlx::Error {
    match e {
        model_store::StoreError::Db(e) => e,
        other => sqlx::Error::Protocol(other.to_string()),
    }
}

/// The section of the next bundle (empty without an active model and modes).
pub async fn section(
    conn: &mut AnyConnection,
    public_key_b64: &str,
) -> Result<AnomalySection, sqlx::Error> {
    let active: Option<String> = sqlx::query("SELECT version FROM anomaly_active WHERE id = 1")
        .fetch_optional(&mut *conn)
        .await?
        .map(|r| r.try_get("version"))
        .transpose()?;
    let model = match active {
        Some(v) => model_store::load_model_in(conn, Some(&v), public_key_b64)
            .await
            .map_err(integrity)?,
        None => None,
    };
    let mut s = AnomalySection {
        model,
        ..AnomalySection::default()
    };
    for m in modes_in(conn).await? {
        let threshold = current_threshold_in(conn, m.tenant_id.as_deref().unwrap_or("default"))
            .await?
            .unwrap_or(DEFAULT_THRESHOLD);
        let t = TenantAnomaly {
            mode: m.mode,
            threshold,
            block_threshold: m.block_threshold,
        };
        match m.tenant_id {
            None => s.default = Some(t),
            Some(tenant) => {
                s.tenants.insert(tenant, t);
            }
        }
    }
    Ok(s)
}

/// One tenant's (or the default's) mode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModeBody {
    /// Absent: the default for tenants not listed.
    #[serde(default)]
    pub tenant_id: Option<String>,
    #[schema(value_type = String, example = "shadow")]
    pub mode: Mode,
    /// Score at or above which mode `blocking` refuses, in [0, 1]; absent = the flag threshold.
    #[serde(default)]
    pub block_threshold: Option<f64>,
}

async fn modes_in(conn: &mut AnyConnection) -> Result<Vec<ModeBody>, sqlx::Error> {
    let rows =
        sqlx::query("SELECT tenant, mode, block_threshold FROM anomaly_modes ORDER BY tenant")
            .fetch_all(&mut *conn)
            .await?;
    rows.iter()
        .map(|r| {
            let tenant: String = r.try_get("tenant")?;
            let mode: String = r.try_get("mode")?;
            Ok(ModeBody {
                tenant_id: (tenant != DEFAULT_KEY).then_some(tenant),
                mode: Mode::parse(&mode).ok_or_else(|| sqlx::Error::ColumnDecode {
                    index: "mode".into(),
                    source: format!("unknown mode {mode:?}").into(),
                })?,
                block_threshold: r.try_get("block_threshold")?,
            })
        })
        .collect()
}

/// Stores a mode (replacing the tenant's).
pub async fn set_mode(
    conn: &mut AnyConnection,
    m: &ModeBody,
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO anomaly_modes (tenant, mode, block_threshold, updated_at_ms) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (tenant) DO UPDATE SET mode = EXCLUDED.mode, \
         block_threshold = EXCLUDED.block_threshold, updated_at_ms = EXCLUDED.updated_at_ms",
    )
    .bind(m.tenant_id.as_deref().unwrap_or(DEFAULT_KEY))
    .bind(m.mode.as_str())
    .bind(m.block_threshold)
    .bind(now_ms)
    .persistent(false)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Makes `version` the model the bundle carries.
pub async fn activate(
    conn: &mut AnyConnection,
    version: &str,
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO anomaly_active (id, version, activated_at_ms) VALUES (1, $1, $2) \
         ON CONFLICT (id) DO UPDATE SET version = EXCLUDED.version, \
         activated_at_ms = EXCLUDED.activated_at_ms",
    )
    .bind(version)
    .bind(now_ms)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Republishes after a change; the new bundle version, `None` when there is no champion yet
/// (the change goes into the first bundle).
pub async fn republish(db: &Db, seed: &[u8; 32]) -> Result<Option<i64>, ApiError> {
    match crate::registry::republish(db, seed, crate::now_ms()).await {
        Ok(p) => Ok(Some(p.bundle_version)),
        Err(crate::registry::RegistryError::Conflict(m)) => {
            tracing::info!(reason = %m, "anomaly settings stored; no bundle published yet");
            Ok(None)
        }
        Err(e) => Err(ApiError::StoreUnavailable(e.to_string())),
    }
}

pub fn router() -> OpenApiRouter<AdminState> {
    OpenApiRouter::new()
        .routes(routes!(activate_model))
        .routes(routes!(put_mode, get_modes))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActivateBody {
    /// A stored version (`vae-…`, from `POST /v1/anomaly/train`'s job result).
    pub model_version: String,
}

/// What changed and the bundle that carries it.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Changed {
    pub model_version: Option<String>,
    /// The bundle published with the change (`null` before the first champion).
    pub bundle_version: Option<i64>,
}

fn seed(st: &AdminState) -> Result<std::sync::Arc<[u8; 32]>, ApiError> {
    st.bundle_seed.clone().ok_or_else(|| {
        ApiError::NotReady(
            "this server has no registry signing key; start it with kakeya serve".into(),
        )
    })
}

fn db_error(e: sqlx::Error) -> ApiError {
    ApiError::StoreUnavailable(e.to_string())
}

#[utoipa::path(
    post,
    path = "/v1/anomaly/activate",
    tag = "anomaly",
    request_body = ActivateBody,
    security(("bearer" = [])),
    responses(
        (status = 200, body = Changed, description = "The model is the one the bundle carries; the bundle was republished"),
        (status = 400, body = ErrorBody, description = "Malformed body"),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "No such stored model"),
        (status = 500, body = ErrorBody, description = "code integrity_failure: the stored artifact failed its hash, signature or schema check"),
        (status = 503, body = ErrorBody)
    )
)]
pub async fn activate_model(
    State(st): State<AdminState>,
    body: Result<Json<ActivateBody>, JsonRejection>,
) -> Result<Json<Changed>, ApiError> {
    let Json(b) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let seed = seed(&st)?;
    let key = crate::registry::keys::public_key_b64(&seed);
    // Checked before it is activated: a bad artifact would stop every later publication.
    let model = model_store::load_model(&st.db, Some(&b.model_version), &key).await?;
    if model.is_none() {
        return Err(ApiError::Missing(format!(
            "no anomaly model {}",
            b.model_version
        )));
    }
    let mut conn = st.db.pool.acquire().await.map_err(db_error)?;
    activate(&mut conn, &b.model_version, crate::now_ms())
        .await
        .map_err(db_error)?;
    drop(conn);
    let bundle_version = republish(&st.db, &seed).await?;
    Ok(Json(Changed {
        model_version: Some(b.model_version),
        bundle_version,
    }))
}

#[utoipa::path(
    put,
    path = "/v1/anomaly/modes",
    tag = "anomaly",
    request_body = ModeBody,
    security(("bearer" = [])),
    responses(
        (status = 200, body = Changed, description = "Stored; the bundle was republished"),
        (status = 400, body = ErrorBody, description = "Unknown mode, block_threshold outside [0, 1], bad tenant_id, unknown field"),
        (status = 401, body = ErrorBody),
        (status = 503, body = ErrorBody)
    )
)]
pub async fn put_mode(
    State(st): State<AdminState>,
    body: Result<Json<ModeBody>, JsonRejection>,
) -> Result<Json<Changed>, ApiError> {
    let Json(b) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    if let Some(t) = &b.tenant_id {
        super::feedback::checked_tenant(Some(t))?;
        if t == DEFAULT_KEY {
            return Err(ApiError::BadRequest(format!(
                "tenant_id {DEFAULT_KEY:?} is reserved; omit tenant_id for the default"
            )));
        }
    }
    if !b.block_threshold.is_none_or(|v| (0.0..=1.0).contains(&v)) {
        return Err(ApiError::BadRequest(
            "block_threshold must be within [0, 1]".into(),
        ));
    }
    let seed = seed(&st)?;
    let mut conn = st.db.pool.acquire().await.map_err(db_error)?;
    set_mode(&mut conn, &b, crate::now_ms())
        .await
        .map_err(db_error)?;
    drop(conn);
    let bundle_version = republish(&st.db, &seed).await?;
    Ok(Json(Changed {
        model_version: None,
        bundle_version,
    }))
}

/// The stored modes and the active model.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Modes {
    pub active_model: Option<String>,
    pub modes: Vec<ModeBody>,
    /// Each listed tenant's flag threshold as the next bundle carries it (`*`: the default's).
    pub thresholds: BTreeMap<String, f64>,
}

#[utoipa::path(
    get,
    path = "/v1/anomaly/modes",
    tag = "anomaly",
    security(("bearer" = [])),
    responses(
        (status = 200, body = Modes),
        (status = 401, body = ErrorBody),
        (status = 503, body = ErrorBody)
    )
)]
pub async fn get_modes(State(st): State<AdminState>) -> Result<Json<Modes>, ApiError> {
    let mut conn = st.db.pool.acquire().await.map_err(db_error)?;
    let active_model = sqlx::query("SELECT version FROM anomaly_active WHERE id = 1")
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_error)?
        .map(|r| r.try_get("version"))
        .transpose()
        .map_err(db_error)?;
    let modes = modes_in(&mut conn).await.map_err(db_error)?;
    let mut thresholds = BTreeMap::new();
    for m in &modes {
        let t = m.tenant_id.as_deref().unwrap_or("default");
        let v = current_threshold_in(&mut conn, t)
            .await
            .map_err(db_error)?
            .unwrap_or(DEFAULT_THRESHOLD);
        thresholds.insert(m.tenant_id.clone().unwrap_or_else(|| DEFAULT_KEY.into()), v);
    }
    Ok(Json(Modes {
        active_model,
        modes,
        thresholds,
    }))
}
