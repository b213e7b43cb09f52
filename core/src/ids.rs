//! Identity of a PCS: the derived `pcs_id` (spec §2.1) and the producer's Merkle root (spec §2.2).
//!
//! Two identity rules, chosen by whether the PCS binds evidence:
//! * **`pcs-id-v1`** (PCS v0.1, no `evidence_sha256`): `SHA-256(merkle_root|epoch|shard_id)`, the
//!   reference agents' rule, unchanged.
//! * **`pcs-id-v2`** (PCS v0.2, signed `evidence_sha256`):
//!   `SHA-256("pcs-id-v2|" + merkle_root|epoch|shard_id|evidence_sha256)`. The prefix keeps the
//!   two rules apart: without it a v0.1 PCS with shard `s|<hash>` would share the id of a v0.2
//!   PCS with shard `s` and evidence hash `<hash>`. The Merkle root of a built PCS covers
//!   the response text only, so under v1 the same answer sent with another question or a
//!   contradicting context would share one id, one dedup slot and therefore one verdict, and
//!   would never be scored on its own evidence. Covering the evidence hash gives every
//!   (answer, evidence) pair its own identity.

use sha2::{Digest, Sha256};

fn hex(bytes: &[u8]) -> String {
    use core::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Lowercase hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

/// `pcs-id-v1`: `pcs_id = hex(SHA-256(merkle_root | epoch | shard_id))`.
pub fn derive_pcs_id(merkle_root: &str, epoch: i64, shard_id: &str) -> String {
    sha256_hex(format!("{merkle_root}|{epoch}|{shard_id}").as_bytes())
}

/// `pcs-id-v2` when `evidence_sha256` is non-empty (PCS v0.2):
/// `hex(SHA-256("pcs-id-v2|" merkle_root | epoch | shard_id | evidence_sha256))`; otherwise
/// `pcs-id-v1`.
pub fn derive_pcs_id_bound(
    merkle_root: &str,
    epoch: i64,
    shard_id: &str,
    evidence_sha256: &str,
) -> String {
    if evidence_sha256.is_empty() {
        derive_pcs_id(merkle_root, epoch, shard_id)
    } else {
        sha256_hex(
            format!("{PCS_ID_V2}|{merkle_root}|{epoch}|{shard_id}|{evidence_sha256}").as_bytes(),
        )
    }
}

/// Name, and domain-separation prefix, of the v0.2 identity rule.
pub const PCS_ID_V2: &str = "pcs-id-v2";

/// The id a PCS must carry under its identity rule (see the module docs).
pub fn expected_pcs_id(p: &crate::pcs::Pcs) -> String {
    derive_pcs_id_bound(&p.merkle_root, p.epoch, &p.shard_id, &p.evidence_sha256)
}

/// Idempotency key of a submission: hex SHA-256 of its canonical signing payload (the signed
/// fields, `evidence_sha256` included). Two submissions with one `pcs_id` and the same content
/// hash are the same submission; with different hashes they conflict.
pub fn content_sha256(p: &crate::pcs::Pcs) -> String {
    sha256_hex(crate::canonical::signing_payload(p).as_bytes())
}

/// Merkle root over `chunk`-byte chunks of `data`, as the Python agent builds it: leaves are hex
/// digests, parents hash the concatenated *hex strings*, an odd node is paired with itself, and
/// no data gives 64 zeros.
pub fn merkle_root(data: &[u8], chunk: usize) -> String {
    let chunk = chunk.max(1);
    let mut level: Vec<String> = data.chunks(chunk).map(sha256_hex).collect();
    if level.is_empty() {
        return "0".repeat(64);
    }
    while level.len() > 1 {
        level = level
            .chunks(2)
            .filter_map(|pair| {
                // `chunks` never yields an empty chunk.
                let left = pair.first()?;
                let right = pair.get(1).unwrap_or(left);
                Some(sha256_hex(format!("{left}{right}").as_bytes()))
            })
            .collect();
    }
    level.pop().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcs_id_vectors() {
        assert_eq!(
            derive_pcs_id("abc123", 1, "shard-001"),
            "9c2a1a9fe3d87edab9aaee193852edc091aa03e263580f9556f1f0d0f1679b93"
        );
        assert_eq!(
            derive_pcs_id(&"a".repeat(64), 1, "test-shard"),
            "6337a3b9761aabbc0b807f6d3f733461fa0266cb09327aeed26df0a9bbcda775"
        );
    }

    #[test]
    fn v2_identity_covers_the_evidence_hash() {
        let root = "a".repeat(64);
        // No evidence: the v1 rule, bit for bit.
        assert_eq!(
            derive_pcs_id_bound(&root, 1, "test-shard", ""),
            derive_pcs_id(&root, 1, "test-shard")
        );
        // Pinned: SHA-256("pcs-id-v2|aaa…a|1|test-shard|" + "ab"×32).
        let ev = "ab".repeat(32);
        assert_eq!(
            derive_pcs_id_bound(&root, 1, "test-shard", &ev),
            "58a27d4f0bfc8d961ce612117beb2693d6493bf926ccac7a27215076b572afdb"
        );
        // Domain separation: a v0.1 shard that spells the v2 suffix is another identity.
        assert_ne!(
            derive_pcs_id(&root, 1, &format!("test-shard|{ev}")),
            derive_pcs_id_bound(&root, 1, "test-shard", &ev)
        );
        assert_ne!(
            derive_pcs_id_bound(&root, 1, "test-shard", &ev),
            derive_pcs_id_bound(&root, 1, "test-shard", &"cd".repeat(32))
        );
    }

    #[test]
    fn content_hash_covers_every_signed_field_and_nothing_else() {
        let mut p = crate::pcs::Pcs {
            pcs_id: "x".into(),
            merkle_root: "m".into(),
            shard_id: "s".into(),
            d_hat: 1.5,
            ..Default::default()
        };
        let h = content_sha256(&p);
        p.n_j.insert("2".into(), 3); // unsigned: same submission
        p.sig = "other".into();
        assert_eq!(content_sha256(&p), h);
        p.d_hat = 1e308; // signed: a different submission
        assert_ne!(content_sha256(&p), h);
    }

    #[test]
    fn merkle_vectors() {
        assert_eq!(
            merkle_root(b"a", 1),
            "ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb"
        );
        assert_eq!(
            merkle_root(b"ab", 1),
            "62af5c3cb8da3e4f25061e829ebeea5c7513c54949115b1acc225930a90154da"
        );
        assert_eq!(
            merkle_root(b"abc", 1),
            "0bdf27bf7ec894ca7cadfe491ec1a3ece840f117989e8c5e9bd7086467bf6c38"
        );
        assert_eq!(merkle_root(b"", 64), "0".repeat(64));
    }
}
