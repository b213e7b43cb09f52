//! The cost benchmarks (`cargo xtask bench --cost`): billing import of 1,000,000 CUR lines, the
//! reconciliation of a month of 10,000,000 decision cost records and a 30-day forecast for
//! 1,000 tenants, run in-process through [`kakeya_control_plane::cost::bench`] with inputs
//! under `KAKEYA_COST_BENCH_DIR` (xtask: the target dir); the section of docs/BENCHMARKS.md
//! they rewrite, and the JSON report written next to the inputs.

use crate::bench_doc::{loadavg, machine, replace_between, verdict};
use kakeya_control_plane::cost::bench::CostBench;

pub const REPRODUCE: &str = "cargo xtask bench --cost";
pub const BEGIN: &str = "<!-- cost-bench:begin -->";
pub const END: &str = "<!-- cost-bench:end -->";
pub const IMPORT_LINES: u64 = 1_000_000;
pub const RECORDS: u64 = 10_000_000;
pub const TENANTS: usize = 1_000;

/// Where the inputs and the JSON report go.
pub fn dir() -> std::path::PathBuf {
    std::env::var_os("KAKEYA_COST_BENCH_DIR")
        .map(Into::into)
        .unwrap_or_else(std::env::temp_dir)
}

pub fn run() -> anyhow::Result<CostBench> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let sizes = kakeya_control_plane::cost::bench::Sizes {
        lines: IMPORT_LINES,
        records: RECORDS,
        tenants: TENANTS,
    };
    rt.block_on(kakeya_control_plane::cost::bench::run(&dir(), sizes))
}

pub fn markdown(b: &CostBench) -> String {
    format!(
        "{BEGIN}\n## Cost: billing import, reconciliation and forecasts\n\n\
Reproduce with `{REPRODUCE}` ({}; load average {} when it ran). Release build, SQLite in the target dir, one process.\n\n\
| what | result | target |\n|---|---|---|\n\
| import {} AWS CUR (legacy CSV) lines, {:.0} MiB, into an empty database | {:.2} s ({} lines written) | < 10 s: {} |\n\
| re-import of the same file | {:.2} s ({} lines written) | a no-op: {} |\n\
| reconcile a month ({} days) of {} decision cost records ({} tenants) against those billed lines: priced roll-up, per service and day and month, report stored | {:.2} s (status {}; internal {:.2}, billed {:.2}; generating and rolling up the records took {:.0} s, not timed; the roll-up reads `cost_daily`, kept per decision by the apply path) | < 5 s: {} |\n\
| {}-day forecast with 7- and 30-day rolling-origin backtests, {} tenants × {} days of history | {:.2} s | < 5 s: {} |\n\
| mean backtest MAPE of those synthetic series (trend, weekly season, 1 % noise) | {:.2} % at 7 days, {:.2} % at 30 days | |\n\
{END}\n",
        machine(),
        loadavg(),
        b.import_lines,
        b.import_file_mib,
        b.import_secs,
        b.import_written,
        verdict(b.import_secs < 10.0),
        b.reimport_secs,
        b.reimport_written,
        verdict(b.reimport_written == 0),
        b.reconcile_days,
        b.reconcile_records,
        b.reconcile_tenants,
        b.reconcile_secs,
        b.reconcile_status,
        b.reconcile_internal_total,
        b.reconcile_billed_total,
        b.reconcile_generate_secs,
        verdict(b.reconcile_secs < 5.0),
        b.forecast_horizon_days,
        b.forecast_tenants,
        b.forecast_history_days,
        b.forecast_secs,
        verdict(b.forecast_secs < 5.0),
        b.forecast_mape7,
        b.forecast_mape30,
    )
}

pub fn splice(doc: &str, section: &str) -> String {
    replace_between(doc, BEGIN, END, section)
        .unwrap_or_else(|| format!("{}\n\n{}", doc.trim_end(), section))
}
