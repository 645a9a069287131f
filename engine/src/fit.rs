//! A model's memory footprint, for fit estimates before deploying: the weights every rank
//! holds, the routed experts spread over the ranks, and the cache per token.
//!
//! Two sources: the files of a loaded model (every tensor's real size), or a checkpoint's
//! `config.json` alone (parameter counts by architecture, in the precision the config
//! names), so a 700 GB model can be sized before a byte of it is copied.

use serde::Serialize;

use crate::model::Model;
use crate::model::hf::config::{AttnKind, HfConfig, Scoring};

/// Where a model's bytes go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Footprint {
    /// Weights every rank holds: embeddings, attention, dense and shared feed-forward
    /// layers, routers, norms, output head.
    pub replicated_bytes: u64,
    /// The routed experts' weights, spread over the ranks.
    pub expert_bytes: u64,
    /// Routed experts per MoE layer (0 for a dense model).
    pub n_experts: u64,
    /// Values the cache keeps per token over all layers (keys and values, or MLA's latent).
    pub cache_values_per_token: u64,
    /// Bytes per cached value in the CPU engine: f16 for GGUF models, f32 rows for
    /// checkpoints.
    pub cpu_cache_value_bytes: u64,
    /// Bytes of activations per token of a step (hidden states, attention and the widest
    /// feed-forward intermediate, in 16-bit).
    pub activation_bytes_per_token: u64,
    pub parameters: u64,
}

impl Footprint {
    /// From a loaded model's tensors.
    pub fn of_model(model: &Model) -> Footprint {
        let c = &model.config;
        let mut f = Footprint {
            replicated_bytes: 0,
            expert_bytes: 0,
            n_experts: 0,
            cache_values_per_token: 0,
            cpu_cache_value_bytes: 4,
            activation_bytes_per_token: 0,
            parameters: 0,
        };
        if let Some(file) = model.file() {
            for t in file.tensors() {
                f.replicated_bytes += t.n_bytes;
                f.parameters += t.n_elements();
            }
            f.cache_values_per_token = (c.n_layers * c.kv_dim() * 2) as u64;
            f.cpu_cache_value_bytes = 2;
            f.activation_bytes_per_token = activation_bytes(c.d_model, c.ffn_dim);
        }
        if let Some(hf) = model.hf() {
            let ck = hf.checkpoint();
            for name in ck.names() {
                let Some(t) = ck.tensor(name) else { continue };
                let bytes = t.n_bytes() as u64;
                if name.contains(".mlp.experts.") || name.contains(".block_sparse_moe.experts.") {
                    f.expert_bytes += bytes;
                } else {
                    f.replicated_bytes += bytes;
                }
                if !name.ends_with("_scale_inv") {
                    f.parameters += t.n_elements() as u64;
                }
            }
            let cfg = &hf.cfg;
            f.n_experts = cfg.moe.n_experts as u64;
            f.cache_values_per_token = (cfg.n_layers * cfg.cache_width()) as u64;
            f.activation_bytes_per_token = activation_bytes(cfg.hidden, ffn_width(cfg));
        }
        f
    }

    /// From `config.json` alone: parameters counted by architecture (the checkpoint's own
    /// layout, without multi-token-prediction layers), weights in BF16 or, with an FP8
    /// `quantization_config`, the layers' projections in FP8 with one f32 scale per block
    /// and the rest (embeddings, head, norms, routers) in BF16.
    pub fn of_config(cfg: &HfConfig) -> Footprint {
        let (h, v) = (cfg.hidden as u64, cfg.vocab_size as u64);
        let bytes = Bytes { fp8: cfg.fp8_block };
        let mut replicated = 0u64;
        let mut experts = 0u64;
        let mut params = 0u64;
        // [rows, cols] projections; `out` receives their bytes.
        let add = |mats: &[(u64, u64)], out: &mut u64, params: &mut u64| {
            for &(r, c) in mats {
                *out += bytes.matrix(r, c);
                *params += r * c;
            }
        };
        for layer in 0..cfg.n_layers {
            let mut attn: Vec<(u64, u64)> = Vec::new();
            let mut norms = 2 * h;
            match cfg.attn {
                AttnKind::Standard {
                    n_kv_heads,
                    head_dim,
                    qkv_bias,
                    qk_norm,
                } => {
                    let (q, kv) = (
                        (cfg.n_heads * head_dim) as u64,
                        (n_kv_heads * head_dim) as u64,
                    );
                    attn.extend([(q, h), (kv, h), (kv, h), (h, q)]);
                    // Biases and Qwen3's per-head norms are small vectors, kept in BF16.
                    if qkv_bias {
                        norms += q + 2 * kv;
                    }
                    if qk_norm {
                        norms += 2 * head_dim as u64;
                    }
                }
                AttnKind::Mla {
                    q_lora_rank,
                    kv_lora_rank,
                    qk_nope_dim,
                    qk_rope_dim,
                    v_head_dim,
                } => {
                    let heads = cfg.n_heads as u64;
                    let qk = (qk_nope_dim + qk_rope_dim) as u64;
                    match q_lora_rank {
                        Some(r) => {
                            attn.extend([(r as u64, h), (heads * qk, r as u64)]);
                            norms += r as u64;
                        }
                        None => attn.push((heads * qk, h)),
                    }
                    let kvl = kv_lora_rank as u64;
                    attn.extend([
                        (kvl + qk_rope_dim as u64, h),
                        (heads * (qk_nope_dim + v_head_dim) as u64, kvl),
                        (h, heads * v_head_dim as u64),
                    ]);
                    norms += kvl;
                }
            }
            add(&attn, &mut replicated, &mut params);
            replicated += 2 * norms;
            params += norms;
            let moe = &cfg.moe;
            if moe.moe_layers.get(layer).copied().unwrap_or(false) {
                let e = moe.expert_ffn as u64;
                for _ in 0..moe.n_experts {
                    add(&[(e, h), (e, h), (h, e)], &mut experts, &mut params);
                }
                if moe.shared_ffn > 0 {
                    let s = moe.shared_ffn as u64;
                    add(&[(s, h), (s, h), (h, s)], &mut replicated, &mut params);
                }
                // The router in BF16, DeepSeek-V3's f32 correction bias, Qwen2-MoE's
                // shared-expert gate.
                let n = moe.n_experts as u64;
                replicated += 2 * n * h;
                params += n * h;
                if moe.scoring == Scoring::Sigmoid {
                    replicated += 4 * n;
                    params += n;
                }
                if moe.shared_gate {
                    replicated += 2 * h;
                    params += h;
                }
            } else {
                let i = cfg.intermediate as u64;
                add(&[(i, h), (i, h), (h, i)], &mut replicated, &mut params);
            }
        }
        let embeddings = if cfg.tie_word_embeddings {
            v * h
        } else {
            2 * v * h
        };
        replicated += 2 * (embeddings + h);
        params += embeddings + h;
        Footprint {
            replicated_bytes: replicated,
            expert_bytes: experts,
            n_experts: cfg.moe.n_experts as u64,
            cache_values_per_token: (cfg.n_layers * cfg.cache_width()) as u64,
            cpu_cache_value_bytes: 4,
            activation_bytes_per_token: activation_bytes(cfg.hidden, ffn_width(cfg)),
            parameters: params,
        }
    }

    pub fn weight_bytes(&self) -> u64 {
        self.replicated_bytes + self.expert_bytes
    }
}

/// The widest feed-forward intermediate a token passes through.
fn ffn_width(cfg: &HfConfig) -> usize {
    let moe = &cfg.moe;
    cfg.intermediate
        .max(moe.top_k * moe.expert_ffn + moe.shared_ffn)
}

/// 16-bit activations per token of a step: the residual, the normed input, attention's
/// input and output and the query (4 x hidden), and gate, up and their product at the
/// widest feed-forward (3 x width).
fn activation_bytes(hidden: usize, ffn: usize) -> u64 {
    2 * (4 * hidden as u64 + 3 * ffn as u64)
}

/// How a checkpoint stores its projections.
struct Bytes {
    fp8: Option<[usize; 2]>,
}

impl Bytes {
    /// A `[rows, cols]` projection: BF16, or FP8 plus one f32 scale per block.
    fn matrix(&self, rows: u64, cols: u64) -> u64 {
        match self.fp8 {
            None => 2 * rows * cols,
            Some([br, bc]) => rows * cols + 4 * rows.div_ceil(br as u64) * cols.div_ceil(bc as u64),
        }
    }
}
