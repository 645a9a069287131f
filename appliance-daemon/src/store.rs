//! The daemon's durable state: a sled database under the data directory, behind typed
//! accessors.
//!
//! Trees: `models` (catalog id -> [`ModelRecord`] as JSON), `deployments` (served name ->
//! [`DeploymentRecord`]), `jobs` (job id -> a job's JSON view), `settings` (one key,
//! `daemon`, -> [`Settings`] as JSON), `alerts` and `history` (telemetry). Every write is flushed before it returns, so what a
//! call reported as committed survives a `kill -9` the instant after. Records carry a
//! `schema` number so a later daemon can migrate them; a record that does not parse is
//! reported by id, never silently dropped.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Version of the record layout written by this build.
pub const SCHEMA: u32 = 1;

/// What can go wrong with the state database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the state database at {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: sled::Error,
    },
    #[error("state database: {0}")]
    Db(#[from] sled::Error),
    #[error("state database: record `{key}` in `{tree}` is corrupt: {problem}")]
    Corrupt {
        tree: &'static str,
        key: String,
        problem: String,
    },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// One model in the catalog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelRecord {
    pub schema: u32,
    /// The name clients pass as `model`.
    pub id: String,
    /// The model file (absolute).
    pub path: PathBuf,
    /// `gguf` for now.
    pub format: String,
    /// `sha256:<hex>` of the file.
    pub digest: String,
    /// File size and modification time when the digest was taken: a file that still
    /// matches both is not hashed again at start-up.
    pub size_bytes: u64,
    pub modified_unix_ns: u128,
    /// `general.architecture` (e.g. `llama`).
    pub architecture: String,
    /// The model's own name (`general.name`).
    pub name: String,
    /// Number of weights.
    pub parameters: u64,
    /// Training context length in tokens.
    pub context_length: usize,
    /// Seconds since the Unix epoch when the model entered the catalog.
    pub added_at: u64,
    /// The files live in the model store (`DATA_DIR/models/store/ID`) and are deleted with
    /// the model; false for files used where they lie.
    #[serde(default)]
    pub in_store: bool,
    /// The license, when the model's manifest or metadata names one.
    #[serde(default)]
    pub license: Option<String>,
}

/// A model served under a name: what `POST /admin/v1/deployments` creates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeploymentRecord {
    pub schema: u32,
    /// The name clients pass as `model`.
    pub name: String,
    /// Other names that reach the same deployment.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// The catalog id of the model served.
    pub model: String,
    /// Engine ranks [default: the daemon's].
    #[serde(default)]
    pub ranks: Option<usize>,
    /// Context limit per sequence [default: the daemon's].
    #[serde(default)]
    pub context_length: Option<usize>,
    /// Sequences batched at once [default: the daemon's].
    #[serde(default)]
    pub max_sequences: Option<usize>,
    /// Prompt-lookup draft tokens per step for requests that do not say [default: off].
    #[serde(default)]
    pub prompt_lookup: Option<usize>,
    /// Bumped by every change that reloads the model (a hot swap).
    pub generation: u64,
    pub created_at: u64,
    pub updated_at: u64,
}

/// Daemon-wide settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    pub schema: u32,
    /// Random id of this installation, made on first start.
    pub instance_id: String,
    /// Seconds since the epoch of the first start.
    pub created_at: u64,
    /// Incremented on every start: a crash-restart loop shows up here.
    pub starts: u64,
}

/// The open database.
#[derive(Debug, Clone)]
pub struct Store {
    db: sled::Db,
    models: sled::Tree,
    deployments: sled::Tree,
    jobs: sled::Tree,
    keys: sled::Tree,
    usage: sled::Tree,
    settings: sled::Tree,
    alerts: sled::Tree,
    history: sled::Tree,
}

const MODELS: &str = "models";
const DEPLOYMENTS: &str = "deployments";
const JOBS: &str = "jobs";
const KEYS: &str = "keys";
const USAGE: &str = "usage";
const ALERTS: &str = "alerts";
const HISTORY: &str = "history";
const SETTINGS: &str = "settings";
const SETTINGS_KEY: &str = "daemon";

impl Store {
    /// Opens (creating if needed) the database in `dir`.
    pub fn open(dir: &Path) -> Result<Store> {
        let open_err = |source| StoreError::Open {
            path: dir.to_path_buf(),
            source,
        };
        let db = sled::Config::new()
            .path(dir)
            .mode(sled::Mode::HighThroughput)
            .open()
            .map_err(open_err)?;
        let models = db.open_tree(MODELS)?;
        let deployments = db.open_tree(DEPLOYMENTS)?;
        let jobs = db.open_tree(JOBS)?;
        let keys = db.open_tree(KEYS)?;
        let usage = db.open_tree(USAGE)?;
        let settings = db.open_tree(SETTINGS)?;
        let alerts = db.open_tree(ALERTS)?;
        let history = db.open_tree(HISTORY)?;
        Ok(Store {
            db,
            models,
            deployments,
            jobs,
            keys,
            usage,
            settings,
            alerts,
            history,
        })
    }

    /// Records a start: creates the settings on first start, bumps the start counter
    /// otherwise, and returns them.
    pub fn record_start(&self) -> Result<Settings> {
        let settings = match self.settings()? {
            Some(mut s) => {
                s.starts += 1;
                s
            }
            None => Settings {
                schema: SCHEMA,
                instance_id: random_hex(16),
                created_at: unix_now(),
                starts: 1,
            },
        };
        self.settings
            .insert(SETTINGS_KEY, to_json(&settings).as_slice())?;
        self.db.flush()?;
        Ok(settings)
    }

    /// Stores a named setting (besides the daemon's own), durably.
    pub fn put_setting<T: Serialize>(&self, key: &str, value: &T) -> Result<()> {
        self.settings
            .insert(key.as_bytes(), to_json(value).as_slice())?;
        self.db.flush()?;
        Ok(())
    }

    /// A named setting, if set.
    pub fn get_setting<T: for<'de> Deserialize<'de>>(&self, key: &str) -> Result<Option<T>> {
        match self.settings.get(key.as_bytes())? {
            Some(bytes) => from_json(SETTINGS, key, &bytes).map(Some),
            None => Ok(None),
        }
    }

    pub fn settings(&self) -> Result<Option<Settings>> {
        match self.settings.get(SETTINGS_KEY)? {
            Some(bytes) => from_json(SETTINGS, SETTINGS_KEY, &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// Adds or replaces a catalog entry, durably.
    pub fn put_model(&self, record: &ModelRecord) -> Result<()> {
        self.models
            .insert(record.id.as_bytes(), to_json(record).as_slice())?;
        self.db.flush()?;
        Ok(())
    }

    pub fn get_model(&self, id: &str) -> Result<Option<ModelRecord>> {
        match self.models.get(id.as_bytes())? {
            Some(bytes) => from_json(MODELS, id, &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// Removes a catalog entry, durably; true if it existed.
    pub fn remove_model(&self, id: &str) -> Result<bool> {
        let existed = self.models.remove(id.as_bytes())?.is_some();
        self.db.flush()?;
        Ok(existed)
    }

    /// Every catalog entry in id order. Corrupt records are returned as errors next to the
    /// good ones so the caller can report them and go on.
    pub fn models(&self) -> Result<Vec<Result<ModelRecord>>> {
        let mut out = Vec::new();
        for item in self.models.iter() {
            let (key, bytes) = item?;
            let id = String::from_utf8_lossy(&key).into_owned();
            out.push(from_json(MODELS, &id, &bytes));
        }
        Ok(out)
    }
}

impl Store {
    /// Commits an imported model: its catalog record and its job's final state in one sled
    /// transaction, durably. Fails (committing nothing) when the id is already taken.
    pub fn commit_import<J: Serialize>(
        &self,
        record: &ModelRecord,
        job_id: &str,
        job: &J,
    ) -> Result<bool> {
        use sled::Transactional as _;
        use sled::transaction::{ConflictableTransactionError, TransactionError};
        let model = to_json(record);
        let job = to_json(job);
        let out = (&self.models, &self.jobs).transaction(|(models, jobs)| {
            if models.get(record.id.as_bytes())?.is_some() {
                return Err(ConflictableTransactionError::Abort(()));
            }
            models.insert(record.id.as_bytes(), model.as_slice())?;
            jobs.insert(job_id.as_bytes(), job.as_slice())?;
            Ok(())
        });
        match out {
            Ok(()) => {}
            Err(TransactionError::Abort(())) => return Ok(false),
            Err(TransactionError::Storage(e)) => return Err(e.into()),
        }
        self.db.flush()?;
        Ok(true)
    }

    /// Adds or replaces a deployment, durably.
    pub fn put_deployment(&self, d: &DeploymentRecord) -> Result<()> {
        self.deployments
            .insert(d.name.as_bytes(), to_json(d).as_slice())?;
        self.db.flush()?;
        Ok(())
    }

    /// Removes a deployment, durably; true if it existed.
    pub fn remove_deployment(&self, name: &str) -> Result<bool> {
        let existed = self.deployments.remove(name.as_bytes())?.is_some();
        self.db.flush()?;
        Ok(existed)
    }

    /// Every deployment in name order (corrupt ones as errors next to the good ones).
    pub fn deployments(&self) -> Result<Vec<Result<DeploymentRecord>>> {
        let mut out = Vec::new();
        for item in self.deployments.iter() {
            let (key, bytes) = item?;
            out.push(from_json(
                DEPLOYMENTS,
                &String::from_utf8_lossy(&key),
                &bytes,
            ));
        }
        Ok(out)
    }

    /// Adds or replaces a job's record, durably.
    pub fn put_job<J: Serialize>(&self, id: &str, job: &J) -> Result<()> {
        self.jobs.insert(id.as_bytes(), to_json(job).as_slice())?;
        self.db.flush()?;
        Ok(())
    }

    /// Forgets a job's record, durably.
    pub fn remove_job(&self, id: &str) -> Result<()> {
        self.jobs.remove(id.as_bytes())?;
        self.db.flush()?;
        Ok(())
    }

    /// Every job record in id order (corrupt ones as errors next to the good ones).
    pub fn jobs<J: for<'de> Deserialize<'de>>(&self) -> Result<Vec<Result<J>>> {
        let mut out = Vec::new();
        for item in self.jobs.iter() {
            let (key, bytes) = item?;
            out.push(from_json(JOBS, &String::from_utf8_lossy(&key), &bytes));
        }
        Ok(out)
    }
}

impl Store {
    /// Adds or replaces an API key or admin token record (by id), durably.
    pub fn put_key<K: Serialize>(&self, id: &str, key: &K) -> Result<()> {
        self.keys.insert(id.as_bytes(), to_json(key).as_slice())?;
        self.db.flush()?;
        Ok(())
    }

    /// Every key record (corrupt ones as errors next to the good ones).
    pub fn keys<K: for<'de> Deserialize<'de>>(&self) -> Result<Vec<Result<K>>> {
        let mut out = Vec::new();
        for item in self.keys.iter() {
            let (key, bytes) = item?;
            out.push(from_json(KEYS, &String::from_utf8_lossy(&key), &bytes));
        }
        Ok(out)
    }

    /// Adds `delta` to each usage row (a function of the row's old value), then flushes
    /// once: the whole batch is on disk when this returns.
    pub fn add_usage<R>(
        &self,
        rows: &[(Vec<u8>, R)],
        add: impl Fn(Option<R>, &R) -> R,
    ) -> Result<()>
    where
        R: Serialize + for<'de> Deserialize<'de>,
    {
        for (k, delta) in rows {
            let old: Option<R> = self
                .usage
                .get(k)?
                .and_then(|b| serde_json::from_slice(&b).ok());
            let new = add(old, delta);
            self.usage.insert(k.as_slice(), to_json(&new).as_slice())?;
        }
        self.db.flush()?;
        Ok(())
    }

    /// Usage rows with keys in `from..=to` (byte order), corrupt rows skipped.
    pub fn usage_range<R: for<'de> Deserialize<'de>>(
        &self,
        from: &[u8],
        to: &[u8],
    ) -> Result<Vec<(Vec<u8>, R)>> {
        let mut out = Vec::new();
        for item in self.usage.range(from.to_vec()..=to.to_vec()) {
            let (k, v) = item?;
            if let Ok(r) = serde_json::from_slice(&v) {
                out.push((k.to_vec(), r));
            }
        }
        Ok(out)
    }
}

impl Store {
    /// Adds or replaces an alert record under `key`, durably.
    pub fn put_alert<T: Serialize>(&self, key: &str, alert: &T) -> Result<()> {
        self.alerts
            .insert(key.as_bytes(), to_json(alert).as_slice())?;
        self.db.flush()?;
        Ok(())
    }

    /// Stores one minute's aggregate of GPU `gpu` (starting at `minute_ms`) and deletes
    /// that GPU's minutes older than `keep_from_ms`.
    pub fn put_minute<T: Serialize>(
        &self,
        gpu: u32,
        minute_ms: u64,
        value: &T,
        keep_from_ms: u64,
    ) -> Result<()> {
        self.history
            .insert(minute_key(gpu, minute_ms), to_json(value).as_slice())?;
        let old: Vec<sled::IVec> = self
            .history
            .range(minute_key(gpu, 0)..minute_key(gpu, keep_from_ms))
            .keys()
            .collect::<std::result::Result<_, _>>()?;
        for k in old {
            self.history.remove(k)?;
        }
        self.db.flush()?;
        Ok(())
    }

    /// GPU `gpu`'s stored minutes from `from_ms` to `to_ms`, in time order.
    pub fn minutes<T: for<'de> Deserialize<'de>>(
        &self,
        gpu: u32,
        from_ms: u64,
        to_ms: u64,
    ) -> Result<Vec<T>> {
        let mut out = Vec::new();
        for item in self
            .history
            .range(minute_key(gpu, from_ms)..=minute_key(gpu, to_ms))
        {
            let (_, bytes) = item?;
            if let Ok(v) = serde_json::from_slice(&bytes) {
                out.push(v);
            }
        }
        Ok(out)
    }

    /// Bytes the history tree holds on disk (approximate: keys and values).
    pub fn history_bytes(&self) -> u64 {
        self.history
            .iter()
            .filter_map(std::result::Result::ok)
            .map(|(k, v)| (k.len() + v.len()) as u64)
            .sum()
    }

    /// Every alert record in key order (corrupt ones as errors next to the good ones).
    pub fn alerts<T: for<'de> Deserialize<'de>>(&self) -> Result<Vec<Result<T>>> {
        let mut out = Vec::new();
        for item in self.alerts.iter() {
            let (key, bytes) = item?;
            out.push(from_json(ALERTS, &String::from_utf8_lossy(&key), &bytes));
        }
        Ok(out)
    }
}

/// Big-endian (gpu, minute): keys sort by GPU, then time.
fn minute_key(gpu: u32, minute_ms: u64) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[..4].copy_from_slice(&gpu.to_be_bytes());
    k[4..].copy_from_slice(&minute_ms.to_be_bytes());
    k
}

fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    // Serialising these plain structs (strings, numbers, paths as UTF-8 where possible)
    // cannot fail; a failure would be a bug in a derive, worth an empty record over a panic.
    serde_json::to_vec(value).unwrap_or_default()
}

fn from_json<T: for<'de> Deserialize<'de>>(
    tree: &'static str,
    key: &str,
    bytes: &[u8],
) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        tree,
        key: key.to_string(),
        problem: e.to_string(),
    })
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `bytes` random bytes as hex, from the OS.
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    if getrandom::fill(&mut buf).is_err() {
        // No OS randomness: fall back to the clock and std's per-process random hash keys.
        use std::hash::{BuildHasher, Hasher};
        for (i, chunk) in buf.chunks_mut(8).enumerate() {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u128(
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos()),
            );
            h.write_usize(i);
            let v = h.finish().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
    hex(&buf)
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(2 * bytes.len()), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minutes_are_kept_per_gpu_in_order_and_old_ones_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for m in 0..10u64 {
            // Keep the last 5 minutes.
            let keep_from = (m * 60_000).saturating_sub(4 * 60_000);
            store.put_minute(0, m * 60_000, &m, keep_from).unwrap();
            store
                .put_minute(1, m * 60_000, &(100 + m), keep_from)
                .unwrap();
        }
        let g0: Vec<u64> = store.minutes(0, 0, u64::MAX).unwrap();
        assert_eq!(g0, vec![5, 6, 7, 8, 9]);
        let g1: Vec<u64> = store.minutes(1, 6 * 60_000, 8 * 60_000).unwrap();
        assert_eq!(g1, vec![106, 107, 108]);
        let bytes = store.history_bytes();
        assert!(bytes > 0 && bytes < 10 * 30, "{bytes}");
    }

    fn record(id: &str) -> ModelRecord {
        ModelRecord {
            schema: SCHEMA,
            id: id.into(),
            path: PathBuf::from("/m.gguf"),
            format: "gguf".into(),
            digest: "sha256:00".into(),
            size_bytes: 1,
            modified_unix_ns: 2,
            architecture: "llama".into(),
            name: "M".into(),
            parameters: 3,
            context_length: 4,
            added_at: 5,
            in_store: false,
            license: None,
        }
    }

    #[test]
    fn models_and_settings_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            assert_eq!(store.record_start().unwrap().starts, 1);
            store.put_model(&record("b")).unwrap();
            store.put_model(&record("a")).unwrap();
            store.put_model(&record("c")).unwrap();
            assert!(store.remove_model("c").unwrap());
            assert!(!store.remove_model("c").unwrap());
        }
        let store = Store::open(dir.path()).unwrap();
        let s = store.record_start().unwrap();
        assert_eq!(s.starts, 2);
        assert_eq!(s.instance_id.len(), 32);
        let ids: Vec<String> = store
            .models()
            .unwrap()
            .into_iter()
            .map(|r| r.unwrap().id)
            .collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(store.get_model("a").unwrap(), Some(record("a")));
    }

    #[test]
    fn an_import_commits_once_and_deployments_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            assert!(store.commit_import(&record("m"), "job1", &"ready").unwrap());
            // The id is taken: nothing of the second commit lands, the job included.
            assert!(!store.commit_import(&record("m"), "job2", &"ready").unwrap());
            store
                .put_deployment(&DeploymentRecord {
                    schema: SCHEMA,
                    name: "chat".into(),
                    aliases: vec!["gpt-4o".into()],
                    model: "m".into(),
                    ranks: None,
                    context_length: Some(2048),
                    max_sequences: None,
                    prompt_lookup: None,
                    generation: 1,
                    created_at: 1,
                    updated_at: 1,
                })
                .unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let jobs: Vec<String> = store
            .jobs::<String>()
            .unwrap()
            .into_iter()
            .map(|j| j.unwrap())
            .collect();
        assert_eq!(jobs, ["ready"]);
        let d = store.deployments().unwrap();
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].as_ref().unwrap().context_length, Some(2048));
        assert!(store.remove_deployment("chat").unwrap());
        assert!(store.deployments().unwrap().is_empty());
    }

    #[test]
    fn corrupt_record_is_reported_by_id() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.put_model(&record("good")).unwrap();
        store.models.insert("bad", b"{not json".as_slice()).unwrap();
        let all = store.models().unwrap();
        assert_eq!(all.len(), 2);
        let err = all[0].as_ref().unwrap_err().to_string();
        assert!(err.contains("`bad`"), "{err}");
        assert_eq!(all[1].as_ref().unwrap().id, "good");
    }
}
