//! Task-aware models in the registry: a registered model's per-task children (for every tenant
//! or for one), which a bundle whose champion is that model carries as
//! [`kakeya_core::task_models::TaskModels`].
//!
//! Why children of the champion's artifact rather than aliases of their own: the per-task
//! models are trained with the global one on the same split (`kakeya train --per-task`) and
//! are only meaningful next to it; hanging them on it means promotion and rollback (and the
//! auto-revert) move them together without any new alias rule, and a challenger or canary,
//! which scores every task with its own model, never picks up another model's children.

use super::{load_model, RegistryError, CHAMPION};
use crate::store::Db;
use kakeya_core::model::Model;
use kakeya_core::task::TaskKind;
use kakeya_core::task_models::{TaskModels, MAX_TENANT_ID};
use serde::Serialize;
use sqlx::{AnyConnection, Row};
use std::collections::BTreeMap;

/// `kakeya_task_models_attached_total{scope="task"|"tenant_task"}`: task models attached to a
/// registered model (API, CLI or `kakeya train --per-task --register`). Process-wide like the
/// registry's integrity counter, since the CLI attaches too.
pub fn attached_total() -> &'static prometheus::IntCounterVec {
    static C: std::sync::OnceLock<prometheus::IntCounterVec> = std::sync::OnceLock::new();
    C.get_or_init(|| {
        prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "kakeya_task_models_attached_total",
                "Task models attached to a registered model, by scope (task: every tenant; \
                 tenant_task: one tenant)",
            ),
            &["scope"],
        )
        .expect("a valid metric name and label")
    })
}

/// One child link.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct TaskChild {
    /// `qa | dialogue | summarization | rag | other`.
    pub task: String,
    /// The tenant it is for; absent for every tenant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// The registered model scoring that task.
    pub model: String,
    pub created_at_ms: i64,
}

/// The children of `parent` (by tenant, then task).
pub async fn children(db: &Db, parent: &str) -> Result<Vec<TaskChild>, RegistryError> {
    let mut conn = db.pool.acquire().await?;
    children_in(&mut conn, parent).await
}

async fn children_in(
    conn: &mut AnyConnection,
    parent: &str,
) -> Result<Vec<TaskChild>, RegistryError> {
    let rows = sqlx::query(
        "SELECT tenant, task, child_version, created_at_ms FROM model_task_children \
         WHERE parent_version = $1 ORDER BY tenant, task",
    )
    .bind(parent)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            let tenant: String = r.try_get("tenant")?;
            Ok(TaskChild {
                task: r.try_get("task")?,
                tenant: (!tenant.is_empty()).then_some(tenant),
                model: r.try_get("child_version")?,
                created_at_ms: r.try_get("created_at_ms")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(RegistryError::from)
}

/// The task models a bundle with champion `parent` carries: every child, loaded through the
/// registry's integrity check (a tampered child refuses the publication, like a tampered
/// champion).
pub(super) async fn load(
    conn: &mut AnyConnection,
    parent: &str,
    public_key_b64: &str,
) -> Result<TaskModels, RegistryError> {
    let mut out = TaskModels::default();
    for c in children_in(conn, parent).await? {
        let task = TaskKind::parse(&c.task).ok_or_else(|| {
            RegistryError::Invalid(format!("stored task {:?} of {parent}", c.task))
        })?;
        let m = load_model(conn, &c.model, public_key_b64).await?;
        match c.tenant {
            None => {
                out.by_task.insert(task, m);
            }
            Some(t) => {
                out.by_tenant
                    .entry(t)
                    .or_insert_with(BTreeMap::new)
                    .insert(task, m);
            }
        }
    }
    Ok(out)
}

/// Makes the registered model `child` the `task` model of `parent` (for `tenant`, or for
/// every tenant), replacing any earlier child of that slot; when `parent` is the champion,
/// publishes the next bundle so the filters score with it. Both must be registered and of
/// this build's feature schema; a model is not its own child.
pub async fn attach(
    db: &Db,
    seed: &[u8; 32],
    parent: &str,
    task: TaskKind,
    tenant: Option<&str>,
    child: &str,
    now_ms: i64,
) -> Result<Option<super::Published>, RegistryError> {
    let tenant = tenant.unwrap_or_default();
    if tenant.len() > MAX_TENANT_ID || tenant.chars().any(char::is_control) {
        return Err(RegistryError::Invalid(format!(
            "tenant must be at most {MAX_TENANT_ID} bytes without control characters"
        )));
    }
    if parent == child {
        return Err(RegistryError::Invalid(
            "a model cannot be its own task model: register the task model separately".into(),
        ));
    }
    let key = super::keys::public_key_b64(seed);
    let parent_model: Model = super::verified_model(db, parent, &key).await?;
    let child_model: Model = super::verified_model(db, child, &key).await?;
    if child_model.schema_version() != parent_model.schema_version() {
        return Err(RegistryError::Invalid(format!(
            "task model {child} has feature schema {}, its parent {parent} {}",
            child_model.schema_version(),
            parent_model.schema_version()
        )));
    }
    sqlx::query(
        "INSERT INTO model_task_children (parent_version, tenant, task, child_version, created_at_ms) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (parent_version, tenant, task) \
         DO UPDATE SET child_version = excluded.child_version, created_at_ms = excluded.created_at_ms",
    )
    .bind(parent)
    .bind(tenant)
    .bind(task.as_str())
    .bind(child)
    .bind(now_ms)
    .execute(&db.pool)
    .await?;
    let scope = if tenant.is_empty() {
        "task"
    } else {
        "tenant_task"
    };
    attached_total().with_label_values(&[scope]).inc();
    let mut conn = db.pool.acquire().await?;
    let champion = super::aliases(&mut conn)
        .await?
        .into_iter()
        .find(|a| a.alias == CHAMPION)
        .map(|a| a.version);
    drop(conn);
    if champion.as_deref() == Some(parent) {
        return Ok(Some(super::republish(db, seed, now_ms).await?));
    }
    Ok(None)
}

#[cfg(test)]
#[path = "task_models_tests.rs"]
mod tests;
