//! Renders the Envoy bootstrap (`envoy/gateway.yaml.tmpl`) from the control plane's config.
//!
//! Why render instead of shipping a static file: the gate's plugin configuration (keyring and
//! tolerances) and the per-tenant rate-limit buckets must match what the control plane was
//! started with, and the addresses must be overridable so tests can run on free ports.
//! Rendering is plain `{{placeholder}}` substitution; every inserted value is either a number
//! or a JSON string literal (valid YAML), so no value can break the document's structure.

use crate::config::Config;
use anyhow::{bail, Context};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

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

/// Renders the bootstrap YAML.
pub fn render(cfg: &Config, opts: &RenderOptions) -> anyhow::Result<String> {
    cfg.validate()
        .context("refusing to render an invalid configuration")?;
    let gate_json = serde_json::to_string(&cfg.gate_config())?;
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
        ("tenant_descriptors", desc),
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

/// Renders and writes `out` (temp file + rename, so Envoy never reads half a file).
pub fn render_to_file(cfg: &Config, opts: &RenderOptions, out: &Path) -> anyhow::Result<()> {
    let yaml = render(cfg, opts)?;
    let tmp = out.with_extension("yaml.tmp");
    std::fs::write(&tmp, yaml).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, out).with_context(|| format!("cannot rename to {}", out.display()))?;
    Ok(())
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
            ("PCS_HMAC_KEY", "k\"ey\n"),
            ("MULTI_TENANT", "true"),
            ("TENANTS", "acme:hmac:a1,beta:none:"),
            ("TOKEN_RATE", "7"),
        ]))
        .unwrap();
        let yaml = render(&cfg, &RenderOptions::from_config(&cfg, "/x/gate.wasm")).unwrap();
        assert!(!yaml.contains("{{"));
        assert!(yaml.contains("filename: \"/x/gate.wasm\""));
        assert!(yaml.contains("max_tokens: 14, tokens_per_fill: 7"));
        assert!(yaml.contains("value: \"acme\"") && yaml.contains("value: \"beta\""));
        assert!(!yaml.contains("max_dynamic_descriptors"));
        // the embedded configuration is a JSON string whose content is the GateConfig JSON
        let line = yaml
            .lines()
            .find(|l| l.trim_start().starts_with("value: \"{"))
            .unwrap();
        let lit = line.trim_start().trim_start_matches("value: ");
        let inner: String = serde_json::from_str(lit).unwrap();
        let gc: kakeya_core::GateConfig = serde_json::from_str(&inner).unwrap();
        assert_eq!(gc, cfg.gate_config());
        kakeya_core::Gate::from_json(inner.as_bytes()).unwrap();
    }

    #[test]
    fn bundle_source_with_this_control_planes_key() {
        let tmp = tempfile::tempdir().unwrap();
        let mut cfg =
            Config::from_env_map(&env(&[("KAKEYA_DATA_DIR", tmp.path().to_str().unwrap())]))
                .unwrap();
        let seed = cfg.load_bundle_key().unwrap();
        assert!(tmp.path().join("keys/bundle-signing.seed").exists());
        let yaml = render(&cfg, &RenderOptions::from_config(&cfg, "/g.wasm")).unwrap();
        let line = yaml
            .lines()
            .find(|l| l.trim_start().starts_with("value: \"{"))
            .unwrap();
        let inner: String =
            serde_json::from_str(line.trim_start().trim_start_matches("value: ")).unwrap();
        let gate = kakeya_core::Gate::from_json(inner.as_bytes()).unwrap();
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
