//! The two HTTP listeners.
//!
//! * **ingest** (`ingest_addr`, loopback only): `POST /v1/pcs/submit`, called by Envoy after
//!   the gate filter. It trusts the `x-kakeya-*` headers because only Envoy can reach it;
//!   binding it to a routable address would let anyone forge verdicts.
//! * **admin** (`admin_addr`): health, readiness, metrics, OpenAPI, decision log. Everything
//!   except health/ready/metrics and the signed bundle (`GET /v1/bundles/current`, polled by
//!   the filters) requires the bearer `admin_token` when one is configured. Model registry:
//!   `/v1/models`, `/v1/aliases/{alias}` ([`registry`]).

pub mod decisions;
pub mod health;
pub mod ingest;
pub mod metrics;
pub mod openapi;
pub mod registry;

use crate::error::ApiError;
use crate::ingest::{CommitterStatus, IngestHandle};
use crate::metrics::Metrics;
use crate::store::Db;
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::Router;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

/// Bodies up to 1 MiB pass Envoy's buffer filter; allow a little framing slack.
pub const INGEST_BODY_LIMIT: usize = 1024 * 1024 + 64 * 1024;

#[derive(Clone)]
pub struct IngestState {
    pub handle: IngestHandle,
    pub metrics: Metrics,
}

#[derive(Clone)]
pub struct AdminState {
    pub db: Db,
    pub metrics: Metrics,
    pub committer: Arc<CommitterStatus>,
    pub wal_dir: PathBuf,
    pub admin_token: Option<String>,
    /// Signs the bundles published on alias changes; `None` refuses alias changes (503).
    pub bundle_seed: Option<Arc<[u8; 32]>>,
}

async fn not_found() -> ApiError {
    ApiError::NotFound
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

pub fn ingest_router(state: IngestState) -> Router {
    Router::new()
        .route(kakeya_core::SUBMIT_PATH, post(ingest::submit))
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .layer(axum::extract::DefaultBodyLimit::max(INGEST_BODY_LIMIT))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            Duration::from_secs(10),
        ))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

pub fn admin_router(state: AdminState) -> Router {
    let protected = Router::new()
        .route("/v1/decisions", get(decisions::list))
        .route("/v1/openapi.json", get(openapi::spec))
        .route(
            "/v1/models",
            get(registry::list_models).post(registry::post_model),
        )
        .route("/v1/models/{version}", get(registry::get_model))
        .route(
            "/v1/aliases/challenger",
            delete(registry::delete_challenger).post(registry::set_challenger),
        )
        .route("/v1/aliases/{alias}", post(registry::set_alias))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            decisions::require_admin_token,
        ));
    Router::new()
        .route("/health", get(health::health))
        .route("/ready", get(health::ready))
        .route("/metrics", get(metrics::metrics))
        // Unauthenticated: the filters poll it without a token; the bundle is signed.
        .route(registry::BUNDLE_ROUTE, get(registry::current_bundle))
        .merge(protected)
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            Duration::from_secs(10),
        ))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}
