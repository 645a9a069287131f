//! The model catalog over the admin API: import (from a path on the box, or uploaded),
//! the jobs that carry imports out (progress, SSE, cancel), listing and deleting models.

use std::convert::Infallible;
use std::path::{Path as FsPath, PathBuf};
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt as _;
use serde::Deserialize;

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::extract::JsonBody;
use crate::jobs::{JobView, Jobs, SubmitError};
use crate::store::ModelRecord;
pub use oasis_api::{CatalogList, CatalogModel, Deleted, ImportRequest, JobList};

/// `DATA_DIR/models/store`: where imported models live, one folder each.
pub fn store_root(data_dir: &FsPath) -> PathBuf {
    data_dir.join("models").join("store")
}

fn catalog_model(r: ModelRecord, deployed_as: Vec<String>) -> CatalogModel {
    CatalogModel {
        id: r.id,
        name: r.name,
        format: r.format,
        architecture: r.architecture,
        parameters: r.parameters,
        context_length: r.context_length,
        digest: r.digest,
        size_bytes: r.size_bytes,
        path: r.path.display().to_string(),
        in_store: r.in_store,
        license: r.license,
        added_at: r.added_at,
        deployed_as,
    }
}

/// Deployment names (served or not) that use catalog model `id`, from sled.
fn deployed_as(st: &AppState, id: &str) -> Result<Vec<String>, ApiError> {
    Ok(st
        .store
        .deployments()?
        .into_iter()
        .filter_map(Result::ok)
        .filter(|d| d.model == id)
        .map(|d| d.name)
        .collect())
}

/// Every model in the catalog, deployed or not.
#[utoipa::path(get, path = "/admin/v1/models", responses((status = 200, body = CatalogList)))]
pub async fn list(State(st): State<AppState>) -> Result<Json<CatalogList>, ApiError> {
    let mut data = Vec::new();
    for r in st.store.models()?.into_iter().filter_map(Result::ok) {
        let d = deployed_as(&st, &r.id)?;
        data.push(catalog_model(r, d));
    }
    Ok(Json(CatalogList { data }))
}

fn not_in_catalog(id: &str) -> ApiError {
    ApiError::not_found(format!(
        "no model `{id}` in the catalog (see GET /admin/v1/models)"
    ))
    .with_code("model_not_found")
}

/// One catalog model.
#[utoipa::path(get, path = "/admin/v1/models/{id}", params(("id" = String, Path)),
    responses((status = 200, body = CatalogModel), (status = 404, body = ErrorBody)))]
pub async fn show(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<CatalogModel>, ApiError> {
    let r = st
        .store
        .get_model(&id)?
        .ok_or_else(|| not_in_catalog(&id))?;
    let d = deployed_as(&st, &id)?;
    Ok(Json(catalog_model(r, d)))
}

/// Deletes a model from the catalog and, when it is in the store, its files. A deployed
/// model is refused (409).
#[utoipa::path(delete, path = "/admin/v1/models/{id}", params(("id" = String, Path)),
    responses((status = 200, body = Deleted), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn remove(
    State(st): State<AppState>,
    who: Option<axum::Extension<super::auth::Principal>>,
    Path(id): Path<String>,
) -> Result<Json<Deleted>, ApiError> {
    let who = who.map(|w| w.0);
    let what = serde_json::json!({ "model": id });
    let r: Result<Json<Deleted>, ApiError> = async {
        let _one_change = st.deploy_lock.lock().await;
        let r = st
            .store
            .get_model(&id)?
            .ok_or_else(|| not_in_catalog(&id))?;
        let users = deployed_as(&st, &id)?;
        if !users.is_empty() {
            return Err(ApiError::conflict(format!(
                "model `{id}` is deployed as {}: undeploy it first (`oasis undeploy {}`)",
                users
                    .iter()
                    .map(|u| format!("`{u}`"))
                    .collect::<Vec<_>>()
                    .join(", "),
                users[0]
            )));
        }
        // The record goes first (durably): a crash before the files are gone leaves an
        // unreferenced folder, which the next start removes.
        st.store.remove_model(&id)?;
        let root = store_root(&st.config.data_dir);
        let freed = if r.in_store { r.size_bytes } else { 0 };
        let rec = r.clone();
        tokio::task::spawn_blocking(move || crate::import::remove_stored(&root, &rec))
            .await
            .map_err(ApiError::internal)?
            .map_err(|e| ApiError::internal(format!("{e:#}")))?;
        tracing::info!(model = %id, freed_bytes = freed, "model deleted");
        Ok(Json(Deleted {
            deleted: id,
            freed_bytes: freed,
        }))
    }
    .await;
    super::auth::audited(&st, who.as_ref(), "model.delete", what, r)
}

fn submit_error(e: SubmitError) -> ApiError {
    match e {
        SubmitError::Invalid(m) => ApiError::invalid(m),
        SubmitError::Conflict(m) => ApiError::conflict(m),
        SubmitError::NoSpace(m) => ApiError::insufficient_storage(m),
        SubmitError::Internal(m) => ApiError::internal(m),
    }
}

fn accepted(view: JobView) -> Response {
    let mut resp = (StatusCode::ACCEPTED, Json(&view)).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("/admin/v1/jobs/{}", view.id)) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

/// Starts importing a model from a path on the box; answers at once with the job.
#[utoipa::path(post, path = "/admin/v1/models/import", request_body = ImportRequest,
    responses((status = 202, body = JobView), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn import(
    State(st): State<AppState>,
    who: Option<axum::Extension<super::auth::Principal>>,
    JsonBody(req): JsonBody<ImportRequest>,
) -> Result<Response, ApiError> {
    let who = who.map(|w| w.0);
    let what = serde_json::json!({ "path": req.path, "name": req.name, "in_place": req.in_place });
    let r: Result<Response, ApiError> = async {
        if req.path.is_empty() {
            return Err(ApiError::invalid_param("path", "`path` must not be empty"));
        }
        let jobs = st.jobs.clone();
        let view = tokio::task::spawn_blocking(move || {
            jobs.submit_import(None, PathBuf::from(req.path), req.name, req.in_place, false)
        })
        .await
        .map_err(ApiError::internal)?
        .map_err(submit_error)?;
        Ok(accepted(view))
    }
    .await;
    super::auth::audited(&st, who.as_ref(), "model.import", what, r)
}

/// `POST /admin/v1/models/upload` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UploadQuery {
    /// The file's name: `NAME.gguf` or `NAME.tar` (a bundle): a plain name of at most 200
    /// bytes, not starting with `.`, without `/` or control characters.
    #[param(
        pattern = r"^[^./\x00-\x1f\x7f-\x9f][^/\x00-\x1f\x7f-\x9f]{0,194}\.(gguf|tar)$",
        max_length = 200
    )]
    pub filename: String,
    /// The catalog id [default: from the file name].
    #[param(pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")]
    pub name: Option<String>,
}

/// Uploads a GGUF file or a `.tar` bundle as the request body (streamed to disk, never
/// held in memory), then imports it as a job; answers once the body is on disk.
#[utoipa::path(post, path = "/admin/v1/models/upload", params(UploadQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 202, body = JobView), (status = 400, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 507, body = ErrorBody)))]
pub async fn upload(
    State(st): State<AppState>,
    who: Option<axum::Extension<super::auth::Principal>>,
    headers: HeaderMap,
    query: Result<Query<UploadQuery>, axum::extract::rejection::QueryRejection>,
    body: Body,
) -> Result<Response, ApiError> {
    let who = who.map(|w| w.0);
    let what = match &query {
        Ok(Query(q)) => serde_json::json!({ "filename": q.filename, "name": q.name }),
        Err(_) => serde_json::json!({}),
    };
    let r: Result<Response, ApiError> = async {
        let checked = check_upload(&st, query, &headers);
        let (q, _id) = match checked {
            Ok(x) => x,
            // Refused before the body was read: read a little of it, so that a client still
            // sending gets the answer (and its connection stays usable), else close.
            Err(e) => return Err(after_draining(body, e).await),
        };
        let root = store_root(&st.config.data_dir);
        let job_id = Jobs::new_id();
        let dir = root.join(format!(".upload-{job_id}"));
        let path = dir.join(&q.filename);
        receive(body, &dir, &path, st.config.idle_timeout).await?;
        tracing::info!(job = %job_id, file = %q.filename, "upload received");
        let jobs = st.jobs.clone();
        let name = q.name.clone();
        let submit_path = path.clone();
        let view = tokio::task::spawn_blocking(move || {
            jobs.submit_import(Some(job_id), submit_path, name, false, true)
        })
        .await
        .map_err(ApiError::internal)?;
        match view {
            Ok(v) => Ok(accepted(v)),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                Err(submit_error(e))
            }
        }
    }
    .await;
    super::auth::audited(&st, who.as_ref(), "model.upload", what, r)
}

/// Longest upload file name, in bytes (a file name on Linux has at most 255; the store
/// adds nothing to it).
const MAX_FILENAME_BYTES: usize = 200;

/// The checks an upload passes before its body is read: the query, the file name, the
/// model name, and room on the volume for the announced length.
fn check_upload(
    st: &AppState,
    query: Result<Query<UploadQuery>, axum::extract::rejection::QueryRejection>,
    headers: &HeaderMap,
) -> Result<(UploadQuery, String), ApiError> {
    let Query(q) = query.map_err(|e| ApiError::invalid(format!("bad upload query: {e}")))?;
    let plain = FsPath::new(&q.filename)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned());
    let shown = crate::logging::escape_controls(&q.filename);
    if q.filename.len() > MAX_FILENAME_BYTES
        || q.filename.chars().any(char::is_control)
        || plain.as_deref() != Some(q.filename.as_str())
        || q.filename.starts_with('.')
        || !(q.filename.ends_with(".gguf") || q.filename.ends_with(".tar"))
    {
        return Err(ApiError::invalid_param(
            "filename",
            format!(
                "`filename` must be a plain file name of at most {MAX_FILENAME_BYTES} bytes without control characters, ending in .gguf or .tar, got `{shown}`"
            ),
        ));
    }
    let id = q
        .name
        .clone()
        .unwrap_or_else(|| crate::import::id_from_path(FsPath::new(&q.filename)));
    crate::import::check_id(&id).map_err(|m| ApiError::invalid_param("name", m))?;
    if q.name.is_some() && (st.store.get_model(&id)?.is_some() || st.jobs.importing().contains(&id))
    {
        return Err(ApiError::conflict(format!(
            "a model named `{id}` is already in the catalog or being imported"
        )));
    }
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(len) = length {
        let root = store_root(&st.config.data_dir);
        crate::import::check_space(&root, len).map_err(ApiError::insufficient_storage)?;
    }
    Ok((q, id))
}

/// Most of a refused upload's body read (and dropped) before answering.
const DRAIN_BYTES: usize = 1 << 20;
const DRAIN_TIME: Duration = Duration::from_secs(2);

/// Reads and drops up to 1 MiB (2 s) of a body that will not be used, then answers `e`:
/// a client still sending would otherwise have its connection reset before it reads the
/// answer. When more was left, the answer closes the connection, which cannot be reused.
pub async fn after_draining(body: Body, mut e: ApiError) -> ApiError {
    let drained = tokio::time::timeout(DRAIN_TIME, async {
        let mut stream = body.into_data_stream();
        let mut n = 0usize;
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(b) => {
                    n += b.len();
                    if n > DRAIN_BYTES {
                        return false;
                    }
                }
                Err(_) => return false,
            }
        }
        true
    })
    .await;
    if drained != Ok(true) {
        e.close_connection = true;
    }
    e
}

/// Streams `body` into `path` through a writer thread (a small bounded queue between them,
/// so memory stays flat whatever the size); removes `dir` on any failure.
pub(crate) async fn receive(
    body: Body,
    dir: &FsPath,
    path: &FsPath,
    idle: Duration,
) -> Result<(), ApiError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| ApiError::internal(format!("cannot create {}: {e}", dir.display())))?;
    let file = match std::fs::File::create(path) {
        Ok(f) => f,
        Err(e) => {
            let _ = std::fs::remove_dir_all(dir);
            return Err(ApiError::internal(format!(
                "cannot create {}: {e}",
                path.display()
            )));
        }
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel::<axum::body::Bytes>(8);
    let writer = tokio::task::spawn_blocking(move || -> std::io::Result<u64> {
        use std::io::Write as _;
        let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
        let mut n = 0u64;
        while let Some(chunk) = rx.blocking_recv() {
            w.write_all(&chunk)?;
            n += chunk.len() as u64;
        }
        let f = w.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        Ok(n)
    });
    let mut stream = body.into_data_stream();
    let mut failed: Option<ApiError> = None;
    loop {
        let chunk = match tokio::time::timeout(idle, stream.next()).await {
            Ok(Some(c)) => c,
            Ok(None) => break,
            Err(_) => {
                failed = Some(ApiError::body_timeout(idle));
                break;
            }
        };
        match chunk {
            Ok(bytes) => {
                if tx.send(bytes).await.is_err() {
                    break; // the writer stopped: its error follows
                }
            }
            Err(e) => {
                failed = Some(ApiError::invalid(format!("the upload was cut short: {e}")));
                break;
            }
        }
    }
    drop(tx);
    let written = writer.await;
    let out = match (failed, written) {
        (Some(e), _) => Err(e),
        (None, Ok(Ok(0))) => Err(ApiError::invalid("the upload is empty")),
        (None, Ok(Ok(_))) => Ok(()),
        (None, Ok(Err(e))) => Err(ApiError::insufficient_storage(format!(
            "cannot write the upload to {}: {e}",
            path.display()
        ))),
        (None, Err(e)) => Err(ApiError::internal(e)),
    };
    if out.is_err() {
        let _ = std::fs::remove_dir_all(dir);
    }
    out
}

/// Every job, newest first.
#[utoipa::path(get, path = "/admin/v1/jobs", responses((status = 200, body = JobList)))]
pub async fn jobs(State(st): State<AppState>) -> Json<JobList> {
    Json(JobList {
        data: st.jobs.list(),
    })
}

fn no_job(id: &str) -> ApiError {
    ApiError::not_found(format!("no job `{id}`")).with_code("job_not_found")
}

/// One job with its progress.
#[utoipa::path(get, path = "/admin/v1/jobs/{id}", params(("id" = String, Path)),
    responses((status = 200, body = JobView), (status = 404, body = ErrorBody)))]
pub async fn job(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<JobView>, ApiError> {
    st.jobs.get(&id).map(Json).ok_or_else(|| no_job(&id))
}

/// Deletes a job: cancels it if it has not finished, then forgets it (404 afterwards).
#[utoipa::path(delete, path = "/admin/v1/jobs/{id}", params(("id" = String, Path)),
    responses((status = 200, body = JobView, description = "The job's last state"), (status = 404, body = ErrorBody)))]
pub async fn delete_job(
    State(st): State<AppState>,
    who: Option<axum::Extension<super::auth::Principal>>,
    Path(id): Path<String>,
) -> Result<Json<JobView>, ApiError> {
    let who = who.map(|w| w.0);
    let what = serde_json::json!({ "job": id });
    let r = st.jobs.forget(&id).map(Json).ok_or_else(|| no_job(&id));
    super::auth::audited(&st, who.as_ref(), "job.delete", what, r)
}

/// Cancels a job that has not finished (409 for one that has); the job stays, cancelled.
#[utoipa::path(post, path = "/admin/v1/jobs/{id}/cancel", params(("id" = String, Path)),
    responses((status = 202, body = JobView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn cancel_job(
    State(st): State<AppState>,
    who: Option<axum::Extension<super::auth::Principal>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let who = who.map(|w| w.0);
    let what = serde_json::json!({ "job": id });
    let r: Result<Response, ApiError> = async {
        let before = st.jobs.get(&id).ok_or_else(|| no_job(&id))?;
        if before.state.is_final() {
            return Err(ApiError::conflict(format!(
                "job `{id}` has already finished ({})",
                serde_json::to_value(before.state)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default()
            )));
        }
        let view = st.jobs.cancel(&id).ok_or_else(|| no_job(&id))?;
        tracing::info!(job = %id, "cancel requested");
        Ok((StatusCode::ACCEPTED, Json(view)).into_response())
    }
    .await;
    super::auth::audited(&st, who.as_ref(), "job.cancel", what, r)
}

/// The job's view as server-sent events: one event at each change (at most four a
/// second), the last one when it has finished.
#[utoipa::path(get, path = "/admin/v1/jobs/{id}/events", params(("id" = String, Path)),
    responses((status = 200, description = "text/event-stream of JobView", content_type = "text/event-stream"),
        (status = 404, body = ErrorBody)))]
pub async fn job_events(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Sse<impl futures_util::Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    st.jobs.get(&id).ok_or_else(|| no_job(&id))?;
    let jobs = st.jobs.clone();
    let events = futures_util::stream::unfold(
        (jobs, id, None::<JobView>, false),
        |(jobs, id, last, done)| async move {
            if done {
                return None;
            }
            loop {
                let view = jobs.get(&id)?;
                if last.as_ref() != Some(&view) {
                    let finished = view.state.is_final();
                    let ev = SseEvent::default()
                        .event("job")
                        .data(serde_json::to_string(&view).unwrap_or_default());
                    return Some((Ok(ev), (jobs, id, Some(view), finished)));
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        },
    );
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
