//! Each GPU kernel against the CPU kernels or an f64 reference, with the error bound each
//! kernel is held to and why.

use kernels::cuda::{CudaDevice, Floats, GPU_TYPES};
use kernels::ops::{RopeCache, RopeParams, RopeStyle};
use kernels::{AttnShape, GgmlType, dequantize_row};

use crate::{Rng, gpu};

/// A finite f16 of modest size (block scales): 2^-10 to 2^1, either sign.
fn f16_bits(r: &mut Rng) -> [u8; 2] {
    let exp = 5 + (r.next_u64() % 12) as u16;
    let man = (r.next_u64() % 1024) as u16;
    let sign = (r.next_u64() % 2) as u16;
    ((sign << 15) | (exp << 10) | man).to_le_bytes()
}

/// `rows` rows of `k` values of `ty`: random blocks with sane scales.
pub fn random_weight(ty: GgmlType, rows: usize, k: usize, r: &mut Rng) -> Vec<u8> {
    let n = ty.row_bytes(k).unwrap() * rows;
    let mut w: Vec<u8> = (0..n).map(|_| r.next_u64() as u8).collect();
    match ty {
        GgmlType::F32 => {
            for v in w.chunks_exact_mut(4) {
                v.copy_from_slice(&(r.unit() * 0.5).to_le_bytes());
            }
        }
        GgmlType::F16 => {
            for v in w.chunks_exact_mut(2) {
                v.copy_from_slice(&half::f16::from_f32(r.unit() * 0.5).to_le_bytes());
            }
        }
        GgmlType::BF16 => {
            for v in w.chunks_exact_mut(2) {
                v.copy_from_slice(&half::bf16::from_f32(r.unit() * 0.5).to_le_bytes());
            }
        }
        _ => {
            let scales: &[usize] = match ty {
                GgmlType::Q4_0 | GgmlType::Q8_0 => &[0],
                GgmlType::Q4_1 | GgmlType::Q4_K | GgmlType::Q5_K => &[0, 2],
                GgmlType::Q6_K => &[208],
                _ => panic!("{ty:?}"),
            };
            for b in w.chunks_exact_mut(ty.block_bytes()) {
                for &at in scales {
                    b[at..at + 2].copy_from_slice(&f16_bits(r));
                }
            }
        }
    }
    w
}

fn dequantized(ty: GgmlType, w: &[u8], rows: usize, k: usize) -> Vec<f32> {
    let rb = ty.row_bytes(k).unwrap();
    let mut out = vec![0f32; rows * k];
    for (row, dst) in w.chunks_exact(rb).zip(out.chunks_exact_mut(k)) {
        dequantize_row(ty, row, dst).unwrap();
    }
    out
}

/// A buffer of `n` NaNs: a value the kernel forgets shows.
fn poisoned(dev: &CudaDevice, n: usize) -> Floats {
    dev.upload_floats(&vec![f32::NAN; n.max(1)]).unwrap()
}

fn down(dev: &CudaDevice, f: &Floats, n: usize) -> Vec<f32> {
    let mut v = Vec::new();
    dev.download(f, n, &mut v).unwrap();
    v
}

/// The largest |gpu - reference| / scale over the values, scale being each value's own
/// sum of |terms| (so a cancellation does not inflate a relative error).
fn worst(gpu: &[f32], reference: &[f64], scale: &[f64]) -> f64 {
    assert_eq!(gpu.len(), reference.len());
    let mut w = 0f64;
    for ((g, r), s) in gpu.iter().zip(reference).zip(scale) {
        assert!(
            g.is_finite(),
            "a value was not written (NaN left) or overflowed"
        );
        w = w.max((f64::from(*g) - r).abs() / s.max(1e-30));
    }
    w
}

/// Products of every weight type: the fused dequantize-GEMV (up to 8 tokens) within 1e-5
/// of the f64 products of the CPU's dequantized weights (f32 accumulation in another
/// order); the bf16 tensor-core path (more tokens) within 1e-2 (weights and activations
/// rounded to bf16: up to 2^-8 relative each, per term).
#[test]
fn products_of_every_weight_type_match_the_cpu() {
    let Some(dev) = gpu() else { return };
    let mut r = Rng(0x1234_5678_9abc_def1);
    let mut scratch = dev.matmul_scratch();
    for &ty in GPU_TYPES {
        for (rows, k) in [(64, 256), (300, 1024), (1000, 4096)] {
            let w = random_weight(ty, rows, k, &mut r);
            let wf = dequantized(ty, &w, rows, k);
            let dw = dev.upload_weight(ty, rows, k, &w).unwrap();
            for n_tok in [1, 3, 8, 17, 64] {
                let x: Vec<f32> = (0..n_tok * k).map(|_| r.unit()).collect();
                let dx = dev.upload_floats(&x).unwrap();
                let mut out = poisoned(&dev, n_tok * rows);
                dev.matmul(&dw, &dx, n_tok, &mut out, &mut scratch).unwrap();
                let got = down(&dev, &out, n_tok * rows);
                let mut reference = Vec::with_capacity(n_tok * rows);
                let mut scale = Vec::with_capacity(n_tok * rows);
                for t in 0..n_tok {
                    for row in 0..rows {
                        let (mut s, mut a) = (0f64, 0f64);
                        for i in 0..k {
                            let p = f64::from(wf[row * k + i]) * f64::from(x[t * k + i]);
                            s += p;
                            a += p.abs();
                        }
                        reference.push(s);
                        scale.push(a);
                    }
                }
                let bound = if n_tok <= 8 { 1e-5 } else { 1e-2 };
                let e = worst(&got, &reference, &scale);
                assert!(
                    e <= bound,
                    "{ty:?} {rows}x{k}, {n_tok} tokens: error {e:.2e} > {bound:.0e}"
                );
            }
        }
    }
}

/// Embedding rows: the dequantized values of the ids asked for, within 1e-6 (the GPU may
/// fuse a multiply-add the CPU rounds twice).
#[test]
fn embeddings_are_the_dequantized_rows() {
    let Some(dev) = gpu() else { return };
    let mut r = Rng(77);
    for &ty in GPU_TYPES {
        let (rows, k) = (500, 512);
        let w = random_weight(ty, rows, k, &mut r);
        let wf = dequantized(ty, &w, rows, k);
        let dw = dev.upload_weight(ty, rows, k, &w).unwrap();
        let ids: Vec<u32> = (0..37).map(|_| r.below(rows) as u32).collect();
        let mut dids = dev.ids().unwrap();
        dev.write_ids(&mut dids, &ids).unwrap();
        let mut out = poisoned(&dev, ids.len() * k);
        dev.embed(&dw, &dids, ids.len(), &mut out).unwrap();
        let got = down(&dev, &out, ids.len() * k);
        for (t, id) in ids.iter().enumerate() {
            for i in 0..k {
                let (g, c) = (got[t * k + i], wf[*id as usize * k + i]);
                assert!(
                    (g - c).abs() <= 1e-6 * c.abs().max(1e-3),
                    "{ty:?} row {id} [{i}]: {g} vs {c}"
                );
            }
        }
    }
}

/// RMSNorm (1e-6 relative), RoPE in both pairings up to position 8000 (2e-5 of the value,
/// the angle's f32 cos/sin), SwiGLU (1e-5), bias, residual and row gathers (exact).
#[test]
fn row_operations_match_the_cpu() {
    let Some(dev) = gpu() else { return };
    let mut r = Rng(99);
    let (rows, n) = (33, 576);
    let x: Vec<f32> = (0..rows * n).map(|_| r.unit() * 3.0).collect();
    let w: Vec<f32> = (0..n).map(|_| r.unit()).collect();
    let (dx, dw) = (
        dev.upload_floats(&x).unwrap(),
        dev.upload_floats(&w).unwrap(),
    );
    let mut out = poisoned(&dev, rows * n);
    dev.rms_norm(&dx, &dw, rows, n, 1e-5, &mut out).unwrap();
    let got = down(&dev, &out, rows * n);
    let mut cpu = x.clone();
    kernels::ops::rms_norm(&mut cpu, &w, 1e-5).unwrap();
    for (g, c) in got.iter().zip(&cpu) {
        assert!(
            (g - c).abs() <= 1e-6 * c.abs().max(1e-3),
            "rms_norm {g} vs {c}"
        );
    }
    let mut inplace = dev.upload_floats(&x).unwrap();
    dev.rms_norm_in_place(&mut inplace, &dw, rows, n, 1e-5)
        .unwrap();
    assert_eq!(down(&dev, &inplace, rows * n), got, "in place differs");

    for style in [RopeStyle::Normal, RopeStyle::Neox] {
        let (n_heads, hd) = (9, 64);
        let params = RopeParams {
            n_rot: hd,
            freq_base: 100_000.0,
            freq_scale: 1.0,
            freq_factors: None,
            style,
        };
        let pos: Vec<u32> = (0..rows).map(|_| r.below(8000) as u32).collect();
        let q: Vec<f32> = (0..rows * n_heads * hd).map(|_| r.unit()).collect();
        let mut dq = dev.upload_floats(&q).unwrap();
        let mut dpos = dev.ids().unwrap();
        dev.write_ids(&mut dpos, &pos).unwrap();
        let table = dev
            .rope_table(hd, params.freq_base, 1.0, None, style == RopeStyle::Neox)
            .unwrap();
        dev.rope(&mut dq, &dpos, rows, n_heads, hd, &table).unwrap();
        let got = down(&dev, &dq, q.len());
        let mut cpu = q.clone();
        let mut rc = RopeCache::default();
        for (t, p) in pos.iter().enumerate() {
            rc.fill(&params, *p as usize);
            rc.apply(
                style,
                &mut cpu[t * n_heads * hd..(t + 1) * n_heads * hd],
                hd,
            );
        }
        for (g, c) in got.iter().zip(&cpu) {
            assert!((g - c).abs() <= 2e-5, "rope {style:?}: {g} vs {c}");
        }
    }

    let gate: Vec<f32> = (0..rows * n).map(|_| r.unit() * 6.0).collect();
    let up: Vec<f32> = (0..rows * n).map(|_| r.unit()).collect();
    let mut dg = dev.upload_floats(&gate).unwrap();
    let du = dev.upload_floats(&up).unwrap();
    dev.swiglu(&mut dg, &du, gate.len()).unwrap();
    let got = down(&dev, &dg, gate.len());
    let mut cpu = gate.clone();
    kernels::vmath::swiglu(kernels::Isa::active(), &mut cpu, &up);
    for (g, c) in got.iter().zip(&cpu) {
        assert!(
            (g - c).abs() <= 1e-5 * c.abs().max(1e-3),
            "swiglu {g} vs {c}"
        );
    }

    let mut dx2 = dev.upload_floats(&x).unwrap();
    dev.add_bias(&mut dx2, &dw, rows, n).unwrap();
    dev.add_assign(&mut dx2, &dx, rows * n).unwrap();
    let got = down(&dev, &dx2, rows * n);
    for (i, g) in got.iter().enumerate() {
        assert_eq!(*g, (x[i] + w[i % n]) + x[i], "bias + residual at {i}");
    }
    let picks: Vec<u32> = vec![5, 0, 32, 5];
    let mut dp = dev.ids().unwrap();
    dev.write_ids(&mut dp, &picks).unwrap();
    let mut g = poisoned(&dev, picks.len() * n);
    dev.gather_rows(&dx, &dp, picks.len(), n, &mut g).unwrap();
    let got = down(&dev, &g, picks.len() * n);
    for (i, p) in picks.iter().enumerate() {
        assert_eq!(
            &got[i * n..(i + 1) * n],
            &x[*p as usize * n..(*p as usize + 1) * n]
        );
    }
}

fn f16_round(v: f32) -> f32 {
    half::f16::from_f32(v).to_f32()
}

/// Paged attention: three sequences (1, 70 and 300 positions) whose blocks sit in a
/// scrambled order in the pool, for a decode step (one token each) and a whole prompt
/// (causal), in grouped-query shapes; within 1e-4 of an f64 softmax over the same f16
/// keys and values.
#[test]
fn paged_attention_over_scrambled_block_tables() {
    let Some(dev) = gpu() else { return };
    const BLOCK: usize = kernels::cuda::BLOCK_POSITIONS;
    let mut r = Rng(4242);
    for shape in [
        AttnShape {
            n_heads: 9,
            n_kv_heads: 3,
            head_dim: 64,
        },
        AttnShape {
            n_heads: 32,
            n_kv_heads: 8,
            head_dim: 128,
        },
        AttnShape {
            n_heads: 4,
            n_kv_heads: 4,
            head_dim: 256,
        },
    ] {
        let (qd, kvd) = (
            shape.n_heads * shape.head_dim,
            shape.n_kv_heads * shape.head_dim,
        );
        let lens = [1usize, 70, 300];
        let n_blocks: usize = lens.iter().map(|l| l.div_ceil(BLOCK)).sum::<usize>() + 3;
        // Each sequence's blocks, taken from a shuffled pool.
        let mut pool: Vec<u32> = (0..n_blocks as u32).collect();
        for i in (1..pool.len()).rev() {
            pool.swap(i, r.below(i + 1));
        }
        let mut tables: Vec<Vec<u32>> = Vec::new();
        let mut next = 0;
        for l in lens {
            let nb = l.div_ceil(BLOCK);
            tables.push(pool[next..next + nb].to_vec());
            next += nb;
        }
        let mut cache = dev.kv_cache(2, n_blocks, kvd).unwrap();
        let layer = 1;
        // Keys and values of every position, written through the kernel.
        let keys: Vec<Vec<f32>> = lens
            .iter()
            .map(|l| (0..l * kvd).map(|_| r.unit()).collect())
            .collect();
        let vals: Vec<Vec<f32>> = lens
            .iter()
            .map(|l| (0..l * kvd).map(|_| r.unit()).collect())
            .collect();
        for (s, l) in lens.iter().enumerate() {
            let slots: Vec<u32> = (0..*l)
                .map(|p| tables[s][p / BLOCK] * BLOCK as u32 + (p % BLOCK) as u32)
                .collect();
            let (dk, dv) = (
                dev.upload_floats(&keys[s]).unwrap(),
                dev.upload_floats(&vals[s]).unwrap(),
            );
            let mut dslots = dev.ids().unwrap();
            dev.write_ids(&mut dslots, &slots).unwrap();
            dev.kv_write(&mut cache, layer, &dk, &dv, &dslots, *l)
                .unwrap();
        }
        let mut flat = Vec::new();
        let mut offsets = Vec::new();
        for t in &tables {
            offsets.push(flat.len() as u32);
            flat.extend_from_slice(t);
        }
        let mut dtables = dev.ids().unwrap();
        dev.write_ids(&mut dtables, &flat).unwrap();
        let scale = 1.0 / (shape.head_dim as f32).sqrt();
        // Decode (each sequence's last position) and prefill (every position).
        for prefill in [false, true] {
            let mut tok_seq = Vec::new();
            let mut tok_pos = Vec::new();
            for (s, l) in lens.iter().enumerate() {
                let range = if prefill { 0..*l } else { l - 1..*l };
                for p in range {
                    tok_seq.push(s);
                    tok_pos.push(p as u32);
                }
            }
            let n = tok_seq.len();
            let q: Vec<f32> = (0..n * qd).map(|_| r.unit()).collect();
            let dq = dev.upload_floats(&q).unwrap();
            let table_of: Vec<u32> = tok_seq.iter().map(|&s| offsets[s]).collect();
            let (mut dto, mut dpos) = (dev.ids().unwrap(), dev.ids().unwrap());
            dev.write_ids(&mut dto, &table_of).unwrap();
            dev.write_ids(&mut dpos, &tok_pos).unwrap();
            let mut out = poisoned(&dev, n * qd);
            dev.attention(
                &dq, &cache, layer, &dtables, &dto, &dpos, None, n, shape, scale, &mut out,
            )
            .unwrap();
            let got = down(&dev, &out, n * qd);
            let group = shape.n_heads / shape.n_kv_heads;
            let hd = shape.head_dim;
            let mut reference = vec![0f64; n * qd];
            for t in 0..n {
                let (s, p) = (tok_seq[t], tok_pos[t] as usize);
                for h in 0..shape.n_heads {
                    let kvh = h / group;
                    let qv = &q[t * qd + h * hd..t * qd + (h + 1) * hd];
                    let scores: Vec<f64> = (0..=p)
                        .map(|j| {
                            let kr = &keys[s][j * kvd + kvh * hd..j * kvd + (kvh + 1) * hd];
                            qv.iter()
                                .zip(kr)
                                .map(|(a, b)| f64::from(*a * scale) * f64::from(f16_round(*b)))
                                .sum()
                        })
                        .collect();
                    let m = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let e: Vec<f64> = scores.iter().map(|v| (v - m).exp()).collect();
                    let z: f64 = e.iter().sum();
                    for d in 0..hd {
                        reference[t * qd + h * hd + d] = (0..=p)
                            .map(|j| {
                                e[j] / z * f64::from(f16_round(vals[s][j * kvd + kvh * hd + d]))
                            })
                            .sum();
                    }
                }
            }
            let ones = vec![1.0f64; reference.len()];
            let e = worst(&got, &reference, &ones);
            assert!(e <= 1e-4, "{shape:?} prefill={prefill}: error {e:.2e}");
            // The tiled kernel for prompt chunks, on the same rows and reference.
            if shape.head_dim <= kernels::cuda::ATTN_TILED_MAX_HEAD_DIM {
                let mut tiles = Vec::new();
                kernels::cuda::attention_tiles_of(&tok_seq, &mut tiles);
                let mut dtiles = dev.ids().unwrap();
                dev.write_ids(&mut dtiles, &tiles).unwrap();
                let mut out = poisoned(&dev, n * qd);
                dev.attention(
                    &dq,
                    &cache,
                    layer,
                    &dtables,
                    &dto,
                    &dpos,
                    Some((&dtiles, tiles.len())),
                    n,
                    shape,
                    scale,
                    &mut out,
                )
                .unwrap();
                let got = down(&dev, &out, n * qd);
                let e = worst(&got, &reference, &ones);
                assert!(
                    e <= 1e-4,
                    "{shape:?} prefill={prefill}, tiles: error {e:.2e}"
                );
            }
        }
    }
}
