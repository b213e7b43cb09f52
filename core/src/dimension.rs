//! Recomputation of the fractal dimension D̂ from the box counts (spec §4.1): the Theil–Sen
//! slope of log₂ N_j against log₂ scale, taking the *upper* middle slope (element ⌊M/2⌋), which is
//! what both the reference producer and verifier do and what the golden vectors depend on.

use crate::numfmt::round9_api;
use std::collections::BTreeMap;

/// Why D̂ could not be recomputed; the message is the reference server's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DimensionError {
    #[error("need at least 2 scales for regression")]
    TooFewScales,
    /// Tightening of spec §15 #18: the reference accepted scales ≤ 0 and produced garbage.
    #[error("scale must be at least 1, got {0}")]
    ScaleBelowOne(i64),
    #[error("missing N_j entry for scale {0}")]
    MissingCount(i64),
    #[error("N_j must be positive for scale {0}")]
    NonPositiveCount(i64),
    #[error("no valid slopes computed")]
    NoSlopes,
    /// Bounds the O(k²) slope work and memory: a hostile PCS with 100k scales must not be able
    /// to exhaust the filter's memory (producers use 4–5 scales).
    #[error("too many scales: {0}, at most {MAX_SCALES}")]
    TooManyScales(usize),
}

/// Most scales a PCS may carry.
pub const MAX_SCALES: usize = 64;

/// D̂ from `scales` and `n_j` (keys are the scales in decimal), rounded with `round9_api`.
pub fn recompute_d_hat(scales: &[i64], n_j: &BTreeMap<String, i64>) -> Result<f64, DimensionError> {
    if scales.len() < 2 {
        return Err(DimensionError::TooFewScales);
    }
    if scales.len() > MAX_SCALES {
        return Err(DimensionError::TooManyScales(scales.len()));
    }
    let mut points = Vec::with_capacity(scales.len());
    for &s in scales {
        if s < 1 {
            return Err(DimensionError::ScaleBelowOne(s));
        }
        let n = *n_j
            .get(&s.to_string())
            .ok_or(DimensionError::MissingCount(s))?;
        if n <= 0 {
            return Err(DimensionError::NonPositiveCount(s));
        }
        points.push(((s as f64).log2(), (n as f64).log2()));
    }
    let mut slopes = Vec::with_capacity(points.len() * (points.len() - 1) / 2);
    for (i, &(xi, yi)) in points.iter().enumerate() {
        for &(xj, yj) in points.iter().skip(i + 1) {
            if (xj - xi).abs() < 1e-9 {
                continue;
            }
            slopes.push((yj - yi) / (xj - xi));
        }
    }
    slopes.sort_by(f64::total_cmp);
    // Empty: `get(0)` is None.
    let median = slopes
        .get(slopes.len() / 2)
        .ok_or(DimensionError::NoSlopes)?;
    Ok(round9_api(*median))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nj(pairs: &[(i64, i64)]) -> BTreeMap<String, i64> {
        pairs.iter().map(|(s, n)| (s.to_string(), *n)).collect()
    }

    fn d(scales: &[i64], counts: &[i64]) -> Result<f64, DimensionError> {
        let pairs: Vec<_> = scales.iter().copied().zip(counts.iter().copied()).collect();
        recompute_d_hat(scales, &nj(&pairs))
    }

    #[test]
    fn spec_12_4_vectors() {
        assert_eq!(d(&[2, 4, 8, 16, 32], &[3, 5, 9, 17, 31]), Ok(0.866733469));
        assert_eq!(d(&[32, 2, 8, 4, 16], &[31, 3, 9, 5, 17]), Ok(0.866733469));
        assert_eq!(d(&[2, 4, 8], &[3, 5, 9]), Ok(0.79248125));
        assert_eq!(d(&[2, 4], &[3, 7]), Ok(1.222392421));
        assert_eq!(d(&[2, 4, 8], &[3, 7, 15]), Ok(1.160964047));
        assert_eq!(d(&[2, 4, 8, 16], &[3, 6, 12, 24]), Ok(1.0));
        assert_eq!(d(&[2, 4, 8, 16, 32], &[4, 8, 16, 32, 64]), Ok(1.0));
        assert_eq!(d(&[2, 4, 8, 16], &[5, 10, 20, 40]), Ok(1.0));
        assert_eq!(d(&[2, 4, 8, 16], &[10, 15, 20, 25]), Ok(0.440642698));
        assert_eq!(d(&[2, 4, 8, 16], &[10, 10, 10, 10]), Ok(0.0));
        assert_eq!(d(&[2, 4, 8, 16], &[4, 16, 64, 256]), Ok(2.0));
        assert_eq!(d(&[1, 2, 4, 8], &[1, 8, 64, 512]), Ok(3.0));
        assert_eq!(d(&[2, 4, 8, 16], &[40, 20, 10, 5]), Ok(-0.999999999));
        assert_eq!(
            recompute_d_hat(&[2, 2, 4], &nj(&[(2, 3), (4, 5)])),
            Ok(0.736965594)
        );
        assert_eq!(
            recompute_d_hat(&[2, 4, 8], &nj(&[(2, 3), (4, 6)])),
            Err(DimensionError::MissingCount(8))
        );
        assert_eq!(
            d(&[2, 4], &[0, 5]),
            Err(DimensionError::NonPositiveCount(2))
        );
        assert_eq!(d(&[2], &[3]), Err(DimensionError::TooFewScales));
        assert_eq!(
            recompute_d_hat(&[2, 2], &nj(&[(2, 3)])),
            Err(DimensionError::NoSlopes)
        );
        assert_eq!(
            d(&[0, 2, 4], &[1, 3, 5]),
            Err(DimensionError::ScaleBelowOne(0))
        );
        assert_eq!(
            d(&[-2, 2, 4], &[1, 3, 5]),
            Err(DimensionError::ScaleBelowOne(-2))
        );
    }

    #[test]
    fn too_many_scales_is_refused_before_any_work() {
        let scales = vec![2i64; 100_000];
        assert_eq!(
            recompute_d_hat(&scales, &nj(&[(2, 3)])),
            Err(DimensionError::TooManyScales(100_000))
        );
        let ok: Vec<i64> = (1..=64).collect();
        let counts: Vec<i64> = ok.iter().map(|s| s * s).collect();
        assert_eq!(d(&ok, &counts), Ok(2.0));
    }

    #[test]
    fn golden_slopes() {
        assert_eq!(d(&[2, 4, 8, 16], &[5, 10, 13, 15]), Ok(0.528320834));
        assert_eq!(d(&[2, 4, 8, 16], &[4, 8, 17, 20]), Ok(1.0));
    }
}
