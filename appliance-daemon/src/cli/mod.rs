//! The `oasis` command line: one subcommand per module.

mod bench;
mod client;
mod eplb;
mod fit;
pub mod gpu;
mod keys;
mod models;
mod profile;
mod run;
mod serve;
mod status;
mod system;
mod telemetry;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

/// Oasis: an on-prem AI appliance.
#[derive(Debug, Parser)]
#[command(name = "oasis", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate a completion for one prompt and stream it to stdout.
    Run(run::RunArgs),
    /// Measure prefill and decode speed (tokens per second, median of several runs).
    Bench(bench::BenchArgs),
    /// Run the daemon: the OpenAI-compatible API over the configured models.
    Serve(Box<serve::ServeArgs>),
    /// Show a running daemon's state.
    Status(status::StatusArgs),
    /// Models of a running daemon: import, list, show, delete.
    #[command(subcommand)]
    Model(status::ModelCommand),
    /// Serve a catalog model under a name (an existing name swaps models without dropping
    /// a request).
    Deploy(models::DeployArgs),
    /// Stop serving a deployment (the model stays in the catalog).
    Undeploy(models::UndeployArgs),
    /// API keys: create (shown once), list, revoke.
    #[command(subcommand)]
    Key(keys::KeyCommand),
    /// A new one-time pairing code for the admin's desktop app (with the TLS fingerprint
    /// to pin).
    PairCode(status::StatusArgs),
    /// Tokens and requests by key, model or day.
    Usage(keys::UsageArgs),
    /// The audit log: verify its hash chain, list its newest entries.
    #[command(subcommand)]
    Audit(keys::AuditCommand),
    /// Long-running work of a daemon (imports): list, follow, cancel.
    #[command(subcommand)]
    Job(models::JobCommand),
    /// Plan MoE expert replicas over GPUs with DeepSeek's load balancer (EPLB).
    Eplb(eplb::EplbArgs),
    /// GPU telemetry tools.
    #[command(subcommand)]
    Telemetry(telemetry::TelemetryCommand),
    /// Firmware profiles: which one fits this box, its compliance check, its settings.
    #[command(subcommand)]
    Profile(profile::ProfileCommand),
    /// GPUs: which ones the engine can use; the CUDA kernels compiled for an architecture.
    #[command(subcommand)]
    Gpu(gpu::GpuCommand),
    /// The installed system: its A/B slots, signed updates, and the boot-time helpers.
    #[command(subcommand)]
    System(system::SystemCommand),
}

/// Options shared by the commands that load a model.
#[derive(Debug, Args)]
pub struct ModelArgs {
    /// The model: a GGUF file or a Hugging Face checkpoint folder [default: the default model
    /// in the data directory].
    #[arg(long, value_name = "PATH")]
    pub model: Option<PathBuf>,
    /// Compute threads [default: one per core].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: Option<u16>,
    /// Where the model runs: `auto` (a GPU when one can be used, else the CPU), `cpu`,
    /// `cuda` or `cuda:N` [default: auto].
    #[arg(
        long,
        env = "OASIS_DEVICE",
        value_name = "DEVICE",
        default_value = "auto"
    )]
    pub device: engine::device::DeviceChoice,
}

impl ModelArgs {
    /// Loads the model: `--model`, else the default model of the data directory.
    pub fn load(&self) -> Result<engine::Model> {
        let path = match &self.model {
            Some(p) => p.clone(),
            None => {
                let p = crate::paths::default_model_path();
                if !p.exists() {
                    anyhow::bail!(
                        "no --model given and the default model is not at {}; fetch it with scripts/fetch-model",
                        p.display()
                    );
                }
                p
            }
        };
        engine::Model::load(&path).context("cannot load model")
    }

    /// Compute threads: `--threads`, else one per core.
    pub fn threads(&self) -> usize {
        self.threads
            .map_or_else(engine::generate::default_threads, usize::from)
    }

    /// Where `model` runs: the device asked for (a missing GPU behind `cuda` is an error
    /// naming what is missing), the CPU for what the GPU cannot run yet; the choice and the
    /// reason go to stderr.
    pub fn device_for(&self, model: &engine::Model) -> Result<engine::device::DeviceSpec> {
        let cache = Some(crate::paths::data_dir().join("cache").join("kernels"));
        let sel = engine::device::select(self.device, cache)?;
        let (spec, fallback) = sel.spec.for_model(model);
        match fallback {
            Some(why) => eprintln!("oasis: device cpu ({why})"),
            None if self.device == engine::device::DeviceChoice::Auto && spec.is_cuda() => {
                eprintln!("oasis: device {} ({})", spec.describe(), sel.why);
            }
            None => {}
        }
        Ok(spec)
    }

    /// Loads the model and starts an engine for it.
    pub fn engine(&self, max_context: Option<usize>) -> Result<engine::Engine> {
        let model = self.load()?;
        let device = self.device_for(&model)?;
        Ok(engine::Engine::new(
            model,
            &engine::EngineOptions {
                threads: self.threads(),
                max_context,
                device,
            },
        )?)
    }
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Run(args) => run::run(&args),
        Command::Bench(args) => bench::bench(&args),
        Command::Serve(args) => serve::serve(&args),
        Command::Status(args) => status::status(&args),
        Command::Model(cmd) => status::model(&cmd),
        Command::Deploy(args) => models::deploy(&args),
        Command::Undeploy(args) => models::undeploy(&args),
        Command::Job(cmd) => models::job(&cmd),
        Command::Key(cmd) => keys::key(&cmd),
        Command::Usage(args) => keys::usage(&args),
        Command::PairCode(args) => keys::pair_code(&args),
        Command::Audit(cmd) => keys::audit(&cmd),
        Command::Eplb(args) => eplb::eplb(&args),
        Command::Telemetry(cmd) => telemetry::telemetry(&cmd),
        Command::Profile(cmd) => profile::profile(&cmd),
        Command::Gpu(cmd) => gpu::gpu(&cmd),
        Command::System(cmd) => system::system(&cmd),
    }
}
