//! The model registry and bundle publication.
//!
//! * `models`: every registered artifact (canonical JSON, identity `lr-` or `gbdt-` + `sha256[..12]`), the
//!   Ed25519 signature of the SHA-256 of its canonical bytes by the control plane's key
//!   ([`keys::sign_artifact`]) and its model card ([`card`]);
//! * `model_aliases`: `champion`, optionally `challenger` (with its traffic weight) and
//!   optionally `canary` (with its weight and hash key, [`move_canary`]);
//! * `alias_history`: every move of an alias, who made it and why ([`history`]);
//! * `bundles`: every published [`Bundle`], signed with the control plane's key ([`keys`]);
//! * `registry_meta`: facts recorded once per database (the one-time signature backfill).
//!
//! Every alias change ([`move_alias`], [`remove_alias`]) publishes a new bundle (version =
//! previous + 1) and records the move in the history **in the same transaction**, so the
//! served bundle always matches the aliases and the history. The filter polls
//! `GET /v1/bundles/current`; the bytes served are exactly the signed ones. A bundle carries
//! per-tenant statistics computed from the recent decision log ([`tenant_stats`]).
//! All SQL is `$n`-placeholder SQL through `sqlx::Any`, shared by SQLite and PostgreSQL.

pub mod bootstrap;
pub mod card;
pub mod history;
pub mod keys;
pub mod reference;
pub mod task_models;

pub use history::{last_good_champion, Actor, HistoryEntry, Reason, StatedReason, Why};

use crate::store::{Backend, Db};
use kakeya_core::bundle::{
    verify_bundle, ArmKey, Bundle, BundleError, Canary, SignedBundle, BUNDLE_FORMAT,
};
use kakeya_core::features::TenantStats;
use kakeya_core::model::Model;
use serde::Serialize;
use sqlx::{AnyConnection, Connection, Row};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};

/// Where filters fetch the active bundle.
pub const BUNDLE_PATH: &str = "/v1/bundles/current";
pub const CHAMPION: &str = "champion";
pub const CHALLENGER: &str = "challenger";
/// Scores its weight of the tenants (or requests) before the challenger split.
pub const CANARY: &str = "canary";

/// Default window (days of decision log) of the tenant statistics a bundle carries.
pub const DEFAULT_TENANT_STATS_DAYS: u32 = 14;
/// At most this many decision-log rows per tenant are folded into its statistics: a busy
/// tenant's window is sampled evenly ([`tenant_stats`]).
pub const TENANT_STATS_MAX_ROWS: i64 = 10_000;
/// Tenants with fewer eligible rows in the window keep the model's training baseline.
pub const TENANT_STATS_MIN_ROWS: i64 = 50;

static TENANT_STATS_DAYS: AtomicU32 = AtomicU32::new(DEFAULT_TENANT_STATS_DAYS);

/// Sets the window of the tenant statistics of the bundles this process publishes
/// (`tenant_stats_days` in `kakeya.toml`; at least 1 day).
pub fn configure_tenant_stats_days(days: u32) {
    TENANT_STATS_DAYS.store(days.max(1), Ordering::Relaxed);
}

/// The SQL condition of the decision-log rows eligible for tenant statistics: PCS v0.2
/// (evidence-bound, the traffic scored with them: [`kakeya_core::features::pcs_version`]),
/// accepted by verification and with every signal within the plausible ranges of
/// [`TenantStats`] (the one definition; SQL comparisons are false for NaN and ±∞ out of range).
/// [`TenantStats::robust`] applies the same ranges again to what it is given.
fn eligible_rows() -> String {
    let range = |col: &str, (lo, hi): (f64, f64)| format!("{col} >= {lo:?} AND {col} <= {hi:?}");
    format!(
        "pcs_version = '0.2' AND accepted = 1 AND {} AND {} AND {}",
        range("d_hat", TenantStats::D_HAT_RANGE),
        range("coh_star", TenantStats::COH_RANGE),
        range("r", TenantStats::R_RANGE)
    )
}

/// True when every number of `s` is finite (what a bundle may carry).
pub fn stats_are_finite(s: &TenantStats) -> bool {
    [s.avg_d_hat, s.avg_coh, s.avg_r, s.std_r, s.avg_latency_ms]
        .iter()
        .all(|x| x.is_finite())
}

/// Per-tenant [`TenantStats`] from the decision log: for every tenant with at least
/// [`TENANT_STATS_MIN_ROWS`] eligible rows ([`eligible_rows`]) created since `since_ms`, the
/// robust statistics ([`TenantStats::robust`]: medians of D̂, coh★ and r, winsorised std of r)
/// of an even sample of the whole window: of its n eligible rows, in id order, every k-th with
/// k = ⌈n / [`TENANT_STATS_MAX_ROWS`]⌉ (all of them while n ≤ the maximum). A burst of recent
/// rows therefore weighs by its share of the window, never replaces it (the most recent 10,000
/// rows were under 2 minutes of a tenant at 100 req/s). The rank is the row's position among
/// the tenant's eligible rows (`ROW_NUMBER()`), not `id % k`: ids are shared by all tenants, so
/// two tenants alternating would leave one of them with no row at all for k = 2.
///
/// v0.1 traffic never moves the baseline v0.2 answers are scored with; escalated-for-
/// verification or absurd claimed values (r = 1e200) would otherwise poison the statistics
/// every filter scores with. Medians over the window replace the spec's EMA (α = 0.3: the last
/// few rows decided everything); whatever they are, their effect on a score is bounded by
/// [`kakeya_core::bundle::TENANT_MAX_SHIFT`]. Tenants whose statistics come out non-finite
/// anyway are left out (they use the model's baseline). Reads only: call it *before* taking the
/// publication lock.
pub async fn tenant_stats(
    conn: &mut AnyConnection,
    since_ms: i64,
) -> Result<BTreeMap<String, TenantStats>, sqlx::Error> {
    let eligible = eligible_rows();
    let tenants = sqlx::query(&format!(
        "SELECT tenant, COUNT(*) AS n FROM decision_log WHERE created_at_ms >= $1 AND {eligible} \
         GROUP BY tenant HAVING COUNT(*) >= $2 ORDER BY tenant"
    ))
    .bind(since_ms)
    .bind(TENANT_STATS_MIN_ROWS)
    .fetch_all(&mut *conn)
    .await?;
    let mut out = BTreeMap::new();
    for t in tenants {
        let tenant: String = t.try_get("tenant")?;
        let n: i64 = t.try_get("n")?;
        let step = (n + TENANT_STATS_MAX_ROWS - 1) / TENANT_STATS_MAX_ROWS;
        let rows = sqlx::query(&format!(
            "SELECT d_hat, coh_star, r FROM (SELECT d_hat, coh_star, r, \
             ROW_NUMBER() OVER (ORDER BY id) AS rn FROM decision_log \
             WHERE tenant = $1 AND created_at_ms >= $2 AND {eligible}) AS w \
             WHERE (rn - 1) % $3 = 0"
        ))
        .bind(&tenant)
        .bind(since_ms)
        .bind(step.max(1))
        .fetch_all(&mut *conn)
        .await?;
        let samples = rows
            .iter()
            .map(|r| Ok((r.try_get("d_hat")?, r.try_get("coh_star")?, r.try_get("r")?)))
            .collect::<Result<Vec<(f64, f64, f64)>, sqlx::Error>>()?;
        let min = usize::try_from(TENANT_STATS_MIN_ROWS).unwrap_or(usize::MAX);
        let Some(stats) = TenantStats::robust(&samples, min) else {
            continue;
        };
        if !stats_are_finite(&stats) {
            tracing::warn!(%tenant, "tenant statistics are not finite; the tenant keeps the model baseline");
            continue;
        }
        out.insert(tenant, stats);
    }
    Ok(out)
}

/// The statistics window of a publication at `now_ms`, read before the publication lock.
async fn current_tenant_stats(
    conn: &mut AnyConnection,
    now_ms: i64,
) -> Result<BTreeMap<String, TenantStats>, sqlx::Error> {
    let days = i64::from(TENANT_STATS_DAYS.load(Ordering::Relaxed));
    tenant_stats(conn, now_ms.saturating_sub(days * 86_400_000)).await
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("model {0} is already registered")]
    Exists(String),
    #[error("no model {0}")]
    NoModel(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    #[error("no challenger is set")]
    NoChallenger,
    #[error("no canary is set")]
    NoCanary,
    /// A conflict with its own stable code (`experiment_running`, `canary_in_use`).
    #[error("{message}")]
    ConflictWith { code: &'static str, message: String },
    /// A stored model or bundle row failed its integrity check ([`IntegrityError`]).
    #[error(transparent)]
    Integrity(#[from] IntegrityError),
    #[error("database: {0}")]
    Store(#[from] sqlx::Error),
}

/// Why a stored row is not what the registry wrote: the database was written by something
/// other than this control plane. Such a row is never signed, published or served; every
/// detection is logged (error) and counted in `kakeya_registry_integrity_failures_total{what}`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum IntegrityError {
    #[error("model {version} failed its integrity check: {why}")]
    Model { version: String, why: String },
    #[error("bundle {version} failed its integrity check: {why}")]
    Bundle { version: i64, why: String },
}

impl IntegrityError {
    /// The `what` label of the metric.
    pub fn what(&self) -> &'static str {
        match self {
            IntegrityError::Model { .. } => "model",
            IntegrityError::Bundle { .. } => "bundle",
        }
    }

    /// Logs and counts this failure (once per detection) and returns it.
    pub fn record(self) -> Self {
        crate::metrics::integrity_failures_total()
            .with_label_values(&[self.what()])
            .inc();
        tracing::error!(what = self.what(), error = %self, "registry integrity failure");
        self
    }
}

/// Checks the content of a stored model row: the artifact is canonical JSON of a valid model,
/// its SHA-256 is the recorded `sha256` and the version derived from it is the recorded
/// `version`. Anyone with write access to the database can make a row pass this (both are
/// recomputable): only the signature ([`verify_model_row`]) says the control plane wrote it.
/// The one-time backfill of unsigned rows and `kakeya bundle rekey` also run it before signing.
fn check_model_content(version: &str, sha256: &str, artifact: &str) -> Result<Model, String> {
    let bytes = artifact.as_bytes();
    let m = Model::from_json(bytes)
        .map_err(|e| format!("the stored artifact is not a valid model: {e}"))?;
    if m.canonical_bytes() != bytes {
        return Err("the stored artifact is not in canonical form".into());
    }
    let actual = kakeya_core::ids::sha256_hex(bytes);
    if actual != sha256 {
        return Err(format!(
            "the stored artifact's SHA-256 {actual} does not match the recorded {sha256}"
        ));
    }
    if m.version() != version {
        return Err(format!(
            "the stored artifact's version {} does not match the recorded {version}",
            m.version()
        ));
    }
    Ok(m)
}

/// The one integrity check of a stored model row, run on every load of an artifact (bundle
/// assembly, promotion, eval): [`check_model_content`], then the signature verifies over the
/// SHA-256 of the stored bytes with `public_key_b64` (the bundle signing key).
pub fn verify_model_row(
    version: &str,
    sha256: &str,
    signature: Option<&str>,
    artifact: &str,
    public_key_b64: &str,
) -> Result<Model, IntegrityError> {
    let fail = |why: String| IntegrityError::Model {
        version: version.to_string(),
        why,
    };
    let m = check_model_content(version, sha256, artifact).map_err(fail)?;
    match signature {
        None => Err(fail(
            "the row is unsigned (only rows registered before migration 0004 were signed, once, \
             at the first start after it)"
                .into(),
        )),
        Some(s) if !keys::verify_artifact(artifact.as_bytes(), s, public_key_b64) => Err(fail(
            "its signature does not verify with the bundle signing key".into(),
        )),
        Some(_) => Ok(m),
    }
}

/// Checks a stored bundle row exactly as a filter checks what it fetches
/// ([`verify_bundle`]: the recorded SHA-256 is that of the stored bytes, the signature verifies
/// with `public_key_b64`, the bytes parse and validate as a bundle of this build) and returns
/// it parsed. [`served_bundle`] records a failure; start-up ([`bootstrap::ensure_trusted`])
/// tells the kinds apart.
pub fn check_bundle_row(b: &BundleRow, public_key_b64: &str) -> Result<Bundle, BundleError> {
    verify_bundle(
        b.bytes.as_bytes(),
        &b.sha256,
        &b.signature,
        &[public_key_b64.to_string()],
    )
}

/// The integrity error of bundle row `b` failing [`check_bundle_row`] with `e`.
pub fn bundle_failure(b: &BundleRow, e: &BundleError) -> IntegrityError {
    let why = match e {
        BundleError::Digest => format!(
            "the stored bytes' SHA-256 {} does not match the recorded {}",
            kakeya_core::ids::sha256_hex(b.bytes.as_bytes()),
            b.sha256
        ),
        BundleError::Signature | BundleError::Key => {
            "its signature does not verify with the bundle signing key".into()
        }
        other => format!("this build does not take it: {other}"),
    };
    IntegrityError::Bundle {
        version: b.version,
        why,
    }
}

/// A registered model as listed.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ModelSummary {
    pub version: String,
    /// SHA-256 (hex) of the artifact's canonical bytes.
    pub sha256: String,
    /// Standard base64 Ed25519 signature of the 32-byte SHA-256 digest of the artifact's
    /// canonical bytes, by the control plane's key (`kakeya bundle public-key`). `null` only
    /// for a row registered before migration 0004 that no `kakeya serve` has started on since
    /// (the first start after migration 0007 signs those, once).
    pub signature: Option<String>,
    pub created_at_ms: i64,
    /// Aliases pointing at this model (`champion`, `challenger`, `canary`).
    pub aliases: Vec<String>,
}

/// A registered model with its artifact and card.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ModelDetail {
    #[serde(flatten)]
    pub summary: ModelSummary,
    /// The artifact (`kakeya_core::model::Model`: logistic regression or gradient-boosted trees).
    #[schema(value_type = Object)]
    pub artifact: serde_json::Value,
    /// The model card, computed from data by `registry::card`.
    #[schema(value_type = Object)]
    pub card: serde_json::Value,
}

/// An alias.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct AliasRow {
    /// `champion`, `challenger` or `canary`.
    pub alias: String,
    pub version: String,
    /// Share of units the alias scores (1 for the champion, which scores what the others
    /// leave).
    pub weight: f64,
    /// Canary only: what its hash is keyed by (`tenant` or `request`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub arm_key: Option<ArmKey>,
    pub updated_at_ms: i64,
}

/// A published bundle.
#[derive(Debug, Clone, PartialEq)]
pub struct BundleRow {
    pub version: i64,
    pub sha256: String,
    pub signature: String,
    pub bytes: String,
    pub created_at_ms: i64,
}

/// What an alias change answers.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Published {
    pub aliases: Vec<AliasRow>,
    pub bundle_version: i64,
    pub bundle_sha256: String,
    /// The alias move recorded with this publication (`null` when the aliases were published
    /// again without a move: a format change at start, `kakeya bundle rekey`).
    pub moved: Option<HistoryEntry>,
}

/// Stores a validated artifact with its card, signed with `seed` ([`keys::sign_artifact`]);
/// `Exists` when the version is registered.
pub async fn insert_model(
    db: &Db,
    seed: &[u8; 32],
    model: &Model,
    card: &serde_json::Value,
    now_ms: i64,
) -> Result<ModelSummary, RegistryError> {
    model
        .validate()
        .map_err(|e| RegistryError::Invalid(e.to_string()))?;
    let version = model.version();
    let sha256 = model.sha256();
    let canonical = model.canonical_bytes();
    let signature = keys::sign_artifact(&canonical, seed);
    let artifact =
        String::from_utf8(canonical).map_err(|e| RegistryError::Invalid(e.to_string()))?;
    let done = sqlx::query(
        "INSERT INTO models (version, sha256, signature, artifact, card, created_at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (version) DO NOTHING",
    )
    .bind(&version)
    .bind(&sha256)
    .bind(&signature)
    .bind(artifact)
    .bind(card.to_string())
    .bind(now_ms)
    .execute(&db.pool)
    .await?;
    if done.rows_affected() == 0 {
        return Err(RegistryError::Exists(version));
    }
    Ok(ModelSummary {
        version,
        sha256,
        signature: Some(signature),
        created_at_ms: now_ms,
        aliases: Vec::new(),
    })
}

/// What [`register_model`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct Registered {
    pub summary: ModelSummary,
    /// The stored model card.
    pub card: serde_json::Value,
    /// False when the identical artifact was registered already (nothing changed).
    pub new: bool,
}

/// Registers `model` with `card` ([`insert_model`]); when its version is registered already,
/// the stored row is checked ([`verify_model_row`]) and must hold the same artifact (SHA-256):
/// then it is returned unchanged (`new: false`; an idempotent retry), else refused (an altered
/// row: [`RegistryError::Integrity`]; another artifact under the same 12-hex version:
/// [`RegistryError::Conflict`]). The one registration path of `POST /v1/models`,
/// `POST /v1/hrs/register` and `kakeya model register`.
pub async fn register_model(
    db: &Db,
    seed: &[u8; 32],
    model: &Model,
    card: &serde_json::Value,
    now_ms: i64,
) -> Result<Registered, RegistryError> {
    match insert_model(db, seed, model, card, now_ms).await {
        Ok(summary) => {
            return Ok(Registered {
                summary,
                card: card.clone(),
                new: true,
            })
        }
        Err(RegistryError::Exists(_)) => {}
        Err(e) => return Err(e),
    }
    let version = model.version();
    let stored = verified_model(db, &version, &keys::public_key_b64(seed)).await?;
    if stored.sha256() != model.sha256() {
        return Err(RegistryError::Conflict(format!(
            "model {version} is registered with another artifact (SHA-256 {}, this one {})",
            stored.sha256(),
            model.sha256()
        )));
    }
    let d = get_model(db, &version)
        .await?
        .ok_or_else(|| RegistryError::NoModel(version.clone()))?;
    Ok(Registered {
        summary: d.summary,
        card: d.card,
        new: false,
    })
}

/// The aliases: champion, challenger, canary (those that are set).
pub async fn aliases(conn: &mut AnyConnection) -> Result<Vec<AliasRow>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT alias, version, weight, arm_key, updated_at_ms FROM model_aliases \
         ORDER BY alias DESC",
    )
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(AliasRow {
                alias: r.try_get("alias")?,
                version: r.try_get("version")?,
                weight: r.try_get("weight")?,
                arm_key: history::arm_key_of(r)?,
                updated_at_ms: r.try_get("updated_at_ms")?,
            })
        })
        .collect()
}

fn aliases_of(aliases: &[AliasRow], version: &str) -> Vec<String> {
    aliases
        .iter()
        .filter(|a| a.version == version)
        .map(|a| a.alias.clone())
        .collect()
}

/// Every registered model, newest first.
pub async fn list_models(db: &Db) -> Result<Vec<ModelSummary>, sqlx::Error> {
    let mut conn = db.pool.acquire().await?;
    let al = aliases(&mut conn).await?;
    let rows = sqlx::query(
        "SELECT version, sha256, signature, created_at_ms FROM models \
         ORDER BY created_at_ms DESC, version",
    )
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            let version: String = r.try_get("version")?;
            Ok(ModelSummary {
                aliases: aliases_of(&al, &version),
                sha256: r.try_get("sha256")?,
                signature: r.try_get("signature")?,
                created_at_ms: r.try_get("created_at_ms")?,
                version,
            })
        })
        .collect()
}

/// One model with artifact and card.
pub async fn get_model(db: &Db, version: &str) -> Result<Option<ModelDetail>, sqlx::Error> {
    let mut conn = db.pool.acquire().await?;
    let al = aliases(&mut conn).await?;
    let row = sqlx::query(
        "SELECT version, sha256, signature, artifact, card, created_at_ms FROM models \
         WHERE version = $1",
    )
    .bind(version)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(r) = row else { return Ok(None) };
    let artifact: String = r.try_get("artifact")?;
    let card: String = r.try_get("card")?;
    Ok(Some(ModelDetail {
        summary: ModelSummary {
            version: r.try_get("version")?,
            sha256: r.try_get("sha256")?,
            signature: r.try_get("signature")?,
            created_at_ms: r.try_get("created_at_ms")?,
            aliases: aliases_of(&al, version),
        },
        artifact: serde_json::from_str(&artifact).unwrap_or(serde_json::Value::Null),
        card: serde_json::from_str(&card).unwrap_or(serde_json::Value::Null),
    }))
}

/// Loads the model row `version` through [`verify_model_row`]; a row that fails is refused
/// ([`IntegrityError::record`]).
async fn load_model(
    conn: &mut AnyConnection,
    version: &str,
    public_key_b64: &str,
) -> Result<Model, RegistryError> {
    let row =
        sqlx::query("SELECT version, sha256, signature, artifact FROM models WHERE version = $1")
            .bind(version)
            .fetch_optional(&mut *conn)
            .await?;
    let Some(r) = row else {
        return Err(RegistryError::NoModel(version.to_string()));
    };
    let (v, sha256, signature, artifact): (String, String, Option<String>, String) = (
        r.try_get("version")?,
        r.try_get("sha256")?,
        r.try_get("signature")?,
        r.try_get("artifact")?,
    );
    verify_model_row(&v, &sha256, signature.as_deref(), &artifact, public_key_b64)
        .map_err(|e| RegistryError::Integrity(e.record()))
}

/// A registered model, verified ([`verify_model_row`]) with `public_key_b64`: what `kakeya eval
/// --model <version>` scores with.
pub async fn verified_model(
    db: &Db,
    version: &str,
    public_key_b64: &str,
) -> Result<Model, RegistryError> {
    let mut conn = db.pool.acquire().await?;
    load_model(&mut conn, version, public_key_b64).await
}

/// Serialises publications: a transaction-scoped advisory lock on PostgreSQL; on SQLite a
/// first (empty) write takes the write lock before anything is read, so a concurrent writer
/// waits (busy timeout) instead of failing with a stale read snapshot.
async fn lock_publication(conn: &mut AnyConnection, backend: Backend) -> Result<(), sqlx::Error> {
    let sql = match backend {
        Backend::Postgres => "SELECT pg_advisory_xact_lock(7357240917)",
        Backend::Sqlite => "DELETE FROM bundles WHERE version < 0",
    };
    sqlx::query(sql).execute(&mut *conn).await?;
    Ok(())
}

/// Builds, signs and stores the next bundle from the current aliases and `tenant_stats`
/// (computed by the caller *before* the publication lock: on SQLite the lock is the database's
/// write lock, which ingest needs too), inside the caller's transaction.
async fn publish(
    conn: &mut AnyConnection,
    seed: &[u8; 32],
    now_ms: i64,
    tenant_stats: BTreeMap<String, TenantStats>,
) -> Result<Published, RegistryError> {
    let al = aliases(conn).await?;
    let champ = al
        .iter()
        .find(|a| a.alias == CHAMPION)
        .ok_or_else(|| RegistryError::Conflict("no champion: promote a model first".into()))?;
    let key = keys::public_key_b64(seed);
    let champion = load_model(conn, &champ.version, &key).await?;
    let (challenger, challenger_weight) = match al.iter().find(|a| a.alias == CHALLENGER) {
        Some(c) => (Some(load_model(conn, &c.version, &key).await?), c.weight),
        None => (None, 0.0),
    };
    let canary = match al.iter().find(|a| a.alias == CANARY) {
        Some(c) => Some(Canary {
            model: load_model(conn, &c.version, &key).await?,
            weight: c.weight,
            key: c.arm_key.unwrap_or(ArmKey::Tenant),
        }),
        None => None,
    };
    let task_models = task_models::load(conn, &champ.version, &key).await?;
    let next: i64 = sqlx::query("SELECT COALESCE(MAX(version), 0) + 1 AS v FROM bundles")
        .fetch_one(&mut *conn)
        .await?
        .try_get("v")?;
    let bundle = Bundle {
        format: BUNDLE_FORMAT.into(),
        version: u64::try_from(next).unwrap_or(0),
        created_at_ms: now_ms,
        champion,
        challenger,
        challenger_weight,
        canary,
        tenant_stats,
        // An A/B experiment salts the split while the aliases are its arms (and ends when
        // this publication breaks them).
        policy: crate::ab::publication_policy(conn, &al, next, now_ms).await?,
        // The stored per-tenant ensemble policies and the configured default.
        ensemble: crate::ensemble::publication_section(conn).await?,
        // cost: each tenant's budget state, enforced by the filter (crate::cost::budgets).
        budgets: crate::cost::budgets::section(conn, now_ms).await?,
        task_models,
        // upstream canaries: each route's weight, written by the canary controller.
        upstreams: crate::canary::upstream::section(conn).await?,
        // anomaly: the activated VAE, the tenants' modes and current thresholds.
        anomaly: crate::anomaly::publication::section(conn, &key).await?,
    };
    let signed = sign_checked(&bundle, seed)?;
    let bytes =
        String::from_utf8(signed.bytes).map_err(|e| RegistryError::Invalid(e.to_string()))?;
    sqlx::query(
        "INSERT INTO bundles (version, sha256, signature, bytes, created_at_ms) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(next)
    .bind(&signed.sha256)
    .bind(&signed.signature_b64)
    .bind(bytes)
    .bind(now_ms)
    .execute(&mut *conn)
    .await?;
    Ok(Published {
        aliases: al,
        bundle_version: next,
        bundle_sha256: signed.sha256,
        moved: None,
    })
}

/// Signs `bundle` after checking that the filters will take it: it passes
/// [`Bundle::validate`], every tenant statistic is finite (JSON has no ∞/NaN: they would be
/// written as `null`, and every filter would refuse the bundle), and the signed bytes verify
/// with the public key of `seed` exactly as a filter verifies them. Never publish otherwise.
pub fn sign_checked(bundle: &Bundle, seed: &[u8; 32]) -> Result<SignedBundle, RegistryError> {
    bundle
        .validate()
        .map_err(|e| RegistryError::Invalid(format!("refusing to publish the bundle: {e}")))?;
    if let Some((tenant, _)) = bundle
        .tenant_stats
        .iter()
        .find(|(_, s)| !stats_are_finite(s))
    {
        return Err(RegistryError::Invalid(format!(
            "refusing to publish the bundle: the statistics of tenant {tenant:?} are not finite"
        )));
    }
    let signed = bundle.sign(seed);
    verify_bundle(
        &signed.bytes,
        &signed.sha256,
        &signed.signature_b64,
        &[keys::public_key_b64(seed)],
    )
    .map_err(|e| {
        RegistryError::Invalid(format!(
            "refusing to publish the bundle: it would not verify in the filters: {e}"
        ))
    })?;
    Ok(signed)
}

/// Points `alias` at `version` (the challenger or the canary with its traffic `weight`),
/// publishes the next bundle and records the move with `why` in the history, atomically: the
/// one implementation behind `POST /v1/aliases/{alias}`, `POST /v1/hrs/activate`, `kakeya
/// model promote`, the default model at first start and the scheduler's gate and auto-revert.
/// The model row is checked ([`verify_model_row`]) under the publication lock; a row that
/// fails is refused ([`RegistryError::Integrity`]) and nothing changes. A canary moved here
/// keeps its hash key ([`move_canary`] sets it).
pub async fn move_alias(
    db: &Db,
    seed: &[u8; 32],
    alias: &str,
    version: &str,
    weight: Option<f64>,
    why: &Why,
    now_ms: i64,
) -> Result<Published, RegistryError> {
    move_keyed(db, seed, alias, version, weight, None, why, now_ms).await
}

/// Points the `canary` alias at `version` with `weight` (finite, within [0, 1]) and, when
/// given, the hash `key` (else the canary's current key, `tenant` for a new one), as
/// [`move_alias`] does: a weight change of the same version is a move too, recorded and
/// published. Refused with [`RegistryError::ConflictWith`] `experiment_running` while an A/B
/// experiment runs ([`crate::ab::publication_policy`]).
pub async fn move_canary(
    db: &Db,
    seed: &[u8; 32],
    version: &str,
    weight: f64,
    key: Option<ArmKey>,
    why: &Why,
    now_ms: i64,
) -> Result<Published, RegistryError> {
    move_keyed(db, seed, CANARY, version, Some(weight), key, why, now_ms).await
}

/// The weight an alias move stores, or why the move is refused.
fn alias_weight(alias: &str, weight: Option<f64>) -> Result<f64, RegistryError> {
    match (alias, weight) {
        (CHAMPION, None) => Ok(1.0),
        (CHAMPION, Some(_)) => Err(RegistryError::Invalid(
            "weight applies to the challenger and the canary only".into(),
        )),
        // `contains` is false for NaN.
        (CHALLENGER | CANARY, Some(w)) if (0.0..=1.0).contains(&w) => Ok(w),
        (CHALLENGER | CANARY, _) => Err(RegistryError::Invalid(format!(
            "the {alias} needs a weight within [0, 1]"
        ))),
        _ => Err(RegistryError::Invalid(format!(
            "alias must be {CHAMPION}, {CHALLENGER} or {CANARY}"
        ))),
    }
}

#[allow(clippy::too_many_arguments)]
async fn move_keyed(
    db: &Db,
    seed: &[u8; 32],
    alias: &str,
    version: &str,
    weight: Option<f64>,
    key: Option<ArmKey>,
    why: &Why,
    now_ms: i64,
) -> Result<Published, RegistryError> {
    let weight = alias_weight(alias, weight)?;
    if key.is_some() && alias != CANARY {
        return Err(RegistryError::Invalid(format!(
            "key applies to the {CANARY} only"
        )));
    }
    why.check()?;
    let mut conn = db.pool.acquire().await?;
    let stats = current_tenant_stats(&mut conn, now_ms).await?;
    let mut tx = conn.begin().await?;
    let res = async {
        lock_publication(&mut tx, db.backend).await?;
        load_model(&mut tx, version, &keys::public_key_b64(seed)).await?;
        let current = aliases(&mut tx)
            .await?
            .into_iter()
            .find(|a| a.alias == alias);
        let arm_key = (alias == CANARY).then(|| {
            key.or(current.as_ref().and_then(|a| a.arm_key))
                .unwrap_or(ArmKey::Tenant)
        });
        sqlx::query(
            "INSERT INTO model_aliases (alias, version, weight, updated_at_ms, arm_key) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (alias) DO UPDATE SET \
             version = excluded.version, weight = excluded.weight, \
             updated_at_ms = excluded.updated_at_ms, arm_key = excluded.arm_key",
        )
        .bind(alias)
        .bind(version)
        .bind(weight)
        .bind(now_ms)
        .bind(arm_key.map(ArmKey::as_str))
        .execute(&mut *tx)
        .await?;
        let change = history::Change {
            alias,
            previous: current.map(|a| a.version),
            new: Some((version, weight)),
            arm_key,
        };
        record_move(&mut tx, seed, &change, why, now_ms, stats).await
    }
    .await;
    finish(tx, res).await
}

/// The version `alias` points at, if set.
async fn alias_version(
    conn: &mut AnyConnection,
    alias: &str,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query("SELECT version FROM model_aliases WHERE alias = $1")
        .bind(alias)
        .fetch_optional(&mut *conn)
        .await?
        .map(|r| r.try_get("version"))
        .transpose()
}

/// Publishes the aliases as they now are and records `change` in the history with the new
/// bundle's version, inside the caller's transaction.
async fn record_move(
    conn: &mut AnyConnection,
    seed: &[u8; 32],
    change: &history::Change<'_>,
    why: &Why,
    now_ms: i64,
    stats: BTreeMap<String, TenantStats>,
) -> Result<Published, RegistryError> {
    let mut p = publish(conn, seed, now_ms, stats).await?;
    p.moved = Some(history::record(conn, change, why, p.bundle_version, now_ms).await?);
    Ok(p)
}

/// Commits on success; rolls back explicitly on failure (never leaves the rollback to a
/// dropped transaction, which would hold the write or advisory lock until the connection is
/// used again).
async fn finish<T>(
    tx: sqlx::Transaction<'_, sqlx::Any>,
    res: Result<T, RegistryError>,
) -> Result<T, RegistryError> {
    match res {
        Ok(p) => {
            tx.commit().await?;
            Ok(p)
        }
        Err(e) => {
            let _ = tx.rollback().await;
            Err(e)
        }
    }
}

/// Removes `alias` (the challenger or the canary: the champion is replaced by promoting
/// another model), publishes the next bundle and records the removal with `why`, atomically.
pub async fn remove_alias(
    db: &Db,
    seed: &[u8; 32],
    alias: &str,
    why: &Why,
    now_ms: i64,
) -> Result<Published, RegistryError> {
    let missing = match alias {
        CHALLENGER => RegistryError::NoChallenger,
        CANARY => RegistryError::NoCanary,
        _ => {
            return Err(RegistryError::Invalid(format!(
                "only the {CHALLENGER} or the {CANARY} can be removed; replace the {CHAMPION} \
                 by promoting another model"
            )))
        }
    };
    why.check()?;
    let mut conn = db.pool.acquire().await?;
    let stats = current_tenant_stats(&mut conn, now_ms).await?;
    let mut tx = conn.begin().await?;
    let res = async {
        lock_publication(&mut tx, db.backend).await?;
        let Some(previous) = alias_version(&mut tx, alias).await? else {
            return Err(missing);
        };
        sqlx::query("DELETE FROM model_aliases WHERE alias = $1")
            .bind(alias)
            .execute(&mut *tx)
            .await?;
        let change = history::Change {
            alias,
            previous: Some(previous),
            new: None,
            arm_key: None,
        };
        record_move(&mut tx, seed, &change, why, now_ms, stats).await
    }
    .await;
    finish(tx, res).await
}

/// Publishes the next bundle (version = max + 1) from the aliases as they are, signed with
/// `seed`: what `kakeya serve` does when the served bundle, genuinely signed with its key, is
/// of a format this build does not take.
pub async fn republish(db: &Db, seed: &[u8; 32], now_ms: i64) -> Result<Published, RegistryError> {
    let mut conn = db.pool.acquire().await?;
    let stats = current_tenant_stats(&mut conn, now_ms).await?;
    let mut tx = conn.begin().await?;
    let res = async {
        lock_publication(&mut tx, db.backend).await?;
        publish(&mut tx, seed, now_ms, stats).await
    }
    .await;
    finish(tx, res).await
}

/// Runs `change` and publishes the next bundle, in one transaction under the publication
/// lock: how state outside the aliases that the bundle carries (an upstream route's canary
/// weight, [`crate::canary::upstream::set_weight`]) reaches the filters.
pub async fn publish_with<F>(
    db: &Db,
    seed: &[u8; 32],
    now_ms: i64,
    change: F,
) -> Result<Published, RegistryError>
where
    F: for<'c> FnOnce(
            &'c mut AnyConnection,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<(), sqlx::Error>> + Send + 'c>,
        > + Send,
{
    let mut conn = db.pool.acquire().await?;
    let stats = current_tenant_stats(&mut conn, now_ms).await?;
    let mut tx = conn.begin().await?;
    let res = async {
        lock_publication(&mut tx, db.backend).await?;
        change(&mut tx).await?;
        publish(&mut tx, seed, now_ms, stats).await
    }
    .await;
    finish(tx, res).await
}

/// The newest published bundle.
pub async fn current_bundle(db: &Db) -> Result<Option<BundleRow>, sqlx::Error> {
    current_bundle_in(&mut *db.pool.acquire().await?).await
}

async fn current_bundle_in(conn: &mut AnyConnection) -> Result<Option<BundleRow>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT version, sha256, signature, bytes, created_at_ms FROM bundles \
         ORDER BY version DESC LIMIT 1",
    )
    .fetch_optional(&mut *conn)
    .await?;
    row.map(|r| {
        Ok(BundleRow {
            version: r.try_get("version")?,
            sha256: r.try_get("sha256")?,
            signature: r.try_get("signature")?,
            bytes: r.try_get("bytes")?,
            created_at_ms: r.try_get("created_at_ms")?,
        })
    })
    .transpose()
}

/// The newest published bundle, verified ([`check_bundle_row`]) with `public_key_b64`, and
/// parsed: what `GET /v1/bundles/current` serves, `kakeya bundle show` prints and `kakeya eval
/// --model champion` scores with. A row that fails is refused ([`IntegrityError::record`]),
/// never served (the filters keep their last good bundle).
pub async fn served_bundle(
    db: &Db,
    public_key_b64: &str,
) -> Result<Option<(BundleRow, Bundle)>, RegistryError> {
    let Some(b) = current_bundle(db).await? else {
        return Ok(None);
    };
    match check_bundle_row(&b, public_key_b64) {
        Ok(bundle) => Ok(Some((b, bundle))),
        Err(e) => Err(RegistryError::Integrity(bundle_failure(&b, &e).record())),
    }
}

/// The `registry_meta` key recording that unsigned model rows were signed once.
const BACKFILLED: &str = "model_signatures_backfilled";

/// Signs, with `seed`, the model rows registered before migration 0004 (NULL signature) whose
/// content passes [`check_model_content`], **once per database**: the first call records it in
/// `registry_meta` (migration 0007 records it already when no row was unsigned), and every
/// later call signs nothing (`None`). A row signed with another key, or altered, is never
/// signed here: only `kakeya bundle rekey` re-signs, and only what the previous key signed.
/// Returns the versions signed.
pub async fn backfill_signatures(
    db: &Db,
    seed: &[u8; 32],
    now_ms: i64,
) -> Result<Option<Vec<String>>, RegistryError> {
    let mut conn = db.pool.acquire().await?;
    let mut tx = conn.begin().await?;
    let res = async {
        lock_publication(&mut tx, db.backend).await?;
        let done = sqlx::query("SELECT value FROM registry_meta WHERE key = $1")
            .bind(BACKFILLED)
            .fetch_optional(&mut *tx)
            .await?;
        if done.is_some() {
            return Ok(None);
        }
        let rows = sqlx::query(
            "SELECT version, sha256, artifact FROM models WHERE signature IS NULL ORDER BY version",
        )
        .fetch_all(&mut *tx)
        .await?;
        let mut signed = Vec::new();
        for r in rows {
            let (version, sha256, artifact): (String, String, String) = (
                r.try_get("version")?,
                r.try_get("sha256")?,
                r.try_get("artifact")?,
            );
            // An altered row stays unsigned; `verify_models` reports it.
            if check_model_content(&version, &sha256, &artifact).is_err() {
                continue;
            }
            sqlx::query("UPDATE models SET signature = $1 WHERE version = $2")
                .bind(keys::sign_artifact(artifact.as_bytes(), seed))
                .bind(&version)
                .execute(&mut *tx)
                .await?;
            signed.push(version);
        }
        sqlx::query(
            "INSERT INTO registry_meta (key, value, updated_at_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (key) DO NOTHING",
        )
        .bind(BACKFILLED)
        .bind(format!("signed {} unsigned model rows", signed.len()))
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        Ok(Some(signed))
    }
    .await;
    finish(tx, res).await
}

/// Checks every model row ([`verify_model_row`]) with `public_key_b64`; returns those that fail,
/// each recorded ([`IntegrityError::record`]). Changes nothing.
pub async fn verify_models(
    db: &Db,
    public_key_b64: &str,
) -> Result<Vec<IntegrityError>, sqlx::Error> {
    let rows =
        sqlx::query("SELECT version, sha256, signature, artifact FROM models ORDER BY version")
            .fetch_all(&db.pool)
            .await?;
    let mut failed = Vec::new();
    for r in rows {
        let (version, sha256, signature, artifact): (String, String, Option<String>, String) = (
            r.try_get("version")?,
            r.try_get("sha256")?,
            r.try_get("signature")?,
            r.try_get("artifact")?,
        );
        if let Err(e) = verify_model_row(
            &version,
            &sha256,
            signature.as_deref(),
            &artifact,
            public_key_b64,
        ) {
            failed.push(e.record());
        }
    }
    Ok(failed)
}

/// What `kakeya bundle rekey` did.
#[derive(Debug, Default)]
pub struct Rekeyed {
    /// Model rows whose signature verified with the previous key, now signed with the current.
    pub resigned: Vec<String>,
    /// Model rows already signed with the current key (a second run changes nothing).
    pub current: Vec<String>,
    /// Model rows signed by neither key (or altered): left as they are, recorded.
    pub refused: Vec<IntegrityError>,
    /// The bundle published from the aliases, signed with the current key; `None` when the
    /// served bundle verified with the current key already (or none exists).
    pub published: Option<Published>,
}

/// After a change of the signing key (`previous` → `seed`): re-signs with `seed` the model rows
/// whose signature verifies with `previous` (and whose content passes [`check_model_content`]),
/// leaves every other row as it is (each recorded as an integrity failure), then, when the
/// served bundle verifies with `previous`, publishes the aliases again signed with `seed`. The
/// aliases must name the models of that bundle: if they do not, `model_aliases` was written
/// outside the control plane, and promoting is left to the operator (`kakeya model promote`;
/// the re-signed rows stay). A served bundle that verifies with neither key is refused.
pub async fn rekey(
    db: &Db,
    seed: &[u8; 32],
    previous: &[u8; 32],
    now_ms: i64,
) -> Result<Rekeyed, RegistryError> {
    if seed == previous {
        return Err(RegistryError::Invalid(
            "the previous seed is the current signing key: nothing to re-key".into(),
        ));
    }
    let (key, old_key) = (keys::public_key_b64(seed), keys::public_key_b64(previous));
    let mut out = Rekeyed::default();
    let mut conn = db.pool.acquire().await?;
    let stats = current_tenant_stats(&mut conn, now_ms).await?;
    // The rows first, in their own transaction: they stay re-signed even when the bundle cannot
    // be re-published (the operator then promotes one of them).
    let mut tx = conn.begin().await?;
    let res = async {
        lock_publication(&mut tx, db.backend).await?;
        let rows =
            sqlx::query("SELECT version, sha256, signature, artifact FROM models ORDER BY version")
                .fetch_all(&mut *tx)
                .await?;
        for r in rows {
            let (version, sha256, signature, artifact): (String, String, Option<String>, String) = (
                r.try_get("version")?,
                r.try_get("sha256")?,
                r.try_get("signature")?,
                r.try_get("artifact")?,
            );
            let bytes = artifact.as_bytes();
            let signed_by = |k: &str| {
                signature
                    .as_deref()
                    .is_some_and(|s| keys::verify_artifact(bytes, s, k))
            };
            let why = match check_model_content(&version, &sha256, &artifact) {
                Err(why) => why,
                Ok(_) if signed_by(&key) => {
                    out.current.push(version);
                    continue;
                }
                Ok(_) if signed_by(&old_key) => {
                    sqlx::query("UPDATE models SET signature = $1 WHERE version = $2")
                        .bind(keys::sign_artifact(bytes, seed))
                        .bind(&version)
                        .execute(&mut *tx)
                        .await?;
                    out.resigned.push(version);
                    continue;
                }
                Ok(_) => "its signature verifies neither with the previous nor with the current \
                          key: not re-signed"
                    .to_string(),
            };
            out.refused
                .push(IntegrityError::Model { version, why }.record());
        }
        Ok(())
    }
    .await;
    finish(tx, res).await?;
    let mut tx = conn.begin().await?;
    let res = async {
        lock_publication(&mut tx, db.backend).await?;
        let Some(b) = current_bundle_in(&mut tx).await? else {
            return Ok(None);
        };
        if check_bundle_row(&b, &key).is_ok() {
            return Ok(None);
        }
        let served = check_bundle_row(&b, &old_key).map_err(|e| {
            let mut f = bundle_failure(&b, &e);
            if let IntegrityError::Bundle { why, .. } = &mut f {
                why.push_str(" (nor with the previous key)");
            }
            RegistryError::Integrity(f.record())
        })?;
        let al = aliases(&mut tx).await?;
        let named = |alias: &str| al.iter().find(|a| a.alias == alias);
        let challenger = named(CHALLENGER).map(|a| (a.version.clone(), a.weight));
        let canary = named(CANARY).map(|a| {
            let key = a.arm_key.unwrap_or(ArmKey::Tenant);
            (a.version.clone(), a.weight, key)
        });
        let aliased = (
            named(CHAMPION).map(|a| a.version.clone()),
            challenger,
            canary,
        );
        let carried = (
            Some(served.champion.version()),
            served
                .challenger
                .as_ref()
                .map(|m| (m.version(), served.challenger_weight)),
            served
                .canary
                .as_ref()
                .map(|c| (c.model.version(), c.weight, c.key)),
        );
        if aliased != carried {
            return Err(RegistryError::Conflict(format!(
                "the aliases {aliased:?} are not the models of the served bundle {} \
                 {carried:?}: model_aliases was changed outside the control plane. The model \
                 rows are re-signed; check `kakeya model list` and promote the intended model \
                 (`kakeya model promote <version>`)",
                b.version
            )));
        }
        publish(&mut tx, seed, now_ms, stats).await.map(Some)
    }
    .await;
    out.published = finish(tx, res).await?;
    Ok(out)
}

/// The recorded SHA-256 of the model row `version`, if registered.
pub async fn model_sha256(db: &Db, version: &str) -> Result<Option<String>, sqlx::Error> {
    sqlx::query("SELECT sha256 FROM models WHERE version = $1")
        .bind(version)
        .fetch_optional(&db.pool)
        .await?
        .map(|r| r.try_get("sha256"))
        .transpose()
}

/// Number of registered models.
pub async fn model_count(db: &Db) -> Result<i64, sqlx::Error> {
    sqlx::query("SELECT COUNT(*) AS n FROM models")
        .fetch_one(&db.pool)
        .await?
        .try_get("n")
}

#[cfg(test)]
mod canary_tests;
#[cfg(test)]
mod history_tests;
#[cfg(test)]
pub(crate) mod tests;
