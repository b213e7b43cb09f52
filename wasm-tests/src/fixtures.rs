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
    let mut p = golden_signals(shard, "0.1");
    p.sig = sign_hmac(signing_payload(&p).as_bytes(), key.as_bytes());
    to_json(&p)
}

/// Golden case 1's signals for shard `shard`, with the derived pcs_id, unsigned.
fn golden_signals(shard: &str, version: &str) -> Pcs {
    let mut p = Pcs {
        schema: "fractal-lba-kakeya".into(),
        version: version.into(),
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
    p
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

/// Ed25519 seed the test and benchmark bundles are signed with.
pub const BUNDLE_SEED: [u8; 32] = [42; 32];

/// Standard base64 of the Ed25519 public key of `seed` (e.g. [`BUNDLE_SEED`]).
pub fn bundle_public_key(seed: &[u8; 32]) -> String {
    kakeya_core::signature::ed25519_public_b64(seed)
}

/// A logistic model of schema `hrs-features-v1` whose decision value is
/// `intercept + Σ weight·feature` (mean 0, std 1) and whose calibrated risk is
/// `sigmoid(decision)` (Platt A = −1, B = 0). Escalates at `escalate`.
pub fn hrs_model(
    weights: &[(&str, f64)],
    intercept: f64,
    escalate: f64,
) -> kakeya_core::model::HrsModel {
    use kakeya_core::features::{TenantStats, FEATURE_NAMES, SCHEMA_VERSION};
    use kakeya_core::model::{HrsModel, Platt, Thresholds, TrainingMeta, KIND_LOGISTIC};
    let n = FEATURE_NAMES.len();
    let mut w = vec![0.0; n];
    for (name, v) in weights {
        if let Some(i) = FEATURE_NAMES.iter().position(|f| f == name) {
            w[i] = *v;
        }
    }
    HrsModel {
        kind: KIND_LOGISTIC.into(),
        schema_version: SCHEMA_VERSION.into(),
        feature_names: FEATURE_NAMES.iter().map(|s| s.to_string()).collect(),
        mean: vec![0.0; n],
        std: vec![1.0; n],
        weights: w,
        intercept,
        platt: Platt { a: -1.0, b: 0.0 },
        thresholds: Thresholds { escalate },
        tenant: TenantStats::fresh(),
        training: TrainingMeta {
            seed: 1,
            rows: 100,
            dataset_sha256: "00".into(),
            recipe_version: "text-pcs-v1".into(),
            l2: 1.0,
            cv_metrics: json!({}),
        },
    }
}

/// Risk driven by `token_coverage` alone: `sigmoid(5 − 10·coverage)`; grounded answers score
/// low, unsupported ones high (escalation at 0.5).
pub fn coverage_model() -> kakeya_core::model::HrsModel {
    hrs_model(&[("token_coverage", -10.0)], 5.0, 0.5)
}

/// A bundle of `version` with `champion` and no challenger.
pub fn bundle(
    version: u64,
    champion: impl Into<kakeya_core::model::Model>,
) -> kakeya_core::bundle::Bundle {
    kakeya_core::bundle::Bundle {
        format: kakeya_core::bundle::BUNDLE_FORMAT.into(),
        version,
        created_at_ms: 1_700_000_000_000,
        champion: champion.into(),
        challenger: None,
        challenger_weight: 0.0,
        canary: None,
        tenant_stats: Default::default(),
        policy: Default::default(),
        ensemble: Default::default(),
        budgets: Default::default(),
        task_models: Default::default(),
        upstreams: Default::default(),
        anomaly: Default::default(),
    }
}

/// Gate configuration: HMAC `testsecret` keyring plus a bundle source trusting `keys`.
pub fn bundle_config(keys: &[String], failure_mode: &str, poll_interval_ms: u64) -> String {
    json!({
        "keyring": {"global": {"alg": "hmac", "keys": [KEY]}},
        "bundle": {
            "cluster": "kakeya_admin",
            "authority": "kakeya-control-plane",
            "path": "/v1/bundles/current",
            "poll_interval_ms": poll_interval_ms,
            "timeout_ms": 500,
            "public_keys": keys,
            "failure_mode": failure_mode,
        }
    })
    .to_string()
}

/// Grounded evidence: the response repeats the context.
pub fn grounded_evidence() -> kakeya_core::evidence::Evidence {
    kakeya_core::evidence::Evidence {
        question: "Who wrote the first computer program?".into(),
        context: "Ada Lovelace wrote the first computer program in 1843 for the Analytical Engine."
            .into(),
        citations: Vec::new(),
        response: "Ada Lovelace wrote the first computer program for the Analytical Engine.".into(),
        task: None,
    }
}

/// Unsupported evidence: nothing of the response is in the context.
pub fn unsupported_evidence() -> kakeya_core::evidence::Evidence {
    kakeya_core::evidence::Evidence {
        question: "Who wrote the first computer program?".into(),
        context: "Ada Lovelace wrote the first computer program in 1843 for the Analytical Engine."
            .into(),
        citations: Vec::new(),
        response: "Grace Hopper invented quantum telescopes on Mars during 1999.".into(),
        task: None,
    }
}

/// About `bytes` of evidence (context ≈ 3/4, response ≈ 1/4), deterministic.
pub fn evidence_of_size(bytes: usize) -> kakeya_core::evidence::Evidence {
    const WORDS: [&str; 16] = [
        "engine",
        "program",
        "Lovelace",
        "1843",
        "analytical",
        "memory",
        "card",
        "punched",
        "Babbage",
        "numbers",
        "Bernoulli",
        "computation",
        "loop",
        "notes",
        "table",
        "machine",
    ];
    let text = |n: usize, salt: usize| {
        let mut s = String::with_capacity(n + 16);
        let mut i = salt;
        while s.len() < n {
            s.push_str(WORDS[(i * 7 + salt) % WORDS.len()]);
            s.push(' ');
            i += 1;
        }
        s
    };
    kakeya_core::evidence::Evidence {
        question: "What did Ada Lovelace compute with the Analytical Engine?".into(),
        context: text(bytes * 3 / 4, 1),
        citations: Vec::new(),
        response: text(bytes / 4, 3),
        task: None,
    }
}

/// The accepted PCS of [`signed_pcs`] (shard `shard`) as PCS v0.2 carrying `evidence`, bound by
/// `evidence_sha256` (or by `bind` when given: `Some("")` leaves it unbound) and signed with
/// `key`.
pub fn signed_pcs_with_evidence(
    shard: &str,
    key: &str,
    evidence: &kakeya_core::evidence::Evidence,
    bind: Option<&str>,
) -> Value {
    let mut p = golden_signals(shard, "0.2");
    p.evidence_sha256 = match bind {
        Some(s) => s.to_string(),
        None => kakeya_core::evidence::evidence_sha256(evidence),
    };
    // pcs-id-v2: the identity covers the evidence hash.
    p.pcs_id = kakeya_core::ids::expected_pcs_id(&p);
    p.sig = sign_hmac(signing_payload(&p).as_bytes(), key.as_bytes());
    let mut v = to_json(&p);
    if !p.evidence_sha256.is_empty() {
        v["evidence_sha256"] = json!(p.evidence_sha256);
    }
    v["evidence"] = serde_json::to_value(evidence).unwrap_or(Value::Null);
    v
}
