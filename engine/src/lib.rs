//! The Oasis inference engine.
//!
//! Layers, from the file up: [`gguf`] reads model files, [`tokenizer`] turns text into
//! token ids and back (with the model's chat template), [`model`] holds a loaded model and
//! runs its forward pass on the `kernels` crate, [`sampling`] picks tokens and holds back
//! stop strings, and [`generate`] drives one request from prompt to finish. The engine
//! knows nothing of HTTP, keys or storage: the daemon calls it.

#![forbid(unsafe_code)] // `unsafe` lives only in `kernels` (ARCHITECTURE.md)

pub mod bench;
pub mod device;
pub mod embed;
pub mod eplb;
pub mod error;
pub mod fit;
pub mod generate;
pub mod gguf;
pub mod grammar;
pub mod model;
pub mod parallel;
pub mod reasoning;
pub mod safetensors;
pub mod sampling;
pub mod scheduler;
pub mod serve;
pub mod tokenizer;
pub mod tools;

pub use error::{EngineError, ErrorClass, Result};
pub use generate::{
    Engine, EngineOptions, FinishReason, GenerateOutput, GenerateRequest, Prompt, TokenEvent,
};
pub use model::{Logits, Model, ModelConfig};
