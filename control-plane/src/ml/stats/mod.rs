//! Statistics for the learning loop: A/B experiments, drift monitoring and deploy gates.
//!
//! Pure functions over slices, no I/O. Every function checks its input and returns a typed
//! [`StatsError`] for empty, degenerate or non-finite input: nothing here panics and no result
//! is NaN. Each is tested against hand-worked cases and against fixtures computed once with
//! NumPy/SciPy/scikit-learn/statsmodels (`control-plane/tests/fixtures/stats/`, with the script
//! that made them).
//!
//! * [`delong`]: AUROC with its DeLong variance and 95 % interval; unpaired (A/B arms) and
//!   paired (champion vs candidate on one validation set) comparisons of two AUROCs;
//! * [`ks`]: two-sample Kolmogorov–Smirnov statistic (ties handled) and asymptotic p-value;
//! * [`psi`]: population stability index against a reference sample or a stored [`psi::Reference`];
//! * [`multiple`]: Benjamini–Hochberg adjusted p-values and rejections;
//! * [`interval`]: the Wilson score interval for a proportion;
//! * [`normal`]: `Z_95` and two-sided normal p-values;
//! * [`rank`]: midranks, shared with [`super::metrics::auroc`].
//!
//! Why hand-written: `statrs` has distributions but none of these tests; `rv`'s
//! `ks_two_sample` reproduces SciPy's exact/`kstwo` p-values, not the corrected asymptotic series
//! wanted here, and nothing offers DeLong or PSI. The formulas are short and each is pinned to a
//! reference value; the one special function not short to get right, `erfc`, comes from `libm`.

pub mod delong;
pub mod interval;
pub mod ks;
pub mod multiple;
pub mod normal;
pub mod psi;
pub mod rank;

/// Why a statistic could not be computed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StatsError {
    /// No observations (an empty sample, zero trials, no hypotheses).
    #[error("{what} is empty")]
    Empty { what: &'static str },
    /// NaN or ±∞ inside the input.
    #[error("{what}[{index}] is not a finite number")]
    NonFinite { what: &'static str, index: usize },
    #[error("{what}: lengths differ ({left} vs {right})")]
    LengthMismatch {
        what: &'static str,
        left: usize,
        right: usize,
    },
    #[error("labels[{index}] = {value}: labels must be 0 or 1")]
    BadLabel { index: usize, value: u8 },
    /// Too few rows of a class (one class only included).
    #[error(
        "need at least {need} positives and {need} negatives, have {positives} and {negatives}"
    )]
    ClassCounts {
        positives: usize,
        negatives: usize,
        need: usize,
    },
    /// The DeLong variance of a difference is 0 (every placement equal) while the AUROCs differ:
    /// there is no test statistic.
    #[error("the AUROCs differ by {difference} but the variance of the difference is 0")]
    ZeroVariance { difference: f64 },
    /// A parameter or a stored value out of its domain (p-value outside [0, 1], bins < 2, …).
    #[error("{what}: {reason}")]
    Invalid { what: &'static str, reason: String },
}

impl StatsError {
    /// True when more data would fix it (the A/B verdict `insufficient_data`), false when the
    /// input itself is wrong.
    pub fn is_insufficient_data(&self) -> bool {
        matches!(
            self,
            StatsError::Empty { .. }
                | StatsError::ClassCounts { .. }
                | StatsError::ZeroVariance { .. }
        )
    }
}

pub type Result<T> = std::result::Result<T, StatsError>;

/// Non-empty and every value finite.
pub(crate) fn check_sample(what: &'static str, xs: &[f64]) -> Result<()> {
    if xs.is_empty() {
        return Err(StatsError::Empty { what });
    }
    match xs.iter().position(|x| !x.is_finite()) {
        Some(index) => Err(StatsError::NonFinite { what, index }),
        None => Ok(()),
    }
}

/// Scores finite, labels 0/1, same length; returns (positives, negatives).
pub(crate) fn check_scored(scores: &[f64], labels: &[u8]) -> Result<(usize, usize)> {
    if scores.len() != labels.len() {
        return Err(StatsError::LengthMismatch {
            what: "scores and labels",
            left: scores.len(),
            right: labels.len(),
        });
    }
    check_sample("scores", scores)?;
    if let Some(index) = labels.iter().position(|&l| l > 1) {
        return Err(StatsError::BadLabel {
            index,
            value: labels[index],
        });
    }
    let positives = labels.iter().filter(|&&l| l == 1).count();
    Ok((positives, labels.len() - positives))
}

#[cfg(test)]
mod tests;
