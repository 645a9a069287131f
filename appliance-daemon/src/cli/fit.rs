//! `oasis model fit`: will a model run on this box (or a recorded one) under its profile,
//! and how many sequences at once? Offline: from a GGUF file, a checkpoint folder, or a
//! checkpoint's `config.json` alone (a model not yet copied to the box).

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use engine::fit::Footprint;

use super::profile::{Sources, select};

#[derive(Debug, Args)]
pub struct FitArgs {
    /// A GGUF file, a checkpoint folder, or a checkpoint's `config.json`.
    pub model: PathBuf,
    #[command(flatten)]
    pub sources: Sources,
    /// Size for this profile (an id or a `.toml` path) instead of the matching one.
    #[arg(long, env = "OASIS_PROFILE", value_name = "ID|PATH")]
    pub profile: Option<String>,
    /// Tokens per sequence (prompt and output).
    #[arg(long, default_value_t = 4096, value_name = "N")]
    pub context: u64,
    /// Print JSON: the footprint, the plan and the estimate.
    #[arg(long)]
    pub json: bool,
}

pub fn fit(args: &FitArgs) -> Result<()> {
    if args.context == 0 {
        bail!("--context must be at least 1 token");
    }
    let footprint = if args.model.extension().is_some_and(|e| e == "json") {
        let text = std::fs::read_to_string(&args.model)
            .with_context(|| format!("cannot read {}", args.model.display()))?;
        let doc: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", args.model.display()))?;
        let cfg = engine::model::hf::config::HfConfig::parse(&doc)
            .with_context(|| format!("config {}", args.model.display()))?;
        Footprint::of_config(&cfg)
    } else {
        let model = engine::Model::load(&args.model).context("cannot load model")?;
        Footprint::of_model(&model)
    };
    let (_, inv, sel) = select(&args.sources, args.profile.as_deref())?;
    let Some(profile) = &sel.profile else {
        bail!("no firmware profile matches this box; name one with --profile");
    };
    let plan = firmware_profiles::plan::plan(profile, &inv);
    let report = crate::fit::estimate(&footprint, &inv, &plan, args.context);
    if args.json {
        let doc = serde_json::json!({
            "profile": profile.id,
            "footprint": footprint,
            "plan": plan,
            "fit": report,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        println!("Box: {} (profile {})", inv.source, profile.id);
        println!(
            "Model: {} parameters, weights {:.1} GB ({:.1} GB in routed experts), cache {} values per token",
            footprint.parameters,
            footprint.weight_bytes() as f64 / 1e9,
            footprint.expert_bytes as f64 / 1e9,
            footprint.cache_values_per_token
        );
        println!("{}", report.summary);
    }
    if !report.fits {
        bail!(
            "the model does not fit this box under the `{}` profile",
            profile.id
        );
    }
    Ok(())
}
