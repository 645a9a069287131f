//! The commands the front end invokes (`invoke('boxes_list')`, ...). Each runs the
//! blocking work of [`AppState`] on the blocking pool, never on the main thread, and
//! rejects with the error's message.

use oasis_client::{Probe, Response};
use serde_json::Value;
use tauri::State;

use crate::Error;
use crate::state::{AppState, BoxEntry};

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, String> {
    match tauri::async_runtime::spawn_blocking(work).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(e) => Err(format!("internal error: the command's task failed: {e}")),
    }
}

/// The boxes added so far.
#[tauri::command]
pub async fn boxes_list(state: State<'_, AppState>) -> Result<Vec<BoxEntry>, String> {
    let state = state.inner().clone();
    blocking(move || Ok(state.list())).await
}

/// What the box at `address` serves, without trusting it yet.
#[tauri::command]
pub async fn box_probe(address: String) -> Result<Probe, String> {
    blocking(move || AppState::probe(&address)).await
}

/// Pairs with a box, pinning its certificate and keeping the token in the token store.
#[tauri::command]
pub async fn box_pair(
    state: State<'_, AppState>,
    address: String,
    fingerprint: Option<String>,
    code: String,
    name: String,
) -> Result<BoxEntry, String> {
    let state = state.inner().clone();
    blocking(move || state.pair(&address, fingerprint.as_deref(), &code, &name)).await
}

/// Forgets a box and its token.
#[tauri::command]
pub async fn box_remove(state: State<'_, AppState>, id: String) -> Result<(), String> {
    let state = state.inner().clone();
    blocking(move || state.remove(&id)).await
}

/// One admin-API call to a box: any HTTP status is an answer.
#[tauri::command]
pub async fn api_request(
    state: State<'_, AppState>,
    box_id: String,
    method: String,
    path: String,
    body: Option<Value>,
) -> Result<Response, String> {
    let state = state.inner().clone();
    blocking(move || state.request(&box_id, &method, &path, body.as_ref())).await
}
