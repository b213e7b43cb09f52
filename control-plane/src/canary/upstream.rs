//! Upstream routes (issue 7): `[[upstream]]` of `kakeya.toml` (a named path prefix of the
//! gateway with a stable and a canary backend), and the canary weight of each route
//! (`upstream_weights`, migration 0032) that every published bundle carries
//! ([`kakeya_core::upstream`]). Only the canary controller writes a weight; the filter applies
//! it (docs/CANARY.md, "Upstream routes").

use crate::config::{ConfigError, EnvMap};
use crate::store::Db;
use kakeya_core::upstream::{
    UpstreamArm, UpstreamCanary, UpstreamKey, UpstreamRoute, UpstreamSection,
};
use serde::{Deserialize, Serialize};
use sqlx::{AnyConnection, Row};

/// The `--target` prefix of an upstream canary.
pub const TARGET_PREFIX: &str = "upstream:";

/// One `[[upstream]]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    /// Route name (`A-Z a-z 0-9 _`): clusters `kakeya_up_<name>_stable|canary`.
    pub name: String,
    /// Path prefix the route serves (starts with `/`).
    pub prefix: String,
    /// `host:port` of the stable backend.
    pub stable: String,
    /// `host:port` of the canary backend.
    pub canary: String,
}

impl Upstream {
    /// The Envoy cluster of one side (`stable` or `canary`).
    pub fn cluster(&self, side: &str) -> String {
        format!("kakeya_up_{}_{side}", self.name)
    }

    pub fn route(&self) -> UpstreamRoute {
        UpstreamRoute {
            name: self.name.clone(),
            prefix: self.prefix.clone(),
        }
    }

    fn validate(&self) -> Result<(), String> {
        self.route().validate()?;
        for (side, addr) in [("stable", &self.stable), ("canary", &self.canary)] {
            crate::gateway_config::host_port(addr)
                .map_err(|e| format!("upstream {} {side}: {e}", self.name))?;
        }
        Ok(())
    }
}

/// `[[upstream]]`, replaced by `KAKEYA_UPSTREAMS` when set: entries separated by `;`, each
/// `name,prefix,stable,canary` (e.g. `agent,/agent/,127.0.0.1:9001,127.0.0.1:9002`). Names are
/// unique; prefixes are matched in this order.
pub fn from_parts(file: Vec<Upstream>, env: &EnvMap) -> Result<Vec<Upstream>, ConfigError> {
    let list = match env.get("KAKEYA_UPSTREAMS").map(|v| v.trim()) {
        Some(v) if !v.is_empty() => v
            .split(';')
            .filter(|e| !e.trim().is_empty())
            .map(|e| {
                let f: Vec<&str> = e.split(',').map(str::trim).collect();
                match f.as_slice() {
                    [name, prefix, stable, canary] => Ok(Upstream {
                        name: name.to_string(),
                        prefix: prefix.to_string(),
                        stable: stable.to_string(),
                        canary: canary.to_string(),
                    }),
                    _ => Err(ConfigError::Env {
                        var: "KAKEYA_UPSTREAMS",
                        value: v.to_string(),
                        message: "expected name,prefix,stable,canary entries separated by ;".into(),
                    }),
                }
            })
            .collect::<Result<Vec<_>, _>>()?,
        _ => file,
    };
    let mut names = std::collections::BTreeSet::new();
    for u in &list {
        u.validate().map_err(ConfigError::Invalid)?;
        if !names.insert(u.name.as_str()) {
            return Err(ConfigError::Invalid(format!(
                "two [[upstream]] entries are named {}",
                u.name
            )));
        }
    }
    Ok(list)
}

/// The route name of a `--target`: `upstream:<name>`; `None` for a scoring canary.
pub fn target_route(target: Option<&str>) -> Option<&str> {
    target.and_then(|t| t.strip_prefix(TARGET_PREFIX))
}

/// The bundle's `upstreams` section: every stored weight (read inside the publication).
pub async fn section(conn: &mut AnyConnection) -> Result<UpstreamSection, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT name, canary_weight, arm_key, stable_cluster FROM upstream_weights \
         WHERE canary_weight > 0 OR stable_cluster <> 'stable' ORDER BY name",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut s = UpstreamSection::default();
    for r in rows {
        let key: String = r.try_get("arm_key")?;
        let stable: String = r.try_get("stable_cluster")?;
        s.0.insert(
            r.try_get("name")?,
            UpstreamCanary {
                canary_weight: r.try_get("canary_weight")?,
                key: UpstreamKey::parse(&key).unwrap_or_default(),
                stable_cluster: UpstreamArm::parse(&stable).unwrap_or_default(),
            },
        );
    }
    Ok(s)
}

/// Route `name`'s stored canary weight and stable cluster (0 and `stable` without a row).
async fn stored(db: &Db, name: &str) -> Result<(f64, UpstreamArm), sqlx::Error> {
    let row =
        sqlx::query("SELECT canary_weight, stable_cluster FROM upstream_weights WHERE name = $1")
            .bind(name)
            .fetch_optional(&db.pool)
            .await?;
    match row {
        None => Ok((0.0, UpstreamArm::Stable)),
        Some(r) => Ok((
            r.try_get("canary_weight")?,
            UpstreamArm::parse(&r.try_get::<String, _>("stable_cluster")?).unwrap_or_default(),
        )),
    }
}

/// Which cluster of route `name` serves as its stable one (`stable` without a row).
pub async fn stable_cluster(db: &Db, name: &str) -> Result<UpstreamArm, sqlx::Error> {
    Ok(stored(db, name).await?.1)
}

/// The Envoy cluster of route `name`'s side `arm` (`kakeya_up_<name>_stable|canary`).
pub fn cluster_name(name: &str, arm: UpstreamArm) -> String {
    format!("kakeya_up_{name}_{}", arm.as_str())
}

/// Sets route `name`'s canary weight and publishes the next bundle, in one transaction
/// ([`crate::registry::publish_with`]): every filter takes it within one poll. The route's
/// stable cluster stays; a row at weight 0 on the rendered stable cluster is removed.
pub async fn set_weight(
    db: &Db,
    seed: &[u8; 32],
    name: &str,
    weight: f64,
    key: UpstreamKey,
    now_ms: i64,
) -> Result<i64, crate::registry::RegistryError> {
    write_route(db, seed, name, weight, key, false, now_ms).await
}

/// Completes a promotion of route `name`'s canary: its cluster becomes the route's stable one
/// and the other cluster's weight is 0, in one published bundle (blue/green: the demoted
/// backend's address takes the route's next canary).
pub async fn promote(
    db: &Db,
    seed: &[u8; 32],
    name: &str,
    key: UpstreamKey,
    now_ms: i64,
) -> Result<i64, crate::registry::RegistryError> {
    write_route(db, seed, name, 0.0, key, true, now_ms).await
}

async fn write_route(
    db: &Db,
    seed: &[u8; 32],
    name: &str,
    weight: f64,
    key: UpstreamKey,
    swap: bool,
    now_ms: i64,
) -> Result<i64, crate::registry::RegistryError> {
    if !(0.0..=1.0).contains(&weight) {
        return Err(crate::registry::RegistryError::Invalid(
            "an upstream canary weight must be within [0, 1]".into(),
        ));
    }
    let (name, key) = (name.to_string(), key.as_str());
    let published = crate::registry::publish_with(db, seed, now_ms, move |conn| {
        Box::pin(async move {
            sqlx::query(
                "INSERT INTO upstream_weights (name, canary_weight, arm_key, updated_at_ms) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO UPDATE SET \
                 canary_weight = excluded.canary_weight, arm_key = excluded.arm_key, \
                 updated_at_ms = excluded.updated_at_ms",
            )
            .bind(&name)
            .bind(weight)
            .bind(key)
            .bind(now_ms)
            .execute(&mut *conn)
            .await?;
            if swap {
                sqlx::query(
                    "UPDATE upstream_weights SET stable_cluster = CASE stable_cluster \
                     WHEN 'stable' THEN 'canary' ELSE 'stable' END WHERE name = $1",
                )
                .bind(&name)
                .execute(&mut *conn)
                .await?;
            }
            sqlx::query(
                "DELETE FROM upstream_weights WHERE name = $1 AND canary_weight = 0 \
                 AND stable_cluster = 'stable'",
            )
            .bind(&name)
            .execute(&mut *conn)
            .await?;
            Ok(())
        })
    })
    .await?;
    Ok(published.bundle_version)
}

/// The stored weight of route `name` (0 without a row).
pub async fn weight(db: &Db, name: &str) -> Result<f64, sqlx::Error> {
    Ok(stored(db, name).await?.0)
}

/// `kakeya canary clear-upstream NAME` and `POST /v1/operator/canary/upstream/{name}/clear`:
/// weight 0 for a configured route's canary side (its stable cluster stays; e.g. a route left
/// at 100 % by a promotion before migration 0036); refused while a canary of it is active.
pub async fn clear(
    db: &Db,
    seed: &[u8; 32],
    opts: &super::CanaryOptions,
    name: &str,
    now_ms: i64,
) -> Result<i64, super::CanaryError> {
    if !opts.upstreams.iter().any(|u| u == name) {
        return Err(super::CanaryError::NotFound(format!(
            "upstream route {name} (not in [[upstream]])"
        )));
    }
    let target = format!("{TARGET_PREFIX}{name}");
    if let Some(d) = super::store::active_on(db, Some(&target)).await? {
        return Err(super::CanaryError::Conflict {
            code: "canary_active",
            message: format!("deployment {} is canarying {name}; abort it instead", d.id),
        });
    }
    Ok(set_weight(db, seed, name, 0.0, UpstreamKey::Tenant, now_ms).await?)
}
