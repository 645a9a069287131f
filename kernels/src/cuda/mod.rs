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

/// One operation's share of a GPU profile (`OASIS_GPU_PROFILE=1`): calls and seconds, each
/// call timed from an idle GPU to the end of its work (so launch latency counts, and work
/// never overlaps).
#[derive(Debug, Clone, PartialEq)]
pub struct OpTime {
    pub op: &'static str,
    pub calls: u64,
    pub seconds: f64,
}

impl OpTime {
    /// Adds `t` to the entry of `profile` for the same operation (or a new one).
    pub fn add(profile: &mut Vec<OpTime>, t: OpTime) {
        match profile.iter_mut().find(|p| p.op == t.op) {
            Some(p) => {
                p.calls += t.calls;
                p.seconds += t.seconds;
            }
            None => profile.push(t),
        }
    }
}

/// Tokens a matrix-vector product takes at once; more go through cuBLAS.
pub const GEMV_MAX_TOKENS: usize = 8;
/// Rows per tile of [`CudaDevice::attention`] with tiles (`ATTN_QT` in attention.cu).
pub const ATTN_TILE_ROWS: usize = 16;
/// The largest head of [`CudaDevice::attention`] with tiles (`ATTN_TILED_MAX_HD`).
pub const ATTN_TILED_MAX_HEAD_DIM: usize = 128;

/// The tiles of [`CudaDevice::attention`] with tiles for a step whose row `t` belongs to
/// sequence `row_seq[t]`: runs of consecutive rows of one sequence, cut every
/// [`ATTN_TILE_ROWS`], each as `first row << 5 | rows`.
pub fn attention_tiles_of(row_seq: &[usize], out: &mut Vec<u32>) {
    out.clear();
    let mut t = 0;
    while t < row_seq.len() {
        let mut n = 1;
        while n < ATTN_TILE_ROWS && t + n < row_seq.len() && row_seq[t + n] == row_seq[t] {
            n += 1;
        }
        out.push(((t as u32) << 5) | n as u32);
        t += n;
    }
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

#[cfg(test)]
mod tile_tests {
    use super::*;

    #[test]
    fn tiles_are_runs_of_one_sequence_cut_every_sixteen_rows() {
        let mut out = Vec::new();
        // A 40-row prompt chunk, then three decoding sequences, then a 3-row chunk.
        let mut rows = vec![0usize; 40];
        rows.extend([1, 2, 3, 4, 4, 4]);
        attention_tiles_of(&rows, &mut out);
        let decoded: Vec<(u32, u32)> = out.iter().map(|t| (t >> 5, t & 31)).collect();
        assert_eq!(
            decoded,
            vec![
                (0, 16),
                (16, 16),
                (32, 8),
                (40, 1),
                (41, 1),
                (42, 1),
                (43, 3)
            ]
        );
        attention_tiles_of(&[], &mut out);
        assert!(out.is_empty());
    }
}
