//! `kakeya anomaly train|eval`: the anomaly detector's model offline (no database). Both build the
//! evaluation data from a labelled JSONL ([`anomaly::eval_data`]), train the VAE on the normal
//! training rows and score the held-out rows with the core scorer.

use anyhow::Context;
use clap::{Args, Subcommand};
use kakeya_control_plane::anomaly::{eval, eval_data::GenOptions, train::TrainOptions};
use kakeya_control_plane::ml::dataset;
use std::path::{Path, PathBuf};

/// The HaluEval training split beside the checkout (as `cargo xtask bench --fit` uses it).
const SHARED_DATASET: &str = "../shared/data/halueval/train.jsonl.gz";

#[derive(Subcommand)]
pub enum AnomalyModelCmd {
    /// Train the VAE on the normal rows of a labelled dataset and write the artifact and its
    /// model card (training and validation loss per epoch, KS of held-out normal scores
    /// against uniform, the evaluation figures).
    Train {
        #[command(flatten)]
        data: DataArgs,
        /// Where to write the artifact; the card goes next to it as `<stem>.card.json`.
        #[arg(long, default_value = "vae.json")]
        out: PathBuf,
    },
    /// Train as `train` does, then print AUROC and TPR at FPR ≤ 2 % per degeneracy kind and the
    /// KS test of held-out normal scores against uniform.
    Eval {
        #[command(flatten)]
        data: DataArgs,
        /// Also write the full report as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Also write every sample's features as CSV (for scripts/anomaly_baseline.py).
        #[arg(long)]
        features_out: Option<PathBuf>,
    },
}

#[derive(Args)]
pub struct DataArgs {
    /// Labelled JSONL (plain or .gz): {id, task, question, context, response, label}; label 0
    /// rows are the normal traffic. Default: ../shared/data/halueval/train.jsonl.gz when it
    /// exists, else the HaluEval sample embedded in the binary.
    #[arg(long, env = "KAKEYA_ANOMALY_DATASET")]
    dataset: Option<PathBuf>,
    /// Seed of the weights, batches, latent draws and the variants.
    #[arg(long, default_value_t = kakeya_control_plane::anomaly::train::DEFAULT_SEED)]
    seed: u64,
    /// Use at most this many normal rows (file order).
    #[arg(long)]
    limit: Option<usize>,
    /// Most training epochs (early stopping may end sooner).
    #[arg(long, default_value_t = TrainOptions::default().epochs)]
    epochs: usize,
    /// Weight of the KL term (β-VAE).
    #[arg(long, default_value_t = TrainOptions::default().beta)]
    beta: f64,
}

fn load(a: &DataArgs) -> anyhow::Result<(dataset::Dataset, String)> {
    let path = match &a.dataset {
        Some(p) => Some(p.clone()),
        None => Some(PathBuf::from(SHARED_DATASET)).filter(|p| p.is_file()),
    };
    match path {
        Some(p) => {
            let ds = dataset::load(&p)
                .with_context(|| format!("cannot load the dataset {}", p.display()))?;
            Ok((ds, p.display().to_string()))
        }
        None => {
            let bytes = kakeya_control_plane::registry::bootstrap::SAMPLE;
            let rows = dataset::parse(bytes)?;
            let sha256 = kakeya_core::ids::sha256_hex(bytes);
            Ok((
                dataset::Dataset { rows, sha256 },
                "the HaluEval sample embedded in kakeya".into(),
            ))
        }
    }
}

fn run_eval(a: &DataArgs) -> anyhow::Result<eval::Run> {
    let (ds, name) = load(a)?;
    let gen = GenOptions {
        seed: a.seed,
        max_rows: a.limit,
        ..GenOptions::default()
    };
    let opts = TrainOptions {
        seed: a.seed,
        epochs: a.epochs,
        beta: a.beta,
        ..TrainOptions::default()
    };
    let mut bars: Vec<(String, indicatif::ProgressBar)> = Vec::new();
    let run = eval::run(&ds, &name, &gen, &opts, &mut |stage, done, total| {
        if bars.last().is_none_or(|(s, _)| s != stage) {
            if let Some((_, b)) = bars.last() {
                b.finish_and_clear();
            }
            bars.push((
                stage.to_string(),
                kakeya_control_plane::progress::bar(stage, total as u64),
            ));
        }
        if let Some((_, b)) = bars.last() {
            b.set_position(done as u64);
        }
    });
    if let Some((_, b)) = bars.last() {
        b.finish_and_clear();
    }
    run.context("training the VAE failed")
}

fn write_json(path: &Path, v: &impl serde::Serialize) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(v)?;
    std::fs::write(path, text + "\n").with_context(|| format!("cannot write {}", path.display()))
}

fn summary(r: &eval::EvalReport) {
    eprintln!(
        "{}: {} training, {} ECDF, {} held-out normal rows, {} variants; {} epochs (best {}), \
         model {}",
        r.dataset,
        r.n_train,
        r.n_ecdf,
        r.n_test_normal,
        r.n_variants,
        r.epochs_run,
        r.best_epoch + 1,
        r.model_version
    );
}

pub fn run(cmd: AnomalyModelCmd) -> anyhow::Result<()> {
    match cmd {
        AnomalyModelCmd::Train { data, out } => {
            let r = run_eval(&data)?;
            summary(&r.report);
            std::fs::write(&out, r.trained.model.canonical_bytes())
                .with_context(|| format!("cannot write {}", out.display()))?;
            let card_path = out.with_extension("card.json");
            write_json(&card_path, &eval::card(&r.report, &r.trained))?;
            println!(
                "{} ({}) written to {}, card {}",
                r.trained.model.version(),
                r.trained.model.sha256(),
                out.display(),
                card_path.display()
            );
        }
        AnomalyModelCmd::Eval {
            data,
            json,
            features_out,
        } => {
            let r = run_eval(&data)?;
            summary(&r.report);
            print!("{}", eval::table(&r.report));
            if let Some(p) = json {
                write_json(&p, &r.report)?;
            }
            if let Some(p) = features_out {
                let mut f = std::io::BufWriter::new(
                    std::fs::File::create(&p)
                        .with_context(|| format!("cannot create {}", p.display()))?,
                );
                eval::write_features_csv(&r.samples, &mut f)?;
            }
        }
    }
    Ok(())
}
