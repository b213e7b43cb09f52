//! Train → register → bundle → filter → answer, through real Envoy and the real control plane:
//! the default model trained at first start is served in a signed bundle, the gate scores
//! evidence-bearing submissions with it exactly as the native code does, and promoting another
//! model changes `model_version` within a poll interval without dropping a request; a
//! gradient-boosted version trained by a training job on decisions logged through the gate is
//! served the same way once activated.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kakeya_control_plane::learn::rfc3339;
use kakeya_control_plane::ml::dataset::{parse as parse_rows, sample_by_task};
use kakeya_control_plane::registry::bootstrap::SAMPLE;
use kakeya_core::bundle::Scorer;
use kakeya_core::model::Model;
use kakeya_core::{parse, verify, VerifyParams, VerifyResult};
use kakeya_wasm_tests::fixtures::{
    grounded_evidence, signed_pcs_with_evidence, unsupported_evidence, KEY,
};
use kakeya_wasm_tests::stack::{post, Stack, StackOptions};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const POLL_MS: u64 = 200;

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(20))
        .build()
}

/// Submits an evidence-bearing PCS and returns (status, VerifyResult).
fn submit(
    stack: &Stack,
    shard: &str,
    evidence: &kakeya_core::evidence::Evidence,
) -> (u16, VerifyResult) {
    let body = signed_pcs_with_evidence(shard, KEY, evidence, None).to_string();
    let a = stack.submit(body.as_bytes()).unwrap();
    let result: VerifyResult =
        serde_json::from_str(&a.body).unwrap_or_else(|e| panic!("{e}: {a:?}"));
    (a.status, result)
}

/// Submits `ev` under `shard` and checks the answer against the native scorer of the same
/// bundle: the same risk bit for bit, 202 exactly when it escalates. The answer.
fn served_as_native(
    stack: &Stack,
    scorer: &Scorer,
    shard: &str,
    ev: &kakeya_core::evidence::Evidence,
) -> VerifyResult {
    let body = signed_pcs_with_evidence(shard, KEY, ev, None).to_string();
    let pcs = parse(body.as_bytes()).unwrap();
    let outcome = verify(&pcs, &VerifyParams::default());
    let native = scorer.assess("default", &pcs, &outcome, Some(ev)).unwrap();
    let (status, served) = submit(stack, shard, ev);
    let risk = served.risk.clone().unwrap();
    assert_eq!(
        risk.score.to_bits(),
        native.risk.to_bits(),
        "{shard}: served {} native {}",
        risk.score,
        native.risk
    );
    assert_eq!(status, if native.escalate { 202 } else { 200 }, "{shard}");
    served
}

/// Submits until the answer carries a risk from `model_version` (bounded by `within`).
fn wait_for_model(
    stack: &Stack,
    model_version: &str,
    within: Duration,
    tag: &str,
) -> (u16, VerifyResult) {
    let deadline = Instant::now() + within;
    for i in 0.. {
        let (status, r) = submit(stack, &format!("{tag}-{i}"), &grounded_evidence());
        if r.risk
            .as_ref()
            .is_some_and(|k| k.model_version == model_version)
        {
            return (status, r);
        }
        assert!(
            Instant::now() < deadline,
            "no answer scored by {model_version} within {within:?}: {r:?}"
        );
    }
    unreachable!()
}

#[test]
fn default_model_scores_inline_and_promotion_switches_models_without_dropping_requests() {
    let stack = Stack::start(StackOptions::scoring(POLL_MS)).unwrap();

    // First start trained, registered and published the default model.
    let bundle = stack.current_bundle().unwrap();
    let v1 = bundle.champion.version();
    let (_, scored) = wait_for_model(&stack, &v1, Duration::from_secs(15), "warm");
    let risk = scored.risk.clone().unwrap();
    assert_eq!(risk.arm, "champion");
    assert_eq!(risk.bundle_version, bundle.version);

    // Serving equals training: the risk in the answer is the native computation, bit for bit.
    let scorer = Scorer::new(bundle.clone());
    for (tag, ev) in [
        ("same-grounded", grounded_evidence()),
        ("same-unsupported", unsupported_evidence()),
    ] {
        served_as_native(&stack, &scorer, tag, &ev);
    }

    // The CLI builds such a PCS from plain files: `kakeya pcs build --question --context`.
    let dir = stack.data_path().to_path_buf();
    let ev = unsupported_evidence();
    for (name, text) in [
        ("q.txt", &ev.question),
        ("c.txt", &ev.context),
        ("r.txt", &ev.response),
    ] {
        std::fs::write(dir.join(name), text).unwrap();
    }
    let path = |n: &str| dir.join(n).to_string_lossy().into_owned();
    let out = stack
        .kakeya(&[
            "pcs",
            "build",
            "--text",
            &path("r.txt"),
            "--question",
            &path("q.txt"),
            "--context",
            &path("c.txt"),
            "--key",
            KEY,
            "--shard-id",
            "cli",
        ])
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let a = post(&agent(), &stack.url("/v1/pcs/submit"), &[], &out.stdout).unwrap();
    let r: VerifyResult = serde_json::from_str(&a.body).unwrap_or_else(|e| panic!("{e}: {a:?}"));
    assert_eq!(
        r.risk
            .expect("a CLI-built v0.2 PCS is scored")
            .model_version,
        v1
    );

    // A second model, trained on the repository's sample with another seed, registered and
    // promoted while traffic flows.
    let sample = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../control-plane/data/halueval-sample.jsonl.gz"
    );
    let m2 = dir.join("m2.json");
    let out = stack
        .kakeya(&[
            "train",
            "--dataset",
            sample,
            "--seed",
            "2",
            "--l2",
            "3",
            "--out",
            m2.to_str().unwrap(),
        ])
        .unwrap();
    assert!(
        out.status.success(),
        "train: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v2 = kakeya_core::model::HrsModel::from_json(&std::fs::read(&m2).unwrap())
        .unwrap()
        .version();
    assert_ne!(v1, v2, "the second model must differ");

    let stop = AtomicBool::new(false);
    let sent = AtomicUsize::new(0);
    let failures = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                let body =
                    signed_pcs_with_evidence(&format!("flow-{i}"), KEY, &grounded_evidence(), None)
                        .to_string();
                let a = post(&agent(), &stack.url("/v1/pcs/submit"), &[], body.as_bytes()).unwrap();
                if a.status != 200 && a.status != 202 {
                    failures.lock().unwrap().push(a);
                }
                sent.fetch_add(1, Ordering::SeqCst);
                i += 1;
            }
        });
        for args in [
            vec!["model", "register", m2.to_str().unwrap()],
            vec!["model", "promote", v2.as_str()],
        ] {
            let out = stack.kakeya(&args).unwrap();
            assert!(
                out.status.success(),
                "{args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let promoted = Instant::now();
        let (_, r) = wait_for_model(
            &stack,
            &v2,
            Duration::from_millis(POLL_MS * 10 + 2000),
            "switch",
        );
        let took = promoted.elapsed();
        assert!(r.risk.unwrap().bundle_version > bundle.version);
        eprintln!("model switch visible after {took:?} (poll interval {POLL_MS} ms)");
        // The bound is wait_for_model's deadline; the measured time is logged for the report.
        stop.store(true, Ordering::SeqCst);
    });
    assert!(sent.load(Ordering::SeqCst) > 0);
    assert!(
        failures.lock().unwrap().is_empty(),
        "dropped requests during the switch: {:?}",
        failures.lock().unwrap()
    );

    // The decision log records the model, arm and bundle of each scored decision.
    let rows = serde_json::to_string(&stack.decisions(Some("default")).unwrap()).unwrap();
    assert!(
        rows.contains(&v1) && rows.contains(&v2),
        "decision log must name both models"
    );
}

/// Labelled answers the training job of
/// [`a_gbdt_training_job_is_served_by_the_gate_after_activation`] learns from (whole HaluEval
/// items, round-robin over the tasks).
const ROWS: usize = 240;

/// The pcs_id of what [`submit`] sends for `shard` and `ev`.
fn pcs_id_of(shard: &str, ev: &kakeya_core::evidence::Evidence) -> String {
    let body = signed_pcs_with_evidence(shard, KEY, ev, None).to_string();
    parse(body.as_bytes()).unwrap().pcs_id
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn ok(a: &kakeya_wasm_tests::stack::Answer, status: u16, what: &str) -> Value {
    assert_eq!(a.status, status, "{what}: {}", a.body);
    a.json()
}

/// A gradient-boosted training job served through real Envoy: HaluEval answers with their
/// evidence go through the gate (which logs the features it scored them with), each gets its
/// HaluEval label through the review API, `POST /v1/hrs/train {model_kind: "gbdt"}` fits trees
/// on them and registers a `gbdt-…` version, `POST /v1/hrs/activate` makes it the champion, and
/// the gate then serves its risks, bit for bit those of the native scorer of the same bundle.
#[test]
fn a_gbdt_training_job_is_served_by_the_gate_after_activation() {
    let stack = Stack::start(StackOptions::scoring(POLL_MS)).unwrap();
    let v1 = stack.current_bundle().unwrap().champion.version();
    wait_for_model(&stack, &v1, Duration::from_secs(15), "warm");

    // Real answers with their evidence through the gate, then their labels by a reviewer.
    let start = now_ms();
    let rows = sample_by_task(&parse_rows(SAMPLE).unwrap(), ROWS);
    let mut labelled = Vec::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        let (shard, ev) = (format!("gb-{i}"), row.evidence());
        let (status, r) = submit(&stack, &shard, &ev);
        assert!(status == 200 || status == 202, "{status}: {r:?}");
        assert_eq!(r.risk.map(|k| k.model_version), Some(v1.clone()));
        labelled.push((pcs_id_of(&shard, &ev), row.label));
    }
    let end = now_ms() + 60_000;
    for (pcs_id, label) in &labelled {
        let label = if *label == 1 {
            "hallucinated"
        } else {
            "faithful"
        };
        let a = stack
            .admin_post(
                &format!("/v1/reviews/default/{pcs_id}"),
                &json!({"label": label, "reviewer": "e2e"}),
            )
            .unwrap();
        ok(&a, 201, pcs_id);
    }

    // The job: trees on the features the gate logged.
    let a = stack
        .admin_post(
            "/v1/hrs/train",
            &json!({"start_time": rfc3339(start), "end_time": rfc3339(end), "model_kind": "gbdt"}),
        )
        .unwrap();
    let job_id = ok(&a, 202, "train")["job_id"].as_i64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(180);
    let job = loop {
        let job = ok(
            &stack.admin_get(&format!("/v1/hrs/jobs/{job_id}")).unwrap(),
            200,
            "job",
        );
        if job["status"] == "succeeded" || job["status"] == "failed" {
            break job;
        }
        assert!(
            Instant::now() < deadline,
            "job {job_id} never finished: {job}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(job["status"], "succeeded", "{job}");
    let res = &job["result"];
    assert_eq!(res["n_samples"], ROWS, "{res}");
    let version = res["version"].as_str().unwrap().to_string();
    assert!(version.starts_with("gbdt-"), "{version}");
    eprintln!(
        "gbdt job on {ROWS} decisions through Envoy: {version}, validation AUROC {} in {} ms",
        res["metrics"]["auroc"], res["duration_ms"]
    );

    // Activation publishes a bundle whose champion is the trees; the gate serves them.
    let a = stack
        .admin_post("/v1/hrs/activate", &json!({"version": version}))
        .unwrap();
    let moved = ok(&a, 200, "activate");
    assert_eq!(
        (moved["active"].as_str(), moved["previous"].as_str()),
        (Some(version.as_str()), Some(v1.as_str()))
    );
    let (_, served) = wait_for_model(
        &stack,
        &version,
        Duration::from_millis(POLL_MS * 10 + 5000),
        "switch",
    );
    let bundle = stack.current_bundle().unwrap();
    assert!(
        matches!(bundle.champion, Model::Trees(_)),
        "a tree champion"
    );
    assert_eq!(bundle.champion.version(), version);
    assert_eq!(
        served.risk.unwrap().bundle_version,
        bundle.version,
        "served from the published bundle"
    );
    // Every served risk is the native scorer's on the same request, bit for bit.
    let scorer = Scorer::new(bundle);
    for (i, row) in rows.iter().take(20).enumerate() {
        let r = served_as_native(&stack, &scorer, &format!("after-{i}"), &row.evidence());
        assert_eq!(r.risk.unwrap().model_version, version);
    }
}
