//! Confidence intervals: the [`Interval`] type and the Wilson score interval for a proportion.

use serde::{Deserialize, Serialize};

use super::{Result, StatsError};

/// A closed interval `[low, high]`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Interval {
    pub low: f64,
    pub high: f64,
}

impl Interval {
    /// `center ± half`, clipped to `[min, max]`.
    pub(crate) fn around(center: f64, half: f64, min: f64, max: f64) -> Interval {
        Interval {
            low: (center - half).clamp(min, max),
            high: (center + half).clamp(min, max),
        }
    }
}

/// Wilson score interval for `successes` of `trials` (Wilson 1927): with p̂ = k/n,
/// `(p̂ + z²/2n ± z·√(p̂(1−p̂)/n + z²/4n²)) / (1 + z²/n)`, clipped to [0, 1] (only rounding can
/// leave it). Unlike p̂ ± z·√(p̂(1−p̂)/n) it is not empty at k = 0 or k = n. Pass
/// [`super::normal::Z_95`] for 95 % (z ∈ (0, 100]). No trials → [`StatsError::Empty`]
/// (insufficient data).
pub fn wilson(successes: u64, trials: u64, z: f64) -> Result<Interval> {
    if trials == 0 {
        return Err(StatsError::Empty { what: "trials" });
    }
    if successes > trials {
        return Err(StatsError::Invalid {
            what: "successes",
            reason: format!("{successes} successes out of {trials} trials"),
        });
    }
    // z = 40 is a tail of 1e-350 already; the bound keeps z² far from overflow
    if !(z > 0.0 && z <= 100.0) {
        return Err(StatsError::Invalid {
            what: "z",
            reason: format!("{z} is not in (0, 100]"),
        });
    }
    let (n, z2) = (trials as f64, z * z);
    let p = successes as f64 / n;
    let denom = 1.0 + z2 / n;
    let center = (p + z2 / (2.0 * n)) / denom;
    let half = z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt() / denom;
    Ok(Interval::around(center, half, 0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ml::stats::normal::Z_95;
    use crate::ml::stats::tests::{assert_close, assert_rel};

    #[test]
    fn wilson_hand_case() {
        // k = 0, n = 4, z = 2: centre (0 + 4/8)/(1 + 1) = 0.25, half 2·√(4/64)/2 = 0.25
        let i = wilson(0, 4, 2.0).unwrap();
        assert_close("low", i.low, 0.0, 1e-15);
        assert_close("high", i.high, 0.5, 1e-15);
    }

    #[test]
    fn wilson_against_statsmodels() {
        let doc: serde_json::Value =
            serde_json::from_str(include_str!("../../../tests/fixtures/stats/wilson.json"))
                .unwrap();
        assert_eq!(doc["z"].as_f64().unwrap(), Z_95);
        for c in doc["cases"].as_array().unwrap() {
            let (k, n) = (c["k"].as_u64().unwrap(), c["n"].as_u64().unwrap());
            let i = wilson(k, n, Z_95).unwrap();
            let what = format!("{k}/{n}");
            // statsmodels does not clip; at k = 0 its low is 0 up to rounding (≈1e-17)
            assert_close(&what, i.low, c["low"].as_f64().unwrap().max(0.0), 1e-15);
            assert_rel(&what, i.high, c["high"].as_f64().unwrap().min(1.0), 1e-14);
            assert!(0.0 <= i.low && i.low <= k as f64 / n as f64 && i.high <= 1.0);
        }
    }

    #[test]
    fn wilson_bad_input() {
        assert_eq!(
            wilson(0, 0, Z_95),
            Err(StatsError::Empty { what: "trials" })
        );
        assert!(wilson(0, 0, Z_95).unwrap_err().is_insufficient_data());
        assert!(matches!(
            wilson(3, 2, Z_95),
            Err(StatsError::Invalid { .. })
        ));
        for z in [0.0, -1.0, 101.0, f64::NAN, f64::INFINITY] {
            assert!(matches!(wilson(1, 2, z), Err(StatsError::Invalid { .. })));
        }
        // the largest counts stay finite
        let i = wilson(u64::MAX, u64::MAX, Z_95).unwrap();
        assert!(i.low.is_finite() && i.high == 1.0);
    }
}
