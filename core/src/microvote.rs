//! The micro-vote's wire format: what the gate sends to `kakeya microvote` and what it answers.
//!
//! Shared by the server (control-plane crate) and the filter's callout so the two cannot drift.
//! `POST /v1/microvote` with a [`MicroVoteRequest`] → 200 with a [`MicroVoteResponse`]; any
//! other status, a body that does not parse, or no answer within the deadline is a
//! [`MicroVoteResult`] other than `Answer`, which the `micro_vote` strategy turns into an
//! abstention (never an accept).

use crate::task::TaskKind;
use serde::{Deserialize, Serialize};

/// The route the micro-vote server answers on.
pub const MICROVOTE_PATH: &str = "/v1/microvote";

/// The evidence the auxiliary model judges. `response` is required; a missing question or
/// context is sent as absent, and the model knows "no context".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MicroVoteRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub question: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    pub response: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<TaskKind>,
}

/// The server's answer: the calibrated probability that the response is hallucinated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MicroVoteResponse {
    pub p_hallucinated: f64,
    /// The head's version (e.g. `mv-<sha256 prefix>`), recorded with the vote.
    pub model: String,
    /// Server-side time to answer, microseconds.
    pub server_us: u64,
    /// Whether the context's embeddings came from the server's cache.
    #[serde(default)]
    pub context_cached: bool,
}

/// What the host got back for one micro-vote call.
#[derive(Debug, Clone, PartialEq)]
pub enum MicroVoteResult {
    /// A well-formed answer (from the server or the filter's cache).
    Answer {
        p_hallucinated: f64,
        model: String,
        server_us: u64,
        /// Served from the filter's own LRU cache.
        cache_hit: bool,
    },
    /// No answer within the deadline.
    Timeout,
    /// The call could not be made or its answer was unusable (no cluster, non-200, bad body);
    /// the reason is a short stable code for the vote and the metrics.
    Unavailable(&'static str),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_shape_omits_absent_fields() {
        let r = MicroVoteRequest {
            question: None,
            context: Some("ctx".into()),
            response: "ans".into(),
            task: Some(TaskKind::Dialogue),
        };
        let s = serde_json::to_string(&r).unwrap_or_default();
        assert_eq!(s, r#"{"context":"ctx","response":"ans","task":"dialogue"}"#);
        let back: Result<MicroVoteRequest, _> = serde_json::from_str(&s);
        assert_eq!(back.ok(), Some(r));
    }
}
