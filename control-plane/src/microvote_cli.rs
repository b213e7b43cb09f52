//! `kakeya microvote serve|train|bench|score`: the auxiliary model's server and its offline
//! tools (kakeya-microvote holds the model and the server; training is
//! [`kakeya_control_plane::microvote_head`]).

use anyhow::Context;
use clap::{Args, Subcommand};
use kakeya_control_plane::config::Config;
use kakeya_control_plane::microvote_head::{self, Training};
use kakeya_control_plane::ml::dataset::{self, Row};
use kakeya_control_plane::progress;
use kakeya_core::microvote::MicroVoteRequest;
use kakeya_core::task::TaskKind;
use kakeya_microvote::encoder::{default_model_dir, Encoder};
use kakeya_microvote::head::Head;
use kakeya_microvote::scorer::Scorer;
use kakeya_microvote::{bench, metrics::Metrics, server};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Subcommand)]
pub enum MicrovoteCmd {
    /// Serve POST /v1/microvote, /healthz, /metrics and /v1/openapi.json on [microvote] addr
    /// (default 127.0.0.1:8091; KAKEYA_MICROVOTE_ADDR), at most two inference threads.
    Serve,
    /// Train the head on a labelled JSONL (HaluEval format): encode the rows, cross-validate
    /// per task next to a length-only logit, write the head with its card.
    Train(TrainArgs),
    /// Latency of the scorer on a labelled JSONL: cache miss, context cached, answer cached
    /// (p50/p95), for 1 and 2 threads.
    Bench(BenchArgs),
    /// Score one answer and print the server's answer as JSON.
    Score(ScoreArgs),
}

#[derive(Args)]
pub struct ModelArgs {
    /// Folder of the encoder (default KAKEYA_MICROVOTE_MODEL_DIR, else .kakeya-tools/all-minilm-l6-v2
    /// as `cargo xtask microvote-model` unpacks it).
    #[arg(long)]
    model_dir: Option<PathBuf>,
}

impl ModelArgs {
    fn load(&self) -> anyhow::Result<Encoder> {
        let dir = self.model_dir.clone().unwrap_or_else(default_model_dir);
        Ok(Encoder::load(&dir)?)
    }
}

#[derive(Args)]
pub struct TrainArgs {
    /// Labelled JSONL, plain or gzip (id, task, question, context, response, label).
    #[arg(long)]
    data: PathBuf,
    /// Where the head JSON goes (the committed one is microvote/head.json).
    #[arg(long)]
    out: PathBuf,
    /// Rows to train on: whole items round-robin over the tasks; 0 = every row.
    #[arg(long, default_value_t = microvote_head::DEFAULT_ROWS)]
    rows: usize,
    #[arg(long, default_value_t = microvote_head::DEFAULT_FOLDS as u64, value_parser = clap::value_parser!(u64).range(2..=20))]
    folds: u64,
    #[arg(long, default_value_t = microvote_head::DEFAULT_SEED)]
    seed: u64,
    /// Encoder threads, 1 or 2.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=2))]
    threads: u64,
    #[command(flatten)]
    model: ModelArgs,
}

#[derive(Args)]
pub struct BenchArgs {
    /// Labelled JSONL whose rows are the requests (HaluEval: the task mix).
    #[arg(long)]
    data: PathBuf,
    /// Items measured (one answer each, whole items round-robin over the tasks).
    #[arg(long, default_value_t = 150)]
    rows: usize,
    /// Write the report as JSON here.
    #[arg(long)]
    out: Option<PathBuf>,
    #[command(flatten)]
    model: ModelArgs,
}

#[derive(Args)]
pub struct ScoreArgs {
    #[arg(long)]
    response: String,
    #[arg(long)]
    context: Option<String>,
    #[arg(long)]
    question: Option<String>,
    /// qa | dialogue | summarization | rag | other
    #[arg(long, value_parser = ["qa", "dialogue", "summarization", "rag", "other"])]
    task: Option<String>,
    /// A head JSON (default: the built-in one).
    #[arg(long)]
    head: Option<PathBuf>,
    #[command(flatten)]
    model: ModelArgs,
}

/// Threads candle's matrix products use; read by candle at each product, and by rayon when its
/// pool starts (before any encoding).
fn set_threads(n: usize) {
    std::env::set_var("RAYON_NUM_THREADS", n.to_string());
}

fn load_head(path: Option<&Path>) -> anyhow::Result<Head> {
    match path {
        None => Ok(Head::builtin()?),
        Some(p) => {
            let s = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read the head {}", p.display()))?;
            Ok(Head::parse(&s)?)
        }
    }
}

/// The offline verbs (no service configuration needed); `None` for `serve`.
pub fn run_offline(cmd: &MicrovoteCmd) -> Option<anyhow::Result<()>> {
    match cmd {
        MicrovoteCmd::Serve => None,
        MicrovoteCmd::Train(a) => Some(train(a)),
        MicrovoteCmd::Bench(a) => Some(bench_cmd(a)),
        MicrovoteCmd::Score(a) => Some(score(a)),
    }
}

pub fn serve(cfg: &Config) -> anyhow::Result<()> {
    let mv = &cfg.microvote;
    set_threads(mv.threads_per_worker());
    let dir = mv.model_dir.clone().unwrap_or_else(default_model_dir);
    let encoder = Encoder::load(&dir)?;
    let head = load_head(mv.head.as_deref())?;
    let scorer = Arc::new(Scorer::new(encoder, head, mv.cache_entries));
    let metrics = Metrics::new().context("metrics registry")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(mv.addr)
            .await
            .with_context(|| {
                format!(
                    "cannot listen on {} ([microvote] addr / KAKEYA_MICROVOTE_ADDR)",
                    mv.addr
                )
            })?;
        tracing::info!(
            addr = %mv.addr,
            model = scorer.version(),
            workers = mv.workers,
            threads = mv.threads,
            "micro-vote serving"
        );
        let state = server::start(scorer, mv.limits(), metrics);
        server::serve(listener, state, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .context("micro-vote server")
    })
}

fn load_rows(path: &Path, n: usize) -> anyhow::Result<(Vec<Row>, String)> {
    let ds = dataset::load(path)?;
    let rows = if n == 0 {
        ds.rows
    } else {
        dataset::sample_by_task(&ds.rows, n)
    };
    Ok((rows, ds.sha256))
}

fn train(a: &TrainArgs) -> anyhow::Result<()> {
    set_threads(1);
    let (rows, sha) = load_rows(&a.data, a.rows)?;
    let encoder = a.model.load()?;
    let weights = encoder.weights_sha256.clone();
    // Room for every context: the two answers of an item share one encoding.
    let scorer = Scorer::new(encoder, Head::builtin()?, rows.len());
    let pb = progress::bar("encoding", rows.len() as u64);
    let t0 = std::time::Instant::now();
    let x = microvote_head::encode(&scorer, &rows, a.threads as usize, &|d| {
        pb.set_position(d as u64)
    })?;
    pb.finish_and_clear();
    let secs = t0.elapsed().as_secs_f64();
    let mut card = serde_json::Map::new();
    card.insert("data_sha256".into(), json!(sha));
    card.insert(
        "command".into(),
        json!(format!(
            "kakeya microvote train --data {} --rows {} --folds {} --seed {}",
            a.data
                .file_name()
                .map(|f| f.to_string_lossy())
                .unwrap_or_default(),
            a.rows,
            a.folds,
            a.seed
        )),
    );
    card.insert(
        "encoder".into(),
        json!({"name": "all-MiniLM-L6-v2", "weights_sha256": weights}),
    );
    card.insert(
        "encoding_seconds".into(),
        json!((secs * 10.0).round() / 10.0),
    );
    let head = microvote_head::train(
        &Training {
            rows: &rows,
            x: &x,
            folds: a.folds as usize,
            seed: a.seed,
            l2: microvote_head::L2,
        },
        card,
    );
    let mut text = serde_json::to_string_pretty(&head)?;
    text.push('\n');
    std::fs::write(&a.out, text).with_context(|| format!("cannot write {}", a.out.display()))?;
    eprintln!(
        "encoded {} rows in {secs:.0} s; head {} written to {}",
        rows.len(),
        head.version(),
        a.out.display()
    );
    println!(
        "{:<14} {:>6} {:>10} {:>12} {:>10} {:>12}",
        "task", "n", "AUROC head", "length-only", "LM head", "LM length"
    );
    if let Some(cv) = head.card.get("cv").and_then(|v| v.as_object()) {
        for (task, m) in cv {
            let f = |k: &str| {
                m.get(k)
                    .and_then(|v| v.as_f64())
                    .map_or("-".into(), |v| format!("{v:.3}"))
            };
            println!(
                "{task:<14} {:>6} {:>10} {:>12} {:>10} {:>12}",
                m.get("n").and_then(|v| v.as_u64()).unwrap_or(0),
                f("auroc_head"),
                f("auroc_length_only"),
                f("auroc_length_matched_head"),
                f("auroc_length_matched_length_only")
            );
        }
    }
    Ok(())
}

/// One answer per item (distinct contexts, so the first pass is all misses).
fn bench_requests(rows: &[Row]) -> Vec<MicroVoteRequest> {
    let mut seen = std::collections::BTreeSet::new();
    rows.iter()
        .filter(|r| seen.insert(r.group().to_string()))
        .map(microvote_head::request_of)
        .collect()
}

fn bench_cmd(a: &BenchArgs) -> anyhow::Result<()> {
    let (rows, sha) = load_rows(&a.data, a.rows * 2)?;
    let reqs = bench_requests(&rows);
    let mut out = serde_json::Map::new();
    out.insert("data_sha256".into(), json!(sha));
    out.insert("requests".into(), json!(reqs.len()));
    // One scorer per thread count, fresh caches each time. Candle reads the thread count at every
    // product; rayon's pool is sized once, at its first use: so two threads first.
    for threads in [2usize, 1] {
        set_threads(threads);
        let scorer = Scorer::new(a.model.load()?, Head::builtin()?, reqs.len() * 2);
        // Warm-up: the first products allocate.
        let _ = scorer.score(&MicroVoteRequest {
            question: None,
            context: None,
            response: "warm up".into(),
            task: None,
        });
        let cb = progress::callback(&format!("{threads} thread(s)"), reqs.len() * 3);
        let mut cb = cb;
        let r = bench::run(&scorer, &reqs, &mut cb);
        eprintln!(
            "{threads} thread(s): miss p50 {:.1} ms p95 {:.1} ms · context cached p50 {:.1} p95 {:.1} ms · answer cached p50 {:.3} p95 {:.3} ms",
            r.miss.p50_ms, r.miss.p95_ms, r.context_hit.p50_ms, r.context_hit.p95_ms, r.answer_hit.p50_ms, r.answer_hit.p95_ms
        );
        eprintln!(
            "{threads} thread(s), a miss by stage: tokenize p50 {:.2} p95 {:.2} ms · forward p50 {:.1} p95 {:.1} ms · features p50 {:.2} p95 {:.2} ms",
            r.tokenize.p50_ms, r.tokenize.p95_ms, r.forward.p50_ms, r.forward.p95_ms, r.features.p50_ms, r.features.p95_ms
        );
        out.insert(format!("threads_{threads}"), serde_json::to_value(&r)?);
    }
    let text = serde_json::to_string_pretty(&out)?;
    if let Some(p) = &a.out {
        std::fs::write(p, format!("{text}\n"))
            .with_context(|| format!("cannot write {}", p.display()))?;
    }
    println!("{text}");
    Ok(())
}

fn score(a: &ScoreArgs) -> anyhow::Result<()> {
    set_threads(2);
    let scorer = Scorer::new(a.model.load()?, load_head(a.head.as_deref())?, 4);
    let req = MicroVoteRequest {
        question: a.question.clone(),
        context: a.context.clone(),
        response: a.response.clone(),
        task: a.task.as_deref().and_then(TaskKind::parse),
    };
    let t0 = std::time::Instant::now();
    let s = scorer.score(&req)?;
    println!(
        "{}",
        json!({
            "p_hallucinated": s.p_hallucinated,
            "model": scorer.version(),
            "server_us": t0.elapsed().as_micros() as u64,
            "context_cached": s.context_cached,
        })
    );
    Ok(())
}
