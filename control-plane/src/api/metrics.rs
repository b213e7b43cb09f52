//! `GET /metrics`: Prometheus text exposition of [`crate::metrics::Metrics`].

use super::AdminState;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

#[utoipa::path(get, path = "/metrics", tag = "admin", responses((status = 200, body = String, description = "Prometheus text format")))]
pub async fn metrics(State(st): State<AdminState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        st.metrics.render(),
    )
}
