//! The plain (non-streamed) chat-completions response: the answer to score, and the body that
//! replaces it when the answer is blocked.

use super::{content_text, ChatError};
use serde_json::Value;

/// The scored part of a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatAnswer {
    /// `choices[0].message.content` (text parts joined).
    pub content: String,
    /// The response's `usage`, for the cost record.
    pub usage: Option<TokenUsage>,
}

/// The token counts of an answer (OpenAI's `usage`: the response's, or the last chunk's of a
/// stream requested with `stream_options.include_usage`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenUsage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

/// The record header carrying [`TokenUsage`] to ingest: `<prompt>,<completion>`.
pub const H_LLM_TOKENS: &str = "x-kakeya-llm-tokens";

impl TokenUsage {
    /// From a `usage` object (`None` unless both counts are non-negative integers).
    pub fn from_json(usage: Option<&Value>) -> Option<TokenUsage> {
        let u = usage?;
        Some(TokenUsage {
            prompt_tokens: u.get("prompt_tokens")?.as_u64()?,
            completion_tokens: u.get("completion_tokens")?.as_u64()?,
        })
    }

    /// The [`H_LLM_TOKENS`] value.
    pub fn header_value(&self) -> String {
        format!("{},{}", self.prompt_tokens, self.completion_tokens)
    }

    /// Parses an [`H_LLM_TOKENS`] value.
    pub fn parse_header(v: &str) -> Option<TokenUsage> {
        let (p, c) = v.trim().split_once(',')?;
        Some(TokenUsage {
            prompt_tokens: p.trim().parse().ok()?,
            completion_tokens: c.trim().parse().ok()?,
        })
    }
}

/// Parses an upstream response body (`upstream_invalid` when it is not a chat completion).
pub fn parse_response(body: &[u8]) -> Result<ChatAnswer, ChatError> {
    let bad = |m: String| ChatError::new("upstream_invalid", m);
    let v: Value =
        serde_json::from_slice(body).map_err(|e| bad(format!("response is not JSON: {e}")))?;
    let message = v
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|c| c.first())
        .and_then(|c| c.get("message"))
        .ok_or_else(|| bad("response has no choices[0].message".into()))?;
    Ok(ChatAnswer {
        content: content_text(message.get("content")),
        usage: TokenUsage::from_json(v.get("usage")),
    })
}

/// `body` with every choice replaced by `refusal` (`finish_reason: "content_filter"`) and the
/// `kakeya` object added; `None` when `body` is not a JSON object.
pub fn blocked_completion(body: &[u8], refusal: &str, kakeya: &Value) -> Option<Vec<u8>> {
    let mut v: Value = serde_json::from_slice(body).ok()?;
    let obj = v.as_object_mut()?;
    obj.insert(
        "choices".into(),
        serde_json::json!([{
            "index": 0,
            "message": {"role": "assistant", "content": refusal},
            "finish_reason": "content_filter",
        }]),
    );
    obj.insert("kakeya".into(), kakeya.clone());
    serde_json::to_vec(&v).ok()
}
