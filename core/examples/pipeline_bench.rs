//! Time per stage of the gate's body pipeline (parse, signature, evidence binding, verify,
//! features, the whole `pipeline::on_body_now`) for the two bodies of the filter-floor benchmark
//! (docs/BENCHMARKS.md): the golden PCS v0.1 and a PCS v0.2 with about 2 KB of evidence, signed
//! with HMAC `testsecret`. Natively, or as a wasm32-wasip1 module under Node's V8 (the engine
//! Envoy embeds), which is where the filter's guest time goes:
//!
//! ```sh
//! cargo build -p kakeya-core --example pipeline_bench --target wasm32-wasip1 --profile wasm
//! node core/examples/wasi-run.mjs $CARGO_TARGET_DIR/wasm32-wasip1/wasm/examples/pipeline_bench.wasm
//! ```
//!
//! Each stage is timed on its own with the monotonic clock, `REPS` times after `WARMUP` calls;
//! the table gives the median and the minimum (the cost without preemption) in µs. The stages run
//! on the same parsed PCS as the pipeline would, so their sum is close to the whole.

use kakeya_core::canonical::signing_payload;
use kakeya_core::evidence::{bound_evidence, canonical_evidence, evidence_sha256, Evidence};
use kakeya_core::features::{features, PcsSignals, TenantStats};
use kakeya_core::pipeline::{on_body_now, ClockHost};
use kakeya_core::signature::sign_hmac;
use kakeya_core::{parse, verify, Gate};
use std::hint::black_box;
use std::time::Instant;

const WARMUP: usize = 300;
const REPS: usize = 3000;
const KEY: &str = "testsecret";
const GOLDEN: &[u8] = include_bytes!("../tests/data/pcs_tiny_case_1.json");

/// About `bytes` of evidence text (question, context, response), words of the bench fixture.
fn evidence(bytes: usize) -> Evidence {
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
        let mut s = String::new();
        let mut i = salt;
        while s.len() < n {
            s.push_str(
                WORDS
                    .get((i * 7 + salt) % WORDS.len())
                    .copied()
                    .unwrap_or("x"),
            );
            s.push(' ');
            i += 1;
        }
        s
    };
    Evidence {
        question: text(bytes / 8, 1),
        context: text(bytes / 2, 2),
        citations: Vec::new(),
        response: text(bytes * 3 / 8, 3),
        task: None,
    }
}

/// The golden PCS with `ev` bound and signed.
fn v02_body(ev: &Evidence) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    let mut pcs = parse(GOLDEN)?;
    pcs.evidence_sha256 = evidence_sha256(ev);
    let sig = sign_hmac(signing_payload(&pcs).as_bytes(), KEY.as_bytes());
    let mut v: serde_json::Value = serde_json::from_slice(GOLDEN)?;
    let obj = v.as_object_mut().ok_or("the golden PCS is not an object")?;
    obj.insert("evidence".into(), serde_json::to_value(ev)?);
    obj.insert("evidence_sha256".into(), pcs.evidence_sha256.clone().into());
    obj.insert("sig".into(), sig.into());
    Ok(serde_json::to_vec(&v)?)
}

/// A bundle whose champion is a logistic model of every feature (weights 0.1, intercept −1):
/// the scoring cost is the features' (the model is one dot product whatever its weights).
fn bundle() -> kakeya_core::bundle::Bundle {
    use kakeya_core::features::{FEATURE_NAMES, SCHEMA_VERSION};
    use kakeya_core::model::{HrsModel, Platt, Thresholds, TrainingMeta, KIND_LOGISTIC};
    let n = FEATURE_NAMES.len();
    let model = HrsModel {
        kind: KIND_LOGISTIC.into(),
        schema_version: SCHEMA_VERSION.into(),
        feature_names: FEATURE_NAMES.iter().map(|s| s.to_string()).collect(),
        mean: vec![0.0; n],
        std: vec![1.0; n],
        weights: vec![0.1; n],
        intercept: -1.0,
        platt: Platt { a: -1.0, b: 0.0 },
        thresholds: Thresholds { escalate: 0.5 },
        tenant: TenantStats::fresh(),
        training: TrainingMeta {
            seed: 1,
            rows: 100,
            dataset_sha256: "00".into(),
            recipe_version: "text-pcs-v1".into(),
            l2: 1.0,
            cv_metrics: serde_json::json!({}),
        },
    };
    kakeya_core::bundle::Bundle {
        format: kakeya_core::bundle::BUNDLE_FORMAT.into(),
        version: 1,
        created_at_ms: 1_700_000_000_000,
        champion: model.into(),
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

/// Median and minimum of `f`'s time, µs.
fn time<T>(mut f: impl FnMut() -> T) -> (f64, f64) {
    for _ in 0..WARMUP {
        black_box(f());
    }
    let mut ns: Vec<u128> = (0..REPS)
        .map(|_| {
            let t = Instant::now();
            black_box(f());
            t.elapsed().as_nanos()
        })
        .collect();
    ns.sort_unstable();
    let us = |i: usize| ns.get(i).copied().unwrap_or(0) as f64 / 1e3;
    (us(ns.len() / 2), us(0))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let gate = Gate::from_json(br#"{"keyring":{"global":{"alg":"hmac","keys":["testsecret"]}}}"#)?;
    let verifier = gate.keyring.verifier_for("default")?;
    // The same keyring with a bundle source, and a scorer: the scored path of the v0.2 body.
    let bundle_key = kakeya_core::signature::ed25519_public_b64(&[42; 32]);
    let scoring_gate = Gate::from_json(
        serde_json::json!({
            "keyring": {"global": {"alg": "hmac", "keys": [KEY]}},
            "bundle": {"cluster": "kakeya_admin", "public_keys": [bundle_key]},
        })
        .to_string()
        .as_bytes(),
    )?;
    let scorer = kakeya_core::bundle::Scorer::new(bundle());
    let ev = evidence(2048);
    let bodies = [
        ("v0.1 golden", GOLDEN.to_vec()),
        ("v0.2 2 KB evidence", v02_body(&ev)?),
    ];
    println!("| stage | body | median µs | min µs |\n|---|---|---|---|");
    for (name, body) in &bodies {
        let pcs = parse(body)?;
        verifier.verify(&pcs)?;
        bound_evidence(&pcs)?;
        let outcome = verify(&pcs, &gate.verify);
        let tenant = TenantStats::fresh();
        let mut rows: Vec<(&str, (f64, f64))> = vec![
            ("parse", time(|| parse(body))),
            ("signature", time(|| verifier.verify(&pcs))),
            ("binding", time(|| bound_evidence(&pcs).is_ok())),
            (
                "binding: canonical text",
                time(|| pcs.evidence.as_ref().map(canonical_evidence)),
            ),
            ("signature: payload", time(|| signing_payload(&pcs))),
            ("verify", time(|| verify(&pcs, &gate.verify))),
        ];
        if pcs.evidence.is_some() {
            rows.push((
                "features",
                time(|| {
                    let s = PcsSignals::from_verified(&pcs, outcome.result.recomputed_d_hat);
                    features(&s, pcs.evidence.as_ref(), &tenant)
                }),
            ));
        }
        let mut clock = || 0u64;
        rows.push((
            "on_body_now (no bundle)",
            time(|| on_body_now("default", body, &gate, None, &mut ClockHost(&mut clock))),
        ));
        if pcs.evidence.is_some() {
            rows.push((
                "on_body_now (scored)",
                time(|| {
                    on_body_now(
                        "default",
                        body,
                        &scoring_gate,
                        Some(&scorer),
                        &mut ClockHost(&mut clock),
                    )
                }),
            ));
        }
        for (stage, (med, min)) in rows {
            println!("| {stage} | {name} | {med:.2} | {min:.2} |");
        }
    }
    Ok(())
}
