//! Anomaly detection (issue 9): the feedback loop, the exact threshold optimiser, clusters of
//! flagged decisions and the active-learning queue; and the detector itself: [`train`] (the VAE
//! trainer, candle, exported into [`kakeya_core::vae::VaeModel`]), [`eval_data`] (degenerate
//! variants of held-out responses), [`eval`] (`kakeya anomaly eval`), [`model_store`] (signed
//! artifacts and training jobs, migration 0031) and [`model_api`] (`POST /v1/anomaly/train`,
//! `GET /v1/anomaly/jobs/{job_id}`, `POST /v1/anomaly/detect`).
//!
//! ```text
//!  decision log (anomaly_score, _uncertainty, _action, _features, _schema: inline scoring)
//!     │                         │                                   │
//!     │ flagged rows            │ nearest the threshold + audit     │ scored decisions
//!     ▼                         ▼                                   ▼
//!  cluster: k-means++ ──▶   active: review queue  ──reviewer──▶  feedback (gold/silver/bronze)
//!  anomaly_clusters          (anomaly_uncertain,                   anomaly_feedback
//!                             anomaly_audit)                           │ every 100 new labels
//!                                                                      ▼
//!                           current_threshold(tenant) ◀── threshold: exact ROC, FPR ≤ target
//!                           (anomaly_thresholds; the next bundle carries it)
//! ```
//!
//! * A decision is *flagged* when its `anomaly_action` is `shadow`, `guardrail` or `blocked`
//!   (migration 0027: inline scoring writes `none` below the threshold in every mode).
//! * Feedback is one label per (tenant, pcs_id, submitted_by), never changed (a second one is
//!   a 409). Per decision the label that counts is the highest source, then the newest, as in
//!   the label store ([`crate::review::effective_label`]).
//! * Everything here is a plain function of the database and the caller's clock; the routes
//!   ([`api`]) and `kakeya anomaly …` call the same ones.

pub mod active;
pub mod api;
pub mod cluster;
pub mod eval;
pub mod eval_data;
pub mod feedback;
pub mod inline;
pub mod metrics;
pub mod model_api;
pub mod model_store;
pub mod publication;
pub mod roc;
pub mod store;
#[cfg(test)]
mod tests;
pub mod threshold;
pub mod train;

use serde::{Deserialize, Serialize};

/// What a labeller says about a decision's output.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum UserLabel {
    /// Broken or out of range: the detector should flag it (the positive class).
    Anomalous,
    Normal,
}

impl UserLabel {
    pub fn as_str(self) -> &'static str {
        match self {
            UserLabel::Anomalous => "anomalous",
            UserLabel::Normal => "normal",
        }
    }

    pub fn parse(s: &str) -> Option<UserLabel> {
        [UserLabel::Anomalous, UserLabel::Normal]
            .into_iter()
            .find(|l| l.as_str() == s)
    }
}

/// What the gate did with a decision's anomaly score (`decision_log.anomaly_action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Below the threshold.
    None,
    /// Flagged in shadow mode: recorded only.
    Shadow,
    /// Flagged in guardrail mode: a vote in the ensemble.
    Guardrail,
    /// Refused with `anomaly_blocked`.
    Blocked,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::None => "none",
            Action::Shadow => "shadow",
            Action::Guardrail => "guardrail",
            Action::Blocked => "blocked",
        }
    }

    pub fn flagged(self) -> bool {
        self != Action::None
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AnomalyError {
    #[error("{0}")]
    Invalid(String),
    #[error("no decision {pcs_id} for tenant {tenant} in the decision log")]
    NoDecision { tenant: String, pcs_id: String },
    #[error("{submitted_by} already gave feedback on {tenant}/{pcs_id}; feedback is immutable")]
    Duplicate {
        tenant: String,
        pcs_id: String,
        submitted_by: String,
    },
    #[error(transparent)]
    Threshold(#[from] threshold::ThresholdError),
    #[error("database: {0}")]
    Store(#[from] sqlx::Error),
}

/// Feature names of an anomaly feature schema, in its order: what the cluster labels read
/// ([`cluster::label_of`]). Only the detector's schema (`kakeya_core::anomaly_features`) is
/// known; clusters of any other schema are labelled `mixed_anomaly`.
pub fn feature_names(schema: &str) -> Option<Vec<String>> {
    use kakeya_core::anomaly_features as af;
    (schema == af::SCHEMA_VERSION)
        .then(|| af::FEATURE_NAMES.iter().map(|s| s.to_string()).collect())
}
