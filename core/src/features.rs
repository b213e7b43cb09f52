//! The one hallucination-risk feature schema: named, ordered and versioned.
//!
//! Why one schema: the reference system encoded its HRS features in two different orders in
//! different components (platform spec §3.3), so any cross-use misassigned them. Here the trainer,
//! the evaluation and (later) the filter all call [`features`], and a model artifact records
//! [`SCHEMA_VERSION`] and [`FEATURE_NAMES`]; a scorer refuses an artifact whose schema differs.
//!
//! The vector has two blocks:
//! * PCS features (always present): the claimed signals, the gap to the recomputed D̂, the
//!   regime, the signal entropy of spec §10.1 and the tenant-relative coherence delta and
//!   compressibility z (from [`TenantStats`], which will travel in the model bundle);
//! * evidence features ([`crate::evidence`]), all 0 with `evidence_present = 0` when no evidence
//!   was sent, so one linear model serves both cases.

use crate::dimension::recompute_d_hat;
use crate::evidence::{evidence_features, Evidence};
use crate::pcs::Pcs;
use crate::pcs_builder::BuiltPcs;
use serde::{Deserialize, Serialize};

/// Version of the schema below; bump on any change of names, order or definitions (including the
/// tokeniser and its stopword list).
pub const SCHEMA_VERSION: &str = "hrs-features-v1";

/// Number of features.
pub const N_FEATURES: usize = 22;

/// Names in vector order.
pub const FEATURE_NAMES: [&str; N_FEATURES] = [
    "d_hat",
    "coh_star",
    "r",
    "budget",
    "d_hat_residual",
    "regime_sticky",
    "regime_non_sticky",
    "signal_entropy",
    "coherence_delta",
    "compressibility_z",
    "log_boxes_max",
    "evidence_present",
    "resp_tokens_log",
    "ctx_tokens_log",
    "token_coverage",
    "novel_content_share",
    "bigram_containment",
    "trigram_containment",
    "unsupported_number_share",
    "unsupported_numbers_log",
    "question_overlap",
    "novel_capitalized_share",
];

/// Residual used when D̂ cannot be recomputed at all (the top of D̂'s plausible range).
pub const RESIDUAL_UNCOMPUTABLE: f64 = 3.5;

/// The PCS signals the features need, from a wire PCS or from the text builder.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PcsSignals {
    pub d_hat: f64,
    pub coh_star: f64,
    pub r: f64,
    pub budget: f64,
    /// D̂ recomputed from the box counts; `None` when it cannot be.
    pub d_hat_recomputed: Option<f64>,
    pub sticky: bool,
    pub non_sticky: bool,
    /// N_j at the largest scale (0 when missing).
    pub boxes_max: i64,
}

impl PcsSignals {
    /// From a parsed wire PCS (the regime is the *claimed* one), recomputing D̂.
    pub fn from_pcs(p: &Pcs) -> Self {
        Self::from_verified(p, recompute_d_hat(&p.scales, &p.n_j).ok())
    }

    /// From a wire PCS whose D̂ the verifier already recomputed (or could not).
    pub fn from_verified(p: &Pcs, d_hat_recomputed: Option<f64>) -> Self {
        let claimed = [p.d_hat, p.coh_star, p.r, p.budget];
        Self::new(claimed, &p.regime, &p.scales, &p.n_j, d_hat_recomputed)
    }

    /// From a PCS built from text by [`crate::pcs_builder`].
    pub fn from_built(b: &BuiltPcs) -> Self {
        let claimed = [b.d_hat, b.coh_star, b.r, b.budget];
        Self::new(
            claimed,
            b.regime,
            &b.scales,
            &b.n_j,
            recompute_d_hat(&b.scales, &b.n_j).ok(),
        )
    }

    /// `[d_hat, coh_star, r, budget]`, the regime and the box counts.
    fn new(
        [d_hat, coh_star, r, budget]: [f64; 4],
        regime: &str,
        scales: &[i64],
        n_j: &std::collections::BTreeMap<String, i64>,
        d_hat_recomputed: Option<f64>,
    ) -> Self {
        let max_scale = scales.iter().copied().max().unwrap_or(0);
        PcsSignals {
            d_hat,
            coh_star,
            r,
            budget,
            d_hat_recomputed,
            sticky: regime == "sticky",
            non_sticky: regime == "non_sticky",
            boxes_max: n_j.get(&max_scale.to_string()).copied().unwrap_or(0),
        }
    }
}

/// The PCS version tenant statistics are kept for: `"0.2"` when the PCS binds its evidence
/// (`evidence_sha256`), `"0.1"` otherwise. Only v0.2 rows make a bundle's tenant statistics and
/// only v0.2 PCS are scored with them: v0.1 traffic (no evidence, other signal distributions)
/// never moves a v0.2 baseline, and v0.1 PCS (scored only under `score_without_evidence`) use
/// the model's training baseline.
pub fn pcs_version(p: &Pcs) -> &'static str {
    if p.evidence_sha256.is_empty() {
        PCS_V01
    } else {
        PCS_V02
    }
}

/// See [`pcs_version`].
pub const PCS_V01: &str = "0.1";
/// See [`pcs_version`].
pub const PCS_V02: &str = "0.2";

/// Per-tenant statistics. Two ways to make them: the spec's running EMAs (§10.1, α = 0.3, an
/// exponentially weighted std of r; [`Self::update`], kept for the reference HRS), and the
/// robust window statistics bundles carry ([`Self::robust`]: medians and a winsorised std,
/// in the same fields, so the wire format is unchanged). With the EMAs, features read them
/// *before* the sample is folded in; the window statistics are computed by the control plane
/// from the decision log at each bundle publication and stay fixed for that bundle's lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TenantStats {
    pub avg_d_hat: f64,
    pub avg_coh: f64,
    pub avg_r: f64,
    pub std_r: f64,
    pub avg_latency_ms: f64,
    pub count: u64,
}

impl TenantStats {
    pub const ALPHA: f64 = 0.3;

    /// The reference seeds of a new tenant: D̂ 1.5, coh★ 0.7, r 0.8, std(r) 0.1.
    pub fn fresh() -> Self {
        TenantStats {
            avg_d_hat: 1.5,
            avg_coh: 0.7,
            avg_r: 0.8,
            std_r: 0.1,
            avg_latency_ms: 0.0,
            count: 0,
        }
    }

    /// Population statistics (plain mean and std) of a training set, used as the tenant
    /// baseline a model bundle carries.
    pub fn from_population(d_hat: &[f64], coh: &[f64], r: &[f64]) -> Self {
        let mean = |v: &[f64]| {
            if v.is_empty() {
                0.0
            } else {
                v.iter().sum::<f64>() / v.len() as f64
            }
        };
        let mr = mean(r);
        let var = if r.is_empty() {
            0.0
        } else {
            r.iter().map(|x| (x - mr) * (x - mr)).sum::<f64>() / r.len() as f64
        };
        TenantStats {
            avg_d_hat: mean(d_hat),
            avg_coh: mean(coh),
            avg_r: mr,
            std_r: var.sqrt(),
            avg_latency_ms: 0.0,
            count: r.len() as u64,
        }
    }

    /// Robust statistics of a window of plausible samples ([`Self::plausible`]; others are
    /// skipped): `avg_*` hold the medians of D̂, coh★ and r, `std_r` the std of r winsorised at
    /// [`WINSOR_FRACTION`] on each side, `count` the samples used. Unlike an EMA (α = 0.3 weighs
    /// the last 3 rows as much as everything before), a minority of unusual rows cannot move a
    /// median beyond the majority's range, and rows beyond the winsorising quantiles count only
    /// as those quantiles. The scale is not the MAD: r of short answers is clamped at 1.0, so
    /// for most traffic (53 % of the HaluEval training split) the MAD of r is 0 and would turn
    /// the r feature off. Training computes the model's own baseline with this same function
    /// (`kakeya train`), so a tenant whose traffic looks like the training data has deviation
    /// features near 0. `None` when fewer than `min_count` samples are plausible.
    pub fn robust(samples: &[(f64, f64, f64)], min_count: usize) -> Option<Self> {
        let ok: Vec<(f64, f64, f64)> = samples
            .iter()
            .copied()
            .filter(|&(d, c, r)| Self::plausible(d, c, r, 0.0))
            .collect();
        if ok.len() < min_count.max(1) {
            return None;
        }
        let d: Vec<f64> = ok.iter().map(|s| s.0).collect();
        let c: Vec<f64> = ok.iter().map(|s| s.1).collect();
        let r: Vec<f64> = ok.iter().map(|s| s.2).collect();
        Some(TenantStats {
            avg_d_hat: median(d),
            avg_coh: median(c),
            avg_r: median(r.clone()),
            std_r: winsorized_std(r, WINSOR_FRACTION),
            avg_latency_ms: 0.0,
            count: ok.len() as u64,
        })
    }

    /// coh★ − EMA(coh★).
    pub fn coherence_delta(&self, coh: f64) -> f64 {
        coh - self.avg_coh
    }

    /// (r − EMA(r)) / std(r), 0 when std(r) is 0.
    pub fn compressibility_z(&self, r: f64) -> f64 {
        if self.std_r == 0.0 {
            0.0
        } else {
            (r - self.avg_r) / self.std_r
        }
    }

    /// Plausible range of a D̂ sample ([`RESIDUAL_UNCOMPUTABLE`] is its top).
    pub const D_HAT_RANGE: (f64, f64) = (0.0, RESIDUAL_UNCOMPUTABLE);
    /// Plausible range of a coh★ sample.
    pub const COH_RANGE: (f64, f64) = (0.0, 1.05);
    /// Plausible range of an r sample.
    pub const R_RANGE: (f64, f64) = (0.0, 1.0);

    /// Whether a sample may be folded in: D̂, coh★ and r within their plausible ranges
    /// ([`Self::D_HAT_RANGE`], [`Self::COH_RANGE`], [`Self::R_RANGE`]) and a finite,
    /// non-negative latency. NaN is never in range.
    pub fn plausible(d_hat: f64, coh: f64, r: f64, latency_ms: f64) -> bool {
        let within = |v: f64, (lo, hi): (f64, f64)| v >= lo && v <= hi;
        within(d_hat, Self::D_HAT_RANGE)
            && within(coh, Self::COH_RANGE)
            && within(r, Self::R_RANGE)
            && latency_ms.is_finite()
            && latency_ms >= 0.0
    }

    /// Whether every statistic is finite and the std and latency are non-negative (what a
    /// bundle must carry).
    pub fn is_valid(&self) -> bool {
        [
            self.avg_d_hat,
            self.avg_coh,
            self.avg_r,
            self.std_r,
            self.avg_latency_ms,
        ]
        .iter()
        .all(|v| v.is_finite())
            && self.std_r >= 0.0
            && self.avg_latency_ms >= 0.0
    }

    /// Folds one sample in, exactly as the reference (spec §10.1): the std uses the *new* mean.
    /// A sample that is not [`Self::plausible`] is ignored (returns `false`), so one hostile PCS
    /// cannot poison a tenant's statistics with NaN or huge values.
    pub fn update(&mut self, d_hat: f64, coh: f64, r: f64, latency_ms: f64) -> bool {
        if !Self::plausible(d_hat, coh, r, latency_ms) {
            return false;
        }
        let a = Self::ALPHA;
        self.avg_d_hat = a * d_hat + (1.0 - a) * self.avg_d_hat;
        self.avg_coh = a * coh + (1.0 - a) * self.avg_coh;
        self.avg_r = a * r + (1.0 - a) * self.avg_r;
        self.avg_latency_ms = a * latency_ms + (1.0 - a) * self.avg_latency_ms;
        let d = r - self.avg_r;
        self.std_r = (a * d * d + (1.0 - a) * self.std_r * self.std_r).sqrt();
        self.count = self.count.saturating_add(1);
        true
    }
}

/// Share of samples clipped on each side before the std of r ([`TenantStats::robust`]).
pub const WINSOR_FRACTION: f64 = 0.1;

/// Population std of `v` after clipping the lowest and highest `floor(n·fraction)` values to
/// the nearest kept one (0 when empty).
fn winsorized_std(mut v: Vec<f64>, fraction: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return 0.0;
    }
    let k = ((n as f64 * fraction).floor() as usize).min((n - 1) / 2);
    let (lo, hi) = match (v.get(k), v.get(n - 1 - k)) {
        (Some(&lo), Some(&hi)) => (lo, hi),
        _ => return 0.0,
    };
    let clipped: Vec<f64> = v.iter().map(|x| x.clamp(lo, hi)).collect();
    let mean = clipped.iter().sum::<f64>() / n as f64;
    (clipped.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n as f64).sqrt()
}

/// Median of finite values (mean of the two middle ones for an even count; 0 when empty).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match (v.get(n.saturating_sub(1) / 2), v.get(n / 2)) {
        (Some(&lo), Some(&hi)) => (lo + hi) / 2.0,
        _ => 0.0,
    }
}

/// Shannon entropy (nats) of the normalised triple (D̂/3.5, coh★, r), spec §10.1.
pub fn signal_entropy(d_hat: f64, coh: f64, r: f64) -> f64 {
    let t = [d_hat / 3.5, coh, r];
    let s: f64 = t.iter().sum();
    if s == 0.0 || !s.is_finite() {
        return 0.0;
    }
    t.iter()
        .map(|x| x / s)
        .filter(|&p| p > 0.0)
        .map(|p| -p * p.ln())
        .sum()
}

/// Indices of the tenant-relative features (coherence delta, compressibility z).
pub const TENANT_FEATURES: [usize; 2] = [8, 9];

/// The tenant-relative features of `pcs` against `tenant` (0 where not finite).
pub fn tenant_features(pcs: &PcsSignals, tenant: &TenantStats) -> [f64; 2] {
    [
        tenant.coherence_delta(pcs.coh_star),
        tenant.compressibility_z(pcs.r),
    ]
    .map(|v| if v.is_finite() { v } else { 0.0 })
}

/// The feature vector of schema [`SCHEMA_VERSION`].
pub fn features(
    pcs: &PcsSignals,
    evidence: Option<&Evidence>,
    tenant: &TenantStats,
) -> [f64; N_FEATURES] {
    let residual = match pcs.d_hat_recomputed {
        Some(d) => (pcs.d_hat - d).abs().min(RESIDUAL_UNCOMPUTABLE),
        None => RESIDUAL_UNCOMPUTABLE,
    };
    let flag = |b: bool| if b { 1.0 } else { 0.0 };
    let mut x = [0.0; N_FEATURES];
    x[0] = pcs.d_hat;
    x[1] = pcs.coh_star;
    x[2] = pcs.r;
    x[3] = pcs.budget;
    x[4] = residual;
    x[5] = flag(pcs.sticky);
    x[6] = flag(pcs.non_sticky);
    x[7] = signal_entropy(pcs.d_hat, pcs.coh_star, pcs.r);
    [x[8], x[9]] = tenant_features(pcs, tenant);
    x[10] = (pcs.boxes_max.max(0) as f64).ln_1p();
    if let Some(ev) = evidence {
        let f = evidence_features(ev);
        x[11] = 1.0;
        x[12] = f.resp_tokens_log;
        x[13] = f.ctx_tokens_log;
        x[14] = f.token_coverage;
        x[15] = f.novel_content_share;
        x[16] = f.bigram_containment;
        x[17] = f.trigram_containment;
        x[18] = f.unsupported_number_share;
        x[19] = f.unsupported_numbers_log;
        x[20] = f.question_overlap;
        x[21] = f.novel_capitalized_share;
    }
    // A non-finite claimed signal must not poison a linear score.
    for v in &mut x {
        if !v.is_finite() {
            *v = 0.0;
        }
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pcs::parse;

    #[test]
    fn names_are_unique() {
        let mut n = FEATURE_NAMES.to_vec();
        n.sort_unstable();
        n.dedup();
        assert_eq!(n.len(), N_FEATURES);
    }

    #[test]
    fn golden_pcs_without_evidence() {
        let p = parse(include_bytes!("../tests/data/pcs_tiny_case_1.json")).unwrap();
        let s = PcsSignals::from_pcs(&p);
        let x = features(&s, None, &TenantStats::fresh());
        assert_eq!(x[0], 0.528320834);
        assert_eq!(x[1], 0.066666667);
        assert_eq!(x[4], 0.0);
        assert_eq!((x[5], x[6]), (0.0, 0.0));
        assert!((x[7] - 0.925497784).abs() < 1e-9);
        assert!((x[8] - -0.633333333).abs() < 1e-9);
        assert!((x[9] - -4.81578947).abs() < 1e-8);
        assert_eq!(x[10], 15f64.ln_1p());
        assert!(x[11..].iter().all(|&v| v == 0.0));
    }

    #[test]
    fn evidence_block_and_bad_numbers() {
        let s = PcsSignals {
            d_hat: f64::NAN,
            coh_star: 0.9,
            r: 0.5,
            budget: 0.4,
            d_hat_recomputed: None,
            sticky: true,
            non_sticky: false,
            boxes_max: 3,
        };
        let ev = Evidence {
            question: "capital of France?".into(),
            context: "Paris is the capital of France.".into(),
            citations: vec![],
            response: "Paris".into(),
            task: None,
        };
        let x = features(&s, Some(&ev), &TenantStats::fresh());
        assert_eq!(x[0], 0.0);
        assert_eq!(x[4], RESIDUAL_UNCOMPUTABLE);
        assert_eq!(x[5], 1.0);
        assert!((x[9] - -3.0).abs() < 1e-12);
        assert_eq!(x[11], 1.0);
        assert_eq!(x[12], 1f64.ln_1p());
        assert_eq!(x[13], 6f64.ln_1p());
        assert_eq!(&x[14..], &[1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn tenant_update_matches_spec_12_9() {
        let mut t = TenantStats::fresh();
        t.update(0.528320834, 0.066666667, 0.318421053, 0.0);
        assert!((t.avg_coh - 0.51).abs() < 1e-9);
        assert!((t.avg_r - 0.655526316).abs() < 1e-9);
        assert!((t.std_r - 0.202711587).abs() < 1e-9);
    }

    #[test]
    fn implausible_samples_are_ignored() {
        let mut t = TenantStats::fresh();
        for (d, c, r, l) in [
            (f64::NAN, 0.5, 0.5, 0.0),
            (1.0, f64::INFINITY, 0.5, 0.0),
            (1.0, 0.5, 1e300, 0.0),
            (1.0, 0.5, -1e300, 0.0),
            (3.6, 0.5, 0.5, 0.0),
            (-0.1, 0.5, 0.5, 0.0),
            (1.0, 1.06, 0.5, 0.0),
            (1.0, 0.5, 1.01, 0.0),
            (1.0, 0.5, 0.5, f64::NAN),
            (1.0, 0.5, 0.5, -1.0),
        ] {
            assert!(!t.update(d, c, r, l), "{d} {c} {r} {l}");
            assert_eq!(t, TenantStats::fresh());
        }
        // The range edges are plausible.
        assert!(t.update(3.5, 1.05, 1.0, 0.0));
        assert!(t.update(0.0, 0.0, 0.0, 10.0));
        assert_eq!(t.count, 2);
        assert!(t.is_valid());
        assert!(!TenantStats {
            std_r: f64::NAN,
            ..TenantStats::fresh()
        }
        .is_valid());
        assert!(!TenantStats {
            avg_r: f64::INFINITY,
            ..TenantStats::fresh()
        }
        .is_valid());
    }

    #[test]
    fn robust_window_statistics() {
        // Medians and the winsorised std, by hand: r = 0.1..0.9 → median 0.5; with 9 samples
        // floor(0.9) = 0 are clipped, so the std is the plain one: √(2·(0.16+0.09+0.04+0.01)/9).
        let w: Vec<(f64, f64, f64)> = (1..=9)
            .map(|i| (i as f64 * 0.3, 1.0 - i as f64 * 0.1, i as f64 * 0.1))
            .collect();
        let t = TenantStats::robust(&w, 9).unwrap();
        assert!((t.avg_d_hat - 1.5).abs() < 1e-12);
        assert!((t.avg_coh - 0.5).abs() < 1e-12);
        assert!((t.avg_r - 0.5).abs() < 1e-12);
        assert!((t.std_r - (0.6f64 / 9.0).sqrt()).abs() < 1e-12, "{t:?}");
        // 20 samples: 2 clipped on each side. 0, 0, 1×16, 5, 9 → 1×20 → std 0; a clamped r
        // majority (1.0) with a spread minority keeps a non-zero scale (the MAD would be 0).
        let mut v = vec![0.0, 0.0, 5.0, 9.0];
        v.extend(std::iter::repeat_n(1.0, 16));
        assert_eq!(winsorized_std(v, 0.1), 0.0);
        let mut r: Vec<f64> = (0..9).map(|i| 0.5 + 0.05 * i as f64).collect();
        r.extend(std::iter::repeat_n(1.0, 11));
        assert!(winsorized_std(r, 0.1) > 0.1);
        assert_eq!(winsorized_std(vec![], 0.1), 0.0);
        assert_eq!((t.count, t.avg_latency_ms), (9, 0.0));
        // Even count: the mean of the two middle values.
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(vec![]), 0.0);
        // Too few plausible samples: none; implausible ones are not counted.
        assert_eq!(TenantStats::robust(&w, 10), None);
        let mut bad = w.clone();
        bad.extend([(f64::NAN, 0.5, 0.5), (1.0, 0.5, 1e200), (9.0, 0.5, 0.5)]);
        assert_eq!(TenantStats::robust(&bad, 9), Some(t));
        assert_eq!(TenantStats::robust(&[], 0), None);
        // A minority of extreme rows (40 of 100) leaves the medians within the majority's range
        // (an EMA with α = 0.3 ends at the extremes after a few rows).
        let mut burst: Vec<(f64, f64, f64)> = (0..60)
            .map(|i| (1.0 + 0.001 * i as f64, 0.6, 0.4 + 0.001 * i as f64))
            .collect();
        burst.extend(std::iter::repeat_n((3.5, 0.0, 1.0), 40));
        let t = TenantStats::robust(&burst, 50).unwrap();
        assert!((1.0..=1.06).contains(&t.avg_d_hat), "{t:?}");
        assert_eq!(t.avg_coh, 0.6);
        assert!((0.4..=0.46).contains(&t.avg_r), "{t:?}");
        let mut ema = TenantStats::fresh();
        for &(d, c, r) in &burst {
            ema.update(d, c, r, 0.0);
        }
        assert!(ema.avg_d_hat > 3.4 && ema.avg_coh < 0.01, "{ema:?}");
    }

    #[test]
    fn pcs_versions() {
        let mut p = parse(include_bytes!("../tests/data/pcs_tiny_case_1.json")).unwrap();
        assert_eq!(pcs_version(&p), PCS_V01);
        p.evidence_sha256 = "ab".repeat(32);
        assert_eq!(pcs_version(&p), PCS_V02);
    }

    #[test]
    fn population_stats() {
        let t = TenantStats::from_population(&[1.0, 3.0], &[0.2, 0.4], &[0.5, 0.7]);
        assert_eq!(t.avg_d_hat, 2.0);
        assert!((t.avg_coh - 0.3).abs() < 1e-12);
        assert!((t.std_r - 0.1).abs() < 1e-12);
        assert_eq!(t.count, 2);
    }

    /// Latency budget of the inline path: ≤ 20 µs for a 2 KB evidence payload in release.
    /// Run with `cargo test --release -p kakeya-core features_latency -- --ignored --nocapture`.
    #[test]
    #[ignore = "timing; run in release"]
    fn features_latency() {
        let words =
            "the river Seine flows through Paris which had 2165423 inhabitants in 2019 and \
                     is the capital of France since the year 987 according to most historians ";
        let context: String = words.repeat(20).chars().take(1700).collect();
        let ev = Evidence {
            question: "How many people lived in Paris in 2019, and what flows through it?".into(),
            context,
            citations: vec![],
            response: "Paris had about 2.1 million inhabitants in 2019; the Seine flows through \
                       it, and it has been the capital of France since 987 according to most \
                       historians, although the Loire is sometimes named by mistake."
                .into(),
            task: None,
        };
        let total = ev.question.len() + ev.context.len() + ev.response.len();
        assert!((1900..2200).contains(&total), "{total}");
        let s = PcsSignals::from_built(&crate::pcs_builder::build(
            &ev.response,
            &Default::default(),
        ));
        let n = 20_000;
        let t = std::time::Instant::now();
        let mut acc = 0.0;
        for _ in 0..n {
            acc += features(&s, Some(&ev), &TenantStats::fresh())[14];
        }
        let per = t.elapsed().as_secs_f64() / n as f64 * 1e6;
        let t = std::time::Instant::now();
        for _ in 0..2000 {
            acc += crate::pcs_builder::build(&ev.response, &Default::default()).r;
        }
        let build = t.elapsed().as_secs_f64() / 2000.0 * 1e6;
        eprintln!(
            "features: {per:.2} µs per {total}-byte evidence; pcs build: {build:.1} µs ({acc})"
        );
        assert!(per < 20.0, "{per} µs");
    }
}
