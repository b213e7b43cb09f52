//! Evidence for hallucination-risk scoring: what the agent was asked, what it was given to answer
//! from, and what it answered — and the grounding features computed from them.
//!
//! Why this exists: a PCS only summarises the *shape* of the response text (dimension,
//! coherence, compressibility). Whether the response is *supported* needs the context it should
//! be grounded in. These features measure that support lexically: how many response tokens,
//! bigrams and trigrams occur in the context, which numbers and capitalised (entity-like) tokens
//! are new, how much of the answer only echoes the question.
//!
//! Everything here is a pure function of the text so it runs unchanged in the Envoy filter
//! (wasm). Tokenisation is deliberately simple and deterministic: maximal runs of alphanumeric
//! characters, lowercased, hashed with FNV-1a 64 (no strings are kept), with a small fixed
//! stopword list. Membership tests binary-search sorted, deduplicated token hashes
//! ([`SortedSet64`]), and only the first few thousand tokens of each field are considered
//! ([`MAX_RESPONSE_TOKENS`], [`MAX_CONTEXT_TOKENS`], [`MAX_QUESTION_TOKENS`]), so the cost is
//! O(n log n) in the capped token counts plus one linear pass over the text, and the memory a
//! few hundred KiB at most, whatever tokens an attacker crafts.

use serde::{Deserialize, Serialize};

/// One cited source, as an alternative (or addition) to a free-text context.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Citation {
    pub id: String,
    pub text: String,
    pub source: String,
}

/// The question, the grounding material and the response of one agent answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Evidence {
    pub question: String,
    /// Free-text grounding context.
    pub context: String,
    /// Cited passages; their texts count as context too.
    pub citations: Vec<Citation>,
    pub response: String,
    /// The task the answer was produced for (PCS v0.2, optional): chooses the bundle's
    /// task-aware model. Part of the canonical evidence, hence of `evidence_sha256` and of the
    /// signature, when present; evidence without it hashes exactly as before it existed. An
    /// unknown spelling is refused by the parser ([`crate::pcs::ParseError::Task`]).
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::task::deserialize_opt"
    )]
    pub task: Option<crate::task::TaskKind>,
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a 64 of `bytes` (usable in `const` context).
pub const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h = FNV_OFFSET;
    let mut rest = bytes;
    while let [b, tail @ ..] = rest {
        h ^= *b as u64;
        h = h.wrapping_mul(FNV_PRIME);
        rest = tail;
    }
    h
}

/// The fixed stopword list of tokeniser v1 (changing it changes [`crate::features::SCHEMA_VERSION`]).
pub const STOPWORDS: [&str; 48] = [
    "a", "an", "the", "and", "or", "but", "of", "to", "in", "on", "at", "by", "for", "with",
    "from", "as", "is", "are", "was", "were", "be", "been", "being", "it", "its", "this", "that",
    "these", "those", "he", "she", "they", "his", "her", "their", "i", "you", "we", "do", "does",
    "did", "not", "no", "so", "if", "than", "then", "s",
];

/// The FNV-1a hashes of `words`, sorted (for binary search; evaluated at compile time).
// Only called to initialise constants: an index out of bounds would be a compile error, and
// `get` is not available in `const fn`.
#[allow(clippy::indexing_slicing)]
pub(crate) const fn sorted_hashes<const N: usize>(words: [&str; N]) -> [u64; N] {
    let mut a = [0u64; N];
    let mut i = 0;
    while i < N {
        a[i] = fnv1a(words[i].as_bytes());
        i += 1;
    }
    let mut i = 1;
    while i < N {
        let mut j = i;
        while j > 0 && a[j - 1] > a[j] {
            let t = a[j];
            a[j] = a[j - 1];
            a[j - 1] = t;
            j -= 1;
        }
        i += 1;
    }
    a
}

static STOP_HASHES: [u64; STOPWORDS.len()] = sorted_hashes(STOPWORDS);

/// One token: the hash of its lowercased text plus the flags the features need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token {
    pub hash: u64,
    pub stop: bool,
    /// Only ASCII digits.
    pub number: bool,
    /// First character upper-case in the original text.
    pub capitalized: bool,
}

/// Appends the tokens of `text` to `out`: maximal alphanumeric runs, lowercased.
pub fn tokenize(text: &str, out: &mut Vec<Token>) {
    tokenize_capped(text, out, usize::MAX);
}

/// Hash of an n-gram from the hashes of its tokens (order-sensitive).
#[inline]
pub(crate) fn mix(a: u64, b: u64) -> u64 {
    (a.rotate_left(23) ^ b).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5851_f42d_4c95_7f2d
}

/// Hash of the bigram at the start of `w` (0 when `w` is shorter).
#[inline]
pub(crate) fn bigram(w: &[Token]) -> u64 {
    match w {
        [a, b, ..] => mix(a.hash, b.hash),
        _ => 0,
    }
}

/// Hash of the trigram at the start of `w` (0 when `w` is shorter).
#[inline]
pub(crate) fn trigram(w: &[Token]) -> u64 {
    match w {
        [a, b, c, ..] => mix(mix(a.hash, b.hash), c.hash),
        _ => 0,
    }
}

/// A set of u64 hashes: sorted and deduplicated, looked up by binary search. Building costs
/// O(n log n) and a lookup O(log n) whatever the keys are, so crafted tokens whose hashes
/// collide in some bits cannot slow it down (an open-addressing table with a fixed, unkeyed hash
/// could be driven to quadratic probing).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SortedSet64 {
    keys: Vec<u64>,
}

impl SortedSet64 {
    /// The set of `keys` (any order, duplicates allowed).
    pub fn from_keys(mut keys: Vec<u64>) -> Self {
        keys.sort_unstable();
        keys.dedup();
        SortedSet64 { keys }
    }

    #[inline]
    pub fn contains(&self, k: u64) -> bool {
        self.keys.binary_search(&k).is_ok()
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// At most this many response tokens are considered (the rest only count towards
/// `resp_tokens_log`).
pub const MAX_RESPONSE_TOKENS: usize = 4_096;
/// At most this many context tokens (context, then citation texts in order) are considered.
pub const MAX_CONTEXT_TOKENS: usize = 16_384;
/// At most this many question tokens are considered.
pub const MAX_QUESTION_TOKENS: usize = 1_024;

/// As [`tokenize`], but appends only while `out` holds fewer than `cap` tokens; returns how many
/// tokens `text` has in all (counted without being stored).
pub fn tokenize_capped(text: &str, out: &mut Vec<Token>, cap: usize) -> usize {
    let mut h = FNV_OFFSET;
    let mut in_tok = false;
    let mut digits = true;
    let mut cap_first = false;
    let mut total = 0usize;
    let mut finish = |h: u64, digits: bool, capitalized: bool, out: &mut Vec<Token>| {
        total += 1;
        if out.len() < cap {
            out.push(Token {
                hash: h,
                stop: STOP_HASHES.binary_search(&h).is_ok(),
                number: digits,
                capitalized,
            });
        }
    };
    for c in text.chars() {
        let alnum = if c.is_ascii() {
            c.is_ascii_alphanumeric()
        } else {
            c.is_alphanumeric()
        };
        if alnum {
            if !in_tok {
                in_tok = true;
                h = FNV_OFFSET;
                digits = true;
                cap_first = c.is_uppercase();
            }
            digits &= c.is_ascii_digit();
            if c.is_ascii() {
                h ^= c.to_ascii_lowercase() as u64;
                h = h.wrapping_mul(FNV_PRIME);
            } else {
                let mut buf = [0u8; 4];
                for lc in c.to_lowercase() {
                    for &b in lc.encode_utf8(&mut buf).as_bytes() {
                        h ^= b as u64;
                        h = h.wrapping_mul(FNV_PRIME);
                    }
                }
            }
        } else if in_tok {
            in_tok = false;
            finish(h, digits, cap_first, out);
        }
    }
    if in_tok {
        finish(h, digits, cap_first, out);
    }
    total
}

/// Grounding features of one [`Evidence`]; see the field docs. Shares are in [0, 1] and are 0
/// when their denominator is empty.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct EvidenceFeatures {
    /// ln(1 + response tokens).
    pub resp_tokens_log: f64,
    /// ln(1 + context tokens), context = `context` plus every citation text.
    pub ctx_tokens_log: f64,
    /// Share of response tokens (all) that occur in the context.
    pub token_coverage: f64,
    /// Share of response content (non-stopword) tokens found in neither context nor question.
    pub novel_content_share: f64,
    /// Share of response bigrams found in the context (= `token_coverage` when < 2 tokens).
    pub bigram_containment: f64,
    /// Share of response trigrams found in the context (= `bigram_containment` when < 3 tokens).
    pub trigram_containment: f64,
    /// Share of response numbers found in neither context nor question.
    pub unsupported_number_share: f64,
    /// ln(1 + count of such numbers).
    pub unsupported_numbers_log: f64,
    /// Share of response content tokens that occur in the question.
    pub question_overlap: f64,
    /// Share of capitalised content tokens (entity-like) found in neither context nor question.
    pub novel_capitalized_share: f64,
}

fn share(num: usize, den: usize) -> f64 {
    if den == 0 {
        0.0
    } else {
        num as f64 / den as f64
    }
}

/// The grounding features of `ev` (pure, deterministic).
///
/// Bounded work: only the first [`MAX_RESPONSE_TOKENS`] response tokens,
/// [`MAX_CONTEXT_TOKENS`] context tokens and [`MAX_QUESTION_TOKENS`] question tokens are
/// considered (always the same ones for the same text, so the features stay deterministic); the
/// two length features still count every token. Below the caps the features are exactly those of
/// the uncapped definition.
pub fn evidence_features(ev: &Evidence) -> EvidenceFeatures {
    let mut ctx = Vec::with_capacity((ev.context.len() / 5 + 8).min(MAX_CONTEXT_TOKENS));
    let mut ctx_total = tokenize_capped(&ev.context, &mut ctx, MAX_CONTEXT_TOKENS);
    for c in &ev.citations {
        ctx_total =
            ctx_total.saturating_add(tokenize_capped(&c.text, &mut ctx, MAX_CONTEXT_TOKENS));
    }
    let mut q = Vec::with_capacity((ev.question.len() / 5 + 8).min(MAX_QUESTION_TOKENS));
    tokenize_capped(&ev.question, &mut q, MAX_QUESTION_TOKENS);
    let mut resp = Vec::with_capacity((ev.response.len() / 5 + 8).min(MAX_RESPONSE_TOKENS));
    let resp_total = tokenize_capped(&ev.response, &mut resp, MAX_RESPONSE_TOKENS);

    let ctx1 = SortedSet64::from_keys(ctx.iter().map(|t| t.hash).collect());
    let ctx2 = SortedSet64::from_keys(ctx.windows(2).map(bigram).collect());
    let ctx3 = SortedSet64::from_keys(ctx.windows(3).map(trigram).collect());
    let q1 = SortedSet64::from_keys(q.iter().map(|t| t.hash).collect());

    let (mut covered, mut content, mut novel, mut in_q) = (0usize, 0usize, 0usize, 0usize);
    let (mut nums, mut nums_unsup, mut caps, mut caps_novel) = (0usize, 0usize, 0usize, 0usize);
    let (mut bi, mut bi_hit, mut tri, mut tri_hit) = (0usize, 0usize, 0usize, 0usize);
    for t in &resp {
        let in_ctx = ctx1.contains(t.hash);
        let in_question = q1.contains(t.hash);
        covered += in_ctx as usize;
        if !t.stop {
            content += 1;
            novel += (!in_ctx && !in_question) as usize;
            in_q += in_question as usize;
            if t.capitalized && !t.number {
                caps += 1;
                caps_novel += (!in_ctx && !in_question) as usize;
            }
        }
        if t.number {
            nums += 1;
            nums_unsup += (!in_ctx && !in_question) as usize;
        }
    }
    for w in resp.windows(2) {
        bi += 1;
        bi_hit += ctx2.contains(bigram(w)) as usize;
    }
    for w in resp.windows(3) {
        tri += 1;
        tri_hit += ctx3.contains(trigram(w)) as usize;
    }
    let token_coverage = share(covered, resp.len());
    let bigram_containment = if bi == 0 {
        token_coverage
    } else {
        share(bi_hit, bi)
    };
    let trigram_containment = if tri == 0 {
        bigram_containment
    } else {
        share(tri_hit, tri)
    };
    EvidenceFeatures {
        resp_tokens_log: (resp_total as f64).ln_1p(),
        ctx_tokens_log: (ctx_total as f64).ln_1p(),
        token_coverage,
        novel_content_share: share(novel, content),
        bigram_containment,
        trigram_containment,
        unsupported_number_share: share(nums_unsup, nums),
        unsupported_numbers_log: (nums_unsup as f64).ln_1p(),
        question_overlap: share(in_q, content),
        novel_capitalized_share: share(caps_novel, caps),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(s: &str) -> Vec<Token> {
        let mut v = Vec::new();
        tokenize(s, &mut v);
        v
    }

    #[test]
    fn tokenizer_is_lowercase_alnum_runs() {
        let t = toks("The Salon, 1999! Émile's");
        assert_eq!(t.len(), 5);
        assert_eq!(t[0].hash, fnv1a(b"the"));
        assert!(t[0].stop && t[0].capitalized && !t[0].number);
        assert_eq!(t[1].hash, fnv1a(b"salon"));
        assert!(!t[1].stop && t[1].capitalized);
        assert!(t[2].number && !t[2].capitalized);
        assert_eq!(t[3].hash, fnv1a("émile".as_bytes()));
        assert!(t[3].capitalized);
        assert_eq!(t[4].hash, fnv1a(b"s"));
        assert!(t[4].stop);
        assert!(toks("").is_empty() && toks(" ,.; ").is_empty());
    }

    #[test]
    fn stopwords_are_found() {
        for w in STOPWORDS {
            assert!(
                STOP_HASHES.binary_search(&fnv1a(w.as_bytes())).is_ok(),
                "{w}"
            );
        }
        assert!(STOP_HASHES.binary_search(&fnv1a(b"salon")).is_err());
    }

    #[test]
    fn sorted_set() {
        let s = SortedSet64::from_keys(vec![u64::MAX, 5, 0, 5, 1 << 40, 1]);
        assert_eq!(s.len(), 5);
        for k in [0u64, 1, 5, 1 << 40, u64::MAX] {
            assert!(s.contains(k));
        }
        assert!(!s.contains(6) && !s.contains(2));
        assert!(SortedSet64::default().is_empty() && !SortedSet64::default().contains(0));
    }

    /// Distinct tokens whose FNV-1a hashes all share their low `bits` bits (what a hash-flooding
    /// attack on a fixed-hash table sends).
    fn colliding_tokens(n: usize, bits: u32) -> Vec<String> {
        let mask = (1u64 << bits) - 1;
        (0u64..)
            .map(|i| format!("x{i}"))
            .filter(|w| fnv1a(w.as_bytes()) & mask == 0)
            .take(n)
            .collect()
    }

    #[test]
    fn colliding_tokens_are_handled_and_fields_are_capped() {
        let words = colliding_tokens(1_000, 10);
        assert!(words.iter().all(|w| fnv1a(w.as_bytes()) & 0x3ff == 0));
        let text = words.join(" ");
        let ev = Evidence {
            question: text.clone(),
            context: text.clone(),
            citations: vec![],
            response: text.clone(),
            task: None,
        };
        let f = evidence_features(&ev);
        assert_eq!(f.token_coverage, 1.0);
        assert_eq!(f.bigram_containment, 1.0);
        assert_eq!(f.trigram_containment, 1.0);
        assert_eq!(f.novel_content_share, 0.0);
        assert_eq!(f.question_overlap, 1.0);

        // Over the caps: everything past them is ignored, but counted for the length features.
        let grounded = "alpha ".repeat(MAX_RESPONSE_TOKENS);
        let ev = Evidence {
            question: "q ".repeat(MAX_QUESTION_TOKENS * 3),
            context: format!("alpha {}", "pad ".repeat(MAX_CONTEXT_TOKENS)) + &text,
            citations: vec![Citation {
                text: text.clone(),
                ..Citation::default()
            }],
            response: grounded + &text,
            task: None,
        };
        let f = evidence_features(&ev);
        let resp_total = MAX_RESPONSE_TOKENS + words.len();
        let ctx_total = 1 + MAX_CONTEXT_TOKENS + 2 * words.len();
        assert_eq!(f.resp_tokens_log, (resp_total as f64).ln_1p());
        assert_eq!(f.ctx_tokens_log, (ctx_total as f64).ln_1p());
        // Only the first 4,096 response tokens ("alpha") count, and "alpha" is in the context;
        // the colliding words lie past the context cap, so they would not count anyway.
        assert_eq!(f.token_coverage, 1.0);
        assert_eq!(f.novel_content_share, 0.0);
        let all = [
            f.resp_tokens_log,
            f.ctx_tokens_log,
            f.token_coverage,
            f.novel_content_share,
            f.bigram_containment,
            f.trigram_containment,
            f.unsupported_number_share,
            f.unsupported_numbers_log,
            f.question_overlap,
            f.novel_capitalized_share,
        ];
        assert!(all.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn capped_tokenizer_counts_everything_and_keeps_the_first() {
        let mut v = Vec::new();
        assert_eq!(tokenize_capped("a b c d", &mut v, 2), 4);
        assert_eq!(v, toks("a b"));
        assert_eq!(tokenize_capped("e f", &mut v, 3), 2);
        assert_eq!(v, toks("a b e"));
    }

    #[test]
    fn known_features() {
        let ev = Evidence {
            question: "Who directed The Salon?".into(),
            context: "The Salon is a 2005 film starring Monica Calhoun.".into(),
            citations: vec![],
            response: "The Salon was directed by Martin Scorsese in 2005 and 1990.".into(),
            task: None,
        };
        let f = evidence_features(&ev);
        // response tokens: the salon was directed by martin scorsese in 2005 and 1990 (11)
        assert_eq!(f.resp_tokens_log, 11f64.ln_1p());
        assert_eq!(f.ctx_tokens_log, 9f64.ln_1p());
        // in context: the, salon, 2005 → 3/11
        assert_eq!(f.token_coverage, 3.0 / 11.0);
        // content: salon directed martin scorsese 2005 1990 (6); novel: martin scorsese 1990
        assert_eq!(f.novel_content_share, 3.0 / 6.0);
        // bigrams in context: "the salon" → 1/10
        assert_eq!(f.bigram_containment, 1.0 / 10.0);
        assert_eq!(f.trigram_containment, 0.0);
        assert_eq!(f.unsupported_number_share, 0.5);
        assert_eq!(f.unsupported_numbers_log, 1f64.ln_1p());
        // salon, directed in question → 2/6
        assert_eq!(f.question_overlap, 2.0 / 6.0);
        // capitalised content: Salon Martin Scorsese → 2 novel of 3
        assert_eq!(f.novel_capitalized_share, 2.0 / 3.0);
    }

    #[test]
    fn citations_count_as_context_and_short_answers_fall_back() {
        let ev = Evidence {
            question: String::new(),
            context: String::new(),
            citations: vec![Citation {
                id: "1".into(),
                text: "Paris is the capital".into(),
                source: "wiki".into(),
            }],
            response: "Paris".into(),
            task: None,
        };
        let f = evidence_features(&ev);
        assert_eq!(f.token_coverage, 1.0);
        assert_eq!(f.bigram_containment, 1.0);
        assert_eq!(f.trigram_containment, 1.0);
        let empty = evidence_features(&Evidence::default());
        assert_eq!(empty, EvidenceFeatures::default());
    }

    #[test]
    fn serde_shape() {
        let ev: Evidence = serde_json::from_str(
            r#"{"question":"q","citations":[{"id":"c1","text":"t","source":"s"}],"response":"r"}"#,
        )
        .unwrap();
        assert_eq!(ev.context, "");
        assert_eq!(ev.citations[0].source, "s");
    }
}

/// Canonical text of an evidence object: compact JSON with every key present, keys sorted,
/// non-ASCII escaped — what Python's
/// `json.dumps({"citations": [...], "context": c, "question": q, "response": r}, sort_keys=True,
/// separators=(",", ":"))` writes (citation keys `id`, `source`, `text`). A `task`, when
/// present, is the last key (`"task":"qa"`, as `sort_keys` puts it); without one the text is
/// exactly what it was before tasks existed, so every earlier `evidence_sha256` still binds.
pub fn canonical_evidence(ev: &Evidence) -> String {
    use crate::numfmt::{write_json_string, JsonEscape::PythonAscii};
    let mut out =
        String::with_capacity(ev.context.len() + ev.response.len() + ev.question.len() + 64);
    out.push_str("{\"citations\":[");
    for (i, c) in ev.citations.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"id\":");
        write_json_string(&mut out, &c.id, PythonAscii);
        out.push_str(",\"source\":");
        write_json_string(&mut out, &c.source, PythonAscii);
        out.push_str(",\"text\":");
        write_json_string(&mut out, &c.text, PythonAscii);
        out.push('}');
    }
    out.push_str("],\"context\":");
    write_json_string(&mut out, &ev.context, PythonAscii);
    out.push_str(",\"question\":");
    write_json_string(&mut out, &ev.question, PythonAscii);
    out.push_str(",\"response\":");
    write_json_string(&mut out, &ev.response, PythonAscii);
    if let Some(t) = ev.task {
        out.push_str(",\"task\":");
        write_json_string(&mut out, t.as_str(), PythonAscii);
    }
    out.push('}');
    out
}

/// Hex SHA-256 of [`canonical_evidence`]: the PCS v0.2 `evidence_sha256`.
pub fn evidence_sha256(ev: &Evidence) -> String {
    crate::ids::sha256_hex(canonical_evidence(ev).as_bytes())
}

/// Why evidence sent with a PCS cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BindingError {
    /// Evidence without an `evidence_sha256` in the signed payload (HTTP 400).
    #[error("evidence must be bound to the signature by evidence_sha256 (PCS v0.2)")]
    Unbound,
    /// The evidence is not the one the agent signed (HTTP 401).
    #[error("evidence does not match the signed evidence_sha256")]
    Mismatch,
    /// The signed payload has an `evidence_sha256` but the evidence was not sent: the agent
    /// signed that evidence exists, so scoring must not be skipped by stripping it (HTTP 400).
    #[error("the signed evidence_sha256 says evidence exists, but no evidence was sent")]
    Missing,
}

impl BindingError {
    pub fn code(&self) -> &'static str {
        match self {
            BindingError::Unbound => "evidence_unbound",
            BindingError::Mismatch => "evidence_mismatch",
            BindingError::Missing => "evidence_missing",
        }
    }

    pub fn status(&self) -> u16 {
        match self {
            BindingError::Unbound | BindingError::Missing => 400,
            BindingError::Mismatch => 401,
        }
    }
}

/// The evidence of a signature-checked PCS, if it is bound to that signature. Call only after
/// the signature verified (the signature covers `evidence_sha256`). `Ok(None)` only when the PCS
/// neither carries evidence nor signed an `evidence_sha256`.
pub fn bound_evidence(pcs: &crate::pcs::Pcs) -> Result<Option<&Evidence>, BindingError> {
    match &pcs.evidence {
        None if pcs.evidence_sha256.is_empty() => Ok(None),
        None => Err(BindingError::Missing),
        Some(_) if pcs.evidence_sha256.is_empty() => Err(BindingError::Unbound),
        Some(ev) if evidence_sha256(ev) == pcs.evidence_sha256.to_ascii_lowercase() => Ok(Some(ev)),
        Some(_) => Err(BindingError::Mismatch),
    }
}

#[cfg(test)]
mod binding_tests {
    use super::*;
    use crate::pcs::Pcs;

    #[test]
    fn canonical_form_matches_python_sort_keys() {
        let ev = Evidence {
            question: "Who?".into(),
            context: "Ada Lovelace wrote the first program.".into(),
            citations: vec![Citation {
                id: "1".into(),
                text: "t é".into(),
                source: "s".into(),
            }],
            response: "Ada".into(),
            task: None,
        };
        // python3 -c 'import json;print(json.dumps({"citations":[{"id":"1","text":"t é","source":"s"}],
        //   "context":"Ada Lovelace wrote the first program.","question":"Who?","response":"Ada"},
        //   sort_keys=True,separators=(",",":")))'
        assert_eq!(
            canonical_evidence(&ev),
            r#"{"citations":[{"id":"1","source":"s","text":"t \u00e9"}],"context":"Ada Lovelace wrote the first program.","question":"Who?","response":"Ada"}"#
        );
    }

    #[test]
    fn binding_rules() {
        let ev = Evidence {
            question: "q".into(),
            context: "c".into(),
            citations: vec![],
            response: "r".into(),
            task: None,
        };
        let mut p = Pcs {
            evidence: Some(ev.clone()),
            ..Pcs::default()
        };
        assert_eq!(bound_evidence(&p), Err(BindingError::Unbound));
        p.evidence_sha256 = evidence_sha256(&ev);
        assert_eq!(bound_evidence(&p), Ok(Some(&ev)));
        if let Some(e) = p.evidence.as_mut() {
            e.response.push('!');
        }
        assert_eq!(bound_evidence(&p), Err(BindingError::Mismatch));
        // Stripping signed evidence does not skip scoring: it is an error.
        p.evidence = None;
        assert_eq!(bound_evidence(&p), Err(BindingError::Missing));
        assert_eq!(
            (BindingError::Missing.status(), BindingError::Missing.code()),
            (400, "evidence_missing")
        );
        p.evidence_sha256.clear();
        assert_eq!(bound_evidence(&p), Ok(None));
    }

    /// The task is signed with the evidence: without one the canonical text (and hash) is the
    /// pre-task one; with one it is the last key; changing, adding or stripping it after
    /// signing breaks the binding (401 `evidence_mismatch`).
    #[test]
    fn task_is_bound_and_absent_task_hashes_as_before() {
        use crate::task::TaskKind;
        let ev = Evidence {
            question: "Who?".into(),
            context: "c".into(),
            response: "Ada".into(),
            ..Evidence::default()
        };
        let before = r#"{"citations":[],"context":"c","question":"Who?","response":"Ada"}"#;
        assert_eq!(canonical_evidence(&ev), before);
        let qa = Evidence {
            task: Some(TaskKind::Qa),
            ..ev.clone()
        };
        // python3 -c 'import json;print(json.dumps({"citations":[],"context":"c",
        //   "question":"Who?","response":"Ada","task":"qa"},sort_keys=True,separators=(",",":")))'
        assert_eq!(
            canonical_evidence(&qa),
            r#"{"citations":[],"context":"c","question":"Who?","response":"Ada","task":"qa"}"#
        );
        // Serialising writes the task only when present (what the builder sends).
        assert!(!serde_json::to_string(&ev).unwrap().contains("task"));
        assert!(serde_json::to_string(&qa)
            .unwrap()
            .contains(r#""task":"qa""#));
        let mut p = Pcs {
            evidence_sha256: evidence_sha256(&qa),
            evidence: Some(qa.clone()),
            ..Pcs::default()
        };
        assert_eq!(bound_evidence(&p), Ok(Some(&qa)));
        for forged in [Some(TaskKind::Dialogue), None] {
            if let Some(e) = p.evidence.as_mut() {
                e.task = forged;
            }
            assert_eq!(
                bound_evidence(&p),
                Err(BindingError::Mismatch),
                "{forged:?}"
            );
        }
        // Adding a task to evidence signed without one is refused too.
        p.evidence_sha256 = evidence_sha256(&ev);
        p.evidence = Some(qa);
        assert_eq!(bound_evidence(&p), Err(BindingError::Mismatch));
    }
}
