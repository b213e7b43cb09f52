//! Task children in the registry, on SQLite and (when reachable) PostgreSQL: attaching to the
//! champion publishes a bundle carrying them; they follow their parent on promotion and
//! rollback; bad attachments change nothing; a tampered child refuses the publication.

use super::super::tests::{model, served, set_artifact, SEED};
use super::super::*;
use super::{attach, children};
use crate::testutil::all_dbs;
use kakeya_core::task::TaskKind;

fn cli() -> Why {
    Why::manual(Actor::Cli("alice".into()), Some("task models"))
}

#[tokio::test]
async fn task_children_ride_with_their_parent() {
    for t in all_dbs("task_children").await {
        let (db, l) = (&t.db, t.label);
        let ms = [model(-1.0), model(-2.0), model(-3.0), model(-4.0)];
        for m in &ms {
            insert_model(db, &SEED, m, &card::from_artifact(m), 1)
                .await
                .unwrap();
        }
        let [a, b, c, d] = ms.clone().map(|m| m.version());
        move_alias(db, &SEED, CHAMPION, &a, None, &cli(), 2)
            .await
            .unwrap();
        assert!(served(db).await.task_models.is_empty(), "{l}");

        // Attached to the champion: published at once.
        let p = attach(db, &SEED, &a, TaskKind::Dialogue, None, &b, 3)
            .await
            .unwrap();
        assert!(p.is_some(), "{l}");
        let p = attach(db, &SEED, &a, TaskKind::Qa, Some("acme"), &c, 4)
            .await
            .unwrap();
        let bundle = served(db).await;
        assert_eq!(
            Some(bundle.version),
            p.map(|p| u64::try_from(p.bundle_version).unwrap())
        );
        let tm = &bundle.task_models;
        assert_eq!(
            tm.by_task.get(&TaskKind::Dialogue).map(Model::version),
            Some(b.clone()),
            "{l}"
        );
        assert_eq!(
            tm.by_tenant
                .get("acme")
                .and_then(|m| m.get(&TaskKind::Qa))
                .map(Model::version),
            Some(c.clone()),
            "{l}"
        );
        let listed = children(db, &a).await.unwrap();
        assert_eq!(listed.len(), 2, "{l}");
        assert_eq!(listed[0].tenant, None, "{l}: every tenant first");

        // Not the champion: stored, published when it is promoted.
        let before = served(db).await.version;
        assert!(attach(db, &SEED, &d, TaskKind::Qa, None, &b, 5)
            .await
            .unwrap()
            .is_none());
        assert_eq!(served(db).await.version, before, "{l}");
        move_alias(db, &SEED, CHAMPION, &d, None, &cli(), 6)
            .await
            .unwrap();
        let on_d = served(db).await;
        assert_eq!(
            on_d.task_models.by_task.keys().collect::<Vec<_>>(),
            [&TaskKind::Qa],
            "{l}"
        );
        assert!(
            on_d.task_models.by_tenant.is_empty(),
            "{l}: a's children stay with a"
        );
        // Rollback: a's children come back with it.
        move_alias(db, &SEED, CHAMPION, &a, None, &cli(), 7)
            .await
            .unwrap();
        assert_eq!(served(db).await.task_models, bundle.task_models, "{l}");

        // Refused, nothing changed: unknown models, itself, bad tenants.
        let n = children(db, &a).await.unwrap();
        for (child, tenant) in [
            ("lr-000000000000", None),
            (a.as_str(), None),
            (b.as_str(), Some("")),
        ] {
            let r = attach(db, &SEED, &a, TaskKind::Rag, tenant, child, 8).await;
            let refused = match (child == a, tenant) {
                (true, _) => matches!(r, Err(RegistryError::Invalid(_))),
                (_, Some(_)) => r.is_ok(),
                _ => matches!(r, Err(RegistryError::NoModel(_))),
            };
            assert!(refused, "{l} {child} {tenant:?}: {r:?}");
        }
        // An empty tenant means every tenant (the rag slot is now b's).
        assert_eq!(children(db, &a).await.unwrap().len(), n.len() + 1, "{l}");
        let long = "x".repeat(200);
        assert!(matches!(
            attach(db, &SEED, &a, TaskKind::Rag, Some(&long), &b, 9).await,
            Err(RegistryError::Invalid(_))
        ));

        // A tampered child refuses the next publication; the served bundle stays.
        let served_before = served(db).await.version;
        set_artifact(db, &b, "{}", None, None).await;
        assert!(republish(db, &SEED, 10).await.is_err(), "{l}");
        assert_eq!(served(db).await.version, served_before, "{l}");
    }
}

/// The routes: PUT attaches (and republishes for the champion), GET lists; an unknown task, a
/// malformed body, an unregistered model or the model itself get a JSON error and change
/// nothing.
#[tokio::test]
async fn the_task_routes_attach_list_and_refuse_bad_input() {
    use super::super::history_tests::Api;
    use axum::http::StatusCode;
    use serde_json::json;
    for t in all_dbs("task_routes").await {
        let (db, l) = (&t.db, t.label);
        let (a, b) = (model(-1.0), model(-2.0));
        for m in [&a, &b] {
            insert_model(db, &SEED, m, &card::from_artifact(m), 1)
                .await
                .unwrap();
        }
        let (a, b) = (a.version(), b.version());
        move_alias(db, &SEED, CHAMPION, &a, None, &cli(), 2)
            .await
            .unwrap();
        let api = Api::new(db);
        let put = |task: &str, body: serde_json::Value| {
            let path = format!("/v1/models/{a}/tasks/{task}");
            let api = &api;
            async move { api.call("PUT", &path, Some(body.to_string())).await }
        };
        for (task, body, status, code) in [
            (
                "chat",
                json!({"model": b}),
                StatusCode::BAD_REQUEST,
                "bad_request",
            ),
            (
                "qa",
                json!({"modle": b}),
                StatusCode::BAD_REQUEST,
                "bad_request",
            ),
            (
                "qa",
                json!({"model": "lr-000000000000"}),
                StatusCode::NOT_FOUND,
                "not_found",
            ),
            (
                "qa",
                json!({"model": a}),
                StatusCode::BAD_REQUEST,
                "bad_request",
            ),
        ] {
            let (s, v) = put(task, body.clone()).await;
            assert_eq!(s, status, "{l} {task} {body}: {v}");
            assert!(v["error"].is_string(), "{l}: {v}");
            assert_eq!(v["code"], code, "{l}: {v}");
        }
        assert!(children(db, &a).await.unwrap().is_empty(), "{l}");
        let (s, v) = put("qa", json!({"model": b, "tenant": "acme"})).await;
        assert_eq!(s, StatusCode::OK, "{l}: {v}");
        assert_eq!(v["child"]["task"], "qa");
        assert_eq!(v["bundle_version"], json!(served(db).await.version));
        let (s, v) = api.get(&format!("/v1/models/{a}/tasks")).await;
        assert_eq!(s, StatusCode::OK, "{l}");
        assert_eq!(v[0]["model"], json!(b), "{l}: {v}");
        assert_eq!(v[0]["tenant"], "acme", "{l}: {v}");
    }
}
