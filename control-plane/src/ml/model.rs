//! Building a model artifact: standardise, fit the logit on a fit split, fit Platt on a held-out
//! calibration split, package as [`HrsModel`] (the scorer lives in core so the filter can use it).
//!
//! The calibration split is ~20 % of the *items* (grouped by id prefix, chosen by a seeded hash),
//! so Platt never sees decision values of rows the logit was fitted on (platform spec §3.3 #5).

use super::train::{class_weights, fit_logistic_weighted, fit_platt};
use kakeya_core::evidence::fnv1a;
use kakeya_core::features::{TenantStats, FEATURE_NAMES, SCHEMA_VERSION};
use kakeya_core::model::{sigmoid, HrsModel, Platt, Thresholds, TrainingMeta, KIND_LOGISTIC};
use kakeya_core::pcs_builder::SplitMix64;

/// L2 weight of the default recipe (= scikit-learn's C = 1 on standardised features).
pub const DEFAULT_L2: f64 = 1.0;
/// Escalation threshold when the calibration split has no honest rows to choose one from.
pub const DEFAULT_ESCALATE: f64 = 0.5;
/// Largest share of honest (label 0) answers a new model may escalate: the platform's service
/// level ("escalation rate ≤ 2 % on honest traffic"). The threshold is chosen on the held-out
/// calibration split so that at most this share of its honest rows reach it.
pub const HONEST_ESCALATION_TARGET: f64 = 0.02;

/// A fitted standardise → logit → Platt pipeline on any number of columns.
#[derive(Debug, Clone, PartialEq)]
pub struct Pipeline {
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
    pub weights: Vec<f64>,
    pub intercept: f64,
    pub platt: Platt,
    /// Calibrated risk at or above which an answer is escalated.
    pub escalate: f64,
}

impl Pipeline {
    pub fn decision(&self, x: &[f64]) -> f64 {
        let mut z = self.intercept;
        for (j, w) in self.weights.iter().enumerate() {
            z += w * (x[j] - self.mean[j]) / self.std[j];
        }
        z
    }

    /// (raw σ(z), Platt-calibrated) risk.
    pub fn score(&self, x: &[f64]) -> (f64, f64) {
        let z = self.decision(x);
        (sigmoid(z), self.platt.apply(z))
    }
}

/// True when `group` falls into the calibration split for `seed` (≈ 1 in 5 items).
pub fn is_calibration(group: &str, seed: u64) -> bool {
    SplitMix64(fnv1a(group.as_bytes()) ^ seed).next_u64() % 5 == 0
}

/// Mean and population standard deviation of every column over the rows `idx` of `x`
/// (row-major, `d` columns); a constant column gets std 1, so it standardises to (nearly) zeros.
/// "Constant" is checked exactly, not only by a tiny variance: the mean of n equal values,
/// accumulated as Σ x/n, is off by ≈ n·ε (2·10⁻¹² for 100,000 ones), and dividing that by the
/// equally tiny std would turn the column into a second, penalised intercept of ≈ 1.
pub fn column_stats(x: &[f64], d: usize, idx: &[usize]) -> (Vec<f64>, Vec<f64>) {
    let n = idx.len().max(1) as f64;
    let mut mean = vec![0.0; d];
    let mut std = vec![0.0; d];
    let mut constant = vec![true; d];
    let first = idx.first().map(|&i| &x[i * d..(i + 1) * d]);
    for &i in idx {
        for j in 0..d {
            mean[j] += x[i * d + j] / n;
            constant[j] &= first.is_some_and(|f| f[j] == x[i * d + j]);
        }
    }
    for &i in idx {
        for j in 0..d {
            std[j] += (x[i * d + j] - mean[j]).powi(2) / n;
        }
    }
    for (s, c) in std.iter_mut().zip(constant) {
        *s = if *s > 1e-24 && !c { s.sqrt() } else { 1.0 };
    }
    (mean, std)
}

/// How the rows of the logit's fit split are weighted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weighting {
    /// Every row weighs 1 (the offline recipe: HaluEval is balanced by construction).
    Unit,
    /// Balanced class weights over the fit split ([`class_weights`]), instead of duplicating
    /// rows of the rarer class (datasets from the decision log are rarely balanced).
    Balanced,
}

impl Weighting {
    /// The weight of each of the rows `fit` of `labels`, in `fit`'s order (`None`: all 1).
    /// Balanced weights are computed over `fit` itself, the rows the learner sees.
    pub fn weights(self, labels: &[u8], fit: &[usize]) -> Option<Vec<f64>> {
        match self {
            Weighting::Unit => None,
            Weighting::Balanced => {
                let fit_labels: Vec<u8> = fit.iter().map(|&i| labels[i]).collect();
                let cw = class_weights(&fit_labels);
                Some(
                    fit_labels
                        .iter()
                        .map(|&l| cw[usize::from(l == 1)])
                        .collect(),
                )
            }
        }
    }
}

/// Fits a [`Pipeline`] on the rows `idx` of `x` (row-major, `d` columns).
pub fn fit_pipeline(
    x: &[f64],
    d: usize,
    labels: &[u8],
    groups: &[&str],
    idx: &[usize],
    seed: u64,
    l2: f64,
) -> Pipeline {
    fit_pipeline_weighted(x, d, labels, groups, idx, seed, l2, Weighting::Unit)
}

/// [`fit_pipeline`] with the logit's rows weighted by `weighting`. Platt and the escalation
/// threshold always see the calibration split unweighted, so the calibrated risk matches the
/// class balance of the data rather than that of the weights.
#[allow(clippy::too_many_arguments)]
pub fn fit_pipeline_weighted(
    x: &[f64],
    d: usize,
    labels: &[u8],
    groups: &[&str],
    idx: &[usize],
    seed: u64,
    l2: f64,
    weighting: Weighting,
) -> Pipeline {
    let (cal, fit): (Vec<usize>, Vec<usize>) =
        idx.iter().partition(|&&i| is_calibration(groups[i], seed));
    let (mean, std) = column_stats(x, d, &fit);
    let mut xs = Vec::with_capacity(fit.len() * d);
    let mut t = Vec::with_capacity(fit.len());
    for &i in &fit {
        for j in 0..d {
            xs.push((x[i * d + j] - mean[j]) / std[j]);
        }
        t.push(labels[i] as f64);
    }
    let w = weighting.weights(labels, &fit);
    let lr = fit_logistic_weighted(&xs, d, &t, w.as_deref(), l2, 100);
    let mut p = Pipeline {
        mean,
        std,
        weights: lr.weights,
        intercept: lr.intercept,
        platt: Platt { a: -1.0, b: 0.0 },
        escalate: DEFAULT_ESCALATE,
    };
    let s: Vec<f64> = cal
        .iter()
        .map(|&i| p.decision(&x[i * d..(i + 1) * d]))
        .collect();
    let y: Vec<u8> = cal.iter().map(|&i| labels[i]).collect();
    (p.platt, p.escalate) = calibrate(&s, &y);
    p
}

/// Calibration of any model from the decision values `s` of its held-out calibration rows
/// (labels `y`): Platt's A and B (A = −1, B = 0 without rows) and the escalation threshold that
/// at most [`HONEST_ESCALATION_TARGET`] of their honest rows reach.
pub fn calibrate(s: &[f64], y: &[u8]) -> (Platt, f64) {
    let mut platt = Platt { a: -1.0, b: 0.0 };
    if !s.is_empty() {
        let (a, b) = fit_platt(s, y);
        platt = Platt { a, b };
    }
    let honest: Vec<f64> = s
        .iter()
        .zip(y)
        .filter(|(_, &label)| label == 0)
        .map(|(&z, _)| platt.apply(z))
        .collect();
    (
        platt,
        threshold_for_honest_rate(honest, HONEST_ESCALATION_TARGET),
    )
}

/// The lowest threshold at which at most `target` of the `honest` risks are at or above it
/// (escalation is `risk >= threshold`); [`DEFAULT_ESCALATE`] without honest rows.
pub fn threshold_for_honest_rate(mut honest: Vec<f64>, target: f64) -> f64 {
    honest.retain(|r| r.is_finite());
    if honest.is_empty() {
        return DEFAULT_ESCALATE;
    }
    honest.sort_by(f64::total_cmp);
    let n = honest.len();
    let allowed = ((target * n as f64).floor() as usize).min(n - 1);
    // Strictly above the highest risk that must stay below the threshold.
    honest[n - 1 - allowed].next_up().clamp(0.0, 1.0)
}

/// Packages a full-schema pipeline as an artifact.
pub fn artifact(p: Pipeline, tenant: TenantStats, training: TrainingMeta) -> HrsModel {
    HrsModel {
        kind: KIND_LOGISTIC.into(),
        schema_version: SCHEMA_VERSION.into(),
        feature_names: FEATURE_NAMES.iter().map(|s| s.to_string()).collect(),
        mean: p.mean,
        std: p.std,
        weights: p.weights,
        intercept: p.intercept,
        platt: p.platt,
        thresholds: Thresholds {
            escalate: p.escalate,
        },
        tenant,
        training,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipeline_learns_a_signal_and_calibrates() {
        // one informative column, one constant column
        let n = 400;
        let mut x = Vec::new();
        let mut y = Vec::new();
        let names: Vec<String> = (0..n).map(|i| format!("g-{}", i / 2)).collect();
        let groups: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
        let mut rng = SplitMix64(1);
        for i in 0..n {
            let label = (i % 2) as u8;
            x.push(label as f64 + rng.next_f64() * 1.5);
            x.push(3.0);
            y.push(label);
        }
        let idx: Vec<usize> = (0..n).collect();
        let p = fit_pipeline(&x, 2, &y, &groups, &idx, 9, 1.0);
        assert!(p.weights[0] > 0.5);
        assert_eq!(p.std[1], 1.0);
        assert!(p.platt.a < 0.0);
        let (lo, _) = p.score(&[0.0, 3.0]);
        let (hi, hic) = p.score(&[2.5, 3.0]);
        assert!(hi > lo && hic > 0.5);
        assert_eq!(p, fit_pipeline(&x, 2, &y, &groups, &idx, 9, 1.0));
        let cal = groups.iter().filter(|g| is_calibration(g, 9)).count();
        assert!(cal > 40 && cal < 120, "{cal}");
        // The threshold keeps honest calibration rows at or under the target escalation rate.
        let honest: Vec<f64> = (0..n)
            .filter(|&i| y[i] == 0 && is_calibration(groups[i], 9))
            .map(|i| p.score(&x[i * 2..i * 2 + 2]).1)
            .collect();
        let escalated = honest.iter().filter(|&&r| r >= p.escalate).count();
        assert!(escalated as f64 <= HONEST_ESCALATION_TARGET * honest.len() as f64);
    }

    #[test]
    fn a_constant_column_standardises_to_zero_at_any_row_count() {
        // 100,000 rows: Σ 1/n is 1 − 2·10⁻¹², a variance of 4·10⁻²⁴ (above the 10⁻²⁴ guard).
        let n = 100_000;
        let x: Vec<f64> = (0..n).flat_map(|i| [1.0, i as f64]).collect();
        let idx: Vec<usize> = (0..n).collect();
        let (mean, std) = column_stats(&x, 2, &idx);
        assert_eq!(std[0], 1.0);
        assert!((1.0 - mean[0]) / std[0] < 1e-9);
        assert!((mean[1] - (n - 1) as f64 / 2.0).abs() < 1e-6);
        assert!((std[1] - 28_867.513).abs() < 1e-2, "{}", std[1]);
        assert_eq!(column_stats(&[], 2, &[]), (vec![0.0; 2], vec![1.0; 2]));
    }

    #[test]
    fn honest_rate_thresholds() {
        let risks: Vec<f64> = (1..=100).map(|i| i as f64 / 100.0).collect();
        // 2 of 100 may escalate: 0.99 and 1.0; the threshold sits just above 0.98.
        let t = threshold_for_honest_rate(risks.clone(), 0.02);
        assert!(t > 0.98 && t <= 0.99, "{t}");
        assert_eq!(risks.iter().filter(|&&r| r >= t).count(), 2);
        // Ties never let more than the target through.
        let ties = vec![0.7; 50];
        let t = threshold_for_honest_rate(ties.clone(), 0.02);
        assert_eq!(ties.iter().filter(|&&r| r >= t).count(), 0);
        assert_eq!(
            threshold_for_honest_rate(Vec::new(), 0.02),
            DEFAULT_ESCALATE
        );
        assert_eq!(
            threshold_for_honest_rate(vec![f64::NAN], 0.02),
            DEFAULT_ESCALATE
        );
    }
}
