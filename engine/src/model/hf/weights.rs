//! The tensors of a Hugging Face MoE checkpoint, located by name, checked against
//! `config.json` and left in the memory map (FP8 scales and a few small tensors are copied
//! out in f32).

use kernels::{Fp8Matrix, GgmlType, QMatrix};

use super::config::{AttnKind, HfArch, HfConfig};
use crate::error::{EngineError, Result};
use crate::safetensors::{Checkpoint, Dtype, TensorRef};

/// A weight matrix `rows x cols` (a PyTorch `Linear` weight `[out, in]`).
#[derive(Debug, Clone)]
pub enum Linear {
    /// F32, F16 or BF16, multiplied by the quantized-matmul kernels.
    Dense {
        t: TensorRef,
        ty: GgmlType,
        rows: usize,
        cols: usize,
    },
    /// F8_E4M3 with one f32 scale per block (`weight_scale_inv`).
    Fp8 {
        t: TensorRef,
        rows: usize,
        cols: usize,
        block: [usize; 2],
        scales: Vec<f32>,
    },
}

/// How a matrix is borrowed for one product.
#[derive(Debug)]
pub enum LinearView<'a> {
    Dense(QMatrix<'a>),
    Fp8(Fp8Matrix<'a>),
}

impl Linear {
    pub fn rows(&self) -> usize {
        match self {
            Linear::Dense { rows, .. } | Linear::Fp8 { rows, .. } => *rows,
        }
    }

    pub fn cols(&self) -> usize {
        match self {
            Linear::Dense { cols, .. } | Linear::Fp8 { cols, .. } => *cols,
        }
    }

    pub fn view<'a>(&'a self, ck: &'a Checkpoint) -> Result<LinearView<'a>> {
        Ok(match self {
            Linear::Dense { t, ty, rows, cols } => {
                LinearView::Dense(QMatrix::new(*ty, *rows, *cols, ck.data(t))?)
            }
            Linear::Fp8 {
                t,
                rows,
                cols,
                block,
                scales,
            } => LinearView::Fp8(Fp8Matrix::new(
                *rows,
                *cols,
                block[0],
                block[1],
                ck.data(t),
                scales,
            )?),
        })
    }

    /// The whole matrix in f32 (small matrices the engine keeps dequantized).
    pub fn to_f32(&self, ck: &Checkpoint) -> Result<Vec<f32>> {
        let (rows, cols) = (self.rows(), self.cols());
        let mut out = vec![0f32; rows * cols];
        match self.view(ck)? {
            LinearView::Dense(m) => {
                for (r, dst) in out.chunks_exact_mut(cols).enumerate() {
                    kernels::dequantize_row(m.ty(), m.row(r), dst)?;
                }
            }
            LinearView::Fp8(m) => {
                for (r, dst) in out.chunks_exact_mut(cols).enumerate() {
                    m.dequantize_row(r, dst);
                }
            }
        }
        Ok(out)
    }
}

/// A SwiGLU feed-forward block: `down(silu(gate(x)) * up(x))`.
#[derive(Debug)]
pub struct Mlp {
    pub gate: Linear,
    pub up: Linear,
    pub down: Linear,
}

/// The attention weights of one layer.
#[derive(Debug)]
pub enum AttnWeights {
    Standard {
        q: Linear,
        k: Linear,
        v: Linear,
        o: Linear,
        bias: Option<[Vec<f32>; 3]>,
        /// Qwen3-MoE's per-head RMSNorm weights on Q and K.
        qk_norm: Option<[Vec<f32>; 2]>,
    },
    Mla {
        /// `q_a_proj` and `q_a_layernorm` when queries are low-rank.
        q_a: Option<(Linear, Vec<f32>)>,
        /// `q_b_proj`, or `q_proj` without a query rank.
        q_b: Linear,
        kv_a: Linear,
        kv_a_norm: Vec<f32>,
        /// `kv_b_proj` in f32, `n_heads x (nope + v) x kv_lora_rank`.
        kv_b: Vec<f32>,
        o: Linear,
    },
}

/// A mixture-of-experts block.
#[derive(Debug)]
pub struct MoeWeights {
    /// Router in f32, `n_experts x hidden` (transformers routes in f32).
    pub router: Vec<f32>,
    pub bias: Option<Vec<f32>>,
    pub experts: Vec<Mlp>,
    pub shared: Option<Mlp>,
    /// Qwen2-MoE's shared-expert gate in f32 (`hidden` values).
    pub shared_gate: Option<Vec<f32>>,
}

#[derive(Debug)]
pub enum FfnWeights {
    Dense(Mlp),
    Moe(MoeWeights),
}

#[derive(Debug)]
pub struct LayerWeights {
    pub attn_norm: Vec<f32>,
    pub attn: AttnWeights,
    pub ffn_norm: Vec<f32>,
    pub ffn: FfnWeights,
}

#[derive(Debug)]
pub struct HfWeights {
    pub embed: Linear,
    pub layers: Vec<LayerWeights>,
    pub norm: Vec<f32>,
    pub lm_head: Linear,
}

/// Looks tensors up in a checkpoint, with errors that name the tensor and its file.
struct Loader<'a> {
    ck: &'a Checkpoint,
    cfg: &'a HfConfig,
}

impl Loader<'_> {
    fn get(&self, name: &str) -> Result<&TensorRef> {
        self.ck.tensor(name).ok_or_else(|| EngineError::Checkpoint {
            path: self.ck.dir().to_path_buf(),
            problem: format!("no tensor `{name}` in any shard"),
        })
    }

    fn bad(&self, t: &TensorRef, expected: String) -> EngineError {
        EngineError::Checkpoint {
            path: self.ck.file_of(t).to_path_buf(),
            problem: format!(
                "tensor `{}`: expected {expected}, got {} {:?}",
                t.name,
                t.dtype.name(),
                t.shape
            ),
        }
    }

    fn linear(&self, name: &str, rows: usize, cols: usize) -> Result<Linear> {
        let t = self.get(name)?;
        if t.shape != [rows, cols] {
            return Err(self.bad(t, format!("shape [{rows}, {cols}]")));
        }
        let ty = match t.dtype {
            Dtype::F32 => GgmlType::F32,
            Dtype::F16 => GgmlType::F16,
            Dtype::BF16 => GgmlType::BF16,
            Dtype::F8E4M3 => return self.fp8(t, name, rows, cols),
            _ => return Err(self.bad(t, "F32, F16, BF16 or F8_E4M3".into())),
        };
        Ok(Linear::Dense {
            t: t.clone(),
            ty,
            rows,
            cols,
        })
    }

    fn fp8(&self, t: &TensorRef, name: &str, rows: usize, cols: usize) -> Result<Linear> {
        let block = self.cfg.fp8_block.unwrap_or([128, 128]);
        let scale_name = format!("{name}_scale_inv");
        let s = self
            .ck
            .tensor(&scale_name)
            .ok_or_else(|| EngineError::Checkpoint {
                path: self.ck.file_of(t).to_path_buf(),
                problem: format!("FP8 tensor `{name}` has no `{scale_name}`"),
            })?;
        let want = [rows.div_ceil(block[0]), cols.div_ceil(block[1])];
        if s.shape != want || s.dtype != Dtype::F32 && s.dtype != Dtype::BF16 {
            return Err(self.bad(s, format!("F32 or BF16 scales of shape {want:?}")));
        }
        let scales = self.floats(s)?;
        let lin = Linear::Fp8 {
            t: t.clone(),
            rows,
            cols,
            block,
            scales,
        };
        lin.view(self.ck)?;
        Ok(lin)
    }

    fn floats(&self, t: &TensorRef) -> Result<Vec<f32>> {
        let ty = match t.dtype {
            Dtype::F32 => GgmlType::F32,
            Dtype::F16 => GgmlType::F16,
            Dtype::BF16 => GgmlType::BF16,
            _ => return Err(self.bad(t, "F32, F16 or BF16".into())),
        };
        let mut out = vec![0f32; t.n_elements()];
        kernels::dequantize_row(ty, self.ck.data(t), &mut out)?;
        Ok(out)
    }

    fn vector(&self, name: &str, len: usize) -> Result<Vec<f32>> {
        let t = self.get(name)?;
        if t.shape != [len] {
            return Err(self.bad(t, format!("shape [{len}]")));
        }
        self.floats(t)
    }

    fn mlp(&self, prefix: &str, names: [&str; 3], hidden: usize, ff: usize) -> Result<Mlp> {
        Ok(Mlp {
            gate: self.linear(&format!("{prefix}.{}.weight", names[0]), ff, hidden)?,
            up: self.linear(&format!("{prefix}.{}.weight", names[1]), ff, hidden)?,
            down: self.linear(&format!("{prefix}.{}.weight", names[2]), hidden, ff)?,
        })
    }
}

impl HfWeights {
    /// Locates and checks every tensor `cfg` calls for.
    pub fn load(ck: &Checkpoint, cfg: &HfConfig) -> Result<HfWeights> {
        let l = Loader { ck, cfg };
        let (d, heads) = (cfg.hidden, cfg.n_heads);
        let embed = l.linear("model.embed_tokens.weight", cfg.vocab_size, d)?;
        if matches!(embed, Linear::Fp8 { .. }) {
            return Err(EngineError::Checkpoint {
                path: ck.dir().to_path_buf(),
                problem: "FP8 token embeddings are not supported".into(),
            });
        }
        // Grown as the layers' tensors are found, never sized from the config alone.
        let mut layers = Vec::new();
        for i in 0..cfg.n_layers {
            let p = format!("model.layers.{i}");
            let attn = match cfg.attn {
                AttnKind::Standard {
                    n_kv_heads,
                    head_dim,
                    qkv_bias,
                    qk_norm,
                } => {
                    let (qd, kvd) = (heads * head_dim, n_kv_heads * head_dim);
                    let a = format!("{p}.self_attn");
                    AttnWeights::Standard {
                        q: l.linear(&format!("{a}.q_proj.weight"), qd, d)?,
                        k: l.linear(&format!("{a}.k_proj.weight"), kvd, d)?,
                        v: l.linear(&format!("{a}.v_proj.weight"), kvd, d)?,
                        o: l.linear(&format!("{a}.o_proj.weight"), d, qd)?,
                        bias: if qkv_bias {
                            Some([
                                l.vector(&format!("{a}.q_proj.bias"), qd)?,
                                l.vector(&format!("{a}.k_proj.bias"), kvd)?,
                                l.vector(&format!("{a}.v_proj.bias"), kvd)?,
                            ])
                        } else {
                            None
                        },
                        qk_norm: if qk_norm {
                            Some([
                                l.vector(&format!("{a}.q_norm.weight"), head_dim)?,
                                l.vector(&format!("{a}.k_norm.weight"), head_dim)?,
                            ])
                        } else {
                            None
                        },
                    }
                }
                AttnKind::Mla {
                    q_lora_rank,
                    kv_lora_rank,
                    qk_nope_dim,
                    qk_rope_dim,
                    v_head_dim,
                } => {
                    let a = format!("{p}.self_attn");
                    let qd = heads * (qk_nope_dim + qk_rope_dim);
                    let (q_a, q_b) = match q_lora_rank {
                        Some(r) => (
                            Some((
                                l.linear(&format!("{a}.q_a_proj.weight"), r, d)?,
                                l.vector(&format!("{a}.q_a_layernorm.weight"), r)?,
                            )),
                            l.linear(&format!("{a}.q_b_proj.weight"), qd, r)?,
                        ),
                        None => (None, l.linear(&format!("{a}.q_proj.weight"), qd, d)?),
                    };
                    let kv_b = l.linear(
                        &format!("{a}.kv_b_proj.weight"),
                        heads * (qk_nope_dim + v_head_dim),
                        kv_lora_rank,
                    )?;
                    AttnWeights::Mla {
                        q_a,
                        q_b,
                        kv_a: l.linear(
                            &format!("{a}.kv_a_proj_with_mqa.weight"),
                            kv_lora_rank + qk_rope_dim,
                            d,
                        )?,
                        kv_a_norm: l.vector(&format!("{a}.kv_a_layernorm.weight"), kv_lora_rank)?,
                        kv_b: kv_b.to_f32(ck)?,
                        o: l.linear(&format!("{a}.o_proj.weight"), d, heads * v_head_dim)?,
                    }
                }
            };
            let ffn = if cfg.moe.moe_layers[i] {
                FfnWeights::Moe(moe_weights(&l, &p)?)
            } else {
                FfnWeights::Dense(l.mlp(
                    &format!("{p}.mlp"),
                    ["gate_proj", "up_proj", "down_proj"],
                    d,
                    cfg.intermediate,
                )?)
            };
            layers.push(LayerWeights {
                attn_norm: l.vector(&format!("{p}.input_layernorm.weight"), d)?,
                attn,
                ffn_norm: l.vector(&format!("{p}.post_attention_layernorm.weight"), d)?,
                ffn,
            });
        }
        let lm_head = match ck.tensor("lm_head.weight") {
            Some(_) => l.linear("lm_head.weight", cfg.vocab_size, d)?,
            None if cfg.tie_word_embeddings => embed.clone(),
            None => {
                return Err(EngineError::Checkpoint {
                    path: ck.dir().to_path_buf(),
                    problem: "no tensor `lm_head.weight`, and tie_word_embeddings is false".into(),
                });
            }
        };
        Ok(HfWeights {
            embed,
            layers,
            norm: l.vector("model.norm.weight", d)?,
            lm_head,
        })
    }
}

fn moe_weights(l: &Loader<'_>, p: &str) -> Result<MoeWeights> {
    let cfg = l.cfg;
    let (d, m) = (cfg.hidden, &cfg.moe);
    let mixtral = cfg.arch == HfArch::Mixtral;
    let block = if mixtral {
        format!("{p}.block_sparse_moe")
    } else {
        format!("{p}.mlp")
    };
    let names = if mixtral {
        ["w1", "w3", "w2"]
    } else {
        ["gate_proj", "up_proj", "down_proj"]
    };
    let router = l
        .linear(&format!("{block}.gate.weight"), m.n_experts, d)?
        .to_f32(l.ck)?;
    let bias = if cfg.arch == HfArch::DeepseekV3 {
        Some(l.vector(
            &format!("{block}.gate.e_score_correction_bias"),
            m.n_experts,
        )?)
    } else {
        None
    };
    let experts = (0..m.n_experts)
        .map(|e| l.mlp(&format!("{block}.experts.{e}"), names, d, m.expert_ffn))
        .collect::<Result<Vec<_>>>()?;
    let (shared, shared_gate) = match cfg.arch {
        HfArch::Qwen2Moe if m.shared_ffn > 0 => (
            Some(l.mlp(&format!("{block}.shared_expert"), names, d, m.shared_ffn)?),
            Some(
                l.linear(&format!("{block}.shared_expert_gate.weight"), 1, d)?
                    .to_f32(l.ck)?,
            ),
        ),
        HfArch::DeepseekV2 | HfArch::DeepseekV3 if m.shared_ffn > 0 => (
            Some(l.mlp(&format!("{block}.shared_experts"), names, d, m.shared_ffn)?),
            None,
        ),
        _ => (None, None),
    };
    Ok(MoeWeights {
        router,
        bias,
        experts,
        shared,
        shared_gate,
    })
}
