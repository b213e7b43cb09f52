//! `kakeya eval --grounding`: what the untrained `rag_grounding` rule
//! ([`kakeya_core::grounding`]) does on a labelled dataset.
//!
//! Nothing is fitted, so every row is scored as is (no folds): per task and overall, the AUROC
//! of its risk (1 − support) and of each measure behind it, the length-matched AUROC, the
//! response-length AUROC for comparison, its votes on honest and hallucinated rows (with the
//! share of rejects that are hallucinations and of accepts that are honest), and its native time
//! per call (the fastest of [`TIMED_CALLS`] per row). On a training split these figures describe the rule; they are not a held-out
//! estimate of anything fitted.

use super::bootstrap::quantile_sorted;
use super::dataset::Row;
use super::metrics::{auroc, length_matched_auroc};
use kakeya_core::grounding::{ground, Grounding, GroundingConfig, Sources};
use kakeya_core::vote::VoteOutcome;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::time::Instant;

/// The risk-like readings of one grounding, higher = less supported, in report order: (name in
/// the JSON report, column in the printed table).
pub const MEASURES: [(&str, &str); 8] = [
    ("support_min_sentence", "min_sent"),
    ("support_mean_sentence", "mean_sent"),
    ("containment_1", "contain1"),
    ("containment_2", "contain2"),
    ("containment_3", "contain3"),
    ("coverage", "coverage"),
    ("unsupported_critical", "unsup"),
    ("response_chars", "length"),
];

/// Calls per row; the fastest is its time (preemption on a shared machine otherwise dominates
/// the tail).
const TIMED_CALLS: usize = 3;

fn readings(g: &Grounding, chars: usize) -> [f64; MEASURES.len()] {
    let m = &g.measures;
    [
        1.0 - m.support,
        1.0 - m.mean_sentence_support,
        1.0 - m.containment[0],
        1.0 - m.containment[1],
        1.0 - m.containment[2],
        1.0 - m.coverage,
        m.unsupported.total() as f64,
        chars as f64,
    ]
}

/// One scored row.
struct Scored {
    readings: [f64; MEASURES.len()],
    outcome: VoteOutcome,
    reason: String,
    micros: f64,
}

fn num(v: Option<f64>) -> Value {
    v.filter(|x| x.is_finite())
        .map_or(Value::Null, |x| json!(x))
}

fn share(a: usize, b: usize) -> Value {
    if b == 0 {
        Value::Null
    } else {
        json!(a as f64 / b as f64)
    }
}

/// The figures of the rows `idx`.
fn figures(rows: &[Row], scored: &[Scored], idx: &[usize]) -> Value {
    let labels: Vec<u8> = idx.iter().map(|&i| rows[i].label).collect();
    let groups: Vec<&str> = idx.iter().map(|&i| rows[i].group()).collect();
    let chars: Vec<usize> = idx
        .iter()
        .map(|&i| rows[i].response.chars().count())
        .collect();
    let mut measures = Map::new();
    for (k, (name, _)) in MEASURES.iter().enumerate() {
        let s: Vec<f64> = idx.iter().map(|&i| scored[i].readings[k]).collect();
        measures.insert(name.to_string(), num(auroc(&s, &labels)));
    }
    let risk: Vec<f64> = idx.iter().map(|&i| scored[i].readings[0]).collect();
    let (lm, n_lm) = length_matched_auroc(&groups, &chars, &risk, &labels);
    // votes[label][outcome]
    let mut votes = [[0usize; 3]; 2];
    let mut reasons: BTreeMap<String, [usize; 2]> = BTreeMap::new();
    for &i in idx {
        let l = usize::from(rows[i].label == 1);
        let o = match scored[i].outcome {
            VoteOutcome::Accept => 0,
            VoteOutcome::Reject => 1,
            VoteOutcome::Abstain => 2,
        };
        votes[l][o] += 1;
        let key = format!("{}/{}", scored[i].outcome.as_str(), scored[i].reason);
        reasons.entry(key).or_default()[l] += 1;
    }
    let (honest, halluc) = (votes[0].iter().sum(), votes[1].iter().sum());
    let by_outcome = |v: &[usize; 3], n: usize| json!({"accept": share(v[0], n), "reject": share(v[1], n), "abstain": share(v[2], n)});
    let mut us: Vec<f64> = idx.iter().map(|&i| scored[i].micros).collect();
    us.sort_by(f64::total_cmp);
    json!({
        "n": idx.len(),
        "auroc": num(auroc(&risk, &labels)),
        "auroc_length_matched": num(lm),
        "n_length_matched": n_lm,
        "measures_auroc": measures,
        "votes": {
            "honest": by_outcome(&votes[0], honest),
            "hallucinated": by_outcome(&votes[1], halluc),
            "reject_precision": share(votes[1][1], votes[0][1] + votes[1][1]),
            "accept_precision": share(votes[0][0], votes[0][0] + votes[1][0]),
            "reasons": reasons
                .into_iter()
                .map(|(k, [h, b])| (k, json!({"honest": h, "hallucinated": b})))
                .collect::<Map<_, _>>(),
        },
        "micros_per_call": {
            "p50": num(quantile_sorted(&us, 0.5)),
            "p99": num(quantile_sorted(&us, 0.99)),
            "mean": num((!us.is_empty()).then(|| us.iter().sum::<f64>() / us.len() as f64)),
        },
    })
}

/// Grounds every row (default rule, no allowlist) and reports per task and under `"all"`.
pub fn report(rows: &[Row], mut progress: impl FnMut(usize)) -> Value {
    let (cfg, sources) = (GroundingConfig::default(), Sources::default());
    let mut scored = Vec::with_capacity(rows.len());
    for (i, r) in rows.iter().enumerate() {
        let ev = r.evidence();
        let g = ground(&ev, &cfg, &sources);
        let micros = (0..TIMED_CALLS)
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(ground(std::hint::black_box(&ev), &cfg, &sources));
                t.elapsed().as_secs_f64() * 1e6
            })
            .fold(f64::INFINITY, f64::min);
        scored.push(Scored {
            readings: readings(&g, r.response.chars().count()),
            outcome: g.vote.outcome,
            reason: g.vote.reason.into_owned(),
            micros,
        });
        if i % 1000 == 999 {
            progress(i + 1);
        }
    }
    progress(rows.len());
    let mut by_task: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, r) in rows.iter().enumerate() {
        by_task.entry(r.task.as_str()).or_default().push(i);
    }
    let mut tasks = Map::new();
    for (t, idx) in &by_task {
        tasks.insert(t.to_string(), figures(rows, &scored, idx));
    }
    let all: Vec<usize> = (0..rows.len()).collect();
    tasks.insert("all".into(), figures(rows, &scored, &all));
    json!({
        "strategy": kakeya_core::grounding::STRATEGY,
        "config": cfg,
        "risk": "1 - support (weakest judged sentence)",
        "tasks": tasks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, task: &str, context: &str, response: &str, label: u8) -> Row {
        Row {
            id: id.into(),
            task: task.into(),
            question: String::new(),
            context: context.into(),
            response: response.into(),
            label,
        }
    }

    #[test]
    fn separates_a_changed_fact_and_counts_votes() {
        let ctx = "Ada Lovelace wrote the first computer program in 1843, for Charles \
                   Babbage's Analytical Engine.";
        let rows = vec![
            row(
                "qa-1-0",
                "qa",
                ctx,
                "Ada Lovelace wrote the first computer program in 1843.",
                0,
            ),
            row(
                "qa-1-1",
                "qa",
                ctx,
                "Grace Hopper wrote it in 1952 on the UNIVAC at Harvard.",
                1,
            ),
            row("qa-2-0", "qa", "", "No context here.", 0),
            row("qa-2-1", "qa", ctx, "Ada Lovelace wrote it in 1851.", 1),
        ];
        let mut calls = 0;
        let r = report(&rows, |_| calls += 1);
        assert!(calls >= 1);
        let qa = &r["tasks"]["qa"];
        assert_eq!(qa["n"], 4);
        assert_eq!(qa["auroc"], 1.0, "{qa}");
        assert_eq!(qa["votes"]["hallucinated"]["reject"], 1.0, "{qa}");
        assert_eq!(qa["votes"]["honest"]["accept"], 0.5, "{qa}");
        assert_eq!(qa["votes"]["honest"]["abstain"], 0.5, "{qa}");
        assert_eq!(qa["votes"]["reject_precision"], 1.0);
        assert_eq!(qa["votes"]["reasons"]["abstain/no_context"]["honest"], 1);
        assert_eq!(qa["n_length_matched"], 1);
        assert!(qa["micros_per_call"]["p50"]
            .as_f64()
            .is_some_and(|x| x > 0.0));
        assert_eq!(r["tasks"]["all"]["n"], 4);
        assert_eq!(r["strategy"], "rag_grounding");
    }
}
