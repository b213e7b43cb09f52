//! Effective configuration: `kakeya.toml` (optional) overridden by environment variables.
//!
//! Why both: operators of the reference server only know its environment variables
//! (`PCS_SIGN_ALG`, `TENANTS`, `TOKEN_RATE`, `WAL_DIR`, ...), so those keep working and win;
//! everything new (tolerances, addresses, retention) also has a readable file form.
//! The environment is passed in as a map so that the mapping is a pure, testable function.
//! The keyring/verify part is validated by building the very [`kakeya_core::Gate`] the filter
//! will build, so a configuration the filter would refuse never gets rendered into Envoy.

use crate::evidence::{EvidenceConfig, EvidenceFileConfig, Tenants};
use anyhow::Context;
use kakeya_core::gate_config::{BundleSource, FailureMode};
use kakeya_core::signature::SigAlg;
use kakeya_core::{Gate, GateConfig, KeyringConfig, Verifier, VerifierConfig, VerifyParams};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Environment as a map (use [`process_env`] in binaries, literal maps in tests).
pub type EnvMap = BTreeMap<String, String>;

/// The process environment as an [`EnvMap`] (non-UTF-8 variables are ignored).
pub fn process_env() -> EnvMap {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Toml { path: PathBuf, message: String },
    #[error("{var}={value:?}: {message}")]
    Env {
        var: &'static str,
        value: String,
        message: String,
    },
    #[error("invalid gate configuration (keyring/verify): {0}. Fix PCS_SIGN_ALG / PCS_HMAC_KEY(S) / PCS_ED25519_PUB_B64 / TENANTS or the [keyring]/[verify] tables")]
    Gate(String),
    #[error("{0}")]
    Invalid(String),
}

/// What `kakeya.toml` may contain. Every field is optional; see [`Config`] for the defaults.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileConfig {
    pub data_dir: Option<PathBuf>,
    pub database_url: Option<String>,
    pub admin_addr: Option<SocketAddr>,
    pub ingest_addr: Option<SocketAddr>,
    pub gateway_addr: Option<SocketAddr>,
    pub envoy_admin_addr: Option<SocketAddr>,
    pub wal_dir: Option<PathBuf>,
    pub wal_retention_days: Option<u32>,
    pub dedup_ttl_secs: Option<u64>,
    pub token_rate: Option<u32>,
    pub group_commit_max_batch: Option<usize>,
    pub admin_token: Option<String>,
    pub admin_token_file: Option<PathBuf>,
    pub ingest_secret: Option<String>,
    pub ingest_secret_file: Option<PathBuf>,
    pub verify: Option<VerifyParams>,
    pub keyring: Option<KeyringConfig>,
    pub bundle_signing_seed_file: Option<PathBuf>,
    pub bundle_poll_interval_ms: Option<u64>,
    pub bundle_failure_mode: Option<FailureMode>,
    pub tenant_stats_days: Option<u32>,
    pub review: Option<ReviewFileConfig>,
    pub training: Option<crate::learn::TrainingOptions>,
    pub lease_tick_ms: Option<u64>,
    pub scheduler: Option<crate::scheduler::config::SchedulerFileConfig>,
    pub drift: Option<crate::drift::options::DriftFileConfig>,
    /// `[cost]`: price book, billing exports, reconciliation, budgets.
    pub cost: Option<crate::cost::options::CostFileConfig>,
    pub ensemble: Option<crate::ensemble::options::EnsembleFileConfig>,
    pub canary: Option<crate::canary::options::CanaryFileConfig>,
    pub audit: Option<crate::audit::options::AuditFileConfig>,
    // microvote: the auxiliary model's server (`[microvote]`).
    pub microvote: Option<crate::microvote_config::MicrovoteFileConfig>,
    // gateway: LLM-gateway mode (`[gateway]`, `[[llm_backend]]`).
    pub gateway: Option<crate::gateway_config::GatewayFileConfig>,
    pub llm_backend: Vec<crate::gateway_config::LlmBackend>,
    /// `[[upstream]]`: routes with a stable and a canary backend (canary/upstream.rs).
    pub upstream: Vec<crate::canary::upstream::Upstream>,
}

/// `[review]` of `kakeya.toml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReviewFileConfig {
    /// Share (within [0, 1]) of accepted, non-escalated decisions also queued for review.
    pub audit_sample_rate: Option<f64>,
    /// `[review.evidence]`: evidence retention for reviewers ([`crate::evidence`]).
    pub evidence: Option<EvidenceFileConfig>,
}

/// Settings of the review queue.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReviewConfig {
    /// Share (within [0, 1]) of accepted, non-escalated decisions also queued for review
    /// (`KAKEYA_AUDIT_SAMPLE_RATE`; [`crate::review::audit`]).
    pub audit_sample_rate: f64,
    /// Which tenants' queued evidence is kept, for how long, under which key (off by default).
    pub evidence: EvidenceConfig,
}

impl Default for ReviewConfig {
    fn default() -> Self {
        ReviewConfig {
            audit_sample_rate: crate::review::audit::DEFAULT_AUDIT_SAMPLE_RATE,
            evidence: EvidenceConfig::default(),
        }
    }
}

/// The effective configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    pub data_dir: PathBuf,
    /// `sqlite://...` (default `sqlite://<data_dir>/kakeya.db?mode=rwc`) or `postgres://...`.
    pub database_url: String,
    pub admin_addr: SocketAddr,
    pub ingest_addr: SocketAddr,
    pub gateway_addr: SocketAddr,
    pub envoy_admin_addr: SocketAddr,
    pub wal_dir: PathBuf,
    pub wal_retention_days: u32,
    pub dedup_ttl_secs: u64,
    /// Tokens per second per tenant in Envoy's local rate limit; burst is twice this.
    pub token_rate: u32,
    pub group_commit_max_batch: usize,
    /// Bearer token of the admin API (`KAKEYA_ADMIN_TOKEN`); when unset, the token is read from
    /// [`Config::admin_token_path`] (generated there at first start).
    pub admin_token: Option<String>,
    /// `KAKEYA_ADMIN_TOKEN_FILE` / `admin_token_file`, when the operator chose one.
    pub admin_token_file: Option<PathBuf>,
    /// Shared secret Envoy sends in `x-kakeya-ingest-secret` (`KAKEYA_INGEST_SECRET`).
    pub ingest_secret: Option<String>,
    /// `KAKEYA_INGEST_SECRET_FILE` / `ingest_secret_file`: a file holding the ingest secret.
    pub ingest_secret_file: Option<PathBuf>,
    pub verify: VerifyParams,
    pub keyring: KeyringConfig,
    /// Ed25519 seed that signs model bundles (default `<data_dir>/keys/bundle-signing.seed`,
    /// generated at first use; see [`crate::registry::keys`]).
    pub bundle_signing_seed_file: PathBuf,
    /// How often the gate filter polls `GET /v1/bundles/current`.
    pub bundle_poll_interval_ms: u64,
    /// What the filter does with a request it should score while it has no valid bundle.
    pub bundle_failure_mode: FailureMode,
    /// Public key of the bundle signing seed (standard base64), once loaded with
    /// [`Config::load_bundle_key`]; the gate configuration carries a bundle source only then.
    pub bundle_public_key: Option<String>,
    /// Days of decision log from which a published bundle's per-tenant statistics are computed.
    pub tenant_stats_days: u32,
    /// The review queue (`[review]`): audit sample, evidence retention.
    pub review: ReviewConfig,
    /// Datasets and training jobs (`[training]`): minimum labels, validation share, bootstrap.
    pub training: crate::learn::TrainingOptions,
    /// How often a background job's leader lease is checked or tried (`KAKEYA_LEASE_TICK_MS`):
    /// after the leader dies, another replica takes over within about one tick.
    pub lease_tick_ms: u64,
    /// Scheduled retraining and the auto-deploy gate (`[scheduler]`, `KAKEYA_SCHEDULER_*`).
    pub scheduler: crate::scheduler::SchedulerConfig,
    /// Drift checks, their thresholds and auto-revert (`[drift]`, `KAKEYA_DRIFT_*`).
    pub drift: crate::drift::DriftOptions,
    /// Price book, billing exports, reconciliation and budgets (`[cost]`, `KAKEYA_COST_*`).
    pub cost: crate::cost::options::CostOptions,
    /// Adaptive ensemble policies (`[ensemble]`, `KAKEYA_ENSEMBLE_*`).
    pub ensemble: crate::ensemble::EnsembleOptions,
    /// The canary controller (`[canary]`, `KAKEYA_CANARY_*`).
    pub canary: crate::canary::CanaryOptions,
    /// The audit log's checkpoints (`[audit]`, `KAKEYA_AUDIT_*`).
    pub audit: crate::audit::AuditOptions,
    /// The micro-vote server (`[microvote]`, `KAKEYA_MICROVOTE_*`): its address is also the
    /// Envoy cluster `kakeya_microvote`.
    pub microvote: crate::microvote_config::MicrovoteConfig,
    /// LLM-gateway mode (`[gateway]` + `[[llm_backend]]`, `KAKEYA_LLM_BACKEND`): the chat route
    /// and its backend clusters; `None` when no backend is configured.
    pub gateway: Option<crate::gateway_config::GatewayConfig>,
    /// Upstream routes (`[[upstream]]`, `KAKEYA_UPSTREAMS`): two clusters and a route each in
    /// the rendered bootstrap, canaried by the controller (`--target upstream:<name>`).
    pub upstreams: Vec<crate::canary::upstream::Upstream>,
    /// Non-fatal problems found while loading (e.g. skipped `TENANTS` entries); log them.
    #[serde(skip)]
    pub warnings: Vec<String>,
}

pub const DEFAULT_TOKEN_RATE: u32 = 100;

impl Default for Config {
    fn default() -> Self {
        let data_dir = PathBuf::from("./.kakeya");
        Config {
            database_url: default_database_url(&data_dir),
            wal_dir: data_dir.join("wal"),
            data_dir,
            admin_addr: addr(8081),
            ingest_addr: addr(8082),
            gateway_addr: addr(8080),
            envoy_admin_addr: addr(9901),
            wal_retention_days: 14,
            dedup_ttl_secs: 14 * 24 * 3600,
            token_rate: DEFAULT_TOKEN_RATE,
            group_commit_max_batch: 256,
            admin_token: None,
            admin_token_file: None,
            ingest_secret: None,
            ingest_secret_file: None,
            verify: VerifyParams::default(),
            keyring: KeyringConfig::default(),
            bundle_signing_seed_file: default_seed_file(Path::new("./.kakeya")),
            bundle_poll_interval_ms: DEFAULT_BUNDLE_POLL_MS,
            bundle_failure_mode: FailureMode::Open,
            bundle_public_key: None,
            tenant_stats_days: crate::registry::DEFAULT_TENANT_STATS_DAYS,
            review: ReviewConfig::default(),
            training: crate::learn::TrainingOptions::default(),
            lease_tick_ms: crate::lease::DEFAULT_TICK_MS,
            scheduler: crate::scheduler::SchedulerConfig::default(),
            drift: crate::drift::DriftOptions::default(),
            cost: crate::cost::options::CostOptions::default(),
            ensemble: crate::ensemble::EnsembleOptions::default(),
            canary: crate::canary::CanaryOptions::default(),
            audit: crate::audit::AuditOptions::default(),
            microvote: crate::microvote_config::MicrovoteConfig::default(),
            gateway: None,
            upstreams: Vec::new(),
            warnings: Vec::new(),
        }
    }
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn default_seed_file(data_dir: &Path) -> PathBuf {
    data_dir.join("keys").join("bundle-signing.seed")
}

/// Default of `bundle_poll_interval_ms`.
pub const DEFAULT_BUNDLE_POLL_MS: u64 = 2000;

fn default_database_url(data_dir: &Path) -> String {
    format!("sqlite://{}/kakeya.db?mode=rwc", data_dir.display())
}

impl Config {
    /// The process-wide settings that every bundle publication reads (tenant statistics window,
    /// the `[ensemble]` default policy): `kakeya serve` and every CLI verb apply them once after
    /// loading, so a bundle published by a CLI verb equals one the server would publish.
    pub fn apply_process_settings(&self) {
        crate::registry::configure_tenant_stats_days(self.tenant_stats_days);
        crate::ensemble::configure(self.ensemble.clone());
    }

    /// Defaults + environment only (no file unless `KAKEYA_CONFIG` names one).
    pub fn from_env_map(env: &EnvMap) -> Result<Config, ConfigError> {
        Self::load(None, env)
    }

    /// Loads `path` (or `KAKEYA_CONFIG` from `env` when `path` is `None`), then applies `env`,
    /// then validates. This is what `kakeya` does at start-up.
    pub fn load(path: Option<&Path>, env: &EnvMap) -> Result<Config, ConfigError> {
        let path: Option<PathBuf> = path
            .map(Path::to_path_buf)
            .or_else(|| non_empty(env, "KAKEYA_CONFIG").map(PathBuf::from));
        let file = match path {
            Some(p) => {
                let text = std::fs::read_to_string(&p).map_err(|source| ConfigError::Read {
                    path: p.clone(),
                    source,
                })?;
                toml::from_str::<FileConfig>(&text).map_err(|e| ConfigError::Toml {
                    path: p.clone(),
                    message: e.to_string(),
                })?
            }
            None => FileConfig::default(),
        };
        Self::from_parts(file, env)
    }

    /// Parses a TOML document, then applies `env` (for tests and embedding).
    pub fn from_toml_str(toml_text: &str, env: &EnvMap) -> Result<Config, ConfigError> {
        let file = toml::from_str::<FileConfig>(toml_text).map_err(|e| ConfigError::Toml {
            path: PathBuf::from("<string>"),
            message: e.to_string(),
        })?;
        Self::from_parts(file, env)
    }

    pub fn from_parts(file: FileConfig, env: &EnvMap) -> Result<Config, ConfigError> {
        let d = Config::default();
        let mut warnings = Vec::new();
        let data_dir = env_path(env, "KAKEYA_DATA_DIR")
            .or(file.data_dir)
            .unwrap_or(d.data_dir);
        let database_url = non_empty(env, "DATABASE_URL")
            .map(str::to_string)
            .or(file.database_url)
            .unwrap_or_else(|| default_database_url(&data_dir));
        let wal_dir = env_path(env, "WAL_DIR")
            .or(file.wal_dir)
            .unwrap_or_else(|| data_dir.join("wal"));
        let token_rate = match non_empty(env, "TOKEN_RATE") {
            // Reference behaviour: an unparsable TOKEN_RATE falls back to 100 (but we say so).
            Some(v) => {
                match v.trim().parse::<u32>() {
                    Ok(n) if n > 0 => n,
                    _ => {
                        warnings.push(format!("TOKEN_RATE={v:?} is not a positive integer; using {DEFAULT_TOKEN_RATE}"));
                        DEFAULT_TOKEN_RATE
                    }
                }
            }
            None => file.token_rate.unwrap_or(d.token_rate),
        };
        let bundle_signing_seed_file = env_path(env, "KAKEYA_BUNDLE_SIGNING_SEED_FILE")
            .or(file.bundle_signing_seed_file)
            .unwrap_or_else(|| default_seed_file(&data_dir));
        let bundle_poll_interval_ms = match non_empty(env, "KAKEYA_BUNDLE_POLL_MS") {
            Some(v) => v.trim().parse::<u64>().map_err(|_| ConfigError::Env {
                var: "KAKEYA_BUNDLE_POLL_MS",
                value: v.to_string(),
                message: "expected milliseconds (at least 100)".into(),
            })?,
            None => file
                .bundle_poll_interval_ms
                .unwrap_or(DEFAULT_BUNDLE_POLL_MS),
        };
        let lease_tick_ms = match non_empty(env, "KAKEYA_LEASE_TICK_MS") {
            Some(v) => v.trim().parse::<u64>().map_err(|_| ConfigError::Env {
                var: "KAKEYA_LEASE_TICK_MS",
                value: v.to_string(),
                message: "expected milliseconds (at least 100)".into(),
            })?,
            None => file.lease_tick_ms.unwrap_or(d.lease_tick_ms),
        };
        let bundle_failure_mode = match non_empty(env, "KAKEYA_BUNDLE_FAILURE_MODE") {
            Some(v) => match v.trim() {
                "open" => FailureMode::Open,
                "closed" => FailureMode::Closed,
                _ => {
                    return Err(ConfigError::Env {
                        var: "KAKEYA_BUNDLE_FAILURE_MODE",
                        value: v.to_string(),
                        message: "expected open or closed".into(),
                    })
                }
            },
            None => file.bundle_failure_mode.unwrap_or_default(),
        };
        let mut keyring = file.keyring.unwrap_or_default();
        apply_keyring_env(&mut keyring, env, &mut warnings)?;
        let review = review_config(file.review, env)?;
        let scheduler = crate::scheduler::config::from_parts(file.scheduler, env)?;
        let drift = crate::drift::DriftOptions::from_parts(file.drift, env)?;
        let mut cost = crate::cost::options::CostOptions::from_parts(file.cost, env)?;
        // cost: the advisor's dedup_ttl rule compares against the TTL in force.
        let dedup_ttl_secs = file.dedup_ttl_secs.unwrap_or(d.dedup_ttl_secs);
        cost.dedup_ttl_ms = i64::try_from(dedup_ttl_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
        let ensemble = crate::ensemble::EnsembleOptions::from_parts(file.ensemble, env)?;
        let mut canary = crate::canary::CanaryOptions::from_parts(file.canary, env)?;
        let upstreams = crate::canary::upstream::from_parts(file.upstream, env)?;
        canary.upstreams = upstreams.iter().map(|u| u.name.clone()).collect();
        let audit = crate::audit::AuditOptions::from_parts(file.audit, env)?;
        let microvote = crate::microvote_config::MicrovoteConfig::from_parts(file.microvote, env)?;
        let gateway =
            crate::gateway_config::GatewayConfig::from_parts(file.gateway, file.llm_backend, env)?;
        let cfg = Config {
            admin_addr: env_addr(env, "KAKEYA_ADMIN_ADDR")?
                .or(file.admin_addr)
                .unwrap_or(d.admin_addr),
            ingest_addr: env_addr(env, "KAKEYA_INGEST_ADDR")?
                .or(file.ingest_addr)
                .unwrap_or(d.ingest_addr),
            gateway_addr: env_addr(env, "KAKEYA_GATEWAY_ADDR")?
                .or(file.gateway_addr)
                .unwrap_or(d.gateway_addr),
            envoy_admin_addr: env_addr(env, "KAKEYA_ENVOY_ADMIN_ADDR")?
                .or(file.envoy_admin_addr)
                .unwrap_or(d.envoy_admin_addr),
            wal_retention_days: file.wal_retention_days.unwrap_or(d.wal_retention_days),
            dedup_ttl_secs,
            group_commit_max_batch: file
                .group_commit_max_batch
                .unwrap_or(d.group_commit_max_batch),
            admin_token: non_empty(env, "KAKEYA_ADMIN_TOKEN")
                .map(str::to_string)
                .or(file.admin_token)
                .filter(|t| !t.trim().is_empty()),
            admin_token_file: env_path(env, "KAKEYA_ADMIN_TOKEN_FILE").or(file.admin_token_file),
            ingest_secret: non_empty(env, "KAKEYA_INGEST_SECRET")
                .map(str::to_string)
                .or(file.ingest_secret)
                .filter(|t| !t.trim().is_empty()),
            ingest_secret_file: env_path(env, "KAKEYA_INGEST_SECRET_FILE")
                .or(file.ingest_secret_file),
            verify: file.verify.unwrap_or_default(),
            data_dir,
            database_url,
            wal_dir,
            token_rate,
            keyring,
            bundle_signing_seed_file,
            bundle_poll_interval_ms,
            bundle_failure_mode,
            bundle_public_key: None,
            tenant_stats_days: file.tenant_stats_days.unwrap_or(d.tenant_stats_days),
            review,
            training: file.training.unwrap_or(d.training),
            lease_tick_ms,
            scheduler,
            drift,
            cost,
            ensemble,
            canary,
            audit,
            microvote,
            gateway,
            upstreams,
            warnings,
        };
        let mut cfg = cfg;
        // The Envoys whose stats an upstream canary reads: this gateway's unless listed.
        if cfg.canary.envoy_admins.is_empty() {
            cfg.canary.envoy_admins = vec![cfg.envoy_admin_addr];
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// Fatal checks; the gate part builds the same [`Gate`] the filter builds.
    pub fn validate(&self) -> Result<(), ConfigError> {
        Gate::from_config(&self.gate_config()).map_err(|e| ConfigError::Gate(e.to_string()))?;
        if self.group_commit_max_batch == 0 {
            return Err(ConfigError::Invalid(
                "group_commit_max_batch must be at least 1".into(),
            ));
        }
        if self.wal_retention_days == 0 {
            return Err(ConfigError::Invalid(
                "wal_retention_days must be at least 1".into(),
            ));
        }
        if self.dedup_ttl_secs == 0 {
            return Err(ConfigError::Invalid(
                "dedup_ttl_secs must be at least 1".into(),
            ));
        }
        if self.tenant_stats_days == 0 {
            return Err(ConfigError::Invalid(
                "tenant_stats_days must be at least 1".into(),
            ));
        }
        self.training.validate().map_err(ConfigError::Invalid)?;
        self.scheduler.validate().map_err(ConfigError::Invalid)?;
        if self.lease_tick_ms < 100 {
            return Err(ConfigError::Invalid(
                "lease_tick_ms must be at least 100".into(),
            ));
        }
        if self.bundle_poll_interval_ms < 100 {
            return Err(ConfigError::Invalid(
                "bundle_poll_interval_ms must be at least 100".into(),
            ));
        }
        self.review.evidence.validate().map_err(|e| {
            ConfigError::Invalid(format!(
                "[review.evidence] {e}; set ttl_hours in kakeya.toml or KAKEYA_EVIDENCE_TTL_HOURS"
            ))
        })?;
        if self.token_rate == 0 {
            return Err(ConfigError::Invalid("token_rate must be at least 1".into()));
        }
        if !(0.0..=1.0).contains(&self.review.audit_sample_rate) {
            return Err(ConfigError::Invalid(format!(
                "review.audit_sample_rate must be a share within [0, 1], e.g. 0.02 (got {})",
                self.review.audit_sample_rate
            )));
        }
        if !(self.database_url.starts_with("sqlite:") || self.database_url.starts_with("postgres"))
        {
            return Err(ConfigError::Invalid(format!(
                "DATABASE_URL must start with sqlite: or postgres:// (got {:?})",
                redact_url(&self.database_url)
            )));
        }
        Ok(())
    }

    /// How records are applied (the committer, start-up replay and `kakeya wal replay`).
    pub fn apply_params(&self) -> crate::store::ApplyParams {
        crate::store::ApplyParams {
            dedup_ttl_ms: i64::try_from(self.dedup_ttl_secs.saturating_mul(1000))
                .unwrap_or(i64::MAX),
            audit_sample_rate: self.review.audit_sample_rate,
        }
    }

    /// The JSON the gate filter receives as its plugin configuration. It carries a bundle
    /// source (this control plane's admin cluster and public key) once the key is loaded.
    pub fn gate_config(&self) -> GateConfig {
        GateConfig {
            keyring: self.keyring.clone(),
            keyring_env: None,
            verify: self.verify,
            bundle: self.bundle_public_key.as_ref().map(|pk| BundleSource {
                cluster: "kakeya_admin".into(),
                authority: "kakeya-control-plane".into(),
                path: crate::registry::BUNDLE_PATH.into(),
                poll_interval_ms: self.bundle_poll_interval_ms,
                timeout_ms: 1000,
                public_keys: vec![pk.clone()],
                failure_mode: self.bundle_failure_mode,
            }),
            // gateway: the chat route, when LLM backends are configured.
            chat: self.gateway.as_ref().map(|g| g.chat.clone()),
            upstreams: self.upstreams.iter().map(|u| u.route()).collect(),
            // pipeline: the micro-vote callout (the cluster is in the rendered bootstrap).
            ..GateConfig::default()
        }
    }

    /// Reads the bundle signing seed (only `kakeya serve` creates it, so the Envoy
    /// configuration trusts the key the server signs with) and records its public key, so
    /// [`Config::gate_config`] carries the bundle source. Returns the seed.
    pub fn load_bundle_key(&mut self) -> anyhow::Result<[u8; 32]> {
        let seed = crate::registry::keys::load_seed(&self.bundle_signing_seed_file)?;
        self.bundle_public_key = Some(crate::registry::keys::public_key_b64(&seed));
        Ok(seed)
    }

    /// True when any configured signer accepts unsigned submissions (worth a loud warning).
    pub fn signature_disabled(&self) -> bool {
        let k = &self.keyring;
        let global_used = !k.multi_tenant || k.tenants.is_empty();
        (global_used && k.global.alg == SigAlg::None)
            || k.tenants.values().any(|t| t.alg == SigAlg::None)
    }

    /// Pretty JSON of the effective configuration with every secret replaced.
    pub fn redacted_json(&self) -> String {
        let mut c = self.clone();
        redact_verifier(&mut c.keyring.global);
        for v in c.keyring.tenants.values_mut() {
            redact_verifier(v);
        }
        for secret in [&mut c.admin_token, &mut c.ingest_secret] {
            if secret.is_some() {
                *secret = Some("<redacted>".into());
            }
        }
        c.database_url = redact_url(&c.database_url);
        c.review.evidence.key_file = Some(self.evidence_key_path());
        serde_json::to_string_pretty(&c).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    /// Where the evidence key is (`KAKEYA_EVIDENCE_KEY_FILE`, else `<data_dir>/keys/evidence.key`).
    pub fn evidence_key_path(&self) -> PathBuf {
        self.review
            .evidence
            .key_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("keys").join("evidence.key"))
    }

    /// Where the admin token file is (the configured one, else `<data_dir>/admin.token`).
    pub fn admin_token_path(&self) -> PathBuf {
        self.admin_token_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("admin.token"))
    }

    /// The admin token for `kakeya serve`: `KAKEYA_ADMIN_TOKEN` when set, else the token
    /// file's, which is generated (mode 0600) the first time. Never logged; say where it is
    /// with [`AdminToken::source`].
    pub fn load_admin_token(&self) -> anyhow::Result<AdminToken> {
        self.admin_token_with(true)
    }

    /// The admin token for a client (`kakeya config admin-token`): like [`Self::load_admin_token`]
    /// but never creates the file, since a token made up in the wrong data dir only earns 401s
    /// from the running server.
    pub fn read_admin_token(&self) -> anyhow::Result<AdminToken> {
        self.admin_token_with(false)
    }

    fn admin_token_with(&self, create: bool) -> anyhow::Result<AdminToken> {
        let token = if let Some(t) = &self.admin_token {
            AdminToken {
                value: t.trim().to_string(),
                source: "KAKEYA_ADMIN_TOKEN".into(),
                generated: false,
            }
        } else {
            let path = self.admin_token_path();
            let (value, generated) = if create {
                crate::api::auth::load_or_create_token(&path)
                    .context("admin token file (KAKEYA_ADMIN_TOKEN_FILE)")?
            } else if path.exists() {
                (crate::api::auth::read_secret_file(&path)?, false)
            } else {
                anyhow::bail!(
                    "no admin token at {}: no `kakeya serve` has used the data dir {}. Set \
                     KAKEYA_DATA_DIR (or KAKEYA_ADMIN_TOKEN_FILE) to the server's (`cargo xtask up` \
                     prints it)",
                    path.display(),
                    self.data_dir.display()
                )
            };
            AdminToken {
                value,
                source: path.display().to_string(),
                generated,
            }
        };
        if token.value.len() < MIN_ADMIN_TOKEN_LEN {
            anyhow::bail!(
                "the admin token from {} has {} characters; use at least {MIN_ADMIN_TOKEN_LEN} \
                 (e.g. `openssl rand -base64 32`), or unset it to let `kakeya serve` generate one",
                token.source,
                token.value.len()
            );
        }
        Ok(token)
    }

    /// The ingest shared secret, when one is configured.
    pub fn load_ingest_secret(&self) -> anyhow::Result<Option<String>> {
        if let Some(s) = &self.ingest_secret {
            return Ok(Some(s.trim().to_string()));
        }
        match &self.ingest_secret_file {
            Some(p) => crate::api::auth::read_secret_file(p)
                .map(Some)
                .context("ingest secret file (KAKEYA_INGEST_SECRET_FILE)"),
            None => Ok(None),
        }
    }

    /// Refuses listeners that would expose an unauthenticated surface: the admin API on a
    /// non-loopback address needs an operator-chosen token (`KAKEYA_ADMIN_TOKEN` or
    /// `KAKEYA_ADMIN_TOKEN_FILE`), and the ingest listener, which believes the gate's
    /// `x-kakeya-*` headers, needs the Envoy shared secret (`KAKEYA_INGEST_SECRET[_FILE]`).
    pub fn check_exposure(&self) -> Result<(), ConfigError> {
        if !self.admin_addr.ip().is_loopback()
            && self.admin_token.is_none()
            && self.admin_token_file.is_none()
        {
            return Err(ConfigError::Invalid(format!(
                "refusing to serve the admin API on the non-loopback address {} without a configured token: set KAKEYA_ADMIN_TOKEN or KAKEYA_ADMIN_TOKEN_FILE, or bind KAKEYA_ADMIN_ADDR to 127.0.0.1",
                self.admin_addr
            )));
        }
        if !self.ingest_addr.ip().is_loopback()
            && self.ingest_secret.is_none()
            && self.ingest_secret_file.is_none()
        {
            return Err(ConfigError::Invalid(format!(
                "refusing to serve the ingest listener on the non-loopback address {}: it trusts the gate's x-kakeya-* headers, so it needs the shared secret Envoy sends (set KAKEYA_INGEST_SECRET or KAKEYA_INGEST_SECRET_FILE), or bind KAKEYA_INGEST_ADDR to 127.0.0.1",
                self.ingest_addr
            )));
        }
        Ok(())
    }

    pub fn is_postgres(&self) -> bool {
        self.database_url.starts_with("postgres")
    }
}

/// The admin bearer token and where it came from (a file path or the variable name).
/// Shortest admin token accepted: a guessable operator-chosen token would defeat the point.
pub const MIN_ADMIN_TOKEN_LEN: usize = 16;

pub struct AdminToken {
    pub value: String,
    pub source: String,
    /// True when this call generated the token file.
    pub generated: bool,
}

fn redact_verifier(v: &mut VerifierConfig) {
    // Ed25519 public keys are not secrets, HMAC keys are.
    if v.alg != SigAlg::Ed25519 {
        for k in &mut v.keys {
            *k = "<redacted>".into();
        }
    }
}

/// Hides a password in `scheme://user:password@host`.
pub fn redact_url(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        if let Some((cred, host)) = rest.split_once('@') {
            if let Some((user, _)) = cred.split_once(':') {
                return format!("{scheme}://{user}:<redacted>@{host}");
            }
        }
    }
    url.to_string()
}

fn non_empty<'a>(env: &'a EnvMap, k: &str) -> Option<&'a str> {
    env.get(k)
        .map(String::as_str)
        .filter(|v| !v.trim().is_empty())
}

fn env_path(env: &EnvMap, k: &str) -> Option<PathBuf> {
    non_empty(env, k).map(PathBuf::from)
}

fn env_addr(env: &EnvMap, k: &'static str) -> Result<Option<SocketAddr>, ConfigError> {
    match non_empty(env, k) {
        None => Ok(None),
        Some(v) => v.trim().parse().map(Some).map_err(|_| ConfigError::Env {
            var: k,
            value: v.to_string(),
            message: "expected IP:PORT, e.g. 127.0.0.1:8081".into(),
        }),
    }
}

fn split_list(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// `[review]` with its environment overrides: `KAKEYA_AUDIT_SAMPLE_RATE`, `KAKEYA_EVIDENCE_TENANTS` (`*` or a comma list;
/// set but empty opts every tenant out, overriding the file), `KAKEYA_EVIDENCE_TTL_HOURS`,
/// `KAKEYA_EVIDENCE_KEY_FILE`.
fn review_config(
    file: Option<ReviewFileConfig>,
    env: &EnvMap,
) -> Result<ReviewConfig, ConfigError> {
    let file = file.unwrap_or_default();
    let audit_sample_rate = match non_empty(env, "KAKEYA_AUDIT_SAMPLE_RATE") {
        Some(v) => v
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|r| (0.0..=1.0).contains(r))
            .ok_or_else(|| ConfigError::Env {
                var: "KAKEYA_AUDIT_SAMPLE_RATE",
                value: v.to_string(),
                message: "expected a share within [0, 1], e.g. 0.02".into(),
            })?,
        None => file
            .audit_sample_rate
            .unwrap_or(crate::review::audit::DEFAULT_AUDIT_SAMPLE_RATE),
    };
    let f = file.evidence.unwrap_or_default();
    let tenants = match env.get("KAKEYA_EVIDENCE_TENANTS") {
        Some(v) => Tenants::parse(split_list(v)).map_err(|message| ConfigError::Env {
            var: "KAKEYA_EVIDENCE_TENANTS",
            value: v.clone(),
            message,
        })?,
        None => f.tenants.unwrap_or_default(),
    };
    let ttl_hours = match non_empty(env, "KAKEYA_EVIDENCE_TTL_HOURS") {
        Some(v) => v.trim().parse::<u32>().map_err(|_| ConfigError::Env {
            var: "KAKEYA_EVIDENCE_TTL_HOURS",
            value: v.to_string(),
            message: format!(
                "expected whole hours, 1..={}",
                crate::evidence::MAX_TTL_HOURS
            ),
        })?,
        None => f.ttl_hours.unwrap_or(crate::evidence::DEFAULT_TTL_HOURS),
    };
    Ok(ReviewConfig {
        audit_sample_rate,
        evidence: EvidenceConfig {
            tenants,
            ttl_hours,
            key_file: env_path(env, "KAKEYA_EVIDENCE_KEY_FILE").or(f.key_file),
        },
    })
}

/// Maps the reference server's variables (spec §3.6, §5.4) onto the keyring.
fn apply_keyring_env(
    k: &mut KeyringConfig,
    env: &EnvMap,
    warnings: &mut Vec<String>,
) -> Result<(), ConfigError> {
    if let Some(v) = env.get("PCS_SIGN_ALG") {
        k.global.alg = v.trim().parse::<SigAlg>().map_err(|_| ConfigError::Env {
            var: "PCS_SIGN_ALG",
            value: v.clone(),
            message: "unknown signature algorithm; use hmac, ed25519 or none".into(),
        })?;
    }
    match k.global.alg {
        SigAlg::Hmac => {
            // PCS_HMAC_KEY first (the "current" key of the reference), then the rotation list.
            let mut keys: Vec<String> = Vec::new();
            if let Some(key) = env.get("PCS_HMAC_KEY").filter(|s| !s.is_empty()) {
                keys.push(key.clone());
            }
            if let Some(list) = env.get("PCS_HMAC_KEYS") {
                for key in split_list(list) {
                    if !keys.contains(&key) {
                        keys.push(key);
                    }
                }
            }
            if !keys.is_empty() {
                k.global.keys = keys;
            }
        }
        SigAlg::Ed25519 => {
            if let Some(list) = non_empty(env, "PCS_ED25519_PUB_B64") {
                k.global.keys = split_list(list);
            }
        }
        SigAlg::None => {}
    }
    if let Some(mode) = env.get("SIGN_HMAC_MODE") {
        k.global.legacy_prehash = match mode.trim() {
            "legacy" => true,
            "standard" | "" => false,
            _ => {
                return Err(ConfigError::Env {
                    var: "SIGN_HMAC_MODE",
                    value: mode.clone(),
                    message: "expected legacy or standard".into(),
                })
            }
        };
    }
    if let Some(v) = env.get("MULTI_TENANT") {
        // Reference rule: only the exact string "true" enables it.
        k.multi_tenant = v == "true";
    }
    if let Some(list) = env.get("TENANTS") {
        let legacy = k.global.legacy_prehash;
        for (id, vc) in parse_tenants(list, legacy, warnings) {
            k.tenants.insert(id, vc);
        }
    }
    Ok(())
}

/// `TENANTS=id:alg:key,...`: split on `:`, first three parts, trimmed; invalid entries are
/// reported in `warnings` and skipped (spec §3.6). HMAC tenants inherit `SIGN_HMAC_MODE`.
pub fn parse_tenants(
    list: &str,
    legacy_prehash: bool,
    warnings: &mut Vec<String>,
) -> Vec<(String, VerifierConfig)> {
    let mut out = Vec::new();
    for entry in list.split(',') {
        if entry.trim().is_empty() {
            continue;
        }
        let parts: Vec<&str> = entry.split(':').take(3).map(str::trim).collect();
        let (id, alg, key) = match parts.as_slice() {
            [id, alg, key] => (*id, *alg, *key),
            [id, alg] => (*id, *alg, ""),
            _ => {
                warnings.push(format!(
                    "TENANTS: skipping entry {entry:?}: expected id:alg:key"
                ));
                continue;
            }
        };
        if id.is_empty() {
            warnings.push(format!(
                "TENANTS: skipping entry {entry:?}: empty tenant id"
            ));
            continue;
        }
        let alg = match alg.parse::<SigAlg>() {
            Ok(a) if !alg.is_empty() => a,
            _ => {
                warnings.push(format!(
                    "TENANTS: skipping tenant {id:?}: unknown algorithm {alg:?}"
                ));
                continue;
            }
        };
        let vc = VerifierConfig {
            alg,
            keys: if key.is_empty() {
                vec![]
            } else {
                vec![key.to_string()]
            },
            legacy_prehash: alg == SigAlg::Hmac && legacy_prehash,
        };
        if let Err(e) = Verifier::from_config(&vc) {
            warnings.push(format!("TENANTS: skipping tenant {id:?}: {e}"));
            continue;
        }
        out.push((id.to_string(), vc));
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn env(pairs: &[(&str, &str)]) -> EnvMap {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const ED_PUB: &str = "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";

    #[test]
    fn defaults() {
        let c = Config::from_env_map(&EnvMap::new()).unwrap();
        assert_eq!(c.admin_addr.to_string(), "127.0.0.1:8081");
        assert_eq!(c.ingest_addr.to_string(), "127.0.0.1:8082");
        assert_eq!(c.wal_dir, PathBuf::from("./.kakeya/wal"));
        assert_eq!(c.database_url, "sqlite://./.kakeya/kakeya.db?mode=rwc");
        assert_eq!(c.token_rate, 100);
        assert_eq!(c.dedup_ttl_secs, 1_209_600);
        assert_eq!(c.keyring.global.alg, SigAlg::None);
        assert!(c.signature_disabled());
    }

    #[test]
    fn training_table_defaults_and_limits() {
        let none = EnvMap::new();
        let c = Config::from_env_map(&none).unwrap();
        assert_eq!(c.training, crate::learn::TrainingOptions::default());
        assert_eq!(
            (c.training.min_labels, c.training.validation_fraction),
            (100, 0.2)
        );
        let c = Config::from_toml_str("[training]\nmin_labels = 500\n", &none).unwrap();
        assert_eq!(
            (c.training.min_labels, c.training.bootstrap_resamples),
            (500, 1000)
        );
        for bad in [
            "validation_fraction = 1.0",
            "validation_fraction = 0",
            "min_labels = 0",
            "bootstrap_resamples = 0",
            "bootstrap_resamples = 100001",
        ] {
            let e = Config::from_toml_str(&format!("[training]\n{bad}\n"), &none).unwrap_err();
            assert!(e.to_string().contains("training."), "{bad}: {e}");
        }
        assert!(Config::from_toml_str("[training]\nmin_label = 5\n", &none).is_err());
    }

    #[test]
    fn hmac_single_key_and_rotation_and_legacy() {
        let c = Config::from_env_map(&env(&[
            ("PCS_SIGN_ALG", "hmac"),
            ("PCS_HMAC_KEY", "k0"),
            ("PCS_HMAC_KEYS", "k1, k2,,k0"),
            ("SIGN_HMAC_MODE", "legacy"),
        ]))
        .unwrap();
        assert_eq!(c.keyring.global.alg, SigAlg::Hmac);
        assert_eq!(c.keyring.global.keys, vec!["k0", "k1", "k2"]);
        assert!(c.keyring.global.legacy_prehash);
        assert!(!c.signature_disabled());
    }

    #[test]
    fn unknown_alg_is_fatal_with_clear_message() {
        let e = Config::from_env_map(&env(&[("PCS_SIGN_ALG", "rsa")])).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("PCS_SIGN_ALG") && msg.contains("hmac, ed25519 or none"),
            "{msg}"
        );
    }

    #[test]
    fn hmac_without_key_is_fatal() {
        let e = Config::from_env_map(&env(&[("PCS_SIGN_ALG", "hmac")])).unwrap_err();
        assert!(matches!(e, ConfigError::Gate(_)), "{e}");
    }

    #[test]
    fn ed25519_key() {
        let c = Config::from_env_map(&env(&[
            ("PCS_SIGN_ALG", "ed25519"),
            ("PCS_ED25519_PUB_B64", ED_PUB),
        ]))
        .unwrap();
        assert_eq!(c.keyring.global.keys, vec![ED_PUB]);
    }

    #[test]
    fn multi_tenant_only_exact_true() {
        for (v, want) in [
            ("true", true),
            ("TRUE", false),
            ("1", false),
            ("false", false),
        ] {
            let c = Config::from_env_map(&env(&[("MULTI_TENANT", v)])).unwrap();
            assert_eq!(c.keyring.multi_tenant, want, "{v}");
        }
    }

    #[test]
    fn tenants_parsing_skips_invalid_entries() {
        let c = Config::from_env_map(&env(&[
            ("MULTI_TENANT", "true"),
            ("SIGN_HMAC_MODE", "legacy"),
            (
                "TENANTS",
                &format!(" acme : hmac : s3cr:et ,bad,  nokey:hmac:, x:rsa:k, ed:ed25519:{ED_PUB}, open:none:,:hmac:k"),
            ),
        ]))
        .unwrap();
        let t = &c.keyring.tenants;
        assert_eq!(
            t.keys().cloned().collect::<Vec<_>>(),
            vec!["acme", "ed", "open"]
        );
        // a key containing ':' is cut short (reference behaviour)
        assert_eq!(t["acme"].keys, vec!["s3cr"]);
        assert!(t["acme"].legacy_prehash);
        assert_eq!(t["ed"].alg, SigAlg::Ed25519);
        assert_eq!(c.warnings.len(), 4, "{:?}", c.warnings);
    }

    #[test]
    fn addresses_dirs_token_rate() {
        let c = Config::from_env_map(&env(&[
            ("KAKEYA_DATA_DIR", "/tmp/kk"),
            ("KAKEYA_ADMIN_ADDR", "127.0.0.1:1"),
            ("KAKEYA_INGEST_ADDR", "127.0.0.1:2"),
            ("TOKEN_RATE", "7"),
            ("KAKEYA_ADMIN_TOKEN", "tok"),
        ]))
        .unwrap();
        assert_eq!(c.wal_dir, PathBuf::from("/tmp/kk/wal"));
        assert_eq!(c.database_url, "sqlite:///tmp/kk/kakeya.db?mode=rwc");
        assert_eq!(c.admin_addr.port(), 1);
        assert_eq!(c.token_rate, 7);
        assert_eq!(c.admin_token.as_deref(), Some("tok"));
        let c = Config::from_env_map(&env(&[("TOKEN_RATE", "abc"), ("WAL_DIR", "/w")])).unwrap();
        assert_eq!(c.token_rate, 100);
        assert_eq!(c.wal_dir, PathBuf::from("/w"));
        assert_eq!(c.warnings.len(), 1);
        assert!(Config::from_env_map(&env(&[("KAKEYA_ADMIN_ADDR", "nope")])).is_err());
    }

    #[test]
    fn toml_then_env_overrides() {
        let toml = r#"
            token_rate = 5
            wal_retention_days = 3
            [verify]
            tol_D = 0.2
            [keyring]
            multi_tenant = true
            [keyring.global]
            alg = "hmac"
            keys = ["filekey"]
        "#;
        let c = Config::from_toml_str(toml, &env(&[("TOKEN_RATE", "9")])).unwrap();
        assert_eq!(c.token_rate, 9);
        assert_eq!(c.wal_retention_days, 3);
        assert!((c.verify.tol_d - 0.2).abs() < 1e-12);
        assert_eq!(c.keyring.global.keys, vec!["filekey"]);
        let c = Config::from_toml_str(toml, &env(&[("PCS_HMAC_KEY", "envkey")])).unwrap();
        assert_eq!(c.keyring.global.keys, vec!["envkey"]);
        assert!(Config::from_toml_str("nonsense = 1", &EnvMap::new()).is_err());
    }

    #[test]
    fn lease_tick_from_env_and_file_with_a_floor() {
        let c = Config::from_env_map(&EnvMap::new()).unwrap();
        assert_eq!(c.lease_tick_ms, crate::lease::DEFAULT_TICK_MS);
        let c = Config::from_env_map(&env(&[("KAKEYA_LEASE_TICK_MS", "250")])).unwrap();
        assert_eq!(c.lease_tick_ms, 250);
        let c = Config::from_toml_str("lease_tick_ms = 700", &EnvMap::new()).unwrap();
        assert_eq!(c.lease_tick_ms, 700);
        for bad in ["99", "x", "-1"] {
            assert!(Config::from_env_map(&env(&[("KAKEYA_LEASE_TICK_MS", bad)])).is_err());
        }
    }

    #[test]
    fn bundle_settings_and_gate_bundle_source() {
        let c = Config::from_env_map(&env(&[("KAKEYA_DATA_DIR", "/tmp/kk")])).unwrap();
        assert_eq!(
            c.bundle_signing_seed_file,
            PathBuf::from("/tmp/kk/keys/bundle-signing.seed")
        );
        assert_eq!(c.bundle_poll_interval_ms, 2000);
        assert_eq!(c.bundle_failure_mode, FailureMode::Open);
        assert_eq!(
            c.gate_config().bundle,
            None,
            "no key loaded, no bundle source"
        );
        let mut c = Config::from_env_map(&env(&[
            ("KAKEYA_BUNDLE_POLL_MS", "500"),
            ("KAKEYA_BUNDLE_FAILURE_MODE", "closed"),
            ("KAKEYA_BUNDLE_SIGNING_SEED_FILE", "/s/seed"),
        ]))
        .unwrap();
        assert_eq!(c.bundle_signing_seed_file, PathBuf::from("/s/seed"));
        c.bundle_public_key = Some(ED_PUB.into());
        let b = c.gate_config().bundle.unwrap();
        assert_eq!(
            (b.cluster.as_str(), b.path.as_str(), b.poll_interval_ms),
            ("kakeya_admin", "/v1/bundles/current", 500)
        );
        assert_eq!(b.failure_mode, FailureMode::Closed);
        assert_eq!(b.public_keys, vec![ED_PUB.to_string()]);
        Gate::from_config(&c.gate_config()).unwrap();
        assert!(Config::from_env_map(&env(&[("KAKEYA_BUNDLE_FAILURE_MODE", "maybe")])).is_err());
        assert!(Config::from_env_map(&env(&[("KAKEYA_BUNDLE_POLL_MS", "5")])).is_err());
        let c = Config::from_toml_str(
            "bundle_poll_interval_ms = 300\nbundle_failure_mode = \"closed\"\n",
            &EnvMap::new(),
        )
        .unwrap();
        assert_eq!(
            (c.bundle_poll_interval_ms, c.bundle_failure_mode),
            (300, FailureMode::Closed)
        );
    }

    #[test]
    fn credentials_and_exposure() {
        let c = Config::from_env_map(&env(&[
            ("KAKEYA_DATA_DIR", "/tmp/kk"),
            ("KAKEYA_ADMIN_TOKEN_FILE", "/etc/kakeya/admin.token"),
            ("KAKEYA_INGEST_SECRET_FILE", "/etc/kakeya/ingest.secret"),
        ]))
        .unwrap();
        assert_eq!(
            c.admin_token_path(),
            PathBuf::from("/etc/kakeya/admin.token")
        );
        assert_eq!(
            c.ingest_secret_file,
            Some(PathBuf::from("/etc/kakeya/ingest.secret"))
        );
        let d = Config::from_env_map(&env(&[("KAKEYA_DATA_DIR", "/tmp/kk")])).unwrap();
        assert_eq!(d.admin_token_path(), PathBuf::from("/tmp/kk/admin.token"));
        d.check_exposure().unwrap();
        // Non-loopback admin: needs a configured token (variable or file).
        let public = |pairs: &[(&str, &str)]| {
            let mut p = vec![("KAKEYA_ADMIN_ADDR", "0.0.0.0:8081")];
            p.extend_from_slice(pairs);
            Config::from_env_map(&env(&p)).unwrap().check_exposure()
        };
        let e = public(&[]).unwrap_err().to_string();
        assert!(e.contains("KAKEYA_ADMIN_TOKEN"), "{e}");
        public(&[("KAKEYA_ADMIN_TOKEN", "x".repeat(32).as_str())]).unwrap();
        public(&[("KAKEYA_ADMIN_TOKEN_FILE", "/etc/t")]).unwrap();
        // Non-loopback ingest: needs the Envoy shared secret.
        let ingest = |pairs: &[(&str, &str)]| {
            let mut p = vec![("KAKEYA_INGEST_ADDR", "[::]:8082")];
            p.extend_from_slice(pairs);
            Config::from_env_map(&env(&p)).unwrap().check_exposure()
        };
        let e = ingest(&[]).unwrap_err().to_string();
        assert!(e.contains("KAKEYA_INGEST_SECRET"), "{e}");
        ingest(&[("KAKEYA_INGEST_SECRET", "s")]).unwrap();
        ingest(&[("KAKEYA_INGEST_SECRET_FILE", "/etc/s")]).unwrap();
        let ok = env(&[("KAKEYA_INGEST_ADDR", "[::1]:8082")]);
        Config::from_env_map(&ok).unwrap().check_exposure().unwrap();
    }

    #[test]
    fn clients_read_the_admin_token_without_creating_it_and_short_tokens_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().display().to_string();
        let c = Config::from_env_map(&env(&[("KAKEYA_DATA_DIR", dir.as_str())])).unwrap();
        let e = c
            .read_admin_token()
            .err()
            .expect("no token yet")
            .to_string();
        assert!(e.contains("KAKEYA_DATA_DIR") && e.contains(&dir), "{e}");
        assert!(
            !c.admin_token_path().exists(),
            "a client never creates the token"
        );
        let served = c.load_admin_token().unwrap();
        assert!(served.generated && served.value.len() >= MIN_ADMIN_TOKEN_LEN);
        assert_eq!(c.read_admin_token().unwrap().value, served.value);
        let short = Config::from_env_map(&env(&[("KAKEYA_ADMIN_TOKEN", "admintok")])).unwrap();
        let e = short
            .load_admin_token()
            .err()
            .expect("too short")
            .to_string();
        assert!(e.contains("at least 16"), "{e}");
    }

    #[test]
    fn audit_sample_rate_from_file_and_env_range_checked() {
        let c = Config::from_env_map(&EnvMap::new()).unwrap();
        assert_eq!(c.review.audit_sample_rate, 0.02);
        assert_eq!(c.apply_params().audit_sample_rate, 0.02);
        let c =
            Config::from_toml_str("[review]\naudit_sample_rate = 0.1\n", &EnvMap::new()).unwrap();
        assert_eq!(c.review.audit_sample_rate, 0.1);
        let c = Config::from_toml_str(
            "[review]\naudit_sample_rate = 0.1\n",
            &env(&[("KAKEYA_AUDIT_SAMPLE_RATE", "0")]),
        )
        .unwrap();
        assert_eq!(c.review.audit_sample_rate, 0.0);
        let c = Config::from_env_map(&env(&[("KAKEYA_AUDIT_SAMPLE_RATE", " 1 ")])).unwrap();
        assert_eq!(c.review.audit_sample_rate, 1.0);
        for bad in ["-0.1", "1.5", "NaN", "inf", "2%", "x"] {
            let e = Config::from_env_map(&env(&[("KAKEYA_AUDIT_SAMPLE_RATE", bad)])).unwrap_err();
            assert!(
                e.to_string().starts_with("KAKEYA_AUDIT_SAMPLE_RATE=")
                    && e.to_string().contains("within [0, 1]"),
                "{bad}: {e}"
            );
        }
        for bad in ["-0.5", "1.01", "nan", "inf"] {
            let e = Config::from_toml_str(
                &format!("[review]\naudit_sample_rate = {bad}\n"),
                &EnvMap::new(),
            )
            .unwrap_err();
            assert!(
                e.to_string()
                    .contains("review.audit_sample_rate must be a share within [0, 1]"),
                "{bad}: {e}"
            );
        }
        assert!(Config::from_toml_str("[review]\nrate = 0.1\n", &EnvMap::new()).is_err());
    }

    #[test]
    fn evidence_retention_is_off_by_default_opted_in_per_tenant_and_validated() {
        let c = Config::from_env_map(&env(&[("KAKEYA_DATA_DIR", "/tmp/kk")])).unwrap();
        let e = &c.review.evidence;
        assert!(e.tenants.is_none() && !e.tenants.includes("default"));
        assert_eq!(e.ttl_hours, 72);
        assert_eq!(
            c.evidence_key_path(),
            PathBuf::from("/tmp/kk/keys/evidence.key")
        );
        let shown: serde_json::Value = serde_json::from_str(&c.redacted_json()).unwrap();
        assert_eq!(
            shown["review"]["evidence"],
            serde_json::json!({"tenants": [], "ttl_hours": 72, "key_file": "/tmp/kk/keys/evidence.key"})
        );
        let toml = "[review.evidence]\ntenants = [\"acme\", \"beta\"]\nttl_hours = 24\n";
        let c = Config::from_toml_str(toml, &EnvMap::new()).unwrap();
        let e = &c.review.evidence;
        assert!(e.tenants.includes("acme") && e.tenants.includes("beta"));
        assert!(!e.tenants.includes("default"));
        assert_eq!(e.ttl_hours, 24);
        let c =
            Config::from_toml_str("[review.evidence]\ntenants = \"*\"\n", &EnvMap::new()).unwrap();
        assert_eq!(c.review.evidence.tenants, Tenants::All);
        // The environment wins; set but empty opts everybody out.
        let c = Config::from_toml_str(
            toml,
            &env(&[
                ("KAKEYA_EVIDENCE_TENANTS", " gamma , delta "),
                ("KAKEYA_EVIDENCE_TTL_HOURS", "6"),
                ("KAKEYA_EVIDENCE_KEY_FILE", "/k/evidence.key"),
            ]),
        )
        .unwrap();
        let e = &c.review.evidence;
        assert!(e.tenants.includes("gamma") && e.tenants.includes("delta"));
        assert!(!e.tenants.includes("acme"));
        assert_eq!(
            (e.ttl_hours, c.evidence_key_path()),
            (6, PathBuf::from("/k/evidence.key"))
        );
        let c = Config::from_toml_str(toml, &env(&[("KAKEYA_EVIDENCE_TENANTS", "")])).unwrap();
        assert!(c.review.evidence.tenants.is_none());
        let c = Config::from_env_map(&env(&[("KAKEYA_EVIDENCE_TENANTS", "*")])).unwrap();
        assert_eq!(c.review.evidence.tenants, Tenants::All);
        // Clear errors.
        let bad_env = |k: &str, v: &str| {
            Config::from_env_map(&env(&[(k, v)]))
                .unwrap_err()
                .to_string()
        };
        let e = bad_env("KAKEYA_EVIDENCE_TTL_HOURS", "0");
        assert!(
            e.contains("ttl_hours must be 1..=720") && e.contains("KAKEYA_EVIDENCE_TTL_HOURS"),
            "{e}"
        );
        let e = bad_env("KAKEYA_EVIDENCE_TTL_HOURS", "721");
        assert!(e.contains("ttl_hours must be 1..=720"), "{e}");
        let e = bad_env("KAKEYA_EVIDENCE_TTL_HOURS", "3d");
        assert!(
            e.contains("KAKEYA_EVIDENCE_TTL_HOURS") && e.contains("whole hours"),
            "{e}"
        );
        let e = bad_env("KAKEYA_EVIDENCE_TENANTS", "*,acme");
        assert!(
            e.contains("KAKEYA_EVIDENCE_TENANTS") && e.contains("cannot be combined"),
            "{e}"
        );
        let bad_toml = |t: &str| {
            Config::from_toml_str(t, &EnvMap::new())
                .unwrap_err()
                .to_string()
        };
        let e = bad_toml("[review.evidence]\ntenants = [\"a\\u0007\"]\n");
        assert!(e.contains("is not a tenant name"), "{e}");
        let e = bad_toml("[review.evidence]\ntenants = [\"\"]\n");
        assert!(e.contains("is not a tenant name"), "{e}");
        let e = bad_toml("[review.evidence]\nttl_hours = 0\n");
        assert!(
            e.contains("[review.evidence] ttl_hours must be 1..=720"),
            "{e}"
        );
        let e = bad_toml("[review.evidence]\nttl = 3\n");
        assert!(e.contains("unknown field"), "{e}");
        let e = bad_toml("[review.evidence]\ntenants = 3\n");
        assert!(e.contains("invalid config file"), "{e}");
    }

    #[test]
    fn redaction() {
        let c = Config::from_env_map(&env(&[
            ("PCS_SIGN_ALG", "hmac"),
            ("PCS_HMAC_KEY", "topsecret"),
            ("DATABASE_URL", "postgres://u:pw@h/db"),
            ("KAKEYA_ADMIN_TOKEN", "admintok"),
            ("KAKEYA_INGEST_SECRET", "ingestsec"),
        ]))
        .unwrap();
        let s = c.redacted_json();
        for secret in ["topsecret", ":pw@", "admintok", "ingestsec"] {
            assert!(!s.contains(secret), "{secret} in {s}");
        }
    }
}
