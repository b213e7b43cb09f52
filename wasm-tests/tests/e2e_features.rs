//! Features as decided and the audit sample, through real Envoy and the real control plane:
//! the features the gate scored a PCS v0.2 with are stored in the decision log bit for bit as
//! the native `kakeya_core::features::features` computes them for the same PCS and evidence; an
//! unscored PCS v0.1 row has none, even when the client sends its own `x-kakeya-features`
//! (the gate strips it); with `KAKEYA_AUDIT_SAMPLE_RATE=1` every accepted decision is queued
//! for review as `audit_sample`, beside the escalated ones.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kakeya_core::bundle::Scorer;
use kakeya_core::feature_wire;
use kakeya_core::features::{features, PcsSignals, SCHEMA_VERSION};
use kakeya_core::{parse, verify, VerifyParams, VerifyResult};
use kakeya_wasm_tests::fixtures::{
    grounded_evidence, signed_pcs, signed_pcs_with_evidence, unsupported_evidence, KEY,
};
use kakeya_wasm_tests::stack::{post, Stack, StackOptions};
use serde_json::Value;
use std::time::{Duration, Instant};

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(20))
        .build()
}

fn row_of<'a>(rows: &'a [Value], pcs_id: &str) -> &'a Value {
    rows.iter()
        .find(|r| r["pcs_id"] == pcs_id)
        .unwrap_or_else(|| panic!("no decision {pcs_id}"))
}

#[test]
fn stored_features_are_the_native_features_bit_for_bit_and_accepted_decisions_are_audited() {
    let mut opts = StackOptions::scoring(200);
    opts.env
        .push(("KAKEYA_AUDIT_SAMPLE_RATE".into(), "1".into()));
    let stack = Stack::start(opts).unwrap();
    let bundle = stack.current_bundle().unwrap();
    let model = &bundle.champion;

    // Wait until the gate scores with the served bundle (its first poll).
    let deadline = Instant::now() + Duration::from_secs(15);
    for i in 0.. {
        let body = signed_pcs_with_evidence(&format!("warm-{i}"), KEY, &grounded_evidence(), None);
        let a = stack.submit(body.to_string().as_bytes()).unwrap();
        let r: VerifyResult = serde_json::from_str(&a.body).unwrap();
        if r.risk.is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "never scored: {a:?}");
    }

    // Scored PCS v0.2, answered as the native scorer decides.
    let scorer = Scorer::new(bundle.clone());
    let mut scored = Vec::new();
    for (tag, ev) in [
        ("grounded", grounded_evidence()),
        ("unsupported", unsupported_evidence()),
    ] {
        let body = signed_pcs_with_evidence(tag, KEY, &ev, None).to_string();
        let pcs = parse(body.as_bytes()).unwrap();
        let outcome = verify(&pcs, &VerifyParams::default());
        let signals = PcsSignals::from_verified(&pcs, outcome.result.recomputed_d_hat);
        let native = features(&signals, Some(&ev), model.tenant());
        let risk = scorer.assess("default", &pcs, &outcome, Some(&ev)).unwrap();
        assert_eq!(risk.features.map(f64::to_bits), native.map(f64::to_bits));
        let a = stack.submit(body.as_bytes()).unwrap();
        let r: VerifyResult = serde_json::from_str(&a.body).unwrap();
        assert!(r.risk.is_some(), "{tag}: {a:?}");
        assert_eq!(a.status, if risk.escalate { 202 } else { 200 }, "{tag}");
        scored.push((tag, pcs.pcs_id, native, a.status));
    }
    // An escalated v0.1 (N_j is not signed: D̂ no longer recomputes to the claimed value).
    let mut bad = signed_pcs("bad-v01", KEY);
    bad["N_j"]["16"] = 1000.into();
    let bad_id = bad["pcs_id"].as_str().unwrap().to_string();
    let a = stack.submit(bad.to_string().as_bytes()).unwrap();
    assert_eq!(a.status, 202, "{a:?}");

    // Unscored PCS v0.1, sent with a forged features header that the gate must strip.
    let v01 = signed_pcs("plain-v01", KEY).to_string();
    let v01_id = parse(v01.as_bytes()).unwrap().pcs_id;
    let forged = feature_wire::encode(&[0.5; kakeya_core::features::N_FEATURES]);
    let a = post(
        &agent(),
        &stack.url("/v1/pcs/submit"),
        &[
            ("content-type", "application/json"),
            (feature_wire::HEADER, forged.as_str()),
        ],
        v01.as_bytes(),
    )
    .unwrap();
    assert_eq!(a.status, 200, "{a:?}");

    let rows = stack.decisions(None).unwrap();
    for (tag, pcs_id, native, _) in &scored {
        let row = row_of(&rows, pcs_id);
        assert_eq!(row["feature_schema"], SCHEMA_VERSION, "{tag}: {row}");
        let stored: Vec<u64> = row["features"]
            .as_array()
            .unwrap_or_else(|| panic!("{tag}: no features in {row}"))
            .iter()
            .map(|v| v.as_f64().unwrap().to_bits())
            .collect();
        let want: Vec<u64> = native.iter().map(|v| v.to_bits()).collect();
        assert_eq!(
            stored, want,
            "{tag}: stored features differ from the native ones"
        );
    }
    let plain = row_of(&rows, &v01_id);
    assert!(plain["risk"].is_null(), "{plain}");
    assert!(
        plain["feature_schema"].is_null() && plain["features"].is_null(),
        "{plain}"
    );
    // The forged header never reached the control plane (else it would count an `unscored`
    // refusal).
    let m = stack.admin_get("/metrics").unwrap();
    assert!(
        !m.body.contains("kakeya_feature_rejects_total{"),
        "{}",
        m.body
    );

    let escalated = row_of(&rows, &bad_id);
    assert!(escalated["features"].is_null() && escalated["escalated"] == true);

    // Audit sample at rate 1: every accepted, non-escalated decision is queued.
    assert_eq!(plain["audit_sample"], true, "{plain}");
    assert_eq!(
        escalated["audit_sample"], false,
        "escalated ones are queued anyway"
    );
    for (tag, pcs_id, _, status) in &scored {
        assert_eq!(
            row_of(&rows, pcs_id)["audit_sample"],
            *status == 200,
            "{tag}"
        );
    }
    let q = stack
        .admin_get("/v1/reviews?status=all&limit=1000")
        .unwrap();
    assert_eq!(q.status, 200, "{}", q.body);
    let items = q.json()["items"].as_array().unwrap().clone();
    let queued_for = |pcs_id: &str| {
        items
            .iter()
            .find(|i| i["pcs_id"] == pcs_id)
            .map(|i| i["queued_for"].as_str().unwrap().to_string())
    };
    for (tag, pcs_id, _, status) in &scored {
        let want = if *status == 200 {
            "audit_sample"
        } else {
            "escalated"
        };
        assert_eq!(queued_for(pcs_id).as_deref(), Some(want), "{tag}");
    }
    assert_eq!(queued_for(&v01_id).as_deref(), Some("audit_sample"));
    assert_eq!(queued_for(&bad_id).as_deref(), Some("escalated"));
    // Every logged decision is in the queue at rate 1.
    assert_eq!(items.len(), rows.len());
}
