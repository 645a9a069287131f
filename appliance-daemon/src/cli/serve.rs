//! `oasis serve`: the daemon. Flags override `OASIS_*` variables, which override the
//! configuration file, which overrides the defaults (see `crate::config`).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use crate::config::{FileConfig, Overrides, ServeConfig};

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// TOML configuration file.
    #[arg(long, env = "OASIS_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "OASIS_LISTEN", value_name = "ADDR")]
    pub listen: Option<String>,
    /// State and model store [default: /var/lib/oasis as root, ./.oasis otherwise].
    #[arg(long, env = "OASIS_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// A model to serve, a GGUF file or a Hugging Face checkpoint folder (repeatable; added to the catalog). `OASIS_MODELS` takes a
    /// comma-separated list.
    #[arg(
        long = "model",
        env = "OASIS_MODELS",
        value_name = "PATH",
        value_delimiter = ','
    )]
    pub models: Vec<PathBuf>,
    /// Compute threads per model [default: one per core].
    #[arg(long, env = "OASIS_THREADS", value_name = "N")]
    pub threads: Option<usize>,
    /// Context limit per sequence, in tokens [default: the model's, at most 8192].
    #[arg(long, env = "OASIS_MAX_CONTEXT", value_name = "N")]
    pub max_context: Option<usize>,
    /// Largest request body in bytes [default: 4 MiB].
    #[arg(long, env = "OASIS_MAX_BODY_BYTES", value_name = "N")]
    pub max_body_bytes: Option<usize>,
    /// Time limit for a non-streaming request, in seconds [default: 600].
    #[arg(long, env = "OASIS_REQUEST_TIMEOUT_S", value_name = "S")]
    pub request_timeout_s: Option<u64>,
    /// Time in-flight requests get to finish on SIGINT/SIGTERM, in seconds [default: 10].
    #[arg(long, env = "OASIS_SHUTDOWN_GRACE_S", value_name = "S")]
    pub shutdown_grace_s: Option<u64>,
    /// Requests that may wait per model before new ones get 429 [default: 256].
    #[arg(long, env = "OASIS_MAX_WAITING", value_name = "N")]
    pub max_waiting: Option<usize>,
    /// Tokens per engine step: decode tokens plus prompt chunks [default: the profile's,
    /// else 512].
    #[arg(long, env = "OASIS_MAX_BATCH_TOKENS", value_name = "N")]
    pub max_batch_tokens: Option<usize>,
    /// Sequences batched together per model [default: the profile's, else 32].
    #[arg(long, env = "OASIS_MAX_RUNNING", value_name = "N")]
    pub max_running: Option<usize>,
    /// Latency target of an engine step while sequences generate, in milliseconds: prompt
    /// chunks beside the decode tokens are sized to it from the measured step times (or
    /// to two or three times the decode tokens' own time, when many streams make that
    /// longer); 0 turns it off [default: 35].
    #[arg(long, env = "OASIS_MAX_STEP_MS", value_name = "MS")]
    pub max_step_ms: Option<u64>,
    /// First-token wait after which the step budget doubles for a prompt being read, and
    /// again for every further wait as long, up to four times the budget (or the decode
    /// tokens' time): prompts catch up under load; in milliseconds; 0: never [default:
    /// 2000].
    #[arg(long, env = "OASIS_TTFT_TARGET_MS", value_name = "MS")]
    pub ttft_target_ms: Option<u64>,
    /// Engine ranks per MoE model: attention data-parallel, routed experts spread over
    /// the ranks, tokens exchanged at each MoE layer [default: the profile's, else 1].
    #[arg(long, env = "OASIS_RANKS", value_name = "R")]
    pub ranks: Option<usize>,
    /// Milliseconds between GPU and host telemetry samples [default: 1000].
    #[arg(long, env = "OASIS_TELEMETRY_INTERVAL_MS", value_name = "MS")]
    pub telemetry_interval_ms: Option<u64>,
    /// Replay a recorded telemetry trace (JSON lines) instead of reading NVML.
    #[arg(long, env = "OASIS_TELEMETRY_REPLAY", value_name = "FILE")]
    pub telemetry_replay: Option<PathBuf>,
    /// A URL that gets every alert change as a JSON POST (repeatable; `OASIS_ALERT_WEBHOOKS`
    /// takes a comma-separated list).
    #[arg(
        long = "alert-webhook",
        env = "OASIS_ALERT_WEBHOOKS",
        value_name = "URL",
        value_delimiter = ','
    )]
    pub alert_webhooks: Vec<String>,
    /// Extra expert slots per MoE layer, replicas of hot experts [default: 0].
    #[arg(long, env = "OASIS_REDUNDANT_EXPERTS", value_name = "N")]
    pub redundant_experts: Option<usize>,
    /// Bytes for the running sequences' keys and values, per model [default: the CPU
    /// profile's share of available memory, else 2 GiB].
    #[arg(long, env = "OASIS_KV_CACHE_BYTES", value_name = "BYTES")]
    pub kv_cache_bytes: Option<usize>,
    /// Log format: text or json [default: text]. The level comes from `OASIS_LOG`
    /// (e.g. `info`, `debug`, `oasis=debug`).
    #[arg(long, env = "OASIS_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<String>,
    /// The firmware profile, an id or a `.toml` file [default: the one matching the box].
    #[arg(long, env = "OASIS_PROFILE", value_name = "ID|PATH")]
    pub profile: Option<String>,
    /// A folder of extra profiles (`*.toml`) next to the built-in ones.
    #[arg(long, env = "OASIS_PROFILES_DIR", value_name = "DIR")]
    pub profiles_dir: Option<PathBuf>,
    /// What a box that fails its profile's check does to the start: `warn` (serve anyway),
    /// `refuse` (do not start) or `apply` (set the profile's GPU settings, as root)
    /// [default: warn].
    #[arg(long, env = "OASIS_PROFILE_POLICY", value_name = "POLICY")]
    pub profile_policy: Option<String>,
    /// A recorded hardware inventory (JSON, from `oasis profile inventory --json`) used in
    /// place of reading the box (demos, tests).
    #[arg(long, env = "OASIS_INVENTORY", value_name = "FILE")]
    pub inventory: Option<PathBuf>,
    /// Bytes per second an import may read from its source, so copying a model from a USB
    /// disk does not starve the served models of I/O [default: 0, no limit].
    #[arg(long, env = "OASIS_IMPORT_MAX_BYTES_PER_S", value_name = "BYTES")]
    pub import_max_bytes_per_s: Option<u64>,
    /// TLS: `auto` (on unless the listen address is loopback), `on` or `off` [default: auto].
    #[arg(long, env = "OASIS_TLS", value_name = "MODE")]
    pub tls: Option<String>,
    /// The certificate to serve (PEM) [default: one the daemon makes on first start].
    #[arg(long, env = "OASIS_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(long, env = "OASIS_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Allow plain HTTP on a non-loopback address.
    #[arg(long, env = "OASIS_ALLOW_PLAIN_HTTP")]
    pub allow_plain_http: bool,
    /// The built web console served at `/` (a folder with index.html) [default: the one
    /// installed beside the binary, else the checkout's desktop-ui/dist].
    #[arg(long, env = "OASIS_CONSOLE_DIR", value_name = "DIR")]
    pub console_dir: Option<PathBuf>,
    /// Seconds a connection gets to send a whole request head; an idle keep-alive
    /// connection is closed after it too [default: 20].
    #[arg(long, env = "OASIS_HEADER_READ_TIMEOUT_S", value_name = "S")]
    pub header_read_timeout_s: Option<u64>,
    /// Seconds a request body may send nothing before it is answered 408 [default: 30].
    #[arg(long, env = "OASIS_IDLE_TIMEOUT_S", value_name = "S")]
    pub idle_timeout_s: Option<u64>,
    /// Open client connections at most; held below the open-file limit [default: 4096].
    #[arg(long, env = "OASIS_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,
    /// Where models run: `auto` (a GPU when a driver, the CUDA libraries and a GPU are
    /// there, else the CPU), `cpu`, `cuda` or `cuda:N` [default: auto].
    #[arg(long, env = "OASIS_DEVICE", value_name = "DEVICE")]
    pub device: Option<String>,
}

impl ServeArgs {
    /// The configuration these arguments (and the file they name) resolve to.
    pub fn resolve(&self) -> Result<ServeConfig> {
        let file = match &self.config {
            Some(path) => FileConfig::load(path)?,
            None => FileConfig::default(),
        };
        ServeConfig::resolve(
            file,
            Overrides {
                listen: self.listen.clone(),
                data_dir: self.data_dir.clone(),
                models: self.models.clone(),
                threads: self.threads,
                max_context: self.max_context,
                max_body_bytes: self.max_body_bytes,
                request_timeout_s: self.request_timeout_s,
                shutdown_grace_s: self.shutdown_grace_s,
                max_waiting: self.max_waiting,
                max_batch_tokens: self.max_batch_tokens,
                max_running: self.max_running,
                max_step_ms: self.max_step_ms,
                ttft_target_ms: self.ttft_target_ms,
                ranks: self.ranks,
                redundant_experts: self.redundant_experts,
                telemetry_interval_ms: self.telemetry_interval_ms,
                telemetry_replay: self.telemetry_replay.clone(),
                alert_webhooks: self.alert_webhooks.clone(),
                kv_cache_bytes: self.kv_cache_bytes,
                log_format: self.log_format.clone(),
                profile: self.profile.clone(),
                profiles_dir: self.profiles_dir.clone(),
                profile_policy: self.profile_policy.clone(),
                inventory: self.inventory.clone(),
                import_max_bytes_per_s: self.import_max_bytes_per_s,
                tls: self.tls.clone(),
                tls_cert: self.tls_cert.clone(),
                tls_key: self.tls_key.clone(),
                allow_plain_http: self.allow_plain_http.then_some(true),
                console_dir: self.console_dir.clone(),
                header_read_timeout_s: self.header_read_timeout_s,
                idle_timeout_s: self.idle_timeout_s,
                max_connections: self.max_connections,
                device: self.device.clone(),
            },
        )
    }
}

pub fn serve(args: &ServeArgs) -> Result<()> {
    let config = args.resolve()?;
    crate::logging::init(config.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("oasis-http")
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(crate::server::run(config))
}
