//! The hostcalls the filter makes, called through their raw ABI v0.2.1 imports so that a failure
//! becomes an `Err` (ecosystem notes §1.2): the SDK's wrappers, `proxy_wasm::hostcalls::*`
//! included, `panic!` on any status they do not expect, which traps the VM. The filter must not
//! use those wrappers on the request path; its callers fail closed on `Err`. On non-wasm targets
//! (native tests) every call reports `Err` without calling anything.

/// A non-Ok proxy-wasm status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostStatus(pub u32);

/// `WasmResult` codes used here.
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
const STATUS_OK: u32 = 0;
const STATUS_NOT_FOUND: u32 = 1;
const STATUS_SERIALIZATION_FAILURE: u32 = 3;
/// `CasMismatch`: a shared-data write lost a race.
pub const STATUS_CAS_MISMATCH: u32 = 8;

impl core::fmt::Display for HostStatus {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "host status {}", self.0)
    }
}

#[cfg(target_arch = "wasm32")]
mod ffi {
    #[link(wasm_import_module = "env")]
    extern "C" {
        pub fn proxy_define_metric(
            metric_type: u32,
            name_data: *const u8,
            name_size: usize,
            return_id: *mut u32,
        ) -> u32;
        pub fn proxy_increment_metric(metric_id: u32, offset: i64) -> u32;
        pub fn proxy_record_metric(metric_id: u32, value: u64) -> u32;
        pub fn proxy_continue_stream(stream_type: u32) -> u32;
        #[allow(clippy::too_many_arguments)]
        pub fn proxy_send_local_response(
            status_code: u32,
            status_code_details_data: *const u8,
            status_code_details_size: usize,
            body_data: *const u8,
            body_size: usize,
            headers_data: *const u8,
            headers_size: usize,
            grpc_status: i32,
        ) -> u32;
        pub fn proxy_get_header_map_pairs(
            map_type: u32,
            return_map_data: *mut *mut u8,
            return_map_size: *mut usize,
        ) -> u32;
        pub fn proxy_replace_header_map_value(
            map_type: u32,
            key_data: *const u8,
            key_size: usize,
            value_data: *const u8,
            value_size: usize,
        ) -> u32;
        pub fn proxy_remove_header_map_value(
            map_type: u32,
            key_data: *const u8,
            key_size: usize,
        ) -> u32;
        pub fn proxy_get_buffer_bytes(
            buffer_type: u32,
            start: usize,
            max_size: usize,
            return_buffer_data: *mut *mut u8,
            return_buffer_size: *mut usize,
        ) -> u32;
        pub fn proxy_set_buffer_bytes(
            buffer_type: u32,
            start: usize,
            size: usize,
            buffer_data: *const u8,
            buffer_size: usize,
        ) -> u32;
        pub fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> u32;
        pub fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
        pub fn proxy_get_shared_data(
            key_data: *const u8,
            key_size: usize,
            return_value_data: *mut *mut u8,
            return_value_size: *mut usize,
            return_cas: *mut u32,
        ) -> u32;
        pub fn proxy_set_shared_data(
            key_data: *const u8,
            key_size: usize,
            value_data: *const u8,
            value_size: usize,
            cas: u32,
        ) -> u32;
        pub fn proxy_call_foreign_function(
            function_name_data: *const u8,
            function_name_size: usize,
            arguments_data: *const u8,
            arguments_size: usize,
            results_data: *mut *mut u8,
            results_size: *mut usize,
        ) -> u32;
    }

    /// Takes ownership of a buffer the host allocated in guest memory through the SDK's
    /// `proxy_on_memory_allocate` (a boxed slice of exactly `size` bytes).
    ///
    /// # Safety
    /// `ptr` must be null or come from `proxy_on_memory_allocate(size)`, and not be owned yet.
    pub unsafe fn take(ptr: *mut u8, size: usize) -> Vec<u8> {
        if ptr.is_null() {
            Vec::new()
        } else {
            // SAFETY: per the contract above, capacity == length == size.
            unsafe { Vec::from_raw_parts(ptr, size, size) }
        }
    }
}

#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
fn check(status: u32) -> Result<(), HostStatus> {
    if status == STATUS_OK {
        Ok(())
    } else {
        Err(HostStatus(status))
    }
}

/// `proxy_get_header_map_pairs`: the whole map, names as (lossy) UTF-8, values as bytes (Envoy
/// allows non-UTF-8 values). A malformed serialization is an `Err` too.
pub fn get_map(map_type: proxy_wasm::types::MapType) -> Result<Vec<(String, Vec<u8>)>, HostStatus> {
    #[cfg(target_arch = "wasm32")]
    {
        let mut ptr: *mut u8 = core::ptr::null_mut();
        let mut size: usize = 0;
        // SAFETY: out-pointers are valid; on Ok the host hands us a buffer it allocated through
        // proxy_on_memory_allocate, which `take` then owns.
        let bytes = unsafe {
            check(ffi::proxy_get_header_map_pairs(
                map_type as u32,
                &mut ptr,
                &mut size,
            ))?;
            ffi::take(ptr, size)
        };
        deserialize_map(&bytes).ok_or(HostStatus(STATUS_SERIALIZATION_FAILURE))
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        let _ = (map_type, STATUS_SERIALIZATION_FAILURE);
        Err(HostStatus(u32::MAX))
    }
}

/// `proxy_replace_header_map_value` (set, replacing every existing value).
pub fn set_map_value(
    map_type: proxy_wasm::types::MapType,
    name: &str,
    value: &str,
) -> Result<(), HostStatus> {
    #[cfg(target_arch = "wasm32")]
    {
        // SAFETY: pointers are valid for their lengths during the call.
        check(unsafe {
            ffi::proxy_replace_header_map_value(
                map_type as u32,
                name.as_ptr(),
                name.len(),
                value.as_ptr(),
                value.len(),
            )
        })
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        let _ = (map_type, name, value);
        Err(HostStatus(u32::MAX))
    }
}

/// `proxy_remove_header_map_value` (every value of `name`).
pub fn remove_map_value(
    map_type: proxy_wasm::types::MapType,
    name: &str,
) -> Result<(), HostStatus> {
    #[cfg(target_arch = "wasm32")]
    {
        // SAFETY: pointer valid for its length during the call.
        check(unsafe {
            ffi::proxy_remove_header_map_value(map_type as u32, name.as_ptr(), name.len())
        })
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        let _ = (map_type, name);
        Err(HostStatus(u32::MAX))
    }
}

/// `proxy_get_buffer_bytes`: `NotFound` (no such buffer) and an empty range are an empty
/// buffer, as in the SDK; any other non-Ok status is an `Err`.
pub fn get_buffer(
    buffer_type: proxy_wasm::types::BufferType,
    start: usize,
    max_size: usize,
) -> Result<Vec<u8>, HostStatus> {
    #[cfg(target_arch = "wasm32")]
    {
        let mut ptr: *mut u8 = core::ptr::null_mut();
        let mut size: usize = 0;
        // SAFETY: out-pointers are valid; on Ok the buffer (if any) is ours, see `take`.
        let status = unsafe {
            ffi::proxy_get_buffer_bytes(buffer_type as u32, start, max_size, &mut ptr, &mut size)
        };
        match status {
            // SAFETY: see above.
            STATUS_OK => Ok(unsafe { ffi::take(ptr, size) }),
            STATUS_NOT_FOUND => Ok(Vec::new()),
            s => Err(HostStatus(s)),
        }
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        let _ = (buffer_type, start, max_size, STATUS_NOT_FOUND);
        Err(HostStatus(u32::MAX))
    }
}

/// `proxy_get_current_time_nanoseconds` (ns since the Unix epoch).
pub fn now_ns() -> Result<u64, HostStatus> {
    #[cfg(target_arch = "wasm32")]
    {
        let mut t: u64 = 0;
        // SAFETY: the host writes one u64 into `t`.
        check(unsafe { ffi::proxy_get_current_time_nanoseconds(&mut t) })?;
        Ok(t)
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        Err(HostStatus(u32::MAX))
    }
}

/// `proxy_set_tick_period_milliseconds` (0 disables the tick).
pub fn set_tick_period_ms(ms: u32) -> Result<(), HostStatus> {
    #[cfg(target_arch = "wasm32")]
    {
        // SAFETY: plain integer.
        check(unsafe { ffi::proxy_set_tick_period_milliseconds(ms) })
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        let _ = ms;
        Err(HostStatus(u32::MAX))
    }
}

/// `proxy_get_shared_data`: `Ok(None)` when the key does not exist, else (value, cas).
pub fn get_shared_data(key: &str) -> Result<Option<(Vec<u8>, u32)>, HostStatus> {
    #[cfg(target_arch = "wasm32")]
    {
        let mut ptr: *mut u8 = core::ptr::null_mut();
        let mut size: usize = 0;
        let mut cas: u32 = 0;
        // SAFETY: out-pointers are valid; on Ok the buffer (if any) is ours, see `take`.
        let status = unsafe {
            ffi::proxy_get_shared_data(key.as_ptr(), key.len(), &mut ptr, &mut size, &mut cas)
        };
        match status {
            // SAFETY: see above.
            STATUS_OK => Ok(Some((unsafe { ffi::take(ptr, size) }, cas))),
            STATUS_NOT_FOUND => Ok(None),
            s => Err(HostStatus(s)),
        }
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        let _ = key;
        Err(HostStatus(u32::MAX))
    }
}

/// `proxy_set_shared_data`: `cas == 0` writes unconditionally, otherwise only over that
/// version (`Err(HostStatus(STATUS_CAS_MISMATCH))` when it lost a race).
pub fn set_shared_data(key: &str, value: &[u8], cas: u32) -> Result<(), HostStatus> {
    #[cfg(target_arch = "wasm32")]
    {
        // SAFETY: pointers are valid for their lengths during the call.
        check(unsafe {
            ffi::proxy_set_shared_data(key.as_ptr(), key.len(), value.as_ptr(), value.len(), cas)
        })
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        let _ = (key, value, cas);
        Err(HostStatus(u32::MAX))
    }
}

/// Inverse of [`serialize_map`]; `None` on a malformed buffer (never a panic). Names are
/// decoded lossily (Envoy only admits token characters in them anyway).
pub fn deserialize_map(bytes: &[u8]) -> Option<Vec<(String, Vec<u8>)>> {
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let u32_at = |i: usize| -> Option<usize> {
        let b: [u8; 4] = bytes.get(i..i.checked_add(4)?)?.try_into().ok()?;
        usize::try_from(u32::from_le_bytes(b)).ok()
    };
    let n = u32_at(0)?;
    let mut p = n.checked_mul(8)?.checked_add(4)?;
    if p > bytes.len() {
        return None;
    }
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let klen = u32_at(4 + i * 8)?;
        let vlen = u32_at(8 + i * 8)?;
        let k = bytes.get(p..p.checked_add(klen)?)?;
        p = p.checked_add(klen)?.checked_add(1)?;
        let v = bytes.get(p..p.checked_add(vlen)?)?;
        p = p.checked_add(vlen)?.checked_add(1)?;
        out.push((String::from_utf8_lossy(k).into_owned(), v.to_vec()));
    }
    Some(out)
}

const COUNTER: u32 = 0;
const HISTOGRAM: u32 = 2;

/// Defines (or looks up) a histogram.
pub fn define_histogram(name: &str) -> Result<u32, HostStatus> {
    #[cfg(target_arch = "wasm32")]
    {
        let mut id: u32 = 0;
        // SAFETY: pointers are valid for the call; the host writes one u32 into `id`.
        check(unsafe { ffi::proxy_define_metric(HISTOGRAM, name.as_ptr(), name.len(), &mut id) })?;
        Ok(id)
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        let _ = (name, HISTOGRAM);
        Err(HostStatus(u32::MAX))
    }
}

/// Records one histogram sample.
pub fn record(id: u32, value: u64) -> Result<(), HostStatus> {
    #[cfg(target_arch = "wasm32")]
    {
        // SAFETY: plain integers.
        check(unsafe { ffi::proxy_record_metric(id, value) })
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        let _ = (id, value);
        Err(HostStatus(u32::MAX))
    }
}

/// `proxy_continue_stream(HttpRequest)`: resumes a request paused for a callout (the SDK's
/// `resume_http_request` panics on a non-Ok status).
pub fn continue_request() -> Result<(), HostStatus> {
    #[cfg(target_arch = "wasm32")]
    {
        // SAFETY: plain integer (0 = the request stream).
        check(unsafe { ffi::proxy_continue_stream(0) })
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        Err(HostStatus(u32::MAX))
    }
}

/// `proxy_continue_stream(HttpResponse)`: resumes a response paused for a callout.
pub fn continue_response() -> Result<(), HostStatus> {
    #[cfg(target_arch = "wasm32")]
    {
        // SAFETY: plain integer (1 = the response stream).
        check(unsafe { ffi::proxy_continue_stream(1) })
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        Err(HostStatus(u32::MAX))
    }
}

/// `proxy_set_buffer_bytes`: replaces the `size` bytes from `start` with `data` (Envoy: from
/// 0 with `size` at least the buffer's length replaces it all; `size` 0 prepends).
pub fn set_buffer(
    buffer_type: proxy_wasm::types::BufferType,
    start: usize,
    size: usize,
    data: &[u8],
) -> Result<(), HostStatus> {
    #[cfg(target_arch = "wasm32")]
    {
        // SAFETY: pointer valid for its length during the call.
        check(unsafe {
            ffi::proxy_set_buffer_bytes(buffer_type as u32, start, size, data.as_ptr(), data.len())
        })
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        let _ = (buffer_type, start, size, data);
        Err(HostStatus(u32::MAX))
    }
}

/// `dispatch_http_call` through the SDK, which registers the token so that Envoy's answer
/// reaches this context's `on_http_call_response`. The SDK returns `Err` for the statuses
/// Envoy's `httpCall` gives (`BadArgument`: no such cluster or bad headers;
/// `InternalFailure`); it panics only on a status Envoy does not return for this call.
pub fn dispatch_http_call(
    cluster: &str,
    headers: Vec<(&str, &str)>,
    body: &[u8],
    timeout_ms: u32,
) -> Result<u32, HostStatus> {
    #[cfg(target_arch = "wasm32")]
    {
        proxy_wasm::hostcalls::dispatch_http_call(
            cluster,
            headers,
            Some(body),
            Vec::new(),
            core::time::Duration::from_millis(u64::from(timeout_ms)),
        )
        .map_err(|s| HostStatus(s as u32))
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        let _ = (cluster, headers, body, timeout_ms);
        Err(HostStatus(u32::MAX))
    }
}

/// `proxy_call_foreign_function(name, args)`: a function the host registered (Envoy's
/// `clear_route_cache`, for instance); its result bytes. `NotFound` when the host has no such
/// function.
pub fn call_foreign_function(name: &str, args: &[u8]) -> Result<Vec<u8>, HostStatus> {
    #[cfg(target_arch = "wasm32")]
    {
        let mut ptr: *mut u8 = core::ptr::null_mut();
        let mut len: usize = 0;
        // SAFETY: the name and arguments are valid for the call; the host writes the result
        // pointer and length, a buffer it allocated through proxy_on_memory_allocate.
        check(unsafe {
            ffi::proxy_call_foreign_function(
                name.as_ptr(),
                name.len(),
                args.as_ptr(),
                args.len(),
                &mut ptr,
                &mut len,
            )
        })?;
        // SAFETY: ptr/len come from the host's allocation of exactly len bytes (or null).
        Ok(unsafe { ffi::take(ptr, len) })
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        let _ = (name, args);
        Err(HostStatus(u32::MAX))
    }
}

/// `BadArgument`: what Envoy answers a callout to a cluster it does not have.
pub const STATUS_BAD_ARGUMENT: u32 = 2;

/// Defines (or looks up) a counter.
pub fn define_counter(name: &str) -> Result<u32, HostStatus> {
    #[cfg(target_arch = "wasm32")]
    {
        let mut id: u32 = 0;
        // SAFETY: pointers are valid for the call; the host writes one u32 into `id`.
        check(unsafe { ffi::proxy_define_metric(COUNTER, name.as_ptr(), name.len(), &mut id) })?;
        Ok(id)
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        let _ = (name, COUNTER);
        Err(HostStatus(u32::MAX))
    }
}

pub fn increment(id: u32, by: i64) -> Result<(), HostStatus> {
    #[cfg(target_arch = "wasm32")]
    {
        // SAFETY: plain integers.
        check(unsafe { ffi::proxy_increment_metric(id, by) })
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        let _ = (id, by);
        Err(HostStatus(u32::MAX))
    }
}

/// Serializes a header map in the proxy-wasm wire format: count, (name len, value len)*, then
/// NUL-terminated names and values.
pub fn serialize_map(map: &[(&str, &str)]) -> Vec<u8> {
    let size = 4 + map
        .iter()
        .map(|(k, v)| k.len() + v.len() + 10)
        .sum::<usize>();
    let mut out = Vec::with_capacity(size);
    let len = |n: usize| u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes();
    out.extend_from_slice(&len(map.len()));
    for (k, v) in map {
        out.extend_from_slice(&len(k.len()));
        out.extend_from_slice(&len(v.len()));
    }
    for (k, v) in map {
        out.extend_from_slice(k.as_bytes());
        out.push(0);
        out.extend_from_slice(v.as_bytes());
        out.push(0);
    }
    out
}

/// `proxy_send_local_response` (the SDK's `send_http_response` panics on a non-Ok status).
pub fn send_local_response(
    status: u32,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<(), HostStatus> {
    let map = serialize_map(headers);
    #[cfg(target_arch = "wasm32")]
    {
        // SAFETY: all pointers are valid for their lengths during the call.
        check(unsafe {
            ffi::proxy_send_local_response(
                status,
                core::ptr::null(),
                0,
                body.as_ptr(),
                body.len(),
                map.as_ptr(),
                map.len(),
                -1,
            )
        })
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        let _ = (status, body, map);
        Err(HostStatus(u32::MAX))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn map_round_trip_and_malformed_input() {
        let m = super::serialize_map(&[(":path", "/v1/pcs/submit"), ("x-a", "")]);
        assert_eq!(
            super::deserialize_map(&m),
            Some(vec![
                (":path".to_string(), b"/v1/pcs/submit".to_vec()),
                ("x-a".to_string(), Vec::new())
            ])
        );
        assert_eq!(super::deserialize_map(&[]), Some(Vec::new()));
        for cut in 1..m.len() {
            // A truncated buffer never panics.
            let _ = super::deserialize_map(&m[..cut]);
        }
        assert_eq!(super::deserialize_map(&[1, 0, 0, 0]), None);
        assert_eq!(super::deserialize_map(&[255, 255, 255, 255, 0]), None);
    }

    #[test]
    fn map_wire_format() {
        let m = super::serialize_map(&[("a", "bc"), ("", "")]);
        assert_eq!(
            m,
            vec![
                2, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, b'a', 0, b'b', b'c', 0,
                0, 0
            ]
        );
    }
}
