//! The daemon's configuration file (`oasis.toml`): its keys, parsed strictly (an unknown
//! key is an error naming its line). The daemon layers it under the environment and the
//! command line (`appliance-daemon::config`); the installer writes one for the box it
//! installs and checks it with the same parser.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// The configuration file's contents; every key optional, unknown keys rejected.
#[derive(Debug, Default, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    /// GGUF files to serve, in addition to those in the catalog.
    pub models: Option<Vec<PathBuf>>,
    pub threads: Option<usize>,
    pub max_context: Option<usize>,
    pub max_body_bytes: Option<usize>,
    pub request_timeout_s: Option<u64>,
    pub shutdown_grace_s: Option<u64>,
    pub max_waiting: Option<usize>,
    pub max_batch_tokens: Option<usize>,
    pub max_running: Option<usize>,
    /// Step-time target in milliseconds while sequences generate (0: off).
    pub max_step_ms: Option<u64>,
    /// First-token wait in milliseconds after which prompts get whole steps (0: never).
    pub ttft_target_ms: Option<u64>,
    pub kv_cache_bytes: Option<usize>,
    /// Engine ranks per MoE model (expert parallelism).
    pub ranks: Option<usize>,
    /// Milliseconds between telemetry samples.
    pub telemetry_interval_ms: Option<u64>,
    /// Replay this recorded telemetry trace instead of reading NVML (demos, tests).
    pub telemetry_replay: Option<PathBuf>,
    /// URLs that get every alert change as a JSON POST.
    pub alert_webhooks: Option<Vec<String>>,
    /// Extra expert slots per MoE layer (replicas of hot experts).
    pub redundant_experts: Option<usize>,
    /// `text` (the default) or `json`.
    pub log_format: Option<String>,
    /// The firmware profile: an id or a `.toml` path [default: the one matching the box].
    pub profile: Option<String>,
    /// A folder of extra profiles (`*.toml`) next to the built-in ones.
    pub profiles_dir: Option<PathBuf>,
    /// `warn`, `refuse` or `apply`: what a non-compliant box does to the start.
    pub profile_policy: Option<String>,
    /// Use this recorded hardware inventory (JSON) instead of reading the box (demos, tests).
    pub inventory: Option<PathBuf>,
    /// Bytes per second an import may read (0: no limit).
    pub import_max_bytes_per_s: Option<u64>,
    /// `auto` (TLS unless the listen address is loopback), `on` or `off`.
    pub tls: Option<String>,
    /// The operator's certificate and key (PEM) [default: one made on first start].
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Serve plain HTTP on a non-loopback address (keys would cross the LAN in clear).
    pub allow_plain_http: Option<bool>,
    /// The built web console (`desktop-ui/dist`) served at `/` [default: found next to the
    /// binary, see [`console_dir_default`]].
    pub console_dir: Option<PathBuf>,
    /// Seconds a connection gets to send a request head (also the keep-alive idle time).
    pub header_read_timeout_s: Option<u64>,
    /// Seconds a request body may go without sending anything.
    pub idle_timeout_s: Option<u64>,
    /// Open client connections at most.
    pub max_connections: Option<usize>,
    /// Where models run: `auto` (a GPU when one can be used), `cpu`, `cuda` or `cuda:N`.
    pub device: Option<String>,
}

impl FileConfig {
    /// Reads and parses `path`; errors name the file and the offending line and key.
    pub fn load(path: &Path) -> Result<FileConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("config file {}", path.display()))
    }

    /// Parses TOML text.
    pub fn parse(text: &str) -> Result<FileConfig> {
        toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            let msg = e.message().trim().to_string();
            match line {
                Some(l) => anyhow::anyhow!("line {l}: {msg}"),
                None => anyhow::anyhow!("{msg}"),
            }
        })
    }
}
