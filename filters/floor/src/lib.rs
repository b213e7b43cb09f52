//! # kakeya-floor
//!
//! The floor of any body-reading proxy-wasm filter, as the benchmark reference for the gate
//! (`cargo xtask bench`, docs/BENCHMARKS.md): on every request it pauses on the headers, reads
//! the whole buffered body once (one `proxy_get_buffer_bytes`), sets one request header
//! ([`HEADER`]: the number of body bytes it read, one `proxy_replace_header_map_value`) and
//! continues. Nothing else: no header-map read, no parsing, no metrics, no logging.
//!
//! The two hostcalls are made through their raw ABI imports, as the gate does (`host.rs`), because
//! the SDK's wrappers panic on an unexpected status. A failed hostcall leaves the header unset
//! and the request continues (this filter guards nothing; the bench's probe request checks that
//! the header arrives).
//!
//! Build: `cargo build -p kakeya-floor --target wasm32-wasip1 --profile wasm` (`cargo xtask bench`
//! does it). Envoy needs `allow_on_headers_stop_iteration: true`, as for the gate.

/// The request header the floor sets: the body's length in bytes, as read.
pub const HEADER: &str = "x-floor-body-bytes";

#[cfg(target_arch = "wasm32")]
mod filter {
    use proxy_wasm::traits::{Context, HttpContext, RootContext};
    use proxy_wasm::types::{Action, BufferType, ContextType, MapType};

    #[link(wasm_import_module = "env")]
    extern "C" {
        fn proxy_get_buffer_bytes(
            buffer_type: u32,
            start: usize,
            max_size: usize,
            return_buffer_data: *mut *mut u8,
            return_buffer_size: *mut usize,
        ) -> u32;
        fn proxy_replace_header_map_value(
            map_type: u32,
            key_data: *const u8,
            key_size: usize,
            value_data: *const u8,
            value_size: usize,
        ) -> u32;
    }

    const STATUS_OK: u32 = 0;

    /// The whole request body (empty on any non-Ok status).
    fn read_body(size: usize) -> Vec<u8> {
        let mut ptr: *mut u8 = core::ptr::null_mut();
        let mut len: usize = 0;
        // SAFETY: the out-pointers are valid; on Ok the host hands over a buffer it allocated
        // through the SDK's proxy_on_memory_allocate (a boxed slice of exactly `len` bytes).
        let status = unsafe {
            proxy_get_buffer_bytes(
                BufferType::HttpRequestBody as u32,
                0,
                size,
                &mut ptr,
                &mut len,
            )
        };
        if status != STATUS_OK || ptr.is_null() {
            return Vec::new();
        }
        // SAFETY: see above: capacity == length == len, and the buffer is not owned elsewhere.
        unsafe { Vec::from_raw_parts(ptr, len, len) }
    }

    fn set_request_header(name: &str, value: &str) {
        // SAFETY: the pointers are valid for their lengths during the call. A failure leaves
        // the header unset (see the crate docs).
        let _ = unsafe {
            proxy_replace_header_map_value(
                MapType::HttpRequestHeaders as u32,
                name.as_ptr(),
                name.len(),
                value.as_ptr(),
                value.len(),
            )
        };
    }

    struct Root;

    impl Context for Root {}

    impl RootContext for Root {
        fn get_type(&self) -> Option<ContextType> {
            Some(ContextType::HttpContext)
        }

        fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
            Some(Box::new(Floor))
        }
    }

    struct Floor;

    impl Context for Floor {}

    impl HttpContext for Floor {
        fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
            if end_of_stream {
                set_request_header(super::HEADER, "0");
                Action::Continue
            } else {
                Action::Pause
            }
        }

        fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
            if !end_of_stream {
                return Action::Pause;
            }
            // After Pause, body_size is the whole buffered body.
            let body = read_body(body_size);
            set_request_header(super::HEADER, &body.len().to_string());
            Action::Continue
        }
    }

    proxy_wasm::main! {{
        proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root) });
    }}
}
