//! `[gateway]` and `[[llm_backend]]` of `kakeya.toml` (LLM-gateway mode, docs/GATEWAY.md), with
//! environment overrides (`KAKEYA_LLM_BACKEND`, `KAKEYA_GATEWAY_*`, which win): the chat route's
//! settings for the gate ([`kakeya_core::chat::ChatConfig`]) and the LLM backend clusters that
//! `kakeya envoy render` writes into the bootstrap.

use crate::config::{ConfigError, EnvMap};
use kakeya_core::chat::{ChatConfig, ChatPolicy, NoContext};
use kakeya_core::task::TaskKind;
use serde::{Deserialize, Serialize};

/// `[gateway]` as written (every field optional).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayFileConfig {
    pub path: Option<String>,
    /// `qa | dialogue | summarization | rag | other`: the bundle's task model that scores.
    pub task: Option<String>,
    pub tenant_header: Option<String>,
    pub context_pointer: Option<String>,
    pub no_context: Option<NoContext>,
    pub policy: Option<ChatPolicy>,
    pub max_response_bytes: Option<usize>,
    pub refusal: Option<String>,
    /// `block` on streams: characters held back, and how often (characters) the answer is
    /// scored.
    pub stream_window: Option<usize>,
    pub stream_score_every: Option<usize>,
    /// Longest a completion may take, and longest silence within a stream (s).
    pub timeout_secs: Option<u64>,
}

/// One `[[llm_backend]]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LlmBackend {
    /// Cluster `kakeya_llm_<name>` (letters, digits, `_`).
    pub name: String,
    /// `host:port`; a host name is resolved by DNS (STRICT_DNS), an IP is used as is.
    pub addr: String,
    /// Share of the route's traffic (Envoy weighted clusters).
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// TLS to the backend, SNI = the host.
    #[serde(default)]
    pub tls: bool,
}

fn default_weight() -> u32 {
    100
}

/// The effective gateway settings; absent when no backend is configured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GatewayConfig {
    pub chat: ChatConfig,
    pub backends: Vec<LlmBackend>,
    pub timeout_secs: u64,
}

/// The default completion timeout (s).
pub const DEFAULT_TIMEOUT_SECS: u64 = 120;

impl LlmBackend {
    pub fn cluster(&self) -> String {
        format!("kakeya_llm_{}", self.name)
    }

    /// (host, port), checked.
    pub fn host_port(&self) -> Result<(&str, u16), String> {
        host_port(&self.addr)
    }

    pub fn is_ip(&self) -> bool {
        self.host_port()
            .is_ok_and(|(h, _)| h.parse::<std::net::IpAddr>().is_ok())
    }
}

/// `addr` as (host, port), checked: the host is an IP or a DNS name, the port a number (also
/// the upstream routes' backends, [`crate::canary::upstream`]).
pub fn host_port(addr: &str) -> Result<(&str, u16), String> {
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| format!("addr {addr:?} must be host:port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = port
        .parse::<u16>()
        .map_err(|_| format!("addr {addr:?}: bad port"))?;
    let ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._:".contains(&b));
    if !ok {
        return Err(format!("addr {addr:?}: bad host"));
    }
    Ok((host, port))
}

fn env<'a>(env: &'a EnvMap, k: &str) -> Option<&'a str> {
    env.get(k).map(|v| v.trim()).filter(|v| !v.is_empty())
}

fn env_usize(envm: &EnvMap, var: &'static str) -> Result<Option<usize>, ConfigError> {
    env(envm, var)
        .map(|v| {
            v.parse::<usize>()
                .map_err(|_| bad_env(var, v, "expected a number of characters"))
        })
        .transpose()
}

fn bad_env(var: &'static str, value: &str, message: &str) -> ConfigError {
    ConfigError::Env {
        var,
        value: value.to_string(),
        message: message.to_string(),
    }
}

impl GatewayConfig {
    pub fn from_parts(
        file: Option<GatewayFileConfig>,
        backends: Vec<LlmBackend>,
        envm: &EnvMap,
    ) -> Result<Option<GatewayConfig>, ConfigError> {
        let mut backends = backends;
        if let Some(addr) = env(envm, "KAKEYA_LLM_BACKEND") {
            backends = vec![LlmBackend {
                name: "default".into(),
                addr: addr.to_string(),
                weight: default_weight(),
                tls: false,
            }];
        }
        if backends.is_empty() {
            if file.is_some() {
                return Err(ConfigError::Invalid(
                    "[gateway] needs at least one [[llm_backend]] (or KAKEYA_LLM_BACKEND=host:port)"
                        .into(),
                ));
            }
            return Ok(None);
        }
        let f = file.unwrap_or_default();
        let d = ChatConfig::default();
        let task = match env(envm, "KAKEYA_GATEWAY_TASK").or(f.task.as_deref()) {
            None => None,
            Some(t) => Some(TaskKind::parse(t).ok_or_else(|| {
                bad_env(
                    "KAKEYA_GATEWAY_TASK",
                    t,
                    "expected qa, dialogue, summarization, rag or other",
                )
            })?),
        };
        let policy = match env(envm, "KAKEYA_GATEWAY_POLICY") {
            Some("annotate") => ChatPolicy::Annotate,
            Some("block") => ChatPolicy::Block,
            Some(v) => {
                return Err(bad_env(
                    "KAKEYA_GATEWAY_POLICY",
                    v,
                    "expected annotate or block",
                ))
            }
            None => f.policy.unwrap_or_default(),
        };
        let no_context = match env(envm, "KAKEYA_GATEWAY_NO_CONTEXT") {
            Some("score") => NoContext::Score,
            Some("skip") => NoContext::Skip,
            Some(v) => {
                return Err(bad_env(
                    "KAKEYA_GATEWAY_NO_CONTEXT",
                    v,
                    "expected score or skip",
                ))
            }
            None => f.no_context.unwrap_or_default(),
        };
        let chat = ChatConfig {
            path: f.path.unwrap_or(d.path),
            task,
            tenant_header: f.tenant_header.unwrap_or(d.tenant_header),
            context_pointer: env(envm, "KAKEYA_GATEWAY_CONTEXT_POINTER")
                .map(str::to_string)
                .or(f.context_pointer),
            no_context,
            policy,
            max_response_bytes: f.max_response_bytes.unwrap_or(d.max_response_bytes),
            record_cluster: d.record_cluster,
            stream_window: env_usize(envm, "KAKEYA_GATEWAY_STREAM_WINDOW")?
                .or(f.stream_window)
                .unwrap_or(d.stream_window),
            stream_score_every: env_usize(envm, "KAKEYA_GATEWAY_STREAM_SCORE_EVERY")?
                .or(f.stream_score_every)
                .unwrap_or(d.stream_score_every),
            refusal: f.refusal.unwrap_or(d.refusal),
            // Set at render, when an ingest secret is configured (envoy.rs).
            ingest_secret_env: None,
        };
        let g = GatewayConfig {
            chat,
            backends,
            timeout_secs: f.timeout_secs.unwrap_or(DEFAULT_TIMEOUT_SECS),
        };
        g.validate()?;
        Ok(Some(g))
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(format!("[gateway] {m}")));
        if let Err(e) = self.chat.validate() {
            return bad(e);
        }
        if !(1..=3600).contains(&self.timeout_secs) {
            return bad("timeout_secs must be within 1..=3600".into());
        }
        let mut names = std::collections::BTreeSet::new();
        for b in &self.backends {
            let valid_name = !b.name.is_empty()
                && b.name.len() <= 64
                && b.name
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'_');
            if !valid_name || !names.insert(b.name.as_str()) {
                return bad(format!(
                    "[[llm_backend]] name {:?} must be unique, 1-64 letters, digits or _",
                    b.name
                ));
            }
            if let Err(e) = b.host_port() {
                return bad(format!("[[llm_backend]] {}: {e}", b.name));
            }
            if b.weight == 0 {
                return bad(format!(
                    "[[llm_backend]] {}: weight must be at least 1",
                    b.name
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envm(pairs: &[(&str, &str)]) -> EnvMap {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn off_without_a_backend_and_refused_half_configured() {
        assert_eq!(
            GatewayConfig::from_parts(None, vec![], &envm(&[])).unwrap(),
            None
        );
        let e = GatewayConfig::from_parts(Some(Default::default()), vec![], &envm(&[]));
        assert!(e.unwrap_err().to_string().contains("llm_backend"));
    }

    #[test]
    fn the_environment_wins_and_bad_values_are_refused() {
        let g = GatewayConfig::from_parts(
            Some(GatewayFileConfig {
                policy: Some(ChatPolicy::Annotate),
                task: Some("rag".into()),
                ..Default::default()
            }),
            vec![],
            &envm(&[
                ("KAKEYA_LLM_BACKEND", "127.0.0.1:9000"),
                ("KAKEYA_GATEWAY_POLICY", "block"),
            ]),
        )
        .unwrap()
        .unwrap();
        assert_eq!(g.chat.policy, ChatPolicy::Block);
        assert_eq!(g.chat.task, Some(TaskKind::Rag));
        assert_eq!(
            g.chat.stream_window,
            kakeya_core::chat::config::DEFAULT_STREAM_WINDOW
        );
        let e = envm(&[
            ("KAKEYA_LLM_BACKEND", "127.0.0.1:9000"),
            ("KAKEYA_GATEWAY_STREAM_WINDOW", "64"),
            ("KAKEYA_GATEWAY_STREAM_SCORE_EVERY", "32"),
        ]);
        let g2 = GatewayConfig::from_parts(None, vec![], &e)
            .unwrap()
            .unwrap();
        assert_eq!(
            (g2.chat.stream_window, g2.chat.stream_score_every),
            (64, 32)
        );
        assert_eq!(g.backends[0].cluster(), "kakeya_llm_default");
        assert!(g.backends[0].is_ip());
        for (k, v) in [
            ("KAKEYA_GATEWAY_POLICY", "drop"),
            ("KAKEYA_GATEWAY_TASK", "poetry"),
            ("KAKEYA_LLM_BACKEND", "nope"),
            ("KAKEYA_GATEWAY_STREAM_WINDOW", "wide"),
            ("KAKEYA_GATEWAY_STREAM_SCORE_EVERY", "1"),
        ] {
            let mut e = envm(&[("KAKEYA_LLM_BACKEND", "127.0.0.1:9000")]);
            e.insert(k.into(), v.into());
            assert!(
                GatewayConfig::from_parts(None, vec![], &e).is_err(),
                "{k}={v}"
            );
        }
        let dup = LlmBackend {
            name: "a".into(),
            addr: "api.example.com:443".into(),
            weight: 1,
            tls: true,
        };
        assert!(!dup.is_ip());
        let e = GatewayConfig::from_parts(None, vec![dup.clone(), dup], &envm(&[]));
        assert!(e.is_err());
    }
}
