//! L2-regularised logistic regression by Newton's method (IRLS), and Platt scaling.
//!
//! Why hand-rolled instead of `linfa-logistic`: the problem is tiny (≈20 features, ≈25k rows:
//! one Newton step is one 23×23 Cholesky solve), linfa + ndarray + argmin would add a large
//! dependency tree and minutes of build on our 2-core builders for no gain, and Newton is exact
//! and deterministic (no learning rate, no epochs, no random init). The objective is
//! scikit-learn's: Σᵢ logloss(tᵢ, σ(β₀ + xᵢ·β)) + λ/2·‖β‖², intercept unpenalised, so λ = 1/C.
//! Targets may be soft (tᵢ ∈ [0, 1]), which is exactly what Platt's smoothed targets need.

/// A fitted linear logit: `z = intercept + Σ wⱼ xⱼ`.
#[derive(Debug, Clone, PartialEq)]
pub struct LogitFit {
    pub weights: Vec<f64>,
    pub intercept: f64,
    pub iterations: usize,
    pub converged: bool,
}

fn sigmoid(z: f64) -> f64 {
    kakeya_core::model::sigmoid(z)
}

/// Weight of row `i`: 1 without weights (multiplying by 1.0 is exact, so an unweighted fit is
/// bit for bit the fit with every weight 1).
fn weight(w: Option<&[f64]>, i: usize) -> f64 {
    w.map_or(1.0, |w| w[i])
}

/// The objective [`fit_logistic_weighted`] minimises at `beta` (coefficients, then the
/// intercept): weighted negative log-likelihood plus penalty, computed stably.
pub fn objective(x: &[f64], d: usize, t: &[f64], w: Option<&[f64]>, beta: &[f64], l2: f64) -> f64 {
    let mut loss = 0.0;
    for (i, (row, &ti)) in x.chunks_exact(d).zip(t).enumerate() {
        let z = beta[d] + row.iter().zip(beta).map(|(a, b)| a * b).sum::<f64>();
        // log(1 + e^z) − t·z
        let softplus = if z > 0.0 {
            z + (-z).exp().ln_1p()
        } else {
            z.exp().ln_1p()
        };
        loss += weight(w, i) * (softplus - ti * z);
    }
    loss + 0.5 * l2 * beta[..d].iter().map(|b| b * b).sum::<f64>()
}

/// Solves `a·x = b` for a symmetric positive definite `a` (n×n, row-major) by Cholesky.
/// Returns `None` when `a` is not positive definite.
pub fn cholesky_solve(a: &[f64], b: &[f64], n: usize) -> Option<Vec<f64>> {
    let mut l = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..=i {
            let s: f64 = (0..j).map(|k| l[i * n + k] * l[j * n + k]).sum();
            if i == j {
                let v = a[i * n + i] - s;
                if v <= 0.0 || !v.is_finite() {
                    return None;
                }
                l[i * n + i] = v.sqrt();
            } else {
                l[i * n + j] = (a[i * n + j] - s) / l[j * n + j];
            }
        }
    }
    let mut y = vec![0.0; n];
    for i in 0..n {
        let s: f64 = (0..i).map(|k| l[i * n + k] * y[k]).sum();
        y[i] = (b[i] - s) / l[i * n + i];
    }
    let mut x = vec![0.0; n];
    for i in (0..n).rev() {
        let s: f64 = (i + 1..n).map(|k| l[k * n + i] * x[k]).sum();
        x[i] = (y[i] - s) / l[i * n + i];
    }
    Some(x)
}

/// Gradient and lower triangle of the Hessian of the log-likelihood at `beta` (p = d + 1 with
/// the intercept last; no penalty), summed row by row. Each row's rank-1 update runs over
/// slices (one per Hessian row) instead of indexing `h[a * p + b]`, which lets the compiler
/// drop the bounds checks and vectorise; the sums are taken in the order of the plain double
/// loop, so the results are bit-identical to it (the fit's cost on 100,000 rows:
/// docs/BENCHMARKS.md, `cargo xtask bench --fit`).
fn gradient_hessian(
    x: &[f64],
    d: usize,
    t: &[f64],
    w: Option<&[f64]>,
    beta: &[f64],
) -> (Vec<f64>, Vec<f64>) {
    let p = d + 1;
    let mut h = vec![0.0; p * p];
    let mut g = vec![0.0; p];
    let mut xt = vec![0.0; p];
    for (i, (row, &ti)) in x.chunks_exact(d).zip(t).enumerate() {
        xt[..d].copy_from_slice(row);
        xt[d] = 1.0;
        let z: f64 = xt.iter().zip(beta).map(|(a, b)| a * b).sum();
        let pr = sigmoid(z);
        let wi = weight(w, i);
        let h_i = (pr * (1.0 - pr)).max(1e-12) * wi;
        let res = (pr - ti) * wi;
        for (a, (ga, &xa)) in g.iter_mut().zip(&xt).enumerate() {
            *ga += res * xa;
            let wa = h_i * xa;
            for (hab, &xb) in h[a * p..=a * p + a].iter_mut().zip(&xt) {
                *hab += wa * xb;
            }
        }
    }
    (g, h)
}

/// Fits the logit on `x` (n×d row-major) against targets `t` ∈ [0, 1] with L2 weight `l2`.
/// Newton steps with step halving when the objective does not decrease; stops when the largest
/// coordinate step is below 1e-9 or after `max_iter` steps.
pub fn fit_logistic(x: &[f64], d: usize, t: &[f64], l2: f64, max_iter: usize) -> LogitFit {
    fit_logistic_weighted(x, d, t, None, l2, max_iter)
}

/// [`fit_logistic`] with a weight per row (`w.len()` = rows; e.g. [`class_weights`]): the
/// objective is Σᵢ wᵢ·logloss(tᵢ, σ(zᵢ)) + λ/2·‖β‖². `None` is the unweighted fit, and
/// weights that are all 1 give exactly the same bits (tested).
pub fn fit_logistic_weighted(
    x: &[f64],
    d: usize,
    t: &[f64],
    w: Option<&[f64]>,
    l2: f64,
    max_iter: usize,
) -> LogitFit {
    let p = d + 1; // coefficients, then the intercept
    let mut beta = vec![0.0; p];
    let mut obj = objective(x, d, t, w, &beta, l2);
    let mut converged = false;
    let mut it = 0;
    while it < max_iter {
        it += 1;
        let (mut g, mut h) = gradient_hessian(x, d, t, w, &beta);
        for a in 0..p {
            for b in 0..a {
                h[b * p + a] = h[a * p + b];
            }
            if a < d {
                g[a] += l2 * beta[a];
                h[a * p + a] += l2;
            }
            h[a * p + a] += 1e-10;
        }
        let Some(step) = cholesky_solve(&h, &g, p) else {
            break;
        };
        let mut scale = 1.0;
        let mut accepted = false;
        for _ in 0..30 {
            let cand: Vec<f64> = beta.iter().zip(&step).map(|(b, s)| b - scale * s).collect();
            let c = objective(x, d, t, w, &cand, l2);
            if c <= obj + 1e-12 {
                beta = cand;
                obj = c;
                accepted = true;
                break;
            }
            scale *= 0.5;
        }
        let max_step = step.iter().fold(0.0f64, |m, s| m.max((s * scale).abs()));
        if !accepted || max_step < 1e-9 {
            converged = true;
            break;
        }
    }
    LogitFit {
        intercept: beta[d],
        weights: beta[..d].to_vec(),
        iterations: it,
        converged,
    }
}

/// Balanced class weights for 0/1 `labels`: n / (2·n_c) for a row of class c, so each class
/// weighs n/2 in total (the weights sum to n, keeping the L2 penalty's scale) instead of
/// duplicating rows of the rarer class. All 1 when the classes are balanced or one is absent.
pub fn class_weights(labels: &[u8]) -> [f64; 2] {
    let n = labels.len() as f64;
    let n1 = labels.iter().filter(|&&l| l == 1).count() as f64;
    let n0 = n - n1;
    if n0 == 0.0 || n1 == 0.0 {
        return [1.0, 1.0];
    }
    [n / (2.0 * n0), n / (2.0 * n1)]
}

/// Platt scaling on decision values `s`: fits `P(y=1|s) = 1/(1 + exp(A·s + B))` with Platt's
/// smoothed targets t₊ = (N₊+1)/(N₊+2), t₋ = 1/(N₋+2). Returns (A, B); A < 0 when larger
/// scores mean more risk.
pub fn fit_platt(s: &[f64], labels: &[u8]) -> (f64, f64) {
    let n_pos = labels.iter().filter(|&&l| l == 1).count() as f64;
    let n_neg = labels.len() as f64 - n_pos;
    let t_pos = (n_pos + 1.0) / (n_pos + 2.0);
    let t_neg = 1.0 / (n_neg + 2.0);
    let t: Vec<f64> = labels
        .iter()
        .map(|&l| if l == 1 { t_pos } else { t_neg })
        .collect();
    let fit = fit_logistic(s, 1, &t, 0.0, 100);
    (-fit.weights[0], -fit.intercept)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cholesky() {
        let a = [4.0, 2.0, 2.0, 3.0];
        let x = cholesky_solve(&a, &[2.0, 1.0], 2).unwrap();
        assert!((x[0] - 0.5).abs() < 1e-12 && x[1].abs() < 1e-12);
        assert_eq!(cholesky_solve(&[0.0], &[1.0], 1), None);
    }

    #[test]
    fn recovers_known_logit_and_is_deterministic() {
        // Soft targets exactly on a logit: z = 0.5 + 2x₀ − x₁ → the unpenalised fit recovers it.
        let mut x = Vec::new();
        let mut t = Vec::new();
        for i in 0..40 {
            let a = (i % 8) as f64 / 4.0 - 1.0;
            let b = (i / 8) as f64 / 2.0 - 1.0;
            x.extend([a, b]);
            t.push(sigmoid(0.5 + 2.0 * a - b));
        }
        let f = fit_logistic(&x, 2, &t, 0.0, 50);
        assert!(f.converged);
        assert!((f.intercept - 0.5).abs() < 1e-6, "{f:?}");
        assert!((f.weights[0] - 2.0).abs() < 1e-6);
        assert!((f.weights[1] + 1.0).abs() < 1e-6);
        assert_eq!(f, fit_logistic(&x, 2, &t, 0.0, 50));
        // L2 shrinks
        let g = fit_logistic(&x, 2, &t, 10.0, 50);
        assert!(g.weights[0].abs() < f.weights[0].abs());
    }

    /// Weights of 1 give the unweighted fit bit for bit; balanced weights move the intercept
    /// towards the rarer class and equal duplicating its rows.
    #[test]
    fn weighted_fit_with_unit_weights_is_bit_identical_and_weights_act_like_duplicates() {
        let mut rng = kakeya_core::pcs_builder::SplitMix64(3);
        let (mut x, mut t) = (Vec::new(), Vec::new());
        for i in 0..300 {
            let y = u8::from(i % 4 == 0);
            x.extend([rng.next_f64() + f64::from(y), rng.next_f64() - 0.5]);
            t.push(f64::from(y));
        }
        let plain = fit_logistic(&x, 2, &t, 1.0, 100);
        let ones = vec![1.0; t.len()];
        let unit = fit_logistic_weighted(&x, 2, &t, Some(&ones), 1.0, 100);
        assert_eq!(unit.intercept.to_bits(), plain.intercept.to_bits());
        for (a, b) in unit.weights.iter().zip(&plain.weights) {
            assert_eq!(a.to_bits(), b.to_bits());
        }
        assert_eq!(unit, plain);
        let labels: Vec<u8> = t.iter().map(|&v| v as u8).collect();
        let cw = class_weights(&labels);
        assert_eq!(cw, [300.0 / (2.0 * 225.0), 300.0 / (2.0 * 75.0)]);
        let w: Vec<f64> = labels.iter().map(|&l| cw[usize::from(l)]).collect();
        assert!((w.iter().sum::<f64>() - 300.0).abs() < 1e-9);
        let balanced = fit_logistic_weighted(&x, 2, &t, Some(&w), 1.0, 100);
        assert!(
            balanced.intercept > plain.intercept,
            "{balanced:?} vs {plain:?}"
        );
        // Integer weights equal duplicated rows (3 copies of each positive).
        let w3: Vec<f64> = labels
            .iter()
            .map(|&l| if l == 1 { 3.0 } else { 1.0 })
            .collect();
        let (mut xd, mut td) = (x.clone(), t.clone());
        for (i, &l) in labels.iter().enumerate() {
            if l == 1 {
                xd.extend_from_slice(&x[i * 2..i * 2 + 2]);
                xd.extend_from_slice(&x[i * 2..i * 2 + 2]);
                td.extend([1.0, 1.0]);
            }
        }
        let weighted = fit_logistic_weighted(&x, 2, &t, Some(&w3), 1.0, 100);
        let duplicated = fit_logistic(&xd, 2, &td, 1.0, 100);
        assert!((weighted.intercept - duplicated.intercept).abs() < 1e-8);
        for (a, b) in weighted.weights.iter().zip(&duplicated.weights) {
            assert!((a - b).abs() < 1e-8, "{a} vs {b}");
        }
        assert_eq!(class_weights(&[1, 1]), [1.0, 1.0]);
        assert_eq!(class_weights(&[0, 1]), [1.0, 1.0]);
    }

    #[test]
    fn the_hessian_is_the_double_loop_bit_for_bit() {
        let (n, d) = (263, 3);
        let mut rng = kakeya_core::pcs_builder::SplitMix64(5);
        let x: Vec<f64> = (0..n * d).map(|_| rng.next_f64() * 4.0 - 2.0).collect();
        let t: Vec<f64> = (0..n).map(|_| rng.next_f64()).collect();
        let beta = [0.3, -0.7, 1.1, 0.2];
        let p = d + 1;
        let (mut g0, mut h0) = (vec![0.0; p], vec![0.0; p * p]);
        for (row, &ti) in x.chunks_exact(d).zip(&t) {
            let xt = [row[0], row[1], row[2], 1.0];
            let pr = sigmoid(xt.iter().zip(&beta).map(|(a, b)| a * b).sum());
            let w = (pr * (1.0 - pr)).max(1e-12);
            for a in 0..p {
                g0[a] += (pr - ti) * xt[a];
                for b in 0..=a {
                    h0[a * p + b] += w * xt[a] * xt[b];
                }
            }
        }
        let (g, h) = gradient_hessian(&x, d, &t, None, &beta);
        assert_eq!((g, h), (g0, h0));
    }

    #[test]
    fn separable_data_stays_finite_with_l2() {
        let x = [-2.0, -1.0, 1.0, 2.0];
        let t = [0.0, 0.0, 1.0, 1.0];
        let f = fit_logistic(&x, 1, &t, 1.0, 100);
        assert!(f.weights[0].is_finite() && f.weights[0] > 0.0);
    }

    #[test]
    fn platt_sign_convention() {
        let s = [-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, 3.0];
        let y = [0, 0, 1, 0, 1, 0, 1, 1];
        let (a, b) = fit_platt(&s, &y);
        assert!(a < 0.0, "A = {a}");
        assert!(b.is_finite());
    }
}
