//! Drift checks on SQLite and PostgreSQL: references stored with their version and checked on
//! load, checks and alerts stored, the auto-revert recorded in the alias history exactly once,
//! and the routes' answers. Models are trained on real HaluEval rows (the embedded sample) and
//! decisions carry the features and risks those models give the rows.

use super::analysis::{AlertType, DriftStatus, DriftTest};
use super::{check, parse_since, revert, By, CheckOutcome, DriftError, DriftOptions, RevertAction};
use crate::learn::jobs::{self, JobParams};
use crate::learn::tests::{seed_halueval, MINUTE, SIGNING_SEED, T0};
use crate::learn::{ModelKind, TrainingOptions};
use crate::ml::drift_reference::DriftReference;
use crate::ml::{dataset as ml_dataset, eval, model};
use crate::registry::history::{Actor, Reason, Why};
use crate::registry::reference::{self, LoadError, Loaded};
use crate::registry::{self, CHAMPION};
use crate::store::Db;
use crate::testutil::all_dbs;
use kakeya_core::features::{N_FEATURES, SCHEMA_VERSION};
use kakeya_core::model::Model;
use std::sync::Arc;

const SEED: [u8; 32] = SIGNING_SEED;
const HOUR: i64 = 60 * MINUTE;

/// A model trained (2-fold CV, logistic) on rows `range` of the sample, with what the gate
/// would store for those rows when it scores them: features against its baseline, risks.
struct Trained {
    model: Model,
    card: serde_json::Value,
    reference: DriftReference,
    x: Vec<[f64; N_FEATURES]>,
    risk: Vec<f64>,
    labels: Vec<u8>,
}

fn trained(range: std::ops::Range<usize>, seed: u64) -> Trained {
    let all = ml_dataset::parse(crate::registry::bootstrap::SAMPLE).unwrap();
    let rows = &ml_dataset::sample_by_task(&all, 900)[range];
    let t =
        crate::registry::bootstrap::train(rows, "drift-test", seed, model::DEFAULT_L2, 2).unwrap();
    let p = eval::prepare(rows, |_| {});
    let x: Vec<[f64; N_FEATURES]> = eval::with_tenant(&p.x, t.model.tenant())
        .chunks_exact(N_FEATURES)
        .map(|r| r.try_into().unwrap())
        .collect();
    let risk = x.iter().map(|r| t.model.score(r).1).collect();
    Trained {
        reference: t.reference.unwrap(),
        card: t.card,
        model: t.model,
        x,
        risk,
        labels: p.labels,
    }
}

async fn register(db: &Db, t: &Trained) -> String {
    registry::insert_model(db, &SEED, &t.model, &t.card, T0)
        .await
        .unwrap();
    let v = t.model.version();
    assert!(reference::store(db, &v, &t.reference, T0).await.unwrap());
    v
}

async fn promote(db: &Db, version: &str, at: i64) {
    let why = Why::manual(Actor::Cli("test".into()), None);
    registry::move_alias(db, &SEED, CHAMPION, version, None, &why, at)
        .await
        .unwrap();
}

/// Decisions of `version` at `at + i` ms: features `x[i]` (plus `shift` on every column
/// from 12 on: longer, less supported answers), risk `risk[i]`, tenant `tenant`.
async fn decide(
    db: &Db,
    version: &str,
    tenant: &str,
    at: i64,
    x: &[[f64; N_FEATURES]],
    risk: &[f64],
    shift: f64,
) {
    for (i, (row, r)) in x.iter().zip(risk).enumerate() {
        let mut row = *row;
        for v in row.iter_mut().skip(12) {
            *v += shift;
        }
        sqlx::query(
            "INSERT INTO decision_log (record_id, tenant, pcs_id, d_hat, coh_star, r, budget, \
             regime, accepted, escalated, reason, status, cacheable, verify_ns, created_at_ms, \
             pcs_version, feature_schema, features, audit_sample, risk, risk_band, \
             model_version, arm, bundle_version) VALUES ($1, $2, $3, 1.0, 0.5, 0.9, 0.3, \
             'mixed', 1, 0, NULL, 200, 1, 1000, $4, '0.2', $5, $6, 0, $7, 'low', $8, \
             'champion', 1)",
        )
        .bind(format!("{tenant}:{i}:{at}"))
        .bind(tenant)
        .bind(format!("{tenant}-{i}"))
        .bind(at + i as i64)
        .bind(SCHEMA_VERSION)
        .bind(serde_json::to_string(&row[..]).unwrap())
        .bind(*r)
        .bind(version)
        .execute(&db.pool)
        .await
        .unwrap();
    }
}

/// A gold label on each decision `tenant-i`: `contradict` turns the truth around.
async fn label(db: &Db, tenant: &str, labels: &[u8], contradict: bool, at: i64) {
    for (i, &y) in labels.iter().enumerate() {
        let hallucinated = (y == 1) != contradict;
        sqlx::query(
            "INSERT INTO labels (tenant, pcs_id, labeller, source, label, confidence, comment, \
             created_at_ms) VALUES ($1, $2, 'rev', 'gold', $3, 1.0, NULL, $4)",
        )
        .bind(tenant)
        .bind(format!("{tenant}-{i}"))
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
}

fn opts() -> DriftOptions {
    DriftOptions {
        min_decisions: 50,
        min_labels_per_class: 10,
        auto_revert: true,
        ..DriftOptions::default()
    }
}

#[tokio::test]
async fn references_are_stored_with_their_version_and_checked_on_load() {
    let a = trained(0..200, 1);
    for t in all_dbs("drift_reference_round_trip").await {
        let l = t.label;
        let v = register(&t.db, &a).await;
        // written once: the same bytes again change nothing
        assert!(!reference::store(&t.db, &v, &a.reference, T0).await.unwrap());
        match reference::load(&t.db, &v).await.unwrap() {
            Loaded::Reference { reference, sha256 } => {
                assert_eq!(*reference, a.reference, "{l}");
                assert_eq!(sha256, a.reference.sha256());
                assert_eq!(a.card["drift_reference"]["sha256"], sha256.as_str());
            }
            Loaded::None => panic!("{l}: no reference"),
        }
        // an uploaded artifact has none
        let up = crate::registry::tests::model(0.25);
        let card = registry::card::from_artifact(&up);
        registry::insert_model(&t.db, &SEED, &up, &card, T0)
            .await
            .unwrap();
        assert_eq!(
            reference::load(&t.db, &up.version()).await.unwrap(),
            Loaded::None
        );
        // bytes changed in the database: refused
        sqlx::query(
            "UPDATE drift_references SET reference = REPLACE(reference, '\"n\":', '\"n\": ')",
        )
        .execute(&t.db.pool)
        .await
        .unwrap();
        let e = reference::load(&t.db, &v).await.unwrap_err();
        assert!(
            matches!(&e, LoadError::Integrity(i) if i.to_string().contains("SHA-256")),
            "{l}: {e}"
        );
        // consistent row, but not the one the card names: refused
        let other = trained(200..400, 2).reference;
        sqlx::query("UPDATE drift_references SET reference = $1, sha256 = $2")
            .bind(other.canonical())
            .bind(other.sha256())
            .execute(&t.db.pool)
            .await
            .unwrap();
        let e = reference::load(&t.db, &v).await.unwrap_err();
        assert!(e.to_string().contains("model card names"), "{l}: {e}");
        t.cleanup().await;
    }
}

/// The whole path: insufficient data, a clean window, shifted traffic, contradicting labels →
/// performance alert → auto-revert to the previous champion, recorded once.
#[tokio::test]
async fn checks_raise_the_alerts_the_data_call_for_and_revert_once() {
    let (a, b) = (trained(0..300, 1), trained(300..700, 2));
    for t in all_dbs("drift_check_and_revert").await {
        let l = t.label;
        let (va, vb) = (register(&t.db, &a).await, register(&t.db, &b).await);
        promote(&t.db, &va, T0).await;
        promote(&t.db, &vb, T0 + 1).await;
        let o = opts();

        // Nothing in the window yet.
        let r = check(&t.db, Some(&SEED), &o, T0, By::Api, T0 + HOUR)
            .await
            .unwrap();
        assert_eq!(r.outcome, CheckOutcome::InsufficientData, "{l}");
        assert_eq!(r.models.len(), 1);
        let m = &r.models[0];
        assert_eq!(
            (m.alias.as_str(), m.model_version.as_str()),
            (CHAMPION, vb.as_str())
        );
        assert_eq!(m.features.status, DriftStatus::InsufficientData);
        assert!(m.features.reason.contains("has 0"), "{}", m.features.reason);
        assert_eq!(m.performance.status, DriftStatus::InsufficientData);
        assert!(r.alerts.is_empty());

        // B's own training rows as traffic: no feature alert, 22 finite tests.
        decide(&t.db, &vb, "clean", T0 + HOUR, &b.x, &b.risk, 0.0).await;
        let r = check(&t.db, Some(&SEED), &o, T0 + HOUR, By::Api, T0 + 2 * HOUR)
            .await
            .unwrap();
        let f = &r.models[0].features;
        assert_eq!(
            (f.status, f.n_used, f.n_in_window),
            (DriftStatus::Ok, 400, 400),
            "{l}: {f:?}"
        );
        assert_eq!(f.features.len(), N_FEATURES);
        assert!(f
            .features
            .iter()
            .all(|x| x.psi.is_finite() && !x.ks_rejected));
        assert_eq!(
            f.reference_sha256.as_deref(),
            Some(b.reference.sha256().as_str())
        );
        assert!(r.alerts.is_empty(), "{l}: {:?}", r.alerts);

        // Shifted traffic: feature alerts on the shifted columns only (KS and PSI).
        decide(
            &t.db,
            &vb,
            "shift",
            T0 + 2 * HOUR,
            &b.x[..200],
            &b.risk[..200],
            0.5,
        )
        .await;
        let r = check(
            &t.db,
            Some(&SEED),
            &o,
            T0 + 2 * HOUR,
            By::Api,
            T0 + 3 * HOUR,
        )
        .await
        .unwrap();
        assert_eq!(r.outcome, CheckOutcome::Drift, "{l}");
        assert_eq!(r.models[0].features.status, DriftStatus::Drift);
        let drifted: std::collections::BTreeSet<&str> = r
            .alerts
            .iter()
            .filter_map(|a| a.feature.as_deref())
            .collect();
        assert!(!drifted.is_empty());
        let shifted = &kakeya_core::features::FEATURE_NAMES[12..];
        assert!(
            drifted.iter().all(|f| shifted.contains(f)),
            "{l}: {drifted:?}"
        );
        assert!(r
            .alerts
            .iter()
            .all(|a| a.alert_type == AlertType::FeatureDrift
                && a.action.is_none()
                && a.model_version == vb));
        assert!(r.alerts.iter().any(|a| a.test == DriftTest::Ks));
        assert!(r
            .alerts
            .iter()
            .any(|a| a.test == DriftTest::Psi && a.p_value.is_none()));
        // stored: listed newest first, and the check's report with them
        let listed = super::store::alerts(&t.db, T0, None, 1000).await.unwrap();
        assert_eq!(listed.len(), r.alerts.len());
        assert!(listed.windows(2).all(|w| w[0].id > w[1].id));
        let stored = super::store::report(&t.db, r.check_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored["alerts"].as_array().unwrap().len(), r.alerts.len());
        assert_eq!(stored["outcome"], "drift");

        // Labels that contradict the champion on its clean decisions: performance drift →
        // auto-revert to A, the last good champion.
        label(&t.db, "clean", &b.labels, true, T0 + 3 * HOUR).await;
        let now = T0 + 4 * HOUR;
        let r = check(&t.db, Some(&SEED), &o, T0 + HOUR, By::Scheduler, now)
            .await
            .unwrap();
        let perf = &r.models[0].performance;
        assert_eq!(perf.status, DriftStatus::Drift, "{l}: {perf:?}");
        assert_eq!(perf.labelled, 400);
        assert!(perf.auroc.as_ref().unwrap().auroc < 0.5, "{perf:?}");
        let card_auroc = b.card["evaluation"]["metrics"]["all"]["auroc"]
            .as_f64()
            .unwrap();
        assert_eq!(perf.reference_auroc, Some(card_auroc));
        let p: Vec<_> = r
            .alerts
            .iter()
            .filter(|a| a.alert_type == AlertType::PerformanceDrift)
            .collect();
        assert_eq!(p.len(), 1, "{l}");
        let alert = p[0];
        assert_eq!(alert.action, Some(RevertAction::Reverted), "{l}: {alert:?}");
        assert!((alert.threshold - (card_auroc - o.auroc_drop)).abs() < 1e-12);
        let mut conn = t.db.pool.acquire().await.unwrap();
        let al = registry::aliases(&mut conn).await.unwrap();
        assert_eq!(al[0].version, va, "{l}: champion back on A");
        let h = registry::history::page(&mut conn, Some(CHAMPION), None, 1)
            .await
            .unwrap()
            .remove(0);
        drop(conn);
        assert_eq!(h.reason, Reason::AutoRevert);
        assert_eq!(h.actor, "scheduler");
        assert_eq!(
            (h.previous_version.as_deref(), h.new_version.as_deref()),
            (Some(vb.as_str()), Some(va.as_str()))
        );
        let comment = h.comment.unwrap();
        assert!(
            comment.contains(&format!("alert {}", alert.id)),
            "{comment}"
        );
        assert!(
            comment.contains(&format!("{:.4}", alert.statistic)),
            "{comment}"
        );
        // the bundle was republished with A as the champion
        let bundle = registry::current_bundle(&t.db).await.unwrap().unwrap();
        assert_eq!(bundle.version, h.bundle_version);

        // The same alert again (another replica, a retry): no second move.
        let (action, detail) = revert::auto_revert(&t.db, &SEED, alert, Actor::Scheduler, now)
            .await
            .unwrap();
        assert_eq!(action, RevertAction::NotChampion, "{detail}");
        // B promoted back by hand is a new position: its next alert may revert again, and A
        // (never reverted from) is still the last good one.
        promote(&t.db, &vb, now + 1).await;
        let r = check(&t.db, Some(&SEED), &o, T0 + HOUR, By::Api, now + 2)
            .await
            .unwrap();
        let alert = perf_alert(&r);
        assert_eq!(alert.action, Some(RevertAction::Reverted), "{l}");
        // Replaying that alert moves nothing: A is the champion now.
        let (action, _) = revert::auto_revert(&t.db, &SEED, alert, Actor::AdminApi, now + 3)
            .await
            .unwrap();
        assert_eq!(action, RevertAction::NotChampion);
        let moves = registry::history::page(
            &mut t.db.pool.acquire().await.unwrap(),
            Some(CHAMPION),
            None,
            100,
        )
        .await
        .unwrap();
        assert_eq!(
            moves
                .iter()
                .filter(|m| m.reason == Reason::AutoRevert)
                .count(),
            2,
            "{l}: one revert per alerting position"
        );
        t.cleanup().await;
    }
}

#[tokio::test]
async fn nothing_to_revert_is_recorded_once_and_auto_revert_off_moves_nothing() {
    let a = trained(0..300, 1);
    for t in all_dbs("drift_nothing_to_revert").await {
        let l = t.label;
        let va = register(&t.db, &a).await;
        promote(&t.db, &va, T0).await;
        decide(&t.db, &va, "t", T0 + HOUR, &a.x, &a.risk, 0.0).await;
        label(&t.db, "t", &a.labels, true, T0 + HOUR).await;
        let off = DriftOptions {
            auto_revert: false,
            ..opts()
        };
        let r = check(&t.db, Some(&SEED), &off, T0, By::Cli, T0 + 2 * HOUR)
            .await
            .unwrap();
        let alert = perf_alert(&r);
        assert_eq!(alert.action, Some(RevertAction::AutoRevertOff), "{l}");
        let on = opts();
        let r = check(&t.db, Some(&SEED), &on, T0, By::Cli, T0 + 3 * HOUR)
            .await
            .unwrap();
        let first = perf_alert(&r);
        assert_eq!(
            first.action,
            Some(RevertAction::NothingToRevert),
            "{l}: {first:?}"
        );
        let r = check(&t.db, Some(&SEED), &on, T0, By::Cli, T0 + 4 * HOUR)
            .await
            .unwrap();
        let again = perf_alert(&r);
        assert_eq!(again.action, Some(RevertAction::AlreadyHandled), "{l}");
        assert!(again
            .action_detail
            .as_deref()
            .unwrap()
            .contains(&format!("alert {}", first.id)));
        let mut conn = t.db.pool.acquire().await.unwrap();
        assert_eq!(registry::aliases(&mut conn).await.unwrap()[0].version, va);
        let moves = registry::history::page(&mut conn, None, None, 100)
            .await
            .unwrap();
        drop(conn);
        assert!(moves.iter().all(|m| m.reason != Reason::AutoRevert), "{l}");
        // Scheduled checks are spaced by check_every: a second one right after is skipped.
        super::run_periodic(&t.db, &SEED, &on).await;
        let last = super::store::last_check_ms(&t.db, By::Scheduler)
            .await
            .unwrap();
        assert!(last.is_some(), "{l}");
        super::run_periodic(&t.db, &SEED, &on).await;
        assert_eq!(
            count_checks(&t.db, None).await,
            4,
            "{l}: three checks by hand, one scheduled"
        );
        t.cleanup().await;
    }
}

/// The report's one performance alert.
fn perf_alert(r: &super::DriftReport) -> &super::DriftAlert {
    r.alerts
        .iter()
        .find(|a| a.alert_type == AlertType::PerformanceDrift)
        .expect("a performance_drift alert")
}

/// Checks stored, of `actor` (`None`: all).
async fn count_checks(db: &Db, actor: Option<&str>) -> i64 {
    use sqlx::Row;
    sqlx::query("SELECT COUNT(*) AS n FROM drift_checks WHERE $1 = '' OR actor = $1")
        .bind(actor.unwrap_or(""))
        .fetch_one(&db.pool)
        .await
        .unwrap()
        .try_get("n")
        .unwrap()
}

/// A training job stores its reference and names it on the card and in its result.
#[tokio::test]
async fn training_jobs_store_their_reference() {
    for t in all_dbs("drift_job_reference").await {
        let n = seed_halueval(&t.db, "acme", 300).await;
        let params = JobParams::new(T0, T0 + n as i64 * MINUTE, ModelKind::Lr, 11);
        let o = TrainingOptions {
            min_labels: 100,
            validation_fraction: 0.25,
            bootstrap_resamples: 50,
        };
        let result = jobs::execute(&t.db, &SEED, &params, &o, Arc::new(|_| {}))
            .await
            .unwrap();
        let v = result["version"].as_str().unwrap();
        let Loaded::Reference { reference, sha256 } = reference::load(&t.db, v).await.unwrap()
        else {
            panic!("{}: no reference", t.label);
        };
        assert_eq!(result["drift_reference_sha256"], sha256.as_str());
        // built from the training part only
        assert_eq!(reference.n, result["n_train"].as_u64().unwrap());
        let card = registry::get_model(&t.db, v).await.unwrap().unwrap().card;
        assert_eq!(card["drift_reference"]["sha256"], sha256.as_str());
        // its performance reference is the holdout AUROC of the card
        let (auroc, _) = super::analysis::card_auroc(&card).unwrap();
        assert_eq!(Some(auroc), result["metrics"]["auroc"]["value"].as_f64());
        t.cleanup().await;
    }
}

#[test]
fn since_accepts_durations_and_past_times_only() {
    let now = T0 + 48 * HOUR;
    assert_eq!(parse_since("24h", now).unwrap(), now - 24 * HOUR);
    assert_eq!(parse_since(" 90m ", now).unwrap(), now - 90 * MINUTE);
    assert_eq!(parse_since("2026-01-01T00:00:00Z", now).unwrap(), T0);
    for bad in [
        "",
        "soon",
        "5s",
        "400d",
        "2999-01-01T00:00:00Z",
        "-1h",
        "24",
    ] {
        assert!(
            matches!(parse_since(bad, now), Err(DriftError::Invalid(_))),
            "{bad}"
        );
    }
}

/// The routes through a live control plane (the default model, trained at first start, is the
/// champion and has its reference): JSON errors for bad input, a stored check, the alerts.
#[tokio::test]
async fn routes_answer_as_documented() {
    use crate::api::tests::{bearer, config, http, read_token};
    let tmp = tempfile::tempdir().unwrap();
    let r = crate::server::start(&config(tmp.path())).await.unwrap();
    let token = read_token(tmp.path());
    let url = |p: &str| format!("http://{}{p}", r.admin_addr);
    let post = |body: &str| {
        http(
            "POST",
            url("/v1/hrs/drift/check"),
            bearer(&token),
            body.into(),
        )
    };
    for body in [
        r#"{"since": "soon"}"#,
        r#"{"since": "5s"}"#,
        r#"{"since": "2999-01-01T00:00:00Z"}"#,
        r#"{"since": 24}"#,
        r#"{"window": "24h"}"#,
        r#"[1]"#,
        "{",
    ] {
        let a = post(body).await;
        assert_eq!(
            (a.status, a.json()["code"].as_str()),
            (400, Some("bad_request")),
            "{body}: {}",
            a.body
        );
    }
    // (the periodic check of `serve` stores its own, as `scheduler`)
    assert_eq!(
        count_checks(&r.db, Some("admin-api")).await,
        0,
        "a refused check stores nothing"
    );
    for q in [
        "since=soon",
        "limit=0",
        "limit=10001",
        "limit=x",
        "sincee=24h",
        "before_id=x",
    ] {
        let a = http(
            "GET",
            url(&format!("/v1/hrs/drift/alerts?{q}")),
            bearer(&token),
            String::new(),
        )
        .await;
        assert_eq!(
            (a.status, a.json()["code"].as_str()),
            (400, Some("bad_request")),
            "{q}: {}",
            a.body
        );
    }
    // An empty body checks the default window: the default model has a reference, no traffic.
    let a = post("").await;
    assert_eq!(a.status, 200, "{}", a.body);
    let report = a.json();
    assert_eq!(report["outcome"], "insufficient_data");
    let m = &report["models"][0];
    assert_eq!(m["alias"], "champion");
    assert_eq!(m["features"]["status"], "insufficient_data");
    assert_eq!(m["features"]["reference_n"], 2100);
    assert_eq!(m["performance"]["status"], "insufficient_data");
    let a = post(r#"{"since": "1h"}"#).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(count_checks(&r.db, Some("admin-api")).await, 2);
    let a = http(
        "GET",
        url("/v1/hrs/drift/alerts?since=24h&limit=5"),
        bearer(&token),
        String::new(),
    )
    .await;
    assert_eq!(
        (a.status, a.json()),
        (200, serde_json::json!([])),
        "{}",
        a.body
    );
    let metrics = http("GET", url("/metrics"), bearer(&token), String::new())
        .await
        .body;
    assert!(
        metrics.contains("kakeya_drift_checks_total{outcome=\"insufficient_data\"}"),
        "{metrics}"
    );
    r.shutdown().await.unwrap();
}
