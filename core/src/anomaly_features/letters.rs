//! A letter-bigram model of English word spelling, for the wordlikeness features of
//! [`super::features`] (`nonword_share`, `letter_surprisal`, `end_surprisal`).
//!
//! **Data.** [`COUNTS`]`[a][b]` is how many of the 21719 all-lowercase ASCII words of two letters or
//! more in the vocabulary of the sentence encoder the micro-vote ships (all-MiniLM-L6-v2's
//! `vocab.txt`, BERT's uncased WordPiece vocabulary, lines matching `^[a-z]{2,}$`) contain
//! the transition a → b, where index 0 is the word boundary and 1..=26 are `a`..=`z`; each
//! word counts once (type counts: no frequencies, no text of any evaluation set).
//! `tests::letter_counts_match_the_encoder_vocabulary` recounts them from the file.
//!
//! **Model.** P(b | a) = (C[a][b] + ½) / (Σ_b C[a][b] + 27/2) (add-half smoothing, so an unseen
//! transition is rare, never impossible); computed at compile time into [`PROB`].
//!
//! **Word statistics** ([`word_stats`]): one pass over the response's characters (at most
//! [`super::MAX_RESPONSE_CHARS`]), no allocation. A *scored word* is a maximal alphanumeric run
//! of 3 ASCII letters or more, not all upper-case (acronyms), not a stopword of
//! [`crate::evidence::STOPWORDS`] (function words are dictionary words by definition, and
//! "you" is rare in a type model); its *wordlikeness* is the mean ln P per transition,
//! boundary → first letter … last letter → boundary.

use crate::evidence::{fnv1a, STOPWORDS};

/// Number of symbols: the word boundary (0) and the 26 letters.
pub const SYMBOLS: usize = 27;

/// Transition counts, see the module doc (row: from, column: to).
#[rustfmt::skip]
pub const COUNTS: [[u16; SYMBOLS]; SYMBOLS] = [
    [0, 1479, 1278, 2136, 1217, 907, 923, 730, 807, 786, 298, 280, 780, 1262, 516, 463, 1568, 82, 1289, 2399, 1091, 296, 382, 593, 17, 91, 49],
    [869, 18, 327, 664, 503, 54, 106, 334, 73, 509, 21, 171, 1486, 523, 1952, 26, 348, 13, 1663, 753, 1672, 242, 214, 110, 53, 245, 62],
    [81, 416, 65, 10, 13, 423, 2, 2, 6, 261, 13, 1, 347, 10, 6, 325, 1, 0, 300, 99, 16, 242, 2, 4, 0, 46, 0],
    [327, 817, 7, 138, 9, 767, 3, 6, 770, 393, 0, 380, 277, 5, 5, 1199, 6, 13, 308, 56, 563, 253, 1, 2, 0, 89, 3],
    [2596, 343, 11, 14, 89, 1138, 16, 57, 22, 767, 13, 2, 88, 44, 26, 316, 5, 3, 172, 218, 11, 189, 39, 35, 0, 83, 1],
    [2673, 804, 83, 577, 2279, 388, 177, 207, 45, 185, 11, 43, 913, 487, 1839, 126, 261, 50, 2617, 2011, 596, 73, 246, 137, 282, 183, 35],
    [105, 226, 3, 7, 1, 267, 166, 3, 0, 377, 1, 1, 176, 4, 0, 269, 0, 0, 176, 20, 80, 145, 0, 1, 1, 19, 0],
    [1512, 326, 4, 1, 9, 597, 3, 77, 250, 259, 0, 1, 119, 21, 109, 177, 2, 0, 348, 113, 30, 216, 0, 6, 0, 47, 1],
    [411, 655, 21, 5, 15, 772, 8, 0, 0, 519, 0, 1, 40, 42, 30, 489, 6, 3, 108, 38, 158, 164, 1, 19, 0, 75, 4],
    [240, 628, 170, 1007, 389, 670, 199, 394, 7, 15, 8, 67, 668, 370, 3179, 1121, 236, 24, 399, 1060, 937, 47, 361, 2, 41, 1, 127],
    [6, 96, 0, 1, 1, 89, 0, 0, 0, 30, 1, 0, 0, 0, 0, 96, 2, 0, 1, 1, 0, 93, 0, 0, 0, 0, 0],
    [300, 112, 7, 1, 5, 416, 5, 4, 17, 242, 1, 2, 41, 4, 49, 41, 6, 0, 16, 123, 5, 20, 1, 12, 0, 37, 0],
    [928, 1005, 38, 32, 182, 1425, 48, 31, 7, 1139, 2, 49, 800, 56, 12, 636, 31, 0, 9, 233, 197, 240, 62, 7, 0, 575, 2],
    [339, 886, 182, 39, 2, 856, 12, 3, 3, 605, 0, 1, 20, 198, 30, 476, 387, 0, 7, 107, 5, 168, 2, 5, 1, 47, 0],
    [1977, 761, 20, 563, 809, 1046, 116, 1817, 37, 676, 28, 113, 50, 31, 250, 371, 17, 10, 31, 905, 1373, 110, 103, 22, 6, 89, 24],
    [409, 145, 146, 270, 258, 52, 82, 190, 39, 141, 10, 110, 614, 577, 2266, 319, 299, 3, 1376, 367, 372, 664, 218, 323, 39, 84, 14],
    [215, 519, 8, 7, 6, 707, 2, 8, 196, 316, 1, 3, 339, 12, 3, 464, 230, 0, 593, 132, 186, 158, 1, 2, 0, 27, 1],
    [8, 2, 2, 1, 0, 0, 0, 0, 0, 4, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 228, 0, 0, 0, 0, 0],
    [1246, 1482, 93, 211, 317, 2205, 59, 193, 36, 1346, 3, 120, 136, 240, 245, 1005, 83, 8, 307, 700, 529, 272, 113, 37, 3, 324, 4],
    [4038, 396, 33, 323, 13, 1015, 26, 11, 564, 782, 1, 86, 172, 130, 46, 401, 359, 33, 17, 602, 1575, 420, 7, 82, 0, 94, 2],
    [1385, 919, 18, 95, 7, 1914, 26, 7, 598, 1986, 0, 4, 180, 40, 28, 697, 13, 1, 774, 531, 301, 349, 7, 43, 1, 242, 17],
    [85, 205, 151, 211, 145, 230, 51, 147, 5, 187, 4, 18, 393, 262, 621, 19, 153, 2, 713, 592, 390, 2, 13, 1, 15, 9, 19],
    [34, 273, 1, 1, 2, 848, 1, 1, 2, 437, 0, 0, 3, 0, 0, 148, 2, 0, 4, 2, 2, 9, 0, 0, 0, 10, 0],
    [120, 321, 6, 9, 6, 275, 9, 0, 77, 242, 0, 10, 38, 5, 87, 116, 2, 0, 49, 58, 8, 3, 1, 5, 0, 10, 0],
    [91, 29, 1, 40, 0, 43, 3, 0, 11, 64, 0, 0, 2, 1, 0, 12, 89, 1, 0, 0, 52, 11, 3, 1, 1, 6, 0],
    [1664, 77, 13, 34, 20, 101, 5, 5, 3, 60, 1, 4, 57, 56, 55, 48, 29, 0, 38, 106, 32, 19, 2, 8, 1, 0, 6],
    [60, 71, 3, 0, 1, 123, 0, 1, 9, 39, 0, 0, 6, 1, 1, 27, 1, 0, 2, 2, 2, 10, 1, 0, 0, 11, 17],
];

// Only evaluated at compile time: an index out of bounds would be a compile error.
#[allow(clippy::indexing_slicing)]
const fn probabilities(c: &[[u16; SYMBOLS]; SYMBOLS]) -> [[f64; SYMBOLS]; SYMBOLS] {
    let mut p = [[0.0; SYMBOLS]; SYMBOLS];
    let mut a = 0;
    while a < SYMBOLS {
        let mut total = 0u32;
        let mut b = 0;
        while b < SYMBOLS {
            total += c[a][b] as u32;
            b += 1;
        }
        let mut b = 0;
        while b < SYMBOLS {
            p[a][b] = (c[a][b] as f64 + 0.5) / (total as f64 + 0.5 * SYMBOLS as f64);
            b += 1;
        }
        a += 1;
    }
    p
}

/// P(to | from) of the model.
pub static PROB: [[f64; SYMBOLS]; SYMBOLS] = probabilities(&COUNTS);

/// The symbol of an ASCII letter (either case), 0 for anything else (the boundary).
pub fn symbol(b: u8) -> usize {
    if b.is_ascii_alphabetic() {
        (b.to_ascii_lowercase() - b'a') as usize + 1
    } else {
        0
    }
}

/// P(to | from), 0 for an out-of-range symbol (never produced by [`symbol`]).
pub fn prob(from: usize, to: usize) -> f64 {
    PROB.get(from)
        .and_then(|r| r.get(to))
        .copied()
        .unwrap_or(0.0)
}

static STOP_HASHES: [u64; STOPWORDS.len()] = crate::evidence::sorted_hashes(STOPWORDS);

/// A scored word whose mean ln P per transition is below this is a *non-word*: 1.1 % of the
/// scored words of the HaluEval training part's normal responses (foreign names mostly) and
/// 87 % of uniformly random lowercase strings of the same lengths are.
pub const NONWORD_LOGP: f64 = -3.5;

/// Sentence-ending characters for [`WordStats::open_words`].
fn ends_sentence(c: char) -> bool {
    matches!(c, '.' | '!' | '?' | '…' | '。' | '！' | '？')
}

/// What [`word_stats`] measures.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct WordStats {
    /// Scored words (see the module doc).
    pub scored: usize,
    /// Scored words below [`NONWORD_LOGP`].
    pub nonwords: usize,
    /// Mean over scored words of −(mean ln P per transition); 0 without scored words.
    pub surprisal: f64,
    /// −ln P(boundary | last letter) when the text ends with an ASCII letter, else 0.
    pub end_surprisal: f64,
    /// Alphanumeric runs after the last sentence-ending character (all of them without one).
    pub open_words: usize,
    /// A `(`, `[` or `{` left open, or an odd number of `"`.
    pub unbalanced: bool,
}

/// Letters of a word kept for the stopword test (every stopword is shorter).
const STOP_BUF: usize = 16;

/// The running state of one word.
struct Word {
    len: usize,
    ascii_letters: bool,
    all_upper: bool,
    /// The first [`STOP_BUF`] letters, lowercased (stopwords are shorter).
    buf: [u8; STOP_BUF],
    prev: usize,
    /// Product of the transition probabilities since the last fold into `log`.
    product: f64,
    log: f64,
}

impl Word {
    const fn new() -> Word {
        Word {
            len: 0,
            ascii_letters: true,
            all_upper: true,
            buf: [0; STOP_BUF],
            prev: 0,
            product: 1.0,
            log: 0.0,
        }
    }

    fn step(&mut self, to: usize) {
        self.product *= prob(self.prev, to);
        self.prev = to;
        // Fold before underflow: every factor is above 1e-5.
        if self.product < 1e-200 {
            self.log += self.product.ln();
            self.product = 1.0;
        }
    }

    fn push(&mut self, c: char) {
        self.len += 1;
        if c.is_ascii_alphabetic() {
            self.all_upper &= c.is_ascii_uppercase();
            let b = c.to_ascii_lowercase() as u8;
            if let Some(slot) = self.buf.get_mut(self.len - 1) {
                *slot = b;
            }
            self.step(symbol(b));
        } else {
            self.ascii_letters = false;
        }
    }

    /// Mean ln P per transition when the word is scored.
    fn finish(mut self) -> Option<f64> {
        if !self.ascii_letters || self.len < 3 || self.all_upper {
            return None;
        }
        let stop = self
            .buf
            .get(..self.len)
            .is_some_and(|w| STOP_HASHES.binary_search(&fnv1a(w)).is_ok());
        if stop {
            return None;
        }
        self.step(0);
        Some((self.log + self.product.ln()) / (self.len + 1) as f64)
    }
}

/// The word statistics of `text` (see [`WordStats`]).
pub fn word_stats(text: &str) -> WordStats {
    let mut s = WordStats::default();
    let (mut word, mut in_word) = (Word::new(), false);
    let (mut words, mut words_at_end) = (0usize, 0usize);
    let (mut brackets, mut quotes) = (0i64, 0usize);
    let mut surprisal = 0.0;
    let mut last = None;
    let finish = |w: Word, s: &mut WordStats, surprisal: &mut f64| {
        if let Some(lp) = w.finish() {
            s.scored += 1;
            s.nonwords += (lp < NONWORD_LOGP) as usize;
            *surprisal -= lp;
        }
    };
    for c in text.chars().take(super::MAX_RESPONSE_CHARS) {
        if c.is_alphanumeric() {
            if !in_word {
                (word, in_word) = (Word::new(), true);
                words += 1;
            }
            word.push(c);
        } else {
            if in_word {
                in_word = false;
                finish(
                    core::mem::replace(&mut word, Word::new()),
                    &mut s,
                    &mut surprisal,
                );
            }
            match c {
                '(' | '[' | '{' => brackets += 1,
                ')' | ']' | '}' => brackets -= 1,
                '"' => quotes += 1,
                _ if ends_sentence(c) => words_at_end = words,
                _ => {}
            }
        }
        if !c.is_whitespace() {
            last = Some(c);
        }
    }
    if in_word {
        finish(word, &mut s, &mut surprisal);
    }
    s.surprisal = if s.scored == 0 {
        0.0
    } else {
        surprisal / s.scored as f64
    };
    s.end_surprisal = match last {
        Some(c) if c.is_ascii_alphabetic() => -prob(symbol(c as u8), 0).ln(),
        _ => 0.0,
    };
    s.open_words = words - words_at_end;
    s.unbalanced = brackets > 0 || quotes % 2 == 1;
    s
}
