//! The routes through the admin router, on SQLite and PostgreSQL: bad input is a 400 (or 409)
//! with a JSON body and changes nothing; a training job on real feature vectors succeeds, its
//! model is stored signed and `detect` scores with it.

use super::*;
use crate::anomaly::eval_data::{self, GenOptions, Kind, Part};
use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

const SEED: [u8; 32] = [7; 32];

fn router(db: &crate::store::Db, seed: Option<[u8; 32]>) -> axum::Router {
    let metrics = crate::metrics::Metrics::new().unwrap();
    crate::api::admin_router(crate::api::AdminState {
        db: db.clone(),
        metrics: metrics.clone(),
        committer: std::sync::Arc::new(crate::ingest::CommitterStatus {
            wal_ok: true.into(),
            db_ok: true.into(),
        }),
        wal_dir: std::env::temp_dir(),
        admin_token: crate::api::auth::Secret::new("tok"),
        bundle_seed: seed.map(std::sync::Arc::new),
        evidence: None,
        leases: crate::lease::Leases::new(
            metrics.leader.clone(),
            std::time::Duration::from_secs(5),
        ),
        scheduler: Default::default(),
        drift: crate::drift::DriftOptions::default(),
        cost: Default::default(),
        canary: crate::canary::CanaryOptions::default(),
    })
}

async fn call(r: &axum::Router, method: &str, path: &str, body: String) -> (StatusCode, Value) {
    let resp = r
        .clone()
        .oneshot(
            Request::builder()
                .method(method)
                .uri(path)
                .header("authorization", "Bearer tok")
                .header("content-type", "application/json")
                .body(Body::from(body))
                .unwrap(),
        )
        .await
        .unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or_default())
}

/// Normal feature vectors of the embedded HaluEval sample (oldest first) and one repetition
/// loop.
fn vectors() -> (Vec<Row>, Row) {
    let rows = crate::ml::dataset::parse(crate::registry::bootstrap::SAMPLE).unwrap();
    let split = eval_data::split(
        &rows,
        &GenOptions {
            max_rows: Some(400),
            ..GenOptions::default()
        },
    );
    let loop_row = eval_data::variant(split.test[0], Kind::Repetition, 3, 1);
    let samples = eval_data::samples(&split, 1, &mut |_, _| {});
    let normal = samples
        .iter()
        .filter(|s| s.kind == Kind::Normal && s.part != Part::Test)
        .map(|s| s.features)
        .collect();
    (normal, loop_row)
}

fn features_json(rows: &[Row]) -> String {
    let v: Vec<Value> = rows
        .iter()
        .map(|r| json!({"features": r.to_vec()}))
        .collect();
    json!({"samples": v, "model_type": "vae", "epochs": 20}).to_string()
}

#[tokio::test]
async fn bad_input_is_a_json_400_and_changes_nothing() {
    for t in crate::testutil::all_dbs("anomaly_routes_bad").await {
        let r = router(&t.db, Some(SEED));
        let row = vec![0.0; N_FEATURES];
        let short = vec![0.0; N_FEATURES - 1];
        let many = |n: usize, f: &Vec<f64>| {
            let v: Vec<Value> = (0..n).map(|_| json!({"features": f})).collect();
            v
        };
        for (body, code) in [
            ("not json".to_string(), "bad_request"),
            (
                json!({"model_type": "mlp", "samples": many(100, &row)}).to_string(),
                "bad_request",
            ),
            (
                json!({"samples": many(100, &row)}).to_string(),
                "bad_request",
            ),
            (
                json!({"model_type": "vae", "samples": many(99, &row)}).to_string(),
                "bad_request",
            ),
            (
                json!({"model_type": "vae", "samples": many(100, &short)}).to_string(),
                "bad_request",
            ),
            (
                json!({"model_type": "vae", "samples": many(100, &row), "seed": -1}).to_string(),
                "bad_request",
            ),
            (
                json!({"model_type": "vae", "samples": many(100, &row), "epochs": 0}).to_string(),
                "bad_request",
            ),
            (
                json!({"model_type": "vae", "samples": many(100, &row), "extra": 1}).to_string(),
                "bad_request",
            ),
        ] {
            let (s, v) = call(&r, "POST", "/v1/anomaly/train", body.clone()).await;
            assert_eq!(
                (s, v["code"].as_str()),
                (StatusCode::BAD_REQUEST, Some(code)),
                "{body}: {v}"
            );
            assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()));
        }
        let (s, v) = call(
            &r,
            "POST",
            "/v1/anomaly/train",
            json!({"model_type": "vae"}).to_string(),
        )
        .await;
        assert_eq!(
            (s, v["code"].as_str()),
            (StatusCode::CONFLICT, Some("no_anomaly_features")),
            "{v}"
        );
        for body in [
            json!({"features": short}).to_string(),
            json!({"features": "x"}).to_string(),
            "{".to_string(),
        ] {
            let (s, v) = call(&r, "POST", "/v1/anomaly/detect", body.clone()).await;
            assert_eq!(
                (s, v["code"].as_str()),
                (StatusCode::BAD_REQUEST, Some("bad_request")),
                "{body}: {v}"
            );
        }
        // No model stored yet: 404, and nothing was created by the refused requests.
        let (s, v) = call(
            &r,
            "POST",
            "/v1/anomaly/detect",
            json!({"features": row}).to_string(),
        )
        .await;
        assert_eq!(
            (s, v["code"].as_str()),
            (StatusCode::NOT_FOUND, Some("not_found")),
            "{v}"
        );
        let (s, _) = call(&r, "GET", "/v1/anomaly/jobs/1", String::new()).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        let (s, _) = call(&r, "GET", "/v1/anomaly/jobs/x", String::new()).await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        // Without the signing key nothing can be signed or checked.
        let unsigned = router(&t.db, None);
        let (s, v) = call(
            &unsigned,
            "POST",
            "/v1/anomaly/detect",
            json!({"features": row}).to_string(),
        )
        .await;
        assert_eq!(
            (s, v["code"].as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, Some("not_ready")),
            "{v}"
        );
        t.cleanup().await;
    }
}

#[tokio::test]
async fn train_job_then_detect() {
    let (normal, looped) = vectors();
    assert!(normal.len() >= MIN_SAMPLES, "{}", normal.len());
    for t in crate::testutil::all_dbs("anomaly_routes_train").await {
        let r = router(&t.db, Some(SEED));
        let (s, v) = call(&r, "POST", "/v1/anomaly/train", features_json(&normal)).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{v}");
        let id = v["job_id"].as_i64().unwrap();
        let job = loop {
            let (s, v) = call(&r, "GET", &format!("/v1/anomaly/jobs/{id}"), String::new()).await;
            assert_eq!(s, StatusCode::OK, "{v}");
            if v["status"] != "running" {
                break v;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        };
        assert_eq!(job["status"], "succeeded", "{job}");
        let version = job["model_version"].as_str().unwrap().to_string();
        assert!(job["result"]["val_elbo"].as_f64().unwrap().is_finite());
        for ks in ["heldout_ks_calibration", "heldout_ks_uniform"] {
            assert!(job["result"][ks]["statistic"].as_f64().is_some(), "{job}");
        }
        // The stored card carries the curves.
        let card = store::card(&t.db, &version).await.unwrap().unwrap();
        assert_eq!(
            card["train_loss"].as_array().unwrap().len(),
            job["result"]["epochs"].as_u64().unwrap() as usize
        );

        let (s, v) = call(
            &r,
            "POST",
            "/v1/anomaly/detect",
            json!({"pcs_id": "p1", "features": looped.to_vec()}).to_string(),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["model_version"], version.as_str());
        assert_eq!(v["pcs_id"], "p1");
        assert_eq!(v["decision"], "anomalous", "{v}");
        assert!(v["cluster"].is_null());
        let (s, v) = call(
            &r,
            "POST",
            "/v1/anomaly/detect",
            json!({"features": normal[0].to_vec(), "model_version": version}).to_string(),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let score = v["score"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&score));
        let (s, _) = call(
            &r,
            "POST",
            "/v1/anomaly/detect",
            json!({"features": normal[0].to_vec(), "model_version": "vae-000000000000"})
                .to_string(),
        )
        .await;
        assert_eq!(s, StatusCode::NOT_FOUND);

        // A tampered row is refused, never scored with.
        sqlx::query("UPDATE anomaly_models SET signature = $1")
            .bind(keys::sign_artifact(b"other bytes", &SEED))
            .execute(&t.db.pool)
            .await
            .unwrap();
        let (s, v) = call(
            &r,
            "POST",
            "/v1/anomaly/detect",
            json!({"features": normal[0].to_vec()}).to_string(),
        )
        .await;
        assert_eq!(
            (s, v["code"].as_str()),
            (StatusCode::INTERNAL_SERVER_ERROR, Some("integrity_failure")),
            "{v}"
        );
        t.cleanup().await;
    }
}

/// Inline scoring end to end inside the control plane: recorded assessments fill the decision
/// log's anomaly columns, `train` without samples trains from that window (time split), the
/// activated model and a tenant's mode go into the next bundle's section.
#[tokio::test]
async fn recorded_vectors_train_a_model_that_activation_puts_in_the_bundle() {
    use crate::anomaly::inline::AnomalyRecord;
    use sqlx::{Connection, Row};
    let (normal, _) = vectors();
    for t in crate::testutil::all_dbs("anomaly_inline").await {
        let r = router(&t.db, Some(SEED));
        let params = crate::store::ApplyParams {
            dedup_ttl_ms: 1,
            audit_sample_rate: 0.0,
        };
        for (i, x) in normal.iter().enumerate() {
            let body = crate::testutil::pcs_body(&format!("inline{i}"));
            let mut rec = crate::testutil::record("acme", &body, 1_000 + i as i64);
            rec.anomaly = Some(AnomalyRecord {
                score: 0.5,
                uncertainty: 0.01,
                action: "none".into(),
                model_version: "vae-test".into(),
                schema: Some(kakeya_core::anomaly_features::SCHEMA_VERSION.into()),
                features: x.to_vec(),
            });
            let mut conn = t.db.pool.acquire().await.unwrap();
            let mut tx = conn.begin().await.unwrap();
            crate::store::apply_record(&mut tx, &format!("s:{i}"), &rec, &params)
                .await
                .unwrap();
            tx.commit().await.unwrap();
        }
        let row = sqlx::query(
            "SELECT anomaly_score, anomaly_action, anomaly_schema FROM decision_log \
             WHERE pcs_id = (SELECT pcs_id FROM decision_log ORDER BY id LIMIT 1)",
        )
        .fetch_one(&t.db.pool)
        .await
        .unwrap();
        assert_eq!(row.try_get::<f64, _>("anomaly_score").unwrap(), 0.5);
        assert_eq!(row.try_get::<String, _>("anomaly_action").unwrap(), "none");
        let window = crate::anomaly::inline::normal_window(&t.db.pool, MAX_SAMPLES)
            .await
            .unwrap();
        assert_eq!(window.len(), normal.len(), "{}", t.label);
        assert_eq!(window[0], normal[0].to_vec(), "oldest first");

        let (s, v) = call(
            &r,
            "POST",
            "/v1/anomaly/train",
            json!({"model_type": "vae", "epochs": 5}).to_string(),
        )
        .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{v}");
        let id = v["job_id"].as_i64().unwrap();
        let job = loop {
            let (_, v) = call(&r, "GET", &format!("/v1/anomaly/jobs/{id}"), String::new()).await;
            if v["status"] != "running" {
                break v;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        };
        assert_eq!(job["status"], "succeeded", "{job}");
        let n = normal.len() as f64;
        assert_eq!(
            job["result"]["n_train"].as_u64().unwrap(),
            (n * TRAIN_SHARE).round() as u64
        );
        let version = job["model_version"].as_str().unwrap().to_string();

        let (s, v) = call(
            &r,
            "POST",
            "/v1/anomaly/activate",
            json!({"model_version": "vae-000000000000"}).to_string(),
        )
        .await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
        let (s, v) = call(
            &r,
            "POST",
            "/v1/anomaly/activate",
            json!({"model_version": version}).to_string(),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        for (body, status) in [
            (json!({"mode": "loud"}), StatusCode::BAD_REQUEST),
            (
                json!({"tenant_id": "acme", "mode": "blocking", "block_threshold": 2.0}),
                StatusCode::BAD_REQUEST,
            ),
            (
                json!({"tenant_id": "acme", "mode": "blocking", "block_threshold": 0.995}),
                StatusCode::OK,
            ),
            (json!({"mode": "shadow"}), StatusCode::OK),
        ] {
            let (s, v) = call(&r, "PUT", "/v1/anomaly/modes", body.to_string()).await;
            assert_eq!(s, status, "{body}: {v}");
        }
        let key = crate::registry::keys::public_key_b64(&SEED);
        let mut conn = t.db.pool.acquire().await.unwrap();
        let s = crate::anomaly::publication::section(&mut conn, &key)
            .await
            .unwrap();
        assert_eq!(s.model.as_ref().map(|m| m.version()), Some(version.clone()));
        let acme = s.tenants["acme"];
        assert_eq!(acme.mode, kakeya_core::anomaly_policy::Mode::Blocking);
        assert_eq!(
            (acme.threshold, acme.block_threshold),
            (crate::anomaly::threshold::DEFAULT_THRESHOLD, Some(0.995))
        );
        assert_eq!(
            s.default.map(|d| d.mode),
            Some(kakeya_core::anomaly_policy::Mode::Shadow)
        );
        assert_eq!(s.validate(), Ok(()));
        drop(conn);
        t.cleanup().await;
    }
}
