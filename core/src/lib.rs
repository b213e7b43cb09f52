//! # kakeya-core
//!
//! All domain logic of Kakeya Edge's verify path, with no I/O and no async, so that the very same
//! code runs inside the Envoy filter (`wasm32-wasip1`), in a browser (`wasm32-unknown-unknown`) and
//! in the control plane. Read it top to bottom in this order:
//!
//! 1. [`pcs`]: the PCS v0.1 wire type and its parser (typed errors, exact key names).
//! 2. [`ids`]: `pcs_id` derivation and the producer's Merkle root.
//! 3. [`numfmt`]: the number and string spellings the wire formats depend on (Python `repr`,
//!    Go's JSON floats, `round9`).
//! 4. [`canonical`]: the canonical signing payload (spec §3.2).
//! 5. [`signature`]: HMAC-SHA256 and Ed25519 verifiers and the per-tenant keyring.
//! 6. [`dimension`]: the Theil–Sen recomputation of D̂.
//! 7. [`verify`]: the ordered verification checks and the `VerifyResult` they produce.
//! 8. [`gate_config`]: the gate filter's configuration, shared by its writer and its reader.
//!
//! Hallucination-risk scoring (HRS), first slice:
//!
//! 9. [`evidence`]: question/context/response and their grounding features.
//! 10. [`pcs_builder`]: deterministic text → PCS recipe (v1).
//! 11. [`features`]: the one versioned HRS feature schema.
//! 12. [`model`] (its shared parts in [`artifact`]): the trained-model artifact of either kind ([`model::Model`]) and the
//!     logistic scorer; the reference HRS baseline.
//! 13. [`trees`]: the gradient-boosted tree ensemble and its scorer.
//! 14. [`bundle`]: the signed model bundle and the scorer the filter runs.
//! 15. [`feature_wire`]: the features a decision was scored with, as the gate forwards them.
//!
//! Ensemble votes:
//!
//! 16. [`vote`]: one strategy's accept / reject / abstain with a confidence and a reason.
//! 17. [`grounding`]: the `rag_grounding` strategy: support of the response by its context
//!     and citations.
//! 18. [`task`]: the task kind evidence may carry (`qa | dialogue | summarization | rag | other`).
//! 19. [`microvote`]: the micro-vote server's wire format and what a callout returns.
//! 20. [`ensemble_policy`]: the per-tenant N-of-M policy and stacking model a bundle carries.
//! 21. [`task_models`]: a bundle's per-task and per-tenant models, chosen by the task.
//! 22. [`budget`]: per-tenant budget state a bundle carries for the filter to enforce.
//!
//! The gate's decision:
//!
//! 23. [`pipeline`]: the stages from request headers to decision (parse → signature → evidence
//!     binding → verify → features → votes → aggregate → decision), behind a host trait.
//!
//! Anomaly detection:
//!
//! 24. [`anomaly_features`]: the anomaly detector's versioned feature schema (PCS signals and
//!     text degeneracy features).
//! 25. [`vae`]: the variational autoencoder artifact and its scorer (ECDF-calibrated score,
//!     uncertainty from seeded latent samples).

// Data plane: no indexing that can panic (`get`, iterators, `split_at_checked` instead).
#![deny(clippy::indexing_slicing)]

pub mod anomaly_features;
pub mod anomaly_policy;
pub mod artifact;
pub mod budget;
pub mod bundle;
pub mod canonical;
pub mod chat;
pub mod dimension;
pub mod ensemble_policy;
pub mod evidence;
pub mod feature_wire;
pub mod features;
pub mod gate_config;
pub mod grounding;
pub mod ids;
pub mod microvote;
pub mod model;
pub mod numfmt;
pub mod pcs;
pub mod pcs_builder;
pub mod pipeline;
pub mod signature;
pub mod task;
pub mod task_models;
pub mod trees;
pub mod upstream;
pub mod vae;
pub mod verify;
pub mod vote;

pub use gate_config::{Gate, GateConfig, GateConfigError, SUBMIT_PATH};
pub use pcs::{parse, ParseError, Pcs};
pub use signature::{Keyring, KeyringConfig, SignatureError, Verifier, VerifierConfig};
pub use verify::{verify, Outcome, VerifyParams, VerifyResult};
