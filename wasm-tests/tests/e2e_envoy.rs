//! End-to-end tests through real Envoy 1.40 (V8) with the built gate filter and the real `kakeya`
//! control plane on SQLite, each test on its own free loopback ports.
//! Run through `cargo xtask test`, which builds the binaries and sets their paths.

use kakeya_wasm_tests::fixtures::{self, signed_pcs, GOLDEN, KEY};
use kakeya_wasm_tests::stack::{call, post, Answer, Stack, StackOptions};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SUBMIT: &str = "/v1/pcs/submit";

fn hmac_env() -> Vec<(String, String)> {
    vec![
        ("PCS_SIGN_ALG".into(), "hmac".into()),
        ("PCS_HMAC_KEY".into(), KEY.into()),
    ]
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(20))
        .build()
}

fn submit(stack: &Stack, body: &str, headers: &[(&str, &str)]) -> Answer {
    let mut h = vec![("content-type", "application/json")];
    h.extend_from_slice(headers);
    post(&agent(), &stack.url(SUBMIT), &h, body.as_bytes()).expect("gateway answers")
}

/// Decision-log rows of a tenant, through the admin API.
fn decisions(stack: &Stack, tenant: &str) -> Vec<Value> {
    stack.decisions(Some(tenant)).unwrap()
}

fn count_by_pcs_id(rows: &[Value]) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for r in rows {
        *m.entry(r["pcs_id"].as_str().unwrap_or_default().to_string())
            .or_default() += 1;
    }
    m
}

fn assert_json_error(a: &Answer, status: u16) {
    assert_eq!(a.status, status, "{a:?}");
    let v = a.json();
    assert!(
        v["error"].is_string() && v["code"].is_string(),
        "JSON error body expected, got {a:?}"
    );
}

#[test]
fn verify_path_through_envoy() {
    let stack = Stack::start(StackOptions {
        env: hmac_env(),
        ..Default::default()
    })
    .unwrap();

    // Golden vectors: 200 with the exact VerifyResult.
    let expected = [
        "{\"accepted\":true,\"recomputed_D_hat\":0.528320834,\"recomputed_budget\":0.317807017,\"escalated\":false}\n",
        "{\"accepted\":true,\"recomputed_D_hat\":1,\"recomputed_budget\":0.349073359,\"escalated\":false}\n",
    ];
    for (g, want) in GOLDEN.iter().zip(expected) {
        let a = submit(&stack, g, &[]);
        assert_eq!((a.status, a.body.as_str()), (200, want), "{a:?}");
    }

    // Duplicate: the identical stored answer.
    let first = submit(&stack, GOLDEN[0], &[]);
    assert_eq!((first.status, first.body.as_str()), (200, expected[0]));
    assert_eq!(first.header("x-kakeya-dedup"), Some("hit"));

    // Tampered signed field → 401, nothing stored; the genuine PCS with that id is then fresh.
    let genuine = signed_pcs("tamper-shard", KEY);
    let mut forged = genuine.clone();
    forged["D_hat"] = Value::from(0.6);
    let before = decisions(&stack, "default").len();
    let a = submit(
        &stack,
        &forged.to_string(),
        &[("x-kakeya-result", "{\"accepted\":true,\"escalated\":false}")],
    );
    assert_json_error(&a, 401);
    assert_eq!(
        decisions(&stack, "default").len(),
        before,
        "a forged PCS must not reach the control plane"
    );
    let a = submit(&stack, &genuine.to_string(), &[]);
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(
        a.header("x-kakeya-dedup"),
        Some("miss"),
        "the forged PCS must not have left a dedup entry"
    );

    // Malformed input → 400 with a JSON error body.
    for bad in [
        "",
        "{not valid json",
        "[1,2]",
        r#"{"epoch":"1"}"#,
        r#"{"N_j":{"2":3.5}}"#,
        r#"{"sent_at":""}"#,
    ] {
        let a = submit(&stack, bad, &[]);
        assert_json_error(&a, 400);
    }
    // Oversize → 413 from Envoy's buffer limit.
    let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(1024 * 1024));
    let a = submit(&stack, &big, &[]);
    assert_eq!(a.status, 413, "{a:?}");
    // Other methods → 405.
    let a = call(&agent(), "GET", &stack.url(SUBMIT)).unwrap();
    assert_json_error(&a, 405);
    // Health through the gateway.
    let a = call(&agent(), "GET", &stack.url("/health")).unwrap();
    assert_eq!(a.status, 200);
    // Any other path: a JSON 404.
    let a = call(&agent(), "GET", &stack.url("/v1/nope")).unwrap();
    assert_json_error(&a, 404);
    assert_eq!(a.header("content-type"), Some("application/json"), "{a:?}");

    // A soft escalation answers 202 with the reason.
    let mut p: kakeya_core::Pcs =
        kakeya_core::parse(signed_pcs("soft", KEY).to_string().as_bytes()).unwrap();
    p.budget = 0.5;
    p.sig = kakeya_core::signature::sign_hmac(
        kakeya_core::canonical::signing_payload(&p).as_bytes(),
        KEY.as_bytes(),
    );
    let a = submit(&stack, &fixtures::to_json(&p).to_string(), &[]);
    assert_eq!(a.status, 202, "{a:?}");
    assert_eq!(a.json()["escalated"], Value::Bool(true));

    // Counters: the filter's in Envoy stats, the control plane's in /metrics.
    let stats = call(&agent(), "GET", &stack.envoy_admin_url("/stats/prometheus"))
        .unwrap()
        .body;
    assert!(
        stats
            .lines()
            .any(|l| l.starts_with("kakeya_gate_signature_errors_total{")
                && l.contains("tenant=\"default\"")),
        "gate counters with a tenant tag expected in Envoy stats"
    );
    // /metrics needs the admin token like every admin route but health/ready/bundle.
    assert_eq!(
        call(&agent(), "GET", &stack.admin_url("/metrics"))
            .unwrap()
            .status,
        401
    );
    let metrics = stack.admin_get("/metrics").unwrap().body;
    for name in [
        "kakeya_ingest_total",
        "kakeya_accepted_total",
        "kakeya_escalated_total",
        "kakeya_dedup_hits_total",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
    assert!(metrics.contains("kakeya_wal_fsync_seconds_bucket"));
}

#[test]
fn fifty_concurrent_submissions_make_one_decision() {
    let stack = Arc::new(
        Stack::start(StackOptions {
            env: hmac_env(),
            ..Default::default()
        })
        .unwrap(),
    );
    let body = signed_pcs("concurrent-shard", KEY).to_string();
    let answers = Arc::new(Mutex::new(Vec::new()));
    std::thread::scope(|s| {
        for _ in 0..50 {
            let (stack, body, answers) = (stack.clone(), body.clone(), answers.clone());
            s.spawn(move || {
                let a = submit(&stack, &body, &[]);
                answers.lock().unwrap().push((a.status, a.body));
            });
        }
    });
    let answers = answers.lock().unwrap();
    assert_eq!(answers.len(), 50);
    assert!(
        answers.iter().all(|a| *a == answers[0]),
        "all answers must be identical: {answers:?}"
    );
    assert_eq!(answers[0].0, 200);
    let pcs_id = serde_json::from_str::<Value>(&body).unwrap()["pcs_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        count_by_pcs_id(&decisions(&stack, "default")).get(&pcs_id),
        Some(&1)
    );
}

#[test]
fn kill_9_during_load_loses_nothing_acknowledged() {
    let mut env = hmac_env();
    // This test is about durability, not the rate limiter.
    env.push(("TOKEN_RATE".into(), "100000".into()));
    let mut stack = Stack::start(StackOptions {
        env,
        ..Default::default()
    })
    .unwrap();
    let bodies: Vec<(String, String)> = (0..1000)
        .map(|i| {
            let v = signed_pcs(&format!("load-{i}"), KEY);
            (
                v["pcs_id"].as_str().unwrap_or_default().to_string(),
                v.to_string(),
            )
        })
        .collect();
    let acked = Mutex::new(HashSet::new());
    // kill -9 once 300 submissions have been acknowledged, with more in flight.
    let acked_count = std::sync::atomic::AtomicUsize::new(0);
    let url = stack.url(SUBMIT);
    let killed = std::sync::atomic::AtomicBool::new(false);
    let stack_ref = Mutex::new(&mut stack);
    std::thread::scope(|s| {
        for w in 0..8 {
            let (bodies, acked, acked_count, url, killed, stack_ref) =
                (&bodies, &acked, &acked_count, &url, &killed, &stack_ref);
            s.spawn(move || {
                let agent = agent();
                for (pcs_id, body) in bodies.iter().skip(w).step_by(8) {
                    if let Ok(a) = post(
                        &agent,
                        url,
                        &[("content-type", "application/json")],
                        body.as_bytes(),
                    ) {
                        if a.status == 200 || a.status == 202 {
                            acked.lock().unwrap().insert(pcs_id.clone());
                            let n =
                                acked_count.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                            if n >= 300 && !killed.swap(true, std::sync::atomic::Ordering::SeqCst) {
                                stack_ref.lock().unwrap().kill_control_plane();
                            }
                        }
                    }
                }
            });
        }
    });
    let acked = acked.into_inner().unwrap();
    assert!(
        acked.len() >= 300,
        "the load should have been acknowledged before the kill ({})",
        acked.len()
    );
    assert!(
        acked.len() < 1000,
        "the kill should have interrupted the load"
    );

    // While the control plane is down the gateway answers a JSON 503 with Retry-After.
    let a = submit(&stack, &bodies[0].1, &[]);
    assert_json_error(&a, 503);
    assert!(a.header("retry-after").is_some(), "{a:?}");

    // Recovery as documented: replay the WAL while the control plane is down (twice: replay
    // is idempotent), then start it again (it also replays after its checkpoint).
    for args in [
        &["wal", "replay"][..],
        &["wal", "replay", "--from-start"][..],
    ] {
        let out = stack.kakeya(args).unwrap();
        assert!(
            out.status.success(),
            "wal replay failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    stack.start_control_plane().unwrap();

    let counts = count_by_pcs_id(&decisions(&stack, "default"));
    for id in &acked {
        assert_eq!(
            counts.get(id),
            Some(&1),
            "acknowledged {id} must be present exactly once"
        );
    }
    assert!(
        counts.values().all(|&n| n == 1),
        "no decision may be doubled"
    );
    // And every acknowledged submission is a dedup hit now.
    for (pcs_id, body) in bodies.iter().filter(|(id, _)| acked.contains(id)).take(20) {
        let a = submit(&stack, body, &[]);
        assert_eq!(a.header("x-kakeya-dedup"), Some("hit"), "{pcs_id}: {a:?}");
    }
}

#[test]
fn tenants_keys_and_rate_limits() {
    let env = vec![
        ("MULTI_TENANT".to_string(), "true".to_string()),
        (
            "TENANTS".to_string(),
            "acme:hmac:testsecret,beta:hmac:betasecret".to_string(),
        ),
        ("TOKEN_RATE".to_string(), "1".to_string()),
    ];
    let stack = Stack::start(StackOptions {
        env,
        ..Default::default()
    })
    .unwrap();
    let acme = signed_pcs("tenant-a", KEY).to_string();
    let beta = signed_pcs("tenant-b", "betasecret").to_string();

    assert_eq!(
        submit(&stack, &acme, &[("x-tenant-id", "acme")]).status,
        200
    );
    // beta's key does not sign for acme, and an unknown tenant is refused.
    assert_json_error(&submit(&stack, &beta, &[("x-tenant-id", "acme")]), 401);
    assert_json_error(&submit(&stack, &acme, &[("x-tenant-id", "nobody")]), 400);
    // Dedup is per tenant: the same PCS id under beta is beta's own decision.
    assert_eq!(
        submit(&stack, &beta, &[("x-tenant-id", "beta")]).status,
        200
    );

    // TOKEN_RATE=1 → burst 2: acme has used its two tokens by now, so within a few more
    // requests (a token refills each second) it is limited, with a Retry-After.
    let limited = (0..6)
        .map(|_| submit(&stack, &acme, &[("x-tenant-id", "acme")]))
        .find(|a| a.status == 429);
    let a = limited.expect("acme must hit its rate limit");
    assert!(a.header("retry-after").is_some(), "{a:?}");
    // beta has its own bucket with a token left.
    assert_ne!(
        submit(&stack, &beta, &[("x-tenant-id", "beta")]).status,
        429
    );
}

/// A counter from Envoy's `/stats/prometheus`: `name{tenant="<tenant>"}` or, with `tenant`
/// `None`, the unlabelled `name`. Absent = 0 (Envoy may not print a counter never used).
fn gate_stat(stats: &str, name: &str, tenant: Option<&str>) -> u64 {
    stats
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let matches = match tenant {
                Some(t) => {
                    series.starts_with(&format!("{name}{{"))
                        && series.contains(&format!("tenant=\"{t}\""))
                }
                None => series == name || series.starts_with(&format!("{name}{{")),
            };
            matches.then(|| value.parse().ok()).flatten()
        })
        .unwrap_or(0)
}

fn envoy_stats(stack: &Stack) -> String {
    call(&agent(), "GET", &stack.envoy_admin_url("/stats/prometheus"))
        .unwrap()
        .body
}

#[test]
fn secrets_stay_out_of_envoy_config_and_world_readable_files() {
    use std::os::unix::fs::PermissionsExt;
    const INGEST_SECRET: &str = "ingest-secret-0123456789abcdef";
    let mut env = hmac_env();
    env.push(("KAKEYA_INGEST_SECRET".into(), INGEST_SECRET.into()));
    let stack = Stack::start(StackOptions {
        env,
        ..Default::default()
    })
    .unwrap();
    // The key verifies and Envoy sends the ingest secret: the golden vector is accepted.
    let a = submit(&stack, GOLDEN[0], &[]);
    assert_eq!(a.status, 200, "{a:?}");
    // Straight to the ingest listener, without the secret: refused, nothing written.
    let direct = post(
        &agent(),
        &format!("http://{}/v1/pcs/submit", stack.ingest),
        &[("x-kakeya-result", "{}"), ("x-kakeya-cacheable", "true")],
        GOLDEN[1].as_bytes(),
    )
    .unwrap();
    assert_eq!(direct.status, 403, "{direct:?}");
    assert_eq!(direct.json()["code"], "forbidden");

    let dump = call(&agent(), "GET", &stack.envoy_admin_url("/config_dump")).unwrap();
    assert_eq!(dump.status, 200);
    assert!(
        dump.body.contains("KAKEYA_GATE_KEYRING") && dump.body.contains("kakeya_gate"),
        "the dump should show the gate's configuration"
    );
    assert!(!dump.body.contains(KEY), "the HMAC key is in /config_dump");
    assert!(
        !dump.body.contains(INGEST_SECRET)
            && dump.body.contains("%ENVIRONMENT(KAKEYA_INGEST_SECRET)%"),
        "the ingest secret is in /config_dump, or the route does not send it"
    );

    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let yaml = stack.envoy_yaml();
    let text = std::fs::read_to_string(&yaml).unwrap();
    assert!(!text.contains(KEY) && !text.contains(INGEST_SECRET));
    assert_eq!(mode(&yaml), 0o600);
    let env_file = yaml.with_extension("env");
    let env_text = std::fs::read_to_string(&env_file).unwrap();
    assert!(env_text.contains(KEY) && env_text.contains(INGEST_SECRET));
    assert_eq!(
        mode(&env_file),
        0o600,
        "the file holding the key is private"
    );
    assert!(!stack.envoy_log().contains(KEY) && !stack.envoy_log().contains(INGEST_SECRET));

    let out = stack.kakeya(&["config", "show"]).unwrap();
    assert!(out.status.success());
    let shown = String::from_utf8(out.stdout).unwrap();
    assert!(
        !shown.contains(KEY) && !shown.contains(INGEST_SECRET) && shown.contains("<redacted>"),
        "{shown}"
    );
}

/// Reads one HTTP/1.1 response (status, lower-case headers, body by content-length).
fn read_response(s: &mut std::net::TcpStream) -> std::io::Result<(u16, String, Vec<u8>)> {
    use std::io::Read;
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let len = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body)?;
    Ok((status, head, body))
}

fn raw_submit(content_type: Option<&str>, body: &str) -> String {
    let ct = content_type
        .map(|c| format!("content-type: {c}\r\n"))
        .unwrap_or_default();
    format!(
        "POST {SUBMIT} HTTP/1.1\r\nhost: edge\r\n{ct}content-length: {}\r\n\r\n{body}",
        body.len()
    )
}

#[test]
fn slow_and_odd_clients() {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::Instant;
    let stack = Stack::start(StackOptions {
        env: hmac_env(),
        ..Default::default()
    })
    .unwrap();

    // A body that stops halfway: answered (408) and closed long before the old 15+ s.
    let mut s = TcpStream::connect(stack.gateway).unwrap();
    s.write_all(
        format!("POST {SUBMIT} HTTP/1.1\r\nhost: edge\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n0123456789")
            .as_bytes(),
    )
    .unwrap();
    let bound = Duration::from_secs(12);
    let deadline = Instant::now() + bound;
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let closed = loop {
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
            Err(_) => {}
        }
        if Instant::now() > deadline {
            break false;
        }
    };
    let got = String::from_utf8_lossy(&got);
    assert!(
        closed,
        "a stalled body must be cut within {bound:?}; got {got:?}"
    );
    assert!(got.starts_with("HTTP/1.1 408"), "{got}");
    assert!(
        got.contains(r#""code":"request_timeout""#),
        "a JSON error body: {got}"
    );

    // One keep-alive connection: a 400, a 415 and a 401 answered by the gate leave it open for
    // the next request (Envoy used to close it after every local 400, then hold it for 1 s).
    let mut s = TcpStream::connect(stack.gateway).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let forged = {
        let mut v = signed_pcs("odd-forged", KEY);
        v["D_hat"] = Value::from(0.6);
        v.to_string()
    };
    let cases = [
        (
            raw_submit(Some("application/json"), "{not json"),
            400,
            "invalid_json",
        ),
        (
            raw_submit(Some("text/plain"), GOLDEN[0]),
            415,
            "unsupported_media_type",
        ),
        (
            raw_submit(Some("application/json"), &forged),
            401,
            "bad_signature",
        ),
        // A missing content type, and JSON with a charset in any case, are accepted.
        (raw_submit(None, GOLDEN[0]), 200, ""),
        (
            raw_submit(Some("Application/JSON; charset=UTF-8"), GOLDEN[1]),
            200,
            "",
        ),
    ];
    for (req, status, code) in cases {
        s.write_all(req.as_bytes()).unwrap();
        let (got, head, body) = read_response(&mut s).unwrap();
        assert_eq!(got, status, "{head}");
        assert!(!head.contains("connection: close"), "{head}");
        if !code.is_empty() {
            let v: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(
                (v["code"].as_str(), v["error"].is_string()),
                (Some(code), true)
            );
        }
    }
    // A broken HTTP message (not the gate's business) still closes the connection.
    s.write_all(b"POST /v1/pcs/submit HTTP/1.1\r\nhost: edge\r\ncontent-length: x\r\n\r\n")
        .unwrap();
    let (got, head, _) = read_response(&mut s).unwrap();
    assert_eq!(got, 400, "{head}");
    let mut rest = Vec::new();
    assert!(
        matches!(s.read_to_end(&mut rest), Ok(0)),
        "closed after a codec error: {rest:?}"
    );

    let stats = envoy_stats(&stack);
    assert_eq!(
        gate_stat(
            &stats,
            "kakeya_gate_unsupported_media_type_total",
            Some("default")
        ),
        1,
        "{stats}"
    );
}

#[test]
fn gate_counters_match_the_answers_clients_got() {
    // The admin cluster points at a socket that never answers (held, so no other test's
    // stack can take the port): the gate never gets a bundle (failure mode open), so
    // evidence-bearing submissions are escalated for review without one.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nothing = silent.local_addr().unwrap();
    let mut env = hmac_env();
    env.push(("TOKEN_RATE".into(), "100000".into()));
    let mut stack = Stack::start(StackOptions {
        env,
        admin_override: Some(nothing),
        ..Default::default()
    })
    .unwrap();

    let soft = {
        let mut p: kakeya_core::Pcs =
            kakeya_core::parse(signed_pcs("count-soft", KEY).to_string().as_bytes()).unwrap();
        p.budget = 0.5;
        p.sig = kakeya_core::signature::sign_hmac(
            kakeya_core::canonical::signing_payload(&p).as_bytes(),
            KEY.as_bytes(),
        );
        fixtures::to_json(&p).to_string()
    };
    // The same signed content as "count-dedup" (so the same submission to dedup) with box
    // counts that make the gate's D̂ recomputation escalate (N_j is not signed): dedup answers
    // with the stored 200, which is what must be counted, not the gate's escalation.
    let genuine = signed_pcs("count-dedup", KEY).to_string();
    let dedup_escalation = {
        let mut v: Value = serde_json::from_str(&genuine).unwrap();
        v["N_j"] = serde_json::json!({"2": 1, "4": 1, "8": 1, "16": 1});
        v.to_string()
    };
    let evidence = fixtures::signed_pcs_with_evidence(
        "count-evidence",
        KEY,
        &fixtures::grounded_evidence(),
        None,
    )
    .to_string();
    let bodies = [
        GOLDEN[0].to_string(),
        GOLDEN[0].to_string(),
        GOLDEN[1].to_string(),
        genuine,
        dedup_escalation,
        soft.clone(),
        soft,
        evidence.clone(),
        evidence,
    ];
    let mut answers = Vec::new();
    for b in &bodies {
        answers.push(submit(&stack, b, &[]));
    }
    // The gate escalated the altered resubmission, the client got the stored 200.
    assert_eq!(
        (answers[4].status, answers[4].header("x-kakeya-dedup")),
        (200, Some("hit")),
        "{:?}",
        answers[4]
    );
    assert_eq!(answers[4].body, answers[3].body);
    // The control plane goes away: Envoy answers 503 for it.
    stack.kill_control_plane();
    for b in &bodies[..2] {
        let a = submit(&stack, b, &[]);
        assert_json_error(&a, 503);
        answers.push(a);
    }
    assert!(
        answers
            .iter()
            .any(|a| a.status == 200 && a.header("x-kakeya-dedup") == Some("hit")),
        "a dedup hit expected: {answers:?}"
    );

    let is_no_bundle = |a: &Answer| {
        a.status == 202
            && a.header("x-kakeya-dedup") != Some("hit")
            && a.body.contains("no model bundle")
    };
    let count = |f: &dyn Fn(&Answer) -> bool| answers.iter().filter(|a| f(a)).count() as u64;
    let want = [
        ("kakeya_gate_accepted_total", count(&|a| a.status == 200)),
        ("kakeya_gate_escalated_total", count(&|a| a.status == 202)),
        ("kakeya_gate_no_bundle_total", count(&is_no_bundle)),
        ("kakeya_gate_forwarded_total", answers.len() as u64),
    ];
    assert_eq!(want[2].1, 1, "one fresh no-bundle escalation: {answers:?}");
    let unavailable = count(&|a| a.status == 503);
    assert_eq!(unavailable, 2);
    let stats = envoy_stats(&stack);
    for (name, n) in want {
        assert_eq!(
            gate_stat(&stats, name, Some("default")),
            n,
            "{name}\n{stats}"
        );
    }
    assert_eq!(
        gate_stat(&stats, "kakeya_gate_unavailable_total", None),
        unavailable,
        "{stats}"
    );
}
