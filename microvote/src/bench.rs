//! Latency of the scorer on a set of requests: every request once with empty caches (a miss:
//! response, question and context encoded), then again with its context cached (a new
//! response against a known context is what a retry of another answer looks like), then the
//! same request again (an answer-cache hit). A fourth pass splits a miss into its stages.

use crate::encoder::{Encoded, EncoderError};
use crate::features::{features, Evidence};
use crate::scorer::{normalise, Scorer};
use kakeya_core::microvote::MicroVoteRequest;
use serde::Serialize;
use std::collections::BTreeMap;
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
    /// The misses of each task kind (`none` without one): the mix's p95 is the longest
    /// contexts' (summarisation documents).
    pub miss_by_task: BTreeMap<String, Percentiles>,
    /// The context's encoding cached, the response new to the server.
    pub context_hit: Percentiles,
    /// The whole answer cached.
    pub answer_hit: Percentiles,
    /// A miss by stage, per request: WordPiece, the forward passes, the features.
    pub tokenize: Percentiles,
    pub forward: Percentiles,
    pub features: Percentiles,
    /// Token counts ([CLS]/[SEP] included) of each request's texts, in encoding order
    /// (question, context, response; absent ones left out): what `reference/ort_bench.py` runs.
    pub lengths: Vec<Vec<usize>>,
}

/// The stage timings of one miss (ms) and its texts' token counts.
struct StageTimes {
    tokenize: f64,
    forward: f64,
    features: f64,
    lengths: Vec<usize>,
}

fn stages(scorer: &Scorer, r: &MicroVoteRequest) -> Result<StageTimes, EncoderError> {
    let enc = scorer.encoder();
    let text = |s: &Option<String>| s.as_deref().map(normalise).filter(|s| !s.is_empty());
    let (mut tokenize, mut forward, mut lengths) = (0.0, 0.0, Vec::new());
    let mut encode = |t: &str| -> Result<Encoded, EncoderError> {
        let t0 = Instant::now();
        let (ids, tokens) = enc.token_ids(t)?;
        tokenize += t0.elapsed().as_secs_f64() * 1e3;
        let t1 = Instant::now();
        let e = enc.encode_ids(&ids, tokens)?;
        forward += t1.elapsed().as_secs_f64() * 1e3;
        lengths.push(ids.len());
        Ok(e)
    };
    let question = text(&r.question).map(|t| encode(&t)).transpose()?;
    let context = text(&r.context).map(|t| encode(&t)).transpose()?;
    let response = encode(&normalise(&r.response))?;
    let t2 = Instant::now();
    features(&Evidence {
        question: question.as_ref(),
        context: context.as_ref(),
        response: &response,
        task: r.task,
    })?;
    Ok(StageTimes {
        tokenize,
        forward,
        features: t2.elapsed().as_secs_f64() * 1e3,
        lengths,
    })
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
    let mut by_task: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for (r, ms) in reqs.iter().zip(&miss) {
        let task = r.task.map_or("none", |t| t.as_str());
        by_task.entry(task.to_string()).or_default().push(*ms);
    }
    let st: Vec<StageTimes> = reqs.iter().filter_map(|r| stages(scorer, r).ok()).collect();
    let col = |f: fn(&StageTimes) -> f64| Percentiles::of(st.iter().map(f).collect());
    Report {
        miss: Percentiles::of(miss),
        miss_by_task: by_task
            .into_iter()
            .map(|(k, v)| (k, Percentiles::of(v)))
            .collect(),
        context_hit: Percentiles::of(context_hit),
        answer_hit: Percentiles::of(answer_hit),
        tokenize: col(|s| s.tokenize),
        forward: col(|s| s.forward),
        features: col(|s| s.features),
        lengths: st.iter().map(|s| s.lengths.clone()).collect(),
    }
}
