//! Envoy stats of the gate: counters `kakeya_gate.tenant.<tenant>.<name>`.
//!
//! Envoy's bootstrap extracts `<tenant>` as a tag (`stats_tags` regex on
//! `^kakeya_gate\.tenant\.([^.]+)\.`), so Prometheus shows e.g.
//! `kakeya_gate_signature_errors_total{tenant="acme"}`. The per-arm counters are named
//! `kakeya_gate.tenant.<tenant>.arm.<arm>.scored_by_arm_total`, and a second tag takes `<arm>`:
//! `kakeya_gate_scored_by_arm_total{tenant="acme",arm="canary"}`. Cardinality is bounded: only tenants the
//! keyring knows get their own series, every other id is counted as `other`. Ids are defined
//! lazily once per (tenant, counter) and cached; a failed definition is logged once and the
//! counter is skipped, never a panic.

use kakeya_core::budget::BudgetAction;
use kakeya_core::bundle::Arm;
use kakeya_core::signature::DEFAULT_TENANT;
use kakeya_core::Keyring;
use std::collections::BTreeMap;

/// The counters, in a fixed order (index into [`TenantIds`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    /// Submit requests that reached the gate (after Envoy's rate limit and body limit).
    Requests,
    ParseErrors,
    SignatureErrors,
    UnknownTenant,
    /// Sent on to the control plane.
    Forwarded,
    /// Forwarded submissions the client got a 200 for (counted from the response, so a dedup
    /// hit counts as what it returned).
    Accepted,
    /// Forwarded submissions the client got a 202 for (likewise from the response).
    Escalated,
    MethodNotAllowed,
    /// A model bundle scored the request.
    Scored,
    /// Scored at or above the model's escalation threshold.
    HighRisk,
    /// Evidence not bound to the signature (400 `evidence_unbound` / 401 `evidence_mismatch`), or
    /// signed by `evidence_sha256` but stripped from the request (400 `evidence_missing`).
    EvidenceErrors,
    /// Needed a model bundle and none was valid: 503 `no_bundle` (failure mode `closed`), or a
    /// fresh 202 escalated for review (`open`; a dedup hit is not counted).
    NoBundle,
    /// 415 `unsupported_media_type`: a content type other than `application/json`.
    UnsupportedMediaType,
    /// Scored by the champion, the challenger or the canary (tag `arm`).
    ScoredChampion,
    ScoredChallenger,
    ScoredCanary,
    /// Served under the tenant's budget action `alert` (as usual, flagged to the control plane).
    BudgetAlert,
    /// Served under `degrade`: the micro-vote skipped.
    BudgetDegraded,
    /// 429 `budget_throttled`.
    BudgetThrottled,
    /// 402 `budget_exceeded`.
    BudgetDenied,
    /// Forwarded with an anomaly score at or above the tenant's threshold (shadow, guardrail).
    AnomalyFlagged,
    /// 403 `anomaly_blocked`.
    AnomalyBlocked,
}

pub const ALL: [Counter; 22] = [
    Counter::Requests,
    Counter::ParseErrors,
    Counter::SignatureErrors,
    Counter::UnknownTenant,
    Counter::Forwarded,
    Counter::Accepted,
    Counter::Escalated,
    Counter::MethodNotAllowed,
    Counter::Scored,
    Counter::HighRisk,
    Counter::EvidenceErrors,
    Counter::NoBundle,
    Counter::UnsupportedMediaType,
    Counter::ScoredChampion,
    Counter::ScoredChallenger,
    Counter::ScoredCanary,
    Counter::BudgetAlert,
    Counter::BudgetDegraded,
    Counter::BudgetThrottled,
    Counter::BudgetDenied,
    Counter::AnomalyFlagged,
    Counter::AnomalyBlocked,
];

impl Counter {
    pub fn name(self) -> &'static str {
        match self {
            Counter::Requests => "requests_total",
            Counter::ParseErrors => "parse_errors_total",
            Counter::SignatureErrors => "signature_errors_total",
            Counter::UnknownTenant => "unknown_tenant_total",
            Counter::Forwarded => "forwarded_total",
            Counter::Accepted => "accepted_total",
            Counter::Escalated => "escalated_total",
            Counter::MethodNotAllowed => "method_not_allowed_total",
            Counter::Scored => "scored_total",
            Counter::HighRisk => "high_risk_total",
            Counter::EvidenceErrors => "evidence_errors_total",
            Counter::NoBundle => "no_bundle_total",
            Counter::UnsupportedMediaType => "unsupported_media_type_total",
            Counter::ScoredChampion => "arm.champion.scored_by_arm_total",
            Counter::ScoredChallenger => "arm.challenger.scored_by_arm_total",
            Counter::ScoredCanary => "arm.canary.scored_by_arm_total",
            Counter::BudgetAlert => "budget_alert_total",
            Counter::BudgetDegraded => "budget_degraded_total",
            Counter::BudgetThrottled => "budget_throttled_total",
            Counter::BudgetDenied => "budget_denied_total",
            Counter::AnomalyFlagged => "anomaly_flagged_total",
            Counter::AnomalyBlocked => "anomaly_blocked_total",
        }
    }

    /// The budget counter of a request served under `action` (`None` without one).
    pub fn budget(action: BudgetAction) -> Option<Counter> {
        match action {
            BudgetAction::None => None,
            BudgetAction::Alert => Some(Counter::BudgetAlert),
            BudgetAction::Degrade => Some(Counter::BudgetDegraded),
            BudgetAction::Throttle => Some(Counter::BudgetThrottled),
            BudgetAction::Deny => Some(Counter::BudgetDenied),
        }
    }

    /// The per-arm counter of a request scored by `arm`.
    pub fn scored_by(arm: Arm) -> Counter {
        match arm {
            Arm::Champion => Counter::ScoredChampion,
            Arm::Challenger => Counter::ScoredChallenger,
            Arm::Canary => Counter::ScoredCanary,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Tenant label for metrics when the tenant is not known to the keyring.
pub const OTHER_TENANT: &str = "other";

/// The label a request's tenant is counted under. Multi-tenant mode: registered tenants (or
/// `default` when none are registered). Single-tenant mode: only `default`; any other
/// `x-tenant-id` is `other`, since every id would otherwise mint a new series.
pub fn tenant_label<'a>(keyring: &Keyring, tenant: Option<&'a str>) -> &'a str {
    match tenant {
        Some(t) if crate::decide::valid_tenant(t) => {
            let known = if keyring.multi_tenant() {
                keyring.verifier_for(t).is_ok()
            } else {
                t == DEFAULT_TENANT
            };
            if known {
                t
            } else {
                OTHER_TENANT
            }
        }
        _ => OTHER_TENANT,
    }
}

/// Full stat name.
pub fn metric_name(tenant_label: &str, c: Counter) -> String {
    format!("kakeya_gate.tenant.{tenant_label}.{}", c.name())
}

/// Where counters live (Envoy via hostcalls in the filter; a map in tests).
pub trait MetricHost {
    /// Defines a counter, returning its id.
    fn define_counter(&mut self, name: &str) -> Result<u32, String>;
    fn increment(&mut self, id: u32, by: i64) -> Result<(), String>;
    fn warn(&mut self, msg: &str);
}

type TenantIds = [Option<u32>; ALL.len()];

/// Cached counter ids per tenant label. `None` = definition failed (not retried).
#[derive(Debug, Default)]
pub struct Metrics {
    ids: BTreeMap<String, TenantIds>,
}

impl Metrics {
    /// Defines all counters of `label` (once).
    pub fn ensure(&mut self, host: &mut dyn MetricHost, label: &str) -> TenantIds {
        if let Some(ids) = self.ids.get(label) {
            return *ids;
        }
        let mut ids: TenantIds = [None; ALL.len()];
        for c in ALL {
            let name = metric_name(label, c);
            match host.define_counter(&name) {
                Ok(id) => {
                    if let Some(slot) = ids.get_mut(c.index()) {
                        *slot = Some(id);
                    }
                }
                Err(e) => host.warn(&format!("kakeya-gate: cannot define metric {name}: {e}")),
            }
        }
        self.ids.insert(label.to_string(), ids);
        ids
    }

    /// Adds 1 to each counter in `cs` for `label`.
    pub fn bump(&mut self, host: &mut dyn MetricHost, label: &str, cs: &[Counter]) {
        let ids = self.ensure(host, label);
        for c in cs {
            if let Some(Some(id)) = ids.get(c.index()) {
                if let Err(e) = host.increment(*id, 1) {
                    host.warn(&format!(
                        "kakeya-gate: cannot increment {}: {e}",
                        metric_name(label, *c)
                    ));
                }
            }
        }
    }

    pub fn tenants_defined(&self) -> usize {
        self.ids.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kakeya_core::Gate;

    #[derive(Default)]
    struct Fake {
        defined: Vec<String>,
        values: BTreeMap<u32, i64>,
        fail: bool,
        warnings: usize,
    }
    impl MetricHost for Fake {
        fn define_counter(&mut self, name: &str) -> Result<u32, String> {
            if self.fail {
                return Err("nope".into());
            }
            self.defined.push(name.to_string());
            Ok(self.defined.len() as u32 - 1)
        }
        fn increment(&mut self, id: u32, by: i64) -> Result<(), String> {
            *self.values.entry(id).or_default() += by;
            Ok(())
        }
        fn warn(&mut self, _: &str) {
            self.warnings += 1;
        }
    }

    #[test]
    fn labels_are_bounded() {
        let single = Gate::from_json(b"{}").unwrap().keyring;
        assert_eq!(tenant_label(&single, Some("default")), "default");
        assert_eq!(tenant_label(&single, Some("acme")), "other");
        let multi = Gate::from_json(br#"{"keyring":{"multi_tenant":true,"tenants":{"acme":{}}}}"#)
            .unwrap()
            .keyring;
        assert_eq!(tenant_label(&multi, Some("acme")), "acme");
        assert_eq!(tenant_label(&multi, Some("globex")), "other");
        assert_eq!(tenant_label(&multi, Some("bad id")), "other");
        assert_eq!(tenant_label(&multi, None), "other");
    }

    #[test]
    fn defined_once_and_failures_do_not_panic() {
        let mut host = Fake::default();
        let mut m = Metrics::default();
        m.bump(&mut host, "acme", &[Counter::Requests, Counter::Forwarded]);
        m.bump(&mut host, "acme", &[Counter::Requests]);
        assert_eq!(host.defined.len(), ALL.len());
        assert_eq!(host.defined[0], "kakeya_gate.tenant.acme.requests_total");
        assert_eq!(host.values.get(&0), Some(&2));
        assert_eq!(host.values.get(&4), Some(&1));
        let mut broken = Fake {
            fail: true,
            ..Fake::default()
        };
        let mut m = Metrics::default();
        m.bump(&mut broken, "x", &[Counter::Requests]);
        m.bump(&mut broken, "x", &[Counter::Requests]);
        assert_eq!(broken.warnings, ALL.len());
    }
}
