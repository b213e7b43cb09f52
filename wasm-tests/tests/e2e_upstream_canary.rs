//! Canaries of an upstream route through two real Envoys and the real control plane, on a
//! compressed clock (steps of 3 s, the controller ticking every second): the route `/agent/`
//! has a stable and a canary backend (tiny real HTTP servers). The gate assigns each tenant by
//! the bundle's weight, sets `x-kakeya-upstream` and clears Envoy's route cache; the gates read
//! both Envoys' per-cluster stats. A canary that answers 5xx, then one that answers slowly, is
//! rolled back with all traffic on stable; a healthy one walks to 100 % and is promoted (its cluster
//! becomes the route's stable one at weight 0 for the other). Both Envoys pull the
//! same bundle and send every tenant to the same cluster, and a client cannot pick the canary.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kakeya_core::bundle::upstream_bucket;
use kakeya_core::upstream::UpstreamArm;
use kakeya_wasm_tests::backend::{Backend, Mode};
use kakeya_wasm_tests::stack::{free_addr, SecondEnvoy, Stack, StackOptions};
use serde_json::json;
use std::time::{Duration, Instant};

const POLL_MS: u64 = 300;
const TENANTS: usize = 200;
const ROUTE: &str = "agent";

fn tenants() -> Vec<String> {
    (0..TENANTS).map(|i| format!("t{i:03}")).collect()
}

struct Env {
    stack: Stack,
    second: SecondEnvoy,
    canary: Backend,
    agent: ureq::Agent,
}

fn env() -> Env {
    let stable = Backend::start("stable", Mode::Healthy).unwrap();
    let canary = Backend::start("canary", Mode::Healthy).unwrap();
    let (a1, a2) = (free_addr().unwrap(), free_addr().unwrap());
    let mut opts = StackOptions::scoring(POLL_MS);
    opts.envoy_admin = Some(a1);
    for (k, v) in [
        (
            "KAKEYA_UPSTREAMS",
            format!("{ROUTE},/agent/,{},{}", stable.addr, canary.addr),
        ),
        ("KAKEYA_CANARY_ENVOY_ADMINS", format!("{a1},{a2}")),
        ("KAKEYA_LEASE_TICK_MS", "200".into()),
        ("KAKEYA_CANARY_TICK_EVERY", "1s".into()),
        ("KAKEYA_CANARY_WEIGHTS", "0.1,0.5,1".into()),
        ("KAKEYA_CANARY_DURATIONS", "3s,3s,3s".into()),
        ("KAKEYA_CANARY_MIN_REQUESTS", "5".into()),
        ("KAKEYA_CANARY_MAX_HOLD", "4s".into()),
    ] {
        opts.env.push((k.into(), v));
    }
    let stack = Stack::start(opts).unwrap();
    let second = stack.start_second_envoy(a2).unwrap();
    Env {
        stack,
        second,
        canary,
        agent: ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(20))
            .build(),
    }
}

impl Env {
    /// `GET /agent/…` of `tenant` through Envoy 1 or 2 (`via`); the backend that answered
    /// (`stable`, `canary`) and the status. `pick` is a client-sent `x-kakeya-upstream`.
    fn get(&self, via: usize, tenant: &str, pick: Option<&str>) -> (String, u16) {
        let url = if via == 0 {
            self.stack.url("/agent/run")
        } else {
            self.second.url("/agent/run")
        };
        let mut req = self.agent.get(&url).set("x-tenant-id", tenant);
        if let Some(p) = pick {
            req = req.set("x-kakeya-upstream", p);
        }
        let resp = match req.call() {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("GET {url}: {e}"),
        };
        let status = resp.status();
        let body: serde_json::Value = resp
            .into_string()
            .ok()
            .and_then(|b| serde_json::from_str(&b).ok())
            .unwrap_or(json!({}));
        (body["backend"].as_str().unwrap_or("?").to_string(), status)
    }

    fn status(&self, id: &str) -> serde_json::Value {
        let a = self
            .stack
            .admin_get(&format!("/v1/operator/canary/status?deployment_id={id}"))
            .unwrap();
        assert_eq!(a.status, 200, "{a:?}");
        a.json()
    }

    fn events(&self, id: &str) -> Vec<serde_json::Value> {
        let a = self
            .stack
            .admin_get(&format!("/v1/operator/canary/{id}/events"))
            .unwrap();
        assert_eq!(a.status, 200, "{a:?}");
        a.json().as_array().unwrap().clone()
    }

    fn start(&self, name: &str) -> String {
        let a = self
            .stack
            .admin_post(
                "/v1/operator/canary/start",
                &json!({
                    "name": name, "target": format!("upstream:{ROUTE}"),
                    "gates": {
                        "latency": {"p95_threshold_ms": 200.0, "max_degradation_pct": 20.0,
                                    "min_delta_ms": 50.0},
                        "error_budget": {"escalation_rate_threshold": 0.05,
                                         "burn_rate_threshold": 0.5}},
                }),
            )
            .unwrap();
        assert_eq!(a.status, 201, "{a:?}");
        a.json()["deployment_id"].as_str().unwrap().to_string()
    }

    /// Traffic through both Envoys until the deployment finishes: every other request from a
    /// tenant on the canary from the first step, the others round-robin over every tenant.
    fn drive(&self, id: &str, deadline: Duration) -> serde_json::Value {
        let all = tenants();
        let hot: Vec<&String> = all
            .iter()
            .filter(|t| upstream_bucket(ROUTE, &[t]) < 0.1)
            .collect();
        assert!(!hot.is_empty());
        let t0 = Instant::now();
        for n in 0usize.. {
            if n % 20 == 0 {
                let s = self.status(id);
                if s["status"] != "pending" && s["status"] != "running" {
                    return s;
                }
                assert!(
                    t0.elapsed() < deadline,
                    "{id} stuck: {s:#}\nevents: {:#?}",
                    self.events(id)
                );
            }
            let t = if n % 2 == 0 {
                hot[(n / 2) % hot.len()]
            } else {
                &all[n % TENANTS]
            };
            self.get(n % 2, t, None);
        }
        unreachable!()
    }

    /// Waits until both Envoys send every tenant where the served bundle says (within a few
    /// poll intervals); the share of tenants on the canary cluster and the bundle's weight.
    fn agree_with_bundle(&self) -> (f64, f64) {
        let t0 = Instant::now();
        'retry: loop {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "the Envoys did not follow the bundle"
            );
            let before = self.stack.current_bundle().unwrap();
            std::thread::sleep(Duration::from_millis(3 * POLL_MS));
            let mut on_canary = 0;
            for t in tenants() {
                let want = before.upstream_arm(ROUTE, &t, "");
                let got: Vec<String> = (0..2).map(|via| self.get(via, &t, None).0).collect();
                let want = match want {
                    UpstreamArm::Canary => "canary",
                    UpstreamArm::Stable => "stable",
                };
                if got.iter().any(|g| g != want) {
                    continue 'retry;
                }
                on_canary += usize::from(want == "canary");
            }
            if self.stack.current_bundle().unwrap().version != before.version {
                continue;
            }
            // The share the bundle gives the canary cluster: after a promotion that cluster is
            // the route's stable one, and the weight is the other side's.
            let weight = before.upstreams.get(ROUTE).map_or(0.0, |c| {
                if c.stable_cluster == UpstreamArm::Canary {
                    1.0 - c.canary_weight
                } else {
                    c.canary_weight
                }
            });
            return (on_canary as f64 / TENANTS as f64, weight);
        }
    }
}

fn rolled_back(e: &Env, name: &str, mode: Mode) {
    e.canary.set_mode(mode);
    let id = e.start(name);
    let s = e.drive(&id, Duration::from_secs(90));
    assert_eq!(s["status"], "rolled_back", "{mode:?}: {s:#}");
    let ev = e.events(&id);
    let last = ev.last().unwrap();
    assert_eq!(
        (last["kind"].as_str(), last["weight"].as_f64()),
        (Some("rolled_back"), Some(0.0))
    );
    eprintln!("{mode:?} canary: {}", last["reason"]);
    let failed: Vec<&str> = last["gates"]["failed_gates"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|g| g.as_str())
        .collect();
    let expected = if mode == Mode::Errors {
        "error_budget"
    } else {
        "latency"
    };
    assert!(failed.contains(&expected), "{mode:?}: {failed:?}");
    // The canary arm's figures are the two Envoys' stats of the canary cluster.
    assert!(last["gates"]["canary"]["requests"].as_u64().unwrap() >= 5);
    // All traffic on stable, through both Envoys.
    assert!(e.stack.current_bundle().unwrap().upstreams.is_empty());
    assert_eq!(e.agree_with_bundle(), (0.0, 0.0));
}

#[test]
fn upstream_canaries_roll_back_on_5xx_or_latency_and_a_healthy_one_reaches_100_percent() {
    let e = env();
    // No canary yet: everything on stable, and a client cannot pick the canary.
    for (i, t) in tenants().iter().take(20).enumerate() {
        assert_eq!(e.get(i % 2, t, Some("canary")), ("stable".into(), 200));
    }
    // Refused: an unknown route.
    let a = e
        .stack
        .admin_post(
            "/v1/operator/canary/start",
            &json!({"name": "x", "target": "upstream:nope"}),
        )
        .unwrap();
    assert_eq!(a.status, 404, "{a:?}");

    rolled_back(&e, "errors", Mode::Errors);
    rolled_back(&e, "slow", Mode::Slow(300));

    // Healthy: every step passes, both Envoys following each weight.
    e.canary.set_mode(Mode::Healthy);
    let id = e.start("healthy");
    let t0 = Instant::now();
    while e.status(&id)["status"] == "pending" {
        assert!(t0.elapsed() < Duration::from_secs(20));
        std::thread::sleep(Duration::from_millis(200));
    }
    // Mid-run both Envoys put the same tenants on the canary, as many as the served weight
    // says (the check's own traffic may move the steps on: whatever weight it settles at).
    let (share, weight) = e.agree_with_bundle();
    assert!(
        weight > 0.0 && (share - weight).abs() <= 0.1,
        "{share} at {weight}"
    );
    let s = e.drive(&id, Duration::from_secs(90));
    assert_eq!(s["status"], "promoted", "{s:#}\n{:#?}", e.events(&id));
    let kinds: Vec<String> = e
        .events(&id)
        .iter()
        .map(|x| x["kind"].as_str().unwrap().to_string())
        .filter(|k| k != "held")
        .collect();
    assert_eq!(kinds, ["started", "step", "step", "promoted"]);
    // The promotion completes the job: the canary cluster is the route's stable one at
    // weight 0 for the other, and every tenant is on it, everywhere.
    let b = e.stack.current_bundle().unwrap();
    let c = *b.upstreams.get(ROUTE).unwrap();
    assert_eq!(
        (c.canary_weight, c.stable_cluster),
        (0.0, UpstreamArm::Canary)
    );
    assert_eq!(e.agree_with_bundle(), (1.0, 1.0));
    // clear-upstream over REST: weight 0 (already), the stable cluster stays.
    let a = e
        .stack
        .admin_post(
            &format!("/v1/operator/canary/upstream/{ROUTE}/clear"),
            &json!({}),
        )
        .unwrap();
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(
        a.json()["stable_cluster"],
        format!("kakeya_up_{ROUTE}_canary")
    );
    assert_eq!(e.agree_with_bundle(), (1.0, 1.0));
}
