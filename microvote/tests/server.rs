//! The server over real HTTP (port 0) with the real encoder and the committed head: answers,
//! the context-cache hit path, bad and oversized input, metrics, the OpenAPI document.

use kakeya_microvote::encoder::{default_model_dir, Encoder};
use kakeya_microvote::head::Head;
use kakeya_microvote::metrics::Metrics;
use kakeya_microvote::scorer::Scorer;
use kakeya_microvote::server::{self, Limits};
use serde_json::{json, Value};
use std::sync::Arc;

fn start(limits: Limits) -> String {
    let scorer = Scorer::new(
        Encoder::load(&default_model_dir()).unwrap(),
        Head::builtin().unwrap(),
        64,
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let state = server::start(Arc::new(scorer), limits, Metrics::new().unwrap());
    std::thread::spawn(move || {
        rt.block_on(server::serve(listener, state, std::future::pending()))
            .unwrap()
    });
    format!("http://{addr}")
}

fn post(base: &str, body: &str) -> (u16, Value) {
    let r = ureq::post(&format!("{base}/v1/microvote"))
        .set("content-type", "application/json")
        .send_string(body);
    let resp = match r {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{e}"),
    };
    let status = resp.status();
    (status, resp.into_json().unwrap_or(Value::Null))
}

#[test]
fn answers_caches_contexts_and_refuses_bad_input() {
    let base = start(Limits {
        max_body_bytes: 8 * 1024,
        max_text_bytes: 2 * 1024,
        ..Limits::default()
    });
    let ctx = "Ada Lovelace wrote the first program in 1843 for the Analytical Engine.";
    let (s, a) = post(
        &base,
        &json!({"context": ctx, "question": "Who wrote the first program?", "response": "Ada Lovelace wrote it in 1843.", "task": "qa"}).to_string(),
    );
    assert_eq!(s, 200, "{a}");
    let p = a["p_hallucinated"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&p));
    assert!(a["model"].as_str().unwrap().starts_with("mv-"));
    assert_eq!(a["context_cached"], false);
    // Another answer against the same context (spacing differs: normalised away) hits the cache.
    let (s, b) = post(
        &base,
        &json!({"context": format!("  {ctx}  "), "question": "Who wrote the first program?", "response": "Grace Hopper wrote it in 1952 on the UNIVAC at Harvard.", "task": "qa"}).to_string(),
    );
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["context_cached"], true);
    assert!(
        b["p_hallucinated"].as_f64().unwrap() > p,
        "the contradicting answer must score higher: {a} {b}"
    );

    for (body, status, code) in [
        ("{not json", 400, "invalid_json"),
        (r#"{"context":"c"}"#, 400, "invalid_json"),
        (r#"{"response":"r","extra":1}"#, 400, "invalid_json"),
        (r#"{"response":"r","task":"poetry"}"#, 400, "invalid_json"),
        (r#"{"response":"   "}"#, 400, "empty_response"),
    ] {
        let (s, e) = post(&base, body);
        assert_eq!((s, e["code"].as_str()), (status, Some(code)), "{body}: {e}");
        assert!(e["error"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let big_field = json!({"response": "x".repeat(3000)}).to_string();
    let (s, e) = post(&base, &big_field);
    assert_eq!((s, e["code"].as_str()), (413, Some("field_too_large")));
    let big_body = json!({"response": "r", "context": "y ".repeat(5000)}).to_string();
    let (s, e) = post(&base, &big_body);
    assert_eq!((s, e["code"].as_str()), (413, Some("body_too_large")));

    let r = ureq::get(&format!("{base}/v1/microvote")).call();
    let Err(ureq::Error::Status(405, r)) = r else {
        panic!("GET must be 405")
    };
    let e: Value = r.into_json().unwrap();
    assert_eq!(e["code"], "method_not_allowed");

    let m = ureq::get(&format!("{base}/metrics"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    for line in [
        "kakeya_microvote_requests_total{outcome=\"ok\"} 2",
        "kakeya_microvote_requests_total{outcome=\"bad_request\"} 5",
        "kakeya_microvote_requests_total{outcome=\"too_large\"} 2",
        "kakeya_microvote_context_cache_total{result=\"hit\"} 1",
        "kakeya_microvote_context_cache_total{result=\"miss\"} 1",
        "kakeya_microvote_duration_seconds_count 9",
    ] {
        assert!(m.contains(line), "{line} missing from\n{m}");
    }
    let h: Value = ureq::get(&format!("{base}/healthz"))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    assert_eq!(h["status"], "ok");
    let doc: Value = ureq::get(&format!("{base}/v1/openapi.json"))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    for p in [
        kakeya_core::microvote::MICROVOTE_PATH,
        "/healthz",
        "/metrics",
    ] {
        assert!(
            doc["paths"][p].is_object(),
            "{p} not in the OpenAPI document"
        );
    }
}
