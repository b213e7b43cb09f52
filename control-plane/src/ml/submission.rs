//! The signed PCS an answer is submitted with: recipe `text-pcs-v1` over the response text,
//! and, with evidence, PCS v0.2 carrying it, bound by the signed `evidence_sha256`. One
//! function for `kakeya pcs build`, `kakeya eval --through` and the end-to-end tests, so what
//! they send is what an agent using the CLI sends.

use super::dataset::Row;
use kakeya_core::evidence::{evidence_sha256, Evidence};
use kakeya_core::pcs_builder::{build, BuildOptions};
use kakeya_core::signature::sign_hmac;
use serde_json::Value;

/// A PCS built from `text`, signed with the HMAC `key` when given (unsigned otherwise); with
/// `evidence` it is v0.2: the evidence rides along and its hash is in the signed payload.
pub fn signed_pcs_json(
    text: &str,
    evidence: Option<&Evidence>,
    opts: &BuildOptions,
    key: Option<&str>,
) -> Value {
    let mut built = build(text, opts);
    if let Some(ev) = evidence {
        built = built.bind_evidence(&evidence_sha256(ev));
    }
    let sig = key.map_or_else(String::new, |k| {
        sign_hmac(built.signing_payload().as_bytes(), k.as_bytes())
    });
    let mut v = built.to_json(&sig);
    if let Some(ev) = evidence {
        v["evidence"] = serde_json::to_value(ev).unwrap_or(Value::Null);
    }
    v
}

impl Row {
    /// The request body of this row as an agent sends it (PCS v0.2 of its response with its
    /// evidence, shard `shard_id`, epoch 0), and that evidence.
    pub fn signed_pcs(&self, shard_id: &str, key: Option<&str>) -> (Vec<u8>, Evidence) {
        let ev = self.evidence();
        let opts = BuildOptions {
            shard_id: shard_id.to_string(),
            epoch: 0,
        };
        let v = signed_pcs_json(&self.response, Some(&ev), &opts, key);
        (v.to_string().into_bytes(), ev)
    }
}
