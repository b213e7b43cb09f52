//! The standard normal distribution: the 97.5 % quantile and two-sided tail probabilities.

/// Φ⁻¹(0.975), the z of a two-sided 95 % interval (SciPy `norm.isf(0.025)`).
pub const Z_95: f64 = 1.959_963_984_540_054_5;

/// P(|Z| ≥ |z|) = erfc(|z|/√2) for Z ~ N(0, 1); 1 at z = 0, never NaN for finite z.
pub fn two_sided_p(z: f64) -> f64 {
    libm::erfc(z.abs() / std::f64::consts::SQRT_2).clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ml::stats::tests::assert_rel;

    #[test]
    fn normal_tails() {
        // values of 2·norm.sf(z) from SciPy 1.17.1
        assert_eq!(two_sided_p(0.0), 1.0);
        assert_rel("p(1.96)", two_sided_p(Z_95), 0.05, 1e-13);
        assert_rel("p(-0.5)", two_sided_p(-0.5), 0.617_075_077_451_974, 1e-13);
        assert_rel("p(6)", two_sided_p(6.0), 1.973_175_290_075_389e-9, 1e-12);
        assert_eq!(two_sided_p(40.0), 0.0);
    }
}
