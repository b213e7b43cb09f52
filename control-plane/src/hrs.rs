//! `kakeya train`, `kakeya eval` and `kakeya pcs build`: thin CLI wrappers over
//! [`kakeya_control_plane::ml`] and [`kakeya_core::pcs_builder`].

use crate::{eval_feedback, eval_gateway};
use anyhow::Context;
use clap::{Args, ValueEnum};
use kakeya_control_plane::ml::{dataset, eval, gbdt, grounding_eval, model, submission};
use kakeya_control_plane::review::Source;
use kakeya_core::bundle::{Bundle, Policy, Scorer, BUNDLE_FORMAT};
use kakeya_core::features::TenantStats;
use kakeya_core::model::Model;
use kakeya_core::pcs_builder::{BuildOptions, RECIPE_VERSION};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Instant;

/// `--model-kind` of `kakeya train`.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// L2 logistic regression (Newton/IRLS) on standardised features.
    Lr,
    /// Gradient-boosted trees (forust-ml; scored by kakeya-core in the filter).
    Gbdt,
}

/// `--model-kind` of `kakeya eval`.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EvalKind {
    Lr,
    Gbdt,
    /// Both, cross-validated on the same folds, with a side-by-side table.
    Both,
}

/// Hyperparameters of `--model-kind gbdt` (defaults: `ml::gbdt::DEFAULT_PARAMS`).
#[derive(Args)]
pub struct GbdtArgs {
    /// GBDT: number of trees (1–1000).
    #[arg(long, default_value_t = gbdt::DEFAULT_PARAMS.iterations)]
    trees: usize,
    /// GBDT: most splits on a root-to-leaf path (1–8).
    #[arg(long, default_value_t = gbdt::DEFAULT_PARAMS.max_depth)]
    max_depth: usize,
    /// GBDT: learning rate (shrinkage of every leaf), in (0, 1].
    #[arg(long, default_value_t = gbdt::DEFAULT_PARAMS.learning_rate)]
    learning_rate: f64,
}

impl GbdtArgs {
    fn recipe(&self) -> eval::Recipe {
        eval::Recipe::Trees(gbdt::GbdtParams {
            iterations: self.trees,
            max_depth: self.max_depth,
            learning_rate: self.learning_rate,
            ..gbdt::DEFAULT_PARAMS
        })
    }
}

#[derive(Args)]
pub struct TrainArgs {
    /// Labelled JSONL (plain or .gz): {id, task, question, context, response, label}.
    #[arg(long)]
    dataset: PathBuf,
    /// Model kind.
    #[arg(long, value_enum, default_value_t = Kind::Lr)]
    model_kind: Kind,
    #[command(flatten)]
    gbdt: GbdtArgs,
    /// Seed of the fold assignment and the calibration split.
    #[arg(long, default_value_t = eval::DEFAULT_SEED)]
    seed: u64,
    /// Where to write the model artifact.
    #[arg(long, default_value = "model.json")]
    out: PathBuf,
    /// LR: L2 weight (1/C) on standardised features.
    #[arg(long, default_value_t = model::DEFAULT_L2)]
    l2: f64,
    /// Also register the artifact in the model registry (DATABASE_URL), with a model card
    /// computed from this run's cross-validation.
    #[arg(long)]
    pub register: bool,
    /// Also train one model per task of the dataset (qa, dialogue, summarization, rag,
    /// other; rows of other tasks stay with the global model), each cross-validated on its
    /// task's rows, written next to --out as `<stem>.<task>.json`. With --register each is
    /// registered and attached to the global model as its task model (`kakeya model tasks`):
    /// promoting the global model serves them for their tasks.
    #[arg(long)]
    per_task: bool,
}

#[derive(Args)]
pub struct EvalArgs {
    /// Labelled JSONL (plain or .gz).
    #[arg(long)]
    dataset: PathBuf,
    /// Without --model (the default): grouped k-fold cross-validation of the default recipe.
    /// With it: score with this model, an artifact FILE, a registered VERSION (`lr-…`) or
    /// `champion` (the current bundle's), the last two from the registry of the configured data
    /// dir / DATABASE_URL. Figures are in-sample if the model was trained on this dataset.
    #[arg(long, value_name = "VERSION|champion|FILE")]
    model: Option<String>,
    /// Without --model: the recipe cross-validated. `both` runs the logistic regression and the
    /// gradient-boosted trees on the same folds and prints their figures side by side.
    #[arg(long, value_enum, default_value_t = EvalKind::Lr, conflicts_with = "model")]
    model_kind: EvalKind,
    #[command(flatten)]
    gbdt: GbdtArgs,
    /// Send every row through this gateway (e.g. http://127.0.0.1:8080) as a signed PCS v0.2
    /// with its evidence; the figures are then those of the risks the gateway served, and the
    /// report says how many equal the native score of --model bit for bit. Fails when the
    /// gateway served any row with another model than --model (see --allow-other-models).
    /// Every row is a real submission: it lands in the decision log of the tenant (--tenant)
    /// and counts towards that tenant's statistics in later bundles.
    #[arg(long, value_name = "URL", requires = "model")]
    through: Option<String>,
    /// With --through: report figures even when the gateway served rows with other models
    /// than --model (e.g. a challenger arm); the served model versions are in the report.
    #[arg(long, requires = "through")]
    allow_other_models: bool,
    /// With --through: requests in flight at once (a micro-vote server with one inference
    /// worker behind the gate wants few, or the callouts queue past their deadline).
    #[arg(long, default_value_t = eval_gateway::CONCURRENCY as u64, requires = "through",
          value_parser = clap::value_parser!(u64).range(1..=64))]
    concurrency: u64,
    /// With --through: once the gateway has answered every row, record each row's dataset label
    /// as the agent owner's feedback on the decision it made (labeller `owner`, source silver,
    /// or `--feedback bronze`; the code path of POST /v1/feedback and `kakeya feedback`, on the
    /// configured database), so the decisions are labelled for `kakeya hrs train` and A/B
    /// statistics as an owner's later feedback would label them.
    #[arg(long, value_name = "SOURCE", value_enum, num_args = 0..=1,
          default_missing_value = "silver", requires = "through")]
    pub feedback: Option<Source>,
    /// HMAC key signing the PCS sent with --through (UTF-8 bytes).
    #[arg(long, env = "PCS_HMAC_KEY", hide_env_values = true)]
    key: Option<String>,
    /// x-tenant-id of the requests sent with --through; several, comma-separated
    /// (`--tenant acme,beta`), share the rows round-robin (e.g. to reach both arms of an A/B
    /// experiment). The rows land in these tenants' decision logs (and feed their statistics in
    /// later bundles): in multi-tenant setups use tenants kept for evaluation, e.g.
    /// `--tenant eval`, never a production tenant. In single-tenant mode the gateway files
    /// everything under `default`.
    #[arg(long, value_delimiter = ',')]
    tenant: Vec<String>,
    /// Use only N rows: whole items taken round-robin over the tasks, in file order.
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
    /// Leave out the first N rows of that order (with --limit: rows N+1 to N+limit), so a
    /// later run sends other answers than an earlier one.
    #[arg(long, value_name = "N", default_value_t = 0)]
    skip: usize,
    /// Write the JSON report here.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Number of folds (at least 2).
    #[arg(long, default_value_t = eval::DEFAULT_FOLDS, value_parser = parse_folds)]
    folds: usize,
    /// Seed of the fold assignment and the calibration split.
    #[arg(long, default_value_t = eval::DEFAULT_SEED)]
    seed: u64,
    /// LR: L2 weight (1/C) on standardised features.
    #[arg(long, default_value_t = model::DEFAULT_L2)]
    l2: f64,
    /// Debug: write the feature matrix with folds to this CSV.
    #[arg(long, hide = true)]
    dump_features: Option<PathBuf>,
    /// Instead of the HRS recipe: the untrained `rag_grounding` rule on every row (nothing is
    /// fitted, so no folds): per task the AUROC of its risk (1 − support) and of each measure,
    /// its accept / reject / abstain votes on honest and hallucinated rows, and its native time
    /// per call. Honours --limit and --report.
    #[arg(long, conflicts_with_all = ["model", "through"])]
    grounding: bool,
    /// Also cross-validate one model per task (same folds, same recipe or recipes; each task's
    /// model fitted, calibrated and thresholded on its task's rows only, as `kakeya train
    /// --per-task` trains them) and print its figures per task next to the global model's and
    /// a length-only model's (global and per task).
    #[arg(long, conflicts_with_all = ["model", "through", "grounding"])]
    per_task: bool,
}

/// `--folds`: an integer of at least [`eval::MIN_FOLDS`].
fn parse_folds(s: &str) -> Result<usize, String> {
    let k: usize = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number of folds"))?;
    eval::check_folds(k).map_err(|e| e.to_string())
}

impl EvalArgs {
    /// `--concurrency` as a count of workers.
    fn in_flight(&self) -> usize {
        usize::try_from(self.concurrency).unwrap_or(eval_gateway::CONCURRENCY)
    }

    /// True when --model names a registry entry (not an existing file) or --feedback records
    /// labels: the configuration's database is needed.
    pub fn needs_registry(&self) -> bool {
        self.feedback.is_some()
            || self
                .model
                .as_deref()
                .is_some_and(|m| !std::path::Path::new(m).is_file())
    }
}

#[derive(Args)]
pub struct PcsBuildArgs {
    /// Response text file, or `-` for standard input.
    #[arg(long)]
    text: String,
    /// HMAC-SHA256 key to sign with (UTF-8 bytes); unsigned without it.
    #[arg(long, env = "PCS_HMAC_KEY", hide_env_values = true)]
    key: Option<String>,
    /// shard_id of the PCS.
    #[arg(long, default_value = "text")]
    shard_id: String,
    /// epoch of the PCS.
    #[arg(long, default_value_t = 0)]
    epoch: i64,
    /// Question file: with it (and/or --context) the PCS is v0.2 and carries its evidence
    /// {question, context, response = the text}, bound by the signed `evidence_sha256`, so the
    /// gateway scores its hallucination risk.
    #[arg(long)]
    question: Option<PathBuf>,
    /// Context (retrieved passages) file for the evidence.
    #[arg(long)]
    context: Option<PathBuf>,
    /// Task the answer was produced for: qa, dialogue, summarization, rag or other. Signed
    /// with the evidence (a PCS v0.2 even without --question/--context); the gateway scores it
    /// with the bundle's model for that task when it has one.
    #[arg(long, value_parser = parse_task)]
    task: Option<kakeya_core::task::TaskKind>,
}

/// `--task`: one of the five spellings.
fn parse_task(s: &str) -> Result<kakeya_core::task::TaskKind, String> {
    kakeya_core::task::TaskKind::parse(s.trim()).ok_or_else(|| {
        format!("{s:?} is not a task: use qa, dialogue, summarization, rag or other")
    })
}

fn progress(label: &'static str, total: usize) -> impl FnMut(usize) {
    kakeya_control_plane::progress::callback(label, total)
}

fn load(path: &std::path::Path) -> anyhow::Result<(dataset::Dataset, eval::Prepared)> {
    load_limited(path, None, 0)
}

/// The dataset at `path`; with `limit` or `skip`, rows `skip+1 ..= skip+limit` of the
/// round-robin order of [`dataset::sample_by_task`].
fn load_limited(
    path: &std::path::Path,
    limit: Option<usize>,
    skip: usize,
) -> anyhow::Result<(dataset::Dataset, eval::Prepared)> {
    let t = Instant::now();
    let mut ds = dataset::load(path)?;
    if limit.is_some() || skip > 0 {
        let n = limit.map_or(ds.rows.len(), |n| n.max(1));
        let mut rows = dataset::sample_by_task(&ds.rows, n.saturating_add(skip));
        if skip >= rows.len() {
            anyhow::bail!(
                "--skip {skip} leaves no row of the {} in {}",
                ds.rows.len(),
                path.display()
            );
        }
        rows.drain(..skip);
        ds.rows = rows;
    }
    let prepared = eval::prepare(&ds.rows, progress("features", ds.rows.len()));
    eprintln!(
        "{} rows, sha256 {}, features in {:.1} s",
        ds.rows.len(),
        &ds.sha256[..16],
        t.elapsed().as_secs_f64()
    );
    Ok((ds, prepared))
}

/// `kakeya train`; with `--register`, `cfg` names the database to register into.
pub fn train(
    a: &TrainArgs,
    cfg: Option<&kakeya_control_plane::config::Config>,
) -> anyhow::Result<()> {
    let recipe = match a.model_kind {
        Kind::Lr => eval::Recipe::Logistic { l2: a.l2 },
        Kind::Gbdt => a.gbdt.recipe(),
    };
    let (ds, p) = load(&a.dataset)?;
    let folds = eval::DEFAULT_FOLDS;
    let t0 = Instant::now();
    let eval::Trained { model: m, cv } = eval::train(
        &p,
        &ds.sha256,
        a.seed,
        &recipe,
        folds,
        progress("cv folds + final fit", folds + 1),
    )?;
    m.validate()?;
    std::fs::write(&a.out, m.canonical_bytes())
        .with_context(|| format!("cannot write {}", a.out.display()))?;
    println!(
        "wrote {} ({}, sha256 {}, {:.1} s); {folds}-fold CV AUROC (all) {}",
        a.out.display(),
        m.version(),
        m.sha256(),
        t0.elapsed().as_secs_f64(),
        m.training().cv_metrics["all"]["auroc"]
    );
    let task_models = if a.per_task {
        let t = Instant::now();
        let scoped = eval::cross_validate_scoped(
            &p,
            folds,
            a.seed,
            &recipe,
            eval::FitScope::PerTask,
            progress("cv folds (per task)", folds),
        )?;
        let models = eval::fit_task_models(&p, &ds.sha256, a.seed, &recipe, &scoped)?;
        let stem = a.out.with_extension("");
        let mut written = Vec::new();
        for (task, tm) in &models {
            tm.validate()?;
            let path = stem.with_extension(format!("{}.json", task.as_str()));
            std::fs::write(&path, tm.canonical_bytes())
                .with_context(|| format!("cannot write {}", path.display()))?;
            println!(
                "wrote {} ({}, task {}, {} rows); {folds}-fold CV AUROC on {} {} (global model {})",
                path.display(),
                tm.version(),
                task.as_str(),
                tm.training().rows,
                task.as_str(),
                fmt(&tm.training().cv_metrics["all"]["auroc"]),
                fmt(&m.training().cv_metrics[task.as_str()]["auroc"]),
            );
            written.push((*task, tm.clone()));
        }
        eprintln!("per-task models in {:.1} s", t.elapsed().as_secs_f64());
        Some((written, scoped))
    } else {
        None
    };
    if let Some(cfg) = cfg {
        let card = kakeya_control_plane::registry::card::from_evaluation(&m, &p, &cv, folds);
        let s = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(async {
                let db = kakeya_control_plane::store::Db::connect(&cfg.database_url, None)
                    .await
                    .context("cannot open the database; check DATABASE_URL")?;
                // Only `kakeya serve` creates the key.
                let seed =
                    kakeya_control_plane::registry::keys::load_seed(&cfg.bundle_signing_seed_file)
                        .context("bundle signing key (KAKEYA_BUNDLE_SIGNING_SEED_FILE)")?;
                use kakeya_control_plane::registry;
                let now = kakeya_control_plane::now_ms();
                let s = registry::insert_model(&db, &seed, &m, &card, now).await?;
                for (task, tm) in task_models.iter().flat_map(|(w, _)| w) {
                    let (_, scoped) = task_models.as_ref().context("per-task CV")?;
                    let card =
                        registry::card::from_task_evaluation(tm, *task, &p, scoped, &cv, folds);
                    let r = registry::register_model(&db, &seed, tm, &card, now).await?;
                    registry::task_models::attach(
                        &db,
                        &seed,
                        &s.version,
                        *task,
                        None,
                        &r.summary.version,
                        now,
                    )
                    .await?;
                    println!(
                        "registered {} as the {} model of {}",
                        r.summary.version,
                        task.as_str(),
                        s.version
                    );
                }
                anyhow::Ok(s)
            })?;
        println!(
            "registered {} (kakeya model promote {} to use it)",
            s.version, s.version
        );
    }
    Ok(())
}

fn fmt(v: &Value) -> String {
    v.as_f64().map_or("-".into(), |x| format!("{x:.3}"))
}

/// The model `--model` names, and the tenant statistics of the current bundle (none for a
/// file).
pub(crate) fn resolve_model(
    spec: &str,
    cfg: Option<&kakeya_control_plane::config::Config>,
) -> anyhow::Result<(Model, BTreeMap<String, TenantStats>)> {
    let path = std::path::Path::new(spec);
    if path.is_file() {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        return Ok((Model::from_json(&bytes)?, BTreeMap::new()));
    }
    let Some(cfg) = cfg else {
        anyhow::bail!("--model {spec}: no such file, and no configuration to look it up in");
    };
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async {
            use kakeya_control_plane::registry;
            let db = kakeya_control_plane::store::Db::connect(&cfg.database_url, None)
                .await
                .context("cannot open the registry database; check KAKEYA_DATA_DIR / DATABASE_URL")?;
            // Every model and bundle read from the registry goes through its integrity check,
            // with the server's key: read, never created (that is `kakeya serve`'s).
            let seed = registry::keys::load_seed(&cfg.bundle_signing_seed_file)
                .context("bundle signing key (KAKEYA_BUNDLE_SIGNING_SEED_FILE)")?;
            let key = registry::keys::public_key_b64(&seed);
            let bundle = registry::served_bundle(&db, &key).await?.map(|(_, b)| b);
            let stats = bundle
                .as_ref()
                .map(|b| b.tenant_stats.clone())
                .unwrap_or_default();
            if spec == registry::CHAMPION {
                let b = bundle.context(
                    "--model champion: no bundle published yet (kakeya serve publishes the first one)",
                )?;
                return Ok((b.champion, stats));
            }
            let m = match registry::verified_model(&db, spec, &key).await {
                Err(registry::RegistryError::NoModel(_)) => anyhow::bail!(
                    "--model {spec}: neither a file nor a registered model (kakeya model list)"
                ),
                r => r.with_context(|| format!("registered model {spec}"))?,
            };
            anyhow::Ok((m, stats))
        })
}

/// `kakeya eval`; `cfg` (the configuration) is needed when --model names a registry entry.
pub fn eval(
    a: &EvalArgs,
    cfg: Option<&kakeya_control_plane::config::Config>,
) -> anyhow::Result<()> {
    if a.feedback == Some(Source::Gold) {
        anyhow::bail!(
            "--feedback is the owner's: silver or bronze (gold labels come from reviewers: kakeya review label)"
        );
    }
    if a.grounding {
        return eval_grounding(a);
    }
    let resolved = a
        .model
        .as_deref()
        .map(|spec| resolve_model(spec, cfg))
        .transpose()?;
    let (ds, p) = load_limited(&a.dataset, a.limit, a.skip)?;
    let lr = eval::Recipe::Logistic { l2: a.l2 };
    // --model conflicts with --model-kind: with a given model the CV (for the baselines) is LR.
    let (primary, second) = match (a.model.is_some(), a.model_kind) {
        (false, EvalKind::Gbdt) => (a.gbdt.recipe(), None),
        (false, EvalKind::Both) => (lr, Some(a.gbdt.recipe())),
        _ => (lr, None),
    };
    let timed_cv = |recipe: &eval::Recipe, label: &'static str| {
        let t = Instant::now();
        let cv =
            eval::cross_validate_recipe(&p, a.folds, a.seed, recipe, progress(label, a.folds))?;
        anyhow::Ok((cv, t.elapsed().as_secs_f64()))
    };
    let cv_label = |r: &eval::Recipe| match r {
        eval::Recipe::Logistic { .. } => "cv folds (lr)",
        eval::Recipe::Trees(_) => "cv folds (gbdt)",
    };
    let (cv, cv_seconds) = timed_cv(&primary, cv_label(&primary))?;
    let second = second
        .map(|r| timed_cv(&r, cv_label(&r)).map(|(cv, secs)| (r, cv, secs)))
        .transpose()?;
    // --per-task: the same recipes cross-validated with one model per task.
    let per_task = a
        .per_task
        .then(|| {
            let recipes =
                std::iter::once((&primary, &cv)).chain(second.as_ref().map(|(r, cv2, _)| (r, cv2)));
            recipes
                .map(|(r, global)| {
                    let t = Instant::now();
                    let scoped = eval::cross_validate_scoped(
                        &p,
                        a.folds,
                        a.seed,
                        r,
                        eval::FitScope::PerTask,
                        progress("cv folds (per task)", a.folds),
                    )?;
                    let secs = t.elapsed().as_secs_f64();
                    anyhow::Ok(eval::per_task_report(&p, r, global, &scoped, secs))
                })
                .collect::<anyhow::Result<Vec<Value>>>()
        })
        .transpose()?;
    let mut served = None;
    let mut feedback = None;
    let (version, scores, in_sample) = match resolved {
        Some((m, tenant_stats)) => {
            let in_sample = m.training().dataset_sha256 == ds.sha256;
            if in_sample {
                eprintln!(
                    "WARNING: the model was trained on this dataset: its figures are in-sample"
                );
            }
            let scores = match &a.through {
                Some(url) => {
                    let run = through(a, cfg, url, &ds.rows, &m, tenant_stats)?;
                    // The rows are real decisions whichever model served them: their labels
                    // are recorded before the model check can fail the run.
                    if let (Some(source), Some(cfg)) = (a.feedback, cfg) {
                        feedback = Some(eval_feedback::record(cfg, &ds.rows, &run, source)?);
                    }
                    eval_gateway::check_models(&run, &m.version(), a.allow_other_models)?;
                    let native: Vec<f64> = run.rows.iter().map(|r| r.native).collect();
                    let mut s = eval_gateway::summary(&run, url, a.in_flight());
                    s["native"] = eval::per_task(&p, &native);
                    let served_scores = run.rows.iter().map(|r| r.risk).collect();
                    served = Some(s);
                    served_scores
                }
                None => eval::score_with(&p, &m),
            };
            (m.version(), scores, in_sample)
        }
        None => (
            format!(
                "cv:{}/{}{}",
                kakeya_core::features::SCHEMA_VERSION,
                RECIPE_VERSION,
                match primary {
                    eval::Recipe::Logistic { .. } => "",
                    eval::Recipe::Trees(_) => "/gbdt",
                }
            ),
            cv.model.clone(),
            false,
        ),
    };
    let meta = json!({
        "rows": p.len(),
        "dataset_sha256": ds.sha256,
        "folds": a.folds,
        "seed": a.seed,
        "l2": a.l2,
        "recipe": primary.describe(),
        "cv_seconds": cv_seconds,
        "in_sample": in_sample,
        "limit": a.limit,
        "scores": if a.through.is_some() { "served by the gateway" } else { "native" },
    });
    let mut r = eval::report(&p, &version, &scores, &cv, meta);
    if let Some((recipe, cv2, secs)) = &second {
        r["gbdt"] = json!({
            "recipe": recipe.describe(),
            "cv_seconds": secs,
            "tasks": eval::per_task(&p, &cv2.model),
            "cv_operating_point": eval::operating_point(&p, cv2),
            "escalation": eval::escalation_table(&p, &cv2.model),
        });
    }
    if let Some(s) = served {
        println!(
            "served through {}: {} rows at {:.1} rows/s; served = native for {:.4} of rows (max |diff| {:e})",
            s["gateway"].as_str().unwrap_or_default(),
            s["n"],
            s["rows_per_s"].as_f64().unwrap_or(0.0),
            s["served_equals_native"].as_f64().unwrap_or(0.0),
            s["max_abs_diff"].as_f64().unwrap_or(0.0)
        );
        r["served_equals_native"] = s["served_equals_native"].clone();
        r["served"] = s;
    }
    if let Some(f) = feedback {
        println!(
            "owner feedback ({}): {} labels recorded, {} already stored ({} hallucinated, {} faithful) on {} tenant(s)",
            f["source"].as_str().unwrap_or_default(),
            f["created"],
            f["existing"],
            f["hallucinated"],
            f["faithful"],
            f["tenants"]
        );
        r["feedback"] = f;
    }
    if let Some(path) = &a.dump_features {
        let mut f = std::io::BufWriter::new(
            std::fs::File::create(path)
                .with_context(|| format!("cannot create {}", path.display()))?,
        );
        eval::dump_features(&p, &cv.folds, a.seed, &mut f)?;
        f.flush()?;
        eprintln!("features written to {}", path.display());
    }
    println!("model {version}");
    println!(
        "{:<14} {:<22} {:>6} {:>7} {:>7} {:>7} {:>7} {:>8} {:>6}",
        "task", "scorer", "n", "auroc", "pr_auc", "brier", "ece", "auroc_lm", "n_lm"
    );
    let tasks = r["tasks"].as_object().cloned().unwrap_or_default();
    for task in tasks.keys() {
        for (name, m) in [
            ("model", &r["tasks"][task]),
            ("reference_hrs", &r["baselines"]["reference_hrs"][task]),
            (
                "reference_hrs_raw",
                &r["baselines"]["reference_hrs_raw"][task],
            ),
            ("length_only", &r["baselines"]["length_only"][task]),
        ] {
            println!(
                "{:<14} {:<22} {:>6} {:>7} {:>7} {:>7} {:>7} {:>8} {:>6}",
                task,
                name,
                m["n"],
                fmt(&m["auroc"]),
                fmt(&m["pr_auc"]),
                fmt(&m["brier"]),
                fmt(&m["ece"]),
                fmt(&m["auroc_length_matched"]),
                m["n_length_matched"]
            );
        }
    }
    println!("escalation (model): threshold → escalation rate / containment");
    for row in r["escalation"]["model"].as_array().into_iter().flatten() {
        println!(
            "  {} → {} / {}",
            row["threshold"],
            fmt(&row["escalation_rate"]),
            fmt(&row["containment"])
        );
    }
    println!("cross-validated recipe at its own threshold (≤ 2 % of honest calibration rows): honest escalated / hallucinations contained");
    if let Some(op) = r["cv_operating_point"].as_object() {
        for (task, v) in op {
            println!(
                "  {task:<13} {} / {}",
                fmt(&v["honest_escalation_rate"]),
                fmt(&v["containment"])
            );
        }
    }
    if second.is_some() {
        print_comparison(&r, a.folds);
    }
    if let Some(reports) = per_task {
        for rep in &reports {
            print_per_task(rep, a.folds);
        }
        r["per_task"] = Value::Array(reports);
    }
    if let Some(path) = &a.report {
        std::fs::write(path, serde_json::to_vec_pretty(&r)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("report written to {}", path.display());
    }
    Ok(())
}

/// `kakeya eval --grounding`: the report of [`grounding_eval::report`], printed and written.
fn eval_grounding(a: &EvalArgs) -> anyhow::Result<()> {
    let mut ds = dataset::load(&a.dataset)?;
    if let Some(n) = a.limit {
        ds.rows = dataset::sample_by_task(&ds.rows, n.max(1));
    }
    let t = Instant::now();
    let mut r = grounding_eval::report(&ds.rows, progress("grounding", ds.rows.len()));
    r["meta"] = json!({
        "rows": ds.rows.len(),
        "dataset_sha256": ds.sha256,
        "limit": a.limit,
        "seconds": t.elapsed().as_secs_f64(),
    });
    println!(
        "{} ({} rows, dataset sha256 {}): risk = 1 - support; nothing fitted, every row scored",
        r["strategy"].as_str().unwrap_or_default(),
        ds.rows.len(),
        &ds.sha256[..16]
    );
    println!(
        "{:<14} {:>6} {:>7} {:>8} {:>6}  {}",
        "task",
        "n",
        "auroc",
        "auroc_lm",
        "n_lm",
        grounding_eval::MEASURES
            .iter()
            .map(|(_, short)| format!("{short:>9}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let tasks = r["tasks"].as_object().cloned().unwrap_or_default();
    for (task, m) in &tasks {
        println!(
            "{:<14} {:>6} {:>7} {:>8} {:>6}  {}",
            task,
            m["n"].to_string(),
            fmt(&m["auroc"]),
            fmt(&m["auroc_length_matched"]),
            m["n_length_matched"].to_string(),
            grounding_eval::MEASURES
                .iter()
                .map(|(k, _)| format!("{:>9}", fmt(&m["measures_auroc"][k])))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    println!("votes (accept / reject / abstain) on honest | hallucinated rows; reject precision, accept precision; µs per call p50 / p99 (native, fastest of 3 per row)");
    for (task, m) in &tasks {
        let v = &m["votes"];
        let o = |side: &str| {
            format!(
                "{} / {} / {}",
                fmt(&v[side]["accept"]),
                fmt(&v[side]["reject"]),
                fmt(&v[side]["abstain"])
            )
        };
        println!(
            "  {task:<13} {} | {}; {}, {}; {} / {}",
            o("honest"),
            o("hallucinated"),
            fmt(&v["reject_precision"]),
            fmt(&v["accept_precision"]),
            fmt(&m["micros_per_call"]["p50"]),
            fmt(&m["micros_per_call"]["p99"]),
        );
    }
    if let Some(path) = &a.report {
        std::fs::write(path, serde_json::to_vec_pretty(&r)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("report written to {}", path.display());
    }
    Ok(())
}

/// `--per-task`: one recipe's global and per-task models per task, with the length-only
/// models, and the per-task models at their own thresholds.
fn print_per_task(r: &Value, folds: usize) {
    println!(
        "{folds}-fold CV, {} ({:.1} s): global vs per-task models; length-only fitted globally and per task",
        r["recipe"]["kind"].as_str().unwrap_or_default(),
        r["cv_seconds"].as_f64().unwrap_or(0.0)
    );
    println!(
        "{:<14} {:>6} {:>8} {:>9} {:>7} {:>8} {:>9} {:>9} {:>9} {:>14} {:>14}",
        "task",
        "n",
        "global",
        "per_task",
        "Δauroc",
        "len_glob",
        "len_task",
        "lm_global",
        "lm_task",
        "esc/cont glob",
        "esc/cont task"
    );
    let (g, t) = (&r["global"], &r["per_task"]);
    for task in t["tasks"]
        .as_object()
        .map(|o| o.keys().collect())
        .unwrap_or(Vec::new())
    {
        let auroc = |v: &Value| v["tasks"][task]["auroc"].as_f64();
        let delta = match (auroc(t), auroc(g)) {
            (Some(a), Some(b)) => format!("{:+.3}", a - b),
            _ => "-".into(),
        };
        let op = |v: &Value| {
            format!(
                "{} / {}",
                fmt(&v["cv_operating_point"][task]["honest_escalation_rate"]),
                fmt(&v["cv_operating_point"][task]["containment"])
            )
        };
        println!(
            "{:<14} {:>6} {:>8} {:>9} {:>7} {:>8} {:>9} {:>9} {:>9} {:>14} {:>14}",
            task,
            t["tasks"][task]["n"],
            fmt(&g["tasks"][task]["auroc"]),
            fmt(&t["tasks"][task]["auroc"]),
            delta,
            fmt(&g["length_only"][task]["auroc"]),
            fmt(&t["length_only"][task]["auroc"]),
            fmt(&g["tasks"][task]["auroc_length_matched"]),
            fmt(&t["tasks"][task]["auroc_length_matched"]),
            op(g),
            op(t),
        );
    }
}

/// `--model-kind both`: the two recipes' cross-validated figures per task, side by side.
fn print_comparison(r: &Value, folds: usize) {
    let (lr, gb) = (&r["tasks"], &r["gbdt"]["tasks"]);
    let recipe = &r["gbdt"]["recipe"];
    println!(
        "{folds}-fold CV (grouped by item, same folds): logistic regression ({:.1} s) vs \
         gradient-boosted trees ({}, {} trees, depth {}, learning rate {}; {:.1} s)",
        r["meta"]["cv_seconds"].as_f64().unwrap_or(0.0),
        recipe["learner"].as_str().unwrap_or_default(),
        recipe["trees"],
        recipe["max_depth"],
        recipe["learning_rate"],
        r["gbdt"]["cv_seconds"].as_f64().unwrap_or(0.0),
    );
    println!(
        "{:<14} {:>6} {:>9} {:>9} {:>7} {:>9} {:>9} {:>7} {:>7}",
        "task", "n", "auroc_lr", "auroc_gb", "Δauroc", "prauc_lr", "prauc_gb", "ece_lr", "ece_gb"
    );
    for task in lr
        .as_object()
        .map(|o| o.keys().collect())
        .unwrap_or(Vec::new())
    {
        let (l, g) = (&lr[task], &gb[task]);
        let delta = match (g["auroc"].as_f64(), l["auroc"].as_f64()) {
            (Some(g), Some(l)) => format!("{:+.3}", g - l),
            _ => "-".into(),
        };
        println!(
            "{:<14} {:>6} {:>9} {:>9} {:>7} {:>9} {:>9} {:>7} {:>7}",
            task,
            l["n"],
            fmt(&l["auroc"]),
            fmt(&g["auroc"]),
            delta,
            fmt(&l["pr_auc"]),
            fmt(&g["pr_auc"]),
            fmt(&l["ece"]),
            fmt(&g["ece"]),
        );
    }
    println!("each recipe at its own threshold (≤ 2 % of honest calibration rows): honest escalated / hallucinations contained, lr | gbdt");
    let (lo, go) = (&r["cv_operating_point"], &r["gbdt"]["cv_operating_point"]);
    for task in lo
        .as_object()
        .map(|o| o.keys().collect())
        .unwrap_or(Vec::new())
    {
        println!(
            "  {task:<13} {} / {} | {} / {}",
            fmt(&lo[task]["honest_escalation_rate"]),
            fmt(&lo[task]["containment"]),
            fmt(&go[task]["honest_escalation_rate"]),
            fmt(&go[task]["containment"]),
        );
    }
}

/// Sends the rows through the gateway and scores them natively with `m` (and the bundle's
/// tenant statistics).
fn through(
    a: &EvalArgs,
    cfg: Option<&kakeya_control_plane::config::Config>,
    url: &str,
    rows: &[dataset::Row],
    m: &Model,
    tenant_stats: BTreeMap<String, TenantStats>,
) -> anyhow::Result<eval_gateway::Run> {
    if a.key.is_none() {
        eprintln!("WARNING: no --key / PCS_HMAC_KEY: the PCS are sent unsigned");
    }
    let scorer = Scorer::new(Bundle {
        format: BUNDLE_FORMAT.into(),
        version: 0,
        created_at_ms: 0,
        champion: m.clone(),
        challenger: None,
        challenger_weight: 0.0,
        canary: None,
        tenant_stats,
        policy: Policy::default(),
        ensemble: Default::default(),
        budgets: Default::default(),
        task_models: Default::default(),
        upstreams: Default::default(),
        anomaly: Default::default(),
    });
    // In single-tenant mode the gateway treats every request as tenant `default`.
    let multi = cfg.is_none_or(|c| c.keyring.multi_tenant);
    if a.tenant.iter().any(|t| t.trim().is_empty()) {
        anyhow::bail!("--tenant {:?}: empty tenant name", a.tenant.join(","));
    }
    let tenants: Vec<eval_gateway::TenantRoute> = if a.tenant.is_empty() {
        vec![eval_gateway::TenantRoute {
            header: None,
            gateway: "default".into(),
        }]
    } else {
        a.tenant
            .iter()
            .map(|t| eval_gateway::TenantRoute {
                header: Some(t.clone()),
                gateway: if multi { t.clone() } else { "default".into() },
            })
            .collect()
    };
    let verify = cfg.map(|c| c.verify).unwrap_or_default();
    let run_id = format!("{:x}", kakeya_control_plane::now_ms());
    eval_gateway::run(
        rows,
        &eval_gateway::Target {
            url,
            key: a.key.as_deref(),
            tenants: &tenants,
            verify: &verify,
            run_id: &run_id,
            concurrency: a.in_flight(),
        },
        &scorer,
    )
}

pub fn pcs_build(a: &PcsBuildArgs) -> anyhow::Result<()> {
    let mut text = String::new();
    if a.text == "-" {
        std::io::stdin().read_to_string(&mut text)?;
    } else {
        text =
            std::fs::read_to_string(&a.text).with_context(|| format!("cannot read {}", a.text))?;
    }
    let read = |p: &Option<PathBuf>| -> anyhow::Result<String> {
        match p {
            Some(p) => {
                std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))
            }
            None => Ok(String::new()),
        }
    };
    let evidence = (a.question.is_some() || a.context.is_some() || a.task.is_some())
        .then(|| -> anyhow::Result<_> {
            Ok(kakeya_core::evidence::Evidence {
                question: read(&a.question)?,
                context: read(&a.context)?,
                citations: Vec::new(),
                response: text.clone(),
                task: a.task,
            })
        })
        .transpose()?;
    let opts = BuildOptions {
        shard_id: a.shard_id.clone(),
        epoch: a.epoch,
    };
    let v = submission::signed_pcs_json(&text, evidence.as_ref(), &opts, a.key.as_deref());
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Eval {
        #[command(flatten)]
        a: EvalArgs,
    }

    fn eval_args(extra: &[&str]) -> Result<EvalArgs, clap::Error> {
        let base = ["eval", "--dataset", "d.jsonl", "--model", "champion"];
        Eval::try_parse_from([&base[..], extra].concat()).map(|e| e.a)
    }

    #[test]
    fn feedback_needs_through_and_is_the_owners() {
        assert!(
            eval_args(&["--feedback"]).is_err(),
            "--feedback needs --through"
        );
        let through = ["--through", "http://127.0.0.1:8080"];
        let a = eval_args(&[&through[..], &["--feedback"]].concat()).unwrap();
        assert_eq!(a.feedback, Some(Source::Silver));
        assert!(a.needs_registry(), "labels go to the configured database");
        let a = eval_args(&[&through[..], &["--feedback", "bronze"]].concat()).unwrap();
        assert_eq!(a.feedback, Some(Source::Bronze));
        assert!(eval_args(&[&through[..], &["--feedback", "maybe"]].concat()).is_err());
        // Gold is refused before anything is read or sent.
        let a = eval_args(&[&through[..], &["--feedback", "gold"]].concat()).unwrap();
        let e = eval(&a, None).unwrap_err().to_string();
        assert!(e.contains("silver or bronze"), "{e}");
        assert_eq!(eval_args(&through).unwrap().feedback, None);
    }

    #[test]
    fn tenants_split_on_commas_and_skip_moves_the_window() {
        let a = eval_args(&["--tenant", "acme,beta", "--tenant", "eval"]).unwrap();
        assert_eq!(a.tenant, ["acme", "beta", "eval"]);
        assert_eq!(a.skip, 0);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rows.jsonl");
        let mut text = String::new();
        for task in ["qa", "dialogue"] {
            for item in 0..3 {
                for label in 0..2 {
                    text.push_str(&format!(
                        "{{\"id\":\"{task}-{item}-{label}\",\"task\":\"{task}\",\"question\":\"q\",\
                         \"context\":\"c {item}\",\"response\":\"r {item} {label}\",\"label\":{label}}}\n"
                    ));
                }
            }
        }
        std::fs::write(&path, text).unwrap();
        let ids = |limit, skip| -> Vec<String> {
            let (ds, _) = load_limited(&path, limit, skip).unwrap();
            ds.rows.into_iter().map(|r| r.id).collect()
        };
        assert_eq!(
            ids(Some(4), 0),
            ["qa-0-0", "qa-0-1", "dialogue-0-0", "dialogue-0-1"]
        );
        assert_eq!(
            ids(Some(4), 4),
            ["qa-1-0", "qa-1-1", "dialogue-1-0", "dialogue-1-1"]
        );
        assert_eq!(ids(None, 10), ["dialogue-2-0", "dialogue-2-1"]);
        let e = load_limited(&path, Some(2), 12)
            .err()
            .expect("nothing left after --skip 12")
            .to_string();
        assert!(e.contains("--skip 12 leaves no row of the 12"), "{e}");
    }
}
