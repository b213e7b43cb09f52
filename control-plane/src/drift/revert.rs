//! Auto-revert: the champion's performance-drift alert moves the champion back to the last good
//! one ([`last_good_champion`]) through the registry's one publication path
//! ([`registry::move_alias`], reason `auto_revert`), which publishes the bundle the filters
//! then serve.
//!
//! Never a loop: the position being reverted (the alias-history row that made the alerting
//! version champion) is claimed first in `drift_reverts` (its primary key), so however many
//! alerts, checks or replicas see the same bad champion, it is reverted once; a version moved
//! away from by an `auto_revert` is never chosen again by [`last_good_champion`]. With nothing
//! to revert to the claim records `nothing_to_revert` and nothing moves. A failed move gives
//! its claim back (a later alert tries again).

use super::{auto_reverts_total, store, DriftAlert, DriftError, RevertAction};
use crate::registry::history::{last_good_champion, page, Actor, Reason, Why};
use crate::registry::{self, keys, CHAMPION};
use crate::store::Db;

/// Acts on `alert` (a performance alert of the champion); returns what it did and why.
pub async fn auto_revert(
    db: &Db,
    seed: &[u8; 32],
    alert: &DriftAlert,
    actor: Actor,
    now_ms: i64,
) -> Result<(RevertAction, String), DriftError> {
    let position = {
        let mut conn = db.pool.acquire().await?;
        page(&mut conn, Some(CHAMPION), None, 1).await?.pop()
    };
    let Some(position) =
        position.filter(|p| p.new_version.as_deref() == Some(alert.model_version.as_str()))
    else {
        return Ok((
            RevertAction::NotChampion,
            format!(
                "{} is no longer the champion; nothing to revert",
                alert.model_version
            ),
        ));
    };
    if !store::claim_revert(db, position.id, alert, now_ms).await? {
        let by = store::revert_claim(db, position.id).await?;
        return Ok((
            RevertAction::AlreadyHandled,
            match by {
                Some((id, outcome)) => format!(
                    "this champion position (alias history {}) was handled for alert {id} ({outcome})",
                    position.id
                ),
                None => format!("alias history {} was handled already", position.id),
            },
        ));
    }
    let key = keys::public_key_b64(seed);
    let target = match last_good_champion(db, &key).await {
        Ok(t) => t,
        Err(e) => return failed(db, position.id, e.to_string()).await,
    };
    let Some(target) = target else {
        store::finish_revert(db, position.id, None).await?;
        auto_reverts_total()
            .with_label_values(&["nothing_to_revert"])
            .inc();
        tracing::error!(alert = alert.id, model = %alert.model_version,
            "performance drift of the champion and no earlier good champion to revert to");
        return Ok((
            RevertAction::NothingToRevert,
            format!(
                "no earlier champion to go back to (every one is {} or was reverted from, or \
                 failed its integrity check); {} stays champion",
                alert.model_version, alert.model_version
            ),
        ));
    };
    let why = Why {
        actor,
        reason: Reason::AutoRevert,
        comment: Some(format!(
            "performance_drift alert {} (check {}): rolling AUROC {:.4} below {:.4} (the card's \
             minus the allowed drop), DeLong p = {}; {} -> {}",
            alert.id,
            alert.check_id,
            alert.statistic,
            alert.threshold,
            alert
                .p_value
                .map_or_else(|| "n/a".to_string(), |p| format!("{p:.3e}")),
            alert.model_version,
            target
        )),
    };
    match registry::move_alias(db, seed, CHAMPION, &target, None, &why, now_ms).await {
        Ok(p) => {
            let history = p.moved.as_ref().map_or(0, |m| m.id);
            store::finish_revert(db, position.id, Some((&target, p.bundle_version, history)))
                .await?;
            auto_reverts_total().with_label_values(&["reverted"]).inc();
            tracing::warn!(alert = alert.id, from = %alert.model_version, to = %target,
                bundle = p.bundle_version, "auto-revert: champion moved back");
            Ok((
                RevertAction::Reverted,
                format!(
                    "champion {} -> {target} (bundle {}, alias history {history})",
                    alert.model_version, p.bundle_version
                ),
            ))
        }
        Err(e) => failed(db, position.id, e.to_string()).await,
    }
}

async fn failed(db: &Db, position: i64, why: String) -> Result<(RevertAction, String), DriftError> {
    store::release_revert(db, position).await?;
    auto_reverts_total().with_label_values(&["failed"]).inc();
    tracing::error!(error = %why, "auto-revert failed");
    Ok((RevertAction::Failed, format!("the revert failed: {why}")))
}
