//! The LLM-gateway route (`POST /v1/chat/completions`, docs/GATEWAY.md): a thin adapter from
//! Envoy's callbacks to [`kakeya_core::chat`] (parsing) and [`kakeya_core::pipeline::chat`]
//! (scoring). The request goes on to the LLM backend unchanged (but for `accept-encoding`,
//! removed so the answer arrives readable); the answer is scored when it is complete:
//!
//! * plain JSON: the response headers are held and the body buffered; the verdict goes into
//!   `x-kakeya-*` response headers, and a blocked answer's choices are replaced by the refusal;
//! * SSE: events pass through as they complete; before `data: [DONE]` (or at the end of the
//!   stream) one more chunk carries the verdict in its `kakeya` object.
//!
//! Each scored answer is recorded at the control plane's ingest (a callout with the decision's
//! headers and the built PCS), and the response waits for that callout, so the decision is
//! durable before the client sees the end of the answer; a failed recording is counted, the
//! answer still goes out.

use crate::host;
use crate::root::Shared;
use kakeya_core::chat::{
    blocked_completion, parse_request, parse_response, ChatConfig, ChatPolicy, ChatRequest,
    ContextSource, NoContext, SseParser, StreamAnswer,
};
use kakeya_core::pipeline::chat::{self as score, Scored, Verdict, H_CONTEXT, H_DECISION};
use kakeya_core::pipeline::chat_head as head;
use kakeya_core::pipeline::{error_body, is_json_content_type, ClockHost, LocalReply};
use kakeya_core::SUBMIT_PATH;
use proxy_wasm::types::{Action, BufferType, MapType};
use std::rc::Rc;

/// Largest SSE event the parser holds (a chunk of an OpenAI stream is a few hundred bytes).
pub const MAX_SSE_EVENT: usize = 64 * 1024;
/// The header ingest checks the shared secret in (the control plane's `api::auth`).
const INGEST_SECRET_HEADER: &str = "x-kakeya-ingest-secret";

/// Deadline of the recording callout to ingest.
pub const RECORD_TIMEOUT_MS: u32 = 2000;
/// Counters (global, by outcome): `kakeya_gate.chat_<outcome>_total`.
pub fn outcome_metric(outcome: &str) -> String {
    format!("kakeya_gate.chat_{outcome}_total")
}

enum Phase {
    /// Waiting for the end of the request body.
    AwaitRequest,
    /// Sent upstream; the answer will be scored.
    AwaitResponse(ChatRequest),
    /// No usable context under `no_context = "skip"`: passed through, flagged.
    Skip,
    /// Plain answer: headers held, body buffered.
    Buffer(ChatRequest),
    /// Streamed answer.
    Stream(Box<Streaming>),
    /// Waiting for the ingest callout `token`; the response resumes on its answer.
    Recording(u32),
    Done,
    Replied,
}

struct Streaming {
    req: ChatRequest,
    parser: SseParser,
    answer: StreamAnswer,
    scored: bool,
}

pub struct ChatFlow {
    shared: Rc<Shared>,
    tenant: String,
    phase: Phase,
}

fn cfg(shared: &Shared) -> Option<&ChatConfig> {
    shared.gate.chat.as_ref()
}

impl ChatFlow {
    /// The request headers of the chat route: a 4xx reply, or the flow awaiting the body.
    pub fn start(shared: Rc<Shared>, headers: &[(String, Vec<u8>)]) -> Result<ChatFlow, Action> {
        let Some(c) = cfg(&shared) else {
            return Err(Action::Continue);
        };
        let tenant = match head::on_headers(headers, c) {
            Ok(t) => t,
            Err(r) => {
                count("refused");
                return Err(reply(&r));
            }
        };
        // An encoded answer could not be read; the LLM answers identity-encoded without it.
        if host::remove_map_value(MapType::HttpRequestHeaders, "accept-encoding").is_err() {
            return Err(reply(&unavailable()));
        }
        Ok(ChatFlow {
            shared,
            tenant,
            phase: Phase::AwaitRequest,
        })
    }

    pub fn request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        match self.phase {
            Phase::AwaitRequest if !end_of_stream => Action::Pause,
            Phase::AwaitRequest => {
                match host::get_buffer(BufferType::HttpRequestBody, 0, body_size) {
                    Ok(body) => self.on_request(&body),
                    Err(_) => self.fail(),
                }
            }
            Phase::Replied => Action::Pause,
            _ => Action::Continue,
        }
    }

    /// Trailers end the request: judge the buffered body.
    pub fn request_trailers(&mut self) -> Action {
        match self.phase {
            Phase::AwaitRequest => {
                match host::get_buffer(BufferType::HttpRequestBody, 0, usize::MAX) {
                    Ok(body) => self.on_request(&body),
                    Err(_) => self.fail(),
                }
            }
            Phase::Replied => Action::Pause,
            _ => Action::Continue,
        }
    }

    /// The request had no body at all.
    pub fn empty_request(&mut self) -> Action {
        self.on_request(&[])
    }

    fn on_request(&mut self, body: &[u8]) -> Action {
        let Some(c) = cfg(&self.shared) else {
            return Action::Continue;
        };
        match parse_request(body, c.context_pointer.as_deref()) {
            Err(e) => {
                count("refused");
                self.phase = Phase::Replied;
                reply(&LocalReply {
                    status: 400,
                    headers: Vec::new(),
                    body: error_body(&e.message, e.code),
                    code: e.code,
                })
            }
            Ok(req) if req.source == ContextSource::None && c.no_context == NoContext::Skip => {
                self.phase = Phase::Skip;
                Action::Continue
            }
            Ok(req) => {
                self.phase = Phase::AwaitResponse(req);
                Action::Continue
            }
        }
    }

    fn fail(&mut self) -> Action {
        self.phase = Phase::Replied;
        reply(&unavailable())
    }

    pub fn response_headers(&mut self) -> Action {
        let phase = std::mem::replace(&mut self.phase, Phase::Done);
        let req = match phase {
            Phase::AwaitResponse(req) => req,
            Phase::Skip => {
                count("skipped");
                set_response_header(H_DECISION, "skipped");
                set_response_header(H_CONTEXT, ContextSource::None.as_str());
                return Action::Continue;
            }
            other => {
                self.phase = other;
                return Action::Continue;
            }
        };
        let Ok(headers) = host::get_map(MapType::HttpResponseHeaders) else {
            return self.unscored("unreadable");
        };
        let value = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_slice())
        };
        if value(":status") != Some(b"200".as_slice()) {
            // Errors of the LLM backend pass through unscored.
            return self.unscored("upstream_status");
        }
        let ct = value("content-type").unwrap_or_default();
        let sse = ct
            .get(..17)
            .is_some_and(|p| p.eq_ignore_ascii_case(b"text/event-stream"));
        if !(sse || ct.is_empty() || is_json_content_type(ct)) {
            return self.unscored("content_type");
        }
        // The body changes (a blocked answer, the verdict chunk): no stale length.
        if host::remove_map_value(MapType::HttpResponseHeaders, "content-length").is_err() {
            return self.unscored("unreadable");
        }
        let max = cfg(&self.shared).map_or(1 << 20, |c| c.max_response_bytes);
        if sse {
            set_response_header(H_CONTEXT, req.source.as_str());
            self.phase = Phase::Stream(Box::new(Streaming {
                req,
                parser: SseParser::new(MAX_SSE_EVENT),
                answer: StreamAnswer::new(max),
                scored: false,
            }));
            Action::Continue
        } else {
            self.phase = Phase::Buffer(req);
            Action::Pause
        }
    }

    fn unscored(&mut self, why: &str) -> Action {
        count("unscored");
        set_response_header(H_DECISION, "unscored");
        set_response_header("x-kakeya-unscored-reason", why);
        self.phase = Phase::Done;
        Action::Continue
    }

    pub fn response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        match self.phase {
            Phase::Buffer(_) => self.buffered(body_size, end_of_stream),
            Phase::Stream(_) => self.streamed(body_size, end_of_stream),
            Phase::Recording(_) => Action::Pause,
            _ => Action::Continue,
        }
    }

    fn buffered(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let max = cfg(&self.shared).map_or(1 << 20, |c| c.max_response_bytes);
        if body_size > max {
            return self.unscored("too_large");
        }
        if !end_of_stream {
            return Action::Pause;
        }
        let Phase::Buffer(req) = std::mem::replace(&mut self.phase, Phase::Done) else {
            return Action::Continue;
        };
        let Ok(body) = host::get_buffer(BufferType::HttpResponseBody, 0, body_size) else {
            return self.unscored("unreadable");
        };
        let answer = match parse_response(&body) {
            Ok(a) => a,
            Err(_) => return self.unscored("upstream_invalid"),
        };
        let scored = match self.score(&req, &answer.content) {
            Ok(s) => s,
            Err(r) => {
                // Fail closed (no bundle, failure mode closed): the answer is withheld.
                count("unavailable");
                set_response_header(":status", &r.status.to_string());
                set_response_header("content-type", "application/json");
                let _ = host::set_buffer(
                    BufferType::HttpResponseBody,
                    0,
                    body_size,
                    r.body.as_bytes(),
                );
                return Action::Continue;
            }
        };
        for (name, v) in scored.client_headers(req.source) {
            set_response_header(name, &v);
        }
        if self.blocks(scored.verdict) {
            let kakeya = scored.kakeya_json(req.source);
            let refusal = cfg(&self.shared).map_or("", |c| c.refusal.as_str());
            if let Some(b) = blocked_completion(&body, refusal, &kakeya) {
                if host::set_buffer(BufferType::HttpResponseBody, 0, body_size, &b).is_ok() {
                    count("blocked");
                    set_response_header("x-kakeya-blocked", "true");
                }
            }
        }
        self.record(&scored)
    }

    fn blocks(&self, v: Verdict) -> bool {
        let policy = cfg(&self.shared).map_or(ChatPolicy::Annotate, |c| c.policy);
        v == Verdict::Reject || (v == Verdict::Escalate && policy == ChatPolicy::Block)
    }

    fn streamed(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Ok(chunk) = host::get_buffer(BufferType::HttpResponseBody, 0, body_size) else {
            // Unreadable: passed on as it is, unscored.
            self.phase = Phase::Done;
            count("unscored");
            return Action::Continue;
        };
        let Phase::Stream(s) = &mut self.phase else {
            return Action::Continue;
        };
        let mut out = Vec::with_capacity(chunk.len() + 512);
        let mut verdict: Option<Scored> = None;
        for e in s.parser.feed(&chunk) {
            let done = e.data.as_deref().is_some_and(|d| s.answer.push(d));
            if done && !s.scored {
                s.scored = true;
                let (bytes, scored) = verdict_event(&self.shared, &self.tenant, s);
                out.extend_from_slice(&bytes);
                verdict = scored;
            }
            out.extend_from_slice(&e.raw);
        }
        if end_of_stream {
            if let Some(rest) = s.parser.finish() {
                out.extend_from_slice(&rest);
            }
            if !s.scored {
                // The stream ended without [DONE]: the verdict still comes last.
                s.scored = true;
                let (bytes, scored) = verdict_event(&self.shared, &self.tenant, s);
                out.extend_from_slice(&bytes);
                verdict = scored;
            }
        }
        if out != chunk
            && host::set_buffer(BufferType::HttpResponseBody, 0, body_size, &out).is_err()
        {
            count("unscored");
        }
        match verdict {
            Some(scored) => self.record(&scored),
            None => Action::Continue,
        }
    }

    fn score(&self, req: &ChatRequest, answer: &str) -> Result<Scored, LocalReply> {
        score_answer(&self.shared, &self.tenant, req, answer)
    }

    /// Sends the decision to ingest and holds the response until it answers.
    fn record(&mut self, scored: &Scored) -> Action {
        count(scored.verdict.as_str());
        let cluster = cfg(&self.shared).map_or("kakeya_ingest", |c| c.record_cluster.as_str());
        let len = scored.pcs_body.len().to_string();
        let mut headers: Vec<(&str, &str)> = vec![
            (":method", "POST"),
            (":path", SUBMIT_PATH),
            (":authority", "kakeya-ingest"),
            ("content-type", "application/json"),
            ("content-length", len.as_str()),
        ];
        headers.extend(scored.headers.iter().map(|(k, v)| (*k, v.as_str())));
        // The ingest secret, from the VM's environment (WASI; Envoy fills it from
        // `vm_config.environment_variables`): without it a secured ingest refuses the record.
        let secret = cfg(&self.shared)
            .and_then(|c| c.ingest_secret_env.as_deref())
            .and_then(|name| std::env::var(name).ok());
        if let Some(secret) = secret.as_deref() {
            headers.push((INGEST_SECRET_HEADER, secret));
        }
        match host::dispatch_http_call(cluster, headers, &scored.pcs_body, RECORD_TIMEOUT_MS) {
            Ok(token) => {
                self.phase = Phase::Recording(token);
                Action::Pause
            }
            Err(_) => {
                count("record_errors");
                self.phase = Phase::Done;
                Action::Continue
            }
        }
    }

    /// The ingest callout answered (or failed): the response goes on.
    pub fn call_response(&mut self, token_id: u32) {
        let Phase::Recording(token) = self.phase else {
            return;
        };
        if token != token_id {
            return;
        }
        let status = host::get_map(MapType::HttpCallResponseHeaders)
            .ok()
            .and_then(|h| h.into_iter().find(|(k, _)| k == ":status"))
            .map(|(_, v)| v);
        if !matches!(status.as_deref(), Some(b"200" | b"202")) {
            count("record_errors");
        }
        self.phase = Phase::Done;
        let _ = host::continue_response();
    }
}

fn score_answer(
    shared: &Shared,
    tenant: &str,
    req: &ChatRequest,
    answer: &str,
) -> Result<Scored, LocalReply> {
    let task = cfg(shared).and_then(|c| c.task);
    let ev = score::evidence(req, answer, task);
    let bundle = shared.current_bundle();
    let mut clock = || host::now_ns().unwrap_or(0);
    score::score(
        tenant,
        &ev,
        &shared.gate,
        bundle.as_deref(),
        &mut ClockHost(&mut clock),
    )
}

/// The verdict chunk of a stream, and the scored answer to record (none when unscored).
fn verdict_event(shared: &Shared, tenant: &str, s: &Streaming) -> (Vec<u8>, Option<Scored>) {
    let unscored = |why: &str| {
        count("unscored");
        serde_json::json!({"decision": "unscored", "reason": why})
    };
    if s.parser.overflowed() || s.answer.truncated {
        return (s.answer.verdict_event(&unscored("too_large")), None);
    }
    match score_answer(shared, tenant, &s.req, &s.answer.content) {
        Ok(scored) => {
            let k = scored.kakeya_json(s.req.source);
            (s.answer.verdict_event(&k), Some(scored))
        }
        Err(r) => (s.answer.verdict_event(&unscored(r.code)), None),
    }
}

/// Silent on failure: the SDK's log macros unwrap internally.
fn count(outcome: &str) {
    if let Ok(id) = host::define_counter(&outcome_metric(outcome)) {
        let _ = host::increment(id, 1);
    }
}

fn set_response_header(name: &str, value: &str) {
    // Best effort: a missing annotation header is not worth failing an answer for.
    let _ = host::set_map_value(MapType::HttpResponseHeaders, name, value);
}

fn unavailable() -> LocalReply {
    let mut r = LocalReply::new(
        503,
        "gate_unavailable",
        "the gate cannot process this request right now; retry",
    );
    r.headers.push(("retry-after".into(), "1".into()));
    r
}

fn reply(r: &LocalReply) -> Action {
    let _ = host::send_local_response(r.status, &r.all_headers(), r.body.as_bytes());
    Action::Pause
}
