//! Multiple testing: Benjamini–Hochberg false-discovery-rate control (one p-value per feature
//! in a drift check).

use super::{Result, StatsError};

/// Benjamini–Hochberg (1995) adjusted p-values, in input order: with p₍₁₎ ≤ … ≤ p₍ₘ₎,
/// p̃₍ᵢ₎ = min over j ≥ i of (m/j)·p₍ⱼ₎, capped at 1 (step-up, so monotone in p). As SciPy's
/// `false_discovery_control(p, method='bh')`. Every p must be in [0, 1].
pub fn bh_adjust(p: &[f64]) -> Result<Vec<f64>> {
    if p.is_empty() {
        return Err(StatsError::Empty { what: "p-values" });
    }
    if let Some(index) = p.iter().position(|x| !x.is_finite()) {
        return Err(StatsError::NonFinite {
            what: "p-values",
            index,
        });
    }
    if let Some(i) = p.iter().position(|x| !(0.0..=1.0).contains(x)) {
        return Err(StatsError::Invalid {
            what: "p-values",
            reason: format!("p[{i}] = {} is not in [0, 1]", p[i]),
        });
    }
    let m = p.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&a, &b| p[a].total_cmp(&p[b]));
    let mut adjusted = vec![0.0; m];
    let mut running = 1.0f64;
    for (rank, &i) in order.iter().enumerate().rev() {
        running = running.min(p[i] * (m as f64 / (rank + 1) as f64));
        adjusted[i] = running;
    }
    Ok(adjusted)
}

/// Which hypotheses BH rejects at false discovery rate `q` ∈ (0, 1]: those whose adjusted
/// p-value is ≤ q (the same set as the step-up rule: every p₍ᵢ₎ with i ≤ the largest k such
/// that p₍ₖ₎ ≤ k·q/m).
pub fn bh_reject(p: &[f64], q: f64) -> Result<Vec<bool>> {
    if !(q > 0.0 && q <= 1.0) {
        return Err(StatsError::Invalid {
            what: "q",
            reason: format!("{q} is not in (0, 1]"),
        });
    }
    Ok(bh_adjust(p)?.into_iter().map(|a| a <= q).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ml::stats::tests::{assert_close, f64s};

    #[test]
    fn bh_hand_case() {
        // sorted 0.01, 0.02, 0.03, 0.5 (m = 4): 4·0.01, 2·0.02, (4/3)·0.03, 0.5
        // = 0.04, 0.04, 0.04, 0.5; running minimum from the top keeps them
        let a = bh_adjust(&[0.03, 0.5, 0.01, 0.02]).unwrap();
        for (got, want) in a.iter().zip([0.04, 0.5, 0.04, 0.04]) {
            assert_close("adjusted", *got, want, 1e-15);
        }
        // step-up: 0.033 at rank 2 is ≤ 2·0.05/3, so 0.03 at rank 1 is rejected too although it
        // is > 0.05/3
        let p = [0.03, 0.033, 0.9];
        assert_eq!(bh_reject(&p, 0.05).unwrap(), [true, true, false]);
        assert_eq!(bh_adjust(&[1.0, 1.0]).unwrap(), [1.0, 1.0]);
    }

    #[test]
    fn step_up_rule_agrees() {
        // the definition by the largest k with p₍ₖ₎ ≤ k·q/m, over a fixed pseudo-random set
        let mut x = 0.123_f64;
        let p: Vec<f64> = (0..40)
            .map(|_| {
                x = (x * 997.0 + 0.311).fract();
                x.powi(3)
            })
            .collect();
        for q in [0.01, 0.05, 0.1, 0.3] {
            let mut sorted = p.clone();
            sorted.sort_by(f64::total_cmp);
            let m = p.len() as f64;
            let k = (1..=p.len())
                .filter(|&k| sorted[k - 1] <= k as f64 * q / m)
                .max()
                .unwrap_or(0);
            let cut = if k == 0 { -1.0 } else { sorted[k - 1] };
            let want: Vec<bool> = p.iter().map(|&v| v <= cut).collect();
            assert_eq!(bh_reject(&p, q).unwrap(), want, "q = {q}");
        }
    }

    #[test]
    fn bh_bad_input() {
        assert_eq!(bh_adjust(&[]), Err(StatsError::Empty { what: "p-values" }));
        assert!(matches!(
            bh_adjust(&[0.1, f64::NAN]),
            Err(StatsError::NonFinite { index: 1, .. })
        ));
        assert!(matches!(bh_adjust(&[1.5]), Err(StatsError::Invalid { .. })));
        assert!(matches!(
            bh_adjust(&[-0.1]),
            Err(StatsError::Invalid { .. })
        ));
        for q in [0.0, 1.5, f64::NAN] {
            assert!(matches!(
                bh_reject(&[0.1], q),
                Err(StatsError::Invalid { .. })
            ));
        }
    }

    #[test]
    fn bh_against_scipy_fixtures() {
        let doc: serde_json::Value =
            serde_json::from_str(include_str!("../../../tests/fixtures/stats/bh.json")).unwrap();
        for c in doc["cases"].as_array().unwrap() {
            let name = c["name"].as_str().unwrap();
            let p = f64s(&c["p"]);
            for (got, want) in bh_adjust(&p).unwrap().iter().zip(f64s(&c["adjusted"])) {
                assert_close(name, *got, want, 1e-12);
            }
            let want: Vec<bool> = c["rejected"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| b.as_bool().unwrap())
                .collect();
            assert_eq!(
                bh_reject(&p, c["q"].as_f64().unwrap()).unwrap(),
                want,
                "{name}"
            );
        }
    }
}
