//! The filter's cost tracer: the in-guest time the filter spends on a request's body stage(s)
//! (the wait for a micro-vote callout is not the filter's time and is left out) and the
//! micro-vote calls it dispatched for it (0 on a cache hit, when degraded or refused). Forwarded
//! as `x-kakeya-filter-ns` / `x-kakeya-model-calls`, the control plane stores them in the
//! decision's cost record and prices them. The wait for a callout's answer (or its timeout) is
//! forwarded as `x-kakeya-microvote-ns`, for the advisor's deadline rule.
//!
//! Its clock reads are shared with the request's own where one exists (`request.rs`): the span
//! starts at the pipeline's first read and pauses at the callout's dispatch read, and the read
//! on the callout's answer both ends the wait and restarts the span; only the final stop is a
//! read of its own. Per request without a callout the tracer adds one clock read and two header
//! writes (`bench::tracer_hostcalls` counts them).

use crate::decide::{H_FILTER_NS, H_MICROVOTE_NS, H_MODEL_CALLS};

#[derive(Debug, Default)]
pub struct Tracer {
    spent_ns: u64,
    since_ns: Option<u64>,
    model_calls: u32,
    microvote_ns: Option<u64>,
}

impl Tracer {
    /// The filter starts working on the request at `now_ns`.
    pub fn start(&mut self, now_ns: u64) {
        self.since_ns = Some(now_ns);
    }

    /// The filter stops (pauses for a callout, or is done) at `now_ns`.
    pub fn stop(&mut self, now_ns: u64) {
        if let Some(since) = self.since_ns.take() {
            self.spent_ns = self.spent_ns.saturating_add(now_ns.saturating_sub(since));
        }
    }

    pub fn called_model(&mut self) {
        self.model_calls = self.model_calls.saturating_add(1);
    }

    /// The micro-vote callout's answer (or timeout) came `ns` after its dispatch.
    pub fn waited_for_model(&mut self, ns: u64) {
        self.microvote_ns = Some(ns);
    }

    /// The forwarded headers (the micro-vote's wait only after a callout).
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut h = vec![
            (H_FILTER_NS, self.spent_ns.to_string()),
            (H_MODEL_CALLS, self.model_calls.to_string()),
        ];
        if let Some(ns) = self.microvote_ns {
            h.push((H_MICROVOTE_NS, ns.to_string()));
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_the_working_spans_only() {
        let mut t = Tracer::default();
        t.start(1_000);
        t.stop(1_500); // paused for the callout
        t.stop(9_000); // not started: ignored
        t.called_model();
        t.start(50_000); // the callout's answer
        t.waited_for_model(48_500);
        t.stop(50_200);
        assert_eq!(
            t.headers(),
            [
                (H_FILTER_NS, "700".to_string()),
                (H_MODEL_CALLS, "1".to_string()),
                (H_MICROVOTE_NS, "48500".to_string())
            ]
        );
        // A clock going backwards never underflows.
        let mut t = Tracer::default();
        t.start(10);
        t.stop(5);
        assert_eq!(t.headers()[0].1, "0");
        assert_eq!(t.headers().len(), 2, "no callout, no wait header");
    }
}
