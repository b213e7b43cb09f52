//! Upstream routes (issue 7, [`kakeya_core::upstream`]): a request under a configured route's
//! prefix goes to that route's stable or canary cluster, by the consistent hash of the current
//! bundle ([`kakeya_core::bundle::Bundle::upstream_arm`]). The gate sets
//! [`H_UPSTREAM`] (the client's copy is already removed, with every `x-kakeya-*` header) and
//! calls Envoy's `clear_route_cache` foreign function: a filter's header change no longer
//! re-picks the route by itself (Envoy PR #36671), and an earlier filter (the local rate limit
//! reads its per-route configuration) may have cached the route for the client's headers.
//!
//! A failure never traps and never picks the canary: the header is removed again and the
//! request goes to stable (counted in [`ERRORS_METRIC`]). Only when the client had sent its own
//! `x-kakeya-upstream` (so a route cached before the gate may be the canary one) and the cache
//! cannot be cleared does the request fail closed (the caller answers 503).

use crate::host;
use crate::root::{bump_global, Shared};
use kakeya_core::upstream::{route_of, UpstreamArm, H_UPSTREAM};
use proxy_wasm::types::MapType;

/// Requests of upstream routes sent to the canary cluster.
pub const CANARY_METRIC: &str = "kakeya_gate.upstream_canary_total";
/// Requests of upstream routes sent to the stable cluster.
pub const STABLE_METRIC: &str = "kakeya_gate.upstream_stable_total";
/// Requests whose assignment could not be applied (sent to stable, or refused: see the module
/// docs).
pub const ERRORS_METRIC: &str = "kakeya_gate.upstream_route_errors_total";
/// Envoy's foreign function that makes the router re-pick the route.
pub const CLEAR_ROUTE_CACHE: &str = "clear_route_cache";

/// The counters' ids, defined once per VM when routes are configured.
#[derive(Debug, Clone, Copy, Default)]
pub struct Metrics {
    pub canary: Option<u32>,
    pub stable: Option<u32>,
    pub errors: Option<u32>,
}

impl Metrics {
    pub fn define() -> Self {
        Metrics {
            canary: host::define_counter(CANARY_METRIC).ok(),
            stable: host::define_counter(STABLE_METRIC).ok(),
            errors: host::define_counter(ERRORS_METRIC).ok(),
        }
    }
}

/// What the caller does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routed {
    /// Not an upstream route, or routed (to either cluster): continue.
    Continue,
    /// The route cache could not be cleared after a client sent its own header: fail closed.
    Unavailable(host::HostStatus),
}

fn value<'a>(headers: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a [u8]> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_slice())
}

/// Assigns the request (its headers as received, before stripping) to a cluster of its route.
pub fn route(shared: &Shared, headers: &[(String, Vec<u8>)]) -> Routed {
    let path = value(headers, ":path").unwrap_or_default();
    let Some(r) = route_of(&shared.gate.upstreams, path) else {
        return Routed::Continue;
    };
    let client_sent = value(headers, H_UPSTREAM).is_some();
    let tenant = value(headers, kakeya_core::signature::TENANT_HEADER)
        .and_then(|v| core::str::from_utf8(v).ok())
        .filter(|t| !t.is_empty())
        .unwrap_or(kakeya_core::signature::DEFAULT_TENANT);
    let request_id = value(headers, "x-request-id")
        .and_then(|v| core::str::from_utf8(v).ok())
        .unwrap_or_default();
    let arm = shared.current_bundle().map_or(UpstreamArm::Stable, |b| {
        b.upstream_arm(&r.name, tenant, request_id)
    });
    let m = shared.upstream_metrics;
    let applied = host::set_map_value(MapType::HttpRequestHeaders, H_UPSTREAM, arm.as_str())
        .and_then(|()| host::call_foreign_function(CLEAR_ROUTE_CACHE, &[]).map(|_| ()));
    match applied {
        Ok(()) => {
            let (id, name) = match arm {
                UpstreamArm::Canary => (m.canary, CANARY_METRIC),
                UpstreamArm::Stable => (m.stable, STABLE_METRIC),
            };
            bump_global(id, name);
            Routed::Continue
        }
        Err(e) => {
            bump_global(m.errors, ERRORS_METRIC);
            // Without the header the route is the stable one (best effort: a failure here
            // leaves at worst the header the route cache did not see).
            let _ = host::remove_map_value(MapType::HttpRequestHeaders, H_UPSTREAM);
            if client_sent {
                Routed::Unavailable(e)
            } else {
                bump_global(m.stable, STABLE_METRIC);
                Routed::Continue
            }
        }
    }
}
