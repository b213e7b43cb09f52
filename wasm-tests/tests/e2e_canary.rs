//! The `canary` alias through real Envoy and the real control plane (issue 7, "what a canary
//! moves", item 1): `kakeya model promote --canary --weight 0.3` makes a second model score
//! about 30 % of 200 tenants, exactly those whose salted hash falls below the weight, each
//! tenant always on the same arm; a weight change through `POST /v1/aliases/canary` reaches the
//! gate within one poll interval and only adds tenants; the decision log and Envoy's per-arm
//! counters carry the arm; after `kakeya model remove-canary` no tenant is on it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kakeya_core::bundle::{canary_bucket, ArmKey};
use kakeya_wasm_tests::scored::{
    kakeya_json, kakeya_ok, multi_tenant_stack, register_coverage_model, submit_scored, Seen,
};
use kakeya_wasm_tests::stack::{call, Stack};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

const POLL_MS: u64 = 500;
const TENANTS: usize = 200;

/// Submissions and the 503s retried on the way.
#[derive(Default)]
struct Traffic {
    seen: Vec<Seen>,
    retried: u32,
}

impl Traffic {
    fn submit(&mut self, stack: &Stack, tenant: &str, shard: &str) -> &Seen {
        let grounded = !self.seen.len().is_multiple_of(3);
        let (s, retried) = submit_scored(stack, tenant, shard, grounded).unwrap();
        self.retried += retried;
        self.seen.push(s);
        self.seen.last().unwrap()
    }

    /// Submits round-robin until an answer comes from bundle `version` (or newer); how long
    /// that took.
    fn until_bundle(&mut self, stack: &Stack, tenants: &[String], version: u64) -> Duration {
        let t0 = Instant::now();
        for n in 0.. {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "bundle {version} never reached the gate"
            );
            let t = &tenants[n % tenants.len()];
            if self
                .submit(stack, t, &format!("wait-{version}-{n}"))
                .bundle_version
                >= version
            {
                return t0.elapsed();
            }
        }
        unreachable!()
    }
}

/// Sum of `kakeya_gate_scored_by_arm_total{arm="<arm>"}` over the tenants, from Envoy's stats.
fn scored_by_arm(stack: &Stack, arm: &str) -> u64 {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(20))
        .build();
    let stats = call(&agent, "GET", &stack.envoy_admin_url("/stats/prometheus"))
        .unwrap()
        .body;
    stats
        .lines()
        .filter(|l| l.starts_with("kakeya_gate_scored_by_arm_total{"))
        .filter(|l| l.contains(&format!("arm=\"{arm}\"")))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<u64>().ok())
        .sum()
}

#[test]
fn the_canary_scores_its_weight_of_tenants_sticky_and_moves_within_a_poll() {
    let tenants: Vec<String> = (0..TENANTS).map(|i| format!("t{i:03}")).collect();
    let stack = multi_tenant_stack(&tenants, POLL_MS).unwrap();
    let champion = stack.current_bundle().unwrap().champion.version();
    // The canary: a coverage-only model, registered and set at 0.3 with the CLI.
    let canary = register_coverage_model(&stack).unwrap();
    let out = kakeya_ok(
        &stack,
        &[
            "model",
            "promote",
            &canary,
            "--canary",
            "--weight",
            "0.3",
            "--comment",
            "step 1",
        ],
    )
    .unwrap();
    eprintln!("{out}");
    let bundle = stack.current_bundle().unwrap();
    let first = bundle.version;
    let c = bundle.canary.clone().unwrap();
    assert_eq!(
        (c.model.version(), c.weight, c.key),
        (canary.clone(), 0.3, ArmKey::Tenant)
    );
    let expected = |t: &str, w: f64| {
        if canary_bucket(&canary, &[t]) < w {
            ("canary", canary.as_str())
        } else {
            ("champion", champion.as_str())
        }
    };

    let mut traffic = Traffic::default();
    traffic.until_bundle(&stack, &tenants, first);
    std::thread::sleep(Duration::from_millis(POLL_MS * 2));
    let mut on_canary = BTreeSet::new();
    for round in 0..2 {
        for t in &tenants {
            let s = traffic.submit(&stack, t, &format!("{t}-a{round}")).clone();
            assert!(s.bundle_version >= first, "{s:?}");
            let (arm, model) = expected(t, 0.3);
            assert_eq!(
                (s.arm.as_str(), s.model_version.as_str()),
                (arm, model),
                "{t}"
            );
            assert_eq!(bundle.arm(t, "").as_str(), arm);
            if arm == "canary" {
                on_canary.insert(t.clone());
            }
        }
    }
    let share = on_canary.len() as f64 / TENANTS as f64;
    eprintln!(
        "canary at 0.3: {} of {TENANTS} tenants ({share:.3})",
        on_canary.len()
    );
    assert!((share - 0.3).abs() < 0.08, "{share}");

    // A weight change through the API: a new bundle, at the gate within one poll interval.
    let t0 = Instant::now();
    let a = stack
        .admin_post(
            "/v1/aliases/canary",
            &json!({"version": canary, "weight": 0.6, "comment": "step 2"}),
        )
        .unwrap();
    assert_eq!(a.status, 200, "{}", a.body);
    let second = a.json()["bundle_version"].as_u64().unwrap();
    let published = t0.elapsed();
    let arrived = traffic.until_bundle(&stack, &tenants, second);
    eprintln!(
        "weight 0.3 → 0.6: published in {published:?}, first answer from it {arrived:?} later \
         (poll interval {POLL_MS} ms)"
    );
    assert!(
        arrived < Duration::from_millis(POLL_MS + 1_000),
        "the new weight took {arrived:?} to reach the gate (poll {POLL_MS} ms)"
    );
    std::thread::sleep(Duration::from_millis(POLL_MS * 2));
    let mut at_06 = 0usize;
    for t in &tenants {
        let s = traffic.submit(&stack, t, &format!("{t}-b")).clone();
        assert!(s.bundle_version >= second, "{s:?}");
        let (arm, model) = expected(t, 0.6);
        assert_eq!(
            (s.arm.as_str(), s.model_version.as_str()),
            (arm, model),
            "{t}"
        );
        assert!(
            arm == "canary" || !on_canary.contains(t),
            "{t} left the canary"
        );
        at_06 += usize::from(arm == "canary");
    }
    eprintln!("canary at 0.6: {at_06} of {TENANTS} tenants");
    assert!((at_06 as f64 / TENANTS as f64 - 0.6).abs() < 0.08);

    // Removal with the CLI: no tenant on the canary once the gate has the bundle.
    kakeya_ok(&stack, &["model", "remove-canary", "--comment", "done"]).unwrap();
    let third = stack.current_bundle().unwrap().version;
    assert!(stack.current_bundle().unwrap().canary.is_none());
    traffic.until_bundle(&stack, &tenants, third);
    std::thread::sleep(Duration::from_millis(POLL_MS * 2));
    for t in &tenants {
        let s = traffic.submit(&stack, t, &format!("{t}-c")).clone();
        assert_eq!(
            (s.arm.as_str(), s.model_version.as_str()),
            ("champion", champion.as_str()),
            "{t}"
        );
    }

    // Every answer matched its bundle's weight; the decision log stored the same arm and model.
    let weight_of = |v: u64| match v {
        v if v < first => 0.0,
        v if v < second => 0.3,
        v if v < third => 0.6,
        _ => 0.0,
    };
    for s in &traffic.seen {
        let (arm, model) = expected(&s.tenant, weight_of(s.bundle_version));
        assert_eq!(
            (s.arm.as_str(), s.model_version.as_str()),
            (arm, model),
            "{s:?}"
        );
    }
    let rows = stack.decisions(None).unwrap();
    let mut per_arm: BTreeMap<String, usize> = BTreeMap::new();
    for r in &rows {
        let (t, v) = (
            r["tenant"].as_str().unwrap(),
            r["bundle_version"].as_u64().unwrap(),
        );
        let (arm, model) = expected(t, weight_of(v));
        assert_eq!(
            (r["arm"].as_str(), r["model_version"].as_str()),
            (Some(arm), Some(model)),
            "{r}"
        );
        *per_arm.entry(arm.to_string()).or_default() += 1;
    }
    assert!(rows.len() >= traffic.seen.len(), "a decision per answer");
    if traffic.retried == 0 {
        assert_eq!(rows.len(), traffic.seen.len(), "one decision per answer");
    }
    // Envoy's per-arm counters: every scored request counted under its arm (a 503 retried
    // after scoring counts in Envoy but not among the answers).
    let seen_canary = traffic.seen.iter().filter(|s| s.arm == "canary").count() as u64;
    let counted = scored_by_arm(&stack, "canary");
    eprintln!(
        "answers on the canary {seen_canary}, Envoy counted {counted}; decisions per arm \
         {per_arm:?}; 503s retried {}",
        traffic.retried
    );
    assert!(counted >= seen_canary && counted <= seen_canary + u64::from(traffic.retried));
    assert!(scored_by_arm(&stack, "champion") > 0);

    // The alias history: the three canary moves, newest first, with their weights.
    let h = kakeya_json(&stack, &["model", "history", "--alias", "canary", "--json"]).unwrap();
    let moves: Vec<(serde_json::Value, serde_json::Value)> = h["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["weight"].clone(), e["comment"].clone()))
        .collect();
    assert_eq!(
        moves,
        [
            (json!(null), json!("done")),
            (json!(0.6), json!("step 2")),
            (json!(0.3), json!("step 1")),
        ]
    );
}
