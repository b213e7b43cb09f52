//! Logistic stacking of the votes ([`kakeya_core::ensemble_policy::Stack`]), fitted on
//! labelled outcomes with the project's logistic trainer ([`crate::ml::train::fit_logistic`]).
//!
//! Columns per strategy *s* of the policy: `logit(pₛ)` (pₛ clamped to [1e-6, 1 − 1e-6], 0 when
//! *s* abstained) and, when *s* both voted and abstained on some rows, the abstention
//! indicator. pₛ is read from the vote ([`super::outcomes::StrategyResult::p_hallucinated`]).
//! Too few rows (or too few of one class) keep the default stack, which serves the HRS
//! probability unchanged.

use super::outcomes::Outcome;
use crate::ml::train::fit_logistic;
use kakeya_core::ensemble_policy::{EnsemblePolicy, Stack};
use std::collections::BTreeMap;

/// L2 weight of the fit (scikit-learn's C = 1).
const L2: f64 = 1.0;
/// Fewest rows of each class for a fit.
pub const MIN_PER_CLASS: usize = 20;

fn logit(p: f64) -> f64 {
    let p = p.clamp(1e-6, 1.0 - 1e-6);
    (p / (1.0 - p)).ln()
}

/// The fitted stack of `policy`'s strategies on `rows`, or `None` below `min_rows` rows (or
/// [`MIN_PER_CLASS`] of a class) or when the fit does not converge to finite numbers.
pub fn fit(policy: &EnsemblePolicy, rows: &[Outcome], min_rows: usize) -> Option<Stack> {
    let pos = rows.iter().filter(|o| o.hallucinated).count();
    if rows.len() < min_rows || pos < MIN_PER_CLASS || rows.len() - pos < MIN_PER_CLASS {
        return None;
    }
    let names: Vec<&String> = policy.strategies.keys().collect();
    let p_of = |o: &Outcome, s: &str| {
        o.votes
            .iter()
            .find(|v| v.strategy_name == s)
            .map(|v| v.p_hallucinated())
    };
    // Abstention columns only where it varies.
    let with_abstain: Vec<bool> = names
        .iter()
        .map(|s| {
            let voted = rows.iter().filter(|o| p_of(o, s).is_some()).count();
            voted > 0 && voted < rows.len()
        })
        .collect();
    let d = names.len() + with_abstain.iter().filter(|b| **b).count();
    let mut x = Vec::with_capacity(rows.len() * d);
    for o in rows {
        for s in &names {
            x.push(p_of(o, s).map_or(0.0, logit));
        }
        for (s, _) in names.iter().zip(&with_abstain).filter(|(_, b)| **b) {
            x.push(f64::from(u8::from(p_of(o, s).is_none())));
        }
    }
    let t: Vec<f64> = rows
        .iter()
        .map(|o| f64::from(u8::from(o.hallucinated)))
        .collect();
    let f = fit_logistic(&x, d, &t, L2, 100);
    if !f.intercept.is_finite() || f.weights.iter().any(|w| !w.is_finite()) {
        return None;
    }
    let round = |v: f64| (v * 1e6).round() / 1e6;
    let coef: BTreeMap<String, f64> = names
        .iter()
        .zip(&f.weights)
        .map(|(s, w)| ((*s).clone(), round(*w)))
        .collect();
    let abstain: BTreeMap<String, f64> = names
        .iter()
        .zip(&with_abstain)
        .filter(|(_, b)| **b)
        .zip(f.weights.iter().skip(names.len()))
        .map(|((s, _), w)| ((*s).clone(), round(*w)))
        .collect();
    Some(Stack {
        bias: round(f.intercept),
        coef,
        abstain,
    })
}
