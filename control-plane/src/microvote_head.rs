//! Training the micro-vote's head (`kakeya microvote train`): encode labelled rows with the
//! micro-vote's own scorer, cross-validate a per-task logistic head (the [`ml`] pipeline:
//! standardise → L2 logit → Platt on held-out items) next to a length-only logit on the same
//! folds, then fit the served heads on every row.
//!
//! The heavy part is the encoder, so rows are encoded once (on up to two threads, contexts
//! shared by the two answers of an item encoded once) and every fit reuses the matrix.

use crate::ml::dataset::Row;
use crate::ml::eval::assign_folds_of;
use crate::ml::metrics::{auroc, length_matched_auroc};
use crate::ml::model::{fit_pipeline, Pipeline, DEFAULT_L2};
use kakeya_core::microvote::MicroVoteRequest;
use kakeya_core::task::TaskKind;
use kakeya_microvote::features::{FEATURES_VERSION, FEATURE_NAMES, N_FEATURES};
use kakeya_microvote::head::{Head, Logit, HEAD_FORMAT};
use kakeya_microvote::scorer::Scorer;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};

pub const DEFAULT_FOLDS: usize = 5;
pub const DEFAULT_SEED: u64 = 20_261_201;
/// Rows of the default training subset ([`crate::ml::dataset::sample_by_task`]: whole items,
/// round-robin over the tasks; see docs/MICROVOTE.md for why not all 25,000).
pub const DEFAULT_ROWS: usize = 3000;

/// The request a dataset row stands for.
pub fn request_of(r: &Row) -> MicroVoteRequest {
    let opt = |s: &str| (!s.trim().is_empty()).then(|| s.to_string());
    MicroVoteRequest {
        question: opt(&r.question),
        context: opt(&r.context),
        response: r.response.clone(),
        task: TaskKind::parse(&r.task),
    }
}

/// Row-major `rows.len() × N_FEATURES`, encoded on `threads` (1 or 2) threads.
pub fn encode(
    scorer: &Scorer,
    rows: &[Row],
    threads: usize,
    progress: &(dyn Fn(usize) + Sync),
) -> anyhow::Result<Vec<f64>> {
    let mut x = vec![0.0; rows.len() * N_FEATURES];
    let done = AtomicUsize::new(0);
    let threads = threads.clamp(1, 2);
    // Whole items per thread, so the two answers of an item share one context encoding.
    let mut cut = rows.len() / threads;
    while cut > 0 && cut < rows.len() && rows[cut].group() == rows[cut - 1].group() {
        cut += 1;
    }
    let (xa, xb) = x.split_at_mut(cut * N_FEATURES);
    let (ra, rb) = rows.split_at(cut);
    let work = |rows: &[Row], out: &mut [f64]| -> anyhow::Result<()> {
        for (r, o) in rows.iter().zip(out.chunks_mut(N_FEATURES)) {
            let (f, _) = scorer
                .features(&request_of(r))
                .map_err(|e| anyhow::anyhow!("row {}: {e}", r.id))?;
            o.copy_from_slice(&f);
            progress(done.fetch_add(1, Ordering::Relaxed) + 1);
        }
        Ok(())
    };
    std::thread::scope(|s| {
        let h = s.spawn(|| work(rb, xb));
        let a = work(ra, xa);
        let b = h
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("encoder thread panicked")));
        a.and(b)
    })?;
    Ok(x)
}

fn logit_of(p: &Pipeline) -> Logit {
    Logit {
        mean: p.mean.clone(),
        std: p.std.clone(),
        weights: p.weights.clone(),
        intercept: p.intercept,
        platt: p.platt,
    }
}

/// What the head is trained from.
pub struct Training<'a> {
    pub rows: &'a [Row],
    /// [`encode`]'s matrix of `rows`.
    pub x: &'a [f64],
    pub folds: usize,
    pub seed: u64,
    pub l2: f64,
}

/// Cross-validated figures per task (head and length-only on the same folds), then the heads
/// fitted on every row: one per task kind present, and `global` on all of them.
pub fn train(t: &Training<'_>, card: Map<String, Value>) -> Head {
    let n = t.rows.len();
    let groups: Vec<String> = t.rows.iter().map(|r| r.group().to_string()).collect();
    let group_refs: Vec<&str> = groups.iter().map(String::as_str).collect();
    let tasks: Vec<String> = t.rows.iter().map(|r| r.task.clone()).collect();
    let labels: Vec<u8> = t.rows.iter().map(|r| r.label).collect();
    let len_x: Vec<f64> = t
        .rows
        .iter()
        .map(|r| (r.response.chars().count() as f64).ln_1p())
        .collect();
    let folds = assign_folds_of(&groups, &tasks, &labels, t.folds, t.seed);
    let mut by_task: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, task) in tasks.iter().enumerate() {
        by_task.entry(task.clone()).or_default().push(i);
    }
    by_task.insert("global".into(), (0..n).collect());
    let fit = |x: &[f64], d: usize, idx: &[usize]| {
        fit_pipeline(x, d, &labels, &group_refs, idx, t.seed, t.l2)
    };
    let mut cv = Map::new();
    let mut heads = BTreeMap::new();
    for (task, idx) in &by_task {
        let mut head_s = vec![0.0; n];
        let mut len_s = vec![0.0; n];
        for f in 0..t.folds.max(2) {
            let (test, train): (Vec<usize>, Vec<usize>) = idx.iter().partition(|&&i| folds[i] == f);
            if train.is_empty() || test.is_empty() {
                continue;
            }
            let head = fit(t.x, N_FEATURES, &train);
            let len = fit(&len_x, 1, &train);
            for &i in &test {
                head_s[i] = head.score(&t.x[i * N_FEATURES..(i + 1) * N_FEATURES]).1;
                len_s[i] = len.score(&len_x[i..i + 1]).1;
            }
        }
        let pick = |s: &[f64]| idx.iter().map(|&i| s[i]).collect::<Vec<f64>>();
        let y: Vec<u8> = idx.iter().map(|&i| labels[i]).collect();
        let g: Vec<&str> = idx.iter().map(|&i| group_refs[i]).collect();
        let l: Vec<usize> = idx
            .iter()
            .map(|&i| t.rows[i].response.chars().count())
            .collect();
        let (lm_head, pairs) = length_matched_auroc(&g, &l, &pick(&head_s), &y);
        let (lm_len, _) = length_matched_auroc(&g, &l, &pick(&len_s), &y);
        cv.insert(
            task.clone(),
            json!({
                "n": idx.len(),
                "auroc_head": auroc(&pick(&head_s), &y),
                "auroc_length_only": auroc(&pick(&len_s), &y),
                "auroc_length_matched_head": lm_head,
                "auroc_length_matched_length_only": lm_len,
                "n_length_matched": pairs,
            }),
        );
        heads.insert(task.clone(), logit_of(&fit(t.x, N_FEATURES, idx)));
    }
    let mut card = card;
    card.insert("rows".into(), json!(n));
    card.insert("folds".into(), json!(t.folds));
    card.insert("seed".into(), json!(t.seed));
    card.insert("l2".into(), json!(t.l2));
    card.insert("cv".into(), Value::Object(cv));
    Head {
        format: HEAD_FORMAT.into(),
        features_version: FEATURES_VERSION.into(),
        features: FEATURE_NAMES.iter().map(|s| s.to_string()).collect(),
        heads,
        card: Value::Object(card),
    }
}

/// The default L2 weight (the control plane's recipe).
pub const L2: f64 = DEFAULT_L2;

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, task: &str) -> Row {
        Row {
            id: id.into(),
            task: task.into(),
            question: String::new(),
            context: " ".into(),
            response: "r".into(),
            label: 0,
        }
    }

    #[test]
    fn rows_become_requests() {
        let req = request_of(&row("qa-1-0", "qa"));
        assert_eq!(req.context, None, "a blank context is absent");
        assert_eq!(req.question, None);
        assert_eq!(req.task, Some(TaskKind::Qa));
        assert_eq!(request_of(&row("x-1-0", "chat")).task, None);
    }
}
