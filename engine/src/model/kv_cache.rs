//! The key/value cache of one sequence: f16 keys one row per position, values transposed.
//!
//! This is llama.cpp's layout without flash attention, which keeps our attention
//! arithmetic the same as the reference's. Capacity grows in steps of [`GROW_STEP`]
//! positions; the transposed values make growth a re-layout, which happens a handful of
//! times per long request and never inside a decode step that fits.

use kernels::{KV_PAD, KvView, f16};

use crate::error::{EngineError, Result};

/// Capacity grows in multiples of this many positions.
pub const GROW_STEP: usize = 256;

/// One sequence's cache for all layers.
#[derive(Debug)]
pub struct KvCache {
    /// Per layer: `cap x kv_dim` keys.
    k: Vec<Vec<f16>>,
    /// Per layer: `kv_dim x cap` values (transposed).
    vt: Vec<Vec<f16>>,
    /// Values per position per layer (kv heads x head size).
    kv_dim: usize,
    /// Positions allocated.
    cap: usize,
    /// Positions filled: the sequence so far.
    len: usize,
    /// The most positions the cache may ever hold (the context limit).
    max_len: usize,
}

impl KvCache {
    /// An empty cache for `n_layers` layers that will hold at most `max_len` positions.
    pub fn new(n_layers: usize, kv_dim: usize, max_len: usize) -> KvCache {
        KvCache {
            k: vec![Vec::new(); n_layers],
            vt: vec![Vec::new(); n_layers],
            kv_dim,
            cap: 0,
            len: 0,
            max_len,
        }
    }

    /// Positions filled so far.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The most positions this cache accepts.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Forgets the sequence; memory is kept for the next one.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Drops positions from `len` on (e.g. to re-run a suffix); keeps the rest.
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Makes room for `extra` more positions, re-laying out when capacity must grow.
    pub fn reserve(&mut self, extra: usize) -> Result<()> {
        let needed = self.len + extra;
        if needed > self.max_len {
            return Err(EngineError::InvalidRequest(format!(
                "the sequence needs {needed} positions but the context holds {}",
                self.max_len
            )));
        }
        if needed <= self.cap {
            return Ok(());
        }
        let new_cap = needed.div_ceil(GROW_STEP) * GROW_STEP;
        let new_cap = new_cap.div_ceil(KV_PAD) * KV_PAD;
        let (old_cap, kv_dim, len) = (self.cap, self.kv_dim, self.len);
        for (k, vt) in self.k.iter_mut().zip(self.vt.iter_mut()) {
            k.resize(new_cap * kv_dim, f16::ZERO);
            let mut grown = vec![f16::ZERO; new_cap * kv_dim];
            for c in 0..kv_dim {
                grown[c * new_cap..c * new_cap + len]
                    .copy_from_slice(&vt[c * old_cap..c * old_cap + len]);
            }
            *vt = grown;
        }
        self.cap = new_cap;
        Ok(())
    }

    /// Stores the keys and values of position `pos` of `layer` (rounded to f16).
    pub fn write(&mut self, layer: usize, pos: usize, k: &[f32], v: &[f32]) {
        debug_assert!(pos < self.cap && k.len() == self.kv_dim && v.len() == self.kv_dim);
        let kv_dim = self.kv_dim;
        for (dst, x) in self.k[layer][pos * kv_dim..(pos + 1) * kv_dim]
            .iter_mut()
            .zip(k)
        {
            *dst = f16::from_f32(*x);
        }
        let cap = self.cap;
        let vt = &mut self.vt[layer];
        for (c, x) in v.iter().enumerate() {
            vt[c * cap + pos] = f16::from_f32(*x);
        }
    }

    /// Marks `n` more positions as filled (after every layer has written them).
    pub fn advance(&mut self, n: usize) {
        self.len += n;
    }

    /// The attention view of `layer`.
    pub fn view(&self, layer: usize) -> KvView<'_> {
        KvView {
            k: &self.k[layer],
            vt: &self.vt[layer],
            cap: self.cap,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_keeps_what_was_written() {
        let mut c = KvCache::new(1, 2, 1000);
        c.reserve(3).unwrap();
        for p in 0..3 {
            c.write(0, p, &[p as f32, 1.0], &[10.0 + p as f32, 20.0]);
        }
        c.advance(3);
        c.reserve(GROW_STEP).unwrap();
        let v = c.view(0);
        assert_eq!(v.cap, 2 * GROW_STEP);
        assert_eq!(v.k[2 * 2].to_f32(), 2.0);
        assert_eq!(v.vt[2].to_f32(), 12.0);
        assert_eq!(v.vt[v.cap + 1].to_f32(), 20.0);
    }

    #[test]
    fn context_limit_is_an_error() {
        let mut c = KvCache::new(1, 2, 10);
        assert!(c.reserve(10).is_ok());
        assert!(c.reserve(11).is_err());
    }
}
