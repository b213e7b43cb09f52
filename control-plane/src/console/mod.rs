//! The operator web console: static pages served at `/console/` on the admin listener.
//!
//! The assets (plain ES modules and CSS, no build step) are compiled into the binary with
//! `include_str!`, so the console needs no CDN, no network and no files at run time. The pages
//! hold no data: they ask for the admin token once (kept in `sessionStorage`) and call the same
//! REST routes as everyone else with `Authorization: Bearer`, so the API stays the only source
//! of figures and its token check the only gate. That is why the assets themselves are served
//! without the token (a browser cannot send a bearer header on navigation).
//!
//! Adding a page: a module under `assets/pages/`, one line in [`ASSETS`] and one in the page
//! list of `assets/app.js` (docs/CONSOLE.md, *Adding a page*).

use crate::api::AdminState;
use crate::error::{ApiError, ErrorBody};
use axum::extract::Path;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// One embedded file: its path under `/console/`, content type and content.
pub struct Asset {
    pub path: &'static str,
    pub content_type: &'static str,
    pub body: &'static str,
}

macro_rules! asset {
    ($path:literal, $type:expr) => {
        Asset {
            path: $path,
            content_type: $type,
            body: include_str!(concat!("assets/", $path)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

/// Every file of the console.
pub const ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("style.css", "text/css; charset=utf-8"),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("ui.js", JS),
    asset!("plot.js", JS),
    asset!("kpi.js", JS),
    asset!("pages/overview.js", JS),
    asset!("pages/review.js", JS),
    asset!("pages/models.js", JS),
    asset!("pages/canary.js", JS),
    asset!("pages/drift.js", JS),
    asset!("pages/cost.js", JS),
    asset!("pages/kpis.js", JS),
    asset!("pages/anomaly.js", JS),
    asset!("pages/audit.js", JS),
];

/// Only our own files, no inline script, no framing: a page that shows evidence text must
/// never run it.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The asset at `path` (`""` is the index page).
pub fn asset(path: &str) -> Option<&'static Asset> {
    let path = if path.is_empty() { "index.html" } else { path };
    ASSETS.iter().find(|a| a.path == path)
}

/// The console routes (no token: see the module docs), with their OpenAPI description.
pub fn router() -> OpenApiRouter<AdminState> {
    OpenApiRouter::new()
        .routes(routes!(index))
        .routes(routes!(file))
        .routes(routes!(page))
}

fn serve(a: &Asset) -> Response {
    (
        [
            (header::CONTENT_TYPE, a.content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            // Embedded in the binary: a new binary may bring new files under the same name.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        a.body,
    )
        .into_response()
}

#[utoipa::path(get, path = "/console/", tag = "console",
    responses((status = 200, body = String, content_type = "text/html", description = "The console's page; it asks for the admin token and calls the admin API with it")))]
pub async fn index() -> Response {
    asset("").map_or_else(|| ApiError::NotFound.into_response(), serve)
}

#[utoipa::path(get, path = "/console/{file}", tag = "console",
    params(("file" = String, Path, description = "An embedded asset, e.g. `app.js`")),
    responses(
        (status = 200, description = "The asset: a JavaScript module, the style sheet or the page",
            content((String = "text/javascript"), (String = "text/css"), (String = "text/html"))),
        (status = 404, body = ErrorBody, description = "No such asset")
    ))]
pub async fn file(Path(file): Path<String>) -> Response {
    asset(&file).map_or_else(|| ApiError::NotFound.into_response(), serve)
}

#[utoipa::path(get, path = "/console/pages/{file}", tag = "console",
    params(("file" = String, Path, description = "A page's module, e.g. `review.js`")),
    responses(
        (status = 200, body = String, content_type = "text/javascript", description = "The page's JavaScript module"),
        (status = 404, body = ErrorBody, description = "No such page")
    ))]
pub async fn page(Path(file): Path<String>) -> Response {
    asset(&format!("pages/{file}")).map_or_else(|| ApiError::NotFound.into_response(), serve)
}

#[cfg(test)]
mod tests;
