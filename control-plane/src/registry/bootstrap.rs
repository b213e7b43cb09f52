//! The default model: trained at first start from the HaluEval sample the repository carries
//! (`control-plane/data/halueval-sample.jsonl.gz`, embedded in the binary), with a fixed seed,
//! so every fresh installation gets the same artifact (same SHA-256) and a model card with its
//! cross-validated figures. See `control-plane/data/README.md`.

use super::{
    bundle_failure, card, check_bundle_row, current_bundle, insert_model, keys, model_sha256,
    move_alias, republish, Actor, IntegrityError, Published, Reason, RegistryError, Why, CHAMPION,
};
use crate::ml::dataset::{self, Row};
use crate::ml::drift_reference::DriftReference;
use crate::ml::{eval, model};
use crate::store::Db;
use anyhow::Context;
use kakeya_core::bundle::{Bundle, BundleError};
use kakeya_core::model::Model;
use serde_json::Value;
use std::time::Instant;

/// The embedded training sample.
pub const SAMPLE: &[u8] = include_bytes!("../../data/halueval-sample.jsonl.gz");
/// Folds of the default model's cross-validation.
pub const FOLDS: usize = eval::DEFAULT_FOLDS;

/// A trained artifact, its card and its drift reference.
pub struct Trained {
    pub model: Model,
    pub card: Value,
    /// From every row, the tenant columns against the model's own baseline (as the gate
    /// stores its decisions); `None` only for rows without a finite feature vector.
    pub reference: Option<DriftReference>,
}

/// The default recipe on `rows`: `folds`-fold CV for the card and the artifact's
/// `cv_metrics`, then the fit on all rows. `folds` < 2 is refused.
pub fn train(
    rows: &[Row],
    dataset_sha256: &str,
    seed: u64,
    l2: f64,
    folds: usize,
) -> Result<Trained, eval::EvalError> {
    let p = eval::prepare(rows, |_| {});
    let recipe = eval::Recipe::Logistic { l2 };
    let t = eval::train(&p, dataset_sha256, seed, &recipe, folds, |_| {})?;
    let mut card = card::from_evaluation(&t.model, &p, &t.cv, folds);
    let x = eval::with_tenant(&p.x, t.model.tenant());
    let reference = DriftReference::from_rows(&x, &(0..p.len()).collect::<Vec<_>>()).ok();
    if let Some(r) = &reference {
        card["drift_reference"] = r.card_entry();
    }
    Ok(Trained {
        model: t.model,
        card,
        reference,
    })
}

/// The default model, trained on the embedded sample.
pub fn train_default() -> anyhow::Result<Trained> {
    let rows = dataset::parse(SAMPLE)?;
    Ok(train(
        &rows,
        &kakeya_core::ids::sha256_hex(SAMPLE),
        eval::DEFAULT_SEED,
        model::DEFAULT_L2,
        FOLDS,
    )?)
}

/// At start-up: when no bundle was ever published, trains and registers the default model (if
/// it is not registered yet), makes it the champion and publishes bundle 1.
pub async fn ensure_default(db: &Db, seed: &[u8; 32]) -> anyhow::Result<Option<Published>> {
    if current_bundle(db).await?.is_some() {
        return Ok(None);
    }
    let t0 = Instant::now();
    let trained = tokio::task::spawn_blocking(train_default).await??;
    let version = trained.model.version();
    tracing::info!(
        model = %version,
        secs = t0.elapsed().as_secs_f64(),
        cv_auroc = %trained.card["evaluation"]["metrics"]["all"]["auroc"],
        "trained the default model on the embedded HaluEval sample"
    );
    let now = crate::now_ms();
    match insert_model(db, seed, &trained.model, &trained.card, now).await {
        Ok(_) | Err(RegistryError::Exists(_)) => {}
        Err(e) => return Err(e.into()),
    }
    match &trained.reference {
        Some(r) => {
            super::reference::store(db, &version, r, now).await?;
        }
        None => tracing::warn!(model = %version, "the default model has no drift reference"),
    }
    let why = Why {
        actor: Actor::Serve,
        reason: Reason::Initial,
        comment: Some("the default model, trained at first start on the embedded sample".into()),
    };
    let p = move_alias(db, seed, CHAMPION, &version, None, &why, now).await?;
    tracing::info!(
        bundle = p.bundle_version,
        sha256 = %p.bundle_sha256,
        "published the first bundle"
    );
    Ok(Some(p))
}

/// What `kakeya serve` runs on the registry before it listens, in this order:
/// [`ensure_default`], [`ensure_trusted`], then [`check_models`]. It never signs a model row
/// or a stored bundle: the one-time signature of rows from before migration 0004
/// ([`backfill_signatures`]) is the operator's explicit `kakeya bundle sign-unsigned`, since a
/// marker in the database itself cannot stop somebody who can write the database.
pub async fn start(db: &Db, seed: &[u8; 32]) -> anyhow::Result<()> {
    ensure_default(db, seed)
        .await
        .context("cannot publish the default model bundle")?;
    ensure_trusted(db, seed)
        .await
        .context("the served bundle cannot be kept")?;
    check_models(db, seed)
        .await
        .context("cannot check the registered model rows")?;
    Ok(())
}

/// `kakeya bundle sign-unsigned`: signs, once per database, the model rows registered before
/// migration 0004 ([`super::backfill_signatures`]), logging each. Returns how many were signed (`None`: the
/// backfill was done before, nothing is ever signed again).
pub async fn backfill_signatures(db: &Db, seed: &[u8; 32]) -> anyhow::Result<Option<usize>> {
    let Some(signed) = super::backfill_signatures(db, seed, crate::now_ms()).await? else {
        return Ok(None);
    };
    let key = keys::public_key_b64(seed);
    for v in &signed {
        tracing::info!(model = %v, public_key = %key, "signed a model row registered before migration 0004 (one-time backfill)");
    }
    Ok(Some(signed.len()))
}

/// Checks the served bundle as a filter does ([`check_bundle_row`]) and never signs its stored
/// bytes again:
/// * it verifies with the signing key loaded now: it is kept, even if a model row was altered
///   after it was published (the bundle carries its own copy of each model; [`check_models`]
///   reports the row). Only a model the bundle carries without any row of that version stops
///   start (published from an altered row by an older build: a version `kakeya model list`
///   does not show);
/// * its recorded SHA-256 is not that of its bytes: the row was altered; start fails, naming it;
/// * its signature does not verify with the key loaded now: the key changed (data dir or
///   `KAKEYA_BUNDLE_SIGNING_SEED_FILE` replaced while the database was kept) or the row was
///   altered. Start fails, naming `kakeya bundle rekey`: re-signing automatically would bless
///   whatever the database holds;
/// * it verifies but does not parse with this build (a bundle format change): the next version
///   is built from the aliases, every model loaded through the integrity check, and signed.
///
/// Every refusal is recorded ([`IntegrityError::record`]). `None` when the served bundle is
/// kept (or none exists).
pub async fn ensure_trusted(db: &Db, seed: &[u8; 32]) -> anyhow::Result<Option<Published>> {
    let Some(b) = current_bundle(db).await? else {
        return Ok(None);
    };
    let key = keys::public_key_b64(seed);
    let why = match check_bundle_row(&b, &key) {
        Ok(bundle) => {
            check_served_models(db, b.version, &bundle).await?;
            return Ok(None);
        }
        Err(e @ BundleError::Digest) => {
            let e = bundle_failure(&b, &e).record();
            anyhow::bail!(
                "{e}: the bundles row was altered outside the control plane, and it is not \
                 signed again. Restore it from a backup, or delete it (DELETE FROM bundles WHERE \
                 version = {v}) so that the previous bundle is served, then start again",
                v = b.version
            );
        }
        Err(e @ (BundleError::Signature | BundleError::Key)) => {
            let e = bundle_failure(&b, &e).record();
            anyhow::bail!(
                "{e} (public key {key}). If the signing key changed (the data dir or \
                 KAKEYA_BUNDLE_SIGNING_SEED_FILE was replaced while the database was kept), \
                 re-sign with `kakeya bundle rekey --previous-seed-file <the previous seed file>` \
                 and start again; nothing is re-signed automatically. Otherwise the bundles row \
                 was altered: restore it from a backup, or delete it (DELETE FROM bundles WHERE \
                 version = {v}) so that the previous bundle is served",
                v = b.version
            );
        }
        Err(e) => e.to_string(),
    };
    tracing::warn!(
        bundle = b.version,
        reason = %why,
        "the served bundle is signed with this key but this build does not take it: \
         re-publishing the current aliases from their verified model rows"
    );
    let p = republish(db, seed, crate::now_ms()).await?;
    tracing::info!(
        bundle = p.bundle_version,
        sha256 = %p.bundle_sha256,
        replaces = b.version,
        "bundle re-published"
    );
    Ok(Some(p))
}

/// Every model of the served bundle `version` has a registered row of its version. A row with
/// another SHA-256 was altered after publication: the bundle (signed) is kept and
/// [`check_models`] reports the row.
async fn check_served_models(db: &Db, version: i64, bundle: &Bundle) -> anyhow::Result<()> {
    for (arm, m) in bundle.arm_models() {
        let Some(m) = m else { continue };
        let arm = arm.as_str();
        match model_sha256(db, &m.version()).await? {
            Some(recorded) if recorded == m.sha256() => {}
            Some(_) => tracing::warn!(
                bundle = version,
                model = %m.version(),
                arm,
                "the served bundle's model row was altered after publication: the bundle \
                 (signed, with its own copy of the model) keeps serving; publishing with the \
                 row is refused until another model is promoted"
            ),
            None => {
                let e = IntegrityError::Bundle {
                    version,
                    why: format!(
                        "its {arm} {} is not a registered model (it was published from an \
                         altered model row)",
                        m.version()
                    ),
                }
                .record();
                anyhow::bail!(
                    "{e}. Promote a verified model (kakeya model list; kakeya model promote \
                     <version>), then start again"
                );
            }
        }
    }
    Ok(())
}

/// At start-up, last: checks every model row ([`super::verify_models`]). Each row that fails
/// (altered, unsigned after the backfill, or signed by another key) is refused with an error
/// log line and `kakeya_registry_integrity_failures_total{what="model"}`; start goes on (the
/// served bundle stays; publishing with such a row is refused). Returns the rows refused.
pub async fn check_models(db: &Db, seed: &[u8; 32]) -> anyhow::Result<Vec<IntegrityError>> {
    let refused = super::verify_models(db, &keys::public_key_b64(seed)).await?;
    if !refused.is_empty() {
        tracing::error!(
            models = refused.len(),
            "model rows failed their integrity check (written outside the control plane): \
             they are not signed, and promoting them or publishing with them is refused"
        );
    }
    Ok(refused)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_model_is_reproducible() {
        let t0 = Instant::now();
        let a = train_default().unwrap();
        let took = t0.elapsed();
        let b = train_default().unwrap();
        assert_eq!(a.model.sha256(), b.model.sha256());
        // Pinned: the default model of every installation since before the tree kind existed
        // (README shows it); a change of the logistic recipe or artifact bytes re-versions it.
        assert_eq!(
            a.model.sha256(),
            "47d0a380c3f4d2a8cf4cfa1e5406067a0f2c653e263ee2b3d1c1db1fd6457af7"
        );
        assert_eq!(a.model.version(), "lr-47d0a380c3f4");
        assert_eq!(a.card, b.card);
        a.model.validate().unwrap();
        assert_eq!(
            a.model.training().dataset_sha256,
            kakeya_core::ids::sha256_hex(SAMPLE)
        );
        let auroc = a.card["evaluation"]["metrics"]["all"]["auroc"]
            .as_f64()
            .unwrap();
        assert!(auroc > 0.75, "CV AUROC {auroc}");
        eprintln!("default model {} trained in {took:?}", a.model.version());
    }
}
