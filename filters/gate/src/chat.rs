//! The LLM-gateway route (`POST /v1/chat/completions`, docs/GATEWAY.md): a thin adapter from
//! Envoy's callbacks to [`kakeya_core::chat`] (parsing) and [`kakeya_core::pipeline::chat`]
//! (scoring). The request goes on to the LLM backend unchanged (but for `accept-encoding`,
//! removed so the answer arrives readable); the answer is scored when it is complete:
//!
//! * plain JSON: the response headers are held and the body buffered; the verdict goes into
//!   `x-kakeya-*` response headers, and a blocked answer's choices are replaced by the refusal;
//! * SSE: events pass through as they complete; before `data: [DONE]` (or at the end of the
//!   stream) one more chunk carries the verdict in its `kakeya` object. Under `block`, the last
//!   `stream_window` characters are held back ([`HoldBack`]) and the answer so far is scored
//!   every `stream_score_every` characters: a blocked stream is cut with a `content_filter`
//!   chunk and `[DONE]`, the held content dropped and the rest of the backend's stream
//!   discarded (the response ends when the recording callout has answered).
//!
//! Each scored answer is recorded at the control plane's ingest (a callout with the decision's
//! headers and the built PCS), and the response waits for that callout, so the decision is
//! durable before the client sees the end of the answer; a failed recording is counted, the
//! answer still goes out.

use crate::host;
use crate::root::Shared;
use kakeya_core::budget::BudgetAction;
use kakeya_core::chat::{
    blocked_completion, parse_request, parse_response, prefix_chars, ChatConfig, ChatPolicy,
    ChatRequest, ContextSource, HoldBack, NoContext, SseParser, StreamAnswer, TokenUsage,
    H_LLM_TOKENS,
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
    /// A blocked stream was cut: the backend's remaining bytes are discarded, and the end of
    /// the response waits for the recording callout `token` (`paused`: it is waiting).
    Drain {
        token: Option<u32>,
        paused: bool,
    },
    Done,
    Replied,
}

struct Streaming {
    req: ChatRequest,
    parser: SseParser,
    answer: StreamAnswer,
    scored: bool,
    /// Under `block`: the held-back tail of the answer.
    hold: Option<HoldBack>,
}

pub struct ChatFlow {
    shared: Rc<Shared>,
    tenant: String,
    /// The tenant's budget action in force (checked with the request body).
    budget: BudgetAction,
    phase: Phase,
}

/// Whose answer is scored, and how.
struct Who<'a> {
    shared: &'a Shared,
    tenant: &'a str,
    budget: BudgetAction,
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
            budget: BudgetAction::None,
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
            Ok(req) => {
                let bundle = self.shared.current_bundle();
                match head::enforce_budget(&self.tenant, bundle.as_deref()) {
                    Err(r) => {
                        // Over its cap: refused before the LLM backend is paid for.
                        count("budget_refused");
                        self.phase = Phase::Replied;
                        reply(&r)
                    }
                    Ok(action) => {
                        self.budget = action;
                        self.on_conversation(req, c.no_context)
                    }
                }
            }
        }
    }

    fn on_conversation(&mut self, req: ChatRequest, no_context: NoContext) -> Action {
        match req {
            req if req.source == ContextSource::None && no_context == NoContext::Skip => {
                self.phase = Phase::Skip;
                Action::Continue
            }
            req => {
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
                hold: cfg(&self.shared)
                    .filter(|c| c.policy == ChatPolicy::Block)
                    .map(|c| HoldBack::new(c.stream_window, c.stream_score_every)),
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
            Phase::Drain { .. } => self.drain(body_size, end_of_stream),
            _ => Action::Continue,
        }
    }

    /// After a cut: nothing more reaches the client; the end waits for the recording.
    fn drain(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if body_size > 0 {
            let _ = host::set_buffer(BufferType::HttpResponseBody, 0, body_size, &[]);
        }
        match &mut self.phase {
            Phase::Drain {
                token: Some(_),
                paused,
            } if end_of_stream => {
                *paused = true;
                Action::Pause
            }
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
        if blocks(&self.shared, scored.verdict) {
            let kakeya = scored.kakeya_json(req.source);
            let refusal = cfg(&self.shared).map_or("", |c| c.refusal.as_str());
            if let Some(b) = blocked_completion(&body, refusal, &kakeya) {
                if host::set_buffer(BufferType::HttpResponseBody, 0, body_size, &b).is_ok() {
                    count("blocked");
                    set_response_header("x-kakeya-blocked", "true");
                }
            }
        }
        self.record(&scored, answer.usage)
    }

    fn streamed(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Ok(chunk) = host::get_buffer(BufferType::HttpResponseBody, 0, body_size) else {
            // Unreadable: passed on as it is, unscored.
            self.phase = Phase::Done;
            count("unscored");
            return Action::Continue;
        };
        let who = Who {
            shared: &self.shared,
            tenant: &self.tenant,
            budget: self.budget,
        };
        let Phase::Stream(s) = &mut self.phase else {
            return Action::Continue;
        };
        let mut out = Vec::with_capacity(chunk.len() + 512);
        let mut verdict: Option<Scored> = None;
        let mut cut = false;
        for e in s.parser.feed(&chunk) {
            let before = s.answer.chars;
            let done = e.data.as_deref().is_some_and(|d| s.answer.push(d));
            if done && !s.scored {
                s.scored = true;
                let end = end_event(&who, s, &mut out);
                verdict = end.scored;
                cut = end.cut;
                if cut {
                    break;
                }
                out.extend_from_slice(&e.raw);
            } else if let Some(h) = s.hold.as_mut() {
                h.hold(e.raw, s.answer.chars.saturating_sub(before), &mut out);
                if s.parser.overflowed() || s.answer.truncated {
                    // No longer scorable: nothing to hold back for.
                    h.release(&mut out);
                    s.hold = None;
                } else if let Some(b) = checkpoints(&who, s) {
                    out.extend_from_slice(&b.0);
                    verdict = Some(b.1);
                    s.scored = true;
                    cut = true;
                    break;
                }
            } else {
                out.extend_from_slice(&e.raw);
            }
        }
        if end_of_stream && !cut {
            let rest = s.parser.finish().unwrap_or_default();
            match s.hold.as_mut() {
                Some(h) if !s.scored => h.hold(rest, 0, &mut out),
                _ => out.extend_from_slice(&rest),
            }
            if !s.scored {
                // The stream ended without [DONE]: the verdict still comes last.
                s.scored = true;
                let end = end_event(&who, s, &mut out);
                cut = end.cut;
                verdict = end.scored;
            }
        }
        let usage = s.answer.usage;
        if out != chunk
            && host::set_buffer(BufferType::HttpResponseBody, 0, body_size, &out).is_err()
        {
            count("unscored");
        }
        match verdict {
            Some(scored) if cut => {
                count("blocked");
                count(scored.verdict.as_str());
                let token = self.dispatch_record(&scored, usage);
                self.phase = Phase::Drain {
                    token,
                    paused: end_of_stream && token.is_some(),
                };
                if end_of_stream && token.is_some() {
                    Action::Pause
                } else {
                    Action::Continue
                }
            }
            Some(scored) => self.record(&scored, usage),
            None => Action::Continue,
        }
    }

    fn score(&self, req: &ChatRequest, answer: &str) -> Result<Scored, LocalReply> {
        let who = Who {
            shared: &self.shared,
            tenant: &self.tenant,
            budget: self.budget,
        };
        score_answer(&who, req, answer)
    }

    /// Sends the decision to ingest and holds the response until it answers.
    fn record(&mut self, scored: &Scored, usage: Option<TokenUsage>) -> Action {
        count(scored.verdict.as_str());
        match self.dispatch_record(scored, usage) {
            Some(token) => {
                self.phase = Phase::Recording(token);
                Action::Pause
            }
            None => {
                self.phase = Phase::Done;
                Action::Continue
            }
        }
    }

    /// The recording callout's token (`None`: it could not be sent, counted); the backend's
    /// token counts go with it for the cost record.
    fn dispatch_record(&self, scored: &Scored, usage: Option<TokenUsage>) -> Option<u32> {
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
        let tokens = usage.map(|u| u.header_value());
        if let Some(t) = tokens.as_deref() {
            headers.push((H_LLM_TOKENS, t));
        }
        // The ingest secret, from the VM's environment (WASI; Envoy fills it from
        // `vm_config.environment_variables`): without it a secured ingest refuses the record.
        let secret = cfg(&self.shared)
            .and_then(|c| c.ingest_secret_env.as_deref())
            .and_then(|name| std::env::var(name).ok());
        if let Some(secret) = secret.as_deref() {
            headers.push((INGEST_SECRET_HEADER, secret));
        }
        match host::dispatch_http_call(cluster, headers, &scored.pcs_body, RECORD_TIMEOUT_MS) {
            Ok(token) => Some(token),
            Err(_) => {
                count("record_errors");
                None
            }
        }
    }

    /// The ingest callout answered (or failed): the response goes on.
    pub fn call_response(&mut self, token_id: u32) {
        let resume = match &mut self.phase {
            Phase::Recording(token) if *token == token_id => true,
            Phase::Drain { token, paused } if *token == Some(token_id) => {
                *token = None;
                *paused
            }
            _ => return,
        };
        let status = host::get_map(MapType::HttpCallResponseHeaders)
            .ok()
            .and_then(|h| h.into_iter().find(|(k, _)| k == ":status"))
            .map(|(_, v)| v);
        if !matches!(status.as_deref(), Some(b"200" | b"202")) {
            count("record_errors");
        }
        if matches!(self.phase, Phase::Recording(_)) {
            self.phase = Phase::Done;
        }
        if resume {
            let _ = host::continue_response();
        }
    }
}

fn score_answer(who: &Who, req: &ChatRequest, answer: &str) -> Result<Scored, LocalReply> {
    let task = cfg(who.shared).and_then(|c| c.task);
    let ev = score::evidence(req, answer, task);
    let bundle = who.shared.current_bundle();
    let mut clock = || host::now_ns().unwrap_or(0);
    score::score(
        who.tenant,
        &ev,
        &who.shared.gate,
        bundle.as_deref(),
        who.budget,
        &mut ClockHost(&mut clock),
    )
}

fn blocks(shared: &Shared, v: Verdict) -> bool {
    let policy = cfg(shared).map_or(ChatPolicy::Annotate, |c| c.policy);
    v == Verdict::Reject || (v == Verdict::Escalate && policy == ChatPolicy::Block)
}

/// The end of a stream: what the gate sends before `[DONE]`.
struct StreamEnd {
    /// The scored answer to record (none when unscored).
    scored: Option<Scored>,
    /// The answer is blocked: `out` got the cut events (with their own `[DONE]`).
    cut: bool,
}

/// Appends to `out` the end of a stream: the held content and the verdict chunk, or, when a
/// held-back answer is blocked, the cut events.
fn end_event(who: &Who, s: &mut Streaming, out: &mut Vec<u8>) -> StreamEnd {
    let shared = who.shared;
    let unscored = |why: &str| {
        count("unscored");
        serde_json::json!({"decision": "unscored", "reason": why})
    };
    let (kakeya, scored) = if s.parser.overflowed() || s.answer.truncated {
        (unscored("too_large"), None)
    } else {
        match score_answer(who, &s.req, &s.answer.content) {
            Ok(scored) => (scored.kakeya_json(s.req.source), Some(scored)),
            Err(r) => (unscored(r.code), None),
        }
    };
    let cut = s.hold.is_some() && scored.as_ref().is_some_and(|x| blocks(shared, x.verdict));
    if let Some(mut h) = s.hold.take() {
        if cut {
            h.discard();
        } else {
            h.release(out);
        }
    }
    if cut {
        out.extend_from_slice(&s.answer.cut_events(&kakeya));
    } else {
        out.extend_from_slice(&s.answer.verdict_event(&kakeya));
    }
    StreamEnd { scored, cut }
}

/// Scores the answer's prefixes at the checkpoints it has reached; the cut events and the
/// decision when one is blocked (the held content is then dropped).
fn checkpoints(who: &Who, s: &mut Streaming) -> Option<(Vec<u8>, Scored)> {
    let h = s.hold.as_mut()?;
    for at in h.due(s.answer.chars) {
        let prefix = prefix_chars(&s.answer.content, at);
        let Ok(scored) = score_answer(who, &s.req, prefix) else {
            // Unscorable (no bundle): the end of the stream reports it.
            continue;
        };
        if blocks(who.shared, scored.verdict) {
            h.discard();
            let bytes = s.answer.cut_events(&scored.kakeya_json(s.req.source));
            return Some((bytes, scored));
        }
    }
    None
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
