//! Store tests: every function runs on SQLite and (when reachable) PostgreSQL.

use super::*;
use crate::testutil::{all_dbs, pcs_body, record};
use sqlx::Connection;

const TTL: i64 = 60_000;
const PARAMS: ApplyParams = ApplyParams {
    dedup_ttl_ms: TTL,
    audit_sample_rate: 0.0,
};
const T: i64 = 1_700_000_000_000;

async fn apply(db: &Db, id: &str, rec: &WalRecord) -> Applied {
    let mut conn = db.pool.acquire().await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    let a = apply_record(&mut tx, id, rec, &PARAMS).await.unwrap();
    tx.commit().await.unwrap();
    a
}

#[tokio::test]
async fn dollar_placeholders_work_on_both_backends() {
    for t in all_dbs("dollar_placeholders").await {
        let row: (i64, String) = sqlx::query_as("SELECT $1 + $2 AS n, $3 AS s")
            .bind(40i64)
            .bind(2i64)
            .bind("x")
            .fetch_one(&t.db.pool)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", t.label));
        assert_eq!(row, (42, "x".to_string()), "{}", t.label);
        t.cleanup().await;
    }
}

#[tokio::test]
async fn dedup_first_write_wins_and_expired_rows_are_replaced() {
    for t in all_dbs("dedup_first_write_wins").await {
        let mut c = t.db.pool.acquire().await.unwrap();
        let sub = |pcs_id| dedup::Submission {
            tenant: "a",
            pcs_id,
            content_sha256: "h1",
        };
        let won = dedup::insert_or_get(&mut c, &sub("p1"), 200, "first\n", T, TTL)
            .await
            .unwrap();
        assert!(matches!(won, dedup::DedupOutcome::Won), "{}", t.label);
        match dedup::insert_or_get(&mut c, &sub("p1"), 202, "second\n", T + 1, TTL)
            .await
            .unwrap()
        {
            dedup::DedupOutcome::Existing {
                status,
                body,
                created_at_ms,
            } => assert_eq!((status, body.as_str(), created_at_ms), (200, "first\n", T)),
            _ => panic!("{}: live row replaced or refused", t.label),
        }
        let other = dedup::Submission {
            content_sha256: "h2",
            ..sub("p1")
        };
        assert!(
            matches!(
                dedup::insert_or_get(&mut c, &other, 202, "other\n", T + 1, TTL)
                    .await
                    .unwrap(),
                dedup::DedupOutcome::Conflict
            ),
            "{}: other content under a live id is a conflict",
            t.label
        );
        assert_eq!(
            dedup::get(&t.db.pool, "a", "p1", T + 1).await.unwrap(),
            Some((200, "first\n".into()))
        );
        assert_eq!(
            dedup::get(&t.db.pool, "a", "p1", T + TTL).await.unwrap(),
            None,
            "expired is a miss"
        );
        // exactly at expiry the row may be replaced
        let won = dedup::insert_or_get(&mut c, &sub("p1"), 202, "third\n", T + TTL, TTL)
            .await
            .unwrap();
        assert!(matches!(won, dedup::DedupOutcome::Won), "{}", t.label);
        assert_eq!(
            dedup::get(&t.db.pool, "a", "p1", T + TTL).await.unwrap(),
            Some((202, "third\n".into()))
        );
        // cleanup removes only expired rows
        dedup::insert_or_get(&mut c, &sub("old"), 200, "x", T - TTL, TTL)
            .await
            .unwrap();
        drop(c);
        assert_eq!(dedup::cleanup(&t.db.pool, T + TTL).await.unwrap(), 1);
        assert!(dedup::get(&t.db.pool, "a", "p1", T + TTL)
            .await
            .unwrap()
            .is_some());
        t.cleanup().await;
    }
}

#[tokio::test]
async fn dedup_is_tenant_scoped() {
    for t in all_dbs("dedup_is_tenant_scoped").await {
        let body = pcs_body("shard-a");
        let a = apply(&t.db, "s:0", &record("tenant-a", &body, T)).await;
        let b = apply(&t.db, "s:1", &record("tenant-b", &body, T)).await;
        let a2 = apply(&t.db, "s:2", &record("tenant-a", &body, T + 1)).await;
        assert!(!a.dedup_hit && a.fresh, "{}", t.label);
        assert!(
            !b.dedup_hit && b.fresh,
            "{}: other tenant must not hit",
            t.label
        );
        assert!(a2.dedup_hit && !a2.fresh, "{}", t.label);
        assert_eq!(a2.body, a.body);
        assert_eq!(decision_log::count(&t.db.pool).await.unwrap(), 2);
        t.cleanup().await;
    }
}

#[tokio::test]
async fn hit_returns_stored_answer_byte_for_byte() {
    for t in all_dbs("hit_byte_for_byte").await {
        let body = pcs_body("shard-b");
        let mut first = record("default", &body, T);
        first.result = "{\"accepted\":true,\"recomputed_D_hat\":1.5,\"escalated\":false}".into();
        let a = apply(&t.db, "s:0", &first).await;
        assert_eq!(
            (a.status, a.body.as_str()),
            (
                200,
                "{\"accepted\":true,\"recomputed_D_hat\":1.5,\"escalated\":false}\n"
            )
        );
        let second = record("default", &body, T + 1); // real verdict differs (escalated → 202)
        let b = apply(&t.db, "s:1", &second).await;
        assert!(b.dedup_hit);
        assert_eq!((b.status, b.body), (a.status, a.body));
        t.cleanup().await;
    }
}

#[tokio::test]
async fn not_cacheable_is_logged_but_not_stored() {
    for t in all_dbs("not_cacheable").await {
        let body = pcs_body("shard-c");
        let mut rec = record("default", &body, T);
        rec.cacheable = false;
        let a = apply(&t.db, "s:0", &rec).await;
        let b = apply(&t.db, "s:1", &rec).await;
        assert!(
            !a.dedup_hit && !b.dedup_hit && a.fresh && b.fresh,
            "{}",
            t.label
        );
        assert_eq!(decision_log::count(&t.db.pool).await.unwrap(), 2);
        let pcs = kakeya_core::parse(body.as_bytes()).unwrap();
        assert_eq!(
            dedup::get(&t.db.pool, "default", &pcs.pcs_id, T)
                .await
                .unwrap(),
            None
        );
        t.cleanup().await;
    }
}

#[tokio::test]
async fn decision_log_is_idempotent_under_replay() {
    for t in all_dbs("decision_log_idempotent").await {
        let recs: Vec<WalRecord> = (0..5)
            .map(|i| record("default", &pcs_body(&format!("s{i}")), T + i))
            .collect();
        let mut uncacheable = record("x", &pcs_body("u"), T);
        uncacheable.cacheable = false;
        for round in 0..3 {
            for (i, r) in recs.iter().chain([&uncacheable]).enumerate() {
                let a = apply(&t.db, &format!("seg:{i}"), r).await;
                assert_eq!(a.fresh, round == 0, "{} round {round} rec {i}", t.label);
            }
        }
        assert_eq!(decision_log::count(&t.db.pool).await.unwrap(), 6);
        let rows = decision_log::recent(&t.db.pool, None, 100).await.unwrap();
        assert_eq!(rows.len(), 6);
        let only_x = decision_log::recent(&t.db.pool, Some("x"), 100)
            .await
            .unwrap();
        assert_eq!(only_x.len(), 1);
        let row = &only_x[0];
        assert_eq!(
            (row.record_id.as_str(), row.cacheable, row.verify_ns),
            ("seg:5", false, Some(1234))
        );
        assert!((row.d_hat - 0.528320834).abs() < 1e-12 && row.regime == "mixed");
        t.cleanup().await;
    }
}

/// sqlx 0.8's Any driver sends a NULL `f64` to PostgreSQL as a `float4` parameter; a cached
/// statement prepared with an unscored decision (risk NULL) then refused every scored one on
/// that connection (22P03, "incorrect binary data format"). Both orders, one connection.
#[tokio::test]
async fn scored_and_unscored_decisions_mix_on_one_connection() {
    for t in all_dbs("scored_unscored_mix").await {
        let mut conn = t.db.pool.acquire().await.unwrap();
        for (i, scored) in [false, true, false, true].into_iter().enumerate() {
            let mut rec = record("mix", &pcs_body(&format!("mix{i}")), T);
            if scored {
                let mut vr: serde_json::Value = serde_json::from_str(&rec.result).unwrap();
                vr["risk"] = serde_json::json!({"score": 0.25, "band": "low",
                    "model_version": "lr-0123456789ab", "arm": "champion", "bundle_version": 1});
                rec.result = vr.to_string();
            }
            let mut tx = conn.begin().await.unwrap();
            apply_record(&mut tx, &format!("mix:{i}"), &rec, &PARAMS)
                .await
                .unwrap_or_else(|e| panic!("{} record {i} (scored {scored}): {e}", t.label));
            tx.commit().await.unwrap();
        }
        drop(conn);
        let rows = decision_log::recent(&t.db.pool, Some("mix"), 10)
            .await
            .unwrap();
        let risks: Vec<Option<f64>> = rows.iter().map(|r| r.risk).collect();
        assert_eq!(risks, [Some(0.25), None, Some(0.25), None], "{}", t.label);
        t.cleanup().await;
    }
}
