//! Evaluation data for the anomaly detector: normal responses of a labelled dataset (HaluEval's
//! `label = 0` rows: accepted, not hallucinated), split by source item, and degenerate variants
//! of the held-out ones, each with the PCS the text→PCS recipe builds for it
//! ([`kakeya_core::pcs_builder`]) and its anomaly feature vector.
//!
//! **Split** ([`split`]): items (an id up to its last `-`, [`crate::ml::dataset::group_of`]) in
//! order of first appearance in the file, which stands for time: the first
//! [`GenOptions::train_fraction`] train the VAE, the next [`GenOptions::ecdf_fraction`] build its
//! ECDF, the rest are the test items. A response, and every variant made from it, belongs to
//! exactly one part.
//!
//! **Variants** (of every test response, one per kind, severity 1–3 in rotation, so each kind
//! has all severities in equal shares; randomness from splitmix64 seeded by the seed, the row id
//! and the kind):
//!
//! | kind | severity 1 | severity 2 | severity 3 |
//! |---|---|---|---|
//! | `repetition` | a phrase of the response (4–8 words, or all of it) appended 2× | 4× | 8× |
//! | `gibberish` | 30 % of the words (at least one) replaced by random letters of the same length | 60 % | all |
//! | `truncation` | cut at 70 % of its characters (mid-word allowed; always at least one character shorter) | 50 % | 30 % |
//! | `echo` | the first 30 % of the context (or of the question, every other row or when there is no context) appended | 60 % | the whole context or question instead of the response |
//! | `language_change` | one sentence in another language appended | the first half of the words, then one | two foreign sentences instead of the response |
//! | `signal_out_of_range` | the text is normal, the agent claims D̂ off by 0.5–1.5 from its own box counts | D̂ in 3.5–5 and r in 0–0.05 | D̂ in 4–8, coh★ in 1.1–2, r in 1.5–4 |
//!
//! The foreign sentences are [`FOREIGN_SENTENCES`] (French, German, Spanish, Italian,
//! Portuguese, Russian, Greek, Chinese, Japanese, Arabic), written for this generator.

use crate::ml::dataset::{group_of, Row};
use kakeya_core::anomaly_features::{features, N_FEATURES};
use kakeya_core::evidence::{fnv1a, Evidence};
use kakeya_core::features::PcsSignals;
use kakeya_core::pcs_builder::{build, BuildOptions, SplitMix64};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// What a sample is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Normal,
    Repetition,
    Gibberish,
    Truncation,
    Echo,
    LanguageChange,
    SignalOutOfRange,
}

impl Kind {
    /// The degenerate kinds, in report order.
    pub const DEGENERATE: [Kind; 6] = [
        Kind::Repetition,
        Kind::Gibberish,
        Kind::Echo,
        Kind::Truncation,
        Kind::LanguageChange,
        Kind::SignalOutOfRange,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Normal => "normal",
            Kind::Repetition => "repetition",
            Kind::Gibberish => "gibberish",
            Kind::Truncation => "truncation",
            Kind::Echo => "echo",
            Kind::LanguageChange => "language_change",
            Kind::SignalOutOfRange => "signal_out_of_range",
        }
    }
}

/// Which part of the split a sample is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Part {
    Train,
    Ecdf,
    Test,
}

impl Part {
    pub fn as_str(self) -> &'static str {
        match self {
            Part::Train => "train",
            Part::Ecdf => "ecdf",
            Part::Test => "test",
        }
    }
}

/// One labelled feature vector.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sample {
    /// The source row's id.
    pub source: String,
    pub part: Part,
    pub kind: Kind,
    /// 0 for normal rows, 1–3 for variants.
    pub severity: u8,
    /// 1 = anomalous.
    pub label: u8,
    pub features: [f64; N_FEATURES],
}

/// Parameters of the split and the generator.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GenOptions {
    pub seed: u64,
    /// Share of the items (oldest) whose normal rows train the VAE.
    pub train_fraction: f64,
    /// Share of the items (next) whose normal rows build the ECDF.
    pub ecdf_fraction: f64,
    /// Use at most this many normal rows (file order), all when `None`.
    pub max_rows: Option<usize>,
}

impl Default for GenOptions {
    fn default() -> Self {
        GenOptions {
            seed: super::train::DEFAULT_SEED,
            train_fraction: 0.6,
            ecdf_fraction: 0.2,
            max_rows: None,
        }
    }
}

/// Foreign-language sentences for `language_change`.
pub const FOREIGN_SENTENCES: [&str; 20] = [
    "Il fait très beau aujourd'hui et nous allons nous promener dans le parc.",
    "Je ne sais pas pourquoi le train est encore en retard ce matin.",
    "Das Wetter ist heute schön und wir gehen später in den Park.",
    "Ich habe keine Ahnung, warum der Zug schon wieder Verspätung hat.",
    "Hoy hace muy buen tiempo y vamos a pasear por el parque.",
    "No sé por qué el tren llega tarde otra vez esta mañana.",
    "Oggi il tempo è bello e andiamo a fare una passeggiata nel parco.",
    "Non so perché il treno è di nuovo in ritardo stamattina.",
    "Hoje o tempo está ótimo e vamos passear no parque.",
    "Não sei por que o comboio está atrasado outra vez.",
    "Сегодня хорошая погода, и мы пойдём гулять в парк.",
    "Я не знаю, почему поезд снова опаздывает сегодня утром.",
    "Σήμερα ο καιρός είναι ωραίος και θα πάμε βόλτα στο πάρκο.",
    "Δεν ξέρω γιατί το τρένο αργεί πάλι σήμερα το πρωί.",
    "今天天气很好，我们要去公园散步。",
    "我不知道为什么火车今天早上又晚点了。",
    "今日はいい天気なので、公園を散歩します。",
    "なぜ電車がまた遅れているのか分かりません。",
    "الطقس جميل اليوم وسنذهب في نزهة إلى الحديقة.",
    "لا أعرف لماذا تأخر القطار مرة أخرى هذا الصباح.",
];

/// The rows split into parts (normal rows only).
#[derive(Debug, Clone)]
pub struct Split<'a> {
    pub train: Vec<&'a Row>,
    pub ecdf: Vec<&'a Row>,
    pub test: Vec<&'a Row>,
}

/// Splits the normal (`label = 0`) rows by item in file order (see the module doc).
pub fn split<'a>(rows: &'a [Row], opts: &GenOptions) -> Split<'a> {
    let normal: Vec<&Row> = rows
        .iter()
        .filter(|r| r.label == 0)
        .take(opts.max_rows.unwrap_or(usize::MAX))
        .collect();
    let mut order: HashMap<&str, usize> = HashMap::new();
    for r in &normal {
        let next = order.len();
        order.entry(group_of(&r.id)).or_insert(next);
    }
    let n = order.len() as f64;
    let train_end = (n * opts.train_fraction).round() as usize;
    let ecdf_end = (n * (opts.train_fraction + opts.ecdf_fraction)).round() as usize;
    let mut s = Split {
        train: Vec::new(),
        ecdf: Vec::new(),
        test: Vec::new(),
    };
    for r in normal {
        let i = order.get(group_of(&r.id)).copied().unwrap_or(0);
        if i < train_end {
            s.train.push(r);
        } else if i < ecdf_end {
            s.ecdf.push(r);
        } else {
            s.test.push(r);
        }
    }
    s
}

/// The features of `response` answering `row` (its PCS built from the text).
pub fn text_features(row: &Row, response: &str) -> [f64; N_FEATURES] {
    let mut ev: Evidence = row.evidence();
    ev.response = response.to_string();
    let pcs = PcsSignals::from_built(&build(response, &BuildOptions::default()));
    features(&pcs, Some(&ev))
}

fn uniform(rng: &mut SplitMix64, lo: f64, hi: f64) -> f64 {
    lo + (hi - lo) * rng.next_f64()
}

fn below(rng: &mut SplitMix64, n: usize) -> usize {
    (rng.next_u64() % n.max(1) as u64) as usize
}

/// The first `frac` of `text`'s characters, always at least one character fewer than `text`
/// (a "truncated" text identical to its source would be a normal row labelled anomalous; a
/// one-character answer truncates to nothing).
fn prefix_chars(text: &str, frac: f64) -> String {
    let n = text.chars().count();
    let keep = if n < 2 {
        0
    } else {
        ((n as f64 * frac).round() as usize).clamp(1, n - 1)
    };
    text.chars().take(keep).collect()
}

/// The first `frac` of `text`'s words.
fn prefix_words(text: &str, frac: f64) -> String {
    let w: Vec<&str> = text.split_whitespace().collect();
    let keep = ((w.len() as f64 * frac).round() as usize).clamp(1, w.len().max(1));
    w.iter().take(keep).copied().collect::<Vec<_>>().join(" ")
}

fn repetition(resp: &str, sev: u8, rng: &mut SplitMix64) -> String {
    let words: Vec<&str> = resp.split_whitespace().collect();
    let phrase = if words.len() <= 8 {
        words.join(" ")
    } else {
        let len = 4 + below(rng, 5);
        let start = below(rng, words.len() - len + 1);
        words
            .get(start..start + len)
            .map(|w| w.join(" "))
            .unwrap_or_default()
    };
    let reps = [2, 4, 8][usize::from(sev.clamp(1, 3) - 1)];
    let mut out = resp.trim_end().to_string();
    for _ in 0..reps {
        out.push(' ');
        out.push_str(&phrase);
    }
    out
}

fn gibberish(resp: &str, sev: u8, rng: &mut SplitMix64) -> String {
    let frac = [0.3, 0.6, 1.0][usize::from(sev.clamp(1, 3) - 1)];
    let n = resp.split_whitespace().count();
    // At least one word changes, so no variant is its normal source under another label.
    let forced = below(rng, n);
    let words: Vec<String> = resp
        .split_whitespace()
        .enumerate()
        .map(|(i, w)| {
            if i != forced && rng.next_f64() >= frac {
                return w.to_string();
            }
            let len = w.chars().count().max(2);
            let upper = w.chars().next().is_some_and(char::is_uppercase);
            (0..len)
                .map(|i| {
                    let c = (b'a' + below(rng, 26) as u8) as char;
                    if i == 0 && upper {
                        c.to_ascii_uppercase()
                    } else {
                        c
                    }
                })
                .collect()
        })
        .collect();
    words.join(" ")
}

fn truncation(resp: &str, sev: u8) -> String {
    prefix_chars(
        resp.trim_end(),
        [0.7, 0.5, 0.3][usize::from(sev.clamp(1, 3) - 1)],
    )
}

fn echo(row: &Row, sev: u8, rng: &mut SplitMix64) -> String {
    let use_question = row.context.trim().is_empty() || rng.next_u64() % 2 == 1;
    let source = if use_question || row.context.trim().is_empty() {
        row.question.trim()
    } else {
        row.context.trim()
    };
    match sev {
        1 | 2 => format!(
            "{} {}",
            row.response.trim_end(),
            prefix_words(source, if sev == 1 { 0.3 } else { 0.6 })
        ),
        _ => source.to_string(),
    }
}

fn language_change(resp: &str, sev: u8, rng: &mut SplitMix64) -> String {
    let mut pick = || FOREIGN_SENTENCES[below(rng, FOREIGN_SENTENCES.len())];
    match sev {
        1 => format!("{} {}", resp.trim_end(), pick()),
        2 => format!("{} {}", prefix_words(resp, 0.5), pick()),
        _ => format!("{} {}", pick(), pick()),
    }
}

/// The signals a misbehaving agent claims for a normal text (see the module doc).
fn out_of_range(mut s: PcsSignals, sev: u8, rng: &mut SplitMix64) -> PcsSignals {
    // The verifier recomputes D̂ from the box counts the text gives; the claim differs.
    s.d_hat_recomputed = Some(s.d_hat);
    match sev {
        1 => {
            let shift = uniform(rng, 0.5, 1.5);
            s.d_hat = if s.d_hat > 1.5 {
                s.d_hat - shift
            } else {
                s.d_hat + shift
            };
        }
        2 => {
            s.d_hat = uniform(rng, 3.5, 5.0);
            s.r = uniform(rng, 0.0, 0.05);
        }
        _ => {
            s.d_hat = uniform(rng, 4.0, 8.0);
            s.coh_star = uniform(rng, 1.1, 2.0);
            s.r = uniform(rng, 1.5, 4.0);
        }
    }
    s
}

/// The variant of `row` of `kind` at `sev` (1–3), as features.
pub fn variant(row: &Row, kind: Kind, sev: u8, seed: u64) -> [f64; N_FEATURES] {
    let mut rng = SplitMix64(seed ^ fnv1a(row.id.as_bytes()) ^ fnv1a(kind.as_str().as_bytes()));
    let resp = row.response.as_str();
    let text = match kind {
        Kind::Normal => resp.to_string(),
        Kind::Repetition => repetition(resp, sev, &mut rng),
        Kind::Gibberish => gibberish(resp, sev, &mut rng),
        Kind::Truncation => truncation(resp, sev),
        Kind::Echo => echo(row, sev, &mut rng),
        Kind::LanguageChange => language_change(resp, sev, &mut rng),
        Kind::SignalOutOfRange => {
            let pcs = PcsSignals::from_built(&build(resp, &BuildOptions::default()));
            let bad = out_of_range(pcs, sev, &mut rng);
            return features(&bad, Some(&row.evidence()));
        }
    };
    text_features(row, &text)
}

/// Every sample of `split`: the normal rows of each part and the variants of the test rows.
/// `progress(done, total)` counts source rows.
pub fn samples(
    split: &Split<'_>,
    seed: u64,
    progress: &mut dyn FnMut(usize, usize),
) -> Vec<Sample> {
    let total = split.train.len() + split.ecdf.len() + split.test.len();
    let mut out = Vec::with_capacity(total + split.test.len() * Kind::DEGENERATE.len());
    let mut done = 0;
    for (part, rows) in [
        (Part::Train, &split.train),
        (Part::Ecdf, &split.ecdf),
        (Part::Test, &split.test),
    ] {
        for (i, r) in rows.iter().enumerate() {
            out.push(Sample {
                source: r.id.clone(),
                part,
                kind: Kind::Normal,
                severity: 0,
                label: 0,
                features: text_features(r, &r.response),
            });
            if part == Part::Test {
                for (k, kind) in Kind::DEGENERATE.into_iter().enumerate() {
                    let severity = ((i + k) % 3 + 1) as u8;
                    out.push(Sample {
                        source: r.id.clone(),
                        part,
                        kind,
                        severity,
                        label: 1,
                        features: variant(r, kind, severity, seed),
                    });
                }
            }
            done += 1;
            if done % 64 == 0 || done == total {
                progress(done, total);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use kakeya_core::anomaly_features::index_of;

    fn row(id: &str, label: u8, response: &str) -> Row {
        Row {
            id: id.into(),
            task: "qa".into(),
            question: "Which river flows through Paris?".into(),
            context: "Paris is the capital of France. The Seine flows through the city.".into(),
            response: response.into(),
            label,
        }
    }

    #[test]
    fn split_keeps_items_together_and_drops_hallucinated_rows() {
        let rows: Vec<Row> = (0..10)
            .flat_map(|i| {
                [
                    row(&format!("qa-{i}-0"), 0, "The Seine."),
                    row(&format!("qa-{i}-1"), 1, "The Loire."),
                ]
            })
            .collect();
        let s = split(&rows, &GenOptions::default());
        assert_eq!((s.train.len(), s.ecdf.len(), s.test.len()), (6, 2, 2));
        assert!(s
            .train
            .iter()
            .chain(&s.ecdf)
            .chain(&s.test)
            .all(|r| r.label == 0));
        assert_eq!(s.test[0].id, "qa-8-0");
    }

    #[test]
    fn variants_are_seeded_and_degenerate() {
        let r = row(
            "qa-1-0",
            0,
            "The Seine flows through Paris and past the Louvre.",
        );
        let f = |name: &str, x: &[f64; N_FEATURES]| x[index_of(name).unwrap()];
        assert_eq!(
            variant(&r, Kind::Gibberish, 3, 7),
            variant(&r, Kind::Gibberish, 3, 7)
        );
        assert_ne!(
            variant(&r, Kind::Gibberish, 3, 7),
            variant(&r, Kind::Gibberish, 3, 8)
        );
        let normal = text_features(&r, &r.response);
        assert!(
            f("repeated_ngram_share", &variant(&r, Kind::Repetition, 3, 1))
                > f("repeated_ngram_share", &normal) + 0.5
        );
        assert!(f("vowel_ratio", &variant(&r, Kind::Gibberish, 3, 1)) < f("vowel_ratio", &normal));
        assert_eq!(truncation("abcdefghij", 2), "abcde");
        // Never the source itself: a two-character answer keeps one, a one-character one none.
        assert_eq!(truncation("No", 1), "N");
        assert_eq!(truncation("4", 3), "");
        assert_eq!(
            f("context_echo", &variant(&r, Kind::Echo, 3, 2))
                .max(f("question_echo", &variant(&r, Kind::Echo, 3, 2))),
            1.0
        );
        let lang = variant(&r, Kind::LanguageChange, 3, 1);
        assert!(f("other_script_share", &lang) > 0.0 || f("foreign_stopword_share", &lang) > 0.0);
        let bad = variant(&r, Kind::SignalOutOfRange, 3, 1);
        assert!(f("d_hat", &bad) >= 4.0 && f("d_hat_residual", &bad) > 0.0);
        assert_eq!(repetition("a b", 1, &mut SplitMix64(0)), "a b a b a b");
    }

    #[test]
    fn samples_rotate_severities_over_the_test_rows() {
        let rows: Vec<Row> = (0..20)
            .map(|i| row(&format!("qa-{i}-0"), 0, "The Seine flows through Paris."))
            .collect();
        let s = split(&rows, &GenOptions::default());
        let all = samples(&s, 1, &mut |_, _| {});
        let test: Vec<&Sample> = all.iter().filter(|x| x.part == Part::Test).collect();
        assert_eq!(test.len(), 4 * (1 + Kind::DEGENERATE.len()));
        for kind in Kind::DEGENERATE {
            let sev: Vec<u8> = test
                .iter()
                .filter(|x| x.kind == kind)
                .map(|x| x.severity)
                .collect();
            assert_eq!(sev.len(), 4);
            assert!(sev.iter().all(|s| (1..=3).contains(s)));
        }
        assert!(all.iter().all(|x| x.features.iter().all(|v| v.is_finite())));
    }
}
