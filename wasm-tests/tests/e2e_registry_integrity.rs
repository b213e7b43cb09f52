//! Registry integrity through real Envoy: somebody with write access to the database alters a
//! registered model's artifact (the intercept, as in issue 6) and promotes it. Nothing is
//! published, the gate keeps serving the last good bundle with the same scores, and a restart
//! of the control plane changes nothing either.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kakeya_core::VerifyResult;
use kakeya_wasm_tests::fixtures::{grounded_evidence, signed_pcs_with_evidence, KEY};
use kakeya_wasm_tests::stack::{Stack, StackOptions};
use std::process::Command;
use std::time::{Duration, Instant};

/// The risk served for a fresh identity (shard `shard`) with the grounded evidence, retrying
/// transient 503s; `None` while the gate has no bundle yet.
fn score(stack: &Stack, shard: &str) -> Option<(f64, String)> {
    let body = signed_pcs_with_evidence(shard, KEY, &grounded_evidence(), None).to_string();
    let a = stack.submit(body.as_bytes()).unwrap();
    let r: VerifyResult = serde_json::from_str(&a.body).unwrap_or_else(|e| panic!("{e}: {a:?}"));
    r.risk.map(|k| (k.score, k.model_version))
}

fn bundle_version(stack: &Stack) -> u64 {
    let a = stack.admin_get("/v1/bundles/current").unwrap();
    assert_eq!(a.status, 200, "{a:?}");
    a.json()["version"].as_u64().expect("bundle version")
}

fn kakeya_ok(stack: &Stack, args: &[&str]) -> String {
    let out = stack.kakeya(args).unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn a_tampered_model_row_is_not_published_and_the_gate_keeps_its_scores() {
    let mut stack = Stack::start(StackOptions::scoring(200)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut n = 0;
    let (score0, v1) = loop {
        n += 1;
        if let Some(s) = score(&stack, &format!("warm-{n}")) {
            break s;
        }
        assert!(Instant::now() < deadline, "the gate never got a bundle");
    };
    let published = bundle_version(&stack);

    // A second, properly registered (and signed) model: the champion with another intercept.
    let detail = stack.admin_get(&format!("/v1/models/{v1}")).unwrap().json();
    let mut artifact = detail["artifact"].clone();
    artifact["intercept"] = (artifact["intercept"].as_f64().unwrap() - 3.0).into();
    let file = stack.data_path().join("m2.json");
    std::fs::write(&file, artifact.to_string()).unwrap();
    kakeya_ok(&stack, &["model", "register", file.to_str().unwrap()]);
    let v2 = kakeya_core::model::HrsModel::from_json(artifact.to_string().as_bytes())
        .unwrap()
        .version();

    // The attacker: rewrite that row's artifact in the database (the intercept again).
    let db = stack.data_path().join("kakeya.db");
    let tamper = "import json, sqlite3, sys\n\
                  db = sqlite3.connect(sys.argv[1], timeout=30)\n\
                  (text,) = db.execute('SELECT artifact FROM models WHERE version = ?', (sys.argv[2],)).fetchone()\n\
                  a = json.loads(text)\n\
                  a['intercept'] = a['intercept'] - 5.0\n\
                  db.execute('UPDATE models SET artifact = ? WHERE version = ?', (json.dumps(a), sys.argv[2]))\n\
                  db.commit()\n";
    let status = Command::new("python3")
        .args(["-c", tamper])
        .arg(&db)
        .arg(&v2)
        .status()
        .unwrap();
    assert!(status.success(), "could not alter the row");

    // Promoting it is refused (API and CLI), and nothing is published.
    let a = stack
        .admin_post(
            "/v1/aliases/champion",
            &serde_json::json!({ "version": v2 }),
        )
        .unwrap();
    assert_eq!(a.status, 409, "a tampered model was promoted: {a:?}");
    assert_eq!(a.json()["code"], "integrity_failure", "{a:?}");
    assert!(a.body.contains(&v2), "the error names the row: {a:?}");
    let out = stack.kakeya(&["model", "promote", &v2]).unwrap();
    assert!(!out.status.success(), "a tampered model was promoted");
    assert_eq!(bundle_version(&stack), published);
    let metrics = stack.admin_get("/metrics").unwrap().body;
    assert!(
        metrics.contains("kakeya_registry_integrity_failures_total{what=\"model\"}"),
        "{metrics}"
    );

    // The gate keeps the last good bundle: same model, same score.
    assert_eq!(score(&stack, "after-refusal"), Some((score0, v1.clone())));

    // A restart neither re-signs nor publishes the altered row.
    stack.kill_control_plane();
    stack.start_control_plane().unwrap();
    assert_eq!(bundle_version(&stack), published);
    assert_eq!(score(&stack, "after-restart"), Some((score0, v1)));
}
