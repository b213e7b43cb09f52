//! Tenant budgets enforced by the filter, through real Envoy and the real control plane: four
//! tenants spend real, priced cost records (each request calls the micro-vote, whose cluster
//! points at a listener that counts connections); budgets set through `PUT /v1/cost/budgets`
//! make the control plane compute alert / degrade / throttle / deny from that spend and publish
//! them in the signed bundle; requests through Envoy then see 200/202 with the micro-vote
//! skipped, 429 + `Retry-After`, 402, and a tenant that is refused or degraded costs no
//! micro-vote call (no connection, and the filter's call counter does not move). The cost
//! tracer's filter time and model calls are priced in the tenants' cost.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kakeya_core::budget::BudgetAction;
use kakeya_core::ensemble_policy::{EnsemblePolicy, Stack as Stacking, StrategyConfig};
use kakeya_core::evidence::Evidence;
use kakeya_wasm_tests::ensemble::MICROVOTE_CLUSTER;
use kakeya_wasm_tests::fixtures::{grounded_evidence, signed_pcs_with_evidence, KEY};
use kakeya_wasm_tests::stack::{post, Answer, Stack, StackOptions};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const TENANTS: [&str; 4] = ["paid", "lean", "slow", "broke"];

/// Accepts and closes every connection, counting them: each is one micro-vote call Envoy made
/// (closed at once, the call gets no response and the vote abstains).
fn counting_listener() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let n = Arc::new(AtomicUsize::new(0));
    let seen = n.clone();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            seen.fetch_add(1, Ordering::SeqCst);
            drop(conn);
        }
    });
    (addr, n)
}

/// `hrs` decides alone (n = 1); `micro_vote` is asked on every request.
fn policy() -> EnsemblePolicy {
    let s = || StrategyConfig {
        weight: 1.0,
        accept_below: None,
        reject_above: None,
        deadline_ms: Some(200),
    };
    EnsemblePolicy {
        policy_id: "budget-e2e".into(),
        n: 1,
        strategies: [("hrs".to_string(), s()), ("micro_vote".to_string(), s())]
            .into_iter()
            .collect(),
        min_confidence: 0.5,
        reject_confidence: 0.8,
        fail_open: true,
        stack: Stacking::default(),
        sources: None,
    }
}

/// A distinct grounded answer per request (the filter caches micro-vote answers by text).
fn submit(stack: &Stack, tenant: &str, i: usize) -> Answer {
    let ev = Evidence {
        response: format!("{} ({tenant} {i})", grounded_evidence().response),
        ..grounded_evidence()
    };
    let body = signed_pcs_with_evidence(&format!("{tenant}-{i}"), KEY, &ev, None).to_string();
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(20))
        .build();
    // Retrying the transient 503s a loaded machine may answer, as agents do.
    for _ in 0..50 {
        let a = post(
            &agent,
            &stack.url(kakeya_core::SUBMIT_PATH),
            &[
                ("content-type", "application/json"),
                ("x-tenant-id", tenant),
            ],
            body.as_bytes(),
        )
        .unwrap();
        if a.status != 503 {
            return a;
        }
    }
    panic!("the gateway kept answering 503")
}

/// The micro-vote was called (its listener closes the connection: no answer).
fn called(reason: &str) -> bool {
    ["no_response", "bad_status", "timeout"].contains(&reason)
}

fn micro_vote_reason(a: &Answer) -> String {
    let r = a.json();
    let votes = r["ensemble"]["votes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    votes
        .iter()
        .find(|v| v["strategy"] == "micro_vote")
        .and_then(|v| v["reason"].as_str())
        .unwrap_or_else(|| panic!("no micro_vote vote: {}", a.body))
        .to_string()
}

fn put_budget(stack: &Stack, body: serde_json::Value) -> serde_json::Value {
    let r = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(20))
        .build()
        .put(&stack.admin_url("/v1/cost/budgets"))
        .set("authorization", &format!("Bearer {}", stack.admin_token))
        .set("content-type", "application/json")
        .send_string(&body.to_string());
    let r = match r {
        Ok(r) | Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(r.status(), 200);
    serde_json::from_str(&r.into_string().unwrap()).unwrap()
}

fn poll<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The filter's counters (`/stats`, Envoy prefixes a wasm filter's own with `wasmcustom.`).
fn stat(stack: &Stack, name: &str) -> u64 {
    let stats = ureq::get(&stack.envoy_admin_url("/stats?filter=kakeya_gate"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    stats
        .lines()
        .find_map(|l| l.strip_prefix(&format!("wasmcustom.{name}: ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn budget_actions_are_enforced_by_the_filter_and_refused_tenants_cost_no_model_calls() {
    let (mv_addr, connections) = counting_listener();
    let keyring: Vec<String> = TENANTS.iter().map(|t| format!("{t}:hmac:{KEY}")).collect();
    let mut opts = StackOptions::scoring(200);
    opts.env.extend([
        ("MULTI_TENANT".into(), "true".into()),
        ("TENANTS".into(), keyring.join(",")),
        (
            "KAKEYA_ENSEMBLE_DEFAULT".into(),
            serde_json::to_string(&policy()).unwrap(),
        ),
    ]);
    opts.extra_clusters = vec![(MICROVOTE_CLUSTER.to_string(), mv_addr)];
    let stack = Stack::start(opts).unwrap();
    let day = |offset: i64| {
        use kakeya_control_plane::cost::prices::{day_of_ms, format_day};
        format_day(day_of_ms(kakeya_control_plane::now_ms()) + offset)
    };
    // Model calls at 1 a call and filter time at 1000 a CPU second: the priced services show
    // what the tracer reported.
    let price = serde_json::json!({"effective_from": day(-1), "per_request": 0.0,
        "per_model_call": 1.0, "per_cpu_second": 1000.0});
    let book = stack.admin_post("/v1/cost/prices", &price).unwrap();
    assert_eq!(book.status, 201, "{}", book.body);

    // Until the gate serves the ensemble policy: every tenant's request asks the micro-vote.
    let mut warm = 0;
    poll("the ensemble policy in the gate", || {
        warm += 1;
        let a = submit(&stack, "paid", 1000 + warm);
        (a.json()["ensemble"].is_object()).then_some(())
    });
    for t in TENANTS {
        let a = submit(&stack, t, 0);
        assert!(a.status == 200 || a.status == 202, "{t}: {a:?}");
        assert!(called(&micro_vote_reason(&a)), "{t}: {}", a.body);
    }
    let path = format!("/v1/cost/summary?from={}&to={}", day(0), day(1));
    let summary = poll("a cost record per tenant", || {
        let s = stack.admin_get(&path).unwrap().json();
        let tenants = s["tenants"].as_array()?.clone();
        TENANTS
            .iter()
            .all(|t| tenants.iter().any(|x| x["tenant"] == *t))
            .then_some(tenants)
    });
    let cost_of = |tenants: &[serde_json::Value], t: &str| {
        tenants.iter().find(|x| x["tenant"] == t).unwrap()["cost"].clone()
    };
    for t in ["lean", "slow", "broke"] {
        let c = cost_of(&summary, t);
        assert_eq!(c["model_calls"], 1.0, "{t}: one micro-vote call: {c}");
        assert!(
            c["compute"].as_f64().unwrap() > 0.0,
            "{t}: filter time: {c}"
        );
    }

    // Budgets whose caps that spend has crossed: the control plane computes the actions.
    let set = |tenant: &str, soft: f64, hard: f64, soft_action: &str, hard_action: &str| {
        let list = put_budget(
            &stack,
            serde_json::json!({"tenant": tenant, "soft_cap": soft, "hard_cap": hard,
                "soft_action": soft_action, "hard_action": hard_action}),
        );
        let row = list
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["tenant"] == tenant)
            .unwrap()
            .clone();
        row["action"].as_str().unwrap().to_string()
    };
    assert_eq!(set("paid", 0.5, 1e9, "alert", "deny"), "alert");
    assert_eq!(set("lean", 0.5, 1e9, "degrade", "deny"), "degrade");
    assert_eq!(set("slow", 0.1, 0.5, "alert", "throttle"), "throttle");
    assert_eq!(set("broke", 0.1, 0.5, "degrade", "deny"), "deny");
    let bundle = poll("the budgets in the bundle", || {
        let b = stack.current_bundle().ok()?;
        (b.budgets.tenants.len() == TENANTS.len()).then_some(b)
    });
    assert_eq!(bundle.budgets.action_for("broke"), BudgetAction::Deny);
    // Until the gate serves that bundle (the probe is refused, so it costs no call).
    let mut probe = 0;
    poll("the budgets in the gate", || {
        probe += 1;
        (submit(&stack, "broke", 2000 + probe).status == 402).then_some(())
    });
    let before = connections.load(Ordering::SeqCst);
    let calls_before = stat(&stack, "kakeya_gate.microvote_calls_total");

    for i in 1..=5 {
        let a = submit(&stack, "broke", i);
        assert_eq!(a.status, 402, "{a:?}");
        assert_eq!(a.json()["code"], "budget_exceeded", "{}", a.body);
        assert!(a.json()["error"].is_string());

        let a = submit(&stack, "slow", i);
        assert_eq!(a.status, 429, "{a:?}");
        assert_eq!(a.json()["code"], "budget_throttled", "{}", a.body);
        let retry: u32 = a.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=86_400).contains(&retry), "{retry}");

        let a = submit(&stack, "lean", i);
        assert!(a.status == 200 || a.status == 202, "{a:?}");
        assert_eq!(micro_vote_reason(&a), "budget_degraded");
    }
    assert_eq!(
        connections.load(Ordering::SeqCst),
        before,
        "refused, throttled and degraded tenants made no micro-vote call"
    );
    assert_eq!(
        stat(&stack, "kakeya_gate.microvote_calls_total"),
        calls_before
    );

    // The alerted tenant is served as usual: the micro-vote is still called.
    let a = submit(&stack, "paid", 1);
    assert!(a.status == 200 || a.status == 202, "{a:?}");
    assert!(called(&micro_vote_reason(&a)), "{}", a.body);
    assert!(connections.load(Ordering::SeqCst) > before);

    // Per-tenant budget counters in the filter.
    for (tenant, name, at_least) in [
        ("broke", "budget_denied_total", 5),
        ("slow", "budget_throttled_total", 5),
        ("lean", "budget_degraded_total", 5),
        ("paid", "budget_alert_total", 1),
    ] {
        let n = stat(&stack, &format!("kakeya_gate.tenant.{tenant}.{name}"));
        assert!(n >= at_least, "{tenant} {name}: {n}");
    }

    // The degraded tenant's new decisions are priced with filter time and no model call.
    let summary = poll("the degraded decisions' cost records", || {
        let s = stack.admin_get(&path).unwrap().json();
        let tenants = s["tenants"].as_array()?.clone();
        let lean = tenants.iter().find(|x| x["tenant"] == "lean")?;
        (lean["decisions"] == 6).then_some(tenants)
    });
    let lean = cost_of(&summary, "lean");
    assert_eq!(
        lean["model_calls"], 1.0,
        "only the call before the budget: {lean}"
    );

    // The control plane counts what the filter served under alert and degrade.
    let metrics = stack.admin_get("/metrics").unwrap().body;
    for (tenant, action) in [("paid", "alert"), ("lean", "degrade")] {
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("kakeya_cost_budget_served_total")
                    && l.contains(&format!("tenant=\"{tenant}\""))
                    && l.contains(&format!("action=\"{action}\""))),
            "{tenant} {action} not counted"
        );
    }
}
