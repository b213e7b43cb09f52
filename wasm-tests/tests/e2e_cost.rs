//! Cost attribution through real Envoy and the real control plane: decisions made through the
//! gateway get cost records; `kakeya cost fixtures` bills them as AWS CUR with +2 % compute and
//! −4 % storage; `POST /v1/cost/import` (202, job) reads them, reports the corrupted row by its
//! line, re-imports as a no-op; the reconciliation finds the planted drift and alerts on the
//! negative one; a budget's action reaches the signed bundle the filters poll; malformed
//! requests get JSON errors.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kakeya_wasm_tests::fixtures::{signed_pcs, KEY};
use kakeya_wasm_tests::stack::{Answer, Stack, StackOptions};
use std::time::{Duration, Instant};

fn day(offset_days: i64) -> String {
    use kakeya_control_plane::cost::prices::{day_of_ms, format_day};
    format_day(day_of_ms(kakeya_control_plane::now_ms()) + offset_days)
}

fn put(stack: &Stack, path: &str, body: &serde_json::Value) -> Answer {
    let r = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(20))
        .build()
        .put(&stack.admin_url(path))
        .set("authorization", &format!("Bearer {}", stack.admin_token))
        .set("content-type", "application/json")
        .send_string(&body.to_string());
    match r {
        Ok(r) | Err(ureq::Error::Status(_, r)) => Answer {
            status: r.status(),
            headers: vec![],
            body: r.into_string().unwrap(),
        },
        Err(e) => panic!("{e}"),
    }
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

#[test]
fn decisions_are_costed_billed_reconciled_and_budgeted() {
    let exports = tempfile::tempdir().unwrap();
    let mut opts = StackOptions::scoring(200);
    opts.env.push((
        "KAKEYA_COST_AWS_EXPORTS".into(),
        exports.path().display().to_string(),
    ));
    let stack = Stack::start(opts).unwrap();
    let (today, tomorrow) = (day(0), day(1));

    // A price book entry through the API (bad ones refused, nothing stored).
    let bad = stack
        .admin_post(
            "/v1/cost/prices",
            &serde_json::json!({"effective_from": "2026-13-01"}),
        )
        .unwrap();
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(bad.json()["code"].is_string());
    let price = serde_json::json!({"effective_from": day(-1), "per_request": 0.0002,
        "per_gib_stored": 40.0, "per_gib_transferred": 90.0});
    let book = stack.admin_post("/v1/cost/prices", &price).unwrap();
    assert_eq!(book.status, 201, "{}", book.body);

    for i in 0..30 {
        let a = stack
            .submit(signed_pcs(&format!("cost-{i}"), KEY).to_string().as_bytes())
            .unwrap();
        assert!(
            a.status == 200 || a.status == 202,
            "{}: {}",
            a.status,
            a.body
        );
    }
    let path = format!("/v1/cost/summary?from={today}&to={tomorrow}");
    let summary = poll("30 cost records", || {
        let s = stack.admin_get(&path).unwrap().json();
        (s["tenants"][0]["decisions"] == 30).then_some(s)
    });
    let t = &summary["tenants"][0];
    eprintln!(
        "summary tenants: {}",
        serde_json::to_string_pretty(&summary["tenants"]).unwrap()
    );
    assert_eq!(t["tenant"], "default");
    assert!(t["total"].as_f64().unwrap() > 0.0);
    assert!(t["cost"]["storage"].as_f64().unwrap() > 0.0);
    assert_eq!(
        t["cost"]["model_calls"], 0.0,
        "no micro-vote yet: nothing is guessed"
    );

    // Bill it: CUR legacy, +2 % compute, −4 % storage, one corrupted row.
    let cur = exports.path().join("cur.csv");
    let out = stack
        .kakeya(&[
            "cost",
            "fixtures",
            "--out",
            cur.to_str().unwrap(),
            "--format",
            "cur-legacy",
            "--start",
            &today,
            "--end",
            &tomorrow,
            "--drift",
            "compute=2.0",
            "--drift",
            "storage=-4.0",
            "--corrupt-row",
        ])
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let import = |expect_written: Option<u64>| {
        let body =
            serde_json::json!({"provider": "aws", "start_time": today, "end_time": tomorrow});
        let a = stack.admin_post("/v1/cost/import", &body).unwrap();
        assert_eq!(a.status, 202, "{}", a.body);
        let id = a.json()["job_id"].as_str().unwrap().to_string();
        let job = poll("the import job", || {
            let j = stack
                .admin_get(&format!("/v1/cost/import/{id}"))
                .unwrap()
                .json();
            (j["status"] != "running").then_some(j)
        });
        assert_eq!(job["status"], "succeeded", "{job}");
        let r = &job["result"];
        eprintln!(
            "import job: {}",
            serde_json::to_string_pretty(&job).unwrap()
        );
        assert_eq!(r["malformed"], 1);
        assert_eq!(r["bad_rows"][0][1]["line"], 2, "{r}");
        if let Some(w) = expect_written {
            assert_eq!(r["written"], w, "{r}");
        }
        r["records"].as_u64().unwrap()
    };
    let records = import(None);
    assert!(records > 0);
    assert_eq!(import(Some(0)), records, "re-importing changes nothing");

    let rep = stack
        .admin_post(
            "/v1/cost/reconcile",
            &serde_json::json!({"start_time": today, "end_time": tomorrow}),
        )
        .unwrap();
    assert_eq!(rep.status, 200, "{}", rep.body);
    let rep = rep.json();
    eprintln!(
        "reconcile months: {}",
        serde_json::to_string_pretty(&rep["months"]).unwrap()
    );
    eprintln!("reconcile status {} id {}", rep["status"], rep["id"]);
    assert_eq!(rep["status"], "alert");
    let cell = |s: &str| {
        rep["months"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["service"] == s)
            .unwrap()
            .clone()
    };
    let sym = |pct: f64| (pct / 100.0) / (1.0 + pct / 200.0) * 100.0;
    let compute = cell("compute");
    assert!(
        (compute["drift_pct"].as_f64().unwrap() - sym(2.0)).abs() < 1e-6,
        "{compute}"
    );
    assert_eq!(compute["status"], "within_target");
    let storage = cell("storage");
    assert!(
        (storage["drift_pct"].as_f64().unwrap() - sym(-4.0)).abs() < 1e-6,
        "{storage}"
    );
    assert_eq!(storage["status"], "alert", "−4 % must alert");
    assert_eq!(cell("model_calls")["status"], "no_data");
    let latest = stack.admin_get("/v1/cost/reconcile/latest").unwrap().json();
    assert_eq!(latest["id"], rep["id"]);
    assert_eq!(latest["internal_sha256"], rep["internal_sha256"]);

    // A budget whose hard cap is already spent: deny, published in the signed bundle.
    let b = put(
        &stack,
        "/v1/cost/budgets",
        &serde_json::json!({"tenant": "default", "soft_cap": 0.0, "hard_cap": 1e-9,
                            "soft_action": "degrade", "hard_action": "deny"}),
    );
    assert_eq!(b.status, 200, "{}", b.body);
    assert_eq!(b.json()[0]["action"], "deny");
    let bundle = poll("the budget in the bundle", || {
        let b = stack.current_bundle().ok()?;
        b.budgets.tenants.contains_key("default").then_some(b)
    });
    assert_eq!(
        bundle.budgets.action_for("default"),
        kakeya_core::budget::BudgetAction::Deny
    );
    let bad = put(
        &stack,
        "/v1/cost/budgets",
        &serde_json::json!({"tenant": "x", "soft_cap": 2, "hard_cap": 1}),
    );
    assert_eq!(bad.status, 400, "{}", bad.body);

    // The forecast and bad input.
    let f = stack
        .admin_post("/v1/cost/forecast", &serde_json::json!({"horizon_days": 7}))
        .unwrap();
    assert_eq!(f.status, 200, "{}", f.body);
    // The forecast reads complete days only: today's decisions are not history yet.
    assert!(f.json()["total"].is_null(), "{}", f.body);
    assert_eq!(f.json()["tenants"], serde_json::json!([]));
    for (path, body) in [
        ("/v1/cost/forecast", serde_json::json!({"horizon_days": 0})),
        (
            "/v1/cost/import",
            serde_json::json!({"provider": "oracle", "start_time": today, "end_time": tomorrow}),
        ),
        (
            "/v1/cost/import",
            serde_json::json!({"provider": "gcp", "start_time": today, "end_time": tomorrow}),
        ),
        (
            "/v1/cost/recommendations/apply",
            serde_json::json!({"recommendation_id": "nope"}),
        ),
    ] {
        let a = stack.admin_post(path, &body).unwrap();
        assert!(
            matches!(a.status, 400 | 404 | 409),
            "{path}: {} {}",
            a.status,
            a.body
        );
        assert!(a.json()["code"].is_string(), "{path}: {}", a.body);
    }
    let metrics = stack.admin_get("/metrics").unwrap().body;
    for m in [
        "kakeya_cost_budget_utilisation",
        "kakeya_cost_reconciliation_drift_pct",
        "kakeya_cost_import_lines_total",
    ] {
        assert!(metrics.contains(m), "{m} missing from /metrics");
    }
}
