//! The GPU suite: every CUDA kernel against the CPU kernels (or an f64 reference) on random
//! inputs, paged attention over scrambled block tables, SmolLM2 on the GPU against the CPU
//! engine, the daemon on the GPU answering the official `openai` client, and a GPU that
//! runs out of memory mid-step.
//!
//! A binary of its own (the workspace's other end-to-end tests need a browser, a desktop
//! and Python packages a GPU machine lacks): `scripts/stage-gpu` builds it with the
//! daemon and a model cut to fit the transfer, for `bash .device/run-tests.sh` there.
//! Without a GPU every test returns at once, unless `OASIS_REQUIRE_GPU=1` (the device
//! run sets it), when a missing GPU fails them.
//!
//! Every output buffer is filled with NaN before a kernel writes it, so a kernel that
//! skips a value is caught; inputs are random, never zeros.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod engine_e2e;
mod kernels_vs_cpu;

use kernels::cuda::CudaDevice;

/// The first GPU, or `None` (skip) without one; a failure under `OASIS_REQUIRE_GPU=1`.
pub fn gpu() -> Option<CudaDevice> {
    let required = std::env::var("OASIS_REQUIRE_GPU").as_deref() == Ok("1");
    match kernels::cuda::probe() {
        Ok(gpus) if !gpus.is_empty() => {
            let dir = std::env::temp_dir().join("oasis-gpu-test-kernels");
            Some(CudaDevice::open(0, Some(&dir)).unwrap_or_else(|e| panic!("GPU 0: {e}")))
        }
        other => {
            let why = match other {
                Ok(_) => "no GPU".to_string(),
                Err(e) => e.to_string(),
            };
            assert!(!required, "OASIS_REQUIRE_GPU=1 but {why}");
            eprintln!("skipped: {why}");
            None
        }
    }
}

/// A deterministic generator (xorshift*).
#[derive(Debug)]
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [-1, 1).
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}
