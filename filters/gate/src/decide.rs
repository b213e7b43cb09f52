//! The gate's decision logic, free of hostcalls so it runs (and is tested) natively.
//!
//! A request goes through two stages, mirroring the Envoy callbacks:
//!
//! 1. [`on_headers`] (from `on_http_request_headers`): which client `x-kakeya-*` headers to strip
//!    (every path), whether this is the submit route, the method check (405) and the tenant check
//!    (400 `invalid_tenant` / `unknown_tenant`).
//! 2. [`on_body`] (at end of stream): parse (400) → signature (401) → verify → forward with the
//!    `x-kakeya-*` result headers.
//!
//! [`decide`] runs both stages in one call; it is what the property tests and the unit tests use.

use kakeya_core::bundle::{Arm, Scorer};
use kakeya_core::evidence::bound_evidence;
use kakeya_core::feature_wire;
use kakeya_core::gate_config::FailureMode;
use kakeya_core::numfmt::{write_json_string, JsonEscape};
use kakeya_core::signature::DEFAULT_TENANT;
use kakeya_core::{Gate, VerifyResult, SUBMIT_PATH};

/// Prefix of the headers only this filter may set; client copies are removed.
pub const KAKEYA_HEADER_PREFIX: &str = "x-kakeya-";
/// Request header naming the tenant.
pub const TENANT_HEADER: &str = "x-tenant-id";
pub const H_TENANT: &str = "x-kakeya-tenant";
pub const H_RESULT: &str = "x-kakeya-result";
pub const H_CACHEABLE: &str = "x-kakeya-cacheable";
pub const H_VERIFY_NS: &str = "x-kakeya-verify-ns";
/// Calibrated hallucination risk, 6 decimals.
pub const H_RISK: &str = "x-kakeya-risk";
pub const H_RISK_BAND: &str = "x-kakeya-risk-band";
pub const H_MODEL_VERSION: &str = "x-kakeya-model-version";
/// `champion`, `challenger` or `canary` ([`kakeya_core::bundle::Bundle::arm`]).
pub const H_ARM: &str = "x-kakeya-arm";
pub const H_BUNDLE_VERSION: &str = "x-kakeya-bundle-version";
/// In-guest time of features + scoring (ns), set only when a request was scored.
pub const H_SCORE_NS: &str = "x-kakeya-score-ns";
/// The feature vector the request was scored with ([`kakeya_core::feature_wire`]), set only
/// when a request was scored, so the decision log keeps the features as decided.
pub const H_FEATURES: &str = kakeya_core::feature_wire::HEADER;
/// Reason of a request escalated because no bundle was available (failure mode `open`).
pub const NO_BUNDLE_REASON: &str = "no model bundle available: escalated for review";

/// A response the filter sends itself (`send_http_response`), never reaching the upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    pub status: u32,
    /// Extra headers besides `content-type: application/json`.
    pub headers: Vec<(String, String)>,
    /// `{"error": "...", "code": "..."}`.
    pub body: String,
    /// The machine-readable code inside `body`.
    pub code: &'static str,
}

impl LocalReply {
    fn new(status: u32, code: &'static str, message: &str) -> Self {
        LocalReply {
            status,
            headers: Vec::new(),
            body: error_body(message, code),
            code,
        }
    }

    /// All response headers, content type first.
    pub fn all_headers(&self) -> Vec<(&str, &str)> {
        let mut h = Vec::with_capacity(self.headers.len() + 1);
        h.push(("content-type", "application/json"));
        h.extend(self.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        h
    }
}

/// The request goes on to the control plane with these headers set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    pub headers: Vec<(&'static str, String)>,
    pub accepted: bool,
    pub escalated: bool,
    /// A model scored the request.
    pub scored: bool,
    /// The arm whose model scored it (`None` when not scored).
    pub arm: Option<Arm>,
    /// The score was at or above the model's escalation threshold.
    pub high_risk: bool,
    /// It should have been scored but no valid bundle exists: escalated for review.
    pub no_bundle: bool,
}

/// What the response a client received on a forwarded submission counts as (see
/// [`on_response`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Answered {
    /// 200: accepted.
    pub accepted: bool,
    /// 202: escalated (or not accepted) for review.
    pub escalated: bool,
    /// A fresh 202 for a request that had no model bundle.
    pub no_bundle: bool,
    /// 503/504: the control plane was unreachable, failed or too slow (the answer came from
    /// Envoy's router or from the control plane itself).
    pub unavailable: bool,
}

/// Counts the answer to a forwarded submission by what the client got, not by what the gate
/// decided: a dedup hit returns the stored answer of the first submission (`x-kakeya-dedup:
/// hit`), so a request the gate would escalate now may still be answered 200.
/// `no_bundle_escalation` is [`Forward::no_bundle`]; it counts only for a fresh 202.
pub fn on_response(status: Option<u32>, dedup_hit: bool, no_bundle_escalation: bool) -> Answered {
    match status {
        Some(200) => Answered {
            accepted: true,
            ..Answered::default()
        },
        Some(202) => Answered {
            escalated: true,
            no_bundle: no_bundle_escalation && !dedup_hit,
            ..Answered::default()
        },
        Some(503 | 504) => Answered {
            unavailable: true,
            ..Answered::default()
        },
        _ => Answered::default(),
    }
}

/// What happens to a submit request once its body is complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    LocalReply(LocalReply),
    Forward(Forward),
}

impl Decision {
    /// Status for local replies; `None` when forwarded.
    pub fn status(&self) -> Option<u32> {
        match self {
            Decision::LocalReply(r) => Some(r.status),
            Decision::Forward(_) => None,
        }
    }
}

/// Result of the header stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadVerdict {
    /// Not the submit route: strip and continue.
    PassThrough,
    /// Submit route, method and tenant fine: wait for the whole body.
    AwaitBody { tenant: String },
    /// Submit route, answered right away (405 or a tenant error).
    Reply(LocalReply),
}

/// Output of [`on_headers`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// Names (as sent, lower case in Envoy) of client headers to remove, deduplicated.
    pub strip: Vec<String>,
    pub verdict: HeadVerdict,
}

/// Lower-case-insensitive check for the reserved prefix.
pub fn is_kakeya_header(name: &str) -> bool {
    name.len() >= KAKEYA_HEADER_PREFIX.len()
        && name
            .as_bytes()
            .iter()
            .zip(KAKEYA_HEADER_PREFIX.as_bytes())
            .all(|(a, b)| a.eq_ignore_ascii_case(b))
}

/// `:path` without its query string (and fragment) is the submit route.
pub fn is_submit_path(path: &str) -> bool {
    let end = path.find(['?', '#']).unwrap_or(path.len());
    path.get(..end) == Some(SUBMIT_PATH)
}

/// See [`kakeya_core::signature::valid_tenant_id`].
pub fn valid_tenant(t: &str) -> bool {
    kakeya_core::signature::valid_tenant_id(t)
}

/// Header stage. `headers` is the full request header map including pseudo headers; values are
/// bytes because Envoy allows obs-text in values and the SDK's string getters would panic on them.
pub fn on_headers(headers: &[(String, Vec<u8>)], gate: &Gate) -> Head {
    let mut strip: Vec<String> = Vec::new();
    for (name, _) in headers {
        if is_kakeya_header(name) && !strip.iter().any(|s| s.eq_ignore_ascii_case(name)) {
            strip.push(name.clone());
        }
    }
    let path = header(headers, ":path").unwrap_or_default();
    if !is_submit_path(&String::from_utf8_lossy(path)) {
        return Head {
            strip,
            verdict: HeadVerdict::PassThrough,
        };
    }
    let method = header(headers, ":method").unwrap_or_default();
    if method != b"POST" {
        let mut reply = LocalReply::new(405, "method_not_allowed", "method not allowed: use POST");
        reply.headers.push(("allow".into(), "POST".into()));
        return Head {
            strip,
            verdict: HeadVerdict::Reply(reply),
        };
    }
    // The body must be JSON. A missing (or empty) content type is accepted: the reference
    // server never checks it, and clients that send none must keep working.
    let json_body = headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        .all(|(_, v)| is_json_content_type(v));
    if !json_body {
        return Head {
            strip,
            verdict: HeadVerdict::Reply(LocalReply::new(
                415,
                "unsupported_media_type",
                "unsupported content type: send content-type: application/json (curl sends a form type unless given -H 'content-type: application/json')",
            )),
        };
    }
    // Single-tenant mode ignores X-Tenant-Id, as the reference does: otherwise a client could
    // pick a fresh tenant per request and sidestep dedup, which is keyed by (tenant, pcs_id).
    let tenant = if gate.keyring.multi_tenant() {
        tenant_of(headers)
    } else {
        Ok(DEFAULT_TENANT.to_string())
    };
    let verdict = match tenant {
        Err(reply) => HeadVerdict::Reply(reply),
        Ok(tenant) => match gate.keyring.verifier_for(&tenant) {
            Ok(_) => HeadVerdict::AwaitBody { tenant },
            Err(_) => HeadVerdict::Reply(LocalReply::new(
                400,
                "unknown_tenant",
                &format!("unknown tenant {tenant:?}"),
            )),
        },
    };
    Head { strip, verdict }
}

/// `application/json`, any case, with or without parameters (`; charset=utf-8`); an empty value
/// counts as no content type.
pub fn is_json_content_type(value: &[u8]) -> bool {
    let Ok(v) = core::str::from_utf8(value) else {
        return false;
    };
    let essence = v.split(';').next().unwrap_or_default().trim();
    essence.is_empty() || essence.eq_ignore_ascii_case("application/json")
}

fn header<'a>(headers: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a [u8]> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_slice())
}

/// The tenant of a request: `x-tenant-id`, `default` when absent or empty (as the reference
/// server does). Two `x-tenant-id` headers are refused: the filter and anything behind it must
/// never disagree about whose request this is.
fn tenant_of(headers: &[(String, Vec<u8>)]) -> Result<String, LocalReply> {
    let mut values = headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(TENANT_HEADER))
        .map(|(_, v)| v);
    let first = values.next();
    let invalid = || {
        LocalReply::new(
            400,
            "invalid_tenant",
            "invalid x-tenant-id: expected one header of 1-64 characters [A-Za-z0-9_-]",
        )
    };
    if values.next().is_some() {
        return Err(invalid());
    }
    match first {
        None => Ok(DEFAULT_TENANT.to_string()),
        Some(v) if v.is_empty() => Ok(DEFAULT_TENANT.to_string()),
        Some(v) => match core::str::from_utf8(v) {
            Ok(t) if valid_tenant(t) => Ok(t.to_string()),
            _ => Err(invalid()),
        },
    }
}

/// Body stage for a request whose header stage said [`HeadVerdict::AwaitBody`], without a
/// model bundle (see [`on_body_scored`]).
/// `now_ns` is the clock used for `x-kakeya-verify-ns` (the host clock in the filter).
pub fn on_body(
    tenant: &str,
    body: &[u8],
    gate: &Gate,
    now_ns: &mut dyn FnMut() -> u64,
) -> Decision {
    on_body_scored(tenant, body, gate, None, now_ns)
}

/// Marks a result escalated because it should have been scored but no valid bundle exists
/// (failure mode `open`).
pub fn escalate_without_bundle(result: &mut VerifyResult) {
    if !result.escalated {
        result.escalated = true;
        if result.reason.is_none() {
            result.reason = Some(NO_BUNDLE_REASON.to_string());
        }
    }
}

/// Body stage: parse (400) → signature (401) → evidence binding (400/401; signed but stripped
/// evidence is 400 `evidence_missing`) → verify → risk scoring with `bundle` when the gate has a
/// bundle source → forward.
pub fn on_body_scored(
    tenant: &str,
    body: &[u8],
    gate: &Gate,
    bundle: Option<&Scorer>,
    now_ns: &mut dyn FnMut() -> u64,
) -> Decision {
    let start = now_ns();
    let verifier = match gate.keyring.verifier_for(tenant) {
        Ok(v) => v,
        // on_headers already checked; kept so this function is total on its own.
        Err(_) => {
            return Decision::LocalReply(LocalReply::new(
                400,
                "unknown_tenant",
                &format!("unknown tenant {tenant:?}"),
            ))
        }
    };
    let pcs = match kakeya_core::parse(body) {
        Ok(p) => p,
        Err(e) => return Decision::LocalReply(LocalReply::new(400, e.code(), &e.to_string())),
    };
    if let Err(e) = verifier.verify(&pcs) {
        return Decision::LocalReply(LocalReply::new(
            401,
            "bad_signature",
            &format!("signature verification failed: {e}"),
        ));
    }
    let evidence = match bound_evidence(&pcs) {
        Ok(ev) => ev,
        Err(e) => {
            return Decision::LocalReply(LocalReply::new(
                u32::from(e.status()),
                e.code(),
                &e.to_string(),
            ))
        }
    };
    let mut outcome = kakeya_core::verify(&pcs, &gate.verify);
    let verified = now_ns();
    let verify_ns = verified.saturating_sub(start);
    let mut risk_headers: Vec<(&'static str, String)> = Vec::new();
    let (mut scored, mut high_risk, mut no_bundle) = (false, false, false);
    let mut arm = None;
    if let Some(source) = &gate.bundle {
        match bundle {
            Some(b) => {
                if let Some(risk) = b.assess(tenant, &pcs, &outcome, evidence) {
                    outcome.result.apply_risk(&risk, b.version);
                    let score_ns = now_ns().saturating_sub(verified);
                    scored = true;
                    arm = Some(risk.arm);
                    high_risk = risk.escalate;
                    risk_headers.push((H_RISK, format!("{:.6}", risk.risk)));
                    risk_headers.push((H_RISK_BAND, risk.band.as_str().to_string()));
                    risk_headers.push((H_MODEL_VERSION, risk.model_version));
                    risk_headers.push((H_ARM, risk.arm.as_str().to_string()));
                    risk_headers.push((H_BUNDLE_VERSION, b.version.to_string()));
                    risk_headers.push((H_SCORE_NS, score_ns.to_string()));
                    risk_headers.push((H_FEATURES, feature_wire::encode(&risk.features)));
                }
            }
            None if evidence.is_some() => match source.failure_mode {
                FailureMode::Open => {
                    escalate_without_bundle(&mut outcome.result);
                    no_bundle = true;
                }
                FailureMode::Closed => {
                    let mut r = LocalReply::new(503, "no_bundle", "no model bundle available");
                    r.headers.push(("retry-after".into(), "5".into()));
                    return Decision::LocalReply(r);
                }
            },
            None => {}
        }
    }
    let mut headers: Vec<(&'static str, String)> = Vec::with_capacity(4 + risk_headers.len());
    headers.push((H_TENANT, tenant.to_string()));
    headers.push((H_RESULT, outcome.result.to_json()));
    headers.push((
        H_CACHEABLE,
        if outcome.cacheable { "true" } else { "false" }.to_string(),
    ));
    headers.push((H_VERIFY_NS, verify_ns.to_string()));
    headers.append(&mut risk_headers);
    Decision::Forward(Forward {
        headers,
        accepted: outcome.result.accepted && !outcome.result.escalated,
        escalated: outcome.result.escalated,
        scored,
        arm,
        high_risk,
        no_bundle,
    })
}

/// One whole request, both stages. `None` for requests that are not on the submit route.
pub fn decide(
    headers: &[(String, Vec<u8>)],
    body: &[u8],
    gate: &Gate,
    now_ns: &mut dyn FnMut() -> u64,
) -> (Head, Option<Decision>) {
    let head = on_headers(headers, gate);
    let decision = match &head.verdict {
        HeadVerdict::PassThrough => None,
        HeadVerdict::Reply(r) => Some(Decision::LocalReply(r.clone())),
        HeadVerdict::AwaitBody { tenant } => Some(on_body(tenant, body, gate, now_ns)),
    };
    (head, decision)
}

/// `{"error": <message>, "code": <code>}`, pure ASCII.
pub fn error_body(message: &str, code: &str) -> String {
    let mut out = String::with_capacity(message.len() + code.len() + 24);
    out.push_str("{\"error\":");
    write_json_string(&mut out, message, JsonEscape::GoHtmlAscii);
    out.push_str(",\"code\":");
    write_json_string(&mut out, code, JsonEscape::GoHtmlAscii);
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const G1: &[u8] = include_bytes!("../../../core/tests/data/pcs_tiny_case_1.json");

    fn gate(cfg: &str) -> Gate {
        Gate::from_json(cfg.as_bytes()).unwrap()
    }
    fn hmac_gate() -> Gate {
        gate(r#"{"keyring":{"global":{"alg":"hmac","keys":["testsecret"]}}}"#)
    }
    fn req(method: &str, path: &str, extra: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
        let mut h = vec![
            (":method".to_string(), method.as_bytes().to_vec()),
            (":path".to_string(), path.as_bytes().to_vec()),
            (":authority".to_string(), b"edge".to_vec()),
        ];
        h.extend(
            extra
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec())),
        );
        h
    }
    fn run(h: &[(String, Vec<u8>)], body: &[u8], g: &Gate) -> (Head, Option<Decision>) {
        let mut t = 0u64;
        decide(h, body, g, &mut || {
            t += 1000;
            t
        })
    }
    fn reply(d: Option<Decision>) -> LocalReply {
        match d {
            Some(Decision::LocalReply(r)) => r,
            other => panic!("expected a local reply, got {other:?}"),
        }
    }

    #[test]
    fn golden_forwards_with_result_headers() {
        let g = hmac_gate();
        let (head, d) = run(
            &req(
                "POST",
                "/v1/pcs/submit?x=1",
                &[("x-kakeya-result", "forged")],
            ),
            G1,
            &g,
        );
        assert_eq!(head.strip, vec!["x-kakeya-result".to_string()]);
        let Some(Decision::Forward(f)) = d else {
            panic!("{d:?}")
        };
        assert_eq!(
            f.headers,
            vec![
                (H_TENANT, "default".to_string()),
                (
                    H_RESULT,
                    r#"{"accepted":true,"recomputed_D_hat":0.528320834,"recomputed_budget":0.317807017,"escalated":false}"#
                        .to_string()
                ),
                (H_CACHEABLE, "true".to_string()),
                (H_VERIFY_NS, "1000".to_string()),
            ]
        );
        assert!(f.accepted && !f.escalated);
    }

    #[test]
    fn content_types() {
        let g = hmac_gate();
        for ok in [
            None,
            Some(""),
            Some("application/json"),
            Some("Application/JSON; charset=utf-8"),
            Some(" application/json ;charset=UTF-8"),
        ] {
            let extra: Vec<(&str, &str)> = ok.map(|v| ("content-type", v)).into_iter().collect();
            let (head, d) = run(&req("POST", SUBMIT_PATH, &extra), G1, &g);
            assert!(
                matches!(head.verdict, HeadVerdict::AwaitBody { .. }),
                "{ok:?}"
            );
            assert!(matches!(d, Some(Decision::Forward(_))), "{ok:?}");
        }
        for bad in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "application/jsonx",
            "multipart/form-data; boundary=x",
        ] {
            let (_, d) = run(&req("POST", SUBMIT_PATH, &[("content-type", bad)]), G1, &g);
            let r = reply(d);
            assert_eq!((r.status, r.code), (415, "unsupported_media_type"), "{bad}");
            assert_eq!(
                r.body,
                r#"{"error":"unsupported content type: send content-type: application/json (curl sends a form type unless given -H 'content-type: application/json')","code":"unsupported_media_type"}"#
            );
        }
        // Two content types: every one must be JSON.
        let two = req(
            "POST",
            SUBMIT_PATH,
            &[
                ("content-type", "application/json"),
                ("Content-Type", "text/plain"),
            ],
        );
        assert_eq!(reply(run(&two, G1, &g).1).status, 415);
        // Non-UTF-8 bytes are not JSON, and do not panic.
        let mut raw = req("POST", SUBMIT_PATH, &[]);
        raw.push(("content-type".into(), vec![0xff, 0xfe]));
        assert_eq!(reply(run(&raw, G1, &g).1).status, 415);
        // Other routes are not checked.
        let (head, _) = run(
            &req("POST", "/health", &[("content-type", "text/plain")]),
            b"",
            &g,
        );
        assert_eq!(head.verdict, HeadVerdict::PassThrough);
    }

    #[test]
    fn answers_are_counted_as_the_client_saw_them() {
        let a = on_response(Some(200), false, false);
        assert!(a.accepted && !a.escalated && !a.no_bundle && !a.unavailable);
        // A dedup hit counts as what it returned; a stored 200 is no escalation.
        assert_eq!(
            on_response(Some(200), true, true),
            on_response(Some(200), false, false)
        );
        let a = on_response(Some(202), false, true);
        assert!(a.escalated && a.no_bundle);
        let a = on_response(Some(202), true, true);
        assert!(
            a.escalated && !a.no_bundle,
            "a replayed answer is not a fresh no-bundle one"
        );
        assert!(!on_response(Some(202), false, false).no_bundle);
        for s in [503, 504] {
            assert_eq!(
                on_response(Some(s), false, false),
                Answered {
                    unavailable: true,
                    ..Answered::default()
                }
            );
        }
        for s in [None, Some(400), Some(500)] {
            assert_eq!(on_response(s, false, true), Answered::default());
        }
    }

    #[test]
    fn method_and_paths() {
        let g = hmac_gate();
        let r = reply(run(&req("GET", "/v1/pcs/submit", &[]), b"", &g).1);
        assert_eq!(r.status, 405);
        assert_eq!(
            r.body,
            r#"{"error":"method not allowed: use POST","code":"method_not_allowed"}"#
        );
        assert_eq!(r.headers, vec![("allow".to_string(), "POST".to_string())]);
        let (head, d) = run(
            &req(
                "GET",
                "/health",
                &[("X-Kakeya-Tenant", "x"), ("x-kakeya-tenant", "y")],
            ),
            b"",
            &g,
        );
        assert_eq!(head.verdict, HeadVerdict::PassThrough);
        assert_eq!(head.strip, vec!["X-Kakeya-Tenant".to_string()]);
        assert!(d.is_none());
        assert!(!is_submit_path("/v1/pcs/submit/"));
        assert!(!is_submit_path("/v1/pcs/submitx"));
        assert!(is_submit_path("/v1/pcs/submit#frag"));
    }

    #[test]
    fn tenants() {
        // Single-tenant mode ignores X-Tenant-Id: everything is `default`.
        let single = hmac_gate();
        for any in ["acme", "a b", "ü"] {
            let (_, d) = run(
                &req("POST", "/v1/pcs/submit", &[("x-tenant-id", any)]),
                G1,
                &single,
            );
            let Some(Decision::Forward(f)) = d else {
                panic!("{any}")
            };
            assert_eq!(f.headers[0], (H_TENANT, "default".to_string()));
        }
        let g = gate(
            r#"{"keyring":{"multi_tenant":true,"tenants":{"default":{"alg":"hmac","keys":["testsecret"]},"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx":{"alg":"hmac","keys":["testsecret"]}}}}"#,
        );
        for bad in ["a b", &"x".repeat(65), "ü", "a/b", "a.b"] {
            let r = reply(
                run(
                    &req("POST", "/v1/pcs/submit", &[("x-tenant-id", bad)]),
                    G1,
                    &g,
                )
                .1,
            );
            assert_eq!((r.status, r.code), (400, "invalid_tenant"), "{bad}");
        }
        let two = req(
            "POST",
            "/v1/pcs/submit",
            &[("x-tenant-id", "a"), ("x-tenant-id", "b")],
        );
        assert_eq!(reply(run(&two, G1, &g).1).code, "invalid_tenant");
        let (_, d) = run(
            &req(
                "POST",
                "/v1/pcs/submit",
                &[("x-tenant-id", &"x".repeat(64))],
            ),
            G1,
            &g,
        );
        assert!(matches!(d, Some(Decision::Forward(_))));

        let multi = gate(
            r#"{"keyring":{"multi_tenant":true,"tenants":{"acme":{"alg":"hmac","keys":["testsecret"]}}}}"#,
        );
        let r = reply(
            run(
                &req("POST", "/v1/pcs/submit", &[("x-tenant-id", "globex")]),
                G1,
                &multi,
            )
            .1,
        );
        assert_eq!(r.status, 400);
        assert_eq!(
            r.body,
            r#"{"error":"unknown tenant \"globex\"","code":"unknown_tenant"}"#
        );
        let (_, d) = run(
            &req("POST", "/v1/pcs/submit", &[("x-tenant-id", "acme")]),
            G1,
            &multi,
        );
        let Some(Decision::Forward(f)) = d else {
            panic!()
        };
        assert_eq!(f.headers[0], (H_TENANT, "acme".to_string()));
    }

    #[test]
    fn parse_and_signature_errors() {
        let g = hmac_gate();
        let post = req("POST", "/v1/pcs/submit", &[]);
        let r = reply(run(&post, b"", &g).1);
        assert_eq!((r.status, r.code), (400, "empty_body"));
        let r = reply(run(&post, b"{\"epoch\":\"1\"}", &g).1);
        assert_eq!((r.status, r.code), (400, "invalid_json"));
        assert!(
            r.body
                .starts_with("{\"error\":\"invalid JSON: invalid type"),
            "{}",
            r.body
        );
        let r = reply(run(&post, br#"{"sent_at":"<\u00e9>"}"#, &g).1);
        assert_eq!(r.code, "invalid_sent_at");
        assert!(r.body.is_ascii());
        assert!(r.body.contains("\\u003c\\u00e9\\u003e"), "{}", r.body);
        let tampered = String::from_utf8(G1.to_vec())
            .unwrap()
            .replace("\"D_hat\": 0.528320834", "\"D_hat\": 0.6");
        let r = reply(run(&post, tampered.as_bytes(), &g).1);
        assert_eq!(r.status, 401);
        assert_eq!(
            r.body,
            r#"{"error":"signature verification failed: signature does not match","code":"bad_signature"}"#
        );
    }

    #[test]
    fn non_utf8_header_values_do_not_panic() {
        let g = gate(
            r#"{"keyring":{"multi_tenant":true,"tenants":{"default":{"alg":"hmac","keys":["testsecret"]}}}}"#,
        );
        let mut h = req("POST", "/v1/pcs/submit", &[]);
        h.push(("x-tenant-id".into(), vec![0xff, 0xfe]));
        h.push(("x-kakeya-junk".into(), vec![0xff]));
        let (head, d) = run(&h, G1, &g);
        assert_eq!(head.strip, vec!["x-kakeya-junk".to_string()]);
        assert_eq!(reply(d).code, "invalid_tenant");
    }

    #[test]
    fn a_hundred_thousand_scales_are_escalated_not_a_trap() {
        // scales are not signed, so a valid signature does not bound them.
        let mut v: serde_json::Value = serde_json::from_slice(G1).unwrap();
        v["scales"] = serde_json::Value::from(vec![2; 100_000]);
        let body = v.to_string();
        let (_, d) = run(
            &req("POST", "/v1/pcs/submit", &[]),
            body.as_bytes(),
            &hmac_gate(),
        );
        let Some(Decision::Forward(f)) = d else {
            panic!("expected forward")
        };
        let result = f.headers.iter().find(|(k, _)| *k == H_RESULT).unwrap();
        assert!(
            result.1.contains("too many scales: 100000, at most 64"),
            "{}",
            result.1
        );
    }

    mod scoring {
        use super::super::*;
        use super::G1;
        use kakeya_core::bundle::{Bundle, Scorer, BUNDLE_FORMAT};
        use kakeya_core::evidence::{evidence_sha256, Evidence};
        use kakeya_core::features::{TenantStats, FEATURE_NAMES, SCHEMA_VERSION};
        use kakeya_core::model::{HrsModel, Platt, Thresholds, TrainingMeta, KIND_LOGISTIC};

        fn gate(mode: &str) -> Gate {
            let key = kakeya_core::signature::ed25519_public_b64(&[1; 32]);
            let cfg = serde_json::json!({
                "keyring": {"global": {"alg": "hmac", "keys": ["testsecret"]}},
                "bundle": {"cluster": "admin", "public_keys": [key], "failure_mode": mode},
            });
            Gate::from_json(cfg.to_string().as_bytes()).unwrap()
        }

        fn bundle(intercept: f64) -> Bundle {
            let n = FEATURE_NAMES.len();
            Bundle {
                format: BUNDLE_FORMAT.into(),
                version: 9,
                created_at_ms: 0,
                champion: HrsModel {
                    kind: KIND_LOGISTIC.into(),
                    schema_version: SCHEMA_VERSION.into(),
                    feature_names: FEATURE_NAMES.iter().map(|s| s.to_string()).collect(),
                    mean: vec![0.0; n],
                    std: vec![1.0; n],
                    weights: vec![0.0; n],
                    intercept,
                    platt: Platt { a: -1.0, b: 0.0 },
                    thresholds: Thresholds { escalate: 0.5 },
                    tenant: TenantStats::fresh(),
                    training: TrainingMeta {
                        seed: 0,
                        rows: 0,
                        dataset_sha256: String::new(),
                        recipe_version: String::new(),
                        l2: 1.0,
                        cv_metrics: serde_json::json!({}),
                    },
                }
                .into(),
                challenger: None,
                challenger_weight: 0.0,
                canary: None,
                tenant_stats: Default::default(),
                policy: Default::default(),
                ensemble: Default::default(),
                budgets: Default::default(),
                task_models: Default::default(),
            }
        }

        /// Golden case 1 as PCS v0.2 with evidence, bound by `bind` (None: the right digest).
        fn body(bind: Option<&str>) -> Vec<u8> {
            let ev = Evidence {
                question: "q".into(),
                context: "the cat sat".into(),
                citations: vec![],
                response: "the cat".into(),
                task: None,
            };
            let mut p = kakeya_core::parse(G1).unwrap();
            p.evidence_sha256 = bind.map_or_else(|| evidence_sha256(&ev), str::to_string);
            // pcs-id-v2: the identity covers the evidence hash.
            p.pcs_id = kakeya_core::ids::expected_pcs_id(&p);
            p.sig = kakeya_core::signature::sign_hmac(
                kakeya_core::canonical::signing_payload(&p).as_bytes(),
                b"testsecret",
            );
            let mut v: serde_json::Value = serde_json::from_slice(G1).unwrap();
            v["sig"] = serde_json::json!(p.sig);
            v["pcs_id"] = serde_json::json!(p.pcs_id);
            if !p.evidence_sha256.is_empty() {
                v["evidence_sha256"] = serde_json::json!(p.evidence_sha256);
            }
            v["evidence"] = serde_json::to_value(&ev).unwrap();
            v.to_string().into_bytes()
        }

        fn go(g: &Gate, b: Option<&Bundle>, body: &[u8]) -> Decision {
            let mut t = 0u64;
            let scorer = b.map(|b| Scorer::new(b.clone()));
            on_body_scored("default", body, g, scorer.as_ref(), &mut || {
                t += 1000;
                t
            })
        }

        fn forward(d: Decision) -> Forward {
            match d {
                Decision::Forward(f) => f,
                other => panic!("expected forward, got {other:?}"),
            }
        }

        fn header<'a>(f: &'a Forward, name: &str) -> Option<&'a str> {
            f.headers
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.as_str())
        }

        #[test]
        fn evidence_binding_errors() {
            let g = gate("open");
            let unbound = go(&g, None, &body(Some("")));
            assert_eq!(unbound.status(), Some(400));
            let mismatch = go(&g, None, &body(Some(&"0".repeat(64))));
            let Decision::LocalReply(r) = mismatch else {
                panic!("expected a reply")
            };
            assert_eq!((r.status, r.code), (401, "evidence_mismatch"));
            assert_eq!(
                r.body,
                r#"{"error":"evidence does not match the signed evidence_sha256","code":"evidence_mismatch"}"#
            );
        }

        #[test]
        fn stripped_evidence_is_refused_not_left_unscored() {
            // Signed with evidence_sha256, evidence removed in transit: 400, never forwarded
            // unscored, with or without a bundle.
            let mut v: serde_json::Value = serde_json::from_slice(&body(None)).unwrap();
            v.as_object_mut().unwrap().remove("evidence");
            let stripped = v.to_string().into_bytes();
            for b in [None, Some(bundle(-5.0))] {
                for mode in ["open", "closed"] {
                    let Decision::LocalReply(r) = go(&gate(mode), b.as_ref(), &stripped) else {
                        panic!("expected a reply")
                    };
                    assert_eq!((r.status, r.code), (400, "evidence_missing"));
                }
            }
        }

        #[test]
        fn scored_low_and_high() {
            let g = gate("open");
            let low = forward(go(&g, Some(&bundle(-5.0)), &body(None)));
            assert!(low.scored && !low.high_risk && low.accepted && !low.escalated);
            assert_eq!(low.headers[0], (H_TENANT, "default".to_string()));
            assert_eq!(header(&low, H_RISK), Some("0.006693"));
            assert_eq!(header(&low, H_RISK_BAND), Some("low"));
            assert_eq!(header(&low, H_ARM), Some("champion"));
            assert_eq!(header(&low, H_BUNDLE_VERSION), Some("9"));
            let high = forward(go(&g, Some(&bundle(5.0)), &body(None)));
            assert!(high.scored && high.high_risk && high.escalated && !high.accepted);
            assert!(header(&high, H_RESULT)
                .unwrap()
                .contains("\"band\":\"high\""));
            // No evidence: policy default, not scored.
            let plain = forward(go(&g, Some(&bundle(5.0)), G1));
            assert!(!plain.scored && plain.accepted);
            assert_eq!(plain.headers.len(), 4);
            assert_eq!(header(&plain, H_FEATURES), None);
        }

        #[test]
        fn scored_requests_forward_their_features_exactly() {
            let g = gate("open");
            let b = bundle(-5.0);
            let body = body(None);
            let f = forward(go(&g, Some(&b), &body));
            assert!(f.scored);
            let sent = header(&f, H_FEATURES).expect("a scored request carries its features");
            let got = kakeya_core::feature_wire::decode(sent).unwrap();
            // The native computation of the same PCS and evidence against the model's baseline.
            let pcs = kakeya_core::parse(&body).unwrap();
            let outcome = kakeya_core::verify(&pcs, &g.verify);
            let ev = pcs.evidence.clone().unwrap();
            let signals = kakeya_core::features::PcsSignals::from_verified(
                &pcs,
                outcome.result.recomputed_d_hat,
            );
            let native = kakeya_core::features::features(&signals, Some(&ev), b.champion.tenant());
            assert_eq!(got.map(f64::to_bits), native.map(f64::to_bits));
            assert_eq!(got[11], 1.0, "evidence_present");
            // Not scored (no evidence, or no bundle): no features header.
            assert_eq!(header(&forward(go(&g, Some(&b), G1)), H_FEATURES), None);
            assert_eq!(header(&forward(go(&g, None, &body)), H_FEATURES), None);
            // A client cannot send its own: the header is stripped like every x-kakeya-*.
            let head = on_headers(
                &[
                    (":method".into(), b"POST".to_vec()),
                    (":path".into(), SUBMIT_PATH.as_bytes().to_vec()),
                    ("X-Kakeya-Features".into(), b"hrs-features-v1;AAAA".to_vec()),
                ],
                &g,
            );
            assert_eq!(head.strip, vec!["X-Kakeya-Features".to_string()]);
        }

        /// A canary at weight 1 scores every request: `x-kakeya-arm: canary`, its model's
        /// version, and the arm in the result JSON; at weight 0 the champion scores.
        #[test]
        fn a_canary_scores_with_its_arm_in_the_headers() {
            let g = gate("open");
            let mut b = bundle(-5.0);
            let canary = bundle(5.0).champion;
            b.canary = Some(kakeya_core::bundle::Canary {
                model: canary.clone(),
                weight: 1.0,
                key: kakeya_core::bundle::ArmKey::Tenant,
            });
            let f = forward(go(&g, Some(&b), &body(None)));
            assert_eq!(f.arm, Some(Arm::Canary));
            assert_eq!(header(&f, H_ARM), Some("canary"));
            assert_eq!(header(&f, H_MODEL_VERSION), Some(canary.version().as_str()));
            assert!(f.high_risk, "scored by the canary's model (intercept 5)");
            assert!(header(&f, H_RESULT).unwrap().contains("\"arm\":\"canary\""));
            if let Some(c) = &mut b.canary {
                c.weight = 0.0;
            }
            let f = forward(go(&g, Some(&b), &body(None)));
            assert_eq!(
                (f.arm, header(&f, H_ARM)),
                (Some(Arm::Champion), Some("champion"))
            );
            assert!(!f.high_risk);
        }

        #[test]
        fn without_a_bundle() {
            let open = forward(go(&gate("open"), None, &body(None)));
            assert!(open.escalated && !open.scored && open.no_bundle);
            // Scored, or nothing to score: not a no-bundle escalation.
            assert!(!forward(go(&gate("open"), Some(&bundle(5.0)), &body(None))).no_bundle);
            assert!(!forward(go(&gate("open"), None, G1)).no_bundle);
            assert!(header(&open, H_RESULT).unwrap().contains(NO_BUNDLE_REASON));
            let Decision::LocalReply(r) = go(&gate("closed"), None, &body(None)) else {
                panic!("expected a reply")
            };
            assert_eq!((r.status, r.code), (503, "no_bundle"));
            assert_eq!(
                r.body,
                r#"{"error":"no model bundle available","code":"no_bundle"}"#
            );
            assert_eq!(
                r.headers,
                vec![("retry-after".to_string(), "5".to_string())]
            );
            // Without evidence there is nothing to score: forwarded as before.
            assert!(forward(go(&gate("closed"), None, G1)).accepted);
        }
    }
}
