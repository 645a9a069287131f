//! AVX2 + FMA + F16C dot products (x86_64), chosen at run time when the CPU has them.
//!
//! The legacy-quant kernels follow ggml's AVX2 ones (`ggml_vec_dot_q4_1_q8_1` etc.); the
//! K-quant kernels sum each 256-value super-block exactly in integers and finish in scalar
//! floats. `portable.rs` mirrors every step, so both paths give identical bits.
//! The `x4` variants multiply one weight row with four activation rows, unpacking each weight
//! block once: that is what makes prefill (many tokens per weight read) fast.

#![allow(clippy::cast_ptr_alignment)] // all vector loads here are unaligned loads

use std::arch::x86_64::*;

use super::portable::{k4_mins_sum, q8k_parts};
use super::{f16_at, get_scale_min_k4, prefetch_ahead};
use crate::{QK, QK_K};

/// Reads a little-endian f16 at `p` and widens it.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn f16x2(bits: u32) -> __m128 {
    _mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32))
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn hsum_f32_8(x: __m256) -> f32 {
    let res = _mm_add_ps(_mm256_extractf128_ps(x, 1), _mm256_castps256_ps128(x));
    let res = _mm_add_ps(res, _mm_movehl_ps(res, res));
    let res = _mm_add_ss(res, _mm_movehdup_ps(res));
    _mm_cvtss_f32(res)
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn hsum_i32_8(x: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(x), _mm256_extracti128_si256(x, 1));
    let s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01));
    _mm_cvtsi128_si32(s)
}

/// 16 bytes of nibbles -> 32 bytes: low nibbles then high nibbles.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn nibbles(p: *const u8) -> __m256i {
    // SAFETY: the caller guarantees 16 readable bytes at `p`.
    let tmp = unsafe { _mm_loadu_si128(p as *const __m128i) };
    let bytes = _mm256_insertf128_si256(_mm256_castsi128_si256(tmp), _mm_srli_epi16(tmp, 4), 1);
    _mm256_and_si256(_mm256_set1_epi8(0x0F), bytes)
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load32(p: *const u8) -> __m256i {
    // SAFETY: the caller guarantees 32 readable bytes at `p`.
    unsafe { _mm256_loadu_si256(p as *const __m256i) }
}

/// Unsigned-by-signed byte products summed in fours, as floats.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn us8_pairs_f32(ax: __m256i, sy: __m256i) -> __m256 {
    let dot = _mm256_maddubs_epi16(ax, sy);
    _mm256_cvtepi32_ps(_mm256_madd_epi16(_mm256_set1_epi16(1), dot))
}

/// Signed-by-signed byte products summed in fours (ggml's sign trick), as floats.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn i8_pairs_f32(x: __m256i, y: __m256i) -> __m256 {
    us8_pairs_f32(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x))
}

/// Two f16 values at `p` (a block header), widened into lanes 0 and 1.
///
/// # Safety
/// Four bytes are readable at `p`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f16x2_at(p: *const u8) -> __m128 {
    // SAFETY: the caller guarantees 4 readable bytes; the read is unaligned.
    let bits = unsafe { std::ptr::read_unaligned(p.cast::<u32>()) };
    f16x2(bits)
}

/// One f16 value at `p`, widened into lane 0.
///
/// # Safety
/// Two bytes are readable at `p`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f16x1_at(p: *const u8) -> __m128 {
    // SAFETY: the caller guarantees 2 readable bytes; the read is unaligned.
    let bits = unsafe { std::ptr::read_unaligned(p.cast::<u16>()) };
    f16x2(u32::from(bits))
}

/// Q4_1 weights x Q8_1 activations: `R` weight rows against `N` activation rows, each
/// pair accumulated exactly as llama.cpp's `ggml_vec_dot_q4_1_q8_1` does (so any tile
/// shape gives the same bits). Several independent rows hide the latency of the fused
/// accumulation chains, and each unpacked weight block serves `N` activation rows.
///
/// # Safety
/// The CPU supports AVX2, FMA and F16C; each `xs[r]` holds `n / 32` Q4_1 blocks and each
/// `ys[c]` `n / 32` Q8_1 blocks.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_q4_1_q8_1<const R: usize, const N: usize>(
    n: usize,
    xs: [&[u8]; R],
    ys: [&[u8]; N],
) -> [[f32; N]; R] {
    let nb = n / QK;
    assert!(xs.iter().all(|x| x.len() >= nb * 20) && ys.iter().all(|y| y.len() >= nb * 36));
    let mut acc = [[_mm256_setzero_ps(); N]; R];
    let mut summs = [[_mm_setzero_ps(); N]; R];
    for i in 0..nb {
        let mut yd = [_mm_setzero_ps(); N];
        let mut ysum = [_mm_setzero_ps(); N];
        let mut qy = [_mm256_setzero_si256(); N];
        for c in 0..N {
            // SAFETY: block i of ys[c] is in bounds (asserted): 4 header bytes, 32 values.
            unsafe {
                let p = ys[c].as_ptr().add(i * 36);
                yd[c] = f16x2_at(p);
                qy[c] = load32(p.add(4));
            }
            ysum[c] = _mm_movehdup_ps(yd[c]);
        }
        if R == 4 && N == 1 {
            prefetch_ahead(xs.map(|x| x.as_ptr().wrapping_add(i * 20)), nb * 20);
        }
        for r in 0..R {
            // SAFETY: block i of xs[r] is in bounds (asserted): 4 header bytes, 16 nibbles.
            let (xdm, qx) = unsafe {
                let p = xs[r].as_ptr().add(i * 20);
                (f16x2_at(p), nibbles(p.add(4)))
            };
            let m = _mm_movehdup_ps(xdm);
            for c in 0..N {
                // m * s + summs, fused as llama.cpp's build fuses it.
                summs[r][c] = _mm_fmadd_ss(m, ysum[c], summs[r][c]);
                let d = _mm256_broadcastss_ps(_mm_mul_ss(xdm, yd[c]));
                acc[r][c] = _mm256_fmadd_ps(d, us8_pairs_f32(qx, qy[c]), acc[r][c]);
            }
        }
    }
    let mut out = [[0f32; N]; R];
    for r in 0..R {
        for c in 0..N {
            out[r][c] = hsum_f32_8(acc[r][c]) + _mm_cvtss_f32(summs[r][c]);
        }
    }
    out
}

/// One Q4_1 weight row x eight Q8_1 activation rows, each pair accumulated exactly as
/// [`dot_q4_1_q8_1`] does (so as llama.cpp does). The eight activation rows lie `stride`
/// bytes apart from the start of `ys`. The eight tokens' block scales and sums come from
/// `ds` ([`crate::matmul::Activations`] keeps them per block as eight `d` then eight `s`,
/// in f32): one vector multiply gives the eight `d_x * d_y` products and one fused
/// multiply-add the eight `m_x * s_y` sums. Each lane computes the same operations on the
/// same values as the scalar code, so the bits do not change.
///
/// The block loop is written out in assembly, for two reasons measured on Zen 3:
/// - Each token's `d_x * d_y` reaches its eight lanes as a broadcast load from a small
///   buffer on the stack, which uses only the load ports. Broadcasting a lane in registers
///   (`vpermps`, or the two shuffles the compiler makes of it) adds an operation per token
///   on the shuffle pipes, which were the bottleneck; and the compiler turns a broadcast of
///   a value it has just stored back into shuffles.
/// - The eight accumulators, the nibble mask, the ones, the unpacked weights and the sums
///   take 12 of the 16 vector registers; the compiler's schedule of the same code spilled
///   accumulators to the stack on every block.
///
/// # Safety
/// The CPU supports AVX2, FMA and F16C; `x` holds `n / 32` Q4_1 blocks, `ys` eight rows of
/// `n / 32` Q8_1 blocks `stride` bytes apart, and `ds` `16 * n / 32` values.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_q4_1_q8_1_x8(
    n: usize,
    x: &[u8],
    ys: &[u8],
    stride: usize,
    ds: &[f32],
) -> [f32; 8] {
    let nb = n / QK;
    assert!(
        x.len() >= nb * 20
            && stride >= nb * 36
            && ys.len() >= 7 * stride + nb * 36
            && ds.len() >= nb * 16
    );
    let [
        mut a0,
        mut a1,
        mut a2,
        mut a3,
        mut a4,
        mut a5,
        mut a6,
        mut a7,
    ] = [_mm256_setzero_ps(); 8];
    let mut summs = _mm256_setzero_ps();
    if nb > 0 {
        let mut dbuf = [0f32; 8];
        let ones = _mm256_set1_epi16(1);
        let mask = _mm256_set1_epi8(0x0F);
        // SAFETY: the loop reads, for blocks 0..nb: 20 bytes of x (the f16 pair is read as
        // 8 bytes, still inside the block), 64 bytes of ds, and the 32 values after the
        // 4-byte header in each of the eight rows, all in bounds (asserted); it writes only
        // `dbuf`, and the pointer registers are copies it may advance.
        unsafe {
            std::arch::asm!(
                "2:",
                "vcvtph2ps {t0:x}, qword ptr [{px}]",
                "vbroadcastss {t1}, {t0:x}",
                "vmulps {t1}, {t1}, ymmword ptr [{pds}]",
                "vmovups ymmword ptr [{dbuf}], {t1}",
                "vmovshdup {t0:x}, {t0:x}",
                "vbroadcastss {t1}, {t0:x}",
                "vfmadd231ps {summs}, {t1}, ymmword ptr [{pds} + 32]",
                "vmovdqu {t0:x}, xmmword ptr [{px} + 4]",
                "vpsrlw {t1:x}, {t0:x}, 4",
                "vinserti128 {qx}, {t0}, {t1:x}, 1",
                "vpand {qx}, {qx}, {mask}",
                "vpmaddubsw {t0}, {qx}, ymmword ptr [{b0} + 4]",
                "vpmaddwd {t0}, {t0}, {ones}",
                "vcvtdq2ps {t0}, {t0}",
                "vbroadcastss {t1}, dword ptr [{dbuf}]",
                "vfmadd231ps {a0}, {t0}, {t1}",
                "vpmaddubsw {t0}, {qx}, ymmword ptr [{b0} + {s} + 4]",
                "vpmaddwd {t0}, {t0}, {ones}",
                "vcvtdq2ps {t0}, {t0}",
                "vbroadcastss {t1}, dword ptr [{dbuf} + 4]",
                "vfmadd231ps {a1}, {t0}, {t1}",
                "vpmaddubsw {t0}, {qx}, ymmword ptr [{b0} + {s}*2 + 4]",
                "vpmaddwd {t0}, {t0}, {ones}",
                "vcvtdq2ps {t0}, {t0}",
                "vbroadcastss {t1}, dword ptr [{dbuf} + 8]",
                "vfmadd231ps {a2}, {t0}, {t1}",
                "vpmaddubsw {t0}, {qx}, ymmword ptr [{b0} + {s3} + 4]",
                "vpmaddwd {t0}, {t0}, {ones}",
                "vcvtdq2ps {t0}, {t0}",
                "vbroadcastss {t1}, dword ptr [{dbuf} + 12]",
                "vfmadd231ps {a3}, {t0}, {t1}",
                "vpmaddubsw {t0}, {qx}, ymmword ptr [{b4} + 4]",
                "vpmaddwd {t0}, {t0}, {ones}",
                "vcvtdq2ps {t0}, {t0}",
                "vbroadcastss {t1}, dword ptr [{dbuf} + 16]",
                "vfmadd231ps {a4}, {t0}, {t1}",
                "vpmaddubsw {t0}, {qx}, ymmword ptr [{b4} + {s} + 4]",
                "vpmaddwd {t0}, {t0}, {ones}",
                "vcvtdq2ps {t0}, {t0}",
                "vbroadcastss {t1}, dword ptr [{dbuf} + 20]",
                "vfmadd231ps {a5}, {t0}, {t1}",
                "vpmaddubsw {t0}, {qx}, ymmword ptr [{b4} + {s}*2 + 4]",
                "vpmaddwd {t0}, {t0}, {ones}",
                "vcvtdq2ps {t0}, {t0}",
                "vbroadcastss {t1}, dword ptr [{dbuf} + 24]",
                "vfmadd231ps {a6}, {t0}, {t1}",
                "vpmaddubsw {t0}, {qx}, ymmword ptr [{b4} + {s3} + 4]",
                "vpmaddwd {t0}, {t0}, {ones}",
                "vcvtdq2ps {t0}, {t0}",
                "vbroadcastss {t1}, dword ptr [{dbuf} + 28]",
                "vfmadd231ps {a7}, {t0}, {t1}",
                "add {px}, 20",
                "add {pds}, 64",
                "add {b0}, 36",
                "add {b4}, 36",
                "dec {count}",
                "jnz 2b",
                px = inout(reg) x.as_ptr() => _,
                pds = inout(reg) ds.as_ptr() => _,
                b0 = inout(reg) ys.as_ptr() => _,
                b4 = inout(reg) ys.as_ptr().add(4 * stride) => _,
                count = inout(reg) nb => _,
                s = in(reg) stride,
                s3 = in(reg) 3 * stride,
                dbuf = in(reg) dbuf.as_mut_ptr(),
                ones = in(ymm_reg) ones,
                mask = in(ymm_reg) mask,
                qx = out(ymm_reg) _,
                t0 = out(ymm_reg) _,
                t1 = out(ymm_reg) _,
                summs = inout(ymm_reg) summs,
                a0 = inout(ymm_reg) a0,
                a1 = inout(ymm_reg) a1,
                a2 = inout(ymm_reg) a2,
                a3 = inout(ymm_reg) a3,
                a4 = inout(ymm_reg) a4,
                a5 = inout(ymm_reg) a5,
                a6 = inout(ymm_reg) a6,
                a7 = inout(ymm_reg) a7,
                options(nostack),
            );
        }
    }
    let acc = [a0, a1, a2, a3, a4, a5, a6, a7];
    let mut m = [0f32; 8];
    // SAFETY: `m` holds eight f32.
    unsafe { _mm256_storeu_ps(m.as_mut_ptr(), summs) };
    std::array::from_fn(|c| hsum_f32_8(acc[c]) + m[c])
}

/// Q4_0 (`NIBBLES = true`) or Q8_0 weights x Q8_0 activations, `R` x `N` pairs as in
/// [`dot_q4_1_q8_1`] (ggml's `ggml_vec_dot_q4_0_q8_0` / `ggml_vec_dot_q8_0_q8_0`).
///
/// # Safety
/// The CPU supports AVX2, FMA and F16C; each `xs[r]` holds `n / 32` blocks of the weight
/// type and each `ys[c]` `n / 32` Q8_0 blocks.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_q_q8_0<const NIBBLES: bool, const R: usize, const N: usize>(
    n: usize,
    xs: [&[u8]; R],
    ys: [&[u8]; N],
) -> [[f32; N]; R] {
    let nb = n / QK;
    let bb = if NIBBLES { 18 } else { 34 };
    assert!(xs.iter().all(|x| x.len() >= nb * bb) && ys.iter().all(|y| y.len() >= nb * 34));
    let mut acc = [[_mm256_setzero_ps(); N]; R];
    for i in 0..nb {
        let mut yd = [_mm_setzero_ps(); N];
        let mut qy = [_mm256_setzero_si256(); N];
        for c in 0..N {
            // SAFETY: block i of ys[c] is in bounds (asserted): 2 scale bytes, 32 values.
            unsafe {
                let p = ys[c].as_ptr().add(i * 34);
                yd[c] = f16x1_at(p);
                qy[c] = load32(p.add(2));
            }
        }
        if R == 4 && N == 1 {
            prefetch_ahead(xs.map(|x| x.as_ptr().wrapping_add(i * bb)), nb * bb);
        }
        for r in 0..R {
            // SAFETY: block i of xs[r] is in bounds (asserted).
            let (xd, qx) = unsafe {
                let p = xs[r].as_ptr().add(i * bb);
                let q = if NIBBLES {
                    _mm256_sub_epi8(nibbles(p.add(2)), _mm256_set1_epi8(8))
                } else {
                    load32(p.add(2))
                };
                (f16x1_at(p), q)
            };
            for c in 0..N {
                let d = _mm256_broadcastss_ps(_mm_mul_ss(xd, yd[c]));
                acc[r][c] = _mm256_fmadd_ps(d, i8_pairs_f32(qx, qy[c]), acc[r][c]);
            }
        }
    }
    let mut out = [[0f32; N]; R];
    for r in 0..R {
        for c in 0..N {
            out[r][c] = hsum_f32_8(acc[r][c]);
        }
    }
    out
}

/// Q4_0 weights x Q8_0 activations (see [`dot_q_q8_0`]).
///
/// # Safety
/// As for [`dot_q_q8_0`].
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_q4_0_q8_0<const R: usize, const N: usize>(
    n: usize,
    xs: [&[u8]; R],
    ys: [&[u8]; N],
) -> [[f32; N]; R] {
    // SAFETY: forwarded from the caller.
    unsafe { dot_q_q8_0::<true, R, N>(n, xs, ys) }
}

/// Q8_0 weights x Q8_0 activations (see [`dot_q_q8_0`]).
///
/// # Safety
/// As for [`dot_q_q8_0`].
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_q8_0_q8_0<const R: usize, const N: usize>(
    n: usize,
    xs: [&[u8]; R],
    ys: [&[u8]; N],
) -> [[f32; N]; R] {
    // SAFETY: forwarded from the caller.
    unsafe { dot_q_q8_0::<false, R, N>(n, xs, ys) }
}

/// Sum over one 32-value sub-block of `q * q8` times a scale, in i32 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn scaled(q: __m256i, q8: __m256i, scale: __m256i) -> __m256i {
    _mm256_madd_epi16(_mm256_maddubs_epi16(q, q8), scale)
}

/// Q4_K (`HIGH_BITS = false`) or Q5_K (`true`) weights x Q8_K activations.
///
/// # Safety
/// The CPU supports AVX2, FMA and F16C; `x` holds `n / 256` blocks of the type and `y` as
/// many Q8_K blocks.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_q45_k_q8_k<const HIGH_BITS: bool>(n: usize, x: &[u8], y: &[u8]) -> f32 {
    let bb = if HIGH_BITS { 176 } else { 144 };
    let nb = n / QK_K;
    assert!(x.len() >= nb * bb && y.len() >= nb * 292);
    let m4 = _mm256_set1_epi8(0x0F);
    let one = _mm256_set1_epi8(1);
    let mut sumf = 0f32;
    for i in 0..nb {
        let (xb, yb) = (&x[i * bb..(i + 1) * bb], &y[i * 292..(i + 1) * 292]);
        let (yd, q8, bsums) = q8k_parts(yb);
        let d = yd * f16_at(xb, 0);
        let dmin = yd * f16_at(xb, 2);
        let scales = &xb[4..16];
        let qs_at = if HIGH_BITS { 48 } else { 16 };
        // SAFETY: a Q5_K block has 32 high-bit bytes at 16 (only read when HIGH_BITS).
        let qh = if HIGH_BITS {
            unsafe { load32(xb.as_ptr().add(16)) }
        } else {
            _mm256_setzero_si256()
        };
        let mut acc = _mm256_setzero_si256();
        for j in 0..QK_K / 64 {
            // SAFETY: 32 quant bytes per 64-value chunk j, within the block.
            let q = unsafe { load32(xb.as_ptr().add(qs_at + 32 * j)) };
            let mut lo = _mm256_and_si256(q, m4);
            let mut hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
            if HIGH_BITS {
                let shift = _mm_cvtsi32_si128(2 * j as i32);
                let hb = _mm256_srl_epi16(qh, shift);
                lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(hb, one), 4));
                let hb = _mm256_srli_epi16(hb, 1);
                hi = _mm256_or_si256(hi, _mm256_slli_epi16(_mm256_and_si256(hb, one), 4));
            }
            let (sc_lo, _) = get_scale_min_k4(2 * j, scales);
            let (sc_hi, _) = get_scale_min_k4(2 * j + 1, scales);
            // SAFETY: 64 Q8_K values per chunk, within y's block.
            let (q8l, q8h) = unsafe {
                (
                    load32(q8.as_ptr().add(64 * j)),
                    load32(q8.as_ptr().add(64 * j + 32)),
                )
            };
            acc = _mm256_add_epi32(acc, scaled(lo, q8l, _mm256_set1_epi16(i16::from(sc_lo))));
            acc = _mm256_add_epi32(acc, scaled(hi, q8h, _mm256_set1_epi16(i16::from(sc_hi))));
        }
        sumf += d * hsum_i32_8(acc) as f32;
        sumf -= dmin * k4_mins_sum(scales, &bsums) as f32;
    }
    sumf
}

/// Q6_K weights x Q8_K activations.
///
/// # Safety
/// As for [`dot_q45_k_q8_k`], with Q6_K blocks.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_q6_k_q8_k(n: usize, x: &[u8], y: &[u8]) -> f32 {
    let nb = n / QK_K;
    assert!(x.len() >= nb * 210 && y.len() >= nb * 292);
    let m4 = _mm256_set1_epi8(0x0F);
    let m3 = _mm256_set1_epi8(0x03);
    let mut sumf = 0f32;
    for i in 0..nb {
        let (xb, yb) = (&x[i * 210..(i + 1) * 210], &y[i * 292..(i + 1) * 292]);
        let (yd, q8, bsums) = q8k_parts(yb);
        let sc = &xb[192..208];
        let d = f16_at(xb, 208);
        let mut acc = _mm256_setzero_si256();
        for half in 0..2 {
            // SAFETY: ql (128 bytes) at 0 and qh (64 bytes) at 128 lie within the block.
            let (ql0, ql1, qh) = unsafe {
                (
                    load32(xb.as_ptr().add(64 * half)),
                    load32(xb.as_ptr().add(64 * half + 32)),
                    load32(xb.as_ptr().add(128 + 32 * half)),
                )
            };
            let h = |s: i32| {
                let shifted = _mm256_srl_epi16(qh, _mm_cvtsi32_si128(s));
                _mm256_slli_epi16(_mm256_and_si256(shifted, m3), 4)
            };
            let quads = [
                _mm256_or_si256(_mm256_and_si256(ql0, m4), h(0)),
                _mm256_or_si256(_mm256_and_si256(ql1, m4), h(2)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4), h(4)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4), h(6)),
            ];
            for (k, q) in quads.into_iter().enumerate() {
                let g = 8 * half + 2 * k;
                let scale = _mm256_set_m128i(
                    _mm_set1_epi16(i16::from(sc[g + 1] as i8)),
                    _mm_set1_epi16(i16::from(sc[g] as i8)),
                );
                // SAFETY: 32 Q8_K values of this quarter, within y's block.
                let q8v = unsafe { load32(q8.as_ptr().add(128 * half + 32 * k)) };
                acc = _mm256_add_epi32(acc, scaled(q, q8v, scale));
            }
        }
        let bias: i32 = (0..16).map(|g| i32::from(sc[g] as i8) * bsums[g]).sum();
        let sumi = hsum_i32_8(acc) - 32 * bias;
        sumf += (yd * d) * sumi as f32;
    }
    sumf
}

/// An element type of the float dot products.
trait FloatElem {
    const BYTES: usize;
    /// Loads 8 elements at `p` widened to f32.
    ///
    /// # Safety
    /// The CPU supports AVX2, FMA and F16C; `8 * BYTES` bytes are readable at `p`.
    unsafe fn load8(p: *const u8) -> __m256;
    /// Element `k` of `b`, widened.
    fn scalar(b: &[u8], k: usize) -> f32;
}

struct F32Elem;
struct F16Elem;
struct Bf16Elem;

impl FloatElem for F32Elem {
    const BYTES: usize = 4;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load8(p: *const u8) -> __m256 {
        // SAFETY: the caller guarantees 32 readable bytes.
        unsafe { _mm256_loadu_ps(p as *const f32) }
    }
    fn scalar(b: &[u8], k: usize) -> f32 {
        f32::from_le_bytes([b[4 * k], b[4 * k + 1], b[4 * k + 2], b[4 * k + 3]])
    }
}

impl FloatElem for F16Elem {
    const BYTES: usize = 2;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load8(p: *const u8) -> __m256 {
        // SAFETY: the caller guarantees 16 readable bytes.
        _mm256_cvtph_ps(unsafe { _mm_loadu_si128(p as *const __m128i) })
    }
    fn scalar(b: &[u8], k: usize) -> f32 {
        f16_at(b, 2 * k)
    }
}

impl FloatElem for Bf16Elem {
    const BYTES: usize = 2;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load8(p: *const u8) -> __m256 {
        // SAFETY: the caller guarantees 16 readable bytes.
        let raw = unsafe { _mm_loadu_si128(p as *const __m128i) };
        _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(raw), 16))
    }
    fn scalar(b: &[u8], k: usize) -> f32 {
        super::dequant::bf16_to_f32(u16::from_le_bytes([b[2 * k], b[2 * k + 1]]))
    }
}

/// Float dot products with four 8-lane accumulators (see `portable::dot_float`).
///
/// # Safety
/// The CPU supports AVX2, FMA and F16C.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_float<E: FloatElem>(n: usize, x: &[u8], y: &[u8]) -> f32 {
    assert!(x.len() >= n * E::BYTES && y.len() >= n * E::BYTES);
    let mut s = [_mm256_setzero_ps(); 4];
    let steps = n / 32;
    for i in 0..steps {
        for (j, acc) in s.iter_mut().enumerate() {
            let at = (32 * i + 8 * j) * E::BYTES;
            // SAFETY: 8 elements at `at` lie within both slices (asserted above).
            let (xv, yv) = unsafe { (E::load8(x.as_ptr().add(at)), E::load8(y.as_ptr().add(at))) };
            *acc = _mm256_fmadd_ps(xv, yv, *acc);
        }
    }
    let t = _mm256_add_ps(_mm256_add_ps(s[0], s[2]), _mm256_add_ps(s[1], s[3]));
    let t0 = _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1));
    let t1 = _mm_hadd_ps(t0, t0);
    let mut sum = _mm_cvtss_f32(_mm_hadd_ps(t1, t1));
    for k in steps * 32..n {
        sum += E::scalar(x, k) * E::scalar(y, k);
    }
    sum
}

/// # Safety
/// The CPU supports AVX2, FMA and F16C; `x`, `y` hold `n` F32 values.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_f32(n: usize, x: &[u8], y: &[u8]) -> f32 {
    // SAFETY: forwarded from the caller.
    unsafe { dot_float::<F32Elem>(n, x, y) }
}

/// # Safety
/// The CPU supports AVX2, FMA and F16C; `x`, `y` hold `n` F16 values.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_f16(n: usize, x: &[u8], y: &[u8]) -> f32 {
    // SAFETY: forwarded from the caller.
    unsafe { dot_float::<F16Elem>(n, x, y) }
}

/// # Safety
/// The CPU supports AVX2, FMA and F16C; `x`, `y` hold `n` BF16 values.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_bf16(n: usize, x: &[u8], y: &[u8]) -> f32 {
    // SAFETY: forwarded from the caller.
    unsafe { dot_float::<Bf16Elem>(n, x, y) }
}

/// The F16 dot product of llama.cpp's batched path (see `portable::dot_f16_gemm`).
///
/// # Safety
/// The CPU supports AVX2, FMA and F16C; `x`, `y` hold `n` F16 values, `n.is_multiple_of(8)`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_f16_gemm(n: usize, x: &[u8], y: &[u8]) -> f32 {
    assert!(x.len() >= 2 * n && y.len() >= 2 * n && n.is_multiple_of(8));
    let mut acc = _mm256_setzero_ps();
    for i in 0..n / 8 {
        // SAFETY: 8 values at 16 * i lie within both slices (asserted above).
        let (xv, yv) = unsafe {
            (
                F16Elem::load8(x.as_ptr().add(16 * i)),
                F16Elem::load8(y.as_ptr().add(16 * i)),
            )
        };
        acc = _mm256_fmadd_ps(xv, yv, acc);
    }
    hsum_f32_8(acc)
}

/// The most queries one call of [`f16_scores`] or [`f16_weighted`] takes: four rows by
/// three queries leave four of the sixteen vector registers for the row being widened
/// and the loop.
pub(crate) const MAX_QUERIES: usize = 3;

/// Attention scores in llama.cpp's batched order ([`dot_f16_gemm`], so the same bits as
/// single calls): `out[q * out_stride + i] = dot(row i, ys[q]) * scale` for `i` in
/// `0..rows` (a multiple of 4), row `i` the `n` f16 values at value `i * stride` of `x`,
/// each query given as f32 (the f16 values widened, which is exact).
///
/// Four rows at a time against every query: each row is widened once for all of `ys`
/// (the query heads of one key-value head), each query loaded once per four rows, and the
/// four sums of a query reduced together in `hsum_f32_8`'s order.
///
/// With `VEC`, the order is the single-token one ([`dot_f16`]: four accumulators over
/// 32-value steps, `n` a multiple of 32) instead, and the rows go one at a time, their four
/// sums still reduced together.
///
/// # Safety
/// The CPU supports AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)] // one kernel's operands; a struct would only rename them
pub(crate) unsafe fn f16_scores<const VEC: bool>(
    n: usize,
    x: &[u8],
    stride: usize,
    rows: usize,
    ys: &[&[f32]],
    scale: f32,
    out: &mut [f32],
    out_stride: usize,
) {
    let q = ys.len();
    assert!(
        n.is_multiple_of(if VEC { 32 } else { 8 })
            && rows.is_multiple_of(4)
            && (rows == 0 || (rows - 1) * stride + n <= x.len() / 2)
            && ys.iter().all(|y| y.len() >= n)
            && (1..=MAX_QUERIES).contains(&q)
            && (rows == 0 || (q - 1) * out_stride + rows <= out.len()),
        "f16 scores out of bounds"
    );
    for g in 0..rows / 4 {
        let at = |r: usize, k: usize| {
            // SAFETY: values k .. k + 8 of row 4g + r lie within `x` (asserted).
            unsafe { F16Elem::load8(x.as_ptr().add(2 * ((4 * g + r) * stride + k))) }
        };
        let dst = out.as_mut_ptr().wrapping_add(4 * g);
        // SAFETY: one run of `n` values within every row and query (asserted); values
        // 4g .. 4g + 4 of each query's output row lie within `out` (asserted).
        unsafe {
            rows_x4::<VEC>(
                std::iter::once((0, 0, n)),
                ys,
                Some(scale),
                dst,
                out_stride,
                at,
            )
        };
    }
}

/// Attention outputs in llama.cpp's batched order ([`dot_f16_gemm_paged`]): `out[q *
/// out_stride + d] = dot(row d, ys[q])` for `d` in `0..rows` (a multiple of 4), row `d`
/// the paged row `p` with its offset moved by `d * row_step` values (the transposed
/// values of one channel), each query (probabilities) given as f32. Four rows at a time,
/// as [`f16_scores`], in either order (`VEC`: [`dot_f16_paged`]'s, `n` a multiple of 32).
///
/// # Safety
/// The CPU supports AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)] // one kernel's operands; a struct would only rename them
pub(crate) unsafe fn f16_weighted<const VEC: bool>(
    n: usize,
    x: &[u8],
    p: super::Pieces<'_>,
    row_step: usize,
    rows: usize,
    ys: &[&[f32]],
    out: &mut [f32],
    out_stride: usize,
) {
    let q = ys.len();
    // Rows differ only in their offset, so the last row (the largest offset) reaching no
    // further than `x` bounds them all.
    let last = super::Pieces {
        offset: p
            .offset
            .saturating_add(row_step.saturating_mul(rows.saturating_sub(1))),
        ..p
    };
    assert!(
        last.check(n, if VEC { 32 } else { 8 }, x.len() / 2)
            && rows.is_multiple_of(4)
            && ys.iter().all(|y| y.len() >= n)
            && (1..=MAX_QUERIES).contains(&q)
            && (rows == 0 || (q - 1) * out_stride + rows <= out.len()),
        "paged f16 dot out of bounds"
    );
    for g in 0..rows / 4 {
        let at = |r: usize, k: usize| {
            // SAFETY: values k .. k + 8 of row 4g + r lie within `x` for every run's steps
            // (the last row checked above).
            unsafe { F16Elem::load8(x.as_ptr().add(2 * (k + (4 * g + r) * row_step))) }
        };
        let dst = out.as_mut_ptr().wrapping_add(4 * g);
        // SAFETY: the runs are whole 8-value steps within `x` (checked) and `ys`
        // (asserted); values 4g .. 4g + 4 of each output row lie within `out` (asserted).
        unsafe { rows_x4::<VEC>(p.runs(n), ys, None, dst, out_stride, at) };
    }
}

/// Four rows against each row of `ys` over `runs` of `(first x value, first y value,
/// length)`: value `k` of row `r` widened by `at(r, k)`, eight at a time; one accumulator
/// per (query, row) pair through all runs, reduced as `hsum_f32_8` reduces it, times
/// `scale` if given, and stored at `out + q * out_stride`, four values per query.
///
/// # Safety
/// The CPU supports AVX2, FMA and F16C; every run's length is a multiple of 8, `at(r, x0
/// + k)` may be called for its steps, each `ys` row holds `y0 + len` values; `ys` has 1
/// to [`MAX_QUERIES`] rows, and 4 floats are writable at `out + q * out_stride` for each.
/// With `VEC`, single-token order ([`rows_x4_vec_q`]): the lengths are multiples of 32.
#[inline(always)]
unsafe fn rows_x4<const VEC: bool>(
    runs: impl Iterator<Item = (usize, usize, usize)> + Clone,
    ys: &[&[f32]],
    scale: Option<f32>,
    out: *mut f32,
    out_stride: usize,
    at: impl Fn(usize, usize) -> __m256,
) {
    // SAFETY (all six): passed on from the caller.
    unsafe {
        match (VEC, ys.len()) {
            (false, 1) => rows_x4_q::<1, _>(runs, [ys[0]], scale, out, out_stride, &at),
            (false, 2) => rows_x4_q::<2, _>(runs, [ys[0], ys[1]], scale, out, out_stride, &at),
            (false, _) => {
                rows_x4_q::<3, _>(runs, [ys[0], ys[1], ys[2]], scale, out, out_stride, &at)
            }
            (true, 1) => rows_x4_vec_q::<1, _>(runs, [ys[0]], scale, out, out_stride, &at),
            (true, 2) => rows_x4_vec_q::<2, _>(runs, [ys[0], ys[1]], scale, out, out_stride, &at),
            (true, _) => {
                rows_x4_vec_q::<3, _>(runs, [ys[0], ys[1], ys[2]], scale, out, out_stride, &at)
            }
        }
    }
}

/// [`rows_x4`] for `Q` queries in the single-token order of [`dot_float`]: per (query,
/// row) four accumulators over 32-value steps, carried through all runs (as
/// [`dot_f16_paged`] carries them), folded as `dot_float` folds them to four lanes; the
/// last two additions (`_mm_hadd_ps` twice) run for the four rows at once, which adds the
/// same pairs in the same order. A row's value is widened once for all `Q` queries.
///
/// # Safety
/// As [`rows_x4`], with every run's length a multiple of 32.
#[inline(always)]
unsafe fn rows_x4_vec_q<const Q: usize, F: Fn(usize, usize) -> __m256>(
    runs: impl Iterator<Item = (usize, usize, usize)> + Clone,
    ys: [&[f32]; Q],
    scale: Option<f32>,
    out: *mut f32,
    out_stride: usize,
    at: &F,
) {
    // SAFETY: the caller's CPU has AVX2.
    let mut folded = [[unsafe { _mm_setzero_ps() }; 4]; Q];
    let yp = ys.map(<[f32]>::as_ptr);
    for r in 0..4 {
        // SAFETY: as above.
        let mut acc = [[unsafe { _mm256_setzero_ps() }; 4]; Q];
        for (x0, y0, len) in runs.clone() {
            for k in (0..len).step_by(32) {
                for j in 0..4 {
                    let xv = at(r, x0 + k + 8 * j);
                    for (acc, yp) in acc.iter_mut().zip(yp) {
                        // SAFETY: every `ys` row holds `y0 + len` values (the caller's
                        // promise); the CPU has AVX2 and FMA.
                        unsafe {
                            let yv = _mm256_loadu_ps(yp.add(y0 + k + 8 * j));
                            acc[j] = _mm256_fmadd_ps(xv, yv, acc[j]);
                        }
                    }
                }
            }
        }
        for (f, s) in folded.iter_mut().zip(acc) {
            // SAFETY: the caller's CPU has AVX2.
            unsafe {
                let t = _mm256_add_ps(_mm256_add_ps(s[0], s[2]), _mm256_add_ps(s[1], s[3]));
                f[r] = _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1));
            }
        }
    }
    for (q, f) in folded.into_iter().enumerate() {
        // SAFETY: the caller's CPU has AVX2; 4 floats are writable at this query's output
        // (its promise).
        unsafe {
            let v = _mm_hadd_ps(_mm_hadd_ps(f[0], f[1]), _mm_hadd_ps(f[2], f[3]));
            let v = match scale {
                Some(s) => _mm_mul_ps(v, _mm_set1_ps(s)),
                None => v,
            };
            _mm_storeu_ps(out.wrapping_add(q * out_stride), v);
        }
    }
}

/// [`rows_x4`] for `Q` queries.
///
/// # Safety
/// As [`rows_x4`].
#[inline(always)]
unsafe fn rows_x4_q<const Q: usize, F: Fn(usize, usize) -> __m256>(
    runs: impl Iterator<Item = (usize, usize, usize)>,
    ys: [&[f32]; Q],
    scale: Option<f32>,
    out: *mut f32,
    out_stride: usize,
    at: &F,
) {
    // SAFETY: the caller's CPU has AVX2.
    let mut acc = [[unsafe { _mm256_setzero_ps() }; 4]; Q];
    let yp = ys.map(<[f32]>::as_ptr);
    for (x0, y0, len) in runs {
        for k in (0..len).step_by(8) {
            for r in 0..4 {
                let xv = at(r, x0 + k);
                for (acc, yp) in acc.iter_mut().zip(yp) {
                    // SAFETY: every `ys` row holds `y0 + len` values (the caller's promise);
                    // the CPU has AVX2 and FMA.
                    unsafe {
                        let yv = _mm256_loadu_ps(yp.add(y0 + k));
                        acc[r] = _mm256_fmadd_ps(xv, yv, acc[r]);
                    }
                }
            }
        }
    }
    for (q, a) in acc.into_iter().enumerate() {
        // SAFETY: the caller's CPU has AVX2; 4 floats are writable at this query's output
        // (its promise).
        unsafe {
            let v = hsum_f32_8_x4(a);
            let v = match scale {
                Some(s) => _mm_mul_ps(v, _mm_set1_ps(s)),
                None => v,
            };
            _mm_storeu_ps(out.wrapping_add(q * out_stride), v);
        }
    }
}

/// `hsum_f32_8` of four vectors at once, lane `r` that of `v[r]`: each lane sees the same
/// additions in the same order (`(r0 + r2) + (r1 + r3)` of `r = low half + high half`),
/// so the same bits.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn hsum_f32_8_x4(v: [__m256; 4]) -> __m128 {
    let r = v.map(|x| _mm_add_ps(_mm256_extractf128_ps(x, 1), _mm256_castps256_ps128(x)));
    let t0 = _mm_unpacklo_ps(r[0], r[1]);
    let t1 = _mm_unpackhi_ps(r[0], r[1]);
    let t2 = _mm_unpacklo_ps(r[2], r[3]);
    let t3 = _mm_unpackhi_ps(r[2], r[3]);
    // Lanes 0, 1, 2 and 3 of every r.
    let (l0, l1) = (_mm_movelh_ps(t0, t2), _mm_movehl_ps(t2, t0));
    let (l2, l3) = (_mm_movelh_ps(t1, t3), _mm_movehl_ps(t3, t1));
    _mm_add_ps(_mm_add_ps(l0, l2), _mm_add_ps(l1, l3))
}

/// [`dot_f16`] over a paged `x` (see `super::f16_dot_paged`).
///
/// # Safety
/// The CPU supports AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_f16_paged(n: usize, x: &[u8], p: super::Pieces<'_>, y: &[u8]) -> f32 {
    assert!(
        p.check(n, 32, x.len() / 2) && y.len() >= 2 * n,
        "paged f16 dot out of bounds"
    );
    let mut s = [_mm256_setzero_ps(); 4];
    for (base, y0, len) in p.runs(n) {
        for step in 0..len / 32 {
            for (j, acc) in s.iter_mut().enumerate() {
                let k = 32 * step + 8 * j;
                // SAFETY: values base + k .. + 8 of `x` and y0 + k .. + 8 of `y` lie
                // within the slices (checked above).
                let (xv, yv) = unsafe {
                    (
                        F16Elem::load8(x.as_ptr().add(2 * (base + k))),
                        F16Elem::load8(y.as_ptr().add(2 * (y0 + k))),
                    )
                };
                *acc = _mm256_fmadd_ps(xv, yv, *acc);
            }
        }
    }
    let t = _mm256_add_ps(_mm256_add_ps(s[0], s[2]), _mm256_add_ps(s[1], s[3]));
    let t0 = _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1));
    let t1 = _mm_hadd_ps(t0, t0);
    _mm_cvtss_f32(_mm_hadd_ps(t1, t1))
}

/// [`dot_f16_gemm`] over a paged `x`.
///
/// # Safety
/// The CPU supports AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_f16_gemm_paged(n: usize, x: &[u8], p: super::Pieces<'_>, y: &[u8]) -> f32 {
    assert!(
        p.check(n, 8, x.len() / 2) && y.len() >= 2 * n,
        "paged f16 dot out of bounds"
    );
    let mut acc = _mm256_setzero_ps();
    for (base, y0, len) in p.runs(n) {
        for step in 0..len / 8 {
            let k = 8 * step;
            // SAFETY: as in `dot_f16_paged`.
            let (xv, yv) = unsafe {
                (
                    F16Elem::load8(x.as_ptr().add(2 * (base + k))),
                    F16Elem::load8(y.as_ptr().add(2 * (y0 + k))),
                )
            };
            acc = _mm256_fmadd_ps(xv, yv, acc);
        }
    }
    hsum_f32_8(acc)
}

/// ggml's AVX2 `quantize_row_q8_0` (`Q8_1 = false`: 2-byte `d`, then 32 values per block)
/// or `quantize_row_q8_1` (`true`: `d` and `s = d * sum`, then the values) over `x`, a
/// whole number of 32-value blocks, into `dst`. Each step is the scalar path's
/// (`quantize::q8_block`): the same maximum (exact in any order), the same `127 / amax`
/// and products, round-half-even (`vcvtps2dq` in the default rounding mode equals
/// `nearest_int` for these values), an exact integer sum, and f16 rounding to nearest even
/// (`vcvtps2ph`, as the `half` crate rounds), so the bytes are the same for finite input.
///
/// # Safety
/// The CPU supports AVX2, FMA and F16C; `dst` holds `x.len() / 32` blocks.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn quantize_q8<const Q8_1: bool>(x: &[f32], dst: &mut [u8]) {
    let bb = if Q8_1 { 36 } else { 34 };
    let nb = x.len() / QK;
    assert!(dst.len() >= nb * bb);
    let sign = _mm256_set1_ps(-0.0);
    // `vpackssdw` + `vpacksswb` interleave the 128-bit lanes; this puts them back in order.
    let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for i in 0..nb {
        // SAFETY: block i of `x` (32 floats) and of `dst` (`bb` bytes) are in bounds.
        unsafe {
            let px = x.as_ptr().add(i * QK);
            let v = [0, 8, 16, 24].map(|k| _mm256_loadu_ps(px.add(k)));
            let m = v.iter().fold(_mm256_setzero_ps(), |m, v| {
                _mm256_max_ps(m, _mm256_andnot_ps(sign, *v))
            });
            let m4 = _mm_max_ps(_mm256_extractf128_ps(m, 1), _mm256_castps256_ps128(m));
            let m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
            let amax = _mm_cvtss_f32(_mm_max_ss(m4, _mm_movehdup_ps(m4)));
            let d = amax / 127.0;
            let id = _mm256_set1_ps(if amax != 0.0 { 127.0 / amax } else { 0.0 });
            let q = v.map(|v| _mm256_cvtps_epi32(_mm256_mul_ps(v, id)));
            let packed = _mm256_packs_epi16(
                _mm256_packs_epi32(q[0], q[1]),
                _mm256_packs_epi32(q[2], q[3]),
            );
            let py = dst.as_mut_ptr().add(i * bb);
            let head = if Q8_1 { 4 } else { 2 };
            _mm256_storeu_si256(
                py.add(head).cast(),
                _mm256_permutevar8x32_epi32(packed, order),
            );
            let mut h = [d, 0.0, 0.0, 0.0];
            if Q8_1 {
                let sum =
                    _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
                h[1] = d * hsum_i32_8(sum) as f32;
            }
            let bits = _mm_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm_loadu_ps(h.as_ptr()));
            let bits = _mm_cvtsi128_si32(bits) as u32;
            std::ptr::copy_nonoverlapping(bits.to_le_bytes().as_ptr(), py, head);
        }
    }
}
