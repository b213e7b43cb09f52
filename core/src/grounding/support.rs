//! How much of a response the context and citations support: word n-gram containment (1–3),
//! answer-token coverage, unsupported numbers, dates and names, and per-sentence support.
//!
//! Why per sentence and why critical tokens: a hallucination is usually one wrong claim in an
//! otherwise faithful answer — a copied sentence with one changed year has nearly full n-gram
//! overlap, so any whole-response overlap average calls it supported. Each sentence therefore
//! gets its own support, a number, date or name the sources do not have multiplies it by
//! [`GroundingConfig::critical_penalty`], and the response's support is its weakest sentence.
//!
//! Support is weighted by source quality: a token found only in an unlisted citation counts
//! with that citation's weight (see [`super::sources`]).

use super::normalize::{prefix, tokenize, Kind, Token};
use super::sources::Sources;
use super::GroundingConfig;
use crate::evidence::{mix, Evidence, SortedSet64};
use serde::{Deserialize, Serialize};

/// At most this many response tokens are read (the rest is unchecked: see
/// [`Measures::response_truncated`]).
pub const MAX_RESPONSE_TOKENS: usize = 1_024;
/// At most this many context tokens, over the context and the citations in order.
pub const MAX_CONTEXT_TOKENS: usize = 8_192;
/// At most this many question tokens.
pub const MAX_QUESTION_TOKENS: usize = 512;
/// At most this many citations are read.
pub const MAX_CITATIONS: usize = 64;
/// At most this many bytes of the response, of the context and citations together, and of the
/// question are read: the token caps alone do not bound the work on text that yields no tokens
/// (a megabyte of punctuation or zero-width characters).
pub const MAX_RESPONSE_BYTES: usize = 16 * 1024;
pub const MAX_CONTEXT_BYTES: usize = 128 * 1024;
pub const MAX_QUESTION_BYTES: usize = 8 * 1024;
/// A sentence with fewer content tokens and no critical token ("Sure.", "I think so.") is not
/// judged on its own; it still counts in the whole-response figures.
pub const MIN_SENTENCE_CONTENT: usize = 3;

/// Share weights of unigram, bigram and trigram containment in a sentence's lexical support:
/// mostly the words (a paraphrase keeps them), some word order.
const NGRAM_WEIGHTS: [f64; 3] = [0.6, 0.25, 0.15];
/// Shares are shrunk towards 1/2 by one pseudo-observation, so a two-word sentence is not
/// judged as confidently as a twenty-word one.
const PRIOR: f64 = 0.5;
const PRIOR_WEIGHT: f64 = 1.0;

/// u64 keys with a weight in [0, 1]: sorted, one entry per key holding its largest weight.
#[derive(Debug, Clone, Default)]
struct WeightedSet {
    entries: Vec<(u64, f32)>,
}

impl WeightedSet {
    fn new(mut entries: Vec<(u64, f32)>) -> Self {
        entries.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.1.total_cmp(&a.1)));
        entries.dedup_by_key(|e| e.0);
        WeightedSet { entries }
    }

    /// The key's weight, 0 when absent.
    fn get(&self, k: u64) -> f64 {
        self.entries
            .binary_search_by_key(&k, |e| e.0)
            .ok()
            .and_then(|i| self.entries.get(i))
            .map_or(0.0, |e| f64::from(e.1))
    }
}

fn bigram(a: &Token, b: &Token) -> u64 {
    mix(a.hash, b.hash)
}

fn trigram(a: &Token, b: &Token, c: &Token) -> u64 {
    mix(mix(a.hash, b.hash), c.hash)
}

/// The grounding material, indexed: content unigrams and n-grams (those with at least one
/// content token) with the weight of the best source that has them.
struct ContextIndex {
    uni: WeightedSet,
    bi: WeightedSet,
    tri: WeightedSet,
    question: SortedSet64,
    tokens: usize,
    content_tokens: usize,
    truncated: bool,
}

impl ContextIndex {
    fn new(ev: &Evidence, sources: &Sources) -> ContextIndex {
        let mut uni = Vec::new();
        let mut bi = Vec::new();
        let mut tri = Vec::new();
        let mut scratch: Vec<Token> = Vec::new();
        let mut tokens = 0usize;
        let mut content_tokens = 0usize;
        let mut bytes = 0usize;
        let mut truncated = ev.citations.len() > MAX_CITATIONS;
        let passages = std::iter::once((ev.context.as_str(), sources.context_weight())).chain(
            ev.citations
                .iter()
                .take(MAX_CITATIONS)
                .map(|c| (c.text.as_str(), sources.weight(&c.source))),
        );
        for (text, w) in passages {
            if w <= 0.0 || text.is_empty() {
                continue;
            }
            let room = MAX_CONTEXT_TOKENS.saturating_sub(tokens);
            let byte_room = MAX_CONTEXT_BYTES.saturating_sub(bytes);
            if room == 0 || byte_room == 0 {
                truncated = true;
                break;
            }
            let (text, cut) = prefix(text, byte_room);
            bytes += text.len();
            truncated |= cut;
            scratch.clear();
            truncated |= tokenize(text, &mut scratch, room, 0).truncated;
            tokens += scratch.len();
            let before = uni.len();
            uni.extend(
                scratch
                    .iter()
                    .filter(|t| t.kind.is_content())
                    .map(|t| (t.hash, w)),
            );
            content_tokens += uni.len() - before;
            for pair in scratch.windows(2) {
                if let [a, b] = pair {
                    if a.kind.is_content() || b.kind.is_content() {
                        bi.push((bigram(a, b), w));
                    }
                }
            }
            for triple in scratch.windows(3) {
                if let [a, b, c] = triple {
                    if a.kind.is_content() || b.kind.is_content() || c.kind.is_content() {
                        tri.push((trigram(a, b, c), w));
                    }
                }
            }
        }
        scratch.clear();
        tokenize(
            prefix(&ev.question, MAX_QUESTION_BYTES).0,
            &mut scratch,
            MAX_QUESTION_TOKENS,
            0,
        );
        let question = SortedSet64::from_keys(
            scratch
                .iter()
                .filter(|t| t.kind.is_content())
                .map(|t| t.hash)
                .collect(),
        );
        ContextIndex {
            uni: WeightedSet::new(uni),
            bi: WeightedSet::new(bi),
            tri: WeightedSet::new(tri),
            question,
            tokens,
            content_tokens,
            truncated,
        }
    }
}

/// Unsupported critical tokens, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unsupported {
    pub numbers: usize,
    pub dates: usize,
    pub names: usize,
}

impl Unsupported {
    fn add(&mut self, kind: Kind) {
        match kind {
            Kind::Number => self.numbers += 1,
            Kind::Date => self.dates += 1,
            Kind::Name => self.names += 1,
            Kind::Stop | Kind::Word => {}
        }
    }

    fn plus(self, o: Unsupported) -> Unsupported {
        Unsupported {
            numbers: self.numbers + o.numbers,
            dates: self.dates + o.dates,
            names: self.names + o.names,
        }
    }

    pub fn total(&self) -> usize {
        self.numbers + self.dates + self.names
    }
}

/// Every grounding measure of one response. Shares are in [0, 1].
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Measures {
    /// Response tokens read (≤ [`MAX_RESPONSE_TOKENS`]).
    pub response_tokens: usize,
    pub content_tokens: usize,
    /// Context tokens read from sources of positive weight (≤ [`MAX_CONTEXT_TOKENS`]).
    pub context_tokens: usize,
    /// Content tokens among them.
    pub context_content_tokens: usize,
    /// The response had more tokens or bytes than were read: the rest is unchecked.
    pub response_truncated: bool,
    /// Some context or citations were not read (token, byte or citation cap).
    pub context_truncated: bool,
    /// Source-weighted share of response 1-, 2- and 3-grams (those with a content token) found
    /// in the context and citations.
    pub containment: [f64; 3],
    /// Source-weighted share of response content tokens found in the context, or (at
    /// [`GroundingConfig::question_weight`]) in the question.
    pub coverage: f64,
    /// Numbers, dates and names in the response (by token).
    pub critical_tokens: usize,
    /// Those found in neither the context nor the question.
    pub unsupported: Unsupported,
    /// Unsupported critical tokens of the weakest judged sentence.
    pub weakest_unsupported: Unsupported,
    /// Sentences judged on their own (see [`MIN_SENTENCE_CONTENT`]).
    pub sentences: usize,
    /// Support of the weakest judged sentence (the whole response's when none is judged).
    pub min_sentence_support: f64,
    /// Content-weighted mean support of all sentences with content.
    pub mean_sentence_support: f64,
    /// The support the vote uses: [`Self::min_sentence_support`].
    pub support: f64,
}

/// Running sums of one sentence (or of the whole response).
#[derive(Debug, Clone, Copy, Default)]
struct Tally {
    n: [usize; 3],
    /// Context-only hits per n.
    hits: [f64; 3],
    /// Content tokens supported by the context or (weighted) the question.
    covered: f64,
    critical: usize,
    /// Product of the critical-token factors.
    penalty: f64,
    unsupported: Unsupported,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            penalty: 1.0,
            ..Tally::default()
        }
    }

    fn plus(&self, o: &Tally) -> Tally {
        Tally {
            n: [self.n[0] + o.n[0], self.n[1] + o.n[1], self.n[2] + o.n[2]],
            hits: [
                self.hits[0] + o.hits[0],
                self.hits[1] + o.hits[1],
                self.hits[2] + o.hits[2],
            ],
            covered: self.covered + o.covered,
            critical: self.critical + o.critical,
            penalty: self.penalty * o.penalty,
            unsupported: self.unsupported.plus(o.unsupported),
        }
    }

    /// Lexical support (shrunk shares of covered unigrams and contained n-grams; missing
    /// n-grams of a short sentence fall back to the unigram share) times the critical penalty.
    fn support(&self) -> f64 {
        let shrink =
            |hits: f64, n: usize| (hits + PRIOR * PRIOR_WEIGHT) / (n as f64 + PRIOR_WEIGHT);
        let uni = shrink(self.covered, self.n[0]);
        let bi = if self.n[1] == 0 {
            uni
        } else {
            shrink(self.hits[1], self.n[1])
        };
        let tri = if self.n[2] == 0 {
            bi
        } else {
            shrink(self.hits[2], self.n[2])
        };
        let lexical = NGRAM_WEIGHTS[0] * uni + NGRAM_WEIGHTS[1] * bi + NGRAM_WEIGHTS[2] * tri;
        (lexical * self.penalty).clamp(0.0, 1.0)
    }

    fn judged(&self) -> bool {
        self.n[0] >= MIN_SENTENCE_CONTENT || self.critical > 0
    }
}

fn share(hits: f64, n: usize) -> f64 {
    if n == 0 {
        0.0
    } else {
        (hits / n as f64).clamp(0.0, 1.0)
    }
}

/// The measures of `ev` under `cfg` and `sources`. Work: linear in the bytes read (at most
/// [`MAX_RESPONSE_BYTES`] + [`MAX_CONTEXT_BYTES`] + [`MAX_QUESTION_BYTES`]), plus
/// O(n log n) sorting of at most [`MAX_CONTEXT_TOKENS`] context entries per n-gram order and
/// O(log n) per response n-gram.
pub fn measure(ev: &Evidence, cfg: &GroundingConfig, sources: &Sources) -> Measures {
    let idx = ContextIndex::new(ev, sources);
    let mut resp = Vec::new();
    let (response, cut) = prefix(&ev.response, MAX_RESPONSE_BYTES);
    let mut scan = tokenize(response, &mut resp, MAX_RESPONSE_TOKENS, 0);
    scan.truncated |= cut;
    let qw = cfg.question_weight();
    let keep = 1.0 - cfg.critical_penalty();

    let mut total = Tally::new();
    let mut weakest: Option<(f64, Unsupported)> = None;
    let (mut sentences, mut weighted_sum, mut weight) = (0usize, 0.0f64, 0usize);
    for sentence in resp.chunk_by(|a, b| a.sentence == b.sentence) {
        let mut t = Tally::new();
        for tok in sentence.iter().filter(|t| t.kind.is_content()) {
            let in_ctx = idx.uni.get(tok.hash);
            let supported = if idx.question.contains(tok.hash) {
                in_ctx.max(qw)
            } else {
                in_ctx
            };
            t.n[0] += 1;
            t.hits[0] += in_ctx;
            t.covered += supported;
            if tok.kind.is_critical() {
                t.critical += 1;
                // Fully supported: ×1; unsupported: ×(1 − keep); partly (a weaker source or the
                // question): in between.
                t.penalty *= 1.0 - keep * (1.0 - supported);
                if supported <= 0.0 {
                    t.unsupported.add(tok.kind);
                }
            }
        }
        for pair in sentence.windows(2) {
            if let [a, b] = pair {
                if a.kind.is_content() || b.kind.is_content() {
                    t.n[1] += 1;
                    t.hits[1] += idx.bi.get(bigram(a, b));
                }
            }
        }
        for triple in sentence.windows(3) {
            if let [a, b, c] = triple {
                if a.kind.is_content() || b.kind.is_content() || c.kind.is_content() {
                    t.n[2] += 1;
                    t.hits[2] += idx.tri.get(trigram(a, b, c));
                }
            }
        }
        if t.n[0] > 0 {
            let s = t.support();
            weighted_sum += s * t.n[0] as f64;
            weight += t.n[0];
            if t.judged() {
                sentences += 1;
                if weakest.is_none_or(|(w, _)| s < w) {
                    weakest = Some((s, t.unsupported));
                }
            }
        }
        total = total.plus(&t);
    }
    let (min_support, weakest_unsupported) = match weakest {
        Some(w) => w,
        None if total.n[0] > 0 => (total.support(), total.unsupported),
        None => (0.0, Unsupported::default()),
    };
    Measures {
        response_tokens: resp.len(),
        content_tokens: total.n[0],
        context_tokens: idx.tokens,
        context_content_tokens: idx.content_tokens,
        response_truncated: scan.truncated,
        context_truncated: idx.truncated,
        containment: [
            share(total.hits[0], total.n[0]),
            share(total.hits[1], total.n[1]),
            share(total.hits[2], total.n[2]),
        ],
        coverage: share(total.covered, total.n[0]),
        critical_tokens: total.critical,
        unsupported: total.unsupported,
        weakest_unsupported,
        sentences,
        min_sentence_support: min_support,
        mean_sentence_support: if weight == 0 {
            0.0
        } else {
            weighted_sum / weight as f64
        },
        support: min_support,
    }
}
