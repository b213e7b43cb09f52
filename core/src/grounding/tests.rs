//! Hand-made cases where lexical overlap and support disagree, the README's counter-example,
//! source weights, caps, and property tests (never panics, bounded work, shares in range).

use super::support::{
    MAX_CITATIONS, MAX_CONTEXT_BYTES, MAX_CONTEXT_TOKENS, MAX_RESPONSE_BYTES, MAX_RESPONSE_TOKENS,
};
use super::*;
use crate::evidence::Citation;
use crate::vote::VoteOutcome;
use proptest::prelude::*;

fn ev(context: &str, response: &str) -> Evidence {
    Evidence {
        question: String::new(),
        context: context.into(),
        citations: Vec::new(),
        response: response.into(),
        task: None,
    }
}

fn run(e: &Evidence) -> Grounding {
    ground(e, &GroundingConfig::default(), &Sources::default())
}

const EIFFEL: &str = "The Eiffel Tower was completed in 1889 for the World's Fair in Paris. \
    It was designed by the engineering company of Gustave Eiffel and is 330 metres tall.";

#[test]
fn readme_counter_example_is_rejected() {
    let e = Evidence {
        question: "Who wrote the first computer program?".into(),
        context: "Ada Lovelace wrote the first computer program in 1843, for Charles \
                  Babbage's Analytical Engine."
            .into(),
        citations: Vec::new(),
        response: "Grace Hopper wrote it in 1952 on the UNIVAC at Harvard.".into(),
        task: None,
    };
    let g = run(&e);
    assert_eq!(g.vote.outcome, VoteOutcome::Reject, "{g:?}");
    assert_eq!(g.vote.strategy, STRATEGY);
    assert_eq!(g.vote.reason, "unsupported_date");
    assert!(g.vote.confidence > 0.9, "{g:?}");
    assert_eq!(g.measures.unsupported.names, 4); // Grace Hopper UNIVAC Harvard
    assert_eq!(g.measures.unsupported.dates, 1);
    // The supported answer from the README is accepted.
    let ok = Evidence {
        response: "Ada Lovelace wrote the first computer program, for the Analytical Engine."
            .into(),
        ..e
    };
    let g = run(&ok);
    assert_eq!(g.vote.outcome, VoteOutcome::Accept, "{g:?}");
    assert_eq!(g.vote.reason, "supported");
}

#[test]
fn paraphrase_beats_a_copy_with_one_changed_number() {
    let paraphrase = ev(
        EIFFEL,
        "Gustave Eiffel's company designed the tower, which was completed for the Paris \
         World's Fair in 1889.",
    );
    let changed = ev(
        EIFFEL,
        "The Eiffel Tower was completed in 1899 for the World's Fair in Paris.",
    );
    let (p, c) = (run(&paraphrase), run(&changed));
    // Lexical overlap says the copy is closer …
    assert!(
        c.measures.containment[2] > p.measures.containment[2] + 0.3,
        "{:?} vs {:?}",
        c.measures.containment,
        p.measures.containment
    );
    // … support says the opposite.
    assert!(p.measures.support > c.measures.support + 0.3, "{p:?} {c:?}");
    assert_eq!(p.vote.outcome, VoteOutcome::Accept, "{p:?}");
    assert_eq!(c.vote.outcome, VoteOutcome::Reject, "{c:?}");
    assert_eq!(c.vote.reason, "unsupported_date");
    assert_eq!(c.measures.unsupported.dates, 1);
}

#[test]
fn changed_number_date_and_name_are_caught() {
    let cases = [
        (
            "It was designed by the engineering company of Gustave Eiffel and is 310 metres tall.",
            "unsupported_number",
        ),
        (
            "The Eiffel Tower was completed in 1889 for the World's Fair in Lyon.",
            "unsupported_name",
        ),
        (
            "It was designed by the engineering company of Gustave Flaubert and is 330 metres tall.",
            "unsupported_name",
        ),
    ];
    for (response, reason) in cases {
        let g = run(&ev(EIFFEL, response));
        assert_eq!(g.vote.outcome, VoteOutcome::Reject, "{response}: {g:?}");
        assert_eq!(g.vote.reason, reason, "{response}");
        // The trigram overlap alone would call these copies.
        assert!(g.measures.containment[0] > 0.7, "{response}: {g:?}");
    }
    let date = ev(
        "The treaty was signed on 4 July 1776 in Philadelphia.",
        "The treaty was signed on 4 August 1776 in Philadelphia.",
    );
    let g = run(&date);
    assert_eq!(g.vote.outcome, VoteOutcome::Reject, "{g:?}");
    assert_eq!(g.vote.reason, "unsupported_date");
    // The faithful copy is accepted.
    let g = run(&ev(EIFFEL, EIFFEL));
    assert_eq!(g.vote.outcome, VoteOutcome::Accept, "{g:?}");
    assert!(g.measures.support > 0.9 && g.vote.confidence > 0.9, "{g:?}");
}

#[test]
fn the_weakest_sentence_decides() {
    let g = run(&ev(
        EIFFEL,
        "The Eiffel Tower was completed in 1889 for the World's Fair in Paris. It was \
         designed by the engineering company of Gustave Eiffel. It was later sold to Elon \
         Musk for 45 billion dollars.",
    ));
    assert_eq!(g.measures.sentences, 3);
    assert!(g.measures.mean_sentence_support > 0.5, "{g:?}");
    assert!(g.measures.min_sentence_support < 0.1, "{g:?}");
    assert_eq!(g.vote.outcome, VoteOutcome::Reject);
    assert_eq!(g.vote.reason, "unsupported_number");
}

#[test]
fn no_context_abstains() {
    for e in [
        ev("", "Grace Hopper wrote it in 1952."),
        ev(" ... ", "Grace Hopper wrote it in 1952."),
        Evidence::default(),
        Evidence {
            question: "Who wrote it? Ada Lovelace?".into(),
            ..ev("", "Ada Lovelace.")
        },
    ] {
        let g = run(&e);
        assert_eq!(g.vote, crate::vote::Vote::abstain(STRATEGY, "no_context"));
    }
    // Context, but a response with nothing to check.
    assert_eq!(run(&ev(EIFFEL, "... !")).vote.reason, "no_content");
    assert_eq!(run(&ev(EIFFEL, "")).vote.reason, "no_content");
}

#[test]
fn question_tokens_support_at_their_weight() {
    let e = Evidence {
        question: "Did Vivica A. Fox star in The Salon?".into(),
        ..ev(
            "The Salon is a 2005 film.",
            "Vivica Fox starred in The Salon.",
        )
    };
    let g = run(&e);
    assert_eq!(g.measures.unsupported.names, 0, "{g:?}");
    let without = run(&ev(
        "The Salon is a 2005 film.",
        "Vivica Fox starred in The Salon.",
    ));
    assert_eq!(without.measures.unsupported.names, 2, "{without:?}");
    assert!(g.measures.support > without.measures.support);
}

#[test]
fn citations_count_with_their_source_weight() {
    let cited = |source: &str| Evidence {
        question: String::new(),
        context: String::new(),
        citations: vec![Citation {
            id: "1".into(),
            text: EIFFEL.into(),
            source: source.into(),
        }],
        response: "The Eiffel Tower was completed in 1889 for the World's Fair in Paris.".into(),
        task: None,
    };
    let policy = Sources::new(&SourcePolicy {
        allowlist: vec!["wikipedia.org".into()],
        ..SourcePolicy::default()
    });
    let cfg = GroundingConfig::default();
    let listed = ground(
        &cited("https://en.wikipedia.org/wiki/Eiffel_Tower"),
        &cfg,
        &policy,
    );
    assert_eq!(listed.vote.outcome, VoteOutcome::Accept, "{listed:?}");
    // An unlisted source supports at half weight: never enough to accept on its own.
    let unlisted = ground(&cited("https://blog.example.com/"), &cfg, &policy);
    assert_ne!(unlisted.vote.outcome, VoteOutcome::Accept, "{unlisted:?}");
    assert!(unlisted.measures.support < listed.measures.support);
    assert!((unlisted.measures.containment[0] - 0.5).abs() < 1e-6);
    // A source of weight 0 is no context at all.
    let blocked = Sources::new(&SourcePolicy {
        allowlist: vec!["wikipedia.org".into()],
        unlisted_weight: 0.0,
        ..SourcePolicy::default()
    });
    let g = ground(&cited("https://blog.example.com/"), &cfg, &blocked);
    assert_eq!(g.vote.reason, "no_context");
    // The best source of a token counts: listed + unlisted is as good as listed alone.
    let mut both = cited("https://blog.example.com/");
    both.citations.push(Citation {
        id: "2".into(),
        text: EIFFEL.into(),
        source: "wikipedia.org".into(),
    });
    let best = ground(&both, &cfg, &policy).measures;
    assert_eq!(
        (best.support, best.containment, best.coverage),
        (
            listed.measures.support,
            listed.measures.containment,
            listed.measures.coverage
        )
    );
}

#[test]
fn odd_unicode_is_normalised_before_matching() {
    // Full-width letters, a ligature, decomposed accents and typographic apostrophes.
    let g = run(&ev(
        "Émile Zola published Germinal in 1885; the ﬁnal chapter is famous.",
        "Ｅ\u{301}mile Ｚｏｌａ published “Germinal” in １８８５. The final chapter is famous.",
    ));
    assert_eq!(g.measures.unsupported.total(), 0, "{g:?}");
    assert_eq!(g.vote.outcome, VoteOutcome::Accept, "{g:?}");
    // Zero-width and bidi controls split tokens rather than hide them.
    let g = run(&ev(
        "Paris is the capital of France.",
        "Par\u{200b}is is the capital of Fr\u{202e}ance.",
    ));
    assert_ne!(g.vote.outcome, VoteOutcome::Accept, "{g:?}");
}

#[test]
fn caps_bound_the_work_and_block_unchecked_verdicts() {
    // A response padded with supported text past the cap cannot smuggle an unchecked claim
    // through as an accept.
    let padded = format!(
        "{} Grace Hopper wrote it in 1952.",
        "The Eiffel Tower was completed in 1889. ".repeat(MAX_RESPONSE_TOKENS)
    );
    let g = run(&ev(EIFFEL, &padded));
    assert!(g.measures.response_truncated);
    assert_eq!(g.vote.reason, "response_truncated");
    // The token cap (short words, under the byte cap) and the byte cap (text without tokens).
    let g = run(&ev(EIFFEL, &"Paris ".repeat(MAX_RESPONSE_TOKENS + 1)));
    assert!(g.measures.response_truncated);
    assert_eq!(g.measures.response_tokens, MAX_RESPONSE_TOKENS);
    let g = run(&ev(
        EIFFEL,
        &format!("{}Paris", "\u{200b}".repeat(MAX_RESPONSE_BYTES)),
    ));
    assert!(g.measures.response_truncated && g.measures.response_tokens == 0);
    // A context over the cap is read up to it; a reject would rest on a partial read.
    let long_ctx = format!(
        "{} {}",
        "filler words here. ".repeat(MAX_CONTEXT_TOKENS),
        EIFFEL
    );
    let g = run(&ev(&long_ctx, "Gustave Eiffel designed it in 1889."));
    assert!(g.measures.context_truncated);
    assert_eq!(g.measures.context_tokens, MAX_CONTEXT_TOKENS);
    assert_eq!(g.vote.reason, "context_truncated");
    // The context byte cap, over the context and the citations together.
    let mut wide = ev(
        &"\u{200b}".repeat(MAX_CONTEXT_BYTES / 3 - 1),
        "Gustave Eiffel.",
    );
    wide.citations.push(Citation {
        text: EIFFEL.into(),
        ..Citation::default()
    });
    let g = run(&wide);
    assert!(
        g.measures.context_truncated && g.measures.context_tokens < 10,
        "{g:?}"
    );
    // Too many citations: the rest are not read.
    let mut many = ev("", "Gustave Eiffel designed it.");
    many.citations = (0..MAX_CITATIONS + 5)
        .map(|i| Citation {
            id: i.to_string(),
            text: "Gustave Eiffel designed it.".into(),
            source: String::new(),
        })
        .collect();
    assert!(run(&many).measures.context_truncated);
}

#[test]
fn config_is_sanitised() {
    let cfg = GroundingConfig {
        accept_at: f64::NAN,
        reject_at: 2.0,
        question_weight: -1.0,
        critical_penalty: f64::INFINITY,
    };
    assert_eq!(cfg.thresholds(), (0.5, 0.5));
    assert_eq!(cfg.question_weight(), 0.0);
    assert_eq!(cfg.critical_penalty(), 0.25);
    let g = ground(&ev(EIFFEL, EIFFEL), &cfg, &Sources::default());
    assert_eq!(g.vote.outcome, VoteOutcome::Accept);
    let parsed: GroundingConfig = serde_json::from_str(r#"{"accept_at":0.6}"#).unwrap_or_default();
    assert_eq!(parsed.accept_at, 0.6);
    assert_eq!(parsed.reject_at, 0.25);
}

fn in_unit(x: f64) -> bool {
    x.is_finite() && (0.0..=1.0).contains(&x)
}

fn check(g: &Grounding) -> Result<(), TestCaseError> {
    let m = &g.measures;
    for x in m.containment {
        prop_assert!(in_unit(x), "{m:?}");
    }
    for x in [
        m.coverage,
        m.support,
        m.min_sentence_support,
        m.mean_sentence_support,
        g.vote.confidence,
    ] {
        prop_assert!(in_unit(x), "{m:?}");
    }
    prop_assert!(m.response_tokens <= MAX_RESPONSE_TOKENS);
    prop_assert!(m.context_tokens <= MAX_CONTEXT_TOKENS);
    prop_assert!(m.unsupported.total() <= m.critical_tokens);
    prop_assert!(m.critical_tokens <= m.content_tokens);
    prop_assert!(m.content_tokens <= m.response_tokens);
    if m.context_tokens == 0 {
        prop_assert_eq!(g.vote.reason.as_ref(), "no_context");
    }
    Ok(())
}

/// Text from a mix of ASCII words, digits, punctuation, combining marks, CJK, compatibility
/// characters, controls and arbitrary code points.
fn text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        "[A-Za-z]{1,9}",
        "[0-9]{1,5}",
        "[ .,;:!?'\\-\n]{1,3}",
        "[\u{300}-\u{36f}]{1,40}",
        "[\u{4e00}-\u{4e20}]{1,4}",
        "[\u{fb00}-\u{fb06}\u{ff10}-\u{ff5a}\u{fdfa}\u{2460}-\u{2473}]{1,3}",
        "[\u{0}-\u{1f}\u{200b}-\u{200f}\u{202a}-\u{202e}]{1,3}",
        any::<char>().prop_map(String::from),
    ];
    prop::collection::vec(piece, 0..60).prop_map(|v| v.join(" "))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn never_panics_and_stays_in_range(
        context in text(),
        response in text(),
        question in text(),
        cite in prop::collection::vec((text(), "[a-z:/.]{0,20}"), 0..4),
        allow in prop::collection::vec("[a-z.]{0,12}", 0..3),
    ) {
        let e = Evidence {
            question,
            context,
            citations: cite
                .into_iter()
                .map(|(text, source)| Citation { id: String::new(), text, source })
                .collect(),
            response,
            task: None,
        };
        let sources = Sources::new(&SourcePolicy { allowlist: allow, ..SourcePolicy::default() });
        let g = ground(&e, &GroundingConfig::default(), &sources);
        check(&g)?;
        // Deterministic.
        prop_assert_eq!(ground(&e, &GroundingConfig::default(), &sources), g);
    }

    #[test]
    fn copying_the_context_is_never_rejected(context in "[A-Za-z0-9 .,]{1,400}") {
        let g = run(&ev(&context, &context));
        check(&g)?;
        prop_assert_ne!(g.vote.outcome, VoteOutcome::Reject, "{:?}", g);
    }
}

#[test]
fn huge_hostile_inputs_are_bounded() {
    // 1 MiB of combining marks on one base letter, one giant token, a flood of terminators.
    let marks = format!("a{}", "\u{301}".repeat(512 * 1024));
    let giant = "x".repeat(1 << 20);
    let dots = ". ".repeat(1 << 19);
    for (c, r) in [
        (marks.as_str(), marks.as_str()),
        (giant.as_str(), giant.as_str()),
        (dots.as_str(), dots.as_str()),
        (EIFFEL, marks.as_str()),
    ] {
        let t = std::time::Instant::now();
        let g = run(&ev(c, r));
        assert!(g.measures.response_tokens <= MAX_RESPONSE_TOKENS);
        // Generous bound for an unoptimised test build on a shared machine: linear work.
        assert!(t.elapsed().as_secs_f64() < 5.0, "{:?}", t.elapsed());
    }
}

#[test]
fn thin_context_only_abstains_on_vague_answers() {
    let triple = "Justin Rose : Country of nationality : England";
    let g = run(&ev(
        triple,
        "I have not been there, it is too big a course for my golfing talent, sadly.",
    ));
    assert_eq!(g.vote.reason, "thin_context", "{g:?}");
    // A concrete fact the sources lack is still rejected under a thin context.
    let g = run(&ev(triple, "Justin Rose was born in Scotland in 1975."));
    assert_eq!(g.vote.outcome, VoteOutcome::Reject, "{g:?}");
}
