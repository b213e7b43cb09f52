//! `cargo xtask`: the project's own commands.
//!
//! * `cargo xtask up`    — install what is missing (wasm target, Envoy), build, run the control
//!   plane on SQLite and Envoy with the gate filter, print the URLs, stop both on Ctrl-C.
//! * `cargo xtask test`  — everything: formatting, lints, unit, property, wasmtime-harness and
//!   end-to-end tests through real Envoy (and PostgreSQL when it is reachable).
//! * `cargo xtask bench` — the benchmarks behind `docs/BENCHMARKS.md`.
//!
//! Kept dependency-light on purpose: it is compiled before anything else runs.

mod tools;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

type Result<T> = std::result::Result<T, String>;

const USAGE: &str = "usage: cargo xtask <up|test|bench|wasm|envoy>

  up      build and run the gateway (Envoy + gate filter) and the control plane on SQLite
  test    run every test: fmt, clippy, unit, property, wasm harness, end-to-end through Envoy
  bench   run the benchmarks and rewrite docs/BENCHMARKS.md
  wasm    build the gate filter (wasm32-wasip1) and print its path
  envoy   install Envoy 1.40 into the tools folder and print its path

Environment: KAKEYA_DATA_DIR (default ./.kakeya), KAKEYA_TOOLS_DIR (default ./.kakeya-tools),
CARGO_TARGET_DIR, and every variable of `kakeya serve` (PCS_SIGN_ALG, PCS_HMAC_KEY, TENANTS, ...).";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("up") => up(),
        Some("test") => test(&args[1..]),
        Some("bench") => bench(),
        Some("wasm") => build_wasm().map(|p| println!("{}", p.display())),
        Some("envoy") => tools::envoy(&root()).map(|p| println!("{}", p.display())),
        Some("-h" | "--help" | "help") | None => {
            println!("{USAGE}");
            Ok(())
        }
        Some(other) => Err(format!("unknown command {other:?}\n\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root (xtask lives one level below it). `cargo run` sets CARGO_MANIFEST_DIR for
/// the process, which is right even when the binary was built from another checkout.
fn root() -> PathBuf {
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest_dir
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("xtask: $ {}", describe(cmd));
    let status = cmd
        .status()
        .map_err(|e| format!("cannot start {}: {e}", describe(cmd)))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{}` failed ({status})", describe(cmd)))
    }
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Builds the gate filter with the small, abort-on-panic `wasm` profile.
fn build_wasm() -> Result<PathBuf> {
    tools::ensure_wasm_target()?;
    run(cargo().args([
        "build",
        "-p",
        "kakeya-gate",
        "--target",
        "wasm32-wasip1",
        "--profile",
        "wasm",
    ]))?;
    let wasm = target_dir().join("wasm32-wasip1/wasm/kakeya_gate.wasm");
    if wasm.is_file() {
        Ok(wasm)
    } else {
        Err(format!("the build did not produce {}", wasm.display()))
    }
}

/// Builds the `kakeya` binary with `profile` and returns its path.
fn build_kakeya(profile: &str) -> Result<PathBuf> {
    run(cargo().args([
        "build",
        "-p",
        "kakeya-control-plane",
        "--bin",
        "kakeya",
        "--profile",
        profile,
    ]))?;
    let dir = if profile == "dev" { "debug" } else { profile };
    Ok(target_dir().join(dir).join("kakeya"))
}

fn up() -> Result<()> {
    let envoy = tools::envoy(&root())?;
    let wasm = build_wasm()?;
    let kakeya = build_kakeya("release")?;
    let data_dir = std::env::var("KAKEYA_DATA_DIR").unwrap_or_else(|_| "./.kakeya".into());
    std::fs::create_dir_all(&data_dir).map_err(|e| format!("cannot create {data_dir}: {e}"))?;
    let envoy_yaml = Path::new(&data_dir).join("envoy.yaml");

    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
        .map_err(|e| format!("cannot handle Ctrl-C: {e}"))?;

    let mut children = Children::default();
    eprintln!("xtask: starting the control plane");
    children.push(
        "kakeya",
        Command::new(&kakeya)
            .arg("serve")
            .env("KAKEYA_DATA_DIR", &data_dir)
            .spawn(),
    )?;
    wait_http_ok(
        "127.0.0.1:8081",
        "/ready",
        Duration::from_secs(60),
        &mut children,
    )?;
    eprintln!("xtask: starting Envoy");
    // `kakeya envoy run` renders envoy.yaml and execs Envoy with the gate keyring in its
    // environment (the keyring is not in the YAML).
    children.push(
        "envoy",
        Command::new(&kakeya)
            .args(["envoy", "run", "--wasm"])
            .arg(&wasm)
            .arg("--out")
            .arg(&envoy_yaml)
            .arg("--envoy")
            .arg(&envoy)
            .args(["--", "--log-level", "warn", "--base-id", "7401"])
            .env("KAKEYA_DATA_DIR", &data_dir)
            .spawn(),
    )?;
    wait_http_ok(
        "127.0.0.1:9901",
        "/ready",
        Duration::from_secs(60),
        &mut children,
    )?;
    println!(
        "\nKakeya Edge is up (data in {data_dir}).\n\
         \n  gateway        http://127.0.0.1:8080/v1/pcs/submit   (POST a PCS; /health)\
         \n  control plane  http://127.0.0.1:8081/health /ready /metrics /v1/openapi.json\
         \n  ingest         http://127.0.0.1:8082 (loopback only; Envoy forwards here)\
         \n  envoy admin    http://127.0.0.1:9901/stats/prometheus\
         \n\nTry: curl -s -XPOST --data-binary @core/tests/data/pcs_tiny_case_1.json http://127.0.0.1:8080/v1/pcs/submit\
         \nPress Ctrl-C to stop both.\n"
    );
    while !stop.load(Ordering::SeqCst) {
        if let Some(name) = children.exited() {
            return Err(format!("{name} exited; see its log above"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("\nxtask: stopping");
    Ok(())
}

fn test(args: &[String]) -> Result<()> {
    let quick = args.iter().any(|a| a == "--no-lint");
    let envoy = tools::envoy(&root())?;
    let wasm = build_wasm()?;
    if !quick {
        run(cargo().args(["fmt", "--all", "--check"]))?;
        run(cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))?;
        run(cargo().args([
            "clippy",
            "-p",
            "kakeya-gate",
            "--target",
            "wasm32-wasip1",
            "--",
            "-D",
            "warnings",
        ]))?;
    }
    let kakeya = build_kakeya("dev")?;
    tools::postgres_note();
    let mut tally = Tally::default();
    tally.run(
        cargo()
            .args(["test", "--workspace", "--exclude", "kakeya-gate"])
            .env("KAKEYA_GATE_WASM", &wasm)
            .env("KAKEYA_ENVOY_BIN", &envoy)
            .env("KAKEYA_BIN", &kakeya),
    )?;
    // The gate's native unit and property tests (its cdylib is built for wasm above).
    tally.run(cargo().args(["test", "-p", "kakeya-gate"]))?;
    // One closing line for the whole run (cargo's last line is some crate's doc tests).
    println!(
        "tests: {} passed, {} failed, {} skipped",
        tally.passed, tally.failed, tally.ignored
    );
    Ok(())
}

/// Counts of every `test result:` line of the test runs.
#[derive(Default)]
struct Tally {
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl Tally {
    /// Runs a `cargo test` command, echoing its output and adding up its results.
    fn run(&mut self, cmd: &mut Command) -> Result<()> {
        use std::io::{BufRead, BufReader};
        eprintln!("xtask: $ {}", describe(cmd));
        let mut child = cmd
            .stdout(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", describe(cmd)))?;
        if let Some(out) = child.stdout.take() {
            for line in BufReader::new(out).lines().map_while(std::io::Result::ok) {
                println!("{line}");
                if let Some(rest) = line.strip_prefix("test result: ") {
                    for part in rest.split(';') {
                        let mut words = part.split_whitespace().rev();
                        let (Some(kind), Some(n)) = (words.next(), words.next()) else {
                            continue;
                        };
                        let n: u64 = n.parse().unwrap_or(0);
                        match kind {
                            "passed" => self.passed += n,
                            "failed" => self.failed += n,
                            "ignored" => self.ignored += n,
                            _ => {}
                        }
                    }
                }
            }
        }
        let status = child.wait().map_err(|e| e.to_string())?;
        if status.success() {
            Ok(())
        } else {
            println!(
                "tests: {} passed, {} failed, {} skipped",
                self.passed,
                self.failed.max(1),
                self.ignored
            );
            Err(format!("`{}` failed ({status})", describe(cmd)))
        }
    }
}

fn bench() -> Result<()> {
    let envoy = tools::envoy(&root())?;
    let wasm = build_wasm()?;
    let kakeya = build_kakeya("release")?;
    run(cargo()
        .args([
            "run",
            "--release",
            "-p",
            "kakeya-wasm-tests",
            "--bin",
            "kakeya-bench",
            "--",
        ])
        .arg(root().join("docs/BENCHMARKS.md"))
        .env("KAKEYA_GATE_WASM", &wasm)
        .env("KAKEYA_ENVOY_BIN", &envoy)
        .env("KAKEYA_BIN", &kakeya))
}

/// Child processes that are killed when dropped.
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
fn wait_http_ok(addr: &str, path: &str, timeout: Duration, children: &mut Children) -> Result<()> {
    use std::io::{Read, Write};
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(mut s) = std::net::TcpStream::connect(addr) {
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
        if let Some(name) = children.exited() {
            return Err(format!("{name} exited during start-up; see its log above"));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "http://{addr}{path} did not become ready within {timeout:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
