//! `kakeya train`, `kakeya eval` and `kakeya pcs build`: thin CLI wrappers over
//! [`kakeya_control_plane::ml`] and [`kakeya_core::pcs_builder`].

use anyhow::Context;
use clap::Args;
use kakeya_control_plane::ml::{dataset, eval, model};
use kakeya_core::model::{HrsModel, TrainingMeta};
use kakeya_core::pcs_builder::{build, BuildOptions, RECIPE_VERSION};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Args)]
pub struct TrainArgs {
    /// Labelled JSONL (plain or .gz): {id, task, question, context, response, label}.
    #[arg(long)]
    dataset: PathBuf,
    /// Seed of the fold assignment and the calibration split.
    #[arg(long, default_value_t = eval::DEFAULT_SEED)]
    seed: u64,
    /// Where to write the model artifact.
    #[arg(long, default_value = "model.json")]
    out: PathBuf,
    /// L2 weight (1/C) on standardised features.
    #[arg(long, default_value_t = model::DEFAULT_L2)]
    l2: f64,
    /// Also register the artifact in the model registry (DATABASE_URL), with a model card
    /// computed from this run's cross-validation.
    #[arg(long)]
    pub register: bool,
}

#[derive(Args)]
pub struct EvalArgs {
    /// Labelled JSONL (plain or .gz).
    #[arg(long)]
    dataset: PathBuf,
    /// Score with this artifact instead of cross-validating the default recipe (figures are
    /// in-sample if it was trained on the same dataset).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Write the JSON report here.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Number of folds.
    #[arg(long, default_value_t = eval::DEFAULT_FOLDS)]
    folds: usize,
    /// Seed of the fold assignment and the calibration split.
    #[arg(long, default_value_t = eval::DEFAULT_SEED)]
    seed: u64,
    /// L2 weight (1/C) on standardised features.
    #[arg(long, default_value_t = model::DEFAULT_L2)]
    l2: f64,
    /// Debug: write the feature matrix with folds to this CSV.
    #[arg(long, hide = true)]
    dump_features: Option<PathBuf>,
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
}

fn progress(label: &'static str, total: usize) -> impl FnMut(usize) {
    move |done| {
        eprint!("\r{label}: {done}/{total}");
        if done >= total {
            eprintln!();
        }
        let _ = std::io::stderr().flush();
    }
}

fn load(path: &std::path::Path) -> anyhow::Result<(dataset::Dataset, eval::Prepared)> {
    let t = Instant::now();
    let ds = dataset::load(path)?;
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
    let (ds, p) = load(&a.dataset)?;
    let cv = eval::cross_validate(
        &p,
        eval::DEFAULT_FOLDS,
        a.seed,
        a.l2,
        progress("cv folds", eval::DEFAULT_FOLDS),
    );
    let cv_metrics = eval::per_task(&p, &cv.model);
    let (pipe, tenant) = eval::fit_all(&p, a.seed, a.l2);
    let m = model::artifact(
        pipe,
        tenant,
        TrainingMeta {
            seed: a.seed,
            rows: p.len(),
            dataset_sha256: ds.sha256,
            recipe_version: RECIPE_VERSION.into(),
            l2: a.l2,
            cv_metrics,
        },
    );
    m.validate()?;
    std::fs::write(&a.out, m.canonical_bytes())
        .with_context(|| format!("cannot write {}", a.out.display()))?;
    println!(
        "wrote {} ({}, sha256 {}); {}-fold CV AUROC (all) {}",
        a.out.display(),
        m.version(),
        m.sha256(),
        eval::DEFAULT_FOLDS,
        m.training.cv_metrics["all"]["auroc"]
    );
    if let Some(cfg) = cfg {
        let card =
            kakeya_control_plane::registry::card::from_evaluation(&m, &p, &cv, eval::DEFAULT_FOLDS);
        let s = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(async {
                let db = kakeya_control_plane::store::Db::connect(&cfg.database_url, None)
                    .await
                    .context("cannot open the database; check DATABASE_URL")?;
                anyhow::Ok(
                    kakeya_control_plane::registry::insert_model(
                        &db,
                        &m,
                        &card,
                        kakeya_control_plane::now_ms(),
                    )
                    .await?,
                )
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

pub fn eval(a: &EvalArgs) -> anyhow::Result<()> {
    let (ds, p) = load(&a.dataset)?;
    let cv = eval::cross_validate(&p, a.folds, a.seed, a.l2, progress("cv folds", a.folds));
    let (version, scores, in_sample) = match &a.model {
        Some(path) => {
            let bytes =
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            let m = HrsModel::from_json(&bytes)?;
            let in_sample = m.training.dataset_sha256 == ds.sha256;
            if in_sample {
                eprintln!(
                    "WARNING: the model was trained on this dataset: its figures are in-sample"
                );
            }
            (m.version(), eval::score_with(&p, &m), in_sample)
        }
        None => (
            format!(
                "cv:{}/{}",
                kakeya_core::features::SCHEMA_VERSION,
                RECIPE_VERSION
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
        "in_sample": in_sample,
    });
    let r = eval::report(&p, &version, &scores, &cv, meta);
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
    if let Some(path) = &a.report {
        std::fs::write(path, serde_json::to_vec_pretty(&r)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("report written to {}", path.display());
    }
    Ok(())
}

pub fn pcs_build(a: &PcsBuildArgs) -> anyhow::Result<()> {
    let mut text = String::new();
    if a.text == "-" {
        std::io::stdin().read_to_string(&mut text)?;
    } else {
        text =
            std::fs::read_to_string(&a.text).with_context(|| format!("cannot read {}", a.text))?;
    }
    let b = build(
        &text,
        &BuildOptions {
            shard_id: a.shard_id.clone(),
            epoch: a.epoch,
        },
    );
    let sig = match &a.key {
        Some(k) => kakeya_core::signature::sign_hmac(b.signing_payload().as_bytes(), k.as_bytes()),
        None => String::new(),
    };
    println!("{}", serde_json::to_string_pretty(&b.to_json(&sig))?);
    Ok(())
}
