//! The micro-vote callout's pure parts (tested natively): the per-worker LRU cache, its key,
//! how a callout's answer (or its absence) becomes a [`MicroVoteResult`], and the names of
//! the ensemble's filter stats.
//!
//! Why a cache in the filter: the same (question, context, response) is often submitted more
//! than once (retries, dedup); a hit answers in-process, with no callout and no deadline.

use hashlink::LruCache;
use kakeya_core::microvote::{MicroVoteRequest, MicroVoteResponse, MicroVoteResult};

/// Entries per worker (VM): a key and a probability each, about 100 bytes.
pub const CACHE_ENTRIES: usize = 1_024;

/// Counters (global, no tenant label) and the latency histogram of the micro-vote callout.
/// Prometheus: `kakeya_gate_microvote_calls_total`, … and `kakeya_gate_microvote_latency_ms`.
pub const CALLS_METRIC: &str = "kakeya_gate.microvote_calls_total";
pub const CACHE_HITS_METRIC: &str = "kakeya_gate.microvote_cache_hits_total";
pub const TIMEOUTS_METRIC: &str = "kakeya_gate.microvote_timeouts_total";
/// Dispatch failures (no such cluster), non-200 answers and unusable bodies.
pub const ERRORS_METRIC: &str = "kakeya_gate.microvote_errors_total";
pub const LATENCY_METRIC: &str = "kakeya_gate.microvote_latency_ms";
/// Forwarded submissions the ensemble rejected (the control plane answers 422).
pub const REJECTED_METRIC: &str = "kakeya_gate.rejected_total";

/// The per-strategy vote counter: `kakeya_gate.vote.<strategy>.<outcome>_total`
/// (Prometheus `kakeya_gate_vote_hrs_abstain_total`, …).
pub fn vote_metric(strategy: &str, outcome: &str) -> String {
    format!("kakeya_gate.vote.{strategy}.{outcome}_total")
}

/// The cache key: SHA-256 over the normalised fields (NFKC-free on purpose: lower case and
/// collapsed whitespace are cheap and catch resubmissions), each length-prefixed so no two
/// requests share a key by moving text between fields.
pub fn cache_key(req: &MicroVoteRequest) -> String {
    let mut buf = Vec::with_capacity(
        req.response.len()
            + req.context.as_ref().map_or(0, String::len)
            + req.question.as_ref().map_or(0, String::len)
            + 64,
    );
    let fields = [
        req.question.as_deref(),
        req.context.as_deref(),
        Some(req.response.as_str()),
        req.task.map(|t| t.as_str()),
    ];
    for f in fields {
        match f {
            None => buf.extend_from_slice(b"-\n"),
            Some(s) => {
                let norm = normalise(s);
                buf.extend_from_slice(format!("{}:", norm.len()).as_bytes());
                buf.extend_from_slice(norm.as_bytes());
                buf.push(b'\n');
            }
        }
    }
    kakeya_core::ids::sha256_hex(&buf)
}

fn normalise(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for word in s.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.extend(word.chars().flat_map(char::to_lowercase));
    }
    out
}

/// A cached answer.
#[derive(Debug, Clone, PartialEq)]
struct Cached {
    p_hallucinated: f64,
    model: String,
    server_us: u64,
}

/// Bounded LRU of micro-vote answers (only well-formed answers are kept).
pub struct Cache(LruCache<String, Cached>);

impl Default for Cache {
    fn default() -> Self {
        Cache(LruCache::new(CACHE_ENTRIES))
    }
}

impl Cache {
    pub fn get(&mut self, key: &str) -> Option<MicroVoteResult> {
        self.0.get(key).map(|c| MicroVoteResult::Answer {
            p_hallucinated: c.p_hallucinated,
            model: c.model.clone(),
            server_us: c.server_us,
            cache_hit: true,
        })
    }

    pub fn put(&mut self, key: String, result: &MicroVoteResult) {
        if let MicroVoteResult::Answer {
            p_hallucinated,
            model,
            server_us,
            ..
        } = result
        {
            self.0.insert(
                key,
                Cached {
                    p_hallucinated: *p_hallucinated,
                    model: model.clone(),
                    server_us: *server_us,
                },
            );
        }
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A worker's ensemble state: the cache and the stat ids, defined on first use (a fixed,
/// small set of names: the four strategies × three outcomes and the callout's own).
#[derive(Default)]
pub struct Stats {
    pub cache: Cache,
    ids: std::collections::BTreeMap<String, Option<u32>>,
}

impl Stats {
    fn id(&mut self, name: &str, histogram: bool) -> Option<u32> {
        if let Some(id) = self.ids.get(name) {
            return *id;
        }
        let id = if histogram {
            crate::host::define_histogram(name)
        } else {
            crate::host::define_counter(name)
        }
        .ok();
        self.ids.insert(name.to_string(), id);
        id
    }

    /// Adds 1 to a counter; a failure only loses the count (silent: the SDK's log macros
    /// unwrap).
    pub fn bump(&mut self, name: &str) {
        if let Some(id) = self.id(name, false) {
            let _ = crate::host::increment(id, 1);
        }
    }

    pub fn latency_ms(&mut self, ms: u64) {
        if let Some(id) = self.id(LATENCY_METRIC, true) {
            let _ = crate::host::record(id, ms);
        }
    }

    /// Counts one micro-vote result (a cache hit is counted where it is served).
    pub fn count_result(&mut self, r: &MicroVoteResult) {
        match r {
            MicroVoteResult::Answer { .. } => {}
            MicroVoteResult::Timeout => self.bump(TIMEOUTS_METRIC),
            MicroVoteResult::Unavailable(_) => self.bump(ERRORS_METRIC),
        }
    }
}

/// Longest micro-vote body read (a real answer is under 200 bytes).
pub const MAX_BODY: usize = 4_096;

/// What a callout's response means. `status` is `None` when Envoy answered without headers
/// (its timeout, or a reset): a timeout when the deadline has passed, else `no_response`.
pub fn judge(
    status: Option<u32>,
    body: &[u8],
    elapsed_ms: u64,
    deadline_ms: u32,
) -> MicroVoteResult {
    match status {
        None if elapsed_ms >= u64::from(deadline_ms) => MicroVoteResult::Timeout,
        None => MicroVoteResult::Unavailable("no_response"),
        // Envoy's own 504 for an upstream that did not answer in time.
        Some(504) => MicroVoteResult::Timeout,
        Some(200) => {
            let Ok(r) = serde_json::from_slice::<MicroVoteResponse>(body) else {
                return MicroVoteResult::Unavailable("bad_body");
            };
            if !(0.0..=1.0).contains(&r.p_hallucinated) || r.model.len() > 128 {
                return MicroVoteResult::Unavailable("bad_body");
            }
            MicroVoteResult::Answer {
                p_hallucinated: r.p_hallucinated,
                model: r.model,
                server_us: r.server_us,
                cache_hit: false,
            }
        }
        Some(_) => MicroVoteResult::Unavailable("bad_status"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kakeya_core::task::TaskKind;

    fn req(resp: &str) -> MicroVoteRequest {
        MicroVoteRequest {
            question: Some("Who wrote it?".into()),
            context: Some("Ada Lovelace, 1843".into()),
            response: resp.into(),
            task: Some(TaskKind::Qa),
        }
    }

    #[test]
    fn keys_normalise_case_and_spaces_but_not_fields() {
        assert_eq!(
            cache_key(&req("Ada  Lovelace")),
            cache_key(&req("ada lovelace"))
        );
        assert_ne!(cache_key(&req("Ada")), cache_key(&req("Grace")));
        let mut moved = req("x");
        moved.question = None;
        assert_ne!(cache_key(&moved), cache_key(&req("x")));
        assert_eq!(cache_key(&req("x")).len(), 64);
    }

    #[test]
    fn lru_is_bounded_and_only_keeps_answers() {
        let mut c = Cache::default();
        let answer = MicroVoteResult::Answer {
            p_hallucinated: 0.2,
            model: "mv-1".into(),
            server_us: 900,
            cache_hit: false,
        };
        for i in 0..CACHE_ENTRIES + 10 {
            c.put(format!("k{i}"), &answer);
        }
        assert_eq!(c.len(), CACHE_ENTRIES);
        assert!(c.get("k0").is_none(), "the oldest entries were evicted");
        assert!(matches!(
            c.get(&format!("k{}", CACHE_ENTRIES + 9)),
            Some(MicroVoteResult::Answer {
                cache_hit: true,
                ..
            })
        ));
        c.put("t".into(), &MicroVoteResult::Timeout);
        assert!(c.get("t").is_none());
    }

    #[test]
    fn responses_and_their_absence() {
        assert_eq!(judge(None, b"", 31, 30), MicroVoteResult::Timeout);
        assert_eq!(
            judge(None, b"", 2, 30),
            MicroVoteResult::Unavailable("no_response")
        );
        assert_eq!(judge(Some(504), b"", 2, 30), MicroVoteResult::Timeout);
        assert_eq!(
            judge(Some(503), b"upstream connect error", 1, 30),
            MicroVoteResult::Unavailable("bad_status")
        );
        for bad in [
            &b"{"[..],
            br#"{"p_hallucinated":1.5,"model":"m","server_us":1}"#,
            b"",
        ] {
            assert_eq!(
                judge(Some(200), bad, 1, 30),
                MicroVoteResult::Unavailable("bad_body")
            );
        }
        let ok = br#"{"p_hallucinated":0.25,"model":"mv-abc","server_us":812}"#;
        assert_eq!(
            judge(Some(200), ok, 1, 30),
            MicroVoteResult::Answer {
                p_hallucinated: 0.25,
                model: "mv-abc".into(),
                server_us: 812,
                cache_hit: false
            }
        );
    }
}
