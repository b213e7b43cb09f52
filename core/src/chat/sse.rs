//! Streamed chat completions: an incremental Server-Sent-Events parser and the answer it
//! accumulates.
//!
//! [`SseParser::feed`] takes the body chunks as Envoy delivers them (an event may be split
//! anywhere, even inside a `\r\n`) and returns the events completed so far, each with its raw
//! bytes, so the filter forwards whole events unchanged and can insert its own before
//! `data: [DONE]`. Memory is bounded: an event longer than `max_event` bytes makes the parser
//! give up (everything from there passes through raw, nothing more is parsed). Lines end with
//! `\n`, `\r\n` or `\r`; `data:` lines of one event are joined with `\n`; comments and other
//! fields are kept in the raw bytes and otherwise ignored (the SSE specification's rules).

use serde_json::Value;

/// One complete event: its bytes as received and its `data` (`None` without `data:` lines).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub raw: Vec<u8>,
    pub data: Option<String>,
}

#[derive(Debug, Clone)]
pub struct SseParser {
    max_event: usize,
    /// Raw bytes of the event being read.
    pending: Vec<u8>,
    /// Start of the current line in `pending`.
    line_start: usize,
    data: Option<String>,
    /// The previous byte was a `\r`: a following `\n` belongs to the same line end.
    after_cr: bool,
    overflow: bool,
}

impl SseParser {
    pub fn new(max_event: usize) -> Self {
        SseParser {
            max_event,
            pending: Vec::new(),
            line_start: 0,
            data: None,
            after_cr: false,
            overflow: false,
        }
    }

    /// An event exceeded `max_event`: the rest of the stream is passed through unparsed.
    pub fn overflowed(&self) -> bool {
        self.overflow
    }

    /// The events that `chunk` completes (a raw pass-through event after an overflow).
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        let mut out = Vec::new();
        if self.overflow {
            if !chunk.is_empty() {
                out.push(SseEvent {
                    raw: chunk.to_vec(),
                    data: None,
                });
            }
            return out;
        }
        for (i, &b) in chunk.iter().enumerate() {
            let cr_lf = self.after_cr && b == b'\n';
            self.after_cr = b == b'\r';
            self.pending.push(b);
            if cr_lf {
                // The line already ended at the `\r`.
                self.line_start = self.pending.len();
                continue;
            }
            if b == b'\n' || b == b'\r' {
                let end = self.pending.len().saturating_sub(1);
                if end == self.line_start {
                    // Blank line: the event is complete (the `\n` of a `\r\n` that may
                    // follow goes with the next event's bytes; the byte stream is unchanged).
                    out.push(SseEvent {
                        raw: std::mem::take(&mut self.pending),
                        data: self.data.take(),
                    });
                    self.line_start = 0;
                } else {
                    self.field(end);
                    self.line_start = self.pending.len();
                }
            } else if self.pending.len() > self.max_event {
                self.overflow = true;
                let mut raw = std::mem::take(&mut self.pending);
                raw.extend_from_slice(chunk.get(i + 1..).unwrap_or_default());
                out.push(SseEvent { raw, data: None });
                return out;
            }
        }
        out
    }

    /// The bytes of an unterminated last event (end of stream). Its data is dropped, as the
    /// SSE specification says.
    pub fn finish(&mut self) -> Option<Vec<u8>> {
        self.data = None;
        self.line_start = 0;
        (!self.pending.is_empty()).then(|| std::mem::take(&mut self.pending))
    }

    fn field(&mut self, end: usize) {
        let line = self.pending.get(self.line_start..end).unwrap_or_default();
        let (name, value) = match line.iter().position(|&c| c == b':') {
            Some(0) => return, // comment
            Some(p) => (
                line.get(..p).unwrap_or_default(),
                line.get(p + 1..).unwrap_or_default(),
            ),
            None => (line, &[][..]),
        };
        if name != b"data" {
            return;
        }
        let value = value.strip_prefix(b" ").unwrap_or(value);
        let value = String::from_utf8_lossy(value);
        match &mut self.data {
            Some(d) => {
                d.push('\n');
                d.push_str(&value);
            }
            None => self.data = Some(value.into_owned()),
        }
    }
}

/// The answer of a stream, accumulated from its `data:` chunks.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StreamAnswer {
    /// `choices[index 0].delta.content`, concatenated.
    pub content: String,
    /// `data: [DONE]` arrived.
    pub done: bool,
    /// Characters in `content`.
    pub chars: usize,
    /// More content arrived than `max` bytes: the rest is not scored.
    pub truncated: bool,
    /// `data:` payloads that were not JSON.
    pub malformed: u32,
    pub id: String,
    pub model: String,
    pub created: i64,
    /// The `usage` of the last chunk that had one (`stream_options.include_usage`).
    pub usage: Option<super::TokenUsage>,
    max: usize,
}

/// The `data` that ends an OpenAI stream.
pub const DONE: &str = "[DONE]";

impl StreamAnswer {
    pub fn new(max: usize) -> Self {
        StreamAnswer {
            max,
            ..StreamAnswer::default()
        }
    }

    /// Takes one event's data; true when it is the final `[DONE]`.
    pub fn push(&mut self, data: &str) -> bool {
        if data.trim() == DONE {
            self.done = true;
            return true;
        }
        let Ok(v) = serde_json::from_str::<Value>(data) else {
            self.malformed = self.malformed.saturating_add(1);
            return false;
        };
        if self.id.is_empty() {
            self.id = v.get("id").and_then(Value::as_str).unwrap_or("").into();
            self.model = v.get("model").and_then(Value::as_str).unwrap_or("").into();
            self.created = v.get("created").and_then(Value::as_i64).unwrap_or(0);
        }
        if let Some(u) = super::TokenUsage::from_json(v.get("usage")) {
            self.usage = Some(u);
        }
        let choice = v.get("choices").and_then(Value::as_array).and_then(|cs| {
            cs.iter()
                .find(|c| c.get("index").and_then(Value::as_u64).unwrap_or(0) == 0)
        });
        let text = choice
            .and_then(|c| c.get("delta"))
            .and_then(|d| d.get("content"))
            .and_then(Value::as_str);
        if let Some(t) = text {
            if self.content.len().saturating_add(t.len()) > self.max {
                self.truncated = true;
            } else if !self.truncated {
                self.content.push_str(t);
                self.chars = self.chars.saturating_add(t.chars().count());
            }
        }
        false
    }

    /// The chunk the gate adds before `[DONE]`: a valid `chat.completion.chunk` with no
    /// choices (as the usage chunk of `stream_options.include_usage`) and the verdict in
    /// `kakeya`, so OpenAI clients parse it like any other chunk.
    pub fn verdict_event(&self, kakeya: &Value) -> Vec<u8> {
        self.chunk_event(serde_json::json!([]), kakeya)
    }

    /// The events that cut a blocked stream ([`super::hold`]): a chunk whose choice ends with
    /// `finish_reason: "content_filter"` (what OpenAI sends for filtered content) carrying the
    /// verdict in `kakeya`, then `data: [DONE]`.
    pub fn cut_events(&self, kakeya: &Value) -> Vec<u8> {
        let choices = serde_json::json!([
            {"index": 0, "delta": {}, "finish_reason": "content_filter"}
        ]);
        let mut out = self.chunk_event(choices, kakeya);
        out.extend_from_slice(b"data: [DONE]\n\n");
        out
    }

    fn chunk_event(&self, choices: Value, kakeya: &Value) -> Vec<u8> {
        let chunk = serde_json::json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
            "kakeya": kakeya,
        });
        let mut out = b"data: ".to_vec();
        out.extend_from_slice(chunk.to_string().as_bytes());
        out.extend_from_slice(b"\n\n");
        out
    }
}
