//! The Oasis appliance daemon and its command line (`oasis`).
//!
//! The binary is thin: [`cli`] defines the commands; [`server`] is the HTTP daemon over
//! the engine, with its configuration in [`config`] and its durable state in [`store`].

#![forbid(unsafe_code)] // `unsafe` lives only in `kernels` (ARCHITECTURE.md)

pub mod audit;
pub mod auth;
pub mod cli;
pub mod config;
pub mod fit;
pub mod import;
pub mod jobs;
pub mod logging;
pub mod metering;
pub use appliance_host::paths;
pub mod profile;
pub mod server;
pub mod store;
pub mod system_update;
pub mod telemetry;
pub mod tls;
