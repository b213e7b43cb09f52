//! The canary benchmarks behind `cargo xtask bench --canary` (docs/BENCHMARKS.md), on a fresh
//! SQLite database in a temp directory: one gate evaluation ([`super::gates::check`]) over a
//! step's window of decisions (20 % canary), and a policy simulation
//! ([`crate::simulator::simulate`]: the read of the recorded decisions with their features
//! and labels, the replay through the candidate bundle, the stored result) over recorded
//! decisions, for a threshold change and for a model change.

use super::gates::{self, ArmOf, Gates};
use crate::registry::history::{Actor, Why};
use crate::registry::{self, card, CHAMPION};
use crate::simulator::{self, PolicyDiff, SimulateRequest, Slos};
use crate::store::Db;
use anyhow::Context;
use kakeya_core::features::{FEATURE_NAMES, N_FEATURES, SCHEMA_VERSION};
use kakeya_core::model::Model;
use serde::Serialize;
use std::time::Instant;

const SEED: [u8; 32] = [7; 32];
/// The recorded traffic's clock: one decision per millisecond from here.
const T0: i64 = 1_800_000_000_000;

#[derive(Debug, Clone, Serialize)]
pub struct CanaryBench {
    /// Decisions in the gate's window, and of them the canary's.
    pub gate_window: u64,
    pub gate_canary: u64,
    /// Best and median of the gate evaluations.
    pub gate_runs: usize,
    pub gate_best_ms: f64,
    pub gate_median_ms: f64,
    /// Decisions a simulation replayed.
    pub replay_decisions: u64,
    /// Wall time of `simulate` with a threshold change and with a model change.
    pub replay_threshold_secs: f64,
    pub replay_model_secs: f64,
    /// What the threshold change's replay predicted (a sanity figure of the run).
    pub replay_escalation_before: f64,
    pub replay_escalation_after: f64,
}

/// The decision-log columns the benchmark and the simulator's tests write, in order.
pub(crate) const DECISION_INSERT: &str = "INSERT INTO decision_log (record_id, tenant, pcs_id, \
     d_hat, coh_star, r, budget, regime, accepted, escalated, reason, status, cacheable, \
     verify_ns, created_at_ms, risk, risk_band, model_version, arm, bundle_version, pcs_version, \
     feature_schema, features) VALUES ";
/// The label columns, in order.
pub(crate) const LABEL_INSERT: &str = "INSERT INTO labels (tenant, pcs_id, labeller, source, \
     label, confidence, comment, created_at_ms) VALUES ";

/// Runs `insert` (ending in `VALUES `) with `rows` (SQL tuples), 500 at a time.
pub(crate) async fn insert_rows(
    conn: &mut sqlx::AnyConnection,
    insert: &str,
    rows: &[String],
) -> Result<(), sqlx::Error> {
    for chunk in rows.chunks(500) {
        sqlx::query(&format!("{insert}{}", chunk.join(", ")))
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// A logistic model with every weight 0.1 and intercept `bias` (Platt a = −1, threshold 0.5),
/// the synthetic model of the benchmarks and the tests.
pub(crate) fn model(bias: f64) -> Model {
    kakeya_core::model::HrsModel {
        kind: kakeya_core::model::KIND_LOGISTIC.into(),
        schema_version: SCHEMA_VERSION.into(),
        feature_names: FEATURE_NAMES.iter().map(|s| s.to_string()).collect(),
        mean: vec![0.0; N_FEATURES],
        std: vec![1.0; N_FEATURES],
        weights: vec![0.1; N_FEATURES],
        intercept: bias,
        platt: kakeya_core::model::Platt { a: -1.0, b: 0.0 },
        thresholds: kakeya_core::model::Thresholds { escalate: 0.5 },
        tenant: kakeya_core::features::TenantStats::fresh(),
        training: kakeya_core::model::TrainingMeta {
            seed: 1,
            rows: 2,
            dataset_sha256: "x".into(),
            recipe_version: "text-pcs-v1".into(),
            l2: 1.0,
            cv_metrics: serde_json::json!({}),
        },
    }
    .into()
}

/// Deterministic feature vectors in [−2, 2) (an LCG), so the risks cover (0, 1).
struct Lcg(u64);

impl Lcg {
    fn features(&mut self) -> [f64; N_FEATURES] {
        let mut x = [0.0; N_FEATURES];
        for v in x.iter_mut() {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            *v = ((self.0 >> 11) as f64 / (1u64 << 53) as f64) * 4.0 - 2.0;
        }
        x
    }
}

/// Writes `n` champion-or-canary decisions as the ingest writes them: features, risk under
/// the arm's model, escalation at its threshold, a decision time; every 4th labelled.
async fn record(
    db: &Db,
    arms: &[(&str, &Model)],
    canary_every: u64,
    n: u64,
    label: &str,
) -> anyhow::Result<()> {
    let bar = crate::progress::bar(label, n);
    let mut lcg = Lcg(0x9E37_79B9_7F4A_7C15);
    let versions: Vec<String> = arms.iter().map(|(_, m)| m.version()).collect();
    let mut done = 0u64;
    while done < n {
        let batch = (n - done).min(20_000);
        let mut tx = db.pool.begin().await?;
        let (mut rows, mut labels) = (Vec::new(), Vec::new());
        for k in done..done + batch {
            let i = usize::from(canary_every > 0 && k % canary_every == 0).min(arms.len() - 1);
            let (arm, m) = arms[i];
            let x = lcg.features();
            let risk = m.score(&x).1;
            let esc = risk >= m.thresholds().escalate;
            let tenant = k % 97;
            if k % 4 == 0 {
                let l = if risk > 0.45 {
                    "hallucinated"
                } else {
                    "faithful"
                };
                labels.push(format!(
                    "('t{tenant}', 'p{k}', 'rev', 'gold', '{l}', 1.0, NULL, {T0})"
                ));
            }
            rows.push(format!(
                "('r{k}', 't{tenant}', 'p{k}', 1.2, 0.7, 0.5, 1.0, 'sticky', 1, {e}, NULL, {st}, 1, {ns}, {t}, {risk:?}, '{band}', '{v}', '{arm}', 1, 'v0.2', '{SCHEMA_VERSION}', '{f}')",
                e = i64::from(esc),
                st = if esc { 202 } else { 200 },
                ns = 40_000 + (k % 13) * 1000,
                t = T0 + k as i64,
                band = if esc { "high" } else { "low" },
                v = versions[i],
                f = serde_json::to_string(&x.to_vec())?,
            ));
        }
        insert_rows(&mut tx, DECISION_INSERT, &rows).await?;
        insert_rows(&mut tx, LABEL_INSERT, &labels).await?;
        tx.commit().await?;
        done += batch;
        bar.set_position(done);
    }
    bar.finish_and_clear();
    Ok(())
}

async fn fresh_db(dir: &std::path::Path, name: &str) -> anyhow::Result<(Db, Model, Model)> {
    let db = Db::connect(
        &format!("sqlite://{}/{name}.db?mode=rwc", dir.display()),
        None,
    )
    .await?;
    let (a, b) = (model(0.0), model(-0.3));
    for m in [&a, &b] {
        registry::insert_model(&db, &SEED, m, &card::from_artifact(m), 1).await?;
    }
    let why = Why::manual(Actor::Cli("bench".into()), None);
    registry::move_alias(&db, &SEED, CHAMPION, &a.version(), None, &why, 5).await?;
    Ok((db, a, b))
}

/// Runs both benchmarks: a gate window of `window` decisions, a replay of `replay` decisions
/// (the data generation draws a progress bar on a terminal).
pub async fn run(window: u64, replay: u64) -> anyhow::Result<CanaryBench> {
    let dir = std::env::temp_dir().join(format!(
        "kakeya-canary-bench-{}-{}",
        std::process::id(),
        crate::now_ms()
    ));
    std::fs::create_dir_all(&dir).context("temp dir")?;
    let out = run_in(&dir, window, replay).await;
    let _ = std::fs::remove_dir_all(&dir);
    out
}

async fn run_in(dir: &std::path::Path, window: u64, replay: u64) -> anyhow::Result<CanaryBench> {
    // Gate: one step's window, every 5th decision the canary's.
    let (db, a, b) = fresh_db(dir, "gate").await?;
    record(
        &db,
        &[("champion", &a), ("canary", &b)],
        5,
        window,
        "gate window",
    )
    .await?;
    let (av, bv) = (a.version(), b.version());
    let g = Gates {
        skip: vec![gates::GateName::Cost],
        ..Gates::default()
    };
    let mut times = Vec::new();
    let mut canary = 0;
    for _ in 0..7 {
        let t = Instant::now();
        let c = gates::check(
            &db,
            &g,
            &ArmOf {
                arm: "canary",
                version: &bv,
            },
            &ArmOf {
                arm: "champion",
                version: &av,
            },
            (T0, T0),
            T0 + window as i64,
        )
        .await?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
        anyhow::ensure!(
            c.canary.requests + c.control.requests == window,
            "the gate saw {} + {} decisions, not {window}",
            c.canary.requests,
            c.control.requests
        );
        canary = c.canary.requests;
    }
    db.pool.close().await;
    times.sort_by(f64::total_cmp);
    // Replay: the champion's recorded decisions.
    let (db, a, b) = fresh_db(dir, "replay").await?;
    record(&db, &[("champion", &a)], 0, replay, "recorded decisions").await?;
    let now = T0 + replay as i64 + 1;
    let sim = |id: &str, diff: PolicyDiff| SimulateRequest {
        policy_id: id.into(),
        diff,
        window: Some("1d".into()),
        slos: Slos::default(),
    };
    let t = Instant::now();
    let thr = simulator::simulate(
        &db,
        &SEED,
        &sim(
            "bench-threshold",
            PolicyDiff {
                escalate_threshold: Some(0.52),
                ..Default::default()
            },
        ),
        now,
    )
    .await?;
    let replay_threshold_secs = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let by_model = simulator::simulate(
        &db,
        &SEED,
        &sim(
            "bench-model",
            PolicyDiff {
                model_version: Some(b.version()),
                ..Default::default()
            },
        ),
        now,
    )
    .await?;
    let replay_model_secs = t.elapsed().as_secs_f64();
    db.pool.close().await;
    anyhow::ensure!(
        thr.after.decisions == replay && by_model.after.decisions == replay,
        "replayed {} and {} decisions, not {replay}",
        thr.after.decisions,
        by_model.after.decisions
    );
    Ok(CanaryBench {
        gate_window: window,
        gate_canary: canary,
        gate_runs: times.len(),
        gate_best_ms: times.first().copied().unwrap_or(0.0),
        gate_median_ms: times.get(times.len() / 2).copied().unwrap_or(0.0),
        replay_decisions: replay,
        replay_threshold_secs,
        replay_model_secs,
        replay_escalation_before: thr.before.escalation_rate,
        replay_escalation_after: thr.after.escalation_rate,
    })
}
