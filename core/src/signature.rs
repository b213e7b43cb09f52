//! Signatures over the canonical payload (spec §3.3, §3.6) and the per-tenant keyring.
//!
//! * `hmac`: HMAC-SHA256 with the UTF-8 bytes of the secret over the payload; any key of the list
//!   passes (rotation); `legacy_prehash` additionally accepts HMAC over SHA-256(payload), which
//!   every reference SDK client still sends. Comparison is constant time (`verify_slice`).
//! * `ed25519`: Ed25519 over the 32 raw bytes of SHA-256(payload); any key of the list passes.
//! * `none`: nothing is checked (the reference default; say so loudly in the logs).

use crate::canonical::signing_payload;
use crate::pcs::Pcs;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier as _, VerifyingKey};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

type HmacSha256 = Hmac<Sha256>;

/// Signature algorithm names as in `PCS_SIGN_ALG` and `TENANTS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SigAlg {
    #[default]
    None,
    Hmac,
    Ed25519,
}

impl core::str::FromStr for SigAlg {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        match s.trim() {
            "none" | "" => Ok(SigAlg::None),
            "hmac" => Ok(SigAlg::Hmac),
            "ed25519" => Ok(SigAlg::Ed25519),
            other => Err(KeyError::UnknownAlg(other.to_string())),
        }
    }
}

/// How one signer (global or tenant) is checked. `keys` are HMAC secrets as given, or standard
/// base64 Ed25519 public keys.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifierConfig {
    #[serde(default)]
    pub alg: SigAlg,
    #[serde(default)]
    pub keys: Vec<String>,
    #[serde(default)]
    pub legacy_prehash: bool,
}

/// A configuration that cannot be turned into a verifier (fatal at start-up).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum KeyError {
    #[error("unknown signature algorithm {0:?} (expected hmac, ed25519 or none)")]
    UnknownAlg(String),
    #[error("{0} verification needs at least one key")]
    NoKeys(&'static str),
    #[error("an HMAC key is empty")]
    EmptyHmacKey,
    #[error("Ed25519 public key #{0} is not standard base64 of 32 bytes")]
    BadEd25519Key(usize),
    #[error("tenant {0:?}: {1}")]
    Tenant(String, Box<KeyError>),
    #[error("tenant id {0:?} is invalid: use 1-64 characters of [A-Za-z0-9_-]")]
    InvalidTenantId(String),
}

/// Why a signature was refused. Every variant maps to HTTP 401.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("signature missing")]
    Missing,
    #[error("signature is not standard base64")]
    Encoding,
    #[error("signature does not match")]
    Mismatch,
}

#[derive(Clone)]
enum Kind {
    None,
    /// Each secret's HMAC already keyed (its inner and outer pads hashed once, here, instead
    /// of on every request); a check clones it.
    Hmac {
        keys: Vec<HmacSha256>,
        legacy_prehash: bool,
    },
    Ed25519 {
        keys: Vec<VerifyingKey>,
    },
}

/// A ready-to-use signature checker.
#[derive(Clone)]
pub struct Verifier {
    kind: Kind,
}

impl core::fmt::Debug for Verifier {
    // Never print key material.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let alg = match &self.kind {
            Kind::None => "none",
            Kind::Hmac { .. } => "hmac",
            Kind::Ed25519 { .. } => "ed25519",
        };
        f.debug_struct("Verifier").field("alg", &alg).finish()
    }
}

impl Verifier {
    pub fn from_config(cfg: &VerifierConfig) -> Result<Self, KeyError> {
        let kind = match cfg.alg {
            SigAlg::None => Kind::None,
            SigAlg::Hmac => {
                if cfg.keys.is_empty() {
                    return Err(KeyError::NoKeys("hmac"));
                }
                if cfg.keys.iter().any(String::is_empty) {
                    return Err(KeyError::EmptyHmacKey);
                }
                let keys = cfg
                    .keys
                    .iter()
                    .map(|k| HmacSha256::new_from_slice(k.as_bytes()))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|_| KeyError::EmptyHmacKey)?;
                Kind::Hmac {
                    keys,
                    legacy_prehash: cfg.legacy_prehash,
                }
            }
            SigAlg::Ed25519 => {
                if cfg.keys.is_empty() {
                    return Err(KeyError::NoKeys("ed25519"));
                }
                let keys = cfg
                    .keys
                    .iter()
                    .enumerate()
                    .map(|(i, k)| {
                        let raw = STANDARD
                            .decode(k.trim())
                            .map_err(|_| KeyError::BadEd25519Key(i))?;
                        let arr: [u8; 32] =
                            raw.try_into().map_err(|_| KeyError::BadEd25519Key(i))?;
                        VerifyingKey::from_bytes(&arr).map_err(|_| KeyError::BadEd25519Key(i))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Kind::Ed25519 { keys }
            }
        };
        Ok(Verifier { kind })
    }

    /// True when this verifier checks nothing.
    pub fn is_none(&self) -> bool {
        matches!(self.kind, Kind::None)
    }

    /// Checks the signature of a parsed PCS over its canonical payload.
    pub fn verify(&self, pcs: &Pcs) -> Result<(), SignatureError> {
        if self.is_none() {
            return Ok(());
        }
        self.verify_payload(signing_payload(pcs).as_bytes(), &pcs.sig)
    }

    /// Checks `sig_b64` over `payload`.
    pub fn verify_payload(&self, payload: &[u8], sig_b64: &str) -> Result<(), SignatureError> {
        let sig = decode_sig(sig_b64)?;
        match &self.kind {
            Kind::None => Ok(()),
            Kind::Hmac {
                keys,
                legacy_prehash,
            } => {
                // The digest only for the legacy form, once for every key.
                let digest = legacy_prehash.then(|| Sha256::digest(payload));
                for key in keys {
                    if hmac_matches(key, payload, &sig) {
                        return Ok(());
                    }
                    if digest.is_some_and(|d| hmac_matches(key, &d, &sig)) {
                        return Ok(());
                    }
                }
                Err(SignatureError::Mismatch)
            }
            Kind::Ed25519 { keys } => {
                let sig: [u8; 64] = sig
                    .as_slice()
                    .try_into()
                    .map_err(|_| SignatureError::Mismatch)?;
                let sig = Signature::from_bytes(&sig);
                let digest = Sha256::digest(payload);
                if keys.iter().any(|k| k.verify(&digest, &sig).is_ok()) {
                    Ok(())
                } else {
                    Err(SignatureError::Mismatch)
                }
            }
        }
    }
}

fn hmac_matches(keyed: &HmacSha256, msg: &[u8], sig: &[u8]) -> bool {
    let mut mac = keyed.clone();
    mac.update(msg);
    mac.verify_slice(sig).is_ok()
}

/// Standard base64 with padding; like Go's decoder, embedded CR/LF are skipped.
fn decode_sig(sig_b64: &str) -> Result<Vec<u8>, SignatureError> {
    if sig_b64.is_empty() {
        return Err(SignatureError::Missing);
    }
    let decoded = if sig_b64.contains(['\r', '\n']) {
        let cleaned: String = sig_b64
            .chars()
            .filter(|c| *c != '\r' && *c != '\n')
            .collect();
        STANDARD.decode(cleaned)
    } else {
        STANDARD.decode(sig_b64)
    };
    decoded.map_err(|_| SignatureError::Encoding)
}

/// HMAC-SHA256 signature of `payload` (standard base64), as the reference agent makes it.
pub fn sign_hmac(payload: &[u8], key: &[u8]) -> String {
    match HmacSha256::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(payload);
            STANDARD.encode(mac.finalize().into_bytes())
        }
        Err(_) => String::new(),
    }
}

/// Ed25519 signature over SHA-256(`payload`) (standard base64).
pub fn sign_ed25519(payload: &[u8], seed: &[u8; 32]) -> String {
    let key = SigningKey::from_bytes(seed);
    STANDARD.encode(key.sign(&Sha256::digest(payload)).to_bytes())
}

/// Standard base64 public key of an Ed25519 seed.
pub fn ed25519_public_b64(seed: &[u8; 32]) -> String {
    STANDARD.encode(SigningKey::from_bytes(seed).verifying_key().to_bytes())
}

/// Who may sign: the global verifier (single-tenant mode, the reference `PCS_*` variables) and,
/// in multi-tenant mode, one verifier per tenant (the reference `TENANTS`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyringConfig {
    #[serde(default)]
    pub multi_tenant: bool,
    #[serde(default)]
    pub global: VerifierConfig,
    #[serde(default)]
    pub tenants: BTreeMap<String, VerifierConfig>,
}

/// The tenant of a request is not registered (multi-tenant mode only; HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown tenant")]
pub struct UnknownTenant;

/// Verifiers by tenant.
#[derive(Debug, Clone)]
pub struct Keyring {
    multi_tenant: bool,
    global: Verifier,
    tenants: BTreeMap<String, Verifier>,
}

/// The tenant a request without `X-Tenant-Id` belongs to.
pub const DEFAULT_TENANT: &str = "default";
/// Request header naming the tenant.
pub const TENANT_HEADER: &str = "x-tenant-id";

/// Longest tenant id.
pub const MAX_TENANT_ID_LEN: usize = 64;

/// Tenant ids are 1–64 characters of `[A-Za-z0-9_-]`: they travel in HTTP headers and in Envoy
/// metric names, where `.` separates name segments.
pub fn valid_tenant_id(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= MAX_TENANT_ID_LEN
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl Keyring {
    pub fn from_config(cfg: &KeyringConfig) -> Result<Self, KeyError> {
        let global = Verifier::from_config(&cfg.global)?;
        let tenants = cfg
            .tenants
            .iter()
            .map(|(id, c)| {
                if !valid_tenant_id(id) {
                    return Err(KeyError::InvalidTenantId(id.clone()));
                }
                Verifier::from_config(c)
                    .map(|v| (id.clone(), v))
                    .map_err(|e| KeyError::Tenant(id.clone(), Box::new(e)))
            })
            .collect::<Result<_, _>>()?;
        Ok(Keyring {
            multi_tenant: cfg.multi_tenant,
            global,
            tenants,
        })
    }

    pub fn multi_tenant(&self) -> bool {
        self.multi_tenant
    }

    /// The verifier for `tenant`. Single-tenant mode: always the global one. Multi-tenant mode:
    /// the tenant's own; with no tenants registered only `default` exists (with the global one).
    pub fn verifier_for(&self, tenant: &str) -> Result<&Verifier, UnknownTenant> {
        if !self.multi_tenant {
            return Ok(&self.global);
        }
        if let Some(v) = self.tenants.get(tenant) {
            return Ok(v);
        }
        if self.tenants.is_empty() && tenant == DEFAULT_TENANT {
            return Ok(&self.global);
        }
        Err(UnknownTenant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pcs::parse;

    const G1: &[u8] = include_bytes!("../tests/data/pcs_tiny_case_1.json");
    const G2: &[u8] = include_bytes!("../tests/data/pcs_tiny_case_2.json");
    const SEED: [u8; 32] = [
        0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24,
        25, 26, 27, 28, 29, 30, 31,
    ];

    fn hmac(keys: &[&str], legacy: bool) -> Verifier {
        Verifier::from_config(&VerifierConfig {
            alg: SigAlg::Hmac,
            keys: keys.iter().map(|k| k.to_string()).collect(),
            legacy_prehash: legacy,
        })
        .unwrap()
    }

    #[test]
    fn golden_hmac_verifies() {
        let v = hmac(&["testsecret"], false);
        for g in [G1, G2] {
            let p = parse(g).unwrap();
            v.verify(&p).unwrap();
            assert_eq!(
                sign_hmac(signing_payload(&p).as_bytes(), b"testsecret"),
                p.sig
            );
        }
        assert_eq!(
            hmac(&["wrong"], false).verify(&parse(G1).unwrap()),
            Err(SignatureError::Mismatch)
        );
        // rotation: any key of the list passes
        hmac(&["old", "testsecret"], false)
            .verify(&parse(G1).unwrap())
            .unwrap();
    }

    #[test]
    fn legacy_prehash_only_when_configured() {
        let mut p = parse(G1).unwrap();
        p.sig = "ie8rdnp+3qXnlMVyHmSdjFT3Unk6sZmoVxun71x2/X4=".into(); // spec §12.1
        assert_eq!(
            hmac(&["testsecret"], false).verify(&p),
            Err(SignatureError::Mismatch)
        );
        hmac(&["testsecret"], true).verify(&p).unwrap();
    }

    #[test]
    fn ed25519_vectors() {
        assert_eq!(
            ed25519_public_b64(&SEED),
            "A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg="
        );
        let v = Verifier::from_config(&VerifierConfig {
            alg: SigAlg::Ed25519,
            keys: vec!["A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg=".into()],
            legacy_prehash: false,
        })
        .unwrap();
        let sigs = [
            "YDbe81WZAVDIv6klWR8QtDAu4tYwBAix8fFppjAzOfASRss2q4DdWVC6UT54Q4eXs37HOiJJRHzYk3FyXVZlAg==",
            "ULhPXPI2/nuh4s0VCG8R1tzqFxqitgzGvqRuIJQykGvruev/QIzYzFoNXO3Vb51b53hfIS9uBApb/SPrl5EODQ==",
        ];
        let mut p1 = parse(G1).unwrap();
        let mut p2 = parse(G2).unwrap();
        p1.sig = sigs[0].into();
        p2.sig = sigs[1].into();
        v.verify(&p1).unwrap();
        v.verify(&p2).unwrap();
        assert_eq!(
            sign_ed25519(signing_payload(&p1).as_bytes(), &SEED),
            sigs[0]
        );
        p1.sig = sigs[1].into();
        assert_eq!(v.verify(&p1), Err(SignatureError::Mismatch));
    }

    #[test]
    fn malformed_signatures() {
        let v = hmac(&["testsecret"], false);
        let mut p = parse(G1).unwrap();
        p.sig = String::new();
        assert_eq!(v.verify(&p), Err(SignatureError::Missing));
        p.sig = "x5KLRpKb75Oy1oxLA-3V-bgY_HL_3ZYOk1rw3pCiSm4=".into();
        assert_eq!(v.verify(&p), Err(SignatureError::Encoding));
        p.sig = "x5KLRpKb75Oy1oxLA+3V+bgY/HL/3ZYOk1rw3pCiSm4".into(); // padding required
        assert_eq!(v.verify(&p), Err(SignatureError::Encoding));
        p.sig = "x5KLRpKb75Oy1oxLA+3V+bgY\r\n/HL/3ZYOk1rw3pCiSm4=".into(); // CR/LF skipped like Go
        v.verify(&p).unwrap();
    }

    #[test]
    fn config_errors() {
        assert_eq!(
            "rsa".parse::<SigAlg>(),
            Err(KeyError::UnknownAlg("rsa".into()))
        );
        let bad = |alg, keys: &[&str]| {
            Verifier::from_config(&VerifierConfig {
                alg,
                keys: keys.iter().map(|k| k.to_string()).collect(),
                legacy_prehash: false,
            })
            .unwrap_err()
        };
        assert_eq!(bad(SigAlg::Hmac, &[]), KeyError::NoKeys("hmac"));
        assert_eq!(bad(SigAlg::Hmac, &[""]), KeyError::EmptyHmacKey);
        assert_eq!(bad(SigAlg::Ed25519, &["AAAA"]), KeyError::BadEd25519Key(0));
    }

    #[test]
    fn keyring_tenancy() {
        let cfg = KeyringConfig {
            multi_tenant: true,
            global: VerifierConfig::default(),
            tenants: [(
                "acme".to_string(),
                VerifierConfig {
                    alg: SigAlg::Hmac,
                    keys: vec!["testsecret".into()],
                    legacy_prehash: false,
                },
            )]
            .into(),
        };
        let ring = Keyring::from_config(&cfg).unwrap();
        assert!(ring.verifier_for("acme").is_ok());
        assert_eq!(ring.verifier_for("default").unwrap_err(), UnknownTenant);
        let single = Keyring::from_config(&KeyringConfig {
            multi_tenant: false,
            ..cfg
        })
        .unwrap();
        assert!(single.verifier_for("anyone").unwrap().is_none());
    }
}
