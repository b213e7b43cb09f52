//! The API contract against a live control plane ([`crate::server::start`], real sockets, real
//! SQLite): authentication of every admin route, the listener exposure rules, the admin token
//! file, cursor pagination, and the OpenAPI document against what the listeners answer.

use crate::config::Config;
use crate::server::{start, Running};
use crate::testutil::{gate_result, pcs_body};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use utoipa::openapi::path::{HttpMethod, ParameterIn};

pub(crate) fn config(dir: &Path) -> Config {
    Config {
        data_dir: dir.to_path_buf(),
        database_url: format!("sqlite://{}/t.db?mode=rwc", dir.display()),
        wal_dir: dir.join("wal"),
        bundle_signing_seed_file: dir.join("keys/seed"),
        ingest_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        admin_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        ..Config::default()
    }
}

pub(crate) struct Answer {
    pub status: u16,
    pub www_authenticate: Option<String>,
    pub content_type: Option<String>,
    pub body: String,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// One real HTTP request (ureq on a blocking thread).
pub(crate) async fn http(
    method: &'static str,
    url: String,
    headers: Vec<(String, String)>,
    body: String,
) -> Answer {
    tokio::task::spawn_blocking(move || {
        let mut req = ureq::request(method, &url);
        for (k, v) in &headers {
            req = req.set(k, v);
        }
        let r = if body.is_empty() {
            req.call()
        } else {
            req.set("content-type", "application/json")
                .send_string(&body)
        };
        let resp = match r {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{url}: {e}"),
        };
        Answer {
            status: resp.status(),
            www_authenticate: resp.header("www-authenticate").map(str::to_string),
            content_type: resp.header("content-type").map(str::to_string),
            body: resp.into_string().unwrap_or_default(),
        }
    })
    .await
    .unwrap()
}

pub(crate) fn bearer(token: &str) -> Vec<(String, String)> {
    vec![("authorization".into(), format!("Bearer {token}"))]
}

pub(crate) async fn admin(
    r: &Running,
    method: &'static str,
    path: &str,
    token: Option<&str>,
) -> Answer {
    let body = if method == "POST" { "{}" } else { "" };
    http(
        method,
        format!("http://{}{path}", r.admin_addr),
        token.map(bearer).unwrap_or_default(),
        body.into(),
    )
    .await
}

async fn submit(r: &Running, shard: &str, tenant: &str) -> Answer {
    let body = pcs_body(shard);
    let (result, cacheable) = gate_result(&body);
    http(
        "POST",
        format!("http://{}{}", r.ingest_addr, kakeya_core::SUBMIT_PATH),
        vec![
            ("x-kakeya-result".into(), result),
            ("x-kakeya-cacheable".into(), cacheable.to_string()),
            ("x-kakeya-tenant".into(), tenant.into()),
        ],
        body,
    )
    .await
}

pub(crate) fn read_token(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("admin.token"))
        .unwrap()
        .trim()
        .to_string()
}

fn method_name(m: &HttpMethod) -> &'static str {
    match m {
        HttpMethod::Get => "GET",
        HttpMethod::Post => "POST",
        HttpMethod::Put => "PUT",
        HttpMethod::Delete => "DELETE",
        HttpMethod::Options => "OPTIONS",
        HttpMethod::Head => "HEAD",
        HttpMethod::Patch => "PATCH",
        HttpMethod::Trace => "TRACE",
    }
}

/// Every (method, path, operation) of the document.
fn operations(
    doc: &utoipa::openapi::OpenApi,
) -> Vec<(&'static str, String, utoipa::openapi::path::Operation)> {
    let mut out = Vec::new();
    for (path, item) in &doc.paths.paths {
        for (m, op) in [
            (HttpMethod::Get, &item.get),
            (HttpMethod::Post, &item.post),
            (HttpMethod::Put, &item.put),
            (HttpMethod::Delete, &item.delete),
            (HttpMethod::Patch, &item.patch),
        ] {
            if let Some(op) = op {
                out.push((method_name(&m), path.clone(), op.clone()));
            }
        }
    }
    out
}

/// The document lists exactly the routes the listeners serve (the same declarations build
/// both); this pins the set, so a route added without `routes!` shows up here.
#[test]
fn the_document_lists_every_route_with_its_parameters() {
    let doc = super::openapi::document();
    let got: BTreeSet<(String, String)> = operations(&doc)
        .into_iter()
        .map(|(m, p, _)| (m.to_string(), p))
        .collect();
    let want: BTreeSet<(String, String)> = [
        ("POST", kakeya_core::SUBMIT_PATH),
        ("GET", "/health"),
        ("GET", "/ready"),
        ("GET", "/metrics"),
        ("GET", "/v1/openapi.json"),
        ("GET", "/v1/decisions"),
        ("GET", crate::registry::BUNDLE_PATH),
        ("GET", "/v1/models"),
        ("POST", "/v1/models"),
        ("GET", "/v1/models/{version}"),
        ("POST", "/v1/aliases/challenger"),
        ("DELETE", "/v1/aliases/challenger"),
        ("POST", "/v1/aliases/canary"),
        ("DELETE", "/v1/aliases/canary"),
        ("GET", "/v1/aliases"),
        ("POST", "/v1/aliases/{alias}"),
        ("GET", "/v1/aliases/history"),
        ("POST", "/v1/hrs/register"),
        ("POST", "/v1/hrs/activate"),
        ("GET", "/v1/operator/leader"),
        ("GET", "/v1/reviews"),
        ("POST", "/v1/reviews/{tenant}/{pcs_id}"),
        ("POST", "/v1/feedback"),
        ("POST", "/v1/hrs/train"),
        ("POST", "/v1/anomaly/train"),
        ("GET", "/v1/anomaly/jobs/{job_id}"),
        ("POST", "/v1/anomaly/detect"),
        ("GET", "/v1/hrs/jobs"),
        ("GET", "/v1/hrs/jobs/{job_id}"),
        ("POST", "/v1/hrs/ab/start"),
        ("GET", "/v1/hrs/ab"),
        ("GET", "/v1/hrs/ab/{experiment_id}"),
        ("POST", "/v1/hrs/ab/{experiment_id}/stop"),
        ("GET", "/v1/hrs/scheduler"),
        ("GET", "/v1/hrs/scheduler/runs"),
        ("POST", "/v1/hrs/scheduler/run"),
        ("POST", "/v1/hrs/drift/check"),
        ("GET", "/v1/hrs/drift/alerts"),
        // cost
        ("GET", "/v1/cost/prices"),
        ("POST", "/v1/cost/prices"),
        ("GET", "/v1/cost/summary"),
        ("POST", "/v1/cost/import"),
        ("GET", "/v1/cost/import/{job_id}"),
        ("POST", "/v1/cost/reconcile"),
        ("GET", "/v1/cost/reconcile/latest"),
        ("GET", "/v1/cost/reconcile/history"),
        ("POST", "/v1/cost/forecast"),
        ("GET", "/v1/cost/recommendations"),
        ("POST", "/v1/cost/recommendations/apply"),
        ("GET", "/v1/cost/budgets"),
        ("PUT", "/v1/cost/budgets"),
        ("DELETE", "/v1/cost/budgets/{tenant}"),
        ("POST", "/v1/cost/budgets/recompute"),
        // adaptive ensemble policies (ensemble/)
        ("POST", "/v1/ensemble/tune"),
        ("GET", "/v1/ensemble/policy"),
        ("POST", "/v1/ensemble/feedback"),
        ("GET", "/v1/ensemble/history"),
        ("GET", "/v1/ensemble/disagreements"),
        // canary controller and policy simulator
        ("POST", "/v1/operator/canary/start"),
        ("GET", "/v1/operator/canary/status"),
        ("POST", "/v1/operator/canary/{id}/pause"),
        ("POST", "/v1/operator/canary/{id}/resume"),
        ("POST", "/v1/operator/canary/{id}/abort"),
        ("GET", "/v1/operator/canary/{id}/events"),
        ("POST", "/v1/operator/canary/upstream/{name}/clear"),
        ("POST", "/v1/operator/policy/simulate"),
        ("GET", "/v1/operator/policy/simulation"),
        ("POST", "/v1/operator/policy/apply"),
        // tasks (issue 14): task models of a registered model.
        ("GET", "/v1/models/{version}/tasks"),
        ("PUT", "/v1/models/{version}/tasks/{task}"),
        // anomaly (issue 9): feedback, thresholds, clusters, active learning.
        ("POST", "/v1/anomaly/feedback"),
        ("GET", "/v1/anomaly/confusion"),
        ("POST", "/v1/anomaly/optimize-threshold"),
        ("GET", "/v1/anomaly/thresholds"),
        ("GET", "/v1/anomaly/clusters"),
        ("POST", "/v1/anomaly/clusters/rebuild"),
        ("POST", "/v1/anomaly/active-learning"),
        ("GET", "/v1/anomaly/roc"),
        // anomaly (issue 9): inline scoring, the active model and the per-tenant modes.
        ("POST", "/v1/anomaly/activate"),
        ("GET", "/v1/anomaly/modes"),
        ("PUT", "/v1/anomaly/modes"),
        // buyer KPIs (kpi/)
        ("GET", "/v1/kpis"),
        // the operator console's static pages (console/)
        ("GET", "/console/"),
        ("GET", "/console/{file}"),
        ("GET", "/console/pages/{file}"),
        // audit: the WORM audit log and compliance reports.
        ("GET", "/v1/audit/verify"),
        ("GET", "/v1/audit/entries"),
        ("GET", "/v1/audit/checkpoints/latest"),
        ("GET", "/v1/compliance/report"),
    ]
    .into_iter()
    .map(|(m, p)| (m.to_string(), p.to_string()))
    .collect();
    assert_eq!(got, want);
    // /v1/decisions: optional query parameters, not (required) path parameters, as served.
    let json: serde_json::Value = serde_json::from_str(&doc.to_json().unwrap()).unwrap();
    let params = json["paths"]["/v1/decisions"]["get"]["parameters"]
        .as_array()
        .unwrap();
    let names: Vec<&str> = params.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["tenant", "limit", "cursor"]);
    for p in params {
        assert_eq!(p["in"], "query", "{p}");
        assert_eq!(p["required"], false, "{p}");
    }
    let limit = &params[1]["schema"];
    assert_eq!(
        (&limit["minimum"], &limit["maximum"]),
        (&1.into(), &1000.into())
    );
    // Every schema reference resolves (a query enum once pointed at a schema nobody
    // registered).
    fn refs<'a>(v: &'a serde_json::Value, out: &mut Vec<&'a str>) {
        match v {
            serde_json::Value::Object(m) => {
                if let Some(r) = m.get("$ref").and_then(|r| r.as_str()) {
                    out.push(r);
                }
                m.values().for_each(|v| refs(v, out));
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(&json, &mut all);
    assert!(!all.is_empty());
    for r in all {
        let name = r.strip_prefix("#/components/schemas/").unwrap_or(r);
        assert!(
            json["components"]["schemas"].get(name).is_some(),
            "unresolved {r}"
        );
    }
    let reviews = json["paths"]["/v1/reviews"]["get"]["parameters"]
        .as_array()
        .unwrap();
    let names: Vec<&str> = reviews
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["status", "queued_for", "tenant_id", "limit", "cursor"]
    );
    // The reasons for queueing, as the items spell them.
    assert_eq!(
        reviews[1]["schema"]["enum"],
        serde_json::json!([
            "escalated",
            "audit_sample",
            "anomaly_uncertain",
            "anomaly_audit"
        ]),
        "{}",
        reviews[1]
    );
    let ops = operations(&doc);
    // Path parameters are declared for templated paths only, and are required.
    for (m, path, op) in &ops {
        let declared: BTreeSet<&str> = op
            .parameters
            .iter()
            .flatten()
            .filter(|p| p.parameter_in == ParameterIn::Path)
            .map(|p| p.name.as_str())
            .collect();
        let templated: BTreeSet<&str> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
            .collect();
        assert_eq!(declared, templated, "{m} {path}");
    }
}

/// Each documented admin operation, called for real: without the token a protected one is a
/// 401 JSON answer and a public one is not; with it, the status is one the document lists.
#[tokio::test]
async fn every_admin_operation_answers_as_documented() {
    let tmp = tempfile::tempdir().unwrap();
    let r = start(&config(tmp.path())).await.unwrap();
    let token = read_token(tmp.path());
    let doc = super::openapi::document();
    let public: BTreeSet<&str> = [
        "/health",
        "/ready",
        crate::registry::BUNDLE_PATH,
        "/console/",
        "/console/{file}",
        "/console/pages/{file}",
    ]
    .into();
    for (m, path, op) in operations(&doc) {
        let is_ingest = op.tags.iter().flatten().any(|t| t == "ingest");
        if is_ingest {
            continue;
        }
        let secured = op.security.as_ref().is_some_and(|s| !s.is_empty());
        assert_eq!(secured, !public.contains(path.as_str()), "{m} {path}");
        let concrete = path
            .replace("{version}", "lr-000000000000")
            .replace("{alias}", "champion")
            .replace("{tenant}", "acme")
            .replace("{pcs_id}", "no-such-decision")
            .replace("{job_id}", "1")
            .replace("{experiment_id}", "ab-none-0")
            .replace("{file}", "app.js");
        let documented: BTreeSet<String> = op.responses.responses.keys().cloned().collect();
        for token in [None, Some("wrong"), Some(token.as_str())] {
            let a = admin(&r, m, &concrete, token).await;
            let authorised = token.is_some_and(|t| t != "wrong");
            if secured && !authorised {
                assert_eq!(a.status, 401, "{m} {path}: {}", a.body);
                assert_eq!(a.json()["code"], "unauthorized", "{m} {path}");
                assert_eq!(a.www_authenticate.as_deref(), Some("Bearer"));
            } else {
                assert!(
                    documented.contains(&a.status.to_string()),
                    "{m} {path} answered {} (documented: {documented:?}): {}",
                    a.status,
                    a.body
                );
            }
        }
    }
    // A "Bearer" prefix is required; a token in another scheme does not count.
    let a = http(
        "GET",
        format!("http://{}/v1/models", r.admin_addr),
        vec![("authorization".into(), format!("Basic {token}"))],
        String::new(),
    )
    .await;
    assert_eq!(a.status, 401);
    r.shutdown().await.unwrap();
}

#[tokio::test]
async fn decisions_paginate_with_a_cursor_and_refuse_oversized_limits() {
    let tmp = tempfile::tempdir().unwrap();
    let r = start(&config(tmp.path())).await.unwrap();
    let token = read_token(tmp.path());
    for i in 0..5 {
        let a = submit(&r, &format!("page{i}"), "acme").await;
        assert!(a.status == 200 || a.status == 202, "{}", a.body);
    }
    let a = submit(&r, "other", "globex").await;
    assert!(a.status == 200 || a.status == 202, "{}", a.body);
    // Follow next_cursor: every acme row once, newest (highest id) first.
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut path = "/v1/decisions?tenant=acme&limit=2".to_string();
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let a = admin(&r, "GET", &path, Some(&token)).await;
        assert_eq!(a.status, 200, "{}", a.body);
        let page = a.json();
        for row in page["decisions"].as_array().unwrap() {
            assert_eq!(row["tenant"], "acme");
            ids.push(row["id"].as_i64().unwrap());
        }
        pages += 1;
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => {
                assert!(page["next_cursor"].is_null());
                break;
            }
        }
    }
    assert_eq!((ids.len(), pages), (5, 3), "{ids:?}");
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "{ids:?}");
    // Default limit, every tenant, a single page.
    let a = admin(&r, "GET", "/v1/decisions", Some(&token)).await;
    assert_eq!(a.json()["decisions"].as_array().unwrap().len(), 6);
    assert!(a.json()["next_cursor"].is_null());
    // Out of range or malformed: a 400 JSON answer, never a silently cut page.
    for q in [
        "limit=1001",
        "limit=100000",
        "limit=0",
        "limit=-1",
        "limit=abc",
        "cursor=nope",
        "cursor=YmVmb3JlOi0x",
    ] {
        let a = admin(&r, "GET", &format!("/v1/decisions?{q}"), Some(&token)).await;
        assert_eq!(a.status, 400, "{q}: {}", a.body);
        assert_eq!(a.json()["code"], "bad_request", "{q}");
    }
    let a = admin(&r, "GET", "/v1/decisions?limit=1000", Some(&token)).await;
    assert_eq!(a.status, 200);
    r.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_admin_token_file_is_generated_0600_at_first_start_and_reused() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("admin.token");
    assert!(!path.exists());
    let r = start(&config(tmp.path())).await.unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let first = read_token(tmp.path());
    assert!(first.len() >= 43, "at least 256 bits");
    assert_eq!(admin(&r, "GET", "/v1/models", None).await.status, 401);
    assert_eq!(
        admin(&r, "GET", "/v1/models", Some(&first)).await.status,
        200
    );
    r.shutdown().await.unwrap();
    // Restart: the same file, the same token.
    let r = start(&config(tmp.path())).await.unwrap();
    assert_eq!(read_token(tmp.path()), first);
    assert_eq!(
        admin(&r, "GET", "/v1/models", Some(&first)).await.status,
        200
    );
    r.shutdown().await.unwrap();
    // KAKEYA_ADMIN_TOKEN wins over the file.
    let mut cfg = config(tmp.path());
    cfg.admin_token = Some("operator-chosen-token".into());
    let r = start(&cfg).await.unwrap();
    assert_eq!(
        admin(&r, "GET", "/v1/models", Some(&first)).await.status,
        401
    );
    let a = admin(&r, "GET", "/v1/models", Some("operator-chosen-token")).await;
    assert_eq!(a.status, 200);
    r.shutdown().await.unwrap();
}

#[tokio::test]
async fn non_loopback_listeners_need_credentials() {
    let tmp = tempfile::tempdir().unwrap();
    let any = SocketAddr::from(([0, 0, 0, 0], 0));
    // Admin on 0.0.0.0 without a configured token: refused, and nothing is generated.
    let mut cfg = config(tmp.path());
    cfg.admin_addr = any;
    let e = start(&cfg).await.err().expect("refused").to_string();
    assert!(
        e.contains("KAKEYA_ADMIN_TOKEN") && e.contains("0.0.0.0"),
        "{e}"
    );
    assert!(!tmp.path().join("admin.token").exists());
    // Ingest on 0.0.0.0 without the Envoy shared secret: refused.
    let mut cfg = config(tmp.path());
    cfg.ingest_addr = any;
    let e = start(&cfg).await.err().expect("refused").to_string();
    assert!(e.contains("KAKEYA_INGEST_SECRET"), "{e}");
    // With both configured they start, and ingest requires the secret.
    let mut cfg = config(tmp.path());
    cfg.admin_addr = any;
    cfg.ingest_addr = any;
    cfg.admin_token = Some("t0k3n-for-the-admin-api".into());
    cfg.ingest_secret = Some("envoy-shared-secret".into());
    let r = start(&cfg).await.unwrap();
    let port = r.ingest_addr.port();
    let url = format!("http://127.0.0.1:{port}{}", kakeya_core::SUBMIT_PATH);
    let body = pcs_body("secret");
    let (result, _) = gate_result(&body);
    let gate = vec![("x-kakeya-result".to_string(), result)];
    for secret in [None, Some("wrong")] {
        let mut h = gate.clone();
        if let Some(s) = secret {
            h.push(("x-kakeya-ingest-secret".into(), s.into()));
        }
        let a = http("POST", url.clone(), h, body.clone()).await;
        assert_eq!(a.status, 403, "{}", a.body);
        assert_eq!(a.json()["code"], "forbidden");
    }
    assert_eq!(
        crate::store::decision_log::count(&r.db.pool).await.unwrap(),
        0
    );
    let mut h = gate.clone();
    h.push((
        "x-kakeya-ingest-secret".into(),
        "envoy-shared-secret".into(),
    ));
    let a = http("POST", url, h, body).await;
    assert!(a.status == 200 || a.status == 202, "{}", a.body);
    assert_eq!(
        crate::store::decision_log::count(&r.db.pool).await.unwrap(),
        1
    );
    let admin_port = r.admin_addr.port();
    let a = http(
        "GET",
        format!("http://127.0.0.1:{admin_port}/v1/models"),
        bearer("t0k3n-for-the-admin-api"),
        String::new(),
    )
    .await;
    assert_eq!(a.status, 200);
    r.shutdown().await.unwrap();
}

async fn post_json(r: &Running, path: &str, token: &str, body: serde_json::Value) -> Answer {
    http(
        "POST",
        format!("http://{}{path}", r.admin_addr),
        bearer(token),
        body.to_string(),
    )
    .await
}

/// Polls a job until it has finished.
async fn finished_job(r: &Running, token: &str, id: i64) -> serde_json::Value {
    for _ in 0..600 {
        let a = admin(r, "GET", &format!("/v1/hrs/jobs/{id}"), Some(token)).await;
        assert_eq!(a.status, 200, "{}", a.body);
        let job = a.json();
        if job["status"] == "succeeded" || job["status"] == "failed" {
            return job;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    panic!("job {id} did not finish in 2 minutes");
}

/// The training loop's API on a live control plane: a job left running by a crashed process
/// is failed at start; bad requests are 400s that queue nothing; a job on too few labels fails
/// with its counts; a job on 300 labelled HaluEval decisions succeeds, registers a signed
/// version with a computed card and promotes nothing; a `gbdt` job on the same decisions
/// registers a `gbdt-…` version whose card lists its boosting parameters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_training_job_runs_end_to_end_through_the_api() {
    use crate::learn::jobs::{self, JobParams};
    use crate::learn::tests::{seed_halueval, MINUTE, T0};
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path());
    // A previous process died while running job 1: its heartbeat stopped 10 minutes ago.
    let db = crate::store::Db::connect(&cfg.database_url, None)
        .await
        .unwrap();
    let params = JobParams::new(T0, T0 + MINUTE, crate::learn::ModelKind::Lr, 1);
    let crashed = jobs::create_running(&db, &params, crate::now_ms() - 600_000)
        .await
        .unwrap();
    db.pool.close().await;
    let r = start(&cfg).await.unwrap();
    let token = read_token(tmp.path());
    let job = finished_job(&r, &token, crashed).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["error"]["code"], "interrupted", "{job}");
    let n = seed_halueval(&r.db, "default", 300).await;
    // Bad requests: 400 JSON, nothing queued.
    for body in [
        serde_json::json!({"start_time": "yesterday", "end_time": "2026-01-02T00:00:00Z"}),
        serde_json::json!({"start_time": "2026-01-02T00:00:00Z", "end_time": "2026-01-01T00:00:00Z"}),
        serde_json::json!({"start_time": "2026-01-01T00:00:00Z", "end_time": "2026-01-01T00:00:00Z"}),
        serde_json::json!({"start_time": "2026-01-01T00:00:00Z", "end_time": "2026-01-02T00:00:00Z", "model_kind": "svm"}),
        serde_json::json!({"start_time": "2026-01-01T00:00:00Z", "end_time": "2026-01-02T00:00:00Z", "seed": -1}),
        serde_json::json!({"start_time": "2026-01-01T00:00:00Z", "end_time": "2026-01-02T00:00:00Z", "min_labels": 1}),
        serde_json::json!({"end_time": "2026-01-02T00:00:00Z"}),
    ] {
        let a = post_json(&r, "/v1/hrs/train", &token, body.clone()).await;
        assert_eq!(a.status, 400, "{body}: {}", a.body);
        assert_eq!(a.json()["code"], "bad_request", "{body}");
    }
    assert_eq!(jobs::page(&r.db, None, None, 10).await.unwrap().len(), 1);
    for (path, status) in [
        ("/v1/hrs/jobs/abc", 400),
        ("/v1/hrs/jobs/999999", 404),
        ("/v1/hrs/jobs?limit=0", 400),
        ("/v1/hrs/jobs?status=done", 400),
    ] {
        let a = admin(&r, "GET", path, Some(&token)).await;
        assert_eq!(a.status, status, "{path}: {}", a.body);
    }
    // The first 50 minutes hold 50 labelled decisions: too few, with the counts.
    let a = post_json(&r, "/v1/hrs/train", &token, serde_json::json!({"start_time": "2026-01-01T00:00:00Z", "end_time": "2026-01-01T00:50:00Z"})).await;
    assert_eq!(a.status, 202, "{}", a.body);
    let few = a.json()["job_id"].as_i64().unwrap();
    let job = finished_job(&r, &token, few).await;
    assert_eq!(job["status"], "failed", "{job}");
    let e = &job["error"];
    assert_eq!(
        (
            e["code"].as_str(),
            e["n_labelled"].as_u64(),
            e["min"].as_u64()
        ),
        (Some("insufficient_labels"), Some(50), Some(100)),
        "{job}"
    );
    assert_eq!(
        e["n_hallucinated"].as_u64().unwrap() + e["n_faithful"].as_u64().unwrap(),
        50
    );
    // The whole day: a registered version.
    let a = post_json(&r, "/v1/hrs/train", &token, serde_json::json!({"start_time": "2026-01-01T00:00:00Z", "end_time": "2026-01-02T01:00:00+01:00", "model_kind": "lr", "seed": 7})).await;
    assert_eq!(a.status, 202, "{}", a.body);
    let id = a.json()["job_id"].as_i64().unwrap();
    let job = finished_job(&r, &token, id).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["progress"], 1.0);
    assert_eq!(job["params"]["end_time"], "2026-01-02T00:00:00Z");
    let res = &job["result"];
    eprintln!("{}", serde_json::to_string_pretty(res).unwrap());
    assert_eq!(res["n_samples"], n);
    assert_eq!(res["status"], "registered");
    for m in crate::learn::fit::METRICS {
        let v = &res["metrics"][m];
        assert!(
            v["ci_low"].as_f64().unwrap() <= v["value"].as_f64().unwrap(),
            "{m}: {v}"
        );
        assert!(
            v["value"].as_f64().unwrap() <= v["ci_high"].as_f64().unwrap(),
            "{m}: {v}"
        );
    }
    assert!(res["duration_ms"].as_u64().is_some());
    let version = res["version"].as_str().unwrap();
    assert_eq!(job["model_version"], version);
    assert_eq!(jobs::registered_version(&r.db, id).await.unwrap(), version);
    let a = admin(&r, "GET", &format!("/v1/models/{version}"), Some(&token)).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let model = a.json();
    assert_eq!(
        model["aliases"],
        serde_json::json!([]),
        "registered, not promoted"
    );
    assert!(model["signature"].as_str().is_some());
    assert_eq!(model["card"]["dataset"]["sha256"], res["dataset_hash"]);
    assert_eq!(model["card"]["evaluation"]["metrics"], res["metrics"]);
    let job_hash = res["dataset_hash"].clone();
    // The seed's register-by-job form answers the stored row; other jobs are refused.
    let a = post_json(
        &r,
        "/v1/hrs/register",
        &token,
        serde_json::json!({"job_id": id}),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.json()["version"], version);
    assert_eq!(a.json()["status"], "registered");
    assert_eq!(a.json()["binary_hash"], model["sha256"]);
    let a = post_json(
        &r,
        "/v1/hrs/register",
        &token,
        serde_json::json!({"job_id": few}),
    )
    .await;
    assert_eq!(
        (a.status, a.json()["code"].as_str()),
        (409, Some("job_not_succeeded")),
        "{}",
        a.body
    );
    let a = post_json(
        &r,
        "/v1/hrs/register",
        &token,
        serde_json::json!({"job_id": 999_999}),
    )
    .await;
    assert_eq!(a.status, 404, "{}", a.body);
    // The listing, newest first, paged.
    let a = admin(&r, "GET", "/v1/hrs/jobs?limit=2", Some(&token)).await;
    let page = a.json();
    let ids: Vec<i64> = page["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["job_id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [id, few]);
    let next = page["next_cursor"].as_str().unwrap();
    let a = admin(
        &r,
        "GET",
        &format!("/v1/hrs/jobs?limit=2&cursor={next}"),
        Some(&token),
    )
    .await;
    assert_eq!(a.json()["jobs"][0]["job_id"], crashed);
    let a = admin(&r, "GET", "/v1/hrs/jobs?status=failed", Some(&token)).await;
    assert_eq!(a.json()["jobs"].as_array().unwrap().len(), 2);
    // The same decisions with gradient-boosted trees: another kind, another registered
    // version, its card with the boosting parameters.
    let a = post_json(&r, "/v1/hrs/train", &token, serde_json::json!({"start_time": "2026-01-01T00:00:00Z", "end_time": "2026-01-02T00:00:00Z", "model_kind": "gbdt", "seed": 7})).await;
    assert_eq!(a.status, 202, "{}", a.body);
    let gb = a.json()["job_id"].as_i64().unwrap();
    let job = finished_job(&r, &token, gb).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["params"]["model_kind"], "gbdt");
    let res = &job["result"];
    eprintln!("{}", serde_json::to_string_pretty(res).unwrap());
    assert_eq!(res["model_kind"], "gbdt");
    assert_eq!(res["dataset_hash"], job_hash, "the same dataset");
    let gb_version = res["version"].as_str().unwrap();
    assert!(gb_version.starts_with("gbdt-"), "{gb_version}");
    let a = admin(&r, "GET", &format!("/v1/models/{gb_version}"), Some(&token)).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let card = &a.json()["card"];
    assert_eq!(card["model_kind"], "gbdt");
    assert_eq!(card["kind"], "gradient_boosted_trees");
    assert_eq!(card["evaluation"]["metrics"], res["metrics"]);
    assert_eq!(
        card["boosting"]["iterations"],
        crate::learn::fit::GBDT_PARAMS.iterations
    );
    // The 400 for an unknown kind names the known ones.
    let a = post_json(&r, "/v1/hrs/train", &token, serde_json::json!({"start_time": "2026-01-01T00:00:00Z", "end_time": "2026-01-02T00:00:00Z", "model_kind": "GBDT"})).await;
    assert_eq!(a.status, 400, "{}", a.body);
    assert!(
        a.body.contains("`lr`") && a.body.contains("`gbdt`"),
        "{}",
        a.body
    );
    r.shutdown().await.unwrap();
}

/// The `schemathesis` CLI: `KAKEYA_SCHEMATHESIS` (set by `cargo xtask test`, which installs
/// it), else the project-local install. Missing: skipped loudly, or a failure when `CI` is set.
fn schemathesis() -> Option<std::path::PathBuf> {
    let local = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../.kakeya-tools/schemathesis-4.32.5/bin/schemathesis");
    let bin = std::env::var_os("KAKEYA_SCHEMATHESIS")
        .map(std::path::PathBuf::from)
        .unwrap_or(local);
    if bin.is_file() {
        return Some(bin);
    }
    if std::env::var_os("CI").is_some() {
        panic!(
            "schemathesis not found at {} in CI: run the tests through `cargo xtask test`",
            bin.display()
        );
    }
    eprintln!(
        "\n*** SKIP schemathesis contract run: {} missing (cargo xtask test installs it) ***\n",
        bin.display()
    );
    None
}

/// Property-based run of schemathesis against the live document and both live listeners:
/// no 5xx, only documented statuses, content types, headers and bodies that match the
/// document, invalid input refused, and authentication not ignored. Bounded (a fixed seed,
/// few examples per operation) so it takes seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_contract_violation() {
    let Some(bin) = schemathesis() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let r = start(&config(tmp.path())).await.unwrap();
    let token = read_token(tmp.path());
    let spec = format!("http://{}/v1/openapi.json", r.admin_addr);
    let checks = "not_a_server_error,status_code_conformance,content_type_conformance,\
                  response_headers_conformance,response_schema_conformance,\
                  negative_data_rejection,missing_required_header,unsupported_method,ignored_auth";
    let runs = [
        // The admin listener serves every operation but the ingest one ...
        vec!["--exclude-tag".to_string(), "ingest".into()],
        // ... which the ingest listener serves.
        vec![
            "--include-tag".into(),
            "ingest".into(),
            "--url".into(),
            format!("http://{}", r.ingest_addr),
        ],
    ];
    for extra in runs {
        let (bin, spec, cwd) = (bin.clone(), spec.clone(), tmp.path().to_path_buf());
        let auth = format!("Authorization: Bearer {token}");
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new(&bin)
                .arg("run")
                .arg(&spec)
                .args(["--header", &auth])
                .args(["--checks", checks])
                .args(["--max-examples", "30", "--seed", "1"])
                .args(["--request-timeout", "10", "--workers", "1"])
                .args(&extra)
                // It keeps its hypothesis database in the working directory.
                .current_dir(&cwd)
                .output()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()))
        })
        .await
        .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "schemathesis found contract violations:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!stdout.contains(&token), "the token must not be printed");
    }
    r.shutdown().await.unwrap();
}
