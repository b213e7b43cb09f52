//! The bundle signing key: an Ed25519 seed generated once from the OS RNG and kept in a file
//! (`<data_dir>/keys/bundle-signing.seed`, mode 0600, standard base64 of 32 bytes).
//!
//! Generation ([`KeyFile`]) writes a private temp file and then *links* it into place, which
//! fails when the file already exists: two `kakeya serve` processes starting at once on one
//! data dir end up with the same key, never with one each. The seed is never logged.
//! The same key signs model artifacts ([`sign_artifact`]).

use crate::private_file::KeyFile;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use sha2::{Digest, Sha256};
use std::path::Path;

fn key_file(path: &Path) -> KeyFile<'_> {
    KeyFile {
        path,
        what: "bundle signing key",
        var: "KAKEYA_BUNDLE_SIGNING_SEED_FILE",
    }
}

/// Reads the seed at `path`, never creating it: what every command but `kakeya serve` uses
/// (`kakeya envoy render|run` too, so Envoy trusts the key the server signs with). A missing file is an error
/// saying where the key should be: a CLI command pointed at the wrong data dir would otherwise
/// make a key of its own, which the next `kakeya serve` would take for a key change.
pub fn load_seed(path: &Path) -> anyhow::Result<[u8; 32]> {
    key_file(path).load()
}

/// Reads the seed at `path`, generating it first when the file does not exist (`kakeya serve`).
pub fn load_or_create_seed(path: &Path) -> anyhow::Result<[u8; 32]> {
    let (seed, generated) = key_file(path).load_or_create()?;
    if generated {
        tracing::info!(path = %path.display(), public_key = %public_key_b64(&seed), "generated the bundle signing key");
    }
    Ok(seed)
}

/// Standard base64 of the Ed25519 public key of `seed` (what filters trust).
pub fn public_key_b64(seed: &[u8; 32]) -> String {
    STANDARD.encode(SigningKey::from_bytes(seed).verifying_key().to_bytes())
}

/// Standard base64 Ed25519 signature, by `seed`, of the 32-byte SHA-256 digest of a model
/// artifact's canonical bytes (what `models.signature` stores; the same key as bundles).
pub fn sign_artifact(canonical_bytes: &[u8], seed: &[u8; 32]) -> String {
    let digest = Sha256::digest(canonical_bytes);
    STANDARD.encode(SigningKey::from_bytes(seed).sign(&digest).to_bytes())
}

/// True when `signature_b64` is the signature of SHA-256(`canonical_bytes`) by the key whose
/// public half is `public_key_b64` (standard base64).
pub fn verify_artifact(canonical_bytes: &[u8], signature_b64: &str, public_key_b64: &str) -> bool {
    let key = STANDARD
        .decode(public_key_b64.trim())
        .ok()
        .and_then(|raw| <[u8; 32]>::try_from(raw.as_slice()).ok())
        .and_then(|raw| VerifyingKey::from_bytes(&raw).ok());
    let sig = STANDARD
        .decode(signature_b64.trim())
        .ok()
        .and_then(|raw| <[u8; 64]>::try_from(raw.as_slice()).ok())
        .map(|raw| Signature::from_bytes(&raw));
    match (key, sig) {
        (Some(key), Some(sig)) => key.verify(&Sha256::digest(canonical_bytes), &sig).is_ok(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_once_private_and_stable() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("keys").join("bundle-signing.seed");
        let a = load_or_create_seed(&path).unwrap();
        let b = load_or_create_seed(&path).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, [0u8; 32]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // only the seed file is left behind
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1);
        assert_eq!(STANDARD.decode(public_key_b64(&a)).unwrap().len(), 32);
        std::fs::write(&path, "garbage").unwrap();
        assert!(load_or_create_seed(&path).is_err());
    }

    #[test]
    fn load_seed_never_creates_the_key() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("keys").join("bundle-signing.seed");
        let e = load_seed(&path).unwrap_err().to_string();
        assert!(
            e.contains("only `kakeya serve` creates it") && e.contains("KAKEYA_DATA_DIR"),
            "{e}"
        );
        assert!(!path.exists() && !path.parent().unwrap().exists());
        let seed = load_or_create_seed(&path).unwrap();
        assert_eq!(load_seed(&path).unwrap(), seed);
    }
}
