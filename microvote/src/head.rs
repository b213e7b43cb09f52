//! The trained head: per task kind, standardise → logit → Platt over [`FEATURE_NAMES`], with a
//! global fallback for kinds (or requests) without a head of their own.
//!
//! The artifact is a few KB of JSON (`microvote/head.json`, committed with its card) written by
//! `kakeya microvote train`; its version is the SHA-256 of its heads, so a vote names exactly
//! the weights that cast it.

use crate::features::{FEATURES_VERSION, FEATURE_NAMES, N_FEATURES};
use kakeya_core::model::Platt;
use kakeya_core::task::TaskKind;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const HEAD_FORMAT: &str = "kakeya-microvote-head/1";

/// The committed head, built into the binary so a fresh checkout votes without training.
pub const BUILTIN_HEAD: &str = include_str!("../head.json");

/// One logistic head.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Logit {
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
    pub weights: Vec<f64>,
    pub intercept: f64,
    pub platt: Platt,
}

impl Logit {
    /// Calibrated probability of hallucination.
    pub fn score(&self, x: &[f64]) -> f64 {
        let z = self.intercept
            + self
                .weights
                .iter()
                .zip(x.iter().zip(self.mean.iter().zip(&self.std)))
                .map(|(w, (x, (m, s)))| w * (x - m) / s)
                .sum::<f64>();
        self.platt.apply(z)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Head {
    pub format: String,
    pub features_version: String,
    pub features: Vec<String>,
    /// `qa`, `dialogue`, `summarization`, … and `global`.
    pub heads: BTreeMap<String, Logit>,
    /// How it was made: data SHA-256, rows, folds, the cross-validated figures.
    #[serde(default)]
    pub card: serde_json::Value,
}

#[derive(Debug, thiserror::Error)]
pub enum HeadError {
    #[error("head: not JSON of the expected shape: {0}")]
    Json(#[from] serde_json::Error),
    #[error("head: {0}. Retrain it with `kakeya microvote train`")]
    Invalid(String),
}

impl Head {
    pub fn parse(s: &str) -> Result<Head, HeadError> {
        let h: Head = serde_json::from_str(s)?;
        h.validate()?;
        Ok(h)
    }

    pub fn builtin() -> Result<Head, HeadError> {
        Head::parse(BUILTIN_HEAD)
    }

    fn validate(&self) -> Result<(), HeadError> {
        if self.format != HEAD_FORMAT {
            return Err(HeadError::Invalid(format!(
                "format {:?}, expected {HEAD_FORMAT:?}",
                self.format
            )));
        }
        if self.features_version != FEATURES_VERSION
            || self.features.iter().map(String::as_str).ne(FEATURE_NAMES)
        {
            return Err(HeadError::Invalid(format!(
                "trained on features {:?}, this build computes {FEATURES_VERSION}",
                self.features_version
            )));
        }
        if !self.heads.contains_key("global") {
            return Err(HeadError::Invalid("no global head".into()));
        }
        for (k, l) in &self.heads {
            let ok = [&l.mean, &l.std, &l.weights]
                .iter()
                .all(|v| v.len() == N_FEATURES && v.iter().all(|x| x.is_finite()))
                && l.std.iter().all(|s| *s > 0.0)
                && l.intercept.is_finite()
                && l.platt.a.is_finite()
                && l.platt.b.is_finite();
            if !ok {
                return Err(HeadError::Invalid(format!("head {k:?} is malformed")));
            }
        }
        Ok(())
    }

    /// `mv-` and the first 12 hex digits of the SHA-256 of the heads' JSON.
    pub fn version(&self) -> String {
        let bytes = serde_json::to_vec(&self.heads).unwrap_or_default();
        let hex = kakeya_core::ids::sha256_hex(&bytes);
        format!("mv-{}", hex.get(..12).unwrap_or(&hex))
    }

    /// The head for `task` (its own, else the global one).
    pub fn for_task(&self, task: Option<TaskKind>) -> Option<&Logit> {
        task.and_then(|t| self.heads.get(t.as_str()))
            .or_else(|| self.heads.get("global"))
    }

    pub fn score(&self, task: Option<TaskKind>, x: &[f64]) -> f64 {
        self.for_task(task).map_or(0.5, |l| l.score(x))
    }
}
