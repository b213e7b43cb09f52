//! A real Kakeya Edge stack for end-to-end tests and benchmarks: the `kakeya` control plane and
//! Envoy 1.40 with the built gate filter, each on free loopback ports, in a temporary data dir.
//!
//! Binaries come from the environment that `cargo xtask test` sets: `KAKEYA_BIN`,
//! `KAKEYA_ENVOY_BIN`, `KAKEYA_GATE_WASM`.

use anyhow::{bail, Context, Result};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Envoy's own arguments in every stack: a free shared-memory base id, warnings only, two
/// workers.
const ENVOY_ARGS: [&str; 5] = [
    "--use-dynamic-base-id",
    "--log-level",
    "warn",
    "--concurrency",
    "2",
];

/// Paths of the three artefacts a stack runs.
#[derive(Debug, Clone)]
pub struct Artefacts {
    pub kakeya: PathBuf,
    pub envoy: PathBuf,
    pub wasm: PathBuf,
}

impl Artefacts {
    /// From `KAKEYA_BIN`, `KAKEYA_ENVOY_BIN` and `KAKEYA_GATE_WASM`, with a message that says how
    /// to get them when one is missing.
    pub fn from_env() -> Result<Self> {
        let get = |var: &str| -> Result<PathBuf> {
            let p = std::env::var_os(var).map(PathBuf::from).with_context(|| {
                format!("{var} is not set: run the end-to-end tests through `cargo xtask test`")
            })?;
            if !p.exists() {
                bail!(
                    "{var}={} does not exist: run `cargo xtask test`",
                    p.display()
                );
            }
            Ok(p)
        };
        Ok(Artefacts {
            kakeya: get("KAKEYA_BIN")?,
            envoy: get("KAKEYA_ENVOY_BIN")?,
            wasm: get("KAKEYA_GATE_WASM")?,
        })
    }
}

/// A free TCP port on 127.0.0.1, below the kernel's ephemeral range (32768–60999 by default).
/// A port from `bind(0)` lies in that range: between this check and the moment the process
/// that should listen there binds it, any outgoing connection (a test client, Envoy's upstream
/// connections) may take it as its local port ("address already in use"). Ports down here are
/// only ever taken by listeners. Falls back to `bind(0)` if none is free.
pub fn free_addr() -> Result<SocketAddr> {
    use std::hash::{BuildHasher, Hasher};
    const LOW: u16 = 20_000;
    const SPAN: u64 = 12_768;
    for _ in 0..200 {
        // std's RandomState is randomly seeded per instance: a cheap source of random ports.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        let port = LOW + (h.finish() % SPAN) as u16;
        if let Ok(l) = TcpListener::bind(("127.0.0.1", port)) {
            return Ok(l.local_addr()?);
        }
    }
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// What to run.
#[derive(Debug, Clone, Default)]
pub struct StackOptions {
    /// Extra environment for `kakeya` (e.g. `PCS_SIGN_ALG`, `PCS_HMAC_KEY`, `TENANTS`, `DATABASE_URL`).
    pub env: Vec<(String, String)>,
    /// Render Envoy without the gate filter (benchmark baseline).
    pub without_gate: bool,
    /// Point Envoy's ingest cluster at this address instead of the control plane's.
    pub ingest_override: Option<SocketAddr>,
    /// Point Envoy's admin cluster (the gate's bundle polls, `/health`) at this address
    /// instead of the control plane's, e.g. one where nothing listens: the gate never gets a
    /// bundle.
    pub admin_override: Option<SocketAddr>,
    /// Start only the control plane (e.g. for the filter-floor benchmark's own Envoy).
    pub without_envoy: bool,
    /// Extra STATIC clusters (name, address) added to the rendered bootstrap, e.g. the gate's
    /// `kakeya_microvote` pointed at a closed port ([`crate::ensemble::with_cluster`]).
    pub extra_clusters: Vec<(String, SocketAddr)>,
    /// The (first) Envoy's admin address, when the test must know it before the control
    /// plane starts (e.g. to list every Envoy in `KAKEYA_CANARY_ENVOY_ADMINS`).
    pub envoy_admin: Option<SocketAddr>,
}

impl StackOptions {
    /// HMAC signing with the fixtures' key, no rate limit in the way, and the gate polling the
    /// bundle every `poll_ms`: the stack the scoring end-to-end tests run.
    pub fn scoring(poll_ms: u64) -> Self {
        StackOptions {
            env: vec![
                ("PCS_SIGN_ALG".into(), "hmac".into()),
                ("PCS_HMAC_KEY".into(), crate::fixtures::KEY.into()),
                ("TOKEN_RATE".into(), "100000".into()),
                ("KAKEYA_BUNDLE_POLL_MS".into(), poll_ms.to_string()),
            ],
            ..Default::default()
        }
    }
}

/// A running control plane + Envoy. Both are killed on drop.
pub struct Stack {
    pub gateway: SocketAddr,
    pub admin: SocketAddr,
    pub ingest: SocketAddr,
    pub envoy_admin: SocketAddr,
    pub data_dir: tempfile::TempDir,
    /// Bearer token of the admin API, as `kakeya config admin-token` reports it (the file the
    /// control plane generated in the data dir, or `KAKEYA_ADMIN_TOKEN` from the options).
    pub admin_token: String,
    artefacts: Artefacts,
    opts: StackOptions,
    kakeya: Option<Child>,
    envoy: Option<Child>,
}

impl Stack {
    pub fn start(opts: StackOptions) -> Result<Stack> {
        let artefacts = Artefacts::from_env()?;
        let mut stack = Stack {
            gateway: free_addr()?,
            admin: free_addr()?,
            ingest: free_addr()?,
            envoy_admin: match opts.envoy_admin {
                Some(a) => a,
                None => free_addr()?,
            },
            data_dir: tempfile::tempdir()?,
            admin_token: String::new(),
            artefacts,
            opts,
            kakeya: None,
            envoy: None,
        };
        stack.start_control_plane()?;
        if !stack.opts.without_envoy {
            stack.start_envoy()?;
        }
        Ok(stack)
    }

    /// Environment shared by every `kakeya` invocation of this stack.
    fn kakeya_cmd(&self) -> Command {
        let mut c = Command::new(&self.artefacts.kakeya);
        c.env("KAKEYA_DATA_DIR", self.data_dir.path())
            .env("KAKEYA_ADMIN_ADDR", self.admin.to_string())
            .env(
                "KAKEYA_INGEST_ADDR",
                self.opts.ingest_override.unwrap_or(self.ingest).to_string(),
            )
            .env("KAKEYA_GATEWAY_ADDR", self.gateway.to_string())
            .env("KAKEYA_ENVOY_ADMIN_ADDR", self.envoy_admin.to_string())
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            );
        for (k, v) in &self.opts.env {
            c.env(k, v);
        }
        c
    }

    /// Runs `kakeya <args>` against this stack's configuration and data.
    pub fn kakeya(&self, args: &[&str]) -> Result<Output> {
        let out = self.kakeya_cmd().args(args).output()?;
        Ok(out)
    }

    pub fn start_control_plane(&mut self) -> Result<()> {
        let mut cmd = self.kakeya_cmd();
        // The real ingest listener always binds the stack's own port (an override only
        // redirects Envoy's cluster).
        cmd.env("KAKEYA_INGEST_ADDR", self.ingest.to_string())
            .arg("serve")
            .stdout(Stdio::null());
        let child = cmd.spawn().context("cannot start kakeya serve")?;
        self.kakeya = Some(child);
        wait_ready(
            self.admin,
            "/ready",
            Duration::from_secs(60),
            self.kakeya.as_mut(),
        )?;
        let out = self.kakeya(&["config", "admin-token"])?;
        if !out.status.success() {
            bail!(
                "kakeya config admin-token failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        self.admin_token = String::from_utf8(out.stdout)?.trim().to_string();
        Ok(())
    }

    /// The control plane's current bundle (`GET /v1/bundles/current`), verified with its own
    /// public key (`kakeya bundle public-key`).
    pub fn current_bundle(&self) -> Result<kakeya_core::bundle::Bundle> {
        use kakeya_core::bundle::{verify_bundle, H_SHA256, H_SIGNATURE};
        let resp = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(20))
            .build()
            .get(&self.admin_url("/v1/bundles/current"))
            .call()?;
        let header = |n: &str| resp.header(n).map(str::to_string).context(n.to_string());
        let (sha, sig) = (header(H_SHA256)?, header(H_SIGNATURE)?);
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut resp.into_reader(), &mut bytes)?;
        let out = self.kakeya(&["bundle", "public-key"])?;
        if !out.status.success() {
            bail!(
                "kakeya bundle public-key: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let key = String::from_utf8(out.stdout)?.trim().to_string();
        Ok(verify_bundle(&bytes, &sha, &sig, &[key])?)
    }

    /// `GET` on the admin listener with the admin token.
    /// POSTs a JSON `body` to the gateway's submit route, retrying the transient 503s a
    /// loaded machine may answer (as agents do); any other answer is returned.
    pub fn submit(&self, body: &[u8]) -> Result<Answer> {
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(20))
            .build();
        for _ in 0..50 {
            let a = post(
                &agent,
                &self.url(kakeya_core::SUBMIT_PATH),
                &[("content-type", "application/json")],
                body,
            )?;
            if a.status != 503 {
                return Ok(a);
            }
        }
        bail!("the gateway kept answering 503")
    }

    /// `POST path` on the admin listener with the admin token and a JSON body.
    pub fn admin_post(&self, path: &str, body: &serde_json::Value) -> Result<Answer> {
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(20))
            .build();
        answer(
            agent
                .post(&self.admin_url(path))
                .set("authorization", &format!("Bearer {}", self.admin_token))
                .set("content-type", "application/json")
                .send_string(&body.to_string()),
        )
    }

    pub fn admin_get(&self, path: &str) -> Result<Answer> {
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(20))
            .build();
        answer(
            agent
                .get(&self.admin_url(path))
                .set("authorization", &format!("Bearer {}", self.admin_token))
                .call(),
        )
    }

    /// Every decision-log row (of `tenant`, or all), newest first, following `next_cursor`.
    pub fn decisions(&self, tenant: Option<&str>) -> Result<Vec<serde_json::Value>> {
        let mut rows = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path = "/v1/decisions?limit=1000".to_string();
            if let Some(t) = tenant {
                path.push_str(&format!("&tenant={t}"));
            }
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let a = self.admin_get(&path)?;
            if a.status != 200 {
                bail!("GET {path}: {} {}", a.status, a.body);
            }
            let mut page = a.json();
            match page["decisions"].take() {
                serde_json::Value::Array(r) => rows.extend(r),
                other => bail!("GET {path}: no decisions array: {other}"),
            }
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => return Ok(rows),
            }
        }
    }

    /// `kakeya envoy run`: renders the bootstrap and execs Envoy with the gate keyring in its
    /// environment (the keyring is not in the YAML), so the child is Envoy itself.
    fn start_envoy(&mut self) -> Result<()> {
        if !self.opts.extra_clusters.is_empty() {
            return self.start_envoy_with_clusters();
        }
        let yaml = self.envoy_yaml();
        let log = std::fs::File::create(self.data_dir.path().join("envoy.log"))?;
        let mut cmd = self.kakeya_cmd();
        if let Some(admin) = self.opts.admin_override {
            cmd.env("KAKEYA_ADMIN_ADDR", admin.to_string());
        }
        cmd.args(["envoy", "run", "--wasm"])
            .arg(&self.artefacts.wasm)
            .arg("--out")
            .arg(&yaml)
            .arg("--envoy")
            .arg(&self.artefacts.envoy);
        if self.opts.without_gate {
            cmd.arg("--without-gate");
        }
        cmd.arg("--").args(ENVOY_ARGS);
        let child = cmd
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("cannot start kakeya envoy run")?;
        self.envoy = Some(child);
        wait_ready(
            self.envoy_admin,
            "/ready",
            Duration::from_secs(60),
            self.envoy.as_mut(),
        )
        .with_context(|| format!("envoy log:\n{}", self.envoy_log()))
    }

    /// A second Envoy of the same control plane (its own gateway and admin ports, the same
    /// rendered configuration otherwise): it polls the same bundle. Killed on drop.
    pub fn start_second_envoy(&self, admin: SocketAddr) -> Result<SecondEnvoy> {
        let gateway = free_addr()?;
        let yaml = self.data_dir.path().join("envoy2.yaml");
        let log_path = self.data_dir.path().join("envoy2.log");
        let log = std::fs::File::create(&log_path)?;
        let mut cmd = self.kakeya_cmd();
        cmd.env("KAKEYA_GATEWAY_ADDR", gateway.to_string())
            .env("KAKEYA_ENVOY_ADMIN_ADDR", admin.to_string())
            .args(["envoy", "run", "--wasm"])
            .arg(&self.artefacts.wasm)
            .arg("--out")
            .arg(&yaml)
            .arg("--envoy")
            .arg(&self.artefacts.envoy)
            .arg("--")
            .args(ENVOY_ARGS);
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("cannot start the second kakeya envoy run")?;
        if let Err(e) = wait_ready(admin, "/ready", Duration::from_secs(60), Some(&mut child)) {
            let _ = child.kill();
            let _ = child.wait();
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            bail!("second envoy: {e}\n{log}");
        }
        Ok(SecondEnvoy {
            gateway,
            admin,
            child,
        })
    }

    /// `kakeya envoy render`, the extra clusters added, then Envoy on it with the rendered
    /// environment file (`NAME=value` lines).
    fn start_envoy_with_clusters(&mut self) -> Result<()> {
        let yaml = self.envoy_yaml();
        let mut cmd = self.kakeya_cmd();
        if let Some(admin) = self.opts.admin_override {
            cmd.env("KAKEYA_ADMIN_ADDR", admin.to_string());
        }
        // The rendered bootstrap has the micro-vote's cluster already, pointed at
        // `[microvote] addr`: point it where the test wants instead of adding a second one.
        let mv = crate::ensemble::MICROVOTE_CLUSTER;
        for (_, addr) in self.opts.extra_clusters.iter().filter(|(n, _)| n == mv) {
            cmd.env("KAKEYA_MICROVOTE_ADDR", addr.to_string());
        }
        let out = cmd
            .args(["envoy", "render", "--wasm"])
            .arg(&self.artefacts.wasm)
            .arg("--out")
            .arg(&yaml)
            .output()?;
        if !out.status.success() {
            bail!(
                "kakeya envoy render: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let mut text = std::fs::read_to_string(&yaml)?;
        for (name, addr) in self.opts.extra_clusters.iter().filter(|(n, _)| n != mv) {
            text = crate::ensemble::with_cluster(&text, name, *addr)?;
        }
        std::fs::write(&yaml, text)?;
        let env_file = std::fs::read_to_string(self.data_dir.path().join("envoy.env"))?;
        let log = std::fs::File::create(self.data_dir.path().join("envoy.log"))?;
        let mut envoy = Command::new(&self.artefacts.envoy);
        for line in env_file.lines() {
            if let Some((k, v)) = line.split_once('=') {
                envoy.env(k, v);
            }
        }
        let child = envoy
            .args(ENVOY_ARGS)
            .arg("-c")
            .arg(&yaml)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("cannot start envoy")?;
        self.envoy = Some(child);
        wait_ready(
            self.envoy_admin,
            "/ready",
            Duration::from_secs(60),
            self.envoy.as_mut(),
        )
        .with_context(|| format!("envoy log:\n{}", self.envoy_log()))
    }

    /// The rendered Envoy bootstrap (mode 0600, `envoy.env` next to it).
    pub fn envoy_yaml(&self) -> PathBuf {
        self.data_dir.path().join("envoy.yaml")
    }

    pub fn envoy_log(&self) -> String {
        std::fs::read_to_string(self.data_dir.path().join("envoy.log")).unwrap_or_default()
    }

    /// `kill -9` of the control plane.
    pub fn kill_control_plane(&mut self) {
        if let Some(mut c) = self.kakeya.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.gateway, path)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }

    pub fn envoy_admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.envoy_admin, path)
    }

    pub fn data_path(&self) -> &Path {
        self.data_dir.path()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        for child in [self.envoy.take(), self.kakeya.take()]
            .into_iter()
            .flatten()
        {
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A second Envoy ([`Stack::start_second_envoy`]).
pub struct SecondEnvoy {
    pub gateway: SocketAddr,
    pub admin: SocketAddr,
    child: Child,
}

impl SecondEnvoy {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.gateway, path)
    }
}

impl Drop for SecondEnvoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `GET path` until 200; fails early when the process exits.
pub fn wait_ready(
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
    mut child: Option<&mut Child>,
) -> Result<()> {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(2))
        .build();
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(r) = agent.get(&format!("http://{addr}{path}")).call() {
            if r.status() == 200 {
                return Ok(());
            }
        }
        if let Some(c) = child.as_mut() {
            if let Ok(Some(status)) = c.try_wait() {
                bail!("process exited during start-up ({status})");
            }
        }
        if Instant::now() > deadline {
            bail!("http://{addr}{path} not ready within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An HTTP answer, whatever its status.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// POSTs `body` with `headers`, returning the answer for any status.
pub fn post(
    agent: &ureq::Agent,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Answer> {
    let mut req = agent.post(url);
    for (k, v) in headers {
        req = req.set(k, v);
    }
    answer(req.send_bytes(body))
}

/// Sends `method` without a body.
pub fn call(agent: &ureq::Agent, method: &str, url: &str) -> Result<Answer> {
    answer(agent.request(method, url).call())
}

fn answer(r: std::result::Result<ureq::Response, ureq::Error>) -> Result<Answer> {
    let resp = match r {
        Ok(resp) => resp,
        Err(ureq::Error::Status(_, resp)) => resp,
        Err(e) => return Err(e.into()),
    };
    let status = resp.status();
    let headers = resp
        .headers_names()
        .into_iter()
        .filter_map(|n| resp.header(&n).map(|v| (n.clone(), v.to_string())))
        .collect();
    let body = resp.into_string()?;
    Ok(Answer {
        status,
        headers,
        body,
    })
}
