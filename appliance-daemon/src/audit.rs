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
//! last line and append the next, so the chain holds across processes.

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
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    let p = path(data_dir);
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(&p)
        .with_context(|| format!("cannot open the audit log {}", p.display()))?;
    f.lock()
        .with_context(|| format!("cannot lock the audit log {}", p.display()))?;
    let (seq, prev) = last_link(&mut f)?;
    let mut body = serde_json::to_value(entry)?;
    if let Some(o) = body.as_object_mut() {
        o.insert("seq".into(), Value::from(seq + 1));
        o.insert("prev".into(), Value::from(prev.clone()));
    }
    let hash = line_hash(&prev, &body);
    if let Some(o) = body.as_object_mut() {
        o.insert("hash".into(), Value::from(hash));
    }
    let mut line = serde_json::to_vec(&body)?;
    line.push(b'\n');
    let out = f
        .write_all(&line)
        .and_then(|()| f.sync_data())
        .with_context(|| format!("cannot write the audit log {}", p.display()));
    let _ = f.unlock();
    out
}

/// The last line's `seq` and `hash` (0 and the genesis hash for an empty log).
fn last_link(f: &mut std::fs::File) -> anyhow::Result<(u64, String)> {
    let len = f.seek(SeekFrom::End(0))?;
    if len == 0 {
        return Ok((0, GENESIS.into()));
    }
    // The last line is short: read the tail.
    let start = len.saturating_sub(64 * 1024);
    f.seek(SeekFrom::Start(start))?;
    let mut tail = String::new();
    f.read_to_string(&mut tail)?;
    let last = tail
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    let v: Value = serde_json::from_str(last).unwrap_or(Value::Null);
    match (v["seq"].as_u64(), v["hash"].as_str()) {
        (Some(seq), Some(hash)) => Ok((seq, hash.to_string())),
        // A log written before chaining: start a chain after it.
        _ => Ok((0, GENESIS.into())),
    }
}

/// Checks the whole chain; the number of entries, or the first line that breaks it.
pub fn verify(data_dir: &Path) -> anyhow::Result<u64> {
    let p = path(data_dir);
    let f = match std::fs::File::open(&p) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", p.display())),
    };
    let mut prev = GENESIS.to_string();
    let mut n = 0u64;
    for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line?;
        let at = i + 1;
        let mut v: Value = serde_json::from_str(&line)
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

/// The last `limit` entries, oldest first.
pub fn tail(data_dir: &Path, limit: usize) -> Vec<Value> {
    let Ok(text) = std::fs::read_to_string(path(data_dir)) else {
        return Vec::new();
    };
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(limit)..]
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The effective uid (from `/proc/self/status`), `None` when unreadable.
pub fn euid() -> Option<u32> {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2))
                .and_then(|v| v.parse().ok())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

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
