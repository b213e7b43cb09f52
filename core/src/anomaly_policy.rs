//! The bundle's `anomaly` section: the signed VAE artifact ([`crate::vae`]) and, per tenant,
//! how the filter uses its score ([`Mode`]) and at which thresholds.
//!
//! * `model`: the artifact the control plane activated (`POST /v1/anomaly/activate`). Its
//!   feature schema must be this build's [`crate::anomaly_features::SCHEMA_VERSION`]
//!   ([`VaeModel::validate`]); otherwise the whole bundle is refused and the filter keeps its
//!   last good one.
//! * `tenants` / `default`: the mode and thresholds of a tenant (`default` for tenants not
//!   listed). No entry, or no model: nothing is scored.
//!
//! The section is absent from the bytes when empty, so bundles without it are byte for byte
//! what they were before it existed.

use crate::vae::VaeModel;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What the filter does with a tenant's anomaly score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Not scored.
    #[default]
    Off,
    /// Scored and recorded; the answer is unchanged.
    Shadow,
    /// A score at or above the threshold is an `anomaly` reject vote in the ensemble.
    Guardrail,
    /// A score at or above the blocking threshold is refused (403 `anomaly_blocked`).
    Blocking,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Off => "off",
            Mode::Shadow => "shadow",
            Mode::Guardrail => "guardrail",
            Mode::Blocking => "blocking",
        }
    }

    pub fn parse(s: &str) -> Option<Mode> {
        [Mode::Off, Mode::Shadow, Mode::Guardrail, Mode::Blocking]
            .into_iter()
            .find(|m| m.as_str() == s)
    }
}

/// One tenant's settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantAnomaly {
    pub mode: Mode,
    /// Flag threshold on the score in [0, 1]: a score at or above it is flagged (the
    /// optimiser's current threshold for the tenant).
    pub threshold: f64,
    /// Blocking threshold in [0, 1] (mode `blocking`); absent = `threshold`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_threshold: Option<f64>,
}

impl TenantAnomaly {
    /// The score at or above which mode `blocking` refuses.
    pub fn blocks_at(&self) -> f64 {
        self.block_threshold.unwrap_or(self.threshold)
    }
}

/// The section.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnomalySection {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<VaeModel>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<TenantAnomaly>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tenants: BTreeMap<String, TenantAnomaly>,
}

/// Why an anomaly section was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AnomalyPolicyError {
    #[error("model: {0}")]
    Model(#[from] crate::vae::VaeError),
    #[error("thresholds of {0:?} must be within [0, 1]")]
    Threshold(String),
}

impl AnomalySection {
    pub fn is_empty(&self) -> bool {
        self.model.is_none() && self.default.is_none() && self.tenants.is_empty()
    }

    /// The model and the tenant's settings when the tenant is scored (a model, a mode other
    /// than `off`).
    pub fn for_tenant(&self, tenant: &str) -> Option<(&VaeModel, &TenantAnomaly)> {
        let t = self.tenants.get(tenant).or(self.default.as_ref())?;
        let m = self.model.as_ref()?;
        (t.mode != Mode::Off).then_some((m, t))
    }

    pub fn validate(&self) -> Result<(), AnomalyPolicyError> {
        if let Some(m) = &self.model {
            m.validate()?;
        }
        let unit = |v: f64| (0.0..=1.0).contains(&v);
        let entries = self
            .default
            .iter()
            .map(|t| ("default", t))
            .chain(self.tenants.iter().map(|(k, t)| (k.as_str(), t)));
        for (name, t) in entries {
            if !unit(t.threshold) || !t.block_threshold.is_none_or(unit) {
                return Err(AnomalyPolicyError::Threshold(
                    name.chars().take(64).collect(),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_round_trip_and_thresholds_are_checked() {
        for m in ["off", "shadow", "guardrail", "blocking"] {
            assert_eq!(Mode::parse(m).map(Mode::as_str), Some(m));
        }
        assert_eq!(Mode::parse("block"), None);
        let t = TenantAnomaly {
            mode: Mode::Blocking,
            threshold: 0.9,
            block_threshold: None,
        };
        assert_eq!(t.blocks_at(), 0.9);
        let mut s = AnomalySection {
            tenants: BTreeMap::from([("acme".into(), t)]),
            ..AnomalySection::default()
        };
        assert_eq!(s.validate(), Ok(()));
        // No model: nothing is scored.
        assert!(s.for_tenant("acme").is_none());
        s.tenants.insert(
            "bad".into(),
            TenantAnomaly {
                threshold: f64::NAN,
                ..t
            },
        );
        assert!(matches!(
            s.validate(),
            Err(AnomalyPolicyError::Threshold(n)) if n == "bad"
        ));
    }
}
