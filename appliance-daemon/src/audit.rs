//! The audit log: one JSON object per line in `<data dir>/audit.jsonl`, appended and
//! flushed to disk before the action is reported done, so a crash never loses an entry
//! for a change that was made.
//!
//! A file, not sled, because `oasis profile apply` writes to it while a daemon may hold
//! the sled state open. Entries are appended whole with one `write` on an append-only
//! descriptor, so concurrent writers do not interleave inside a line.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;

/// The log's file in a data directory.
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join("audit.jsonl")
}

/// One entry.
#[derive(Debug, Serialize)]
pub struct Entry<'a, T: Serialize> {
    /// Milliseconds since the Unix epoch.
    pub ts_ms: u64,
    /// Who acted: `oasis profile apply (uid 0)`, `oasis serve (profile_policy = apply)`.
    pub actor: &'a str,
    /// What was done, dotted: `profile.apply`.
    pub action: &'a str,
    pub detail: T,
}

/// Appends `entry` and syncs it to disk.
pub fn append<T: Serialize>(data_dir: &Path, entry: &Entry<'_, T>) -> anyhow::Result<()> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    let p = path(data_dir);
    let mut line = serde_json::to_vec(entry)?;
    line.push(b'\n');
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&p)
        .with_context(|| format!("cannot open the audit log {}", p.display()))?;
    f.write_all(&line)
        .and_then(|()| f.sync_data())
        .with_context(|| format!("cannot write the audit log {}", p.display()))
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
    }
}
