//! Text → grounding tokens: Unicode NFKC, case folding, punctuation, light stemming, token kinds
//! and sentence boundaries.
//!
//! Why NFKC and folding: the same fact must hash the same whichever way it is typed —
//! full-width `Ｇｒａｃｅ`, the ligature `ﬁ`, a superscript `²`, `STRASSE`/`Straße` — or an
//! attacker (or an unlucky encoder) turns a copied sentence into "unsupported" text and a
//! changed one into "supported" text. ASCII text is already NFKC, so it skips the normaliser.
//!
//! Tokens are maximal runs of alphanumeric characters (combining marks stay in their word;
//! CJK ideographs and kana are one token each, so their n-grams are character n-grams). Digit
//! groups and decimals stay one number (`1,000` = `1000`, `3.14`), ordinals lose their suffix
//! (`31st` = `31`). Words of five or more letters lose a plural / `-ed` / `-ing` / `-ly` ending
//! (both sides get the same treatment, so the stem only has to be consistent, not correct).
//! Each token keeps only a 64-bit FNV-1a hash of its folded text, its [`Kind`] and its
//! sentence.

use crate::evidence::{fnv1a, sorted_hashes};
use unicode_normalization::char::is_combining_mark;
use unicode_normalization::UnicodeNormalization;

/// At most this many bytes of a token's folded text are hashed (a longer run still counts as
/// one token; the bound keeps the scratch buffer small whatever the input).
pub const MAX_TOKEN_BYTES: usize = 128;

/// At most this many consecutive combining marks are kept (UAX #15's stream-safe limit); the
/// rest are dropped before normalising, so a megabyte of accents on one letter costs no more
/// than a word.
pub const MAX_COMBINING_RUN: usize = 30;

/// `chars` without the combining marks past [`MAX_COMBINING_RUN`] in a row.
pub fn limit_combining_runs(chars: impl Iterator<Item = char>) -> impl Iterator<Item = char> {
    let mut run = 0usize;
    chars.filter(move |&c| {
        if !c.is_ascii() && is_combining_mark(c) {
            run += 1;
            run <= MAX_COMBINING_RUN
        } else {
            run = 0;
            true
        }
    })
}

/// The longest prefix of `text` of at most `max` bytes that ends on a character boundary, and
/// whether anything was cut.
pub fn prefix(text: &str, max: usize) -> (&str, bool) {
    if text.len() <= max {
        return (text, false);
    }
    let mut end = max;
    while end > 0 && !text.is_char_boundary(end) {
        end -= 1;
    }
    (text.get(..end).unwrap_or_default(), true)
}

/// What a token is, as far as grounding cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Function word: never counted as content.
    Stop,
    /// Any other word.
    Word,
    /// Capitalised word that looks like part of a name (not just a sentence's first word).
    Name,
    /// Digits (`1843`, `3.14`, `1,000`) or a number word (`seven`, `million`).
    Number,
    /// A year (1000–2199), a month or a weekday.
    Date,
}

impl Kind {
    /// Counted in coverage and n-gram containment.
    pub fn is_content(self) -> bool {
        self != Kind::Stop
    }

    /// A changed one changes the claim: weighed heavily when the context does not have it.
    pub fn is_critical(self) -> bool {
        matches!(self, Kind::Name | Kind::Number | Kind::Date)
    }
}

/// One token of normalised text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token {
    /// FNV-1a 64 of the folded (and stemmed) text.
    pub hash: u64,
    pub kind: Kind,
    /// Index of its sentence (counted from the `first_sentence` the scan started at).
    pub sentence: u32,
}

/// What a scan did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scan {
    /// The text had more tokens than the cap allowed; the rest was not read.
    pub truncated: bool,
    /// The sentence index after the last token (where a following scan should continue).
    pub next_sentence: u32,
}

/// Function words (a superset of [`crate::evidence::STOPWORDS`], with the fragments that
/// splitting at apostrophes leaves: `don't` → `don` `t`).
const STOPWORDS: [&str; 119] = [
    "a", "an", "the", "and", "or", "but", "nor", "of", "to", "in", "on", "at", "by", "for", "with",
    "from", "as", "into", "onto", "about", "over", "under", "after", "before", "than", "then",
    "so", "if", "is", "are", "was", "were", "be", "been", "being", "am", "has", "have", "had",
    "having", "do", "does", "did", "done", "will", "would", "shall", "should", "can", "could",
    "may", "might", "must", "it", "its", "this", "that", "these", "those", "there", "here", "he",
    "she", "they", "him", "his", "her", "hers", "them", "their", "theirs", "i", "me", "my", "mine",
    "you", "your", "yours", "we", "us", "our", "ours", "who", "whom", "whose", "which", "what",
    "when", "where", "why", "how", "not", "no", "yes", "also", "very", "just", "too", "all", "any",
    "some", "such", "each", "both", "only", "own", "same", "other", "more", "most", "s", "t", "d",
    "ll", "re", "ve", "m", "don", "oh",
];

/// Number words that change a claim as much as digits do.
const NUMBER_WORDS: [&str; 40] = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
    "twenty",
    "thirty",
    "forty",
    "fifty",
    "sixty",
    "seventy",
    "eighty",
    "ninety",
    "hundred",
    "thousand",
    "million",
    "billion",
    "trillion",
    "first",
    "second",
    "third",
    "fourth",
    "fifth",
    "dozen",
    "half",
];

/// Months and weekdays that are dates whatever their case.
const DATE_WORDS: [&str; 17] = [
    "january",
    "february",
    "april",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];

/// Dates only when capitalised (otherwise a verb or a common word: `may`, `march`, `sun`).
const CAPITALISED_DATE_WORDS: [&str; 9] = [
    "may", "march", "jan", "feb", "mar", "apr", "aug", "sept", "oct",
];

/// Abbreviations whose full stop does not end a sentence.
const ABBREVIATIONS: [&str; 16] = [
    "mr", "mrs", "ms", "dr", "prof", "st", "jr", "sr", "vs", "etc", "inc", "ltd", "co", "no",
    "fig", "approx",
];

static STOP: [u64; STOPWORDS.len()] = sorted_hashes(STOPWORDS);
static NUMBERS: [u64; NUMBER_WORDS.len()] = sorted_hashes(NUMBER_WORDS);
static DATES: [u64; DATE_WORDS.len()] = sorted_hashes(DATE_WORDS);
static CAP_DATES: [u64; CAPITALISED_DATE_WORDS.len()] = sorted_hashes(CAPITALISED_DATE_WORDS);
static ABBREV: [u64; ABBREVIATIONS.len()] = sorted_hashes(ABBREVIATIONS);

fn member(set: &[u64], h: u64) -> bool {
    set.binary_search(&h).is_ok()
}

/// Case folding of one (already NFKC) character into `buf`: lowercase, plus the full-folding
/// cases lowercase misses (`ß` → `ss`, final sigma, long s).
fn fold_into(c: char, buf: &mut String) {
    if c.is_ascii() {
        buf.push(c.to_ascii_lowercase());
        return;
    }
    match c {
        'ß' | 'ẞ' => buf.push_str("ss"),
        'ς' => buf.push('σ'),
        'ſ' => buf.push('s'),
        _ => buf.extend(c.to_lowercase()),
    }
}

/// CJK ideographs, kana and compatibility ideographs: one token per character.
fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x3040..=0x30FF | 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xF900..=0xFAFF | 0x20000..=0x2FA1F)
}

fn is_sentence_end(c: char) -> bool {
    matches!(c, '.' | '!' | '?' | '…' | '。' | '\n')
}

/// Removes a light English suffix from an ASCII-letter word of four or more bytes, then a
/// final `e`, so `complete`, `completes`, `completed` and `completing` share one stem.
fn stem(word: &str) -> &str {
    if word.len() < 4 || !word.bytes().all(|b| b.is_ascii_lowercase()) {
        return word;
    }
    let long_enough = |base: &str| base.len() >= 3;
    let mut w = word;
    if let Some(b) = word
        .strip_suffix("ies")
        .or_else(|| word.strip_suffix("ied"))
        .filter(|b| b.len() >= 2)
    {
        // studies, studied → studi
        w = word.get(..b.len() + 1).unwrap_or(word);
    } else if let Some(b) = ["ing", "ed", "ly"]
        .iter()
        .find_map(|s| word.strip_suffix(s))
        .filter(|b| long_enough(b))
    {
        w = b;
    } else if let Some(b) = word
        .strip_suffix("es")
        .filter(|b| long_enough(b) && ["s", "x", "z", "ch", "sh"].iter().any(|e| b.ends_with(e)))
    {
        w = b;
    } else if let Some(b) = word
        .strip_suffix('s')
        .filter(|b| long_enough(b) && !b.ends_with(['s', 'u', 'i']))
    {
        w = b;
    }
    match w.strip_suffix('e') {
        Some(b) if long_enough(b) => b,
        _ => w,
    }
}

/// A number's canonical text: ordinal suffix removed; `None` when the token is not a number
/// (letters after the digits that are not an ordinal suffix, as in `mp3`, `4g`).
fn number_text(folded: &str) -> Option<&str> {
    let digits = ["st", "nd", "rd", "th"]
        .iter()
        .find_map(|s| folded.strip_suffix(s))
        .unwrap_or(folded);
    (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit() || b == b'.'))
        .then_some(digits)
}

/// A token being read.
struct Pending {
    buf: String,
    capitalised: bool,
    upper: bool,
    chars: usize,
    numeric: bool,
    initial: bool,
}

/// The tokenizer's state between characters.
struct Scanner<'a> {
    out: &'a mut Vec<Token>,
    cap: usize,
    sentence: u32,
    /// The next token starts a sentence.
    at_start: bool,
    /// Per token: (capitalised, all upper case and longer than one letter, sentence-initial),
    /// for the name decision after the scan.
    flags: Vec<(bool, bool, bool)>,
    tok: Option<Pending>,
    /// A `.` or `,` right after digits, kept until the next character tells whether it is a
    /// decimal point / digit group (`3.14`, `1,000`) or punctuation.
    held: Option<char>,
    truncated: bool,
    /// The last token's buffer, reused by the next (one allocation per scan, not per token).
    spare: String,
}

impl Scanner<'_> {
    fn start(&mut self, c: char) -> bool {
        if self.out.len() >= self.cap {
            self.truncated = true;
            return false;
        }
        let mut buf = std::mem::take(&mut self.spare);
        buf.clear();
        self.tok = Some(Pending {
            buf,
            capitalised: c.is_uppercase(),
            upper: true,
            chars: 0,
            numeric: c.is_ascii_digit(),
            initial: self.at_start,
        });
        self.at_start = false;
        true
    }

    fn push(&mut self, c: char) {
        if let Some(t) = self.tok.as_mut() {
            t.chars += 1;
            t.upper &= !c.is_lowercase();
            t.numeric &= c.is_ascii_digit() || c == '.';
            if t.buf.len() < MAX_TOKEN_BYTES {
                fold_into(c, &mut t.buf);
            }
        }
    }

    /// Ends the current token, if any; returns whether it was a single letter or an
    /// abbreviation (whose full stop does not end a sentence).
    fn finish(&mut self) -> Option<bool> {
        let t = self.tok.take()?;
        let (hash, kind) = classify(&t);
        self.out.push(Token {
            hash,
            kind,
            sentence: self.sentence,
        });
        self.flags
            .push((t.capitalised, t.upper && t.chars > 1, t.initial));
        let letters = !t.numeric && !t.buf.bytes().next().is_some_and(|b| b.is_ascii_digit());
        let abbreviation = letters && (t.chars == 1 || member(&ABBREV, fnv1a(t.buf.as_bytes())));
        self.spare = t.buf;
        Some(abbreviation)
    }

    /// A character that is not part of a word.
    fn separator(&mut self, c: char) {
        let ended = self.finish();
        if is_sentence_end(c) {
            // "A." (an initial) and "Dr." do not end a sentence.
            let abbreviation = c == '.' && ended == Some(true);
            if !abbreviation && !self.at_start {
                self.sentence = self.sentence.saturating_add(1);
                self.at_start = true;
            }
        }
    }

    /// Feeds one normalised character; false once the cap is reached.
    fn feed(&mut self, c: char) -> bool {
        if let Some(h) = self.held.take() {
            if c.is_ascii_digit() {
                if h == '.' {
                    self.push('.');
                }
                self.push(c);
                return true;
            }
            self.separator(h);
        }
        let alnum = if c.is_ascii() {
            c.is_ascii_alphanumeric()
        } else {
            c.is_alphanumeric()
        };
        if alnum && !c.is_ascii() && is_cjk(c) {
            self.finish();
            if !self.start(c) {
                return false;
            }
            self.push(c);
            self.finish();
        } else if alnum {
            if self.tok.is_none() && !self.start(c) {
                return false;
            }
            self.push(c);
        } else if self.tok.is_some() && !c.is_ascii() && is_combining_mark(c) {
            self.push(c);
        } else if (c == '.' || c == ',') && self.tok.as_ref().is_some_and(|t| t.numeric) {
            self.held = Some(c);
        } else {
            self.separator(c);
        }
        true
    }
}

/// Hash and kind of a finished token (names are decided later, from the neighbours).
fn classify(t: &Pending) -> (u64, Kind) {
    let folded = t.buf.as_str();
    if t.numeric || folded.bytes().next().is_some_and(|b| b.is_ascii_digit()) {
        if let Some(digits) = number_text(folded) {
            let digits = digits.trim_end_matches('.');
            let hash = fnv1a(digits.as_bytes());
            let year = digits.len() == 4
                && digits
                    .parse::<u16>()
                    .is_ok_and(|y| (1000..=2199).contains(&y));
            return (hash, if year { Kind::Date } else { Kind::Number });
        }
        return (fnv1a(folded.as_bytes()), Kind::Word);
    }
    let plain = fnv1a(folded.as_bytes());
    // "in May" is a date, "May I" and "you may" are not.
    if t.capitalised && !t.initial && member(&CAP_DATES, plain) {
        return (plain, Kind::Date);
    }
    if member(&STOP, plain) {
        return (plain, Kind::Stop);
    }
    if member(&NUMBERS, plain) {
        return (plain, Kind::Number);
    }
    if member(&DATES, plain) {
        return (plain, Kind::Date);
    }
    let stemmed = stem(folded);
    let hash = if stemmed.len() == folded.len() {
        plain
    } else {
        fnv1a(stemmed.as_bytes())
    };
    (hash, Kind::Word)
}

/// Feeds `text` in NFKC to `s`; false once the cap stopped it. ASCII is already NFKC and never
/// composes with what precedes it, so only the non-ASCII runs, each with the ASCII character
/// before it (`e` + U+0301 composes to `é`), go through the normaliser: most text is ASCII
/// with a few curly quotes, and normalising all of it would cost several times the rest.
fn feed_normalised(s: &mut Scanner<'_>, text: &str) -> bool {
    let bytes = text.as_bytes();
    let mut pos = 0usize;
    while pos < bytes.len() {
        let rest = bytes.get(pos..).unwrap_or_default();
        let Some(k) = rest.iter().position(|b| !b.is_ascii()) else {
            return text
                .get(pos..)
                .unwrap_or_default()
                .chars()
                .all(|c| s.feed(c));
        };
        let first = pos + k;
        // The ASCII character before the run (if this chunk has one) is normalised with it.
        let split = if first > pos { first - 1 } else { first };
        if !text
            .get(pos..split)
            .unwrap_or_default()
            .chars()
            .all(|c| s.feed(c))
        {
            return false;
        }
        let end = bytes
            .get(first..)
            .unwrap_or_default()
            .iter()
            .position(u8::is_ascii)
            .map_or(bytes.len(), |e| first + e);
        // Dropping over-long mark runs bounds the normaliser's reordering buffer and its work
        // whatever an input carries (stream_safe then has nothing left to split).
        let run = text.get(split..end).unwrap_or_default();
        let fed = limit_combining_runs(run.chars())
            .stream_safe()
            .nfkc()
            .all(|c| s.feed(c));
        if !fed {
            return false;
        }
        pos = end;
    }
    true
}

/// Appends the tokens of `text` to `out` while `out` holds fewer than `cap` tokens; sentences
/// are numbered from `first_sentence`. Work is linear in the bytes read, and reading stops at
/// the cap.
pub fn tokenize(text: &str, out: &mut Vec<Token>, cap: usize, first_sentence: u32) -> Scan {
    let start = out.len();
    let mut s = Scanner {
        out,
        cap,
        sentence: first_sentence,
        at_start: true,
        flags: Vec::new(),
        tok: None,
        held: None,
        truncated: false,
        spare: String::with_capacity(32),
    };
    let fed = feed_normalised(&mut s, text);
    if fed {
        if let Some(h) = s.held.take() {
            s.separator(h);
        }
        s.finish();
    }
    let truncated = s.truncated;
    let next_sentence = if s.at_start {
        s.sentence
    } else {
        s.sentence.saturating_add(1)
    };
    let flags = s.flags;
    mark_names(out.get_mut(start..).unwrap_or_default(), &flags);
    Scan {
        truncated,
        next_sentence,
    }
}

/// Capitalised words become names unless they are only a sentence's first word: a word is a
/// name when it is capitalised and not sentence-initial, an acronym (`UNIVAC`), or followed in
/// its sentence by another capitalised word (`Grace Hopper wrote …`).
fn mark_names(tokens: &mut [Token], flags: &[(bool, bool, bool)]) {
    let n = tokens.len().min(flags.len());
    for i in 0..n {
        let (Some(&(cap, acronym, initial)), Some(t)) = (flags.get(i), tokens.get(i)) else {
            continue;
        };
        if t.kind != Kind::Word || !cap {
            continue;
        }
        let next_is_capitalised = match (tokens.get(i + 1), flags.get(i + 1)) {
            (Some(next), Some(&(next_cap, _, _))) => {
                next.sentence == t.sentence
                    && next_cap
                    && matches!(next.kind, Kind::Word | Kind::Name)
            }
            _ => false,
        };
        if !initial || acronym || next_is_capitalised {
            if let Some(t) = tokens.get_mut(i) {
                t.kind = Kind::Name;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(s: &str) -> Vec<Token> {
        let mut v = Vec::new();
        tokenize(s, &mut v, usize::MAX, 0);
        v
    }

    fn kinds(s: &str) -> Vec<Kind> {
        toks(s).iter().map(|t| t.kind).collect()
    }

    fn hashes(s: &str) -> Vec<u64> {
        toks(s).iter().map(|t| t.hash).collect()
    }

    #[test]
    fn nfkc_and_folding_make_variants_equal() {
        assert_eq!(hashes("Ｇｒａｃｅ Hopper"), hashes("grace HOPPER"));
        assert_eq!(hashes("ﬁnal"), hashes("final"));
        assert_eq!(hashes("Straße"), hashes("STRASSE"));
        assert_eq!(hashes("x²"), hashes("x2"));
        // Decomposed é (e + U+0301) is the composed one.
        assert_eq!(hashes("Re\u{301}sume\u{301}"), hashes("Résumé"));
        assert_ne!(hashes("resume"), hashes("résumé"));
    }

    #[test]
    fn numbers_dates_and_names() {
        use Kind::*;
        assert_eq!(
            kinds("Grace Hopper wrote it in 1952 on the UNIVAC at Harvard."),
            [Name, Name, Word, Stop, Stop, Date, Stop, Stop, Name, Stop, Name]
        );
        assert_eq!(kinds("Paris is big."), [Word, Stop, Word]);
        assert_eq!(
            kinds("It cost 25,000 dollars, or 3.14 each."),
            [Stop, Word, Number, Word, Stop, Number, Stop]
        );
        assert_eq!(hashes("1,000"), hashes("1000"));
        assert_eq!(
            kinds("in 1000 and 2199, not 999 or 2200"),
            [Stop, Date, Stop, Date, Stop, Number, Stop, Number]
        );
        assert_eq!(hashes("31st"), hashes("31"));
        assert_eq!(kinds("seven cats in May"), [Number, Word, Stop, Date]);
        assert_eq!(kinds("you may go"), [Stop, Stop, Word]);
        assert_eq!(kinds("mp3 players"), [Word, Word]);
        // A sentence-final number keeps its full stop out.
        assert_eq!(hashes("in 1843."), hashes("in 1843"));
    }

    #[test]
    fn sentences_split_at_terminators_but_not_initials() {
        let t = toks("Vivica A. Fox starred. Dr. Who? Yes! 3.5 is\nfine");
        let s: Vec<u32> = t.iter().map(|t| t.sentence).collect();
        assert_eq!(s, [0, 0, 0, 0, 1, 1, 2, 3, 3, 4]);
        let mut v = Vec::new();
        let scan = tokenize("One. Two", &mut v, usize::MAX, 7);
        assert_eq!(scan.next_sentence, 9);
        assert_eq!(v.iter().map(|t| t.sentence).collect::<Vec<_>>(), [7, 8]);
    }

    #[test]
    fn stemming_is_light_and_symmetric() {
        assert_eq!(hashes("completed programs"), hashes("completing program"));
        assert_eq!(hashes("studies"), hashes("studied"));
        assert_eq!(hashes("cats"), hashes("cats"));
        assert_ne!(hashes("glass"), hashes("glas"));
    }

    #[test]
    fn cjk_is_one_token_per_character() {
        assert_eq!(toks("東京都").len(), 3);
        assert_eq!(toks("東京 tower").len(), 3);
    }

    #[test]
    fn cap_stops_reading() {
        let mut v = Vec::new();
        let scan = tokenize("a b c d e", &mut v, 3, 0);
        assert!(scan.truncated);
        assert_eq!(v.len(), 3);
        let scan = tokenize("f", &mut v, 3, 0);
        assert!(scan.truncated && v.len() == 3);
        let mut w = Vec::new();
        assert!(!tokenize("a b c", &mut w, 3, 0).truncated);
    }

    proptest::proptest! {
        /// Normalising only the non-ASCII runs gives the tokens of the normalised whole text.
        #[test]
        fn chunked_nfkc_equals_whole_text_nfkc(
            parts in proptest::collection::vec(
                proptest::prop_oneof![
                    "[a-eA-E0-9 .,]{0,6}",
                    "[\u{300}-\u{310}\u{e0}-\u{ff}\u{1100}-\u{1112}\u{1161}-\u{1175}]{0,4}",
                    "[\u{fb00}-\u{fb06}\u{ff21}-\u{ff3a}\u{2160}-\u{2170}\u{ac00}-\u{ac10}]{0,3}",
                ],
                0..20,
            )
        ) {
            let text = parts.concat();
            let whole: String = limit_combining_runs(text.chars()).stream_safe().nfkc().collect();
            proptest::prop_assert_eq!(toks(&text), toks(&whole));
        }
    }

    #[test]
    fn long_mark_runs_are_cut_and_prefixes_end_on_characters() {
        let marks = format!("e{}x", "\u{301}".repeat(100));
        let kept: String = limit_combining_runs(marks.chars()).collect();
        assert_eq!(kept.chars().count(), 1 + MAX_COMBINING_RUN + 1);
        assert_eq!(toks(&marks).len(), 1);
        assert_eq!(prefix("héllo", 2), ("h", true));
        assert_eq!(prefix("héllo", 3), ("hé", true));
        assert_eq!(prefix("héllo", 99), ("héllo", false));
        assert_eq!(prefix("é", 0), ("", true));
    }

    #[test]
    fn odd_inputs() {
        assert!(toks("").is_empty());
        assert!(toks("... ,,, !!! \u{301}\u{301}").is_empty());
        let long = "x".repeat(10_000);
        assert_eq!(toks(&long).len(), 1);
        assert_eq!(toks("\u{FDFA}").len(), 4); // NFKC expands one code point to four words
        assert_eq!(toks("12.").len(), 1);
        assert_eq!(toks("1.2.3").len(), 1);
    }
}
