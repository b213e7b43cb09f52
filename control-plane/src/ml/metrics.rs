//! Ranking and calibration metrics, written out so each definition is explicit and tested
//! against hand-checked cases (the reference system's "AUC" was balanced accuracy at one
//! threshold, platform spec §3.2).
//!
//! Conventions: `labels` are 0/1 (1 = hallucinated = positive), higher score = more risk.
//! Functions return `None` when the metric is undefined (a class is missing, no pairs).

use std::collections::HashMap;

use super::stats::rank::midranks;

/// ROC AUC by Mann–Whitney U with average ranks for ties (ascending ranks): perfect ranking 1,
/// reversed 0, all scores tied 0.5. [`super::stats::delong`] adds its variance.
pub fn auroc(scores: &[f64], labels: &[u8]) -> Option<f64> {
    let n = scores.len().min(labels.len());
    let ranks = midranks(&scores[..n]);
    let (mut rank_sum_pos, mut n_pos) = (0.0, 0usize);
    for (r, &l) in ranks.iter().zip(labels) {
        if l == 1 {
            rank_sum_pos += r;
            n_pos += 1;
        }
    }
    let n_neg = n - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return None;
    }
    let u = rank_sum_pos - (n_pos * (n_pos + 1)) as f64 / 2.0;
    Some(u / (n_pos as f64 * n_neg as f64))
}

/// PR AUC as average precision: Σ (Rₖ − Rₖ₋₁)·Pₖ over the distinct score thresholds, highest
/// first (tied scores enter together), as scikit-learn's `average_precision_score`.
pub fn pr_auc(scores: &[f64], labels: &[u8]) -> Option<f64> {
    let n = scores.len().min(labels.len());
    let total_pos = labels[..n].iter().filter(|&&l| l == 1).count();
    if total_pos == 0 {
        return None;
    }
    let mut idx: Vec<usize> = (0..n).collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let (mut tp, mut fp, mut prev_recall, mut ap) = (0usize, 0usize, 0.0, 0.0);
    let mut i = 0;
    while i < n {
        let mut j = i;
        while j < n && scores[idx[j]] == scores[idx[i]] {
            if labels[idx[j]] == 1 {
                tp += 1;
            } else {
                fp += 1;
            }
            j += 1;
        }
        let recall = tp as f64 / total_pos as f64;
        let precision = tp as f64 / (tp + fp) as f64;
        ap += (recall - prev_recall) * precision;
        prev_recall = recall;
        i = j;
    }
    Some(ap)
}

/// One point of the exact ROC curve: flag every score `>= threshold` (served by
/// `GET /v1/anomaly/roc`).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[schema(as = ExactRocPoint)]
pub struct RocPoint {
    pub threshold: f64,
    /// Positives (label 1) flagged.
    pub tp: usize,
    /// Negatives (label 0) flagged.
    pub fp: usize,
    pub tpr: f64,
    pub fpr: f64,
}

/// The exact ROC curve: one point per distinct score, highest threshold first (tied scores
/// enter together, so a tie is never split), not a grid. Scores must be finite. `None` when a
/// class is missing (one of the rates is undefined).
pub fn roc_curve(scores: &[f64], labels: &[u8]) -> Option<Vec<RocPoint>> {
    let n = scores.len().min(labels.len());
    let n_pos = labels[..n].iter().filter(|&&l| l == 1).count();
    let n_neg = n - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return None;
    }
    let mut idx: Vec<usize> = (0..n).collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let (mut tp, mut fp, mut points, mut i) = (0usize, 0usize, Vec::new(), 0);
    while i < n {
        let t = scores[idx[i]];
        while i < n && scores[idx[i]] == t {
            if labels[idx[i]] == 1 {
                tp += 1;
            } else {
                fp += 1;
            }
            i += 1;
        }
        points.push(RocPoint {
            threshold: t,
            tp,
            fp,
            tpr: tp as f64 / n_pos as f64,
            fpr: fp as f64 / n_neg as f64,
        });
    }
    Some(points)
}

/// Mean squared error of probabilities.
pub fn brier(probs: &[f64], labels: &[u8]) -> Option<f64> {
    if probs.is_empty() {
        return None;
    }
    let s: f64 = probs
        .iter()
        .zip(labels)
        .map(|(p, &y)| (p - y as f64).powi(2))
        .sum();
    Some(s / probs.len() as f64)
}

/// Number of equal-width bins of [`reliability`] and [`ece`].
pub const CALIBRATION_BINS: usize = 10;

/// One bin of a reliability diagram: rows whose probability falls in [lower, upper).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReliabilityBin {
    pub lower: f64,
    pub upper: f64,
    pub n: usize,
    /// Σ probabilities and Σ labels of the bin's rows.
    pub sum_p: f64,
    pub sum_y: f64,
}

impl ReliabilityBin {
    /// Mean predicted probability (`None` when empty).
    pub fn mean_predicted(&self) -> Option<f64> {
        (self.n > 0).then(|| self.sum_p / self.n as f64)
    }

    /// Observed share of positives (`None` when empty).
    pub fn observed(&self) -> Option<f64> {
        (self.n > 0).then(|| self.sum_y / self.n as f64)
    }
}

/// Reliability diagram: [`CALIBRATION_BINS`] equal-width bins on [0, 1] (bin = ⌊10p⌋, p = 1 in
/// the last), every bin listed, empty ones with n = 0.
pub fn reliability(probs: &[f64], labels: &[u8]) -> Vec<ReliabilityBin> {
    let k = CALIBRATION_BINS;
    let mut bins: Vec<ReliabilityBin> = (0..k)
        .map(|b| ReliabilityBin {
            lower: b as f64 / k as f64,
            upper: (b + 1) as f64 / k as f64,
            n: 0,
            sum_p: 0.0,
            sum_y: 0.0,
        })
        .collect();
    for (&p, &y) in probs.iter().zip(labels) {
        let b = ((p * k as f64).floor().max(0.0) as usize).min(k - 1);
        bins[b].n += 1;
        bins[b].sum_p += p;
        bins[b].sum_y += y as f64;
    }
    bins
}

/// Expected calibration error over the bins of [`reliability`], weighted by bin size.
pub fn ece(probs: &[f64], labels: &[u8]) -> Option<f64> {
    if probs.is_empty() {
        return None;
    }
    let total = probs.len() as f64;
    Some(
        reliability(probs, labels)
            .iter()
            .filter(|b| b.n > 0)
            .map(|b| (b.n as f64 / total) * ((b.sum_p - b.sum_y) / b.n as f64).abs())
            .sum(),
    )
}

/// Maximum calibration error: the largest |mean predicted − observed| over non-empty bins.
pub fn mce(probs: &[f64], labels: &[u8]) -> Option<f64> {
    reliability(probs, labels)
        .iter()
        .filter(|b| b.n > 0)
        .map(|b| ((b.sum_p - b.sum_y) / b.n as f64).abs())
        .reduce(f64::max)
}

/// Most points [`curve_points`] keeps: enough for a smooth plot, few enough for a card.
pub const MAX_CURVE_POINTS: usize = 100;

/// One operating point: every row scoring at least `threshold` flagged as positive.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CurvePoint {
    pub threshold: f64,
    /// True positive rate (= recall).
    pub tpr: f64,
    pub fpr: f64,
    /// Flagged positives over flagged rows (never undefined: each point flags at least one row).
    pub precision: f64,
}

/// The ROC and precision–recall operating points at every distinct score, highest first (tied
/// scores enter together, as in [`pr_auc`]); `None` when a class is missing. More than `max`
/// distinct scores are thinned to `max` points at evenly spaced ranks
/// ([`thinned_indices`]), always keeping the first and the last (everything flagged, tpr = fpr = 1).
pub fn curve_points(scores: &[f64], labels: &[u8], max: usize) -> Option<Vec<CurvePoint>> {
    let n = scores.len().min(labels.len());
    let pos = labels[..n].iter().filter(|&&l| l == 1).count();
    let neg = n - pos;
    if pos == 0 || neg == 0 {
        return None;
    }
    let mut idx: Vec<usize> = (0..n).collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let (mut tp, mut fp, mut all) = (0usize, 0usize, Vec::new());
    let mut i = 0;
    while i < n {
        let t = scores[idx[i]];
        while i < n && scores[idx[i]] == t {
            if labels[idx[i]] == 1 {
                tp += 1;
            } else {
                fp += 1;
            }
            i += 1;
        }
        all.push(CurvePoint {
            threshold: t,
            tpr: tp as f64 / pos as f64,
            fpr: fp as f64 / neg as f64,
            precision: tp as f64 / (tp + fp) as f64,
        });
    }
    Some(
        thinned_indices(all.len(), max)
            .into_iter()
            .map(|k| all[k])
            .collect(),
    )
}

/// `max` (at least 2) indices of `0..len` at evenly spaced positions, first and last included;
/// every index when `len <= max`.
pub fn thinned_indices(len: usize, max: usize) -> Vec<usize> {
    let max = max.max(2);
    if len <= max {
        return (0..len).collect();
    }
    (0..max).map(|j| j * (len - 1) / (max - 1)).collect()
}

/// Precision, recall and F1 of "positive when score ≥ `threshold`" (the escalation rule).
/// Each is `None` when undefined (nothing flagged, no positives, neither).
pub fn precision_recall_f1(
    scores: &[f64],
    labels: &[u8],
    threshold: f64,
) -> (Option<f64>, Option<f64>, Option<f64>) {
    let (mut tp, mut fp, mut fn_) = (0usize, 0usize, 0usize);
    for (&s, &y) in scores.iter().zip(labels) {
        match (s >= threshold, y == 1) {
            (true, true) => tp += 1,
            (true, false) => fp += 1,
            (false, true) => fn_ += 1,
            (false, false) => {}
        }
    }
    let ratio = |a: usize, b: usize| (b > 0).then(|| a as f64 / b as f64);
    (
        ratio(tp, tp + fp),
        ratio(tp, tp + fn_),
        ratio(2 * tp, 2 * tp + fp + fn_),
    )
}

/// Length-matched AUROC: over items (rows sharing a group) that have one clean and one
/// hallucinated response whose lengths differ by at most 20 % of the longer one, the share where
/// the hallucinated response gets the higher score (ties count half). Returns (figure, pairs).
/// It answers "does the score rank beyond response length?": length cannot separate such pairs.
pub fn length_matched_auroc(
    groups: &[&str],
    lengths: &[usize],
    scores: &[f64],
    labels: &[u8],
) -> (Option<f64>, usize) {
    let mut by_group: HashMap<&str, (Option<usize>, Option<usize>)> = HashMap::new();
    for (i, g) in groups.iter().enumerate() {
        let e = by_group.entry(g).or_default();
        if labels[i] == 1 {
            e.1 = Some(i);
        } else {
            e.0 = Some(i);
        }
    }
    let (mut wins, mut pairs) = (0.0, 0usize);
    for (clean, bad) in by_group.values() {
        let (Some(c), Some(h)) = (*clean, *bad) else {
            continue;
        };
        let (lc, lh) = (lengths[c] as f64, lengths[h] as f64);
        if (lc - lh).abs() > 0.2 * lc.max(lh) {
            continue;
        }
        pairs += 1;
        if scores[h] > scores[c] {
            wins += 1.0;
        } else if scores[h] == scores[c] {
            wins += 0.5;
        }
    }
    if pairs == 0 {
        (None, 0)
    } else {
        (Some(wins / pairs as f64), pairs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-12, "{a} != {b}");
    }

    #[test]
    fn curve_points_by_hand() {
        // Scores 0.9 (pos), 0.8 (neg), 0.8 (pos), 0.1 (neg): three distinct thresholds.
        let p = curve_points(&[0.9, 0.8, 0.8, 0.1], &[1, 0, 1, 0], 10).unwrap();
        let got: Vec<(f64, f64, f64, f64)> = p
            .iter()
            .map(|c| (c.threshold, c.tpr, c.fpr, c.precision))
            .collect();
        assert_eq!(
            got,
            [
                (0.9, 0.5, 0.0, 1.0),
                (0.8, 1.0, 0.5, 2.0 / 3.0),
                (0.1, 1.0, 1.0, 0.5)
            ]
        );
        assert!(curve_points(&[0.1, 0.2], &[1, 1], 10).is_none());
        // Thinned: first and last kept, evenly spaced, never more than asked.
        assert_eq!(thinned_indices(5, 10), [0, 1, 2, 3, 4]);
        assert_eq!(thinned_indices(11, 3), [0, 5, 10]);
        let s: Vec<f64> = (0..500).map(|i| f64::from(i) / 500.0).collect();
        let y: Vec<u8> = (0..500).map(|i| u8::from(i % 3 == 0)).collect();
        let p = curve_points(&s, &y, 50).unwrap();
        assert_eq!(p.len(), 50);
        assert_eq!((p[49].tpr, p[49].fpr), (1.0, 1.0));
        assert!(p.windows(2).all(|w| w[0].threshold > w[1].threshold));
    }

    #[test]
    fn auroc_hand_cases() {
        close(auroc(&[0.1, 0.4, 0.35, 0.8], &[0, 0, 1, 1]).unwrap(), 0.75);
        close(auroc(&[0.5; 4], &[0, 1, 0, 1]).unwrap(), 0.5);
        close(auroc(&[-2.0; 5], &[1, 0, 0, 0, 1]).unwrap(), 0.5);
        close(
            auroc(&[1.0, 2.0, 3.0, 4.0, 5.0], &[0, 0, 0, 1, 1]).unwrap(),
            1.0,
        );
        close(
            auroc(&[5.0, 4.0, 3.0, 2.0, 1.0], &[0, 0, 0, 1, 1]).unwrap(),
            0.0,
        );
        close(auroc(&[0.1, 0.2, 0.3], &[0, 1, 1]).unwrap(), 1.0);
        close(auroc(&[0.3, 0.2, 0.1], &[0, 1, 1]).unwrap(), 0.0);
        // one tie between classes: pairs (0.2+,0.2-) half → (1 + 0.5)/2
        close(auroc(&[0.1, 0.2, 0.2, 0.9], &[0, 0, 1, 1]).unwrap(), 0.875);
        assert_eq!(auroc(&[0.1, 0.2], &[1, 1]), None);
    }

    #[test]
    fn the_exact_roc_has_a_point_per_distinct_score_and_its_area_is_the_auroc() {
        // desc: .9(+) .8(-) .8(+) .4(-) .1(-): the tie at .8 enters as one point.
        let (s, y) = ([0.8, 0.1, 0.9, 0.4, 0.8], [0, 0, 1, 0, 1]);
        let roc = roc_curve(&s, &y).unwrap();
        let pts: Vec<(f64, usize, usize)> = roc.iter().map(|p| (p.threshold, p.tp, p.fp)).collect();
        assert_eq!(pts, [(0.9, 1, 0), (0.8, 2, 1), (0.4, 2, 2), (0.1, 2, 3)]);
        close(roc[1].tpr, 1.0);
        close(roc[1].fpr, 1.0 / 3.0);
        // Trapezoids from (0, 0) through every point: the Mann–Whitney AUROC, ties included.
        let (mut area, mut prev) = (0.0, (0.0, 0.0));
        for p in &roc {
            area += (p.fpr - prev.0) * (p.tpr + prev.1) / 2.0;
            prev = (p.fpr, p.tpr);
        }
        close(area, auroc(&s, &y).unwrap());
        assert_eq!(roc_curve(&[0.1, 0.2], &[1, 1]), None);
        assert_eq!(roc_curve(&[], &[]), None);
    }

    #[test]
    fn average_precision_hand_cases() {
        // desc: .8(+) .4(-) .35(+) .1(-): 0.5·1 + 0.5·(2/3)
        close(
            pr_auc(&[0.1, 0.4, 0.35, 0.8], &[0, 0, 1, 1]).unwrap(),
            0.5 + 1.0 / 3.0,
        );
        close(pr_auc(&[0.5; 4], &[0, 1, 0, 1]).unwrap(), 0.5);
        assert_eq!(pr_auc(&[0.5], &[0]), None);
    }

    #[test]
    fn brier_and_ece() {
        close(brier(&[1.0, 0.0, 0.5], &[1, 0, 1]).unwrap(), 0.25 / 3.0);
        // bins: 0.05,0.05 (y 0,1) → |0.05−0.5|·2/4 ; 0.95 (y1) → 0.05·1/4 ; 1.0 (y1) → 0
        close(
            ece(&[0.05, 0.05, 0.95, 1.0], &[0, 1, 1, 1]).unwrap(),
            0.45 * 0.5 + 0.05 * 0.25 + 0.0,
        );
        close(ece(&[0.3, 0.3], &[0, 1]).unwrap(), 0.2);
        assert_eq!(ece(&[], &[]), None);
    }

    #[test]
    fn reliability_mce_and_precision_recall() {
        let p = [0.05, 0.05, 0.95, 1.0, 0.42];
        let y = [0, 1, 1, 1, 0];
        let bins = reliability(&p, &y);
        assert_eq!(bins.len(), CALIBRATION_BINS);
        assert_eq!(bins.iter().map(|b| b.n).sum::<usize>(), 5);
        assert_eq!((bins[0].n, bins[4].n, bins[9].n), (2, 1, 2));
        close(bins[0].observed().unwrap(), 0.5);
        close(bins[9].mean_predicted().unwrap(), 0.975);
        assert_eq!(bins[3].observed(), None);
        close(bins[3].lower, 0.3);
        // gaps: 0.45, 0.42, 0.025 → max 0.45
        close(mce(&p, &y).unwrap(), 0.45);
        assert_eq!(mce(&[], &[]), None);
        // ≥ 0.5 flags 0.95, 1.0: tp 2, fp 0, fn 1
        let (pr, rc, f1) = precision_recall_f1(&p, &y, 0.5);
        close(pr.unwrap(), 1.0);
        close(rc.unwrap(), 2.0 / 3.0);
        close(f1.unwrap(), 0.8);
        // Nothing flagged: precision undefined, recall 0, F1 0.
        let (pr, rc, f1) = precision_recall_f1(&p, &y, 1.5);
        assert_eq!((pr, rc, f1), (None, Some(0.0), Some(0.0)));
        assert_eq!(precision_recall_f1(&[], &[], 0.5), (None, None, None));
    }

    #[test]
    fn length_matched() {
        let groups = ["a", "a", "b", "b", "c", "c", "d"];
        let lens = [100, 110, 100, 100, 10, 100, 5];
        let scores = [0.2, 0.7, 0.5, 0.5, 0.0, 1.0, 0.9];
        let labels = [0, 1, 1, 0, 0, 1, 1];
        // a: win, b: tie, c: length mismatch, d: unpaired
        let (f, n) = length_matched_auroc(&groups, &lens, &scores, &labels);
        assert_eq!(n, 2);
        close(f.unwrap(), 0.75);
        assert_eq!(length_matched_auroc(&["x"], &[1], &[0.0], &[0]), (None, 0));
    }
}
