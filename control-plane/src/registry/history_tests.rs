//! Alias history tests, on SQLite and (when reachable) PostgreSQL: every move recorded with
//! its bundle, failed moves record nothing, the last good champion, migration 0011's first
//! rows, and the routes (`/v1/aliases/history`, `/v1/hrs/register`, `/v1/hrs/activate`).

use super::tests::{model, served, set_artifact, stored, SEED};
use super::*;
use crate::testutil::all_dbs;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use kakeya_core::model::Model;
use tower::ServiceExt;

fn by(actor: Actor, reason: Reason, comment: Option<&str>) -> Why {
    Why {
        actor,
        reason,
        comment: comment.map(str::to_string),
    }
}

async fn all_history(db: &Db) -> Vec<HistoryEntry> {
    let mut conn = db.pool.acquire().await.unwrap();
    history::page(&mut conn, None, None, 10_000).await.unwrap()
}

type Row<'a> = (
    &'a str,
    Option<String>,
    Option<String>,
    Option<f64>,
    &'a str,
    Reason,
    Option<&'a str>,
    i64,
    i64,
);

/// The history's fields, oldest first (ids left out).
fn oldest_first(h: &[HistoryEntry]) -> Vec<Row<'_>> {
    h.iter()
        .rev()
        .map(|e| {
            (
                e.alias.as_str(),
                e.previous_version.clone(),
                e.new_version.clone(),
                e.weight,
                e.actor.as_str(),
                e.reason,
                e.comment.as_deref(),
                e.bundle_version,
                e.created_at_ms,
            )
        })
        .collect()
}

/// The comment of migration 0011's rows.
const FIRST: &str = "the alias as it stood when the history began";

async fn register(db: &Db, m: &Model, ts: i64) {
    insert_model(db, &SEED, m, &card::from_artifact(m), ts)
        .await
        .unwrap();
}

#[tokio::test]
async fn every_alias_move_is_recorded_with_its_bundle_and_failed_moves_record_nothing() {
    for t in all_dbs("history_moves").await {
        let (db, l) = (&t.db, t.label);
        let (a, b) = (model(-1.0), model(-2.0));
        register(db, &a, 1).await;
        register(db, &b, 2).await;
        let cli = Actor::Cli("alice".into());
        let p1 = move_alias(
            db,
            &SEED,
            CHAMPION,
            &a.version(),
            None,
            &Why::manual(cli.clone(), None),
            10,
        )
        .await
        .unwrap();
        let gate = by(Actor::Scheduler, Reason::Gate, Some("passed the gate"));
        let p2 = move_alias(db, &SEED, CHALLENGER, &b.version(), Some(0.25), &gate, 11)
            .await
            .unwrap();
        let revert = by(Actor::AdminApi, Reason::AutoRevert, None);
        let p3 = remove_alias(db, &SEED, CHALLENGER, &revert, 12)
            .await
            .unwrap();
        let p4 = move_alias(
            db,
            &SEED,
            CHAMPION,
            &b.version(),
            None,
            &Why::manual(cli, Some("b is better")),
            13,
        )
        .await
        .unwrap();
        // Refused moves: nothing published, nothing recorded.
        let long = "x".repeat(history::MAX_COMMENT_CHARS + 1);
        let refused = [
            move_alias(db, &SEED, CHAMPION, "lr-000000000000", None, &why(), 14).await,
            move_alias(db, &SEED, CHALLENGER, &a.version(), Some(2.0), &why(), 14).await,
            move_alias(db, &SEED, "shadow", &a.version(), Some(0.1), &why(), 14).await,
            move_alias(
                db,
                &SEED,
                CHAMPION,
                &a.version(),
                None,
                &Why::manual(Actor::AdminApi, Some(&long)),
                14,
            )
            .await,
            remove_alias(db, &SEED, CHALLENGER, &why(), 14).await,
            remove_alias(db, &SEED, CHAMPION, &why(), 14).await,
        ];
        assert!(refused.iter().all(Result::is_err), "{l}: {refused:?}");
        assert!(matches!(refused[4], Err(RegistryError::NoChallenger)));
        assert_eq!(current_bundle(db).await.unwrap().unwrap().version, 4, "{l}");

        let h = all_history(db).await;
        let got = oldest_first(&h);
        let (va, vb) = (Some(a.version()), Some(b.version()));
        assert_eq!(
            got,
            vec![
                (
                    CHAMPION,
                    None,
                    va.clone(),
                    Some(1.0),
                    "cli:alice",
                    Reason::Manual,
                    None,
                    1,
                    10
                ),
                (
                    CHALLENGER,
                    None,
                    vb.clone(),
                    Some(0.25),
                    "scheduler",
                    Reason::Gate,
                    Some("passed the gate"),
                    2,
                    11
                ),
                (
                    CHALLENGER,
                    vb.clone(),
                    None,
                    None,
                    "admin-api",
                    Reason::AutoRevert,
                    None,
                    3,
                    12
                ),
                (
                    CHAMPION,
                    va,
                    vb,
                    Some(1.0),
                    "cli:alice",
                    Reason::Manual,
                    Some("b is better"),
                    4,
                    13
                ),
            ],
            "{l}"
        );
        // Each publication answers its own row.
        for (p, e) in [&p1, &p2, &p3, &p4].iter().zip(h.iter().rev()) {
            assert_eq!(p.moved.as_ref(), Some(e), "{l}");
            assert_eq!(p.bundle_version, e.bundle_version);
        }
        // Pages: newest first, by alias, below an id.
        let mut conn = db.pool.acquire().await.unwrap();
        let champ = history::page(&mut conn, Some(CHAMPION), None, 10)
            .await
            .unwrap();
        assert_eq!(
            champ.iter().map(|e| e.bundle_version).collect::<Vec<_>>(),
            [4, 1]
        );
        let older = history::page(&mut conn, None, Some(h[1].id), 10)
            .await
            .unwrap();
        assert_eq!(
            older.iter().map(|e| e.bundle_version).collect::<Vec<_>>(),
            [2, 1]
        );
        assert_eq!(
            history::page(&mut conn, None, None, 1).await.unwrap().len(),
            1
        );
        drop(conn);
        t.cleanup().await;
    }
}

fn why() -> Why {
    Why::manual(Actor::Cli("test".into()), None)
}

#[tokio::test]
async fn the_last_good_champion_skips_the_current_the_reverted_and_altered_rows() {
    for t in all_dbs("history_last_good").await {
        let (db, l) = (&t.db, t.label);
        let key = keys::public_key_b64(&SEED);
        let (a, b, c) = (model(-1.0), model(-2.0), model(-3.0));
        for (i, m) in [&a, &b, &c].into_iter().enumerate() {
            register(db, m, i as i64).await;
        }
        assert_eq!(
            last_good_champion(db, &key).await.unwrap(),
            None,
            "{l}: no history"
        );
        let champion = |m: &Model, reason, ts| {
            let why = by(Actor::Scheduler, reason, None);
            let v = m.version();
            async move {
                move_alias(db, &SEED, CHAMPION, &v, None, &why, ts)
                    .await
                    .unwrap()
            }
        };
        champion(&a, Reason::Initial, 10).await;
        assert_eq!(
            last_good_champion(db, &key).await.unwrap(),
            None,
            "{l}: only the current"
        );
        champion(&b, Reason::Gate, 11).await;
        champion(&c, Reason::Gate, 12).await;
        assert_eq!(
            last_good_champion(db, &key).await.unwrap(),
            Some(b.version()),
            "{l}"
        );
        // c drifted: reverted to b. c is bad from now on; before b there was a.
        champion(&b, Reason::AutoRevert, 13).await;
        assert_eq!(
            last_good_champion(db, &key).await.unwrap(),
            Some(a.version()),
            "{l}"
        );
        // The challenger's moves are not champions.
        move_alias(db, &SEED, CHALLENGER, &c.version(), Some(0.5), &why(), 14)
            .await
            .unwrap();
        assert_eq!(
            last_good_champion(db, &key).await.unwrap(),
            Some(a.version()),
            "{l}"
        );
        // a's row altered: it does not verify, so it is not good (recorded as a failure).
        let (text, _) = stored(db, &a.version()).await;
        let altered = text.replacen("\"intercept\":-1.0", "\"intercept\":3.0", 1);
        set_artifact(db, &a.version(), &altered, None, None).await;
        let before = super::tests::integrity_failures("model");
        assert_eq!(last_good_champion(db, &key).await.unwrap(), None, "{l}");
        assert!(super::tests::integrity_failures("model") > before);
        set_artifact(db, &a.version(), &text, None, None).await;
        assert_eq!(
            last_good_champion(db, &key).await.unwrap(),
            Some(a.version()),
            "{l}"
        );
        // A manual promotion of c makes b the last good one again (c was only reverted from
        // once, but it is current now, and b is not marked bad).
        champion(&c, Reason::Manual, 15).await;
        assert_eq!(
            last_good_champion(db, &key).await.unwrap(),
            Some(b.version()),
            "{l}"
        );
        t.cleanup().await;
    }
}

/// Migration 0011 (its INSERT, run again on a database with aliases): the history starts with
/// one `initial` row per alias, by `migration-0011`, at the newest bundle.
#[tokio::test]
async fn migration_0011_starts_the_history_with_the_aliases_as_they_are() {
    for t in all_dbs("history_migration").await {
        let (db, l) = (&t.db, t.label);
        let (a, b) = (model(-1.0), model(-2.0));
        register(db, &a, 1).await;
        register(db, &b, 2).await;
        move_alias(db, &SEED, CHAMPION, &a.version(), None, &why(), 5)
            .await
            .unwrap();
        move_alias(db, &SEED, CHALLENGER, &b.version(), Some(0.3), &why(), 6)
            .await
            .unwrap();
        sqlx::query("DELETE FROM alias_history")
            .execute(&db.pool)
            .await
            .unwrap();
        let sql = match db.backend {
            Backend::Sqlite => include_str!("../../migrations/sqlite/0011_alias_history.sql"),
            Backend::Postgres => include_str!("../../migrations/postgres/0011_alias_history.sql"),
        };
        let insert = &sql[sql.find("INSERT INTO alias_history").unwrap()..];
        sqlx::query(insert).execute(&db.pool).await.unwrap();
        let h = all_history(db).await;
        let got = oldest_first(&h);
        assert_eq!(
            got,
            vec![
                (
                    CHAMPION,
                    None,
                    Some(a.version()),
                    Some(1.0),
                    "migration-0011",
                    Reason::Initial,
                    Some(FIRST),
                    2,
                    5
                ),
                (
                    CHALLENGER,
                    None,
                    Some(b.version()),
                    Some(0.3),
                    "migration-0011",
                    Reason::Initial,
                    Some(FIRST),
                    2,
                    6
                ),
            ],
            "{l}"
        );
        t.cleanup().await;
    }
}

/// The admin router on a test database, with the test token and [`SEED`].
pub(super) struct Api {
    router: axum::Router,
}

impl Api {
    pub(super) fn new(db: &Db) -> Api {
        let metrics = crate::metrics::Metrics::new().unwrap();
        Api {
            router: crate::api::admin_router(crate::api::AdminState {
                db: db.clone(),
                leases: crate::lease::Leases::new(
                    metrics.leader.clone(),
                    std::time::Duration::from_secs(5),
                ),
                scheduler: Default::default(),
                drift: crate::drift::DriftOptions::default(),
                cost: Default::default(),
                canary: crate::canary::CanaryOptions::default(),
                metrics,
                committer: std::sync::Arc::new(crate::ingest::CommitterStatus {
                    wal_ok: true.into(),
                    db_ok: true.into(),
                }),
                wal_dir: std::env::temp_dir(),
                admin_token: crate::api::auth::Secret::new("history-test-token"),
                bundle_seed: Some(std::sync::Arc::new(SEED)),
                evidence: None,
            }),
        }
    }

    pub(super) async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<String>,
    ) -> (StatusCode, serde_json::Value) {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", "Bearer history-test-token")
            .header("content-type", "application/json")
            .body(body.map(Body::from).unwrap_or_else(Body::empty))
            .unwrap();
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let v = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {bytes:?}"));
        (status, v)
    }

    pub(super) async fn post(
        &self,
        path: &str,
        body: serde_json::Value,
    ) -> (StatusCode, serde_json::Value) {
        self.call("POST", path, Some(body.to_string())).await
    }

    pub(super) async fn get(&self, path: &str) -> (StatusCode, serde_json::Value) {
        self.call("GET", path, None).await
    }
}

#[tokio::test]
async fn the_seed_routes_register_and_activate_through_the_same_registry() {
    for t in all_dbs("history_routes").await {
        let (db, l) = (&t.db, t.label);
        let api = Api::new(db);
        let (a, b) = (model(-1.0), model(-2.0));
        let artifact = |m: &Model| String::from_utf8(m.canonical_bytes()).unwrap();
        // Register: 201, then the stored row again with 200; /v1/models keeps its 409.
        let (s, first) = api
            .call("POST", "/v1/hrs/register", Some(artifact(&a)))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{l}: {first}");
        assert_eq!(
            (&first["version"], &first["binary_hash"], &first["status"]),
            (
                &a.version().into(),
                &a.sha256().into(),
                &"registered".into()
            )
        );
        assert_eq!(first["card"]["model_version"], a.version());
        let (s, again) = api
            .call("POST", "/v1/hrs/register", Some(artifact(&a)))
            .await;
        assert_eq!((s, &again), (StatusCode::OK, &first), "{l}");
        let (s, v) = api.call("POST", "/v1/models", Some(artifact(&a))).await;
        assert_eq!(
            (s, v["code"].as_str()),
            (StatusCode::CONFLICT, Some("conflict"))
        );
        let (s, v) = api
            .call("POST", "/v1/hrs/register", Some("{\"kind\":1}".into()))
            .await;
        assert_eq!(
            (s, v["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("bad_request"))
        );
        let (s, _) = api.call("POST", "/v1/models", Some(artifact(&b))).await;
        assert_eq!(s, StatusCode::CREATED);

        // Activate: bad bodies are 400, an unknown version 404; nothing is published.
        for bad in [
            serde_json::json!({}),
            serde_json::json!({"version": a.version(), "reason": "initial"}),
            serde_json::json!({"version": a.version(), "reason": "because"}),
            serde_json::json!({"version": a.version(), "comment": "x".repeat(1025)}),
            serde_json::json!({"version": a.version(), "weight": 0.5}),
        ] {
            let (s, v) = api.post("/v1/hrs/activate", bad.clone()).await;
            assert_eq!(
                (s, v["code"].as_str()),
                (StatusCode::BAD_REQUEST, Some("bad_request")),
                "{l}: {bad}"
            );
        }
        let (s, v) = api
            .post(
                "/v1/hrs/activate",
                serde_json::json!({"version": "lr-000000000000"}),
            )
            .await;
        assert_eq!(
            (s, v["code"].as_str()),
            (StatusCode::NOT_FOUND, Some("not_found"))
        );
        assert!(current_bundle(db).await.unwrap().is_none());

        let (s, v) = api
            .post(
                "/v1/hrs/activate",
                serde_json::json!({"version": a.version()}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{l}: {v}");
        assert_eq!(
            (&v["active"], &v["previous"], &v["bundle_version"]),
            (&a.version().into(), &serde_json::Value::Null, &1.into())
        );
        let (s, v) = api
            .post("/v1/hrs/activate", serde_json::json!({"version": b.version(), "reason": "gate", "comment": "AUROC 0.81 ≥ floor"}))
            .await;
        assert_eq!(s, StatusCode::OK, "{l}: {v}");
        assert_eq!(
            (&v["active"], &v["previous"], &v["bundle_version"]),
            (&b.version().into(), &a.version().into(), &2.into())
        );
        assert_eq!(
            (
                &v["moved"]["actor"],
                &v["moved"]["reason"],
                &v["moved"]["comment"]
            ),
            (
                &"admin-api".into(),
                &"gate".into(),
                &"AUROC 0.81 ≥ floor".into()
            )
        );
        assert_eq!(served(db).await.champion.version(), b.version(), "{l}");
        // /v1/aliases/* record the same way.
        let (s, v) = api
            .post(
                "/v1/aliases/challenger",
                serde_json::json!({"version": a.version(), "weight": 0.1, "comment": "try a"}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{l}: {v}");
        assert_eq!(
            (&v["moved"]["alias"], &v["moved"]["comment"]),
            (&"challenger".into(), &"try a".into())
        );
        let (s, v) = api
            .call(
                "DELETE",
                "/v1/aliases/challenger?reason=auto_revert&comment=drift",
                None,
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{l}: {v}");
        assert_eq!(
            (&v["moved"]["reason"], &v["moved"]["new_version"]),
            (&"auto_revert".into(), &serde_json::Value::Null)
        );
        let (s, _) = api
            .call("DELETE", "/v1/aliases/challenger?reason=initial", None)
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST);

        // The history route: newest first, by alias, a page at a time.
        let (s, page) = api.get("/v1/aliases/history?alias=champion&limit=1").await;
        assert_eq!(s, StatusCode::OK, "{l}: {page}");
        assert_eq!(page["items"][0]["new_version"], b.version());
        let cursor = page["next_cursor"].as_str().unwrap().to_string();
        let (_, next) = api
            .get(&format!(
                "/v1/aliases/history?alias=champion&cursor={cursor}"
            ))
            .await;
        let items = next["items"].as_array().unwrap();
        assert_eq!(
            (items.len(), &items[0]["new_version"]),
            (1, &a.version().into()),
            "{l}"
        );
        assert!(next["next_cursor"].is_null());
        let (_, all) = api.get("/v1/aliases/history").await;
        let bundles: Vec<_> = all["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["bundle_version"].as_i64().unwrap())
            .collect();
        assert_eq!(bundles, [4, 3, 2, 1], "{l}");
        for q in ["alias=shadow", "limit=0", "limit=1001", "cursor=nope"] {
            let (s, v) = api.get(&format!("/v1/aliases/history?{q}")).await;
            assert_eq!(
                (s, v["code"].as_str()),
                (StatusCode::BAD_REQUEST, Some("bad_request")),
                "{q}"
            );
        }

        // An altered row: 409 integrity_failure on activation, nothing published or recorded;
        // registering the artifact again is refused as well.
        let (text, _) = stored(db, &a.version()).await;
        set_artifact(
            db,
            &a.version(),
            &text.replacen("\"intercept\":-1.0", "\"intercept\":3.0", 1),
            None,
            None,
        )
        .await;
        let good = current_bundle(db).await.unwrap().unwrap();
        let (s, v) = api
            .post(
                "/v1/hrs/activate",
                serde_json::json!({"version": a.version()}),
            )
            .await;
        assert_eq!(
            (s, v["code"].as_str()),
            (StatusCode::CONFLICT, Some("integrity_failure")),
            "{l}: {v}"
        );
        assert!(v["error"].as_str().unwrap().contains(&a.version()));
        let (s, v) = api
            .call("POST", "/v1/hrs/register", Some(artifact(&a)))
            .await;
        assert_eq!(
            (s, v["code"].as_str()),
            (StatusCode::CONFLICT, Some("integrity_failure")),
            "{l}: {v}"
        );
        assert_eq!(current_bundle(db).await.unwrap().unwrap(), good);
        assert_eq!(all_history(db).await.len(), 4, "{l}");
        t.cleanup().await;
    }
}

#[test]
fn actors_are_recorded_by_these_names() {
    let names: Vec<String> = [
        Actor::AdminApi,
        Actor::Cli("bob".into()),
        Actor::Scheduler,
        Actor::Serve,
    ]
    .iter()
    .map(Actor::to_string)
    .collect();
    assert_eq!(names, ["admin-api", "cli:bob", "scheduler", "kakeya-serve"]);
    let Actor::Cli(user) = Actor::cli() else {
        panic!("the CLI's actor is a Cli")
    };
    assert!(
        !user.trim().is_empty() && user.chars().count() <= 64,
        "{user:?}"
    );
    assert!(!user.contains(char::is_control));
}
