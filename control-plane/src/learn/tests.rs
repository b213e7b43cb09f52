//! Datasets and training jobs on SQLite and PostgreSQL, with decision-log rows and labels
//! written by raw SQL (the gate → ingest path of the features columns is not this module's),
//! and features computed from real HaluEval answers with their evidence.

use super::dataset::{self, Counts, DatasetError, DatasetRow, TimeRange};
use super::jobs::{self, JobError, JobParams, JobStatus, RegisteredVersionError};
use super::{ModelKind, TrainingOptions};
use crate::ml::{dataset as ml_dataset, eval};
use crate::review::{Label, Source};
use crate::store::Db;
use crate::testutil::all_dbs;
use kakeya_core::features::{N_FEATURES, SCHEMA_VERSION};
use kakeya_core::pcs_builder::SplitMix64;
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::Connection;
use std::sync::Arc;

/// 2026-01-01T00:00:00Z.
pub(crate) const T0: i64 = 1_767_225_600_000;
pub(crate) const MINUTE: i64 = 60_000;
pub(crate) const SIGNING_SEED: [u8; 32] = [7u8; 32];

/// The first `n` rows of the embedded HaluEval sample (whole items, round-robin over the
/// tasks), as the feature vectors a gate computes from each answer and its evidence.
pub(crate) fn halueval(n: usize) -> (Vec<[f64; N_FEATURES]>, Vec<u8>) {
    let rows = ml_dataset::parse(crate::registry::bootstrap::SAMPLE).unwrap();
    let rows = ml_dataset::sample_by_task(&rows, n);
    let p = eval::prepare(&rows, |_| {});
    let x = (0..p.len()).map(|i| p.row(i).try_into().unwrap()).collect();
    (x, p.labels)
}

/// A decision-log row as the gate and ingest would write it (migration 0009 columns included).
pub(crate) struct Decision {
    pub tenant: String,
    pub pcs_id: String,
    pub created_at_ms: i64,
    /// `(feature_schema, features JSON)`; `None` = not scored.
    pub features: Option<(String, String)>,
    pub escalated: bool,
    pub audit_sample: bool,
}

impl Decision {
    pub fn scored(tenant: &str, pcs_id: &str, at: i64, x: &[f64]) -> Decision {
        Decision {
            tenant: tenant.into(),
            pcs_id: pcs_id.into(),
            created_at_ms: at,
            features: Some((SCHEMA_VERSION.into(), serde_json::to_string(x).unwrap())),
            escalated: true,
            audit_sample: false,
        }
    }
}

/// Writes decisions and labels `(tenant, pcs_id, labeller, source, label, at)` in one
/// transaction.
pub(crate) async fn write(
    db: &Db,
    decisions: &[Decision],
    labels: &[(&str, &str, &str, Source, Label, i64)],
) {
    let mut conn = db.pool.acquire().await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    for (i, d) in decisions.iter().enumerate() {
        let (schema, features) = d.features.clone().unzip();
        sqlx::query(
            "INSERT INTO decision_log (record_id, tenant, pcs_id, d_hat, coh_star, r, budget, \
             regime, accepted, escalated, reason, status, cacheable, verify_ns, created_at_ms, \
             pcs_version, feature_schema, features, audit_sample) VALUES ($1, $2, $3, 1.0, 0.5, \
             0.9, 0.3, 'mixed', 1, $4, NULL, 202, 1, NULL, $5, '0.2', $6, $7, $8)",
        )
        .bind(format!("{}:{}:{i}", d.tenant, d.pcs_id))
        .bind(&d.tenant)
        .bind(&d.pcs_id)
        .bind(i64::from(d.escalated))
        .bind(d.created_at_ms)
        .bind(schema)
        .bind(features)
        .bind(i64::from(d.audit_sample))
        .persistent(false)
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    for (tenant, pcs_id, labeller, source, label, at) in labels {
        sqlx::query(
            "INSERT INTO labels (tenant, pcs_id, labeller, source, label, confidence, comment, \
             created_at_ms) VALUES ($1, $2, $3, $4, $5, $6, NULL, $7)",
        )
        .bind(*tenant)
        .bind(*pcs_id)
        .bind(*labeller)
        .bind(source.as_str())
        .bind(label.as_str())
        .bind(source.confidence())
        .bind(*at)
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
}

fn label_of(y: u8) -> Label {
    if y == 1 {
        Label::Hallucinated
    } else {
        Label::Faithful
    }
}

/// `n` HaluEval rows logged one minute apart from [`T0`] in a seeded random order (so both
/// classes spread over time) for `tenant`, each with a gold label.
pub(crate) async fn seed_halueval(db: &Db, tenant: &str, n: usize) -> usize {
    let (x, y) = halueval(n);
    let mut order: Vec<usize> = (0..x.len()).collect();
    let mut rng = SplitMix64(5);
    for i in (1..order.len()).rev() {
        order.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
    }
    let ids: Vec<String> = (0..x.len()).map(|i| format!("pcs-{i:04}")).collect();
    let decisions: Vec<Decision> = order
        .iter()
        .enumerate()
        .map(|(rank, &i)| Decision::scored(tenant, &ids[i], T0 + rank as i64 * MINUTE, &x[i]))
        .collect();
    let labels: Vec<_> = order
        .iter()
        .enumerate()
        .map(|(rank, &i)| {
            let at = T0 + rank as i64 * MINUTE + 1;
            (
                tenant,
                ids[i].as_str(),
                "alice",
                Source::Gold,
                label_of(y[i]),
                at,
            )
        })
        .collect();
    write(db, &decisions, &labels).await;
    x.len()
}

fn opts(min_labels: usize) -> TrainingOptions {
    TrainingOptions {
        min_labels,
        validation_fraction: 0.25,
        bootstrap_resamples: 200,
    }
}

fn range(start_ms: i64, end_ms: i64) -> TimeRange {
    TimeRange { start_ms, end_ms }
}

/// A small labelled log with every case the dataset rules name; see the comments.
async fn seed_cases(db: &Db) {
    let v = |k: f64| {
        let mut x = [0.0; N_FEATURES];
        x[0] = 1.0 + k / 100.0;
        x[1] = 0.5;
        x[2] = 0.9;
        x[11] = 1.0;
        x[14] = k / 20.0;
        x
    };
    let mut d = Vec::new();
    let mut labels: Vec<(String, String, &str, Source, Label, i64)> = Vec::new();
    // 16 labelled decisions, one minute apart, alternating classes; tenants a and b.
    for k in 0..16 {
        let tenant = if k % 2 == 0 { "a" } else { "b" };
        let id = format!("p{k:02}");
        d.push(Decision::scored(tenant, &id, T0 + k * MINUTE, &v(k as f64)));
        let label = if k % 2 == 0 {
            Label::Hallucinated
        } else {
            Label::Faithful
        };
        labels.push((
            tenant.into(),
            id,
            "owner",
            Source::Silver,
            label,
            T0 + k * MINUTE,
        ));
    }
    // p11 shares p12's minute, the cut's: both validate (a pure time cut). p15 shares p14's.
    d[11].created_at_ms = d[12].created_at_ms;
    d[15].created_at_ms = d[14].created_at_ms;
    // A reviewer overrides the owner of p00: gold wins, the row is faithful.
    labels.push((
        "a".into(),
        "p00".into(),
        "rev",
        Source::Gold,
        Label::Faithful,
        T0 + 99,
    ));
    // A resubmission of p03's answer under another id, logged in the validation part: dropped.
    d.push(Decision::scored(
        "b",
        "p03-again",
        T0 + 13 * MINUTE + 5,
        &v(3.0),
    ));
    labels.push((
        "b".into(),
        "p03-again".into(),
        "owner",
        Source::Silver,
        Label::Faithful,
        T0,
    ));
    // p05 logged again later (uncacheable resubmission): one row, its first decision.
    d.push(Decision::scored("b", "p05", T0 + 14 * MINUTE + 7, &v(55.0)));
    // Labelled but malformed (21 numbers), unscored, another schema, unlabelled, outside.
    let mut bad = Decision::scored("a", "short", T0 + 30, &[1.0; 21]);
    bad.audit_sample = true;
    d.push(bad);
    labels.push((
        "a".into(),
        "short".into(),
        "owner",
        Source::Silver,
        Label::Faithful,
        T0,
    ));
    let mut unscored = Decision::scored("a", "unscored", T0 + 40, &v(1.0));
    unscored.features = None;
    d.push(unscored);
    labels.push((
        "a".into(),
        "unscored".into(),
        "owner",
        Source::Silver,
        Label::Faithful,
        T0,
    ));
    let mut other = Decision::scored("a", "v0", T0 + 50, &v(2.0));
    other.features = Some((
        "hrs-features-v0".into(),
        serde_json::to_string(&v(2.0)).unwrap(),
    ));
    d.push(other);
    labels.push((
        "a".into(),
        "v0".into(),
        "owner",
        Source::Silver,
        Label::Faithful,
        T0,
    ));
    d.push(Decision::scored("a", "nolabel", T0 + 60, &v(9.0)));
    d.push(Decision::scored("a", "late", T0 + 16 * MINUTE, &v(77.0)));
    labels.push((
        "a".into(),
        "late".into(),
        "owner",
        Source::Silver,
        Label::Faithful,
        T0,
    ));
    // An audit-sampled accepted decision among the labelled ones.
    d[2].escalated = false;
    d[2].audit_sample = true;
    let labels: Vec<_> = labels
        .iter()
        .map(|(t, p, who, s, l, at)| (t.as_str(), p.as_str(), *who, *s, *l, *at))
        .collect();
    write(db, &d, &labels).await;
}

/// The documented canonical bytes, spelled out independently of `dataset::hash`.
fn documented_hash(rows: &[DatasetRow]) -> String {
    let mut bytes = format!("kakeya-dataset-v1 {SCHEMA_VERSION}\n");
    for r in rows {
        let f: Vec<String> = r
            .features
            .iter()
            .map(|v| serde_json::to_string(v).unwrap())
            .collect();
        bytes.push_str(&format!(
            "[{},\"{}\",\"{}\",{},\"{}\",[{}]]\n",
            r.created_at_ms,
            r.tenant,
            r.pcs_id,
            r.label,
            r.source.as_str(),
            f.join(",")
        ));
    }
    Sha256::digest(bytes.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test]
async fn datasets_split_by_time_dedupe_validation_and_hash_reproducibly() {
    let mut hashes = Vec::new();
    for t in all_dbs("learn_dataset_rules").await {
        seed_cases(&t.db).await;
        let r = range(T0, T0 + 16 * MINUTE);
        let ds = dataset::build(&t.db, r, &opts(4)).await.unwrap();
        let l = t.label;
        // 16 + resubmission + malformed + unscored + other schema + unlabelled + p05 again.
        assert_eq!(
            ds.counts,
            Counts {
                n_decisions: 22,
                n_with_features: 20,
                n_malformed: 1,
                n_repeated: 1,
            },
            "{l}"
        );
        let ids: Vec<&str> = ds.rows.iter().map(|r| r.pcs_id.as_str()).collect();
        assert_eq!(ids.len(), 17, "{l}: {ids:?}");
        assert!(ds
            .rows
            .windows(2)
            .all(|w| (w[0].created_at_ms, &w[0].tenant, &w[0].pcs_id)
                < (w[1].created_at_ms, &w[1].tenant, &w[1].pcs_id)));
        // Gold beats silver; the first decision of p05 is kept.
        assert_eq!((ds.rows[0].pcs_id.as_str(), ds.rows[0].label), ("p00", 0));
        assert_eq!(ds.rows[0].source, Source::Gold);
        let p05 = ds.rows.iter().find(|r| r.pcs_id == "p05").unwrap();
        assert_eq!(p05.created_at_ms, T0 + 5 * MINUTE);
        // ⌈17 · 0.25⌉ = 5 newest set the cut at the minute of p12 (and p11, which sorts after
        // it by tenant): both validate, with p13, p03-again, p14, p15; p03-again repeats p03's
        // vector: dropped.
        assert_eq!(ds.split.split_at_ms, T0 + 12 * MINUTE, "{l}");
        assert_eq!(ds.split.train.len(), 11, "{l}");
        let val: Vec<&str> = ds.split.validation.iter().map(|&i| ids[i]).collect();
        assert_eq!(val, ["p12", "p11", "p13", "p14", "p15"], "{l}");
        assert_eq!(ds.split.validation_duplicates, 1);
        assert!(ds
            .split
            .train
            .iter()
            .all(|&i| ds.rows[i].created_at_ms < ds.split.split_at_ms));
        // The summary counts what the rows say.
        let s = ds.summary();
        assert_eq!(s["n_samples"], 17);
        assert_eq!(s["label_sources"]["gold"], 1);
        assert_eq!(s["label_sources"]["silver"], 16);
        assert_eq!(s["reached_review"]["audit_sample"], 1);
        assert_eq!(s["train"]["hallucinated"], 5, "p00 is faithful now");
        assert_eq!(s["n_tenants"], 2);
        // The hash is the documented one, and the same on both backends.
        assert_eq!(ds.sha256, documented_hash(&ds.rows), "{l}");
        assert_eq!(ds.sha256, dataset::hash(&ds.rows));
        hashes.push(ds.sha256.clone());
        // Same data → same dataset; a new label that changes the winner → another hash.
        assert_eq!(dataset::build(&t.db, r, &opts(4)).await.unwrap(), ds);
        write(
            &t.db,
            &[],
            &[("b", "p01", "rev", Source::Gold, Label::Hallucinated, T0)],
        )
        .await;
        let relabelled = dataset::build(&t.db, r, &opts(4)).await.unwrap();
        assert_ne!(relabelled.sha256, ds.sha256, "{l}");
        assert_eq!(relabelled.rows.len(), ds.rows.len());
        t.cleanup().await;
    }
    assert!(hashes.windows(2).all(|w| w[0] == w[1]), "{hashes:?}");
}

/// Rows do not depend on the order they were logged in (ids), only on their data.
#[test]
fn the_hash_ignores_row_ids_and_load_order() {
    let row = |t: i64, id: &str| DatasetRow {
        created_at_ms: t,
        tenant: "a".into(),
        pcs_id: id.into(),
        features: [t as f64; N_FEATURES],
        label: u8::from(t % 2 == 0),
        source: Source::Gold,
        confidence: 1.0,
        escalated: true,
        audit_sample: false,
    };
    let counts = Counts {
        n_decisions: 10,
        n_with_features: 10,
        ..Counts::default()
    };
    let rows: Vec<(i64, DatasetRow)> = (0..10).map(|i| (i, row(i, &format!("p{i}")))).collect();
    let mut shuffled: Vec<(i64, DatasetRow)> = rows
        .iter()
        .rev()
        .map(|(i, r)| (100 - i, r.clone()))
        .collect();
    shuffled.swap(2, 7);
    let r = range(0, 100);
    let a = dataset::from_rows(r, rows, counts, &opts(4)).unwrap();
    let b = dataset::from_rows(r, shuffled, counts, &opts(4)).unwrap();
    assert_eq!(a, b);
    assert_eq!(a.sha256, documented_hash(&a.rows));
}

#[tokio::test]
async fn dataset_errors_are_typed_with_their_counts() {
    for t in all_dbs("learn_dataset_errors").await {
        let l = t.label;
        let e = dataset::build(&t.db, range(T0, T0), &opts(4))
            .await
            .unwrap_err();
        assert_eq!(
            e,
            DatasetError::BadRange {
                start_ms: T0,
                end_ms: T0
            }
        );
        assert_eq!(e.to_json()["code"], "bad_range");
        let e = dataset::build(&t.db, range(T0, T0 + 1), &opts(4))
            .await
            .unwrap_err();
        assert_eq!(e.code(), "empty_range", "{l}");
        // Only unscored decisions and another schema.
        let mut unscored = Decision::scored("a", "u", T0, &[0.0; N_FEATURES]);
        unscored.features = None;
        let mut other = Decision::scored("a", "o", T0 + 1, &[0.0; N_FEATURES]);
        other.features = Some(("hrs-features-v0".into(), "[]".into()));
        write(&t.db, &[unscored, other], &[]).await;
        let e = dataset::build(&t.db, range(T0, T0 + 10), &opts(4))
            .await
            .unwrap_err();
        assert_eq!(
            e,
            DatasetError::NoRowsOfSchema {
                n_decisions: 2,
                schema: SCHEMA_VERSION
            },
            "{l}"
        );
        let j = e.to_json();
        assert_eq!(
            (j["code"].as_str(), j["n_decisions"].as_u64()),
            (Some("no_rows_of_schema"), Some(2))
        );
        // Three hallucinated, no faithful: too few and one class.
        let d: Vec<Decision> = (0..3)
            .map(|i| Decision::scored("a", &format!("h{i}"), T0 + 100 + i, &[i as f64; N_FEATURES]))
            .collect();
        let ids = ["h0", "h1", "h2"];
        let labels: Vec<_> = ids
            .iter()
            .map(|id| ("a", *id, "owner", Source::Silver, Label::Hallucinated, T0))
            .collect();
        write(&t.db, &d, &labels).await;
        let e = dataset::build(&t.db, range(T0, T0 + 1000), &TrainingOptions::default())
            .await
            .unwrap_err();
        assert_eq!(
            e,
            DatasetError::InsufficientLabels {
                n_labelled: 3,
                n_hallucinated: 3,
                n_faithful: 0,
                min: 100
            },
            "{l}"
        );
        let j = e.to_json();
        assert_eq!(j["code"], "insufficient_labels");
        assert_eq!(
            (
                j["n_labelled"].as_u64(),
                j["n_hallucinated"].as_u64(),
                j["n_faithful"].as_u64(),
                j["min"].as_u64()
            ),
            (Some(3), Some(3), Some(0), Some(100))
        );
        assert!(j["error"].as_str().unwrap().contains("at least 100"));
        // Enough with a lower minimum but both classes still required.
        let e = dataset::build(&t.db, range(T0, T0 + 1000), &opts(2))
            .await
            .unwrap_err();
        assert_eq!(e.code(), "insufficient_labels");
        // Two faithful answers, both older: validation is hallucinated only.
        let d: Vec<Decision> = (0..2)
            .map(|i| {
                Decision::scored(
                    "a",
                    &format!("f{i}"),
                    T0 + 10 + i,
                    &[9.0 + i as f64; N_FEATURES],
                )
            })
            .collect();
        write(
            &t.db,
            &d,
            &[
                ("a", "f0", "owner", Source::Silver, Label::Faithful, T0),
                ("a", "f1", "owner", Source::Silver, Label::Faithful, T0),
            ],
        )
        .await;
        let e = dataset::build(&t.db, range(T0, T0 + 1000), &opts(2))
            .await
            .unwrap_err();
        assert_eq!(
            e,
            DatasetError::OneClassSplit {
                part: "validation",
                n_hallucinated: 2,
                n_faithful: 0,
                n_train: 3,
                n_validation: 2
            },
            "{l}"
        );
        assert_eq!(e.to_json()["part"], "validation");
        // A job of either kind fails with that typed error, before anything is fitted.
        for kind in [ModelKind::Lr, ModelKind::Gbdt] {
            let p = JobParams::new(T0, T0 + 1000, kind, 1);
            let j = jobs::execute(&t.db, &SIGNING_SEED, &p, &opts(2), noop())
                .await
                .unwrap_err();
            assert_eq!(j, JobError::Dataset(e.clone()), "{l} {}", kind.as_str());
            assert_eq!(j.to_json(), e.to_json());
        }
        t.cleanup().await;
    }
}

fn noop() -> jobs::Progress {
    Arc::new(|_| {})
}

#[tokio::test]
async fn training_is_deterministic_registers_a_signed_version_and_moves_no_alias() {
    for t in all_dbs("learn_training_determinism").await {
        let n = seed_halueval(&t.db, "acme", 300).await;
        for kind in [ModelKind::Lr, ModelKind::Gbdt] {
            let l = format!("{} {}", t.label, kind.as_str());
            training_job_on(&t.db, kind, n, &l).await;
        }
        t.cleanup().await;
    }
}

/// One kind's checks of [`training_is_deterministic_registers_a_signed_version_and_moves_no_alias`]
/// on `n` labelled HaluEval decisions.
async fn training_job_on(db: &Db, kind: ModelKind, n: usize, l: &str) {
    let params = JobParams::new(T0, T0 + n as i64 * MINUTE, kind, 11);
    let o = opts(100);
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let s2 = seen.clone();
    let progress: jobs::Progress = Arc::new(move |p| s2.lock().unwrap().push(p));
    let a = jobs::execute(db, &SIGNING_SEED, &params, &o, progress)
        .await
        .unwrap();
    let b = jobs::execute(db, &SIGNING_SEED, &params, &o, noop())
        .await
        .unwrap();
    let version = a["version"].as_str().unwrap().to_string();
    assert!(
        version.starts_with(&format!("{}-", kind.as_str())),
        "{l}: {a}"
    );
    assert_eq!(a["model_kind"], kind.as_str());
    assert_eq!(
        b["version"], a["version"],
        "{l}: same data and seed, same artifact"
    );
    assert_eq!(b["sha256"], a["sha256"]);
    assert_eq!(
        (
            a["already_registered"].as_bool(),
            b["already_registered"].as_bool()
        ),
        (Some(false), Some(true))
    );
    assert_eq!(b["metrics"], a["metrics"]);
    assert_eq!(b["dataset_hash"], a["dataset_hash"]);
    let p = seen.lock().unwrap().clone();
    assert_eq!((p.first(), p.last()), (Some(&0.0), Some(&1.0)));
    assert!(p.windows(2).all(|w| w[0] <= w[1]), "{p:?}");
    // The result: sizes, balance, time range, every metric with an interval around it.
    assert_eq!(a["n_samples"], n);
    let (nt, nv) = (
        a["n_train"].as_u64().unwrap(),
        a["n_validation"].as_u64().unwrap(),
    );
    assert_eq!(
        nt + nv + a["validation_duplicates_dropped"].as_u64().unwrap(),
        n as u64
    );
    // ⌈300 · 0.25⌉ = 75 newest, less the few whose vector a training answer already had
    // (short answers such as "yes" to questions of the same shape).
    let dups = a["validation_duplicates_dropped"].as_u64().unwrap();
    assert_eq!(nv + dups, 75, "{l}");
    assert!(dups <= 5, "{l}: {dups}");
    assert!(
        (a["positive_ratio"].as_f64().unwrap() - 0.5).abs() < 1e-12,
        "HaluEval items pair both labels"
    );
    assert_eq!(a["time_range"]["start_time"], "2026-01-01T00:00:00Z");
    assert_eq!(a["time_range"]["split_at_ms"], T0 + 225 * MINUTE);
    for m in super::fit::METRICS {
        let v = &a["metrics"][m];
        let (x, lo, hi) = (
            v["value"].as_f64().unwrap(),
            v["ci_low"].as_f64().unwrap(),
            v["ci_high"].as_f64().unwrap(),
        );
        assert!(lo <= x && x <= hi, "{l} {m}: {v}");
    }
    let auroc = a["metrics"]["auroc"]["value"].as_f64().unwrap();
    assert!(
        auroc > 0.7,
        "{l}: a real signal on held-out HaluEval answers ({auroc})"
    );
    // Registered through the signed path, nothing promoted.
    let key = crate::registry::keys::public_key_b64(&SIGNING_SEED);
    let m = crate::registry::verified_model(db, &version, &key)
        .await
        .unwrap();
    assert_eq!(
        m.training().dataset_sha256,
        a["dataset_hash"].as_str().unwrap()
    );
    assert_eq!(m.training().seed, 11);
    assert_eq!(m.training().cv_metrics["metrics"], a["metrics"]);
    let detail = crate::registry::get_model(db, &version)
        .await
        .unwrap()
        .unwrap();
    assert!(
        detail.summary.aliases.is_empty(),
        "{l}: registered, not promoted"
    );
    assert_eq!(detail.card["dataset"]["sha256"], a["dataset_hash"]);
    assert_eq!(detail.card["model_kind"], kind.as_str());
    match (kind, &m) {
        (ModelKind::Lr, kakeya_core::model::Model::Logistic(_)) => {
            assert!(detail.card.get("boosting").is_none(), "{l}")
        }
        (ModelKind::Gbdt, kakeya_core::model::Model::Trees(e)) => {
            // The job's boosting parameters, on the artifact and its card.
            let p = super::fit::GBDT_PARAMS;
            assert_eq!(e.boosting, p.boosting(), "{l}");
            assert_eq!(e.training.l2, p.l2);
            assert_eq!(e.trees.len(), p.iterations);
            let b = &detail.card["boosting"];
            assert_eq!(
                (b["iterations"].as_u64(), b["max_depth"].as_u64()),
                (Some(p.iterations as u64), Some(p.max_depth as u64)),
                "{l}"
            );
            assert_eq!(b["learner"], crate::ml::gbdt::LEARNER);
        }
        (k, m) => panic!(
            "{l}: a {} job registered a {} artifact",
            k.as_str(),
            m.kind()
        ),
    }
    // Another seed: another calibration split, another artifact.
    let other = JobParams {
        seed: 12,
        ..params.clone()
    };
    let c = jobs::execute(db, &SIGNING_SEED, &other, &o, noop())
        .await
        .unwrap();
    assert_ne!(c["version"], a["version"], "{l}");
    assert_eq!(c["dataset_hash"], a["dataset_hash"]);
}

#[tokio::test]
async fn jobs_are_claimed_once_finished_and_interrupted_ones_fail() {
    for t in all_dbs("learn_job_lifecycle").await {
        let (db, l) = (&t.db, t.label);
        let p = JobParams::new(T0, T0 + MINUTE, ModelKind::Lr, 1);
        let a = jobs::enqueue(db, &p, T0).await.unwrap();
        let b = jobs::enqueue(db, &p, T0 + 1).await.unwrap();
        assert!(b > a);
        let got = jobs::get(db, a).await.unwrap().unwrap();
        assert_eq!(
            (got.status, got.progress, got.started_at_ms),
            (JobStatus::Queued, 0.0, None),
            "{l}"
        );
        assert_eq!(got.params, p);
        // Oldest first, each once.
        let first = jobs::claim_next(db, T0 + 10).await.unwrap().unwrap();
        assert_eq!(
            (first.job_id, first.status, first.started_at_ms),
            (a, JobStatus::Running, Some(T0 + 10))
        );
        assert_eq!(
            jobs::claim_next(db, T0 + 11).await.unwrap().unwrap().job_id,
            b
        );
        assert!(jobs::claim_next(db, T0 + 12).await.unwrap().is_none());
        // Job a runs to its end here: nothing in the range, a typed failure.
        let done = jobs::run(db, &SIGNING_SEED, a, &p, &opts(4), None)
            .await
            .unwrap();
        assert_eq!(done.status, JobStatus::Failed, "{l}");
        let err = done.error.unwrap();
        assert_eq!(err["code"], "empty_range");
        assert!(done.finished_at_ms.is_some() && done.result.is_none());
        // Job b's process died: its heartbeat (at claim time) goes stale.
        let fresh = jobs::create_running(db, &p, crate::now_ms()).await.unwrap();
        assert_eq!(
            jobs::recover_interrupted(db, T0 + 11 + 29_000, jobs::STALE_MS)
                .await
                .unwrap(),
            0,
            "{l}: not stale yet"
        );
        assert_eq!(
            jobs::recover_interrupted(db, T0 + 11 + 31_000, jobs::STALE_MS)
                .await
                .unwrap(),
            1,
            "{l}"
        );
        let b_job = jobs::get(db, b).await.unwrap().unwrap();
        assert_eq!(b_job.status, JobStatus::Failed);
        assert_eq!(b_job.error.as_ref().unwrap()["code"], "interrupted");
        assert_eq!(
            jobs::get(db, fresh).await.unwrap().unwrap().status,
            JobStatus::Running,
            "{l}: a live job is left alone"
        );
        // A late outcome of an interrupted job changes nothing.
        jobs::finish(db, b, &Ok(serde_json::json!({"version": "lr-x"})), T0)
            .await
            .unwrap();
        assert_eq!(
            jobs::get(db, b).await.unwrap().unwrap().status,
            JobStatus::Failed
        );
        // registered_version: only a succeeded job has one.
        assert!(matches!(
            jobs::registered_version(db, 999_999).await,
            Err(RegisteredVersionError::NoJob(999_999))
        ));
        match jobs::registered_version(db, a).await {
            Err(RegisteredVersionError::NotSucceeded { status, .. }) => {
                assert_eq!(status, "failed")
            }
            other => panic!("{l}: {other:?}"),
        }
        jobs::finish(
            db,
            fresh,
            &Ok(serde_json::json!({"version": "lr-0123456789ab"})),
            T0,
        )
        .await
        .unwrap();
        assert_eq!(
            jobs::registered_version(db, fresh).await.unwrap(),
            "lr-0123456789ab"
        );
        // Listing: newest first, by status, paged.
        let all = jobs::page(db, None, None, 10).await.unwrap();
        assert_eq!(
            all.iter().map(|j| j.job_id).collect::<Vec<_>>(),
            [fresh, b, a]
        );
        let failed = jobs::page(db, Some(JobStatus::Failed), None, 10)
            .await
            .unwrap();
        assert_eq!(failed.len(), 2);
        assert_eq!(
            jobs::page(db, None, Some(b), 10).await.unwrap()[0].job_id,
            a
        );
        // The queue is bounded.
        for i in 0..jobs::MAX_QUEUED {
            jobs::enqueue(db, &p, T0 + i).await.unwrap();
        }
        assert!(
            matches!(
                jobs::enqueue(db, &p, T0).await,
                Err(jobs::EnqueueError::QueueFull { queued: 64 })
            ),
            "{l}"
        );
        t.cleanup().await;
    }
}

#[test]
fn job_errors_carry_codes() {
    let e = JobError::Dataset(DatasetError::InsufficientLabels {
        n_labelled: 7,
        n_hallucinated: 2,
        n_faithful: 5,
        min: 100,
    });
    let j = e.to_json();
    assert_eq!(j["code"], "insufficient_labels");
    assert_eq!(j["n_faithful"], 5);
    let j = JobError::Interrupted("x".into()).to_json();
    assert_eq!(
        (j["code"].as_str(), j["error"].as_str()),
        (Some("interrupted"), Some("interrupted: x"))
    );
    assert_eq!(Value::from(e.code()), "insufficient_labels");
}
