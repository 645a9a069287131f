//! End-to-end tests: the real `oasis` binary and the real model file, checked against
//! llama.cpp's outputs on the same file.

// Test helpers: a failed unwrap is a failed test, with the value that broke it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

/// Records each thread's largest allocation, for the parser fuzzing in `fuzz`.
#[global_allocator]
static ALLOC: kernels::alloc_probe::PeakAlloc = kernels::alloc_probe::PeakAlloc;

mod cli_errors;
mod cli_run;
mod console;
mod embeddings;
mod eplb;
mod fit;
mod fuzz;
mod gpu_build;
mod hardening;
mod models;
mod moe;
mod parity;
mod profile;
mod reasoning;
mod security;
mod serve;
mod structured;
mod system;
mod telemetry;
mod tools;
