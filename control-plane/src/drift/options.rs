//! The `[drift]` table of `kakeya.toml` and its environment overrides (`KAKEYA_DRIFT_*`, which
//! win, as everywhere else).

use crate::config::{ConfigError, EnvMap};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::time::Duration;

/// Defaults: a check every hour over the last 24 h; BH at q = 0.05; PSI 0.1 (moderate) and
/// 0.25 (major), the common reading; 100 decisions per model; AUROC drop 0.05 (the reference
/// system's threshold) with 30 labelled decisions of each class; auto-revert off.
pub const DEFAULT_CHECK_EVERY: Duration = Duration::from_secs(3600);
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(24 * 3600);
pub const DEFAULT_FDR_Q: f64 = 0.05;
pub const DEFAULT_PSI_MODERATE: f64 = 0.1;
pub const DEFAULT_PSI_MAJOR: f64 = 0.25;
pub const DEFAULT_MIN_DECISIONS: usize = 100;
pub const DEFAULT_MAX_DECISIONS: usize = 50_000;
pub const DEFAULT_AUROC_DROP: f64 = 0.05;
pub const DEFAULT_MIN_LABELS_PER_CLASS: usize = 30;
/// Most decisions a check may read per model (its memory: 22 features each).
pub const MAX_MAX_DECISIONS: usize = 1_000_000;

/// `[drift]` as written (every field optional).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DriftFileConfig {
    /// How often the periodic check runs, e.g. `1h`, `30m` (1 minute to 366 days).
    pub check_every: Option<String>,
    /// Window of a check without `since`, e.g. `24h`.
    pub window: Option<String>,
    pub fdr_q: Option<f64>,
    pub psi_moderate: Option<f64>,
    pub psi_major: Option<f64>,
    pub min_decisions: Option<usize>,
    pub max_decisions: Option<usize>,
    pub auroc_drop: Option<f64>,
    pub min_labels_per_class: Option<usize>,
    pub auto_revert: Option<bool>,
}

/// The effective drift settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DriftOptions {
    /// Period of the check `kakeya serve` runs under the `drift-check` lease.
    #[serde(serialize_with = "human", deserialize_with = "unhuman")]
    #[schema(value_type = String)]
    pub check_every: Duration,
    /// Window of a check that names no `since`.
    #[serde(serialize_with = "human", deserialize_with = "unhuman")]
    #[schema(value_type = String)]
    pub window: Duration,
    /// False discovery rate of the Benjamini–Hochberg procedure over the features' KS tests.
    pub fdr_q: f64,
    /// PSI at or above which a feature has shifted (warning).
    pub psi_moderate: f64,
    /// PSI at or above which it has shifted a lot (critical).
    pub psi_major: f64,
    /// Fewest decisions of a model in the window (with features of the schema) for a feature
    /// check; below, `insufficient_data`.
    pub min_decisions: usize,
    /// Most decisions read per model: the newest ones of the window (the report says how many
    /// the window had).
    pub max_decisions: usize,
    /// Largest AUROC drop below the card's tolerated before a performance alert.
    pub auroc_drop: f64,
    /// Fewest labelled decisions of each class for a performance check.
    pub min_labels_per_class: usize,
    /// Move the champion back to the last good one on its performance-drift alert.
    pub auto_revert: bool,
}

fn human<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_duration(*d).to_string())
}

fn unhuman<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s).map_err(serde::de::Error::custom)
}

impl Default for DriftOptions {
    fn default() -> Self {
        DriftOptions {
            check_every: DEFAULT_CHECK_EVERY,
            window: DEFAULT_WINDOW,
            fdr_q: DEFAULT_FDR_Q,
            psi_moderate: DEFAULT_PSI_MODERATE,
            psi_major: DEFAULT_PSI_MAJOR,
            min_decisions: DEFAULT_MIN_DECISIONS,
            max_decisions: DEFAULT_MAX_DECISIONS,
            auroc_drop: DEFAULT_AUROC_DROP,
            min_labels_per_class: DEFAULT_MIN_LABELS_PER_CLASS,
            auto_revert: false,
        }
    }
}

fn duration(what: &str, s: &str) -> Result<Duration, String> {
    crate::ab::parse_duration(s).map_err(|e| format!("drift.{what}: {e}"))
}

/// One override: the variable's value parsed, or the file's, or the default.
pub(crate) fn pick<T>(
    env: &EnvMap,
    var: &'static str,
    file: Option<T>,
    default: T,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<T, ConfigError> {
    match env.get(var).map(|v| v.trim()).filter(|v| !v.is_empty()) {
        Some(v) => parse(v).map_err(|message| ConfigError::Env {
            var,
            value: v.to_string(),
            message,
        }),
        None => Ok(file.unwrap_or(default)),
    }
}

pub(crate) fn number<T: std::str::FromStr>(v: &str) -> Result<T, String> {
    v.parse::<T>().map_err(|_| "expected a number".to_string())
}

impl DriftOptions {
    /// `[drift]` with `KAKEYA_DRIFT_CHECK_EVERY`, `_WINDOW`, `_FDR_Q`, `_PSI_MODERATE`,
    /// `_PSI_MAJOR`, `_MIN_DECISIONS`, `_MAX_DECISIONS`, `_AUROC_DROP`, `_MIN_LABELS_PER_CLASS`,
    /// `_AUTO_REVERT` (`true`/`false`), validated.
    pub fn from_parts(file: Option<DriftFileConfig>, env: &EnvMap) -> Result<Self, ConfigError> {
        let f = file.unwrap_or_default();
        let d = DriftOptions::default();
        let file_duration = |what: &str, v: Option<String>| {
            v.map(|s| duration(what, &s))
                .transpose()
                .map_err(ConfigError::Invalid)
        };
        let o = DriftOptions {
            check_every: pick(
                env,
                "KAKEYA_DRIFT_CHECK_EVERY",
                file_duration("check_every", f.check_every)?,
                d.check_every,
                |v| duration("check_every", v),
            )?,
            window: pick(
                env,
                "KAKEYA_DRIFT_WINDOW",
                file_duration("window", f.window)?,
                d.window,
                |v| duration("window", v),
            )?,
            fdr_q: pick(env, "KAKEYA_DRIFT_FDR_Q", f.fdr_q, d.fdr_q, number)?,
            psi_moderate: pick(
                env,
                "KAKEYA_DRIFT_PSI_MODERATE",
                f.psi_moderate,
                d.psi_moderate,
                number,
            )?,
            psi_major: pick(
                env,
                "KAKEYA_DRIFT_PSI_MAJOR",
                f.psi_major,
                d.psi_major,
                number,
            )?,
            min_decisions: pick(
                env,
                "KAKEYA_DRIFT_MIN_DECISIONS",
                f.min_decisions,
                d.min_decisions,
                number,
            )?,
            max_decisions: pick(
                env,
                "KAKEYA_DRIFT_MAX_DECISIONS",
                f.max_decisions,
                d.max_decisions,
                number,
            )?,
            auroc_drop: pick(
                env,
                "KAKEYA_DRIFT_AUROC_DROP",
                f.auroc_drop,
                d.auroc_drop,
                number,
            )?,
            min_labels_per_class: pick(
                env,
                "KAKEYA_DRIFT_MIN_LABELS_PER_CLASS",
                f.min_labels_per_class,
                d.min_labels_per_class,
                number,
            )?,
            auto_revert: pick(
                env,
                "KAKEYA_DRIFT_AUTO_REVERT",
                f.auto_revert,
                d.auto_revert,
                |v| match v {
                    "true" | "1" => Ok(true),
                    "false" | "0" => Ok(false),
                    _ => Err("expected true or false".into()),
                },
            )?,
        };
        o.validate().map_err(ConfigError::Invalid)?;
        Ok(o)
    }

    /// What `[drift]` may not say.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.fdr_q > 0.0 && self.fdr_q < 1.0) {
            return Err(format!(
                "drift.fdr_q must be in (0, 1) (got {})",
                self.fdr_q
            ));
        }
        if !(self.psi_moderate > 0.0
            && self.psi_moderate <= self.psi_major
            && self.psi_major.is_finite())
        {
            return Err(format!(
                "drift.psi_moderate and drift.psi_major must satisfy 0 < moderate ≤ major < ∞ \
                 (got {} and {})",
                self.psi_moderate, self.psi_major
            ));
        }
        if !(2..=self.max_decisions).contains(&self.min_decisions)
            || self.max_decisions > MAX_MAX_DECISIONS
        {
            return Err(format!(
                "drift.min_decisions and drift.max_decisions must satisfy 2 ≤ min ≤ max ≤ \
                 {MAX_MAX_DECISIONS} (got {} and {})",
                self.min_decisions, self.max_decisions
            ));
        }
        if !(self.auroc_drop >= 0.0 && self.auroc_drop < 1.0) {
            return Err(format!(
                "drift.auroc_drop must be in [0, 1) (got {})",
                self.auroc_drop
            ));
        }
        // DeLong needs 2 of each class.
        if self.min_labels_per_class < 2 {
            return Err(format!(
                "drift.min_labels_per_class must be at least 2 (got {})",
                self.min_labels_per_class
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::env_map as env;

    #[test]
    fn defaults_file_and_environment() {
        let d = DriftOptions::from_parts(None, &EnvMap::new()).unwrap();
        assert_eq!(d, DriftOptions::default());
        assert!(!d.auto_revert);
        let file = DriftFileConfig {
            check_every: Some("30m".into()),
            psi_major: Some(0.5),
            auto_revert: Some(true),
            ..Default::default()
        };
        let o = DriftOptions::from_parts(Some(file.clone()), &EnvMap::new()).unwrap();
        assert_eq!(o.check_every, Duration::from_secs(1800));
        assert_eq!((o.psi_major, o.auto_revert), (0.5, true));
        // the environment wins
        let e = env(&[
            ("KAKEYA_DRIFT_AUTO_REVERT", "false"),
            ("KAKEYA_DRIFT_WINDOW", "2h"),
            ("KAKEYA_DRIFT_MIN_LABELS_PER_CLASS", "10"),
        ]);
        let o = DriftOptions::from_parts(Some(file), &e).unwrap();
        assert_eq!(
            (o.auto_revert, o.window, o.min_labels_per_class),
            (false, Duration::from_secs(7200), 10)
        );
        let shown = serde_json::to_value(o).unwrap();
        assert_eq!(shown["window"], "2h");
    }

    #[test]
    fn kakeya_toml_has_a_drift_table() {
        let toml = "[drift]\nauto_revert = true\ncheck_every = \"15m\"\nfdr_q = 0.01\n";
        let c = crate::config::Config::from_toml_str(toml, &EnvMap::new()).unwrap();
        assert!(c.drift.auto_revert);
        assert_eq!(
            (c.drift.check_every, c.drift.fdr_q),
            (Duration::from_secs(900), 0.01)
        );
        let e = crate::config::Config::from_toml_str("[drift]\nfdr = 0.1\n", &EnvMap::new());
        assert!(e.is_err(), "unknown keys are refused");
        let e = crate::config::Config::from_toml_str("[drift]\npsi_major = 0.05\n", &EnvMap::new());
        assert!(e.unwrap_err().to_string().contains("drift.psi_moderate"));
    }

    #[test]
    fn bad_values_are_refused() {
        for (var, value) in [
            ("KAKEYA_DRIFT_CHECK_EVERY", "5s"),
            ("KAKEYA_DRIFT_CHECK_EVERY", "soon"),
            ("KAKEYA_DRIFT_FDR_Q", "0"),
            ("KAKEYA_DRIFT_FDR_Q", "x"),
            ("KAKEYA_DRIFT_PSI_MODERATE", "0.5"),
            ("KAKEYA_DRIFT_MIN_DECISIONS", "1"),
            ("KAKEYA_DRIFT_MAX_DECISIONS", "10"),
            ("KAKEYA_DRIFT_AUROC_DROP", "-0.1"),
            ("KAKEYA_DRIFT_MIN_LABELS_PER_CLASS", "1"),
            ("KAKEYA_DRIFT_AUTO_REVERT", "yes"),
        ] {
            let e = DriftOptions::from_parts(None, &env(&[(var, value)])).unwrap_err();
            assert!(
                e.to_string().contains("drift") || e.to_string().contains(var),
                "{var}={value}: {e}"
            );
        }
        let bad = DriftFileConfig {
            window: Some("forever".into()),
            ..Default::default()
        };
        assert!(DriftOptions::from_parts(Some(bad), &EnvMap::new()).is_err());
    }
}
