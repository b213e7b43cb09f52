//! What the pipeline answers: a local reply the filter sends itself, or a forward to the control
//! plane with the `x-kakeya-*` result headers; and how the client's answer is counted.

use crate::bundle::Arm;
use crate::numfmt::{write_json_string, JsonEscape};

/// A response the filter sends itself (`send_http_response`), never reaching the upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    pub status: u32,
    /// Extra headers besides `content-type: application/json`.
    pub headers: Vec<(String, String)>,
    /// `{"error": "...", "code": "..."}` (a reject adds `"votes"`).
    pub body: String,
    /// The machine-readable code inside `body`.
    pub code: &'static str,
}

impl LocalReply {
    pub fn new(status: u32, code: &'static str, message: &str) -> Self {
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
    /// The tenant's budget action it was served under (`None`, `Alert` or `Degrade`).
    pub budget: crate::budget::BudgetAction,
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
    /// 422: the tenant's ensemble policy rejected the answer.
    pub rejected: bool,
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
        Some(422) => Answered {
            rejected: true,
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
