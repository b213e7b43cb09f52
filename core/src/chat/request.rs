//! The chat-completions request: the evidence it carries before the model answers.
//!
//! * question = the last `user` message;
//! * context, the first of: every `tool` (or legacy `function`) message, joined; the configured
//!   JSON pointer ([`super::ChatConfig::context_pointer`]); every `system`/`developer`
//!   message, joined; else none ([`ContextSource::None`]: scored as "no context" or skipped).

use super::{content_text, ChatError};
use serde_json::Value;

/// Where the context was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContextSource {
    Tool,
    Pointer,
    System,
    None,
}

impl ContextSource {
    pub fn as_str(self) -> &'static str {
        match self {
            ContextSource::Tool => "tool",
            ContextSource::Pointer => "pointer",
            ContextSource::System => "system",
            ContextSource::None => "none",
        }
    }
}

/// What the filter keeps of a request until the answer arrives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatRequest {
    pub question: String,
    pub context: String,
    pub source: ContextSource,
    /// `"stream": true`.
    pub stream: bool,
}

const ROLES: [&str; 6] = [
    "system",
    "developer",
    "user",
    "assistant",
    "tool",
    "function",
];

/// Parses a request body; 400-worthy errors (`invalid_json`, `invalid_chat_request`).
pub fn parse_request(body: &[u8], context_pointer: Option<&str>) -> Result<ChatRequest, ChatError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ChatError::new("invalid_json", format!("request body is not JSON: {e}")))?;
    let invalid = |m: &str| ChatError::new("invalid_chat_request", m);
    let messages = v
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("messages must be an array"))?;
    let mut question = None;
    let (mut tool, mut system) = (Vec::new(), Vec::new());
    for m in messages {
        let role = m
            .get("role")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("every message needs a role"))?;
        if !ROLES.contains(&role) {
            return Err(invalid(&format!("unknown message role {role:?}")));
        }
        let text = content_text(m.get("content"));
        match role {
            "user" => question = Some(text),
            "tool" | "function" => tool.push(text),
            "system" | "developer" => system.push(text),
            _ => {}
        }
    }
    let question = question.ok_or_else(|| invalid("messages need a user message"))?;
    let stream = match v.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(invalid("stream must be a boolean")),
    };
    let nonempty = |parts: Vec<String>| {
        let parts: Vec<String> = parts.into_iter().filter(|s| !s.trim().is_empty()).collect();
        (!parts.is_empty()).then(|| parts.join("\n\n"))
    };
    let pointed = context_pointer
        .and_then(|p| v.pointer(p))
        .map(pointed_text)
        .filter(|s| !s.trim().is_empty());
    let (context, source) = if let Some(c) = nonempty(tool) {
        (c, ContextSource::Tool)
    } else if let Some(c) = pointed {
        (c, ContextSource::Pointer)
    } else if let Some(c) = nonempty(system) {
        (c, ContextSource::System)
    } else {
        (String::new(), ContextSource::None)
    };
    Ok(ChatRequest {
        question,
        context,
        source,
        stream,
    })
}

/// A pointed-at context: a string, or an array of strings / objects with `text` or `content`.
fn pointed_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(items) => {
            let texts: Vec<String> = items
                .iter()
                .filter_map(|i| match i {
                    Value::String(s) => Some(s.clone()),
                    Value::Object(_) => i
                        .get("text")
                        .or_else(|| i.get("content"))
                        .and_then(Value::as_str)
                        .map(str::to_string),
                    _ => None,
                })
                .collect();
            texts.join("\n\n")
        }
        _ => String::new(),
    }
}
