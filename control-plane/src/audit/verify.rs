//! Re-walks the chain and the checkpoints and names the first broken link.
//!
//! For each entry of the range, in seq order: the seq is the next one (else an entry is
//! missing), its `prev_hash` is the previous entry's hash (else the chain is broken: an entry
//! was moved, inserted or its predecessor rewritten), and its hash recomputes from its fields
//! (else the entry was altered). Then every checkpoint within the range: its signature
//! verifies with the key it names, which must be in the keyring ([`super::keyring`]: the
//! current key and the retired keys endorsed from it), and its head hash and segment root are
//! those of the walked entries (a chain rewritten consistently from some entry on still fails
//! here, since nobody without the key can sign a new checkpoint). A walk to the head also
//! checks that the head row agrees with the last entry (a truncated tail) and that
//! checkpoints are contiguous. With `deep`, every decision batch's root is recomputed from
//! the decision log ([`super::batches`]).
//!
//! **Speed.** Entries are read [`read::CHUNK`] at a time as one text per query
//! ([`super::read`]), a reader feeding a hasher on a blocking thread; the range is cut into
//! one part per core (at most 4), each walked on its own connection anchored on the stored
//! hash of the entry before it, and the checkpoints are checked in parallel too. Parts are
//! joined in order and one counts only when every part before it walked cleanly to its end,
//! so the first break named is exactly the sequential walk's
//! (`verify_tests::parallel_parts_name_the_same_first_break_as_one_walk`).

use super::chain::{self, Fields, Hash, GENESIS};
use super::keyring::Keyring;
use super::read;
use super::store::{self, Checkpoint};
use crate::store::Db;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use std::sync::Arc;

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
    /// (Deep verification) a `decision_batch` entry's Merkle root is not that of the
    /// decision-log rows it names: a row was altered or deleted after it was recorded.
    BatchRootMismatch,
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
    /// Key id of the current key (checkpoints it signed verify with it).
    pub key_id: String,
    /// Every key a checkpoint may be signed with: the current one first, then the retired
    /// keys endorsed from it ([`super::keyring`]).
    #[serde(default)]
    pub trusted_key_ids: Vec<String>,
    /// Whether each `decision_batch` entry's Merkle root was recomputed from the
    /// decision-log rows it covers (`deep`).
    #[serde(default)]
    pub deep: bool,
    /// `decision_batch` entries whose root was recomputed (0 unless `deep`).
    #[serde(default)]
    pub batches_checked: u64,
}

/// The walk over entries already read: a pure function, shared with the bench.
pub struct Walk {
    expected_seq: i64,
    prev: Hash,
    /// The seq of the first entry fed (whatever it was).
    first_fed: Option<i64>,
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
            first_fed: None,
            hashes: Vec::new(),
            from_seq,
            broken: None,
        }
    }

    /// Feeds the entries of a [`read::chunk`] text; false once broken.
    pub fn feed(&mut self, text: &str) -> Result<bool, read::Malformed> {
        for r in read::Rows::new(text) {
            let r = r?;
            // An unreadable prev_hash cannot link to anything.
            let prev_hash = chain::from_hex(r.prev_hash).unwrap_or([0xff; 32]);
            let f = Fields {
                seq: r.seq,
                ts_ms: r.ts_ms,
                kind: r.kind,
                subject: r.subject,
                payload: r.payload,
                prev_hash: &prev_hash,
            };
            if !self.step(&f, r.hash) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Checks the next entry; false once broken (stop feeding).
    pub fn step(&mut self, f: &Fields<'_>, stored_hash: &str) -> bool {
        self.first_fed.get_or_insert(f.seq);
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

    /// Checks `c` against the walked hashes and the keys of `ring`; the problem, when any.
    pub fn check(&self, c: &Checkpoint, ring: &Keyring) -> Option<Break> {
        let fail = |problem, detail: String| {
            Some(Break {
                seq: c.seq_to,
                problem,
                detail,
            })
        };
        if let Some(why) = ring.check(c) {
            return fail(Problem::CheckpointSignature, why);
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

/// A task that did not finish (panicked or was cancelled), as a store error.
fn join_err(e: tokio::task::JoinError) -> sqlx::Error {
    sqlx::Error::Protocol(format!("audit verification task failed: {e}"))
}

/// Parts verified at once: one per core, at most 4.
fn parallelism() -> i64 {
    std::thread::available_parallelism().map_or(1, |n| n.get().clamp(1, 4)) as i64
}

/// The stored hash of entry `seq` (`None` when it is missing or not a hash).
async fn stored_hash(db: &Db, seq: i64) -> Result<Option<Hash>, sqlx::Error> {
    Ok(sqlx::query("SELECT hash FROM audit_entries WHERE seq = $1")
        .bind(seq)
        .fetch_optional(&db.pool)
        .await?
        .map(|r| r.try_get::<String, _>("hash"))
        .transpose()?
        .and_then(|h| chain::from_hex(&h)))
}

/// Walks `from..=to` anchored on `prev`: a reader fetching [`read::CHUNK`] entries per query
/// feeds a hasher on a blocking thread, so reading and hashing overlap.
async fn walk_part(
    db: &Db,
    (from, to): (i64, i64),
    prev: Hash,
    chunk: i64,
) -> Result<Walk, sqlx::Error> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(2);
    let hasher = tokio::task::spawn_blocking(move || {
        let mut w = Walk::new(from, prev);
        while let Some(text) = rx.blocking_recv() {
            match w.feed(&text) {
                Ok(true) => {}
                Ok(false) => break,
                Err(read::Malformed) => return Err(w.from_seq),
            }
        }
        Ok(w)
    });
    let mut a = from;
    let mut read_err = None;
    while a <= to {
        let b = a.saturating_add(chunk - 1).min(to);
        match read::chunk(db, a, b).await {
            // A closed channel: the hasher stopped at a break.
            Ok(text) => {
                if tx.send(text).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                read_err = Some(e);
                break;
            }
        }
        a = b + 1;
    }
    drop(tx);
    let walked = hasher.await.map_err(join_err)?;
    if let Some(e) = read_err {
        return Err(e);
    }
    walked.map_err(|at| {
        sqlx::Error::Decode(format!("audit entries from seq {at} came back malformed").into())
    })
}

/// Walks `from..=to` anchored on `prev`, in parts verified in parallel, each anchored on the
/// stored hash of the entry before it. The result is the sequential walk's: parts are joined
/// in order, and a part counts only when every part before it walked cleanly to its end, in
/// which case its anchor is the hash the walk recomputed (the predecessor's stored hash was
/// checked against it).
/// `parts` parts (at least 1), read `chunk` entries per query.
pub(super) async fn walk_range(
    db: &Db,
    (from, to): (i64, i64),
    prev: Hash,
    parts: i64,
    chunk: i64,
) -> Result<Walk, sqlx::Error> {
    let n = to - from + 1;
    let parts = parts.clamp(1, n.max(1));
    let size = (n + parts - 1) / parts;
    let mut handles = Vec::new();
    for k in 0..parts {
        let a = from + k * size;
        if a > to {
            break;
        }
        let b = (a + size - 1).min(to);
        let db = db.clone();
        handles.push(tokio::spawn(async move {
            let anchor = if k == 0 {
                Some(prev)
            } else {
                stored_hash(&db, a - 1).await?
            };
            // A missing anchor: the part before stops short of it, so this part never counts.
            walk_part(&db, (a, b), anchor.unwrap_or([0xff; 32]), chunk.max(1)).await
        }));
    }
    let mut walks = Vec::with_capacity(handles.len());
    for h in handles {
        walks.push(h.await.map_err(join_err)??);
    }
    let mut rest = walks.into_iter();
    let mut walk = rest.next().unwrap_or_else(|| Walk::new(from, prev));
    let rest: Vec<Walk> = rest.collect();
    for (i, part) in rest.iter().enumerate() {
        if walk.broken.is_some() {
            break;
        }
        if walk.expected_seq != part.from_seq {
            // The walk stopped short of this part: entries are missing in between.
            if let Some(next) = rest[i..].iter().find_map(|p| p.first_fed) {
                walk.broken = Some(Break {
                    seq: walk.expected_seq,
                    problem: Problem::MissingEntry,
                    detail: format!(
                        "no entry {}; the next stored one is {next}",
                        walk.expected_seq
                    ),
                });
            }
            break;
        }
        walk.expected_seq = part.expected_seq;
        walk.prev = part.prev;
        walk.hashes.extend_from_slice(&part.hashes);
        walk.broken = part.broken.clone();
    }
    Ok(walk)
}

/// Checks `cps` against `walk` and `ring` in parallel groups; the result of each, in order.
async fn check_checkpoints(
    walk: Arc<Walk>,
    ring: Arc<Keyring>,
    cps: Vec<Checkpoint>,
) -> Result<Vec<(Checkpoint, Option<Break>)>, sqlx::Error> {
    let per = cps.len().div_ceil(parallelism() as usize).max(1);
    let mut handles = Vec::new();
    let mut cps = cps.into_iter().peekable();
    while cps.peek().is_some() {
        let group: Vec<Checkpoint> = cps.by_ref().take(per).collect();
        let (walk, ring) = (walk.clone(), ring.clone());
        handles.push(tokio::task::spawn_blocking(move || {
            group
                .into_iter()
                .map(|c| {
                    let b = walk.check(&c, &ring);
                    (c, b)
                })
                .collect::<Vec<_>>()
        }));
    }
    let mut out = Vec::new();
    for h in handles {
        out.extend(h.await.map_err(join_err)?);
    }
    Ok(out)
}

/// Verifies entries `from..=to` (default: 1 to the head) and the checkpoints within, against
/// the keyring of `trusted_key` (standard base64 Ed25519 public key, the current key).
pub async fn verify(
    db: &Db,
    from: Option<i64>,
    to: Option<i64>,
    trusted_key: &str,
) -> Result<Report, sqlx::Error> {
    verify_with(db, from, to, trusted_key, false).await
}

/// [`verify`], and with `deep` also every `decision_batch` entry's Merkle root recomputed
/// from the decision-log rows it names ([`super::batches`]).
pub async fn verify_with(
    db: &Db,
    from: Option<i64>,
    to: Option<i64>,
    trusted_key: &str,
    deep: bool,
) -> Result<Report, sqlx::Error> {
    let ring = Keyring::load(db, trusted_key).await?;
    let from = from.unwrap_or(1).max(1);
    let head = store::head(db).await?;
    let to_head = to.is_none_or(|t| t >= head.seq);
    let to = to.unwrap_or(head.seq).min(head.seq);
    let mut first: Option<Break> = None;
    // The predecessor's stored hash anchors a walk that starts mid-chain.
    let prev = if from == 1 {
        Some(GENESIS)
    } else {
        stored_hash(db, from - 1).await?
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
        // Small ranges in one part: a part costs a task, a thread and a query.
        let parts = if to - from + 1 < 4 * read::CHUNK {
            1
        } else {
            parallelism()
        };
        walk = walk_range(db, (from, to), prev.unwrap_or(GENESIS), parts, read::CHUNK).await?;
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
    let last_walked = walk.last_seq();
    let (entries_checked, walk_from) = (walk.hashes.len() as u64, walk.from_seq);
    let cps = store::checkpoints(db, from, last_walked).await?;
    let ring = Arc::new(ring);
    let checked_cps = check_checkpoints(Arc::new(walk), ring.clone(), cps).await?;
    let mut checked = 0u64;
    let mut last_ok = None;
    let mut expected_from = if from == 1 { Some(1) } else { None };
    for (c, problem) in checked_cps {
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
        match problem {
            None => last_ok = Some(c),
            Some(b) => first = lowest(first, Some(b)),
        }
    }
    // The last checkpoint is the one the head row says was sealed last (else it was deleted).
    let sealed_to = expected_from.map_or(0, |f| f - 1);
    if to_head
        && from == 1
        && last_walked >= head.checkpointed_seq
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
    let mut batches_checked = 0;
    if deep && walk_from <= last_walked {
        let (n, b) = super::batches::check(db, walk_from, last_walked).await?;
        batches_checked = n;
        first = lowest(first, b);
    }
    let ok = first.is_none();
    if !ok {
        super::metrics::verify_failures_total().inc();
    }
    Ok(Report {
        ok,
        from_seq: from,
        to_seq: if ok { to } else { last_walked },
        entries_checked,
        checkpoints_checked: checked,
        last_verified_checkpoint: last_ok,
        first_break: first,
        key_id: ring.current_id().to_string(),
        trusted_key_ids: ring.ids(),
        deep,
        batches_checked,
    })
}
