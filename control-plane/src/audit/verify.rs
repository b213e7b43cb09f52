//! Re-walks the chain and the checkpoints and names the first broken link.
//!
//! For each entry of the range, in seq order: the seq is the next one (else an entry is
//! missing), its `prev_hash` is the previous entry's hash (else the chain is broken: an entry
//! was moved, inserted or its predecessor rewritten), and its hash recomputes from its fields
//! (else the entry was altered). Then every checkpoint within the range: its signature
//! verifies with the control plane's key, and its head hash and segment root are those of the
//! walked entries (a chain rewritten consistently from some entry on still fails here, since
//! nobody without the key can sign a new checkpoint). A walk to the head also checks that the
//! head row agrees with the last entry (a truncated tail) and that checkpoints are contiguous.

use super::chain::{self, Fields, Hash, GENESIS};
use super::store::{self, Checkpoint, ENTRY_COLUMNS};
use crate::store::Db;
use futures_util::TryStreamExt;
use serde::{Deserialize, Serialize};
use sqlx::Row;

/// What is wrong at the first broken link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = AuditVerifyProblem)]
pub enum Problem {
    /// No entry with this seq (deleted, or the tail truncated).
    MissingEntry,
    /// The entry's `prev_hash` is not the previous entry's hash (reordered, inserted, or the
    /// previous entry replaced).
    BrokenLink,
    /// The entry's fields do not hash to its stored hash (altered).
    HashMismatch,
    /// A checkpoint's signature does not verify with the trusted key (forged or altered).
    CheckpointSignature,
    /// A checkpoint's head hash or segment root is not that of the stored entries.
    CheckpointMismatch,
    /// Checkpoints do not cover the log contiguously from seq 1 (one was deleted).
    CheckpointGap,
    /// The head row does not match the last entry.
    HeadMismatch,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = AuditVerifyBreak)]
pub struct Break {
    pub seq: i64,
    pub problem: Problem,
    pub detail: String,
}

/// The outcome of a verification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = AuditVerifyReport)]
pub struct Report {
    pub ok: bool,
    pub from_seq: i64,
    /// The last seq walked (the head when no `to` was given).
    pub to_seq: i64,
    pub entries_checked: u64,
    pub checkpoints_checked: u64,
    /// The newest checkpoint that verified (its segment is proven as of its signature).
    pub last_verified_checkpoint: Option<Checkpoint>,
    /// The first broken link (lowest seq), when any.
    pub first_break: Option<Break>,
    /// Key id of the key signatures were checked against.
    pub key_id: String,
}

/// The walk over entries already read: a pure function, shared with the bench.
pub struct Walk {
    expected_seq: i64,
    prev: Hash,
    /// Hashes of the walked entries, from `from_seq` on (checkpoint roots need them).
    pub hashes: Vec<Hash>,
    pub from_seq: i64,
    pub broken: Option<Break>,
}

impl Walk {
    /// A walk starting at `from_seq`, whose predecessor's hash is `prev`.
    pub fn new(from_seq: i64, prev: Hash) -> Walk {
        Walk {
            expected_seq: from_seq,
            prev,
            hashes: Vec::new(),
            from_seq,
            broken: None,
        }
    }

    /// Checks the next entry; false once broken (stop feeding).
    pub fn step(&mut self, f: &Fields<'_>, stored_hash: &str) -> bool {
        let at = |seq, problem, detail: String| {
            Some(Break {
                seq,
                problem,
                detail,
            })
        };
        if f.seq != self.expected_seq {
            self.broken = at(
                self.expected_seq,
                Problem::MissingEntry,
                format!(
                    "no entry {}; the next stored one is {}",
                    self.expected_seq, f.seq
                ),
            );
            return false;
        }
        if *f.prev_hash != self.prev {
            self.broken = at(
                f.seq,
                Problem::BrokenLink,
                format!(
                    "prev_hash {} is not the hash of entry {} ({})",
                    chain::to_hex(f.prev_hash),
                    f.seq - 1,
                    chain::to_hex(&self.prev)
                ),
            );
            return false;
        }
        let h = chain::entry_hash(f);
        if chain::from_hex(stored_hash) != Some(h) {
            self.broken = at(
                f.seq,
                Problem::HashMismatch,
                format!(
                    "the fields hash to {}, the stored hash is {stored_hash}",
                    chain::to_hex(&h)
                ),
            );
            return false;
        }
        self.prev = h;
        self.hashes.push(h);
        self.expected_seq += 1;
        true
    }

    /// The last seq walked cleanly.
    pub fn last_seq(&self) -> i64 {
        self.expected_seq - 1
    }

    /// Checks `c` against the walked hashes and `trusted_key`; the problem, when any.
    pub fn check(&self, c: &Checkpoint, trusted_key: &str) -> Option<Break> {
        let fail = |problem, detail: String| {
            Some(Break {
                seq: c.seq_to,
                problem,
                detail,
            })
        };
        if c.public_key != trusted_key
            || c.key_id != chain::key_id(trusted_key)
            || !crate::registry::keys::verify_artifact(&c.message(), &c.signature, trusted_key)
        {
            return fail(
                Problem::CheckpointSignature,
                format!(
                    "checkpoint {}..={} is not signed by the trusted key {}",
                    c.seq_from,
                    c.seq_to,
                    chain::key_id(trusted_key)
                ),
            );
        }
        let lo = usize::try_from(c.seq_from - self.from_seq).ok();
        let hi = usize::try_from(c.seq_to - self.from_seq).ok();
        let seg = match (lo, hi) {
            (Some(lo), Some(hi)) if lo <= hi => self.hashes.get(lo..=hi),
            _ => None,
        };
        let Some(seg) = seg else {
            return fail(
                Problem::CheckpointMismatch,
                format!(
                    "checkpoint {}..={} is not within the walked entries",
                    c.seq_from, c.seq_to
                ),
            );
        };
        let head = seg.last().map(chain::to_hex).unwrap_or_default();
        let root = chain::to_hex(&chain::merkle_root(seg));
        if head != c.head_hash || root != c.segment_root {
            return fail(
                Problem::CheckpointMismatch,
                format!(
                    "checkpoint {}..={} says head {} root {}; the entries give head {head} root {root}",
                    c.seq_from, c.seq_to, c.head_hash, c.segment_root
                ),
            );
        }
        None
    }
}

fn lowest(a: Option<Break>, b: Option<Break>) -> Option<Break> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b.seq < a.seq { b } else { a }),
        (a, b) => a.or(b),
    }
}

/// Verifies entries `from..=to` (default: 1 to the head) and the checkpoints within, against
/// `trusted_key` (standard base64 Ed25519 public key).
pub async fn verify(
    db: &Db,
    from: Option<i64>,
    to: Option<i64>,
    trusted_key: &str,
) -> Result<Report, sqlx::Error> {
    let from = from.unwrap_or(1).max(1);
    let head = store::head(db).await?;
    let to_head = to.is_none_or(|t| t >= head.seq);
    let to = to.unwrap_or(head.seq).min(head.seq);
    let mut first: Option<Break> = None;
    // The predecessor's stored hash anchors a walk that starts mid-chain.
    let prev = if from == 1 {
        Some(GENESIS)
    } else {
        sqlx::query("SELECT hash FROM audit_entries WHERE seq = $1")
            .bind(from - 1)
            .fetch_optional(&db.pool)
            .await?
            .map(|r| r.try_get::<String, _>("hash"))
            .transpose()?
            .and_then(|h| chain::from_hex(&h))
    };
    let mut walk = Walk::new(from, prev.unwrap_or(GENESIS));
    if prev.is_none() && from <= to {
        first = Some(Break {
            seq: from - 1,
            problem: Problem::MissingEntry,
            detail: format!(
                "entry {} (the walk's anchor) is missing or unreadable",
                from - 1
            ),
        });
    } else if from <= to {
        let sql = format!(
            "SELECT {ENTRY_COLUMNS} FROM audit_entries WHERE seq >= $1 AND seq <= $2 ORDER BY seq"
        );
        let mut rows = sqlx::query(&sql).bind(from).bind(to).fetch(&db.pool);
        while let Some(r) = rows.try_next().await? {
            let seq: i64 = r.try_get(0)?;
            let ts_ms: i64 = r.try_get(1)?;
            let kind: &str = r.try_get(2)?;
            let subject: &str = r.try_get(3)?;
            let payload: &str = r.try_get(4)?;
            let prev_hex: &str = r.try_get(5)?;
            let hash: &str = r.try_get(6)?;
            // An unreadable prev_hash cannot link to anything.
            let prev_hash = chain::from_hex(prev_hex).unwrap_or([0xff; 32]);
            let f = Fields {
                seq,
                ts_ms,
                kind,
                subject,
                payload,
                prev_hash: &prev_hash,
            };
            if !walk.step(&f, hash) {
                break;
            }
        }
        first = walk.broken.clone();
        if first.is_none() && walk.last_seq() < to {
            first = Some(Break {
                seq: walk.last_seq() + 1,
                problem: Problem::MissingEntry,
                detail: format!(
                    "the head is entry {to}, the entries end at {}",
                    walk.last_seq()
                ),
            });
        }
        if first.is_none() && to_head && to > 0 {
            let last = walk.hashes.last().map(chain::to_hex).unwrap_or_default();
            if last != head.head_hash {
                first = Some(Break {
                    seq: to,
                    problem: Problem::HeadMismatch,
                    detail: format!(
                        "the head row says hash {}, entry {to} hashes to {last}",
                        head.head_hash
                    ),
                });
            }
        }
    }
    let mut checked = 0u64;
    let mut last_ok = None;
    let mut expected_from = if from == 1 { Some(1) } else { None };
    for c in store::checkpoints(db, from, walk.last_seq()).await? {
        checked += 1;
        if to_head && from == 1 && expected_from != Some(c.seq_from) {
            first = lowest(
                first,
                Some(Break {
                    seq: expected_from.unwrap_or(1),
                    problem: Problem::CheckpointGap,
                    detail: format!(
                        "no checkpoint starts at {}; the next one covers {}..={}",
                        expected_from.unwrap_or(1),
                        c.seq_from,
                        c.seq_to
                    ),
                }),
            );
        }
        expected_from = Some(c.seq_to + 1);
        match walk.check(&c, trusted_key) {
            None => last_ok = Some(c),
            Some(b) => first = lowest(first, Some(b)),
        }
    }
    // The last checkpoint is the one the head row says was sealed last (else it was deleted).
    let sealed_to = expected_from.map_or(0, |f| f - 1);
    if to_head
        && from == 1
        && walk.last_seq() >= head.checkpointed_seq
        && sealed_to != head.checkpointed_seq
    {
        first = lowest(
            first,
            Some(Break {
                seq: sealed_to + 1,
                problem: Problem::CheckpointGap,
                detail: format!(
                    "the head row says entries are sealed to {}, the checkpoints end at {sealed_to}",
                    head.checkpointed_seq
                ),
            }),
        );
    }
    let ok = first.is_none();
    if !ok {
        super::metrics::verify_failures_total().inc();
    }
    Ok(Report {
        ok,
        from_seq: from,
        to_seq: if ok { to } else { walk.last_seq() },
        entries_checked: walk.hashes.len() as u64,
        checkpoints_checked: checked,
        last_verified_checkpoint: last_ok,
        first_break: first,
        key_id: chain::key_id(trusted_key),
    })
}
