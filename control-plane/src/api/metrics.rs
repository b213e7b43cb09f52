//! `GET /metrics`: Prometheus text exposition of [`crate::metrics::Metrics`]. It needs the admin
//! token like every admin route (per-tenant series name the tenants); Prometheus sends it with
//! `authorization: { credentials_file: <admin.token> }` (docs/OPERATIONS.md).

use super::AdminState;
use crate::error::ErrorBody;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

#[utoipa::path(
    get,
    path = "/metrics",
    tag = "admin",
    security(("bearer" = [])),
    responses(
        (status = 200, body = String, content_type = "text/plain", description = "Prometheus text format"),
        (status = 401, body = ErrorBody)
    )
)]
pub async fn metrics(State(st): State<AdminState>) -> impl IntoResponse {
    // The per-tenant ensemble gauges are computed from the store (a failure keeps the last).
    if let Err(e) = crate::ensemble::refresh_gauges_throttled(&st.db).await {
        tracing::warn!(error = %e, "ensemble gauges not refreshed");
    }
    if let Err(e) = crate::kpi::metrics::refresh_throttled(&st.db, &st.cost).await {
        tracing::warn!(error = %e, "KPI gauges not refreshed");
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        st.metrics.render(),
    )
}
