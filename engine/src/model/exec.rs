//! A model's execution state on one device, per rank: threads, instruction set and scratch
//! on the CPU; weights, the key/value cache and buffers on a GPU. The scheduler and
//! [`crate::Engine`] drive the forward pass through it and read the logits from it.

use kernels::{Isa, ThreadPool};

use super::Model;
use super::cuda::CudaExec;
use super::forward::{BatchSeq, Layout, Scratch};
use super::kv_cache::KvPool;
use super::kv_cache::blocks_for;
use crate::device::DeviceSpec;
use crate::error::Result;

/// The CPU's state: the rank's threads and its reused buffers.
#[derive(Debug)]
pub struct CpuExec {
    pub(crate) pool: ThreadPool,
    pub(crate) isa: Isa,
    pub(crate) scratch: Scratch,
    kv_blocks: usize,
}

/// How much key/value cache a rank gets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum KvBudget {
    /// Exactly this many blocks (tests, benchmarks, one-sequence engines).
    Blocks(usize),
    /// Room for this many sequences of the full context.
    Sequences(usize),
    /// As many blocks as fit in these bytes.
    Bytes(usize),
    /// This fraction of the GPU memory left free once the weights are loaded (the CPU
    /// takes the built-in size instead).
    GpuFraction(f64),
}

/// The CPU's cache when only a GPU fraction was given.
const CPU_DEFAULT_KV_BYTES: usize = 2 << 30;
/// GPU memory kept free beyond the cache: activations, cuBLAS workspace, the context.
const GPU_RESERVE_BYTES: u64 = 1 << 30;

/// One rank's state on its device (a closed set: no dynamic dispatch on the hot path).
#[derive(Debug)]
pub enum Exec {
    Cpu(CpuExec),
    Cuda {
        gpu: Box<CudaExec>,
        /// The batch's host bookkeeping (rows, positions, logit rows).
        layout: Scratch,
    },
}

impl Exec {
    /// The state for `model` on `spec` with `threads` CPU threads and a cache of `kv`
    /// (at least one sequence of `n_ctx` positions). On a GPU the weights are copied there
    /// and the cache allocated; a model or cache that does not fit is an error naming both
    /// figures.
    pub fn new(
        model: &Model,
        spec: &DeviceSpec,
        threads: usize,
        kv: KvBudget,
        n_ctx: usize,
    ) -> Result<Exec> {
        let per_block = model.kv_bytes_per_block().max(1);
        let floor = blocks_for(n_ctx.max(1));
        match spec {
            DeviceSpec::Cpu => {
                let blocks = match kv {
                    KvBudget::Blocks(b) => b,
                    KvBudget::Sequences(n) => n * floor,
                    KvBudget::Bytes(b) => b / per_block,
                    KvBudget::GpuFraction(_) => CPU_DEFAULT_KV_BYTES / per_block,
                };
                Ok(Exec::Cpu(CpuExec {
                    pool: ThreadPool::new(threads.max(1)),
                    isa: Isa::active(),
                    scratch: Scratch::default(),
                    kv_blocks: blocks.max(floor),
                }))
            }
            DeviceSpec::Cuda { info, kernel_cache } => {
                let blocks = |free: u64| -> Result<usize> {
                    let blocks = match kv {
                        KvBudget::Blocks(b) => b,
                        KvBudget::Sequences(n) => n * floor,
                        KvBudget::Bytes(b) => b / per_block,
                        KvBudget::GpuFraction(f) => {
                            (free.saturating_sub(GPU_RESERVE_BYTES) as f64 * f) as usize / per_block
                        }
                    };
                    let need = (floor * per_block) as u64;
                    if blocks < floor && free < need + GPU_RESERVE_BYTES {
                        return Err(crate::EngineError::Device(format!(
                            "a cache for one {n_ctx}-token sequence needs {need} bytes; the GPU has {free} bytes free after the weights"
                        )));
                    }
                    Ok(blocks.max(floor))
                };
                Ok(Exec::Cuda {
                    gpu: Box::new(CudaExec::new(model, info, kernel_cache.as_deref(), blocks)?),
                    layout: Scratch::default(),
                })
            }
        }
    }

    /// Blocks in this rank's cache.
    pub fn kv_blocks(&self) -> usize {
        match self {
            Exec::Cpu(c) => c.kv_blocks,
            Exec::Cuda { gpu, .. } => gpu.kv_blocks(),
        }
    }

    /// The key/value pool of this rank's blocks: their storage on the CPU, or only their
    /// bookkeeping when the storage is on the GPU.
    pub(crate) fn kv_pool(&self, model: &Model) -> KvPool {
        match self {
            Exec::Cpu(c) => model.new_kv_pool(c.kv_blocks),
            Exec::Cuda { gpu, .. } => KvPool::new(0, model.config.kv_dim(), gpu.kv_blocks()),
        }
    }

    /// `cpu` or `cuda:N`.
    pub fn device_name(&self) -> String {
        match self {
            Exec::Cpu(_) => "cpu".into(),
            Exec::Cuda { gpu, .. } => format!("cuda:{}", gpu.device().info().ordinal),
        }
    }

    /// The GPU's time per operation since the last call, when `OASIS_GPU_PROFILE=1`;
    /// empty otherwise and on the CPU.
    pub fn take_gpu_profile(&self) -> Vec<kernels::cuda::OpTime> {
        match self {
            Exec::Cpu(_) => Vec::new(),
            Exec::Cuda { gpu, .. } => gpu.device().take_profile(),
        }
    }

    /// CPU threads in use (1 on a GPU: the host only schedules).
    pub fn threads(&self) -> usize {
        match self {
            Exec::Cpu(c) => c.pool.threads(),
            Exec::Cuda { .. } => 1,
        }
    }

    /// The CPU's instruction set, on the CPU.
    pub fn isa(&self) -> Option<Isa> {
        match self {
            Exec::Cpu(c) => Some(c.isa),
            Exec::Cuda { .. } => None,
        }
    }

    /// The logits of the last pass, `rows x vocab`.
    pub fn logits(&self) -> &[f32] {
        match self {
            Exec::Cpu(c) => &c.scratch.logits,
            Exec::Cuda { gpu, .. } => &gpu.logits,
        }
    }

    /// Runs each sequence's next tokens through `model` (see [`Model::forward_batch_ep`]).
    pub fn forward_batch(
        &mut self,
        model: &Model,
        kv: &mut KvPool,
        seqs: &mut [BatchSeq<'_>],
        ep: Option<&crate::parallel::EpCtx<'_>>,
    ) -> Result<()> {
        match self {
            Exec::Cpu(c) => model.forward_batch_ep(&c.pool, c.isa, &mut c.scratch, kv, seqs, ep),
            Exec::Cuda { gpu, layout } => {
                let n = model.prepare(layout, kv, seqs)?;
                let (row_seq, row_pos, logit_rows) = (
                    std::mem::take(&mut layout.row_seq),
                    std::mem::take(&mut layout.row_pos),
                    std::mem::take(&mut layout.logit_rows),
                );
                let l = Layout {
                    tokens: n,
                    row_seq: &row_seq,
                    row_pos: &row_pos,
                    logit_rows: &logit_rows,
                };
                let out = gpu.forward(kv, seqs, &l);
                (layout.row_seq, layout.row_pos, layout.logit_rows) =
                    (row_seq, row_pos, logit_rows);
                out.map(|_| ())
            }
        }
    }

    /// An expert-parallel rank's step without tokens (CPU ranks only run MoE models).
    pub fn idle_step(&mut self, model: &Model, ep: &crate::parallel::EpCtx<'_>) -> Result<()> {
        match self {
            Exec::Cpu(c) => model.idle_step_ep(&c.pool, c.isa, &mut c.scratch, ep),
            Exec::Cuda { .. } => Ok(()),
        }
    }
}
