//! `GET /v1/kpis?window=` (admin listener, bearer token): the figures of the buyer dashboard
//! as JSON, so the console shows the same numbers as Grafana.

use super::{KpiError, Kpis, Window};
use crate::api::AdminState;
use crate::error::{ApiError, ErrorBody};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AdminState> {
    OpenApiRouter::new().routes(routes!(kpis))
}

impl From<KpiError> for ApiError {
    fn from(e: KpiError) -> Self {
        match e {
            KpiError::Store(e) => ApiError::StoreUnavailable(e.to_string()),
            KpiError::Cost(e) => e.into(),
        }
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct KpiQuery {
    /// `1h`, `24h` (default), `7d` or `30d`, ending now.
    pub window: Option<String>,
}

#[utoipa::path(get, path = "/v1/kpis", tag = "kpi", params(KpiQuery), security(("bearer" = [])),
    responses((status = 200, body = Kpis, description = "The buyer KPIs of the window, computed from the decision log, labels, disagreements, cost roll-up and advisor; a rate without data is null"),
              (status = 400, body = ErrorBody, description = "A window other than 1h, 24h, 7d, 30d; unknown parameter"),
              (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn kpis(
    State(st): State<AdminState>,
    q: Result<Query<KpiQuery>, QueryRejection>,
) -> Result<Json<Kpis>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let window = match q.window.as_deref() {
        None => Window::H24,
        Some(s) => Window::parse(s).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "window must be one of 1h, 24h, 7d, 30d, not {:?}",
                s.chars().take(16).collect::<String>()
            ))
        })?,
    };
    Ok(Json(
        super::compute(&st.db, &st.cost, window, crate::now_ms()).await?,
    ))
}
