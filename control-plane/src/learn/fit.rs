//! Fitting a [`ModelKind`] on a dataset's training part, and measuring the artifact on its
//! validation part (the newest decisions, never seen by the fit or by Platt).
//!
//! The validation metrics are those of [`METRICS`] on the calibrated risk the artifact gives
//! (with its own tenant baseline, as served to tenants without bundle statistics), each with a
//! seeded stratified percentile-bootstrap interval ([`crate::ml::bootstrap`]); precision,
//! recall and F1 count an answer as flagged when its risk reaches the artifact's escalation
//! threshold, the rule the gate applies.

use super::dataset::{Dataset, DATASET_FORMAT};
use super::{ModelKind, TrainingOptions};
use crate::ml::bootstrap::{Bootstrap, Interval};
use crate::ml::drift_reference::DriftReference;
use crate::ml::eval::{baseline_of, with_tenant};
use crate::ml::gbdt::{self, GbdtError, GbdtParams};
use crate::ml::metrics::{auroc, brier, ece, pr_auc, precision_recall_f1};
use crate::ml::model::{artifact, fit_pipeline_weighted, Weighting, DEFAULT_L2};
use crate::registry::card;
use kakeya_core::features::N_FEATURES;
use kakeya_core::model::{Model, TrainingMeta};
use serde_json::{json, Map, Value};

/// The validation metrics, in the order of [`metric_values`].
pub const METRICS: [&str; 7] = [
    "auroc",
    "pr_auc",
    "precision",
    "recall",
    "f1",
    "ece",
    "brier",
];

/// How the figures of a trained version were obtained (card and artifact say it).
pub const HOLDOUT_PROTOCOL: &str =
    "time-based holdout: fitted (and Platt-calibrated) on the older \
    labelled decisions, measured on the newest; 95 % stratified percentile-bootstrap intervals";

/// The artifact on the validation part.
#[derive(Debug, Clone, PartialEq)]
pub struct Holdout {
    /// Calibrated risk of each validation row, in split order.
    pub scores: Vec<f64>,
    pub labels: Vec<u8>,
    /// The artifact's escalation threshold (precision, recall and F1 are at it).
    pub threshold: f64,
    pub bootstrap: Bootstrap,
    /// `{name: {value, ci_low, ci_high}}` for every name of [`METRICS`] (`null` = undefined).
    pub metrics: Value,
}

/// A fitted, measured artifact and its card.
#[derive(Debug, Clone)]
pub struct Trained {
    pub kind: ModelKind,
    pub model: Model,
    pub holdout: Holdout,
    pub card: Value,
    /// The training reference of drift checks (from the training part of the matrix the fit
    /// saw); the card records its hash.
    pub reference: DriftReference,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FitError {
    #[error("the fitted model is not a valid artifact: {0}")]
    Invalid(String),
    #[error(transparent)]
    Gbdt(#[from] GbdtError),
}

/// The boosting parameters of a `gbdt` training job: the default recipe of `kakeya train
/// --model-kind gbdt` (recorded in the artifact and on the card).
pub const GBDT_PARAMS: GbdtParams = gbdt::DEFAULT_PARAMS;

/// Every metric of [`METRICS`] of `scores` against `labels`.
pub fn metric_values(scores: &[f64], labels: &[u8], threshold: f64) -> [Option<f64>; 7] {
    let (precision, recall, f1) = precision_recall_f1(scores, labels, threshold);
    [
        auroc(scores, labels),
        pr_auc(scores, labels),
        precision,
        recall,
        f1,
        ece(scores, labels),
        brier(scores, labels),
    ]
}

/// Point estimates and bootstrap intervals of [`METRICS`] (`progress`: resamples done).
pub fn evaluate(
    scores: &[f64],
    labels: &[u8],
    threshold: f64,
    bootstrap: &Bootstrap,
    progress: impl FnMut(usize),
) -> Value {
    let point = metric_values(scores, labels, threshold);
    let (mut s, mut y) = (Vec::new(), Vec::new());
    let ci = bootstrap.intervals(
        labels,
        |idx| {
            s.clear();
            y.clear();
            s.extend(idx.iter().map(|&i| scores[i]));
            y.extend(idx.iter().map(|&i| labels[i]));
            metric_values(&s, &y, threshold)
        },
        progress,
    );
    let num = |v: Option<f64>| v.map_or(Value::Null, |v| json!(v));
    let mut out = Map::new();
    for ((name, value), interval) in METRICS.iter().zip(point).zip(ci) {
        let (lo, hi) = interval.map_or((None, None), |Interval { low, high, .. }| {
            (Some(low), Some(high))
        });
        out.insert(
            name.to_string(),
            json!({"value": num(value), "ci_low": num(lo), "ci_high": num(hi)}),
        );
    }
    Value::Object(out)
}

/// Fits `kind` on `ds` with `seed`; `progress` goes from 0 to 1. Every kind shares the
/// inputs (tenant baseline of the training rows, the matrix, the calibration split, balanced
/// class weights), the measurement and the card; only the learner differs ([`fit`]).
pub fn train(
    kind: ModelKind,
    ds: &Dataset,
    seed: u64,
    opts: &TrainingOptions,
    progress: &mut dyn FnMut(f64),
) -> Result<Trained, FitError> {
    let (mut model, x) = fit(kind, ds, seed, progress)?;
    progress(0.4);
    let reference = DriftReference::from_rows(&x, &ds.split.train)
        .map_err(|e| FitError::Invalid(format!("drift reference: {e}")))?;
    let holdout = measure(&model, &x, ds, seed, opts, progress);
    // The artifact carries its own figures (and they are part of its identity).
    model.training_mut().cv_metrics = json!({
        "protocol": HOLDOUT_PROTOCOL,
        "n": holdout.labels.len(),
        "metrics": holdout.metrics,
    });
    let mut card = card::from_training(&model, kind, ds, &holdout);
    card["drift_reference"] = reference.card_entry();
    progress(1.0);
    Ok(Trained {
        kind,
        model,
        holdout,
        card,
        reference,
    })
}

/// The recipe of a training job: tenant baseline of the training rows (the robust statistics
/// bundles use, recomputed from the stored raw D̂, coh★, r; the tenant columns are recomputed
/// against it), then the learner of `kind` on the training rows with balanced class weights
/// (sample weights over its fit split, not duplicated rows); the calibration split is a seeded
/// fifth of the training decisions, on which Platt and the escalation threshold are fitted
/// unweighted for either kind. Returns the artifact and the matrix it scores.
fn fit(
    kind: ModelKind,
    ds: &Dataset,
    seed: u64,
    progress: &mut dyn FnMut(f64),
) -> Result<(Model, Vec<f64>), FitError> {
    let train = &ds.split.train;
    let raw = ds.matrix();
    let baseline = baseline_of(&raw, train);
    let x = with_tenant(&raw, &baseline);
    let labels = ds.labels();
    let names: Vec<String> = ds
        .rows
        .iter()
        .map(|r| format!("{}/{}", r.tenant, r.pcs_id))
        .collect();
    let groups: Vec<&str> = names.iter().map(String::as_str).collect();
    let training = |l2: f64| TrainingMeta {
        seed,
        rows: train.len(),
        dataset_sha256: ds.sha256.clone(),
        recipe_version: DATASET_FORMAT.into(),
        l2,
        cv_metrics: json!({}),
    };
    progress(0.05);
    let model: Model = match kind {
        ModelKind::Lr => {
            let pipe = fit_pipeline_weighted(
                &x,
                N_FEATURES,
                &labels,
                &groups,
                train,
                seed,
                DEFAULT_L2,
                Weighting::Balanced,
            );
            artifact(pipe, baseline, training(DEFAULT_L2)).into()
        }
        ModelKind::Gbdt => gbdt::fit_model(
            &x,
            &labels,
            &groups,
            train,
            Weighting::Balanced,
            seed,
            &GBDT_PARAMS,
            baseline,
            training(GBDT_PARAMS.l2),
        )?
        .into(),
    };
    model
        .validate()
        .map_err(|e| FitError::Invalid(e.to_string()))?;
    Ok((model, x))
}

/// [`Holdout`] of `model` on the validation rows of `x` (progress 0.4 → 0.95).
fn measure(
    model: &Model,
    x: &[f64],
    ds: &Dataset,
    seed: u64,
    opts: &TrainingOptions,
    progress: &mut dyn FnMut(f64),
) -> Holdout {
    let v = &ds.split.validation;
    let scores: Vec<f64> = v
        .iter()
        .map(|&i| model.score(&x[i * N_FEATURES..(i + 1) * N_FEATURES]).1)
        .collect();
    let labels: Vec<u8> = v.iter().map(|&i| ds.rows[i].label).collect();
    let threshold = model.thresholds().escalate;
    let bootstrap = Bootstrap::new(opts.bootstrap_resamples, seed);
    let total = opts.bootstrap_resamples.max(1) as f64;
    let metrics = evaluate(&scores, &labels, threshold, &bootstrap, |done| {
        progress(0.4 + 0.55 * done as f64 / total)
    });
    Holdout {
        scores,
        labels,
        threshold,
        bootstrap,
        metrics,
    }
}
