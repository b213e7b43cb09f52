//! The built gate module in the wasmtime harness. Needs the module first:
//! `cargo build -p kakeya-gate --target wasm32-wasip1 --profile wasm` (or `cargo xtask test`).

use kakeya_core::canonical::signing_payload;
use kakeya_core::ids::derive_pcs_id;
use kakeya_core::signature::{ed25519_public_b64, sign_ed25519, sign_hmac};
use kakeya_core::Pcs;
use kakeya_wasm_tests::fixtures::{to_json, GOLDEN, KEY};
use kakeya_wasm_tests::{load_gate_wasm, Harness, LogLevel, Outcome, Request};
use serde_json::{json, Value};
use std::sync::OnceLock;

const SUBMIT: &str = "/v1/pcs/submit";
const HMAC_CONFIG: &str = r#"{"keyring":{"global":{"alg":"hmac","keys":["testsecret"]}}}"#;
const SEED: [u8; 32] = [
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25,
    26, 27, 28, 29, 30, 31,
];

fn wasm() -> &'static [u8] {
    static WASM: OnceLock<Vec<u8>> = OnceLock::new();
    WASM.get_or_init(|| match load_gate_wasm() {
        Ok(w) => w,
        Err(e) => panic!("{e}"),
    })
}

fn harness(config: &str) -> Harness {
    let h = Harness::new(wasm(), config.as_bytes()).unwrap();
    assert!(h.configured(), "configuration refused: {:?}", h.logs());
    h
}

fn submit(h: &mut Harness, headers: &[(&str, &str)], body: &[u8]) -> Outcome {
    h.request("POST", SUBMIT, headers, body).unwrap()
}

/// As [`submit`], and a forwarded request is answered `status` by the "control plane"
/// (`response` headers besides `:status`).
fn submit_answered(
    h: &mut Harness,
    headers: &[(&str, &str)],
    body: &[u8],
    status: u16,
    response: &[(&str, &str)],
) -> Outcome {
    let mut r = Request::new("POST", SUBMIT)
        .body(body)
        .response(status, response);
    for (k, v) in headers {
        r = r.header(k, v);
    }
    h.send(&r).unwrap()
}

/// Asserts a forwarded request and returns its x-kakeya-result.
fn forwarded_result(out: &Outcome) -> String {
    assert!(out.is_forwarded(), "expected forwarded, got {out:?}");
    out.header("x-kakeya-result")
        .expect("x-kakeya-result")
        .to_string()
}

fn local(out: &Outcome, status: u32, code: &str) -> Value {
    assert_eq!(out.status(), Some(status), "{out:?}");
    assert_eq!(out.header("content-type"), Some("application/json"));
    let v = out.json().unwrap();
    assert_eq!(v["code"], code, "{v}");
    assert!(v["error"].is_string(), "{v}");
    v
}

/// A PCS with the given signals, a correct pcs_id and an HMAC (`testsecret`) signature.
#[allow(clippy::too_many_arguments)]
fn pcs(
    merkle: &str,
    epoch: i64,
    shard: &str,
    scales: &[i64],
    n_j: &[(i64, i64)],
    d_hat: f64,
    coh: f64,
    r: f64,
    regime: &str,
    budget: f64,
) -> Pcs {
    let mut p = Pcs {
        schema: "fractal-lba-kakeya".into(),
        version: "0.1".into(),
        shard_id: shard.into(),
        epoch,
        merkle_root: merkle.into(),
        scales: scales.to_vec(),
        n_j: n_j.iter().map(|(s, n)| (s.to_string(), *n)).collect(),
        coh_star: coh,
        d_hat,
        r,
        regime: regime.into(),
        budget,
        ..Pcs::default()
    };
    p.pcs_id = derive_pcs_id(&p.merkle_root, p.epoch, &p.shard_id);
    sign(p)
}

fn sign(mut p: Pcs) -> Pcs {
    p.sig = sign_hmac(signing_payload(&p).as_bytes(), KEY.as_bytes());
    p
}

fn body(p: &Pcs) -> Vec<u8> {
    to_json(p).to_string().into_bytes()
}

/// (scales, N_j pairs, expected D̂ text or error message)
type DVector = (&'static [i64], &'static [(i64, i64)], &'static str);

fn result_json(
    accepted: bool,
    d: Option<&str>,
    b: Option<&str>,
    reason: Option<&str>,
    escalated: bool,
) -> String {
    let mut s = format!("{{\"accepted\":{accepted}");
    if let Some(d) = d {
        s.push_str(&format!(",\"recomputed_D_hat\":{d}"));
    }
    if let Some(b) = b {
        s.push_str(&format!(",\"recomputed_budget\":{b}"));
    }
    if let Some(r) = reason {
        // Go's encoder escapes <, > and & (spec §1.2); the filter's header JSON does the same.
        let quoted = serde_json::to_string(r)
            .unwrap()
            .replace('<', "\\u003c")
            .replace('>', "\\u003e")
            .replace('&', "\\u0026");
        s.push_str(&format!(",\"reason\":{quoted}"));
    }
    s.push_str(&format!(",\"escalated\":{escalated}}}"));
    s
}

#[test]
fn golden_vectors_are_forwarded_with_their_result() {
    let mut h = harness(HMAC_CONFIG);
    let expected = [
        r#"{"accepted":true,"recomputed_D_hat":0.528320834,"recomputed_budget":0.317807017,"escalated":false}"#,
        r#"{"accepted":true,"recomputed_D_hat":1,"recomputed_budget":0.349073359,"escalated":false}"#,
    ];
    for (golden, want) in GOLDEN.iter().zip(expected) {
        let out = submit_answered(
            &mut h,
            &[("content-type", "application/json")],
            golden.as_bytes(),
            200,
            &[],
        );
        assert_eq!(forwarded_result(&out), want);
        assert_eq!(out.header("x-kakeya-cacheable"), Some("true"));
        assert_eq!(out.header("x-kakeya-tenant"), Some("default"));
        assert!(out
            .header("x-kakeya-verify-ns")
            .unwrap()
            .parse::<u64>()
            .is_ok());
        assert_eq!(
            out.body(),
            golden.as_bytes(),
            "the body is forwarded unchanged"
        );
        assert_eq!(out.header("content-type"), Some("application/json"));
    }
    assert_eq!(
        h.metric("kakeya_gate.tenant.default.requests_total"),
        Some(2)
    );
    assert_eq!(
        h.metric("kakeya_gate.tenant.default.forwarded_total"),
        Some(2)
    );
    assert_eq!(
        h.metric("kakeya_gate.tenant.default.accepted_total"),
        Some(2)
    );
    assert_eq!(
        h.metric("kakeya_gate.tenant.default.escalated_total"),
        Some(0)
    );
    assert!(
        h.logs().iter().all(|l| l.level < LogLevel::Error),
        "{:?}",
        h.logs()
    );
}

#[test]
fn verify_ns_comes_from_the_host_clock() {
    let mut h = harness(HMAC_CONFIG);
    h.set_clock(kakeya_wasm_tests::Clock::Fixed(1_700_000_000_000_000_000));
    let out = submit(&mut h, &[], GOLDEN[0].as_bytes());
    assert_eq!(out.header("x-kakeya-verify-ns"), Some("0"));
}

/// The cost tracer forwards the filter's own time (host clock) and its micro-vote calls (none
/// without a policy); a client's copies are stripped; `"cost_tracer": false` turns it off.
#[test]
fn the_cost_tracer_forwards_filter_time_and_model_calls() {
    let mut h = harness(HMAC_CONFIG);
    let forged = [("x-kakeya-filter-ns", "1"), ("x-kakeya-model-calls", "99")];
    let out = submit(&mut h, &forged, GOLDEN[0].as_bytes());
    assert!(out.is_forwarded(), "{out:?}");
    let ns: u64 = out.header("x-kakeya-filter-ns").unwrap().parse().unwrap();
    assert!(ns > 0, "the real clock moved during the body stage");
    assert_eq!(out.header("x-kakeya-model-calls"), Some("0"));
    assert_eq!(out.header_all("x-kakeya-model-calls").len(), 1);
    h.set_clock(kakeya_wasm_tests::Clock::Fixed(1_700_000_000_000_000_000));
    let out = submit(&mut h, &[], GOLDEN[0].as_bytes());
    assert_eq!(out.header("x-kakeya-filter-ns"), Some("0"));

    let off = HMAC_CONFIG.replace("}}}", "}},\"cost_tracer\":false}");
    let mut h = harness(&off);
    let out = submit(&mut h, &forged, GOLDEN[0].as_bytes());
    assert!(out.is_forwarded(), "{out:?}");
    assert_eq!(out.header("x-kakeya-filter-ns"), None);
    assert_eq!(out.header("x-kakeya-model-calls"), None);
}

/// What the tracer costs in hostcalls: one clock read (its start shares the pipeline's first
/// read) and at most its two header writes per request (fewer if header writes are batched),
/// nothing else.
#[test]
fn the_cost_tracer_adds_one_clock_read_and_two_header_writes() {
    let wasm = load_gate_wasm().unwrap();
    let added = kakeya_wasm_tests::bench::tracer_hostcalls(&wasm).unwrap();
    let clock = "proxy_get_current_time_nanoseconds";
    assert_eq!(added.get(clock), Some(&1), "{added:?}");
    let writes: i64 = added
        .iter()
        .filter(|(k, _)| *k != clock)
        .map(|(_, v)| v)
        .sum();
    assert!(
        added
            .keys()
            .all(|k| k == clock || k == "proxy_replace_header_map_value"),
        "{added:?}"
    );
    assert!((0..=2).contains(&writes), "{added:?}");
}

/// Spec §12.4: every D̂ recomputation vector, as a signed PCS with a correct pcs_id whose claim
/// equals the recomputed value (coh★ 0.5, r 0.5, so the budget is 0.35 below D0 = 2.2).
#[test]
fn d_hat_vectors_of_spec_12_4() {
    let mut h = harness(HMAC_CONFIG);
    let ok: [DVector; 13] = [
        (
            &[2, 4, 8, 16, 32],
            &[(2, 3), (4, 5), (8, 9), (16, 17), (32, 31)],
            "0.866733469",
        ),
        (
            &[32, 2, 8, 4, 16],
            &[(2, 3), (4, 5), (8, 9), (16, 17), (32, 31)],
            "0.866733469",
        ),
        (&[2, 4, 8], &[(2, 3), (4, 5), (8, 9)], "0.79248125"),
        (&[2, 4], &[(2, 3), (4, 7)], "1.222392421"),
        (&[2, 4, 8], &[(2, 3), (4, 7), (8, 15)], "1.160964047"),
        (&[2, 4, 8, 16], &[(2, 3), (4, 6), (8, 12), (16, 24)], "1"),
        (
            &[2, 4, 8, 16, 32],
            &[(2, 4), (4, 8), (8, 16), (16, 32), (32, 64)],
            "1",
        ),
        (&[2, 4, 8, 16], &[(2, 5), (4, 10), (8, 20), (16, 40)], "1"),
        (
            &[2, 4, 8, 16],
            &[(2, 10), (4, 15), (8, 20), (16, 25)],
            "0.440642698",
        ),
        (&[2, 4, 8, 16], &[(2, 10), (4, 10), (8, 10), (16, 10)], "0"),
        (&[2, 4, 8, 16], &[(2, 4), (4, 16), (8, 64), (16, 256)], "2"),
        (
            &[2, 4, 8, 16],
            &[(2, 40), (4, 20), (8, 10), (16, 5)],
            "-0.999999999",
        ),
        (&[2, 2, 4], &[(2, 3), (4, 5)], "0.736965594"),
    ];
    for (i, (scales, n_j, d)) in ok.iter().enumerate() {
        let d_hat: f64 = d.parse().unwrap();
        let p = pcs(
            "abc123",
            1,
            &format!("shard-{i}"),
            scales,
            n_j,
            d_hat,
            0.5,
            0.5,
            "mixed",
            0.35,
        );
        let out = submit(&mut h, &[], &body(&p));
        assert_eq!(
            forwarded_result(&out),
            result_json(true, Some(d), Some("0.35"), None, false),
            "vector {i}"
        );
        assert_eq!(out.header("x-kakeya-cacheable"), Some("true"));
    }
    // D̂ = 3 lies above D0 and is non_sticky: budget 0.35 + 0.5·0.8 = 0.75.
    let p = pcs(
        "abc123",
        1,
        "shard-3",
        &[1, 2, 4, 8],
        &[(1, 1), (2, 8), (4, 64), (8, 512)],
        3.0,
        0.5,
        0.5,
        "non_sticky",
        0.75,
    );
    assert_eq!(
        forwarded_result(&submit(&mut h, &[], &body(&p))),
        result_json(true, Some("3"), Some("0.75"), None, false)
    );

    let errors: [DVector; 4] = [
        (
            &[2, 4, 8],
            &[(2, 3), (4, 6)],
            "missing N_j entry for scale 8",
        ),
        (
            &[2, 4],
            &[(2, 0), (4, 5)],
            "N_j must be positive for scale 2",
        ),
        (&[2], &[(2, 3)], "need at least 2 scales for regression"),
        (&[2, 2], &[(2, 3)], "no valid slopes computed"),
    ];
    for (scales, n_j, msg) in errors {
        let p = pcs(
            "abc123",
            1,
            "shard-err",
            scales,
            n_j,
            1.0,
            0.5,
            0.5,
            "mixed",
            0.35,
        );
        let out = submit(&mut h, &[], &body(&p));
        let reason = format!("D_hat recomputation failed: {msg}");
        assert_eq!(
            forwarded_result(&out),
            result_json(false, None, None, Some(&reason), true)
        );
    }
}

/// Spec §12.6: end-to-end Verify outcomes, through the filter.
#[test]
fn end_to_end_outcomes_of_spec_12_6() {
    let mut h = harness(HMAC_CONFIG);
    let unit = |budget| {
        pcs(
            "abc123",
            1,
            "shard-001",
            &[2, 4, 8],
            &[(2, 3), (4, 5), (8, 9)],
            0.79,
            0.75,
            0.50,
            "sticky",
            budget,
        )
    };
    let out = submit_answered(&mut h, &[], &body(&unit(0.35)), 202, &[]);
    assert_eq!(
        forwarded_result(&out),
        r#"{"accepted":true,"recomputed_D_hat":0.79248125,"recomputed_budget":0.4,"reason":"budget deviation: claimed=0.3500, recomputed=0.4000","escalated":true}"#
    );
    let out = submit_answered(&mut h, &[], &body(&unit(0.40)), 200, &[]);
    assert_eq!(
        forwarded_result(&out),
        r#"{"accepted":true,"recomputed_D_hat":0.79248125,"recomputed_budget":0.4,"escalated":false}"#
    );
    assert_eq!(
        h.metric("kakeya_gate.tenant.default.escalated_total"),
        Some(1)
    );
    assert_eq!(
        h.metric("kakeya_gate.tenant.default.accepted_total"),
        Some(1)
    );

    let five: &[i64] = &[2, 4, 8, 16, 32];
    let counts: &[(i64, i64)] = &[(2, 3), (4, 5), (8, 9), (16, 17), (32, 31)];
    let merkle = "a".repeat(64);
    // OpenAPI "sticky" example as written: a 32-hex pcs_id (signed as such).
    let mut openapi = pcs(
        &merkle,
        1,
        "shard-001",
        five,
        counts,
        1.35,
        0.85,
        0.65,
        "sticky",
        0.375,
    );
    openapi.pcs_id = "a7b3c8d9e0f1234567890abcdef12345".into();
    let openapi = sign(openapi);
    let out = submit(&mut h, &[], &body(&openapi));
    let reason = format!(
        "validation failed: pcs_id mismatch: expected {}, got a7b3c8d9e0f1234567890abcdef12345",
        derive_pcs_id(&merkle, 1, "shard-001")
    );
    assert_eq!(
        forwarded_result(&out),
        result_json(false, None, None, Some(&reason), true)
    );
    assert_eq!(
        out.header("x-kakeya-cacheable"),
        Some("false"),
        "a wrong pcs_id is never cacheable"
    );
    // ... with a correct pcs_id
    let openapi = pcs(
        &merkle,
        1,
        "shard-001",
        five,
        counts,
        1.35,
        0.85,
        0.65,
        "sticky",
        0.375,
    );
    let out = submit(&mut h, &[], &body(&openapi));
    let reason =
        "D_hat out of tolerance: claimed=1.3500, recomputed=0.8667, diff=0.4833 > tol=0.1500";
    assert_eq!(
        forwarded_result(&out),
        result_json(false, Some("0.866733469"), None, Some(reason), true)
    );
    // CLAUDE.md §1.1 example and its variants
    let claude = |d: f64, coh: f64, budget: f64| {
        pcs(
            "abc123",
            1,
            "shard-001",
            five,
            counts,
            d,
            coh,
            0.87,
            "sticky",
            budget,
        )
    };
    let out = submit(&mut h, &[], &body(&claude(1.41, 0.73, 0.42)));
    let reason =
        "D_hat out of tolerance: claimed=1.4100, recomputed=0.8667, diff=0.5433 > tol=0.1500";
    assert_eq!(
        forwarded_result(&out),
        result_json(false, Some("0.866733469"), None, Some(reason), true)
    );
    let out = submit(&mut h, &[], &body(&claude(0.857, 0.73, 0.42)));
    let reason = "budget deviation: claimed=0.4200, recomputed=0.2850";
    assert_eq!(
        forwarded_result(&out),
        result_json(true, Some("0.866733469"), Some("0.285"), Some(reason), true)
    );
    let out = submit(&mut h, &[], &body(&claude(0.857, 0.73, 0.285)));
    assert_eq!(
        forwarded_result(&out),
        result_json(true, Some("0.866733469"), Some("0.285"), None, false)
    );
    let out = submit(&mut h, &[], &body(&claude(0.857, 1.06, 0.285)));
    let reason = "coh_star out of bounds: 1.0600 not in [0, 1.0500]";
    assert_eq!(
        forwarded_result(&out),
        result_json(false, Some("0.866733469"), None, Some(reason), true)
    );
    let out = submit(&mut h, &[], &body(&claude(0.857, 1.05, 0.349)));
    assert_eq!(
        forwarded_result(&out),
        result_json(true, Some("0.866733469"), Some("0.349"), None, false)
    );
}

#[test]
fn tampered_or_missing_signatures_are_401_and_never_forwarded() {
    let mut h = harness(HMAC_CONFIG);
    let golden: Value = serde_json::from_str(GOLDEN[0]).unwrap();
    let cases: Vec<(&str, Value)> = vec![
        ("D_hat", json!(0.6)),
        ("merkle_root", json!("f".repeat(64))),
        ("budget", json!(0.3)),
        ("coh_star", json!(0.07)),
        ("r", json!(0.3)),
        ("epoch", json!(2)),
        ("shard_id", json!("test-shard-002")),
        ("pcs_id", json!("0".repeat(64))),
        ("sig", json!("")),
        ("sig", json!("not base64!")),
        ("sig", json!(sign_hmac(b"something else", KEY.as_bytes()))),
    ];
    for (field, value) in cases {
        let mut v = golden.clone();
        v[field] = value;
        let out = submit(&mut h, &[], v.to_string().as_bytes());
        let e = local(&out, 401, "bad_signature");
        assert!(
            e["error"]
                .as_str()
                .unwrap()
                .starts_with("signature verification failed: "),
            "{e}"
        );
        assert!(out.header("x-kakeya-result").is_none());
    }
    let out = submit(
        &mut h,
        &[],
        golden
            .to_string()
            .replace("\"sig\":", "\"unused\":")
            .as_bytes(),
    );
    assert_eq!(
        local(&out, 401, "bad_signature")["error"],
        "signature verification failed: signature missing"
    );
    // Unsigned fields may change (they are judged, not authenticated).
    let mut v = golden.clone();
    v["regime"] = json!("sticky");
    let out = submit(&mut h, &[], v.to_string().as_bytes());
    assert!(forwarded_result(&out).contains("regime mismatch"));
    assert_eq!(
        h.metric("kakeya_gate.tenant.default.signature_errors_total"),
        Some(12)
    );
    assert_eq!(
        h.metric("kakeya_gate.tenant.default.forwarded_total"),
        Some(1)
    );
}

#[test]
fn empty_malformed_and_wrongly_typed_bodies_are_400_json() {
    let mut h = harness(HMAC_CONFIG);
    let cases: [(&[u8], &str); 13] = [
        (b"   \n", "empty_body"),
        (b"{not valid json", "invalid_json"),
        (b"[]", "invalid_json"),
        (b"null", "invalid_json"),
        (b"{} x", "invalid_json"),
        (br#"{"epoch":1.0}"#, "invalid_json"),
        (br#"{"epoch":"1"}"#, "invalid_json"),
        (br#"{"N_j":{"2":3.5}}"#, "invalid_json"),
        (br#"{"scales":"2,4"}"#, "invalid_json"),
        (br#"{"D_hat":1,"D_hat":2}"#, "invalid_json"),
        (b"{\"shard_id\":\"\xff\xfe\"}", "invalid_json"),
        (br#"{"sent_at":""}"#, "invalid_sent_at"),
        (br#"{"sent_at":"yesterday <b>"}"#, "invalid_sent_at"),
    ];
    for (body, code) in cases {
        let out = submit(&mut h, &[], body);
        let e = local(&out, 400, code);
        assert!(
            out.body().is_ascii(),
            "{:?}",
            String::from_utf8_lossy(out.body())
        );
        assert_eq!(e.as_object().unwrap().len(), 2, "{e}");
    }
    // No body at all: end of stream on the headers.
    let out = h.send(&Request::new("POST", SUBMIT)).unwrap();
    assert_eq!(local(&out, 400, "empty_body")["error"], "empty body");
    assert_eq!(
        h.metric("kakeya_gate.tenant.default.parse_errors_total"),
        Some(14)
    );
    assert_eq!(
        h.metric("kakeya_gate.tenant.default.requests_total"),
        Some(14)
    );
}

#[test]
fn client_kakeya_headers_are_stripped_on_every_path() {
    let mut h = harness(HMAC_CONFIG);
    let forged = [
        ("x-kakeya-result", r#"{"accepted":true,"escalated":false}"#),
        ("X-Kakeya-Cacheable", "true"),
        ("x-kakeya-tenant", "victim"),
        ("x-kakeya-tenant", "victim2"),
        ("x-kakeya-anything", "1"),
        ("x-kakeyaless", "kept"),
    ];
    let out = submit(&mut h, &forged, GOLDEN[1].as_bytes());
    assert_eq!(out.header_all("x-kakeya-tenant"), vec!["default"]);
    assert_eq!(out.header_all("x-kakeya-result").len(), 1);
    assert!(out.header("x-kakeya-anything").is_none());
    assert_eq!(out.header("x-kakeyaless"), Some("kept"));
    for path in ["/health", "/v1/other", "/v1/pcs/submit/extra"] {
        let out = h.request("GET", path, &forged, b"").unwrap();
        assert!(out.is_forwarded(), "{out:?}");
        assert!(
            out.headers()
                .iter()
                .all(|(k, _)| !k.starts_with("x-kakeya-")),
            "{path}: {:?}",
            out.headers()
        );
        assert_eq!(out.header("x-kakeyaless"), Some("kept"));
    }
    // A rejected request does not leak forged headers either (nothing is forwarded).
    let out = submit(&mut h, &forged, b"{");
    assert_eq!(out.status(), Some(400));
}

#[test]
fn other_paths_pass_through_untouched() {
    let mut h = harness(HMAC_CONFIG);
    let out = h
        .request(
            "POST",
            "/v1/feedback",
            &[("content-type", "application/json")],
            b"{\"x\":1}",
        )
        .unwrap();
    assert_eq!(out, {
        let Outcome::Forwarded { headers, .. } = &out else {
            panic!("{out:?}")
        };
        Outcome::Forwarded {
            headers: headers.clone(),
            body: b"{\"x\":1}".to_vec(),
        }
    });
    assert_eq!(
        h.metric("kakeya_gate.tenant.default.requests_total"),
        Some(0)
    );
}

/// Upstream routes when the host has no `clear_route_cache` (this harness answers NotFound):
/// never the canary, never a trap; the request goes to stable, counted, unless the client sent
/// its own `x-kakeya-upstream` (a route cached for it could be the canary one): 503 then. Real
/// Envoy, where the call succeeds: e2e_upstream_canary.
#[test]
fn upstream_routes_without_clear_route_cache_go_to_stable() {
    let config = r#"{"keyring":{"global":{"alg":"hmac","keys":["testsecret"]}},
        "upstreams":[{"name":"agent","prefix":"/agent/"}]}"#;
    let mut h = harness(config);
    let out = h
        .request("GET", "/agent/run", &[("x-tenant-id", "acme")], b"")
        .unwrap();
    assert!(out.is_forwarded(), "{out:?}");
    assert_eq!(out.header("x-kakeya-upstream"), None);
    assert_eq!(h.metric("kakeya_gate.upstream_route_errors_total"), Some(1));
    assert_eq!(h.metric("kakeya_gate.upstream_stable_total"), Some(1));
    assert_eq!(h.metric("kakeya_gate.upstream_canary_total"), Some(0));
    let out = h
        .request("GET", "/agent/run", &[("x-kakeya-upstream", "canary")], b"")
        .unwrap();
    assert_unavailable(&h, &out, "clearing the route cache");
    // Another path is not an upstream route: untouched.
    let out = h.request("GET", "/other", &[], b"").unwrap();
    assert!(out.is_forwarded() && out.header("x-kakeya-upstream").is_none());
    assert_eq!(h.metric("kakeya_gate.upstream_route_errors_total"), Some(2));
}

#[test]
fn non_post_is_405_with_allow() {
    let mut h = harness(HMAC_CONFIG);
    for method in ["GET", "PUT", "DELETE", "HEAD", "OPTIONS", "post"] {
        let out = h
            .request(method, "/v1/pcs/submit?debug=1", &[], b"")
            .unwrap();
        assert_eq!(out.status(), Some(405), "{method}");
        assert_eq!(out.header("allow"), Some("POST"));
        assert_eq!(
            out.body(),
            br#"{"error":"method not allowed: use POST","code":"method_not_allowed"}"#
        );
    }
    assert_eq!(
        h.metric("kakeya_gate.tenant.default.method_not_allowed_total"),
        Some(6)
    );
    // The query string is ignored for POST too.
    let out = submit(&mut h, &[], GOLDEN[0].as_bytes());
    assert!(out.is_forwarded());
    let out = h
        .request("POST", "/v1/pcs/submit?x=y", &[], GOLDEN[0].as_bytes())
        .unwrap();
    assert!(out.is_forwarded());
}

#[test]
fn a_body_that_is_not_json_is_415() {
    let mut h = harness(HMAC_CONFIG);
    for ct in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/xml",
    ] {
        let out = submit(&mut h, &[("content-type", ct)], GOLDEN[0].as_bytes());
        local(&out, 415, "unsupported_media_type");
    }
    // No content type, or JSON with parameters in any case: forwarded.
    for extra in [
        &[][..],
        &[("content-type", "Application/Json; charset=utf-8")][..],
    ] {
        assert!(submit(&mut h, extra, GOLDEN[0].as_bytes()).is_forwarded());
    }
    assert_eq!(
        h.metric("kakeya_gate.tenant.default.unsupported_media_type_total"),
        Some(3)
    );
    assert_eq!(
        h.metric("kakeya_gate.tenant.default.forwarded_total"),
        Some(2)
    );
}

#[test]
fn outcomes_are_counted_from_the_answer_the_client_got() {
    let mut h = harness(HMAC_CONFIG);
    let g = GOLDEN[0].as_bytes();
    let m = |h: &Harness, c: &str| h.metric(&format!("kakeya_gate.tenant.default.{c}_total"));
    // Forwarded but not (yet) answered: no outcome.
    assert!(submit(&mut h, &[], g).is_forwarded());
    assert_eq!((m(&h, "accepted"), m(&h, "escalated")), (Some(0), Some(0)));
    submit_answered(&mut h, &[], g, 200, &[("x-kakeya-dedup", "miss")]);
    // The gate would accept, but dedup returns a stored escalation: counted as escalated.
    submit_answered(&mut h, &[], g, 202, &[("x-kakeya-dedup", "hit")]);
    assert_eq!((m(&h, "accepted"), m(&h, "escalated")), (Some(1), Some(1)));
    // The control plane is down (Envoy's 503) or slow (504): unavailable, no outcome.
    submit_answered(&mut h, &[], g, 503, &[]);
    submit_answered(&mut h, &[], g, 504, &[]);
    assert_eq!(h.metric(UNAVAILABLE), Some(2));
    assert_eq!((m(&h, "accepted"), m(&h, "escalated")), (Some(1), Some(1)));
    // Local replies of the gate are counted once, at the reply.
    let out = submit_answered(&mut h, &[], b"{", 400, &[]);
    local(&out, 400, "invalid_json");
    assert_eq!(m(&h, "parse_errors"), Some(1));
    assert_eq!(m(&h, "forwarded"), Some(5));
    no_errors(&h);
}

#[test]
fn keyring_from_the_vm_environment() {
    use kakeya_wasm_tests::Options;
    let cfg = br#"{"keyring_env":"KAKEYA_GATE_KEYRING"}"#;
    let with_env = |value: &str| {
        let opts = Options {
            env: vec![
                ("OTHER".into(), "x".into()),
                ("KAKEYA_GATE_KEYRING".into(), value.into()),
            ],
            ..Options::default()
        };
        Harness::with_options(wasm(), cfg, opts).unwrap()
    };
    let mut h = with_env(r#"{"global":{"alg":"hmac","keys":["testsecret"]}}"#);
    assert!(h.configured(), "{:?}", h.logs());
    let golden = submit(&mut h, &[], GOLDEN[0].as_bytes());
    assert!(golden.is_forwarded(), "{golden:?}");
    let mut forged: Value = serde_json::from_str(GOLDEN[0]).unwrap();
    forged["D_hat"] = json!(0.6);
    local(
        &submit(&mut h, &[], forged.to_string().as_bytes()),
        401,
        "bad_signature",
    );
    // Missing or malformed: the configuration is refused, and the log does not quote it.
    let h = Harness::new(wasm(), cfg).unwrap();
    assert!(!h.configured());
    let h = with_env(r#"{"global":{"alg":"hmac","keys":"testsecret"}}"#);
    assert!(!h.configured());
    assert!(
        h.logs().iter().all(|l| !l.message.contains("testsecret")),
        "{:?}",
        h.logs()
    );
}

fn no_errors(h: &Harness) {
    assert!(
        h.logs().iter().all(|l| l.level < LogLevel::Warn),
        "{:?}",
        h.logs()
    );
}

fn multi_tenant_config() -> String {
    json!({"keyring": {"multi_tenant": true, "tenants": {
        "acme": {"alg": "hmac", "keys": ["testsecret"]},
        "edge": {"alg": "ed25519", "keys": [ed25519_public_b64(&SEED)]},
    }}})
    .to_string()
}

#[test]
fn multi_tenant_keyring() {
    let mut h = harness(&multi_tenant_config());
    let out = submit(&mut h, &[("x-tenant-id", "acme")], GOLDEN[0].as_bytes());
    assert_eq!(out.header("x-kakeya-tenant"), Some("acme"));
    assert!(forwarded_result(&out).starts_with(r#"{"accepted":true"#));
    let out = submit(&mut h, &[("x-tenant-id", "globex")], GOLDEN[0].as_bytes());
    assert_eq!(
        local(&out, 400, "unknown_tenant")["error"],
        r#"unknown tenant "globex""#
    );
    // No header = tenant "default", which is not registered here.
    let out = submit(&mut h, &[], GOLDEN[0].as_bytes());
    local(&out, 400, "unknown_tenant");
    for bad in ["a b", "ac/me", &"x".repeat(65), "tënant"] {
        let out = submit(&mut h, &[("x-tenant-id", bad)], GOLDEN[0].as_bytes());
        local(&out, 400, "invalid_tenant");
    }
    let out = submit(
        &mut h,
        &[("x-tenant-id", "acme"), ("x-tenant-id", "edge")],
        GOLDEN[0].as_bytes(),
    );
    local(&out, 400, "invalid_tenant");
    // The acme key does not sign for edge.
    let out = submit(&mut h, &[("x-tenant-id", "edge")], GOLDEN[0].as_bytes());
    local(&out, 401, "bad_signature");
    assert_eq!(h.metric("kakeya_gate.tenant.acme.forwarded_total"), Some(1));
    assert_eq!(
        h.metric("kakeya_gate.tenant.edge.signature_errors_total"),
        Some(1)
    );
    assert_eq!(
        h.metric("kakeya_gate.tenant.other.unknown_tenant_total"),
        Some(7)
    );
    assert!(
        h.metrics().keys().all(|k| !k.contains("globex")),
        "unknown tenants get no series of their own"
    );
}

#[test]
fn ed25519_tenant() {
    let mut h = harness(&multi_tenant_config());
    let expected = [
        "YDbe81WZAVDIv6klWR8QtDAu4tYwBAix8fFppjAzOfASRss2q4DdWVC6UT54Q4eXs37HOiJJRHzYk3FyXVZlAg==",
        "ULhPXPI2/nuh4s0VCG8R1tzqFxqitgzGvqRuIJQykGvruev/QIzYzFoNXO3Vb51b53hfIS9uBApb/SPrl5EODQ==",
    ];
    for (golden, sig) in GOLDEN.iter().zip(expected) {
        let mut v: Value = serde_json::from_str(golden).unwrap();
        let p = kakeya_core::parse(golden.as_bytes()).unwrap();
        assert_eq!(
            sign_ed25519(signing_payload(&p).as_bytes(), &SEED),
            sig,
            "spec §12.1 vector"
        );
        v["sig"] = json!(sig);
        let out = submit_answered(
            &mut h,
            &[("x-tenant-id", "edge")],
            v.to_string().as_bytes(),
            200,
            &[],
        );
        assert_eq!(out.header("x-kakeya-tenant"), Some("edge"));
        assert!(
            forwarded_result(&out).starts_with(r#"{"accepted":true"#),
            "{out:?}"
        );
    }
    // Signatures swapped between the two cases fail.
    let mut v: Value = serde_json::from_str(GOLDEN[0]).unwrap();
    v["sig"] = json!(expected[1]);
    let out = submit(&mut h, &[("x-tenant-id", "edge")], v.to_string().as_bytes());
    local(&out, 401, "bad_signature");
    assert_eq!(h.metric("kakeya_gate.tenant.edge.accepted_total"), Some(2));
}

#[test]
fn invalid_plugin_configuration_is_refused() {
    for bad in [
        "",
        "not json",
        r#"{"keyring":{"global":{"alg":"rsa","keys":["k"]}}}"#,
        r#"{"keyring":{"global":{"alg":"hmac","keys":[]}}}"#,
        r#"{"keyring":{"global":{"alg":"hmac","keys":[""]}}}"#,
        r#"{"keyring":{"global":{"alg":"ed25519","keys":["AAAA"]}}}"#,
        r#"{"keyring":{"multi_tenant":true,"tenants":{"acme":{"alg":"hmac"}}}}"#,
        r#"{"verify":{"tol_D":-1}}"#,
        r#"{"keyring":{},"unknown":1}"#,
    ] {
        let h = Harness::new(wasm(), bad.as_bytes()).unwrap();
        assert!(h.vm_started());
        assert!(!h.configured(), "{bad:?} must be refused");
        let errors: Vec<_> = h
            .logs()
            .iter()
            .filter(|l| l.level == LogLevel::Error)
            .collect();
        assert_eq!(errors.len(), 1, "{bad:?}: {:?}", h.logs());
        assert!(
            errors[0].message.contains("invalid plugin configuration"),
            "{}",
            errors[0].message
        );
    }
    // `{}` is valid but checks no signatures, and says so.
    let h = Harness::new(wasm(), b"{}").unwrap();
    assert!(h.configured());
    assert!(h
        .logs()
        .iter()
        .any(|l| l.level == LogLevel::Warn && l.message.contains("NOT checked")));
}

#[test]
fn reconfiguration_uses_a_new_root_and_bad_updates_keep_the_old_one() {
    let mut h = harness(HMAC_CONFIG);
    assert!(!h.reconfigure(b"{").unwrap());
    assert!(submit(&mut h, &[], GOLDEN[0].as_bytes()).is_forwarded());
    assert!(h
        .reconfigure(br#"{"keyring":{"global":{"alg":"hmac","keys":["rotated"]}}}"#)
        .unwrap());
    assert_eq!(
        submit(&mut h, &[], GOLDEN[0].as_bytes()).status(),
        Some(401)
    );
}

#[test]
fn chunked_bodies_and_trailers() {
    let mut h = harness(HMAC_CONFIG);
    let g = GOLDEN[0].as_bytes();
    let chunks: Vec<Vec<u8>> = g.chunks(100).map(<[u8]>::to_vec).collect();
    assert!(chunks.len() > 3);
    let out = h
        .send(&Request::new("POST", SUBMIT).chunks(chunks.clone()))
        .unwrap();
    assert!(forwarded_result(&out).starts_with(r#"{"accepted":true"#));
    assert_eq!(out.body(), g);
    let out = h
        .send(
            &Request::new("POST", SUBMIT)
                .chunks(chunks)
                .trailer("x-checksum", "abc"),
        )
        .unwrap();
    assert!(forwarded_result(&out).starts_with(r#"{"accepted":true"#));
    assert_eq!(out.body(), g);
    let out = h
        .send(
            &Request::new("POST", SUBMIT).chunks(vec![b"{\"epoch\":".to_vec(), b"\"x\"}".to_vec()]),
        )
        .unwrap();
    local(&out, 400, "invalid_json");
}

#[test]
fn single_tenant_metrics_are_bounded() {
    let mut h = harness(HMAC_CONFIG);
    for i in 0..20 {
        let tenant = format!("t{i}");
        let out = submit(&mut h, &[("x-tenant-id", &tenant)], GOLDEN[0].as_bytes());
        // Single-tenant mode ignores X-Tenant-Id: everything is `default`.
        assert_eq!(out.header("x-kakeya-tenant"), Some("default"));
    }
    assert_eq!(
        h.metric("kakeya_gate.tenant.default.forwarded_total"),
        Some(20)
    );
    assert_eq!(
        h.metrics()
            .keys()
            .filter(|k| k.starts_with("kakeya_gate.tenant."))
            .count(),
        // 19 counters per tenant (13 of the verify path, 4 budget actions, 2 anomaly: flagged and
        // blocked) and one per scoring arm (champion, challenger, canary)
        2 * (19 + 3),
        "only default and other: {:?}",
        h.metrics().keys()
    );
}

const UNAVAILABLE: &str = "kakeya_gate.unavailable_total";

/// A failed hostcall answers 503 `gate_unavailable` with `retry-after: 1`, forwards nothing,
/// never traps (the SDK's wrappers would panic) and is counted.
fn assert_unavailable(h: &Harness, out: &Outcome, what: &str) {
    assert!(!out.is_forwarded(), "{what}: forwarded {out:?}");
    local(out, 503, "gate_unavailable");
    assert_eq!(out.header("retry-after"), Some("1"), "{what}: {out:?}");
    assert!(
        h.logs().iter().all(|l| l.level < LogLevel::Critical),
        "{what}: no panics: {:?}",
        h.logs()
    );
    assert!(h.stderr().is_empty(), "{what}: {}", h.stderr());
}

#[test]
fn host_failures_on_the_request_path_fail_closed() {
    use kakeya_wasm_tests::state::status::{INTERNAL_FAILURE, SERIALIZATION_FAILURE};
    let forged = [("x-kakeya-result", r#"{"accepted":true,"escalated":false}"#)];
    let golden = GOLDEN[0].as_bytes();
    let chunks: Vec<Vec<u8>> = golden.chunks(100).map(<[u8]>::to_vec).collect();
    let submit_req = |trailers: bool| {
        let r = Request::new("POST", SUBMIT)
            .header(forged[0].0, forged[0].1)
            .chunks(chunks.clone());
        if trailers {
            r.trailer("x-checksum", "abc")
        } else {
            r
        }
    };
    let other = Request::new("GET", "/health").header(forged[0].0, forged[0].1);
    let cases: Vec<(&str, i32, Vec<Request>)> = vec![
        // Headers unread: the path is unknown, so every request is refused.
        (
            "proxy_get_header_map_pairs",
            INTERNAL_FAILURE,
            vec![
                submit_req(false),
                other.clone(),
                Request::new("GET", "/health"),
            ],
        ),
        // A forged x-kakeya-* header that cannot be stripped must not reach ingest.
        (
            "proxy_remove_header_map_value",
            INTERNAL_FAILURE,
            vec![submit_req(false), other.clone()],
        ),
        (
            "proxy_get_buffer_bytes",
            INTERNAL_FAILURE,
            vec![submit_req(false), submit_req(true)],
        ),
        (
            "proxy_get_buffer_bytes",
            SERIALIZATION_FAILURE,
            vec![submit_req(false)],
        ),
        (
            "proxy_replace_header_map_value",
            INTERNAL_FAILURE,
            vec![submit_req(false), submit_req(true)],
        ),
        (
            "proxy_get_current_time_nanoseconds",
            INTERNAL_FAILURE,
            vec![submit_req(false)],
        ),
    ];
    let mut h = harness(HMAC_CONFIG);
    assert_eq!(h.metric(UNAVAILABLE), Some(0), "defined at configure");
    let mut failures = 0;
    for (hostcall, status, reqs) in cases {
        for req in reqs {
            h.shared().fail_hostcall(hostcall, status);
            let out = h
                .send(&req)
                .unwrap_or_else(|e| panic!("{hostcall}: trap {e:#}"));
            h.shared().clear_faults();
            assert_unavailable(&h, &out, hostcall);
            failures += 1;
            assert_eq!(h.metric(UNAVAILABLE), Some(failures), "{hostcall}");
        }
        // The VM is intact: the next request is judged normally.
        let out = h.send(&submit_req(false)).unwrap();
        assert!(forwarded_result(&out).starts_with(r#"{"accepted":true"#));
        assert_eq!(out.header_all("x-kakeya-result").len(), 1);
    }
    // Without forged headers nothing needs stripping, so other paths still pass.
    h.shared()
        .fail_hostcall("proxy_remove_header_map_value", INTERNAL_FAILURE);
    let out = h.request("GET", "/health", &[], b"").unwrap();
    assert!(out.is_forwarded(), "{out:?}");
    h.shared().clear_faults();
}

#[test]
fn unconfigured_filter_fails_closed_when_headers_cannot_be_read() {
    use kakeya_wasm_tests::state::status::INTERNAL_FAILURE;
    let mut h = Harness::new(wasm(), b"not json").unwrap();
    assert!(!h.configured());
    h.shared()
        .fail_hostcall("proxy_get_header_map_pairs", INTERNAL_FAILURE);
    let out = h.request("GET", "/health", &[], b"").unwrap();
    assert_unavailable(&h, &out, "unconfigured");
    assert_eq!(h.metric(UNAVAILABLE), Some(1));
}

#[test]
fn harness_shared_data_cas() {
    let store = kakeya_wasm_tests::SharedStore::new();
    assert_eq!(store.set("k", b"v1".to_vec(), 0), 0);
    let (_, cas) = store.get("k").unwrap();
    assert_eq!(
        store.set("k", b"v2".to_vec(), cas + 1),
        kakeya_wasm_tests::state::status::CAS_MISMATCH
    );
    assert_eq!(store.set("k", b"v2".to_vec(), cas), 0);
    assert_eq!(store.get("k").unwrap().0, b"v2");
}

/// The real module (not just the native logic) survives mutated golden bodies without a trap:
/// every answer is 400, 401 or a forward.
#[test]
fn mutated_bodies_never_trap_the_module() {
    let mut h = harness(HMAC_CONFIG);
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for i in 0..400 {
        let mut b = GOLDEN[i % 2].as_bytes().to_vec();
        for _ in 0..1 + next() % 3 {
            let at = (next() as usize) % b.len().max(1);
            match next() % 3 {
                0 => b[at] = next() as u8,
                1 => b.insert(at, next() as u8),
                _ => b.truncate(at),
            }
        }
        let out = submit(&mut h, &[], &b);
        match out.status() {
            Some(400) | Some(401) => {}
            None => assert!(out.is_forwarded(), "{out:?}"),
            other => panic!("unexpected {other:?} for {:?}", String::from_utf8_lossy(&b)),
        }
    }
    assert!(
        h.logs().iter().all(|l| l.level < LogLevel::Critical),
        "no panics: {:?}",
        h.logs()
    );
}

/// The benchmark's hostcall census counts what the gate calls: one body read per submission
/// (none on a pass-through path), one header-map read on each path, and one header write per
/// forwarded `x-kakeya-*` header (more when it scores).
#[test]
fn hostcall_census_counts_the_gates_calls() {
    let census = kakeya_wasm_tests::bench::hostcall_census(wasm()).unwrap();
    let get = |i: usize, name: &str| census[i].calls.get(name).copied().unwrap_or(0);
    let (v01, v02, pass) = (0, 1, 2);
    assert_eq!(get(v01, "proxy_get_buffer_bytes"), 1, "{census:?}");
    assert_eq!(get(v02, "proxy_get_buffer_bytes"), 1, "{census:?}");
    assert_eq!(get(pass, "proxy_get_buffer_bytes"), 0, "{census:?}");
    assert!(get(pass, "proxy_get_header_map_pairs") >= 1, "{census:?}");
    assert_eq!(get(pass, "proxy_replace_header_map_value"), 0, "{census:?}");
    let writes_v01 = get(v01, "proxy_replace_header_map_value");
    assert!(writes_v01 >= 4, "{census:?}");
    assert!(
        get(v02, "proxy_replace_header_map_value") > writes_v01,
        "{census:?}"
    );
    assert!(census[v02].total() > census[pass].total(), "{census:?}");
}
