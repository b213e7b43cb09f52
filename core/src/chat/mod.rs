//! LLM-gateway mode: OpenAI chat completions scored inline (docs/GATEWAY.md).
//!
//! Pure parsing, no I/O: the request ([`request`]: the conversation's question and context),
//! the plain response ([`response`]: the assistant's answer) and streamed responses ([`sse`]:
//! an incremental, bounded Server-Sent-Events parser that accumulates `delta.content`). The
//! evidence they yield is scored by [`crate::pipeline::chat`] with the same bundle as PCS
//! traffic; [`config`] is the gate's `chat` section. The route's request head (method, content
//! type, tenant) is the pipeline's [`crate::pipeline::chat_head`]: this module stays below the
//! pipeline.

pub mod config;
pub mod hold;
pub mod request;
pub mod response;
pub mod sse;

#[cfg(test)]
mod tests;

pub use config::{ChatConfig, ChatPolicy, NoContext, CHAT_PATH, DEFAULT_REFUSAL};
pub use hold::{prefix_chars, HoldBack};
pub use request::{parse_request, ChatRequest, ContextSource};
pub use response::{blocked_completion, parse_response, ChatAnswer, TokenUsage, H_LLM_TOKENS};
pub use sse::{SseEvent, SseParser, StreamAnswer};

/// Why a chat body was refused: the machine-readable code and a message for the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ChatError {
    pub code: &'static str,
    pub message: String,
}

impl ChatError {
    pub(crate) fn new(code: &'static str, message: impl Into<String>) -> Self {
        ChatError {
            code,
            message: message.into(),
        }
    }
}

/// The text of an OpenAI `content`: a string, or an array of parts of which the
/// `{"type": "text", "text": …}` ones count (joined with a newline); anything else is empty.
pub(crate) fn content_text(v: Option<&serde_json::Value>) -> String {
    match v {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Array(parts)) => {
            let texts: Vec<&str> = parts
                .iter()
                .filter(|p| p.get("type").and_then(|t| t.as_str()) == Some("text"))
                .filter_map(|p| p.get("text").and_then(|t| t.as_str()))
                .collect();
            texts.join("\n")
        }
        _ => String::new(),
    }
}
