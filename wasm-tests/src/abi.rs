//! proxy-wasm ABI v0.2.1 host functions (`env.proxy_*`) and the WASI preview1 imports a Rust
//! `wasm32-wasip1` filter pulls in.
//!
//! WASI is implemented here by hand instead of with `wasmtime-wasi`: the gate imports only
//! `fd_write`, `environ_get`, `environ_sizes_get` and `proc_exit` (std's start-up and panic
//! output), while `wasmtime-wasi` would add tokio, cap-std and the component model to the build
//! (several minutes of compile time on the 2-core CI box) for nothing we use. A few more
//! preview1 calls (`clock_time_get`, `random_get`, `args_*`, `sched_yield`) are provided for
//! future filters; any other import traps with its name when called (see [`link_unknown`]).
//!
//! All pointers and sizes are wasm32 (`i32`, read as `u32`).

use crate::state::{
    deserialize_map, serialize_map, status, HostState, HttpCall, LogEntry, LogLevel, MetricKind,
    SentReply,
};
use wasmtime::{format_err, Caller, Extern, Linker, Memory, Module, Result};

type C<'a> = Caller<'a, HostState>;

/// The guest's export `name`: through the caller, or, for a host function called by another
/// one (the hostcall census of [`counting`]), through the instance the harness recorded.
fn export(caller: &mut C<'_>, name: &str) -> Option<Extern> {
    caller.get_export(name).or_else(|| {
        let instance = caller.data().instance?;
        instance.get_export(&mut *caller, name)
    })
}

fn memory(caller: &mut C<'_>) -> Result<Memory> {
    match export(caller, "memory") {
        Some(Extern::Memory(m)) => Ok(m),
        _ => Err(format_err!("guest exports no memory")),
    }
}

fn read(caller: &mut C<'_>, ptr: i32, len: i32) -> Result<Vec<u8>> {
    let mem = memory(caller)?;
    let (ptr, len) = (ptr as u32 as usize, len as u32 as usize);
    mem.data(&*caller)
        .get(
            ptr..ptr
                .checked_add(len)
                .ok_or_else(|| format_err!("pointer overflow"))?,
        )
        .map(<[u8]>::to_vec)
        .ok_or_else(|| format_err!("guest memory access out of bounds: {ptr}+{len}"))
}

fn read_str(caller: &mut C<'_>, ptr: i32, len: i32) -> Result<String> {
    Ok(String::from_utf8_lossy(&read(caller, ptr, len)?).into_owned())
}

fn write(caller: &mut C<'_>, ptr: i32, data: &[u8]) -> Result<()> {
    let mem = memory(caller)?;
    mem.write(&mut *caller, ptr as u32 as usize, data)
        .map_err(|e| format_err!("guest memory write: {e}"))
}

fn write_u32(caller: &mut C<'_>, ptr: i32, v: u32) -> Result<()> {
    write(caller, ptr, &v.to_le_bytes())
}

fn write_u64(caller: &mut C<'_>, ptr: i32, v: u64) -> Result<()> {
    write(caller, ptr, &v.to_le_bytes())
}

/// Copies `data` into guest memory allocated with the guest's own allocator and stores the
/// pointer / size at `ret_ptr` / `ret_size`, as the ABI's "return buffer" convention requires.
fn return_bytes(caller: &mut C<'_>, data: &[u8], ret_ptr: i32, ret_size: i32) -> Result<()> {
    let alloc = ["proxy_on_memory_allocate", "malloc"]
        .iter()
        .find_map(|n| export(caller, n).and_then(Extern::into_func))
        .ok_or_else(|| format_err!("guest exports no proxy_on_memory_allocate/malloc"))?;
    let alloc = alloc.typed::<i32, i32>(&*caller)?;
    let size = i32::try_from(data.len()).map_err(|_| format_err!("buffer too large"))?;
    let ptr = alloc.call(&mut *caller, size)?;
    if ptr == 0 && size != 0 {
        return Err(format_err!("guest allocation of {size} bytes failed"));
    }
    write(caller, ptr, data)?;
    write_u32(caller, ret_ptr, ptr as u32)?;
    write_u32(caller, ret_size, size as u32)
}

/// The status injected for hostcall `name` ([`crate::SharedStore::fail_hostcall`]).
fn fault(caller: &C<'_>, name: &str) -> Option<i32> {
    caller.data().shared.fault(name)
}

/// Registers every host function of this module on `linker`.
pub fn link(linker: &mut Linker<HostState>) -> Result<()> {
    link_proxy(linker)?;
    link_wasi(linker)?;
    Ok(())
}

/// Defines every import of `module` that [`link`] does not provide as a trap naming the import,
/// so modules instantiate and a test fails loudly only if such an import is actually called.
pub fn link_unknown(
    linker: &mut Linker<HostState>,
    module: &Module,
    store: &mut wasmtime::Store<HostState>,
) -> Result<()> {
    for import in module.imports() {
        if linker.get_by_import(&mut *store, &import).is_some() {
            continue;
        }
        if let wasmtime::ExternType::Func(ty) = import.ty() {
            let full = format!("{}.{}", import.module(), import.name());
            linker.func_new(import.module(), import.name(), ty, move |_, _, _| {
                Err(format_err!(
                    "host function {full} is not implemented by the kakeya test harness"
                ))
            })?;
        }
    }
    Ok(())
}

/// A linker for `module` whose every imported function first counts its call in
/// [`HostState::hostcalls`] (by import name), then runs `linker`'s definition: the hostcall
/// census of the benchmarks. (A dynamic call per hostcall: not for timing runs.)
pub fn counting(
    linker: &Linker<HostState>,
    module: &Module,
    store: &mut wasmtime::Store<HostState>,
) -> Result<Linker<HostState>> {
    let mut counted: Linker<HostState> = Linker::new(module.engine());
    for import in module.imports() {
        match linker.get_by_import(&mut *store, &import) {
            Some(Extern::Func(f)) => {
                let name = import.name().to_string();
                let ty = f.ty(&*store);
                counted.func_new(
                    import.module(),
                    import.name(),
                    ty,
                    move |mut caller: C<'_>, params, results| {
                        *caller.data_mut().hostcalls.entry(name.clone()).or_insert(0) += 1;
                        f.call(&mut caller, params, results)
                    },
                )?;
            }
            Some(other) => {
                counted.define(&mut *store, import.module(), import.name(), other)?;
            }
            None => {}
        }
    }
    Ok(counted)
}

fn link_proxy(l: &mut Linker<HostState>) -> Result<()> {
    const E: &str = "env";

    l.func_wrap(
        E,
        "proxy_log",
        |mut c: C<'_>, level: i32, ptr: i32, len: i32| -> Result<i32> {
            let message = read_str(&mut c, ptr, len)?;
            c.data_mut().logs.push(LogEntry {
                level: LogLevel::from_abi(level),
                message,
            });
            Ok(status::OK)
        },
    )?;
    l.func_wrap(
        E,
        "proxy_get_log_level",
        |mut c: C<'_>, ret: i32| -> Result<i32> {
            let lvl = c.data().log_level as u32;
            write_u32(&mut c, ret, lvl)?;
            Ok(status::OK)
        },
    )?;
    l.func_wrap(
        E,
        "proxy_get_current_time_nanoseconds",
        |mut c: C<'_>, ret: i32| -> Result<i32> {
            if let Some(st) = fault(&c, "proxy_get_current_time_nanoseconds") {
                return Ok(st);
            }
            let now = c.data().clock.now_ns();
            write_u64(&mut c, ret, now)?;
            Ok(status::OK)
        },
    )?;
    l.func_wrap(
        E,
        "proxy_set_tick_period_milliseconds",
        |mut c: C<'_>, ms: i32| -> i32 {
            c.data_mut().tick_period_ms = ms as u32;
            status::OK
        },
    )?;

    // Buffers
    l.func_wrap(
        E,
        "proxy_get_buffer_bytes",
        |mut c: C<'_>, bt: i32, start: i32, max: i32, ret_ptr: i32, ret_size: i32| -> Result<i32> {
            if let Some(st) = fault(&c, "proxy_get_buffer_bytes") {
                return Ok(st);
            }
            let Some(buf) = c.data().buffers.get(&bt) else {
                return Ok(status::NOT_FOUND);
            };
            let start = (start as u32 as usize).min(buf.len());
            let end = start.saturating_add(max as u32 as usize).min(buf.len());
            let slice = buf.get(start..end).map(<[u8]>::to_vec).unwrap_or_default();
            if slice.is_empty() {
                // Like Envoy: an empty range returns no buffer (the SDK maps it to None).
                write_u32(&mut c, ret_ptr, 0)?;
                write_u32(&mut c, ret_size, 0)?;
                return Ok(status::OK);
            }
            return_bytes(&mut c, &slice, ret_ptr, ret_size)?;
            Ok(status::OK)
        },
    )?;
    l.func_wrap(
        E,
        "proxy_set_buffer_bytes",
        |mut c: C<'_>, bt: i32, start: i32, size: i32, ptr: i32, len: i32| -> Result<i32> {
            if let Some(st) = fault(&c, "proxy_set_buffer_bytes") {
                return Ok(st);
            }
            let data = read(&mut c, ptr, len)?;
            let buf = c.data_mut().buffers.entry(bt).or_default();
            let start = (start as u32 as usize).min(buf.len());
            let end = start.saturating_add(size as u32 as usize).min(buf.len());
            buf.splice(start..end, data);
            Ok(status::OK)
        },
    )?;

    // Header maps
    l.func_wrap(
        E,
        "proxy_get_header_map_pairs",
        |mut c: C<'_>, mt: i32, ret_ptr: i32, ret_size: i32| -> Result<i32> {
            if let Some(st) = fault(&c, "proxy_get_header_map_pairs") {
                return Ok(st);
            }
            let Some(map) = c.data().map(mt) else {
                return Ok(status::BAD_ARGUMENT);
            };
            let bytes = serialize_map(map);
            return_bytes(&mut c, &bytes, ret_ptr, ret_size)?;
            Ok(status::OK)
        },
    )?;
    l.func_wrap(
        E,
        "proxy_set_header_map_pairs",
        |mut c: C<'_>, mt: i32, ptr: i32, len: i32| -> Result<i32> {
            if let Some(st) = fault(&c, "proxy_set_header_map_pairs") {
                return Ok(st);
            }
            let bytes = read(&mut c, ptr, len)?;
            let Some(new) = deserialize_map(&bytes) else {
                return Ok(status::BAD_ARGUMENT);
            };
            let Some(map) = c.data_mut().map_mut(mt) else {
                return Ok(status::BAD_ARGUMENT);
            };
            *map = new
                .into_iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v))
                .collect();
            Ok(status::OK)
        },
    )?;
    l.func_wrap(
        E,
        "proxy_get_header_map_value",
        |mut c: C<'_>, mt: i32, kp: i32, kl: i32, ret_ptr: i32, ret_size: i32| -> Result<i32> {
            if let Some(st) = fault(&c, "proxy_get_header_map_value") {
                return Ok(st);
            }
            let key = read_str(&mut c, kp, kl)?.to_ascii_lowercase();
            let Some(map) = c.data().map(mt) else {
                return Ok(status::BAD_ARGUMENT);
            };
            let Some(value) = map.iter().find(|(k, _)| *k == key).map(|(_, v)| v.clone()) else {
                return Ok(status::NOT_FOUND);
            };
            if value.is_empty() {
                // Allocate 1 byte so the SDK sees Some("") rather than None (0.2.3+ semantics).
                return_bytes(&mut c, &[0], ret_ptr, ret_size)?;
                write_u32(&mut c, ret_size, 0)?;
            } else {
                return_bytes(&mut c, &value, ret_ptr, ret_size)?;
            }
            Ok(status::OK)
        },
    )?;
    l.func_wrap(
        E,
        "proxy_replace_header_map_value",
        |mut c: C<'_>, mt: i32, kp: i32, kl: i32, vp: i32, vl: i32| -> Result<i32> {
            if let Some(st) = fault(&c, "proxy_replace_header_map_value") {
                return Ok(st);
            }
            let key = read_str(&mut c, kp, kl)?.to_ascii_lowercase();
            let value = read(&mut c, vp, vl)?;
            let Some(map) = c.data_mut().map_mut(mt) else {
                return Ok(status::BAD_ARGUMENT);
            };
            match map.iter().position(|(k, _)| *k == key) {
                Some(first) => {
                    if let Some(slot) = map.get_mut(first) {
                        slot.1 = value;
                    }
                    let mut i = 0usize;
                    map.retain(|(k, _)| {
                        let keep = *k != key || i == first;
                        i += 1;
                        keep
                    });
                }
                None => map.push((key, value)),
            }
            Ok(status::OK)
        },
    )?;
    l.func_wrap(
        E,
        "proxy_add_header_map_value",
        |mut c: C<'_>, mt: i32, kp: i32, kl: i32, vp: i32, vl: i32| -> Result<i32> {
            if let Some(st) = fault(&c, "proxy_add_header_map_value") {
                return Ok(st);
            }
            let key = read_str(&mut c, kp, kl)?.to_ascii_lowercase();
            let value = read(&mut c, vp, vl)?;
            let Some(map) = c.data_mut().map_mut(mt) else {
                return Ok(status::BAD_ARGUMENT);
            };
            map.push((key, value));
            Ok(status::OK)
        },
    )?;
    l.func_wrap(
        E,
        "proxy_remove_header_map_value",
        |mut c: C<'_>, mt: i32, kp: i32, kl: i32| -> Result<i32> {
            if let Some(st) = fault(&c, "proxy_remove_header_map_value") {
                return Ok(st);
            }
            let key = read_str(&mut c, kp, kl)?.to_ascii_lowercase();
            let Some(map) = c.data_mut().map_mut(mt) else {
                return Ok(status::BAD_ARGUMENT);
            };
            map.retain(|(k, _)| *k != key);
            Ok(status::OK)
        },
    )?;

    // Properties (a plain map; paths are NUL-separated segments).
    l.func_wrap(
        E,
        "proxy_get_property",
        |mut c: C<'_>, pp: i32, pl: i32, ret_ptr: i32, ret_size: i32| -> Result<i32> {
            if let Some(st) = fault(&c, "proxy_get_property") {
                return Ok(st);
            }
            let path = read(&mut c, pp, pl)?;
            let Some(v) = c.data().properties.get(&path).cloned() else {
                return Ok(status::NOT_FOUND);
            };
            return_bytes(&mut c, &v, ret_ptr, ret_size)?;
            Ok(status::OK)
        },
    )?;
    l.func_wrap(
        E,
        "proxy_set_property",
        |mut c: C<'_>, pp: i32, pl: i32, vp: i32, vl: i32| -> Result<i32> {
            if let Some(st) = fault(&c, "proxy_set_property") {
                return Ok(st);
            }
            let path = read(&mut c, pp, pl)?;
            let v = read(&mut c, vp, vl)?;
            c.data_mut().properties.insert(path, v);
            Ok(status::OK)
        },
    )?;

    // Shared data with CAS
    l.func_wrap(
        E,
        "proxy_get_shared_data",
        |mut c: C<'_>,
         kp: i32,
         kl: i32,
         ret_ptr: i32,
         ret_size: i32,
         ret_cas: i32|
         -> Result<i32> {
            let key = read_str(&mut c, kp, kl)?;
            let Some((value, cas)) = c.data().shared.get(&key) else {
                return Ok(status::NOT_FOUND);
            };
            return_bytes(&mut c, &value, ret_ptr, ret_size)?;
            write_u32(&mut c, ret_cas, cas)?;
            Ok(status::OK)
        },
    )?;
    l.func_wrap(
        E,
        "proxy_set_shared_data",
        |mut c: C<'_>, kp: i32, kl: i32, vp: i32, vl: i32, cas: i32| -> Result<i32> {
            let key = read_str(&mut c, kp, kl)?;
            // The SDK passes a null value pointer to delete (remove_shared_data).
            if vp == 0 && vl == 0 {
                return Ok(c.data().shared.remove(&key, cas as u32));
            }
            let value = read(&mut c, vp, vl)?;
            Ok(c.data().shared.set(&key, value, cas as u32))
        },
    )?;

    // Shared queues
    l.func_wrap(
        E,
        "proxy_register_shared_queue",
        |mut c: C<'_>, np: i32, nl: i32, ret: i32| -> Result<i32> {
            let name = read_str(&mut c, np, nl)?;
            let id = {
                let shared = c.data().shared.clone();
                let mut g = shared
                    .0
                    .lock()
                    .map_err(|_| format_err!("shared store poisoned"))?;
                match g
                    .queues
                    .iter()
                    .find(|(_, (n, _))| *n == name)
                    .map(|(id, _)| *id)
                {
                    Some(id) => id,
                    None => {
                        let id = g.queues.keys().next_back().copied().unwrap_or(0) + 1;
                        g.queues.insert(id, (name, Default::default()));
                        id
                    }
                }
            };
            write_u32(&mut c, ret, id)?;
            Ok(status::OK)
        },
    )?;
    l.func_wrap(
        E,
        "proxy_resolve_shared_queue",
        |mut c: C<'_>, _vp: i32, _vl: i32, np: i32, nl: i32, ret: i32| -> Result<i32> {
            let name = read_str(&mut c, np, nl)?;
            let found = {
                let g = c
                    .data()
                    .shared
                    .0
                    .lock()
                    .map_err(|_| format_err!("shared store poisoned"))?;
                g.queues
                    .iter()
                    .find(|(_, (n, _))| *n == name)
                    .map(|(id, _)| *id)
            };
            match found {
                Some(id) => {
                    write_u32(&mut c, ret, id)?;
                    Ok(status::OK)
                }
                None => Ok(status::NOT_FOUND),
            }
        },
    )?;
    l.func_wrap(
        E,
        "proxy_enqueue_shared_queue",
        |mut c: C<'_>, id: i32, vp: i32, vl: i32| -> Result<i32> {
            let v = read(&mut c, vp, vl)?;
            let mut g = c
                .data()
                .shared
                .0
                .lock()
                .map_err(|_| format_err!("shared store poisoned"))?;
            match g.queues.get_mut(&(id as u32)) {
                Some((_, q)) => {
                    q.push_back(v);
                    Ok(status::OK)
                }
                None => Ok(status::NOT_FOUND),
            }
        },
    )?;
    l.func_wrap(
        E,
        "proxy_dequeue_shared_queue",
        |mut c: C<'_>, id: i32, ret_ptr: i32, ret_size: i32| -> Result<i32> {
            let item = {
                let mut g = c
                    .data()
                    .shared
                    .0
                    .lock()
                    .map_err(|_| format_err!("shared store poisoned"))?;
                match g.queues.get_mut(&(id as u32)) {
                    Some((_, q)) => q.pop_front(),
                    None => return Ok(status::NOT_FOUND),
                }
            };
            match item {
                Some(v) => {
                    return_bytes(&mut c, &v, ret_ptr, ret_size)?;
                    Ok(status::OK)
                }
                None => Ok(status::EMPTY),
            }
        },
    )?;

    // Stream control and local replies
    l.func_wrap(
        E,
        "proxy_continue_stream",
        |mut c: C<'_>, stream: i32| -> i32 {
            c.data_mut().continued.push(stream);
            status::OK
        },
    )?;
    l.func_wrap(E, "proxy_close_stream", |_: C<'_>, _stream: i32| -> i32 {
        status::OK
    })?;
    l.func_wrap(
        E,
        "proxy_send_local_response",
        |mut c: C<'_>,
         code: i32,
         dp: i32,
         dl: i32,
         bp: i32,
         bl: i32,
         hp: i32,
         hl: i32,
         grpc: i32|
         -> Result<i32> {
            if let Some(st) = fault(&c, "proxy_send_local_response") {
                return Ok(st);
            }
            let details = read_str(&mut c, dp, dl)?;
            let body = read(&mut c, bp, bl)?;
            let hbytes = read(&mut c, hp, hl)?;
            let Some(headers) = deserialize_map(&hbytes) else {
                return Ok(status::BAD_ARGUMENT);
            };
            let headers = headers
                .into_iter()
                .map(|(k, v)| {
                    (
                        k.to_ascii_lowercase(),
                        String::from_utf8_lossy(&v).into_owned(),
                    )
                })
                .collect();
            c.data_mut().local_reply = Some(SentReply {
                status: code as u32,
                details,
                headers,
                body,
                grpc_status: grpc,
            });
            Ok(status::OK)
        },
    )?;

    // HTTP callouts: recorded; tests answer them with `Harness::respond_http_call`.
    l.func_wrap(
        E,
        "proxy_http_call",
        |mut c: C<'_>,
         up: i32,
         ul: i32,
         hp: i32,
         hl: i32,
         bp: i32,
         bl: i32,
         _tp: i32,
         _tl: i32,
         timeout: i32,
         ret: i32|
         -> Result<i32> {
            let upstream = read_str(&mut c, up, ul)?;
            let hbytes = read(&mut c, hp, hl)?;
            let body = read(&mut c, bp, bl)?;
            let headers = deserialize_map(&hbytes)
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
                .collect();
            let token = u32::try_from(c.data().http_calls.len()).unwrap_or(u32::MAX) + 1;
            c.data_mut().http_calls.push(HttpCall {
                token,
                upstream,
                headers,
                body,
                timeout_ms: timeout as u32,
                answered: false,
            });
            write_u32(&mut c, ret, token)?;
            Ok(status::OK)
        },
    )?;

    // Metrics
    l.func_wrap(
        E,
        "proxy_define_metric",
        |mut c: C<'_>, kind: i32, np: i32, nl: i32, ret: i32| -> Result<i32> {
            if let Some(st) = fault(&c, "proxy_define_metric") {
                return Ok(st);
            }
            let name = read_str(&mut c, np, nl)?;
            let kind = match kind {
                0 => MetricKind::Counter,
                1 => MetricKind::Gauge,
                2 => MetricKind::Histogram,
                _ => return Ok(status::BAD_ARGUMENT),
            };
            let id = c.data_mut().define_metric(kind, &name);
            write_u32(&mut c, ret, id)?;
            Ok(status::OK)
        },
    )?;
    l.func_wrap(
        E,
        "proxy_increment_metric",
        |mut c: C<'_>, id: i32, by: i64| -> i32 {
            if let Some(st) = fault(&c, "proxy_increment_metric") {
                return st;
            }
            match c.data_mut().metrics.get_mut(id as u32 as usize) {
                Some(m) if m.kind == MetricKind::Histogram => status::BAD_ARGUMENT,
                Some(m) => {
                    m.value = m.value.saturating_add(by);
                    status::OK
                }
                None => status::NOT_FOUND,
            }
        },
    )?;
    l.func_wrap(
        E,
        "proxy_record_metric",
        |mut c: C<'_>, id: i32, v: i64| -> i32 {
            match c.data_mut().metrics.get_mut(id as u32 as usize) {
                Some(m) if m.kind == MetricKind::Histogram => {
                    m.samples.push(v as u64);
                    m.value = m.samples.len() as i64;
                    status::OK
                }
                Some(m) => {
                    m.value = v;
                    status::OK
                }
                None => status::NOT_FOUND,
            }
        },
    )?;
    l.func_wrap(
        E,
        "proxy_get_metric",
        |mut c: C<'_>, id: i32, ret: i32| -> Result<i32> {
            let Some(v) = c.data().metrics.get(id as u32 as usize).map(|m| m.value) else {
                return Ok(status::NOT_FOUND);
            };
            write_u64(&mut c, ret, v as u64)?;
            Ok(status::OK)
        },
    )?;

    // Misc
    l.func_wrap(
        E,
        "proxy_set_effective_context",
        |mut c: C<'_>, ctx: i32| -> i32 {
            c.data_mut().effective_context = ctx as u32;
            status::OK
        },
    )?;
    l.func_wrap(E, "proxy_done", |mut c: C<'_>| -> i32 {
        c.data_mut().done_calls += 1;
        status::OK
    })?;
    l.func_wrap(
        E,
        "proxy_call_foreign_function",
        |_: C<'_>, _np: i32, _nl: i32, _ap: i32, _al: i32, _rp: i32, _rs: i32| -> i32 {
            status::NOT_FOUND
        },
    )?;
    l.func_wrap(
        E,
        "proxy_get_status",
        |mut c: C<'_>, ret_code: i32, ret_ptr: i32, ret_size: i32| -> Result<i32> {
            write_u32(&mut c, ret_code, 0)?;
            write_u32(&mut c, ret_ptr, 0)?;
            write_u32(&mut c, ret_size, 0)?;
            Ok(status::OK)
        },
    )?;
    // gRPC: not supported by the harness; report Unimplemented instead of trapping.
    l.func_wrap(
        E,
        "proxy_grpc_call",
        |_: C<'_>,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32|
         -> i32 { status::UNIMPLEMENTED },
    )?;
    l.func_wrap(
        E,
        "proxy_grpc_stream",
        |_: C<'_>, _: i32, _: i32, _: i32, _: i32, _: i32, _: i32, _: i32, _: i32, _: i32| -> i32 {
            status::UNIMPLEMENTED
        },
    )?;
    l.func_wrap(
        E,
        "proxy_grpc_send",
        |_: C<'_>, _: i32, _: i32, _: i32, _: i32| -> i32 { status::UNIMPLEMENTED },
    )?;
    l.func_wrap(E, "proxy_grpc_cancel", |_: C<'_>, _: i32| -> i32 {
        status::UNIMPLEMENTED
    })?;
    l.func_wrap(E, "proxy_grpc_close", |_: C<'_>, _: i32| -> i32 {
        status::UNIMPLEMENTED
    })?;
    Ok(())
}

/// WASI errno values used here.
const ERRNO_SUCCESS: i32 = 0;

fn environ(st: &HostState) -> Vec<Vec<u8>> {
    st.env
        .iter()
        .map(|(k, v)| format!("{k}={v}\0").into_bytes())
        .collect()
}

fn link_wasi(l: &mut Linker<HostState>) -> Result<()> {
    const W: &str = "wasi_snapshot_preview1";
    l.func_wrap(
        W,
        "fd_write",
        |mut c: C<'_>, fd: i32, iovs: i32, iovs_len: i32, nwritten: i32| -> Result<i32> {
            let mut total = 0u32;
            for i in 0..iovs_len.max(0) {
                let iov = read(&mut c, iovs + i * 8, 8)?;
                let ptr = u32::from_le_bytes([iov[0], iov[1], iov[2], iov[3]]);
                let len = u32::from_le_bytes([iov[4], iov[5], iov[6], iov[7]]);
                let data = read(&mut c, ptr as i32, len as i32)?;
                total = total.saturating_add(len);
                match fd {
                    1 => c.data_mut().stdout.extend_from_slice(&data),
                    _ => c.data_mut().stderr.extend_from_slice(&data),
                }
            }
            write_u32(&mut c, nwritten, total)?;
            Ok(ERRNO_SUCCESS)
        },
    )?;
    // The environment as `NAME=value\0` strings, like Envoy's `environment_variables`.
    l.func_wrap(
        W,
        "environ_sizes_get",
        |mut c: C<'_>, count: i32, size: i32| -> Result<i32> {
            let vars = environ(c.data());
            let total: usize = vars.iter().map(Vec::len).sum();
            write_u32(&mut c, count, u32::try_from(vars.len())?)?;
            write_u32(&mut c, size, u32::try_from(total)?)?;
            Ok(ERRNO_SUCCESS)
        },
    )?;
    l.func_wrap(
        W,
        "environ_get",
        |mut c: C<'_>, environ_ptrs: i32, buf: i32| -> Result<i32> {
            let vars = environ(c.data());
            let mut at = buf as u32;
            for (i, var) in vars.iter().enumerate() {
                write_u32(&mut c, environ_ptrs + i32::try_from(i * 4)?, at)?;
                write(&mut c, at as i32, var)?;
                at = at.saturating_add(u32::try_from(var.len())?);
            }
            Ok(ERRNO_SUCCESS)
        },
    )?;
    l.func_wrap(
        W,
        "args_sizes_get",
        |mut c: C<'_>, count: i32, size: i32| -> Result<i32> {
            write_u32(&mut c, count, 0)?;
            write_u32(&mut c, size, 0)?;
            Ok(ERRNO_SUCCESS)
        },
    )?;
    l.func_wrap(W, "args_get", |_: C<'_>, _argv: i32, _buf: i32| -> i32 {
        ERRNO_SUCCESS
    })?;
    l.func_wrap(W, "proc_exit", |_: C<'_>, code: i32| -> Result<()> {
        Err(format_err!("guest called proc_exit({code})"))
    })?;
    l.func_wrap(
        W,
        "clock_time_get",
        |mut c: C<'_>, _id: i32, _precision: i64, ret: i32| -> Result<i32> {
            let now = c.data().clock.now_ns();
            write_u64(&mut c, ret, now)?;
            Ok(ERRNO_SUCCESS)
        },
    )?;
    l.func_wrap(
        W,
        "random_get",
        |mut c: C<'_>, buf: i32, len: i32| -> Result<i32> {
            let bytes = c.data_mut().random_bytes(len as u32 as usize);
            write(&mut c, buf, &bytes)?;
            Ok(ERRNO_SUCCESS)
        },
    )?;
    l.func_wrap(W, "sched_yield", |_: C<'_>| -> i32 { ERRNO_SUCCESS })?;
    Ok(())
}
