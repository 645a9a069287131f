//! The CUDA kernels' dequantization, compiled for the host from the same source
//! (`kernels/src/cuda/kernels/common.cuh` with `OASIS_HOST`), gives the CPU kernels'
//! values bit for bit for every weight type the GPU reads: the formulas (block layouts,
//! scale packing, nibble order) are checked here without a GPU.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::process::{Command, Stdio};

use kernels::{GgmlType, dequantize_row};

/// A deterministic byte stream.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// A finite f16 of modest size (scales): exponent 5..=16 (2^-10 to 2^1).
fn f16_bits(r: &mut Rng) -> [u8; 2] {
    let exp = 5 + (r.next() % 12) as u16;
    let man = (r.next() % 1024) as u16;
    let sign = (r.next() % 2) as u16;
    ((sign << 15) | (exp << 10) | man).to_le_bytes()
}

/// A row of `k` values of `ty` with random contents and sane scales.
fn random_row(ty: GgmlType, k: usize, r: &mut Rng) -> Vec<u8> {
    let n = ty.row_bytes(k).unwrap();
    let mut row: Vec<u8> = (0..n).map(|_| r.next() as u8).collect();
    let block = ty.block_bytes();
    let scale_at: &[usize] = match ty {
        GgmlType::F32 => {
            for v in row.chunks_exact_mut(4) {
                v.copy_from_slice(&((r.next() % 2000) as f32 / 100.0 - 10.0).to_le_bytes());
            }
            &[]
        }
        GgmlType::F16 => {
            for v in row.chunks_exact_mut(2) {
                v.copy_from_slice(&f16_bits(r));
            }
            &[]
        }
        GgmlType::BF16 => {
            for v in row.chunks_exact_mut(2) {
                let f = (r.next() % 2000) as f32 / 100.0 - 10.0;
                v.copy_from_slice(&((f.to_bits() >> 16) as u16).to_le_bytes());
            }
            &[]
        }
        GgmlType::Q4_0 | GgmlType::Q8_0 => &[0],
        GgmlType::Q4_1 | GgmlType::Q4_K | GgmlType::Q5_K => &[0, 2],
        GgmlType::Q6_K => &[208],
        _ => panic!("{ty:?}"),
    };
    for b in row.chunks_exact_mut(block) {
        for &at in scale_at {
            b[at..at + 2].copy_from_slice(&f16_bits(r));
        }
    }
    row
}

fn host_dequant(exe: &std::path::Path, ty: GgmlType, k: usize, row: &[u8]) -> Vec<f32> {
    let mut child = Command::new(exe)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = (ty.id() as i32).to_le_bytes().to_vec();
    input.extend_from_slice(&(k as i32).to_le_bytes());
    input.extend_from_slice(row);
    child.stdin.take().unwrap().write_all(&input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "host dequant failed for {ty:?}");
    out.stdout
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

#[test]
fn gpu_dequantization_matches_the_cpu_kernels_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("host_check");
    let src = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src/cuda/kernels/host_check.cpp"
    );
    let built = Command::new("g++")
        .args(["-O1", "-std=c++17", "-ffp-contract=off", "-o"])
        .arg(&exe)
        .arg(src)
        .status();
    let Ok(status) = built else {
        panic!("g++ is needed to build the host check (apt install g++)");
    };
    assert!(status.success(), "g++ failed on {src}");
    let mut r = Rng(0x9e37_79b9_7f4a_7c15);
    for ty in kernels::cuda::GPU_TYPES {
        for k in [256, 512, 1024 + 256] {
            for _ in 0..20 {
                let row = random_row(*ty, k, &mut r);
                let gpu = host_dequant(&exe, *ty, k, &row);
                let mut cpu = vec![0f32; k];
                dequantize_row(*ty, &row, &mut cpu).unwrap();
                for (i, (a, b)) in gpu.iter().zip(&cpu).enumerate() {
                    assert_eq!(
                        a.to_bits(),
                        b.to_bits(),
                        "{ty:?} k={k} value {i}: GPU formula {a}, CPU {b}"
                    );
                }
            }
        }
    }
}
