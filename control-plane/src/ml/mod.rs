//! Offline training and evaluation of the hallucination-risk scorer (HRS).
//!
//! Why here and not in core: training reads files, hashes datasets and runs for seconds; the
//! data plane only needs the artifact and its scorer ([`kakeya_core::model::Model`]). Every
//! figure this module reports is cross-validated (grouped by item, so the two responses of an
//! item never straddle train and test) — a training split is never scored by a model fitted on it.
//!
//! * [`dataset`]: JSONL (plain or gzip) rows `{id, task, question, context, response, label}`;
//! * [`metrics`]: ROC AUC, PR AUC, Brier, ECE/MCE and reliability bins, precision/recall/F1 at
//!   a threshold, length-matched AUROC;
//! * [`bootstrap`]: seeded stratified percentile-bootstrap intervals of any of them;
//! * [`train`]: L2 logistic regression (Newton/IRLS, optional row weights) and Platt fitting;
//! * [`model`]: the logistic artifact builder (standardisation, calibration split, the shared
//!   calibration and threshold rule);
//! * [`gbdt`]: gradient-boosted trees (`forust-ml`) exported to the core tree artifact;
//! * [`eval`]: the recipes (model kinds), grouped stratified k-fold CV, baselines, the report;
//! * [`submission`]: the signed PCS v0.2 an answer with its evidence is submitted with;
//! * [`drift_reference`]: a model's training reference for drift checks (PSI bins, KS sample);
//! * [`grounding_eval`]: what the untrained `rag_grounding` rule does on a dataset
//!   (`kakeya eval --grounding`);
//! * [`stats`]: DeLong, Kolmogorov–Smirnov, PSI, Benjamini–Hochberg, Wilson (A/B, drift, gates).

pub mod bootstrap;
pub mod dataset;
pub mod drift_reference;
pub mod eval;
pub mod gbdt;
pub mod grounding_eval;
pub mod metrics;
pub mod model;
pub mod stats;
pub mod submission;
pub mod train;
