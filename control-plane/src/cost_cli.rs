//! `kakeya cost …`: the price book, roll-ups, billing import, reconciliation, forecasts,
//! recommendations, budgets and fixtures, on the database directly, through the same
//! functions as `/v1/cost/*`.

use crate::ab_cli::print;
use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use kakeya_control_plane::config::Config;
use kakeya_control_plane::cost::billing::{Format, Provider};
use kakeya_control_plane::cost::prices::{format_day, parse_day, PriceEntry};
use kakeya_control_plane::cost::{self, advisor, budgets, fixtures, import, record, store};
use kakeya_control_plane::store::Db;
use std::path::PathBuf;

#[derive(Clone, Copy, ValueEnum)]
pub enum ProviderArg {
    Aws,
    Gcp,
    Azure,
}

impl From<ProviderArg> for Provider {
    fn from(p: ProviderArg) -> Self {
        match p {
            ProviderArg::Aws => Provider::Aws,
            ProviderArg::Gcp => Provider::Gcp,
            ProviderArg::Azure => Provider::Azure,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
pub enum FormatArg {
    /// AWS CUR, legacy columns (`lineItem/UnblendedCost`).
    CurLegacy,
    /// AWS CUR 2.0 (snake_case columns).
    Cur2,
    /// FinOps FOCUS 1.x (GCP, Azure).
    Focus,
}

impl From<FormatArg> for Format {
    fn from(f: FormatArg) -> Self {
        match f {
            FormatArg::CurLegacy => Format::CurLegacy,
            FormatArg::Cur2 => Format::Cur2,
            FormatArg::Focus => Format::Focus,
        }
    }
}

/// Days `[start, end)`.
#[derive(Args, Clone)]
pub struct Window {
    /// First day, YYYY-MM-DD.
    #[arg(long)]
    start: String,
    /// Day after the last, YYYY-MM-DD.
    #[arg(long)]
    end: String,
}

impl Window {
    fn days(&self) -> anyhow::Result<(i64, i64)> {
        let a = parse_day(&self.start).map_err(anyhow::Error::msg)?;
        let b = parse_day(&self.end).map_err(anyhow::Error::msg)?;
        anyhow::ensure!(
            b > a && b - a <= cost::MAX_WINDOW_DAYS,
            "--end must be after --start, at most {} days later",
            cost::MAX_WINDOW_DAYS
        );
        Ok((a, b))
    }
}

#[derive(Subcommand)]
pub enum CostCmd {
    /// The price book in force (kakeya.toml's [[cost.prices]] and the stored entries), as JSON.
    Prices {
        #[command(subcommand)]
        cmd: Option<PricesCmd>,
    },
    /// Per tenant and day: decisions, trusted tasks, bytes and their cost per service (JSON;
    /// per tenant totals on standard error).
    Summary {
        #[command(flatten)]
        window: Window,
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Import a provider's billing exports of a window (from [cost] <provider>_exports),
    /// with progress; prints the job's result (files, formats, malformed rows with lines).
    Import {
        #[arg(long, value_enum)]
        provider: ProviderArg,
        #[command(flatten)]
        window: Window,
    },
    /// Reconcile internal cost against billed cost over a window (or print the latest report).
    Reconcile {
        #[command(flatten)]
        window: Option<Window>,
        /// Print the latest stored report instead.
        #[arg(long, conflicts_with_all = ["start", "end"])]
        latest: bool,
    },
    /// Forecast daily cost per tenant and in total (Holt-Winters, weekly season) with 80/95 %
    /// intervals and the backtest's MAPE and coverage.
    Forecast {
        /// Days ahead, 1..=366.
        #[arg(long, default_value_t = 30)]
        horizon: usize,
    },
    /// Rolling-origin backtest of a given series (a file of numbers, oldest first) with our
    /// Holt-Winters at any season length: MAPE and 80/95 % interval coverage per horizon, and
    /// the origins used (`scripts/forecast_compare.py` runs statsforecast on the same ones).
    /// Prints JSON; no database is opened.
    Backtest {
        /// The series: numbers separated by newlines, commas or spaces.
        #[arg(long)]
        series: PathBuf,
        /// Season length (7 for daily cost, 12 for monthly data).
        #[arg(long, default_value_t = 7)]
        season: usize,
        /// Horizons to backtest (repeatable).
        #[arg(long = "horizon", default_values_t = [7, 30])]
        horizons: Vec<usize>,
        /// Points before the first origin.
        #[arg(long, default_value_t = 28)]
        min_train: usize,
        /// Points between origins.
        #[arg(long, default_value_t = 7)]
        step: usize,
        /// Fit on the logarithm (a multiplicative season; every value must be > 0).
        #[arg(long)]
        log: bool,
    },
    /// Compute the advisor's recommendations (or apply one by id).
    Recommendations {
        /// Apply this pending recommendation.
        #[arg(long)]
        apply: Option<String>,
    },
    /// Monthly budgets per tenant.
    Budgets {
        #[command(subcommand)]
        cmd: BudgetsCmd,
    },
    /// Time the cost benchmarks in this process (a release build: `cargo xtask bench --cost`
    /// writes them into docs/BENCHMARKS.md): import of --lines synthetic CUR lines into a
    /// fresh SQLite database and its re-import, the reconciliation of a month of --records
    /// decision cost records, a 30-day forecast for --tenants tenants. Inputs go under --dir
    /// and are removed afterwards. Prints the figures as JSON.
    Bench {
        #[arg(long, default_value_t = 1_000_000)]
        lines: u64,
        #[arg(long, default_value_t = 10_000_000)]
        records: u64,
        #[arg(long, default_value_t = 1_000)]
        tenants: usize,
        /// Where the inputs are generated (default: the system's temp dir).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Write billing exports for tests and demos: from the internal cost of a window with a
    /// planted drift per service, or --synthetic N lines (the import benchmark's input).
    Fixtures(FixturesArgs),
}

#[derive(Subcommand)]
pub enum PricesCmd {
    /// Add an entry (validated against the whole book first).
    Add {
        /// First day it applies, YYYY-MM-DD.
        #[arg(long)]
        effective_from: String,
        /// Only this tenant (default: every tenant without its own entry).
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long, default_value_t = 0.0)]
        per_request: f64,
        #[arg(long, default_value_t = 0.0)]
        per_cpu_second: f64,
        #[arg(long, default_value_t = 0.0)]
        per_gib_stored: f64,
        #[arg(long, default_value_t = 0.0)]
        per_gib_transferred: f64,
        #[arg(long, default_value_t = 0.0)]
        per_model_call: f64,
    },
}

#[derive(Subcommand)]
pub enum BudgetsCmd {
    /// Budgets with their last computed spend and action.
    List,
    /// Set a tenant's monthly caps and actions, then recompute every budget.
    Set {
        tenant: String,
        #[arg(long)]
        soft_cap: f64,
        #[arg(long)]
        hard_cap: f64,
        #[arg(long, default_value = "alert", value_parser = ["alert", "degrade", "throttle", "deny"])]
        soft_action: String,
        #[arg(long, default_value = "deny", value_parser = ["alert", "degrade", "throttle", "deny"])]
        hard_action: String,
    },
    /// Remove a tenant's budget.
    Delete { tenant: String },
    /// Recompute month-to-date spend and actions now.
    Recompute,
}

#[derive(Args)]
pub struct FixturesArgs {
    /// Output file (`.gz` writes gzip).
    #[arg(long)]
    out: PathBuf,
    #[arg(long, value_enum)]
    format: FormatArg,
    /// Provider whose service names are written.
    #[arg(long, value_enum, default_value = "aws")]
    provider: ProviderArg,
    /// The window whose internal cost is billed (not with --synthetic).
    #[command(flatten)]
    window: Option<Window>,
    /// Planted drift, SERVICE=PERCENT (repeatable), e.g. compute=2.0 storage=-4.0.
    #[arg(long, value_parser = parse_drift)]
    drift: Vec<(String, f64)>,
    /// Line items per (tenant, service, day) cell.
    #[arg(long, default_value_t = 3)]
    lines_per_cell: usize,
    /// Write one malformed row (line 2).
    #[arg(long)]
    corrupt_row: bool,
    /// Write N synthetic lines instead (30 days from 2026-01-01, 100 tenants).
    #[arg(long, conflicts_with_all = ["start", "end"])]
    synthetic: Option<u64>,
}

fn parse_drift(s: &str) -> Result<(String, f64), String> {
    let (svc, pct) = s
        .split_once('=')
        .ok_or_else(|| format!("expected SERVICE=PERCENT, got {s:?}"))?;
    let pct: f64 = pct.parse().map_err(|_| format!("not a number: {pct:?}"))?;
    if !cost::usage::SERVICES.contains(&svc) {
        return Err(format!(
            "unknown service {svc:?}: compute, storage, network, model_calls"
        ));
    }
    Ok((svc.to_string(), pct))
}

fn writer(path: &PathBuf) -> anyhow::Result<Box<dyn std::io::Write>> {
    let f =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let w = std::io::BufWriter::with_capacity(1 << 20, f);
    Ok(if path.extension().is_some_and(|e| e == "gz") {
        Box::new(flate2::write::GzEncoder::new(
            w,
            flate2::Compression::fast(),
        ))
    } else {
        Box::new(w)
    })
}

pub async fn run(cfg: Config, cmd: CostCmd) -> anyhow::Result<()> {
    if let CostCmd::Bench {
        lines,
        records,
        tenants,
        dir,
    } = cmd
    {
        let dir = dir.unwrap_or_else(std::env::temp_dir);
        let sizes = cost::bench::Sizes {
            lines,
            records,
            tenants,
        };
        return print(&cost::bench::run(&dir, sizes).await?);
    }
    if let CostCmd::Backtest {
        series,
        season,
        horizons,
        min_train,
        step,
        log,
    } = cmd
    {
        let text = std::fs::read_to_string(&series)
            .with_context(|| format!("cannot read {}", series.display()))?;
        let y = cost::forecast::parse_series(&text)
            .map_err(|e| anyhow::anyhow!("{}: {e}", series.display()))?;
        anyhow::ensure!(season >= 2, "--season must be at least 2");
        anyhow::ensure!(step >= 1, "--step must be at least 1");
        anyhow::ensure!(
            !log || y.iter().all(|v| *v > 0.0),
            "--log needs every value > 0"
        );
        let plan = cost::forecast::BacktestPlan {
            season,
            min_train,
            step,
            log,
        };
        return print(&cost::forecast::series_backtest(&y, &horizons, plan));
    }
    let db = Db::connect(&cfg.database_url, None)
        .await
        .context("cannot open the database; check DATABASE_URL")?;
    let opts = &cfg.cost;
    let now = kakeya_control_plane::now_ms();
    match cmd {
        CostCmd::Prices { cmd: None } => print(&cost::book(&db, opts).await?),
        CostCmd::Prices {
            cmd:
                Some(PricesCmd::Add {
                    effective_from,
                    tenant,
                    per_request,
                    per_cpu_second,
                    per_gib_stored,
                    per_gib_transferred,
                    per_model_call,
                }),
        } => {
            let e = PriceEntry {
                effective_from,
                tenant,
                per_request,
                per_cpu_second,
                per_gib_stored,
                per_gib_transferred,
                per_model_call,
            };
            let mut stored = store::stored_prices(&db).await?;
            stored.push(e.clone());
            opts.book(&stored)?;
            store::add_price(&db, &e, now).await?;
            print(&cost::book(&db, opts).await?)
        }
        CostCmd::Summary { window, tenant } => {
            let (from, to) = window.days()?;
            let sel = record::Selection {
                from_day: from,
                to_day: to,
                tenant,
                ..Default::default()
            };
            let s = cost::summarise(
                &opts.currency,
                from,
                to,
                cost::rollup(&db, opts, &sel).await?,
            );
            for t in &s.tenants {
                eprintln!(
                    "{}: {} decisions, {} trusted, {:.6} {} ({:?} per trusted task)",
                    t.tenant, t.decisions, t.trusted, t.total, s.currency, t.cost_per_trusted_task
                );
            }
            print(&s)
        }
        CostCmd::Import { provider, window } => {
            let (from, to) = window.days()?;
            let p = Provider::from(provider);
            let id = import::job_id(p, now);
            store::insert_job(&db, &id, p, (from, to), now).await?;
            let bar = kakeya_control_plane::progress::spinner("billing lines");
            let shown = bar.clone();
            let r = import::run_job(&db, opts, p, (from, to), &id, &move |n| {
                shown.set_message(format!("{n} billing lines read"));
                shown.tick();
            })
            .await;
            bar.finish_and_clear();
            let r = r?;
            eprintln!(
                "job {id}: {} lines in the window, {} written, {} unchanged, {} malformed",
                r.records, r.written, r.unchanged, r.malformed
            );
            for (file, b) in r.bad_rows.iter().take(20) {
                eprintln!("  {file}:{}: {}", b.line, b.error);
            }
            print(&r)
        }
        CostCmd::Reconcile { latest: true, .. } => {
            match store::reconciliations(&db, 1, None).await?.pop() {
                Some(r) => print(&r),
                None => anyhow::bail!(
                    "no reconciliation yet: run kakeya cost reconcile --start D --end D"
                ),
            }
        }
        CostCmd::Reconcile { window, .. } => {
            let w = window.context("give --start and --end (or --latest)")?;
            let (from, to) = w.days()?;
            let r = cost::reconcile_window(&db, opts, from, to).await?;
            for c in &r.months {
                eprintln!(
                    "{} {:<12} internal {:>14} billed {:>14} drift {:>9} {:?}",
                    c.period,
                    c.service,
                    c.internal.map_or("-".into(), |v| format!("{v:.6}")),
                    c.billed.map_or("-".into(), |v| format!("{v:.6}")),
                    c.drift_pct.map_or("-".into(), |v| format!("{v:+.3}%")),
                    c.status
                );
            }
            eprintln!("report {}: {:?}", r.id, r.status);
            print(&r)
        }
        CostCmd::Forecast { horizon } => {
            let f = cost::forecast_costs(&db, opts, horizon, cost::today()).await?;
            if let Some(t) = &f.total {
                for b in &t.backtest {
                    eprintln!(
                        "total: {:?}, backtest h={}: {} folds, MAPE {:?} %, 95 % coverage {:?}",
                        t.fit.model, b.horizon, b.folds, b.mape, b.coverage95
                    );
                }
            }
            print(&f)
        }
        CostCmd::Recommendations { apply: Some(id) } => {
            let r = advisor::apply(&db, &id, now).await?;
            budgets::recompute(&db, opts, now).await?;
            print(&r)
        }
        CostCmd::Recommendations { apply: None } => {
            print(&advisor::recommend(&db, opts, now).await?)
        }
        CostCmd::Budgets { cmd } => match cmd {
            BudgetsCmd::List => print(&budgets::list(&db).await?),
            BudgetsCmd::Set {
                tenant,
                soft_cap,
                hard_cap,
                soft_action,
                hard_action,
            } => {
                let b = budgets::Budget {
                    tenant,
                    soft_cap,
                    hard_cap,
                    soft_action,
                    hard_action,
                };
                budgets::set(&db, &b, now).await?;
                print(&budgets::recompute(&db, opts, now).await?.0)
            }
            BudgetsCmd::Delete { tenant } => {
                anyhow::ensure!(
                    budgets::delete(&db, &tenant).await?,
                    "{tenant} has no budget"
                );
                Ok(())
            }
            BudgetsCmd::Recompute => print(&budgets::recompute(&db, opts, now).await?.0),
        },
        // Handled above: it needs no database of the configuration.
        CostCmd::Bench { .. } | CostCmd::Backtest { .. } => Ok(()),
        CostCmd::Fixtures(a) => {
            let mut out = writer(&a.out)?;
            let n = match (a.synthetic, &a.window) {
                (Some(n), _) => {
                    let first = parse_day("2026-01-01").map_err(anyhow::Error::msg)?;
                    fixtures::synthetic(
                        a.format.into(),
                        a.provider.into(),
                        n,
                        first,
                        30,
                        100,
                        &mut out,
                    )?
                }
                (None, Some(w)) => {
                    let (from, to) = w.days()?;
                    let sel = record::Selection {
                        from_day: from,
                        to_day: to,
                        ..Default::default()
                    };
                    let cells = fixtures::cells_of(&cost::rollup(&db, opts, &sel).await?);
                    let plan = fixtures::Plan {
                        drift_pct: a.drift.into_iter().collect(),
                        lines_per_cell: a.lines_per_cell,
                        corrupt_row: a.corrupt_row,
                    };
                    eprintln!(
                        "{} cost cells from {} to {}",
                        cells.len(),
                        format_day(from),
                        format_day(to)
                    );
                    fixtures::write(
                        a.format.into(),
                        a.provider.into(),
                        &opts.currency,
                        &cells,
                        &plan,
                        &mut out,
                    )?
                }
                (None, None) => anyhow::bail!("give --start and --end, or --synthetic N"),
            };
            out.flush()?;
            eprintln!("{n} lines written to {}", a.out.display());
            Ok(())
        }
    }
}
