//! `GET /v1/anomaly/roc?tenant_id=`: the exact ROC of a tenant's anomaly feedback (one point per
//! distinct labelled score, [`crate::ml::metrics::roc_curve`]), its AUROC and where the current
//! threshold sits on it — what the console's anomaly page plots. Read only; the same labels
//! (one per decision, [`feedback::labelled`]) the optimiser and `GET /v1/anomaly/confusion` use.

use super::feedback;
use super::store;
use super::threshold::DEFAULT_THRESHOLD;
use crate::api::AdminState;
use crate::error::{ApiError, ErrorBody};
use crate::ml::metrics::{auroc, roc_curve, RocPoint};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AdminState> {
    OpenApiRouter::new().routes(routes!(roc))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RocQuery {
    /// Tenant (default `default`).
    pub tenant_id: Option<String>,
}

/// The tenant's labelled anomaly scores as a ROC curve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = AnomalyRoc)]
pub struct Roc {
    pub tenant: String,
    /// Labelled decisions (one label per decision), anomalous and normal.
    pub n_labels: usize,
    pub n_anomalous: usize,
    pub n_normal: usize,
    /// `null` without both classes.
    pub auroc: Option<f64>,
    /// The threshold in force (the newest feasible optimiser run, else the default 0.98).
    pub threshold: f64,
    /// Highest threshold first; empty without both classes.
    pub points: Vec<RocPoint>,
}

/// The ROC of `pairs` of (score, anomalous) at the current `threshold`.
pub fn of(tenant: &str, pairs: &[(f64, bool)], threshold: f64) -> Roc {
    let scores: Vec<f64> = pairs.iter().map(|p| p.0).collect();
    let labels: Vec<u8> = pairs.iter().map(|p| u8::from(p.1)).collect();
    let n_anomalous = pairs.iter().filter(|p| p.1).count();
    let points = roc_curve(&scores, &labels).unwrap_or_default();
    Roc {
        tenant: tenant.to_string(),
        n_labels: pairs.len(),
        n_anomalous,
        n_normal: pairs.len() - n_anomalous,
        auroc: auroc(&scores, &labels),
        threshold,
        points,
    }
}

#[utoipa::path(
    get,
    path = "/v1/anomaly/roc",
    tag = "anomaly",
    params(RocQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, body = Roc, description = "The exact ROC of the tenant's labelled decisions (one label per decision: highest source, then newest), one point per distinct score, highest threshold first; AUROC; the current threshold. No points and a null AUROC until both classes are labelled"),
        (status = 400, body = ErrorBody, description = "Unknown parameter, empty tenant_id or one with control characters"),
        (status = 401, body = ErrorBody),
        (status = 503, body = ErrorBody)
    )
)]
pub async fn roc(
    State(st): State<AdminState>,
    q: Result<Query<RocQuery>, QueryRejection>,
) -> Result<Json<Roc>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let tenant = feedback::checked_tenant(q.tenant_id.as_deref())?;
    let store_err = |e: sqlx::Error| ApiError::StoreUnavailable(e.to_string());
    let pairs = feedback::labelled(&st.db, tenant)
        .await
        .map_err(store_err)?;
    let threshold = store::current_threshold(&st.db.pool, tenant)
        .await
        .map_err(store_err)?
        .unwrap_or(DEFAULT_THRESHOLD);
    Ok(Json(of(tenant, &pairs, threshold)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_curve_of_labelled_scores() {
        let pairs = [(0.9, true), (0.8, false), (0.7, true), (0.1, false)];
        let r = of("t", &pairs, 0.75);
        assert_eq!((r.n_labels, r.n_anomalous, r.n_normal), (4, 2, 2));
        assert_eq!(r.auroc, Some(0.75));
        let pts: Vec<(f64, f64, f64)> = r
            .points
            .iter()
            .map(|p| (p.threshold, p.fpr, p.tpr))
            .collect();
        assert_eq!(
            pts,
            [
                (0.9, 0.0, 0.5),
                (0.8, 0.5, 0.5),
                (0.7, 0.5, 1.0),
                (0.1, 1.0, 1.0)
            ]
        );
        let one_class = of("t", &[(0.5, true)], 0.98);
        assert!(one_class.points.is_empty() && one_class.auroc.is_none());
        assert_eq!(one_class.threshold, 0.98);
    }

    #[tokio::test]
    async fn the_route_answers_and_refuses_bad_input() {
        use crate::api::tests::{admin, config, read_token};
        let tmp = tempfile::tempdir().unwrap();
        let r = crate::server::start(&config(tmp.path())).await.unwrap();
        let token = read_token(tmp.path());
        let a = admin(&r, "GET", "/v1/anomaly/roc?tenant_id=acme", Some(&token)).await;
        assert_eq!(a.status, 200, "{}", a.body);
        let j = a.json();
        assert_eq!(j["tenant"], "acme");
        assert_eq!(j["n_labels"], 0);
        assert!(j["auroc"].is_null() && j["points"].as_array().unwrap().is_empty());
        assert_eq!(j["threshold"], DEFAULT_THRESHOLD);
        for bad in ["/v1/anomaly/roc?tenant=acme", "/v1/anomaly/roc?tenant_id="] {
            let a = admin(&r, "GET", bad, Some(&token)).await;
            assert_eq!(a.status, 400, "{bad}: {}", a.body);
            assert_eq!(a.json()["code"], "bad_request", "{bad}");
        }
        assert_eq!(admin(&r, "GET", "/v1/anomaly/roc", None).await.status, 401);
        r.shutdown().await.unwrap();
    }
}
