//! The buyer dashboard (`observability/grafana/buyer_dashboard_v3.json`) and the alert rules
//! (`observability/prometheus/alerts.yml`) against a live stack with traffic.
//!
//! The stack (real Envoy, real control plane) runs a default ensemble policy with RAG
//! grounding, an A/B experiment (a second model for half the traffic), a price book and a
//! budget whose soft cap is reached. Signed submissions, grounded and unsupported, go through
//! Envoy; one forged one is refused; every decision is labelled through the review API.
//!
//! 1. **Lint**: every panel query and alert expression is parsed with a real PromQL parser
//!    (`promql-parser`) and checked against the `# TYPE` lines scraped from the control plane's
//!    `/metrics` and Envoy's `/stats/prometheus`: every metric name exported, `rate()`,
//!    `irate()` and `increase()` only over counters (or histogram series),
//!    `histogram_quantile()` only over a histogram's `_bucket`.
//! 2. **Real Prometheus** (Debian's `prometheus` 2.42 and `promtool`, `KAKEYA_PROMETHEUS_BIN`
//!    or the PATH; `cargo xtask test` installs it): `promtool check rules`, then a Prometheus
//!    scraping both endpoints every second with the rules loaded; every panel query, and every
//!    selector of every alert, must return data, and every rule must evaluate without error.
//!    The test skips this half, saying so, when no Prometheus is installed.
//!
//! [`PENDING`] is the whole allow-list: series whose source cannot have data in this stack.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kakeya_core::ensemble_policy::{EnsemblePolicy, Stack as Stacking};
use kakeya_wasm_tests::ensemble::{
    microvote_model_dir, strategy, MicrovoteServer, MICROVOTE_CLUSTER,
};
use kakeya_wasm_tests::fixtures::{
    grounded_evidence, signed_pcs_with_evidence, unsupported_evidence, KEY,
};
use kakeya_wasm_tests::scored::{multi_tenant_options, register_coverage_model, submit_scored};
use kakeya_wasm_tests::stack::{free_addr, post, Stack};
use promql_parser::parser::{self, Expr, VectorSelector};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const DASHBOARD: &str = include_str!("../../observability/grafana/buyer_dashboard_v3.json");
const ALERTS: &str = include_str!("../../observability/prometheus/alerts.yml");

/// A source that cannot produce data in this stack: selectors of a metric named `prefix…`
/// (with label `label` = value, if given).
struct Pending {
    prefix: &'static str,
    label: Option<(&'static str, &'static str)>,
    why: &'static str,
    /// Not pending when the real micro-vote runs (`KAKEYA_MICROVOTE_MODEL_DIR` set).
    unless_microvote: bool,
}

/// Series whose source cannot produce data in this stack. A selector that matches may be
/// missing from the scrape and empty in Prometheus; nothing else may.
const PENDING: [Pending; 4] = [
    Pending {
        prefix: "kakeya_anomaly_",
        label: None,
        unless_microvote: false,
        why: "the anomaly detector's series: registered by the anomaly work, counted once inline \
         scoring lands",
    },
    Pending {
        prefix: "envoy_cluster_upstream_rq_time",
        label: Some(("envoy_cluster_name", "kakeya_microvote")),
        unless_microvote: true,
        why: "micro-vote callouts: KAKEYA_MICROVOTE_MODEL_DIR is unset, so this stack runs no \
         micro-vote (cargo xtask test sets it)",
    },
    Pending {
        prefix: "kakeya_cost_reconciliation_drift_pct",
        label: None,
        unless_microvote: false,
        why: "set by a billing reconciliation (e2e_cost runs one)",
    },
    Pending {
        prefix: "kakeya_cost_forecast_mape",
        label: None,
        unless_microvote: false,
        why: "set by a cost forecast's backtest, which needs weeks of daily history",
    },
];

/// The dashboard's template variable as the lint and Prometheus evaluate it (its default).
const WINDOW: &str = "24h";

const SUBMISSIONS: usize = 40;
const TENANTS: usize = 16;

fn pending(vs: &VectorSelector) -> Option<&'static str> {
    let name = vs.name.as_deref().unwrap_or_default();
    let microvote = microvote_model_dir().is_some();
    PENDING.iter().find_map(|p| {
        if p.unless_microvote && microvote {
            return None;
        }
        let label_ok = p.label.is_none_or(|(l, v)| {
            vs.matchers
                .matchers
                .iter()
                .any(|m| m.name == l && m.value == v)
        });
        (name.starts_with(p.prefix) && label_ok).then_some(p.why)
    })
}

/// Every (title, PromQL) of the dashboard, with the template variable substituted.
fn panel_queries() -> Vec<(String, String)> {
    let d: Value = serde_json::from_str(DASHBOARD).unwrap();
    let panels = d["panels"].as_array().unwrap();
    assert_eq!(panels.len(), 18, "the seed's 18 panels");
    let mut out = Vec::new();
    for p in panels {
        let title = p["title"].as_str().unwrap();
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title}: no query");
        for t in targets {
            let expr = t["expr"].as_str().unwrap().replace("$window", WINDOW);
            out.push((title.to_string(), expr));
        }
    }
    out
}

/// Every (alert name, expression) of the rules file.
fn alert_exprs() -> Vec<(String, String)> {
    let y: serde_norway::Value = serde_norway::from_str(ALERTS).unwrap();
    let mut out = Vec::new();
    for g in y["groups"].as_sequence().unwrap() {
        for r in g["rules"].as_sequence().unwrap() {
            let name = r["alert"].as_str().unwrap().to_string();
            out.push((name, r["expr"].as_str().unwrap().trim().to_string()));
        }
    }
    assert!(out.len() >= 10, "{out:?}");
    out
}

/// What the lint looks at in one parsed expression: its selectors, the selectors under each
/// `rate`-like call and under each `histogram_quantile`.
#[derive(Default)]
struct Uses {
    selectors: Vec<VectorSelector>,
    rated: Vec<(String, VectorSelector)>,
    quantiled: Vec<VectorSelector>,
}

fn walk(e: &Expr, u: &mut Uses) {
    match e {
        Expr::Aggregate(a) => {
            walk(&a.expr, u);
            if let Some(p) = &a.param {
                walk(p, u);
            }
        }
        Expr::Unary(x) => walk(&x.expr, u),
        Expr::Binary(b) => {
            walk(&b.lhs, u);
            walk(&b.rhs, u);
        }
        Expr::Paren(p) => walk(&p.expr, u),
        Expr::Subquery(s) => walk(&s.expr, u),
        Expr::VectorSelector(vs) => u.selectors.push(vs.clone()),
        Expr::MatrixSelector(m) => u.selectors.push(m.vs.clone()),
        Expr::Call(c) => {
            let mut inner = Uses::default();
            for a in &c.args.args {
                walk(a, &mut inner);
            }
            match c.func.name {
                "rate" | "irate" | "increase" => {
                    for vs in &inner.selectors {
                        u.rated.push((c.func.name.to_string(), vs.clone()));
                    }
                }
                "histogram_quantile" => u.quantiled.extend(inner.selectors.iter().cloned()),
                _ => {}
            }
            u.selectors.extend(inner.selectors);
            u.rated.extend(inner.rated);
            u.quantiled.extend(inner.quantiled);
        }
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
    }
}

/// `# TYPE name type` of a Prometheus text exposition.
fn types(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.strip_prefix("# TYPE ")?.split_whitespace();
            Some((w.next()?.to_string(), w.next()?.to_string()))
        })
        .collect()
}

/// The exported family and type of a series name (`x_bucket` of histogram `x` → (`x`, histogram)).
fn family<'a>(types: &'a BTreeMap<String, String>, name: &str) -> Option<(String, &'a str)> {
    if let Some(t) = types.get(name) {
        return Some((name.to_string(), t.as_str()));
    }
    ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
        let base = name.strip_suffix(suffix)?;
        let t = types.get(base)?;
        (t == "histogram" || (t == "summary" && *suffix != "_bucket"))
            .then(|| (base.to_string(), t.as_str()))
    })
}

/// Lint problems of one expression against the exported types.
fn lint(what: &str, expr: &str, types: &BTreeMap<String, String>) -> Vec<String> {
    let e = match parser::parse(expr) {
        Ok(e) => e,
        Err(err) => return vec![format!("{what}: does not parse: {err}: {expr}")],
    };
    let mut u = Uses::default();
    walk(&e, &mut u);
    let mut bad = Vec::new();
    for vs in &u.selectors {
        let Some(name) = vs.name.as_deref() else {
            bad.push(format!("{what}: a selector without a metric name: {expr}"));
            continue;
        };
        if family(types, name).is_none() && pending(vs).is_none() {
            bad.push(format!("{what}: {name} is not exported"));
        }
    }
    for (f, vs) in &u.rated {
        let name = vs.name.as_deref().unwrap_or_default();
        if let Some((fam, t)) = family(types, name) {
            let ok = t == "counter" || (fam != name && (t == "histogram" || t == "summary"));
            if !ok {
                bad.push(format!("{what}: {f}() over {name}, a {t}"));
            }
        }
    }
    for vs in &u.quantiled {
        let name = vs.name.as_deref().unwrap_or_default();
        match family(types, name) {
            Some((_, "histogram")) if name.ends_with("_bucket") => {}
            Some((_, t)) => bad.push(format!("{what}: histogram_quantile() over {name}, a {t}")),
            None => {}
        }
    }
    bad
}

fn selectors(expr: &str) -> Vec<VectorSelector> {
    let mut u = Uses::default();
    walk(&parser::parse(expr).unwrap(), &mut u);
    u.selectors
}

fn poll<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// RAG grounding, and the real micro-vote when it runs (a generous deadline: a cache miss takes
/// hundreds of milliseconds on a shared 2-core machine, see e2e_microvote).
fn policy(microvote: bool) -> EnsemblePolicy {
    let mut names = vec!["pcs_recompute", "hrs", "rag_grounding"];
    if microvote {
        names.push("micro_vote");
    }
    EnsemblePolicy {
        policy_id: "dashboard-e2e".into(),
        n: 2,
        strategies: names
            .into_iter()
            .map(|n| {
                let deadline = (n == "micro_vote").then_some(4_000);
                (n.to_string(), strategy(deadline))
            })
            .collect(),
        min_confidence: 0.5,
        // Above 1: never reject (422), so every answer is a 200 or a 202.
        reject_confidence: 1.5,
        fail_open: true,
        stack: Stacking::default(),
        sources: None,
    }
}

fn day(offset: i64) -> String {
    use kakeya_control_plane::cost::prices::{day_of_ms, format_day};
    format_day(day_of_ms(kakeya_control_plane::now_ms()) + offset)
}

fn put(stack: &Stack, path: &str, body: &Value) -> u16 {
    match ureq::put(&stack.admin_url(path))
        .set("authorization", &format!("Bearer {}", stack.admin_token))
        .set("content-type", "application/json")
        .send_string(&body.to_string())
    {
        Ok(r) => r.status(),
        Err(ureq::Error::Status(s, r)) => panic!("PUT {path}: {s} {}", r.into_string().unwrap()),
        Err(e) => panic!("PUT {path}: {e}"),
    }
}

fn control_plane_metrics(stack: &Stack) -> String {
    let a = stack.admin_get("/metrics").unwrap();
    assert_eq!(a.status, 200, "{}", a.body);
    a.body
}

fn envoy_metrics(stack: &Stack) -> String {
    ureq::get(&stack.envoy_admin_url("/stats/prometheus"))
        .call()
        .unwrap()
        .into_string()
        .unwrap()
}

/// The stack with traffic; returns it with the containment the clients saw: of the
/// unsupported (labelled hallucinated) submissions, the share not answered 200.
fn stack_with_traffic() -> (Stack, Option<MicrovoteServer>, f64) {
    // A/B arms are drawn per tenant: several tenants, so that both arms serve.
    let tenants: Vec<String> = (0..TENANTS).map(|i| format!("t{i}")).collect();
    let mut opts = multi_tenant_options(&tenants, 200);
    let mv = microvote_model_dir().map(|dir| {
        let kakeya = kakeya_wasm_tests::stack::Artefacts::from_env()
            .unwrap()
            .kakeya;
        MicrovoteServer::start(&kakeya, &dir).unwrap()
    });
    if let Some(mv) = &mv {
        opts.extra_clusters = vec![(MICROVOTE_CLUSTER.to_string(), mv.addr)];
    }
    opts.env.push((
        "KAKEYA_ENSEMBLE_DEFAULT".into(),
        serde_json::to_string(&policy(mv.is_some())).unwrap(),
    ));
    let stack = Stack::start(opts).unwrap();
    let ok = |a: kakeya_wasm_tests::stack::Answer, want: u16, what: &str| {
        assert_eq!(a.status, want, "{what}: {}", a.body);
    };
    ok(
        stack
            .admin_post(
                "/v1/cost/prices",
                &json!({"effective_from": day(-1), "per_request": 0.0002,
                        "per_cpu_second": 0.05, "per_gib_stored": 40.0, "per_gib_transferred": 90.0}),
            )
            .unwrap(),
        201,
        "price book",
    );
    // Soft cap 0 with action alert: every submission of the month is served under `alert`.
    put(
        &stack,
        "/v1/cost/budgets",
        &json!({"tenant": tenants[0], "soft_cap": 0.0, "hard_cap": 1000.0,
                "soft_action": "alert", "hard_action": "deny"}),
    );
    ok(
        stack
            .admin_post("/v1/cost/budgets/recompute", &json!({}))
            .unwrap(),
        200,
        "budget recompute",
    );
    // The A/B experiment: a coverage-only model scores half the submissions.
    let control = stack.current_bundle().unwrap().champion.version();
    let treatment = register_coverage_model(&stack).unwrap();
    // Through the API: the serving process publishes the bundle with [ensemble.default].
    let a = stack
        .admin_post(
            "/v1/hrs/ab/start",
            &json!({"name": "dashboard", "control": control, "treatment": treatment,
                    "traffic_split": 0.5, "duration": "1h"}),
        )
        .unwrap();
    assert!(a.status == 200 || a.status == 201, "{}", a.body);
    let started = a.json();
    let first = started["bundle_version"].as_u64().unwrap();
    let mut warm = 0;
    poll("the experiment's bundle in the gate", 30, || {
        warm += 1;
        let (seen, _) = submit_scored(&stack, &tenants[0], &format!("warm-{warm}"), true).unwrap();
        (seen.bundle_version >= first).then_some(())
    });
    // Both Envoy workers on the experiment's bundle.
    std::thread::sleep(Duration::from_millis(1000));

    let mut arms = BTreeSet::new();
    let (mut hallucinated, mut contained) = (0u32, 0u32);
    for i in 0..SUBMISSIONS {
        let grounded = i % 2 == 0;
        let shard = format!("dash-{i}");
        // Two in a row per tenant, one grounded and one not.
        let tenant = &tenants[(i / 2) % TENANTS];
        let (seen, _) = submit_scored(&stack, tenant, &shard, grounded).unwrap();
        arms.insert(seen.arm.clone());
        let ev = if grounded {
            grounded_evidence()
        } else {
            unsupported_evidence()
        };
        let body = signed_pcs_with_evidence(&shard, KEY, &ev, None).to_string();
        let pcs_id = kakeya_core::parse(body.as_bytes()).unwrap().pcs_id;
        let label = if grounded {
            "faithful"
        } else {
            hallucinated += 1;
            contained += u32::from(seen.status != 200);
            "hallucinated"
        };
        ok(
            stack
                .admin_post(
                    &format!("/v1/reviews/{tenant}/{pcs_id}"),
                    &json!({"label": label, "reviewer": "dashboard-e2e"}),
                )
                .unwrap(),
            201,
            &pcs_id,
        );
    }
    assert!(
        arms.contains("champion") && arms.contains("challenger"),
        "{arms:?}"
    );
    // A forged submission: 401 from the filter, counted in kakeya_gate_signature_errors_total.
    let mut forged: Value = serde_json::from_str(
        &signed_pcs_with_evidence("forged", KEY, &grounded_evidence(), None).to_string(),
    )
    .unwrap();
    forged["budget"] = json!(0.3);
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(20))
        .build();
    let a = post(
        &agent,
        &stack.url(kakeya_core::SUBMIT_PATH),
        &[
            ("content-type", "application/json"),
            ("x-tenant-id", &tenants[0]),
        ],
        forged.to_string().as_bytes(),
    )
    .unwrap();
    assert_eq!(a.status, 401, "{}", a.body);
    (stack, mv, f64::from(contained) / f64::from(hallucinated))
}

fn prometheus_bin() -> Option<(PathBuf, PathBuf)> {
    let on_path = |name: &str| {
        std::env::var_os("PATH").and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        })
    };
    // Empty when `cargo xtask test` could not install it.
    let prom = std::env::var_os("KAKEYA_PROMETHEUS_BIN")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| on_path("prometheus"))
        .filter(|p| p.is_file())?;
    let tool = prom
        .parent()
        .map(|d| d.join("promtool"))
        .filter(|p| p.is_file())
        .or_else(|| on_path("promtool"))?;
    Some((prom, tool))
}

struct Prometheus {
    child: Child,
    addr: std::net::SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    fn start(bin: &Path, rules: &Path, stack: &Stack) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("admin.token");
        std::fs::write(&token, &stack.admin_token).unwrap();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files: [{rules:?}]\n\
             scrape_configs:\n\
             - job_name: kakeya-control-plane\n  metrics_path: /metrics\n  \
               authorization: {{credentials_file: {token:?}}}\n  \
               static_configs: [{{targets: [\"{admin}\"]}}]\n\
             - job_name: envoy\n  metrics_path: /stats/prometheus\n  \
               static_configs: [{{targets: [\"{envoy}\"]}}]\n",
            rules = rules.display().to_string(),
            token = token.display().to_string(),
            admin = stack.admin,
            envoy = stack.envoy_admin,
        );
        let file = dir.path().join("prometheus.yml");
        std::fs::write(&file, config).unwrap();
        let addr = free_addr().unwrap();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new(bin)
            .arg(format!("--config.file={}", file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Prometheus {
            child,
            addr,
            _dir: dir,
        }
    }

    fn api(&self, path: &str, query: Option<&str>) -> Option<Value> {
        let mut req = ureq::get(&format!("http://{}{path}", self.addr));
        if let Some(q) = query {
            req = req.query("query", q);
        }
        let v: Value = serde_json::from_str(&req.call().ok()?.into_string().ok()?).ok()?;
        (v["status"] == "success").then(|| v["data"].clone())
    }

    /// The instant result of `q`, if any series.
    fn query(&self, q: &str) -> Option<Vec<Value>> {
        let d = self.api("/api/v1/query", Some(q))?;
        match d["resultType"].as_str()? {
            "vector" | "matrix" => {
                let r = d["result"].as_array()?.clone();
                (!r.is_empty()).then_some(r)
            }
            "scalar" => Some(vec![d["result"].clone()]),
            _ => None,
        }
    }
}

#[test]
fn every_panel_and_alert_reads_exported_series_with_data() {
    let panels = panel_queries();
    let alerts = alert_exprs();
    // Parse everything first: a query that does not parse fails before any stack starts.
    for (what, q) in panels.iter().chain(&alerts) {
        if let Err(e) = parser::parse(q) {
            panic!("{what}: {q}: {e}");
        }
    }
    let (stack, _microvote, contained) = stack_with_traffic();

    // The KPI gauges are refreshed on a scrape at most every 15 s: until the labels are in.
    let cp = poll("the KPIs over the labelled traffic", 60, || {
        let m = control_plane_metrics(&stack);
        m.lines()
            .any(|l| l.starts_with("kakeya_kpi_hrs_auroc{model_version=\"all\",window=\"24h\"}"))
            .then_some(m)
    });
    let envoy = envoy_metrics(&stack);
    let mut exported = types(&cp);
    for (k, v) in types(&envoy) {
        assert!(
            exported.insert(k.clone(), v).is_none(),
            "{k} exported by both"
        );
    }
    eprintln!("{} metric families exported", exported.len());
    let mut problems = Vec::new();
    for (what, q) in panels.iter().chain(&alerts) {
        problems.extend(lint(what, q, &exported));
    }
    assert!(
        problems.is_empty(),
        "dashboard lint:\n{}",
        problems.join("\n")
    );

    // The lint catches what the seed did wrong (rate over a gauge, a missing name).
    let seeded = lint(
        "seed #11",
        "topk(10, rate(kakeya_cost_budget_utilisation[5m]))",
        &exported,
    );
    assert_eq!(seeded.len(), 1, "{seeded:?}");
    assert!(lint("seed #3", "flk_hrs_model_auc", &exported)[0].contains("not exported"));
    assert!(lint(
        "q",
        "histogram_quantile(0.95, kakeya_kpi_decisions)",
        &exported
    )[0]
    .contains("a gauge"));

    // The console's figures are the dashboard's: /v1/kpis computes what the clients saw.
    let k = stack.admin_get("/v1/kpis?window=24h").unwrap().json();
    eprintln!(
        "GET /v1/kpis?window=24h: {}",
        serde_json::to_string_pretty(&k).unwrap()
    );
    let json_containment = k["containment_rate"].as_f64().unwrap();
    assert!(
        (json_containment - contained).abs() < 1e-12,
        "containment: API {json_containment}, clients {contained}"
    );
    assert_eq!(k["hallucinated"], SUBMISSIONS / 2, "{k}");

    let Some((prom_bin, promtool)) = prometheus_bin() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI needs prometheus and promtool (Debian's `prometheus`)"
        );
        eprintln!(
            "\n*** SKIP the Prometheus half of e2e_dashboard: no prometheus/promtool \
             (KAKEYA_PROMETHEUS_BIN or PATH; `cargo xtask test` installs Debian's \
             `prometheus` as root) ***\n"
        );
        return;
    };
    let rules =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../observability/prometheus/alerts.yml");
    let out = Command::new(&promtool)
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool check rules: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let prom = Prometheus::start(&prom_bin, &rules, &stack);
    poll("both targets up", 60, || {
        let d = prom.api("/api/v1/targets", None)?;
        let up = d["activeTargets"].as_array()?;
        (up.len() == 2 && up.iter().all(|t| t["health"] == "up")).then_some(())
    });
    // Every panel query (and every selector of every alert: the alerts themselves are silent
    // on a healthy stack) returns data, unless its source is PENDING.
    let mut checks: Vec<(String, String)> = panels.clone();
    for (name, expr) in &alerts {
        for vs in selectors(expr) {
            checks.push((format!("{name} selector"), vs.to_string()));
        }
    }
    let mut empty = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    for (what, q) in &checks {
        let allowed = selectors(q).iter().find_map(pending);
        let got = loop {
            if let Some(r) = prom.query(q) {
                break Some(r);
            }
            // An allowed query is asked once; the others until the deadline (rates need two
            // scrapes, the KPIs their refresh).
            if allowed.is_some() || Instant::now() > deadline {
                break None;
            }
            std::thread::sleep(Duration::from_millis(250));
        };
        match (got, allowed) {
            (Some(r), _) => eprintln!("ok   {what}: {q} → {} series", r.len()),
            (None, Some(why)) => eprintln!("skip {what}: {q}: {why}"),
            (None, None) => empty.push(format!("{what}: {q}")),
        }
    }
    assert!(
        empty.is_empty(),
        "no data in Prometheus for:\n{}",
        empty.join("\n")
    );

    // Prometheus's own figure is the API's.
    let r = prom
        .query("kakeya_kpi_containment_rate{window=\"24h\"}")
        .unwrap();
    let v: f64 = r[0]["value"][1].as_str().unwrap().parse().unwrap();
    assert!((v - contained).abs() < 1e-9, "{v} vs {contained}");

    // Every rule loaded and evaluated without error.
    let rules = poll("every rule evaluated", 30, || {
        let d = prom.api("/api/v1/rules", None)?;
        let rules: Vec<Value> = d["groups"]
            .as_array()?
            .iter()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        let evaluated = rules.len() == alerts.len()
            && rules.iter().all(|r| {
                r["lastEvaluation"]
                    .as_str()
                    .is_some_and(|t| !t.starts_with("0001"))
            });
        evaluated.then_some(rules)
    });
    for r in &rules {
        assert_eq!(r["health"], "ok", "{r}");
    }
}
