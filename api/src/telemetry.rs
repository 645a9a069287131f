//! What telemetry reads and the API reports: one sample of the host and every GPU, GPU
//! events (XID errors), the driver's identity, alerts and history buckets. The NVML source,
//! the replay source and the recorder speak these types too; a replay trace is JSON lines
//! of them, which is why the GPU types refuse unknown fields (a misspelt field in a
//! recorded trace is an error, not a silent `None`).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One GPU at one instant. Every reading is optional: a field NVML does not support on this
/// GPU (or that failed this time) is `None`, and a GPU that could not be read at all has
/// `error` set. The daemon writes every field (the schema says so of those that are never
/// null); reading a trace, absent fields are their defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct GpuSample {
    #[schema(required = true)]
    pub index: u32,
    #[schema(required = true)]
    pub uuid: String,
    #[schema(required = true)]
    pub name: String,
    #[schema(required = true)]
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
    #[schema(required = true)]
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
    #[schema(required = true)]
    pub processes: Vec<GpuProcess>,
    /// GPM (Hopper and newer): SM activity and tensor pipe activity, percent.
    pub sm_active_pct: Option<f64>,
    pub tensor_active_pct: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct GpuProcess {
    pub pid: u32,
    pub used_bytes: Option<u64>,
}

/// An event a GPU reported between samples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
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
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
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

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DiskSample {
    pub mount: String,
    pub total_bytes: u64,
    pub available_bytes: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NetSample {
    pub name: String,
    /// Bytes since boot.
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TempSample {
    pub label: String,
    pub celsius: f64,
}

/// The host at one instant.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HostSample {
    pub hostname: String,
    pub os: String,
    pub cpu_count: usize,
    /// Percent of all cores.
    pub cpu_pct: f64,
    pub cpu_per_core_pct: Vec<f64>,
    pub load_1m: f64,
    pub load_5m: f64,
    pub load_15m: f64,
    pub mem_total_bytes: u64,
    pub mem_used_bytes: u64,
    pub mem_available_bytes: u64,
    pub swap_total_bytes: u64,
    pub swap_used_bytes: u64,
    pub disks: Vec<DiskSample>,
    pub networks: Vec<NetSample>,
    pub temperatures: Vec<TempSample>,
    pub uptime_s: u64,
}

/// Where GPU readings come from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum GpuBackend {
    Nvml,
    Replay,
    None,
}

/// Whether GPUs can be read, and why not.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GpuStatus {
    pub available: bool,
    pub reason: Option<String>,
    pub source: GpuBackend,
    pub driver: DriverInfo,
}

/// One alert, firing or resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Alert {
    /// `rule:subject`, e.g. `gpu_temperature:gpu0`.
    pub key: String,
    pub rule: String,
    pub subject: String,
    /// `critical` or `warning`.
    pub severity: String,
    /// `firing` or `resolved`.
    pub state: String,
    pub message: String,
    /// What to do about it (NVIDIA's XID catalog where it applies).
    pub action: Option<String>,
    pub first_seen_ms: u64,
    pub last_seen_ms: u64,
    pub resolved_ms: Option<u64>,
    /// Times it fired.
    pub fired: u64,
    /// Notifications (webhooks) are held until then, ms since the epoch; the alert still
    /// shows, marked. Survives the alert resolving and firing again.
    #[serde(default)]
    pub silenced_until_ms: Option<u64>,
    /// Who silenced it (the audit log's actor).
    #[serde(default)]
    pub silenced_by: Option<String>,
}

impl Alert {
    /// Whether notifications of this alert are held at `now_ms`.
    pub fn is_silenced(&self, now_ms: u64) -> bool {
        self.silenced_until_ms.is_some_and(|until| until > now_ms)
    }
}

/// Averages and maxima of a GPU's main readings over one bucket of time.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HistoryBucket {
    /// Start of the bucket, ms since the Unix epoch.
    pub ts_ms: u64,
    pub samples: u32,
    pub gpu_util_avg: Option<f64>,
    pub gpu_util_max: Option<f64>,
    pub mem_used_bytes_avg: Option<f64>,
    pub mem_used_bytes_max: Option<f64>,
    pub temp_gpu_c_avg: Option<f64>,
    pub temp_gpu_c_max: Option<f64>,
    pub power_w_avg: Option<f64>,
    pub power_w_max: Option<f64>,
}
