//! The budget section of a bundle (`bundle.budgets`): per tenant, this month's spend against
//! its caps and the action the filter is to take, as the control plane last computed it.
//!
//! The control plane recomputes spend on a cadence and republishes when a tenant's action
//! changes; the filter only reads [`BudgetSection::action_for`], so enforcement needs no call.
//! Absent from the bytes when empty, so bundles without budgets are what they were before.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What a tenant's requests get once a threshold is crossed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BudgetAction {
    /// Nothing: under every threshold.
    None,
    /// Served as usual; operators are alerted.
    Alert,
    /// Skip the micro-vote: decide by HRS and RAG only.
    Degrade,
    /// 429 with `Retry-After` and code `budget_throttled`.
    Throttle,
    /// 402 with code `budget_exceeded`.
    Deny,
}

/// One tenant's budget state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantBudget {
    /// The month the spend is of (`YYYY-MM`, UTC).
    pub month: String,
    pub spent: f64,
    pub soft_cap: f64,
    pub hard_cap: f64,
    /// The action in force (the highest threshold reached).
    pub action: BudgetAction,
    /// `Retry-After` seconds of a throttle (the time to the month's end, at most a day).
    #[serde(default)]
    pub retry_after_s: u32,
}

/// The section itself.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetSection {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tenants: BTreeMap<String, TenantBudget>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("budget of tenant {tenant:?}: {message}")]
pub struct BudgetError {
    pub tenant: String,
    pub message: &'static str,
}

impl BudgetSection {
    pub fn is_empty(&self) -> bool {
        self.tenants.is_empty()
    }

    /// The action for `tenant`'s requests ([`BudgetAction::None`] when it has no budget).
    pub fn action_for(&self, tenant: &str) -> BudgetAction {
        self.tenants
            .get(tenant)
            .map_or(BudgetAction::None, |b| b.action)
    }

    pub fn validate(&self) -> Result<(), BudgetError> {
        for (tenant, b) in &self.tenants {
            let err = |message| BudgetError {
                tenant: tenant.clone(),
                message,
            };
            if ![b.spent, b.soft_cap, b.hard_cap]
                .iter()
                .all(|v| v.is_finite())
            {
                return Err(err("spend and caps must be finite"));
            }
            if b.soft_cap < 0.0 || b.hard_cap < b.soft_cap {
                return Err(err("caps must satisfy 0 ≤ soft_cap ≤ hard_cap"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_section_is_absent_and_actions_read_back() {
        let mut s = BudgetSection::default();
        assert_eq!(serde_json::to_string(&s).ok().as_deref(), Some("{}"));
        assert_eq!(s.action_for("t"), BudgetAction::None);
        s.tenants.insert(
            "t".into(),
            TenantBudget {
                month: "2026-01".into(),
                spent: 12.0,
                soft_cap: 10.0,
                hard_cap: 20.0,
                action: BudgetAction::Degrade,
                retry_after_s: 0,
            },
        );
        assert_eq!(s.action_for("t"), BudgetAction::Degrade);
        assert!(s.validate().is_ok());
        if let Some(b) = s.tenants.get_mut("t") {
            b.hard_cap = 5.0;
        }
        assert!(s.validate().is_err());
    }
}
