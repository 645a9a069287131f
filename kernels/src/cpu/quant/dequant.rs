//! Dequantization of one row of any storage type to f32, following ggml's reference
//! `dequantize_row_*` functions (ggml-quants.c) value for value.
//!
//! Used for embedding lookups (one row per token) and by tests as the ground truth the dot
//! products are checked against; the hot matrix products never dequantize.

use super::{f16_at, get_scale_min_k4};
use crate::{GgmlType, QK, QK_K};

/// Writes the `dst.len()` values stored in `src` (a whole number of `ty` blocks) to `dst`.
/// The caller has checked that `src.len() == ty.row_bytes(dst.len())`.
pub(crate) fn dequantize_row(ty: GgmlType, src: &[u8], dst: &mut [f32]) {
    let bb = ty.block_bytes();
    let bl = ty.block_len();
    for (block, out) in src.chunks_exact(bb).zip(dst.chunks_exact_mut(bl)) {
        match ty {
            GgmlType::F32 => out[0] = f32::from_le_bytes([block[0], block[1], block[2], block[3]]),
            GgmlType::F16 => out[0] = f16_at(block, 0),
            GgmlType::BF16 => out[0] = bf16_to_f32(u16::from_le_bytes([block[0], block[1]])),
            GgmlType::Q4_0 => q4_0(block, out),
            GgmlType::Q4_1 => q4_1(block, out),
            GgmlType::Q8_0 => q8_0(block, out),
            GgmlType::Q8_1 => q8_1(block, out),
            GgmlType::Q4_K => q4_k(block, out),
            GgmlType::Q5_K => q5_k(block, out),
            GgmlType::Q6_K => q6_k(block, out),
            GgmlType::Q8_K => q8_k(block, out),
        }
    }
}

/// bf16 is the top half of an f32.
#[inline]
pub(crate) fn bf16_to_f32(bits: u16) -> f32 {
    f32::from_bits(u32::from(bits) << 16)
}

fn q4_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let qs = &b[2..2 + QK / 2];
    for j in 0..QK / 2 {
        y[j] = (i32::from(qs[j] & 0x0F) - 8) as f32 * d;
        y[j + QK / 2] = (i32::from(qs[j] >> 4) - 8) as f32 * d;
    }
}

fn q4_1(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let m = f16_at(b, 2);
    let qs = &b[4..4 + QK / 2];
    for j in 0..QK / 2 {
        y[j] = f32::from(qs[j] & 0x0F) * d + m;
        y[j + QK / 2] = f32::from(qs[j] >> 4) * d + m;
    }
}

fn q8_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    for (j, q) in b[2..2 + QK].iter().enumerate() {
        y[j] = f32::from(*q as i8) * d;
    }
}

fn q8_1(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    for (j, q) in b[4..4 + QK].iter().enumerate() {
        y[j] = f32::from(*q as i8) * d;
    }
}

fn q4_k(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let dmin = f16_at(b, 2);
    let scales = &b[4..16];
    let qs = &b[16..16 + QK_K / 2];
    for j in 0..QK_K / 64 {
        let (sc1, m1) = get_scale_min_k4(2 * j, scales);
        let (sc2, m2) = get_scale_min_k4(2 * j + 1, scales);
        let (d1, min1) = (d * f32::from(sc1), dmin * f32::from(m1));
        let (d2, min2) = (d * f32::from(sc2), dmin * f32::from(m2));
        let q = &qs[32 * j..32 * j + 32];
        let out = &mut y[64 * j..64 * j + 64];
        for l in 0..32 {
            out[l] = d1 * f32::from(q[l] & 0x0F) - min1;
            out[l + 32] = d2 * f32::from(q[l] >> 4) - min2;
        }
    }
}

fn q5_k(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let dmin = f16_at(b, 2);
    let scales = &b[4..16];
    let qh = &b[16..16 + QK_K / 8];
    let qs = &b[16 + QK_K / 8..16 + QK_K / 8 + QK_K / 2];
    for j in 0..QK_K / 64 {
        let (sc1, m1) = get_scale_min_k4(2 * j, scales);
        let (sc2, m2) = get_scale_min_k4(2 * j + 1, scales);
        let (d1, min1) = (d * f32::from(sc1), dmin * f32::from(m1));
        let (d2, min2) = (d * f32::from(sc2), dmin * f32::from(m2));
        let (u1, u2) = (1u8 << (2 * j), 1u8 << (2 * j + 1));
        let q = &qs[32 * j..32 * j + 32];
        let out = &mut y[64 * j..64 * j + 64];
        for l in 0..32 {
            let lo = (q[l] & 0x0F) + if qh[l] & u1 != 0 { 16 } else { 0 };
            let hi = (q[l] >> 4) + if qh[l] & u2 != 0 { 16 } else { 0 };
            out[l] = d1 * f32::from(lo) - min1;
            out[l + 32] = d2 * f32::from(hi) - min2;
        }
    }
}

fn q6_k(b: &[u8], y: &mut [f32]) {
    let ql_all = &b[0..QK_K / 2];
    let qh_all = &b[QK_K / 2..QK_K / 2 + QK_K / 4];
    let sc_all = &b[QK_K / 2 + QK_K / 4..QK_K / 2 + QK_K / 4 + QK_K / 16];
    let d = f16_at(b, QK_K / 2 + QK_K / 4 + QK_K / 16);
    for n in 0..QK_K / 128 {
        let ql = &ql_all[64 * n..];
        let qh = &qh_all[32 * n..];
        let sc = &sc_all[8 * n..];
        let out = &mut y[128 * n..128 * n + 128];
        for l in 0..32 {
            let is = l / 16;
            let q1 = i32::from((ql[l] & 0x0F) | ((qh[l] & 3) << 4)) - 32;
            let q2 = i32::from((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) - 32;
            let q3 = i32::from((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
            let q4 = i32::from((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
            out[l] = d * f32::from(sc[is] as i8) * q1 as f32;
            out[l + 32] = d * f32::from(sc[is + 2] as i8) * q2 as f32;
            out[l + 64] = d * f32::from(sc[is + 4] as i8) * q3 as f32;
            out[l + 96] = d * f32::from(sc[is + 6] as i8) * q4 as f32;
        }
    }
}

fn q8_k(b: &[u8], y: &mut [f32]) {
    let d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    for (j, q) in b[4..4 + QK_K].iter().enumerate() {
        y[j] = d * f32::from(*q as i8);
    }
}
