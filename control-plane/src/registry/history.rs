//! Alias history (`alias_history`, migration 0011): one row per alias move, written by
//! [`super::move_alias`] and [`super::remove_alias`] in the transaction that moves the alias
//! and publishes the bundle, so the history never disagrees with the bundles served. Rows are
//! never updated or deleted.
//!
//! Who moved an alias is an [`Actor`]: the admin API has one bearer token and so one identity
//! (`admin-api`); the CLI records the OS user (`cli:<user>`); background jobs record
//! `scheduler`; the first start `kakeya-serve`. Why is a [`Reason`].

use super::{RegistryError, CHAMPION};
use kakeya_core::bundle::ArmKey;
use serde::{Deserialize, Serialize};
use sqlx::{AnyConnection, Row};
use std::fmt;

/// Longest accepted comment of an alias move, in characters.
pub const MAX_COMMENT_CHARS: usize = 1024;

/// Who moved an alias.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// A caller of the admin API (`admin-api`: the API has one bearer token, so no user name).
    AdminApi,
    /// `kakeya model …` run by this OS user (`cli:<user>`).
    Cli(String),
    /// A background job of the control plane (`scheduler`: auto-deploy gate, auto-revert).
    Scheduler,
    /// `kakeya serve` itself (the default model at first start).
    Serve,
}

impl Actor {
    /// The CLI's actor: the OS user from `USER` (or `LOGNAME`), else the name of the process's
    /// uid in `/etc/passwd` (`uid-<n>` without one), else `unknown`; control characters
    /// dropped, at most 64 characters.
    pub fn cli() -> Actor {
        let user = ["USER", "LOGNAME"]
            .iter()
            .filter_map(|v| std::env::var(v).ok())
            .chain(os_user())
            .map(|u| {
                u.chars()
                    .filter(|c| !c.is_control())
                    .take(64)
                    .collect::<String>()
            })
            .find(|u| !u.trim().is_empty())
            .unwrap_or_else(|| "unknown".into());
        Actor::Cli(user)
    }
}

/// The user name of this process's uid (Unix: the owner of `/proc/self`, looked up in
/// `/etc/passwd`), or `uid-<n>`.
fn os_user() -> Option<String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let uid = std::fs::metadata("/proc/self").ok()?.uid().to_string();
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
        let name = passwd.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() > 2 && f[2] == uid).then(|| f[0].to_string())
        });
        Some(name.unwrap_or_else(|| format!("uid-{uid}")))
    }
    #[cfg(not(unix))]
    None
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::AdminApi => f.write_str("admin-api"),
            Actor::Cli(user) => write!(f, "cli:{user}"),
            Actor::Scheduler => f.write_str("scheduler"),
            Actor::Serve => f.write_str("kakeya-serve"),
        }
    }
}

/// Why an alias moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// An operator (API or CLI).
    Manual,
    /// The auto-deploy gate promoted a model that passed it.
    Gate,
    /// Moved back to the last good champion after a performance-drift alert.
    AutoRevert,
    /// The alias's first recorded position: the default model at first start, or the alias
    /// as migration 0011 found it. Recorded by the registry itself, never stated by a caller.
    Initial,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Manual => "manual",
            Reason::Gate => "gate",
            Reason::AutoRevert => "auto_revert",
            Reason::Initial => "initial",
        }
    }

    fn parse(s: &str) -> Option<Reason> {
        [
            Reason::Manual,
            Reason::Gate,
            Reason::AutoRevert,
            Reason::Initial,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }
}

/// The reasons a caller (API body, CLI flag) may state; `initial` is the registry's own.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
    clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum StatedReason {
    #[default]
    Manual,
    Gate,
    #[value(name = "auto_revert")]
    AutoRevert,
}

impl From<StatedReason> for Reason {
    fn from(r: StatedReason) -> Reason {
        match r {
            StatedReason::Manual => Reason::Manual,
            StatedReason::Gate => Reason::Gate,
            StatedReason::AutoRevert => Reason::AutoRevert,
        }
    }
}

/// Who moves an alias and why: recorded with the move.
#[derive(Debug, Clone, PartialEq)]
pub struct Why {
    pub actor: Actor,
    pub reason: Reason,
    /// Free text, at most [`MAX_COMMENT_CHARS`] characters.
    pub comment: Option<String>,
}

impl Why {
    /// An operator's move (`manual`).
    pub fn manual(actor: Actor, comment: Option<&str>) -> Why {
        Why {
            actor,
            reason: Reason::Manual,
            comment: comment.map(str::to_string),
        }
    }

    pub(super) fn check(&self) -> Result<(), RegistryError> {
        match &self.comment {
            Some(c) if c.chars().count() > MAX_COMMENT_CHARS => Err(RegistryError::Invalid(
                format!("comment must be at most {MAX_COMMENT_CHARS} characters"),
            )),
            _ => Ok(()),
        }
    }
}

/// One alias move.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HistoryEntry {
    pub id: i64,
    /// `champion`, `challenger` or `canary`.
    pub alias: String,
    /// The version the alias pointed at before; `null` when it was unset.
    pub previous_version: Option<String>,
    /// The version it points at since; `null` when it was removed.
    pub new_version: Option<String>,
    /// The alias's traffic weight after the move (1 for the champion); `null` on removal. A
    /// move to the same version with another weight (a canary step) is a move like any other.
    pub weight: Option<f64>,
    /// Canary only: what its hash is keyed by after the move (`tenant` or `request`); absent
    /// for the other aliases and on removal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub arm_key: Option<ArmKey>,
    /// `admin-api`, `cli:<os user>`, `scheduler`, `kakeya-serve` or `migration-0011`.
    pub actor: String,
    pub reason: Reason,
    pub comment: Option<String>,
    /// The bundle published with the move (for rows of migration 0011: the newest bundle then).
    pub bundle_version: i64,
    pub created_at_ms: i64,
}

const COLUMNS: &str = "id, alias, previous_version, new_version, weight, arm_key, actor, reason, \
                       comment, bundle_version, created_at_ms";

/// An `arm_key` column (`model_aliases`, `alias_history`) as read.
pub(super) fn arm_key_of(r: &sqlx::any::AnyRow) -> Result<Option<ArmKey>, sqlx::Error> {
    let key: Option<String> = r.try_get("arm_key")?;
    key.map(|k| {
        ArmKey::parse(&k).ok_or_else(|| sqlx::Error::ColumnDecode {
            index: "arm_key".into(),
            source: format!("unknown arm key {k:?}").into(),
        })
    })
    .transpose()
}

fn entry(r: &sqlx::any::AnyRow) -> Result<HistoryEntry, sqlx::Error> {
    let reason: String = r.try_get("reason")?;
    Ok(HistoryEntry {
        id: r.try_get("id")?,
        alias: r.try_get("alias")?,
        previous_version: r.try_get("previous_version")?,
        new_version: r.try_get("new_version")?,
        weight: r.try_get("weight")?,
        arm_key: arm_key_of(r)?,
        actor: r.try_get("actor")?,
        reason: Reason::parse(&reason).ok_or_else(|| sqlx::Error::ColumnDecode {
            index: "reason".into(),
            source: format!("unknown reason {reason:?}").into(),
        })?,
        comment: r.try_get("comment")?,
        bundle_version: r.try_get("bundle_version")?,
        created_at_ms: r.try_get("created_at_ms")?,
    })
}

/// What a move did to one alias: from `previous` to `new` (version, weight; `None` removed),
/// with the canary's key.
pub(super) struct Change<'a> {
    pub alias: &'a str,
    pub previous: Option<String>,
    pub new: Option<(&'a str, f64)>,
    pub arm_key: Option<ArmKey>,
}

/// Records `change` (published as `bundle_version`) inside the caller's transaction.
pub(super) async fn record(
    conn: &mut AnyConnection,
    change: &Change<'_>,
    why: &Why,
    bundle_version: i64,
    now_ms: i64,
) -> Result<HistoryEntry, sqlx::Error> {
    let row = sqlx::query(&format!(
        "INSERT INTO alias_history (alias, previous_version, new_version, weight, actor, reason, \
         comment, bundle_version, created_at_ms, arm_key) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING {COLUMNS}"
    ))
    .bind(change.alias)
    .bind(change.previous.clone())
    .bind(change.new.map(|(v, _)| v.to_string()))
    .bind(change.new.map(|(_, w)| w))
    .bind(why.actor.to_string())
    .bind(why.reason.as_str())
    .bind(why.comment.clone())
    .bind(bundle_version)
    .bind(now_ms)
    .bind(change.arm_key.map(ArmKey::as_str))
    // Not a cached prepared statement: sqlx 0.8's Any driver declares a NULL f64 (the weight
    // of a removal) to PostgreSQL as float4, and a statement cached with that type refuses
    // every later row with a weight on the connection (22P03; see `store::decision_log`).
    .persistent(false)
    .fetch_one(&mut *conn)
    .await?;
    let h = entry(&row)?;
    // audit: the move, in the caller's transaction.
    let e = crate::audit::Event::AliasMoved {
        history_id: h.id,
        alias: h.alias.clone(),
        previous_version: h.previous_version.clone(),
        new_version: h.new_version.clone(),
        weight: h.weight,
        actor: h.actor.clone(),
        reason: h.reason.as_str().into(),
        bundle_version: h.bundle_version,
    };
    crate::audit::append(conn, &e, now_ms).await?;
    Ok(h)
}

/// One page of the history, newest first: of `alias` (or every alias), rows with an id below
/// `before`, at most `limit`.
pub async fn page(
    conn: &mut AnyConnection,
    alias: Option<&str>,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<HistoryEntry>, sqlx::Error> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM alias_history WHERE ($1 = '' OR alias = $1) AND id < $2 \
         ORDER BY id DESC LIMIT $3"
    ))
    .bind(alias.unwrap_or(""))
    .bind(before.unwrap_or(i64::MAX))
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(entry).collect()
}

/// The last good champion before the current one, for an auto-revert: going back through the
/// champion's history from the newest move, the first version that
///
/// * is not the current champion,
/// * was never moved away from by an `auto_revert` (that is how a champion is found bad), and
/// * whose model row still passes [`super::verify_model_row`] with `public_key_b64` (a row that fails
///   is recorded as an integrity failure and skipped).
///
/// `None` when there is none (say, the default model was never replaced). Reads only: the move
/// itself ([`super::move_alias`]) checks the row again under the publication lock.
pub async fn last_good_champion(
    db: &crate::store::Db,
    public_key_b64: &str,
) -> Result<Option<String>, RegistryError> {
    let mut conn = db.pool.acquire().await?;
    let current = super::aliases(&mut conn)
        .await?
        .into_iter()
        .find(|a| a.alias == CHAMPION)
        .map(|a| a.version);
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM alias_history WHERE alias = $1 ORDER BY id DESC"
    ))
    .bind(CHAMPION)
    .fetch_all(&mut *conn)
    .await?;
    let moves = rows.iter().map(entry).collect::<Result<Vec<_>, _>>()?;
    let reverted_from = |v: &str| {
        moves
            .iter()
            .any(|m| m.reason == Reason::AutoRevert && m.previous_version.as_deref() == Some(v))
    };
    let mut seen = std::collections::BTreeSet::new();
    for v in moves.iter().filter_map(|m| m.new_version.as_deref()) {
        if Some(v) == current.as_deref() || reverted_from(v) || !seen.insert(v) {
            continue;
        }
        match super::load_model(&mut conn, v, public_key_b64).await {
            Ok(_) => return Ok(Some(v.to_string())),
            // Failed rows are recorded by `load_model`.
            Err(RegistryError::NoModel(_) | RegistryError::Integrity(_)) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}
