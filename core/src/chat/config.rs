//! The gate's `chat` section (rendered from kakeya.toml `[gateway]`): which route is the chat
//! completions route, where tenant and context come from, and what a risky answer gets.

use crate::task::TaskKind;
use serde::{Deserialize, Serialize};

/// The OpenAI-compatible route.
pub const CHAT_PATH: &str = "/v1/chat/completions";

/// What happens to a request whose conversation has no usable context.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoContext {
    /// Scored with an empty context: the grounding features say "no context" (never grounded).
    #[default]
    Score,
    /// Passed through unscored (`x-kakeya-decision: skipped`), not recorded.
    Skip,
}

/// What a risky answer gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChatPolicy {
    /// Headers (and, streamed, the final `kakeya` chunk) only; an ensemble `reject` still blocks.
    #[default]
    Annotate,
    /// Escalated answers are blocked too: the choice becomes the refusal with
    /// `finish_reason: "content_filter"`; a stream is cut with a `content_filter` chunk
    /// ([`super::hold`]).
    Block,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatConfig {
    #[serde(default = "default_path")]
    pub path: String,
    /// The task kind the answers are scored as (chooses the bundle's task model).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::task::deserialize_opt"
    )]
    pub task: Option<TaskKind>,
    /// Request header naming the tenant; without it the tenant is `key-` + the first 32 hex
    /// digits of SHA-256(API key), or `default` without a key.
    #[serde(default = "default_tenant_header")]
    pub tenant_header: String,
    /// RFC 6901 JSON pointer into the request body holding the context (a string, or an array
    /// of strings or of objects with `text`/`content`), used when no `tool` message exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_pointer: Option<String>,
    #[serde(default)]
    pub no_context: NoContext,
    #[serde(default)]
    pub policy: ChatPolicy,
    /// Largest upstream response body (plain) or accumulated answer (streamed) that is scored.
    #[serde(default = "default_max_response_bytes")]
    pub max_response_bytes: usize,
    /// Cluster of the control plane's ingest listener, where decisions are recorded.
    #[serde(default = "default_record_cluster")]
    pub record_cluster: String,
    /// Under `block`, the last this many characters of a streamed answer are held back until
    /// the answer is known not to be blocked ([`super::hold`]).
    #[serde(default = "default_stream_window")]
    pub stream_window: usize,
    /// Under `block`, a streamed answer is scored each time this many more characters arrived.
    #[serde(default = "default_stream_score_every")]
    pub stream_score_every: usize,
    /// The assistant message of a blocked answer.
    #[serde(default = "default_refusal")]
    pub refusal: String,
    /// Variable of the VM's environment holding the ingest shared secret, sent with each
    /// recording callout (the submit route gets it from Envoy's route headers, which a callout
    /// bypasses); unset when ingest needs none. The name, never the secret, is configured here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingest_secret_env: Option<String>,
}

fn default_path() -> String {
    CHAT_PATH.into()
}
fn default_tenant_header() -> String {
    crate::signature::TENANT_HEADER.into()
}
fn default_max_response_bytes() -> usize {
    1 << 20
}
fn default_record_cluster() -> String {
    "kakeya_ingest".into()
}
/// Default [`ChatConfig::stream_window`].
pub const DEFAULT_STREAM_WINDOW: usize = 256;
/// Default [`ChatConfig::stream_score_every`].
pub const DEFAULT_STREAM_SCORE_EVERY: usize = 128;
fn default_stream_window() -> usize {
    DEFAULT_STREAM_WINDOW
}
fn default_stream_score_every() -> usize {
    DEFAULT_STREAM_SCORE_EVERY
}
/// The refusal when none is configured.
pub const DEFAULT_REFUSAL: &str =
    "The answer was withheld because it could not be verified against its sources.";
fn default_refusal() -> String {
    DEFAULT_REFUSAL.into()
}

impl Default for ChatConfig {
    fn default() -> Self {
        ChatConfig {
            path: default_path(),
            task: None,
            tenant_header: default_tenant_header(),
            context_pointer: None,
            no_context: NoContext::default(),
            policy: ChatPolicy::default(),
            max_response_bytes: default_max_response_bytes(),
            record_cluster: default_record_cluster(),
            stream_window: DEFAULT_STREAM_WINDOW,
            stream_score_every: DEFAULT_STREAM_SCORE_EVERY,
            refusal: default_refusal(),
            ingest_secret_env: None,
        }
    }
}

impl ChatConfig {
    /// Why the section is unusable, if it is.
    pub fn validate(&self) -> Result<(), String> {
        if !self.path.starts_with('/') {
            return Err("path must start with /".into());
        }
        if self.tenant_header.is_empty() || self.record_cluster.is_empty() {
            return Err("tenant_header and record_cluster must be set".into());
        }
        if let Some(p) = &self.context_pointer {
            if !p.starts_with('/') {
                return Err("context_pointer must be a JSON pointer starting with /".into());
            }
        }
        if !(1024..=(16 << 20)).contains(&self.max_response_bytes) {
            return Err("max_response_bytes must be within 1024..=16777216".into());
        }
        if self.stream_window > 65536 || !(16..=65536).contains(&self.stream_score_every) {
            return Err(
                "stream_window must be within 0..=65536 and stream_score_every within 16..=65536"
                    .into(),
            );
        }
        Ok(())
    }

    /// `:path` without its query string is this route.
    pub fn is_chat_path(&self, path: &str) -> bool {
        let end = path.find(['?', '#']).unwrap_or(path.len());
        path.get(..end) == Some(self.path.as_str())
    }
}
