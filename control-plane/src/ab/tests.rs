//! Experiment tests: start/stop/expiry and the bundle they publish, and the statistics checked
//! against an independent computation, on SQLite and PostgreSQL; the routes through a live
//! control plane.

use super::stats::{self, Verdict, MIN_PER_CLASS};
use super::*;
use crate::api::tests::{admin, bearer, config, http, read_token};
use crate::registry::tests::model;
use crate::registry::tests::{remove_challenger, set_alias};
use crate::registry::{card, insert_model, served_bundle};
use crate::review::{self, NewLabel};
use crate::server::start as serve;
use crate::store::apply_record;
use crate::testutil::{all_dbs, pcs_body, record};
use kakeya_core::bundle::{experiment_bucket, Arm, Bundle};
use serde_json::json;
use sqlx::Connection;

const SEED: [u8; 32] = [5; 32];
const T: i64 = 1_700_000_000_000;
const MIN: i64 = 60_000;

/// Registers three models and makes the first the champion; returns their versions.
async fn setup(db: &Db) -> [String; 3] {
    let ms = [model(-1.0), model(-2.0), model(-3.0)];
    for m in &ms {
        insert_model(db, &SEED, m, &card::from_artifact(m), T)
            .await
            .unwrap();
    }
    set_alias(db, &SEED, CHAMPION, &ms[0].version(), None, T)
        .await
        .unwrap();
    ms.map(|m| m.version())
}

fn request(name: &str, control: &str, treatment: &str, split: f64, duration: &str) -> StartRequest {
    StartRequest {
        name: name.into(),
        control: control.into(),
        treatment: treatment.into(),
        traffic_split: split,
        duration: duration.into(),
    }
}

async fn bundle(db: &Db) -> Bundle {
    served_bundle(db, &registry::keys::public_key_b64(&SEED))
        .await
        .unwrap()
        .unwrap()
        .1
}

#[test]
fn durations_parse_and_bad_ones_are_refused() {
    for (s, secs) in [
        ("7d", 7 * 86_400),
        ("36h", 36 * 3600),
        ("90m", 5400),
        ("1h 30m", 5400),
        (" 2days ", 2 * 86_400),
        ("1m", 60),
        ("366d", 366 * 86_400),
    ] {
        assert_eq!(parse_duration(s).unwrap(), Duration::from_secs(secs), "{s}");
    }
    for bad in [
        "",
        "7",
        "d",
        "-1d",
        "59s",
        "0m",
        "367d",
        "2y",
        "7 parsecs",
        "1e3h",
        &"1".repeat(65),
    ] {
        assert!(
            matches!(parse_duration(bad), Err(AbError::Invalid(_))),
            "{bad:?}"
        );
    }
    assert_eq!(rfc3339(T), "2023-11-14T22:13:20.000Z");
}

#[tokio::test]
async fn start_publishes_the_salted_split_and_stop_removes_it() {
    for t in all_dbs("ab_start_stop").await {
        let db = &t.db;
        let [a, b, c] = setup(db).await;
        let ok = request("ranker", &a, &b, 0.3, "7d");
        // Bad input: 400 before anything is looked at, nothing stored.
        for bad in [
            request("", &a, &b, 0.3, "7d"),
            request("a/b", &a, &b, 0.3, "7d"),
            request(&"n".repeat(65), &a, &b, 0.3, "7d"),
            request("r", &a, &b, 0.0, "7d"),
            request("r", &a, &b, 1.0, "7d"),
            request("r", &a, &b, f64::NAN, "7d"),
            request("r", &a, &b, -0.5, "7d"),
            request("r", &a, &b, 0.3, "7 weeks-ish"),
            request("r", &a, &b, 0.3, "10s"),
            request("r", &a, &a, 0.3, "7d"),
            request("r", "", &b, 0.3, "7d"),
        ] {
            let e = start(db, &SEED, &bad, By::Api, T).await;
            assert!(
                matches!(e, Err(AbError::Invalid(_))),
                "{}: {bad:?}",
                t.label
            );
        }
        assert!(matches!(
            start(
                db,
                &SEED,
                &request("r", &a, "lr-none", 0.3, "7d"),
                By::Api,
                T
            )
            .await,
            Err(AbError::Registry(RegistryError::NoModel(_)))
        ));
        assert!(matches!(
            start(db, &SEED, &request("r", &b, &c, 0.3, "7d"), By::Api, T).await,
            Err(AbError::ControlNotChampion { .. })
        ));
        set_alias(db, &SEED, CHALLENGER, &c, Some(0.5), T)
            .await
            .unwrap();
        assert!(matches!(
            start(db, &SEED, &ok, By::Api, T).await,
            Err(AbError::ChallengerInUse(v)) if v == c
        ));
        remove_challenger(db, &SEED, T).await.unwrap();
        assert!(store::list(&db.pool, 10).await.unwrap().is_empty());
        let before = bundle(db).await.version;

        let s = start(db, &SEED, &ok, By::Api, T).await.unwrap();
        let id = format!("ab-ranker-{}", T / 1000);
        assert_eq!(s.experiment_id, id);
        assert_eq!(
            (s.ends_at_ms, s.ends_at.as_str()),
            (T + 7 * 1440 * MIN, "2023-11-21T22:13:20.000Z")
        );
        let e = &s.experiment;
        assert_eq!(e.status, Status::Running, "{}", t.label);
        assert_eq!(e.first_bundle_version, Some(s.bundle_version));
        assert_eq!(s.bundle_version, i64::try_from(before).unwrap() + 1);
        let served = bundle(db).await;
        assert_eq!(
            served.challenger.as_ref().map(|m| m.version()),
            Some(b.clone())
        );
        assert_eq!(served.challenger_weight, 0.3);
        assert_eq!(served.policy.arm_key, ArmKey::Tenant);
        assert_eq!(served.policy.experiment.as_deref(), Some(id.as_str()));
        for i in 0..500 {
            let tenant = format!("tenant-{i}");
            let treated = experiment_bucket(&id, &tenant) < 3000;
            assert_eq!(served.arm(&tenant, "p") == Arm::Challenger, treated);
        }

        // One at a time, whatever the name.
        assert!(matches!(
            start(db, &SEED, &request("other", &a, &c, 0.5, "1d"), By::Api, T + 5).await,
            Err(AbError::Running(r)) if r == id
        ));

        let e = stop(db, &SEED, &id, StopReason::Manual, By::Api, T + MIN)
            .await
            .unwrap();
        assert_eq!(e.status, Status::Stopped);
        assert_eq!(e.stop_reason, Some(StopReason::Manual));
        assert_eq!(e.stopped_at_ms, Some(T + MIN));
        assert_eq!(e.end_bundle_version, Some(s.bundle_version + 1));
        let served = bundle(db).await;
        assert!(served.challenger.is_none());
        assert_eq!(served.policy, Policy::default());
        assert!(matches!(
            stop(db, &SEED, &id, StopReason::Manual, By::Api, T + MIN).await,
            Err(AbError::NotRunning {
                status: Status::Stopped,
                ..
            })
        ));
        assert!(matches!(
            stop(db, &SEED, "ab-nope-1", StopReason::Manual, By::Api, T).await,
            Err(AbError::NoExperiment(_))
        ));
        // The next one may start.
        let s2 = start(
            db,
            &SEED,
            &request("other", &a, &c, 0.5, "1d"),
            By::Cli,
            T + 2 * MIN,
        )
        .await
        .unwrap();
        let listed: Vec<String> = store::list(&db.pool, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(listed, [s2.experiment_id.clone(), id]);
        t.cleanup().await;
    }
}

#[tokio::test]
async fn republications_keep_the_arms_and_outside_alias_changes_end_it() {
    for t in all_dbs("ab_republish").await {
        let db = &t.db;
        let [a, b, c] = setup(db).await;
        let s = start(db, &SEED, &request("r", &a, &b, 0.5, "1d"), By::Api, T)
            .await
            .unwrap();
        let first = bundle(db).await;
        // Other publications while it runs (e.g. refreshed tenant statistics) keep the salt:
        // no tenant changes arm across the experiment's bundles.
        registry::republish(db, &SEED, T + 1).await.unwrap();
        registry::republish(db, &SEED, T + 2).await.unwrap();
        let later = bundle(db).await;
        assert_eq!(later.version, first.version + 2);
        assert_eq!(later.policy, first.policy);
        for i in 0..2000 {
            let tenant = format!("t{i}");
            assert_eq!(later.arm(&tenant, "x"), first.arm(&tenant, "y"), "{tenant}");
        }
        let running = store::get(&db.pool, &s.experiment_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(running.status, Status::Running);
        // Another challenger, set outside the experiment: it ends in that publication.
        let p = set_alias(db, &SEED, CHALLENGER, &c, Some(0.5), T + 3)
            .await
            .unwrap();
        let e = store::get(&db.pool, &s.experiment_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(e.status, Status::Stopped, "{}", t.label);
        assert_eq!(e.stop_reason, Some(StopReason::AliasesChanged));
        assert_eq!(e.end_bundle_version, Some(p.bundle_version));
        let served = bundle(db).await;
        assert_eq!(
            served.policy,
            Policy::default(),
            "no salt without the experiment"
        );
        assert!(matches!(
            stop(db, &SEED, &e.id, StopReason::Manual, By::Api, T + 4).await,
            Err(AbError::NotRunning { .. })
        ));
        t.cleanup().await;
    }
}

#[tokio::test]
async fn experiments_complete_at_ends_at() {
    for t in all_dbs("ab_expiry").await {
        let db = &t.db;
        let [a, b, _] = setup(db).await;
        let s = start(db, &SEED, &request("r", &a, &b, 0.2, "90m"), By::Api, T)
            .await
            .unwrap();
        assert!(expire_due(db, &SEED, T + 89 * MIN)
            .await
            .unwrap()
            .is_empty());
        assert!(bundle(db).await.challenger.is_some());
        let done = expire_due(db, &SEED, T + 90 * MIN).await.unwrap();
        assert_eq!(done.len(), 1, "{}", t.label);
        let e = &done[0];
        assert_eq!(e.id, s.experiment_id);
        assert_eq!(e.status, Status::Completed);
        assert_eq!(e.stop_reason, Some(StopReason::Expired));
        assert_eq!(e.stopped_at_ms, Some(T + 90 * MIN));
        assert!(bundle(db).await.challenger.is_none());
        assert!(expire_due(db, &SEED, T + 91 * MIN)
            .await
            .unwrap()
            .is_empty());
        t.cleanup().await;
    }
}

/// The champion changes between a start's checks and its publication: the publication is
/// refused, so no challenger is set, and the start removes its pending row.
#[tokio::test]
async fn a_start_that_loses_its_champion_changes_nothing() {
    for t in all_dbs("ab_race").await {
        let db = &t.db;
        let [a, b, c] = setup(db).await;
        let e = Experiment {
            id: "ab-r-1".into(),
            name: "r".into(),
            scope: SCOPE.into(),
            control: a.clone(),
            treatment: b.clone(),
            traffic_split: 0.5,
            status: Status::Pending,
            started_at_ms: T,
            ends_at_ms: T + MIN,
            stop_reason: None,
            stopped_at_ms: None,
            first_bundle_version: None,
            end_bundle_version: None,
        };
        assert!(store::insert_pending(&db.pool, &e).await.unwrap());
        // An unrelated publication while it is pending leaves it alone.
        set_alias(db, &SEED, CHAMPION, &c, None, T).await.unwrap();
        assert_eq!(bundle(db).await.policy, Policy::default());
        let r = move_challenger(db, &SEED, Some((&b, 0.5)), &e.id, By::Api, T).await;
        assert!(
            matches!(r, Err(RegistryError::Conflict(_))),
            "{}: {r:?}",
            t.label
        );
        assert!(bundle(db).await.challenger.is_none());
        store::delete_pending(&db.pool, &e.id).await.unwrap();
        assert!(store::get(&db.pool, &e.id).await.unwrap().is_none());
        t.cleanup().await;
    }
}

/// A tiny deterministic generator (the fixture must be the same on every run).
struct Lcg(u64);

impl Lcg {
    fn uniform(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// One decision of the fixture, and what the test expects of it.
struct Fixture {
    tenant: String,
    pcs_id: String,
    arm: &'static str,
    risk: f64,
    escalated: bool,
    verify_ns: Option<u64>,
    /// The label that counts (gold beats silver), if labelled.
    label: Option<bool>,
    /// Part of the experiment (scored by its bundles with its models).
    counted: bool,
}

/// Logs one decision scored by `model` on `arm` with `bundle` (or unscored when `None`).
async fn decide(
    db: &Db,
    n: usize,
    tenant: &str,
    scored: Option<(&str, &str, i64, f64)>,
    escalated: bool,
    verify_ns: Option<u64>,
) -> String {
    let body = pcs_body(&format!("ab-{n}"));
    let pcs_id = kakeya_core::parse(body.as_bytes()).unwrap().pcs_id;
    let mut rec = record(tenant, &body, T + n as i64);
    rec.verify_ns = verify_ns;
    let mut vr: serde_json::Value = serde_json::from_str(&rec.result).unwrap();
    vr["accepted"] = true.into();
    vr["escalated"] = escalated.into();
    if let Some((arm, model_version, bundle, risk)) = scored {
        vr["risk"] = json!({"score": risk, "band": "low", "model_version": model_version,
                            "arm": arm, "bundle_version": bundle});
    }
    rec.result = vr.to_string();
    let mut conn = db.pool.acquire().await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    let a = apply_record(
        &mut tx,
        &format!("rec-{n}"),
        &rec,
        &crate::store::ApplyParams {
            dedup_ttl_ms: 60_000,
            audit_sample_rate: 0.0,
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert!(a.fresh);
    pcs_id
}

async fn label(db: &Db, f: &Fixture, hallucinated: bool, gold: bool) {
    let l = if hallucinated {
        review::Label::Hallucinated
    } else {
        review::Label::Faithful
    };
    let nl = if gold {
        NewLabel::review(&f.tenant, &f.pcs_id, l, "alice", None).unwrap()
    } else {
        NewLabel::feedback(Some(&f.tenant), &f.pcs_id, l, None).unwrap()
    };
    review::submit(db, &nl, T).await.unwrap();
}

/// NumPy `quantile(method='linear')`, written out.
fn numpy_linear(sorted: &[f64], q: f64) -> f64 {
    let h = (sorted.len() - 1) as f64 * q;
    let i = h.floor() as usize;
    match sorted.get(i + 1) {
        Some(b) => sorted[i] + (b - sorted[i]) * (h - i as f64),
        None => sorted[i],
    }
}

/// AUROC and its DeLong variance from the O(m·n) placements (not the midranks the code uses).
fn pairwise_delong(scores: &[f64], labels: &[bool]) -> (f64, f64) {
    let x: Vec<f64> = scores
        .iter()
        .zip(labels)
        .filter(|p| *p.1)
        .map(|p| *p.0)
        .collect();
    let y: Vec<f64> = scores
        .iter()
        .zip(labels)
        .filter(|p| !*p.1)
        .map(|p| *p.0)
        .collect();
    let psi = |a: f64, b: f64| match a.partial_cmp(&b) {
        Some(std::cmp::Ordering::Greater) => 1.0,
        Some(std::cmp::Ordering::Equal) => 0.5,
        _ => 0.0,
    };
    let (m, n) = (x.len() as f64, y.len() as f64);
    let v10: Vec<f64> = x
        .iter()
        .map(|&a| y.iter().map(|&b| psi(a, b)).sum::<f64>() / n)
        .collect();
    let v01: Vec<f64> = y
        .iter()
        .map(|&b| x.iter().map(|&a| psi(a, b)).sum::<f64>() / m)
        .collect();
    let theta = v10.iter().sum::<f64>() / m;
    let s = |v: &[f64]| v.iter().map(|p| (p - theta).powi(2)).sum::<f64>() / (v.len() - 1) as f64;
    (theta, s(&v10) / m + s(&v01) / n)
}

fn wilson95(k: u64, n: u64) -> (f64, f64) {
    let (p, n, z) = (k as f64 / n as f64, n as f64, 1.959_963_984_540_054);
    let d = 1.0 + z * z / n;
    let c = (p + z * z / (2.0 * n)) / d;
    let h = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt() / d;
    (c - h, c + h)
}

fn close(what: &str, got: f64, want: f64, tol: f64) {
    assert!(
        (got - want).abs() <= tol * want.abs().max(1.0),
        "{what}: got {got}, want {want}"
    );
}

/// Every number of the statistics page against an independent computation over a fixture of
/// decisions: in the experiment (both arms), before it (the previous bundle), after it (the
/// bundle that ended it), of another model, unscored; labelled by gold and silver labels that
/// disagree on some decisions.
#[tokio::test]
async fn statistics_match_an_independent_computation() {
    for t in all_dbs("ab_stats").await {
        let db = &t.db;
        let [a, b, c] = setup(db).await;
        let s = start(db, &SEED, &request("s", &a, &b, 0.5, "1d"), By::Api, T)
            .await
            .unwrap();
        let (first, id) = (s.bundle_version, s.experiment_id.clone());
        let served = bundle(db).await;
        let mut rng = Lcg(7);
        let mut fx: Vec<Fixture> = Vec::new();
        for n in 0..360 {
            let tenant = format!("tenant-{}", n % 48);
            let arm = served.arm(&tenant, "");
            let (arm_name, version) = match arm {
                Arm::Champion => ("champion", a.as_str()),
                Arm::Challenger => ("challenger", b.as_str()),
                Arm::Canary => unreachable!("no canary during an experiment"),
            };
            // Kinds: 0..=2 in the experiment, 3 the previous bundle, 4 another model, 5 unscored.
            let kind = match n % 12 {
                9 => 3,
                10 => 4,
                11 => 5,
                _ => 0,
            };
            let hallucinated = rng.uniform() < 0.5;
            let noise = rng.uniform();
            // The treatment ranks well, the control at random.
            let risk = match (arm, hallucinated) {
                (Arm::Challenger, true) => 0.35 + 0.65 * noise,
                (Arm::Challenger, false) => 0.65 * noise,
                _ => noise,
            };
            let escalated = rng.uniform() < 0.1 + 0.3 * risk;
            let verify_ns = (rng.uniform() > 0.1).then(|| 1_000 + (rng.uniform() * 2e6) as u64);
            let scored = match kind {
                0 => Some((arm_name, version, first, risk)),
                3 => Some((arm_name, version, first - 1, risk)),
                4 => Some((arm_name, c.as_str(), first, risk)),
                _ => None,
            };
            let pcs_id = decide(db, n, &tenant, scored, escalated, verify_ns).await;
            fx.push(Fixture {
                tenant,
                pcs_id,
                arm: arm_name,
                risk,
                escalated,
                verify_ns,
                label: (rng.uniform() < 0.6).then_some(hallucinated),
                counted: kind == 0,
            });
        }
        // Before any label: no AUROC, insufficient data.
        let r = stats::report(&db.pool, &store::get(&db.pool, &id).await.unwrap().unwrap())
            .await
            .unwrap();
        assert_eq!(r.verdict, Verdict::InsufficientData, "{}", t.label);
        assert!(r.control.auroc.is_none() && r.auroc_difference.is_none());
        assert_eq!(r.control.labelled + r.treatment.labelled, 0);
        // Labels: silver for all; a gold one that disagrees on every tenth, and wins.
        for (i, f) in fx.iter_mut().enumerate() {
            let Some(h) = f.label else { continue };
            label(db, f, h, false).await;
            if i % 10 == 0 {
                label(db, f, !h, true).await;
                f.label = Some(!h);
            }
        }
        let e = stop(db, &SEED, &id, StopReason::Manual, By::Api, T + MIN)
            .await
            .unwrap();
        let end = e.end_bundle_version.unwrap();
        // After the end: not counted, whatever they claim.
        for (k, arm_name, version) in [(0, "champion", &a), (1, "challenger", &b)] {
            let n = 1000 + k;
            let pcs_id = decide(
                db,
                n,
                "late",
                Some((arm_name, version, end, 0.9)),
                true,
                Some(5),
            )
            .await;
            let f = Fixture {
                tenant: "late".into(),
                pcs_id,
                arm: arm_name,
                risk: 0.9,
                escalated: true,
                verify_ns: Some(5),
                label: Some(true),
                counted: false,
            };
            label(db, &f, true, true).await;
            fx.push(f);
        }

        let r = stats::report(&db.pool, &e).await.unwrap();
        assert_eq!(r.experiment, e);
        for (arm_name, got, version) in [
            ("champion", &r.control, &a),
            ("challenger", &r.treatment, &b),
        ] {
            let rows: Vec<&Fixture> = fx
                .iter()
                .filter(|f| f.counted && f.arm == arm_name)
                .collect();
            let what = format!("{} {arm_name}", t.label);
            assert_eq!((got.arm.as_str(), &got.model_version), (arm_name, version));
            assert_eq!(got.requests, rows.len() as u64, "{what}");
            let tenants: std::collections::BTreeSet<&str> =
                rows.iter().map(|f| f.tenant.as_str()).collect();
            assert_eq!(got.tenants, tenants.len() as u64, "{what}");
            let k = rows.iter().filter(|f| f.escalated).count() as u64;
            assert_eq!(got.escalated, k, "{what}");
            close(
                &what,
                got.escalation_rate.unwrap(),
                k as f64 / rows.len() as f64,
                1e-15,
            );
            let (lo, hi) = wilson95(k, rows.len() as u64);
            let ci = got.escalation_ci95.unwrap();
            close(&what, ci.low, lo, 1e-12);
            close(&what, ci.high, hi, 1e-12);
            let mut ns: Vec<f64> = rows
                .iter()
                .filter_map(|f| f.verify_ns)
                .map(|v| v as f64)
                .collect();
            ns.sort_by(f64::total_cmp);
            let lat = got.latency_ns.as_ref().unwrap();
            assert_eq!(lat.n, ns.len() as u64, "{what}");
            for (q, v) in [(0.5, lat.p50), (0.95, lat.p95), (0.99, lat.p99)] {
                close(&format!("{what} p{q}"), v, numpy_linear(&ns, q), 1e-12);
            }
            let (scores, labels): (Vec<f64>, Vec<bool>) =
                rows.iter().filter_map(|f| Some((f.risk, f.label?))).unzip();
            assert_eq!(got.labelled, labels.len() as u64, "{what}");
            let positives = labels.iter().filter(|&&l| l).count() as u64;
            assert_eq!(
                (got.hallucinated, got.faithful),
                (positives, labels.len() as u64 - positives)
            );
            assert!(positives as usize >= MIN_PER_CLASS && got.faithful as usize >= MIN_PER_CLASS);
            let (theta, var) = pairwise_delong(&scores, &labels);
            let au = got.auroc.as_ref().unwrap();
            close(&format!("{what} auroc"), au.auroc, theta, 1e-12);
            close(&format!("{what} variance"), au.variance, var, 1e-12);
            close(
                &what,
                au.ci95.low,
                (theta - 1.959_963_984_540_054 * var.sqrt()).max(0.0),
                1e-12,
            );
            close(
                &what,
                au.ci95.high,
                (theta + 1.959_963_984_540_054 * var.sqrt()).min(1.0),
                1e-12,
            );
        }
        let (ct, tt) = (
            r.control.auroc.clone().unwrap(),
            r.treatment.auroc.clone().unwrap(),
        );
        let cmp = r.auroc_difference.clone().unwrap();
        let diff = tt.auroc - ct.auroc;
        let z = diff / (ct.variance + tt.variance).sqrt();
        close("difference", cmp.difference, diff, 1e-12);
        close("z", cmp.z, z, 1e-12);
        close(
            "p",
            cmp.p_value,
            libm::erfc(z.abs() / std::f64::consts::SQRT_2),
            1e-12,
        );
        assert!(cmp.p_value < 0.05 && diff > 0.0, "{}: {cmp:?}", t.label);
        assert_eq!(r.verdict, Verdict::TreatmentBetter, "{}", r.verdict_reason);
        eprintln!(
            "{}: control AUROC {:.4}, treatment {:.4}, z {:.3}, p {:.2e}",
            t.label, ct.auroc, tt.auroc, cmp.z, cmp.p_value
        );
        t.cleanup().await;
    }
}

#[test]
fn verdicts_follow_the_sign_and_the_p_value() {
    let arm = |scores: &[f64], labels: &[u8]| stats::ArmStats {
        arm: "x".into(),
        model_version: "m".into(),
        requests: 0,
        tenants: 0,
        escalated: 0,
        escalation_rate: None,
        escalation_ci95: None,
        latency_ns: None,
        labelled: labels.len() as u64,
        hallucinated: labels.iter().filter(|&&l| l == 1).count() as u64,
        faithful: labels.iter().filter(|&&l| l == 0).count() as u64,
        auroc: stats::arm_auroc(scores, labels),
    };
    let labels: Vec<u8> = (0..40).map(|i| u8::from(i % 2 == 0)).collect();
    let good: Vec<f64> = (0..40)
        .map(|i| if i % 2 == 0 { 0.9 } else { 0.1 } + i as f64 * 1e-3)
        .collect();
    let random: Vec<f64> = (0..40).map(|i| ((i * 7919) % 40) as f64).collect();
    let (g, r) = (arm(&good, &labels), arm(&random, &labels));
    assert_eq!(stats::verdict(&r, &g).1, Verdict::TreatmentBetter);
    assert_eq!(stats::verdict(&g, &r).1, Verdict::ControlBetter);
    assert_eq!(stats::verdict(&r, &r).1, Verdict::NoDifference);
    let few = arm(&good[..12], &labels[..12]);
    let (cmp, v, why) = stats::verdict(&few, &g);
    assert_eq!((cmp, v), (None, Verdict::InsufficientData));
    assert!(why.contains("at least 10"), "{why}");
}

/// The routes through a live control plane: JSON errors with their codes, 201/200/409/404.
#[tokio::test]
async fn routes_answer_as_documented() {
    let tmp = tempfile::tempdir().unwrap();
    let r = serve(&config(tmp.path())).await.unwrap();
    let token = read_token(tmp.path());
    let url = |p: &str| format!("http://{}{p}", r.admin_addr);
    let post =
        |p: &str, body: serde_json::Value| http("POST", url(p), bearer(&token), body.to_string());
    // The default model is the champion; register another through the API.
    let models = admin(&r, "GET", "/v1/models", Some(&token)).await.json();
    let champion = models[0]["version"].as_str().unwrap().to_string();
    let other = model(-0.5);
    let a = post("/v1/models", serde_json::to_value(&other).unwrap()).await;
    assert_eq!(a.status, 201, "{}", a.body);
    let treatment = other.version();
    let body = |name: &str, control: &str, split: serde_json::Value, duration: &str| json!({"name": name, "control": control, "treatment": treatment, "traffic_split": split, "duration": duration});
    for (b, status, code) in [
        (json!({"name": "x"}), 400, "bad_request"),
        (json!([1]), 400, "bad_request"),
        (body("x", &champion, json!(1.5), "7d"), 400, "bad_request"),
        (
            body("x", &champion, json!(0.5), "forever"),
            400,
            "bad_request",
        ),
        (body("x y", &champion, json!(0.5), "7d"), 400, "bad_request"),
        (body("x", &treatment, json!(0.5), "7d"), 400, "bad_request"),
        (
            body("x", "lr-000000000000", json!(0.5), "7d"),
            404,
            "not_found",
        ),
    ] {
        let a = post("/v1/hrs/ab/start", b.clone()).await;
        assert_eq!(
            (a.status, a.json()["code"].as_str()),
            (status, Some(code)),
            "{b}: {}",
            a.body
        );
    }
    let mut extra = body("x", &champion, json!(0.5), "7d");
    extra["weight"] = json!(1);
    assert_eq!(
        post("/v1/hrs/ab/start", extra).await.status,
        400,
        "unknown fields"
    );
    let a = post(
        "/v1/hrs/ab/start",
        body("live", &champion, json!(0.25), "36h"),
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.body);
    let started = a.json();
    let id = started["experiment_id"].as_str().unwrap().to_string();
    assert!(started["ends_at"].as_str().unwrap().ends_with('Z'));
    let a = post(
        "/v1/hrs/ab/start",
        body("again", &champion, json!(0.25), "36h"),
    )
    .await;
    assert_eq!(
        (a.status, a.json()["code"].as_str()),
        (409, Some("experiment_running"))
    );
    let page = admin(&r, "GET", &format!("/v1/hrs/ab/{id}"), Some(&token)).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let page = page.json();
    assert_eq!(page["verdict"], "insufficient_data");
    assert_eq!(page["treatment"]["model_version"], treatment.as_str());
    assert_eq!(page["control"]["requests"], 0);
    let list = admin(&r, "GET", "/v1/hrs/ab?limit=5", Some(&token))
        .await
        .json();
    assert_eq!(list["experiments"][0]["id"], id.as_str());
    assert_eq!(
        admin(&r, "GET", "/v1/hrs/ab?limit=0", Some(&token))
            .await
            .status,
        400
    );
    assert_eq!(
        admin(&r, "GET", "/v1/hrs/ab/ab-none-1", Some(&token))
            .await
            .status,
        404
    );
    let a = admin(&r, "POST", &format!("/v1/hrs/ab/{id}/stop"), Some(&token)).await;
    assert_eq!(
        (a.status, a.json()["status"].as_str()),
        (200, Some("stopped")),
        "{}",
        a.body
    );
    let a = admin(&r, "POST", &format!("/v1/hrs/ab/{id}/stop"), Some(&token)).await;
    assert_eq!(
        (a.status, a.json()["code"].as_str()),
        (409, Some("experiment_not_running"))
    );
    let a = admin(&r, "POST", "/v1/hrs/ab/ab-none-1/stop", Some(&token)).await;
    assert_eq!(a.status, 404);
    r.shutdown().await.unwrap();
}
