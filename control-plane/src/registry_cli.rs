//! `kakeya model …` and `kakeya bundle …`: the registry on the database directly, through the
//! same functions as the REST API (a running `kakeya serve` serves the new bundle at once).

use crate::{BundleCmd, ModelCmd};
use anyhow::Context;
use clap::Args;
use kakeya_control_plane::config::Config;
use kakeya_control_plane::registry::keys;
use kakeya_control_plane::registry::{
    self, Actor, AliasRow, StatedReason, Why, CANARY, CHALLENGER, CHAMPION,
};
use kakeya_control_plane::store::Db;
use kakeya_core::bundle::ArmKey;
use std::path::Path;

/// Why an alias moves (recorded in the alias history with the actor cli:<OS user>).
#[derive(Args, Debug, Clone)]
pub struct WhyArgs {
    /// manual (default), gate or auto_revert.
    #[arg(long, value_enum, default_value = "manual")]
    pub reason: StatedReason,
    /// Free text for the history, at most 1024 characters.
    #[arg(long)]
    pub comment: Option<String>,
}

impl WhyArgs {
    fn why(self) -> Why {
        Why {
            actor: Actor::cli(),
            reason: self.reason.into(),
            comment: self.comment,
        }
    }
}

/// The server's signing key, read, never created: only `kakeya serve` creates it (a key made
/// here, in a data dir no server uses, would sign rows no server trusts).
fn seed(path: &Path) -> anyhow::Result<[u8; 32]> {
    keys::load_seed(path).context("bundle signing key (KAKEYA_BUNDLE_SIGNING_SEED_FILE)")
}

async fn db(cfg: &Config) -> anyhow::Result<Db> {
    Db::connect(&cfg.database_url, None)
        .await
        .context("cannot open the database; check DATABASE_URL")
}

fn print_aliases(aliases: &[AliasRow]) {
    for a in aliases {
        match (a.alias.as_str(), a.arm_key) {
            (CHAMPION, _) => println!("{:<10} {}", a.alias, a.version),
            (_, Some(k)) => println!(
                "{:<10} {} (weight {}, key {})",
                a.alias,
                a.version,
                a.weight,
                k.as_str()
            ),
            (_, None) => println!("{:<10} {} (weight {})", a.alias, a.version, a.weight),
        }
    }
}

fn print_published(p: &registry::Published) {
    print_aliases(&p.aliases);
    println!(
        "published bundle {} (sha256 {})",
        p.bundle_version, p.bundle_sha256
    );
}

/// The history page as a table, the cursor of the next page last.
fn print_history(page: &kakeya_control_plane::api::registry::HistoryPage) {
    println!(
        "{:<6} {:<14} {:<10} {:<16} {:<16} {:<7} {:<12} {:<20} {:<7} comment",
        "id", "created_at_ms", "alias", "previous", "new", "weight", "reason", "actor", "bundle"
    );
    for e in &page.items {
        // The weight of a weighted alias (a canary step moves it alone); the champion's is 1.
        let weight = match (e.alias.as_str(), e.weight) {
            (CHAMPION, _) | (_, None) => "-".to_string(),
            (_, Some(w)) => w.to_string(),
        };
        println!(
            "{:<6} {:<14} {:<10} {:<16} {:<16} {:<7} {:<12} {:<20} {:<7} {}",
            e.id,
            e.created_at_ms,
            e.alias,
            e.previous_version.as_deref().unwrap_or("-"),
            e.new_version.as_deref().unwrap_or("- (removed)"),
            weight,
            e.reason.as_str(),
            e.actor,
            e.bundle_version,
            e.comment.as_deref().unwrap_or("")
        );
    }
    if let Some(c) = &page.next_cursor {
        println!("more: --cursor {c}");
    }
}

/// `kakeya model remove-challenger|remove-canary`.
async fn remove(cfg: &Config, db: &Db, alias: &str, why: WhyArgs) -> anyhow::Result<()> {
    let seed = seed(&cfg.bundle_signing_seed_file)?;
    let now = kakeya_control_plane::now_ms();
    let p = registry::remove_alias(db, &seed, alias, &why.why(), now).await?;
    print_published(&p);
    Ok(())
}

pub async fn model(cfg: Config, cmd: ModelCmd) -> anyhow::Result<()> {
    let db = db(&cfg).await?;
    match cmd {
        ModelCmd::Register { file } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let seed = seed(&cfg.bundle_signing_seed_file)?;
            let r = kakeya_control_plane::api::registry::register(&db, &seed, &bytes).await?;
            let s = &r.summary;
            println!(
                "{} {} (sha256 {}, signature {})",
                if r.new {
                    "registered"
                } else {
                    "already registered (stored row verified, unchanged):"
                },
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
                        .unwrap_or("- (unsigned: refused; see docs/OPERATIONS.md)")
                );
            }
        }
        ModelCmd::Promote {
            version,
            challenger,
            canary,
            weight,
            key,
            why,
        } => {
            let seed = seed(&cfg.bundle_signing_seed_file)?;
            let now = kakeya_control_plane::now_ms();
            let p = match (canary, challenger) {
                (true, _) => {
                    let weight = weight.context("--canary needs --weight (0..=1)")?;
                    let key = key.as_deref().and_then(ArmKey::parse);
                    registry::move_canary(&db, &seed, &version, weight, key, &why.why(), now)
                        .await?
                }
                (false, c) => {
                    let alias = if c { CHALLENGER } else { CHAMPION };
                    registry::move_alias(&db, &seed, alias, &version, weight, &why.why(), now)
                        .await?
                }
            };
            print_published(&p);
        }
        ModelCmd::RemoveChallenger { why } => remove(&cfg, &db, CHALLENGER, why).await?,
        ModelCmd::RemoveCanary { why } => remove(&cfg, &db, CANARY, why).await?,
        ModelCmd::Aliases { json } => {
            let mut conn = db.pool.acquire().await?;
            let al = registry::aliases(&mut conn).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&al)?);
            } else {
                print_aliases(&al);
            }
        }
        ModelCmd::History {
            alias,
            limit,
            cursor,
            json,
        } => {
            let page = kakeya_control_plane::api::registry::history_page(
                &db,
                alias,
                Some(limit),
                cursor.as_deref(),
            )
            .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&page)?);
            } else {
                print_history(&page);
            }
        }
        ModelCmd::AttachTask {
            parent,
            task,
            model,
            tenant,
        } => {
            let kind = kakeya_core::task::TaskKind::parse(&task).with_context(|| {
                format!("--task {task:?}: use qa, dialogue, summarization, rag or other")
            })?;
            let seed = seed(&cfg.bundle_signing_seed_file)?;
            let now = kakeya_control_plane::now_ms();
            let p = registry::task_models::attach(
                &db,
                &seed,
                &parent,
                kind,
                tenant.as_deref(),
                &model,
                now,
            )
            .await?;
            println!(
                "{model} scores {task} for {} of {parent}",
                tenant.as_deref().unwrap_or("every tenant")
            );
            match p {
                Some(p) => print_published(&p),
                None => println!("{parent} is not the champion: published when it is promoted"),
            }
        }
        ModelCmd::Tasks { version } => {
            println!(
                "{:<14} {:<20} {:<16} created_at_ms",
                "task", "tenant", "model"
            );
            for c in registry::task_models::children(&db, &version).await? {
                println!(
                    "{:<14} {:<20} {:<16} {}",
                    c.task,
                    c.tenant.as_deref().unwrap_or("*"),
                    c.model,
                    c.created_at_ms
                );
            }
        }
    }
    Ok(())
}

pub async fn bundle(cfg: Config, cmd: BundleCmd) -> anyhow::Result<()> {
    let seed = seed(&cfg.bundle_signing_seed_file)?;
    let pk = keys::public_key_b64(&seed);
    match cmd {
        BundleCmd::PublicKey => println!("{pk}"),
        BundleCmd::Show => {
            let db = db(&cfg).await?;
            let Some((b, bundle)) = registry::served_bundle(&db, &pk).await? else {
                anyhow::bail!("no bundle published yet (kakeya serve publishes the first one)");
            };
            let out = serde_json::json!({
                "version": b.version,
                "created_at_ms": b.created_at_ms,
                "sha256": b.sha256,
                "signature": b.signature,
                "bytes": b.bytes.len(),
                "champion": bundle.champion.version(),
                "task_models": {
                    "by_task": bundle.task_models.by_task.iter()
                        .map(|(t, m)| (t.as_str().to_string(), m.version()))
                        .collect::<std::collections::BTreeMap<_, _>>(),
                    "by_tenant": bundle.task_models.by_tenant.iter()
                        .map(|(tenant, ms)| (tenant.clone(), ms.iter()
                            .map(|(t, m)| (t.as_str().to_string(), m.version()))
                            .collect::<std::collections::BTreeMap<_, _>>()))
                        .collect::<std::collections::BTreeMap<_, _>>(),
                },
                "challenger": bundle.challenger.as_ref().map(|m| m.version()),
                "challenger_weight": bundle.challenger_weight,
                "canary": bundle.canary.as_ref().map(|c| serde_json::json!({
                    "version": c.model.version(),
                    "weight": c.weight,
                    "key": c.key,
                })),
                "policy": bundle.policy,
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        BundleCmd::SignUnsigned => {
            let db = db(&cfg).await?;
            match registry::bootstrap::backfill_signatures(&db, &seed).await? {
                None => println!("done before: unsigned model rows are never signed again"),
                Some(n) => println!(
                    "signed {n} model rows registered before migration 0004 (listed in the log)"
                ),
            }
        }
        BundleCmd::Rekey { previous_seed_file } => {
            let previous = keys::load_seed(&previous_seed_file).context("--previous-seed-file")?;
            let db = db(&cfg).await?;
            let r = registry::rekey(&db, &seed, &previous, kakeya_control_plane::now_ms()).await;
            let r = r.context("re-keying failed")?;
            // audit: the previous key's checkpoints stay verifiable (docs/AUDIT.md, Keys).
            let now = kakeya_control_plane::now_ms();
            let k = kakeya_control_plane::audit::keyring::rotate(&db, &previous, &seed, now);
            let k = k
                .await
                .context("retiring the previous key in the audit keyring failed")?;
            println!("audit key  {} retired, kept in the keyring", k.key_id);
            for v in &r.resigned {
                println!("re-signed  {v}");
            }
            for v in &r.current {
                println!("current    {v} (already signed with the current key)");
            }
            for e in &r.refused {
                println!("refused    {e}");
            }
            match &r.published {
                Some(p) => print_published(p),
                None => {
                    println!("the served bundle verifies with the current key: nothing published")
                }
            }
            println!("public key {pk}: re-render the Envoy configuration (kakeya envoy render) so the filters trust it");
            if !r.refused.is_empty() {
                anyhow::bail!(
                    "{} model rows are signed by neither key (or altered) and stay refused",
                    r.refused.len()
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 6 review item 3: pointed at a data dir no server has used, the read-only and the
    /// registry write commands fail naming KAKEYA_DATA_DIR, and none of them creates a key
    /// (which a later `kakeya serve` would take for a key change).
    #[test]
    fn cli_commands_never_create_the_signing_key() {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = Config {
            database_url: format!("sqlite://{}/kakeya.db?mode=rwc", tmp.path().display()),
            bundle_signing_seed_file: tmp.path().join("keys/bundle-signing.seed"),
            ..Config::default()
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let errors = [
            rt.block_on(bundle(cfg.clone(), BundleCmd::PublicKey)),
            rt.block_on(bundle(cfg.clone(), BundleCmd::Show)),
            rt.block_on(model(
                cfg.clone(),
                ModelCmd::Promote {
                    version: "lr-000000000000".into(),
                    challenger: false,
                    canary: false,
                    weight: None,
                    key: None,
                    why: WhyArgs {
                        reason: StatedReason::Manual,
                        comment: None,
                    },
                },
            )),
            rt.block_on(model(
                cfg.clone(),
                ModelCmd::RemoveChallenger {
                    why: WhyArgs {
                        reason: StatedReason::Manual,
                        comment: None,
                    },
                },
            )),
            crate::hrs::resolve_model("lr-000000000000", Some(&cfg)).map(|_| ()),
        ];
        for e in errors {
            let e = format!("{:#}", e.unwrap_err());
            assert!(
                e.contains("only `kakeya serve` creates it") && e.contains("KAKEYA_DATA_DIR"),
                "{e}"
            );
        }
        assert!(!cfg.bundle_signing_seed_file.exists());
        assert!(!tmp.path().join("keys").exists());
    }

    /// `kakeya bundle rekey` on a SQLite data dir whose key was replaced: a wrong previous seed
    /// file is refused, the right one re-signs and re-publishes, and start then goes on.
    #[test]
    fn bundle_rekey_re_signs_after_a_key_change() {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = Config {
            database_url: format!("sqlite://{}/kakeya.db?mode=rwc", tmp.path().display()),
            bundle_signing_seed_file: tmp.path().join("keys/bundle-signing.seed"),
            ..Config::default()
        };
        let old = tmp.path().join("old.seed");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let old_seed = keys::load_or_create_seed(&old).unwrap();
        let new_seed = keys::load_or_create_seed(&cfg.bundle_signing_seed_file).unwrap();
        let db = rt.block_on(db(&cfg)).unwrap();
        rt.block_on(registry::bootstrap::start(&db, &old_seed))
            .unwrap();
        assert!(rt
            .block_on(registry::bootstrap::start(&db, &new_seed))
            .is_err());
        let rekey = |previous_seed_file| {
            rt.block_on(bundle(cfg.clone(), BundleCmd::Rekey { previous_seed_file }))
        };
        let wrong = tmp.path().join("wrong.seed");
        keys::load_or_create_seed(&wrong).unwrap();
        assert!(rekey(wrong).is_err());
        assert!(rekey(tmp.path().join("missing.seed")).is_err());
        rekey(old).unwrap();
        rt.block_on(registry::bootstrap::start(&db, &new_seed))
            .unwrap();
        let key = keys::public_key_b64(&new_seed);
        let (row, _) = rt
            .block_on(registry::served_bundle(&db, &key))
            .unwrap()
            .unwrap();
        assert_eq!(row.version, 2);
    }
}
