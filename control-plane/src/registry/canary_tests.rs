//! The `canary` alias, on SQLite and (when reachable) PostgreSQL: its moves and weight changes
//! publish and are recorded, bad weights change nothing, its model row is checked on every
//! load, it excludes A/B experiments both ways, and the routes answer as documented.

use super::history_tests::Api;
use super::tests::{model, served, set_artifact, SEED};
use super::*;
use crate::ab::{self, AbError, By, StartRequest, StopReason};
use crate::testutil::all_dbs;
use axum::http::StatusCode;
use kakeya_core::bundle::ArmKey;
use serde_json::json;

async fn register(db: &Db, m: &Model) {
    insert_model(db, &SEED, m, &card::from_artifact(m), 1)
        .await
        .unwrap();
}

fn cli() -> Why {
    Why::manual(Actor::Cli("alice".into()), Some("canary step"))
}

/// Registers three models, the first the champion; their versions.
async fn setup(db: &Db) -> [String; 3] {
    let ms = [model(-1.0), model(-2.0), model(-3.0)];
    for m in &ms {
        register(db, m).await;
    }
    move_alias(db, &SEED, CHAMPION, &ms[0].version(), None, &cli(), 5)
        .await
        .unwrap();
    ms.map(|m| m.version())
}

async fn history_of(db: &Db, alias: &str) -> Vec<HistoryEntry> {
    let mut conn = db.pool.acquire().await.unwrap();
    history::page(&mut conn, Some(alias), None, 1000)
        .await
        .unwrap()
}

async fn bundle_count(db: &Db) -> i64 {
    sqlx::query("SELECT COUNT(*) AS n FROM bundles")
        .fetch_one(&db.pool)
        .await
        .unwrap()
        .try_get("n")
        .unwrap()
}

#[tokio::test]
async fn canary_moves_and_weight_changes_publish_and_are_recorded() {
    for t in all_dbs("canary_moves").await {
        let (db, l) = (&t.db, t.label);
        let [a, b, c] = setup(db).await;
        let p = move_canary(db, &SEED, &b, 0.1, None, &cli(), 10)
            .await
            .unwrap();
        let served1 = served(db).await;
        let canary = served1.canary.clone().unwrap();
        assert_eq!(
            (canary.model.version(), canary.weight, canary.key),
            (b.clone(), 0.1, ArmKey::Tenant),
            "{l}: a new canary is keyed by tenant"
        );
        assert_eq!(served1.version, 2);
        let moved = p.moved.unwrap();
        assert_eq!(
            (
                moved.alias.as_str(),
                moved.previous_version.as_deref(),
                moved.new_version.as_deref(),
                moved.weight,
                moved.arm_key,
                moved.actor.as_str(),
                moved.bundle_version
            ),
            (
                CANARY,
                None,
                Some(b.as_str()),
                Some(0.1),
                Some(ArmKey::Tenant),
                "cli:alice",
                2
            ),
            "{l}"
        );
        // A weight change (and key change) of the same version is a move, published.
        let p = move_canary(db, &SEED, &b, 0.25, Some(ArmKey::Request), &cli(), 11)
            .await
            .unwrap();
        assert_eq!(p.bundle_version, 3);
        let c2 = served(db).await.canary.unwrap();
        assert_eq!((c2.weight, c2.key), (0.25, ArmKey::Request), "{l}");
        // Moved through move_alias (what a controller step does), the key stays.
        move_alias(db, &SEED, CANARY, &b, Some(0.5), &cli(), 12)
            .await
            .unwrap();
        let c3 = served(db).await.canary.unwrap();
        assert_eq!((c3.weight, c3.key), (0.5, ArmKey::Request), "{l}");
        // With a challenger too: the aliases in order, the models listed with theirs.
        move_alias(db, &SEED, CHALLENGER, &c, Some(0.5), &cli(), 13)
            .await
            .unwrap();
        let mut conn = db.pool.acquire().await.unwrap();
        let al = aliases(&mut conn).await.unwrap();
        drop(conn);
        let names: Vec<(&str, &str, f64, Option<ArmKey>)> = al
            .iter()
            .map(|r| (r.alias.as_str(), r.version.as_str(), r.weight, r.arm_key))
            .collect();
        assert_eq!(
            names,
            [
                (CHAMPION, a.as_str(), 1.0, None),
                (CHALLENGER, c.as_str(), 0.5, None),
                (CANARY, b.as_str(), 0.5, Some(ArmKey::Request)),
            ],
            "{l}"
        );
        let both = served(db).await;
        assert_eq!(both.challenger.unwrap().version(), c);
        assert_eq!(both.canary.unwrap().model.version(), b);
        let listed = list_models(db).await.unwrap();
        let of_b = listed.iter().find(|m| m.version == b).unwrap();
        assert_eq!(of_b.aliases, [CANARY], "{l}");
        // The history of the canary, newest first.
        let h = history_of(db, CANARY).await;
        type Step<'a> = (
            Option<&'a str>,
            Option<&'a str>,
            Option<f64>,
            Option<ArmKey>,
        );
        let steps: Vec<Step<'_>> = h
            .iter()
            .map(|e| {
                (
                    e.previous_version.as_deref(),
                    e.new_version.as_deref(),
                    e.weight,
                    e.arm_key,
                )
            })
            .collect();
        assert_eq!(
            steps,
            [
                (
                    Some(b.as_str()),
                    Some(b.as_str()),
                    Some(0.5),
                    Some(ArmKey::Request)
                ),
                (
                    Some(b.as_str()),
                    Some(b.as_str()),
                    Some(0.25),
                    Some(ArmKey::Request)
                ),
                (None, Some(b.as_str()), Some(0.1), Some(ArmKey::Tenant)),
            ],
            "{l}"
        );
        // The other aliases' history rows carry no key.
        assert!(history_of(db, CHALLENGER).await[0].arm_key.is_none());
        // Removal: published, recorded, the bundle has no canary; a second one is NoCanary.
        let p = remove_alias(db, &SEED, CANARY, &cli(), 14).await.unwrap();
        let moved = p.moved.unwrap();
        assert_eq!(
            (moved.new_version, moved.weight, moved.arm_key),
            (None, None, None),
            "{l}"
        );
        assert_eq!(served(db).await.canary, None);
        let n = bundle_count(db).await;
        assert!(matches!(
            remove_alias(db, &SEED, CANARY, &cli(), 15).await,
            Err(RegistryError::NoCanary)
        ));
        assert_eq!(bundle_count(db).await, n, "{l}");
        t.cleanup().await;
    }
}

#[tokio::test]
async fn bad_canary_moves_change_nothing() {
    for t in all_dbs("canary_refused").await {
        let (db, l) = (&t.db, t.label);
        let [_, b, _] = setup(db).await;
        move_canary(db, &SEED, &b, 0.2, None, &cli(), 10)
            .await
            .unwrap();
        let (n, h) = (bundle_count(db).await, history_of(db, CANARY).await.len());
        for w in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -0.01, 1.01] {
            let r = move_canary(db, &SEED, &b, w, None, &cli(), 11).await;
            assert!(
                matches!(r, Err(RegistryError::Invalid(_))),
                "{l}: {w}: {r:?}"
            );
        }
        let refused = [
            move_alias(db, &SEED, CANARY, &b, None, &cli(), 11).await,
            move_canary(db, &SEED, "lr-000000000000", 0.1, None, &cli(), 11).await,
            move_canary(
                db,
                &SEED,
                &b,
                0.3,
                None,
                &Why::manual(Actor::AdminApi, Some(&"x".repeat(1025))),
                11,
            )
            .await,
            move_alias(db, &SEED, CHAMPION, &b, Some(0.3), &cli(), 11).await,
        ];
        for r in refused {
            assert!(
                matches!(
                    r,
                    Err(RegistryError::Invalid(_) | RegistryError::NoModel(_))
                ),
                "{l}: {r:?}"
            );
        }
        assert_eq!(bundle_count(db).await, n, "{l}");
        assert_eq!(history_of(db, CANARY).await.len(), h, "{l}");
        assert_eq!(served(db).await.canary.unwrap().weight, 0.2);
        t.cleanup().await;
    }
}

/// The canary's model row is checked on every load: once it is altered, moving the canary
/// and any publication that would carry it are refused, and nothing is published.
#[tokio::test]
async fn an_altered_canary_row_is_refused_on_every_load() {
    for t in all_dbs("canary_integrity").await {
        let (db, l) = (&t.db, t.label);
        let [_, b, c] = setup(db).await;
        move_canary(db, &SEED, &b, 0.2, None, &cli(), 10)
            .await
            .unwrap();
        let n = bundle_count(db).await;
        let mut altered = model(-2.0);
        if let Model::Logistic(m) = &mut altered {
            m.intercept = 5.0;
        }
        let text = String::from_utf8(altered.canonical_bytes()).unwrap();
        set_artifact(db, &b, &text, None, None).await;
        for r in [
            move_canary(db, &SEED, &b, 0.3, None, &cli(), 11).await,
            // The challenger's own row is fine, but the bundle would carry the canary.
            move_alias(db, &SEED, CHALLENGER, &c, Some(0.5), &cli(), 11).await,
        ] {
            assert!(
                matches!(r, Err(RegistryError::Integrity(IntegrityError::Model { ref version, .. })) if *version == b),
                "{l}: {r:?}"
            );
        }
        assert_eq!(bundle_count(db).await, n, "{l}");
        // Removing the canary is how to get out: it publishes without it.
        remove_alias(db, &SEED, CANARY, &cli(), 12).await.unwrap();
        assert_eq!(served(db).await.canary, None);
        t.cleanup().await;
    }
}

fn ab_request(control: &str, treatment: &str) -> StartRequest {
    StartRequest {
        name: "exp".into(),
        control: control.into(),
        treatment: treatment.into(),
        traffic_split: 0.5,
        duration: "1h".into(),
    }
}

/// A canary and an A/B experiment exclude each other (see `ab`'s module docs): no experiment
/// starts while a canary is set, no canary is set while one runs, and the checks hold under
/// the publication lock (a pending start and a canary move).
#[tokio::test]
async fn canary_and_experiment_exclude_each_other() {
    for t in all_dbs("canary_ab").await {
        let (db, l) = (&t.db, t.label);
        let [a, b, c] = setup(db).await;
        let now = 1_700_000_000_000;
        move_canary(db, &SEED, &b, 0.1, None, &cli(), now)
            .await
            .unwrap();
        let n = bundle_count(db).await;
        let r = ab::start(db, &SEED, &ab_request(&a, &c), By::Api, now).await;
        assert!(
            matches!(r, Err(AbError::CanaryInUse(ref v)) if *v == b),
            "{l}: {r:?}"
        );
        assert!(ab::store::active(&db.pool).await.unwrap().is_none());
        assert_eq!(bundle_count(db).await, n);
        remove_alias(db, &SEED, CANARY, &cli(), now).await.unwrap();
        let started = ab::start(db, &SEED, &ab_request(&a, &c), By::Api, now)
            .await
            .unwrap();
        let n = bundle_count(db).await;
        for r in [
            move_canary(db, &SEED, &b, 0.1, None, &cli(), now + 1).await,
            move_alias(db, &SEED, CANARY, &b, Some(0.1), &cli(), now + 1).await,
        ] {
            assert!(
                matches!(
                    r,
                    Err(RegistryError::ConflictWith {
                        code: "experiment_running",
                        ..
                    })
                ),
                "{l}: {r:?}"
            );
        }
        assert_eq!(bundle_count(db).await, n, "{l}: nothing published");
        let running = ab::store::active(&db.pool).await.unwrap().unwrap();
        assert_eq!(running.id, started.experiment_id);
        assert_eq!(served(db).await.canary, None);
        ab::stop(
            db,
            &SEED,
            &started.experiment_id,
            StopReason::Manual,
            By::Api,
            now + 2,
        )
        .await
        .unwrap();
        move_canary(db, &SEED, &b, 0.1, None, &cli(), now + 3)
            .await
            .unwrap();
        // Under the lock: a pending start (its publication in flight) refuses a canary move
        // with `canary_in_use`, whatever the start's own check saw.
        remove_alias(db, &SEED, CANARY, &cli(), now + 4)
            .await
            .unwrap();
        let mut pending = started.experiment.clone();
        pending.id = "ab-pending-1".into();
        pending.status = ab::Status::Pending;
        pending.stop_reason = None;
        pending.first_bundle_version = None;
        pending.end_bundle_version = None;
        assert!(ab::store::insert_pending(&db.pool, &pending).await.unwrap());
        let r = move_canary(db, &SEED, &b, 0.1, None, &cli(), now + 5).await;
        assert!(
            matches!(
                r,
                Err(RegistryError::ConflictWith {
                    code: "canary_in_use",
                    ..
                })
            ),
            "{l}: {r:?}"
        );
        t.cleanup().await;
    }
}

#[tokio::test]
async fn canary_routes_answer_as_documented() {
    for t in all_dbs("canary_routes").await {
        let (db, l) = (&t.db, t.label);
        let api = Api::new(db);
        let [a, b, c] = setup(db).await;
        let (s, v) = api
            .post(
                "/v1/aliases/canary",
                json!({"version": b, "weight": 0.3, "comment": "step 1"}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{l}: {v}");
        assert_eq!(
            (
                &v["moved"]["alias"],
                &v["moved"]["weight"],
                &v["moved"]["arm_key"],
                &v["moved"]["actor"]
            ),
            (
                &"canary".into(),
                &0.3.into(),
                &"tenant".into(),
                &"admin-api".into()
            ),
            "{l}"
        );
        // A weight and key change of the same version.
        let (s, v) = api
            .post(
                "/v1/aliases/canary",
                json!({"version": b, "weight": 0.4, "key": "request"}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{l}: {v}");
        let (s, v) = api.get("/v1/aliases").await;
        assert_eq!(s, StatusCode::OK, "{l}: {v}");
        assert_eq!(
            v,
            json!([
                {"alias": "champion", "version": a, "weight": 1.0, "updated_at_ms": 5},
                {"alias": "canary", "version": b, "weight": 0.4, "arm_key": "request",
                 "updated_at_ms": v[1]["updated_at_ms"]},
            ]),
            "{l}"
        );
        let n = bundle_count(db).await;
        // Bad bodies: 400 with a JSON error, nothing published.
        for bad in [
            json!({"version": b}),
            json!({"version": b, "weight": 1.5}),
            json!({"version": b, "weight": -0.1}),
            json!({"version": b, "weight": "0.3"}),
            json!({"version": b, "weight": null}),
            json!({"version": b, "weight": 0.3, "key": "sideways"}),
            json!({"version": b, "weight": 0.3, "salt": "x"}),
            json!({"version": b, "weight": 0.3, "reason": "initial"}),
            json!({"version": b, "weight": 0.3, "comment": "x".repeat(1025)}),
            json!({"weight": 0.3}),
        ] {
            let (s, v) = api.post("/v1/aliases/canary", bad.clone()).await;
            assert_eq!(
                (s, v["code"].as_str()),
                (StatusCode::BAD_REQUEST, Some("bad_request")),
                "{l}: {bad}"
            );
        }
        for (path, raw) in [
            (
                "/v1/aliases/canary",
                format!(r#"{{"version":"{b}","weight":1e999}}"#),
            ),
            ("/v1/aliases/canary", "not json".to_string()),
            (
                "/v1/aliases/challenger",
                format!(r#"{{"version":"{c}","weight":0.1,"key":"tenant"}}"#),
            ),
            (
                "/v1/aliases/champion",
                format!(r#"{{"version":"{a}","weight":0.1}}"#),
            ),
            (
                "/v1/aliases/shadow",
                format!(r#"{{"version":"{a}","weight":0.1}}"#),
            ),
        ] {
            let (s, v) = api.call("POST", path, Some(raw.clone())).await;
            assert_eq!(
                (s, v["code"].as_str()),
                (StatusCode::BAD_REQUEST, Some("bad_request")),
                "{l}: {path} {raw}"
            );
        }
        let (s, v) = api
            .post(
                "/v1/aliases/canary",
                json!({"version": "lr-000000000000", "weight": 0.1}),
            )
            .await;
        assert_eq!(
            (s, v["code"].as_str()),
            (StatusCode::NOT_FOUND, Some("not_found"))
        );
        assert_eq!(bundle_count(db).await, n, "{l}: nothing published");
        // An experiment while the canary is set: 409 canary_in_use; the other way round, 409
        // experiment_running.
        let start = json!({"name": "e", "control": a, "treatment": c, "traffic_split": 0.5, "duration": "1h"});
        let (s, v) = api.post("/v1/hrs/ab/start", start.clone()).await;
        assert_eq!(
            (s, v["code"].as_str()),
            (StatusCode::CONFLICT, Some("canary_in_use")),
            "{l}: {v}"
        );
        let (s, v) = api
            .call("DELETE", "/v1/aliases/canary?comment=done", None)
            .await;
        assert_eq!(s, StatusCode::OK, "{l}: {v}");
        assert_eq!(v["moved"]["new_version"], serde_json::Value::Null);
        let (s, v) = api.call("DELETE", "/v1/aliases/canary", None).await;
        assert_eq!(
            (s, v["code"].as_str()),
            (StatusCode::NOT_FOUND, Some("not_found"))
        );
        let (s, v) = api.post("/v1/hrs/ab/start", start).await;
        assert_eq!(s, StatusCode::CREATED, "{l}: {v}");
        let (s, v) = api
            .post("/v1/aliases/canary", json!({"version": b, "weight": 0.1}))
            .await;
        assert_eq!(
            (s, v["code"].as_str()),
            (StatusCode::CONFLICT, Some("experiment_running")),
            "{l}: {v}"
        );
        // The canary's history, through the route.
        let (s, v) = api.get("/v1/aliases/history?alias=canary").await;
        assert_eq!(s, StatusCode::OK, "{l}: {v}");
        let weights: Vec<serde_json::Value> = v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["weight"].clone())
            .collect();
        assert_eq!(weights, [json!(null), json!(0.4), json!(0.3)], "{l}");
        t.cleanup().await;
    }
}
