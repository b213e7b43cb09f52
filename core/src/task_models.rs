//! Task-aware models of a bundle: per-task models of the champion arm and per-tenant
//! overrides, chosen inline from the task the signed evidence carries.
//!
//! Selection ([`TaskModels::select`]), for a request the arm split put on the **champion**:
//! the tenant's model for the task → the bundle's model for the task → the champion (global).
//! A challenger or canary model scores every task itself: an A/B experiment or a canary
//! compares one candidate against the champion *as served*, per-task models included, and a
//! candidate that wants per-task models becomes champion first (they are published with it).
//! Evidence without a task, and PCS without evidence, are scored by the champion as before.
//!
//! Why in the bundle and not a registry of its own: the per-task models are trained together
//! with the global one (`kakeya train --per-task`), on the same split, and must move together on
//! promotion and rollback; one signed value keeps them consistent in every filter.

use crate::model::{Model, ModelError};
use crate::task::TaskKind;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Longest tenant id a per-tenant entry may have.
pub const MAX_TENANT_ID: usize = 128;

/// Per-task models (for every tenant) and per-tenant, per-task overrides.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskModels {
    /// The champion arm's model for each listed task.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub by_task: BTreeMap<TaskKind, Model>,
    /// Per tenant: that tenant's model for each listed task (before [`TaskModels::by_task`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub by_tenant: BTreeMap<String, BTreeMap<TaskKind, Model>>,
}

/// Where the model that scored a request came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The arm's own model (global).
    Arm,
    /// The bundle's model for this task.
    Task(TaskKind),
    /// The tenant's model for this task.
    TenantTask(TaskKind),
}

impl Scope {
    /// The task of a task-aware model, `None` for the arm's own.
    pub fn task(self) -> Option<TaskKind> {
        match self {
            Scope::Arm => None,
            Scope::Task(t) | Scope::TenantTask(t) => Some(t),
        }
    }
}

/// Why a bundle's task models are refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TaskModelError {
    #[error("task model {0}: {1}")]
    Model(String, ModelError),
    #[error("task model {0}: its escalation threshold must be within [0, 1]")]
    Threshold(String),
    #[error("task model {0}: its tenant baseline is not finite")]
    Baseline(String),
    #[error("task models: a tenant id must be 1..={MAX_TENANT_ID} bytes")]
    TenantId,
}

impl TaskModels {
    pub fn is_empty(&self) -> bool {
        self.by_task.is_empty() && self.by_tenant.values().all(BTreeMap::is_empty)
    }

    /// The model for `tenant` and `task`, and its scope: the tenant's, then the bundle's;
    /// `None` when neither has one (the arm's own model scores).
    pub fn select(&self, tenant: &str, task: TaskKind) -> Option<(&Model, Scope)> {
        if let Some(m) = self.by_tenant.get(tenant).and_then(|t| t.get(&task)) {
            return Some((m, Scope::TenantTask(task)));
        }
        self.by_task.get(&task).map(|m| (m, Scope::Task(task)))
    }

    /// Every model with a name for errors (`qa`, `acme/qa`).
    pub fn named(&self) -> impl Iterator<Item = (String, &Model)> {
        let global = self
            .by_task
            .iter()
            .map(|(t, m)| (t.as_str().to_string(), m));
        let tenant = self.by_tenant.iter().flat_map(|(tenant, ms)| {
            ms.iter()
                .map(move |(t, m)| (format!("{tenant}/{}", t.as_str()), m))
        });
        global.chain(tenant)
    }

    /// Every model fits this build's schema, with a threshold in [0, 1] and a finite baseline.
    pub fn validate(&self) -> Result<(), TaskModelError> {
        if self
            .by_tenant
            .keys()
            .any(|t| t.is_empty() || t.len() > MAX_TENANT_ID)
        {
            return Err(TaskModelError::TenantId);
        }
        for (name, m) in self.named() {
            let name: String = name.chars().take(160).collect();
            m.validate()
                .map_err(|e| TaskModelError::Model(name.clone(), e))?;
            if !(0.0..=1.0).contains(&m.thresholds().escalate) {
                return Err(TaskModelError::Threshold(name));
            }
            if !m.tenant().is_valid() {
                return Err(TaskModelError::Baseline(name));
            }
        }
        Ok(())
    }

    /// The version of every model, in the same shape (computed once per bundle by the scorer).
    pub fn versions(&self) -> TaskVersions {
        TaskVersions {
            by_task: self
                .by_task
                .iter()
                .map(|(t, m)| (*t, m.version()))
                .collect(),
            by_tenant: self
                .by_tenant
                .iter()
                .map(|(tenant, ms)| {
                    let v = ms.iter().map(|(t, m)| (*t, m.version())).collect();
                    (tenant.clone(), v)
                })
                .collect(),
        }
    }
}

/// The versions of a [`TaskModels`], looked up by scope.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TaskVersions {
    by_task: BTreeMap<TaskKind, String>,
    by_tenant: BTreeMap<String, BTreeMap<TaskKind, String>>,
}

impl TaskVersions {
    /// The version of the model of `scope` for `tenant` (`None` for [`Scope::Arm`]).
    pub fn get(&self, tenant: &str, scope: Scope) -> Option<&str> {
        match scope {
            Scope::Arm => None,
            Scope::Task(t) => self.by_task.get(&t).map(String::as_str),
            Scope::TenantTask(t) => self
                .by_tenant
                .get(tenant)
                .and_then(|m| m.get(&t))
                .map(String::as_str),
        }
    }
}
