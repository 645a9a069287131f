//! The engine plan a profile gives: ranks, KV cache size, batch limits and the weight
//! precision the box's models should ship in.
//!
//! The KV cache gets a fraction of the memory free when the plan is made: on a GPU box
//! the free memory of the GPUs the ranks use, on a CPU-only box the host's available
//! memory. The daemon uses these as defaults; its own configuration still wins.

use serde::Serialize;

use crate::inventory::Inventory;
use crate::profile::Profile;

/// What the engine should run with on this box.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EnginePlan {
    pub profile: String,
    /// Engine ranks (the EP size: the routed experts spread over all of them).
    pub ranks: u32,
    pub kv_cache_fraction: f64,
    /// The memory the fraction is taken of.
    pub kv_memory_bytes: u64,
    /// `kv_cache_fraction` of `kv_memory_bytes`.
    pub kv_cache_bytes: u64,
    /// Where `kv_memory_bytes` comes from, in words.
    pub kv_basis: String,
    pub max_batch_tokens: u32,
    pub max_running: u32,
    pub weight_precision: String,
}

const MIB: u64 = 1 << 20;

/// The plan `profile` gives on `inv`.
pub fn plan(profile: &Profile, inv: &Inventory) -> EnginePlan {
    let e = &profile.engine;
    let (kv_memory_bytes, kv_basis) = if profile.cpu_only() || inv.gpus.is_empty() {
        (
            inv.host.memory_available_bytes,
            "the host's available memory".to_string(),
        )
    } else {
        let used: Vec<_> = inv.gpus.iter().take(e.ranks as usize).collect();
        let free: u64 = used
            .iter()
            .map(|g| g.memory_free_mib.unwrap_or(g.memory_total_mib) * MIB)
            .sum();
        (
            free,
            format!(
                "the free memory of GPU{} {}",
                if used.len() == 1 { "" } else { "s" },
                used.iter()
                    .map(|g| g.index.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
    };
    EnginePlan {
        profile: profile.id.clone(),
        ranks: e.ranks,
        kv_cache_fraction: e.kv_cache_fraction,
        kv_memory_bytes,
        kv_cache_bytes: (kv_memory_bytes as f64 * e.kv_cache_fraction) as u64,
        kv_basis,
        max_batch_tokens: e.max_batch_tokens,
        max_running: e.max_running,
        weight_precision: e.weight_precision.as_str().to_string(),
    }
}
