//! `GET /v1/openapi.json`: the OpenAPI 3.1 document, collected from the very route
//! declarations the listeners serve ([`super::public_admin_routes`],
//! [`super::protected_admin_routes`], [`super::ingest_routes`]).
//!
//! One document covers both listeners; operations tagged `ingest` are served by the ingest
//! listener (Envoy only), every other one by the admin listener.

use crate::error::ErrorBody;
use crate::store::decision_log::DecisionRow;
use axum::http::header;
use axum::response::IntoResponse;
use std::sync::OnceLock;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Info, shared schemas and the security scheme; the paths come from the routers.
#[derive(OpenApi)]
#[openapi(
    info(title = "Kakeya Edge control plane", description = "Ingest (behind the Envoy gate; tag `ingest`) and admin API. Admin routes other than /health, /ready and /v1/bundles/current need `Authorization: Bearer <admin token>`."),
    components(schemas(
        ErrorBody,
        DecisionRow,
        super::decisions::DecisionsPage,
        crate::registry::ModelSummary,
        crate::registry::ModelDetail,
        crate::registry::AliasRow,
        crate::registry::Published,
        super::registry::AliasBody,
        crate::ab::Experiment,
        crate::ab::stats::Report
    )),
    modifiers(&BearerAuth)
)]
struct ApiDoc;

/// The document of every route both listeners serve.
pub fn document() -> utoipa::openapi::OpenApi {
    let (_, mut doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(super::public_admin_routes())
        .merge(super::protected_admin_routes())
        .split_for_parts();
    let (_, ingest) = super::ingest_routes().split_for_parts();
    doc.merge(ingest);
    doc
}

fn document_json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        document()
            .to_json()
            .unwrap_or_else(|e| format!("{{\"error\":\"{e}\",\"code\":\"internal\"}}"))
    })
}

#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    tag = "admin",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "This OpenAPI 3.1 document", content_type = "application/json", body = Object),
        (status = 401, body = ErrorBody)
    )
)]
pub async fn spec() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        document_json(),
    )
}
