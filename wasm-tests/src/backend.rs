//! A tiny real HTTP/1.1 backend for the upstream-route tests: every request is answered with
//! `{"backend": <name>}`, healthily (200), with errors (503) or slowly (200 after a delay),
//! switchable while it runs. Keep-alive connections (Envoy reuses its upstream connections)
//! are served request after request.

use anyhow::Result;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How the backend answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Healthy,
    /// 503 to every request.
    Errors,
    /// 200 after this many milliseconds.
    Slow(u64),
}

impl Mode {
    fn encode(self) -> u64 {
        match self {
            Mode::Healthy => 0,
            Mode::Errors => 1,
            Mode::Slow(ms) => 2 + ms,
        }
    }

    fn decode(v: u64) -> Mode {
        match v {
            0 => Mode::Healthy,
            1 => Mode::Errors,
            ms => Mode::Slow(ms - 2),
        }
    }
}

#[derive(Clone)]
pub struct Backend {
    pub addr: SocketAddr,
    pub name: String,
    mode: Arc<AtomicU64>,
    served: Arc<AtomicU64>,
}

impl Backend {
    /// Listens on a free loopback port below the ephemeral range ([`crate::stack::free_addr`]).
    pub fn start(name: &str, mode: Mode) -> Result<Backend> {
        let listener = TcpListener::bind(crate::stack::free_addr()?)?;
        let b = Backend {
            addr: listener.local_addr()?,
            name: name.to_string(),
            mode: Arc::new(AtomicU64::new(mode.encode())),
            served: Arc::new(AtomicU64::new(0)),
        };
        let server = b.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let s = server.clone();
                std::thread::spawn(move || {
                    let _ = s.serve(conn);
                });
            }
        });
        Ok(b)
    }

    pub fn set_mode(&self, mode: Mode) {
        self.mode.store(mode.encode(), Ordering::SeqCst);
    }

    /// Requests answered so far.
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::SeqCst)
    }

    fn serve(&self, conn: TcpStream) -> Result<()> {
        conn.set_read_timeout(Some(Duration::from_secs(120)))?;
        let mut reader = BufReader::new(conn.try_clone()?);
        let mut out = conn;
        loop {
            // The request head; its body (if any) by content-length.
            let mut length = 0usize;
            let mut first = true;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line)? == 0 {
                    return Ok(());
                }
                let l = line.trim_end();
                if l.is_empty() {
                    if first {
                        continue;
                    }
                    break;
                }
                first = false;
                if let Some((k, v)) = l.split_once(':') {
                    if k.eq_ignore_ascii_case("content-length") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                }
            }
            let mut body = vec![0u8; length];
            reader.read_exact(&mut body)?;
            let (status, reason) = match Mode::decode(self.mode.load(Ordering::SeqCst)) {
                Mode::Healthy => (200, "OK"),
                Mode::Errors => (503, "Service Unavailable"),
                Mode::Slow(ms) => {
                    std::thread::sleep(Duration::from_millis(ms));
                    (200, "OK")
                }
            };
            let payload = format!("{{\"backend\":\"{}\"}}", self.name);
            write!(
                out,
                "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{payload}",
                payload.len()
            )?;
            out.flush()?;
            self.served.fetch_add(1, Ordering::SeqCst);
        }
    }
}
