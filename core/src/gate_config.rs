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
}

/// A parsed and validated gate configuration, ready for requests.
#[derive(Debug, Clone)]
pub struct Gate {
    pub keyring: Keyring,
    pub verify: VerifyParams,
}

impl Gate {
    pub fn from_json(bytes: &[u8]) -> Result<Self, GateConfigError> {
        let cfg: GateConfig =
            serde_json::from_slice(bytes).map_err(|e| GateConfigError::Json(e.to_string()))?;
        Self::from_config(&cfg)
    }

    pub fn from_config(cfg: &GateConfig) -> Result<Self, GateConfigError> {
        cfg.verify.validate().map_err(GateConfigError::Verify)?;
        Ok(Gate {
            keyring: Keyring::from_config(&cfg.keyring)?,
            verify: cfg.verify,
        })
    }
}
