//! What telemetry reads: one sample of the host and every GPU, GPU events (XID errors) and
//! the driver's identity. The NVML source, the replay source and the recorder all speak
//! these types; a replay trace is JSON lines of [`TraceLine`].

use serde::{Deserialize, Serialize};

/// One GPU at one instant. Every reading is optional: a field NVML does not support on this
/// GPU (or that failed this time) is `None`, and a GPU that could not be read at all has
/// `error` set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GpuSample {
    pub index: u32,
    pub uuid: String,
    pub name: String,
    pub pci_bus_id: String,
    /// Why the GPU could not be read this time (fell off the bus, NVML error).
    pub error: Option<String>,
    pub gpu_util_pct: Option<f64>,
    pub mem_util_pct: Option<f64>,
    pub mem_used_bytes: Option<u64>,
    pub mem_free_bytes: Option<u64>,
    pub mem_total_bytes: Option<u64>,
    pub temp_gpu_c: Option<f64>,
    pub temp_mem_c: Option<f64>,
    pub power_w: Option<f64>,
    pub power_limit_w: Option<f64>,
    /// Energy since the driver loaded, millijoules.
    pub energy_mj: Option<u64>,
    pub sm_clock_mhz: Option<u32>,
    pub mem_clock_mhz: Option<u32>,
    pub fan_pct: Option<u32>,
    /// Performance state, 0 (P0, fastest) to 15.
    pub pstate: Option<u32>,
    /// Active clock throttle reasons, by name: `gpu_idle`, `applications_clocks_setting`,
    /// `sw_power_cap`, `hw_slowdown`, `sync_boost`, `sw_thermal_slowdown`,
    /// `hw_thermal_slowdown`, `hw_power_brake_slowdown`, `display_clock_setting`.
    pub throttle_reasons: Vec<String>,
    pub pcie_tx_kbps: Option<u64>,
    pub pcie_rx_kbps: Option<u64>,
    pub pcie_replay_count: Option<u64>,
    pub ecc_corrected_volatile: Option<u64>,
    pub ecc_uncorrected_volatile: Option<u64>,
    pub ecc_corrected_aggregate: Option<u64>,
    pub ecc_uncorrected_aggregate: Option<u64>,
    pub remapped_rows_correctable: Option<u64>,
    pub remapped_rows_uncorrectable: Option<u64>,
    pub remap_pending: Option<bool>,
    pub remap_failure: Option<bool>,
    pub retired_pages_single_bit: Option<u64>,
    pub retired_pages_double_bit: Option<u64>,
    /// NVLink links up, of `nvlink_links`.
    pub nvlink_active: Option<u32>,
    pub nvlink_links: Option<u32>,
    /// Replay + recovery + CRC errors summed over the links.
    pub nvlink_errors: Option<u64>,
    pub processes: Vec<GpuProcess>,
    /// GPM (Hopper and newer): SM activity and tensor pipe activity, percent.
    pub sm_active_pct: Option<f64>,
    pub tensor_active_pct: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GpuProcess {
    pub pid: u32,
    pub used_bytes: Option<u64>,
}

/// An event a GPU reported between samples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpuEvent {
    /// Milliseconds since the Unix epoch.
    pub ts_ms: u64,
    pub gpu: u32,
    /// `xid` (with `xid`), `missing` (the GPU stopped answering) or `returned`.
    pub kind: String,
    #[serde(default)]
    pub xid: Option<u64>,
}

/// The driver and each GPU's firmware identity.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DriverInfo {
    pub driver_version: Option<String>,
    /// e.g. `12.4` (from `cudaDriverGetVersion`'s integer).
    pub cuda_driver_version: Option<String>,
    pub nvml_version: Option<String>,
    pub gpu_count: u32,
    /// VBIOS version per GPU index.
    pub vbios: Vec<String>,
}

/// A source of GPU readings. Calls may block (NVML does I/O to the driver): the sampler
/// runs them off the async runtime.
pub trait GpuSource: Send {
    fn info(&self) -> DriverInfo;
    /// Every GPU, in index order.
    fn sample(&mut self) -> Vec<GpuSample>;
    /// Events since the last call, without waiting.
    fn events(&mut self) -> Vec<GpuEvent>;
}

/// One line of a replay trace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum TraceLine {
    /// The driver identity (first line).
    Info {
        info: DriverInfo,
    },
    /// All GPUs at `ts_ms`.
    Sample {
        ts_ms: u64,
        gpus: Vec<GpuSample>,
    },
    Event {
        event: GpuEvent,
    },
}
