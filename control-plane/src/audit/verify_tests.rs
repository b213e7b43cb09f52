//! Verification beyond the basics, on SQLite and PostgreSQL: the parallel walk names the same
//! first break as one sequential walk, key rotation keeps old checkpoints verifiable while an
//! unknown key still fails (named), deep verification catches an altered decision-log row,
//! and budget-action and import entries commit or roll back with their action.

use super::chain;
use super::keyring::{self, Keyring};
use super::store::{self, seal};
use super::verify::{verify, verify_with, walk_range, Problem};
use super::{AuditOptions, Event};
use crate::registry::keys::{public_key_b64, sign_artifact};
use crate::store::Db;
use crate::testutil::all_dbs;
use std::time::Duration;

const SEED: [u8; 32] = [7; 32];
const NEW: [u8; 32] = [11; 32];
const STRANGER: [u8; 32] = [13; 32];
const T0: i64 = 1_780_000_000_000;

fn opts(rotate: u64) -> AuditOptions {
    AuditOptions {
        checkpoint_every: Duration::from_secs(3600),
        rotate_entries: rotate,
    }
}

async fn fill(db: &Db, from: usize, n: usize) {
    for i in from..from + n {
        let e = Event::BillingImport {
            job_id: format!("job-{i}"),
            status: "succeeded".into(),
        };
        store::record(db, &e, T0 + i as i64).await.unwrap();
    }
}

async fn exec(db: &Db, sql: &str) {
    sqlx::query(sql).execute(&db.pool).await.unwrap();
}

async fn reset(db: &Db) {
    exec(db, "DELETE FROM audit_entries").await;
    exec(db, "DELETE FROM audit_checkpoints").await;
    exec(db, "DELETE FROM audit_keys").await;
    exec(
        db,
        "UPDATE audit_head SET next_seq = 1, checkpointed_seq = 0, \
         head_hash = '0000000000000000000000000000000000000000000000000000000000000000'",
    )
    .await;
}

#[tokio::test]
async fn parallel_parts_name_the_same_first_break_as_one_walk() {
    // Tampering at part boundaries (parts of 7 and 6 entries for 20 entries in 3 parts: the
    // boundaries are 8 and 15) and inside parts, each walked in 1..=4 parts and with 1..=3
    // entries per query: the break is the one-part walk's, seq, problem and detail.
    let cases = [
        "",
        "UPDATE audit_entries SET payload = REPLACE(payload, 'job-7', 'job-9') WHERE seq = 8",
        "UPDATE audit_entries SET payload = REPLACE(payload, 'job-6', 'job-9') WHERE seq = 7",
        "DELETE FROM audit_entries WHERE seq = 7",
        "DELETE FROM audit_entries WHERE seq = 8",
        "DELETE FROM audit_entries WHERE seq >= 7 AND seq <= 16",
        "UPDATE audit_entries SET prev_hash = hash WHERE seq = 15",
        "UPDATE audit_entries SET seq = -1 WHERE seq = 14; \
         UPDATE audit_entries SET seq = 14 WHERE seq = 15; \
         UPDATE audit_entries SET seq = 15 WHERE seq = -1",
        "DELETE FROM audit_entries WHERE seq >= 18",
    ];
    for t in all_dbs("audit_parts").await {
        let (db, l) = (&t.db, t.label);
        for sql in cases {
            reset(db).await;
            fill(db, 0, 20).await;
            for q in sql.split(';').filter(|q| !q.trim().is_empty()) {
                exec(db, q).await;
            }
            let one = walk_range(db, (1, 20), chain::GENESIS, 1, 1000)
                .await
                .unwrap();
            for parts in 1..=4 {
                for chunk in 1..=3 {
                    let w = walk_range(db, (1, 20), chain::GENESIS, parts, chunk)
                        .await
                        .unwrap();
                    assert_eq!(
                        (&w.broken, w.last_seq(), &w.hashes),
                        (&one.broken, one.last_seq(), &one.hashes),
                        "{l}: {sql}: {parts} parts of {chunk}"
                    );
                }
            }
            // Each tampering shows: a break, or (the truncated tail) a walk that ends early.
            let clean = one.broken.is_none() && one.last_seq() == 20;
            assert_eq!(clean, sql.is_empty(), "{l}: {sql}");
        }
        t.cleanup().await;
    }
}

#[tokio::test]
async fn rotated_keys_verify_and_an_unknown_key_fails_named() {
    for t in all_dbs("audit_rotate").await {
        let (db, l) = (&t.db, t.label);
        let (old_id, new_id) = (
            chain::key_id(&public_key_b64(&SEED)),
            chain::key_id(&public_key_b64(&NEW)),
        );
        fill(db, 0, 10).await;
        seal(db, &SEED, &opts(4), T0 + 100, false).await.unwrap();
        // Rotation seals the rest (9..=10) with the old key and records itself (entry 11).
        let retired = keyring::rotate(db, &SEED, &NEW, T0 + 200).await.unwrap();
        assert_eq!(retired.key_id, old_id, "{l}");
        fill(db, 20, 3).await;
        seal(db, &NEW, &opts(4), T0 + 300, true).await.unwrap();
        let last = store::entries(db, 11, 1).await.unwrap();
        assert_eq!(last[0].kind, "key_rotated", "{l}");
        let r = verify(db, None, None, &public_key_b64(&NEW)).await.unwrap();
        assert!(r.ok, "{l}: {r:?}");
        assert_eq!(
            (r.checkpoints_checked, r.trusted_key_ids.clone()),
            (4, vec![new_id.clone(), old_id.clone()]),
            "{l}"
        );
        // Without the keyring (the current key alone), the old checkpoints are unknown.
        let ring = Keyring::current(&public_key_b64(&NEW));
        let c = store::checkpoints(db, 1, 4).await.unwrap().remove(0);
        assert!(ring.check(&c).unwrap().contains(&old_id), "{l}");
        // A forged retirement (endorsed by the stranger itself, not by a trusted key) is
        // ignored, and a checkpoint the stranger signs fails naming its key.
        let spk = public_key_b64(&STRANGER);
        let sid = chain::key_id(&spk);
        let forged = sign_artifact(
            &keyring::retirement_message(&sid, &spk, T0, &new_id),
            &STRANGER,
        );
        sqlx::query(
            "INSERT INTO audit_keys (key_id, public_key, retired_at_ms, successor_key_id, \
             endorsement) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&sid)
        .bind(&spk)
        .bind(T0)
        .bind(&new_id)
        .bind(&forged)
        .execute(&db.pool)
        .await
        .unwrap();
        fill(db, 30, 2).await;
        seal(db, &STRANGER, &opts(4), T0 + 400, true).await.unwrap();
        let r = verify(db, None, None, &public_key_b64(&NEW)).await.unwrap();
        let b = r.first_break.unwrap();
        assert_eq!(
            (b.seq, b.problem),
            (16, Problem::CheckpointSignature),
            "{l}"
        );
        assert!(
            b.detail.contains(&sid) && b.detail.contains("neither the current key"),
            "{l}: {}",
            b.detail
        );
        assert_eq!(r.trusted_key_ids, vec![new_id, old_id], "{l}");
        // A second rekey keeps the first retirement and appends nothing.
        let head = store::head(db).await.unwrap().seq;
        keyring::rotate(db, &SEED, &NEW, T0 + 450).await.unwrap();
        assert_eq!(store::head(db).await.unwrap().seq, head, "{l}");
        // The same key cannot succeed itself.
        assert!(
            keyring::rotate(db, &NEW, &NEW, T0 + 500).await.is_err(),
            "{l}"
        );
        t.cleanup().await;
    }
}

async fn decision(db: &Db, id: &str, accepted: i64) -> (String, chain::Hash, bool) {
    sqlx::query(
        "INSERT INTO decision_log (record_id, tenant, pcs_id, d_hat, coh_star, r, budget, \
         regime, accepted, escalated, status, cacheable, created_at_ms) \
         VALUES ($1, 'acme', $2, 0.5, 0.5, 0.5, 0.5, 'sticky', $3, 0, 200, 1, $4)",
    )
    .bind(id)
    .bind(format!("pcs-{id}"))
    .bind(accepted)
    .bind(T0)
    .execute(&db.pool)
    .await
    .unwrap();
    let leaf = store::decision_leaf(
        id,
        "acme",
        &format!("pcs-{id}"),
        200,
        accepted != 0,
        false,
        T0,
    );
    (id.to_string(), leaf, false)
}

#[tokio::test]
async fn deep_verify_recomputes_batch_roots_from_the_decision_log() {
    for t in all_dbs("audit_deep").await {
        let (db, l) = (&t.db, t.label);
        let key = public_key_b64(&SEED);
        fill(db, 0, 2).await;
        let mut batch = Vec::new();
        for (i, id) in ["r1", "r2", "r3"].iter().enumerate() {
            batch.push(decision(db, id, (i % 2) as i64).await);
        }
        let rows: Vec<(&str, chain::Hash, bool)> = batch
            .iter()
            .map(|(id, h, d)| (id.as_str(), *h, *d))
            .collect();
        let mut conn = db.pool.acquire().await.unwrap();
        store::record_batch(&mut conn, &rows, T0 + 10)
            .await
            .unwrap();
        drop(conn);
        fill(db, 5, 1).await;
        let r = verify_with(db, None, None, &key, true).await.unwrap();
        assert!(r.ok && r.deep && r.batches_checked == 1, "{l}: {r:?}");
        // One verdict flipped: the chain is intact, the batch root is not.
        exec(
            db,
            "UPDATE decision_log SET accepted = 1 - accepted WHERE record_id = 'r2'",
        )
        .await;
        let shallow = verify(db, None, None, &key).await.unwrap();
        assert!(
            shallow.ok && shallow.batches_checked == 0,
            "{l}: {shallow:?}"
        );
        let r = verify_with(db, None, None, &key, true).await.unwrap();
        let b = r.first_break.unwrap();
        assert_eq!((b.seq, b.problem), (3, Problem::BatchRootMismatch), "{l}");
        // A deleted row is named.
        exec(
            db,
            "UPDATE decision_log SET accepted = 1 - accepted WHERE record_id = 'r2'",
        )
        .await;
        exec(db, "DELETE FROM decision_log WHERE record_id = 'r3'").await;
        let b = verify_with(db, None, None, &key, true)
            .await
            .unwrap()
            .first_break
            .unwrap();
        assert_eq!(b.problem, Problem::BatchRootMismatch, "{l}");
        assert!(
            b.detail.contains("r3") && b.detail.contains("missing"),
            "{l}: {}",
            b.detail
        );
        t.cleanup().await;
    }
}

async fn kinds(db: &Db) -> Vec<String> {
    store::entries(db, 1, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect()
}

#[tokio::test]
async fn budget_actions_and_imports_commit_with_their_audit_entry_or_not_at_all() {
    use crate::cost::{billing::Provider, budgets, options::CostOptions, store as cost};
    for t in all_dbs("audit_atomic").await {
        let (db, l) = (&t.db, t.label);
        cost::insert_job(db, "job-1", Provider::Aws, (0, 1), T0)
            .await
            .unwrap();
        let b = budgets::Budget {
            tenant: "acme".into(),
            soft_cap: 10.0,
            hard_cap: 20.0,
            soft_action: "alert".into(),
            hard_action: "deny".into(),
        };
        budgets::set(db, &b, T0).await.unwrap();
        // An append that fails (the head row unreadable) rolls the action back with it.
        exec(db, "UPDATE audit_head SET head_hash = 'not-a-hash'").await;
        let body = serde_json::json!({"lines": 0});
        assert!(
            cost::finish_job(db, "job-1", Ok(&body), T0 + 1)
                .await
                .is_err(),
            "{l}"
        );
        assert!(
            budgets::recompute(db, &CostOptions::default(), T0 + 2)
                .await
                .is_err(),
            "{l}"
        );
        let job = cost::job(db, "job-1").await.unwrap().unwrap();
        assert_eq!(job.3, "running", "{l}");
        let state = budgets::list(db).await.unwrap();
        assert_eq!(state[0].action, None, "{l}");
        exec(
            db,
            "UPDATE audit_head SET head_hash = '0000000000000000000000000000000000000000000000000000000000000000'",
        )
        .await;
        assert!(kinds(db).await.is_empty(), "{l}");
        // Committed: each action has its entry.
        cost::finish_job(db, "job-1", Ok(&body), T0 + 3)
            .await
            .unwrap();
        budgets::recompute(db, &CostOptions::default(), T0 + 4)
            .await
            .unwrap();
        assert_eq!(
            cost::job(db, "job-1").await.unwrap().unwrap().3,
            "succeeded",
            "{l}"
        );
        assert_eq!(
            budgets::list(db).await.unwrap()[0].action.as_deref(),
            Some("none"),
            "{l}"
        );
        assert_eq!(
            kinds(db).await,
            vec!["billing_import", "budget_action"],
            "{l}"
        );
        let r = verify(db, None, None, &public_key_b64(&SEED))
            .await
            .unwrap();
        assert!(r.ok, "{l}: {r:?}");
        t.cleanup().await;
    }
}
