//! `kakeya eval --through … --feedback`: the dataset labels of the rows just sent, recorded as
//! the agent owner's feedback on the decisions the gateway made for them (labeller `owner`,
//! silver or bronze), through the function behind `POST /v1/feedback` and `kakeya feedback`
//! (same validation, same idempotency). It is the step a newcomer needs between "a batch of
//! labelled answers went through the gateway" and `kakeya hrs train`: the labels an owner
//! would send later, without a script that maps every row to its pcs_id.

use crate::eval_gateway::Run;
use anyhow::Context;
use kakeya_control_plane::config::Config;
use kakeya_control_plane::ml::dataset::Row;
use kakeya_control_plane::review::{self, Label, NewLabel, Source, Submitted};
use kakeya_control_plane::store::Db;
use serde_json::{json, Value};
use std::collections::BTreeSet;

/// The owner's label of a dataset row (1 = hallucinated).
fn label_of(row: &Row) -> Label {
    if row.label == 1 {
        Label::Hallucinated
    } else {
        Label::Faithful
    }
}

/// Records the label of `rows[i]` on the decision `run.rows[i]` (the two are in the same
/// order) and returns the summary of the report's `feedback` section.
pub fn record(cfg: &Config, rows: &[Row], run: &Run, source: Source) -> anyhow::Result<Value> {
    anyhow::ensure!(
        rows.len() == run.rows.len(),
        "{} rows sent but {} answers",
        rows.len(),
        run.rows.len()
    );
    let labels = rows
        .iter()
        .zip(&run.rows)
        .map(|(row, served)| {
            NewLabel::feedback(
                Some(&served.tenant),
                &served.pcs_id,
                label_of(row),
                Some(source),
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async {
            let db = Db::connect(&cfg.database_url, None)
                .await
                .context("cannot open the database for --feedback; check DATABASE_URL")?;
            let pb = kakeya_control_plane::progress::bar("owner feedback", labels.len() as u64);
            let (mut created, mut existing) = (0u64, 0u64);
            for (i, l) in labels.iter().enumerate() {
                let stored = review::submit(&db, l, kakeya_control_plane::now_ms())
                    .await
                    .with_context(|| {
                        format!("feedback on {}/{} (row {})", l.tenant, l.pcs_id, rows[i].id)
                    })?;
                match stored {
                    Submitted::Created(_) => created += 1,
                    Submitted::Existing(_) => existing += 1,
                }
                pb.set_position(i as u64 + 1);
            }
            pb.finish_and_clear();
            let hallucinated = labels
                .iter()
                .filter(|l| l.label == Label::Hallucinated)
                .count();
            let tenants: BTreeSet<&str> = labels.iter().map(|l| l.tenant.as_str()).collect();
            anyhow::Ok(json!({
                "labeller": review::OWNER_LABELLER,
                "source": source.as_str(),
                "created": created,
                "existing": existing,
                "hallucinated": hallucinated,
                "faithful": labels.len() - hallucinated,
                "tenants": tenants.len(),
            }))
        })
}
