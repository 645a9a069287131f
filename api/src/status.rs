//! `GET /admin/v1/status`: the daemon, its models and the audit log's health.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `GET /admin/v1/status`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct StatusReport {
    pub version: String,
    /// `ready`, `not_ready` or `draining`.
    pub state: String,
    pub uptime_s: u64,
    pub instance_id: String,
    /// How many times this installation has started.
    pub starts: u64,
    pub data_dir: String,
    pub listen: String,
    pub models: Vec<ModelStatus>,
    /// Whether admin actions are reaching the audit log.
    pub audit: WriteHealth,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ModelStatus {
    pub id: String,
    /// `ready` or `unavailable` (not loaded, or its engine's device failed).
    pub state: String,
    /// Where its engine runs: `cpu` or `cuda:N`.
    pub device: Option<String>,
    /// The device in words (the GPU's name, architecture and memory).
    pub device_detail: Option<String>,
    pub path: Option<String>,
    /// Why an unavailable model could not be loaded.
    pub error: Option<String>,
    pub architecture: Option<String>,
    pub parameters: Option<u64>,
    pub context_length: Option<usize>,
    /// Requests queued and running now.
    pub waiting: usize,
    pub running: usize,
    pub requests_total: u64,
    pub prompt_tokens_total: u64,
    pub completion_tokens_total: u64,
}

/// Whether the daemon's audit entries are reaching the log.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct WriteHealth {
    /// Every entry so far is in the log.
    pub ok: bool,
    /// Entries held in memory because the log could not be written (written, in order,
    /// as soon as it can be).
    pub entries_pending: usize,
    /// Entries lost because more were pending than the daemon holds.
    pub entries_dropped: u64,
    /// Appends that failed since the daemon started.
    pub write_failures_total: u64,
    /// The last failure, while entries are pending.
    pub last_error: Option<String>,
    /// When the first entry still pending failed (milliseconds since the epoch).
    pub failing_since_ms: Option<u64>,
}

/// `GET /healthz` and `GET /readyz` bodies.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok`, `ready`, `not_ready` or `draining`.
    pub status: String,
    /// Models being served.
    pub models: Vec<String>,
}
