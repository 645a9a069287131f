//! Where a model runs: the CPU, or a GPU through the `kernels` CUDA backend.
//!
//! [`select`] turns what was asked (`auto`, `cpu`, `cuda[:N]`) into a [`DeviceSpec`] and
//! says why: `auto` takes the first GPU when a driver, the CUDA libraries and a GPU are
//! there, and the CPU otherwise; `cuda` without them is an error naming what is missing.
//! [`DeviceSpec::for_model`] then keeps on the CPU what the GPU kernels do not run yet
//! (mixture-of-experts checkpoints, weight types without a GPU kernel).

use std::path::PathBuf;

use kernels::cuda::DeviceInfo;

use crate::error::{EngineError, Result};
use crate::model::Model;

/// What was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// A GPU when one can be used, else the CPU.
    #[default]
    Auto,
    Cpu,
    /// GPU `N` (`cuda` alone is GPU 0).
    Cuda(usize),
}

impl std::str::FromStr for DeviceChoice {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim() {
            "auto" => Ok(DeviceChoice::Auto),
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" | "gpu" => Ok(DeviceChoice::Cuda(0)),
            other => other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(DeviceChoice::Cuda)
                .ok_or_else(|| {
                    format!("the device must be auto, cpu, cuda or cuda:N, got `{other}`")
                }),
        }
    }
}

impl std::fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceChoice::Auto => f.write_str("auto"),
            DeviceChoice::Cpu => f.write_str("cpu"),
            DeviceChoice::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// Where a model's engine runs, once decided.
#[derive(Debug, Clone, PartialEq)]
pub enum DeviceSpec {
    Cpu,
    Cuda {
        info: DeviceInfo,
        /// Where compiled kernels are cached (per architecture), when there is a data
        /// directory.
        kernel_cache: Option<PathBuf>,
    },
}

impl DeviceSpec {
    /// `cpu` or `cuda:0`.
    pub fn name(&self) -> String {
        match self {
            DeviceSpec::Cpu => "cpu".into(),
            DeviceSpec::Cuda { info, .. } => format!("cuda:{}", info.ordinal),
        }
    }

    /// `cpu`, or the GPU with its name, architecture and memory.
    pub fn describe(&self) -> String {
        match self {
            DeviceSpec::Cpu => "cpu".into(),
            DeviceSpec::Cuda { info, .. } => info.describe(),
        }
    }

    pub fn is_cuda(&self) -> bool {
        matches!(self, DeviceSpec::Cuda { .. })
    }

    /// This device for `model`, or the CPU with the reason when the GPU kernels cannot run
    /// it yet.
    pub fn for_model(&self, model: &Model) -> (DeviceSpec, Option<String>) {
        if !self.is_cuda() {
            return (self.clone(), None);
        }
        match gpu_obstacle(model) {
            Some(why) => (DeviceSpec::Cpu, Some(why)),
            None => (self.clone(), None),
        }
    }
}

/// Why the GPU kernels cannot run `model` yet, if they cannot.
pub fn gpu_obstacle(model: &Model) -> Option<String> {
    if model.hf().is_some() {
        return Some(
            "mixture-of-experts checkpoints run on the CPU until the GPU expert-parallel path lands"
                .into(),
        );
    }
    let (_, weights) = model.gguf()?;
    for m in weights.matrices() {
        if kernels::cuda::type_suffix(m.ty).is_none() {
            return Some(format!(
                "tensor `{}` is {}, which the GPU kernels do not read",
                m.name,
                m.ty.name()
            ));
        }
    }
    None
}

/// The decided device and why.
#[derive(Debug, Clone)]
pub struct Selection {
    pub spec: DeviceSpec,
    /// `found NVIDIA H200 ...`, `asked for`, or why there is no GPU.
    pub why: String,
}

/// Decides where models run. `probe` lists the usable GPUs or says why there is none
/// (`kernels::cuda::probe`; a parameter so the decision is testable without a GPU).
pub fn select_with(
    choice: DeviceChoice,
    kernel_cache: Option<PathBuf>,
    probe: impl FnOnce() -> std::result::Result<Vec<DeviceInfo>, kernels::KernelError>,
) -> Result<Selection> {
    match choice {
        DeviceChoice::Cpu => Ok(Selection {
            spec: DeviceSpec::Cpu,
            why: "asked for the CPU".into(),
        }),
        DeviceChoice::Auto => match probe() {
            Ok(gpus) if !gpus.is_empty() => {
                let info = gpus[0].clone();
                Ok(Selection {
                    why: format!("found {}", info.describe()),
                    spec: DeviceSpec::Cuda { info, kernel_cache },
                })
            }
            Ok(_) => Ok(Selection {
                spec: DeviceSpec::Cpu,
                why: "no GPU found".into(),
            }),
            Err(e) => Ok(Selection {
                spec: DeviceSpec::Cpu,
                why: e.to_string(),
            }),
        },
        DeviceChoice::Cuda(n) => {
            let gpus = probe().map_err(|e| EngineError::Device(e.to_string()))?;
            let info = gpus
                .into_iter()
                .find(|g| g.ordinal == n)
                .ok_or_else(|| EngineError::Device(format!("there is no GPU {n}")))?;
            Ok(Selection {
                why: format!("asked for {}", info.describe()),
                spec: DeviceSpec::Cuda { info, kernel_cache },
            })
        }
    }
}

/// [`select_with`] over the GPUs this machine has.
pub fn select(choice: DeviceChoice, kernel_cache: Option<PathBuf>) -> Result<Selection> {
    select_with(choice, kernel_cache, kernels::cuda::probe)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h200() -> DeviceInfo {
        DeviceInfo {
            ordinal: 0,
            name: "NVIDIA H200".into(),
            compute_capability: (9, 0),
            memory_total_bytes: 150_000_000_000,
            memory_free_bytes: 149_000_000_000,
            driver_cuda: (13, 0),
        }
    }

    #[test]
    fn choices_parse_and_auto_falls_back_with_the_reason() {
        assert_eq!("auto".parse(), Ok(DeviceChoice::Auto));
        assert_eq!("cuda".parse(), Ok(DeviceChoice::Cuda(0)));
        assert_eq!("cuda:3".parse(), Ok(DeviceChoice::Cuda(3)));
        assert!(
            "tpu"
                .parse::<DeviceChoice>()
                .is_err_and(|e| e.contains("auto, cpu, cuda"))
        );
        let none = || {
            Err(kernels::KernelError::Unavailable(
                "no NVIDIA driver (libcuda.so.1 not found)".into(),
            ))
        };
        let s = select_with(DeviceChoice::Auto, None, none).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.spec, DeviceSpec::Cpu);
        assert!(s.why.contains("libcuda.so.1"), "{}", s.why);
        let e = select_with(DeviceChoice::Cuda(0), None, none)
            .err()
            .map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("libcuda.so.1")));
        let one = || Ok(vec![h200()]);
        let s = select_with(DeviceChoice::Auto, None, one).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.spec.name(), "cuda:0");
        assert!(s.why.contains("NVIDIA H200 (sm_90"), "{}", s.why);
        let e = select_with(DeviceChoice::Cuda(1), None, one)
            .err()
            .map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("no GPU 1")));
        let s = select_with(DeviceChoice::Cpu, None, one).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.spec, DeviceSpec::Cpu);
    }
}
