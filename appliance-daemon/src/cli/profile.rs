//! `oasis profile`: the firmware profiles on this box. `check` selects the box's profile
//! and prints its compliance report (exit status 1 when it fails); `apply` sets the
//! profile's GPU settings through NVML as root (or lists them with `--dry-run`), each
//! change written to the audit log; `inventory` prints what the box has; `list` and
//! `show` the profiles known.
//!
//! These read the hardware themselves (NVML, the host), so they work with or without a
//! running daemon; `GET /admin/v1/profile` is the daemon's view.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use firmware_profiles::apply;
use firmware_profiles::compliance::{self, Verdict};
use firmware_profiles::matching::Selection;
use firmware_profiles::{Inventory, Loaded};

use crate::telemetry::inventory;

#[derive(Debug, Subcommand)]
pub enum ProfileCommand {
    /// The known profiles and whether each matches this box.
    List(ListArgs),
    /// A profile's TOML, as the daemon reads it.
    Show(ShowArgs),
    /// Check this box against its profile and print the compliance report (exit status 1
    /// when it fails or no profile matches).
    Check(CheckArgs),
    /// Set the profile's GPU settings through NVML (as root); `--dry-run` lists them.
    Apply(ApplyArgs),
    /// This box's hardware inventory, as profiles are matched against it.
    Inventory(InventoryArgs),
}

/// Where the profiles and the hardware come from.
#[derive(Debug, Args)]
pub struct Sources {
    /// A folder of extra profiles (`*.toml`) next to the built-in ones.
    #[arg(long, env = "OASIS_PROFILES_DIR", value_name = "DIR")]
    pub profiles_dir: Option<PathBuf>,
    /// A recorded inventory (JSON) to use in place of this box's hardware.
    #[arg(long, env = "OASIS_INVENTORY", value_name = "FILE")]
    pub inventory: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub sources: Sources,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The profile's id, or a `.toml` path.
    pub profile: String,
    #[arg(long, env = "OASIS_PROFILES_DIR", value_name = "DIR")]
    pub profiles_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub sources: Sources,
    /// Check against this profile (an id or a `.toml` path) instead of the matching one.
    #[arg(long, env = "OASIS_PROFILE", value_name = "ID|PATH")]
    pub profile: Option<String>,
    /// Print JSON: the selection, every profile's fit, the report and the engine plan.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub sources: Sources,
    /// Apply this profile (an id or a `.toml` path) instead of the matching one.
    #[arg(long, env = "OASIS_PROFILE", value_name = "ID|PATH")]
    pub profile: Option<String>,
    /// List the changes without making them.
    #[arg(long)]
    pub dry_run: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// The data directory whose audit log records the changes [default: as `oasis serve`].
    #[arg(long, env = "OASIS_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct InventoryArgs {
    /// Print JSON (what `--inventory` reads back).
    #[arg(long)]
    pub json: bool,
}

pub fn profile(cmd: &ProfileCommand) -> Result<()> {
    match cmd {
        ProfileCommand::List(a) => list(a),
        ProfileCommand::Show(a) => show(a),
        ProfileCommand::Check(a) => check(a),
        ProfileCommand::Apply(a) => apply_cmd(a),
        ProfileCommand::Inventory(a) => inventory_cmd(a),
    }
}

/// The profiles, the inventory and the selection (the named profile, else the match).
pub fn select(
    sources: &Sources,
    name: Option<&str>,
) -> Result<(Vec<Loaded>, Inventory, Selection)> {
    let s = crate::profile::select(
        sources.profiles_dir.as_deref(),
        sources.inventory.as_deref(),
        name,
    )?;
    Ok((s.all, s.inventory, s.selection))
}

fn list(args: &ListArgs) -> Result<()> {
    let (all, _, sel) = select(&args.sources, None)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&sel.candidates)?);
        return Ok(());
    }
    let chosen = sel.profile.as_ref().map(|p| p.id.as_str());
    for (l, c) in all.iter().zip(&sel.candidates) {
        let mark = if Some(c.id.as_str()) == chosen {
            "*"
        } else if c.matched {
            "+"
        } else {
            " "
        };
        println!("{mark} {:<12} {}  ({})", c.id, c.name, l.origin);
    }
    println!("\n* selected for this box, + also matches; {}", sel.how);
    Ok(())
}

fn show(args: &ShowArgs) -> Result<()> {
    let all = firmware_profiles::load_all(args.profiles_dir.as_deref())?;
    let l = firmware_profiles::resolve(&args.profile, &all)?;
    match l.origin.strip_prefix("builtin:") {
        Some(name) => {
            let text = firmware_profiles::BUILTIN
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, t)| *t)
                .unwrap_or_default();
            print!("{text}");
        }
        None => print!("{}", std::fs::read_to_string(&l.origin)?),
    }
    Ok(())
}

fn check(args: &CheckArgs) -> Result<()> {
    let (_, inv, sel) = select(&args.sources, args.profile.as_deref())?;
    let report = sel.profile.as_ref().map(|p| compliance::check(p, &inv));
    let plan = sel
        .profile
        .as_ref()
        .map(|p| firmware_profiles::plan::plan(p, &inv));
    if args.json {
        let doc = serde_json::json!({
            "profile": sel.profile.as_ref().map(|p| &p.id),
            "how": sel.how,
            "candidates": sel.candidates,
            "report": report,
            "plan": plan,
            "inventory": inv,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        println!("Box: {}", inv.source);
        if let Some(e) = &inv.nvml_error {
            println!("GPUs: none ({e})");
        }
        println!("{}", sel.how);
        let others: Vec<_> = sel
            .candidates
            .iter()
            .filter(|c| sel.profile.as_ref().is_none_or(|p| p.id != c.id) && !c.matched)
            .collect();
        if !others.is_empty() {
            println!("Not matching:");
            for c in others {
                println!("  {}: {}", c.id, c.reasons.join("; "));
            }
        }
        println!();
        if let Some(r) = &report {
            print!("{}", r.render());
        }
        if let Some(p) = &plan {
            println!(
                "\nEngine plan: {} rank{}, KV cache {:.0}% of {} ({:.1} GiB), {} tokens per step, {} sequences at once, weights {}",
                p.ranks,
                if p.ranks == 1 { "" } else { "s" },
                p.kv_cache_fraction * 100.0,
                p.kv_basis,
                p.kv_cache_bytes as f64 / (1u64 << 30) as f64,
                p.max_batch_tokens,
                p.max_running,
                p.weight_precision
            );
        }
    }
    match report {
        None => bail!("no firmware profile matches this box"),
        Some(r) if r.verdict == Verdict::Fail => {
            bail!("this box fails the `{}` profile's check", r.profile)
        }
        Some(_) => Ok(()),
    }
}

fn apply_cmd(args: &ApplyArgs) -> Result<()> {
    let (_, inv, sel) = select(&args.sources, args.profile.as_deref())?;
    let Some(p) = &sel.profile else {
        bail!("no firmware profile matches this box; name one with --profile");
    };
    let (changes, problems) = apply::changes(p, &inv);
    let outcomes = if args.dry_run {
        apply::apply(&changes, None)
    } else {
        if args.sources.inventory.is_some() {
            bail!("--inventory describes another box: only --dry-run can use it");
        }
        let uid = crate::audit::euid();
        if uid != Some(0) {
            bail!(
                "setting GPU clocks, power and modes through NVML needs root (running as uid {}); use sudo, or --dry-run to list the changes",
                uid.map_or_else(|| "unknown".into(), |u| u.to_string())
            );
        }
        if changes.is_empty() {
            Vec::new()
        } else {
            let mut control =
                inventory::NvmlControl::open().map_err(|e| anyhow::anyhow!("cannot apply: {e}"))?;
            let out = apply::apply(&changes, Some(&mut control));
            let data_dir = args.data_dir.clone().unwrap_or_else(crate::paths::data_dir);
            crate::profile::audit_outcomes(&data_dir, "oasis profile apply (uid 0)", &p.id, &out)?;
            out
        }
    };
    if args.json {
        let doc = serde_json::json!({
            "profile": p.id,
            "dry_run": args.dry_run,
            "changes": outcomes,
            "problems": problems,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        println!(
            "Profile {} on {}{}:",
            p.id,
            inv.source,
            if args.dry_run { " (dry run)" } else { "" }
        );
        for line in apply::render(&outcomes).lines() {
            println!("  {line}");
        }
        for why in &problems {
            println!("  cannot: {why}");
        }
        if outcomes.iter().any(|o| o.change.needs_reboot) {
            println!("ECC and MIG changes take effect after a reboot.");
        }
    }
    if outcomes.iter().any(|o| o.result == "failed") {
        bail!("some changes failed (see above)");
    }
    Ok(())
}

fn inventory_cmd(args: &InventoryArgs) -> Result<()> {
    let inv = inventory::live();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&inv)?);
        return Ok(());
    }
    let h = &inv.host;
    println!(
        "host: {} ({}, {} CPUs, {}), {:.1} GiB memory",
        h.hostname,
        h.cpu_model,
        h.cpu_cores,
        h.cpu_features.join(" "),
        h.memory_total_bytes as f64 / (1u64 << 30) as f64
    );
    match &inv.nvml_error {
        Some(e) => println!("GPUs: none ({e})"),
        None => {
            println!(
                "driver {} (CUDA {}), {} NVSwitch, fabric manager {}, P2P {}",
                inv.driver_version.as_deref().unwrap_or("?"),
                inv.cuda_driver_version.as_deref().unwrap_or("?"),
                inv.nvswitch_count.unwrap_or(0),
                match inv.fabric_manager_running {
                    Some(true) => "running",
                    Some(false) => "not running",
                    None => "unknown",
                },
                inv.p2p.as_deref().unwrap_or("-")
            );
            for g in &inv.gpus {
                println!(
                    "  GPU {}: {} ({}) {} MiB, VBIOS {}, power limit {} W",
                    g.index,
                    g.name,
                    g.pci_device_id,
                    g.memory_total_mib,
                    g.vbios.as_deref().unwrap_or("?"),
                    g.power_limit_w
                        .map_or_else(|| "?".into(), |w| w.to_string())
                );
            }
        }
    }
    Ok(())
}
