//! Upstream canaries on SQLite and (when reachable) PostgreSQL, without an Envoy: the start's
//! checks, the weight in every published bundle, and "no data fails a gate" (no Envoy answers
//! for the route: the step is held, then rolled back to weight 0). The gates over Envoy's real
//! stats run end to end (wasm-tests/tests/e2e_upstream_canary.rs).

use super::controller::tick;
use super::*;
use crate::registry;
use crate::testutil::all_dbs;

const SEED: [u8; 32] = [7; 32];
const T0: i64 = 1_800_000_000_000;
const S: i64 = 1000;

fn opts() -> CanaryOptions {
    CanaryOptions {
        steps: vec![
            Step {
                weight: 0.1,
                duration_ms: 10_000,
            },
            Step {
                weight: 1.0,
                duration_ms: 10_000,
            },
        ],
        min_requests: 5,
        tick_every: std::time::Duration::from_secs(1),
        max_hold: std::time::Duration::from_secs(5),
        // No Envoy: every scrape sums nothing.
        envoy_admins: Vec::new(),
        upstreams: vec!["agent".into()],
    }
}

fn req(target: &str) -> StartRequest {
    StartRequest {
        name: "up".into(),
        target: Some(target.into()),
        control_version: String::new(),
        canary_version: String::new(),
        key: None,
        gates: Gates::default(),
        steps: None,
        min_requests: None,
    }
}

async fn served(db: &Db) -> kakeya_core::bundle::Bundle {
    let row = registry::current_bundle(db).await.unwrap().unwrap();
    registry::check_bundle_row(&row, &registry::keys::public_key_b64(&SEED)).unwrap()
}

#[tokio::test]
async fn an_upstream_canary_moves_the_bundles_weight_and_no_data_rolls_it_back() {
    for t in all_dbs("canary_upstream").await {
        let (db, l) = (&t.db, t.label);
        // A champion, so bundles publish.
        let m = crate::registry::tests::model(-1.0);
        registry::insert_model(db, &SEED, &m, &registry::card::from_artifact(&m), 1)
            .await
            .unwrap();
        let why =
            registry::history::Why::manual(registry::history::Actor::Cli("test".into()), None);
        registry::move_alias(db, &SEED, registry::CHAMPION, &m.version(), None, &why, 5)
            .await
            .unwrap();
        // Refused, nothing recorded.
        for (r, code) in [
            (req("agent"), "invalid"),
            (req("upstream:other"), "not_found"),
            (
                StartRequest {
                    control_version: "lr-x".into(),
                    ..req("upstream:agent")
                },
                "invalid",
            ),
        ] {
            let e = start(db, &opts(), &r, T0).await.unwrap_err();
            let got = match e {
                CanaryError::Invalid(_) => "invalid",
                CanaryError::NotFound(_) => "not_found",
                other => panic!("{l}: {other}"),
            };
            assert_eq!(got, code, "{l}: {r:?}");
        }
        assert!(store::active(db).await.unwrap().is_none(), "{l}");

        let id = start(db, &opts(), &req("upstream:agent"), T0)
            .await
            .unwrap()
            .deployment_id;
        let d = store::get(db, &id).await.unwrap().unwrap();
        assert_eq!(d.target.as_deref(), Some("upstream:agent"));
        assert_eq!(
            (d.control_version.as_str(), d.canary_version.as_str()),
            ("kakeya_up_agent_stable", "kakeya_up_agent_canary")
        );
        // Started: 10 % in the bundle; a clear is refused while it runs.
        let t1 = tick(db, &SEED, &opts(), T0).await.unwrap().unwrap();
        assert_eq!(t1.event, Some("started"), "{l}");
        let b = served(db).await;
        assert_eq!(b.upstreams.get("agent").unwrap().canary_weight, 0.1, "{l}");
        assert!(matches!(
            upstream::clear(db, &SEED, &opts(), "agent", T0).await,
            Err(CanaryError::Conflict {
                code: "canary_active",
                ..
            })
        ));
        // The step is due without any Envoy stats: no data, held ...
        let t2 = tick(db, &SEED, &opts(), T0 + 10 * S)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(t2.event, Some("held"), "{l}");
        let check = t2.deployment.last_check.unwrap();
        for g in &check.gates {
            let skipped = matches!(g.gate, gates::GateName::Containment | gates::GateName::Cost);
            let want = if skipped {
                gates::GateStatus::Skipped
            } else {
                gates::GateStatus::NoData
            };
            assert_eq!(g.status, want, "{l}: {g:?}");
        }
        // ... then rolled back: weight 0, the bundle without the route.
        let t3 = tick(db, &SEED, &opts(), T0 + 16 * S)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(t3.event, Some("rolled_back"), "{l}");
        assert!(served(db).await.upstreams.is_empty(), "{l}");
        assert_eq!(upstream::weight(db, "agent").await.unwrap(), 0.0);

        // Abort of a second one sets the weight back to 0 too; then a clear is a no-op publish.
        let id2 = start(db, &opts(), &req("upstream:agent"), T0 + 20 * S)
            .await
            .unwrap()
            .deployment_id;
        tick(db, &SEED, &opts(), T0 + 20 * S).await.unwrap();
        assert!(!served(db).await.upstreams.is_empty());
        request(db, &id2, Action::Abort).await.unwrap();
        let t4 = tick(db, &SEED, &opts(), T0 + 21 * S)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(t4.event, Some("aborted"), "{l}");
        assert!(served(db).await.upstreams.is_empty(), "{l}");
        upstream::clear(db, &SEED, &opts(), "agent", T0 + 22 * S)
            .await
            .unwrap();
    }
}

/// A champion (so bundles publish) and a second registered model; their versions.
async fn champion_and_candidate(db: &Db) -> (String, String) {
    let why = registry::history::Why::manual(registry::history::Actor::Cli("test".into()), None);
    let (a, b) = (
        crate::registry::tests::model(-1.0),
        crate::registry::tests::model(-0.5),
    );
    for m in [&a, &b] {
        registry::insert_model(db, &SEED, m, &registry::card::from_artifact(m), 1)
            .await
            .unwrap();
    }
    registry::move_alias(db, &SEED, registry::CHAMPION, &a.version(), None, &why, 5)
        .await
        .unwrap();
    (a.version(), b.version())
}

fn conflict_code(e: CanaryError) -> &'static str {
    match e {
        CanaryError::Conflict { code, .. } => code,
        other => panic!("not a conflict: {other}"),
    }
}

#[tokio::test]
async fn one_active_canary_per_target_the_scoring_alias_and_each_route_apart() {
    for t in all_dbs("canary_per_target").await {
        let (db, l) = (&t.db, t.label);
        let (a, b) = champion_and_candidate(db).await;
        let mut o = opts();
        o.upstreams.push("search".into());
        let up = start(db, &o, &req("upstream:agent"), T0).await.unwrap();
        // The same route again: 409 canary_active naming the running deployment; nothing
        // recorded.
        let e = start(
            db,
            &o,
            &StartRequest {
                name: "up2".into(),
                ..req("upstream:agent")
            },
            T0 + S,
        )
        .await
        .unwrap_err();
        assert!(e.to_string().contains(&up.deployment_id), "{l}: {e}");
        assert_eq!(conflict_code(e), "canary_active", "{l}");
        // Another route and the scoring alias are other targets: both start.
        let other = start(
            db,
            &o,
            &StartRequest {
                name: "search".into(),
                ..req("upstream:search")
            },
            T0 + S,
        )
        .await
        .unwrap();
        let scoring_req = StartRequest {
            name: "model".into(),
            target: None,
            control_version: a.clone(),
            canary_version: b.clone(),
            key: None,
            gates: Gates::default(),
            steps: None,
            min_requests: None,
        };
        let scoring = start(db, &o, &scoring_req, T0 + S).await.unwrap();
        let e = start(
            db,
            &o,
            &StartRequest {
                name: "model2".into(),
                ..scoring_req.clone()
            },
            T0 + 2 * S,
        )
        .await
        .unwrap_err();
        assert_eq!(conflict_code(e), "canary_active", "{l}");
        assert_eq!(store::active_all(db).await.unwrap().len(), 3, "{l}");
        // One tick starts all three: both routes' weights and the canary alias in the bundle.
        let ticks = super::controller::tick_all(db, &SEED, &o, T0 + 2 * S)
            .await
            .unwrap();
        let started: Vec<(String, Option<&str>)> = ticks
            .into_iter()
            .map(|(id, r)| (id, r.unwrap().unwrap().event))
            .collect();
        assert_eq!(
            started,
            [
                // Oldest first, then by id.
                (up.deployment_id.clone(), Some("started")),
                (scoring.deployment_id.clone(), Some("started")),
                (other.deployment_id.clone(), Some("started")),
            ],
            "{l}"
        );
        let bundle = served(db).await;
        assert_eq!(bundle.upstreams.get("agent").unwrap().canary_weight, 0.1);
        assert_eq!(bundle.upstreams.get("search").unwrap().canary_weight, 0.1);
        assert_eq!(bundle.canary.as_ref().unwrap().weight, 0.1, "{l}");
        // Aborting one leaves the others running; its target is free again.
        request(db, &up.deployment_id, Action::Abort).await.unwrap();
        super::controller::tick_all(db, &SEED, &o, T0 + 3 * S)
            .await
            .unwrap();
        let left: Vec<String> = store::active_all(db)
            .await
            .unwrap()
            .into_iter()
            .map(|d| d.id)
            .collect();
        assert_eq!(left, [scoring.deployment_id, other.deployment_id], "{l}");
        let bundle = served(db).await;
        assert!(bundle.upstreams.get("agent").is_none(), "{l}");
        assert!(bundle.canary.is_some(), "{l}");
        start(
            db,
            &o,
            &StartRequest {
                name: "up3".into(),
                ..req("upstream:agent")
            },
            T0 + 4 * S,
        )
        .await
        .unwrap();
    }
}

#[tokio::test]
async fn a_promoted_upstream_canary_is_the_routes_stable_cluster_at_weight_0() {
    for t in all_dbs("canary_up_promote").await {
        let (db, l) = (&t.db, t.label);
        champion_and_candidate(db).await;
        upstream::set_weight(db, &SEED, "agent", 1.0, Default::default(), T0)
            .await
            .unwrap();
        // What the controller does when the last step passes.
        upstream::promote(db, &SEED, "agent", Default::default(), T0 + S)
            .await
            .unwrap();
        let c = *served(db).await.upstreams.get("agent").unwrap();
        assert_eq!(
            (c.canary_weight, c.stable_cluster),
            (0.0, kakeya_core::upstream::UpstreamArm::Canary),
            "{l}"
        );
        assert_eq!(upstream::weight(db, "agent").await.unwrap(), 0.0, "{l}");
        // Every tenant on the promoted cluster.
        let b = served(db).await;
        for k in 0..200 {
            assert_eq!(
                b.upstream_arm("agent", &format!("t{k}"), ""),
                kakeya_core::upstream::UpstreamArm::Canary,
                "{l}"
            );
        }
        // The next canary of the route is the other cluster, against the promoted one, and
        // its rollback keeps the route on the promoted cluster.
        let id = start(db, &opts(), &req("upstream:agent"), T0 + 2 * S)
            .await
            .unwrap()
            .deployment_id;
        let d = store::get(db, &id).await.unwrap().unwrap();
        assert_eq!(
            (d.control_version.as_str(), d.canary_version.as_str()),
            ("kakeya_up_agent_canary", "kakeya_up_agent_stable"),
            "{l}"
        );
        tick(db, &SEED, &opts(), T0 + 2 * S).await.unwrap();
        let c = *served(db).await.upstreams.get("agent").unwrap();
        assert_eq!(
            (c.canary_weight, c.cluster(false), c.cluster(true)),
            (
                0.1,
                kakeya_core::upstream::UpstreamArm::Canary,
                kakeya_core::upstream::UpstreamArm::Stable
            ),
            "{l}"
        );
        request(db, &id, Action::Abort).await.unwrap();
        tick(db, &SEED, &opts(), T0 + 3 * S).await.unwrap();
        let c = *served(db).await.upstreams.get("agent").unwrap();
        assert_eq!(
            (c.canary_weight, c.stable_cluster),
            (0.0, kakeya_core::upstream::UpstreamArm::Canary),
            "{l}"
        );
        // A clear keeps the stable cluster; promoting again swaps back to the rendered one,
        // and the bundle no longer lists the route.
        upstream::clear(db, &SEED, &opts(), "agent", T0 + 4 * S)
            .await
            .unwrap();
        assert_eq!(
            upstream::stable_cluster(db, "agent").await.unwrap(),
            kakeya_core::upstream::UpstreamArm::Canary,
            "{l}"
        );
        upstream::promote(db, &SEED, "agent", Default::default(), T0 + 5 * S)
            .await
            .unwrap();
        assert!(served(db).await.upstreams.is_empty(), "{l}");
    }
}

#[test]
fn upstreams_come_from_the_file_or_the_environment_and_are_checked() {
    use crate::config::EnvMap;
    let env = |v: &str| -> EnvMap {
        [("KAKEYA_UPSTREAMS".to_string(), v.to_string())]
            .into_iter()
            .collect()
    };
    let file = vec![upstream::Upstream {
        name: "f".into(),
        prefix: "/f/".into(),
        stable: "127.0.0.1:1".into(),
        canary: "backend.internal:2".into(),
    }];
    assert_eq!(
        upstream::from_parts(file.clone(), &EnvMap::new()).unwrap(),
        file
    );
    let got = upstream::from_parts(
        file,
        &env("a,/a/,127.0.0.1:9001,127.0.0.1:9002; b,/b/,h:1,h:2"),
    )
    .unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!((got[0].name.as_str(), got[1].canary.as_str()), ("a", "h:2"));
    for bad in [
        "a,/a/,127.0.0.1:9001",
        "a-b,/a/,h:1,h:2",
        "a,a/,h:1,h:2",
        "a,/a/,h,h:2",
        "a,/a/,h:1,h:2;a,/b/,h:1,h:2",
    ] {
        assert!(
            upstream::from_parts(Vec::new(), &env(bad)).is_err(),
            "{bad}"
        );
    }
}
