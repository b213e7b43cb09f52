//! The default model: trained at first start from the HaluEval sample the repository carries
//! (`control-plane/data/halueval-sample.jsonl.gz`, embedded in the binary), with a fixed seed,
//! so every fresh installation gets the same artifact (same SHA-256) and a model card with its
//! cross-validated figures. See `control-plane/data/README.md`.

use super::{
    card, current_bundle, insert_model, keys, model_sha256, republish, set_alias, IntegrityError,
    Published, RegistryError, CHAMPION,
};
use crate::ml::dataset::{self, Row};
use crate::ml::{eval, model};
use crate::store::Db;
use kakeya_core::bundle::Bundle;
use kakeya_core::model::{HrsModel, TrainingMeta};
use kakeya_core::pcs_builder::RECIPE_VERSION;
use serde_json::Value;
use std::time::Instant;

/// The embedded training sample.
pub const SAMPLE: &[u8] = include_bytes!("../../data/halueval-sample.jsonl.gz");
/// Folds of the default model's cross-validation.
pub const FOLDS: usize = eval::DEFAULT_FOLDS;

/// A trained artifact and its card.
pub struct Trained {
    pub model: HrsModel,
    pub card: Value,
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
    let cv = eval::cross_validate(&p, folds, seed, l2, |_| {})?;
    let (pipe, tenant) = eval::fit_all(&p, seed, l2);
    let m = model::artifact(
        pipe,
        tenant,
        TrainingMeta {
            seed,
            rows: p.len(),
            dataset_sha256: dataset_sha256.to_string(),
            recipe_version: RECIPE_VERSION.into(),
            l2,
            cv_metrics: eval::per_task(&p, &cv.model),
        },
    );
    let card = card::from_evaluation(&m, &p, &cv, folds);
    Ok(Trained { model: m, card })
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
    let p = set_alias(db, seed, CHAMPION, &version, None, now).await?;
    tracing::info!(
        bundle = p.bundle_version,
        sha256 = %p.bundle_sha256,
        "published the first bundle"
    );
    Ok(Some(p))
}

/// At start-up, after [`ensure_default`] and [`ensure_models_signed`], checks the served
/// bundle and never signs its stored bytes again:
/// * its recorded SHA-256 is not that of its bytes: the row was altered. Start fails, naming
///   the row (the filters refuse it anyway and keep their last good bundle);
/// * it verifies with the signing key loaded now: every model it carries must be a registered
///   row with the same recorded SHA-256 (a bundle published from an altered row carries a
///   version `kakeya model list` does not show). Start fails otherwise, naming the model;
/// * it verifies but does not parse with this build (a bundle format change), or its signature
///   does not verify with the key loaded now (the data dir, hence the seed, was replaced while
///   the database was kept): the next version is built from the aliases, every model loaded
///   through the integrity check, and signed with this key. An alias on an altered row makes
///   that fail, and start with it.
///
/// `None` when the served bundle is kept (or none exists).
pub async fn ensure_trusted(db: &Db, seed: &[u8; 32]) -> anyhow::Result<Option<Published>> {
    let Some(b) = current_bundle(db).await? else {
        return Ok(None);
    };
    let key = keys::public_key_b64(seed);
    let actual = kakeya_core::ids::sha256_hex(b.bytes.as_bytes());
    if actual != b.sha256 {
        let e = IntegrityError::Bundle {
            version: b.version,
            why: format!(
                "the stored bytes' SHA-256 {actual} does not match the recorded {}",
                b.sha256
            ),
        }
        .record();
        anyhow::bail!(
            "{e}: the bundles row was altered outside the control plane, and it is not signed \
             again. Restore it from a backup, or delete it (DELETE FROM bundles WHERE version = \
             {v}) so that the previous bundle is served, then start again",
            v = b.version
        );
    }
    let why = if keys::verify_artifact(b.bytes.as_bytes(), &b.signature, &key) {
        match kakeya_core::bundle::verify_bundle(
            b.bytes.as_bytes(),
            &b.sha256,
            &b.signature,
            std::slice::from_ref(&key),
        ) {
            Ok(bundle) => {
                check_served_models(db, b.version, &bundle).await?;
                return Ok(None);
            }
            Err(e) => format!("this build does not take it ({e})"),
        }
    } else {
        "its signature does not verify with the current signing key (was the data dir or \
         KAKEYA_BUNDLE_SIGNING_SEED_FILE replaced while the database was kept?)"
            .to_string()
    };
    tracing::warn!(
        bundle = b.version,
        reason = %why,
        public_key = %key,
        "re-publishing the current aliases from their verified model rows, signed with the current key"
    );
    let p = republish(db, seed, crate::now_ms()).await?;
    tracing::info!(
        bundle = p.bundle_version,
        sha256 = %p.bundle_sha256,
        replaces = b.version,
        "re-signed bundle published"
    );
    Ok(Some(p))
}

/// Every model of the served bundle `version` is a registered row with the same recorded
/// SHA-256.
async fn check_served_models(db: &Db, version: i64, bundle: &Bundle) -> anyhow::Result<()> {
    for (arm, m) in [
        ("champion", Some(&bundle.champion)),
        ("challenger", bundle.challenger.as_ref()),
    ] {
        let Some(m) = m else { continue };
        let recorded = model_sha256(db, &m.version()).await?;
        if recorded.as_deref() != Some(m.sha256().as_str()) {
            let e = IntegrityError::Bundle {
                version,
                why: format!(
                    "its {arm} {} is not a registered model (it was published from an altered \
                     model row)",
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
    Ok(())
}

/// At start-up, before [`ensure_trusted`]: signs every registered model whose signature is
/// missing (registered before migration 0004) or does not verify with the signing key loaded
/// now, logging each one. Rows whose stored artifact was altered are never signed: each is
/// refused with an error log line and `kakeya_registry_integrity_failures_total{what="model"}`,
/// and start goes on (the served bundle stays; publishing with such a row is refused).
/// Returns the number of models signed.
pub async fn ensure_models_signed(db: &Db, seed: &[u8; 32]) -> anyhow::Result<usize> {
    let (signed, refused) = super::sign_models(db, seed).await?;
    let key = keys::public_key_b64(seed);
    for s in &signed {
        if s.was_unsigned {
            tracing::info!(model = %s.version, public_key = %key, "signed an unsigned model artifact");
        } else {
            tracing::warn!(
                model = %s.version,
                public_key = %key,
                "the model artifact's signature does not verify with the current signing key \
                 (was the data dir or KAKEYA_BUNDLE_SIGNING_SEED_FILE replaced?); re-signed it"
            );
        }
    }
    if !refused.is_empty() {
        tracing::error!(
            models = refused.len(),
            "model rows were altered outside the control plane: they are not signed, and \
             promoting them or publishing with them is refused"
        );
    }
    Ok(signed.len())
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
        assert_eq!(a.card, b.card);
        a.model.validate().unwrap();
        assert_eq!(
            a.model.training.dataset_sha256,
            kakeya_core::ids::sha256_hex(SAMPLE)
        );
        let auroc = a.card["evaluation"]["metrics"]["all"]["auroc"]
            .as_f64()
            .unwrap();
        assert!(auroc > 0.75, "CV AUROC {auroc}");
        eprintln!("default model {} trained in {took:?}", a.model.version());
    }
}
