//! Identity of a PCS: the derived `pcs_id` (spec §2.1) and the producer's Merkle root (spec §2.2).

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

/// `pcs_id = hex(SHA-256(merkle_root | epoch | shard_id))`.
pub fn derive_pcs_id(merkle_root: &str, epoch: i64, shard_id: &str) -> String {
    sha256_hex(format!("{merkle_root}|{epoch}|{shard_id}").as_bytes())
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
            .map(|pair| {
                let left = &pair[0];
                let right = pair.get(1).unwrap_or(left);
                sha256_hex(format!("{left}{right}").as_bytes())
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
