//! Clusters of flagged anomalies: k-means++ (seeded, deterministic) in raw feature units, a new
//! cluster for a point farther than `max_distance` from every centroid, and a rule label per
//! centroid.
//!
//! Hand-written rather than `linfa-clustering`: that crate brings linfa, linfa-nn, ndarray
//! 0.16, ndarray-stats and ndarray-rand (none in our lock file, a long cold build on the shared
//! 2-core machine), and its `KMeans` has no distance gate nor online assignment, which we need
//! anyway. k-means++ seeding plus Lloyd iterations over a few thousand short vectors is the
//! 60 lines below, tested for determinism and on hand-built data.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// Lloyd iterations stop when no centroid moves farther than this (raw units)…
pub const TOLERANCE: f64 = 1e-4;
/// …or after this many.
pub const MAX_ITERATIONS: usize = 100;

/// How clusters are built (`POST /v1/anomaly/clusters/rebuild`, `kakeya anomaly clusters`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterParams {
    /// k of k-means++ (fewer when there are fewer distinct points), 1..=64.
    #[schema(minimum = 1, maximum = 64)]
    pub k: usize,
    /// Seed of the k-means++ draws: the same flagged decisions and seed give the same clusters (any 32-bit integer; its bits seed the generator).
    pub seed: i32,
    /// A point farther than this from every centroid (Euclidean, raw feature units) opens a
    /// new cluster; > 0.
    #[schema(exclusive_minimum = 0.0)]
    pub max_distance: f64,
    /// At most this many clusters in all (then a far point joins its nearest), 1..=256.
    #[schema(minimum = 1, maximum = 256)]
    pub max_clusters: usize,
}

impl Default for ClusterParams {
    fn default() -> Self {
        // k = 5 and distance 2.0 are the reference detector's (platform spec §6.2).
        ClusterParams {
            k: 5,
            seed: 7,
            max_distance: 2.0,
            max_clusters: 32,
        }
    }
}

impl ClusterParams {
    pub fn check(&self) -> Result<(), String> {
        if !(1..=64).contains(&self.k) {
            return Err(format!("k must be within 1..=64, got {}", self.k));
        }
        if !(self.max_distance.is_finite() && self.max_distance > 0.0) {
            return Err(format!(
                "max_distance must be a finite number > 0, got {}",
                self.max_distance
            ));
        }
        if !(1..=256).contains(&self.max_clusters) {
            return Err(format!(
                "max_clusters must be within 1..=256, got {}",
                self.max_clusters
            ));
        }
        Ok(())
    }
}

/// A flagged decision: its anomaly features and when it was decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub features: Vec<f64>,
    pub at_ms: i64,
}

/// A cluster before it is stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Built {
    pub centroid: Vec<f64>,
    pub count: usize,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
}

pub fn distance(a: &[f64], b: &[f64]) -> f64 {
    if a.len() != b.len() {
        return f64::INFINITY;
    }
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f64>()
        .sqrt()
}

/// The nearest centroid and its distance (the lowest index on a tie).
pub fn nearest(centroids: &[Vec<f64>], p: &[f64]) -> Option<(usize, f64)> {
    centroids
        .iter()
        .map(|c| distance(c, p))
        .enumerate()
        .min_by(|a, b| a.1.total_cmp(&b.1))
}

/// k-means++ seeding (each next centroid drawn with probability ∝ D², the squared distance to
/// the nearest one chosen) and Lloyd iterations until [`TOLERANCE`] or [`MAX_ITERATIONS`].
/// Fewer than `k` centroids when the points have fewer distinct values. Points must share one
/// length.
pub fn kmeans(points: &[Vec<f64>], k: usize, seed: u64) -> Vec<Vec<f64>> {
    let mut rng = StdRng::seed_from_u64(seed);
    let Some(first) = (!points.is_empty()).then(|| rng.gen_range(0..points.len())) else {
        return Vec::new();
    };
    let mut centroids = vec![points[first].clone()];
    while centroids.len() < k {
        let d2: Vec<f64> = points
            .iter()
            .map(|p| nearest(&centroids, p).map_or(0.0, |(_, d)| d * d))
            .collect();
        let total: f64 = d2.iter().sum();
        if !(total > 0.0 && total.is_finite()) {
            break; // every point sits on a centroid already
        }
        let mut u = rng.gen_range(0.0..total);
        let pick = d2
            .iter()
            .position(|&w| {
                u -= w;
                u < 0.0
            })
            .unwrap_or(points.len() - 1);
        centroids.push(points[pick].clone());
    }
    for _ in 0..MAX_ITERATIONS {
        let mut sums = vec![vec![0.0; centroids[0].len()]; centroids.len()];
        let mut counts = vec![0usize; centroids.len()];
        for p in points {
            if let Some((c, _)) = nearest(&centroids, p) {
                counts[c] += 1;
                sums[c].iter_mut().zip(p).for_each(|(s, x)| *s += x);
            }
        }
        let mut shift: f64 = 0.0;
        for ((c, s), n) in centroids.iter_mut().zip(sums).zip(counts) {
            if n == 0 {
                continue; // an empty cluster keeps its centroid
            }
            let mean: Vec<f64> = s.iter().map(|x| x / n as f64).collect();
            shift = shift.max(distance(c, &mean));
            *c = mean;
        }
        if shift <= TOLERANCE {
            break;
        }
    }
    centroids
}

/// Clusters of `points` (time order): k-means++ centroids; a point within `max_distance` of
/// its nearest centroid counts for it; farther points are assigned online in time order to
/// new clusters (a point opens one unless one is within `max_distance`; the centroid is the
/// running mean of its points), up to `max_clusters`. Clusters without points are dropped.
pub fn build(points: &[Point], p: &ClusterParams) -> Vec<Built> {
    let vectors: Vec<Vec<f64>> = points.iter().map(|x| x.features.clone()).collect();
    let mut clusters: Vec<Built> = kmeans(&vectors, p.k, u64::from(p.seed as u32))
        .into_iter()
        .map(|centroid| Built {
            centroid,
            count: 0,
            first_seen_ms: i64::MAX,
            last_seen_ms: i64::MIN,
        })
        .collect();
    let fixed = clusters.len();
    for x in points {
        assign(&mut clusters, fixed, x, p);
    }
    clusters.retain(|c| c.count > 0);
    clusters
}

/// Online assignment of one point (what a newly flagged decision gets): its nearest cluster
/// when within `max_distance` (or when there are `max_clusters` already), else a new one.
/// Clusters from index `fixed` on move to the running mean of their points; the k-means
/// centroids before it stay where Lloyd put them. Returns the cluster's index.
pub fn assign(clusters: &mut Vec<Built>, fixed: usize, x: &Point, p: &ClusterParams) -> usize {
    let centroids: Vec<Vec<f64>> = clusters.iter().map(|c| c.centroid.clone()).collect();
    let i = match nearest(&centroids, &x.features) {
        Some((i, d)) if d <= p.max_distance || clusters.len() >= p.max_clusters => i,
        _ => {
            clusters.push(Built {
                centroid: x.features.clone(),
                count: 0,
                first_seen_ms: x.at_ms,
                last_seen_ms: x.at_ms,
            });
            clusters.len() - 1
        }
    };
    let c = &mut clusters[i];
    c.count += 1;
    if i >= fixed && c.centroid.len() == x.features.len() {
        let n = c.count as f64;
        c.centroid
            .iter_mut()
            .zip(&x.features)
            .for_each(|(m, v)| *m += (v - *m) / n);
    }
    c.first_seen_ms = c.first_seen_ms.min(x.at_ms);
    c.last_seen_ms = c.last_seen_ms.max(x.at_ms);
    i
}

/// The rule labels of a centroid, checked in this order; the first that holds names it.
/// The text rules come first: those features measure the degeneracy itself, the PCS signals
/// (D̂, coh★, r) its symptoms. Thresholds are in raw units:
///
/// | label | rule |
/// |---|---|
/// | `repetition_loop` | `repeated_ngram_share` > 0.5 (most n-grams are repeats) |
/// | `echo_of_context` | `context_echo` > 0.8 (the answer mostly copies the context) |
/// | `truncated` | `ends_truncated` ≥ 0.5 (most members end mid-sentence) |
/// | `extreme_d_hat` | `d_hat` > 3.0 |
/// | `coherence_spike` | `coh_star` > 0.95 |
/// | `zero_compressibility` | `r` < 0.1 |
/// | `low_fractal_dimension` | `d_hat` < 0.5 |
/// | `mixed_anomaly` | none of the above |
pub const RULES: [(&str, &str, Cmp, f64); 7] = [
    ("repetition_loop", "repeated_ngram_share", Cmp::Above, 0.5),
    ("echo_of_context", "context_echo", Cmp::Above, 0.8),
    ("truncated", "ends_truncated", Cmp::AtLeast, 0.5),
    ("extreme_d_hat", "d_hat", Cmp::Above, 3.0),
    ("coherence_spike", "coh_star", Cmp::Above, 0.95),
    ("zero_compressibility", "r", Cmp::Below, 0.1),
    ("low_fractal_dimension", "d_hat", Cmp::Below, 0.5),
];

/// The label when no rule holds.
pub const MIXED: &str = "mixed_anomaly";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    Above,
    AtLeast,
    Below,
}

/// The label of a centroid given by name → value (a feature the schema lacks never matches).
pub fn label(value_of: impl Fn(&str) -> Option<f64>) -> &'static str {
    RULES
        .iter()
        .find(|(_, feature, cmp, t)| {
            value_of(feature).is_some_and(|v| match cmp {
                Cmp::Above => v > *t,
                Cmp::AtLeast => v >= *t,
                Cmp::Below => v < *t,
            })
        })
        .map_or(MIXED, |r| r.0)
}

/// [`label`] of a centroid in the order of `names`.
pub fn label_of(names: &[String], centroid: &[f64]) -> &'static str {
    label(|f| {
        names
            .iter()
            .position(|n| n == f)
            .and_then(|i| centroid.get(i).copied())
    })
}

/// Newest flagged decisions a rebuild clusters.
pub const REBUILD_WINDOW: i64 = 10_000;

/// Rebuilds the stored clusters from the newest [`REBUILD_WINDOW`] flagged decisions, per
/// feature schema, labelled by [`label_of`] with [`super::feature_names`]; returns them as
/// stored (largest first).
pub async fn rebuild(
    db: &crate::store::Db,
    metrics: Option<&super::metrics::AnomalyMetrics>,
    p: &ClusterParams,
    now_ms: i64,
) -> Result<Vec<super::store::ClusterRow>, super::AnomalyError> {
    p.check().map_err(super::AnomalyError::Invalid)?;
    let mut by_schema: std::collections::BTreeMap<String, Vec<Point>> = Default::default();
    for f in super::store::flagged(&db.pool, REBUILD_WINDOW).await? {
        by_schema.entry(f.schema).or_default().push(f.point);
    }
    let mut out = Vec::new();
    for (schema, points) in by_schema {
        // One length per schema; a row of another length is not of this schema's version.
        let len = points.last().map_or(0, |x| x.features.len());
        let points: Vec<Point> = points
            .into_iter()
            .filter(|x| x.features.len() == len)
            .collect();
        let names = super::feature_names(&schema).unwrap_or_default();
        for c in build(&points, p) {
            let l = label_of(&names, &c.centroid);
            out.push((schema.clone(), c, l));
        }
    }
    super::store::replace_clusters(&db.pool, &out, now_ms).await?;
    let stored = super::store::clusters(&db.pool).await?;
    if let Some(m) = metrics {
        m.clusters
            .set(i64::try_from(stored.len()).unwrap_or(i64::MAX));
    }
    Ok(stored)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blobs() -> Vec<Point> {
        // Three tight groups around (0,0), (5,5) and (10,0), in time order.
        let mut v = Vec::new();
        for i in 0..30 {
            let j = f64::from(i % 10) * 0.01;
            let c = [(0.0, 0.0), (5.0, 5.0), (10.0, 0.0)][i as usize % 3];
            v.push(Point {
                features: vec![c.0 + j, c.1 - j],
                at_ms: 1000 + i64::from(i),
            });
        }
        v
    }

    #[test]
    fn the_same_seed_gives_the_same_clusters() {
        let pts = blobs();
        let p = ClusterParams {
            k: 3,
            ..Default::default()
        };
        let a = build(&pts, &p);
        assert_eq!(a, build(&pts, &p));
        assert_eq!(a.len(), 3);
        assert_eq!(a.iter().map(|c| c.count).sum::<usize>(), 30);
        // The three groups are found whatever the seed (k-means++ spreads the seeds out).
        for seed in 0..20 {
            let mut counts: Vec<usize> = build(&pts, &ClusterParams { seed, ..p })
                .iter()
                .map(|c| c.count)
                .collect();
            counts.sort();
            assert_eq!(counts, [10, 10, 10], "seed {seed}");
        }
        let first = a.iter().map(|c| c.first_seen_ms).min();
        assert_eq!(first, Some(1000));
    }

    #[test]
    fn a_far_point_opens_a_new_cluster_and_the_cap_holds() {
        let mut pts = blobs();
        pts.push(Point {
            features: vec![50.0, 50.0],
            at_ms: 5000,
        });
        let p = ClusterParams {
            k: 3,
            max_distance: 2.0,
            ..Default::default()
        };
        // k-means moves one centroid towards the outlier; whatever it does, the outlier ends
        // up alone within max_distance of nobody else.
        let c = build(&pts, &p);
        let far = c
            .iter()
            .find(|c| distance(&c.centroid, &[50.0, 50.0]) < 1e-9)
            .expect("the outlier's cluster");
        assert_eq!(
            (far.count, far.first_seen_ms, far.last_seen_ms),
            (1, 5000, 5000)
        );
        // Online: a point near the new cluster joins it and moves its centroid.
        let mut c = c;
        let fixed = c.len();
        let pt = |x: f64, y: f64, at_ms: i64| Point {
            features: vec![x, y],
            at_ms,
        };
        assert_eq!(assign(&mut c, fixed, &pt(100.0, 100.0, 6000), &p), fixed);
        assert_eq!(assign(&mut c, fixed, &pt(101.0, 100.0, 7000), &p), fixed);
        assert_eq!(c[fixed].centroid, vec![100.5, 100.0]);
        assert_eq!((c[fixed].count, c[fixed].last_seen_ms), (2, 7000));
        // At the cap a far point joins its nearest cluster instead.
        let capped = ClusterParams {
            max_clusters: c.len(),
            ..p
        };
        let n = c.len();
        assign(&mut c, fixed, &pt(-90.0, 0.0, 8000), &capped);
        assert_eq!(c.len(), n);
    }

    #[test]
    fn fewer_distinct_points_than_k_and_empty_input() {
        let same = vec![vec![1.0, 2.0]; 5];
        assert_eq!(kmeans(&same, 4, 1), vec![vec![1.0, 2.0]]);
        assert!(kmeans(&[], 3, 1).is_empty());
        assert!(build(&[], &ClusterParams::default()).is_empty());
    }

    #[test]
    fn labels_on_hand_built_centroids() {
        let names: Vec<String> = [
            "d_hat",
            "coh_star",
            "r",
            "repeated_ngram_share",
            "context_echo",
            "ends_truncated",
        ]
        .map(String::from)
        .to_vec();
        let l = |c: [f64; 6]| label_of(&names, &c);
        assert_eq!(l([3.4, 0.5, 0.5, 0.0, 0.0, 0.0]), "extreme_d_hat");
        assert_eq!(l([1.5, 0.97, 0.5, 0.0, 0.0, 0.0]), "coherence_spike");
        assert_eq!(l([1.5, 0.5, 0.05, 0.0, 0.0, 0.0]), "zero_compressibility");
        assert_eq!(l([0.3, 0.5, 0.5, 0.0, 0.0, 0.0]), "low_fractal_dimension");
        assert_eq!(l([1.5, 0.5, 0.05, 0.8, 0.0, 0.0]), "repetition_loop");
        assert_eq!(l([1.5, 0.5, 0.5, 0.1, 0.9, 0.0]), "echo_of_context");
        assert_eq!(l([1.5, 0.5, 0.5, 0.1, 0.1, 1.0]), "truncated");
        assert_eq!(l([1.5, 0.5, 0.5, 0.1, 0.1, 0.0]), "mixed_anomaly");
        // Boundaries are strict where the issue says so: D̂ = 3.0 is not extreme.
        assert_eq!(l([3.0, 0.95, 0.1, 0.5, 0.8, 0.49]), "mixed_anomaly");
        // A schema without the text features is labelled by the PCS rules alone.
        let pcs_only: Vec<String> = ["d_hat", "coh_star", "r"].map(String::from).to_vec();
        assert_eq!(
            label_of(&pcs_only, &[0.2, 0.5, 0.5]),
            "low_fractal_dimension"
        );
        assert_eq!(label_of(&[], &[]), MIXED);
    }
}
