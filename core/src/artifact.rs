//! The parts every kind of model artifact shares ([`crate::model`] and [`crate::trees`]): the
//! Platt calibrator, the thresholds, the provenance, the errors and the schema check. Their own
//! module so that `model` (which holds every kind) and `trees` (one kind) do not depend on each
//! other both ways; `model` re-exports them.

use crate::features::{FEATURE_NAMES, SCHEMA_VERSION};
use serde::{Deserialize, Serialize};

/// Platt calibrator `p = 1/(1 + exp(A·s + B))` on the decision value `s`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Platt {
    pub a: f64,
    pub b: f64,
}

impl Platt {
    pub fn apply(&self, s: f64) -> f64 {
        sigmoid(-(self.a * s + self.b))
    }
}

/// Decision thresholds on the calibrated risk.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    /// Risk at or above which an answer is escalated.
    pub escalate: f64,
}

/// Provenance of an artifact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingMeta {
    pub seed: u64,
    pub rows: usize,
    pub dataset_sha256: String,
    pub recipe_version: String,
    pub l2: f64,
    /// Cross-validated metrics of the same recipe on the same data (free-form JSON).
    pub cv_metrics: serde_json::Value,
}

/// Why an artifact cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ModelError {
    #[error("unsupported model kind {0:?}")]
    Kind(String),
    #[error("feature schema {0:?} does not match {SCHEMA_VERSION}")]
    Schema(String),
    #[error("feature names do not match schema {SCHEMA_VERSION}")]
    Names,
    #[error("mean, std and weights must have {0} entries")]
    Shape(usize),
    #[error("non-finite or non-positive parameter")]
    NonFinite,
    #[error("invalid JSON: {0}")]
    Json(String),
    #[error("tree {tree}: {why}")]
    Tree { tree: usize, why: &'static str },
    #[error("ensemble too large: {0}")]
    TooLarge(&'static str),
}

/// Checks an artifact's feature schema and names against this build's.
pub(crate) fn check_schema(schema_version: &str, names: &[String]) -> Result<(), ModelError> {
    if schema_version != SCHEMA_VERSION {
        return Err(ModelError::Schema(schema_version.to_string()));
    }
    if names.len() != FEATURE_NAMES.len() || names.iter().zip(FEATURE_NAMES).any(|(a, b)| a != b) {
        return Err(ModelError::Names);
    }
    Ok(())
}

#[inline]
pub fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}
