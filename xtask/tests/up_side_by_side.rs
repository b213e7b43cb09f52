//! `cargo xtask up` twice on one machine: each stack listens where its variables say and serves
//! from its own data dir, and a third one on a taken address refuses to start instead of
//! declaring itself up on the other stack's listeners.
//!
//! Runs the real `xtask` binary with the prebuilt artefacts `cargo xtask test` provides
//! (`KAKEYA_BIN`, `KAKEYA_GATE_WASM`, `KAKEYA_ENVOY_BIN`).

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const GOLDEN: &str = include_str!("../../core/tests/data/pcs_tiny_case_1.json");

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
}

struct Up {
    child: Child,
    gateway: SocketAddr,
    /// Everything `up` printed on stdout.
    stdout: mpsc::Receiver<String>,
}

/// Ctrl-C, as a user would stop it (so it stops Envoy and the control plane), then waits for
/// the exit within `within`; SIGKILL if it is still running then.
fn interrupt(child: &mut Child, within: Duration) -> Option<std::process::ExitStatus> {
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    wait_with_deadline(child, within)
}

fn wait_with_deadline(child: &mut Child, within: Duration) -> Option<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + within;
    while std::time::Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

impl Drop for Up {
    fn drop(&mut self) {
        // Also on a failed assertion: never leave Envoy and kakeya running on their ports.
        if let Ok(None) = self.child.try_wait() {
            interrupt(&mut self.child, Duration::from_secs(20));
        }
    }
}

fn command(data_dir: &Path, addrs: [SocketAddr; 5]) -> Command {
    for var in ["KAKEYA_BIN", "KAKEYA_GATE_WASM", "KAKEYA_ENVOY_BIN"] {
        assert!(
            std::env::var_os(var).is_some(),
            "{var} is not set: run this test through `cargo xtask test`"
        );
    }
    let mut c = Command::new(env!("CARGO_BIN_EXE_xtask"));
    c.arg("up")
        .env("KAKEYA_DATA_DIR", data_dir)
        .env("KAKEYA_GATEWAY_ADDR", addrs[0].to_string())
        .env("KAKEYA_ADMIN_ADDR", addrs[1].to_string())
        .env("KAKEYA_INGEST_ADDR", addrs[2].to_string())
        .env("KAKEYA_ENVOY_ADMIN_ADDR", addrs[3].to_string())
        .env("KAKEYA_MICROVOTE_ADDR", addrs[4].to_string())
        .env("PCS_SIGN_ALG", "hmac")
        .env("PCS_HMAC_KEY", "testsecret")
        .env("RUST_LOG", "warn");
    c
}

/// Starts `cargo xtask up` and waits (bounded) for its "is up" summary.
fn start(data_dir: &Path) -> (Up, String) {
    let addrs = [
        free_addr(),
        free_addr(),
        free_addr(),
        free_addr(),
        free_addr(),
    ];
    let log = std::fs::File::create(data_dir.with_extension("log")).unwrap();
    let mut child = command(data_dir, addrs)
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let up = Up {
        child,
        gateway: addrs[0],
        stdout: rx,
    };
    let mut summary = String::new();
    loop {
        match up.stdout.recv_timeout(Duration::from_secs(120)) {
            Ok(line) => {
                summary.push_str(&line);
                summary.push('\n');
                if line.starts_with("Press Ctrl-C") {
                    return (up, summary);
                }
            }
            Err(e) => panic!(
                "`cargo xtask up` did not come up ({e}); its log:\n{}",
                std::fs::read_to_string(data_dir.with_extension("log")).unwrap_or_default()
            ),
        }
    }
}

fn submit_golden(gateway: SocketAddr) -> (u16, String) {
    let url = format!("http://{gateway}/v1/pcs/submit");
    for _ in 0..50 {
        match ureq::post(&url)
            .set("content-type", "application/json")
            .send_string(GOLDEN)
        {
            Ok(r) => return (r.status(), r.into_string().unwrap()),
            Err(ureq::Error::Status(503, _)) => continue,
            Err(ureq::Error::Status(s, r)) => return (s, r.into_string().unwrap()),
            Err(e) => panic!("{url}: {e}"),
        }
    }
    panic!("{url} kept answering 503")
}

#[test]
fn two_stacks_run_side_by_side_and_a_taken_address_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir_a, dir_b) = (tmp.path().join("a"), tmp.path().join("b"));
    let (a, summary_a) = start(&dir_a);
    let (b, summary_b) = start(&dir_b);

    // Each summary names its own addresses, data dir and the CLI, with the exports to use.
    for (up, summary, dir) in [(&a, &summary_a, &dir_a), (&b, &summary_b, &dir_b)] {
        let dir = dir.canonicalize().unwrap();
        assert!(
            summary.contains(&format!("http://{}/v1/pcs/submit", up.gateway)),
            "{summary}"
        );
        assert!(
            summary.contains(&format!("export KAKEYA_DATA_DIR={}", dir.display())),
            "{summary}"
        );
        assert!(
            summary.contains(&std::env::var("KAKEYA_BIN").unwrap()),
            "{summary}"
        );
        let (status, body) = submit_golden(up.gateway);
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("\"accepted\":true"), "{body}");
        assert!(
            dir.join("kakeya.db").is_file(),
            "state lives in {}",
            dir.display()
        );
        let token = dir.join("admin.token");
        assert!(summary.contains(&token.display().to_string()), "{summary}");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&token).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{}", token.display());
    }

    // A third stack on stack A's gateway address: refused before anything starts.
    let dir_c = tmp.path().join("c");
    let mut addrs = [
        free_addr(),
        free_addr(),
        free_addr(),
        free_addr(),
        free_addr(),
    ];
    addrs[0] = a.gateway;
    let err_path = tmp.path().join("c.err");
    let mut third = command(&dir_c, addrs)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    let status = wait_with_deadline(&mut third, Duration::from_secs(60))
        .expect("a stack on a taken address must fail fast, not run");
    assert!(!status.success());
    let err = std::fs::read_to_string(&err_path).unwrap();
    assert!(
        err.contains(&format!("{} (gateway_addr) is not free", a.gateway)),
        "{err}"
    );
    // ... and stack A still answers.
    assert_eq!(submit_golden(a.gateway).0, 200);

    // Ctrl-C stops a stack cleanly.
    for mut up in [a, b] {
        let status = interrupt(&mut up.child, Duration::from_secs(30)).expect("stopped on Ctrl-C");
        assert!(status.success(), "{status}");
    }
}
