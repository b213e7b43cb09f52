//! Cross-validated evaluation of the HRS recipe against two baselines, and the report.
//!
//! Protocol (all figures are out-of-fold):
//! * folds: k-fold over *items* (rows grouped by the id prefix before the last `-`, so both
//!   responses of an item are in the same fold), stratified by (task, label set of the item),
//!   items shuffled by a seeded hash;
//! * per fold: the tenant baseline is the training rows' population statistics, the recipe
//!   ([`Recipe`]: standardise → L2 logit ([`fit_pipeline`]) or gradient-boosted trees
//!   ([`gbdt::fit_model`]), then Platt and the escalation threshold on a held-out 20 % of the
//!   training items) is fitted on the other folds and scores this fold;
//! * baselines in the same run: the reference hand-set HRS (spec §10, inverted Platt included,
//!   fresh tenant stats per row, latency 0) on the PCS that [`pcs_builder`] builds from the
//!   response, and a response-length-only logit (same pipeline, one column ln(1 + chars));
//! * metrics per task and over all rows ([`metrics`]), plus escalation rate and hallucination
//!   containment at fixed thresholds of the calibrated risk.

use super::dataset::Row;
use super::gbdt::{self, GbdtError, GbdtParams};
use super::metrics::{auroc, brier, ece, length_matched_auroc, pr_auc};
use super::model::{artifact, fit_pipeline, is_calibration, Pipeline, Weighting};
use kakeya_core::evidence::{fnv1a, Evidence};
use kakeya_core::features::{features, PcsSignals, TenantStats, FEATURE_NAMES, N_FEATURES};
use kakeya_core::model::{reference_hrs, Model, TrainingMeta, KIND_LOGISTIC};
use kakeya_core::pcs_builder::RECIPE_VERSION;
use kakeya_core::pcs_builder::{build, BuildOptions, SplitMix64};
use kakeya_core::task::TaskKind;
use kakeya_core::trees::{TreeModel, KIND_TREES};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::io::Write;

pub const DEFAULT_FOLDS: usize = 5;
/// Fewest folds of a cross-validation: one to fit on, one to score.
pub const MIN_FOLDS: usize = 2;
pub const DEFAULT_SEED: u64 = 20_261_126;
pub const THRESHOLDS: [f64; 4] = [0.3, 0.5, 0.7, 0.9];

/// Feature matrix and per-row facts of a dataset, computed once.
pub struct Prepared {
    /// Row-major n × [`N_FEATURES`], tenant columns computed with [`TenantStats::fresh`].
    pub x: Vec<f64>,
    pub labels: Vec<u8>,
    pub groups: Vec<String>,
    pub tasks: Vec<String>,
    pub ids: Vec<String>,
    pub resp_chars: Vec<usize>,
    /// Reference HRS calibrated ("inverted") risk and raw σ(z).
    pub ref_risk: Vec<f64>,
    pub ref_raw: Vec<f64>,
}

impl Prepared {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn row(&self, i: usize) -> &[f64] {
        &self.x[i * N_FEATURES..(i + 1) * N_FEATURES]
    }
}

/// Builds the PCS of every response and its feature vector.
pub fn prepare(rows: &[Row], mut progress: impl FnMut(usize)) -> Prepared {
    let fresh = TenantStats::fresh();
    let opts = BuildOptions::default();
    let n = rows.len();
    let mut p = Prepared {
        x: Vec::with_capacity(n * N_FEATURES),
        labels: Vec::with_capacity(n),
        groups: Vec::with_capacity(n),
        tasks: Vec::with_capacity(n),
        ids: Vec::with_capacity(n),
        resp_chars: Vec::with_capacity(n),
        ref_risk: Vec::with_capacity(n),
        ref_raw: Vec::with_capacity(n),
    };
    for (i, row) in rows.iter().enumerate() {
        let built = build(&row.response, &opts);
        let sig = PcsSignals::from_built(&built);
        let ev: Evidence = row.evidence();
        p.x.extend(features(&sig, Some(&ev), &fresh));
        let h = reference_hrs(
            built.d_hat,
            built.coh_star,
            built.r,
            built.budget,
            0.0,
            &fresh,
        );
        p.ref_risk.push(h.risk);
        p.ref_raw.push(h.raw);
        p.labels.push(row.label);
        p.groups.push(row.group().to_string());
        p.tasks.push(row.task.clone());
        p.ids.push(row.id.clone());
        p.resp_chars.push(row.response.chars().count());
        if i % 1000 == 999 {
            progress(i + 1);
        }
    }
    progress(n);
    p
}

/// Fold of every row: items (groups) stratified by (task, label set), seeded shuffle.
pub fn assign_folds(p: &Prepared, k: usize, seed: u64) -> Vec<usize> {
    assign_folds_of(&p.groups, &p.tasks, &p.labels, k, seed)
}

/// [`assign_folds`] over the rows' groups, tasks and labels (any feature set).
pub fn assign_folds_of(
    groups: &[String],
    tasks: &[String],
    labels: &[u8],
    k: usize,
    seed: u64,
) -> Vec<usize> {
    let k = k.max(2);
    // group → (task, has clean, has hallucinated)
    let mut items: BTreeMap<&str, (&str, bool, bool)> = BTreeMap::new();
    for i in 0..labels.len() {
        let e = items
            .entry(groups[i].as_str())
            .or_insert((tasks[i].as_str(), false, false));
        if labels[i] == 1 {
            e.2 = true;
        } else {
            e.1 = true;
        }
    }
    let mut keyed: Vec<((&str, bool, bool), u64, &str)> = items
        .iter()
        .map(|(g, key)| (*key, SplitMix64(fnv1a(g.as_bytes()) ^ seed).next_u64(), *g))
        .collect();
    keyed.sort();
    let mut fold_of: BTreeMap<&str, usize> = BTreeMap::new();
    let mut pos = 0usize;
    let mut prev = None;
    for (key, _, g) in keyed {
        if prev != Some(key) {
            prev = Some(key);
            pos = 0;
        }
        fold_of.insert(g, pos % k);
        pos += 1;
    }
    groups
        .iter()
        .map(|g| fold_of.get(g.as_str()).copied().unwrap_or(0))
        .collect()
}

/// Tenant baseline from the rows `idx`: the same robust estimator the bundles' per-tenant
/// statistics use ([`TenantStats::robust`]), so serving a tenant whose traffic looks like the
/// training data changes nothing; population statistics only when no row is plausible.
pub fn tenant_of(p: &Prepared, idx: &[usize]) -> TenantStats {
    baseline_of(&p.x, idx)
}

/// [`tenant_of`] on a row-major n × [`N_FEATURES`] matrix `x` (columns 0–2 are D̂, coh★, r).
pub fn baseline_of(x: &[f64], idx: &[usize]) -> TenantStats {
    let col = |j: usize| {
        idx.iter()
            .map(|&i| x[i * N_FEATURES + j])
            .collect::<Vec<_>>()
    };
    let samples: Vec<(f64, f64, f64)> = idx
        .iter()
        .map(|&i| {
            let row = i * N_FEATURES;
            (x[row], x[row + 1], x[row + 2])
        })
        .collect();
    TenantStats::robust(&samples, 1)
        .unwrap_or_else(|| TenantStats::from_population(&col(0), &col(1), &col(2)))
}

/// `x` with the tenant-relative columns recomputed for `tenant`.
pub fn with_tenant(x: &[f64], tenant: &TenantStats) -> Vec<f64> {
    let mut out = x.to_vec();
    for row in out.chunks_exact_mut(N_FEATURES) {
        row[8] = tenant.coherence_delta(row[1]);
        row[9] = tenant.compressibility_z(row[2]);
    }
    out
}

fn length_column(p: &Prepared) -> Vec<f64> {
    p.resp_chars.iter().map(|&c| (c as f64).ln_1p()).collect()
}

/// Cross-validation or training refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EvalError {
    #[error("k-fold cross-validation needs at least {MIN_FOLDS} folds (got {0}): with fewer, rows are never scored out of fold")]
    TooFewFolds(usize),
    #[error(transparent)]
    Gbdt(#[from] GbdtError),
}

/// What is fitted on the feature vector: the model kind and its hyperparameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Recipe {
    /// L2 logistic regression (Newton/IRLS) on standardised features, weight `l2` (= 1/C).
    Logistic { l2: f64 },
    /// Gradient-boosted trees ([`gbdt`]).
    Trees(GbdtParams),
}

impl Recipe {
    /// The artifact kind it produces.
    pub fn kind(&self) -> &'static str {
        match self {
            Recipe::Logistic { .. } => KIND_LOGISTIC,
            Recipe::Trees(_) => KIND_TREES,
        }
    }

    /// The L2 penalty recorded in the artifact's `training.l2` (on weights or on leaf values).
    pub fn l2(&self) -> f64 {
        match self {
            Recipe::Logistic { l2 } => *l2,
            Recipe::Trees(p) => p.l2,
        }
    }

    /// Hyperparameters as JSON (for reports).
    pub fn describe(&self) -> Value {
        match self {
            Recipe::Logistic { l2 } => json!({"kind": KIND_LOGISTIC, "l2": l2}),
            Recipe::Trees(p) => json!({
                "kind": KIND_TREES,
                "learner": gbdt::LEARNER,
                "trees": p.iterations,
                "learning_rate": p.learning_rate,
                "max_depth": p.max_depth,
                "min_leaf_weight": p.min_leaf_weight,
                "l2": p.l2,
                "nbins": p.nbins,
            }),
        }
    }

    /// Fits on rows `idx` of `x` (tenant columns computed with `tenant`).
    fn fit(
        &self,
        x: &[f64],
        p: &Prepared,
        idx: &[usize],
        seed: u64,
        tenant: TenantStats,
        training: TrainingMeta,
    ) -> Result<Fitted, EvalError> {
        let groups: Vec<&str> = p.groups.iter().map(|s| s.as_str()).collect();
        Ok(match self {
            Recipe::Logistic { l2 } => Fitted::Logistic(
                fit_pipeline(x, N_FEATURES, &p.labels, &groups, idx, seed, *l2),
                tenant,
                training,
            ),
            Recipe::Trees(params) => Fitted::Trees(gbdt::fit_model(
                x,
                &p.labels,
                &groups,
                idx,
                Weighting::Unit,
                seed,
                params,
                tenant,
                training,
            )?),
        })
    }
}

/// A fitted recipe: scores rows (as cross-validation does) and becomes an artifact.
enum Fitted {
    Logistic(Pipeline, TenantStats, TrainingMeta),
    Trees(TreeModel),
}

impl Fitted {
    /// Calibrated risk of a feature row.
    fn risk(&self, row: &[f64]) -> f64 {
        match self {
            Fitted::Logistic(pipe, ..) => pipe.score(row).1,
            Fitted::Trees(m) => m.platt.apply(m.decision(row)),
        }
    }

    fn escalate(&self) -> f64 {
        match self {
            Fitted::Logistic(pipe, ..) => pipe.escalate,
            Fitted::Trees(m) => m.thresholds.escalate,
        }
    }

    fn into_model(self) -> Model {
        match self {
            Fitted::Logistic(pipe, tenant, training) => artifact(pipe, tenant, training).into(),
            Fitted::Trees(m) => m.into(),
        }
    }
}

/// The training metadata of `recipe` on `p` (CV metrics filled in later).
fn training_meta(p: &Prepared, dataset_sha256: &str, seed: u64, recipe: &Recipe) -> TrainingMeta {
    TrainingMeta {
        seed,
        rows: p.len(),
        dataset_sha256: dataset_sha256.to_string(),
        recipe_version: RECIPE_VERSION.into(),
        l2: recipe.l2(),
        cv_metrics: json!({}),
    }
}

/// `k` unless it is below [`MIN_FOLDS`].
pub fn check_folds(k: usize) -> Result<usize, EvalError> {
    if k < MIN_FOLDS {
        Err(EvalError::TooFewFolds(k))
    } else {
        Ok(k)
    }
}

/// Out-of-fold calibrated risks of the recipe and of the length-only baseline.
pub struct CvScores {
    pub model: Vec<f64>,
    pub length_only: Vec<f64>,
    pub folds: Vec<usize>,
    /// The escalation threshold of the model that scored each row (its fold's).
    pub threshold: Vec<f64>,
}

/// k-fold cross-validation of the default (logistic) recipe with weight `l2`; see
/// [`cross_validate_recipe`].
pub fn cross_validate(
    p: &Prepared,
    k: usize,
    seed: u64,
    l2: f64,
    progress: impl FnMut(usize),
) -> Result<CvScores, EvalError> {
    cross_validate_recipe(p, k, seed, &Recipe::Logistic { l2 }, progress)
}

/// k-fold cross-validation of `recipe`; `k` < [`MIN_FOLDS`] is refused (with one fold nothing
/// is left to fit on, with none no row is scored: the figures would be those of placeholder
/// zeros). The length-only baseline is always the logistic pipeline on ln(1 + chars), weight
/// [`super::model::DEFAULT_L2`] unless the recipe is logistic (then its own weight).
pub fn cross_validate_recipe(
    p: &Prepared,
    k: usize,
    seed: u64,
    recipe: &Recipe,
    progress: impl FnMut(usize),
) -> Result<CvScores, EvalError> {
    cross_validate_scoped(p, k, seed, recipe, FitScope::Global, progress)
}

/// What one fitted model covers: every row, or the rows of one task (one model per task,
/// each fitted, calibrated and thresholded on its task's rows alone, against its task's own
/// tenant baseline, as [`fit_task_models`] trains them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FitScope {
    Global,
    PerTask,
}

/// The rows each model of `scope` is fitted and scored on: all rows, or one list per task (in
/// row order within each).
pub fn scope_units(p: &Prepared, scope: FitScope) -> Vec<(String, Vec<usize>)> {
    match scope {
        FitScope::Global => vec![("all".into(), (0..p.len()).collect())],
        FitScope::PerTask => {
            let mut by: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
            for (i, t) in p.tasks.iter().enumerate() {
                by.entry(t.as_str()).or_default().push(i);
            }
            by.into_iter().map(|(t, v)| (t.to_string(), v)).collect()
        }
    }
}

/// [`cross_validate_recipe`] with one model per unit of `scope` in every fold (the folds are
/// the same whatever the scope: stratified by task, so each task's rows split k ways too). The
/// length-only baseline is fitted per unit as well, so a per-task model is compared with a
/// per-task length model.
pub fn cross_validate_scoped(
    p: &Prepared,
    k: usize,
    seed: u64,
    recipe: &Recipe,
    scope: FitScope,
    mut progress: impl FnMut(usize),
) -> Result<CvScores, EvalError> {
    let k = check_folds(k)?;
    let folds = assign_folds(p, k, seed);
    let groups: Vec<&str> = p.groups.iter().map(|s| s.as_str()).collect();
    let len_x = length_column(p);
    let len_l2 = match recipe {
        Recipe::Logistic { l2 } => *l2,
        Recipe::Trees(_) => super::model::DEFAULT_L2,
    };
    let mut model = vec![0.0; p.len()];
    let mut length_only = vec![0.0; p.len()];
    let mut threshold = vec![0.0; p.len()];
    let units = scope_units(p, scope);
    for f in 0..k {
        for (_, rows) in &units {
            let (test, train): (Vec<usize>, Vec<usize>) =
                rows.iter().copied().partition(|&i| folds[i] == f);
            if train.is_empty() || test.is_empty() {
                continue;
            }
            let tenant = tenant_of(p, &train);
            let x = with_tenant(&p.x, &tenant);
            let meta = training_meta(p, "", seed, recipe);
            let fitted = recipe.fit(&x, p, &train, seed, tenant, meta)?;
            let lpipe = fit_pipeline(&len_x, 1, &p.labels, &groups, &train, seed, len_l2);
            for &i in &test {
                model[i] = fitted.risk(&x[i * N_FEATURES..(i + 1) * N_FEATURES]);
                length_only[i] = lpipe.score(&len_x[i..i + 1]).1;
                threshold[i] = fitted.escalate();
            }
        }
        progress(f + 1);
    }
    Ok(CvScores {
        model,
        length_only,
        folds,
        threshold,
    })
}

/// `recipe` fitted on all rows, as an artifact: what `kakeya train` writes. `cv_metrics` are
/// the caller's (from a cross-validation of the same recipe).
pub fn fit_model(
    p: &Prepared,
    dataset_sha256: &str,
    seed: u64,
    recipe: &Recipe,
    cv_metrics: Value,
) -> Result<Model, EvalError> {
    let all: Vec<usize> = (0..p.len()).collect();
    fit_model_on(p, &all, dataset_sha256, seed, recipe, cv_metrics)
}

/// [`fit_model`] on the rows `idx` only (their own tenant baseline; `training.rows` counts
/// them).
pub fn fit_model_on(
    p: &Prepared,
    idx: &[usize],
    dataset_sha256: &str,
    seed: u64,
    recipe: &Recipe,
    cv_metrics: Value,
) -> Result<Model, EvalError> {
    let tenant = tenant_of(p, idx);
    let x = with_tenant(&p.x, &tenant);
    let mut meta = training_meta(p, dataset_sha256, seed, recipe);
    meta.rows = idx.len();
    meta.cv_metrics = cv_metrics;
    Ok(recipe.fit(&x, p, idx, seed, tenant, meta)?.into_model())
}

/// One model per task of `p` whose spelling is a [`TaskKind`] (others are left to the global
/// model), each fitted on all of its task's rows, with the per-task cross-validation `cv`
/// ([`cross_validate_scoped`] with [`FitScope::PerTask`]) as its `cv_metrics`: that task's
/// figures under the task's name and under `"all"`.
pub fn fit_task_models(
    p: &Prepared,
    dataset_sha256: &str,
    seed: u64,
    recipe: &Recipe,
    cv: &CvScores,
) -> Result<BTreeMap<TaskKind, Model>, EvalError> {
    let mut out = BTreeMap::new();
    for (name, rows) in scope_units(p, FitScope::PerTask) {
        let Some(task) = TaskKind::parse(&name) else {
            continue;
        };
        let m = metrics_of(p, &cv.model, &rows);
        let cv_metrics = json!({ name.clone(): m.clone(), "all": m });
        out.insert(
            task,
            fit_model_on(p, &rows, dataset_sha256, seed, recipe, cv_metrics)?,
        );
    }
    Ok(out)
}

/// A trained artifact with the cross-validation behind its `cv_metrics` (and its card).
pub struct Trained {
    pub model: Model,
    pub cv: CvScores,
}

/// `folds`-fold CV of `recipe` on `p` (the artifact's `cv_metrics`), then the fit on all rows;
/// `progress` sees the folds done, then `folds + 1` after the final fit.
pub fn train(
    p: &Prepared,
    dataset_sha256: &str,
    seed: u64,
    recipe: &Recipe,
    folds: usize,
    mut progress: impl FnMut(usize),
) -> Result<Trained, EvalError> {
    let cv = cross_validate_recipe(p, folds, seed, recipe, &mut progress)?;
    let model = fit_model(p, dataset_sha256, seed, recipe, per_task(p, &cv.model))?;
    progress(folds + 1);
    Ok(Trained { model, cv })
}

/// Calibrated risks of a given artifact on every row (in-sample if it was trained on them).
pub fn score_with(p: &Prepared, m: &Model) -> Vec<f64> {
    score_matrix(&p.x, m)
}

/// Calibrated risks of `m` on the rows of `x` (row-major n × [`N_FEATURES`]), with the tenant
/// columns recomputed against the artifact's own baseline, as the gate scores a tenant without
/// bundle statistics.
pub fn score_matrix(x: &[f64], m: &Model) -> Vec<f64> {
    let x = with_tenant(x, m.tenant());
    x.chunks_exact(N_FEATURES).map(|r| m.score(r).1).collect()
}

fn num(v: Option<f64>) -> Value {
    v.filter(|x| x.is_finite())
        .map_or(Value::Null, |x| json!(x))
}

/// Metrics of `scores` on the rows `idx`.
pub fn metrics_of(p: &Prepared, scores: &[f64], idx: &[usize]) -> Value {
    let s: Vec<f64> = idx.iter().map(|&i| scores[i]).collect();
    let y: Vec<u8> = idx.iter().map(|&i| p.labels[i]).collect();
    let g: Vec<&str> = idx.iter().map(|&i| p.groups[i].as_str()).collect();
    let l: Vec<usize> = idx.iter().map(|&i| p.resp_chars[i]).collect();
    let (lm, n_lm) = length_matched_auroc(&g, &l, &s, &y);
    json!({
        "n": idx.len(),
        "auroc": num(auroc(&s, &y)),
        "pr_auc": num(pr_auc(&s, &y)),
        "brier": num(brier(&s, &y)),
        "ece": num(ece(&s, &y)),
        "auroc_length_matched": num(lm),
        "n_length_matched": n_lm,
    })
}

/// Metrics per task and under `"all"`.
pub fn per_task(p: &Prepared, scores: &[f64]) -> Value {
    let mut by_task: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, t) in p.tasks.iter().enumerate() {
        by_task.entry(t.as_str()).or_default().push(i);
    }
    let mut out = Map::new();
    for (t, idx) in &by_task {
        out.insert(t.to_string(), metrics_of(p, scores, idx));
    }
    let all: Vec<usize> = (0..p.len()).collect();
    out.insert("all".into(), metrics_of(p, scores, &all));
    Value::Object(out)
}

/// Escalation rate (share of rows with risk ≥ t) and containment (share of hallucinated rows
/// with risk ≥ t) at [`THRESHOLDS`].
pub fn escalation_table(p: &Prepared, scores: &[f64]) -> Value {
    let n = p.len().max(1) as f64;
    let n_pos = p.labels.iter().filter(|&&l| l == 1).count().max(1) as f64;
    THRESHOLDS
        .iter()
        .map(|&t| {
            let esc = scores.iter().filter(|&&s| s >= t).count() as f64 / n;
            let caught = scores
                .iter()
                .zip(&p.labels)
                .filter(|(&s, &l)| l == 1 && s >= t)
                .count() as f64
                / n_pos;
            json!({"threshold": t, "escalation_rate": esc, "containment": caught})
        })
        .collect()
}

/// The cross-validated recipe at its own operating point: each row escalated when its
/// out-of-fold risk reaches its fold model's threshold (chosen on that model's calibration
/// split for ≤ 2 % of honest answers). Per task and overall: the share of honest answers
/// escalated and the share of hallucinations contained.
pub fn operating_point(p: &Prepared, cv: &CvScores) -> Value {
    let mut by_task: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, t) in p.tasks.iter().enumerate() {
        by_task.entry(t.as_str()).or_default().push(i);
        by_task.entry("all").or_default().push(i);
    }
    let mut out = Map::new();
    for (t, idx) in by_task {
        let (mut honest, mut honest_esc, mut halluc, mut caught) = (0usize, 0usize, 0usize, 0usize);
        for i in idx {
            let escalated = cv.model[i] >= cv.threshold[i];
            if p.labels[i] == 1 {
                halluc += 1;
                caught += usize::from(escalated);
            } else {
                honest += 1;
                honest_esc += usize::from(escalated);
            }
        }
        let share = |a: usize, b: usize| {
            if b == 0 {
                Value::Null
            } else {
                json!(a as f64 / b as f64)
            }
        };
        out.insert(
            t.to_string(),
            json!({"honest_escalation_rate": share(honest_esc, honest), "containment": share(caught, halluc)}),
        );
    }
    Value::Object(out)
}

/// The whole report. `model_scores` are the out-of-fold (or given-artifact) calibrated risks.
pub fn report(
    p: &Prepared,
    model_version: &str,
    model_scores: &[f64],
    cv: &CvScores,
    meta: Value,
) -> Value {
    json!({
        "model_version": model_version,
        "schema_version": kakeya_core::features::SCHEMA_VERSION,
        "recipe_version": kakeya_core::pcs_builder::RECIPE_VERSION,
        "meta": meta,
        "tasks": per_task(p, model_scores),
        "baselines": {
            "reference_hrs": per_task(p, &p.ref_risk),
            "reference_hrs_raw": per_task(p, &p.ref_raw),
            "length_only": per_task(p, &cv.length_only),
        },
        "cv_operating_point": operating_point(p, cv),
        "escalation": {
            "model": escalation_table(p, model_scores),
            "reference_hrs": escalation_table(p, &p.ref_risk),
            "length_only": escalation_table(p, &cv.length_only),
        },
    })
}

/// `--per-task` figures of one recipe: its global and its per-task cross-validation on the
/// same folds, each with its length-only model, per task and at its own thresholds.
pub fn per_task_report(
    p: &Prepared,
    recipe: &Recipe,
    global: &CvScores,
    per_task_cv: &CvScores,
    cv_seconds: f64,
) -> Value {
    let side = |cv: &CvScores| {
        json!({
            "tasks": per_task(p, &cv.model),
            "length_only": per_task(p, &cv.length_only),
            "cv_operating_point": operating_point(p, cv),
        })
    };
    json!({
        "recipe": recipe.describe(),
        "cv_seconds": cv_seconds,
        "global": side(global),
        "per_task": side(per_task_cv),
    })
}

/// Writes the feature matrix with id, task, group, fold, calibration flag and label (debug aid
/// for cross-checking the learner against other implementations on identical inputs).
pub fn dump_features(
    p: &Prepared,
    folds: &[usize],
    seed: u64,
    out: &mut impl Write,
) -> std::io::Result<()> {
    write!(out, "id,task,group,fold,calib,label,resp_chars")?;
    for n in FEATURE_NAMES {
        write!(out, ",{n}")?;
    }
    writeln!(out)?;
    for (i, fold) in folds.iter().enumerate().take(p.len()) {
        write!(
            out,
            "{},{},{},{},{},{},{}",
            p.ids[i],
            p.tasks[i],
            p.groups[i],
            fold,
            is_calibration(&p.groups[i], seed) as u8,
            p.labels[i],
            p.resp_chars[i]
        )?;
        for v in p.row(i) {
            write!(out, ",{v}")?;
        }
        writeln!(out)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny synthetic dataset: hallucinated answers add an unsupported name and number.
    fn sample() -> Vec<Row> {
        let mut rows = Vec::new();
        for i in 0..60 {
            let task = if i % 2 == 0 { "qa" } else { "dialogue" };
            let ctx = format!(
                "Item {i} was built in {} by the Acme company in Springfield.",
                1900 + i
            );
            rows.push(Row {
                id: format!("{task}-{i}-0"),
                task: task.into(),
                question: format!("When was item {i} built?"),
                context: ctx.clone(),
                response: format!("It was built in {} by Acme.", 1900 + i),
                label: 0,
            });
            rows.push(Row {
                id: format!("{task}-{i}-1"),
                task: task.into(),
                question: format!("When was item {i} built?"),
                context: ctx,
                response: format!("It was built in {} by Zorblax.", 1700 + i),
                label: 1,
            });
        }
        rows
    }

    #[test]
    fn folds_keep_items_together_and_are_balanced() {
        let p = prepare(&sample(), |_| {});
        let folds = assign_folds(&p, 5, 1);
        for i in (0..p.len()).step_by(2) {
            assert_eq!(folds[i], folds[i + 1]);
        }
        for f in 0..5 {
            assert_eq!(folds.iter().filter(|&&x| x == f).count(), 24);
        }
        assert_eq!(folds, assign_folds(&p, 5, 1));
        assert_ne!(folds, assign_folds(&p, 5, 2));
    }

    #[test]
    fn fewer_than_two_folds_are_refused() {
        let p = prepare(&sample(), |_| {});
        for k in [0, 1] {
            let e = cross_validate(&p, k, 7, 1.0, |_| {})
                .err()
                .unwrap_or_else(|| panic!("k = {k} accepted"));
            assert_eq!(e, EvalError::TooFewFolds(k));
            assert!(e.to_string().contains("at least 2 folds"), "{e}");
        }
        assert_eq!(check_folds(2), Ok(2));
        let cv = cross_validate(&p, 2, 7, 1.0, |_| {}).unwrap();
        assert_eq!(cv.folds.iter().max(), Some(&1));
    }

    const SMALL_TREES: Recipe = Recipe::Trees(GbdtParams {
        iterations: 20,
        ..gbdt::DEFAULT_PARAMS
    });

    #[test]
    fn training_is_deterministic_and_the_artifact_scores_like_the_pipeline() {
        let p = prepare(&sample(), |_| {});
        let lr = Recipe::Logistic { l2: 1.0 };
        let a = fit_model(&p, "x", 3, &lr, json!({})).unwrap();
        let b = fit_model(&p, "x", 3, &lr, json!({})).unwrap();
        assert_eq!(a.canonical_bytes(), b.canonical_bytes());
        a.validate().unwrap();
        assert!(a.version().starts_with("lr-"));
        let all: Vec<usize> = (0..p.len()).collect();
        let tenant = tenant_of(&p, &all);
        assert_eq!(a.tenant(), &tenant);
        let x = with_tenant(&p.x, &tenant);
        let groups: Vec<&str> = p.groups.iter().map(|s| s.as_str()).collect();
        let pipe = fit_pipeline(&x, N_FEATURES, &p.labels, &groups, &all, 3, 1.0);
        let row = &x[..N_FEATURES];
        assert_eq!(a.score(row), pipe.score(row));
        let again = Model::from_json(&a.canonical_bytes()).unwrap();
        assert_eq!(again.sha256(), a.sha256());
        // Trees: same data + seed → same artifact hash; another seed, another split.
        let t1 = fit_model(&p, "x", 3, &SMALL_TREES, json!({})).unwrap();
        let t2 = fit_model(&p, "x", 3, &SMALL_TREES, json!({})).unwrap();
        assert_eq!(t1.sha256(), t2.sha256());
        assert!(t1.version().starts_with("gbdt-"), "{}", t1.version());
        assert_ne!(
            t1.sha256(),
            fit_model(&p, "x", 4, &SMALL_TREES, json!({}))
                .unwrap()
                .sha256()
        );
        assert_eq!(t1.training().l2, gbdt::DEFAULT_PARAMS.l2);
        assert_eq!(Model::from_json(&t1.canonical_bytes()).unwrap(), t1);
    }

    #[test]
    fn trees_cross_validate_on_the_same_folds() {
        let p = prepare(&sample(), |_| {});
        let lr = cross_validate(&p, 4, 7, 1.0, |_| {}).unwrap();
        let mut seen = Vec::new();
        let trees = cross_validate_recipe(&p, 4, 7, &SMALL_TREES, |f| seen.push(f)).unwrap();
        assert_eq!(seen, [1, 2, 3, 4]);
        assert_eq!(trees.folds, lr.folds);
        // The length-only baseline does not depend on the recipe.
        assert_eq!(trees.length_only, lr.length_only);
        let auroc = per_task(&p, &trees.model)["all"]["auroc"].as_f64().unwrap();
        assert!(auroc > 0.95, "{auroc}");
        assert!(trees.threshold.iter().all(|t| (0.0..=1.0).contains(t)));
        let bad = Recipe::Trees(GbdtParams {
            max_depth: 0,
            ..gbdt::DEFAULT_PARAMS
        });
        assert!(matches!(
            cross_validate_recipe(&p, 4, 7, &bad, |_| {}),
            Err(EvalError::Gbdt(_))
        ));
    }

    #[test]
    fn end_to_end_report_on_a_tiny_sample() {
        let p = prepare(&sample(), |_| {});
        let cv = cross_validate(&p, 5, 7, 1.0, |_| {}).unwrap();
        let r = report(&p, "test", &cv.model, &cv, json!({}));
        let auroc = r["tasks"]["all"]["auroc"].as_f64().unwrap();
        assert!(auroc > 0.95, "{auroc}");
        assert_eq!(r["tasks"]["qa"]["n"], 60);
        assert_eq!(r["tasks"]["all"]["n_length_matched"], 60);
        assert!(r["baselines"]["reference_hrs"]["all"]["auroc"].is_number());
        assert_eq!(r["escalation"]["model"].as_array().unwrap().len(), 4);
        let mut csv = Vec::new();
        dump_features(&p, &cv.folds, 7, &mut csv).unwrap();
        let text = String::from_utf8(csv).unwrap();
        assert_eq!(text.lines().count(), 121);
        assert!(text.starts_with("id,task,group,fold,calib,label,resp_chars,d_hat,"));
    }

    /// The global scope is the plain cross-validation bit for bit; per task, each row is scored
    /// by a model fitted on its own task's training rows only (moving the other task's rows
    /// changes nothing), and the task models carry their task's rows and figures.
    #[test]
    fn per_task_cross_validation_fits_each_task_on_its_own_rows() {
        let rows = sample();
        let p = prepare(&rows, |_| {});
        let recipe = Recipe::Logistic { l2: 1.0 };
        let plain = cross_validate_recipe(&p, 3, 7, &recipe, |_| {}).unwrap();
        let global = cross_validate_scoped(&p, 3, 7, &recipe, FitScope::Global, |_| {}).unwrap();
        assert_eq!(global.model, plain.model);
        assert_eq!(global.length_only, plain.length_only);
        let scoped = cross_validate_scoped(&p, 3, 7, &recipe, FitScope::PerTask, |_| {}).unwrap();
        assert_ne!(scoped.model, plain.model);
        assert_eq!(scoped.folds, plain.folds);
        // Dialogue rows made all alike: QA's per-task scores do not move.
        let mut flat = rows.clone();
        for r in flat.iter_mut().filter(|r| r.task == "dialogue") {
            r.response = "same".into();
        }
        let q = prepare(&flat, |_| {});
        let scoped2 = cross_validate_scoped(&q, 3, 7, &recipe, FitScope::PerTask, |_| {}).unwrap();
        for i in (0..p.len()).filter(|&i| p.tasks[i] == "qa") {
            assert_eq!(scoped.model[i].to_bits(), scoped2.model[i].to_bits(), "{i}");
        }
        let models = fit_task_models(&p, "ab", 7, &recipe, &scoped).unwrap();
        assert_eq!(
            models.keys().copied().collect::<Vec<_>>(),
            [TaskKind::Qa, TaskKind::Dialogue]
        );
        for (t, m) in &models {
            assert_eq!(m.training().rows, 60, "{t:?}");
            let cv = &m.training().cv_metrics;
            assert_eq!(cv[t.as_str()], cv["all"]);
            assert_eq!(cv["all"]["n"], 60);
        }
    }
}
