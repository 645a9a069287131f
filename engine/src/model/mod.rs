//! A loaded model: its file, hyperparameters, weights and tokenizer.
//!
//! [`Model::load`] opens a GGUF file (memory-mapped) or a Hugging Face checkpoint folder
//! (`hf`: safetensors shards, `config.json`, `tokenizer.json` when present), checks that it
//! describes a model the engine can run, locates every tensor and builds the tokenizer.
//! After loading, the forward pass (`forward.rs`, `hf/`) cannot meet a malformed file.

pub mod config;
pub(crate) mod cuda;
pub(crate) mod exec;
pub(crate) mod forward;
pub mod hf;
pub(crate) mod kv_cache;
pub mod weights;

use std::path::Path;

pub use config::{Arch, ModelConfig};
pub use exec::{Exec, KvBudget};
pub use forward::Logits;
pub(crate) use forward::{BatchSeq, Scratch};
pub use hf::HfModel;
pub(crate) use kv_cache::{BLOCK_POSITIONS, KvPool, SeqKv, blocks_for, chain_hash};
pub use weights::Weights;

use crate::error::Result;
use crate::gguf::GgufFile;
use crate::tokenizer::{Tokenizer, TokenizerSpec};

/// Where a model's weights come from. One per loaded model, so the variants' sizes do not
/// matter.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub(crate) enum Source {
    /// A mapped GGUF file; weights are borrowed from it on every forward pass.
    Gguf { file: GgufFile, weights: Weights },
    /// A Hugging Face checkpoint folder (boxed: its configuration is large).
    Hf(Box<HfModel>),
}

/// A model ready to run.
#[derive(Debug)]
pub struct Model {
    pub(crate) source: Source,
    pub config: ModelConfig,
    /// None for a checkpoint without `tokenizer.json`: it takes and gives token ids only.
    tokenizer: Option<Tokenizer>,
    /// `general.name`, or the file or folder name.
    name: String,
    /// The constrained-decoding factory of the tokenizer, built on first use.
    grammars:
        std::sync::OnceLock<std::result::Result<std::sync::Arc<crate::grammar::Grammars>, String>>,
}

impl Model {
    /// Opens and checks the model at `path`: a GGUF file, or a Hugging Face checkpoint
    /// folder.
    pub fn load(path: &Path) -> Result<Model> {
        if path.is_dir() {
            return Model::from_hf_dir(path);
        }
        let file = GgufFile::open(path)?;
        Model::from_gguf(file)
    }

    /// Opens a Hugging Face checkpoint folder.
    pub fn from_hf_dir(dir: &Path) -> Result<Model> {
        let hf = HfModel::load(dir)?;
        let tokenizer = hf_tokenizer(dir)?;
        if let Some(t) = &tokenizer
            && t.vocab_size() > hf.cfg.vocab_size
        {
            return Err(crate::EngineError::Checkpoint {
                path: dir.join("tokenizer.json"),
                problem: format!(
                    "{} tokens, more than the model's vocab_size {}",
                    t.vocab_size(),
                    hf.cfg.vocab_size
                ),
            });
        }
        let config = ModelConfig::from_hf(&hf.cfg);
        let name = dir
            .file_name()
            .map_or_else(|| "model".to_string(), |s| s.to_string_lossy().into_owned());
        Ok(Model {
            source: Source::Hf(Box::new(hf)),
            config,
            tokenizer,
            name,
            grammars: std::sync::OnceLock::new(),
        })
    }

    /// Builds a model from an opened GGUF file.
    pub fn from_gguf(file: GgufFile) -> Result<Model> {
        let vocab_size = Weights::vocab_size(&file)?;
        let config = ModelConfig::from_gguf(&file, vocab_size)?;
        let weights = Weights::load(&file, &config)?;
        let tokenizer = Tokenizer::from_spec(tokenizer_spec(&file)?)?;
        if tokenizer.vocab_size() != vocab_size {
            return Err(crate::EngineError::BadTensor {
                name: "token_embd.weight".into(),
                expected: format!(
                    "{} rows (the tokenizer's vocabulary)",
                    tokenizer.vocab_size()
                ),
                got: format!("{vocab_size} rows"),
            });
        }
        let name = match file.get_str("general.name")? {
            Some(n) if !n.is_empty() => n.to_string(),
            _ => file
                .path()
                .file_stem()
                .map_or_else(|| "model".to_string(), |s| s.to_string_lossy().into_owned()),
        };
        Ok(Model {
            source: Source::Gguf { file, weights },
            config,
            tokenizer: Some(tokenizer),
            name,
            grammars: std::sync::OnceLock::new(),
        })
    }

    /// Constrained decoding for this model's tokenizer (the factory is built on the first
    /// call, a few hundred milliseconds for a large vocabulary).
    pub fn grammars(
        &self,
    ) -> std::result::Result<std::sync::Arc<crate::grammar::Grammars>, String> {
        self.grammars
            .get_or_init(|| {
                let t = self.tokenizer.as_ref().ok_or_else(|| {
                    "this model has no tokenizer: structured output needs one".to_string()
                })?;
                crate::grammar::Grammars::new(t, self.config.vocab_size).map(std::sync::Arc::new)
            })
            .clone()
    }

    /// The tokenizer; an error for a checkpoint that has none (it serves token ids only).
    pub fn tokenizer(&self) -> Result<&Tokenizer> {
        self.tokenizer
            .as_ref()
            .ok_or_else(|| crate::EngineError::NoTokenizer {
                model: self.name.clone(),
            })
    }

    /// The tokenizer, when the model has one.
    pub fn tokenizer_opt(&self) -> Option<&Tokenizer> {
        self.tokenizer.as_ref()
    }

    /// Token ids that end generation: the tokenizer's, else the checkpoint's
    /// `eos_token_id`.
    pub fn is_eog(&self, id: u32) -> bool {
        match (&self.tokenizer, &self.source) {
            (Some(t), _) => t.is_eog(id),
            (None, Source::Hf(hf)) => hf.cfg.eos_token_ids.contains(&id),
            (None, Source::Gguf { .. }) => false,
        }
    }

    /// Every end-of-generation id ([`Model::is_eog`]).
    pub fn eog_ids(&self) -> &[u32] {
        match (&self.tokenizer, &self.source) {
            (Some(t), _) => t.eog_ids(),
            (None, Source::Hf(hf)) => &hf.cfg.eos_token_ids,
            (None, Source::Gguf { .. }) => &[],
        }
    }

    /// The checkpoint, for a model loaded from a Hugging Face folder.
    pub fn hf(&self) -> Option<&HfModel> {
        match &self.source {
            Source::Hf(hf) => Some(hf),
            Source::Gguf { .. } => None,
        }
    }

    /// Tokens routed to each expert of each layer since load (MoE models).
    pub fn expert_tokens(&self) -> Option<Vec<Vec<u64>>> {
        self.hf().map(|h| h.expert_tokens())
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The GGUF file and the weights located in it, for a model loaded from one.
    pub fn gguf(&self) -> Option<(&GgufFile, &Weights)> {
        match &self.source {
            Source::Gguf { file, weights } => Some((file, weights)),
            Source::Hf(_) => None,
        }
    }

    /// The GGUF file, for a model loaded from one.
    pub fn file(&self) -> Option<&GgufFile> {
        match &self.source {
            Source::Gguf { file, .. } => Some(file),
            Source::Hf(_) => None,
        }
    }

    /// Bytes of weights (for reports and fit estimates).
    pub fn weight_bytes(&self) -> u64 {
        match &self.source {
            Source::Gguf { weights, .. } => weights.bytes(),
            Source::Hf(hf) => hf.weight_bytes(),
        }
    }

    /// A key/value pool of `n_blocks` blocks for this model.
    pub(crate) fn new_kv_pool(&self, n_blocks: usize) -> KvPool {
        match &self.source {
            Source::Gguf { .. } => {
                KvPool::new(self.config.n_layers, self.config.kv_dim(), n_blocks)
            }
            Source::Hf(hf) => {
                KvPool::new_rows(self.config.n_layers, hf.cfg.cache_width(), n_blocks)
            }
        }
    }

    /// Bytes of cache per block of positions (every layer).
    pub fn kv_bytes_per_block(&self) -> usize {
        self.kv_bytes_per_position() * BLOCK_POSITIONS
    }

    /// Bytes of cache per position, every layer: keys and values in f16 for GGUF models,
    /// f32 rows for checkpoints (MLA: the compressed latent only).
    pub fn kv_bytes_per_position(&self) -> usize {
        match &self.source {
            Source::Gguf { .. } => self.config.n_layers * self.config.kv_dim() * 2 * 2,
            Source::Hf(hf) => self.config.n_layers * hf.cfg.cache_width() * 4,
        }
    }
}

/// The tokenizer of a checkpoint folder, from `tokenizer.json` (+ `tokenizer_config.json`)
/// when present.
fn hf_tokenizer(dir: &Path) -> Result<Option<Tokenizer>> {
    let path = dir.join("tokenizer.json");
    if !path.is_file() {
        return Ok(None);
    }
    let read = |p: &Path| {
        std::fs::read_to_string(p).map_err(|e| crate::EngineError::Checkpoint {
            path: p.to_path_buf(),
            problem: format!("cannot read: {e}"),
        })
    };
    let json = read(&path)?;
    let config_path = dir.join("tokenizer_config.json");
    let config = if config_path.is_file() {
        Some(read(&config_path)?)
    } else {
        None
    };
    let mut spec = crate::tokenizer::spec_from_hf(&json, config.as_deref())?;
    // Newer checkpoints keep the template in a file of its own.
    let jinja = dir.join("chat_template.jinja");
    if spec.chat_template.is_none() && jinja.is_file() {
        spec.chat_template = Some(read(&jinja)?);
    }
    Ok(Some(Tokenizer::from_spec(spec)?))
}

/// The `tokenizer.*` metadata of a GGUF file, as the tokenizer module takes it.
fn tokenizer_spec(file: &GgufFile) -> Result<TokenizerSpec> {
    let owned =
        |v: Option<Vec<&str>>| v.map(|v| v.into_iter().map(str::to_string).collect::<Vec<_>>());
    let model = file
        .get_str("tokenizer.ggml.model")?
        .unwrap_or("")
        .to_string();
    let add_bos = match file.get_bool("tokenizer.ggml.add_bos_token")? {
        Some(b) => b,
        None => {
            crate::tokenizer::llama_cpp_default_add_bos(&model, file.get_str("tokenizer.ggml.pre")?)
        }
    };
    Ok(TokenizerSpec {
        model,
        pre: file.get_str("tokenizer.ggml.pre")?.map(str::to_string),
        tokens: owned(file.get_str_array("tokenizer.ggml.tokens")?).unwrap_or_default(),
        token_types: file
            .get_i32_array("tokenizer.ggml.token_type")?
            .unwrap_or_default(),
        merges: owned(file.get_str_array("tokenizer.ggml.merges")?).unwrap_or_default(),
        bos_id: file.get_u32("tokenizer.ggml.bos_token_id")?,
        eos_id: file.get_u32("tokenizer.ggml.eos_token_id")?,
        eot_id: file.get_u32("tokenizer.ggml.eot_token_id")?,
        eom_id: file.get_u32("tokenizer.ggml.eom_token_id")?,
        unk_id: file.get_u32("tokenizer.ggml.unknown_token_id")?,
        pad_id: file.get_u32("tokenizer.ggml.padding_token_id")?,
        add_bos,
        add_eos: file
            .get_bool("tokenizer.ggml.add_eos_token")?
            .unwrap_or(false),
        chat_template: file.get_str("tokenizer.chat_template")?.map(str::to_string),
    })
}
