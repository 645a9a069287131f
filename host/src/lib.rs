//! What the daemon (`oasis`) and the installer (`oasis-installer`) both need of the box,
//! kept apart from either so that the installer does not depend on the daemon:
//! - [`paths`]: the data directory and the default model in it;
//! - [`config_file`]: the daemon's configuration file, parsed strictly;
//! - [`facts`]: host readings through `sysinfo`;
//! - [`nvml`], [`gpu_types`]: GPU readings through NVML (absent driver = a reported state);
//! - [`inventory`]: the hardware inventory firmware profiles are matched against;
//! - [`civil`]: calendar dates without a time zone library.

pub mod config_file;
pub mod facts;
pub mod gpu_types;
pub mod inventory;
pub mod nvml;
pub mod paths;

/// Days since the epoch to a civil (year, month, day), UTC (Howard Hinnant's algorithm).
pub fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}
