//! The box itself: `GET /admin/v1/system` (host, driver, GPU summary) and
//! `GET /admin/v1/gpus` (every GPU's latest reading), from the telemetry sampler.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use crate::telemetry::GpuStatus;

/// The host, the GPUs' availability and the sampler.
#[derive(Debug, Serialize, ToSchema)]
pub struct SystemReport {
    /// The latest host reading (`telemetry::host::HostSample`).
    #[schema(value_type = Object)]
    pub host: serde_json::Value,
    /// `{available, reason, source, driver}`.
    #[schema(value_type = Object)]
    pub gpu: serde_json::Value,
    /// GPUs with their name, memory, temperature and whether they answered.
    #[schema(value_type = Vec<Object>)]
    pub gpus: Vec<serde_json::Value>,
    pub sampler: SamplerReport,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SamplerReport {
    pub interval_ms: u64,
    pub samples: u64,
    /// Mean time one sample took.
    pub mean_sample_us: f64,
    /// Snapshots held in memory (the last hour at full resolution).
    pub history_len: usize,
}

fn status_json(s: &GpuStatus) -> serde_json::Value {
    serde_json::to_value(s).unwrap_or_default()
}

/// The host, the driver and a summary of every GPU.
#[utoipa::path(get, path = "/admin/v1/system", responses((status = 200, body = SystemReport)))]
pub async fn system(State(st): State<AppState>) -> Json<SystemReport> {
    let t = &st.telemetry;
    let latest = t.latest();
    let gpus = latest
        .as_ref()
        .map(|s| {
            s.gpus
                .iter()
                .map(|g| {
                    serde_json::json!({
                        "index": g.index, "uuid": g.uuid, "name": g.name, "error": g.error,
                        "gpu_util_pct": g.gpu_util_pct, "mem_used_bytes": g.mem_used_bytes,
                        "mem_total_bytes": g.mem_total_bytes, "temp_gpu_c": g.temp_gpu_c,
                        "power_w": g.power_w,
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    Json(SystemReport {
        host: latest
            .as_ref()
            .and_then(|s| serde_json::to_value(&s.host).ok())
            .unwrap_or_default(),
        gpu: status_json(&t.status()),
        gpus,
        sampler: SamplerReport {
            interval_ms: t.interval.as_millis() as u64,
            samples: t.samples.load(std::sync::atomic::Ordering::Relaxed),
            mean_sample_us: t.mean_sample_us(),
            history_len: t.history(0, u64::MAX).len(),
        },
    })
}

/// Every GPU's latest full reading.
#[derive(Debug, Serialize, ToSchema)]
pub struct GpusReport {
    pub available: bool,
    pub reason: Option<String>,
    pub ts_ms: u64,
    /// `telemetry::types::GpuSample` per GPU.
    #[schema(value_type = Vec<Object>)]
    pub gpus: Vec<serde_json::Value>,
    /// Recent GPU events (XID errors), oldest first.
    #[schema(value_type = Vec<Object>)]
    pub events: Vec<serde_json::Value>,
}

#[utoipa::path(get, path = "/admin/v1/gpus", responses((status = 200, body = GpusReport)))]
pub async fn gpus(State(st): State<AppState>) -> Json<GpusReport> {
    let t = &st.telemetry;
    let status = t.status();
    let latest = t.latest();
    Json(GpusReport {
        available: status.available,
        reason: status.reason,
        ts_ms: latest.as_ref().map_or(0, |s| s.ts_ms),
        gpus: latest
            .map(|s| {
                s.gpus
                    .iter()
                    .filter_map(|g| serde_json::to_value(g).ok())
                    .collect()
            })
            .unwrap_or_default(),
        events: t
            .events()
            .iter()
            .filter_map(|e| serde_json::to_value(e).ok())
            .collect(),
    })
}

/// Alerts, firing first.
#[derive(Debug, Serialize, ToSchema)]
pub struct AlertsReport {
    pub firing: usize,
    /// `telemetry::alerts::Alert` records.
    #[schema(value_type = Vec<Object>)]
    pub alerts: Vec<serde_json::Value>,
}

#[utoipa::path(get, path = "/admin/v1/alerts", responses((status = 200, body = AlertsReport)))]
pub async fn alerts(State(st): State<AppState>) -> Json<AlertsReport> {
    let list = st.telemetry.alerts();
    Json(AlertsReport {
        firing: list.iter().filter(|a| a.state == "firing").count(),
        alerts: list
            .iter()
            .filter_map(|a| serde_json::to_value(a).ok())
            .collect(),
    })
}
