//! `GET /admin/v1/storage`: where the bytes are.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct StorageReport {
    pub data_dir: String,
    /// The volume holding the data directory (absent when the OS does not list it).
    pub volume: Option<Volume>,
    /// Model files inside the data directory's model store (`DATA_DIR/models`).
    pub models_in_store_bytes: u64,
    /// Model files used where they lie, outside the store.
    pub models_in_place_bytes: u64,
    /// The sled state (catalog, settings, alerts, minute history).
    pub state_bytes: u64,
    pub models: Vec<ModelStorage>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Volume {
    pub mount_point: String,
    pub total_bytes: u64,
    pub free_bytes: u64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ModelStorage {
    pub id: String,
    pub path: String,
    pub bytes: u64,
    /// Inside the model store (deleting the model frees it) or used in place.
    pub in_store: bool,
    pub served: bool,
}
