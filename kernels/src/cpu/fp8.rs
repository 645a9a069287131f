//! FP8 (E4M3) weights with block scales, as DeepSeek-V3 checkpoints ship them, and their
//! product with f32 activations.
//!
//! A safetensors `F8_E4M3` tensor is OCP/NVIDIA float8 e4m3fn: one sign bit, four exponent
//! bits (bias 7), three mantissa bits, no infinities, NaN at `0x7F`/`0xFF`, largest finite
//! value 448. Every `block_rows x block_cols` tile of a weight shares one f32 scale (the
//! checkpoint's `weight_scale_inv`), and the real weight is `decode(byte) * scale`; edge
//! tiles may be partial, since shapes need not be block multiples.
//!
//! The product decodes a piece of a weight row through a 256-entry table and multiplies it
//! by its tile's scale, which gives exactly the f32 values a full dequantization would, then
//! adds its dot product with each token of a token tile, so a decoded piece is reused while
//! it sits in L1. Only the order of the f32 additions differs from dequantize-then-multiply,
//! and every (row, token) value is summed the same way whatever the batch size.

use crate::pool::DisjointSlice;
use crate::quant::hsum8;
use crate::{KernelError, ThreadPool};

/// Every byte's value, built at compile time from the bit layout.
static E4M3_TABLE: [f32; 256] = e4m3_table();

const fn e4m3_table() -> [f32; 256] {
    let mut table = [0f32; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = f32::from_bits(e4m3_to_f32_bits(b as u8));
        b += 1;
    }
    table
}

/// The f32 bit pattern of an E4M3 byte; every E4M3 value is exact in f32.
const fn e4m3_to_f32_bits(b: u8) -> u32 {
    let sign = ((b & 0x80) as u32) << 24;
    let exp = ((b >> 3) & 0x0F) as u32;
    let man = (b & 0x07) as u32;
    if exp == 0x0F && man == 0x07 {
        return sign | 0x7FC0_0000;
    }
    if exp == 0 {
        if man == 0 {
            return sign;
        }
        // Subnormal: man * 2^-9. Move the leading one (bit p) into f32's implicit bit.
        let p = 31 - man.leading_zeros();
        return sign | ((p + 118) << 23) | ((man - (1 << p)) << (23 - p));
    }
    // Normal: rebias the exponent (-7 + 127) and widen the mantissa from 3 to 23 bits.
    sign | ((exp + 120) << 23) | (man << 20)
}

/// Decodes one E4M3 byte (NaN for `0x7F` / `0xFF`).
#[inline]
pub fn fp8_e4m3_to_f32(b: u8) -> f32 {
    E4M3_TABLE[usize::from(b)]
}

/// A block-scaled FP8 weight matrix borrowed from a checkpoint: `rows` rows (outputs) of
/// `cols` E4M3 bytes, row-major, as a PyTorch Linear weight `[out, in]`.
#[derive(Debug, Clone, Copy)]
pub struct Fp8Matrix<'a> {
    rows: usize,
    cols: usize,
    /// Rows that share one scale (`weight_block_size[0]`, normally 128).
    block_rows: usize,
    /// Columns that share one scale (`weight_block_size[1]`, normally 128).
    block_cols: usize,
    /// Scales per scale row, `ceil(cols / block_cols)`, kept so lookups need no division
    /// of `cols`.
    scale_cols: usize,
    /// `rows * cols` E4M3 bytes.
    data: &'a [u8],
    /// `ceil(rows / block_rows) x scale_cols` f32 scales, row-major.
    scales: &'a [f32],
}

impl<'a> Fp8Matrix<'a> {
    /// Checks that both block sizes are positive, `data` holds `rows * cols` bytes and
    /// `scales` holds one value per (possibly partial) `block_rows x block_cols` tile.
    pub fn new(
        rows: usize,
        cols: usize,
        block_rows: usize,
        block_cols: usize,
        data: &'a [u8],
        scales: &'a [f32],
    ) -> Result<Fp8Matrix<'a>, KernelError> {
        const OP: &str = "Fp8Matrix::new";
        for (what, got) in [
            ("block rows (at least 1)", block_rows),
            ("block columns (at least 1)", block_cols),
        ] {
            if got == 0 {
                return Err(KernelError::Shape {
                    op: OP,
                    what,
                    expected: 1,
                    got,
                });
            }
        }
        let expected = rows.saturating_mul(cols);
        if data.len() != expected {
            return Err(KernelError::Length {
                op: OP,
                what: "weight data",
                expected,
                got: data.len(),
            });
        }
        let scale_cols = cols.div_ceil(block_cols);
        let expected = rows.div_ceil(block_rows).saturating_mul(scale_cols);
        if scales.len() != expected {
            return Err(KernelError::Shape {
                op: OP,
                what: "scale count",
                expected,
                got: scales.len(),
            });
        }
        Ok(Fp8Matrix {
            rows,
            cols,
            block_rows,
            block_cols,
            scale_cols,
            data,
            scales,
        })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The bytes of row `r` and the scales of its column blocks.
    fn row(&self, r: usize) -> (&'a [u8], &'a [f32]) {
        let s0 = r / self.block_rows * self.scale_cols;
        (
            &self.data[r * self.cols..(r + 1) * self.cols],
            &self.scales[s0..s0 + self.scale_cols],
        )
    }

    /// Row `r` dequantized into `out` (len cols).
    ///
    /// # Panics
    /// If `r >= rows` or `out.len() != cols`: both are the caller's own bookkeeping.
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        assert!(r < self.rows, "row {r} of {} rows", self.rows);
        assert_eq!(out.len(), self.cols, "output length");
        let (bytes, scales) = self.row(r);
        let blocks = bytes
            .chunks(self.block_cols)
            .zip(out.chunks_mut(self.block_cols));
        for ((src, dst), scale) in blocks.zip(scales) {
            decode(src, *scale, dst);
        }
    }
}

/// `dst[i] = decode(src[i]) * scale`, the value a full dequantization gives.
#[inline]
fn decode(src: &[u8], scale: f32, dst: &mut [f32]) {
    for (d, b) in dst.iter_mut().zip(src) {
        *d = E4M3_TABLE[usize::from(*b)] * scale;
    }
}

/// Most weights decoded at once: a stack buffer that stays in L1 with a token tile's slices.
const PIECE: usize = 128;
/// Tokens that reuse one decoded piece.
const TOKEN_TILE: usize = 16;
/// Tokens whose accumulators are updated together in the inner loop.
const GROUP: usize = 4;
/// Independent partial sums per (row, token), so the inner loop vectorizes.
const LANES: usize = 8;

/// `out[t * rows + r] = sum_c W[r][c] * x[t * cols + c]` for `t` in `0..tokens`, split
/// over the pool by chunks of rows.
pub fn matmul_fp8(
    pool: &ThreadPool,
    w: &Fp8Matrix<'_>,
    x: &[f32],
    tokens: usize,
    out: &mut [f32],
) -> Result<(), KernelError> {
    let expected = tokens.saturating_mul(w.cols);
    if x.len() != expected {
        return Err(KernelError::Shape {
            op: "matmul_fp8",
            what: "input length",
            expected,
            got: x.len(),
        });
    }
    let expected = tokens.saturating_mul(w.rows);
    if out.len() != expected {
        return Err(KernelError::Shape {
            op: "matmul_fp8",
            what: "output length",
            expected,
            got: out.len(),
        });
    }
    // As in `matmul`: a few long runs per thread when streaming weights for one token,
    // smaller chunks that balance better when a batch makes the product compute-bound.
    let chunk = if tokens < GROUP {
        (w.rows / (pool.threads() * 2)).max(4)
    } else {
        (w.rows / (pool.threads() * 8)).clamp(4, 64)
    };
    let out = DisjointSlice::new(out);
    pool.run(w.rows.div_ceil(chunk), &|task| {
        let r0 = task * chunk;
        run_chunk(w, x, tokens, r0..(r0 + chunk).min(w.rows), &out);
    });
    Ok(())
}

/// Rows `rows` of `w` against all tokens, one token tile at a time.
fn run_chunk(
    w: &Fp8Matrix<'_>,
    x: &[f32],
    tokens: usize,
    rows: std::ops::Range<usize>,
    out: &DisjointSlice<'_, f32>,
) {
    let cols = w.cols;
    let mut decoded = [0f32; PIECE];
    let mut t0 = 0;
    while t0 < tokens {
        let t1 = (t0 + TOKEN_TILE).min(tokens);
        for r in rows.clone() {
            let (bytes, scales) = w.row(r);
            let mut acc = [[0f32; LANES]; TOKEN_TILE];
            let mut c0 = 0;
            while c0 < cols {
                // A piece never crosses a column block, so it has one scale.
                let block = c0 / w.block_cols;
                let c1 = (c0 + PIECE).min((block + 1) * w.block_cols).min(cols);
                let piece = &mut decoded[..c1 - c0];
                decode(&bytes[c0..c1], scales[block], piece);
                let x_at = |t: usize| &x[t * cols + c0..t * cols + c1];
                let (groups, rest) = acc[..t1 - t0].as_chunks_mut::<GROUP>();
                for (i, lanes) in groups.iter_mut().enumerate() {
                    let t = t0 + i * GROUP;
                    accumulate(piece, std::array::from_fn(|g| x_at(t + g)), lanes);
                }
                for (t, lanes) in (t1 - rest.len()..t1).zip(rest) {
                    accumulate(piece, [x_at(t)], std::array::from_mut(lanes));
                }
                c0 = c1;
            }
            for (t, lanes) in (t0..t1).zip(acc) {
                // SAFETY: this task owns rows `rows`, so (token, row) pairs are its alone.
                unsafe { out.write(t * w.rows + r, hsum8(lanes)) };
            }
        }
        t0 = t1;
    }
}

/// Adds `w . xs[g]` into `acc[g]`, lane `i % 8` taking element `i`. Each token's sums see
/// the same operations in the same order whatever `G` is.
#[inline(always)]
fn accumulate<const G: usize>(w: &[f32], xs: [&[f32]; G], acc: &mut [[f32; LANES]; G]) {
    let (w8, w_tail) = w.as_chunks::<LANES>();
    for (g, x) in xs.iter().enumerate() {
        let (x8, x_tail) = x.as_chunks::<LANES>();
        for (wv, xv) in w8.iter().zip(x8) {
            for l in 0..LANES {
                acc[g][l] += wv[l] * xv[l];
            }
        }
        for (l, (wv, xv)) in w_tail.iter().zip(x_tail).enumerate() {
            acc[g][l] += wv * xv;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sign * (exp == 0 ? man/8 * 2^-6 : (1 + man/8) * 2^(exp-7)), straight from the spec.
    fn spec_value(b: u8) -> f32 {
        let sign = if b & 0x80 != 0 { -1.0 } else { 1.0 };
        let exp = i32::from((b >> 3) & 0x0F);
        let man = f64::from(b & 0x07);
        if exp == 0x0F && man == 7.0 {
            return f32::NAN;
        }
        let v = if exp == 0 {
            man / 8.0 * 2f64.powi(-6)
        } else {
            (1.0 + man / 8.0) * 2f64.powi(exp - 7)
        };
        (sign * v) as f32
    }

    #[test]
    fn decode_table_matches_the_bit_formula_for_every_byte() {
        for b in 0..=255u8 {
            let (got, want) = (fp8_e4m3_to_f32(b), spec_value(b));
            if b & 0x7F == 0x7F {
                assert!(got.is_nan(), "byte {b:#04x}");
            } else {
                assert_eq!(
                    got.to_bits(),
                    want.to_bits(),
                    "byte {b:#04x}: {got} vs {want}"
                );
            }
        }
        assert_eq!(fp8_e4m3_to_f32(0x00).to_bits(), 0f32.to_bits());
        assert_eq!(fp8_e4m3_to_f32(0x80).to_bits(), (-0f32).to_bits());
        assert_eq!(fp8_e4m3_to_f32(0x7E), 448.0);
        assert_eq!(fp8_e4m3_to_f32(0xFE), -448.0);
        assert_eq!(fp8_e4m3_to_f32(0x01), 2f32.powi(-9));
        assert_eq!(fp8_e4m3_to_f32(0x07), 7.0 * 2f32.powi(-9));
        assert_eq!(fp8_e4m3_to_f32(0x08), 2f32.powi(-6));
        assert_eq!(fp8_e4m3_to_f32(0x38), 1.0);
        assert_eq!(fp8_e4m3_to_f32(0xC4), -3.0);
        assert_eq!(
            (0..=255u8).filter(|b| fp8_e4m3_to_f32(*b).is_nan()).count(),
            2
        );
    }

    /// A deterministic xorshift stream.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        /// A byte that is not NaN.
        fn fp8(&mut self) -> u8 {
            let b = self.next() as u8;
            if b & 0x7F == 0x7F { b ^ 0x01 } else { b }
        }
        /// Uniform in [-1, 1).
        fn unit(&mut self) -> f32 {
            (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        }
    }

    struct Case {
        rows: usize,
        cols: usize,
        block: (usize, usize),
        data: Vec<u8>,
        scales: Vec<f32>,
    }

    fn case(rows: usize, cols: usize, block: (usize, usize), seed: u64) -> Case {
        let mut rng = Rng(seed);
        let data = (0..rows * cols).map(|_| rng.fp8()).collect();
        let n_scales = rows.div_ceil(block.0) * cols.div_ceil(block.1);
        // Checkpoint scales are small positive numbers of varied size.
        let scales = (0..n_scales)
            .map(|_| 1e-4 * (1.5 + rng.unit()) * 2f32.powi((rng.next() % 5) as i32))
            .collect();
        Case {
            rows,
            cols,
            block,
            data,
            scales,
        }
    }

    /// Dequantizes the whole matrix by the definition, then sums each product in f64.
    fn naive(c: &Case, x: &[f32], tokens: usize) -> (Vec<f64>, Vec<f64>) {
        let (mut sums, mut mags) = (vec![0f64; tokens * c.rows], vec![0f64; tokens * c.rows]);
        let scale_cols = c.cols.div_ceil(c.block.1);
        for r in 0..c.rows {
            let wr: Vec<f32> = (0..c.cols)
                .map(|j| {
                    let s = c.scales[r / c.block.0 * scale_cols + j / c.block.1];
                    spec_value(c.data[r * c.cols + j]) * s
                })
                .collect();
            for t in 0..tokens {
                for (j, w) in wr.iter().enumerate() {
                    let p = f64::from(*w) * f64::from(x[t * c.cols + j]);
                    sums[t * c.rows + r] += p;
                    mags[t * c.rows + r] += p.abs();
                }
            }
        }
        (sums, mags)
    }

    #[test]
    fn products_match_dequantize_then_multiply_on_partial_blocks() {
        let pool = ThreadPool::new(3);
        let shapes = [
            (176, 256, (128, 128), 5),
            (384, 160, (128, 128), 5),
            (384, 256, (128, 128), 33),
            (7, 13, (3, 5), 6),
            (9, 700, (4, 300), 3),
            (1, 1, (128, 128), 1),
        ];
        for (i, (rows, cols, block, tokens)) in shapes.into_iter().enumerate() {
            let c = case(rows, cols, block, 0x9E37_79B9_7F4A_7C15 + i as u64);
            let w = Fp8Matrix::new(rows, cols, block.0, block.1, &c.data, &c.scales).unwrap();
            let mut rng = Rng(0xD1B5_4A32_D192_ED03 ^ i as u64);
            let x: Vec<f32> = (0..tokens * cols).map(|_| rng.unit()).collect();
            let mut out = vec![f32::NAN; tokens * rows];
            matmul_fp8(&pool, &w, &x, tokens, &mut out).unwrap();
            let (want, mags) = naive(&c, &x, tokens);
            for (k, ((got, want), mag)) in out.iter().zip(&want).zip(&mags).enumerate() {
                let err = (f64::from(*got) - want).abs() / mag.max(f64::MIN_POSITIVE);
                assert!(err < 1e-6, "{rows}x{cols} out[{k}] = {got}, want {want}");
            }
            // One token at a time gives the same bits as the batch.
            for t in 0..tokens {
                let mut one = vec![0f32; rows];
                matmul_fp8(&pool, &w, &x[t * cols..(t + 1) * cols], 1, &mut one).unwrap();
                assert_eq!(
                    one.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    out[t * rows..(t + 1) * rows]
                        .iter()
                        .map(|v| v.to_bits())
                        .collect::<Vec<_>>()
                );
            }
        }
    }

    #[test]
    fn dequantized_rows_use_their_own_tile_scales() {
        let c = case(176, 256, (128, 128), 7);
        let w = Fp8Matrix::new(176, 256, 128, 128, &c.data, &c.scales).unwrap();
        let mut row = vec![0f32; 256];
        for r in [0, 127, 128, 175] {
            w.dequantize_row(r, &mut row);
            for (j, v) in row.iter().enumerate() {
                let s = c.scales[r / 128 * 2 + j / 128];
                assert_eq!(v.to_bits(), (spec_value(c.data[r * 256 + j]) * s).to_bits());
            }
        }
    }

    #[test]
    fn wrong_lengths_are_errors() {
        let pool = ThreadPool::new(2);
        let (data, scales) = (vec![0x38u8; 176 * 256], vec![1f32; 4]);
        assert!(Fp8Matrix::new(176, 256, 128, 128, &data[1..], &scales).is_err());
        assert!(Fp8Matrix::new(176, 256, 128, 128, &data, &scales[1..]).is_err());
        assert!(Fp8Matrix::new(176, 256, 0, 128, &data, &scales).is_err());
        assert!(Fp8Matrix::new(176, 256, 128, 0, &data, &scales).is_err());
        assert!(Fp8Matrix::new(usize::MAX, 2, 128, 128, &data, &scales).is_err());
        let w = Fp8Matrix::new(176, 256, 128, 128, &data, &scales).unwrap();
        let x = vec![1f32; 2 * 256];
        let mut out = vec![0f32; 2 * 176];
        assert!(matmul_fp8(&pool, &w, &x[1..], 2, &mut out).is_err());
        assert!(matmul_fp8(&pool, &w, &x, 2, &mut out[1..]).is_err());
        assert!(matmul_fp8(&pool, &w, &x, usize::MAX, &mut out).is_err());
        matmul_fp8(&pool, &w, &x, 2, &mut out).unwrap();
        assert!(out.iter().all(|v| *v == 256.0));
        let (empty_x, mut empty_out) = ([0f32; 0], [0f32; 0]);
        matmul_fp8(&pool, &w, &empty_x, 0, &mut empty_out).unwrap();
    }
}
