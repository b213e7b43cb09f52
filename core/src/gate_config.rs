//! The gate filter's configuration: the JSON that the control plane renders into Envoy's
//! `PluginConfig.configuration` and that the filter parses once in `on_configure`.
//! It lives here so the writer (control plane) and the reader (filter) share one definition.

use crate::signature::{KeyError, Keyring, KeyringConfig};
use crate::verify::VerifyParams;
use serde::{Deserialize, Serialize};

/// Route the gate acts on; other paths pass through untouched.
pub const SUBMIT_PATH: &str = "/v1/pcs/submit";

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GateConfig {
    #[serde(default)]
    pub keyring: KeyringConfig,
    #[serde(default)]
    pub verify: VerifyParams,
    /// Where the model bundle comes from; without it the filter verifies only.
    #[serde(default)]
    pub bundle: Option<BundleSource>,
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
}

/// A parsed and validated gate configuration, ready for requests.
#[derive(Debug, Clone)]
pub struct Gate {
    pub keyring: Keyring,
    pub verify: VerifyParams,
    pub bundle: Option<BundleSource>,
}

impl Gate {
    pub fn from_json(bytes: &[u8]) -> Result<Self, GateConfigError> {
        let cfg: GateConfig =
            serde_json::from_slice(bytes).map_err(|e| GateConfigError::Json(e.to_string()))?;
        Self::from_config(&cfg)
    }

    pub fn from_config(cfg: &GateConfig) -> Result<Self, GateConfigError> {
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
        Ok(Gate {
            keyring: Keyring::from_config(&cfg.keyring)?,
            verify: cfg.verify,
            bundle: cfg.bundle.clone(),
        })
    }
}
