//! AUROC with its DeLong variance (DeLong, DeLong & Clarke-Pearson 1988), computed the fast way
//! of Sun & Xu (2014) from midranks in O(N log N).
//!
//! With m positives X (label 1) and n negatives Y (label 0) and ψ(x, y) = 1 if x > y, ½ if
//! x = y, 0 otherwise, the *placements* are V10(Xᵢ) = (1/n)·Σⱼ ψ(Xᵢ, Yⱼ) and
//! V01(Yⱼ) = (1/m)·Σᵢ ψ(Xᵢ, Yⱼ); AUROC θ is the mean of either. Sun & Xu: with Tz the midrank in
//! the pooled sample, Tx within the positives and Ty within the negatives,
//! V10(Xᵢ) = (Tz(Xᵢ) − Tx(Xᵢ))/n and V01(Yⱼ) = 1 − (Tz(Yⱼ) − Ty(Yⱼ))/m.
//! S10 and S01 are the sample variances (divisor m − 1, n − 1) of the placements and
//! Var(θ) = S10/m + S01/n; for two score vectors on the same rows the covariance is
//! S10ᴬᴮ/m + S01ᴬᴮ/n from the sample covariances of the placements.
//!
//! AUROC itself is [`crate::ml::metrics::auroc`] (one definition in the crate); the 95 %
//! intervals are θ ± z·SE on the AUROC scale (as R's pROC does), clipped to [0, 1] (a difference
//! to [−1, 1]). At least 2 positives and 2 negatives are needed for S10 and S01.

use serde::{Deserialize, Serialize};

use super::interval::Interval;
use super::normal::{two_sided_p, Z_95};
use super::rank::midranks;
use super::{check_scored, Result, StatsError};
use crate::ml::metrics::auroc;

/// One AUROC with its DeLong variance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AurocEstimate {
    pub auroc: f64,
    pub variance: f64,
    /// √variance.
    pub se: f64,
    /// auroc ± 1.96·se, clipped to [0, 1].
    pub ci95: Interval,
    pub positives: usize,
    pub negatives: usize,
}

/// A test of `difference = second − first` against 0: z = difference / se, two-sided p.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Comparison {
    /// AUROC of the second minus AUROC of the first (> 0: the second ranks better).
    pub difference: f64,
    pub variance: f64,
    pub se: f64,
    pub z: f64,
    pub p_value: f64,
    /// difference ± 1.96·se, clipped to [−1, 1].
    pub ci95: Interval,
}

/// Two score vectors on the same labelled rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PairedComparison {
    pub first: AurocEstimate,
    pub second: AurocEstimate,
    /// Cov(θ_first, θ_second) = S10ᴬᴮ/m + S01ᴬᴮ/n.
    pub covariance: f64,
    /// Its `variance` is Var(first) + Var(second) − 2·covariance.
    pub comparison: Comparison,
}

/// V10 per positive and V01 per negative, in row order, and θ.
struct Placements {
    v10: Vec<f64>,
    v01: Vec<f64>,
    auroc: f64,
}

fn placements(scores: &[f64], labels: &[u8]) -> Result<Placements> {
    let (positives, negatives) = check_scored(scores, labels)?;
    let counts = StatsError::ClassCounts {
        positives,
        negatives,
        need: 2,
    };
    if positives < 2 || negatives < 2 {
        return Err(counts);
    }
    let class = |c: u8| -> Vec<f64> {
        scores
            .iter()
            .zip(labels)
            .filter(|(_, &l)| l == c)
            .map(|(&s, _)| s)
            .collect()
    };
    let (tz, tx, ty) = (midranks(scores), midranks(&class(1)), midranks(&class(0)));
    let (m, n) = (positives as f64, negatives as f64);
    let (mut v10, mut v01) = (Vec::with_capacity(positives), Vec::with_capacity(negatives));
    for (&t, &l) in tz.iter().zip(labels) {
        if l == 1 {
            v10.push((t - tx[v10.len()]) / n);
        } else {
            v01.push(1.0 - (t - ty[v01.len()]) / m);
        }
    }
    let auroc = auroc(scores, labels).ok_or(counts)?;
    Ok(Placements { v10, v01, auroc })
}

/// Sample covariance (divisor len − 1) of two equally long vectors around given means.
fn cov(a: &[f64], mean_a: f64, b: &[f64], mean_b: f64) -> f64 {
    let s: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - mean_a) * (y - mean_b))
        .sum();
    s / (a.len() - 1) as f64
}

impl Placements {
    fn variance(&self) -> f64 {
        let t = self.auroc;
        cov(&self.v10, t, &self.v10, t) / self.v10.len() as f64
            + cov(&self.v01, t, &self.v01, t) / self.v01.len() as f64
    }

    fn estimate(&self) -> AurocEstimate {
        let variance = self.variance();
        let se = variance.sqrt();
        AurocEstimate {
            auroc: self.auroc,
            variance,
            se,
            ci95: Interval::around(self.auroc, Z_95 * se, 0.0, 1.0),
            positives: self.v10.len(),
            negatives: self.v01.len(),
        }
    }
}

/// AUROC of `scores` against 0/1 `labels` with its DeLong variance and 95 % interval.
pub fn delong(scores: &[f64], labels: &[u8]) -> Result<AurocEstimate> {
    Ok(placements(scores, labels)?.estimate())
}

/// Two AUROCs from independent samples (the arms of an A/B experiment): the variances add,
/// z = (θ₂ − θ₁)/√(v₁ + v₂).
pub fn compare_unpaired(first: &AurocEstimate, second: &AurocEstimate) -> Result<Comparison> {
    comparison(second.auroc - first.auroc, first.variance + second.variance)
}

/// Two score vectors on the same labelled rows (champion vs candidate on one validation set):
/// Var(θ₂ − θ₁) = v₁ + v₂ − 2·Cov(θ₁, θ₂). It is computed as S10 and S01 of the placement
/// differences V₂ − V₁, which equals that expression and cannot go negative by rounding.
pub fn compare_paired(first: &[f64], second: &[f64], labels: &[u8]) -> Result<PairedComparison> {
    if first.len() != second.len() {
        return Err(StatsError::LengthMismatch {
            what: "first and second scores",
            left: first.len(),
            right: second.len(),
        });
    }
    let (a, b) = (placements(first, labels)?, placements(second, labels)?);
    let (m, n) = (a.v10.len() as f64, a.v01.len() as f64);
    let covariance =
        cov(&a.v10, a.auroc, &b.v10, b.auroc) / m + cov(&a.v01, a.auroc, &b.v01, b.auroc) / n;
    let diff = |x: &[f64], y: &[f64]| -> Vec<f64> { x.iter().zip(y).map(|(p, q)| q - p).collect() };
    let difference = b.auroc - a.auroc;
    let (d10, d01) = (diff(&a.v10, &b.v10), diff(&a.v01, &b.v01));
    let variance =
        cov(&d10, difference, &d10, difference) / m + cov(&d01, difference, &d01, difference) / n;
    Ok(PairedComparison {
        first: a.estimate(),
        second: b.estimate(),
        covariance,
        comparison: comparison(difference, variance)?,
    })
}

/// z-test of a difference with a known variance. Variance 0: no difference → z = 0, p = 1 (e.g.
/// a model against itself); a difference → [`StatsError::ZeroVariance`].
fn comparison(difference: f64, variance: f64) -> Result<Comparison> {
    let se = variance.sqrt();
    let z = if variance > 0.0 {
        difference / se
    } else if difference == 0.0 {
        0.0
    } else {
        return Err(StatsError::ZeroVariance { difference });
    };
    Ok(Comparison {
        difference,
        variance,
        se,
        z,
        p_value: two_sided_p(z),
        ci95: Interval::around(difference, Z_95 * se, -1.0, 1.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ml::stats::tests::{assert_close, assert_rel, f64s};

    // Hand-checked case, m = 3 positives, n = 3 negatives.
    //
    // A: X = (0.9, 0.6, 0.4), Y = (0.6, 0.3, 0.1)
    //   V10: 0.9 beats all → 1; 0.6 ties 0.6, beats 0.3, 0.1 → 2.5/3 = 5/6; 0.4 → 2/3
    //   V01: 0.6 → (1 + ½ + 0)/3 = 1/2; 0.3 → 1; 0.1 → 1        θ = 5/6 (mean of either)
    //   S10 = ((1/6)² + 0 + (1/6)²)/2 = 1/36
    //   S01 = ((1/3)² + (1/6)² + (1/6)²)/2 = (6/36)/2 = 1/12
    //   Var = S10/3 + S01/3 = (1/36 + 3/36)/3 = 1/27
    // B: X = (0.7, 0.2, 0.5), Y = (0.4, 0.6, 0.1) on the same rows
    //   V10: 1, 1/3, 2/3; V01: 2/3, 1/3, 1                       θ = 2/3
    //   S10 = S01 = ((1/3)² + (1/3)²)/2 = 1/9; Var = 1/27 + 1/27 = 2/27
    // Cov: S10ᴬᴮ = ((1/6)(1/3) + 0·(−1/3) + (−1/6)·0)/2 = 1/36
    //      S01ᴬᴮ = ((−1/3)·0 + (1/6)(−1/3) + (1/6)(1/3))/2 = 0 → Cov = (1/36)/3 = 1/108
    // Paired: Var(θB − θA) = 1/27 + 2/27 − 2/108 = 5/54, Δ = −1/6, z² = (1/36)/(5/54) = 0.3
    // Unpaired: Var = 1/27 + 2/27 = 1/9, se = 1/3, z = −1/2
    const LABELS: [u8; 6] = [1, 0, 1, 0, 1, 0];
    const A: [f64; 6] = [0.9, 0.6, 0.6, 0.3, 0.4, 0.1];
    const B: [f64; 6] = [0.7, 0.4, 0.2, 0.6, 0.5, 0.1];

    #[test]
    fn delong_hand_case() {
        let p = placements(&A, &LABELS).unwrap();
        for (got, want) in p.v10.iter().zip([1.0, 5.0 / 6.0, 2.0 / 3.0]) {
            assert_close("V10", *got, want, 1e-15);
        }
        for (got, want) in p.v01.iter().zip([0.5, 1.0, 1.0]) {
            assert_close("V01", *got, want, 1e-15);
        }
        let a = delong(&A, &LABELS).unwrap();
        assert_close("θA", a.auroc, 5.0 / 6.0, 1e-15);
        assert_close("VarA", a.variance, 1.0 / 27.0, 1e-15);
        assert_close("ci low", a.ci95.low, 5.0 / 6.0 - Z_95 / 27f64.sqrt(), 1e-15);
        assert_eq!(a.ci95.high, 1.0, "clipped");
        assert_eq!((a.positives, a.negatives), (3, 3));
        let b = delong(&B, &LABELS).unwrap();
        assert_close("θB", b.auroc, 2.0 / 3.0, 1e-15);
        assert_close("VarB", b.variance, 2.0 / 27.0, 1e-15);

        let paired = compare_paired(&A, &B, &LABELS).unwrap();
        assert_close("cov", paired.covariance, 1.0 / 108.0, 1e-15);
        let c = &paired.comparison;
        assert_close("Δ", c.difference, -1.0 / 6.0, 1e-15);
        assert_close("Var Δ", c.variance, 5.0 / 54.0, 1e-15);
        assert_close("z", c.z, -(0.3f64.sqrt()), 1e-14);
        assert_close("p", c.p_value, two_sided_p(0.3f64.sqrt()), 1e-14);

        let u = compare_unpaired(&a, &b).unwrap();
        assert_close("Var unpaired", u.variance, 1.0 / 9.0, 1e-15);
        assert_close("z unpaired", u.z, -0.5, 1e-14);
        // 2·norm.sf(0.5), SciPy
        assert_rel("p unpaired", u.p_value, 0.617_075_077_451_973_8, 1e-13);
        assert_close("ci", u.ci95.low, -1.0 / 6.0 - Z_95 / 3.0, 1e-15);
    }

    #[test]
    fn degenerate_inputs_are_typed_errors() {
        let counts = |p, n| StatsError::ClassCounts {
            positives: p,
            negatives: n,
            need: 2,
        };
        assert_eq!(delong(&[0.1, 0.2], &[1, 1]), Err(counts(2, 0)));
        assert_eq!(delong(&[0.1, 0.2, 0.3], &[1, 0, 0]), Err(counts(1, 2)));
        assert_eq!(delong(&[], &[]), Err(StatsError::Empty { what: "scores" }));
        assert_eq!(
            delong(&[0.1, f64::NAN, 0.2, 0.3], &[1, 0, 1, 0]),
            Err(StatsError::NonFinite {
                what: "scores",
                index: 1
            })
        );
        assert_eq!(
            delong(&[0.1, 0.2, 0.3, 0.4], &[1, 0, 2, 0]),
            Err(StatsError::BadLabel { index: 2, value: 2 })
        );
        assert!(matches!(
            delong(&[0.1], &[1, 0]),
            Err(StatsError::LengthMismatch { .. })
        ));
        assert!(matches!(
            compare_paired(&A, &B[..5], &LABELS),
            Err(StatsError::LengthMismatch { .. })
        ));
        assert!(delong(&[0.1, 0.2], &[1, 1])
            .unwrap_err()
            .is_insufficient_data());
    }

    #[test]
    fn zero_variance() {
        // perfect separation: every placement is 1 → variance 0, interval [1, 1]
        let (s, l) = ([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]);
        let e = delong(&s, &l).unwrap();
        assert_eq!(
            (e.auroc, e.variance, e.ci95),
            (
                1.0,
                0.0,
                Interval {
                    low: 1.0,
                    high: 1.0
                }
            )
        );
        // against itself, or a monotone transform of itself: Δ = 0, p = 1
        let same = compare_paired(&s, &s.map(|x| 3.0 * x + 1.0), &l).unwrap();
        assert_eq!((same.comparison.z, same.comparison.p_value), (0.0, 1.0));
        // perfect vs perfectly reversed: Δ = −1 with variance 0 → no test statistic
        let reversed = s.map(|x| -x);
        assert_eq!(
            compare_paired(&s, &reversed, &l),
            Err(StatsError::ZeroVariance { difference: -1.0 })
        );
        let r = delong(&reversed, &l).unwrap();
        assert_eq!(
            compare_unpaired(&e, &r),
            Err(StatsError::ZeroVariance { difference: -1.0 })
        );
        // all tied: θ = ½, every placement ½ → variance 0
        let t = delong(&[0.5; 4], &l).unwrap();
        assert_eq!((t.auroc, t.variance), (0.5, 0.0));
    }

    fn labels(v: &serde_json::Value) -> Vec<u8> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u8)
            .collect()
    }

    /// Against a direct O(n·m) NumPy computation of the placements and scikit-learn's
    /// `roc_auc_score`; statistics to 1e-12, p-values to 1e-12 relative (erfc here, SciPy's
    /// `norm.sf` there).
    #[test]
    fn delong_against_numpy_fixtures() {
        let doc: serde_json::Value =
            serde_json::from_str(include_str!("../../../tests/fixtures/stats/delong.json"))
                .unwrap();
        let mut single = Vec::new();
        for c in doc["single"].as_array().unwrap() {
            let e = delong(&f64s(&c["scores"]), &labels(&c["labels"])).unwrap();
            assert_close("auroc", e.auroc, c["auroc"].as_f64().unwrap(), 1e-12);
            assert_close(
                "sklearn",
                e.auroc,
                c["auroc_sklearn"].as_f64().unwrap(),
                1e-12,
            );
            assert_close(
                "variance",
                e.variance,
                c["variance"].as_f64().unwrap(),
                1e-12,
            );
            single.push(e);
        }
        for c in doc["unpaired"].as_array().unwrap() {
            let (i, j) = (c["first"].as_u64().unwrap(), c["second"].as_u64().unwrap());
            let u = compare_unpaired(&single[i as usize], &single[j as usize]).unwrap();
            assert_close(
                "difference",
                u.difference,
                c["difference"].as_f64().unwrap(),
                1e-12,
            );
            assert_close(
                "variance",
                u.variance,
                c["variance"].as_f64().unwrap(),
                1e-12,
            );
            assert_close("z", u.z, c["z"].as_f64().unwrap(), 1e-12);
            assert_rel("p", u.p_value, c["p_value"].as_f64().unwrap(), 1e-12);
        }
        for c in doc["paired"].as_array().unwrap() {
            let l = labels(&c["labels"]);
            let p = compare_paired(&f64s(&c["first"]), &f64s(&c["second"]), &l).unwrap();
            let num = |k: &str| c[k].as_f64().unwrap();
            assert_close("auroc 1", p.first.auroc, num("auroc_first"), 1e-12);
            assert_close("auroc 2", p.second.auroc, num("auroc_second"), 1e-12);
            assert_close("var 1", p.first.variance, num("variance_first"), 1e-12);
            assert_close("var 2", p.second.variance, num("variance_second"), 1e-12);
            assert_close("cov", p.covariance, num("covariance"), 1e-12);
            let c2 = &p.comparison;
            assert_close("variance", c2.variance, num("variance"), 1e-12);
            // the difference-placement form equals v1 + v2 − 2·cov
            let v = p.first.variance + p.second.variance - 2.0 * p.covariance;
            assert_close("v1+v2-2cov", c2.variance, v, 1e-12);
            assert_close("z", c2.z, num("z"), 1e-12);
            assert_rel("p", c2.p_value, num("p_value"), 1e-12);
        }
    }
}
