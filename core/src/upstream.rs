//! Canaries of upstream routes (issue 7): a named route of the gateway with a stable and a
//! canary cluster. The gate's configuration lists the routes ([`UpstreamRoute`]: name and path
//! prefix, rendered from `[[upstream]]`); the signed bundle carries each route's canary weight
//! ([`UpstreamSection`], written by the canary controller); the filter assigns each request of a
//! route by a consistent hash ([`crate::bundle::Bundle::upstream_arm`]) and sets
//! [`H_UPSTREAM`], which the rendered route matches to pick the canary cluster.
//!
//! Why weights in the bundle rather than Envoy's RDS/RTDS: every Envoy already polls the signed
//! bundle, so a weight change (and a rollback) reaches all of them within one poll interval
//! without a second xDS server, and the hash keeps a tenant on one cluster (Envoy's weighted
//! clusters draw per request).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The request header the gate sets (`canary` or `stable`); a client copy is removed first,
/// like every `x-kakeya-*` header, so a client cannot pick the canary.
pub const H_UPSTREAM: &str = "x-kakeya-upstream";

/// Longest route name.
pub const MAX_NAME_CHARS: usize = 64;

/// A route name: 1..=64 characters of `A-Z a-z 0-9 _` (it is part of Envoy cluster names).
pub fn valid_name(name: &str) -> bool {
    (1..=MAX_NAME_CHARS).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// One upstream route as the gate knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamRoute {
    pub name: String,
    /// Path prefix of the route (starts with `/`).
    pub prefix: String,
}

impl UpstreamRoute {
    pub fn validate(&self) -> Result<(), String> {
        if !valid_name(&self.name) {
            return Err(format!(
                "upstream name {:?} must be 1..={MAX_NAME_CHARS} characters of A-Z a-z 0-9 _",
                self.name
            ));
        }
        if !self.prefix.starts_with('/') || self.prefix.len() > 256 {
            return Err(format!(
                "upstream {}: prefix {:?} must start with / (at most 256 bytes)",
                self.name, self.prefix
            ));
        }
        Ok(())
    }
}

/// The first route whose prefix `path` starts with (the routes are rendered in this order, so
/// Envoy picks the same one).
pub fn route_of<'a>(routes: &'a [UpstreamRoute], path: &[u8]) -> Option<&'a UpstreamRoute> {
    routes
        .iter()
        .find(|r| path.starts_with(r.prefix.as_bytes()))
}

/// What a route's hash is keyed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamKey {
    /// The tenant (`x-tenant-id`, `default` without it): a tenant stays on one cluster.
    #[default]
    Tenant,
    /// `tenant/x-request-id`: requests split by the weight (a retry with the same id stays).
    Request,
}

impl UpstreamKey {
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamKey::Tenant => "tenant",
            UpstreamKey::Request => "request",
        }
    }

    pub fn parse(s: &str) -> Option<UpstreamKey> {
        [UpstreamKey::Tenant, UpstreamKey::Request]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

/// One route's canary in the bundle.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamCanary {
    /// Share of units (0..=1, finite) sent to the canary cluster.
    pub canary_weight: f64,
    #[serde(default)]
    pub key: UpstreamKey,
    /// The cluster that serves as the route's stable one: `stable` as rendered (left out of the
    /// bundle), or `canary` once a canary of the route was promoted (blue/green: the other
    /// cluster then takes `canary_weight`, and its backend the route's next canary).
    #[serde(default, skip_serializing_if = "UpstreamArm::is_stable")]
    pub stable_cluster: UpstreamArm,
}

impl UpstreamCanary {
    /// The cluster a unit goes to: the canary side (the cluster that is not
    /// [`Self::stable_cluster`]) when `on_canary`, else the stable one.
    pub fn cluster(&self, on_canary: bool) -> UpstreamArm {
        if on_canary {
            self.stable_cluster.other()
        } else {
            self.stable_cluster
        }
    }
}

/// The bundle's `upstreams`: route name → its canary. A route not listed sends everything to
/// its stable cluster.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UpstreamSection(pub BTreeMap<String, UpstreamCanary>);

impl UpstreamSection {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn get(&self, route: &str) -> Option<&UpstreamCanary> {
        self.0.get(route)
    }

    pub fn validate(&self) -> Result<(), String> {
        for (name, c) in &self.0 {
            if !valid_name(name) {
                return Err(format!("upstream name {:?} is not valid", name));
            }
            // `contains` is false for NaN.
            if !(0.0..=1.0).contains(&c.canary_weight) {
                return Err(format!(
                    "upstream {name}: canary_weight must be a finite number within [0, 1]"
                ));
            }
        }
        Ok(())
    }
}

/// Which cluster of a route serves a request (`kakeya_up_<name>_stable` or `_canary`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamArm {
    #[default]
    Stable,
    Canary,
}

impl UpstreamArm {
    pub fn is_stable(&self) -> bool {
        *self == UpstreamArm::Stable
    }

    /// The route's other cluster.
    pub fn other(self) -> UpstreamArm {
        match self {
            UpstreamArm::Stable => UpstreamArm::Canary,
            UpstreamArm::Canary => UpstreamArm::Stable,
        }
    }

    pub fn parse(s: &str) -> Option<UpstreamArm> {
        [UpstreamArm::Stable, UpstreamArm::Canary]
            .into_iter()
            .find(|a| a.as_str() == s)
    }

    /// The value of [`H_UPSTREAM`].
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamArm::Stable => "stable",
            UpstreamArm::Canary => "canary",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_names_and_weights_are_checked() {
        let r = |n: &str, p: &str| UpstreamRoute {
            name: n.into(),
            prefix: p.into(),
        };
        assert!(r("agent_1", "/agent/").validate().is_ok());
        assert!(r("bad-name", "/a").validate().is_err());
        assert!(r("", "/a").validate().is_err());
        assert!(r("a", "agent").validate().is_err());
        let routes = [r("a", "/agent/v2/"), r("b", "/agent/")];
        assert_eq!(route_of(&routes, b"/agent/v2/x").unwrap().name, "a");
        assert_eq!(route_of(&routes, b"/agent/x").unwrap().name, "b");
        assert!(route_of(&routes, b"/other").is_none());
        let mut s = UpstreamSection::default();
        s.0.insert(
            "a".into(),
            UpstreamCanary {
                canary_weight: 0.5,
                key: UpstreamKey::Tenant,
                stable_cluster: UpstreamArm::Stable,
            },
        );
        assert!(s.validate().is_ok());
        for w in [f64::NAN, -0.1, 1.5, f64::INFINITY] {
            s.0.get_mut("a").unwrap().canary_weight = w;
            assert!(s.validate().is_err(), "{w}");
        }
        // The key defaults to the tenant.
        let c: UpstreamCanary = serde_json::from_str(r#"{"canary_weight":0.1}"#).unwrap();
        assert_eq!(c.key, UpstreamKey::Tenant);
        assert_eq!(UpstreamKey::parse("request"), Some(UpstreamKey::Request));
        // The stable cluster defaults to `stable` and is left out of the bundle's bytes then;
        // a promoted route's stable cluster is the canary one, its canary side the other.
        assert_eq!(c.stable_cluster, UpstreamArm::Stable);
        assert_eq!(
            serde_json::to_string(&c).unwrap(),
            r#"{"canary_weight":0.1,"key":"tenant"}"#
        );
        assert_eq!(
            (c.cluster(false), c.cluster(true)),
            (UpstreamArm::Stable, UpstreamArm::Canary)
        );
        let swapped: UpstreamCanary =
            serde_json::from_str(r#"{"canary_weight":0,"stable_cluster":"canary"}"#).unwrap();
        assert_eq!(
            (swapped.cluster(false), swapped.cluster(true)),
            (UpstreamArm::Canary, UpstreamArm::Stable)
        );
        assert_eq!(UpstreamArm::parse("canary"), Some(UpstreamArm::Canary));
    }
}
