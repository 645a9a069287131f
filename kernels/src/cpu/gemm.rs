//! Dense f32 matrix products for encoders (the embedding models): the `gemm` crate's
//! cache-blocked SIMD kernels (chosen at run time for the CPU: AVX-512, AVX2+FMA, or
//! portable), split over the thread pool by output columns. The LLM forward pass does not
//! use this: its products keep llama.cpp's exact arithmetic (`matmul`).

use crate::{KernelError, ThreadPool};

/// The output base pointer, shared by the tasks; each writes its own columns.
struct Shared(*mut f32);
// SAFETY: the tasks write disjoint columns of the output (see `matmul_f32_nt`).
unsafe impl Sync for Shared {}
// SAFETY: as above.
unsafe impl Send for Shared {}

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
    for (what, expected, got) in [
        ("input length", tokens * cols, x.len()),
        ("weight length", rows * cols, w.len()),
        ("output length", tokens * rows, out.len()),
    ] {
        if expected != got {
            return Err(KernelError::Shape {
                op: "matmul_f32_nt",
                what,
                expected,
                got,
            });
        }
    }
    if tokens == 0 || rows == 0 {
        return Ok(());
    }
    if cols == 0 {
        out.fill(0.0);
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

#[cfg(test)]
mod tests {
    use super::*;

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
            let x: Vec<f32> = (0..tokens * cols)
                .map(|i| ((i * 7 % 13) as f32 - 6.0) / 5.0)
                .collect();
            let w: Vec<f32> = (0..rows * cols)
                .map(|i| ((i * 5 % 11) as f32 - 5.0) / 7.0)
                .collect();
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
}
