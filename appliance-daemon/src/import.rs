//! Bringing a model onto the box: a GGUF file, a Hugging Face checkpoint folder or a `.tar`
//! bundle of either, copied into the model store (`DATA_DIR/models/store/ID`) or used where
//! it lies.
//!
//! Every file is hashed (SHA-256) while it is copied; a manifest (`oasis-model.json`) that
//! came with the model is checked against those digests; the model is then opened the way
//! the engine will open it (`engine::Model::load`: the format's header, every tensor's
//! shape and byte range against the file, the config against the tensors). Only a model
//! that passed all of that is moved, with one rename, from its partial folder
//! (`store/.partial-JOB`) to its place, and gets a manifest of its own. The caller then
//! commits the record to the catalog; a crash at any point before that leaves only a
//! partial or an unreferenced folder, which [`clean_store`] removes at the next start.
//!
//! No HTTP here: the jobs module runs imports on their own threads and the server reports
//! them.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::store::{ModelRecord, SCHEMA, hex, unix_now};
pub use oasis_api::JobPhase as Phase;

/// The manifest's file name, next to the model's files.
pub const MANIFEST: &str = "oasis-model.json";
/// The catalog format of an embedding model (a sentence-transformers folder).
pub const EMBEDDING_FORMAT: &str = "sentence-transformers";
/// The manifest's schema tag.
pub const MANIFEST_SCHEMA: &str = "oasis.model/v1";

/// `oasis-model.json`: what a model is and the files it is made of.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub schema: String,
    pub name: String,
    /// `gguf` or `safetensors`.
    pub format: String,
    pub architecture: String,
    #[serde(default)]
    pub license: Option<String>,
    #[serde(default)]
    pub parameters: Option<u64>,
    pub files: Vec<ManifestFile>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestFile {
    /// Relative to the model's folder, `/`-separated.
    pub path: String,
    pub size_bytes: u64,
    /// Lower-case hex SHA-256.
    pub sha256: String,
}

/// Shared between an import's thread and whoever watches it.
#[derive(Debug)]
pub struct Progress {
    phase: AtomicU8,
    /// Bytes read (copied or hashed) and to read in the current phase.
    pub done: AtomicU64,
    pub total: AtomicU64,
    cancel: AtomicBool,
    phase_started: Mutex<Instant>,
    /// When bytes last moved (milliseconds since `epoch`): a job whose reads stopped
    /// returning is stalled, and stops holding up the jobs queued behind it.
    last_tick_ms: AtomicU64,
    epoch: Instant,
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            phase: AtomicU8::new(Phase::Queued as u8),
            done: AtomicU64::new(0),
            total: AtomicU64::new(0),
            cancel: AtomicBool::new(false),
            phase_started: Mutex::new(Instant::now()),
            last_tick_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }
}

impl Progress {
    pub fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::Acquire))
    }

    pub fn set_phase(&self, phase: Phase) {
        if let Ok(mut t) = self.phase_started.lock() {
            *t = Instant::now();
        }
        self.phase.store(phase as u8, Ordering::Release);
    }

    /// Enters `phase`, which reads `files` from the start.
    fn start(&self, phase: Phase, files: &[PathBuf]) {
        let total = files
            .iter()
            .map(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
            .sum();
        self.total.store(total, Ordering::Relaxed);
        self.done.store(0, Ordering::Relaxed);
        self.set_phase(phase);
        self.tick();
    }

    /// Counts `n` bytes read (a file that grows while it is read counts what was read).
    fn advance(&self, n: u64) {
        let done = self.done.fetch_add(n, Ordering::Relaxed) + n;
        self.total.fetch_max(done, Ordering::Relaxed);
        self.tick();
    }

    /// Notes that the job is making progress now.
    pub fn tick(&self) {
        self.last_tick_ms
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Time since the job last made progress.
    pub fn idle(&self) -> Duration {
        let last = self.last_tick_ms.load(Ordering::Relaxed);
        Duration::from_millis((self.epoch.elapsed().as_millis() as u64).saturating_sub(last))
    }

    /// Asks the import to stop at its next read.
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Release);
    }

    pub fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Acquire)
    }

    /// Time in the current phase.
    pub fn phase_elapsed(&self) -> Duration {
        self.phase_started
            .lock()
            .map_or(Duration::ZERO, |t| t.elapsed())
    }

    /// Bytes per second over the current phase.
    pub fn rate(&self) -> f64 {
        let secs = self.phase_elapsed().as_secs_f64();
        if secs <= 0.0 {
            return 0.0;
        }
        self.done.load(Ordering::Relaxed) as f64 / secs
    }
}

/// The error an import stopped with because it was asked to.
#[derive(Debug, thiserror::Error)]
#[error("cancelled")]
pub struct Cancelled;

/// What to import.
#[derive(Debug, Clone)]
pub struct ImportSpec {
    /// A `.gguf` file, a checkpoint folder, or a `.tar` bundle (absolute).
    pub source: PathBuf,
    /// The catalog id to give it.
    pub id: String,
    /// Reference the files where they lie instead of copying them.
    pub in_place: bool,
    /// The source is an upload inside the store: move it instead of copying it.
    pub consume: bool,
}

/// The model store's limits and paths.
#[derive(Debug, Clone)]
pub struct StoreDir {
    /// `DATA_DIR/models/store`.
    pub root: PathBuf,
    /// Bytes per second an import may read (0: no limit), so a copy from a USB disk does not
    /// starve the models being served of I/O.
    pub max_bytes_per_s: u64,
}

/// A catalog id: letters, digits, `.`, `_` and `-`, starting with a letter or digit, at
/// most 128 characters (it names a folder and a URL path segment).
pub fn check_id(id: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if id.is_empty() || id.len() > 128 {
        return Err(format!(
            "a model name has 1 to 128 characters, got {}",
            id.len()
        ));
    }
    if !id.starts_with(|c: char| c.is_ascii_alphanumeric()) || !id.chars().all(ok_char) {
        return Err(format!(
            "`{id}` is not a valid model name: use letters, digits, `.`, `_` and `-`, starting with a letter or digit"
        ));
    }
    Ok(())
}

/// A catalog id derived from a source path: the file stem or folder name with anything
/// outside the allowed characters replaced by `-`.
pub fn id_from_path(path: &Path) -> String {
    let stem = if path.is_dir() {
        path.file_name()
    } else {
        path.file_stem()
    };
    let raw = stem.map_or_else(|| "model".to_string(), |s| s.to_string_lossy().into_owned());
    let mut id: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(120)
        .collect();
    if !id.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        id.insert(0, 'm');
    }
    id
}

/// What the source is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Gguf,
    Checkpoint,
    Tar,
}

fn kind_of(source: &Path) -> Result<Kind> {
    let meta =
        std::fs::metadata(source).with_context(|| format!("cannot read {}", source.display()))?;
    if meta.is_dir() {
        if source.join("config.json").is_file() || source.join("model.safetensors").is_file() {
            return Ok(Kind::Checkpoint);
        }
        bail!(
            "{} is a folder without a config.json: import a Hugging Face checkpoint folder, a .gguf file or a .tar bundle",
            source.display()
        );
    }
    let mut head = [0u8; 512];
    let n = read_up_to(source, &mut head)?;
    if n >= 4 && &head[..4] == b"GGUF" {
        return Ok(Kind::Gguf);
    }
    if n >= 262 && &head[257..262] == b"ustar" {
        return Ok(Kind::Tar);
    }
    if source.extension().is_some_and(|e| e == "gguf") {
        // A .gguf that does not start with the magic: let the reader say what is wrong.
        return Ok(Kind::Gguf);
    }
    bail!(
        "{} is neither a GGUF file nor a .tar bundle (nor a checkpoint folder)",
        source.display()
    )
}

/// What a path that is not a regular file or a folder is, for the error.
fn kind_name(t: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt as _;
    if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_char_device() {
        "a character device"
    } else {
        "not a regular file"
    }
}

/// Checks, before a job is queued, that `source` is a regular file or a folder (a FIFO,
/// a socket or a device would block the import or never end).
pub fn check_source(source: &Path) -> Result<(), String> {
    let meta =
        std::fs::metadata(source).map_err(|e| format!("cannot read {}: {e}", source.display()))?;
    if meta.is_file() || meta.is_dir() {
        return Ok(());
    }
    Err(format!(
        "{} is {}: import a regular file (a .gguf or a .tar bundle) or a checkpoint folder",
        source.display(),
        kind_name(meta.file_type())
    ))
}

/// Opens `path` for reading only if it is a regular file. The open itself does not wait
/// (a FIFO swapped in after [`check_source`] would block an ordinary open for ever).
fn open_regular(path: &Path) -> Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    let t = f
        .metadata()
        .with_context(|| format!("cannot read {}", path.display()))?
        .file_type();
    if !t.is_file() {
        bail!(
            "{} is {}: only regular files are imported",
            path.display(),
            kind_name(t)
        );
    }
    Ok(f)
}

/// Bytes free to this user on the volume holding `dir` (or its nearest existing parent).
pub fn free_bytes(dir: &Path) -> Option<u64> {
    let mut d = Some(dir);
    while let Some(p) = d {
        if let Ok(st) = rustix::fs::statvfs(p) {
            return Some(st.f_bavail.saturating_mul(st.f_frsize));
        }
        d = p.parent();
    }
    None
}

/// Room kept free on the store's volume beyond what a copy needs (the state database and
/// the logs share it).
pub const SPACE_HEADROOM_BYTES: u64 = 64 << 20;

/// Bytes a copy of `source` will take in the store: every file in full (a sparse source is
/// written out whole); a bundle's files take about the bundle's size.
pub fn space_needed(source: &Path) -> Result<u64> {
    let meta =
        std::fs::metadata(source).with_context(|| format!("cannot read {}", source.display()))?;
    if !meta.is_dir() {
        return Ok(meta.len());
    }
    let mut total = 0u64;
    for f in model_files(source)? {
        total += std::fs::metadata(&f).map_or(0, |m| m.len());
    }
    Ok(total)
}

/// An error naming both figures when `need` bytes (plus the headroom) do not fit on the
/// volume holding `dir`.
pub fn check_space(dir: &Path, need: u64) -> Result<(), String> {
    let Some(free) = free_bytes(dir) else {
        return Ok(());
    };
    if need.saturating_add(SPACE_HEADROOM_BYTES) > free {
        return Err(format!(
            "the import needs {need} bytes (plus {SPACE_HEADROOM_BYTES} kept free) but the volume holding {} has {free} bytes free",
            dir.display()
        ));
    }
    Ok(())
}

fn read_up_to(path: &Path, buf: &mut [u8]) -> Result<usize> {
    let mut f = open_regular(path)?;
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }
    Ok(n)
}

/// Files a folder's model is made of: every regular, non-hidden file at its top level.
fn folder_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        if entry.file_type()?.is_file() {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}

/// Files a checkpoint folder's model is made of: [`folder_files`] at its top level and, for
/// a sentence-transformers embedding model, those of each module folder its `modules.json`
/// names (the pooling config lives in `1_Pooling/`). Other subfolders (a Llama repository's
/// `original/` weights, say) are not the model and are left out.
fn model_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for folder in model_folders(dir) {
        files.extend(folder_files(&folder)?);
    }
    files.sort();
    Ok(files)
}

/// `dir` and the module folders in it (real folders, not links) that its model is made of.
fn model_folders(dir: &Path) -> Vec<PathBuf> {
    std::iter::once(dir.to_path_buf())
        .chain(
            module_folders(dir)
                .into_iter()
                .map(|m| dir.join(m))
                .filter(|sub| sub.is_dir() && !sub.is_symlink()),
        )
        .collect()
}

/// The module folders an embedding model's `modules.json` names (each a plain relative
/// path inside the model; anything else is left out here and refused when the model loads).
fn module_folders(dir: &Path) -> Vec<PathBuf> {
    if !engine::embed::is_embedding_model(dir) {
        return Vec::new();
    }
    let Ok(bytes) = std::fs::read(dir.join("modules.json")) else {
        return Vec::new();
    };
    let Ok(serde_json::Value::Array(modules)) = serde_json::from_slice(&bytes) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = modules
        .iter()
        .filter_map(|m| m["path"].as_str())
        .map(PathBuf::from)
        .filter(|p| {
            !p.as_os_str().is_empty() && p.components().all(|c| matches!(c, Component::Normal(_)))
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// `file`'s path relative to `base` with `/` between its parts, or its own name when it
/// does not lie under `base`.
fn rel_name(base: &Path, file: &Path) -> Result<String> {
    match file.strip_prefix(base) {
        Ok(rel) if !rel.as_os_str().is_empty() => Ok(rel_string(rel)),
        _ => file_name(file),
    }
}

/// Size and digest of each file, by path relative to the model's folder.
type Digests = BTreeMap<String, (u64, String)>;

/// Reads through `inner`, counting into the progress, honouring cancellation and the rate
/// limit, and (when copying into the store) stopping when the store's volume fills up.
struct Metered<'a, R> {
    inner: R,
    progress: &'a Progress,
    limit: u64,
    started: Instant,
    read: u64,
    /// The store's folder, whose volume must keep room for what is left to copy.
    space: Option<&'a Path>,
    /// Bytes read since the free space was last checked.
    since_check: u64,
}

/// Bytes copied between two checks of the free space.
const SPACE_CHECK_BYTES: u64 = 64 << 20;

impl<'a, R: Read> Metered<'a, R> {
    fn new(inner: R, progress: &'a Progress, limit: u64) -> Self {
        Metered {
            inner,
            progress,
            limit,
            started: Instant::now(),
            read: 0,
            space: None,
            since_check: 0,
        }
    }

    /// Also checks, every 64 MiB, that the volume holding `dir` keeps room for the rest.
    fn filling(mut self, dir: &'a Path) -> Self {
        self.space = Some(dir);
        self
    }
}

impl<R: Read> Read for Metered<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.progress.cancelled() {
            return Err(io::Error::other(Cancelled));
        }
        // Pieces of at most 1 MiB so cancellation and the rate limit act promptly.
        let cap = buf.len().min(1 << 20);
        let n = self.inner.read(&mut buf[..cap])?;
        self.read += n as u64;
        self.progress.advance(n as u64);
        if let Some(dir) = self.space {
            self.since_check += n as u64;
            if self.since_check >= SPACE_CHECK_BYTES {
                self.since_check = 0;
                let left = self
                    .progress
                    .total
                    .load(Ordering::Relaxed)
                    .saturating_sub(self.progress.done.load(Ordering::Relaxed));
                if let Err(e) = check_space(dir, left) {
                    return Err(io::Error::new(
                        io::ErrorKind::StorageFull,
                        format!("the store's volume is filling up while copying: {e}"),
                    ));
                }
            }
        }
        if self.limit > 0 {
            let due = Duration::from_secs_f64(self.read as f64 / self.limit as f64);
            let elapsed = self.started.elapsed();
            if due > elapsed {
                std::thread::sleep(due - elapsed);
            }
        }
        Ok(n)
    }
}

/// Writes through to a file (or nowhere) while hashing.
struct Hashing<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Copies `reader` into `dest` (or only hashes it when `dest` is `None`), durably.
fn copy_hashed(reader: &mut dyn Read, dest: Option<&Path>) -> Result<(u64, String)> {
    let (bytes, hasher) = match dest {
        Some(path) => {
            let file = std::fs::File::create(path)
                .with_context(|| format!("cannot create {}", path.display()))?;
            let mut w = Hashing {
                inner: io::BufWriter::with_capacity(1 << 20, file),
                hasher: Sha256::new(),
                bytes: 0,
            };
            io::copy(reader, &mut w).map_err(io_error)?;
            let file = w
                .inner
                .into_inner()
                .map_err(|e| anyhow!("cannot write {}: {}", path.display(), e.error()))?;
            file.sync_all()
                .with_context(|| format!("cannot write {}", path.display()))?;
            (w.bytes, w.hasher)
        }
        None => {
            let mut w = Hashing {
                inner: io::sink(),
                hasher: Sha256::new(),
                bytes: 0,
            };
            io::copy(reader, &mut w).map_err(io_error)?;
            (w.bytes, w.hasher)
        }
    };
    Ok((bytes, hex(&hasher.finalize())))
}

/// An I/O error, or [`Cancelled`] when that is what stopped the read.
fn io_error(e: io::Error) -> anyhow::Error {
    if e.get_ref().is_some_and(|inner| inner.is::<Cancelled>()) {
        return anyhow::Error::new(Cancelled);
    }
    anyhow::Error::new(e)
}

/// Runs one import to the point of commit: returns the catalog record, its files in place
/// (in the store, or where they lie for `in_place`). On error nothing of it is left in the
/// store.
pub fn import(
    spec: &ImportSpec,
    job: &str,
    store: &StoreDir,
    progress: &Progress,
) -> Result<ModelRecord> {
    let partial = store.root.join(format!(".partial-{job}"));
    let out = stage(spec, &partial, store, progress);
    if out.is_err() {
        remove_quietly(&partial);
    }
    discard_upload(spec);
    out
}

/// Removes an upload's folder once its import has ended (or will never run).
pub fn discard_upload(spec: &ImportSpec) {
    if spec.consume
        && let Some(upload) = spec.source.parent()
    {
        remove_quietly(upload);
    }
}

fn stage(
    spec: &ImportSpec,
    partial: &Path,
    store: &StoreDir,
    progress: &Progress,
) -> Result<ModelRecord> {
    let kind = kind_of(&spec.source)?;
    if spec.in_place {
        if kind == Kind::Tar {
            bail!("a .tar bundle cannot be used in place: import it without --in-place");
        }
        return in_place(spec, kind, progress);
    }
    std::fs::create_dir_all(&store.root)
        .with_context(|| format!("cannot create the model store {}", store.root.display()))?;
    let final_dir = store.root.join(&spec.id);
    if final_dir.exists() {
        bail!("{} already exists in the model store", final_dir.display());
    }
    if !spec.consume {
        check_space(&store.root, space_needed(&spec.source)?).map_err(|e| anyhow!(e))?;
    }
    remove_quietly(partial);
    std::fs::create_dir(partial).with_context(|| format!("cannot create {}", partial.display()))?;
    let sources: Vec<PathBuf> = match kind {
        Kind::Gguf => {
            let mut v = vec![spec.source.clone()];
            v.extend(sibling_manifest(&spec.source));
            v
        }
        Kind::Checkpoint => model_files(&spec.source)?,
        Kind::Tar => vec![spec.source.clone()],
    };
    progress.start(Phase::Copying, &sources);
    let mut digests = Digests::new();
    if kind == Kind::Tar {
        untar(&spec.source, partial, store, progress, &mut digests)?;
    } else {
        for src in &sources {
            let name = rel_name(&spec.source, src)?;
            let dest = partial.join(&name);
            if let Some(parent) = dest.parent() {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("cannot create {}", parent.display()))?;
            }
            let moved = spec.consume && std::fs::rename(src, &dest).is_ok();
            let digest = if moved {
                // An upload: hashed again here, reading what was written (a rename is not a copy).
                let f = open_regular(&dest)?;
                copy_hashed(&mut Metered::new(f, progress, 0), None)
            } else {
                let f = open_regular(src)?;
                copy_hashed(
                    &mut Metered::new(f, progress, store.max_bytes_per_s).filling(&store.root),
                    Some(&dest),
                )
            }
            .with_context(|| format!("copying {}", src.display()))?;
            digests.insert(name, digest);
        }
    }
    check_cancel(progress)?;
    // A bundle may hold the model in one top-level folder.
    let root = model_root(partial)?;
    let digests = rebase(digests, partial, &root);
    progress.set_phase(Phase::Verifying);
    let manifest = verify(&root, &digests, progress)?;
    sync_dir(&root)?;
    std::fs::rename(&root, &final_dir)
        .with_context(|| format!("cannot move the model into {}", final_dir.display()))?;
    sync_dir(&store.root)?;
    if root != partial {
        remove_quietly(partial);
    }
    let out = finish_at(&final_dir, &spec.id, manifest, &digests, true, None);
    if out.is_err() {
        remove_quietly(&final_dir);
    }
    out
}

/// An import that references the files where they lie: hashes and verifies them.
fn in_place(spec: &ImportSpec, kind: Kind, progress: &Progress) -> Result<ModelRecord> {
    let (root, files) = match kind {
        Kind::Checkpoint => (spec.source.clone(), model_files(&spec.source)?),
        _ => {
            let dir = spec
                .source
                .parent()
                .ok_or_else(|| anyhow!("{} has no folder", spec.source.display()))?
                .to_path_buf();
            let mut files = vec![spec.source.clone()];
            files.extend(sibling_manifest(&spec.source));
            (dir, files)
        }
    };
    progress.start(Phase::Verifying, &files);
    let mut digests = Digests::new();
    for f in &files {
        let file = open_regular(f)?;
        let d = copy_hashed(&mut Metered::new(file, progress, 0), None)
            .with_context(|| format!("hashing {}", f.display()))?;
        digests.insert(rel_name(&root, f)?, d);
    }
    let manifest = verify_with(
        &root,
        &digests,
        (kind == Kind::Gguf).then_some(spec.source.as_path()),
    )?;
    let mut record = finish_at(
        &root,
        &spec.id,
        manifest,
        &digests,
        false,
        match kind {
            Kind::Checkpoint => None,
            _ => Some(spec.source.clone()),
        },
    )?;
    record.in_store = false;
    Ok(record)
}

/// The manifest next to a GGUF file, when it describes that file.
fn sibling_manifest(gguf: &Path) -> Option<PathBuf> {
    let path = gguf.parent()?.join(MANIFEST);
    let m: Manifest = serde_json::from_slice(&std::fs::read(&path).ok()?).ok()?;
    let name = gguf.file_name()?.to_string_lossy().into_owned();
    m.files.iter().any(|f| f.path == name).then_some(path)
}

fn check_cancel(progress: &Progress) -> Result<()> {
    if progress.cancelled() {
        return Err(anyhow::Error::new(Cancelled));
    }
    Ok(())
}

fn file_name(path: &Path) -> Result<String> {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| anyhow!("{} has no file name", path.display()))
}

/// Extracts a bundle's plain files into `dest`, hashing each.
fn untar(
    tar_path: &Path,
    dest: &Path,
    store: &StoreDir,
    progress: &Progress,
    digests: &mut Digests,
) -> Result<()> {
    let file = open_regular(tar_path)?;
    let mut archive =
        tar::Archive::new(Metered::new(file, progress, store.max_bytes_per_s).filling(&store.root));
    let entries = archive
        .entries()
        .map_err(io_error)
        .with_context(|| format!("{} is not a readable tar bundle", tar_path.display()))?;
    for entry in entries {
        let mut entry = entry
            .map_err(io_error)
            .with_context(|| format!("{}: a damaged tar entry", tar_path.display()))?;
        let path = entry.path().map_err(io_error)?.into_owned();
        let shown = path.display().to_string();
        let rel = safe_relative(&path)
            .ok_or_else(|| anyhow!("bundle entry `{shown}` leaves the bundle's folder"))?;
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            continue;
        }
        if rel.as_os_str().is_empty() {
            bail!("bundle entry `{shown}` has no file name");
        }
        if !kind.is_file() {
            bail!("bundle entry `{shown}` is not a plain file (links and devices are refused)");
        }
        if rel
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        {
            continue;
        }
        let target = dest.join(&rel);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let digest = copy_hashed(&mut entry, Some(&target))
            .with_context(|| format!("extracting `{shown}`"))?;
        digests.insert(rel_string(&rel), digest);
    }
    Ok(())
}

/// `path` if it only descends (no root, no `..`), without `.` parts.
fn safe_relative(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            _ => return None,
        }
    }
    Some(out)
}

fn rel_string(p: &Path) -> String {
    p.components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

/// The folder holding the model: `dir` itself, or its only subfolder when `dir` holds
/// nothing else.
fn model_root(dir: &Path) -> Result<PathBuf> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    if entries.len() == 1 && entries[0].is_dir() {
        return Ok(entries.remove(0));
    }
    if entries.is_empty() {
        bail!("the bundle holds no files");
    }
    Ok(dir.to_path_buf())
}

/// Digests keyed relative to `root` instead of `from` (files outside `root` dropped).
fn rebase(digests: Digests, from: &Path, root: &Path) -> Digests {
    let Ok(prefix) = root.strip_prefix(from) else {
        return digests;
    };
    if prefix.as_os_str().is_empty() {
        return digests;
    }
    let prefix = format!("{}/", rel_string(prefix));
    digests
        .into_iter()
        .filter_map(|(k, v)| k.strip_prefix(&prefix).map(|k| (k.to_string(), v)))
        .collect()
}

/// Checks the copied model: its manifest if it came with one, then the files as the
/// engine reads them. Returns the manifest that came with it.
fn verify(root: &Path, digests: &Digests, progress: &Progress) -> Result<Option<Manifest>> {
    check_cancel(progress)?;
    verify_with(root, digests, None)
}

fn verify_with(root: &Path, digests: &Digests, gguf: Option<&Path>) -> Result<Option<Manifest>> {
    // The manifest that came with the model (copied and hashed with its files).
    let manifest = if digests.contains_key(MANIFEST) {
        let bytes = std::fs::read(root.join(MANIFEST))
            .with_context(|| format!("cannot read {MANIFEST}"))?;
        let m: Manifest = serde_json::from_slice(&bytes)
            .map_err(|e| anyhow!("{MANIFEST} is not a valid manifest: {e}"))?;
        check_manifest(&m, digests)?;
        Some(m)
    } else {
        None
    };
    let model_path = match gguf {
        Some(p) => p.to_path_buf(),
        None => model_path(root)?,
    };
    if model_path.is_dir() && engine::embed::is_embedding_model(&model_path) {
        engine::embed::Embedder::open(&model_path, 1)
            .map_err(|e| anyhow!("the embedding model does not verify: {e}"))?;
    } else {
        engine::Model::load(&model_path).map_err(|e| anyhow!("the model does not verify: {e}"))?;
    }
    Ok(manifest)
}

/// Every file the manifest lists is there with its size and digest.
fn check_manifest(m: &Manifest, digests: &Digests) -> Result<()> {
    if m.schema != MANIFEST_SCHEMA {
        bail!(
            "{MANIFEST}: schema `{}` is not `{MANIFEST_SCHEMA}`",
            m.schema
        );
    }
    if m.files.is_empty() {
        bail!("{MANIFEST} lists no files");
    }
    for f in &m.files {
        let Some((size, digest)) = digests.get(&f.path) else {
            bail!("{MANIFEST} lists `{}`, which is not in the model", f.path);
        };
        if *size != f.size_bytes {
            bail!(
                "`{}` has {size} bytes, {MANIFEST} says {}",
                f.path,
                f.size_bytes
            );
        }
        if !digest.eq_ignore_ascii_case(f.sha256.trim_start_matches("sha256:")) {
            bail!(
                "`{}` has SHA-256 {digest}, {MANIFEST} says {}: the file is damaged or not the one the manifest describes",
                f.path,
                f.sha256
            );
        }
    }
    Ok(())
}

/// The file or folder the engine opens: the folder for a checkpoint, else its one `.gguf`.
fn model_path(root: &Path) -> Result<PathBuf> {
    if root.join("config.json").is_file() || root.join("model.safetensors").is_file() {
        return Ok(root.to_path_buf());
    }
    let ggufs: Vec<PathBuf> = folder_files(root)?
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "gguf"))
        .collect();
    match ggufs.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!("the bundle holds neither a .gguf file nor a checkpoint (config.json)"),
        _ => bail!(
            "the bundle holds {} .gguf files; bundle one model at a time",
            ggufs.len()
        ),
    }
}

/// The record of a model now in its final folder (or `file` where it lies), and for a
/// model in the store the manifest written there.
fn finish_at(
    dir: &Path,
    id: &str,
    came_with: Option<Manifest>,
    digests: &Digests,
    in_store: bool,
    file: Option<PathBuf>,
) -> Result<ModelRecord> {
    let path = match file {
        Some(f) => f,
        None => model_path(dir)?,
    };
    let known: BTreeMap<PathBuf, String> = digests
        .iter()
        .map(|(k, (_, d))| (dir.join(k), format!("sha256:{d}")))
        .collect();
    let mut record = describe(&path, id.to_string(), None, &known)?;
    record.in_store = in_store;
    record.license = came_with
        .as_ref()
        .and_then(|m| m.license.clone())
        .or(record.license);
    if in_store {
        let model_files: Vec<&String> = digests.keys().filter(|k| k.as_str() != MANIFEST).collect();
        let manifest = Manifest {
            schema: MANIFEST_SCHEMA.into(),
            name: came_with
                .as_ref()
                .map_or_else(|| record.name.clone(), |m| m.name.clone()),
            format: record.format.clone(),
            architecture: record.architecture.clone(),
            license: record.license.clone(),
            parameters: Some(record.parameters),
            files: model_files
                .into_iter()
                .filter_map(|k| {
                    digests.get(k).map(|(size, d)| ManifestFile {
                        path: k.clone(),
                        size_bytes: *size,
                        sha256: d.clone(),
                    })
                })
                .collect(),
        };
        let bytes = serde_json::to_vec_pretty(&manifest)?;
        let tmp = dir.join(format!("{MANIFEST}.tmp"));
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, dir.join(MANIFEST))?;
        sync_dir(dir)?;
    }
    Ok(record)
}

fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot sync {}", dir.display()))
}

fn remove_quietly(path: &Path) {
    let r = if path.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    if let Err(e) = r
        && e.kind() != io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), error = %e, "cannot remove");
    }
}

/// Removes what interrupted imports and uploads left in the store (`.partial-*`,
/// `.upload-*`) and folders no catalog record refers to (an import that crashed between its
/// rename and its commit). Returns the paths removed.
pub fn clean_store(root: &Path, records: &[ModelRecord]) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let referenced = records
            .iter()
            .any(|r| r.in_store && (r.path == path || r.path.starts_with(&path)));
        if !referenced || name.starts_with('.') {
            remove_quietly(&path);
            removed.push(path);
        }
    }
    removed
}

/// Deletes a stored model's folder (its files and manifest).
pub fn remove_stored(root: &Path, record: &ModelRecord) -> Result<()> {
    if !record.in_store {
        return Ok(());
    }
    let dir = root.join(&record.id);
    if !dir.starts_with(root) || dir == root {
        bail!("refusing to delete {}", dir.display());
    }
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot delete {}", dir.display())),
    }
}

/// A catalog record for a model file or checkpoint folder; digests in `known` are used as
/// given, any other file is hashed.
pub fn describe(
    path: &Path,
    id: String,
    added_at: Option<u64>,
    known: &BTreeMap<PathBuf, String>,
) -> Result<ModelRecord> {
    let digest = |p: &Path| -> Result<String> {
        match known.get(p) {
            Some(d) => Ok(d.clone()),
            None => sha256_file(p),
        }
    };
    if path.is_dir() && engine::embed::is_embedding_model(path) {
        return describe_embedding(path, id, added_at, &digest);
    }
    if path.is_dir() {
        return describe_checkpoint(path, id, added_at, &digest);
    }
    let (size_bytes, modified_unix_ns) = stat(path)?;
    let file = engine::gguf::GgufFile::open(path)?;
    let architecture = file
        .get_str("general.architecture")?
        .unwrap_or("unknown")
        .to_string();
    let name = file.get_str("general.name")?.unwrap_or(&id).to_string();
    let license = file
        .get_str("general.license")
        .ok()
        .flatten()
        .map(str::to_string);
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
        digest: digest(path)?,
        size_bytes,
        modified_unix_ns,
        architecture,
        name,
        parameters,
        context_length,
        added_at: added_at.unwrap_or_else(unix_now),
        in_store: false,
        license,
    })
}

/// A Hugging Face checkpoint folder as a catalog record: the digest covers every file the
/// model is made of (name and SHA-256 of each, in name order).
fn describe_checkpoint(
    dir: &Path,
    id: String,
    added_at: Option<u64>,
    digest: &dyn Fn(&Path) -> Result<String>,
) -> Result<ModelRecord> {
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
    Ok(ModelRecord {
        schema: SCHEMA,
        name: id.clone(),
        id,
        path: dir.to_path_buf(),
        format: "safetensors".into(),
        digest: folder_digest(dir, digest)?,
        size_bytes,
        modified_unix_ns,
        architecture: cfg.arch.name().to_string(),
        parameters,
        context_length: cfg.max_position,
        added_at: added_at.unwrap_or_else(unix_now),
        in_store: false,
        license: None,
    })
}

/// One digest over every file a folder's model is made of: the relative path and
/// SHA-256 of each, in path order.
fn folder_digest(dir: &Path, digest: &dyn Fn(&Path) -> Result<String>) -> Result<String> {
    let mut all = Sha256::new();
    for f in checkpoint_files(dir)? {
        let name = rel_name(dir, &f)?;
        all.update(format!("{name}\0{}\n", digest(&f)?).as_bytes());
    }
    Ok(format!("sha256:{}", hex(&all.finalize())))
}

/// A sentence-transformers embedding model's folder as a catalog record (format
/// `sentence-transformers`), from its config and checkpoint header: the weights are loaded
/// by the import's verification and by the deployment that serves it, not here.
fn describe_embedding(
    dir: &Path,
    id: String,
    added_at: Option<u64>,
    digest: &dyn Fn(&Path) -> Result<String>,
) -> Result<ModelRecord> {
    let info = engine::embed::inspect(dir)?;
    let (size_bytes, modified_unix_ns) = stat(dir)?;
    Ok(ModelRecord {
        schema: SCHEMA,
        name: id.clone(),
        id,
        path: dir.to_path_buf(),
        format: EMBEDDING_FORMAT.into(),
        digest: folder_digest(dir, digest)?,
        size_bytes,
        modified_unix_ns,
        architecture: "bert".into(),
        parameters: info.parameters,
        context_length: info.max_tokens,
        added_at: added_at.unwrap_or_else(unix_now),
        in_store: false,
        license: None,
    })
}

/// The files of a checkpoint folder that the digest and the change check cover: JSON
/// files (not our manifest) and safetensors shards, module folders included.
/// (A link to a file counts: a checkpoint used in place may be a Hugging Face cache
/// snapshot, whose files are links to its blobs.)
fn checkpoint_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for folder in model_folders(dir) {
        files.extend(
            std::fs::read_dir(&folder)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.is_file()
                        && p.file_name().is_some_and(|n| n != MANIFEST)
                        && p.extension()
                            .is_some_and(|x| x == "json" || x == "safetensors")
                }),
        );
    }
    files.sort();
    Ok(files)
}

/// Size and modification time of a model: of the file, or summed and latest over a
/// checkpoint folder's files.
pub fn stat(path: &Path) -> Result<(u64, u128)> {
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
    let f = open_regular(path)?;
    let progress = Progress::default();
    let (_, d) = copy_hashed(&mut Metered::new(f, &progress, 0), None)?;
    Ok(format!("sha256:{d}"))
}

fn modified_ns(meta: &std::fs::Metadata) -> u128 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked_and_derived() {
        assert!(check_id("SmolLM2-135M.Q4_1").is_ok());
        assert!(check_id("../etc").is_err());
        assert!(check_id(".hidden").is_err());
        assert!(check_id("a/b").is_err());
        assert!(check_id("").is_err());
        assert!(check_id(&"x".repeat(129)).is_err());
        assert_eq!(
            id_from_path(Path::new("/usb/My Model (v2).gguf")),
            "My-Model--v2-"
        );
        assert_eq!(id_from_path(Path::new("/usb/_x.gguf")), "m_x");
    }

    /// Regression (issue 16, finding 5): a FIFO blocked the import's open for ever.
    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let fifo = dir.path().join("model.gguf");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .is_ok_and(|s| s.success());
        assert!(made, "mkfifo");
        let e = check_source(&fifo).err().unwrap_or_default();
        assert!(e.contains("is a FIFO"), "{e}");
        // Swapped in after the check: the open does not wait for a writer.
        let e = open_regular(&fifo)
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_default();
        assert!(e.contains("only regular files"), "{e}");
        assert!(check_source(Path::new("/dev/null")).is_err());
        assert!(check_source(dir.path()).is_ok());
    }

    /// Regression (issue 16, finding 6): a copy went on while the volume filled up.
    #[test]
    fn a_copy_stops_when_the_volume_cannot_hold_the_rest() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let progress = Progress::default();
        // What is left to copy is more than any volume here has.
        progress.total.store(u64::MAX / 2, Ordering::Relaxed);
        let data = vec![0u8; (SPACE_CHECK_BYTES + (1 << 20)) as usize];
        let mut r = Metered::new(data.as_slice(), &progress, 0).filling(dir.path());
        let e = copy_hashed(&mut r, None)
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_default();
        assert!(e.contains("filling up while copying"), "{e}");
        let free = free_bytes(dir.path()).unwrap_or(0);
        assert!(free > 0);
        assert!(check_space(dir.path(), free).is_err());
        assert!(check_space(dir.path(), 1).is_ok());
    }

    #[test]
    fn bundle_paths_must_stay_inside() {
        assert_eq!(
            safe_relative(Path::new("./a/b.gguf")),
            Some(PathBuf::from("a/b.gguf"))
        );
        assert_eq!(safe_relative(Path::new("./")), Some(PathBuf::new()));
        assert_eq!(safe_relative(Path::new("../x")), None);
        assert_eq!(safe_relative(Path::new("/etc/passwd")), None);
        assert_eq!(safe_relative(Path::new("a/../../x")), None);
    }

    #[test]
    fn a_manifest_must_match_every_file() {
        let mut d = Digests::new();
        d.insert("m.gguf".into(), (3, "ab".into()));
        let mut m = Manifest {
            schema: MANIFEST_SCHEMA.into(),
            name: "m".into(),
            format: "gguf".into(),
            architecture: "llama".into(),
            license: None,
            parameters: None,
            files: vec![ManifestFile {
                path: "m.gguf".into(),
                size_bytes: 3,
                sha256: "sha256:AB".into(),
            }],
        };
        assert!(check_manifest(&m, &d).is_ok());
        m.files[0].sha256 = "cd".into();
        let e = check_manifest(&m, &d).unwrap_err().to_string();
        assert!(e.contains("has SHA-256 ab") && e.contains("says cd"), "{e}");
        m.files[0].sha256 = "ab".into();
        m.files[0].size_bytes = 4;
        assert!(check_manifest(&m, &d).is_err());
        m.files[0].path = "other.gguf".into();
        let e = check_manifest(&m, &d).unwrap_err().to_string();
        assert!(e.contains("not in the model"), "{e}");
    }

    #[test]
    fn the_meter_stops_on_cancel() {
        let progress = Progress::default();
        let data = vec![7u8; 3 << 20];
        progress.cancel();
        let e = copy_hashed(&mut Metered::new(data.as_slice(), &progress, 0), None).unwrap_err();
        assert!(e.is::<Cancelled>(), "{e}");
    }
}
