//! `[microvote]` of `kakeya.toml` and its environment overrides (`KAKEYA_MICROVOTE_*`, which
//! win): where `kakeya microvote serve` listens (and where the rendered Envoy bootstrap's
//! `kakeya_microvote` cluster points), its threads, queue, caches and input caps.

use crate::config::{ConfigError, EnvMap};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;

/// At most this many inference threads in all (the machine budget of issue 14).
pub const MAX_THREADS: usize = 2;

/// `[microvote]` as written (every field optional).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MicrovoteFileConfig {
    pub addr: Option<SocketAddr>,
    /// Inference workers (requests scored at once), 1 or 2.
    pub workers: Option<usize>,
    /// Threads in all (workers × threads per worker), 1 or 2.
    pub threads: Option<usize>,
    pub queue: Option<usize>,
    pub cache_entries: Option<usize>,
    pub max_body_bytes: Option<usize>,
    pub max_text_bytes: Option<usize>,
    /// Folder of the encoder (model.safetensors, tokenizer.json, config.json).
    pub model_dir: Option<PathBuf>,
    /// A head JSON from `kakeya microvote train` (default: the one built in).
    pub head: Option<PathBuf>,
}

/// The effective micro-vote settings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MicrovoteConfig {
    pub addr: SocketAddr,
    pub workers: usize,
    pub threads: usize,
    pub queue: usize,
    pub cache_entries: usize,
    pub max_body_bytes: usize,
    pub max_text_bytes: usize,
    pub model_dir: Option<PathBuf>,
    pub head: Option<PathBuf>,
}

impl Default for MicrovoteConfig {
    fn default() -> Self {
        let l = kakeya_microvote::server::Limits::default();
        MicrovoteConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 8091)),
            workers: l.workers,
            threads: MAX_THREADS,
            queue: l.queue,
            cache_entries: 4096,
            max_body_bytes: l.max_body_bytes,
            max_text_bytes: l.max_text_bytes,
            model_dir: None,
            head: None,
        }
    }
}

fn env_parse<T: std::str::FromStr>(
    env: &EnvMap,
    var: &'static str,
    what: &str,
) -> Result<Option<T>, ConfigError> {
    match env.get(var).map(|v| v.trim()).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| ConfigError::Env {
            var,
            value: v.to_string(),
            message: format!("expected {what}"),
        }),
    }
}

impl MicrovoteConfig {
    pub fn from_parts(
        file: Option<MicrovoteFileConfig>,
        env: &EnvMap,
    ) -> Result<MicrovoteConfig, ConfigError> {
        let f = file.unwrap_or_default();
        let d = MicrovoteConfig::default();
        let n = "a positive integer";
        let c = MicrovoteConfig {
            addr: env_parse(env, "KAKEYA_MICROVOTE_ADDR", "IP:PORT, e.g. 127.0.0.1:8091")?
                .or(f.addr)
                .unwrap_or(d.addr),
            workers: env_parse(env, "KAKEYA_MICROVOTE_WORKERS", n)?
                .or(f.workers)
                .unwrap_or(d.workers),
            threads: env_parse(env, "KAKEYA_MICROVOTE_THREADS", n)?
                .or(f.threads)
                .unwrap_or(d.threads),
            queue: env_parse(env, "KAKEYA_MICROVOTE_QUEUE", n)?
                .or(f.queue)
                .unwrap_or(d.queue),
            cache_entries: env_parse(env, "KAKEYA_MICROVOTE_CACHE_ENTRIES", n)?
                .or(f.cache_entries)
                .unwrap_or(d.cache_entries),
            max_body_bytes: env_parse(env, "KAKEYA_MICROVOTE_MAX_BODY_BYTES", n)?
                .or(f.max_body_bytes)
                .unwrap_or(d.max_body_bytes),
            max_text_bytes: env_parse(env, "KAKEYA_MICROVOTE_MAX_TEXT_BYTES", n)?
                .or(f.max_text_bytes)
                .unwrap_or(d.max_text_bytes),
            model_dir: env_parse(env, "KAKEYA_MICROVOTE_MODEL_DIR", "a path")?.or(f.model_dir),
            head: env_parse(env, "KAKEYA_MICROVOTE_HEAD", "a path")?.or(f.head),
        };
        c.validate()?;
        Ok(c)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(format!("[microvote] {m}")));
        if !(1..=MAX_THREADS).contains(&self.threads) {
            return bad(format!("threads must be 1 or 2, got {}", self.threads));
        }
        if self.workers == 0 || self.workers > self.threads {
            return bad(format!(
                "workers must be between 1 and threads ({}), got {}",
                self.threads, self.workers
            ));
        }
        for (k, v) in [
            ("queue", self.queue),
            ("cache_entries", self.cache_entries),
            ("max_body_bytes", self.max_body_bytes),
            ("max_text_bytes", self.max_text_bytes),
        ] {
            if v == 0 {
                return bad(format!("{k} must be at least 1"));
            }
        }
        Ok(())
    }

    /// Threads each worker's matrix products use (threads split evenly over the workers).
    pub fn threads_per_worker(&self) -> usize {
        (self.threads / self.workers.max(1)).max(1)
    }

    pub fn limits(&self) -> kakeya_microvote::server::Limits {
        kakeya_microvote::server::Limits {
            workers: self.workers,
            queue: self.queue,
            max_body_bytes: self.max_body_bytes,
            max_text_bytes: self.max_text_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::env_map as env;

    #[test]
    fn defaults_file_and_env() {
        let d = MicrovoteConfig::from_parts(None, &EnvMap::new()).unwrap();
        assert_eq!(d.addr.to_string(), "127.0.0.1:8091");
        assert_eq!((d.workers, d.threads, d.threads_per_worker()), (1, 2, 2));
        let f = MicrovoteFileConfig {
            workers: Some(2),
            queue: Some(8),
            ..Default::default()
        };
        let c = MicrovoteConfig::from_parts(
            Some(f),
            &env(&[("KAKEYA_MICROVOTE_ADDR", "127.0.0.1:9999")]),
        )
        .unwrap();
        assert_eq!((c.workers, c.queue, c.threads_per_worker()), (2, 8, 1));
        assert_eq!(c.addr.port(), 9999);
    }

    #[test]
    fn refuses_more_than_two_threads_and_bad_values() {
        let e = MicrovoteConfig::from_parts(None, &env(&[("KAKEYA_MICROVOTE_THREADS", "4")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("threads must be 1 or 2"), "{e}");
        let e = MicrovoteConfig::from_parts(None, &env(&[("KAKEYA_MICROVOTE_QUEUE", "x")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("KAKEYA_MICROVOTE_QUEUE"), "{e}");
        let f = MicrovoteFileConfig {
            workers: Some(3),
            ..Default::default()
        };
        assert!(MicrovoteConfig::from_parts(Some(f), &EnvMap::new()).is_err());
    }
}
