//! The `[ensemble]` table of `kakeya.toml` and its environment overrides
//! (`KAKEYA_ENSEMBLE_*`, which win, as everywhere else).

use crate::config::{ConfigError, EnvMap};
use crate::drift::options::{number, pick};
use kakeya_core::ensemble_policy::EnsemblePolicy;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Defaults: 100 labelled outcomes before a tune (the seed's rule) and a tune every 100 new
/// ones when `auto_tune`; caps of 2 % honest escalation (the project's escalation budget),
/// 120 ms of added latency (the seed's ensemble budget) and one callout; ε₀ = 0.1 (the
/// reference's fixed ε, decayed here); a fitted stack from 200 labelled outcomes.
pub const DEFAULT_MIN_SAMPLES: usize = 100;
pub const DEFAULT_TUNE_EVERY_LABELS: usize = 100;
pub const DEFAULT_CHECK_EVERY: Duration = Duration::from_secs(300);
pub const DEFAULT_MAX_HONEST_ESCALATION: f64 = 0.02;
pub const DEFAULT_MAX_LATENCY_MS: u32 = 120;
pub const DEFAULT_MAX_CALLOUTS: u32 = 1;
pub const DEFAULT_EPSILON0: f64 = 0.1;
pub const DEFAULT_STACK_MIN_ROWS: usize = 200;

/// `[ensemble]` as written (every field optional).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EnsembleFileConfig {
    pub min_samples: Option<usize>,
    pub tune_every_labels: Option<usize>,
    pub auto_tune: Option<bool>,
    /// How often the leader looks for tenants due a tune, e.g. `5m`.
    pub check_every: Option<String>,
    pub max_honest_escalation: Option<f64>,
    pub max_latency_ms: Option<u32>,
    pub max_callouts: Option<u32>,
    pub epsilon0: Option<f64>,
    pub stack_min_rows: Option<usize>,
    /// `[ensemble.default]`: published as `bundle.ensemble.default` (tenants without a policy
    /// of their own); absent = none, and they decide as before the ensemble.
    pub default: Option<EnsemblePolicy>,
}

/// The effective settings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EnsembleOptions {
    /// Fewest labelled outcomes of a tenant for a tune (fewer: 409 with the count).
    pub min_samples: usize,
    /// New labelled outcomes of a tenant between two scheduled tunes.
    pub tune_every_labels: usize,
    /// Tune on that cadence under the `ensemble-tune` lease (off by default).
    pub auto_tune: bool,
    #[serde(with = "humantime_serde_compat")]
    pub check_every: Duration,
    /// Feasibility caps of an arm (SLO caps, never soft penalties).
    pub max_honest_escalation: f64,
    pub max_latency_ms: u32,
    pub max_callouts: u32,
    /// ε₀ of εₜ = max(0.01, ε₀/√t).
    pub epsilon0: f64,
    /// Fewest labelled outcomes for a fitted stack (else the default stack).
    pub stack_min_rows: usize,
    pub default: Option<EnsemblePolicy>,
}

mod humantime_serde_compat {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }
}

impl Default for EnsembleOptions {
    fn default() -> Self {
        EnsembleOptions {
            min_samples: DEFAULT_MIN_SAMPLES,
            tune_every_labels: DEFAULT_TUNE_EVERY_LABELS,
            auto_tune: false,
            check_every: DEFAULT_CHECK_EVERY,
            max_honest_escalation: DEFAULT_MAX_HONEST_ESCALATION,
            max_latency_ms: DEFAULT_MAX_LATENCY_MS,
            max_callouts: DEFAULT_MAX_CALLOUTS,
            epsilon0: DEFAULT_EPSILON0,
            stack_min_rows: DEFAULT_STACK_MIN_ROWS,
            default: None,
        }
    }
}

fn boolean(v: &str) -> Result<bool, String> {
    match v {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err("expected true or false".into()),
    }
}

fn duration(v: &str) -> Result<Duration, String> {
    crate::ab::parse_duration(v).map_err(|e| format!("ensemble.check_every: {e}"))
}

impl EnsembleOptions {
    /// `[ensemble]` with `KAKEYA_ENSEMBLE_MIN_SAMPLES`, `_TUNE_EVERY_LABELS`, `_AUTO_TUNE`,
    /// `_CHECK_EVERY`, `_MAX_HONEST_ESCALATION`, `_MAX_LATENCY_MS`, `_MAX_CALLOUTS`,
    /// `_EPSILON0`, `_STACK_MIN_ROWS` and `_DEFAULT` (the default policy as JSON), validated.
    pub fn from_parts(file: Option<EnsembleFileConfig>, env: &EnvMap) -> Result<Self, ConfigError> {
        let f = file.unwrap_or_default();
        let d = EnsembleOptions::default();
        let check_every = f
            .check_every
            .map(|s| duration(&s))
            .transpose()
            .map_err(ConfigError::Invalid)?;
        let o = EnsembleOptions {
            min_samples: pick(
                env,
                "KAKEYA_ENSEMBLE_MIN_SAMPLES",
                f.min_samples,
                d.min_samples,
                number,
            )?,
            tune_every_labels: pick(
                env,
                "KAKEYA_ENSEMBLE_TUNE_EVERY_LABELS",
                f.tune_every_labels,
                d.tune_every_labels,
                number,
            )?,
            auto_tune: pick(
                env,
                "KAKEYA_ENSEMBLE_AUTO_TUNE",
                f.auto_tune,
                d.auto_tune,
                boolean,
            )?,
            check_every: pick(
                env,
                "KAKEYA_ENSEMBLE_CHECK_EVERY",
                check_every,
                d.check_every,
                duration,
            )?,
            max_honest_escalation: pick(
                env,
                "KAKEYA_ENSEMBLE_MAX_HONEST_ESCALATION",
                f.max_honest_escalation,
                d.max_honest_escalation,
                number,
            )?,
            max_latency_ms: pick(
                env,
                "KAKEYA_ENSEMBLE_MAX_LATENCY_MS",
                f.max_latency_ms,
                d.max_latency_ms,
                number,
            )?,
            max_callouts: pick(
                env,
                "KAKEYA_ENSEMBLE_MAX_CALLOUTS",
                f.max_callouts,
                d.max_callouts,
                number,
            )?,
            epsilon0: pick(
                env,
                "KAKEYA_ENSEMBLE_EPSILON0",
                f.epsilon0,
                d.epsilon0,
                number,
            )?,
            stack_min_rows: pick(
                env,
                "KAKEYA_ENSEMBLE_STACK_MIN_ROWS",
                f.stack_min_rows,
                d.stack_min_rows,
                number,
            )?,
            default: pick(
                env,
                "KAKEYA_ENSEMBLE_DEFAULT",
                f.default.map(Some),
                None,
                |v| {
                    serde_json::from_str(v)
                        .map(Some)
                        .map_err(|e| format!("expected a policy as JSON: {e}"))
                },
            )?,
        };
        o.validate().map_err(ConfigError::Invalid)?;
        Ok(o)
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.min_samples < 1 || self.tune_every_labels < 1 {
            return Err(
                "ensemble.min_samples and ensemble.tune_every_labels must be at least 1".into(),
            );
        }
        if !(0.0..=1.0).contains(&self.max_honest_escalation) {
            return Err(format!(
                "ensemble.max_honest_escalation must be within [0, 1] (got {})",
                self.max_honest_escalation
            ));
        }
        if !(0.0..=1.0).contains(&self.epsilon0) {
            return Err(format!(
                "ensemble.epsilon0 must be within [0, 1] (got {})",
                self.epsilon0
            ));
        }
        if self.check_every < Duration::from_secs(1) {
            return Err("ensemble.check_every must be at least 1s".into());
        }
        if let Some(p) = &self.default {
            p.validate().map_err(|e| format!("ensemble.default: {e}"))?;
        }
        Ok(())
    }
}
