//! Text → PCS, recipe v1: a deterministic producer for agents that only have a response text.
//!
//! Why: the reference agents compute PCS signals from numeric traces. For hallucination-risk
//! scoring we need the same signals for a *text*, computed the same way by the agent, by the
//! trainer and (later) by the filter, so every constant is fixed here and the whole recipe is
//! versioned by [`RECIPE_VERSION`]. Changing any constant below is a new recipe version.
//!
//! Recipe v1:
//! 1. split the text into sentences (`.`, `!`, `?` followed by whitespace or the end, or a
//!    newline); trim; drop empty ones. Empty text is one empty sentence.
//! 2. embed each sentence: signed feature hashing of the byte 3-grams of the lowercased sentence
//!    padded with one space on each side, FNV-1a 64, [`EMBED_DIM`] = 64 buckets (bucket =
//!    hash mod 64, sign = top bit), then L2-normalised;
//! 3. project to 3-D with a fixed 3×64 matrix, entries uniform in [−1, 1] from splitmix64 with
//!    [`PROJECTION_SEED`];
//! 4. min–max normalise each axis to [0, 1] (an axis with range < 1e-12 becomes 0.5);
//! 5. N_j = number of distinct cells `min(floor(p·s), s−1)` at scales 2, 4, 8, 16 (the clamp
//!    keeps p = 1 in the last cell; the reference producer would open an extra cell);
//! 6. D̂ = [`recompute_d_hat`] (the verifier's own Theil–Sen), 0 when it cannot be computed;
//! 7. coh★ as in spec §9: over [`COH_DIRECTIONS`] fixed unit directions (uniform in the cube by
//!    splitmix64 with [`COH_SEED`], rejected outside the unit ball, normalised), an equal-width
//!    histogram of the projections with [`COH_BINS`] bins; coh = max count / N (1.0 when the
//!    projections span < 1e-9); coh★ = the max, first direction kept; rounded to 9 dp;
//! 8. r = zlib level-6 compressed size / raw size of the UTF-8 text, clamped to [0, 1], rounded to
//!    9 dp, 1.0 for empty text. The compressor is `miniz_oxide` (pure Rust, builds for wasm),
//!    and the recipe names it because its sizes are *not* zlib's: on spec §12.8, empty → 1.0
//!    and "test data" → 17 B → clamped 1.0 match, but "a"×1000 compresses to 24 B (r = 0.024)
//!    where zlib 1.2.13 gives 17 B (0.017) — miniz emits a longer block for long runs at every
//!    level ≥ 2 (zlib-rs gives 18 B). r is a feature, not a wire-compat value, so determinism
//!    matters and bit-equality with zlib does not; the test pins both numbers;
//! 9. budget = [`budget`], regime = [`classify_regime`], with the default verify parameters, so a
//!    built PCS always passes verification;
//! 10. merkle root over 64-byte chunks of the text ([`merkle_root`]), `pcs_id` derived
//!     (`pcs-id-v1`; [`BuiltPcs::bind_evidence`] makes it a v0.2 PCS whose `pcs-id-v2` covers
//!     the evidence hash, see [`crate::ids`]).
//!
//! Note: with fewer than three sentences the per-axis normalisation leaves at most two distinct
//! cells, so D̂ is 0 for most short answers; that is a property of the recipe, reported by the
//! evaluation, not hidden.

use crate::canonical::{payload_of, SignedFields};
use crate::dimension::recompute_d_hat;
use crate::evidence::fnv1a;
use crate::ids::{derive_pcs_id, derive_pcs_id_bound, merkle_root};
use crate::numfmt::round9_api;
use crate::pcs::SCHEMA;
use crate::verify::{budget, classify_regime, VerifyParams};
use std::collections::BTreeMap;

pub const RECIPE_VERSION: &str = "text-pcs-v1";
pub const EMBED_DIM: usize = 64;
pub const SCALES: [i64; 4] = [2, 4, 8, 16];
pub const PROJECTION_SEED: u64 = 0x4b41_4b45_5941_0001;
pub const COH_SEED: u64 = 0x4b41_4b45_5941_0002;
pub const COH_DIRECTIONS: usize = 100;
pub const COH_BINS: usize = 20;
pub const MERKLE_CHUNK: usize = 64;
pub const ZLIB_LEVEL: u8 = 6;

/// splitmix64, the fixed generator of the recipe's matrices.
#[derive(Debug, Clone)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 53 bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn projection() -> [[f64; EMBED_DIM]; 3] {
    let mut rng = SplitMix64(PROJECTION_SEED);
    let mut m = [[0.0; EMBED_DIM]; 3];
    for row in &mut m {
        for v in row.iter_mut() {
            *v = rng.next_f64() * 2.0 - 1.0;
        }
    }
    m
}

fn directions() -> Vec<[f64; 3]> {
    let mut rng = SplitMix64(COH_SEED);
    let mut out = Vec::with_capacity(COH_DIRECTIONS);
    while out.len() < COH_DIRECTIONS {
        let v = [
            rng.next_f64() * 2.0 - 1.0,
            rng.next_f64() * 2.0 - 1.0,
            rng.next_f64() * 2.0 - 1.0,
        ];
        let n = (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt();
        if n > 1e-3 && n <= 1.0 {
            out.push([v[0] / n, v[1] / n, v[2] / n]);
        }
    }
    out
}

/// Sentences of `text` (recipe step 1).
pub fn split_sentences(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut it = text.char_indices().peekable();
    while let Some((i, c)) = it.next() {
        let end = match c {
            '\n' => true,
            '.' | '!' | '?' => it.peek().is_none_or(|&(_, n)| n.is_whitespace()),
            _ => false,
        };
        if end {
            let s = text[start..i + c.len_utf8()].trim();
            if !s.is_empty() {
                out.push(s);
            }
            start = i + c.len_utf8();
        }
    }
    let s = text[start..].trim();
    if !s.is_empty() {
        out.push(s);
    }
    if out.is_empty() {
        out.push("");
    }
    out
}

/// Hashed char-3-gram embedding of one sentence, L2-normalised (recipe step 2).
pub fn embed(sentence: &str) -> [f64; EMBED_DIM] {
    let mut bytes = Vec::with_capacity(sentence.len() + 2);
    bytes.push(b' ');
    bytes.extend(sentence.to_lowercase().bytes());
    bytes.push(b' ');
    let mut e = [0.0; EMBED_DIM];
    for w in bytes.windows(3) {
        let h = fnv1a(w);
        let sign = if h >> 63 == 1 { -1.0 } else { 1.0 };
        if let Some(x) = e.get_mut((h % EMBED_DIM as u64) as usize) {
            *x += sign;
        }
    }
    let n = e.iter().map(|x| x * x).sum::<f64>().sqrt();
    if n > 0.0 {
        for x in &mut e {
            *x /= n;
        }
    }
    e
}

/// The points in the unit cube (recipe steps 1–4).
pub fn points(text: &str) -> Vec<[f64; 3]> {
    let p = projection();
    let mut pts: Vec<[f64; 3]> = split_sentences(text)
        .into_iter()
        .map(|s| {
            let e = embed(s);
            let mut q = [0.0; 3];
            for (qk, row) in q.iter_mut().zip(p.iter()) {
                *qk = row.iter().zip(e.iter()).map(|(a, b)| a * b).sum();
            }
            q
        })
        .collect();
    for k in 0..3 {
        let coord = |q: &[f64; 3]| q.get(k).copied().unwrap_or(0.0);
        let lo = pts.iter().map(coord).fold(f64::INFINITY, f64::min);
        let hi = pts.iter().map(coord).fold(f64::NEG_INFINITY, f64::max);
        let range = hi - lo;
        for x in pts.iter_mut().filter_map(|q| q.get_mut(k)) {
            *x = if range < 1e-12 {
                0.5
            } else {
                ((*x - lo) / range).clamp(0.0, 1.0)
            };
        }
    }
    pts
}

/// Distinct occupied cells at scale `s` (recipe step 5).
pub fn box_count(pts: &[[f64; 3]], s: i64) -> i64 {
    let mut cells: Vec<(i64, i64, i64)> = pts
        .iter()
        .map(|p| {
            let c = |x: f64| ((x * s as f64).floor() as i64).clamp(0, s - 1);
            (c(p[0]), c(p[1]), c(p[2]))
        })
        .collect();
    cells.sort_unstable();
    cells.dedup();
    cells.len() as i64
}

/// coh★ and v★ (recipe step 7).
pub fn coherence(pts: &[[f64; 3]]) -> (f64, [f64; 3]) {
    if pts.is_empty() {
        return (0.0, [0.0; 3]);
    }
    let mut best = -1.0;
    let mut best_v = [0.0; 3];
    let mut proj = vec![0.0; pts.len()];
    let mut hist = [0usize; COH_BINS];
    for v in directions() {
        for (x, p) in proj.iter_mut().zip(pts) {
            *x = p[0] * v[0] + p[1] * v[1] + p[2] * v[2];
        }
        let lo = proj.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = proj.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let coh = if hi - lo < 1e-9 {
            1.0
        } else {
            hist.fill(0);
            for &x in &proj {
                let b = (((x - lo) / (hi - lo)) * COH_BINS as f64).floor() as usize;
                if let Some(h) = hist.get_mut(b.min(COH_BINS - 1)) {
                    *h += 1;
                }
            }
            hist.iter().copied().max().unwrap_or(0) as f64 / pts.len() as f64
        };
        if coh > best {
            best = coh;
            best_v = v;
        }
    }
    (round9_api(best), best_v)
}

/// zlib level-6 compressibility (recipe step 8).
pub fn compressibility(raw: &[u8]) -> f64 {
    if raw.is_empty() {
        return 1.0;
    }
    let c = miniz_oxide::deflate::compress_to_vec_zlib(raw, ZLIB_LEVEL);
    round9_api((c.len() as f64 / raw.len() as f64).clamp(0.0, 1.0))
}

/// Identity of a built PCS.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildOptions {
    pub shard_id: String,
    pub epoch: i64,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            shard_id: "text".into(),
            epoch: 0,
        }
    }
}

/// The PCS signals of a text.
#[derive(Debug, Clone, PartialEq)]
pub struct BuiltPcs {
    pub pcs_id: String,
    pub shard_id: String,
    pub epoch: i64,
    pub scales: Vec<i64>,
    pub n_j: BTreeMap<String, i64>,
    pub d_hat: f64,
    pub coh_star: f64,
    pub v_star: [f64; 3],
    pub r: f64,
    pub budget: f64,
    pub regime: &'static str,
    pub merkle_root: String,
    /// Sentences (points) the signals were computed from.
    pub n_points: usize,
    /// v0.2: hex SHA-256 of the bound evidence; empty for v0.1.
    pub evidence_sha256: String,
}

/// Runs recipe v1 on `text`.
pub fn build(text: &str, opts: &BuildOptions) -> BuiltPcs {
    let params = VerifyParams::default();
    let pts = points(text);
    let n_j: BTreeMap<String, i64> = SCALES
        .iter()
        .map(|&s| (s.to_string(), box_count(&pts, s)))
        .collect();
    let d_hat = recompute_d_hat(&SCALES, &n_j).unwrap_or(0.0);
    let (coh_star, v_star) = coherence(&pts);
    let r = compressibility(text.as_bytes());
    let root = merkle_root(text.as_bytes(), MERKLE_CHUNK);
    BuiltPcs {
        pcs_id: derive_pcs_id(&root, opts.epoch, &opts.shard_id),
        shard_id: opts.shard_id.clone(),
        epoch: opts.epoch,
        scales: SCALES.to_vec(),
        n_j,
        d_hat,
        coh_star,
        v_star,
        r,
        budget: budget(d_hat, coh_star, r, &params),
        regime: classify_regime(d_hat, coh_star, &params),
        merkle_root: root,
        n_points: pts.len(),
        evidence_sha256: String::new(),
    }
}

impl BuiltPcs {
    /// Makes this a PCS v0.2 bound to the evidence whose hash is `evidence_sha256`: the hash
    /// joins the signed payload and the `pcs_id` becomes the `pcs-id-v2` one, which covers it.
    pub fn bind_evidence(mut self, evidence_sha256: &str) -> Self {
        self.evidence_sha256 = evidence_sha256.to_string();
        self.pcs_id = derive_pcs_id_bound(
            &self.merkle_root,
            self.epoch,
            &self.shard_id,
            evidence_sha256,
        );
        self
    }

    /// The canonical signing payload (spec §3.2) of this PCS.
    pub fn signing_payload(&self) -> String {
        payload_of(&SignedFields {
            pcs_id: &self.pcs_id,
            merkle_root: &self.merkle_root,
            epoch: self.epoch,
            shard_id: &self.shard_id,
            d_hat: self.d_hat,
            coh_star: self.coh_star,
            r: self.r,
            budget: self.budget,
            evidence_sha256: &self.evidence_sha256,
        })
    }

    /// The PCS wire JSON with signature `sig` (may be empty): v0.1, or v0.2 with
    /// `evidence_sha256` when the evidence is bound (the evidence itself is the caller's to add).
    pub fn to_json(&self, sig: &str) -> serde_json::Value {
        let mut v = self.to_json_v01(sig);
        if let (false, Some(obj)) = (self.evidence_sha256.is_empty(), v.as_object_mut()) {
            obj.insert("version".into(), "0.2".into());
            obj.insert(
                "evidence_sha256".into(),
                self.evidence_sha256.clone().into(),
            );
        }
        v
    }

    fn to_json_v01(&self, sig: &str) -> serde_json::Value {
        serde_json::json!({
            "pcs_id": self.pcs_id,
            "schema": SCHEMA,
            "version": "0.1",
            "shard_id": self.shard_id,
            "epoch": self.epoch,
            "attempt": 1,
            "seed": 0,
            "scales": self.scales,
            "N_j": self.n_j,
            "coh_star": self.coh_star,
            "v_star": self.v_star,
            "D_hat": self.d_hat,
            "r": self.r,
            "regime": self.regime,
            "budget": self.budget,
            "merkle_root": self.merkle_root,
            "sig": sig,
            "recipe": RECIPE_VERSION,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pcs::parse;
    use crate::verify::verify;

    #[test]
    fn spec_12_8_compressibility() {
        assert_eq!(compressibility(b""), 1.0);
        let a = vec![b'a'; 1000];
        // zlib 1.2.13: 17 B → 0.017; miniz_oxide: 24 B (see the module docs).
        assert_eq!(miniz_oxide::deflate::compress_to_vec_zlib(&a, 6).len(), 24);
        assert_eq!(compressibility(&a), 0.024);
        assert_eq!(
            miniz_oxide::deflate::compress_to_vec_zlib(b"test data", 6).len(),
            17
        );
        assert_eq!(compressibility(b"test data"), 1.0);
        let s = b"test data with some structure: 1,2,3,4,5,6,7,8,9,10";
        assert_eq!(compressibility(s), 1.0);
    }

    #[test]
    fn sentences() {
        assert_eq!(
            split_sentences("A b. C d!  E?\nF 3.5 g"),
            vec!["A b.", "C d!", "E?", "F 3.5 g"]
        );
        assert_eq!(split_sentences("  "), vec![""]);
    }

    #[test]
    fn splitmix_reference_value() {
        // splitmix64 with state 0: first output (reference implementation by S. Vigna)
        assert_eq!(SplitMix64(0).next_u64(), 0xe220_a839_7b1d_cdaf);
    }

    #[test]
    fn box_counts_clamp_the_upper_face() {
        let pts = [[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.5, 0.5, 0.5]];
        assert_eq!(box_count(&pts, 2), 2);
        assert_eq!(box_count(&pts, 4), 3);
    }

    fn pinned(text: &str) -> (Vec<i64>, f64, f64, f64, f64, &'static str) {
        let b = build(text, &BuildOptions::default());
        let counts = b.scales.iter().map(|s| b.n_j[&s.to_string()]).collect();
        (counts, b.d_hat, b.coh_star, b.r, b.budget, b.regime)
    }

    #[test]
    fn fixed_vectors() {
        let one = pinned("East Mississippi Community College");
        assert_eq!(one, (vec![1, 1, 1, 1], 0.0, 1.0, 1.0, 0.3, "sticky"));
        let b = build(
            "East Mississippi Community College",
            &BuildOptions::default(),
        );
        // one chunk: the root is the SHA-256 of the text itself
        assert_eq!(
            b.merkle_root,
            "bf2e68de98c77742abe27cfc1140eae91d5b33c2329537fe9c58ecc551267491"
        );
        assert_eq!(
            b.pcs_id,
            "c44bed24d2e48ba9e322e1bb36e8784773e141ae0b07107a8a6aebb7010c03ed"
        );
        let b = build("", &BuildOptions::default());
        assert_eq!(b.merkle_root, "0".repeat(64));
        assert_eq!(b.r, 1.0);
        assert_eq!(b.n_points, 1);
        let text = "The cat sat on the mat. The dog sat on the log. A bird flew over the house! \
                    Why did the fish swim? Nobody knows.\nThe end.";
        let many = pinned(text);
        assert_eq!(
            many,
            (
                vec![5, 6, 6, 6],
                0.087678135,
                0.5,
                0.851239669,
                0.244628099,
                "mixed"
            )
        );
    }

    #[test]
    fn built_pcs_verifies_and_is_deterministic() {
        let text =
            "Paris is the capital of France. It has 2 million people. The Seine flows through it.";
        let b = build(text, &BuildOptions::default());
        assert_eq!(b, build(text, &BuildOptions::default()));
        assert_eq!(b.n_points, 3);
        let json = serde_json::to_vec(&b.to_json("")).unwrap();
        let p = parse(&json).unwrap();
        let out = verify(&p, &VerifyParams::default());
        assert!(out.cacheable);
        assert_eq!(out.result.status(), 200, "{:?}", out.result);
        assert_eq!(b.pcs_id, derive_pcs_id(&b.merkle_root, 0, "text"));
    }

    #[test]
    fn bound_pcs_has_an_identity_per_evidence_and_verifies() {
        let text = "Ada Lovelace wrote the first program.";
        let (e1, e2) = ("ab".repeat(32), "cd".repeat(32));
        let a = build(text, &BuildOptions::default()).bind_evidence(&e1);
        let b = build(text, &BuildOptions::default()).bind_evidence(&e2);
        assert_ne!(
            a.pcs_id, b.pcs_id,
            "same answer, other evidence: other identity"
        );
        assert_eq!(
            a.pcs_id,
            derive_pcs_id_bound(&a.merkle_root, 0, "text", &e1)
        );
        let v = a.to_json("");
        assert_eq!(v["version"], "0.2");
        assert_eq!(v["evidence_sha256"], e1.as_str());
        let p = parse(&serde_json::to_vec(&v).unwrap()).unwrap();
        let out = verify(&p, &VerifyParams::default());
        assert!(out.cacheable);
        // A v0.2 PCS that kept the v1 id is not its own identity: never cached.
        let mut stale = p.clone();
        stale.pcs_id = derive_pcs_id(&p.merkle_root, 0, "text");
        assert!(!verify(&stale, &VerifyParams::default()).cacheable);
    }

    #[test]
    fn signed_pcs_passes_the_gate_verifier() {
        use crate::signature::{sign_hmac, SigAlg, Verifier, VerifierConfig};
        let b = build("One. Two three. Four five six.", &BuildOptions::default());
        let sig = sign_hmac(b.signing_payload().as_bytes(), b"testsecret");
        let p = parse(&serde_json::to_vec(&b.to_json(&sig)).unwrap()).unwrap();
        let v = Verifier::from_config(&VerifierConfig {
            alg: SigAlg::Hmac,
            keys: vec!["testsecret".into()],
            legacy_prehash: false,
        })
        .unwrap();
        assert_eq!(v.verify(&p), Ok(()));
        let mut forged = p.clone();
        forged.r = 0.5;
        assert!(v.verify(&forged).is_err());
    }
}
