//! Gradient-boosted trees as the data plane sees them: a tree ensemble over the
//! [`crate::features`] vector, scored with plain `f64` comparisons and additions (no allocation,
//! no recursion, no panic), so the filter runs it in microseconds.
//!
//! Artifact contract: `z = base_score + Σ_trees leaf(x)`, a log-odds; then the same Platt
//! calibration, escalation threshold and bounded tenant shift as the logistic model
//! ([`crate::model::Model`], [`crate::bundle`]). Each tree is flat node arrays of one length:
//! node 0 is the root; a node with `left = right = 0` is a leaf worth `value`; any other node
//! sends `x[feature] < threshold` to `left`, everything else (including NaN) to `right`.
//! Training lives in the control plane (`kakeya_control_plane::ml::gbdt`); the feature vector
//! is finite by construction ([`crate::features::features`] maps non-finite values to 0), so
//! the NaN rule never fires on served traffic and exists only so that no input can fail.
//!
//! Defence in depth (bundles are signed, yet a hostile or buggy artifact must not make the filter
//! spin or exhaust memory): [`TreeModel::validate`] requires every child index to be greater
//! than its parent's and every non-root node to have exactly one parent (a proper tree, no
//! cycle, every node reachable), finite thresholds and leaf values, feature indices within the
//! schema and at most [`MAX_TREES`] trees, [`MAX_DEPTH`] levels of splits and
//! [`MAX_TOTAL_NODES`] nodes. Scoring is then at most `MAX_TREES × MAX_DEPTH` comparisons.
//!
//! Leaf values are `f32` (what the trainer computes), written with the shortest `f32` spelling:
//! an ensemble of a few hundred trees stays a few hundred KB of JSON.

use crate::artifact::{check_schema, ModelError, Platt, Thresholds, TrainingMeta};
use crate::features::{TenantStats, N_FEATURES};
use serde::{Deserialize, Serialize};

pub const KIND_TREES: &str = "gradient_boosted_trees";

/// Most trees an ensemble may have.
pub const MAX_TREES: usize = 1000;
/// Most splits on any root-to-leaf path.
pub const MAX_DEPTH: usize = 8;
/// Most nodes of one tree (a full tree of [`MAX_DEPTH`]).
pub const MAX_TREE_NODES: usize = (1 << (MAX_DEPTH + 1)) - 1;
/// Most nodes of all trees together.
pub const MAX_TOTAL_NODES: usize = 100_000;

/// One regression tree (see the module docs for the layout).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tree {
    /// Feature index a split node tests (0 on leaves).
    pub feature: Vec<u16>,
    /// Split threshold (0 on leaves).
    pub threshold: Vec<f64>,
    /// Child taken when `x[feature] < threshold`; 0 on leaves.
    pub left: Vec<u32>,
    /// Child taken otherwise; 0 on leaves.
    pub right: Vec<u32>,
    /// Leaf value in log-odds (0 on split nodes).
    pub value: Vec<f32>,
}

/// How the ensemble was grown (provenance, shown on model cards; scoring does not read it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Boosting {
    /// Training library and version, e.g. `forust-ml 0.8.0`.
    pub learner: String,
    pub iterations: usize,
    pub learning_rate: f64,
    pub max_depth: usize,
    pub min_leaf_weight: f64,
    pub nbins: usize,
}

/// A trained gradient-boosted tree ensemble.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TreeModel {
    pub kind: String,
    pub schema_version: String,
    pub feature_names: Vec<String>,
    /// Initial log-odds every tree adds to.
    pub base_score: f64,
    pub trees: Vec<Tree>,
    pub boosting: Boosting,
    pub platt: Platt,
    pub thresholds: Thresholds,
    /// Tenant baseline the features were computed with.
    pub tenant: TenantStats,
    /// Provenance; `l2` is the trees' L2 penalty on leaf values.
    pub training: TrainingMeta,
}

fn bad(tree: usize, why: &'static str) -> ModelError {
    ModelError::Tree { tree, why }
}

impl Tree {
    /// Node count (the length of every array).
    pub fn len(&self) -> usize {
        self.feature.len()
    }

    pub fn is_empty(&self) -> bool {
        self.feature.is_empty()
    }

    /// Checks the layout of tree number `t` (see the module docs).
    fn validate(&self, t: usize) -> Result<(), ModelError> {
        let n = self.len();
        if n == 0 {
            return Err(bad(t, "has no node"));
        }
        if n > MAX_TREE_NODES {
            return Err(bad(t, "has more nodes than a tree of the maximum depth"));
        }
        if self.threshold.len() != n
            || self.left.len() != n
            || self.right.len() != n
            || self.value.len() != n
        {
            return Err(bad(t, "node arrays differ in length"));
        }
        // depth[i] + 1 once node i has its parent; 0 = no parent yet (the root has depth 1).
        let mut depth = vec![0usize; n];
        if let Some(root) = depth.first_mut() {
            *root = 1;
        }
        let nodes = self
            .feature
            .iter()
            .zip(&self.threshold)
            .zip(self.left.iter().zip(&self.right))
            .zip(&self.value)
            .enumerate();
        for (i, (((&feature, &threshold), (&l, &r)), &value)) in nodes {
            let (l, r) = (l as usize, r as usize);
            if l == 0 && r == 0 {
                if !value.is_finite() {
                    return Err(bad(t, "a leaf value is not finite"));
                }
                continue;
            }
            if !(i < l && l < n && i < r && r < n && l != r) {
                return Err(bad(
                    t,
                    "a child index is out of range, not after its parent, or both children are one node",
                ));
            }
            if usize::from(feature) >= N_FEATURES {
                return Err(bad(t, "a split tests a feature outside the schema"));
            }
            if !threshold.is_finite() {
                return Err(bad(t, "a split threshold is not finite"));
            }
            // Children come after their parent, so depth[i] is final when node i is reached.
            let parent = depth.get(i).copied().unwrap_or(0);
            for c in [l, r] {
                // In range: checked above (c < n).
                let Some(slot) = depth.get_mut(c) else {
                    return Err(bad(t, "a child index is out of range"));
                };
                if *slot != 0 {
                    return Err(bad(t, "a node has two parents"));
                }
                *slot = parent + 1;
                if *slot > MAX_DEPTH + 1 {
                    return Err(bad(t, "deeper than the maximum depth"));
                }
            }
        }
        if depth.contains(&0) {
            return Err(bad(t, "a node is not reachable from the root"));
        }
        Ok(())
    }

    /// The leaf value `x` reaches. Never panics: a feature beyond `x` counts as NaN, and the
    /// walk stops after [`MAX_DEPTH`] splits (a validated tree never needs more).
    #[inline]
    pub fn leaf(&self, x: &[f64]) -> f64 {
        let mut i = 0usize;
        for _ in 0..=MAX_DEPTH {
            let (Some(&l), Some(&r)) = (self.left.get(i), self.right.get(i)) else {
                return 0.0;
            };
            if l == 0 && r == 0 {
                return self.value.get(i).map_or(0.0, |&v| f64::from(v));
            }
            let f = self.feature.get(i).map_or(usize::MAX, |&f| usize::from(f));
            let v = x.get(f).copied().unwrap_or(f64::NAN);
            let go_left = self.threshold.get(i).is_some_and(|&th| v < th);
            i = if go_left { l } else { r } as usize;
        }
        0.0
    }
}

impl TreeModel {
    /// Checks the artifact against this build's feature schema and the limits above.
    pub fn validate(&self) -> Result<(), ModelError> {
        if self.kind != KIND_TREES {
            return Err(ModelError::Kind(self.kind.clone()));
        }
        check_schema(&self.schema_version, &self.feature_names)?;
        if self.trees.is_empty() || self.trees.len() > MAX_TREES {
            return Err(ModelError::TooLarge("between 1 and 1000 trees"));
        }
        let total: usize = self.trees.iter().map(Tree::len).sum();
        if total > MAX_TOTAL_NODES {
            return Err(ModelError::TooLarge("at most 100000 nodes in all"));
        }
        if ![self.base_score, self.platt.a, self.platt.b]
            .iter()
            .all(|v| v.is_finite())
        {
            return Err(ModelError::NonFinite);
        }
        for (t, tree) in self.trees.iter().enumerate() {
            tree.validate(t)?;
        }
        Ok(())
    }

    /// Decision value (log-odds) of `x`: `base_score` plus every tree's leaf, added in tree
    /// order (the trainer's order, so it reproduces the trainer's own prediction bit for bit).
    pub fn decision(&self, x: &[f64]) -> f64 {
        let mut z = self.base_score;
        for t in &self.trees {
            z += t.leaf(x);
        }
        if z.is_nan() {
            0.0
        } else {
            z.clamp(-f64::MAX, f64::MAX)
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::Model;

    /// Two stumps on token coverage (feature 14) and one depth-2 tree.
    pub(crate) fn tiny_trees() -> TreeModel {
        let stump = |f: u16, th: f64, lo: f32, hi: f32| Tree {
            feature: vec![f, 0, 0],
            threshold: vec![th, 0.0, 0.0],
            left: vec![1, 0, 0],
            right: vec![2, 0, 0],
            value: vec![0.0, lo, hi],
        };
        let deep = Tree {
            feature: vec![14, 2, 0, 0, 0],
            threshold: vec![0.5, 0.8, 0.0, 0.0, 0.0],
            left: vec![1, 3, 0, 0, 0],
            right: vec![2, 4, 0, 0, 0],
            value: vec![0.0, 0.0, -0.25, 0.75, 0.125],
        };
        // Everything but the ensemble as in the logistic test model.
        let lr = crate::model::tests::tiny_model();
        TreeModel {
            kind: KIND_TREES.into(),
            schema_version: lr.schema_version,
            feature_names: lr.feature_names,
            base_score: 0.5,
            trees: vec![stump(14, 0.6, 1.0, -1.0), stump(2, 0.9, 0.0, 0.5), deep],
            boosting: Boosting {
                learner: "test".into(),
                iterations: 3,
                learning_rate: 0.1,
                max_depth: 2,
                min_leaf_weight: 1.0,
                nbins: 256,
            },
            platt: lr.platt,
            thresholds: lr.thresholds,
            tenant: lr.tenant,
            training: lr.training,
        }
    }

    #[test]
    fn scoring_walks_each_tree_and_adds_the_leaves() {
        let m = tiny_trees();
        m.validate().unwrap();
        let mut x = [0.0; N_FEATURES];
        // coverage 0.2 < 0.6 → +1; r 0 < 0.9 → 0; coverage < 0.5, r < 0.8 → 0.75.
        x[14] = 0.2;
        assert_eq!(m.decision(&x), 0.5 + 1.0 + 0.0 + 0.75);
        // coverage 0.7: −1; r 0.95: +0.5; coverage ≥ 0.5 → −0.25.
        x[14] = 0.7;
        x[2] = 0.95;
        assert_eq!(m.decision(&x), 0.5 - 1.0 + 0.5 - 0.25);
        // Exactly at a threshold goes right; NaN goes right; a short vector reads NaN.
        x[14] = 0.6;
        assert_eq!(m.trees[0].leaf(&x), -1.0);
        x[14] = f64::NAN;
        assert_eq!(m.trees[0].leaf(&x), -1.0);
        assert_eq!(m.trees[0].leaf(&[]), -1.0);
        x[14] = f64::NEG_INFINITY;
        assert_eq!(m.trees[0].leaf(&x), 1.0);
        let (raw, cal) = Model::from(m.clone()).score(&[0.0; N_FEATURES]);
        assert!((0.0..=1.0).contains(&raw) && (0.0..=1.0).contains(&cal));
    }

    #[test]
    fn round_trip_is_canonical_and_versions_say_gbdt() {
        let m = Model::from(tiny_trees());
        let bytes = m.canonical_bytes();
        let back = Model::from_json(&bytes).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.canonical_bytes(), bytes);
        let v = m.version();
        assert!(v.starts_with("gbdt-") && v.len() == 17, "{v}");
        assert_eq!(&v[5..], &m.sha256()[..12]);
        // Leaf values use the short f32 spelling.
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.contains(r#""value":[0.0,1.0,-1.0]"#), "{text}");
        assert!(
            text.starts_with(r#"{"kind":"gradient_boosted_trees","#),
            "{text}"
        );
    }

    fn refused(edit: impl FnOnce(&mut TreeModel)) -> ModelError {
        let mut m = tiny_trees();
        edit(&mut m);
        match m.validate() {
            Err(e) => e,
            Ok(()) => panic!("accepted"),
        }
    }

    #[test]
    fn hostile_ensembles_are_refused() {
        let tree = |e: ModelError| match e {
            ModelError::Tree { tree, why } => (tree, why),
            other => panic!("{other:?}"),
        };
        // A cycle: a child pointing back at its parent or itself.
        assert_eq!(tree(refused(|m| m.trees[2].left[1] = 0)).0, 2);
        assert_eq!(tree(refused(|m| m.trees[2].left[1] = 1)).0, 2);
        assert!(tree(refused(|m| m.trees[0].right[0] = 7))
            .1
            .contains("out of range"));
        assert!(tree(refused(|m| m.trees[0].right[0] = 1))
            .1
            .contains("one node"));
        // Two parents for one node (a DAG), leaving another node unreachable.
        assert!(tree(refused(|m| m.trees[2].left[1] = 2))
            .1
            .contains("two parents"));
        let e = refused(|m| {
            let t = &mut m.trees[0];
            t.feature.push(0);
            t.threshold.push(0.0);
            t.left.push(0);
            t.right.push(0);
            t.value.push(0.0);
        });
        assert!(tree(e).1.contains("not reachable"));
        assert!(tree(refused(|m| {
            m.trees[1].value.pop();
        }))
        .1
        .contains("length"));
        assert!(tree(refused(|m| m.trees[1].feature[0] = N_FEATURES as u16))
            .1
            .contains("feature"));
        assert!(tree(refused(|m| m.trees[1].threshold[0] = f64::INFINITY))
            .1
            .contains("threshold"));
        assert!(tree(refused(|m| m.trees[1].value[2] = f32::NAN))
            .1
            .contains("leaf value"));
        assert!(tree(refused(|m| m.trees[1] = Tree {
            feature: vec![],
            threshold: vec![],
            left: vec![],
            right: vec![],
            value: vec![],
        }))
        .1
        .contains("no node"));
        assert!(matches!(
            refused(|m| m.base_score = f64::NAN),
            ModelError::NonFinite
        ));
        assert!(matches!(
            refused(|m| m.trees.clear()),
            ModelError::TooLarge(_)
        ));
        assert!(matches!(
            refused(|m| m.kind = "logistic_regression".into()),
            ModelError::Kind(_)
        ));
        assert!(matches!(
            refused(|m| m.schema_version = "hrs-features-v0".into()),
            ModelError::Schema(_)
        ));
    }

    /// A chain of `depth` splits: split node 2d has a leaf at 2d + 1 and the next split (or the
    /// last leaf) at 2d + 2.
    fn chain(depth: usize) -> Tree {
        let n = 2 * depth + 1;
        let mut t = Tree {
            feature: vec![0; n],
            threshold: vec![0.0; n],
            left: vec![0; n],
            right: vec![0; n],
            value: vec![0.0; n],
        };
        for d in 0..depth {
            let i = 2 * d;
            t.left[i] = (i + 1) as u32;
            t.right[i] = (i + 2) as u32;
            t.value[i + 1] = 1.0;
        }
        t.value[n - 1] = 2.0;
        t
    }

    /// A full tree of `depth` levels of splits: node i splits into 2i + 1 and 2i + 2.
    fn full(depth: usize) -> Tree {
        let n = (1 << (depth + 1)) - 1;
        let splits = (1 << depth) - 1;
        let child = |i: usize, k: usize| if i < splits { (2 * i + k) as u32 } else { 0 };
        Tree {
            feature: (0..n).map(|i| (i % N_FEATURES) as u16).collect(),
            threshold: vec![0.5; n],
            left: (0..n).map(|i| child(i, 1)).collect(),
            right: (0..n).map(|i| child(i, 2)).collect(),
            value: (0..n)
                .map(|i| if i < splits { 0.0 } else { i as f32 })
                .collect(),
        }
    }

    #[test]
    fn size_and_depth_limits() {
        let mut m = tiny_trees();
        m.trees = vec![chain(MAX_DEPTH)];
        m.validate().unwrap();
        // Every split sends 1.0 right (1 ≥ 0): the walk reaches the deepest leaf.
        assert_eq!(m.trees[0].leaf(&[1.0; N_FEATURES]), 2.0);
        m.trees = vec![chain(MAX_DEPTH + 1)];
        assert!(
            matches!(m.validate(), Err(ModelError::Tree { why, .. }) if why.contains("deeper"))
        );
        // A full tree of the maximum depth passes; one node more does not.
        let mut wide = full(MAX_DEPTH);
        assert_eq!(wide.len(), MAX_TREE_NODES);
        m.trees = vec![wide.clone()];
        m.validate().unwrap();
        // x = 0 < 0.5 everywhere: always left, to node 2^depth − 1.
        assert_eq!(m.trees[0].leaf(&[0.0; N_FEATURES]), 255.0);
        wide.feature.push(0);
        wide.threshold.push(0.0);
        wide.left.push(0);
        wide.right.push(0);
        wide.value.push(0.0);
        m.trees = vec![wide];
        assert!(
            matches!(m.validate(), Err(ModelError::Tree { why, .. }) if why.contains("more nodes"))
        );
        m.trees = vec![chain(1); MAX_TREES];
        m.validate().unwrap();
        m.trees.push(chain(1));
        assert!(matches!(m.validate(), Err(ModelError::TooLarge(_))));
        let per_tree = full(MAX_DEPTH - 1).len();
        m.trees = vec![full(MAX_DEPTH - 1); MAX_TOTAL_NODES / per_tree];
        m.validate().unwrap();
        m.trees.push(full(MAX_DEPTH - 1));
        assert!(m.trees.len() <= MAX_TREES);
        assert!(matches!(m.validate(), Err(ModelError::TooLarge(_))));
        // An unvalidated cyclic tree still cannot make scoring spin or panic.
        let cyclic = Tree {
            feature: vec![0, 0],
            threshold: vec![1.0, 1.0],
            left: vec![1, 0],
            right: vec![1, 0],
            value: vec![0.0, 0.0],
        };
        let mut c = cyclic.clone();
        c.left[1] = 1;
        c.right[1] = 1;
        assert_eq!(c.leaf(&[0.0]), 0.0);
        let mut c = cyclic;
        c.left[0] = 9;
        c.feature[0] = 900;
        assert_eq!(c.leaf(&[0.0]), 0.0);
    }
}
