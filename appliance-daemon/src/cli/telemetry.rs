//! `oasis telemetry record`: records a trace from NVML (JSON lines of `TraceLine`: the
//! driver identity, then samples and events) that `oasis serve --telemetry-replay` plays
//! back and the tests use as a fixture.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};

use crate::telemetry::types::{GpuSource, TraceLine};

#[derive(Debug, Subcommand)]
pub enum TelemetryCommand {
    /// Record GPU samples and events from NVML into a trace file.
    Record(RecordArgs),
}

#[derive(Debug, Args)]
pub struct RecordArgs {
    /// The trace file to write (JSON lines).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Samples to take.
    #[arg(long, default_value_t = 60, value_name = "N")]
    pub samples: u32,
    /// Milliseconds between samples.
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    pub interval_ms: u64,
}

pub fn telemetry(cmd: &TelemetryCommand) -> Result<()> {
    match cmd {
        TelemetryCommand::Record(args) => record(args),
    }
}

fn record(args: &RecordArgs) -> Result<()> {
    if args.samples == 0 || args.interval_ms == 0 {
        bail!("--samples and --interval-ms must be at least 1");
    }
    let mut source = crate::telemetry::nvml::open()
        .map_err(|reason| anyhow::anyhow!("cannot record: {reason}"))?;
    let file = std::fs::File::create(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let mut out = std::io::BufWriter::new(file);
    let mut line = |l: &TraceLine| -> Result<()> {
        serde_json::to_writer(&mut out, l)?;
        out.write_all(b"\n")?;
        Ok(())
    };
    line(&TraceLine::Info {
        info: source.info(),
    })?;
    let mut next = Instant::now();
    for i in 0..args.samples {
        let gpus = source.sample();
        let ts_ms = crate::telemetry::now_ms();
        for event in source.events() {
            line(&TraceLine::Event { event })?;
        }
        line(&TraceLine::Sample { ts_ms, gpus })?;
        eprint!("\rrecorded {}/{} samples", i + 1, args.samples);
        next += Duration::from_millis(args.interval_ms);
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    out.flush()?;
    eprintln!("\nwrote {}", args.out.display());
    Ok(())
}
