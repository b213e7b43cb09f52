//! Liveness (`/health`, always `OK` while the process serves) and readiness (`/ready`: the
//! database answers and the WAL is writable, i.e. a submission would be acknowledged now).

use super::AdminState;
use crate::error::{ApiError, ErrorBody};
use axum::extract::State;
use axum::Json;
use std::sync::atomic::Ordering;
use std::time::Duration;

#[utoipa::path(get, path = "/health", tag = "admin", responses((status = 200, body = String, description = "`OK`")))]
pub async fn health() -> &'static str {
    "OK"
}

#[utoipa::path(
    get,
    path = "/ready",
    tag = "admin",
    responses((status = 200, description = "`{\"status\":\"ready\"}`"), (status = 503, body = ErrorBody))
)]
pub async fn ready(State(st): State<AdminState>) -> Result<Json<serde_json::Value>, ApiError> {
    match tokio::time::timeout(Duration::from_secs(2), st.db.ping()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(ApiError::NotReady(format!("database: {e}"))),
        Err(_) => return Err(ApiError::NotReady("database: timeout".into())),
    }
    if !st.wal_dir.is_dir() {
        return Err(ApiError::NotReady(format!(
            "WAL directory {} missing",
            st.wal_dir.display()
        )));
    }
    if !st.committer.wal_ok.load(Ordering::Relaxed) {
        return Err(ApiError::NotReady("last WAL write failed".into()));
    }
    Ok(Json(serde_json::json!({"status": "ready"})))
}
