//! Matrix products of quantized weights with a batch of activations, on the thread pool.
//!
//! `out[t][r] = dot(weight row r, activation row t)`. Activations are quantized once per
//! product into the weight type's `vec_dot_type`; the work is split into chunks of weight
//! rows, and within a chunk tokens are taken four at a time so each weight block is
//! unpacked once per four tokens while it sits in L1. One call can run several matrices that
//! share an input (Q, K and V; gate and up), so they cost one hand-off to the pool.

use crate::pool::DisjointSlice;
use crate::quant::{DotKernel, Isa, quantize_row};
use crate::{GgmlType, KernelError, ThreadPool};

/// A weight matrix borrowed from a model file: `rows` rows of `cols` values of type `ty`.
#[derive(Debug, Clone, Copy)]
pub struct QMatrix<'a> {
    ty: GgmlType,
    rows: usize,
    cols: usize,
    row_bytes: usize,
    data: &'a [u8],
}

impl<'a> QMatrix<'a> {
    /// Checks that `data` holds exactly `rows` rows of `cols` values of `ty`.
    pub fn new(
        ty: GgmlType,
        rows: usize,
        cols: usize,
        data: &'a [u8],
    ) -> Result<QMatrix<'a>, KernelError> {
        let row_bytes = ty.row_bytes(cols).ok_or(KernelError::NotBlockMultiple {
            op: "QMatrix::new",
            what: "column count",
            ty: ty.name(),
            block: ty.block_len(),
            got: cols,
        })?;
        let expected = row_bytes.saturating_mul(rows);
        if data.len() != expected || !ty.is_storage_type() {
            return Err(KernelError::Length {
                op: "QMatrix::new",
                what: "weight data",
                expected,
                got: data.len(),
            });
        }
        Ok(QMatrix {
            ty,
            rows,
            cols,
            row_bytes,
            data,
        })
    }

    pub fn ty(&self) -> GgmlType {
        self.ty
    }
    pub fn rows(&self) -> usize {
        self.rows
    }
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The bytes of row `r`.
    pub fn row(&self, r: usize) -> &'a [u8] {
        &self.data[r * self.row_bytes..(r + 1) * self.row_bytes]
    }
}

/// A batch of activation rows quantized for one weight type. The buffer is kept between
/// calls, so the decode loop does not allocate.
#[derive(Debug)]
pub struct Activations {
    ty: GgmlType,
    tokens: usize,
    cols: usize,
    row_bytes: usize,
    data: Vec<u8>,
    /// For Q8_1 rows in groups of eight tokens: per group, per block, the eight tokens'
    /// `d` then their eight `s` in f32 (what the eight-token kernels load at once).
    scales8: Vec<f32>,
    /// For Q8_1 and Q8_0 rows in pairs of tokens (the AVX-512 kernels): per pair, per
    /// block, the two tokens' 32 values interleaved by 4-byte groups (64 bytes).
    pairs: Vec<u8>,
    /// For Q8_1 and Q8_0 rows in groups of four tokens: per group, per block, the four
    /// tokens' `d` then their four `s` in f32 (zeros for Q8_0).
    scales4: Vec<f32>,
}

impl Default for Activations {
    fn default() -> Self {
        Activations {
            ty: GgmlType::F32,
            tokens: 0,
            cols: 0,
            row_bytes: 0,
            data: Vec::new(),
            scales8: Vec::new(),
            pairs: Vec::new(),
            scales4: Vec::new(),
        }
    }
}

impl Activations {
    /// Quantizes `x` (`tokens` rows of `cols` values) as the activation type that weights of
    /// type `weight_ty` multiply with.
    pub fn quantize(
        &mut self,
        pool: &ThreadPool,
        weight_ty: GgmlType,
        x: &[f32],
        tokens: usize,
        cols: usize,
    ) -> Result<(), KernelError> {
        let ty = weight_ty.vec_dot_type();
        let row_bytes = ty.row_bytes(cols).ok_or(KernelError::NotBlockMultiple {
            op: "Activations::quantize",
            what: "column count",
            ty: ty.name(),
            block: ty.block_len(),
            got: cols,
        })?;
        if x.len() != tokens * cols {
            return Err(KernelError::Shape {
                op: "Activations::quantize",
                what: "input length",
                expected: tokens * cols,
                got: x.len(),
            });
        }
        self.data.resize(tokens * row_bytes, 0);
        (self.ty, self.tokens, self.cols, self.row_bytes) = (ty, tokens, cols, row_bytes);
        if row_bytes == 0 {
            return Ok(());
        }
        // Q8_1 and Q8_0 rows are also laid out for the batch kernels: in token pairs with
        // four-token scale tables (AVX-512), and Q8_1 with eight-token tables (AVX2).
        let layouts = matches!(ty, GgmlType::Q8_1 | GgmlType::Q8_0);
        let q8_1 = ty == GgmlType::Q8_1;
        let nb = cols / crate::QK;
        let (pair_len, len4, len8) = (nb * 64, nb * 8, nb * 16);
        self.pairs
            .resize(if layouts { tokens / 2 * pair_len } else { 0 }, 0);
        self.scales4
            .resize(if layouts { tokens / 4 * len4 } else { 0 }, 0.0);
        self.scales8
            .resize(if q8_1 { tokens / 8 * len8 } else { 0 }, 0.0);
        let data = DisjointSlice::new(&mut self.data);
        let pairs = DisjointSlice::new(&mut self.pairs);
        let scales4 = DisjointSlice::new(&mut self.scales4);
        let scales8 = DisjointSlice::new(&mut self.scales8);
        // Task g: tokens 8g.. (eight, or the rest), quantized and then laid out, so the
        // whole job is one hand-off to the pool.
        let group = |g: usize| {
            let (t0, t1) = (8 * g, (8 * g + 8).min(tokens));
            // SAFETY: task g alone writes the rows of its tokens, their pairs (whole pairs
            // within the group, as 8 is even) and their scale tables (whole groups of four
            // and eight within the group).
            let rows = unsafe { data.slice_mut(t0 * row_bytes, (t1 - t0) * row_bytes) };
            for (t, row) in (t0..t1).zip(rows.chunks_exact_mut(row_bytes)) {
                // Lengths were checked above, so this cannot fail.
                let _ = quantize_row(ty, &x[t * cols..(t + 1) * cols], row);
            }
            if !layouts {
                return;
            }
            let rows: &[u8] = rows;
            for q in t0 / 2..t1 / 2 {
                let a = 2 * q - t0;
                // SAFETY: as above.
                let dst = unsafe { pairs.slice_mut(q * pair_len, pair_len) };
                interleave_pair(&rows[a * row_bytes..(a + 2) * row_bytes], q8_1, dst);
            }
            for f in t0 / 4..t1 / 4 {
                let a = 4 * f - t0;
                // SAFETY: as above.
                let dst = unsafe { scales4.slice_mut(f * len4, len4) };
                scale_table(&rows[a * row_bytes..(a + 4) * row_bytes], 4, q8_1, dst);
            }
            if q8_1 && t1 - t0 == 8 {
                // SAFETY: as above.
                let dst = unsafe { scales8.slice_mut(g * len8, len8) };
                scale_table(rows, 8, q8_1, dst);
            }
        };
        if tokens < 8 {
            group(0);
        } else {
            pool.run(tokens.div_ceil(8), &group);
        }
        Ok(())
    }

    /// The scale table of the eight-token group starting at token `t` (a multiple of 8).
    fn scales8(&self, t: usize) -> &[f32] {
        let len = self.cols / crate::QK * 16;
        &self.scales8[t / 8 * len..(t / 8 + 1) * len]
    }

    pub fn tokens(&self) -> usize {
        self.tokens
    }

    fn row(&self, t: usize) -> &[u8] {
        &self.data[t * self.row_bytes..(t + 1) * self.row_bytes]
    }
}

/// The scale table of `group` consecutive quantized Q8_1 (`q8_1`) or Q8_0 rows (`rows`,
/// one after another): per block, the rows' `d` then their `s` in f32 (zeros for Q8_0,
/// which has no `s`).
fn scale_table(rows: &[u8], group: usize, q8_1: bool, dst: &mut [f32]) {
    let rb = rows.len() / group;
    let bb = if q8_1 { 36 } else { 34 };
    for (c, row) in rows.chunks_exact(rb).enumerate() {
        for (i, at) in dst.chunks_exact_mut(2 * group).enumerate() {
            at[c] = crate::quant::f16_at(row, i * bb);
            at[group + c] = if q8_1 {
                crate::quant::f16_at(row, i * bb + 2)
            } else {
                0.0
            };
        }
    }
}

/// Two consecutive quantized Q8_1 (`q8_1`) or Q8_0 rows (`rows`) as one pair row: per
/// block, the two rows' 32 values interleaved by 4-byte groups (64 bytes).
fn interleave_pair(rows: &[u8], q8_1: bool, dst: &mut [u8]) {
    let rb = rows.len() / 2;
    // Block bytes and header bytes: Q8_1 blocks start with `d` and `s`, Q8_0 with `d`.
    let (bb, hb) = if q8_1 { (36, 4) } else { (34, 2) };
    let (a, b) = rows.split_at(rb);
    for (i, blk) in dst.chunks_exact_mut(64).enumerate() {
        for j in 0..8 {
            let at = i * bb + hb + 4 * j;
            blk[8 * j..8 * j + 4].copy_from_slice(&a[at..at + 4]);
            blk[8 * j + 4..8 * j + 8].copy_from_slice(&b[at..at + 4]);
        }
    }
}

/// The most products one `matmul` call runs together.
pub const MAX_TARGETS: usize = 4;

/// One product of a batch: `out` receives `tokens x weight.rows()` values, token-major.
#[derive(Debug)]
pub struct MatmulTarget<'w, 'o> {
    pub weight: &'w QMatrix<'w>,
    pub out: &'o mut [f32],
}

/// Multiplies every target's weight with `acts` on the pool. All weights must take the
/// activation type `acts` was quantized as, and have `acts`' column count.
pub fn matmul(
    pool: &ThreadPool,
    isa: Isa,
    acts: &Activations,
    targets: &mut [MatmulTarget<'_, '_>],
) -> Result<(), KernelError> {
    let tokens = acts.tokens;
    if targets.len() > MAX_TARGETS {
        return Err(KernelError::Shape {
            op: "matmul",
            what: "target count",
            expected: MAX_TARGETS,
            got: targets.len(),
        });
    }
    // Fixed-size tables, so a decode step allocates nothing here.
    let mut kernels: [Option<DotKernel>; MAX_TARGETS] = [None; MAX_TARGETS];
    for (t, slot) in targets.iter().zip(kernels.iter_mut()) {
        let w = t.weight;
        if w.ty.vec_dot_type() != acts.ty {
            return Err(KernelError::UnsupportedType {
                op: "matmul: activations quantized for another type",
                ty: w.ty.name(),
            });
        }
        if w.cols != acts.cols {
            return Err(KernelError::Shape {
                op: "matmul",
                what: "weight columns",
                expected: acts.cols,
                got: w.cols,
            });
        }
        if t.out.len() != tokens * w.rows {
            return Err(KernelError::Shape {
                op: "matmul",
                what: "output length",
                expected: tokens * w.rows,
                got: t.out.len(),
            });
        }
        *slot = Some(DotKernel::new(isa, w.ty)?);
    }
    // How rows are split into tasks. A single token (decode) streams each weight once and
    // is bound by memory: two long contiguous runs per thread let the hardware prefetcher
    // stream (measured ~15% faster than 64-row chunks). Batches are bound by compute:
    // smaller chunks balance the threads better. A multiple of 4 either way, so single
    // tokens run four rows at a time.
    let total_rows: usize = targets.iter().map(|t| t.weight.rows).sum();
    let chunk = if tokens < 4 {
        (total_rows / (pool.threads() * 2)).max(4).div_ceil(4) * 4
    } else {
        (total_rows / (pool.threads() * 8)).clamp(4, 64) / 4 * 4
    };
    let mut first_task = [usize::MAX; MAX_TARGETS];
    let mut n_tasks = 0;
    for (t, first) in targets.iter().zip(first_task.iter_mut()) {
        *first = n_tasks;
        n_tasks += t.weight.rows.div_ceil(chunk);
    }
    let n_targets = targets.len();
    let mut iter = targets.iter_mut();
    let jobs: [Option<(&QMatrix<'_>, DisjointSlice<'_, f32>)>; MAX_TARGETS] =
        std::array::from_fn(|_| iter.next().map(|t| (t.weight, DisjointSlice::new(t.out))));
    pool.run(n_tasks, &|task| {
        let which = first_task[..n_targets]
            .iter()
            .rposition(|first| *first <= task)
            .unwrap_or(0);
        if let (Some((w, out)), Some(k)) = (&jobs[which], kernels[which]) {
            let r0 = (task - first_task[which]) * chunk;
            let r1 = (r0 + chunk).min(w.rows);
            run_chunk(w, acts, k, r0..r1, out);
        }
    });
    Ok(())
}

/// Rows `rows` of `w` against all tokens: four rows at a time against each token when
/// there are few tokens (decode), four tokens at a time against each row in token tiles
/// otherwise (prefill). Every (row, token) value is computed the same way either way.
fn run_chunk(
    w: &QMatrix<'_>,
    acts: &Activations,
    k: DotKernel,
    rows: std::ops::Range<usize>,
    out: &DisjointSlice<'_, f32>,
) {
    let n = w.cols;
    let tokens = acts.tokens;
    let quads = if tokens >= 4 { tokens / 4 * 4 } else { 0 };
    // Token tiles keep a few activation rows hot while the chunk's weight rows cycle: eight
    // tokens of a row of 576 or 1536 values (5 or 14 KB of Q8_1) sit in L1 with room to
    // spare (measured: 8 as fast as 16 or 24, faster than 32).
    const TILE: usize = 8;
    let mut t0 = 0;
    while t0 < quads {
        let t1 = (t0 + TILE).min(quads);
        for r in rows.clone() {
            let x = w.row(r);
            let mut t = t0;
            // Token t's value and the next ones, for this row.
            let put = |t: usize, v: &[f32]| {
                for (j, value) in v.iter().enumerate() {
                    // SAFETY: (token, row) pairs of this chunk belong to this task alone.
                    unsafe { out.write((t + j) * w.rows + r, *value) };
                }
            };
            if let Some((pairs8, pairs4)) = k.pairs {
                let nb = n / crate::QK;
                let (ps, ss) = (nb * 64, nb * 8);
                while t + 4 <= t1 {
                    let ys = &acts.pairs[t / 2 * ps..];
                    let ds = &acts.scales4[t / 4 * ss..];
                    if t + 8 <= t1 {
                        put(t, &pairs8(n, x, ys, ps, ds, ss));
                        t += 8;
                    } else {
                        put(t, &pairs4(n, x, ys, ps, ds, ss));
                        t += 4;
                    }
                }
            }
            if let Some(acts8) = k.acts8
                && acts.ty == GgmlType::Q8_1
            {
                while t + 8 <= t1 {
                    let ys = &acts.data[t * acts.row_bytes..(t + 8) * acts.row_bytes];
                    put(t, &acts8(n, x, ys, acts.row_bytes, acts.scales8(t)));
                    t += 8;
                }
            }
            while t < t1 {
                let ys = [
                    acts.row(t),
                    acts.row(t + 1),
                    acts.row(t + 2),
                    acts.row(t + 3),
                ];
                put(t, &(k.acts4)(n, x, ys));
                t += 4;
            }
        }
        t0 = t1;
    }
    for t in quads..tokens {
        let y = acts.row(t);
        let mut r = rows.start;
        while r + 4 <= rows.end {
            let v = (k.rows4)(n, [w.row(r), w.row(r + 1), w.row(r + 2), w.row(r + 3)], y);
            for (j, value) in v.into_iter().enumerate() {
                // SAFETY: as above.
                unsafe { out.write(t * w.rows + r + j, value) };
            }
            r += 4;
        }
        for r in r..rows.end {
            // SAFETY: as above.
            unsafe { out.write(t * w.rows + r, (k.one)(n, w.row(r), y)) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dequantize_row;

    fn reference(w: &QMatrix<'_>, x: &[f32], tokens: usize) -> Vec<f32> {
        // Same arithmetic through vec_dot, one pair at a time.
        let act_ty = w.ty().vec_dot_type();
        let mut out = vec![0f32; tokens * w.rows()];
        for t in 0..tokens {
            let mut a = vec![0u8; act_ty.row_bytes(w.cols()).unwrap()];
            quantize_row(act_ty, &x[t * w.cols()..(t + 1) * w.cols()], &mut a).unwrap();
            for r in 0..w.rows() {
                out[t * w.rows() + r] =
                    crate::vec_dot(Isa::active(), w.ty(), w.cols(), w.row(r), &a).unwrap();
            }
        }
        out
    }

    #[test]
    fn batched_products_equal_pairwise_dots_for_every_batch_size() {
        let pool = ThreadPool::new(2);
        let (rows, cols) = (37, 64);
        let mut data = vec![0u8; GgmlType::Q8_0.row_bytes(cols).unwrap() * rows];
        for (i, b) in data.iter_mut().enumerate() {
            *b = (i * 31 % 251) as u8;
        }
        for blk in data.chunks_exact_mut(34) {
            blk[0..2].copy_from_slice(&half::f16::from_f32(0.01).to_bits().to_le_bytes());
        }
        let w = QMatrix::new(GgmlType::Q8_0, rows, cols, &data).unwrap();
        let mut acts = Activations::default();
        for tokens in [1usize, 3, 4, 5, 9, 17, 33] {
            let x: Vec<f32> = (0..tokens * cols)
                .map(|i| ((i * 7 % 13) as f32 - 6.0) * 0.1)
                .collect();
            acts.quantize(&pool, w.ty(), &x, tokens, cols).unwrap();
            let mut out = vec![f32::NAN; tokens * rows];
            matmul(
                &pool,
                Isa::active(),
                &acts,
                &mut [MatmulTarget {
                    weight: &w,
                    out: &mut out,
                }],
            )
            .unwrap();
            let want = reference(&w, &x, tokens);
            assert_eq!(
                out.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                want.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            );
        }
        let mut row = vec![0f32; cols];
        dequantize_row(GgmlType::Q8_0, w.row(0), &mut row).unwrap();
        assert!(row.iter().any(|v| *v != 0.0));
    }

    /// Q4_1 runs eight tokens at a time from a gathered scale table (AVX2), or eight and
    /// four at a time from interleaved token pairs (AVX-512): every batch size must still
    /// give each pair's single-dot bits, on every instruction set.
    #[test]
    fn q4_1_eight_token_tiles_equal_pairwise_dots() {
        let pool = ThreadPool::new(2);
        let (rows, cols) = (13, 96);
        let mut data = vec![0u8; GgmlType::Q4_1.row_bytes(cols).unwrap() * rows];
        for (i, b) in data.iter_mut().enumerate() {
            *b = (i * 37 % 253) as u8;
        }
        for (j, blk) in data.chunks_exact_mut(20).enumerate() {
            let d = 0.003 + (j % 7) as f32 * 0.001;
            let m = -0.02 + (j % 5) as f32 * 0.007;
            blk[0..2].copy_from_slice(&half::f16::from_f32(d).to_bits().to_le_bytes());
            blk[2..4].copy_from_slice(&half::f16::from_f32(m).to_bits().to_le_bytes());
        }
        let w = QMatrix::new(GgmlType::Q4_1, rows, cols, &data).unwrap();
        let mut acts = Activations::default();
        for isa in [Isa::active(), Isa::Avx2, Isa::Portable] {
            for tokens in [1usize, 7, 8, 12, 16, 20, 24, 33] {
                let x: Vec<f32> = (0..tokens * cols)
                    .map(|i| ((i * 11 % 17) as f32 - 8.0) * 0.13)
                    .collect();
                acts.quantize(&pool, w.ty(), &x, tokens, cols).unwrap();
                let mut out = vec![f32::NAN; tokens * rows];
                let target = MatmulTarget {
                    weight: &w,
                    out: &mut out,
                };
                matmul(&pool, isa, &acts, &mut [target]).unwrap();
                let want = reference(&w, &x, tokens);
                assert_eq!(
                    out.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    "{isa:?}, {tokens} tokens"
                );
            }
        }
    }

    #[test]
    fn shape_errors_are_reported() {
        let pool = ThreadPool::new(1);
        assert!(QMatrix::new(GgmlType::Q4_1, 2, 32, &[0u8; 39]).is_err());
        assert!(QMatrix::new(GgmlType::Q4_1, 2, 30, &[0u8; 40]).is_err());
        let data = [0u8; 40];
        let w = QMatrix::new(GgmlType::Q4_1, 2, 32, &data).unwrap();
        let mut acts = Activations::default();
        assert!(
            acts.quantize(&pool, GgmlType::Q4_1, &[0.0; 31], 1, 32)
                .is_err()
        );
        acts.quantize(&pool, GgmlType::Q4_1, &[0.5; 32], 1, 32)
            .unwrap();
        let mut out = vec![0f32; 3];
        assert!(
            matmul(
                &pool,
                Isa::active(),
                &acts,
                &mut [MatmulTarget {
                    weight: &w,
                    out: &mut out
                }]
            )
            .is_err()
        );
        acts.quantize(&pool, GgmlType::Q8_0, &[0.5; 32], 1, 32)
            .unwrap();
        let mut out = vec![0f32; 2];
        assert!(
            matmul(
                &pool,
                Isa::active(),
                &acts,
                &mut [MatmulTarget {
                    weight: &w,
                    out: &mut out
                }]
            )
            .is_err()
        );
    }
}
