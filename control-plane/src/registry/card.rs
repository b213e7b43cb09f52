//! Model cards: JSON computed only from data, by code. No field is typed in by hand.
//! Both model kinds get the same card; a tree ensemble's also lists its boosting parameters and
//! size (read from the artifact).
//!
//! * [`from_evaluation`] (models trained here, e.g. the default model): the artifact's training
//!   metadata plus the out-of-fold metrics of [`crate::ml::eval`] (per task and overall: n,
//!   AUROC, PR AUC, Brier, ECE, length-matched AUROC) for the recipe and for two baselines
//!   (the reference hand-set HRS and a length-only logit), all from the same CV run;
//! * [`from_artifact`] (uploaded artifacts, whose data the control plane does not have): no
//!   computed metrics at all (`"evaluation": {"source": "none"}`). The free-form
//!   `training.cv_metrics` the uploader put in the artifact are copied, unchecked, under the
//!   separate key `"claimed_by_artifact"`, never next to computed figures.

use crate::ml::eval::{self, CvScores, Prepared};
use kakeya_core::model::Model;
use serde_json::{json, Value};

pub const CARD_FORMAT: &str = "kakeya-model-card-v1";

fn header(m: &Model) -> Value {
    let t = m.training();
    let mut card = json!({
        "card_format": CARD_FORMAT,
        "model_version": m.version(),
        "sha256": m.sha256(),
        "kind": m.kind(),
        "schema_version": m.schema_version(),
        "training": {
            "seed": t.seed,
            "rows": t.rows,
            "dataset_sha256": t.dataset_sha256,
            "recipe_version": t.recipe_version,
            "l2": t.l2,
        },
        "escalate_threshold": m.thresholds().escalate,
    });
    if let Model::Trees(e) = m {
        let b = &e.boosting;
        card["boosting"] = json!({
            "learner": b.learner,
            "iterations": b.iterations,
            "learning_rate": b.learning_rate,
            "max_depth": b.max_depth,
            "min_leaf_weight": b.min_leaf_weight,
            "nbins": b.nbins,
            "trees": e.trees.len(),
            "nodes": e.trees.iter().map(|t| t.len()).sum::<usize>(),
        });
    }
    card
}

/// The card of a model whose training data is at hand: `cv` must be the cross-validation of
/// the same recipe on `p` with `folds` folds and the model's seed.
pub fn from_evaluation(m: &Model, p: &Prepared, cv: &CvScores, folds: usize) -> Value {
    let mut card = header(m);
    card["evaluation"] = json!({
        "source": "computed",
        "protocol": "grouped stratified k-fold cross-validation, out-of-fold scores",
        "folds": folds,
        "seed": m.training().seed,
        "metrics": eval::per_task(p, &cv.model),
        "baselines": {
            "reference_hrs": eval::per_task(p, &p.ref_risk),
            "length_only": eval::per_task(p, &cv.length_only),
        },
    });
    card
}

/// Key of an uploaded artifact's card under which the uploader's own claims are kept.
pub const CLAIMED: &str = "claimed_by_artifact";

/// The card of an uploaded artifact (see the module docs).
pub fn from_artifact(m: &Model) -> Value {
    let mut card = header(m);
    card["evaluation"] = json!({
        "source": "none",
        "note": "uploaded artifact: the control plane has not evaluated it (its training data is not here)",
    });
    card[CLAIMED] = json!({
        "note": "copied from the artifact's training.cv_metrics as uploaded; not computed or checked by this control plane",
        "cv_metrics": m.training().cv_metrics,
    });
    card
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ml::dataset::Row;
    use crate::ml::metrics::{auroc, brier, ece, length_matched_auroc, pr_auc};
    use crate::registry::bootstrap::train;
    use std::collections::BTreeMap;

    /// A small generated dataset with two tasks and a noisy signal.
    fn rows() -> Vec<Row> {
        let mut rng = kakeya_core::pcs_builder::SplitMix64(11);
        let mut out = Vec::new();
        for i in 0..80 {
            let task = if i % 3 == 0 { "qa" } else { "dialogue" };
            let ctx = format!(
                "Item {i} was made in {} by the Acme works in Springfield for {} people.",
                1900 + i,
                10 + i
            );
            let noise = rng.next_u64() % 4 == 0;
            let good = format!("It was made in {} by Acme.", 1900 + i);
            let bad = if noise {
                format!("It was made in {} by Acme in Springfield.", 1900 + i)
            } else {
                format!("It was made in {} by Zorblax Industries.", 1700 + i)
            };
            for (label, resp) in [(0u8, good), (1u8, bad)] {
                out.push(Row {
                    id: format!("{task}-{i}-{label}"),
                    task: task.into(),
                    question: format!("Who made item {i}?"),
                    context: ctx.clone(),
                    response: resp,
                    label,
                });
            }
        }
        out
    }

    /// Every numeric leaf of `v` by its JSON-pointer path.
    fn numeric_leaves(v: &Value, path: &str, out: &mut BTreeMap<String, f64>) {
        match v {
            Value::Number(n) => {
                out.insert(path.to_string(), n.as_f64().unwrap_or(f64::NAN));
            }
            Value::Object(m) => m
                .iter()
                .for_each(|(k, x)| numeric_leaves(x, &format!("{path}/{k}"), out)),
            Value::Array(a) => a
                .iter()
                .enumerate()
                .for_each(|(i, x)| numeric_leaves(x, &format!("{path}/{i}"), out)),
            _ => {}
        }
    }

    /// Recomputes every metric from scratch with `ml::metrics` on a fresh CV run and checks
    /// that the card holds exactly these numbers: a number nobody computed fails the test.
    #[test]
    fn every_card_number_is_recomputed_independently() {
        let rows = rows();
        let (seed, l2, folds) = (5u64, 1.0, 4usize);
        let t = train(&rows, "d5", seed, l2, folds).unwrap();
        let p = eval::prepare(&rows, |_| {});
        let cv = eval::cross_validate(&p, folds, seed, l2, |_| {}).unwrap();
        let mut expected: BTreeMap<String, f64> = BTreeMap::new();
        let mut tasks: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, r) in rows.iter().enumerate() {
            tasks.entry(r.task.as_str()).or_default().push(i);
            tasks.entry("all").or_default().push(i);
        }
        for (prefix, scores) in [
            ("/evaluation/metrics", &cv.model),
            ("/evaluation/baselines/reference_hrs", &p.ref_risk),
            ("/evaluation/baselines/length_only", &cv.length_only),
        ] {
            for (task, idx) in &tasks {
                let s: Vec<f64> = idx.iter().map(|&i| scores[i]).collect();
                let y: Vec<u8> = idx.iter().map(|&i| rows[i].label).collect();
                let g: Vec<&str> = idx.iter().map(|&i| rows[i].group()).collect();
                let l: Vec<usize> = idx
                    .iter()
                    .map(|&i| rows[i].response.chars().count())
                    .collect();
                let (lm, n_lm) = length_matched_auroc(&g, &l, &s, &y);
                let base = format!("{prefix}/{task}");
                for (k, v) in [
                    ("n", Some(idx.len() as f64)),
                    ("auroc", auroc(&s, &y)),
                    ("pr_auc", pr_auc(&s, &y)),
                    ("brier", brier(&s, &y)),
                    ("ece", ece(&s, &y)),
                    ("auroc_length_matched", lm),
                    ("n_length_matched", Some(n_lm as f64)),
                ] {
                    if let Some(v) = v {
                        expected.insert(format!("{base}/{k}"), v);
                    }
                }
            }
        }
        for (k, v) in [
            ("/training/seed", seed as f64),
            ("/training/rows", rows.len() as f64),
            ("/training/l2", l2),
            ("/escalate_threshold", t.model.thresholds().escalate),
            ("/evaluation/folds", folds as f64),
            ("/evaluation/seed", seed as f64),
        ] {
            expected.insert(k.into(), v);
        }
        let mut got = BTreeMap::new();
        numeric_leaves(&t.card, "", &mut got);
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            expected.keys().collect::<Vec<_>>(),
            "card numbers without a computation behind them (or missing ones)"
        );
        for (k, v) in &expected {
            assert!((got[k] - v).abs() < 1e-12, "{k}: card {} != {v}", got[k]);
        }
        // The artifact carries the same CV metrics as the card.
        assert_eq!(
            t.model.training().cv_metrics,
            t.card["evaluation"]["metrics"]
        );
        let top: Vec<&String> = t.card.as_object().unwrap().keys().collect();
        assert_eq!(
            top,
            [
                "card_format",
                "escalate_threshold",
                "evaluation",
                "kind",
                "model_version",
                "schema_version",
                "sha256",
                "training"
            ]
        );
        assert_eq!(t.card["model_version"], t.model.version());
        assert_eq!(t.card["sha256"], t.model.sha256());
        assert!(t.card.get(CLAIMED).is_none());
    }

    /// A tree ensemble's card: the same computed evaluation, plus its boosting parameters and
    /// size read from the artifact.
    #[test]
    fn tree_cards_list_the_ensemble_and_computed_metrics() {
        use crate::ml::gbdt::{GbdtParams, DEFAULT_PARAMS, LEARNER};
        let rows = rows();
        let p = eval::prepare(&rows, |_| {});
        let recipe = eval::Recipe::Trees(GbdtParams {
            iterations: 25,
            ..DEFAULT_PARAMS
        });
        let t = eval::train(&p, "d5", 5, &recipe, 4, |_| {}).unwrap();
        let Model::Trees(e) = &t.model else {
            panic!("a tree ensemble")
        };
        let card = from_evaluation(&t.model, &p, &t.cv, 4);
        assert_eq!(card["kind"], "gradient_boosted_trees");
        assert!(card["model_version"].as_str().unwrap().starts_with("gbdt-"));
        assert_eq!(
            card["evaluation"]["metrics"],
            eval::per_task(&p, &t.cv.model)
        );
        assert_eq!(t.model.training().cv_metrics, card["evaluation"]["metrics"]);
        let b = &card["boosting"];
        assert_eq!(b["learner"], LEARNER);
        assert_eq!(b["iterations"], 25);
        assert_eq!(b["trees"], e.trees.len());
        assert_eq!(b["nodes"], e.trees.iter().map(|t| t.len()).sum::<usize>());
        assert_eq!(b["max_depth"], DEFAULT_PARAMS.max_depth);
        assert_eq!(card["escalate_threshold"], e.thresholds.escalate);
        assert_eq!(from_artifact(&t.model)["boosting"], *b);
    }

    /// An uploaded artifact's card: the uploader's `cv_metrics` (here absurd ones) appear only
    /// under `claimed_by_artifact`; no other number of the card is a metric, and the
    /// evaluation holds none.
    #[test]
    fn uploaded_cards_keep_claimed_metrics_apart() {
        let rows = rows();
        let Model::Logistic(mut m) = train(&rows, "d5", 5, 1.0, 4).unwrap().model else {
            panic!("the default recipe is logistic")
        };
        let claimed = json!({"all": {"n": 1_000_000, "auroc": 0.999, "brier": 0.0001}});
        m.training.cv_metrics = claimed.clone();
        let m = Model::from(m);
        let a = from_artifact(&m);
        assert_eq!(a[CLAIMED]["cv_metrics"], claimed);
        assert!(a[CLAIMED]["note"]
            .as_str()
            .unwrap()
            .contains("not computed"));
        assert_eq!(a["evaluation"]["source"], "none");
        assert!(a["evaluation"].get("metrics").is_none());
        let mut outside = BTreeMap::new();
        for (k, v) in a.as_object().unwrap() {
            if k != CLAIMED {
                numeric_leaves(v, &format!("/{k}"), &mut outside);
            }
        }
        // Outside the claims: only the artifact's own parameters, read from it by code.
        let expected: BTreeMap<String, f64> = [
            ("/escalate_threshold", m.thresholds().escalate),
            ("/training/l2", m.training().l2),
            ("/training/rows", m.training().rows as f64),
            ("/training/seed", m.training().seed as f64),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        assert_eq!(outside, expected);
    }
}
