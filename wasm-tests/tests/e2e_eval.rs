//! `kakeya eval --through`: the HaluEval sample sent row by row through real Envoy, signed
//! PCS v0.2 with evidence, scored by the gate with the champion of the published bundle; the
//! report's figures come from the served risks, and every served risk equals the native score.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kakeya_core::VerifyResult;
use kakeya_wasm_tests::fixtures::{grounded_evidence, signed_pcs_with_evidence, KEY};
use kakeya_wasm_tests::stack::{post, Stack, StackOptions};
use std::time::{Duration, Instant};

const ROWS: usize = 120;

fn env() -> Vec<(String, String)> {
    vec![
        ("PCS_SIGN_ALG".into(), "hmac".into()),
        ("PCS_HMAC_KEY".into(), KEY.into()),
        ("TOKEN_RATE".into(), "100000".into()),
        ("KAKEYA_BUNDLE_POLL_MS".into(), "200".into()),
    ]
}

/// Submits evidence-bearing PCS until the gate answers with a risk (it has loaded a bundle).
fn wait_until_scoring(stack: &Stack, within: Duration) {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(20))
        .build();
    let deadline = Instant::now() + within;
    for i in 0.. {
        let body = signed_pcs_with_evidence(&format!("warm-{i}"), KEY, &grounded_evidence(), None)
            .to_string();
        let a = post(
            &agent,
            &stack.url("/v1/pcs/submit"),
            &[("content-type", "application/json")],
            body.as_bytes(),
        )
        .unwrap();
        // A transient 503 on a loaded machine is retried like any other unscored answer.
        let scored = a.status != 503
            && serde_json::from_str::<VerifyResult>(&a.body)
                .unwrap_or_else(|e| panic!("{e}: {a:?}"))
                .risk
                .is_some();
        if scored {
            return;
        }
        assert!(Instant::now() < deadline, "the gate never scored: {a:?}");
    }
}

#[test]
fn eval_through_the_gateway_reports_served_scores_equal_to_native() {
    let stack = Stack::start(StackOptions {
        env: env(),
        ..Default::default()
    })
    .unwrap();
    wait_until_scoring(&stack, Duration::from_secs(15));

    let sample = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../control-plane/data/halueval-sample.jsonl.gz"
    );
    let report = stack.data_path().join("r.json");
    let gateway = stack.url("");
    let limit = ROWS.to_string();
    let t0 = Instant::now();
    let out = stack
        .kakeya(&[
            "eval",
            "--dataset",
            sample,
            "--model",
            "champion",
            "--through",
            gateway.as_str(),
            "--key",
            KEY,
            "--limit",
            limit.as_str(),
            "--report",
            report.to_str().unwrap(),
        ])
        .unwrap();
    let took = t0.elapsed();
    assert!(
        out.status.success(),
        "kakeya eval --through failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    eprintln!("{}", String::from_utf8_lossy(&out.stdout));
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let tasks = r["tasks"].as_object().unwrap();
    assert!(tasks.contains_key("all"), "{r}");
    // The sample covers the three HaluEval tasks (plus "all").
    assert_eq!(tasks.len(), 4, "per-task figures expected: {r}");
    for (task, m) in tasks {
        assert!(m["n"].as_u64().unwrap() > 0, "{task}: {m}");
        assert!(m.get("auroc").is_some(), "{task}: {m}");
    }
    assert_eq!(r["tasks"]["all"]["n"], ROWS as u64);
    assert_eq!(r["served"]["n"], ROWS as u64);
    assert_eq!(
        r["served_equals_native"].as_f64(),
        Some(1.0),
        "served vs native: {}",
        r["served"]
    );
    assert_eq!(r["served"]["max_abs_diff"].as_f64(), Some(0.0));
    eprintln!(
        "eval through Envoy: {ROWS} rows in {took:?} (HTTP phase {:.1} rows/s); AUROC served {} native {}",
        r["served"]["rows_per_s"].as_f64().unwrap_or(0.0),
        r["tasks"]["all"]["auroc"],
        r["served"]["native"]["all"]["auroc"]
    );
}
