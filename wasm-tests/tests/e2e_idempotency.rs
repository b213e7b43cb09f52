//! Identity and idempotency through real Envoy and the real control plane:
//! * a PCS v0.2 built by `kakeya pcs build` has an identity per (answer, evidence), so the same
//!   answer sent with another context is scored on its own evidence, never a dedup hit;
//! * a resubmission under a stored `pcs_id` is answered from dedup only when its signed content
//!   is identical; properly signed other content gets 409 `idempotency_conflict`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kakeya_core::canonical::signing_payload;
use kakeya_core::signature::sign_hmac;
use kakeya_core::VerifyResult;
use kakeya_wasm_tests::fixtures::{grounded_evidence, signed_pcs, signed_pcs_with_evidence, KEY};
use kakeya_wasm_tests::stack::{Answer, Stack, StackOptions};
use std::time::Duration;

fn stack() -> Stack {
    Stack::start(StackOptions::scoring(200)).unwrap()
}

fn submit(stack: &Stack, body: &[u8]) -> Answer {
    stack.submit(body).unwrap()
}

/// `kakeya pcs build` of `answer` with `context`, signed with the stack's key.
fn build(stack: &Stack, answer: &str, context: &str) -> Vec<u8> {
    let dir = stack.data_path();
    let (q, c, a) = (dir.join("q.txt"), dir.join("c.txt"), dir.join("a.txt"));
    std::fs::write(&q, "Who wrote the first computer program?").unwrap();
    std::fs::write(&c, context).unwrap();
    std::fs::write(&a, answer).unwrap();
    let out = stack
        .kakeya(&[
            "pcs",
            "build",
            "--text",
            a.to_str().unwrap(),
            "--question",
            q.to_str().unwrap(),
            "--context",
            c.to_str().unwrap(),
            "--key",
            KEY,
        ])
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn same_answer_with_other_evidence_is_its_own_submission() {
    let stack = stack();
    let answer = "Ada Lovelace wrote the first computer program, for the Analytical Engine.";
    let grounded = build(
        &stack,
        answer,
        "Ada Lovelace wrote the first computer program in 1843, for Charles Babbage's Analytical Engine.",
    );
    let contradicting = build(
        &stack,
        answer,
        "Grace Hopper wrote the first compiler in 1952 for the UNIVAC; Babbage never finished his engine.",
    );
    let id = |b: &[u8]| kakeya_core::parse(b).unwrap().pcs_id;
    assert_ne!(
        id(&grounded),
        id(&contradicting),
        "pcs-id-v2 covers the evidence"
    );

    // Warm up with throwaway identities until the gate serves the default model's bundle
    // (an unscored answer would be stored under the PCS's id).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    for i in 0.. {
        let warm = signed_pcs_with_evidence(&format!("warm-{i}"), KEY, &grounded_evidence(), None);
        let a = submit(&stack, warm.to_string().as_bytes());
        if a.header("x-kakeya-risk").is_some() || a.body.contains("\"risk\"") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no bundle served: {a:?}"
        );
    }
    let scored = |b: &[u8]| -> (Answer, VerifyResult) {
        let a = submit(&stack, b);
        let r: VerifyResult =
            serde_json::from_str(&a.body).unwrap_or_else(|e| panic!("{e}: {a:?}"));
        (a, r)
    };
    let (g, g_result) = scored(&grounded);
    assert!(matches!(g.header("x-kakeya-dedup"), Some("miss")), "{g:?}");
    let (c, c_result) = scored(&contradicting);
    assert_eq!(c.header("x-kakeya-dedup"), Some("miss"), "{c:?}");
    let (gr, cr) = (g_result.risk.unwrap(), c_result.risk.unwrap());
    assert_eq!(gr.model_version, cr.model_version);
    assert_ne!(
        gr.score, cr.score,
        "each answer is scored on its own evidence"
    );
    // Each is idempotent on its own.
    let again = submit(&stack, &contradicting);
    assert_eq!((again.status, &again.body), (c.status, &c.body));
    assert_eq!(again.header("x-kakeya-dedup"), Some("hit"));
}

#[test]
fn other_signed_content_under_a_stored_pcs_id_is_a_conflict() {
    let stack = stack();
    let first_body = signed_pcs("idem-1", KEY).to_string();
    let first = submit(&stack, first_body.as_bytes());
    assert_eq!(first.status, 200, "{first:?}");
    assert_eq!(first.header("x-kakeya-dedup"), Some("miss"));

    // The same pcs_id with D_hat 1e308, properly signed: the signature is valid, the content
    // is not the stored submission's.
    let mut p = kakeya_core::parse(first_body.as_bytes()).unwrap();
    p.d_hat = 1e308;
    let mut v: serde_json::Value = serde_json::from_str(&first_body).unwrap();
    v["D_hat"] = serde_json::json!(1e308);
    v["sig"] = sign_hmac(signing_payload(&p).as_bytes(), KEY.as_bytes()).into();
    let conflict = submit(&stack, v.to_string().as_bytes());
    assert_eq!(conflict.status, 409, "{conflict:?}");
    assert_eq!(conflict.json()["code"], "idempotency_conflict");
    assert_eq!(conflict.header("x-kakeya-dedup"), Some("conflict"));

    // The identical PCS still gets the first answer, byte for byte.
    let again = submit(&stack, first_body.as_bytes());
    assert_eq!((again.status, &again.body), (first.status, &first.body));
    assert_eq!(again.header("x-kakeya-dedup"), Some("hit"));

    // Nothing changed: one decision for this pcs_id, the conflict counted.
    let rows = stack.decisions(None).unwrap();
    let same: Vec<_> = rows
        .iter()
        .filter(|r| r["pcs_id"] == p.pcs_id.as_str())
        .collect();
    assert_eq!(same.len(), 1, "{same:?}");
    assert_eq!(same[0]["accepted"], true, "the first verdict stays");
    let metrics = stack.admin_get("/metrics").unwrap();
    assert!(
        metrics
            .body
            .contains("kakeya_idempotency_conflicts_total{tenant=\"default\"} 1"),
        "{}",
        metrics.body
    );
}
