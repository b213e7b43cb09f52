//! Per-tenant monthly budgets: a soft and a hard cap, each with an action (`alert`, `degrade`,
//! `throttle`, `deny`). [`recompute`] sums each tenant's month-to-date internal cost, picks the
//! action of the highest cap reached and stores the state; a change republishes the bundle,
//! whose `budgets` section ([`section`]) the filter enforces.

use super::options::CostOptions;
use super::prices::{format_day, DAY_MS};
use super::{record, CostError};
use crate::store::Db;
use kakeya_core::budget::{BudgetAction, BudgetSection, TenantBudget};
use serde::{Deserialize, Serialize};
use sqlx::{AnyConnection, Row};

/// A budget as set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    #[schema(max_length = 128)]
    pub tenant: String,
    /// Monthly soft cap, in the price book's currency.
    pub soft_cap: f64,
    pub hard_cap: f64,
    /// `alert` | `degrade` | `throttle` | `deny` (default `alert`).
    #[serde(default = "alert")]
    pub soft_action: String,
    /// Default `deny`.
    #[serde(default = "deny")]
    pub hard_action: String,
}

fn alert() -> String {
    "alert".into()
}

fn deny() -> String {
    "deny".into()
}

/// A budget with its last computed state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BudgetStatus {
    #[serde(flatten)]
    pub budget: Budget,
    /// `YYYY-MM` of the state; `null` before the first computation.
    pub month: Option<String>,
    pub spent: Option<f64>,
    /// spent / hard_cap.
    pub utilisation: Option<f64>,
    /// `none` | `alert` | `degrade` | `throttle` | `deny`.
    pub action: Option<String>,
}

pub fn parse_action(s: &str) -> Option<BudgetAction> {
    match s {
        "none" => Some(BudgetAction::None),
        "alert" => Some(BudgetAction::Alert),
        "degrade" => Some(BudgetAction::Degrade),
        "throttle" => Some(BudgetAction::Throttle),
        "deny" => Some(BudgetAction::Deny),
        _ => None,
    }
}

pub fn action_str(a: BudgetAction) -> &'static str {
    match a {
        BudgetAction::None => "none",
        BudgetAction::Alert => "alert",
        BudgetAction::Degrade => "degrade",
        BudgetAction::Throttle => "throttle",
        BudgetAction::Deny => "deny",
    }
}

impl Budget {
    pub fn validate(&self) -> Result<(BudgetAction, BudgetAction), CostError> {
        let bad = |m: String| Err(CostError::Invalid(m));
        if self.tenant.is_empty() || self.tenant.len() > 128 {
            return bad("tenant must be 1 to 128 characters".into());
        }
        if !self.soft_cap.is_finite() || !self.hard_cap.is_finite() || self.soft_cap < 0.0 {
            return bad("caps must be finite numbers ≥ 0".into());
        }
        if self.hard_cap < self.soft_cap {
            return bad(format!(
                "hard_cap {} is below soft_cap {}",
                self.hard_cap, self.soft_cap
            ));
        }
        let act = |s: &str| match parse_action(s) {
            Some(BudgetAction::None) | None => Err(CostError::Invalid(format!(
                "unknown action {s:?}: expected alert, degrade, throttle or deny"
            ))),
            Some(a) => Ok(a),
        };
        Ok((act(&self.soft_action)?, act(&self.hard_action)?))
    }

    /// The action at `spent`: the hard cap's once reached, else the soft cap's, else none.
    pub fn action_at(&self, spent: f64) -> BudgetAction {
        let (soft, hard) = self
            .validate()
            .unwrap_or((BudgetAction::Alert, BudgetAction::Deny));
        if spent >= self.hard_cap {
            hard
        } else if spent >= self.soft_cap {
            soft
        } else {
            BudgetAction::None
        }
    }
}

pub async fn set(db: &Db, b: &Budget, now_ms: i64) -> Result<(), CostError> {
    b.validate()?;
    sqlx::query(
        "INSERT INTO cost_budgets (tenant, soft_cap, hard_cap, soft_action, hard_action, \
         updated_at_ms) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tenant) DO UPDATE SET \
         soft_cap = excluded.soft_cap, hard_cap = excluded.hard_cap, \
         soft_action = excluded.soft_action, hard_action = excluded.hard_action, \
         updated_at_ms = excluded.updated_at_ms",
    )
    .bind(&b.tenant)
    .bind(b.soft_cap)
    .bind(b.hard_cap)
    .bind(&b.soft_action)
    .bind(&b.hard_action)
    .bind(now_ms)
    .execute(&db.pool)
    .await?;
    Ok(())
}

/// Removes a tenant's budget and its state; false when it had none.
pub async fn delete(db: &Db, tenant: &str) -> Result<bool, CostError> {
    sqlx::query("DELETE FROM cost_budget_state WHERE tenant = $1")
        .bind(tenant)
        .execute(&db.pool)
        .await?;
    let n = sqlx::query("DELETE FROM cost_budgets WHERE tenant = $1")
        .bind(tenant)
        .execute(&db.pool)
        .await?
        .rows_affected();
    Ok(n > 0)
}

const LIST: &str = "SELECT b.tenant, b.soft_cap, b.hard_cap, b.soft_action, b.hard_action, \
                    s.month, s.spent, s.action FROM cost_budgets b \
                    LEFT JOIN cost_budget_state s ON s.tenant = b.tenant ORDER BY b.tenant";

fn row_to_status(r: &sqlx::any::AnyRow) -> Result<BudgetStatus, sqlx::Error> {
    let budget = Budget {
        tenant: r.try_get("tenant")?,
        soft_cap: r.try_get("soft_cap")?,
        hard_cap: r.try_get("hard_cap")?,
        soft_action: r.try_get("soft_action")?,
        hard_action: r.try_get("hard_action")?,
    };
    let spent: Option<f64> = r.try_get("spent")?;
    Ok(BudgetStatus {
        utilisation: spent.map(|s| {
            if budget.hard_cap > 0.0 {
                s / budget.hard_cap
            } else {
                f64::from(u8::from(s > 0.0))
            }
        }),
        budget,
        month: r.try_get("month")?,
        spent,
        action: r.try_get("action")?,
    })
}

pub async fn list(db: &Db) -> Result<Vec<BudgetStatus>, CostError> {
    let rows = sqlx::query(LIST).fetch_all(&db.pool).await?;
    Ok(rows.iter().map(row_to_status).collect::<Result<_, _>>()?)
}

/// `YYYY-MM`, the first day and the first day of the next month, of `day`.
pub fn month_of(day: i64) -> (String, i64, i64) {
    let label = format_day(day);
    let first =
        super::prices::parse_day(&format!("{}-01", &label[..7.min(label.len())])).unwrap_or(day);
    // The 1st of the next month: 32 days on from the 1st is always in the next month.
    let next_label = format_day(first + 32);
    let next = super::prices::parse_day(&format!("{}-01", &next_label[..7.min(next_label.len())]))
        .unwrap_or(first + 31);
    (label[..7.min(label.len())].to_string(), first, next)
}

/// Recomputes every budget's month-to-date spend and action at `now_ms`; true when some
/// tenant's action changed (the caller republishes the bundle).
pub async fn recompute(
    db: &Db,
    opts: &CostOptions,
    now_ms: i64,
) -> Result<(Vec<BudgetStatus>, bool), CostError> {
    let budgets = list(db).await?;
    let today = super::prices::day_of_ms(now_ms);
    let (month, first, _) = month_of(today);
    let mut changed = false;
    for b in &budgets {
        let sel = record::Selection {
            from_day: first,
            to_day: today + 1,
            tenant: Some(b.budget.tenant.clone()),
            ..Default::default()
        };
        let spent: f64 = super::rollup(db, opts, &sel)
            .await?
            .iter()
            .filter_map(|d| d.cost.map(|c| c.total()))
            .sum();
        let action = action_str(b.budget.action_at(spent));
        changed |= b.action.as_deref() != Some(action) || b.month.as_deref() != Some(&month);
        // The state row and, when the action changed, its audit entry commit together.
        let mut tx = db.pool.begin().await?;
        sqlx::query(
            "INSERT INTO cost_budget_state (tenant, month, spent, action, computed_at_ms) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant) DO UPDATE SET \
             month = excluded.month, spent = excluded.spent, action = excluded.action, \
             computed_at_ms = excluded.computed_at_ms",
        )
        .bind(&b.budget.tenant)
        .bind(&month)
        .bind(spent)
        .bind(action)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        if b.action.as_deref() != Some(action) {
            // audit: a budget action change (the state row above is recomputed, not appended).
            let e = crate::audit::Event::BudgetAction {
                tenant: b.budget.tenant.clone(),
                month: month.clone(),
                action: action.into(),
                previous_action: b.action.clone(),
                spent,
            };
            crate::audit::append(&mut tx, &e, now_ms).await?;
        }
        tx.commit().await?;
    }
    Ok((list(db).await?, changed))
}

/// True when the served bundle's budget actions are not the stored states' (a tenant's
/// action changed, or a budget came or went): the bundle is to be republished. Only actions
/// count: the spend a bundle carries is as of its publication, so a spend that moves without
/// crossing a cap republishes nothing.
pub async fn needs_publish(db: &Db, now_ms: i64) -> Result<bool, CostError> {
    let mut conn = db.pool.acquire().await?;
    let want = section(&mut conn, now_ms).await?;
    let Some(row) = crate::registry::current_bundle(db).await? else {
        return Ok(false);
    };
    let served = serde_json::from_str::<kakeya_core::bundle::Bundle>(&row.bytes)
        .map(|b| b.budgets)
        .unwrap_or_default();
    let actions = |s: &BudgetSection| -> Vec<(String, BudgetAction)> {
        s.tenants
            .iter()
            .map(|(t, b)| (t.clone(), b.action))
            .collect()
    };
    Ok(actions(&want) != actions(&served))
}

/// The bundle's budget section from the stored states (inside the publication's
/// transaction); tenants whose state is not computed yet are left out.
pub async fn section(conn: &mut AnyConnection, now_ms: i64) -> Result<BudgetSection, sqlx::Error> {
    let rows = sqlx::query(LIST).fetch_all(&mut *conn).await?;
    let (_, _, next) = month_of(super::prices::day_of_ms(now_ms));
    let to_month_end = ((next * DAY_MS - now_ms) / 1000).clamp(1, 86_400);
    let mut s = BudgetSection::default();
    for r in &rows {
        let st = row_to_status(r)?;
        let (Some(month), Some(spent), Some(action)) = (st.month, st.spent, st.action) else {
            continue;
        };
        let action = parse_action(&action).unwrap_or(BudgetAction::None);
        s.tenants.insert(
            st.budget.tenant.clone(),
            TenantBudget {
                month,
                spent,
                soft_cap: st.budget.soft_cap,
                hard_cap: st.budget.hard_cap,
                action,
                retry_after_s: if action == BudgetAction::Throttle {
                    u32::try_from(to_month_end).unwrap_or(86_400)
                } else {
                    0
                },
            },
        );
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_pick_the_highest_action_and_months_are_calendar_months() {
        let b = Budget {
            tenant: "t".into(),
            soft_cap: 10.0,
            hard_cap: 20.0,
            soft_action: "degrade".into(),
            hard_action: "throttle".into(),
        };
        assert_eq!(b.action_at(9.99), BudgetAction::None);
        assert_eq!(b.action_at(10.0), BudgetAction::Degrade);
        assert_eq!(b.action_at(25.0), BudgetAction::Throttle);
        let bad = Budget {
            soft_action: "explode".into(),
            ..b.clone()
        };
        assert!(bad.validate().is_err());
        let d = |s| super::super::prices::parse_day(s).unwrap();
        assert_eq!(
            month_of(d("2026-02-14")),
            ("2026-02".into(), d("2026-02-01"), d("2026-03-01"))
        );
        assert_eq!(month_of(d("2026-12-31")).2, d("2027-01-01"));
    }
}
