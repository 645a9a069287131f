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
    /// The engine cannot go on (its ranks stopped, a step failed for every sequence): the
    /// requests it held fail, and it serves no more.
    #[error("{0}")]
    Stopped(String),
    /// The device asked for cannot be used (no driver, no GPU, a missing library, an
    /// error on the GPU).
    #[error("{0}")]
    Device(String),
    /// Something the engine's own parts should never do (ranks disagreeing, an empty
    /// batch): a bug.
    #[error("{0}")]
    Internal(String),
}

/// Whose fault an [`EngineError`] is, which decides how a server reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The request asked for what the engine cannot do (bad input, too long a prompt).
    Request,
    /// The engine cannot serve now: stopped, or out of cache for the moment.
    Unavailable,
    /// A bug, or a model the engine should never have loaded.
    Internal,
}

impl EngineError {
    /// The one classification of engine errors (the daemon maps it to HTTP statuses).
    pub fn class(&self) -> ErrorClass {
        match self {
            EngineError::InvalidRequest(_)
            | EngineError::NoTokenizer { .. }
            | EngineError::Sampling(_)
            | EngineError::Tokenizer(_) => ErrorClass::Request,
            EngineError::Stopped(_) | EngineError::KvCacheFull { .. } | EngineError::Device(_) => {
                ErrorClass::Unavailable
            }
            EngineError::Gguf(_)
            | EngineError::Kernel(_)
            | EngineError::UnsupportedArchitecture { .. }
            | EngineError::BadHyperparameter { .. }
            | EngineError::MissingTensor { .. }
            | EngineError::BadTensor { .. }
            | EngineError::Checkpoint { .. }
            | EngineError::Internal(_) => ErrorClass::Internal,
        }
    }

    /// An error of the same class with the same message, for the several sequences one
    /// failure ends.
    pub fn for_each_sequence(&self) -> EngineError {
        let msg = self.to_string();
        match self.class() {
            ErrorClass::Request => EngineError::InvalidRequest(msg),
            ErrorClass::Unavailable => EngineError::Stopped(msg),
            ErrorClass::Internal => EngineError::Internal(msg),
        }
    }
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
