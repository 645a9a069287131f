//! Dense f32 matrix products for encoders (the embedding models). The encoders run
//! [`matmul_packed_nt`]: weights packed once at load ([`PackedNt`]), our own AVX-512 tile
//! where the CPU has AVX-512F, the `gemm` crate's kernels (AVX2+FMA or portable, chosen at
//! run time) elsewhere. [`matmul_f32_nt`] is the `gemm` crate on unpacked weights, the
//! reference the packed product is tested against. The LLM forward pass uses neither: its
//! products keep llama.cpp's exact arithmetic (`matmul`).

use crate::{KernelError, ThreadPool};

/// The output base pointer, shared by the tasks; each writes its own columns.
struct Shared(*mut f32);
// SAFETY: the tasks write disjoint columns of the output (see `matmul_f32_nt`).
unsafe impl Sync for Shared {}
// SAFETY: as above.
unsafe impl Send for Shared {}

/// Each `(what, expected, got)` length as expected, or the error naming the first that is not.
fn check(op: &'static str, lengths: &[(&'static str, usize, usize)]) -> Result<(), KernelError> {
    for &(what, expected, got) in lengths {
        if expected != got {
            return Err(KernelError::Shape {
                op,
                what,
                expected,
                got,
            });
        }
    }
    Ok(())
}

/// A product with nothing to compute: no output, or (no input columns) zeros.
fn empty(tokens: usize, rows: usize, cols: usize, out: &mut [f32]) -> bool {
    if tokens == 0 || rows == 0 {
        return true;
    }
    if cols == 0 {
        out.fill(0.0);
        return true;
    }
    false
}

/// `out[t][r] = sum_k x[t][k] * w[r][k]`: `x` is `tokens x cols`, `w` is `rows x cols`
/// (a linear layer's weight, as PyTorch stores it), `out` is `tokens x rows`, all row-major.
pub fn matmul_f32_nt(
    pool: &ThreadPool,
    x: &[f32],
    tokens: usize,
    w: &[f32],
    rows: usize,
    cols: usize,
    out: &mut [f32],
) -> Result<(), KernelError> {
    check(
        "matmul_f32_nt",
        &[
            ("input length", tokens * cols, x.len()),
            ("weight length", rows * cols, w.len()),
            ("output length", tokens * rows, out.len()),
        ],
    )?;
    if empty(tokens, rows, cols, out) {
        return Ok(());
    }
    let threads = pool.threads().max(1);
    // Many rows of input: each task takes whole rows of the output (its share of the input
    // packed once, the weights read by all). Few: column blocks of whole 16s, one or two
    // per thread.
    let by_rows = tokens >= 32 * threads;
    let per = if by_rows {
        tokens.div_ceil(threads)
    } else {
        rows.div_ceil(threads * 2).div_ceil(16) * 16
    };
    let tasks = if by_rows { tokens } else { rows }.div_ceil(per);
    let base = Shared(out.as_mut_ptr());
    let base = &base;
    pool.run(tasks, &|task| {
        let (t, r) = if by_rows {
            (task * per..((task + 1) * per).min(tokens), 0..rows)
        } else {
            (0..tokens, task * per..((task + 1) * per).min(rows))
        };
        if t.is_empty() || r.is_empty() {
            return;
        }
        // SAFETY: `out` holds `tokens x rows` values, `x` `tokens x cols` and `w` `rows x
        // cols` (checked above), so every element of this block (rows `t` of `x` and
        // `out`, rows `r` of `w`, columns `r` of `out`) lies inside them; this task alone
        // writes the block of `out`; `x` and `w` are read only.
        unsafe {
            gemm::gemm(
                t.len(),
                r.len(),
                cols,
                base.0.add(t.start * rows + r.start),
                1,
                rows as isize,
                false,
                x.as_ptr().add(t.start * cols),
                1,
                cols as isize,
                w.as_ptr().add(r.start * cols),
                cols as isize,
                1,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
    });
    Ok(())
}

/// Output columns per panel of a [`PackedNt`] (two 16-lane AVX-512 vectors). A tile of 8
/// tokens x 48 outputs (three vectors, fewer broadcasts per product) measured the same
/// within the noise: 367 against 357 texts/s at batch 64, 197 against 201 at batch 1.
pub const PANEL: usize = 32;

/// Tokens per tile of the AVX-512 kernel: 12 rows x 2 vectors = 24 accumulators, which with
/// the two weight vectors and the broadcast fit the 32 vector registers.
const MR: usize = 12;

/// A weight matrix (`rows x cols`, row-major, as PyTorch stores a linear layer's) packed
/// once, when the model loads, for [`matmul_packed_nt`]: panels of [`PANEL`] rows, each
/// stored `cols x PANEL` (input column `k` of the panel's rows side by side), the last one
/// padded with zeros. A product then streams each panel with unit stride and never repacks
/// the weights.
#[derive(Clone)]
pub struct PackedNt {
    rows: usize,
    cols: usize,
    data: Vec<f32>,
    /// The layer's bias, padded with zeros to whole panels; all zeros when it has none.
    bias: Vec<f32>,
}

/// What a product does to each output after the sum, while it is still in registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// The sum plus the bias.
    None,
    /// BERT's GELU of the sum plus the bias ([`crate::vmath::gelu_lane`]).
    Gelu,
}

impl std::fmt::Debug for PackedNt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedNt")
            .field("rows", &self.rows)
            .field("cols", &self.cols)
            .finish_non_exhaustive()
    }
}

impl PackedNt {
    /// Packs `w` (`rows x cols`, row-major).
    pub fn new(w: &[f32], rows: usize, cols: usize) -> Result<PackedNt, KernelError> {
        if w.len() != rows * cols {
            return Err(KernelError::Shape {
                op: "PackedNt::new",
                what: "weight length",
                expected: rows * cols,
                got: w.len(),
            });
        }
        let panels = rows.div_ceil(PANEL);
        let mut data = vec![0f32; panels * cols * PANEL];
        for (r, row) in w.chunks_exact(cols.max(1)).enumerate().take(rows) {
            let (p, j) = (r / PANEL, r % PANEL);
            let panel = &mut data[p * cols * PANEL..(p + 1) * cols * PANEL];
            for (k, &v) in row.iter().enumerate() {
                panel[k * PANEL + j] = v;
            }
        }
        Ok(PackedNt {
            rows,
            cols,
            data,
            bias: vec![0f32; panels * PANEL],
        })
    }

    /// The same weights with the layer's bias (`rows` values), added to every output.
    pub fn with_bias(mut self, bias: &[f32]) -> Result<PackedNt, KernelError> {
        check(
            "PackedNt::with_bias",
            &[("bias length", self.rows, bias.len())],
        )?;
        self.bias[..bias.len()].copy_from_slice(bias);
        Ok(self)
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    fn panels(&self) -> usize {
        self.rows.div_ceil(PANEL)
    }
}

/// Whether this CPU runs the AVX-512 kernel of [`matmul_packed_nt`].
pub fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `out[t][r] = sum_k x[t][k] * w[r][k]` as [`matmul_f32_nt`], with `w` packed: on a CPU with
/// AVX-512 by our own kernel (12 tokens x 32 outputs per tile, the accumulators in
/// registers, each panel read with unit stride), elsewhere by the `gemm` crate on each
/// panel. Split over the pool by tokens when there are many, else by panels.
pub fn matmul_packed_nt(
    pool: &ThreadPool,
    x: &[f32],
    tokens: usize,
    w: &PackedNt,
    act: Activation,
    out: &mut [f32],
) -> Result<(), KernelError> {
    matmul_packed_with(pool, x, tokens, w, act, out, has_avx512())
}

fn matmul_packed_with(
    pool: &ThreadPool,
    x: &[f32],
    tokens: usize,
    w: &PackedNt,
    act: Activation,
    out: &mut [f32],
    avx512: bool,
) -> Result<(), KernelError> {
    let (rows, cols) = (w.rows, w.cols);
    check(
        "matmul_packed_nt",
        &[
            ("input length", tokens * cols, x.len()),
            ("output length", tokens * rows, out.len()),
        ],
    )?;
    if empty(tokens, rows, cols, out) {
        return Ok(());
    }
    let threads = pool.threads().max(1);
    let panels = w.panels();
    // Many tokens: each task takes whole tiles of tokens against every panel (its tokens
    // stay in cache while the panels stream by). Few: each task takes panels.
    let by_tokens = tokens >= 2 * MR * threads;
    let (tasks, per) = if by_tokens {
        let per = tokens.div_ceil(threads).div_ceil(MR) * MR;
        (tokens.div_ceil(per), per)
    } else {
        let per = panels.div_ceil(threads);
        (panels.div_ceil(per), per)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = avx512;
    let base = Shared(out.as_mut_ptr());
    let base = &base;
    pool.run(tasks, &|task| {
        let (t, p) = if by_tokens {
            (task * per..((task + 1) * per).min(tokens), 0..panels)
        } else {
            (0..tokens, task * per..((task + 1) * per).min(panels))
        };
        if t.is_empty() || p.is_empty() {
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if avx512 {
            // SAFETY: `x` holds `tokens x cols` values and `out` `tokens x rows` (checked
            // above); `t` lies within `tokens` and panels `p` within the packed weights.
            // This task alone writes rows `t` x the columns of panels `p` of `out`.
            unsafe { avx512::block(x, cols, t, w, act, p, base.0) };
            return;
        }
        for panel in p {
            let r0 = panel * PANEL;
            let n = PANEL.min(rows - r0);
            let packed = &w.data[panel * cols * PANEL..(panel + 1) * cols * PANEL];
            // SAFETY: `x` holds `tokens x cols` values and `out` `tokens x rows` (checked
            // above); `t` lies within `tokens`, the panel's `n` outputs within `rows` from
            // `r0`, and `packed` holds the panel's `cols x PANEL` values. This task alone
            // writes rows `t` x columns `r0..r0 + n` of `out`; `x` and `w` are read only.
            unsafe {
                gemm::gemm(
                    t.len(),
                    n,
                    cols,
                    base.0.add(t.start * rows + r0),
                    1,
                    rows as isize,
                    false,
                    x.as_ptr().add(t.start * cols),
                    1,
                    cols as isize,
                    packed.as_ptr(),
                    1,
                    PANEL as isize,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
            for row in t.clone() {
                // SAFETY: as above: this task's row `row`, columns `r0..r0 + n`.
                let o = unsafe { std::slice::from_raw_parts_mut(base.0.add(row * rows + r0), n) };
                for (v, b) in o.iter_mut().zip(&w.bias[r0..r0 + n]) {
                    *v += b;
                    if act == Activation::Gelu {
                        *v = crate::vmath::gelu_lane(*v);
                    }
                }
            }
        }
    });
    Ok(())
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::{
        __m512, _mm512_add_ps, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_mask_storeu_ps,
        _mm512_set1_ps, _mm512_setzero_ps, _mm512_storeu_ps,
    };

    use super::{Activation, MR, PANEL, PackedNt};

    /// Vectors per tile row.
    const V: usize = PANEL / 16;

    /// Tokens `t` of `x` (`cols` wide) against panels `panels` of the packed weights `w`,
    /// into `out` (`rows` wide), panel by panel: each panel stays in cache while every run
    /// of up to [`MR`] tokens meets it. (Copying each run `k`-major first, so that the
    /// broadcasts read one stream, measured slower: 270 against 296 texts/s.)
    ///
    /// # Safety
    /// The CPU has AVX-512F; `x` covers tokens `t`; `w` holds `cols x PANEL` values for
    /// each panel of `panels`; `out` is valid for writes at rows `t`, the panels' columns
    /// below `rows`.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn block(
        x: &[f32],
        cols: usize,
        t: std::ops::Range<usize>,
        w: &PackedNt,
        act: Activation,
        panels: std::ops::Range<usize>,
        out: *mut f32,
    ) {
        let rows = w.rows;
        // Panel by panel (each stays in cache while every run of tokens meets it).
        for panel in panels {
            let r0 = panel * PANEL;
            let n = PANEL.min(rows - r0);
            let packed = &w.data[panel * cols * PANEL..(panel + 1) * cols * PANEL];
            let bias = &w.bias[r0..r0 + PANEL];
            let gelu = act == Activation::Gelu;
            for first in t.clone().step_by(MR) {
                let m = MR.min(t.end - first);
                let block = &x[first * cols..(first + m) * cols];
                // SAFETY: as the caller promised, for tokens `first..first + m` and this
                // panel's `n` columns from `r0`.
                unsafe {
                    let o = out.add(first * rows + r0);
                    match m {
                        12 => tile::<12>(block, cols, packed, bias, gelu, o, rows, n),
                        11 => tile::<11>(block, cols, packed, bias, gelu, o, rows, n),
                        10 => tile::<10>(block, cols, packed, bias, gelu, o, rows, n),
                        9 => tile::<9>(block, cols, packed, bias, gelu, o, rows, n),
                        8 => tile::<8>(block, cols, packed, bias, gelu, o, rows, n),
                        7 => tile::<7>(block, cols, packed, bias, gelu, o, rows, n),
                        6 => tile::<6>(block, cols, packed, bias, gelu, o, rows, n),
                        5 => tile::<5>(block, cols, packed, bias, gelu, o, rows, n),
                        4 => tile::<4>(block, cols, packed, bias, gelu, o, rows, n),
                        3 => tile::<3>(block, cols, packed, bias, gelu, o, rows, n),
                        2 => tile::<2>(block, cols, packed, bias, gelu, o, rows, n),
                        _ => tile::<1>(block, cols, packed, bias, gelu, o, rows, n),
                    }
                }
            }
        }
    }

    /// One tile: `M` tokens x the panel's 32 outputs, over every input column.
    ///
    /// `a` holds the `M` tokens' rows (`cols` values each).
    ///
    /// # Safety
    /// AVX-512F; `a` holds `M x cols` values, `packed` `cols x PANEL`; `out` is valid for
    /// writes at `M` rows (`rows` apart) of `n <= PANEL` values.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile<const M: usize>(
        a: &[f32],
        cols: usize,
        packed: &[f32],
        bias: &[f32],
        gelu: bool,
        out: *mut f32,
        rows: usize,
        n: usize,
    ) {
        debug_assert!(M <= MR && a.len() >= M * cols && packed.len() >= cols * PANEL && n <= PANEL);
        let mut acc: [[__m512; V]; M] = [[_mm512_setzero_ps(); V]; M];
        let ap = a.as_ptr();
        let wp = packed.as_ptr();
        for k in 0..cols {
            // SAFETY: `k < cols`: the panel's column `k` (PANEL values) and each token's
            // value `k` lie inside `packed` and `a`.
            unsafe {
                let mut b = [_mm512_setzero_ps(); V];
                for (v, bv) in b.iter_mut().enumerate() {
                    *bv = _mm512_loadu_ps(wp.add(k * PANEL + 16 * v));
                }
                for (i, c) in acc.iter_mut().enumerate() {
                    let x = _mm512_set1_ps(*ap.add(i * cols + k));
                    for v in 0..V {
                        c[v] = _mm512_fmadd_ps(x, b[v], c[v]);
                    }
                }
            }
        }
        // The lanes of each vector that hold one of the `n` outputs.
        let mut masks = [0u16; V];
        for (v, m) in masks.iter_mut().enumerate() {
            let lanes = n.saturating_sub(16 * v).min(16);
            *m = ((1u32 << lanes) - 1) as u16;
        }
        // SAFETY: `bias` holds PANEL values.
        let b: [__m512; V] =
            std::array::from_fn(|v| unsafe { _mm512_loadu_ps(bias.as_ptr().add(16 * v)) });
        for (i, c) in acc.iter().enumerate() {
            // SAFETY: row `i` of the tile: `n` values from `out + i * rows`, which the
            // caller made valid; the masks write only those.
            unsafe {
                let o = out.add(i * rows);
                for v in 0..V {
                    let mut sum = _mm512_add_ps(c[v], b[v]);
                    if gelu {
                        let mut lanes = [0f32; 16];
                        _mm512_storeu_ps(lanes.as_mut_ptr(), sum);
                        for l in &mut lanes {
                            *l = crate::vmath::gelu_lane(*l);
                        }
                        sum = _mm512_loadu_ps(lanes.as_ptr());
                    }
                    _mm512_mask_storeu_ps(o.add(16 * v), masks[v], sum);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An input (`tokens x cols`) and weights (`rows x cols`) of small varied values.
    fn operands(tokens: usize, rows: usize, cols: usize) -> (Vec<f32>, Vec<f32>) {
        let x = (0..tokens * cols)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) / 5.0)
            .collect();
        let w = (0..rows * cols)
            .map(|i| ((i * 5 % 11) as f32 - 5.0) / 7.0)
            .collect();
        (x, w)
    }

    #[test]
    fn matches_the_plain_product() {
        let pool = ThreadPool::new(3);
        for (tokens, rows, cols) in [
            (1, 5, 7),
            (17, 384, 384),
            (33, 50, 1536),
            (4, 100, 3),
            (200, 70, 384),
            (97, 16, 5),
        ] {
            let (x, w) = operands(tokens, rows, cols);
            let mut out = vec![f32::NAN; tokens * rows];
            matmul_f32_nt(&pool, &x, tokens, &w, rows, cols, &mut out).unwrap();
            for t in 0..tokens {
                for r in 0..rows {
                    let want: f64 = (0..cols)
                        .map(|k| f64::from(x[t * cols + k]) * f64::from(w[r * cols + k]))
                        .sum();
                    let got = f64::from(out[t * rows + r]);
                    assert!(
                        (got - want).abs() <= 1e-4 * (1.0 + want.abs()),
                        "({t},{r}): {got} vs {want}"
                    );
                }
            }
        }
        let mut out = vec![0f32; 2];
        assert!(matmul_f32_nt(&pool, &[1.0; 3], 1, &[1.0; 4], 2, 2, &mut out).is_err());
    }

    #[test]
    fn the_packed_product_matches_the_plain_one_on_both_paths() {
        let pool = ThreadPool::new(3);
        for (tokens, rows, cols) in [
            (1, 5, 7),
            (13, 384, 384),
            (37, 50, 96),
            (4, 100, 3),
            (200, 70, 384),
            (97, 33, 5),
            (25, 1152, 64),
        ] {
            let (x, w) = operands(tokens, rows, cols);
            let bias: Vec<f32> = (0..rows).map(|r| (r % 7) as f32 / 3.0 - 1.0).collect();
            let plain = PackedNt::new(&w, rows, cols).unwrap();
            let biased = plain.clone().with_bias(&bias).unwrap();
            let mut sums = vec![0f32; tokens * rows];
            matmul_f32_nt(&pool, &x, tokens, &w, rows, cols, &mut sums).unwrap();
            let paths: &[bool] = if has_avx512() {
                &[false, true]
            } else {
                &[false]
            };
            for (packed, act) in [
                (&plain, Activation::None),
                (&biased, Activation::None),
                (&biased, Activation::Gelu),
            ] {
                let want: Vec<f32> = sums
                    .iter()
                    .enumerate()
                    .map(|(i, s)| {
                        let v = s + packed.bias[i % rows];
                        match act {
                            Activation::None => v,
                            Activation::Gelu => crate::vmath::gelu_lane(v),
                        }
                    })
                    .collect();
                for &avx512 in paths {
                    // NaN wherever the product fails to write.
                    let mut out = vec![f32::NAN; tokens * rows];
                    matmul_packed_with(&pool, &x, tokens, packed, act, &mut out, avx512).unwrap();
                    for (i, (g, w)) in out.iter().zip(&want).enumerate() {
                        assert!(
                            (g - w).abs() <= 1e-4 * (1.0 + w.abs()),
                            "{tokens}x{rows}x{cols} {act:?} avx512={avx512} [{i}]: {g} vs {w}"
                        );
                    }
                }
            }
        }
        let packed = PackedNt::new(&[1.0; 4], 2, 2).unwrap();
        assert!(
            matmul_packed_nt(
                &pool,
                &[1.0; 3],
                1,
                &packed,
                Activation::None,
                &mut [0.0; 2]
            )
            .is_err()
        );
        assert!(PackedNt::new(&[1.0; 3], 2, 2).is_err());
        assert!(packed.with_bias(&[1.0; 3]).is_err());
    }
}
