//! The wire types of the Oasis daemon's API, the admin API (`/admin/v1/*`) and the
//! OpenAI-compatible one (`/v1/*`, in [`openai`]), in one place for the daemon that serves
//! them, the `oasis` CLI and the desktop client that read them, and the OpenAPI document
//! (`/openapi.json`) the console's TypeScript types are generated from. Every type derives
//! `Serialize`, `Deserialize` and `ToSchema`, so a client reads exactly what the daemon
//! writes and the document states it; unknown fields are ignored when reading answers, so
//! an older client still reads a newer daemon.

pub mod audit;
pub mod deployments;
pub mod error;
pub mod fit;
pub mod keys;
pub mod models;
pub mod openai;
pub mod profile;
pub mod slots;
pub mod status;
pub mod storage;
pub mod system;
pub mod telemetry;
pub mod usage;

pub use audit::{AuditDetail, AuditEntry, AuditReport};
pub use deployments::{
    ChangeDeployment, CreateDeployment, DeploymentList, DeploymentName, DeploymentView,
    EngineSettings, Undeployed,
};
pub use error::{ErrorBody, ErrorDetail};
pub use fit::{FitAnswer, FitReport, ModelFootprint};
pub use keys::{CreateKey, KeyList, KeyView, Limits, PairRequest, PairingCode, Role};
pub use models::{CatalogList, CatalogModel, Deleted, ImportRequest, JobList, JobPhase, JobView};
pub use profile::{
    ComplianceCheck, ComplianceReport, EngineSetting, ProfileAnswer, ProfileCandidate, ProfileInfo,
    Verdict,
};
pub use slots::{
    BootEntry, BootEntryState, BootPolicy, SlotSystem, SlotView, SystemSlots, UpdateAccepted,
    UpdateRecord, UpdateState,
};
pub use status::{Health, ModelStatus, StatusReport, WriteHealth};
pub use storage::{ModelStorage, StorageReport, Volume};
pub use system::{
    AlertsReport, GpuSummary, GpusReport, HistoryReport, SamplerReport, SilenceRequest,
    SystemReport,
};
pub use telemetry::{
    Alert, DiskSample, DriverInfo, GpuBackend, GpuEvent, GpuProcess, GpuSample, GpuStatus,
    HistoryBucket, HostSample, NetSample, TempSample,
};
pub use usage::{Counts, GroupBy, UsageReport, UsageRow};
