//! Blocking streamed answers (`policy = "block"` on an SSE response): the last `window`
//! characters of content are held back while the answer is scored every `every` characters,
//! so a stream whose risk crosses the block threshold can be cut before the held content
//! reaches the client (upstream Envoy's proxy-wasm interface cannot take back bytes already
//! forwarded, so holding is the only way to withhold them).
//!
//! [`HoldBack`] queues whole SSE events with the number of content characters each carries and
//! releases the oldest ones as soon as the content behind them is at least `window` long.
//! Checkpoints are at fixed content lengths (`every`, `2·every`, …), not at event boundaries, so
//! the prefixes scored, and therefore where a stream is cut, do not depend on how the backend
//! or the network chunked the stream.

use std::collections::VecDeque;

#[derive(Debug, Clone)]
pub struct HoldBack {
    window: usize,
    every: usize,
    /// Events not yet forwarded: raw bytes and content characters.
    held: VecDeque<(Vec<u8>, usize)>,
    held_chars: usize,
    /// Content characters already checked (a multiple of `every`).
    checked: usize,
}

impl HoldBack {
    /// `every` is at least 1.
    pub fn new(window: usize, every: usize) -> Self {
        HoldBack {
            window,
            every: every.max(1),
            held: VecDeque::new(),
            held_chars: 0,
            checked: 0,
        }
    }

    /// Holds an event carrying `chars` content characters and appends to `out` the events that
    /// are now older than the window.
    pub fn hold(&mut self, raw: Vec<u8>, chars: usize, out: &mut Vec<u8>) {
        self.held.push_back((raw, chars));
        self.held_chars = self.held_chars.saturating_add(chars);
        while let Some((_, front)) = self.held.front() {
            if self.held_chars.saturating_sub(*front) < self.window {
                break;
            }
            self.held_chars = self.held_chars.saturating_sub(*front);
            if let Some((raw, _)) = self.held.pop_front() {
                out.extend_from_slice(&raw);
            }
        }
    }

    /// The checkpoints (content lengths in characters) that an answer of `total` characters
    /// has reached since the last call, in order.
    pub fn due(&mut self, total: usize) -> Vec<usize> {
        let mut out = Vec::new();
        while self.checked.saturating_add(self.every) <= total {
            self.checked = self.checked.saturating_add(self.every);
            out.push(self.checked);
        }
        out
    }

    /// Appends every held event to `out` (the answer passed).
    pub fn release(&mut self, out: &mut Vec<u8>) {
        for (raw, _) in self.held.drain(..) {
            out.extend_from_slice(&raw);
        }
        self.held_chars = 0;
    }

    /// Drops every held event (the answer is cut).
    pub fn discard(&mut self) {
        self.held.clear();
        self.held_chars = 0;
    }

    /// Content characters held back.
    pub fn held_chars(&self) -> usize {
        self.held_chars
    }
}

/// The first `chars` characters of `s` (all of it when shorter).
pub fn prefix_chars(s: &str, chars: usize) -> &str {
    match s.char_indices().nth(chars) {
        Some((i, _)) => s.get(..i).unwrap_or(s),
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::StreamAnswer;

    /// Holds events of the given content sizes; the content released after each one.
    fn run(window: usize, sizes: &[usize]) -> Vec<usize> {
        let mut h = HoldBack::new(window, 16);
        let mut released = Vec::new();
        let mut total = 0;
        for (i, &n) in sizes.iter().enumerate() {
            let mut out = Vec::new();
            h.hold(vec![b'a' + (i % 26) as u8; n], n, &mut out);
            total += out.len();
            assert!(h.held_chars() >= window.min(sizes[..=i].iter().sum()));
            released.push(total);
        }
        released
    }

    #[test]
    fn the_last_window_is_held_back_and_released_in_order() {
        // Events of 10 characters, window 25: an event goes once 25 are behind it.
        assert_eq!(run(25, &[10, 10, 10, 10, 10]), vec![0, 0, 0, 10, 20]);
        // Window 0: nothing is held.
        assert_eq!(run(0, &[3, 4]), vec![3, 7]);
        let mut h = HoldBack::new(5, 16);
        let mut out = Vec::new();
        h.hold(b"ab".to_vec(), 2, &mut out);
        h.hold(b"cd".to_vec(), 2, &mut out);
        h.release(&mut out);
        assert_eq!(out, b"abcd");
        h.hold(b"ef".to_vec(), 2, &mut out);
        h.discard();
        h.release(&mut out);
        assert_eq!((out.as_slice(), h.held_chars()), (&b"abcd"[..], 0));
    }

    #[test]
    fn checkpoints_do_not_depend_on_the_chunking() {
        for step in [1, 7, 16, 50, 200] {
            let mut h = HoldBack::new(0, 16);
            let mut seen = Vec::new();
            let mut total = 0;
            while total < 100 {
                total = (total + step).min(100);
                seen.extend(h.due(total));
            }
            assert_eq!(seen, vec![16, 32, 48, 64, 80, 96], "step {step}");
        }
        assert_eq!(prefix_chars("héllo", 2), "hé");
        assert_eq!(prefix_chars("hé", 9), "hé");
    }

    #[test]
    fn the_cut_is_a_content_filter_chunk_then_done() {
        let mut a = StreamAnswer::new(1 << 20);
        a.push(r#"{"id":"c1","created":7,"model":"m","choices":[{"index":0,"delta":{"content":"hé"}}]}"#);
        assert_eq!(a.chars, 2);
        let bytes = a.cut_events(&serde_json::json!({"decision": "escalate"}));
        let text = String::from_utf8(bytes).unwrap();
        let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
        assert_eq!(events.len(), 2);
        assert_eq!(events[1], "data: [DONE]");
        let chunk: serde_json::Value =
            serde_json::from_str(events[0].strip_prefix("data: ").unwrap()).unwrap();
        assert_eq!(chunk["id"], "c1");
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["choices"][0]["finish_reason"], "content_filter");
        assert_eq!(chunk["kakeya"]["decision"], "escalate");
    }
}
