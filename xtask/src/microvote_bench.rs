//! `cargo xtask bench --microvote`: runs `kakeya microvote bench` on the HaluEval mix and
//! rewrites the micro-vote section of docs/BENCHMARKS.md from its JSON and the committed head's
//! card (the cross-validated figures `kakeya microvote train` computed).

use super::{build_kakeya, tools, Result};
use serde_json::Value;
use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

const BEGIN: &str = "<!-- microvote-bench:begin -->";
const END: &str = "<!-- microvote-bench:end -->";

fn dataset(root: &Path) -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("KAKEYA_MICROVOTE_DATASET") {
        return Ok(PathBuf::from(p));
    }
    let p = root.join("../shared/data/halueval/train.jsonl.gz");
    if p.is_file() {
        Ok(p)
    } else {
        Err("no HaluEval data: set KAKEYA_MICROVOTE_DATASET to a labelled JSONL".into())
    }
}

fn f(v: &Value, path: &[&str]) -> f64 {
    path.iter()
        .fold(v, |v, k| &v[*k])
        .as_f64()
        .unwrap_or(f64::NAN)
}

pub fn run(root: &Path, target: &Path) -> Result<()> {
    let model = tools::minilm(root)?;
    let data = dataset(root)?;
    let kakeya = build_kakeya("dev")?;
    let json_out = target.join("microvote-bench.json");
    let mut cmd = Command::new(&kakeya);
    cmd.args(["microvote", "bench", "--data"])
        .arg(&data)
        .arg("--out")
        .arg(&json_out)
        .env("KAKEYA_MICROVOTE_MODEL_DIR", &model);
    super::run(&mut cmd)?;
    let report: Value = serde_json::from_str(
        &std::fs::read_to_string(&json_out).map_err(|e| format!("{}: {e}", json_out.display()))?,
    )
    .map_err(|e| e.to_string())?;
    let ort = ort_compare(root, &model, &json_out)?;
    let head: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("microvote/head.json")).map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    let section = render(&report, &ort, &head);
    let doc_path = root.join("docs/BENCHMARKS.md");
    let doc = std::fs::read_to_string(&doc_path).map_err(|e| e.to_string())?;
    let new = match (doc.find(BEGIN), doc.find(END)) {
        (Some(b), Some(e)) if e > b => format!(
            "{}{}{}",
            &doc[..b],
            section.trim_end(),
            &doc[e + END.len()..]
        ),
        _ => format!("{}\n\n{}\n", doc.trim_end(), section.trim_end()),
    };
    std::fs::write(&doc_path, new).map_err(|e| e.to_string())?;
    eprintln!(
        "xtask: rewrote the micro-vote section of {}",
        doc_path.display()
    );
    Ok(())
}

/// The same encoder's forward passes under ONNX Runtime on the lengths the candle bench ran
/// (`microvote/reference/ort_bench.py`, in the pinned onnxruntime venv).
fn ort_compare(root: &Path, model: &Path, bench_json: &Path) -> Result<Value> {
    let python = tools::ort(root)?;
    let mut cmd = Command::new(python);
    cmd.arg(root.join("microvote/reference/ort_bench.py"))
        .arg(model)
        .arg(bench_json);
    eprintln!("xtask: $ {}", super::describe(&cmd));
    let out = cmd.output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "ort_bench.py failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}");
    serde_json::from_str(&text).map_err(|e| e.to_string())
}

fn render(r: &Value, ort: &Value, head: &Value) -> String {
    let load = std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    let mut s = String::new();
    let _ = writeln!(s, "{BEGIN}");
    let _ = writeln!(
        s,
        "## Micro-vote: all-MiniLM-L6-v2 (candle, CPU) + the trained head\n"
    );
    let _ = writeln!(
        s,
        "`cargo xtask bench --microvote` (`kakeya microvote bench`): {} HaluEval items, one answer each, \
         round-robin over the tasks; in process (no HTTP), load average {load} at the end. \
         *miss*: nothing cached; *context cached*: another answer against a context already encoded; \
         *answer cached*: the same request again. Targets (issue 14): miss p95 ≤ 30 ms, hit ≤ 1 ms.\n",
        r["requests"]
    );
    let _ = writeln!(
        s,
        "| threads | miss p50 | miss p95 | context cached p50 | p95 | answer cached p50 | p95 |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|");
    for t in ["1", "2"] {
        let k = format!("threads_{t}");
        let g = |a: &str, b: &str| f(r, &[&k, a, b]);
        let _ = writeln!(
            s,
            "| {t} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {:.3} ms | {:.3} ms |",
            g("miss", "p50_ms"),
            g("miss", "p95_ms"),
            g("context_hit", "p50_ms"),
            g("context_hit", "p95_ms"),
            g("answer_hit", "p50_ms"),
            g("answer_hit", "p95_ms")
        );
    }
    let _ = writeln!(
        s,
        "\nWhere a miss goes (the same requests, stage by stage, per request):\n\n\
         | threads | tokenize p50 | p95 | forward passes p50 | p95 | features p50 | p95 |\n|---|---|---|---|---|---|---|"
    );
    for t in ["1", "2"] {
        let k = format!("threads_{t}");
        let g = |a: &str, b: &str| f(r, &[&k, a, b]);
        let _ = writeln!(
            s,
            "| {t} | {:.2} ms | {:.2} ms | {:.1} ms | {:.1} ms | {:.2} ms | {:.2} ms |",
            g("tokenize", "p50_ms"),
            g("tokenize", "p95_ms"),
            g("forward", "p50_ms"),
            g("forward", "p95_ms"),
            g("features", "p50_ms"),
            g("features", "p95_ms")
        );
    }
    let _ = writeln!(
        s,
        "\ncandle vs ONNX Runtime {} (`microvote/reference/ort_bench.py`: the same graph and weights, \
         the same token counts; pooled-embedding cosine with the float64 reference {:.6}, int8 {:.4}), \
         the forward passes of one miss per request:\n\n\
         | threads | candle p50 | candle p95 | ort p50 | ort p95 | ort int8 p50 | ort int8 p95 |\n|---|---|---|---|---|---|---|",
        ort["onnxruntime"].as_str().unwrap_or("?"),
        f(ort, &["min_cosine_vs_reference"]),
        f(ort, &["min_cosine_vs_reference_int8"])
    );
    for t in ["1", "2"] {
        let k = format!("threads_{t}");
        let g = |a: &str, b: &str| f(ort, &[&k, a, b]);
        let _ = writeln!(
            s,
            "| {t} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms |",
            g("candle", "p50_ms"),
            g("candle", "p95_ms"),
            g("ort", "p50_ms"),
            g("ort", "p95_ms"),
            g("ort_int8", "p50_ms"),
            g("ort_int8", "p95_ms")
        );
    }
    let card = &head["card"];
    let _ = writeln!(
        s,
        "\nThe head alone, cross-validated ({} folds over items, from its card; `{}`), next to a \
         length-only logit on the same folds; LM = length-matched pairs:\n",
        card["folds"],
        card["command"].as_str().unwrap_or("")
    );
    let _ = writeln!(
        s,
        "| task | rows | AUROC head | AUROC length-only | LM head | LM length-only | LM pairs |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|");
    if let Some(cv) = card["cv"].as_object() {
        for (task, m) in cv {
            let _ = writeln!(
                s,
                "| {task} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {} |",
                m["n"],
                f(m, &["auroc_head"]),
                f(m, &["auroc_length_only"]),
                f(m, &["auroc_length_matched_head"]),
                f(m, &["auroc_length_matched_length_only"]),
                m["n_length_matched"]
            );
        }
    }
    let _ = writeln!(s, "{END}");
    s
}
