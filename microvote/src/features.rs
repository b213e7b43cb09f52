//! The head's inputs, from the encoded question, context and response.
//!
//! Similarity of the pooled embeddings says whether the answer is "about" the evidence;
//! token-level alignment (BERTScore-style greedy matching of unit token states) says how much
//! of it the evidence supports, and the weakest sentence catches one unsupported claim inside an
//! otherwise faithful answer. Lengths are there because HaluEval's hallucinations differ in
//! length, so the head must beat them rather than rediscover them.

use crate::encoder::{dot, Encoded, DIM};
use candle_core::{Device, Tensor};
use kakeya_core::task::TaskKind;

/// Version of the feature list below; a head names the one it was trained on.
pub const FEATURES_VERSION: &str = "mv-features-1";

/// The names of the features, in vector order.
pub const FEATURE_NAMES: [&str; 16] = [
    "cos_response_context",
    "cos_response_question",
    "cos_context_question",
    "precision_context",
    "precision_context_p10",
    "min_sentence_support",
    "recall_context",
    "precision_question",
    "precision_evidence",
    "ln_response_tokens",
    "ln_context_tokens",
    "ln_question_tokens",
    "has_context",
    "task_qa",
    "task_dialogue",
    "task_summarization",
];

pub const N_FEATURES: usize = FEATURE_NAMES.len();

/// Greedy token alignment of `a` against `b`: for every token of `a`, the best cosine with a
/// token of `b` (empty when either side has no tokens).
fn best_matches(a: &Encoded, b: &Encoded) -> Result<Vec<f32>, candle_core::Error> {
    if a.is_empty() || b.is_empty() {
        return Ok(Vec::new());
    }
    let dev = Device::Cpu;
    let ta = Tensor::from_slice(&a.states, (a.len(), DIM), &dev)?;
    let tb = Tensor::from_slice(&b.states, (b.len(), DIM), &dev)?;
    ta.matmul(&tb.t()?)?.max(1)?.to_vec1::<f32>()
}

fn mean(v: &[f32]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().map(|&x| f64::from(x)).sum::<f64>() / v.len() as f64
    }
}

fn quantile(v: &[f32], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut s: Vec<f32> = v.to_vec();
    s.sort_by(f32::total_cmp);
    let i = ((s.len() - 1) as f64 * q).round() as usize;
    s.get(i).map_or(0.0, |&x| f64::from(x))
}

/// The lowest mean support over the response's sentences (split after `.`, `!`, `?` tokens).
fn min_sentence(best: &[f32], tokens: &[String]) -> f64 {
    let mut lowest: Option<f64> = None;
    let mut start = 0;
    for (i, t) in tokens.iter().enumerate() {
        let end = matches!(t.as_str(), "." | "!" | "?") || i + 1 == tokens.len();
        if end {
            if let Some(s) = best.get(start..=i) {
                // A lone punctuation "sentence" says nothing.
                if s.len() > 1 || start == 0 {
                    let m = mean(s);
                    lowest = Some(lowest.map_or(m, |l| l.min(m)));
                }
            }
            start = i + 1;
        }
    }
    lowest.unwrap_or(0.0)
}

/// The encoded evidence of one request. `context` and `question` are `None` when absent.
pub struct Evidence<'a> {
    pub question: Option<&'a Encoded>,
    pub context: Option<&'a Encoded>,
    pub response: &'a Encoded,
    pub task: Option<TaskKind>,
}

/// The feature vector of [`FEATURE_NAMES`].
pub fn features(e: &Evidence<'_>) -> Result<[f64; N_FEATURES], candle_core::Error> {
    let r = e.response;
    let cos = |a: Option<&Encoded>, b: Option<&Encoded>| match (a, b) {
        (Some(a), Some(b)) => f64::from(dot(&a.pooled, &b.pooled)),
        _ => 0.0,
    };
    let vs_ctx = match e.context {
        Some(c) => best_matches(r, c)?,
        None => Vec::new(),
    };
    let ctx_recall = match e.context {
        Some(c) => best_matches(c, r)?,
        None => Vec::new(),
    };
    let vs_q = match e.question {
        Some(q) => best_matches(r, q)?,
        None => Vec::new(),
    };
    // Support from either source: the question often carries the facts in dialogue.
    let vs_any: Vec<f32> = if vs_q.is_empty() {
        vs_ctx.clone()
    } else if vs_ctx.is_empty() {
        vs_q.clone()
    } else {
        vs_ctx.iter().zip(&vs_q).map(|(a, b)| a.max(*b)).collect()
    };
    let ln_len = |x: Option<&Encoded>| x.map_or(0.0, |x| (1.0 + x.len() as f64).ln());
    let task = e.task;
    Ok([
        cos(Some(r), e.context),
        cos(Some(r), e.question),
        cos(e.context, e.question),
        mean(&vs_ctx),
        quantile(&vs_ctx, 0.1),
        min_sentence(&vs_ctx, &r.tokens),
        mean(&ctx_recall),
        mean(&vs_q),
        mean(&vs_any),
        ln_len(Some(r)),
        ln_len(e.context),
        ln_len(e.question),
        f64::from(u8::from(e.context.is_some_and(|c| !c.is_empty()))),
        f64::from(u8::from(task == Some(TaskKind::Qa))),
        f64::from(u8::from(task == Some(TaskKind::Dialogue))),
        f64::from(u8::from(task == Some(TaskKind::Summarization))),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weakest_sentence_is_found() {
        let toks: Vec<String> = ["a", "b", ".", "c", "d", "."]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let best = [0.9, 0.9, 0.9, 0.1, 0.3, 0.2];
        assert!((min_sentence(&best, &toks) - 0.2).abs() < 1e-6);
        assert_eq!(min_sentence(&[], &[]), 0.0);
        assert!((quantile(&[0.5, 0.1, 0.9], 0.0) - 0.1).abs() < 1e-6);
    }
}
