//! Drift monitoring: the champion's (and the challenger's) live traffic against what the model
//! was trained on, and its labelled performance against its card; alerts, and on the
//! champion's performance alert an optional auto-revert to the last good champion.
//!
//! * **Reference.** A version trained with its data (a training job, the default model) has a
//!   training reference ([`crate::ml::drift_reference`], stored with it by
//!   [`crate::registry::reference`] and bound to it by the hash on its card). An uploaded
//!   artifact has none: its feature status is `no_reference` (reported, no alert).
//! * **Check** ([`check`]: the one function behind `POST /v1/hrs/drift/check`,
//!   `kakeya hrs drift check` and the periodic job): for each model the decisions it scored in
//!   the window `[since, now)` with features of this build's schema (the newest
//!   `max_decisions`), and those of them with a label. The statistics and alert rules are in
//!   [`analysis`]. Each check and its alerts are stored ([`store`]).
//! * **Auto-revert** ([`revert`], `[drift] auto_revert`, off by default): a `performance_drift`
//!   alert of the champion moves it back to [`crate::registry::history::last_good_champion`]
//!   through [`crate::registry::move_alias`] (reason `auto_revert`, the alert and its figures in
//!   the comment), which publishes the bundle. One revert per champion position, however many
//!   alerts or replicas; nothing to revert to is recorded and nothing moves.
//! * **Periodic check** ([`run_periodic`]): every `check_every` under the leader lease
//!   `drift-check` (one replica of many runs it).

pub mod analysis;
pub mod api;
pub mod options;
pub mod revert;
pub mod store;
#[cfg(test)]
mod tests;

use crate::learn::dataset::parse_features;
use crate::registry::history::Actor;
use crate::registry::reference::{self, LoadError, Loaded};
use crate::registry::{self, RegistryError, CHALLENGER, CHAMPION};
use crate::review::store::{effective_by_decision, JOINED_LABEL_COLUMNS};
use crate::review::Label;
use crate::store::Db;
use analysis::{
    AlertType, DriftStatus, DriftTest, FeatureDrift, Finding, PerformanceCheck, Severity,
};
use kakeya_core::features::{N_FEATURES, SCHEMA_VERSION};
pub use options::DriftOptions;
use serde::{Deserialize, Serialize};
use sqlx::Row;

/// The lease of the periodic check.
pub const LEASE: &str = "drift-check";

/// Who runs a check (recorded with it, and with an auto-revert's alias move).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum By {
    /// `POST /v1/hrs/drift/check`.
    Api,
    /// `kakeya hrs drift check`.
    Cli,
    /// The periodic check of `kakeya serve`.
    Scheduler,
}

impl By {
    pub fn actor(self) -> Actor {
        match self {
            By::Api => Actor::AdminApi,
            By::Cli => Actor::cli(),
            By::Scheduler => Actor::Scheduler,
        }
    }
}

/// What an auto-revert did about a performance alert of the champion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RevertAction {
    /// The champion was moved back to the last good one.
    Reverted,
    /// No version to go back to: recorded, nothing moved.
    NothingToRevert,
    /// This champion position was reverted (or found with nothing to revert to) for an earlier
    /// alert: one revert per position.
    AlreadyHandled,
    /// The champion changed since the check read it.
    NotChampion,
    /// `[drift] auto_revert` is off.
    AutoRevertOff,
    /// The move failed (the detail says why); a later alert tries again.
    Failed,
}

impl RevertAction {
    pub fn as_str(self) -> &'static str {
        match self {
            RevertAction::Reverted => "reverted",
            RevertAction::NothingToRevert => "nothing_to_revert",
            RevertAction::AlreadyHandled => "already_handled",
            RevertAction::NotChampion => "not_champion",
            RevertAction::AutoRevertOff => "auto_revert_off",
            RevertAction::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Option<RevertAction> {
        [
            RevertAction::Reverted,
            RevertAction::NothingToRevert,
            RevertAction::AlreadyHandled,
            RevertAction::NotChampion,
            RevertAction::AutoRevertOff,
            RevertAction::Failed,
        ]
        .into_iter()
        .find(|a| a.as_str() == s)
    }
}

/// A stored alert: `GET /v1/hrs/drift/alerts`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DriftAlert {
    pub id: i64,
    pub check_id: i64,
    /// RFC 3339, UTC: when the check raised it.
    pub timestamp: String,
    pub timestamp_ms: i64,
    #[serde(rename = "type")]
    pub alert_type: AlertType,
    /// `ks`, `psi` (feature_drift) or `auroc` (performance_drift).
    pub test: DriftTest,
    /// The feature (feature_drift only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature: Option<String>,
    /// KS D, PSI, or the rolling AUROC.
    pub statistic: f64,
    /// BH-adjusted KS p-value, or the DeLong test's against the card's AUROC (absent for PSI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p_value: Option<f64>,
    /// The FDR q, the PSI level crossed, or the card's AUROC minus the allowed drop.
    pub threshold: f64,
    pub severity: Severity,
    pub model_version: String,
    /// `champion` or `challenger` at the check.
    pub alias: String,
    /// Performance alerts of the champion: what the auto-revert did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<RevertAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action_detail: Option<String>,
}

/// The feature half of a model's check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FeatureReport {
    pub status: DriftStatus,
    /// Decisions of the model in the window with features of the schema.
    pub n_in_window: usize,
    /// Of them, read (the newest `max_decisions`) with a well-formed vector.
    pub n_used: usize,
    /// Read, but with a stored vector that is not 22 finite numbers (skipped).
    pub n_malformed: usize,
    pub min_decisions: usize,
    /// SHA-256 of the training reference (the card's `drift_reference.sha256`).
    pub reference_sha256: Option<String>,
    /// Training rows of the reference.
    pub reference_n: Option<u64>,
    /// Per feature, in schema order (empty unless checked).
    pub features: Vec<FeatureDrift>,
    pub reason: String,
}

/// One model's check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ModelReport {
    pub alias: String,
    pub model_version: String,
    pub features: FeatureReport,
    pub performance: PerformanceCheck,
}

/// `POST /v1/hrs/drift/check`: what a check found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DriftReport {
    pub check_id: i64,
    /// `ok`, `drift` (an alert) or `insufficient_data` (no alert, and a section lacked data).
    pub outcome: CheckOutcome,
    pub checked_at: String,
    pub since: String,
    pub since_ms: i64,
    pub until_ms: i64,
    /// The thresholds in force.
    pub options: DriftOptions,
    /// Champion first, then the challenger if one is set.
    pub models: Vec<ModelReport>,
    /// The alerts this check raised (stored; see `GET /v1/hrs/drift/alerts`).
    pub alerts: Vec<DriftAlert>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CheckOutcome {
    Ok,
    Drift,
    InsufficientData,
}

impl CheckOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckOutcome::Ok => "ok",
            CheckOutcome::Drift => "drift",
            CheckOutcome::InsufficientData => "insufficient_data",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DriftError {
    #[error("{0}")]
    Invalid(String),
    #[error("no champion: promote a model first")]
    NoChampion,
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("database: {0}")]
    Store(#[from] sqlx::Error),
}

impl From<LoadError> for DriftError {
    fn from(e: LoadError) -> Self {
        match e {
            LoadError::Integrity(i) => DriftError::Registry(RegistryError::Integrity(i)),
            LoadError::Store(s) => DriftError::Store(s),
        }
    }
}

/// `since` as epoch ms: an RFC 3339 time (before `now_ms`), or a duration before now (`24h`,
/// `90m`, `7d`; 1 minute to 366 days, [`crate::ab::parse_duration`]).
pub fn parse_since(s: &str, now_ms: i64) -> Result<i64, DriftError> {
    let s = s.trim();
    if let Ok(ms) = crate::learn::parse_rfc3339(s) {
        if ms >= now_ms {
            return Err(DriftError::Invalid(format!(
                "since {s:?} is not in the past"
            )));
        }
        return Ok(ms);
    }
    let d = crate::ab::parse_duration(s).map_err(|e| {
        DriftError::Invalid(format!(
            "since must be an RFC 3339 time (2026-01-31T00:00:00Z) or a duration (24h, 7d): {e}"
        ))
    })?;
    Ok(now_ms.saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)))
}

/// The model's decisions of `[since, until)` (the window of a check).
const WINDOW: &str = "d.model_version = $1 AND d.created_at_ms >= $2 AND d.created_at_ms < $3";

/// The feature vectors of the newest `max` decisions of `version` in the window with features
/// of the schema; with the count of the window and of malformed vectors.
async fn window_features(
    db: &Db,
    version: &str,
    since: i64,
    until: i64,
    max: usize,
) -> Result<(Vec<[f64; N_FEATURES]>, usize, usize), sqlx::Error> {
    let of_schema = "d.feature_schema = $4 AND d.features IS NOT NULL";
    let n: i64 = sqlx::query(&format!(
        "SELECT COUNT(*) AS n FROM decision_log d WHERE {WINDOW} AND {of_schema}"
    ))
    .bind(version)
    .bind(since)
    .bind(until)
    .bind(SCHEMA_VERSION)
    .fetch_one(&db.pool)
    .await?
    .try_get("n")?;
    let rows = sqlx::query(&format!(
        "SELECT d.features AS features FROM decision_log d WHERE {WINDOW} AND {of_schema} \
         ORDER BY d.id DESC LIMIT $5"
    ))
    .bind(version)
    .bind(since)
    .bind(until)
    .bind(SCHEMA_VERSION)
    .bind(i64::try_from(max).unwrap_or(i64::MAX))
    .fetch_all(&db.pool)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    let mut malformed = 0;
    for r in &rows {
        match parse_features(&r.try_get::<String, _>("features")?) {
            Some(x) => out.push(x),
            None => malformed += 1,
        }
    }
    Ok((out, usize::try_from(n).unwrap_or(0), malformed))
}

/// The stored risks and effective labels (1 = hallucinated) of `version`'s decisions in the
/// window that have a label.
async fn labelled(
    db: &Db,
    version: &str,
    since: i64,
    until: i64,
) -> Result<(Vec<f64>, Vec<u8>), sqlx::Error> {
    let rows = sqlx::query(&format!(
        "SELECT d.id AS decision_id, d.risk AS risk, {JOINED_LABEL_COLUMNS} FROM decision_log d \
         JOIN labels l ON l.tenant = d.tenant AND l.pcs_id = d.pcs_id \
         WHERE {WINDOW} AND d.risk IS NOT NULL ORDER BY d.id"
    ))
    .bind(version)
    .bind(since)
    .bind(until)
    .fetch_all(&db.pool)
    .await?;
    Ok(
        effective_by_decision(&rows, |r| r.try_get::<f64, _>("risk"))?
            .into_iter()
            .map(|(risk, l)| (risk, u8::from(l.label == Label::Hallucinated)))
            .unzip(),
    )
}

/// The feature half of one model's check, and its alerts.
async fn check_features(
    db: &Db,
    version: &str,
    since: i64,
    until: i64,
    opts: &DriftOptions,
) -> Result<(FeatureReport, Vec<Finding>), DriftError> {
    let (window, n_in_window, n_malformed) =
        window_features(db, version, since, until, opts.max_decisions).await?;
    let mut r = FeatureReport {
        status: DriftStatus::NoReference,
        n_in_window,
        n_used: window.len(),
        n_malformed,
        min_decisions: opts.min_decisions,
        reference_sha256: None,
        reference_n: None,
        features: Vec::new(),
        reason: String::new(),
    };
    let (reference, sha256) = match reference::load(db, version).await? {
        Loaded::None => {
            r.reason = "no training reference: the version was uploaded, not trained here".into();
            return Ok((r, Vec::new()));
        }
        Loaded::Reference { reference, sha256 } => (reference, sha256),
    };
    r.reference_sha256 = Some(sha256);
    r.reference_n = Some(reference.n);
    if window.len() < opts.min_decisions {
        r.status = DriftStatus::InsufficientData;
        r.reason = format!(
            "needs {} decisions with features of {SCHEMA_VERSION} in the window, has {}",
            opts.min_decisions,
            window.len()
        );
        return Ok((r, Vec::new()));
    }
    // Every input is finite and non-empty here, so the tests cannot fail; should one, it says so.
    let features = analysis::feature_drift(&reference, &window, opts)
        .map_err(|e| DriftError::Invalid(format!("feature drift of {version}: {e}")))?;
    let findings = analysis::feature_findings(&features, opts);
    r.status = if findings.is_empty() {
        DriftStatus::Ok
    } else {
        DriftStatus::Drift
    };
    r.reason = format!(
        "{} of {N_FEATURES} features drifted ({} alerts) over {} decisions",
        features
            .iter()
            .filter(|f| findings
                .iter()
                .any(|a| a.feature.as_deref() == Some(&f.feature)))
            .count(),
        findings.len(),
        window.len()
    );
    r.features = features;
    Ok((r, findings))
}

/// Runs one check over `[since_ms, now_ms)` (see the module docs), stores it with its alerts,
/// acts on a performance alert of the champion (auto-revert, when `opts.auto_revert` and
/// `seed` is given) and returns the report.
pub async fn check(
    db: &Db,
    seed: Option<&[u8; 32]>,
    opts: &DriftOptions,
    since_ms: i64,
    by: By,
    now_ms: i64,
) -> Result<DriftReport, DriftError> {
    let result = run_check(db, seed, opts, since_ms, by, now_ms).await;
    let outcome = match &result {
        Ok(r) => r.outcome.as_str(),
        Err(_) => "error",
    };
    checks_total().with_label_values(&[outcome]).inc();
    result
}

async fn run_check(
    db: &Db,
    seed: Option<&[u8; 32]>,
    opts: &DriftOptions,
    since_ms: i64,
    by: By,
    now_ms: i64,
) -> Result<DriftReport, DriftError> {
    if since_ms >= now_ms {
        return Err(DriftError::Invalid("since must be before now".into()));
    }
    let aliases = {
        let mut conn = db.pool.acquire().await?;
        registry::aliases(&mut conn).await?
    };
    let champion = aliases
        .iter()
        .find(|a| a.alias == CHAMPION)
        .ok_or(DriftError::NoChampion)?;
    let mut models = Vec::new();
    let mut findings: Vec<(String, String, Finding)> = Vec::new();
    for a in std::iter::once(champion).chain(aliases.iter().filter(|a| a.alias == CHALLENGER)) {
        let (features, mut found) = check_features(db, &a.version, since_ms, now_ms, opts).await?;
        let card = registry::get_model(db, &a.version)
            .await?
            .map(|m| m.card)
            .unwrap_or_default();
        let (risks, labels) = labelled(db, &a.version, since_ms, now_ms).await?;
        let (performance, perf) =
            analysis::performance(&risks, &labels, analysis::card_auroc(&card), opts);
        found.extend(perf);
        findings.extend(
            found
                .into_iter()
                .map(|f| (a.alias.clone(), a.version.clone(), f)),
        );
        models.push(ModelReport {
            alias: a.alias.clone(),
            model_version: a.version.clone(),
            features,
            performance,
        });
    }
    let outcome = if !findings.is_empty() {
        CheckOutcome::Drift
    } else if models.iter().any(|m| {
        m.features.status == DriftStatus::InsufficientData
            || m.performance.status == DriftStatus::InsufficientData
    }) {
        CheckOutcome::InsufficientData
    } else {
        CheckOutcome::Ok
    };
    let mut report = DriftReport {
        check_id: 0,
        outcome,
        checked_at: crate::learn::rfc3339(now_ms),
        since: crate::learn::rfc3339(since_ms),
        since_ms,
        until_ms: now_ms,
        options: *opts,
        models,
        alerts: Vec::new(),
    };
    let (check_id, mut alerts) = store::insert_check(db, &report, &findings, by, now_ms).await?;
    report.check_id = check_id;
    for a in &alerts {
        alerts_total()
            .with_label_values(&[a.alert_type.as_str(), a.severity.as_str()])
            .inc();
        tracing::debug!(check = check_id, alert = a.id, kind = a.alert_type.as_str(),
            test = a.test.as_str(), feature = a.feature.as_deref().unwrap_or(""),
            model = %a.model_version, statistic = a.statistic, threshold = a.threshold,
            severity = a.severity.as_str(), "drift alert");
    }
    if !alerts.is_empty() {
        let count = |t: AlertType| alerts.iter().filter(|a| a.alert_type == t).count();
        tracing::warn!(
            check = check_id,
            feature_drift = count(AlertType::FeatureDrift),
            performance_drift = count(AlertType::PerformanceDrift),
            "drift check raised alerts (GET /v1/hrs/drift/alerts)"
        );
    }
    for a in alerts.iter_mut() {
        if a.alert_type != AlertType::PerformanceDrift || a.alias != CHAMPION {
            continue;
        }
        let (action, detail) = match (opts.auto_revert, seed) {
            (true, Some(seed)) => revert::auto_revert(db, seed, a, by.actor(), now_ms).await?,
            (true, None) => (
                RevertAction::Failed,
                "no bundle signing key loaded: cannot publish a revert".to_string(),
            ),
            (false, _) => (
                RevertAction::AutoRevertOff,
                "auto-revert is off ([drift] auto_revert / KAKEYA_DRIFT_AUTO_REVERT)".to_string(),
            ),
        };
        store::set_action(db, a.id, action, &detail).await?;
        a.action = Some(action);
        a.action_detail = Some(detail);
    }
    report.alerts = alerts;
    store::set_report(db, check_id, &report).await?;
    Ok(report)
}

/// The periodic check (under [`LEASE`]): runs [`check`] over the default window when the last
/// scheduled check is at least `check_every` old (a fail-over does not run it twice in a row).
pub async fn run_periodic(db: &Db, seed: &[u8; 32], opts: &DriftOptions) {
    let now = crate::now_ms();
    let every = i64::try_from(opts.check_every.as_millis()).unwrap_or(i64::MAX);
    match store::last_check_ms(db, By::Scheduler).await {
        Ok(Some(last)) if now.saturating_sub(last) < every => return,
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(error = %e, "drift check: cannot read the last check");
            return;
        }
    }
    let since = now.saturating_sub(i64::try_from(opts.window.as_millis()).unwrap_or(i64::MAX));
    match check(db, Some(seed), opts, since, By::Scheduler, now).await {
        Ok(r) => tracing::info!(
            check = r.check_id,
            outcome = r.outcome.as_str(),
            alerts = r.alerts.len(),
            "drift check"
        ),
        Err(DriftError::NoChampion) => {}
        Err(e) => tracing::warn!(error = %e, "drift check failed"),
    }
}

/// `kakeya_drift_checks_total{outcome}`: checks run by this process, by outcome (`ok`,
/// `drift`, `insufficient_data`, `error`). Process-wide (the CLI runs checks too); every
/// [`crate::metrics::Metrics`] registry exports it, like the two below.
pub fn checks_total() -> &'static prometheus::IntCounterVec {
    static C: std::sync::OnceLock<prometheus::IntCounterVec> = std::sync::OnceLock::new();
    C.get_or_init(|| {
        counter(
            "kakeya_drift_checks_total",
            "Drift checks run, by outcome",
            &["outcome"],
        )
    })
}

/// `kakeya_drift_alerts_total{type, severity}`: alerts raised.
pub fn alerts_total() -> &'static prometheus::IntCounterVec {
    static C: std::sync::OnceLock<prometheus::IntCounterVec> = std::sync::OnceLock::new();
    C.get_or_init(|| {
        counter(
            "kakeya_drift_alerts_total",
            "Drift alerts raised, by type (feature_drift, performance_drift) and severity",
            &["type", "severity"],
        )
    })
}

/// `kakeya_auto_reverts_total{outcome}`: auto-revert attempts on a champion's performance
/// alert (`reverted`, `nothing_to_revert`, `failed`).
pub fn auto_reverts_total() -> &'static prometheus::IntCounterVec {
    static C: std::sync::OnceLock<prometheus::IntCounterVec> = std::sync::OnceLock::new();
    C.get_or_init(|| {
        counter(
            "kakeya_auto_reverts_total",
            "Auto-reverts of the champion after a performance-drift alert, by outcome",
            &["outcome"],
        )
    })
}

fn counter(name: &str, help: &str, labels: &[&str]) -> prometheus::IntCounterVec {
    prometheus::IntCounterVec::new(prometheus::Opts::new(name, help), labels)
        .expect("a valid metric name and labels")
}

/// Registers the drift counters in `registry` (called by [`crate::metrics::Metrics::new`]).
pub fn register_metrics(registry: &prometheus::Registry) -> prometheus::Result<()> {
    for c in [checks_total(), alerts_total(), auto_reverts_total()] {
        registry.register(Box::new(c.clone()))?;
    }
    // Every (type, severity) exported from the start (at 0), so an alert on an increase has a
    // series to read before the first alert.
    for t in [
        analysis::AlertType::FeatureDrift,
        analysis::AlertType::PerformanceDrift,
    ] {
        for s in [analysis::Severity::Warning, analysis::Severity::Critical] {
            alerts_total().with_label_values(&[t.as_str(), s.as_str()]);
        }
    }
    Ok(())
}
