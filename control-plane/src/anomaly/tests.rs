//! The feedback loop, thresholds, clusters and active learning on SQLite and PostgreSQL, and
//! the routes through a live control plane (real sockets, real SQLite).

use super::cluster::{self, ClusterParams};
use super::store::{self, NewFeedback, Origin, Scored};
use super::threshold::{self, DEFAULT_THRESHOLD};
use super::{active, feedback, Action, AnomalyError, UserLabel};
use crate::api::tests::{bearer, config, http, read_token, Answer};
use crate::review::store::{queue_page, QueueStatus, QueuedFor};
use crate::review::tests::log_at;
use crate::review::Source;
use crate::server::{start, Running};
use crate::store::Db;
use crate::testutil::all_dbs;
use serde_json::json;

const T: i64 = 1_700_000_000_000;
const SCHEMA: &str = "anomaly-test-v1";

/// Logs an accepted decision of `tenant` at `T + i`; returns its pcs_id.
async fn log(db: &Db, tenant: &str, shard: &str, i: i64) -> String {
    log_at(db, tenant, shard, false, T + i).await
}

/// Logs a decision and records its anomaly score (what inline scoring will write).
async fn scored(
    db: &Db,
    tenant: &str,
    shard: &str,
    i: i64,
    score: f64,
    action: Action,
    features: &[f64],
) -> String {
    let p = log(db, tenant, shard, i).await;
    let mut conn = db.pool.acquire().await.unwrap();
    let s = Scored {
        score,
        uncertainty: 0.01,
        action,
        features,
        schema: SCHEMA,
    };
    assert!(store::record_score(&mut conn, tenant, &p, &s)
        .await
        .unwrap());
    p
}

fn fb(tenant: &str, pcs_id: &str, score: Option<f64>, label: UserLabel, by: &str) -> NewFeedback {
    NewFeedback::checked(Some(tenant), pcs_id, score, label, None, by, None).unwrap()
}

#[tokio::test]
async fn feedback_is_once_per_submitter_and_about_the_recorded_score() {
    for t in all_dbs("anomaly feedback").await {
        let db = &t.db;
        let l = t.label;
        let p = scored(db, "acme", "f1", 0, 0.7, Action::None, &[1.0]).await;
        let q = log(db, "acme", "f2", 1).await; // no recorded score
        let f = fb("acme", &p, None, UserLabel::Anomalous, "alice");
        assert_eq!(
            feedback::submit(db, None, &f, T).await.unwrap(),
            None,
            "{l}"
        );
        // The same submitter again, even with another label: refused, nothing changes.
        let again = fb("acme", &p, None, UserLabel::Normal, "alice");
        assert!(matches!(
            feedback::submit(db, None, &again, T + 1).await,
            Err(AnomalyError::Duplicate { .. })
        ));
        // Another submitter may; a score other than the recorded one is refused.
        let other = fb("acme", &p, Some(0.2), UserLabel::Normal, "bob");
        assert!(matches!(
            feedback::submit(db, None, &other, T + 2).await,
            Err(AnomalyError::Invalid(_))
        ));
        let other = fb("acme", &p, Some(0.7), UserLabel::Normal, "bob");
        feedback::submit(db, None, &other, T + 2).await.unwrap();
        // Without a recorded score the caller's is needed and used.
        let none = fb("acme", &q, None, UserLabel::Normal, "bob");
        assert!(matches!(
            feedback::submit(db, None, &none, T).await,
            Err(AnomalyError::Invalid(_))
        ));
        let given = fb("acme", &q, Some(0.1), UserLabel::Normal, "bob");
        feedback::submit(db, None, &given, T + 3).await.unwrap();
        // Unknown decision (or another tenant's): NoDecision.
        for (tenant, id) in [("acme", "no-such-pcs"), ("globex", p.as_str())] {
            let f = fb(tenant, id, Some(0.5), UserLabel::Normal, "bob");
            assert!(matches!(
                feedback::submit(db, None, &f, T).await,
                Err(AnomalyError::NoDecision { .. })
            ));
        }
        // Per decision one label counts: same source (silver), the newer (bob's normal).
        let mut pairs = feedback::labelled(db, "acme").await.unwrap();
        pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
        assert_eq!(pairs, [(0.1, false), (0.7, false)], "{l}");
        // A gold label beats both.
        let gold = NewFeedback::checked(
            Some("acme"),
            &p,
            None,
            UserLabel::Anomalous,
            Some("reviewed"),
            "carol",
            Some(Source::Gold),
        )
        .unwrap();
        feedback::submit(db, None, &gold, T + 4).await.unwrap();
        let c = feedback::confusion(db, "acme", Some(0.5)).await.unwrap();
        assert_eq!((c.tp, c.fp, c.fn_, c.tn), (1, 0, 0, 1), "{l}");
        let rows = store::feedback_of(&db.pool, "acme").await.unwrap();
        assert_eq!(rows.len(), 4);
        assert_eq!(rows[3].comment.as_deref(), Some("reviewed"));
        assert_eq!(store::labelled_count(&db.pool, "acme").await.unwrap(), 2);
        t.cleanup().await;
    }
}

#[test]
fn feedback_is_validated() {
    let ok = |s: Option<f64>, by: &str, c: Option<&str>| {
        NewFeedback::checked(None, "p", s, UserLabel::Normal, c, by, None)
    };
    assert!(ok(Some(0.5), "alice", None).is_ok());
    assert_eq!(ok(None, "alice", None).unwrap().tenant, "default");
    assert_eq!(ok(None, "alice", None).unwrap().source, Source::Silver);
    for bad in [
        ok(Some(1.5), "alice", None),
        ok(Some(-0.1), "alice", None),
        ok(Some(f64::NAN), "alice", None),
        ok(None, "", None),
        ok(None, "  ", None),
        ok(None, &"x".repeat(129), None),
        ok(None, "a\nb", None),
        ok(None, "alice", Some(&"c".repeat(4097))),
        NewFeedback::checked(None, "", None, UserLabel::Normal, None, "a", None),
        NewFeedback::checked(Some(""), "p", None, UserLabel::Normal, None, "a", None),
    ] {
        assert!(matches!(bad, Err(AnomalyError::Invalid(_))), "{bad:?}");
    }
}

/// 100 labelled decisions re-optimise the threshold on their own, and the stored optimum is
/// the pure optimiser's on the same pairs; an infeasible run leaves the current threshold.
#[tokio::test]
async fn every_hundred_labels_reoptimise_and_the_current_threshold_is_the_newest_feasible() {
    for t in all_dbs("anomaly thresholds").await {
        let db = &t.db;
        let l = t.label;
        assert_eq!(
            store::current_threshold(&db.pool, "acme").await.unwrap(),
            None
        );
        let mut pairs = Vec::new();
        let mut auto = None;
        for i in 0..100 {
            // Anomalies score 0.9 … 0.999, normal decisions 0 … 0.945; one normal at 0.95.
            let anomalous = i % 5 == 0;
            let score = if anomalous {
                0.9 + f64::from(i) / 1000.0
            } else {
                f64::from(i) / 100.0 * 0.95
            };
            let p = scored(
                db,
                "acme",
                &format!("t{i}"),
                i64::from(i),
                score,
                Action::None,
                &[],
            )
            .await;
            let label = if anomalous {
                UserLabel::Anomalous
            } else {
                UserLabel::Normal
            };
            pairs.push((score, anomalous));
            auto = feedback::submit(db, None, &fb("acme", &p, None, label, "owner"), T)
                .await
                .unwrap();
            if i < 99 {
                assert_eq!(auto, None, "{l}: no run before 100 labels ({i})");
            }
        }
        let want = threshold::optimise(&pairs, threshold::DEFAULT_TARGET_FPR).unwrap();
        let got = auto.expect("the 100th label re-optimises");
        assert_eq!(got, want, "{l}");
        assert!(got.feasible && got.n_labels == 100);
        let h = store::threshold_history(&db.pool, "acme", 10)
            .await
            .unwrap();
        assert_eq!((h.len(), h[0].origin.as_str()), (1, "feedback"), "{l}");
        assert_eq!(
            store::current_threshold(&db.pool, "acme").await.unwrap(),
            Some(want.threshold)
        );
        // An impossible target (FPR ≤ 0 with a normal decision above every anomaly) is
        // recorded as infeasible; the current threshold stays.
        let top = scored(db, "acme", "top", 500, 0.9999, Action::None, &[]).await;
        feedback::submit(
            db,
            None,
            &fb("acme", &top, None, UserLabel::Normal, "owner"),
            T,
        )
        .await
        .unwrap();
        let o = feedback::optimise(db, None, "acme", 0.0, Origin::Api, T + 9)
            .await
            .unwrap();
        assert!(!o.feasible);
        assert!((o.fpr - 1.0 / 81.0).abs() < 1e-12, "{l}: {}", o.fpr);
        assert_eq!(
            store::current_threshold(&db.pool, "acme").await.unwrap(),
            Some(want.threshold)
        );
        let h = store::threshold_history(&db.pool, "acme", 10)
            .await
            .unwrap();
        assert_eq!(
            (h.len(), h[0].feasible, h[0].origin.as_str()),
            (2, false, "api")
        );
        // Another tenant is untouched; one class only is an error, not a run.
        assert_eq!(
            store::current_threshold(&db.pool, "globex").await.unwrap(),
            None
        );
        let g = scored(db, "globex", "g1", 0, 0.5, Action::None, &[]).await;
        feedback::submit(db, None, &fb("globex", &g, None, UserLabel::Normal, "o"), T)
            .await
            .unwrap();
        assert!(matches!(
            feedback::optimise(db, None, "globex", 0.02, Origin::Cli, T).await,
            Err(AnomalyError::Threshold(
                threshold::ThresholdError::NeedsBothClasses {
                    anomalous: 0,
                    normal: 1
                }
            ))
        ));
        assert!(store::threshold_history(&db.pool, "globex", 10)
            .await
            .unwrap()
            .is_empty());
        t.cleanup().await;
    }
}

/// Flagged decisions in two groups (a repetition-like and a high-D̂ one) and one far outlier;
/// unflagged ones are ignored. Rebuilt twice with the same seed: the same clusters.
#[tokio::test]
async fn clusters_of_flagged_decisions_are_stable_for_a_seed() {
    for t in all_dbs("anomaly clusters").await {
        let db = &t.db;
        let l = t.label;
        for i in 0..12 {
            let j = f64::from(i) * 0.001;
            let (f, action) = if i % 2 == 0 {
                (vec![1.0 + j, 0.9, 0.8], Action::Shadow)
            } else {
                (vec![3.5 + j, 0.2, 0.1], Action::Blocked)
            };
            scored(db, "acme", &format!("c{i}"), i64::from(i), 0.99, action, &f).await;
        }
        scored(
            db,
            "acme",
            "far",
            100,
            0.999,
            Action::Guardrail,
            &[40.0, 0.0, 0.0],
        )
        .await;
        // Not flagged: below the threshold.
        scored(
            db,
            "acme",
            "calm",
            101,
            0.3,
            Action::None,
            &[100.0, 0.0, 0.0],
        )
        .await;
        let p = ClusterParams {
            k: 2,
            ..Default::default()
        };
        let a = cluster::rebuild(db, None, &p, T).await.unwrap();
        let b = cluster::rebuild(db, None, &p, T + 1).await.unwrap();
        let shape = |c: &[store::ClusterRow]| {
            c.iter()
                .map(|c| {
                    (
                        c.label.clone(),
                        c.centroid.clone(),
                        c.sample_count,
                        c.first_seen_ms,
                        c.last_seen_ms,
                    )
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(shape(&a), shape(&b), "{l}");
        let counts: Vec<i64> = a.iter().map(|c| c.sample_count).collect();
        assert_eq!(counts.iter().sum::<i64>(), 13, "{l}: {a:?}");
        let far = a
            .iter()
            .find(|c| c.centroid == vec![40.0, 0.0, 0.0])
            .expect("the outlier opens its own cluster");
        assert_eq!((far.sample_count, far.first_seen_ms), (1, T + 100));
        assert!(a.iter().all(|c| c.feature_schema == SCHEMA));
        // Unknown schema (no feature names): labelled mixed_anomaly.
        assert!(a.iter().all(|c| c.label == cluster::MIXED));
        assert_eq!(store::clusters(&db.pool).await.unwrap().len(), a.len());
        // A bad parameter changes nothing.
        let bad = ClusterParams { k: 0, ..p };
        assert!(matches!(
            cluster::rebuild(db, None, &bad, T).await,
            Err(AnomalyError::Invalid(_))
        ));
        assert_eq!(store::clusters(&db.pool).await.unwrap().len(), a.len());
        t.cleanup().await;
    }
}

/// The scores nearest the threshold and a seeded sample of the rest below it reach the review
/// queue under their own reasons, once.
#[tokio::test]
async fn active_learning_queues_the_uncertain_and_an_audit_sample_once() {
    for t in all_dbs("anomaly active learning").await {
        let db = &t.db;
        let l = t.label;
        let mut ids = Vec::new();
        for i in 0..20 {
            // 0.0, 0.05, … 0.95: nearest DEFAULT_THRESHOLD (0.98) is 0.95, then 0.90.
            let s = f64::from(i) * 0.05;
            ids.push(
                scored(
                    db,
                    "acme",
                    &format!("a{i}"),
                    i64::from(i),
                    s,
                    Action::None,
                    &[],
                )
                .await,
            );
        }
        // A labelled one is no candidate.
        feedback::submit(
            db,
            None,
            &fb("acme", &ids[19], None, UserLabel::Normal, "o"),
            T,
        )
        .await
        .unwrap();
        let params = active::QueueParams {
            tenant_id: Some("acme".into()),
            uncertain: 2,
            audit: 3,
            seed: 11,
        };
        let q = active::queue(db, &params).await.unwrap();
        let why: Vec<(&str, &str)> = q
            .iter()
            .map(|x| (x.pcs_id.as_str(), x.queued_for.as_str()))
            .collect();
        assert_eq!(
            why[..2],
            [
                (ids[18].as_str(), "anomaly_uncertain"),
                (ids[17].as_str(), "anomaly_uncertain")
            ],
            "{l}"
        );
        assert_eq!(why.len(), 5);
        assert!(why[2..].iter().all(|w| w.1 == "anomaly_audit"));
        assert!(q.iter().all(|x| x.threshold == DEFAULT_THRESHOLD));
        // The review queue lists them under their reasons.
        let listed = |why| async move {
            queue_page(&db.pool, QueueStatus::Open, Some(why), None, None, 100)
                .await
                .unwrap()
                .into_iter()
                .map(|i| (i.pcs_id, i.queued_for))
                .collect::<Vec<_>>()
        };
        let u = listed(QueuedFor::AnomalyUncertain).await;
        assert_eq!(u.len(), 2, "{l}");
        assert!(u.iter().all(|x| x.1 == QueuedFor::AnomalyUncertain));
        assert_eq!(listed(QueuedFor::AnomalyAudit).await.len(), 3, "{l}");
        assert!(listed(QueuedFor::AuditSample).await.is_empty());
        // A second run with the same seed picks none of them again: the next two nearest.
        let again = active::queue(db, &params).await.unwrap();
        assert!(again
            .iter()
            .all(|x| !q.iter().any(|y| y.decision_id == x.decision_id)));
        let next = ids[..17]
            .iter()
            .rev()
            .find(|p| !q.iter().any(|y| &y.pcs_id == *p))
            .unwrap();
        assert_eq!(&again[0].pcs_id, next, "{l}");
        assert_eq!(listed(QueuedFor::AnomalyUncertain).await.len(), 4);
        // Labelling a queued one through feedback moves it from open to labelled.
        feedback::submit(
            db,
            None,
            &fb("acme", &ids[18], None, UserLabel::Normal, "rev"),
            T,
        )
        .await
        .unwrap();
        assert_eq!(listed(QueuedFor::AnomalyUncertain).await.len(), 3);
        let labelled = queue_page(
            &db.pool,
            QueueStatus::Labelled,
            Some(QueuedFor::AnomalyUncertain),
            None,
            None,
            100,
        )
        .await
        .unwrap();
        assert_eq!(labelled.len(), 1, "{l}");
        // Bad parameters are refused.
        assert!(matches!(
            active::queue(
                db,
                &active::QueueParams {
                    uncertain: 1001,
                    ..params.clone()
                }
            )
            .await,
            Err(AnomalyError::Invalid(_))
        ));
        t.cleanup().await;
    }
}

// ---- the routes, through a live control plane ----

async fn call(r: &Running, token: &str, method: &'static str, path: &str, body: String) -> Answer {
    http(
        method,
        format!("http://{}{path}", r.admin_addr),
        bearer(token),
        body,
    )
    .await
}

#[tokio::test]
async fn the_routes_answer_204_409_404_413_400_and_optimise() {
    let tmp = tempfile::tempdir().unwrap();
    let r = start(&config(tmp.path())).await.unwrap();
    let token = read_token(tmp.path());
    let mut ids = Vec::new();
    for i in 0..6 {
        let s = [0.99, 0.97, 0.5, 0.4, 0.95, 0.1][i];
        ids.push(
            scored(
                &r.db,
                "default",
                &format!("r{i}"),
                i as i64,
                s,
                Action::None,
                &[],
            )
            .await,
        );
    }
    let post = |path: &'static str, body: serde_json::Value| {
        let (r, token) = (&r, &token);
        async move { call(r, token, "POST", path, body.to_string()).await }
    };
    // No labels yet: 409 insufficient_labels, with an empty body too.
    let a = call(
        &r,
        &token,
        "POST",
        "/v1/anomaly/optimize-threshold",
        String::new(),
    )
    .await;
    assert_eq!(
        (a.status, a.json()["code"].clone()),
        (409, json!("insufficient_labels")),
        "{}",
        a.body
    );
    let labels = [
        "anomalous",
        "anomalous",
        "normal",
        "normal",
        "normal",
        "normal",
    ];
    for (p, l) in ids.iter().zip(labels) {
        let a = post(
            "/v1/anomaly/feedback",
            json!({"pcs_id": p, "user_label": l, "submitted_by": "owner", "comment": "seen"}),
        )
        .await;
        assert_eq!((a.status, a.body.as_str()), (204, ""));
    }
    // Duplicate: 409.
    let dup = json!({"pcs_id": ids[0], "user_label": "normal", "submitted_by": "owner"});
    let a = post("/v1/anomaly/feedback", dup).await;
    assert_eq!(
        (a.status, a.json()["code"].clone()),
        (409, json!("duplicate_feedback"))
    );
    // Unknown decision: 404.
    let a = post(
        "/v1/anomaly/feedback",
        json!({"pcs_id": "nope", "predicted_score": 0.5, "user_label": "normal", "submitted_by": "x"}),
    )
    .await;
    assert_eq!(
        (a.status, a.json()["code"].clone()),
        (404, json!("not_found"))
    );
    // Bad bodies: 400 with the JSON error body.
    for bad in [
        json!({"pcs_id": ids[1], "user_label": "weird", "submitted_by": "x"}),
        json!({"pcs_id": ids[1], "user_label": "normal"}),
        json!({"pcs_id": ids[1], "user_label": "normal", "submitted_by": ""}),
        json!({"pcs_id": ids[1], "user_label": "normal", "submitted_by": "x", "predicted_score": 2}),
        json!({"pcs_id": ids[1], "user_label": "normal", "submitted_by": "x", "predicted_score": 0.3}),
        json!({"pcs_id": ids[1], "user_label": "normal", "submitted_by": "x", "source": "platinum"}),
        json!({"pcs_id": ids[1], "user_label": "normal", "submitted_by": "x", "extra": 1}),
        json!([]),
    ] {
        let a = post("/v1/anomaly/feedback", bad.clone()).await;
        assert_eq!(
            (a.status, a.json()["code"].clone()),
            (400, json!("bad_request")),
            "{bad}"
        );
    }
    // Too large: 413 JSON.
    let huge = json!({"pcs_id": ids[1], "user_label": "normal", "submitted_by": "x",
                      "comment": "c".repeat(70_000)});
    let a = post("/v1/anomaly/feedback", huge).await;
    assert_eq!(
        (a.status, a.json()["code"].clone()),
        (413, json!("payload_too_large"))
    );
    // Six labels, none changed by the refused ones. At 0.98 (the default): TP 1 (0.99),
    // FN 1 (0.97), FP 0, TN 4.
    let a = call(&r, &token, "GET", "/v1/anomaly/confusion", String::new()).await;
    let c = a.json();
    assert_eq!(
        (
            c["tp"].clone(),
            c["fn"].clone(),
            c["fp"].clone(),
            c["tn"].clone()
        ),
        (json!(1), json!(1), json!(0), json!(4)),
        "{c}"
    );
    assert_eq!(
        (c["threshold"].clone(), c["tpr"].clone(), c["fpr"].clone()),
        (json!(0.98), json!(0.5), json!(0.0))
    );
    // Optimise at FPR ≤ 0.25 (one of four normals may be flagged): 0.97 catches both with FPR 0.
    let a = post(
        "/v1/anomaly/optimize-threshold",
        json!({"target_fpr": 0.25}),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let o = a.json();
    assert_eq!(
        (
            o["threshold"].clone(),
            o["fpr"].clone(),
            o["tpr"].clone(),
            o["feasible"].clone(),
            o["n_labels"].clone()
        ),
        (json!(0.97), json!(0.0), json!(1.0), json!(true), json!(6))
    );
    let a = call(&r, &token, "GET", "/v1/anomaly/thresholds", String::new()).await;
    assert_eq!(a.json()["current"], json!(0.97));
    let a = post("/v1/anomaly/optimize-threshold", json!({"target_fpr": 1.5})).await;
    assert_eq!(a.status, 400);
    let a = call(
        &r,
        &token,
        "GET",
        "/v1/anomaly/confusion?threshold=abc",
        String::new(),
    )
    .await;
    assert_eq!(a.status, 400);
    let a = call(
        &r,
        &token,
        "GET",
        "/v1/anomaly/thresholds?limit=0",
        String::new(),
    )
    .await;
    assert_eq!(a.status, 400);
    // The gauges follow the labels at the current threshold.
    let m = r.metrics.render();
    for line in [
        "kakeya_anomaly_threshold{tenant=\"default\"} 0.97",
        "kakeya_anomaly_tpr{tenant=\"default\"} 1",
        "kakeya_anomaly_fpr{tenant=\"default\"} 0",
        "kakeya_anomaly_feedback_total{label=\"anomalous\",source=\"silver\"} 2",
        "kakeya_anomaly_feedback_total{label=\"normal\",source=\"silver\"} 4",
    ] {
        assert!(m.contains(line), "{line} missing from\n{m}");
    }
    // Clusters: none flagged yet; rebuild with a bad k is a 400, an empty body the defaults.
    let a = call(&r, &token, "GET", "/v1/anomaly/clusters", String::new()).await;
    assert_eq!((a.status, a.json()), (200, json!([])));
    let a = post("/v1/anomaly/clusters/rebuild", json!({"k": 0})).await;
    assert_eq!(a.status, 400);
    let a = call(
        &r,
        &token,
        "POST",
        "/v1/anomaly/clusters/rebuild",
        String::new(),
    )
    .await;
    assert_eq!((a.status, a.json()), (200, json!([])), "{}", a.body);
    let a = post("/v1/anomaly/active-learning", json!({"uncertain": 5000})).await;
    assert_eq!(a.status, 400);
    // Without the token: 401.
    let a = http(
        "GET",
        format!("http://{}/v1/anomaly/clusters", r.admin_addr),
        vec![],
        String::new(),
    )
    .await;
    assert_eq!(a.status, 401);
    r.shutdown().await.unwrap();
}

/// Registered so dashboards can use them before inline scoring increments them.
#[test]
fn every_anomaly_metric_is_registered() {
    let m = crate::metrics::Metrics::new().unwrap();
    m.anomaly
        .observe_decision("acme", "repetition_loop", 0.999, Action::Blocked);
    m.anomaly
        .observe_decision("acme", "none", 0.2, Action::None);
    m.anomaly.clusters.set(3);
    let text = m.render();
    for line in [
        "kakeya_anomaly_flagged_total{cluster=\"repetition_loop\",tenant=\"acme\"} 1",
        "kakeya_anomaly_blocked_total{cluster=\"repetition_loop\",tenant=\"acme\"} 1",
        "kakeya_anomaly_score_count 2",
        "kakeya_anomaly_clusters 3",
    ] {
        assert!(text.contains(line), "{line} missing from\n{text}");
    }
}
