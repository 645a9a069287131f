//! The box's hardware inventory for firmware profiles, read from NVML and the host, and
//! the NVML side of applying a profile's GPU settings.
//!
//! Without an NVIDIA driver the inventory holds the host alone and says why NVML gave
//! nothing; that is the state a CPU-only machine is matched in. A recorded inventory
//! (JSON, `--inventory`) stands in for the hardware in demos and tests.

use std::path::Path;

use anyhow::Context;
use firmware_profiles::apply::{GpuControl, Setting};
use firmware_profiles::profile::{ComputeMode, P2p};
use firmware_profiles::{GpuInventory, HostInventory, Inventory};
use nvml_wrapper::Nvml;
use nvml_wrapper::enum_wrappers::device::{
    ComputeMode as NvmlComputeMode, P2pCapabilitiesIndex, P2pStatus,
};
use nvml_wrapper::enums::device::GpuLockedClocksSetting;

use crate::gpu_types::{GpuSample, GpuSource};
use crate::nvml;

const MIB: u64 = 1 << 20;

/// The inventory from `recorded` (a JSON file) when given, else read from this machine.
pub fn read(recorded: Option<&Path>) -> anyhow::Result<Inventory> {
    match recorded {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the inventory {}", path.display()))?;
            let mut inv = Inventory::from_json(&text)
                .map_err(|e| anyhow::anyhow!("inventory {}: {e}", path.display()))?;
            inv.source = format!("recorded in {}: {}", path.display(), inv.source);
            Ok(inv)
        }
        None => Ok(live()),
    }
}

/// This machine: the host, and the GPUs when NVML is there.
pub fn live() -> Inventory {
    let mut inv = Inventory {
        host: host(),
        ..Inventory::default()
    };
    let mut source = match nvml::open() {
        Ok(s) => s,
        Err(reason) => {
            inv.source = "this machine (host only: no GPU readings)".into();
            inv.nvml_error = Some(reason);
            return inv;
        }
    };
    inv.source = "this machine (NVML and the host)".into();
    let info = source.info();
    inv.driver_version = info.driver_version;
    inv.cuda_driver_version = info.cuda_driver_version;
    let samples = source.sample();
    let nvml = source.nvml();
    inv.gpus = (0..info.gpu_count)
        .map(|i| gpu(nvml, i, samples.get(i as usize)))
        .collect();
    inv.p2p = p2p(nvml, info.gpu_count).map(|p| p.as_str().to_string());
    inv.nvswitch_count = Some(nvswitches());
    inv.fabric_manager_running = Some(process_running("nv-fabricmanager"));
    inv
}

/// The host's CPU and memory.
pub fn host() -> HostInventory {
    use sysinfo::{CpuRefreshKind, MemoryRefreshKind, RefreshKind, System};
    let sys = System::new_with_specifics(
        RefreshKind::nothing()
            .with_cpu(CpuRefreshKind::nothing())
            .with_memory(MemoryRefreshKind::nothing().with_ram()),
    );
    HostInventory {
        hostname: System::host_name().unwrap_or_default(),
        cpu_model: sys
            .cpus()
            .first()
            .map(|c| c.brand().trim().to_string())
            .unwrap_or_default(),
        cpu_cores: sys.cpus().len() as u32,
        cpu_features: cpu_features(),
        memory_total_bytes: sys.total_memory(),
        memory_available_bytes: sys.available_memory(),
    }
}

/// The SIMD features the kernels use, as detected at run time.
fn cpu_features() -> Vec<String> {
    let mut out = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        for (name, has) in [
            ("avx2", std::arch::is_x86_feature_detected!("avx2")),
            ("fma", std::arch::is_x86_feature_detected!("fma")),
            ("f16c", std::arch::is_x86_feature_detected!("f16c")),
            ("avx512f", std::arch::is_x86_feature_detected!("avx512f")),
            (
                "avx512vnni",
                std::arch::is_x86_feature_detected!("avx512vnni"),
            ),
        ] {
            if has {
                out.push(name.to_string());
            }
        }
    }
    #[cfg(target_arch = "aarch64")]
    if std::arch::is_aarch64_feature_detected!("neon") {
        out.push("neon".to_string());
    }
    out
}

/// One GPU's identity and settings; the sampler's readings fill the rest.
fn gpu(nvml: &Nvml, index: u32, sample: Option<&GpuSample>) -> GpuInventory {
    let mut g = GpuInventory {
        index,
        ..GpuInventory::default()
    };
    if let Some(s) = sample {
        g.uuid.clone_from(&s.uuid);
        g.name.clone_from(&s.name);
        g.pci_bus_id.clone_from(&s.pci_bus_id);
        g.memory_total_mib = s.mem_total_bytes.unwrap_or(0) / MIB;
        g.memory_free_mib = s.mem_free_bytes.map(|b| b / MIB);
        g.temp_gpu_c = s.temp_gpu_c;
        g.temp_mem_c = s.temp_mem_c;
        g.nvlink_active = s.nvlink_active;
    }
    let Ok(d) = nvml.device_by_index(index) else {
        return g;
    };
    if let Ok(pci) = d.pci_info() {
        // NVML's pciDeviceId is the device id in the high half, the vendor's in the low.
        g.pci_device_id = format!("{:#06x}", pci.pci_device_id >> 16);
    }
    g.vbios = d.vbios_version().ok();
    g.persistence = d.is_in_persistent_mode().ok();
    if let Ok(e) = d.is_ecc_enabled() {
        g.ecc = Some(e.currently_enabled);
        g.ecc_pending = Some(e.pending_enabled);
    }
    g.compute_mode = d.compute_mode().ok().map(|m| {
        match m {
            NvmlComputeMode::Default => "default",
            NvmlComputeMode::ExclusiveProcess => "exclusive_process",
            NvmlComputeMode::Prohibited => "prohibited",
            NvmlComputeMode::ExclusiveThread => "exclusive_thread",
        }
        .to_string()
    });
    if let Ok(m) = d.mig_mode() {
        g.mig = Some(m.current == 1);
        g.mig_pending = Some(m.pending == 1);
    }
    g.power_limit_w = d.power_management_limit().ok().map(|mw| mw / 1000);
    g.power_limit_default_w = d.power_management_limit_default().ok().map(|mw| mw / 1000);
    if let Ok(c) = d.power_management_limit_constraints() {
        g.power_limit_min_w = Some(c.min_limit / 1000);
        g.power_limit_max_w = Some(c.max_limit / 1000);
    }
    g
}

/// The weakest peer-to-peer path over every pair of GPUs; `None` with fewer than two.
fn p2p(nvml: &Nvml, count: u32) -> Option<P2p> {
    let devices: Vec<_> = (0..count)
        .filter_map(|i| nvml.device_by_index(i).ok())
        .collect();
    if devices.len() < 2 {
        return None;
    }
    let mut weakest = P2p::Nvlink;
    for (i, a) in devices.iter().enumerate() {
        for b in &devices[i + 1..] {
            let ok = |idx| matches!(a.p2p_status(b, idx), Ok(P2pStatus::Ok));
            let path = if ok(P2pCapabilitiesIndex::NvLink) {
                P2p::Nvlink
            } else if ok(P2pCapabilitiesIndex::Read) {
                P2p::Pcie
            } else {
                P2p::None
            };
            weakest = weakest.min(path);
        }
    }
    Some(weakest)
}

/// NVSwitch devices the NVSwitch driver lists (0 when its driver is not loaded).
fn nvswitches() -> u32 {
    std::fs::read_dir("/proc/driver/nvidia-nvswitch/devices").map_or(0, |d| d.count() as u32)
}

/// Whether a process with this command name runs (from `/proc/*/comm`).
fn process_running(name: &str) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return false;
    };
    dir.filter_map(Result::ok)
        .any(|e| std::fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.trim() == name))
}

/// Sets GPU settings through NVML (which needs root for all of them).
#[derive(Debug)]
pub struct NvmlControl {
    nvml: &'static Nvml,
}

impl NvmlControl {
    pub fn open() -> Result<NvmlControl, String> {
        Ok(NvmlControl {
            nvml: nvml::handle()?,
        })
    }
}

impl GpuControl for NvmlControl {
    fn set(&mut self, gpu: u32, setting: Setting) -> Result<(), String> {
        let mut d = self
            .nvml
            .device_by_index(gpu)
            .map_err(|e| format!("GPU {gpu}: {e}"))?;
        let r = match setting {
            Setting::Persistence(on) => d.set_persistent(on),
            Setting::Ecc(on) => d.set_ecc(on),
            Setting::ComputeMode(m) => d.set_compute_mode(match m {
                ComputeMode::Default => NvmlComputeMode::Default,
                ComputeMode::ExclusiveProcess => NvmlComputeMode::ExclusiveProcess,
                ComputeMode::Prohibited => NvmlComputeMode::Prohibited,
            }),
            Setting::Mig(on) => d.set_mig_mode(on).map(|_| ()),
            Setting::PowerLimitW(w) => d.set_power_management_limit(w.saturating_mul(1000)),
            Setting::LockedClocksMhz([lo, hi]) => {
                d.set_gpu_locked_clocks(GpuLockedClocksSetting::Numeric {
                    min_clock_mhz: lo,
                    max_clock_mhz: hi,
                })
            }
        };
        r.map_err(|e| e.to_string())
    }
}
