//! What the gate's inline anomaly stage (`kakeya_core::pipeline::anomaly`) sends, on its way
//! to the decision log: header → ingest ([`from_headers`]) → WAL record → `anomaly_*`
//! columns ([`record`]), and the normal traffic `POST /v1/anomaly/train` trains from when it
//! gets no samples ([`normal_window`]).

use super::store::{self, Scored};
use super::Action;
use axum::http::HeaderMap;
use kakeya_core::anomaly_features::SCHEMA_VERSION;
use kakeya_core::pipeline::anomaly::{self as stage, H_ANOMALY, H_ANOMALY_FEATURES};
use serde::{Deserialize, Serialize};
use sqlx::{AnyConnection, AnyPool, Row};

/// One decision's inline assessment as the WAL keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnomalyRecord {
    pub score: f64,
    pub uncertainty: f64,
    /// `none`, `shadow`, `guardrail` (`blocked` never reaches ingest: the gate answered).
    pub action: String,
    pub model_version: String,
    /// The anomaly feature schema and vector (absent when the gate sent none or a bad one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub features: Vec<f64>,
}

impl From<stage::Action> for Action {
    fn from(a: stage::Action) -> Action {
        match a {
            stage::Action::None => Action::None,
            stage::Action::Shadow => Action::Shadow,
            stage::Action::Guardrail => Action::Guardrail,
            stage::Action::Blocked => Action::Blocked,
        }
    }
}

impl AnomalyRecord {
    pub fn action(&self) -> Action {
        stage::Action::parse(&self.action).map_or(Action::None, Action::from)
    }
}

/// The assessment the gate forwarded, `None` without one; a malformed header is dropped (the
/// decision is still stored, without anomaly columns) and logged.
pub fn from_headers(h: &HeaderMap, tenant: &str) -> Option<AnomalyRecord> {
    let raw = h.get(H_ANOMALY)?.to_str().ok();
    let Some((score, uncertainty, action, version)) = raw.and_then(stage::parse_header) else {
        tracing::warn!(%tenant, "malformed {H_ANOMALY} header dropped");
        return None;
    };
    let features = h
        .get(H_ANOMALY_FEATURES)
        .and_then(|v| v.to_str().ok())
        .and_then(stage::parse_features_header);
    Some(AnomalyRecord {
        score,
        uncertainty,
        action: action.as_str().to_string(),
        model_version: version.chars().take(64).collect(),
        schema: features.as_ref().map(|(s, _)| s.to_string()),
        features: features.map(|(_, x)| x).unwrap_or_default(),
    })
}

/// Fills the fresh decision's `anomaly_*` columns.
pub async fn record(
    conn: &mut AnyConnection,
    tenant: &str,
    pcs_id: &str,
    a: &AnomalyRecord,
) -> Result<(), sqlx::Error> {
    let s = Scored {
        score: a.score,
        uncertainty: a.uncertainty,
        action: a.action(),
        features: &a.features,
        schema: a.schema.as_deref().unwrap_or(""),
    };
    if a.schema.is_some() {
        store::record_score(conn, tenant, pcs_id, &s).await?;
    } else {
        // No vector: the score and action only.
        sqlx::query(
            "UPDATE decision_log SET anomaly_score = $1, anomaly_uncertainty = $2, \
             anomaly_action = $3 WHERE tenant = $4 AND pcs_id = $5",
        )
        .bind(s.score)
        .bind(s.uncertainty)
        .bind(s.action.as_str())
        .bind(tenant)
        .bind(pcs_id)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// The newest `limit` anomaly vectors of this build's schema from decisions judged normal —
/// accepted and not escalated, not labelled `hallucinated` (label store) nor `anomalous`
/// (anomaly feedback) — oldest first, so the trainer's in-order split is a time split.
pub async fn normal_window(pool: &AnyPool, limit: usize) -> Result<Vec<Vec<f64>>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT d.anomaly_features AS f FROM decision_log d \
         WHERE d.anomaly_schema = $1 AND d.anomaly_features IS NOT NULL \
         AND d.accepted = 1 AND d.escalated = 0 \
         AND NOT EXISTS (SELECT 1 FROM labels l WHERE l.tenant = d.tenant \
             AND l.pcs_id = d.pcs_id AND l.label = 'hallucinated') \
         AND NOT EXISTS (SELECT 1 FROM anomaly_feedback a WHERE a.tenant = d.tenant \
             AND a.pcs_id = d.pcs_id AND a.user_label = 'anomalous') \
         ORDER BY d.created_at_ms DESC, d.id DESC LIMIT $2",
    )
    .bind(SCHEMA_VERSION)
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .fetch_all(pool)
    .await?;
    let mut out = rows
        .iter()
        .map(|r| {
            let json: String = r.try_get("f")?;
            serde_json::from_str::<Vec<f64>>(&json).map_err(|e| sqlx::Error::ColumnDecode {
                index: "anomaly_features".into(),
                source: e.into(),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    out.reverse();
    Ok(out)
}
