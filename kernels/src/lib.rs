//! Compute kernels for the Oasis engine.
//!
//! Everything that touches raw weight bytes or SIMD lives here: ggml's quantized block
//! formats, dequantization, quantized dot products (AVX2/FMA when the CPU has them, chosen at
//! run time, with a portable path that gives the same results), a thread pool, and the
//! matrix products, attention and row operations built on them. This is the only crate with
//! `unsafe` code.

pub mod alloc_probe;
pub mod cpu;
pub mod cuda;
mod error;
pub mod ggml_type;
pub mod mmap;

// The CPU kernels keep their paths (`kernels::ops`, `kernels::matmul`, ...): they are what
// the engine has always called.
pub use cpu::{attention, attention_rows, fp8, gemm, matmul, ops, pool, quant, vmath};

pub use attention::{AttnItem, AttnShape, KV_PAD, KvView, attention, attention_multi, f16_bytes};
pub use attention_rows::{RowAttn, RowItem, RowView, attention_rows};
pub use error::KernelError;
pub use fp8::{Fp8Matrix, fp8_e4m3_to_f32, matmul_fp8};
pub use ggml_type::{GgmlType, QK, QK_K, ggml_type_name};
/// Half-precision floats, as the KV cache stores them.
pub use half::f16;
pub use matmul::{Activations, MAX_TARGETS, MatmulTarget, QMatrix, matmul};
pub use pool::ThreadPool;
pub use quant::{F16Order, Isa, dequantize_row, quantize_row, vec_dot};
