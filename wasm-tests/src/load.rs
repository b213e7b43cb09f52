//! A closed-loop HTTP load generator (fixed concurrency, keep-alive connections) and a trivial
//! upstream, for the benchmarks in `cargo xtask bench`. Latencies are recorded per request and
//! summarised as percentiles over all of them (no sampling).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Summary of one load run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LoadReport {
    pub requests: usize,
    pub concurrency: usize,
    pub seconds: f64,
    pub throughput_rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub mean_ms: f64,
    /// Answers by status code.
    pub statuses: std::collections::BTreeMap<u16, usize>,
}

/// Percentile `q` (0..=1) of sorted `xs` by nearest rank.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

/// Sends `total` requests with `concurrency` workers; `request(i)` gives the i-th request as
/// (method, url, headers, body).
pub fn run<F>(total: usize, concurrency: usize, request: F) -> LoadReport
where
    F: Fn(usize) -> (String, Vec<(String, String)>, Vec<u8>) + Sync,
{
    let next = AtomicUsize::new(0);
    let started = Instant::now();
    let per_worker: Vec<(Vec<f64>, Vec<u16>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..concurrency)
            .map(|_| {
                let (next, request) = (&next, &request);
                s.spawn(move || {
                    let agent = ureq::AgentBuilder::new()
                        .timeout(Duration::from_secs(30))
                        .max_idle_connections(1)
                        .build();
                    let mut lat = Vec::new();
                    let mut statuses = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= total {
                            break;
                        }
                        let (url, headers, body) = request(i);
                        let mut req = agent.post(&url);
                        for (k, v) in &headers {
                            req = req.set(k, v);
                        }
                        let t = Instant::now();
                        let status = match req.send_bytes(&body) {
                            Ok(r) => {
                                let s = r.status();
                                let _ = r.into_string();
                                s
                            }
                            Err(ureq::Error::Status(s, r)) => {
                                let _ = r.into_string();
                                s
                            }
                            Err(_) => 0,
                        };
                        lat.push(t.elapsed().as_secs_f64() * 1e3);
                        statuses.push(status);
                    }
                    (lat, statuses)
                })
            })
            .collect();
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    let seconds = started.elapsed().as_secs_f64();
    let mut lat: Vec<f64> = per_worker
        .iter()
        .flat_map(|(l, _)| l.iter().copied())
        .collect();
    let mut statuses = std::collections::BTreeMap::new();
    for s in per_worker.iter().flat_map(|(_, s)| s.iter()) {
        *statuses.entry(*s).or_insert(0) += 1;
    }
    lat.sort_by(f64::total_cmp);
    LoadReport {
        requests: lat.len(),
        concurrency,
        seconds,
        throughput_rps: lat.len() as f64 / seconds,
        p50_ms: percentile(&lat, 0.50),
        p99_ms: percentile(&lat, 0.99),
        mean_ms: lat.iter().sum::<f64>() / lat.len().max(1) as f64,
        statuses,
    }
}

/// In-guest timings the trivial upstream saw in forwarded requests (`x-kakeya-verify-ns`,
/// `x-kakeya-score-ns`): the filter's own clock, measured inside Envoy's V8.
static CAPTURED: std::sync::Mutex<Vec<(&'static str, u64)>> = std::sync::Mutex::new(Vec::new());

/// Takes the timings captured so far.
pub fn take_captured() -> Vec<(&'static str, u64)> {
    CAPTURED
        .lock()
        .map(|mut v| std::mem::take(&mut *v))
        .unwrap_or_default()
}

/// A minimal HTTP/1.1 keep-alive upstream that answers every request with 200 `{}`: the same
/// cheap backend for the gated and the ungated Envoy route, so their difference is the filter.
pub fn spawn_trivial_upstream() -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || serve_connection(stream));
        }
    });
    Ok(addr)
}

fn serve_connection(stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    loop {
        let mut content_length = 0usize;
        let mut line = String::new();
        // Request line and headers.
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    content_length = v.trim().parse().unwrap_or(0);
                }
                for name in ["x-kakeya-verify-ns", "x-kakeya-score-ns"] {
                    if k.eq_ignore_ascii_case(name) {
                        if let (Ok(ns), Ok(mut c)) = (v.trim().parse(), CAPTURED.lock()) {
                            c.push((name, ns));
                        }
                    }
                }
            }
        }
        let mut body = vec![0u8; content_length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let resp =
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
        if writer.write_all(resp).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn nearest_rank_percentiles() {
        let xs: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&xs, 0.5), 50.0);
        assert_eq!(percentile(&xs, 0.99), 99.0);
        assert_eq!(percentile(&xs, 1.0), 100.0);
        assert_eq!(percentile(&[3.0], 0.99), 3.0);
        assert!(percentile(&[], 0.5).is_nan());
    }
}
