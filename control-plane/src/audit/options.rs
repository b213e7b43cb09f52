//! The `[audit]` table of `kakeya.toml` and its environment overrides (`KAKEYA_AUDIT_*`, which
//! win): when segments are sealed with a signed checkpoint.

use crate::config::{ConfigError, EnvMap};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Seal unsealed entries at least this often (the cadence).
pub const DEFAULT_CHECKPOINT_EVERY: Duration = Duration::from_secs(600);
/// Seal a segment every this many entries (rotation).
pub const DEFAULT_ROTATE_ENTRIES: u64 = 10_000;
/// How often the leader looks whether a seal is due.
pub const SEAL_TICK: Duration = Duration::from_secs(5);

/// `[audit]` as written (every field optional).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditFileConfig {
    /// e.g. `10m`
    pub checkpoint_every: Option<String>,
    pub rotate_entries: Option<u64>,
}

/// The effective audit settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct AuditOptions {
    /// Entries older than this are sealed even when fewer than `rotate_entries` are pending.
    #[serde(serialize_with = "ser_duration")]
    pub checkpoint_every: Duration,
    /// A segment is sealed once it holds this many entries (≥ 1).
    pub rotate_entries: u64,
}

fn ser_duration<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_duration(*d).to_string())
}

impl Default for AuditOptions {
    fn default() -> Self {
        AuditOptions {
            checkpoint_every: DEFAULT_CHECKPOINT_EVERY,
            rotate_entries: DEFAULT_ROTATE_ENTRIES,
        }
    }
}

fn env<'a>(env: &'a EnvMap, var: &str) -> Option<&'a str> {
    env.get(var).map(|v| v.trim()).filter(|v| !v.is_empty())
}

impl AuditOptions {
    /// `[audit]` with `KAKEYA_AUDIT_CHECKPOINT_EVERY` (e.g. `10m`, at least 1 s) and
    /// `KAKEYA_AUDIT_ROTATE_ENTRIES` (≥ 1).
    pub fn from_parts(file: Option<AuditFileConfig>, envm: &EnvMap) -> Result<Self, ConfigError> {
        let f = file.unwrap_or_default();
        let d = AuditOptions::default();
        let every_text = env(envm, "KAKEYA_AUDIT_CHECKPOINT_EVERY")
            .map(|v| (Some("KAKEYA_AUDIT_CHECKPOINT_EVERY"), v.to_string()))
            .or(f.checkpoint_every.map(|v| (None, v)));
        let checkpoint_every = match every_text {
            None => d.checkpoint_every,
            Some((var, v)) => match humantime::parse_duration(&v) {
                Ok(x) if x >= Duration::from_secs(1) => x,
                _ => {
                    let message = "expected a duration of at least 1s, e.g. 10m".to_string();
                    return Err(match var {
                        Some(var) => ConfigError::Env {
                            var,
                            value: v,
                            message,
                        },
                        None => ConfigError::Invalid(format!("audit.checkpoint_every: {message}")),
                    });
                }
            },
        };
        let rotate_entries = match env(envm, "KAKEYA_AUDIT_ROTATE_ENTRIES") {
            Some(v) => match v.parse::<u64>() {
                Ok(n) if n >= 1 => n,
                _ => {
                    return Err(ConfigError::Env {
                        var: "KAKEYA_AUDIT_ROTATE_ENTRIES",
                        value: v.to_string(),
                        message: "expected a count of at least 1".into(),
                    })
                }
            },
            None => match f.rotate_entries {
                Some(0) => {
                    return Err(ConfigError::Invalid(
                        "audit.rotate_entries must be at least 1".into(),
                    ))
                }
                Some(n) => n,
                None => d.rotate_entries,
            },
        };
        Ok(AuditOptions {
            checkpoint_every,
            rotate_entries,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::env_map as envm;

    #[test]
    fn defaults_file_and_env() {
        assert_eq!(
            AuditOptions::from_parts(None, &envm(&[])).unwrap(),
            AuditOptions::default()
        );
        let f = AuditFileConfig {
            checkpoint_every: Some("1m".into()),
            rotate_entries: Some(5),
        };
        let o = AuditOptions::from_parts(Some(f.clone()), &envm(&[])).unwrap();
        assert_eq!((o.checkpoint_every.as_secs(), o.rotate_entries), (60, 5));
        let o = AuditOptions::from_parts(
            Some(f),
            &envm(&[
                ("KAKEYA_AUDIT_ROTATE_ENTRIES", "7"),
                ("KAKEYA_AUDIT_CHECKPOINT_EVERY", "2s"),
            ]),
        )
        .unwrap();
        assert_eq!((o.checkpoint_every.as_secs(), o.rotate_entries), (2, 7));
        for (k, v) in [
            ("KAKEYA_AUDIT_ROTATE_ENTRIES", "0"),
            ("KAKEYA_AUDIT_CHECKPOINT_EVERY", "10ms"),
            ("KAKEYA_AUDIT_CHECKPOINT_EVERY", "soon"),
        ] {
            let e = AuditOptions::from_parts(None, &envm(&[(k, v)])).unwrap_err();
            assert!(e.to_string().contains(k), "{e}");
        }
    }
}
