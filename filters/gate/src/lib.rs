//! # kakeya-gate
//!
//! The Envoy proxy-wasm filter in front of `POST /v1/pcs/submit`. It buffers the body, parses the
//! PCS, checks its signature against the tenant's keys and verifies it with `kakeya-core`; a
//! forged or malformed PCS is answered in the proxy (400/401/405), a verified one goes on to the
//! control plane with the outcome in `x-kakeya-*` request headers (client copies are stripped on
//! every path).
//!
//! * [`decide`]: all decisions ([`kakeya_core::pipeline`]), no hostcalls (tested natively).
//! * [`callout`]: the micro-vote callout's cache, answer judging and stat names.
//! * [`bundle`]: model-bundle distribution between VMs (lease, shared-data entry, cache).
//! * [`metrics`]: bounded per-tenant counters.
//! * [`tracer`]: the cost tracer (the filter's own time and micro-vote calls per request).
//! * [`upstream`]: upstream routes, each request to its route's stable or canary cluster.
//! * `root` / `request`: the proxy-wasm root and HTTP contexts (thin).
//! * [`host`]: every hostcall, raw, since the SDK's wrappers panic on an unexpected status. A
//!   failed hostcall on the request path fails closed (503 `gate_unavailable`, `retry-after: 1`).
//!
//! Build: `cargo build -p kakeya-gate --target wasm32-wasip1 --profile wasm`.
//! Envoy needs `allow_on_headers_stop_iteration: true` in the PluginConfig (ecosystem notes §1.5).

// Data plane: no indexing that can panic (`get`, iterators, `split_at_checked` instead).
#![deny(clippy::indexing_slicing)]

pub mod bundle;
pub mod callout;
pub mod chat;
pub mod decide;
pub mod host;
pub mod metrics;
pub mod request;
pub mod root;
pub mod tracer;
pub mod upstream;

#[cfg(target_arch = "wasm32")]
proxy_wasm::main! {{
    proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Info);
    proxy_wasm::set_root_context(|context_id| -> Box<dyn proxy_wasm::traits::RootContext> {
        Box::new(root::GateRoot::new(context_id))
    });
}}
