//! ggml's quantized formats on the CPU: dequantization, activation quantization and dot
//! products, with run-time choice between AVX-512, AVX2 and a portable path that all give
//! the same bits.

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod dequant;
mod portable;
mod quantize;

#[cfg(test)]
mod tests;

use std::sync::OnceLock;

use crate::{GgmlType, KernelError};

/// The instruction set the dot products run on. Each gives the same bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// Plain Rust, any CPU.
    Portable,
    /// x86_64 with AVX2, FMA and F16C.
    Avx2,
    /// AVX2 as above, plus AVX-512 F, BW and VNNI for the single-token products of the
    /// Q4_1 and Q8_0 weights and their batch products (the rest runs the AVX2 kernels).
    Avx512,
}

impl Isa {
    /// The best instruction set this CPU supports (probed once: the kernels ask per call).
    pub fn detect() -> Isa {
        static BEST: OnceLock<Isa> = OnceLock::new();
        *BEST.get_or_init(Isa::probe)
    }

    fn probe() -> Isa {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
            && std::arch::is_x86_feature_detected!("f16c")
        {
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512vnni")
            {
                return Isa::Avx512;
            }
            return Isa::Avx2;
        }
        Isa::Portable
    }

    /// The instruction set in use: the best one, unless `OASIS_KERNELS` asks for a lesser
    /// one (`portable` or `avx2`, to check that they give the same tokens or to compare
    /// their speed).
    pub fn active() -> Isa {
        static ACTIVE: OnceLock<Isa> = OnceLock::new();
        *ACTIVE.get_or_init(|| {
            let best = Isa::detect();
            match std::env::var("OASIS_KERNELS").as_deref() {
                Ok("portable") => Isa::Portable,
                Ok("avx2") if best != Isa::Portable => Isa::Avx2,
                _ => best,
            }
        })
    }

    /// Whether this CPU can run `self`.
    pub fn is_available(self) -> bool {
        match self {
            Isa::Portable => true,
            Isa::Avx2 => Isa::detect() != Isa::Portable,
            Isa::Avx512 => Isa::detect() == Isa::Avx512,
        }
    }

    /// Whether `self` includes AVX2 (and FMA and F16C) and this CPU runs it.
    pub(crate) fn has_avx2(self) -> bool {
        self != Isa::Portable && self.is_available()
    }

    pub fn name(self) -> &'static str {
        match self {
            Isa::Portable => "portable",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
        }
    }
}

/// For the four-rows-x-one-token products (decode): asks for the bytes two four-row groups
/// ahead of each row's position (rows `row_bytes` apart, in order, as the matmul runs them),
/// so that the weights, read once per token, arrive from memory before they are needed.
/// Measured on a 2-core Sapphire Rapids: decode waited on the weights with the hardware
/// prefetcher alone (99 -> 132 tokens/s with this, alternating runs; no bits changed). A
/// prefetch never faults, so addresses past the weight are harmless.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn prefetch_ahead<const R: usize>(px: [*const u8; R], row_bytes: usize) {
    use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
    for p in px {
        // SAFETY: a prefetch is a hint and never faults; `wrapping_add` makes no claim that
        // the address lies in the allocation.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(8 * row_bytes).cast()) };
    }
}

/// A little-endian f16 at byte `at`, widened (exact).
#[inline(always)]
pub(crate) fn f16_at(b: &[u8], at: usize) -> f32 {
    half::f16::from_bits(u16::from_le_bytes([b[at], b[at + 1]])).to_f32()
}

/// Writes `v` rounded to f16 (nearest even, as F16C does) at byte `at`.
#[inline(always)]
pub(crate) fn put_f16(b: &mut [u8], at: usize, v: f32) {
    b[at..at + 2].copy_from_slice(&half::f16::from_f32(v).to_bits().to_le_bytes());
}

/// f32 to bf16 bits, rounding to nearest even and keeping NaNs quiet (ggml's rule).
#[inline(always)]
pub(crate) fn f32_to_bf16(v: f32) -> u16 {
    let u = v.to_bits();
    if (u & 0x7fff_ffff) > 0x7f80_0000 {
        return ((u >> 16) | 64) as u16;
    }
    ((u + (0x7fff + ((u >> 16) & 1))) >> 16) as u16
}

/// The 6-bit scale and min of sub-block `j` of a Q4_K/Q5_K block (ggml's
/// `get_scale_min_k4`).
#[inline(always)]
pub(crate) fn get_scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Horizontal sum of eight lanes in the order `_mm256` code reduces them.
#[inline(always)]
pub(crate) fn hsum8(a: [f32; 8]) -> f32 {
    let r = [a[0] + a[4], a[1] + a[5], a[2] + a[6], a[3] + a[7]];
    (r[0] + r[2]) + (r[1] + r[3])
}

/// Four 8-lane accumulators of the float dot products.
#[derive(Default)]
pub(crate) struct F16Lanes(pub(crate) [[f32; 8]; 4]);

impl F16Lanes {
    /// ggml's `GGML_F32x8_REDUCE`: `(s0 + s2) + (s1 + s3)` lane-wise, then the two 128-bit
    /// halves added and two horizontal adds, so float results match llama.cpp's order.
    #[inline(always)]
    pub(crate) fn reduce(&self) -> f32 {
        let s = &self.0;
        let mut v = [0f32; 8];
        for (l, x) in v.iter_mut().enumerate() {
            *x = (s[0][l] + s[2][l]) + (s[1][l] + s[3][l]);
        }
        hadd_reduce8(v)
    }
}

/// `t = low + high; hadd; hadd`: `((v0+v4) + (v1+v5)) + ((v2+v6) + (v3+v7))`.
#[inline(always)]
pub(crate) fn hadd_reduce8(v: [f32; 8]) -> f32 {
    let t = [v[0] + v[4], v[1] + v[5], v[2] + v[6], v[3] + v[7]];
    (t[0] + t[1]) + (t[2] + t[3])
}

fn check_row(
    op: &'static str,
    what: &'static str,
    ty: GgmlType,
    n: usize,
    bytes: usize,
) -> Result<(), KernelError> {
    let expected = ty.row_bytes(n).ok_or(KernelError::NotBlockMultiple {
        op,
        what: "row length",
        ty: ty.name(),
        block: ty.block_len(),
        got: n,
    })?;
    if bytes != expected {
        return Err(KernelError::Length {
            op,
            what,
            expected,
            got: bytes,
        });
    }
    Ok(())
}

/// Dequantizes one row of `ty` (`src`) into `dst`, whose length is the row's value count.
pub fn dequantize_row(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<(), KernelError> {
    check_row("dequantize_row", "source row", ty, dst.len(), src.len())?;
    dequant::dequantize_row(ty, src, dst);
    Ok(())
}

/// Quantizes activations `x` into `dst` as `ty`, which must be an activation type
/// (the `vec_dot_type` of some weight type).
pub fn quantize_row(ty: GgmlType, x: &[f32], dst: &mut [u8]) -> Result<(), KernelError> {
    if !matches!(
        ty,
        GgmlType::F32
            | GgmlType::F16
            | GgmlType::BF16
            | GgmlType::Q8_0
            | GgmlType::Q8_1
            | GgmlType::Q8_K
    ) {
        return Err(KernelError::UnsupportedType {
            op: "quantize_row",
            ty: ty.name(),
        });
    }
    check_row("quantize_row", "destination row", ty, x.len(), dst.len())?;
    quantize::quantize_row(ty, x, dst);
    Ok(())
}

/// A dot product of weight rows with activation rows of the weight's `vec_dot_type`,
/// chosen once per matrix product so the inner loops do not branch on the type. Every
/// shape computes each (row, activation) pair with the same arithmetic, so results do not
/// depend on how a product is tiled.
#[derive(Clone, Copy)]
pub(crate) struct DotKernel {
    /// One weight row, one activation row.
    pub(crate) one: DotFn,
    /// One weight row, four activation rows (batches).
    pub(crate) acts4: DotFnActs4,
    /// Four weight rows, one activation row (single tokens).
    pub(crate) rows4: DotFnRows4,
    /// One weight row, eight activation rows with their block scales gathered
    /// ([`crate::matmul::Activations`]); where a type has it (Q4_1 on AVX2).
    pub(crate) acts8: Option<DotFnActs8>,
    /// One weight row against eight and against four activation rows kept in pairs of
    /// tokens with four-token scale tables ([`crate::matmul::Activations`]); where a type
    /// has it (Q4_1 and Q8_0 on AVX-512).
    pub(crate) pairs: Option<(DotFnPairs<8>, DotFnPairs<4>)>,
}

/// One weight row against `T` activation rows in pairs (`pair_stride` bytes apart) and
/// their four-token scale tables (`ds_stride` floats apart).
pub(crate) type DotFnPairs<const T: usize> =
    fn(usize, &[u8], &[u8], usize, &[f32], usize) -> [f32; T];

/// One weight row against eight activation rows (`stride` bytes apart from the start of
/// the slice) and their scale table.
pub(crate) type DotFnActs8 = fn(usize, &[u8], &[u8], usize, &[f32]) -> [f32; 8];

/// `dot(n, weight_row, activation_row)`.
pub(crate) type DotFn = fn(usize, &[u8], &[u8]) -> f32;
/// One weight row against four activation rows.
pub(crate) type DotFnActs4 = fn(usize, &[u8], [&[u8]; 4]) -> [f32; 4];
/// Four weight rows against one activation row.
pub(crate) type DotFnRows4 = fn(usize, [&[u8]; 4], &[u8]) -> [f32; 4];

impl std::fmt::Debug for DotKernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DotKernel")
    }
}

macro_rules! portable_kernel {
    ($f:path) => {
        DotKernel {
            one: $f,
            acts4: |n, x, ys| ys.map(|y| $f(n, x, y)),
            rows4: |n, xs, y| xs.map(|x| $f(n, x, y)),
            acts8: None,
            pairs: None,
        }
    };
}

#[cfg(target_arch = "x86_64")]
macro_rules! avx2_kernel {
    (tiled $m:ident :: $f:ident) => {
        DotKernel {
            // SAFETY (all three): only built by `DotKernel::new` after AVX2 was found
            // available; the matmul entry points check that rows are whole blocks.
            one: |n, x, y| unsafe { $m::$f::<1, 1>(n, [x], [y])[0][0] },
            acts4: |n, x, ys| unsafe { $m::$f::<1, 4>(n, [x], ys)[0] },
            rows4: |n, xs, y| unsafe { $m::$f::<4, 1>(n, xs, [y]).map(|r| r[0]) },
            acts8: None,
            pairs: None,
        }
    };
    (single $f:expr) => {{
        // SAFETY: as above.
        let one: DotFn = |n, x, y| unsafe { $f(n, x, y) };
        DotKernel {
            one,
            // SAFETY: as above.
            acts4: |n, x, ys| ys.map(|y| unsafe { $f(n, x, y) }),
            // SAFETY: as above.
            rows4: |n, xs, y| xs.map(|x| unsafe { $f(n, x, y) }),
            acts8: None,
            pairs: None,
        }
    }};
}

impl DotKernel {
    /// The kernel for weights of type `ty` on `isa` (falls back to portable when `isa` is
    /// not available on this CPU).
    pub(crate) fn new(isa: Isa, ty: GgmlType) -> Result<DotKernel, KernelError> {
        #[cfg(target_arch = "x86_64")]
        if isa.has_avx2() {
            let k = match ty {
                GgmlType::F32 => avx2_kernel!(single avx2::dot_f32),
                GgmlType::F16 => avx2_kernel!(single avx2::dot_f16),
                GgmlType::BF16 => avx2_kernel!(single avx2::dot_bf16),
                GgmlType::Q4_0 => avx2_kernel!(tiled avx2::dot_q4_0_q8_0),
                GgmlType::Q4_1 => DotKernel {
                    // SAFETY: as for the tiled kernels.
                    acts8: Some(|n, x, ys, stride, ds| unsafe {
                        avx2::dot_q4_1_q8_1_x8(n, x, ys, stride, ds)
                    }),
                    ..avx2_kernel!(tiled avx2::dot_q4_1_q8_1)
                },
                GgmlType::Q8_0 => avx2_kernel!(tiled avx2::dot_q8_0_q8_0),
                GgmlType::Q4_K => avx2_kernel!(single avx2::dot_q45_k_q8_k::<false>),
                GgmlType::Q5_K => avx2_kernel!(single avx2::dot_q45_k_q8_k::<true>),
                GgmlType::Q6_K => avx2_kernel!(single avx2::dot_q6_k_q8_k),
                GgmlType::Q8_1 | GgmlType::Q8_K => {
                    return Err(KernelError::UnsupportedType {
                        op: "dot",
                        ty: ty.name(),
                    });
                }
            };
            if isa != Isa::Avx512 {
                return Ok(k);
            }
            // SAFETY (both): `Isa::Avx512` was found available (`has_avx2` checked it);
            // the matmul entry points check that rows are whole blocks.
            return Ok(match ty {
                GgmlType::Q4_1 => DotKernel {
                    rows4: |n, xs, y| unsafe { avx512::dot_q4_1_q8_1_rows4(n, xs, y) },
                    pairs: Some((
                        |n, x, ys, ps, ds, ss| unsafe {
                            avx512::dot_pairs::<false, 4, 8>(n, x, ys, ps, ds, ss)
                        },
                        |n, x, ys, ps, ds, ss| unsafe {
                            avx512::dot_pairs::<false, 2, 4>(n, x, ys, ps, ds, ss)
                        },
                    )),
                    ..k
                },
                GgmlType::Q8_0 => DotKernel {
                    rows4: |n, xs, y| unsafe { avx512::dot_q8_0_q8_0_rows4(n, xs, y) },
                    pairs: Some((
                        |n, x, ys, ps, ds, ss| unsafe {
                            avx512::dot_pairs::<true, 4, 8>(n, x, ys, ps, ds, ss)
                        },
                        |n, x, ys, ps, ds, ss| unsafe {
                            avx512::dot_pairs::<true, 2, 4>(n, x, ys, ps, ds, ss)
                        },
                    )),
                    ..k
                },
                _ => k,
            });
        }
        let _ = isa;
        Ok(match ty {
            GgmlType::F32 => portable_kernel!(portable::dot_f32),
            GgmlType::F16 => portable_kernel!(portable::dot_f16),
            GgmlType::BF16 => portable_kernel!(portable::dot_bf16),
            GgmlType::Q4_0 => portable_kernel!(portable::dot_q4_0_q8_0),
            GgmlType::Q4_1 => portable_kernel!(portable::dot_q4_1_q8_1),
            GgmlType::Q8_0 => portable_kernel!(portable::dot_q8_0_q8_0),
            GgmlType::Q4_K => portable_kernel!(portable::dot_q4_k_q8_k),
            GgmlType::Q5_K => portable_kernel!(portable::dot_q5_k_q8_k),
            GgmlType::Q6_K => portable_kernel!(portable::dot_q6_k_q8_k),
            GgmlType::Q8_1 | GgmlType::Q8_K => {
                return Err(KernelError::UnsupportedType {
                    op: "dot",
                    ty: ty.name(),
                });
            }
        })
    }
}

/// How an F16 dot product accumulates: llama.cpp uses different orders for one token
/// (`ggml_vec_dot_f16`: four 8-lane accumulators) and for a batch (tinyBLAS: one), and on a
/// small model the difference shows in the logits, so attention follows the same split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum F16Order {
    /// `ggml_vec_dot_f16`, used when one token is processed.
    Vector,
    /// tinyBLAS, used for batches; needs a length divisible by 8 (else `Vector` applies).
    Batched,
}

/// An F16 x F16 dot product with the given accumulation order.
pub(crate) fn f16_dot(isa: Isa, order: F16Order) -> Result<DotFn, KernelError> {
    if order == F16Order::Vector {
        return Ok(DotKernel::new(isa, GgmlType::F16)?.one);
    }
    #[cfg(target_arch = "x86_64")]
    if isa.has_avx2() {
        // SAFETY: AVX2 was detected; callers pass n.is_multiple_of(8) and whole rows.
        return Ok(|n, x, y| unsafe { avx2::dot_f16_gemm(n, x, y) });
    }
    Ok(portable::dot_f16_gemm)
}

/// Attention scores of a run of key rows against 1 to [`MAX_QUERIES`] queries (as f32),
/// in one [`F16Order`]: `(head_dim, keys, key stride, rows (a multiple of 4), queries,
/// scale, out, out stride)`; see `avx2::f16_scores`.
pub(crate) type ScoresFn = fn(usize, &[u8], usize, usize, &[&[f32]], f32, &mut [f32], usize);

/// Attention outputs of a run of transposed value rows (paged, offsets `row_step` values
/// apart) against 1 to [`MAX_QUERIES`] probability rows (as f32), in one [`F16Order`]:
/// `(positions, values, pieces, row_step, rows (a multiple of 4), probabilities, out, out
/// stride)`; see `avx2::f16_weighted`.
pub(crate) type WeightedFn =
    fn(usize, &[u8], Pieces<'_>, usize, usize, &[&[f32]], &mut [f32], usize);

/// The most queries one [`ScoresFn`] or [`WeightedFn`] call takes.
#[cfg(target_arch = "x86_64")]
pub(crate) use avx2::MAX_QUERIES;
#[cfg(not(target_arch = "x86_64"))]
pub(crate) const MAX_QUERIES: usize = 3;

/// The four-row forms of the F16 products in `order`, where the instruction set has them
/// (AVX2); each gives the bits of single products ([`f16_dot`], [`f16_dot_paged`]). In
/// [`F16Order::Vector`] order the lengths are multiples of 32 (the head size too).
pub(crate) fn f16_dots_x4(isa: Isa, order: F16Order) -> Option<(ScoresFn, WeightedFn)> {
    #[cfg(target_arch = "x86_64")]
    if isa.has_avx2() {
        return Some(match order {
            F16Order::Batched => (
                // SAFETY: AVX2, FMA and F16C were detected; the bounds are checked inside.
                |n, x, stride, rows, ys, scale, out, os| unsafe {
                    avx2::f16_scores::<false>(n, x, stride, rows, ys, scale, out, os)
                },
                // SAFETY: as above.
                |n, x, p, step, rows, ys, out, os| unsafe {
                    avx2::f16_weighted::<false>(n, x, p, step, rows, ys, out, os)
                },
            ),
            F16Order::Vector => (
                // SAFETY: as above.
                |n, x, stride, rows, ys, scale, out, os| unsafe {
                    avx2::f16_scores::<true>(n, x, stride, rows, ys, scale, out, os)
                },
                // SAFETY: as above.
                |n, x, p, step, rows, ys, out, os| unsafe {
                    avx2::f16_weighted::<true>(n, x, p, step, rows, ys, out, os)
                },
            ),
        });
    }
    let _ = (isa, order);
    None
}

/// Where the pieces of a paged F16 row lie: piece `i` (`piece` values, the last one
/// possibly shorter) starts at value `table[i] * stride + offset` of the storage.
#[derive(Debug, Clone, Copy)]
pub struct Pieces<'a> {
    pub table: &'a [u32],
    pub stride: usize,
    pub offset: usize,
    pub piece: usize,
}

impl Pieces<'_> {
    /// Checks that every piece of an `n`-value row lies in `x_len` values and that the
    /// pieces keep the accumulation lanes aligned (`piece` a multiple of 32, `n` of `step`).
    pub(crate) fn check(&self, n: usize, step: usize, x_len: usize) -> bool {
        if self.piece == 0 || !self.piece.is_multiple_of(32) || !n.is_multiple_of(step) {
            return false;
        }
        let count = n.div_ceil(self.piece);
        if self.table.len() < count {
            return false;
        }
        (0..count).all(|i| {
            let len = self.piece.min(n - i * self.piece);
            (self.table[i] as usize)
                .checked_mul(self.stride)
                .and_then(|v| v.checked_add(self.offset + len))
                .is_some_and(|end| end <= x_len)
        })
    }

    /// `(first value in x, first value in y, length)` of each piece of an `n`-value row,
    /// in order. Call after [`Pieces::check`] has passed.
    pub(crate) fn runs(
        &self,
        n: usize,
    ) -> impl Iterator<Item = (usize, usize, usize)> + Clone + '_ {
        let piece = self.piece.max(1);
        self.table
            .iter()
            .enumerate()
            .take(n.div_ceil(piece))
            .map(move |(i, &block)| {
                let y0 = i * piece;
                (
                    block as usize * self.stride + self.offset,
                    y0,
                    piece.min(n - y0),
                )
            })
    }
}

/// An F16 dot product of a paged row with a contiguous one.
pub type PagedDotFn = fn(n: usize, x: &[u8], pieces: Pieces<'_>, y: &[u8]) -> f32;

/// The paged form of [`f16_dot`]: the same lanes, the same order, the same bits as the
/// contiguous product of the gathered row (pieces are multiples of the 32-value step, so
/// the accumulators simply carry on from one piece to the next). Panics if `pieces` does
/// not [`Pieces::check`].
pub(crate) fn f16_dot_paged(isa: Isa, order: F16Order) -> PagedDotFn {
    #[cfg(target_arch = "x86_64")]
    if isa.has_avx2() {
        return match order {
            // SAFETY: AVX2, FMA and F16C were detected; the bounds are checked inside.
            F16Order::Vector => |n, x, p, y| unsafe { avx2::dot_f16_paged(n, x, p, y) },
            // SAFETY: as above.
            F16Order::Batched => |n, x, p, y| unsafe { avx2::dot_f16_gemm_paged(n, x, p, y) },
        };
    }
    let _ = isa;
    match order {
        F16Order::Vector => portable::dot_f16_paged,
        F16Order::Batched => portable::dot_f16_gemm_paged,
    }
}

/// The dot product of weight row `x` (type `ty`, `n` values) with activation row `y`
/// (type `ty.vec_dot_type()`), on instruction set `isa`.
pub fn vec_dot(isa: Isa, ty: GgmlType, n: usize, x: &[u8], y: &[u8]) -> Result<f32, KernelError> {
    check_row("vec_dot", "weight row", ty, n, x.len())?;
    check_row("vec_dot", "activation row", ty.vec_dot_type(), n, y.len())?;
    Ok((DotKernel::new(isa, ty)?.one)(n, x, y))
}
