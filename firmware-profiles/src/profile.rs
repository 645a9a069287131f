//! The profile schema (`oasis.profile/v1`), its parser and its validation.
//!
//! A profile is a TOML file. Parsing is strict: an unknown key, a wrong type or a value out
//! of range is an error that names the file, the line and the field. A profile is checked
//! as a whole before anything uses it ([`Profile::parse`] returns only valid profiles), so
//! matching, compliance and the engine plan never re-check raw values.

use serde::{Deserialize, Serialize};

use crate::version::Version;
use crate::{Error, ProfileError};

/// The one schema this build reads.
pub const SCHEMA_V1: &str = "oasis.profile/v1";

/// A validated hardware profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Always [`SCHEMA_V1`].
    pub schema: String,
    /// Short stable name (`hgx-h200-8`): what `--profile` and the API use.
    pub id: String,
    /// What a person calls the box.
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Which boxes this profile is for.
    #[serde(rename = "match")]
    pub matching: Match,
    #[serde(default)]
    pub software: Software,
    /// GPU settings to enforce; each absent one is left alone.
    #[serde(default)]
    pub gpu: GpuSettings,
    #[serde(default)]
    pub topology: Topology,
    #[serde(default)]
    pub host: HostRequirements,
    #[serde(default)]
    pub health: Health,
    pub engine: EnginePlanSpec,
}

/// The box a profile describes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Match {
    /// GPUs the box has; 0 for a CPU-only box.
    pub gpu_count: u32,
    /// PCI device ids the GPUs may have (`0x2335`), any of them; empty for a CPU-only box.
    #[serde(default)]
    pub pci_device_ids: Vec<String>,
    /// Smallest memory per GPU, in MiB as NVML reports it.
    #[serde(default)]
    pub min_gpu_memory_mib: Option<u64>,
    /// Whether the GPUs sit on NVSwitches (HGX boards); absent: either.
    #[serde(default)]
    pub nvswitch: Option<bool>,
}

/// Driver and firmware the box must run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Software {
    /// Lowest NVIDIA driver version (`550.54.14`).
    pub min_driver: Option<String>,
    /// Lowest CUDA version the driver supports (`12.4`).
    pub min_cuda_driver: Option<String>,
    /// VBIOS versions qualified for the box (`96.00.*`; `*` and `?` wildcards), any of them.
    #[serde(default)]
    pub vbios: Vec<String>,
    /// Whether NVIDIA's fabric manager must run (NVSwitch systems need it for NVLink).
    pub fabric_manager: Option<bool>,
}

/// Per-GPU settings; absent means leave alone.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpuSettings {
    pub persistence: Option<bool>,
    /// ECC on or off (a change takes effect at the next reboot).
    pub ecc: Option<bool>,
    pub compute_mode: Option<ComputeMode>,
    /// MIG on or off (a change takes effect at the next GPU reset or reboot).
    pub mig: Option<bool>,
    pub power_limit_w: Option<u32>,
    /// Graphics clocks locked to `[min, max]` MHz.
    pub locked_clocks_mhz: Option<[u32; 2]>,
}

/// NVML's compute modes (exclusive-thread is gone from current drivers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ComputeMode {
    Default,
    ExclusiveProcess,
    Prohibited,
}

impl ComputeMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ComputeMode::Default => "default",
            ComputeMode::ExclusiveProcess => "exclusive_process",
            ComputeMode::Prohibited => "prohibited",
        }
    }
}

/// How the GPUs reach each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum P2p {
    /// No peer-to-peer access: transfers go through host memory.
    None,
    Pcie,
    Nvlink,
}

impl P2p {
    pub fn as_str(self) -> &'static str {
        match self {
            P2p::None => "none",
            P2p::Pcie => "pcie",
            P2p::Nvlink => "nvlink",
        }
    }
}

/// The interconnect the engine counts on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    /// The weakest path between any two GPUs.
    pub p2p: Option<P2p>,
    /// NVLink links active on every GPU.
    pub nvlink_links_per_gpu: Option<u32>,
}

/// What the host itself must have.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostRequirements {
    pub min_memory_gib: Option<u64>,
    /// Logical CPUs.
    pub min_cpu_cores: Option<u32>,
    /// CPU features the kernels want (`avx2`, `fma`, `f16c`); missing ones warn.
    #[serde(default)]
    pub cpu_features: Vec<String>,
}

/// Health thresholds: compliance checks and alert rules.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Health {
    /// GPU temperature above which an alert fires and the compliance check warns.
    pub gpu_temp_max_c: Option<f64>,
    /// HBM temperature, likewise.
    pub mem_temp_max_c: Option<f64>,
    #[serde(default)]
    pub alerts: AlertOverrides,
}

/// Overrides of the daemon's alert rules; absent ones keep the daemon's defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertOverrides {
    /// Samples in a row with power or thermal throttling before it alerts.
    pub throttle_samples: Option<u32>,
    /// Free space below this fraction of a disk.
    pub disk_free_ratio: Option<f64>,
    /// Available memory below this fraction of the host's.
    pub mem_available_ratio: Option<f64>,
    /// XIDs that raise a critical alert.
    pub critical_xids: Option<Vec<u64>>,
    /// Samples without a new XID before its alert resolves.
    pub xid_hold_samples: Option<u64>,
}

/// Precision the box's models should ship in (what fits and runs best on it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WeightPrecision {
    /// Whatever the checkpoint ships.
    Native,
    Bf16,
    Fp8,
    Q8_0,
    Q4K,
    Q4_1,
}

impl WeightPrecision {
    pub fn as_str(self) -> &'static str {
        match self {
            WeightPrecision::Native => "native",
            WeightPrecision::Bf16 => "bf16",
            WeightPrecision::Fp8 => "fp8",
            WeightPrecision::Q8_0 => "q8_0",
            WeightPrecision::Q4K => "q4_k",
            WeightPrecision::Q4_1 => "q4_1",
        }
    }
}

/// How the engine should use the box.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnginePlanSpec {
    /// Engine ranks: attention data-parallel, routed experts spread over all of them (the
    /// EP size). One per GPU on a GPU box.
    pub ranks: u32,
    /// Fraction of the memory left after the weights that the KV cache takes.
    pub kv_cache_fraction: f64,
    /// Tokens per engine step.
    pub max_batch_tokens: u32,
    /// Sequences in a batch at once.
    pub max_running: u32,
    pub weight_precision: WeightPrecision,
}

/// CPU features a profile may ask for.
const KNOWN_CPU_FEATURES: [&str; 6] = ["avx2", "fma", "f16c", "avx512f", "avx512vnni", "neon"];

impl Profile {
    /// Parses and validates `text`; `origin` names the file in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Profile, Error> {
        let de = toml::de::Deserializer::parse(text).map_err(|e| toml_error(text, origin, &e))?;
        let profile: Profile = serde_path_to_error::deserialize(de).map_err(|e| {
            let field = e.path().to_string();
            let inner = e.into_inner();
            let mut err = toml_error(text, origin, &inner);
            if let Error::Profile { errors, .. } = &mut err
                && let Some(first) = errors.first_mut()
                && field != "."
                && first.field.is_empty()
            {
                first.field = field;
            }
            err
        })?;
        let problems = profile.problems();
        if problems.is_empty() {
            return Ok(profile);
        }
        let errors = problems
            .into_iter()
            .map(|(field, message)| ProfileError {
                line: line_of_field(text, &field),
                field,
                message,
            })
            .collect();
        Err(Error::Profile {
            origin: origin.to_string(),
            errors,
        })
    }

    /// Every rule the profile breaks, as (field path, message).
    fn problems(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        let mut bad = |field: &str, message: String| out.push((field.to_string(), message));
        if self.schema != SCHEMA_V1 {
            bad(
                "schema",
                format!(
                    "unsupported schema `{}`; this build reads `{SCHEMA_V1}`",
                    self.schema
                ),
            );
        }
        if self.id.is_empty()
            || self.id.len() > 64
            || !self
                .id
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            bad(
                "id",
                format!(
                    "`{}` must be 1 to 64 characters of a-z, 0-9 and `-`",
                    self.id
                ),
            );
        }
        if self.name.trim().is_empty() {
            bad("name", "must not be empty".into());
        }
        let m = &self.matching;
        let gpus = m.gpu_count;
        if gpus > 64 {
            bad(
                "match.gpu_count",
                format!("must be between 0 and 64, got {gpus}"),
            );
        }
        for id in &m.pci_device_ids {
            if parse_pci_id(id).is_none() {
                bad(
                    "match.pci_device_ids",
                    format!("`{id}` is not a PCI device id such as `0x2335`"),
                );
            }
        }
        if let Some(mib) = m.min_gpu_memory_mib
            && !(1..=1 << 24).contains(&mib)
        {
            bad(
                "match.min_gpu_memory_mib",
                format!("must be between 1 and 16777216, got {mib}"),
            );
        }
        if gpus == 0 {
            // A CPU-only profile cannot ask anything of GPUs.
            let gpu_fields: [(&str, bool); 12] = [
                ("match.pci_device_ids", !m.pci_device_ids.is_empty()),
                ("match.min_gpu_memory_mib", m.min_gpu_memory_mib.is_some()),
                ("match.nvswitch", m.nvswitch == Some(true)),
                ("software.min_driver", self.software.min_driver.is_some()),
                (
                    "software.min_cuda_driver",
                    self.software.min_cuda_driver.is_some(),
                ),
                ("software.vbios", !self.software.vbios.is_empty()),
                (
                    "software.fabric_manager",
                    self.software.fabric_manager == Some(true),
                ),
                ("gpu", self.gpu != GpuSettings::default()),
                ("topology.p2p", self.topology.p2p.is_some()),
                (
                    "topology.nvlink_links_per_gpu",
                    self.topology.nvlink_links_per_gpu.is_some(),
                ),
                (
                    "health.gpu_temp_max_c",
                    self.health.gpu_temp_max_c.is_some(),
                ),
                (
                    "health.mem_temp_max_c",
                    self.health.mem_temp_max_c.is_some(),
                ),
            ];
            for (field, set) in gpu_fields {
                if set {
                    bad(
                        field,
                        "set on a CPU-only profile (`match.gpu_count = 0`)".into(),
                    );
                }
            }
        } else if m.pci_device_ids.is_empty() {
            bad(
                "match.pci_device_ids",
                "a GPU profile must name the GPUs' PCI device ids".into(),
            );
        }
        for (field, v) in [
            ("software.min_driver", &self.software.min_driver),
            ("software.min_cuda_driver", &self.software.min_cuda_driver),
        ] {
            if let Some(v) = v
                && Version::parse(v).is_none()
            {
                bad(
                    field,
                    format!("`{v}` is not a dotted version such as `550.54.14`"),
                );
            }
        }
        for p in &self.software.vbios {
            if p.is_empty()
                || !p
                    .chars()
                    .all(|c| c.is_ascii_hexdigit() || matches!(c, '.' | '*' | '?'))
            {
                bad(
                    "software.vbios",
                    format!("`{p}` is not a VBIOS pattern such as `96.00.*`"),
                );
            }
        }
        let g = &self.gpu;
        if let Some(w) = g.power_limit_w
            && !(50..=1500).contains(&w)
        {
            bad(
                "gpu.power_limit_w",
                format!("must be between 50 and 1500 W, got {w}"),
            );
        }
        if let Some([lo, hi]) = g.locked_clocks_mhz
            && (lo > hi || !(100..=5000).contains(&lo) || !(100..=5000).contains(&hi))
        {
            bad(
                "gpu.locked_clocks_mhz",
                format!(
                    "must be [min, max] within 100..=5000 MHz with min <= max, got [{lo}, {hi}]"
                ),
            );
        }
        if g.mig == Some(true) {
            bad(
                "gpu.mig",
                "the engine needs whole GPUs; a profile cannot turn MIG on".into(),
            );
        }
        let t = &self.topology;
        if let Some(n) = t.nvlink_links_per_gpu {
            if !(1..=18).contains(&n) {
                bad(
                    "topology.nvlink_links_per_gpu",
                    format!("must be between 1 and 18, got {n}"),
                );
            }
            if t.p2p != Some(P2p::Nvlink) {
                bad(
                    "topology.nvlink_links_per_gpu",
                    "set, but `topology.p2p` is not `nvlink`".into(),
                );
            }
        }
        if t.p2p.is_some() && gpus == 1 {
            bad(
                "topology.p2p",
                "a single-GPU box has no peer to reach".into(),
            );
        }
        if m.nvswitch == Some(true) && t.p2p.is_some_and(|p| p != P2p::Nvlink) {
            bad(
                "topology.p2p",
                "NVSwitch boxes connect their GPUs with NVLink".into(),
            );
        }
        let h = &self.host;
        if let Some(gib) = h.min_memory_gib
            && !(1..=65_536).contains(&gib)
        {
            bad(
                "host.min_memory_gib",
                format!("must be between 1 and 65536, got {gib}"),
            );
        }
        if let Some(c) = h.min_cpu_cores
            && !(1..=4096).contains(&c)
        {
            bad(
                "host.min_cpu_cores",
                format!("must be between 1 and 4096, got {c}"),
            );
        }
        for f in &h.cpu_features {
            if !KNOWN_CPU_FEATURES.contains(&f.as_str()) {
                bad(
                    "host.cpu_features",
                    format!(
                        "unknown CPU feature `{f}`; known: {}",
                        KNOWN_CPU_FEATURES.join(", ")
                    ),
                );
            }
        }
        for (field, v) in [
            ("health.gpu_temp_max_c", self.health.gpu_temp_max_c),
            ("health.mem_temp_max_c", self.health.mem_temp_max_c),
        ] {
            if let Some(c) = v
                && !(30.0..=120.0).contains(&c)
            {
                bad(field, format!("must be between 30 and 120 °C, got {c}"));
            }
        }
        let a = &self.health.alerts;
        if let Some(n) = a.throttle_samples
            && !(1..=86_400).contains(&n)
        {
            bad(
                "health.alerts.throttle_samples",
                format!("must be between 1 and 86400, got {n}"),
            );
        }
        for (field, v) in [
            ("health.alerts.disk_free_ratio", a.disk_free_ratio),
            ("health.alerts.mem_available_ratio", a.mem_available_ratio),
        ] {
            if let Some(r) = v
                && !(0.0..=0.9).contains(&r)
            {
                bad(field, format!("must be between 0 and 0.9, got {r}"));
            }
        }
        if let Some(n) = a.xid_hold_samples
            && !(1..=86_400).contains(&n)
        {
            bad(
                "health.alerts.xid_hold_samples",
                format!("must be between 1 and 86400, got {n}"),
            );
        }
        let e = &self.engine;
        if !(1..=64).contains(&e.ranks) {
            bad(
                "engine.ranks",
                format!("must be between 1 and 64, got {}", e.ranks),
            );
        } else if gpus > 0 && e.ranks > gpus {
            bad(
                "engine.ranks",
                format!(
                    "{} ranks but the box has {gpus} GPUs (one rank per GPU at most)",
                    e.ranks
                ),
            );
        }
        if !(e.kv_cache_fraction > 0.0 && e.kv_cache_fraction <= 0.95) {
            bad(
                "engine.kv_cache_fraction",
                format!(
                    "must be above 0 and at most 0.95, got {}",
                    e.kv_cache_fraction
                ),
            );
        }
        if !(1..=65_536).contains(&e.max_batch_tokens) {
            bad(
                "engine.max_batch_tokens",
                format!("must be between 1 and 65536, got {}", e.max_batch_tokens),
            );
        }
        if !(1..=4096).contains(&e.max_running) {
            bad(
                "engine.max_running",
                format!("must be between 1 and 4096, got {}", e.max_running),
            );
        }
        out
    }

    /// Whether the profile is for a box without GPUs.
    pub fn cpu_only(&self) -> bool {
        self.matching.gpu_count == 0
    }

    /// The PCI device ids as numbers (validated at parse).
    pub fn device_ids(&self) -> Vec<u16> {
        self.matching
            .pci_device_ids
            .iter()
            .filter_map(|s| parse_pci_id(s))
            .collect()
    }
}

/// `0x2335` (any case, the `0x` optional) as a number.
pub fn parse_pci_id(s: &str) -> Option<u16> {
    let hex = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    if hex.len() != 4 {
        return None;
    }
    u16::from_str_radix(hex, 16).ok()
}

/// A TOML or type error as one line-numbered error.
fn toml_error(text: &str, origin: &str, e: &toml::de::Error) -> Error {
    let line = e.span().map(|s| line_at(text, s.start));
    Error::Profile {
        origin: origin.to_string(),
        errors: vec![ProfileError {
            line,
            field: String::new(),
            message: e.message().trim().to_string(),
        }],
    }
}

/// 1-based line of byte offset `at`.
fn line_at(text: &str, at: usize) -> usize {
    text.get(..at.min(text.len()))
        .map_or(1, |s| s.matches('\n').count() + 1)
}

/// The line where `field` (`gpu.power_limit_w`) is set: the key's line inside its table,
/// else the table's header, else `None` (the field is absent: the rule is about the file).
fn line_of_field(text: &str, field: &str) -> Option<usize> {
    let (table, key) = match field.rsplit_once('.') {
        Some((t, k)) => (t, k),
        None => ("", field),
    };
    let mut current = String::new();
    let mut header_line = None;
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if let Some(h) = line.strip_prefix('[') {
            current = h.trim_end_matches(']').trim().to_string();
            if current == field {
                return Some(n + 1);
            }
            if current == table {
                header_line = Some(n + 1);
            }
            continue;
        }
        if current == table
            && let Some((k, _)) = line.split_once('=')
            && k.trim() == key
        {
            return Some(n + 1);
        }
    }
    header_line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pci_ids_parse_with_or_without_prefix() {
        assert_eq!(parse_pci_id("0x2335"), Some(0x2335));
        assert_eq!(parse_pci_id("26B9"), Some(0x26b9));
        assert_eq!(parse_pci_id("0x233"), None);
        assert_eq!(parse_pci_id("0xZZZZ"), None);
    }

    #[test]
    fn field_lines_are_found_in_their_table() {
        let text =
            "schema = \"x\"\n[gpu]\npersistence = true\npower_limit_w = 9\n[engine]\nranks = 9\n";
        assert_eq!(line_of_field(text, "gpu.power_limit_w"), Some(4));
        assert_eq!(line_of_field(text, "engine.ranks"), Some(6));
        assert_eq!(line_of_field(text, "schema"), Some(1));
        assert_eq!(line_of_field(text, "engine.max_running"), Some(5));
        assert_eq!(line_of_field(text, "topology.p2p"), None);
    }
}
