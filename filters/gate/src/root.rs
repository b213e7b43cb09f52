//! Root context: parses the plugin configuration once per configuration (Envoy creates a new
//! root context for every new configuration), defines the metrics, and hands each HTTP context
//! a shared reference to both. With a bundle source it also polls the control plane for the
//! model bundle (one VM per interval, see [`crate::bundle`]).

use crate::bundle::{
    self, BundleCache, PollVerdict, BUNDLE_KEY, CAS_RETRIES, FIRST_TICK_MS, LEASE_KEY, STAMP_KEY,
};
use crate::host;
use crate::metrics::{tenant_label, MetricHost, Metrics, OTHER_TENANT};
use crate::request::GateRequest;
use kakeya_core::bundle::{Scorer, H_SHA256, H_SIGNATURE};
use kakeya_core::signature::DEFAULT_TENANT;
use kakeya_core::Gate;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{BufferType, ContextType, MapType};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

/// Counter of submissions answered "unavailable, retry": 503 `gate_unavailable` because a
/// hostcall failed, and forwarded ones answered 503/504 (the control plane down, failing or
/// slower than the route timeout). No tenant label: the tenant may be unknown then.
/// Prometheus: `kakeya_gate_unavailable_total`. The closed-mode 503 `no_bundle` is counted in
/// `no_bundle_total` instead.
pub const UNAVAILABLE_METRIC: &str = "kakeya_gate.unavailable_total";
/// Bundles refused (bad digest or signature, schema-incompatible, not newer, poll failures).
pub const BUNDLE_REFUSED_METRIC: &str = "kakeya_gate.bundle_refused_total";
/// Bundle polls that failed in transport (dispatch error, timeout, non-200/304 status).
pub const BUNDLE_POLL_ERRORS_METRIC: &str = "kakeya_gate.bundle_poll_errors_total";
/// Bundles this VM wrote into shared data.
pub const BUNDLE_UPDATES_METRIC: &str = "kakeya_gate.bundle_updates_total";

/// What every request of one configuration shares.
pub struct Shared {
    pub gate: Gate,
    pub metrics: RefCell<Metrics>,
    /// Id of [`UNAVAILABLE_METRIC`] (`None` if defining it failed; requests retry then).
    pub unavailable: Option<u32>,
    /// This VM's view of the shared model bundle.
    pub bundle: RefCell<BundleCache>,
    pub bundle_refused: Option<u32>,
    pub bundle_poll_errors: Option<u32>,
    pub bundle_updates: Option<u32>,
    /// The micro-vote cache and the ensemble's stats (per worker).
    pub ensemble: RefCell<crate::callout::Stats>,
    /// Counters of the upstream routes (undefined without `upstreams`).
    pub upstream_metrics: crate::upstream::Metrics,
}

/// Adds 1 to a global counter (logged, never fatal).
pub fn bump_global(id: Option<u32>, name: &str) {
    let id = id.or_else(|| host::define_counter(name).ok());
    match id {
        Some(id) => {
            if let Err(e) = host::increment(id, 1) {
                log::warn!("kakeya-gate: cannot count {name}: {e}");
            }
        }
        None => log::warn!("kakeya-gate: cannot define {name}"),
    }
}

impl Shared {
    /// The bundle to score the current request with: reads only the small shared stamp (one
    /// hostcall, a few dozen bytes) and looks at the full entry only when the stamp changed.
    /// `None` without a bundle source or while no valid bundle exists. A failed hostcall keeps
    /// the cached bundle.
    pub fn current_bundle(&self) -> Option<Rc<Scorer>> {
        self.gate.bundle.as_ref()?;
        let Ok(mut cache) = self.bundle.try_borrow_mut() else {
            return None;
        };
        match host::get_shared_data(STAMP_KEY) {
            Ok(Some((stamp, _))) => {
                if cache.stamp_changed(&stamp) {
                    self.sync_entry(&mut cache);
                }
            }
            Ok(None) => {}
            Err(e) => log::warn!("kakeya-gate: cannot read shared data {STAMP_KEY}: {e}"),
        }
        cache.current()
    }

    /// As [`Self::current_bundle`], but looks at the full entry whatever the stamp says (the
    /// tick path: catches up even when a stamp write was lost).
    pub fn sync_bundle(&self) -> Option<Rc<Scorer>> {
        self.gate.bundle.as_ref()?;
        let Ok(mut cache) = self.bundle.try_borrow_mut() else {
            return None;
        };
        self.sync_entry(&mut cache);
        cache.current()
    }

    /// Reads the shared entry and re-verifies it when its CAS changed.
    fn sync_entry(&self, cache: &mut BundleCache) {
        let Some(source) = self.gate.bundle.as_ref() else {
            return;
        };
        match host::get_shared_data(BUNDLE_KEY) {
            Ok(Some((raw, cas))) if !cache.is_current(cas) => {
                match cache.refresh(&raw, cas, &source.public_keys) {
                    Ok(true) => {
                        if let Some(b) = cache.current() {
                            log::info!(
                                "kakeya-gate: now scoring with bundle version {} (champion {})",
                                b.version,
                                b.champion.version()
                            );
                        }
                    }
                    Ok(false) => {}
                    Err(reason) => {
                        log::warn!(
                            "kakeya-gate: shared model bundle refused, keeping the last good one: {reason}"
                        );
                        bump_global(self.bundle_refused, BUNDLE_REFUSED_METRIC);
                    }
                }
            }
            Ok(_) => {}
            Err(e) => log::warn!("kakeya-gate: cannot read shared data {BUNDLE_KEY}: {e}"),
        }
    }
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
    /// Token and dispatch time (ns) of the poll in flight.
    in_flight: Option<(u32, u64)>,
    /// The configured poll period (ms), still to be set after the short first tick.
    pending_period_ms: Option<u32>,
}

impl GateRoot {
    pub fn new(_context_id: u32) -> Self {
        GateRoot {
            shared: None,
            in_flight: None,
            pending_period_ms: None,
        }
    }

    fn refused(&self, reason: &str, transport: bool) {
        log::warn!("kakeya-gate: model bundle refused, keeping the last good one: {reason}");
        let Some(shared) = &self.shared else { return };
        bump_global(shared.bundle_refused, BUNDLE_REFUSED_METRIC);
        if transport {
            bump_global(shared.bundle_poll_errors, BUNDLE_POLL_ERRORS_METRIC);
        }
    }

    /// One poll per interval across the VMs: only the holder of the lease polls.
    fn poll(&mut self) {
        let Some(shared) = self.shared.clone() else {
            return;
        };
        let Some(source) = &shared.gate.bundle else {
            return;
        };
        // Every VM ticks: pick up a bundle another VM stored here, off the request path.
        let _ = shared.sync_bundle();
        let Ok(now) = host::now_ns() else { return };
        if let Some((_, since)) = self.in_flight {
            // Envoy always answers a callout (a timeout is a response without headers); this
            // only guards against a lost one.
            let limit = source.timeout_ms.saturating_mul(2_000_000);
            if now.saturating_sub(since) < limit {
                return;
            }
            self.in_flight = None;
        }
        let lease = match host::get_shared_data(LEASE_KEY) {
            Ok(l) => l,
            Err(e) => {
                log::warn!("kakeya-gate: cannot read {LEASE_KEY}: {e}");
                return;
            }
        };
        if !bundle::lease_free(lease.as_ref().map(|(v, _)| v.as_slice()), now) {
            return;
        }
        let cas = lease.map_or(0, |(_, cas)| cas);
        let expiry = now.saturating_add(bundle::lease_ns(source.poll_interval_ms));
        if host::set_shared_data(LEASE_KEY, &bundle::lease_value(expiry), cas).is_err() {
            // Another VM took it first (CasMismatch) or shared data failed: not our turn.
            return;
        }
        let stored = match host::get_shared_data(BUNDLE_KEY) {
            Ok(s) => s,
            Err(e) => {
                log::warn!("kakeya-gate: cannot read shared data {BUNDLE_KEY}: {e}");
                None
            }
        };
        let etag = stored
            .as_ref()
            .and_then(|(raw, _)| bundle::decode_entry(raw))
            .map(|e| format!("\"{}\"", e.sha256));
        let mut headers = vec![
            (":method", "GET"),
            (":path", source.path.as_str()),
            (":authority", source.authority.as_str()),
        ];
        if let Some(etag) = &etag {
            headers.push(("if-none-match", etag.as_str()));
        }
        match self.dispatch_http_call(
            &source.cluster,
            headers,
            None,
            Vec::new(),
            Duration::from_millis(source.timeout_ms),
        ) {
            Ok(token) => self.in_flight = Some((token, now)),
            Err(status) => self.refused(
                &format!(
                    "cannot dispatch the bundle poll to cluster {}: {status:?}",
                    source.cluster
                ),
                true,
            ),
        }
    }

    fn on_poll_response(&mut self, body_size: usize) {
        let Some(shared) = self.shared.clone() else {
            return;
        };
        let Some(source) = &shared.gate.bundle else {
            return;
        };
        // A timeout or reset comes without headers: no :status, counted as a transport error.
        let headers = host::get_map(MapType::HttpCallResponseHeaders).unwrap_or_default();
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .and_then(|(_, v)| core::str::from_utf8(v).ok())
        };
        let status = header(":status").and_then(|s| s.trim().parse::<u32>().ok());
        let body = if body_size == 0 {
            Vec::new()
        } else {
            host::get_buffer(BufferType::HttpCallResponseBody, 0, body_size).unwrap_or_default()
        };
        let stored = host::get_shared_data(BUNDLE_KEY).ok().flatten();
        let stored_entry = stored
            .as_ref()
            .and_then(|(raw, _)| bundle::decode_entry(raw));
        let (sha, sig) = (header(H_SHA256), header(H_SIGNATURE));
        let verdict = bundle::judge_response(
            status,
            sha,
            sig,
            &body,
            &source.public_keys,
            stored_entry.as_ref(),
        );
        let version = match verdict {
            PollVerdict::NotModified | PollVerdict::Unchanged => return,
            PollVerdict::Refused { reason, transport } => return self.refused(&reason, transport),
            PollVerdict::Install { version } => version,
        };
        let (sha, sig) = (
            sha.unwrap_or_default().trim().to_ascii_lowercase(),
            sig.unwrap_or_default().trim(),
        );
        let entry = bundle::encode_entry(version, &sha, sig, &body);
        let mut cas = stored.map_or(0, |(_, cas)| cas);
        for _ in 0..CAS_RETRIES {
            match host::set_shared_data(BUNDLE_KEY, &entry, cas) {
                Ok(()) => {
                    log::info!("kakeya-gate: installed model bundle version {version} ({sha})");
                    bump_global(shared.bundle_updates, BUNDLE_UPDATES_METRIC);
                    // The stamp after the entry: a request that sees it finds the entry there.
                    let stamp = bundle::stamp_value(version, &sha);
                    if let Err(e) = host::set_shared_data(STAMP_KEY, &stamp, 0) {
                        log::warn!(
                            "kakeya-gate: cannot write shared data {STAMP_KEY}: {e}; other VMs pick the bundle up on their next tick"
                        );
                    }
                    let _ = shared.sync_bundle();
                    return;
                }
                Err(host::HostStatus(host::STATUS_CAS_MISMATCH)) => {
                    // Someone else wrote meanwhile: compare again with what is there now.
                    let now = host::get_shared_data(BUNDLE_KEY).ok().flatten();
                    let verdict = bundle::compare_with_stored(
                        now.as_ref()
                            .and_then(|(raw, _)| bundle::decode_entry(raw))
                            .as_ref(),
                        &sha,
                        version,
                    );
                    match verdict {
                        PollVerdict::Install { .. } => cas = now.map_or(0, |(_, cas)| cas),
                        PollVerdict::Refused { reason, transport } => {
                            return self.refused(&reason, transport)
                        }
                        _ => return,
                    }
                }
                Err(e) => {
                    return self.refused(
                        &format!("cannot write shared data {BUNDLE_KEY}: {e}"),
                        false,
                    )
                }
            }
        }
        log::warn!("kakeya-gate: bundle version {version} not stored: too many CAS conflicts");
    }
}

impl Context for GateRoot {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        _num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        match self.in_flight {
            Some((t, _)) if t == token_id => self.in_flight = None,
            _ => return,
        }
        self.on_poll_response(body_size);
    }
}

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
        // `keyring_env` names a variable of the VM's environment (WASI `environ_get`; Envoy
        // fills it from `vm_config.environment_variables`), so HMAC keys stay out of the
        // plugin configuration and out of Envoy's config dump.
        let gate = match Gate::from_json_with_env(&bytes, &|name| std::env::var(name).ok()) {
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
        let define = |name: &str| match host::define_counter(name) {
            Ok(id) => Some(id),
            Err(e) => {
                log::warn!("kakeya-gate: cannot define {name}: {e}");
                None
            }
        };
        let (mut bundle_refused, mut bundle_poll_errors, mut bundle_updates) = (None, None, None);
        if let Some(source) = &gate.bundle {
            bundle_refused = define(BUNDLE_REFUSED_METRIC);
            bundle_poll_errors = define(BUNDLE_POLL_ERRORS_METRIC);
            bundle_updates = define(BUNDLE_UPDATES_METRIC);
            let ms = u32::try_from(source.poll_interval_ms).unwrap_or(u32::MAX);
            // A short first tick polls right after a cold start; that tick sets the period.
            let first = FIRST_TICK_MS.min(ms);
            if let Err(e) = host::set_tick_period_ms(first) {
                log::error!("kakeya-gate: cannot set the bundle poll period: {e}; refusing the configuration");
                return false;
            }
            self.pending_period_ms = (first != ms).then_some(ms);
            log::info!(
                "kakeya-gate: polling {} on cluster {} every {} ms ({:?} without a bundle)",
                source.path,
                source.cluster,
                source.poll_interval_ms,
                source.failure_mode
            );
        }
        let upstream_metrics = if gate.upstreams.is_empty() {
            crate::upstream::Metrics::default()
        } else {
            crate::upstream::Metrics::define()
        };
        self.shared = Some(Rc::new(Shared {
            gate,
            metrics: RefCell::new(metrics),
            unavailable,
            bundle: RefCell::new(BundleCache::default()),
            bundle_refused,
            bundle_poll_errors,
            bundle_updates,
            ensemble: RefCell::new(crate::callout::Stats::default()),
            upstream_metrics,
        }));
        true
    }

    fn on_tick(&mut self) {
        if let Some(ms) = self.pending_period_ms {
            match host::set_tick_period_ms(ms) {
                Ok(()) => self.pending_period_ms = None,
                // Kept pending: the next (short) tick tries again.
                Err(e) => log::warn!("kakeya-gate: cannot set the bundle poll period: {e}"),
            }
        }
        self.poll();
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(GateRequest::new(self.shared.clone())))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
