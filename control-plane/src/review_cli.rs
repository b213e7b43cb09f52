//! `kakeya review …` and `kakeya feedback`: the label store on the database directly, through
//! the same functions as `/v1/reviews` and `/v1/feedback` (same validation, same idempotency).

use anyhow::Context;
use clap::{Args, Subcommand};
use kakeya_control_plane::api::decisions::{finish_page, page_args};
use kakeya_control_plane::config::Config;
use kakeya_control_plane::review::store::{self, QueueStatus};
use kakeya_control_plane::review::{self, Label, NewLabel, Source, Submitted};
use kakeya_control_plane::store::Db;

#[derive(Subcommand)]
pub enum ReviewCmd {
    /// List queued decisions (escalated or audit-sampled, newest first) with their labels, as
    /// JSON (one page, like GET /v1/reviews; pass the printed next_cursor as --cursor for the
    /// next one).
    List {
        /// open: not labelled yet; labelled: with at least one label; all.
        #[arg(long, value_enum, default_value = "open")]
        status: QueueStatus,
        /// Only this tenant's decisions.
        #[arg(long)]
        tenant: Option<String>,
        /// Items per page, 1..=1000.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// next_cursor of the previous page.
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Label a decision as a reviewer (source gold, confidence 1.0). Giving the same label
    /// again changes nothing; a different one is refused (labels are immutable).
    Label {
        /// Tenant of the decision.
        tenant: String,
        /// pcs_id of the decision.
        pcs_id: String,
        /// Your verdict on the answer.
        #[arg(long, value_enum)]
        label: Label,
        /// Your name, stored as the labeller.
        #[arg(long)]
        reviewer: String,
        /// Free text, at most 4096 characters.
        #[arg(long)]
        comment: Option<String>,
    },
}

/// Record the agent owner's label of a decision (labeller "owner"), as POST /v1/feedback does.
#[derive(Args)]
pub struct FeedbackArgs {
    /// pcs_id of the decision.
    pub pcs_id: String,
    /// The owner's verdict on the answer.
    #[arg(long, value_enum)]
    pub label: Label,
    /// Tenant of the decision.
    #[arg(long, default_value = review::DEFAULT_TENANT)]
    pub tenant: String,
    /// silver (confidence 0.8) or bronze (0.5); gold is the review queue's.
    #[arg(long, value_enum, default_value = "silver")]
    pub source: Source,
}

async fn db(cfg: &Config) -> anyhow::Result<Db> {
    Db::connect(&cfg.database_url, None)
        .await
        .context("cannot open the database; check DATABASE_URL")
}

/// Prints the stored row as JSON and says on stderr whether it is new.
fn print_submitted(s: &Submitted) -> anyhow::Result<()> {
    match s {
        Submitted::Created(_) => eprintln!("label stored"),
        Submitted::Existing(_) => eprintln!("this label was already stored; nothing changed"),
    }
    println!("{}", serde_json::to_string_pretty(s.row())?);
    Ok(())
}

pub async fn review(cfg: Config, cmd: ReviewCmd) -> anyhow::Result<()> {
    let db = db(&cfg).await?;
    match cmd {
        ReviewCmd::List {
            status,
            tenant,
            limit,
            cursor,
        } => {
            let (limit, before) = page_args(Some(limit), cursor.as_deref())?;
            let tenant = tenant.as_deref().filter(|t| !t.is_empty());
            let mut items =
                store::queue_page(&db.pool, status, tenant, before, i64::from(limit) + 1).await?;
            let next_cursor = finish_page(&mut items, limit, |i| i.decision_id);
            let page = serde_json::json!({ "items": items, "next_cursor": next_cursor });
            println!("{}", serde_json::to_string_pretty(&page)?);
        }
        ReviewCmd::Label {
            tenant,
            pcs_id,
            label,
            reviewer,
            comment,
        } => {
            let l = NewLabel::review(&tenant, &pcs_id, label, &reviewer, comment.as_deref())?;
            print_submitted(&review::submit(&db, &l, kakeya_control_plane::now_ms()).await?)?;
        }
    }
    Ok(())
}

pub async fn feedback(cfg: Config, a: FeedbackArgs) -> anyhow::Result<()> {
    let db = db(&cfg).await?;
    let l = NewLabel::feedback(Some(&a.tenant), &a.pcs_id, a.label, Some(a.source))?;
    print_submitted(&review::submit(&db, &l, kakeya_control_plane::now_ms()).await?)
}
