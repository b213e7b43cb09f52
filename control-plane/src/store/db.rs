//! Pool creation, per-connection settings and embedded migrations.

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyPool, Executor};
use std::borrow::Cow;
use std::str::FromStr;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A connected, migrated database.
#[derive(Clone, Debug)]
pub struct Db {
    pub pool: AnyPool,
    pub backend: Backend,
}

const SQLITE_MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../../migrations/sqlite/0001_init.sql"),
    ),
    (
        2,
        "registry",
        include_str!("../../migrations/sqlite/0002_registry.sql"),
    ),
    (
        3,
        "decision_log_tenant_time",
        include_str!("../../migrations/sqlite/0003_decision_log_tenant_time.sql"),
    ),
    (
        4,
        "model_signatures",
        include_str!("../../migrations/sqlite/0004_model_signatures.sql"),
    ),
    (
        5,
        "dedup_content_hash",
        include_str!("../../migrations/sqlite/0005_dedup_content_hash.sql"),
    ),
    (
        6,
        "decision_log_pcs_version",
        include_str!("../../migrations/sqlite/0006_decision_log_pcs_version.sql"),
    ),
    (
        7,
        "registry_meta",
        include_str!("../../migrations/sqlite/0007_registry_meta.sql"),
    ),
    (
        8,
        "labels",
        include_str!("../../migrations/sqlite/0008_labels.sql"),
    ),
    (
        9,
        "decision_features",
        include_str!("../../migrations/sqlite/0009_decision_features.sql"),
    ),
    (
        10,
        "review_evidence",
        include_str!("../../migrations/sqlite/0010_review_evidence.sql"),
    ),
    (
        11,
        "alias_history",
        include_str!("../../migrations/sqlite/0011_alias_history.sql"),
    ),
    (
        12,
        "training_jobs",
        include_str!("../../migrations/sqlite/0012_training_jobs.sql"),
    ),
    (
        13,
        "ab_experiments",
        include_str!("../../migrations/sqlite/0013_ab_experiments.sql"),
    ),
    (
        14,
        "drift",
        include_str!("../../migrations/sqlite/0014_drift.sql"),
    ),
    (
        15,
        "scheduler_runs",
        include_str!("../../migrations/sqlite/0015_scheduler_runs.sql"),
    ),
    (
        16,
        "canary_alias",
        include_str!("../../migrations/sqlite/0016_canary_alias.sql"),
    ),
    // adaptive ensemble policies (ensemble/)
    (
        17,
        "ensemble_policies",
        include_str!("../../migrations/sqlite/0017_ensemble_policies.sql"),
    ),
    // pipeline (issue 14): the ensemble's votes and disagreement audit events.
    (
        18,
        "ensemble_votes",
        include_str!("../../migrations/sqlite/0018_ensemble_votes.sql"),
    ),
    // canary: the canary controller's deployments and events.
    (
        19,
        "canary_controller",
        include_str!("../../migrations/sqlite/0019_canary_controller.sql"),
    ),
    // cost: 0020–0022
    (
        20,
        "cost_records",
        include_str!("../../migrations/sqlite/0020_cost_records.sql"),
    ),
    (
        21,
        "billing_import",
        include_str!("../../migrations/sqlite/0021_billing_import.sql"),
    ),
    (
        22,
        "cost_reports",
        include_str!("../../migrations/sqlite/0022_cost_reports.sql"),
    ),
    // tasks (issue 14): per-task children of registered models.
    (
        23,
        "task_models",
        include_str!("../../migrations/sqlite/0023_task_models.sql"),
    ),
    // cost: the daily roll-up of cost records.
    (
        25,
        "cost_daily",
        include_str!("../../migrations/sqlite/0025_cost_daily.sql"),
    ),
    // enseval (issue 14): the task kind of each decision.
    (
        26,
        "decision_task",
        include_str!("../../migrations/sqlite/0026_decision_task.sql"),
    ),
    // anomaly (issue 9): the decision log's anomaly columns, feedback, thresholds, clusters.
    (
        27,
        "anomaly",
        include_str!("../../migrations/sqlite/0027_anomaly.sql"),
    ),
    // audit: the WORM audit log and its checkpoints.
    (
        29,
        "audit_log",
        include_str!("../../migrations/sqlite/0029_audit_log.sql"),
    ),
    (
        31,
        "anomaly_models",
        include_str!("../../migrations/sqlite/0031_anomaly_models.sql"),
    ),
    (
        32,
        "upstream_canary",
        include_str!("../../migrations/sqlite/0032_upstream_canary.sql"),
    ),
    // cost (issue 8): the advisor's inputs, micro-vote waits and dedup hit ages.
    (
        33,
        "advisor_inputs",
        include_str!("../../migrations/sqlite/0033_advisor_inputs.sql"),
    ),
    // anomaly (issue 9): the active VAE and the per-tenant modes the bundle carries.
    (
        34,
        "anomaly_inline",
        include_str!("../../migrations/sqlite/0034_anomaly_inline.sql"),
    ),
    // canary (issue 7): one active canary per target; an upstream route's stable cluster.
    (
        36,
        "canary_per_target",
        include_str!("../../migrations/sqlite/0036_canary_per_target.sql"),
    ),
    // cost (issue 8): the RAG vote's time per cost record (the advisor's rag_off saving).
    (
        37,
        "rag_cpu",
        include_str!("../../migrations/sqlite/0037_rag_cpu.sql"),
    ),
    // audit (issue 12): retired checkpoint keys, endorsed by their successors.
    (
        38,
        "audit_keys",
        include_str!("../../migrations/sqlite/0038_audit_keys.sql"),
    ),
    (
        39,
        "llm_tokens",
        include_str!("../../migrations/sqlite/0039_llm_tokens.sql"),
    ),
];
const POSTGRES_MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../../migrations/postgres/0001_init.sql"),
    ),
    (
        2,
        "registry",
        include_str!("../../migrations/postgres/0002_registry.sql"),
    ),
    (
        3,
        "decision_log_tenant_time",
        include_str!("../../migrations/postgres/0003_decision_log_tenant_time.sql"),
    ),
    (
        4,
        "model_signatures",
        include_str!("../../migrations/postgres/0004_model_signatures.sql"),
    ),
    (
        5,
        "dedup_content_hash",
        include_str!("../../migrations/postgres/0005_dedup_content_hash.sql"),
    ),
    (
        6,
        "decision_log_pcs_version",
        include_str!("../../migrations/postgres/0006_decision_log_pcs_version.sql"),
    ),
    (
        7,
        "registry_meta",
        include_str!("../../migrations/postgres/0007_registry_meta.sql"),
    ),
    (
        8,
        "labels",
        include_str!("../../migrations/postgres/0008_labels.sql"),
    ),
    (
        9,
        "decision_features",
        include_str!("../../migrations/postgres/0009_decision_features.sql"),
    ),
    (
        10,
        "review_evidence",
        include_str!("../../migrations/postgres/0010_review_evidence.sql"),
    ),
    (
        11,
        "alias_history",
        include_str!("../../migrations/postgres/0011_alias_history.sql"),
    ),
    (
        12,
        "training_jobs",
        include_str!("../../migrations/postgres/0012_training_jobs.sql"),
    ),
    (
        13,
        "ab_experiments",
        include_str!("../../migrations/postgres/0013_ab_experiments.sql"),
    ),
    (
        14,
        "drift",
        include_str!("../../migrations/postgres/0014_drift.sql"),
    ),
    (
        15,
        "scheduler_runs",
        include_str!("../../migrations/postgres/0015_scheduler_runs.sql"),
    ),
    (
        16,
        "canary_alias",
        include_str!("../../migrations/postgres/0016_canary_alias.sql"),
    ),
    // adaptive ensemble policies (ensemble/)
    (
        17,
        "ensemble_policies",
        include_str!("../../migrations/postgres/0017_ensemble_policies.sql"),
    ),
    // pipeline (issue 14): the ensemble's votes and disagreement audit events.
    (
        18,
        "ensemble_votes",
        include_str!("../../migrations/postgres/0018_ensemble_votes.sql"),
    ),
    // canary: the canary controller's deployments and events.
    (
        19,
        "canary_controller",
        include_str!("../../migrations/postgres/0019_canary_controller.sql"),
    ),
    // cost: 0020–0022
    (
        20,
        "cost_records",
        include_str!("../../migrations/postgres/0020_cost_records.sql"),
    ),
    (
        21,
        "billing_import",
        include_str!("../../migrations/postgres/0021_billing_import.sql"),
    ),
    (
        22,
        "cost_reports",
        include_str!("../../migrations/postgres/0022_cost_reports.sql"),
    ),
    // tasks (issue 14): per-task children of registered models.
    (
        23,
        "task_models",
        include_str!("../../migrations/postgres/0023_task_models.sql"),
    ),
    // cost: the daily roll-up of cost records.
    (
        25,
        "cost_daily",
        include_str!("../../migrations/postgres/0025_cost_daily.sql"),
    ),
    // enseval (issue 14): the task kind of each decision.
    (
        26,
        "decision_task",
        include_str!("../../migrations/postgres/0026_decision_task.sql"),
    ),
    // anomaly (issue 9): the decision log's anomaly columns, feedback, thresholds, clusters.
    (
        27,
        "anomaly",
        include_str!("../../migrations/postgres/0027_anomaly.sql"),
    ),
    // audit: the WORM audit log and its checkpoints.
    (
        29,
        "audit_log",
        include_str!("../../migrations/postgres/0029_audit_log.sql"),
    ),
    (
        31,
        "anomaly_models",
        include_str!("../../migrations/postgres/0031_anomaly_models.sql"),
    ),
    (
        32,
        "upstream_canary",
        include_str!("../../migrations/postgres/0032_upstream_canary.sql"),
    ),
    // cost (issue 8): the advisor's inputs, micro-vote waits and dedup hit ages.
    (
        33,
        "advisor_inputs",
        include_str!("../../migrations/postgres/0033_advisor_inputs.sql"),
    ),
    // anomaly (issue 9): the active VAE and the per-tenant modes the bundle carries.
    (
        34,
        "anomaly_inline",
        include_str!("../../migrations/postgres/0034_anomaly_inline.sql"),
    ),
    // canary (issue 7): one active canary per target; an upstream route's stable cluster.
    (
        36,
        "canary_per_target",
        include_str!("../../migrations/postgres/0036_canary_per_target.sql"),
    ),
    // cost (issue 8): the RAG vote's time per cost record (the advisor's rag_off saving).
    (
        37,
        "rag_cpu",
        include_str!("../../migrations/postgres/0037_rag_cpu.sql"),
    ),
    // audit (issue 12): retired checkpoint keys, endorsed by their successors.
    (
        38,
        "audit_keys",
        include_str!("../../migrations/postgres/0038_audit_keys.sql"),
    ),
    (
        39,
        "llm_tokens",
        include_str!("../../migrations/postgres/0039_llm_tokens.sql"),
    ),
];

fn migrator(backend: Backend) -> Migrator {
    let list = match backend {
        Backend::Sqlite => SQLITE_MIGRATIONS,
        Backend::Postgres => POSTGRES_MIGRATIONS,
    };
    let migrations: Vec<Migration> = list
        .iter()
        .map(|(v, d, sql)| {
            Migration::new(
                *v,
                Cow::Borrowed(*d),
                MigrationType::Simple,
                Cow::Borrowed(*sql),
                false,
            )
        })
        .collect();
    Migrator {
        migrations: Cow::Owned(migrations),
        ..Migrator::DEFAULT
    }
}

/// Whether a commit waits until it is on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Durability {
    Full,
    #[cfg_attr(not(test), allow(dead_code))]
    Relaxed,
}

impl Db {
    /// Connects and migrates. `pg_search_path` (PostgreSQL only) pins every connection to one
    /// schema; the tests use it to isolate themselves.
    pub async fn connect(url: &str, pg_search_path: Option<&str>) -> Result<Db, sqlx::Error> {
        Self::open(url, pg_search_path, Durability::Full).await
    }

    /// [`Db::connect`] for the tests' throwaway databases: commits do not wait for the disk
    /// (SQLite `synchronous=OFF`, PostgreSQL `synchronous_commit=off`). What a query sees is
    /// unchanged, as is what survives a killed process; only a power loss could drop the last
    /// commits, which no test simulates. A commit that waits for an fsync costs 4–20 ms on CI's
    /// disk, and the tests make thousands of them (every fresh database runs every migration).
    #[cfg(test)]
    pub async fn connect_for_tests(
        url: &str,
        pg_search_path: Option<&str>,
    ) -> Result<Db, sqlx::Error> {
        Self::open(url, pg_search_path, Durability::Relaxed).await
    }

    async fn open(
        url: &str,
        pg_search_path: Option<&str>,
        durability: Durability,
    ) -> Result<Db, sqlx::Error> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("postgres") {
            Backend::Postgres
        } else {
            Backend::Sqlite
        };
        if backend == Backend::Sqlite {
            create_sqlite_parent(url);
        }
        let search_path =
            pg_search_path.map(|s| format!("SET search_path TO \"{}\"", s.replace('"', "")));
        let opts = AnyConnectOptions::from_str(url)?;
        let pool = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite { 4 } else { 8 })
            .acquire_timeout(Duration::from_secs(5))
            .after_connect(move |conn, _meta| {
                let search_path = search_path.clone();
                Box::pin(async move {
                    match backend {
                        // WAL journal: readers don't block the single writer. FULL, not
                        // NORMAL: replay starts at the persisted checkpoint, so a commit that
                        // rolled back on power loss would never be re-applied. With group
                        // commit this is one extra fsync per batch, not per submission.
                        Backend::Sqlite => {
                            conn.execute("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA busy_timeout=5000;")
                                .await?;
                            if durability == Durability::Relaxed {
                                conn.execute("PRAGMA synchronous=OFF;").await?;
                            }
                        }
                        Backend::Postgres => {
                            if let Some(sp) = &search_path {
                                conn.execute(sp.as_str()).await?;
                            }
                            if durability == Durability::Relaxed {
                                conn.execute("SET synchronous_commit = off").await?;
                            }
                        }
                    }
                    Ok(())
                })
            })
            .connect_with(opts)
            .await?;
        migrator(backend)
            .run(&pool)
            .await
            .map_err(|e| sqlx::Error::Migrate(Box::new(e)))?;
        Ok(Db { pool, backend })
    }

    /// Cheap liveness probe for `/ready`.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
    }
}

/// `sqlite://dir/file.db?mode=rwc` needs `dir` to exist.
fn create_sqlite_parent(url: &str) {
    let rest = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let path = rest.split('?').next().unwrap_or("");
    if path.is_empty() || path.starts_with(":memory:") {
        return;
    }
    if let Some(parent) = std::path::Path::new(path).parent() {
        if !parent.as_os_str().is_empty() {
            let _ = std::fs::create_dir_all(parent);
        }
    }
}
