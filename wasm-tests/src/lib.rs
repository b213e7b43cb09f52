//! # kakeya-wasm-tests
//!
//! A wasmtime host for the built `kakeya_gate.wasm` that implements the proxy-wasm ABI v0.2.1 the
//! way Envoy drives it, with real in-memory header maps, buffers, metrics, shared data (CAS),
//! queues, logs and a real or fixed clock. Tests and the `gate-bench` binary use it to run the
//! exact artefact Envoy loads, without Envoy.
//!
//! ```no_run
//! use kakeya_wasm_tests::{gate_wasm_path, Harness};
//! let mut h = Harness::new(gate_wasm_path()?, br#"{"keyring":{"global":{"alg":"hmac","keys":["k"]}}}"#)?;
//! assert!(h.configured());
//! let out = h.request("POST", "/v1/pcs/submit", &[], b"{}")?;
//! println!("{:?} {:?}", out.status(), h.metrics());
//! # Ok::<(), wasmtime::Error>(())
//! ```
//!
//! The module is **not** built by the tests: `cargo xtask test` builds it first, or run
//! `cargo build -p kakeya-gate --target wasm32-wasip1 --profile wasm`. Its location is
//! `$KAKEYA_GATE_WASM`, else `<CARGO_TARGET_DIR or target>/wasm32-wasip1/wasm/kakeya_gate.wasm`.

pub mod abi;
pub mod audit_bench;
pub mod backend;
pub mod bench;
pub mod bench_doc;
pub mod canary_bench;
pub mod console_figures;
pub mod cost_bench;
pub mod drift_steps;
pub mod ensemble;
pub mod ensemble_bench;
pub mod fit_bench;
pub mod fixtures;
pub mod floor_bench;
pub mod llm_upstream;
pub mod load;
pub mod scored;
pub mod stack;
pub mod state;

pub use state::{Clock, HttpCall, LogEntry, LogLevel, Metric, MetricKind, SentReply, SharedStore};

use state::{buffer_type, map_type, HostState};
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;
use wasmtime::{format_err, Engine, Instance, Linker, Module, Result, Store, TypedFunc};

/// `Action` returned by the stream callbacks.
pub const ACTION_CONTINUE: i32 = 0;
pub const ACTION_PAUSE: i32 = 1;
const STREAM_HTTP_REQUEST: i32 = 0;
const ROOT_CONTEXT_ID: i32 = 1;

/// Where the gate module is expected (see the crate docs).
pub fn gate_wasm_path() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("KAKEYA_GATE_WASM") {
        return Ok(PathBuf::from(p));
    }
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(t) => PathBuf::from(t),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("target"),
    };
    Ok(target
        .join("wasm32-wasip1")
        .join("wasm")
        .join("kakeya_gate.wasm"))
}

/// Reads the gate module or fails with the command that builds it.
pub fn load_gate_wasm() -> Result<Vec<u8>> {
    let path = gate_wasm_path()?;
    std::fs::read(&path).map_err(|e| {
        format_err!(
            "cannot read the gate module at {} ({e}); build it with \
             `cargo build -p kakeya-gate --target wasm32-wasip1 --profile wasm` \
             (same CARGO_TARGET_DIR) or `cargo xtask test`, or point KAKEYA_GATE_WASM at it",
            path.display()
        )
    })
}

/// The module bytes, or a path to them.
pub enum WasmSource<'a> {
    Bytes(&'a [u8]),
    Path(PathBuf),
}

impl<'a> From<&'a [u8]> for WasmSource<'a> {
    fn from(b: &'a [u8]) -> Self {
        WasmSource::Bytes(b)
    }
}
impl<'a> From<&'a Vec<u8>> for WasmSource<'a> {
    fn from(b: &'a Vec<u8>) -> Self {
        WasmSource::Bytes(b)
    }
}
impl From<PathBuf> for WasmSource<'_> {
    fn from(p: PathBuf) -> Self {
        WasmSource::Path(p)
    }
}
impl<'a> From<&'a Path> for WasmSource<'a> {
    fn from(p: &'a Path) -> Self {
        WasmSource::Path(p.to_path_buf())
    }
}

fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(Engine::default)
}

/// Compiling the module is by far the slowest step; every harness of the process shares one
/// compiled copy per distinct module.
fn compile(bytes: &[u8]) -> Result<Module> {
    static CACHE: OnceLock<Mutex<HashMap<(u64, usize), Module>>> = OnceLock::new();
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    let key = (h.finish(), bytes.len());
    let cache = CACHE.get_or_init(Default::default);
    if let Some(m) = cache
        .lock()
        .map_err(|_| format_err!("module cache poisoned"))?
        .get(&key)
    {
        return Ok(m.clone());
    }
    let module = Module::new(engine(), bytes)?;
    cache
        .lock()
        .map_err(|_| format_err!("module cache poisoned"))?
        .insert(key, module.clone());
    Ok(module)
}

/// Options beyond the plugin configuration.
#[derive(Debug, Clone)]
pub struct Options {
    /// `VmConfig.configuration` (delivered to `proxy_on_vm_start`).
    pub vm_config: Vec<u8>,
    /// Shared data and queues (clone one store into several harnesses to emulate several VMs).
    pub shared: SharedStore,
    pub clock: Clock,
    /// The VM's environment (WASI `environ_get`), as Envoy fills it from
    /// `vm_config.environment_variables`.
    pub env: Vec<(String, String)>,
    /// Count every hostcall by name ([`Harness::take_hostcalls`]); slows each one down.
    pub count_hostcalls: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            vm_config: Vec::new(),
            shared: SharedStore::new(),
            clock: Clock::System,
            env: Vec::new(),
            count_hostcalls: false,
        }
    }
}

/// A request to drive through the filter.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub authority: String,
    /// Regular headers (names are lower-cased like Envoy's).
    pub headers: Vec<(String, Vec<u8>)>,
    /// Body chunks as they arrive; empty = no body (end of stream on the headers).
    pub body_chunks: Vec<Vec<u8>>,
    /// Request trailers; when present they, not the last body chunk, end the stream.
    pub trailers: Vec<(String, Vec<u8>)>,
    /// The upstream's response headers (`:status` first) for a forwarded request, delivered
    /// through `proxy_on_response_headers`; `None` = no response callbacks.
    pub response: Option<Vec<(String, Vec<u8>)>>,
}

impl Request {
    pub fn new(method: &str, path: &str) -> Self {
        Request {
            method: method.into(),
            path: path.into(),
            authority: "kakeya.test".into(),
            ..Default::default()
        }
    }
    pub fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.headers
            .push((name.to_ascii_lowercase(), value.as_ref().to_vec()));
        self
    }
    /// One body chunk (nothing for an empty slice).
    pub fn body(mut self, body: impl AsRef<[u8]>) -> Self {
        if !body.as_ref().is_empty() {
            self.body_chunks = vec![body.as_ref().to_vec()];
        }
        self
    }
    pub fn chunks<I: IntoIterator<Item = Vec<u8>>>(mut self, chunks: I) -> Self {
        self.body_chunks = chunks.into_iter().collect();
        self
    }
    pub fn trailer(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.trailers
            .push((name.to_ascii_lowercase(), value.as_ref().to_vec()));
        self
    }
    /// The upstream answers a forwarded request with `status` and `headers`.
    pub fn response(mut self, status: u16, headers: &[(&str, &str)]) -> Self {
        let mut h = vec![(":status".to_string(), status.to_string().into_bytes())];
        h.extend(
            headers
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.as_bytes().to_vec())),
        );
        self.response = Some(h);
        self
    }
}

/// What became of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The filter answered itself (`proxy_send_local_response`).
    LocalReply {
        status: u32,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// The request went on upstream with this final header map and body (there is no upstream
    /// in the harness).
    Forwarded {
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// The filter neither replied nor let the request continue: a hung request in Envoy.
    Paused {
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
}

impl Outcome {
    /// Local reply status (`None` when forwarded or paused).
    pub fn status(&self) -> Option<u32> {
        match self {
            Outcome::LocalReply { status, .. } => Some(*status),
            _ => None,
        }
    }
    pub fn is_forwarded(&self) -> bool {
        matches!(self, Outcome::Forwarded { .. })
    }
    pub fn headers(&self) -> &[(String, String)] {
        match self {
            Outcome::LocalReply { headers, .. }
            | Outcome::Forwarded { headers, .. }
            | Outcome::Paused { headers, .. } => headers,
        }
    }
    pub fn body(&self) -> &[u8] {
        match self {
            Outcome::LocalReply { body, .. }
            | Outcome::Forwarded { body, .. }
            | Outcome::Paused { body, .. } => body,
        }
    }
    /// First value of a header (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers()
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    /// All values of a header.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers()
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
    /// The body parsed as JSON.
    pub fn json(&self) -> Result<serde_json::Value> {
        serde_json::from_slice(self.body()).map_err(|e| format_err!("body is not JSON: {e}"))
    }
}

/// Host-side wall time of the last request's callbacks, in ns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timings {
    pub headers_ns: u64,
    /// All `proxy_on_request_body` (and trailers) calls together.
    pub body_ns: u64,
    /// Context create to delete.
    pub total_ns: u64,
}

struct Exports {
    on_context_create: TypedFunc<(i32, i32), ()>,
    on_request_headers: TypedFunc<(i32, i32, i32), i32>,
    on_request_body: TypedFunc<(i32, i32, i32), i32>,
    on_request_trailers: TypedFunc<(i32, i32), i32>,
    on_response_headers: TypedFunc<(i32, i32, i32), i32>,
    on_done: TypedFunc<i32, i32>,
    on_log: TypedFunc<i32, ()>,
    on_delete: TypedFunc<i32, ()>,
    on_tick: TypedFunc<i32, ()>,
    on_http_call_response: TypedFunc<(i32, i32, i32, i32, i32), ()>,
    on_configure: TypedFunc<(i32, i32), i32>,
}

/// One VM running the filter with one root context.
pub struct Harness {
    store: Store<HostState>,
    #[allow(dead_code)]
    instance: Instance,
    ex: Exports,
    configured: bool,
    vm_started: bool,
    root_id: i32,
    next_context: i32,
    last_timings: Timings,
}

fn len_i32(n: usize) -> Result<i32> {
    i32::try_from(n).map_err(|_| format_err!("size {n} does not fit the wasm32 ABI"))
}

impl Harness {
    /// Loads the module, runs `_initialize` (or `_start`), creates the root context and calls
    /// `proxy_on_vm_start` and `proxy_on_configure` with `plugin_config`. A configuration the
    /// filter refuses is not an error: check [`Harness::configured`].
    pub fn new<'a>(wasm: impl Into<WasmSource<'a>>, plugin_config: &[u8]) -> Result<Harness> {
        Self::with_options(wasm, plugin_config, Options::default())
    }

    pub fn with_options<'a>(
        wasm: impl Into<WasmSource<'a>>,
        plugin_config: &[u8],
        opts: Options,
    ) -> Result<Harness> {
        let module = match wasm.into() {
            WasmSource::Bytes(b) => compile(b)?,
            WasmSource::Path(p) => {
                let bytes = if p.exists() {
                    std::fs::read(&p)
                        .map_err(|e| format_err!("cannot read {}: {e}", p.display()))?
                } else {
                    load_gate_wasm_at(&p)?
                };
                compile(&bytes)?
            }
        };
        let mut state = HostState::new(opts.shared, opts.clock);
        state.env = opts.env;
        let mut store = Store::new(engine(), state);
        let mut linker: Linker<HostState> = Linker::new(engine());
        abi::link(&mut linker)?;
        abi::link_unknown(&mut linker, &module, &mut store)?;
        if opts.count_hostcalls {
            linker = abi::counting(&linker, &module, &mut store)?;
        }
        let instance = linker.instantiate(&mut store, &module)?;
        store.data_mut().instance = Some(instance);
        let f2 =
            |s: &mut Store<HostState>, n: &str| instance.get_typed_func::<(i32, i32), i32>(s, n);
        let ex = Exports {
            on_context_create: instance.get_typed_func(&mut store, "proxy_on_context_create")?,
            on_request_headers: instance.get_typed_func(&mut store, "proxy_on_request_headers")?,
            on_request_body: instance.get_typed_func(&mut store, "proxy_on_request_body")?,
            on_request_trailers: f2(&mut store, "proxy_on_request_trailers")?,
            on_response_headers: instance
                .get_typed_func(&mut store, "proxy_on_response_headers")?,
            on_done: instance.get_typed_func(&mut store, "proxy_on_done")?,
            on_log: instance.get_typed_func(&mut store, "proxy_on_log")?,
            on_delete: instance.get_typed_func(&mut store, "proxy_on_delete")?,
            on_tick: instance.get_typed_func(&mut store, "proxy_on_tick")?,
            on_http_call_response: instance
                .get_typed_func(&mut store, "proxy_on_http_call_response")?,
            on_configure: f2(&mut store, "proxy_on_configure")?,
        };
        if instance
            .get_export(&mut store, "proxy_abi_version_0_2_1")
            .is_none()
        {
            return Err(format_err!(
                "module does not export proxy_abi_version_0_2_1"
            ));
        }
        for init in ["_initialize", "_start"] {
            if let Ok(f) = instance.get_typed_func::<(), ()>(&mut store, init) {
                f.call(&mut store, ())?;
                break;
            }
        }
        let mut h = Harness {
            store,
            instance,
            ex,
            configured: false,
            vm_started: false,
            root_id: ROOT_CONTEXT_ID,
            next_context: ROOT_CONTEXT_ID + 1,
            last_timings: Timings::default(),
        };
        h.ex.on_context_create
            .call(&mut h.store, (ROOT_CONTEXT_ID, 0))?;
        let vm_cfg = opts.vm_config;
        let vm_len = len_i32(vm_cfg.len())?;
        h.store
            .data_mut()
            .buffers
            .insert(buffer_type::VM_CONFIGURATION, vm_cfg);
        let on_vm_start =
            instance.get_typed_func::<(i32, i32), i32>(&mut h.store, "proxy_on_vm_start")?;
        h.vm_started = on_vm_start.call(&mut h.store, (ROOT_CONTEXT_ID, vm_len))? != 0;
        h.store
            .data_mut()
            .buffers
            .remove(&buffer_type::VM_CONFIGURATION);
        h.configured = h.vm_started && h.configure_root(ROOT_CONTEXT_ID, plugin_config)?;
        Ok(h)
    }

    fn configure_root(&mut self, root: i32, cfg: &[u8]) -> Result<bool> {
        let len = len_i32(cfg.len())?;
        self.store
            .data_mut()
            .buffers
            .insert(buffer_type::PLUGIN_CONFIGURATION, cfg.to_vec());
        let ok = self.ex.on_configure.call(&mut self.store, (root, len))? != 0;
        self.store
            .data_mut()
            .buffers
            .remove(&buffer_type::PLUGIN_CONFIGURATION);
        Ok(ok)
    }

    /// Pushes a new plugin configuration the way Envoy does: a fresh root context in the same
    /// VM, then `proxy_on_configure`. Later requests use the new root when it accepted.
    pub fn reconfigure(&mut self, plugin_config: &[u8]) -> Result<bool> {
        let root = self.next_context;
        self.next_context += 1;
        self.ex.on_context_create.call(&mut self.store, (root, 0))?;
        let ok = self.configure_root(root, plugin_config)?;
        if ok {
            self.root_id = root;
            self.configured = true;
        }
        Ok(ok)
    }

    /// Hostcalls by name since the last call (with [`Options::count_hostcalls`]; else empty).
    pub fn take_hostcalls(&mut self) -> std::collections::BTreeMap<String, u64> {
        std::mem::take(&mut self.store.data_mut().hostcalls)
    }

    /// Whether `proxy_on_configure` returned true (Envoy would refuse the config otherwise).
    pub fn configured(&self) -> bool {
        self.configured
    }

    pub fn vm_started(&self) -> bool {
        self.vm_started
    }

    /// `request(method, path, headers, body)`; an empty body means none (end of stream on
    /// the headers).
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Outcome> {
        let mut r = Request::new(method, path).body(body);
        for (k, v) in headers {
            r = r.header(k, v);
        }
        self.send(&r)
    }

    /// Drives one HTTP stream the way Envoy does (with `allow_on_headers_stop_iteration`):
    /// context create → request headers → body chunks (the size passed is the buffered size
    /// while the filter pauses, the chunk size after it continued) → trailers → done/log/delete.
    pub fn send(&mut self, req: &Request) -> Result<Outcome> {
        let t0 = Instant::now();
        let ctx = self.next_context;
        self.next_context += 1;
        {
            let st = self.store.data_mut();
            st.local_reply = None;
            st.continued.clear();
            let mut headers: Vec<(String, Vec<u8>)> = vec![
                (":method".into(), req.method.as_bytes().to_vec()),
                (":path".into(), req.path.as_bytes().to_vec()),
                (":authority".into(), req.authority.as_bytes().to_vec()),
                (":scheme".into(), b"http".to_vec()),
            ];
            headers.extend(
                req.headers
                    .iter()
                    .map(|(k, v)| (k.to_ascii_lowercase(), v.clone())),
            );
            if let Some(m) = st.map_mut(map_type::HTTP_REQUEST_HEADERS) {
                *m = headers;
            }
            if let Some(m) = st.map_mut(map_type::HTTP_REQUEST_TRAILERS) {
                *m = req.trailers.clone();
            }
            st.buffers
                .insert(buffer_type::HTTP_REQUEST_BODY, Vec::new());
        }
        self.ex
            .on_context_create
            .call(&mut self.store, (ctx, self.root_id))?;

        let mut timings = Timings::default();
        let has_body = !req.body_chunks.is_empty();
        let has_trailers = !req.trailers.is_empty();
        let n_headers = len_i32(req.headers.len() + 4)?;
        let t = Instant::now();
        let mut action = self.ex.on_request_headers.call(
            &mut self.store,
            (ctx, n_headers, i32::from(!has_body && !has_trailers)),
        )?;
        timings.headers_ns = elapsed_ns(t);
        let mut stopped = action == ACTION_PAUSE;
        let mut forwarded_body: Vec<u8> = Vec::new();
        let mut replied = self.take_continue(&mut stopped, &mut forwarded_body);

        if !replied {
            let n = req.body_chunks.len();
            for (i, chunk) in req.body_chunks.iter().enumerate() {
                let eos = i + 1 == n && !has_trailers;
                let size = {
                    let buf = self
                        .store
                        .data_mut()
                        .buffers
                        .entry(buffer_type::HTTP_REQUEST_BODY)
                        .or_default();
                    buf.extend_from_slice(chunk);
                    buf.len()
                };
                let t = Instant::now();
                action = self
                    .ex
                    .on_request_body
                    .call(&mut self.store, (ctx, len_i32(size)?, i32::from(eos)))?;
                timings.body_ns += elapsed_ns(t);
                if self.store.data().local_reply.is_some() {
                    replied = true;
                    break;
                }
                if action == ACTION_CONTINUE {
                    stopped = false;
                    self.flush_body(&mut forwarded_body);
                } else {
                    stopped = true;
                }
                if self.take_continue(&mut stopped, &mut forwarded_body) {
                    replied = true;
                    break;
                }
            }
        }
        if !replied && has_trailers {
            let t = Instant::now();
            action = self
                .ex
                .on_request_trailers
                .call(&mut self.store, (ctx, len_i32(req.trailers.len())?))?;
            timings.body_ns += elapsed_ns(t);
            replied = self.store.data().local_reply.is_some();
            if !replied {
                stopped = action != ACTION_CONTINUE;
                replied = self.take_continue(&mut stopped, &mut forwarded_body);
            }
        }
        if !replied && !stopped {
            self.flush_body(&mut forwarded_body);
        }
        if let (false, false, Some(resp)) = (replied, stopped, &req.response) {
            let st = self.store.data_mut();
            if let Some(m) = st.map_mut(map_type::HTTP_RESPONSE_HEADERS) {
                *m = resp.clone();
            }
            self.ex
                .on_response_headers
                .call(&mut self.store, (ctx, len_i32(resp.len())?, 0))?;
        }

        let done = self.ex.on_done.call(&mut self.store, ctx)?;
        let _ = done;
        self.ex.on_log.call(&mut self.store, ctx)?;
        self.ex.on_delete.call(&mut self.store, ctx)?;
        timings.total_ns = elapsed_ns(t0);
        self.last_timings = timings;

        let st = self.store.data_mut();
        let headers: Vec<(String, String)> = st
            .map(map_type::HTTP_REQUEST_HEADERS)
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
                    .collect()
            })
            .unwrap_or_default();
        let rest = st
            .buffers
            .remove(&buffer_type::HTTP_REQUEST_BODY)
            .unwrap_or_default();
        if let Some(r) = st.local_reply.take() {
            return Ok(Outcome::LocalReply {
                status: r.status,
                headers: r.headers,
                body: r.body,
            });
        }
        if stopped {
            forwarded_body.extend_from_slice(&rest);
            return Ok(Outcome::Paused {
                headers,
                body: forwarded_body,
            });
        }
        Ok(Outcome::Forwarded {
            headers,
            body: forwarded_body,
        })
    }

    /// Handles a `proxy_continue_stream(HttpRequest)` made during the last callback and
    /// reports whether a local reply was sent.
    fn take_continue(&mut self, stopped: &mut bool, forwarded: &mut Vec<u8>) -> bool {
        let st = self.store.data_mut();
        if st.local_reply.is_some() {
            return true;
        }
        if st.continued.contains(&STREAM_HTTP_REQUEST) {
            st.continued.clear();
            *stopped = false;
            self.flush_body(forwarded);
        }
        false
    }

    fn flush_body(&mut self, forwarded: &mut Vec<u8>) {
        if let Some(buf) = self
            .store
            .data_mut()
            .buffers
            .get_mut(&buffer_type::HTTP_REQUEST_BODY)
        {
            forwarded.append(buf);
        }
    }

    /// Calls `proxy_on_tick` on the root context.
    pub fn tick(&mut self) -> Result<()> {
        self.ex.on_tick.call(&mut self.store, self.root_id)
    }

    /// Current counter/gauge values by name (histograms: sample count).
    pub fn metrics(&self) -> BTreeMap<String, i64> {
        self.store
            .data()
            .metrics
            .iter()
            .map(|m| (m.name.clone(), m.value))
            .collect()
    }

    pub fn metric(&self, name: &str) -> Option<i64> {
        self.store
            .data()
            .metrics
            .iter()
            .find(|m| m.name == name)
            .map(|m| m.value)
    }

    /// Everything the guest logged with `proxy_log`.
    pub fn logs(&self) -> &[LogEntry] {
        &self.store.data().logs
    }

    pub fn clear_logs(&mut self) {
        self.store.data_mut().logs.clear();
    }

    /// What the guest wrote to stderr / stdout through WASI.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.store.data().stderr).into_owned()
    }

    pub fn shared(&self) -> &SharedStore {
        &self.store.data().shared
    }

    pub fn http_calls(&self) -> &[HttpCall] {
        &self.store.data().http_calls
    }

    /// Callouts not answered yet, oldest first.
    pub fn pending_http_calls(&self) -> Vec<HttpCall> {
        self.store
            .data()
            .http_calls
            .iter()
            .filter(|c| !c.answered)
            .cloned()
            .collect()
    }

    /// Answers a pending callout the way Envoy does: the response headers (`:status` first when
    /// `status` is `Some`) and body become readable as `HttpCallResponseHeaders` /
    /// `HttpCallResponseBody`, then `proxy_on_http_call_response(root, token, …)` runs.
    /// `status: None` with no headers and no body is what Envoy delivers on a timeout or reset.
    pub fn respond_http_call(
        &mut self,
        token: u32,
        status: Option<u32>,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<()> {
        {
            let st = self.store.data_mut();
            let call = st
                .http_calls
                .iter_mut()
                .find(|c| c.token == token && !c.answered)
                .ok_or_else(|| format_err!("no pending HTTP call with token {token}"))?;
            call.answered = true;
            let mut map: Vec<(String, Vec<u8>)> = Vec::new();
            if let Some(s) = status {
                map.push((":status".into(), s.to_string().into_bytes()));
            }
            map.extend(
                headers
                    .iter()
                    .map(|(k, v)| (k.to_ascii_lowercase(), v.as_bytes().to_vec())),
            );
            if let Some(m) = st.map_mut(map_type::HTTP_CALL_RESPONSE_HEADERS) {
                *m = map;
            }
            st.buffers
                .insert(buffer_type::HTTP_CALL_RESPONSE_BODY, body.to_vec());
        }
        let n_headers = len_i32(headers.len() + usize::from(status.is_some()))?;
        let token = i32::try_from(token).map_err(|_| format_err!("token {token} out of range"))?;
        let r = self.ex.on_http_call_response.call(
            &mut self.store,
            (self.root_id, token, n_headers, len_i32(body.len())?, 0),
        );
        let st = self.store.data_mut();
        if let Some(m) = st.map_mut(map_type::HTTP_CALL_RESPONSE_HEADERS) {
            m.clear();
        }
        st.buffers.remove(&buffer_type::HTTP_CALL_RESPONSE_BODY);
        r
    }

    pub fn tick_period_ms(&self) -> u32 {
        self.store.data().tick_period_ms
    }

    pub fn set_clock(&mut self, clock: Clock) {
        self.store.data_mut().clock = clock;
    }

    /// Moves a fixed clock forward (a system clock is switched to fixed "now + ns").
    pub fn advance_clock(&mut self, ns: u64) {
        let now = self.store.data().clock.now_ns();
        self.store.data_mut().clock = Clock::Fixed(now.saturating_add(ns));
    }

    /// Sets a property the guest can read with `get_property` (path segments).
    pub fn set_property(&mut self, path: &[&str], value: &[u8]) {
        let key = path.join("\0").into_bytes();
        self.store.data_mut().properties.insert(key, value.to_vec());
    }

    /// Host timings of the last [`Harness::send`].
    pub fn last_timings(&self) -> Timings {
        self.last_timings
    }
}

fn elapsed_ns(t: Instant) -> u64 {
    u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

fn load_gate_wasm_at(p: &Path) -> Result<Vec<u8>> {
    Err(format_err!(
        "gate module not found at {}; build it with \
         `cargo build -p kakeya-gate --target wasm32-wasip1 --profile wasm` (or `cargo xtask test`)",
        p.display()
    ))
}
