//! Evidence retention for reviewers: a data-protection choice, per tenant, off by default.
//!
//! A reviewer judges an answer better when they see it: the question, the context and the
//! response the agent sent (its [`Evidence`]). The WAL and the decision log never hold them
//! (the ingest path strips `evidence` before the WAL). For the tenants an operator opts in
//! (`[review.evidence] tenants`), the evidence of a **fresh, queued** decision
//! ([`crate::review::is_queued`]) is kept in `review_evidence`:
//!
//! * encrypted with the control plane's evidence key ([`crypto`]: ChaCha20-Poly1305, random
//!   nonce per record, associated data = (tenant, pcs_id));
//! * written after the decision is durable and **best effort** ([`Retainer::keep_if_queued`],
//!   one writer task): the answer waits at most [`WRITE_WAIT`] for it, a failure (or a full
//!   writer queue) is logged and counted (`kakeya_evidence_retention_errors_total`), never
//!   answered with an error, and a crash before the write loses it (the WAL cannot bring it
//!   back, by design);
//! * deleted when the decision gets its first label (same transaction as the label,
//!   [`crate::review::submit`]), when its TTL passes, and when its tenant is no longer opted in
//!   ([`purge`], at start and every [`PURGE_EVERY`]);
//! * shown decrypted in `GET /v1/reviews` and `kakeya review list --evidence` ([`attach`]); a
//!   record that does not decrypt (altered, moved to another row, other key) shows no evidence,
//!   with a warning and `kakeya_evidence_decrypt_failures_total`.
//!
//! Evidence never appears in a log line: errors name the tenant and pcs_id only.

pub mod crypto;
pub mod store;
#[cfg(test)]
pub(crate) mod tests;

use crate::metrics::Metrics;
use crate::review::store::ReviewItem;
use crate::store::{Applied, Db};
use crypto::EvidenceKey;
use kakeya_core::evidence::Evidence;
use serde::{Deserialize, Serialize};
use sqlx::AnyPool;
use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Default `ttl_hours`.
pub const DEFAULT_TTL_HOURS: u32 = 72;
/// Longest accepted `ttl_hours` (30 days): retention is for a queue that is being worked.
pub const MAX_TTL_HOURS: u32 = 720;
/// How long an answer waits for its evidence write before it goes out anyway (the write then
/// finishes, or fails and is counted, in the background).
pub const WRITE_WAIT: Duration = Duration::from_millis(500);
/// Interval of the purge task (expired rows are never shown, so this only bounds how long
/// they stay on disk).
pub const PURGE_EVERY: Duration = Duration::from_secs(300);
/// Longest tenant name the ingest listener accepts (`x-kakeya-tenant`).
const MAX_TENANT_LEN: usize = 256;

/// Which tenants' evidence is retained: `"*"` (every tenant) or a list (none by default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tenants {
    All,
    Only(BTreeSet<String>),
}

impl Default for Tenants {
    fn default() -> Self {
        Tenants::Only(BTreeSet::new())
    }
}

impl Tenants {
    pub fn includes(&self, tenant: &str) -> bool {
        match self {
            Tenants::All => true,
            Tenants::Only(names) => names.contains(tenant),
        }
    }

    /// True when no tenant's evidence is retained (the default).
    pub fn is_none(&self) -> bool {
        matches!(self, Tenants::Only(names) if names.is_empty())
    }

    /// `["*"]` is every tenant; otherwise tenant names, each 1..=256 characters without
    /// control characters, commas or surrounding blanks.
    pub fn parse<I: IntoIterator<Item = String>>(items: I) -> Result<Tenants, String> {
        let names: BTreeSet<String> = items.into_iter().collect();
        if names.contains("*") {
            return if names.len() == 1 {
                Ok(Tenants::All)
            } else {
                Err("\"*\" (every tenant) cannot be combined with tenant names".into())
            };
        }
        for n in &names {
            if n.is_empty()
                || n.len() > MAX_TENANT_LEN
                || n.trim() != n
                || n.contains(',')
                || n.chars().any(char::is_control)
            {
                return Err(format!(
                    "{n:?} is not a tenant name (1..={MAX_TENANT_LEN} characters, no commas, \
                     control characters or surrounding blanks)"
                ));
            }
        }
        Ok(Tenants::Only(names))
    }
}

impl Serialize for Tenants {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Tenants::All => s.serialize_str("*"),
            Tenants::Only(names) => names.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Tenants {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            One(String),
            Many(Vec<String>),
        }
        let items = match Form::deserialize(d)? {
            Form::One(s) => vec![s],
            Form::Many(v) => v,
        };
        Tenants::parse(items).map_err(serde::de::Error::custom)
    }
}

/// `[review.evidence]` of `kakeya.toml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvidenceFileConfig {
    pub tenants: Option<Tenants>,
    pub ttl_hours: Option<u32>,
    pub key_file: Option<PathBuf>,
}

/// The effective evidence-retention settings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvidenceConfig {
    /// Opted-in tenants (`KAKEYA_EVIDENCE_TENANTS`); none by default.
    pub tenants: Tenants,
    /// Hours a record is kept unless labelled first (`KAKEYA_EVIDENCE_TTL_HOURS`), 1..=720.
    pub ttl_hours: u32,
    /// `KAKEYA_EVIDENCE_KEY_FILE`, when the operator chose one; else
    /// `<data_dir>/keys/evidence.key` ([`crate::config::Config::evidence_key_path`]).
    pub key_file: Option<PathBuf>,
}

impl Default for EvidenceConfig {
    fn default() -> Self {
        EvidenceConfig {
            tenants: Tenants::default(),
            ttl_hours: DEFAULT_TTL_HOURS,
            key_file: None,
        }
    }
}

impl EvidenceConfig {
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=MAX_TTL_HOURS).contains(&self.ttl_hours) {
            return Err(format!(
                "ttl_hours must be 1..={MAX_TTL_HOURS} (got {})",
                self.ttl_hours
            ));
        }
        Ok(())
    }

    fn ttl_ms(&self) -> i64 {
        i64::from(self.ttl_hours) * 3_600_000
    }
}

/// The retained evidence of one decision, as `GET /v1/reviews` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReviewEvidence {
    pub question: String,
    pub context: String,
    /// Cited passages (their texts count as context).
    pub citations: Vec<ReviewCitation>,
    pub response: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReviewCitation {
    pub id: String,
    pub text: String,
    pub source: String,
}

impl From<Evidence> for ReviewEvidence {
    fn from(e: Evidence) -> Self {
        ReviewEvidence {
            question: e.question,
            context: e.context,
            citations: e
                .citations
                .into_iter()
                .map(|c| ReviewCitation {
                    id: c.id,
                    text: c.text,
                    source: c.source,
                })
                .collect(),
            response: e.response,
        }
    }
}

/// The key and the policy: what the admin side needs to show evidence.
#[derive(Clone, Debug)]
pub struct Vault {
    pub key: Arc<EvidenceKey>,
    pub config: Arc<EvidenceConfig>,
}

impl Vault {
    pub fn new(key: EvidenceKey, config: EvidenceConfig) -> Vault {
        Vault {
            key: Arc::new(key),
            config: Arc::new(config),
        }
    }
}

/// The ingest side: seals and stores the evidence of queued decisions of opted-in tenants.
///
/// One writer task owns the writes (one connection, one transaction per batch, like the
/// committer): a burst of escalations never takes more than one pooled connection from the
/// committer, and a full queue drops the record (counted) instead of waiting.
#[derive(Clone)]
pub struct Retainer {
    tenants: Arc<Tenants>,
    jobs: mpsc::Sender<Job>,
    metrics: Metrics,
}

struct Job {
    tenant: String,
    pcs_id: String,
    evidence: Evidence,
    done: oneshot::Sender<()>,
}

/// Records waiting for the writer; past this, new ones are dropped (and counted).
const QUEUE_CAPACITY: usize = 1024;
/// Records written per transaction at most.
const MAX_BATCH: usize = 64;

impl Retainer {
    /// Starts the writer; `None` when no tenant is opted in (nothing to do at ingest). The
    /// writer stops once every clone is dropped.
    pub fn new(vault: Vault, db: Db, metrics: Metrics) -> Option<Retainer> {
        if vault.config.tenants.is_none() {
            return None;
        }
        let (jobs, rx) = mpsc::channel(QUEUE_CAPACITY);
        let tenants = Arc::new(vault.config.tenants.clone());
        tokio::spawn(write_batches(vault, db, metrics.clone(), rx));
        Some(Retainer {
            tenants,
            jobs,
            metrics,
        })
    }

    /// True when a submission of `tenant` may need its evidence kept (so the caller keeps it).
    pub fn retains(&self, tenant: &str) -> bool {
        self.tenants.includes(tenant)
    }

    /// Called once the decision is durable: keeps the evidence when the decision is fresh and
    /// queued and its tenant opted in. Waits at most [`WRITE_WAIT`]; never fails.
    pub async fn keep_if_queued(
        &self,
        tenant: &str,
        pcs_id: &str,
        applied: &Applied,
        evidence: Evidence,
    ) {
        if !(applied.fresh
            && !applied.dedup_hit
            && crate::review::is_queued(applied)
            && self.retains(tenant)
            && !pcs_id.is_empty())
        {
            return;
        }
        let (done, written) = oneshot::channel();
        let job = Job {
            tenant: tenant.to_string(),
            pcs_id: pcs_id.to_string(),
            evidence,
            done,
        };
        if self.jobs.try_send(job).is_err() {
            tracing::warn!(%tenant, %pcs_id, "evidence writer busy or stopped; not retaining this record");
            self.count_error(tenant);
            return;
        }
        if tokio::time::timeout(WRITE_WAIT, written).await.is_err() {
            tracing::warn!(
                %tenant,
                %pcs_id,
                wait_ms = WRITE_WAIT.as_millis() as u64,
                "evidence write still running; answering without waiting for it"
            );
        }
    }

    fn count_error(&self, tenant: &str) {
        self.metrics
            .evidence_retention_errors_total
            .with_label_values(&[tenant])
            .inc();
    }
}

/// The writer task: drains up to [`MAX_BATCH`] jobs, writes them in one transaction, answers
/// each (done or counted as failed).
async fn write_batches(vault: Vault, db: Db, metrics: Metrics, mut rx: mpsc::Receiver<Job>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        let now = crate::now_ms();
        match write(&vault, &db, &batch, now).await {
            Ok(written) => {
                for (j, w) in batch.iter().zip(written) {
                    if w {
                        metrics
                            .evidence_retained_total
                            .with_label_values(&[&j.tenant])
                            .inc();
                    }
                }
            }
            Err(e) => {
                for j in &batch {
                    // The tenant and pcs_id only: never the evidence.
                    tracing::warn!(tenant = %j.tenant, pcs_id = %j.pcs_id, error = %e, "cannot retain the evidence of a queued decision");
                    metrics
                        .evidence_retention_errors_total
                        .with_label_values(&[&j.tenant])
                        .inc();
                }
            }
        }
        for j in batch {
            let _ = j.done.send(());
        }
    }
}

/// Seals and stores `batch` in one transaction; per job, whether a row was written.
async fn write(vault: &Vault, db: &Db, batch: &[Job], now_ms: i64) -> anyhow::Result<Vec<bool>> {
    let expires = now_ms.saturating_add(vault.config.ttl_ms());
    let sealed = batch
        .iter()
        .map(|j| vault.key.seal(&j.tenant, &j.pcs_id, &j.evidence))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut tx = db.pool.begin().await?;
    let mut written = Vec::with_capacity(batch.len());
    for (j, s) in batch.iter().zip(&sealed) {
        written.push(store::insert(&mut tx, &j.tenant, &j.pcs_id, s, now_ms, expires).await?);
    }
    tx.commit().await?;
    Ok(written)
}

/// `kakeya_evidence_decrypt_failures_total{tenant}`: retained records that did not decrypt.
/// Process-wide (the CLI shows evidence too); every [`Metrics`] registry exports it.
pub fn decrypt_failures_total() -> &'static prometheus::IntCounterVec {
    static C: std::sync::OnceLock<prometheus::IntCounterVec> = std::sync::OnceLock::new();
    C.get_or_init(|| {
        prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "kakeya_evidence_decrypt_failures_total",
                "Retained evidence records that did not decrypt (altered, moved to another \
                 decision, or sealed with another key); shown without evidence",
            ),
            &["tenant"],
        )
        .expect("a valid metric name and label")
    })
}

/// Fills `evidence_retained` of a page of queue items and, with a `vault`, their `evidence`.
/// Records of tenants no longer opted in, and expired ones, count as not retained. A record
/// that does not decrypt shows no evidence (warning + counter); the page is still served.
pub async fn attach(
    pool: &AnyPool,
    vault: Option<&Vault>,
    tenants: &Tenants,
    items: &mut [ReviewItem],
    tenant_filter: Option<&str>,
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    let ids = items.iter().map(|i| i.decision_id);
    let (Some(oldest), Some(newest)) = (ids.clone().min(), ids.max()) else {
        return Ok(());
    };
    let mut by_decision: HashMap<(String, String), store::StoredEvidence> = HashMap::new();
    for e in store::for_decisions(pool, oldest, newest, tenant_filter, now_ms).await? {
        if tenants.includes(&e.tenant) {
            by_decision.insert((e.tenant.clone(), e.pcs_id.clone()), e);
        }
    }
    for item in items {
        let Some(e) = by_decision.get(&(item.tenant.clone(), item.pcs_id.clone())) else {
            continue;
        };
        item.evidence_retained = true;
        let Some(v) = vault else { continue };
        match v.key.open(&e.tenant, &e.pcs_id, &e.nonce, &e.ciphertext) {
            Ok(ev) => item.evidence = Some(ev.into()),
            Err(err) => {
                tracing::warn!(tenant = %e.tenant, pcs_id = %e.pcs_id, error = %err, "retained evidence shown as missing");
                decrypt_failures_total()
                    .with_label_values(&[e.tenant.as_str()])
                    .inc();
            }
        }
    }
    Ok(())
}

/// What one [`purge`] deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Purged {
    /// Records past their TTL.
    pub expired: u64,
    /// Records of tenants no longer opted in.
    pub not_opted_in: u64,
}

/// Deletes expired records and those of tenants `tenants` does not opt in. A plain function:
/// the periodic job ([`purge_logged`]) and `kakeya review purge-evidence` call it.
pub async fn purge(pool: &AnyPool, tenants: &Tenants, now_ms: i64) -> Result<Purged, sqlx::Error> {
    Ok(Purged {
        expired: store::delete_expired(pool, now_ms).await?,
        not_opted_in: store::delete_not_retained(pool, tenants).await?,
    })
}

/// Runs [`purge`] once and logs what it did. `kakeya serve` runs it at start and every
/// [`PURGE_EVERY`] on the replica holding the purge lease (`crate::lease`); a failure is
/// retried at the next tick.
pub async fn purge_logged(pool: AnyPool, tenants: Tenants) {
    match purge(&pool, &tenants, crate::now_ms()).await {
        Ok(p) if p != Purged::default() => tracing::info!(
            expired = p.expired,
            not_opted_in = p.not_opted_in,
            "evidence purge"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "evidence purge failed"),
    }
}
