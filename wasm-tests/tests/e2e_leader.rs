//! Two `kakeya serve` processes (replicas) on one PostgreSQL database: exactly one holds the
//! background-job lease; `kill -9` of that one and the other takes the lease over within a
//! bounded number of lease ticks. With scheduled retraining on, exactly one holds the
//! `scheduled-retrain` lease, the period gets one run, and after the kill the survivor holds
//! that lease and runs no second one for the period. Each run works in a fresh schema of its own
//! (`?options=-c search_path=…` in `DATABASE_URL`), so parallel runs never share a lease.
//!
//! Needs PostgreSQL (`KAKEYA_TEST_POSTGRES_URL`, default `postgres://postgres@127.0.0.1:5432/test`):
//! skipped loudly without it, a failure when `CI` is set.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod pg;

use kakeya_wasm_tests::stack::{Stack, StackOptions};
use pg::Schema;
use std::time::{Duration, Instant};

/// The lease of the control plane's hourly dedup TTL cleanup (`server::DEDUP_EXPIRY_LEASE`).
const LEASE: &str = "dedup-expiry";
/// The lease of scheduled retraining (`scheduler::LEASE`).
const RETRAIN_LEASE: &str = "scheduled-retrain";
const TICK_MS: u64 = 200;

/// `GET /v1/operator/leader` of `stack`: (replica, held, holder) of the dedup lease.
fn lease(stack: &Stack) -> (String, bool, Option<String>) {
    lease_named(stack, LEASE)
}

/// `GET /v1/operator/leader` of `stack`: (replica, held, holder) of lease `name`.
fn lease_named(stack: &Stack, name: &str) -> (String, bool, Option<String>) {
    let a = stack.admin_get("/v1/operator/leader").unwrap();
    assert_eq!(a.status, 200, "{a:?}");
    let v = a.json();
    assert_eq!(v["backend"], "postgres", "{v}");
    let l = v["leases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == name)
        .unwrap_or_else(|| panic!("no lease {name}: {v}"))
        .clone();
    assert_eq!(l["tick_ms"], TICK_MS);
    (
        v["replica"].as_str().unwrap().to_string(),
        l["held"].as_bool().unwrap(),
        l["holder"].as_str().map(str::to_string),
    )
}

/// The `kakeya_leader{lease="dedup-expiry"}` gauge of `stack`.
fn gauge(stack: &Stack) -> String {
    let m = stack.admin_get("/metrics").unwrap().body;
    let prefix = format!("kakeya_leader{{lease=\"{LEASE}\"}} ");
    m.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {prefix}in /metrics"))
        .to_string()
}

/// Waits until exactly one of `stacks` holds lease `name` and both name it; its index.
fn settle(stacks: &[Stack], name: &str) -> usize {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s: Vec<_> = stacks.iter().map(|st| lease_named(st, name)).collect();
        let held: Vec<usize> = (0..s.len()).filter(|&i| s[i].1).collect();
        if let [i] = held[..] {
            if s.iter().all(|x| x.2.as_deref() == Some(s[i].0.as_str())) {
                return i;
            }
        }
        assert!(held.len() <= 1, "two replicas hold {name}: {s:?}");
        assert!(
            Instant::now() < deadline,
            "no single holder of {name}: {s:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `GET /v1/hrs/scheduler` of `stack`.
fn scheduler(stack: &Stack) -> serde_json::Value {
    let a = stack.admin_get("/v1/hrs/scheduler").unwrap();
    assert_eq!(a.status, 200, "{a:?}");
    a.json()
}

/// Waits for the newest period's scheduled run to finish; (period, run id), after checking
/// that no period has two runs.
fn one_scheduled_run(stack: &Stack) -> (i64, i64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let a = stack.admin_get("/v1/hrs/scheduler/runs").unwrap();
        assert_eq!(a.status, 200, "{a:?}");
        let runs = a.json()["runs"].as_array().unwrap().clone();
        let periods: Vec<i64> = runs
            .iter()
            .filter_map(|r| r["period_start_ms"].as_i64())
            .collect();
        let distinct: std::collections::BTreeSet<_> = periods.iter().collect();
        assert_eq!(
            distinct.len(),
            periods.len(),
            "a period ran twice: {runs:?}"
        );
        if let Some(r) = runs.iter().find(|r| r["trigger"] == "schedule") {
            if r["status"] == "finished" {
                assert_eq!(r["outcome"], "dataset_error", "{r}");
                assert_eq!(r["detail"]["error"]["code"], "empty_range", "{r}");
                return (
                    r["period_start_ms"].as_i64().unwrap(),
                    r["run_id"].as_i64().unwrap(),
                );
            }
        }
        assert!(
            Instant::now() < deadline,
            "no finished scheduled run: {runs:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn one_of_two_replicas_holds_the_lease_and_the_other_takes_over_after_kill_9() {
    let Some(schema) = Schema::create("e2e_leader") else {
        return;
    };
    let shared = tempfile::tempdir().unwrap();
    let opts = StackOptions {
        env: vec![
            ("DATABASE_URL".into(), schema.database_url()),
            // Replicas sign with one key (the first start creates it, the second reads it).
            (
                "KAKEYA_BUNDLE_SIGNING_SEED_FILE".into(),
                shared
                    .path()
                    .join("bundle-signing.seed")
                    .display()
                    .to_string(),
            ),
            ("KAKEYA_LEASE_TICK_MS".into(), TICK_MS.to_string()),
            ("PCS_SIGN_ALG".into(), "hmac".into()),
            ("PCS_HMAC_KEY".into(), "testsecret".into()),
            ("KAKEYA_SCHEDULER_RETRAIN".into(), "true".into()),
        ],
        without_envoy: true,
        ..Default::default()
    };
    // One after the other: the first migrates and publishes the default bundle.
    let mut stacks = [
        Stack::start(opts.clone()).unwrap(),
        Stack::start(opts).unwrap(),
    ];
    let deadline = Instant::now() + Duration::from_secs(30);
    let (leader, states) = loop {
        let s: Vec<_> = stacks.iter().map(lease).collect();
        let held: Vec<usize> = (0..2).filter(|&i| s[i].1).collect();
        // Settled: one holds it, and both name it as the holder.
        if let [i] = held[..] {
            if s.iter().all(|x| x.2.as_deref() == Some(s[i].0.as_str())) {
                break (i, s);
            }
        }
        assert!(held.len() <= 1, "two replicas hold the lease: {s:?}");
        assert!(Instant::now() < deadline, "no single leader: {s:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let follower = 1 - leader;
    assert_ne!(states[0].0, states[1].0, "two processes, two replica ids");
    assert_eq!(
        (gauge(&stacks[leader]), gauge(&stacks[follower])),
        ("1".into(), "0".into())
    );

    // Scheduled retraining: one replica holds its lease, and the period has one run (the empty
    // decision log: a dataset error), recorded in the shared database.
    let retrain = settle(&stacks, RETRAIN_LEASE);
    let (period, run_id) = one_scheduled_run(&stacks[retrain]);
    let st = scheduler(&stacks[1 - retrain]);
    assert_eq!(
        st["last_run"]["run_id"], run_id,
        "one database, one history: {st}"
    );
    assert_eq!(
        st["lease"]["holder"].as_str(),
        Some(lease_named(&stacks[retrain], RETRAIN_LEASE).0.as_str()),
        "both replicas name the holder: {st}"
    );
    assert_eq!(st["lease"]["here"]["held"], false, "{st}");

    // kill -9 of the leader: its session ends, the follower gets the lease at a later tick.
    let killed_at = Instant::now();
    stacks[leader].kill_control_plane();
    let bound = Duration::from_millis(TICK_MS * 25);
    loop {
        let (me, held, holder) = lease(&stacks[follower]);
        if held {
            assert_eq!(holder.as_deref(), Some(me.as_str()));
            break;
        }
        assert!(
            killed_at.elapsed() < bound,
            "the follower did not take the lease within 25 ticks ({bound:?}); holder {holder:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = killed_at.elapsed();
    eprintln!(
        "fail-over after kill -9: {} ms ({:.1} ticks of {TICK_MS} ms)",
        took.as_millis(),
        took.as_secs_f64() * 1000.0 / TICK_MS as f64
    );
    assert_eq!(gauge(&stacks[follower]), "1");
    // The survivor holds the retraining lease too (at once if it did, else within the bound),
    // and its first look finds the period done: still one run for it.
    loop {
        let (me, held, holder) = lease_named(&stacks[follower], RETRAIN_LEASE);
        if held {
            assert_eq!(holder.as_deref(), Some(me.as_str()));
            break;
        }
        assert!(
            killed_at.elapsed() < bound * 2,
            "retrain lease not taken over"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(TICK_MS * 5));
    let (period_after, run_after) = one_scheduled_run(&stacks[follower]);
    if period_after == period {
        assert_eq!(run_after, run_id, "a second run for period {period}");
    }
    drop(stacks);
    drop(schema);
}
