//! `GET /admin/v1/storage`: what the models and the state take on disk, and what the
//! volume holding the data directory has left: the numbers an admin checks before
//! copying in a model of hundreds of gigabytes.

use std::path::{Path, PathBuf};

use axum::Json;
use axum::extract::State;

use super::AppState;
pub use oasis_api::{ModelStorage, StorageReport, Volume};

#[utoipa::path(get, path = "/admin/v1/storage", responses((status = 200, body = StorageReport)))]
pub async fn storage(State(st): State<AppState>) -> Json<StorageReport> {
    let data_dir = st.config.data_dir.clone();
    let records: Vec<_> = st
        .store
        .models()
        .map(|v| v.into_iter().filter_map(Result::ok).collect())
        .unwrap_or_default();
    let served: Vec<String> = st
        .catalog
        .deployments()
        .iter()
        .map(|m| m.record.id.clone())
        .collect();
    let report = tokio::task::spawn_blocking(move || {
        let store_dir = canonical(&data_dir.join("models"));
        let models: Vec<ModelStorage> = records
            .into_iter()
            .map(|r| ModelStorage {
                in_store: canonical(&r.path).starts_with(&store_dir),
                served: served.contains(&r.id),
                path: r.path.display().to_string(),
                bytes: r.size_bytes,
                id: r.id,
            })
            .collect();
        let sum = |in_store: bool| {
            models
                .iter()
                .filter(|m| m.in_store == in_store)
                .map(|m| m.bytes)
                .sum()
        };
        StorageReport {
            volume: volume(&data_dir),
            models_in_store_bytes: sum(true),
            models_in_place_bytes: sum(false),
            state_bytes: dir_bytes(&data_dir.join("state")),
            data_dir: data_dir.display().to_string(),
            models,
        }
    })
    .await;
    Json(report.unwrap_or_else(|_| StorageReport {
        data_dir: st.config.data_dir.display().to_string(),
        volume: None,
        models_in_store_bytes: 0,
        models_in_place_bytes: 0,
        state_bytes: 0,
        models: Vec::new(),
    }))
}

fn canonical(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

/// The mounted volume whose mount point is the longest prefix of `dir`.
pub fn volume(dir: &Path) -> Option<Volume> {
    let dir = canonical(dir);
    let disks = sysinfo::Disks::new_with_refreshed_list();
    disks
        .list()
        .iter()
        .filter(|d| dir.starts_with(d.mount_point()))
        .max_by_key(|d| d.mount_point().as_os_str().len())
        .map(|d| Volume {
            mount_point: d.mount_point().display().to_string(),
            total_bytes: d.total_space(),
            free_bytes: d.available_space(),
        })
}

/// Bytes of the files under `dir` (not following links).
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .sum()
}
