//! Attention over an f32 cache of one row per position, paged in blocks: grouped-query
//! attention (a row holds a position's keys then its values) and DeepSeek's multi-head
//! latent attention (a row holds the compressed latent `c_kv` then the rotated `k_pe`).
//!
//! Hugging Face checkpoints are checked against transformers in f32, so their cache stays
//! in f32. MLA runs in the "absorbed" form DeepSeek and vLLM use for decoding: each query's
//! no-RoPE part is folded through `W_UK` into the latent space once, scores are dot
//! products with the cached latents, and the weighted sum of latents goes through `W_UV`
//! once per head; keys and values are never expanded per position.

use crate::pool::DisjointSlice;
use crate::{KernelError, ThreadPool};

/// One layer's cache rows of one sequence: blocks of `block` positions of `width` values,
/// `table` listing the sequence's blocks in position order.
#[derive(Debug, Clone, Copy)]
pub struct RowView<'a> {
    /// The layer's storage: `blocks x block x width`.
    pub rows: &'a [f32],
    pub block: usize,
    pub width: usize,
    pub table: &'a [u32],
}

impl<'a> RowView<'a> {
    /// The row of position `pos` (which must be within the table).
    #[inline]
    pub fn row(&self, pos: usize) -> &'a [f32] {
        let b = self.table[pos / self.block] as usize;
        let at = (b * self.block + pos % self.block) * self.width;
        &self.rows[at..at + self.width]
    }

    fn capacity(&self) -> usize {
        self.table.len() * self.block
    }
}

/// One sequence's part of a batched call: its query rows `row0..row0 + tokens` are at
/// positions `pos0..`, and query `t` sees positions `0..=pos0 + t`.
#[derive(Debug, Clone, Copy)]
pub struct RowItem<'a> {
    pub view: RowView<'a>,
    pub row0: usize,
    pub pos0: usize,
    pub tokens: usize,
}

/// The attention computed over the rows.
#[derive(Debug, Clone, Copy)]
pub enum RowAttn<'w> {
    /// Grouped-query attention: queries `n_heads x head_dim`, cache rows
    /// `[k: n_kv_heads x head_dim | v: n_kv_heads x head_dim]`, output `n_heads x head_dim`.
    Gqa {
        n_heads: usize,
        n_kv_heads: usize,
        head_dim: usize,
    },
    /// Multi-head latent attention: queries `n_heads x (nope + rope)`, cache rows
    /// `[c_kv: rank | k_pe: rope]`, output `n_heads x v_dim`. `w_kv_b` is `kv_b_proj`:
    /// per head `nope` rows of `W_UK` then `v_dim` rows of `W_UV`, each `rank` wide.
    Mla {
        n_heads: usize,
        rank: usize,
        rope: usize,
        nope: usize,
        v_dim: usize,
        w_kv_b: &'w [f32],
    },
}

impl RowAttn<'_> {
    fn n_heads(&self) -> usize {
        match *self {
            RowAttn::Gqa { n_heads, .. } | RowAttn::Mla { n_heads, .. } => n_heads,
        }
    }

    /// (query width, cache row width, output width) per token.
    fn widths(&self) -> (usize, usize, usize) {
        match *self {
            RowAttn::Gqa {
                n_heads,
                n_kv_heads,
                head_dim,
            } => (
                n_heads * head_dim,
                2 * n_kv_heads * head_dim,
                n_heads * head_dim,
            ),
            RowAttn::Mla {
                n_heads,
                rank,
                rope,
                nope,
                v_dim,
                ..
            } => (n_heads * (nope + rope), rank + rope, n_heads * v_dim),
        }
    }
}

/// f32 dot product of two equal-length slices.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Eight partial sums: vectorizes, and keeps rounding close to a pairwise sum.
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

fn axpy(out: &mut [f32], a: f32, x: &[f32]) {
    for (o, v) in out.iter_mut().zip(x) {
        *o += a * v;
    }
}

/// Softmax of `s` in place (f32, max subtracted).
fn softmax(s: &mut [f32]) {
    let max = s.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f32;
    for v in s.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    for v in s.iter_mut() {
        *v *= inv;
    }
}

/// Attention for several sequences in one pool hand-off. `q` is `rows x q_width` and `out`
/// `rows x out_width` (see [`RowAttn`]); `scale` multiplies the scores before the softmax.
pub fn attention_rows(
    pool: &ThreadPool,
    kind: RowAttn<'_>,
    items: &[RowItem<'_>],
    q: &[f32],
    scale: f32,
    out: &mut [f32],
) -> Result<(), KernelError> {
    let (qw, cw, ow) = kind.widths();
    let rows: usize = items.iter().map(|i| i.tokens).sum();
    let check = |what: &'static str, expected: usize, got: usize| {
        if expected == got {
            Ok(())
        } else {
            Err(KernelError::Shape {
                op: "attention_rows",
                what,
                expected,
                got,
            })
        }
    };
    check("query length", rows * qw, q.len())?;
    check("output length", rows * ow, out.len())?;
    for it in items {
        check("cache row width", cw, it.view.width)?;
        if it.row0 + it.tokens > rows || it.pos0 + it.tokens > it.view.capacity() {
            return Err(KernelError::Shape {
                op: "attention_rows",
                what: "positions covered by the block table",
                expected: it.pos0 + it.tokens,
                got: it.view.capacity(),
            });
        }
        if it.view.rows.len()
            < it.view
                .table
                .iter()
                .map(|b| *b as usize + 1)
                .max()
                .unwrap_or(0)
                * it.view.block
                * cw
        {
            return Err(KernelError::Shape {
                op: "attention_rows",
                what: "cache storage for the block table",
                expected: it.view.table.len() * it.view.block * cw,
                got: it.view.rows.len(),
            });
        }
    }
    if let RowAttn::Mla {
        n_heads,
        rank,
        nope,
        v_dim,
        w_kv_b,
        ..
    } = kind
    {
        check(
            "kv_b_proj length",
            n_heads * (nope + v_dim) * rank,
            w_kv_b.len(),
        )?;
    }
    let heads = kind.n_heads();
    // Task = (item, token, head); tasks are numbered by query row then head.
    let mut row_item = Vec::with_capacity(rows);
    for (k, it) in items.iter().enumerate() {
        for t in 0..it.tokens {
            row_item.push((k, it.row0 + t, it.pos0 + t));
        }
    }
    let dst = DisjointSlice::new(out);
    pool.run(rows * heads, &|task| {
        let (k, row, pos) = row_item[task / heads];
        let h = task % heads;
        let view = items[k].view;
        let qrow = &q[row * qw..(row + 1) * qw];
        let mut scores = vec![0f32; pos + 1];
        match kind {
            RowAttn::Gqa {
                n_kv_heads,
                head_dim,
                ..
            } => {
                let kvh = h / (heads / n_kv_heads);
                let kvd = n_kv_heads * head_dim;
                let qh = &qrow[h * head_dim..(h + 1) * head_dim];
                for (p, s) in scores.iter_mut().enumerate() {
                    let r = view.row(p);
                    *s = dot(qh, &r[kvh * head_dim..(kvh + 1) * head_dim]) * scale;
                }
                softmax(&mut scores);
                // SAFETY: each task writes only its own (row, head) slice of `out`.
                let o = unsafe { dst.slice_mut(row * ow + h * head_dim, head_dim) };
                o.fill(0.0);
                for (p, w) in scores.iter().enumerate() {
                    let r = view.row(p);
                    axpy(o, *w, &r[kvd + kvh * head_dim..kvd + (kvh + 1) * head_dim]);
                }
            }
            RowAttn::Mla {
                rank,
                rope,
                nope,
                v_dim,
                w_kv_b,
                ..
            } => {
                let qh = &qrow[h * (nope + rope)..(h + 1) * (nope + rope)];
                let (q_nope, q_pe) = qh.split_at(nope);
                let w = &w_kv_b[h * (nope + v_dim) * rank..(h + 1) * (nope + v_dim) * rank];
                let (w_uk, w_uv) = w.split_at(nope * rank);
                // q_lat = W_UK^T q_nope.
                let mut q_lat = vec![0f32; rank];
                for (i, qi) in q_nope.iter().enumerate() {
                    axpy(&mut q_lat, *qi, &w_uk[i * rank..(i + 1) * rank]);
                }
                for (p, s) in scores.iter_mut().enumerate() {
                    let r = view.row(p);
                    *s = (dot(&q_lat, &r[..rank]) + dot(q_pe, &r[rank..])) * scale;
                }
                softmax(&mut scores);
                let mut o_lat = vec![0f32; rank];
                for (p, w) in scores.iter().enumerate() {
                    axpy(&mut o_lat, *w, &view.row(p)[..rank]);
                }
                // SAFETY: each task writes only its own (row, head) slice of `out`.
                let o = unsafe { dst.slice_mut(row * ow + h * v_dim, v_dim) };
                for (j, oj) in o.iter_mut().enumerate() {
                    *oj = dot(&w_uv[j * rank..(j + 1) * rank], &o_lat);
                }
            }
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(seed: &mut u64) -> f32 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*seed >> 40) as f32 / (1u64 << 24) as f32) - 0.5
    }

    /// MLA in the absorbed form equals attention over keys and values expanded through
    /// `kv_b_proj`, as transformers computes it.
    #[test]
    fn absorbed_mla_matches_expanded_attention() {
        let (heads, rank, rope, nope, v_dim, block) = (3, 8, 4, 6, 5, 4);
        let mut seed = 7;
        let w_kv_b: Vec<f32> = (0..heads * (nope + v_dim) * rank)
            .map(|_| lcg(&mut seed))
            .collect();
        let positions = 10;
        let cw = rank + rope;
        // Blocks out of order, to exercise the table.
        let table = [2u32, 0, 1];
        let mut store = vec![0f32; 3 * block * cw];
        let mut rows = Vec::new();
        for p in 0..positions {
            let r: Vec<f32> = (0..cw).map(|_| lcg(&mut seed)).collect();
            let b = table[p / block] as usize;
            let at = (b * block + p % block) * cw;
            store[at..at + cw].copy_from_slice(&r);
            rows.push(r);
        }
        let view = RowView {
            rows: &store,
            block,
            width: cw,
            table: &table,
        };
        let tokens = 3;
        let pos0 = positions - tokens;
        let q: Vec<f32> = (0..tokens * heads * (nope + rope))
            .map(|_| lcg(&mut seed))
            .collect();
        let mut out = vec![0f32; tokens * heads * v_dim];
        let pool = ThreadPool::new(2);
        let kind = RowAttn::Mla {
            n_heads: heads,
            rank,
            rope,
            nope,
            v_dim,
            w_kv_b: &w_kv_b,
        };
        let item = RowItem {
            view,
            row0: 0,
            pos0,
            tokens,
        };
        attention_rows(&pool, kind, &[item], &q, 0.3, &mut out).unwrap();
        for t in 0..tokens {
            for h in 0..heads {
                let qh = &q[(t * heads + h) * (nope + rope)..(t * heads + h + 1) * (nope + rope)];
                let w = &w_kv_b[h * (nope + v_dim) * rank..];
                let expand =
                    |r: &[f32], j: usize| (0..rank).map(|c| w[j * rank + c] * r[c]).sum::<f32>();
                let mut s: Vec<f32> = rows[..=pos0 + t]
                    .iter()
                    .map(|r| {
                        let k_nope: f32 = (0..nope).map(|i| qh[i] * expand(r, i)).sum();
                        let k_pe: f32 = (0..rope).map(|i| qh[nope + i] * r[rank + i]).sum();
                        (k_nope + k_pe) * 0.3
                    })
                    .collect();
                softmax(&mut s);
                for j in 0..v_dim {
                    let want: f32 = rows[..=pos0 + t]
                        .iter()
                        .zip(&s)
                        .map(|(r, p)| p * expand(r, nope + j))
                        .sum();
                    let got = out[(t * heads + h) * v_dim + j];
                    assert!(
                        (want - got).abs() < 1e-5,
                        "token {t} head {h} dim {j}: {want} vs {got}"
                    );
                }
            }
        }
        // A table too short for the positions is an error, not a panic.
        let short = RowItem {
            view: RowView {
                table: &table[..1],
                ..view
            },
            row0: 0,
            pos0,
            tokens,
        };
        assert!(attention_rows(&pool, kind, &[short], &q, 0.3, &mut out).is_err());
    }

    #[test]
    fn gqa_rows_match_a_direct_computation() {
        let (heads, kv_heads, hd, block) = (4, 2, 4, 4);
        let mut seed = 3;
        let cw = 2 * kv_heads * hd;
        let table = [1u32, 0];
        let positions = 6;
        let mut store = vec![0f32; 2 * block * cw];
        let mut rows = Vec::new();
        for p in 0..positions {
            let r: Vec<f32> = (0..cw).map(|_| lcg(&mut seed)).collect();
            let at = (table[p / block] as usize * block + p % block) * cw;
            store[at..at + cw].copy_from_slice(&r);
            rows.push(r);
        }
        let view = RowView {
            rows: &store,
            block,
            width: cw,
            table: &table,
        };
        let q: Vec<f32> = (0..heads * hd).map(|_| lcg(&mut seed)).collect();
        let mut out = vec![0f32; heads * hd];
        let kind = RowAttn::Gqa {
            n_heads: heads,
            n_kv_heads: kv_heads,
            head_dim: hd,
        };
        let item = RowItem {
            view,
            row0: 0,
            pos0: positions - 1,
            tokens: 1,
        };
        attention_rows(&ThreadPool::new(1), kind, &[item], &q, 0.5, &mut out).unwrap();
        for h in 0..heads {
            let g = h / 2;
            let mut s: Vec<f32> = rows
                .iter()
                .map(|r| (0..hd).map(|i| q[h * hd + i] * r[g * hd + i]).sum::<f32>() * 0.5)
                .collect();
            softmax(&mut s);
            for j in 0..hd {
                let want: f32 = rows
                    .iter()
                    .zip(&s)
                    .map(|(r, p)| p * r[kv_heads * hd + g * hd + j])
                    .sum();
                assert!((want - out[h * hd + j]).abs() < 1e-6);
            }
        }
    }
}
