//! The `[canary]` table of `kakeya.toml` and its environment overrides (`KAKEYA_CANARY_*`,
//! which win, as everywhere else): the default schedule of a deployment and the controller's
//! tick.

use crate::config::{ConfigError, EnvMap};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The schedule: 5 / 10 / 25 / 50 / 100 % for 10 / 10 / 15 / 20 / 30 minutes.
pub const DEFAULT_WEIGHTS: [f64; 5] = [0.05, 0.10, 0.25, 0.50, 1.0];
pub const DEFAULT_DURATIONS_S: [u64; 5] = [600, 600, 900, 1200, 1800];
/// Fewest canary-arm decisions a step needs before it may pass (a quiet hour passes nothing).
pub const DEFAULT_MIN_REQUESTS: u64 = 100;
/// How often the leader's controller looks at the active deployment.
pub const DEFAULT_TICK_EVERY: Duration = Duration::from_secs(10);
/// How long a step due but not passing (one failed gate, too few requests) is held before
/// the canary is rolled back.
pub const DEFAULT_MAX_HOLD: Duration = Duration::from_secs(600);
/// Most steps of a schedule.
pub const MAX_STEPS: usize = 20;
/// Step durations: 1 second (time-compressed tests) to 7 days.
pub const MIN_STEP: Duration = Duration::from_secs(1);
pub const MAX_STEP: Duration = Duration::from_secs(7 * 86_400);

/// `[canary]` as written (every field optional).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CanaryFileConfig {
    /// Traffic weight of each step, within (0, 1], rising, the last 1.
    pub weights: Option<Vec<f64>>,
    /// Duration of each step (`10m`, `90s`), as many as weights.
    pub durations: Option<Vec<String>>,
    pub min_requests: Option<u64>,
    pub tick_every: Option<String>,
    pub max_hold: Option<String>,
    /// Admin addresses (`host:port`) of every Envoy of the gateway, whose per-cluster stats an
    /// upstream canary's gates sum; default the one Envoy of `envoy_admin_addr`.
    pub envoy_admins: Option<Vec<String>>,
}

/// One step of a schedule.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Share of traffic the canary scores during the step, within (0, 1].
    pub weight: f64,
    /// How long the step lasts (after acceleration, the shortened duration).
    pub duration_ms: u64,
}

/// The effective canary settings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CanaryOptions {
    pub steps: Vec<Step>,
    pub min_requests: u64,
    #[serde(with = "humantime_serde_ms")]
    pub tick_every: Duration,
    #[serde(with = "humantime_serde_ms")]
    pub max_hold: Duration,
    /// `[canary] envoy_admins` / `KAKEYA_CANARY_ENVOY_ADMINS` (comma-separated); the config's
    /// `envoy_admin_addr` when empty.
    pub envoy_admins: Vec<std::net::SocketAddr>,
    /// Names of the configured upstream routes (`[[upstream]]`), the targets a canary may take.
    pub upstreams: Vec<String>,
}

mod humantime_serde_ms {
    use serde::Serializer;
    pub fn serialize<S: Serializer>(d: &std::time::Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }
}

impl Default for CanaryOptions {
    fn default() -> Self {
        CanaryOptions {
            steps: DEFAULT_WEIGHTS
                .iter()
                .zip(DEFAULT_DURATIONS_S)
                .map(|(&weight, s)| Step {
                    weight,
                    duration_ms: s * 1000,
                })
                .collect(),
            min_requests: DEFAULT_MIN_REQUESTS,
            tick_every: DEFAULT_TICK_EVERY,
            max_hold: DEFAULT_MAX_HOLD,
            envoy_admins: Vec::new(),
            upstreams: Vec::new(),
        }
    }
}

/// A duration of a canary setting: humantime (`90s`, `10m`), 1 second to 7 days.
pub fn duration(what: &str, s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|e| format!("canary.{what}: duration {s:?}: {e}"))?;
    if !(MIN_STEP..=MAX_STEP).contains(&d) {
        return Err(format!(
            "canary.{what}: duration {s:?} must be from 1 second to 7 days"
        ));
    }
    Ok(d)
}

/// Checks a schedule: 1..=MAX_STEPS steps, weights rising within (0, 1] and ending at 1,
/// durations within [`MIN_STEP`, `MAX_STEP`].
pub fn check_steps(steps: &[Step]) -> Result<(), String> {
    if steps.is_empty() || steps.len() > MAX_STEPS {
        return Err(format!("a schedule has 1..={MAX_STEPS} steps"));
    }
    let mut last = 0.0;
    for (i, s) in steps.iter().enumerate() {
        // `>` is false for NaN.
        if !(s.weight > last && s.weight <= 1.0) {
            return Err(format!(
                "step {i}: weights must rise strictly within (0, 1] (got {})",
                s.weight
            ));
        }
        last = s.weight;
        let d = Duration::from_millis(s.duration_ms);
        if !(MIN_STEP..=MAX_STEP).contains(&d) {
            return Err(format!(
                "step {i}: duration must be from 1 second to 7 days (got {} ms)",
                s.duration_ms
            ));
        }
    }
    if last != 1.0 {
        return Err(
            "the last step's weight must be 1 (the canary takes all traffic before it is promoted)"
                .into(),
        );
    }
    Ok(())
}

fn env<'a>(env: &'a EnvMap, var: &str) -> Option<&'a str> {
    env.get(var).map(|v| v.trim()).filter(|v| !v.is_empty())
}

fn env_err(var: &'static str, value: &str, message: String) -> ConfigError {
    ConfigError::Env {
        var,
        value: value.to_string(),
        message,
    }
}

fn parse_addrs<'a>(
    list: impl Iterator<Item = &'a str>,
) -> Result<Vec<std::net::SocketAddr>, String> {
    list.map(str::trim)
        .filter(|a| !a.is_empty())
        .map(|a| {
            a.parse()
                .map_err(|_| format!("{a:?} is not an ip:port address"))
        })
        .collect()
}

impl CanaryOptions {
    /// `[canary]` with `KAKEYA_CANARY_WEIGHTS` (comma-separated, e.g. `0.05,0.1,0.25,0.5,1`),
    /// `_DURATIONS` (comma-separated, e.g. `10m,10m,15m,20m,30m`), `_MIN_REQUESTS`,
    /// `_TICK_EVERY`, `_MAX_HOLD`, validated.
    pub fn from_parts(file: Option<CanaryFileConfig>, envm: &EnvMap) -> Result<Self, ConfigError> {
        let f = file.unwrap_or_default();
        let d = CanaryOptions::default();
        let weights: Vec<f64> = match env(envm, "KAKEYA_CANARY_WEIGHTS") {
            Some(v) => v
                .split(',')
                .map(|w| w.trim().parse::<f64>())
                .collect::<Result<_, _>>()
                .map_err(|_| {
                    env_err(
                        "KAKEYA_CANARY_WEIGHTS",
                        v,
                        "expected comma-separated numbers".into(),
                    )
                })?,
            None => f
                .weights
                .unwrap_or_else(|| d.steps.iter().map(|s| s.weight).collect()),
        };
        let durations: Vec<Duration> = match env(envm, "KAKEYA_CANARY_DURATIONS") {
            Some(v) => v
                .split(',')
                .map(|s| duration("durations", s))
                .collect::<Result<_, _>>()
                .map_err(|m| env_err("KAKEYA_CANARY_DURATIONS", v, m))?,
            None => match f.durations {
                Some(ds) => ds
                    .iter()
                    .map(|s| duration("durations", s))
                    .collect::<Result<_, _>>()
                    .map_err(ConfigError::Invalid)?,
                None => d
                    .steps
                    .iter()
                    .map(|s| Duration::from_millis(s.duration_ms))
                    .collect(),
            },
        };
        if weights.len() != durations.len() {
            return Err(ConfigError::Invalid(format!(
                "canary: {} weights but {} durations; give one duration per step",
                weights.len(),
                durations.len()
            )));
        }
        let steps: Vec<Step> = weights
            .into_iter()
            .zip(durations)
            .map(|(weight, d)| Step {
                weight,
                duration_ms: u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
            })
            .collect();
        check_steps(&steps).map_err(|m| ConfigError::Invalid(format!("canary: {m}")))?;
        let min_requests = match env(envm, "KAKEYA_CANARY_MIN_REQUESTS") {
            Some(v) => v
                .parse()
                .map_err(|_| env_err("KAKEYA_CANARY_MIN_REQUESTS", v, "expected a count".into()))?,
            None => f.min_requests.unwrap_or(d.min_requests),
        };
        let pick =
            |var: &'static str, what: &str, file: Option<String>, default: Duration| match env(
                envm, var,
            ) {
                Some(v) => duration(what, v).map_err(|m| env_err(var, v, m)),
                None => file
                    .map(|s| duration(what, &s).map_err(ConfigError::Invalid))
                    .unwrap_or(Ok(default)),
            };
        Ok(CanaryOptions {
            steps,
            min_requests,
            tick_every: pick(
                "KAKEYA_CANARY_TICK_EVERY",
                "tick_every",
                f.tick_every,
                d.tick_every,
            )?,
            max_hold: pick("KAKEYA_CANARY_MAX_HOLD", "max_hold", f.max_hold, d.max_hold)?,
            envoy_admins: match env(envm, "KAKEYA_CANARY_ENVOY_ADMINS") {
                Some(v) => parse_addrs(v.split(','))
                    .map_err(|m| env_err("KAKEYA_CANARY_ENVOY_ADMINS", v, m))?,
                None => parse_addrs(f.envoy_admins.iter().flatten().map(String::as_str))
                    .map_err(|m| ConfigError::Invalid(format!("canary.envoy_admins: {m}")))?,
            },
            upstreams: Vec::new(),
        })
    }
}
