//! Model bundles in the built gate module: polling, verification, distribution between VMs,
//! inline risk scoring, failure modes and the PCS v0.2 evidence binding. Needs the module:
//! `cargo build -p kakeya-gate --target wasm32-wasip1 --profile wasm`.

use kakeya_core::bundle::{Bundle, SignedBundle, H_SHA256, H_SIGNATURE};
use kakeya_core::evidence::Evidence;
use kakeya_core::VerifyParams;
use kakeya_wasm_tests::fixtures::{
    bundle, bundle_config, bundle_public_key, coverage_model, grounded_evidence, hrs_model,
    signed_pcs_with_evidence, unsupported_evidence, BUNDLE_SEED, GOLDEN, KEY,
};
use kakeya_wasm_tests::{
    load_gate_wasm, Clock, Harness, LogLevel, Options, Outcome, Request, SharedStore,
};
use std::sync::OnceLock;

const SUBMIT: &str = "/v1/pcs/submit";
const INTERVAL_MS: u64 = 1000;
/// The filter's short first tick (kakeya_gate::bundle::FIRST_TICK_MS).
const FIRST_TICK_MS: u32 = 50;
const STAMP_KEY: &str = "kakeya.bundle.stamp";
const BUNDLE_KEY: &str = "kakeya.bundle";
const T0: u64 = 1_800_000_000_000_000_000;
const REFUSED: &str = "kakeya_gate.bundle_refused_total";
const POLL_ERRORS: &str = "kakeya_gate.bundle_poll_errors_total";
const RISK_HEADERS: [&str; 6] = [
    "x-kakeya-risk",
    "x-kakeya-risk-band",
    "x-kakeya-model-version",
    "x-kakeya-arm",
    "x-kakeya-bundle-version",
    kakeya_core::feature_wire::HEADER,
];

fn wasm() -> &'static [u8] {
    static WASM: OnceLock<Vec<u8>> = OnceLock::new();
    WASM.get_or_init(|| match load_gate_wasm() {
        Ok(w) => w,
        Err(e) => panic!("{e}"),
    })
}

fn keys() -> Vec<String> {
    vec![bundle_public_key(&BUNDLE_SEED)]
}

fn harness_with(mode: &str, shared: SharedStore) -> Harness {
    let cfg = bundle_config(&keys(), mode, INTERVAL_MS);
    let opts = Options {
        shared,
        clock: Clock::Fixed(T0),
        ..Options::default()
    };
    let h = Harness::with_options(wasm(), cfg.as_bytes(), opts).unwrap();
    assert!(h.configured(), "configuration refused: {:?}", h.logs());
    assert_eq!(h.tick_period_ms(), FIRST_TICK_MS, "a short first tick");
    h
}

fn harness(mode: &str) -> Harness {
    harness_with(mode, SharedStore::new())
}

fn body_with(ev: &Evidence, shard: &str) -> Vec<u8> {
    signed_pcs_with_evidence(shard, KEY, ev, None)
        .to_string()
        .into_bytes()
}

fn submit(h: &mut Harness, body: &[u8]) -> Outcome {
    h.request("POST", SUBMIT, &[], body).unwrap()
}

/// Moves past the lease, ticks and returns the token of the one new callout.
fn poll(h: &mut Harness) -> u32 {
    h.advance_clock(INTERVAL_MS * 1_000_000);
    let before = h.pending_http_calls().len();
    h.tick().unwrap();
    let pending = h.pending_http_calls();
    assert_eq!(pending.len(), before + 1, "one poll per tick: {pending:?}");
    pending.last().map(|c| c.token).unwrap()
}

fn respond_bundle(h: &mut Harness, token: u32, s: &SignedBundle) {
    h.respond_http_call(
        token,
        Some(200),
        &[
            (H_SHA256, s.sha256.as_str()),
            (H_SIGNATURE, s.signature_b64.as_str()),
        ],
        &s.bytes,
    )
    .unwrap();
}

fn install(h: &mut Harness, b: &Bundle) -> SignedBundle {
    let s = b.sign(&BUNDLE_SEED);
    let token = poll(h);
    respond_bundle(h, token, &s);
    s
}

/// What the filter must forward for `ev` under `b`: computed with kakeya-core directly.
fn expected(b: &Bundle, ev: &Evidence, shard: &str) -> (String, kakeya_core::bundle::Risk) {
    let body = body_with(ev, shard);
    let pcs = kakeya_core::parse(&body).unwrap();
    let mut outcome = kakeya_core::verify(&pcs, &VerifyParams::default());
    let risk = b
        .assess("default", &pcs, &outcome, pcs.evidence.as_ref())
        .unwrap();
    outcome.result.apply_risk(&risk, b.version);
    (outcome.result.to_json(), risk)
}

fn assert_scored(out: &Outcome, b: &Bundle, ev: &Evidence, shard: &str) -> bool {
    assert!(out.is_forwarded(), "{out:?}");
    let (result, risk) = expected(b, ev, shard);
    assert_eq!(out.header("x-kakeya-result"), Some(result.as_str()));
    let risk_text = format!("{:.6}", risk.risk);
    assert_eq!(out.header("x-kakeya-risk"), Some(risk_text.as_str()));
    assert_eq!(out.header("x-kakeya-risk-band"), Some(risk.band.as_str()));
    assert_eq!(
        out.header("x-kakeya-model-version"),
        Some(risk.model_version.as_str())
    );
    assert_eq!(out.header("x-kakeya-arm"), Some(risk.arm.as_str()));
    let version = b.version.to_string();
    assert_eq!(
        out.header("x-kakeya-bundle-version"),
        Some(version.as_str())
    );
    assert!(out.header("x-kakeya-score-ns").is_some());
    // The features as decided: the very vector the native scorer computed, bit for bit.
    let sent = out
        .header(kakeya_core::feature_wire::HEADER)
        .expect("a scored request carries its features");
    assert_eq!(sent, kakeya_core::feature_wire::encode(&risk.features));
    let decoded = kakeya_core::feature_wire::decode(sent).unwrap();
    assert_eq!(decoded.map(f64::to_bits), risk.features.map(f64::to_bits));
    // Raw evidence never travels in headers.
    assert!(
        out.headers()
            .iter()
            .all(|(_, v)| !v.contains(&ev.response) && !v.contains(&ev.context)),
        "{out:?}"
    );
    risk.escalate
}

fn assert_unscored(out: &Outcome) {
    for h in RISK_HEADERS {
        assert_eq!(out.header(h), None, "{h}: {out:?}");
    }
}

fn no_panics(h: &Harness) {
    assert!(
        h.logs().iter().all(|l| l.level < LogLevel::Critical),
        "{:?}",
        h.logs()
    );
    assert!(h.stderr().is_empty(), "{}", h.stderr());
}

#[test]
fn the_bundle_is_polled_verified_installed_and_scores_requests() {
    let mut h = harness("open");
    // Before any bundle: evidence → escalated for review (open), no risk headers.
    let grounded = body_with(&grounded_evidence(), "s1");
    let out = submit(&mut h, &grounded);
    assert!(out.is_forwarded(), "{out:?}");
    assert_unscored(&out);
    let r: serde_json::Value =
        serde_json::from_str(out.header("x-kakeya-result").unwrap()).unwrap();
    assert_eq!(r["escalated"], true, "{r}");
    assert_eq!(
        r["reason"],
        "no model bundle available: escalated for review"
    );
    // no_bundle_total counts the 202 the client got for it; not a dedup replay of a stored
    // answer, nor a request that was not answered at all.
    const NO_BUNDLE: &str = "kakeya_gate.tenant.default.no_bundle_total";
    assert_eq!(h.metric(NO_BUNDLE), Some(0), "counted when answered");
    let answered = |h: &mut Harness, status: u16, dedup: &str| {
        let req = Request::new("POST", SUBMIT)
            .body(&grounded)
            .response(status, &[("x-kakeya-dedup", dedup)]);
        h.send(&req).unwrap()
    };
    assert!(answered(&mut h, 202, "miss").is_forwarded());
    assert_eq!(h.metric(NO_BUNDLE), Some(1));
    answered(&mut h, 202, "hit");
    answered(&mut h, 200, "hit");
    assert_eq!(h.metric(NO_BUNDLE), Some(1));
    assert_eq!(
        h.metric("kakeya_gate.tenant.default.escalated_total"),
        Some(2)
    );

    // The poll: GET to the admin cluster with the configured pseudo-headers.
    h.advance_clock(INTERVAL_MS * 1_000_000);
    h.tick().unwrap();
    let calls = h.pending_http_calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    let c = &calls[0];
    assert_eq!(c.upstream, "kakeya_admin");
    assert_eq!(c.header(":method"), Some("GET"));
    assert_eq!(c.header(":path"), Some("/v1/bundles/current"));
    assert_eq!(c.header(":authority"), Some("kakeya-control-plane"));
    assert_eq!(c.header("if-none-match"), None, "no bundle yet");
    assert_eq!(c.timeout_ms, 500);
    assert_eq!(h.tick_period_ms(), INTERVAL_MS as u32, "then the interval");
    // A tick while the poll is in flight does not poll again.
    h.tick().unwrap();
    assert_eq!(h.pending_http_calls().len(), 1);

    let b = bundle(1, coverage_model());
    let s = b.sign(&BUNDLE_SEED);
    respond_bundle(&mut h, c.token, &s);
    assert_eq!(h.metric("kakeya_gate.bundle_updates_total"), Some(1));

    // Grounded answer: low risk, accepted (200 at ingest).
    let out = submit(&mut h, &grounded);
    assert!(!assert_scored(&out, &b, &grounded_evidence(), "s1"));
    assert_eq!(out.header("x-kakeya-risk-band"), Some("low"));
    assert_eq!(out.header("x-kakeya-arm"), Some("champion"));
    let r: serde_json::Value =
        serde_json::from_str(out.header("x-kakeya-result").unwrap()).unwrap();
    assert_eq!(r["escalated"], false, "{r}");
    assert_eq!(r["risk"]["bundle_version"], 1);

    // Unsupported answer: high risk → escalated (202 at ingest).
    let bad = body_with(&unsupported_evidence(), "s2");
    let out = submit(&mut h, &bad);
    assert!(assert_scored(&out, &b, &unsupported_evidence(), "s2"));
    assert_eq!(out.header("x-kakeya-risk-band"), Some("high"));
    let r: serde_json::Value =
        serde_json::from_str(out.header("x-kakeya-result").unwrap()).unwrap();
    assert_eq!(r["escalated"], true, "{r}");
    assert_eq!(r["accepted"], true, "{r}");

    // No evidence: policy default, not scored, verification alone.
    let out = submit(&mut h, GOLDEN[0].as_bytes());
    assert_unscored(&out);
    assert_eq!(
        out.header("x-kakeya-result"),
        Some(
            r#"{"accepted":true,"recomputed_D_hat":0.528320834,"recomputed_budget":0.317807017,"escalated":false}"#
        )
    );
    assert_eq!(h.metric("kakeya_gate.tenant.default.scored_total"), Some(2));
    assert_eq!(
        h.metric("kakeya_gate.tenant.default.high_risk_total"),
        Some(1)
    );

    // Next poll sends the ETag; 304 changes nothing.
    let token = poll(&mut h);
    let call = h.pending_http_calls().pop().unwrap();
    let etag = format!("\"{}\"", s.sha256);
    assert_eq!(call.header("if-none-match"), Some(etag.as_str()));
    h.respond_http_call(token, Some(304), &[], b"").unwrap();
    assert_eq!(h.metric(REFUSED), Some(0));
    let out = submit(&mut h, &grounded);
    assert_scored(&out, &b, &grounded_evidence(), "s1");
    no_panics(&h);
}

/// A harness on the real clock (so `x-kakeya-score-ns` measures) whose gate installed `b`
/// through its first poll.
fn timed_harness_with(b: &Bundle) -> Harness {
    let cfg = bundle_config(&keys(), "closed", INTERVAL_MS);
    let mut h = Harness::with_options(wasm(), cfg.as_bytes(), Options::default()).unwrap();
    assert!(h.configured(), "configuration refused: {:?}", h.logs());
    h.tick().unwrap();
    let token = h.pending_http_calls().first().map(|c| c.token).unwrap();
    respond_bundle(&mut h, token, &b.sign(&BUNDLE_SEED));
    assert_eq!(h.metric("kakeya_gate.bundle_updates_total"), Some(1));
    h
}

fn median(v: &mut [u64]) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

/// A gradient-boosted tree champion (the default recipe: 200 trees of depth ≤ 4, trained on
/// the HaluEval sample the control plane embeds) in a signed bundle: every risk the gate serves
/// equals the native score bit for bit. Also prints the in-guest features + scoring time
/// (`x-kakeya-score-ns`, wasmtime) beside a logistic champion trained on the same rows: a
/// measurement, not asserted (`cargo test -p kakeya-wasm-tests --test bundle tree -- --nocapture`).
#[test]
fn a_tree_ensemble_champion_is_served_exactly_as_scored_natively() {
    use kakeya_control_plane::ml::{dataset, eval, gbdt, model};
    let rows = dataset::parse(kakeya_control_plane::registry::bootstrap::SAMPLE).unwrap();
    let p = eval::prepare(&rows, |_| {});
    let fit = |recipe: eval::Recipe| {
        eval::fit_model(
            &p,
            "sample",
            eval::DEFAULT_SEED,
            &recipe,
            serde_json::json!({}),
        )
        .unwrap()
    };
    let trees = fit(eval::Recipe::Trees(gbdt::DEFAULT_PARAMS));
    let lr = fit(eval::Recipe::Logistic {
        l2: model::DEFAULT_L2,
    });
    assert!(trees.version().starts_with("gbdt-"), "{}", trees.version());
    // 60 rows spread over the sample (every task, both labels), then one row 300 times.
    let picked: Vec<&dataset::Row> = rows.iter().step_by(rows.len() / 60).take(60).collect();
    let mut medians = Vec::new();
    for m in [lr, trees] {
        let b = bundle(1, m);
        let mut h = timed_harness_with(&b);
        let mut bands = std::collections::BTreeSet::new();
        for (i, row) in picked.iter().enumerate() {
            let (ev, shard) = (row.evidence(), format!("row-{i}"));
            let out = submit(&mut h, &body_with(&ev, &shard));
            assert_scored(&out, &b, &ev, &shard);
            let (_, native) = expected(&b, &ev, &shard);
            let served: serde_json::Value =
                serde_json::from_str(out.header("x-kakeya-result").unwrap()).unwrap();
            assert_eq!(
                served["risk"]["score"].as_f64().map(f64::to_bits),
                Some(native.risk.to_bits()),
                "row {i}: {served}"
            );
            bands.insert(native.band.as_str());
        }
        assert!(
            bands.len() >= 2,
            "{} scored every row alike",
            b.champion.version()
        );
        let (ev, mut ns) = (picked[0].evidence(), Vec::new());
        for i in 0..300 {
            let out = submit(&mut h, &body_with(&ev, &format!("timed-{i}")));
            ns.push(out.header("x-kakeya-score-ns").unwrap().parse().unwrap());
        }
        no_panics(&h);
        medians.push((b.champion.kind().to_string(), median(&mut ns)));
    }
    eprintln!(
        "in-guest features + scoring (x-kakeya-score-ns, wasmtime, median of 300, {} B of \
         evidence): {}",
        picked[0].context.len() + picked[0].question.len() + picked[0].response.len(),
        medians
            .iter()
            .map(|(k, ns)| format!("{k} {:.1} µs", *ns as f64 / 1000.0))
            .collect::<Vec<_>>()
            .join(", ")
    );
}

#[test]
fn refused_bundles_keep_the_last_good_one() {
    let mut h = harness("closed");
    let good = bundle(5, coverage_model());
    install(&mut h, &good);
    let ev = grounded_evidence();
    let body = body_with(&ev, "s1");
    assert_scored(&submit(&mut h, &body), &good, &ev, "s1");

    let newer_model = hrs_model(&[("token_coverage", -2.0)], 1.0, 0.5);
    let newer = bundle(6, newer_model.clone());
    let signed = newer.sign(&BUNDLE_SEED);
    let mut tampered = signed.bytes.clone();
    if let Some(b) = tampered.iter_mut().find(|b| **b == b'6') {
        *b = b'7';
    }
    let foreign = newer.sign(&[9; 32]);
    let mut incompatible = newer_model;
    incompatible.schema_version = "hrs-features-v0".into();
    let incompatible = bundle(6, incompatible).sign(&BUNDLE_SEED);
    let older = bundle(4, coverage_model()).sign(&BUNDLE_SEED);

    type Case<'a> = (&'a str, Option<u32>, Vec<(&'a str, &'a str)>, Vec<u8>, bool);
    let cases: Vec<Case<'_>> = vec![
        (
            "tampered body",
            Some(200),
            vec![
                (H_SHA256, &signed.sha256),
                (H_SIGNATURE, &signed.signature_b64),
            ],
            tampered,
            false,
        ),
        (
            "wrong signature",
            Some(200),
            vec![
                (H_SHA256, &foreign.sha256),
                (H_SIGNATURE, &foreign.signature_b64),
            ],
            foreign.bytes.clone(),
            false,
        ),
        (
            "unsigned",
            Some(200),
            vec![(H_SHA256, &signed.sha256)],
            signed.bytes.clone(),
            false,
        ),
        (
            "schema-incompatible",
            Some(200),
            vec![
                (H_SHA256, &incompatible.sha256),
                (H_SIGNATURE, &incompatible.signature_b64),
            ],
            incompatible.bytes.clone(),
            false,
        ),
        (
            "older version",
            Some(200),
            vec![
                (H_SHA256, &older.sha256),
                (H_SIGNATURE, &older.signature_b64),
            ],
            older.bytes.clone(),
            false,
        ),
        ("server error", Some(500), vec![], b"oops".to_vec(), true),
        (
            "timeout (no headers, no body)",
            None,
            vec![],
            Vec::new(),
            true,
        ),
    ];
    let mut refused = 0;
    let mut transport = 0;
    for (what, status, headers, body_bytes, is_transport) in cases {
        h.clear_logs();
        let token = poll(&mut h);
        h.respond_http_call(token, status, &headers, &body_bytes)
            .unwrap();
        refused += 1;
        transport += i64::from(is_transport);
        assert_eq!(h.metric(REFUSED), Some(refused), "{what}");
        assert_eq!(h.metric(POLL_ERRORS), Some(transport), "{what}");
        assert!(
            h.logs()
                .iter()
                .any(|l| l.level == LogLevel::Warn && l.message.contains("refused")),
            "{what}: {:?}",
            h.logs()
        );
        // The last good bundle keeps serving.
        assert_scored(&submit(&mut h, &body), &good, &ev, "s1");
    }
    assert_eq!(h.metric("kakeya_gate.bundle_updates_total"), Some(1));

    // A newer bundle with another champion changes the model version on the next request.
    install(&mut h, &newer);
    let out = submit(&mut h, &body);
    assert_scored(&out, &newer, &ev, "s1");
    assert_ne!(
        out.header("x-kakeya-model-version"),
        Some(good.champion.version().as_str())
    );
    no_panics(&h);
}

#[test]
fn without_a_bundle_closed_mode_answers_503_and_unscored_requests_pass() {
    let mut h = harness("closed");
    let out = submit(&mut h, &body_with(&grounded_evidence(), "s1"));
    assert_eq!(out.status(), Some(503), "{out:?}");
    assert_eq!(out.header("retry-after"), Some("5"));
    let v = out.json().unwrap();
    assert_eq!(v["code"], "no_bundle");
    assert_eq!(v["error"], "no model bundle available");
    assert_eq!(
        h.metric("kakeya_gate.tenant.default.no_bundle_total"),
        Some(1)
    );
    // Without evidence nothing needs a model.
    let out = submit(&mut h, GOLDEN[0].as_bytes());
    assert!(out.is_forwarded(), "{out:?}");
    assert_unscored(&out);
    no_panics(&h);
}

#[test]
fn evidence_must_be_bound_to_the_signature() {
    for cfg in [
        r#"{"keyring":{"global":{"alg":"hmac","keys":["testsecret"]}}}"#.to_string(),
        bundle_config(&keys(), "open", INTERVAL_MS),
    ] {
        let mut h = Harness::new(wasm(), cfg.as_bytes()).unwrap();
        assert!(h.configured());
        let ev = grounded_evidence();
        let unbound = signed_pcs_with_evidence("s1", KEY, &ev, Some(""));
        let out = submit(&mut h, unbound.to_string().as_bytes());
        assert_eq!(out.status(), Some(400), "{out:?}");
        assert_eq!(out.json().unwrap()["code"], "evidence_unbound");
        let other = kakeya_core::evidence::evidence_sha256(&unsupported_evidence());
        let mismatch = signed_pcs_with_evidence("s1", KEY, &ev, Some(&other));
        let out = submit(&mut h, mismatch.to_string().as_bytes());
        assert_eq!(out.status(), Some(401), "{out:?}");
        let v = out.json().unwrap();
        assert_eq!(v["code"], "evidence_mismatch");
        assert!(v["error"].is_string());
        // Signed evidence_sha256, evidence stripped in transit: refused, not left unscored.
        let mut stripped = signed_pcs_with_evidence("s1", KEY, &ev, None);
        stripped.as_object_mut().unwrap().remove("evidence");
        let out = submit(&mut h, stripped.to_string().as_bytes());
        assert_eq!(out.status(), Some(400), "{out:?}");
        assert_eq!(out.json().unwrap()["code"], "evidence_missing");
        assert_eq!(
            h.metric("kakeya_gate.tenant.default.evidence_errors_total"),
            Some(3)
        );
        // Bound evidence without a bundle source: verified as before, not scored.
        let out = submit(&mut h, &body_with(&ev, "s1"));
        assert!(out.is_forwarded(), "{out:?}");
        assert_unscored(&out);
        no_panics(&h);
    }
}

#[test]
fn a_challenger_with_weight_one_scores_every_request() {
    let mut h = harness("open");
    let mut b = bundle(2, coverage_model());
    b.challenger = Some(hrs_model(&[("token_coverage", -3.0)], 2.0, 0.9).into());
    b.challenger_weight = 1.0;
    install(&mut h, &b);
    let ev = unsupported_evidence();
    let out = submit(&mut h, &body_with(&ev, "s1"));
    assert_scored(&out, &b, &ev, "s1");
    assert_eq!(out.header("x-kakeya-arm"), Some("challenger"));
    let challenger_version = b.challenger.as_ref().unwrap().version();
    assert_eq!(
        out.header("x-kakeya-model-version"),
        Some(challenger_version.as_str())
    );
}

/// The built module with a canary bundle: a canary at weight 1 scores every request (its
/// arm header and model version, counted under `arm.canary`), at weight 0 none; the bytes a
/// filter verifies carry it.
#[test]
fn a_canary_with_weight_one_scores_every_request_and_is_counted_by_arm() {
    let mut h = harness("open");
    let mut b = bundle(2, coverage_model());
    let canary: kakeya_core::model::Model = hrs_model(&[("token_coverage", -3.0)], 2.0, 0.9).into();
    b.canary = Some(kakeya_core::bundle::Canary {
        model: canary.clone(),
        weight: 1.0,
        key: kakeya_core::bundle::ArmKey::Tenant,
    });
    install(&mut h, &b);
    let ev = unsupported_evidence();
    for shard in ["s1", "s2", "s3"] {
        let out = submit(&mut h, &body_with(&ev, shard));
        assert_scored(&out, &b, &ev, shard);
        assert_eq!(out.header("x-kakeya-arm"), Some("canary"));
        assert_eq!(
            out.header("x-kakeya-model-version"),
            Some(canary.version().as_str())
        );
    }
    let by_arm = |arm: &str| {
        h.metric(&format!(
            "kakeya_gate.tenant.default.arm.{arm}.scored_by_arm_total"
        ))
    };
    assert_eq!(by_arm("canary"), Some(3));
    assert_eq!(by_arm("champion"), Some(0));
    let mut off = b.clone();
    off.version = 3;
    off.canary.as_mut().unwrap().weight = 0.0;
    install(&mut h, &off);
    let out = submit(&mut h, &body_with(&ev, "s4"));
    assert_scored(&out, &off, &ev, "s4");
    assert_eq!(out.header("x-kakeya-arm"), Some("champion"));
    let by_arm = |arm: &str| {
        h.metric(&format!(
            "kakeya_gate.tenant.default.arm.{arm}.scored_by_arm_total"
        ))
    };
    assert_eq!((by_arm("canary"), by_arm("champion")), (Some(3), Some(1)));
    no_panics(&h);
}

#[test]
fn one_vm_polls_per_interval_and_every_vm_picks_the_bundle_up() {
    let shared = SharedStore::new();
    let mut a = harness_with("closed", shared.clone());
    let mut b = harness_with("closed", shared.clone());
    a.advance_clock(INTERVAL_MS * 1_000_000);
    b.advance_clock(INTERVAL_MS * 1_000_000);
    a.tick().unwrap();
    b.tick().unwrap();
    assert_eq!(a.pending_http_calls().len(), 1);
    assert_eq!(
        b.pending_http_calls().len(),
        0,
        "B must not poll: A holds the lease"
    );
    let v1 = bundle(1, coverage_model());
    let s = v1.sign(&BUNDLE_SEED);
    let token = a.pending_http_calls()[0].token;
    respond_bundle(&mut a, token, &s);
    // B never polled but scores with the bundle A stored.
    let ev = grounded_evidence();
    assert_scored(&submit(&mut b, &body_with(&ev, "s1")), &v1, &ev, "s1");
    // After the lease expires, whoever ticks first polls.
    b.advance_clock(INTERVAL_MS * 1_000_000);
    b.tick().unwrap();
    assert_eq!(b.pending_http_calls().len(), 1);
    a.advance_clock(INTERVAL_MS * 1_000_000 / 2);
    a.tick().unwrap();
    assert_eq!(
        a.pending_http_calls().len(),
        0,
        "A must not poll: B holds the lease"
    );
    no_panics(&a);
    no_panics(&b);
}

#[test]
fn empty_responses_and_unknown_tokens_never_trap() {
    let mut h = harness("open");
    assert!(h.respond_http_call(99, Some(200), &[], b"").is_err());
    let token = poll(&mut h);
    // 200 without headers or body.
    h.respond_http_call(token, Some(200), &[], b"").unwrap();
    assert_eq!(h.metric(REFUSED), Some(1));
    assert_eq!(h.metric(POLL_ERRORS), Some(0));
    assert!(h.respond_http_call(token, Some(200), &[], b"").is_err());
    let out = submit(&mut h, &body_with(&grounded_evidence(), "s1"));
    assert!(out.is_forwarded(), "{out:?}");
    assert_unscored(&out);
    no_panics(&h);
}

#[test]
fn a_cold_start_polls_on_the_first_short_tick() {
    let mut h = harness("closed");
    // No clock advance: the first tick, FIRST_TICK_MS after configuration, already polls.
    h.tick().unwrap();
    assert_eq!(h.tick_period_ms(), INTERVAL_MS as u32);
    let calls = h.pending_http_calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    let b = bundle(1, coverage_model());
    respond_bundle(&mut h, calls[0].token, &b.sign(&BUNDLE_SEED));
    let ev = grounded_evidence();
    assert_scored(&submit(&mut h, &body_with(&ev, "s1")), &b, &ev, "s1");
    // The next tick only polls once the interval passed.
    h.tick().unwrap();
    assert_eq!(h.pending_http_calls().len(), 0);
    no_panics(&h);
}

#[test]
fn requests_read_the_stamp_and_the_entry_only_when_it_changes() {
    let shared = SharedStore::new();
    let mut a = harness_with("closed", shared.clone());
    let mut b = harness_with("closed", shared.clone());
    let v1 = bundle(1, coverage_model());
    let s1 = install(&mut a, &v1);
    // The entry is written first, then the stamp (version and digest).
    let stamp = format!("1\n{}", s1.sha256);
    assert_eq!(
        shared.get(STAMP_KEY).map(|(v, _)| v),
        Some(stamp.clone().into_bytes())
    );
    assert!(shared.get(BUNDLE_KEY).is_some());
    let ev = grounded_evidence();
    let body = body_with(&ev, "s1");
    assert_scored(&submit(&mut b, &body), &v1, &ev, "s1");

    // Garbage in the entry under an unchanged stamp: requests never look at the entry.
    shared.set(BUNDLE_KEY, b"junk".to_vec(), 0);
    for _ in 0..3 {
        assert_scored(&submit(&mut b, &body), &v1, &ev, "s1");
    }
    assert_eq!(b.metric(REFUSED), Some(0));
    // A new stamp makes the next request look once: refused, the last good bundle stays.
    shared.set(STAMP_KEY, b"2\nff".to_vec(), 0);
    assert_scored(&submit(&mut b, &body), &v1, &ev, "s1");
    assert_scored(&submit(&mut b, &body), &v1, &ev, "s1");
    assert_eq!(b.metric(REFUSED), Some(1));

    // A newer bundle installed by A (entry, then stamp) reaches B's next request.
    let v2 = bundle(2, hrs_model(&[("token_coverage", -2.0)], 1.0, 0.5));
    let token = poll(&mut a);
    respond_bundle(&mut a, token, &v2.sign(&BUNDLE_SEED));
    assert_scored(&submit(&mut b, &body), &v2, &ev, "s1");

    // A lost stamp write: B's tick still reads the entry itself and catches up.
    let v3 = bundle(3, coverage_model());
    let s3 = v3.sign(&BUNDLE_SEED);
    let entry_cas = shared.get(BUNDLE_KEY).map(|(_, c)| c).unwrap();
    let mut entry = format!("kb1\n3\n{}\n{}\n", s3.sha256, s3.signature_b64).into_bytes();
    entry.extend_from_slice(&s3.bytes);
    assert_eq!(shared.set(BUNDLE_KEY, entry, entry_cas), 0);
    assert_scored(&submit(&mut b, &body), &v2, &ev, "s1");
    b.tick().unwrap();
    assert_scored(&submit(&mut b, &body), &v3, &ev, "s1");
    no_panics(&a);
    no_panics(&b);
}
