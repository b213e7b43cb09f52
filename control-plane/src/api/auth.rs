//! Credentials of the two listeners: the admin bearer token and the ingest shared secret.
//!
//! * The **admin token** guards every admin route except `/health`, `/ready` and the signed
//!   bundle. It comes from `KAKEYA_ADMIN_TOKEN` / `admin_token`, or else from a file
//!   (`KAKEYA_ADMIN_TOKEN_FILE` / `admin_token_file`, default `<data_dir>/admin.token`) that the
//!   first start generates (256 random bits, mode 0600) and later starts reuse, so the admin API
//!   is never open by default.
//! * The **ingest secret** is what Envoy adds to every request it forwards to the ingest
//!   listener ([`H_INGEST_SECRET`]); the ingest listener trusts the gate's `x-kakeya-*` headers
//!   only when it matches. It is required when the ingest listener is not on loopback.
//!
//! Comparisons hash both sides first and compare the digests in constant time, so neither the
//! content nor the length of a secret leaks through timing. Secrets are never logged.

use super::{AdminState, IngestState};
use crate::error::ApiError;
use anyhow::Context;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// Header Envoy adds on the ingest route, carrying the shared ingest secret.
pub const H_INGEST_SECRET: &str = "x-kakeya-ingest-secret";

/// A secret compared in constant time; its `Debug` never shows it.
#[derive(Clone)]
pub struct Secret(Arc<str>);

impl Secret {
    pub fn new(value: &str) -> Self {
        Secret(Arc::from(value))
    }

    /// True when `given` is this secret (constant time in both content and length).
    pub fn matches(&self, given: &str) -> bool {
        let a = Sha256::digest(self.0.as_bytes());
        let b = Sha256::digest(given.as_bytes());
        a.ct_eq(&b).into()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Requires `Authorization: Bearer <admin token>`; anything else is a 401 JSON answer.
pub async fn require_admin_token(
    State(st): State<AdminState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        // The scheme is case-insensitive (RFC 7235 §2.1).
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim());
    match given {
        Some(t) if st.admin_token.matches(t) => Ok(next.run(req).await),
        _ => Err(ApiError::Unauthorized),
    }
}

/// Requires [`H_INGEST_SECRET`] when the ingest listener has a secret configured.
pub async fn require_ingest_secret(
    State(st): State<IngestState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if let Some(secret) = &st.ingest_secret {
        let given = req
            .headers()
            .get(H_INGEST_SECRET)
            .and_then(|v| v.to_str().ok());
        if !given.is_some_and(|g| secret.matches(g)) {
            return Err(ApiError::NotFromEnvoy);
        }
    }
    Ok(next.run(req).await)
}

/// Reads a secret file: trimmed, non-empty, UTF-8. Warns when others may read it.
pub fn read_secret_file(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the secret file {}", path.display()))?;
    let value = text.trim();
    if value.is_empty() {
        anyhow::bail!("the secret file {} is empty", path.display());
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(m) = std::fs::metadata(path) {
            if m.permissions().mode() & 0o077 != 0 {
                tracing::warn!(path = %path.display(), "secret file is readable by group or others; chmod 600 it");
            }
        }
    }
    Ok(value.to_string())
}

/// Reads the token file at `path`, generating it (256 random bits, base64url, mode 0600) when
/// it does not exist. Returns the token and whether it was generated now.
///
/// Generation goes through [`crate::private_file::create_once`]: two processes starting at
/// once end up with the same token.
pub fn load_or_create_token(path: &Path) -> anyhow::Result<(String, bool)> {
    match std::fs::metadata(path) {
        Ok(_) => return Ok((read_secret_file(path)?, false)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e).with_context(|| format!("cannot read the token file {}", path.display()))
        }
    }
    let mut raw = [0u8; 32];
    getrandom::getrandom(&mut raw)
        .map_err(|e| anyhow::anyhow!("the OS random number generator failed: {e}"))?;
    let token = URL_SAFE_NO_PAD.encode(raw);
    if crate::private_file::create_once(path, format!("{token}\n").as_bytes())? {
        Ok((token, true))
    } else {
        // Somebody else created it first: use theirs.
        Ok((read_secret_file(path)?, false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_matches_only_itself() {
        let s = Secret::new("abc");
        assert!(s.matches("abc"));
        for other in ["", "ab", "abcd", "abd", "ABC"] {
            assert!(!s.matches(other), "{other}");
        }
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
    }

    #[test]
    fn token_file_is_created_0600_once_and_reused() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("sub/admin.token");
        let (t1, created) = load_or_create_token(&path).unwrap();
        assert!(created);
        assert_eq!(t1.len(), 43, "256 bits in base64url");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let (t2, created) = load_or_create_token(&path).unwrap();
        assert!(!created);
        assert_eq!(t1, t2);
        std::fs::write(&path, "  \n").unwrap();
        assert!(load_or_create_token(&path).is_err(), "empty file refused");
    }
}
