//! Helpers for the ensemble end-to-end tests: a bundle server that stands in for the control
//! plane's `GET /v1/bundles/current` (the control plane publishes no ensemble policy of its own
//! yet: the adaptive tuner does), bundles signed with the stack's own key, and the Envoy
//! cluster `kakeya_microvote` pointed wherever a test wants (a closed port, or the real
//! `kakeya microvote` server).

use anyhow::{Context, Result};
use kakeya_core::bundle::{Bundle, SignedBundle, H_SHA256, H_SIGNATURE};
use kakeya_core::microvote::{MicroVoteRequest, MicroVoteResponse};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Serves one signed bundle at any path (503 until one is set). Runs until the process ends.
#[derive(Clone)]
pub struct BundleServer {
    pub addr: SocketAddr,
    current: Arc<Mutex<Option<SignedBundle>>>,
}

impl BundleServer {
    pub fn start() -> Result<BundleServer> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let current: Arc<Mutex<Option<SignedBundle>>> = Arc::new(Mutex::new(None));
        let shared = current.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { continue };
                // One request per connection: read the head (GET, no body), answer, close.
                let mut buf = [0u8; 4096];
                let mut head = Vec::new();
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(buf.get(..n).unwrap_or_default()),
                    }
                }
                let bundle = shared.lock().ok().and_then(|b| b.clone());
                let resp = match bundle {
                    Some(b) => {
                        let mut r = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n{H_SHA256}: {}\r\n{H_SIGNATURE}: {}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                            b.sha256,
                            b.signature_b64,
                            b.bytes.len()
                        )
                        .into_bytes();
                        r.extend_from_slice(&b.bytes);
                        r
                    }
                    None => b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_vec(),
                };
                let _ = s.write_all(&resp);
            }
        });
        Ok(BundleServer { addr, current })
    }

    pub fn set(&self, b: SignedBundle) {
        if let Ok(mut c) = self.current.lock() {
            *c = Some(b);
        }
    }
}

/// Signs `b` with the stack's bundle signing seed (the key the rendered gate trusts).
pub fn sign_with_stack_key(stack: &crate::stack::Stack, b: &Bundle) -> Result<SignedBundle> {
    let seed_path = stack.data_path().join("keys/bundle-signing.seed");
    let seed = kakeya_control_plane::registry::keys::load_seed(&seed_path)
        .with_context(|| format!("reading {}", seed_path.display()))?;
    Ok(b.sign(&seed))
}

/// The bootstrap `yaml` with a STATIC cluster `name` → `addr` added to its clusters.
pub fn with_cluster(yaml: &str, name: &str, addr: SocketAddr) -> Result<String> {
    let cluster = format!(
        "  clusters:\n    - name: {name}\n      type: STATIC\n      connect_timeout: 0.25s\n      load_assignment:\n        cluster_name: {name}\n        endpoints:\n          - lb_endpoints:\n              - endpoint:\n                  address:\n                    socket_address: {{ address: {}, port_value: {} }}\n",
        addr.ip(),
        addr.port()
    );
    anyhow::ensure!(
        yaml.contains("\n  clusters:\n"),
        "the bootstrap has no static clusters section"
    );
    Ok(yaml.replacen("\n  clusters:\n", &format!("\n{cluster}"), 1))
}

/// The name of the gate's micro-vote cluster (`GateConfig::microvote_cluster` default).
pub const MICROVOTE_CLUSTER: &str = "kakeya_microvote";

/// The encoder folder of the real micro-vote (`KAKEYA_MICROVOTE_MODEL_DIR`, which `cargo xtask
/// test` sets); `None` when unset (the micro-vote tests then skip, saying so).
pub fn microvote_model_dir() -> Option<PathBuf> {
    std::env::var_os("KAKEYA_MICROVOTE_MODEL_DIR").map(PathBuf::from)
}

/// A running `kakeya microvote serve` (the real encoder and the committed head) on a free
/// port, with its own empty data dir; killed on drop.
pub struct MicrovoteServer {
    pub addr: SocketAddr,
    child: Option<Child>,
    _data: tempfile::TempDir,
    agent: ureq::Agent,
}

impl MicrovoteServer {
    /// Starts the server and waits for `/healthz` (the encoder loads first).
    pub fn start(kakeya: &Path, model_dir: &Path) -> Result<MicrovoteServer> {
        let addr = crate::stack::free_addr()?;
        let data = tempfile::tempdir()?;
        let mut child = Command::new(kakeya)
            .args(["microvote", "serve"])
            .env("KAKEYA_DATA_DIR", data.path())
            .env("KAKEYA_MICROVOTE_ADDR", addr.to_string())
            .env("KAKEYA_MICROVOTE_MODEL_DIR", model_dir)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::null())
            .spawn()
            .context("cannot start kakeya microvote serve")?;
        crate::stack::wait_ready(addr, "/healthz", Duration::from_secs(180), Some(&mut child))
            .context("kakeya microvote serve did not become healthy")?;
        Ok(MicrovoteServer {
            addr,
            child: Some(child),
            _data: data,
            agent: ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(60))
                .build(),
        })
    }

    /// `POST /v1/microvote`, as the gate sends it.
    pub fn score(&self, req: &MicroVoteRequest) -> Result<MicroVoteResponse> {
        let body = serde_json::to_vec(req)?;
        let a = crate::stack::post(
            &self.agent,
            &format!("http://{}/v1/microvote", self.addr),
            &[("content-type", "application/json")],
            &body,
        )?;
        anyhow::ensure!(
            a.status == 200,
            "micro-vote answered {}: {}",
            a.status,
            a.body
        );
        Ok(serde_json::from_str(&a.body)?)
    }

    /// The server's Prometheus text (`GET /metrics`).
    pub fn metrics(&self) -> Result<String> {
        let a = crate::stack::call(&self.agent, "GET", &format!("http://{}/metrics", self.addr))?;
        Ok(a.body)
    }

    /// Kills the server and waits for it: its port then refuses connections.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for MicrovoteServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A TCP tap between Envoy and the control plane's ingest listener: forwards every byte both
/// ways and records the values of one request header the gate forwards (e.g.
/// `x-kakeya-votes`), so a test sees exactly what the filter sent. Point
/// `StackOptions::ingest_override` at [`HeaderTap::addr`], then [`HeaderTap::forward_to`] the
/// stack's ingest address. Runs until the process ends.
#[derive(Clone)]
pub struct HeaderTap {
    pub addr: SocketAddr,
    upstream: Arc<Mutex<Option<SocketAddr>>>,
    seen: Arc<Mutex<Vec<String>>>,
}

impl HeaderTap {
    pub fn start(header: &str) -> Result<HeaderTap> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let tap = HeaderTap {
            addr: listener.local_addr()?,
            upstream: Arc::new(Mutex::new(None)),
            seen: Arc::new(Mutex::new(Vec::new())),
        };
        let needle = format!("\r\n{}:", header.to_ascii_lowercase());
        let t = tap.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let Some(up) = t.upstream.lock().ok().and_then(|u| *u) else {
                    continue;
                };
                let Ok(server) = std::net::TcpStream::connect(up) else {
                    continue;
                };
                let (Ok(mut c2), Ok(mut s2)) = (client.try_clone(), server.try_clone()) else {
                    continue;
                };
                // Upstream → client: plain copy.
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut s2, &mut c2);
                    let _ = c2.shutdown(std::net::Shutdown::Both);
                });
                // Client → upstream: copy, scanning the stream for the header's lines.
                let (seen, needle) = (t.seen.clone(), needle.clone());
                std::thread::spawn(move || {
                    let (mut client, mut server) = (client, server);
                    let mut buf = [0u8; 16384];
                    let mut window: Vec<u8> = Vec::new();
                    loop {
                        let n = match client.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        let chunk = buf.get(..n).unwrap_or_default();
                        if server.write_all(chunk).is_err() {
                            break;
                        }
                        window.extend_from_slice(chunk);
                        record_header_lines(&mut window, &needle, &seen);
                    }
                    let _ = server.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        Ok(tap)
    }

    pub fn forward_to(&self, upstream: SocketAddr) {
        if let Ok(mut u) = self.upstream.lock() {
            *u = Some(upstream);
        }
    }

    /// Every value of the header seen so far, in order.
    pub fn values(&self) -> Vec<String> {
        self.seen.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

/// Moves the complete `needle` header lines of `window` (lower-cased match) into `seen` and
/// keeps only the tail that may still hold a partial line.
fn record_header_lines(window: &mut Vec<u8>, needle: &str, seen: &Mutex<Vec<String>>) {
    loop {
        let lower = window.to_ascii_lowercase();
        let Some(start) = lower
            .windows(needle.len())
            .position(|w| w == needle.as_bytes())
        else {
            break;
        };
        let from = start + needle.len();
        let Some(end) = lower
            .get(from..)
            .and_then(|t| t.windows(2).position(|w| w == b"\r\n"))
        else {
            // The line is not complete yet: keep it.
            window.drain(..start);
            return;
        };
        let value = String::from_utf8_lossy(window.get(from..from + end).unwrap_or_default())
            .trim()
            .to_string();
        if let Ok(mut s) = seen.lock() {
            s.push(value);
        }
        window.drain(..from + end);
    }
    // No header start left: keep a tail long enough to hold a needle cut in two.
    let keep = needle.len().min(window.len());
    window.drain(..window.len() - keep);
}

/// A strategy of weight 1 with its documented cut-offs, and `deadline_ms` for one that calls
/// out.
pub fn strategy(deadline_ms: Option<u32>) -> kakeya_core::ensemble_policy::StrategyConfig {
    kakeya_core::ensemble_policy::StrategyConfig {
        weight: 1.0,
        accept_below: None,
        reject_above: None,
        deadline_ms,
    }
}
