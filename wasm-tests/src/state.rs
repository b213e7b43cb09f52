//! The host's in-memory state: header maps, buffers, metrics, shared data (with CAS), queues,
//! logs, clock. One [`HostState`] per [`crate::Harness`] (= one VM); shared data and queues can
//! be shared between harnesses (= VMs of one Envoy worker set) through [`SharedStore`].

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

/// proxy-wasm ABI status codes (`WasmResult`).
pub mod status {
    pub const OK: i32 = 0;
    pub const NOT_FOUND: i32 = 1;
    pub const BAD_ARGUMENT: i32 = 2;
    pub const SERIALIZATION_FAILURE: i32 = 3;
    pub const EMPTY: i32 = 7;
    pub const CAS_MISMATCH: i32 = 8;
    pub const INTERNAL_FAILURE: i32 = 10;
    pub const UNIMPLEMENTED: i32 = 12;
}

/// `MapType` of ABI v0.2.1.
pub mod map_type {
    pub const HTTP_REQUEST_HEADERS: i32 = 0;
    pub const HTTP_REQUEST_TRAILERS: i32 = 1;
    pub const HTTP_RESPONSE_HEADERS: i32 = 2;
    pub const HTTP_RESPONSE_TRAILERS: i32 = 3;
    pub const HTTP_CALL_RESPONSE_HEADERS: i32 = 6;
    pub const HTTP_CALL_RESPONSE_TRAILERS: i32 = 7;
    pub const COUNT: usize = 8;
}

/// `BufferType` of ABI v0.2.1.
pub mod buffer_type {
    pub const HTTP_REQUEST_BODY: i32 = 0;
    pub const HTTP_RESPONSE_BODY: i32 = 1;
    pub const HTTP_CALL_RESPONSE_BODY: i32 = 4;
    pub const VM_CONFIGURATION: i32 = 6;
    pub const PLUGIN_CONFIGURATION: i32 = 7;
}

/// An ordered header map; names are stored lower case like Envoy's.
pub type HeaderMap = Vec<(String, Vec<u8>)>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
    Critical,
}

impl LogLevel {
    pub fn from_abi(v: i32) -> LogLevel {
        match v {
            0 => LogLevel::Trace,
            1 => LogLevel::Debug,
            2 => LogLevel::Info,
            3 => LogLevel::Warn,
            4 => LogLevel::Error,
            _ => LogLevel::Critical,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    pub level: LogLevel,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    pub name: String,
    pub kind: MetricKind,
    /// Counter / gauge value; for histograms the number of recorded samples.
    pub value: i64,
    /// Histogram samples.
    pub samples: Vec<u64>,
}

/// Host clock seen by the guest (`proxy_get_current_time_nanoseconds`, WASI `clock_time_get`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    /// Real wall clock.
    System,
    /// Fixed ns since the Unix epoch (advance with [`crate::Harness::advance_clock`]).
    Fixed(u64),
}

impl Clock {
    pub fn now_ns(&self) -> u64 {
        match self {
            Clock::System => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
                .unwrap_or(0),
            Clock::Fixed(ns) => *ns,
        }
    }
}

/// Process-wide data of one Envoy `vm_id`: shared data with CAS and shared queues.
#[derive(Debug, Default)]
pub struct SharedInner {
    /// key → (value, cas)
    pub data: HashMap<String, (Vec<u8>, u32)>,
    pub next_cas: u32,
    /// queue id → (name, items)
    pub queues: BTreeMap<u32, (String, VecDeque<Vec<u8>>)>,
    /// Injected host failures: hostcall name (`proxy_get_header_map_pairs`, ...) → the status
    /// it returns instead of doing anything. See [`SharedStore::fail_hostcall`].
    pub faults: HashMap<String, i32>,
}

/// Shared data and queues; clone it into several harnesses to emulate several worker VMs.
#[derive(Debug, Clone, Default)]
pub struct SharedStore(pub Arc<Mutex<SharedInner>>);

impl SharedStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// (value, cas) of `key`.
    pub fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        self.0.lock().ok()?.data.get(key).cloned()
    }

    /// Envoy semantics: `cas == 0` writes unconditionally; otherwise it must equal the current
    /// cas of an existing key. Returns an ABI status.
    pub fn set(&self, key: &str, value: Vec<u8>, cas: u32) -> i32 {
        let Ok(mut g) = self.0.lock() else {
            return status::SERIALIZATION_FAILURE;
        };
        if cas != 0 {
            match g.data.get(key) {
                Some((_, current)) if *current == cas => {}
                _ => return status::CAS_MISMATCH,
            }
        }
        g.next_cas = g.next_cas.wrapping_add(1).max(1);
        let next = g.next_cas;
        g.data.insert(key.to_string(), (value, next));
        status::OK
    }

    /// From now on the hostcall `name` (e.g. `proxy_remove_header_map_value`) returns `status`
    /// without doing anything, in every harness sharing this store, until
    /// [`SharedStore::clear_faults`]. Supported: the header-map, buffer, clock, metric,
    /// property and local-response calls.
    pub fn fail_hostcall(&self, name: &str, status: i32) {
        if let Ok(mut g) = self.0.lock() {
            g.faults.insert(name.to_string(), status);
        }
    }

    pub fn clear_faults(&self) {
        if let Ok(mut g) = self.0.lock() {
            g.faults.clear();
        }
    }

    /// The status injected for `name`, if any.
    pub fn fault(&self, name: &str) -> Option<i32> {
        self.0.lock().ok()?.faults.get(name).copied()
    }

    pub fn remove(&self, key: &str, cas: u32) -> i32 {
        let Ok(mut g) = self.0.lock() else {
            return status::SERIALIZATION_FAILURE;
        };
        if cas != 0 {
            match g.data.get(key) {
                Some((_, current)) if *current == cas => {}
                _ => return status::CAS_MISMATCH,
            }
        }
        g.data.remove(key);
        status::OK
    }
}

/// A local reply the guest sent with `proxy_send_local_response`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentReply {
    pub status: u32,
    pub details: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub grpc_status: i32,
}

/// A recorded `proxy_http_call` (the harness has no upstreams; the call stays pending until a
/// test answers it with [`crate::Harness::respond_http_call`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpCall {
    pub token: u32,
    pub upstream: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub timeout_ms: u32,
    /// Answered with [`crate::Harness::respond_http_call`].
    pub answered: bool,
}

impl HttpCall {
    /// First value of a request header of the call.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug)]
pub struct HostState {
    pub maps: Vec<HeaderMap>,
    pub buffers: HashMap<i32, Vec<u8>>,
    pub local_reply: Option<SentReply>,
    /// `proxy_continue_stream` calls since the current callback started (stream types).
    pub continued: Vec<i32>,
    pub metrics: Vec<Metric>,
    pub metric_ids: HashMap<String, u32>,
    pub logs: Vec<LogEntry>,
    pub log_level: LogLevel,
    pub shared: SharedStore,
    pub clock: Clock,
    pub tick_period_ms: u32,
    pub properties: HashMap<Vec<u8>, Vec<u8>>,
    /// Bytes the guest wrote to fd 1 / fd 2.
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub http_calls: Vec<HttpCall>,
    pub effective_context: u32,
    pub done_calls: u32,
    pub rng: u64,
    /// WASI environment (`NAME`, `value`).
    pub env: Vec<(String, String)>,
    /// Calls per imported function, when the harness counts them ([`crate::Options`]).
    pub hostcalls: std::collections::BTreeMap<String, u64>,
    /// The guest instance, once instantiated (see `abi::export`).
    pub instance: Option<wasmtime::Instance>,
}

impl HostState {
    pub fn new(shared: SharedStore, clock: Clock) -> Self {
        HostState {
            maps: vec![Vec::new(); map_type::COUNT],
            buffers: HashMap::new(),
            local_reply: None,
            continued: Vec::new(),
            metrics: Vec::new(),
            metric_ids: HashMap::new(),
            logs: Vec::new(),
            log_level: LogLevel::Trace,
            shared,
            clock,
            tick_period_ms: 0,
            properties: HashMap::new(),
            stdout: Vec::new(),
            stderr: Vec::new(),
            http_calls: Vec::new(),
            effective_context: 0,
            done_calls: 0,
            rng: 0x9e37_79b9_7f4a_7c15,
            env: Vec::new(),
            hostcalls: Default::default(),
            instance: None,
        }
    }

    pub fn map(&self, map_type: i32) -> Option<&HeaderMap> {
        usize::try_from(map_type)
            .ok()
            .and_then(|i| self.maps.get(i))
    }

    pub fn map_mut(&mut self, map_type: i32) -> Option<&mut HeaderMap> {
        usize::try_from(map_type)
            .ok()
            .and_then(|i| self.maps.get_mut(i))
    }

    /// Envoy semantics: the same name always yields the same id.
    pub fn define_metric(&mut self, kind: MetricKind, name: &str) -> u32 {
        if let Some(id) = self.metric_ids.get(name) {
            return *id;
        }
        let id = u32::try_from(self.metrics.len()).unwrap_or(u32::MAX);
        self.metrics.push(Metric {
            name: name.to_string(),
            kind,
            value: 0,
            samples: Vec::new(),
        });
        self.metric_ids.insert(name.to_string(), id);
        id
    }

    /// Deterministic pseudo-random bytes for WASI `random_get` (xorshift64*).
    pub fn random_bytes(&mut self, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            self.rng ^= self.rng >> 12;
            self.rng ^= self.rng << 25;
            self.rng ^= self.rng >> 27;
            let v = self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d);
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.truncate(n);
        out
    }
}

/// proxy-wasm header-map wire format: u32 count, (u32 name len, u32 value len)*, then each
/// name and value followed by a NUL.
pub fn serialize_map(map: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(map.len() as u32).to_le_bytes());
    for (k, v) in map {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in map {
        out.extend_from_slice(k.as_bytes());
        out.push(0);
        out.extend_from_slice(v);
        out.push(0);
    }
    out
}

/// Inverse of [`serialize_map`]; `None` on malformed input.
pub fn deserialize_map(bytes: &[u8]) -> Option<HeaderMap> {
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let u32_at = |i: usize| -> Option<usize> {
        let b: [u8; 4] = bytes.get(i..i + 4)?.try_into().ok()?;
        Some(u32::from_le_bytes(b) as usize)
    };
    let n = u32_at(0)?;
    let mut p = 4usize.checked_add(n.checked_mul(8)?)?;
    let mut out = Vec::with_capacity(n.min(1024));
    for i in 0..n {
        let klen = u32_at(4 + i * 8)?;
        let vlen = u32_at(8 + i * 8)?;
        let k = bytes.get(p..p.checked_add(klen)?)?;
        p = p.checked_add(klen + 1)?;
        let v = bytes.get(p..p.checked_add(vlen)?)?;
        p = p.checked_add(vlen + 1)?;
        out.push((String::from_utf8_lossy(k).into_owned(), v.to_vec()));
    }
    Some(out)
}
