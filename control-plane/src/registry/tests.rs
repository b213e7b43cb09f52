//! Registry tests: every function runs on SQLite and (when reachable) PostgreSQL.

use super::*;
use crate::testutil::all_dbs;
use kakeya_core::bundle::verify_bundle;

pub(super) const SEED: [u8; 32] = [9; 32];

pub(crate) fn model(bias: f64) -> Model {
    crate::canary::bench::model(bias)
}

/// A manual move by the tests.
fn why() -> Why {
    Why::manual(Actor::Cli("test".into()), None)
}

/// [`move_alias`], manually.
pub(crate) async fn set_alias(
    db: &Db,
    seed: &[u8; 32],
    alias: &str,
    version: &str,
    weight: Option<f64>,
    now_ms: i64,
) -> Result<Published, RegistryError> {
    move_alias(db, seed, alias, version, weight, &why(), now_ms).await
}

/// [`remove_alias`] of the challenger, manually.
pub(crate) async fn remove_challenger(
    db: &Db,
    seed: &[u8; 32],
    now_ms: i64,
) -> Result<Published, RegistryError> {
    remove_alias(db, seed, CHALLENGER, &why(), now_ms).await
}

fn keys() -> Vec<String> {
    vec![keys::public_key_b64(&SEED)]
}

pub(super) async fn served(db: &Db) -> Bundle {
    let b = current_bundle(db).await.unwrap().unwrap();
    let bundle = verify_bundle(b.bytes.as_bytes(), &b.sha256, &b.signature, &keys()).unwrap();
    assert_eq!(bundle.version, u64::try_from(b.version).unwrap());
    bundle
}

#[tokio::test]
async fn register_promote_and_publish_signed_bundles() {
    for t in all_dbs("registry_publish").await {
        let db = &t.db;
        let (a, b) = (model(-1.0), model(-2.0));
        assert!(current_bundle(db).await.unwrap().is_none(), "{}", t.label);
        let s = insert_model(db, &SEED, &a, &card::from_artifact(&a), 10)
            .await
            .unwrap();
        assert_eq!(s.version, a.version());
        assert!(matches!(
            insert_model(db, &SEED, &a, &card::from_artifact(&a), 11).await,
            Err(RegistryError::Exists(_))
        ));
        insert_model(db, &SEED, &b, &card::from_artifact(&b), 12)
            .await
            .unwrap();
        // No champion yet: a challenger cannot be published.
        assert!(matches!(
            set_alias(db, &SEED, CHALLENGER, &b.version(), Some(0.2), 13).await,
            Err(RegistryError::Conflict(_))
        ));
        assert!(current_bundle(db).await.unwrap().is_none());
        assert!(matches!(
            set_alias(db, &SEED, CHAMPION, "lr-nope", None, 13).await,
            Err(RegistryError::NoModel(_))
        ));
        assert!(matches!(
            set_alias(db, &SEED, CHAMPION, &a.version(), Some(0.5), 13).await,
            Err(RegistryError::Invalid(_))
        ));
        let p1 = set_alias(db, &SEED, CHAMPION, &a.version(), None, 14)
            .await
            .unwrap();
        assert_eq!(p1.bundle_version, 1, "{}", t.label);
        let b1 = served(db).await;
        assert_eq!(
            (b1.champion.version(), b1.challenger.is_none()),
            (a.version(), true)
        );
        let p2 = set_alias(db, &SEED, CHALLENGER, &b.version(), Some(0.2), 15)
            .await
            .unwrap();
        assert_eq!(p2.bundle_version, 2);
        let b2 = served(db).await;
        assert_eq!(
            b2.challenger.as_ref().map(Model::version),
            Some(b.version())
        );
        assert!((b2.challenger_weight - 0.2).abs() < 1e-12);
        assert!(matches!(
            set_alias(db, &SEED, CHALLENGER, &b.version(), Some(1.5), 16).await,
            Err(RegistryError::Invalid(_))
        ));
        let list = list_models(db).await.unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].version, b.version(), "newest first");
        assert_eq!(list[0].aliases, vec![CHALLENGER.to_string()]);
        assert_eq!(list[1].aliases, vec![CHAMPION.to_string()]);
        let d = get_model(db, &a.version()).await.unwrap().unwrap();
        assert_eq!(
            Model::from_json(d.artifact.to_string().as_bytes()).unwrap(),
            a
        );
        assert_eq!(d.card["model_version"], a.version());
        assert!(get_model(db, "lr-nope").await.unwrap().is_none());
        let p3 = remove_challenger(db, &SEED, 17).await.unwrap();
        assert_eq!(p3.bundle_version, 3);
        assert!(served(db).await.challenger.is_none());
        assert!(matches!(
            remove_challenger(db, &SEED, 18).await,
            Err(RegistryError::NoChallenger)
        ));
        assert_eq!(current_bundle(db).await.unwrap().unwrap().version, 3);
        t.cleanup().await;
    }
}

#[tokio::test]
async fn first_start_publishes_the_default_model_once() {
    for t in all_dbs("registry_default").await {
        let p = bootstrap::ensure_default(&t.db, &SEED)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(p.bundle_version, 1, "{}", t.label);
        assert!(bootstrap::ensure_default(&t.db, &SEED)
            .await
            .unwrap()
            .is_none());
        let b = served(&t.db).await;
        let d = get_model(&t.db, &b.champion.version())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(d.card["evaluation"]["source"], "computed");
        assert_eq!(model_count(&t.db).await.unwrap(), 1);
        t.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_alias_changes_publish_consecutive_versions() {
    for t in all_dbs("registry_concurrent").await {
        let a = model(-1.0);
        insert_model(&t.db, &SEED, &a, &card::from_artifact(&a), 1)
            .await
            .unwrap();
        set_alias(&t.db, &SEED, CHAMPION, &a.version(), None, 2)
            .await
            .unwrap();
        let mut tasks = Vec::new();
        for i in 0..8 {
            let (db, v) = (t.db.clone(), a.version());
            tasks.push(tokio::spawn(async move {
                let (alias, w) = if i % 2 == 0 {
                    (CHAMPION, None)
                } else {
                    (CHALLENGER, Some(0.1))
                };
                set_alias(&db, &SEED, alias, &v, w, 3 + i).await
            }));
        }
        let mut versions = Vec::new();
        for task in tasks {
            let p = task.await.unwrap();
            versions.push(
                p.unwrap_or_else(|e| panic!("{}: {e}", t.label))
                    .bundle_version,
            );
        }
        versions.sort_unstable();
        assert_eq!(versions, (2..=9).collect::<Vec<i64>>(), "{}", t.label);
        assert_eq!(served(&t.db).await.version, 9);
        // One history row per publication, each with its own bundle, the chain unbroken.
        let mut conn = t.db.pool.acquire().await.unwrap();
        let h = history::page(&mut conn, None, None, 100).await.unwrap();
        let bundles: Vec<i64> = h.iter().rev().map(|e| e.bundle_version).collect();
        assert_eq!(bundles, (1..=9).collect::<Vec<i64>>(), "{}", t.label);
        let challenger: Vec<_> = h.iter().rev().filter(|e| e.alias == CHALLENGER).collect();
        assert_eq!(challenger.len(), 4);
        assert_eq!(challenger[0].previous_version, None);
        assert!(challenger[1..]
            .iter()
            .all(|e| e.previous_version == Some(a.version())));
        t.cleanup().await;
    }
}

/// One decision-log row of `tenant`, PCS v0.2, with the given signals at `ts_ms`.
async fn log_row(db: &Db, id: &str, tenant: &str, signals: (f64, f64, f64), ts_ms: i64) {
    log_row_as(db, id, tenant, signals, ts_ms, true).await
}

/// One decision-log row (PCS v0.2), `accepted` by verification or not (then escalated, 202).
async fn log_row_as(
    db: &Db,
    id: &str,
    tenant: &str,
    signals: (f64, f64, f64),
    ts_ms: i64,
    accepted: bool,
) {
    log_row_full(db, id, tenant, signals, ts_ms, accepted, "0.2").await
}

async fn log_row_full(
    db: &Db,
    id: &str,
    tenant: &str,
    (d, c, r): (f64, f64, f64),
    ts_ms: i64,
    accepted: bool,
    pcs_version: &str,
) {
    let mut conn = db.pool.acquire().await.unwrap();
    let d = crate::store::decision_log::NewDecision {
        record_id: id,
        tenant,
        pcs_id: id,
        d_hat: d,
        coh_star: c,
        r,
        budget: 0.3,
        regime: "mixed",
        accepted,
        escalated: !accepted,
        reason: (!accepted).then_some("tolerance"),
        status: if accepted { 200 } else { 202 },
        cacheable: true,
        verify_ns: None,
        created_at_ms: ts_ms,
        risk: None,
        pcs_version,
        features: None,
        audit_sample: false,
        votes: None,
        task: None,
        microvote_ns: None,
    };
    assert!(crate::store::decision_log::insert(&mut conn, &d)
        .await
        .unwrap());
}

/// Median of `v`, by hand (mean of the two middle values for an even count).
fn median_of(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    (v[(n - 1) / 2] + v[n / 2]) / 2.0
}

#[tokio::test]
async fn published_bundles_carry_tenant_stats_from_the_recent_decision_log() {
    const DAY: i64 = 86_400_000;
    let now = 100 * DAY;
    let signals = |i: usize| {
        let x = i as f64;
        (
            1.0 + (x * 0.37).sin().abs(),
            0.5 + 0.4 * (x * 0.11).cos(),
            0.2 + 0.05 * (i % 7) as f64,
        )
    };
    for t in all_dbs("registry_tenant_stats").await {
        let db = &t.db;
        // acme: 12 old rows (outside the 14-day window), 30 recent PCS v0.1 rows (another
        // version) and 60 recent v0.2 ones, interleaved with beta's 49 recent rows (too few)
        // and gamma's 55 rows 20 days old (outside).
        let mut acme = Vec::new();
        for i in 0..12 {
            log_row(
                db,
                &format!("old-{i}"),
                "acme",
                (3.0, 1.0, 0.9),
                now - 20 * DAY,
            )
            .await;
        }
        for i in 0..60 {
            let s = signals(i);
            acme.push(s);
            log_row(db, &format!("acme-{i}"), "acme", s, now - DAY + i as i64).await;
            if i < 30 {
                let id = format!("acme-v01-{i}");
                log_row_full(db, &id, "acme", (3.4, 0.01, 0.99), now - DAY, true, "0.1").await;
            }
            if i < 49 {
                log_row(db, &format!("beta-{i}"), "beta", s, now - DAY).await;
            }
        }
        for i in 0..55 {
            log_row(
                db,
                &format!("gamma-{i}"),
                "gamma",
                signals(i),
                now - 20 * DAY,
            )
            .await;
        }
        let m = model(-1.0);
        insert_model(db, &SEED, &m, &card::from_artifact(&m), 1)
            .await
            .unwrap();
        set_alias(db, &SEED, CHAMPION, &m.version(), None, now)
            .await
            .unwrap();
        let b = served(db).await;
        assert_eq!(
            b.tenant_stats.keys().collect::<Vec<_>>(),
            vec!["acme"],
            "{}",
            t.label
        );
        // Expected: medians of acme's recent v0.2 rows and the std of r winsorised at 10 % on
        // each side (60 rows: the 6 lowest and 6 highest clipped), written out here rather than
        // calling TenantStats::robust.
        let med_r = median_of(acme.iter().map(|s| s.2).collect());
        let mut r: Vec<f64> = acme.iter().map(|s| s.2).collect();
        r.sort_by(f64::total_cmp);
        let (lo, hi) = (r[6], r[r.len() - 7]);
        let w: Vec<f64> = r.iter().map(|x| x.clamp(lo, hi)).collect();
        let mean = w.iter().sum::<f64>() / w.len() as f64;
        let wstd = (w.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / w.len() as f64).sqrt();
        let got = b.tenant_stats["acme"];
        assert_eq!(got.count, 60, "{}", t.label);
        for (g, e) in [
            (got.avg_d_hat, median_of(acme.iter().map(|s| s.0).collect())),
            (got.avg_coh, median_of(acme.iter().map(|s| s.1).collect())),
            (got.avg_r, med_r),
            (got.std_r, wstd),
        ] {
            assert!((g - e).abs() < 1e-12, "{}: {g} vs {e}", t.label);
        }
        assert_eq!(got.avg_latency_ms, 0.0);
        t.cleanup().await;
    }
}

/// Issue 6 review item 5: a busy tenant's window is sampled evenly, so a burst of recent rows
/// (here 10,000, a load test) cannot push the older rows of the window out: the statistics are
/// those of every other eligible row in id order (n = 13,000 > 10,000: k = 2), 1,500 of them
/// from the 3,000 older rows, whose ids are all odd (each followed by an ineligible v0.1 row), which an
/// `id % 2 = 0` sample would have dropped entirely.
#[tokio::test]
async fn a_burst_of_recent_rows_cannot_push_the_older_window_out() {
    const DAY: i64 = 86_400_000;
    let now = 100 * DAY;
    for t in all_dbs("registry_stats_sample").await {
        let (db, l) = (&t.db, t.label);
        let mut eligible = Vec::new();
        let mut conn = db.pool.acquire().await.unwrap();
        let mut tx = conn.begin().await.unwrap();
        let row = |id: &'static str, i: i32, s: (f64, f64, f64), ts: i64, v: &'static str| {
            (format!("{id}-{i}"), s, ts, v)
        };
        let mut rows = Vec::new();
        for i in 0..3000 {
            let s = (0.9, 0.8, 0.3 + 0.0001 * f64::from(i % 10));
            eligible.push(s);
            let ts = now - 10 * DAY + i64::from(i);
            rows.push(row("old", i, s, ts, "0.2"));
            rows.push(row("old-v01", i, s, ts, "0.1"));
        }
        for i in 0..10_000 {
            let s = (2.5, 0.3, 0.9 + 0.00001 * f64::from(i % 10));
            eligible.push(s);
            rows.push(row("burst", i, s, now - 60_000 + i64::from(i), "0.2"));
        }
        for (id, (d, c, r), ts, v) in &rows {
            let d = crate::store::decision_log::NewDecision {
                record_id: id,
                tenant: "acme",
                pcs_id: id,
                d_hat: *d,
                coh_star: *c,
                r: *r,
                budget: 0.3,
                regime: "mixed",
                accepted: true,
                escalated: false,
                reason: None,
                status: 200,
                cacheable: true,
                verify_ns: None,
                created_at_ms: *ts,
                risk: None,
                pcs_version: v,
                features: None,
                audit_sample: false,
                votes: None,
                task: None,
                microvote_ns: None,
            };
            assert!(crate::store::decision_log::insert(&mut tx, &d)
                .await
                .unwrap());
        }
        tx.commit().await.unwrap();
        let got = tenant_stats(&mut conn, now - 14 * DAY).await.unwrap()["acme"];
        drop(conn);
        let sample: Vec<_> = eligible.iter().copied().step_by(2).collect();
        assert_eq!(sample.iter().filter(|s| s.0 == 0.9).count(), 1500);
        let expected = TenantStats::robust(&sample, 50).unwrap();
        assert_eq!(got, expected, "{l}");
        assert_eq!(got.count, 6500, "{l}");
        // What the most recent 10,000 rows gave: the burst alone.
        let recent = TenantStats::robust(&eligible[3000..], 50).unwrap();
        assert_ne!(got, recent, "{l}");
        assert!(
            got.std_r > 10.0 * recent.std_r,
            "{l}: {got:?} vs {recent:?}"
        );
        t.cleanup().await;
    }
}

/// Absurd claimed signals (r = 1e200 made std(r) infinite, serialised as `null`: every filter
/// refused every later bundle) and rows verification did not accept never reach a bundle.
#[tokio::test]
async fn poisoned_decision_log_rows_never_reach_tenant_stats() {
    const DAY: i64 = 86_400_000;
    let now = 100 * DAY;
    let poison: [((f64, f64, f64), bool); 10] = [
        ((1.2, 0.7, 1e200), false),
        ((1.2, 0.7, 1e200), true), // accepted: r is not range-checked by default
        ((1e200, 0.7, 0.5), true),
        ((1.2, 1e200, 0.5), true),
        ((f64::INFINITY, 0.7, 0.5), true),
        ((1.2, f64::NEG_INFINITY, 0.5), true),
        ((1.2, 0.7, -0.1), true),
        ((3.6, 0.7, 0.5), true),
        ((1.2, 1.06, 0.5), true),
        ((1.2, 0.7, 0.5), false), // in range, but not accepted
    ];
    for t in all_dbs("registry_poisoned_stats").await {
        let db = &t.db;
        let mut good = Vec::new();
        for i in 0..60i64 {
            // Edge values included: the bounds are inclusive.
            let s = match i {
                0 => (0.0, 0.0, 0.0),
                1 => (3.5, 1.05, 1.0),
                _ => (1.0 + 0.02 * i as f64, 0.6, 0.3 + 0.01 * i as f64),
            };
            good.push(s);
            log_row(db, &format!("acme-{i}"), "acme", s, now - DAY + 2 * i).await;
            let (p, accepted) = poison[i as usize % poison.len()];
            let id = format!("acme-poison-{i}");
            log_row_as(db, &id, "acme", p, now - DAY + 2 * i + 1, accepted).await;
        }
        // A tenant with only poisoned rows keeps the model baseline.
        for i in 0..40 {
            let (p, accepted) = poison[i % poison.len()];
            log_row_as(db, &format!("evil-{i}"), "evil", p, now - DAY, accepted).await;
        }
        let m = model(-1.0);
        insert_model(db, &SEED, &m, &card::from_artifact(&m), 1)
            .await
            .unwrap();
        set_alias(db, &SEED, CHAMPION, &m.version(), None, now)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", t.label));
        let b = served(db).await;
        assert_eq!(
            b.tenant_stats.keys().collect::<Vec<_>>(),
            vec!["acme"],
            "{}",
            t.label
        );
        let got = b.tenant_stats["acme"];
        assert!(stats_are_finite(&got), "{}: {got:?}", t.label);
        let expected = kakeya_core::features::TenantStats::robust(&good, 60).unwrap();
        assert_eq!(got, expected, "{}", t.label);
        assert_eq!(got.count, 60);
        t.cleanup().await;
    }
}

/// A bundle the filters would refuse is never signed for publication.
#[test]
fn unpublishable_bundles_are_refused() {
    let good = Bundle {
        format: BUNDLE_FORMAT.into(),
        version: 1,
        created_at_ms: 1,
        champion: model(-1.0),
        challenger: None,
        challenger_weight: 0.0,
        canary: None,
        tenant_stats: BTreeMap::new(),
        policy: kakeya_core::bundle::Policy::default(),
        ensemble: Default::default(),
        budgets: Default::default(),
        task_models: Default::default(),
        upstreams: Default::default(),
        anomaly: Default::default(),
    };
    let signed = sign_checked(&good, &SEED).unwrap();
    verify_bundle(
        &signed.bytes,
        &signed.sha256,
        &signed.signature_b64,
        &keys(),
    )
    .unwrap();
    let mut bad = good.clone();
    let mut s = kakeya_core::features::TenantStats::fresh();
    s.std_r = f64::INFINITY;
    bad.tenant_stats.insert("acme".into(), s);
    let e = sign_checked(&bad, &SEED).unwrap_err().to_string();
    assert!(e.contains("not finite") && e.contains("acme"), "{e}");
    let mut bad = good.clone();
    bad.challenger_weight = 2.0;
    assert!(matches!(
        sign_checked(&bad, &SEED),
        Err(RegistryError::Invalid(_))
    ));
}

/// Migration 0003: the index the tenant statistics read by.
#[tokio::test]
async fn decision_log_has_the_tenant_time_index() {
    for t in all_dbs("registry_stats_index").await {
        let sql = match t.db.backend {
            Backend::Sqlite => {
                "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'decision_log'"
            }
            Backend::Postgres => {
                "SELECT CAST(indexname AS TEXT) AS name FROM pg_indexes WHERE tablename = 'decision_log' \
                 AND schemaname = current_schema()"
            }
        };
        let names: Vec<String> = sqlx::query(sql)
            .fetch_all(&t.db.pool)
            .await
            .unwrap()
            .iter()
            .map(|r| r.try_get::<String, _>("name").unwrap())
            .collect();
        assert!(
            names.iter().any(|n| n == "decision_log_tenant_created"),
            "{}: {names:?}",
            t.label
        );
        t.cleanup().await;
    }
}

/// The data dir (signing seed) was replaced but the database kept (issue 6 review item 1):
/// start re-signs nothing and stops with an error naming `kakeya bundle rekey`; the rekey
/// re-signs only the rows the previous key signed, refuses a wrong previous key and aliases
/// that are not the served bundle's, then publishes the aliases signed with the new key.
#[tokio::test]
async fn a_key_change_needs_rekey_which_re_signs_only_what_the_previous_key_signed() {
    const NEW_SEED: [u8; 32] = [7; 32];
    let new_key = keys::public_key_b64(&NEW_SEED);
    for t in all_dbs("registry_rekey").await {
        let (db, l) = (&t.db, t.label);
        let (a, b, c, d) = (model(-1.0), model(-2.0), model(-3.0), model(-4.0));
        for (m, ts) in [(&a, 1), (&b, 2), (&c, 3), (&d, 4)] {
            insert_model(db, &SEED, m, &card::from_artifact(m), ts)
                .await
                .unwrap();
        }
        // c signed by a third key, d unsigned: the previous key signed neither.
        let foreign = keys::sign_artifact(&c.canonical_bytes(), &[5; 32]);
        set_artifact(
            db,
            &c.version(),
            &stored(db, &c.version()).await.0,
            None,
            Some(&foreign),
        )
        .await;
        sqlx::query("UPDATE models SET signature = NULL WHERE version = $1")
            .bind(d.version())
            .execute(&db.pool)
            .await
            .unwrap();
        set_alias(db, &SEED, CHAMPION, &a.version(), None, 5)
            .await
            .unwrap();
        set_alias(db, &SEED, CHALLENGER, &b.version(), Some(0.3), 6)
            .await
            .unwrap();
        let old_bundle = current_bundle(db).await.unwrap().unwrap();
        assert_eq!(old_bundle.version, 2);

        // `kakeya serve` with the new key: stops, re-signs and publishes nothing.
        let before = integrity_failures("bundle");
        let e = format!("{:#}", bootstrap::start(db, &NEW_SEED).await.unwrap_err());
        assert!(
            e.contains("kakeya bundle rekey --previous-seed-file") && e.contains("bundle 2"),
            "{l}: {e}"
        );
        assert!(integrity_failures("bundle") > before, "{l}");
        assert_eq!(
            current_bundle(db).await.unwrap().unwrap(),
            old_bundle,
            "{l}"
        );
        assert!(artifact_verifies(
            a.canonical_bytes().as_slice(),
            &stored(db, &a.version()).await.1.unwrap()
        ));

        // A wrong previous key: nothing re-signed, the bundle refused.
        let r = rekey(db, &NEW_SEED, &[6; 32], 7).await;
        assert!(
            matches!(
                r,
                Err(RegistryError::Integrity(IntegrityError::Bundle {
                    version: 2,
                    ..
                }))
            ),
            "{l}: {r:?}"
        );
        for m in [&a, &b] {
            let sig = stored(db, &m.version()).await.1.unwrap();
            assert!(artifact_verifies(&m.canonical_bytes(), &sig), "{l}");
        }
        assert!(matches!(
            rekey(db, &SEED, &SEED, 7).await,
            Err(RegistryError::Invalid(_))
        ));

        // The aliases were moved outside the control plane: the rows are re-signed, the bundle
        // is not re-published from aliases that are not the served bundle's.
        let move_champion = |v: String| async move {
            sqlx::query("UPDATE model_aliases SET version = $1 WHERE alias = 'champion'")
                .bind(v)
                .execute(&db.pool)
                .await
                .unwrap();
        };
        move_champion(b.version()).await;
        let r = rekey(db, &NEW_SEED, &SEED, 8).await;
        assert!(
            matches!(&r, Err(RegistryError::Conflict(m)) if m.contains("kakeya model promote")),
            "{l}: {r:?}"
        );
        assert_eq!(
            current_bundle(db).await.unwrap().unwrap(),
            old_bundle,
            "{l}"
        );
        move_champion(a.version()).await;

        let r = rekey(db, &NEW_SEED, &SEED, 9).await.unwrap();
        let mut current = r.current.clone();
        current.sort();
        let mut ab = vec![a.version(), b.version()];
        ab.sort();
        assert!(
            r.resigned.is_empty(),
            "{l}: re-signed by the refused run already"
        );
        assert_eq!(current, ab, "{l}");
        let mut refused: Vec<_> = r.refused.iter().map(row_of).collect();
        refused.sort();
        let mut cd = vec![c.version(), d.version()];
        cd.sort();
        assert_eq!(refused, cd, "{l}");
        let p = r.published.unwrap();
        assert_eq!(p.bundle_version, 3, "{l}");
        let cur = current_bundle(db).await.unwrap().unwrap();
        assert!(verify_bundle(cur.bytes.as_bytes(), &cur.sha256, &cur.signature, &keys()).is_err());
        let bundle = verify_bundle(
            cur.bytes.as_bytes(),
            &cur.sha256,
            &cur.signature,
            std::slice::from_ref(&new_key),
        )
        .unwrap();
        assert_eq!(bundle.champion, a, "{l}");
        assert_eq!(bundle.challenger.as_ref(), Some(&b));
        assert!((bundle.challenger_weight - 0.3).abs() < 1e-12);
        for m in [&a, &b] {
            let sig = stored(db, &m.version()).await.1.unwrap();
            assert!(
                keys::verify_artifact(&m.canonical_bytes(), &sig, &new_key),
                "{l}"
            );
        }
        // c and d are left as they were.
        assert_eq!(stored(db, &c.version()).await.1, Some(foreign.clone()));
        assert_eq!(stored(db, &d.version()).await.1, None);
        assert_refused_model(
            set_alias(db, &NEW_SEED, CHAMPION, &c.version(), None, 10).await,
            &c.version(),
            l,
        );

        // Start goes on now, publishing nothing; a second rekey changes nothing.
        bootstrap::start(db, &NEW_SEED).await.unwrap();
        assert_eq!(current_bundle(db).await.unwrap().unwrap(), cur, "{l}");
        let again = rekey(db, &NEW_SEED, &SEED, 11).await.unwrap();
        assert!(
            again.resigned.is_empty() && again.published.is_none(),
            "{l}"
        );
        t.cleanup().await;
    }
}

/// The whole rekey on a fresh key change: the rows the previous key signed are re-signed in
/// the same run that re-publishes.
#[tokio::test]
async fn rekey_re_signs_and_re_publishes_in_one_run() {
    const NEW_SEED: [u8; 32] = [7; 32];
    for t in all_dbs("registry_rekey_once").await {
        let (db, l) = (&t.db, t.label);
        bootstrap::start(db, &SEED).await.unwrap();
        let default = served(db).await.champion;
        assert!(bootstrap::start(db, &NEW_SEED).await.is_err(), "{l}");
        let r = rekey(db, &NEW_SEED, &SEED, crate::now_ms()).await.unwrap();
        assert_eq!(r.resigned, vec![default.version()], "{l}");
        assert!(r.refused.is_empty() && r.current.is_empty(), "{l}");
        assert_eq!(r.published.unwrap().bundle_version, 2, "{l}");
        bootstrap::start(db, &NEW_SEED).await.unwrap();
        let key = keys::public_key_b64(&NEW_SEED);
        let (row, bundle) = served_bundle(db, &key).await.unwrap().unwrap();
        assert_eq!((row.version, bundle.champion), (2, default), "{l}");
        t.cleanup().await;
    }
}

/// Verifies `signature_b64` over SHA-256(`bytes`) with the public key `kakeya bundle
/// public-key` prints for [`SEED`], with ed25519-dalek directly (not `keys::verify_artifact`).
fn artifact_verifies(bytes: &[u8], signature_b64: &str) -> bool {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    use ed25519_dalek::{Signature, Verifier, VerifyingKey};
    use sha2::{Digest, Sha256};
    let mut cfg = crate::config::Config::default();
    let tmp = tempfile::tempdir().unwrap();
    cfg.bundle_signing_seed_file = tmp.path().join("seed");
    std::fs::write(&cfg.bundle_signing_seed_file, STANDARD.encode(SEED)).unwrap();
    cfg.load_bundle_key().unwrap();
    let pk = cfg.bundle_public_key.unwrap();
    let key: [u8; 32] = STANDARD.decode(pk).unwrap().try_into().unwrap();
    let key = VerifyingKey::from_bytes(&key).unwrap();
    let Ok(sig) = STANDARD.decode(signature_b64) else {
        return false;
    };
    let Ok(sig) = <[u8; 64]>::try_from(sig.as_slice()) else {
        return false;
    };
    let digest: [u8; 32] = Sha256::digest(bytes).into();
    key.verify(&digest, &Signature::from_bytes(&sig)).is_ok()
}

pub(super) async fn stored(db: &Db, version: &str) -> (String, Option<String>) {
    let r = sqlx::query("SELECT artifact, signature FROM models WHERE version = $1")
        .bind(version)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    (
        r.try_get("artifact").unwrap(),
        r.try_get("signature").unwrap(),
    )
}

/// Every registration path signs SHA-256(canonical bytes) with the control plane's key; the
/// API and the CLI list it; a tampered artifact text does not verify.
#[tokio::test]
async fn registered_artifacts_are_signed_with_the_control_plane_key() {
    for t in all_dbs("registry_model_signatures").await {
        let db = &t.db;
        let a = model(-1.0);
        let s = insert_model(db, &SEED, &a, &card::from_artifact(&a), 1)
            .await
            .unwrap();
        let sig = s.signature.clone().expect("signed at registration");
        assert!(artifact_verifies(&a.canonical_bytes(), &sig), "{}", t.label);
        // POST /v1/models and `kakeya model register` share this path.
        let b = model(-2.0);
        let sb = crate::api::registry::register(db, &SEED, &b.canonical_bytes())
            .await
            .unwrap();
        assert!(artifact_verifies(
            &b.canonical_bytes(),
            sb.summary.signature.as_deref().unwrap()
        ));
        for (m, sig) in [(&a, &sig), (&b, sb.summary.signature.as_ref().unwrap())] {
            let (text, stored_sig) = stored(db, &m.version()).await;
            assert_eq!(text.as_bytes(), m.canonical_bytes().as_slice());
            assert_eq!(stored_sig.as_ref(), Some(sig));
            let d = get_model(db, &m.version()).await.unwrap().unwrap();
            assert_eq!(d.summary.signature.as_ref(), Some(sig), "{}", t.label);
            assert_eq!(d.summary.sha256, m.sha256());
            let json = serde_json::to_value(&d).unwrap();
            assert_eq!(json["signature"], sig.as_str());
            assert_eq!(json["sha256"], m.sha256());
        }
        let list = list_models(db).await.unwrap();
        assert!(list.iter().all(|m| m.signature.is_some()), "{}", t.label);
        assert_eq!(serde_json::to_value(&list[1]).unwrap()["signature"], sig);
        // A tampered artifact text (one weight changed) does not verify.
        let (text, _) = stored(db, &a.version()).await;
        let tampered = text.replacen("\"intercept\":-1.0", "\"intercept\":-0.5", 1);
        assert_ne!(tampered, text);
        assert!(!artifact_verifies(tampered.as_bytes(), &sig), "{}", t.label);
        assert!(!keys::verify_artifact(
            tampered.as_bytes(),
            &sig,
            &keys::public_key_b64(&SEED)
        ));
        // Another key's signature does not verify either.
        assert!(!artifact_verifies(
            &a.canonical_bytes(),
            &keys::sign_artifact(&a.canonical_bytes(), &[7; 32])
        ));
        t.cleanup().await;
    }
}

/// Rows registered before migration 0004 (NULL signature) are signed once per database, at
/// the first start that finds the backfill unrecorded (migration 0007 records it when no row is
/// unsigned, as in a fresh database); a row signed with another key or altered is never signed,
/// and an unsigned row that appears later is an integrity failure, never signed.
#[tokio::test]
async fn unsigned_rows_are_signed_once_per_database() {
    for t in all_dbs("registry_backfill").await {
        let (db, l) = (&t.db, t.label);
        bootstrap::ensure_default(db, &SEED).await.unwrap().unwrap();
        assert_eq!(
            bootstrap::backfill_signatures(db, &SEED).await.unwrap(),
            None,
            "{l}: a fresh database has nothing to backfill"
        );
        let default = served(db).await.champion;
        let (a, b, c) = (model(-1.0), model(-2.0), model(-3.0));
        for (m, ts) in [(&a, 1), (&b, 2), (&c, 3)] {
            insert_model(db, &SEED, m, &card::from_artifact(m), ts)
                .await
                .unwrap();
        }
        // As a database from before migration 0004 reaches 0007 with unsigned rows.
        sqlx::query("DELETE FROM registry_meta")
            .execute(&db.pool)
            .await
            .unwrap();
        sqlx::query("UPDATE models SET signature = NULL WHERE version = $1 OR version = $2")
            .bind(default.version())
            .bind(a.version())
            .execute(&db.pool)
            .await
            .unwrap();
        let foreign = keys::sign_artifact(&b.canonical_bytes(), &[7; 32]);
        sqlx::query("UPDATE models SET signature = $1 WHERE version = $2")
            .bind(&foreign)
            .bind(b.version())
            .execute(&db.pool)
            .await
            .unwrap();
        let (c_text, _) = stored(db, &c.version()).await;
        let c_tampered = c_text.replacen("\"intercept\":-3.0", "\"intercept\":-4.0", 1);
        assert_ne!(c_tampered, c_text);
        sqlx::query("UPDATE models SET artifact = $1, signature = NULL WHERE version = $2")
            .bind(&c_tampered)
            .bind(c.version())
            .execute(&db.pool)
            .await
            .unwrap();

        let signed = backfill_signatures(db, &SEED, 1).await.unwrap().unwrap();
        let mut expected = vec![default.version(), a.version()];
        expected.sort();
        assert_eq!(signed, expected, "{l}");
        for m in [&default, &a] {
            let (text, sig) = stored(db, &m.version()).await;
            assert!(
                artifact_verifies(text.as_bytes(), sig.as_deref().unwrap()),
                "{l}"
            );
        }
        assert_eq!(stored(db, &b.version()).await.1, Some(foreign), "{l}");
        assert_eq!(stored(db, &c.version()).await.1, None, "{l}");
        let mut refused: Vec<_> = bootstrap::check_models(db, &SEED)
            .await
            .unwrap()
            .iter()
            .map(row_of)
            .collect();
        refused.sort();
        let mut bc = vec![b.version(), c.version()];
        bc.sort();
        assert_eq!(refused, bc, "{l}");

        // Done once: a self-consistent unsigned row inserted later is never signed.
        let e = model(-5.0);
        insert_model(db, &SEED, &e, &card::from_artifact(&e), 4)
            .await
            .unwrap();
        sqlx::query("UPDATE models SET signature = NULL WHERE version = $1")
            .bind(e.version())
            .execute(&db.pool)
            .await
            .unwrap();
        bootstrap::start(db, &SEED).await.unwrap();
        assert_eq!(
            backfill_signatures(db, &SEED, 2).await.unwrap(),
            None,
            "{l}"
        );
        assert_eq!(stored(db, &e.version()).await.1, None, "{l}: signed again");
        assert_refused_model(
            verified_model(db, &e.version(), &keys::public_key_b64(&SEED)).await,
            &e.version(),
            l,
        );
        t.cleanup().await;
    }
}

fn row_of(e: &IntegrityError) -> String {
    match e {
        IntegrityError::Model { version, .. } => version.clone(),
        IntegrityError::Bundle { version, .. } => version.to_string(),
    }
}

pub(super) fn integrity_failures(what: &str) -> u64 {
    crate::metrics::integrity_failures_total()
        .with_label_values(&[what])
        .get()
}

pub(super) async fn set_artifact(
    db: &Db,
    version: &str,
    artifact: &str,
    sha256: Option<&str>,
    sig: Option<&str>,
) {
    let (_, old_sig) = stored(db, version).await;
    let old_sha: String = sqlx::query("SELECT sha256 FROM models WHERE version = $1")
        .bind(version)
        .fetch_one(&db.pool)
        .await
        .unwrap()
        .try_get("sha256")
        .unwrap();
    sqlx::query("UPDATE models SET artifact = $1, sha256 = $2, signature = $3 WHERE version = $4")
        .bind(artifact)
        .bind(sha256.unwrap_or(&old_sha))
        .bind(sig.map(str::to_string).or(old_sig))
        .bind(version)
        .execute(&db.pool)
        .await
        .unwrap();
}

fn assert_refused_model<T: std::fmt::Debug>(
    r: Result<T, RegistryError>,
    version: &str,
    label: &str,
) {
    match r {
        Err(RegistryError::Integrity(IntegrityError::Model { version: v, why })) => {
            assert_eq!(v, version, "{label}: {why}")
        }
        other => panic!("{label}: expected an integrity error of {version}, got {other:?}"),
    }
}

/// Issue 6 item 1: with write access to the database, changing the intercept inside a
/// registered model's artifact (keeping, recomputing or re-signing its sha256 and signature)
/// and promoting it publishes nothing: every load of an artifact is refused with a typed
/// error and a metric, the last good bundle keeps serving, and start-up neither re-signs the
/// row nor stops serving.
#[tokio::test]
async fn a_tampered_model_row_is_never_published_and_the_last_good_bundle_keeps_serving() {
    for t in all_dbs("registry_tampered_model").await {
        let (db, l) = (&t.db, t.label);
        let key = keys::public_key_b64(&SEED);
        let (a, b) = (model(-1.0), model(-2.0));
        for (m, ts) in [(&a, 1), (&b, 2)] {
            insert_model(db, &SEED, m, &card::from_artifact(m), ts)
                .await
                .unwrap();
        }
        set_alias(db, &SEED, CHAMPION, &a.version(), None, 3)
            .await
            .unwrap();
        let good = current_bundle(db).await.unwrap().unwrap();
        assert_eq!(good.version, 1);

        let (text, sig) = stored(db, &b.version()).await;
        let tampered = text.replacen("\"intercept\":-2.0", "\"intercept\":3.0", 1);
        assert_ne!(tampered, text);
        let tampered_sha = kakeya_core::ids::sha256_hex(tampered.as_bytes());
        // As found: only the artifact changed; then with its sha256 recomputed; then also
        // signed by another key; then with the original signature back.
        let foreign_sig = keys::sign_artifact(tampered.as_bytes(), &[7; 32]);
        for (sha, sig) in [
            (None, None),
            (Some(tampered_sha.as_str()), None),
            (Some(tampered_sha.as_str()), Some(foreign_sig.as_str())),
            (None, sig.as_deref()),
        ] {
            set_artifact(db, &b.version(), &tampered, sha, sig).await;
            let before = integrity_failures("model");
            for (alias, w) in [(CHAMPION, None), (CHALLENGER, Some(0.5))] {
                assert_refused_model(
                    set_alias(db, &SEED, alias, &b.version(), w, 4).await,
                    &b.version(),
                    l,
                );
            }
            // The eval path loads through the same check.
            assert_refused_model(
                verified_model(db, &b.version(), &key).await,
                &b.version(),
                l,
            );
            assert!(integrity_failures("model") >= before + 3, "{l}");
            // Nothing was published; the aliases did not move.
            assert_eq!(current_bundle(db).await.unwrap().unwrap(), good, "{l}");
            let kept = served_bundle(db, &key).await.unwrap().map(|(row, _)| row);
            assert_eq!(kept, Some(good.clone()), "{l}");
            let al = aliases(&mut db.pool.acquire().await.unwrap())
                .await
                .unwrap();
            assert_eq!(al.len(), 1, "{l}");
            assert_eq!(al[0].version, a.version());
        }
        assert_eq!(verified_model(db, &a.version(), &key).await.unwrap(), a);

        // Start-up: the altered row is refused, never re-signed, and the served bundle stays.
        set_artifact(db, &b.version(), &tampered, Some(&tampered_sha), None).await;
        sqlx::query("UPDATE models SET signature = NULL WHERE version = $1")
            .bind(b.version())
            .execute(&db.pool)
            .await
            .unwrap();
        let before = integrity_failures("model");
        bootstrap::start(db, &SEED).await.unwrap();
        assert_eq!(
            bootstrap::check_models(db, &SEED)
                .await
                .unwrap()
                .iter()
                .map(row_of)
                .collect::<Vec<_>>(),
            vec![b.version()]
        );
        assert!(integrity_failures("model") >= before + 2, "{l}");
        assert_eq!(stored(db, &b.version()).await.1, None, "{l}: re-signed");
        assert_eq!(served(db).await.champion, a, "{l}");
        assert_eq!(current_bundle(db).await.unwrap().unwrap(), good, "{l}");

        // Issue 6 review item 2: the champion's own row altered after publication, artifact
        // and sha256 both (the version kept). The served bundle verifies by its own signature
        // and carries its own copy of the model: start keeps it (the row is refused, logged and
        // counted), and no publication (it would load the champion) goes through until a good
        // model is promoted.
        let (text, _) = stored(db, &a.version()).await;
        let altered = text.replacen("\"intercept\":-1.0", "\"intercept\":5.0", 1);
        let altered_sha = kakeya_core::ids::sha256_hex(altered.as_bytes());
        for sha in [None, Some(altered_sha.as_str())] {
            set_artifact(db, &a.version(), &altered, sha, None).await;
            assert_refused_model(republish(db, &SEED, 5).await, &a.version(), l);
            let before = integrity_failures("model");
            bootstrap::start(db, &SEED)
                .await
                .unwrap_or_else(|e| panic!("{l}: start failed on a genuine bundle: {e:#}"));
            assert!(integrity_failures("model") > before, "{l}");
            assert_eq!(current_bundle(db).await.unwrap().unwrap(), good, "{l}");
            assert_eq!(served(db).await.champion, a, "{l}");
        }
        let c = model(-3.0);
        insert_model(db, &SEED, &c, &card::from_artifact(&c), 6)
            .await
            .unwrap();
        let p = set_alias(db, &SEED, CHAMPION, &c.version(), None, 7)
            .await
            .unwrap();
        assert_eq!(p.bundle_version, 2, "{l}");
        assert_eq!(served(db).await.champion, c);
        t.cleanup().await;
    }
}

/// Issue 6 review item 1: only the signature protects a model row (its sha256 and version are
/// recomputable). An attacker with write access inserts self-consistent rows of their own model
/// (one with a junk signature, one unsigned), points the champion alias at one and overwrites
/// the served bundle's signature. The next start signs nothing, publishes nothing and stops,
/// naming the fix; the filters keep the last good bundle (the route refuses the altered row);
/// once the bundle row is restored, start serves the genuine bundle and refuses both rows.
#[tokio::test]
async fn a_forged_self_consistent_row_is_never_signed_nor_served_after_a_restart() {
    for t in all_dbs("registry_forged_row").await {
        let (db, l) = (&t.db, t.label);
        let key = keys::public_key_b64(&SEED);
        bootstrap::start(db, &SEED).await.unwrap();
        let good = current_bundle(db).await.unwrap().unwrap();
        let genuine = served(db).await.champion;
        let (evil, evil2) = (model(5.0), model(6.0));
        let junk = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [1u8; 64]);
        for (m, sig) in [(&evil, Some(junk.as_str())), (&evil2, None)] {
            let artifact = String::from_utf8(m.canonical_bytes()).unwrap();
            sqlx::query(
                "INSERT INTO models (version, sha256, signature, artifact, card, created_at_ms) \
                 VALUES ($1, $2, $3, $4, '{}', 9)",
            )
            .bind(m.version())
            .bind(m.sha256())
            .bind(sig)
            .bind(artifact)
            .execute(&db.pool)
            .await
            .unwrap();
        }
        for target in [&evil, &evil2] {
            sqlx::query("UPDATE model_aliases SET version = $1 WHERE alias = 'champion'")
                .bind(target.version())
                .execute(&db.pool)
                .await
                .unwrap();
            sqlx::query("UPDATE bundles SET signature = $1 WHERE version = $2")
                .bind(&junk)
                .bind(good.version)
                .execute(&db.pool)
                .await
                .unwrap();
            let e = format!("{:#}", bootstrap::start(db, &SEED).await.unwrap_err());
            assert!(e.contains("kakeya bundle rekey"), "{l}: {e}");
            assert_eq!(
                current_bundle(db).await.unwrap().unwrap().version,
                good.version,
                "{l}"
            );
            assert!(matches!(
                served_bundle(db, &key).await,
                Err(RegistryError::Integrity(IntegrityError::Bundle { .. }))
            ));
            assert_eq!(
                stored(db, &evil.version()).await.1,
                Some(junk.clone()),
                "{l}"
            );
            assert_eq!(stored(db, &evil2.version()).await.1, None, "{l}: signed");
            // The one-time backfill is no way in either.
            assert_eq!(
                backfill_signatures(db, &SEED, 10).await.unwrap(),
                None,
                "{l}"
            );
            for m in [&evil, &evil2] {
                assert_refused_model(republish(db, &SEED, 11).await, &target.version(), l);
                assert_refused_model(
                    set_alias(db, &SEED, CHALLENGER, &m.version(), Some(0.5), 11).await,
                    &m.version(),
                    l,
                );
            }
            // The operator restores the bundles row: the genuine bundle serves again.
            sqlx::query("UPDATE bundles SET signature = $1 WHERE version = $2")
                .bind(&good.signature)
                .bind(good.version)
                .execute(&db.pool)
                .await
                .unwrap();
            bootstrap::start(db, &SEED).await.unwrap();
            assert_eq!(current_bundle(db).await.unwrap().unwrap(), good, "{l}");
            assert_eq!(served(db).await.champion, genuine, "{l}");
            let mut refused: Vec<_> = bootstrap::check_models(db, &SEED)
                .await
                .unwrap()
                .iter()
                .map(row_of)
                .collect();
            refused.sort();
            let mut forged = vec![evil.version(), evil2.version()];
            forged.sort();
            assert_eq!(refused, forged, "{l}");
        }
        // Not even with the backfill marker deleted: start never signs a row.
        sqlx::query("DELETE FROM registry_meta")
            .execute(&db.pool)
            .await
            .unwrap();
        bootstrap::start(db, &SEED).await.unwrap();
        assert_eq!(
            stored(db, &evil2.version()).await.1,
            None,
            "{l}: signed at start"
        );
        t.cleanup().await;
    }
}

/// A stored bundle row that is not what was signed is never served and never signed again:
/// altered bytes stop start with an error naming the row; a bundle published (by an older
/// build) from an altered model row, whose champion version no model row has, stops start too.
#[tokio::test]
async fn a_tampered_bundle_row_is_not_served_nor_re_signed() {
    for t in all_dbs("registry_tampered_bundle").await {
        let (db, l) = (&t.db, t.label);
        let key = keys::public_key_b64(&SEED);
        let a = model(-1.0);
        insert_model(db, &SEED, &a, &card::from_artifact(&a), 1)
            .await
            .unwrap();
        set_alias(db, &SEED, CHAMPION, &a.version(), None, 2)
            .await
            .unwrap();
        let good = current_bundle(db).await.unwrap().unwrap();
        let tampered = good
            .bytes
            .replacen("\"intercept\":-1.0", "\"intercept\":3.0", 1);
        assert_ne!(tampered, good.bytes);
        let set_bytes = |bytes: String, sha: String| async move {
            sqlx::query("UPDATE bundles SET bytes = $1, sha256 = $2 WHERE version = 1")
                .bind(bytes)
                .bind(sha)
                .execute(&db.pool)
                .await
                .unwrap();
        };

        // Bytes altered, recorded sha256 kept.
        set_bytes(tampered.clone(), good.sha256.clone()).await;
        let before = integrity_failures("bundle");
        match served_bundle(db, &key).await {
            Err(RegistryError::Integrity(IntegrityError::Bundle { version: 1, .. })) => {}
            other => panic!("{l}: {other:?}"),
        }
        let e = bootstrap::ensure_trusted(db, &SEED)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("bundle 1") && e.contains("DELETE FROM bundles"),
            "{l}: {e}"
        );
        assert!(integrity_failures("bundle") >= before + 2);
        assert_eq!(
            current_bundle(db).await.unwrap().unwrap().version,
            1,
            "{l}: published"
        );

        // Bytes altered and sha256 recomputed: the signature fails; start stops (naming the
        // rekey command and the row) and publishes nothing: the altered bytes are never signed.
        let sha = kakeya_core::ids::sha256_hex(tampered.as_bytes());
        set_bytes(tampered.clone(), sha).await;
        assert!(matches!(
            served_bundle(db, &key).await,
            Err(RegistryError::Integrity(IntegrityError::Bundle {
                version: 1,
                ..
            }))
        ));
        let e = format!("{:#}", bootstrap::start(db, &SEED).await.unwrap_err());
        assert!(
            e.contains("bundle 1") && e.contains("kakeya bundle rekey"),
            "{l}: {e}"
        );
        assert_eq!(current_bundle(db).await.unwrap().unwrap().version, 1, "{l}");
        set_bytes(good.bytes.clone(), good.sha256.clone()).await;
        bootstrap::start(db, &SEED).await.unwrap();
        let b1 = served(db).await;
        assert_eq!(b1.champion, a, "{l}");

        // What the old code published from an altered row: signed by the real key, carrying a
        // champion no model row has. Start refuses to go on, naming it.
        let mut forged = b1.clone();
        forged.version = 3;
        if let Model::Logistic(m) = &mut forged.champion {
            m.intercept = 3.0;
        }
        let s = sign_checked(&forged, &SEED).unwrap();
        sqlx::query(
            "INSERT INTO bundles (version, sha256, signature, bytes, created_at_ms) \
             VALUES (3, $1, $2, $3, 9)",
        )
        .bind(&s.sha256)
        .bind(&s.signature_b64)
        .bind(String::from_utf8(s.bytes).unwrap())
        .execute(&db.pool)
        .await
        .unwrap();
        let e = bootstrap::ensure_trusted(db, &SEED)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("bundle 3")
                && e.contains(&forged.champion.version())
                && e.contains("kakeya model promote"),
            "{l}: {e}"
        );
        assert_eq!(current_bundle(db).await.unwrap().unwrap().version, 3, "{l}");
        t.cleanup().await;
    }
}

/// Through the admin router: `GET /v1/bundles/current` refuses a stored bundle row whose bytes
/// were altered (500 with a JSON error naming the row, counted in `/metrics`) and serves the
/// bundle again once the row is restored.
#[tokio::test]
async fn the_bundle_route_does_not_serve_an_altered_row() {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    for t in all_dbs("registry_bundle_route").await {
        let (db, l) = (&t.db, t.label);
        let a = model(-1.0);
        insert_model(db, &SEED, &a, &card::from_artifact(&a), 1)
            .await
            .unwrap();
        set_alias(db, &SEED, CHAMPION, &a.version(), None, 2)
            .await
            .unwrap();
        let good = current_bundle(db).await.unwrap().unwrap();
        let metrics = crate::metrics::Metrics::new().unwrap();
        let router = crate::api::admin_router(crate::api::AdminState {
            db: db.clone(),
            metrics: metrics.clone(),
            committer: std::sync::Arc::new(crate::ingest::CommitterStatus {
                wal_ok: true.into(),
                db_ok: true.into(),
            }),
            wal_dir: std::env::temp_dir(),
            admin_token: crate::api::auth::Secret::new("registry-test-token"),
            bundle_seed: Some(std::sync::Arc::new(SEED)),
            evidence: None,
            leases: crate::lease::Leases::new(
                metrics.leader.clone(),
                std::time::Duration::from_secs(5),
            ),
            scheduler: Default::default(),
            drift: crate::drift::DriftOptions::default(),
            cost: Default::default(),
            canary: crate::canary::CanaryOptions::default(),
        });
        let get = |path: &'static str| {
            let router = router.clone();
            async move {
                let resp = router
                    .oneshot(
                        Request::get(path)
                            .header("authorization", "Bearer registry-test-token")
                            .body(Body::empty())
                            .unwrap(),
                    )
                    .await
                    .unwrap();
                let status = resp.status();
                let body = resp.into_body().collect().await.unwrap().to_bytes();
                (status, String::from_utf8(body.to_vec()).unwrap())
            }
        };
        let (s, body) = get(BUNDLE_PATH).await;
        assert_eq!(
            (s, body.as_str()),
            (StatusCode::OK, good.bytes.as_str()),
            "{l}"
        );
        let set = |bytes: String| async move {
            sqlx::query("UPDATE bundles SET bytes = $1 WHERE version = 1")
                .bind(bytes)
                .execute(&db.pool)
                .await
                .unwrap();
        };
        set(good
            .bytes
            .replacen("\"intercept\":-1.0", "\"intercept\":3.0", 1))
        .await;
        let (s, body) = get(BUNDLE_PATH).await;
        assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR, "{l}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(
            v["error"]
                .as_str()
                .unwrap()
                .contains("bundle 1 failed its integrity check"),
            "{body}"
        );
        assert_eq!(v["code"], "integrity_failure");
        let (_, m) = get("/metrics").await;
        assert!(
            m.lines().any(|x| x.starts_with(
                "kakeya_registry_integrity_failures_total{what=\"bundle\"}"
            )),
            "{m}"
        );
        set(good.bytes.clone()).await;
        assert_eq!(get(BUNDLE_PATH).await.0, StatusCode::OK, "{l}");

        // Promoting an altered model row: 409 `integrity_failure`, nothing published.
        let b = model(-2.0);
        insert_model(db, &SEED, &b, &card::from_artifact(&b), 3)
            .await
            .unwrap();
        let (text, _) = stored(db, &b.version()).await;
        set_artifact(
            db,
            &b.version(),
            &text.replacen("\"intercept\":-2.0", "\"intercept\":3.0", 1),
            None,
            None,
        )
        .await;
        for path in ["/v1/aliases/champion", "/v1/aliases/challenger"] {
            let resp = router
                .clone()
                .oneshot(
                    Request::post(path)
                        .header("authorization", "Bearer registry-test-token")
                        .header("content-type", "application/json")
                        .body(Body::from(
                            serde_json::json!({"version": b.version(), "weight": if path.ends_with("challenger") { Some(0.5) } else { None }})
                                .to_string(),
                        ))
                        .unwrap(),
                )
                .await
                .unwrap();
            let status = resp.status();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(status, StatusCode::CONFLICT, "{l}: {path}: {v}");
            assert_eq!(v["code"], "integrity_failure", "{l}: {v}");
            assert!(v["error"].as_str().unwrap().contains(&b.version()), "{v}");
        }
        assert_eq!(current_bundle(db).await.unwrap().unwrap(), good, "{l}");
        t.cleanup().await;
    }
}

/// A PCS v0.2 of `ev` (built by the text recipe, evidence bound), its verification outcome.
fn v02_answer(
    ev: &kakeya_core::evidence::Evidence,
) -> (kakeya_core::Pcs, kakeya_core::verify::Outcome) {
    let built = kakeya_core::pcs_builder::build(&ev.response, &Default::default())
        .bind_evidence(&kakeya_core::evidence::evidence_sha256(ev));
    let mut v = built.to_json("");
    v["evidence"] = serde_json::to_value(ev).unwrap();
    let pcs = kakeya_core::parse(v.to_string().as_bytes()).unwrap();
    assert_eq!(kakeya_core::features::pcs_version(&pcs), "0.2");
    // The id the evidence-bound PCS must carry (whatever the id formula is).
    assert_eq!(pcs.pcs_id, kakeya_core::ids::expected_pcs_id(&pcs));
    let o = kakeya_core::verify(&pcs, &kakeya_core::VerifyParams::default());
    assert!(o.result.accepted, "{:?}", o.result);
    (pcs, o)
}

/// Issue 6 item 9: the same v0.2 answer under the same model, scored with the bundles published
/// before and after a burst of 500 rows of unrelated traffic with extreme signals: a v0.1 burst
/// changes nothing (bit for bit: statistics are per PCS version), a v0.2 burst moves the
/// calibrated risk by at most |platt.a| × TENANT_MAX_SHIFT / 2 (z by at most 2 × 0.1).
#[tokio::test]
async fn a_burst_of_unrelated_traffic_moves_a_score_by_at_most_the_documented_bound() {
    use kakeya_core::bundle::{Scorer, TENANT_MAX_SHIFT};
    const DAY: i64 = 86_400_000;
    let now = 100 * DAY;
    let ev = kakeya_core::evidence::Evidence {
        question: "Which river flows through Paris?".into(),
        context: "Paris lies on the Seine, which flows through the city from east to west.".into(),
        citations: vec![],
        response: "The Loire flows through Paris from north to south since 1850.".into(),
        task: None,
    };
    let (pcs, o) = v02_answer(&ev);
    for t in all_dbs("registry_tenant_burst").await {
        let (db, l) = (&t.db, t.label);
        bootstrap::ensure_default(db, &SEED).await.unwrap().unwrap();
        let champion = served(db).await.champion;
        let base = *champion.tenant();
        let score = |b: Bundle| Scorer::new(b).assess("acme", &pcs, &o, Some(&ev)).unwrap();
        let baseline = score(served(db).await);
        // acme's ordinary v0.2 traffic, around the model's baseline.
        for i in 0..200 {
            let w = (i % 11) as f64 / 100.0;
            let s = (base.avg_d_hat + w, base.avg_coh - w, base.avg_r - w);
            log_row(db, &format!("acme-{i}"), "acme", s, now - DAY + i).await;
        }
        republish(db, &SEED, now).await.unwrap();
        let before = served(db).await;
        assert_eq!(before.tenant_stats["acme"].count, 200, "{l}");
        let r1 = score(before.clone());
        // 500 rows of v0.1 load traffic with extreme signals: nothing moves.
        for i in 0..500 {
            let id = format!("load-{i}");
            log_row_full(
                db,
                &id,
                "acme",
                (3.5, 0.0, 1.0),
                now - DAY + 1000 + i,
                true,
                "0.1",
            )
            .await;
        }
        republish(db, &SEED, now).await.unwrap();
        let after_v01 = served(db).await;
        assert_eq!(after_v01.tenant_stats, before.tenant_stats, "{l}");
        assert_eq!(score(after_v01), r1, "{l}: a v0.1 burst moved a v0.2 score");
        // 500 v0.2 rows with extreme signals (more than the tenant's own 200): the statistics
        // move, the score by at most the bound.
        for i in 0..500 {
            let id = format!("burst-{i}");
            log_row(db, &id, "acme", (3.5, 0.0, 1.0), now - DAY + 2000 + i).await;
        }
        republish(db, &SEED, now).await.unwrap();
        let after = served(db).await;
        assert_ne!(
            after.tenant_stats["acme"], before.tenant_stats["acme"],
            "{l}"
        );
        let r2 = score(after);
        let a = champion.platt().a.abs();
        let between = a * TENANT_MAX_SHIFT / 2.0;
        // The figure docs/ARCHITECTURE.md and README.md give for the default model.
        assert!((between - 0.0589).abs() < 5e-5, "{l}: {between}");
        for (r, what) in [(&r1, "before"), (&r2, "after")] {
            assert!(
                (r.risk - baseline.risk).abs() <= a * TENANT_MAX_SHIFT / 4.0 + 1e-12,
                "{l}: {what}: {} vs baseline {}",
                r.risk,
                baseline.risk
            );
        }
        assert!(
            (r2.risk - r1.risk).abs() <= between + 1e-12,
            "{l}: {} → {} (bound {between})",
            r1.risk,
            r2.risk
        );
        assert_ne!(
            r2.risk, baseline.risk,
            "{l}: the tenant statistics had no effect at all"
        );
        eprintln!(
            "{l}: default model |platt.a| = {a:.4}: bound {between:.4}; risk {:.4} (baseline) \
             {:.4} (before) {:.4} (after the v0.2 burst)",
            baseline.risk, r1.risk, r2.risk
        );
        t.cleanup().await;
    }
}
