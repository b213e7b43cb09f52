//! The learning loop's training half: datasets from the decision log and its labels, training
//! jobs that fit, evaluate and register a model from them.
//!
//! * [`dataset`]: labelled decisions of one time range with the features the gate scored them
//!   with → rows, a time-based split (train on the older part, validate on the newest), a
//!   reproducible SHA-256 and typed errors with counts;
//! * [`fit`]: the model kinds ([`ModelKind`]): fit on the training part, metrics with bootstrap
//!   intervals on the validation part, the artifact and its model card;
//! * [`jobs`]: the `training_jobs` table (migration 0012), the job function that `kakeya serve`'s
//!   runner and `kakeya hrs train` share, crash recovery, [`jobs::registered_version`];
//! * [`api`]: `POST /v1/hrs/train`, `GET /v1/hrs/jobs`, `GET /v1/hrs/jobs/{job_id}`.

pub mod api;
pub mod dataset;
pub mod fit;
pub mod jobs;
#[cfg(test)]
pub(crate) mod tests;

use serde::{Deserialize, Serialize};

/// Which learner a training job fits. Each kind is one arm of [`fit::train`].
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
    clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    /// L2 logistic regression (Newton/IRLS) with balanced class weights, Platt calibration on
    /// a held-out split of the training part.
    #[default]
    Lr,
    /// Gradient-boosted trees (forust-ml; 200 trees of depth ≤ 4 at learning rate 0.1, the
    /// defaults of `kakeya train --model-kind gbdt`) with the same balanced class weights as
    /// sample weights, Platt calibration on the same held-out split; scored in the filter.
    Gbdt,
}

impl ModelKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ModelKind::Lr => "lr",
            ModelKind::Gbdt => "gbdt",
        }
    }
}

/// Fewest labelled decisions a dataset needs by default (both classes present).
pub const DEFAULT_MIN_LABELS: usize = 100;
/// Share of the labelled decisions, newest first, held out for validation by default.
pub const DEFAULT_VALIDATION_FRACTION: f64 = 0.2;

/// The `[training]` table of `kakeya.toml`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainingOptions {
    /// Fewest usable labelled decisions (both classes required).
    pub min_labels: usize,
    /// Share of the labelled decisions (by time, newest) held out for validation, in (0, 1).
    pub validation_fraction: f64,
    /// Resamples of the bootstrap intervals of the validation metrics.
    pub bootstrap_resamples: usize,
}

impl Default for TrainingOptions {
    fn default() -> Self {
        TrainingOptions {
            min_labels: DEFAULT_MIN_LABELS,
            validation_fraction: DEFAULT_VALIDATION_FRACTION,
            bootstrap_resamples: crate::ml::bootstrap::DEFAULT_RESAMPLES,
        }
    }
}

/// Most bootstrap resamples `[training]` accepts (each one recomputes every metric).
pub const MAX_BOOTSTRAP_RESAMPLES: usize = 100_000;

impl TrainingOptions {
    /// What `kakeya.toml` may not say.
    pub fn validate(&self) -> Result<(), String> {
        if self.min_labels < 1 {
            return Err("training.min_labels must be at least 1".into());
        }
        if !(self.validation_fraction > 0.0 && self.validation_fraction < 1.0) {
            return Err(format!(
                "training.validation_fraction must be in (0, 1) (got {})",
                self.validation_fraction
            ));
        }
        if !(1..=MAX_BOOTSTRAP_RESAMPLES).contains(&self.bootstrap_resamples) {
            return Err(format!(
                "training.bootstrap_resamples must be 1..={MAX_BOOTSTRAP_RESAMPLES} (got {})",
                self.bootstrap_resamples
            ));
        }
        Ok(())
    }
}

/// `ms` (epoch milliseconds) as RFC 3339 in UTC, e.g. `2026-01-31T12:00:00.250Z`.
pub fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("{ms} ms"))
}

/// An RFC 3339 time (any offset) as epoch milliseconds (sub-millisecond digits truncated).
pub fn parse_rfc3339(s: &str) -> Result<i64, String> {
    let t = time::OffsetDateTime::parse(s.trim(), &time::format_description::well_known::Rfc3339)
        .map_err(|e| {
        format!("{s:?} is not an RFC 3339 time (e.g. 2026-01-31T00:00:00Z): {e}")
    })?;
    i64::try_from(t.unix_timestamp_nanos().div_euclid(1_000_000))
        .map_err(|_| format!("{s:?} is out of range"))
}
