//! The audit log on SQLite and PostgreSQL: appends chain, seals sign, verify names each kind
//! of tampering, concurrent appenders never fork the chain, the hooks record their events,
//! and the compliance report sources every figure.

use super::chain;
use super::store::{self, seal};
use super::verify::{verify, Problem};
use super::{AuditOptions, Event};
use crate::registry::keys::public_key_b64;
use crate::store::Db;
use crate::testutil::all_dbs;
use std::time::Duration;

const SEED: [u8; 32] = [7; 32];
const T0: i64 = 1_780_000_000_000;

fn key() -> String {
    public_key_b64(&SEED)
}

fn opts(rotate: u64) -> AuditOptions {
    AuditOptions {
        checkpoint_every: Duration::from_secs(3600),
        rotate_entries: rotate,
    }
}

fn label_event(i: usize) -> Event {
    Event::LabelRecorded {
        tenant: "acme".into(),
        pcs_id: format!("p{i}"),
        labeller: "rev".into(),
        source: "gold".into(),
        label: if i % 2 == 0 {
            "faithful"
        } else {
            "hallucinated"
        }
        .into(),
    }
}

async fn fill(db: &Db, n: usize) {
    for i in 0..n {
        store::record(db, &label_event(i), T0 + i as i64)
            .await
            .unwrap();
    }
}

async fn exec(db: &Db, sql: &str) {
    sqlx::query(sql).execute(&db.pool).await.unwrap();
}

#[tokio::test]
async fn appends_chain_rotation_and_cadence_seal_and_a_clean_chain_verifies() {
    for t in all_dbs("audit_clean").await {
        let (db, l) = (&t.db, t.label);
        let empty = verify(db, None, None, &key()).await.unwrap();
        assert!(empty.ok && empty.entries_checked == 0, "{l}: {empty:?}");
        fill(db, 25).await;
        let page = store::entries(db, 1, 100).await.unwrap();
        assert_eq!(page.len(), 25, "{l}");
        assert_eq!(page[0].prev_hash, chain::to_hex(&chain::GENESIS), "{l}");
        for w in page.windows(2) {
            assert_eq!(
                (w[1].seq, &w[1].prev_hash),
                (w[0].seq + 1, &w[0].hash),
                "{l}"
            );
        }
        // Rotation: two full segments of 10; the 5 left are younger than the cadence.
        let c = seal(db, &SEED, &opts(10), T0 + 100, false).await.unwrap();
        let ranges: Vec<_> = c.iter().map(|c| (c.seq_from, c.seq_to)).collect();
        assert_eq!(ranges, vec![(1, 10), (11, 20)], "{l}");
        assert!(
            seal(db, &SEED, &opts(10), T0 + 100, false)
                .await
                .unwrap()
                .is_empty(),
            "{l}"
        );
        // Cadence: an hour on, the rest is sealed too.
        let c = seal(db, &SEED, &opts(10), T0 + 3_600_100, false)
            .await
            .unwrap();
        assert_eq!((c[0].seq_from, c[0].seq_to), (21, 25), "{l}");
        assert!(crate::registry::keys::verify_artifact(
            &c[0].message(),
            &c[0].signature,
            &key()
        ));
        let r = verify(db, None, None, &key()).await.unwrap();
        assert!(r.ok, "{l}: {r:?}");
        assert_eq!(
            (r.entries_checked, r.checkpoints_checked, r.to_seq),
            (25, 3, 25),
            "{l}"
        );
        assert_eq!(
            r.last_verified_checkpoint.map(|c| c.seq_to),
            Some(25),
            "{l}"
        );
        // A sub-range verifies from its predecessor's hash, with the checkpoints inside it.
        let r = verify(db, Some(11), Some(20), &key()).await.unwrap();
        assert!(
            r.ok && r.entries_checked == 10 && r.checkpoints_checked == 1,
            "{l}: {r:?}"
        );
        t.cleanup().await;
    }
}

/// A fresh chain of 12 entries sealed in segments of 4, then `tamper`; what verify says.
async fn tampered(db: &Db, tamper: &str) -> (i64, Problem) {
    fill(db, 12).await;
    seal(db, &SEED, &opts(4), T0 + 100, false).await.unwrap();
    for sql in tamper.split(';').filter(|s| !s.trim().is_empty()) {
        exec(db, sql).await;
    }
    let r = verify(db, None, None, &key()).await.unwrap();
    assert!(!r.ok, "{tamper}: {r:?}");
    let b = r.first_break.unwrap();
    assert!(!b.detail.is_empty());
    (b.seq, b.problem)
}

#[tokio::test]
async fn each_tampering_is_detected_and_named() {
    let cases: &[(&str, &str, (i64, Problem))] = &[
        (
            "a byte of a payload",
            "UPDATE audit_entries SET payload = REPLACE(payload, 'p5', 'p6') WHERE seq = 6",
            (6, Problem::HashMismatch),
        ),
        (
            "an entry deleted",
            "DELETE FROM audit_entries WHERE seq = 7",
            (7, Problem::MissingEntry),
        ),
        (
            "two entries reordered",
            "UPDATE audit_entries SET seq = -5 WHERE seq = 5; \
             UPDATE audit_entries SET seq = 5 WHERE seq = 6; \
             UPDATE audit_entries SET seq = 6 WHERE seq = -5",
            (5, Problem::BrokenLink),
        ),
        (
            "the tail truncated",
            "DELETE FROM audit_entries WHERE seq >= 11",
            (11, Problem::MissingEntry),
        ),
        (
            "a checkpoint deleted",
            "DELETE FROM audit_checkpoints WHERE seq_to = 4",
            (1, Problem::CheckpointGap),
        ),
    ];
    for t in all_dbs("audit_tamper").await {
        for (what, sql, want) in cases {
            let fresh = t.reopen().await;
            // Every case on a clean log of its own.
            exec(&fresh, "DELETE FROM audit_entries").await;
            exec(&fresh, "DELETE FROM audit_checkpoints").await;
            exec(
                &fresh,
                "UPDATE audit_head SET next_seq = 1, checkpointed_seq = 0, \
                 head_hash = '0000000000000000000000000000000000000000000000000000000000000000'",
            )
            .await;
            assert_eq!(tampered(&fresh, sql).await, *want, "{}: {what}", t.label);
            fresh.pool.close().await;
        }
        t.cleanup().await;
    }
}

#[tokio::test]
async fn a_forged_checkpoint_and_a_rewritten_chain_are_detected() {
    for t in all_dbs("audit_forge").await {
        let (db, l) = (&t.db, t.label);
        fill(db, 12).await;
        seal(db, &SEED, &opts(4), T0 + 100, false).await.unwrap();
        // Rewrite entry 6 and re-chain everything after it (what someone with database access
        // but not the key can do): every link and hash checks, the checkpoint does not.
        let mut rows = store::entries(db, 1, 100).await.unwrap();
        rows[5].payload = rows[5].payload.replace("p5", "p9");
        let mut prev = chain::from_hex(&rows[4].hash).unwrap();
        for e in rows.iter_mut().skip(5) {
            e.prev_hash = chain::to_hex(&prev);
            prev = chain::entry_hash(&chain::Fields {
                seq: e.seq,
                ts_ms: e.ts_ms,
                kind: &e.kind,
                subject: &e.subject,
                payload: &e.payload,
                prev_hash: &chain::from_hex(&e.prev_hash).unwrap(),
            });
            e.hash = chain::to_hex(&prev);
            sqlx::query(
                "UPDATE audit_entries SET payload = $1, prev_hash = $2, hash = $3 WHERE seq = $4",
            )
            .bind(&e.payload)
            .bind(&e.prev_hash)
            .bind(&e.hash)
            .bind(e.seq)
            .execute(&db.pool)
            .await
            .unwrap();
        }
        sqlx::query("UPDATE audit_head SET head_hash = $1")
            .bind(chain::to_hex(&prev))
            .execute(&db.pool)
            .await
            .unwrap();
        let r = verify(db, None, None, &key()).await.unwrap();
        let b = r.first_break.unwrap();
        assert_eq!((b.seq, b.problem), (8, Problem::CheckpointMismatch), "{l}");
        assert_eq!(r.last_verified_checkpoint.map(|c| c.seq_to), Some(4), "{l}");
        // ... and re-signing the checkpoints needs the key: one signed with another key fails.
        let other = [8u8; 32];
        for c in store::checkpoints(db, 1, 12).await.unwrap() {
            let mut f = c.clone();
            let hashes: Vec<_> = rows[(c.seq_from - 1) as usize..c.seq_to as usize]
                .iter()
                .map(|e| chain::from_hex(&e.hash).unwrap())
                .collect();
            f.head_hash = rows[(c.seq_to - 1) as usize].hash.clone();
            f.segment_root = chain::to_hex(&chain::merkle_root(&hashes));
            f.signature = crate::registry::keys::sign_artifact(&f.message(), &other);
            sqlx::query("UPDATE audit_checkpoints SET head_hash = $1, segment_root = $2, signature = $3 WHERE seq_to = $4")
                .bind(&f.head_hash)
                .bind(&f.segment_root)
                .bind(&f.signature)
                .bind(f.seq_to)
                .execute(&db.pool)
                .await
                .unwrap();
        }
        let r = verify(db, None, None, &key()).await.unwrap();
        let b = r.first_break.unwrap();
        assert_eq!((b.seq, b.problem), (4, Problem::CheckpointSignature), "{l}");
        t.cleanup().await;
    }
}

#[tokio::test]
async fn concurrent_appenders_on_two_pools_never_fork_the_chain() {
    for t in all_dbs("audit_concurrent").await {
        let l = t.label;
        let pools = [t.reopen().await, t.reopen().await];
        let mut tasks = Vec::new();
        for (p, db) in pools.iter().enumerate() {
            for w in 0..4 {
                let db = db.clone();
                tasks.push(tokio::spawn(async move {
                    for i in 0..25 {
                        store::record(&db, &label_event(p * 1000 + w * 100 + i), T0)
                            .await
                            .unwrap();
                    }
                }));
            }
        }
        for task in tasks {
            task.await.unwrap();
        }
        let r = verify(&t.db, None, None, &key()).await.unwrap();
        assert!(r.ok, "{l}: {r:?}");
        assert_eq!((r.entries_checked, r.to_seq), (200, 200), "{l}");
        for db in pools {
            db.pool.close().await;
        }
        t.cleanup().await;
    }
}

#[tokio::test]
async fn an_append_inside_a_rolled_back_transaction_leaves_nothing() {
    for t in all_dbs("audit_rollback").await {
        let (db, l) = (&t.db, t.label);
        fill(db, 2).await;
        let mut conn = db.pool.acquire().await.unwrap();
        let mut tx = sqlx::Acquire::begin(&mut *conn).await.unwrap();
        store::append(&mut tx, &label_event(9), T0).await.unwrap();
        tx.rollback().await.unwrap();
        drop(conn);
        fill(db, 1).await;
        let r = verify(db, None, None, &key()).await.unwrap();
        assert!(r.ok && r.to_seq == 3, "{l}: {r:?}");
        t.cleanup().await;
    }
}

/// Every number of `v` sits in an object that has a `source`, or inside a `source`.
fn unsourced_numbers(v: &serde_json::Value, path: &str, sourced: bool, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Number(_) if !sourced => out.push(path.to_string()),
        serde_json::Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                unsourced_numbers(x, &format!("{path}[{i}]"), sourced, out);
            }
        }
        serde_json::Value::Object(m) => {
            let here = sourced || m.contains_key("source");
            for (k, x) in m {
                unsourced_numbers(x, &format!("{path}.{k}"), here || k == "source", out);
            }
        }
        _ => {}
    }
}

#[test]
fn the_source_walk_finds_a_bare_number() {
    let mut out = Vec::new();
    let v =
        serde_json::json!({"a": [{"value": 1, "source": {"query": "q", "n": 2}}], "b": {"c": 3}});
    unsourced_numbers(&v, "", false, &mut out);
    assert_eq!(out, vec![".b.c".to_string()]);
}

#[tokio::test]
async fn live_routes_hooks_and_a_sourced_compliance_report() {
    use crate::api::tests::{admin, config, read_token};
    let tmp = tempfile::tempdir().unwrap();
    let r = crate::server::start(&config(tmp.path())).await.unwrap();
    let tok = read_token(tmp.path());
    // Decisions through the ingest listener: their batches are recorded.
    let mut pcs_ids = Vec::new();
    for i in 0..4 {
        let body = crate::testutil::pcs_body(&format!("audit-{i}"));
        let (result, cacheable) = crate::testutil::gate_result(&body);
        let a = crate::api::tests::http(
            "POST",
            format!("http://{}{}", r.ingest_addr, kakeya_core::SUBMIT_PATH),
            vec![
                ("x-kakeya-result".into(), result),
                ("x-kakeya-cacheable".into(), cacheable.to_string()),
                ("x-kakeya-tenant".into(), "acme".into()),
            ],
            body.clone(),
        )
        .await;
        assert!(a.status < 300, "{}", a.body);
        pcs_ids.push(kakeya_core::parse(body.as_bytes()).unwrap().pcs_id);
    }
    // Labels through the review code path.
    use crate::review::{Label, NewLabel};
    for (i, id) in pcs_ids.iter().take(2).enumerate() {
        let lab = if i == 0 {
            Label::Hallucinated
        } else {
            Label::Faithful
        };
        let l = NewLabel::review("acme", id, lab, "alice", Some("<b>checked</b>")).unwrap();
        crate::review::submit(&r.db, &l, crate::now_ms())
            .await
            .unwrap();
    }
    let page = admin(&r, "GET", "/v1/audit/entries?limit=100", Some(&tok)).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let kinds: Vec<String> = page.json()["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect();
    assert!(kinds.iter().any(|k| k == "decision_batch"), "{kinds:?}");
    assert_eq!(
        kinds.iter().filter(|k| *k == "label_recorded").count(),
        2,
        "{kinds:?}"
    );
    let rows: u64 = page.json()["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "decision_batch")
        .map(|e| {
            serde_json::from_str::<serde_json::Value>(e["payload"].as_str().unwrap()).unwrap()
                ["rows"]
                .as_u64()
                .unwrap()
        })
        .sum();
    assert_eq!(rows, 4, "one leaf per fresh decision row");
    // Paging.
    let p1 = admin(&r, "GET", "/v1/audit/entries?limit=1", Some(&tok))
        .await
        .json();
    assert_eq!(p1["entries"].as_array().unwrap().len(), 1);
    assert_eq!(p1["next_from_seq"], 2);
    for bad in [
        "/v1/audit/entries?limit=0",
        "/v1/audit/entries?from_seq=0",
        "/v1/audit/verify?from=5&to=2",
        "/v1/audit/verify?nope=1",
        "/v1/compliance/report?framework=hipaa&from=2026-01-01T00:00:00Z&to=2026-02-01T00:00:00Z",
        "/v1/compliance/report?framework=soc2&from=yesterday&to=2026-02-01T00:00:00Z",
    ] {
        let a = admin(&r, "GET", bad, Some(&tok)).await;
        assert_eq!(a.status, 400, "{bad}: {}", a.body);
        assert_eq!(a.json()["code"], "bad_request", "{bad}");
    }
    assert_eq!(admin(&r, "GET", "/v1/audit/verify", None).await.status, 401);
    assert_eq!(
        admin(&r, "GET", "/v1/audit/checkpoints/latest", Some(&tok))
            .await
            .status,
        404
    );
    // Seal (what the leader's job does at rotation or cadence) and export the checkpoint.
    let seed = crate::registry::keys::load_seed(&tmp.path().join("keys/seed")).unwrap();
    seal(
        &r.db,
        &seed,
        &AuditOptions::default(),
        crate::now_ms(),
        true,
    )
    .await
    .unwrap();
    let anchor = admin(&r, "GET", "/v1/audit/checkpoints/latest", Some(&tok))
        .await
        .json();
    assert_eq!(anchor["format"], "kakeya-audit-anchor-v1");
    assert_eq!(
        anchor["message_imprint"]["hashed_message"],
        anchor["checkpoint"]["head_hash"]
    );
    let v = admin(&r, "GET", "/v1/audit/verify", Some(&tok))
        .await
        .json();
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["checkpoints_checked"], 1);
    // The report over a period holding all of it.
    let (from, to) = (
        crate::learn::rfc3339(crate::now_ms() - 3_600_000),
        crate::learn::rfc3339(crate::now_ms() + 60_000),
    );
    let q = format!("/v1/compliance/report?framework=soc2&from={from}&to={to}");
    let rep = admin(&r, "GET", &q, Some(&tok)).await;
    assert_eq!(rep.status, 200, "{}", rep.body);
    let rep = rep.json();
    let mut bare = Vec::new();
    unsourced_numbers(&rep, "", false, &mut bare);
    assert!(bare.is_empty(), "numbers without a source: {bare:?}");
    let ids: Vec<&str> = rep["queries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["id"].as_str().unwrap())
        .collect();
    let status = |id: &str| {
        rep["controls"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == id)
            .unwrap()["status"]
            .clone()
    };
    for c in rep["controls"].as_array().unwrap() {
        for e in c["evidence"].as_array().unwrap() {
            assert!(ids.contains(&e["source"]["query"].as_str().unwrap()), "{e}");
        }
    }
    let figure = |id: &str, name: &str| -> i64 {
        let c = rep["controls"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == id)
            .unwrap();
        let e = c["evidence"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .unwrap();
        e["value"].as_i64().unwrap()
    };
    // The server's drift job ran at start (the leader runs it at once) and alerted nothing.
    let checks = figure("CC7.4", "drift.checks");
    assert_eq!(
        status("CC7.4"),
        if checks > 0 { "pass" } else { "no_evidence" }
    );
    // Every alias move of the period is in the audit log.
    let moves = figure("CC8.2", "changes.alias_moves");
    assert_eq!(moves, figure("CC8.2", "audit.alias_moved"));
    assert_eq!(
        status("CC8.2"),
        if moves > 0 { "pass" } else { "no_evidence" }
    );
    let decisions = rep["controls"][3]["evidence"][0].clone();
    assert_eq!(
        (decisions["name"].clone(), decisions["value"].clone()),
        ("decisions.total".into(), 4.into())
    );
    let batches = rep["audit"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "audit.decision_batch")
        .unwrap()
        .clone();
    assert_eq!(batches["source"]["audit"]["verified"], true, "{batches}");
    assert!(batches["source"]["audit"]["checkpoint"]["signature"].is_string());
    assert_ne!(
        status("PI1.4"),
        "no_evidence",
        "a decision is labelled hallucinated"
    );
    let iso = admin(&r, "GET", &q.replace("soc2", "iso27001"), Some(&tok))
        .await
        .json();
    let iso_ids: Vec<&str> = iso["controls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(iso_ids, ["A.12.6.1", "A.14.2.1", "A.15.3.1"]);
    // HTML: rendered on the server, self-contained, escaped.
    let h = crate::api::tests::http(
        "GET",
        format!("http://{}{q}&format=html", r.admin_addr),
        crate::api::tests::bearer(&tok),
        String::new(),
    )
    .await;
    assert_eq!(h.status, 200);
    assert!(h.body.starts_with("<!doctype html>") && h.body.contains("CC9.1"));
    assert!(
        !h.body.contains("<script") && !h.body.contains("http://") && !h.body.contains("https://")
    );
    assert!(
        h.body.contains("l.label = &#39;hallucinated&#39;"),
        "SQL is escaped"
    );
    // The metrics count what happened.
    let m = admin(&r, "GET", "/metrics", Some(&tok)).await.body;
    assert!(
        m.contains("kakeya_audit_entries_total{kind=\"label_recorded\"}"),
        "{m}"
    );
    assert!(m.contains("kakeya_audit_checkpoints_total"));
    assert!(m.contains("kakeya_audit_verify_failures_total"));
    r.shutdown().await.unwrap();
}
