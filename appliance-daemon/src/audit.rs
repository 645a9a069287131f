//! The audit log: one JSON object per line in `<data dir>/audit.jsonl`, appended and
//! synced to disk before the action is reported done, so a crash never loses an entry for
//! a change that was made.
//!
//! Each line carries `seq`, the previous line's `hash` (`prev`) and its own `hash`: the
//! SHA-256 of `prev` and the line's other fields. Editing, removing or reordering a line
//! breaks the chain at that line, which [`verify`] reports (`oasis audit verify`).
//!
//! A file, not sled, because `oasis profile apply` writes to it while a daemon may hold
//! the sled state open. Writers take an exclusive lock on the file (`flock`) to read the
//! last line and append the next, so the chain holds across processes. The last line is
//! found by reading the file's end as bytes (entries carry client text, so a window may
//! start inside a character): nothing a client sends can stop the chain.
//!
//! The daemon writes through [`AuditLog`], which never lets a failed append pass
//! silently: the entry is kept and written as soon as the log takes entries again, the
//! failure is reported (API, `/metrics`, [`failure_marker`] for `oasis audit verify`), and
//! admin changes are refused meanwhile.

use std::io::{BufRead, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The log's file in a data directory.
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join("audit.jsonl")
}

/// One entry.
#[derive(Debug, Serialize)]
pub struct Entry<'a, T: Serialize> {
    /// Milliseconds since the Unix epoch.
    pub ts_ms: u64,
    /// Who acted: a key (`key-1a2b3c4d (ops team)`), `anonymous (loopback)`,
    /// `oasis profile apply (uid 0)`, `oasis serve (profile_policy = apply)`.
    pub actor: &'a str,
    /// What was done, dotted: `profile.apply`, `key.create`, `model.import`.
    pub action: &'a str,
    pub detail: T,
}

/// The chain's start.
const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

fn line_hash(prev: &str, body: &Value) -> String {
    let mut h = Sha256::new();
    h.update(prev.as_bytes());
    h.update(b"\n");
    h.update(body.to_string().as_bytes());
    crate::store::hex(&h.finalize())
}

/// Appends `entry`, chained to the last line, and syncs it to disk.
pub fn append<T: Serialize>(data_dir: &Path, entry: &Entry<'_, T>) -> anyhow::Result<()> {
    append_values(data_dir, &[serde_json::to_value(entry)?])
}

/// Appends `bodies` (entries as JSON objects, without their chain fields) in order, each
/// chained to the one before, under one lock and one sync.
fn append_values(data_dir: &Path, bodies: &[Value]) -> anyhow::Result<()> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    let p = path(data_dir);
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&p)
        .with_context(|| format!("cannot open the audit log {}", p.display()))?;
    f.lock()
        .with_context(|| format!("cannot lock the audit log {}", p.display()))?;
    let out = append_locked(&mut f, bodies)
        .with_context(|| format!("cannot write the audit log {}", p.display()));
    let _ = f.unlock();
    out
}

fn append_locked(f: &mut std::fs::File, bodies: &[Value]) -> anyhow::Result<()> {
    let (mut seq, mut prev, end) = last_link(f)?;
    let mut out = Vec::new();
    for body in bodies {
        let mut body = body.clone();
        let Some(o) = body.as_object_mut() else {
            bail!("an audit entry must be a JSON object");
        };
        seq += 1;
        o.insert("seq".into(), Value::from(seq));
        o.insert("prev".into(), Value::from(prev.clone()));
        let hash = line_hash(&prev, &body);
        if let Some(o) = body.as_object_mut() {
            o.insert("hash".into(), Value::from(hash.clone()));
        }
        serde_json::to_writer(&mut out, &body)?;
        out.push(b'\n');
        prev = hash;
    }
    // Written at the end of the last whole line: a torn line a crash left (never synced,
    // so never reported done) is overwritten, and the file ends where the new lines end.
    f.seek(SeekFrom::Start(end))?;
    f.write_all(&out)?;
    f.set_len(end + out.len() as u64)?;
    f.sync_data()?;
    Ok(())
}

/// The last whole line's `seq` and `hash` (0 and the genesis hash for an empty log), and
/// the offset just past it (where the next line goes).
///
/// The log is read from its end as bytes, in windows that double until one holds a whole
/// line; a window that starts inside a line (or inside a multi-byte character of client
/// text) is resynchronised on the next newline, so no content can stop the chain.
fn last_link(f: &mut std::fs::File) -> anyhow::Result<(u64, String, u64)> {
    let len = f.seek(SeekFrom::End(0))?;
    let mut window: u64 = 64 * 1024;
    loop {
        let start = len.saturating_sub(window);
        f.seek(SeekFrom::Start(start))?;
        let mut tail = Vec::with_capacity((len - start) as usize);
        f.take(len - start).read_to_end(&mut tail)?;
        // Bytes after the last newline are a torn line from a crash.
        let whole = tail.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let end = start + whole as u64;
        let lines = &tail[..whole];
        // Where the first whole line of the window begins.
        let first = if start == 0 {
            Some(0)
        } else {
            lines.iter().position(|&b| b == b'\n').map(|i| i + 1)
        };
        let found = first.and_then(|first| {
            lines[first..]
                .split(|&b| b == b'\n')
                .rev()
                .find(|l| !l.iter().all(u8::is_ascii_whitespace))
        });
        match found {
            Some(last) => {
                let v: Value = serde_json::from_slice(last).unwrap_or(Value::Null);
                return Ok(match (v["seq"].as_u64(), v["hash"].as_str()) {
                    (Some(seq), Some(hash)) => (seq, hash.to_string(), end),
                    // A log written before chaining, or an edited line: a chain starts
                    // after it (verify reports the break there).
                    _ => (0, GENESIS.into(), end),
                });
            }
            None if start == 0 => return Ok((0, GENESIS.into(), end)),
            None => window = window.saturating_mul(2),
        }
    }
}

/// Entries the daemon holds while the log cannot be written.
const MAX_PENDING: usize = 10_000;

/// A file next to the log that says the daemon could not write to it; `oasis audit
/// verify` reports it. Removed once the pending entries are in the log.
pub fn failure_marker(data_dir: &Path) -> PathBuf {
    data_dir.join("audit.failed")
}

/// The daemon's writer: appends entries and, when the log cannot be written, keeps them
/// (in order, bounded) and reports the log as failing until they are written. A failed
/// append is never silent: it is logged, counted, visible in the API and `/metrics`, noted
/// in [`failure_marker`], and the daemon refuses admin changes until the log takes
/// entries again (see `server::auth`).
#[derive(Debug)]
pub struct AuditLog {
    dir: PathBuf,
    state: std::sync::Mutex<Pending>,
}

#[derive(Debug, Default)]
struct Pending {
    entries: Vec<Value>,
    dropped: u64,
    failures: u64,
    last_error: Option<String>,
    since_ms: Option<u64>,
}

impl AuditLog {
    pub fn new(data_dir: &Path) -> AuditLog {
        AuditLog {
            dir: data_dir.to_path_buf(),
            state: std::sync::Mutex::new(Pending::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Appends `entry` after any pending ones. On failure the entry is kept and the error
    /// returned.
    pub fn record<T: Serialize>(&self, entry: &Entry<'_, T>) -> anyhow::Result<()> {
        let body = serde_json::to_value(entry)?;
        let mut p = self.lock();
        if p.entries.len() >= MAX_PENDING {
            p.entries.remove(0);
            p.dropped += 1;
        }
        p.entries.push(body);
        self.flush_locked(&mut p)
    }

    /// Writes the pending entries, if any: Ok when the log is whole again.
    pub fn flush(&self) -> anyhow::Result<()> {
        let mut p = self.lock();
        if p.entries.is_empty() {
            return Ok(());
        }
        self.flush_locked(&mut p)
    }

    fn flush_locked(&self, p: &mut Pending) -> anyhow::Result<()> {
        let recovering = p.since_ms.is_some();
        let mut bodies = std::mem::take(&mut p.entries);
        if recovering {
            // Said in the chain itself: which entries were written late, and why.
            bodies.insert(
                0,
                serde_json::json!({
                    "ts_ms": crate::telemetry::now_ms(),
                    "actor": "oasis serve",
                    "action": "audit.recovered",
                    "detail": {
                        "entries_written_late": bodies.len(),
                        "entries_dropped": p.dropped,
                        "failing_since_ms": p.since_ms,
                        "last_error": p.last_error,
                    },
                }),
            );
        }
        match append_values(&self.dir, &bodies) {
            Ok(()) => {
                if recovering {
                    tracing::warn!(
                        written_late = bodies.len() - 1,
                        dropped = p.dropped,
                        "the audit log takes entries again: the pending ones are written"
                    );
                    let _ = std::fs::remove_file(failure_marker(&self.dir));
                }
                p.dropped = 0;
                p.last_error = None;
                p.since_ms = None;
                Ok(())
            }
            Err(e) => {
                if recovering {
                    bodies.remove(0);
                }
                p.entries = bodies;
                p.failures += 1;
                let now = crate::telemetry::now_ms();
                let first = p.since_ms.is_none();
                let since = *p.since_ms.get_or_insert(now);
                let msg = format!("{e:#}");
                p.last_error = Some(msg.clone());
                tracing::error!(error = %msg, pending = p.entries.len(), "cannot write the audit log: admin changes are refused until it can be written");
                if first {
                    let note = serde_json::json!({ "failing_since_ms": since, "error": msg });
                    let _ = std::fs::write(failure_marker(&self.dir), format!("{note}\n"));
                }
                Err(e)
            }
        }
    }

    pub fn health(&self) -> WriteHealth {
        let p = self.lock();
        WriteHealth {
            ok: p.entries.is_empty(),
            entries_pending: p.entries.len(),
            entries_dropped: p.dropped,
            write_failures_total: p.failures,
            last_error: p.last_error.clone(),
            failing_since_ms: p.since_ms,
        }
    }
}

/// Checks the whole chain; the number of entries, or the first line that breaks it. Bytes
/// after the last newline are a line a crash tore before it was synced (the next append
/// replaces them), not part of the chain.
pub fn verify(data_dir: &Path) -> anyhow::Result<u64> {
    let p = path(data_dir);
    let f = match std::fs::File::open(&p) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", p.display())),
    };
    let mut prev = GENESIS.to_string();
    let mut n = 0u64;
    let mut reader = std::io::BufReader::new(f);
    let mut line = Vec::new();
    for at in 1.. {
        line.clear();
        reader
            .read_until(b'\n', &mut line)
            .with_context(|| format!("cannot read {}", p.display()))?;
        if line.last() != Some(&b'\n') {
            break;
        }
        let mut v: Value = serde_json::from_slice(&line)
            .with_context(|| format!("line {at} is not JSON: the log was edited"))?;
        let Some(o) = v.as_object_mut() else {
            bail!("line {at} is not an object: the log was edited");
        };
        let Some(Value::String(hash)) = o.remove("hash") else {
            bail!("line {at} has no hash: the log was edited");
        };
        if o.get("prev").and_then(Value::as_str) != Some(prev.as_str()) {
            bail!(
                "line {at} does not follow line {}: a line was removed, added or moved",
                at - 1
            );
        }
        if o.get("seq").and_then(Value::as_u64) != Some(n + 1) {
            bail!("line {at} has the wrong sequence number: a line was removed, added or moved");
        }
        if line_hash(&prev, &v) != hash {
            bail!("line {at} does not match its hash: it was edited");
        }
        prev = hash;
        n += 1;
    }
    Ok(n)
}

/// What the failure marker says, when the daemon could not write the log.
pub fn write_failure(data_dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(failure_marker(data_dir)).ok()?;
    let v: Value = serde_json::from_str(text.trim()).unwrap_or(Value::Null);
    Some(
        match (v["failing_since_ms"].as_u64(), v["error"].as_str()) {
            (Some(ms), Some(e)) => {
                format!("the daemon cannot write the audit log since {ms} ms after the epoch: {e}")
            }
            _ => format!(
                "the daemon could not write the audit log ({})",
                failure_marker(data_dir).display()
            ),
        },
    )
}

/// The last `limit` entries, oldest first.
pub fn tail(data_dir: &Path, limit: usize) -> Vec<Value> {
    let Ok(bytes) = std::fs::read(path(data_dir)) else {
        return Vec::new();
    };
    let lines: Vec<&[u8]> = bytes
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    lines[lines.len().saturating_sub(limit)..]
        .iter()
        .filter_map(|l| serde_json::from_slice(l).ok())
        .collect()
}

pub use appliance_host::paths::euid;
pub use oasis_api::WriteHealth;

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u64, text: &str) -> Entry<'_, Value> {
        Entry {
            ts_ms: n,
            actor: "test",
            action: "auth.pair",
            detail: serde_json::json!({ "name": text }),
        }
    }

    /// Regression (issue 16, finding 1): the tail was read as a string from 64 KiB before
    /// the end; once that window started inside a multi-byte character every append failed.
    #[test]
    fn client_text_cannot_stop_the_chain() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let name = "é".repeat(64);
        for n in 0..600 {
            append(dir.path(), &entry(n, &name)).unwrap_or_else(|e| panic!("entry {n}: {e:#}"));
        }
        // Every offset of the window start was crossed: a 64 KiB window inside a character
        // happened, and the chain still holds.
        let len = std::fs::metadata(path(dir.path())).map_or(0, |m| m.len());
        assert!(len > 3 * 64 * 1024, "{len}");
        assert_eq!(verify(dir.path()).unwrap_or_else(|e| panic!("{e:#}")), 600);
        // An entry longer than the window, then one more.
        let long = "ü".repeat(80 * 1024);
        append(dir.path(), &entry(600, &long)).unwrap_or_else(|e| panic!("{e:#}"));
        append(dir.path(), &entry(601, "after")).unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(verify(dir.path()).unwrap_or_else(|e| panic!("{e:#}")), 602);
        assert_eq!(tail(dir.path(), 1)[0]["detail"]["name"], "after");
    }

    #[test]
    fn a_torn_last_line_is_replaced_by_the_next_entry() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        append(dir.path(), &entry(1, "one")).unwrap_or_else(|e| panic!("{e:#}"));
        // A crash in the middle of the next write: half a line, cut inside a character.
        let mut bytes = std::fs::read(path(dir.path())).unwrap_or_default();
        bytes.extend_from_slice("{\"ts_ms\":2,\"name\":\"\u{e9}".as_bytes());
        bytes.pop();
        std::fs::write(path(dir.path()), &bytes).unwrap_or_default();
        assert_eq!(verify(dir.path()).unwrap_or_else(|e| panic!("{e:#}")), 1);
        append(dir.path(), &entry(3, "three")).unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(verify(dir.path()).unwrap_or_else(|e| panic!("{e:#}")), 2);
        let text = std::fs::read_to_string(path(dir.path())).unwrap_or_default();
        assert_eq!(text.lines().count(), 2);
    }

    #[test]
    fn a_failed_append_is_kept_reported_and_written_when_the_log_recovers() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let log = AuditLog::new(dir.path());
        log.record(&entry(1, "first"))
            .unwrap_or_else(|e| panic!("{e:#}"));
        assert!(log.health().ok);
        // The log cannot be opened for writing (the tests may run as root, which ignores
        // modes: a folder in its place does it).
        std::fs::rename(path(dir.path()), dir.path().join("aside")).unwrap_or_default();
        std::fs::create_dir(path(dir.path())).unwrap_or_default();
        assert!(log.record(&entry(2, "second")).is_err());
        assert!(log.record(&entry(3, "third")).is_err());
        let h = log.health();
        assert!(!h.ok);
        assert_eq!(h.entries_pending, 2);
        assert_eq!(h.write_failures_total, 2);
        assert!(h.last_error.is_some_and(|e| e.contains("audit log")));
        assert!(write_failure(dir.path()).is_some_and(|m| m.contains("cannot write")));
        assert!(log.flush().is_err());
        // Fixed: the next flush writes a note and the two entries, in order.
        std::fs::remove_dir(path(dir.path())).unwrap_or_default();
        std::fs::rename(dir.path().join("aside"), path(dir.path())).unwrap_or_default();
        log.flush().unwrap_or_else(|e| panic!("{e:#}"));
        assert!(log.health().ok);
        assert!(write_failure(dir.path()).is_none());
        assert_eq!(verify(dir.path()).unwrap_or_else(|e| panic!("{e:#}")), 4);
        let all = tail(dir.path(), 10);
        let actions: Vec<&str> = all.iter().filter_map(|v| v["action"].as_str()).collect();
        assert_eq!(
            actions,
            ["auth.pair", "audit.recovered", "auth.pair", "auth.pair"]
        );
        assert_eq!(all[1]["detail"]["entries_written_late"], 2);
        assert_eq!(all[3]["detail"]["name"], "third");
    }

    #[test]
    fn entries_append_as_json_lines() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        for n in 0..3 {
            let entry = Entry {
                ts_ms: n,
                actor: "test",
                action: "profile.apply",
                detail: serde_json::json!({ "n": n }),
            };
            append(dir.path(), &entry).unwrap_or_else(|e| panic!("{e}"));
        }
        let text = std::fs::read_to_string(path(dir.path())).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_default())
            .collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[2]["detail"]["n"], 2);
        assert_eq!(lines[0]["action"], "profile.apply");
        assert_eq!(verify(dir.path()).unwrap_or_default(), 3);
        // One edited character breaks the chain at its line.
        let edited = text.replacen("\"n\":1", "\"n\":7", 1);
        std::fs::write(path(dir.path()), &edited).unwrap_or_default();
        let e = verify(dir.path())
            .map_err(|e| e.to_string())
            .err()
            .unwrap_or_default();
        assert!(e.contains("line 2 does not match its hash"), "{e}");
        // A removed line too.
        let mut kept: Vec<&str> = text.lines().collect();
        kept.remove(1);
        std::fs::write(path(dir.path()), kept.join("\n") + "\n").unwrap_or_default();
        let e = verify(dir.path())
            .map_err(|e| e.to_string())
            .err()
            .unwrap_or_default();
        assert!(e.contains("line 2 does not follow"), "{e}");
    }
}
