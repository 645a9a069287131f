//! The tensors of a Llama-family model, located in a GGUF file and checked against the
//! hyperparameters.
//!
//! Weight matrices stay in the memory map: a [`Mat`] records where one lives, and the
//! forward pass borrows it as a [`QMatrix`]. Only the small vectors (norm weights, biases)
//! are copied out, widened to f32.

use kernels::{GgmlType, QMatrix};

use super::config::{Arch, ModelConfig};
use crate::error::{EngineError, Result};
use crate::gguf::{GgufFile, TensorInfo};

/// Where a weight matrix lives in the file: `rows` outputs of `cols` inputs.
#[derive(Debug, Clone)]
pub struct Mat {
    pub name: String,
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    info: TensorInfo,
}

impl Mat {
    /// Borrows the matrix from `file` (the file it was located in).
    pub fn view<'f>(&self, file: &'f GgufFile) -> Result<QMatrix<'f>> {
        Ok(QMatrix::new(
            self.ty,
            self.rows,
            self.cols,
            file.tensor_data(&self.info),
        )?)
    }

    /// The tensor's description in the file.
    pub fn info(&self) -> &TensorInfo {
        &self.info
    }

    /// The matrix's bytes in `file` (as stored: quantized blocks, or floats).
    pub fn bytes<'f>(&self, file: &'f GgufFile) -> &'f [u8] {
        file.tensor_data(&self.info)
    }
}

/// One transformer block's weights.
#[derive(Debug)]
pub struct LayerWeights {
    pub attn_norm: Vec<f32>,
    pub wq: Mat,
    pub wk: Mat,
    pub wv: Mat,
    pub wo: Mat,
    /// Qwen2's Q/K/V biases.
    pub bq: Option<Vec<f32>>,
    pub bk: Option<Vec<f32>>,
    pub bv: Option<Vec<f32>>,
    /// Qwen3's per-head RMSNorm weights on Q and K.
    pub q_norm: Option<Vec<f32>>,
    pub k_norm: Option<Vec<f32>>,
    pub ffn_norm: Vec<f32>,
    pub w_gate: Mat,
    pub w_up: Mat,
    pub w_down: Mat,
}

/// All weights of the model.
#[derive(Debug)]
pub struct Weights {
    /// `vocab x d_model`; rows are looked up, so any storage type works.
    pub tok_embd: Mat,
    pub layers: Vec<LayerWeights>,
    pub output_norm: Vec<f32>,
    /// The output head; the token embedding itself when the file ties them.
    pub output: Mat,
}

fn tensor<'f>(file: &'f GgufFile, name: &str) -> Result<&'f TensorInfo> {
    file.tensor(name).ok_or_else(|| EngineError::MissingTensor {
        name: name.to_string(),
    })
}

fn shape_str(dims: &[u64]) -> String {
    format!("{dims:?}")
}

/// A matrix of `rows` x `cols` (ggml dims `[cols, rows]`).
fn mat(file: &GgufFile, name: &str, rows: usize, cols: usize) -> Result<Mat> {
    let info = tensor(file, name)?;
    if info.dims.len() != 2 || info.row_len() != cols || info.n_rows() != rows {
        return Err(EngineError::BadTensor {
            name: name.to_string(),
            expected: format!("shape [{cols}, {rows}]"),
            got: format!("shape {}", shape_str(&info.dims)),
        });
    }
    let m = Mat {
        name: name.to_string(),
        ty: info.ggml_type,
        rows,
        cols,
        info: info.clone(),
    };
    m.view(file)?; // the byte length and type fit a matrix
    Ok(m)
}

/// A vector of `len` values of any float or quantized type, widened to f32.
fn vector(file: &GgufFile, name: &str, len: usize) -> Result<Vec<f32>> {
    let info = tensor(file, name)?;
    if info.n_elements() != len as u64 {
        return Err(EngineError::BadTensor {
            name: name.to_string(),
            expected: format!("{len} values"),
            got: format!("shape {}", shape_str(&info.dims)),
        });
    }
    let mut out = vec![0f32; len];
    kernels::dequantize_row(info.ggml_type, file.tensor_data(info), &mut out)?;
    Ok(out)
}

fn optional_vector(file: &GgufFile, name: &str, len: usize) -> Result<Option<Vec<f32>>> {
    if file.tensor(name).is_none() {
        return Ok(None);
    }
    vector(file, name, len).map(Some)
}

impl Weights {
    /// Every weight matrix: the embedding, each layer's seven, the output head.
    pub fn matrices(&self) -> impl Iterator<Item = &Mat> {
        std::iter::once(&self.tok_embd)
            .chain(
                self.layers
                    .iter()
                    .flat_map(|l| [&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down]),
            )
            .chain(std::iter::once(&self.output))
    }

    /// The vocabulary size, from the token embedding's shape.
    pub fn vocab_size(file: &GgufFile) -> Result<usize> {
        let info = tensor(file, "token_embd.weight")?;
        if info.dims.len() != 2 {
            return Err(EngineError::BadTensor {
                name: info.name.clone(),
                expected: "a matrix".into(),
                got: format!("shape {}", shape_str(&info.dims)),
            });
        }
        Ok(info.n_rows())
    }

    /// Locates and checks every tensor the configuration calls for.
    pub fn load(file: &GgufFile, cfg: &ModelConfig) -> Result<Weights> {
        let (d, q, kv, ff) = (cfg.d_model, cfg.q_dim(), cfg.kv_dim(), cfg.ffn_dim);
        let tok_embd = mat(file, "token_embd.weight", cfg.vocab_size, d)?;
        let mut layers = Vec::with_capacity(cfg.n_layers);
        for i in 0..cfg.n_layers {
            let n = |s: &str| format!("blk.{i}.{s}");
            let qwen2 = cfg.arch == Arch::Qwen2;
            let qwen3 = cfg.arch == Arch::Qwen3;
            layers.push(LayerWeights {
                attn_norm: vector(file, &n("attn_norm.weight"), d)?,
                wq: mat(file, &n("attn_q.weight"), q, d)?,
                wk: mat(file, &n("attn_k.weight"), kv, d)?,
                wv: mat(file, &n("attn_v.weight"), kv, d)?,
                wo: mat(file, &n("attn_output.weight"), d, q)?,
                bq: if qwen2 {
                    Some(vector(file, &n("attn_q.bias"), q)?)
                } else {
                    optional_vector(file, &n("attn_q.bias"), q)?
                },
                bk: if qwen2 {
                    Some(vector(file, &n("attn_k.bias"), kv)?)
                } else {
                    optional_vector(file, &n("attn_k.bias"), kv)?
                },
                bv: if qwen2 {
                    Some(vector(file, &n("attn_v.bias"), kv)?)
                } else {
                    optional_vector(file, &n("attn_v.bias"), kv)?
                },
                q_norm: if qwen3 {
                    Some(vector(file, &n("attn_q_norm.weight"), cfg.head_dim)?)
                } else {
                    None
                },
                k_norm: if qwen3 {
                    Some(vector(file, &n("attn_k_norm.weight"), cfg.head_dim)?)
                } else {
                    None
                },
                ffn_norm: vector(file, &n("ffn_norm.weight"), d)?,
                w_gate: mat(file, &n("ffn_gate.weight"), ff, d)?,
                w_up: mat(file, &n("ffn_up.weight"), ff, d)?,
                w_down: mat(file, &n("ffn_down.weight"), d, ff)?,
            });
        }
        let output_norm = vector(file, "output_norm.weight", d)?;
        let output = match file.tensor("output.weight") {
            Some(_) => mat(file, "output.weight", cfg.vocab_size, d)?,
            None => tok_embd.clone(),
        };
        Ok(Weights {
            tok_embd,
            layers,
            output_norm,
            output,
        })
    }

    /// The bytes of memory-mapped weights (for reports and fit estimates).
    pub fn bytes(&self) -> u64 {
        let mut total = self.tok_embd.info.n_bytes;
        for l in &self.layers {
            for m in [&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down] {
                total += m.info.n_bytes;
            }
        }
        if self.output.name != self.tok_embd.name {
            total += self.output.info.n_bytes;
        }
        total
    }
}
