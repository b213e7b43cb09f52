//! HTTP context: a thin adapter from the Envoy callbacks to [`crate::decide`].
//!
//! Every hostcall goes through [`crate::host`] (the SDK wrappers panic on an unexpected status)
//! and any failure on the request path fails closed: a local 503 `gate_unavailable` with
//! `retry-after: 1`, counted in [`crate::root::UNAVAILABLE_METRIC`]. Never a pass-through:
//! unread headers would leave `:path` unknown and client `x-kakeya-*` copies unstripped.

use crate::decide::{self, Decision, HeadVerdict, LocalReply};
use crate::host::{self, HostStatus};
use crate::metrics::{tenant_label, Counter};
use crate::root::{bump_global, EnvoyMetrics, Shared, UNAVAILABLE_METRIC};
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, BufferType, MapType};
use std::cell::Cell;
use std::rc::Rc;

enum State {
    /// Not (or no longer) ours to hold.
    Continue,
    /// Submit route: waiting for the end of the body.
    AwaitBody { tenant: String },
    /// Sent on to the control plane: the response is counted (see [`decide::on_response`]).
    Forwarded { tenant: String, no_bundle: bool },
    /// A local reply was sent; Envoy expects StopIteration from here on (rust-sdk#105).
    Replied,
}

pub struct GateRequest {
    shared: Option<Rc<Shared>>,
    state: State,
}

impl GateRequest {
    pub fn new(shared: Option<Rc<Shared>>) -> Self {
        GateRequest {
            shared,
            state: State::Continue,
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
        let clock_error = Cell::new(None);
        let mut now = || match host::now_ns() {
            Ok(t) => t,
            Err(e) => {
                clock_error.set(Some(e));
                0
            }
        };
        // Looked up once per request, before deciding: a new bundle applies from the next request.
        let bundle = shared.current_bundle();
        let decision =
            decide::on_body_scored(tenant, body, &shared.gate, bundle.as_deref(), &mut now);
        if let Some(e) = clock_error.get() {
            return self.unavailable("reading the host clock", e);
        }
        match decision {
            Decision::LocalReply(r) => {
                let c = match (r.status, r.code) {
                    (_, "evidence_unbound" | "evidence_mismatch" | "evidence_missing") => {
                        Counter::EvidenceErrors
                    }
                    (_, "no_bundle") => Counter::NoBundle,
                    (401, _) => Counter::SignatureErrors,
                    (_, "unknown_tenant") => Counter::UnknownTenant,
                    _ => Counter::ParseErrors,
                };
                self.count(Some(tenant), &[c]);
                self.reply(&r)
            }
            Decision::Forward(f) => {
                for (name, value) in &f.headers {
                    if let Err(e) = host::set_map_value(MapType::HttpRequestHeaders, name, value) {
                        // Forwarding without (all of) the verified result is not an option.
                        return self.unavailable(&format!("setting {name}"), e);
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
                self.count(Some(tenant), &cs);
                self.state = State::Forwarded {
                    tenant: tenant.to_string(),
                    no_bundle: f.no_bundle,
                };
                Action::Continue
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

impl Context for GateRequest {}

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
            HeadVerdict::PassThrough => Action::Continue,
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
        match &self.state {
            State::Continue | State::Forwarded { .. } => Action::Continue,
            State::Replied => Action::Pause,
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
        match &self.state {
            State::Continue | State::Forwarded { .. } => Action::Continue,
            State::Replied => Action::Pause,
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
