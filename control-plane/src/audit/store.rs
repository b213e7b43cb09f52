//! Appends, seals and reads. Only INSERTs touch `audit_entries` and `audit_checkpoints`.
//!
//! **Serialisation.** An append first UPDATEs the one `audit_head` row (next seq, head hash)
//! inside its transaction: on PostgreSQL that row lock is held to the commit, so appenders of
//! every replica queue behind each other (the same as `SELECT … FOR UPDATE`); SQLite takes its
//! single write lock at that UPDATE. The next appender therefore always reads the committed
//! head, and the chain cannot fork. Called inside a caller's transaction, the append is a
//! savepoint of it and commits or rolls back with the event it records.

use super::chain::{self, Fields, Hash};
use super::Event;
use crate::store::Db;
use serde::Serialize;
use sqlx::{Acquire, AnyConnection, Row};

/// One stored entry, as `GET /v1/audit/entries` serves it.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[schema(as = AuditEntry)]
pub struct Entry {
    pub seq: i64,
    pub ts_ms: i64,
    pub kind: String,
    pub subject: String,
    /// The event's fields, as stored (compact JSON text; hashed byte for byte).
    pub payload: String,
    pub prev_hash: String,
    pub hash: String,
}

/// A sealed segment's signed checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[schema(as = AuditCheckpoint)]
pub struct Checkpoint {
    pub seq_from: i64,
    pub seq_to: i64,
    /// Hash of entry `seq_to` (the chain head when it was sealed).
    pub head_hash: String,
    /// RFC 6962 root over the hashes of entries `seq_from..=seq_to`.
    pub segment_root: String,
    pub created_at_ms: i64,
    pub key_id: String,
    /// Standard base64 Ed25519 public key.
    pub public_key: String,
    /// Standard base64 Ed25519 signature of SHA-256([`chain::checkpoint_message`]).
    pub signature: String,
}

impl Checkpoint {
    pub fn message(&self) -> Vec<u8> {
        chain::checkpoint_message(
            self.seq_from,
            self.seq_to,
            &self.head_hash,
            &self.segment_root,
            self.created_at_ms,
            &self.key_id,
        )
    }
}

/// The head row.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[schema(as = AuditHead)]
pub struct Head {
    /// The last entry's seq (0 when the log is empty).
    pub seq: i64,
    pub head_hash: String,
    /// The last sealed seq.
    pub checkpointed_seq: i64,
}

/// Appends `e` at `now_ms` (see the module docs); the stored entry.
pub async fn append(
    conn: &mut AnyConnection,
    e: &Event,
    now_ms: i64,
) -> Result<Entry, sqlx::Error> {
    let (kind, payload) = e.kind_and_payload();
    let subject = e.subject();
    let mut tx = conn.begin().await?;
    let row = sqlx::query(
        "UPDATE audit_head SET next_seq = next_seq + 1 WHERE id = 1 \
         RETURNING next_seq - 1 AS seq, head_hash",
    )
    .fetch_one(&mut *tx)
    .await?;
    let seq: i64 = row.try_get("seq")?;
    let prev_hex: String = row.try_get("head_hash")?;
    let prev = chain::from_hex(&prev_hex).ok_or_else(|| decode("audit_head.head_hash"))?;
    let hash = chain::to_hex(&chain::entry_hash(&Fields {
        seq,
        ts_ms: now_ms,
        kind: &kind,
        subject: &subject,
        payload: &payload,
        prev_hash: &prev,
    }));
    sqlx::query("UPDATE audit_head SET head_hash = $1 WHERE id = 1")
        .bind(&hash)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO audit_entries (seq, ts_ms, kind, subject, payload, prev_hash, hash) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(seq)
    .bind(now_ms)
    .bind(&kind)
    .bind(&subject)
    .bind(&payload)
    .bind(&prev_hex)
    .bind(&hash)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    super::metrics::entries_total()
        .with_label_values(&[kind.as_str()])
        .inc();
    Ok(Entry {
        seq,
        ts_ms: now_ms,
        kind,
        subject,
        payload,
        prev_hash: prev_hex,
        hash,
    })
}

/// [`append`] in a transaction of its own, for events stored outside one.
pub async fn record(db: &Db, e: &Event, now_ms: i64) -> Result<Entry, sqlx::Error> {
    let mut conn = db.pool.acquire().await?;
    append(&mut conn, e, now_ms).await
}

fn decode(col: &str) -> sqlx::Error {
    sqlx::Error::ColumnDecode {
        index: col.into(),
        source: "not a 64-digit hex hash".into(),
    }
}

/// The leaf hash of one decision-log row in a [`Event::DecisionBatch`]:
/// SHA-256 over lp(record_id) lp(tenant) lp(pcs_id) be16(status) accepted escalated
/// be64(created_at_ms), the row's identity and verdict (lp = be32 length ‖ UTF-8).
pub fn decision_leaf(
    record_id: &str,
    tenant: &str,
    pcs_id: &str,
    status: u16,
    accepted: bool,
    escalated: bool,
    created_at_ms: i64,
) -> Hash {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for s in [record_id, tenant, pcs_id] {
        h.update((s.len() as u32).to_be_bytes());
        h.update(s.as_bytes());
    }
    h.update(status.to_be_bytes());
    h.update([u8::from(accepted), u8::from(escalated)]);
    h.update(created_at_ms.to_be_bytes());
    h.finalize().into()
}

/// (record id, row hash, disagreed) of each fresh row among a batch's results, in order.
pub fn batch_rows<'a>(
    ids: impl Iterator<Item = &'a str>,
    results: impl Iterator<Item = Option<&'a crate::store::Applied>>,
) -> Vec<(&'a str, Hash, bool)> {
    ids.zip(results)
        .filter_map(|(id, a)| {
            let a = a?;
            Some((id, a.row_hash?, a.disagreed))
        })
        .collect()
}

/// Records one committed ingest batch (inside its transaction): a [`Event::DecisionBatch`]
/// over its fresh rows, and a [`Event::EnsembleDisagreements`] when some disagreed. Nothing
/// when the batch wrote no row.
pub async fn record_batch(
    conn: &mut AnyConnection,
    rows: &[(&str, Hash, bool)],
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let leaves: Vec<Hash> = rows.iter().map(|r| r.1).collect();
    let batch = Event::DecisionBatch {
        rows: rows.len() as u64,
        merkle_root: chain::to_hex(&chain::merkle_root(&leaves)),
        record_ids: rows.iter().map(|r| r.0.to_string()).collect(),
    };
    append(conn, &batch, now_ms).await?;
    let split: Vec<String> = rows
        .iter()
        .filter(|r| r.2)
        .map(|r| r.0.to_string())
        .collect();
    if !split.is_empty() {
        let e = Event::EnsembleDisagreements {
            count: split.len() as u64,
            record_ids: split,
        };
        append(conn, &e, now_ms).await?;
    }
    Ok(())
}

fn entry(r: &sqlx::any::AnyRow) -> Result<Entry, sqlx::Error> {
    Ok(Entry {
        seq: r.try_get("seq")?,
        ts_ms: r.try_get("ts_ms")?,
        kind: r.try_get("kind")?,
        subject: r.try_get("subject")?,
        payload: r.try_get("payload")?,
        prev_hash: r.try_get("prev_hash")?,
        hash: r.try_get("hash")?,
    })
}

pub(super) const ENTRY_COLUMNS: &str = "seq, ts_ms, kind, subject, payload, prev_hash, hash";

/// Entries from `from_seq` on, in order, at most `limit`.
pub async fn entries(db: &Db, from_seq: i64, limit: i64) -> Result<Vec<Entry>, sqlx::Error> {
    sqlx::query(&format!(
        "SELECT {ENTRY_COLUMNS} FROM audit_entries WHERE seq >= $1 ORDER BY seq LIMIT $2"
    ))
    .bind(from_seq)
    .bind(limit)
    .fetch_all(&db.pool)
    .await?
    .iter()
    .map(entry)
    .collect()
}

pub(super) fn checkpoint(r: &sqlx::any::AnyRow) -> Result<Checkpoint, sqlx::Error> {
    Ok(Checkpoint {
        seq_from: r.try_get("seq_from")?,
        seq_to: r.try_get("seq_to")?,
        head_hash: r.try_get("head_hash")?,
        segment_root: r.try_get("segment_root")?,
        created_at_ms: r.try_get("created_at_ms")?,
        key_id: r.try_get("key_id")?,
        public_key: r.try_get("public_key")?,
        signature: r.try_get("signature")?,
    })
}

const CHECKPOINT_COLUMNS: &str =
    "seq_from, seq_to, head_hash, segment_root, created_at_ms, key_id, public_key, signature";

/// Checkpoints whose segment lies within `[from, to]`, in order.
pub async fn checkpoints(db: &Db, from: i64, to: i64) -> Result<Vec<Checkpoint>, sqlx::Error> {
    sqlx::query(&format!(
        "SELECT {CHECKPOINT_COLUMNS} FROM audit_checkpoints \
         WHERE seq_from >= $1 AND seq_to <= $2 ORDER BY seq_to"
    ))
    .bind(from)
    .bind(to)
    .fetch_all(&db.pool)
    .await?
    .iter()
    .map(checkpoint)
    .collect()
}

/// The newest checkpoint.
pub async fn latest_checkpoint(db: &Db) -> Result<Option<Checkpoint>, sqlx::Error> {
    sqlx::query(&format!(
        "SELECT {CHECKPOINT_COLUMNS} FROM audit_checkpoints ORDER BY seq_to DESC LIMIT 1"
    ))
    .fetch_optional(&db.pool)
    .await?
    .as_ref()
    .map(checkpoint)
    .transpose()
}

/// The first checkpoint whose segment ends at or after `seq` (the one covering it).
pub async fn covering_checkpoint(db: &Db, seq: i64) -> Result<Option<Checkpoint>, sqlx::Error> {
    sqlx::query(&format!(
        "SELECT {CHECKPOINT_COLUMNS} FROM audit_checkpoints WHERE seq_to >= $1 \
         ORDER BY seq_to LIMIT 1"
    ))
    .bind(seq)
    .fetch_optional(&db.pool)
    .await?
    .as_ref()
    .map(checkpoint)
    .transpose()
}

pub async fn head(db: &Db) -> Result<Head, sqlx::Error> {
    let r = sqlx::query(
        "SELECT next_seq - 1 AS seq, head_hash, checkpointed_seq FROM audit_head WHERE id = 1",
    )
    .fetch_one(&db.pool)
    .await?;
    Ok(Head {
        seq: r.try_get("seq")?,
        head_hash: r.try_get("head_hash")?,
        checkpointed_seq: r.try_get("checkpointed_seq")?,
    })
}

/// Why a seal was refused.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("audit entries {0}..={1} are not all present or not chained: run `kakeya audit verify`; nothing sealed")]
    Broken(i64, i64),
    #[error("database: {0}")]
    Store(#[from] sqlx::Error),
}

/// Seals what is due under `opts` at `now_ms` (or, with `force`, every unsealed entry):
/// full segments of `rotate_entries` first (rotation), then the rest when its oldest entry is
/// older than `checkpoint_every` (cadence). The new checkpoints, in order. Holds the head row
/// like an append, so a seal and an append never interleave, and two replicas never seal the
/// same range.
pub async fn seal(
    db: &Db,
    seed: &[u8; 32],
    opts: &super::AuditOptions,
    now_ms: i64,
    force: bool,
) -> Result<Vec<Checkpoint>, SealError> {
    let mut conn = db.pool.acquire().await?;
    let mut tx = conn.begin().await?;
    let r = sqlx::query(
        "UPDATE audit_head SET next_seq = next_seq WHERE id = 1 \
         RETURNING next_seq - 1 AS seq, checkpointed_seq",
    )
    .fetch_one(&mut *tx)
    .await?;
    let head: i64 = r.try_get("seq")?;
    let mut sealed: i64 = r.try_get("checkpointed_seq")?;
    let rotate = i64::try_from(opts.rotate_entries)
        .unwrap_or(i64::MAX)
        .max(1);
    let cutoff = now_ms - i64::try_from(opts.checkpoint_every.as_millis()).unwrap_or(i64::MAX);
    let public_key = crate::registry::keys::public_key_b64(seed);
    let key_id = chain::key_id(&public_key);
    let mut out = Vec::new();
    while sealed < head {
        let to = if head - sealed >= rotate {
            sealed + rotate
        } else {
            let oldest: i64 = sqlx::query("SELECT ts_ms FROM audit_entries WHERE seq = $1")
                .bind(sealed + 1)
                .fetch_optional(&mut *tx)
                .await?
                .map(|r| r.try_get("ts_ms"))
                .transpose()?
                .unwrap_or(i64::MIN);
            if !force && oldest > cutoff {
                break;
            }
            head
        };
        let rows = sqlx::query(
            "SELECT seq, prev_hash, hash FROM audit_entries WHERE seq >= $1 AND seq <= $2 \
             ORDER BY seq",
        )
        .bind(sealed + 1)
        .bind(to)
        .fetch_all(&mut *tx)
        .await?;
        let mut hashes = Vec::with_capacity(rows.len());
        let mut prev: Option<String> = None;
        for (i, r) in rows.iter().enumerate() {
            let seq: i64 = r.try_get("seq")?;
            let prev_hash: String = r.try_get("prev_hash")?;
            let hash: String = r.try_get("hash")?;
            let linked = prev.as_ref().is_none_or(|p| *p == prev_hash);
            match chain::from_hex(&hash) {
                Some(h) if seq == sealed + 1 + i as i64 && linked => hashes.push(h),
                _ => return Err(SealError::Broken(sealed + 1, to)),
            }
            prev = Some(hash);
        }
        if hashes.len() as i64 != to - sealed {
            return Err(SealError::Broken(sealed + 1, to));
        }
        let mut c = Checkpoint {
            seq_from: sealed + 1,
            seq_to: to,
            head_hash: prev.unwrap_or_default(),
            segment_root: chain::to_hex(&chain::merkle_root(&hashes)),
            created_at_ms: now_ms,
            key_id: key_id.clone(),
            public_key: public_key.clone(),
            signature: String::new(),
        };
        c.signature = crate::registry::keys::sign_artifact(&c.message(), seed);
        sqlx::query(&format!(
            "INSERT INTO audit_checkpoints ({CHECKPOINT_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        ))
        .bind(c.seq_from)
        .bind(c.seq_to)
        .bind(&c.head_hash)
        .bind(&c.segment_root)
        .bind(c.created_at_ms)
        .bind(&c.key_id)
        .bind(&c.public_key)
        .bind(&c.signature)
        .execute(&mut *tx)
        .await?;
        sealed = to;
        out.push(c);
    }
    if !out.is_empty() {
        sqlx::query("UPDATE audit_head SET checkpointed_seq = $1 WHERE id = 1")
            .bind(sealed)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    super::metrics::checkpoints_total().inc_by(out.len() as u64);
    Ok(out)
}
