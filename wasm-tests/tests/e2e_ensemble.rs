//! The ensemble through real Envoy and the real control plane: the README's counter-example
//! ("Grace Hopper wrote it in 1952 on the UNIVAC at Harvard" against a context naming Ada
//! Lovelace and 1843) is accepted (200) without a policy and not accepted once the tenant's
//! policy enables `rag_grounding`; a rejecting policy answers 422 `hallucination_rejected`;
//! votes land in the decision log and disagreements in their audit table; with `micro_vote`
//! enabled and nothing listening on the micro-vote cluster, every request is still answered
//! (202 under fail-open) and the failure is counted.
//!
//! The bundles come from a [`BundleServer`] signed with the stack's own key (the control plane
//! does not publish ensemble policies itself yet).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kakeya_core::bundle::Bundle;
use kakeya_core::ensemble_policy::{
    EnsemblePolicy, EnsembleSection, Stack as Stacking, StrategyConfig,
};
use kakeya_wasm_tests::ensemble::{sign_with_stack_key, BundleServer, MICROVOTE_CLUSTER};
use kakeya_wasm_tests::fixtures::{signed_pcs_with_evidence, KEY};
use kakeya_wasm_tests::scored::lovelace as evidence;
use kakeya_wasm_tests::stack::{free_addr, Stack, StackOptions};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const HOPPER: &str = "Grace Hopper wrote it in 1952 on the UNIVAC at Harvard.";

fn policy(id: &str, n: u32, names: &[&str], reject_confidence: f64) -> EnsemblePolicy {
    EnsemblePolicy {
        policy_id: id.into(),
        n,
        strategies: names
            .iter()
            .map(|s| {
                (
                    s.to_string(),
                    StrategyConfig {
                        weight: 1.0,
                        accept_below: None,
                        reject_above: None,
                        deadline_ms: None,
                    },
                )
            })
            .collect(),
        min_confidence: 0.5,
        reject_confidence,
        fail_open: true,
        stack: Stacking::default(),
        sources: None,
    }
}

/// Serves the control plane's bundle with `ensemble` as version `version` and waits until the
/// gate scores with it (fresh shards: dedup would answer a resubmission with its first answer).
fn serve(
    stack: &Stack,
    server: &BundleServer,
    base: &Bundle,
    version: u64,
    ensemble: EnsembleSection,
) {
    let mut b = base.clone();
    b.version = version;
    b.ensemble = ensemble;
    server.set(sign_with_stack_key(stack, &b).unwrap());
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut i = 0;
    loop {
        i += 1;
        let body = signed_pcs_with_evidence(
            &format!("probe-{version}-{i}"),
            KEY,
            &evidence("Ada Lovelace."),
            None,
        );
        let a = stack.submit(body.to_string().as_bytes()).unwrap();
        if a.json()["risk"]["bundle_version"] == version {
            return;
        }
        // Each probe is a round trip through Envoy: the loop paces itself.
        assert!(
            Instant::now() < deadline,
            "bundle {version} never served: {}",
            a.body
        );
    }
}

fn submit(stack: &Stack, shard: &str, response: &str) -> kakeya_wasm_tests::stack::Answer {
    let body = signed_pcs_with_evidence(shard, KEY, &evidence(response), None);
    stack.submit(body.to_string().as_bytes()).unwrap()
}

fn start(extra_clusters: Vec<(String, std::net::SocketAddr)>) -> (Stack, BundleServer, Bundle) {
    let server = BundleServer::start().unwrap();
    let mut opts = StackOptions::scoring(200);
    opts.admin_override = Some(server.addr);
    opts.extra_clusters = extra_clusters;
    let stack = Stack::start(opts).unwrap();
    let base = stack.current_bundle().unwrap();
    (stack, server, base)
}

#[test]
fn the_readme_counter_example_is_not_accepted_with_rag_grounding() {
    let (stack, server, base) = start(Vec::new());
    // No policy: decided as before the ensemble (the default model lets it through).
    serve(&stack, &server, &base, 1001, EnsembleSection::default());
    let a = submit(&stack, "hopper-plain", HOPPER);
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(a.json().get("ensemble").is_none());

    // Unanimity over verification, HRS and grounding: the grounding vote's reject leaves it
    // undecided, escalated for review under fail_open.
    let unanimous = policy(
        "unanimous-3",
        3,
        &["pcs_recompute", "hrs", "rag_grounding"],
        0.8,
    );
    serve(
        &stack,
        &server,
        &base,
        1002,
        EnsembleSection {
            default: Some(unanimous),
            tenants: BTreeMap::new(),
        },
    );
    let a = submit(&stack, "hopper-policy", HOPPER);
    assert_eq!(a.status, 202, "{}", a.body);
    let r = a.json();
    assert_eq!(r["ensemble"]["verdict"], "escalate", "{r}");
    let votes = r["ensemble"]["votes"].as_array().unwrap();
    let rag = votes
        .iter()
        .find(|v| v["strategy"] == "rag_grounding")
        .unwrap();
    assert_eq!(rag["outcome"], "reject", "{r}");
    assert_eq!(rag["reason"], "unsupported_date");

    // The decision log keeps the votes; the split is an audit event.
    let rows = stack.decisions(None).unwrap();
    let row = rows
        .iter()
        .find(|d| d["status"] == 202 && d["votes"]["policy_id"] == "unanimous-3")
        .expect("the decision with its votes");
    assert_eq!(row["votes"]["verdict"], "escalate");
    let d = stack
        .admin_get("/v1/ensemble/disagreements?limit=10")
        .unwrap();
    assert_eq!(d.status, 200, "{}", d.body);
    let events = d.json()["disagreements"].as_array().unwrap().clone();
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "split" && e["policy_id"] == "unanimous-3"),
        "{events:?}"
    );
    let bad = stack
        .admin_get("/v1/ensemble/disagreements?limit=0")
        .unwrap();
    assert_eq!(
        (bad.status, bad.json()["code"].as_str()),
        (400, Some("bad_request")),
        "{}",
        bad.body
    );

    // A policy that trusts the grounding vote alone rejects: 422 with the reason and votes.
    let strict = policy("rag-only", 1, &["rag_grounding"], 0.8);
    serve(
        &stack,
        &server,
        &base,
        1003,
        EnsembleSection {
            default: Some(strict),
            tenants: BTreeMap::new(),
        },
    );
    let a = submit(&stack, "hopper-strict", HOPPER);
    assert_eq!(a.status, 422, "{}", a.body);
    let r = a.json();
    assert_eq!(r["code"], "hallucination_rejected", "{r}");
    assert!(r["reason"].as_str().unwrap().contains("rejected"), "{r}");
    assert_eq!(r["ensemble"]["votes"][0]["outcome"], "reject");
    // The supported answer passes the same policy.
    let a = submit(
        &stack,
        "lovelace-strict",
        "Ada Lovelace wrote the first computer program, for the Analytical Engine.",
    );
    assert_eq!(a.status, 200, "{}", a.body);
}

#[test]
fn with_the_micro_vote_down_every_request_is_answered_and_escalated() {
    // A port nothing listens on: connections are refused.
    let closed = free_addr().unwrap();
    let (stack, server, base) = start(vec![(MICROVOTE_CLUSTER.to_string(), closed)]);
    let mut p = policy("mv-2of2", 2, &["hrs", "micro_vote"], 0.8);
    if let Some(s) = p.strategies.get_mut("micro_vote") {
        s.deadline_ms = Some(30);
    }
    serve(
        &stack,
        &server,
        &base,
        2001,
        EnsembleSection {
            default: Some(p),
            tenants: BTreeMap::new(),
        },
    );
    for i in 0..10 {
        let a = submit(
            &stack,
            &format!("mv-{i}"),
            "Ada Lovelace wrote the first computer program, for the Analytical Engine.",
        );
        assert_eq!(a.status, 202, "{}", a.body);
        let r = a.json();
        let mv = r["ensemble"]["votes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["strategy"] == "micro_vote")
            .unwrap()
            .clone();
        assert_eq!(mv["outcome"], "abstain", "{r}");
        assert!(
            ["bad_status", "timeout", "no_response"].contains(&mv["reason"].as_str().unwrap()),
            "{r}"
        );
    }
    // Counted, and nothing trapped (the gate still answers; Envoy logged no wasm failure).
    let stats = ureq::get(&stack.envoy_admin_url("/stats?filter=kakeya_gate.microvote"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    // Envoy prefixes a wasm filter's own stats with `wasmcustom.`.
    let count = |name: &str| -> u64 {
        stats
            .lines()
            .find_map(|l| l.strip_prefix(&format!("wasmcustom.{name}: ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    assert!(count("kakeya_gate.microvote_calls_total") >= 10, "{stats}");
    assert!(
        count("kakeya_gate.microvote_errors_total") + count("kakeya_gate.microvote_timeouts_total")
            >= 10,
        "{stats}"
    );
    let log = stack.envoy_log();
    assert!(
        !log.contains("panicked") && !log.contains("unreachable"),
        "{log}"
    );
}
