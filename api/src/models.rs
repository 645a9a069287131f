//! The model catalog and its import jobs: `/admin/v1/models`, `/admin/v1/jobs`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A model in the catalog.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CatalogModel {
    pub id: String,
    /// The model's own name (GGUF `general.name`, or the manifest's).
    pub name: String,
    /// `gguf` or `safetensors` (a chat model), or `sentence-transformers` (an embedding
    /// model, served by `POST /v1/embeddings`).
    pub format: String,
    pub architecture: String,
    pub parameters: u64,
    pub context_length: usize,
    /// `sha256:...` of the file, or of a checkpoint's files.
    pub digest: String,
    pub size_bytes: u64,
    pub path: String,
    /// In the model store (deleted with the model) or used where it lies.
    pub in_store: bool,
    pub license: Option<String>,
    pub added_at: u64,
    /// The deployments serving it.
    pub deployed_as: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CatalogList {
    pub data: Vec<CatalogModel>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Deleted {
    pub deleted: String,
    /// Bytes given back to the volume (0 for a model used in place).
    pub freed_bytes: u64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct JobList {
    pub data: Vec<JobView>,
}

/// What the API and the CLI see of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobView {
    pub id: String,
    /// `import`.
    pub kind: String,
    /// `queued`, `copying`, `verifying`, `ready`, `failed` or `cancelled`.
    pub state: JobPhase,
    /// The file, folder or bundle imported.
    pub source: String,
    /// The catalog id the model gets.
    pub model: String,
    pub in_place: bool,
    /// Bytes read and to read in the current state (copying, or hashing in place).
    pub bytes_done: u64,
    pub bytes_total: u64,
    /// Bytes per second in the current state.
    pub rate_bytes_per_s: f64,
    /// Seconds left at that rate.
    pub eta_s: Option<f64>,
    /// Why it failed.
    pub error: Option<String>,
    pub created_at: u64,
    pub finished_at: Option<u64>,
}

/// Where an import stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[repr(u8)]
pub enum JobPhase {
    Queued = 0,
    Copying = 1,
    Verifying = 2,
    Ready = 3,
    Failed = 4,
    Cancelled = 5,
}

impl JobPhase {
    /// The phase `phase as u8` gave (an unknown value is `Queued`).
    pub fn from_u8(v: u8) -> JobPhase {
        match v {
            1 => JobPhase::Copying,
            2 => JobPhase::Verifying,
            3 => JobPhase::Ready,
            4 => JobPhase::Failed,
            5 => JobPhase::Cancelled,
            _ => JobPhase::Queued,
        }
    }

    /// The phase as the API writes it.
    pub fn name(self) -> &'static str {
        match self {
            JobPhase::Queued => "queued",
            JobPhase::Copying => "copying",
            JobPhase::Verifying => "verifying",
            JobPhase::Ready => "ready",
            JobPhase::Failed => "failed",
            JobPhase::Cancelled => "cancelled",
        }
    }

    /// Ready, failed or cancelled: nothing more will happen.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobPhase::Ready | JobPhase::Failed | JobPhase::Cancelled
        )
    }
}

/// `POST /admin/v1/models/import`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportRequest {
    /// A `.gguf` file, a Hugging Face checkpoint folder (a chat model, or a
    /// sentence-transformers embedding model with its module folders) or a `.tar` bundle
    /// of either, as a path on the box (absolute).
    #[schema(pattern = "^/")]
    pub path: String,
    /// The catalog id [default: from the file or folder name].
    #[serde(default)]
    #[schema(pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")]
    pub name: Option<String>,
    /// Use the files where they lie instead of copying them into the store.
    #[serde(default)]
    pub in_place: bool,
}
