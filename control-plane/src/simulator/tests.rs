//! The simulator on SQLite and (when reachable) PostgreSQL: a threshold change predicted
//! exactly (the rate the applied champion gives on the same traffic), a model change rescored
//! from the recorded features, every recommendation reachable, apply refused unless the latest
//! simulation approved it, and the replay benchmark.

use super::*;
use crate::registry::history::{Actor, Why};
use crate::registry::tests::model;

const SEED: [u8; 32] = [9; 32];
use crate::testutil::all_dbs;

const T0: i64 = 1_800_000_000_000;

/// Deterministic feature vectors spread so the risks cover (0, 1).
fn xs(n: usize) -> Vec<[f64; N_FEATURES]> {
    let mut s: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..n)
        .map(|_| {
            let mut x = [0.0; N_FEATURES];
            for v in x.iter_mut() {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                *v = ((s >> 11) as f64 / (1u64 << 53) as f64) * 4.0 - 2.0;
            }
            x
        })
        .collect()
}

async fn setup(db: &Db) -> (Model, Model) {
    let (a, b) = (model(0.0), model(-0.3));
    for m in [&a, &b] {
        registry::insert_model(db, &SEED, m, &card::from_artifact(m), 1)
            .await
            .unwrap();
    }
    let why = Why::manual(Actor::Cli("test".into()), None);
    registry::move_alias(db, &SEED, CHAMPION, &a.version(), None, &why, 5)
        .await
        .unwrap();
    (a, b)
}

/// Champion decisions of `m` over `x` as the gate records them; every 3rd labelled, as
/// hallucinated when its risk is above 0.3.
async fn record(db: &Db, m: &Model, x: &[[f64; N_FEATURES]]) {
    let v = m.version();
    let mut tx = db.pool.begin().await.unwrap();
    let mut labels = Vec::new();
    let rows: Vec<String> = x
        .iter()
        .enumerate()
        .map(|(i, x)| {
            let risk = m.score(x).1;
            let esc = risk >= m.thresholds().escalate;
            if i % 3 == 0 {
                let l = if risk > 0.3 { "hallucinated" } else { "faithful" };
                labels.push(format!("('t{}', 'p{i}', 'rev', 'gold', '{l}', 1.0, NULL, {T0})", i % 13));
            }
            format!(
                "('r{i}', 't{}', 'p{i}', 1.2, 0.7, 0.5, 1.0, 'sticky', 1, {e}, NULL, {st}, 1, 40000, {t}, {risk:?}, '{band}', '{v}', 'champion', 1, 'v0.2', '{SCHEMA_VERSION}', '{f}')",
                i % 13,
                e = i64::from(esc),
                st = if esc { 202 } else { 200 },
                t = T0 + i as i64,
                band = if esc { "high" } else { "low" },
                f = serde_json::to_string(&x.to_vec()).unwrap(),
            )
        })
        .collect();
    use crate::canary::bench::{insert_rows, DECISION_INSERT, LABEL_INSERT};
    insert_rows(&mut tx, DECISION_INSERT, &rows).await.unwrap();
    insert_rows(&mut tx, LABEL_INSERT, &labels).await.unwrap();
    tx.commit().await.unwrap();
}

fn req(policy: &str, diff: PolicyDiff) -> SimulateRequest {
    SimulateRequest {
        policy_id: policy.into(),
        diff,
        window: Some("1d".into()),
        slos: Slos {
            max_escalation_rate: 0.9,
            min_containment_ratio: 0.5,
        },
    }
}

fn rate(m: &Model, x: &[[f64; N_FEATURES]], t: f64) -> f64 {
    x.iter().filter(|x| m.score(&x[..]).1 >= t).count() as f64 / x.len() as f64
}

#[tokio::test]
async fn a_threshold_change_is_predicted_exactly_and_applied_when_approved() {
    for t in all_dbs("sim_threshold").await {
        let (db, l) = (&t.db, t.label);
        let (a, _) = setup(db).await;
        let x = xs(3000);
        record(db, &a, &x).await;
        let now = T0 + 10_000;
        // A small move of the threshold: few flips, approved.
        let s = simulate(
            db,
            &SEED,
            &req(
                "thr",
                PolicyDiff {
                    escalate_threshold: Some(0.501),
                    ..Default::default()
                },
            ),
            now,
        )
        .await
        .unwrap();
        assert_eq!(s.before.escalation_rate, rate(&a, &x, 0.5), "{l}");
        assert_eq!(
            s.after.escalation_rate,
            rate(&a, &x, 0.501),
            "{l}: exact replay"
        );
        assert_eq!(
            s.impact.latency_delta_pct,
            Some(0.0),
            "{l}: same model, same work"
        );
        assert_eq!(
            s.recommendation,
            Recommendation::Approve,
            "{l}: {:?}",
            s.impact
        );
        assert_eq!(
            get(db, &s.simulation_id).await.unwrap().unwrap(),
            s,
            "{l}: stored"
        );
        let applied = apply(db, &SEED, "thr", now + 1).await.unwrap();
        assert!(applied.applied_at_ms.is_some());
        // Measured on the same traffic: the new champion scores the recorded features.
        let pk = keys::public_key_b64(&SEED);
        let (_, b) = registry::served_bundle(db, &pk).await.unwrap().unwrap();
        assert_eq!(b.champion.thresholds().escalate, 0.501, "{l}");
        let measured = rate(&b.champion, &x, b.champion.thresholds().escalate);
        assert!(
            (measured - s.after.escalation_rate).abs() < 0.001,
            "{l}: within 0.1 pp"
        );
        assert_eq!(measured, s.after.escalation_rate, "{l}: in fact equal");
        let e = apply(db, &SEED, "thr", now + 2).await.unwrap_err();
        assert!(
            matches!(
                e,
                SimError::Conflict {
                    code: "already_applied",
                    ..
                }
            ),
            "{l}: {e}"
        );
        t.cleanup().await;
    }
}

#[tokio::test]
async fn review_and_reject_are_reachable_and_not_applied() {
    for t in all_dbs("sim_levels").await {
        let (db, l) = (&t.db, t.label);
        let (a, _) = setup(db).await;
        let x = xs(3000);
        record(db, &a, &x).await;
        let now = T0 + 10_000;
        // A few points of escalation rate: medium risk, no SLO breached.
        let s = simulate(
            db,
            &SEED,
            &req(
                "mid",
                PolicyDiff {
                    escalate_threshold: Some(0.51),
                    ..Default::default()
                },
            ),
            now,
        )
        .await
        .unwrap();
        let d = s.impact.escalation_delta_pp;
        assert!((-5.0..-1.0).contains(&d), "{l}: {d}");
        assert!(
            s.impact.breached_slos.is_empty(),
            "{l}: {:?}",
            s.impact.breached_slos
        );
        assert_eq!(
            (s.impact.risk, s.recommendation),
            (RiskLevel::Medium, Recommendation::Review),
            "{l}"
        );
        let e = apply(db, &SEED, "mid", now).await.unwrap_err();
        assert!(
            matches!(
                e,
                SimError::Conflict {
                    code: "not_approved",
                    ..
                }
            ),
            "{l}: {e}"
        );
        // Far fewer escalations: containment collapses, an SLO is breached: reject.
        let s = simulate(
            db,
            &SEED,
            &req(
                "far",
                PolicyDiff {
                    escalate_threshold: Some(0.9),
                    ..Default::default()
                },
            ),
            now,
        )
        .await
        .unwrap();
        assert_eq!(s.recommendation, Recommendation::Reject, "{l}");
        assert!(!s.impact.breached_slos.is_empty(), "{l}");
        // Bad diffs change nothing.
        for diff in [
            PolicyDiff::default(),
            PolicyDiff {
                escalate_threshold: Some(f64::NAN),
                ..Default::default()
            },
            PolicyDiff {
                canary_weight: Some(2.0),
                ..Default::default()
            },
        ] {
            assert!(
                matches!(
                    simulate(db, &SEED, &req("bad", diff), now).await,
                    Err(SimError::Invalid(_))
                ),
                "{l}"
            );
        }
        let e = simulate(
            db,
            &SEED,
            &req(
                "bad",
                PolicyDiff {
                    canary_weight: Some(0.1),
                    ..Default::default()
                },
            ),
            now,
        )
        .await
        .unwrap_err();
        assert!(
            matches!(
                e,
                SimError::Conflict {
                    code: "no_canary",
                    ..
                }
            ),
            "{l}: {e}"
        );
        t.cleanup().await;
    }
}

#[tokio::test]
async fn a_model_change_is_rescored_from_the_recorded_features() {
    for t in all_dbs("sim_model").await {
        let (db, l) = (&t.db, t.label);
        let (a, b) = setup(db).await;
        let x = xs(2000);
        record(db, &a, &x).await;
        let s = simulate(
            db,
            &SEED,
            &req(
                "m",
                PolicyDiff {
                    model_version: Some(b.version()),
                    ..Default::default()
                },
            ),
            T0 + 10_000,
        )
        .await
        .unwrap();
        assert!(
            (s.after.escalation_rate - rate(&b, &x, 0.5)).abs() < 1e-9,
            "{l}"
        );
        assert_eq!(
            s.candidate_model_escalation_rate,
            Some(s.after.escalation_rate),
            "{l}"
        );
        assert_eq!(
            s.impact.latency_delta_pct, None,
            "{l}: not predicted across models"
        );
        assert_eq!(s.after.by_arm.get("champion"), Some(&2000), "{l}");
        // A canary of that model measured later: the accuracy is stored with the simulation.
        let acc = record_accuracy(
            db,
            "canary-x-1",
            &b.version(),
            s.after.escalation_rate * 1.01,
            500,
        )
        .await
        .unwrap()
        .unwrap();
        assert!(acc.accuracy > 0.98 && acc.accuracy < 1.0, "{l}: {acc:?}");
        let stored = get(db, &s.simulation_id).await.unwrap().unwrap();
        assert_eq!(stored.accuracy, Some(acc), "{l}");
        t.cleanup().await;
    }
}

/// The plan of `sql` with `binds` bound (SQLite's `EXPLAIN QUERY PLAN` details, or
/// PostgreSQL's `EXPLAIN` lines).
async fn plan(db: &Db, sql: &str, binds: &[i64], schema: bool) -> Vec<String> {
    let (explain, col) = match db.backend {
        crate::store::Backend::Sqlite => ("EXPLAIN QUERY PLAN ", "detail"),
        crate::store::Backend::Postgres => ("EXPLAIN ", "QUERY PLAN"),
    };
    let text = format!("{explain}{sql}");
    let mut q = sqlx::query(&text).bind(binds[0]).bind(binds[1]);
    if schema {
        q = q.bind(SCHEMA_VERSION).bind(binds[2]);
    }
    q.fetch_all(&db.pool)
        .await
        .unwrap()
        .iter()
        .map(|r| r.try_get::<String, _>(col).unwrap())
        .collect()
}

#[tokio::test]
async fn the_replay_reads_use_linear_plans() {
    // With bound parameters and no statistics (what the simulator runs), SQLite once joined
    // each label to every decision of its tenant in the window (decision_log_tenant_created):
    // quadratic, more than 12 minutes for a million decisions. Both reads now walk one index.
    for t in all_dbs("sim_plans").await {
        let (db, l) = (&t.db, t.label);
        let (a, _) = setup(db).await;
        record(db, &a, &xs(200)).await;
        let labelled = plan(db, &labelled_sql(), &[T0, T0 + 10_000], false).await;
        let recorded = plan(db, RECORDED_SQL, &[T0, T0 + 10_000, MAX_REPLAY], true).await;
        println!("{l}: labels {labelled:#?}\n{l}: decisions {recorded:#?}");
        if db.backend == crate::store::Backend::Sqlite {
            // The join looks each row up by both keys; never per tenant.
            assert!(
                labelled
                    .iter()
                    .any(|p| p.contains("(tenant=? AND pcs_id=?")),
                "{labelled:?}"
            );
            assert!(
                !labelled
                    .iter()
                    .any(|p| p.contains("decision_log_tenant_created")),
                "{labelled:?}"
            );
            // Newest first straight off the time index: no sort of the window.
            assert!(
                recorded
                    .iter()
                    .any(|p| p.contains("decision_log_created_at"))
                    && !recorded.iter().any(|p| p.contains("TEMP B-TREE")),
                "{recorded:?}"
            );
        }
        t.cleanup().await;
    }
}

#[test]
#[ignore = "benchmark: cargo test -p kakeya-control-plane --lib simulator::tests::bench -- --ignored --nocapture"]
fn bench_replay_of_a_million_decisions() {
    let (a, b) = (model(0.0), model(-0.3));
    let x = xs(1_000_000);
    let rows: Vec<Recorded> = x
        .iter()
        .enumerate()
        .map(|(i, x)| {
            let risk = a.score(x).1;
            Recorded {
                tenant: format!("t{}", i % 1000),
                pcs_id: format!("p{i}"),
                accepted: true,
                escalated: risk >= 0.5,
                risk,
                high: risk >= 0.5,
                model_version: a.version(),
                x: *x,
                label: (i % 3 == 0).then_some(risk > 0.45),
                votes: None,
            }
        })
        .collect();
    let models: BTreeMap<String, Model> = [(a.version(), a.clone())].into();
    for (what, champion, threshold) in [
        ("threshold change", a.clone(), Some(0.52)),
        ("model change", b, None),
    ] {
        let bundle = Bundle {
            format: kakeya_core::bundle::BUNDLE_FORMAT.into(),
            version: 1,
            created_at_ms: 0,
            champion,
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
        };
        let cand = Candidate {
            bundle,
            champion_threshold: threshold,
            ensemble: None,
        };
        let t0 = std::time::Instant::now();
        let r = replay(&rows, &models, &cand);
        println!(
            "replay of {} recorded decisions ({what}): {:.2} s, escalation {:.4} → {:.4}",
            rows.len(),
            t0.elapsed().as_secs_f64(),
            r.before.escalation_rate,
            r.after.escalation_rate
        );
    }
}

/// The 2-of-3 policy of the ensemble tests: pcs_recompute, hrs and rag_grounding at weight 1.
fn two_of_three() -> kakeya_core::ensemble_policy::EnsemblePolicy {
    use kakeya_core::ensemble_policy::{EnsemblePolicy, Stack, StrategyConfig};
    let s = || StrategyConfig {
        weight: 1.0,
        accept_below: None,
        reject_above: None,
        deadline_ms: None,
    };
    EnsemblePolicy {
        policy_id: "p-2of3".into(),
        n: 2,
        strategies: ["pcs_recompute", "hrs", "rag_grounding"]
            .into_iter()
            .map(|n| (n.to_string(), s()))
            .collect(),
        min_confidence: 0.6,
        reject_confidence: 0.8,
        fail_open: true,
        stack: Stack::default(),
        sources: None,
    }
}

/// Five decisions of tenant `acme` with hand-picked votes (`None` = abstained) and the
/// verdict the 2-of-3 policy gives them (`decide` under [`two_of_three`], checked by hand):
/// 1. 3 accepts, a = 0.9                                   → accept
/// 2. 2 accepts, a = (1 + 0.7)/3 = 0.567 < 0.6, r = 0.3      → escalate
/// 3. 2 accepts (hrs abstains), a = (1 + 0.9)/2 = 0.95       → accept
/// 4. 3 rejects, r = 0.933 ≥ 0.8                             → reject
/// 5. pcs rejects 0.5 (claim inconsistent), a = 0.633: accept, but not verified → escalate
type Votes = [(&'static str, Option<bool>, f64); 3];
const VOTES: [(Votes, &str); 5] = [
    (
        [
            ("pcs_recompute", Some(true), 1.0),
            ("hrs", Some(true), 0.9),
            ("rag_grounding", Some(true), 0.8),
        ],
        "accept",
    ),
    (
        [
            ("pcs_recompute", Some(true), 1.0),
            ("hrs", Some(true), 0.7),
            ("rag_grounding", Some(false), 0.9),
        ],
        "escalate",
    ),
    (
        [
            ("pcs_recompute", Some(true), 1.0),
            ("hrs", None, 0.0),
            ("rag_grounding", Some(true), 0.9),
        ],
        "accept",
    ),
    (
        [
            ("pcs_recompute", Some(false), 1.0),
            ("hrs", Some(false), 0.9),
            ("rag_grounding", Some(false), 0.9),
        ],
        "reject",
    ),
    (
        [
            ("pcs_recompute", Some(false), 0.5),
            ("hrs", Some(true), 0.95),
            ("rag_grounding", Some(true), 0.95),
        ],
        "escalate",
    ),
];

/// Records [`VOTES`] as the gate logs them (votes JSON, features, risk), serves a bundle
/// whose `acme` policy is [`two_of_three`], and labels decision 3 hallucinated and 1
/// faithful.
async fn record_votes(db: &Db, m: &Model) {
    use crate::ensemble::store::{set_policy, LoggedArm, PolicyRow, Reason};
    use kakeya_core::verify::EnsembleSummary;
    use kakeya_core::vote::{Vote, VoteOutcome};
    let p = two_of_three();
    let row = PolicyRow {
        tenant: "acme".into(),
        arms: vec![LoggedArm {
            policy: p.clone(),
            propensity: 1.0,
        }],
        policy: p,
        run_id: None,
        updated_at_ms: 1,
    };
    let mut conn = db.pool.acquire().await.unwrap();
    set_policy(&mut conn, &row, Reason::Manual).await.unwrap();
    drop(conn);
    registry::republish(db, &SEED, 6).await.unwrap();
    let x = xs(VOTES.len());
    for (i, ((votes, verdict), x)) in VOTES.iter().zip(&x).enumerate() {
        let summary = EnsembleSummary {
            policy_id: "p-2of3".into(),
            verdict: verdict.to_string(),
            votes: votes
                .iter()
                .map(|(s, v, c)| {
                    let o = match v {
                        Some(true) => VoteOutcome::Accept,
                        Some(false) => VoteOutcome::Reject,
                        None => VoteOutcome::Abstain,
                    };
                    Vote::new(*s, o, *c, "test")
                })
                .collect(),
        };
        let (accepted, escalated) = match *verdict {
            "accept" => (1, 0),
            "escalate" => (1, 1),
            _ => (0, 0),
        };
        sqlx::query(
            "INSERT INTO decision_log (record_id, tenant, pcs_id, d_hat, coh_star, r, budget, \
             regime, accepted, escalated, reason, status, cacheable, verify_ns, created_at_ms, \
             risk, risk_band, model_version, arm, bundle_version, pcs_version, feature_schema, \
             features, votes) VALUES ($1, 'acme', $2, 1.2, 0.7, 0.5, 1.0, 'sticky', $3, $4, \
             NULL, 200, 1, 40000, $5, $6, 'low', $7, 'champion', 1, 'v0.2', $8, $9, $10)",
        )
        .bind(format!("e{i}"))
        .bind(format!("q{}", i + 1))
        .bind(accepted)
        .bind(escalated)
        .bind(T0 + i as i64)
        .bind(m.score(x).1)
        .bind(m.version())
        .bind(SCHEMA_VERSION)
        .bind(serde_json::to_string(&x.to_vec()).unwrap())
        .bind(summary.to_json())
        .execute(&db.pool)
        .await
        .unwrap();
    }
    for (pcs, label) in [("q3", "hallucinated"), ("q1", "faithful")] {
        sqlx::query(
            "INSERT INTO labels (tenant, pcs_id, labeller, source, label, confidence, comment, \
             created_at_ms) VALUES ('acme', $1, 'rev', 'gold', $2, 1.0, NULL, $3)",
        )
        .bind(pcs)
        .bind(label)
        .bind(T0)
        .execute(&db.pool)
        .await
        .unwrap();
    }
}

fn ens(e: ensemble::EnsembleDiff) -> PolicyDiff {
    PolicyDiff {
        ensemble: Some(e),
        ..Default::default()
    }
}

#[tokio::test]
async fn an_ensemble_diff_is_replayed_over_the_recorded_votes() {
    use ensemble::EnsembleDiff;
    for t in all_dbs("sim_ensemble").await {
        let (db, l) = (&t.db, t.label);
        let (a, _) = setup(db).await;
        record_votes(db, &a).await;
        let now = T0 + 10_000;
        let sim = |id: &'static str, e: EnsembleDiff| {
            let r = req(id, ens(e));
            async move { simulate(db, &SEED, &r, now).await }
        };
        // 3 of 3: decision 3 (2 accepts, hrs abstained) is escalated; the rest stay.
        let s = sim(
            "n3",
            EnsembleDiff {
                n: Some(3),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(
            (s.before.escalated, s.before.rejected, s.before.decisions),
            (2, 1, 5),
            "{l}"
        );
        assert_eq!((s.after.escalated, s.after.rejected), (3, 1), "{l}");
        assert_eq!(s.impact.flipped, 1, "{l}");
        assert!((s.impact.escalation_delta_pp - 20.0).abs() < 1e-9, "{l}");
        // The labelled hallucination (decision 3) is now contained: 0 → 100 %.
        assert_eq!(s.before.containment, Some(0.0), "{l}");
        assert_eq!(s.after.containment, Some(1.0), "{l}");
        // rag_grounding at weight 0: decision 2 accepts (a = (1 + 0.7)/2 = 0.85); decision 5
        // stays escalated (a = 0.475, and it was not verified).
        let s = sim(
            "rag0",
            EnsembleDiff {
                weights: [("rag_grounding".to_string(), 0.0)].into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert_eq!((s.after.escalated, s.after.rejected), (1, 1), "{l}");
        assert_eq!(s.impact.flipped, 1, "{l}");
        // fail_open off: the undecided decision 2 is rejected; decision 5 (an accept that was
        // not verified) stays escalated.
        let s = sim(
            "closed",
            EnsembleDiff {
                fail_open: Some(false),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert_eq!((s.after.escalated, s.after.rejected), (1, 2), "{l}");
        // hrs disabled (2 of {pcs_recompute, rag_grounding}): decision 2 is undecided
        // (1 accept) → escalate; 3 accepts; 5 not verified → escalate; 1 accepts, 4 rejects.
        let s = sim(
            "nohrs",
            EnsembleDiff {
                disable: vec!["hrs".into()],
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(
            (s.after.escalated, s.after.rejected, s.impact.flipped),
            (2, 1, 0),
            "{l}"
        );
        // Refused, nothing stored: a strategy whose votes were not recorded, an invalid
        // policy, an unknown strategy, a tenant without a policy.
        let e = sim(
            "mv",
            EnsembleDiff {
                weights: [("micro_vote".to_string(), 1.0)].into(),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
        assert!(
            matches!(
                e,
                SimError::Conflict {
                    code: "votes_not_recorded",
                    ..
                }
            ),
            "{l}: {e}"
        );
        for bad in [
            EnsembleDiff {
                n: Some(4),
                ..Default::default()
            },
            EnsembleDiff {
                disable: vec!["lightweight".into()],
                ..Default::default()
            },
            EnsembleDiff::default(),
        ] {
            let e = sim("bad", bad).await.unwrap_err();
            assert!(matches!(e, SimError::Invalid(_)), "{l}: {e}");
        }
        let e = sim(
            "other",
            EnsembleDiff {
                tenant: Some("nobody".into()),
                n: Some(1),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
        assert!(
            matches!(
                e,
                SimError::Conflict {
                    code: "no_ensemble_policy",
                    ..
                }
            ),
            "{l}: {e}"
        );
        // Applied (the no-hrs change flips nothing: approved): the served bundle carries it.
        let applied = apply(db, &SEED, "nohrs", now + 1).await.unwrap();
        assert!(applied.applied_at_ms.is_some(), "{l}");
        let pk = keys::public_key_b64(&SEED);
        let (_, b) = registry::served_bundle(db, &pk).await.unwrap().unwrap();
        let p = b.ensemble.for_tenant("acme").unwrap();
        assert_eq!(p.policy_id, "nohrs", "{l}");
        assert!(!p.strategies.contains_key("hrs"), "{l}");
        t.cleanup().await;
    }
}
