//! Population stability index of a feature against its training reference.
//!
//! **Bins.** From the reference sample: the quantiles i/bins, i = 1..bins−1 (NumPy's default
//! `'linear'` rule, Hyndman & Fan type 7), sorted and with repeated values merged, are the
//! edges e₁ < … < e_k; the bins are (−∞, e₁], (e₁, e₂], …, (e_k, +∞), so a value equal to an
//! edge falls in the bin below it (NumPy `searchsorted(edges, x, side='left')`). Heavy ties
//! (say half the reference at 0) thus yield fewer, wider bins instead of empty ones.
//!
//! **PSI.** With reference proportions e and actual proportions a per bin, both floored at
//! [`EPSILON`] (not renormalised) so an empty bin stays finite:
//! PSI = Σ (aᵢ − eᵢ)·ln(aᵢ/eᵢ), ≥ 0. Common reading: < 0.1 stable, 0.1–0.25 moderate shift,
//! > 0.25 major shift.
//!
//! The reference can be kept compact as a [`Reference`] (edges + proportions + n per feature),
//! the form a model card stores; [`psi`] takes one, [`psi_samples`] builds it first.

use serde::{Deserialize, Serialize};

use super::{check_sample, Result, StatsError};

/// Floor of a bin proportion (0.01 %) before the logarithm.
pub const EPSILON: f64 = 1e-4;

/// The default number of reference-quantile bins.
pub const DEFAULT_BINS: usize = 10;

/// A feature's training reference: bin edges and the share of the reference sample in each of
/// the `edges.len() + 1` bins (raw, not floored), from `n` reference values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Reference {
    pub edges: Vec<f64>,
    pub proportions: Vec<f64>,
    pub n: u64,
}

impl Reference {
    /// Edges from the sample's quantiles (see the module doc), proportions of the sample.
    pub fn from_sample(sample: &[f64], bins: usize) -> Result<Reference> {
        check_sample("reference sample", sample)?;
        if bins < 2 {
            return Err(StatsError::Invalid {
                what: "bins",
                reason: format!("{bins}: need at least 2"),
            });
        }
        let mut sorted = sample.to_vec();
        sorted.sort_by(f64::total_cmp);
        let mut edges: Vec<f64> = (1..bins)
            .map(|i| quantile_linear(&sorted, i as f64 / bins as f64))
            .collect();
        edges.sort_by(f64::total_cmp);
        edges.dedup_by(|a, b| a == b);
        Ok(Reference {
            proportions: proportions(&edges, sample),
            edges,
            n: sample.len() as u64,
        })
    }

    /// For a stored reference: edges finite and strictly increasing, one proportion per bin,
    /// each in [0, 1], summing to 1 (±1e-9), n > 0.
    pub fn validate(&self) -> Result<()> {
        let bad = |reason: String| {
            Err(StatsError::Invalid {
                what: "reference",
                reason,
            })
        };
        if self.n == 0 {
            return bad("n is 0".into());
        }
        if let Some(i) = self.edges.iter().position(|e| !e.is_finite()) {
            return bad(format!("edge {i} is not finite"));
        }
        if let Some(i) = self.edges.windows(2).position(|w| w[0] >= w[1]) {
            return bad(format!("edges {i} and {} are not increasing", i + 1));
        }
        if self.proportions.len() != self.edges.len() + 1 {
            return bad(format!(
                "{} proportions for {} edges (need edges + 1)",
                self.proportions.len(),
                self.edges.len()
            ));
        }
        if let Some(i) = self
            .proportions
            .iter()
            .position(|p| !(0.0..=1.0).contains(p))
        {
            return bad(format!("proportion {i} is not in [0, 1]"));
        }
        let total: f64 = self.proportions.iter().sum();
        if (total - 1.0).abs() > 1e-9 {
            return bad(format!("proportions sum to {total}, not 1"));
        }
        Ok(())
    }
}

/// PSI of `actual` against a (validated) stored reference.
pub fn psi(reference: &Reference, actual: &[f64]) -> Result<f64> {
    reference.validate()?;
    check_sample("actual sample", actual)?;
    let a = proportions(&reference.edges, actual);
    Ok(reference
        .proportions
        .iter()
        .zip(&a)
        .map(|(&e, &a)| {
            let (e, a) = (e.max(EPSILON), a.max(EPSILON));
            (a - e) * (a / e).ln()
        })
        .sum())
}

/// PSI of `actual` against the reference sample `expected`, binned into `bins` quantile bins.
pub fn psi_samples(expected: &[f64], actual: &[f64], bins: usize) -> Result<f64> {
    psi(&Reference::from_sample(expected, bins)?, actual)
}

/// Share of `xs` in each of the `edges.len() + 1` bins.
fn proportions(edges: &[f64], xs: &[f64]) -> Vec<f64> {
    let mut counts = vec![0u64; edges.len() + 1];
    for &x in xs {
        counts[edges.partition_point(|&e| e < x)] += 1;
    }
    let n = xs.len() as f64;
    counts.iter().map(|&c| c as f64 / n).collect()
}

/// NumPy's `quantile(method='linear')` on a sorted non-empty slice, with its interpolation
/// (`_lerp`: from the upper neighbour when the weight is ≥ ½) so edges match it bit for bit and
/// a tie run gives its own value exactly.
pub(crate) fn quantile_linear(sorted: &[f64], q: f64) -> f64 {
    let last = sorted.len() - 1;
    let h = last as f64 * q;
    if h >= last as f64 {
        return sorted[last];
    }
    let i = h.floor();
    let t = h - i;
    let (a, b) = (sorted[i as usize], sorted[i as usize + 1]);
    let d = b - a;
    if !d.is_finite() {
        // b − a overflowed (values near ±f64::MAX): the weighted form cannot
        a * (1.0 - t) + b * t
    } else if t >= 0.5 {
        b - d * (1.0 - t)
    } else {
        a + d * t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ml::stats::tests::{assert_close, f64s};

    #[test]
    fn psi_hand_case() {
        // reference 1..=10, 2 bins: median 5.5 → bins (−∞, 5.5], (5.5, ∞), e = (½, ½)
        let r = Reference::from_sample(&(1..=10).map(f64::from).collect::<Vec<_>>(), 2).unwrap();
        assert_eq!(
            (r.edges.as_slice(), r.proportions.as_slice()),
            (&[5.5][..], &[0.5, 0.5][..])
        );
        // actual: 3 of 4 below → a = (¾, ¼): PSI = (¼)·ln(3/2) + (−¼)·ln(1/2) = ¼·ln 3
        let p = psi(&r, &[1.0, 2.0, 5.5, 9.0]).unwrap();
        assert_close("psi", p, 0.25 * 3f64.ln(), 1e-15);
        // same distribution → 0
        assert_eq!(psi(&r, &[5.0, 6.0]).unwrap(), 0.0);
        // an empty bin uses EPSILON: a = (1, 0) → (½)·ln(2) + (ε − ½)·ln(2ε)
        let p = psi(&r, &[1.0]).unwrap();
        let want = 0.5 * 2f64.ln() + (EPSILON - 0.5) * (2.0 * EPSILON).ln();
        assert_close("psi empty bin", p, want, 1e-15);
    }

    #[test]
    fn ties_merge_edges() {
        // 7 zeros and 1..=3: the deciles up to 0.6 are all 0 → one edge 0
        let mut s = vec![0.0; 7];
        s.extend([1.0, 2.0, 3.0]);
        let r = Reference::from_sample(&s, 10).unwrap();
        assert_eq!(r.edges[0], 0.0);
        assert!(r.edges.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(r.proportions[0], 0.7);
        r.validate().unwrap();
        // constant reference: one edge, everything in the first bin
        let c = Reference::from_sample(&[2.0; 5], 10).unwrap();
        assert_eq!((c.edges, c.proportions), (vec![2.0], vec![1.0, 0.0]));
    }

    #[test]
    fn bad_input_and_stored_references() {
        assert_eq!(
            psi_samples(&[], &[1.0], 10),
            Err(StatsError::Empty {
                what: "reference sample"
            })
        );
        assert!(matches!(
            psi_samples(&[1.0], &[f64::NAN], 10),
            Err(StatsError::NonFinite { .. })
        ));
        assert!(matches!(
            psi_samples(&[1.0], &[1.0], 1),
            Err(StatsError::Invalid { what: "bins", .. })
        ));
        let good = Reference {
            edges: vec![0.0, 1.0],
            proportions: vec![0.25, 0.5, 0.25],
            n: 4,
        };
        assert_eq!(psi(&good, &[-1.0, 0.5, 0.5, 2.0]), Ok(0.0));
        let broken = [
            Reference {
                n: 0,
                ..good.clone()
            },
            Reference {
                edges: vec![1.0, 0.0],
                ..good.clone()
            },
            Reference {
                edges: vec![0.0, f64::NAN],
                ..good.clone()
            },
            Reference {
                proportions: vec![0.5, 0.5],
                ..good.clone()
            },
            Reference {
                proportions: vec![0.5, 0.5, 0.5],
                ..good.clone()
            },
            Reference {
                proportions: vec![-0.5, 1.0, 0.5],
                ..good.clone()
            },
        ];
        for r in broken {
            assert!(
                matches!(
                    psi(&r, &[0.0]),
                    Err(StatsError::Invalid {
                        what: "reference",
                        ..
                    })
                ),
                "{r:?}"
            );
        }
        // stored as JSON and back
        let json = serde_json::to_string(&good).unwrap();
        assert_eq!(serde_json::from_str::<Reference>(&json).unwrap(), good);
        // values near f64::MAX stay finite
        let r = Reference::from_sample(&[-f64::MAX, f64::MAX], 2).unwrap();
        assert!(r.edges.iter().all(|e| e.is_finite()));
    }

    /// Against NumPy (`np.quantile`, `np.unique`, `np.searchsorted`, the same floor): edges and
    /// proportions exactly, PSI to 1e-12 (the sum's order may differ).
    #[test]
    fn psi_against_numpy_fixtures() {
        let doc: serde_json::Value =
            serde_json::from_str(include_str!("../../../tests/fixtures/stats/psi.json")).unwrap();
        assert_eq!(doc["epsilon"].as_f64().unwrap(), EPSILON);
        let cases = doc["cases"].as_array().unwrap();
        assert!(cases.len() >= 5);
        for c in cases {
            let name = c["name"].as_str().unwrap();
            let bins = c["bins"].as_u64().unwrap() as usize;
            let (reference, actual) = (f64s(&c["reference"]), f64s(&c["actual"]));
            let r = Reference::from_sample(&reference, bins).unwrap();
            assert_eq!(r.edges, f64s(&c["edges"]), "{name} edges");
            assert_eq!(r.proportions, f64s(&c["expected_proportions"]), "{name}");
            assert_eq!(r.n, reference.len() as u64);
            assert_eq!(
                proportions(&r.edges, &actual),
                f64s(&c["actual_proportions"]),
                "{name}"
            );
            let want = c["psi"].as_f64().unwrap();
            assert_close(name, psi(&r, &actual).unwrap(), want, 1e-12);
            assert_close(
                name,
                psi_samples(&reference, &actual, bins).unwrap(),
                want,
                1e-12,
            );
        }
    }
}
