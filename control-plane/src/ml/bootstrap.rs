//! Confidence intervals by a seeded, stratified percentile bootstrap.
//!
//! Each resample draws, with replacement, as many positives from the positives and as many
//! negatives from the negatives as the sample has (stratified, as pROC's default for AUROC
//! intervals), so every resample has both classes and ranking metrics stay defined; statistics
//! that are still undefined in a resample (e.g. precision when nothing is flagged) skip it, and
//! the interval says how many resamples it rests on. The interval is the (α/2, 1 − α/2)
//! percentile pair with linear interpolation between order statistics (numpy's default,
//! Hyndman–Fan type 7). Same labels, statistic, resamples and seed → the same interval, bit for
//! bit ([`SplitMix64`] drives every draw).
//!
//! Why hand-written: a percentile bootstrap is a loop and a sort; no maintained crate offers a
//! stratified, seeded one over arbitrary statistics without pulling in a statistics framework.

use kakeya_core::pcs_builder::SplitMix64;

/// Resamples of the default intervals.
pub const DEFAULT_RESAMPLES: usize = 1000;
/// Coverage of the default intervals.
pub const DEFAULT_LEVEL: f64 = 0.95;

/// How to bootstrap.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bootstrap {
    pub resamples: usize,
    pub seed: u64,
    /// Coverage, in (0, 1).
    pub level: f64,
}

/// A percentile interval and the number of resamples it was computed from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    pub low: f64,
    pub high: f64,
    /// Resamples in which the statistic was defined.
    pub resamples: usize,
}

/// Uniform index in 0..n by multiply-shift (no modulo bias worth the name for n ≪ 2⁶⁴).
fn below(rng: &mut SplitMix64, n: usize) -> usize {
    ((u128::from(rng.next_u64()) * n as u128) >> 64) as usize
}

/// The `q`-quantile (0 ≤ q ≤ 1) of sorted `v` by linear interpolation (type 7).
pub fn quantile_sorted(v: &[f64], q: f64) -> Option<f64> {
    if v.is_empty() || !(0.0..=1.0).contains(&q) {
        return None;
    }
    let h = q * (v.len() - 1) as f64;
    let lo = h.floor() as usize;
    let hi = (lo + 1).min(v.len() - 1);
    Some(v[lo] + (h - lo as f64) * (v[hi] - v[lo]))
}

impl Bootstrap {
    pub fn new(resamples: usize, seed: u64) -> Self {
        Bootstrap {
            resamples,
            seed,
            level: DEFAULT_LEVEL,
        }
    }

    /// Intervals of the `K` statistics `stat` computes from row indices into `labels` (0/1),
    /// one per statistic; `None` where the statistic was defined in no resample (or there are
    /// no resamples). `progress` gets the number of resamples done (every 50 and at the end).
    pub fn intervals<const K: usize>(
        &self,
        labels: &[u8],
        mut stat: impl FnMut(&[usize]) -> [Option<f64>; K],
        mut progress: impl FnMut(usize),
    ) -> [Option<Interval>; K] {
        let (pos, neg): (Vec<usize>, Vec<usize>) = (0..labels.len()).partition(|&i| labels[i] == 1);
        let mut rng = SplitMix64(self.seed);
        let mut values: [Vec<f64>; K] = std::array::from_fn(|_| Vec::with_capacity(self.resamples));
        let mut idx = Vec::with_capacity(labels.len());
        for b in 0..self.resamples {
            idx.clear();
            for class in [&pos, &neg] {
                for _ in 0..class.len() {
                    idx.push(class[below(&mut rng, class.len())]);
                }
            }
            for (k, v) in stat(&idx).into_iter().enumerate() {
                if let Some(v) = v.filter(|v| v.is_finite()) {
                    values[k].push(v);
                }
            }
            if (b + 1) % 50 == 0 || b + 1 == self.resamples {
                progress(b + 1);
            }
        }
        let alpha = 1.0 - self.level;
        values.map(|mut v| {
            v.sort_by(f64::total_cmp);
            Some(Interval {
                low: quantile_sorted(&v, alpha / 2.0)?,
                high: quantile_sorted(&v, 1.0 - alpha / 2.0)?,
                resamples: v.len(),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ml::metrics::{auroc, brier};

    #[test]
    fn quantiles_interpolate_like_numpy() {
        let v = [1.0, 2.0, 3.0, 4.0];
        // numpy.quantile([1,2,3,4], [0, .25, .5, .975, 1]) = 1, 1.75, 2.5, 3.925, 4
        for (q, want) in [
            (0.0, 1.0),
            (0.25, 1.75),
            (0.5, 2.5),
            (0.975, 3.925),
            (1.0, 4.0),
        ] {
            assert!(
                (quantile_sorted(&v, q).unwrap() - want).abs() < 1e-12,
                "{q}"
            );
        }
        assert_eq!(quantile_sorted(&[], 0.5), None);
        assert_eq!(quantile_sorted(&v, 1.5), None);
        assert_eq!(quantile_sorted(&[7.0], 0.025), Some(7.0));
    }

    /// Noisy scores of 300 rows (1 in 3 positive).
    fn sample() -> (Vec<f64>, Vec<u8>) {
        let mut rng = SplitMix64(42);
        let labels: Vec<u8> = (0..300).map(|i| u8::from(i % 3 == 0)).collect();
        let scores = labels
            .iter()
            .map(|&y| (0.3 * f64::from(y) + 0.7 * rng.next_f64()).min(1.0))
            .collect();
        (scores, labels)
    }

    #[test]
    fn intervals_contain_the_estimate_and_are_reproducible_with_the_seed() {
        let (s, y) = sample();
        let stat = |idx: &[usize]| {
            let ss: Vec<f64> = idx.iter().map(|&i| s[i]).collect();
            let yy: Vec<u8> = idx.iter().map(|&i| y[i]).collect();
            [auroc(&ss, &yy), brier(&ss, &yy), None]
        };
        let b = Bootstrap::new(500, 7);
        let mut calls = Vec::new();
        let [a, br, none] = b.intervals(&y, stat, |n| calls.push(n));
        let (a, br) = (a.unwrap(), br.unwrap());
        assert_eq!(calls.last(), Some(&500));
        assert_eq!(calls.len(), 10);
        assert_eq!(none, None, "never defined: no interval");
        assert_eq!((a.resamples, br.resamples), (500, 500));
        let point = auroc(&s, &y).unwrap();
        assert!(a.low < point && point < a.high, "{a:?} vs {point}");
        let point_b = brier(&s, &y).unwrap();
        assert!(br.low < point_b && point_b < br.high, "{br:?} vs {point_b}");
        // A plausible width for n = 300.
        assert!(a.high - a.low > 0.02 && a.high - a.low < 0.3, "{a:?}");
        // Same seed: the same bits; another seed: another interval.
        let again = b.intervals(&y, stat, |_| {});
        assert_eq!(again[0], Some(a));
        assert_eq!(again[1], Some(br));
        let other = Bootstrap::new(500, 8).intervals(&y, stat, |_| {});
        assert_ne!(other[0], Some(a));
        // Higher coverage, wider interval.
        let wide = Bootstrap { level: 0.99, ..b }.intervals(&y, stat, |_| {})[0].unwrap();
        assert!(wide.low <= a.low && wide.high >= a.high);
    }

    #[test]
    fn every_resample_keeps_the_class_counts() {
        let y = [1, 0, 0, 1, 0, 0, 0];
        let b = Bootstrap::new(200, 1);
        let [n_pos] = b.intervals(
            &y,
            |idx| [Some(idx.iter().filter(|&&i| y[i] == 1).count() as f64)],
            |_| {},
        );
        let n_pos = n_pos.unwrap();
        assert_eq!((n_pos.low, n_pos.high), (2.0, 2.0));
        // No resamples: no interval.
        let [none] = Bootstrap::new(0, 1).intervals(&y, |_| [Some(1.0)], |_| {});
        assert_eq!(none, None);
    }
}
