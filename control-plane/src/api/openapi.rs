//! `GET /v1/openapi.json`: the OpenAPI 3.1 document generated from the handlers.

use super::{decisions, health, ingest, metrics, registry};
use crate::error::ErrorBody;
use crate::store::decision_log::DecisionRow;
use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

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

#[derive(OpenApi)]
#[openapi(
    info(title = "Kakeya Edge control plane", description = "Ingest (loopback, behind the Envoy gate) and admin API."),
    paths(
        ingest::submit,
        health::health,
        health::ready,
        metrics::metrics,
        decisions::list,
        registry::current_bundle,
        registry::list_models,
        registry::get_model,
        registry::post_model,
        registry::set_alias,
        registry::delete_challenger
    ),
    components(schemas(
        ErrorBody,
        DecisionRow,
        crate::registry::ModelSummary,
        crate::registry::ModelDetail,
        crate::registry::AliasRow,
        crate::registry::Published,
        registry::AliasBody
    )),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

pub async fn spec() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
