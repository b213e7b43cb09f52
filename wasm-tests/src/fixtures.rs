//! Signed PCS bodies for tests and benchmarks, built with kakeya-core's own signing helpers.

use kakeya_core::canonical::signing_payload;
use kakeya_core::ids::derive_pcs_id;
use kakeya_core::signature::sign_hmac;
use kakeya_core::Pcs;
use serde_json::{json, Value};

/// The two golden PCS files of the reference system (HMAC key `testsecret`).
pub const GOLDEN: [&str; 2] = [
    include_str!("../../core/tests/data/pcs_tiny_case_1.json"),
    include_str!("../../core/tests/data/pcs_tiny_case_2.json"),
];

/// HMAC key of the golden vectors.
pub const KEY: &str = "testsecret";

/// An accepted PCS (golden case 1's signals) for shard `shard`, with a correct pcs_id, signed
/// with `key`. Different shards give different pcs_ids.
pub fn signed_pcs(shard: &str, key: &str) -> Value {
    let mut p = Pcs {
        schema: "fractal-lba-kakeya".into(),
        version: "0.1".into(),
        shard_id: shard.into(),
        epoch: 1,
        merkle_root: "e966b52c992aefad3c3d0196db02554f30d10d55e8a6e5e3038f88e79e414112".into(),
        scales: vec![2, 4, 8, 16],
        n_j: [("2", 5), ("4", 10), ("8", 13), ("16", 15)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        coh_star: 0.066666667,
        d_hat: 0.528320834,
        r: 0.318421053,
        regime: "mixed".into(),
        budget: 0.317807017,
        ..Pcs::default()
    };
    p.pcs_id = derive_pcs_id(&p.merkle_root, p.epoch, &p.shard_id);
    p.sig = sign_hmac(signing_payload(&p).as_bytes(), key.as_bytes());
    to_json(&p)
}

/// The JSON body of a PCS (wire key names).
pub fn to_json(p: &Pcs) -> Value {
    json!({
        "pcs_id": p.pcs_id, "schema": p.schema, "version": p.version, "shard_id": p.shard_id,
        "epoch": p.epoch, "attempt": 1, "seed": 42, "scales": p.scales, "N_j": p.n_j,
        "coh_star": p.coh_star, "v_star": [0.6, -0.17, 0.78], "D_hat": p.d_hat, "r": p.r,
        "regime": p.regime, "budget": p.budget, "merkle_root": p.merkle_root, "sig": p.sig,
        "ft": {"outbox_seq": 0, "degraded": false, "fallbacks": [], "clock_skew_ms": 0},
    })
}
