//! Fixture helpers shared by the submodules' tests, and property tests over hostile input:
//! every function returns a typed error or a finite result in its range, never a panic or NaN.

use proptest::prelude::*;

use super::delong::{compare_paired, compare_unpaired, delong};
use super::interval::wilson;
use super::ks::ks_2samp;
use super::multiple::bh_adjust;
use super::psi::psi_samples;
use super::StatsError;

/// `|a − b| ≤ tol · max(1, |b|)`: absolute near zero, relative elsewhere.
pub fn assert_close(what: &str, a: f64, b: f64, tol: f64) {
    assert!(
        (a - b).abs() <= tol * b.abs().max(1.0),
        "{what}: {a} != {b} (tol {tol})"
    );
}

/// Relative tolerance for p-values, also meaningful for p ≪ 1.
pub fn assert_rel(what: &str, a: f64, b: f64, tol: f64) {
    assert!(
        (a - b).abs() <= tol * b.abs() || (a - b).abs() <= 1e-300,
        "{what}: {a} != {b} (relative tol {tol})"
    );
}

pub fn f64s(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

/// Any f64 (NaN, ±∞, subnormals, ±0 included) or a small integer, so ties are common.
fn value() -> impl Strategy<Value = f64> {
    prop_oneof![
        3 => (-3i8..4).prop_map(f64::from),
        2 => -1e3f64..1e3,
        1 => prop::num::f64::ANY,
        1 => prop::sample::select(vec![f64::MAX, -f64::MAX, f64::MIN_POSITIVE, -0.0]),
    ]
}

fn sample() -> impl Strategy<Value = Vec<f64>> {
    prop::collection::vec(value(), 0..40)
}

fn in_unit(x: f64) -> bool {
    (0.0..=1.0).contains(&x)
}

/// A NaN or ∞ in the input must be reported as such, not as something else.
fn non_finite_reported<T>(input: &[&[f64]], r: &Result<T, StatsError>) -> bool {
    let bad = input.iter().any(|s| s.iter().any(|x| !x.is_finite()));
    !bad || r.is_err()
}

proptest! {
    #[test]
    fn delong_is_total(
        rows in prop::collection::vec((value(), value(), 0u8..3), 0..40),
    ) {
        let a: Vec<f64> = rows.iter().map(|r| r.0).collect();
        let b: Vec<f64> = rows.iter().map(|r| r.1).collect();
        let labels: Vec<u8> = rows.iter().map(|r| r.2 % 2).collect();
        let r = delong(&a, &labels);
        prop_assert!(non_finite_reported(&[&a], &r));
        if let Ok(e) = &r {
            prop_assert!(in_unit(e.auroc) && e.variance.is_finite() && e.variance >= 0.0);
            prop_assert!(e.ci95.low <= e.auroc && e.auroc <= e.ci95.high);
            prop_assert!(in_unit(e.ci95.low) && in_unit(e.ci95.high));
        }
        if let (Ok(x), Ok(y)) = (&r, &delong(&b, &labels)) {
            if let Ok(c) = compare_unpaired(x, y) {
                prop_assert!(c.z.is_finite() && in_unit(c.p_value));
            }
        }
        if let Ok(p) = compare_paired(&a, &b, &labels) {
            let c = p.comparison;
            prop_assert!(c.z.is_finite() && in_unit(c.p_value) && c.variance >= 0.0);
            prop_assert!(p.covariance.is_finite());
        }
        // labels outside 0/1 are refused
        let raw: Vec<u8> = rows.iter().map(|r| r.2).collect();
        if raw.contains(&2) && a.iter().all(|x| x.is_finite()) {
            prop_assert!(
                matches!(delong(&a, &raw), Err(StatsError::BadLabel { .. })),
                "label 2 accepted"
            );
        }
    }

    #[test]
    fn ks_is_total(a in sample(), b in sample()) {
        let r = ks_2samp(&a, &b);
        prop_assert!(non_finite_reported(&[&a, &b], &r));
        if let Ok(t) = r {
            prop_assert!(in_unit(t.statistic) && in_unit(t.p_value));
        }
    }

    #[test]
    fn psi_is_total(a in sample(), b in sample(), bins in 0usize..15) {
        let r = psi_samples(&a, &b, bins);
        prop_assert!(non_finite_reported(&[&a, &b], &r));
        if let Ok(p) = r {
            prop_assert!(p.is_finite() && p >= 0.0);
        }
    }

    #[test]
    fn bh_is_total(p in prop::collection::vec(
        prop_oneof![3 => 0.0f64..=1.0, 1 => value()], 0..30,
    )) {
        let r = bh_adjust(&p);
        prop_assert!(non_finite_reported(&[&p], &r));
        if let Ok(adj) = r {
            for (&a, &x) in adj.iter().zip(&p) {
                prop_assert!(in_unit(a) && a >= x);
                // monotone: a smaller p never gets a larger adjusted p
                for (&b, &y) in adj.iter().zip(&p) {
                    prop_assert!(x >= y || a <= b);
                }
            }
        }
    }

    #[test]
    fn wilson_is_total(k in any::<u64>(), n in any::<u64>(), z in value()) {
        if let Ok(i) = wilson(k.min(n), n, z) {
            prop_assert!(in_unit(i.low) && in_unit(i.high) && i.low <= i.high);
            let p = k.min(n) as f64 / n as f64;
            prop_assert!(i.low <= p + 1e-12 && p <= i.high + 1e-12);
        }
    }
}
