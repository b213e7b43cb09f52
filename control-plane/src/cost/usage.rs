//! Cost records: what one decision used, as the control plane measures it, and its price.
//!
//! A record holds quantities, never money: the request and response bytes, the bytes written
//! to the WAL (the frame) and to the decision log (the row's values), and two fields the filter
//! and the micro-vote fill in later (`filter_cpu_ns`, `model_calls`: NULL until then, priced as
//! nothing rather than guessed). Money comes from the [`PriceBook`] at roll-up time, so a price
//! correction reprices history and a record never goes stale.

use super::prices::{format_day, PriceBook, PriceEntry, GIB};
use serde::{Deserialize, Serialize};

/// The four services costs are reported under (also the billing tag's values).
pub const SERVICES: [&str; 4] = ["compute", "storage", "network", "model_calls"];

/// Measured use of one decision.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub request_bytes: u64,
    pub response_bytes: u64,
    pub wal_bytes: u64,
    pub decision_log_bytes: u64,
    /// In-guest CPU time of the filter (not reported yet: NULL).
    pub filter_cpu_ns: Option<u64>,
    /// Micro-vote calls made for the decision (not reported yet: NULL).
    pub model_calls: Option<u64>,
    /// LLM-gateway answers: the backend's token counts (NULL otherwise).
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    /// The RAG vote's share of `filter_cpu_ns` (NULL without that vote or the tracer); not
    /// priced on its own (it is in the filter's time), read by the advisor's `rag_off`.
    pub rag_cpu_ns: Option<u64>,
}

/// Summed use of many decisions (one tenant and day).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UsageSum {
    pub decisions: u64,
    /// Accepted without escalation: the trusted tasks.
    pub trusted: u64,
    pub request_bytes: u64,
    pub response_bytes: u64,
    pub wal_bytes: u64,
    pub decision_log_bytes: u64,
    pub filter_cpu_ns: u64,
    pub model_calls: u64,
}

/// Cost per service.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ServiceCost {
    pub compute: f64,
    pub storage: f64,
    pub network: f64,
    pub model_calls: f64,
}

impl ServiceCost {
    pub fn total(&self) -> f64 {
        self.compute + self.storage + self.network + self.model_calls
    }

    /// The cost of service `name` (one of [`SERVICES`]).
    pub fn get(&self, name: &str) -> Option<f64> {
        match name {
            "compute" => Some(self.compute),
            "storage" => Some(self.storage),
            "network" => Some(self.network),
            "model_calls" => Some(self.model_calls),
            _ => None,
        }
    }

    pub fn add(&mut self, o: &ServiceCost) {
        self.compute += o.compute;
        self.storage += o.storage;
        self.network += o.network;
        self.model_calls += o.model_calls;
    }
}

impl UsageSum {
    pub fn add(&mut self, u: &Usage, trusted: bool) {
        self.decisions += 1;
        self.trusted += u64::from(trusted);
        self.request_bytes += u.request_bytes;
        self.response_bytes += u.response_bytes;
        self.wal_bytes += u.wal_bytes;
        self.decision_log_bytes += u.decision_log_bytes;
        self.filter_cpu_ns += u.filter_cpu_ns.unwrap_or(0);
        self.model_calls += u.model_calls.unwrap_or(0);
    }

    /// Priced by one entry (linear in every quantity).
    pub fn price(&self, p: &PriceEntry) -> ServiceCost {
        ServiceCost {
            compute: self.decisions as f64 * p.per_request
                + self.filter_cpu_ns as f64 / 1e9 * p.per_cpu_second,
            storage: (self.wal_bytes + self.decision_log_bytes) as f64 / GIB * p.per_gib_stored,
            network: (self.request_bytes + self.response_bytes) as f64 / GIB
                * p.per_gib_transferred,
            model_calls: self.model_calls as f64 * p.per_model_call,
        }
    }
}

/// One roll-up row: a tenant's decisions of one UTC day, priced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DayCost {
    pub tenant: String,
    /// `YYYY-MM-DD` (UTC).
    pub day: String,
    #[serde(skip)]
    pub day_number: i64,
    pub usage: UsageSum,
    /// `null` when no price book entry was in force that day.
    pub cost: Option<ServiceCost>,
    /// cost.total / usage.trusted; `null` without trusted tasks or prices.
    pub cost_per_trusted_task: Option<f64>,
}

/// Prices `(tenant, day, usage)` sums.
pub fn price_days(book: &PriceBook, sums: Vec<(String, i64, UsageSum)>) -> Vec<DayCost> {
    sums.into_iter()
        .map(|(tenant, day, usage)| {
            let cost = book.resolve(&tenant, day).map(|p| usage.price(p));
            let cost_per_trusted_task = cost
                .filter(|_| usage.trusted > 0)
                .map(|c| c.total() / usage.trusted as f64);
            DayCost {
                day: format_day(day),
                day_number: day,
                tenant,
                usage,
                cost,
                cost_per_trusted_task,
            }
        })
        .collect()
}

/// Cost per trusted task over a set of roll-up rows (any window, tenant, arm or version the
/// caller selected): Σ cost / Σ trusted, `None` without trusted tasks or when a row is
/// unpriced. The canary's cost gate reads this.
pub fn cost_per_trusted_task(rows: &[DayCost]) -> Option<f64> {
    let mut total = 0.0;
    let mut trusted = 0u64;
    for r in rows {
        total += r.cost?.total();
        trusted += r.usage.trusted;
    }
    (trusted > 0).then(|| total / trusted as f64)
}

/// The bytes a decision-log row's values take: strings by length, numbers 8 bytes each. A
/// measure of what the row writes (the engine's page overhead is not the decision's).
pub fn row_bytes(texts: &[Option<&str>], numbers: usize) -> u64 {
    let t: usize = texts.iter().map(|s| s.map_or(0, str::len)).sum();
    (t + 8 * numbers) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cost::prices::parse_day;

    fn book() -> PriceBook {
        PriceBook::new(
            "USD",
            vec![PriceEntry {
                effective_from: "2026-01-01".into(),
                tenant: None,
                per_request: 0.001,
                per_cpu_second: 0.5,
                per_gib_stored: 2.0,
                per_gib_transferred: 4.0,
                per_model_call: 0.01,
            }],
        )
        .unwrap()
    }

    #[test]
    fn pricing_is_linear_and_absent_fields_cost_nothing() {
        let u = Usage {
            request_bytes: 1 << 29,
            response_bytes: 1 << 29,
            wal_bytes: 1 << 30,
            decision_log_bytes: 0,
            filter_cpu_ns: None,
            model_calls: None,
            prompt_tokens: None,
            completion_tokens: None,
            rag_cpu_ns: None,
        };
        let mut s = UsageSum::default();
        s.add(&u, true);
        s.add(&u, false);
        let b = book();
        let c = s.price(b.resolve("t", parse_day("2026-01-02").unwrap()).unwrap());
        assert_eq!(c.compute, 0.002);
        assert_eq!(c.storage, 4.0);
        assert_eq!(c.network, 8.0);
        assert_eq!(c.model_calls, 0.0);
        let mut with_cpu = s;
        with_cpu.filter_cpu_ns = 2_000_000_000;
        with_cpu.model_calls = 3;
        let c2 = with_cpu.price(&b.entries[0]);
        assert!((c2.compute - 1.002).abs() < 1e-12 && (c2.model_calls - 0.03).abs() < 1e-12);
    }

    #[test]
    fn cost_per_trusted_task_over_days() {
        let mut s = UsageSum::default();
        for i in 0..4 {
            s.add(&Usage::default(), i % 2 == 0);
        }
        let day = parse_day("2026-01-02").unwrap();
        let rows = price_days(
            &book(),
            vec![("t".into(), day, s), ("t".into(), day + 1, s)],
        );
        assert_eq!(rows[0].day, "2026-01-02");
        assert!((rows[0].cost_per_trusted_task.unwrap() - 0.002).abs() < 1e-12);
        assert!((cost_per_trusted_task(&rows).unwrap() - 0.002).abs() < 1e-12);
        let unpriced = price_days(&book(), vec![("t".into(), 0, s)]);
        assert_eq!(unpriced[0].cost, None);
        assert_eq!(cost_per_trusted_task(&unpriced), None);
    }
}
