//! Compute kernels for the Oasis engine.
//!
//! Everything that touches raw weight bytes or SIMD lives here: ggml's quantized block
//! formats, dequantization, quantized dot products (AVX2/FMA when the CPU has them, chosen at
//! run time, with a portable path that gives the same results), a thread pool, and the
//! matrix products, attention and row operations built on them. This is the only crate with
//! `unsafe` code.

pub mod attention;
mod error;
pub mod ggml_type;
pub mod matmul;
pub mod mmap;
pub mod ops;
pub mod pool;
pub mod quant;
pub mod vmath;

pub use attention::{AttnItem, AttnShape, KV_PAD, KvView, attention, attention_multi, f16_bytes};
pub use error::KernelError;
pub use ggml_type::{GgmlType, QK, QK_K, ggml_type_name};
/// Half-precision floats, as the KV cache stores them.
pub use half::f16;
pub use matmul::{Activations, MAX_TARGETS, MatmulTarget, QMatrix, matmul};
pub use pool::ThreadPool;
pub use quant::{F16Order, Isa, dequantize_row, quantize_row, vec_dot};
