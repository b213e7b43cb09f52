//! End-to-end tests of the ingest pipeline through the axum router: group commit, dedup within
//! and across batches, error answers, and crash recovery by replay.

use crate::api::{admin_router, ingest_router, AdminState, IngestState};
use crate::ingest::{self, CommitterConfig};
use crate::metrics::Metrics;
use crate::store::{decision_log, ApplyParams, Db};
use crate::testutil::{all_dbs, gate_result, pcs_body, sqlite_db};
use crate::wal::{Checkpoint, WalRecord, WalWriter};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use std::path::Path;
use tower::ServiceExt;

const TTL: i64 = 3_600_000;
const PARAMS: ApplyParams = ApplyParams {
    dedup_ttl_ms: TTL,
    audit_sample_rate: 0.0,
};

struct Harness {
    router: Router,
    admin: Router,
    committer: tokio::task::JoinHandle<()>,
    metrics: Metrics,
}

fn harness(db: &Db, wal_dir: &Path, token: Option<&str>) -> Harness {
    harness_with(db, wal_dir, token, &PARAMS, None)
}

/// [`harness`] with other apply parameters and evidence retention under `evidence` (key and
/// opted-in tenants).
fn harness_with(
    db: &Db,
    wal_dir: &Path,
    token: Option<&str>,
    params: &ApplyParams,
    evidence: Option<crate::evidence::Vault>,
) -> Harness {
    let metrics = Metrics::new().unwrap();
    let (handle, committer) = ingest::spawn(
        CommitterConfig {
            wal_dir: wal_dir.to_path_buf(),
            max_batch: 256,
            dedup_ttl_ms: params.dedup_ttl_ms,
            audit_sample_rate: params.audit_sample_rate,
        },
        db.clone(),
        metrics.clone(),
        None,
    )
    .unwrap();
    let admin = admin_router(AdminState {
        db: db.clone(),
        metrics: metrics.clone(),
        committer: handle.status.clone(),
        wal_dir: wal_dir.to_path_buf(),
        admin_token: crate::api::auth::Secret::new(token.unwrap_or("test-admin-token")),
        bundle_seed: Some(std::sync::Arc::new([9; 32])),
        evidence: evidence.clone(),
        leases: crate::lease::Leases::new(
            metrics.leader.clone(),
            std::time::Duration::from_secs(5),
        ),
        scheduler: Default::default(),
        drift: crate::drift::DriftOptions::default(),
        cost: Default::default(),
        canary: crate::canary::CanaryOptions::default(),
    });
    Harness {
        router: ingest_router(IngestState {
            handle,
            metrics: metrics.clone(),
            ingest_secret: None,
            evidence: evidence
                .and_then(|v| crate::evidence::Retainer::new(v, db.clone(), metrics.clone())),
        }),
        admin,
        committer,
        metrics,
    }
}

impl Harness {
    async fn stop(self) {
        drop(self.router);
        drop(self.admin);
        self.committer.await.unwrap();
    }
}

fn submit_req(tenant: Option<&str>, body: &str) -> Request<Body> {
    let (result, cacheable) = gate_result(body);
    let mut b = Request::post("/v1/pcs/submit")
        .header("x-kakeya-result", result)
        .header(
            "x-kakeya-cacheable",
            if cacheable { "true" } else { "false" },
        )
        .header("x-kakeya-verify-ns", "777")
        .header("x-kakeya-filter-ns", "4321")
        .header("x-kakeya-model-calls", "1")
        .header("x-kakeya-microvote-ns", "12345678")
        .header("x-kakeya-llm-tokens", "11,4")
        .header("x-kakeya-rag-ns", "2468");
    if let Some(t) = tenant {
        b = b.header("x-kakeya-tenant", t);
    }
    b.body(Body::from(body.to_string())).unwrap()
}

async fn send(router: &Router, req: Request<Body>) -> (StatusCode, String, String, String) {
    let resp = router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let (dedup, retry) = {
        let h = |n: &str| {
            resp.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        (h("x-kakeya-dedup"), h("retry-after"))
    };
    let body = String::from_utf8(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    (status, body, dedup, retry)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_identical_submissions_one_decision() {
    for t in all_dbs("fifty_concurrent").await {
        let wal = tempfile::tempdir().unwrap();
        let h = harness(&t.db, wal.path(), None);
        let body = pcs_body("concurrent");
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let (r, b) = (h.router.clone(), body.clone());
            tasks.push(tokio::spawn(async move {
                send(&r, submit_req(Some("acme"), &b)).await
            }));
        }
        let mut answers = Vec::new();
        for task in tasks {
            answers.push(task.await.unwrap());
        }
        let (status, first_body) = (answers[0].0, answers[0].1.clone());
        assert!(
            answers.iter().all(|a| a.0 == status && a.1 == first_body),
            "{}: answers differ",
            t.label
        );
        assert_eq!(
            answers.iter().filter(|a| a.2 == "miss").count(),
            1,
            "{}",
            t.label
        );
        assert_eq!(
            answers.iter().filter(|a| a.2 == "hit").count(),
            49,
            "{}",
            t.label
        );
        let (expected, _) = gate_result(&body);
        assert_eq!(first_body, format!("{expected}\n"));
        assert_eq!(
            decision_log::count(&t.db.pool).await.unwrap(),
            1,
            "{}",
            t.label
        );
        let m = h.metrics.render();
        assert!(
            m.contains("kakeya_dedup_hits_total{tenant=\"acme\"} 49"),
            "{m}"
        );
        assert!(m.contains("kakeya_ingest_total{tenant=\"acme\"} 50"), "{m}");
        assert!(m.contains("kakeya_wal_fsync_seconds_count"), "{m}");
        h.stop().await;
        // The checkpoint was written at shutdown and points at the end of the WAL.
        let cp = Checkpoint::load(wal.path()).unwrap().unwrap();
        let scan = crate::wal::read_segment(&wal.path().join(&cp.segment)).unwrap();
        assert_eq!((scan.records.len(), cp.offset), (50, scan.valid_len));
        t.cleanup().await;
    }
}

/// Idempotency compares content: the identical PCS again gets the stored bytes; the same
/// `pcs_id` with other signed content gets 409 and changes nothing, live and on replay.
#[tokio::test]
async fn same_pcs_id_with_other_signed_content_is_a_conflict_that_changes_nothing() {
    for t in all_dbs("idempotency_conflict").await {
        let wal = tempfile::tempdir().unwrap();
        let h = harness(&t.db, wal.path(), None);
        let body = pcs_body("conflict");
        let first = send(&h.router, submit_req(Some("acme"), &body)).await;
        assert_eq!((first.0, first.2.as_str()), (StatusCode::OK, "miss"));
        // Same pcs_id, a different signed field (D_hat): not the same submission.
        let mut v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["D_hat"] = serde_json::json!(1e308);
        let other = v.to_string();
        let (s, b, dedup, _) = send(&h.router, submit_req(Some("acme"), &other)).await;
        assert_eq!(
            (s, dedup.as_str()),
            (StatusCode::CONFLICT, "conflict"),
            "{}",
            t.label
        );
        let err: serde_json::Value = serde_json::from_str(&b).unwrap();
        assert_eq!(err["code"], "idempotency_conflict", "{b}");
        // An unsigned field (N_j) changed: the same submission, the stored answer.
        let mut v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["N_j"]["2"] = serde_json::json!(1);
        let again = send(&h.router, submit_req(Some("acme"), &v.to_string())).await;
        assert_eq!(
            (again.0, &again.1, again.2.as_str()),
            (first.0, &first.1, "hit")
        );
        // The identical PCS gets the first answer byte for byte.
        let same = send(&h.router, submit_req(Some("acme"), &body)).await;
        assert_eq!(
            (same.0, &same.1, same.2.as_str()),
            (first.0, &first.1, "hit")
        );
        assert_eq!(
            decision_log::count(&t.db.pool).await.unwrap(),
            1,
            "{}",
            t.label
        );
        let m = h.metrics.render();
        assert!(
            m.contains("kakeya_idempotency_conflicts_total{tenant=\"acme\"} 1"),
            "{m}"
        );
        h.stop().await;
        // Replaying the WAL from the start reaches the same verdicts and changes nothing.
        let (stats, _) = ingest::replay(&t.db, wal.path(), true, &PARAMS, 8, |_| {})
            .await
            .unwrap();
        assert_eq!(
            (
                stats.read,
                stats.applied_fresh,
                stats.already_present,
                stats.conflicts
            ),
            (4, 0, 3, 1),
            "{}",
            t.label
        );
        assert_eq!(decision_log::count(&t.db.pool).await.unwrap(), 1);
        t.cleanup().await;
    }
}

#[tokio::test]
async fn raw_evidence_is_never_written_to_the_wal() {
    let t = crate::testutil::sqlite_db().await;
    let wal = tempfile::tempdir().unwrap();
    let h = harness(&t.db, wal.path(), None);
    let mut v: serde_json::Value = serde_json::from_str(&pcs_body("evidence")).unwrap();
    v["evidence"] = serde_json::json!({"question": "secret question", "context": "secret context", "response": "secret answer"});
    crate::testutil::bind_evidence_hash(&mut v, &"ab".repeat(32));
    let (status, _, _, _) = send(&h.router, submit_req(None, &v.to_string())).await;
    assert_eq!(status, StatusCode::OK);
    h.stop().await;
    let cp = Checkpoint::load(wal.path()).unwrap().unwrap();
    let raw = std::fs::read(wal.path().join(&cp.segment)).unwrap();
    let text = String::from_utf8_lossy(&raw);
    assert!(!text.contains("secret"), "evidence text reached the WAL");
    assert!(text.contains(&"ab".repeat(32)), "the evidence hash is kept");
    t.cleanup().await;
}

/// The request the gate would forward for `rec` (its own result header, escalated or not).
fn forwarded(rec: &WalRecord) -> Request<Body> {
    Request::post("/v1/pcs/submit")
        .header("x-kakeya-result", rec.result.clone())
        .header("x-kakeya-cacheable", rec.cacheable.to_string())
        .header("x-kakeya-tenant", rec.tenant.clone())
        .body(Body::from(rec.body.clone()))
        .unwrap()
}

fn retention_for(tenant: &str) -> crate::evidence::Vault {
    let cfg = crate::evidence::EvidenceConfig {
        tenants: crate::evidence::Tenants::parse([tenant.to_string()]).unwrap(),
        ..Default::default()
    };
    crate::evidence::Vault::new(
        crate::evidence::crypto::EvidenceKey::from_bytes(&[5; 32]),
        cfg,
    )
}

fn secret_evidence(tag: &str) -> kakeya_core::evidence::Evidence {
    kakeya_core::evidence::Evidence {
        question: format!("secret-question-{tag}"),
        context: format!("secret-context-{tag}"),
        citations: vec![],
        response: format!("secret-response-{tag}"),
        task: None,
    }
}

/// With retention on, an escalated submission's evidence is served to reviewers, yet the WAL
/// and the decision log (every column, on both backends) never hold its text, and the
/// stored record holds it only encrypted.
#[tokio::test]
async fn retained_evidence_never_reaches_the_wal_or_the_decision_log() {
    for t in all_dbs("evidence_not_in_wal").await {
        let wal = tempfile::tempdir().unwrap();
        let h = harness_with(
            &t.db,
            wal.path(),
            None,
            &PARAMS,
            Some(retention_for("acme")),
        );
        let ev = secret_evidence(t.label);
        let (rec, pcs_id) = crate::evidence::tests::submission("acme", "wal", true, &ev);
        let (status, body, _, _) = send(&h.router, forwarded(&rec)).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{}: {body}", t.label);
        let req = Request::get("/v1/reviews")
            .header("authorization", "Bearer test-admin-token")
            .body(Body::empty())
            .unwrap();
        let (status, page, _, _) = send(&h.admin, req).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let page: serde_json::Value = serde_json::from_str(&page).unwrap();
        assert_eq!(page["items"][0]["pcs_id"], pcs_id.as_str());
        assert_eq!(page["items"][0]["evidence"]["context"], ev.context.as_str());
        h.stop().await;
        let secrets = [&ev.question, &ev.context, &ev.response];
        // Every WAL file, byte for byte.
        for f in std::fs::read_dir(wal.path()).unwrap() {
            let raw = std::fs::read(f.unwrap().path()).unwrap();
            for s in secrets {
                assert!(
                    !raw.windows(s.len()).any(|w| w == s.as_bytes()),
                    "{}: {s} in the WAL",
                    t.label
                );
            }
        }
        // Every decision-log column: as text on PostgreSQL (the whole row), as served on both.
        let mut rows =
            serde_json::to_string(&decision_log::recent(&t.db.pool, None, 100).await.unwrap())
                .unwrap();
        if t.db.backend == crate::store::Backend::Postgres {
            let all: Vec<(String,)> = sqlx::query_as("SELECT d::text AS row FROM decision_log d")
                .fetch_all(&t.db.pool)
                .await
                .unwrap();
            assert_eq!(all.len(), 1);
            rows.extend(all.into_iter().map(|r| r.0));
        }
        assert!(
            rows.contains(&pcs_id),
            "{}: the search sees the rows",
            t.label
        );
        for s in secrets {
            assert!(
                !rows.contains(s.as_str()),
                "{}: {s} in decision_log",
                t.label
            );
        }
        // The retained record: ciphertext only.
        let (ct,): (Vec<u8>,) = sqlx::query_as("SELECT ciphertext FROM review_evidence")
            .fetch_one(&t.db.pool)
            .await
            .unwrap();
        assert!(!ct.windows(7).any(|w| w == b"secret-"), "{}", t.label);
        t.cleanup().await;
    }
}

/// The decision log records the task kind of the signed evidence (NULL without evidence or
/// without a task), and `GET /v1/decisions` returns it.
#[tokio::test]
async fn the_task_kind_of_the_signed_evidence_is_logged_and_listed() {
    use kakeya_core::task::TaskKind;
    for t in all_dbs("decision_task").await {
        let wal = tempfile::tempdir().unwrap();
        let h = harness(&t.db, wal.path(), None);
        let mut expected = std::collections::BTreeMap::new();
        for (tag, task) in [
            ("dialogue", Some(TaskKind::Dialogue)),
            ("summ", Some(TaskKind::Summarization)),
            ("none", None),
        ] {
            let ev = kakeya_core::evidence::Evidence {
                task,
                ..secret_evidence(tag)
            };
            let (rec, pcs_id) = crate::evidence::tests::submission("acme", tag, false, &ev);
            let (status, body, _, _) = send(&h.router, forwarded(&rec)).await;
            assert_eq!(status, StatusCode::OK, "{}: {body}", t.label);
            expected.insert(pcs_id, task.map(|k| k.as_str().to_string()));
        }
        // Without evidence at all.
        let (status, body, _, _) =
            send(&h.router, submit_req(Some("acme"), &pcs_body("plain"))).await;
        assert_eq!(status, StatusCode::OK, "{}: {body}", t.label);
        let req = Request::get("/v1/decisions?tenant=acme")
            .header("authorization", "Bearer test-admin-token")
            .body(Body::empty())
            .unwrap();
        let (status, page, _, _) = send(&h.admin, req).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let page: serde_json::Value = serde_json::from_str(&page).unwrap();
        let items = page["decisions"].as_array().unwrap();
        assert_eq!(items.len(), 4, "{}: {page}", t.label);
        for item in items {
            let id = item["pcs_id"].as_str().unwrap();
            let want = expected.get(id).cloned().flatten();
            assert_eq!(item["task"].as_str(), want.as_deref(), "{}: {id}", t.label);
        }
        h.stop().await;
        t.cleanup().await;
    }
}

/// Storing the evidence is best effort: a failing store (here: no table) is logged and
/// counted, and the submission is answered as if retention were off.
#[tokio::test]
async fn a_failing_evidence_store_never_fails_the_submission() {
    for t in all_dbs("evidence_store_fails").await {
        sqlx::query("DROP TABLE review_evidence")
            .execute(&t.db.pool)
            .await
            .unwrap();
        let wal = tempfile::tempdir().unwrap();
        let h = harness_with(
            &t.db,
            wal.path(),
            None,
            &PARAMS,
            Some(retention_for("acme")),
        );
        let ev = secret_evidence("fails");
        let (rec, _) = crate::evidence::tests::submission("acme", "fails", true, &ev);
        let (status, body, dedup, _) = send(&h.router, forwarded(&rec)).await;
        assert_eq!(
            (status, dedup.as_str()),
            (StatusCode::ACCEPTED, "miss"),
            "{}: {body}",
            t.label
        );
        assert!(body.contains("\"escalated\":true"), "{body}");
        let errors = h
            .metrics
            .evidence_retention_errors_total
            .with_label_values(&["acme"])
            .get();
        assert_eq!(errors, 1, "{}", t.label);
        assert_eq!(decision_log::count(&t.db.pool).await.unwrap(), 1);
        h.stop().await;
        t.cleanup().await;
    }
}

/// A store that hangs (PostgreSQL: the table locked by another session) delays the answer by
/// at most the bounded wait; the write completes once the lock goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_evidence_store_delays_the_answer_by_at_most_the_bounded_wait() {
    let Some(t) = crate::testutil::postgres_db("evidence_store_hangs").await else {
        return;
    };
    let mut lock = t.db.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE review_evidence IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    let wal = tempfile::tempdir().unwrap();
    let h = harness_with(
        &t.db,
        wal.path(),
        None,
        &PARAMS,
        Some(retention_for("acme")),
    );
    let ev = secret_evidence("hangs");
    let (rec, _) = crate::evidence::tests::submission("acme", "hangs", true, &ev);
    let started = std::time::Instant::now();
    let (status, body, _, _) = send(&h.router, forwarded(&rec)).await;
    let took = started.elapsed();
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert!(
        took >= crate::evidence::WRITE_WAIT && took < crate::evidence::WRITE_WAIT * 4,
        "answered after {took:?}"
    );
    lock.rollback().await.unwrap();
    let mut stored = 0;
    for _ in 0..100 {
        stored = crate::evidence::store::count(&t.db.pool).await.unwrap();
        if stored == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(stored, 1, "the write finished after the answer");
    h.stop().await;
    t.cleanup().await;
}

/// What `WalRecord::body` documents: a body without evidence is stored byte for byte; one
/// with evidence is stored re-serialised without the `evidence` member.
#[tokio::test]
async fn wal_bodies_are_verbatim_without_evidence_and_reserialised_with_it() {
    let t = crate::testutil::sqlite_db().await;
    let wal = tempfile::tempdir().unwrap();
    let h = harness(&t.db, wal.path(), None);
    // Not serde_json's spelling: extra spaces and a newline, keys as the agent wrote them.
    let plain = pcs_body("verbatim").replace(",\"", ", \"") + "\n";
    let (status, _, _, _) = send(&h.router, submit_req(None, &plain)).await;
    assert_eq!(status, StatusCode::OK);
    let mut v: serde_json::Value = serde_json::from_str(&pcs_body("with-evidence")).unwrap();
    v["evidence"] = serde_json::json!({"question": "q", "context": "c", "response": "r"});
    crate::testutil::bind_evidence_hash(&mut v, &"cd".repeat(32));
    let with = v.to_string().replace(",\"", ", \"");
    let (status, _, _, _) = send(&h.router, submit_req(None, &with)).await;
    assert_eq!(status, StatusCode::OK);
    h.stop().await;
    let cp = Checkpoint::load(wal.path()).unwrap().unwrap();
    let scan = crate::wal::read_segment(&wal.path().join(&cp.segment)).unwrap();
    let bodies: Vec<&str> = scan
        .records
        .iter()
        .map(|r| r.record.body.as_str())
        .collect();
    assert_eq!(bodies.len(), 2);
    assert!(bodies.contains(&plain.as_str()), "not stored byte for byte");
    let mut expected: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&with).unwrap();
    expected.remove("evidence");
    let expected = serde_json::to_string(&expected).unwrap();
    assert!(bodies.contains(&expected.as_str()), "{bodies:?}");
    assert!(!bodies.contains(&with.as_str()));
    t.cleanup().await;
}

#[tokio::test]
async fn errors_are_json_and_nothing_is_written() {
    let t = sqlite_db().await;
    let wal = tempfile::tempdir().unwrap();
    let h = harness(&t.db, wal.path(), Some("tok"));
    let body = pcs_body("err");
    // no result header
    let req = Request::post("/v1/pcs/submit")
        .body(Body::from(body.clone()))
        .unwrap();
    let (s, b, _, _) = send(&h.router, req).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(b.contains("\"code\":\"not_from_gate\""), "{b}");
    // garbage result header
    let req = Request::post("/v1/pcs/submit")
        .header("x-kakeya-result", "{nope")
        .body(Body::from(body.clone()))
        .unwrap();
    assert!(send(&h.router, req).await.1.contains("not_from_gate"));
    // body that does not parse
    let (result, _) = gate_result(&body);
    let req = Request::post("/v1/pcs/submit")
        .header("x-kakeya-result", result)
        .body(Body::from("[1]"))
        .unwrap();
    let (s, b, _, _) = send(&h.router, req).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(b.contains("\"code\":\"invalid_json\""), "{b}");
    // wrong method, wrong path
    let (s, b, _, _) = send(
        &h.router,
        Request::get("/v1/pcs/submit").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    assert!(b.contains("method_not_allowed"));
    let (s, _, _, _) = send(
        &h.router,
        Request::get("/nope").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // too large
    let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(1_200_000));
    let req = Request::post("/v1/pcs/submit")
        .header("x-kakeya-result", "{}")
        .body(Body::from(big))
        .unwrap();
    assert_eq!(send(&h.router, req).await.0, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        crate::wal::reader::list_segments(wal.path())
            .unwrap()
            .is_empty(),
        "nothing written"
    );
    // admin: health and ready open; metrics, decisions and openapi need the token
    let get = |p: &str| Request::get(p).body(Body::empty()).unwrap();
    assert_eq!(send(&h.admin, get("/health")).await.1, "OK");
    assert_eq!(send(&h.admin, get("/ready")).await.0, StatusCode::OK);
    assert_eq!(
        send(&h.admin, get("/metrics")).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        send(&h.admin, get("/v1/decisions")).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        send(&h.admin, get("/v1/openapi.json")).await.0,
        StatusCode::UNAUTHORIZED
    );
    let auth = |p: &str| {
        Request::get(p)
            .header("authorization", "Bearer tok")
            .body(Body::empty())
            .unwrap()
    };
    let (s, spec, _, _) = send(&h.admin, auth("/v1/openapi.json")).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        spec.contains("/v1/pcs/submit") && spec.contains("DecisionRow"),
        "{spec}"
    );
    // one real submission shows up in /v1/decisions
    assert_eq!(send(&h.router, submit_req(None, &body)).await.2, "miss");
    let (s, rows, _, _) = send(&h.admin, auth("/v1/decisions?tenant=default&limit=5")).await;
    assert_eq!(s, StatusCode::OK);
    let page: crate::api::decisions::DecisionsPage = serde_json::from_str(&rows).unwrap();
    let rows = page.decisions;
    assert_eq!(rows.len(), 1);
    assert_eq!(page.next_cursor, None);
    assert_eq!(
        (rows[0].tenant.as_str(), rows[0].verify_ns),
        ("default", Some(777))
    );
    // The filter's cost tracer lands in the decision's cost record.
    let cost = sqlx::query(
        "SELECT filter_cpu_ns, model_calls, rag_cpu_ns, prompt_tokens, completion_tokens \
         FROM cost_records",
    )
    .fetch_one(&t.db.pool)
    .await
    .unwrap();
    use sqlx::Row;
    assert_eq!(
        (
            cost.try_get::<i64, _>("filter_cpu_ns").unwrap(),
            cost.try_get::<i64, _>("model_calls").unwrap(),
            cost.try_get::<i64, _>("rag_cpu_ns").unwrap()
        ),
        (4321, 1, 2468)
    );
    // A gateway answer's token counts too (LLM-gateway mode).
    assert_eq!(
        (
            cost.try_get::<i64, _>("prompt_tokens").unwrap(),
            cost.try_get::<i64, _>("completion_tokens").unwrap()
        ),
        (11, 4)
    );
    // The micro-vote's wait lands in the decision log, for the advisor's deadline rule.
    let mv: i64 = sqlx::query("SELECT microvote_ns FROM decision_log")
        .fetch_one(&t.db.pool)
        .await
        .unwrap()
        .try_get("microvote_ns")
        .unwrap();
    assert_eq!(mv, 12_345_678);
    h.stop().await;
    t.cleanup().await;
}

#[tokio::test]
async fn wal_failure_is_503_and_not_acknowledged() {
    let t = sqlite_db().await;
    let dir = tempfile::tempdir().unwrap();
    let wal = dir.path().join("wal");
    let h = harness(&t.db, &wal, None);
    std::fs::remove_dir_all(&wal).unwrap();
    std::fs::write(&wal, b"not a directory").unwrap();
    let (s, b, _, retry) = send(&h.router, submit_req(None, &pcs_body("walfail"))).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert!(b.contains("\"code\":\"wal_unavailable\""), "{b}");
    assert_eq!(retry, "1");
    assert_eq!(decision_log::count(&t.db.pool).await.unwrap(), 0);
    assert!(h
        .metrics
        .render()
        .contains("kakeya_wal_errors_total{tenant=\"default\"} 1"));
    let get = Request::get("/ready").body(Body::empty()).unwrap();
    assert_eq!(send(&h.admin, get).await.0, StatusCode::SERVICE_UNAVAILABLE);
    h.stop().await;
    t.cleanup().await;
}

#[tokio::test]
async fn replay_after_crash_restores_every_record_once() {
    for t in all_dbs("replay_after_crash").await {
        let wal = tempfile::tempdir().unwrap();
        // Simulated crash: records reached the WAL (plus a torn tail), the DB got nothing.
        let now = crate::now_ms();
        let mut recs: Vec<WalRecord> = (0..10)
            .map(|i| crate::testutil::record("acme", &pcs_body(&format!("crash{i}")), now + i))
            .collect();
        recs.push(recs[3].clone()); // a duplicate submission
        let mut w = WalWriter::open(wal.path()).unwrap();
        w.append_batch(now, &recs[..6]).unwrap();
        let out = w.append_batch(now, &recs[6..]).unwrap();
        drop(w);
        let seg = wal.path().join(&out.segment);
        let mut f = std::fs::OpenOptions::new().append(true).open(&seg).unwrap();
        std::io::Write::write_all(&mut f, &[50, 0, 0, 0, 1, 2]).unwrap();
        drop(f);

        let (stats, cp) = ingest::replay(&t.db, wal.path(), false, &PARAMS, 4, |_| {})
            .await
            .unwrap();
        assert_eq!(
            (
                stats.read,
                stats.applied_fresh,
                stats.already_present,
                stats.invalid
            ),
            (11, 10, 1, 0),
            "{}",
            t.label
        );
        assert_eq!(
            cp,
            Some(Checkpoint {
                segment: out.segment.clone(),
                offset: out.end
            })
        );
        assert_eq!(decision_log::count(&t.db.pool).await.unwrap(), 10);
        // From the checkpoint there is nothing left; from the start everything is present.
        let (stats, _) = ingest::replay(&t.db, wal.path(), false, &PARAMS, 4, |_| {})
            .await
            .unwrap();
        assert_eq!(stats.read, 0);
        let (stats, _) = ingest::replay(&t.db, wal.path(), true, &PARAMS, 4, |_| {})
            .await
            .unwrap();
        assert_eq!(
            (stats.read, stats.applied_fresh, stats.already_present),
            (11, 0, 11),
            "{}",
            t.label
        );
        assert_eq!(decision_log::count(&t.db.pool).await.unwrap(), 10);
        // The server appends after the (truncated) torn tail and answers the duplicate from dedup.
        let h = harness(&t.db, wal.path(), None);
        let (s, b, dedup, _) = send(&h.router, submit_req(Some("acme"), &recs[0].body)).await;
        assert_eq!(dedup, "hit", "{}", t.label);
        let vr: kakeya_core::VerifyResult = serde_json::from_str(&recs[0].result).unwrap();
        assert_eq!(
            (s.as_u16(), b),
            (vr.status(), format!("{}\n", recs[0].result))
        );
        h.stop().await;
        let scan = crate::wal::read_segment(&seg).unwrap();
        assert!(!scan.torn());
        assert_eq!(scan.records.len(), 12);
        t.cleanup().await;
    }
}

#[tokio::test]
async fn corrupt_middle_frame_is_counted_and_new_records_are_not_dropped() {
    for t in all_dbs("corrupt_middle_frame").await {
        let wal = tempfile::tempdir().unwrap();
        let now = crate::now_ms();
        let recs: Vec<WalRecord> = (0..6)
            .map(|i| crate::testutil::record("acme", &pcs_body(&format!("mid{i}")), now + i))
            .collect();
        let mut w = WalWriter::open(wal.path()).unwrap();
        let out = w.append_batch(now, &recs).unwrap();
        drop(w);
        let seg = wal.path().join(&out.segment);
        let scan = crate::wal::read_segment(&seg).unwrap();
        let (bad_start, bad_end) = (scan.records[2].offset, scan.records[2].end);
        let mut bytes = std::fs::read(&seg).unwrap();
        bytes[bad_start as usize + 30] ^= 0x20;
        std::fs::write(&seg, &bytes).unwrap();

        let (stats, cp) = ingest::replay(&t.db, wal.path(), false, &PARAMS, 2, |_| {})
            .await
            .unwrap();
        assert_eq!(
            (
                stats.read,
                stats.applied_fresh,
                stats.corrupt_ranges,
                stats.corrupt_bytes,
                stats.torn_tail_bytes
            ),
            (5, 5, 1, bad_end - bad_start, 0),
            "{}",
            t.label
        );
        // Records after the corrupt frame were replayed too.
        assert_eq!(
            cp,
            Some(Checkpoint {
                segment: out.segment.clone(),
                offset: out.end
            })
        );
        assert_eq!(decision_log::count(&t.db.pool).await.unwrap(), 5);

        // New submissions go to a rotated segment: fresh ids, every one recorded.
        let h = harness(&t.db, wal.path(), None);
        for i in 0..4 {
            let body = pcs_body(&format!("new{i}"));
            let (s, _, dedup, _) = send(&h.router, submit_req(Some("acme"), &body)).await;
            let vr: kakeya_core::VerifyResult =
                serde_json::from_str(&gate_result(&body).0).unwrap();
            assert_eq!(s.as_u16(), vr.status(), "{}", t.label);
            assert_ne!(dedup, "hit", "{}", t.label);
        }
        h.stop().await;
        assert_eq!(
            decision_log::count(&t.db.pool).await.unwrap(),
            9,
            "{}",
            t.label
        );
        assert_eq!(
            std::fs::read(&seg).unwrap(),
            bytes,
            "damaged segment untouched"
        );
        let names: Vec<String> = crate::wal::reader::list_segments(wal.path())
            .unwrap()
            .into_iter()
            .map(|s| s.0)
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        assert_eq!(names[1], out.segment.replace(".wal", "-1.wal"));
        t.cleanup().await;
    }
}

async fn call(router: &Router, req: Request<Body>) -> (StatusCode, axum::http::HeaderMap, String) {
    let resp = router.clone().oneshot(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes().to_vec();
    (
        parts.status,
        parts.headers,
        String::from_utf8(body).unwrap(),
    )
}

fn req(method: &str, path: &str, token: Option<&str>, body: &str) -> Request<Body> {
    let mut b = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json");
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    b.body(Body::from(body.to_string())).unwrap()
}

fn test_model(bias: f64) -> kakeya_core::model::Model {
    let kakeya_core::model::Model::Logistic(mut m) = crate::registry::bootstrap::train(
        &crate::ml::dataset::parse(
            br#"{"id":"qa-1-0","task":"qa","question":"Who built it?","context":"Acme built it in 1900.","response":"Acme built it in 1900.","label":0}
{"id":"qa-1-1","task":"qa","question":"Who built it?","context":"Acme built it in 1900.","response":"Zorblax built it in 1750.","label":1}
{"id":"qa-2-0","task":"qa","question":"Who made it?","context":"Bolt made it in 1920.","response":"Bolt made it in 1920.","label":0}
{"id":"qa-2-1","task":"qa","question":"Who made it?","context":"Bolt made it in 1920.","response":"Quux made it in 1620.","label":1}
"#,
        )
        .unwrap(),
        "t",
        1,
        1.0,
        2,
    )
    .unwrap()
    .model
    else {
        panic!("the default recipe is logistic")
    };
    m.intercept = bias;
    m.into()
}

/// A gradient-boosted tree ensemble (20 trees) trained on the HaluEval sample the binary embeds.
fn test_tree_model() -> kakeya_core::model::Model {
    use crate::ml::{dataset, eval, gbdt};
    let rows = dataset::parse(crate::registry::bootstrap::SAMPLE).unwrap();
    let p = eval::prepare(&rows, |_| {});
    let recipe = eval::Recipe::Trees(gbdt::GbdtParams {
        iterations: 20,
        ..gbdt::DEFAULT_PARAMS
    });
    eval::fit_model(&p, "sample", 1, &recipe, serde_json::json!({})).unwrap()
}

#[tokio::test]
async fn registry_api_bundles_and_risk_columns() {
    for t in all_dbs("registry_api").await {
        let wal = tempfile::tempdir().unwrap();
        let h = harness(&t.db, wal.path(), Some("tok"));
        let tok = Some("tok");
        // The challenger is a tree ensemble: registered, signed, published and served alike.
        let (a, b) = (test_model(-1.0), test_tree_model());
        assert!(b.version().starts_with("gbdt-"));
        let a_json = String::from_utf8(a.canonical_bytes()).unwrap();
        // No bundle yet; the route needs no token.
        let (s, _, body) = call(&h.admin, req("GET", "/v1/bundles/current", None, "")).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{}: {body}", t.label);
        assert!(body.contains("\"code\":\"not_found\""));
        // Registry routes need the token.
        for (m, p) in [
            ("GET", "/v1/models"),
            ("POST", "/v1/models"),
            ("POST", "/v1/aliases/champion"),
            ("DELETE", "/v1/aliases/challenger"),
        ] {
            assert_eq!(
                call(&h.admin, req(m, p, None, "{}")).await.0,
                StatusCode::UNAUTHORIZED,
                "{m} {p}"
            );
        }
        let (s, _, body) = call(&h.admin, req("POST", "/v1/models", tok, &a_json)).await;
        assert_eq!(s, StatusCode::CREATED, "{body}");
        assert!(body.contains(&a.version()));
        let (s, _, body) = call(&h.admin, req("POST", "/v1/models", tok, &a_json)).await;
        assert_eq!(s, StatusCode::CONFLICT, "{body}");
        assert!(body.contains("\"code\":\"conflict\""));
        let (s, _, body) = call(&h.admin, req("POST", "/v1/models", tok, "{\"kind\":1}")).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
        let b_json = String::from_utf8(b.canonical_bytes()).unwrap();
        // A tree pointing back at its root (a cycle) is refused, naming the tree.
        let mut hostile: serde_json::Value = serde_json::from_str(&b_json).unwrap();
        hostile["trees"][3]["left"][1] = 0.into();
        hostile["trees"][3]["right"][1] = 1.into();
        let (s, _, body) = call(
            &h.admin,
            req("POST", "/v1/models", tok, &hostile.to_string()),
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
        assert!(body.contains("tree 3"), "{body}");
        assert_eq!(
            call(&h.admin, req("POST", "/v1/models", tok, &b_json))
                .await
                .0,
            StatusCode::CREATED
        );
        // Aliases.
        let promote = |v: &str, w: Option<f64>| match w {
            Some(w) => format!("{{\"version\":\"{v}\",\"weight\":{w}}}"),
            None => format!("{{\"version\":\"{v}\"}}"),
        };
        let (s, _, body) = call(
            &h.admin,
            req(
                "POST",
                "/v1/aliases/champion",
                tok,
                &promote("lr-nope", None),
            ),
        )
        .await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{body}");
        let (s, _, body) = call(
            &h.admin,
            req(
                "POST",
                "/v1/aliases/primary",
                tok,
                &promote(&a.version(), None),
            ),
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
        let (s, _, body) = call(&h.admin, req("POST", "/v1/aliases/champion", tok, "nope")).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
        let (s, _, body) = call(
            &h.admin,
            req(
                "POST",
                "/v1/aliases/challenger",
                tok,
                &promote(&b.version(), Some(0.2)),
            ),
        )
        .await;
        assert_eq!(s, StatusCode::CONFLICT, "no champion yet: {body}");
        let (s, _, body) = call(
            &h.admin,
            req(
                "POST",
                "/v1/aliases/champion",
                tok,
                &promote(&a.version(), None),
            ),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{body}");
        let p: crate::registry::Published = serde_json::from_str(&body).unwrap();
        assert_eq!(p.bundle_version, 1);
        let (s, _, body) = call(
            &h.admin,
            req(
                "POST",
                "/v1/aliases/challenger",
                tok,
                &promote(&b.version(), Some(0.2)),
            ),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{body}");
        // The current bundle: signed bytes, headers, ETag / 304.
        let (s, hd, bytes) = call(&h.admin, req("GET", "/v1/bundles/current", None, "")).await;
        assert_eq!(s, StatusCode::OK);
        let hv = |n: &str| hd.get(n).unwrap().to_str().unwrap().to_string();
        assert_eq!(hv("content-type"), "application/json");
        let sha = hv(kakeya_core::bundle::H_SHA256);
        assert_eq!(hv("etag"), format!("\"{sha}\""));
        let pk = crate::registry::keys::public_key_b64(&[9; 32]);
        let bundle = kakeya_core::bundle::verify_bundle(
            bytes.as_bytes(),
            &sha,
            &hv(kakeya_core::bundle::H_SIGNATURE),
            &[pk],
        )
        .unwrap();
        assert_eq!(bundle.version, 2);
        assert_eq!(bundle.champion, a);
        assert_eq!(bundle.challenger.as_ref(), Some(&b));
        let mut cond = req("GET", "/v1/bundles/current", None, "");
        cond.headers_mut()
            .insert("if-none-match", format!("\"{sha}\"").parse().unwrap());
        let (s, hd304, body) = call(&h.admin, cond).await;
        assert_eq!((s, body.as_str()), (StatusCode::NOT_MODIFIED, ""));
        assert_eq!(
            hd304.get("etag").unwrap().to_str().unwrap(),
            format!("\"{sha}\"")
        );
        // Models: list and detail.
        let (s, _, body) = call(&h.admin, req("GET", "/v1/models", tok, "")).await;
        assert_eq!(s, StatusCode::OK);
        let list: Vec<crate::registry::ModelSummary> = serde_json::from_str(&body).unwrap();
        assert_eq!(list.len(), 2);
        let (s, _, body) = call(
            &h.admin,
            req("GET", &format!("/v1/models/{}", a.version()), tok, ""),
        )
        .await;
        assert_eq!(s, StatusCode::OK);
        let d: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(d["aliases"], serde_json::json!(["champion"]));
        assert_eq!(d["card"]["model_version"], a.version());
        assert_eq!(
            kakeya_core::model::Model::from_json(d["artifact"].to_string().as_bytes()).unwrap(),
            a
        );
        let (s, _, body) = call(
            &h.admin,
            req("GET", &format!("/v1/models/{}", b.version()), tok, ""),
        )
        .await;
        assert_eq!(s, StatusCode::OK);
        let d: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(d["card"]["kind"], "gradient_boosted_trees");
        assert_eq!(d["card"]["boosting"]["trees"], 20);
        assert_eq!(d["aliases"], serde_json::json!(["challenger"]));
        assert_eq!(
            kakeya_core::model::Model::from_json(d["artifact"].to_string().as_bytes()).unwrap(),
            b
        );
        assert_eq!(
            call(&h.admin, req("GET", "/v1/models/lr-nope", tok, ""))
                .await
                .0,
            StatusCode::NOT_FOUND
        );
        // Removing the challenger publishes bundle 3; a second removal is 404.
        assert_eq!(
            call(&h.admin, req("DELETE", "/v1/aliases/challenger", tok, ""))
                .await
                .0,
            StatusCode::OK
        );
        assert_eq!(
            call(&h.admin, req("DELETE", "/v1/aliases/challenger", tok, ""))
                .await
                .0,
            StatusCode::NOT_FOUND
        );
        let (_, hd, _) = call(&h.admin, req("GET", "/v1/bundles/current", None, "")).await;
        assert_eq!(hd.get("x-kakeya-bundle-version").unwrap(), "3");
        let (s, _, spec) = call(&h.admin, req("GET", "/v1/openapi.json", tok, "")).await;
        assert_eq!(s, StatusCode::OK);
        assert!(spec.contains("/v1/bundles/current") && spec.contains("/v1/aliases/{alias}"));
        // A scored submission: the risk lands in the decision log and /v1/decisions.
        let body = pcs_body("risky");
        let (result, _) = gate_result(&body);
        let mut vr: kakeya_core::VerifyResult = serde_json::from_str(&result).unwrap();
        vr.risk = Some(kakeya_core::verify::RiskSummary {
            score: 0.25,
            band: "low".into(),
            model_version: b.version(),
            arm: "challenger".into(),
            model_task: None,
            bundle_version: 2,
        });
        let mut sub = submit_req(Some("acme"), &body);
        sub.headers_mut()
            .insert("x-kakeya-result", vr.to_json().parse().unwrap());
        let (s, _, _, _) = send(&h.router, sub).await;
        assert!(s == StatusCode::OK || s == StatusCode::ACCEPTED);
        send(&h.router, submit_req(Some("acme"), &pcs_body("plain"))).await;
        let (_, _, rows) = call(&h.admin, req("GET", "/v1/decisions?limit=5", tok, "")).await;
        let rows = serde_json::from_str::<crate::api::decisions::DecisionsPage>(&rows)
            .unwrap()
            .decisions;
        assert_eq!(rows.len(), 2);
        let scored = rows.iter().find(|r| r.risk.is_some()).unwrap();
        assert_eq!(scored.risk, Some(0.25));
        assert_eq!(scored.risk_band.as_deref(), Some("low"));
        assert_eq!(scored.model_version.as_deref(), Some(b.version().as_str()));
        assert_eq!(
            (scored.arm.as_deref(), scored.bundle_version),
            (Some("challenger"), Some(2))
        );
        let plain = rows.iter().find(|r| r.risk.is_none()).unwrap();
        assert_eq!(
            (plain.risk_band.as_deref(), plain.bundle_version),
            (None, None)
        );
        h.stop().await;
        t.cleanup().await;
    }
}

/// What the gate forwards for a scored PCS v0.2 of `shard` with evidence under `bundle`:
/// (body with its evidence, `x-kakeya-result`, cacheable, the features the scorer used),
/// computed with kakeya-core as the filter computes it.
fn scored_submission(
    shard: &str,
    bundle: &kakeya_core::bundle::Bundle,
) -> (
    String,
    String,
    bool,
    [f64; kakeya_core::features::N_FEATURES],
) {
    let ev = kakeya_core::evidence::Evidence {
        question: "Who built it?".into(),
        context: format!("Acme built it in 1900 ({shard})."),
        citations: vec![],
        response: format!("Zorblax built it in 1750 ({shard})."),
        task: None,
    };
    let mut v: serde_json::Value = serde_json::from_str(&pcs_body(shard)).unwrap();
    crate::testutil::bind_evidence_hash(&mut v, &kakeya_core::evidence::evidence_sha256(&ev));
    v["evidence"] = serde_json::to_value(&ev).unwrap();
    let body = v.to_string();
    let pcs = kakeya_core::parse(body.as_bytes()).unwrap();
    let mut outcome = kakeya_core::verify(&pcs, &kakeya_core::VerifyParams::default());
    let risk = kakeya_core::bundle::Scorer::new(bundle.clone())
        .assess("acme", &pcs, &outcome, pcs.evidence.as_ref())
        .unwrap();
    outcome.result.apply_risk(&risk, bundle.version);
    (
        body,
        outcome.result.to_json(),
        outcome.cacheable,
        risk.features,
    )
}

fn with_features(mut req: Request<Body>, result: &str, features: Option<&str>) -> Request<Body> {
    let h = req.headers_mut();
    h.insert("x-kakeya-result", result.parse().unwrap());
    if let Some(f) = features {
        h.insert(kakeya_core::feature_wire::HEADER, f.parse().unwrap());
    }
    req
}

/// Issue 10, features as decided: a valid vector is stored with its decision bit for bit and
/// read back by `GET /v1/decisions` and `features_page`; an invalid one (wrong length, NaN or
/// infinity, unknown schema, garbage, sent for an unscored decision) is dropped with a counter
/// while the decision is still stored; replaying the WAL into an empty database rebuilds
/// identical rows, features and audit-sample flags included.
#[tokio::test]
async fn features_as_decided_are_validated_stored_and_replayed() {
    use kakeya_core::feature_wire::encode;
    use kakeya_core::features::SCHEMA_VERSION;
    use std::collections::BTreeMap;
    let params = ApplyParams {
        dedup_ttl_ms: TTL,
        audit_sample_rate: 0.5,
    };
    let bundle = kakeya_core::bundle::Bundle {
        format: kakeya_core::bundle::BUNDLE_FORMAT.into(),
        version: 4,
        created_at_ms: 0,
        // Low risk: the scored decisions are accepted, so the audit sample can draw from them.
        champion: test_model(-20.0),
        challenger: None,
        challenger_weight: 0.0,
        canary: None,
        tenant_stats: Default::default(),
        policy: Default::default(),
        ensemble: Default::default(),
        budgets: Default::default(),
        task_models: Default::default(),
        upstreams: Default::default(),
        anomaly: Default::default(),
    };
    let raw = |values: &[f64]| {
        use base64::Engine;
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        format!(
            "{SCHEMA_VERSION};{}",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        )
    };
    for t in all_dbs("features_as_decided").await {
        let wal = tempfile::tempdir().unwrap();
        let h = harness_with(&t.db, wal.path(), Some("tok"), &params, None);
        // shard → (features header, expected stored features, expected reject reason)
        let mut native = BTreeMap::new();
        let mut sent = Vec::new();
        for shard in [
            "good-1", "good-2", "short", "long", "nan", "inf", "schema", "junk", "none",
        ] {
            let (body, result, cacheable, x) = scored_submission(shard, &bundle);
            assert!(cacheable, "{shard}");
            let mut y = x;
            let header = match shard {
                "short" => Some(raw(&x[..21])),
                "long" => Some(raw(&[x.as_slice(), &[1.0]].concat())),
                "nan" => {
                    y[3] = f64::NAN;
                    Some(encode(&y))
                }
                "inf" => {
                    y[20] = f64::NEG_INFINITY;
                    Some(encode(&y))
                }
                "schema" => Some(encode(&x).replace(SCHEMA_VERSION, "hrs-features-v9")),
                "junk" => Some("hrs-features-v1;not base64!".to_string()),
                "none" => None,
                _ => Some(encode(&x)),
            };
            native.insert(shard, x);
            sent.push((shard, body, result, header));
        }
        // An unscored decision that carries a features header anyway.
        let plain = pcs_body("unscored");
        let (plain_result, _) = gate_result(&plain);
        sent.push((
            "unscored",
            plain,
            plain_result,
            Some(encode(&native["good-1"])),
        ));
        for (shard, body, result, header) in &sent {
            let req = with_features(submit_req(Some("acme"), body), result, header.as_deref());
            let (status, answer, _, _) = send(&h.router, req).await;
            let vr: kakeya_core::VerifyResult = serde_json::from_str(result).unwrap();
            // The verdict stands whatever the features header says.
            assert_eq!(
                status.as_u16(),
                vr.status(),
                "{}: {shard}: {answer}",
                t.label
            );
            assert_eq!(answer.trim_end(), result, "{shard}");
        }
        let m = h.metrics.render();
        for (reason, n) in [
            ("length", 2),
            ("non_finite", 2),
            ("unknown_schema", 1),
            ("encoding", 1),
            ("unscored", 1),
        ] {
            let line = format!("kakeya_feature_rejects_total{{reason=\"{reason}\"}} {n}");
            assert!(m.contains(&line), "{}: {line} in\n{m}", t.label);
        }
        // Every decision is logged; only the two good ones with features.
        let (s, _, page) = call(
            &h.admin,
            req("GET", "/v1/decisions?limit=100", Some("tok"), ""),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{page}");
        let page: crate::api::decisions::DecisionsPage = serde_json::from_str(&page).unwrap();
        assert_eq!(page.decisions.len(), sent.len(), "{}", t.label);
        let by_shard = |shard: &str| {
            let pcs_id =
                kakeya_core::parse(sent.iter().find(|s| s.0 == shard).unwrap().1.as_bytes())
                    .unwrap()
                    .pcs_id;
            page.decisions
                .iter()
                .find(|d| d.pcs_id == pcs_id)
                .unwrap()
                .clone()
        };
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        for shard in ["good-1", "good-2"] {
            let row = by_shard(shard);
            assert_eq!(row.feature_schema.as_deref(), Some(SCHEMA_VERSION));
            let stored = row
                .features
                .unwrap_or_else(|| panic!("{}: {shard}", t.label));
            assert_eq!(bits(&stored), bits(&native[shard]), "{}: {shard}", t.label);
            assert!(row.risk.is_some());
        }
        for shard in [
            "short", "long", "nan", "inf", "schema", "junk", "none", "unscored",
        ] {
            let row = by_shard(shard);
            assert_eq!((row.feature_schema, row.features), (None, None), "{shard}");
        }
        assert_eq!(by_shard("unscored").risk, None);
        // The JSON of /v1/decisions: an array of numbers, or null.
        let (_, _, text) = call(
            &h.admin,
            req("GET", "/v1/decisions?limit=100", Some("tok"), ""),
        )
        .await;
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let arrays = v["decisions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["features"].is_array())
            .count();
        assert_eq!(arrays, 2);
        assert!(
            v["decisions"][0]["features"].is_null() || v["decisions"][0]["features"].is_array()
        );

        // The dataset read: only rows with features of the schema, within the time range,
        // a page at a time, every row once.
        let (mut after, mut rows) = (0, Vec::new());
        loop {
            let p = decision_log::features_page(&t.db.pool, SCHEMA_VERSION, 0, i64::MAX, after, 1)
                .await
                .unwrap();
            let Some(last) = p.last() else { break };
            after = last.id;
            rows.extend(p);
        }
        assert_eq!(rows.len(), 2, "{}", t.label);
        for r in &rows {
            let d = page.decisions.iter().find(|d| d.id == r.id).unwrap();
            assert_eq!(
                (
                    &r.tenant,
                    &r.pcs_id,
                    r.created_at_ms,
                    Some(&r.model_version),
                    Some(&r.arm),
                    Some(r.risk)
                ),
                (
                    &d.tenant,
                    &d.pcs_id,
                    d.created_at_ms,
                    d.model_version.as_ref(),
                    d.arm.as_ref(),
                    d.risk
                )
            );
            assert_eq!((r.escalated, r.audit_sample), (d.escalated, d.audit_sample));
            assert_eq!(bits(&r.features), bits(d.features.as_ref().unwrap()));
        }
        let none = decision_log::features_page(&t.db.pool, "hrs-features-v9", 0, i64::MAX, 0, 10)
            .await
            .unwrap();
        assert!(none.is_empty());
        let before = decision_log::features_page(
            &t.db.pool,
            SCHEMA_VERSION,
            0,
            rows[0].created_at_ms,
            0,
            10,
        )
        .await
        .unwrap();
        assert!(before.is_empty(), "the range end is exclusive");
        h.stop().await;

        // Replay: the WAL alone rebuilds identical rows in an empty database.
        let fresh = match t.label {
            "sqlite" => sqlite_db().await,
            _ => crate::testutil::postgres_db("features_replay")
                .await
                .unwrap(),
        };
        let (stats, _) = ingest::replay(&fresh.db, wal.path(), true, &params, 4, |_| {})
            .await
            .unwrap();
        assert_eq!(stats.applied_fresh as usize, sent.len(), "{}", t.label);
        let strip = |mut v: Vec<decision_log::DecisionRow>| {
            v.iter_mut().for_each(|r| r.id = 0);
            v.sort_by(|a, b| a.record_id.cmp(&b.record_id));
            v
        };
        let original = strip(
            decision_log::page(&t.db.pool, None, None, 100)
                .await
                .unwrap(),
        );
        let rebuilt = strip(
            decision_log::page(&fresh.db.pool, None, None, 100)
                .await
                .unwrap(),
        );
        assert_eq!(rebuilt, original, "{}", t.label);
        for (a, b) in original.iter().zip(&rebuilt) {
            assert_eq!(
                a.features.as_deref().map(bits),
                b.features.as_deref().map(bits)
            );
        }
        // At rate 0.5 some accepted decisions were drawn into the audit sample, the same ones.
        let sampled = original.iter().filter(|r| r.audit_sample).count();
        let accepted = original
            .iter()
            .filter(|r| r.accepted && !r.escalated)
            .count();
        assert!(
            0 < sampled && sampled < accepted,
            "{}: {sampled} of {accepted}",
            t.label
        );
        for r in &original {
            assert_eq!(
                r.audit_sample,
                crate::review::audit::sampled(0.5, &r.tenant, &r.pcs_id, r.accepted, r.escalated)
            );
        }
        fresh.cleanup().await;
        t.cleanup().await;
    }
}
