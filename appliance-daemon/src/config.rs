//! The daemon's configuration: defaults, then a TOML file, then `OASIS_*` environment
//! variables, then command-line flags, each overriding the one before.
//!
//! The file is parsed strictly (an unknown key is an error naming its line), and the merged
//! result is checked once into [`ServeConfig`], which the rest of the daemon trusts.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// Where the daemon listens when nothing says otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Largest request body accepted, in bytes (a 100k-token prompt is about 400 KB of text).
pub const DEFAULT_MAX_BODY_BYTES: usize = 4 << 20;
/// How long a non-streaming request may wait and run before it is answered with 504.
pub const DEFAULT_REQUEST_TIMEOUT_S: u64 = 600;
/// How long in-flight requests get to finish after SIGINT/SIGTERM.
pub const DEFAULT_SHUTDOWN_GRACE_S: u64 = 10;
/// Requests that may wait for a model's batch before new ones are refused with 429.
pub const DEFAULT_MAX_WAITING: usize = 256;
/// Tokens per engine step (decode tokens plus prompt chunks).
pub const DEFAULT_MAX_BATCH_TOKENS: usize = 512;
/// Sequences in a model's batch at once.
pub const DEFAULT_MAX_RUNNING: usize = 32;
/// Latency target of an engine step that carries generating sequences, in milliseconds:
/// prompt chunks beside decode tokens are sized to it from the measured step times (0: off,
/// every step may carry `max_batch_tokens`).
pub const DEFAULT_MAX_STEP_MS: u64 = 35;
/// First-token wait after which a prompt being read gets whole steps again, in
/// milliseconds: under load the step budget yields to prompts rather than starve them
/// (0: never).
pub const DEFAULT_TTFT_TARGET_MS: u64 = 2000;
/// Memory for all running sequences' keys and values, per model.
pub const DEFAULT_KV_CACHE_BYTES: usize = 2 << 30;
/// Time a connection gets to send a whole request head, counted from when it connects or
/// from its previous response (so an idle keep-alive connection is closed after it too).
pub const DEFAULT_HEADER_READ_TIMEOUT_S: u64 = 20;
/// Time a request body may send nothing before the request is answered 408.
pub const DEFAULT_IDLE_TIMEOUT_S: u64 = 30;
/// Open client connections at most (also held below the open-file limit).
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;

pub use appliance_host::config_file::FileConfig;

/// What the command line and the environment may override (`None`: not given). clap fills
/// each field from its flag or, failing that, its `OASIS_*` variable.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub models: Vec<PathBuf>,
    pub threads: Option<usize>,
    pub max_context: Option<usize>,
    pub max_body_bytes: Option<usize>,
    pub request_timeout_s: Option<u64>,
    pub shutdown_grace_s: Option<u64>,
    pub max_waiting: Option<usize>,
    pub max_batch_tokens: Option<usize>,
    pub max_running: Option<usize>,
    pub max_step_ms: Option<u64>,
    pub ttft_target_ms: Option<u64>,
    pub kv_cache_bytes: Option<usize>,
    pub ranks: Option<usize>,
    pub redundant_experts: Option<usize>,
    pub telemetry_interval_ms: Option<u64>,
    pub telemetry_replay: Option<PathBuf>,
    pub alert_webhooks: Vec<String>,
    pub log_format: Option<String>,
    pub profile: Option<String>,
    pub profiles_dir: Option<PathBuf>,
    pub profile_policy: Option<String>,
    pub inventory: Option<PathBuf>,
    pub import_max_bytes_per_s: Option<u64>,
    pub tls: Option<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub allow_plain_http: Option<bool>,
    pub console_dir: Option<PathBuf>,
    pub header_read_timeout_s: Option<u64>,
    pub idle_timeout_s: Option<u64>,
    pub max_connections: Option<usize>,
    pub device: Option<String>,
}

/// What a box that fails its profile's compliance check does to the daemon's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProfilePolicy {
    /// Log the failures and serve anyway.
    Warn,
    /// Refuse to start.
    Refuse,
    /// Apply the profile's GPU settings (as root), then check again and serve.
    Apply,
}

impl ProfilePolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            ProfilePolicy::Warn => "warn",
            ProfilePolicy::Refuse => "refuse",
            ProfilePolicy::Apply => "apply",
        }
    }
}

/// Where an engine setting's value came from, for the plan the daemon logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A flag or an `OASIS_*` variable.
    CommandLine,
    ConfigFile,
    /// The firmware profile's engine plan, with the profile's id.
    Profile(String),
    /// The daemon's built-in default.
    Default,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::CommandLine => f.write_str("flag or OASIS_* variable"),
            Origin::ConfigFile => f.write_str("config file"),
            Origin::Profile(id) => write!(f, "profile {id}"),
            Origin::Default => f.write_str("built-in default"),
        }
    }
}

/// Where the engine settings a profile may set came from.
#[derive(Debug, Clone)]
pub struct EngineOrigins {
    pub ranks: Origin,
    pub kv_cache_bytes: Origin,
    pub max_batch_tokens: Origin,
    pub max_running: Origin,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// The checked configuration the daemon runs with.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The address to bind; port 0 picks a free port (tests).
    pub listen: SocketAddr,
    /// Holds the sled state and the model store.
    pub data_dir: PathBuf,
    /// Model files named on the command line or in the file, added to the catalog.
    pub models: Vec<PathBuf>,
    /// Compute threads per engine; one per core when absent.
    pub threads: Option<usize>,
    /// Context limit per sequence, and the most a deployment's `context_length` may ask;
    /// the model's training context (at most 8192) when absent.
    pub max_context: Option<usize>,
    /// Bound on request bodies (413 beyond it).
    pub max_body_bytes: usize,
    /// Bound on a non-streaming request's wait and run (504 beyond it).
    pub request_timeout: Duration,
    /// Bound on the wait for in-flight requests at shutdown.
    pub shutdown_grace: Duration,
    /// Bound on each model's waiting requests (429 beyond it).
    pub max_waiting: usize,
    /// Tokens per engine step.
    pub max_batch_tokens: usize,
    /// Sequences in a batch at once.
    pub max_running: usize,
    /// Step-time target while sequences generate (`None`: off).
    pub max_step_ms: Option<u32>,
    /// First-token wait after which prompts get whole steps (`None`: never).
    pub ttft_target_ms: Option<u32>,
    /// Bytes of keys and values for all running sequences of a model.
    pub kv_cache_bytes: usize,
    /// Ranks of each MoE model's engine (attention data-parallel, experts spread).
    pub ranks: usize,
    /// Extra physical expert slots per MoE layer.
    pub redundant_experts: usize,
    /// Time between telemetry samples.
    pub telemetry_interval: Duration,
    /// A telemetry trace replayed in place of NVML.
    pub telemetry_replay: Option<PathBuf>,
    /// Where alert changes are POSTed.
    pub alert_webhooks: Vec<String>,
    pub log_format: LogFormat,
    /// The profile named in the configuration (an id or a path).
    pub profile: Option<String>,
    pub profiles_dir: Option<PathBuf>,
    pub profile_policy: ProfilePolicy,
    /// A recorded inventory used in place of the hardware.
    pub inventory: Option<PathBuf>,
    /// Bytes per second an import may read from its source (0: no limit), so a copy does
    /// not starve the served models of I/O.
    pub import_max_bytes_per_s: u64,
    /// Serve HTTPS (with `tls_cert`/`tls_key`, or the daemon's own certificate).
    pub tls: bool,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// The built web console served at `/`; `None` when none was found (then `/` answers
    /// 404 naming how to build it).
    pub console_dir: Option<PathBuf>,
    /// Bound on receiving a request head, and on a keep-alive connection's idle time.
    pub header_read_timeout: Duration,
    /// Bound on a request body's silences (408 beyond it).
    pub idle_timeout: Duration,
    /// Bound on open client connections (lowered at start to fit the open-file limit).
    pub max_connections: usize,
    /// Where models should run, as asked.
    pub device_choice: engine::device::DeviceChoice,
    /// Where they run, decided at start from `device_choice` and the hardware (the CPU
    /// until then).
    pub device: engine::device::Selection,
    /// On a GPU, the share of its memory left after the weights that a model's cache
    /// takes (the profile's KV fraction over the models, else 0.9); `None` keeps
    /// `kv_cache_bytes`.
    pub gpu_kv_fraction: Option<f64>,
    /// Where `ranks`, `kv_cache_bytes`, `max_batch_tokens` and `max_running` came from;
    /// the profile's plan fills those still at their defaults.
    pub origins: EngineOrigins,
}

/// Where the built web console is looked for when none is configured, first found wins:
/// `share/oasis/console` beside the binary's folder (the installed layout,
/// `/usr/lib/oasis/bin/oasis` -> `/usr/lib/oasis/share/oasis/console`), `console/` beside the
/// binary, and the source tree's `desktop-ui/dist` (a binary built from a checkout).
pub fn console_dir_default() -> Option<PathBuf> {
    let mut candidates = Vec::new();
    if let Some(bin_dir) = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
    {
        if let Some(prefix) = bin_dir.parent() {
            candidates.push(prefix.join("share/oasis/console"));
        }
        candidates.push(bin_dir.join("console"));
    }
    candidates.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("../desktop-ui/dist"));
    candidates
        .into_iter()
        .find(|d| d.join("index.html").is_file())
}

impl ServeConfig {
    /// Merges defaults, `file` and `over` (flags and environment), and checks the result.
    pub fn resolve(file: FileConfig, over: Overrides) -> Result<ServeConfig> {
        let origin = |cli: bool, in_file: bool| {
            if cli {
                Origin::CommandLine
            } else if in_file {
                Origin::ConfigFile
            } else {
                Origin::Default
            }
        };
        let origins = EngineOrigins {
            ranks: origin(over.ranks.is_some(), file.ranks.is_some()),
            kv_cache_bytes: origin(over.kv_cache_bytes.is_some(), file.kv_cache_bytes.is_some()),
            max_batch_tokens: origin(
                over.max_batch_tokens.is_some(),
                file.max_batch_tokens.is_some(),
            ),
            max_running: origin(over.max_running.is_some(), file.max_running.is_some()),
        };
        let profile_policy = match over.profile_policy.or(file.profile_policy).as_deref() {
            None | Some("warn") => ProfilePolicy::Warn,
            Some("refuse") => ProfilePolicy::Refuse,
            Some("apply") => ProfilePolicy::Apply,
            Some(other) => {
                bail!("`profile_policy` must be `warn`, `refuse` or `apply`, got `{other}`")
            }
        };
        let profile = over.profile.or(file.profile).filter(|p| !p.is_empty());
        let profiles_dir = over.profiles_dir.or(file.profiles_dir);
        let inventory = over.inventory.or(file.inventory);
        let listen_text = over
            .listen
            .or(file.listen)
            .unwrap_or_else(|| DEFAULT_LISTEN.to_string());
        let listen: SocketAddr = listen_text.parse().with_context(|| {
            format!("listen address `{listen_text}` is not an IP:PORT such as {DEFAULT_LISTEN}")
        })?;
        let data_dir = over
            .data_dir
            .or(file.data_dir)
            .unwrap_or_else(crate::paths::data_dir);
        let mut models = file.models.unwrap_or_default();
        for m in over.models {
            if !models.contains(&m) {
                models.push(m);
            }
        }
        let threads = over.threads.or(file.threads);
        if let Some(t) = threads
            && !(1..=1024).contains(&t)
        {
            bail!("`threads` must be between 1 and 1024, got {t}");
        }
        let max_context = over.max_context.or(file.max_context);
        if max_context == Some(0) {
            bail!("`max_context` must be at least 1 token, got 0");
        }
        let max_body_bytes = pick(
            "max_body_bytes",
            over.max_body_bytes.or(file.max_body_bytes),
            DEFAULT_MAX_BODY_BYTES,
            1024..=1 << 30,
        )?;
        let request_timeout_s = pick(
            "request_timeout_s",
            over.request_timeout_s.or(file.request_timeout_s),
            DEFAULT_REQUEST_TIMEOUT_S,
            1..=86_400,
        )?;
        let shutdown_grace_s = pick(
            "shutdown_grace_s",
            over.shutdown_grace_s.or(file.shutdown_grace_s),
            DEFAULT_SHUTDOWN_GRACE_S,
            0..=3600,
        )?;
        let max_waiting = pick(
            "max_waiting",
            over.max_waiting.or(file.max_waiting),
            DEFAULT_MAX_WAITING,
            1..=100_000,
        )?;
        let max_batch_tokens = pick(
            "max_batch_tokens",
            over.max_batch_tokens.or(file.max_batch_tokens),
            DEFAULT_MAX_BATCH_TOKENS,
            1..=65_536,
        )?;
        let max_running = pick(
            "max_running",
            over.max_running.or(file.max_running),
            DEFAULT_MAX_RUNNING,
            1..=4096,
        )?;
        let max_step_ms = pick_ms(
            "max_step_ms",
            over.max_step_ms.or(file.max_step_ms),
            DEFAULT_MAX_STEP_MS,
        )?;
        let ttft_target_ms = pick_ms(
            "ttft_target_ms",
            over.ttft_target_ms.or(file.ttft_target_ms),
            DEFAULT_TTFT_TARGET_MS,
        )?;
        let kv_cache_bytes = pick(
            "kv_cache_bytes",
            over.kv_cache_bytes.or(file.kv_cache_bytes),
            DEFAULT_KV_CACHE_BYTES,
            1 << 20..=1 << 40,
        )?;
        let ranks = pick("ranks", over.ranks.or(file.ranks), 1, 1..=64)?;
        let redundant_experts = pick(
            "redundant_experts",
            over.redundant_experts.or(file.redundant_experts),
            0,
            0..=4096,
        )?;
        let telemetry_interval_ms = pick(
            "telemetry_interval_ms",
            over.telemetry_interval_ms.or(file.telemetry_interval_ms),
            1000,
            50..=60_000,
        )?;
        let telemetry_replay = over.telemetry_replay.or(file.telemetry_replay);
        let allow_plain = over
            .allow_plain_http
            .or(file.allow_plain_http)
            .unwrap_or(false);
        let tls = match over.tls.or(file.tls).as_deref() {
            None | Some("auto") => !listen.ip().is_loopback(),
            Some("on") => true,
            Some("off") => false,
            Some(other) => bail!("`tls` must be `auto`, `on` or `off`, got `{other}`"),
        };
        if !tls && !listen.ip().is_loopback() && !allow_plain {
            bail!(
                "plain HTTP on {listen} would send keys over the LAN in clear: use `tls = \"auto\"` (the default) or set `allow_plain_http = true`"
            );
        }
        let tls_cert = over.tls_cert.or(file.tls_cert);
        let tls_key = over.tls_key.or(file.tls_key);
        let import_max_bytes_per_s = over
            .import_max_bytes_per_s
            .or(file.import_max_bytes_per_s)
            .unwrap_or(0);
        let console_dir = match over.console_dir.or(file.console_dir) {
            Some(dir) if !dir.join("index.html").is_file() => bail!(
                "`console_dir`: {} has no index.html (build the console with `npm ci && npm run build` in desktop-ui/)",
                dir.display()
            ),
            Some(dir) => Some(dir),
            None => console_dir_default(),
        };
        let header_read_timeout_s = pick(
            "header_read_timeout_s",
            over.header_read_timeout_s.or(file.header_read_timeout_s),
            DEFAULT_HEADER_READ_TIMEOUT_S,
            1..=3600,
        )?;
        let idle_timeout_s = pick(
            "idle_timeout_s",
            over.idle_timeout_s.or(file.idle_timeout_s),
            DEFAULT_IDLE_TIMEOUT_S,
            1..=3600,
        )?;
        let max_connections = pick(
            "max_connections",
            over.max_connections.or(file.max_connections),
            DEFAULT_MAX_CONNECTIONS,
            16..=1_000_000,
        )?;
        let device_choice: engine::device::DeviceChoice = match over.device.or(file.device) {
            Some(d) => d
                .parse()
                .map_err(|e: String| anyhow::anyhow!("`device`: {e}"))?,
            None => engine::device::DeviceChoice::Auto,
        };
        let alert_webhooks = if over.alert_webhooks.is_empty() {
            file.alert_webhooks.unwrap_or_default()
        } else {
            over.alert_webhooks
        };
        for url in &alert_webhooks {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                bail!("`alert_webhooks`: `{url}` is not an http(s) URL");
            }
        }
        let log_format = match over.log_format.or(file.log_format).as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => bail!("`log_format` must be `text` or `json`, got `{other}`"),
        };
        Ok(ServeConfig {
            listen,
            data_dir,
            models,
            threads,
            max_context,
            max_body_bytes,
            request_timeout: Duration::from_secs(request_timeout_s),
            shutdown_grace: Duration::from_secs(shutdown_grace_s),
            max_waiting,
            max_batch_tokens,
            max_running,
            max_step_ms,
            ttft_target_ms,
            kv_cache_bytes,
            ranks,
            redundant_experts,
            telemetry_interval: Duration::from_millis(telemetry_interval_ms),
            telemetry_replay,
            import_max_bytes_per_s,
            tls,
            tls_cert,
            tls_key,
            console_dir,
            header_read_timeout: Duration::from_secs(header_read_timeout_s),
            idle_timeout: Duration::from_secs(idle_timeout_s),
            max_connections,
            device_choice,
            device: engine::device::Selection {
                spec: engine::device::DeviceSpec::Cpu,
                why: "not decided yet".into(),
            },
            gpu_kv_fraction: None,
            alert_webhooks,
            log_format,
            profile,
            profiles_dir,
            profile_policy,
            inventory,
            origins,
        })
    }
}

/// A time target in milliseconds, at most an hour: `None` when it is 0 (off).
fn pick_ms(key: &str, value: Option<u64>, default: u64) -> Result<Option<u32>> {
    let ms = pick(key, value, default, 0..=3_600_000)?;
    Ok(u32::try_from(ms).ok().filter(|&ms| ms > 0))
}

/// `value` (or `default`), checked against `range`; the error names the key and the bound.
fn pick<T>(key: &str, value: Option<T>, default: T, range: std::ops::RangeInclusive<T>) -> Result<T>
where
    T: PartialOrd + std::fmt::Display + Copy,
{
    let v = value.unwrap_or(default);
    if !range.contains(&v) {
        bail!(
            "`{key}` must be between {} and {}, got {v}",
            range.start(),
            range.end()
        );
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_policy_is_checked_and_explicit_engine_settings_are_marked() {
        let err = ServeConfig::resolve(
            FileConfig::default(),
            Overrides {
                profile_policy: Some("enforce".into()),
                ..Overrides::default()
            },
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert_eq!(
            err,
            "`profile_policy` must be `warn`, `refuse` or `apply`, got `enforce`"
        );
        let file = FileConfig::parse("max_running = 7\nprofile_policy = \"refuse\"\n")
            .unwrap_or_else(|e| panic!("{e}"));
        let cfg = ServeConfig::resolve(
            file,
            Overrides {
                ranks: Some(2),
                ..Overrides::default()
            },
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.profile_policy, ProfilePolicy::Refuse);
        assert_eq!(cfg.origins.ranks, Origin::CommandLine);
        assert_eq!(cfg.origins.max_running, Origin::ConfigFile);
        assert_eq!(cfg.origins.max_batch_tokens, Origin::Default);
    }

    #[test]
    fn precedence_is_defaults_then_file_then_overrides() {
        let file =
            FileConfig::parse("listen = \"0.0.0.0:9000\"\nthreads = 3\nmax_waiting = 5\n").unwrap();
        let over = Overrides {
            threads: Some(7),
            ..Overrides::default()
        };
        let cfg = ServeConfig::resolve(file, over).unwrap();
        assert_eq!(cfg.listen.to_string(), "0.0.0.0:9000");
        assert_eq!(cfg.threads, Some(7));
        assert_eq!(cfg.max_waiting, 5);
        assert_eq!(cfg.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
        let cfg = ServeConfig::resolve(FileConfig::default(), Overrides::default()).unwrap();
        assert_eq!(cfg.listen.to_string(), DEFAULT_LISTEN);
    }

    #[test]
    fn unknown_key_names_its_line() {
        let err = FileConfig::parse("listen = \"127.0.0.1:1\"\n\nthreds = 2\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("line 3"), "{msg}");
        assert!(msg.contains("threds"), "{msg}");
    }

    #[test]
    fn bad_values_state_the_bound() {
        let bad = |over: Overrides| {
            ServeConfig::resolve(FileConfig::default(), over)
                .unwrap_err()
                .to_string()
        };
        assert!(
            bad(Overrides {
                listen: Some("localhost".into()),
                ..Overrides::default()
            })
            .contains("IP:PORT")
        );
        assert!(
            bad(Overrides {
                threads: Some(0),
                ..Overrides::default()
            })
            .contains("between 1 and 1024")
        );
        assert!(
            bad(Overrides {
                log_format: Some("xml".into()),
                ..Overrides::default()
            })
            .contains("`text` or `json`")
        );
        let wrong_type = FileConfig::parse("threads = \"two\"\n").unwrap_err();
        assert!(wrong_type.to_string().contains("line 1"), "{wrong_type}");
        assert!(
            bad(Overrides {
                max_step_ms: Some(3_600_001),
                ..Overrides::default()
            })
            .contains("`max_step_ms` must be between 0 and 3600000")
        );
    }

    #[test]
    fn step_targets_default_on_and_zero_turns_them_off() {
        let resolve = |text: &str| {
            ServeConfig::resolve(FileConfig::parse(text).unwrap(), Overrides::default()).unwrap()
        };
        let cfg = resolve("");
        assert_eq!(cfg.max_step_ms, Some(35));
        assert_eq!(cfg.ttft_target_ms, Some(2000));
        let cfg = resolve("max_step_ms = 0\nttft_target_ms = 0\n");
        assert_eq!((cfg.max_step_ms, cfg.ttft_target_ms), (None, None));
        assert_eq!(resolve("max_step_ms = 120\n").max_step_ms, Some(120));
    }
}
