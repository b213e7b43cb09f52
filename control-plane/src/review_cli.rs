//! `kakeya review …` and `kakeya feedback`: the label store on the database directly, through
//! the same functions as `/v1/reviews` and `/v1/feedback` (same validation, same idempotency).

use anyhow::Context;
use clap::{Args, Subcommand};
use kakeya_control_plane::api::decisions::{finish_page, page_args};
use kakeya_control_plane::config::Config;
use kakeya_control_plane::evidence::{self, crypto::EvidenceKey, ReviewEvidence, Tenants, Vault};
use kakeya_control_plane::review::store::{self, QueueStatus, QueuedFor};
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
        /// Only decisions queued for this reason: escalated (by the gate), audit_sample
        /// (accepted, drawn into the audit sample), anomaly_uncertain or anomaly_audit (anomaly
        /// active learning); default all.
        #[arg(long, value_enum)]
        queued_for: Option<QueuedFor>,
        /// Only this tenant's decisions.
        #[arg(long)]
        tenant: Option<String>,
        /// Items per page, 1..=1000.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// next_cursor of the previous page.
        #[arg(long)]
        cursor: Option<String>,
        /// Show the retained evidence (question, context, response) of opted-in tenants'
        /// decisions, decrypted with the server's evidence key (KAKEYA_EVIDENCE_KEY_FILE).
        #[arg(long)]
        evidence: bool,
        /// With --evidence: cut each text to this many characters (0: whole texts).
        #[arg(long, default_value_t = 200, requires = "evidence")]
        max_chars: usize,
    },
    /// Delete retained evidence now: expired records and those of tenants no longer opted in
    /// (what `kakeya serve` does at start and every 5 minutes); with --all, every record.
    PurgeEvidence {
        /// Delete every retained record, whatever the configuration says.
        #[arg(long)]
        all: bool,
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
            queued_for,
            tenant,
            limit,
            cursor,
            evidence,
            max_chars,
        } => {
            let (limit, before) = page_args(Some(limit), cursor.as_deref())?;
            let tenant = tenant.as_deref().filter(|t| !t.is_empty());
            let mut items = store::queue_page(
                &db.pool,
                status,
                queued_for,
                tenant,
                before,
                i64::from(limit) + 1,
            )
            .await?;
            let next_cursor = finish_page(&mut items, limit, |i| i.decision_id);
            let retention = &cfg.review.evidence;
            let vault = if evidence {
                let key = EvidenceKey::load(&cfg.evidence_key_path())
                    .context("evidence key (KAKEYA_EVIDENCE_KEY_FILE)")?;
                Some(Vault::new(key, retention.clone()))
            } else {
                None
            };
            evidence::attach(
                &db.pool,
                vault.as_ref(),
                &retention.tenants,
                &mut items,
                tenant,
                kakeya_control_plane::now_ms(),
            )
            .await?;
            if max_chars > 0 {
                for e in items.iter_mut().filter_map(|i| i.evidence.as_mut()) {
                    truncate_evidence(e, max_chars);
                }
            }
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
        ReviewCmd::PurgeEvidence { all } => {
            // --all: as if nobody were opted in.
            let tenants = if all {
                Tenants::default()
            } else {
                cfg.review.evidence.tenants.clone()
            };
            let p = evidence::purge(&db.pool, &tenants, kakeya_control_plane::now_ms()).await?;
            eprintln!(
                "deleted {} expired records and {} of tenants not opted in",
                p.expired, p.not_opted_in
            );
            println!("{}", serde_json::to_string(&p)?);
        }
    }
    Ok(())
}

/// Cuts every text of `e` to `max` characters, marking a cut with `…`.
fn truncate_evidence(e: &mut ReviewEvidence, max: usize) {
    let cut = |s: &mut String| {
        if let Some((at, _)) = s.char_indices().nth(max) {
            s.truncate(at);
            s.push('…');
        }
    };
    cut(&mut e.question);
    cut(&mut e.context);
    cut(&mut e.response);
    for c in &mut e.citations {
        cut(&mut c.text);
    }
}

pub async fn feedback(cfg: Config, a: FeedbackArgs) -> anyhow::Result<()> {
    let db = db(&cfg).await?;
    let l = NewLabel::feedback(Some(&a.tenant), &a.pcs_id, a.label, Some(a.source))?;
    print_submitted(&review::submit(&db, &l, kakeya_control_plane::now_ms()).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evidence_is_cut_by_characters_with_a_mark() {
        let mut e = ReviewEvidence {
            question: "ééééé".into(),
            context: "abc".into(),
            citations: vec![evidence::ReviewCitation {
                id: "c".into(),
                text: "0123456789".into(),
                source: "s".into(),
            }],
            response: "abcd".into(),
        };
        truncate_evidence(&mut e, 4);
        assert_eq!(e.question, "éééé…");
        assert_eq!(e.context, "abc");
        assert_eq!(e.response, "abcd");
        assert_eq!(e.citations[0].text, "0123…");
    }
}
