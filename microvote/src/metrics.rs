//! The server's Prometheus metrics (`GET /metrics`).

use crate::scorer::Scored;
use prometheus::{Encoder, Histogram, HistogramOpts, IntCounterVec, Opts, Registry, TextEncoder};

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// `kakeya_microvote_requests_total{outcome}`: ok, bad_request, too_large, overloaded, error.
    pub requests: IntCounterVec,
    /// `kakeya_microvote_duration_seconds`: time to answer `POST /v1/microvote`.
    pub duration: Histogram,
    /// `kakeya_microvote_context_cache_total{result}`: hit, miss (requests with a context).
    pub context_cache: IntCounterVec,
    /// `kakeya_microvote_answer_cache_total{result}`: hit, miss.
    pub answer_cache: IntCounterVec,
}

impl Metrics {
    pub fn new() -> prometheus::Result<Metrics> {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, label: &str| -> prometheus::Result<IntCounterVec> {
            let c = IntCounterVec::new(Opts::new(name, help), &[label])?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let requests = counter(
            "kakeya_microvote_requests_total",
            "Micro-vote requests by outcome",
            "outcome",
        )?;
        let context_cache = counter(
            "kakeya_microvote_context_cache_total",
            "Context-embedding cache lookups of scored requests with a context",
            "result",
        )?;
        let answer_cache = counter(
            "kakeya_microvote_answer_cache_total",
            "Whole-answer cache lookups of scored requests",
            "result",
        )?;
        let duration = Histogram::with_opts(
            HistogramOpts::new(
                "kakeya_microvote_duration_seconds",
                "Time to answer POST /v1/microvote",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.25, 1.0,
            ]),
        )?;
        registry.register(Box::new(duration.clone()))?;
        // Every label value exists from the start, so dashboards see zeros, not gaps.
        for o in ["ok", "bad_request", "too_large", "overloaded", "error"] {
            requests.with_label_values(&[o]);
        }
        for r in ["hit", "miss"] {
            context_cache.with_label_values(&[r]);
            answer_cache.with_label_values(&[r]);
        }
        Ok(Metrics {
            registry,
            requests,
            duration,
            context_cache,
            answer_cache,
        })
    }

    pub fn observe_caches(&self, s: &Scored) {
        let hit = |b: bool| if b { "hit" } else { "miss" };
        self.answer_cache
            .with_label_values(&[hit(s.answer_cached)])
            .inc();
        if s.has_context && !s.answer_cached {
            self.context_cache
                .with_label_values(&[hit(s.context_cached)])
                .inc();
        }
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}
