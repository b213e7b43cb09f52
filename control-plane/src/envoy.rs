//! Renders the Envoy bootstrap (`envoy/gateway.yaml.tmpl`) from the control plane's config.
//!
//! Why render instead of shipping a static file: the gate's plugin configuration (keyring and
//! tolerances) and the per-tenant rate-limit buckets must match what the control plane was
//! started with, and the addresses must be overridable so tests can run on free ports.
//! Rendering is plain `{{placeholder}}` substitution; every inserted value is either a number
//! or a JSON string literal (valid YAML), so no value can break the document's structure.
//!
//! Secrets: the gate's keyring (HMAC keys) is not in the YAML. The plugin configuration names
//! the environment variable [`KEYRING_ENV`] instead, and Envoy hands that variable of its own
//! process environment to the VM (`vm_config.environment_variables.host_env_keys`, whose values
//! `/config_dump` does not show). [`envoy_env`] is what Envoy's environment must hold;
//! [`render_to_file`] also writes it as `<out>.env` and [`envoy_command`] starts Envoy with it.
//! Every file written here is mode 0600.

use crate::config::Config;
use anyhow::{bail, Context};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The environment variable of the Envoy process that carries the gate's keyring as JSON.
pub const KEYRING_ENV: &str = "KAKEYA_GATE_KEYRING";

/// The environment variable of the Envoy process that carries the ingest shared secret, when
/// one is configured. The submit route adds it to every forwarded request as
/// [`crate::api::auth::H_INGEST_SECRET`] with Envoy's `%ENVIRONMENT(…)%` formatter, so the
/// secret is neither in the YAML nor in `/config_dump`. Route-level headers are added by the
/// router after the gate has run, overwriting any client copy.
pub const INGEST_SECRET_ENV: &str = "KAKEYA_INGEST_SECRET";

/// The submit route's `request_headers_to_add` when an ingest secret is configured.
fn ingest_secret_headers(cfg: &Config) -> anyhow::Result<String> {
    if cfg.load_ingest_secret()?.is_none() {
        return Ok(String::new());
    }
    let pad = " ".repeat(26);
    Ok(format!(
        "{pad}request_headers_to_add:\n\
         {pad}  - append_action: OVERWRITE_IF_EXISTS_OR_ADD\n\
         {pad}    header: {{ key: {}, value: \"%ENVIRONMENT({INGEST_SECRET_ENV})%\" }}",
        crate::api::auth::H_INGEST_SECRET
    ))
}

/// The template, embedded so the binary can render without the source tree.
pub const TEMPLATE: &str = include_str!("../../envoy/gateway.yaml.tmpl");

/// What [`render`] needs beyond [`Config`].
#[derive(Debug, Clone)]
pub struct RenderOptions {
    pub wasm_path: PathBuf,
    pub gateway_addr: SocketAddr,
    pub ingest_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub envoy_admin_addr: SocketAddr,
    /// Add a wildcard descriptor (`value: ""`, Envoy ≥ 1.34 dynamic descriptors, LRU of
    /// `max_dynamic_descriptors`) so *any* `x-tenant-id` value gets its own bucket. Off by
    /// default: the header is unauthenticated at the limiter, so in single-tenant mode a
    /// client could rotate it to escape the global bucket, and in multi-tenant mode unknown
    /// tenants are refused by the gate anyway, so explicit per-tenant buckets suffice.
    pub dynamic_tenant_buckets: bool,
    /// Leave the gate filter out: the same route without the filter, a benchmark baseline
    /// only (nothing is verified).
    pub without_gate: bool,
}

impl RenderOptions {
    /// Addresses from the configuration.
    pub fn from_config(cfg: &Config, wasm_path: impl Into<PathBuf>) -> Self {
        RenderOptions {
            wasm_path: wasm_path.into(),
            gateway_addr: cfg.gateway_addr,
            ingest_addr: cfg.ingest_addr,
            admin_addr: cfg.admin_addr,
            envoy_admin_addr: cfg.envoy_admin_addr,
            dynamic_tenant_buckets: false,
            without_gate: false,
        }
    }
}

fn json_str(s: &str) -> anyhow::Result<String> {
    Ok(serde_json::to_string(s)?)
}

/// Tenants that get their own token bucket: every configured tenant in multi-tenant mode
/// (only `default` when none is configured); none in single-tenant mode, where the reference
/// has one global bucket and `x-tenant-id` is ignored.
pub fn bucket_tenants(cfg: &Config) -> Vec<String> {
    let k = &cfg.keyring;
    if !k.multi_tenant {
        return Vec::new();
    }
    if k.tenants.is_empty() {
        return vec![kakeya_core::signature::DEFAULT_TENANT.to_string()];
    }
    k.tenants.keys().cloned().collect()
}

fn descriptors(cfg: &Config, opts: &RenderOptions) -> anyhow::Result<String> {
    let tenants = bucket_tenants(cfg);
    if tenants.is_empty() && !opts.dynamic_tenant_buckets {
        return Ok(String::new());
    }
    let pad = " ".repeat(30);
    let bucket = format!(
        "token_bucket: {{ max_tokens: {}, tokens_per_fill: {}, fill_interval: 1s }}",
        u64::from(cfg.token_rate) * 2,
        cfg.token_rate
    );
    let mut out = String::new();
    if opts.dynamic_tenant_buckets {
        writeln!(out, "{pad}max_dynamic_descriptors: 1000")?;
    }
    writeln!(out, "{pad}descriptors:")?;
    for t in &tenants {
        writeln!(
            out,
            "{pad}  - entries: [ {{ key: tenant, value: {} }} ]",
            json_str(t)?
        )?;
        writeln!(out, "{pad}    {bucket}")?;
    }
    if opts.dynamic_tenant_buckets {
        writeln!(out, "{pad}  - entries: [ {{ key: tenant, value: \"\" }} ]")?;
        writeln!(out, "{pad}    {bucket}")?;
    }
    // The template line holds the placeholder alone; drop our final newline.
    out.pop();
    Ok(out)
}

/// The chat-completions route (LLM-gateway mode): weighted clusters, so a canary backend is
/// one more entry; empty without `[[llm_backend]]`.
fn chat_routes(cfg: &Config) -> anyhow::Result<String> {
    let Some(g) = &cfg.gateway else {
        return Ok(String::new());
    };
    let pad = " ".repeat(24);
    let mut out = String::new();
    writeln!(out, "{pad}- name: chat_completions")?;
    writeln!(out, "{pad}  match: {{ path: {} }}", json_str(&g.chat.path)?)?;
    writeln!(out, "{pad}  route:")?;
    writeln!(out, "{pad}    weighted_clusters:")?;
    writeln!(out, "{pad}      clusters:")?;
    for b in &g.backends {
        writeln!(
            out,
            "{pad}        - {{ name: {}, weight: {} }}",
            json_str(&b.cluster())?,
            b.weight
        )?;
    }
    // A completion may take long and a stream may pause between tokens: the route's own
    // timeouts replace the listener's 15 s stream idle timeout.
    writeln!(out, "{pad}    timeout: {}s", g.timeout_secs)?;
    writeln!(out, "{pad}    idle_timeout: {}s", g.timeout_secs)?;
    writeln!(out, "{pad}    auto_host_rewrite: true")?;
    writeln!(out, "{pad}    retry_policy:")?;
    writeln!(
        out,
        "{pad}      retry_on: \"connect-failure,refused-stream,reset-before-request\""
    )?;
    write!(out, "{pad}      num_retries: 2")?;
    Ok(out)
}

/// One STATIC (an IP) or STRICT_DNS (a host name) cluster `name` at `addr`, TLS if asked.
fn write_cluster(out: &mut String, name: &str, addr: &str, tls: bool) -> anyhow::Result<()> {
    let pad = " ".repeat(4);
    let (host, port) = crate::gateway_config::host_port(addr).map_err(anyhow::Error::msg)?;
    let kind = if host.parse::<std::net::IpAddr>().is_ok() {
        "STATIC"
    } else {
        "STRICT_DNS"
    };
    let name = json_str(name)?;
    writeln!(out, "{pad}- name: {name}")?;
    writeln!(out, "{pad}  type: {kind}")?;
    writeln!(out, "{pad}  connect_timeout: 2s")?;
    writeln!(out, "{pad}  per_connection_buffer_limit_bytes: 1200000")?;
    writeln!(out, "{pad}  load_assignment:")?;
    writeln!(out, "{pad}    cluster_name: {name}")?;
    writeln!(out, "{pad}    endpoints:")?;
    writeln!(out, "{pad}      - lb_endpoints:")?;
    writeln!(out, "{pad}          - endpoint:")?;
    writeln!(out, "{pad}              address:")?;
    writeln!(
        out,
        "{pad}                socket_address: {{ address: {}, port_value: {port} }}",
        json_str(host)?
    )?;
    if tls {
        writeln!(out, "{pad}  transport_socket:")?;
        writeln!(out, "{pad}    name: envoy.transport_sockets.tls")?;
        writeln!(out, "{pad}    typed_config:")?;
        writeln!(out, "{pad}      \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext")?;
        writeln!(out, "{pad}      sni: {}", json_str(host)?)?;
    }
    Ok(())
}

/// One cluster per LLM backend, then the two clusters of every upstream route
/// (`kakeya_up_<name>_stable|canary`).
fn llm_clusters(cfg: &Config) -> anyhow::Result<String> {
    let mut out = String::new();
    for b in cfg.gateway.iter().flat_map(|g| &g.backends) {
        write_cluster(&mut out, &b.cluster(), &b.addr, b.tls)?;
    }
    for u in &cfg.upstreams {
        write_cluster(&mut out, &u.cluster("stable"), &u.stable, false)?;
        write_cluster(&mut out, &u.cluster("canary"), &u.canary, false)?;
    }
    out.pop();
    Ok(out)
}

/// Two routes per upstream route, in configuration order: its prefix with
/// `x-kakeya-upstream: canary` (set only by the gate, which removes a client's copy and
/// clears the route cache) to the canary cluster, otherwise to the stable one.
fn upstream_routes(cfg: &Config) -> anyhow::Result<String> {
    let pad = " ".repeat(24);
    let mut out = String::new();
    for u in &cfg.upstreams {
        let prefix = json_str(&u.prefix)?;
        for side in ["canary", "stable"] {
            writeln!(
                out,
                "{pad}- name: {}",
                json_str(&format!("up_{}_{side}", u.name))?
            )?;
            writeln!(out, "{pad}  match:")?;
            writeln!(out, "{pad}    prefix: {prefix}")?;
            if side == "canary" {
                writeln!(out, "{pad}    headers:")?;
                writeln!(
                    out,
                    "{pad}      - {{ name: {}, string_match: {{ exact: canary }} }}",
                    kakeya_core::upstream::H_UPSTREAM
                )?;
            }
            writeln!(
                out,
                "{pad}  route: {{ cluster: {}, timeout: 30s }}",
                json_str(&u.cluster(side))?
            )?;
        }
    }
    out.pop();
    Ok(out)
}

/// Renders the bootstrap YAML.
pub fn render(cfg: &Config, opts: &RenderOptions) -> anyhow::Result<String> {
    cfg.validate()
        .context("refusing to render an invalid configuration")?;
    let mut gate_config = cfg.gate_config();
    // The keyring travels in Envoy's environment (see the module docs), never in the YAML.
    gate_config.keyring = Default::default();
    gate_config.keyring_env = Some(KEYRING_ENV.into());
    // The chat route records its decisions by a callout, which bypasses the submit route's
    // headers: the filter reads the ingest secret from the same environment instead.
    let ingest_secret = cfg.load_ingest_secret()?.is_some();
    let mut vm_env = json_str(KEYRING_ENV)?;
    if ingest_secret {
        if let Some(chat) = gate_config.chat.as_mut() {
            chat.ingest_secret_env = Some(INGEST_SECRET_ENV.into());
        }
        vm_env.push_str(", ");
        vm_env.push_str(&json_str(INGEST_SECRET_ENV)?);
    }
    let gate_json = serde_json::to_string(&gate_config)?;
    let wasm = opts.wasm_path.to_str().context("wasm path must be UTF-8")?;
    let desc = descriptors(cfg, opts)?;
    let host = |a: &SocketAddr| json_str(&a.ip().to_string());
    let vars: Vec<(&str, String)> = vec![
        ("envoy_admin_host", host(&opts.envoy_admin_addr)?),
        ("envoy_admin_port", opts.envoy_admin_addr.port().to_string()),
        ("gateway_host", host(&opts.gateway_addr)?),
        ("gateway_port", opts.gateway_addr.port().to_string()),
        ("ingest_host", host(&opts.ingest_addr)?),
        ("ingest_port", opts.ingest_addr.port().to_string()),
        ("ingest_addr", opts.ingest_addr.to_string()),
        ("admin_host", host(&opts.admin_addr)?),
        ("admin_port", opts.admin_addr.port().to_string()),
        ("token_rate", cfg.token_rate.to_string()),
        ("burst", (u64::from(cfg.token_rate) * 2).to_string()),
        ("wasm_path", json_str(wasm)?),
        ("gate_config_json", json_str(&gate_json)?),
        ("keyring_env", vm_env),
        ("tenant_descriptors", desc),
        ("ingest_secret_headers", ingest_secret_headers(cfg)?),
        // microvote: the cluster kakeya_microvote points at `kakeya microvote serve`.
        ("microvote_host", host(&cfg.microvote.addr)?),
        ("microvote_port", cfg.microvote.addr.port().to_string()),
        // gateway: the chat route and its LLM backend clusters (empty when not configured).
        ("chat_routes", chat_routes(cfg)?),
        ("llm_clusters", llm_clusters(cfg)?),
        // canary: the upstream routes (empty when no [[upstream]] is configured).
        ("upstream_routes", upstream_routes(cfg)?),
    ];
    let mut out = if opts.without_gate {
        without_gate(TEMPLATE)
    } else {
        TEMPLATE.to_string()
    };
    for (k, v) in &vars {
        out = out.replace(&format!("{{{{{k}}}}}"), v);
    }
    if let Some(pos) = out.find("{{") {
        let end = out[pos..].find("}}").map_or(out.len(), |e| pos + e + 2);
        bail!("template placeholder {} has no value", &out[pos..end]);
    }
    // A line holding only the (empty) descriptor placeholder leaves a blank line: harmless.
    Ok(out)
}

/// The template minus the lines between the `# >>> gate` and `# <<< gate` markers.
fn without_gate(template: &str) -> String {
    let mut inside = false;
    let mut out = String::with_capacity(template.len());
    for line in template.lines() {
        let marker = line.trim();
        if marker == "# >>> gate" {
            inside = true;
        } else if marker == "# <<< gate" {
            inside = false;
        } else if !inside {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// What Envoy's process environment must hold for the rendered bootstrap: the gate keyring and,
/// when configured, the ingest secret.
pub fn envoy_env(cfg: &Config) -> anyhow::Result<Vec<(String, String)>> {
    let mut env = vec![(
        KEYRING_ENV.to_string(),
        serde_json::to_string(&cfg.keyring)?,
    )];
    if let Some(secret) = cfg.load_ingest_secret()? {
        env.push((INGEST_SECRET_ENV.to_string(), secret));
    }
    Ok(env)
}

/// Path of the environment file [`render_to_file`] writes next to `out`.
pub fn env_file_path(out: &Path) -> PathBuf {
    let env = out.with_extension("env");
    if env == out {
        // `--out x.env`: never let the environment file replace the bootstrap.
        out.with_extension("env.env")
    } else {
        env
    }
}

/// Renders and writes `out` and, next to it, [`env_file_path`]: `NAME=value` lines (the value
/// verbatim to the end of the line, the format of `docker run --env-file`) with [`envoy_env`].
/// Both are mode 0600 and replaced atomically (temp file + rename, so Envoy never reads half a
/// file). Returns the environment file's path.
pub fn render_to_file(cfg: &Config, opts: &RenderOptions, out: &Path) -> anyhow::Result<PathBuf> {
    let yaml = render(cfg, opts)?;
    crate::private_file::replace(out, yaml.as_bytes())?;
    let mut env = String::new();
    for (k, v) in envoy_env(cfg)? {
        // serde_json escapes control characters, so a value is one line.
        writeln!(env, "{k}={v}")?;
    }
    let env_path = env_file_path(out);
    crate::private_file::replace(&env_path, env.as_bytes())?;
    Ok(env_path)
}

/// The command that starts `envoy_bin` on the rendered bootstrap `yaml` with [`envoy_env`] in
/// its environment (`extra_args` go before `-c`).
pub fn envoy_command(
    cfg: &Config,
    envoy_bin: &Path,
    yaml: &Path,
    extra_args: &[String],
) -> anyhow::Result<Command> {
    let mut cmd = Command::new(envoy_bin);
    cmd.args(extra_args)
        .arg("-c")
        .arg(yaml)
        .envs(envoy_env(cfg)?);
    Ok(cmd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EnvMap;

    fn env(pairs: &[(&str, &str)]) -> EnvMap {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn renders_all_placeholders_and_embeds_gate_config() {
        let cfg = Config::from_env_map(&env(&[
            ("PCS_SIGN_ALG", "hmac"),
            ("PCS_HMAC_KEY", "global-s3cret\"\n"),
            ("MULTI_TENANT", "true"),
            ("TENANTS", "acme:hmac:acme-s3cret,beta:none:"),
            ("TOKEN_RATE", "7"),
        ]))
        .unwrap();
        let yaml = render(&cfg, &RenderOptions::from_config(&cfg, "/x/gate.wasm")).unwrap();
        assert!(!yaml.contains("{{"));
        assert!(yaml.contains("filename: \"/x/gate.wasm\""));
        assert!(yaml.contains("max_tokens: 14, tokens_per_fill: 7"));
        // microvote: its cluster points at the configured server (default 127.0.0.1:8091).
        let mv = yaml.split("- name: kakeya_microvote").nth(1).unwrap();
        assert!(
            mv.contains("address: \"127.0.0.1\", port_value: 8091"),
            "{mv}"
        );
        assert!(yaml.contains("value: \"acme\"") && yaml.contains("value: \"beta\""));
        assert!(!yaml.contains("max_dynamic_descriptors"));
        // No secret in the bootstrap: the keyring is named, and Envoy passes the variable on.
        assert!(!yaml.contains("s3cret"), "{yaml}");
        assert!(yaml.contains("host_env_keys: [\"KAKEYA_GATE_KEYRING\"]"));
        // the embedded configuration is a JSON string whose content is the GateConfig JSON
        let line = yaml
            .lines()
            .find(|l| l.trim_start().starts_with("value: \"{"))
            .unwrap();
        let lit = line.trim_start().trim_start_matches("value: ");
        let inner: String = serde_json::from_str(lit).unwrap();
        let gc: kakeya_core::GateConfig = serde_json::from_str(&inner).unwrap();
        assert_eq!(gc.keyring_env.as_deref(), Some(KEYRING_ENV));
        assert_eq!(gc.keyring, Default::default());
        assert_eq!(
            (gc.verify, gc.bundle),
            (cfg.verify, cfg.gate_config().bundle)
        );
        // With Envoy's environment, the filter's parse gives the configured keyring back.
        let vars = envoy_env(&cfg).unwrap();
        let lookup = |n: &str| vars.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        let gate = kakeya_core::Gate::from_json_with_env(inner.as_bytes(), &lookup).unwrap();
        assert!(gate.keyring.multi_tenant() && gate.keyring.verifier_for("acme").is_ok());
        let keyring: kakeya_core::signature::KeyringConfig =
            serde_json::from_str(&lookup(KEYRING_ENV).unwrap()).unwrap();
        assert_eq!(keyring, cfg.keyring);
    }

    #[test]
    fn the_chat_route_and_its_backends_render_only_when_configured() {
        let plain = Config::from_env_map(&env(&[])).unwrap();
        let yaml = render(&plain, &RenderOptions::from_config(&plain, "/x.wasm")).unwrap();
        assert!(
            !yaml.contains("- name: chat_completions") && !yaml.contains("name: \"kakeya_llm_")
        );
        let mut cfg = Config::from_env_map(&env(&[
            ("KAKEYA_LLM_BACKEND", "127.0.0.1:9000"),
            ("KAKEYA_GATEWAY_TASK", "qa"),
        ]))
        .unwrap();
        if let Some(g) = &mut cfg.gateway {
            g.backends.push(crate::gateway_config::LlmBackend {
                name: "canary".into(),
                addr: "llm.example.com:443".into(),
                weight: 5,
                tls: true,
            });
        }
        let yaml = render(&cfg, &RenderOptions::from_config(&cfg, "/x.wasm")).unwrap();
        let route = yaml.split("- name: chat_completions").nth(1).unwrap();
        assert!(
            route.contains("match: { path: \"/v1/chat/completions\" }"),
            "{route}"
        );
        assert!(route.contains("- { name: \"kakeya_llm_default\", weight: 100 }"));
        assert!(route.contains("- { name: \"kakeya_llm_canary\", weight: 5 }"));
        let canary = yaml.split("- name: \"kakeya_llm_canary\"").nth(1).unwrap();
        assert!(canary.contains("type: STRICT_DNS") && canary.contains("sni: \"llm.example.com\""));
        let stable = yaml.split("- name: \"kakeya_llm_default\"").nth(1).unwrap();
        assert!(stable.contains("type: STATIC"));
        assert!(stable.contains("address: \"127.0.0.1\", port_value: 9000"));
        // The gate gets the route's settings.
        let chat = cfg.gate_config().chat.unwrap();
        assert_eq!(chat.task, Some(kakeya_core::task::TaskKind::Qa));
        assert_eq!(chat.record_cluster, "kakeya_ingest");
    }

    #[test]
    fn upstream_routes_render_two_clusters_and_a_header_matched_canary_route() {
        let plain = Config::from_env_map(&env(&[])).unwrap();
        let yaml = render(&plain, &RenderOptions::from_config(&plain, "/x.wasm")).unwrap();
        assert!(!yaml.contains("name: \"kakeya_up_") && !yaml.contains("up_agent"));
        let cfg = Config::from_env_map(&env(&[(
            "KAKEYA_UPSTREAMS",
            "agent,/agent/,127.0.0.1:9001,agent-canary.internal:9002",
        )]))
        .unwrap();
        let yaml = render(&cfg, &RenderOptions::from_config(&cfg, "/x.wasm")).unwrap();
        let canary = yaml.split("- name: \"up_agent_canary\"").nth(1).unwrap();
        let canary = canary.split("- name:").next().unwrap();
        assert!(canary.contains("prefix: \"/agent/\""), "{canary}");
        assert!(canary.contains("- { name: x-kakeya-upstream, string_match: { exact: canary } }"));
        assert!(canary.contains("cluster: \"kakeya_up_agent_canary\""));
        let stable = yaml.split("- name: \"up_agent_stable\"").nth(1).unwrap();
        let stable = stable.split("- name:").next().unwrap();
        assert!(!stable.contains("headers:") && stable.contains("\"kakeya_up_agent_stable\""));
        // Both before the catch-all 404.
        let pos = |s: &str| yaml.find(s).unwrap();
        assert!(pos("up_agent_stable") < pos("- name: not_found"));
        let c = yaml
            .split("- name: \"kakeya_up_agent_canary\"")
            .nth(1)
            .unwrap();
        assert!(c.contains("type: STRICT_DNS") && c.contains("port_value: 9002"));
        let st = yaml
            .split("- name: \"kakeya_up_agent_stable\"")
            .nth(1)
            .unwrap();
        assert!(st.contains("type: STATIC"));
        // The gate knows the route; the canary reads this Envoy's admin by default.
        assert_eq!(cfg.gate_config().upstreams[0].prefix, "/agent/");
        assert_eq!(cfg.canary.envoy_admins, vec![cfg.envoy_admin_addr]);
        assert_eq!(cfg.canary.upstreams, vec!["agent".to_string()]);
    }

    #[test]
    fn files_holding_the_keyring_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let cfg = Config::from_env_map(&env(&[
            ("PCS_SIGN_ALG", "hmac"),
            ("PCS_HMAC_KEY", "line1\nline2-s3cret"),
        ]))
        .unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("envoy.yaml");
        // An existing world-readable file is replaced by a private one.
        std::fs::write(&out, "old").unwrap();
        let env_path =
            render_to_file(&cfg, &RenderOptions::from_config(&cfg, "/g.wasm"), &out).unwrap();
        assert_eq!(env_path, tmp.path().join("envoy.env"));
        for p in [&out, &env_path] {
            let mode = std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", p.display());
        }
        assert!(!std::fs::read_to_string(&out).unwrap().contains("s3cret"));
        let env_file = std::fs::read_to_string(&env_path).unwrap();
        let lines: Vec<&str> = env_file.lines().collect();
        assert_eq!(lines.len(), 1, "one NAME=value line: {env_file}");
        let (name, value) = lines[0].split_once('=').unwrap();
        assert_eq!(name, KEYRING_ENV);
        let k: kakeya_core::signature::KeyringConfig = serde_json::from_str(value).unwrap();
        assert_eq!(k.global.keys, vec!["line1\nline2-s3cret".to_string()]);
        let cmd = envoy_command(&cfg, Path::new("/bin/envoy"), &out, &["--x".into()]).unwrap();
        assert!(cmd.get_envs().any(|(k, v)| k == KEYRING_ENV && v.is_some()));
        let args: Vec<_> = cmd.get_args().collect();
        assert_eq!(args, ["--x", "-c", out.to_str().unwrap()]);
    }

    #[test]
    fn bundle_source_with_this_control_planes_key() {
        let tmp = tempfile::tempdir().unwrap();
        let mut cfg =
            Config::from_env_map(&env(&[("KAKEYA_DATA_DIR", tmp.path().to_str().unwrap())]))
                .unwrap();
        // Only `kakeya serve` creates the key; rendering reads it.
        assert!(cfg.load_bundle_key().is_err());
        crate::registry::keys::load_or_create_seed(&cfg.bundle_signing_seed_file).unwrap();
        let seed = cfg.load_bundle_key().unwrap();
        let yaml = render(&cfg, &RenderOptions::from_config(&cfg, "/g.wasm")).unwrap();
        let line = yaml
            .lines()
            .find(|l| l.trim_start().starts_with("value: \"{"))
            .unwrap();
        let inner: String =
            serde_json::from_str(line.trim_start().trim_start_matches("value: ")).unwrap();
        let vars = envoy_env(&cfg).unwrap();
        let gate =
            kakeya_core::Gate::from_json_with_env(inner.as_bytes(), &|_| Some(vars[0].1.clone()))
                .unwrap();
        let b = gate.bundle.unwrap();
        assert_eq!(
            b.public_keys,
            vec![crate::registry::keys::public_key_b64(&seed)]
        );
        assert_eq!(
            (b.cluster.as_str(), b.poll_interval_ms),
            ("kakeya_admin", 2000)
        );
        assert_eq!(b.authority, "kakeya-control-plane");
    }

    #[test]
    fn single_tenant_has_only_the_global_bucket_unless_dynamic() {
        let cfg = Config::from_env_map(&EnvMap::new()).unwrap();
        let mut opts = RenderOptions::from_config(&cfg, "/g.wasm");
        let yaml = render(&cfg, &opts).unwrap();
        assert!(!yaml.contains("descriptors:"));
        opts.dynamic_tenant_buckets = true;
        let yaml = render(&cfg, &opts).unwrap();
        assert!(yaml.contains("max_dynamic_descriptors: 1000") && yaml.contains("value: \"\""));
    }
}
