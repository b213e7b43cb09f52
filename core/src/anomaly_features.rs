//! The anomaly detector's feature schema: named, ordered and versioned, like [`crate::features`].
//!
//! Why a schema of its own: the HRS features measure whether an answer is *supported* by its
//! context; the anomaly detector looks for answers that are *broken* (repetition loops,
//! gibberish, truncation, the prompt or context echoed back, a sudden change of language) and
//! for agents whose PCS signals leave the normal range. Its VAE ([`crate::vae`]) records
//! [`SCHEMA_VERSION`] and [`FEATURE_NAMES`], and refuses an artifact whose schema differs.
//!
//! The vector has two blocks:
//! * PCS signals (always present): the claimed D̂, coh★, r and budget and the gap between the
//!   claimed and the recomputed D̂;
//! * text degeneracy features of the evidence, all 0 with `evidence_present = 0` when no
//!   evidence was sent. They reuse the tokeniser of [`crate::evidence`] (same tokens, same caps)
//!   and one pass over the response's characters (at most [`MAX_RESPONSE_CHARS`]), so the cost
//!   stays linear in the capped text plus one sort per n-gram set.
//!
//! Values are finite: a non-finite or huge claimed signal becomes ±[`SIGNAL_LIMIT`] (NaN the
//! top), far outside any normal range, so the detector still sees it as anomalous.

use crate::evidence::{
    bigram, sorted_hashes, tokenize_capped, trigram, Evidence, Token, MAX_CONTEXT_TOKENS,
    MAX_QUESTION_TOKENS, MAX_RESPONSE_TOKENS,
};
use crate::features::{PcsSignals, RESIDUAL_UNCOMPUTABLE};

/// Version of the schema below; bump on any change of names, order or definitions (including
/// the stopword lists and the script table).
pub const SCHEMA_VERSION: &str = "anomaly-features-v2";

/// Number of features.
pub const N_FEATURES: usize = 26;

/// Names in vector order.
pub const FEATURE_NAMES: [&str; N_FEATURES] = [
    "d_hat",
    "coh_star",
    "r",
    "budget",
    "d_hat_residual",
    "evidence_present",
    "resp_tokens_log",
    "repeated_ngram_share",
    "distinct_token_ratio",
    "consonant_run_share",
    "char_entropy",
    "non_letter_share",
    "vowel_ratio",
    "context_echo",
    "context_containment",
    "question_echo",
    "ends_truncated",
    "other_script_share",
    "stopword_share",
    "foreign_stopword_share",
    "nonword_share",
    "letter_surprisal",
    "echo_run_log",
    "open_sentence_log",
    "end_surprisal",
    "unbalanced",
];

/// Index of a feature by name (for labellers and tests).
pub fn index_of(name: &str) -> Option<usize> {
    FEATURE_NAMES.iter().position(|n| *n == name)
}

/// Bound of every PCS signal in the vector.
pub const SIGNAL_LIMIT: f64 = 1e6;

/// At most this many response characters enter the character statistics.
pub const MAX_RESPONSE_CHARS: usize = 16_384;
/// At most this many question and context characters decide their dominant script.
pub const MAX_SCRIPT_CHARS: usize = 4_096;

/// Frequent French, German, Spanish and Italian function words that are not English words
/// (the language-change signal in Latin script).
pub const FOREIGN_STOPWORDS: [&str; 40] = [
    "le", "les", "des", "du", "une", "est", "et", "pour", "dans", "pas", "qui", "sur", "avec",
    "der", "das", "und", "ist", "nicht", "mit", "sich", "dem", "ein", "eine", "zu", "von", "auf",
    "los", "las", "que", "y", "es", "por", "para", "una", "como", "il", "di", "che", "della",
    "sono",
];

static FOREIGN_HASHES: [u64; FOREIGN_STOPWORDS.len()] = sorted_hashes(FOREIGN_STOPWORDS);

/// The writing system of a letter, coarsely (only "same as the question's" matters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
enum Script {
    Latin,
    Greek,
    Cyrillic,
    Hebrew,
    Arabic,
    Indic,
    Cjk,
    Other,
}

const N_SCRIPTS: usize = 8;

fn script(c: char) -> Script {
    match c as u32 {
        0x41..=0x5a | 0x61..=0x7a | 0xc0..=0x24f | 0x1e00..=0x1eff => Script::Latin,
        0x370..=0x3ff | 0x1f00..=0x1fff => Script::Greek,
        0x400..=0x52f => Script::Cyrillic,
        0x590..=0x5ff => Script::Hebrew,
        0x600..=0x6ff | 0x750..=0x77f => Script::Arabic,
        0x900..=0xdff => Script::Indic,
        0x3040..=0x30ff | 0x3400..=0x4dbf | 0x4e00..=0x9fff | 0xac00..=0xd7af => Script::Cjk,
        _ => Script::Other,
    }
}

/// Letter counts per script of the first `cap` characters of `texts`.
fn script_counts(texts: &[&str], cap: usize) -> [usize; N_SCRIPTS] {
    let mut n = [0usize; N_SCRIPTS];
    for c in texts.iter().flat_map(|t| t.chars()).take(cap) {
        if c.is_alphabetic() {
            if let Some(k) = n.get_mut(script(c) as usize) {
                *k += 1;
            }
        }
    }
    n
}

fn share(num: usize, den: usize) -> f64 {
    if den == 0 {
        0.0
    } else {
        num as f64 / den as f64
    }
}

/// Sorted, deduplicated n-gram hashes of `toks` (unigrams when fewer than 3 tokens, so short
/// texts still count).
fn ngram_set(toks: &[Token]) -> Vec<u64> {
    let mut v: Vec<u64> = if toks.len() >= 3 {
        toks.windows(3).map(trigram).collect()
    } else {
        toks.iter().map(|t| t.hash).collect()
    };
    v.sort_unstable();
    v.dedup();
    v
}

/// Number of elements of sorted `a` that are in sorted `b` (a merge, no allocation).
fn common(a: &[u64], b: &[u64]) -> usize {
    let (mut i, mut j, mut n) = (0, 0, 0);
    while let (Some(x), Some(y)) = (a.get(i), b.get(j)) {
        match x.cmp(y) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                n += 1;
                i += 1;
                j += 1;
            }
        }
    }
    n
}

/// Character statistics of the response (one pass).
struct CharStats {
    entropy_bits: f64,
    non_letter_share: f64,
    vowel_ratio: f64,
    scripts: [usize; N_SCRIPTS],
}

fn char_stats(text: &str) -> CharStats {
    // ASCII characters by their lowercase byte, the others folded into 128 buckets: a fixed
    // histogram, no allocation.
    let mut hist = [0u32; 256];
    let (mut visible, mut letters, mut ascii_letters, mut vowels) = (0, 0, 0, 0);
    let mut scripts = [0usize; N_SCRIPTS];
    for c in text.chars().take(MAX_RESPONSE_CHARS) {
        if c.is_whitespace() {
            continue;
        }
        visible += 1;
        let bucket = if c.is_ascii() {
            c.to_ascii_lowercase() as usize
        } else {
            128 + (c as usize % 128)
        };
        if let Some(h) = hist.get_mut(bucket) {
            *h += 1;
        }
        if c.is_alphabetic() {
            letters += 1;
            if let Some(k) = scripts.get_mut(script(c) as usize) {
                *k += 1;
            }
            if c.is_ascii_alphabetic() {
                ascii_letters += 1;
                vowels += matches!(c.to_ascii_lowercase(), 'a' | 'e' | 'i' | 'o' | 'u') as usize;
            }
        }
    }
    let total = visible as f64;
    let entropy_bits = if visible == 0 {
        0.0
    } else {
        hist.iter()
            .filter(|&&h| h > 0)
            .map(|&h| {
                let p = h as f64 / total;
                -p * p.log2()
            })
            .sum()
    };
    CharStats {
        entropy_bits,
        non_letter_share: share(visible - letters, visible),
        vowel_ratio: share(vowels, ascii_letters),
        scripts,
    }
}

/// 0 when the response ends a sentence (terminal punctuation, a closing quote or bracket),
/// 1 when it visibly stops mid-sentence (empty, a trailing comma, colon, dash or opening
/// bracket, or a last token that cannot end an English sentence: a stopword), 0.5 otherwise
/// (no terminal punctuation: short answers such as a name often have none).
pub fn ends_truncated(response: &str, last: Option<&Token>) -> f64 {
    match response.trim_end().chars().next_back() {
        None => 1.0,
        Some('.' | '!' | '?' | '"' | '\'' | ')' | ']' | '…' | '»' | '。' | '！' | '？' | '”') => {
            0.0
        }
        Some(',' | ';' | ':' | '-' | '(' | '[' | '–' | '—') => 1.0,
        Some(_) if last.is_some_and(|t| t.stop) => 1.0,
        Some(_) => 0.5,
    }
}

/// Share of the response's alphabetic words (ASCII letters only, 3 letters or more, not all
/// upper-case, among the first [`MAX_RESPONSE_TOKENS`]) that no English word spells so: no vowel (a, e, i, o, u, y) or
/// a run of 5 or more consonants. Random letters trip it about half the time, English words
/// almost never ("strengths" is one), so it needs no dictionary.
pub fn consonant_run_share(text: &str) -> f64 {
    let (mut words, mut odd) = (0usize, 0usize);
    for w in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.len() >= 3 && w.bytes().all(|b| b.is_ascii_alphabetic()))
        // Acronyms (NBC, NFL) are spelled without vowels legitimately.
        .filter(|w| !w.bytes().all(|b| b.is_ascii_uppercase()))
        .take(MAX_RESPONSE_TOKENS)
    {
        let (mut run, mut longest, mut vowels) = (0usize, 0usize, 0usize);
        for b in w.bytes() {
            if matches!(
                b.to_ascii_lowercase(),
                b'a' | b'e' | b'i' | b'o' | b'u' | b'y'
            ) {
                vowels += 1;
                run = 0;
            } else {
                run += 1;
                longest = longest.max(run);
            }
        }
        words += 1;
        odd += (vowels == 0 || longest >= 5) as usize;
    }
    share(odd, words)
}

/// The text degeneracy block of `ev` (indices 6.. of the vector), see [`FEATURE_NAMES`].
fn text_features(ev: &Evidence, out: &mut [f64; N_FEATURES]) {
    let mut resp = Vec::with_capacity((ev.response.len() / 5 + 8).min(MAX_RESPONSE_TOKENS));
    let resp_total = tokenize_capped(&ev.response, &mut resp, MAX_RESPONSE_TOKENS);
    let mut ctx = Vec::with_capacity((ev.context.len() / 5 + 8).min(MAX_CONTEXT_TOKENS));
    tokenize_capped(&ev.context, &mut ctx, MAX_CONTEXT_TOKENS);
    for c in &ev.citations {
        tokenize_capped(&c.text, &mut ctx, MAX_CONTEXT_TOKENS);
    }
    let mut q = Vec::with_capacity((ev.question.len() / 5 + 8).min(MAX_QUESTION_TOKENS));
    tokenize_capped(&ev.question, &mut q, MAX_QUESTION_TOKENS);

    let n = resp.len();
    let mut uni: Vec<u64> = resp.iter().map(|t| t.hash).collect();
    uni.sort_unstable();
    uni.dedup();
    // Repetition: share of response trigrams (bigrams for 3–4 tokens) that repeat an earlier one.
    let mut grams: Vec<u64> = if n >= 5 {
        resp.windows(3).map(trigram).collect()
    } else {
        resp.windows(2).map(bigram).collect()
    };
    let n_grams = grams.len();
    grams.sort_unstable();
    grams.dedup();
    let resp_set = ngram_set(&resp);
    let ctx_set = ngram_set(&ctx);
    let q_set = ngram_set(&q);
    // One pass over the response trigrams: those in the context, over all of them (not
    // deduplicated), and for echo the longest run of consecutive ones each found in the context
    // or the question (a copied passage, however long the response around it).
    let q3: &[u64] = if q.len() >= 3 { &q_set } else { &[] };
    let (mut hits, mut run, mut echo_run) = (0usize, 0usize, 0usize);
    for w in resp.windows(3) {
        let g = trigram(w);
        let in_ctx = ctx_set.binary_search(&g).is_ok();
        hits += usize::from(in_ctx);
        run = if in_ctx || q3.binary_search(&g).is_ok() {
            run + 1
        } else {
            0
        };
        echo_run = echo_run.max(run);
    }
    let contained = if n >= 3 {
        share(hits, n - 2)
    } else {
        share(common(&resp_set, &ctx_set), resp_set.len())
    };
    let words = letters::word_stats(&ev.response);
    let chars = char_stats(&ev.response);
    let mut prompt_scripts = script_counts(&[&ev.question, &ev.context], MAX_SCRIPT_CHARS);
    if prompt_scripts.iter().all(|&k| k == 0) {
        // Nothing to compare with: assume the product's default, Latin.
        if let Some(k) = prompt_scripts.get_mut(Script::Latin as usize) {
            *k = 1;
        }
    }
    let dominant = (0..N_SCRIPTS)
        .max_by_key(|&k| (prompt_scripts.get(k).copied().unwrap_or(0), N_SCRIPTS - k))
        .unwrap_or(0);
    let resp_letters: usize = chars.scripts.iter().sum();
    let same = chars.scripts.get(dominant).copied().unwrap_or(0);

    out[5] = 1.0;
    out[6] = (resp_total as f64).ln_1p();
    out[7] = share(n_grams - grams.len(), n_grams);
    out[8] = if n == 0 { 1.0 } else { share(uni.len(), n) };
    out[9] = consonant_run_share(&ev.response);
    out[10] = chars.entropy_bits;
    out[11] = chars.non_letter_share;
    out[12] = chars.vowel_ratio;
    out[13] = share(common(&resp_set, &ctx_set), ctx_set.len());
    out[14] = contained;
    out[15] = share(common(&resp_set, &q_set), q_set.len());
    let truncated = ends_truncated(&ev.response, resp.last());
    out[16] = truncated;
    out[17] = share(resp_letters - same, resp_letters);
    out[18] = share(resp.iter().filter(|t| t.stop).count(), n);
    out[19] = share(
        resp.iter()
            .filter(|t| FOREIGN_HASHES.binary_search(&t.hash).is_ok())
            .count(),
        n,
    );
    out[20] = share(words.nonwords, words.scored);
    out[21] = words.surprisal;
    out[22] = (echo_run as f64).ln_1p();
    out[23] = if truncated > 0.0 {
        (words.open_words as f64).ln_1p()
    } else {
        0.0
    };
    out[24] = words.end_surprisal;
    out[25] = f64::from(u8::from(words.unbalanced));
}

/// The feature vector of schema [`SCHEMA_VERSION`] (pure, total, finite).
pub fn features(pcs: &PcsSignals, evidence: Option<&Evidence>) -> [f64; N_FEATURES] {
    let bound = |v: f64| {
        if v.is_nan() {
            SIGNAL_LIMIT
        } else {
            v.clamp(-SIGNAL_LIMIT, SIGNAL_LIMIT)
        }
    };
    let mut x = [0.0; N_FEATURES];
    x[0] = bound(pcs.d_hat);
    x[1] = bound(pcs.coh_star);
    x[2] = bound(pcs.r);
    x[3] = bound(pcs.budget);
    x[4] = match pcs.d_hat_recomputed {
        Some(d) => bound((pcs.d_hat - d).abs()),
        None => RESIDUAL_UNCOMPUTABLE,
    };
    if let Some(ev) = evidence {
        text_features(ev, &mut x);
    }
    x
}

pub mod letters;
#[cfg(test)]
mod tests;
