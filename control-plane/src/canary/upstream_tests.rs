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
