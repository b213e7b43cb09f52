//! The controller on SQLite and (when reachable) PostgreSQL, with a compressed clock: a good
//! canary walks every step and is promoted, a bad one (it lets labelled hallucinations through)
//! is rolled back before the 25 % step, pause holds, a restart (a fresh read of the row) resumes,
//! one failed gate holds the step and then rolls back, and the gates' arithmetic.

use super::controller::tick;
use super::gates::{self, ArmStats, GateName, GateStatus, Recommendation};
use super::*;
use crate::registry::history::{Actor, Why};
use crate::registry::tests::model;

const SEED: [u8; 32] = [9; 32];
use crate::registry::{self, card, CANARY, CHAMPION};
use crate::testutil::all_dbs;
use sqlx::Row;

const T0: i64 = 1_800_000_000_000;
const S: i64 = 1000;

fn opts() -> CanaryOptions {
    CanaryOptions {
        steps: [0.05, 0.10, 0.25, 0.50, 1.0]
            .iter()
            .map(|&weight| Step {
                weight,
                duration_ms: 60_000,
            })
            .collect(),
        min_requests: 50,
        tick_every: std::time::Duration::from_secs(1),
        max_hold: std::time::Duration::from_secs(30),
        envoy_admins: Vec::new(),
        upstreams: Vec::new(),
    }
}

/// The test's gates: every gate evaluated (cost has no data), a wide escalation budget and
/// no practical cap on escaped hallucinations per hour (the compressed clock makes an hour
/// short).
fn gates_with_cost() -> Gates {
    let d = Gates::default();
    Gates {
        error_budget: gates::ErrorBudgetGate {
            escalation_rate_threshold: 0.5,
            burn_rate_threshold: 0.5,
        },
        containment: gates::ContainmentGate {
            max_escaped_per_hour: 1e9,
            ..d.containment
        },
        ..d
    }
}

fn gates_without_cost() -> Gates {
    Gates {
        skip: vec![GateName::Cost],
        ..gates_with_cost()
    }
}

/// Registers two models, the first the champion; their versions.
async fn setup(db: &Db) -> (String, String) {
    let (a, b) = (model(-1.0), model(-2.0));
    for m in [&a, &b] {
        registry::insert_model(db, &SEED, m, &card::from_artifact(m), 1)
            .await
            .unwrap();
    }
    let why = Why::manual(Actor::Cli("test".into()), None);
    registry::move_alias(db, &SEED, CHAMPION, &a.version(), None, &why, 5)
        .await
        .unwrap();
    (a.version(), b.version())
}

/// How an arm behaves in generated traffic.
#[derive(Clone, Copy)]
struct Behaviour {
    /// Every `escalate_every`-th faithful decision is escalated (0: none).
    escalate_every: u64,
    /// Share of labelled hallucinations escalated, in 1/10.
    catch_tenths: u64,
    verify_ns: i64,
}

const GOOD: Behaviour = Behaviour {
    escalate_every: 20,
    catch_tenths: 8,
    verify_ns: 40_000,
};
const INVERTED: Behaviour = Behaviour {
    escalate_every: 2,
    catch_tenths: 1,
    verify_ns: 40_000,
};

static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// `n` decisions of `version` on `arm` spread over [at, at + span), every 4th a labelled
/// hallucination (contained as `b` says), inserted in chunks of multi-row INSERTs.
async fn traffic(db: &Db, arm: &str, version: &str, b: Behaviour, at: i64, span: i64, n: u64) {
    let mut tx = db.pool.begin().await.unwrap();
    let mut labels = Vec::new();
    let rows: Vec<String> = (0..n)
        .map(|i| {
            let k = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let (tenant, pcs) = (format!("t{}", k % 97), format!("p{k}"));
            let hallucinated = i % 4 == 0;
            let escalated = if hallucinated {
                (i / 4) % 10 < b.catch_tenths
            } else {
                b.escalate_every > 0 && i % b.escalate_every == 1
            };
            if hallucinated {
                labels.push(format!(
                    "('{tenant}', '{pcs}', 'rev', 'gold', 'hallucinated', 1.0, NULL, {at})"
                ));
            } else if i % 4 == 2 {
                labels.push(format!(
                    "('{tenant}', '{pcs}', 'rev', 'gold', 'faithful', 1.0, NULL, {at})"
                ));
            }
            let t = at + (i as i64 * span) / n.max(1) as i64;
            format!(
                "('r{k}', '{tenant}', '{pcs}', 1.2, 0.7, 0.5, 1.0, 'sticky', 1, {e}, NULL, {st}, 1, {ns}, {t}, {risk}, 'low', '{version}', '{arm}', 1, 'v0.2')",
                e = i64::from(escalated),
                st = if escalated { 202 } else { 200 },
                ns = b.verify_ns + (i % 7) as i64 * 1000,
                risk = if escalated { 0.9 } else { 0.1 },
            )
        })
        .collect();
    use super::bench::{insert_rows, LABEL_INSERT};
    let insert = "INSERT INTO decision_log (record_id, tenant, pcs_id, d_hat, coh_star, r, \
         budget, regime, accepted, escalated, reason, status, cacheable, verify_ns, \
         created_at_ms, risk, risk_band, model_version, arm, bundle_version, pcs_version) VALUES ";
    insert_rows(&mut tx, insert, &rows).await.unwrap();
    insert_rows(&mut tx, LABEL_INSERT, &labels).await.unwrap();
    tx.commit().await.unwrap();
}

async fn canary_weight(db: &Db) -> Option<(String, f64)> {
    let mut conn = db.pool.acquire().await.unwrap();
    registry::aliases(&mut conn)
        .await
        .unwrap()
        .into_iter()
        .find(|a| a.alias == CANARY)
        .map(|a| (a.version, a.weight))
}

async fn champion(db: &Db) -> String {
    let mut conn = db.pool.acquire().await.unwrap();
    registry::aliases(&mut conn)
        .await
        .unwrap()
        .into_iter()
        .find(|a| a.alias == CHAMPION)
        .unwrap()
        .version
}

async fn served_canary_weight(db: &Db) -> Option<f64> {
    let row = registry::current_bundle(db).await.unwrap().unwrap();
    let b = registry::check_bundle_row(&row, &registry::keys::public_key_b64(&SEED)).unwrap();
    b.canary.map(|c| c.weight)
}

async fn kinds(db: &Db, id: &str) -> Vec<String> {
    store::events(db, id, None, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect()
}

async fn start_default(db: &Db, control: &str, canary: &str) -> String {
    let req = StartRequest {
        name: "t".into(),
        control_version: control.into(),
        canary_version: canary.into(),
        target: None,
        key: None,
        gates: gates_without_cost(),
        steps: None,
        min_requests: None,
    };
    start(db, &opts(), &req, T0).await.unwrap().deployment_id
}

/// Both arms' traffic for one step window at `weight`, 1000 decisions in all.
async fn step_traffic(
    db: &Db,
    control: &str,
    canary: &str,
    canary_b: Behaviour,
    at: i64,
    weight: f64,
) {
    let n_canary = ((1000.0 * weight) as u64).max(120);
    traffic(db, "canary", canary, canary_b, at, 50 * S, n_canary).await;
    traffic(
        db,
        "champion",
        control,
        GOOD,
        at,
        50 * S,
        1000 - n_canary.min(880),
    )
    .await;
}

#[tokio::test]
async fn a_good_canary_walks_every_step_and_is_promoted() {
    for t in all_dbs("canary_good").await {
        let (db, l) = (&t.db, t.label);
        let (a, b) = setup(db).await;
        let id = start_default(db, &a, &b).await;
        let s = tick(db, &SEED, &opts(), T0).await.unwrap().unwrap();
        assert_eq!(
            (s.deployment.status, s.event),
            (Status::Running, Some("started")),
            "{l}"
        );
        assert_eq!(canary_weight(db).await, Some((b.clone(), 0.05)), "{l}");
        assert_eq!(
            served_canary_weight(db).await,
            Some(0.05),
            "{l}: the bundle carries it"
        );
        let mut now = T0;
        let mut weights = vec![];
        for step in 0..5 {
            let d = store::get(db, &id).await.unwrap().unwrap();
            let w = d.schedule[step].weight;
            weights.push(canary_weight(db).await.map(|x| x.1));
            step_traffic(db, &a, &b, GOOD, now + S, w).await;
            // Mid-step: checked, no transition.
            let mid = tick(db, &SEED, &opts(), now + 30 * S)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(mid.event, None, "{l}: step {step} mid");
            let due = d.step_due_at_ms.unwrap();
            now = due.max(now + 51 * S);
            let r = tick(db, &SEED, &opts(), now).await.unwrap().unwrap();
            let check = r.deployment.last_check.clone();
            assert!(
                r.event == Some("step") || r.event == Some("promoted"),
                "{l}: step {step}: {:?} {:?}",
                r.event,
                check.or(d.last_check)
            );
        }
        assert_eq!(
            weights,
            vec![Some(0.05), Some(0.10), Some(0.25), Some(0.5), Some(1.0)],
            "{l}"
        );
        let d = store::get(db, &id).await.unwrap().unwrap();
        assert_eq!(d.status, Status::Promoted, "{l}");
        assert_eq!(champion(db).await, b, "{l}: promoted to champion");
        assert_eq!(canary_weight(db).await, None, "{l}: canary alias gone");
        assert_eq!(served_canary_weight(db).await, None, "{l}");
        assert_eq!(
            kinds(db, &id).await,
            ["started", "step", "step", "step", "step", "promoted"],
            "{l}: events in order"
        );
        // Every gate had margin: the step after each accelerated step is 25 % shorter.
        let ev = store::events(db, &id, None, 100).await.unwrap();
        assert!(
            ev[1].reason.contains("accelerated"),
            "{l}: {}",
            ev[1].reason
        );
        assert_eq!(d.schedule[1].duration_ms, 45_000, "{l}");
        assert!(
            tick(db, &SEED, &opts(), now + S).await.unwrap().is_none(),
            "{l}: nothing active"
        );
        t.cleanup().await;
    }
}

#[tokio::test]
async fn a_bad_canary_is_rolled_back_before_the_25_percent_step() {
    for t in all_dbs("canary_bad").await {
        let (db, l) = (&t.db, t.label);
        let (a, b) = setup(db).await;
        let id = start_default(db, &a, &b).await;
        tick(db, &SEED, &opts(), T0).await.unwrap();
        step_traffic(db, &a, &b, INVERTED, T0 + S, 0.05).await;
        let r = tick(db, &SEED, &opts(), T0 + 52 * S)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(r.event, Some("rolled_back"), "{l}");
        let d = r.deployment;
        assert_eq!(d.status, Status::RolledBack, "{l}");
        assert!(d.current_step < 2, "{l}: before the 25 % step");
        assert_eq!(canary_weight(db).await, None, "{l}: weight 0");
        assert_eq!(
            served_canary_weight(db).await,
            None,
            "{l}: the bundle has no canary"
        );
        assert_eq!(champion(db).await, a, "{l}: the champion serves everything");
        let ev = store::events(db, &id, None, 100).await.unwrap();
        let last = ev.last().unwrap();
        assert!(
            last.reason.starts_with("critical gate"),
            "{l}: {}",
            last.reason
        );
        let g = last.gates.as_ref().unwrap();
        assert_eq!(g.recommendation, Recommendation::Rollback);
        assert!(g.failed_gates.contains(&GateName::Containment), "{l}");
        assert!(
            g.failed_gates.contains(&GateName::ErrorBudget),
            "{l}: {:?}",
            g.failed_gates
        );
        t.cleanup().await;
    }
}

#[tokio::test]
async fn pause_holds_and_a_fresh_read_resumes_where_it_was() {
    for t in all_dbs("canary_pause").await {
        let (db, l) = (&t.db, t.label);
        let (a, b) = setup(db).await;
        let id = start_default(db, &a, &b).await;
        tick(db, &SEED, &opts(), T0).await.unwrap();
        step_traffic(db, &a, &b, GOOD, T0 + S, 0.05).await;
        request(db, &id, Action::Pause).await.unwrap();
        let p = tick(db, &SEED, &opts(), T0 + 20 * S)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (p.deployment.status, p.event),
            (Status::Paused, Some("paused")),
            "{l}"
        );
        // Long past the step's end: a paused canary does not advance, its weight holds.
        for k in 1..5 {
            let r = tick(db, &SEED, &opts(), T0 + k * 600 * S)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(
                (r.deployment.status, r.event),
                (Status::Paused, None),
                "{l}"
            );
        }
        assert_eq!(canary_weight(db).await, Some((b.clone(), 0.05)), "{l}");
        let e = request(db, &id, Action::Pause).await.unwrap_err();
        assert!(
            matches!(
                e,
                CanaryError::Conflict {
                    code: "not_running",
                    ..
                }
            ),
            "{l}"
        );
        request(db, &id, Action::Resume).await.unwrap();
        let resumed_at = T0 + 3000 * S;
        let r = tick(db, &SEED, &opts(), resumed_at).await.unwrap().unwrap();
        assert_eq!(r.event, Some("resumed"), "{l}");
        // 20 s of the step's 60 had run: 40 s remain.
        assert_eq!(
            r.deployment.step_due_at_ms,
            Some(resumed_at + 40 * S),
            "{l}"
        );
        // "Restart": nothing is in memory; the next tick reads the row and carries on.
        let before_due = tick(db, &SEED, &opts(), resumed_at + 39 * S)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (before_due.deployment.current_step, before_due.event),
            (0, None),
            "{l}"
        );
        t.cleanup().await;
    }
}

#[tokio::test]
async fn one_failing_gate_holds_the_step_then_rolls_back() {
    for t in all_dbs("canary_hold").await {
        let (db, l) = (&t.db, t.label);
        let (a, b) = setup(db).await;
        // The cost gate is not skipped: it has no data, so the step cannot pass.
        let req = StartRequest {
            name: "hold".into(),
            control_version: a.clone(),
            canary_version: b.clone(),
            target: None,
            key: None,
            gates: gates_with_cost(),
            steps: None,
            min_requests: None,
        };
        let id = start(db, &opts(), &req, T0).await.unwrap().deployment_id;
        tick(db, &SEED, &opts(), T0).await.unwrap();
        step_traffic(db, &a, &b, GOOD, T0 + S, 0.05).await;
        let h = tick(db, &SEED, &opts(), T0 + 60 * S)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(h.event, Some("held"), "{l}");
        let c = h.deployment.last_check.unwrap();
        assert_eq!(c.failed_gates, vec![GateName::Cost], "{l}");
        let cost = c.gates.iter().find(|g| g.gate == GateName::Cost).unwrap();
        assert_eq!(cost.status, GateStatus::NoData, "{l}");
        let again = tick(db, &SEED, &opts(), T0 + 70 * S)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(again.event, None, "{l}: held once");
        let r = tick(db, &SEED, &opts(), T0 + 90 * S)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(r.event, Some("rolled_back"), "{l}");
        assert!(kinds(db, &id)
            .await
            .ends_with(&["held".to_string(), "rolled_back".to_string()]));
        assert_eq!(canary_weight(db).await, None, "{l}");
        t.cleanup().await;
    }
}

#[tokio::test]
async fn too_few_requests_hold_and_abort_removes_the_canary() {
    for t in all_dbs("canary_abort").await {
        let (db, l) = (&t.db, t.label);
        let (a, b) = setup(db).await;
        let id = start_default(db, &a, &b).await;
        tick(db, &SEED, &opts(), T0).await.unwrap();
        let h = tick(db, &SEED, &opts(), T0 + 61 * S)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            h.event,
            Some("held"),
            "{l}: no traffic, the step cannot pass"
        );
        // A second deployment is refused while this one is active.
        let req = StartRequest {
            name: "other".into(),
            control_version: a.clone(),
            canary_version: b.clone(),
            target: None,
            key: None,
            gates: gates_without_cost(),
            steps: None,
            min_requests: None,
        };
        let e = start(db, &opts(), &req, T0 + 62 * S).await.unwrap_err();
        assert!(
            matches!(
                e,
                CanaryError::Conflict {
                    code: "canary_in_use" | "canary_active",
                    ..
                }
            ),
            "{l}: {e}"
        );
        request(db, &id, Action::Abort).await.unwrap();
        let r = tick(db, &SEED, &opts(), T0 + 63 * S)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (r.deployment.status, r.event),
            (Status::Aborted, Some("aborted")),
            "{l}"
        );
        assert_eq!(canary_weight(db).await, None, "{l}");
        let e = request(db, &id, Action::Resume).await.unwrap_err();
        assert!(
            matches!(
                e,
                CanaryError::Conflict {
                    code: "not_active",
                    ..
                }
            ),
            "{l}"
        );
        t.cleanup().await;
    }
}

#[tokio::test]
async fn start_refuses_bad_requests_and_records_nothing() {
    for t in all_dbs("canary_start_bad").await {
        let (db, l) = (&t.db, t.label);
        let (a, b) = setup(db).await;
        let base = StartRequest {
            name: "x".into(),
            control_version: a.clone(),
            canary_version: b.clone(),
            target: None,
            key: None,
            gates: gates_without_cost(),
            steps: None,
            min_requests: None,
        };
        let cases: Vec<(StartRequest, &str)> = vec![
            (
                StartRequest {
                    name: "bad name!".into(),
                    ..base.clone()
                },
                "invalid",
            ),
            (
                StartRequest {
                    canary_version: a.clone(),
                    ..base.clone()
                },
                "invalid",
            ),
            (
                StartRequest {
                    control_version: "lr-ffffffffffff".into(),
                    ..base.clone()
                },
                "not_champion",
            ),
            (
                StartRequest {
                    canary_version: "lr-000000000000".into(),
                    ..base.clone()
                },
                "not_found",
            ),
            (
                StartRequest {
                    steps: Some(vec![Step {
                        weight: 0.5,
                        duration_ms: 1000,
                    }]),
                    ..base.clone()
                },
                "invalid",
            ),
            (
                StartRequest {
                    gates: Gates {
                        latency: gates::LatencyGate {
                            p95_threshold_ms: f64::NAN,
                            ..Gates::default().latency
                        },
                        ..Gates::default()
                    },
                    ..base.clone()
                },
                "invalid",
            ),
        ];
        for (req, want) in cases {
            let got = match start(db, &opts(), &req, T0).await.unwrap_err() {
                CanaryError::Invalid(_) => "invalid",
                CanaryError::NotFound(_) => "not_found",
                CanaryError::Conflict { code, .. } => code,
                e => panic!("{l}: {e}"),
            };
            assert_eq!(got, want, "{l}");
        }
        assert!(store::list(db, 10).await.unwrap().is_empty(), "{l}");
        t.cleanup().await;
    }
}

fn arm(requests: u64, escalated: u64, p95: f64, hall: u64, contained: u64) -> ArmStats {
    ArmStats {
        requests,
        escalated,
        escalation_rate: Some(escalated as f64 / requests as f64),
        p95_ms: Some(p95),
        labelled: hall * 2,
        labelled_hallucinated: hall,
        contained,
        escaped: hall - contained,
        recall: Some(contained as f64 / hall as f64),
    }
}

#[test]
fn gate_arithmetic() {
    let g = Gates {
        skip: vec![GateName::Cost],
        ..Gates::default()
    };
    let control = arm(1000, 50, 0.05, 100, 80);
    // As good as control: continue, with margin everywhere (excellent).
    let (r, rec, excellent) = gates::evaluate(&g, &arm(100, 5, 0.05, 40, 32), &control, 1.0);
    assert_eq!(rec, Recommendation::Continue, "{r:?}");
    assert!(excellent);
    // Containment 0.9 of control's recall: critical, rollback at once.
    let (r, rec, _) = gates::evaluate(&g, &arm(100, 5, 0.05, 40, 29), &control, 1.0);
    assert_eq!(rec, Recommendation::Rollback);
    assert!(r
        .iter()
        .any(|x| x.gate == GateName::Containment && x.critical));
    // Latency alone over its threshold: hold.
    let (_, rec, _) = gates::evaluate(&g, &arm(100, 5, 80.0, 40, 32), &control, 1.0);
    assert_eq!(rec, Recommendation::Hold);
    // Latency and escalation: two measured failures, rollback.
    let (_, rec, _) = gates::evaluate(&g, &arm(100, 60, 80.0, 40, 32), &control, 1.0);
    assert_eq!(rec, Recommendation::Rollback);
    // Too few labels: containment has no data (a hold, never a pass).
    let (r, rec, _) = gates::evaluate(&g, &arm(100, 5, 0.05, 5, 4), &control, 1.0);
    assert_eq!(rec, Recommendation::Hold);
    assert!(r
        .iter()
        .any(|x| x.gate == GateName::Containment && x.status == GateStatus::NoData));
    // A passing gate within 20 % of a threshold: continue, not excellent.
    let (_, rec, excellent) = gates::evaluate(
        &g,
        &arm(100, 21, 0.05, 40, 32),
        &arm(1000, 150, 0.05, 100, 80),
        1.0,
    );
    assert_eq!((rec, excellent), (Recommendation::Continue, false));
}

#[tokio::test]
#[ignore = "benchmark: cargo test -p kakeya-control-plane --lib canary::tests::bench -- --ignored --nocapture"]
async fn bench_gate_window_of_100k_decisions() {
    for t in all_dbs("canary_bench").await {
        let (db, l) = (&t.db, t.label);
        let (a, b) = setup(db).await;
        traffic(db, "canary", &b, GOOD, T0, 600 * S, 20_000).await;
        traffic(db, "champion", &a, GOOD, T0, 600 * S, 80_000).await;
        let n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM decision_log")
            .fetch_one(&db.pool)
            .await
            .unwrap()
            .try_get("n")
            .unwrap();
        let g = gates_without_cost();
        let mut best = f64::MAX;
        for _ in 0..5 {
            let t0 = std::time::Instant::now();
            let c = gates::check(
                db,
                &g,
                &gates::ArmOf {
                    arm: "canary",
                    version: &b,
                },
                &gates::ArmOf {
                    arm: "champion",
                    version: &a,
                },
                (T0, T0),
                T0 + 600 * S,
            )
            .await
            .unwrap();
            best = best.min(t0.elapsed().as_secs_f64());
            assert_eq!(c.canary.requests + c.control.requests, 100_000);
        }
        println!(
            "{l}: gate evaluation over a window of {n} decisions: best of 5 {:.1} ms",
            best * 1e3
        );
        t.cleanup().await;
    }
}

#[tokio::test]
#[ignore = "benchmark: cargo test --release -p kakeya-control-plane --lib canary::tests::bench_release -- --ignored --nocapture"]
async fn bench_release_gate_and_replay() {
    // What `cargo xtask bench --canary` runs, without the benchmark runner's build.
    let b = super::bench::run(100_000, 1_000_000).await.unwrap();
    println!("{}", serde_json::to_string_pretty(&b).unwrap());
}

#[tokio::test]
#[ignore = "benchmark: cargo test -p kakeya-control-plane --lib canary::tests::bench_debug -- --ignored --nocapture"]
async fn bench_debug_scale() {
    // The benchmark at a tenth of its replay (KAKEYA_CANARY_BENCH_REPLAY overrides), in a debug
    // build: how the replay's read scales without the release build.
    let replay = std::env::var("KAKEYA_CANARY_BENCH_REPLAY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let b = super::bench::run(100_000, replay).await.unwrap();
    println!("{}", serde_json::to_string_pretty(&b).unwrap());
}
