//! The engine's error type.
//!
//! Each module with its own failure modes (GGUF parsing, the tokenizer, sampling, the
//! kernels) has a structured error of its own; this enum carries them, plus what goes wrong
//! between modules: a model file whose architecture, hyperparameters or tensors do not
//! make a model we can run, and requests the engine cannot serve.

use crate::gguf::GgufError;
use crate::sampling::SamplingError;
use crate::tokenizer::TokenizerError;

/// Everything that can go wrong in the engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error(transparent)]
    Sampling(#[from] SamplingError),
    #[error("kernel error: {0}")]
    Kernel(#[from] kernels::KernelError),
    /// The file's `general.architecture` is not one the engine runs.
    #[error("unsupported model architecture `{arch}` (supported: {supported})")]
    UnsupportedArchitecture {
        arch: String,
        supported: &'static str,
    },
    /// A hyperparameter is missing from the file or has an impossible value.
    #[error("model hyperparameter `{key}`: {problem}")]
    BadHyperparameter { key: String, problem: String },
    /// A tensor the architecture needs is not in the file.
    #[error("model file lacks tensor `{name}`")]
    MissingTensor { name: String },
    /// A tensor has the wrong shape or type for its role.
    #[error("tensor `{name}`: expected {expected}, got {got}")]
    BadTensor {
        name: String,
        expected: String,
        got: String,
    },
    /// Every block of the key/value cache is in use.
    #[error("the key/value cache is full ({blocks} blocks in use)")]
    KvCacheFull { blocks: usize },
    /// A file of a Hugging Face checkpoint folder is missing, malformed or contradicts the
    /// rest of the checkpoint.
    #[error("{}: {problem}", path.display())]
    Checkpoint {
        path: std::path::PathBuf,
        problem: String,
    },
    /// The model has no tokenizer (a checkpoint without `tokenizer.json`): it takes and
    /// gives token ids only.
    #[error("model `{model}` has no tokenizer (no tokenizer.json): send token ids")]
    NoTokenizer { model: String },
    /// A request that cannot be served as asked.
    #[error("{0}")]
    InvalidRequest(String),
}

impl EngineError {
    pub(crate) fn hyper(key: impl Into<String>, problem: impl Into<String>) -> EngineError {
        EngineError::BadHyperparameter {
            key: key.into(),
            problem: problem.into(),
        }
    }
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;
