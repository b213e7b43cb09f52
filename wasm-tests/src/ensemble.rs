//! Helpers for the ensemble end-to-end tests: a bundle server that stands in for the control
//! plane's `GET /v1/bundles/current` (the control plane publishes no ensemble policy of its own
//! yet: the adaptive tuner does), bundles signed with the stack's own key, and the Envoy
//! cluster `kakeya_microvote` pointed wherever a test wants (a closed port, or the real
//! `kakeya microvote` server).

use anyhow::{Context, Result};
use kakeya_core::bundle::{Bundle, SignedBundle, H_SHA256, H_SIGNATURE};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};

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
