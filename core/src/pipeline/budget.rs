//! Stage 3a: the tenant's budget action from the bundle ([`crate::budget`]), enforced inline.
//!
//! It runs after the signature and the evidence binding: the tenant id is then the one whose
//! key signed the request, so a forged request (401) or an invalid one (400) keeps its own
//! status and can never be answered, or counted, as another tenant's over-budget request. It
//! runs before verification and scoring, so a denied or throttled tenant costs neither.

use super::reply::LocalReply;
use crate::budget::BudgetAction;
use crate::bundle::Scorer;

/// Decision header naming a served tenant's budget action (`alert` or `degrade`), so the
/// control plane can count it.
pub const H_BUDGET: &str = "x-kakeya-budget";
/// The micro-vote's abstention reason when the tenant's budget degrades it.
pub const DEGRADED_REASON: &str = "budget_degraded";
pub const EXCEEDED_CODE: &str = "budget_exceeded";
pub const THROTTLED_CODE: &str = "budget_throttled";

/// The action in force for `tenant` (none without a bundle), or the local reply of a deny
/// (402 `budget_exceeded`) or a throttle (429 `budget_throttled` with `Retry-After`).
pub fn enforce(tenant: &str, bundle: Option<&Scorer>) -> Result<BudgetAction, LocalReply> {
    let Some(b) = bundle.and_then(|b| b.budgets.tenants.get(tenant)) else {
        return Ok(BudgetAction::None);
    };
    match b.action {
        BudgetAction::Deny => Err(LocalReply::new(
            402,
            EXCEEDED_CODE,
            &format!(
                "tenant {tenant:?} is over its hard budget cap for {}: requests are refused until the month ends or the cap is raised",
                b.month
            ),
        )),
        BudgetAction::Throttle => {
            // At least a second: `Retry-After: 0` would invite an immediate retry loop.
            let retry = b.retry_after_s.max(1);
            let mut r = LocalReply::new(
                429,
                THROTTLED_CODE,
                &format!(
                    "tenant {tenant:?} is over its budget cap for {}: retry after {retry} s",
                    b.month
                ),
            );
            r.headers.push(("retry-after".into(), retry.to_string()));
            Err(r)
        }
        a => Ok(a),
    }
}

/// The [`H_BUDGET`] value of a served request (`None` when no action is in force).
pub fn header_value(action: BudgetAction) -> Option<&'static str> {
    match action {
        BudgetAction::Alert => Some("alert"),
        BudgetAction::Degrade => Some("degrade"),
        BudgetAction::None | BudgetAction::Throttle | BudgetAction::Deny => None,
    }
}
