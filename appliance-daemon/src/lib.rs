//! The Oasis appliance daemon and its command line (`oasis`).
//!
//! The binary is thin: [`cli`] defines the commands and runs them against the engine.

#![forbid(unsafe_code)] // `unsafe` lives only in `kernels` (ARCHITECTURE.md)

pub mod cli;
pub mod paths;
