//! The models the daemon serves: deployments (a catalog model under a served name and
//! its aliases), each loaded (memory-mapped) with an engine of its own.
//!
//! At start the configured files join the catalog and get a deployment named after them;
//! every deployment in sled is then loaded. A configured model that cannot be loaded stops
//! the start with an error naming it: the operator asked for it. A deployment restored
//! from sled whose model has gone or broken is kept and reported as unavailable, so one
//! bad disk does not take the other models down. While the daemon runs, deployments come,
//! go and are swapped through [`Catalog::install`] and [`Catalog::remove`]: a request holds
//! its `Arc<ServedModel>`, so one in flight finishes on the model it started on.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use anyhow::{Context, Result};
use engine::Model;
use engine::model::KvBudget;
use engine::serve::EngineConfig;

use super::embeddings::EmbeddingModel;
use super::worker::WorkerHandle;
use crate::config::ServeConfig;
use crate::import::{EMBEDDING_FORMAT, describe, stat};
use crate::paths::DEFAULT_MODEL_FILE;
use crate::store::{DeploymentRecord, ModelRecord, SCHEMA, Store, unix_now};

/// Context length the daemon gives each sequence when neither the configuration nor a
/// smaller training context says otherwise: llama-server's default is 4096, and the KV
/// cache is allocated for it up front.
pub const DEFAULT_SERVE_CONTEXT: usize = 8192;

/// A deployment that is loaded and serving.
#[derive(Debug)]
pub struct ServedModel {
    /// The served name (what `model` says in requests and answers).
    pub name: String,
    pub deployment: DeploymentRecord,
    pub record: ModelRecord,
    /// Shared with the engine thread; the HTTP side uses it to tokenize and check requests.
    pub model: Arc<Model>,
    pub worker: WorkerHandle,
    /// Context limit per sequence.
    pub n_ctx: usize,
    /// Blocks in the model's key/value pool.
    pub kv_blocks: usize,
    /// Bytes of that pool.
    pub kv_bytes: usize,
}

/// The default embedding model's folder under the data directory's `models`
/// (scripts/fetch-embedding-model puts it there).
pub const DEFAULT_EMBEDDING_MODEL: &str = "all-MiniLM-L6-v2";

/// A deployment that could not be loaded.
#[derive(Debug, Clone)]
pub struct Unavailable {
    pub id: String,
    pub path: Option<PathBuf>,
    pub error: String,
}

/// Everything the daemon serves.
#[derive(Debug, Default)]
pub struct Catalog {
    /// By served name and by alias.
    served: Served<ServedModel>,
    unavailable: RwLock<Vec<Unavailable>>,
    /// Embedding models, by served name and by alias.
    embedders: Served<EmbeddingModel>,
}

impl Catalog {
    /// The embedding model served as `name` (a served name or an alias).
    pub fn embedder(&self, name: &str) -> Option<Arc<EmbeddingModel>> {
        self.embedders.read().ok()?.get(name).cloned()
    }

    /// The embedding models' names and aliases, sorted.
    pub fn embedder_ids(&self) -> Vec<String> {
        self.embedders
            .read()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Every model name requests may use, chat and embedding, sorted.
    pub fn all_ids(&self) -> Vec<String> {
        let mut ids = self.served_ids();
        ids.extend(self.embedder_ids());
        ids.sort();
        ids
    }

    /// Puts the embedding model `m` in service under its name and aliases in one step,
    /// replacing the deployment of that name (returned; requests holding it finish on it).
    pub fn install_embedder(&self, m: Arc<EmbeddingModel>) -> Option<Arc<EmbeddingModel>> {
        let old = put(&self.embedders, m.clone());
        self.clear_unavailable(&m.name);
        old
    }

    /// Each embedding deployment once, by served name.
    pub fn embedding_deployments(&self) -> Vec<Arc<EmbeddingModel>> {
        each(&self.embedders)
    }

    /// The deployment serving `name` (a served name or an alias).
    pub fn get(&self, name: &str) -> Option<Arc<ServedModel>> {
        self.served.read().ok()?.get(name).cloned()
    }

    /// Every name requests may use (served names and aliases), sorted.
    pub fn served_ids(&self) -> Vec<String> {
        self.served
            .read()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Each deployment once, by served name.
    pub fn deployments(&self) -> Vec<Arc<ServedModel>> {
        each(&self.served)
    }

    pub fn unavailable(&self) -> Vec<Unavailable> {
        self.unavailable
            .read()
            .map(|u| u.clone())
            .unwrap_or_default()
    }

    /// No model, chat or embedding, is served.
    pub fn is_empty(&self) -> bool {
        self.served.read().map_or(true, |m| m.is_empty())
            && self.embedders.read().map_or(true, |m| m.is_empty())
    }

    /// Puts `m` in service under its name and aliases in one step, replacing the
    /// deployment of that name (returned; requests holding it finish on it).
    pub fn install(&self, m: Arc<ServedModel>) -> Option<Arc<ServedModel>> {
        let old = put(&self.served, m.clone());
        self.clear_unavailable(&m.name);
        old
    }

    fn clear_unavailable(&self, name: &str) {
        if let Ok(mut u) = self.unavailable.write() {
            u.retain(|u| u.id != name);
        }
    }

    /// Takes the deployment `name`, chat or embedding, out of service (requests in
    /// flight finish); returns the chat model it served.
    pub fn remove(&self, name: &str) -> Option<Arc<ServedModel>> {
        self.clear_unavailable(name);
        self.remove_embedder(name);
        self.remove_chat(name)
    }

    /// Takes the embedding deployment `name` out of service.
    pub fn remove_embedder(&self, name: &str) -> Option<Arc<EmbeddingModel>> {
        take(&self.embedders, name)
    }

    /// Takes the chat deployment `name` out of service.
    pub fn remove_chat(&self, name: &str) -> Option<Arc<ServedModel>> {
        take(&self.served, name)
    }

    /// Records a deployment that could not be loaded.
    pub fn mark_unavailable(&self, u: Unavailable) {
        if let Ok(mut list) = self.unavailable.write() {
            list.retain(|x| x.id != u.id);
            list.push(u);
        }
    }
}

/// A deployment in one of the catalog's maps (keyed by served name and by alias).
trait Deployed {
    fn name(&self) -> &str;
    fn aliases(&self) -> &[String];
}

impl Deployed for ServedModel {
    fn name(&self) -> &str {
        &self.name
    }
    fn aliases(&self) -> &[String] {
        &self.deployment.aliases
    }
}

impl Deployed for EmbeddingModel {
    fn name(&self) -> &str {
        &self.name
    }
    fn aliases(&self) -> &[String] {
        &self.deployment.aliases
    }
}

type Served<T> = RwLock<BTreeMap<String, Arc<T>>>;

/// Puts `m` under its name and aliases, in place of the deployment of that name (whose
/// aliases go with it); returns that one.
fn put<T: Deployed>(map: &Served<T>, m: Arc<T>) -> Option<Arc<T>> {
    let mut map = map.write().ok()?;
    let old = map.get(m.name()).filter(|o| o.name() == m.name()).cloned();
    if let Some(o) = &old {
        for a in o.aliases() {
            map.remove(a);
        }
    }
    for a in m.aliases() {
        map.insert(a.clone(), m.clone());
    }
    map.insert(m.name().to_string(), m);
    old
}

/// Takes the deployment `name` and its aliases out.
fn take<T: Deployed>(map: &Served<T>, name: &str) -> Option<Arc<T>> {
    let mut map = map.write().ok()?;
    let old = map.get(name).filter(|o| o.name() == name).cloned()?;
    map.remove(name);
    for a in old.aliases() {
        map.remove(a);
    }
    Some(old)
}

/// Each deployment once, by served name.
fn each<T: Deployed>(map: &Served<T>) -> Vec<Arc<T>> {
    map.read()
        .map(|m| {
            m.iter()
                .filter(|(k, v)| k.as_str() == v.name())
                .map(|(_, v)| v.clone())
                .collect()
        })
        .unwrap_or_default()
}

/// A new deployment record serving catalog model `model` as `name`.
pub fn new_deployment(name: &str, model: &str) -> DeploymentRecord {
    let now = unix_now();
    DeploymentRecord {
        schema: SCHEMA,
        name: name.to_string(),
        aliases: Vec::new(),
        model: model.to_string(),
        ranks: None,
        context_length: None,
        max_sequences: None,
        prompt_lookup: None,
        generation: 1,
        created_at: now,
        updated_at: now,
    }
}

/// Restores the catalog from `store`, adds the configured model files (each deployed
/// under its id), and loads every deployment.
pub fn load(store: &Store, config: &ServeConfig) -> Result<Catalog> {
    let mut records: Vec<ModelRecord> = Vec::new();
    let catalog = Catalog::default();
    for entry in store.models()? {
        match entry {
            Ok(r) => records.push(r),
            Err(e) => {
                tracing::error!(error = %e, "skipping a corrupt catalog record");
                catalog.mark_unavailable(Unavailable {
                    id: corrupt_id(&e),
                    path: None,
                    error: e.to_string(),
                });
            }
        }
    }
    let mut deployments: Vec<DeploymentRecord> = Vec::new();
    for entry in store.deployments()? {
        match entry {
            Ok(d) => deployments.push(d),
            Err(e) => {
                tracing::error!(error = %e, "skipping a corrupt deployment record");
                catalog.mark_unavailable(Unavailable {
                    id: corrupt_id(&e),
                    path: None,
                    error: e.to_string(),
                });
            }
        }
    }
    let mut wanted: Vec<PathBuf> = config.models.clone();
    if wanted.is_empty() && records.is_empty() {
        let default = config.data_dir.join("models").join(DEFAULT_MODEL_FILE);
        if default.is_file() {
            wanted.push(default);
        }
    }
    // The default embedding model (scripts/fetch-embedding-model puts it in the data
    // directory's `models`) joins the catalog and is deployed, beside the chat models, the
    // first time it is found with no model named: after that its deployment is restored like
    // any other (undeployed, it stays so). One that does not load is reported unavailable
    // and the rest is served; a model named with `--model` that does not load stops the start.
    let mut found: Vec<PathBuf> = Vec::new();
    if config.models.is_empty() {
        let default = config.data_dir.join("models").join(DEFAULT_EMBEDDING_MODEL);
        if engine::embed::is_embedding_model(&default)
            && let Ok(abs) = std::fs::canonicalize(&default)
            && !records.iter().any(|r| r.path == abs)
        {
            found.push(abs);
        }
    }
    // Configured files first: their errors stop the start.
    let mut configured = Vec::new();
    let named = wanted.len();
    for (i, path) in wanted.iter().chain(&found).enumerate() {
        let is_named = i < named;
        let abs = std::fs::canonicalize(path).with_context(|| cannot_load(path))?;
        let record = match records.iter().find(|r| r.path == abs) {
            Some(r) => r.clone(),
            None => {
                let id = unique_id(&abs, &records);
                let r = match describe(&abs, id.clone(), None, &BTreeMap::new()) {
                    Ok(r) => r,
                    Err(e) if is_named => return Err(e.context(cannot_load(path))),
                    Err(e) => {
                        let error = format!("{e:#}");
                        tracing::error!(name = %id, path = %abs.display(), %error, "model unavailable");
                        catalog.mark_unavailable(Unavailable {
                            id,
                            path: Some(abs),
                            error,
                        });
                        continue;
                    }
                };
                store.put_model(&r)?;
                tracing::info!(id = %r.id, path = %abs.display(), "model added to the catalog");
                records.push(r.clone());
                r
            }
        };
        if !deployments.iter().any(|d| d.name == record.id) {
            let d = new_deployment(&record.id, &record.id);
            store.put_deployment(&d)?;
            deployments.push(d);
        }
        if is_named {
            configured.push(record.id.clone());
        }
    }
    for d in deployments {
        let name = d.name.clone();
        let Some(record) = records.iter().find(|r| r.id == d.model).cloned() else {
            let error = format!("model `{}` is not in the catalog", d.model);
            tracing::error!(deployment = %name, %error, "deployment unavailable");
            catalog.mark_unavailable(Unavailable {
                id: name,
                path: None,
                error,
            });
            continue;
        };
        let path = record.path.clone();
        let loaded = if is_embedding(&record) {
            serve_embedder(store, config, record, d).map(|m| {
                tracing::info!(name = %name, model = %m.record.id, dimensions = m.embedder.dimensions(), "embedding model ready");
                catalog.install_embedder(Arc::new(m));
            })
        } else {
            serve(store, config, record, d).map(|served| {
                tracing::info!(name = %name, model = %served.record.id, n_ctx = served.n_ctx, "model ready");
                catalog.install(Arc::new(served));
            })
        };
        match loaded {
            Ok(()) => {}
            Err(e) if configured.contains(&name) => {
                return Err(e.context(cannot_load(&path)));
            }
            Err(e) => {
                let error = format!("{e:#}");
                tracing::error!(name = %name, path = %path.display(), %error, "model unavailable");
                catalog.mark_unavailable(Unavailable {
                    id: name,
                    path: Some(path),
                    error,
                });
            }
        }
    }
    Ok(catalog)
}

/// What a model named at start that does not load is reported as.
fn cannot_load(path: &Path) -> String {
    if path.is_dir() && engine::embed::is_embedding_model(path) {
        format!("cannot load the embedding model {}", path.display())
    } else {
        format!("cannot load model {}", path.display())
    }
}

/// `record`, re-read (and re-hashed) when its files changed since it was cataloged.
fn refreshed(store: &Store, record: ModelRecord) -> Result<ModelRecord> {
    let (size, modified) =
        stat(&record.path).with_context(|| format!("model {}", record.path.display()))?;
    if size == record.size_bytes && modified == record.modified_unix_ns {
        return Ok(record);
    }
    tracing::warn!(id = %record.id, "model file changed since it was cataloged; re-reading it");
    let mut fresh = describe(
        &record.path,
        record.id.clone(),
        Some(record.added_at),
        &BTreeMap::new(),
    )?;
    fresh.in_store = record.in_store;
    fresh.license = fresh.license.or(record.license);
    store.put_model(&fresh)?;
    Ok(fresh)
}

/// Whether catalog model `record` is an embedding model (served by `POST /v1/embeddings`).
pub fn is_embedding(record: &ModelRecord) -> bool {
    record.format == EMBEDDING_FORMAT
}

/// Loads one embedding model as deployment `d` and starts its worker.
pub fn serve_embedder(
    store: &Store,
    config: &ServeConfig,
    record: ModelRecord,
    d: DeploymentRecord,
) -> Result<EmbeddingModel> {
    let record = refreshed(store, record)?;
    let threads = config
        .threads
        .unwrap_or_else(engine::generate::default_threads);
    EmbeddingModel::start(record, d, threads, config.max_waiting)
}

/// Loads one catalog model as deployment `d` and starts its engine, re-hashing the file
/// if it changed.
pub fn serve(
    store: &Store,
    config: &ServeConfig,
    record: ModelRecord,
    d: DeploymentRecord,
) -> Result<ServedModel> {
    let record = refreshed(store, record)?;
    let model = Arc::new(Model::load(&record.path)?);
    let n_ctx_train = model.config.n_ctx_train;
    // The deployment's own, or the daemon's `max_context`, or the default; never above
    // `max_context` (the box's ceiling: a deployment recorded before it was lowered is
    // held to it) nor the model's training context.
    let n_ctx = d
        .context_length
        .or(config.max_context)
        .unwrap_or(DEFAULT_SERVE_CONTEXT)
        .min(config.max_context.unwrap_or(usize::MAX))
        .min(n_ctx_train)
        .max(1);
    // The device the daemon chose, unless this model cannot run there yet.
    let (device, fallback) = config.device.spec.for_model(&model);
    if let Some(why) = fallback {
        tracing::warn!(model = %record.id, "serving on the CPU: {why}");
    }
    // The cache: the configured bytes, or on a GPU the configured share of its memory
    // left once the weights are loaded. At least one full-context sequence fits.
    let kv = match (&device, config.gpu_kv_fraction) {
        (engine::device::DeviceSpec::Cuda { .. }, Some(f)) => KvBudget::GpuFraction(f),
        _ => KvBudget::Bytes(config.kv_cache_bytes),
    };
    let engine_config = EngineConfig {
        device,
        threads: config
            .threads
            .unwrap_or_else(engine::generate::default_threads),
        ranks: d.ranks.unwrap_or(config.ranks),
        redundant_experts: config.redundant_experts,
        n_ctx,
        max_batch_tokens: config.max_batch_tokens,
        max_running: d.max_sequences.unwrap_or(config.max_running),
        max_step_ms: config.max_step_ms,
        ttft_target_ms: config.ttft_target_ms,
        kv,
    };
    let worker = WorkerHandle::spawn(model.clone(), engine_config, &d.name, config.max_waiting)
        .context("cannot start the engine")?;
    tracing::info!(model = %record.id, device = %worker.device_detail, kv_blocks = worker.kv_blocks, kv_bytes = worker.kv_bytes, "engine started");
    Ok(ServedModel {
        name: d.name.clone(),
        deployment: d,
        kv_bytes: worker.kv_bytes,
        kv_blocks: worker.kv_blocks,
        record,
        model,
        worker,
        n_ctx,
    })
}

/// The file stem (`SmolLM2-135M-Instruct.Q4_1.gguf` -> `SmolLM2-135M-Instruct.Q4_1`),
/// with `-2`, `-3`, ... appended when another file already has that id.
fn unique_id(path: &Path, records: &[ModelRecord]) -> String {
    let stem = path
        .file_stem()
        .map_or_else(|| "model".to_string(), |s| s.to_string_lossy().into_owned());
    let taken = |id: &str| records.iter().any(|r| r.id == id);
    if !taken(&stem) {
        return stem;
    }
    (2..)
        .map(|i| format!("{stem}-{i}"))
        .find(|id| !taken(id))
        .unwrap_or(stem)
}

fn corrupt_id(e: &crate::store::StoreError) -> String {
    match e {
        crate::store::StoreError::Corrupt { key, .. } => key.clone(),
        other => other.to_string(),
    }
}
