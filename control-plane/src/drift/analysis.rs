//! The statistics of a check and its alert rules, on data already loaded (no I/O).
//!
//! **Features** (a model with a training reference and at least `min_decisions` decisions in
//! the window): per feature the two-sample KS test of the window's values against the
//! reference's KS sample ([`ks_2samp`]: exact D with ties, Stephens-corrected asymptotic
//! p-value), the Benjamini–Hochberg adjustment of the 22 p-values ([`bh_adjust`]), and the PSI
//! of the window against the reference bins ([`psi`]). Alerts (`feature_drift`):
//!
//! * `ks`: the feature's BH-adjusted p-value is ≤ `fdr_q` (the FDR over the features is at
//!   most q): severity `warning`, statistic D, p_value the adjusted p, threshold q;
//! * `psi`: PSI ≥ `psi_moderate` (`warning`) or ≥ `psi_major` (`critical`): statistic PSI,
//!   threshold the level crossed.
//!
//! A constant feature (say `evidence_present` = 1 everywhere) gives D = 0, p = 1 and PSI 0
//! when the window is constant at the same value, and a finite D, p and PSI otherwise: the
//! reference bins of a constant column are `(−∞, c], (c, ∞)`, and empty bins are floored.
//!
//! **Performance** (a model whose card has a computed AUROC, with `min_labels_per_class`
//! labelled decisions of each class in the window): the AUROC of the model's own stored risk
//! against the effective labels, with its DeLong variance ([`delong`]). Alert
//! (`performance_drift`, `critical`, test `auroc`) when both
//!
//! * the drop below the card's AUROC exceeds `auroc_drop` (statistic the rolling AUROC,
//!   threshold card − drop), and
//! * the 95 % DeLong interval excludes the card's value (its upper end is below it),
//!
//! so a small labelled window with a wide interval never reverts a model on noise. The p-value
//! is the two-sided z-test of AUROC = card's with the DeLong standard error.

use super::options::DriftOptions;
use crate::ml::drift_reference::DriftReference;
use crate::ml::stats::delong::{delong, AurocEstimate};
use crate::ml::stats::ks::ks_2samp;
use crate::ml::stats::multiple::bh_adjust;
use crate::ml::stats::normal::two_sided_p;
use crate::ml::stats::psi::psi;
use crate::ml::stats::StatsError;
use kakeya_core::features::N_FEATURES;
use serde::{Deserialize, Serialize};

/// Where a section of a check stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DriftStatus {
    /// Checked, no alert.
    Ok,
    /// Checked, at least one alert.
    Drift,
    /// Too few decisions (features) or labels (performance) in the window: the counts say how
    /// many; no alert.
    InsufficientData,
    /// The model has nothing to compare with: an uploaded artifact has no training reference
    /// and no computed AUROC on its card. Reported, never an alert.
    NoReference,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlertType {
    FeatureDrift,
    PerformanceDrift,
}

impl AlertType {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertType::FeatureDrift => "feature_drift",
            AlertType::PerformanceDrift => "performance_drift",
        }
    }

    pub(super) fn parse(s: &str) -> Option<AlertType> {
        [AlertType::FeatureDrift, AlertType::PerformanceDrift]
            .into_iter()
            .find(|t| t.as_str() == s)
    }
}

/// Which test raised an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DriftTest {
    Ks,
    Psi,
    Auroc,
}

impl DriftTest {
    pub fn as_str(self) -> &'static str {
        match self {
            DriftTest::Ks => "ks",
            DriftTest::Psi => "psi",
            DriftTest::Auroc => "auroc",
        }
    }

    pub(super) fn parse(s: &str) -> Option<DriftTest> {
        [DriftTest::Ks, DriftTest::Psi, DriftTest::Auroc]
            .into_iter()
            .find(|t| t.as_str() == s)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }

    pub(super) fn parse(s: &str) -> Option<Severity> {
        [Severity::Warning, Severity::Critical]
            .into_iter()
            .find(|t| t.as_str() == s)
    }
}

/// An alert as a rule raised it, before it is stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub alert_type: AlertType,
    pub test: DriftTest,
    pub feature: Option<String>,
    pub statistic: f64,
    pub p_value: Option<f64>,
    pub threshold: f64,
    pub severity: Severity,
}

/// One feature's tests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FeatureDrift {
    pub feature: String,
    /// KS statistic D of the window against the reference sample.
    pub ks_statistic: f64,
    pub ks_p_value: f64,
    /// Benjamini–Hochberg adjusted p-value over the features.
    pub ks_p_adjusted: f64,
    /// `ks_p_adjusted ≤ fdr_q`.
    pub ks_rejected: bool,
    /// Window values (n) and reference KS sample values (m) of the test.
    pub n: usize,
    pub m: usize,
    /// PSI against the reference bins.
    pub psi: f64,
}

/// Per-feature tests of `window` (rows of the schema's features) against `reference`.
pub fn feature_drift(
    reference: &DriftReference,
    window: &[[f64; N_FEATURES]],
    opts: &DriftOptions,
) -> Result<Vec<FeatureDrift>, StatsError> {
    let mut out = Vec::with_capacity(N_FEATURES);
    let mut col = Vec::with_capacity(window.len());
    for (j, f) in reference.features.iter().enumerate() {
        col.clear();
        col.extend(window.iter().map(|r| r[j]));
        let ks = ks_2samp(&col, &f.ks_sample)?;
        out.push(FeatureDrift {
            feature: f.name.clone(),
            ks_statistic: ks.statistic,
            ks_p_value: ks.p_value,
            ks_p_adjusted: ks.p_value,
            ks_rejected: false,
            n: ks.n,
            m: ks.m,
            psi: psi(&f.psi, &col)?,
        });
    }
    let p: Vec<f64> = out.iter().map(|f| f.ks_p_value).collect();
    for (f, adj) in out.iter_mut().zip(bh_adjust(&p)?) {
        f.ks_p_adjusted = adj;
        f.ks_rejected = adj <= opts.fdr_q;
    }
    Ok(out)
}

/// The `feature_drift` alerts of `features` (module docs), in feature order.
pub fn feature_findings(features: &[FeatureDrift], opts: &DriftOptions) -> Vec<Finding> {
    let mut out = Vec::new();
    for f in features {
        if f.ks_rejected {
            out.push(Finding {
                alert_type: AlertType::FeatureDrift,
                test: DriftTest::Ks,
                feature: Some(f.feature.clone()),
                statistic: f.ks_statistic,
                p_value: Some(f.ks_p_adjusted),
                threshold: opts.fdr_q,
                severity: Severity::Warning,
            });
        }
        let level = if f.psi >= opts.psi_major {
            Some((opts.psi_major, Severity::Critical))
        } else if f.psi >= opts.psi_moderate {
            Some((opts.psi_moderate, Severity::Warning))
        } else {
            None
        };
        if let Some((threshold, severity)) = level {
            out.push(Finding {
                alert_type: AlertType::FeatureDrift,
                test: DriftTest::Psi,
                feature: Some(f.feature.clone()),
                statistic: f.psi,
                p_value: None,
                threshold,
                severity,
            });
        }
    }
    out
}

/// The performance test of a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PerformanceCheck {
    pub status: DriftStatus,
    /// The card's AUROC the window is compared with; `null` without one.
    pub reference_auroc: Option<f64>,
    /// Where it comes from on the card (`evaluation.metrics.auroc.value`: the time-based
    /// holdout of a training job; `evaluation.metrics.all.auroc`: the cross-validation of the
    /// default model), or why there is none.
    pub reference_source: String,
    /// Decisions of the model in the window with a stored risk and a label (the effective one
    /// counts), and of them hallucinated / faithful.
    pub labelled: usize,
    pub hallucinated: usize,
    pub faithful: usize,
    pub min_per_class: usize,
    /// AUROC of the stored risk against the labels, DeLong variance and 95 % interval.
    pub auroc: Option<AurocEstimate>,
    /// reference − rolling AUROC.
    pub drop: Option<f64>,
    /// Two-sided DeLong z-test of AUROC = reference.
    pub p_value: Option<f64>,
    /// reference − allowed drop: an alert needs the rolling AUROC below it.
    pub threshold: Option<f64>,
    /// In words: the counts short of the minimum, or the numbers behind the status.
    pub reason: String,
}

/// The performance test of stored `risks` against 0/1 `labels` (module docs); the alert, if
/// any, comes with it.
pub fn performance(
    risks: &[f64],
    labels: &[u8],
    reference: Option<(f64, &str)>,
    opts: &DriftOptions,
) -> (PerformanceCheck, Option<Finding>) {
    let hallucinated = labels.iter().filter(|&&l| l == 1).count();
    let faithful = labels.len() - hallucinated;
    let need = opts.min_labels_per_class;
    let mut p = PerformanceCheck {
        status: DriftStatus::InsufficientData,
        reference_auroc: reference.map(|r| r.0),
        reference_source: reference.map_or_else(
            || "none: the card has no computed AUROC (an uploaded artifact)".into(),
            |r| r.1.to_string(),
        ),
        labelled: labels.len(),
        hallucinated,
        faithful,
        min_per_class: need,
        auroc: None,
        drop: None,
        p_value: None,
        threshold: None,
        reason: String::new(),
    };
    let Some((card, _)) = reference else {
        p.status = DriftStatus::NoReference;
        p.reason = "no reference AUROC to compare with".into();
        return (p, None);
    };
    if hallucinated < need || faithful < need {
        p.reason = format!(
            "needs {need} hallucinated and {need} faithful labelled decisions in the window, \
             has {hallucinated} and {faithful}"
        );
        return (p, None);
    }
    let est = match delong(risks, labels) {
        Ok(e) => e,
        Err(e) => {
            p.reason = e.to_string();
            return (p, None);
        }
    };
    let drop = card - est.auroc;
    let threshold = card - opts.auroc_drop;
    let p_value = if est.se > 0.0 {
        two_sided_p((est.auroc - card) / est.se)
    } else if drop == 0.0 {
        1.0
    } else {
        0.0
    };
    let alert = drop > opts.auroc_drop && est.ci95.high < card;
    p.status = if alert {
        DriftStatus::Drift
    } else {
        DriftStatus::Ok
    };
    p.reason = format!(
        "rolling AUROC {:.4} (95 % CI {:.4}–{:.4}) vs the card's {card:.4}: drop {drop:.4} \
         (alert above {} with the interval below the card's)",
        est.auroc, est.ci95.low, est.ci95.high, opts.auroc_drop
    );
    let finding = alert.then_some(Finding {
        alert_type: AlertType::PerformanceDrift,
        test: DriftTest::Auroc,
        feature: None,
        statistic: est.auroc,
        p_value: Some(p_value),
        threshold,
        severity: Severity::Critical,
    });
    p.auroc = Some(est);
    p.drop = Some(drop);
    p.p_value = Some(p_value);
    p.threshold = Some(threshold);
    (p, finding)
}

/// The card's AUROC a model is held to, and where on the card it is (see [`PerformanceCheck`]).
/// Only computed figures count: an uploaded artifact's claims never do.
pub fn card_auroc(card: &serde_json::Value) -> Option<(f64, &'static str)> {
    if card.pointer("/evaluation/source").and_then(|v| v.as_str()) != Some("computed") {
        return None;
    }
    [
        (
            "/evaluation/metrics/auroc/value",
            "card evaluation.metrics.auroc.value (time-based holdout)",
        ),
        (
            "/evaluation/metrics/all/auroc",
            "card evaluation.metrics.all.auroc (cross-validation)",
        ),
    ]
    .into_iter()
    .find_map(|(path, what)| {
        card.pointer(path)
            .and_then(|v| v.as_f64())
            .filter(|a| (0.0..=1.0).contains(a))
            .map(|a| (a, what))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ml::stats::ks::ks_p_value;
    use kakeya_core::pcs_builder::SplitMix64;
    use serde_json::json;

    fn rng_normal(rng: &mut SplitMix64) -> f64 {
        // Box–Muller from two uniforms in (0, 1]
        let u = |r: &mut SplitMix64| ((r.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        let (a, b) = (u(rng), u(rng));
        (-2.0 * a.ln()).sqrt() * (std::f64::consts::TAU * b).cos()
    }

    /// `n` rows: feature 0 ~ N(shift, 1), feature 1 constant 1, feature 2 in {0, 1, 2}
    /// (ties), the others N(0, 1).
    fn rows(n: usize, shift: f64, seed: u64) -> Vec<[f64; N_FEATURES]> {
        let mut rng = SplitMix64(seed);
        (0..n)
            .map(|_| {
                let mut r = [0.0; N_FEATURES];
                for (j, v) in r.iter_mut().enumerate() {
                    *v = match j {
                        0 => shift + rng_normal(&mut rng),
                        1 => 1.0,
                        2 => (rng.next_u64() % 3) as f64,
                        _ => rng_normal(&mut rng),
                    };
                }
                r
            })
            .collect()
    }

    fn reference(n: usize) -> DriftReference {
        let x: Vec<f64> = rows(n, 0.0, 1).into_iter().flatten().collect();
        DriftReference::from_rows(&x, &(0..n).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn same_distribution_raises_nothing_and_a_shift_is_found() {
        let opts = DriftOptions::default();
        let r = reference(3000);
        let same = feature_drift(&r, &rows(800, 0.0, 2), &opts).unwrap();
        assert_eq!(same.len(), N_FEATURES);
        assert!(feature_findings(&same, &opts).is_empty(), "{same:?}");
        for f in &same {
            assert!(f.ks_p_value.is_finite() && f.psi.is_finite(), "{f:?}");
            assert!(f.psi < opts.psi_moderate, "{f:?}");
            assert_eq!((f.n, f.m), (800, 3000));
        }
        // the constant feature: D = 0, p = 1, PSI 0
        assert_eq!(
            (same[1].ks_statistic, same[1].ks_p_value, same[1].psi),
            (0.0, 1.0, 0.0)
        );

        // feature 0 shifted by one standard deviation: KS and PSI (major) alerts on it only
        let shifted = feature_drift(&r, &rows(800, 1.0, 3), &opts).unwrap();
        let found = feature_findings(&shifted, &opts);
        assert!(
            found.iter().all(|a| a.feature.as_deref() == Some("d_hat")),
            "{found:?}"
        );
        let ks = found.iter().find(|a| a.test == DriftTest::Ks).unwrap();
        assert_eq!((ks.severity, ks.threshold), (Severity::Warning, 0.05));
        assert!(ks.statistic > 0.3 && ks.p_value.unwrap() < 1e-10, "{ks:?}");
        let p = found.iter().find(|a| a.test == DriftTest::Psi).unwrap();
        assert_eq!((p.severity, p.threshold), (Severity::Critical, 0.25));
        assert!(p.p_value.is_none());
    }

    #[test]
    fn constant_window_against_a_varying_reference_is_finite() {
        let opts = DriftOptions::default();
        let r = reference(500);
        let window = vec![[2.5; N_FEATURES]; 200];
        let d = feature_drift(&r, &window, &opts).unwrap();
        for f in &d {
            assert!(f.ks_statistic.is_finite() && f.ks_p_value.is_finite() && f.psi.is_finite());
            assert!((0.0..=1.0).contains(&f.ks_p_adjusted));
        }
        // feature 1 (reference constant 1): D = 1 against 2.5 everywhere
        assert_eq!(d[1].ks_statistic, 1.0);
        assert!(feature_findings(&d, &opts).len() >= N_FEATURES);
    }

    #[test]
    fn bh_decides_the_ks_alerts() {
        // Hand-set p-values: only the BH-adjusted ones decide.
        let mk = |i: usize, p: f64| FeatureDrift {
            feature: format!("f{i}"),
            ks_statistic: 0.1,
            ks_p_value: p,
            ks_p_adjusted: p,
            ks_rejected: false,
            n: 100,
            m: 100,
            psi: 0.0,
        };
        let raw = [0.01, 0.02, 0.03, 0.5];
        let mut f: Vec<FeatureDrift> = raw.iter().enumerate().map(|(i, &p)| mk(i, p)).collect();
        let adj = bh_adjust(&raw).unwrap();
        for (x, a) in f.iter_mut().zip(&adj) {
            x.ks_p_adjusted = *a;
            x.ks_rejected = *a <= 0.05;
        }
        // adjusted 0.04, 0.04, 0.04, 0.5 → three alerts at q = 0.05, none at q = 0.03
        let opts = DriftOptions::default();
        assert_eq!(feature_findings(&f, &opts).len(), 3);
        let strict = DriftOptions {
            fdr_q: 0.03,
            ..opts
        };
        for x in f.iter_mut() {
            x.ks_rejected = x.ks_p_adjusted <= strict.fdr_q;
        }
        assert!(feature_findings(&f, &strict).is_empty());
        // PSI levels
        let mut g = mk(9, 1.0);
        g.psi = 0.1;
        let a = feature_findings(&[g.clone()], &opts);
        assert_eq!(
            (a[0].test, a[0].severity, a[0].threshold),
            (DriftTest::Psi, Severity::Warning, 0.1)
        );
        g.psi = 0.099;
        assert!(feature_findings(&[g], &opts).is_empty());
        // the p-value really is the corrected series
        assert_eq!(ks_p_value(0.0, 10, 10), 1.0);
    }

    #[test]
    fn performance_rules() {
        let opts = DriftOptions {
            min_labels_per_class: 5,
            ..DriftOptions::default()
        };
        let card = Some((0.9, "card"));
        // too few labels
        let (p, f) = performance(&[0.1, 0.9], &[0, 1], card, &opts);
        assert_eq!((p.status, p.labelled), (DriftStatus::InsufficientData, 2));
        assert!(
            f.is_none() && p.reason.contains("has 1 and 1"),
            "{}",
            p.reason
        );
        // no card AUROC
        let (p, f) = performance(&[0.1, 0.9], &[0, 1], None, &opts);
        assert_eq!(p.status, DriftStatus::NoReference);
        assert!(f.is_none());
        // reversed ranking on 20 + 20: AUROC 0, far below 0.9 → critical alert
        let risks: Vec<f64> = (0..40).map(|i| i as f64 / 40.0).collect();
        let labels: Vec<u8> = (0..40).map(|i| u8::from(i < 20)).collect();
        let (p, f) = performance(&risks, &labels, card, &opts);
        assert_eq!(p.status, DriftStatus::Drift);
        let f = f.unwrap();
        assert_eq!(
            (f.test, f.severity, f.statistic),
            (DriftTest::Auroc, Severity::Critical, 0.0)
        );
        assert!((f.threshold - 0.85).abs() < 1e-12);
        assert!(f.p_value.unwrap() < 1e-6);
        // the right ranking: no alert
        let good: Vec<u8> = labels.iter().map(|l| 1 - l).collect();
        let (p, f) = performance(&risks, &good, card, &opts);
        assert_eq!((p.status, f), (DriftStatus::Ok, None));
        assert_eq!(p.auroc.as_ref().unwrap().auroc, 1.0);
        // a drop past the limit whose interval still covers the card's value: no alert
        let noisy_risks = [0.1, 0.6, 0.3, 0.7, 0.5, 0.2, 0.8, 0.4, 0.9, 0.65];
        let noisy = [0u8, 1, 1, 0, 0, 1, 1, 0, 1, 0];
        let (p, f) = performance(&noisy_risks, &noisy, Some((0.75, "card")), &opts);
        let e = p.auroc.clone().unwrap();
        assert!(
            0.75 - e.auroc > opts.auroc_drop && e.ci95.high >= 0.75,
            "{e:?}"
        );
        assert_eq!((p.status, f), (DriftStatus::Ok, None));
    }

    #[test]
    fn card_reference_auroc() {
        let job = json!({"evaluation": {"source": "computed",
            "metrics": {"auroc": {"value": 0.81, "ci_low": 0.7, "ci_high": 0.9}}}});
        assert_eq!(card_auroc(&job).unwrap().0, 0.81);
        let default = json!({"evaluation": {"source": "computed",
            "metrics": {"all": {"auroc": 0.77}, "qa": {"auroc": 0.7}}}});
        assert_eq!(card_auroc(&default).unwrap().0, 0.77);
        // an uploaded artifact's claims never count
        let uploaded = json!({"evaluation": {"source": "none"},
            "claimed_by_artifact": {"cv_metrics": {"auroc": 0.99}}});
        assert_eq!(card_auroc(&uploaded), None);
        let broken =
            json!({"evaluation": {"source": "computed", "metrics": {"auroc": {"value": null}}}});
        assert_eq!(card_auroc(&broken), None);
    }
}
