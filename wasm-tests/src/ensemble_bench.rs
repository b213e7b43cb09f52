//! `cargo xtask bench --ensemble`: the whole ensemble measured through real Envoy on held-out
//! HaluEval rows, with the real micro-vote server behind the filter, and an ablation of what
//! each vote adds. Rewrites the marked section of docs/ENSEMBLE.md.
//!
//! 1. **Held out.** From the HaluEval training split, the items of neither the embedded sample
//!    (the default HRS model's training data) nor the micro-vote head's training rows (the
//!    first `card.rows` of `sample_by_task`, per the committed head's card); of the rest, whole
//!    items round-robin over the tasks: a calibration part, then a disjoint evaluation part.
//! 2. **The stack** (`risk = σ(bias + Σ coef·logit(pₛ) + Σ abstain·[s abstained])`, the served
//!    `risk.score`) is fitted on the calibration part, from the probabilities the filter's
//!    votes use: the champion's HRS risk and `rag_grounding`'s `1 − support`, computed natively
//!    by the same core functions, and the real micro-vote server's answer.
//! 3. **Through the gateway.** The policy with that stack is served in a signed bundle and
//!    the evaluation part goes through `kakeya eval --through` (signed PCS v0.2 with
//!    evidence): AUROC per task of the served risk next to the reference HRS and length-only
//!    baselines `kakeya eval` cross-validates on the same rows, and the honest-escalation
//!    rate and share of hallucinations contained per task from the served statuses.
//! 4. **Ablation** (each vote removed in turn): the decisions by exact replay of the votes the
//!    gateway returned with [`kakeya_core::ensemble_policy::decide`] under the policy without
//!    that strategy (plus the pipeline's rule that a failed verification is never accepted;
//!    the replay of the served policy itself must reproduce every served verdict), and the
//!    AUROC of a stack refitted on the calibration part without that strategy's columns,
//!    scored natively on the evaluation part (the served stack scored natively must equal the
//!    served risks).

use crate::bench_doc::{loadavg, machine, replace_between};
use crate::ensemble::{sign_with_stack_key, BundleServer, MicrovoteServer, MICROVOTE_CLUSTER};
use crate::fixtures::KEY;
use crate::stack::{Artefacts, Stack, StackOptions};
use anyhow::{bail, ensure, Context, Result};
use kakeya_control_plane::microvote_head::request_of;
use kakeya_control_plane::ml::dataset::{self, Row};
use kakeya_control_plane::ml::metrics::auroc;
use kakeya_core::bundle::{Bundle, Scorer};
use kakeya_core::ensemble_policy::{
    decide, Decision, EnsemblePolicy, EnsembleSection, Stack as Stacking, VoteKind,
};
use kakeya_core::evidence::bound_evidence;
use kakeya_core::grounding::Sources;
use kakeya_core::pipeline::votes;
use kakeya_core::{parse, verify, VerifyParams};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub const BEGIN: &str = "<!-- ensemble-bench:begin -->";
pub const END: &str = "<!-- ensemble-bench:end -->";
pub const REPRODUCE: &str = "cargo xtask bench --ensemble";

/// Rows per part (whole items round-robin over the three tasks: a third each).
pub const CALIBRATION_ROWS: usize = 240;
pub const EVALUATION_ROWS: usize = 300;
/// The micro-vote's deadline in the measured policy: a cache miss takes hundreds of
/// milliseconds on this machine (docs/BENCHMARKS.md, micro-vote section), so the 30 ms
/// default would measure timeouts, not the vote. Below Envoy's 5 s `request_timeout`, which
/// runs while the filter holds the request.
pub const MICROVOTE_DEADLINE_MS: u32 = 4_000;
/// The stack's L2 (the tuner's, `ensemble::stack`).
const STACK_L2: f64 = 1.0;
/// Targets of issue 14 (AUROC per task).
const TARGETS: [(&str, f64); 3] = [("dialogue", 0.80), ("summarization", 0.90), ("qa", 0.99)];
/// Strategies of the stack, in column order (pcs_recompute is constant on honest PCS).
const STACKED: [&str; 3] = [votes::HRS, votes::RAG_GROUNDING, votes::MICRO_VOTE];

/// The HaluEval file: `KAKEYA_ENSEMBLE_DATASET`, else the shared training split.
pub fn source() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("KAKEYA_ENSEMBLE_DATASET") {
        return Ok(PathBuf::from(p));
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/halueval/train.jsonl.gz");
    ensure!(
        p.is_file(),
        "no HaluEval data at {}: set KAKEYA_ENSEMBLE_DATASET",
        p.display()
    );
    Ok(p)
}

/// The calibration and evaluation parts (see the module doc), and what was excluded.
pub fn held_out(ds: &dataset::Dataset) -> Result<(Vec<Row>, Vec<Row>, Value)> {
    let sample = dataset::parse(kakeya_control_plane::registry::bootstrap::SAMPLE)?;
    let mut excluded: BTreeSet<String> = sample.iter().map(|r| r.group().to_string()).collect();
    let head: Value = serde_json::from_str(include_str!("../../microvote/head.json"))?;
    let head_rows = head["card"]["rows"].as_u64().unwrap_or(0) as usize;
    let same_data = head["card"]["data_sha256"].as_str() == Some(ds.sha256.as_str());
    if same_data {
        for r in dataset::sample_by_task(&ds.rows, head_rows) {
            excluded.insert(r.group().to_string());
        }
    }
    let rest: Vec<Row> = ds
        .rows
        .iter()
        .filter(|r| !excluded.contains(r.group()))
        .cloned()
        .collect();
    let mut rows = dataset::sample_by_task(&rest, CALIBRATION_ROWS + EVALUATION_ROWS);
    ensure!(
        rows.len() == CALIBRATION_ROWS + EVALUATION_ROWS,
        "only {} held-out rows",
        rows.len()
    );
    let eval = rows.split_off(CALIBRATION_ROWS);
    // The cut may fall inside an item: keep items whole on one side.
    let cal_groups: BTreeSet<&str> = rows.iter().map(Row::group).collect();
    let eval: Vec<Row> = eval
        .into_iter()
        .filter(|r| !cal_groups.contains(r.group()))
        .collect();
    let info = json!({
        "dataset_sha256": ds.sha256,
        "excluded_items": excluded.len(),
        "embedded_sample_rows": sample.len(),
        "head_rows_excluded": if same_data { head_rows } else { 0 },
        "calibration_rows": rows.len(),
        "evaluation_rows": eval.len(),
    });
    Ok((rows, eval, info))
}

fn logit(p: f64) -> f64 {
    let p = p.clamp(1e-6, 1.0 - 1e-6);
    (p / (1.0 - p)).ln()
}

/// The probabilities the stacked strategies report for one row (`None`: abstained without
/// one), computed as the filter computes them.
#[derive(Debug, Clone)]
struct Probs {
    by: BTreeMap<&'static str, Option<f64>>,
}

fn probs(row: &Row, scorer: &Scorer, mv: &MicrovoteServer) -> Result<Probs> {
    let (body, _) = row.signed_pcs(&format!("cal-{}", row.id), Some(KEY));
    let pcs = parse(&body).with_context(|| format!("row {}", row.id))?;
    let outcome = verify(&pcs, &VerifyParams::default());
    let ev = bound_evidence(&pcs).ok().flatten();
    let hrs = scorer.assess("default", &pcs, &outcome, ev).map(|r| r.risk);
    let rag = votes::rag_grounding(ev, &Sources::default()).p;
    let micro = mv.score(&request_of(row))?.p_hallucinated;
    Ok(Probs {
        by: BTreeMap::from([
            (votes::HRS, hrs),
            (votes::RAG_GROUNDING, rag),
            (votes::MICRO_VOTE, Some(micro)),
        ]),
    })
}

/// [`probs`] of every row, on two threads (the server's two inference workers).
fn all_probs(
    rows: &[Row],
    scorer: &Scorer,
    mv: &MicrovoteServer,
    what: &str,
) -> Result<Vec<Probs>> {
    let next = AtomicUsize::new(0);
    let out: std::sync::Mutex<Vec<Option<Probs>>> = std::sync::Mutex::new(vec![None; rows.len()]);
    let pb = kakeya_control_plane::progress::bar(what, rows.len() as u64);
    std::thread::scope(|s| -> Result<()> {
        let workers: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| -> Result<()> {
                    loop {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        let Some(row) = rows.get(i) else {
                            return Ok(());
                        };
                        let p = probs(row, scorer, mv)?;
                        if let Ok(mut o) = out.lock() {
                            if let Some(slot) = o.get_mut(i) {
                                *slot = Some(p);
                            }
                        }
                        pb.inc(1);
                    }
                })
            })
            .collect();
        for w in workers {
            w.join()
                .map_err(|_| anyhow::anyhow!("a worker panicked"))??;
        }
        Ok(())
    })?;
    pb.finish_and_clear();
    out.into_inner()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .into_iter()
        .collect::<Option<Vec<_>>>()
        .context("a row was not scored")
}

/// The stack's design row: per strategy `logit(p)` (0 when abstained) and its abstention
/// indicator.
fn design(p: &Probs, strategies: &[&'static str]) -> Vec<f64> {
    strategies
        .iter()
        .flat_map(|s| match p.by.get(s).copied().flatten() {
            Some(v) => [logit(v), 0.0],
            None => [0.0, 1.0],
        })
        .collect()
}

/// Fits the stack over `strategies` on labelled probabilities.
fn fit_stack(ps: &[Probs], labels: &[u8], strategies: &[&'static str]) -> Stacking {
    let d = 2 * strategies.len();
    let x: Vec<f64> = ps.iter().flat_map(|p| design(p, strategies)).collect();
    let t: Vec<f64> = labels.iter().map(|&l| f64::from(l)).collect();
    let fit = kakeya_control_plane::ml::train::fit_logistic(&x, d, &t, STACK_L2, 200);
    let mut coef = BTreeMap::new();
    let mut abstain = BTreeMap::new();
    for (i, s) in strategies.iter().enumerate() {
        let w = |k: usize| fit.weights.get(k).copied().unwrap_or(0.0);
        coef.insert(s.to_string(), w(2 * i));
        // An indicator that never varied carries no information: left out.
        let varies = ps.iter().any(|p| p.by.get(s).copied().flatten().is_none());
        if varies {
            abstain.insert(s.to_string(), w(2 * i + 1));
        }
    }
    Stacking {
        bias: fit.intercept,
        coef,
        abstain,
    }
}

/// The stack's probability on one row (`core::pipeline::aggregate::stack`'s formula).
fn stacked(stack: &Stacking, p: &Probs) -> f64 {
    let mut z = stack.bias;
    for (name, c) in &stack.coef {
        if let Some(v) = p.by.get(name.as_str()).copied().flatten() {
            z += c * logit(v);
        }
    }
    for (name, w) in &stack.abstain {
        if p.by.get(name.as_str()).copied().flatten().is_none() {
            z += w;
        }
    }
    kakeya_core::model::sigmoid(z)
}

/// The measured policy: every strategy, weight 1, three accepts of four, reject at a
/// weighted reject confidence of 0.9, undecided → escalate.
pub fn policy(stack: Stacking) -> EnsemblePolicy {
    let s = crate::ensemble::strategy;
    EnsemblePolicy {
        policy_id: "bench-3of4".into(),
        n: 3,
        strategies: BTreeMap::from([
            (votes::PCS_RECOMPUTE.to_string(), s(None)),
            (votes::HRS.to_string(), s(None)),
            (votes::RAG_GROUNDING.to_string(), s(None)),
            (
                votes::MICRO_VOTE.to_string(),
                s(Some(MICROVOTE_DEADLINE_MS)),
            ),
        ]),
        min_confidence: 0.6,
        reject_confidence: 0.9,
        fail_open: true,
        stack,
        sources: None,
    }
}

/// The decision the pipeline reaches on `served` votes under `policy` (see the module doc).
fn replay(policy: &EnsemblePolicy, ensemble: &Value, verified: bool) -> Decision {
    let votes = ensemble["votes"].as_array().cloned().unwrap_or_default();
    let casts: Vec<(String, VoteKind, f64)> = votes
        .iter()
        .filter(|v| {
            policy
                .strategies
                .contains_key(v["strategy"].as_str().unwrap_or(""))
        })
        .filter_map(|v| {
            let kind = match v["outcome"].as_str()? {
                "accept" => VoteKind::Accept,
                "reject" => VoteKind::Reject,
                _ => return None,
            };
            Some((
                v["strategy"].as_str()?.to_string(),
                kind,
                v["confidence"].as_f64()?,
            ))
        })
        .collect();
    let d = decide(policy, casts.iter().map(|(s, k, c)| (s.as_str(), *k, *c)));
    if d == Decision::Accept && !verified {
        Decision::Escalate
    } else {
        d
    }
}

/// Honest-escalation rate and containment of `decisions` over `rows` of one task.
fn rates(rows: &[&Row], decided: &[bool]) -> (f64, f64) {
    let (mut h, mut he, mut f, mut fc) = (0usize, 0usize, 0usize, 0usize);
    for (r, &not_accepted) in rows.iter().zip(decided) {
        if r.label == 1 {
            h += 1;
            fc += usize::from(not_accepted);
        } else {
            f += 1;
            he += usize::from(not_accepted);
        }
    }
    let ratio = |a: usize, b: usize| {
        if b == 0 {
            f64::NAN
        } else {
            a as f64 / b as f64
        }
    };
    (ratio(he, f), ratio(fc, h))
}

/// Serves `base` with `ensemble` as `version` and waits until the gate decides with it.
fn serve(
    stack: &Stack,
    server: &BundleServer,
    base: &Bundle,
    version: u64,
    e: EnsembleSection,
) -> Result<()> {
    let id = e.default.as_ref().map(|p| p.policy_id.clone());
    let mut b = base.clone();
    b.version = version;
    b.ensemble = e;
    server.set(sign_with_stack_key(stack, &b)?);
    let deadline = Instant::now() + Duration::from_secs(60);
    for i in 0.. {
        let body = crate::fixtures::signed_pcs(&format!("probe-{version}-{i}"), KEY);
        let a = stack.submit(body.to_string().as_bytes())?;
        let r = a.json();
        // The probe has no evidence (no inference, and not scored by the HRS): the policy id
        // alone says the bundle is served, as only this bundle carries it.
        if r["ensemble"]["policy_id"].as_str().map(str::to_string) == id {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "bundle {version} never served: {}",
            a.body
        );
    }
    Ok(())
}

fn write_jsonl(rows: &[Row], path: &Path) -> Result<()> {
    let mut s = String::new();
    for r in rows {
        s.push_str(
            &json!({"id": r.id, "task": r.task, "question": r.question, "context": r.context,
                    "response": r.response, "label": r.label})
            .to_string(),
        );
        s.push('\n');
    }
    std::fs::write(path, s)?;
    Ok(())
}

/// Runs the whole measurement; the report as JSON (rendered by [`markdown`]).
pub fn run() -> Result<Value> {
    let t0 = Instant::now();
    let ds = dataset::load(&source()?)?;
    let (cal, eval, split) = held_out(&ds)?;
    let artefacts = Artefacts::from_env()?;
    let model_dir = crate::ensemble::microvote_model_dir().context(
        "KAKEYA_MICROVOTE_MODEL_DIR is not set: run through `cargo xtask bench --ensemble`",
    )?;
    eprintln!("ensemble bench: starting the micro-vote server and the stack");
    let mv = MicrovoteServer::start(&artefacts.kakeya, &model_dir)?;
    let bundles = BundleServer::start()?;
    let mut opts = StackOptions::scoring(200);
    opts.admin_override = Some(bundles.addr);
    opts.extra_clusters = vec![(MICROVOTE_CLUSTER.to_string(), mv.addr)];
    let stack = Stack::start(opts)?;
    let base = stack.current_bundle()?;
    let scorer = Scorer::new(base.clone());

    // 2. The stack, fitted on the calibration part.
    let cal_p = all_probs(&cal, &scorer, &mv, "calibration (native + micro-vote)")?;
    let cal_y: Vec<u8> = cal.iter().map(|r| r.label).collect();
    let served_stack = fit_stack(&cal_p, &cal_y, &STACKED);
    let pol = policy(served_stack.clone());
    serve(
        &stack,
        &bundles,
        &base,
        base.version + 1,
        EnsembleSection {
            default: Some(pol.clone()),
            tenants: BTreeMap::new(),
        },
    )?;

    // 3. Through the gateway.
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("evaluation.jsonl");
    let report_path = dir.path().join("report.json");
    write_jsonl(&eval, &data)?;
    eprintln!(
        "ensemble bench: {} rows through the gateway (kakeya eval --through)",
        eval.len()
    );
    let gateway = format!("http://{}", stack.gateway);
    let (d, rp) = (data.to_string_lossy(), report_path.to_string_lossy());
    let args = [
        "eval",
        "--dataset",
        &d,
        "--model",
        "champion",
        "--through",
        &gateway,
        "--key",
        KEY,
        "--report",
        &rp,
        // Per-task HRS models of the bundle serve their tasks' rows (the figures are the
        // served ones either way; the check is for single-model evaluations).
        "--allow-other-models",
        // The server scores one request at a time: two in flight keep it busy without
        // queueing callouts past their deadline.
        "--concurrency",
        "2",
    ];
    let out = stack.kakeya(&args)?;
    if !out.status.success() {
        bail!(
            "kakeya eval --through failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let report: Value = serde_json::from_slice(&std::fs::read(&report_path)?)?;
    let served = report["served"]["rows"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    ensure!(
        served.len() == eval.len(),
        "{} served rows of {}",
        served.len(),
        eval.len()
    );

    // 4. Native probabilities of the evaluation part (the server answers from its cache).
    let eval_p = all_probs(&eval, &scorer, &mv, "evaluation (native)")?;
    let native_served: Vec<f64> = eval_p.iter().map(|p| stacked(&served_stack, p)).collect();
    let equal = served
        .iter()
        .zip(&native_served)
        .filter(|(s, n)| s["risk"].as_f64().is_some_and(|r| (r - **n).abs() <= 1e-9))
        .count();
    let verified: Vec<bool> = served.iter().map(|s| s["verified"] == true).collect();
    let replayed_same = served
        .iter()
        .zip(&verified)
        .filter(|(s, v)| {
            Some(replay(&pol, &s["ensemble"], **v).as_str()) == s["ensemble"]["verdict"].as_str()
        })
        .count();

    // How the micro-vote voted through the gateway (an abstention says why).
    let mut micro: BTreeMap<String, usize> = BTreeMap::new();
    for e in &served {
        for v in e["ensemble"]["votes"].as_array().into_iter().flatten() {
            if v["strategy"] == votes::MICRO_VOTE {
                let o = v["outcome"].as_str().unwrap_or("?");
                let k = match o {
                    "abstain" => format!("abstain ({})", v["reason"].as_str().unwrap_or("?")),
                    _ => o.to_string(),
                };
                *micro.entry(k).or_default() += 1;
            }
        }
    }
    let mut variants: Vec<(String, EnsemblePolicy, Vec<&'static str>)> =
        vec![("all four".into(), pol.clone(), STACKED.to_vec())];
    for s in votes_in(&pol) {
        let mut p = pol.clone();
        p.strategies.remove(s);
        let kept: Vec<&'static str> = STACKED.iter().copied().filter(|k| *k != s).collect();
        variants.push((format!("without {s}"), p, kept));
    }
    let mut tasks = BTreeMap::new();
    for task in eval
        .iter()
        .map(|r| r.task.as_str())
        .collect::<BTreeSet<_>>()
    {
        let idx: Vec<usize> = (0..eval.len()).filter(|&i| eval[i].task == task).collect();
        let rows: Vec<&Row> = idx.iter().map(|&i| &eval[i]).collect();
        let labels: Vec<u8> = rows.iter().map(|r| r.label).collect();
        let not_accepted: Vec<bool> = idx.iter().map(|&i| served[i]["status"] != 200).collect();
        let (he, cont) = rates(&rows, &not_accepted);
        let mut ablation = Vec::new();
        for (name, p, kept) in &variants {
            let st = fit_stack(&cal_p, &cal_y, kept);
            let scores: Vec<f64> = idx.iter().map(|&i| stacked(&st, &eval_p[i])).collect();
            let dec: Vec<bool> = idx
                .iter()
                .map(|&i| replay(p, &served[i]["ensemble"], verified[i]) != Decision::Accept)
                .collect();
            let (he, cont) = rates(&rows, &dec);
            ablation.push(json!({"variant": name, "auroc": auroc(&scores, &labels),
                "honest_escalation_rate": he, "containment": cont}));
        }
        let t = &report["tasks"][task];
        let b = &report["baselines"];
        tasks.insert(
            task.to_string(),
            json!({
                "n": rows.len(),
                "hallucinated": labels.iter().filter(|&&l| l == 1).count(),
                "auroc_served": t["auroc"],
                "auroc_length_matched_served": t["auroc_length_matched"],
                "n_length_matched": t["n_length_matched"],
                "auroc_reference_hrs": b["reference_hrs"][task]["auroc"],
                "auroc_length_only": b["length_only"][task]["auroc"],
                "auroc_length_matched_length_only": b["length_only"][task]["auroc_length_matched"],
                "honest_escalation_rate": he,
                "containment": cont,
                "ablation": ablation,
            }),
        );
    }
    Ok(json!({
        "split": split,
        "policy": pol,
        "served": {
            "rows": served.len(),
            "statuses": report["served"]["statuses"],
            "rows_per_s": report["served"]["rows_per_s"],
            "served_equals_native_stack": equal,
            "replayed_verdict_equals_served": replayed_same,
            "micro_vote": micro,
        },
        "tasks": tasks,
        "microvote_metrics": mv.metrics().unwrap_or_default()
            .lines().filter(|l| l.starts_with("kakeya_microvote_requests_total")
                || l.starts_with("kakeya_microvote_answer_cache_total"))
            .collect::<Vec<_>>().join("\n"),
        "seconds": t0.elapsed().as_secs_f64(),
        "machine": machine(),
        "loadavg": loadavg(),
    }))
}

fn votes_in(p: &EnsemblePolicy) -> Vec<&'static str> {
    kakeya_core::ensemble_policy::STRATEGIES
        .into_iter()
        .filter(|s| p.strategies.contains_key(*s))
        .collect()
}

fn f3(v: &Value) -> String {
    v.as_f64()
        .filter(|x| x.is_finite())
        .map_or("–".into(), |x| format!("{x:.3}"))
}

fn pct(v: &Value) -> String {
    v.as_f64()
        .filter(|x| x.is_finite())
        .map_or("–".into(), |x| format!("{:.1} %", 100.0 * x))
}

/// The section of docs/ENSEMBLE.md, markers included.
pub fn markdown(r: &Value) -> String {
    let mut s = String::new();
    let sp = &r["split"];
    let _ = writeln!(s, "{BEGIN}");
    let _ = writeln!(
        s,
        "`{REPRODUCE}` ({:.0} s, {}, load average {} at the end). Held-out HaluEval rows \
         (dataset sha256 `{}`): {} items excluded (the embedded sample the default HRS model \
         was trained on, {} rows, and the {} rows the micro-vote head was trained on); of the \
         rest, {} calibration rows (the stack is fitted there) and {} evaluation rows, whole \
         items round-robin over the tasks. Through real Envoy with `kakeya microvote serve` \
         behind the filter: {} rows, statuses {}, {:.1} rows/s; the served risk equals the \
         stack scored natively for {} rows, and the replay of the served policy reproduces \
         {} served verdicts. The micro-vote's votes through the gateway: {}.\n",
        r["seconds"].as_f64().unwrap_or(0.0),
        r["machine"].as_str().unwrap_or(""),
        r["loadavg"].as_str().unwrap_or(""),
        sp["dataset_sha256"].as_str().unwrap_or(""),
        sp["excluded_items"],
        sp["embedded_sample_rows"],
        sp["head_rows_excluded"],
        sp["calibration_rows"],
        sp["evaluation_rows"],
        r["served"]["rows"],
        r["served"]["statuses"],
        r["served"]["rows_per_s"].as_f64().unwrap_or(0.0),
        r["served"]["served_equals_native_stack"],
        r["served"]["replayed_verdict_equals_served"],
        r["served"]["micro_vote"],
    );
    let p = &r["policy"];
    let _ = writeln!(
        s,
        "Policy `{}`: {} strategies of weight 1 (`micro_vote` deadline {} ms), n = {}, \
         min_confidence {}, reject_confidence {}, fail_open; stack `{}`.\n",
        p["policy_id"].as_str().unwrap_or(""),
        p["strategies"].as_object().map_or(0, |o| o.len()),
        MICROVOTE_DEADLINE_MS,
        p["n"],
        p["min_confidence"],
        p["reject_confidence"],
        p["stack"],
    );
    let _ = writeln!(
        s,
        "| task | n | AUROC ensemble (served) | reference HRS | length-only | LM ensemble | LM length-only | LM pairs | honest escalated | hallucinations contained | AUROC target |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|---|");
    let tasks = r["tasks"].as_object().cloned().unwrap_or_default();
    for (task, t) in &tasks {
        let target = TARGETS.iter().find(|(k, _)| k == task).map(|(_, v)| *v);
        let met = match (target, t["auroc_served"].as_f64()) {
            (Some(g), Some(a)) => format!("≥ {g:.2}: {}", crate::bench_doc::verdict(a >= g)),
            _ => "–".into(),
        };
        let _ = writeln!(
            s,
            "| {task} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {met} |",
            t["n"],
            f3(&t["auroc_served"]),
            f3(&t["auroc_reference_hrs"]),
            f3(&t["auroc_length_only"]),
            f3(&t["auroc_length_matched_served"]),
            f3(&t["auroc_length_matched_length_only"]),
            t["n_length_matched"],
            pct(&t["honest_escalation_rate"]),
            pct(&t["containment"]),
        );
    }
    let _ = writeln!(
        s,
        "\nAblation: each vote removed in turn. Decisions by exact replay of the served votes \
         with `kakeya_core::ensemble_policy::decide` under the policy without that strategy \
         (n unchanged); AUROC of a stack refitted on the calibration rows without it, scored \
         natively on the evaluation rows.\n"
    );
    let _ = writeln!(
        s,
        "| task | variant | AUROC | honest escalated | hallucinations contained |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|");
    for (task, t) in &tasks {
        for a in t["ablation"].as_array().into_iter().flatten() {
            let _ = writeln!(
                s,
                "| {task} | {} | {} | {} | {} |",
                a["variant"].as_str().unwrap_or(""),
                f3(&a["auroc"]),
                pct(&a["honest_escalation_rate"]),
                pct(&a["containment"]),
            );
        }
    }
    let _ = writeln!(s, "{END}");
    s
}

/// `doc` with the section replaced (appended when it has none).
pub fn splice(doc: &str, section: &str) -> String {
    replace_between(doc, BEGIN, END, section)
        .unwrap_or_else(|| format!("{}\n\n{}\n", doc.trim_end(), section.trim_end()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probs(h: Option<f64>, r: Option<f64>, m: Option<f64>) -> Probs {
        Probs {
            by: BTreeMap::from([
                (votes::HRS, h),
                (votes::RAG_GROUNDING, r),
                (votes::MICRO_VOTE, m),
            ]),
        }
    }

    #[test]
    fn the_native_stack_is_the_pipelines_formula() {
        use kakeya_core::pipeline::votes::Cast;
        use kakeya_core::vote::{Vote, VoteOutcome};
        let st = Stacking {
            bias: -0.3,
            coef: BTreeMap::from([("hrs".into(), 1.2), ("micro_vote".into(), 0.7)]),
            abstain: BTreeMap::from([("rag_grounding".into(), 0.4)]),
        };
        let casts = [
            Cast {
                vote: Vote::new("hrs", VoteOutcome::Accept, 0.8, "low_risk"),
                p: Some(0.2),
            },
            Cast {
                vote: Vote::abstain("rag_grounding", "no_context"),
                p: None,
            },
            Cast {
                vote: Vote::new("micro_vote", VoteOutcome::Reject, 0.9, "high_risk"),
                p: Some(0.9),
            },
        ];
        let want = kakeya_core::pipeline::aggregate::stack(&st, &casts);
        let got = stacked(&st, &probs(Some(0.2), None, Some(0.9)));
        assert!((want - got).abs() < 1e-12, "{want} {got}");
    }

    #[test]
    fn replay_never_accepts_a_failed_verification_and_drops_removed_strategies() {
        let pol = policy(Stacking::default());
        let e = json!({"votes": [
            {"strategy": "pcs_recompute", "outcome": "accept", "confidence": 1.0},
            {"strategy": "hrs", "outcome": "accept", "confidence": 0.9},
            {"strategy": "rag_grounding", "outcome": "accept", "confidence": 0.8},
            {"strategy": "micro_vote", "outcome": "reject", "confidence": 0.9}]});
        assert_eq!(replay(&pol, &e, true), Decision::Accept);
        assert_eq!(replay(&pol, &e, false), Decision::Escalate);
        let mut without_rag = pol.clone();
        without_rag.strategies.remove("rag_grounding");
        assert_eq!(replay(&without_rag, &e, true), Decision::Escalate);
    }

    #[test]
    fn rates_count_honest_escalations_and_contained_hallucinations() {
        let row = |label| Row {
            id: "qa-1-0".into(),
            task: "qa".into(),
            question: String::new(),
            context: String::new(),
            response: String::new(),
            label,
        };
        let rows = [row(0), row(0), row(1), row(1)];
        let refs: Vec<&Row> = rows.iter().collect();
        assert_eq!(rates(&refs, &[true, false, true, true]), (0.5, 1.0));
    }
}
