//! Root context: parses the plugin configuration once per configuration (Envoy creates a new
//! root context for every new configuration), defines the metrics, and hands each HTTP context
//! a shared reference to both.

use crate::host;
use crate::metrics::{tenant_label, MetricHost, Metrics, OTHER_TENANT};
use crate::request::GateRequest;
use kakeya_core::signature::DEFAULT_TENANT;
use kakeya_core::Gate;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{BufferType, ContextType};
use std::cell::RefCell;
use std::rc::Rc;

/// Counter of requests answered 503 `gate_unavailable` because a hostcall failed (no tenant
/// label: the tenant may be unknown then). Prometheus: `kakeya_gate_unavailable_total`.
pub const UNAVAILABLE_METRIC: &str = "kakeya_gate.unavailable_total";

/// What every request of one configuration shares.
pub struct Shared {
    pub gate: Gate,
    pub metrics: RefCell<Metrics>,
    /// Id of [`UNAVAILABLE_METRIC`] (`None` if defining it failed; requests retry then).
    pub unavailable: Option<u32>,
}

/// [`MetricHost`] over Envoy's stats hostcalls.
pub struct EnvoyMetrics;

impl MetricHost for EnvoyMetrics {
    fn define_counter(&mut self, name: &str) -> Result<u32, String> {
        host::define_counter(name).map_err(|e| e.to_string())
    }
    fn increment(&mut self, id: u32, by: i64) -> Result<(), String> {
        host::increment(id, by).map_err(|e| e.to_string())
    }
    fn warn(&mut self, msg: &str) {
        log::warn!("{msg}");
    }
}

pub struct GateRoot {
    shared: Option<Rc<Shared>>,
}

impl GateRoot {
    pub fn new(_context_id: u32) -> Self {
        GateRoot { shared: None }
    }
}

impl Context for GateRoot {}

impl RootContext for GateRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        // Raw hostcall: the trait's get_plugin_configuration() unwraps and the SDK's
        // hostcalls::get_buffer panics on an unexpected status.
        let bytes = match host::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX) {
            Ok(b) => b,
            Err(status) => {
                log::error!(
                    "kakeya-gate: cannot read the plugin configuration: {status}; refusing it"
                );
                return false;
            }
        };
        // An empty configuration is refused too (not JSON): the operator must at least say `{}`,
        // which means "no signature checks", explicitly.
        let gate = match Gate::from_json(&bytes) {
            Ok(g) => g,
            Err(e) => {
                log::error!("kakeya-gate: invalid plugin configuration, refusing it: {e}");
                return false;
            }
        };
        if gate.keyring.multi_tenant() {
            log::info!("kakeya-gate: configured (multi-tenant keyring)");
        } else {
            match gate.keyring.verifier_for(DEFAULT_TENANT) {
                Ok(v) if v.is_none() => {
                    log::warn!("kakeya-gate: configured with signature algorithm none: PCS signatures are NOT checked")
                }
                _ => log::info!("kakeya-gate: configured (single-tenant keyring)"),
            }
        }
        let mut metrics = Metrics::default();
        let mut host = EnvoyMetrics;
        metrics.ensure(&mut host, tenant_label(&gate.keyring, Some(DEFAULT_TENANT)));
        metrics.ensure(&mut host, OTHER_TENANT);
        let unavailable = match host::define_counter(UNAVAILABLE_METRIC) {
            Ok(id) => Some(id),
            Err(e) => {
                log::warn!("kakeya-gate: cannot define {UNAVAILABLE_METRIC}: {e}");
                None
            }
        };
        self.shared = Some(Rc::new(Shared {
            gate,
            metrics: RefCell::new(metrics),
            unavailable,
        }));
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(GateRequest::new(self.shared.clone())))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
