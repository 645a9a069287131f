//! The engine as a server drives it: [`spawn`] starts a model's engine on its device (one
//! rank, or several for a mixture-of-experts model spread over ranks) and returns a
//! [`Handle`]; requests go in with [`Handle::submit`] and their tokens come back through
//! each request's [`SeqSink`]. Everything else (the forward pass, the cache, the blocks)
//! stays inside the engine.

use std::sync::Arc;

use crate::device::DeviceSpec;
use crate::error::Result;
use crate::model::{KvBudget, Model};
use crate::parallel::{EpShared, RankGroup, RankGroupConfig};
pub use crate::scheduler::{SchedulerStats, SeqSink, Submission};

/// How a model's engine runs.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Where it runs.
    pub device: DeviceSpec,
    /// CPU threads (split over the ranks).
    pub threads: usize,
    /// Ranks; only mixture-of-experts checkpoints use more than one.
    pub ranks: usize,
    /// Extra physical expert slots per MoE layer.
    pub redundant_experts: usize,
    /// Context limit per sequence.
    pub n_ctx: usize,
    /// Tokens per forward pass.
    pub max_batch_tokens: usize,
    /// Sequences batched at once, per rank.
    pub max_running: usize,
    /// Step-time target while sequences generate (milliseconds; `None`: none).
    pub max_step_ms: Option<u32>,
    /// First-token wait after which a prompt gets whole steps (milliseconds; `None`: none).
    pub ttft_target_ms: Option<u32>,
    /// The key/value cache of the whole engine (split over the ranks).
    pub kv: KvBudget,
}

/// A running engine.
#[derive(Debug)]
pub struct Handle {
    group: RankGroup,
    device: DeviceSpec,
    kv_blocks: usize,
    kv_bytes: usize,
}

/// Starts `model`'s engine as `cfg` says, its threads named after `name`; returns once
/// every rank has its device state (weights on the GPU, the cache allocated).
pub fn spawn(model: Arc<Model>, cfg: EngineConfig, name: &str) -> Result<Handle> {
    let per_block = model.kv_bytes_per_block();
    let device = cfg.device.clone();
    let group_cfg = RankGroupConfig {
        ranks: cfg.ranks,
        redundant_experts: cfg.redundant_experts,
        scheduler: crate::scheduler::SchedulerConfig {
            threads: cfg.threads,
            n_ctx: cfg.n_ctx,
            max_batch_tokens: cfg.max_batch_tokens,
            max_running: cfg.max_running,
            max_step_ms: cfg.max_step_ms,
            ttft_target_ms: cfg.ttft_target_ms,
            kv: cfg.kv,
            device: cfg.device,
        },
    };
    let group = RankGroup::spawn(model, group_cfg, name)?;
    let kv_blocks = group
        .stats()
        .kv_blocks_total
        .load(std::sync::atomic::Ordering::Relaxed);
    Ok(Handle {
        group,
        device,
        kv_blocks,
        kv_bytes: kv_blocks * per_block,
    })
}

impl Handle {
    /// Hands a request to the least loaded rank; gives it back when the engine stopped.
    pub fn submit(&self, sub: Submission) -> std::result::Result<(), Box<Submission>> {
        self.group.submit(sub)
    }

    /// Counters summed over the ranks.
    pub fn stats(&self) -> Arc<SchedulerStats> {
        self.group.stats()
    }

    pub fn ranks(&self) -> usize {
        self.group.ranks()
    }

    /// The expert-parallel state, when the engine has more than one rank.
    pub fn ep(&self) -> Option<&Arc<EpShared>> {
        self.group.ep()
    }

    /// Where it runs.
    pub fn device(&self) -> &DeviceSpec {
        &self.device
    }

    /// Cache blocks (all ranks) and their bytes.
    pub fn kv_blocks(&self) -> usize {
        self.kv_blocks
    }

    pub fn kv_bytes(&self) -> usize {
        self.kv_bytes
    }
}
