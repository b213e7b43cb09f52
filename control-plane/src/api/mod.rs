//! The two HTTP listeners.
//!
//! * **ingest** (`ingest_addr`, loopback unless a shared secret is set): `POST /v1/pcs/submit`,
//!   called by Envoy after the gate filter. It trusts the `x-kakeya-*` headers because only
//!   Envoy can reach it; off loopback it also requires the shared secret Envoy adds
//!   ([`auth::H_INGEST_SECRET`]), or anyone could forge verdicts.
//! * **admin** (`admin_addr`): health, readiness, metrics, OpenAPI, decision log, model
//!   registry (`/v1/models`, `/v1/aliases/…`, `/v1/hrs/register|activate`, [`registry`]),
//!   background-job leases (`/v1/operator/leader`, [`leader`]), review queue and labels
//!   ([`crate::review`]), training jobs (`/v1/hrs/train`, `/v1/hrs/jobs`, [`crate::learn`]), A/B
//!   experiments (`/v1/hrs/ab`, [`crate::ab`]), retraining scheduler (`/v1/hrs/scheduler`,
//!   [`crate::scheduler`]), drift checks and alerts (`/v1/hrs/drift`, [`crate::drift`]), adaptive ensemble
//!   policies (`/v1/ensemble`, [`crate::ensemble`]), anomaly feedback, thresholds, clusters
//!   and active learning (`/v1/anomaly`, [`crate::anomaly`]).
//!   Everything except `/health`,
//!   `/ready`, the signed bundle (`GET /v1/bundles/current`, polled by the filters) and the
//!   console's static pages (`/console/`, [`crate::console`], which hold no data) requires
//!   the bearer admin token ([`auth`]).
//!
//! Routes and the OpenAPI document ([`openapi::document`]) come from the same
//! [`OpenApiRouter`] declarations, so a route cannot exist undocumented or the other way round.

pub mod auth;
pub mod decisions;
pub mod disagreements;
pub mod health;
pub mod ingest;
pub mod leader;
pub mod metrics;
pub mod openapi;
pub mod registry;
pub mod task_models;

#[cfg(test)]
pub(crate) mod tests;

use crate::error::ApiError;
use crate::ingest::{CommitterStatus, IngestHandle};
use crate::metrics::Metrics;
use crate::store::Db;
use axum::http::StatusCode;
use axum::middleware::from_fn_with_state;
use axum::Router;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Bodies up to 1 MiB pass Envoy's buffer filter; allow a little framing slack.
pub const INGEST_BODY_LIMIT: usize = 1024 * 1024 + 64 * 1024;

#[derive(Clone)]
pub struct IngestState {
    pub handle: IngestHandle,
    pub metrics: Metrics,
    /// When set, every request must carry it in [`auth::H_INGEST_SECRET`].
    pub ingest_secret: Option<auth::Secret>,
    /// Keeps the evidence of queued decisions of opted-in tenants; `None` when nobody opted in.
    pub evidence: Option<crate::evidence::Retainer>,
}

#[derive(Clone)]
pub struct AdminState {
    pub db: Db,
    pub metrics: Metrics,
    pub committer: Arc<CommitterStatus>,
    pub wal_dir: PathBuf,
    pub admin_token: auth::Secret,
    /// Signs the bundles published on alias changes; `None` refuses alias changes (503).
    pub bundle_seed: Option<Arc<[u8; 32]>>,
    /// Opens retained evidence for the review queue; `None` shows none.
    pub evidence: Option<crate::evidence::Vault>,
    /// The background-job leases of this process (`GET /v1/operator/leader`).
    pub leases: crate::lease::Leases,
    /// `[scheduler]` and `[training]`: what `POST /v1/hrs/scheduler/run` runs with.
    pub scheduler: crate::scheduler::Settings,
    /// Thresholds and auto-revert of `POST /v1/hrs/drift/check` (`[drift]`).
    pub drift: crate::drift::DriftOptions,
    /// `[cost]`: price book, billing exports, budgets (`/v1/cost/*`).
    pub cost: crate::cost::options::CostOptions,
    /// The canary controller's default schedule (`[canary]`).
    pub canary: crate::canary::CanaryOptions,
}

async fn not_found() -> ApiError {
    ApiError::NotFound
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// The ingest listener's documented routes.
pub fn ingest_routes() -> OpenApiRouter<IngestState> {
    OpenApiRouter::new().routes(routes!(ingest::submit))
}

/// Admin routes anyone may call: liveness, readiness and the signed bundle (the filters poll
/// it without a token; they verify its signature).
pub fn public_admin_routes() -> OpenApiRouter<AdminState> {
    OpenApiRouter::new()
        .routes(routes!(health::health))
        .routes(routes!(health::ready))
        .routes(routes!(registry::current_bundle))
        // The console's static pages; their data comes from the protected routes.
        .merge(crate::console::router())
}

/// Admin routes that require the bearer token.
pub fn protected_admin_routes() -> OpenApiRouter<AdminState> {
    OpenApiRouter::new()
        .routes(routes!(metrics::metrics))
        .routes(routes!(openapi::spec))
        .routes(routes!(decisions::list))
        // pipeline: ensemble disagreement audit events.
        .routes(routes!(disagreements::list))
        .routes(routes!(leader::leader))
        .merge(registry::router())
        .merge(task_models::router())
        .merge(crate::review::api::router())
        .merge(crate::learn::api::router())
        .merge(crate::ab::api::router())
        .merge(crate::scheduler::api::router())
        .merge(crate::drift::api::router())
        .merge(crate::cost::api::router())
        .merge(crate::ensemble::api::router())
        .merge(crate::canary::api::router())
        .merge(crate::simulator::api::router())
        .merge(crate::anomaly::api::router())
        .merge(crate::anomaly::roc::router())
        .merge(crate::audit::api::router())
        .merge(crate::kpi::api::router())
        .merge(crate::anomaly::model_api::router())
        .merge(crate::anomaly::publication::router())
}

pub fn ingest_router(state: IngestState) -> Router {
    let (router, _) = ingest_routes().split_for_parts();
    router
        .route_layer(from_fn_with_state(
            state.clone(),
            auth::require_ingest_secret,
        ))
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
    let protected = protected_admin_routes()
        .route_layer(from_fn_with_state(state.clone(), auth::require_admin_token));
    let (router, _) = public_admin_routes().merge(protected).split_for_parts();
    router
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            Duration::from_secs(10),
        ))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}
