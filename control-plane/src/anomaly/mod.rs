//! Anomaly detection: broken answers (repetition loops, gibberish, truncation, echoed prompts,
//! a sudden change of language) and agents whose PCS signals leave the normal range.
//!
//! * [`train`]: the VAE trainer (candle), exported into [`kakeya_core::vae::VaeModel`];
//! * [`eval_data`]: the evaluation data generator (degenerate variants of held-out responses);
//! * [`eval`]: `kakeya anomaly eval` (AUROC, TPR at FPR ≤ 2 % per kind, KS of held-out scores);
//! * [`store`]: signed artifacts and training jobs (migration 0031);
//! * [`model_api`]: `POST /v1/anomaly/train`, `GET /v1/anomaly/jobs/{job_id}`,
//!   `POST /v1/anomaly/detect`.

pub mod eval;
pub mod eval_data;
pub mod model_api;
pub mod store;
pub mod train;
