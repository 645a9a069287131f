//! Hyperparameters of a Llama-family model, read from GGUF metadata and checked.
//!
//! Keys follow llama.cpp's naming (`{arch}.block_count`, `{arch}.attention.head_count`, ...).
//! Everything the forward pass relies on is validated here (divisibility, ranges, supported
//! RoPE scaling), so the forward pass itself never re-checks.

use kernels::ops::{RopeParams, RopeStyle};

use crate::error::{EngineError, Result};
use crate::gguf::GgufFile;

/// The dense Llama-style architectures the engine runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// Llama 1/2/3, SmolLM, Mistral-style dense models (`llama`).
    Llama,
    /// Qwen2 / Qwen2.5 dense (`qwen2`): biases on Q, K, V; NeoX RoPE.
    Qwen2,
    /// Qwen3 dense (`qwen3`): per-head RMSNorm on Q and K; NeoX RoPE.
    Qwen3,
    /// A mixture-of-experts model from a Hugging Face checkpoint.
    Hf(super::hf::HfArch),
}

/// Names accepted in `general.architecture`, for error messages.
pub const SUPPORTED_ARCHS: &str = "llama, qwen2, qwen3";

impl Arch {
    fn from_name(name: &str) -> Option<Arch> {
        match name {
            "llama" => Some(Arch::Llama),
            "qwen2" => Some(Arch::Qwen2),
            "qwen3" => Some(Arch::Qwen3),
            _ => None,
        }
    }

    /// The metadata key prefix and `general.architecture` value.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
            Arch::Hf(a) => a.name(),
        }
    }

    /// llama.cpp's RoPE type for the architecture (`llama_model_rope_type`).
    fn rope_style(self) -> RopeStyle {
        match self {
            Arch::Llama => RopeStyle::Normal,
            Arch::Qwen2 | Arch::Qwen3 | Arch::Hf(_) => RopeStyle::Neox,
        }
    }
}

/// Validated hyperparameters.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub arch: Arch,
    pub n_layers: usize,
    /// Width of the residual stream.
    pub d_model: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    /// Size of each query/key/value head (`attention.key_length`, default d_model / n_heads).
    pub head_dim: usize,
    /// Width of the SwiGLU hidden layer.
    pub ffn_dim: usize,
    pub vocab_size: usize,
    /// Context length the model was trained for; the engine's default limit.
    pub n_ctx_train: usize,
    pub rms_eps: f32,
    pub rope: RopeParams,
}

impl ModelConfig {
    /// Reads and checks the hyperparameters of `file`. `vocab_size` comes from the token
    /// embedding's shape, which the caller knows.
    pub fn from_gguf(file: &GgufFile, vocab_size: usize) -> Result<ModelConfig> {
        let arch_name = file
            .get_str("general.architecture")?
            .ok_or_else(|| EngineError::hyper("general.architecture", "missing"))?;
        let arch =
            Arch::from_name(arch_name).ok_or_else(|| EngineError::UnsupportedArchitecture {
                arch: arch_name.to_string(),
                supported: SUPPORTED_ARCHS,
            })?;
        let key = |k: &str| format!("{}.{k}", arch.name());
        let required = |k: &str| -> Result<usize> {
            let full = key(k);
            match file.get_usize(&full)? {
                Some(0) => Err(EngineError::hyper(full, "must be positive, got 0")),
                Some(v) => Ok(v),
                None => Err(EngineError::hyper(full, "missing")),
            }
        };
        let n_layers = required("block_count")?;
        let d_model = required("embedding_length")?;
        let ffn_dim = required("feed_forward_length")?;
        let n_heads = required("attention.head_count")?;
        let n_kv_heads = file
            .get_usize(&key("attention.head_count_kv"))?
            .unwrap_or(n_heads);
        let n_ctx_train = required("context_length")?;
        if n_kv_heads == 0 || !n_heads.is_multiple_of(n_kv_heads) {
            return Err(EngineError::hyper(
                key("attention.head_count_kv"),
                format!("must divide attention.head_count ({n_heads}), got {n_kv_heads}"),
            ));
        }
        let default_head_dim = d_model / n_heads;
        let head_dim = file
            .get_usize(&key("attention.key_length"))?
            .unwrap_or(default_head_dim);
        let v_dim = file
            .get_usize(&key("attention.value_length"))?
            .unwrap_or(head_dim);
        if head_dim == 0 || !head_dim.is_multiple_of(2) || v_dim != head_dim {
            return Err(EngineError::hyper(
                key("attention.key_length"),
                format!(
                    "need an even head size equal to value_length, got key {head_dim} / value {v_dim}"
                ),
            ));
        }
        let rms_eps = file
            .get_f32(&key("attention.layer_norm_rms_epsilon"))?
            .unwrap_or(1e-5);
        if !(rms_eps > 0.0 && rms_eps < 1.0) {
            return Err(EngineError::hyper(
                key("attention.layer_norm_rms_epsilon"),
                format!("must be in (0, 1), got {rms_eps}"),
            ));
        }
        let rope = rope_params(file, arch, head_dim)?;
        Ok(ModelConfig {
            arch,
            n_layers,
            d_model,
            n_heads,
            n_kv_heads,
            head_dim,
            ffn_dim,
            vocab_size,
            n_ctx_train,
            rms_eps,
            rope,
        })
    }

    /// The general shape of a checkpoint's configuration (the forward pass reads the
    /// checkpoint's own [`HfConfig`](super::hf::HfConfig)).
    pub fn from_hf(c: &super::hf::HfConfig) -> ModelConfig {
        use super::hf::config::AttnKind;
        let (n_kv_heads, head_dim) = match c.attn {
            AttnKind::Standard {
                n_kv_heads,
                head_dim,
                ..
            } => (n_kv_heads, head_dim),
            AttnKind::Mla {
                qk_nope_dim,
                qk_rope_dim,
                ..
            } => (c.n_heads, qk_nope_dim + qk_rope_dim),
        };
        ModelConfig {
            arch: Arch::Hf(c.arch),
            n_layers: c.n_layers,
            d_model: c.hidden,
            n_heads: c.n_heads,
            n_kv_heads,
            head_dim,
            ffn_dim: c.intermediate,
            vocab_size: c.vocab_size,
            n_ctx_train: c.max_position,
            rms_eps: c.rms_eps,
            rope: RopeParams {
                n_rot: c.rope.dim,
                freq_base: c.rope.theta as f32,
                freq_scale: (1.0 / c.rope.linear) as f32,
                freq_factors: None,
                style: if c.rope.interleave {
                    RopeStyle::Normal
                } else {
                    RopeStyle::Neox
                },
            },
        }
    }

    pub fn q_dim(&self) -> usize {
        self.n_heads * self.head_dim
    }

    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }
}

fn rope_params(file: &GgufFile, arch: Arch, head_dim: usize) -> Result<RopeParams> {
    let key = |k: &str| format!("{}.{k}", arch.name());
    let n_rot = file
        .get_usize(&key("rope.dimension_count"))?
        .unwrap_or(head_dim);
    if n_rot == 0 || !n_rot.is_multiple_of(2) || n_rot > head_dim {
        return Err(EngineError::hyper(
            key("rope.dimension_count"),
            format!("must be even and <= {head_dim}, got {n_rot}"),
        ));
    }
    let freq_base = file.get_f32(&key("rope.freq_base"))?.unwrap_or(10_000.0);
    if !(freq_base.is_finite() && freq_base > 1.0) {
        return Err(EngineError::hyper(
            key("rope.freq_base"),
            format!("must be > 1, got {freq_base}"),
        ));
    }
    let scaling = file.get_str(&key("rope.scaling.type"))?.unwrap_or("none");
    let factor = file.get_f32(&key("rope.scaling.factor"))?.unwrap_or(0.0);
    let freq_scale = match scaling {
        "none" => 1.0,
        "linear" if factor > 0.0 && factor.is_finite() => 1.0 / factor,
        "linear" => {
            return Err(EngineError::hyper(
                key("rope.scaling.factor"),
                format!("must be positive, got {factor}"),
            ));
        }
        other => {
            return Err(EngineError::hyper(
                key("rope.scaling.type"),
                format!("`{other}` is not supported (none, linear)"),
            ));
        }
    };
    Ok(RopeParams {
        n_rot,
        freq_base,
        freq_scale,
        freq_factors: None,
        style: arch.rope_style(),
    })
}
