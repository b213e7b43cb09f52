//! The canary arm of a bundle: its split, stickiness, the bounds of its weight, the byte
//! compatibility of bundles without one, and how it composes with the challenger split.

use super::tests::{bundle, keys, SEED};
use super::*;
use crate::model::tests::tiny_model;
use crate::verify::{verify, VerifyParams};
use proptest::prelude::*;

/// A model other than the champion (another intercept, so another version).
fn canary_model() -> Model {
    let mut m = tiny_model();
    m.intercept = -0.25;
    m.into()
}

fn with_canary(weight: f64, key: ArmKey) -> Bundle {
    let mut b = bundle();
    b.canary = Some(Canary {
        model: canary_model(),
        weight,
        key,
    });
    b
}

fn tenants(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("tenant-{i}")).collect()
}

/// Issue 7: the canary's consistent-hash split is within 0.5 percentage points of its weight
/// over 100,000 tenants (and over 100,000 requests of one tenant, keyed by request).
#[test]
fn canary_split_is_within_half_a_point_over_100000_units() {
    let ts = tenants(100_000);
    let ids: Vec<String> = (0..100_000).map(|i| format!("pcs-{i:06}")).collect();
    let mut worst = 0.0_f64;
    for w in [0.01, 0.05, 0.1, 0.25, 0.3, 0.5, 0.75, 0.9, 0.99] {
        let b = Scorer::new(with_canary(w, ArmKey::Tenant));
        let n = ts.iter().filter(|t| b.arm(t, "p") == Arm::Canary).count();
        let share = n as f64 / ts.len() as f64;
        assert!((share - w).abs() < 0.005, "tenants at {w}: {share}");
        worst = worst.max((share - w).abs());
        let b = Scorer::new(with_canary(w, ArmKey::Request));
        let n = ids
            .iter()
            .filter(|id| b.arm("default", id) == Arm::Canary)
            .count();
        let share = n as f64 / ids.len() as f64;
        assert!((share - w).abs() < 0.005, "requests at {w}: {share}");
        worst = worst.max((share - w).abs());
    }
    eprintln!("largest |share − weight| of the canary over 100,000 units: {worst:.5}");
}

/// Sticky: keyed by tenant, a tenant's arm depends neither on the PCS id nor on anything else
/// that changes between bundles (version, time, statistics); raising the weight only adds
/// tenants; keyed by request, one tenant's PCS split and each PCS stays on its arm.
#[test]
fn canary_assignment_is_sticky_and_monotone_in_the_weight() {
    let ts = tenants(20_000);
    let b = with_canary(0.3, ArmKey::Tenant);
    let version = canary_model().version();
    let mut later = b.clone();
    later.version = 99;
    later.created_at_ms = 12_345;
    later
        .tenant_stats
        .insert("tenant-7".into(), crate::features::TenantStats::fresh());
    let (scorer, later) = (Scorer::new(b.clone()), Scorer::new(later));
    for t in &ts {
        let arm = scorer.arm(t, "p");
        assert_eq!(
            arm == Arm::Canary,
            canary_bucket(&version, &[t]) < 0.3,
            "{t}"
        );
        assert_eq!(scorer.arm(t, "q"), arm, "{t}: keyed by tenant");
        assert_eq!(later.arm(t, "p"), arm, "{t} flipped between bundles");
        assert_eq!(b.arm(t, "p"), arm, "Bundle::arm and Scorer::arm agree");
    }
    let on = |w: f64| {
        let s = Scorer::new(with_canary(w, ArmKey::Tenant));
        ts.iter()
            .map(|t| s.arm(t, "") == Arm::Canary)
            .collect::<Vec<_>>()
    };
    let steps = [0.05, 0.1, 0.25, 0.5, 1.0].map(on);
    for pair in steps.windows(2) {
        assert!(
            pair[0].iter().zip(&pair[1]).all(|(a, b)| !a || *b),
            "a tenant on the canary at a step left it at the next"
        );
    }
    // Keyed by request: one tenant splits, each PCS is stable.
    let r = Scorer::new(with_canary(0.5, ArmKey::Request));
    let arms: std::collections::BTreeSet<&str> = (0..200)
        .map(|i| {
            let id = format!("p{i}");
            let arm = r.arm("default", &id);
            assert!((0..3).all(|_| r.arm("default", &id) == arm));
            assert_eq!(
                arm == Arm::Canary,
                canary_bucket(&version, &["default", "/", &id]) < 0.5
            );
            arm.as_str()
        })
        .collect();
    assert_eq!(arms.len(), 2, "both arms among 200 requests of one tenant");
}

#[test]
fn weight_zero_is_never_and_one_is_always_even_over_a_full_challenger() {
    let ts = tenants(5_000);
    for key in [ArmKey::Tenant, ArmKey::Request] {
        let mut b = with_canary(0.0, key);
        b.challenger = Some(tiny_model().into());
        b.challenger_weight = 1.0;
        let s = Scorer::new(b.clone());
        assert!(ts.iter().all(|t| s.arm(t, t) == Arm::Challenger));
        b.canary.as_mut().unwrap().weight = 1.0;
        let s = Scorer::new(b);
        assert!(ts.iter().all(|t| s.arm(t, t) == Arm::Canary));
    }
}

/// The canary takes its share first; the challenger split of the remaining units is exactly
/// the split without a canary (its hash is unchanged), so a tenant off the canary keeps its
/// challenger/champion arm, and the canary's hash is independent of the challenger's.
#[test]
fn the_challenger_splits_what_the_canary_leaves() {
    let ts = tenants(100_000);
    for experiment in [None, Some("ab-x-1".to_string())] {
        let mut plain = bundle();
        plain.challenger = Some(tiny_model().into());
        plain.challenger_weight = 0.5;
        plain.policy.arm_key = ArmKey::Tenant;
        plain.policy.experiment = experiment.clone();
        let mut b = plain.clone();
        b.canary = with_canary(0.3, ArmKey::Tenant).canary;
        let (plain, b) = (Scorer::new(plain), Scorer::new(b));
        let mut counts = BTreeMap::<&str, usize>::new();
        let mut canary_and_treated = 0usize;
        for t in &ts {
            let arm = b.arm(t, "");
            *counts.entry(arm.as_str()).or_default() += 1;
            if arm == Arm::Canary {
                canary_and_treated += usize::from(plain.arm(t, "") == Arm::Challenger);
            } else {
                assert_eq!(arm, plain.arm(t, ""), "{t} ({experiment:?})");
            }
        }
        let share = |arm: &str| counts.get(arm).copied().unwrap_or(0) as f64 / ts.len() as f64;
        assert!((share("canary") - 0.3).abs() < 0.005, "{counts:?}");
        assert!((share("challenger") - 0.35).abs() < 0.005, "{counts:?}");
        assert!((share("champion") - 0.35).abs() < 0.005, "{counts:?}");
        // Independent hashes: half the canary's tenants would have been treated.
        let overlap = canary_and_treated as f64 / ts.len() as f64;
        assert!((overlap - 0.15).abs() < 0.005, "{overlap}");
    }
}

/// Successive canaries (other versions) fall on independent tenants.
#[test]
fn canaries_of_other_versions_fall_on_other_tenants() {
    let ts = tenants(50_000);
    let a = Scorer::new(with_canary(0.2, ArmKey::Tenant));
    let mut other = with_canary(0.2, ArmKey::Tenant);
    let mut m = tiny_model();
    m.intercept = 0.75;
    other.canary.as_mut().unwrap().model = m.into();
    let other = Scorer::new(other);
    let both = ts
        .iter()
        .filter(|t| a.arm(t, "") == Arm::Canary && other.arm(t, "") == Arm::Canary)
        .count() as f64
        / ts.len() as f64;
    assert!((both - 0.04).abs() < 0.005, "{both}");
}

#[test]
fn bad_canary_weights_and_models_are_refused() {
    for bad in [
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        -0.01,
        1.000_001,
        -1.0,
        2.0,
    ] {
        let b = with_canary(bad, ArmKey::Tenant);
        assert_eq!(b.validate(), Err(BundleError::CanaryWeight), "{bad}");
        let s = b.sign(&SEED);
        assert!(
            verify_bundle(&s.bytes, &s.sha256, &s.signature_b64, &keys()).is_err(),
            "{bad}"
        );
    }
    for ok in [0.0, -0.0, 1e-9, 0.5, 1.0] {
        assert_eq!(with_canary(ok, ArmKey::Tenant).validate(), Ok(()), "{ok}");
    }
    // A canary model this build cannot score is refused like the others.
    let mut b = with_canary(0.5, ArmKey::Tenant);
    if let Some(Canary {
        model: Model::Logistic(m),
        ..
    }) = &mut b.canary
    {
        m.schema_version = "hrs-features-v0".into();
    }
    assert!(matches!(b.validate(), Err(BundleError::Model("canary", _))));
    // Hostile JSON: a weight as a string, an unknown key, an unknown arm key.
    let good = String::from_utf8(with_canary(0.5, ArmKey::Tenant).canonical_bytes()).unwrap();
    for bad in [
        good.replace(r#""weight":0.5"#, r#""weight":"0.5""#),
        good.replace(r#""weight":0.5"#, r#""weight":0.5,"salt":"x""#),
        good.replace(r#""key":"tenant""#, r#""key":"Tenant""#),
        good.replace(r#""weight":0.5"#, r#""weight":null"#),
    ] {
        assert_ne!(bad, good);
        assert!(serde_json::from_str::<Bundle>(&bad).is_err(), "{bad}");
    }
}

/// Bundles without a canary (every bundle before it existed) keep their exact bytes: the keys
/// are the old ones, in the old order, and they parse and re-serialise identically; a canary
/// without `key` reads as keyed by tenant; a bundle with one signs and verifies.
#[test]
fn bundles_without_a_canary_keep_their_bytes() {
    let mut b = bundle();
    b.challenger = Some(tiny_model().into());
    b.challenger_weight = 0.3;
    let bytes = b.canonical_bytes();
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let keys_of: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    let mut sorted = keys_of.clone();
    sorted.sort_unstable();
    let mut old = [
        "format",
        "version",
        "created_at_ms",
        "champion",
        "challenger",
        "challenger_weight",
        "tenant_stats",
        "policy",
    ];
    old.sort_unstable();
    assert_eq!(sorted, old);
    let text = String::from_utf8(bytes.clone()).unwrap();
    assert!(!text.contains("canary"), "{text}");
    // Field order is the struct's: the canary slot sits between challenger_weight and
    // tenant_stats, and absent it the text is `…"challenger_weight":0.3,"tenant_stats":…`.
    assert!(
        text.contains(r#""challenger_weight":0.3,"tenant_stats":{}"#),
        "{text}"
    );
    let parsed: Bundle = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(parsed, b);
    assert_eq!(parsed.canonical_bytes(), bytes);
    assert_eq!(parsed.canary, None);
    // With a canary: written, signed, verified, read back.
    let c = with_canary(0.25, ArmKey::Request);
    let s = c.sign(&SEED);
    let back = verify_bundle(&s.bytes, &s.sha256, &s.signature_b64, &keys()).unwrap();
    assert_eq!(back, c);
    let text = String::from_utf8(s.bytes).unwrap();
    assert!(text.contains(r#""weight":0.25,"key":"request"}"#), "{text}");
    // `key` absent: tenant.
    let no_key = text.replace(r#","key":"request""#, "");
    let parsed: Bundle = serde_json::from_str(&no_key).unwrap();
    assert_eq!(parsed.canary.unwrap().key, ArmKey::Tenant);
}

/// Scoring goes through the canary's model, with its version, and the Scorer agrees with the
/// Bundle request by request.
#[test]
fn the_canary_scores_with_its_model_and_version() {
    let mut p = crate::pcs::parse(include_bytes!("../tests/data/pcs_tiny_case_1.json")).unwrap();
    let o = verify(&p, &VerifyParams::default());
    let mut b = with_canary(0.5, ArmKey::Request);
    b.policy.score_without_evidence = true;
    b.challenger = Some(tiny_model().into());
    b.challenger_weight = 0.5;
    let scorer = Scorer::new(b.clone());
    let canary_version = canary_model().version();
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..60 {
        p.pcs_id = format!("pcs-{i}");
        let r = scorer.assess("default", &p, &o, None).unwrap();
        assert_eq!(Some(&r), b.assess("default", &p, &o, None).as_ref());
        assert_eq!(r.arm, scorer.arm("default", &p.pcs_id));
        let expected = b.model(r.arm).version();
        assert_eq!(r.model_version, expected);
        if r.arm == Arm::Canary {
            assert_eq!(r.model_version, canary_version);
        }
        seen.insert(r.arm.as_str());
    }
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert_eq!(Arm::Canary.as_str(), "canary");
    assert_eq!(serde_json::to_string(&Arm::Canary).unwrap(), r#""canary""#);
}

proptest! {
    /// For any weight and tenant: on the canary exactly when its salted bucket is below the
    /// weight, and never off it at a larger weight.
    #[test]
    fn canary_arm_is_the_bucket_test(w in 0.0f64..=1.0, dw in 0.0f64..=1.0, t in "[A-Za-z0-9_-]{1,64}") {
        let b = Scorer::new(with_canary(w, ArmKey::Tenant));
        let v = canary_model().version();
        let on = b.arm(&t, "x") == Arm::Canary;
        prop_assert_eq!(on, canary_bucket(&v, &[&t]) < w);
        let higher = Scorer::new(with_canary((w + dw).min(1.0), ArmKey::Tenant));
        prop_assert!(!on || higher.arm(&t, "y") == Arm::Canary);
    }
}

/// Upstream routes (issue 7): the share of tenants on a route's canary cluster is within half a
/// point of its weight, a tenant stays on it as the weight rises, other routes and bundles
/// without the route send everything to stable, and a bundle without upstreams keeps its bytes.
#[test]
fn upstream_assignment_is_sticky_and_follows_the_weight() {
    use crate::upstream::{UpstreamArm, UpstreamCanary, UpstreamKey};
    let ts = tenants(20_000);
    let plain = bundle();
    assert!(!String::from_utf8(plain.canonical_bytes())
        .unwrap()
        .contains("upstreams"));
    let at = |w: f64, key: UpstreamKey| {
        let mut b = bundle();
        b.upstreams.0.insert(
            "agent".into(),
            UpstreamCanary {
                canary_weight: w,
                key,
                stable_cluster: UpstreamArm::Stable,
            },
        );
        b.validate().unwrap();
        b
    };
    let mut before: Vec<&String> = Vec::new();
    for w in [0.05, 0.1, 0.25, 0.5, 1.0] {
        let b = at(w, UpstreamKey::Tenant);
        let on: Vec<&String> = ts
            .iter()
            .filter(|t| b.upstream_arm("agent", t, "rid") == UpstreamArm::Canary)
            .collect();
        let share = on.len() as f64 / ts.len() as f64;
        assert!((share - w).abs() < 0.005, "{w}: {share}");
        assert!(before.iter().all(|t| on.contains(t)), "sticky at {w}");
        // Tenant key: the request id does not matter; another route is stable.
        assert!(on
            .iter()
            .all(|t| b.upstream_arm("agent", t, "other-id") == UpstreamArm::Canary));
        assert!(ts
            .iter()
            .all(|t| b.upstream_arm("other", t, "rid") == UpstreamArm::Stable));
        before = on;
    }
    assert!(ts
        .iter()
        .all(|t| plain.upstream_arm("agent", t, "rid") == UpstreamArm::Stable));
    // Request key: one tenant's requests split by the weight.
    let b = at(0.25, UpstreamKey::Request);
    let n = (0..20_000)
        .filter(|i| b.upstream_arm("agent", "t", &format!("r{i}")) == UpstreamArm::Canary)
        .count();
    assert!((n as f64 / 20_000.0 - 0.25).abs() < 0.01, "{n}");
    // A weight out of range is refused.
    assert!(at(0.5, UpstreamKey::Tenant).validate().is_ok());
    let mut bad = bundle();
    bad.upstreams.0.insert(
        "agent".into(),
        UpstreamCanary {
            canary_weight: f64::NAN,
            key: UpstreamKey::Tenant,
            stable_cluster: UpstreamArm::Stable,
        },
    );
    assert!(bad.validate().is_err());
    // After a promotion the canary cluster is the route's stable one: at weight 0 every
    // tenant goes to it; a next canary at 25 % takes the same tenants a first one would, on
    // the other cluster.
    let mut promoted = bundle();
    let swapped = |w: f64| UpstreamCanary {
        canary_weight: w,
        key: UpstreamKey::Tenant,
        stable_cluster: UpstreamArm::Canary,
    };
    promoted.upstreams.0.insert("agent".into(), swapped(0.0));
    promoted.validate().unwrap();
    assert!(ts
        .iter()
        .all(|t| promoted.upstream_arm("agent", t, "rid") == UpstreamArm::Canary));
    let first = at(0.25, UpstreamKey::Tenant);
    promoted.upstreams.0.insert("agent".into(), swapped(0.25));
    assert!(ts.iter().all(|t| {
        promoted.upstream_arm("agent", t, "rid") == first.upstream_arm("agent", t, "rid").other()
    }));
}
