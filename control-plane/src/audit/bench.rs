//! The audit-log benchmark behind `cargo xtask bench --audit` (docs/BENCHMARKS.md), on a
//! fresh SQLite database in a temp directory: a chain of `n` entries built with the real
//! hash and bulk-inserted, sealed in segments of 10,000 with signed checkpoints, then
//! [`super::verify::verify`] over all of it (the read from the database, every hash and link,
//! every checkpoint's signature and Merkle root), and the same walk over entries in memory
//! (the hashing alone). Plus the rate of single appends ([`super::append`], one transaction
//! each, with the head-row lock) for a sense of the write path.

use super::chain::{self, Fields, GENESIS};
use super::verify::Walk;
use super::{AuditOptions, Event};
use crate::store::Db;
use anyhow::Context;
use serde::Serialize;
use std::time::{Duration, Instant};

const SEED: [u8; 32] = [7; 32];
const T0: i64 = 1_800_000_000_000;
/// Entries per sealed segment in the benchmark.
pub const SEGMENT: u64 = 10_000;

#[derive(Debug, Clone, Serialize)]
pub struct AuditBench {
    pub entries: u64,
    pub checkpoints: u64,
    /// Mean payload bytes of an entry.
    pub payload_bytes: u64,
    pub build_secs: f64,
    pub seal_secs: f64,
    /// `verify` from the database: read + hashes + links + checkpoints.
    pub verify_secs: f64,
    pub verify_ok: bool,
    /// The walk over entries in memory (hashing and links only).
    pub walk_secs: f64,
    pub appends: u64,
    pub appends_per_sec: f64,
    /// The same chain on PostgreSQL (when `KAKEYA_AUDIT_BENCH_PG` names a server):
    /// `verify` from it, seconds, and whether all verified.
    pub postgres_verify_secs: Option<f64>,
    pub postgres_verify_ok: Option<bool>,
}

/// The variable naming a PostgreSQL server for the bench's second half (a URL; a schema of
/// its own is created and dropped).
pub const PG_VAR: &str = "KAKEYA_AUDIT_BENCH_PG";

fn payload(i: u64) -> (String, String, String) {
    let e = Event::LabelRecorded {
        tenant: format!("tenant-{}", i % 50),
        pcs_id: format!("{:064x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
        labeller: "reviewer@example.com".into(),
        source: "gold".into(),
        label: if i % 3 == 0 {
            "hallucinated"
        } else {
            "faithful"
        }
        .into(),
    };
    let (kind, payload) = e.kind_and_payload();
    (kind, e.subject(), payload)
}

/// Runs the benchmark with `n` entries and `appends` single appends.
pub async fn run(n: u64, appends: u64) -> anyhow::Result<AuditBench> {
    let dir = std::env::temp_dir().join(format!(
        "kakeya-audit-bench-{}-{}",
        std::process::id(),
        crate::now_ms()
    ));
    std::fs::create_dir_all(&dir).context("temp dir")?;
    let out = run_in(&dir, n, appends).await;
    let _ = std::fs::remove_dir_all(&dir);
    out
}

/// One stored entry of the built chain, kept for the in-memory walk.
type Built = (i64, i64, String, String, String, chain::Hash, String);

/// Builds a chain of `n` entries into `db` (bulk inserts); the entries, mean payload bytes.
async fn build(db: &Db, n: u64) -> anyhow::Result<(Vec<Built>, u64)> {
    let mut prev = GENESIS;
    let mut mem = Vec::with_capacity(n as usize);
    let mut bytes = 0u64;
    let mut conn = db.pool.acquire().await?;
    let mut tx = sqlx::Acquire::begin(&mut *conn).await?;
    let mut rows = Vec::with_capacity(500);
    for i in 0..n {
        let seq = i as i64 + 1;
        let ts = T0 + i as i64;
        let (kind, subject, payload) = payload(i);
        bytes += payload.len() as u64;
        let h = chain::entry_hash(&Fields {
            seq,
            ts_ms: ts,
            kind: &kind,
            subject: &subject,
            payload: &payload,
            prev_hash: &prev,
        });
        rows.push(format!(
            "({seq}, {ts}, '{kind}', '{subject}', '{}', '{}', '{}')",
            payload.replace('\'', "''"),
            chain::to_hex(&prev),
            chain::to_hex(&h)
        ));
        mem.push((seq, ts, kind, subject, payload, prev, chain::to_hex(&h)));
        prev = h;
        if rows.len() == 500 || i + 1 == n {
            sqlx::query(&format!(
                "INSERT INTO audit_entries (seq, ts_ms, kind, subject, payload, prev_hash, hash) VALUES {}",
                rows.join(", ")
            ))
            .execute(&mut *tx)
            .await?;
            rows.clear();
        }
    }
    sqlx::query("UPDATE audit_head SET next_seq = $1, head_hash = $2 WHERE id = 1")
        .bind(n as i64 + 1)
        .bind(chain::to_hex(&prev))
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok((mem, bytes / n.max(1)))
}

/// Builds, seals and verifies a chain of `n` entries on PostgreSQL at `url`, in a schema of
/// its own; (verify seconds, all verified).
async fn postgres(url: &str, n: u64) -> anyhow::Result<(f64, bool)> {
    let schema = format!("audit_bench_{}_{}", std::process::id(), crate::now_ms());
    let admin = Db::connect(url, None).await?;
    sqlx::query(&format!("CREATE SCHEMA \"{schema}\""))
        .execute(&admin.pool)
        .await?;
    let out = async {
        let db = Db::connect(url, Some(&schema)).await?;
        build(&db, n).await?;
        let opts = AuditOptions {
            checkpoint_every: Duration::from_secs(1),
            rotate_entries: SEGMENT,
        };
        super::store::seal(&db, &SEED, &opts, T0 + n as i64 + 10_000, true).await?;
        let key = crate::registry::keys::public_key_b64(&SEED);
        let t = Instant::now();
        let r = super::verify::verify(&db, None, None, &key).await?;
        let secs = t.elapsed().as_secs_f64();
        db.pool.close().await;
        anyhow::Ok((secs, r.ok && r.entries_checked == n))
    }
    .await;
    sqlx::query(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .execute(&admin.pool)
        .await?;
    admin.pool.close().await;
    out
}

async fn run_in(dir: &std::path::Path, n: u64, appends: u64) -> anyhow::Result<AuditBench> {
    let url = format!("sqlite://{}/audit.db?mode=rwc", dir.display());
    let db = Db::connect(&url, None).await?;
    let t = Instant::now();
    let (mem, payload_bytes) = build(&db, n).await?;
    let build_secs = t.elapsed().as_secs_f64();
    let opts = AuditOptions {
        checkpoint_every: Duration::from_secs(1),
        rotate_entries: SEGMENT,
    };
    let t = Instant::now();
    let sealed = super::store::seal(&db, &SEED, &opts, T0 + n as i64 + 10_000, true).await?;
    let seal_secs = t.elapsed().as_secs_f64();
    let key = crate::registry::keys::public_key_b64(&SEED);
    let t = Instant::now();
    let r = super::verify::verify(&db, None, None, &key).await?;
    let verify_secs = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut w = Walk::new(1, GENESIS);
    for (seq, ts, kind, subject, payload, prev, hash) in &mem {
        let f = Fields {
            seq: *seq,
            ts_ms: *ts,
            kind,
            subject,
            payload,
            prev_hash: prev,
        };
        if !w.step(&f, hash) {
            break;
        }
    }
    let walk_secs = t.elapsed().as_secs_f64();
    anyhow::ensure!(
        w.broken.is_none(),
        "the in-memory walk broke: {:?}",
        w.broken
    );
    let t = Instant::now();
    for i in 0..appends {
        let e = Event::BillingImport {
            job_id: format!("bench-{i}"),
            status: "succeeded".into(),
        };
        super::store::record(&db, &e, T0 + (n + i) as i64).await?;
    }
    let append_secs = t.elapsed().as_secs_f64();
    db.pool.close().await;
    let pg = match std::env::var(PG_VAR) {
        Ok(url) if !url.trim().is_empty() => Some(postgres(url.trim(), n).await?),
        _ => None,
    };
    Ok(AuditBench {
        entries: n,
        checkpoints: sealed.len() as u64,
        payload_bytes,
        build_secs,
        seal_secs,
        verify_secs,
        verify_ok: r.ok && r.entries_checked == n,
        walk_secs,
        appends,
        appends_per_sec: appends as f64 / append_secs.max(1e-9),
        postgres_verify_secs: pg.map(|p| p.0),
        postgres_verify_ok: pg.map(|p| p.1),
    })
}
