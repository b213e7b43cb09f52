//! The anomaly detector's model: a variational autoencoder artifact and its scorer.
//!
//! Shape (the seed's 11 → 8 → 5 → latent 3 and back, with the input width adapted to the
//! [`crate::anomaly_features`] schema, N = [`N_FEATURES`] = 20): encoder N → 8 → 5 (tanh), then
//! two linear heads 5 → 3 for μ and log σ²; decoder 3 → 5 → 8 (tanh) → N (linear). Inputs are
//! standardised with the training mean and std (no clipping: a signal far outside the normal
//! range must reconstruct badly). The trainer (`kakeya_control_plane::anomaly::train`, candle)
//! exports its weights into this artifact, and everything that scores — the control plane's
//! evaluation and routes, later the filter — calls [`VaeModel::score`], so there is one scorer.
//!
//! Scoring one vector x:
//! 1. z = (x − mean)/std; encoder → μ, log σ² (clamped to [[`LOG_VAR_MIN`], [`LOG_VAR_MAX`]]);
//! 2. L = `latent_samples` draws h = μ + σ·ε, ε ~ N(0, I) from splitmix64 seeded with the
//!    FNV-1a hash of x's bits, so the same input always gets the same draws (a filter's score
//!    is reproducible offline); each draw decoded, its reconstruction error the mean squared
//!    error over the N standardised features;
//! 3. `reconstruction_error` = the mean of the L errors; `score` = ECDF(reconstruction_error)
//!    over `ecdf`, the sorted errors of a held-out normal set (so 0.99 means "reconstructed
//!    worse than 99 % of normal traffic"); `uncertainty` = the std of the L draws' own ECDF
//!    scores (0 when every draw lands in the same place, at most 0.5);
//! 4. `elbo` = −(N·reconstruction_error + β·KL(N(μ, σ²) ‖ N(0, I))), the negative of the
//!    training loss (the β-ELBO of a unit-variance Gaussian decoder, up to constants).
//!
//! A vector of the wrong length or with a non-finite value scores as the most anomalous
//! possible (score 1) rather than failing: the data plane never panics.
//!
//! Why hand-written matrix products: the network has 20·8 + 8·5 + 2·5·3 + 3·5 + 5·8 + 8·20 ≈ 480
//! weights, core must build for wasm32 with no heavy dependency (candle would pull its
//! kernels into the filter), and fixed-size stack buffers keep scoring allocation-free.

use crate::anomaly_features::{FEATURE_NAMES, N_FEATURES, SCHEMA_VERSION};
use crate::evidence::fnv1a;
use crate::ids::sha256_hex;
use crate::pcs_builder::SplitMix64;
use serde::{Deserialize, Serialize};

pub const KIND_VAE: &str = "vae";
/// Widths of the encoder's hidden layers (the decoder mirrors them).
pub const HIDDEN: [usize; 2] = [8, 5];
/// Width of the latent space.
pub const LATENT: usize = 3;
/// Bounds of log σ² (the trainer clamps the same way): keeps exp finite for any weights.
pub const LOG_VAR_MIN: f64 = -20.0;
pub const LOG_VAR_MAX: f64 = 10.0;
/// Most latent samples per score (bounds the work per request).
pub const MAX_LATENT_SAMPLES: usize = 64;
/// Most ECDF points an artifact may carry (bounds its size in a bundle).
pub const MAX_ECDF: usize = 100_000;

/// One dense layer `y = W·x + b`, `weights` row-major, one row per output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dense {
    pub weights: Vec<Vec<f64>>,
    pub bias: Vec<f64>,
}

impl Dense {
    fn check(&self, inputs: usize, outputs: usize, what: &'static str) -> Result<(), VaeError> {
        if self.bias.len() != outputs
            || self.weights.len() != outputs
            || self.weights.iter().any(|r| r.len() != inputs)
        {
            return Err(VaeError::Shape(what));
        }
        let finite = self.bias.iter().chain(self.weights.iter().flatten());
        if finite.into_iter().any(|v| !v.is_finite()) {
            return Err(VaeError::NonFinite(what));
        }
        Ok(())
    }

    /// `out[..outputs] = W·x + b`, then tanh when `hidden`. Shapes were checked by
    /// [`VaeModel::validate`]; extra entries of `out` are left alone.
    fn apply(&self, x: &[f64], out: &mut [f64], hidden: bool) {
        for ((o, row), b) in out.iter_mut().zip(&self.weights).zip(&self.bias) {
            let z = b + row.iter().zip(x).map(|(w, v)| w * v).sum::<f64>();
            *o = if hidden { z.tanh() } else { z };
        }
    }
}

/// How the artifact was trained (figures are in the model card, not here).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VaeTraining {
    pub seed: u64,
    /// Rows the weights were fitted on.
    pub n_train: usize,
    /// Held-out normal rows the ECDF was built from.
    pub n_ecdf: usize,
    pub epochs: usize,
    pub learning_rate: f64,
    pub weight_decay: f64,
    /// SHA-256 of the training data as the trainer saw it.
    pub dataset_sha256: String,
}

/// A trained VAE artifact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VaeModel {
    pub kind: String,
    pub schema_version: String,
    pub feature_names: Vec<String>,
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
    /// N → 8, 8 → 5 (tanh).
    pub encoder: Vec<Dense>,
    /// 5 → 3, linear.
    pub mu: Dense,
    /// 5 → 3, linear, then clamped.
    pub log_var: Dense,
    /// 3 → 5, 5 → 8 (tanh), 8 → N (linear).
    pub decoder: Vec<Dense>,
    /// Weight of the KL term (β-VAE).
    pub beta: f64,
    /// L, the latent samples per score.
    pub latent_samples: usize,
    /// Reconstruction errors of the held-out normal set, sorted ascending.
    pub ecdf: Vec<f64>,
    pub training: VaeTraining,
}

/// Why an artifact cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum VaeError {
    #[error("unsupported model kind {0:?} (expected {KIND_VAE:?})")]
    Kind(String),
    #[error("feature schema {0:?} does not match {SCHEMA_VERSION}")]
    Schema(String),
    #[error("feature names do not match schema {SCHEMA_VERSION}")]
    Names,
    #[error("{0} has the wrong shape")]
    Shape(&'static str),
    #[error("{0} has a non-finite (or, for std, non-positive) value")]
    NonFinite(&'static str),
    #[error("latent_samples must be 1..={MAX_LATENT_SAMPLES} (got {0})")]
    LatentSamples(usize),
    #[error("ecdf must hold 1..={MAX_ECDF} finite errors in ascending order")]
    Ecdf,
    #[error("invalid JSON: {0}")]
    Json(String),
}

/// What [`VaeModel::score`] says about one vector.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct VaeScore {
    /// ECDF of the reconstruction error among held-out normal traffic, in [0, 1].
    pub score: f64,
    /// Std of the latent draws' ECDF scores, in [0, 0.5].
    pub uncertainty: f64,
    /// Mean squared error over the standardised features, averaged over the draws.
    pub reconstruction_error: f64,
    /// −(N·reconstruction_error + β·KL).
    pub elbo: f64,
}

impl VaeScore {
    /// The answer for an input that cannot be scored (wrong length, non-finite values): the
    /// most anomalous, with finite numbers so it can be recorded as JSON.
    pub const UNSCORABLE: VaeScore = VaeScore {
        score: 1.0,
        uncertainty: 0.0,
        reconstruction_error: f64::MAX,
        elbo: f64::MIN,
    };
}

/// A standard normal pair by Box–Muller from two uniforms of `rng`.
pub fn normal_pair(rng: &mut SplitMix64) -> (f64, f64) {
    // 1 − u is in (0, 1], so ln is finite.
    let u1 = 1.0 - rng.next_f64();
    let u2 = rng.next_f64();
    let r = (-2.0 * u1.ln()).sqrt();
    let t = std::f64::consts::TAU * u2;
    (r * t.cos(), r * t.sin())
}

/// The seed of an input's latent draws: FNV-1a over its values' bits, little-endian.
pub fn input_seed(x: &[f64]) -> u64 {
    let mut h = fnv1a(b"kakeya-vae-v1");
    for v in x {
        for b in v.to_bits().to_le_bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

impl VaeModel {
    /// Checks the kind, the schema and every shape and value.
    pub fn validate(&self) -> Result<(), VaeError> {
        if self.kind != KIND_VAE {
            return Err(VaeError::Kind(self.kind.chars().take(64).collect()));
        }
        if self.schema_version != SCHEMA_VERSION {
            return Err(VaeError::Schema(
                self.schema_version.chars().take(64).collect(),
            ));
        }
        if self.feature_names.len() != N_FEATURES
            || self
                .feature_names
                .iter()
                .zip(FEATURE_NAMES)
                .any(|(a, b)| a != b)
        {
            return Err(VaeError::Names);
        }
        if self.mean.len() != N_FEATURES || self.std.len() != N_FEATURES {
            return Err(VaeError::Shape("mean/std"));
        }
        if self.mean.iter().any(|v| !v.is_finite())
            || self.std.iter().any(|v| !(v.is_finite() && *v > 0.0))
        {
            return Err(VaeError::NonFinite("mean/std"));
        }
        let [h1, h2] = HIDDEN;
        match self.encoder.as_slice() {
            [a, b] => {
                a.check(N_FEATURES, h1, "encoder layer 1")?;
                b.check(h1, h2, "encoder layer 2")?;
            }
            _ => return Err(VaeError::Shape("encoder")),
        }
        self.mu.check(h2, LATENT, "mu")?;
        self.log_var.check(h2, LATENT, "log_var")?;
        match self.decoder.as_slice() {
            [a, b, c] => {
                a.check(LATENT, h2, "decoder layer 1")?;
                b.check(h2, h1, "decoder layer 2")?;
                c.check(h1, N_FEATURES, "decoder layer 3")?;
            }
            _ => return Err(VaeError::Shape("decoder")),
        }
        if !(self.beta.is_finite() && self.beta >= 0.0) {
            return Err(VaeError::NonFinite("beta"));
        }
        if !(1..=MAX_LATENT_SAMPLES).contains(&self.latent_samples) {
            return Err(VaeError::LatentSamples(self.latent_samples));
        }
        let sorted = self.ecdf.windows(2).all(|w| match w {
            [a, b] => a <= b,
            _ => true,
        });
        if self.ecdf.is_empty()
            || self.ecdf.len() > MAX_ECDF
            || !sorted
            || self.ecdf.iter().any(|v| !v.is_finite())
        {
            return Err(VaeError::Ecdf);
        }
        Ok(())
    }

    /// Parses and validates an artifact.
    pub fn from_json(bytes: &[u8]) -> Result<Self, VaeError> {
        let m: VaeModel =
            serde_json::from_slice(bytes).map_err(|e| VaeError::Json(e.to_string()))?;
        m.validate()?;
        Ok(m)
    }

    /// The canonical bytes: `serde_json` of the struct (fixed field order, shortest
    /// round-trip floats).
    pub fn canonical_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn sha256(&self) -> String {
        sha256_hex(&self.canonical_bytes())
    }

    /// `vae-` + the first 12 hex digits of [`Self::sha256`].
    pub fn version(&self) -> String {
        let h = self.sha256();
        format!("vae-{}", h.get(..12).unwrap_or(&h))
    }

    /// ECDF of `e` over the held-out normal errors: the share of them ≤ e.
    pub fn ecdf_of(&self, e: f64) -> f64 {
        if self.ecdf.is_empty() {
            return 1.0;
        }
        self.ecdf.partition_point(|&v| v <= e) as f64 / self.ecdf.len() as f64
    }

    /// Encoder: standardised input → (μ, log σ²), clamped. Each layer reads as many inputs as
    /// its rows are long, so one fixed buffer of width N serves every layer.
    fn encode(&self, z: &[f64; N_FEATURES]) -> ([f64; LATENT], [f64; LATENT]) {
        let mut cur = *z;
        for layer in &self.encoder {
            let mut next = [0.0; N_FEATURES];
            layer.apply(&cur, &mut next, true);
            cur = next;
        }
        let (mut mu, mut lv) = ([0.0; LATENT], [0.0; LATENT]);
        self.mu.apply(&cur, &mut mu, false);
        self.log_var.apply(&cur, &mut lv, false);
        for v in &mut lv {
            *v = v.clamp(LOG_VAR_MIN, LOG_VAR_MAX);
        }
        (mu, lv)
    }

    /// Decoder: latent → reconstruction of the standardised input (last layer linear).
    fn decode(&self, h: &[f64; LATENT]) -> [f64; N_FEATURES] {
        let mut cur = [0.0; N_FEATURES];
        for (c, v) in cur.iter_mut().zip(h) {
            *c = *v;
        }
        let last = self.decoder.len().saturating_sub(1);
        for (i, layer) in self.decoder.iter().enumerate() {
            let mut next = [0.0; N_FEATURES];
            layer.apply(&cur, &mut next, i < last);
            cur = next;
        }
        cur
    }

    /// Scores one raw feature vector (see the module doc). Total: never panics, always finite.
    pub fn score(&self, x: &[f64]) -> VaeScore {
        if x.len() != N_FEATURES || x.iter().any(|v| !v.is_finite()) {
            return VaeScore::UNSCORABLE;
        }
        let mut z = [0.0; N_FEATURES];
        for (((zi, xi), m), s) in z.iter_mut().zip(x).zip(&self.mean).zip(&self.std) {
            *zi = (xi - m) / s;
        }
        if z.iter().any(|v| !v.is_finite()) {
            return VaeScore::UNSCORABLE;
        }
        let (mu, lv) = self.encode(&z);
        let kl: f64 = -0.5
            * mu.iter()
                .zip(&lv)
                .map(|(m, l)| 1.0 + l - m * m - l.exp())
                .sum::<f64>();
        let mut rng = SplitMix64(input_seed(x));
        let l = self.latent_samples.clamp(1, MAX_LATENT_SAMPLES);
        let (mut sum, mut ecdf_sum, mut ecdf_sq) = (0.0, 0.0, 0.0);
        let mut spare: Option<f64> = None;
        for _ in 0..l {
            let mut h = [0.0; LATENT];
            for ((hk, m), lvk) in h.iter_mut().zip(&mu).zip(&lv) {
                let eps = match spare.take() {
                    Some(e) => e,
                    None => {
                        let (a, b) = normal_pair(&mut rng);
                        spare = Some(b);
                        a
                    }
                };
                *hk = m + (0.5 * lvk).exp() * eps;
            }
            let rec = self.decode(&h);
            let err = rec
                .iter()
                .zip(&z)
                .map(|(r, v)| (r - v) * (r - v))
                .sum::<f64>()
                / N_FEATURES as f64;
            sum += err;
            let p = self.ecdf_of(err);
            ecdf_sum += p;
            ecdf_sq += p * p;
        }
        let n = l as f64;
        let reconstruction_error = sum / n;
        if !reconstruction_error.is_finite() || !kl.is_finite() {
            return VaeScore::UNSCORABLE;
        }
        let mean_p = ecdf_sum / n;
        let uncertainty = (ecdf_sq / n - mean_p * mean_p).max(0.0).sqrt();
        VaeScore {
            score: self.ecdf_of(reconstruction_error),
            uncertainty,
            reconstruction_error,
            elbo: -(N_FEATURES as f64 * reconstruction_error + self.beta * kl),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
