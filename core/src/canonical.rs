//! The canonical signing payload (spec §3.2): the eight signed fields as compact JSON with keys
//! in code-point order, floats rounded with [`round9_py`](crate::numfmt::round9_py) and spelled
//! with Python's `repr`, strings escaped like Python's `json.dumps(ensure_ascii=True)`.
//! These are the bytes the reference agents sign, so the golden signatures verify.

use crate::numfmt::{write_json_string, write_py_repr_round9, JsonEscape};
use crate::pcs::Pcs;
use core::fmt::Write;

/// The signed subset of a PCS, by value.
#[derive(Debug, Clone, PartialEq)]
pub struct SignedFields<'a> {
    pub pcs_id: &'a str,
    pub merkle_root: &'a str,
    pub epoch: i64,
    pub shard_id: &'a str,
    pub d_hat: f64,
    pub coh_star: f64,
    pub r: f64,
    pub budget: f64,
    /// v0.2 evidence binding; part of the payload only when non-empty, so v0.1 payloads are
    /// unchanged.
    pub evidence_sha256: &'a str,
}

impl<'a> From<&'a Pcs> for SignedFields<'a> {
    fn from(p: &'a Pcs) -> Self {
        SignedFields {
            pcs_id: &p.pcs_id,
            merkle_root: &p.merkle_root,
            epoch: p.epoch,
            shard_id: &p.shard_id,
            d_hat: p.d_hat,
            coh_star: p.coh_star,
            r: p.r,
            budget: p.budget,
            evidence_sha256: &p.evidence_sha256,
        }
    }
}

/// The canonical payload bytes of a PCS.
pub fn signing_payload(pcs: &Pcs) -> String {
    payload_of(&SignedFields::from(pcs))
}

/// The canonical payload of the signed fields.
pub fn payload_of(f: &SignedFields<'_>) -> String {
    let mut out = String::with_capacity(256 + f.evidence_sha256.len());
    let float = |out: &mut String, key: &str, x: f64| {
        out.push_str(key);
        write_py_repr_round9(out, x);
    };
    float(&mut out, "{\"D_hat\":", f.d_hat);
    float(&mut out, ",\"budget\":", f.budget);
    float(&mut out, ",\"coh_star\":", f.coh_star);
    let _ = write!(out, ",\"epoch\":{},", f.epoch);
    if !f.evidence_sha256.is_empty() {
        out.push_str("\"evidence_sha256\":");
        write_json_string(&mut out, f.evidence_sha256, JsonEscape::PythonAscii);
        out.push(',');
    }
    out.push_str("\"merkle_root\":");
    write_json_string(&mut out, f.merkle_root, JsonEscape::PythonAscii);
    out.push_str(",\"pcs_id\":");
    write_json_string(&mut out, f.pcs_id, JsonEscape::PythonAscii);
    float(&mut out, ",\"r\":", f.r);
    out.push_str(",\"shard_id\":");
    write_json_string(&mut out, f.shard_id, JsonEscape::PythonAscii);
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::sha256_hex;
    use crate::pcs::parse;

    #[test]
    fn golden_payload_bytes_are_pinned() {
        let p = parse(include_bytes!("../tests/data/pcs_tiny_case_1.json")).unwrap();
        let payload = signing_payload(&p);
        assert_eq!(
            payload,
            "{\"D_hat\":0.528320834,\"budget\":0.317807017,\"coh_star\":0.066666667,\"epoch\":1,\
             \"merkle_root\":\"e966b52c992aefad3c3d0196db02554f30d10d55e8a6e5e3038f88e79e414112\",\
             \"pcs_id\":\"c50bb25a7aff94164147b73c846f0e5e10890d75df204875ca70c448f52c6edf\",\
             \"r\":0.318421053,\"shard_id\":\"test-shard-001\"}"
        );
        assert_eq!(
            sha256_hex(payload.as_bytes()),
            "0d93c78c52abc092e8add45b35ea22ea0b84b53e502bcfe5427dbce52d780008"
        );
        let p2 = parse(include_bytes!("../tests/data/pcs_tiny_case_2.json")).unwrap();
        let payload2 = signing_payload(&p2);
        assert!(payload2.starts_with("{\"D_hat\":1.0,\"budget\":0.349073359,\"coh_star\":0.2,"));
        assert_eq!(
            sha256_hex(payload2.as_bytes()),
            "18d1c25612e705e714d739fbf91345681d0960247a3458df4cbb0ffb5784c176"
        );
    }

    #[test]
    fn evidence_hash_is_signed_in_code_point_order() {
        let mut p = parse(include_bytes!("../tests/data/pcs_tiny_case_1.json")).unwrap();
        p.evidence_sha256 = "ab".repeat(32);
        let payload = signing_payload(&p);
        assert!(payload.contains(&format!(
            "\"epoch\":1,\"evidence_sha256\":\"{}\",\"merkle_root\":",
            "ab".repeat(32)
        )));
    }

    #[test]
    fn signature_test_case_1_payload() {
        // spec §12.2, authoritative form
        let f = SignedFields {
            pcs_id: "sha256_abc123def456",
            merkle_root: "abc123def456789012345678901234567890abcd",
            epoch: 1,
            shard_id: "shard-001",
            d_hat: 1.234567890,
            coh_star: 0.75,
            r: 0.5,
            budget: 0.35,
            evidence_sha256: "",
        };
        assert_eq!(
            payload_of(&f),
            r#"{"D_hat":1.23456789,"budget":0.35,"coh_star":0.75,"epoch":1,"merkle_root":"abc123def456789012345678901234567890abcd","pcs_id":"sha256_abc123def456","r":0.5,"shard_id":"shard-001"}"#
        );
    }
}
