//! The exact threshold optimiser: from labelled (score, anomalous?) pairs, the threshold that
//! catches the most anomalies while flagging at most `target_fpr` of normal decisions.
//!
//! Every distinct score is a candidate (the exact ROC of [`crate::ml::metrics::roc_curve`],
//! ties never split), not the reference system's 0.10 … 0.85 grid (platform spec §6.2). A
//! decision is flagged when `score >= threshold`. Among the thresholds with FPR ≤ target the
//! one with the highest TPR wins, and of equal TPRs the highest threshold (the lowest FPR).
//! When no threshold meets the target the answer is `feasible: false` with the lowest FPR any
//! threshold reaches (and the highest TPR at that FPR), so the operator sees how far off it is.

use crate::ml::metrics::roc_curve;
use serde::{Deserialize, Serialize};

/// Default share of normal decisions the threshold may flag.
pub const DEFAULT_TARGET_FPR: f64 = 0.02;

/// The threshold before any optimisation: scores are the ECDF of held-out normal traffic, so
/// flagging `score >= 1 − target` flags about `target` of normal traffic by construction.
pub const DEFAULT_THRESHOLD: f64 = 1.0 - DEFAULT_TARGET_FPR;

/// The optimiser's answer (`POST /v1/anomaly/optimize-threshold`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Optimum {
    /// Flag decisions whose score is at or above it.
    pub threshold: f64,
    /// Share of the labelled normal decisions flagged at `threshold`.
    pub fpr: f64,
    /// Share of the labelled anomalous decisions flagged at `threshold`.
    pub tpr: f64,
    /// Whether `fpr <= target_fpr`; when false, `fpr` is the best any threshold achieves.
    pub feasible: bool,
    /// Labelled decisions used (one label per decision).
    pub n_labels: usize,
    pub n_anomalous: usize,
    pub n_normal: usize,
    pub target_fpr: f64,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ThresholdError {
    #[error("target_fpr must be within [0, 1], got {0}")]
    BadTarget(f64),
    #[error(
        "the optimiser needs labelled anomalous and normal decisions: {anomalous} anomalous, \
         {normal} normal so far (POST /v1/anomaly/feedback)"
    )]
    NeedsBothClasses { anomalous: usize, normal: usize },
}

/// Checks a target FPR from a request.
pub fn check_target(target_fpr: f64) -> Result<f64, ThresholdError> {
    if (0.0..=1.0).contains(&target_fpr) {
        Ok(target_fpr)
    } else {
        Err(ThresholdError::BadTarget(target_fpr))
    }
}

/// The best threshold for `pairs` of (score, anomalous) (see the module docs). Scores must be
/// finite (feedback and the decision log only hold finite ones).
pub fn optimise(pairs: &[(f64, bool)], target_fpr: f64) -> Result<Optimum, ThresholdError> {
    let target_fpr = check_target(target_fpr)?;
    let scores: Vec<f64> = pairs.iter().map(|p| p.0).collect();
    let labels: Vec<u8> = pairs.iter().map(|p| u8::from(p.1)).collect();
    let n_anomalous = pairs.iter().filter(|p| p.1).count();
    let n_normal = pairs.len() - n_anomalous;
    let roc = roc_curve(&scores, &labels).ok_or(ThresholdError::NeedsBothClasses {
        anomalous: n_anomalous,
        normal: n_normal,
    })?;
    // Points run from the highest threshold down, so FPR and TPR never decrease: a strictly
    // greater TPR is the only reason to move on, which keeps the lowest FPR among equal TPRs.
    let mut best = None;
    for p in roc.iter().filter(|p| p.fpr <= target_fpr) {
        if best.is_none_or(|b: &crate::ml::metrics::RocPoint| p.tpr > b.tpr) {
            best = Some(p);
        }
    }
    let feasible = best.is_some();
    // Infeasible: the lowest FPR is the first point's; take the last point with that FPR.
    let chosen = best.or_else(|| {
        let first = roc.first()?.fpr;
        roc.iter().take_while(|p| p.fpr == first).last()
    });
    let Some(p) = chosen else {
        return Err(ThresholdError::NeedsBothClasses {
            anomalous: n_anomalous,
            normal: n_normal,
        });
    };
    Ok(Optimum {
        threshold: p.threshold,
        fpr: p.fpr,
        tpr: p.tpr,
        feasible,
        n_labels: pairs.len(),
        n_anomalous,
        n_normal,
        target_fpr,
    })
}

/// Counts of the labelled decisions at one threshold, and the rates they give.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Confusion {
    pub threshold: f64,
    /// Anomalous and flagged.
    pub tp: usize,
    /// Normal and flagged.
    pub fp: usize,
    /// Anomalous and not flagged.
    #[serde(rename = "fn")]
    pub fn_: usize,
    /// Normal and not flagged.
    pub tn: usize,
    /// FP / (FP + TN); `null` without normal labels.
    pub fpr: Option<f64>,
    /// TP / (TP + FN); `null` without anomalous labels.
    pub tpr: Option<f64>,
    pub n_labels: usize,
}

/// The confusion matrix of `pairs` at `threshold` (no smoothing: the reference system's +1
/// biased both rates down, platform spec §6.2).
pub fn confusion(pairs: &[(f64, bool)], threshold: f64) -> Confusion {
    let (mut tp, mut fp, mut fn_, mut tn) = (0, 0, 0, 0);
    for &(s, anomalous) in pairs {
        match (s >= threshold, anomalous) {
            (true, true) => tp += 1,
            (true, false) => fp += 1,
            (false, true) => fn_ += 1,
            (false, false) => tn += 1,
        }
    }
    let rate = |a: usize, b: usize| (a + b > 0).then(|| a as f64 / (a + b) as f64);
    Confusion {
        threshold,
        tp,
        fp,
        fn_,
        tn,
        fpr: rate(fp, tn),
        tpr: rate(tp, fn_),
        n_labels: pairs.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(anomalous: &[f64], normal: &[f64]) -> Vec<(f64, bool)> {
        anomalous
            .iter()
            .map(|&s| (s, true))
            .chain(normal.iter().map(|&s| (s, false)))
            .collect()
    }

    /// Hand-built ROC. Anomalous 0.95 0.9 0.7 0.6 0.2; normal 0.8 0.5 0.4 0.3 0.1 (n = 5 each).
    /// Descending thresholds give (FPR, TPR): 0.95 (0, .2), 0.9 (0, .4), 0.8 (.2, .4),
    /// 0.7 (.2, .6), 0.6 (.2, .8), 0.5 (.4, .8), 0.4 (.6, .8), 0.3 (.8, .8), 0.2 (.8, 1),
    /// 0.1 (1, 1).
    #[test]
    fn the_highest_tpr_within_the_target_on_a_known_roc() {
        let p = pairs(&[0.95, 0.9, 0.7, 0.6, 0.2], &[0.8, 0.5, 0.4, 0.3, 0.1]);
        // FPR ≤ 0: only 0.95 and 0.9; 0.9 catches more.
        let o = optimise(&p, 0.0).unwrap();
        assert_eq!(
            (o.threshold, o.fpr, o.tpr, o.feasible),
            (0.9, 0.0, 0.4, true)
        );
        // FPR ≤ 0.2 (one normal flagged): 0.6 reaches TPR 0.8.
        let o = optimise(&p, 0.2).unwrap();
        assert_eq!(
            (o.threshold, o.fpr, o.tpr, o.feasible),
            (0.6, 0.2, 0.8, true)
        );
        // FPR ≤ 0.7: TPR stays 0.8 from 0.6 to 0.4; the highest threshold (lowest FPR) wins.
        let o = optimise(&p, 0.7).unwrap();
        assert_eq!((o.threshold, o.fpr, o.tpr), (0.6, 0.2, 0.8));
        // FPR ≤ 0.8: 0.2 catches every anomaly.
        let o = optimise(&p, 0.8).unwrap();
        assert_eq!((o.threshold, o.fpr, o.tpr), (0.2, 0.8, 1.0));
        assert_eq!((o.n_labels, o.n_anomalous, o.n_normal), (10, 5, 5));
        // The default target on this small fixture is FPR 0 in effect (0.02 · 5 < 1).
        assert_eq!(optimise(&p, DEFAULT_TARGET_FPR).unwrap().threshold, 0.9);
    }

    /// The highest score is a normal decision's: every threshold flags it, so FPR ≥ 1/3.
    #[test]
    fn infeasible_reports_the_best_achievable_fpr() {
        // desc: 0.9(−) 0.8(+) 0.7(+) 0.6(−) 0.5(−)
        let p = pairs(&[0.8, 0.7], &[0.9, 0.6, 0.5]);
        let o = optimise(&p, 0.02).unwrap();
        assert!(!o.feasible);
        // FPR 1/3 holds from 0.9 down to 0.7; there TPR is highest (1.0).
        assert_eq!(o.threshold, 0.7);
        assert!((o.fpr - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(o.tpr, 1.0);
        // With a looser target the same point is feasible.
        assert!(optimise(&p, 0.34).unwrap().feasible);
    }

    /// Tied scores across classes enter together: 0.5 flags both, never one of them.
    #[test]
    fn ties_are_never_split() {
        let p = pairs(&[0.9, 0.5], &[0.5, 0.1, 0.05]);
        let o = optimise(&p, 0.0).unwrap();
        assert_eq!((o.threshold, o.tpr, o.fpr), (0.9, 0.5, 0.0));
        let o = optimise(&p, 1.0 / 3.0).unwrap();
        assert_eq!((o.threshold, o.tpr), (0.5, 1.0));
        assert!((o.fpr - 1.0 / 3.0).abs() < 1e-12);
    }

    /// Exact, not a grid: a threshold between grid steps (0.523) is found as it is.
    #[test]
    fn thresholds_are_scores_not_grid_steps() {
        let normal: Vec<f64> = (0..100).map(|i| f64::from(i) / 200.0).collect(); // 0 … 0.495
        let p = pairs(&[0.523, 0.61, 0.77], &normal);
        let o = optimise(&p, 0.02).unwrap();
        assert_eq!(
            (o.threshold, o.fpr, o.tpr, o.feasible),
            (0.523, 0.0, 1.0, true)
        );
    }

    #[test]
    fn one_class_or_a_bad_target_is_an_error() {
        assert_eq!(
            optimise(&pairs(&[0.9], &[]), 0.02),
            Err(ThresholdError::NeedsBothClasses {
                anomalous: 1,
                normal: 0
            })
        );
        assert!(optimise(&[], 0.02).is_err());
        for t in [-0.1, 1.5, f64::NAN] {
            assert!(matches!(
                optimise(&pairs(&[0.9], &[0.1]), t),
                Err(ThresholdError::BadTarget(_))
            ));
        }
    }

    #[test]
    fn confusion_counts_and_rates_at_a_threshold() {
        let p = pairs(&[0.95, 0.9, 0.7, 0.6, 0.2], &[0.8, 0.5, 0.4, 0.3, 0.1]);
        let c = confusion(&p, 0.6);
        assert_eq!((c.tp, c.fp, c.fn_, c.tn, c.n_labels), (4, 1, 1, 4, 10));
        assert_eq!((c.fpr, c.tpr), (Some(0.2), Some(0.8)));
        let c = confusion(&pairs(&[0.9], &[]), 0.5);
        assert_eq!((c.fpr, c.tpr), (None, Some(1.0)));
    }
}
