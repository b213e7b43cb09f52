//! Drift monitoring through real Envoy and the real control plane, with auto-revert on:
//! HaluEval answers sent through the gateway are scored by the default model (trained at first
//! start on those answers, so its training reference describes them): a check raises no
//! feature alert; much longer answers raise feature_drift alerts; labels that contradict the
//! champion raise a performance_drift alert, and the auto-revert moves the champion back to
//! the previous one (the history says `auto_revert`), which the filters then serve.
//!
//! The steps are [`kakeya_wasm_tests::drift_steps`], for other end-to-end tests to reuse.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kakeya_wasm_tests::drift_steps::{
    alerts, alerts_of, check, check_cli, kakeya_json, label_against, lengthened, now_rfc3339,
    random_rows, sample_path, send_rows, wait_served, write_rows,
};
use kakeya_wasm_tests::fixtures::coverage_model;
use kakeya_wasm_tests::stack::{Stack, StackOptions};
use std::collections::BTreeSet;
use std::time::Duration;

const ROWS: usize = 300;
const TENANT: &str = "default";

#[test]
fn drift_is_detected_and_a_degraded_champion_is_reverted() {
    let mut opts = StackOptions::scoring(200);
    for (k, v) in [
        ("KAKEYA_DRIFT_AUTO_REVERT", "true"),
        ("KAKEYA_DRIFT_MIN_DECISIONS", "100"),
        ("KAKEYA_DRIFT_MIN_LABELS_PER_CLASS", "20"),
    ] {
        opts.env.push((k.into(), v.into()));
    }
    let stack = Stack::start(opts).unwrap();
    let default = stack.current_bundle().unwrap().champion.version();

    // A previous champion to go back to: the coverage model (uploaded), champion for a moment,
    // then the default model again.
    let file = stack.data_path().join("coverage.json");
    std::fs::write(&file, serde_json::to_vec(&coverage_model()).unwrap()).unwrap();
    let previous = coverage_model().version();
    for args in [
        vec!["model", "register", file.to_str().unwrap()],
        vec!["model", "promote", previous.as_str()],
        vec!["model", "promote", default.as_str()],
    ] {
        let out = stack.kakeya(&args).unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    wait_served(&stack, &default, Duration::from_secs(20)).unwrap();

    // 1. Traffic like the training data (a random sample of it): no feature alert.
    let rows = random_rows(&sample_path(), ROWS, 7).unwrap();
    let clean = write_rows(&rows, &stack.data_path().join("clean.jsonl")).unwrap();
    let clean_since = now_rfc3339();
    let clean_ms = kakeya_control_plane::now_ms();
    let sent = send_rows(&stack, &clean, TENANT, &default).unwrap();
    assert_eq!(sent["served"]["n"], ROWS as u64, "{}", sent["served"]);
    let r = check(&stack, &clean_since).unwrap();
    let m = &r["models"][0];
    assert_eq!(m["model_version"], default.as_str());
    assert_eq!(m["features"]["n_used"], ROWS as u64, "{m}");
    assert_eq!(m["features"]["status"], "ok", "{}", m["features"]);
    assert!(alerts_of(&r, "feature_drift").is_empty(), "{}", r["alerts"]);
    assert_eq!(m["performance"]["status"], "insufficient_data");
    let worst = m["features"]["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["psi"].as_f64().unwrap())
        .fold(0.0, f64::max);
    eprintln!("clean traffic: {ROWS} decisions, largest PSI {worst:.4}");

    // 2. Much longer answers: feature drift, seen by the CLI too.
    let shifted = write_rows(&lengthened(&rows), &stack.data_path().join("long.jsonl")).unwrap();
    let shift_since = now_rfc3339();
    send_rows(&stack, &shifted, TENANT, &default).unwrap();
    let r = check_cli(&stack, &shift_since).unwrap();
    assert_eq!(r["outcome"], "drift", "{}", r["models"][0]["features"]);
    let feature = alerts_of(&r, "feature_drift");
    let drifted: BTreeSet<&str> = feature
        .iter()
        .filter_map(|a| a["feature"].as_str())
        .collect();
    assert!(drifted.contains("resp_tokens_log"), "{drifted:?}");
    assert!(feature
        .iter()
        .any(|a| a["test"] == "ks" && a["p_value"].as_f64().unwrap() <= 0.05));
    assert!(feature
        .iter()
        .any(|a| a["test"] == "psi" && a["severity"] == "critical"));
    assert!(alerts_of(&r, "performance_drift").is_empty());
    eprintln!(
        "shifted traffic: {} feature alerts on {drifted:?}",
        feature.len()
    );
    // The alerts route lists them with the documented shape.
    let listed = alerts(&stack, "1h").unwrap();
    assert!(listed.len() >= feature.len());
    for a in &listed {
        for k in [
            "timestamp",
            "type",
            "statistic",
            "threshold",
            "severity",
            "model_version",
        ] {
            assert!(a.get(k).is_some(), "{k}: {a}");
        }
    }
    // Still the champion: feature drift alone never reverts.
    assert_eq!(stack.current_bundle().unwrap().champion.version(), default);

    // 3. Labels that contradict the champion: performance drift → auto-revert.
    let n = label_against(&stack, TENANT, &default, clean_ms).unwrap();
    assert!(n >= 2 * ROWS, "{n} labelled");
    let r = check(&stack, &clean_since).unwrap();
    let perf = alerts_of(&r, "performance_drift");
    assert_eq!(perf.len(), 1, "{}", r["models"][0]["performance"]);
    let alert = perf[0];
    assert_eq!(alert["severity"], "critical");
    assert_eq!(alert["action"], "reverted", "{alert}");
    let p = &r["models"][0]["performance"];
    eprintln!(
        "contradicting labels: rolling AUROC {} vs card {} ({})",
        p["auroc"]["auroc"], p["reference_auroc"], alert["action_detail"]
    );
    assert_eq!(stack.current_bundle().unwrap().champion.version(), previous);
    let history = kakeya_json(
        &stack,
        &["model", "history", "--alias", "champion", "--json"],
    )
    .unwrap();
    let last = &history["items"][0];
    assert_eq!(last["reason"], "auto_revert", "{history}");
    assert_eq!(last["actor"], "admin-api");
    assert_eq!(
        (
            last["previous_version"].as_str(),
            last["new_version"].as_str()
        ),
        (Some(default.as_str()), Some(previous.as_str()))
    );
    assert!(last["comment"]
        .as_str()
        .unwrap()
        .contains(&format!("alert {}", alert["id"])));
    // The filters serve the previous version.
    wait_served(&stack, &previous, Duration::from_secs(20)).unwrap();
    // Checking again reverts nothing more: the new champion has no reference and no labels.
    let r = check(&stack, &clean_since).unwrap();
    assert!(
        alerts_of(&r, "performance_drift").is_empty(),
        "{}",
        r["alerts"]
    );
    assert_eq!(r["models"][0]["features"]["status"], "no_reference");
    assert_eq!(stack.current_bundle().unwrap().champion.version(), previous);
}
