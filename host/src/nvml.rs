//! The live GPU source: NVIDIA's management library (NVML) through `nvml-wrapper`.
//!
//! `nvml-wrapper` loads `libnvidia-ml.so.1` at run time, so the daemon builds and starts on
//! a machine without the NVIDIA driver; there [`open`] answers `Err` with the reason and
//! the caller falls back to running without GPU telemetry. Every reading is taken on its
//! own: a field the GPU does not support, or that failed this time, is `None`, and only a
//! GPU whose handle cannot be had (or that has fallen off the bus) is reported with `error`.

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use nvml_wrapper::bitmasks::device::ThrottleReasons;
use nvml_wrapper::bitmasks::event::EventTypes;
use nvml_wrapper::enum_wrappers::device::{
    Clock, EccCounter, MemoryError, PcieUtilCounter, PerformanceState, RetirementCause,
    TemperatureSensor,
};
use nvml_wrapper::enum_wrappers::nv_link::ErrorCounter;
use nvml_wrapper::enums::device::{SampleValue, UsedGpuMemory};
use nvml_wrapper::enums::event::XidError;
use nvml_wrapper::enums::gpm::GpmMetricId;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::gpm::gpm_metrics_get;
use nvml_wrapper::structs::device::FieldId;
use nvml_wrapper::sys_exports::field_id::{
    NVML_FI_DEV_MEMORY_TEMP, NVML_FI_DEV_REMAPPED_COR, NVML_FI_DEV_REMAPPED_FAILURE,
    NVML_FI_DEV_REMAPPED_PENDING, NVML_FI_DEV_REMAPPED_UNC,
};
use nvml_wrapper::{Device, EventSet, GpmSample, Nvml};

use crate::gpu_types::{DriverInfo, GpuEvent, GpuProcess, GpuSample, GpuSource};

/// The most NVLink links any GPU has (Blackwell: 18); the link scan stops there.
const NVLINK_LINKS_MAX: u32 = 18;
/// The most XID events taken from one GPU per [`GpuSource::events`] call, so a GPU that
/// storms errors cannot hold the sampler thread.
const EVENTS_PER_GPU_MAX: usize = 256;
const GPU_LOST: &str = "GPU has fallen off the bus (NVML_ERROR_GPU_IS_LOST)";

/// Read through `nvmlDeviceGetFieldValues` because the wrapper has no dedicated call for
/// them (memory temperature, row remapping); one batched driver call.
const FIELDS: [u32; 5] = [
    NVML_FI_DEV_MEMORY_TEMP,
    NVML_FI_DEV_REMAPPED_COR,
    NVML_FI_DEV_REMAPPED_UNC,
    NVML_FI_DEV_REMAPPED_PENDING,
    NVML_FI_DEV_REMAPPED_FAILURE,
];

/// Throttle-reason bits and the names [`GpuSample::throttle_reasons`] uses.
const THROTTLE_REASON_NAMES: [(ThrottleReasons, &str); 9] = [
    (ThrottleReasons::GPU_IDLE, "gpu_idle"),
    (
        ThrottleReasons::APPLICATIONS_CLOCKS_SETTING,
        "applications_clocks_setting",
    ),
    (ThrottleReasons::SW_POWER_CAP, "sw_power_cap"),
    (ThrottleReasons::HW_SLOWDOWN, "hw_slowdown"),
    (ThrottleReasons::SYNC_BOOST, "sync_boost"),
    (ThrottleReasons::SW_THERMAL_SLOWDOWN, "sw_thermal_slowdown"),
    (ThrottleReasons::HW_THERMAL_SLOWDOWN, "hw_thermal_slowdown"),
    (
        ThrottleReasons::HW_POWER_BRAKE_SLOWDOWN,
        "hw_power_brake_slowdown",
    ),
    (
        ThrottleReasons::DISPLAY_CLOCK_SETTING,
        "display_clock_setting",
    ),
];

/// One process-wide NVML handle. Event sets and GPM samples borrow the `Nvml` they came
/// from; a `'static` borrow lets [`NvmlSource`] own them without unsafe code or a
/// self-referential struct. NVML is reference counted and meant to be initialised once
/// per process, so never shutting it down costs nothing: the driver cleans up at exit.
static NVML: OnceLock<Nvml> = OnceLock::new();

/// GPU telemetry read live from NVML. `Send` (all it holds is `'static` borrows of the
/// `Sync` [`Nvml`] and `Send` handles), so the sampler can move it to a blocking thread.
#[derive(Debug)]
pub struct NvmlSource {
    nvml: &'static Nvml,
    /// One entry per GPU index present at [`open`]; the set stays fixed so a GPU that
    /// drops off the bus keeps its index and is reported as an error, not forgotten.
    gpus: Vec<GpuState>,
}

#[derive(Debug)]
struct GpuState {
    /// Read at [`open`], so a GPU that is later lost is still named in its error sample.
    uuid: String,
    name: String,
    pci_bus_id: String,
    /// This GPU's own set of XID events: with one set per GPU, a GPU that refuses
    /// registration (the wrapper then frees the set) costs only its own events. `None`
    /// when the GPU does not support XID events.
    xid_events: Option<EventSet<'static>>,
    /// Whether the GPU supports GPM (Hopper and newer).
    gpm_supported: bool,
    /// The previous GPM sample; GPM metrics are the difference of two samples.
    gpm_previous: Option<GpmSample<'static>>,
}

/// The process-wide NVML handle, loading the library on first use. `Err` says why NVML
/// is unusable (no driver, driver not loaded, version mismatch).
pub fn handle() -> Result<&'static Nvml, String> {
    match NVML.get() {
        Some(nvml) => Ok(nvml),
        None => {
            let fresh = Nvml::init().map_err(|e| init_error_reason(&e))?;
            // A thread that lost the race to set it drops its handle (nvmlShutdown
            // balances its nvmlInit), which is harmless.
            let _ = NVML.set(fresh);
            NVML.get()
                .ok_or_else(|| "NVML handle missing after initialisation".to_string())
        }
    }
}

/// Loads NVML and prepares every GPU: identity, XID event registration, GPM support.
/// `Err` says why NVML is unusable (no driver, driver not loaded, version mismatch).
pub fn open() -> Result<NvmlSource, String> {
    let nvml = handle()?;
    let count = nvml
        .device_count()
        .map_err(|e| format!("NVML could not count GPUs: {e}"))?;
    let gpus = (0..count)
        .map(|index| GpuState::open(nvml, index))
        .collect();
    Ok(NvmlSource { nvml, gpus })
}

impl GpuState {
    fn open(nvml: &'static Nvml, index: u32) -> Self {
        let mut state = GpuState {
            uuid: String::new(),
            name: String::new(),
            pci_bus_id: String::new(),
            xid_events: None,
            gpm_supported: false,
            gpm_previous: None,
        };
        let Ok(device) = nvml.device_by_index(index) else {
            return state;
        };
        state.refresh_identity(&device);
        state.xid_events = nvml.create_event_set().ok().and_then(|set| {
            device
                .register_events(EventTypes::CRITICAL_XID_ERROR, set)
                .ok()
        });
        state.gpm_supported = device.gpm_support().unwrap_or(false);
        state
    }

    /// Fills whichever identity strings are still empty (the GPU may have been
    /// unreadable at open).
    fn refresh_identity(&mut self, device: &Device<'_>) {
        if self.uuid.is_empty() {
            self.uuid = device.uuid().unwrap_or_default();
        }
        if self.name.is_empty() {
            self.name = device.name().unwrap_or_default();
        }
        if self.pci_bus_id.is_empty() {
            self.pci_bus_id = device.pci_info().map(|p| p.bus_id).unwrap_or_default();
        }
    }

    fn error_sample(&self, index: u32, reason: String) -> GpuSample {
        GpuSample {
            index,
            uuid: self.uuid.clone(),
            name: self.name.clone(),
            pci_bus_id: self.pci_bus_id.clone(),
            error: Some(reason),
            ..GpuSample::default()
        }
    }
}

impl NvmlSource {
    /// The NVML handle, for readings beyond the sampler's (the profile inventory).
    pub fn nvml(&self) -> &'static Nvml {
        self.nvml
    }
}

impl GpuSource for NvmlSource {
    fn info(&self) -> DriverInfo {
        let vbios = (0..self.gpu_count())
            .map(|index| {
                // An unreadable VBIOS is an empty string so the list stays indexed by GPU.
                self.nvml
                    .device_by_index(index)
                    .and_then(|d| d.vbios_version())
                    .unwrap_or_default()
            })
            .collect();
        DriverInfo {
            driver_version: self.nvml.sys_driver_version().ok(),
            cuda_driver_version: self.nvml.sys_cuda_driver_version().ok().map(cuda_version),
            nvml_version: self.nvml.sys_nvml_version().ok(),
            gpu_count: self.gpu_count(),
            vbios,
        }
    }

    fn sample(&mut self) -> Vec<GpuSample> {
        let nvml = self.nvml;
        (0..self.gpu_count())
            .zip(self.gpus.iter_mut())
            .map(|(index, state)| sample_gpu(nvml, index, state))
            .collect()
    }

    fn events(&mut self) -> Vec<GpuEvent> {
        let mut events = Vec::new();
        for (index, state) in (0..self.gpu_count()).zip(&self.gpus) {
            let Some(set) = &state.xid_events else {
                continue;
            };
            for _ in 0..EVENTS_PER_GPU_MAX {
                // A 0 ms wait returns `Timeout` at once when nothing is queued; any other
                // error (the GPU lost, say) also ends this GPU's poll.
                let Ok(data) = set.wait(0) else { break };
                let xid = match data.event_data {
                    Some(XidError::Value(code)) => Some(code),
                    Some(XidError::Unknown) | None => None,
                };
                events.push(GpuEvent {
                    ts_ms: now_ms(),
                    gpu: index,
                    kind: "xid".into(),
                    xid,
                });
            }
        }
        events
    }
}

impl NvmlSource {
    fn gpu_count(&self) -> u32 {
        u32::try_from(self.gpus.len()).unwrap_or(u32::MAX)
    }
}

/// Remembers whether any reading said the GPU is lost, so the sample can say so.
struct Reads {
    lost: bool,
}

impl Reads {
    fn get<T>(&mut self, result: Result<T, NvmlError>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(NvmlError::GpuLost) => {
                self.lost = true;
                None
            }
            Err(_) => None,
        }
    }
}

fn sample_gpu(nvml: &'static Nvml, index: u32, state: &mut GpuState) -> GpuSample {
    let device = match nvml.device_by_index(index) {
        Ok(device) => device,
        Err(e) => {
            state.gpm_previous = None;
            return state.error_sample(index, device_error_reason(&e));
        }
    };
    state.refresh_identity(&device);
    let mut r = Reads { lost: false };
    let utilization = r.get(device.utilization_rates());
    if r.lost {
        // Every further call would fail the same way; do not spend the time.
        state.gpm_previous = None;
        return state.error_sample(index, GPU_LOST.into());
    }
    let memory = r.get(device.memory_info());
    let [
        temp_mem,
        remapped_cor,
        remapped_unc,
        remap_pending,
        remap_failure,
    ] = read_fields(&device);
    let (nvlink_active, nvlink_links, nvlink_errors) = read_nvlink(&device);
    let (sm_active_pct, tensor_active_pct) = read_gpm(nvml, &device, state);
    let mut sample = GpuSample {
        index,
        uuid: state.uuid.clone(),
        name: state.name.clone(),
        pci_bus_id: state.pci_bus_id.clone(),
        error: None,
        gpu_util_pct: utilization.as_ref().map(|u| f64::from(u.gpu)),
        mem_util_pct: utilization.as_ref().map(|u| f64::from(u.memory)),
        mem_used_bytes: memory.as_ref().map(|m| m.used),
        mem_free_bytes: memory.as_ref().map(|m| m.free),
        mem_total_bytes: memory.as_ref().map(|m| m.total),
        temp_gpu_c: r
            .get(device.temperature(TemperatureSensor::Gpu))
            .map(f64::from),
        temp_mem_c: temp_mem.and_then(sample_value_f64),
        power_w: r.get(device.power_usage()).map(milliwatts_to_watts),
        power_limit_w: r
            .get(device.enforced_power_limit())
            .map(milliwatts_to_watts),
        energy_mj: r.get(device.total_energy_consumption()),
        sm_clock_mhz: r.get(device.clock_info(Clock::SM)),
        mem_clock_mhz: r.get(device.clock_info(Clock::Memory)),
        fan_pct: r.get(device.fan_speed(0)),
        pstate: r.get(device.performance_state()).and_then(pstate_number),
        throttle_reasons: r
            .get(device.current_throttle_reasons())
            .map(throttle_reason_names)
            .unwrap_or_default(),
        pcie_tx_kbps: r
            .get(device.pcie_throughput(PcieUtilCounter::Send))
            .map(u64::from),
        pcie_rx_kbps: r
            .get(device.pcie_throughput(PcieUtilCounter::Receive))
            .map(u64::from),
        pcie_replay_count: r.get(device.pcie_replay_counter()).map(u64::from),
        ecc_corrected_volatile: r
            .get(device.total_ecc_errors(MemoryError::Corrected, EccCounter::Volatile)),
        ecc_uncorrected_volatile: r
            .get(device.total_ecc_errors(MemoryError::Uncorrected, EccCounter::Volatile)),
        ecc_corrected_aggregate: r
            .get(device.total_ecc_errors(MemoryError::Corrected, EccCounter::Aggregate)),
        ecc_uncorrected_aggregate: r
            .get(device.total_ecc_errors(MemoryError::Uncorrected, EccCounter::Aggregate)),
        remapped_rows_correctable: remapped_cor.and_then(sample_value_u64),
        remapped_rows_uncorrectable: remapped_unc.and_then(sample_value_u64),
        remap_pending: remap_pending.and_then(sample_value_u64).map(|v| v != 0),
        remap_failure: remap_failure.and_then(sample_value_u64).map(|v| v != 0),
        retired_pages_single_bit: r
            .get(device.retired_pages(RetirementCause::MultipleSingleBitEccErrors))
            .map(|pages| pages.len() as u64),
        retired_pages_double_bit: r
            .get(device.retired_pages(RetirementCause::DoubleBitEccError))
            .map(|pages| pages.len() as u64),
        nvlink_active,
        nvlink_links,
        nvlink_errors,
        processes: r
            .get(device.running_compute_processes())
            .unwrap_or_default()
            .into_iter()
            .map(|p| GpuProcess {
                pid: p.pid,
                used_bytes: match p.used_gpu_memory {
                    UsedGpuMemory::Used(bytes) => Some(bytes),
                    UsedGpuMemory::Unavailable => None,
                },
            })
            .collect(),
        sm_active_pct,
        tensor_active_pct,
    };
    if r.lost {
        state.gpm_previous = None;
        sample.error = Some(GPU_LOST.into());
    }
    sample
}

/// The [`FIELDS`] values, in that order; `None` where the GPU does not report one.
fn read_fields(device: &Device<'_>) -> [Option<SampleValue>; FIELDS.len()] {
    let mut values = std::array::from_fn(|_| None);
    let ids = FIELDS.map(FieldId);
    if let Ok(samples) = device.field_values_for(&ids) {
        for (slot, sample) in values.iter_mut().zip(samples) {
            *slot = sample.ok().and_then(|s| s.value.ok());
        }
    }
    values
}

/// `(active links, links, replay + recovery + CRC-flit errors)`. Links are probed from 0
/// until one errors (no such link); all `None` on a GPU without NVLink.
fn read_nvlink(device: &Device<'_>) -> (Option<u32>, Option<u32>, Option<u64>) {
    let (mut links, mut active, mut errors, mut any_errors) = (0, 0, 0u64, false);
    for link in 0..NVLINK_LINKS_MAX {
        let link = device.link_wrapper_for(link);
        let Ok(is_active) = link.is_active() else {
            break;
        };
        links += 1;
        active += u32::from(is_active);
        for counter in [
            ErrorCounter::DlReplay,
            ErrorCounter::DlRecovery,
            ErrorCounter::DlCrcFlit,
        ] {
            if let Ok(count) = link.error_counter(counter) {
                errors = errors.saturating_add(count);
                any_errors = true;
            }
        }
    }
    if links == 0 {
        return (None, None, None);
    }
    (Some(active), Some(links), any_errors.then_some(errors))
}

/// `(SM active %, tensor active %)` over the time since the previous sample, from GPM
/// (Hopper and newer). `None` on the first sample, on GPUs without GPM, and on failure.
fn read_gpm(
    nvml: &'static Nvml,
    device: &Device<'static>,
    state: &mut GpuState,
) -> (Option<f64>, Option<f64>) {
    if !state.gpm_supported {
        return (None, None);
    }
    let current = device.gpm_sample().ok();
    let previous = std::mem::replace(&mut state.gpm_previous, current);
    let (Some(previous), Some(current)) = (previous, &state.gpm_previous) else {
        return (None, None);
    };
    let metrics = [GpmMetricId::SmUtil, GpmMetricId::AnyTensorUtil];
    let Ok(results) = gpm_metrics_get(nvml, &previous, current, &metrics) else {
        return (None, None);
    };
    let mut values = results.into_iter().map(|r| r.ok().map(|m| m.value));
    (values.next().flatten(), values.next().flatten())
}

fn init_error_reason(error: &NvmlError) -> String {
    match error {
        NvmlError::LibloadingError(e) => {
            format!("NVIDIA driver not found: libnvidia-ml.so.1 could not be loaded ({e})")
        }
        NvmlError::DriverNotLoaded => "NVIDIA kernel driver is not loaded".into(),
        NvmlError::LibRmVersionMismatch => {
            "NVIDIA driver and libnvidia-ml.so versions differ (reboot after a driver update?)"
                .into()
        }
        NvmlError::NoPermission => "no permission to use the NVIDIA driver".into(),
        e => format!("NVML could not start: {e}"),
    }
}

fn device_error_reason(error: &NvmlError) -> String {
    match error {
        NvmlError::GpuLost => GPU_LOST.into(),
        e => format!("NVML could not open the GPU: {e}"),
    }
}

/// `cudaDriverGetVersion`'s integer (`1000 * major + 10 * minor`) as `major.minor`.
fn cuda_version(version: i32) -> String {
    format!("{}.{}", version / 1000, (version % 1000) / 10)
}

fn throttle_reason_names(reasons: ThrottleReasons) -> Vec<String> {
    THROTTLE_REASON_NAMES
        .iter()
        .filter(|(bit, _)| reasons.contains(*bit))
        .map(|(_, name)| (*name).to_string())
        .collect()
}

fn pstate_number(state: PerformanceState) -> Option<u32> {
    use PerformanceState::*;
    Some(match state {
        Zero => 0,
        One => 1,
        Two => 2,
        Three => 3,
        Four => 4,
        Five => 5,
        Six => 6,
        Seven => 7,
        Eight => 8,
        Nine => 9,
        Ten => 10,
        Eleven => 11,
        Twelve => 12,
        Thirteen => 13,
        Fourteen => 14,
        Fifteen => 15,
        Unknown => return None,
    })
}

fn milliwatts_to_watts(milliwatts: u32) -> f64 {
    f64::from(milliwatts) / 1000.0
}

fn sample_value_u64(value: SampleValue) -> Option<u64> {
    match value {
        SampleValue::U32(v) => Some(u64::from(v)),
        SampleValue::U64(v) => Some(v),
        SampleValue::I64(v) => u64::try_from(v).ok(),
        // Counts never arrive as doubles; a double here is not a count.
        SampleValue::F64(_) => None,
    }
}

fn sample_value_f64(value: SampleValue) -> Option<f64> {
    match value {
        SampleValue::F64(v) => Some(v),
        SampleValue::U32(v) => Some(f64::from(v)),
        SampleValue::U64(v) => Some(v as f64),
        SampleValue::I64(v) => Some(v as f64),
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_without_a_driver_is_an_error_not_a_panic() {
        // Without the driver's control node NVML cannot start (on the build host and in
        // CI), and `open` must say why. On a GPU machine it may succeed; a failure there
        // must still carry a reason.
        let driver_present = std::path::Path::new("/dev/nvidiactl").exists();
        match open() {
            Ok(source) => assert!(driver_present, "NVML opened without a driver: {source:?}"),
            Err(reason) => {
                eprintln!("open() = Err({reason:?})");
                assert!(!reason.trim().is_empty());
            }
        }
    }

    #[test]
    fn nvml_source_is_send() {
        fn assert_send<T: Send>() {}
        assert_send::<NvmlSource>();
    }

    #[test]
    fn cuda_version_formats_major_minor() {
        assert_eq!(cuda_version(12040), "12.4");
        assert_eq!(cuda_version(12080), "12.8");
        assert_eq!(cuda_version(11020), "11.2");
        assert_eq!(cuda_version(13000), "13.0");
    }

    #[test]
    fn throttle_reasons_map_to_names() {
        assert!(throttle_reason_names(ThrottleReasons::NONE).is_empty());
        let reasons = ThrottleReasons::GPU_IDLE
            | ThrottleReasons::SW_POWER_CAP
            | ThrottleReasons::HW_THERMAL_SLOWDOWN;
        assert_eq!(
            throttle_reason_names(reasons),
            ["gpu_idle", "sw_power_cap", "hw_thermal_slowdown"]
        );
        // Raw nvmlClocksThrottleReason bits: ApplicationsClocksSetting (0x2, once called
        // UserDefinedClocks) and DisplayClockSetting (0x100).
        assert_eq!(
            throttle_reason_names(ThrottleReasons::from_bits_truncate(0x2 | 0x100)),
            ["applications_clocks_setting", "display_clock_setting"]
        );
        assert_eq!(throttle_reason_names(ThrottleReasons::all()).len(), 9);
    }

    #[test]
    fn pstates_are_numbered() {
        assert_eq!(pstate_number(PerformanceState::Zero), Some(0));
        assert_eq!(pstate_number(PerformanceState::Eight), Some(8));
        assert_eq!(pstate_number(PerformanceState::Fifteen), Some(15));
        assert_eq!(pstate_number(PerformanceState::Unknown), None);
    }

    #[test]
    fn field_values_convert() {
        assert_eq!(sample_value_u64(SampleValue::U32(7)), Some(7));
        assert_eq!(sample_value_u64(SampleValue::I64(-1)), None);
        assert_eq!(sample_value_f64(SampleValue::U32(45)), Some(45.0));
    }
}
