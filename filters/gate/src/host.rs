//! The few hostcalls whose SDK wrappers `panic!` on an unexpected host status, called through
//! their raw ABI v0.2.1 imports so that a failure becomes an `Err` (ecosystem notes §1.2). On
//! non-wasm targets (native tests) they report `Err` without calling anything.

/// A non-Ok proxy-wasm status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostStatus(pub u32);

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
    }
}

const COUNTER: u32 = 0;

/// Defines (or looks up) a counter.
pub fn define_counter(name: &str) -> Result<u32, HostStatus> {
    #[cfg(target_arch = "wasm32")]
    {
        let mut id: u32 = 0;
        // SAFETY: pointers are valid for the call; the host writes one u32 into `id`.
        let status =
            unsafe { ffi::proxy_define_metric(COUNTER, name.as_ptr(), name.len(), &mut id) };
        if status == 0 {
            Ok(id)
        } else {
            Err(HostStatus(status))
        }
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
        let status = unsafe { ffi::proxy_increment_metric(id, by) };
        if status == 0 {
            Ok(())
        } else {
            Err(HostStatus(status))
        }
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
        let rc = unsafe {
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
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(HostStatus(rc))
        }
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
