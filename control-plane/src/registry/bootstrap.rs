//! The default model: trained at first start from the HaluEval sample the repository carries
//! (`control-plane/data/halueval-sample.jsonl.gz`, embedded in the binary), with a fixed seed,
//! so every fresh installation gets the same artifact (same SHA-256) and a model card with its
//! cross-validated figures. See `control-plane/data/README.md`.

use super::{
    card, current_bundle, insert_model, keys, republish, set_alias, Published, RegistryError,
    CHAMPION,
};
use crate::ml::dataset::{self, Row};
use crate::ml::{eval, model};
use crate::store::Db;
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

/// At start-up, after [`ensure_default`]: when the served bundle does not verify with the
/// signing key loaded now (the data dir, hence the seed, was replaced while the database was
/// kept, or the stored bundle no longer parses), publishes the next version from the same
/// aliases signed with this key, so the filters, which trust this key, take it. `None` when the
/// served bundle verifies (or none exists).
pub async fn ensure_trusted(db: &Db, seed: &[u8; 32]) -> anyhow::Result<Option<Published>> {
    let Some(b) = current_bundle(db).await? else {
        return Ok(None);
    };
    let key = keys::public_key_b64(seed);
    let why = match kakeya_core::bundle::verify_bundle(
        b.bytes.as_bytes(),
        &b.sha256,
        &b.signature,
        std::slice::from_ref(&key),
    ) {
        Ok(_) => return Ok(None),
        Err(e) => e,
    };
    tracing::warn!(
        bundle = b.version,
        error = %why,
        public_key = %key,
        "the served bundle does not verify with the current signing key (was the data dir or \
         KAKEYA_BUNDLE_SIGNING_SEED_FILE replaced while the database was kept?); re-publishing \
         the current aliases signed with it"
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

/// At start-up: signs every registered model whose signature is missing (registered before
/// migration 0004) or does not verify with the signing key loaded now, logging each one.
/// Rows whose stored artifact was altered are left as they are, with a warning. Returns the
/// number of models signed.
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
    for (version, why) in &refused {
        tracing::warn!(model = %version, reason = %why, "not signing a model artifact");
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
