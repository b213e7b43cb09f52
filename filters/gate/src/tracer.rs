//! The filter's cost tracer: the in-guest time the filter spends on a request's body stage(s)
//! (the wait for a micro-vote callout is not the filter's time and is left out) and the
//! micro-vote calls it dispatched for it (0 on a cache hit, when degraded or refused). Forwarded
//! as `x-kakeya-filter-ns` / `x-kakeya-model-calls`, the control plane stores them in the
//! decision's cost record and prices them.

use crate::decide::{H_FILTER_NS, H_MODEL_CALLS};

#[derive(Debug, Default)]
pub struct Tracer {
    spent_ns: u64,
    since_ns: Option<u64>,
    model_calls: u32,
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

    /// The forwarded headers.
    pub fn headers(&self) -> [(&'static str, String); 2] {
        [
            (H_FILTER_NS, self.spent_ns.to_string()),
            (H_MODEL_CALLS, self.model_calls.to_string()),
        ]
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
        t.stop(50_200);
        assert_eq!(
            t.headers(),
            [
                (H_FILTER_NS, "700".to_string()),
                (H_MODEL_CALLS, "1".to_string())
            ]
        );
        // A clock going backwards never underflows.
        let mut t = Tracer::default();
        t.start(10);
        t.stop(5);
        assert_eq!(t.headers()[0].1, "0");
    }
}
