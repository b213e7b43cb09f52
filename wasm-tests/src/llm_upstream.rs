//! A small OpenAI-compatible chat-completions server for the gateway tests: it answers
//! `POST /v1/chat/completions` from a script (the request's `user` field, else its last user
//! message → answer), plain JSON or, when
//! the request says `"stream": true`, Server-Sent Events in chunks of `chunk_chars` characters
//! (each its own HTTP chunk, flushed). It stands in for the LLM, which cannot be reached here.
//!
//! For the incrementality check, a stream can be held after its first content chunk (or after
//! the chunk that reaches [`LlmUpstream::hold_after_chars`] characters) until the
//! test calls [`LlmUpstream::release`] (or 20 s pass, which is recorded: a gateway that buffered
//! the stream would make the test wait for that timeout).

use anyhow::Result;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// How long a held stream waits for [`LlmUpstream::release`].
const HOLD_TIMEOUT: Duration = Duration::from_secs(20);

/// One request the backend received: headers (names lower-cased) and body.
pub type Received = (Vec<(String, String)>, Vec<u8>);

#[derive(Default)]
struct State {
    answers: BTreeMap<String, String>,
    /// Requests received: (headers lower-cased, body).
    requests: Vec<Received>,
    chunk_chars: usize,
    hold: bool,
    /// Hold once this many content characters were sent (0: after the first content chunk).
    hold_after: usize,
    released: bool,
    hold_timed_out: bool,
}

#[derive(Clone)]
pub struct LlmUpstream {
    pub addr: SocketAddr,
    state: Arc<(Mutex<State>, Condvar)>,
}

impl LlmUpstream {
    /// Serves `answers` (`user` or question → answer) on a free loopback port.
    pub fn start(answers: BTreeMap<String, String>, chunk_chars: usize) -> Result<LlmUpstream> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let up = LlmUpstream {
            addr: listener.local_addr()?,
            state: Arc::new((
                Mutex::new(State {
                    answers,
                    chunk_chars: chunk_chars.max(1),
                    ..State::default()
                }),
                Condvar::new(),
            )),
        };
        let server = up.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let s = server.clone();
                std::thread::spawn(move || {
                    let _ = s.serve(conn);
                });
            }
        });
        Ok(up)
    }

    /// Hold every stream after its first content chunk until [`LlmUpstream::release`].
    pub fn hold_streams(&self) {
        self.hold_after_chars(0);
    }

    /// Hold every stream after the chunk that brings the content sent to `chars` characters.
    pub fn hold_after_chars(&self, chars: usize) {
        let mut st = self.lock();
        st.hold = true;
        st.hold_after = chars;
        st.released = false;
    }

    /// Streams are sent in chunks of `chars` characters of content from now on.
    pub fn set_chunk_chars(&self, chars: usize) {
        self.lock().chunk_chars = chars.max(1);
    }

    pub fn release(&self) {
        self.lock().released = true;
        self.state.1.notify_all();
    }

    /// A held stream gave up waiting for the test.
    pub fn hold_timed_out(&self) -> bool {
        self.lock().hold_timed_out
    }

    pub fn requests(&self) -> Vec<Received> {
        self.lock().requests.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn serve(&self, conn: TcpStream) -> Result<()> {
        let mut reader = BufReader::new(conn.try_clone()?);
        let mut out = conn;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            let mut headers = Vec::new();
            loop {
                let mut h = String::new();
                reader.read_line(&mut h)?;
                let h = h.trim_end();
                if h.is_empty() {
                    break;
                }
                if let Some((k, v)) = h.split_once(':') {
                    headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
                }
            }
            let len = headers
                .iter()
                .find(|(k, _)| k == "content-length")
                .and_then(|(_, v)| v.parse::<usize>().ok())
                .unwrap_or(0);
            let mut body = vec![0; len];
            reader.read_exact(&mut body)?;
            self.lock().requests.push((headers, body.clone()));
            self.answer(&mut out, &body)?;
        }
    }

    fn answer(&self, out: &mut TcpStream, body: &[u8]) -> Result<()> {
        let req: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let question = req["user"]
            .as_str()
            .or_else(|| {
                req["messages"]
                    .as_array()
                    .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
                    .and_then(|m| m["content"].as_str())
            })
            .unwrap_or_default()
            .to_string();
        let (answer, chunk_chars) = {
            let st = self.lock();
            (st.answers.get(&question).cloned(), st.chunk_chars)
        };
        let Some(answer) = answer else {
            let b = json!({"error": {"message": "no scripted answer", "type": "invalid_request_error"}})
                .to_string();
            write!(
                out,
                "HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{b}",
                b.len()
            )?;
            return Ok(out.flush()?);
        };
        let model = req["model"].as_str().unwrap_or("scripted").to_string();
        if req["stream"] != json!(true) {
            let b = json!({
                "id": "chatcmpl-scripted", "object": "chat.completion", "created": 1_700_000_000,
                "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": answer},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20},
            })
            .to_string();
            write!(
                out,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{b}",
                b.len()
            )?;
            return Ok(out.flush()?);
        }
        write!(
            out,
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
        )?;
        let chunk = |delta: Value, finish: Value| {
            let c = json!({"id": "chatcmpl-scripted", "object": "chat.completion.chunk",
                           "created": 1_700_000_000, "model": model,
                           "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
            format!("data: {c}\n\n")
        };
        let chars: Vec<char> = answer.chars().collect();
        let mut events = vec![chunk(
            json!({"role": "assistant", "content": ""}),
            Value::Null,
        )];
        for piece in chars.chunks(chunk_chars) {
            let text: String = piece.iter().collect();
            events.push(chunk(json!({"content": text}), Value::Null));
        }
        events.push(chunk(json!({}), json!("stop")));
        if req["stream_options"]["include_usage"] == json!(true) {
            // OpenAI's usage chunk: no choices, the token counts.
            let u = json!({"id": "chatcmpl-scripted", "object": "chat.completion.chunk",
                           "created": 1_700_000_000, "model": model, "choices": [],
                           "usage": {"prompt_tokens": 10, "completion_tokens": 10,
                                     "total_tokens": 20}});
            events.push(format!("data: {u}\n\n"));
        }
        events.push("data: [DONE]\n\n".to_string());
        let hold_after = self.lock().hold_after;
        let mut sent = 0;
        let mut held = false;
        for (i, e) in events.iter().enumerate() {
            write!(out, "{:x}\r\n{e}\r\n", e.len())?;
            out.flush()?;
            if i >= 1 && i <= chars.len().div_ceil(chunk_chars) {
                sent += chunk_chars.min(chars.len() - (i - 1) * chunk_chars);
            }
            if i >= 1 && !held && sent >= hold_after {
                held = true;
                self.wait_if_held();
            }
        }
        write!(out, "0\r\n\r\n")?;
        Ok(out.flush()?)
    }

    fn wait_if_held(&self) {
        let (m, cv) = &*self.state;
        let st = m.lock().unwrap_or_else(|e| e.into_inner());
        if !st.hold {
            return;
        }
        let (mut st, timeout) = cv
            .wait_timeout_while(st, HOLD_TIMEOUT, |s| !s.released)
            .unwrap_or_else(|e| e.into_inner());
        if timeout.timed_out() {
            st.hold_timed_out = true;
        }
    }
}
