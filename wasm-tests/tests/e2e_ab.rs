//! An A/B experiment through real Envoy and the real control plane: `kakeya hrs ab start`
//! makes a second model the challenger for half of 40 tenants; every answer the gate gives is
//! scored by the arm the experiment's salted hash gives its tenant (the same in every bundle of
//! the experiment), the statistics page counts exactly the answers the clients got, and after
//! `stop` every tenant is back on the champion.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kakeya_core::bundle::experiment_bucket;
use kakeya_wasm_tests::scored::{
    self, multi_tenant_stack, register_coverage_model, submit_scored, Seen,
};
use kakeya_wasm_tests::stack::Stack;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const POLL_MS: u64 = 200;
const TENANTS: usize = 40;

/// [`submit_scored`], which must succeed.
fn submit(stack: &Stack, tenant: &str, shard: &str, grounded: bool) -> Seen {
    submit_scored(stack, tenant, shard, grounded).unwrap().0
}

fn kakeya_json(stack: &Stack, args: &[&str]) -> serde_json::Value {
    scored::kakeya_json(stack, args).unwrap()
}

#[test]
fn experiment_tenants_are_scored_by_their_arm_and_counted() {
    let tenants: Vec<String> = (0..TENANTS).map(|i| format!("t{i:02}")).collect();
    let stack = multi_tenant_stack(&tenants, POLL_MS).unwrap();
    let control = stack.current_bundle().unwrap().champion.version();
    // The treatment: a coverage-only model, registered with the CLI.
    let treatment = register_coverage_model(&stack).unwrap();

    let started = kakeya_json(
        &stack,
        &[
            "hrs",
            "ab",
            "start",
            "--name",
            "e2e",
            "--control",
            &control,
            "--treatment",
            &treatment,
            "--split",
            "0.5",
            "--duration",
            "1h",
        ],
    );
    let id = started["experiment_id"].as_str().unwrap().to_string();
    let first = started["bundle_version"].as_u64().unwrap();
    let bundle = stack.current_bundle().unwrap();
    assert_eq!(bundle.version, first);
    assert_eq!(bundle.policy.experiment.as_deref(), Some(id.as_str()));

    // Until both Envoy workers serve the experiment's bundle.
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut n = 0;
    while seen.last().is_none_or(|s: &Seen| s.bundle_version < first) {
        assert!(
            Instant::now() < deadline,
            "the experiment's bundle never arrived"
        );
        seen.push(submit(
            &stack,
            &tenants[n % TENANTS],
            &format!("warm-{n}"),
            true,
        ));
        n += 1;
    }
    std::thread::sleep(Duration::from_millis(POLL_MS * 5));

    for round in 0..3 {
        for (i, t) in tenants.iter().enumerate() {
            seen.push(submit(
                &stack,
                t,
                &format!("{t}-{round}"),
                (i + round) % 3 != 0,
            ));
        }
    }
    // Every answer scored by the experiment's bundles is on its tenant's arm, with its model.
    let expected = |t: &str| {
        if experiment_bucket(&id, t) < 5_000 {
            ("challenger", treatment.as_str())
        } else {
            ("champion", control.as_str())
        }
    };
    let mut counted: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for s in seen.iter().filter(|s| s.bundle_version >= first) {
        let (arm, model) = expected(&s.tenant);
        assert_eq!(
            (s.arm.as_str(), s.model_version.as_str()),
            (arm, model),
            "{}",
            s.tenant
        );
        assert_eq!(bundle.arm(&s.tenant, "").as_str(), arm);
        let c = counted.entry(arm).or_default();
        c.0 += 1;
        c.1 += u64::from(s.status == 202);
    }
    let measured = &seen[seen.len() - 3 * TENANTS..];
    assert!(
        measured.iter().all(|s| s.bundle_version >= first),
        "after the swap every answer comes from the experiment's bundles"
    );
    let arms: std::collections::BTreeSet<&str> = tenants.iter().map(|t| expected(t).0).collect();
    assert_eq!(arms.len(), 2, "40 tenants at 0.5 land on both arms");

    // The statistics page counts exactly those answers.
    let page = stack.admin_get(&format!("/v1/hrs/ab/{id}")).unwrap();
    assert_eq!(page.status, 200, "{}", page.body);
    let page = page.json();
    for (key, arm) in [("control", "champion"), ("treatment", "challenger")] {
        let (requests, escalated) = counted.get(arm).copied().unwrap_or_default();
        let s = &page[key];
        assert_eq!(s["requests"].as_u64(), Some(requests), "{key}: {s}");
        assert_eq!(s["escalated"].as_u64(), Some(escalated), "{key}: {s}");
        let tenants_on_arm = tenants.iter().filter(|t| expected(t).0 == arm).count();
        assert_eq!(s["tenants"].as_u64(), Some(tenants_on_arm as u64), "{key}");
        assert!(s["latency_ns"]["p50"].as_f64().unwrap() > 0.0, "{key}: {s}");
    }
    assert_eq!(page["verdict"], "insufficient_data");
    eprintln!(
        "control {:?}, treatment {:?} (requests, escalated)",
        counted.get("champion"),
        counted.get("challenger")
    );

    // Stop: every tenant is back on the champion once the gate has the new bundle.
    let stopped = kakeya_json(&stack, &["hrs", "ab", "stop", &id]);
    assert_eq!(stopped["status"], "stopped");
    let end = stopped["end_bundle_version"].as_u64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut n = 0;
    while seen.last().is_some_and(|s| s.bundle_version < end) {
        assert!(Instant::now() < deadline, "the stop's bundle never arrived");
        seen.push(submit(
            &stack,
            &tenants[n % TENANTS],
            &format!("after-{n}"),
            true,
        ));
        n += 1;
    }
    std::thread::sleep(Duration::from_millis(POLL_MS * 5));
    for t in &tenants {
        let s = submit(&stack, t, &format!("{t}-after"), true);
        assert_eq!(
            (s.arm.as_str(), s.model_version.as_str()),
            ("champion", control.as_str())
        );
    }
    // The page counts the experiment's answers only: those scored by its bundles, including
    // the ones a worker still scored with them after the stop.
    let listed = kakeya_json(&stack, &["hrs", "ab", "list"]);
    assert_eq!(listed[0]["id"], id.as_str());
    let status = kakeya_json(&stack, &["hrs", "ab", "status", &id]);
    let total = status["control"]["requests"].as_u64().unwrap()
        + status["treatment"]["requests"].as_u64().unwrap();
    let scored_by_it = seen
        .iter()
        .filter(|s| (first..end).contains(&s.bundle_version))
        .count();
    assert_eq!(total, scored_by_it as u64);
}
