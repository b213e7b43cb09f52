//! The cost benchmarks (`cargo xtask bench --cost`): billing import of 1,000,000 CUR lines and
//! a 30-day forecast for 1,000 tenants, run in-process through
//! [`kakeya_control_plane::cost::bench`]; the section of docs/BENCHMARKS.md they rewrite.

use crate::bench_doc::{loadavg, machine, replace_between, verdict};
use kakeya_control_plane::cost::bench::CostBench;

pub const REPRODUCE: &str = "cargo xtask bench --cost";
pub const BEGIN: &str = "<!-- cost-bench:begin -->";
pub const END: &str = "<!-- cost-bench:end -->";
pub const IMPORT_LINES: u64 = 1_000_000;
pub const TENANTS: usize = 1_000;

pub fn run() -> anyhow::Result<CostBench> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(kakeya_control_plane::cost::bench::run(
        IMPORT_LINES,
        TENANTS,
    ))
}

pub fn markdown(b: &CostBench) -> String {
    format!(
        "{BEGIN}\n## Cost: billing import and forecasts\n\n\
Reproduce with `{REPRODUCE}` ({}; load average {} when it ran). Release build, SQLite in a \
temp directory, one process.\n\n\
| what | result | target |\n|---|---|---|\n\
| import {} AWS CUR (legacy CSV) lines, {:.0} MiB, into an empty database | {:.2} s ({} lines written) | < 10 s: {} |\n\
| re-import of the same file | {:.2} s ({} lines written) | a no-op: {} |\n\
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
