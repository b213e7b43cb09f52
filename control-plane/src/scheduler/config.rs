//! `[scheduler]` of `kakeya.toml` and its `KAKEYA_SCHEDULER_*` environment overrides.
//!
//! ```toml
//! [scheduler]
//! retrain = false        # scheduled retraining (off by default)
//! retrain_every = "24h"  # one run per period of this length (periods aligned to the epoch)
//! train_window = "7d"    # a run trains on the decisions of [now − window, now)
//! model_kind = "lr"
//! auto_deploy = false    # promote a candidate that passes the gate
//! auroc_floor = 0.75
//! ece_ceiling = 0.10
//! drop_alpha = 0.05
//! ```

use super::gate::GateThresholds;
use crate::config::{ConfigError, EnvMap};
use crate::learn::ModelKind;
use serde::{Deserialize, Serialize};

pub const DEFAULT_RETRAIN_EVERY: &str = "24h";
pub const DEFAULT_TRAIN_WINDOW: &str = "7d";

/// What `[scheduler]` may contain; every key is optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SchedulerFileConfig {
    pub retrain: Option<bool>,
    pub retrain_every: Option<String>,
    pub train_window: Option<String>,
    pub model_kind: Option<ModelKind>,
    pub auto_deploy: Option<bool>,
    pub auroc_floor: Option<f64>,
    pub ece_ceiling: Option<f64>,
    pub drop_alpha: Option<f64>,
}

/// The effective `[scheduler]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SchedulerConfig {
    /// Scheduled retraining on the leader (`KAKEYA_SCHEDULER_RETRAIN`); manual runs work either
    /// way.
    pub retrain: bool,
    /// Length of a period, as configured (`KAKEYA_SCHEDULER_RETRAIN_EVERY`, humantime, 1 minute
    /// to 366 days): one scheduled run per period, periods aligned to the Unix epoch (so
    /// `24h` periods start at 00:00 UTC).
    pub retrain_every: String,
    pub retrain_every_ms: i64,
    /// How far back a run trains (`KAKEYA_SCHEDULER_TRAIN_WINDOW`): the decisions of
    /// [start − window, start).
    pub train_window: String,
    pub train_window_ms: i64,
    /// Learner of the candidates (`KAKEYA_SCHEDULER_MODEL_KIND`).
    pub model_kind: ModelKind,
    /// Promote a candidate that passes the gate to champion (`KAKEYA_SCHEDULER_AUTO_DEPLOY`);
    /// off: the pass is recorded (`gate_passed`) and nothing moves.
    pub auto_deploy: bool,
    /// `auroc_floor`, `ece_ceiling`, `drop_alpha` (`KAKEYA_SCHEDULER_AUROC_FLOOR`, …).
    pub gate: GateThresholds,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        let ms = |s: &str| duration_ms(s).unwrap_or_default();
        SchedulerConfig {
            retrain: false,
            retrain_every: DEFAULT_RETRAIN_EVERY.into(),
            retrain_every_ms: ms(DEFAULT_RETRAIN_EVERY),
            train_window: DEFAULT_TRAIN_WINDOW.into(),
            train_window_ms: ms(DEFAULT_TRAIN_WINDOW),
            model_kind: ModelKind::default(),
            auto_deploy: false,
            gate: GateThresholds::default(),
        }
    }
}

/// A humantime duration of 1 minute to 366 days ([`crate::ab::parse_duration`]) in ms.
fn duration_ms(s: &str) -> Result<i64, String> {
    crate::ab::parse_duration(s)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .map_err(|e| e.to_string())
}

impl SchedulerConfig {
    /// What `[scheduler]` may not say (the durations are checked when parsed).
    pub fn validate(&self) -> Result<(), String> {
        self.gate.validate().map_err(|e| {
            format!("{e}; fix [scheduler] in kakeya.toml or the KAKEYA_SCHEDULER_* variable")
        })
    }

    /// Start of the period that `now_ms` is in.
    pub fn period_start(&self, now_ms: i64) -> i64 {
        now_ms - now_ms.rem_euclid(self.retrain_every_ms.max(1))
    }
}

fn non_empty<'a>(env: &'a EnvMap, k: &str) -> Option<&'a str> {
    env.get(k).map(|v| v.trim()).filter(|v| !v.is_empty())
}

fn env_err(var: &'static str, value: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Env {
        var,
        value: value.into(),
        message: message.into(),
    }
}

fn env_bool(env: &EnvMap, var: &'static str) -> Result<Option<bool>, ConfigError> {
    non_empty(env, var)
        .map(|v| match v.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(true),
            "false" | "0" | "no" | "off" => Ok(false),
            _ => Err(env_err(var, v, "expected true or false")),
        })
        .transpose()
}

fn env_share(env: &EnvMap, var: &'static str) -> Result<Option<f64>, ConfigError> {
    non_empty(env, var)
        .map(|v| {
            v.parse::<f64>()
                .ok()
                .filter(|x| x.is_finite())
                .ok_or_else(|| env_err(var, v, "expected a number within [0, 1], e.g. 0.05"))
        })
        .transpose()
}

/// A duration from the environment (`var`) or the file (`key`), else `default`: (text, ms).
fn duration(
    env: &EnvMap,
    var: &'static str,
    file: Option<String>,
    key: &str,
    default: &str,
) -> Result<(String, i64), ConfigError> {
    if let Some(v) = non_empty(env, var) {
        let ms =
            duration_ms(v).map_err(|e| env_err(var, v, format!("{e}; use e.g. 24h, 7d or 90m")))?;
        return Ok((v.to_string(), ms));
    }
    let text = file.unwrap_or_else(|| default.to_string());
    let ms = duration_ms(&text).map_err(|e| {
        ConfigError::Invalid(format!(
            "scheduler.{key}: {e}; use e.g. 24h, 7d or 90m in [scheduler] of kakeya.toml"
        ))
    })?;
    Ok((text.trim().to_string(), ms))
}

/// `[scheduler]` with its environment overrides, validated.
pub fn from_parts(
    file: Option<SchedulerFileConfig>,
    env: &EnvMap,
) -> Result<SchedulerConfig, ConfigError> {
    let f = file.unwrap_or_default();
    let d = SchedulerConfig::default();
    let (retrain_every, retrain_every_ms) = duration(
        env,
        "KAKEYA_SCHEDULER_RETRAIN_EVERY",
        f.retrain_every,
        "retrain_every",
        DEFAULT_RETRAIN_EVERY,
    )?;
    let (train_window, train_window_ms) = duration(
        env,
        "KAKEYA_SCHEDULER_TRAIN_WINDOW",
        f.train_window,
        "train_window",
        DEFAULT_TRAIN_WINDOW,
    )?;
    let model_kind = match non_empty(env, "KAKEYA_SCHEDULER_MODEL_KIND") {
        Some(v) => <ModelKind as clap::ValueEnum>::from_str(v, true).map_err(|_| {
            let kinds: Vec<String> = <ModelKind as clap::ValueEnum>::value_variants()
                .iter()
                .map(|k| k.as_str().to_string())
                .collect();
            env_err(
                "KAKEYA_SCHEDULER_MODEL_KIND",
                v,
                format!("expected one of {}", kinds.join(", ")),
            )
        })?,
        None => f.model_kind.unwrap_or(d.model_kind),
    };
    let gate = GateThresholds {
        auroc_floor: env_share(env, "KAKEYA_SCHEDULER_AUROC_FLOOR")?
            .or(f.auroc_floor)
            .unwrap_or(d.gate.auroc_floor),
        ece_ceiling: env_share(env, "KAKEYA_SCHEDULER_ECE_CEILING")?
            .or(f.ece_ceiling)
            .unwrap_or(d.gate.ece_ceiling),
        drop_alpha: env_share(env, "KAKEYA_SCHEDULER_DROP_ALPHA")?
            .or(f.drop_alpha)
            .unwrap_or(d.gate.drop_alpha),
    };
    let c = SchedulerConfig {
        retrain: env_bool(env, "KAKEYA_SCHEDULER_RETRAIN")?
            .or(f.retrain)
            .unwrap_or(d.retrain),
        retrain_every,
        retrain_every_ms,
        train_window,
        train_window_ms,
        model_kind,
        auto_deploy: env_bool(env, "KAKEYA_SCHEDULER_AUTO_DEPLOY")?
            .or(f.auto_deploy)
            .unwrap_or(d.auto_deploy),
        gate,
    };
    c.validate().map_err(ConfigError::Invalid)?;
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::env;
    use crate::config::Config;

    #[test]
    fn defaults_are_off_daily_on_a_week_with_the_documented_gate() {
        let c = Config::from_toml_str("", &EnvMap::new()).unwrap().scheduler;
        assert_eq!(c, SchedulerConfig::default());
        assert!(!c.retrain && !c.auto_deploy);
        assert_eq!(
            (c.retrain_every_ms, c.train_window_ms),
            (86_400_000, 7 * 86_400_000)
        );
        assert_eq!(
            (c.gate.auroc_floor, c.gate.ece_ceiling, c.gate.drop_alpha),
            (0.75, 0.10, 0.05)
        );
        assert_eq!(c.model_kind, ModelKind::Lr);
        // Periods are aligned to the epoch: 24 h periods start at 00:00 UTC.
        let t = 1_767_225_600_000; // 2026-01-01T00:00:00Z
        assert_eq!(c.period_start(t + 3_600_000), t);
        assert_eq!(c.period_start(t), t);
        assert_eq!(c.period_start(t - 1), t - 86_400_000);
    }

    #[test]
    fn the_file_sets_and_the_environment_overrides() {
        let toml = "[scheduler]\nretrain = true\nretrain_every = \"12h\"\ntrain_window = \
                    \"30d\"\nauto_deploy = true\nauroc_floor = 0.8\nece_ceiling = 0.05\n\
                    drop_alpha = 0.01\n";
        let c = Config::from_toml_str(toml, &EnvMap::new())
            .unwrap()
            .scheduler;
        assert!(c.retrain && c.auto_deploy);
        assert_eq!(
            (c.retrain_every.as_str(), c.retrain_every_ms),
            ("12h", 43_200_000)
        );
        assert_eq!(c.train_window_ms, 30 * 86_400_000);
        assert_eq!(
            (c.gate.auroc_floor, c.gate.ece_ceiling, c.gate.drop_alpha),
            (0.8, 0.05, 0.01)
        );
        let e = env(&[
            ("KAKEYA_SCHEDULER_RETRAIN", "off"),
            ("KAKEYA_SCHEDULER_RETRAIN_EVERY", "90m"),
            ("KAKEYA_SCHEDULER_TRAIN_WINDOW", "36h"),
            ("KAKEYA_SCHEDULER_MODEL_KIND", "lr"),
            ("KAKEYA_SCHEDULER_AUTO_DEPLOY", "0"),
            ("KAKEYA_SCHEDULER_AUROC_FLOOR", "0.7"),
            ("KAKEYA_SCHEDULER_ECE_CEILING", "0.2"),
            ("KAKEYA_SCHEDULER_DROP_ALPHA", "0.1"),
        ]);
        let c = Config::from_toml_str(toml, &e).unwrap().scheduler;
        assert!(!c.retrain && !c.auto_deploy);
        assert_eq!(
            (c.retrain_every_ms, c.train_window_ms),
            (5_400_000, 129_600_000)
        );
        assert_eq!(
            (c.gate.auroc_floor, c.gate.ece_ceiling, c.gate.drop_alpha),
            (0.7, 0.2, 0.1)
        );
        assert_eq!(c.model_kind, ModelKind::Lr);
    }

    #[test]
    fn bad_values_are_config_errors_that_say_what_to_do() {
        for (toml, says) in [
            ("retrain_every = \"daily\"", "scheduler.retrain_every"),
            ("retrain_every = \"10s\"", "from 1 minute to 366 days"),
            ("train_window = \"400d\"", "scheduler.train_window"),
            (
                "auroc_floor = 1.5",
                "scheduler.auroc_floor must be within [0, 1]",
            ),
            ("ece_ceiling = -0.1", "scheduler.ece_ceiling"),
            (
                "drop_alpha = 0.0",
                "scheduler.drop_alpha must be within (0, 1)",
            ),
            ("drop_alpha = 1.0", "KAKEYA_SCHEDULER_"),
        ] {
            let e = Config::from_toml_str(&format!("[scheduler]\n{toml}\n"), &EnvMap::new())
                .unwrap_err()
                .to_string();
            assert!(e.contains(says), "{toml}: {e}");
        }
        for bad in [
            "retrain = 1",
            "model_kind = \"svm\"",
            "every = \"1h\"",
            "auroc_floor = \"high\"",
        ] {
            assert!(
                Config::from_toml_str(&format!("[scheduler]\n{bad}\n"), &EnvMap::new()).is_err(),
                "{bad}"
            );
        }
        for (var, value, says) in [
            (
                "KAKEYA_SCHEDULER_RETRAIN",
                "maybe",
                "expected true or false",
            ),
            (
                "KAKEYA_SCHEDULER_AUTO_DEPLOY",
                "2",
                "expected true or false",
            ),
            ("KAKEYA_SCHEDULER_RETRAIN_EVERY", "soon", "use e.g. 24h"),
            ("KAKEYA_SCHEDULER_TRAIN_WINDOW", "1s", "from 1 minute"),
            ("KAKEYA_SCHEDULER_MODEL_KIND", "svm", "expected one of lr"),
            ("KAKEYA_SCHEDULER_AUROC_FLOOR", "x", "expected a number"),
            ("KAKEYA_SCHEDULER_ECE_CEILING", "NaN", "expected a number"),
            ("KAKEYA_SCHEDULER_DROP_ALPHA", "2", "scheduler.drop_alpha"),
        ] {
            let e = Config::from_toml_str("", &env(&[(var, value)]))
                .unwrap_err()
                .to_string();
            assert!(e.contains(says), "{var}={value}: {e}");
        }
    }
}
