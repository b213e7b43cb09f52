//! The hash chain and the segment Merkle tree: pure functions over bytes, no I/O, so the
//! appender, the verifier and the bench compute exactly the same thing.
//!
//! **Entry hash** (`kakeya-audit-entry-v1`), over a length-prefixed binary encoding rather
//! than canonical JSON: every field has one encoding, and nothing has to be re-serialised to
//! verify (the payload is hashed as the stored text, byte for byte):
//!
//! ```text
//! hash = SHA-256( "kakeya-audit-entry-v1" 0x00
//!                 be64(seq) be64(ts_ms) lp(kind) lp(subject) lp(payload) prev_hash[32] )
//! lp(x) = be32(byte length of x) || x (UTF-8)
//! ```
//!
//! `prev_hash` is the previous entry's hash (32 zero bytes before seq 1). Hashes are stored
//! as lowercase hex.
//!
//! **Segment root**: the RFC 6962 Merkle tree hash over the entries' hashes of a sealed
//! segment (leaf = SHA-256(0x00 ‖ entry hash), node = SHA-256(0x01 ‖ left ‖ right), split at
//! the largest power of two below n). Written here (30 lines) because the crates that offer it
//! bring their own hash abstraction for no gain over `sha2`.

use sha2::{Digest, Sha256};

/// The domain tag of an entry hash.
pub const ENTRY_TAG: &[u8] = b"kakeya-audit-entry-v1\0";
/// The `prev_hash` of seq 1.
pub const GENESIS: [u8; 32] = [0; 32];

pub type Hash = [u8; 32];

/// The fields of an entry that its hash covers.
#[derive(Debug, Clone, Copy)]
pub struct Fields<'a> {
    pub seq: i64,
    pub ts_ms: i64,
    pub kind: &'a str,
    pub subject: &'a str,
    pub payload: &'a str,
    pub prev_hash: &'a Hash,
}

fn lp(h: &mut Sha256, s: &str) {
    h.update((s.len() as u32).to_be_bytes());
    h.update(s.as_bytes());
}

/// The entry hash of `f` (see the module docs).
pub fn entry_hash(f: &Fields<'_>) -> Hash {
    let mut h = Sha256::new();
    h.update(ENTRY_TAG);
    h.update(f.seq.to_be_bytes());
    h.update(f.ts_ms.to_be_bytes());
    lp(&mut h, f.kind);
    lp(&mut h, f.subject);
    lp(&mut h, f.payload);
    h.update(f.prev_hash);
    h.finalize().into()
}

/// RFC 6962 Merkle tree hash of `leaves` (already hashes; the empty tree is SHA-256("")).
pub fn merkle_root(leaves: &[Hash]) -> Hash {
    match leaves {
        [] => Sha256::digest([]).into(),
        [one] => {
            let mut h = Sha256::new();
            h.update([0u8]);
            h.update(one);
            h.finalize().into()
        }
        _ => {
            // the largest power of two strictly below n (n ≥ 2 here)
            let k = 1usize << (usize::BITS - 1 - (leaves.len() - 1).leading_zeros());
            let (l, r) = leaves.split_at(k);
            let mut h = Sha256::new();
            h.update([1u8]);
            h.update(merkle_root(l));
            h.update(merkle_root(r));
            h.finalize().into()
        }
    }
}

pub fn to_hex(h: &Hash) -> String {
    hex::encode(h)
}

/// A stored hex hash; `None` when it is not 64 hex digits.
pub fn from_hex(s: &str) -> Option<Hash> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

/// Bytes a checkpoint's signature covers (`kakeya-audit-checkpoint-v1`), one field per line:
/// the tag, seq_from, seq_to, head hash, segment root, created_at_ms, key id. Signed as
/// Ed25519 over SHA-256 of these bytes (the registry's artifact signing,
/// [`crate::registry::keys::sign_artifact`]).
pub fn checkpoint_message(
    seq_from: i64,
    seq_to: i64,
    head_hash: &str,
    segment_root: &str,
    created_at_ms: i64,
    key_id: &str,
) -> Vec<u8> {
    format!(
        "kakeya-audit-checkpoint-v1\n{seq_from}\n{seq_to}\n{head_hash}\n{segment_root}\n{created_at_ms}\n{key_id}\n"
    )
    .into_bytes()
}

/// The key id of a public key: the first 16 hex digits of SHA-256 of its 32 raw bytes.
pub fn key_id(public_key_b64: &str) -> String {
    use base64::Engine;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(public_key_b64.trim())
        .unwrap_or_default();
    hex::encode(Sha256::digest(raw))[..16].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(i: u8) -> Hash {
        Sha256::digest([i]).into()
    }

    #[test]
    fn entry_hash_covers_every_field() {
        let p = GENESIS;
        let base = Fields {
            seq: 1,
            ts_ms: 2,
            kind: "k",
            subject: "s",
            payload: "{}",
            prev_hash: &p,
        };
        let h = entry_hash(&base);
        let q = [1u8; 32];
        for other in [
            Fields { seq: 2, ..base },
            Fields { ts_ms: 3, ..base },
            Fields { kind: "K", ..base },
            Fields {
                subject: "",
                ..base
            },
            Fields {
                payload: "{ }",
                ..base
            },
            Fields {
                prev_hash: &q,
                ..base
            },
            // length prefixes: moving a byte from kind to subject changes the hash
            Fields {
                kind: "ks",
                subject: "",
                ..base
            },
        ] {
            assert_ne!(entry_hash(&other), h);
        }
        assert_eq!(entry_hash(&base), h);
    }

    #[test]
    fn merkle_root_follows_rfc6962() {
        // RFC 6962 §2.1: MTH({d0}) = SHA-256(0x00 || d0); for n = 3 the split is 2 + 1.
        let l: Vec<Hash> = (0..3).map(leaf).collect();
        let node = |a: Hash, b: Hash| -> Hash {
            let mut h = Sha256::new();
            h.update([1u8]);
            h.update(a);
            h.update(b);
            h.finalize().into()
        };
        let one = |a: &Hash| merkle_root(std::slice::from_ref(a));
        assert_eq!(
            merkle_root(&l),
            node(node(one(&l[0]), one(&l[1])), one(&l[2]))
        );
        let l5: Vec<Hash> = (0..5).map(leaf).collect();
        assert_eq!(merkle_root(&l5), node(merkle_root(&l5[..4]), one(&l5[4])));
        assert_ne!(merkle_root(&l5[..4]), merkle_root(&l5));
    }

    #[test]
    fn hex_round_trip() {
        let h = leaf(7);
        assert_eq!(from_hex(&to_hex(&h)), Some(h));
        assert_eq!(from_hex("zz"), None);
    }
}
