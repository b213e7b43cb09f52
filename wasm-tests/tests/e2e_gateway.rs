//! LLM-gateway mode through real Envoy and the real gate: OpenAI chat completions proxied to a
//! scripted OpenAI-format backend ([`LlmUpstream`]) that answers with HaluEval answers, right
//! and hallucinated. The served risks equal the native pipeline's (same bundle) bit for bit,
//! plain and streamed; accepted answers pass through unchanged with `x-kakeya-*` headers;
//! escalated ones are blocked (`policy = "block"`: `finish_reason: "content_filter"`); streams
//! arrive incrementally and end with the verdict chunk before `[DONE]`; a conversation without
//! context is scored as such; malformed requests get 400 and never reach the backend; every
//! scored answer is a decision-log row.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kakeya_control_plane::ml::dataset::{parse as parse_rows, Row};
use kakeya_core::bundle::Scorer;
use kakeya_core::chat::{ChatRequest, ContextSource, DEFAULT_REFUSAL};
use kakeya_core::pipeline::chat::{score, Verdict};
use kakeya_core::pipeline::ClockHost;
use kakeya_wasm_tests::llm_upstream::LlmUpstream;
use kakeya_wasm_tests::stack::{post, Answer, Stack, StackOptions};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

const API_KEY: &str = "sk-test-gateway-0123456789";
const CHAT: &str = "/v1/chat/completions";

/// HaluEval QA rows (both answers of each item) plus the README's two examples and a short
/// wrong answer.
fn rows() -> Vec<Row> {
    let sample = include_bytes!("../../control-plane/data/halueval-sample.jsonl.gz");
    let mut rows: Vec<Row> = parse_rows(sample)
        .unwrap()
        .into_iter()
        .filter(|r| r.task == "qa")
        .take(8)
        .collect();
    let readme = |id: &str, response: &str, label: u8| Row {
        id: id.into(),
        task: "qa".into(),
        question: "Who wrote the first computer program?".into(),
        context: "Ada Lovelace wrote the first computer program in 1843, for Charles \
                  Babbage's Analytical Engine."
            .into(),
        response: response.into(),
        label,
    };
    rows.push(readme(
        "readme-1",
        "Ada Lovelace wrote the first computer program in 1843, for the Analytical Engine.",
        0,
    ));
    rows.push(readme(
        "readme-2",
        "The first computer program was written by Alan Turing in 1936 at Princeton on the \
         ENIAC, which he built with John von Neumann for the British navy.",
        1,
    ));
    // Shorter than a scoring interval: a stream blocked only at its end.
    rows.push(readme("readme-3", "Alan Turing.", 1));
    rows
}

/// The chat request of `row`: its knowledge as a tool message (even rows) or as the system
/// message (odd rows); `user` selects the scripted answer.
fn request(i: usize, row: &Row, stream: bool) -> Value {
    let mut messages = vec![];
    if i.is_multiple_of(2) {
        messages.push(json!({"role": "system", "content": "Answer from the retrieved documents."}));
        messages.push(json!({"role": "user", "content": row.question}));
        messages.push(json!({"role": "assistant", "content": null, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "search", "arguments": "{}"}}]}));
        messages.push(json!({"role": "tool", "tool_call_id": "c1", "content": row.context}));
    } else {
        messages
            .push(json!({"role": "system", "content": [{"type": "text", "text": row.context}]}));
    }
    messages.push(json!({"role": "user", "content": row.question}));
    json!({"model": "gpt-test", "messages": messages, "stream": stream, "user": row.id})
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(30))
        .build()
}

fn chat(stack: &Stack, body: &[u8], extra: &[(&str, &str)]) -> Answer {
    let auth = format!("Bearer {API_KEY}");
    let mut headers = vec![
        ("content-type", "application/json"),
        ("authorization", &auth),
    ];
    headers.extend_from_slice(extra);
    post(&agent(), &stack.url(CHAT), &headers, body).unwrap()
}

/// The SSE `data` payloads of a stream, as the client reads them.
fn stream(stack: &Stack, body: &Value) -> (Answer, Vec<String>) {
    let resp = agent()
        .post(&stack.url(CHAT))
        .set("content-type", "application/json")
        .set("authorization", &format!("Bearer {API_KEY}"))
        .send_string(&body.to_string())
        .unwrap();
    let head = Answer {
        status: resp.status(),
        headers: resp
            .headers_names()
            .into_iter()
            .filter_map(|n| resp.header(&n).map(|v| (n.clone(), v.to_string())))
            .collect(),
        body: String::new(),
    };
    let data = BufReader::new(resp.into_reader())
        .lines()
        .map(|l| l.unwrap())
        .filter_map(|l| l.strip_prefix("data: ").map(str::to_string))
        .collect();
    (head, data)
}

/// What the native pipeline gives `row` with the stack's current bundle.
fn native(scorer: &Scorer, tenant: &str, row: &Row) -> (f64, Verdict) {
    native_answer(scorer, tenant, row, &row.response)
}

/// What the native pipeline gives `answer` to `row`'s conversation.
fn native_answer(scorer: &Scorer, tenant: &str, row: &Row, answer: &str) -> (f64, Verdict) {
    let key = kakeya_core::signature::ed25519_public_b64(&[1; 32]);
    let gate = kakeya_core::Gate::from_json(
        json!({"bundle": {"cluster": "admin", "public_keys": [key]}})
            .to_string()
            .as_bytes(),
    )
    .unwrap();
    let req = ChatRequest {
        question: row.question.clone(),
        context: row.context.clone(),
        source: ContextSource::Tool,
        stream: false,
    };
    let ev = kakeya_core::pipeline::chat::evidence(&req, answer, None);
    let mut clock = || 0;
    let s = score(
        tenant,
        &ev,
        &gate,
        Some(scorer),
        kakeya_core::budget::BudgetAction::None,
        &mut ClockHost(&mut clock),
    )
    .unwrap();
    let risk = s.kakeya_json(ContextSource::Tool)["risk"].as_f64().unwrap();
    (risk, s.verdict)
}

/// Characters held back and scoring interval of the test stack's streams.
const WINDOW: usize = 16;
const EVERY: usize = 32;

/// How a streamed `row` ends under `block`, from the native pipeline: cut at the first
/// checkpoint (every [`EVERY`] characters, then the whole answer) whose prefix is not
/// accepted (`Some(checkpoint)`), or passed (`None`); with that prefix's risk and verdict.
fn native_stream(scorer: &Scorer, tenant: &str, row: &Row) -> (Option<usize>, f64, Verdict) {
    let len = row.response.chars().count();
    for at in (1..).map(|k| k * EVERY).take_while(|at| *at < len) {
        let prefix: String = row.response.chars().take(at).collect();
        let (risk, verdict) = native_answer(scorer, tenant, row, &prefix);
        if verdict != Verdict::Accept {
            return (Some(at), risk, verdict);
        }
    }
    let (risk, verdict) = native(scorer, tenant, row);
    ((verdict != Verdict::Accept).then_some(len), risk, verdict)
}

fn header_f64(a: &Answer, name: &str) -> f64 {
    a.header(name)
        .unwrap_or_else(|| panic!("no {name}: {a:?}"))
        .parse()
        .unwrap()
}

#[test]
fn chat_completions_are_scored_inline_plain_and_streamed() {
    let rows = rows();
    let answers: BTreeMap<String, String> = rows
        .iter()
        .map(|r| (r.id.clone(), r.response.clone()))
        .chain([(
            "no-context".to_string(),
            "Paris is lovely in spring.".to_string(),
        )])
        .collect();
    let upstream = LlmUpstream::start(answers, 7).unwrap();
    let mut opts = StackOptions::scoring(200);
    opts.env.extend([
        ("KAKEYA_LLM_BACKEND".into(), upstream.addr.to_string()),
        ("KAKEYA_GATEWAY_POLICY".into(), "block".into()),
        ("KAKEYA_GATEWAY_STREAM_WINDOW".into(), WINDOW.to_string()),
        (
            "KAKEYA_GATEWAY_STREAM_SCORE_EVERY".into(),
            EVERY.to_string(),
        ),
        // A secured ingest: the recording callout must carry the secret, or no decision of
        // this test reaches the decision log.
        (
            "KAKEYA_INGEST_SECRET".into(),
            "gateway-ingest-secret-0123456789abcdef".into(),
        ),
    ]);
    let stack = Stack::start(opts).unwrap();
    let tenant = kakeya_core::pipeline::chat_head::key_tenant(API_KEY.as_bytes()).unwrap();

    // The gate scores once it has the control plane's bundle. (Another tenant: an identical
    // conversation and answer of the same tenant is one decision, deduplicated like a PCS.)
    let no_context = json!({"model": "m", "user": "no-context",
                            "messages": [{"role": "user", "content": "What is Paris like?"}]});
    let warm = no_context.to_string().into_bytes();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let a = chat(&stack, &warm, &[("x-tenant-id", "warmup")]);
        assert_eq!(a.status, 200, "{a:?}");
        if a.header("x-kakeya-risk").is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "never scored: {a:?}");
    }
    let scorer = Scorer::new(stack.current_bundle().unwrap());

    // Plain completions: the native risk bit for bit, accepted answers unchanged, escalated
    // ones blocked.
    let mut seen = BTreeMap::new();
    let mut ids = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        let body = serde_json::to_vec(&request(i, row, false)).unwrap();
        let a = chat(&stack, &body, &[("accept-encoding", "gzip")]);
        assert_eq!(a.status, 200, "{a:?}");
        let (risk, verdict) = native(&scorer, &tenant, row);
        assert_eq!(header_f64(&a, "x-kakeya-risk"), (risk * 1e6).round() / 1e6);
        assert_eq!(
            a.header("x-kakeya-decision"),
            Some(verdict.as_str()),
            "{a:?}"
        );
        let source = if i.is_multiple_of(2) {
            "tool"
        } else {
            "system"
        };
        assert_eq!(a.header("x-kakeya-context"), Some(source));
        let v = a.json();
        match verdict {
            Verdict::Accept => {
                assert_eq!(v["choices"][0]["message"]["content"], json!(row.response));
                assert_eq!(v["choices"][0]["finish_reason"], "stop");
                assert!(v.get("kakeya").is_none(), "{v}");
            }
            _ => {
                assert_eq!(v["choices"][0]["finish_reason"], "content_filter", "{v}");
                assert_eq!(v["choices"][0]["message"]["content"], DEFAULT_REFUSAL);
                assert_eq!(v["kakeya"]["decision"], verdict.as_str());
                assert_eq!(v["kakeya"]["risk"].as_f64(), Some(risk));
                assert_eq!(
                    v["usage"]["total_tokens"], 20,
                    "the rest of the body is kept"
                );
            }
        }
        *seen.entry(verdict.as_str()).or_insert(0) += 1;
        ids.push((a.header("x-kakeya-decision-id").unwrap().to_string(), risk));
    }
    assert!(seen.get("accept").copied().unwrap_or(0) > 0, "{seen:?}");
    assert!(seen.get("escalate").copied().unwrap_or(0) > 0, "{seen:?}");
    // The backend never saw an accept-encoding it could compress with.
    assert!(upstream
        .requests()
        .iter()
        .all(|(h, _)| h.iter().all(|(k, _)| k != "accept-encoding")));

    // Every scored answer is a decision-log row of the key's tenant, with the served risk.
    let log = stack.decisions(Some(&tenant)).unwrap();
    for (id, risk) in &ids {
        let row = log
            .iter()
            .find(|r| r["pcs_id"] == json!(id))
            .unwrap_or_else(|| panic!("{id} not in the decision log"));
        assert_eq!(row["risk"].as_f64(), Some(*risk), "{row}");
        assert_eq!(row["tenant"], json!(tenant));
        assert!(row["features"].is_array());
    }
    assert!(stack.decisions(Some("default")).unwrap().is_empty());

    // Streamed under `block` (a 16-character window, scored every 32 characters), in chunks
    // of 1, 5 and 13 characters: a stream whose answer so far the native pipeline does not
    // accept at a checkpoint (or at its end) is cut there with a `content_filter` chunk carrying
    // that prefix's risk, the held-back content withheld; the others arrive unchanged with the
    // verdict chunk (the native risk bit for bit) before [DONE].
    let (mut cut_mid, mut cut_end, mut passed) = (0, 0, 0);
    for chunk_chars in [1, 5, 13] {
        upstream.set_chunk_chars(chunk_chars);
        for (i, row) in rows.iter().enumerate() {
            let (head, data) = stream(&stack, &request(i, row, true));
            assert_eq!(head.status, 200);
            assert!(head
                .header("content-type")
                .unwrap()
                .starts_with("text/event-stream"));
            assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{data:?}");
            let chunks: Vec<Value> = data[..data.len() - 1]
                .iter()
                .map(|d| serde_json::from_str(d).unwrap())
                .collect();
            let content: String = chunks
                .iter()
                .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
                .collect();
            let last = chunks.last().unwrap();
            assert_eq!(last["object"], "chat.completion.chunk");
            assert_eq!(
                chunks.iter().filter(|c| c.get("kakeya").is_some()).count(),
                1
            );
            let (cut, risk, verdict) = native_stream(&scorer, &tenant, row);
            assert_eq!(
                last["kakeya"]["risk"].as_f64(),
                Some(risk),
                "{row:?} {last}"
            );
            assert_eq!(last["kakeya"]["decision"], verdict.as_str());
            match cut {
                None => {
                    passed += 1;
                    assert_eq!(content, row.response);
                    assert_eq!(last["choices"], json!([]));
                }
                Some(at) => {
                    if at < row.response.chars().count() {
                        cut_mid += 1;
                    } else {
                        cut_end += 1;
                    }
                    assert_eq!(last["choices"][0]["finish_reason"], "content_filter");
                    assert!(row.response.starts_with(&content), "{content:?}");
                    // The window was held back: nothing at or past the checkpoint got out.
                    assert!(
                        content.chars().count() + WINDOW <= at.max(WINDOW),
                        "{content:?}"
                    );
                }
            }
        }
    }
    assert!(
        cut_mid > 0 && cut_end > 0 && passed > 0,
        "{cut_mid} {cut_end} {passed}"
    );

    // Chunks arrive as the backend sends them: content (or the cut) is read while the backend
    // still holds the rest of the stream.
    let long = rows
        .iter()
        .position(|r| r.response.chars().count() > 3 * WINDOW)
        .unwrap();
    upstream.set_chunk_chars(7);
    upstream.hold_after_chars(WINDOW + 7 * 2);
    let resp = agent()
        .post(&stack.url(CHAT))
        .set("content-type", "application/json")
        .send_string(&request(long, &rows[long], true).to_string())
        .unwrap();
    let mut lines = BufReader::new(resp.into_reader()).lines();
    let first = lines
        .by_ref()
        .map(|l| l.unwrap())
        .find(|l| {
            (l.contains("\"content\":\"") && !l.contains("\"content\":\"\""))
                || l.contains("content_filter")
        })
        .unwrap();
    assert!(
        !upstream.hold_timed_out(),
        "the gateway held the stream back"
    );
    upstream.release();
    let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    assert!(first.starts_with("data: "));
    assert!(first.contains("\"kakeya\"") || rest.iter().any(|l| l.contains("\"kakeya\"")));
    let all: Vec<&String> = [&first].into_iter().chain(&rest).collect();
    assert_eq!(
        all.iter().rev().find(|l| !l.is_empty()).map(|l| l.as_str()),
        Some("data: [DONE]")
    );
    assert!(!upstream.hold_timed_out());

    openai_client(&stack, &scorer, &tenant, &rows);

    // No context at all: scored as such (never treated as grounded), recorded.
    let a = chat(&stack, &warm, &[("x-tenant-id", "nocontext")]);
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.header("x-kakeya-context"), Some("none"));
    assert!(a.header("x-kakeya-risk").is_some(), "{a:?}");
    let id = a.header("x-kakeya-decision-id").unwrap();
    assert!(stack
        .decisions(Some("nocontext"))
        .unwrap()
        .iter()
        .any(|r| r["pcs_id"] == json!(id)));

    // Malformed requests: a JSON 400 from the gate, nothing reaches the backend.
    let before = upstream.requests().len();
    for (body, code) in [
        (&b"{\"messages\": [}"[..], "invalid_json"),
        (br#"{"messages": []}"#, "invalid_chat_request"),
        (
            br#"{"messages": [{"role": "oracle", "content": "x"}]}"#,
            "invalid_chat_request",
        ),
    ] {
        let a = chat(&stack, body, &[]);
        assert_eq!(a.status, 400, "{a:?}");
        assert_eq!(a.json()["code"], code, "{a:?}");
    }
    let a = post(
        &agent(),
        &stack.url(CHAT),
        &[("content-type", "text/plain")],
        b"hi",
    )
    .unwrap();
    assert_eq!(
        (a.status, a.json()["code"].clone()),
        (415, json!("unsupported_media_type"))
    );
    let a = post(
        &agent(),
        &stack.url(CHAT),
        &[
            ("content-type", "application/json"),
            ("x-tenant-id", "bad tenant"),
        ],
        b"{}",
    )
    .unwrap();
    assert_eq!(a.status, 400, "{a:?}");
    assert_eq!(upstream.requests().len(), before);

    budgets(&stack, &upstream, &warm);
}

/// The official `openai` Python client consumes every answer without error, plain and streamed
/// (with and without `stream_options.include_usage`), blocked ones included, and sees what
/// the native pipeline predicts. `KAKEYA_OPENAI_PYTHON` is the pinned venv `cargo xtask test`
/// installs; without it this check is skipped (and says so).
fn openai_client(stack: &Stack, scorer: &Scorer, tenant: &str, rows: &[Row]) {
    let Some(python) = std::env::var_os("KAKEYA_OPENAI_PYTHON").filter(|p| !p.is_empty()) else {
        eprintln!(
            "skipped: the openai-client check (KAKEYA_OPENAI_PYTHON is unset; cargo xtask test \
             installs the pinned openai package)"
        );
        return;
    };
    let mut bodies = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        bodies.push(request(i, row, false));
        bodies.push(request(i, row, true));
        let mut usage = request(i, row, true);
        usage["stream_options"] = json!({"include_usage": true});
        bodies.push(usage);
    }
    let file = std::env::temp_dir().join(format!("kakeya-openai-{}.json", std::process::id()));
    std::fs::write(&file, serde_json::to_vec(&bodies).unwrap()).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/openai_client.py");
    let out = std::process::Command::new(python)
        .arg(script)
        .arg(stack.url("/v1"))
        .arg(&file)
        .env("OPENAI_API_KEY", API_KEY)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&file);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let results = report["results"].as_array().unwrap();
    assert_eq!(results.len(), bodies.len());
    for (r, body) in results.iter().zip(&bodies) {
        assert!(r.get("error").is_none(), "{r}");
        let row = rows.iter().find(|x| json!(x.id) == body["user"]).unwrap();
        let kakeya = &r["kakeya"];
        if body["stream"] == json!(true) {
            let (cut, risk, verdict) = native_stream(scorer, tenant, row);
            assert_eq!(kakeya["risk"].as_f64(), Some(risk), "{r}");
            assert_eq!(kakeya["decision"], verdict.as_str());
            match cut {
                None => {
                    assert_eq!(r["content"], json!(row.response), "{r}");
                    assert_eq!(r["finish_reason"], "stop");
                }
                Some(_) => assert_eq!(r["finish_reason"], "content_filter", "{r}"),
            }
        } else {
            let (risk, verdict) = native(scorer, tenant, row);
            if verdict == Verdict::Accept {
                assert_eq!(r["content"], json!(row.response), "{r}");
                assert_eq!(r["finish_reason"], "stop");
            } else {
                assert_eq!(r["content"], DEFAULT_REFUSAL, "{r}");
                assert_eq!(r["finish_reason"], "content_filter");
                assert_eq!(kakeya["risk"].as_f64(), Some(risk), "{r}");
            }
        }
    }
    eprintln!(
        "openai {} consumed {} answers",
        report["openai"],
        results.len()
    );
}

/// Budgets on the chat route: a tenant whose (priced) recorded decisions crossed its hard cap
/// gets the OpenAI-shaped 402 (deny) before anything reaches the LLM backend.
fn budgets(stack: &Stack, upstream: &LlmUpstream, warm: &[u8]) {
    use kakeya_control_plane::cost::prices::{day_of_ms, format_day};
    let day = format_day(day_of_ms(kakeya_control_plane::now_ms()) - 1);
    // A decision costs 1: "nocontext" has spent at least 1.
    let price = json!({"effective_from": day, "per_request": 1.0});
    let book = stack.admin_post("/v1/cost/prices", &price).unwrap();
    assert_eq!(book.status, 201, "{}", book.body);
    // (Throttle's 429 shape is checked in kakeya-core: pipeline::chat's budget test.)
    let body = json!({"tenant": "nocontext", "soft_cap": 0.1, "hard_cap": 0.5,
                      "soft_action": "alert", "hard_action": "deny"});
    let r = agent()
        .put(&stack.admin_url("/v1/cost/budgets"))
        .set("authorization", &format!("Bearer {}", stack.admin_token))
        .set("content-type", "application/json")
        .send_string(&body.to_string())
        .unwrap();
    assert_eq!(r.status(), 200);
    let before = upstream.requests().len();
    let deadline = Instant::now() + Duration::from_secs(60);
    let denied = loop {
        let a = chat(stack, warm, &[("x-tenant-id", "nocontext")]);
        if a.status == 402 {
            break a;
        }
        assert!(Instant::now() < deadline, "never denied: {a:?}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let v = denied.json();
    assert_eq!(v["code"], "budget_exceeded", "{v}");
    assert_eq!(v["error"]["code"], "budget_exceeded");
    assert_eq!(v["error"]["type"], "insufficient_quota");
    // Served requests went to the backend before the budgets landed; refused ones never did.
    let served = upstream.requests().len() - before;
    let refused = chat(stack, warm, &[("x-tenant-id", "nocontext")]);
    assert_eq!(refused.status, 402);
    assert_eq!(upstream.requests().len() - before, served);
}
