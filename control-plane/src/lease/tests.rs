//! Lease tests on SQLite and (when reachable) PostgreSQL, each in its own schema.

use super::*;
use crate::testutil::{all_dbs, postgres_db};
use std::sync::atomic::{AtomicU64, Ordering};

fn leases(tick_ms: u64) -> Leases {
    let gauge = crate::metrics::Metrics::new().unwrap().leader;
    Leases::new(gauge, Duration::from_millis(tick_ms))
}

/// The backend pid of the session holding lease `name`, if any.
async fn holder_pid(db: &Db, name: &str) -> Option<i32> {
    let mut conn = db.pool.acquire().await.unwrap();
    let (hi, lo) = halves(key_of(&mut conn, name).await.unwrap());
    sqlx::query(&format!(
        "SELECT l.pid AS pid FROM pg_locks l WHERE {LOCK_ROWS}"
    ))
    .bind(hi)
    .bind(lo)
    .fetch_optional(&mut *conn)
    .await
    .unwrap()
    .map(|r| r.try_get("pid").unwrap())
}

/// Lease `name`, tried every 20 ms for 2 s (the server ends a closed session asynchronously).
async fn acquire_soon(db: &Db, name: &str) -> Option<Lease> {
    for _ in 0..100 {
        if let Some(l) = Lease::try_acquire(db, name).await.unwrap() {
            return Some(l);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

#[test]
fn lock_keys_differ_by_database_schema_and_name_and_are_non_negative() {
    let k = lock_key("test", "public", "dedup-expiry");
    assert_eq!(k, lock_key("test", "public", "dedup-expiry"));
    for other in [
        lock_key("test2", "public", "dedup-expiry"),
        lock_key("test", "t_1", "dedup-expiry"),
        lock_key("test", "public", "retrain"),
    ] {
        assert_ne!(k, other);
        assert!(other >= 0);
    }
    assert!(k >= 0);
    let (hi, lo) = halves(k);
    assert_eq!((hi << 32) | lo, k);
    assert!((0..=u32::MAX as i64).contains(&hi) && (0..=u32::MAX as i64).contains(&lo));
}

#[tokio::test]
async fn one_session_holds_a_lease_until_it_goes_away() {
    for t in all_dbs("lease_exclusive").await {
        let (db, l) = (&t.db, t.label);
        let mut a = Lease::try_acquire(db, "job").await.unwrap().expect(l);
        assert!(a.check().await, "{l}");
        assert_eq!(
            holder(db, "job").await.unwrap().as_deref(),
            Some(replica_id().as_str()),
            "{l}"
        );
        if db.backend == Backend::Sqlite {
            // One writer per file: always held (documented caveat).
            assert!(Lease::try_acquire(db, "job").await.unwrap().is_some());
            t.cleanup().await;
            continue;
        }
        assert!(
            Lease::try_acquire(db, "job").await.unwrap().is_none(),
            "{l}"
        );
        // Another name is another lease.
        let other = Lease::try_acquire(db, "other").await.unwrap().expect(l);
        // Released explicitly: the next try gets it.
        a.release().await;
        assert_eq!(holder(db, "job").await.unwrap(), None);
        let b = Lease::try_acquire(db, "job").await.unwrap().expect(l);
        // Dropped: its session ends, and with it the lock.
        drop(b);
        let mut c = acquire_soon(db, "job")
            .await
            .expect("a dropped lease is released");
        // A lost session is a lost lease: the check says so, and another session takes it.
        let pid = holder_pid(db, "job").await.unwrap();
        sqlx::query("SELECT pg_terminate_backend($1)")
            .bind(pid)
            .execute(&db.pool)
            .await
            .unwrap();
        assert!(
            !c.check().await,
            "{l}: a terminated session still claims the lease"
        );
        let mut d = acquire_soon(db, "job")
            .await
            .expect("re-acquired after the session died");
        assert!(d.check().await);
        drop(other);
        t.cleanup().await;
    }
}

#[tokio::test]
async fn schemas_of_one_database_never_share_a_lease() {
    let (Some(a), Some(b)) = (
        postgres_db("lease_schema_a").await,
        postgres_db("lease_schema_b").await,
    ) else {
        return;
    };
    let la = Lease::try_acquire(&a.db, "job").await.unwrap();
    let lb = Lease::try_acquire(&b.db, "job").await.unwrap();
    assert!(la.is_some() && lb.is_some());
    drop((la, lb));
    a.cleanup().await;
    b.cleanup().await;
}

/// Two runners ("replicas", each with its own status) on one database: exactly one holds the
/// lease and runs the job; when its task stops, the other takes over within a few ticks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_as_leader_runs_the_job_on_one_replica_and_fails_over() {
    let Some(t) = postgres_db("lease_runner").await else {
        return;
    };
    let tick = 100;
    let runs = [Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0))];
    let replicas = [leases(tick), leases(tick)];
    let mut tasks = Vec::new();
    for (r, n) in replicas.iter().zip(&runs) {
        let n = n.clone();
        let job = move || {
            let n = n.clone();
            async move {
                n.fetch_add(1, Ordering::SeqCst);
            }
        };
        tasks
            .push(run_as_leader(t.db.clone(), r, "job", Duration::from_millis(tick), job).unwrap());
    }
    assert!(matches!(
        run_as_leader(
            t.db.clone(),
            &replicas[0],
            "job",
            Duration::from_secs(1),
            || async {}
        ),
        Err(LeaseError::Duplicate(_))
    ));
    let held = |r: &Leases| r.snapshot().iter().any(|s| s.held);
    let deadline = Instant::now() + Duration::from_secs(20);
    let leader = loop {
        let h: Vec<bool> = replicas.iter().map(held).collect();
        if h.iter().filter(|x| **x).count() == 1
            && runs.iter().any(|n| n.load(Ordering::SeqCst) > 0)
        {
            break h.iter().position(|x| *x).unwrap();
        }
        assert!(Instant::now() < deadline, "no single leader: {h:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let follower = 1 - leader;
    // The follower's first tick may still be connecting: wait for it to see the holder.
    let status = loop {
        let s = replicas[follower].snapshot();
        if s[0].holder.is_some() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the follower never saw the holder: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status.len(), 1);
    assert!(!status[0].held && status[0].since_ms.is_none());
    assert_eq!(status[0].holder.as_deref(), Some(replica_id().as_str()));
    assert_eq!(
        runs[follower].load(Ordering::SeqCst),
        0,
        "the follower never runs the job"
    );
    assert_eq!(replicas[leader].gauge.with_label_values(&["job"]).get(), 1);
    assert_eq!(
        replicas[follower].gauge.with_label_values(&["job"]).get(),
        0
    );
    // The leader stops (its lease session goes with its task): the follower takes over.
    tasks[leader].abort();
    let _ = (&mut tasks[leader]).await;
    let started = Instant::now();
    while !held(&replicas[follower]) || runs[follower].load(Ordering::SeqCst) == 0 {
        assert!(
            started.elapsed() < Duration::from_millis(tick * 50),
            "no fail-over within 50 ticks"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for task in &tasks {
        task.abort();
    }
    t.cleanup().await;
}
