//! `kakeya model …` and `kakeya bundle …`: the registry on the database directly, through the
//! same functions as the REST API (a running `kakeya serve` serves the new bundle at once).

use crate::{BundleCmd, ModelCmd};
use anyhow::Context;
use kakeya_control_plane::config::Config;
use kakeya_control_plane::registry::{self, CHALLENGER, CHAMPION};
use kakeya_control_plane::store::Db;
use kakeya_core::bundle::verify_bundle;

async fn db(cfg: &Config) -> anyhow::Result<Db> {
    Db::connect(&cfg.database_url, None)
        .await
        .context("cannot open the database; check DATABASE_URL")
}

fn print_published(p: &registry::Published) {
    for a in &p.aliases {
        if a.alias == CHALLENGER {
            println!("{:<10} {} (weight {})", a.alias, a.version, a.weight);
        } else {
            println!("{:<10} {}", a.alias, a.version);
        }
    }
    println!(
        "published bundle {} (sha256 {})",
        p.bundle_version, p.bundle_sha256
    );
}

pub async fn model(mut cfg: Config, cmd: ModelCmd) -> anyhow::Result<()> {
    registry::configure_tenant_stats_days(cfg.tenant_stats_days);
    let db = db(&cfg).await?;
    match cmd {
        ModelCmd::Register { file } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let seed = cfg.load_bundle_key()?;
            let s = kakeya_control_plane::api::registry::register(&db, &seed, &bytes).await?;
            println!(
                "registered {} (sha256 {}, signature {})",
                s.version,
                s.sha256,
                s.signature.as_deref().unwrap_or("-")
            );
        }
        ModelCmd::List => {
            println!(
                "{:<16} {:<14} {:<20} {:<64} signature",
                "version", "created_at_ms", "aliases", "sha256"
            );
            for m in registry::list_models(&db).await? {
                let aliases = if m.aliases.is_empty() {
                    "-".to_string()
                } else {
                    m.aliases.join(",")
                };
                println!(
                    "{:<16} {:<14} {:<20} {:<64} {}",
                    m.version,
                    m.created_at_ms,
                    aliases,
                    m.sha256,
                    m.signature
                        .as_deref()
                        .unwrap_or("- (unsigned: kakeya serve signs it)")
                );
            }
        }
        ModelCmd::Promote {
            version,
            challenger,
            weight,
        } => {
            let seed = cfg.load_bundle_key()?;
            let alias = if challenger { CHALLENGER } else { CHAMPION };
            let p = registry::set_alias(
                &db,
                &seed,
                alias,
                &version,
                weight,
                kakeya_control_plane::now_ms(),
            )
            .await?;
            print_published(&p);
        }
        ModelCmd::RemoveChallenger => {
            let seed = cfg.load_bundle_key()?;
            let p = registry::remove_challenger(&db, &seed, kakeya_control_plane::now_ms()).await?;
            print_published(&p);
        }
    }
    Ok(())
}

pub async fn bundle(mut cfg: Config, cmd: BundleCmd) -> anyhow::Result<()> {
    cfg.load_bundle_key()
        .context("bundle signing key (KAKEYA_BUNDLE_SIGNING_SEED_FILE)")?;
    let pk = cfg.bundle_public_key.clone().unwrap_or_default();
    match cmd {
        BundleCmd::PublicKey => println!("{pk}"),
        BundleCmd::Show => {
            let db = db(&cfg).await?;
            let Some(b) = registry::current_bundle(&db).await? else {
                anyhow::bail!("no bundle published yet (kakeya serve publishes the first one)");
            };
            let bundle = verify_bundle(b.bytes.as_bytes(), &b.sha256, &b.signature, &[pk])
                .context("the stored bundle does not verify with this control plane's key")?;
            let out = serde_json::json!({
                "version": b.version,
                "created_at_ms": b.created_at_ms,
                "sha256": b.sha256,
                "signature": b.signature,
                "bytes": b.bytes.len(),
                "champion": bundle.champion.version(),
                "challenger": bundle.challenger.as_ref().map(|m| m.version()),
                "challenger_weight": bundle.challenger_weight,
                "policy": bundle.policy,
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
    }
    Ok(())
}
