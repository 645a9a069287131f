//! Element-wise and row-wise operations of a transformer layer on f32 activations.
//!
//! Each follows the arithmetic of ggml's CPU operator of the same name (accumulation widths,
//! the order of multiplications), so that a model run here stays within rounding noise of
//! llama.cpp on the same file.

use crate::{KernelError, ThreadPool};

/// ggml's `rms_norm` followed by `mul` with `weight`, on each row of `x` in place.
/// The sum of squares is accumulated in f64, as ggml does.
pub fn rms_norm(x: &mut [f32], weight: &[f32], eps: f32) -> Result<(), KernelError> {
    let n = weight.len();
    if n == 0 || !x.len().is_multiple_of(n) {
        return Err(KernelError::Shape {
            op: "rms_norm",
            what: "input length",
            expected: n,
            got: x.len(),
        });
    }
    for row in x.chunks_exact_mut(n) {
        let sum: f64 = row.iter().map(|v| f64::from(v * v)).sum();
        let mean = (sum / n as f64) as f32;
        let scale = 1.0 / (mean + eps).sqrt();
        for (v, w) in row.iter_mut().zip(weight) {
            *v = (*v * scale) * w;
        }
    }
    Ok(())
}

/// [`rms_norm`] on a batch of rows, the rows spread over `pool` when there are many
/// (each row's arithmetic is the same either way).
pub fn rms_norm_rows(
    pool: &ThreadPool,
    x: &mut [f32],
    weight: &[f32],
    eps: f32,
) -> Result<(), KernelError> {
    if weight.is_empty() || !x.len().is_multiple_of(weight.len()) {
        // The shape error.
        return rms_norm(x, weight, eps);
    }
    // Whole rows, which cannot fail.
    pool.run_rows(x, weight.len(), &|_, rows| {
        let _ = rms_norm(rows, weight, eps);
    });
    Ok(())
}

/// [`add_assign`] on a batch of rows of `row_len`, spread over `pool` when there are many.
pub fn add_assign_rows(
    pool: &ThreadPool,
    x: &mut [f32],
    y: &[f32],
    row_len: usize,
) -> Result<(), KernelError> {
    if x.len() != y.len() {
        return add_assign(x, y);
    }
    pool.run_rows(x, row_len, &|r0, rows| {
        let at = r0 * row_len;
        let _ = add_assign(rows, &y[at..at + rows.len()]);
    });
    Ok(())
}

/// `x += y`, element-wise.
pub fn add_assign(x: &mut [f32], y: &[f32]) -> Result<(), KernelError> {
    if x.len() != y.len() {
        return Err(KernelError::Shape {
            op: "add",
            what: "operand length",
            expected: x.len(),
            got: y.len(),
        });
    }
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
    Ok(())
}

/// How RoPE pairs the dimensions of a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    /// Adjacent pairs `(2i, 2i+1)`: GGUF Llama files (whose Q/K were permuted on conversion).
    Normal,
    /// Split halves `(i, i + d/2)`: GPT-NeoX, Qwen2, and Hugging Face checkpoints.
    Neox,
}

/// The cos/sin table of one position, built the way ggml's `rope_cache_init` builds it
/// (the angle advanced by repeated multiplication, not `powf` per dimension).
#[derive(Debug, Clone, Default)]
pub struct RopeCache {
    /// `[cos, sin]` for each rotated pair, `n_rot / 2` pairs.
    cos_sin: Vec<[f32; 2]>,
}

/// The parameters of rotary position embedding, from the model file.
#[derive(Debug, Clone)]
pub struct RopeParams {
    /// Rotated dimensions per head (`rope.dimension_count`), even, <= head size.
    pub n_rot: usize,
    pub freq_base: f32,
    /// 1 / linear scaling factor (1 = no scaling).
    pub freq_scale: f32,
    /// Per-pair divisors of the angle (Llama 3's `rope_freqs`), when the file has them.
    pub freq_factors: Option<Vec<f32>>,
    pub style: RopeStyle,
}

impl RopeCache {
    /// Fills the table for position `pos`.
    pub fn fill(&mut self, p: &RopeParams, pos: usize) {
        let half = p.n_rot / 2;
        self.cos_sin.resize(half, [1.0, 0.0]);
        let theta_scale = p.freq_base.powf(-2.0 / p.n_rot as f32);
        let mut theta = pos as f32;
        for (i, cs) in self.cos_sin.iter_mut().enumerate() {
            let ff = p
                .freq_factors
                .as_ref()
                .and_then(|f| f.get(i))
                .copied()
                .unwrap_or(1.0);
            let angle = p.freq_scale * (theta / ff);
            *cs = [angle.cos(), angle.sin()];
            theta *= theta_scale;
        }
    }

    /// Fills the table for position `pos` from explicit inverse frequencies (Hugging Face
    /// checkpoints: the angle is `pos * inv_freq[i]` in f32, as transformers computes it),
    /// with cos and sin multiplied by `scale` (YaRN's attention factor; 1 otherwise).
    pub fn fill_inv_freq(&mut self, inv_freq: &[f32], scale: f32, pos: usize) {
        self.cos_sin.clear();
        self.cos_sin.extend(inv_freq.iter().map(|f| {
            let angle = pos as f32 * f;
            [angle.cos() * scale, angle.sin() * scale]
        }));
    }

    /// Rotates every head of `x` (`x.len() / head_dim` heads) in place.
    pub fn apply(&self, style: RopeStyle, x: &mut [f32], head_dim: usize) {
        #[cfg(target_arch = "x86_64")]
        if crate::Isa::active().has_avx2() {
            // SAFETY: `has_avx2` means the CPU has FMA too.
            unsafe { self.apply_fma(style, x, head_dim) };
            return;
        }
        self.rotate(style, x, head_dim);
    }

    /// [`RopeCache::apply`] compiled with FMA, so each `mul_add` is one instruction rather
    /// than a call (the same fused result either way).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "fma")]
    unsafe fn apply_fma(&self, style: RopeStyle, x: &mut [f32], head_dim: usize) {
        self.rotate(style, x, head_dim);
    }

    #[inline(always)]
    fn rotate(&self, style: RopeStyle, x: &mut [f32], head_dim: usize) {
        let half = self.cos_sin.len();
        for head in x.chunks_exact_mut(head_dim) {
            for (i, [c, s]) in self.cos_sin.iter().enumerate() {
                let (a, b) = match style {
                    RopeStyle::Normal => (2 * i, 2 * i + 1),
                    RopeStyle::Neox => (i, i + half),
                };
                let (x0, x1) = (head[a], head[b]);
                // llama.cpp's build fuses each line into one multiply-add (GCC contraction):
                // x0*c - round(x1*s) and x0*s + round(x1*c).
                head[a] = x0.mul_add(*c, -(x1 * s));
                head[b] = x0.mul_add(*s, x1 * c);
            }
        }
    }
}

/// Index of the largest value; NaN never wins; ties go to the lowest index.
pub fn argmax(x: &[f32]) -> Option<usize> {
    let mut best: Option<(usize, f32)> = None;
    for (i, v) in x.iter().enumerate() {
        if v.is_nan() {
            continue;
        }
        if best.is_none_or(|(_, b)| *v > b) {
            best = Some((i, *v));
        }
    }
    best.map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pooled row forms give the bits of the one-call forms on a batch large enough
    /// to be split, and report the same shape errors.
    #[test]
    fn row_forms_on_the_pool_equal_one_call() {
        let pool = ThreadPool::new(2);
        let (rows, d) = (64, 576);
        let x: Vec<f32> = (0..rows * d)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.031)
            .collect();
        let y: Vec<f32> = (0..rows * d)
            .map(|i| ((i * 13 % 29) as f32 - 14.0) * 0.07)
            .collect();
        let w: Vec<f32> = (0..d).map(|i| 0.5 + (i % 9) as f32 * 0.1).collect();
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        let (mut a, mut b) = (x.clone(), x.clone());
        rms_norm(&mut a, &w, 1e-5).unwrap();
        rms_norm_rows(&pool, &mut b, &w, 1e-5).unwrap();
        assert_eq!(bits(&a), bits(&b));
        let (mut a, mut b) = (x.clone(), x.clone());
        add_assign(&mut a, &y).unwrap();
        add_assign_rows(&pool, &mut b, &y, d).unwrap();
        assert_eq!(bits(&a), bits(&b));
        for isa in [crate::Isa::active(), crate::Isa::Portable] {
            let (mut a, mut b) = (x.clone(), x.clone());
            crate::vmath::swiglu(isa, &mut a, &y);
            crate::vmath::swiglu_rows(&pool, isa, &mut b, &y, d);
            assert_eq!(bits(&a), bits(&b));
        }
        assert!(rms_norm_rows(&pool, &mut b, &w[..5], 1e-5).is_err());
        assert!(rms_norm_rows(&pool, &mut b, &[], 1e-5).is_err());
        assert!(add_assign_rows(&pool, &mut b, &y[1..], d).is_err());
    }

    #[test]
    fn rms_norm_normalises_each_row() {
        let mut x = vec![3.0, 4.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0];
        rms_norm(&mut x, &[1.0, 1.0, 2.0, 1.0], 0.0).unwrap();
        // row 0: rms = sqrt(25/4) = 2.5
        assert!((x[0] - 1.2).abs() < 1e-6 && (x[1] - 1.6).abs() < 1e-6);
        assert!((x[6] - 2.0).abs() < 1e-6);
        assert!(rms_norm(&mut x, &[1.0; 3], 0.0).is_err());
    }

    #[test]
    fn rope_rotates_pairs_by_position_and_keeps_norm() {
        let p = RopeParams {
            n_rot: 4,
            freq_base: 10000.0,
            freq_scale: 1.0,
            freq_factors: None,
            style: RopeStyle::Normal,
        };
        let mut cache = RopeCache::default();
        cache.fill(&p, 0);
        let mut x = vec![1.0, 2.0, 3.0, 4.0];
        cache.apply(RopeStyle::Normal, &mut x, 4);
        assert_eq!(x, vec![1.0, 2.0, 3.0, 4.0]); // position 0 is the identity
        cache.fill(&p, 1);
        cache.apply(RopeStyle::Normal, &mut x, 4);
        assert!((x[0] - (1.0f32.cos() - 2.0 * 1.0f32.sin())).abs() < 1e-6);
        let norm: f32 = x.iter().map(|v| v * v).sum();
        assert!((norm - 30.0).abs() < 1e-4);
        let mut y = vec![1.0, 2.0, 3.0, 4.0];
        cache.apply(RopeStyle::Neox, &mut y, 4);
        assert!((y[0] - (1.0f32.cos() - 3.0 * 1.0f32.sin())).abs() < 1e-6);
    }

    #[test]
    fn argmax_prefers_lowest_index_and_skips_nan() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, f32::NAN]), Some(1));
        assert_eq!(argmax(&[f32::NAN, -1.0]), Some(1));
        assert_eq!(argmax(&[f32::NAN]), None);
        assert_eq!(argmax(&[]), None);
    }
}
