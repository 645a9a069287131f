//! The CUDA backend: the same operations as the CPU kernels (products with every GGUF
//! weight type, RMSNorm, RoPE, SwiGLU, paged attention, embeddings), on an NVIDIA GPU.
//!
//! Kernels are `.cu` sources in `kernels/` ([`source`]), compiled at run time with NVRTC for
//! the GPU found and cached per architecture; dense products of many tokens go to cuBLAS in
//! bf16 with f32 accumulation. cudarc loads the driver, NVRTC and cuBLAS at run time, so
//! building needs no CUDA toolkit; [`probe`] checks for each library (and the driver's CUDA
//! version) before cudarc is called, since cudarc panics on a missing one, and reports why
//! a GPU cannot be used instead.
//!
//! Without the `cuda` feature the same types exist and [`probe`] says the build has no CUDA
//! (candle's `dummy_cuda_backend`).

pub mod source;

#[cfg(feature = "cuda")]
mod device;
#[cfg(feature = "cuda")]
pub use device::*;

#[cfg(not(feature = "cuda"))]
mod stub;
#[cfg(not(feature = "cuda"))]
pub use stub::*;

/// A GPU as the probe found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    pub ordinal: usize,
    pub name: String,
    /// `(major, minor)`: 9.0 for Hopper, 8.9 Ada, 8.0 Ampere.
    pub compute_capability: (u32, u32),
    pub memory_total_bytes: u64,
    pub memory_free_bytes: u64,
    /// The newest CUDA version the driver supports, `(major, minor)`.
    pub driver_cuda: (u32, u32),
}

impl DeviceInfo {
    /// `cuda:0 NVIDIA H200 (sm_90, 141.0 GB)`.
    pub fn describe(&self) -> String {
        format!(
            "cuda:{} {} (sm_{}{}, {:.1} GB)",
            self.ordinal,
            self.name,
            self.compute_capability.0,
            self.compute_capability.1,
            self.memory_total_bytes as f64 / 1e9
        )
    }
}

/// What the GPU itself can do, measured in the same run as a benchmark so that each figure
/// has a ceiling to be read against.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ceilings {
    /// Bytes read plus bytes written per second by a device-to-device copy (the median of
    /// several), the bound on streaming weights.
    pub copy_bytes_per_s: f64,
    /// Dense bf16 GEMM (f32 accumulation and output, cuBLAS) operations per second at
    /// `gemm_size` cubed (the median of several).
    pub gemm_bf16_flop_per_s: f64,
    pub gemm_size: usize,
}

/// The CUDA version this build's bindings expect from the driver, `(major, minor)`.
pub const NEEDS_DRIVER_CUDA: (u32, u32) = (13, 0);

/// Weight types the GPU kernels read (ggml type ids, as `GgmlType` names them).
pub const GPU_TYPES: &[crate::GgmlType] = &[
    crate::GgmlType::F32,
    crate::GgmlType::F16,
    crate::GgmlType::BF16,
    crate::GgmlType::Q4_0,
    crate::GgmlType::Q4_1,
    crate::GgmlType::Q8_0,
    crate::GgmlType::Q4_K,
    crate::GgmlType::Q5_K,
    crate::GgmlType::Q6_K,
];

/// The kernel-name suffix of a weight type, when the GPU reads it.
pub fn type_suffix(ty: crate::GgmlType) -> Option<&'static str> {
    use crate::GgmlType as G;
    Some(match ty {
        G::F32 => "f32",
        G::F16 => "f16",
        G::BF16 => "bf16",
        G::Q4_0 => "q4_0",
        G::Q4_1 => "q4_1",
        G::Q8_0 => "q8_0",
        G::Q4_K => "q4_k",
        G::Q5_K => "q5_k",
        G::Q6_K => "q6_k",
        _ => return None,
    })
}
