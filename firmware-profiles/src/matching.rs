//! Which profile fits a box, and why the others do not.
//!
//! A profile matches when the box has its kind of GPU (PCI device ids, memory, NVSwitch or
//! not) and no more GPUs than it names. Fewer is still a match, so a box that lost a GPU
//! is checked against its own profile and told which GPU is missing, instead of matching
//! nothing. Among matches the exact GPU count wins, then the most specific profile.

use serde::Serialize;

use crate::inventory::Inventory;
use crate::plural;
use crate::profile::Profile;

/// One profile's fit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Candidate {
    pub id: String,
    pub name: String,
    pub matched: bool,
    /// Why it does not match (empty when it does).
    pub reasons: Vec<String>,
}

/// The profile picked for a box, and how.
#[derive(Debug, Clone, Serialize)]
pub struct Selection {
    pub profile: Option<Profile>,
    /// How it was picked, or why none was, in a sentence.
    pub how: String,
    /// Every known profile's fit, in the order given.
    pub candidates: Vec<Candidate>,
}

/// Why `profile` does not fit `inv`; empty when it does.
pub fn mismatches(profile: &Profile, inv: &Inventory) -> Vec<String> {
    let mut out = Vec::new();
    let found = inv.gpus.len();
    if profile.cpu_only() {
        if found > 0 {
            out.push(format!(
                "the box has {found} GPU{}; this profile is for a box without GPUs",
                plural(found)
            ));
        }
        return out;
    }
    let m = &profile.matching;
    if found == 0 {
        out.push("no GPU found".into());
        return out;
    }
    if found > m.gpu_count as usize {
        out.push(format!(
            "the box has {found} GPUs; this profile has {}",
            m.gpu_count
        ));
    }
    let ids = profile.device_ids();
    let mut foreign: Vec<String> = Vec::new();
    for g in &inv.gpus {
        if !g.device_id().is_some_and(|d| ids.contains(&d)) {
            let what = format!("{} ({})", g.name, g.pci_device_id);
            if !foreign.contains(&what) {
                foreign.push(what);
            }
        }
    }
    if !foreign.is_empty() {
        out.push(format!(
            "GPU model {} is not one of {}",
            foreign.join(", "),
            m.pci_device_ids.join(", ")
        ));
    }
    if let Some(min) = m.min_gpu_memory_mib
        && let Some(g) = inv.gpus.iter().find(|g| g.memory_total_mib < min)
    {
        out.push(format!(
            "GPU {} has {} MiB of memory, below {min} MiB",
            g.index, g.memory_total_mib
        ));
    }
    match (m.nvswitch, inv.nvswitch_count) {
        (Some(true), Some(0)) => out.push("no NVSwitch found; this profile needs them".into()),
        (Some(false), Some(n)) if n > 0 => out.push(format!(
            "the box has {n} NVSwitch{}; this profile is for one without",
            if n == 1 { "" } else { "es" }
        )),
        _ => {}
    }
    out
}

/// Picks the profile for `inv`: `named` when given (the configuration's choice, used even
/// when it does not match, which the report then shows), else the best match.
pub fn select(profiles: &[Profile], inv: &Inventory, named: Option<&Profile>) -> Selection {
    let candidates: Vec<Candidate> = profiles
        .iter()
        .map(|p| {
            let reasons = mismatches(p, inv);
            Candidate {
                id: p.id.clone(),
                name: p.name.clone(),
                matched: reasons.is_empty(),
                reasons,
            }
        })
        .collect();
    if let Some(p) = named {
        let reasons = mismatches(p, inv);
        let how = if reasons.is_empty() {
            format!(
                "`{}` was named in the configuration and matches this box",
                p.id
            )
        } else {
            format!(
                "`{}` was named in the configuration although it does not match this box: {}",
                p.id,
                reasons.join("; ")
            )
        };
        return Selection {
            profile: Some(p.clone()),
            how,
            candidates,
        };
    }
    let found = inv.gpus.len() as i64;
    let best = profiles
        .iter()
        .zip(&candidates)
        .filter(|(_, c)| c.matched)
        .map(|(p, _)| p)
        .min_by_key(|p| {
            (
                (i64::from(p.matching.gpu_count) - found).abs(),
                // More specific first: a memory floor and an NVSwitch rule narrow the box.
                std::cmp::Reverse(p.matching.min_gpu_memory_mib.unwrap_or(0)),
                std::cmp::Reverse(u8::from(p.matching.nvswitch.is_some())),
                p.id.clone(),
            )
        });
    let matching = candidates.iter().filter(|c| c.matched).count();
    match best {
        Some(p) => {
            let how = if matching == 1 {
                format!("`{}` is the only profile that matches this box", p.id)
            } else {
                format!(
                    "`{}` is the closest of the {matching} profiles that match this box ({} GPU{} found, {} in the profile)",
                    p.id,
                    found,
                    plural(found as usize),
                    p.matching.gpu_count
                )
            };
            Selection {
                profile: Some(p.clone()),
                how,
                candidates,
            }
        }
        None => Selection {
            profile: None,
            how: "no profile matches this box".into(),
            candidates,
        },
    }
}
