//! Two-sample Kolmogorov–Smirnov test (two-sided), for feature drift.
//!
//! **Statistic.** D = sup |F_a(x) − F_b(x)| over the empirical CDFs, evaluated exactly on the
//! pooled sorted values: at each distinct value both ECDFs first step past *all* observations
//! equal to it, then they are compared, so ties (discrete features) never produce a spurious
//! gap. The gaps are kept as integers |i·m − j·n| and divided once by n·m, so D is the exact
//! rational correctly rounded: bit for bit SciPy's `ks_2samp(a, b).statistic` in its default
//! (exact-mode) computation h/lcm(n, m); its `method='asymp'` subtracts floats and can differ
//! by rounding.
//!
//! **p-value.** The asymptotic Kolmogorov distribution with Stephens' (1970) finite-sample
//! correction, as Numerical Recipes' `probks`: with nₑ = nm/(n + m),
//! λ = (√nₑ + 0.12 + 0.11/√nₑ)·D and p = Q(λ) = 2·Σₖ₌₁^∞ (−1)^(k−1)·e^(−2k²λ²), clamped to
//! [0, 1]. Q is SciPy's `scipy.special.kolmogorov(λ)`; the fixtures compare the two to 1e-12
//! relative.
//!
//! **Relation to SciPy.** `ks_2samp`'s p-value is another one: `method='exact'` (the default
//! `'auto'` when max(n, m) ≤ 10 000) computes the exact permutation distribution of D for
//! untied data; `method='asymp'` uses `kstwo.sf(D, round(nₑ))`, the exact one-sample
//! distribution at an integer effective size. On the fixtures (n, m from 8 to 130) ours differs
//! from `'exact'` by up to about 20 % relative (the fixture test pins 15–25 %): 0.200 vs 0.239
//! at n = m = 30, 2.2e-8 vs 2.7e-8 at n = m = 100; more on tiny samples (n = 3, m = 2, D = 1:
//! 0.063 vs 0.2). `ks.json` keeps SciPy's two values beside ours. We keep the series because it
//! costs O(1) for any n, m (drift windows are large) and is the textbook form. With ties every
//! variant treats the data as continuous, which makes the test conservative.

use serde::{Deserialize, Serialize};

use super::{check_sample, Result};

/// Statistic and p-value of a two-sample test, with the sample sizes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct KsTest {
    pub statistic: f64,
    pub p_value: f64,
    pub n: usize,
    pub m: usize,
}

/// Two-sided two-sample KS test of `a` (size n) against `b` (size m); both non-empty, finite.
pub fn ks_2samp(a: &[f64], b: &[f64]) -> Result<KsTest> {
    check_sample("first sample", a)?;
    check_sample("second sample", b)?;
    let statistic = ks_statistic(a, b);
    Ok(KsTest {
        statistic,
        p_value: ks_p_value(statistic, a.len(), b.len()),
        n: a.len(),
        m: b.len(),
    })
}

/// One-sample KS test of `a` against the uniform distribution on [0, 1] (is a calibrated
/// score uniform on the traffic it was calibrated for?): D = maxᵢ max(i/n − u₍ᵢ₎, u₍ᵢ₎ −
/// (i−1)/n) over the sorted sample, p-value by the same series with Stephens' correction at
/// nₑ = n (the one-sample form of [`ks_p_value`]). `m` is 0 in the answer.
pub fn ks_uniform(a: &[f64]) -> Result<KsTest> {
    check_sample("sample", a)?;
    let mut u: Vec<f64> = a.iter().map(|v| v.clamp(0.0, 1.0)).collect();
    u.sort_by(f64::total_cmp);
    let n = u.len() as f64;
    let statistic = u
        .iter()
        .enumerate()
        .map(|(i, &v)| ((i + 1) as f64 / n - v).max(v - i as f64 / n))
        .fold(0.0, f64::max);
    let root = n.sqrt();
    Ok(KsTest {
        statistic,
        p_value: kolmogorov_sf((root + 0.12 + 0.11 / root) * statistic),
        n: u.len(),
        m: 0,
    })
}

/// D on two non-empty finite samples. The gap at a point is |i/n − j/m| = |i·m − j·n|/(n·m):
/// kept in integers, so the only rounding is the final division.
fn ks_statistic(a: &[f64], b: &[f64]) -> f64 {
    let sorted = |s: &[f64]| {
        let mut v = s.to_vec();
        v.sort_by(f64::total_cmp);
        v
    };
    let (x, y) = (sorted(a), sorted(b));
    let (n, m) = (x.len(), y.len());
    let (mut i, mut j, mut gap) = (0usize, 0usize, 0u128);
    // Once one sample is used up its ECDF is 1 and the gap only shrinks: stop there.
    while i < n && j < m {
        let v = if x[i] <= y[j] { x[i] } else { y[j] };
        while i < n && x[i] == v {
            i += 1;
        }
        while j < m && y[j] == v {
            j += 1;
        }
        gap = gap.max((i as u128 * m as u128).abs_diff(j as u128 * n as u128));
    }
    gap as f64 / (n as u128 * m as u128) as f64
}

/// Q(λ) for D observed with sizes n and m (Stephens' corrected λ, see the module doc).
pub fn ks_p_value(d: f64, n: usize, m: usize) -> f64 {
    let ne = (n as f64 * m as f64) / (n + m) as f64;
    let root = ne.sqrt();
    kolmogorov_sf((root + 0.12 + 0.11 / root) * d)
}

/// Survival function of the Kolmogorov distribution, Q(λ) = 1 − K(λ), in [0, 1].
///
/// For λ ≥ 1 the alternating series 2·Σ (−1)^(k−1)·e^(−2k²λ²); below, where that series needs
/// many terms, 1 − K(λ) with the equivalent series K(λ) = (√(2π)/λ)·Σ e^(−(2k−1)²π²/(8λ²)).
/// Either converges to double precision within 5 terms on its side of 1.
pub fn kolmogorov_sf(lambda: f64) -> f64 {
    // K(0.1) < 1e-50: Q is 1 in f64 there; also catches λ ≤ 0 (D = 0) and NaN.
    if lambda.is_nan() || lambda <= 0.1 {
        return 1.0;
    }
    let series = |term: &dyn Fn(f64) -> f64, alternating: bool| {
        let (mut sum, mut sign) = (0.0f64, 1.0);
        for k in 1..=100 {
            let t = term(k as f64);
            sum += sign * t;
            if t <= 1e-17 * sum.abs() {
                break;
            }
            if alternating {
                sign = -sign;
            }
        }
        sum
    };
    let q = if lambda >= 1.0 {
        2.0 * series(&|k| (-2.0 * k * k * lambda * lambda).exp(), true)
    } else {
        let f = -std::f64::consts::PI * std::f64::consts::PI / (8.0 * lambda * lambda);
        let s = series(&|k| (f * (2.0 * k - 1.0).powi(2)).exp(), false);
        1.0 - (2.0 * std::f64::consts::PI).sqrt() / lambda * s
    };
    q.clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ml::stats::tests::{assert_close, assert_rel, f64s};
    use crate::ml::stats::StatsError;

    #[test]
    fn ks_uniform_by_hand() {
        // Sorted 0.1, 0.5, 0.9: gaps 1/3−0.1, 0.1−0; 2/3−0.5, 0.5−1/3; 1−0.9, 0.9−2/3 → 0.2333….
        let t = ks_uniform(&[0.9, 0.1, 0.5]).unwrap();
        assert_close("D", t.statistic, 0.9 - 2.0 / 3.0, 1e-12);
        assert_eq!((t.n, t.m), (3, 0));
        // Evenly spread points are uniform (D = 1/(2n)); all at 0 are not (D = 1).
        let even: Vec<f64> = (0..1000).map(|i| (i as f64 + 0.5) / 1000.0).collect();
        let t = ks_uniform(&even).unwrap();
        assert_close("D", t.statistic, 0.0005, 1e-12);
        assert!(t.p_value > 0.99);
        let t = ks_uniform(&[0.0; 100]).unwrap();
        assert_eq!(t.statistic, 1.0);
        assert!(t.p_value < 1e-12);
        assert!(ks_uniform(&[]).is_err() && ks_uniform(&[f64::NAN]).is_err());
    }

    #[test]
    fn ks_hand_cases() {
        // a = {1, 2, 2, 3}, b = {2, 3, 3, 4}: at 1: 1/4 − 0; at 2: 3/4 − 1/4 = 1/2 (both step
        // past the three 2s first); at 3: 1 − 3/4; so D = 1/2
        let t = ks_2samp(&[1.0, 2.0, 2.0, 3.0], &[2.0, 3.0, 3.0, 4.0]).unwrap();
        assert_eq!(t.statistic, 0.5);
        // nₑ = 2, λ = (√2 + 0.12 + 0.11/√2)·0.5
        let lambda = (2f64.sqrt() + 0.12 + 0.11 / 2f64.sqrt()) * 0.5;
        assert_eq!(t.p_value, kolmogorov_sf(lambda));
        assert_eq!((t.n, t.m), (4, 4));
        // identical samples in another order: D = 0, p = 1
        let same = ks_2samp(&[3.0, 1.0, 2.0], &[1.0, 2.0, 3.0]).unwrap();
        assert_eq!((same.statistic, same.p_value), (0.0, 1.0));
        // disjoint: D = 1
        assert_eq!(ks_2samp(&[1.0], &[2.0, 3.0]).unwrap().statistic, 1.0);
        // −0.0 and 0.0 are one value
        assert_eq!(ks_2samp(&[-0.0], &[0.0]).unwrap().statistic, 0.0);
    }

    #[test]
    fn ks_bad_input() {
        assert_eq!(
            ks_2samp(&[], &[1.0]),
            Err(StatsError::Empty {
                what: "first sample"
            })
        );
        assert_eq!(
            ks_2samp(&[1.0], &[0.0, f64::INFINITY]),
            Err(StatsError::NonFinite {
                what: "second sample",
                index: 1
            })
        );
    }

    #[test]
    fn kolmogorov_edges() {
        assert_eq!(kolmogorov_sf(0.0), 1.0);
        assert_eq!(kolmogorov_sf(-1.0), 1.0);
        assert_eq!(kolmogorov_sf(f64::MIN_POSITIVE), 1.0);
        assert_eq!(kolmogorov_sf(100.0), 0.0);
        assert_eq!(kolmogorov_sf(f64::MAX), 0.0);
        // the two series agree where they meet
        let (below, above) = (kolmogorov_sf(1.0 - 1e-12), kolmogorov_sf(1.0));
        assert_close("continuity", below, above, 1e-11);
    }

    /// Against `scipy.stats.ks_2samp(a, b).statistic` (exactly) and the p-value formula
    /// evaluated with `scipy.special.kolmogorov` (1e-12 relative: the same series, summed by two
    /// programs). Also pins how far SciPy's default exact p-value is from ours (module doc).
    #[test]
    fn ks_against_scipy_fixtures() {
        let doc: serde_json::Value =
            serde_json::from_str(include_str!("../../../tests/fixtures/stats/ks.json")).unwrap();
        let cases = doc["cases"].as_array().unwrap();
        assert!(cases.len() >= 10);
        let mut widest = 0.0f64;
        for c in cases {
            let name = c["name"].as_str().unwrap();
            let t = ks_2samp(&f64s(&c["a"]), &f64s(&c["b"])).unwrap();
            assert_eq!(t.statistic, c["statistic"].as_f64().unwrap(), "{name}");
            assert_rel(name, t.p_value, c["p_value"].as_f64().unwrap(), 1e-12);
            if t.n >= 8 && t.m >= 5 {
                let exact = c["scipy_exact_p"].as_f64().unwrap();
                widest = widest.max((t.p_value - exact).abs() / exact);
            }
        }
        assert!(
            (0.15..0.25).contains(&widest),
            "ours vs SciPy exact: {widest}"
        );
        for c in doc["kolmogorov"].as_array().unwrap() {
            let lambda = c["lambda"].as_f64().unwrap();
            let q = c["q"].as_f64().unwrap();
            assert_rel(&format!("Q({lambda})"), kolmogorov_sf(lambda), q, 1e-12);
        }
    }
}
