//! The box: `/admin/v1/system`, `/admin/v1/gpus` (and their history) and
//! `/admin/v1/alerts`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::telemetry::{Alert, GpuEvent, GpuSample, GpuStatus, HistoryBucket, HostSample};

/// The host, the GPUs' availability and the sampler.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SystemReport {
    /// The latest host reading (absent before the first sample).
    pub host: Option<HostSample>,
    /// Whether GPUs can be read, and why not.
    pub gpu: GpuStatus,
    /// GPUs with their name, memory, temperature and whether they answered.
    pub gpus: Vec<GpuSummary>,
    pub sampler: SamplerReport,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SamplerReport {
    pub interval_ms: u64,
    pub samples: u64,
    /// Mean time one sample took.
    pub mean_sample_us: f64,
    /// Snapshots held in memory (the last hour at full resolution).
    pub history_len: usize,
}

/// Every GPU's latest full reading.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct GpusReport {
    pub available: bool,
    pub reason: Option<String>,
    pub ts_ms: u64,
    /// Every GPU's latest full reading.
    pub gpus: Vec<GpuSample>,
    /// Recent GPU events (XID errors), oldest first.
    pub events: Vec<GpuEvent>,
}

/// Alerts, firing first.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AlertsReport {
    pub firing: usize,
    /// Firing alerts whose notifications are held.
    pub silenced: usize,
    pub alerts: Vec<Alert>,
}

/// `POST /admin/v1/alerts/{key}/silence`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SilenceRequest {
    /// How long to hold the alert's notifications, in minutes (at most 30 days).
    #[schema(minimum = 1, maximum = 43_200)]
    pub minutes: u64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct HistoryReport {
    pub gpu: u32,
    pub from: u64,
    pub to: u64,
    pub step: u64,
    /// Averages and maxima per bucket.
    pub buckets: Vec<HistoryBucket>,
}

/// One GPU in the system summary: what it is and its main readings.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GpuSummary {
    pub index: u32,
    pub uuid: String,
    pub name: String,
    /// Why the GPU could not be read this time.
    pub error: Option<String>,
    pub gpu_util_pct: Option<f64>,
    pub mem_used_bytes: Option<u64>,
    pub mem_total_bytes: Option<u64>,
    pub temp_gpu_c: Option<f64>,
    pub power_w: Option<f64>,
}

impl From<&GpuSample> for GpuSummary {
    fn from(g: &GpuSample) -> GpuSummary {
        GpuSummary {
            index: g.index,
            uuid: g.uuid.clone(),
            name: g.name.clone(),
            error: g.error.clone(),
            gpu_util_pct: g.gpu_util_pct,
            mem_used_bytes: g.mem_used_bytes,
            mem_total_bytes: g.mem_total_bytes,
            temp_gpu_c: g.temp_gpu_c,
            power_w: g.power_w,
        }
    }
}
