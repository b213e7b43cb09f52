//! Encoder + head + caches: one [`MicroVoteRequest`] → a calibrated probability.
//!
//! Two bounded LRU caches keyed by SHA-256 of normalised text (whitespace runs collapsed, ends
//! trimmed — the tokenizer sees the same tokens either way): the context's encoding (contexts
//! repeat across the answers of one retrieval) and whole answers (a retried request).

use crate::encoder::{Encoded, Encoder, EncoderError};
use crate::features::{features, Evidence, N_FEATURES};
use crate::head::Head;
use kakeya_core::microvote::MicroVoteRequest;
use kakeya_core::task::TaskKind;
use lru::LruCache;
use sha2::{Digest, Sha256};
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

/// Whitespace runs collapsed to one space, ends trimmed.
pub fn normalise(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn key(parts: &[&str]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        // Length-prefixed, so ("ab","c") and ("a","bc") differ.
        h.update((p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    h.finalize().into()
}

/// What one scoring produced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scored {
    pub p_hallucinated: f64,
    pub context_cached: bool,
    /// The whole answer came from the answer cache.
    pub answer_cached: bool,
    pub has_context: bool,
}

type Cache<V> = Mutex<LruCache<[u8; 32], V>>;

pub struct Scorer {
    encoder: Encoder,
    head: Head,
    version: String,
    contexts: Cache<Arc<Encoded>>,
    answers: Cache<f64>,
}

/// The request's texts, normalised; empty optional texts count as absent.
struct Texts {
    question: Option<String>,
    context: Option<String>,
    response: String,
    task: Option<TaskKind>,
}

impl Texts {
    fn of(req: &MicroVoteRequest) -> Texts {
        let opt = |s: &Option<String>| s.as_deref().map(normalise).filter(|s| !s.is_empty());
        Texts {
            question: opt(&req.question),
            context: opt(&req.context),
            response: normalise(&req.response),
            task: req.task,
        }
    }
}

impl Scorer {
    /// `cache_entries` bounds each cache (at least 1).
    pub fn new(encoder: Encoder, head: Head, cache_entries: usize) -> Scorer {
        let cap = NonZeroUsize::new(cache_entries.max(1)).unwrap_or(NonZeroUsize::MIN);
        let version = head.version();
        Scorer {
            encoder,
            head,
            version,
            contexts: Mutex::new(LruCache::new(cap)),
            answers: Mutex::new(LruCache::new(cap)),
        }
    }

    pub fn version(&self) -> &str {
        &self.version
    }

    pub fn head(&self) -> &Head {
        &self.head
    }

    pub fn encoder(&self) -> &Encoder {
        &self.encoder
    }

    fn context(&self, text: &str) -> Result<(Arc<Encoded>, bool), EncoderError> {
        let k = key(&[text]);
        if let Some(e) = self
            .contexts
            .lock()
            .ok()
            .and_then(|mut c| c.get(&k).cloned())
        {
            return Ok((e, true));
        }
        let e = Arc::new(self.encoder.encode(text)?);
        if let Ok(mut c) = self.contexts.lock() {
            c.put(k, e.clone());
        }
        Ok((e, false))
    }

    /// The feature vector of a request, and whether its context encoding was cached.
    pub fn features(
        &self,
        req: &MicroVoteRequest,
    ) -> Result<([f64; N_FEATURES], bool), EncoderError> {
        self.features_of(&Texts::of(req))
    }

    fn features_of(&self, t: &Texts) -> Result<([f64; N_FEATURES], bool), EncoderError> {
        let response = self.encoder.encode(&t.response)?;
        let question = t
            .question
            .as_deref()
            .map(|q| self.encoder.encode(q))
            .transpose()?;
        let (context, cached) = match t.context.as_deref() {
            Some(c) => {
                let (e, hit) = self.context(c)?;
                (Some(e), hit)
            }
            None => (None, false),
        };
        let x = features(&Evidence {
            question: question.as_ref(),
            context: context.as_deref(),
            response: &response,
            task: t.task,
        })?;
        Ok((x, cached))
    }

    pub fn score(&self, req: &MicroVoteRequest) -> Result<Scored, EncoderError> {
        let t = Texts::of(req);
        let task = t.task.map_or("", |k| k.as_str());
        let k = key(&[
            task,
            t.question.as_deref().unwrap_or("\u{0}none"),
            t.context.as_deref().unwrap_or("\u{0}none"),
            &t.response,
        ]);
        if let Some(p) = self
            .answers
            .lock()
            .ok()
            .and_then(|mut c| c.get(&k).copied())
        {
            return Ok(Scored {
                p_hallucinated: p,
                context_cached: t.context.is_some(),
                answer_cached: true,
                has_context: t.context.is_some(),
            });
        }
        let (x, context_cached) = self.features_of(&t)?;
        let p = self.head.score(t.task, &x);
        if let Ok(mut c) = self.answers.lock() {
            c.put(k, p);
        }
        Ok(Scored {
            p_hallucinated: p,
            context_cached,
            answer_cached: false,
            has_context: t.context.is_some(),
        })
    }
}
