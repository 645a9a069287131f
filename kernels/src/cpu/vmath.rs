//! ggml's vectorised `exp` and the softmax and SwiGLU built on it, bit for bit.
//!
//! llama.cpp's CPU backend computes `exp` in attention softmax and SiLU with a polynomial
//! (`ggml_v_expf`, ARM's optimized-routines algorithm, max error 1.5 ulp) eight lanes at a
//! time, and only falls back to libm `expf` for the last `n % 8` values. On a model as
//! small as SmolLM2-135M a one-ulp change in a softmax probability can flip its rounding to
//! f16 and move logits by tenths, so matching llama.cpp's tokens means matching this exp,
//! lane for lane. The portable functions emulate one lane exactly (fused multiply-adds
//! where the vector code fuses); the AVX2 ones are the same instructions as ggml's.

use crate::ThreadPool;
use crate::quant::Isa;

const R: u32 = 0x4b40_0000; // 0x1.8p23
const LOG2E: u32 = 0x3fb8_aa3b; // 0x1.715476p+0
const LN2_LO: u32 = 0x35bf_be8e; // 0x1.7f7d1cp-20
const LN2_HI: u32 = 0x3f31_7200; // 0x1.62e4p-1
const C5: u32 = 0x3c07_2010; // 0x1.0e4020p-7
const C4: u32 = 0x3d2b_9f17; // 0x1.573e2ep-5
const C3: u32 = 0x3e2a_af33; // 0x1.555e66p-3
const C2: u32 = 0x3eff_fedb; // 0x1.fffdb6p-2
const C1: u32 = 0x3f7f_fff6; // 0x1.ffffecp-1

#[inline(always)]
fn f(bits: u32) -> f32 {
    f32::from_bits(bits)
}

/// One lane of `ggml_v_expf`.
#[inline]
pub fn expf_lane(x: f32) -> f32 {
    let z = x.mul_add(f(LOG2E), f(R));
    let n = z - f(R);
    let b = (-n).mul_add(f(LN2_LO), (-n).mul_add(f(LN2_HI), x));
    let e = z.to_bits().wrapping_shl(23);
    let k = f32::from_bits(e.wrapping_add(1.0f32.to_bits()));
    let u = b * b;
    let t1 = f(C5).mul_add(b, f(C4));
    let t2 = f(C3).mul_add(b, f(C2));
    let j = t1.mul_add(u, t2).mul_add(u, f(C1) * b);
    let an = n.abs();
    if an > 192.0 {
        let g = if n <= 0.0 { 0x8200_0000u32 } else { 0 };
        let s1 = f32::from_bits(g.wrapping_add(0x7f00_0000));
        s1 * s1
    } else if an > 126.0 {
        let g = if n <= 0.0 { 0x8200_0000u32 } else { 0 };
        let s1 = f32::from_bits(g.wrapping_add(0x7f00_0000));
        let s2 = f32::from_bits(e.wrapping_sub(g));
        s2.mul_add(j, s2) * s1
    } else {
        j.mul_add(k, k)
    }
}

/// One lane of `ggml_v_silu`: `x / (1 + exp(-x))` with the vector exp.
#[inline]
pub fn silu_lane(x: f32) -> f32 {
    x / (1.0 + expf_lane(0.0 - x))
}

/// ggml's scalar `ggml_silu_f32`, used for the tail.
#[inline]
fn silu_libm(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// Horizontal sum in `_mm256` reduction order.
#[inline(always)]
fn hsum8(v: &[f32; 8]) -> f32 {
    let r = [v[0] + v[4], v[1] + v[5], v[2] + v[6], v[3] + v[7]];
    (r[0] + r[2]) + (r[1] + r[3])
}

/// ggml's `soft_max` on one row already scaled and masked: `x[i] = exp(x[i] - max) / sum`,
/// exps eight at a time with their sums added in f64 block by block. Rows are laid out as
/// in llama.cpp's KV cache, so a partial last block is treated as padded with `-inf`
/// (which ggml's masked cells hold), contributing zeros.
pub fn softmax(isa: Isa, x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f64;
    let mut blocks = x.chunks_exact_mut(8);
    for block in &mut blocks {
        let arr: &mut [f32; 8] = match block.try_into() {
            Ok(a) => a,
            Err(_) => continue, // chunks_exact guarantees 8
        };
        exp8(isa, arr, max);
        sum += f64::from(hsum8(arr));
    }
    let rest = blocks.into_remainder();
    if !rest.is_empty() {
        let mut arr = [f32::NEG_INFINITY; 8];
        arr[..rest.len()].copy_from_slice(rest);
        exp8(isa, &mut arr, max);
        sum += f64::from(hsum8(&arr));
        rest.copy_from_slice(&arr[..rest.len()]);
    }
    let inv = (1.0 / sum) as f32;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

/// `x[i] = exp(x[i] - max)` for eight lanes.
#[inline]
fn exp8(isa: Isa, x: &mut [f32; 8], max: f32) {
    #[cfg(target_arch = "x86_64")]
    if isa.has_avx2() {
        // SAFETY: AVX2, FMA and F16C were detected on this CPU.
        unsafe { avx2::exp8_sub(x, max) };
        return;
    }
    let _ = isa;
    for v in x.iter_mut() {
        *v = expf_lane(*v - max);
    }
}

/// [`swiglu`] on a batch of rows of `row_len`, spread over `pool` when there are many and
/// the rows are whole numbers of eight lanes (so every value takes the same path as in
/// one call).
pub fn swiglu_rows(pool: &ThreadPool, isa: Isa, gate: &mut [f32], up: &[f32], row_len: usize) {
    if !row_len.is_multiple_of(8) || gate.len() != up.len() {
        swiglu(isa, gate, up);
        return;
    }
    pool.run_rows(gate, row_len, &|r0, rows| {
        let at = r0 * row_len;
        swiglu(isa, rows, &up[at..at + rows.len()]);
    });
}

/// ggml's `swiglu`: `gate[i] = silu(gate[i]) * up[i]`, eight lanes at a time with the
/// vector exp, the `n % 8` tail with libm's.
pub fn swiglu(isa: Isa, gate: &mut [f32], up: &[f32]) {
    let n = gate.len().min(up.len());
    let full = n / 8 * 8;
    #[cfg(target_arch = "x86_64")]
    if isa.has_avx2() {
        // SAFETY: AVX2, FMA and F16C were detected; both slices hold `full` values.
        unsafe { avx2::swiglu(&mut gate[..full], &up[..full]) };
    } else {
        for (g, u) in gate[..full].iter_mut().zip(&up[..full]) {
            *g = silu_lane(*g) * u;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    for (g, u) in gate[..full].iter_mut().zip(&up[..full]) {
        *g = silu_lane(*g) * u;
    }
    for (g, u) in gate[full..n].iter_mut().zip(&up[full..n]) {
        *g = silu_libm(*g) * u;
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    //! ggml's `ggml_v_expf` / `ggml_v_silu` for AVX2 + FMA, transcribed.

    use std::arch::x86_64::*;

    use super::*;

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn v_expf(x: __m256) -> __m256 {
        let set = |b: u32| _mm256_set1_ps(f32::from_bits(b));
        let r = set(R);
        let z = _mm256_fmadd_ps(x, set(LOG2E), r);
        let n = _mm256_sub_ps(z, r);
        let b = _mm256_fnmadd_ps(n, set(LN2_LO), _mm256_fnmadd_ps(n, set(LN2_HI), x));
        let e = _mm256_slli_epi32(_mm256_castps_si256(z), 23);
        let k = _mm256_castsi256_ps(_mm256_add_epi32(
            e,
            _mm256_castps_si256(_mm256_set1_ps(1.0)),
        ));
        let abs_n = _mm256_andnot_ps(_mm256_set1_ps(-0.0), n);
        let c = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_GT_OQ>(abs_n, _mm256_set1_ps(126.0)));
        let u = _mm256_mul_ps(b, b);
        let j = _mm256_fmadd_ps(
            _mm256_fmadd_ps(
                _mm256_fmadd_ps(set(C5), b, set(C4)),
                u,
                _mm256_fmadd_ps(set(C3), b, set(C2)),
            ),
            u,
            _mm256_mul_ps(set(C1), b),
        );
        if _mm256_movemask_ps(_mm256_castsi256_ps(c)) == 0 {
            return _mm256_fmadd_ps(j, k, k);
        }
        let g = _mm256_and_si256(
            _mm256_castps_si256(_mm256_cmp_ps::<_CMP_LE_OQ>(n, _mm256_setzero_ps())),
            _mm256_set1_epi32(0x8200_0000u32 as i32),
        );
        let s1 = _mm256_castsi256_ps(_mm256_add_epi32(g, _mm256_set1_epi32(0x7f00_0000)));
        let s2 = _mm256_castsi256_ps(_mm256_sub_epi32(e, g));
        let d = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_GT_OQ>(abs_n, _mm256_set1_ps(192.0)));
        _mm256_or_ps(
            _mm256_and_ps(_mm256_castsi256_ps(d), _mm256_mul_ps(s1, s1)),
            _mm256_andnot_ps(
                _mm256_castsi256_ps(d),
                _mm256_or_ps(
                    _mm256_and_ps(
                        _mm256_castsi256_ps(c),
                        _mm256_mul_ps(_mm256_fmadd_ps(s2, j, s2), s1),
                    ),
                    _mm256_andnot_ps(_mm256_castsi256_ps(c), _mm256_fmadd_ps(k, j, k)),
                ),
            ),
        )
    }

    /// `x[i] = exp(x[i] - max)`.
    ///
    /// # Safety
    /// The CPU supports AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn exp8_sub(x: &mut [f32; 8], max: f32) {
        // SAFETY: `x` is 8 floats.
        let v = unsafe { _mm256_loadu_ps(x.as_ptr()) };
        let r = v_expf(_mm256_sub_ps(v, _mm256_set1_ps(max)));
        // SAFETY: as above.
        unsafe { _mm256_storeu_ps(x.as_mut_ptr(), r) };
    }

    /// `gate = silu(gate) * up` over whole blocks of eight.
    ///
    /// # Safety
    /// The CPU supports AVX2, FMA and F16C; `up` is at least as long as `gate`, whose
    /// length is a multiple of 8.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn swiglu(gate: &mut [f32], up: &[f32]) {
        assert!(up.len() >= gate.len() && gate.len().is_multiple_of(8));
        for i in (0..gate.len()).step_by(8) {
            // SAFETY: i + 8 <= len for both slices (asserted).
            unsafe {
                let x = _mm256_loadu_ps(gate.as_ptr().add(i));
                let g = _mm256_loadu_ps(up.as_ptr().add(i));
                let silu = _mm256_div_ps(
                    x,
                    _mm256_add_ps(
                        _mm256_set1_ps(1.0),
                        v_expf(_mm256_sub_ps(_mm256_setzero_ps(), x)),
                    ),
                );
                _mm256_storeu_ps(gate.as_mut_ptr().add(i), _mm256_mul_ps(silu, g));
            }
        }
    }
}

/// BERT's GELU, `x * (1 + erf(x / sqrt 2)) / 2`: erf by Abramowitz and Stegun 7.1.26
/// (absolute error at most 1.5e-7) on a branch-free exp, so a loop of it runs in vector lanes
/// (the encoders' products apply it to each output of a feed-forward layer's first product
/// while it is in registers). Not a llama.cpp kernel: the LLM path never calls it.
#[inline(always)]
pub fn gelu_lane(x: f32) -> f32 {
    let z = x * std::f32::consts::FRAC_1_SQRT_2;
    let a = z.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t
        * (0.254_829_6
            + t * (-0.284_496_74 + t * (1.421_413_8 + t * (-1.453_152_1 + t * 1.061_405_4))));
    let erf = (1.0 - poly * exp_neg(a * a)).copysign(z);
    0.5 * x * (1.0 + erf)
}

/// `exp(-y)` for `y >= 0` without a branch: `2^n * e^r` with `r` within half of ln 2, the
/// Taylor series to `r^6` (relative error about 1.2e-7); below `e^-87` it is `e^-87`.
#[inline(always)]
fn exp_neg(y: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds to an integer.
    let x = (-y).max(-87.0);
    let n = (x * std::f32::consts::LOG2_E + MAGIC) - MAGIC;
    let r = (x - n * 0.693_145_75) - n * 1.428_606_8e-6;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
    p * scale
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expf_is_within_two_ulp_of_libm_and_handles_extremes() {
        let mut x = -100.0f32;
        while x < 88.0 {
            let (a, b) = (expf_lane(x), x.exp());
            let ulp = (a.to_bits() as i64 - b.to_bits() as i64).abs();
            assert!(ulp <= 2, "exp({x}): {a} vs libm {b}");
            x += 0.0137;
        }
        assert_eq!(expf_lane(f32::NEG_INFINITY), 0.0);
        assert_eq!(expf_lane(-200.0), 0.0);
        assert_eq!(expf_lane(0.0), 1.0);
        assert!(expf_lane(100.0).is_infinite());
    }

    #[test]
    fn avx2_and_portable_exps_are_identical() {
        if Isa::detect() == Isa::Portable {
            return;
        }
        let mut xs: Vec<f32> = (0..4096).map(|i| (i as f32 - 2048.0) * 0.071).collect();
        xs.extend([
            f32::NEG_INFINITY,
            -150.0,
            -127.5,
            127.5,
            150.0,
            0.0,
            -0.0,
            1e-30,
        ]);
        let mut a = xs.clone();
        let mut p = xs.clone();
        let up: Vec<f32> = xs.iter().map(|v| v * 0.5 + 1.0).collect();
        swiglu(Isa::Avx2, &mut a, &up);
        swiglu(Isa::Portable, &mut p, &up);
        assert_eq!(
            a.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            p.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
        let mut a: Vec<f32> = xs[..1001].to_vec();
        let mut p = a.clone();
        softmax(Isa::Avx2, &mut a);
        softmax(Isa::Portable, &mut p);
        assert_eq!(
            a.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            p.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
    }

    #[test]
    fn softmax_sums_to_one_and_ignores_minus_infinity() {
        let mut x = vec![
            1.0,
            2.0,
            f32::NEG_INFINITY,
            3.0,
            0.5,
            -1.0,
            2.5,
            0.0,
            1.5,
            -3.0,
            4.0,
        ];
        softmax(Isa::active(), &mut x);
        let s: f32 = x.iter().sum();
        assert!((s - 1.0).abs() < 1e-6);
        assert_eq!(x[2], 0.0);
        assert!(x[10] > x[3] && x[3] > x[1]);
    }

    #[test]
    fn gelu_matches_the_exact_one() {
        // erf to f64 precision, the reference: its series up to |z| = 2.5, beyond it
        // 1 - erfc by the continued fraction (evaluated from depth 80 back).
        fn erf(z: f64) -> f64 {
            let a = z.abs();
            if a > 2.5 {
                let mut f = a;
                for k in (1..=80).rev() {
                    f = a + f64::from(k) / 2.0 / f;
                }
                let erfc = (-a * a).exp() / std::f64::consts::PI.sqrt() / f;
                return (1.0 - erfc).copysign(z);
            }
            let (mut term, mut sum, mut k) = (z, z, 0.0);
            while term.abs() > 1e-18 {
                k += 1.0;
                term *= -z * z / k;
                sum += term / (2.0 * k + 1.0);
            }
            sum * 2.0 / std::f64::consts::PI.sqrt()
        }
        let mut xs: Vec<f32> = (-4000..=4000).map(|i| i as f32 / 500.0).collect();
        xs.extend([-30.0, -12.0, 12.0, 30.0, 0.0, -0.0, f32::MIN_POSITIVE]);
        let want: Vec<f64> = xs
            .iter()
            .map(|&x| {
                let x = f64::from(x);
                0.5 * x * (1.0 + erf(x / std::f64::consts::SQRT_2))
            })
            .collect();
        let got: Vec<f32> = xs.iter().map(|&x| gelu_lane(x)).collect();
        for ((x, g), w) in xs.iter().zip(&got).zip(&want) {
            let err = (f64::from(*g) - w).abs();
            assert!(
                err <= 4e-7 * (1.0 + x.abs() as f64),
                "gelu({x}) = {g}, want {w}"
            );
            assert_eq!(
                *g,
                gelu_lane(*x),
                "the vector and the scalar paths agree at {x}"
            );
        }
        for y in [0.0f32, 0.5, 1.0, 10.0, 50.0, 86.0] {
            let e = exp_neg(y);
            let w = (-f64::from(y)).exp();
            assert!(
                (f64::from(e) - w).abs() <= 3e-7 * w,
                "exp(-{y}) = {e}, want {w}"
            );
        }
    }
}
