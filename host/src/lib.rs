//! What the daemon (`oasis`) and the installer (`oasis-installer`) both need of the box,
//! kept apart from either so that the installer does not depend on the daemon:
//! - [`paths`]: the data directory and the default model in it;
//! - [`config_file`]: the daemon's configuration file, parsed strictly;
//! - [`facts`]: host readings through `sysinfo`;
//! - [`nvml`], [`gpu_types`]: GPU readings through NVML (absent driver = a reported state);
//! - [`inventory`]: the hardware inventory firmware profiles are matched against.

pub mod config_file;
pub mod facts;
pub mod gpu_types;
pub mod inventory;
pub mod nvml;
pub mod paths;
