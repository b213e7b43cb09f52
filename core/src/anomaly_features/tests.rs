use super::*;
use crate::pcs_builder::{build, BuildOptions};

fn ev(question: &str, context: &str, response: &str) -> Evidence {
    Evidence {
        question: question.into(),
        context: context.into(),
        citations: vec![],
        response: response.into(),
        task: None,
    }
}

fn x(e: &Evidence) -> [f64; N_FEATURES] {
    let s = PcsSignals::from_built(&build(&e.response, &BuildOptions::default()));
    features(&s, Some(e))
}

fn f(v: &[f64; N_FEATURES], name: &str) -> f64 {
    v[index_of(name).unwrap()]
}

const Q: &str = "Which river flows through Paris?";
const CTX: &str = "Paris is the capital of France. The Seine flows through the city from the \
                   east to the west, and many bridges cross it in the centre of Paris.";
const NORMAL: &str = "The Seine flows through Paris.";

#[test]
fn names_are_unique_and_the_shared_ones_exist() {
    let mut n = FEATURE_NAMES.to_vec();
    n.sort_unstable();
    n.dedup();
    assert_eq!(n.len(), N_FEATURES);
    // The cluster labeller reads these by name.
    for name in [
        "d_hat",
        "coh_star",
        "r",
        "repeated_ngram_share",
        "context_echo",
        "ends_truncated",
    ] {
        assert!(index_of(name).is_some(), "{name}");
    }
}

#[test]
fn normal_answer() {
    let v = x(&ev(Q, CTX, NORMAL));
    assert_eq!(f(&v, "evidence_present"), 1.0);
    assert_eq!(f(&v, "resp_tokens_log"), 5f64.ln_1p());
    assert_eq!(f(&v, "repeated_ngram_share"), 0.0);
    assert_eq!(f(&v, "distinct_token_ratio"), 1.0);
    assert_eq!(f(&v, "consonant_run_share"), 0.0);
    // 26 visible chars, 1 of them punctuation; vowels e,e,i,e,o,o,u,a,i = 9 of 25 letters.
    assert!((f(&v, "non_letter_share") - 1.0 / 26.0).abs() < 1e-12);
    assert!((f(&v, "vowel_ratio") - 9.0 / 25.0).abs() < 1e-12);
    assert_eq!(f(&v, "ends_truncated"), 0.0);
    assert_eq!(f(&v, "other_script_share"), 0.0);
    // the + 0 foreign of 5 tokens.
    assert!((f(&v, "stopword_share") - 0.2).abs() < 1e-12);
    assert_eq!(f(&v, "foreign_stopword_share"), 0.0);
    // "the seine flows", "seine flows through" are in the context, "flows through paris" is not.
    assert!((f(&v, "context_containment") - 2.0 / 3.0).abs() < 1e-12);
    assert!(f(&v, "context_echo") < 0.1);
    assert!(v.iter().all(|x| x.is_finite()));
}

#[test]
fn repetition_loop() {
    let looped = "The Seine flows through Paris and ".repeat(8) + "the Seine.";
    let v = x(&ev(Q, CTX, &looped));
    assert!(f(&v, "repeated_ngram_share") > 0.8, "{v:?}");
    assert!(f(&v, "distinct_token_ratio") < 0.2, "{v:?}");
    let normal = x(&ev(Q, CTX, NORMAL));
    assert!(f(&v, "r") < f(&normal, "r"));
    // A word repeated: bigram-level repetition too.
    let v = x(&ev(Q, CTX, "Paris Paris Paris Paris"));
    assert!((f(&v, "repeated_ngram_share") - 2.0 / 3.0).abs() < 1e-12);
    assert_eq!(f(&v, "distinct_token_ratio"), 0.25);
}

#[test]
fn gibberish() {
    let g = "Xqzt vbnkw plmr grtzx wqkj fdsl zxcvbn qwrtp.";
    let v = x(&ev(Q, CTX, g));
    let normal = x(&ev(Q, CTX, NORMAL));
    assert!(f(&v, "vowel_ratio") < 0.1, "{v:?}");
    // Every word has no vowel (y counts as one).
    assert_eq!(f(&v, "consonant_run_share"), 1.0);
    assert_eq!(consonant_run_share("Strengths rhythm and the sky"), 0.2);
    assert_eq!(consonant_run_share("Ok 1999 x NBC"), 0.0);
    assert!(f(&v, "char_entropy") > f(&normal, "char_entropy"));
    assert_eq!(f(&v, "context_containment"), 0.0);
    // Wordlikeness against the letter-bigram model: English words are words, random strings
    // of letters are not; stopwords and acronyms are not scored.
    assert_eq!(f(&normal, "nonword_share"), 0.0);
    assert_eq!(f(&v, "nonword_share"), 1.0);
    assert!(f(&v, "letter_surprisal") > f(&normal, "letter_surprisal") + 1.0);
    let w = letters::word_stats("Yes, the NBC and you.");
    assert_eq!((w.scored, w.nonwords, w.surprisal), (1, 0, w.surprisal));
    let w = letters::word_stats("The river Seine xqzvt flows through Paris");
    assert_eq!((w.scored, w.nonwords), (6, 1));
    let symbols = x(&ev(Q, CTX, "#$%^ &*() {}[] <>?/ @@!! ~~~"));
    assert!(f(&symbols, "non_letter_share") > 0.99);
}

#[test]
fn echo_of_context_and_question() {
    let v = x(&ev(Q, CTX, CTX));
    assert_eq!(f(&v, "context_echo"), 1.0);
    assert_eq!(f(&v, "context_containment"), 1.0);
    let v = x(&ev(Q, CTX, Q));
    assert_eq!(f(&v, "question_echo"), 1.0);
    assert!(f(&v, "context_echo") < 0.1);
    // The longest copied run: 18 context trigrams after a normal answer.
    let appended = format!("{NORMAL} {CTX}");
    let v = x(&ev(Q, CTX, &appended));
    assert!(f(&v, "echo_run_log") >= 18f64.ln_1p(), "{v:?}");
    // The normal answer: two trigrams in the context, "flows through paris" in the question.
    let v = x(&ev(Q, CTX, NORMAL));
    assert_eq!(f(&v, "echo_run_log"), 3f64.ln_1p());
    // Half the context echoed: about half its trigrams.
    let half: String = CTX.chars().take(CTX.len() / 2).collect();
    let v = x(&ev(Q, CTX, &half));
    assert!((0.3..0.7).contains(&f(&v, "context_echo")), "{v:?}");
}

#[test]
fn truncation() {
    assert_eq!(
        f(
            &x(&ev(Q, CTX, "The Seine flows through the")),
            "ends_truncated"
        ),
        1.0
    );
    assert_eq!(
        f(&x(&ev(Q, CTX, "The Seine flows,")), "ends_truncated"),
        1.0
    );
    assert_eq!(
        f(&x(&ev(Q, CTX, "The Seine flows thro")), "ends_truncated"),
        0.5
    );
    assert_eq!(f(&x(&ev(Q, CTX, "The Seine")), "ends_truncated"), 0.5);
    assert_eq!(f(&x(&ev(Q, CTX, "")), "ends_truncated"), 1.0);
    assert_eq!(f(&x(&ev(Q, CTX, "« Oui. »")), "ends_truncated"), 0.0);
    // The open last sentence: 3 words after the full stop, none when the text ends one.
    let v = x(&ev(Q, CTX, "The Seine flows. It crosses the"));
    assert_eq!(f(&v, "open_sentence_log"), 3f64.ln_1p());
    assert_eq!(f(&x(&ev(Q, CTX, NORMAL)), "open_sentence_log"), 0.0);
    // Ending mid-word: "thro" ends in a letter English words rarely end in.
    let cut = x(&ev(Q, CTX, "The Seine flows thro"));
    let whole = x(&ev(Q, CTX, "The Seine flows there"));
    assert!(f(&cut, "end_surprisal") > f(&whole, "end_surprisal") + 1.0);
    assert_eq!(f(&x(&ev(Q, CTX, NORMAL)), "end_surprisal"), 0.0);
    assert_eq!(f(&x(&ev(Q, CTX, "The Seine (a river")), "unbalanced"), 1.0);
    assert_eq!(f(&x(&ev(Q, CTX, "He said \"yes")), "unbalanced"), 1.0);
    assert_eq!(
        f(&x(&ev(Q, CTX, "The Seine (a river).")), "unbalanced"),
        0.0
    );
}

#[test]
fn language_change() {
    let fr = "The Seine flows through Paris. Elle est le fleuve qui traverse la ville et \
              une grande partie de la France pour rejoindre la mer.";
    let v = x(&ev(Q, CTX, fr));
    assert!(f(&v, "foreign_stopword_share") > 0.15, "{v:?}");
    assert_eq!(f(&v, "other_script_share"), 0.0);
    let ru = "Сена протекает через Париж.";
    let v = x(&ev(Q, CTX, ru));
    assert_eq!(f(&v, "other_script_share"), 1.0);
    // The same Cyrillic answer to a Russian question is not a change of script.
    let v = x(&ev("Какая река течёт через Париж?", "", ru));
    assert_eq!(f(&v, "other_script_share"), 0.0);
    let mixed = x(&ev(Q, CTX, "Paris 巴黎"));
    assert!((f(&mixed, "other_script_share") - 2.0 / 7.0).abs() < 1e-12);
}

#[test]
fn no_evidence_and_bad_signals() {
    let s = PcsSignals {
        d_hat: f64::NAN,
        coh_star: f64::INFINITY,
        r: -1e300,
        budget: 0.4,
        d_hat_recomputed: Some(1.0),
        sticky: false,
        non_sticky: false,
        boxes_max: 0,
    };
    let v = features(&s, None);
    assert_eq!(
        &v[..5],
        &[SIGNAL_LIMIT, SIGNAL_LIMIT, -SIGNAL_LIMIT, 0.4, SIGNAL_LIMIT]
    );
    assert!(v[5..].iter().all(|&x| x == 0.0));
    let s = PcsSignals {
        d_hat_recomputed: None,
        ..s
    };
    assert_eq!(features(&s, None)[4], RESIDUAL_UNCOMPUTABLE);
}

#[test]
fn empty_and_huge_texts_are_finite() {
    let v = x(&ev("", "", ""));
    assert!(v.iter().all(|x| x.is_finite()));
    assert_eq!(f(&v, "distinct_token_ratio"), 1.0);
    let big = "zq ".repeat(100_000);
    let v = x(&ev(&big, &big, &big));
    assert!(v.iter().all(|x| x.is_finite()));
    assert!(f(&v, "repeated_ngram_share") > 0.99);
}

proptest::proptest! {
    #[test]
    fn total_and_finite(q in ".{0,80}", c in ".{0,200}", r in ".{0,200}",
                        d in proptest::num::f64::ANY, coh in proptest::num::f64::ANY) {
        let e = ev(&q, &c, &r);
        let mut s = PcsSignals::from_built(&build(&e.response, &BuildOptions::default()));
        s.d_hat = d;
        s.coh_star = coh;
        let v = features(&s, Some(&e));
        proptest::prop_assert!(v.iter().all(|x| x.is_finite()));
        for name in ["repeated_ngram_share", "distinct_token_ratio", "non_letter_share",
                     "vowel_ratio", "context_echo", "context_containment", "question_echo",
                     "ends_truncated", "other_script_share", "stopword_share",
                     "foreign_stopword_share", "nonword_share", "unbalanced"] {
            let val = f(&v, name);
            proptest::prop_assert!((0.0..=1.0).contains(&val), "{} = {}", name, val);
        }
    }
}

/// Recounts [`letters::COUNTS`] from the encoder's vocabulary (the file `cargo xtask` installs
/// under `.kakeya-tools/`, or `KAKEYA_MICROVOTE_MODEL_DIR`), so the table is what its doc says.
#[test]
fn letter_counts_match_the_encoder_vocabulary() {
    let dir = std::env::var_os("KAKEYA_MICROVOTE_MODEL_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../.kakeya-tools/all-minilm-l6-v2")
        });
    let vocab = std::fs::read_to_string(dir.join("vocab.txt")).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (cargo xtask microvote-model installs it)",
            dir.display()
        )
    });
    let mut counts = [[0u16; letters::SYMBOLS]; letters::SYMBOLS];
    let mut words = 0;
    for w in vocab
        .lines()
        .filter(|w| w.len() >= 2 && w.bytes().all(|b| b.is_ascii_lowercase()))
    {
        words += 1;
        let mut prev = 0;
        for b in w.bytes().chain(std::iter::once(b' ')) {
            let to = letters::symbol(b);
            counts[prev][to] += 1;
            prev = to;
        }
    }
    assert_eq!(words, 21_719);
    assert_eq!(counts, letters::COUNTS);
    let row: f64 = (0..letters::SYMBOLS).map(|b| letters::prob(1, b)).sum();
    assert!((row - 1.0).abs() < 1e-12);
}
