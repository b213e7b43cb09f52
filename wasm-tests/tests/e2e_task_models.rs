//! Task-aware models through real Envoy and the real control plane (issue 14, "Task-aware
//! models"): `kakeya model attach-task` makes a second registered model the champion's
//! dialogue model; the next bundle carries it, and from one bundle the gate scores a dialogue
//! answer with it and the same answer sent as QA with the champion, each bit for bit as the
//! native scorer, the VerifyResult naming the task model. A task changed after signing breaks
//! the evidence binding (401), an unknown task is a 400 `invalid_task`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kakeya_core::bundle::Scorer;
use kakeya_core::evidence::{evidence_sha256, Evidence};
use kakeya_core::task::TaskKind;
use kakeya_core::{parse, verify, VerifyParams, VerifyResult};
use kakeya_wasm_tests::fixtures::{grounded_evidence, signed_pcs_with_evidence, KEY};
use kakeya_wasm_tests::scored::{kakeya_ok, register_coverage_model};
use kakeya_wasm_tests::stack::{Answer, Stack, StackOptions};
use serde_json::Value;
use std::time::{Duration, Instant};

const POLL_MS: u64 = 200;

fn with_task(task: Option<TaskKind>) -> Evidence {
    Evidence {
        task,
        ..grounded_evidence()
    }
}

fn send(stack: &Stack, body: &Value) -> Answer {
    stack.submit(body.to_string().as_bytes()).unwrap()
}

fn result(a: &Answer) -> VerifyResult {
    serde_json::from_str(&a.body).unwrap_or_else(|e| panic!("{e}: {a:?}"))
}

#[test]
fn two_tasks_are_scored_by_two_models_of_one_bundle() {
    let stack = Stack::start(StackOptions::scoring(POLL_MS)).unwrap();
    let champion = stack.current_bundle().unwrap().champion.version();
    let dialogue_model = register_coverage_model(&stack).unwrap();
    assert_ne!(champion, dialogue_model);

    let out = kakeya_ok(
        &stack,
        &[
            "model",
            "attach-task",
            &champion,
            "--task",
            "dialogue",
            "--model",
            &dialogue_model,
        ],
    )
    .unwrap();
    eprintln!("{out}");
    assert!(out.contains("published bundle"), "{out}");
    let listed = kakeya_ok(&stack, &["model", "tasks", &champion]).unwrap();
    assert!(listed.contains(&dialogue_model), "{listed}");
    let bundle = stack.current_bundle().unwrap();
    assert_eq!(bundle.champion.version(), champion);
    assert_eq!(
        bundle
            .task_models
            .by_task
            .get(&TaskKind::Dialogue)
            .map(|m| m.version()),
        Some(dialogue_model.clone())
    );

    // Until the gate serves that bundle: dialogue answers scored by the dialogue model.
    let deadline = Instant::now() + Duration::from_secs(20);
    let dialogue = with_task(Some(TaskKind::Dialogue));
    for i in 0.. {
        let a = send(
            &stack,
            &signed_pcs_with_evidence(&format!("wait-{i}"), KEY, &dialogue, None),
        );
        let r = result(&a);
        if r.risk
            .as_ref()
            .is_some_and(|k| k.model_version == dialogue_model)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never scored by the task model: {a:?}"
        );
    }

    // One bundle, one answer text, two tasks: two models, each as the native scorer.
    let scorer = Scorer::new(bundle.clone());
    for (shard, task, model, model_task) in [
        (
            "as-dialogue",
            Some(TaskKind::Dialogue),
            &dialogue_model,
            Some("dialogue"),
        ),
        ("as-qa", Some(TaskKind::Qa), &champion, None),
        ("no-task", None, &champion, None),
    ] {
        let ev = with_task(task);
        let body = signed_pcs_with_evidence(shard, KEY, &ev, None);
        let pcs = parse(body.to_string().as_bytes()).unwrap();
        let native = scorer
            .assess(
                "default",
                &pcs,
                &verify(&pcs, &VerifyParams::default()),
                Some(&ev),
            )
            .unwrap();
        let a = send(&stack, &body);
        let risk = result(&a).risk.unwrap();
        assert_eq!(
            (&risk.model_version, risk.model_task.as_deref()),
            (model, model_task),
            "{shard}: {a:?}"
        );
        assert_eq!(risk.score.to_bits(), native.risk.to_bits(), "{shard}");
        assert_eq!(a.status, if native.escalate { 202 } else { 200 }, "{shard}");
    }

    // The task is signed: sent as dialogue but signed as QA, the binding fails.
    let signed_as_qa = evidence_sha256(&with_task(Some(TaskKind::Qa)));
    let forged = signed_pcs_with_evidence("forged", KEY, &dialogue, Some(&signed_as_qa));
    let a = send(&stack, &forged);
    assert_eq!(a.status, 401, "{a:?}");
    assert!(a.body.contains("evidence_mismatch"), "{a:?}");
    // An unknown task is a typed 400.
    let mut unknown = signed_pcs_with_evidence("unknown", KEY, &dialogue, None);
    unknown["evidence"]["task"] = "chat".into();
    let a = send(&stack, &unknown);
    assert_eq!(a.status, 400, "{a:?}");
    let body: Value = serde_json::from_str(&a.body).unwrap();
    assert_eq!(body["code"], "invalid_task", "{a:?}");
}
