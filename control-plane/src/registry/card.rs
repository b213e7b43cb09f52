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
//!   separate key `"claimed_by_artifact"`, never next to computed figures;
//! * [`from_training`] (versions trained from the decision log by a training job): the
//!   dataset (hash, sizes, time range, class balance per part, label sources, how the labelled
//!   decisions reached review), every validation metric with its bootstrap interval, the
//!   reliability bins of the validation split, and limitations and intended use written from
//!   those same numbers.

use crate::learn::dataset::Dataset;
use crate::learn::fit::{Holdout, HOLDOUT_PROTOCOL};
use crate::learn::{rfc3339, ModelKind};
use crate::ml::eval::{self, CvScores, Prepared};
use crate::ml::metrics::{curve_points, ece, mce, reliability, MAX_CURVE_POINTS};
use crate::ml::model::HONEST_ESCALATION_TARGET;
use crate::review::{BRONZE_CONFIDENCE, SILVER_CONFIDENCE};
use kakeya_core::features::SCHEMA_VERSION;
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
        "curves": curves(&cv.model, &p.labels, "out-of-fold scores of every row"),
    });
    card
}

/// ROC and precision–recall operating points of `scores` ([`curve_points`]), for the console's
/// plots; `null` when a class is missing.
pub fn curves(scores: &[f64], labels: &[u8], what: &str) -> Value {
    let Some(points) = curve_points(scores, labels, MAX_CURVE_POINTS) else {
        return Value::Null;
    };
    let positives = labels.iter().filter(|&&l| l == 1).count();
    json!({
        "scores": what,
        "positives": positives,
        "negatives": labels.len() - positives,
        "points": points
            .iter()
            .map(|p| json!({"threshold": p.threshold, "tpr": p.tpr, "fpr": p.fpr, "precision": p.precision}))
            .collect::<Vec<_>>(),
    })
}

/// The card of a task model trained by `kakeya train --per-task`: [`from_evaluation`] of the
/// per-task cross-validation (`metrics[<task>]` are this model's out-of-fold figures on its
/// task; other tasks' rows were scored by their own task models), plus the task and the
/// global model's figures on the same folds for comparison.
pub fn from_task_evaluation(
    m: &Model,
    task: kakeya_core::task::TaskKind,
    p: &Prepared,
    per_task_cv: &CvScores,
    global_cv: &CvScores,
    folds: usize,
) -> Value {
    let mut card = from_evaluation(m, p, per_task_cv, folds);
    card["evaluation"]["protocol"] =
        "grouped stratified k-fold cross-validation, one model per task fitted on its task's training folds, out-of-fold scores".into();
    card["evaluation"]["task"] = task.as_str().into();
    card["evaluation"]["global_model"] = eval::per_task(p, &global_cv.model);
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

/// Validation parts smaller than this get a limitation saying their intervals are wide.
pub const SMALL_VALIDATION: usize = 200;

/// Reliability bins (every one, empty ones with `n` 0 and `null` means), ECE and MCE of the
/// validation split.
pub fn calibration(scores: &[f64], labels: &[u8]) -> Value {
    let bins: Vec<Value> = reliability(scores, labels)
        .iter()
        .map(|b| {
            json!({"lower": b.lower, "upper": b.upper, "n": b.n,
                   "mean_predicted": b.mean_predicted(), "observed": b.observed()})
        })
        .collect();
    json!({"bins": bins, "ece": ece(scores, labels), "mce": mce(scores, labels)})
}

/// The card of a version trained by a training job on `ds` (see the module docs).
pub fn from_training(m: &Model, kind: ModelKind, ds: &Dataset, h: &Holdout) -> Value {
    let mut card = header(m);
    card["model_kind"] = kind.as_str().into();
    card["dataset"] = ds.summary();
    card["evaluation"] = json!({
        "source": "computed",
        "protocol": HOLDOUT_PROTOCOL,
        "n": h.labels.len(),
        "bootstrap": {
            "method": "stratified percentile",
            "resamples": h.bootstrap.resamples,
            "seed": h.bootstrap.seed,
            "level": h.bootstrap.level,
        },
        "metrics": h.metrics,
        "curves": curves(&h.scores, &h.labels, "validation scores"),
    });
    card["calibration"] = calibration(&h.scores, &h.labels);
    card["limitations"] = limitations(ds, h).into();
    card["intended_use"] = intended_use(m).into();
    card
}

fn span(ds: &Dataset, idx: &[usize]) -> String {
    match (idx.first(), idx.last()) {
        (Some(&a), Some(&b)) => format!(
            "{} to {}",
            rfc3339(ds.rows[a].created_at_ms),
            rfc3339(ds.rows[b].created_at_ms)
        ),
        _ => "no decision".into(),
    }
}

/// What the figures do not say, from the dataset's own numbers.
fn limitations(ds: &Dataset, h: &Holdout) -> Vec<String> {
    let (train, validation) = (&ds.split.train, &ds.split.validation);
    let summary = ds.summary();
    let count = |path: &str| summary.pointer(path).and_then(Value::as_u64).unwrap_or(0);
    let mut out = vec![
        format!(
            "Trained on {} labelled decisions of {} tenant(s) ({}) and validated on the {} newest \
             ({}); traffic unlike them (other tenants, agents or tasks, later changes) is not measured.",
            train.len(),
            count("/n_tenants"),
            span(ds, train),
            validation.len(),
            span(ds, validation),
        ),
        format!(
            "Labels: {} gold (reviewers), {} silver (owner feedback, confidence {SILVER_CONFIDENCE}), \
             {} bronze (weak rules, confidence {BRONZE_CONFIDENCE}); all count alike in training.",
            count("/label_sources/gold"),
            count("/label_sources/silver"),
            count("/label_sources/bronze"),
        ),
        format!(
            "Selection: {} of the {} labelled decisions were escalated by the gate, {} drawn by the \
             audit sample of accepted ones, {} otherwise labelled; the class balance ({:.4} \
             hallucinated) is that of what was reviewed, not of the traffic, so precision at the \
             threshold does not carry over to live traffic.",
            count("/reached_review/escalated"),
            ds.rows.len(),
            count("/reached_review/audit_sample"),
            count("/reached_review/other"),
            ds.positive_ratio(),
        ),
        format!(
            "One time-based holdout: the {:.0} % intervals ({} bootstrap resamples) cover the \
             sampling noise of these {} decisions, not drift after them.",
            h.bootstrap.level * 100.0,
            h.bootstrap.resamples,
            h.labels.len(),
        ),
        format!(
            "Features of schema {} only: {} of the {} decisions in the range were unscored or scored \
             under another schema, {} stored vectors were malformed, {} repeated decisions of one \
             pcs_id were counted once.",
            SCHEMA_VERSION,
            ds.counts.n_decisions - ds.counts.n_with_features,
            ds.counts.n_decisions,
            ds.counts.n_malformed,
            ds.counts.n_repeated,
        ),
    ];
    if h.labels.len() < SMALL_VALIDATION {
        out.push(format!(
            "The validation part is small ({} decisions, under {SMALL_VALIDATION}): the intervals are wide.",
            h.labels.len()
        ));
    }
    if ds.split.validation_duplicates > 0 {
        out.push(format!(
            "{} validation decisions repeated a feature vector already seen and were left out of the figures.",
            ds.split.validation_duplicates
        ));
    }
    out
}

/// What the version is for, with its own threshold.
fn intended_use(m: &Model) -> String {
    format!(
        "Scoring the hallucination risk of answers submitted through the Kakeya gate with their \
         evidence (feature schema {}), for tenants and traffic like the training decisions. Answers \
         whose calibrated risk reaches {:.4} are escalated for review (the threshold at which at \
         most {:.0} % of the honest answers of the calibration split escalate). A risk is not a \
         verdict on an answer: escalated answers go to review. Register, compare, then promote.",
        m.schema_version(),
        m.thresholds().escalate,
        HONEST_ESCALATION_TARGET * 100.0,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ml::dataset::Row;
    use crate::ml::drift_reference::{DriftReference, KS_SAMPLE_MAX};
    use crate::ml::metrics::{auroc, brier, ece, length_matched_auroc, pr_auc};
    use crate::ml::stats::psi;
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

    /// The curve points of `s` against `y` by brute force (at each distinct score, highest
    /// first, thinned by the documented rule, count the rows at or above it) under `prefix`.
    fn expected_curves(prefix: &str, s: &[f64], y: &[u8], out: &mut BTreeMap<String, f64>) {
        use crate::ml::metrics::{thinned_indices, MAX_CURVE_POINTS};
        let mut t = s.to_vec();
        t.sort_by(|a, b| b.total_cmp(a));
        t.dedup();
        let pos = y.iter().filter(|&&l| l == 1).count() as f64;
        let neg = y.len() as f64 - pos;
        out.insert(format!("{prefix}/positives"), pos);
        out.insert(format!("{prefix}/negatives"), neg);
        for (j, k) in thinned_indices(t.len(), MAX_CURVE_POINTS)
            .into_iter()
            .enumerate()
        {
            let at = |label: u8| {
                (0..s.len())
                    .filter(|&i| s[i] >= t[k] && y[i] == label)
                    .count() as f64
            };
            let (tp, fp) = (at(1), at(0));
            let base = format!("{prefix}/points/{j}");
            out.insert(format!("{base}/threshold"), t[k]);
            out.insert(format!("{base}/tpr"), tp / pos);
            out.insert(format!("{base}/fpr"), fp / neg);
            out.insert(format!("{base}/precision"), tp / (tp + fp));
        }
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
        let y: Vec<u8> = rows.iter().map(|r| r.label).collect();
        expected_curves("/evaluation/curves", &cv.model, &y, &mut expected);
        for (k, v) in [
            ("/training/seed", seed as f64),
            ("/training/rows", rows.len() as f64),
            ("/training/l2", l2),
            ("/escalate_threshold", t.model.thresholds().escalate),
            ("/evaluation/folds", folds as f64),
            ("/evaluation/seed", seed as f64),
            // The drift reference: of every row, with the fixed bins and sample bound.
            ("/drift_reference/n", rows.len() as f64),
            ("/drift_reference/psi_bins", psi::DEFAULT_BINS as f64),
            ("/drift_reference/ks_sample_max", KS_SAMPLE_MAX as f64),
        ] {
            expected.insert(k.into(), v);
        }
        // Its hash is that of the reference of the rows' features as the gate stores them.
        let x = eval::with_tenant(&p.x, t.model.tenant());
        let all: Vec<usize> = (0..rows.len()).collect();
        let reference = DriftReference::from_rows(&x, &all).unwrap();
        assert_eq!(
            t.card["drift_reference"]["sha256"],
            reference.sha256().as_str()
        );
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
                "drift_reference",
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

    /// A trained version's card (a training job's): every number is recomputed here from the
    /// rows, the artifact and `ml::metrics` / the bootstrap, following the documented rules
    /// (split, dedupe, bins) rather than calling the code that made the card.
    #[test]
    fn trained_cards_hold_only_recomputed_numbers() {
        trained_card_holds_only_recomputed_numbers(crate::learn::ModelKind::Lr);
    }

    /// The same for a tree ensemble: its boosting parameters are the job's, its size is read
    /// from the artifact.
    #[test]
    fn trained_tree_cards_hold_only_recomputed_numbers() {
        trained_card_holds_only_recomputed_numbers(crate::learn::ModelKind::Gbdt);
    }

    fn trained_card_holds_only_recomputed_numbers(kind: crate::learn::ModelKind) {
        use crate::learn::dataset::{self, Counts, DatasetRow, TimeRange};
        use crate::learn::tests::{halueval, MINUTE, T0};
        use crate::learn::{fit, ModelKind, TrainingOptions};
        use crate::ml::bootstrap::Bootstrap;
        use crate::ml::metrics::precision_recall_f1;
        use crate::review::Source;
        use kakeya_core::features::N_FEATURES;
        let (x, y) = halueval(240);
        let n = x.len();
        let sources = [Source::Gold, Source::Silver, Source::Bronze];
        let loaded: Vec<(i64, DatasetRow)> = (0..n)
            .map(|i| {
                let row = DatasetRow {
                    created_at_ms: T0 + (i as i64 / 2) * MINUTE,
                    tenant: if i % 3 == 0 { "acme" } else { "globex" }.into(),
                    pcs_id: format!("p{i:03}"),
                    features: x[i],
                    label: y[i],
                    source: sources[i % 3],
                    confidence: sources[i % 3].confidence(),
                    escalated: i % 4 != 0,
                    audit_sample: i % 4 == 0,
                };
                (i as i64, row)
            })
            .collect();
        let counts = Counts {
            n_decisions: n + 9,
            n_with_features: n + 3,
            n_malformed: 2,
            n_repeated: 1,
        };
        let range = TimeRange {
            start_ms: T0,
            end_ms: T0 + n as i64 * MINUTE,
        };
        let opts = TrainingOptions {
            min_labels: 100,
            validation_fraction: 0.2,
            bootstrap_resamples: 300,
        };
        let ds = dataset::from_rows(range, loaded.clone(), counts, &opts).unwrap();
        let seed = 9u64;
        let l2 = match kind {
            ModelKind::Lr => crate::ml::model::DEFAULT_L2,
            ModelKind::Gbdt => fit::GBDT_PARAMS.l2,
        };
        let t = fit::train(kind, &ds, seed, &opts, &mut |_| {}).unwrap();
        let (m, card) = (&t.model, &t.card);

        // The split by the documented rule: rows are already in time order here; the newest
        // ⌈n·0.2⌉ set the cut, rows of the cut's millisecond validate, then validation drops
        // vectors seen before.
        let rows: Vec<&DatasetRow> = loaded.iter().map(|(_, r)| r).collect();
        let k = (n as f64 * 0.2).ceil() as usize;
        let cut = rows[n - k].created_at_ms;
        let train: Vec<usize> = (0..n).filter(|&i| rows[i].created_at_ms < cut).collect();
        let mut seen: Vec<[f64; N_FEATURES]> = train.iter().map(|&i| rows[i].features).collect();
        let (mut val, mut dups) = (Vec::new(), 0usize);
        for i in (0..n).filter(|&i| rows[i].created_at_ms >= cut) {
            if seen.contains(&rows[i].features) {
                dups += 1;
            } else {
                seen.push(rows[i].features);
                val.push(i);
            }
        }
        // Validation scores of the artifact, with its own baseline in the tenant columns.
        let score = |i: usize| {
            let mut f = rows[i].features;
            f[8] = m.tenant().coherence_delta(f[1]);
            f[9] = m.tenant().compressibility_z(f[2]);
            m.score(&f).1
        };
        let s: Vec<f64> = val.iter().map(|&i| score(i)).collect();
        let yv: Vec<u8> = val.iter().map(|&i| rows[i].label).collect();
        let thr = m.thresholds().escalate;
        let all = |s: &[f64], y: &[u8]| {
            let (p, r, f1) = precision_recall_f1(s, y, thr);
            [auroc(s, y), pr_auc(s, y), p, r, f1, ece(s, y), brier(s, y)]
        };
        let point = all(&s, &yv);
        let ci = Bootstrap::new(300, seed).intervals(
            &yv,
            |idx| {
                let ss: Vec<f64> = idx.iter().map(|&i| s[i]).collect();
                let yy: Vec<u8> = idx.iter().map(|&i| yv[i]).collect();
                all(&ss, &yy)
            },
            |_| {},
        );
        let mut expected: BTreeMap<String, f64> = BTreeMap::new();
        let mut put = |k: &str, v: f64| {
            expected.insert(k.to_string(), v);
        };
        for (name, (v, c)) in fit::METRICS.iter().zip(point.iter().zip(&ci)) {
            let base = format!("/evaluation/metrics/{name}");
            put(&format!("{base}/value"), v.unwrap());
            put(&format!("{base}/ci_low"), c.unwrap().low);
            put(&format!("{base}/ci_high"), c.unwrap().high);
        }
        let count = |idx: &[usize], label: u8| {
            idx.iter().filter(|&&i| rows[i].label == label).count() as f64
        };
        let positives = rows.iter().filter(|r| r.label == 1).count() as f64;
        for (part, idx) in [("train", &train), ("validation", &val)] {
            put(&format!("/dataset/{part}/n"), idx.len() as f64);
            put(&format!("/dataset/{part}/hallucinated"), count(idx, 1));
            put(&format!("/dataset/{part}/faithful"), count(idx, 0));
            put(
                &format!("/dataset/{part}/first_ms"),
                rows[idx[0]].created_at_ms as f64,
            );
            put(
                &format!("/dataset/{part}/last_ms"),
                rows[*idx.last().unwrap()].created_at_ms as f64,
            );
        }
        let by = |f: &dyn Fn(&DatasetRow) -> bool| rows.iter().filter(|r| f(r)).count() as f64;
        for (k, v) in [
            ("/training/seed", seed as f64),
            ("/training/rows", train.len() as f64),
            ("/training/l2", l2),
            ("/escalate_threshold", thr),
            ("/dataset/n_samples", n as f64),
            ("/dataset/n_train", train.len() as f64),
            ("/dataset/n_validation", val.len() as f64),
            ("/dataset/validation_duplicates_dropped", dups as f64),
            ("/dataset/positive_ratio", positives / n as f64),
            ("/dataset/validation_fraction", 0.2),
            ("/dataset/time_range/start_ms", range.start_ms as f64),
            ("/dataset/time_range/end_ms", range.end_ms as f64),
            ("/dataset/time_range/split_at_ms", cut as f64),
            (
                "/dataset/label_sources/gold",
                by(&|r| r.source == Source::Gold),
            ),
            (
                "/dataset/label_sources/silver",
                by(&|r| r.source == Source::Silver),
            ),
            (
                "/dataset/label_sources/bronze",
                by(&|r| r.source == Source::Bronze),
            ),
            ("/dataset/reached_review/escalated", by(&|r| r.escalated)),
            (
                "/dataset/reached_review/audit_sample",
                by(&|r| !r.escalated && r.audit_sample),
            ),
            (
                "/dataset/reached_review/other",
                by(&|r| !r.escalated && !r.audit_sample),
            ),
            ("/dataset/n_tenants", 2.0),
            // globex has two rows in three, acme one.
            (
                "/dataset/largest_tenants/0/n",
                by(&|r| r.tenant == "globex"),
            ),
            ("/dataset/largest_tenants/1/n", by(&|r| r.tenant == "acme")),
            ("/dataset/range_counts/n_decisions", (n + 9) as f64),
            ("/dataset/range_counts/n_with_features", (n + 3) as f64),
            ("/dataset/range_counts/n_malformed", 2.0),
            ("/dataset/range_counts/n_repeated", 1.0),
            ("/evaluation/n", val.len() as f64),
            ("/evaluation/bootstrap/resamples", 300.0),
            ("/evaluation/bootstrap/seed", seed as f64),
            ("/evaluation/bootstrap/level", 0.95),
            ("/drift_reference/n", train.len() as f64),
            ("/drift_reference/psi_bins", psi::DEFAULT_BINS as f64),
            ("/drift_reference/ks_sample_max", KS_SAMPLE_MAX as f64),
            ("/calibration/ece", ece(&s, &yv).unwrap()),
            (
                "/calibration/mce",
                crate::ml::metrics::mce(&s, &yv).unwrap(),
            ),
        ] {
            put(k, v);
        }
        if let Model::Trees(e) = m {
            let b = fit::GBDT_PARAMS;
            for (k, v) in [
                ("/boosting/iterations", b.iterations as f64),
                ("/boosting/learning_rate", b.learning_rate),
                ("/boosting/max_depth", b.max_depth as f64),
                ("/boosting/min_leaf_weight", b.min_leaf_weight),
                ("/boosting/nbins", f64::from(b.nbins)),
                ("/boosting/trees", e.trees.len() as f64),
                (
                    "/boosting/nodes",
                    e.trees.iter().map(|t| t.len()).sum::<usize>() as f64,
                ),
            ] {
                put(k, v);
            }
        }
        // Reliability bins by hand: bin ⌊10p⌋ (1.0 in the last).
        for b in 0..10 {
            let members: Vec<usize> = (0..s.len())
                .filter(|&i| ((s[i] * 10.0).floor() as usize).min(9) == b)
                .collect();
            let base = format!("/calibration/bins/{b}");
            put(&format!("{base}/lower"), b as f64 / 10.0);
            put(&format!("{base}/upper"), (b + 1) as f64 / 10.0);
            put(&format!("{base}/n"), members.len() as f64);
            if !members.is_empty() {
                let mean = |f: &dyn Fn(usize) -> f64| {
                    members.iter().map(|&i| f(i)).sum::<f64>() / members.len() as f64
                };
                put(&format!("{base}/mean_predicted"), mean(&|i| s[i]));
                put(&format!("{base}/observed"), mean(&|i| f64::from(yv[i])));
            }
        }
        expected_curves("/evaluation/curves", &s, &yv, &mut expected);
        let mut got = BTreeMap::new();
        numeric_leaves(card, "", &mut got);
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            expected.keys().collect::<Vec<_>>(),
            "card numbers without a computation behind them (or missing ones)"
        );
        for (k, v) in &expected {
            assert!((got[k] - v).abs() < 1e-9, "{k}: card {} != {v}", got[k]);
        }
        // The texts are written from the same numbers.
        let lim = card["limitations"].as_array().unwrap();
        assert!(lim[0].as_str().unwrap().contains(&format!(
            "Trained on {} labelled decisions of 2 tenant(s)",
            train.len()
        )));
        assert!(lim[1]
            .as_str()
            .unwrap()
            .contains(&format!("{} gold", by(&|r| r.source == Source::Gold))));
        assert!(
            lim.iter().any(|l| l.as_str().unwrap().contains("small")),
            "{} < 200 validation rows",
            val.len()
        );
        assert!(card["intended_use"]
            .as_str()
            .unwrap()
            .contains(&format!("{thr:.4}")));
        // Prose, not source indentation: no runs of spaces inside the texts.
        for text in lim.iter().chain([&card["intended_use"]]) {
            assert!(!text.as_str().unwrap().contains("  "), "{text}");
        }
        assert_eq!(card["model_version"], m.version());
        assert_eq!(card["dataset"]["sha256"], ds.sha256);
        assert_eq!(
            card["evaluation"]["metrics"],
            m.training().cv_metrics["metrics"]
        );
        assert!(card.get(CLAIMED).is_none());
        assert_eq!(card["model_kind"], kind.as_str());
        let (prefix, artifact_kind) = match kind {
            ModelKind::Lr => ("lr-", kakeya_core::model::KIND_LOGISTIC),
            ModelKind::Gbdt => ("gbdt-", kakeya_core::trees::KIND_TREES),
        };
        assert!(m.version().starts_with(prefix), "{}", m.version());
        assert_eq!(card["kind"], artifact_kind);
        if let Model::Trees(e) = m {
            assert_eq!(card["boosting"]["learner"], crate::ml::gbdt::LEARNER);
            assert_eq!(e.trees.len(), fit::GBDT_PARAMS.iterations);
        }
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
