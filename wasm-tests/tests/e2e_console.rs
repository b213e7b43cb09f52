//! The operator console in headless Chromium, against real Envoy and the real control plane on
//! SQLite: decisions are submitted through the gateway (signed PCS with evidence; a wrongly
//! attributed answer escalates into the review queue, the opted-in tenant's with its evidence), a canary
//! runs, then `wasm-tests/console/console.cjs` (playwright-core driving Debian's chromium)
//! signs in, opens every page with no console error, failed request or HTTP error, labels a
//! decision with the keyboard (j, h) and pauses the canary with its button. This side checks
//! the label, the pause and the overview's figures through the API: the buyer KPIs of every
//! window equal `GET /v1/kpis` and the `kakeya_kpi_*` gauges of `/metrics` (labels given
//! through the API first, so containment and the online AUROC are defined), as do the KPI
//! page's table, the anomaly page's confusion matrix (`GET /v1/anomaly/confusion`, over
//! feedback given first) and the audit page's chain status and downloaded compliance report.
//! Screenshots of every page land in `<target>/console-screenshots/`.
//!
//! Needs `node`, `CHROMIUM` (`KAKEYA_CHROMIUM_BIN`, default `/usr/bin/chromium`) and
//! playwright-core (`KAKEYA_PLAYWRIGHT_DIR`), which `cargo xtask test` installs (and, when it
//! cannot, skips this test with `--skip`, counted as skipped); run by hand without them, it
//! says so and returns.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kakeya_wasm_tests::console_figures::{currency, from_kpis, from_metrics};
use kakeya_wasm_tests::fixtures::{grounded_evidence, signed_pcs_with_evidence, KEY};
use kakeya_wasm_tests::scored::{built, register_coverage_model, send, submit_scored, turing};
use kakeya_wasm_tests::stack::{Stack, StackOptions};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const REVIEWER: &str = "console-e2e";

/// Chromium, node and the playwright-core folder, or why they are missing.
fn browser_tools() -> Result<(PathBuf, PathBuf), String> {
    let chromium = std::env::var_os("KAKEYA_CHROMIUM_BIN")
        .map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from);
    if !chromium.is_file() {
        return Err(format!("no chromium at {}", chromium.display()));
    }
    let playwright = std::env::var_os("KAKEYA_PLAYWRIGHT_DIR")
        .map(PathBuf::from)
        .ok_or("KAKEYA_PLAYWRIGHT_DIR is unset")?;
    if !playwright.join("node_modules/playwright-core").is_dir() {
        return Err(format!("no playwright-core under {}", playwright.display()));
    }
    let node = Command::new("node").arg("--version").output();
    if !node.is_ok_and(|o| o.status.success()) {
        return Err("node is not on the PATH".into());
    }
    Ok((chromium, playwright))
}

const WINDOWS: [&str; 4] = ["1h", "24h", "7d", "30d"];

/// The page's texts of one window (`{key: text}` of the script's JSON).
fn texts(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .iter()
        .map(|(k, t)| (k.clone(), t.as_str().unwrap().to_string()))
        .collect()
}

/// `/v1/kpis` of every window, once `/metrics` shows the same figures (its gauges are
/// recomputed on a scrape at most every 15 s): (window, its JSON, the texts both give).
fn kpis_as_scraped(stack: &Stack) -> Vec<(String, Value, BTreeMap<String, String>)> {
    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        let metrics = stack.admin_get("/metrics").unwrap().body;
        let mut all = Vec::new();
        let mut differ = Vec::new();
        for w in WINDOWS {
            let k = stack
                .admin_get(&format!("/v1/kpis?window={w}"))
                .unwrap()
                .json();
            let json = from_kpis(&k);
            let defined: BTreeMap<String, String> =
                json.clone().into_iter().filter(|(_, t)| t != "–").collect();
            let scraped = from_metrics(&metrics, w, &currency(&k));
            if scraped != defined {
                differ.push(format!("{w}: /v1/kpis {defined:?}\n  /metrics {scraped:?}"));
            }
            all.push((w.to_string(), k, json));
        }
        if differ.is_empty() {
            return all;
        }
        assert!(
            Instant::now() < deadline,
            "the gauges never matched /v1/kpis:\n{}",
            differ.join("\n")
        );
        std::thread::sleep(Duration::from_millis(1000));
    }
}

/// Gives anomaly feedback on a decision: the recorded score when inline scoring recorded one,
/// else `score`.
fn anomaly_feedback(stack: &Stack, tenant: &str, pcs_id: &str, anomalous: bool, score: f64) {
    let label = if anomalous { "anomalous" } else { "normal" };
    let body = |score: Option<f64>| {
        json!({"tenant_id": tenant, "pcs_id": pcs_id, "user_label": label,
               "submitted_by": REVIEWER, "source": "gold", "predicted_score": score})
    };
    // The decision log is written behind the WAL: a moment after the answer.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut a = stack
        .admin_post("/v1/anomaly/feedback", &body(Some(score)))
        .unwrap();
    while a.status == 404 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        a = stack
            .admin_post("/v1/anomaly/feedback", &body(Some(score)))
            .unwrap();
    }
    if a.status == 400 && a.body.contains("recorded anomaly score") {
        a = stack
            .admin_post("/v1/anomaly/feedback", &body(None))
            .unwrap();
    }
    assert_eq!(a.status, 204, "{pcs_id}: {}", a.body);
}

fn screenshots_dir() -> PathBuf {
    // CARGO_TARGET_TMPDIR is <target>/tmp.
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("console-screenshots")
}

#[test]
fn the_console_works_in_headless_chromium() {
    let (chromium, playwright) = match browser_tools() {
        Ok(t) => t,
        Err(why) => {
            eprintln!(
                "skipped: {why} (cargo xtask test installs chromium with apt-get and \
                 playwright-core with npm)"
            );
            return;
        }
    };
    let mut opts = StackOptions::scoring(200);
    opts.env.extend([
        ("MULTI_TENANT".into(), "true".into()),
        ("TENANTS".into(), format!("acme:hmac:{KEY},beta:hmac:{KEY}")),
        ("KAKEYA_EVIDENCE_TENANTS".into(), "acme".into()),
        ("KAKEYA_LEASE_TICK_MS".into(), "200".into()),
        ("KAKEYA_CANARY_TICK_EVERY".into(), "1s".into()),
        ("KAKEYA_AUDIT_CHECKPOINT_EVERY".into(), "1s".into()),
    ]);
    let stack = Stack::start(opts).unwrap();

    // Until the gate scores with the default model: grounded answers are accepted.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut shard = 0;
    loop {
        shard += 1;
        match submit_scored(&stack, "acme", &format!("warm-{shard}"), true) {
            Ok((seen, _)) => {
                assert_eq!(seen.status, 200, "{seen:?}");
                break;
            }
            Err(e) => assert!(Instant::now() < deadline, "never scored: {e}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // A wrong attribution escalates into the review queue (acme's with its evidence); grounded
    // answers beside them are accepted.
    let mut decided = Vec::new();
    for (tenant, i) in [
        ("acme", 0),
        ("acme", 1),
        ("beta", 2),
        ("acme", 3),
        ("acme", 4),
    ] {
        let (body, escalated) = built(&stack, &format!("turing-{i}"), &turing());
        let (status, r) = send(&stack, tenant, &body);
        assert_eq!(status, 202, "{r}");
        let shard = format!("grounded-{i}");
        let (seen, _) = submit_scored(&stack, tenant, &shard, true).unwrap();
        assert_eq!(seen.status, 200, "{seen:?}");
        let body = signed_pcs_with_evidence(&shard, KEY, &grounded_evidence(), None).to_string();
        let accepted = kakeya_core::parse(body.as_bytes()).unwrap().pcs_id;
        decided.push((tenant, escalated, accepted));
    }
    // Gold labels through the API, both classes: containment and the online AUROC are
    // defined, and the overview must show them as the dashboard does.
    for (tenant, escalated, accepted) in &decided[..2] {
        for (pcs_id, label) in [(escalated, "hallucinated"), (accepted, "faithful")] {
            let a = stack
                .admin_post(
                    &format!("/v1/reviews/{tenant}/{pcs_id}"),
                    &json!({"label": label, "reviewer": "api-e2e"}),
                )
                .unwrap();
            assert_eq!(a.status, 201, "{}", a.body);
        }
    }
    // Anomaly feedback of acme's decisions, both classes, and one optimiser run: the anomaly
    // page's confusion matrix, ROC and history have something to show.
    for (n, (tenant, escalated, accepted)) in decided.iter().enumerate() {
        if *tenant == "acme" {
            let k = n as f64 / 10.0;
            anomaly_feedback(&stack, tenant, escalated, true, 0.9 - k);
            anomaly_feedback(&stack, tenant, accepted, false, 0.1 + k);
        }
    }
    let a = stack
        .admin_post(
            "/v1/anomaly/optimize-threshold",
            &json!({"tenant_id": "acme", "target_fpr": 0.5}),
        )
        .unwrap();
    assert_eq!(a.status, 200, "{}", a.body);
    let open = stack.admin_get("/v1/reviews?status=open").unwrap().json();
    let queued = open["items"].as_array().unwrap().len();
    assert!(queued >= 3, "{open}");

    // A canary of a second model, running.
    let champion = stack.current_bundle().unwrap().champion.version();
    let canary = register_coverage_model(&stack).unwrap();
    let a = stack
        .admin_post(
            "/v1/operator/canary/start",
            &json!({"name": "console", "control_version": champion, "canary_version": canary,
                    "steps": [{"weight": 0.05, "duration_ms": 3_600_000},
                              {"weight": 1.0, "duration_ms": 3_600_000}]}),
        )
        .unwrap();
    assert_eq!(a.status, 201, "{a:?}");
    let deployment = a.json()["deployment_id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    while stack
        .admin_get("/v1/operator/canary/status")
        .unwrap()
        .json()["status"]
        != "running"
    {
        assert!(Instant::now() < deadline, "the canary never started");
        std::thread::sleep(Duration::from_millis(100));
    }
    // What the pages must show: nothing changes the KPIs until the script has read them.
    let kpis = kpis_as_scraped(&stack);
    let confusion = stack
        .admin_get("/v1/anomaly/confusion?tenant_id=acme")
        .unwrap()
        .json();
    let chain = stack.admin_get("/v1/audit/verify").unwrap().json();
    assert_eq!(chain["ok"], true, "{chain}");

    // The browser.
    let shots = screenshots_dir();
    let _ = std::fs::remove_dir_all(&shots);
    std::fs::create_dir_all(&shots).unwrap();
    let profile = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("console/console.cjs");
    let out = Command::new("node")
        .arg(&script)
        .env("CONSOLE_URL", stack.admin_url("/console/"))
        .env("CONSOLE_TOKEN", &stack.admin_token)
        .env("CONSOLE_REVIEWER", REVIEWER)
        .env("CHROMIUM", &chromium)
        .env("PLAYWRIGHT_DIR", &playwright)
        .env("SCREENSHOT_DIR", &shots)
        .env("USER_DATA_DIR", profile.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let seen: Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!("console: {seen}");

    // Every page opened and has its screenshot.
    let pages: Vec<&str> = seen["pages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert_eq!(
        pages,
        ["overview", "review", "models", "canary", "drift", "cost", "kpis", "anomaly", "audit"]
    );
    for (i, p) in pages.iter().enumerate() {
        let png = shots.join(format!("{:02}-{p}.png", i + 1));
        assert!(std::fs::metadata(&png).unwrap().len() > 10_000, "{png:?}");
    }

    // The overview shows the dashboard's figures, window by window: those of /v1/kpis and
    // of the kakeya_kpi_* gauges (equal, kpis_as_scraped), and so does the KPI page's table.
    for (w, k, want) in &kpis {
        let shown = texts(&seen["overview_kpis"][w]);
        assert_eq!(&shown, want, "overview, window {w}: {k}");
        let table = texts(&seen["kpi_table"][w]);
        for (key, text) in want {
            assert_eq!(table.get(key), Some(text), "KPI page, window {w}, {key}");
        }
        assert!(
            table
                .iter()
                .all(|(key, t)| want.get(key) == Some(t) || t == "–"),
            "{w}: {table:?}"
        );
    }
    let day = &kpis[1].2;
    for defined in [
        "containment_rate",
        "hrs_auroc.all",
        "escalation_rate",
        "decisions",
    ] {
        assert_ne!(
            day.get(defined).map(String::as_str),
            Some("–"),
            "{defined}: {day:?}"
        );
        assert!(day.contains_key(defined), "{defined}: {day:?}");
    }
    assert!(seen["kpi_plots"].as_u64().unwrap() >= 4, "{seen}");
    let f = &seen["figures"];
    assert_eq!(f["open_reviews"], queued.to_string(), "{f}");
    assert_eq!(f["champion"], champion.as_str(), "{f}");

    // The anomaly page: acme's confusion matrix and rates as the API computes them.
    let an = &seen["anomaly"];
    assert_eq!(an["tenant"], "acme", "{an}");
    for (cell, name) in [("tp", "TP"), ("fp", "FP"), ("fn", "FN"), ("tn", "TN")] {
        assert_eq!(
            an["cells"][cell],
            format!("{name} {}", confusion[cell]),
            "{an} {confusion}"
        );
    }
    let pct = |v: &Value| kakeya_wasm_tests::console_figures::pct(v.as_f64());
    assert_eq!(an["figures"]["anomaly_fpr"], pct(&confusion["fpr"]), "{an}");
    assert_eq!(an["figures"]["anomaly_tpr"], pct(&confusion["tpr"]), "{an}");
    assert_eq!(
        an["figures"]["anomaly_labels"],
        confusion["n_labels"].to_string()
    );
    assert_eq!(an["roc_plotted"], true, "{an}");

    // The audit page: a verified chain of at least the entries verified before, and the
    // compliance report it downloaded is the API's, control by control.
    let au = &seen["audit"];
    assert!(
        au["figures"]["audit_status"]
            .as_str()
            .unwrap()
            .starts_with("verified"),
        "{au}"
    );
    let entries: u64 = au["figures"]["audit_entries"]
        .as_str()
        .unwrap()
        .replace(',', "")
        .parse()
        .unwrap();
    assert!(
        entries >= chain["entries_checked"].as_u64().unwrap(),
        "{au} {chain}"
    );
    let report: Value =
        serde_json::from_slice(&std::fs::read(au["report_file"].as_str().unwrap()).unwrap())
            .unwrap();
    assert_eq!(report["framework"], "soc2", "{report}");
    let ids: Vec<&Value> = report["controls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| &c["id"])
        .collect();
    assert!(!ids.is_empty());
    assert_eq!(
        au["controls"]
            .as_array()
            .unwrap()
            .iter()
            .collect::<Vec<_>>(),
        ids
    );

    // The label given with the keyboard is in the API, as this reviewer's gold label.
    let target = seen["labelled"]["pcs_id"].as_str().unwrap();
    let labelled = stack
        .admin_get("/v1/reviews?status=labelled")
        .unwrap()
        .json();
    let item = labelled["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["pcs_id"] == target)
        .unwrap_or_else(|| panic!("{target} not labelled: {labelled}"));
    let label = &item["labels"][0];
    assert_eq!(
        (&label["label"], &label["labeller"], &label["source"]),
        (&json!("hallucinated"), &json!(REVIEWER), &json!("gold")),
        "{item}"
    );
    assert_eq!(item["labels"].as_array().unwrap().len(), 1);
    // The second of the queue (j moved down once), newest first.
    assert_eq!(open["items"][1]["pcs_id"], target);

    // The pause button reached the controller.
    let d = stack
        .admin_get(&format!(
            "/v1/operator/canary/status?deployment_id={deployment}"
        ))
        .unwrap()
        .json();
    assert!(d["status"] == "paused" || d["requested"] == "pause", "{d}");
}
