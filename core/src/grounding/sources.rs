//! Source quality: how much a citation's text counts as support, from a per-tenant allowlist
//! of `citations[].source` values.
//!
//! Why an allowlist and not a reputation score: the filter cannot look anything up, and a
//! tenant knows which of its sources it trusts. The reference averaged a `SourceChecker` that
//! nothing implemented (a constant 0.75, platform spec §4.3). Here a source is listed (weight
//! 1), unlisted ([`SourcePolicy::unlisted_weight`], 0.5 by default: it supports, but never
//! enough on its own to accept) or, with an empty allowlist, every source counts fully.

use serde::{Deserialize, Serialize};

/// At most this many allowlist entries are kept (an operator's list, but a bundle is input too).
pub const MAX_ALLOWLIST: usize = 1_024;

/// A tenant's source policy. Entries are matched case-insensitively against a citation's
/// `source`: equal, or — when the source is a URL (`scheme://host/…`) or a bare host — equal to
/// its host without port and leading `www.`, or a parent domain of it (`wikipedia.org` lists
/// `en.wikipedia.org`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SourcePolicy {
    pub allowlist: Vec<String>,
    /// Weight of a citation whose source is not listed (when the list is not empty).
    pub unlisted_weight: f64,
    /// Weight of the free-text `context` (what the agent was given, not a cited source).
    pub context_weight: f64,
}

impl Default for SourcePolicy {
    fn default() -> Self {
        SourcePolicy {
            allowlist: Vec::new(),
            unlisted_weight: 0.5,
            context_weight: 1.0,
        }
    }
}

/// A [`SourcePolicy`] prepared for lookups: entries normalised, sorted, deduplicated and
/// capped, weights clamped to [0, 1] (non-finite → 0).
#[derive(Debug, Clone, PartialEq)]
pub struct Sources {
    entries: Vec<String>,
    unlisted: f32,
    context: f32,
}

fn weight(w: f64) -> f32 {
    if w.is_finite() {
        w.clamp(0.0, 1.0) as f32
    } else {
        0.0
    }
}

/// The lowercase host of a URL-like source (`https://En.Wikipedia.org:443/wiki/X` →
/// `en.wikipedia.org`), or the trimmed lowercase source itself.
fn normalise(source: &str) -> String {
    let s = source.trim();
    let rest = s.split_once("://").map_or(s, |(_, r)| r);
    let host = if s.contains("://") {
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let authority = rest.get(..end).unwrap_or(rest);
        let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        host.rsplit_once(':')
            .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
            .map_or(host, |(h, _)| h)
    } else {
        s
    };
    let host = host.to_lowercase();
    match host.strip_prefix("www.") {
        Some(h) if !h.is_empty() => h.to_string(),
        _ => host,
    }
}

impl Default for Sources {
    /// The default policy: no allowlist, every source and the context count fully.
    fn default() -> Self {
        Sources::new(&SourcePolicy::default())
    }
}

impl Sources {
    pub fn new(policy: &SourcePolicy) -> Sources {
        let mut entries: Vec<String> = policy
            .allowlist
            .iter()
            .take(MAX_ALLOWLIST)
            .map(|e| normalise(e))
            .filter(|e| !e.is_empty())
            .collect();
        entries.sort_unstable();
        entries.dedup();
        Sources {
            entries,
            unlisted: weight(policy.unlisted_weight),
            context: weight(policy.context_weight),
        }
    }

    /// Weight of the free-text context.
    pub fn context_weight(&self) -> f32 {
        self.context
    }

    fn listed(&self, name: &str) -> bool {
        self.entries
            .binary_search_by(|e| e.as_str().cmp(name))
            .is_ok()
    }

    /// Weight of a citation with this `source`: 1 when listed (or when the allowlist is
    /// empty), else the unlisted weight. Cost: one normalisation and at most one binary search
    /// per domain label (a host has few).
    pub fn weight(&self, source: &str) -> f32 {
        if self.entries.is_empty() {
            return 1.0;
        }
        let name = normalise(source);
        if name.is_empty() {
            return self.unlisted;
        }
        let mut rest = name.as_str();
        // At most 16 labels are tried: enough for any real host, bounded for a crafted one.
        for _ in 0..16 {
            if self.listed(rest) {
                return 1.0;
            }
            match rest.split_once('.') {
                Some((_, parent)) if !parent.is_empty() => rest = parent,
                _ => break,
            }
        }
        self.unlisted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(list: &[&str]) -> Sources {
        Sources::new(&SourcePolicy {
            allowlist: list.iter().map(|s| s.to_string()).collect(),
            ..SourcePolicy::default()
        })
    }

    #[test]
    fn empty_allowlist_trusts_every_source() {
        let s = policy(&[]);
        assert_eq!(s.weight("anything"), 1.0);
        assert_eq!(s.weight(""), 1.0);
        assert_eq!(s.context_weight(), 1.0);
    }

    #[test]
    fn hosts_and_parent_domains_match() {
        let s = policy(&["Wikipedia.org", "kb:handbook", "https://docs.example.com/x"]);
        assert_eq!(s.weight("https://en.wikipedia.org/wiki/Ada_Lovelace"), 1.0);
        assert_eq!(s.weight("http://user@WWW.wikipedia.org:8080/"), 1.0);
        assert_eq!(s.weight("wikipedia.org"), 1.0);
        assert_eq!(s.weight("KB:Handbook "), 1.0);
        assert_eq!(s.weight("https://docs.example.com/other"), 1.0);
        assert_eq!(s.weight("https://example.com/"), 0.5);
        assert_eq!(s.weight("https://notwikipedia.org/"), 0.5);
        assert_eq!(s.weight("https://wikipedia.org.evil.com/"), 0.5);
        assert_eq!(s.weight(""), 0.5);
        assert_eq!(s.weight(&"a.".repeat(10_000)), 0.5);
    }

    #[test]
    fn weights_are_clamped() {
        let s = Sources::new(&SourcePolicy {
            allowlist: vec!["x".into()],
            unlisted_weight: f64::NAN,
            context_weight: 7.0,
        });
        assert_eq!(s.weight("y"), 0.0);
        assert_eq!(s.context_weight(), 1.0);
        let s = Sources::new(&SourcePolicy {
            allowlist: (0..5000).map(|i| format!("h{i}")).collect(),
            ..SourcePolicy::default()
        });
        assert_eq!(s.entries.len(), MAX_ALLOWLIST);
    }
}
