//! `oasis gpu`: the GPUs this box can use (or why none), and the CUDA kernels compiled
//! ahead of time with nvcc for an architecture, with each kernel's registers, spills and
//! shared memory (CI runs this for Hopper, Ada and Ampere on a machine without a GPU and
//! fails on any spill).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use serde::Serialize;

#[derive(Debug, Subcommand)]
pub enum GpuCommand {
    /// The GPUs the engine can use, or why it cannot use any.
    Status(StatusArgs),
    /// Compile every CUDA kernel with nvcc for an architecture and report registers,
    /// spills and shared memory per kernel (exit 1 on a spill).
    Kernels(KernelsArgs),
    /// Measure this GPU's ceilings: device-to-device copy bandwidth and cuBLAS bf16 GEMM
    /// rate (what the benchmarks are read against).
    Ceilings(CeilingsArgs),
}

#[derive(Debug, Args)]
pub struct CeilingsArgs {
    /// The GPU [default: 0].
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub gpu: usize,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct KernelsArgs {
    /// Target architecture: sm_90a (Hopper), sm_89 (Ada), sm_80 (Ampere), ...
    #[arg(long, default_value = "sm_90a", value_name = "ARCH")]
    pub arch: String,
    /// nvcc to use [default: $OASIS_NVCC, nvcc on PATH, /usr/local/cuda/bin/nvcc, or the
    /// CUDA 13 wheels in the test venv].
    #[arg(long, value_name = "PATH")]
    pub nvcc: Option<PathBuf>,
    /// One JSON object per kernel.
    #[arg(long)]
    pub json: bool,
}

pub fn gpu(cmd: &GpuCommand) -> Result<()> {
    match cmd {
        GpuCommand::Status(a) => status(a),
        GpuCommand::Kernels(a) => kernels(a),
        GpuCommand::Ceilings(a) => ceilings(a),
    }
}

fn ceilings(a: &CeilingsArgs) -> Result<()> {
    let dev = kernels::cuda::CudaDevice::open(a.gpu, None)?;
    let c = dev.ceilings()?;
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "gpu": dev.info().describe(),
                "copy_bytes_per_s": c.copy_bytes_per_s,
                "gemm_bf16_flop_per_s": c.gemm_bf16_flop_per_s,
                "gemm_size": c.gemm_size,
            })
        );
    } else {
        println!(
            "{}: device-to-device copy {:.0} GB/s (read + write), bf16 GEMM {:.0} TFLOP/s ({n}x{n}x{n})",
            dev.info().describe(),
            c.copy_bytes_per_s / 1e9,
            c.gemm_bf16_flop_per_s / 1e12,
            n = c.gemm_size
        );
    }
    Ok(())
}

fn status(a: &StatusArgs) -> Result<()> {
    let probe = kernels::cuda::probe();
    if a.json {
        let doc = match &probe {
            Ok(gpus) => serde_json::json!({
                "available": true,
                "gpus": gpus.iter().map(|g| serde_json::json!({
                    "ordinal": g.ordinal, "name": g.name,
                    "compute_capability": format!("{}.{}", g.compute_capability.0, g.compute_capability.1),
                    "memory_total_bytes": g.memory_total_bytes, "memory_free_bytes": g.memory_free_bytes,
                    "driver_cuda": format!("{}.{}", g.driver_cuda.0, g.driver_cuda.1),
                })).collect::<Vec<_>>(),
            }),
            Err(e) => serde_json::json!({ "available": false, "reason": e.to_string() }),
        };
        println!("{doc}");
        return Ok(());
    }
    match probe {
        Ok(gpus) => {
            for g in gpus {
                println!(
                    "{} (driver CUDA {}.{}, {:.1} GB free)",
                    g.describe(),
                    g.driver_cuda.0,
                    g.driver_cuda.1,
                    g.memory_free_bytes as f64 / 1e9
                );
            }
            Ok(())
        }
        Err(e) => bail!("{e}"),
    }
}

/// One kernel as ptxas reports it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct KernelReport {
    pub name: String,
    pub arch: String,
    pub registers: u32,
    /// Spill stores plus spill loads.
    pub spill_bytes: u64,
    pub shared_bytes: u64,
    pub stack_bytes: u64,
}

/// Parses nvcc's `-Xptxas -v` output into one report per kernel.
pub fn parse_ptxas(text: &str, arch: &str) -> Vec<KernelReport> {
    let num_before = |line: &str, unit: &str| -> u64 {
        line.split(',')
            .find(|p| p.trim().ends_with(unit))
            .and_then(|p| p.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    let mut out: Vec<KernelReport> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            let name = rest.split('\'').next().unwrap_or("").to_string();
            out.push(KernelReport {
                name,
                arch: arch.to_string(),
                ..KernelReport::default()
            });
            continue;
        }
        let Some(k) = out.last_mut() else { continue };
        if line.contains("bytes spill stores") {
            k.stack_bytes = num_before(line, "bytes stack frame");
            k.spill_bytes =
                num_before(line, "bytes spill stores") + num_before(line, "bytes spill loads");
        } else if let Some(rest) = line.split("Used ").nth(1) {
            k.registers = rest
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            k.shared_bytes = num_before(line, "bytes smem");
        }
    }
    out
}

/// The nvcc to use, if one is found.
pub fn find_nvcc(given: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = given {
        return Some(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os("OASIS_NVCC").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("nvcc"))
        .find(|p| p.is_file());
    if on_path.is_some() {
        return on_path;
    }
    let cuda = PathBuf::from("/usr/local/cuda/bin/nvcc");
    if cuda.is_file() {
        return Some(cuda);
    }
    // The CUDA 13 wheels scripts/setup-host puts in the test venv.
    let venv = std::env::var_os("OASIS_PYENV")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/oasis/pyenv"))
        })?;
    let lib = venv.join("lib");
    std::fs::read_dir(&lib)
        .ok()?
        .flatten()
        .map(|e| e.path().join("site-packages/nvidia/cu13/bin/nvcc"))
        .find(|p| p.is_file())
}

/// Compiles the kernels for `arch` with `nvcc` and returns ptxas's report.
pub fn compile_report(nvcc: &Path, arch: &str) -> Result<Vec<KernelReport>> {
    let dir = tempfile::tempdir().context("cannot make a temporary folder")?;
    let src = dir.path().join("oasis_kernels.cu");
    std::fs::write(&src, kernels::cuda::source::program())?;
    let out = Command::new(nvcc)
        .arg("-cubin")
        .arg(format!("-arch={arch}"))
        .args(["-std=c++17", "-Xptxas", "-v", "-o"])
        .arg(dir.path().join("oasis_kernels.cubin"))
        .arg(&src)
        .output()
        .with_context(|| format!("cannot run {}", nvcc.display()))?;
    let text = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!("nvcc failed for {arch}:\n{text}");
    }
    let reports = parse_ptxas(&text, arch);
    let want = kernels::cuda::source::kernel_names();
    for name in &want {
        if !reports.iter().any(|r| &r.name == name) {
            bail!("nvcc reported nothing for kernel `{name}` ({arch})");
        }
    }
    Ok(reports)
}

fn kernels(a: &KernelsArgs) -> Result<()> {
    let Some(nvcc) = find_nvcc(a.nvcc.as_deref()) else {
        bail!(
            "nvcc not found: pass --nvcc, set OASIS_NVCC, or install the CUDA 13 compiler wheels (scripts/setup-host does)"
        );
    };
    let reports = compile_report(&nvcc, &a.arch)?;
    let mut out = std::io::stdout().lock();
    for r in &reports {
        // A closed pipe (`| head`) ends the listing, not the process with a panic.
        let written = if a.json {
            writeln!(out, "{}", serde_json::to_string(r)?)
        } else {
            writeln!(
                out,
                "{:<24} {:>4} registers  {:>6} bytes spilled  {:>6} bytes shared  {:>4} bytes stack",
                r.name, r.registers, r.spill_bytes, r.shared_bytes, r.stack_bytes
            )
        };
        if written.is_err() {
            break;
        }
    }
    let spilled: Vec<&str> = reports
        .iter()
        .filter(|r| r.spill_bytes > 0)
        .map(|r| r.name.as_str())
        .collect();
    if !spilled.is_empty() {
        bail!("register spills in {} for {}", spilled.join(", "), a.arch);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ptxas_output_parses_per_kernel() {
        let text = "ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function 'gemv_q4_k' for 'sm_90a'
ptxas info    : Function properties for gemv_q4_k
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 72 registers, used 0 barriers
ptxas info    : Compiling entry function 'attention' for 'sm_90a'
ptxas info    : Function properties for attention
    16 bytes stack frame, 8 bytes spill stores, 12 bytes spill loads
ptxas info    : Used 40 registers, used 1 barriers, 3088 bytes smem, 400 bytes cmem[0]
";
        let r = parse_ptxas(text, "sm_90a");
        assert_eq!(r.len(), 2);
        assert_eq!(
            (r[0].name.as_str(), r[0].registers, r[0].spill_bytes),
            ("gemv_q4_k", 72, 0)
        );
        assert_eq!(
            (
                r[1].registers,
                r[1].spill_bytes,
                r[1].shared_bytes,
                r[1].stack_bytes
            ),
            (40, 20, 3088, 16)
        );
    }
}
