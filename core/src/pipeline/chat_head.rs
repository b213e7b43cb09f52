//! The chat route's request headers: method (405), content type (415) and the tenant, from the
//! configured header or else from the API key's hash (never the key itself); and the tenant's
//! budget, enforced before the request reaches the LLM backend (once the backend has answered,
//! the answer is paid for).

use super::{is_json_content_type, valid_tenant, LocalReply};
use crate::budget::BudgetAction;
use crate::bundle::Scorer;
use crate::chat::ChatConfig;
use crate::signature::DEFAULT_TENANT;
use sha2::{Digest, Sha256};

/// Prefix of a tenant derived from an API key.
pub const KEY_TENANT_PREFIX: &str = "key-";

/// `key-` + the first 32 hex digits of SHA-256 of the bearer token (or of the whole
/// `authorization` value when it is not `Bearer …`); `None` without a key.
pub fn key_tenant(authorization: &[u8]) -> Option<String> {
    let v = authorization.trim_ascii();
    let key = match v.get(..7) {
        Some(p) if p.eq_ignore_ascii_case(b"bearer ") => v.get(7..).unwrap_or_default(),
        _ => v,
    }
    .trim_ascii();
    if key.is_empty() {
        return None;
    }
    let digest = Sha256::digest(key);
    let mut out = String::with_capacity(KEY_TENANT_PREFIX.len() + 32);
    out.push_str(KEY_TENANT_PREFIX);
    for b in digest.iter().take(16) {
        out.push_str(&format!("{b:02x}"));
    }
    Some(out)
}

/// The tenant of a chat request, or its 4xx reply.
pub fn on_headers(headers: &[(String, Vec<u8>)], cfg: &ChatConfig) -> Result<String, LocalReply> {
    let value = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    };
    if value(":method") != Some(b"POST".as_slice()) {
        let mut r = LocalReply::new(405, "method_not_allowed", "use POST");
        r.headers.push(("allow".into(), "POST".into()));
        return Err(r);
    }
    if let Some(ct) = value("content-type") {
        if !is_json_content_type(ct) {
            return Err(LocalReply::new(
                415,
                "unsupported_media_type",
                "content-type must be application/json",
            ));
        }
    }
    if let Some(t) = value(&cfg.tenant_header).filter(|t| !t.is_empty()) {
        return match core::str::from_utf8(t) {
            Ok(t) if valid_tenant(t) => Ok(t.to_string()),
            _ => Err(LocalReply::new(
                400,
                "invalid_tenant",
                "the tenant header is not a valid tenant id",
            )),
        };
    }
    Ok(value("authorization")
        .and_then(key_tenant)
        .unwrap_or_else(|| DEFAULT_TENANT.to_string()))
}

/// The budget action in force for `tenant` on the chat route, or the OpenAI-shaped error of a
/// deny (402 `budget_exceeded`) or a throttle (429 `budget_throttled` with `Retry-After`): the
/// PCS path's stage ([`super::budget::enforce`]) with the body OpenAI clients read.
pub fn enforce_budget(tenant: &str, bundle: Option<&Scorer>) -> Result<BudgetAction, LocalReply> {
    super::budget::enforce(tenant, bundle).map_err(openai_error)
}

/// `r` with an OpenAI-shaped body: `{"error": {"message", "type", "param", "code"}, "code"}`.
/// OpenAI client libraries read `error.message` and `error.code` into the exception they raise
/// (and retry a 429 after its `Retry-After`); the top-level `code` is the gate's usual one.
pub fn openai_error(mut r: LocalReply) -> LocalReply {
    let message = serde_json::from_str::<serde_json::Value>(&r.body)
        .ok()
        .and_then(|v| v.get("error").and_then(|m| m.as_str()).map(str::to_string))
        .unwrap_or_default();
    let kind = match r.status {
        402 => "insufficient_quota",
        429 => "rate_limit_exceeded",
        _ => "invalid_request_error",
    };
    r.body = serde_json::json!({
        "error": {"message": message, "type": kind, "param": null, "code": r.code},
        "code": r.code,
    })
    .to_string();
    r
}
