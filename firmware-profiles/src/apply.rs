//! Applying a profile's GPU settings: the list of changes it takes (each with its value
//! before and after), and running that list through a [`GpuControl`] (NVML in the
//! daemon) or, for a dry run, through nothing.
//!
//! Only settings the profile pins and the GPU does not already have become changes. ECC
//! and MIG changes take effect at the next reboot and say so.

use serde::Serialize;

use crate::inventory::{GpuInventory, Inventory};
use crate::on_off;
use crate::profile::{ComputeMode, Profile};

/// A setting with the value to give it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "setting", content = "value", rename_all = "snake_case")]
pub enum Setting {
    Persistence(bool),
    Ecc(bool),
    ComputeMode(ComputeMode),
    Mig(bool),
    PowerLimitW(u32),
    LockedClocksMhz([u32; 2]),
}

impl Setting {
    /// The setting's name as reports show it.
    pub fn name(&self) -> &'static str {
        match self {
            Setting::Persistence(_) => "persistence",
            Setting::Ecc(_) => "ecc",
            Setting::ComputeMode(_) => "compute_mode",
            Setting::Mig(_) => "mig",
            Setting::PowerLimitW(_) => "power_limit",
            Setting::LockedClocksMhz(_) => "locked_clocks",
        }
    }

    /// The value as reports show it.
    pub fn value(&self) -> String {
        match *self {
            Setting::Persistence(b) | Setting::Ecc(b) | Setting::Mig(b) => on_off(Some(b)).into(),
            Setting::ComputeMode(m) => m.as_str().into(),
            Setting::PowerLimitW(w) => format!("{w} W"),
            Setting::LockedClocksMhz([lo, hi]) => format!("{lo}..{hi} MHz"),
        }
    }

    /// Whether the GPU takes the new value only at the next reboot.
    pub fn needs_reboot(&self) -> bool {
        matches!(self, Setting::Ecc(_) | Setting::Mig(_))
    }
}

/// One change to one GPU.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    pub gpu: u32,
    pub setting: Setting,
    pub before: String,
    pub after: String,
    pub needs_reboot: bool,
}

/// A change and what became of it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outcome {
    #[serde(flatten)]
    pub change: Change,
    /// `dry_run`, `applied`, `pending_reboot` or `failed`.
    pub result: &'static str,
    /// Why it failed.
    pub error: Option<String>,
}

/// What sets GPU settings (NVML in the daemon).
pub trait GpuControl {
    fn set(&mut self, gpu: u32, setting: Setting) -> Result<(), String>;
}

/// The changes that bring `inv`'s GPUs to `profile`'s settings, and the settings that
/// cannot be made (a power limit outside what a GPU accepts).
pub fn changes(profile: &Profile, inv: &Inventory) -> (Vec<Change>, Vec<String>) {
    let g = &profile.gpu;
    let mut out = Vec::new();
    let mut impossible = Vec::new();
    for gpu in &inv.gpus {
        let mut want = |setting: Setting, now: Option<String>| {
            let after = setting.value();
            if now.as_deref() != Some(after.as_str()) {
                out.push(Change {
                    gpu: gpu.index,
                    setting,
                    before: now.unwrap_or_else(|| "unknown".into()),
                    after,
                    needs_reboot: setting.needs_reboot(),
                });
            }
        };
        if let Some(v) = g.persistence {
            want(
                Setting::Persistence(v),
                gpu.persistence.map(|b| on_off(Some(b)).into()),
            );
        }
        if let Some(v) = g.compute_mode {
            want(Setting::ComputeMode(v), gpu.compute_mode.clone());
        }
        if let Some(w) = g.power_limit_w {
            match power_range_problem(gpu, w) {
                Some(why) => impossible.push(why),
                None => want(
                    Setting::PowerLimitW(w),
                    gpu.power_limit_w.map(|x| format!("{x} W")),
                ),
            }
        }
        if let Some(c) = g.locked_clocks_mhz {
            want(
                Setting::LockedClocksMhz(c),
                gpu.locked_clocks_mhz
                    .map(|[lo, hi]| format!("{lo}..{hi} MHz")),
            );
        }
        // ECC and MIG: compared with what the GPU will have after a reboot, so a change
        // already pending is not made twice.
        if let Some(v) = g.ecc {
            want(
                Setting::Ecc(v),
                gpu.ecc_pending.or(gpu.ecc).map(|b| on_off(Some(b)).into()),
            );
        }
        if let Some(v) = g.mig {
            want(
                Setting::Mig(v),
                gpu.mig_pending.or(gpu.mig).map(|b| on_off(Some(b)).into()),
            );
        }
    }
    (out, impossible)
}

fn power_range_problem(gpu: &GpuInventory, w: u32) -> Option<String> {
    let (lo, hi) = (gpu.power_limit_min_w?, gpu.power_limit_max_w?);
    (w < lo || w > hi).then(|| {
        format!(
            "GPU {}: a {w} W power limit is outside what it accepts ({lo}..{hi} W)",
            gpu.index
        )
    })
}

/// Makes `changes` through `control`, or reports them as a dry run when it is `None`.
/// A failed change does not stop the others.
pub fn apply(changes: &[Change], mut control: Option<&mut dyn GpuControl>) -> Vec<Outcome> {
    changes
        .iter()
        .map(|c| {
            let (result, error) = match control.as_deref_mut() {
                None => ("dry_run", None),
                Some(ctl) => match ctl.set(c.gpu, c.setting) {
                    Ok(()) if c.needs_reboot => ("pending_reboot", None),
                    Ok(()) => ("applied", None),
                    Err(e) => ("failed", Some(e)),
                },
            };
            Outcome {
                change: c.clone(),
                result,
                error,
            }
        })
        .collect()
}

/// One line per outcome: `GPU 3  power_limit  600 W -> 700 W  applied`.
pub fn render(outcomes: &[Outcome]) -> String {
    if outcomes.is_empty() {
        return "Nothing to change: every pinned setting already has its value.\n".into();
    }
    let mut out = String::new();
    for o in outcomes {
        let c = &o.change;
        out.push_str(&format!(
            "GPU {:<2}  {:<13}  {} -> {}  {}{}\n",
            c.gpu,
            c.setting.name(),
            c.before,
            c.after,
            o.result.replace('_', " "),
            o.error
                .as_deref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        ));
    }
    out
}
