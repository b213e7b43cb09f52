//! The adaptive ensemble on SQLite and PostgreSQL: feedback validation, the sample-count 409,
//! a synthetic tenant whose best arm the tuner must find, the IPS gate, publication into the
//! next signed bundle and persistence across a store reopen; and the routes' answers.

use super::outcomes::StrategyResult;
use super::{
    feedback, tune, EnsembleError, EnsembleOptions, FeedbackRequest, Trigger, TuneOutcome,
};
use crate::registry::tests::model;
use crate::registry::{self, card, history::Why, CHAMPION};
use crate::store::Db;
use crate::testutil::all_dbs;
use kakeya_core::ensemble_policy::{EnsemblePolicy, Stack, StrategyConfig};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;

const SEED: [u8; 32] = [9u8; 32];

/// A decision-log row (accepted by the legacy path: the logged action is accept).
async fn log_decision(db: &Db, tenant: &str, pcs_id: &str, at: i64) {
    sqlx::query(
        "INSERT INTO decision_log (record_id, tenant, pcs_id, d_hat, coh_star, r, budget, \
         regime, accepted, escalated, reason, status, cacheable, verify_ns, created_at_ms) \
         VALUES ($1, $2, $3, 1.0, 0.5, 0.9, 0.3, 'mixed', 1, 0, NULL, 200, 1, 1000, $4)",
    )
    .bind(format!("{tenant}:{pcs_id}"))
    .bind(tenant)
    .bind(pcs_id)
    .bind(at)
    .execute(&db.pool)
    .await
    .unwrap();
}

async fn gold_label(db: &Db, tenant: &str, pcs_id: &str, hallucinated: bool, at: i64) {
    sqlx::query(
        "INSERT INTO labels (tenant, pcs_id, labeller, source, label, confidence, comment, \
         created_at_ms) VALUES ($1, $2, 'rev', 'gold', $3, 1.0, NULL, $4)",
    )
    .bind(tenant)
    .bind(pcs_id)
    .bind(if hallucinated {
        "hallucinated"
    } else {
        "faithful"
    })
    .bind(at)
    .execute(&db.pool)
    .await
    .unwrap();
}

fn vote(name: &str, accepted: bool, confidence: f64) -> StrategyResult {
    StrategyResult {
        strategy_name: name.into(),
        accepted,
        confidence,
    }
}

/// The synthetic tenant: 30 % hallucinated. `pcs_recompute` accepts everything (verification
/// passes honest and hallucinated answers alike), `hrs` rejects 60 % of hallucinations and
/// `rag_grounding` 80 %, both accept faithful answers confidently; 1 % of faithful answers
/// get confident rejects from both (the honest-escalation floor of every arm). The best arms
/// (`min_confidence` 0.8) escalate every hallucination and accept ~99 % of faithful answers;
/// lenient ones (0.5–0.7 with N < 3) accept many hallucinations.
fn synthetic(rng: &mut StdRng) -> (bool, Vec<StrategyResult>) {
    let h = rng.gen::<f64>() < 0.3;
    let mut votes = vec![vote("pcs_recompute", true, 0.95)];
    if h {
        let hrs = rng.gen::<f64>() < 0.6;
        let rag = rng.gen::<f64>() < 0.8;
        votes.push(vote("hrs", !hrs, if hrs { 0.8 } else { 0.6 }));
        votes.push(vote("rag_grounding", !rag, if rag { 0.9 } else { 0.6 }));
    } else if rng.gen::<f64>() < 0.01 {
        votes.push(vote("hrs", false, 0.9));
        votes.push(vote("rag_grounding", false, 0.9));
    } else {
        votes.push(vote("hrs", true, rng.gen_range(0.75..1.0)));
        votes.push(vote("rag_grounding", true, rng.gen_range(0.75..1.0)));
    }
    (h, votes)
}

/// `n` labelled decisions of `tenant` with their feedback.
async fn populate(db: &Db, tenant: &str, n: usize, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    for i in 0..n {
        let pcs_id = format!("{tenant}-{i}");
        log_decision(db, tenant, &pcs_id, 1000 + i as i64).await;
        let (h, votes) = synthetic(&mut rng);
        let agreed = votes.iter().all(|v| v.accepted) || votes.iter().all(|v| !v.accepted);
        let req = FeedbackRequest {
            pcs_id: pcs_id.clone(),
            tenant_id: None,
            agreed,
            strategy_results: votes,
        };
        feedback(db, &req, 2000 + i as i64).await.unwrap();
        gold_label(db, tenant, &pcs_id, h, 3000 + i as i64).await;
    }
}

async fn champion(db: &Db) {
    let a = model(-1.0);
    registry::insert_model(db, &SEED, &a, &card::from_artifact(&a), 1)
        .await
        .unwrap();
    let why = Why::manual(crate::registry::Actor::Cli("test".into()), None);
    registry::move_alias(db, &SEED, CHAMPION, &a.version(), None, &why, 2)
        .await
        .unwrap();
}

async fn served(db: &Db) -> kakeya_core::bundle::Bundle {
    let key = registry::keys::public_key_b64(&SEED);
    registry::served_bundle(db, &key).await.unwrap().unwrap().1
}

#[tokio::test]
async fn feedback_is_validated_and_changes_nothing_when_refused() {
    for t in all_dbs("ensemble_feedback").await {
        let (db, l) = (&t.db, t.label);
        log_decision(db, "acme", "p1", 1).await;
        let req = |results: Vec<StrategyResult>, pcs: &str| FeedbackRequest {
            pcs_id: pcs.into(),
            tenant_id: None,
            agreed: true,
            strategy_results: results,
        };
        let bad = [
            req(vec![vote("lightweight", true, 0.5)], "p1"),
            req(vec![vote("hrs", true, 1.5)], "p1"),
            req(vec![vote("hrs", true, -0.1)], "p1"),
            req(vec![vote("hrs", true, 0.5), vote("hrs", false, 0.5)], "p1"),
            req(vec![vote("hrs", true, 0.5)], ""),
        ];
        for r in &bad {
            assert!(
                matches!(feedback(db, r, 5).await, Err(EnsembleError::Invalid(_))),
                "{l}: {r:?}"
            );
        }
        assert!(
            matches!(
                feedback(db, &req(vec![vote("hrs", true, 0.5)], "nope"), 5).await,
                Err(EnsembleError::NotFound(_))
            ),
            "{l}"
        );
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM ensemble_outcomes")
            .fetch_one(&db.pool)
            .await
            .unwrap();
        assert_eq!(n, 0, "{l}: nothing stored");
        // Two tenants with one pcs_id: ambiguous without tenant_id, fine with it.
        log_decision(db, "other", "p1", 2).await;
        let r = req(vec![vote("hrs", true, 0.5)], "p1");
        assert!(
            matches!(feedback(db, &r, 5).await, Err(EnsembleError::Ambiguous(_))),
            "{l}"
        );
        let r = FeedbackRequest {
            tenant_id: Some("acme".into()),
            ..r
        };
        assert_eq!(feedback(db, &r, 5).await.unwrap(), "acme", "{l}");
        t.cleanup().await;
    }
}

#[tokio::test]
async fn tune_needs_the_configured_sample_count() {
    for t in all_dbs("ensemble_409").await {
        let (db, l) = (&t.db, t.label);
        populate(db, "small", 40, 1).await;
        let opts = EnsembleOptions::default();
        match tune(db, Some(&SEED), &opts, "small", Trigger::Api, Some(1), 10).await {
            Err(EnsembleError::InsufficientSamples { count, needed, .. }) => {
                assert_eq!((count, needed), (40, 100), "{l}")
            }
            other => panic!("{l}: {other:?}"),
        }
        // Configurable.
        let opts = EnsembleOptions {
            min_samples: 30,
            ..opts
        };
        assert!(
            tune(db, Some(&SEED), &opts, "small", Trigger::Api, Some(1), 10)
                .await
                .is_ok(),
            "{l}"
        );
        t.cleanup().await;
    }
}

/// The tuner finds a best arm on the synthetic tenant with high probability (seeded),
/// publishes it into the next signed bundle, and the policy survives a store reopen and
/// reaches the bundle published after it.
#[tokio::test]
async fn tuned_policy_is_near_optimal_published_and_survives_a_restart() {
    for t in all_dbs("ensemble_tune").await {
        let (db, l) = (&t.db, t.label);
        champion(db).await;
        assert!(served(db).await.ensemble.is_empty(), "{l}");
        populate(db, "acme", 600, 7).await;
        let opts = EnsembleOptions::default();
        let rows = super::outcomes::labelled(db, "acme").await.unwrap();
        assert_eq!(rows.len(), 600, "{l}");
        let strategies = super::arms::voting_strategies(&rows);
        let caps = super::arms::Caps {
            max_honest_escalation: opts.max_honest_escalation,
            max_latency_ms: opts.max_latency_ms,
            max_callouts: opts.max_callouts,
        };
        let best = super::arms::arms(&super::arms::base_policy(), &strategies, "acme")
            .iter()
            .map(|a| super::arms::record(a, &rows, &caps))
            .filter(|r| r.feasible)
            .map(|r| r.successes as f64 / (r.successes + r.failures) as f64)
            .fold(0.0, f64::max);
        let r = tune(
            db,
            Some(&SEED),
            &opts,
            "acme",
            Trigger::Api,
            Some(3),
            10_000,
        )
        .await
        .unwrap();
        assert_eq!(r.outcome, TuneOutcome::Published, "{l}: {:?}", r.reason);
        let chosen = super::arms::record(
            &super::store::policy(&db.pool, "acme")
                .await
                .unwrap()
                .unwrap()
                .policy,
            &rows,
            &caps,
        );
        let got = chosen.successes as f64 / 600.0;
        assert!(got >= best - 0.02, "{l}: chosen {got} vs best {best}");
        assert!(
            chosen.honest_escalation_rate <= opts.max_honest_escalation,
            "{l}"
        );
        assert!(r.replay.snips.is_some() && r.replay.ips.is_some(), "{l}");
        assert!(r.stack_fitted, "{l}: 600 rows fit a stack");
        // In the bundle published by the tune.
        let b = served(db).await;
        assert_eq!(Some(b.version as i64), r.bundle_version, "{l}");
        let p = b.ensemble.tenants.get("acme").expect("the tenant's policy");
        assert_eq!(p.policy_id, r.policy_id, "{l}");
        assert_eq!(
            b.ensemble.default, None,
            "{l}: no default unless configured"
        );
        // A restart: a new pool on the same database still has it, and so does the next bundle.
        let db2 = t.reopen().await;
        let v = super::policy_view(&db2, "acme").await.unwrap().unwrap();
        assert_eq!(
            (v.policy_id.as_str(), v.source.as_str()),
            (r.policy_id.as_str(), "tenant"),
            "{l}"
        );
        let again = registry::republish(&db2, &SEED, 20_000).await.unwrap();
        let b2 = served(&db2).await;
        assert_eq!(b2.version as i64, again.bundle_version, "{l}");
        assert_eq!(b2.ensemble.tenants.get("acme"), Some(p), "{l}");
        // The history has the change with its reason and the run.
        let h = super::store::history(&db2.pool, "acme", 10).await.unwrap();
        assert_eq!(
            (h.len(), h[0].reason.as_str(), h[0].run_id),
            (1, "tuned", Some(r.run_id)),
            "{l}"
        );
        // Feedback after the change logs the tuned policy's decision and its propensity.
        log_decision(&db2, "acme", "late", 50_000).await;
        let req = FeedbackRequest {
            pcs_id: "late".into(),
            tenant_id: None,
            agreed: false,
            strategy_results: vec![vote("pcs_recompute", true, 0.95), vote("hrs", false, 0.9)],
        };
        feedback(&db2, &req, 50_001).await.unwrap();
        let (pid, prop): (Option<String>, f64) = sqlx::query_as(
            "SELECT policy_id, propensity FROM ensemble_outcomes WHERE pcs_id = 'late'",
        )
        .fetch_one(&db2.pool)
        .await
        .unwrap();
        assert_eq!(pid.as_deref(), Some(r.policy_id.as_str()), "{l}");
        assert!(prop > 0.0 && prop <= 1.0, "{l}: {prop}");
        // The best arm is found with high probability: of 20 seeded runs (ε decaying from
        // 0.071), at least 18 choose an arm whose replayed success rate is the best one.
        let mut found = 0;
        for sd in 0..20u64 {
            let r = tune(
                &db2,
                Some(&SEED),
                &opts,
                "acme",
                Trigger::Api,
                Some(100 + sd),
                60_000,
            )
            .await
            .unwrap();
            assert_eq!(r.outcome, TuneOutcome::Published, "{l}: {:?}", r.reason);
            let p = super::store::policy(&db2.pool, "acme")
                .await
                .unwrap()
                .unwrap();
            let c = super::arms::record(&p.policy, &rows, &caps);
            found += usize::from(c.successes as f64 / 600.0 >= best);
        }
        assert!(found >= 18, "{l}: a best arm in {found} of 20 runs");
        db2.pool.close().await;
        t.cleanup().await;
    }
}

/// No feasible arm (a 0 % honest-escalation cap the data cannot meet): refused, recorded,
/// nothing published.
#[tokio::test]
async fn infeasible_caps_refuse_and_change_nothing() {
    for t in all_dbs("ensemble_refuse").await {
        let (db, l) = (&t.db, t.label);
        champion(db).await;
        populate(db, "acme", 300, 5).await;
        // A faithful answer both informative strategies reject: every arm escalates it.
        log_decision(db, "acme", "hard", 9000).await;
        let req = FeedbackRequest {
            pcs_id: "hard".into(),
            tenant_id: None,
            agreed: false,
            strategy_results: vec![
                vote("pcs_recompute", true, 0.95),
                vote("hrs", false, 0.9),
                vote("rag_grounding", false, 0.9),
            ],
        };
        feedback(db, &req, 9001).await.unwrap();
        gold_label(db, "acme", "hard", false, 9002).await;
        let before = served(db).await.version;
        let opts = EnsembleOptions {
            max_honest_escalation: 0.0,
            ..EnsembleOptions::default()
        };
        let r = tune(db, Some(&SEED), &opts, "acme", Trigger::Api, Some(1), 10)
            .await
            .unwrap();
        assert_eq!(r.outcome, TuneOutcome::Refused, "{l}");
        assert!(
            r.reason
                .as_deref()
                .unwrap_or("")
                .contains("no feasible arm"),
            "{l}"
        );
        assert_eq!(served(db).await.version, before, "{l}");
        assert!(
            super::store::policy(&db.pool, "acme")
                .await
                .unwrap()
                .is_none(),
            "{l}"
        );
        let runs = super::store::runs(&db.pool, "acme", 5).await.unwrap();
        assert_eq!(runs[0].outcome, "refused", "{l}");
        t.cleanup().await;
    }
}

/// `ensemble.default` is published only when configured.
#[tokio::test]
async fn the_default_is_published_only_when_configured() {
    for t in all_dbs("ensemble_default").await {
        let (db, l) = (&t.db, t.label);
        let mut conn = db.pool.acquire().await.unwrap();
        let none = super::store::section(&mut conn, None).await.unwrap();
        assert!(none.is_empty(), "{l}");
        let p = EnsemblePolicy {
            policy_id: "default-2of3".into(),
            n: 2,
            strategies: ["pcs_recompute", "hrs", "rag_grounding"]
                .into_iter()
                .map(|s| {
                    (
                        s.to_string(),
                        StrategyConfig {
                            weight: 1.0,
                            accept_below: None,
                            reject_above: None,
                            deadline_ms: None,
                        },
                    )
                })
                .collect::<BTreeMap<_, _>>(),
            min_confidence: 0.6,
            reject_confidence: 0.8,
            fail_open: true,
            stack: Stack::default(),
            sources: None,
        };
        let some = super::store::section(&mut conn, Some(p.clone()))
            .await
            .unwrap();
        assert_eq!(some.default, Some(p), "{l}");
        drop(conn);
        t.cleanup().await;
    }
}

#[test]
fn options_from_the_environment() {
    use crate::testutil::env_map;
    let o = EnsembleOptions::from_parts(
        None,
        &env_map(&[
            ("KAKEYA_ENSEMBLE_MIN_SAMPLES", "250"),
            ("KAKEYA_ENSEMBLE_AUTO_TUNE", "true"),
            ("KAKEYA_ENSEMBLE_CHECK_EVERY", "10m"),
        ]),
    )
    .unwrap();
    assert_eq!(
        (o.min_samples, o.auto_tune, o.check_every.as_secs()),
        (250, true, 600)
    );
    assert!(
        EnsembleOptions::from_parts(None, &env_map(&[("KAKEYA_ENSEMBLE_EPSILON0", "2")])).is_err()
    );
    assert!(EnsembleOptions::from_parts(
        None,
        &env_map(&[("KAKEYA_ENSEMBLE_DEFAULT", r#"{"policy_id":"x","n":5,"strategies":{},"min_confidence":0.5,"reject_confidence":0.8,"fail_open":true}"#)])
    )
    .is_err());
}

/// The routes: 404 without a policy, 409 below the sample count, 400 on bad feedback, 204.
#[tokio::test]
async fn routes_answer_with_json_errors() {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let t = crate::testutil::sqlite_db().await;
    let db = &t.db;
    log_decision(db, "acme", "p1", 1).await;
    let metrics = crate::metrics::Metrics::new().unwrap();
    let router = crate::api::admin_router(crate::api::AdminState {
        db: db.clone(),
        metrics: metrics.clone(),
        committer: std::sync::Arc::new(crate::ingest::CommitterStatus {
            wal_ok: true.into(),
            db_ok: true.into(),
        }),
        wal_dir: std::env::temp_dir(),
        admin_token: crate::api::auth::Secret::new("tok"),
        bundle_seed: Some(std::sync::Arc::new(SEED)),
        evidence: None,
        leases: crate::lease::Leases::new(
            metrics.leader.clone(),
            std::time::Duration::from_secs(5),
        ),
        scheduler: Default::default(),
        drift: crate::drift::DriftOptions::default(),
        cost: Default::default(),
        canary: crate::canary::CanaryOptions::default(),
    });
    let call = |method: &'static str, path: &'static str, body: &'static str| {
        let router = router.clone();
        async move {
            let resp = router
                .oneshot(
                    Request::builder()
                        .method(method)
                        .uri(path)
                        .header("authorization", "Bearer tok")
                        .header("content-type", "application/json")
                        .body(Body::from(body))
                        .unwrap(),
                )
                .await
                .unwrap();
            let status = resp.status();
            let bytes = resp.into_body().collect().await.unwrap().to_bytes();
            let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
            (status, v)
        }
    };
    let (s, v) = call("GET", "/v1/ensemble/policy?tenant_id=acme", "").await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    let (s, v) = call("POST", "/v1/ensemble/tune", r#"{"tenant_id":"acme"}"#).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::CONFLICT, Some("insufficient_samples"))
    );
    assert!(
        v["error"].as_str().unwrap_or("").contains("has 0 labelled"),
        "{v}"
    );
    for bad in [
        r#"{"pcs_id":"p1","agreed":true,"strategy_results":[{"strategy_name":"lightweight","accepted":true,"confidence":0.5}]}"#,
        r#"{"pcs_id":"p1","agreed":true,"strategy_results":[{"strategy_name":"hrs","accepted":true,"confidence":1.2}]}"#,
        r#"{"pcs_id":"p1","agreed":true}"#,
        r#"{"pcs_id":"p1","agreed":true,"strategy_results":[],"extra":1}"#,
        "not json",
    ] {
        let (s, v) = call("POST", "/v1/ensemble/feedback", bad).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {v}");
        assert!(v["error"].is_string() && v["code"].is_string(), "{v}");
    }
    let (s, v) = call(
        "POST",
        "/v1/ensemble/feedback",
        r#"{"pcs_id":"zzz","agreed":true,"strategy_results":[]}"#,
    )
    .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    let (s, _) = call(
        "POST",
        "/v1/ensemble/feedback",
        r#"{"pcs_id":"p1","agreed":true,"strategy_results":[{"strategy_name":"hrs","accepted":true,"confidence":0.9}]}"#,
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, v) = call("GET", "/v1/ensemble/history?tenant_id=acme", "").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["runs"][0]["outcome"], "insufficient_data", "{v}");
    let (s, _) = call("GET", "/v1/ensemble/history?tenant_id=acme&limit=0", "").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // The gauges from the stored outcomes.
    super::refresh_gauges(db).await.unwrap();
    let text = metrics.render();
    assert!(
        text.contains("kakeya_ensemble_agreement_rate{tenant=\"acme\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("kakeya_ensemble_tune_runs_total{outcome=\"insufficient_data\"}"),
        "{text}"
    );
    t.cleanup().await;
}

/// A decision-log row carrying the gate's votes (`decision_log.votes`, as ingest writes it).
async fn log_decision_with_votes(db: &Db, tenant: &str, pcs_id: &str, at: i64, votes: &str) {
    sqlx::query(
        "INSERT INTO decision_log (record_id, tenant, pcs_id, d_hat, coh_star, r, budget, \
         regime, accepted, escalated, reason, status, cacheable, verify_ns, created_at_ms, votes) \
         VALUES ($1, $2, $3, 1.0, 0.5, 0.9, 0.3, 'mixed', 1, 0, NULL, 200, 1, 1000, $4, $5)",
    )
    .bind(format!("{tenant}:{pcs_id}:{at}"))
    .bind(tenant)
    .bind(pcs_id)
    .bind(at)
    .bind(votes)
    .execute(&db.pool)
    .await
    .unwrap();
}

/// The gate's summary of `results` plus an abstaining micro-vote, decided `verdict`.
fn summary_json(results: &[StrategyResult], verdict: &str) -> String {
    use kakeya_core::vote::{Vote, VoteOutcome};
    let mut votes: Vec<Vote> = results
        .iter()
        .map(|r| {
            let o = if r.accepted {
                VoteOutcome::Accept
            } else {
                VoteOutcome::Reject
            };
            Vote::new(r.strategy_name.clone(), o, r.confidence, "test")
        })
        .collect();
    votes.push(Vote::new(
        "micro_vote",
        VoteOutcome::Abstain,
        0.0,
        "timeout",
    ));
    kakeya_core::verify::EnsembleSummary {
        policy_id: "logged-policy".into(),
        verdict: verdict.into(),
        votes,
    }
    .to_json()
}

/// Labelled decisions whose votes the decision log recorded are tuning outcomes, alongside
/// feedback: a pcs_id in both counts once (the feedback's votes), abstentions are left out,
/// unlabelled or unparseable rows are skipped, and a tune needs no feedback at all.
#[tokio::test]
async fn decision_log_votes_are_outcomes_without_double_counting() {
    for t in all_dbs("ensemble_log_votes").await {
        let (db, l) = (&t.db, t.label);
        champion(db).await;
        let mut rng = StdRng::seed_from_u64(11);
        let mut expected = BTreeMap::new();
        for i in 0..150 {
            let pcs_id = format!("log-{i}");
            let (h, votes) = synthetic(&mut rng);
            let verdict = if votes.iter().all(|v| v.accepted) {
                "accept"
            } else {
                "escalate"
            };
            log_decision_with_votes(
                db,
                "acme",
                &pcs_id,
                1000 + i,
                &summary_json(&votes, verdict),
            )
            .await;
            gold_label(db, "acme", &pcs_id, h, 5000 + i).await;
            expected.insert(pcs_id, (votes, h));
        }
        // Feedback about 30 of the same decisions, with other votes: those count once, with
        // the feedback's votes.
        for i in 0..30 {
            let pcs_id = format!("log-{i}");
            let req = FeedbackRequest {
                pcs_id: pcs_id.clone(),
                tenant_id: None,
                agreed: true,
                strategy_results: vec![vote("hrs", true, 0.97)],
            };
            feedback(db, &req, 2000 + i).await.unwrap();
            expected.get_mut(&pcs_id).unwrap().0 = req.strategy_results;
        }
        // The same pcs_id logged twice (its dedup slot expired) counts once.
        log_decision_with_votes(db, "acme", "log-40", 9000, &summary_json(&[], "escalate")).await;
        // Unlabelled, or votes that are not the gate's: not outcomes.
        log_decision_with_votes(db, "acme", "unlabelled", 9001, &summary_json(&[], "accept")).await;
        log_decision_with_votes(db, "acme", "garbage", 9002, "{\"votes\":7}").await;
        gold_label(db, "acme", "garbage", true, 9003).await;

        let rows = super::outcomes::labelled(db, "acme").await.unwrap();
        assert_eq!(rows.len(), 150, "{l}");
        assert_eq!(super::labelled_count(db, "acme").await.unwrap(), 150, "{l}");
        for o in &rows {
            let (votes, h) = &expected[&o.pcs_id];
            assert_eq!(&o.votes, votes, "{l}: {}", o.pcs_id);
            assert_eq!(o.hallucinated, *h, "{l}: {}", o.pcs_id);
            assert!(
                o.votes.iter().all(|v| v.strategy_name != "micro_vote"),
                "{l}"
            );
        }
        let from_log = rows.iter().find(|o| o.pcs_id == "log-100").unwrap();
        let all_accept = from_log.votes.iter().all(|v| v.accepted);
        assert_eq!(
            from_log.decision.as_str(),
            if all_accept { "accept" } else { "escalate" },
            "{l}: the logged verdict"
        );
        assert_eq!(from_log.propensity, 1.0, "{l}: no stored policy decided it");
        assert!(
            super::store::tenants(&db.pool)
                .await
                .unwrap()
                .contains(&"acme".to_string()),
            "{l}"
        );
        // 150 labelled outcomes, only 30 of them from feedback: enough for a tune.
        let r = tune(
            db,
            Some(&SEED),
            &EnsembleOptions::default(),
            "acme",
            Trigger::Api,
            Some(3),
            20_000,
        )
        .await;
        assert!(
            !matches!(r, Err(EnsembleError::InsufficientSamples { .. })),
            "{l}: {r:?}"
        );
        t.cleanup().await;
    }
}
