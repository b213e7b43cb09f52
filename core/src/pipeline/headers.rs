//! Stage 0, the request headers (from `on_http_request_headers`): which client `x-kakeya-*`
//! headers to strip (every path), whether this is the submit route, the method (405), the
//! content type (415) and the tenant (400 `invalid_tenant` / `unknown_tenant`).

use super::reply::LocalReply;
use crate::signature::DEFAULT_TENANT;
use crate::{Gate, SUBMIT_PATH};

/// Prefix of the headers only this filter may set; client copies are removed.
pub const KAKEYA_HEADER_PREFIX: &str = "x-kakeya-";
pub use crate::signature::TENANT_HEADER;

/// Result of the header stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadVerdict {
    /// Not the submit route: strip and continue.
    PassThrough,
    /// Submit route, method and tenant fine: wait for the whole body.
    AwaitBody { tenant: String },
    /// Submit route, answered right away (405 or a tenant error).
    Reply(LocalReply),
}

/// Output of [`on_headers`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// Names (as sent, lower case in Envoy) of client headers to remove, deduplicated.
    pub strip: Vec<String>,
    pub verdict: HeadVerdict,
}

/// Lower-case-insensitive check for the reserved prefix.
pub fn is_kakeya_header(name: &str) -> bool {
    name.len() >= KAKEYA_HEADER_PREFIX.len()
        && name
            .as_bytes()
            .iter()
            .zip(KAKEYA_HEADER_PREFIX.as_bytes())
            .all(|(a, b)| a.eq_ignore_ascii_case(b))
}

/// `:path` without its query string (and fragment) is the submit route.
pub fn is_submit_path(path: &str) -> bool {
    let end = path.find(['?', '#']).unwrap_or(path.len());
    path.get(..end) == Some(SUBMIT_PATH)
}

/// See [`crate::signature::valid_tenant_id`].
pub fn valid_tenant(t: &str) -> bool {
    crate::signature::valid_tenant_id(t)
}

/// Header stage. `headers` is the full request header map including pseudo headers; values are
/// bytes because Envoy allows obs-text in values and the SDK's string getters would panic on them.
pub fn on_headers(headers: &[(String, Vec<u8>)], gate: &Gate) -> Head {
    let mut strip: Vec<String> = Vec::new();
    for (name, _) in headers {
        if is_kakeya_header(name) && !strip.iter().any(|s| s.eq_ignore_ascii_case(name)) {
            strip.push(name.clone());
        }
    }
    let path = header(headers, ":path").unwrap_or_default();
    if !is_submit_path(&String::from_utf8_lossy(path)) {
        return Head {
            strip,
            verdict: HeadVerdict::PassThrough,
        };
    }
    let method = header(headers, ":method").unwrap_or_default();
    if method != b"POST" {
        let mut reply = LocalReply::new(405, "method_not_allowed", "method not allowed: use POST");
        reply.headers.push(("allow".into(), "POST".into()));
        return Head {
            strip,
            verdict: HeadVerdict::Reply(reply),
        };
    }
    // The body must be JSON. A missing (or empty) content type is accepted: the reference
    // server never checks it, and clients that send none must keep working.
    let json_body = headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        .all(|(_, v)| is_json_content_type(v));
    if !json_body {
        return Head {
            strip,
            verdict: HeadVerdict::Reply(LocalReply::new(
                415,
                "unsupported_media_type",
                "unsupported content type: send content-type: application/json (curl sends a form type unless given -H 'content-type: application/json')",
            )),
        };
    }
    // Single-tenant mode ignores X-Tenant-Id, as the reference does: otherwise a client could
    // pick a fresh tenant per request and sidestep dedup, which is keyed by (tenant, pcs_id).
    let tenant = if gate.keyring.multi_tenant() {
        tenant_of(headers)
    } else {
        Ok(DEFAULT_TENANT.to_string())
    };
    let verdict = match tenant {
        Err(reply) => HeadVerdict::Reply(reply),
        Ok(tenant) => match gate.keyring.verifier_for(&tenant) {
            Ok(_) => HeadVerdict::AwaitBody { tenant },
            Err(_) => HeadVerdict::Reply(LocalReply::new(
                400,
                "unknown_tenant",
                &format!("unknown tenant {tenant:?}"),
            )),
        },
    };
    Head { strip, verdict }
}

/// `application/json`, any case, with or without parameters (`; charset=utf-8`); an empty value
/// counts as no content type.
pub fn is_json_content_type(value: &[u8]) -> bool {
    let Ok(v) = core::str::from_utf8(value) else {
        return false;
    };
    let essence = v.split(';').next().unwrap_or_default().trim();
    essence.is_empty() || essence.eq_ignore_ascii_case("application/json")
}

fn header<'a>(headers: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a [u8]> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_slice())
}

/// The tenant of a request: `x-tenant-id`, `default` when absent or empty (as the reference
/// server does). Two `x-tenant-id` headers are refused: the filter and anything behind it must
/// never disagree about whose request this is.
fn tenant_of(headers: &[(String, Vec<u8>)]) -> Result<String, LocalReply> {
    let mut values = headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(TENANT_HEADER))
        .map(|(_, v)| v);
    let first = values.next();
    let invalid = || {
        LocalReply::new(
            400,
            "invalid_tenant",
            "invalid x-tenant-id: expected one header of 1-64 characters [A-Za-z0-9_-]",
        )
    };
    if values.next().is_some() {
        return Err(invalid());
    }
    match first {
        None => Ok(DEFAULT_TENANT.to_string()),
        Some(v) if v.is_empty() => Ok(DEFAULT_TENANT.to_string()),
        Some(v) => match core::str::from_utf8(v) {
            Ok(t) if valid_tenant(t) => Ok(t.to_string()),
            _ => Err(invalid()),
        },
    }
}
