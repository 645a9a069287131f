//! A loaded model: its file, hyperparameters, weights and tokenizer.
//!
//! [`Model::load`] opens a GGUF file (memory-mapped), checks that it describes a model the
//! engine can run, locates every tensor and builds the tokenizer from the file's metadata.
//! After loading, the forward pass (`forward.rs`) cannot meet a malformed file.

pub mod config;
pub mod forward;
pub mod kv_cache;
pub mod weights;

use std::path::Path;

pub use config::{Arch, ModelConfig};
pub use forward::{BatchSeq, ForwardCtx, Logits, Scratch};
pub use kv_cache::{BLOCK_POSITIONS, KvPool, SeqKv, blocks_for, chain_hash};
pub use weights::Weights;

use crate::error::Result;
use crate::gguf::GgufFile;
use crate::tokenizer::{Tokenizer, TokenizerSpec};

/// A model ready to run.
#[derive(Debug)]
pub struct Model {
    /// The mapped file; weights are borrowed from it on every forward pass.
    file: GgufFile,
    pub config: ModelConfig,
    weights: Weights,
    tokenizer: Tokenizer,
    /// `general.name`, or the file name.
    name: String,
}

impl Model {
    /// Opens and checks the GGUF model at `path`.
    pub fn load(path: &Path) -> Result<Model> {
        let file = GgufFile::open(path)?;
        Model::from_gguf(file)
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
            file,
            config,
            weights,
            tokenizer,
            name,
        })
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn file(&self) -> &GgufFile {
        &self.file
    }

    /// Bytes of weights the forward pass reads per token.
    pub fn weight_bytes(&self) -> u64 {
        self.weights.bytes()
    }

    /// A key/value pool of `n_blocks` blocks for this model.
    pub fn new_kv_pool(&self, n_blocks: usize) -> KvPool {
        KvPool::new(self.config.n_layers, self.config.kv_dim(), n_blocks)
    }

    /// Bytes of cache per position (keys and values in f16, every layer).
    pub fn kv_bytes_per_position(&self) -> usize {
        self.config.n_layers * self.config.kv_dim() * 2 * 2
    }
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
