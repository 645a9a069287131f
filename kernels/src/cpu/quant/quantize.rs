//! Quantization of activations into the type a weight's dot product wants.
//!
//! Matrix products multiply quantized weights with activations quantized once per product
//! (ggml's `vec_dot_type`), so the inner loop is integer arithmetic. The rounding follows
//! what llama.cpp runs on an x86 CPU with AVX2: round-half-to-even in the Q8_0/Q8_1 paths
//! (`_mm256_round_ps`), and the reference `quantize_row_q8_K_ref` with its `nearest_int`.

use super::{Isa, f32_to_bf16, put_f16};
use crate::{GgmlType, QK, QK_K};

/// Quantizes `x` (a whole number of `ty` blocks) into `dst` (`ty.row_bytes(x.len())` bytes).
pub(crate) fn quantize_row(ty: GgmlType, x: &[f32], dst: &mut [u8]) {
    quantize_row_on(Isa::active(), ty, x, dst);
}

/// [`quantize_row`] on instruction set `isa`: Q8_0 and Q8_1 rows take the AVX2 path where
/// `isa` has it (the same bytes as the scalar path, for finite input).
pub(crate) fn quantize_row_on(isa: Isa, ty: GgmlType, x: &[f32], dst: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    if isa.has_avx2() && matches!(ty, GgmlType::Q8_0 | GgmlType::Q8_1) {
        // SAFETY: the CPU has AVX2, FMA and F16C (`has_avx2`), and `dst` holds the row's
        // blocks (the callers check its length).
        unsafe {
            if ty == GgmlType::Q8_1 {
                super::avx2::quantize_q8::<true>(x, dst);
            } else {
                super::avx2::quantize_q8::<false>(x, dst);
            }
        }
        return;
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = isa;
    match ty {
        GgmlType::F32 => {
            for (v, out) in x.iter().zip(dst.chunks_exact_mut(4)) {
                out.copy_from_slice(&v.to_le_bytes());
            }
        }
        GgmlType::F16 => {
            for (i, v) in x.iter().enumerate() {
                put_f16(dst, 2 * i, *v);
            }
        }
        GgmlType::BF16 => {
            for (v, out) in x.iter().zip(dst.chunks_exact_mut(2)) {
                out.copy_from_slice(&f32_to_bf16(*v).to_le_bytes());
            }
        }
        GgmlType::Q8_0 => {
            for (xb, yb) in x
                .chunks_exact(QK)
                .zip(dst.chunks_exact_mut(ty.block_bytes()))
            {
                let d = q8_block(xb, &mut yb[2..]);
                put_f16(yb, 0, d);
            }
        }
        GgmlType::Q8_1 => {
            for (xb, yb) in x
                .chunks_exact(QK)
                .zip(dst.chunks_exact_mut(ty.block_bytes()))
            {
                let d = q8_block(xb, &mut yb[4..]);
                let sum: i32 = yb[4..].iter().map(|q| i32::from(*q as i8)).sum();
                put_f16(yb, 0, d);
                put_f16(yb, 2, d * sum as f32);
            }
        }
        GgmlType::Q8_K => {
            for (xb, yb) in x
                .chunks_exact(QK_K)
                .zip(dst.chunks_exact_mut(ty.block_bytes()))
            {
                q8_k_block(xb, yb);
            }
        }
        // Weight-only types are never produced at run time: `vec_dot_type` never names one.
        GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q4_K | GgmlType::Q5_K | GgmlType::Q6_K => {
            debug_assert!(false, "{} is not an activation type", ty.name());
        }
    }
}

/// Quantizes 32 values to i8 with one scale, as ggml's AVX2 `quantize_row_q8_0` does.
/// Returns the scale `d` (before its conversion to f16).
fn q8_block(x: &[f32], qs: &mut [u8]) -> f32 {
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    for (q, v) in qs[..QK].iter_mut().zip(x) {
        // |v * id| <= 127, where `nearest_int` equals round-half-even (and, unlike
        // `round_ties_even`, compiles to plain vector arithmetic without SSE4.1).
        *q = nearest_int(v * id) as i8 as u8;
    }
    d
}

/// ggml's `nearest_int`: round half to even through the 1.5 * 2^23 trick.
#[inline]
fn nearest_int(f: f32) -> i32 {
    let val = f + 12_582_912.0;
    (val.to_bits() & 0x007f_ffff) as i32 - 0x0040_0000
}

/// ggml's `quantize_row_q8_K_ref` for one block: f32 scale, 256 i8, 16 sums of 16.
fn q8_k_block(x: &[f32], y: &mut [u8]) {
    let mut amax = 0.0f32;
    let mut max = 0.0f32;
    for v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = *v;
        }
    }
    if amax == 0.0 {
        y.fill(0);
        return;
    }
    let iscale = -127.0 / max;
    let qs = &mut y[4..4 + QK_K];
    for (q, v) in qs.iter_mut().zip(x) {
        *q = nearest_int(iscale * v).min(127) as i8 as u8;
    }
    for j in 0..QK_K / 16 {
        let sum: i16 = y[4 + 16 * j..4 + 16 * j + 16]
            .iter()
            .map(|q| i16::from(*q as i8))
            .sum();
        let at = 4 + QK_K + 2 * j;
        y[at..at + 2].copy_from_slice(&sum.to_le_bytes());
    }
    y[0..4].copy_from_slice(&(1.0 / iscale).to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The AVX2 Q8_0 and Q8_1 rows are byte for byte the scalar ones, on values that round
    /// half way, zeros, a block of zeros, tiny and large magnitudes.
    #[test]
    fn avx2_q8_rows_equal_scalar_rows() {
        if !Isa::Avx2.has_avx2() {
            return;
        }
        let n = 32 * 9;
        let mut x: Vec<f32> = (0..n)
            .map(|i| ((i * 7919 % 1013) as f32 - 506.0) * 0.0137)
            .collect();
        x[5] = 0.0;
        x[32..64].fill(0.0);
        for (j, v) in x[64..96].iter_mut().enumerate() {
            // Multiples of 127 / 254 of the block maximum: products landing on .5.
            *v = (j as f32 - 16.0) * 0.5;
        }
        x[96..128].iter_mut().for_each(|v| *v *= 1e-30);
        x[128..160].iter_mut().for_each(|v| *v *= 1e20);
        x[160] = -1e-3;
        for ty in [GgmlType::Q8_0, GgmlType::Q8_1] {
            let mut a = vec![0u8; ty.row_bytes(n).unwrap()];
            let mut b = vec![1u8; a.len()];
            quantize_row_on(Isa::Portable, ty, &x, &mut a);
            quantize_row_on(Isa::Avx2, ty, &x, &mut b);
            assert_eq!(a, b, "{}", ty.name());
        }
    }

    #[test]
    fn nearest_int_rounds_half_to_even() {
        assert_eq!(nearest_int(0.5), 0);
        assert_eq!(nearest_int(1.5), 2);
        assert_eq!(nearest_int(-1.5), -2);
        assert_eq!(nearest_int(2.4999), 2);
        assert_eq!(nearest_int(-126.7), -127);
    }

    #[test]
    fn q8_0_uses_full_range_and_keeps_sign() {
        let x: Vec<f32> = (0..32).map(|i| i as f32 - 16.0).collect();
        let mut y = vec![0u8; GgmlType::Q8_0.block_bytes()];
        quantize_row(GgmlType::Q8_0, &x, &mut y);
        assert_eq!(y[2] as i8, -127); // -16 is the largest magnitude
        assert_eq!(y[2 + 16] as i8, 0);
    }

    #[test]
    fn q8_k_sums_match_values() {
        let x: Vec<f32> = (0..256)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.01)
            .collect();
        let mut y = vec![0u8; GgmlType::Q8_K.block_bytes()];
        quantize_row(GgmlType::Q8_K, &x, &mut y);
        for g in 0..16 {
            let s: i16 = y[4 + 16 * g..4 + 16 * g + 16]
                .iter()
                .map(|q| i16::from(*q as i8))
                .sum();
            let at = 4 + 256 + 2 * g;
            assert_eq!(s, i16::from_le_bytes([y[at], y[at + 1]]));
        }
    }
}
