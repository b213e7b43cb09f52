//! The operator console in headless Chromium, against real Envoy and the real control plane on
//! SQLite: decisions are submitted through the gateway (signed PCS with evidence; a wrongly
//! attributed answer escalates into the review queue, the opted-in tenant's with its evidence), a canary
//! runs, then `wasm-tests/console/console.cjs` (playwright-core driving Debian's chromium)
//! signs in, opens every page with no console error, failed request or HTTP error, labels a
//! decision with the keyboard (j, h) and pauses the canary with its button. This side checks
//! the label, the pause and the overview's figures through the API. Screenshots of every page
//! land in `<target>/console-screenshots/`.
//!
//! Needs `node`, `CHROMIUM` (`KAKEYA_CHROMIUM_BIN`, default `/usr/bin/chromium`) and
//! playwright-core (`KAKEYA_PLAYWRIGHT_DIR`), which `cargo xtask test` installs (and, when it
//! cannot, skips this test with `--skip`, counted as skipped); run by hand without them, it
//! says so and returns.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kakeya_wasm_tests::fixtures::KEY;
use kakeya_wasm_tests::scored::{built, register_coverage_model, send, submit_scored, turing};
use kakeya_wasm_tests::stack::{Stack, StackOptions};
use serde_json::{json, Value};
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

/// Sum of every series of `name` in the Prometheus text.
fn total(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with([' ', '{']))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
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
    for (tenant, i) in [("acme", 0), ("acme", 1), ("beta", 2), ("acme", 3)] {
        let (body, _) = built(&stack, &format!("turing-{i}"), &turing());
        let (status, r) = send(&stack, tenant, &body);
        assert_eq!(status, 202, "{r}");
        let (seen, _) = submit_scored(&stack, tenant, &format!("grounded-{i}"), true).unwrap();
        assert_eq!(seen.status, 200, "{seen:?}");
    }
    let open = stack.admin_get("/v1/reviews?status=open").unwrap().json();
    let queued = open["items"].as_array().unwrap().len();
    assert!(queued >= 4, "{open}");

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
    let metrics = stack.admin_get("/metrics").unwrap().body;

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
        ["overview", "review", "models", "canary", "drift", "cost"]
    );
    for (i, p) in pages.iter().enumerate() {
        let png = shots.join(format!("{:02}-{p}.png", i + 1));
        assert!(std::fs::metadata(&png).unwrap().len() > 10_000, "{png:?}");
    }

    // The overview shows the API's figures.
    let f = &seen["figures"];
    let (accepted, escalated) = (
        total(&metrics, "kakeya_accepted_total"),
        total(&metrics, "kakeya_escalated_total"),
    );
    assert_eq!(f["escalated"], escalated.to_string(), "{f}");
    assert_eq!(f["decisions"], (accepted + escalated).to_string(), "{f}");
    let rate = 100.0 * escalated as f64 / (accepted + escalated) as f64;
    assert_eq!(f["escalation_rate"], format!("{rate:.2} %"), "{f}");
    assert_eq!(f["open_reviews"], queued.to_string(), "{f}");
    assert_eq!(f["champion"], champion.as_str(), "{f}");

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
