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
//! stopword list. Membership tests use a small open-addressing set of token hashes, so the cost
//! is a few allocations and linear time in the payload.

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
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a 64 of `bytes` (usable in `const` context).
pub const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h = FNV_OFFSET;
    let mut i = 0;
    while i < bytes.len() {
        h ^= bytes[i] as u64;
        h = h.wrapping_mul(FNV_PRIME);
        i += 1;
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

const fn sorted_stop_hashes() -> [u64; STOPWORDS.len()] {
    let mut a = [0u64; STOPWORDS.len()];
    let mut i = 0;
    while i < a.len() {
        a[i] = fnv1a(STOPWORDS[i].as_bytes());
        i += 1;
    }
    let mut i = 1;
    while i < a.len() {
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

static STOP_HASHES: [u64; STOPWORDS.len()] = sorted_stop_hashes();

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
    let mut h = FNV_OFFSET;
    let mut in_tok = false;
    let mut digits = true;
    let mut cap = false;
    let finish = |h: u64, digits: bool, cap: bool, out: &mut Vec<Token>| {
        out.push(Token {
            hash: h,
            stop: STOP_HASHES.binary_search(&h).is_ok(),
            number: digits,
            capitalized: cap,
        });
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
                cap = c.is_uppercase();
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
            finish(h, digits, cap, out);
        }
    }
    if in_tok {
        finish(h, digits, cap, out);
    }
}

/// Hash of an n-gram from the hashes of its tokens (order-sensitive).
#[inline]
fn mix(a: u64, b: u64) -> u64 {
    (a.rotate_left(23) ^ b).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5851_f42d_4c95_7f2d
}

/// A set of u64 hashes: open addressing, linear probing, power-of-two capacity. Keys are
/// already well-mixed hashes, so no further hashing is needed. 0 marks an empty slot (a real 0
/// is stored as 1; a collision of that kind is harmless for these features).
pub struct HashSet64 {
    slots: Vec<u64>,
    mask: usize,
}

impl HashSet64 {
    pub fn with_capacity(n: usize) -> Self {
        let cap = (n.max(4) * 2).next_power_of_two();
        HashSet64 {
            slots: vec![0; cap],
            mask: cap - 1,
        }
    }

    #[inline]
    fn slot(&self, k: u64) -> usize {
        ((k ^ (k >> 29)) as usize) & self.mask
    }

    #[inline]
    pub fn insert(&mut self, k: u64) {
        let k = k.max(1);
        let mut i = self.slot(k);
        loop {
            let s = self.slots[i];
            if s == k {
                return;
            }
            if s == 0 {
                self.slots[i] = k;
                return;
            }
            i = (i + 1) & self.mask;
        }
    }

    #[inline]
    pub fn contains(&self, k: u64) -> bool {
        let k = k.max(1);
        let mut i = self.slot(k);
        loop {
            let s = self.slots[i];
            if s == k {
                return true;
            }
            if s == 0 {
                return false;
            }
            i = (i + 1) & self.mask;
        }
    }
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
pub fn evidence_features(ev: &Evidence) -> EvidenceFeatures {
    let mut ctx = Vec::with_capacity(ev.context.len() / 5 + 8);
    tokenize(&ev.context, &mut ctx);
    for c in &ev.citations {
        tokenize(&c.text, &mut ctx);
    }
    let mut q = Vec::with_capacity(ev.question.len() / 5 + 8);
    tokenize(&ev.question, &mut q);
    let mut resp = Vec::with_capacity(ev.response.len() / 5 + 8);
    tokenize(&ev.response, &mut resp);

    let mut ctx1 = HashSet64::with_capacity(ctx.len());
    let mut ctx2 = HashSet64::with_capacity(ctx.len());
    let mut ctx3 = HashSet64::with_capacity(ctx.len());
    for (i, t) in ctx.iter().enumerate() {
        ctx1.insert(t.hash);
        if i >= 1 {
            let b = mix(ctx[i - 1].hash, t.hash);
            ctx2.insert(b);
            if i >= 2 {
                ctx3.insert(mix(mix(ctx[i - 2].hash, ctx[i - 1].hash), t.hash));
            }
        }
    }
    let mut q1 = HashSet64::with_capacity(q.len());
    for t in &q {
        q1.insert(t.hash);
    }

    let (mut covered, mut content, mut novel, mut in_q) = (0usize, 0usize, 0usize, 0usize);
    let (mut nums, mut nums_unsup, mut caps, mut caps_novel) = (0usize, 0usize, 0usize, 0usize);
    let (mut bi, mut bi_hit, mut tri, mut tri_hit) = (0usize, 0usize, 0usize, 0usize);
    for (i, t) in resp.iter().enumerate() {
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
        if i >= 1 {
            let b = mix(resp[i - 1].hash, t.hash);
            bi += 1;
            bi_hit += ctx2.contains(b) as usize;
            if i >= 2 {
                tri += 1;
                tri_hit +=
                    ctx3.contains(mix(mix(resp[i - 2].hash, resp[i - 1].hash), t.hash)) as usize;
            }
        }
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
        resp_tokens_log: (resp.len() as f64).ln_1p(),
        ctx_tokens_log: (ctx.len() as f64).ln_1p(),
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
    fn hash_set() {
        let mut s = HashSet64::with_capacity(3);
        for k in [0u64, 5, 5, 1 << 40, u64::MAX] {
            s.insert(k);
        }
        for k in [0u64, 5, 1 << 40, u64::MAX] {
            assert!(s.contains(k));
        }
        assert!(!s.contains(6));
    }

    #[test]
    fn known_features() {
        let ev = Evidence {
            question: "Who directed The Salon?".into(),
            context: "The Salon is a 2005 film starring Monica Calhoun.".into(),
            citations: vec![],
            response: "The Salon was directed by Martin Scorsese in 2005 and 1990.".into(),
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
/// separators=(",", ":"))` writes (citation keys `id`, `source`, `text`).
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
}

impl BindingError {
    pub fn code(&self) -> &'static str {
        match self {
            BindingError::Unbound => "evidence_unbound",
            BindingError::Mismatch => "evidence_mismatch",
        }
    }

    pub fn status(&self) -> u16 {
        match self {
            BindingError::Unbound => 400,
            BindingError::Mismatch => 401,
        }
    }
}

/// The evidence of a signature-checked PCS, if it is bound to that signature. Call only after
/// the signature verified (the signature covers `evidence_sha256`).
pub fn bound_evidence(pcs: &crate::pcs::Pcs) -> Result<Option<&Evidence>, BindingError> {
    match &pcs.evidence {
        None => Ok(None),
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
        p.evidence = None;
        assert_eq!(bound_evidence(&p), Ok(None));
    }
}
