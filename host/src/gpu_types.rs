//! What telemetry reads: one sample of the host and every GPU, GPU events (XID errors) and
//! the driver's identity. The NVML source, the replay source and the recorder all speak
//! these types; a replay trace is JSON lines of [`TraceLine`].

pub use oasis_api::telemetry::{DriverInfo, GpuEvent, GpuProcess, GpuSample};
use serde::{Deserialize, Serialize};

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
