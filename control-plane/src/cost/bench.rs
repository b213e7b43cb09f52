//! The cost benchmarks behind `cargo xtask bench --cost` (docs/BENCHMARKS.md): a billing
//! import of synthetic CUR lines into a fresh SQLite database (and its re-import, which must
//! write nothing), and a 30-day forecast with backtests for many tenants.

use super::billing::{Format, Provider};
use super::options::CostOptions;
use super::prices::parse_day;
use super::{fixtures, import, store};
use crate::store::Db;
use anyhow::Context;
use serde::Serialize;
use std::time::Instant;

#[derive(Debug, Clone, Serialize)]
pub struct CostBench {
    pub import_lines: u64,
    pub import_file_mib: f64,
    pub import_secs: f64,
    pub import_written: u64,
    pub reimport_secs: f64,
    pub reimport_written: u64,
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

pub async fn run(lines: u64, tenants: usize) -> anyhow::Result<CostBench> {
    let dir = std::env::temp_dir().join(format!(
        "kakeya-cost-bench-{}-{}",
        std::process::id(),
        crate::now_ms()
    ));
    std::fs::create_dir_all(&dir).context("temp dir")?;
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
            30,
            100,
            &mut w,
        )?;
        std::io::Write::flush(&mut w)?;
    }
    let size = std::fs::metadata(&csv_path)?.len() as f64 / (1024.0 * 1024.0);
    let db = Db::connect(&format!("sqlite://{}/b.db?mode=rwc", dir.display()), None).await?;
    let opts = CostOptions {
        aws_exports: Some(csv_path),
        ..CostOptions::default()
    };
    let window = (first, first + 30);
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
        forecast_tenants: fc.len(),
        forecast_history_days: history,
        forecast_horizon_days: horizon,
        forecast_secs,
        forecast_mape7: mean(7),
        forecast_mape30: mean(30),
    })
}
