//! Latency of the scorer on a set of requests: every request once with empty caches (a miss:
//! response, question and context encoded), then again with its context cached (a new
//! response against a known context is what a retry of another answer looks like), then the
//! same request again (an answer-cache hit).

use crate::scorer::Scorer;
use kakeya_core::microvote::MicroVoteRequest;
use serde::Serialize;
use std::time::Instant;

#[derive(Debug, Clone, Serialize)]
pub struct Percentiles {
    pub n: usize,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub max_ms: f64,
}

impl Percentiles {
    pub fn of(mut ms: Vec<f64>) -> Percentiles {
        ms.sort_by(f64::total_cmp);
        let q = |q: f64| {
            ms.get(((ms.len().max(1) - 1) as f64 * q).round() as usize)
                .copied()
                .unwrap_or(0.0)
        };
        Percentiles {
            n: ms.len(),
            p50_ms: q(0.5),
            p95_ms: q(0.95),
            max_ms: ms.last().copied().unwrap_or(0.0),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Nothing cached: every text encoded.
    pub miss: Percentiles,
    /// The context's encoding cached, the response new to the server.
    pub context_hit: Percentiles,
    /// The whole answer cached.
    pub answer_hit: Percentiles,
}

fn time_ms(f: impl FnOnce()) -> f64 {
    let t = Instant::now();
    f();
    t.elapsed().as_secs_f64() * 1e3
}

/// Measures `reqs` on `scorer` (whose caches should start empty and hold them all).
/// `progress(done)` is called after each request of each of the three passes.
pub fn run(scorer: &Scorer, reqs: &[MicroVoteRequest], mut progress: impl FnMut(usize)) -> Report {
    let mut done = 0;
    let mut pass = |f: &dyn Fn(&MicroVoteRequest) -> MicroVoteRequest| -> Vec<f64> {
        reqs.iter()
            .map(|r| {
                let r = f(r);
                let ms = time_ms(|| {
                    let _ = scorer.score(&r);
                });
                done += 1;
                progress(done);
                ms
            })
            .collect()
    };
    let miss = pass(&|r| r.clone());
    // A response the server has not seen (so the answer cache misses) against a cached context.
    let retry = |r: &MicroVoteRequest| MicroVoteRequest {
        response: format!("{} Indeed.", r.response),
        ..r.clone()
    };
    let context_hit = pass(&retry);
    let answer_hit = pass(&retry);
    Report {
        miss: Percentiles::of(miss),
        context_hit: Percentiles::of(context_hit),
        answer_hit: Percentiles::of(answer_hit),
    }
}
