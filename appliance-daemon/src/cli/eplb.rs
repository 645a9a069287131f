//! `oasis eplb`: plans where the replicas of each MoE expert live, with DeepSeek's
//! expert-parallel load balancer (`engine::eplb`), from a JSON file of per-expert loads.
//!
//! Input: `{"weight": [[load per expert] per layer], "num_replicas", "num_groups",
//! "num_nodes", "num_gpus"}`. Output, one JSON line: the placement (`phy2log`, `log2phy`,
//! `logcnt`, as the reference returns them), the `policy` taken and, per layer, the `balance`
//! it reaches (the busiest GPU's load over the mean; 1.0 is perfect).

use std::io::Read;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use engine::eplb;
use serde::Deserialize;

/// The largest input file read: far above any real load table (a 1,024-layer, 16,384-expert
/// table of 12-digit loads is about 200 MiB; real ones are a few hundred KiB).
const MAX_INPUT_BYTES: u64 = 256 << 20;

#[derive(Debug, Args)]
pub struct EplbArgs {
    /// JSON file: {"weight": [[...]], "num_replicas", "num_groups", "num_nodes", "num_gpus"}.
    #[arg(long, value_name = "FILE")]
    pub input: PathBuf,
}

/// The input file, as the reference's `rebalance_experts` takes its arguments.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Input {
    weight: Vec<Vec<f64>>,
    num_replicas: usize,
    num_groups: usize,
    num_nodes: usize,
    num_gpus: usize,
}

pub fn eplb(args: &EplbArgs) -> Result<()> {
    let path = &args.input;
    let input = read_input(path).with_context(|| path.display().to_string())?;
    let placement = eplb::rebalance_experts(
        &input.weight,
        input.num_replicas,
        input.num_groups,
        input.num_nodes,
        input.num_gpus,
    )
    .with_context(|| format!("{}: cannot balance", path.display()))?;
    let balance = eplb::gpu_balance(&input.weight, &placement, input.num_gpus);
    let doc = serde_json::json!({
        "policy": eplb::policy_name(input.num_groups, input.num_nodes),
        "phy2log": placement.phy2log,
        "log2phy": placement.log2phy,
        "logcnt": placement.logcnt,
        "balance": balance,
    });
    println!("{doc}");
    Ok(())
}

fn read_input(path: &std::path::Path) -> Result<Input> {
    let file = std::fs::File::open(path).context("cannot open")?;
    let mut text = String::new();
    file.take(MAX_INPUT_BYTES + 1)
        .read_to_string(&mut text)
        .context("cannot read")?;
    if text.len() as u64 > MAX_INPUT_BYTES {
        bail!(
            "the file is larger than the {} MiB limit",
            MAX_INPUT_BYTES >> 20
        );
    }
    // serde would also take the struct's fields as an array; only an object is an input.
    if !text.trim_start().starts_with('{') {
        bail!(
            "not a valid input: expected a JSON object with `weight`, `num_replicas`, `num_groups`, `num_nodes` and `num_gpus`"
        );
    }
    let mut de = serde_json::Deserializer::from_str(&text);
    let input: Input = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() || path == "." {
            anyhow::anyhow!("not a valid input: {inner}")
        } else {
            anyhow::anyhow!("`{path}`: {inner}")
        }
    })?;
    de.end().context("not a valid input")?;
    Ok(input)
}
