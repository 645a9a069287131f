//! Fit estimates: will a model run on this box under its profile, and how many sequences of
//! a given context at once? Weights (the replicated part on every rank, the routed experts
//! split over the ranks), runtime and activation overhead and the KV cache, against the
//! GPUs' free memory (or the host's), computed offline from the files or the config alone.

use engine::fit::Footprint;
use firmware_profiles::{EnginePlan, Inventory};
pub use oasis_api::FitReport;
use oasis_api::ModelFootprint;

/// Per GPU rank: the CUDA context, NCCL buffers and GEMM workspaces. A rule of thumb
/// (vLLM and SGLang leave a few GiB outside their KV pools), not a measurement.
pub const GPU_RUNTIME_BYTES: u64 = 2 << 30;
/// The CPU engine's own buffers besides weights, cache and activations.
pub const CPU_RUNTIME_BYTES: u64 = 256 << 20;
/// Bytes per cached value on a GPU (BF16).
const GPU_CACHE_VALUE_BYTES: u64 = 2;

/// Estimates `fp` on `inv` under `plan` for sequences of `context` tokens. A GPU box is
/// sized for the GPU engine (ranks from the plan, a BF16 cache); a box without GPUs for
/// the CPU engine (one rank, the host's available memory, its cache precision).
pub fn estimate(fp: &Footprint, inv: &Inventory, plan: &EnginePlan, context: u64) -> FitReport {
    let gpu = !inv.gpus.is_empty();
    let (ranks, free, value_bytes, runtime) = if gpu {
        let ranks = u64::from(plan.ranks.max(1)).min(inv.gpus.len() as u64);
        let free = inv
            .gpus
            .iter()
            .take(ranks as usize)
            .map(|g| g.memory_free_mib.unwrap_or(g.memory_total_mib) << 20)
            .min()
            .unwrap_or(0);
        (ranks, free, GPU_CACHE_VALUE_BYTES, GPU_RUNTIME_BYTES)
    } else {
        (
            1,
            inv.host.memory_available_bytes,
            fp.cpu_cache_value_bytes,
            CPU_RUNTIME_BYTES,
        )
    };
    // Experts are whole: a rank holds ceil(experts / ranks) of each layer's.
    let experts_per_rank = fp
        .expert_bytes
        .checked_div(fp.n_experts)
        .map_or(0, |per_expert| per_expert * fp.n_experts.div_ceil(ranks));
    let weights = fp.replicated_bytes + experts_per_rank;
    let overhead = runtime + fp.activation_bytes_per_token * u64::from(plan.max_batch_tokens);
    let per_sequence = fp.cache_values_per_token * value_bytes * context;
    let left = free.saturating_sub(weights + overhead);
    let kv = (left as f64 * plan.kv_cache_fraction) as u64;
    let per_rank = kv.checked_div(per_sequence).unwrap_or(0);
    let sequences = per_rank * ranks;
    let needs = ranks * (weights + overhead + per_sequence);
    let has = ranks * free;
    let fits = per_rank >= 1;
    let (where_, each) = if gpu {
        let ep = if fp.n_experts > 0 && ranks > 1 {
            format!(" with EP{ranks}")
        } else {
            String::new()
        };
        (
            format!("on {ranks} GPU{}{ep}", if ranks == 1 { "" } else { "s" }),
            " per GPU",
        )
    } else {
        ("in the host's memory".to_string(), "")
    };
    let summary = if fits {
        format!(
            "fits {where_}: {sequences} concurrent sequences of {context} tokens (weights {}{each}, KV cache {}{each})",
            gb(weights),
            gb(kv)
        )
    } else {
        format!(
            "does not fit {where_}: needs {}, has {} (weights {} and overhead {}{each} of {} free)",
            gb(needs),
            gb(has),
            gb(weights),
            gb(overhead),
            gb(free)
        )
    };
    FitReport {
        fits,
        target: if gpu { "gpu" } else { "host" }.into(),
        ranks,
        context_tokens: context,
        weights_bytes_per_rank: weights,
        overhead_bytes_per_rank: overhead,
        free_bytes_per_rank: free,
        kv_bytes_per_rank: kv,
        kv_bytes_per_sequence: per_sequence,
        sequences,
        needs_bytes: needs,
        has_bytes: has,
        summary,
    }
}

/// Bytes in decimal megabytes, gigabytes or terabytes, as disks and datasheets count them.
fn gb(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1e12 {
        format!("{:.2} TB", b / 1e12)
    } else if b >= 1e9 {
        format!("{:.1} GB", b / 1e9)
    } else {
        format!("{:.1} MB", b / 1e6)
    }
}

/// What the API reports of a footprint.
pub fn footprint_view(f: &Footprint) -> ModelFootprint {
    ModelFootprint {
        replicated_bytes: f.replicated_bytes,
        expert_bytes: f.expert_bytes,
        n_experts: f.n_experts,
        cache_values_per_token: f.cache_values_per_token,
        cpu_cache_value_bytes: f.cpu_cache_value_bytes,
        activation_bytes_per_token: f.activation_bytes_per_token,
        parameters: f.parameters,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(path: &str) -> String {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(path);
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    fn deepseek_v3() -> Footprint {
        let doc: serde_json::Value =
            serde_json::from_str(&fixture("tests/fixtures/configs/deepseek-v3.json"))
                .unwrap_or_else(|e| panic!("{e}"));
        let cfg =
            engine::model::hf::config::HfConfig::parse(&doc).unwrap_or_else(|e| panic!("{e}"));
        Footprint::of_config(&cfg)
    }

    fn on(profile: &str) -> (Inventory, EnginePlan) {
        let inv = Inventory::from_json(&fixture(&format!(
            "tests/fixtures/inventories/{profile}.json"
        )))
        .unwrap_or_else(|e| panic!("{e}"));
        let all = firmware_profiles::builtin().unwrap_or_else(|e| panic!("{e}"));
        let p = firmware_profiles::resolve(profile, &all)
            .unwrap_or_else(|e| panic!("{e}"))
            .profile;
        let plan = firmware_profiles::plan::plan(&p, &inv);
        (inv, plan)
    }

    /// DeepSeek-V3 from its config.json, counted by hand (61 layers; MLA: q_a 1536x7168,
    /// q_b 24576x1536, kv_a 576x7168, kv_b 32768x512, o 7168x16384; 3 dense FFNs of
    /// 3 x 18432x7168; 58 MoE layers of 256 + 1 shared experts of 3 x 2048x7168 and a
    /// 256x7168 router + bias; norms; untied 129280x7168 embeddings and head): 671,026,419,200
    /// parameters. Bytes: projections FP8 + an f32 scale per 128x128 block, the rest BF16
    /// (router bias f32): 19,082,195,296 replicated, 654,068,416,512 in routed experts.
    #[test]
    fn deepseek_v3_footprint_from_its_config() {
        let fp = deepseek_v3();
        assert_eq!(fp.parameters, 671_026_419_200);
        assert_eq!(fp.replicated_bytes, 19_082_195_296);
        assert_eq!(fp.expert_bytes, 654_068_416_512);
        assert_eq!(fp.n_experts, 256);
        // MLA caches 512 + 64 values per token and layer.
        assert_eq!(fp.cache_values_per_token, 61 * 576);
        // 2 bytes x (4 x 7168 + 3 x max(18432, 8 x 2048 + 2048)).
        assert_eq!(fp.activation_bytes_per_token, 167_936);
    }

    /// 8x H200 (143,251 MiB free each), EP8, 16,384 tokens per step, KV fraction 0.85,
    /// 4096-token sequences. Per GPU: weights 19,082,195,296 + 654,068,416,512 / 8 =
    /// 100,840,747,360; overhead 2 GiB + 167,936 x 16,384 = 4,898,947,072; free
    /// 150,209,560,576; left 44,469,866,144; KV 0.85 of it = 37,799,386,222; a sequence
    /// 35,136 x 2 x 4096 = 287,834,112 -> 131 per GPU, 1048 in all.
    #[test]
    fn deepseek_v3_fits_on_eight_h200() {
        let (inv, plan) = on("hgx-h200-8");
        let r = estimate(&deepseek_v3(), &inv, &plan, 4096);
        assert!(r.fits, "{}", r.summary);
        assert_eq!(r.weights_bytes_per_rank, 100_840_747_360);
        assert_eq!(r.overhead_bytes_per_rank, 4_898_947_072);
        assert_eq!(r.free_bytes_per_rank, 150_209_560_576);
        assert_eq!(r.kv_bytes_per_sequence, 287_834_112);
        assert_eq!(r.kv_bytes_per_rank, 37_799_386_222);
        assert_eq!(r.sequences, 1048);
        assert_eq!(
            r.summary,
            "fits on 8 GPUs with EP8: 1048 concurrent sequences of 4096 tokens (weights 100.8 GB per GPU, KV cache 37.8 GB per GPU)"
        );
    }

    /// 8x H20 (97,351 MiB = 102,079,922,176 bytes free each), 8192 tokens per step:
    /// attention data-parallel replicates 19.1 GB per GPU, so weights 100,840,747,360 plus
    /// overhead 2 GiB + 167,936 x 8192 = 3,523,215,360 exceed the free memory. Needs
    /// 8 x (100,840,747,360 + 3,523,215,360 + 287,834,112) = 837,214,374,656; has
    /// 8 x 102,079,922,176 = 816,639,377,408.
    #[test]
    fn deepseek_v3_does_not_fit_on_eight_h20_with_replicated_attention() {
        let (inv, plan) = on("hgx-h20-8");
        let r = estimate(&deepseek_v3(), &inv, &plan, 4096);
        assert!(!r.fits);
        assert_eq!(r.needs_bytes, 837_214_374_656);
        assert_eq!(r.has_bytes, 816_639_377_408);
        assert_eq!(
            r.summary,
            "does not fit on 8 GPUs with EP8: needs 837.2 GB, has 816.6 GB (weights 100.8 GB and overhead 3.5 GB per GPU of 102.1 GB free)"
        );
    }
}
