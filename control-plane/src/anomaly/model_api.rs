//! Routes of the anomaly VAE (admin listener, bearer token): train a model from feature
//! vectors, follow the job, score a vector with the newest (or a given) model.
//!
//! * `POST /v1/anomaly/train {samples, model_type: "vae", seed?, epochs?}` → 202 `{job_id}`:
//!   the samples (anomaly feature vectors of normal traffic, oldest first) are split in order:
//!   the first [`TRAIN_SHARE`] train, the next [`ECDF_SHARE`] build the ECDF, the newest rest
//!   checks it (KS against uniform, in the card). Without samples the decision log would be the
//!   source, but it records no anomaly feature vectors yet (the gate starts when inline scoring
//!   lands), so that is a 409 `no_anomaly_features` instead of a job that cannot succeed.
//! * `GET /v1/anomaly/jobs/{job_id}`;
//! * `POST /v1/anomaly/detect {pcs_id?, features, model_version?}` → the core scorer's answer
//!   and `decision`: `anomalous` when the score is above [`DEFAULT_THRESHOLD`], else `normal`.
//!   `cluster` is `null` (clusters are not part of this router).

use super::model_store::{self as store, Job, StoreError};
use super::train::{self, Row, TrainOptions};
use crate::api::AdminState;
use crate::error::{ApiError, ErrorBody};
use crate::registry::keys;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use kakeya_core::anomaly_features::{N_FEATURES, SCHEMA_VERSION};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Share of the samples (oldest) that train.
pub const TRAIN_SHARE: f64 = 0.7;
/// Share of the samples (next) whose errors make the ECDF.
pub const ECDF_SHARE: f64 = 0.15;
/// Fewest samples a training request needs (each part non-trivial).
pub const MIN_SAMPLES: usize = 100;
/// Most samples one request may carry.
pub const MAX_SAMPLES: usize = 20_000;
/// Most epochs a request may ask for.
pub const MAX_EPOCHS: u32 = 1_000;
/// Score above which `detect` says `anomalous`: by the ECDF's construction about 2 % of normal
/// traffic scores above it. The threshold optimiser's value replaces it once labels exist.
pub const DEFAULT_THRESHOLD: f64 = 0.98;

/// The routes, with their OpenAPI description.
pub fn router() -> OpenApiRouter<AdminState> {
    OpenApiRouter::new()
        .routes(routes!(train_model))
        .routes(routes!(get_job))
        .routes(routes!(detect))
}

fn db_error(e: sqlx::Error) -> ApiError {
    ApiError::StoreUnavailable(e.to_string())
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Db(e) => db_error(e),
            e @ StoreError::Integrity { .. } => ApiError::Integrity {
                refused: false,
                message: e.to_string(),
            },
        }
    }
}

/// The learner (only one so far).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ModelType {
    Vae,
}

/// One feature vector.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SampleIn {
    pub pcs_id: Option<String>,
    /// The `anomaly-features-v2` vector (26 values, in `FEATURE_NAMES` order).
    pub features: Vec<f64>,
}

/// A training request.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TrainBody {
    /// Normal traffic, oldest first; 100..=20000 vectors.
    pub samples: Option<Vec<SampleIn>>,
    pub model_type: ModelType,
    /// Seed of the weights, batches and latent draws, 0..=2⁶³−1.
    #[schema(minimum = 0)]
    pub seed: Option<i64>,
    /// Most epochs, 1..=1000 (default 300; early stopping may end sooner).
    pub epochs: Option<u32>,
}

/// A started job.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Started {
    pub job_id: i64,
}

fn vector(features: &[f64], what: &str) -> Result<Row, ApiError> {
    Row::try_from(features).map_err(|_| {
        ApiError::BadRequest(format!(
            "{what} has {} features; the {SCHEMA_VERSION} schema has {N_FEATURES}",
            features.len()
        ))
    })
}

fn signing_seed(st: &AdminState) -> Result<std::sync::Arc<[u8; 32]>, ApiError> {
    st.bundle_seed.clone().ok_or_else(|| {
        ApiError::NotReady(
            "this server has no registry signing key; start it with kakeya serve".into(),
        )
    })
}

#[utoipa::path(
    post,
    path = "/v1/anomaly/train",
    tag = "anomaly",
    request_body = TrainBody,
    security(("bearer" = [])),
    responses(
        (status = 202, body = Started, description = "Training; follow GET /v1/anomaly/jobs/{job_id}"),
        (status = 400, body = ErrorBody, description = "Malformed body, model_type other than vae, a vector of the wrong length, fewer than 100 or more than 20000 samples, negative seed, epochs outside 1..=1000"),
        (status = 401, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "code no_anomaly_features: no samples sent and the decision log holds no anomaly feature vectors of normal decisions (accepted, not escalated, not labelled hallucinated or anomalous)"),
        (status = 503, body = ErrorBody)
    )
)]
pub async fn train_model(
    State(st): State<AdminState>,
    body: Result<Json<TrainBody>, JsonRejection>,
) -> Result<(StatusCode, Json<Started>), ApiError> {
    let Json(b) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let samples = match b.samples {
        Some(s) => s,
        // The decision log's window: the newest normal decisions, oldest first.
        None => super::inline::normal_window(&st.db.pool, MAX_SAMPLES)
            .await
            .map_err(db_error)?
            .into_iter()
            .map(|features| SampleIn {
                pcs_id: None,
                features,
            })
            .collect(),
    };
    if samples.is_empty() {
        return Err(ApiError::ConflictWith {
            code: "no_anomaly_features",
            message: "no samples sent, and the decision log holds no anomaly feature vectors \
                      of normal decisions yet (the gate records them for tenants in an anomaly \
                      mode): send samples"
                .into(),
        });
    }
    if !(MIN_SAMPLES..=MAX_SAMPLES).contains(&samples.len()) {
        return Err(ApiError::BadRequest(format!(
            "{} samples; send {MIN_SAMPLES}..={MAX_SAMPLES}",
            samples.len()
        )));
    }
    let rows = samples
        .iter()
        .enumerate()
        .map(|(i, s)| vector(&s.features, &format!("samples[{i}]")))
        .collect::<Result<Vec<Row>, _>>()?;
    let seed = match b.seed {
        None => train::DEFAULT_SEED,
        Some(s) => u64::try_from(s)
            .map_err(|_| ApiError::BadRequest(format!("seed must be at least 0 (got {s})")))?,
    };
    let epochs = b.epochs.unwrap_or(TrainOptions::default().epochs as u32);
    if !(1..=MAX_EPOCHS).contains(&epochs) {
        return Err(ApiError::BadRequest(format!(
            "epochs must be 1..={MAX_EPOCHS} (got {epochs})"
        )));
    }
    let signing = signing_seed(&st)?;
    let opts = TrainOptions {
        seed,
        epochs: epochs as usize,
        ..TrainOptions::default()
    };
    let params =
        json!({"model_type": "vae", "seed": seed, "epochs": epochs, "n_samples": rows.len()});
    let job_id = store::create_job(&st.db, &params, crate::now_ms())
        .await
        .map_err(db_error)?;
    let db = st.db.clone();
    tokio::spawn(async move {
        let outcome = run_job(&db, &signing, job_id, rows, opts).await;
        if let Err(e) = store::finish_job(&db, job_id, outcome, crate::now_ms()).await {
            tracing::warn!(job_id, error = %e, "cannot record the anomaly training job's end");
        }
    });
    Ok((StatusCode::ACCEPTED, Json(Started { job_id })))
}

/// Trains (blocking thread, heartbeats meanwhile), signs and stores; the result JSON and the
/// version, or the error JSON.
async fn run_job(
    db: &crate::store::Db,
    signing: &[u8; 32],
    job_id: i64,
    rows: Vec<Row>,
    opts: TrainOptions,
) -> Result<(serde_json::Value, String), serde_json::Value> {
    let fail = |code: &str, e: String| json!({"code": code, "error": e});
    let n = rows.len();
    let n_train = (n as f64 * TRAIN_SHARE).round() as usize;
    let n_ecdf = (n as f64 * ECDF_SHARE).round() as usize;
    let fit = tokio::task::spawn_blocking(move || {
        let (train_rows, rest) = rows.split_at(n_train.min(rows.len()));
        let (ecdf_rows, check_rows) = rest.split_at(n_ecdf.min(rest.len()));
        let t = train::fit(train_rows, ecdf_rows, &opts, &mut |_, _| {})?;
        let ks = json!({
            "calibration": train::calibration_ks(&t.model, ecdf_rows, check_rows),
            "uniform": train::heldout_uniform_ks(&t.model, check_rows),
        });
        Ok::<_, train::TrainError>((t, ks))
    });
    tokio::pin!(fit);
    let mut beat = tokio::time::interval(std::time::Duration::from_millis(store::HEARTBEAT_MS));
    let joined = loop {
        tokio::select! {
            r = &mut fit => break r,
            _ = beat.tick() => {
                let _ = store::heartbeat(db, job_id, crate::now_ms()).await;
            }
        }
    };
    let (t, ks) = joined
        .map_err(|e| fail("internal", format!("the fit did not finish: {e}")))?
        .map_err(|e| fail("fit_failed", e.to_string()))?;
    let version = t.model.version();
    let val_elbo = -t
        .validation_loss
        .get(t.best_epoch)
        .copied()
        .unwrap_or(f64::NAN);
    let card = json!({
        "kind": "vae",
        "version": version,
        "sha256": t.model.sha256(),
        "feature_schema": t.model.schema_version,
        "training": t.model.training,
        "train_loss": t.train_loss,
        "validation_loss": t.validation_loss,
        "best_epoch": t.best_epoch,
        "ecdf_points": t.model.ecdf.len(),
        "heldout_ks_calibration": ks["calibration"],
        "heldout_ks_uniform": ks["uniform"],
    });
    let inserted = store::insert_model(db, signing, &t.model, &card, crate::now_ms())
        .await
        .map_err(|e| fail("store_unavailable", e.to_string()))?;
    let result = json!({
        "model_version": version,
        "sha256": t.model.sha256(),
        "already_registered": !inserted,
        "val_elbo": val_elbo,
        "epochs": t.train_loss.len(),
        "best_epoch": t.best_epoch,
        "n_train": t.model.training.n_train,
        "n_ecdf": t.model.training.n_ecdf,
        "heldout_ks_calibration": ks["calibration"],
        "heldout_ks_uniform": ks["uniform"],
        "threshold": DEFAULT_THRESHOLD,
    });
    Ok((result, version))
}

#[utoipa::path(
    get,
    path = "/v1/anomaly/jobs/{job_id}",
    tag = "anomaly",
    params(("job_id" = i64, Path, description = "id from POST /v1/anomaly/train")),
    security(("bearer" = [])),
    responses(
        (status = 200, body = Job, description = "The job: status, and its result (succeeded) or error (failed)"),
        (status = 400, body = ErrorBody, description = "job_id is not an integer"),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "No such job"),
        (status = 503, body = ErrorBody)
    )
)]
pub async fn get_job(
    State(st): State<AdminState>,
    path: Result<Path<i64>, PathRejection>,
) -> Result<Json<Job>, ApiError> {
    let Path(id) = path.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    store::job(&st.db, id, crate::now_ms())
        .await
        .map_err(db_error)?
        .map(Json)
        .ok_or_else(|| ApiError::Missing(format!("no anomaly training job {id}")))
}

/// A vector to score.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DetectBody {
    pub pcs_id: Option<String>,
    /// The `anomaly-features-v2` vector (26 values).
    pub features: Vec<f64>,
    /// A stored version (`vae-…`); default the newest.
    pub model_version: Option<String>,
}

/// What the detector says.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Detection {
    pub pcs_id: Option<String>,
    pub model_version: String,
    /// ECDF of the reconstruction error among held-out normal traffic, in [0, 1].
    pub score: f64,
    /// Std of the latent draws' scores, in [0, 0.5].
    pub uncertainty: f64,
    pub reconstruction_error: f64,
    pub elbo: f64,
    /// `anomalous` when `score > threshold`, else `normal`.
    pub decision: String,
    pub threshold: f64,
    /// Not assigned by this router (always `null` here).
    #[schema(value_type = Option<Object>)]
    pub cluster: Option<serde_json::Value>,
}

#[utoipa::path(
    post,
    path = "/v1/anomaly/detect",
    tag = "anomaly",
    request_body = DetectBody,
    security(("bearer" = [])),
    responses(
        (status = 200, body = Detection),
        (status = 400, body = ErrorBody, description = "Malformed body or a vector of the wrong length"),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "No anomaly model stored (or not that version)"),
        (status = 500, body = ErrorBody, description = "code integrity_failure: the stored artifact failed its hash, signature or schema check"),
        (status = 503, body = ErrorBody)
    )
)]
pub async fn detect(
    State(st): State<AdminState>,
    body: Result<Json<DetectBody>, JsonRejection>,
) -> Result<Json<Detection>, ApiError> {
    let Json(b) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let x = vector(&b.features, "features")?;
    let seed = signing_seed(&st)?;
    let public = keys::public_key_b64(&seed);
    let model = store::load_model(&st.db, b.model_version.as_deref(), &public)
        .await?
        .ok_or_else(|| {
            ApiError::Missing(match &b.model_version {
                Some(v) => format!("no anomaly model {v}"),
                None => "no anomaly model is stored: POST /v1/anomaly/train first".into(),
            })
        })?;
    let s = model.score(&x);
    Ok(Json(Detection {
        pcs_id: b.pcs_id,
        model_version: model.version(),
        score: s.score,
        uncertainty: s.uncertainty,
        reconstruction_error: s.reconstruction_error,
        elbo: s.elbo,
        decision: if s.score > DEFAULT_THRESHOLD {
            "anomalous"
        } else {
            "normal"
        }
        .into(),
        threshold: DEFAULT_THRESHOLD,
        cluster: None,
    }))
}

#[cfg(test)]
mod tests;
