//! The verify-path test vectors of spec §12 (golden PCS, budget/regime, end-to-end outcomes),
//! plus property tests of the invariants the gate relies on.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use kakeya_core::canonical::signing_payload;
use kakeya_core::ids::derive_pcs_id;
use kakeya_core::signature::{sign_hmac, SigAlg};
use kakeya_core::verify::{budget, classify_regime};
use kakeya_core::{parse, verify, Pcs, Verifier, VerifierConfig, VerifyParams};
use proptest::prelude::*;

const G1: &[u8] = include_bytes!("data/pcs_tiny_case_1.json");
const G2: &[u8] = include_bytes!("data/pcs_tiny_case_2.json");

fn hmac_verifier() -> Verifier {
    Verifier::from_config(&VerifierConfig {
        alg: SigAlg::Hmac,
        keys: vec!["testsecret".into()],
        legacy_prehash: false,
    })
    .unwrap()
}

/// A PCS with a correct pcs_id for the given signals.
fn pcs(
    scales: &[i64],
    counts: &[i64],
    d_hat: f64,
    coh: f64,
    r: f64,
    regime: &str,
    budget: f64,
) -> Pcs {
    let mut p = Pcs {
        schema: "fractal-lba-kakeya".into(),
        version: "0.1".into(),
        shard_id: "shard-001".into(),
        epoch: 1,
        merkle_root: "abc123".into(),
        scales: scales.to_vec(),
        n_j: scales
            .iter()
            .zip(counts)
            .map(|(s, n)| (s.to_string(), *n))
            .collect(),
        d_hat,
        coh_star: coh,
        r,
        regime: regime.into(),
        budget,
        ..Pcs::default()
    };
    p.pcs_id = derive_pcs_id(&p.merkle_root, p.epoch, &p.shard_id);
    p
}

#[test]
fn golden_vectors_verify_to_200() {
    let expected = [
        r#"{"accepted":true,"recomputed_D_hat":0.528320834,"recomputed_budget":0.317807017,"escalated":false}"#,
        r#"{"accepted":true,"recomputed_D_hat":1,"recomputed_budget":0.349073359,"escalated":false}"#,
    ];
    for (g, want) in [G1, G2].iter().zip(expected) {
        let p = parse(g).unwrap();
        hmac_verifier().verify(&p).unwrap();
        let out = verify(&p, &VerifyParams::default());
        assert!(out.cacheable);
        assert_eq!(out.result.status(), 200);
        assert_eq!(out.result.to_json(), want);
    }
}

#[test]
fn budget_and_regime_table() {
    // spec §12.5
    let p = VerifyParams::default();
    let rows: [(f64, f64, f64, f64, &str); 12] = [
        (1.41, 0.73, 0.87, 0.285, "sticky"),
        (0.79, 0.75, 0.50, 0.4, "sticky"),
        (1.3, 0.75, 0.40, 0.43, "sticky"),
        (2.8, 0.30, 0.90, 0.49, "non_sticky"),
        (3.0, 1.0, 0.1, 0.97, "non_sticky"),
        (2.5, 0.70, 0.40, 0.57, "mixed"),
        (1.35, 0.85, 0.65, 0.375, "sticky"),
        (5.0, 1.0, 0.0, 1.0, "non_sticky"),
        (0.0, 0.0, 1.0, 0.1, "mixed"),
        (-1.0, 0.0, 2.0, 0.0, "mixed"),
        (1.5, 0.7, 0.5, 0.39, "sticky"),
        (2.6, 0.7, 0.5, 0.59, "non_sticky"),
    ];
    for (d, c, r, b, regime) in rows {
        assert_eq!(budget(d, c, r, &p), b, "budget({d}, {c}, {r})");
        assert_eq!(classify_regime(d, c, &p), regime, "regime({d}, {c})");
    }
    assert_eq!(classify_regime(2.0, 0.60, &p), "mixed");
}

#[test]
fn end_to_end_outcomes() {
    // spec §12.6
    let p = VerifyParams::default();
    let run = |x: &Pcs| {
        let o = verify(x, &p).result;
        (o.status(), o.to_json())
    };
    let unit = pcs(&[2, 4, 8], &[3, 5, 9], 0.79, 0.75, 0.50, "sticky", 0.35);
    assert_eq!(
        run(&unit),
        (202, r#"{"accepted":true,"recomputed_D_hat":0.79248125,"recomputed_budget":0.4,"reason":"budget deviation: claimed=0.3500, recomputed=0.4000","escalated":true}"#.into())
    );
    let ok = Pcs {
        budget: 0.40,
        ..unit.clone()
    };
    assert_eq!(run(&ok), (200, r#"{"accepted":true,"recomputed_D_hat":0.79248125,"recomputed_budget":0.4,"escalated":false}"#.into()));

    let five = [2, 4, 8, 16, 32];
    let counts = [3, 5, 9, 17, 31];
    let mut openapi = pcs(&five, &counts, 1.35, 0.85, 0.65, "sticky", 0.375);
    openapi.merkle_root = "a".repeat(64);
    openapi.pcs_id = "a7b3c8d9e0f1234567890abcdef12345".into();
    let out = verify(&openapi, &p);
    assert!(!out.cacheable, "a wrong pcs_id must never be cached");
    assert!(out
        .result
        .reason
        .unwrap()
        .starts_with("validation failed: pcs_id mismatch: expected "));
    openapi.pcs_id = derive_pcs_id(&openapi.merkle_root, 1, "shard-001");
    let out = verify(&openapi, &p).result;
    assert_eq!(out.recomputed_d_hat, Some(0.866733469));
    assert_eq!(
        out.reason.as_deref(),
        Some("D_hat out of tolerance: claimed=1.3500, recomputed=0.8667, diff=0.4833 > tol=0.1500")
    );
    assert!(!out.accepted && out.escalated);

    let claude = pcs(&five, &counts, 1.41, 0.73, 0.87, "sticky", 0.42);
    let o = verify(&claude, &p).result;
    assert!(!o.accepted && o.reason.unwrap().contains("diff=0.5433 > tol=0.1500"));
    let o = verify(
        &Pcs {
            d_hat: 0.857,
            ..claude.clone()
        },
        &p,
    )
    .result;
    assert_eq!(
        (o.accepted, o.reason.as_deref()),
        (
            true,
            Some("budget deviation: claimed=0.4200, recomputed=0.2850")
        )
    );
    let good = Pcs {
        d_hat: 0.857,
        budget: 0.285,
        ..claude.clone()
    };
    assert_eq!(
        run(&good),
        (200, r#"{"accepted":true,"recomputed_D_hat":0.866733469,"recomputed_budget":0.285,"escalated":false}"#.into())
    );
    let o = verify(
        &Pcs {
            coh_star: 1.06,
            ..good.clone()
        },
        &p,
    )
    .result;
    assert_eq!(
        o.reason.as_deref(),
        Some("coh_star out of bounds: 1.0600 not in [0, 1.0500]")
    );
    assert_eq!(
        run(&Pcs {
            coh_star: 1.05,
            budget: 0.349,
            ..good.clone()
        })
        .0,
        200
    );
}

#[test]
fn order_of_checks_and_reasons() {
    let p = VerifyParams::default();
    let base = pcs(&[2, 4, 8], &[3, 5, 9], 0.79, 0.75, 0.50, "sticky", 0.4);
    let reason = |x: Pcs| verify(&x, &p).result.reason.unwrap_or_default();
    assert_eq!(
        reason(Pcs {
            pcs_id: String::new(),
            ..base.clone()
        }),
        "validation failed: pcs_id is required"
    );
    assert_eq!(
        reason(Pcs {
            schema: "x".into(),
            ..base.clone()
        }),
        "validation failed: invalid schema: expected fractal-lba-kakeya, got x"
    );
    assert_eq!(
        reason(Pcs {
            scales: vec![],
            ..base.clone()
        }),
        "validation failed: scales cannot be empty"
    );
    assert_eq!(
        reason(Pcs {
            epoch: -1,
            ..base.clone()
        }),
        "validation failed: epoch must be non-negative"
    );
    assert_eq!(
        reason(Pcs {
            scales: vec![0, 2, 4],
            ..base.clone()
        }),
        "D_hat recomputation failed: scale must be at least 1, got 0"
    );
    assert_eq!(
        reason(Pcs {
            regime: "mixed".into(),
            ..base.clone()
        }),
        "regime mismatch: claimed=mixed, expected=sticky"
    );
    // exactly at the tolerance passes (strictly greater fires)
    assert_eq!(
        verify(
            &Pcs {
                d_hat: 0.79248125 + 0.15 - 1e-12,
                budget: 0.4,
                ..base.clone()
            },
            &p
        )
        .result
        .reason,
        None
    );
    // strict r is opt-in
    let wild_r = Pcs {
        r: 1.5,
        budget: budget(0.79, 0.75, 1.5, &p),
        ..base.clone()
    };
    assert_eq!(verify(&wild_r, &p).result.status(), 200);
    let strict = VerifyParams {
        strict_r: true,
        ..p
    };
    assert_eq!(
        verify(&wild_r, &strict).result.reason.as_deref(),
        Some("r out of bounds: 1.5000 not in [0, 1]")
    );
}

#[test]
fn reasons_are_header_safe() {
    let mut x = pcs(&[2, 4], &[3, 7], 1.2, 0.5, 0.5, "mixed", 0.3);
    x.pcs_id = "bogus\r\nx-evil: 1\u{e9}<>".repeat(20);
    let json = verify(&x, &VerifyParams::default()).result.to_json();
    assert!(json.bytes().all(|b| (0x20..0x7f).contains(&b)), "{json}");
    let back: kakeya_core::VerifyResult = serde_json::from_str(&json).unwrap();
    assert!(back.reason.unwrap().contains("bogus\r\nx-evil"));
}

fn arb_pcs() -> impl Strategy<Value = Pcs> {
    (
        "[a-f0-9]{64}",
        0i64..1_000_000,
        "[A-Za-z0-9._:-]{1,24}",
        -10.0f64..10.0,
        -1.0f64..2.0,
        -1.0f64..2.0,
        -1.0f64..2.0,
        proptest::collection::btree_map(1i64..64, 1i64..10_000, 2..6),
    )
        .prop_map(|(merkle, epoch, shard, d_hat, coh, r, b, counts)| {
            let mut p = Pcs {
                schema: "fractal-lba-kakeya".into(),
                version: "0.1".into(),
                shard_id: shard,
                epoch,
                merkle_root: merkle,
                scales: counts.keys().copied().collect(),
                n_j: counts.iter().map(|(s, n)| (s.to_string(), *n)).collect(),
                d_hat,
                coh_star: coh,
                r,
                budget: b,
                regime: "mixed".into(),
                ..Pcs::default()
            };
            p.pcs_id = derive_pcs_id(&p.merkle_root, p.epoch, &p.shard_id);
            p
        })
}

proptest! {
    #[test]
    fn scale_order_does_not_matter(p in arb_pcs(), seed in any::<u64>()) {
        let params = VerifyParams::default();
        let mut shuffled = p.clone();
        let n = shuffled.scales.len();
        shuffled.scales.rotate_left((seed as usize) % n);
        shuffled.scales.reverse();
        prop_assert_eq!(verify(&p, &params), verify(&shuffled, &params));
    }

    #[test]
    fn sign_then_verify_succeeds(mut p in arb_pcs()) {
        p.sig = sign_hmac(signing_payload(&p).as_bytes(), b"testsecret");
        prop_assert!(hmac_verifier().verify(&p).is_ok());
        // and it survives a JSON round trip through the parser (the gate's view)
        let body = serde_json::json!({
            "pcs_id": p.pcs_id, "schema": p.schema, "version": p.version, "shard_id": p.shard_id,
            "epoch": p.epoch, "scales": p.scales, "N_j": p.n_j, "coh_star": p.coh_star,
            "D_hat": p.d_hat, "r": p.r, "regime": p.regime, "budget": p.budget,
            "merkle_root": p.merkle_root, "sig": p.sig,
        });
        let parsed = parse(body.to_string().as_bytes()).unwrap();
        prop_assert!(hmac_verifier().verify(&parsed).is_ok());
    }

    #[test]
    fn flipping_any_signed_field_fails(mut p in arb_pcs(), which in 0usize..8) {
        p.sig = sign_hmac(signing_payload(&p).as_bytes(), b"testsecret");
        match which {
            0 => p.pcs_id.push('0'),
            1 => p.merkle_root.push('0'),
            2 => p.epoch += 1,
            3 => p.shard_id.push('x'),
            4 => p.d_hat += 0.001,
            5 => p.coh_star += 0.001,
            6 => p.r += 0.001,
            _ => p.budget += 0.001,
        }
        prop_assert!(hmac_verifier().verify(&p).is_err());
    }

    #[test]
    fn parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse(&bytes);
    }

    #[test]
    fn verify_result_json_round_trips(p in arb_pcs()) {
        let r = verify(&p, &VerifyParams::default()).result;
        let back: kakeya_core::VerifyResult = serde_json::from_str(&r.to_json()).unwrap();
        prop_assert_eq!(back, r);
    }
}

#[test]
fn risk_fields_follow_the_reference_keys_and_high_risk_escalates() {
    use kakeya_core::bundle::{Arm, Band, Risk};
    let p = parse(G1).unwrap();
    let mut r = verify(&p, &VerifyParams::default()).result;
    let risk = Risk {
        risk: 0.93,
        raw: 0.9,
        band: Band::High,
        escalate: true,
        model_version: "lr-abc".into(),
        arm: Arm::Challenger,
        task: None,
        features: [0.0; kakeya_core::features::N_FEATURES],
    };
    r.apply_risk(&risk, 7);
    assert_eq!(r.status(), 202);
    assert_eq!(
        r.to_json(),
        r#"{"accepted":true,"recomputed_D_hat":0.528320834,"recomputed_budget":0.317807017,"reason":"hallucination risk 0.9300 at or above the escalation threshold (model lr-abc)","escalated":true,"risk":{"score":0.93,"band":"high","model_version":"lr-abc","arm":"challenger","bundle_version":7}}"#
    );
    let back: kakeya_core::VerifyResult = serde_json::from_str(&r.to_json()).unwrap();
    assert_eq!(back, r);
    // A low risk changes nothing but adds the fields.
    let mut ok = verify(&p, &VerifyParams::default()).result;
    ok.apply_risk(
        &Risk {
            risk: 0.1,
            escalate: false,
            band: Band::Low,
            ..risk
        },
        7,
    );
    assert_eq!(ok.status(), 200);
}
