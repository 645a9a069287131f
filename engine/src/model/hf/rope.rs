//! Rotary embedding frequencies of Hugging Face checkpoints, computed as transformers'
//! `ROPE_INIT_FUNCTIONS` compute them (default, linear and YaRN), in f32.

use kernels::ops::{RopeCache, RopeStyle};

use super::config::{Rope, Yarn};

/// The per-pair inverse frequencies and the factor on cos/sin.
#[derive(Debug, Clone)]
pub struct HfRope {
    pub inv_freq: Vec<f32>,
    /// YaRN's `attention_factor` (1 otherwise): multiplies cos and sin.
    pub attention_factor: f32,
    pub style: RopeStyle,
}

/// transformers' `get_mscale` (DeepSeek's `yarn_get_mscale`).
pub fn yarn_mscale(scale: f64, mscale: f64) -> f64 {
    if scale <= 1.0 {
        1.0
    } else {
        0.1 * mscale * scale.ln() + 1.0
    }
}

impl HfRope {
    pub fn new(r: &Rope) -> HfRope {
        let dim = r.dim;
        let base = r.theta as f32;
        // `base ** (arange(0, dim, 2) / dim)` in f32.
        let pos_freqs: Vec<f32> = (0..dim / 2)
            .map(|i| base.powf((2 * i) as f32 / dim as f32))
            .collect();
        let mut inv_freq: Vec<f32> = pos_freqs.iter().map(|p| 1.0 / p).collect();
        let mut attention_factor = 1.0f32;
        if r.linear != 1.0 {
            for f in &mut inv_freq {
                *f /= r.linear as f32;
            }
        }
        if let Some(y) = &r.yarn {
            let (f, a) = yarn(y, dim, r.theta, &pos_freqs);
            inv_freq = f;
            attention_factor = a;
        }
        HfRope {
            inv_freq,
            attention_factor,
            style: if r.interleave {
                RopeStyle::Normal
            } else {
                RopeStyle::Neox
            },
        }
    }

    /// The cos/sin table of position `pos`.
    pub fn fill(&self, cache: &mut RopeCache, pos: usize) {
        cache.fill_inv_freq(&self.inv_freq, self.attention_factor, pos);
    }
}

/// transformers' `_compute_yarn_parameters`.
fn yarn(y: &Yarn, dim: usize, base: f64, pos_freqs: &[f32]) -> (Vec<f32>, f32) {
    let factor = y.factor;
    let attention_factor = y.attention_factor.unwrap_or_else(|| {
        if y.mscale != 0.0 && y.mscale_all_dim != 0.0 {
            yarn_mscale(factor, y.mscale) / yarn_mscale(factor, y.mscale_all_dim)
        } else {
            yarn_mscale(factor, 1.0)
        }
    });
    let max_pos = y.original_max_position as f64;
    let correction_dim = |rot: f64| {
        (dim as f64 * (max_pos / (rot * 2.0 * std::f64::consts::PI)).ln()) / (2.0 * base.ln())
    };
    let (mut low, mut high) = (correction_dim(y.beta_fast), correction_dim(y.beta_slow));
    if y.truncate {
        low = low.floor();
        high = high.ceil();
    }
    let low = low.max(0.0) as f32;
    let high = high.min(dim as f64 - 1.0) as f32;
    let high = if low == high { high + 0.001 } else { high };
    let inv_freq = pos_freqs
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let ramp = ((i as f32 - low) / (high - low)).clamp(0.0, 1.0);
            let extrapolation_factor = 1.0 - ramp;
            let interpolation = 1.0 / (factor as f32 * p);
            let extrapolation = 1.0 / p;
            interpolation * (1.0 - extrapolation_factor) + extrapolation * extrapolation_factor
        })
        .collect();
    (inv_freq, attention_factor as f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yarn_keeps_high_frequencies_and_stretches_low_ones() {
        let r = Rope {
            theta: 10_000.0,
            dim: 8,
            interleave: true,
            linear: 1.0,
            yarn: Some(Yarn {
                factor: 4.0,
                original_max_position: 64,
                beta_fast: 32.0,
                beta_slow: 1.0,
                mscale: 1.0,
                mscale_all_dim: 1.0,
                attention_factor: None,
                truncate: true,
            }),
        };
        let y = HfRope::new(&r);
        let plain = HfRope::new(&Rope { yarn: None, ..r });
        assert_eq!(y.attention_factor, 1.0);
        assert_eq!(y.inv_freq[0], plain.inv_freq[0]);
        let last = plain.inv_freq.len() - 1;
        assert!((y.inv_freq[last] - plain.inv_freq[last] / 4.0).abs() < 1e-9);
        assert_eq!(y.style, RopeStyle::Normal);
    }
}
