//! Chat request/response parsing and the SSE parser, including every chunking of a stream.

use super::*;
use proptest::prelude::*;
use serde_json::json;

fn req(v: serde_json::Value, pointer: Option<&str>) -> Result<ChatRequest, ChatError> {
    parse_request(v.to_string().as_bytes(), pointer)
}

#[test]
fn question_is_the_last_user_message_and_tool_messages_are_the_context() {
    let r = req(
        json!({"model": "m", "messages": [
            {"role": "system", "content": "You answer from the documents."},
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": null, "tool_calls": []},
            {"role": "tool", "tool_call_id": "1", "content": "Paris is the capital of France."},
            {"role": "tool", "tool_call_id": "2", "content": [{"type": "text", "text": "It has 2.1M people."}]},
            {"role": "user", "content": [{"type": "text", "text": "What is"}, {"type": "image_url", "image_url": {"url": "x"}}, {"type": "text", "text": "the capital?"}]},
        ]}),
        Some("/kakeya/context"),
    )
    .unwrap();
    assert_eq!(r.question, "What is\nthe capital?");
    assert_eq!(
        r.context,
        "Paris is the capital of France.\n\nIt has 2.1M people."
    );
    assert_eq!(r.source, ContextSource::Tool);
    assert!(!r.stream);
}

#[test]
fn context_falls_back_to_the_pointer_then_the_system_message_then_none() {
    let base = |extra: serde_json::Value| {
        let mut v = json!({"stream": true, "messages": [
            {"role": "system", "content": "Knowledge: the Seine flows through Paris."},
            {"role": "user", "content": "Which river?"},
        ]});
        if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
            o.extend(e.clone());
        }
        v
    };
    let p = req(
        base(json!({"kakeya": {"context": [{"text": "doc one"}, "doc two"]}})),
        Some("/kakeya/context"),
    )
    .unwrap();
    assert_eq!(
        (p.context.as_str(), p.source),
        ("doc one\n\ndoc two", ContextSource::Pointer)
    );
    assert!(p.stream);
    // The pointer configured but absent (or empty): the system message.
    let s = req(base(json!({})), Some("/kakeya/context")).unwrap();
    assert_eq!(s.source, ContextSource::System);
    assert_eq!(s.context, "Knowledge: the Seine flows through Paris.");
    let none = req(
        json!({"messages": [{"role": "user", "content": "hi"}]}),
        None,
    )
    .unwrap();
    assert_eq!(
        (none.context.as_str(), none.source),
        ("", ContextSource::None)
    );
}

#[test]
fn malformed_requests_are_typed_errors() {
    let code = |b: &[u8]| parse_request(b, None).unwrap_err().code;
    assert_eq!(code(b"{not json"), "invalid_json");
    assert_eq!(code(b""), "invalid_json");
    assert_eq!(code(br#"{"messages": "x"}"#), "invalid_chat_request");
    assert_eq!(code(br#"{"messages": []}"#), "invalid_chat_request");
    assert_eq!(
        code(br#"{"messages": [{"content": "x"}]}"#),
        "invalid_chat_request"
    );
    assert_eq!(
        code(br#"{"messages": [{"role": "wizard", "content": "x"}]}"#),
        "invalid_chat_request"
    );
    assert_eq!(
        code(br#"{"stream": "yes", "messages": [{"role": "user", "content": "x"}]}"#),
        "invalid_chat_request"
    );
}

#[test]
fn responses_and_blocked_bodies() {
    let body = json!({"id": "c1", "object": "chat.completion", "model": "m", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "Paris."}, "finish_reason": "stop"}
    ], "usage": {"total_tokens": 3}})
    .to_string();
    assert_eq!(parse_response(body.as_bytes()).unwrap().content, "Paris.");
    // Without both counts there is no usage; with them, it survives its header.
    assert_eq!(parse_response(body.as_bytes()).unwrap().usage, None);
    let with = json!({"choices": [{"message": {"content": "x"}}],
                      "usage": {"prompt_tokens": 11, "completion_tokens": 4, "total_tokens": 15}});
    let u = parse_response(with.to_string().as_bytes())
        .unwrap()
        .usage
        .unwrap();
    assert_eq!(TokenUsage::parse_header(&u.header_value()), Some(u));
    assert_eq!(u.header_value(), "11,4");
    assert_eq!(TokenUsage::parse_header("11"), None);
    assert_eq!(TokenUsage::parse_header("-1,2"), None);
    assert_eq!(
        parse_response(b"{\"choices\": []}").unwrap_err().code,
        "upstream_invalid"
    );
    assert_eq!(
        parse_response(b"<html>").unwrap_err().code,
        "upstream_invalid"
    );
    let blocked =
        blocked_completion(body.as_bytes(), "no", &json!({"decision": "reject"})).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&blocked).unwrap();
    assert_eq!(v["choices"][0]["finish_reason"], "content_filter");
    assert_eq!(v["choices"][0]["message"]["content"], "no");
    assert_eq!(v["kakeya"]["decision"], "reject");
    assert_eq!(v["id"], "c1");
    assert_eq!(v["usage"]["total_tokens"], 3);
    assert!(blocked_completion(b"[1]", "no", &json!({})).is_none());
}

/// An OpenAI-format stream (as the API sends it, with a usage chunk).
fn stream(newline: &str) -> String {
    let chunk = |delta: serde_json::Value, finish: serde_json::Value| {
        json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 7, "model": "gpt-x",
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        .to_string()
    };
    let mut events = vec![
        format!(": keep-alive{newline}"),
        chunk(json!({"role": "assistant", "content": ""}), json!(null)),
        chunk(json!({"content": "The Seine "}), json!(null)),
        chunk(json!({"content": "flows through Paris — naïvely ✓."}), json!(null)),
        chunk(json!({}), json!("stop")),
        json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 7, "model": "gpt-x",
               "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}}).to_string(),
        "[DONE]".to_string(),
    ];
    let first = events.remove(0);
    let mut out = first;
    for e in events {
        out.push_str(&format!("data: {e}{newline}{newline}"));
    }
    out
}

/// Feeds `chunks`; returns the raw bytes out, the answer, and the data payloads.
fn run(chunks: &[&[u8]]) -> (Vec<u8>, StreamAnswer, Vec<String>) {
    let mut p = SseParser::new(64 * 1024);
    let mut a = StreamAnswer::new(1 << 20);
    let (mut raw, mut data) = (Vec::new(), Vec::new());
    for c in chunks {
        for e in p.feed(c) {
            raw.extend_from_slice(&e.raw);
            if let Some(d) = e.data {
                a.push(&d);
                data.push(d);
            }
        }
    }
    if let Some(rest) = p.finish() {
        raw.extend_from_slice(&rest);
    }
    (raw, a, data)
}

#[test]
fn a_whole_stream_accumulates_its_content() {
    for nl in ["\n", "\r\n", "\r"] {
        let s = stream(nl);
        let (raw, a, data) = run(&[s.as_bytes()]);
        assert_eq!(raw, s.as_bytes(), "{nl:?}");
        assert_eq!(
            a.content, "The Seine flows through Paris — naïvely ✓.",
            "{nl:?}"
        );
        assert!(a.done && !a.truncated && a.malformed == 0);
        assert_eq!(
            (a.id.as_str(), a.model.as_str(), a.created),
            ("chatcmpl-1", "gpt-x", 7)
        );
        assert_eq!(data.len(), 6, "{nl:?}: comments carry no data");
        let usage = a.usage.unwrap();
        assert_eq!((usage.prompt_tokens, usage.completion_tokens), (5, 7));
    }
}

#[test]
fn every_two_and_three_way_split_gives_the_same_answer() {
    let s = stream("\r\n");
    let b = s.as_bytes();
    let (_, whole, _) = run(&[b]);
    for i in 0..=b.len() {
        let (x, y) = b.split_at(i);
        let (raw, a, _) = run(&[x, y]);
        assert_eq!(raw, b);
        assert_eq!(a, whole, "split at {i}");
    }
    for i in (0..b.len()).step_by(7) {
        for j in (i..b.len()).step_by(5) {
            let (raw, a, _) = run(&[&b[..i], &b[i..j], &b[j..]]);
            assert_eq!(raw, b);
            assert_eq!(a, whole, "split at {i}, {j}");
        }
    }
}

#[test]
fn multi_line_data_is_joined_and_the_verdict_event_is_a_chunk() {
    let (_, _, data) = run(&[b"data: {\"a\":\ndata: 1}\n\nevent: x\nid: 3\n\n"]);
    assert_eq!(data, vec!["{\"a\":\n1}".to_string()]);
    let mut a = StreamAnswer::new(16);
    a.push(r#"{"id":"i","model":"m","created":1,"choices":[{"index":0,"delta":{"content":"0123456789"}}]}"#);
    a.push(r#"{"choices":[{"index":1,"delta":{"content":"other choice"}},{"index":0,"delta":{"content":"0123456789"}}]}"#);
    a.push("not json");
    assert_eq!(
        (a.content.as_str(), a.truncated, a.malformed),
        ("0123456789", true, 1)
    );
    let ev = a.verdict_event(&json!({"decision": "accept"}));
    let (_, _, data) = run(&[&ev]);
    let v: serde_json::Value = serde_json::from_str(&data[0]).unwrap();
    assert_eq!(v["object"], "chat.completion.chunk");
    assert_eq!(v["choices"], json!([]));
    assert_eq!(v["kakeya"]["decision"], "accept");
}

#[test]
fn an_oversized_event_stops_parsing_and_passes_through() {
    let mut p = SseParser::new(100);
    let big = format!("data: {}\n\n", "x".repeat(500));
    let out = p.feed(big.as_bytes());
    assert!(p.overflowed());
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].raw, big.as_bytes());
    assert_eq!(out[0].data, None);
    let more = p.feed(b"data: [DONE]\n\n");
    assert_eq!(more[0].raw, b"data: [DONE]\n\n");
    assert_eq!(more[0].data, None);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_chunking_gives_the_same_answer(cuts in proptest::collection::vec(0usize..2000, 0..12)) {
        let s = stream("\n");
        let b = s.as_bytes();
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (b.len() + 1)).collect();
        cuts.sort_unstable();
        let mut chunks = Vec::new();
        let mut last = 0;
        for c in cuts {
            chunks.push(&b[last..c]);
            last = c;
        }
        chunks.push(&b[last..]);
        let (raw, a, _) = run(&chunks);
        let (_, whole, _) = run(&[b]);
        prop_assert_eq!(raw, b.to_vec());
        prop_assert_eq!(a, whole);
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_are_passed_through(
        chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..8)
    ) {
        let mut p = SseParser::new(256);
        let mut a = StreamAnswer::new(1024);
        let mut raw = Vec::new();
        for c in &chunks {
            for e in p.feed(c) {
                raw.extend_from_slice(&e.raw);
                if let Some(d) = e.data { a.push(&d); }
            }
        }
        raw.extend(p.finish().unwrap_or_default());
        prop_assert_eq!(raw, chunks.concat());
        prop_assert!(a.content.len() <= 1024);
    }

    #[test]
    fn arbitrary_request_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = parse_request(&body, Some("/a/0"));
        let _ = parse_response(&body);
    }
}

#[test]
fn tenant_from_the_header_or_the_hash_of_the_api_key() {
    let cfg = ChatConfig::default();
    let h = |pairs: &[(&str, &str)]| -> Vec<(String, Vec<u8>)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect()
    };
    let post = [(":method", "POST"), ("content-type", "application/json")];
    let with = |extra: (&str, &str)| {
        let mut v = post.to_vec();
        v.push(extra);
        crate::pipeline::chat_head::on_headers(&h(&v), &cfg)
    };
    assert_eq!(with(("x-tenant-id", "acme")).unwrap(), "acme");
    let t = with(("authorization", "Bearer sk-secret-123")).unwrap();
    assert_eq!(
        t,
        crate::pipeline::chat_head::key_tenant(b"sk-secret-123").unwrap()
    );
    assert!(t.starts_with("key-") && t.len() == 36 && !t.contains("secret"));
    assert!(crate::signature::valid_tenant_id(&t));
    assert_eq!(
        crate::pipeline::chat_head::on_headers(&h(&post), &cfg).unwrap(),
        "default"
    );
    assert_eq!(with(("x-tenant-id", "no spaces")).unwrap_err().status, 400);
    let get = h(&[(":method", "GET")]);
    assert_eq!(
        crate::pipeline::chat_head::on_headers(&get, &cfg)
            .unwrap_err()
            .status,
        405
    );
    let xml = h(&[(":method", "POST"), ("content-type", "text/xml")]);
    assert_eq!(
        crate::pipeline::chat_head::on_headers(&xml, &cfg)
            .unwrap_err()
            .status,
        415
    );
    assert!(cfg.is_chat_path("/v1/chat/completions?x=1"));
    assert!(!cfg.is_chat_path("/v1/chat/completions/x"));
}
