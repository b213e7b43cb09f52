//! The gate's decisions: [`kakeya_core::pipeline`] (every stage, hostcall-free), re-exported,
//! plus the clock-only entry points the native tests and tools use.
//!
//! A request goes through two stages, mirroring the Envoy callbacks: [`on_headers`] (from
//! `on_http_request_headers`) and the body stages ([`kakeya_core::pipeline::on_body`], at end
//! of stream), which may pause for the micro-vote callout ([`Step::Pending`]).

pub use kakeya_core::pipeline::*;
pub use kakeya_core::SUBMIT_PATH;

#[cfg(test)]
use kakeya_core::bundle::Arm;

use kakeya_core::bundle::Scorer;
use kakeya_core::Gate;

/// Body stage without a model bundle (see [`on_body_scored`]). `now_ns` is the clock used for
/// `x-kakeya-verify-ns` (the host clock in the filter).
pub fn on_body(
    tenant: &str,
    body: &[u8],
    gate: &Gate,
    now_ns: &mut dyn FnMut() -> u64,
) -> Decision {
    on_body_scored(tenant, body, gate, None, now_ns)
}

/// Body stage with `bundle` and a clock only: a micro-vote, if the policy enables one,
/// abstains as unavailable.
pub fn on_body_scored(
    tenant: &str,
    body: &[u8],
    gate: &Gate,
    bundle: Option<&Scorer>,
    now_ns: &mut dyn FnMut() -> u64,
) -> Decision {
    on_body_now(tenant, body, gate, bundle, &mut ClockHost(now_ns))
}

/// One whole request, both stages, without a bundle. `None` for requests that are not on the
/// submit route.
pub fn decide(
    headers: &[(String, Vec<u8>)],
    body: &[u8],
    gate: &Gate,
    now_ns: &mut dyn FnMut() -> u64,
) -> (Head, Option<Decision>) {
    kakeya_core::pipeline::decide(headers, body, gate, None, &mut ClockHost(now_ns))
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
                upstreams: Default::default(),
                anomaly: Default::default(),
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
