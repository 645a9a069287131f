//! Throughput of the batched quantized product on the shapes of SmolLM2-135M's layers
//! (Q4_1 weights with Q8_1 activations, or Q8_0 weights with Q8_0 activations), in
//! multiply-adds per second. `OASIS_KERNELS=avx2` or `portable` picks a lesser instruction
//! set, to compare.
//!
//! `cargo run --release -p kernels --example matmul_bench -- [THREADS] [TOKENS] [q4_1|q8_0]`

use std::time::Instant;

use kernels::{Activations, GgmlType, Isa, MatmulTarget, QMatrix, ThreadPool};

fn main() {
    let mut args = std::env::args().skip(1);
    let threads: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1);
    let tokens: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(128);
    let ty = match args.next().as_deref() {
        None | Some("q4_1") => GgmlType::Q4_1,
        Some("q8_0") => GgmlType::Q8_0,
        Some(other) => return eprintln!("unknown weight type {other}: q4_1 or q8_0"),
    };
    let pool = ThreadPool::new(threads);
    let isa = Isa::active();
    // (rows, cols): attention output, FFN gate/up, FFN down.
    for (rows, cols) in [(576, 576), (1536, 576), (576, 1536)] {
        let mut seed = 0x9e37_79b9_u32;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            (seed as f32 / u32::MAX as f32) * 2.0 - 1.0
        };
        let row_bytes = ty.row_bytes(cols).unwrap_or(0);
        let mut wdata = vec![0u8; rows * row_bytes];
        if ty == GgmlType::Q4_1 {
            // Random Q4_1 blocks: f16 scale and minimum, then 16 bytes of nibbles.
            for block in wdata.chunks_exact_mut(20) {
                block[..2].copy_from_slice(&kernels::f16::from_f32(0.01 * rnd()).to_le_bytes());
                block[2..4].copy_from_slice(&kernels::f16::from_f32(-0.08 * rnd()).to_le_bytes());
                for b in &mut block[4..] {
                    *b = (rnd().abs() * 255.0) as u8;
                }
            }
        } else {
            // Random Q8_0 blocks: f16 scale, then 32 values in -127..=127.
            for block in wdata.chunks_exact_mut(34) {
                block[..2].copy_from_slice(&kernels::f16::from_f32(0.01 * rnd()).to_le_bytes());
                for b in &mut block[2..] {
                    *b = ((rnd() * 127.0) as i8) as u8;
                }
            }
        }
        let w = match QMatrix::new(ty, rows, cols, &wdata) {
            Ok(w) => w,
            Err(e) => return eprintln!("{e}"),
        };
        let x: Vec<f32> = (0..tokens * cols).map(|_| rnd()).collect();
        let mut acts = Activations::default();
        if let Err(e) = acts.quantize(&pool, ty, &x, tokens, cols) {
            return eprintln!("{e}");
        }
        let mut out = vec![0f32; tokens * rows];
        let mut times = Vec::new();
        for _ in 0..15 {
            let start = Instant::now();
            for _ in 0..10 {
                let mut t = [MatmulTarget {
                    weight: &w,
                    out: &mut out,
                }];
                if let Err(e) = kernels::matmul(&pool, isa, &acts, &mut t) {
                    return eprintln!("{e}");
                }
            }
            times.push(start.elapsed().as_secs_f64() / 10.0);
        }
        times.sort_by(f64::total_cmp);
        let med = times[times.len() / 2];
        let macs = (rows * cols * tokens) as f64;
        println!(
            "{rows:>5} x {cols:>5}, {tokens} tokens, {threads} threads: {:.2} ms, {:.1} GMAC/s",
            med * 1e3,
            macs / med / 1e9
        );
    }
}
