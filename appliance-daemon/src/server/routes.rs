//! The small routes: health, readiness, the model list, the daemon's status, and the
//! OpenAI-shaped 404 and 405.

use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::catalog::ServedModel;
use super::error::{ApiError, ErrorBody};
use super::openai::{ModelCard, ModelList};
pub use oasis_api::{Health, ModelStatus, StatusReport};

/// The daemon is alive.
#[utoipa::path(get, path = "/healthz", responses((status = 200, body = Health)))]
pub async fn healthz(State(st): State<AppState>) -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        models: st.catalog.all_ids(),
    })
}

/// The daemon can serve: at least one model is loaded and it is not shutting down.
#[utoipa::path(get, path = "/readyz", responses(
    (status = 200, body = Health), (status = 503, body = Health)))]
pub async fn readyz(State(st): State<AppState>) -> Response {
    let models = st.catalog.all_ids();
    let (code, status) = if st.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining")
    } else if models.is_empty() {
        (StatusCode::SERVICE_UNAVAILABLE, "not_ready")
    } else {
        (StatusCode::OK, "ready")
    };
    (
        code,
        Json(Health {
            status: status.into(),
            models,
        }),
    )
        .into_response()
}

fn card(name: &str, m: &ServedModel) -> ModelCard {
    let r = &m.record;
    ModelCard {
        id: name.to_string(),
        object: "model".into(),
        created: r.added_at,
        owned_by: "oasis".into(),
        format: r.format.clone(),
        architecture: r.architecture.clone(),
        parameters: r.parameters,
        context_length: m.n_ctx,
        digest: r.digest.clone(),
        size_bytes: r.size_bytes,
    }
}

fn embedding_card(name: &str, m: &super::embeddings::EmbeddingModel) -> ModelCard {
    let r = &m.record;
    ModelCard {
        id: name.to_string(),
        object: "model".into(),
        created: r.added_at,
        owned_by: "oasis".into(),
        format: r.format.clone(),
        architecture: r.architecture.clone(),
        parameters: r.parameters,
        context_length: m.embedder.max_tokens(),
        digest: r.digest.clone(),
        size_bytes: r.size_bytes,
    }
}

/// The models being served.
#[utoipa::path(get, path = "/v1/models", responses((status = 200, body = ModelList)))]
pub async fn list_models(State(st): State<AppState>) -> Json<ModelList> {
    Json(ModelList {
        object: "list".into(),
        data: st
            .catalog
            .served_ids()
            .into_iter()
            .filter_map(|name| st.catalog.get(&name).map(|m| card(&name, &m)))
            .chain(st.catalog.embedder_ids().into_iter().filter_map(|name| {
                st.catalog
                    .embedder(&name)
                    .map(|m| embedding_card(&name, &m))
            }))
            .collect(),
    })
}

/// One served model.
#[utoipa::path(get, path = "/v1/models/{id}",
    params(("id" = String, Path, description = "Model id")),
    responses((status = 200, body = ModelCard), (status = 404, body = ErrorBody)))]
pub async fn get_model(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ModelCard>, ApiError> {
    if let Some(m) = st.catalog.embedder(&id) {
        return Ok(Json(embedding_card(&id, &m)));
    }
    let m = st.model(&id)?;
    Ok(Json(card(&id, &m)))
}

/// The daemon's state: version, uptime, models and their load.
#[utoipa::path(get, path = "/admin/v1/status", responses((status = 200, body = StatusReport)))]
pub async fn status(State(st): State<AppState>) -> Json<StatusReport> {
    let mut models: Vec<ModelStatus> = st
        .catalog
        .deployments()
        .iter()
        .map(|m| {
            let s = &m.worker.stats;
            let broken = s.engine.broken.get().cloned();
            ModelStatus {
                id: m.name.clone(),
                state: if broken.is_some() {
                    "unavailable".into()
                } else {
                    "ready".into()
                },
                device: Some(m.worker.device.clone()),
                device_detail: Some(m.worker.device_detail.clone()),
                path: Some(m.record.path.display().to_string()),
                error: broken.map(|b| format!("the engine stopped: {b}")),
                architecture: Some(m.record.architecture.clone()),
                parameters: Some(m.record.parameters),
                context_length: Some(m.n_ctx),
                waiting: s.waiting(),
                running: s.engine.running.load(Ordering::Relaxed),
                requests_total: s.engine.requests_total.load(Ordering::Relaxed),
                prompt_tokens_total: s.engine.prompt_tokens_total.load(Ordering::Relaxed),
                completion_tokens_total: s.engine.completion_tokens_total.load(Ordering::Relaxed),
            }
        })
        .collect();
    models.extend(
        st.catalog
            .embedding_deployments()
            .iter()
            .map(|m| ModelStatus {
                id: m.name.clone(),
                state: "ready".into(),
                device: Some("cpu".into()),
                device_detail: Some(format!(
                    "CPU: a {}-dimension encoder (embeddings)",
                    m.embedder.dimensions()
                )),
                path: Some(m.record.path.display().to_string()),
                error: None,
                architecture: Some(m.record.architecture.clone()),
                parameters: Some(m.record.parameters),
                context_length: Some(m.embedder.max_tokens()),
                waiting: m.waiting(),
                running: 0,
                requests_total: m.requests_total.load(Ordering::Relaxed),
                prompt_tokens_total: m.prompt_tokens_total.load(Ordering::Relaxed),
                completion_tokens_total: 0,
            }),
    );
    models.extend(st.catalog.unavailable().iter().map(|u| ModelStatus {
        id: u.id.clone(),
        state: "unavailable".into(),
        device: None,
        device_detail: None,
        path: u.path.as_ref().map(|p| p.display().to_string()),
        error: Some(u.error.clone()),
        architecture: None,
        parameters: None,
        context_length: None,
        waiting: 0,
        running: 0,
        requests_total: 0,
        prompt_tokens_total: 0,
        completion_tokens_total: 0,
    }));
    let state = if st.is_draining() {
        "draining"
    } else if st.catalog.is_empty() {
        "not_ready"
    } else {
        "ready"
    };
    Json(StatusReport {
        version: env!("CARGO_PKG_VERSION").into(),
        state: state.into(),
        uptime_s: st.started.elapsed().as_secs(),
        instance_id: st.settings.instance_id.clone(),
        starts: st.settings.starts,
        data_dir: st.config.data_dir.display().to_string(),
        listen: st.config.listen.to_string(),
        models,
        audit: st.audit.health(),
    })
}

pub async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::route_not_found(method.as_str(), uri.path())
}

pub async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::method_not_allowed(method.as_str(), uri.path())
}
