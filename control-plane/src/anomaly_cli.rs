//! `kakeya anomaly …`: the anomaly detector's feedback loop on the database directly, through
//! the same functions as `/v1/anomaly/*`.

use crate::ab_cli::print;
use anyhow::Context;
use clap::Subcommand;
use kakeya_control_plane::anomaly::active::{self, QueueParams};
use kakeya_control_plane::anomaly::cluster::{self, ClusterParams};
use kakeya_control_plane::anomaly::store::{self, NewFeedback, Origin};
use kakeya_control_plane::anomaly::threshold::DEFAULT_TARGET_FPR;
use kakeya_control_plane::anomaly::{feedback, UserLabel};
use kakeya_control_plane::config::Config;
use kakeya_control_plane::review::Source;
use kakeya_control_plane::store::Db;

// Feedback, thresholds, clusters and active learning (the detector's train/eval verbs are
// declared apart from these).
#[derive(Subcommand)]
pub enum AnomalyCmd {
    /// `train` and `eval`: the detector's model offline (anomaly_model_cli.rs).
    #[command(flatten)]
    Model(crate::anomaly_model_cli::AnomalyModelCmd),
    /// Label one decision's anomaly score (like POST /v1/anomaly/feedback); refused when
    /// SUBMITTED_BY labelled it already.
    Feedback {
        /// pcs_id of the decision.
        pcs_id: String,
        #[arg(long, value_enum)]
        label: UserLabel,
        /// Who labels (one feedback per decision each).
        #[arg(long)]
        submitted_by: String,
        /// Tenant of the decision.
        #[arg(long, default_value = "default")]
        tenant: String,
        /// The score the label is about; required when the decision has no recorded score.
        #[arg(long)]
        score: Option<f64>,
        #[arg(long, value_enum, default_value = "silver")]
        source: Source,
        #[arg(long)]
        comment: Option<String>,
    },
    /// Choose the tenant's threshold from its labels (like POST /v1/anomaly/optimize-threshold):
    /// the highest TPR at FPR ≤ TARGET on the exact ROC, or `feasible: false`. Prints the
    /// optimum; a feasible one becomes the current threshold.
    OptimizeThreshold {
        #[arg(long, default_value = "default")]
        tenant: String,
        #[arg(long, default_value_t = DEFAULT_TARGET_FPR)]
        target_fpr: f64,
    },
    /// The tenant's confusion matrix at its current threshold (or --threshold), and its
    /// threshold history.
    Confusion {
        #[arg(long, default_value = "default")]
        tenant: String,
        #[arg(long)]
        threshold: Option<f64>,
    },
    /// The stored clusters of flagged decisions (like GET /v1/anomaly/clusters); with
    /// --rebuild, rebuild them first from the newest 10,000 flagged decisions.
    Clusters {
        #[arg(long)]
        rebuild: bool,
        #[arg(long, default_value_t = ClusterParams::default().k)]
        k: usize,
        #[arg(long, default_value_t = ClusterParams::default().seed)]
        seed: i32,
        /// Raw feature units.
        #[arg(long, default_value_t = ClusterParams::default().max_distance)]
        max_distance: f64,
        #[arg(long, default_value_t = ClusterParams::default().max_clusters)]
        max_clusters: usize,
    },
    /// Send the most uncertain scores and a random audit sample to the review queue (like POST
    /// /v1/anomaly/active-learning).
    Queue {
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long, default_value_t = QueueParams::default().uncertain)]
        uncertain: usize,
        #[arg(long, default_value_t = QueueParams::default().audit)]
        audit: usize,
        #[arg(long, default_value_t = QueueParams::default().seed)]
        seed: i32,
    },
}

pub async fn run(cfg: Config, cmd: AnomalyCmd) -> anyhow::Result<()> {
    let db = Db::connect(&cfg.database_url, None)
        .await
        .context("cannot open the database; check DATABASE_URL")?;
    let now = kakeya_control_plane::now_ms();
    match cmd {
        // main.rs runs these before loading the configuration; kept here for completeness.
        AnomalyCmd::Model(m) => crate::anomaly_model_cli::run(m),
        AnomalyCmd::Feedback {
            pcs_id,
            label,
            submitted_by,
            tenant,
            score,
            source,
            comment,
        } => {
            let f = NewFeedback::checked(
                Some(&tenant),
                &pcs_id,
                score,
                label,
                comment.as_deref(),
                &submitted_by,
                Some(source),
            )?;
            let reoptimised = feedback::submit(&db, None, &f, now).await?;
            eprintln!("feedback stored for {tenant}/{pcs_id}");
            if let Some(o) = reoptimised {
                eprintln!("re-optimised after 100 new labels:");
                print(&o)?;
            }
            Ok(())
        }
        AnomalyCmd::OptimizeThreshold { tenant, target_fpr } => {
            let o = feedback::optimise(&db, None, &tenant, target_fpr, Origin::Cli, now)
                .await
                .context("label anomalous and normal decisions first (kakeya anomaly feedback)")?;
            print(&o)
        }
        AnomalyCmd::Confusion { tenant, threshold } => {
            let c = feedback::confusion(&db, &tenant, threshold).await?;
            let history = store::threshold_history(&db.pool, &tenant, 20).await?;
            print(&serde_json::json!({"confusion": c, "thresholds": history}))
        }
        AnomalyCmd::Clusters {
            rebuild,
            k,
            seed,
            max_distance,
            max_clusters,
        } => {
            let c = if rebuild {
                let p = ClusterParams {
                    k,
                    seed,
                    max_distance,
                    max_clusters,
                };
                let pb = kakeya_control_plane::progress::spinner("clustering flagged decisions");
                let c = cluster::rebuild(&db, None, &p, now).await;
                pb.finish_and_clear();
                c?
            } else {
                store::clusters(&db.pool).await?
            };
            print(&c)
        }
        AnomalyCmd::Queue {
            tenant,
            uncertain,
            audit,
            seed,
        } => {
            let q = active::queue(
                &db,
                &QueueParams {
                    tenant_id: tenant,
                    uncertain,
                    audit,
                    seed,
                },
            )
            .await?;
            eprintln!(
                "{} decisions sent to the review queue (kakeya review list --queued-for anomaly_uncertain)",
                q.len()
            );
            print(&q)
        }
    }
}
