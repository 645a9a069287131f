//! `config.json` of a Hugging Face mixture-of-experts checkpoint, parsed into a typed,
//! checked configuration.
//!
//! Both spellings found in the wild are read: transformers 5 writes RoPE settings under
//! `rope_parameters` and Qwen3-MoE's expert count as `num_local_experts`; older checkpoints
//! (most published ones) have a top-level `rope_theta`, `rope_scaling` with `type` or
//! `rope_type`, and `num_experts`.

use std::path::Path;

use serde_json::Value;

use crate::error::{EngineError, Result};

/// The architectures read from Hugging Face checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HfArch {
    /// `Qwen3MoeForCausalLM`: softmax top-k, per-head Q/K RMSNorm.
    Qwen3Moe,
    /// `Qwen2MoeForCausalLM`: Q/K/V biases, a shared expert behind a sigmoid gate.
    Qwen2Moe,
    /// `MixtralForCausalLM`: softmax top-k, always renormalised.
    Mixtral,
    /// `DeepseekV2ForCausalLM`: MLA, softmax scoring, greedy or group-limited top-k.
    DeepseekV2,
    /// `DeepseekV3ForCausalLM`: MLA, sigmoid scoring with correction bias, group-limited
    /// top-k, routed scaling, FP8 weights with block scales.
    DeepseekV3,
}

/// Names accepted in `architectures`, for error messages.
pub const SUPPORTED_HF_ARCHS: &str = "Qwen3MoeForCausalLM, Qwen2MoeForCausalLM, MixtralForCausalLM, DeepseekV2ForCausalLM, DeepseekV3ForCausalLM";

impl HfArch {
    fn from_name(name: &str) -> Option<HfArch> {
        Some(match name {
            "Qwen3MoeForCausalLM" => HfArch::Qwen3Moe,
            "Qwen2MoeForCausalLM" => HfArch::Qwen2Moe,
            "MixtralForCausalLM" => HfArch::Mixtral,
            "DeepseekV2ForCausalLM" => HfArch::DeepseekV2,
            "DeepseekV3ForCausalLM" => HfArch::DeepseekV3,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            HfArch::Qwen3Moe => "Qwen3MoeForCausalLM",
            HfArch::Qwen2Moe => "Qwen2MoeForCausalLM",
            HfArch::Mixtral => "MixtralForCausalLM",
            HfArch::DeepseekV2 => "DeepseekV2ForCausalLM",
            HfArch::DeepseekV3 => "DeepseekV3ForCausalLM",
        }
    }

    pub fn is_deepseek(self) -> bool {
        matches!(self, HfArch::DeepseekV2 | HfArch::DeepseekV3)
    }
}

/// YaRN context extension (DeepSeek-V3's `rope_scaling`).
#[derive(Debug, Clone, PartialEq)]
pub struct Yarn {
    pub factor: f64,
    pub original_max_position: usize,
    pub beta_fast: f64,
    pub beta_slow: f64,
    pub mscale: f64,
    pub mscale_all_dim: f64,
    /// Explicit `attention_factor`, when the config gives one.
    pub attention_factor: Option<f64>,
    pub truncate: bool,
}

/// Rotary embedding settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Rope {
    pub theta: f64,
    /// Rotated dimensions per head.
    pub dim: usize,
    /// Adjacent pairs (DeepSeek's `rope_interleave`) rather than split halves.
    pub interleave: bool,
    pub yarn: Option<Yarn>,
    /// Linear position scaling factor (`rope_type = "linear"`), 1 otherwise.
    pub linear: f64,
}

/// How attention is laid out.
#[derive(Debug, Clone, PartialEq)]
pub enum AttnKind {
    /// Grouped-query attention over full keys and values.
    Standard {
        n_kv_heads: usize,
        head_dim: usize,
        qkv_bias: bool,
        /// Qwen3's per-head RMSNorm on Q and K.
        qk_norm: bool,
    },
    /// Multi-head latent attention: the cache holds `kv_lora_rank + qk_rope_dim` per token.
    Mla {
        q_lora_rank: Option<usize>,
        kv_lora_rank: usize,
        qk_nope_dim: usize,
        qk_rope_dim: usize,
        v_head_dim: usize,
    },
}

/// How router logits become expert weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scoring {
    Softmax,
    /// Sigmoid scores; the choice adds `e_score_correction_bias`, the weights do not.
    Sigmoid,
}

/// How the top-k experts are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopK {
    /// Over all experts.
    Greedy,
    /// DeepSeek-V2's `group_limited_greedy`: the `topk_group` groups with the highest
    /// single score, then top-k within them.
    GroupMax { n_group: usize, topk_group: usize },
    /// DeepSeek-V3's `noaux_tc`: groups ranked by the sum of their two best (biased)
    /// scores; masked experts score 0.
    GroupTop2Sum { n_group: usize, topk_group: usize },
}

/// The mixture-of-experts feed-forward layers.
#[derive(Debug, Clone, PartialEq)]
pub struct MoeConfig {
    pub n_experts: usize,
    pub top_k: usize,
    /// Hidden width of each routed expert.
    pub expert_ffn: usize,
    pub scoring: Scoring,
    pub topk: TopK,
    /// Renormalise the chosen weights to sum to 1.
    pub norm_topk: bool,
    /// Multiplies the chosen weights (DeepSeek); 1 otherwise.
    pub routed_scaling: f32,
    /// Hidden width of the shared expert(s) together (0: none).
    pub shared_ffn: usize,
    /// Qwen2-MoE's sigmoid gate on the shared expert.
    pub shared_gate: bool,
    /// Layers that are MoE.
    pub moe_layers: Vec<bool>,
}

impl MoeConfig {
    /// Expert groups of group-limited routing (DeepSeek's `n_group`); 1 otherwise.
    pub fn n_group(&self) -> usize {
        match self.topk {
            TopK::GroupMax { n_group, .. } | TopK::GroupTop2Sum { n_group, .. } => n_group,
            TopK::Greedy => 1,
        }
    }
}

/// A checked Hugging Face MoE configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct HfConfig {
    pub arch: HfArch,
    pub vocab_size: usize,
    pub hidden: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    /// Width of the dense feed-forward layers.
    pub intermediate: usize,
    pub rms_eps: f32,
    pub max_position: usize,
    pub tie_word_embeddings: bool,
    pub attn: AttnKind,
    pub rope: Rope,
    pub moe: MoeConfig,
    /// FP8 block size `[rows, cols]` when `quantization_config` says fp8.
    pub fp8_block: Option<[usize; 2]>,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
}

/// Reads typed values out of the config, naming the key in errors.
struct Keys<'a> {
    doc: &'a Value,
}

impl Keys<'_> {
    fn get(&self, key: &str) -> Option<&Value> {
        self.doc.get(key).filter(|v| !v.is_null())
    }

    fn usize_opt(&self, key: &str) -> Result<Option<usize>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|v| usize::try_from(v).ok())
                .map(Some)
                .ok_or_else(|| EngineError::hyper(key, format!("expected a count, got {v}"))),
        }
    }

    fn usize(&self, key: &str) -> Result<usize> {
        match self.usize_opt(key)? {
            Some(0) => Err(EngineError::hyper(key, "must be positive, got 0")),
            Some(v) => Ok(v),
            None => Err(EngineError::hyper(key, "missing")),
        }
    }

    fn f64_opt(&self, key: &str) -> Result<Option<f64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| EngineError::hyper(key, format!("expected a number, got {v}"))),
        }
    }

    fn bool_or(&self, key: &str, default: bool) -> Result<bool> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| EngineError::hyper(key, format!("expected true or false, got {v}"))),
        }
    }

    fn str_opt(&self, key: &str) -> Result<Option<&str>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .map(Some)
                .ok_or_else(|| EngineError::hyper(key, format!("expected a string, got {v}"))),
        }
    }

    /// A token id or a list of them.
    fn ids(&self, key: &str) -> Result<Vec<u32>> {
        let one = |v: &Value| v.as_u64().and_then(|v| u32::try_from(v).ok());
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(Value::Array(a)) => a
                .iter()
                .map(one)
                .collect::<Option<_>>()
                .ok_or_else(|| EngineError::hyper(key, "expected token ids")),
            Some(v) => one(v)
                .map(|id| vec![id])
                .ok_or_else(|| EngineError::hyper(key, format!("expected a token id, got {v}"))),
        }
    }
}

impl HfConfig {
    /// Reads and checks `dir/config.json`.
    pub fn load(dir: &Path) -> Result<HfConfig> {
        let path = dir.join("config.json");
        let doc = crate::safetensors::read_json(&path)?;
        HfConfig::parse(&doc).map_err(|e| match e {
            EngineError::BadHyperparameter { key, problem } => EngineError::Checkpoint {
                path,
                problem: format!("`{key}`: {problem}"),
            },
            other => other,
        })
    }

    /// Checks a parsed `config.json`.
    pub fn parse(doc: &Value) -> Result<HfConfig> {
        let k = Keys { doc };
        let arch_name = match k.get("architectures") {
            Some(Value::Array(a)) => a.first().and_then(Value::as_str).unwrap_or(""),
            _ => "",
        };
        let arch =
            HfArch::from_name(arch_name).ok_or_else(|| EngineError::UnsupportedArchitecture {
                arch: if arch_name.is_empty() {
                    "(no `architectures` in config.json)".to_string()
                } else {
                    arch_name.to_string()
                },
                supported: SUPPORTED_HF_ARCHS,
            })?;
        let vocab_size = k.usize("vocab_size")?;
        let hidden = k.usize("hidden_size")?;
        let n_layers = k.usize("num_hidden_layers")?;
        let n_heads = k.usize("num_attention_heads")?;
        let intermediate = k.usize("intermediate_size")?;
        let rms_eps = k.f64_opt("rms_norm_eps")?.unwrap_or(1e-6);
        if !(rms_eps > 0.0 && rms_eps < 1.0) {
            return Err(EngineError::hyper(
                "rms_norm_eps",
                format!("must be in (0, 1), got {rms_eps}"),
            ));
        }
        let max_position = k
            .usize_opt("max_position_embeddings")?
            .unwrap_or(4096)
            .max(1);
        // Sizes allocations are made from: bounded here, far above any real model, so a
        // hostile config.json is refused before anything is sized from it.
        for (key, v, max) in [
            ("vocab_size", vocab_size, 1 << 24),
            ("hidden_size", hidden, 1 << 18),
            ("num_hidden_layers", n_layers, 1 << 12),
            ("num_attention_heads", n_heads, 1 << 12),
            ("intermediate_size", intermediate, 1 << 20),
            ("max_position_embeddings", max_position, 1 << 24),
        ] {
            if !(1..=max).contains(&v) {
                return Err(EngineError::hyper(
                    key,
                    format!("must be between 1 and {max}, got {v}"),
                ));
            }
        }
        if let Some(act) = k.str_opt("hidden_act")?
            && act != "silu"
        {
            return Err(EngineError::hyper(
                "hidden_act",
                format!("only silu is supported, got {act}"),
            ));
        }

        let attn = if arch.is_deepseek() {
            let q_lora_rank = k.usize_opt("q_lora_rank")?.filter(|r| *r > 0);
            let a = AttnKind::Mla {
                q_lora_rank,
                kv_lora_rank: k.usize("kv_lora_rank")?,
                qk_nope_dim: k.usize("qk_nope_head_dim")?,
                qk_rope_dim: k.usize("qk_rope_head_dim")?,
                v_head_dim: k.usize("v_head_dim")?,
            };
            if let AttnKind::Mla { qk_rope_dim, .. } = a
                && qk_rope_dim % 2 != 0
            {
                return Err(EngineError::hyper("qk_rope_head_dim", "must be even"));
            }
            a
        } else {
            let n_kv_heads = k.usize_opt("num_key_value_heads")?.unwrap_or(n_heads);
            if n_kv_heads == 0 || n_heads % n_kv_heads != 0 {
                return Err(EngineError::hyper(
                    "num_key_value_heads",
                    format!("must divide num_attention_heads ({n_heads}), got {n_kv_heads}"),
                ));
            }
            let head_dim = match k.usize_opt("head_dim")? {
                Some(h) if h > 0 => h,
                _ if hidden % n_heads == 0 => hidden / n_heads,
                _ => {
                    return Err(EngineError::hyper(
                        "head_dim",
                        "missing, and hidden_size is not a multiple of num_attention_heads",
                    ));
                }
            };
            if head_dim % 2 != 0 {
                return Err(EngineError::hyper(
                    "head_dim",
                    format!("must be even, got {head_dim}"),
                ));
            }
            AttnKind::Standard {
                n_kv_heads,
                head_dim,
                qkv_bias: match arch {
                    HfArch::Qwen2Moe => k.bool_or("qkv_bias", true)?,
                    _ => k.bool_or("attention_bias", false)?,
                },
                qk_norm: arch == HfArch::Qwen3Moe,
            }
        };
        let attn_dims: Vec<(&str, usize)> = match &attn {
            AttnKind::Mla {
                q_lora_rank,
                kv_lora_rank,
                qk_nope_dim,
                qk_rope_dim,
                v_head_dim,
            } => vec![
                ("q_lora_rank", q_lora_rank.unwrap_or(1)),
                ("kv_lora_rank", *kv_lora_rank),
                ("qk_nope_head_dim", *qk_nope_dim),
                ("qk_rope_head_dim", *qk_rope_dim),
                ("v_head_dim", *v_head_dim),
            ],
            AttnKind::Standard {
                n_kv_heads,
                head_dim,
                ..
            } => vec![
                ("num_key_value_heads", *n_kv_heads),
                ("head_dim", *head_dim),
            ],
        };
        for (key, v) in attn_dims {
            if !(1..=1 << 16).contains(&v) {
                return Err(EngineError::hyper(
                    key,
                    format!("must be between 1 and 65536, got {v}"),
                ));
            }
        }
        let rope = rope(&k, arch, &attn, max_position)?;
        let moe = moe(&k, arch, n_layers)?;
        let fp8_block = fp8_block(&k)?;
        if arch == HfArch::Mixtral || arch == HfArch::Qwen3Moe || arch == HfArch::Qwen2Moe {
            // Sliding-window attention is not implemented: refuse rather than attend wider.
            let sliding = k.bool_or("use_sliding_window", false)?;
            if sliding
                && k.usize_opt("sliding_window")?
                    .is_some_and(|w| w > 0 && w < max_position)
            {
                return Err(EngineError::hyper(
                    "use_sliding_window",
                    "sliding-window attention is not supported",
                ));
            }
        }
        Ok(HfConfig {
            arch,
            vocab_size,
            hidden,
            n_layers,
            n_heads,
            intermediate,
            rms_eps: rms_eps as f32,
            max_position,
            tie_word_embeddings: k.bool_or("tie_word_embeddings", false)?,
            attn,
            rope,
            moe,
            fp8_block,
            bos_token_id: k.ids("bos_token_id")?.first().copied(),
            eos_token_ids: k.ids("eos_token_id")?,
        })
    }

    /// Values cached per position per layer (keys and values, or MLA's latent).
    pub fn cache_width(&self) -> usize {
        match self.attn {
            AttnKind::Standard {
                n_kv_heads,
                head_dim,
                ..
            } => 2 * n_kv_heads * head_dim,
            AttnKind::Mla {
                kv_lora_rank,
                qk_rope_dim,
                ..
            } => kv_lora_rank + qk_rope_dim,
        }
    }
}

fn rope(k: &Keys<'_>, arch: HfArch, attn: &AttnKind, max_position: usize) -> Result<Rope> {
    // transformers 5: `rope_parameters`; older: top-level `rope_theta` + `rope_scaling`.
    let params = k.get("rope_parameters");
    let scaling = k.get("rope_scaling").or(params);
    let theta = params
        .and_then(|p| p.get("rope_theta"))
        .and_then(Value::as_f64)
        .or(k.f64_opt("rope_theta")?)
        .unwrap_or(10_000.0);
    if !(theta.is_finite() && theta > 1.0) {
        return Err(EngineError::hyper(
            "rope_theta",
            format!("must be > 1, got {theta}"),
        ));
    }
    let dim = match attn {
        AttnKind::Standard { head_dim, .. } => *head_dim,
        AttnKind::Mla { qk_rope_dim, .. } => *qk_rope_dim,
    };
    let mut rope = Rope {
        theta,
        dim,
        interleave: arch.is_deepseek() && k.bool_or("rope_interleave", true)?,
        yarn: None,
        linear: 1.0,
    };
    let Some(s) = scaling else { return Ok(rope) };
    let kind = s
        .get("rope_type")
        .or_else(|| s.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    let num = |key: &str| s.get(key).and_then(Value::as_f64);
    match kind {
        "default" => {}
        "linear" => {
            let f = num("factor").filter(|f| *f > 0.0).ok_or_else(|| {
                EngineError::hyper(
                    "rope_scaling.factor",
                    "linear scaling needs a positive factor",
                )
            })?;
            rope.linear = f;
        }
        "yarn" => {
            let factor = num("factor").filter(|f| *f >= 1.0).ok_or_else(|| {
                EngineError::hyper("rope_scaling.factor", "YaRN needs a factor >= 1")
            })?;
            let original = s
                .get("original_max_position_embeddings")
                .and_then(Value::as_u64)
                .map_or(max_position, |v| v as usize);
            rope.yarn = Some(Yarn {
                factor,
                original_max_position: original.max(1),
                beta_fast: num("beta_fast").unwrap_or(32.0),
                beta_slow: num("beta_slow").unwrap_or(1.0),
                mscale: num("mscale").unwrap_or(1.0),
                mscale_all_dim: num("mscale_all_dim").unwrap_or(0.0),
                attention_factor: num("attention_factor"),
                truncate: s.get("truncate").and_then(Value::as_bool).unwrap_or(true),
            });
        }
        other => {
            return Err(EngineError::hyper(
                "rope_scaling",
                format!("`{other}` is not supported (default, linear, yarn)"),
            ));
        }
    }
    Ok(rope)
}

fn moe(k: &Keys<'_>, arch: HfArch, n_layers: usize) -> Result<MoeConfig> {
    let top_k = k.usize("num_experts_per_tok")?;
    let (n_experts, expert_ffn) = match arch {
        HfArch::Mixtral => (k.usize("num_local_experts")?, k.usize("intermediate_size")?),
        HfArch::Qwen3Moe | HfArch::Qwen2Moe => (
            match k.usize_opt("num_experts")? {
                Some(n) => n,
                None => k.usize("num_local_experts")?,
            },
            k.usize("moe_intermediate_size")?,
        ),
        HfArch::DeepseekV2 | HfArch::DeepseekV3 => (
            k.usize("n_routed_experts")?,
            k.usize("moe_intermediate_size")?,
        ),
    };
    for (key, v, max) in [
        ("num_experts", n_experts, 1 << 16),
        ("moe_intermediate_size", expert_ffn, 1 << 20),
        ("num_experts_per_tok", top_k, 1 << 16),
    ] {
        if !(1..=max).contains(&v) {
            return Err(EngineError::hyper(
                key,
                format!("must be between 1 and {max}, got {v}"),
            ));
        }
    }
    if top_k > n_experts {
        return Err(EngineError::hyper(
            "num_experts_per_tok",
            format!("{top_k} is more than the {n_experts} experts"),
        ));
    }
    let mut cfg = MoeConfig {
        n_experts,
        top_k,
        expert_ffn,
        scoring: Scoring::Softmax,
        topk: TopK::Greedy,
        norm_topk: true,
        routed_scaling: 1.0,
        shared_ffn: 0,
        shared_gate: false,
        moe_layers: vec![true; n_layers],
    };
    match arch {
        HfArch::Mixtral => {}
        HfArch::Qwen3Moe | HfArch::Qwen2Moe => {
            cfg.norm_topk = k.bool_or("norm_topk_prob", arch == HfArch::Qwen3Moe)?;
            let step = k.usize_opt("decoder_sparse_step")?.unwrap_or(1).max(1);
            let mlp_only: Vec<usize> = match k.get("mlp_only_layers") {
                Some(Value::Array(a)) => a
                    .iter()
                    .filter_map(|v| v.as_u64())
                    .map(|v| v as usize)
                    .collect(),
                _ => Vec::new(),
            };
            for (i, m) in cfg.moe_layers.iter_mut().enumerate() {
                *m = !mlp_only.contains(&i) && (i + 1) % step == 0;
            }
            if arch == HfArch::Qwen2Moe {
                cfg.shared_ffn = k.usize_opt("shared_expert_intermediate_size")?.unwrap_or(0);
                if cfg.shared_ffn > 1 << 20 {
                    return Err(EngineError::hyper(
                        "shared_expert_intermediate_size",
                        format!("must be at most {}, got {}", 1 << 20, cfg.shared_ffn),
                    ));
                }
                cfg.shared_gate = cfg.shared_ffn > 0;
            }
        }
        HfArch::DeepseekV2 | HfArch::DeepseekV3 => {
            let v3 = arch == HfArch::DeepseekV3;
            cfg.norm_topk = k.bool_or("norm_topk_prob", v3)?;
            cfg.routed_scaling = k.f64_opt("routed_scaling_factor")?.unwrap_or(1.0) as f32;
            let shared = k.usize_opt("n_shared_experts")?.unwrap_or(0);
            if shared > 1 << 10 {
                return Err(EngineError::hyper(
                    "n_shared_experts",
                    format!("must be at most {}, got {shared}", 1 << 10),
                ));
            }
            cfg.shared_ffn = shared * expert_ffn;
            let n_group = k.usize_opt("n_group")?.unwrap_or(1).max(1);
            let topk_group = k.usize_opt("topk_group")?.unwrap_or(n_group).max(1);
            if n_experts % n_group != 0 || topk_group > n_group {
                return Err(EngineError::hyper(
                    "n_group",
                    format!(
                        "{n_experts} experts in {n_group} groups, {topk_group} chosen: impossible"
                    ),
                ));
            }
            if v3 {
                let method = k.str_opt("topk_method")?.unwrap_or("noaux_tc");
                if method != "noaux_tc" {
                    return Err(EngineError::hyper(
                        "topk_method",
                        format!("`{method}` is not supported for V3 (noaux_tc)"),
                    ));
                }
                let scoring = k.str_opt("scoring_func")?.unwrap_or("sigmoid");
                if scoring != "sigmoid" {
                    return Err(EngineError::hyper(
                        "scoring_func",
                        format!("`{scoring}` is not supported for V3 (sigmoid)"),
                    ));
                }
                cfg.scoring = Scoring::Sigmoid;
                cfg.topk = TopK::GroupTop2Sum {
                    n_group,
                    topk_group,
                };
                if n_experts / n_group < 2 {
                    return Err(EngineError::hyper(
                        "n_group",
                        "V3 routing needs at least 2 experts per group",
                    ));
                }
            } else {
                // V2 either renormalises or scales, never both.
                if cfg.norm_topk && top_k > 1 {
                    cfg.routed_scaling = 1.0;
                } else {
                    cfg.norm_topk = false;
                }
                cfg.topk = match k.str_opt("topk_method")?.unwrap_or("greedy") {
                    "greedy" => TopK::Greedy,
                    "group_limited_greedy" => TopK::GroupMax {
                        n_group,
                        topk_group,
                    },
                    other => {
                        return Err(EngineError::hyper(
                            "topk_method",
                            format!("`{other}` is not supported (greedy, group_limited_greedy)"),
                        ));
                    }
                };
            }
            let first_dense = k.usize_opt("first_k_dense_replace")?.unwrap_or(0);
            let freq = k.usize_opt("moe_layer_freq")?.unwrap_or(1).max(1);
            for (i, m) in cfg.moe_layers.iter_mut().enumerate() {
                *m = i >= first_dense && i % freq == 0;
            }
        }
    }
    Ok(cfg)
}

fn fp8_block(k: &Keys<'_>) -> Result<Option<[usize; 2]>> {
    let Some(q) = k.get("quantization_config") else {
        return Ok(None);
    };
    let method = q.get("quant_method").and_then(Value::as_str).unwrap_or("");
    if method != "fp8" {
        return Err(EngineError::hyper(
            "quantization_config.quant_method",
            format!("`{method}` is not supported (fp8)"),
        ));
    }
    if let Some(fmt) = q.get("fmt").and_then(Value::as_str)
        && fmt != "e4m3"
    {
        return Err(EngineError::hyper(
            "quantization_config.fmt",
            format!("`{fmt}` is not supported (e4m3)"),
        ));
    }
    let block = match q.get("weight_block_size") {
        Some(Value::Array(a)) if a.len() == 2 => {
            let r = a[0].as_u64().unwrap_or(0) as usize;
            let c = a[1].as_u64().unwrap_or(0) as usize;
            if r == 0 || c == 0 {
                return Err(EngineError::hyper(
                    "quantization_config.weight_block_size",
                    "must be two positive sizes",
                ));
            }
            [r, c]
        }
        None => [128, 128],
        Some(_) => {
            return Err(EngineError::hyper(
                "quantization_config.weight_block_size",
                "must be [rows, cols]",
            ));
        }
    };
    Ok(Some(block))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn legacy_and_new_rope_spellings_agree() {
        let base = json!({"architectures": ["DeepseekV3ForCausalLM"], "vocab_size": 10, "hidden_size": 8,
            "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 16, "kv_lora_rank": 4,
            "qk_nope_head_dim": 4, "qk_rope_head_dim": 2, "v_head_dim": 4, "num_experts_per_tok": 2,
            "n_routed_experts": 4, "moe_intermediate_size": 4, "n_group": 2, "topk_group": 1,
            "first_k_dense_replace": 1});
        let mut legacy = base.clone();
        legacy["rope_theta"] = json!(5000.0);
        legacy["rope_scaling"] = json!({"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64, "mscale": 1.0, "mscale_all_dim": 1.0});
        let mut new = base.clone();
        new["rope_parameters"] = json!({"rope_theta": 5000.0, "rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64, "mscale": 1.0, "mscale_all_dim": 1.0});
        let a = HfConfig::parse(&legacy).unwrap();
        let b = HfConfig::parse(&new).unwrap();
        assert_eq!(a.rope, b.rope);
        assert_eq!(a.rope.theta, 5000.0);
        assert_eq!(a.rope.yarn.as_ref().unwrap().original_max_position, 64);
        assert_eq!(a.moe.moe_layers, vec![false, true]);
        assert_eq!(a.moe.scoring, Scoring::Sigmoid);
    }

    #[test]
    fn bad_configs_name_the_key() {
        let err = |v: Value| HfConfig::parse(&v).unwrap_err().to_string();
        assert!(err(json!({"architectures": ["GPT2LMHeadModel"]})).contains("GPT2LMHeadModel"));
        let mut c = json!({"architectures": ["MixtralForCausalLM"], "vocab_size": 10, "hidden_size": 8,
            "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 3,
            "intermediate_size": 4, "num_local_experts": 2, "num_experts_per_tok": 1});
        assert!(err(c.clone()).contains("num_key_value_heads"));
        c["num_key_value_heads"] = json!(1);
        c["num_experts_per_tok"] = json!(3);
        assert!(err(c.clone()).contains("num_experts_per_tok"));
        c["num_experts_per_tok"] = json!("two");
        assert!(err(c).contains("expected a count"));
    }
}
