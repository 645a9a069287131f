//! Fit estimates: `GET /admin/v1/models/{id}/fit` and `oasis model fit --json`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct FitAnswer {
    pub model: String,
    pub profile: String,
    /// Where the model's bytes go.
    pub footprint: ModelFootprint,
    pub fit: FitReport,
}

/// The estimate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FitReport {
    pub fits: bool,
    /// `gpu` or `host`.
    pub target: String,
    pub ranks: u64,
    pub context_tokens: u64,
    pub weights_bytes_per_rank: u64,
    pub overhead_bytes_per_rank: u64,
    pub free_bytes_per_rank: u64,
    pub kv_bytes_per_rank: u64,
    pub kv_bytes_per_sequence: u64,
    /// Sequences of `context_tokens` that fit at once, over all ranks.
    pub sequences: u64,
    /// The least the model needs: weights, overhead and one sequence per rank.
    pub needs_bytes: u64,
    pub has_bytes: u64,
    pub summary: String,
}

/// Where a model's bytes go (the engine's `fit::Footprint`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ModelFootprint {
    /// Weights every rank holds: embeddings, attention, dense and shared feed-forward
    /// layers, routers, norms, output head.
    pub replicated_bytes: u64,
    /// The routed experts' weights, spread over the ranks.
    pub expert_bytes: u64,
    /// Routed experts per MoE layer (0 for a dense model).
    pub n_experts: u64,
    /// Values the cache keeps per token over all layers (keys and values, or MLA's latent).
    pub cache_values_per_token: u64,
    /// Bytes per cached value in the CPU engine.
    pub cpu_cache_value_bytes: u64,
    /// Bytes of activations per token of a step.
    pub activation_bytes_per_token: u64,
    pub parameters: u64,
}
