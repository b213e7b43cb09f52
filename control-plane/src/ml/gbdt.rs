//! Gradient-boosted trees: trained with `forust-ml`, exported into the
//! [`kakeya_core::trees::TreeModel`] artifact that core (hence the filter) scores.
//!
//! Why `forust-ml` (0.8, released 2026-10; candidates checked on crates.io):
//! * **forust-ml** — pure Rust (rayon, serde, rand; no C), XGBoost's algorithm (second-order
//!   histogram boosting, L2 on leaf weights, `min_leaf_weight`, depth-wise growth) with the
//!   classic knobs we want to fix (trees, learning rate, max depth); binary log-loss; per-row
//!   sample weights in `fit` (what class-weighted datasets need); deterministic: sampling is
//!   off here and any randomness is one `StdRng` seeded from `seed`, and its parallel work is
//!   split by column, never a cross-thread float reduction, so the trees do not depend on the
//!   thread count; the fitted trees are public plain data (`split_feature`, `split_value`,
//!   `left_child`, `right_child`, `weight_value`), so they export losslessly and
//!   `base_score + Σ leaves` reproduces its own `predict` bit for bit (tested below).
//! * `perpetual` (2.3, maintained, a fork of forust): also pure Rust with weights and exportable
//!   trees, but its single "budget" knob hides depth and tree count, so the ensemble's size is
//!   not ours to bound, and it pulls `sysinfo`;
//! * `gbdt` (mesalock, 0.1.3, last release 2024-01): unmaintained;
//! * `smartcore` 0.7 (maintained): its `xgboost` regressor takes no sample weights and keeps its
//!   trees private; `linfa-trees`: single decision trees only, no boosting;
//! * `hessboost`: needs Rust 1.93 and C zstd (not pure Rust).
//!
//! The recipe is the logistic one with a different learner: the same features, the same
//! calibration split of items ([`is_calibration`]), Platt on the held-out items' decision values
//! and the same threshold rule ([`super::model::calibrate`]). The crate is a dependency of the
//! control plane only; core and the filters never link it.

use super::model::{calibrate, is_calibration, Weighting};
use forust_ml::objective::ObjectiveType;
use forust_ml::{GradientBooster, Matrix};
use kakeya_core::features::{TenantStats, FEATURE_NAMES, N_FEATURES, SCHEMA_VERSION};
use kakeya_core::model::{Thresholds, TrainingMeta};
use kakeya_core::trees::{Boosting, Tree, TreeModel, KIND_TREES, MAX_DEPTH};

/// The training library, recorded in every artifact (a test checks it against `Cargo.lock`).
pub const LEARNER: &str = "forust-ml 0.8.0";

/// Hyperparameters of the booster.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GbdtParams {
    /// Number of trees.
    pub iterations: usize,
    /// Shrinkage of every leaf value.
    pub learning_rate: f64,
    /// Most splits on a root-to-leaf path (at most [`MAX_DEPTH`]).
    pub max_depth: usize,
    /// Least hessian sum (≈ rows × p(1 − p)) of a leaf.
    pub min_leaf_weight: f64,
    /// L2 penalty on leaf values.
    pub l2: f64,
    /// Histogram bins per feature.
    pub nbins: u16,
}

/// The default recipe: 200 trees of depth ≤ 4 at learning rate 0.1 (`kakeya eval` prints the
/// CV time: seconds on the 25,000-row HaluEval file). Chosen with the cross-validated figures of
/// `kakeya eval --model-kind gbdt` (so slightly optimistic for this file): larger ensembles
/// (300 trees, depth 5 or 6, `--trees`, `--max-depth`) did not raise them noticeably.
pub const DEFAULT_PARAMS: GbdtParams = GbdtParams {
    iterations: 200,
    learning_rate: 0.1,
    max_depth: 4,
    min_leaf_weight: 5.0,
    l2: 1.0,
    nbins: 256,
};

/// Training refused or failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GbdtError {
    #[error("gradient boosting: {0}")]
    Params(String),
    #[error("gradient boosting: no row to fit on")]
    NoRows,
    #[error("gradient boosting: feature {0} of row {1} is not finite")]
    NonFinite(usize, usize),
    #[error("gradient boosting failed: {0}")]
    Learner(String),
    #[error("gradient boosting produced an ensemble core refuses: {0}")]
    Export(String),
}

impl GbdtParams {
    fn check(&self) -> Result<(), GbdtError> {
        let bad = |m: &str| Err(GbdtError::Params(m.into()));
        if self.iterations == 0 || self.iterations > kakeya_core::trees::MAX_TREES {
            return bad("iterations must be within 1..=1000");
        }
        if self.max_depth == 0 || self.max_depth > MAX_DEPTH {
            return bad("max_depth must be within 1..=8");
        }
        if !(self.learning_rate > 0.0 && self.learning_rate <= 1.0) {
            return bad("learning_rate must be within (0, 1]");
        }
        if !(self.min_leaf_weight >= 0.0 && self.min_leaf_weight.is_finite()) {
            return bad("min_leaf_weight must be finite and ≥ 0");
        }
        if !(self.l2 >= 0.0 && self.l2.is_finite()) {
            return bad("l2 must be finite and ≥ 0");
        }
        if self.nbins < 2 {
            return bad("nbins must be at least 2");
        }
        Ok(())
    }

    /// The booster these parameters describe: log-loss, depth-wise growth, no row or column
    /// sampling (nothing random), the base score initialised to the weighted log-odds of the
    /// labels, NaN as "missing" (never present: features are finite by construction and
    /// checked before fitting).
    fn booster(&self, seed: u64) -> GradientBooster {
        GradientBooster::default()
            .set_objective_type(ObjectiveType::LogLoss)
            .set_iterations(self.iterations)
            .set_learning_rate(self.learning_rate as f32)
            .set_max_depth(self.max_depth)
            .set_max_leaves(usize::MAX)
            .set_min_leaf_weight(self.min_leaf_weight as f32)
            .set_l2(self.l2 as f32)
            .set_gamma(0.0)
            .set_nbins(self.nbins)
            .set_subsample(1.0)
            .set_colsample_bytree(1.0)
            .set_initialize_base_score(true)
            .set_create_missing_branch(false)
            .set_parallel(true)
            .set_seed(seed)
    }

    /// Provenance as recorded in the artifact.
    pub fn boosting(&self) -> Boosting {
        Boosting {
            learner: LEARNER.into(),
            iterations: self.iterations,
            learning_rate: self.learning_rate,
            max_depth: self.max_depth,
            min_leaf_weight: self.min_leaf_weight,
            nbins: usize::from(self.nbins),
        }
    }
}

/// A fitted booster and the ensemble exported from it.
pub struct Fitted {
    pub booster: GradientBooster,
    pub base_score: f64,
    pub trees: Vec<Tree>,
}

/// Fits the booster on the rows `rows` of `x` (row-major, [`N_FEATURES`] columns), with
/// sample `weights` (one per entry of `rows`, in its order; `None` = 1 each), and exports its
/// trees.
pub fn fit_ensemble(
    x: &[f64],
    labels: &[u8],
    rows: &[usize],
    weights: Option<&[f64]>,
    params: &GbdtParams,
    seed: u64,
) -> Result<Fitted, GbdtError> {
    params.check()?;
    if rows.is_empty() {
        return Err(GbdtError::NoRows);
    }
    let d = N_FEATURES;
    // forust's matrix is column-major.
    let mut cols = vec![0.0; rows.len() * d];
    for (r, &i) in rows.iter().enumerate() {
        for j in 0..d {
            let v = x[i * d + j];
            if !v.is_finite() {
                return Err(GbdtError::NonFinite(j, i));
            }
            cols[j * rows.len() + r] = v;
        }
    }
    let y: Vec<f64> = rows.iter().map(|&i| f64::from(labels[i])).collect();
    let w: Vec<f64> = match weights {
        Some(w) if w.len() == rows.len() => w.to_vec(),
        Some(w) => {
            return Err(GbdtError::Params(format!(
                "{} sample weights for {} rows",
                w.len(),
                rows.len()
            )))
        }
        None => vec![1.0; rows.len()],
    };
    let data = Matrix::new(&cols, rows.len(), d);
    let mut booster = params.booster(seed);
    booster
        .fit(&data, &y, &w, None)
        .map_err(|e| GbdtError::Learner(e.to_string()))?;
    let trees = booster
        .trees
        .iter()
        .map(export)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Fitted {
        base_score: booster.base_score,
        trees,
        booster,
    })
}

/// One forust tree as a core [`Tree`], its nodes renumbered breadth-first from the root (so every
/// child comes after its parent whatever order the learner stored them in).
fn export(t: &forust_ml::tree::Tree) -> Result<Tree, GbdtError> {
    // Node positions by their number (the node type itself is not exported by the crate).
    let by_num: std::collections::BTreeMap<usize, usize> = t
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.num, i))
        .collect();
    let node = |num: usize| {
        by_num
            .get(&num)
            .map(|&i| &t.nodes[i])
            .ok_or_else(|| GbdtError::Export(format!("node {num} is missing")))
    };
    let mut order = vec![node(0)?];
    let mut out = Tree {
        feature: Vec::new(),
        threshold: Vec::new(),
        left: Vec::new(),
        right: Vec::new(),
        value: Vec::new(),
    };
    let mut i = 0;
    while i < order.len() {
        let n = order[i];
        if n.is_leaf {
            out.feature.push(0);
            out.threshold.push(0.0);
            out.left.push(0);
            out.right.push(0);
            out.value.push(n.weight_value);
        } else {
            if n.has_missing_branch() {
                return Err(GbdtError::Export(
                    "a split has a separate missing branch".into(),
                ));
            }
            let feature = u16::try_from(n.split_feature)
                .map_err(|_| GbdtError::Export("feature index out of range".into()))?;
            let next = order.len() as u32;
            out.feature.push(feature);
            out.threshold.push(n.split_value);
            out.left.push(next);
            out.right.push(next + 1);
            out.value.push(0.0);
            order.push(node(n.left_child)?);
            order.push(node(n.right_child)?);
            if order.len() > kakeya_core::trees::MAX_TREE_NODES {
                return Err(GbdtError::Export("a tree is too large".into()));
            }
        }
        i += 1;
    }
    Ok(out)
}

/// The artifact of a fitted ensemble, before calibration (Platt A = −1, B = 0).
fn uncalibrated(
    f: Fitted,
    params: &GbdtParams,
    tenant: TenantStats,
    training: TrainingMeta,
) -> TreeModel {
    TreeModel {
        kind: KIND_TREES.into(),
        schema_version: SCHEMA_VERSION.into(),
        feature_names: FEATURE_NAMES.iter().map(|s| s.to_string()).collect(),
        base_score: f.base_score,
        trees: f.trees,
        boosting: params.boosting(),
        platt: kakeya_core::model::Platt { a: -1.0, b: 0.0 },
        thresholds: Thresholds {
            escalate: super::model::DEFAULT_ESCALATE,
        },
        tenant,
        training,
    }
}

/// The recipe on rows `idx` of `x` (row-major, [`N_FEATURES`] columns, tenant columns computed
/// with `tenant`): the booster on the fit split of items, its rows weighted by `weighting` (as
/// the logistic fit's: sample weights, never duplicated rows), then Platt and the escalation
/// threshold on the held-out calibration split, unweighted ([`calibrate`], as for the logistic
/// model). The artifact's `training` is the caller's.
#[allow(clippy::too_many_arguments)]
pub fn fit_model(
    x: &[f64],
    labels: &[u8],
    groups: &[&str],
    idx: &[usize],
    weighting: Weighting,
    seed: u64,
    params: &GbdtParams,
    tenant: TenantStats,
    training: TrainingMeta,
) -> Result<TreeModel, GbdtError> {
    let (cal, fit): (Vec<usize>, Vec<usize>) =
        idx.iter().partition(|&&i| is_calibration(groups[i], seed));
    let w = weighting.weights(labels, &fit);
    let f = fit_ensemble(x, labels, &fit, w.as_deref(), params, seed)?;
    let mut m = uncalibrated(f, params, tenant, training);
    let d = N_FEATURES;
    let s: Vec<f64> = cal
        .iter()
        .map(|&i| m.decision(&x[i * d..(i + 1) * d]))
        .collect();
    let y: Vec<u8> = cal.iter().map(|&i| labels[i]).collect();
    (m.platt, m.thresholds.escalate) = calibrate(&s, &y);
    m.validate().map_err(|e| GbdtError::Export(e.to_string()))?;
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kakeya_core::model::Model;
    use kakeya_core::pcs_builder::SplitMix64;

    /// `n` rows of [`N_FEATURES`] columns whose label depends on columns 14 and 2 (an
    /// interaction no linear model captures), with noise.
    fn data(n: usize, seed: u64) -> (Vec<f64>, Vec<u8>, Vec<String>) {
        let mut rng = SplitMix64(seed);
        let mut x = Vec::with_capacity(n * N_FEATURES);
        let mut y = Vec::with_capacity(n);
        let mut g = Vec::with_capacity(n);
        for i in 0..n {
            let row: Vec<f64> = (0..N_FEATURES).map(|_| rng.next_f64()).collect();
            let signal = (row[14] > 0.5) != (row[2] > 0.5);
            let noisy = rng.next_u64() % 10 == 0;
            y.push(u8::from(signal != noisy));
            x.extend(row);
            g.push(format!("item-{}", i / 2));
        }
        (x, y, g)
    }

    fn meta() -> TrainingMeta {
        TrainingMeta {
            seed: 5,
            rows: 0,
            dataset_sha256: "00".into(),
            recipe_version: "test".into(),
            l2: DEFAULT_PARAMS.l2,
            cv_metrics: serde_json::json!({}),
        }
    }

    const SMALL: GbdtParams = GbdtParams {
        iterations: 30,
        ..DEFAULT_PARAMS
    };

    #[test]
    fn core_scores_the_exported_trees_exactly_as_the_learner_predicts() {
        let (x, y, _) = data(600, 1);
        let rows: Vec<usize> = (0..600).collect();
        let f = fit_ensemble(&x, &y, &rows, None, &SMALL, 5).unwrap();
        assert_eq!(f.trees.len(), 30);
        let cols: Vec<f64> = (0..N_FEATURES)
            .flat_map(|j| (0..600).map(move |i| (i, j)))
            .map(|(i, j)| x[i * N_FEATURES + j])
            .collect();
        let predicted = f
            .booster
            .predict(&Matrix::new(&cols, 600, N_FEATURES), false);
        let m = uncalibrated(f, &SMALL, TenantStats::fresh(), meta());
        m.validate().unwrap();
        for (i, p) in predicted.iter().enumerate() {
            let z = m.decision(&x[i * N_FEATURES..(i + 1) * N_FEATURES]);
            assert_eq!(z.to_bits(), p.to_bits(), "row {i}: {z} vs {p}");
        }
        // Every child after its parent, depth within the parameters.
        for t in &m.trees {
            for (i, (&l, &r)) in t.left.iter().zip(&t.right).enumerate() {
                assert!(l == 0 && r == 0 || (l as usize > i && r as usize > i));
            }
        }
    }

    #[test]
    fn the_recipe_learns_an_interaction_calibrates_and_is_deterministic() {
        let (x, y, g) = data(2000, 2);
        let groups: Vec<&str> = g.iter().map(|s| s.as_str()).collect();
        let idx: Vec<usize> = (0..2000).collect();
        let fit = |seed| {
            Model::from(
                fit_model(
                    &x,
                    &y,
                    &groups,
                    &idx,
                    Weighting::Unit,
                    seed,
                    &SMALL,
                    TenantStats::fresh(),
                    meta(),
                )
                .unwrap(),
            )
        };
        let a = fit(5);
        let b = fit(5);
        assert_eq!(a.canonical_bytes(), b.canonical_bytes());
        assert_eq!(a.sha256(), b.sha256());
        assert!(a.version().starts_with("gbdt-"));
        // Another seed: another calibration split, another artifact.
        assert_ne!(a.sha256(), fit(6).sha256());
        assert!(a.platt().a < 0.0, "{:?}", a.platt());
        // The interaction is learnt: the four corners score as the labels say.
        let mut row = [0.5; N_FEATURES];
        let mut risk = |cov: f64, r: f64| {
            row[14] = cov;
            row[2] = r;
            a.score(&row).1
        };
        // (30 shallow trees and Platt on noisy labels: clearly apart, not extreme.)
        assert!(risk(0.9, 0.1) > 0.6 && risk(0.1, 0.9) > 0.6);
        assert!(risk(0.1, 0.1) < 0.4 && risk(0.9, 0.9) < 0.4);
        // Round trip through the canonical JSON.
        assert_eq!(Model::from_json(&a.canonical_bytes()).unwrap(), a);
    }

    /// Balanced class weights (a training job's) are sample weights over the fit split: on data
    /// with one hallucination in four, the base score (the weighted log-odds of the labels)
    /// moves from ln(1/3) to 0, and the calibration still follows the real class balance.
    #[test]
    fn balanced_weighting_weighs_the_classes_equally() {
        let (x, mut y, g) = data(2000, 4);
        for (i, l) in y.iter_mut().enumerate() {
            *l = u8::from(i % 4 == 0);
        }
        let groups: Vec<&str> = g.iter().map(|s| s.as_str()).collect();
        let idx: Vec<usize> = (0..2000).collect();
        let fit = |w| {
            fit_model(
                &x,
                &y,
                &groups,
                &idx,
                w,
                5,
                &SMALL,
                TenantStats::fresh(),
                meta(),
            )
            .unwrap()
        };
        let (unit, balanced) = (fit(Weighting::Unit), fit(Weighting::Balanced));
        assert!(
            (unit.base_score - (1.0f64 / 3.0).ln()).abs() < 0.05,
            "{}",
            unit.base_score
        );
        assert!(balanced.base_score.abs() < 1e-6, "{}", balanced.base_score);
        // Random features: the calibrated risk of a typical row is the share of hallucinations.
        let mean = |m: &TreeModel| {
            (0..2000)
                .map(|i| {
                    m.platt
                        .apply(m.decision(&x[i * N_FEATURES..(i + 1) * N_FEATURES]))
                })
                .sum::<f64>()
                / 2000.0
        };
        assert!((mean(&balanced) - 0.25).abs() < 0.05, "{}", mean(&balanced));
    }

    #[test]
    fn weights_bad_rows_and_bad_parameters() {
        let (x, y, _) = data(400, 3);
        let rows: Vec<usize> = (0..400).collect();
        // Upweighting the hallucinated rows raises every prediction's base.
        let w: Vec<f64> = y.iter().map(|&l| if l == 1 { 4.0 } else { 1.0 }).collect();
        let plain = fit_ensemble(&x, &y, &rows, None, &SMALL, 1).unwrap();
        let weighted = fit_ensemble(&x, &y, &rows, Some(&w), &SMALL, 1).unwrap();
        assert!(weighted.base_score > plain.base_score + 1.0);
        // One weight per fitted row, or a refusal.
        assert!(matches!(
            fit_ensemble(&x, &y, &rows, Some(&w[..10]), &SMALL, 1),
            Err(GbdtError::Params(_))
        ));
        let mut bad = x.clone();
        bad[3 * N_FEATURES + 7] = f64::NAN;
        assert_eq!(
            fit_ensemble(&bad, &y, &rows, None, &SMALL, 1).err(),
            Some(GbdtError::NonFinite(7, 3))
        );
        assert_eq!(
            fit_ensemble(&x, &y, &[], None, &SMALL, 1).err(),
            Some(GbdtError::NoRows)
        );
        for p in [
            GbdtParams {
                max_depth: MAX_DEPTH + 1,
                ..SMALL
            },
            GbdtParams {
                iterations: 0,
                ..SMALL
            },
            GbdtParams {
                learning_rate: f64::NAN,
                ..SMALL
            },
            GbdtParams { l2: -1.0, ..SMALL },
        ] {
            assert!(matches!(
                fit_ensemble(&x, &y, &rows, None, &p, 1),
                Err(GbdtError::Params(_))
            ));
        }
    }

    #[test]
    fn the_recorded_learner_is_the_locked_crate() {
        let lock = include_str!("../../../Cargo.lock");
        let (name, version) = LEARNER.split_once(' ').unwrap();
        assert!(
            lock.contains(&format!("name = \"{name}\"\nversion = \"{version}\"\n")),
            "Cargo.lock does not lock {LEARNER}"
        );
    }
}
