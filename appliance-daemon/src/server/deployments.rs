//! Deployments over the admin API: a catalog model served under a name (and aliases) with
//! its own engine settings. Created, changed (a hot swap: the new engine is loaded next to
//! the old one, takes over in one step, and requests in flight finish on the old one) and
//! removed while the daemon serves; each change is in sled before it is reported, so a
//! restart restores what was deployed.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::catalog::{self, ServedModel};
use super::embeddings::EmbeddingModel;
use super::error::{ApiError, ErrorBody};
use super::extract::JsonBody;
use crate::store::{DeploymentRecord, ModelRecord, unix_now};
pub use oasis_api::{
    ChangeDeployment, CreateDeployment, DeploymentList, DeploymentName, DeploymentView,
    EngineSettings, Undeployed,
};

/// `d` as the API shows it: ready with `engine` (the live engine of this generation of
/// `d`), else unavailable with `error`.
fn view(
    d: &DeploymentRecord,
    engine: Option<EngineSettings>,
    error: Option<String>,
) -> DeploymentView {
    DeploymentView {
        name: d.name.clone(),
        aliases: d.aliases.clone(),
        model: d.model.clone(),
        state: if engine.is_some() {
            "ready".into()
        } else {
            "unavailable".into()
        },
        error: if engine.is_some() { None } else { error },
        ranks: d.ranks,
        context_length: d.context_length,
        max_sequences: d.max_sequences,
        prompt_lookup: d.prompt_lookup,
        engine,
        generation: d.generation,
        created_at: d.created_at,
        updated_at: d.updated_at,
    }
}

/// Whether a loaded deployment (`loaded` serving `record`) is this generation of `d`.
fn is_live(d: &DeploymentRecord, loaded: &DeploymentRecord, record: &ModelRecord) -> bool {
    loaded.generation == d.generation && record.id == d.model
}

/// The engine of chat model `m`, when it serves this generation of `d`.
fn chat_engine(d: &DeploymentRecord, m: &ServedModel) -> Option<EngineSettings> {
    is_live(d, &m.deployment, &m.record).then(|| EngineSettings {
        ranks: m.worker.ranks,
        context_length: m.n_ctx,
        kv_cache_bytes: m.kv_bytes,
        running: m
            .worker
            .stats
            .engine
            .running
            .load(std::sync::atomic::Ordering::Relaxed),
        waiting: m.worker.stats.waiting(),
    })
}

/// The engine of embedding model `m`, when it serves this generation of `d`: the encoder's
/// worker (one rank, its token limit as the context, no key/value cache, the requests
/// queued or encoding).
fn embedding_engine(d: &DeploymentRecord, m: &EmbeddingModel) -> Option<EngineSettings> {
    is_live(d, &m.deployment, &m.record).then(|| EngineSettings {
        ranks: 1,
        context_length: m.embedder.max_tokens(),
        kv_cache_bytes: 0,
        running: 0,
        waiting: m.waiting(),
    })
}

fn records(st: &AppState) -> Result<Vec<DeploymentRecord>, ApiError> {
    Ok(st
        .store
        .deployments()?
        .into_iter()
        .filter_map(Result::ok)
        .collect())
}

fn show_one(st: &AppState, d: &DeploymentRecord) -> DeploymentView {
    let error = st
        .catalog
        .unavailable()
        .into_iter()
        .find(|u| u.id == d.name)
        .map(|u| u.error);
    let engine = match st.catalog.embedder(&d.name).filter(|m| m.name == d.name) {
        Some(m) => embedding_engine(d, &m),
        None => st.catalog.get(&d.name).and_then(|m| chat_engine(d, &m)),
    };
    view(d, engine, error)
}

/// Every deployment.
#[utoipa::path(get, path = "/admin/v1/deployments", responses((status = 200, body = DeploymentList)))]
pub async fn list(State(st): State<AppState>) -> Result<Json<DeploymentList>, ApiError> {
    let data = records(&st)?.iter().map(|d| show_one(&st, d)).collect();
    Ok(Json(DeploymentList { data }))
}

fn no_deployment(name: &str) -> ApiError {
    ApiError::not_found(format!(
        "no deployment `{name}` (see GET /admin/v1/deployments)"
    ))
    .with_code("deployment_not_found")
}

/// One deployment.
#[utoipa::path(get, path = "/admin/v1/deployments/{name}", params(("name" = String, Path)),
    responses((status = 200, body = DeploymentView), (status = 404, body = ErrorBody)))]
pub async fn show(
    State(st): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<DeploymentView>, ApiError> {
    let d = st
        .store_deployment(&name)?
        .ok_or_else(|| no_deployment(&name))?;
    Ok(Json(show_one(&st, &d)))
}

impl AppState {
    fn store_deployment(&self, name: &str) -> Result<Option<DeploymentRecord>, ApiError> {
        Ok(records(self)?.into_iter().find(|d| d.name == name))
    }
}

/// The settings' bounds, and names that no other deployment uses.
fn check(st: &AppState, d: &DeploymentRecord) -> Result<(), ApiError> {
    crate::import::check_id(&d.name).map_err(|m| ApiError::invalid_param("name", m))?;
    for a in &d.aliases {
        crate::import::check_id(a).map_err(|m| ApiError::invalid_param("aliases", m))?;
        if *a == d.name {
            return Err(ApiError::conflict(format!(
                "the alias `{a}` is the deployment's own name"
            ))
            .with_param("aliases"));
        }
    }
    let bound = |param: &str, v: Option<usize>, lo: usize, hi: usize| match v {
        Some(x) if !(lo..=hi).contains(&x) => Err(ApiError::invalid_param(
            param,
            format!("`{param}` must be between {lo} and {hi}, got {x}"),
        )),
        _ => Ok(()),
    };
    bound("ranks", d.ranks, 1, 64)?;
    // The daemon's `max_context` is the box's ceiling: a deployment asks for less or as much.
    if let (Some(c), Some(max)) = (d.context_length, st.config.max_context)
        && c > max
    {
        return Err(ApiError::invalid_param(
            "context_length",
            format!(
                "`context_length` {c} is above this daemon's `max_context` ({max} tokens, the most any sequence may take)"
            ),
        ));
    }
    bound("context_length", d.context_length, 1, 10_000_000)?;
    bound("max_sequences", d.max_sequences, 1, 4096)?;
    bound(
        "prompt_lookup",
        d.prompt_lookup,
        0,
        engine::scheduler::lookup::MAX_DRAFT,
    )?;
    for other in records(st)? {
        if other.name == d.name {
            continue;
        }
        let theirs: Vec<&String> = std::iter::once(&other.name).chain(&other.aliases).collect();
        for mine in std::iter::once(&d.name).chain(&d.aliases) {
            if theirs.contains(&mine) {
                return Err(ApiError::conflict(format!(
                    "the name `{mine}` is taken by deployment `{}`",
                    other.name
                )));
            }
        }
    }
    Ok(())
}

/// An embedding model takes none of the engine settings: each one set is a 422 naming it
/// (a setting that would be silently ignored is an admin's mistake kept).
fn check_embedding_settings(d: &DeploymentRecord, record: &ModelRecord) -> Result<(), ApiError> {
    let set = [
        ("ranks", d.ranks.is_some()),
        ("context_length", d.context_length.is_some()),
        ("max_sequences", d.max_sequences.is_some()),
        ("prompt_lookup", d.prompt_lookup.is_some()),
    ];
    if let Some((param, _)) = set.iter().find(|(_, on)| *on) {
        let mut err = ApiError::invalid_param(
            *param,
            format!(
                "`{param}` is a chat engine setting; `{}` is an embedding model, which takes none (its token limit is the model's own, {} tokens)",
                record.id, record.context_length
            ),
        )
        .with_code("setting_not_applicable");
        err.status = StatusCode::UNPROCESSABLE_ENTITY;
        return Err(err);
    }
    Ok(())
}

/// Refuses a deployment that cannot fit in the host's available memory: the weights (read
/// from their memory map) and the KV cache the engine allocates up front (none for an
/// embedding model).
fn check_fit(st: &AppState, record: &ModelRecord) -> Result<(), ApiError> {
    let mut sys = sysinfo::System::new();
    sys.refresh_memory();
    let has = sys.available_memory();
    let kv = if catalog::is_embedding(record) {
        0
    } else {
        st.config.kv_cache_bytes as u64
    };
    let needs = record.size_bytes.saturating_add(kv);
    if has > 0 && needs > has {
        let gb = |b: u64| b as f64 / 1e9;
        return Err(ApiError::conflict(format!(
            "`{}` does not fit: needs {:.2} GB ({:.2} GB of weights + {:.2} GB of KV cache), the host has {:.2} GB available",
            record.id,
            gb(needs),
            gb(record.size_bytes),
            gb(kv),
            gb(has)
        ))
        .with_code("does_not_fit"));
    }
    Ok(())
}

/// Loads `d` (off the async runtime) and puts it in service; the record is written first.
async fn load_and_install(st: &AppState, d: DeploymentRecord) -> Result<DeploymentView, ApiError> {
    // A body naming a model that is not there is a 422, not a 404: a 404 from
    // `PATCH /admin/v1/deployments/{name}` would say the deployment itself is missing.
    let record = st.store.get_model(&d.model)?.ok_or_else(|| {
        let mut err = ApiError::invalid(format!(
            "no model `{}` in the catalog (see GET /admin/v1/models)",
            d.model
        ))
        .with_param("model")
        .with_code("model_not_found");
        err.status = StatusCode::UNPROCESSABLE_ENTITY;
        err
    })?;
    let embedding = catalog::is_embedding(&record);
    if embedding {
        check_embedding_settings(&d, &record)?;
    }
    check_fit(st, &record)?;
    if embedding {
        return install_embedder(st, d, record).await;
    }
    let (store, config, rec, dep) = (st.store.clone(), st.config.clone(), record, d.clone());
    let served = tokio::task::spawn_blocking(move || catalog::serve(&store, &config, rec, dep))
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| load_failed(&d.model, &e))?;
    st.store.put_deployment(&d)?;
    let served = Arc::new(served);
    let old = st.catalog.install(served.clone());
    // A name that served an embedding model now serves a chat model.
    st.catalog.remove_embedder(&d.name);
    log_deployed(&d, old.as_ref().map(|o| o.record.id.as_str()));
    drop(old);
    Ok(view(&d, chat_engine(&d, &served), None))
}

/// Logs `d` put in service, in place of a deployment of catalog model `from`.
fn log_deployed(d: &DeploymentRecord, from: Option<&str>) {
    match from {
        Some(from) => {
            tracing::info!(name = %d.name, %from, to = %d.model, generation = d.generation, "deployment swapped; requests in flight finish on the old model")
        }
        None => tracing::info!(name = %d.name, model = %d.model, "deployed"),
    }
}

fn load_failed(model: &str, e: &anyhow::Error) -> ApiError {
    let mut err = ApiError::invalid(format!("cannot load model `{model}`: {e:#}"))
        .with_param("model")
        .with_code("model_load_failed");
    err.status = StatusCode::UNPROCESSABLE_ENTITY;
    err
}

/// Loads the embedding model `record` as `d` and puts it in service (as
/// [`load_and_install`] does a chat model).
async fn install_embedder(
    st: &AppState,
    d: DeploymentRecord,
    record: ModelRecord,
) -> Result<DeploymentView, ApiError> {
    let (store, config, dep) = (st.store.clone(), st.config.clone(), d.clone());
    let m =
        tokio::task::spawn_blocking(move || catalog::serve_embedder(&store, &config, record, dep))
            .await
            .map_err(ApiError::internal)?
            .map_err(|e| load_failed(&d.model, &e))?;
    st.store.put_deployment(&d)?;
    let m = Arc::new(m);
    let old = st.catalog.install_embedder(m.clone());
    // A name that served a chat model now serves an embedding model.
    st.catalog.remove_chat(&d.name);
    log_deployed(&d, old.as_ref().map(|o| o.record.id.as_str()));
    Ok(view(&d, embedding_engine(&d, &m), None))
}

/// Deploys a catalog model; answers once it serves.
#[utoipa::path(post, path = "/admin/v1/deployments", request_body = CreateDeployment,
    responses((status = 201, body = DeploymentView), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create(
    State(st): State<AppState>,
    who: Option<axum::Extension<super::auth::Principal>>,
    JsonBody(req): JsonBody<CreateDeployment>,
) -> Result<Response, ApiError> {
    let who = who.map(|w| w.0);
    let what = serde_json::json!({ "model": req.model, "name": req.name, "aliases": req.aliases, "ranks": req.ranks, "context_length": req.context_length, "max_sequences": req.max_sequences, "prompt_lookup": req.prompt_lookup });
    let r: Result<Response, ApiError> = async {
    let _one_change = st.deploy_lock.lock().await;
    let now = unix_now();
    let d = DeploymentRecord {
        name: req.name.clone().unwrap_or_else(|| req.model.clone()),
        aliases: req.aliases,
        ranks: req.ranks,
        context_length: req.context_length,
        max_sequences: req.max_sequences,
        prompt_lookup: req.prompt_lookup,
        created_at: now,
        updated_at: now,
        ..catalog::new_deployment("", &req.model)
    };
    if st.store_deployment(&d.name)?.is_some() {
        return Err(ApiError::conflict(format!(
            "deployment `{}` exists: change it with PATCH /admin/v1/deployments/{} (`oasis deploy MODEL --name {}` swaps it)",
            d.name, d.name, d.name
        )));
    }
    check(&st, &d)?;
    let v = load_and_install(&st, d).await?;
    Ok((StatusCode::CREATED, Json(v)).into_response())
    }
    .await;
    super::auth::audited(&st, who.as_ref(), "deployment.create", what, r)
}

/// Changes a deployment: another model (a new version under the same name), other
/// settings or aliases. The new engine loads next to the old one and takes over in one
/// step; requests in flight finish on the old one.
#[utoipa::path(patch, path = "/admin/v1/deployments/{name}", params(("name" = String, Path)),
    request_body = ChangeDeployment,
    responses((status = 200, body = DeploymentView), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn change(
    State(st): State<AppState>,
    who: Option<axum::Extension<super::auth::Principal>>,
    Path(name): Path<String>,
    JsonBody(req): JsonBody<ChangeDeployment>,
) -> Result<Json<DeploymentView>, ApiError> {
    let who = who.map(|w| w.0);
    let what = serde_json::json!({ "name": name, "model": req.model, "aliases": req.aliases, "ranks": req.ranks, "context_length": req.context_length, "max_sequences": req.max_sequences, "prompt_lookup": req.prompt_lookup });
    let r: Result<Json<DeploymentView>, ApiError> = async {
        let _one_change = st.deploy_lock.lock().await;
        let old = st
            .store_deployment(&name)?
            .ok_or_else(|| no_deployment(&name))?;
        let mut d = old.clone();
        if let Some(m) = req.model {
            d.model = m;
        }
        if let Some(a) = req.aliases {
            d.aliases = a;
        }
        if req.ranks.is_some() {
            d.ranks = req.ranks;
        }
        if req.context_length.is_some() {
            d.context_length = req.context_length;
        }
        if req.max_sequences.is_some() {
            d.max_sequences = req.max_sequences;
        }
        if req.prompt_lookup.is_some() {
            d.prompt_lookup = req.prompt_lookup;
        }
        check(&st, &d)?;
        d.generation = old.generation + 1;
        d.updated_at = unix_now();
        load_and_install(&st, d).await.map(Json)
    }
    .await;
    super::auth::audited(&st, who.as_ref(), "deployment.change", what, r)
}

/// Stops serving a deployment; requests in flight finish.
#[utoipa::path(delete, path = "/admin/v1/deployments/{name}", params(("name" = String, Path)),
    responses((status = 200, body = Undeployed), (status = 404, body = ErrorBody)))]
pub async fn remove(
    State(st): State<AppState>,
    who: Option<axum::Extension<super::auth::Principal>>,
    Path(name): Path<String>,
) -> Result<Json<Undeployed>, ApiError> {
    let who = who.map(|w| w.0);
    let what = serde_json::json!({ "name": name });
    let r: Result<Json<Undeployed>, ApiError> = async {
        let _one_change = st.deploy_lock.lock().await;
        let d = st
            .store_deployment(&name)?
            .ok_or_else(|| no_deployment(&name))?;
        st.store.remove_deployment(&name)?;
        st.catalog.remove(&name);
        tracing::info!(name = %name, model = %d.model, "undeployed");
        Ok(Json(Undeployed {
            undeployed: name,
            model: d.model,
        }))
    }
    .await;
    super::auth::audited(&st, who.as_ref(), "deployment.delete", what, r)
}
