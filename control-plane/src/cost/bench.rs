//! The cost benchmarks behind `cargo xtask bench --cost` (docs/BENCHMARKS.md): a billing
//! import of synthetic CUR lines into a fresh SQLite database (and its re-import, which must
//! write nothing), the reconciliation of a month of many decision cost records against those
//! billed lines, and a 30-day forecast with backtests for many tenants. Inputs are generated
//! under a directory the caller names (the target dir) and removed afterwards.

use super::billing::{Format, Provider};
use super::options::CostOptions;
use super::prices::parse_day;
use super::{fixtures, import, record, store};
use crate::store::Db;
use anyhow::Context;
use serde::Serialize;
use std::path::Path;
use std::time::Instant;

#[derive(Debug, Clone, Serialize)]
pub struct CostBench {
    pub import_lines: u64,
    pub import_file_mib: f64,
    pub import_secs: f64,
    pub import_written: u64,
    pub reimport_secs: f64,
    pub reimport_written: u64,
    pub reconcile_records: u64,
    pub reconcile_tenants: u64,
    pub reconcile_days: i64,
    /// Generating the records (one SQL statement per million) and rolling them up into
    /// `cost_daily` once (the apply path does it per decision); not the benchmark.
    pub reconcile_generate_secs: f64,
    pub reconcile_secs: f64,
    pub reconcile_status: String,
    pub reconcile_internal_total: f64,
    pub reconcile_billed_total: f64,
    pub forecast_tenants: usize,
    pub forecast_history_days: usize,
    pub forecast_horizon_days: usize,
    pub forecast_secs: f64,
    /// Mean backtest MAPE (percent) at 7 and 30 days over the tenants' synthetic series.
    pub forecast_mape7: f64,
    pub forecast_mape30: f64,
}

/// A tenant's synthetic daily cost: level, trend and weekly shape vary by tenant; noise is a
/// deterministic xorshift normal.
fn series(tenant: usize, days: usize) -> Vec<f64> {
    let mut s = 0x9e37_79b9_7f4a_7c15u64 ^ (tenant as u64 + 1).wrapping_mul(0x2545_f491);
    let mut u = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        ((s >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    let level = 50.0 + (tenant % 17) as f64 * 10.0;
    let trend = 0.1 + (tenant % 5) as f64 * 0.1;
    let week = [0.0, 0.06, 0.08, 0.07, 0.05, -0.12, -0.14];
    (0..days)
        .map(|t| {
            let (a, b) = (u(), u());
            let z = (-2.0 * a.ln()).sqrt() * (2.0 * std::f64::consts::PI * b).cos();
            (level + trend * t as f64) * (1.0 + week[t % 7]) + z * level * 0.01
        })
        .collect()
}

/// Sizes of a run.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    /// CUR lines imported.
    pub lines: u64,
    /// Decision cost records reconciled (over the same 30 days).
    pub records: u64,
    /// Tenants forecast.
    pub tenants: usize,
}

/// Tenants of the generated cost records.
const RECORD_TENANTS: u64 = 1_000;
/// Days every input spans.
const DAYS: i64 = 30;

/// Writes `n` cost records over days `[first, first + DAYS)` in SQL, a million per statement:
/// tenants round-robin, sizes varying like real requests, one decision in ten not trusted.
async fn generate_records(db: &Db, n: u64, first: i64) -> anyhow::Result<()> {
    let span_ms = DAYS * 86_400_000;
    let chunk = 1_000_000u64;
    for lo in (0..n).step_by(chunk as usize) {
        let hi = (lo + chunk).min(n);
        sqlx::query(
            "WITH RECURSIVE s(i) AS (SELECT $1 UNION ALL SELECT i + 1 FROM s WHERE i + 1 < $2) \
             INSERT INTO cost_records (record_id, tenant, created_at_ms, day, trusted, \
             request_bytes, response_bytes, wal_bytes, decision_log_bytes) \
             SELECT printf('bench-%010d', i), printf('tenant-%04d', i % $3), \
             $4 * 86400000 + i * $5 / $6, $4 + i * $7 / $6, i % 10 <> 0, 600 + i % 1400, \
             200 + i % 300, 900 + i % 1500, 300 + i % 200 FROM s",
        )
        .bind(i64::try_from(lo)?)
        .bind(i64::try_from(hi)?)
        .bind(i64::try_from(RECORD_TENANTS)?)
        .bind(first)
        .bind(span_ms)
        .bind(i64::try_from(n)?)
        .bind(DAYS)
        .execute(&db.pool)
        .await?;
    }
    Ok(())
}

/// Runs the benchmarks with inputs under `parent` (created; what it writes there is removed).
pub async fn run(parent: &Path, sizes: Sizes) -> anyhow::Result<CostBench> {
    let Sizes {
        lines,
        records,
        tenants,
    } = sizes;
    let dir = parent.join(format!("kakeya-cost-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let csv_path = dir.join("cur.csv");
    let first = parse_day("2026-01-01").map_err(anyhow::Error::msg)?;
    {
        let f = std::fs::File::create(&csv_path)?;
        let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
        fixtures::synthetic(
            Format::CurLegacy,
            Provider::Aws,
            lines,
            first,
            DAYS,
            100,
            &mut w,
        )?;
        std::io::Write::flush(&mut w)?;
    }
    let size = std::fs::metadata(&csv_path)?.len() as f64 / (1024.0 * 1024.0);
    let db = Db::connect(&format!("sqlite://{}/b.db?mode=rwc", dir.display()), None).await?;
    let opts = CostOptions {
        aws_exports: Some(csv_path),
        prices: fixtures::example_prices(),
        ..CostOptions::default()
    };
    let window = (first, first + DAYS);
    let timed = |id: &'static str| {
        let (db, opts) = (db.clone(), opts.clone());
        async move {
            store::insert_job(&db, id, Provider::Aws, window, 0).await?;
            let t = Instant::now();
            let r = import::run_job(&db, &opts, Provider::Aws, window, id, &|_| {}).await?;
            anyhow::Ok((t.elapsed().as_secs_f64(), r))
        }
    };
    let (import_secs, r1) = timed("bench-1").await?;
    let (reimport_secs, r2) = timed("bench-2").await?;
    anyhow::ensure!(
        r1.records == lines && r1.malformed == 0,
        "import read {r1:?}"
    );

    let t = Instant::now();
    generate_records(&db, records, first).await?;
    // The apply path keeps cost_daily per decision; records written in bulk are rolled up once.
    record::rebuild_daily(&db, first, first + DAYS).await?;
    let reconcile_generate_secs = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let report = super::reconcile_window(&db, &opts, first, first + DAYS).await?;
    let reconcile_secs = t.elapsed().as_secs_f64();
    db.pool.close().await;
    let _ = std::fs::remove_dir_all(&dir);

    let (history, horizon) = (90, 30);
    let all: Vec<Vec<f64>> = (0..tenants).map(|t| series(t, history)).collect();
    let t = Instant::now();
    let fc: Vec<_> = all
        .iter()
        .enumerate()
        .filter_map(|(i, y)| super::forecast_series(Some(format!("t{i}")), y, first, horizon))
        .collect();
    let forecast_secs = t.elapsed().as_secs_f64();
    let mean = |h: usize| {
        let v: Vec<f64> = fc
            .iter()
            .flat_map(|f| {
                f.backtest
                    .iter()
                    .filter(|b| b.horizon == h)
                    .filter_map(|b| b.mape)
            })
            .collect();
        v.iter().sum::<f64>() / v.len().max(1) as f64
    };
    Ok(CostBench {
        import_lines: lines,
        import_file_mib: size,
        import_secs,
        import_written: r1.written,
        reimport_secs,
        reimport_written: r2.written,
        reconcile_records: records,
        reconcile_tenants: RECORD_TENANTS.min(records),
        reconcile_days: DAYS,
        reconcile_generate_secs,
        reconcile_secs,
        reconcile_status: serde_json::to_value(report.status)?
            .as_str()
            .unwrap_or_default()
            .to_string(),
        reconcile_internal_total: report.internal_total,
        reconcile_billed_total: report.billed_total,
        forecast_tenants: fc.len(),
        forecast_history_days: history,
        forecast_horizon_days: horizon,
        forecast_secs,
        forecast_mape7: mean(7),
        forecast_mape30: mean(30),
    })
}
