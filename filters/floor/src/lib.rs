//! # kakeya-floor
//!
//! The floor of any body-reading proxy-wasm filter, as the benchmark reference for the gate
//! (`cargo xtask bench`, docs/BENCHMARKS.md): on every request it pauses on the headers, reads
//! the whole buffered body once (one `proxy_get_buffer_bytes`), sets one request header
//! ([`HEADER`]: the number of body bytes it read, one `proxy_replace_header_map_value`) and
//! continues. Nothing else: no header-map read, no parsing, no metrics, no logging.
//!
//! With a plugin configuration it also makes, after the body read, the hostcalls the
//! configuration lists and nothing else ([`Pattern`]): the bench gives it the gate's hostcall
//! census, so the difference between this "hostcall floor" and the gate is the gate's guest
//! computation, and the difference to the plain floor is the cost of the hostcalls.
//!
//! The hostcalls are made through their raw ABI imports, as the gate does (`host.rs`), because
//! the SDK's wrappers panic on an unexpected status. A failed hostcall is ignored (this filter
//! guards nothing; the bench's probe request checks that the header arrives).
//!
//! Build: `cargo build -p kakeya-floor --target wasm32-wasip1 --profile wasm` (`cargo xtask bench`
//! does it). Envoy needs `allow_on_headers_stop_iteration: true`, as for the gate.

// Data plane: no indexing that can panic (`get`, iterators, `split_at_checked` instead).
#![deny(clippy::indexing_slicing)]

/// The request header the floor sets: the body's length in bytes, as read.
pub const HEADER: &str = "x-floor-body-bytes";

/// Extra hostcalls per request, from the plugin configuration: comma-separated `name=count`
/// pairs with the ABI names (without `proxy_`) of the gate's hostcall census, e.g.
/// `get_header_map_pairs=2,replace_header_map_value=4,get_current_time_nanoseconds=2`.
/// `replace_header_map_value` and `get_buffer_bytes` count the floor's own call; an empty
/// configuration is the plain floor.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pattern {
    /// Reads of the whole request-header map.
    pub header_map_reads: u32,
    /// Request-header writes beyond the floor's own.
    pub extra_header_writes: u32,
    pub clock_reads: u32,
    pub metric_increments: u32,
    /// Shared-data reads (of a key nobody sets).
    pub shared_data_reads: u32,
}

impl Pattern {
    /// Parses the configuration; `None` for an unknown name or a bad count.
    pub fn parse(config: &str) -> Option<Pattern> {
        let mut p = Pattern::default();
        for pair in config.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (name, count) = pair.split_once('=')?;
            let n: u32 = count.trim().parse().ok()?;
            match name.trim() {
                "get_header_map_pairs" => p.header_map_reads = n,
                "replace_header_map_value" => p.extra_header_writes = n.saturating_sub(1),
                "get_current_time_nanoseconds" => p.clock_reads = n,
                "increment_metric" => p.metric_increments = n,
                "get_shared_data" => p.shared_data_reads = n,
                // The floor's own body read.
                "get_buffer_bytes" if n == 1 => {}
                _ => return None,
            }
        }
        Some(p)
    }
}

#[cfg(target_arch = "wasm32")]
mod filter {
    use super::Pattern;
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
        fn proxy_get_header_map_pairs(
            map_type: u32,
            return_map_data: *mut *mut u8,
            return_map_size: *mut usize,
        ) -> u32;
        fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> u32;
        fn proxy_define_metric(
            metric_type: u32,
            name_data: *const u8,
            name_size: usize,
            return_id: *mut u32,
        ) -> u32;
        fn proxy_increment_metric(metric_id: u32, offset: i64) -> u32;
        fn proxy_get_shared_data(
            key_data: *const u8,
            key_size: usize,
            return_value_data: *mut *mut u8,
            return_value_size: *mut usize,
            return_cas: *mut u32,
        ) -> u32;
    }

    const STATUS_OK: u32 = 0;
    /// A header value of the length of a typical `x-kakeya-*` value.
    const VALUE: &str = "0123456789abcdef0123456789abcdef";
    const EXTRA_NAMES: [&str; 16] = [
        "x-floor-0",
        "x-floor-1",
        "x-floor-2",
        "x-floor-3",
        "x-floor-4",
        "x-floor-5",
        "x-floor-6",
        "x-floor-7",
        "x-floor-8",
        "x-floor-9",
        "x-floor-10",
        "x-floor-11",
        "x-floor-12",
        "x-floor-13",
        "x-floor-14",
        "x-floor-15",
    ];

    /// Takes a buffer the host allocated through the SDK's proxy_on_memory_allocate.
    ///
    /// # Safety
    /// `ptr` must be null or come from `proxy_on_memory_allocate(len)` and be owned by no one.
    unsafe fn take(ptr: *mut u8, len: usize) -> Vec<u8> {
        if ptr.is_null() {
            Vec::new()
        } else {
            // SAFETY: per the contract above, capacity == length == len.
            unsafe { Vec::from_raw_parts(ptr, len, len) }
        }
    }

    /// Buffer `buffer_type` from 0 to `size` (empty on any non-Ok status).
    fn read_buffer(buffer_type: BufferType, size: usize) -> Vec<u8> {
        let mut ptr: *mut u8 = core::ptr::null_mut();
        let mut len: usize = 0;
        // SAFETY: the out-pointers are valid; on Ok the buffer is ours (see `take`).
        unsafe {
            if proxy_get_buffer_bytes(buffer_type as u32, 0, size, &mut ptr, &mut len) != STATUS_OK
            {
                return Vec::new();
            }
            take(ptr, len)
        }
    }

    fn set_request_header(name: &str, value: &str) {
        // SAFETY: the pointers are valid for their lengths during the call.
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

    fn read_header_map() -> Vec<u8> {
        let mut ptr: *mut u8 = core::ptr::null_mut();
        let mut len: usize = 0;
        // SAFETY: as in `read_buffer`.
        unsafe {
            if proxy_get_header_map_pairs(MapType::HttpRequestHeaders as u32, &mut ptr, &mut len)
                != STATUS_OK
            {
                return Vec::new();
            }
            take(ptr, len)
        }
    }

    /// The extra hostcalls of `p` (results dropped).
    fn pattern_calls(p: &Pattern, metric: Option<u32>) {
        for _ in 0..p.header_map_reads {
            drop(read_header_map());
        }
        for name in EXTRA_NAMES
            .iter()
            .cycle()
            .take(p.extra_header_writes as usize)
        {
            set_request_header(name, VALUE);
        }
        for _ in 0..p.clock_reads {
            let mut t = 0u64;
            // SAFETY: valid out-pointer.
            let _ = unsafe { proxy_get_current_time_nanoseconds(&mut t) };
        }
        if let Some(id) = metric {
            for _ in 0..p.metric_increments {
                // SAFETY: plain values.
                let _ = unsafe { proxy_increment_metric(id, 1) };
            }
        }
        for _ in 0..p.shared_data_reads {
            let key = "kakeya-floor.unset";
            let (mut ptr, mut len, mut cas) = (core::ptr::null_mut(), 0usize, 0u32);
            // SAFETY: valid pointers; on Ok the value buffer is ours (see `take`).
            unsafe {
                if proxy_get_shared_data(key.as_ptr(), key.len(), &mut ptr, &mut len, &mut cas)
                    == STATUS_OK
                {
                    drop(take(ptr, len));
                }
            }
        }
    }

    #[derive(Default)]
    struct Root {
        pattern: Pattern,
        metric: Option<u32>,
    }

    impl Context for Root {}

    impl RootContext for Root {
        fn on_configure(&mut self, size: usize) -> bool {
            let config = read_buffer(BufferType::PluginConfiguration, size);
            let Some(p) = core::str::from_utf8(&config).ok().and_then(Pattern::parse) else {
                return false;
            };
            self.pattern = p;
            if p.metric_increments > 0 {
                let name = "kakeya_floor.calls";
                let mut id = 0u32;
                // SAFETY: valid pointers during the call; 0 = counter.
                let s = unsafe { proxy_define_metric(0, name.as_ptr(), name.len(), &mut id) };
                self.metric = (s == STATUS_OK).then_some(id);
            }
            true
        }

        fn get_type(&self) -> Option<ContextType> {
            Some(ContextType::HttpContext)
        }

        fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
            Some(Box::new(Floor {
                pattern: self.pattern,
                metric: self.metric,
            }))
        }
    }

    struct Floor {
        pattern: Pattern,
        metric: Option<u32>,
    }

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
            let body = read_buffer(BufferType::HttpRequestBody, body_size);
            set_request_header(super::HEADER, &body.len().to_string());
            pattern_calls(&self.pattern, self.metric);
            Action::Continue
        }
    }

    proxy_wasm::main! {{
        proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::<Root>::default() });
    }}
}

#[cfg(test)]
mod tests {
    use super::Pattern;

    #[test]
    fn parses_the_census_names() {
        assert_eq!(Pattern::parse(""), Some(Pattern::default()));
        let p = Pattern::parse(
            "get_buffer_bytes=1, get_header_map_pairs=2,replace_header_map_value=4,\
             get_current_time_nanoseconds=3,increment_metric=4,get_shared_data=1",
        )
        .unwrap();
        assert_eq!(
            p,
            Pattern {
                header_map_reads: 2,
                extra_header_writes: 3,
                clock_reads: 3,
                metric_increments: 4,
                shared_data_reads: 1,
            }
        );
        assert_eq!(Pattern::parse("send_local_response=1"), None);
        assert_eq!(Pattern::parse("get_header_map_pairs=x"), None);
        assert_eq!(Pattern::parse("get_buffer_bytes=2"), None);
    }
}
