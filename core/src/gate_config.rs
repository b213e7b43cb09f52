//! The gate filter's configuration: the JSON that the control plane renders into Envoy's
//! `PluginConfig.configuration` and that the filter parses once in `on_configure`.
//! It lives here so the writer (control plane) and the reader (filter) share one definition.

use crate::signature::{KeyError, Keyring, KeyringConfig};
use crate::verify::VerifyParams;
use serde::{Deserialize, Serialize};

/// Route the gate acts on; other paths pass through untouched.
pub const SUBMIT_PATH: &str = "/v1/pcs/submit";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GateConfig {
    #[serde(default)]
    pub keyring: KeyringConfig,
    /// Name of an environment variable of the Envoy process that holds the keyring (a
    /// [`KeyringConfig`] as JSON) instead of `keyring`. HMAC keys are secrets: in the plugin
    /// configuration they would show in Envoy's `/config_dump`; Envoy passes the variable to
    /// the VM (`vm_config.environment_variables.host_env_keys`) without showing its value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keyring_env: Option<String>,
    #[serde(default)]
    pub verify: VerifyParams,
    /// Where the model bundle comes from; without it the filter verifies only.
    #[serde(default)]
    pub bundle: Option<BundleSource>,
    /// Envoy cluster of the micro-vote server (`kakeya microvote`), called when a tenant's
    /// ensemble policy enables `micro_vote`.
    #[serde(default = "default_microvote_cluster")]
    pub microvote_cluster: String,
    /// The micro-vote's hard deadline, ms (a policy's `deadline_ms` overrides it per tenant).
    #[serde(default = "default_microvote_deadline_ms")]
    pub microvote_deadline_ms: u32,
    /// The LLM-gateway route (`[gateway]` of kakeya.toml); without it the route is not served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat: Option<crate::chat::ChatConfig>,
    /// The filter's cost tracer: its own time and micro-vote calls per forwarded request, as
    /// `x-kakeya-filter-ns` / `x-kakeya-model-calls` (on by default; off only to measure what
    /// it costs).
    #[serde(default = "default_true", skip_serializing_if = "is_true")]
    pub cost_tracer: bool,
    /// The gateway's upstream routes (`[[upstream]]`), in route order: the gate assigns their
    /// requests to the stable or canary cluster ([`crate::upstream`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub upstreams: Vec<crate::upstream::UpstreamRoute>,
}

fn default_true() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

fn default_microvote_cluster() -> String {
    "kakeya_microvote".into()
}
/// The micro-vote deadline when neither the policy nor the gate configuration sets one.
pub const DEFAULT_MICROVOTE_DEADLINE_MS: u32 = 30;

fn default_microvote_deadline_ms() -> u32 {
    DEFAULT_MICROVOTE_DEADLINE_MS
}

impl Default for GateConfig {
    fn default() -> Self {
        GateConfig {
            keyring: KeyringConfig::default(),
            keyring_env: None,
            verify: VerifyParams::default(),
            bundle: None,
            microvote_cluster: default_microvote_cluster(),
            microvote_deadline_ms: default_microvote_deadline_ms(),
            cost_tracer: true,
            chat: None,
            upstreams: Vec::new(),
        }
    }
}

/// What the filter does with a request it should score while it has no valid bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailureMode {
    /// Escalate (202) for review.
    #[default]
    Open,
    /// Reject (503 `no_bundle`) until a bundle arrives.
    Closed,
}

/// Where and how the filter polls the control plane for the active bundle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleSource {
    /// Envoy cluster of the control plane's admin API.
    pub cluster: String,
    /// `:authority` of the poll request.
    #[serde(default = "default_authority")]
    pub authority: String,
    #[serde(default = "default_bundle_path")]
    pub path: String,
    #[serde(default = "default_poll_ms")]
    pub poll_interval_ms: u64,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Trusted Ed25519 public keys (standard base64) of the control plane.
    pub public_keys: Vec<String>,
    #[serde(default)]
    pub failure_mode: FailureMode,
}

fn default_authority() -> String {
    "kakeya-control-plane".into()
}
fn default_bundle_path() -> String {
    "/v1/bundles/current".into()
}
fn default_poll_ms() -> u64 {
    5000
}
fn default_timeout_ms() -> u64 {
    1000
}

/// A configuration the filter must refuse (`on_configure` returns false).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GateConfigError {
    #[error("gate configuration is not valid JSON for this schema: {0}")]
    Json(String),
    #[error("gate keyring: {0}")]
    Keys(#[from] KeyError),
    #[error("gate verify parameters: {0}")]
    Verify(String),
    #[error("gate bundle source: {0}")]
    Bundle(String),
    #[error("gate keyring_env: {0}")]
    KeyringEnv(String),
    #[error("gate micro-vote: {0}")]
    MicroVote(String),
    #[error("gate chat route: {0}")]
    Chat(String),
    #[error("gate upstream routes: {0}")]
    Upstream(String),
}

/// A parsed and validated gate configuration, ready for requests.
#[derive(Debug, Clone)]
pub struct Gate {
    pub keyring: Keyring,
    pub verify: VerifyParams,
    pub bundle: Option<BundleSource>,
    pub microvote_cluster: String,
    pub microvote_deadline_ms: u32,
    pub cost_tracer: bool,
    pub chat: Option<crate::chat::ChatConfig>,
    pub upstreams: Vec<crate::upstream::UpstreamRoute>,
}

impl Gate {
    /// Parses a configuration without `keyring_env` (one that names a variable is refused).
    pub fn from_json(bytes: &[u8]) -> Result<Self, GateConfigError> {
        Self::from_json_with_env(bytes, &|_| None)
    }

    /// Parses a configuration, resolving `keyring_env` with `env` (the filter passes the VM's
    /// environment, i.e. `std::env::var`).
    pub fn from_json_with_env(
        bytes: &[u8],
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, GateConfigError> {
        let mut cfg: GateConfig =
            serde_json::from_slice(bytes).map_err(|e| GateConfigError::Json(e.to_string()))?;
        if let Some(name) = cfg.keyring_env.take() {
            if cfg.keyring != KeyringConfig::default() {
                return Err(GateConfigError::KeyringEnv(
                    "set either keyring or keyring_env, not both".into(),
                ));
            }
            let raw = env(&name).ok_or_else(|| {
                GateConfigError::KeyringEnv(format!(
                    "environment variable {name} is not set in the VM (Envoy needs it in its \
                     environment and in vm_config.environment_variables.host_env_keys)"
                ))
            })?;
            // The message names the variable and the position, never (part of) its secret
            // content, which serde's own messages may quote.
            cfg.keyring = serde_json::from_str(&raw).map_err(|e| {
                GateConfigError::KeyringEnv(format!(
                    "{name} is not a keyring as JSON ({:?} error at line {}, column {})",
                    e.classify(),
                    e.line(),
                    e.column()
                ))
            })?;
        }
        Self::from_config(&cfg)
    }

    /// Builds the gate from a configuration whose keyring is inline (`keyring_env` is refused
    /// here: it has to be resolved first, see [`Gate::from_json_with_env`]).
    pub fn from_config(cfg: &GateConfig) -> Result<Self, GateConfigError> {
        if cfg.keyring_env.is_some() {
            return Err(GateConfigError::KeyringEnv(
                "not resolved: use Gate::from_json_with_env".into(),
            ));
        }
        cfg.verify.validate().map_err(GateConfigError::Verify)?;
        if let Some(b) = &cfg.bundle {
            if b.cluster.is_empty() || !b.path.starts_with('/') {
                return Err(GateConfigError::Bundle(
                    "cluster must be set and path must start with /".into(),
                ));
            }
            if b.poll_interval_ms < 100 || b.timeout_ms == 0 {
                return Err(GateConfigError::Bundle(
                    "poll_interval_ms must be >= 100 and timeout_ms > 0".into(),
                ));
            }
            let valid_key = |k: &String| {
                use base64::Engine;
                base64::engine::general_purpose::STANDARD
                    .decode(k.trim())
                    .is_ok_and(|raw| raw.len() == 32)
            };
            if b.public_keys.is_empty() || !b.public_keys.iter().all(valid_key) {
                return Err(GateConfigError::Bundle(
                    "public_keys must hold at least one standard base64 Ed25519 public key".into(),
                ));
            }
        }
        if cfg.microvote_cluster.is_empty() || !(1..=10_000).contains(&cfg.microvote_deadline_ms) {
            return Err(GateConfigError::MicroVote(
                "microvote_cluster must be set and microvote_deadline_ms within 1..=10000".into(),
            ));
        }
        if let Some(c) = &cfg.chat {
            c.validate().map_err(GateConfigError::Chat)?;
        }
        for r in &cfg.upstreams {
            r.validate().map_err(GateConfigError::Upstream)?;
        }
        Ok(Gate {
            chat: cfg.chat.clone(),
            upstreams: cfg.upstreams.clone(),
            keyring: Keyring::from_config(&cfg.keyring)?,
            verify: cfg.verify,
            bundle: cfg.bundle.clone(),
            microvote_cluster: cfg.microvote_cluster.clone(),
            microvote_deadline_ms: cfg.microvote_deadline_ms,
            cost_tracer: cfg.cost_tracer,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEYRING: &str = r#"{"global":{"alg":"hmac","keys":["s3cret-key"]}}"#;

    fn env(name: &str) -> Option<String> {
        (name == "KAKEYA_GATE_KEYRING").then(|| KEYRING.to_string())
    }

    #[test]
    fn keyring_from_the_environment() {
        let cfg = br#"{"keyring_env":"KAKEYA_GATE_KEYRING"}"#;
        let gate = Gate::from_json_with_env(cfg, &env).unwrap();
        assert!(!gate.keyring.verifier_for("default").unwrap().is_none());
        // Without the variable, or without an environment, the configuration is refused.
        let missing = br#"{"keyring_env":"NOPE"}"#;
        let e = Gate::from_json_with_env(missing, &env).unwrap_err();
        assert!(matches!(e, GateConfigError::KeyringEnv(_)), "{e}");
        assert!(Gate::from_json(cfg).is_err());
        // Both inline and by name: refused.
        let both = br#"{"keyring_env":"KAKEYA_GATE_KEYRING","keyring":{"multi_tenant":true}}"#;
        assert!(Gate::from_json_with_env(both, &env).is_err());
        // An unresolved GateConfig is refused by from_config.
        let c = GateConfig {
            keyring_env: Some("KAKEYA_GATE_KEYRING".into()),
            ..GateConfig::default()
        };
        assert!(Gate::from_config(&c).is_err());
    }

    #[test]
    fn a_bad_keyring_variable_is_refused_without_quoting_it() {
        let bad = |_: &str| Some(r#"{"global":{"alg":"hmac","keys":"s3cret-key"}}"#.to_string());
        let e = Gate::from_json_with_env(br#"{"keyring_env":"K"}"#, &bad).unwrap_err();
        assert!(matches!(e, GateConfigError::KeyringEnv(_)));
        assert!(!e.to_string().contains("s3cret"), "{e}");
        let empty = |_: &str| Some(r#"{"global":{"alg":"hmac","keys":[""]}}"#.to_string());
        assert!(Gate::from_json_with_env(br#"{"keyring_env":"K"}"#, &empty).is_err());
    }
}
