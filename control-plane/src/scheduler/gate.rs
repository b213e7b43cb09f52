//! The auto-deploy gate: one pure function ([`evaluate`]) of a candidate's and the champion's
//! calibrated risks on the same labelled validation rows (the candidate's own time-based
//! holdout) and the thresholds of `[scheduler]`.
//!
//! Three checks, all of which must pass:
//!
//! * `auroc_floor`: the candidate's AUROC ≥ `auroc_floor` (at the floor passes);
//! * `auroc_drop`: no significant AUROC drop against the champion. Paired DeLong test
//!   ([`compare_paired`], champion first, so `difference` = candidate − champion): fails when
//!   the candidate ranks worse (`difference < 0`) and `p < drop_alpha` (p at alpha passes). A
//!   better or not significantly worse candidate passes. Without a champion there is nothing to
//!   compare with and the check passes; when the test cannot be computed (fewer than 2 rows of
//!   a class, zero variance with a difference) it fails: a drop cannot be excluded;
//! * `ece_ceiling`: the candidate's expected calibration error (10 equal-width bins) ≤
//!   `ece_ceiling` (at the ceiling passes).
//!
//! Each check reports its value and its threshold, so a failed gate says by how much.

use crate::ml::metrics::{auroc, ece};
use crate::ml::stats::delong::{compare_paired, PairedComparison};
use serde::{Deserialize, Serialize};

/// Defaults of the gate's thresholds.
pub const DEFAULT_AUROC_FLOOR: f64 = 0.75;
pub const DEFAULT_ECE_CEILING: f64 = 0.10;
pub const DEFAULT_DROP_ALPHA: f64 = 0.05;

/// What the gate requires (`[scheduler]` `auroc_floor`, `ece_ceiling`, `drop_alpha`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GateThresholds {
    /// Least AUROC of the candidate on its validation rows, in [0, 1].
    pub auroc_floor: f64,
    /// Largest ECE of the candidate on its validation rows, in [0, 1].
    pub ece_ceiling: f64,
    /// Significance level of the paired DeLong test of a drop against the champion, in (0, 1).
    pub drop_alpha: f64,
}

impl Default for GateThresholds {
    fn default() -> Self {
        GateThresholds {
            auroc_floor: DEFAULT_AUROC_FLOOR,
            ece_ceiling: DEFAULT_ECE_CEILING,
            drop_alpha: DEFAULT_DROP_ALPHA,
        }
    }
}

impl GateThresholds {
    /// What `[scheduler]` may not say.
    pub fn validate(&self) -> Result<(), String> {
        let share = |name: &str, v: f64, open: bool| {
            let ok = if open {
                v > 0.0 && v < 1.0
            } else {
                (0.0..=1.0).contains(&v)
            };
            if ok {
                Ok(())
            } else {
                let range = if open { "(0, 1)" } else { "[0, 1]" };
                Err(format!("scheduler.{name} must be within {range} (got {v})"))
            }
        };
        share("auroc_floor", self.auroc_floor, false)?;
        share("ece_ceiling", self.ece_ceiling, false)?;
        share("drop_alpha", self.drop_alpha, true)
    }
}

/// The three checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum GateCheckName {
    AurocFloor,
    AurocDrop,
    EceCeiling,
}

impl GateCheckName {
    pub fn as_str(self) -> &'static str {
        match self {
            GateCheckName::AurocFloor => "auroc_floor",
            GateCheckName::AurocDrop => "auroc_drop",
            GateCheckName::EceCeiling => "ece_ceiling",
        }
    }
}

/// One check: its value, its threshold and the verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GateCheck {
    pub check: GateCheckName,
    pub passed: bool,
    /// `auroc_floor`: the candidate's AUROC; `auroc_drop`: the paired test's two-sided p-value;
    /// `ece_ceiling`: the candidate's ECE. `null` when it could not be computed (see `note`).
    pub value: Option<f64>,
    /// `auroc_floor`, `drop_alpha` or `ece_ceiling`.
    pub threshold: f64,
    /// The rule, e.g. `auroc >= 0.75`.
    pub rule: String,
    /// Why a value is missing, or what was compared.
    pub note: Option<String>,
}

/// The gate's verdict on one candidate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GateReport {
    /// Every check passed.
    pub passed: bool,
    pub checks: Vec<GateCheck>,
    /// Validation rows scored, and of them hallucinated (positives) and faithful.
    pub n_validation: usize,
    pub positives: usize,
    pub negatives: usize,
    /// The paired DeLong comparison, champion first (`comparison.difference` = candidate −
    /// champion); `null` without a champion or when it could not be computed.
    pub comparison: Option<PairedComparison>,
}

impl GateReport {
    /// The checks that failed.
    pub fn failed(&self) -> Vec<GateCheckName> {
        self.checks
            .iter()
            .filter(|c| !c.passed)
            .map(|c| c.check)
            .collect()
    }

    /// One line with every check's value and threshold (alias-history comment, logs).
    pub fn summary(&self) -> String {
        let num = |v: Option<f64>| v.map_or_else(|| "n/a".to_string(), |v| format!("{v:.4}"));
        self.checks
            .iter()
            .map(|c| {
                let verdict = if c.passed { "pass" } else { "FAIL" };
                let extra = match (c.check, &self.comparison, &c.note) {
                    (GateCheckName::AurocDrop, Some(p), _) => format!(
                        " (champion auroc {:.4}, difference {:+.4})",
                        p.first.auroc, p.comparison.difference
                    ),
                    (_, _, Some(note)) if c.value.is_none() => format!(" ({note})"),
                    _ => String::new(),
                };
                format!(
                    "{} {verdict}: {} = {}{extra}, rule {}",
                    c.check.as_str(),
                    match c.check {
                        GateCheckName::AurocDrop => "p",
                        GateCheckName::AurocFloor => "auroc",
                        GateCheckName::EceCeiling => "ece",
                    },
                    num(c.value),
                    c.rule
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// The gate (module docs): `candidate` and `champion` are calibrated risks of the same
/// validation rows, `labels` their 0/1 labels (1 = hallucinated). Never panics: input that
/// yields no value (empty, one class, lengths that differ, non-finite scores) fails the check
/// that needs it.
pub fn evaluate(
    t: &GateThresholds,
    candidate: &[f64],
    champion: Option<&[f64]>,
    labels: &[u8],
) -> GateReport {
    let positives = labels.iter().filter(|&&l| l == 1).count();
    let consistent = candidate.len() == labels.len() && candidate.iter().all(|s| s.is_finite());
    let why_none = |what: &str| {
        if consistent {
            format!("{what} is undefined on these rows (both classes are needed)")
        } else {
            "candidate scores and labels do not match (length or non-finite scores)".to_string()
        }
    };
    let cand_auroc = auroc(candidate, labels).filter(|_| consistent);
    let floor = GateCheck {
        check: GateCheckName::AurocFloor,
        passed: cand_auroc.is_some_and(|a| a >= t.auroc_floor),
        value: cand_auroc,
        threshold: t.auroc_floor,
        rule: format!("auroc >= {}", t.auroc_floor),
        note: cand_auroc.is_none().then(|| why_none("AUROC")),
    };
    let (drop, comparison) = drop_check(t, candidate, champion, labels);
    let cand_ece = ece(candidate, labels).filter(|_| consistent);
    let calibration = GateCheck {
        check: GateCheckName::EceCeiling,
        passed: cand_ece.is_some_and(|e| e <= t.ece_ceiling),
        value: cand_ece,
        threshold: t.ece_ceiling,
        rule: format!("ece <= {}", t.ece_ceiling),
        note: cand_ece.is_none().then(|| why_none("ECE")),
    };
    let checks = vec![floor, drop, calibration];
    GateReport {
        passed: checks.iter().all(|c| c.passed),
        checks,
        n_validation: labels.len(),
        positives,
        negatives: labels.len() - positives,
        comparison,
    }
}

fn drop_check(
    t: &GateThresholds,
    candidate: &[f64],
    champion: Option<&[f64]>,
    labels: &[u8],
) -> (GateCheck, Option<PairedComparison>) {
    let rule = format!(
        "fail when candidate auroc < champion auroc and paired DeLong p < {}",
        t.drop_alpha
    );
    let check = |passed, value, note: String| GateCheck {
        check: GateCheckName::AurocDrop,
        passed,
        value,
        threshold: t.drop_alpha,
        rule: rule.clone(),
        note: Some(note),
    };
    let Some(champion) = champion else {
        return (
            check(true, None, "no champion to compare with".into()),
            None,
        );
    };
    match compare_paired(champion, candidate, labels) {
        Ok(p) => {
            let c = &p.comparison;
            let dropped = c.difference < 0.0 && c.p_value < t.drop_alpha;
            let note = format!(
                "candidate {:.4} vs champion {:.4}: difference {:+.4}, z {:.3}",
                p.second.auroc, p.first.auroc, c.difference, c.z
            );
            (check(!dropped, Some(c.p_value), note), Some(p))
        }
        Err(e) => (
            check(
                false,
                None,
                format!("the paired DeLong test cannot be computed: {e}"),
            ),
            None,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(auroc_floor: f64, ece_ceiling: f64, drop_alpha: f64) -> GateThresholds {
        GateThresholds {
            auroc_floor,
            ece_ceiling,
            drop_alpha,
        }
    }

    fn check(r: &GateReport, name: GateCheckName) -> &GateCheck {
        r.checks.iter().find(|c| c.check == name).unwrap()
    }

    /// 2 positives, 2 negatives; 3 of the 4 (positive, negative) pairs ordered right: AUROC
    /// exactly 0.75.
    const Y4: [u8; 4] = [1, 1, 0, 0];
    const S4: [f64; 4] = [0.9, 0.4, 0.6, 0.1];

    #[test]
    fn auroc_floor_passes_at_the_floor_and_fails_below_it() {
        let r = evaluate(&t(0.75, 1.0, 0.05), &S4, None, &Y4);
        let c = check(&r, GateCheckName::AurocFloor);
        assert_eq!((c.value, c.threshold, c.passed), (Some(0.75), 0.75, true));
        let r = evaluate(&t(0.7500001, 1.0, 0.05), &S4, None, &Y4);
        assert!(!check(&r, GateCheckName::AurocFloor).passed);
        assert!(!r.passed);
        assert_eq!(r.failed(), [GateCheckName::AurocFloor]);
        assert_eq!((r.n_validation, r.positives, r.negatives), (4, 2, 2));
    }

    #[test]
    fn ece_ceiling_passes_at_the_ceiling_and_fails_above_it() {
        // Bins of width 0.1: 0.9 (one positive: |0.9 − 1| = 0.1), 0.1 (one negative: 0.1),
        // 0.6 (negative: 0.6), 0.4 (positive: 0.6): ECE = (0.1 + 0.6 + 0.6 + 0.1) / 4 = 0.35.
        let e = ece(&S4, &Y4).unwrap();
        assert!((e - 0.35).abs() < 1e-12, "{e}");
        let r = evaluate(&t(0.0, e, 0.05), &S4, None, &Y4);
        let c = check(&r, GateCheckName::EceCeiling);
        assert_eq!((c.value, c.threshold, c.passed), (Some(e), e, true));
        assert!(r.passed);
        let r = evaluate(&t(0.0, e - 1e-9, 0.05), &S4, None, &Y4);
        assert!(!check(&r, GateCheckName::EceCeiling).passed);
        assert_eq!(r.failed(), [GateCheckName::EceCeiling]);
    }

    /// 40 rows: the champion ranks them perfectly, a worse candidate swaps `k` pairs.
    fn pair_with_drop(k: usize) -> (Vec<f64>, Vec<f64>, Vec<u8>) {
        let labels: Vec<u8> = (0..40).map(|i| u8::from(i % 2 == 0)).collect();
        let champion: Vec<f64> = labels
            .iter()
            .enumerate()
            .map(|(i, &l)| {
                if l == 1 {
                    0.6 + i as f64 / 200.0
                } else {
                    0.1 + i as f64 / 200.0
                }
            })
            .collect();
        let mut candidate = champion.clone();
        // Give k positives a score below every negative's.
        for (done, i) in (0..40).step_by(2).enumerate() {
            if done < k {
                candidate[i] = 0.01 + i as f64 / 10_000.0;
            }
        }
        (candidate, champion, labels)
    }

    #[test]
    fn a_significant_drop_fails_and_an_insignificant_one_passes() {
        // A large drop: significant.
        let (cand, champ, y) = pair_with_drop(8);
        let r = evaluate(&t(0.0, 1.0, 0.05), &cand, Some(&champ), &y);
        let c = check(&r, GateCheckName::AurocDrop);
        let p = r.comparison.as_ref().unwrap();
        assert!(p.comparison.difference < 0.0);
        assert!(c.value.unwrap() < 0.05, "{c:?}");
        assert!(!c.passed && !r.passed);
        assert_eq!(r.failed(), [GateCheckName::AurocDrop]);
        // The boundary: alpha equal to the p-value passes (fail only when p < alpha), just
        // above it fails.
        let pv = c.value.unwrap();
        let r = evaluate(&t(0.0, 1.0, pv), &cand, Some(&champ), &y);
        assert!(
            check(&r, GateCheckName::AurocDrop).passed,
            "p = alpha passes"
        );
        let r = evaluate(&t(0.0, 1.0, pv * 1.000001), &cand, Some(&champ), &y);
        assert!(!check(&r, GateCheckName::AurocDrop).passed);
        // A small drop: not significant at 0.05.
        let (cand, champ, y) = pair_with_drop(1);
        let r = evaluate(&t(0.0, 1.0, 0.05), &cand, Some(&champ), &y);
        let c = check(&r, GateCheckName::AurocDrop);
        assert!(r.comparison.as_ref().unwrap().comparison.difference < 0.0);
        assert!(c.value.unwrap() >= 0.05 && c.passed, "{c:?}");
    }

    #[test]
    fn a_better_candidate_passes_the_drop_check_however_small_p_is() {
        // Swap the roles: the candidate is the perfect ranker, significantly better.
        let (worse, better, y) = pair_with_drop(8);
        let r = evaluate(&t(0.0, 1.0, 0.05), &better, Some(&worse), &y);
        let c = check(&r, GateCheckName::AurocDrop);
        assert!(c.value.unwrap() < 0.05 && c.passed, "{c:?}");
        assert!(r.comparison.unwrap().comparison.difference > 0.0);
        // The champion against itself: difference 0, p = 1.
        let r = evaluate(&t(0.0, 1.0, 0.05), &better, Some(&better), &y);
        let c = check(&r, GateCheckName::AurocDrop);
        assert_eq!((c.value, c.passed), (Some(1.0), true));
    }

    #[test]
    fn no_champion_passes_the_drop_check_and_an_uncomputable_test_fails_it() {
        let r = evaluate(&t(0.0, 1.0, 0.05), &S4, None, &Y4);
        let c = check(&r, GateCheckName::AurocDrop);
        assert!(c.passed && c.value.is_none() && r.comparison.is_none());
        assert_eq!(c.note.as_deref(), Some("no champion to compare with"));
        // One positive only: DeLong needs two of each class.
        let y = [1, 0, 0];
        let s = [0.9, 0.2, 0.1];
        let r = evaluate(&t(0.0, 1.0, 0.05), &s, Some(&s), &y);
        let c = check(&r, GateCheckName::AurocDrop);
        assert!(!c.passed && c.value.is_none(), "{c:?}");
        assert!(c.note.as_deref().unwrap().contains("cannot be computed"));
        // The other two checks still have values.
        assert_eq!(check(&r, GateCheckName::AurocFloor).value, Some(1.0));
        // Champion scores of another length.
        let r = evaluate(&t(0.0, 1.0, 0.05), &S4, Some(&S4[..3]), &Y4);
        assert!(!check(&r, GateCheckName::AurocDrop).passed);
    }

    #[test]
    fn degenerate_input_fails_every_check_that_needs_it_without_panicking() {
        for (s, y) in [
            (vec![], vec![]),
            (vec![0.5, 0.6], vec![1, 1]),
            (vec![0.5, f64::NAN], vec![1, 0]),
            (vec![0.5], vec![1, 0]),
        ] {
            let r = evaluate(&GateThresholds::default(), &s, Some(&s), &y);
            assert!(!r.passed, "{s:?}");
            let floor = check(&r, GateCheckName::AurocFloor);
            assert!(floor.value.is_none() && floor.note.is_some(), "{s:?}");
        }
    }

    #[test]
    fn thresholds_are_validated_and_the_summary_names_every_value() {
        assert!(GateThresholds::default().validate().is_ok());
        for bad in [
            t(1.5, 0.1, 0.05),
            t(-0.1, 0.1, 0.05),
            t(0.7, 2.0, 0.05),
            t(0.7, 0.1, 0.0),
            t(0.7, 0.1, 1.0),
            t(f64::NAN, 0.1, 0.05),
        ] {
            let e = bad.validate().unwrap_err();
            assert!(e.starts_with("scheduler."), "{e}");
        }
        let (cand, champ, y) = pair_with_drop(1);
        let s = evaluate(&GateThresholds::default(), &cand, Some(&champ), &y).summary();
        assert!(s.contains("auroc_floor pass: auroc = 0.9"), "{s}");
        assert!(s.contains("auroc_drop pass: p = "), "{s}");
        assert!(s.contains("champion auroc 1.0000"), "{s}");
        assert!(s.contains("ece_ceiling"), "{s}");
    }
}
