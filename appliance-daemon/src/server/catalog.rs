//! The models the daemon serves: the sled catalog plus the files named in the
//! configuration, each loaded (memory-mapped) with an engine thread of its own.
//!
//! A model named in the configuration that cannot be loaded stops the start with an error
//! naming it: the operator asked for it. A model restored from the catalog whose file has
//! gone or broken is kept in the catalog and reported as unavailable, so one bad disk does
//! not take the other models down.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use anyhow::{Context, Result};
use engine::Model;
use engine::model::{BLOCK_POSITIONS, blocks_for};
use engine::parallel::RankGroupConfig;
use engine::scheduler::SchedulerConfig;
use sha2::{Digest, Sha256};

use super::worker::WorkerHandle;
use crate::config::ServeConfig;
use crate::paths::DEFAULT_MODEL_FILE;
use crate::store::{ModelRecord, SCHEMA, Store, hex, unix_now};

/// Context length the daemon gives each sequence when neither the configuration nor a
/// smaller training context says otherwise: llama-server's default is 4096, and the KV
/// cache is allocated for it up front.
pub const DEFAULT_SERVE_CONTEXT: usize = 8192;

/// A model that is loaded and serving.
#[derive(Debug)]
pub struct ServedModel {
    pub record: ModelRecord,
    /// Shared with the engine thread; the HTTP side uses it to tokenize and check requests.
    pub model: Arc<Model>,
    pub worker: WorkerHandle,
    /// Context limit per sequence.
    pub n_ctx: usize,
    /// Blocks in the model's key/value pool.
    pub kv_blocks: usize,
}

/// A catalog entry that could not be loaded.
#[derive(Debug, Clone)]
pub struct Unavailable {
    pub id: String,
    pub path: Option<PathBuf>,
    pub error: String,
}

/// Everything the daemon knows about its models.
#[derive(Debug, Default)]
pub struct Catalog {
    pub served: BTreeMap<String, Arc<ServedModel>>,
    pub unavailable: Vec<Unavailable>,
}

impl Catalog {
    /// Ids of the models being served, sorted.
    pub fn served_ids(&self) -> Vec<String> {
        self.served.keys().cloned().collect()
    }
}

/// Restores the catalog from `store`, adds the configured model files, and loads them all.
pub fn load(store: &Store, config: &ServeConfig) -> Result<Catalog> {
    let mut records: Vec<ModelRecord> = Vec::new();
    let mut catalog = Catalog::default();
    for entry in store.models()? {
        match entry {
            Ok(r) => records.push(r),
            Err(e) => {
                tracing::error!(error = %e, "skipping a corrupt catalog record");
                catalog.unavailable.push(Unavailable {
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
    // Configured files first: their errors stop the start.
    let mut configured = Vec::new();
    for path in &wanted {
        let abs = std::fs::canonicalize(path)
            .with_context(|| format!("cannot load model {}", path.display()))?;
        let record = match records.iter().find(|r| r.path == abs) {
            Some(r) => r.clone(),
            None => {
                let id = unique_id(&abs, &records);
                let r = describe(&abs, id, None)
                    .with_context(|| format!("cannot load model {}", path.display()))?;
                store.put_model(&r)?;
                tracing::info!(id = %r.id, path = %abs.display(), "model added to the catalog");
                records.push(r.clone());
                r
            }
        };
        configured.push(record.id.clone());
    }
    for record in records {
        let id = record.id.clone();
        let path = record.path.clone();
        match serve(store, config, record) {
            Ok(served) => {
                tracing::info!(id = %id, n_ctx = served.n_ctx, "model ready");
                catalog.served.insert(id, Arc::new(served));
            }
            Err(e) if configured.contains(&id) => {
                return Err(e.context(format!("cannot load model {}", path.display())));
            }
            Err(e) => {
                let error = format!("{e:#}");
                tracing::error!(id = %id, path = %path.display(), %error, "model unavailable");
                catalog.unavailable.push(Unavailable {
                    id,
                    path: Some(path),
                    error,
                });
            }
        }
    }
    Ok(catalog)
}

/// Loads one catalog model and starts its engine, re-hashing the file if it changed.
fn serve(store: &Store, config: &ServeConfig, mut record: ModelRecord) -> Result<ServedModel> {
    let (size, modified) =
        stat(&record.path).with_context(|| format!("model {}", record.path.display()))?;
    if size != record.size_bytes || modified != record.modified_unix_ns {
        tracing::warn!(id = %record.id, "model file changed since it was cataloged; re-reading it");
        record = describe(&record.path, record.id.clone(), Some(record.added_at))?;
        store.put_model(&record)?;
    }
    let model = Arc::new(Model::load(&record.path)?);
    let n_ctx_train = model.config.n_ctx_train;
    let n_ctx = config
        .max_context
        .unwrap_or(DEFAULT_SERVE_CONTEXT)
        .min(n_ctx_train)
        .max(1);
    let bytes_per_block = (model.kv_bytes_per_position() * BLOCK_POSITIONS).max(1);
    // At least one full-context sequence fits.
    let kv_blocks = (config.kv_cache_bytes / bytes_per_block).max(blocks_for(n_ctx));
    let group = RankGroupConfig {
        ranks: config.ranks,
        redundant_experts: config.redundant_experts,
        scheduler: SchedulerConfig {
            threads: config
                .threads
                .unwrap_or_else(engine::generate::default_threads),
            n_ctx,
            max_batch_tokens: config.max_batch_tokens,
            max_running: config.max_running,
            kv_blocks,
        },
    };
    let worker = WorkerHandle::spawn(model.clone(), group, &record.id, config.max_waiting)
        .context("cannot start the engine threads")?;
    Ok(ServedModel {
        record,
        model,
        worker,
        n_ctx,
        kv_blocks,
    })
}

/// Reads the file's header and digest into a catalog record.
fn describe(path: &Path, id: String, added_at: Option<u64>) -> Result<ModelRecord> {
    if path.is_dir() {
        return describe_checkpoint(path, id, added_at);
    }
    let (size_bytes, modified_unix_ns) = stat(path)?;
    let file = engine::gguf::GgufFile::open(path)?;
    let architecture = file
        .get_str("general.architecture")?
        .unwrap_or("unknown")
        .to_string();
    let name = file.get_str("general.name")?.unwrap_or(&id).to_string();
    let parameters = file.tensors().iter().map(|t| t.n_elements()).sum();
    let context_length = file
        .get_usize(&format!("{architecture}.context_length"))?
        .unwrap_or(0);
    drop(file);
    Ok(ModelRecord {
        schema: SCHEMA,
        id,
        path: path.to_path_buf(),
        format: "gguf".into(),
        digest: sha256_file(path)?,
        size_bytes,
        modified_unix_ns,
        architecture,
        name,
        parameters,
        context_length,
        added_at: added_at.unwrap_or_else(unix_now),
    })
}

/// A Hugging Face checkpoint folder as a catalog record: the digest covers every file the
/// model is made of (name and SHA-256 of each, in name order).
fn describe_checkpoint(dir: &Path, id: String, added_at: Option<u64>) -> Result<ModelRecord> {
    let cfg = engine::model::hf::HfConfig::load(dir)?;
    let ck = engine::safetensors::Checkpoint::open(dir)?;
    let parameters = ck
        .names()
        .filter_map(|n| ck.tensor(n))
        .filter(|t| !t.name.ends_with("_scale_inv"))
        .map(|t| t.n_elements() as u64)
        .sum();
    drop(ck);
    let (size_bytes, modified_unix_ns) = stat(dir)?;
    let mut manifest = Sha256::new();
    for f in checkpoint_files(dir)? {
        let name = f
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        manifest.update(format!("{name}\0{}\n", sha256_file(&f)?).as_bytes());
    }
    Ok(ModelRecord {
        schema: SCHEMA,
        name: id.clone(),
        id,
        path: dir.to_path_buf(),
        format: "safetensors".into(),
        digest: format!("sha256:{}", hex(&manifest.finalize())),
        size_bytes,
        modified_unix_ns,
        architecture: cfg.arch.name().to_string(),
        parameters,
        context_length: cfg.max_position,
        added_at: added_at.unwrap_or_else(unix_now),
    })
}

/// The files a checkpoint folder's model is made of: JSON files and safetensors shards.
fn checkpoint_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && p.extension()
                    .is_some_and(|x| x == "json" || x == "safetensors")
        })
        .collect();
    files.sort();
    Ok(files)
}

/// Size and modification time of a model: of the file, or summed and latest over a
/// checkpoint folder's files.
fn stat(path: &Path) -> Result<(u64, u128)> {
    if path.is_dir() {
        let mut size = 0;
        let mut modified = 0;
        for f in checkpoint_files(path)? {
            let meta = std::fs::metadata(&f)?;
            size += meta.len();
            modified = modified.max(modified_ns(&meta));
        }
        return Ok((size, modified));
    }
    let meta = std::fs::metadata(path)?;
    Ok((meta.len(), modified_ns(&meta)))
}

/// `sha256:<hex>` of a file, read in 1 MiB pieces.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(format!("sha256:{}", hex(&hasher.finalize())))
}

fn modified_ns(meta: &std::fs::Metadata) -> u128 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos())
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
