//! `kakeya ensemble …`: adaptive per-tenant ensemble policies on the database directly,
//! through the same functions as `/v1/ensemble/*` (a published policy goes into the bundle a
//! running `kakeya serve` serves at once).

use crate::ab_cli::print;
use anyhow::Context;
use clap::Subcommand;
use kakeya_control_plane::config::Config;
use kakeya_control_plane::ensemble::outcomes::StrategyResult;
use kakeya_control_plane::ensemble::{self, api::History, FeedbackRequest, Trigger};
use kakeya_control_plane::registry::keys;
use kakeya_control_plane::store::Db;

#[derive(Subcommand)]
pub enum EnsembleCmd {
    /// Tune TENANT's policy now from its labelled outcomes: Thompson sampling over the feasible
    /// arms, an IPS/SNIPS replay against the logged decisions, and publication (a new signed
    /// bundle) unless refused. Prints the run as JSON (like POST /v1/ensemble/tune).
    Tune {
        tenant: String,
        /// Seed of the draws (reproducible runs); default from the OS.
        #[arg(long)]
        seed: Option<u64>,
    },
    /// TENANT's served policy as JSON (like GET /v1/ensemble/policy); exit 1 when none.
    Policy { tenant: String },
    /// Record one decision's strategy results (like POST /v1/ensemble/feedback).
    Feedback {
        pcs_id: String,
        /// Tenant of the decision (needed only when several tenants logged the pcs_id).
        #[arg(long)]
        tenant: Option<String>,
        /// The strategies agreed.
        #[arg(long)]
        agreed: bool,
        /// A strategy result NAME:accept|reject:CONFIDENCE (repeat; an abstaining strategy is
        /// left out), e.g. --vote hrs:accept:0.9 --vote rag_grounding:reject:0.7.
        #[arg(long = "vote", value_parser = parse_vote)]
        votes: Vec<StrategyResult>,
    },
    /// TENANT's policy changes and tuning runs, newest first, as JSON.
    History {
        tenant: String,
        /// At most this many of each, 1..=1000.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
    },
}

fn parse_vote(s: &str) -> Result<StrategyResult, String> {
    let mut it = s.splitn(3, ':');
    let (Some(name), Some(kind), Some(c)) = (it.next(), it.next(), it.next()) else {
        return Err("expected NAME:accept|reject:CONFIDENCE".into());
    };
    let accepted = match kind {
        "accept" => true,
        "reject" => false,
        _ => return Err(format!("expected accept or reject, got {kind:?}")),
    };
    let confidence = c
        .parse::<f64>()
        .map_err(|_| format!("confidence {c:?} is not a number"))?;
    Ok(StrategyResult {
        strategy_name: name.into(),
        accepted,
        confidence,
    })
}

pub async fn run(cfg: Config, cmd: EnsembleCmd) -> anyhow::Result<()> {
    let db = Db::connect(&cfg.database_url, None)
        .await
        .context("cannot open the database; check DATABASE_URL")?;
    let now = kakeya_control_plane::now_ms();
    match cmd {
        EnsembleCmd::Tune { tenant, seed } => {
            let key = keys::load_seed(&cfg.bundle_signing_seed_file)
                .context("bundle signing key (KAKEYA_BUNDLE_SIGNING_SEED_FILE)")?;
            let spinner = kakeya_control_plane::progress::spinner("ensemble tune");
            spinner.enable_steady_tick(std::time::Duration::from_millis(120));
            let r = ensemble::tune(&db, Some(&key), &cfg.ensemble, &tenant, Trigger::Api, seed, now).await;
            spinner.finish_and_clear();
            let r = r?;
            eprintln!(
                "run {}: {:?} {} ({}-of-{}, reward {:.3} [{:.3}, {:.3}], {} labelled){}",
                r.run_id,
                r.outcome,
                r.policy_id,
                r.n,
                r.m,
                r.reward.value,
                r.reward.lo,
                r.reward.hi,
                r.labelled,
                r.reason.as_deref().map(|m| format!(": {m}")).unwrap_or_default()
            );
            print(&r)
        }
        EnsembleCmd::Policy { tenant } => match ensemble::policy_view(&db, &tenant).await? {
            Some(v) => print(&v),
            None => anyhow::bail!(
                "no ensemble policy for tenant {tenant:?} and no [ensemble.default]: run `kakeya ensemble tune {tenant}`"
            ),
        },
        EnsembleCmd::Feedback {
            pcs_id,
            tenant,
            agreed,
            votes,
        } => {
            let req = FeedbackRequest {
                pcs_id,
                tenant_id: tenant,
                agreed,
                strategy_results: votes,
            };
            let t = ensemble::feedback(&db, &req, now).await?;
            eprintln!("stored the outcome of {} (tenant {t})", req.pcs_id);
            Ok(())
        }
        EnsembleCmd::History { tenant, limit } => {
            let limit = i64::from(limit);
            print(&History {
                policies: ensemble::store::history(&db.pool, &tenant, limit).await?,
                runs: ensemble::store::runs(&db.pool, &tenant, limit).await?,
                tenant_id: tenant,
            })
        }
    }
}
