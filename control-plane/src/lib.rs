//! # kakeya-control-plane
//!
//! The control plane sits *behind* the Envoy gate filter. The filter has already parsed the
//! PCS, checked its signature and computed the [`kakeya_core::VerifyResult`]; what it cannot do
//! is remember anything. This crate adds the memory, durably and exactly once:
//!
//! * [`wal`]: every accepted submission is appended to a length+CRC framed write-ahead log and
//!   fsynced (one fsync per *group* of requests) before anybody is answered;
//! * [`store`]: the tenant-scoped dedup table (first write wins) and the decision log, in SQLite
//!   or PostgreSQL;
//! * [`ingest`]: the single committer task that ties both together (WAL batch → one fsync → one
//!   DB transaction → answers);
//! * [`api`]: the two HTTP listeners (ingest for Envoy, admin for operators);
//! * [`envoy`]: renders the Envoy bootstrap that puts the gate in front of all of it;
//! * [`registry`]: model registry, aliases and signed bundles served to the filters;
//! * [`review`]: the label store and the review queue (`/v1/reviews`, `/v1/feedback`);
//! * [`ab`]: A/B experiments on the served bundle and their statistics (`/v1/hrs/ab`);
//! * [`drift`]: drift checks against the training reference, alerts, auto-revert
//!   (`/v1/hrs/drift`);
//! * [`evidence`]: opt-in, encrypted, TTL-bounded retention of queued decisions' evidence;
//! * [`learn`]: datasets from the decision log and its labels, training jobs (`/v1/hrs/train`);
//! * [`scheduler`]: scheduled retraining and the auto-deploy gate (`/v1/hrs/scheduler`);
//! * [`cost`]: cost records per decision, the price book, billing import, reconciliation,
//!   forecasts, budgets and the advisor (`/v1/cost`);
//! * [`ensemble`]: adaptive per-tenant ensemble policies (`/v1/ensemble/*`), published in
//!   the bundle;
//! * [`audit`]: the WORM audit log (hash chain, signed checkpoints, verify) and compliance
//!   reports (`/v1/audit/*`, `/v1/compliance/report`);
//! * [`lease`]: leader leases, so background jobs run on one replica of many;
//! * [`anomaly`]: anomaly detection: the VAE detector (training, evaluation data, evaluation,
//!   signed artifacts), feedback, the exact threshold optimiser, clusters of flagged decisions,
//!   the active-learning queue (`/v1/anomaly`);
//! * [`ml`]: offline training and cross-validated evaluation of the hallucination-risk scorer.
//!
//! Trust boundary: the ingest listener believes the `x-kakeya-*` headers that the gate filter
//! sets. It binds loopback, or, off loopback, requires the shared secret Envoy adds to every
//! forwarded request ([`api::auth::H_INGEST_SECRET`]).

pub mod ab;
pub mod anomaly;
pub mod api;
pub mod audit;
pub mod canary;
pub mod config;
pub mod console;
pub mod cost;
pub mod data_dir;
pub mod decision_features;
pub mod drift;
pub mod ensemble;
pub mod envoy;
pub mod error;
pub mod evidence;
pub mod gateway_config;
pub mod ingest;
pub mod kpi;
pub mod learn;
pub mod lease;
pub mod metrics;
// microvote: the auxiliary model's settings and head training (server in kakeya-microvote).
pub mod microvote_config;
pub mod microvote_head;
pub mod ml;
pub mod private_file;
pub mod progress;
pub mod registry;
pub mod review;
pub mod scheduler;
pub mod server;
pub mod simulator;
pub mod store;
pub mod wal;

#[cfg(test)]
pub(crate) mod testutil;

#[cfg(test)]
mod pipeline_tests;

/// Milliseconds since the Unix epoch (wall clock). The WAL and the database use this clock.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
