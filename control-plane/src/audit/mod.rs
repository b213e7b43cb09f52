//! The WORM audit log and the compliance reports built on it.
//!
//! * [`chain`]: the entry hash, the segment Merkle root and the checkpoint message (pure);
//! * [`store`]: appends (serialised on the `audit_head` row, so the chain never forks, even
//!   with several replicas on one PostgreSQL), sealing segments with signed checkpoints, reads;
//! * [`batches`]: deep verification, each decision batch's root against the decision log;
//! * [`keyring`]: the current and the retired (endorsed) checkpoint keys, and rotation;
//! * [`read`]: bulk reads of the chain (many entries per fetched row) for the verifier;
//! * [`verify`]: re-walks the chain and the checkpoints and names the first broken link;
//! * [`compliance`]: SOC 2 / ISO 27001 reports whose every figure comes from a named query;
//! * [`api`]: `/v1/audit/*` and `/v1/compliance/report` (admin token).
//!
//! Write once: no code path UPDATEs or DELETEs `audit_entries` or `audit_checkpoints` (only
//! the one-row `audit_head` counter moves). That is a property of this code, not of the
//! storage: someone with write access to the database can still change rows. Tampering is
//! *detected* (by [`verify`]), not prevented, as in any WORM log without special storage.

pub mod api;
pub mod batches;
pub mod bench;
pub mod chain;
pub mod compliance;
pub mod keyring;
pub mod metrics;
pub mod options;
pub mod read;
pub mod store;
pub mod verify;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod verify_tests;

pub use options::AuditOptions;
pub use store::{append, record};

use serde::{Deserialize, Serialize};

/// The lease of the sealing job (one replica seals).
pub const LEASE: &str = "audit-seal";

/// What the log records: security- and governance-relevant events, each where it is stored
/// (in the same transaction where there is one). Decisions are recorded one entry per
/// committed ingest batch (with the Merkle root of the batch's rows), not one per request: the
/// decision log itself is the per-request record, and a per-request entry would double its
/// write volume on the hot path while the batch root already pins every row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", content = "payload", rename_all = "snake_case")]
pub enum Event {
    /// A committed ingest batch: its fresh decision-log rows (record ids in order) and the
    /// RFC 6962 root over their row hashes ([`store::decision_leaf`]).
    DecisionBatch {
        rows: u64,
        merkle_root: String,
        record_ids: Vec<String>,
    },
    /// Decisions of one batch whose ensemble votes disagreed (`ensemble_disagreements` rows).
    EnsembleDisagreements { count: u64, record_ids: Vec<String> },
    /// A label stored for a decision (review queue, feedback).
    LabelRecorded {
        tenant: String,
        pcs_id: String,
        labeller: String,
        source: String,
        label: String,
    },
    /// A model alias moved (`alias_history` row).
    AliasMoved {
        history_id: i64,
        alias: String,
        previous_version: Option<String>,
        new_version: Option<String>,
        weight: Option<f64>,
        actor: String,
        reason: String,
        bundle_version: i64,
    },
    /// A canary deployment's transition (`canary_events` row).
    CanaryTransition {
        deployment_id: String,
        transition: String,
        from_status: String,
        to_status: String,
        step: i64,
        weight: f64,
        reason: String,
    },
    /// An ensemble policy stored for a tenant (tuner, simulator apply, advisor apply, manual).
    PolicyApplied {
        tenant: String,
        policy_id: String,
        reason: String,
        run_id: Option<i64>,
    },
    /// A tenant's budget action changed (`cost_budget_state`).
    BudgetAction {
        tenant: String,
        month: String,
        action: String,
        previous_action: Option<String>,
        spent: f64,
    },
    /// A billing import finished (`cost_import_jobs`).
    BillingImport { job_id: String, status: String },
    /// A reconciliation report stored (`cost_reconciliations`).
    Reconciliation {
        id: i64,
        from_day: i64,
        to_day: i64,
        status: String,
        internal_sha256: String,
        billed_sha256: String,
    },
    /// The checkpoint signing key was rotated ([`keyring::rotate`]): `retired_key_id` is kept
    /// in the keyring, endorsed by `key_id`.
    KeyRotated {
        retired_key_id: String,
        key_id: String,
    },
}

impl Event {
    /// Every kind, as stored in `audit_entries.kind`.
    pub const KINDS: [&'static str; 10] = [
        "decision_batch",
        "ensemble_disagreements",
        "label_recorded",
        "alias_moved",
        "canary_transition",
        "policy_applied",
        "budget_action",
        "billing_import",
        "reconciliation",
        "key_rotated",
    ];

    /// What the entry is about (searchable without parsing the payload).
    pub fn subject(&self) -> String {
        match self {
            Event::DecisionBatch { record_ids, .. }
            | Event::EnsembleDisagreements { record_ids, .. } => {
                record_ids.first().cloned().unwrap_or_default()
            }
            Event::LabelRecorded { tenant, pcs_id, .. } => format!("{tenant}/{pcs_id}"),
            Event::AliasMoved { alias, .. } => alias.clone(),
            Event::CanaryTransition { deployment_id, .. } => deployment_id.clone(),
            Event::PolicyApplied { tenant, .. } | Event::BudgetAction { tenant, .. } => {
                tenant.clone()
            }
            Event::BillingImport { job_id, .. } => job_id.clone(),
            Event::Reconciliation { id, .. } => id.to_string(),
            Event::KeyRotated { key_id, .. } => key_id.clone(),
        }
    }

    /// (kind, payload as compact JSON): the stored columns.
    pub fn kind_and_payload(&self) -> (String, String) {
        let v = serde_json::to_value(self).unwrap_or_default();
        let kind = v["kind"].as_str().unwrap_or_default().to_string();
        (kind, v["payload"].to_string())
    }
}
