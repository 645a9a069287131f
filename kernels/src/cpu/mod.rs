//! The CPU backend: ggml's quantized formats and their dot products (AVX2/FMA with a
//! portable path giving the same bits), the threaded matrix products, attention over the
//! paged f16 cache and over f32 rows, FP8 products, vector math and row operations, and the
//! thread pool they run on. Every kernel here reproduces llama.cpp's (or transformers')
//! arithmetic operation for operation: this backend is the reference the CUDA backend is
//! checked against.

pub mod attention;
pub mod attention_rows;
pub mod fp8;
pub mod gemm;
pub mod matmul;
pub mod ops;
pub mod pool;
pub mod quant;
pub mod vmath;
