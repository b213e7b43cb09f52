//! `GET /v1/operator/leader`: which background-job leases this replica holds, and who holds
//! the others ([`crate::lease`]). Each replica answers for itself; ask each to see them all.

use super::AdminState;
use crate::error::ErrorBody;
use crate::lease::{replica_id, LeaseStatus};
use crate::store::Backend;
use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};

/// The leases of this replica.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LeaderStatus {
    /// This replica as the others see it (`kakeya pid=… host=…`).
    pub replica: String,
    /// `postgres`: leases are advisory locks; `sqlite`: always held (one writer per file).
    pub backend: String,
    /// Every lease with a job in this process, by name.
    pub leases: Vec<LeaseStatus>,
}

#[utoipa::path(
    get,
    path = "/v1/operator/leader",
    tag = "admin",
    security(("bearer" = [])),
    responses(
        (status = 200, body = LeaderStatus, description = "The background-job leases of this replica: held or not, and by whom"),
        (status = 401, body = ErrorBody)
    )
)]
pub async fn leader(State(st): State<AdminState>) -> Json<LeaderStatus> {
    Json(LeaderStatus {
        replica: replica_id(),
        backend: match st.db.backend {
            Backend::Postgres => "postgres",
            Backend::Sqlite => "sqlite",
        }
        .into(),
        leases: st.leases.snapshot(),
    })
}
