//! The compliance report: every check of a box against its profile, with what was
//! expected, what was found, a verdict and, for what is wrong, what to do about it.
//!
//! Verdicts: `fail` for what stops the box from serving as the profile intends (a missing
//! GPU, an old driver, ECC off, NVLink down), `warn` for what degrades it or could not be
//! read, `pass` otherwise. Settings that `oasis profile apply` can fix say so.

use serde::Serialize;

use crate::inventory::{GpuInventory, Inventory};
use crate::matching::mismatches;
use crate::profile::{P2p, Profile};
use crate::version::{Version, glob_match};
use crate::{on_off, plural};

/// How a check came out; the report's verdict is the worst of its checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    Warn,
    Fail,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Warn => "warn",
            Verdict::Fail => "fail",
        }
    }
}

/// One check.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    /// Stable name (`gpu.ecc`) for scripts and the UI.
    pub id: String,
    pub expected: String,
    pub found: String,
    pub verdict: Verdict,
    /// What to do, for a warning or failure.
    pub remedy: Option<String>,
}

/// A box checked against one profile.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub profile: String,
    pub profile_name: String,
    /// Where the inventory came from.
    pub source: String,
    pub verdict: Verdict,
    pub checks: Vec<Check>,
}

const APPLY: &str = "`oasis profile apply` sets it (as root), and the daemon re-applies it at every start with `profile_policy = \"apply\"`";

/// Checks `inv` against `profile`.
pub fn check(profile: &Profile, inv: &Inventory) -> Report {
    let mut checks = Vec::new();
    let mut add = |id: &str, expected: String, found: String, verdict: Verdict, remedy: &str| {
        checks.push(Check {
            id: id.to_string(),
            expected,
            found,
            verdict,
            remedy: (verdict != Verdict::Pass && !remedy.is_empty()).then(|| remedy.to_string()),
        });
    };
    let identity = mismatches(profile, inv);
    if !identity.is_empty() {
        add(
            "profile.match",
            "the box this profile describes".into(),
            identity.join("; "),
            Verdict::Fail,
            "pick the profile for this box (`oasis profile check` lists why each does not match), or add one",
        );
    }
    gpu_checks(profile, inv, &mut add);
    host_checks(profile, inv, &mut add);
    let verdict = checks
        .iter()
        .map(|c| c.verdict)
        .max()
        .unwrap_or(Verdict::Pass);
    Report {
        profile: profile.id.clone(),
        profile_name: profile.name.clone(),
        source: inv.source.clone(),
        verdict,
        checks,
    }
}

type Add<'a> = dyn FnMut(&str, String, String, Verdict, &str) + 'a;
/// Reads one on/off value of a GPU.
type Reading<'a> = &'a dyn Fn(&GpuInventory) -> Option<bool>;

fn gpu_checks(p: &Profile, inv: &Inventory, add: &mut Add<'_>) {
    let want = p.matching.gpu_count as usize;
    let gpus = &inv.gpus;
    let found = gpus.len();
    let count_verdict = if found == want {
        Verdict::Pass
    } else {
        Verdict::Fail
    };
    let count_remedy = if found < want {
        "a GPU is missing: look for it in `nvidia-smi -L` and the kernel log (`dmesg | grep -i xid`; XID 79 means it fell off the bus), then reseat or replace it"
    } else {
        "this box has more GPUs than the profile names: pick the profile for it"
    };
    add(
        "gpu.count",
        format!("{want} GPU{}", plural(want)),
        match &inv.nvml_error {
            Some(e) if found == 0 && want > 0 => format!("0 (NVML: {e})"),
            _ => found.to_string(),
        },
        count_verdict,
        count_remedy,
    );
    if p.cpu_only() || gpus.is_empty() {
        return;
    }
    let ids = p.device_ids();
    let wrong: Vec<&GpuInventory> = gpus
        .iter()
        .filter(|g| !g.device_id().is_some_and(|d| ids.contains(&d)))
        .collect();
    add(
        "gpu.model",
        format!("PCI device id {}", p.matching.pci_device_ids.join(" or ")),
        if wrong.is_empty() {
            summarize_names(gpus)
        } else {
            list(&wrong, |g| format!("{} ({})", g.name, g.pci_device_id))
        },
        verdict_if(!wrong.is_empty(), Verdict::Fail),
        "this box has other GPUs than the profile's: pick the profile for it",
    );
    if let Some(min) = p.matching.min_gpu_memory_mib {
        let small: Vec<&GpuInventory> = gpus.iter().filter(|g| g.memory_total_mib < min).collect();
        let least = gpus.iter().map(|g| g.memory_total_mib).min().unwrap_or(0);
        add(
            "gpu.memory",
            format!(">= {min} MiB per GPU"),
            if small.is_empty() {
                format!("{least} MiB or more on each of {}", gpus.len())
            } else {
                list(&small, |g| format!("{} MiB", g.memory_total_mib))
            },
            verdict_if(!small.is_empty(), Verdict::Fail),
            "a GPU reports less memory than its model has: check for retired pages or a MIG slice",
        );
    }
    if let Some(want_switch) = p.matching.nvswitch {
        let (found, verdict) = match inv.nvswitch_count {
            None => ("unknown".to_string(), Verdict::Warn),
            Some(n) => (
                if n == 0 {
                    "none".into()
                } else {
                    format!("{n} NVSwitch{}", if n == 1 { "" } else { "es" })
                },
                verdict_if((n > 0) != want_switch, Verdict::Fail),
            ),
        };
        add(
            "topology.nvswitch",
            if want_switch { "present" } else { "absent" }.into(),
            found,
            verdict,
            "check the NVSwitch driver (`ls /proc/driver/nvidia-nvswitch/devices`) and the fabric manager",
        );
    }
    software_checks(p, inv, add);
    settings_checks(p, gpus, add);
    topology_checks(p, inv, add);
    health_checks(p, gpus, add);
}

fn software_checks(p: &Profile, inv: &Inventory, add: &mut Add<'_>) {
    let s = &p.software;
    for (id, min, found, remedy) in [
        (
            "software.driver",
            &s.min_driver,
            &inv.driver_version,
            "install an NVIDIA data-center driver at least this new (and its matching fabric manager)",
        ),
        (
            "software.cuda_driver",
            &s.min_cuda_driver,
            &inv.cuda_driver_version,
            "install a driver whose CUDA version is at least this new",
        ),
    ] {
        let Some(min) = min else { continue };
        let (text, verdict) = match found {
            None => ("not found".to_string(), Verdict::Fail),
            Some(v) => {
                let old = match (Version::parse(v), Version::parse(min)) {
                    (Some(have), Some(need)) => have < need,
                    _ => true,
                };
                (v.clone(), verdict_if(old, Verdict::Fail))
            }
        };
        add(id, format!(">= {min}"), text, verdict, remedy);
    }
    if !s.vbios.is_empty() {
        let odd: Vec<&GpuInventory> = inv
            .gpus
            .iter()
            .filter(|g| {
                !g.vbios
                    .as_deref()
                    .is_some_and(|v| s.vbios.iter().any(|pat| glob_match(pat, v)))
            })
            .collect();
        add(
            "software.vbios",
            s.vbios.join(" or "),
            if odd.is_empty() {
                summarize(&inv.gpus, |g| g.vbios.clone().unwrap_or_default())
            } else {
                list(&odd, |g| {
                    g.vbios.clone().unwrap_or_else(|| "unknown".to_string())
                })
            },
            verdict_if(!odd.is_empty(), Verdict::Warn),
            "a VBIOS the profile was not qualified with: update it with the vendor's firmware tool",
        );
    }
    if s.fabric_manager == Some(true) {
        let (found, verdict) = match inv.fabric_manager_running {
            Some(true) => ("running", Verdict::Pass),
            Some(false) => ("not running", Verdict::Fail),
            None => ("unknown", Verdict::Warn),
        };
        add(
            "software.fabric_manager",
            "running".into(),
            found.into(),
            verdict,
            "NVLink across NVSwitches needs it: `systemctl enable --now nvidia-fabricmanager` (same version as the driver)",
        );
    }
}

fn settings_checks(p: &Profile, gpus: &[GpuInventory], add: &mut Add<'_>) {
    let g = &p.gpu;
    if let Some(want) = g.persistence {
        bool_setting(
            add,
            "gpu.persistence",
            want,
            gpus,
            |x| x.persistence,
            None,
            Verdict::Warn,
        );
    }
    if let Some(want) = g.ecc {
        bool_setting(
            add,
            "gpu.ecc",
            want,
            gpus,
            |x| x.ecc,
            Some(&|x: &GpuInventory| x.ecc_pending),
            Verdict::Fail,
        );
    }
    if let Some(want) = g.mig {
        bool_setting(
            add,
            "gpu.mig",
            want,
            gpus,
            |x| x.mig,
            Some(&|x: &GpuInventory| x.mig_pending),
            Verdict::Fail,
        );
    }
    if let Some(want) = g.compute_mode {
        let odd: Vec<&GpuInventory> = gpus
            .iter()
            .filter(|x| x.compute_mode.as_deref() != Some(want.as_str()))
            .collect();
        // Prohibited stops the engine outright; another mode only changes who may share.
        let verdict = if odd.is_empty() {
            Verdict::Pass
        } else if odd
            .iter()
            .any(|x| x.compute_mode.as_deref() == Some("prohibited"))
        {
            Verdict::Fail
        } else {
            Verdict::Warn
        };
        add(
            "gpu.compute_mode",
            want.as_str().into(),
            if odd.is_empty() {
                all(gpus, want.as_str())
            } else {
                list(&odd, |x| {
                    x.compute_mode.clone().unwrap_or_else(|| "unknown".into())
                })
            },
            verdict,
            APPLY,
        );
    }
    if let Some(want) = g.power_limit_w {
        let out_of_range = gpus.iter().find(|x| {
            x.power_limit_min_w.is_some_and(|lo| want < lo)
                || x.power_limit_max_w.is_some_and(|hi| want > hi)
        });
        let odd: Vec<&GpuInventory> = gpus
            .iter()
            .filter(|x| x.power_limit_w != Some(want))
            .collect();
        let (verdict, remedy) = match out_of_range {
            Some(x) => (
                Verdict::Fail,
                format!(
                    "GPU {} accepts {}..{} W: the profile's limit cannot be set on it",
                    x.index,
                    x.power_limit_min_w.unwrap_or(0),
                    x.power_limit_max_w.unwrap_or(0)
                ),
            ),
            None => (
                verdict_if(!odd.is_empty(), Verdict::Warn),
                APPLY.to_string(),
            ),
        };
        add(
            "gpu.power_limit",
            format!("{want} W"),
            if odd.is_empty() {
                all(gpus, &format!("{want} W"))
            } else {
                list(&odd, |x| {
                    x.power_limit_w
                        .map_or_else(|| "unknown".into(), |w| format!("{w} W"))
                })
            },
            verdict,
            &remedy,
        );
    }
    if let Some([lo, hi]) = g.locked_clocks_mhz {
        let odd: Vec<&GpuInventory> = gpus
            .iter()
            .filter(|x| x.locked_clocks_mhz != Some([lo, hi]))
            .collect();
        add(
            "gpu.locked_clocks",
            format!("{lo}..{hi} MHz"),
            if odd.is_empty() {
                all(gpus, &format!("{lo}..{hi} MHz"))
            } else {
                list(&odd, |x| {
                    x.locked_clocks_mhz.map_or_else(
                        || "not readable through NVML".into(),
                        |[a, b]| format!("{a}..{b} MHz"),
                    )
                })
            },
            verdict_if(!odd.is_empty(), Verdict::Warn),
            APPLY,
        );
    }
}

/// An on/off setting on every GPU; `pending` is its value after a reboot, which turns a
/// failure into a warning when the fix only waits for that reboot.
fn bool_setting(
    add: &mut Add<'_>,
    id: &str,
    want: bool,
    gpus: &[GpuInventory],
    now: impl Fn(&GpuInventory) -> Option<bool>,
    pending: Option<Reading<'_>>,
    wrong: Verdict,
) {
    let odd: Vec<&GpuInventory> = gpus.iter().filter(|x| now(x) != Some(want)).collect();
    let rebooting =
        !odd.is_empty() && pending.is_some_and(|pend| odd.iter().all(|x| pend(x) == Some(want)));
    let (verdict, remedy) = if odd.is_empty() {
        (Verdict::Pass, String::new())
    } else if rebooting {
        (
            Verdict::Warn,
            "already set for the next boot: reboot to take it into use".to_string(),
        )
    } else if pending.is_some() {
        (wrong, format!("{APPLY}; it takes effect after a reboot"))
    } else {
        (wrong, APPLY.to_string())
    };
    add(
        id,
        on_off(Some(want)).into(),
        if odd.is_empty() {
            all(gpus, on_off(Some(want)))
        } else {
            list(&odd, |x| {
                let mut s = on_off(now(x)).to_string();
                if let Some(pend) = pending
                    && let Some(p) = pend(x)
                    && Some(p) != now(x)
                {
                    s.push_str(&format!(", {} after reboot", on_off(Some(p))));
                }
                s
            })
        },
        verdict,
        &remedy,
    );
}

fn topology_checks(p: &Profile, inv: &Inventory, add: &mut Add<'_>) {
    let t = &p.topology;
    if let Some(want) = t.p2p {
        let found = inv.p2p.as_deref();
        let parsed = match found {
            Some("nvlink") => Some(P2p::Nvlink),
            Some("pcie") => Some(P2p::Pcie),
            Some("none") => Some(P2p::None),
            _ => None,
        };
        let verdict = match parsed {
            None => Verdict::Warn,
            Some(f) => verdict_if(f < want, Verdict::Fail),
        };
        add(
            "topology.p2p",
            want.as_str().into(),
            found.unwrap_or("unknown").into(),
            verdict,
            "GPUs reach each other more slowly than the profile expects: check NVLink bridges, the fabric manager and the BIOS's PCIe ACS setting",
        );
    }
    if let Some(want) = t.nvlink_links_per_gpu {
        let odd: Vec<&GpuInventory> = inv
            .gpus
            .iter()
            .filter(|x| x.nvlink_active != Some(want))
            .collect();
        let down = odd
            .iter()
            .any(|x| x.nvlink_active.is_some_and(|n| n < want));
        add(
            "topology.nvlink_links",
            format!("{want} links up per GPU"),
            if odd.is_empty() {
                all(&inv.gpus, &format!("{want} links"))
            } else {
                list(&odd, |x| {
                    x.nvlink_active
                        .map_or_else(|| "unknown".into(), |n| format!("{n} links"))
                })
            },
            if down {
                Verdict::Fail
            } else {
                verdict_if(!odd.is_empty(), Verdict::Warn)
            },
            "an NVLink link is down: `nvidia-smi nvlink -s` shows which; reseat the board or call the vendor",
        );
    }
}

fn health_checks(p: &Profile, gpus: &[GpuInventory], add: &mut Add<'_>) {
    for (id, max, reading) in [
        (
            "health.gpu_temperature",
            p.health.gpu_temp_max_c,
            (|x: &GpuInventory| x.temp_gpu_c) as fn(&GpuInventory) -> Option<f64>,
        ),
        (
            "health.memory_temperature",
            p.health.mem_temp_max_c,
            |x: &GpuInventory| x.temp_mem_c,
        ),
    ] {
        let Some(max) = max else { continue };
        let hottest = gpus
            .iter()
            .filter_map(|x| reading(x).map(|t| (x.index, t)))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        let (found, verdict) = match hottest {
            None => ("not readable".to_string(), Verdict::Pass),
            Some((i, t)) => (
                format!("{t:.0} °C at most (GPU {i})"),
                verdict_if(t >= max, Verdict::Warn),
            ),
        };
        add(
            id,
            format!("below {max:.0} °C"),
            found,
            verdict,
            "check the airflow, the fans and the room's temperature",
        );
    }
}

fn host_checks(p: &Profile, inv: &Inventory, add: &mut Add<'_>) {
    let h = &p.host;
    let host = &inv.host;
    if let Some(gib) = h.min_memory_gib {
        let have = host.memory_total_bytes as f64 / (1u64 << 30) as f64;
        add(
            "host.memory",
            format!(">= {gib} GiB"),
            format!("{have:.1} GiB"),
            verdict_if(have + 0.5 < gib as f64, Verdict::Fail),
            "the host has less memory than the profile needs for the engine's buffers",
        );
    }
    if let Some(cores) = h.min_cpu_cores {
        add(
            "host.cpu_cores",
            format!(">= {cores}"),
            host.cpu_cores.to_string(),
            verdict_if(host.cpu_cores < cores, Verdict::Warn),
            "fewer CPU cores than the profile expects: tokenization and the CPU engine will be slower",
        );
    }
    if !h.cpu_features.is_empty() {
        let missing: Vec<&str> = h
            .cpu_features
            .iter()
            .filter(|f| !host.cpu_features.contains(f))
            .map(String::as_str)
            .collect();
        add(
            "host.cpu_features",
            h.cpu_features.join(", "),
            if missing.is_empty() {
                "all present".into()
            } else {
                format!("missing {}", missing.join(", "))
            },
            verdict_if(!missing.is_empty(), Verdict::Warn),
            "the kernels fall back to their portable path (same results, slower)",
        );
    }
}

fn verdict_if(bad: bool, verdict: Verdict) -> Verdict {
    if bad { verdict } else { Verdict::Pass }
}

/// `all 8 GPUs: on` (or `the GPU: on` on a one-GPU box).
fn all(gpus: &[GpuInventory], value: &str) -> String {
    match gpus.len() {
        1 => format!("the GPU: {value}"),
        n => format!("all {n} GPUs: {value}"),
    }
}

/// `GPU 3: x; GPU 5: y` for the GPUs that are off.
fn list(gpus: &[&GpuInventory], what: impl Fn(&GpuInventory) -> String) -> String {
    gpus.iter()
        .map(|g| format!("GPU {}: {}", g.index, what(g)))
        .collect::<Vec<_>>()
        .join("; ")
}

/// `8 x NVIDIA H200` (or each distinct name with its count).
fn summarize_names(gpus: &[GpuInventory]) -> String {
    summarize(gpus, |g| format!("{} ({})", g.name, g.pci_device_id))
}

fn summarize(gpus: &[GpuInventory], key: impl Fn(&GpuInventory) -> String) -> String {
    let mut groups: Vec<(String, usize)> = Vec::new();
    for g in gpus {
        let k = key(g);
        match groups.iter_mut().find(|(name, _)| *name == k) {
            Some((_, n)) => *n += 1,
            None => groups.push((k, 1)),
        }
    }
    groups
        .into_iter()
        .map(|(k, n)| format!("{n} x {k}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Report {
    /// The report as a person reads it: one line per check, remedies under failures.
    pub fn render(&self) -> String {
        let mut out = format!(
            "Profile {} ({})\nInventory: {}\n\n",
            self.profile, self.profile_name, self.source
        );
        let width = self.checks.iter().map(|c| c.id.len()).max().unwrap_or(0);
        for c in &self.checks {
            out.push_str(&format!(
                "  {:<4}  {:<width$}  expected {}; found {}\n",
                c.verdict.as_str().to_uppercase(),
                c.id,
                c.expected,
                c.found
            ));
            if let Some(r) = &c.remedy {
                out.push_str(&format!("        {:<width$}  -> {r}\n", ""));
            }
        }
        let count = |v| self.checks.iter().filter(|c| c.verdict == v).count();
        out.push_str(&format!(
            "\nVerdict: {} ({} passed, {} warning{}, {} failure{})\n",
            self.verdict.as_str().to_uppercase(),
            count(Verdict::Pass),
            count(Verdict::Warn),
            plural(count(Verdict::Warn)),
            count(Verdict::Fail),
            plural(count(Verdict::Fail)),
        ));
        out
    }
}
