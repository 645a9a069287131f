//! What a box has: the hardware inventory that profiles are matched and checked against.
//!
//! The daemon fills it from NVML and the host (`appliance-daemon/src/telemetry`); tests
//! and demos read recorded ones from JSON (`oasis profile inventory --json` writes one).
//! Every GPU field NVML may fail to give is optional: unknown is not the same as wrong,
//! and the compliance report says which it is.

use serde::{Deserialize, Serialize};

/// One box's hardware and software, as found.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Inventory {
    /// Where it came from (`nvml`, `recorded: ...`), for the report.
    pub source: String,
    pub host: HostInventory,
    /// Why NVML gave nothing (no driver), when it did not.
    pub nvml_error: Option<String>,
    pub driver_version: Option<String>,
    /// The newest CUDA version the driver supports (`12.4`).
    pub cuda_driver_version: Option<String>,
    /// NVSwitch devices the driver sees.
    pub nvswitch_count: Option<u32>,
    /// Whether NVIDIA's fabric manager is running.
    pub fabric_manager_running: Option<bool>,
    /// The weakest peer-to-peer path between any two GPUs (`nvlink`, `pcie`, `none`).
    pub p2p: Option<String>,
    pub gpus: Vec<GpuInventory>,
}

/// The host's CPU and memory.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HostInventory {
    pub hostname: String,
    pub cpu_model: String,
    /// Logical CPUs.
    pub cpu_cores: u32,
    /// SIMD features the kernels use, as found at run time (`avx2`, `fma`, `f16c`...).
    pub cpu_features: Vec<String>,
    pub memory_total_bytes: u64,
    pub memory_available_bytes: u64,
}

/// One GPU.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GpuInventory {
    pub index: u32,
    pub uuid: String,
    pub name: String,
    pub pci_bus_id: String,
    /// The PCI device id (`0x2335`).
    pub pci_device_id: String,
    pub memory_total_mib: u64,
    pub memory_free_mib: Option<u64>,
    pub vbios: Option<String>,
    pub persistence: Option<bool>,
    pub ecc: Option<bool>,
    /// ECC after the next reboot.
    pub ecc_pending: Option<bool>,
    /// `default`, `exclusive_process` or `prohibited`.
    pub compute_mode: Option<String>,
    pub mig: Option<bool>,
    pub mig_pending: Option<bool>,
    pub power_limit_w: Option<u32>,
    pub power_limit_default_w: Option<u32>,
    pub power_limit_min_w: Option<u32>,
    pub power_limit_max_w: Option<u32>,
    /// Locked graphics clocks `[min, max]` MHz when known (NVML cannot read them back, so
    /// only recorded inventories carry them).
    pub locked_clocks_mhz: Option<[u32; 2]>,
    pub temp_gpu_c: Option<f64>,
    pub temp_mem_c: Option<f64>,
    /// NVLink links up.
    pub nvlink_active: Option<u32>,
}

impl GpuInventory {
    /// The PCI device id as a number, when it parses.
    pub fn device_id(&self) -> Option<u16> {
        crate::profile::parse_pci_id(&self.pci_device_id)
    }
}

impl Inventory {
    /// Parses a recorded inventory (JSON); errors name the field.
    pub fn from_json(text: &str) -> Result<Inventory, String> {
        let de = &mut serde_json::Deserializer::from_str(text);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            format!("{path}: {}", e.into_inner())
        })
    }
}
