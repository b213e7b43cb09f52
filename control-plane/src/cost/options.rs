//! The `[cost]` table of `kakeya.toml` and its environment overrides (`KAKEYA_COST_*`, which
//! win, as everywhere else).

use super::billing::{Provider, Tags};
use super::prices::{PriceBook, PriceEntry};
use crate::config::{ConfigError, EnvMap};
use crate::drift::options::{number, pick};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// Reconciliation alerts above this |drift| (percent).
pub const DEFAULT_ALERT_DRIFT_PCT: f64 = 3.0;
/// Budgets are recomputed this often.
pub const DEFAULT_BUDGET_EVERY: Duration = Duration::from_secs(60);
pub const DEFAULT_TENANT_TAG: &str = "kakeya-tenant";
pub const DEFAULT_SERVICE_TAG: &str = "kakeya-service";

/// `[cost]` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CostFileConfig {
    /// ISO 4217 code of every price (default USD).
    pub currency: Option<String>,
    /// `[[cost.prices]]`: the price book's configured entries.
    pub prices: Option<Vec<PriceEntry>>,
    /// Where each provider's exports are (a directory of `*.csv` / `*.csv.gz`, or one file).
    pub aws_exports: Option<PathBuf>,
    pub gcp_exports: Option<PathBuf>,
    pub azure_exports: Option<PathBuf>,
    /// The billing tag naming a line's tenant (default `kakeya-tenant`).
    pub tenant_tag: Option<String>,
    /// The billing tag naming a line's service: compute|storage|network|model_calls
    /// (default `kakeya-service`).
    pub service_tag: Option<String>,
    /// Reconciliation alert threshold on |drift|, percent (default 3).
    pub alert_drift_pct: Option<f64>,
    /// Budget recomputation period, e.g. `1m` (default 1 minute).
    pub budget_every: Option<String>,
}

/// The effective cost settings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CostOptions {
    pub currency: String,
    pub prices: Vec<PriceEntry>,
    pub aws_exports: Option<PathBuf>,
    pub gcp_exports: Option<PathBuf>,
    pub azure_exports: Option<PathBuf>,
    pub tags: Tags,
    pub alert_drift_pct: f64,
    #[serde(skip)]
    pub budget_every: Duration,
    /// The deployment's dedup TTL (`dedup_ttl_secs`, set by the configuration), which the
    /// advisor's `dedup_ttl` rule compares with the resubmission ages.
    #[serde(skip)]
    pub dedup_ttl_ms: i64,
}

impl Default for CostOptions {
    fn default() -> Self {
        CostOptions {
            currency: "USD".into(),
            prices: Vec::new(),
            aws_exports: None,
            gcp_exports: None,
            azure_exports: None,
            tags: Tags {
                tenant: DEFAULT_TENANT_TAG.into(),
                service: DEFAULT_SERVICE_TAG.into(),
            },
            alert_drift_pct: DEFAULT_ALERT_DRIFT_PCT,
            budget_every: DEFAULT_BUDGET_EVERY,
            dedup_ttl_ms: 14 * 86_400_000,
        }
    }
}

fn text(v: &str) -> Result<String, String> {
    Ok(v.to_string())
}

fn path(v: &str) -> Result<Option<PathBuf>, String> {
    Ok(Some(PathBuf::from(v)))
}

impl CostOptions {
    /// `[cost]` with `KAKEYA_COST_CURRENCY`, `_AWS_EXPORTS`, `_GCP_EXPORTS`, `_AZURE_EXPORTS`,
    /// `_TENANT_TAG`, `_SERVICE_TAG`, `_ALERT_DRIFT_PCT`, `_BUDGET_EVERY`, validated (the price
    /// book too).
    pub fn from_parts(file: Option<CostFileConfig>, env: &EnvMap) -> Result<Self, ConfigError> {
        let f = file.unwrap_or_default();
        let d = CostOptions::default();
        let budget_every = match &f.budget_every {
            Some(s) => Some(
                crate::ab::parse_duration(s)
                    .map_err(|e| ConfigError::Invalid(format!("cost.budget_every: {e}")))?,
            ),
            None => None,
        };
        let o = CostOptions {
            currency: pick(env, "KAKEYA_COST_CURRENCY", f.currency, d.currency, text)?,
            prices: f.prices.unwrap_or_default(),
            aws_exports: pick(
                env,
                "KAKEYA_COST_AWS_EXPORTS",
                Some(f.aws_exports),
                None,
                path,
            )?,
            gcp_exports: pick(
                env,
                "KAKEYA_COST_GCP_EXPORTS",
                Some(f.gcp_exports),
                None,
                path,
            )?,
            azure_exports: pick(
                env,
                "KAKEYA_COST_AZURE_EXPORTS",
                Some(f.azure_exports),
                None,
                path,
            )?,
            tags: Tags {
                tenant: pick(
                    env,
                    "KAKEYA_COST_TENANT_TAG",
                    f.tenant_tag,
                    d.tags.tenant,
                    text,
                )?,
                service: pick(
                    env,
                    "KAKEYA_COST_SERVICE_TAG",
                    f.service_tag,
                    d.tags.service,
                    text,
                )?,
            },
            alert_drift_pct: pick(
                env,
                "KAKEYA_COST_ALERT_DRIFT_PCT",
                f.alert_drift_pct,
                d.alert_drift_pct,
                number,
            )?,
            budget_every: pick(
                env,
                "KAKEYA_COST_BUDGET_EVERY",
                budget_every,
                d.budget_every,
                |v| crate::ab::parse_duration(v).map_err(|e| e.to_string()),
            )?,
            dedup_ttl_ms: d.dedup_ttl_ms,
        };
        if !o.alert_drift_pct.is_finite() || o.alert_drift_pct <= 0.0 {
            return Err(ConfigError::Invalid(format!(
                "cost.alert_drift_pct must be a positive number (got {})",
                o.alert_drift_pct
            )));
        }
        if o.tags.tenant.is_empty() || o.tags.service.is_empty() {
            return Err(ConfigError::Invalid(
                "cost.tenant_tag and cost.service_tag must not be empty".into(),
            ));
        }
        o.book(&[])
            .map_err(|e| ConfigError::Invalid(format!("[[cost.prices]]: {e}")))?;
        Ok(o)
    }

    /// The price book: the configured entries, then `stored` ones (the API's).
    pub fn book(&self, stored: &[PriceEntry]) -> Result<PriceBook, super::prices::PriceError> {
        let all = self.prices.iter().chain(stored).cloned().collect();
        PriceBook::new(&self.currency, all)
    }

    /// Where `provider`'s exports are.
    pub fn exports(&self, provider: Provider) -> Option<&PathBuf> {
        match provider {
            Provider::Aws => self.aws_exports.as_ref(),
            Provider::Gcp => self.gcp_exports.as_ref(),
            Provider::Azure => self.azure_exports.as_ref(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_wins_and_bad_values_are_refused() {
        let file: CostFileConfig = toml::from_str(
            "currency = \"EUR\"\nalert_drift_pct = 5.0\n[[prices]]\neffective_from = \"2026-01-01\"\nper_request = 0.001\n",
        )
        .unwrap();
        let mut env = EnvMap::new();
        env.insert("KAKEYA_COST_ALERT_DRIFT_PCT".into(), "2.5".into());
        env.insert("KAKEYA_COST_AWS_EXPORTS".into(), "/x".into());
        let o = CostOptions::from_parts(Some(file), &env).unwrap();
        assert_eq!((o.currency.as_str(), o.alert_drift_pct), ("EUR", 2.5));
        assert_eq!(o.exports(Provider::Aws), Some(&PathBuf::from("/x")));
        assert_eq!(o.book(&[]).unwrap().entries.len(), 1);
        env.insert("KAKEYA_COST_ALERT_DRIFT_PCT".into(), "-1".into());
        assert!(CostOptions::from_parts(None, &env).is_err());
        let bad: CostFileConfig =
            toml::from_str("[[prices]]\neffective_from = \"nope\"\n").unwrap();
        assert!(CostOptions::from_parts(Some(bad), &EnvMap::new()).is_err());
    }
}
