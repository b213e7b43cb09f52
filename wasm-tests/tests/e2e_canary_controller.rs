//! The canary controller through real Envoy and the real control plane, on a compressed clock
//! (steps of 3 s, the controller ticking every second under its lease): a deliberately bad
//! model (the champion with its risk inverted: it lets the unsupported answers through and
//! escalates the grounded ones), with the owners' labels arriving as the answers do, is rolled
//! back automatically before the 25 % step, and the gate scores everyone with the champion
//! again; a good model (the champion's twin under another version) walks every step, with a
//! restart of the control plane in the middle, and is promoted, the events in order.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kakeya_core::bundle::canary_bucket;
use kakeya_core::model::Model;
use kakeya_core::VerifyResult;
use kakeya_wasm_tests::fixtures::{
    grounded_evidence, signed_pcs_with_evidence, unsupported_evidence, KEY,
};
use kakeya_wasm_tests::scored::kakeya_ok;
use kakeya_wasm_tests::stack::{post, Stack, StackOptions};
use serde_json::json;
use std::time::{Duration, Instant};

const POLL_MS: u64 = 300;
const TENANTS: usize = 200;

fn stack() -> Stack {
    let tenants: Vec<String> = (0..TENANTS).map(|i| format!("t{i:03}")).collect();
    let keyring: Vec<String> = tenants.iter().map(|t| format!("{t}:hmac:{KEY}")).collect();
    let mut opts = StackOptions::scoring(POLL_MS);
    for (k, v) in [
        ("MULTI_TENANT", "true".to_string()),
        ("TENANTS", keyring.join(",")),
        ("KAKEYA_LEASE_TICK_MS", "200".into()),
        ("KAKEYA_CANARY_TICK_EVERY", "1s".into()),
        ("KAKEYA_CANARY_WEIGHTS", "0.05,0.1,0.25,0.5,1".into()),
        ("KAKEYA_CANARY_DURATIONS", "3s,3s,3s,3s,3s".into()),
        ("KAKEYA_CANARY_MIN_REQUESTS", "5".into()),
        ("KAKEYA_CANARY_MAX_HOLD", "20s".into()),
    ] {
        opts.env.push((k.into(), v));
    }
    Stack::start(opts).unwrap()
}

/// Registers `m` with `kakeya model register`; its version.
fn register(stack: &Stack, m: &Model, name: &str) -> String {
    let file = stack.data_path().join(name);
    std::fs::write(&file, serde_json::to_vec(m).unwrap()).unwrap();
    kakeya_ok(stack, &["model", "register", file.to_str().unwrap()]).unwrap();
    m.version()
}

/// One answer: its arm and model, and whether it was escalated.
#[derive(Debug)]
struct Answer {
    arm: String,
    model_version: String,
}

/// Submits a grounded (faithful) or unsupported (hallucinated) answer for `tenant` and labels
/// it as its owner would; what the client got.
fn submit_and_label(stack: &Stack, tenant: &str, shard: &str, hallucinated: bool) -> Answer {
    let ev = if hallucinated {
        unsupported_evidence()
    } else {
        grounded_evidence()
    };
    let pcs = signed_pcs_with_evidence(shard, KEY, &ev, None);
    let pcs_id = pcs["pcs_id"].as_str().unwrap().to_string();
    let body = pcs.to_string();
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(20))
        .build();
    let headers = [
        ("content-type", "application/json"),
        ("x-tenant-id", tenant),
    ];
    let a = (0..50)
        .map(|_| {
            post(
                &agent,
                &stack.url("/v1/pcs/submit"),
                &headers,
                body.as_bytes(),
            )
            .unwrap()
        })
        .find(|a| a.status != 503)
        .expect("the gateway kept answering 503");
    assert!(a.status == 200 || a.status == 202, "{tenant}: {a:?}");
    let r: VerifyResult = serde_json::from_str(&a.body).unwrap();
    let risk = r.risk.expect("scored");
    let label = if hallucinated {
        "hallucinated"
    } else {
        "faithful"
    };
    let l = stack
        .admin_post(
            "/v1/feedback",
            &json!({"tenant_id": tenant, "pcs_id": pcs_id, "label": label}),
        )
        .unwrap();
    assert!(l.status == 201 || l.status == 200, "{l:?}");
    Answer {
        arm: risk.arm,
        model_version: risk.model_version,
    }
}

fn status(stack: &Stack, id: &str) -> serde_json::Value {
    let a = stack
        .admin_get(&format!("/v1/operator/canary/status?deployment_id={id}"))
        .unwrap();
    assert_eq!(a.status, 200, "{a:?}");
    a.json()
}

fn events(stack: &Stack, id: &str) -> Vec<serde_json::Value> {
    let a = stack
        .admin_get(&format!("/v1/operator/canary/{id}/events"))
        .unwrap();
    assert_eq!(a.status, 200, "{a:?}");
    a.json().as_array().unwrap().clone()
}

fn start(stack: &Stack, name: &str, control: &str, canary: &str) -> String {
    let a = stack
        .admin_post(
            "/v1/operator/canary/start",
            &json!({
                "name": name, "control_version": control, "canary_version": canary,
                "gates": {"skip": ["cost"],
                          "error_budget": {"escalation_rate_threshold": 0.9, "burn_rate_threshold": 0.2},
                          "containment": {"min_containment_rate": 0.95,
                          "max_escaped_per_hour": 1e9, "min_labelled": 5}},
            }),
        )
        .unwrap();
    assert_eq!(a.status, 201, "{a:?}");
    a.json()["deployment_id"].as_str().unwrap().to_string()
}

/// Traffic, each answer labelled, until `done(status)` or the deadline: every other answer
/// from a tenant on the canary from its first step (its salted hash below 5 %), the others
/// round-robin over every tenant, half of each grounded and half unsupported.
fn drive(
    stack: &Stack,
    id: &str,
    canary: &str,
    tag: &str,
    deadline: Duration,
    mut done: impl FnMut(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let all: Vec<String> = (0..TENANTS).map(|i| format!("t{i:03}")).collect();
    let hot: Vec<&String> = all
        .iter()
        .filter(|t| canary_bucket(canary, &[t]) < 0.05)
        .collect();
    assert!(!hot.is_empty(), "no tenant on the canary at 5 %");
    let t0 = Instant::now();
    for n in 0usize.. {
        if n % 8 == 0 {
            let s = status(stack, id);
            if done(&s) {
                return s;
            }
            assert!(
                t0.elapsed() < deadline,
                "{id} stuck: {s:#}\nevents: {:#?}",
                events(stack, id)
            );
        }
        let tenant = if n % 2 == 0 {
            hot[(n / 2) % hot.len()]
        } else {
            &all[n % TENANTS]
        };
        submit_and_label(stack, tenant, &format!("{tag}-{n}"), (n / 2) % 2 == 0);
    }
    unreachable!()
}

#[test]
fn a_bad_canary_rolls_back_before_25_percent_and_a_good_one_is_promoted() {
    let mut stack = stack();
    let champion = stack.current_bundle().unwrap().champion;
    let control = champion.version();

    // The bad model: the champion with its decision value negated (risk inverted).
    let mut bad = champion.clone();
    match &mut bad {
        Model::Logistic(h) => {
            h.intercept = -h.intercept;
            h.weights.iter_mut().for_each(|w| *w = -*w);
        }
        Model::Trees(_) => panic!("the default champion is logistic"),
    }
    let bad = register(&stack, &bad, "bad.json");
    let id = start(&stack, "bad", &control, &bad);
    let s = drive(&stack, &id, &bad, "bad", Duration::from_secs(120), |s| {
        s["status"] != "pending" && s["status"] != "running"
    });
    assert_eq!(s["status"], "rolled_back", "{s:#}");
    assert!(
        s["current_step"].as_u64().unwrap() < 2,
        "rolled back before the 25 % step: {s:#}"
    );
    let ev = events(&stack, &id);
    let last = ev.last().unwrap();
    assert_eq!(last["kind"], "rolled_back");
    assert_eq!(last["weight"], 0.0);
    eprintln!("bad canary: {}", last["reason"]);
    // Weight 0 everywhere: the bundle has no canary, and within a poll every tenant the canary
    // had is scored by the champion again.
    let b = stack.current_bundle().unwrap();
    assert!(b.canary.is_none());
    assert_eq!(b.champion.version(), control);
    let on_canary: Vec<String> = (0..TENANTS)
        .map(|i| format!("t{i:03}"))
        .filter(|t| canary_bucket(&bad, &[t]) < 0.1)
        .collect();
    let t0 = Instant::now();
    'wait: loop {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the gate kept scoring the canary"
        );
        for (k, t) in on_canary
            .iter()
            .chain(["t000".to_string()].iter())
            .enumerate()
        {
            let a = submit_and_label(
                &stack,
                t,
                &format!("after-{k}-{}", t0.elapsed().as_millis()),
                false,
            );
            if a.arm != "champion" || a.model_version != control {
                continue 'wait;
            }
        }
        break;
    }

    // The good model: the champion's twin (another training seed in its provenance, so another
    // version), scoring exactly as the champion does.
    let mut good = champion.clone();
    good.training_mut().seed += 1;
    let good = register(&stack, &good, "good.json");
    let id = start(&stack, "good", &control, &good);
    drive(&stack, &id, &good, "good1", Duration::from_secs(60), |s| {
        s["current_step"].as_u64() >= Some(2)
    });
    // A restart of the control plane mid-step: the next leader resumes the step it was in.
    let before = status(&stack, &id);
    stack.kill_control_plane();
    stack.start_control_plane().unwrap();
    let after = status(&stack, &id);
    assert_eq!(after["current_step"], before["current_step"], "{after:#}");
    assert_eq!(after["step_started_at_ms"], before["step_started_at_ms"]);
    let s = drive(&stack, &id, &good, "good2", Duration::from_secs(120), |s| {
        s["status"] != "running"
    });
    assert_eq!(s["status"], "promoted", "{s:#}");
    let kinds: Vec<String> = events(&stack, &id)
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect();
    // A step due while the control plane was down may be held once, until its window has the
    // requests it needs; otherwise the transitions are the schedule's.
    let moves: Vec<&String> = kinds.iter().filter(|k| *k != "held").collect();
    assert_eq!(
        moves,
        ["started", "step", "step", "step", "step", "promoted"],
        "events in order: {kinds:?}"
    );
    assert!(
        kinds.iter().filter(|k| *k == "held").count() <= 1,
        "{kinds:?}"
    );
    let b = stack.current_bundle().unwrap();
    assert_eq!(b.champion.version(), good, "promoted to champion");
    assert!(b.canary.is_none());
}
