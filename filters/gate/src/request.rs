//! HTTP context: a thin adapter from the Envoy callbacks to [`crate::decide`]
//! ([`kakeya_core::pipeline`]), with the pipeline's [`Host`] implemented over the hostcalls:
//! the clock, and the micro-vote callout (cache first, then `dispatch_http_call`; the request
//! pauses until `on_http_call_response` resumes the pipeline).
//!
//! Every hostcall goes through [`crate::host`] (the SDK wrappers panic on an unexpected status)
//! and any failure on the request path fails closed: a local 503 `gate_unavailable` with
//! `retry-after: 1`, counted in [`crate::root::UNAVAILABLE_METRIC`]. Never a pass-through:
//! unread headers would leave `:path` unknown and client `x-kakeya-*` copies unstripped.

use crate::callout;
use crate::chat::ChatFlow;
use crate::decide::{self, Decision, HeadVerdict, Host, LocalReply, Paused, Step};
use crate::host::{self, HostStatus};
use crate::metrics::{tenant_label, Counter};
use crate::root::{bump_global, EnvoyMetrics, Shared, UNAVAILABLE_METRIC};
use crate::tracer::Tracer;
use kakeya_core::microvote::{MicroVoteRequest, MicroVoteResult, MICROVOTE_PATH};
use kakeya_core::pipeline::anomaly;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, BufferType, MapType};
use std::rc::Rc;

enum State {
    /// Not (or no longer) ours to hold.
    Continue,
    /// Submit route: waiting for the end of the body.
    AwaitBody { tenant: String },
    /// Paused for the micro-vote callout `token`, dispatched at `since_ns`.
    AwaitMicroVote {
        tenant: String,
        paused: Box<Paused>,
        token: u32,
        since_ns: u64,
        key: String,
    },
    /// Sent on to the control plane: the response is counted (see [`decide::on_response`]).
    Forwarded { tenant: String, no_bundle: bool },
    /// A local reply was sent; Envoy expects StopIteration from here on (rust-sdk#105).
    Replied,
}

pub struct GateRequest {
    shared: Option<Rc<Shared>>,
    state: State,
    trace: Tracer,
    /// The chat route's flow ([`crate::chat`]); the submit states are unused then.
    chat: Option<ChatFlow>,
}

impl GateRequest {
    pub fn new(shared: Option<Rc<Shared>>) -> Self {
        GateRequest {
            shared,
            state: State::Continue,
            trace: Tracer::default(),
            chat: None,
        }
    }

    fn count(&self, tenant: Option<&str>, counters: &[Counter]) {
        if let Some(shared) = &self.shared {
            let label = tenant_label(&shared.gate.keyring, tenant);
            if let Ok(mut m) = shared.metrics.try_borrow_mut() {
                m.bump(&mut EnvoyMetrics, label, counters);
            }
        }
    }

    fn reply(&mut self, r: &LocalReply) -> Action {
        if let Err(e) = host::send_local_response(r.status, &r.all_headers(), r.body.as_bytes()) {
            log::error!("kakeya-gate: send_local_response({}) failed: {e}", r.status);
        }
        self.state = State::Replied;
        Action::Pause
    }

    /// Fail closed after a failed hostcall: 503 `gate_unavailable`, `retry-after: 1`, counted.
    fn unavailable(&mut self, what: &str, status: HostStatus) -> Action {
        log::error!("kakeya-gate: {what} failed ({status}); answering 503 gate_unavailable");
        bump_global(
            self.shared.as_ref().and_then(|s| s.unavailable),
            UNAVAILABLE_METRIC,
        );
        let r = LocalReply {
            status: 503,
            headers: vec![("retry-after".to_string(), "1".to_string())],
            body: decide::error_body(
                "the gate cannot process this request right now; retry",
                "gate_unavailable",
            ),
            code: "gate_unavailable",
        };
        self.reply(&r)
    }

    fn finish(&mut self, tenant: &str, body: &[u8]) -> Action {
        let Some(shared) = self.shared.clone() else {
            return self.not_configured();
        };
        let mut h = GateHost {
            shared: &shared,
            clock_error: None,
            dispatched: None,
            first_ns: None,
        };
        // Looked up once per request, before deciding: a new bundle applies from the next request.
        let bundle = shared.current_bundle();
        let step =
            kakeya_core::pipeline::on_body(tenant, body, &shared.gate, bundle.as_deref(), &mut h);
        if let Some(e) = h.clock_error {
            return self.unavailable("reading the host clock", e);
        }
        // The tracer's span starts at the pipeline's first clock read (its first step): one
        // clock hostcall fewer per request than a read of its own.
        if let (true, Some(t)) = (self.traced(), h.first_ns) {
            self.trace.start(t);
        }
        if h.dispatched.is_some() {
            self.trace.called_model();
        }
        match (step, h.dispatched) {
            (Step::Done(d), _) => self.conclude(tenant, d),
            (Step::Pending(paused), Some((token, since_ns, key))) => {
                // The wait for the answer is not the filter's time: the span ends at the
                // dispatch's clock read.
                if self.traced() {
                    self.trace.stop(since_ns);
                }
                self.state = State::AwaitMicroVote {
                    tenant: tenant.to_string(),
                    paused,
                    token,
                    since_ns,
                    key,
                };
                Action::Pause
            }
            // Pending without a dispatch cannot happen (the host only pends after one); total
            // anyway: the micro-vote abstains.
            (Step::Pending(paused), None) => {
                let d = paused.resume(&MicroVoteResult::Unavailable("dispatch_failed"));
                self.conclude(tenant, d)
            }
        }
    }

    /// Sends the local reply, or sets the result headers and lets the request go on.
    fn conclude(&mut self, tenant: &str, decision: Decision) -> Action {
        match decision {
            Decision::LocalReply(r) => {
                let c = match (r.status, r.code) {
                    (_, "evidence_unbound" | "evidence_mismatch" | "evidence_missing") => {
                        Counter::EvidenceErrors
                    }
                    (_, "no_bundle") => Counter::NoBundle,
                    (_, decide::budget::EXCEEDED_CODE) => Counter::BudgetDenied,
                    (_, decide::budget::THROTTLED_CODE) => Counter::BudgetThrottled,
                    (_, anomaly::BLOCKED_CODE) => Counter::AnomalyBlocked,
                    (401, _) => Counter::SignatureErrors,
                    (_, "unknown_tenant") => Counter::UnknownTenant,
                    _ => Counter::ParseErrors,
                };
                self.count(Some(tenant), &[c]);
                if r.code == decide::budget::THROTTLED_CODE {
                    // Envoy's local-reply mapper rewrites every 429 as its own rate limit's
                    // unless the request says it is the gate's (envoy/gateway.yaml.tmpl).
                    let _ = host::set_map_value(
                        MapType::HttpRequestHeaders,
                        decide::budget::H_BUDGET,
                        "throttle",
                    );
                }
                self.reply(&r)
            }
            Decision::Forward(f) => {
                for (name, value) in &f.headers {
                    if let Err(e) = host::set_map_value(MapType::HttpRequestHeaders, name, value) {
                        // Forwarding without (all of) the verified result is not an option.
                        return self.unavailable(&format!("setting {name}"), e);
                    }
                }
                if self.traced() {
                    self.trace_stop();
                    for (name, value) in &self.trace.headers() {
                        if let Err(e) =
                            host::set_map_value(MapType::HttpRequestHeaders, name, value)
                        {
                            return self.unavailable(&format!("setting {name}"), e);
                        }
                    }
                }
                // Accepted / escalated / no-bundle escalations are counted from the response
                // (on_http_response_headers): dedup may answer with a stored decision.
                let mut cs = Vec::with_capacity(4);
                cs.push(Counter::Forwarded);
                if f.scored {
                    cs.push(Counter::Scored);
                }
                if let Some(arm) = f.arm {
                    cs.push(Counter::scored_by(arm));
                }
                if f.high_risk {
                    cs.push(Counter::HighRisk);
                }
                cs.extend(Counter::budget(f.budget));
                if anomaly::flagged(&f) {
                    cs.push(Counter::AnomalyFlagged);
                }
                self.count(Some(tenant), &cs);
                self.count_votes(&f);
                self.state = State::Forwarded {
                    tenant: tenant.to_string(),
                    no_bundle: f.no_bundle,
                };
                Action::Continue
            }
        }
    }

    fn traced(&self) -> bool {
        self.shared.as_ref().is_some_and(|s| s.gate.cost_tracer)
    }

    /// The tracer's clock reads: an unreadable clock only loses the span (the pipeline's own
    /// reads fail the request closed).
    fn trace_stop(&mut self) {
        if self.traced() {
            if let Ok(now) = host::now_ns() {
                self.trace.stop(now);
            }
        }
    }

    /// Per-strategy vote counters, from the forwarded votes header.
    fn count_votes(&self, f: &decide::Forward) {
        let Some(shared) = &self.shared else { return };
        let Some((_, votes)) = f.headers.iter().find(|(k, _)| *k == decide::H_VOTES) else {
            return;
        };
        let Ok(summary) = serde_json::from_str::<kakeya_core::verify::EnsembleSummary>(votes)
        else {
            return;
        };
        if let Ok(mut st) = shared.ensemble.try_borrow_mut() {
            for v in &summary.votes {
                st.bump(&callout::vote_metric(&v.strategy, v.outcome.as_str()));
            }
        }
    }

    /// The micro-vote's answer (or its absence) arrived: finish the paused request.
    fn on_microvote_response(&mut self, token_id: u32, body_size: usize) {
        let State::AwaitMicroVote { token, .. } = &self.state else {
            return;
        };
        if *token != token_id {
            return;
        }
        // One clock read both ends the wait and starts the tracer's second span.
        let now = host::now_ns();
        if let (true, Ok(t)) = (self.traced(), &now) {
            self.trace.start(*t);
        }
        let State::AwaitMicroVote {
            tenant,
            paused,
            since_ns,
            key,
            ..
        } = std::mem::replace(&mut self.state, State::Continue)
        else {
            return;
        };
        // A timeout or reset comes without headers: no :status.
        let headers = host::get_map(MapType::HttpCallResponseHeaders).unwrap_or_default();
        let status = headers
            .iter()
            .find(|(k, _)| k == ":status")
            .and_then(|(_, v)| core::str::from_utf8(v).ok())
            .and_then(|v| v.trim().parse::<u32>().ok());
        let body = if body_size == 0 || body_size > callout::MAX_BODY {
            Vec::new()
        } else {
            host::get_buffer(BufferType::HttpCallResponseBody, 0, body_size).unwrap_or_default()
        };
        let elapsed_ns = now.map(|now| now.saturating_sub(since_ns));
        if let Ok(ns) = elapsed_ns {
            self.trace.waited_for_model(ns);
        }
        let elapsed_ms = elapsed_ns.map(|ns| ns / 1_000_000).unwrap_or(u64::MAX);
        let result = callout::judge(status, &body, elapsed_ms, paused.deadline_ms);
        if let Some(shared) = &self.shared {
            if let Ok(mut st) = shared.ensemble.try_borrow_mut() {
                st.count_result(&result);
                if elapsed_ms != u64::MAX {
                    st.latency_ms(elapsed_ms);
                }
                st.cache.put(key, &result);
            }
        }
        let decision = paused.resume(&result);
        if let Action::Continue = self.conclude(&tenant, decision) {
            if let Err(e) = host::continue_request() {
                // The headers are set; a request that cannot resume is reset by Envoy's own
                // timeout. Nothing else to do without trapping.
                let _ = e;
            }
        }
    }

    fn not_configured(&mut self) -> Action {
        let r = LocalReply {
            status: 503,
            headers: Vec::new(),
            body: decide::error_body("gate filter is not configured", "not_configured"),
            code: "not_configured",
        };
        self.reply(&r)
    }
}

impl Context for GateRequest {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        _num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        if let Some(chat) = &mut self.chat {
            return chat.call_response(token_id);
        }
        self.on_microvote_response(token_id, body_size);
    }
}

/// The pipeline's [`Host`] over the hostcalls, for one request.
struct GateHost<'a> {
    shared: &'a Shared,
    /// A failed clock read fails the request closed (503), as before the pipeline.
    clock_error: Option<HostStatus>,
    /// The callout in flight: token, dispatch time (ns), cache key.
    dispatched: Option<(u32, u64, String)>,
    /// The pipeline's first clock read (the cost tracer's start).
    first_ns: Option<u64>,
}

impl Host for GateHost<'_> {
    fn now_ns(&mut self) -> u64 {
        match host::now_ns() {
            Ok(t) => {
                self.first_ns.get_or_insert(t);
                t
            }
            Err(e) => {
                self.clock_error = Some(e);
                0
            }
        }
    }

    fn micro_vote(&mut self, req: &MicroVoteRequest, deadline_ms: u32) -> Option<MicroVoteResult> {
        let key = callout::cache_key(req);
        let Ok(mut st) = self.shared.ensemble.try_borrow_mut() else {
            return Some(MicroVoteResult::Unavailable("busy"));
        };
        if let Some(hit) = st.cache.get(&key) {
            st.bump(callout::CACHE_HITS_METRIC);
            return Some(hit);
        }
        let Ok(body) = serde_json::to_vec(req) else {
            st.bump(callout::ERRORS_METRIC);
            return Some(MicroVoteResult::Unavailable("bad_request"));
        };
        let len = body.len().to_string();
        let headers = vec![
            (":method", "POST"),
            (":path", MICROVOTE_PATH),
            (":authority", "kakeya-microvote"),
            ("content-type", "application/json"),
            ("content-length", len.as_str()),
        ];
        let cluster = self.shared.gate.microvote_cluster.as_str();
        st.bump(callout::CALLS_METRIC);
        match host::dispatch_http_call(cluster, headers, &body, deadline_ms) {
            Ok(token) => {
                drop(st);
                let now = self.now_ns();
                self.dispatched = Some((token, now, key));
                None
            }
            Err(s) => {
                st.bump(callout::ERRORS_METRIC);
                Some(MicroVoteResult::Unavailable(
                    if s.0 == host::STATUS_BAD_ARGUMENT {
                        "no_cluster"
                    } else {
                        "dispatch_failed"
                    },
                ))
            }
        }
    }
}

impl HttpContext for GateRequest {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        // Bytes, not strings: Envoy allows non-UTF-8 header values. Unreadable headers fail
        // closed: the path is unknown and forged x-kakeya-* copies could not be stripped.
        let headers = match host::get_map(MapType::HttpRequestHeaders) {
            Ok(h) => h,
            Err(e) => return self.unavailable("reading the request headers", e),
        };
        let Some(shared) = self.shared.clone() else {
            return if decide::is_submit_path(&path_of(&headers)) {
                self.not_configured()
            } else {
                Action::Continue
            };
        };
        let head = decide::on_headers(&headers, &shared.gate);
        for name in &head.strip {
            if let Err(e) = host::remove_map_value(MapType::HttpRequestHeaders, name) {
                // A client copy of x-kakeya-* must never reach ingest.
                return self.unavailable(&format!("removing {name}"), e);
            }
        }
        match head.verdict {
            HeadVerdict::PassThrough => {
                if let crate::upstream::Routed::Unavailable(e) =
                    crate::upstream::route(&shared, &headers)
                {
                    return self.unavailable("clearing the route cache", e);
                }
                let chat_route = shared
                    .gate
                    .chat
                    .as_ref()
                    .is_some_and(|c| c.is_chat_path(&path_of(&headers)));
                if !chat_route {
                    return Action::Continue;
                }
                match ChatFlow::start(shared, &headers) {
                    Ok(mut flow) => {
                        let action = if end_of_stream {
                            flow.empty_request()
                        } else {
                            Action::Pause
                        };
                        self.chat = Some(flow);
                        action
                    }
                    Err(action) => {
                        self.state = State::Replied;
                        action
                    }
                }
            }
            HeadVerdict::Reply(r) => {
                // Counted under the tenant the request claims (`default` without a header);
                // an unusable tenant id is counted as `other`.
                let tenant = if r.code == "invalid_tenant" {
                    None
                } else {
                    Some(tenant_header(&headers))
                };
                let mut cs = vec![Counter::Requests];
                match r.code {
                    "method_not_allowed" => cs.push(Counter::MethodNotAllowed),
                    "unsupported_media_type" => cs.push(Counter::UnsupportedMediaType),
                    _ => cs.push(Counter::UnknownTenant),
                }
                self.count(tenant.as_deref(), &cs);
                self.reply(&r)
            }
            HeadVerdict::AwaitBody { tenant } => {
                self.count(Some(&tenant), &[Counter::Requests]);
                if end_of_stream {
                    // No body at all: judged as an empty one (400).
                    return self.finish(&tenant, &[]);
                }
                self.state = State::AwaitBody { tenant };
                Action::Pause
            }
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if let Some(chat) = &mut self.chat {
            return chat.request_body(body_size, end_of_stream);
        }
        match &self.state {
            State::Continue | State::Forwarded { .. } => Action::Continue,
            State::Replied | State::AwaitMicroVote { .. } => Action::Pause,
            State::AwaitBody { .. } if !end_of_stream => Action::Pause,
            State::AwaitBody { tenant } => {
                let tenant = tenant.clone();
                // After Pause, body_size is the whole buffered body.
                let body = match host::get_buffer(BufferType::HttpRequestBody, 0, body_size) {
                    Ok(b) => b,
                    Err(e) => return self.unavailable("reading the request body", e),
                };
                self.finish(&tenant, &body)
            }
        }
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        if let Some(chat) = &mut self.chat {
            return chat.request_trailers();
        }
        match &self.state {
            State::Continue | State::Forwarded { .. } => Action::Continue,
            State::Replied | State::AwaitMicroVote { .. } => Action::Pause,
            // Trailers end the stream: decide on the buffered body.
            State::AwaitBody { tenant } => {
                let tenant = tenant.clone();
                let body = match host::get_buffer(BufferType::HttpRequestBody, 0, usize::MAX) {
                    Ok(b) => b,
                    Err(e) => return self.unavailable("reading the request body", e),
                };
                // Continue from this callback resumes the buffered body and trailers.
                self.finish(&tenant, &body)
            }
        }
    }

    /// Counts what the client of a forwarded submission gets: the control plane's answer, or
    /// Envoy's 503/504 when the control plane is down or slow. Never changes the response.
    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if let Some(chat) = &mut self.chat {
            return chat.response_headers();
        }
        let State::Forwarded { tenant, no_bundle } =
            std::mem::replace(&mut self.state, State::Continue)
        else {
            return Action::Continue;
        };
        // Unreadable headers only lose the count; no log line (the SDK's log macros unwrap).
        let Ok(headers) = host::get_map(MapType::HttpResponseHeaders) else {
            return Action::Continue;
        };
        let value = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_slice())
        };
        let status = value(":status")
            .and_then(|v| core::str::from_utf8(v).ok())
            .and_then(|v| v.trim().parse::<u32>().ok());
        let dedup_hit = value("x-kakeya-dedup") == Some(b"hit".as_slice());
        let a = decide::on_response(status, dedup_hit, no_bundle);
        let mut cs = Vec::new();
        if a.accepted {
            cs.push(Counter::Accepted);
        }
        if a.escalated {
            cs.push(Counter::Escalated);
        }
        if a.no_bundle {
            cs.push(Counter::NoBundle);
        }
        if a.rejected {
            if let Some(shared) = &self.shared {
                if let Ok(mut st) = shared.ensemble.try_borrow_mut() {
                    st.bump(callout::REJECTED_METRIC);
                }
            }
        }
        if !cs.is_empty() {
            self.count(Some(&tenant), &cs);
        }
        if a.unavailable {
            if let Some(id) = self.shared.as_ref().and_then(|s| s.unavailable) {
                // Best effort and silent, as above.
                let _ = host::increment(id, 1);
            }
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        match &mut self.chat {
            Some(chat) => chat.response_body(body_size, end_of_stream),
            None => Action::Continue,
        }
    }
}

fn path_of(headers: &[(String, Vec<u8>)]) -> String {
    headers
        .iter()
        .find(|(k, _)| k == ":path")
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_default()
}

fn tenant_header(headers: &[(String, Vec<u8>)]) -> String {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(decide::TENANT_HEADER))
        .and_then(|(_, v)| String::from_utf8(v.clone()).ok())
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| kakeya_core::signature::DEFAULT_TENANT.to_string())
}
