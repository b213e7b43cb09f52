//! Time per call of `grounding::ground` on labelled JSONL rows from standard input (HaluEval's
//! `{task, question, context, response}`), natively or as a wasm32-wasip1 module under a WASI
//! runtime (docs/ARCHITECTURE.md, *RAG grounding*, has the commands and the figures).
//!
//! Every row is grounded `REPS` times after one warm-up call; each call is timed on its own with
//! the monotonic clock. The per-task table gives the nearest-rank p50 / p99 and the mean of all
//! calls, and the p50 / p99 over rows of each row's fastest call (`min_*`: the cost without
//! preemption, which dominates the tail on a shared machine), with the mean evidence size.

use kakeya_core::evidence::Evidence;
use kakeya_core::grounding::{ground, GroundingConfig, Sources};
use std::collections::BTreeMap;
use std::io::BufRead;
use std::time::Instant;

const REPS: usize = 5;

#[derive(serde::Deserialize)]
struct Row {
    task: String,
    #[serde(default)]
    question: String,
    #[serde(default)]
    context: String,
    response: String,
}

#[derive(Default)]
struct Task {
    ns: Vec<u64>,
    min_ns: Vec<u64>,
    rows: usize,
    bytes: usize,
}

fn pick(sorted: &[u64], q: f64) -> f64 {
    let n = sorted.len();
    let rank = ((q * n as f64).ceil() as usize).clamp(1, n.max(1));
    sorted.get(rank - 1).copied().unwrap_or(0) as f64 / 1000.0
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cfg = GroundingConfig::default();
    let sources = Sources::default();
    let mut tasks: BTreeMap<String, Task> = BTreeMap::new();
    let mut sink = 0.0f64;
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let r: Row = serde_json::from_str(&line)?;
        let ev = Evidence {
            question: r.question,
            context: r.context,
            citations: Vec::new(),
            response: r.response,
            task: None,
        };
        sink += ground(&ev, &cfg, &sources).measures.support;
        let t = tasks.entry(r.task).or_default();
        t.rows += 1;
        t.bytes += ev.question.len() + ev.context.len() + ev.response.len();
        let mut fastest = u64::MAX;
        for _ in 0..REPS {
            let start = Instant::now();
            let g = ground(&ev, &cfg, &sources);
            let ns = start.elapsed().as_nanos() as u64;
            t.ns.push(ns);
            fastest = fastest.min(ns);
            sink += g.measures.support;
        }
        t.min_ns.push(fastest);
    }
    println!(
        "{:<14} {:>6} {:>10} {:>8} {:>8} {:>8} {:>10} {:>10}",
        "task", "rows", "mean_bytes", "p50_us", "p99_us", "mean_us", "min_p50_us", "min_p99_us"
    );
    for (name, t) in &mut tasks {
        t.ns.sort_unstable();
        t.min_ns.sort_unstable();
        let mean = t.ns.iter().map(|&x| x as f64).sum::<f64>() / t.ns.len().max(1) as f64 / 1e3;
        println!(
            "{:<14} {:>6} {:>10.0} {:>8.1} {:>8.1} {:>8.1} {:>10.1} {:>10.1}",
            name,
            t.rows,
            t.bytes as f64 / t.rows.max(1) as f64,
            pick(&t.ns, 0.50),
            pick(&t.ns, 0.99),
            mean,
            pick(&t.min_ns, 0.50),
            pick(&t.min_ns, 0.99),
        );
    }
    // Keeps the calls from being optimised away.
    eprintln!("checksum {sink:.3}");
    Ok(())
}
