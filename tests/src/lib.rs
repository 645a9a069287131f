//! Helpers for the workspace's end-to-end tests: find the real `oasis` binary (building it
//! when needed), the real model file and the reference fixtures.

pub mod daemon;
pub mod gguf_writer;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The workspace root: where this crate was built, or, for a test binary carried to
/// another machine (the GPU suite), the current directory when that path is not there.
pub fn workspace_root() -> PathBuf {
    let built = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    if built.join("tests/fixtures").is_dir() {
        return built;
    }
    std::env::current_dir().unwrap_or(built)
}

/// File name of the default model.
pub const DEFAULT_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// The default model (SmolLM2-135M-Instruct Q4_1): `$OASIS_MODEL`, else the data
/// directories `scripts/fetch-model` writes to. Panics with the fix when it is missing:
/// these tests exist to run on the real file, so a missing file is a failure, not a skip.
pub fn model_path() -> PathBuf {
    let mut candidates = Vec::new();
    if let Some(p) = std::env::var_os("OASIS_MODEL") {
        candidates.push(PathBuf::from(p));
    }
    if let Some(d) = std::env::var_os("OASIS_DATA_DIR") {
        candidates.push(PathBuf::from(d).join("models").join(DEFAULT_MODEL_FILE));
    }
    candidates.push(
        workspace_root()
            .join(".oasis/models")
            .join(DEFAULT_MODEL_FILE),
    );
    candidates.push(PathBuf::from("/var/lib/oasis/models").join(DEFAULT_MODEL_FILE));
    match candidates.iter().find(|p| p.is_file()) {
        Some(p) => p.clone(),
        None => panic!(
            "the default model is missing (looked in {candidates:?}); run scripts/fetch-model \
             (scripts/test does it for you)"
        ),
    }
}

/// A fixture file under `tests/fixtures/`, parsed as JSON.
pub fn fixture_json(rel: &str) -> serde_json::Value {
    let path = workspace_root().join("tests/fixtures").join(rel);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// The `oasis` binary of this build profile, built once per test process so the tests
/// always run the current code; `$OASIS_BIN` instead, or `.device/tools/oasis` where a
/// test binary was carried to a GPU machine without cargo.
pub fn oasis_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("OASIS_BIN") {
            return PathBuf::from(bin);
        }
        // Carried by scripts/stage-gpu, and run where there is no cargo.
        let staged = workspace_root().join(".device/tools/oasis");
        if std::env::var_os("CARGO").is_none() && staged.is_file() {
            return staged;
        }
        build_bin("appliance-daemon", "oasis")
    })
}

/// Builds `bin` of `package` in this test's profile (cargo, once per call) and returns
/// its path.
pub fn build_bin(package: &str, bin: &str) -> PathBuf {
    // The test binary is target/<profile>/deps/it-<hash>; the binary goes to
    // target/<profile>/oasis.
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("current_exe: {e}"));
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let target_dir = profile_dir
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "-p", package, "--bin", bin])
        .arg("--target-dir")
        .arg(&target_dir)
        .current_dir(workspace_root());
    // Not the variables cargo set for this test: build scripts that watch them (ring's
    // watches CARGO_MANIFEST_DIR and CARGO_PKG_*) would see another package's values
    // in each test crate and rebuild the daemon's TLS stack every time.
    for (key, _) in std::env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        if key.starts_with("CARGO_PKG_")
            || key.starts_with("CARGO_BIN_")
            || matches!(
                key,
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_TARGET_TMPDIR"
                    | "CARGO_RUSTC_CURRENT_DIR"
            )
        {
            cmd.env_remove(key);
        }
    }
    if release {
        cmd.arg("--release");
    }
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run cargo build: {e}"));
    assert!(status.success(), "cargo build of {bin} failed");
    profile_dir.join(bin)
}

/// Runs `oasis` with `args` and waits for it.
pub fn oasis(args: &[&str]) -> Output {
    oasis_with_env(args, &[])
}

/// Runs `oasis` with `args` and extra environment variables.
pub fn oasis_with_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(oasis_bin());
    cmd.args(args).env(
        "OASIS_DATA_DIR",
        workspace_root().join("target/test-data-dir-unused"),
    );
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot start oasis: {e}"))
}

/// stdout of a run that must have succeeded.
pub fn stdout_ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "oasis failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The test venv's Python (`OASIS_TEST_PYTHON`, else `~/.cache/oasis/pyenv/bin/python`,
/// which `scripts/setup-host` makes): it has the `openai` package and schemathesis.
pub fn test_python() -> PathBuf {
    let python = std::env::var("OASIS_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            let home = std::env::var("HOME").unwrap_or_default();
            PathBuf::from(home).join(".cache/oasis/pyenv/bin/python")
        });
    assert!(
        python.exists(),
        "no test Python at {}: run scripts/setup-host",
        python.display()
    );
    python
}

/// Runs `tests/python/SCRIPT ARGS...` with the test Python and parses the one JSON document
/// it prints; a failing script fails the test with its output.
pub fn python_json(script: &str, args: &[&str]) -> serde_json::Value {
    let path = workspace_root().join("tests/python").join(script);
    let out = Command::new(test_python())
        .arg(&path)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", path.display()));
    assert!(
        out.status.success(),
        "{script} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{script} did not print JSON ({e}):\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// A copy of the default model, named `name`, with `template` as its chat template, written
/// by llama.cpp's own `gguf-new-metadata` (PyPI's `gguf`, which scripts/setup-host installs).
pub fn model_with_template(dir: &Path, name: &str, template: &str) -> PathBuf {
    let tool = test_python().with_file_name("gguf-new-metadata");
    assert!(
        tool.exists(),
        "{} is missing: scripts/setup-host installs PyPI's gguf",
        tool.display()
    );
    let jinja = dir.join(format!("{name}.jinja"));
    std::fs::write(&jinja, template).unwrap_or_else(|e| panic!("{}: {e}", jinja.display()));
    let out = dir.join(format!("{name}.gguf"));
    let run = Command::new(&tool)
        .arg("--chat-template-file")
        .arg(&jinja)
        .arg(model_path())
        .arg(&out)
        .arg("--force")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", tool.display()));
    assert!(
        run.status.success(),
        "gguf-new-metadata failed: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    out
}

/// The default embedding model's folder (all-MiniLM-L6-v2): `$OASIS_EMBEDDING_MODEL`, else
/// the data directories `scripts/fetch-embedding-model` writes to. Panics with the fix when
/// it is missing.
pub fn embedding_model_path() -> PathBuf {
    const NAME: &str = "all-MiniLM-L6-v2";
    let mut candidates = Vec::new();
    if let Some(p) = std::env::var_os("OASIS_EMBEDDING_MODEL") {
        candidates.push(PathBuf::from(p));
    }
    if let Some(d) = std::env::var_os("OASIS_DATA_DIR") {
        candidates.push(PathBuf::from(d).join("models").join(NAME));
    }
    candidates.push(workspace_root().join(".oasis/models").join(NAME));
    candidates.push(PathBuf::from("/var/lib/oasis/models").join(NAME));
    match candidates
        .iter()
        .find(|p| p.join("model.safetensors").is_file())
    {
        Some(p) => p.clone(),
        None => panic!(
            "the embedding model is missing (looked in {candidates:?}); run \
             scripts/fetch-embedding-model (scripts/test does it for you)"
        ),
    }
}
