//! `kakeya anomaly eval`: train the VAE on the normal training rows, score the held-out normal
//! rows and the degenerate variants ([`super::eval_data`]) with the core scorer, and report
//! AUROC and TPR at FPR ≤ 2 % per kind, plus the KS test of the held-out normal scores against
//! uniform (is the ECDF calibrated on traffic it has not seen?).
//!
//! Ranking: the score is ECDF(reconstruction error), a monotone map that saturates at 1 past the
//! largest held-out normal error, so AUROC and the ROC point are computed on the reconstruction
//! error (the score with its ties broken by the error it came from). The threshold of a ROC
//! point is also given as a score.

use super::eval_data::{self, GenOptions, Kind, Part, Sample};
use super::train::{self, Row, TrainOptions, Trained};
use crate::ml::dataset;
use crate::ml::metrics::auroc;
use crate::ml::stats::ks::KsTest;
use kakeya_core::anomaly_features::{FEATURE_NAMES, N_FEATURES};
use kakeya_core::vae::VaeModel;
use serde::Serialize;
use std::io::Write;

/// The false-positive budget of the ROC point the issue asks for.
pub const FPR_BUDGET: f64 = 0.02;

/// One ROC point: the largest TPR whose FPR stays ≤ the budget.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RocPoint {
    /// Flag when the reconstruction error is above this.
    pub threshold_error: f64,
    /// The same threshold as a score.
    pub threshold_score: f64,
    pub fpr: f64,
    pub tpr: f64,
}

/// TPR at FPR ≤ `budget`, flagging errors strictly above the threshold: the threshold is the
/// (k+1)-th largest normal error with k = ⌊budget·n_normal⌋, so at most k normal rows are
/// flagged (ties at the threshold are not). `None` without rows of either class.
pub fn tpr_at_fpr(normal: &[f64], anomalous: &[f64], budget: f64) -> Option<(f64, f64, f64)> {
    if normal.is_empty() || anomalous.is_empty() {
        return None;
    }
    let mut sorted = normal.to_vec();
    sorted.sort_by(|a, b| b.total_cmp(a));
    let k = (budget * normal.len() as f64).floor() as usize;
    let t = sorted.get(k.min(sorted.len() - 1)).copied()?;
    let fpr = normal.iter().filter(|&&e| e > t).count() as f64 / normal.len() as f64;
    let tpr = anomalous.iter().filter(|&&e| e > t).count() as f64 / anomalous.len() as f64;
    Some((t, fpr, tpr))
}

/// Figures of one kind (or of all of them) against the held-out normal rows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KindReport {
    pub kind: String,
    pub n: usize,
    pub auroc: Option<f64>,
    pub at_fpr: Option<RocPoint>,
    /// TPR at the same threshold per severity 1, 2, 3.
    pub tpr_by_severity: Vec<Option<f64>>,
}

/// Everything `kakeya anomaly eval` prints.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvalReport {
    pub dataset: String,
    pub dataset_sha256: String,
    pub model_version: String,
    pub seed: u64,
    pub n_train: usize,
    pub n_ecdf: usize,
    pub n_test_normal: usize,
    pub n_variants: usize,
    pub epochs_run: usize,
    pub best_epoch: usize,
    pub first_train_loss: f64,
    pub best_validation_loss: f64,
    pub fpr_budget: f64,
    pub overall: KindReport,
    pub kinds: Vec<KindReport>,
    /// Calibration: held-out normal reconstruction errors against the ECDF rows' errors
    /// (two-sample, [`train::calibration_ks`]); the check of "uniform on held-out traffic".
    pub ks: Option<KsTest>,
    /// Held-out normal scores against U(0, 1) (one-sample; not the check, see
    /// [`train::calibration_ks`]), for comparison.
    pub ks_uniform: Option<KsTest>,
}

/// What one run produced.
pub struct Run {
    pub report: EvalReport,
    pub trained: Trained,
    pub samples: Vec<Sample>,
}

fn kind_report(
    model: &VaeModel,
    name: &str,
    normal: &[f64],
    rows: &[(&Sample, f64)],
) -> KindReport {
    let errs: Vec<f64> = rows.iter().map(|(_, e)| *e).collect();
    let mut scores = normal.to_vec();
    scores.extend(&errs);
    let mut labels = vec![0u8; normal.len()];
    labels.extend(std::iter::repeat_n(1u8, errs.len()));
    let point = tpr_at_fpr(normal, &errs, FPR_BUDGET);
    let tpr_by_severity = (1..=3u8)
        .map(|sev| {
            let (t, _, _) = point?;
            let s: Vec<f64> = rows
                .iter()
                .filter(|(x, _)| x.severity == sev)
                .map(|(_, e)| *e)
                .collect();
            (!s.is_empty()).then(|| s.iter().filter(|&&e| e > t).count() as f64 / s.len() as f64)
        })
        .collect();
    KindReport {
        kind: name.to_string(),
        n: errs.len(),
        auroc: auroc(&scores, &labels),
        at_fpr: point.map(|(t, fpr, tpr)| RocPoint {
            threshold_error: t,
            threshold_score: model.ecdf_of(t),
            fpr,
            tpr,
        }),
        tpr_by_severity,
    }
}

/// Builds the samples, trains, scores and reports. `progress(stage, done, total)`.
pub fn run(
    ds: &dataset::Dataset,
    name: &str,
    gen: &GenOptions,
    opts: &TrainOptions,
    progress: &mut dyn FnMut(&str, usize, usize),
) -> Result<Run, train::TrainError> {
    let split = eval_data::split(&ds.rows, gen);
    let samples = eval_data::samples(&split, gen.seed, &mut |d, t| progress("features", d, t));
    let rows_of = |part: Part| -> Vec<Row> {
        samples
            .iter()
            .filter(|s| s.part == part && s.kind == Kind::Normal)
            .map(|s| s.features)
            .collect()
    };
    let (train_rows, ecdf_rows) = (rows_of(Part::Train), rows_of(Part::Ecdf));
    let trained = train::fit(&train_rows, &ecdf_rows, opts, &mut |d, t| {
        progress("train", d, t)
    })?;
    let model = &trained.model;
    let test: Vec<&Sample> = samples.iter().filter(|s| s.part == Part::Test).collect();
    let total = test.len();
    let mut scored: Vec<(&Sample, f64, f64)> = Vec::with_capacity(total);
    for (i, s) in test.into_iter().enumerate() {
        let v = model.score(&s.features);
        scored.push((s, v.reconstruction_error, v.score));
        if (i + 1) % 256 == 0 || i + 1 == total {
            progress("score", i + 1, total);
        }
    }
    let normal: Vec<f64> = scored
        .iter()
        .filter(|(s, _, _)| s.kind == Kind::Normal)
        .map(|(_, e, _)| *e)
        .collect();
    let test_normal = rows_of(Part::Test);
    let anomalous: Vec<(&Sample, f64)> = scored
        .iter()
        .filter(|(s, _, _)| s.kind != Kind::Normal)
        .map(|(s, e, _)| (*s, *e))
        .collect();
    let kinds = Kind::DEGENERATE
        .iter()
        .map(|&k| {
            let rows: Vec<(&Sample, f64)> = anomalous
                .iter()
                .filter(|(s, _)| s.kind == k)
                .copied()
                .collect();
            kind_report(model, k.as_str(), &normal, &rows)
        })
        .collect();
    let report = EvalReport {
        dataset: name.to_string(),
        dataset_sha256: ds.sha256.clone(),
        model_version: model.version(),
        seed: opts.seed,
        n_train: train_rows.len(),
        n_ecdf: ecdf_rows.len(),
        n_test_normal: normal.len(),
        n_variants: anomalous.len(),
        epochs_run: trained.train_loss.len(),
        best_epoch: trained.best_epoch,
        first_train_loss: trained.train_loss.first().copied().unwrap_or(f64::NAN),
        best_validation_loss: trained
            .validation_loss
            .get(trained.best_epoch)
            .copied()
            .unwrap_or(f64::NAN),
        fpr_budget: FPR_BUDGET,
        overall: kind_report(model, "all degenerate kinds", &normal, &anomalous),
        kinds,
        ks: train::calibration_ks(model, &ecdf_rows, &test_normal),
        ks_uniform: train::heldout_uniform_ks(model, &test_normal),
    };
    Ok(Run {
        report,
        trained,
        samples,
    })
}

fn pct(v: Option<f64>) -> String {
    v.map_or("–".into(), |v| format!("{:.1} %", 100.0 * v))
}

/// The report as the Markdown table `docs/ANOMALY.md` quotes.
pub fn table(r: &EvalReport) -> String {
    let mut s = String::new();
    s.push_str("| kind | n | AUROC | TPR at FPR ≤ 2 % (FPR) | TPR sev. 1 / 2 / 3 |\n");
    s.push_str("|---|---|---|---|---|\n");
    for k in r.kinds.iter().chain(std::iter::once(&r.overall)) {
        let sev: Vec<String> = k.tpr_by_severity.iter().map(|v| pct(*v)).collect();
        s.push_str(&format!(
            "| {} | {} | {} | {} ({}) | {} |\n",
            k.kind,
            k.n,
            k.auroc.map_or("–".into(), |a| format!("{a:.4}")),
            pct(k.at_fpr.map(|p| p.tpr)),
            pct(k.at_fpr.map(|p| p.fpr)),
            sev.join(" / ")
        ));
    }
    if let Some(ks) = &r.ks {
        s.push_str(&format!(
            "\nCalibration, held-out normal errors vs the ECDF's (two-sample): KS D = {:.4}, \
             p = {:.3} (n = {}, m = {}).\n",
            ks.statistic, ks.p_value, ks.n, ks.m
        ));
    }
    if let Some(ks) = &r.ks_uniform {
        s.push_str(&format!(
            "Held-out normal scores vs U(0, 1) (one-sample, the ECDF's own noise ignored): \
             KS D = {:.4}, p = {:.3} (n = {}).\n",
            ks.statistic, ks.p_value, ks.n
        ));
    }
    s
}

/// The model card: computed figures only.
pub fn card(r: &EvalReport, t: &Trained) -> serde_json::Value {
    serde_json::json!({
        "kind": "vae",
        "version": t.model.version(),
        "sha256": t.model.sha256(),
        "feature_schema": t.model.schema_version,
        "architecture": format!(
            "N={N_FEATURES} -> 8 -> 5 -> latent 3 (mu, log var) -> 5 -> 8 -> {N_FEATURES}; tanh hidden"
        ),
        "training": t.model.training,
        "beta": t.model.beta,
        "latent_samples": t.model.latent_samples,
        "train_loss": t.train_loss,
        "validation_loss": t.validation_loss,
        "best_epoch": t.best_epoch,
        "ecdf_points": t.model.ecdf.len(),
        "heldout_ks_calibration": r.ks,
        "heldout_ks_uniform": r.ks_uniform,
        "evaluation": r,
    })
}

/// One CSV line per sample: part, kind, severity, label, source, then the features.
pub fn write_features_csv(samples: &[Sample], out: &mut dyn Write) -> std::io::Result<()> {
    let mut w = csv::Writer::from_writer(out);
    let mut head = vec!["part", "kind", "severity", "label", "source"];
    head.extend(FEATURE_NAMES);
    w.write_record(&head)?;
    for s in samples {
        let mut rec = vec![
            s.part.as_str().to_string(),
            s.kind.as_str().to_string(),
            s.severity.to_string(),
            s.label.to_string(),
            s.source.clone(),
        ];
        rec.extend(s.features.iter().map(|v| v.to_string()));
        w.write_record(&rec)?;
    }
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tpr_at_fpr_by_hand() {
        // 100 normal errors 0.01..1.00: k = 2, threshold = 3rd largest = 0.98, 2 normal above.
        let normal: Vec<f64> = (1..=100).map(|i| i as f64 / 100.0).collect();
        let anomalous = [0.5, 0.985, 2.0, 3.0];
        let (t, fpr, tpr) = tpr_at_fpr(&normal, &anomalous, 0.02).unwrap();
        assert_eq!(t, 0.98);
        assert_eq!(fpr, 0.02);
        assert_eq!(tpr, 0.75);
        // Ties at the threshold are not flagged.
        let (t, fpr, tpr) = tpr_at_fpr(&[1.0; 10], &[1.0, 2.0], 0.02).unwrap();
        assert_eq!((t, fpr, tpr), (1.0, 0.0, 0.5));
        assert_eq!(tpr_at_fpr(&[], &[1.0], 0.02), None);
    }
}
