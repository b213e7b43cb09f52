//! Leader leases: a background job that acts on the shared database (expiry purges, and the
//! learning loop's retraining, drift checks, gate and auto-revert) runs on one control-plane
//! replica at a time, however many run on one PostgreSQL database.
//!
//! * **PostgreSQL**: a lease is a session-level advisory lock (`pg_try_advisory_lock`) held by
//!   a connection of its own, detached from the pool (a pooled connection would carry the lock
//!   into unrelated queries and drop it whenever the pool recycles it). The lock lives exactly
//!   as long as that session: a replica that dies (even `kill -9`) or loses its connection
//!   loses the lease, and the next replica to try gets it. Each tick the holder checks in
//!   `pg_locks` that its session still holds the lock (a failed or timed-out check counts as
//!   lost, and the connection is dropped); the others try to take it.
//! * **SQLite**: one database file has one writer process by design, so the lease is always
//!   held. Two `kakeya serve` processes on one SQLite file are not supported (each would run
//!   every job); run replicas on PostgreSQL.
//!
//! The lock key is derived from the database, the schema (`current_schema()`) and the lease
//! name, so deployments (or tests) in other schemas of one database never share a lease.
//!
//! [`run_as_leader`] is the runner other modules use for their periodic jobs; [`Leases`] keeps
//! the status that `GET /v1/operator/leader` and the gauge `kakeya_leader{lease}` show.

use crate::store::{Backend, Db};
use prometheus::IntGaugeVec;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::{AnyConnection, Connection, Executor, Row};
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Default of `lease_tick_ms`.
pub const DEFAULT_TICK_MS: u64 = 5000;
/// Longest a holder's check may take before the lease counts as lost.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// This process as other replicas see it: the `application_name` of its lease sessions.
pub fn replica_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_default();
    let host: String = host
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        .take(32)
        .collect();
    // PostgreSQL keeps 63 bytes of application_name.
    format!("kakeya pid={} host={host}", std::process::id())
}

/// The advisory-lock key of lease `name` in database `database`, schema `schema`: the first
/// 8 bytes of SHA-256, sign bit cleared (so `pg_locks` shows it as two plain 32-bit halves).
fn lock_key(database: &str, schema: &str, name: &str) -> i64 {
    let d = Sha256::digest(format!("kakeya-lease\0{database}\0{schema}\0{name}"));
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    i64::from_be_bytes(b) & i64::MAX
}

/// The `pg_locks l` rows of advisory key (`$1`, `$2`) = [`halves`] granted in this database:
/// `pg_locks` shows a 64-bit key as `classid` (high half) and `objid` (low half), with
/// `objsubid = 1`.
const LOCK_ROWS: &str = "l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 \
     AND l.classid::bigint = $1 AND l.objid::bigint = $2 \
     AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())";

fn halves(key: i64) -> (i64, i64) {
    (key >> 32, key & 0xffff_ffff)
}

async fn key_of(conn: &mut AnyConnection, name: &str) -> Result<i64, sqlx::Error> {
    let r = sqlx::query(
        "SELECT current_database()::text AS d, COALESCE(current_schema()::text, '') AS s",
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(lock_key(
        &r.try_get::<String, _>("d")?,
        &r.try_get::<String, _>("s")?,
        name,
    ))
}

/// A database session of its own for lease `name` (PostgreSQL), detached from the pool: the
/// pool opens another connection in its place and never hands this one out (it keeps the
/// pool's per-connection settings, the search_path among them). Its `application_name` is
/// [`replica_id`], so other replicas can tell who holds the lease.
struct Session {
    conn: AnyConnection,
    key: i64,
}

impl Session {
    async fn open(db: &Db, name: &str) -> Result<Session, sqlx::Error> {
        let mut conn = db.pool.acquire().await?.detach();
        let id = replica_id().replace('\'', "");
        conn.execute(format!("SET application_name = '{id}'").as_str())
            .await?;
        let key = key_of(&mut conn, name).await?;
        Ok(Session { conn, key })
    }

    /// Takes the lease on this session; gives the session back when another one holds it
    /// (a follower tries again on it at its next tick instead of opening a new connection).
    async fn try_lock(mut self, name: &str) -> Result<Result<Lease, Session>, sqlx::Error> {
        let got: bool = sqlx::query("SELECT pg_try_advisory_lock($1) AS ok")
            .bind(self.key)
            .fetch_one(&mut self.conn)
            .await?
            .try_get("ok")?;
        Ok(if got {
            Ok(Lease {
                name: name.into(),
                held: Some(self),
            })
        } else {
            Err(self)
        })
    }
}

/// Tries to take lease `name`, on `spare` when given (else on a new session); on SQLite it is
/// always held. A session that finds the lease taken is left in `spare`.
async fn attempt(
    db: &Db,
    name: &str,
    spare: &mut Option<Session>,
) -> Result<Option<Lease>, sqlx::Error> {
    if db.backend == Backend::Sqlite {
        return Ok(Some(Lease {
            name: name.into(),
            held: None,
        }));
    }
    let session = match spare.take() {
        Some(s) => s,
        None => Session::open(db, name).await?,
    };
    match session.try_lock(name).await? {
        Ok(lease) => Ok(Some(lease)),
        Err(s) => {
            *spare = Some(s);
            Ok(None)
        }
    }
}

/// A held lease. Dropping it releases it (on PostgreSQL the session ends with its connection).
pub struct Lease {
    name: String,
    /// The session holding the lock (PostgreSQL); `None` on SQLite.
    held: Option<Session>,
}

impl Lease {
    /// Takes lease `name` if no other session holds it: `None` when another replica does.
    pub async fn try_acquire(db: &Db, name: &str) -> Result<Option<Lease>, sqlx::Error> {
        let mut spare = None;
        let lease = attempt(db, name, &mut spare).await?;
        if let Some(s) = spare {
            let _ = s.conn.close().await;
        }
        Ok(lease)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// True while the lease is held: on PostgreSQL, its session answers within
    /// [`CHECK_TIMEOUT`] and `pg_locks` shows the lock granted to it. False means lost for
    /// good: drop this lease and [`Lease::try_acquire`] again.
    pub async fn check(&mut self) -> bool {
        let Some(Session { conn, key }) = self.held.as_mut() else {
            return true;
        };
        let (hi, lo) = halves(*key);
        let sql = format!(
            "SELECT COUNT(*) AS n FROM pg_locks l WHERE {LOCK_ROWS} AND l.pid = pg_backend_pid()"
        );
        let q = sqlx::query(&sql).bind(hi).bind(lo).fetch_one(&mut *conn);
        match tokio::time::timeout(CHECK_TIMEOUT, q).await {
            Ok(Ok(r)) => r.try_get::<i64, _>("n").is_ok_and(|n| n > 0),
            _ => false,
        }
    }

    /// Releases the lease now (dropping it does too, when the connection closes).
    pub async fn release(self) {
        if let Some(Session { mut conn, key }) = self.held {
            let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
                .bind(key)
                .execute(&mut conn)
                .await;
            let _ = conn.close().await;
        }
    }
}

/// Who holds lease `name` in `db`, as its `application_name` ([`replica_id`]); on SQLite this
/// process. `None`: nobody.
pub async fn holder(db: &Db, name: &str) -> Result<Option<String>, sqlx::Error> {
    if db.backend == Backend::Sqlite {
        return Ok(Some(replica_id()));
    }
    let mut conn = db.pool.acquire().await?;
    let (hi, lo) = halves(key_of(&mut conn, name).await?);
    sqlx::query(&format!(
        "SELECT a.application_name AS holder FROM pg_locks l \
         JOIN pg_stat_activity a ON a.pid = l.pid WHERE {LOCK_ROWS}"
    ))
    .bind(hi)
    .bind(lo)
    .fetch_optional(&mut *conn)
    .await?
    .map(|r| r.try_get("holder"))
    .transpose()
}

/// One lease as this replica sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LeaseStatus {
    pub name: String,
    /// This replica holds the lease (and runs its job).
    pub held: bool,
    /// The replica holding it (`kakeya pid=… host=…`), as the database reports it; `null` when
    /// nobody does or it could not be read.
    pub holder: Option<String>,
    /// Since when this replica holds it (epoch ms); `null` when it does not.
    pub since_ms: Option<i64>,
    /// The last check (epoch ms).
    pub checked_at_ms: i64,
    /// How often the lease is checked or tried, in ms.
    pub tick_ms: u64,
    /// Why the last check or attempt failed, if it did.
    pub error: Option<String>,
}

/// The leases of this process: their status and the gauge `kakeya_leader{lease}` (1 held,
/// 0 not).
#[derive(Clone)]
pub struct Leases {
    status: Arc<Mutex<BTreeMap<String, LeaseStatus>>>,
    gauge: IntGaugeVec,
    tick: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("lease {0:?} already has a job in this process (one job per lease name)")]
    Duplicate(String),
}

impl Leases {
    /// `gauge`: `kakeya_leader` of the process's [`crate::metrics::Metrics`]; `tick`: how
    /// often each lease is checked or tried (`lease_tick_ms`).
    pub fn new(gauge: IntGaugeVec, tick: Duration) -> Leases {
        Leases {
            status: Arc::default(),
            gauge,
            tick,
        }
    }

    /// Every lease with a job in this process, by name.
    pub fn snapshot(&self) -> Vec<LeaseStatus> {
        self.lock().values().cloned().collect()
    }

    /// The status map (a panic elsewhere while it was locked leaves it usable: every update
    /// writes whole fields).
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, LeaseStatus>> {
        self.status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn claim(&self, name: &str) -> Result<(), LeaseError> {
        let mut m = self.lock();
        if m.contains_key(name) {
            return Err(LeaseError::Duplicate(name.into()));
        }
        m.insert(
            name.into(),
            LeaseStatus {
                name: name.into(),
                held: false,
                holder: None,
                since_ms: None,
                checked_at_ms: crate::now_ms(),
                tick_ms: u64::try_from(self.tick.as_millis()).unwrap_or(u64::MAX),
                error: None,
            },
        );
        self.gauge.with_label_values(&[name]).set(0);
        Ok(())
    }

    fn update(&self, name: &str, f: impl FnOnce(&mut LeaseStatus)) {
        if let Some(s) = self.lock().get_mut(name) {
            f(s);
            s.checked_at_ms = crate::now_ms();
            self.gauge.with_label_values(&[name]).set(i64::from(s.held));
        }
    }
}

/// Runs `job` every `every` on whichever replica holds lease `name`: each tick of
/// `leases` (`lease_tick_ms`) the holder checks its lease ([`Lease::check`]) and the others
/// try to take it ([`Lease::try_acquire`]); the holder runs `job` when it has not run it for
/// `every` (at once on a replica that just became leader: a job that must not run twice in
/// a row across a fail-over keeps its own last-run time in the database). A job runs to its
/// end even if the lease is lost meanwhile (its writes are its own transactions); the next
/// one waits for the lease. Stop it by aborting the returned task (the lease goes with it).
pub fn run_as_leader<F, Fut>(
    db: Db,
    leases: &Leases,
    name: &str,
    every: Duration,
    mut job: F,
) -> Result<tokio::task::JoinHandle<()>, LeaseError>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    leases.claim(name)?;
    let (leases, name) = (leases.clone(), name.to_string());
    Ok(tokio::spawn(async move {
        let mut tick = tokio::time::interval(leases.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut lease: Option<Lease> = None;
        let mut spare: Option<Session> = None;
        let mut last_run: Option<Instant> = None;
        loop {
            tick.tick().await;
            let mut error = None;
            if let Some(l) = lease.as_mut() {
                if !l.check().await {
                    tracing::warn!(lease = %name, "leader lease lost (database session gone); trying again");
                    lease = None;
                }
            }
            if lease.is_none() {
                match attempt(&db, &name, &mut spare).await {
                    Ok(Some(l)) => {
                        tracing::info!(lease = %name, replica = %replica_id(), "leader lease acquired");
                        leases.update(&name, |s| s.since_ms = Some(crate::now_ms()));
                        lease = Some(l);
                    }
                    Ok(None) => {}
                    Err(e) => error = Some(e.to_string()),
                }
            }
            let held = lease.is_some();
            let who = if held {
                Some(replica_id())
            } else {
                holder(&db, &name).await.unwrap_or_else(|e| {
                    error.get_or_insert(e.to_string());
                    None
                })
            };
            leases.update(&name, |s| {
                s.held = held;
                s.holder = who;
                s.error = error;
                if !held {
                    s.since_ms = None;
                }
            });
            if held && last_run.is_none_or(|t| t.elapsed() >= every) {
                job().await;
                last_run = Some(Instant::now());
            }
        }
    }))
}

#[cfg(test)]
mod tests;
