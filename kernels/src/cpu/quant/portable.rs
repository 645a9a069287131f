//! Portable dot products, written to give bit-for-bit the results of the AVX2 ones.
//!
//! Each function mirrors the AVX2 kernel's arithmetic: the same eight float lanes
//! accumulated with fused multiply-adds in the same order, the same horizontal reduction,
//! and integer pair sums that saturate where `_mm256_maddubs_epi16` does. A machine without
//! AVX2 therefore produces exactly the tokens one with AVX2 does.

use super::{F16Lanes, f16_at, get_scale_min_k4, hsum8};
use crate::quant::dequant::bf16_to_f32;
use crate::{QK, QK_K};

/// `_mm256_maddubs_epi16` then `_mm256_madd_epi16(ones)` for output lane `l`: the sum of
/// four unsigned-by-signed byte products, with the i16 saturation of the pair sums.
#[inline(always)]
fn lane_us8(a: &[u8; 32], b: &[i8; 32], l: usize) -> i32 {
    let pair = |k: usize| {
        let s = i32::from(a[k]) * i32::from(b[k]) + i32::from(a[k + 1]) * i32::from(b[k + 1]);
        s.clamp(i32::from(i16::MIN), i32::from(i16::MAX))
    };
    pair(4 * l) + pair(4 * l + 2)
}

/// ggml's `mul_sum_i8_pairs_float` sign trick: |x| times y with x's sign, then `lane_us8`.
#[inline(always)]
fn sign_trick(x: &[i8; 32], y: &[i8; 32]) -> ([u8; 32], [i8; 32]) {
    let mut ax = [0u8; 32];
    let mut sy = [0i8; 32];
    for k in 0..32 {
        ax[k] = x[k].unsigned_abs();
        sy[k] = match x[k] {
            0 => 0,
            v if v < 0 => y[k].wrapping_neg(),
            _ => y[k],
        };
    }
    (ax, sy)
}

#[inline(always)]
fn i8x32(b: &[u8]) -> [i8; 32] {
    let mut out = [0i8; 32];
    for (o, v) in out.iter_mut().zip(b) {
        *o = *v as i8;
    }
    out
}

/// The 32 nibbles of a Q4 block in value order: low nibbles, then high nibbles.
#[inline(always)]
fn nibbles(qs: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    for j in 0..16 {
        out[j] = qs[j] & 0x0F;
        out[j + 16] = qs[j] >> 4;
    }
    out
}

pub(crate) fn dot_q4_0_q8_0(n: usize, x: &[u8], y: &[u8]) -> f32 {
    let mut acc = [0f32; 8];
    for i in 0..n / QK {
        let (xb, yb) = (&x[i * 18..i * 18 + 18], &y[i * 34..i * 34 + 34]);
        let d = f16_at(xb, 0) * f16_at(yb, 0);
        let mut qx = [0i8; 32];
        for (o, v) in qx.iter_mut().zip(nibbles(&xb[2..18])) {
            *o = v as i8 - 8;
        }
        let (ax, sy) = sign_trick(&qx, &i8x32(&yb[2..34]));
        for (l, a) in acc.iter_mut().enumerate() {
            *a = d.mul_add(lane_us8(&ax, &sy, l) as f32, *a);
        }
    }
    hsum8(acc)
}

pub(crate) fn dot_q4_1_q8_1(n: usize, x: &[u8], y: &[u8]) -> f32 {
    let mut acc = [0f32; 8];
    let mut summs = 0f32;
    for i in 0..n / QK {
        let (xb, yb) = (&x[i * 20..i * 20 + 20], &y[i * 36..i * 36 + 36]);
        let (d0, m0) = (f16_at(xb, 0), f16_at(xb, 2));
        let (d1, s1) = (f16_at(yb, 0), f16_at(yb, 2));
        // llama.cpp's build fuses this multiply-add (GCC contracts `summs += m * s`).
        summs = m0.mul_add(s1, summs);
        let d = d0 * d1;
        let qx = nibbles(&xb[4..20]);
        let qy = i8x32(&yb[4..36]);
        for (l, a) in acc.iter_mut().enumerate() {
            *a = d.mul_add(lane_us8(&qx, &qy, l) as f32, *a);
        }
    }
    hsum8(acc) + summs
}

pub(crate) fn dot_q8_0_q8_0(n: usize, x: &[u8], y: &[u8]) -> f32 {
    let mut acc = [0f32; 8];
    for i in 0..n / QK {
        let (xb, yb) = (&x[i * 34..i * 34 + 34], &y[i * 34..i * 34 + 34]);
        let d = f16_at(xb, 0) * f16_at(yb, 0);
        let (ax, sy) = sign_trick(&i8x32(&xb[2..34]), &i8x32(&yb[2..34]));
        for (l, a) in acc.iter_mut().enumerate() {
            *a = d.mul_add(lane_us8(&ax, &sy, l) as f32, *a);
        }
    }
    hsum8(acc)
}

/// The parts of a Q8_K block: scale, values, sums of each 16 values.
#[inline(always)]
pub(crate) fn q8k_parts(yb: &[u8]) -> (f32, &[u8], [i32; 16]) {
    let d = f32::from_le_bytes([yb[0], yb[1], yb[2], yb[3]]);
    let mut bsums = [0i32; 16];
    for (g, s) in bsums.iter_mut().enumerate() {
        let at = 4 + QK_K + 2 * g;
        *s = i32::from(i16::from_le_bytes([yb[at], yb[at + 1]]));
    }
    (d, &yb[4..4 + QK_K], bsums)
}

/// Sum of `mins[s] * (bsums[2s] + bsums[2s+1])`: the min term of Q4_K/Q5_K.
#[inline(always)]
pub(crate) fn k4_mins_sum(scales: &[u8], bsums: &[i32; 16]) -> i32 {
    (0..8)
        .map(|s| i32::from(get_scale_min_k4(s, scales).1) * (bsums[2 * s] + bsums[2 * s + 1]))
        .sum()
}

fn dot_k4_like(n: usize, x: &[u8], y: &[u8], bb: usize, value: impl Fn(&[u8], usize) -> u8) -> f32 {
    let mut sumf = 0f32;
    for i in 0..n / QK_K {
        let (xb, yb) = (&x[i * bb..(i + 1) * bb], &y[i * 292..(i + 1) * 292]);
        let (yd, q8, bsums) = q8k_parts(yb);
        let d = yd * f16_at(xb, 0);
        let dmin = yd * f16_at(xb, 2);
        let scales = &xb[4..16];
        let mut sumi = 0i32;
        for s in 0..8 {
            let sc = i32::from(get_scale_min_k4(s, scales).0);
            let part: i32 = (0..32)
                .map(|l| i32::from(value(xb, 32 * s + l)) * i32::from(q8[32 * s + l] as i8))
                .sum();
            sumi += sc * part;
        }
        sumf += d * sumi as f32;
        sumf -= dmin * k4_mins_sum(scales, &bsums) as f32;
    }
    sumf
}

pub(crate) fn dot_q4_k_q8_k(n: usize, x: &[u8], y: &[u8]) -> f32 {
    // Value v of a Q4_K block: chunk j = v / 64 holds 32 low nibbles then 32 high ones.
    dot_k4_like(n, x, y, 144, |xb, v| {
        let (j, r) = (v / 64, v % 64);
        let q = xb[16 + 32 * j + r % 32];
        if r < 32 { q & 0x0F } else { q >> 4 }
    })
}

pub(crate) fn dot_q5_k_q8_k(n: usize, x: &[u8], y: &[u8]) -> f32 {
    dot_k4_like(n, x, y, 176, |xb, v| {
        let (j, r) = (v / 64, v % 64);
        let (l, high) = (r % 32, r >= 32);
        let q = xb[48 + 32 * j + l];
        let bit = 2 * j + usize::from(high);
        let h = (xb[16 + l] >> bit) & 1;
        (if high { q >> 4 } else { q & 0x0F }) | (h << 4)
    })
}

pub(crate) fn dot_q6_k_q8_k(n: usize, x: &[u8], y: &[u8]) -> f32 {
    let mut sumf = 0f32;
    for i in 0..n / QK_K {
        let (xb, yb) = (&x[i * 210..(i + 1) * 210], &y[i * 292..(i + 1) * 292]);
        let (yd, q8, bsums) = q8k_parts(yb);
        let (ql, qh, sc) = (&xb[0..128], &xb[128..192], &xb[192..208]);
        let d = f16_at(xb, 208);
        let mut sumi = 0i32;
        for g in 0..16 {
            let (n_half, k, h) = (g / 8, (g % 8) / 2, g % 2);
            let mut part = 0i32;
            for l16 in 0..16 {
                let l = 16 * h + l16;
                let lq = ql[64 * n_half + 32 * (k % 2) + l];
                let low = if k < 2 { lq & 0x0F } else { lq >> 4 };
                let high = (qh[32 * n_half + l] >> (2 * k)) & 3;
                let q = i32::from(low | (high << 4));
                part += q * i32::from(q8[128 * n_half + 32 * k + l] as i8);
            }
            sumi += i32::from(sc[g] as i8) * (part - 32 * bsums[g]);
        }
        sumf += (yd * d) * sumi as f32;
    }
    sumf
}

/// Float dot products: four 8-lane fused accumulators over steps of 32, reduced as
/// `(s0 + s2) + (s1 + s3)` then across lanes; the tail (n % 32) is added in order.
fn dot_float(n: usize, load: impl Fn(usize) -> (f32, f32)) -> f32 {
    let mut acc = F16Lanes::default();
    let steps = n / 32;
    for i in 0..steps {
        for (j, lanes) in acc.0.iter_mut().enumerate() {
            for (l, a) in lanes.iter_mut().enumerate() {
                let (xv, yv) = load(32 * i + 8 * j + l);
                *a = xv.mul_add(yv, *a);
            }
        }
    }
    let mut sum = acc.reduce();
    for k in steps * 32..n {
        let (xv, yv) = load(k);
        sum += xv * yv;
    }
    sum
}

pub(crate) fn dot_f32(n: usize, x: &[u8], y: &[u8]) -> f32 {
    let at = |b: &[u8], k: usize| {
        f32::from_le_bytes([b[4 * k], b[4 * k + 1], b[4 * k + 2], b[4 * k + 3]])
    };
    dot_float(n, |k| (at(x, k), at(y, k)))
}

pub(crate) fn dot_f16(n: usize, x: &[u8], y: &[u8]) -> f32 {
    dot_float(n, |k| (f16_at(x, 2 * k), f16_at(y, 2 * k)))
}

pub(crate) fn dot_bf16(n: usize, x: &[u8], y: &[u8]) -> f32 {
    let at = |b: &[u8], k: usize| bf16_to_f32(u16::from_le_bytes([b[2 * k], b[2 * k + 1]]));
    dot_float(n, |k| (at(x, k), at(y, k)))
}

/// The F16 dot product of llama.cpp's batched path (llamafile's tinyBLAS): one 8-lane
/// fused accumulator over steps of 8, then the lanes summed. `n` is a multiple of 8.
pub(crate) fn dot_f16_gemm(n: usize, x: &[u8], y: &[u8]) -> f32 {
    let mut acc = [0f32; 8];
    for i in 0..n / 8 {
        for (l, a) in acc.iter_mut().enumerate() {
            let k = 8 * i + l;
            *a = f16_at(x, 2 * k).mul_add(f16_at(y, 2 * k), *a);
        }
    }
    hsum8(acc)
}

/// [`dot_f16`] over a paged `x` (see `super::f16_dot_paged`).
pub(crate) fn dot_f16_paged(n: usize, x: &[u8], p: super::Pieces<'_>, y: &[u8]) -> f32 {
    assert!(
        p.check(n, 32, x.len() / 2) && y.len() >= 2 * n,
        "paged f16 dot out of bounds"
    );
    let mut acc = F16Lanes::default();
    for (base, y0, len) in p.runs(n) {
        for s in 0..len / 32 {
            for (j, lanes) in acc.0.iter_mut().enumerate() {
                for (l, a) in lanes.iter_mut().enumerate() {
                    let k = 32 * s + 8 * j + l;
                    let (xv, yv) = (f16_at(x, 2 * (base + k)), f16_at(y, 2 * (y0 + k)));
                    *a = xv.mul_add(yv, *a);
                }
            }
        }
    }
    acc.reduce()
}

/// [`dot_f16_gemm`] over a paged `x`.
pub(crate) fn dot_f16_gemm_paged(n: usize, x: &[u8], p: super::Pieces<'_>, y: &[u8]) -> f32 {
    assert!(
        p.check(n, 8, x.len() / 2) && y.len() >= 2 * n,
        "paged f16 dot out of bounds"
    );
    let mut acc = [0f32; 8];
    for (base, y0, len) in p.runs(n) {
        for s in 0..len / 8 {
            for (l, a) in acc.iter_mut().enumerate() {
                let k = 8 * s + l;
                *a = f16_at(x, 2 * (base + k)).mul_add(f16_at(y, 2 * (y0 + k)), *a);
            }
        }
    }
    hsum8(acc)
}
