//! Training of the anomaly VAE with candle (autograd, AdamW), exported into the core artifact
//! ([`kakeya_core::vae::VaeModel`]) that every scorer uses.
//!
//! Recipe (the defaults of [`TrainOptions`]):
//! * rows are anomaly feature vectors ([`kakeya_core::anomaly_features`]) of *normal* decisions,
//!   oldest first; the caller keeps a later, disjoint set for the ECDF ([`fit`]'s `ecdf_rows`);
//! * standardised with the training mean and std (std floored at [`STD_FLOOR`], so a feature
//!   that never varies in normal traffic makes any deviation from it large but finite);
//! * the newest [`VALIDATION_FRACTION`] of the training rows are held out for early stopping on
//!   the validation loss (the best epoch's weights are kept, [`TrainOptions::patience`]);
//! * loss per row = Σ (x̂ − x)² + β·KL(N(μ, σ²) ‖ N(0, I)), with the reparameterisation
//!   h = μ + σ·ε and log σ² clamped like the scorer; AdamW on mini-batches;
//! * determinism: the initial weights (Xavier-uniform), the batch order and every ε come from
//!   splitmix64 streams seeded by [`TrainOptions::seed`], never from candle's own generator, and
//!   the arithmetic is f64 on the CPU, so the same rows and seed give a byte-identical artifact.
//!
//! Why candle: the micro-vote already builds it, it has reverse-mode autograd and AdamW, and
//! its CPU kernels are deterministic for these shapes.

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use kakeya_core::anomaly_features::{FEATURE_NAMES, N_FEATURES, SCHEMA_VERSION};
use kakeya_core::pcs_builder::SplitMix64;
use kakeya_core::vae::{
    normal_pair, Dense, VaeModel, VaeTraining, HIDDEN, KIND_VAE, LATENT, LOG_VAR_MAX, LOG_VAR_MIN,
};
use serde::{Deserialize, Serialize};

use crate::ml::stats::ks::{ks_2samp, ks_uniform, KsTest};

/// One anomaly feature vector.
pub type Row = [f64; N_FEATURES];

/// Smallest std a feature is standardised with.
pub const STD_FLOOR: f64 = 1e-2;
/// Share of the training rows (the newest) held out for early stopping.
pub const VALIDATION_FRACTION: f64 = 0.1;
/// Fewest training rows [`fit`] accepts.
pub const MIN_ROWS: usize = 50;
/// Most ECDF points an artifact keeps (more held-out rows are reduced to evenly spaced order
/// statistics).
pub const MAX_ECDF_POINTS: usize = 5_000;

/// Hyper-parameters of one training run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainOptions {
    pub seed: u64,
    /// Most passes over the training rows.
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub weight_decay: f64,
    /// Weight of the KL term.
    pub beta: f64,
    /// L, the latent samples the artifact scores with.
    pub latent_samples: usize,
    /// Epochs without a better validation loss before stopping.
    pub patience: usize,
}

/// Seed of `kakeya anomaly train` and `eval` by default.
pub const DEFAULT_SEED: u64 = 20_261_201;

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            seed: DEFAULT_SEED,
            epochs: 300,
            batch_size: 128,
            learning_rate: 3e-3,
            weight_decay: 1e-4,
            beta: 0.1,
            latent_samples: 10,
            patience: 20,
        }
    }
}

/// Why training failed.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("{got} training rows, at least {MIN_ROWS} are needed")]
    TooFew { got: usize },
    #[error("no held-out rows for the ECDF")]
    NoEcdf,
    #[error("row {0} has a non-finite value")]
    NonFinite(usize),
    #[error("invalid options: {0}")]
    Options(String),
    #[error("training diverged (loss {0})")]
    Diverged(f64),
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("exported artifact is invalid: {0}")]
    Export(#[from] kakeya_core::vae::VaeError),
}

/// A trained artifact with the curves it came with.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Trained {
    pub model: VaeModel,
    /// Mean training loss per epoch (the optimiser's view, with its ε draws).
    pub train_loss: Vec<f64>,
    /// Validation loss per epoch (fixed ε draws).
    pub validation_loss: Vec<f64>,
    /// The epoch (0-based) whose weights were kept.
    pub best_epoch: usize,
}

/// SHA-256 of rows as little-endian f64 bytes.
pub fn rows_sha256(rows: &[Row]) -> String {
    let bytes: Vec<u8> = rows
        .iter()
        .flatten()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    kakeya_core::ids::sha256_hex(&bytes)
}

/// The network's parameters as candle variables, (out, in) weights like [`Dense`].
struct Net {
    /// Encoder layers, then μ, then log σ², then decoder layers: (weight, bias).
    layers: Vec<(Var, Var)>,
}

const N_ENCODER: usize = 2;
const N_DECODER: usize = 3;

impl Net {
    /// Xavier-uniform weights from `rng`, zero biases.
    fn init(rng: &mut SplitMix64, dev: &Device) -> candle_core::Result<Net> {
        let [h1, h2] = HIDDEN;
        let shapes = [
            (N_FEATURES, h1),
            (h1, h2),
            (h2, LATENT),
            (h2, LATENT),
            (LATENT, h2),
            (h2, h1),
            (h1, N_FEATURES),
        ];
        let mut layers = Vec::with_capacity(shapes.len());
        for (inputs, outputs) in shapes {
            let a = (6.0 / (inputs + outputs) as f64).sqrt();
            let w: Vec<f64> = (0..inputs * outputs)
                .map(|_| (rng.next_f64() * 2.0 - 1.0) * a)
                .collect();
            let w = Var::from_tensor(&Tensor::from_vec(w, (outputs, inputs), dev)?)?;
            let b = Var::from_tensor(&Tensor::zeros(outputs, DType::F64, dev)?)?;
            layers.push((w, b));
        }
        Ok(Net { layers })
    }

    fn vars(&self) -> Vec<Var> {
        self.layers
            .iter()
            .flat_map(|(w, b)| [w.clone(), b.clone()])
            .collect()
    }

    fn dense(&self, i: usize, x: &Tensor, hidden: bool) -> candle_core::Result<Tensor> {
        let (w, b) = &self.layers[i];
        let y = x
            .matmul(&w.as_tensor().t()?)?
            .broadcast_add(b.as_tensor())?;
        if hidden {
            y.tanh()
        } else {
            Ok(y)
        }
    }

    /// Mean loss of a batch `x` (B × N) with latent noise `eps` (B × 3).
    fn loss(&self, x: &Tensor, eps: &Tensor, beta: f64) -> candle_core::Result<Tensor> {
        let mut h = x.clone();
        for i in 0..N_ENCODER {
            h = self.dense(i, &h, true)?;
        }
        let mu = self.dense(N_ENCODER, &h, false)?;
        let lv = self
            .dense(N_ENCODER + 1, &h, false)?
            .clamp(LOG_VAR_MIN, LOG_VAR_MAX)?;
        let mut z = mu.add(&lv.affine(0.5, 0.0)?.exp()?.mul(eps)?)?;
        for j in 0..N_DECODER {
            z = self.dense(N_ENCODER + 2 + j, &z, j + 1 < N_DECODER)?;
        }
        let recon = z.sub(x)?.sqr()?.sum(1)?;
        // KL = −½ Σ (1 + log σ² − μ² − σ²)
        let kl = lv
            .affine(1.0, 1.0)?
            .sub(&mu.sqr()?)?
            .sub(&lv.exp()?)?
            .sum(1)?
            .affine(-0.5, 0.0)?;
        recon.add(&kl.affine(beta, 0.0)?)?.mean_all()
    }

    fn dense_of(&self, i: usize) -> candle_core::Result<Dense> {
        let (w, b) = &self.layers[i];
        Ok(Dense {
            weights: w.as_tensor().to_vec2::<f64>()?,
            bias: b.as_tensor().to_vec1::<f64>()?,
        })
    }

    fn snapshot(&self) -> candle_core::Result<Vec<Tensor>> {
        self.layers
            .iter()
            .flat_map(|(w, b)| [w, b])
            .map(|v| v.as_tensor().copy())
            .collect()
    }

    fn restore(&self, snap: &[Tensor]) -> candle_core::Result<()> {
        for (v, t) in self.layers.iter().flat_map(|(w, b)| [w, b]).zip(snap) {
            v.set(t)?;
        }
        Ok(())
    }
}

/// Standard normal noise of `rows` × [`LATENT`] from `rng`.
fn noise(rng: &mut SplitMix64, rows: usize, dev: &Device) -> candle_core::Result<Tensor> {
    let mut v = Vec::with_capacity(rows * LATENT + 1);
    while v.len() < rows * LATENT {
        let (a, b) = normal_pair(rng);
        v.push(a);
        v.push(b);
    }
    v.truncate(rows * LATENT);
    Tensor::from_vec(v, (rows, LATENT), dev)
}

/// Column means and stds (population), std floored at [`STD_FLOOR`].
pub fn standardisation(rows: &[Row]) -> (Vec<f64>, Vec<f64>) {
    let n = rows.len().max(1) as f64;
    let mut mean = vec![0.0; N_FEATURES];
    for r in rows {
        for (m, v) in mean.iter_mut().zip(r) {
            *m += v / n;
        }
    }
    let mut std = vec![0.0; N_FEATURES];
    for r in rows {
        for ((s, v), m) in std.iter_mut().zip(r).zip(&mean) {
            *s += (v - m) * (v - m) / n;
        }
    }
    let std = std.into_iter().map(|v| v.sqrt().max(STD_FLOOR)).collect();
    (mean, std)
}

fn standardised(
    rows: &[Row],
    mean: &[f64],
    std: &[f64],
    dev: &Device,
) -> candle_core::Result<Tensor> {
    let mut v = Vec::with_capacity(rows.len() * N_FEATURES);
    for r in rows {
        v.extend(r.iter().zip(mean).zip(std).map(|((x, m), s)| (x - m) / s));
    }
    Tensor::from_vec(v, (rows.len(), N_FEATURES), dev)
}

/// Evenly spaced order statistics: at most `k` of sorted `v`, always keeping both ends.
fn thin_sorted(v: Vec<f64>, k: usize) -> Vec<f64> {
    if v.len() <= k || k < 2 {
        return v;
    }
    let last = v.len() - 1;
    (0..k)
        .filter_map(|i| v.get(i * last / (k - 1)).copied())
        .collect()
}

/// Is the score calibrated on held-out normal rows `heldout` (disjoint from the training and
/// the ECDF rows)? The two-sample KS test of their reconstruction errors against those of the
/// ECDF rows `ecdf_rows` (the model's own reference), `None` when either is empty.
///
/// Why not the one-sample test of their scores against U(0, 1) ([`ks_uniform`], which
/// [`heldout_uniform_ks`] still computes for comparison): the score is the ECDF of m reference
/// errors, so given that reference a held-out score is uniform only up to the reference's own
/// sampling error (about 1/√m); the one-sample test assumes an exact CDF and, with m ≈ n, sees
/// about √2 times the spread its null allows. And identical answers (HaluEval's "yes" and
/// "no" are 2.5 % of its normal rows) have identical errors, so the score has atoms a continuous
/// uniform has not. The two-sample test asks the right question (are held-out errors
/// distributed as the reference errors, i.e. the scores uniform on the ECDF's grid) with both
/// sample sizes in its null and ties compared exactly ([`ks_2samp`]).
pub fn calibration_ks(model: &VaeModel, ecdf_rows: &[Row], heldout: &[Row]) -> Option<KsTest> {
    let errors = |rows: &[Row]| -> Vec<f64> {
        rows.iter()
            .map(|r| model.score(r).reconstruction_error)
            .collect()
    };
    ks_2samp(&errors(heldout), &errors(ecdf_rows)).ok()
}

/// The one-sample KS test of the held-out rows' scores against U(0, 1) (see
/// [`calibration_ks`] for why it is not the calibration check).
pub fn heldout_uniform_ks(model: &VaeModel, heldout: &[Row]) -> Option<KsTest> {
    let scores: Vec<f64> = heldout.iter().map(|r| model.score(r).score).collect();
    ks_uniform(&scores).ok()
}

/// Trains on `train` (oldest first) and builds the ECDF from `ecdf_rows` (held-out normal
/// rows, disjoint from `train`). `progress(epoch, epochs)` after each epoch.
pub fn fit(
    train: &[Row],
    ecdf_rows: &[Row],
    opts: &TrainOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Trained, TrainError> {
    if train.len() < MIN_ROWS {
        return Err(TrainError::TooFew { got: train.len() });
    }
    if ecdf_rows.is_empty() {
        return Err(TrainError::NoEcdf);
    }
    if let Some(i) = train
        .iter()
        .chain(ecdf_rows)
        .position(|r| r.iter().any(|v| !v.is_finite()))
    {
        return Err(TrainError::NonFinite(i));
    }
    let positive = |v: f64| v.is_finite() && v > 0.0;
    let non_negative = |v: f64| v.is_finite() && v >= 0.0;
    if opts.epochs == 0 || opts.batch_size == 0 || !positive(opts.learning_rate) {
        return Err(TrainError::Options(
            "epochs, batch_size and learning_rate must be positive".into(),
        ));
    }
    if !non_negative(opts.beta) || !non_negative(opts.weight_decay) {
        return Err(TrainError::Options(
            "beta and weight_decay must be finite and non-negative".into(),
        ));
    }
    let dev = Device::Cpu;
    let (mean, std) = standardisation(train);
    let n_val = ((train.len() as f64 * VALIDATION_FRACTION).round() as usize).max(1);
    let (fit_rows, val_rows) = train.split_at(train.len() - n_val);
    let x_fit = standardised(fit_rows, &mean, &std, &dev)?;
    let x_val = standardised(val_rows, &mean, &std, &dev)?;

    let mut rng = SplitMix64(opts.seed);
    let net = Net::init(&mut rng, &dev)?;
    let mut opt = AdamW::new(
        net.vars(),
        ParamsAdamW {
            lr: opts.learning_rate,
            weight_decay: opts.weight_decay,
            ..ParamsAdamW::default()
        },
    )?;
    // The validation loss always uses the same draws, so epochs compare on equal terms.
    let val_eps = noise(
        &mut SplitMix64(opts.seed ^ 0x005e_ed0f_0a1d),
        val_rows.len(),
        &dev,
    )?;
    let mut order: Vec<u32> = (0..fit_rows.len() as u32).collect();
    let (mut train_loss, mut validation_loss) = (Vec::new(), Vec::new());
    let (mut best, mut best_epoch, mut snap) = (f64::INFINITY, 0usize, net.snapshot()?);
    for epoch in 0..opts.epochs {
        // Fisher–Yates with the run's generator.
        for i in (1..order.len()).rev() {
            let j = (rng.next_u64() % (i as u64 + 1)) as usize;
            order.swap(i, j);
        }
        let (mut sum, mut batches) = (0.0, 0usize);
        for chunk in order.chunks(opts.batch_size) {
            let idx = Tensor::from_vec(chunk.to_vec(), chunk.len(), &dev)?;
            let xb = x_fit.index_select(&idx, 0)?;
            let eps = noise(&mut rng, chunk.len(), &dev)?;
            let loss = net.loss(&xb, &eps, opts.beta)?;
            opt.backward_step(&loss)?;
            sum += loss.to_scalar::<f64>()?;
            batches += 1;
        }
        let epoch_loss = sum / batches.max(1) as f64;
        let val = net.loss(&x_val, &val_eps, opts.beta)?.to_scalar::<f64>()?;
        if !epoch_loss.is_finite() || !val.is_finite() {
            return Err(TrainError::Diverged(epoch_loss));
        }
        train_loss.push(epoch_loss);
        validation_loss.push(val);
        progress(epoch + 1, opts.epochs);
        if val < best {
            (best, best_epoch, snap) = (val, epoch, net.snapshot()?);
        } else if epoch - best_epoch >= opts.patience {
            progress(opts.epochs, opts.epochs);
            break;
        }
    }
    net.restore(&snap)?;

    let mut model = VaeModel {
        kind: KIND_VAE.into(),
        schema_version: SCHEMA_VERSION.into(),
        feature_names: FEATURE_NAMES.iter().map(|s| s.to_string()).collect(),
        mean,
        std,
        encoder: (0..N_ENCODER)
            .map(|i| net.dense_of(i))
            .collect::<candle_core::Result<_>>()?,
        mu: net.dense_of(N_ENCODER)?,
        log_var: net.dense_of(N_ENCODER + 1)?,
        decoder: (0..N_DECODER)
            .map(|j| net.dense_of(N_ENCODER + 2 + j))
            .collect::<candle_core::Result<_>>()?,
        beta: opts.beta,
        latent_samples: opts.latent_samples,
        // Replaced below; the reconstruction error does not depend on it.
        ecdf: vec![0.0],
        training: VaeTraining {
            seed: opts.seed,
            n_train: train.len(),
            n_ecdf: ecdf_rows.len(),
            epochs: train_loss.len(),
            learning_rate: opts.learning_rate,
            weight_decay: opts.weight_decay,
            dataset_sha256: rows_sha256(train),
        },
    };
    model.validate()?;
    // The ECDF comes from the core scorer itself, so it is exactly what serving computes.
    let mut errors: Vec<f64> = ecdf_rows
        .iter()
        .map(|r| model.score(r).reconstruction_error)
        .collect();
    errors.sort_by(f64::total_cmp);
    model.ecdf = thin_sorted(errors, MAX_ECDF_POINTS);
    model.validate()?;
    Ok(Trained {
        model,
        train_loss,
        validation_loss,
        best_epoch,
    })
}

#[cfg(test)]
mod tests;
