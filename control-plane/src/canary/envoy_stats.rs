//! The gates' data for an upstream canary: Envoy's own per-cluster stats (`upstream_rq_completed`,
//! `upstream_rq_5xx`, the `upstream_rq_time` histogram, in ms), scraped from
//! `/stats/prometheus` of every configured Envoy admin address and summed. The stats are
//! cumulative, so a window is the difference between a scrape now and the scrape stored when
//! the step (or the run) began ([`Base`], kept in the deployment's row); a counter that went
//! down (an Envoy restarted) counts from zero.
//!
//! The Prometheus text is read line by line here rather than with a crate: three metric
//! families of one known producer, and the exposition-format crates on crates.io either pull
//! in a full client or are unmaintained.

use super::gates::ArmStats;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// One cluster's cumulative figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterStats {
    pub completed: u64,
    pub rq_5xx: u64,
    /// `upstream_rq_time` cumulative buckets: (upper bound in ms, count ≤ it), ascending,
    /// `+Inf` as `f64::MAX`.
    pub buckets: Vec<(f64, u64)>,
}

/// Both clusters of a route.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RouteStats {
    pub stable: ClusterStats,
    pub canary: ClusterStats,
}

/// An upstream deployment's routing key and the scrapes its windows start from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Base {
    /// What the route's hash is keyed by.
    pub key: kakeya_core::upstream::UpstreamKey,
    /// When the run started (the control's window at 100 %).
    pub run: RouteStats,
    /// When the current step started.
    pub step: RouteStats,
}

/// `name{labels} value` → (name, labels, value); `None` for comments and blank lines.
fn sample(line: &str) -> Option<(&str, &str, f64)> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (head, value) = line.rsplit_once(' ')?;
    let value = value.parse::<f64>().ok()?;
    match head.split_once('{') {
        Some((name, rest)) => Some((name, rest.strip_suffix('}')?, value)),
        None => Some((head, "", value)),
    }
}

/// The value of label `key` in `k1="v1",k2="v2"` (cluster names and bounds hold no quotes).
fn label<'a>(labels: &'a str, key: &str) -> Option<&'a str> {
    labels.split(',').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k.trim() == key).then(|| v.trim().trim_matches('"'))
    })
}

/// `cluster`'s figures in one Envoy's `/stats/prometheus` text. Envoy's tag extraction turns
/// `cluster.<c>.upstream_rq_5xx` into `envoy_cluster_upstream_rq_xx{envoy_response_code_class="5"}`;
/// the untagged name is read too.
pub fn parse(text: &str, cluster: &str) -> ClusterStats {
    let mut s = ClusterStats::default();
    for (name, labels, v) in text.lines().filter_map(sample) {
        if label(labels, "envoy_cluster_name") != Some(cluster) {
            continue;
        }
        let n = if v.is_finite() && v >= 0.0 {
            v as u64
        } else {
            0
        };
        match name {
            "envoy_cluster_upstream_rq_completed" => s.completed += n,
            "envoy_cluster_upstream_rq_5xx" => s.rq_5xx += n,
            "envoy_cluster_upstream_rq_xx"
                if label(labels, "envoy_response_code_class") == Some("5") =>
            {
                s.rq_5xx += n
            }
            "envoy_cluster_upstream_rq_time_bucket" => {
                let le = match label(labels, "le") {
                    Some("+Inf") => f64::MAX,
                    Some(b) => match b.parse::<f64>() {
                        Ok(b) => b,
                        Err(_) => continue,
                    },
                    None => continue,
                };
                s.buckets.push((le, n));
            }
            _ => {}
        }
    }
    s.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    s
}

impl ClusterStats {
    /// The sum of two Envoys' figures (buckets matched by bound).
    pub fn add(&mut self, o: &ClusterStats) {
        self.completed += o.completed;
        self.rq_5xx += o.rq_5xx;
        for &(le, n) in &o.buckets {
            match self.buckets.iter_mut().find(|(b, _)| *b == le) {
                Some((_, m)) => *m += n,
                None => self.buckets.push((le, n)),
            }
        }
        self.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    }

    /// What happened since `base` (a figure below its base, after an Envoy restart, counts
    /// from zero).
    pub fn since(&self, base: &ClusterStats) -> ClusterStats {
        let d = |now: u64, then: u64| if now >= then { now - then } else { now };
        let restarted = self.completed < base.completed;
        let b = |le: f64| {
            if restarted {
                0
            } else {
                base.buckets
                    .iter()
                    .find(|(x, _)| *x == le)
                    .map_or(0, |(_, n)| *n)
            }
        };
        ClusterStats {
            completed: d(self.completed, if restarted { 0 } else { base.completed }),
            rq_5xx: d(self.rq_5xx, if restarted { 0 } else { base.rq_5xx }),
            buckets: self
                .buckets
                .iter()
                .map(|&(le, n)| (le, d(n, b(le))))
                .collect(),
        }
    }

    /// The gates' view of a window: requests = completed, "escalated" = 5xx (the
    /// `error_budget` gate reads the 5xx rate), p95 = the upper bound of the first bucket
    /// holding the 95th percentile (Envoy's histograms are bucketed; `None` without requests).
    pub fn arm_stats(&self) -> ArmStats {
        let timed = self.buckets.last().map_or(0, |(_, n)| *n);
        let p95_ms = (timed > 0)
            .then(|| {
                let rank = ((timed as f64) * 0.95).ceil() as u64;
                self.buckets
                    .iter()
                    .find(|(_, n)| *n >= rank)
                    // Above the largest finite bound: report that bound (a lower bound).
                    .map(|(le, _)| *le)
                    .map(|le| {
                        if le == f64::MAX {
                            self.buckets
                                .iter()
                                .rev()
                                .map(|(b, _)| *b)
                                .find(|b| *b < f64::MAX)
                                .unwrap_or(0.0)
                        } else {
                            le
                        }
                    })
            })
            .flatten();
        ArmStats {
            requests: self.completed,
            escalated: self.rq_5xx,
            escalation_rate: (self.completed > 0)
                .then(|| self.rq_5xx.min(self.completed) as f64 / self.completed as f64),
            p95_ms,
            ..ArmStats::default()
        }
    }
}

impl RouteStats {
    pub fn since(&self, base: &RouteStats) -> RouteStats {
        RouteStats {
            stable: self.stable.since(&base.stable),
            canary: self.canary.since(&base.canary),
        }
    }
}

/// The health check of an upstream deployment's window: the canary cluster since the step
/// began, the stable one since `control_from` (the step's start, or the run's at 100 %), with
/// the `latency` (upstream p95) and `error_budget` (5xx rate) gates; containment and cost
/// concern scored decisions and do not apply to a route (skipped). A failed scrape is no data:
/// every gate fails with the error as its detail.
pub fn check(
    d: &super::Deployment,
    now: &Result<RouteStats, ScrapeError>,
    control_from_run: bool,
    (since, until): (i64, i64),
) -> super::HealthCheck {
    use super::gates::{GateName, GateStatus};
    let mut gates = d.gates.clone();
    for g in [GateName::Containment, GateName::Cost] {
        if !gates.skip.contains(&g) {
            gates.skip.push(g);
        }
    }
    let base = d.upstream_base.clone().unwrap_or_default();
    match now {
        Ok(now) => {
            let control_base = if control_from_run {
                &base.run.stable
            } else {
                &base.step.stable
            };
            let c = now.canary.since(&base.step.canary).arm_stats();
            let k = now.stable.since(control_base).arm_stats();
            super::gates::health_check(&gates, c, k, since, until)
        }
        Err(e) => {
            let mut h = super::gates::health_check(
                &gates,
                ArmStats::default(),
                ArmStats::default(),
                since,
                until,
            );
            for g in h
                .gates
                .iter_mut()
                .filter(|g| g.status == GateStatus::NoData)
            {
                g.detail = Some(format!("no Envoy stats: {e}"));
            }
            h
        }
    }
}

/// Why a scrape failed.
#[derive(Debug, thiserror::Error)]
#[error("Envoy admin {addr}: {message}")]
pub struct ScrapeError {
    pub addr: SocketAddr,
    pub message: String,
}

/// Both clusters of `route`, summed over every Envoy in `admins`; an Envoy that does not
/// answer is an error (a partial sum would shrink the window's figures).
pub async fn scrape(
    admins: &[SocketAddr],
    stable: &str,
    canary: &str,
) -> Result<RouteStats, ScrapeError> {
    let mut total = RouteStats::default();
    for &addr in admins {
        let text = fetch(addr).await?;
        total.stable.add(&parse(&text, stable));
        total.canary.add(&parse(&text, canary));
    }
    Ok(total)
}

async fn fetch(addr: SocketAddr) -> Result<String, ScrapeError> {
    let err = |message: String| ScrapeError { addr, message };
    // ureq is blocking: off the runtime's threads, with its own deadline.
    tokio::task::spawn_blocking(move || {
        let agent = ureq::AgentBuilder::new()
            .timeout(std::time::Duration::from_secs(5))
            .build();
        agent
            .get(&format!("http://{addr}/stats/prometheus?usedonly"))
            .call()
            .map_err(|e| e.to_string())?
            .into_string()
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| err(e.to_string()))?
    .map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# TYPE envoy_cluster_upstream_rq_completed counter
envoy_cluster_upstream_rq_completed{envoy_cluster_name="kakeya_up_a_canary"} 40
envoy_cluster_upstream_rq_completed{envoy_cluster_name="kakeya_up_a_stable"} 60
envoy_cluster_upstream_rq_xx{envoy_response_code_class="2",envoy_cluster_name="kakeya_up_a_canary"} 30
envoy_cluster_upstream_rq_xx{envoy_response_code_class="5",envoy_cluster_name="kakeya_up_a_canary"} 10
envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="kakeya_up_a_canary",le="0.5"} 0
envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="kakeya_up_a_canary",le="1"} 20
envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="kakeya_up_a_canary",le="250"} 37
envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="kakeya_up_a_canary",le="500"} 39
envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="kakeya_up_a_canary",le="+Inf"} 40
envoy_cluster_upstream_rq_time_sum{envoy_cluster_name="kakeya_up_a_canary"} 3000
"#;

    #[test]
    fn reads_the_clusters_figures_and_sums_and_differences_them() {
        let c = parse(TEXT, "kakeya_up_a_canary");
        assert_eq!((c.completed, c.rq_5xx), (40, 10));
        assert_eq!(c.buckets.len(), 5);
        let a = c.arm_stats();
        assert_eq!(a.escalation_rate, Some(0.25));
        // rank ⌈0.95 · 40⌉ = 38: the first bucket holding 38 is le = 500.
        assert_eq!(a.p95_ms, Some(500.0));
        let s = parse(TEXT, "kakeya_up_a_stable");
        assert_eq!((s.completed, s.rq_5xx), (60, 0));
        assert_eq!(s.arm_stats().p95_ms, None);
        assert_eq!(parse(TEXT, "other"), ClusterStats::default());
        // Two Envoys sum; a window is a difference.
        let mut two = c.clone();
        two.add(&c);
        assert_eq!((two.completed, two.rq_5xx), (80, 20));
        let w = two.since(&c);
        assert_eq!(w, c);
        // A restarted Envoy (counters below the base) counts from zero.
        let restarted = c.since(&two);
        assert_eq!(restarted, c);
        // Everything above the largest finite bound: that bound.
        let slow = parse(
            r#"envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="x",le="1000"} 0
envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="x",le="+Inf"} 4"#,
            "x",
        );
        assert_eq!(slow.arm_stats().p95_ms, Some(1000.0));
    }
}
