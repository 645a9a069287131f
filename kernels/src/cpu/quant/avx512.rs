//! AVX-512 (F, BW, VNNI) forms of the single-token products (four weight rows against one
//! activation row, what decode runs on) and of the Q4_1 and Q8_0 batch products (one
//! weight row against four or eight tokens: batched decode, prefill, a batch's output
//! head), chosen at run time when the CPU has them.
//!
//! In the single-token products two weight rows share each 512-bit register (in the batch
//! products two tokens do: see [`dot_pairs`]), and every row keeps the eight float lanes
//! the AVX2 kernel gives it: each lane gets the same integer sum (`vpdpbusd` adds the same
//! four byte products that `vpmaddubsw` + `vpmaddwd` add, and neither can overflow on these
//! operands), the same `d_x * d_y` product and the same fused multiply-add in the same block
//! order, and the lanes are reduced in the AVX2 order at the end. So the bits are those of
//! the AVX2 and portable kernels, which the tests check; only fewer instructions run, since
//! one 512-bit operation does the work of two 256-bit ones for a pair of rows and the block
//! headers of four rows are widened and multiplied together.

#![allow(clippy::cast_ptr_alignment)] // all vector loads here are unaligned loads

use std::arch::x86_64::*;

use super::{hsum8, prefetch_ahead};
use crate::QK;

/// A little-endian u32 at `p`.
///
/// # Safety
/// Four bytes are readable at `p`.
#[inline(always)]
unsafe fn u32_at(p: *const u8) -> u32 {
    // SAFETY: the caller guarantees 4 readable bytes; the read is unaligned.
    unsafe { std::ptr::read_unaligned(p.cast::<u32>()) }
}

/// A little-endian u16 at `p`, widened.
///
/// # Safety
/// Two bytes are readable at `p`.
#[inline(always)]
unsafe fn u16_at(p: *const u8) -> u64 {
    // SAFETY: the caller guarantees 2 readable bytes; the read is unaligned.
    u64::from(unsafe { std::ptr::read_unaligned(p.cast::<u16>()) })
}

/// The sixteen lanes of `v`.
#[inline]
#[target_feature(enable = "avx512f")]
fn lanes(v: __m512) -> [f32; 16] {
    let mut out = [0f32; 16];
    // SAFETY: `out` holds 16 floats; the store is unaligned.
    unsafe { _mm512_storeu_ps(out.as_mut_ptr(), v) };
    out
}

/// Q4_1 weights x Q8_1 activations, four weight rows against one activation row, each
/// pair's bits those of `avx2::dot_q4_1_q8_1` (so of llama.cpp's `ggml_vec_dot_q4_1_q8_1`).
///
/// Rows `a` and `b` of a pair sit in 128-bit chunks `[a low nibbles, b low, a high, b
/// high]`, against the activation's chunks `[low half, low, high, high]`: row `a`'s eight
/// AVX2 lanes are lanes 0-3 and 8-11 here, row `b`'s lanes 4-7 and 12-15.
///
/// # Safety
/// The CPU supports AVX-512 F, BW and VNNI, AVX2, FMA and F16C; each `xs[r]` holds `n / 32`
/// Q4_1 blocks and `y` `n / 32` Q8_1 blocks.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
pub(crate) unsafe fn dot_q4_1_q8_1_rows4(n: usize, xs: [&[u8]; 4], y: &[u8]) -> [f32; 4] {
    let nb = n / QK;
    assert!(xs.iter().all(|x| x.len() >= nb * 20) && y.len() >= nb * 36);
    let low = _mm512_set1_epi8(0x0F);
    let high = _mm512_setr_epi64(0, 0, 0, 0, 4, 4, 4, 4);
    // Where each row's `d_x * d_y` goes: the products sit in lanes 0, 2, 4, 6 of `d`.
    let pick = [
        _mm512_setr_epi32(0, 0, 0, 0, 2, 2, 2, 2, 0, 0, 0, 0, 2, 2, 2, 2),
        _mm512_setr_epi32(4, 4, 4, 4, 6, 6, 6, 6, 4, 4, 4, 4, 6, 6, 6, 6),
    ];
    let mut acc = [_mm512_setzero_ps(); 2];
    // Lane 2r + 1: row r's running `m_x * s_y` sum (the even lanes are not used).
    let mut summs = _mm256_setzero_ps();
    let xp = xs.map(<[u8]>::as_ptr);
    for i in 0..nb {
        // SAFETY: block i of y and of every xs[r] is in bounds (asserted): Q8_1 blocks are
        // 4 header bytes and 32 values, Q4_1 blocks 4 header bytes and 16 bytes of nibbles.
        unsafe {
            let py = y.as_ptr().add(i * 36);
            // [d_y, s_y] in every pair of lanes.
            let yds = _mm256_cvtph_ps(_mm_set1_epi32(u32_at(py) as i32));
            // The activation's 16-byte halves as [low, low, high, high].
            let qy = _mm512_mask_blend_epi64(
                0b1111_0000,
                _mm512_broadcast_i32x4(_mm_loadu_si128(py.add(4).cast())),
                _mm512_broadcast_i32x4(_mm_loadu_si128(py.add(20).cast())),
            );
            let px = xp.map(|p| p.add(i * 20));
            prefetch_ahead(px, 20 * nb);
            // [d_0, m_0, d_1, m_1, d_2, m_2, d_3, m_3].
            let dm = _mm256_cvtph_ps(_mm_setr_epi32(
                u32_at(px[0]) as i32,
                u32_at(px[1]) as i32,
                u32_at(px[2]) as i32,
                u32_at(px[3]) as i32,
            ));
            let d = _mm512_castps256_ps512(_mm256_mul_ps(dm, yds));
            summs = _mm256_fmadd_ps(dm, yds, summs);
            for (p, acc) in acc.iter_mut().enumerate() {
                // [a, b, a, b], shifted to [a, b, a >> 4, b >> 4], then the nibbles.
                let ab = _mm512_mask_blend_epi64(
                    0b1100_1100,
                    _mm512_broadcast_i32x4(_mm_loadu_si128(px[2 * p].add(4).cast())),
                    _mm512_broadcast_i32x4(_mm_loadu_si128(px[2 * p + 1].add(4).cast())),
                );
                let q = _mm512_and_si512(_mm512_srlv_epi64(ab, high), low);
                let xy = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(_mm512_setzero_si512(), q, qy));
                *acc = _mm512_fmadd_ps(_mm512_permutexvar_ps(pick[p], d), xy, *acc);
            }
        }
    }
    let mut sm = [0f32; 8];
    // SAFETY: `sm` holds 8 floats; the store is unaligned.
    unsafe { _mm256_storeu_ps(sm.as_mut_ptr(), summs) };
    let mut out = [0f32; 4];
    for (p, acc) in acc.into_iter().enumerate() {
        let l = lanes(acc);
        let a = [l[0], l[1], l[2], l[3], l[8], l[9], l[10], l[11]];
        let b = [l[4], l[5], l[6], l[7], l[12], l[13], l[14], l[15]];
        out[2 * p] = hsum8(a) + sm[4 * p + 1];
        out[2 * p + 1] = hsum8(b) + sm[4 * p + 3];
    }
    out
}

/// Q8_0 weights x Q8_0 activations, four weight rows against one activation row, each
/// pair's bits those of `avx2::dot_q8_0_q8_0` (ggml's `ggml_vec_dot_q8_0_q8_0`, with its
/// sign trick: |x| times y carrying x's sign, wrapping at -128 as `vpsignb` does). Rows `a`
/// and `b` of a pair fill the low and high 256 bits, so row `a`'s AVX2 lanes are lanes 0-7.
///
/// # Safety
/// The CPU supports AVX-512 F, BW and VNNI, AVX2, FMA and F16C; each `xs[r]` holds `n / 32`
/// Q8_0 blocks and `y` `n / 32` Q8_0 blocks.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
pub(crate) unsafe fn dot_q8_0_q8_0_rows4(n: usize, xs: [&[u8]; 4], y: &[u8]) -> [f32; 4] {
    let nb = n / QK;
    assert!(xs.iter().all(|x| x.len() >= nb * 34) && y.len() >= nb * 34);
    let pick = [
        _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1),
        _mm512_setr_epi32(2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3),
    ];
    let zero = _mm512_setzero_si512();
    let mut acc = [_mm512_setzero_ps(); 2];
    let xp = xs.map(<[u8]>::as_ptr);
    for i in 0..nb {
        // SAFETY: block i of y and of every xs[r] is in bounds (asserted): 2 scale bytes
        // and 32 values each.
        unsafe {
            let py = y.as_ptr().add(i * 34);
            let yd = _mm_cvtph_ps(_mm_cvtsi32_si128(u16_at(py) as i32));
            let qy = _mm512_broadcast_i64x4(_mm256_loadu_si256(py.add(2).cast()));
            let px = xp.map(|p| p.add(i * 34));
            prefetch_ahead(px, 34 * nb);
            let h = u16_at(px[0])
                | (u16_at(px[1]) << 16)
                | (u16_at(px[2]) << 32)
                | (u16_at(px[3]) << 48);
            let xd = _mm_cvtph_ps(_mm_cvtsi64_si128(h as i64));
            let d = _mm512_castps128_ps512(_mm_mul_ps(xd, _mm_broadcastss_ps(yd)));
            for (p, acc) in acc.iter_mut().enumerate() {
                let x = _mm512_inserti64x4::<1>(
                    _mm512_castsi256_si512(_mm256_loadu_si256(px[2 * p].add(2).cast())),
                    _mm256_loadu_si256(px[2 * p + 1].add(2).cast()),
                );
                let ax = _mm512_abs_epi8(x);
                let sy = _mm512_mask_sub_epi8(qy, _mm512_movepi8_mask(x), zero, qy);
                let xy = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(zero, ax, sy));
                *acc = _mm512_fmadd_ps(_mm512_permutexvar_ps(pick[p], d), xy, *acc);
            }
        }
    }
    let mut out = [0f32; 4];
    for (p, acc) in acc.into_iter().enumerate() {
        let l = lanes(acc);
        out[2 * p] = hsum8(std::array::from_fn(|j| l[j]));
        out[2 * p + 1] = hsum8(std::array::from_fn(|j| l[8 + j]));
    }
    out
}

/// Q4_1 weights x Q8_1 activations (`Q8_0 = false`) or Q8_0 weights x Q8_0 activations
/// (`true`), one weight row against `2 * P` activation rows (`P` of 2 or 4), each pair's
/// bits those of `avx2::dot_q4_1_q8_1` or `avx2::dot_q8_0_q8_0` (so of llama.cpp's
/// `ggml_vec_dot_q4_1_q8_1` / `ggml_vec_dot_q8_0_q8_0`, the latter with its sign trick as
/// in [`dot_q8_0_q8_0_rows4`]).
///
/// The activations come in pairs of tokens ([`crate::matmul::Activations`] keeps them so),
/// each pair's 32 values per block interleaved by 4-byte groups: lane `2j` of one 512-bit
/// register is the first token's AVX2 lane `j`, lane `2j + 1` the second token's. The
/// weight's 32 values have each 4-byte group doubled to match, so one `vpdpbusd` gives
/// both tokens' eight group sums, and both tokens' `d_x * d_y` reach their lanes as one
/// 8-byte broadcast. No lane changes place within a token, and each lane sees the same
/// integer sum, product and fused multiply-add in the same block order as AVX2 code.
///
/// Measured on Zen 4 with `matmul_bench` (one thread): Q4_1 at 128 tokens 57-62 GMAC/s
/// against 44-47 for the AVX2 eight-token kernel, and 46-52 against 20-25 at four tokens;
/// Q8_0 at 64 tokens 52-55 against 21-24. The broadcast is a register shuffle here; the same
/// Q4_1 loop in assembly with the broadcasts loaded from a stored buffer (as the AVX2
/// kernel does) ran at 52-59 GMAC/s.
///
/// `pairs` holds `P` pair rows of `n / 32` 64-byte blocks, `pair_stride` bytes apart; `ds`
/// `P / 2` scale tables of four tokens, `ds_stride` floats apart, each per block four `d`
/// then four `s` (not read for Q8_0).
///
/// # Safety
/// The CPU supports AVX-512 F, BW and VNNI, AVX2, FMA and F16C.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
pub(crate) unsafe fn dot_pairs<const Q8_0: bool, const P: usize, const T: usize>(
    n: usize,
    x: &[u8],
    pairs: &[u8],
    pair_stride: usize,
    ds: &[f32],
    ds_stride: usize,
) -> [f32; T] {
    const { assert!((P == 2 || P == 4) && T == 2 * P) };
    let nb = n / QK;
    let bb = if Q8_0 { 34 } else { 20 };
    assert!(
        x.len() >= nb * bb
            && pair_stride >= nb * 64
            && pairs.len() >= (P - 1) * pair_stride + nb * 64
            && ds_stride >= nb * 8
            && ds.len() >= (P / 2 - 1) * ds_stride + nb * 8
    );
    let mask = _mm512_set1_epi8(0x0F);
    // Each 4-byte group of the weight's values twice: Q8_0's 32 bytes; Q4_1's 16 bytes of
    // nibbles, once for the low nibbles and once for the high ones.
    let double = if Q8_0 {
        _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7)
    } else {
        _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 0, 0, 1, 1, 2, 2, 3, 3)
    };
    let high = _mm512_setr_epi64(0, 0, 0, 0, 4, 4, 4, 4);
    let zero = _mm512_setzero_si512();
    let mut acc = [_mm512_setzero_ps(); P];
    let mut summs = [_mm_setzero_ps(); 2];
    let mut dbuf = [0f32; 8];
    for i in 0..nb {
        // SAFETY: block i of x, of every pair row and of every scale table is in bounds
        // (asserted): `bb` bytes of the weight, 64 bytes of a pair, 8 floats of a table.
        unsafe {
            let px = x.as_ptr().add(i * bb);
            // [d_x, m_x] (Q4_1) or [d_x, 0] (Q8_0).
            let xdm = if Q8_0 {
                _mm_cvtph_ps(_mm_cvtsi32_si128(u16_at(px) as i32))
            } else {
                _mm_cvtph_ps(_mm_cvtsi32_si128(u32_at(px) as i32))
            };
            let dx = _mm_broadcastss_ps(xdm);
            let mx = _mm_broadcastss_ps(_mm_movehdup_ps(xdm));
            for (h, summs) in summs.iter_mut().take(P / 2).enumerate() {
                let t = ds.as_ptr().add(h * ds_stride + i * 8);
                _mm_storeu_ps(
                    dbuf.as_mut_ptr().add(4 * h),
                    _mm_mul_ps(dx, _mm_loadu_ps(t)),
                );
                if !Q8_0 {
                    *summs = _mm_fmadd_ps(mx, _mm_loadu_ps(t.add(4)), *summs);
                }
            }
            // The weight's unsigned bytes, and (Q8_0) which of its values are negative.
            let (qx, neg) = if Q8_0 {
                let v = _mm512_castsi256_si512(_mm256_loadu_si256(px.add(2).cast()));
                let q = _mm512_permutexvar_epi32(double, v);
                (_mm512_abs_epi8(q), _mm512_movepi8_mask(q))
            } else {
                let v = _mm512_castsi128_si512(_mm_loadu_si128(px.add(4).cast()));
                let q = _mm512_srlv_epi64(_mm512_permutexvar_epi32(double, v), high);
                (_mm512_and_si512(q, mask), 0)
            };
            for (p, acc) in acc.iter_mut().enumerate() {
                let y = _mm512_loadu_si512(pairs.as_ptr().add(p * pair_stride + i * 64).cast());
                // Q8_0: the activation carrying the weight's sign (wrapping as `vpsignb`).
                let y = if Q8_0 {
                    _mm512_mask_sub_epi8(y, neg, zero, y)
                } else {
                    y
                };
                let xy = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(zero, qx, y));
                let d = _mm512_castpd_ps(_mm512_set1_pd(std::ptr::read_unaligned(
                    dbuf.as_ptr().add(2 * p).cast::<f64>(),
                )));
                *acc = _mm512_fmadd_ps(d, xy, *acc);
            }
        }
    }
    // Each token's eight lanes reduced as `hsum8` reduces them, in vector registers:
    // token a of pair p holds lanes 2j of `acc[p]`, token b lanes 2j + 1, so adding the
    // 256-bit halves gives [r0a, r0b, r1a, r1b, r2a, r2b, r3a, r3b] (`r_k = l_k + l_k+4`),
    // adding the 128-bit halves [r0 + r2, r1 + r3] per token, and adding those the sum.
    let w = acc.map(|a| {
        let r = _mm256_add_ps(
            _mm512_castps512_ps256(a),
            _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(a))),
        );
        _mm_add_ps(_mm256_castps256_ps128(r), _mm256_extractf128_ps::<1>(r))
    });
    let mut out = [0f32; T];
    for (h, summs) in summs.iter().take(P / 2).enumerate() {
        // Tokens 4h .. 4h + 4: (r0 + r2) of each, then (r1 + r3) of each.
        let (w0, w1) = (w[2 * h], w[2 * h + 1]);
        let sums = _mm_add_ps(_mm_movelh_ps(w0, w1), _mm_movehl_ps(w1, w0));
        // SAFETY: `out` holds `T = 2 * P` floats, so 4 from 4h; the store is unaligned.
        unsafe { _mm_storeu_ps(out.as_mut_ptr().add(4 * h), _mm_add_ps(sums, *summs)) };
    }
    out
}
