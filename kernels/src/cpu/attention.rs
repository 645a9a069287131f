//! Causal grouped-query attention over an f16 key/value cache.
//!
//! The layout and arithmetic are llama.cpp's without flash attention, which is what the
//! reference fixtures were produced with: keys are stored one row per position, values
//! transposed (one row per channel, positions along the row); scores are f16 dot products
//! of the key rows with the query rounded to f16, the softmax runs in f32 with an f64 sum,
//! (ggml's vector exp, see `vmath`) and the probabilities are rounded to f16 before they
//! weight the values. Dot products accumulate in llama.cpp's order, which differs between
//! one token (`ggml_vec_dot_f16`) and a batch (tinyBLAS). Rows of positions are padded to
//! a multiple of 32 with zero probabilities, which keeps each position in the same SIMD
//! lane as in ggml.

use std::cell::RefCell;

use half::f16;
use half::slice::HalfFloatSliceExt;

use crate::pool::DisjointSlice;
use crate::quant::{F16Order, Isa, MAX_QUERIES, Pieces, f16_dot, f16_dot_paged, f16_dots_x4};
use crate::{KernelError, ThreadPool, vmath};

/// Position rows are padded to a multiple of this.
pub const KV_PAD: usize = 32;

/// Head counts and size of one attention layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttnShape {
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
}

impl AttnShape {
    pub fn q_dim(&self) -> usize {
        self.n_heads * self.head_dim
    }
    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }
}

/// One layer's cache of one sequence, in blocks: the layer's storage holds blocks of
/// `block` positions each, keys as `block x kv_dim` rows and values transposed per block
/// (`kv_dim x block`), and `table` lists the sequence's blocks in position order.
#[derive(Debug, Clone, Copy)]
pub struct KvView<'a> {
    /// Key storage of the layer: `blocks x block x kv_dim`.
    pub k: &'a [f16],
    /// Value storage of the layer: `blocks x kv_dim x block`.
    pub vt: &'a [f16],
    /// Positions per block; a multiple of [`KV_PAD`].
    pub block: usize,
    /// The sequence's blocks.
    pub table: &'a [u32],
}

impl KvView<'_> {
    /// Positions the table covers.
    pub fn capacity(&self) -> usize {
        self.table.len() * self.block
    }
}

/// The bytes of an f16 slice, as the dot kernels take them.
pub fn f16_bytes(x: &[f16]) -> &[u8] {
    // SAFETY: `f16` is `repr(transparent)` over `u16`: two bytes, no padding, and `u8`
    // has alignment 1, so the same memory is a valid `[u8]` of twice the length.
    unsafe { std::slice::from_raw_parts(x.as_ptr().cast::<u8>(), std::mem::size_of_val(x)) }
}

thread_local! {
    /// Per-thread scratch (query in f16, scores, probabilities in f16), grown once.
    static SCRATCH: RefCell<Scratch> = const { RefCell::new(Scratch::new()) };
}

/// Per-thread buffers of one (query, head) task.
struct Scratch {
    /// The query rounded to f16, and the same values widened back to f32.
    q16: Vec<f16>,
    q32: Vec<f32>,
    scores: Vec<f32>,
    /// The probabilities rounded to f16, padded with zeros, and widened back to f32.
    p16: Vec<f16>,
    p32: Vec<f32>,
}

impl Scratch {
    const fn new() -> Scratch {
        Scratch {
            q16: Vec::new(),
            q32: Vec::new(),
            scores: Vec::new(),
            p16: Vec::new(),
            p32: Vec::new(),
        }
    }
}

/// Attention of `tokens` queries at positions `pos0..pos0 + tokens` (query `t` sees
/// positions `0..=pos0 + t`, all already in `kv`). `q` and `out` are `tokens x q_dim`.
/// The accumulation order is llama.cpp's for a batch when `tokens >= 2`, for one token
/// otherwise.
#[allow(clippy::too_many_arguments)] // the shape of one attention call; a struct would only rename them
pub fn attention(
    pool: &ThreadPool,
    isa: Isa,
    shape: AttnShape,
    kv: KvView<'_>,
    q: &[f32],
    pos0: usize,
    tokens: usize,
    scale: f32,
    out: &mut [f32],
) -> Result<(), KernelError> {
    let item = AttnItem {
        kv,
        row0: 0,
        pos0,
        tokens,
        batched_order: tokens >= 2,
    };
    attention_multi(pool, isa, shape, &[item], q, scale, out)
}

/// One sequence's part of a batched attention call.
#[derive(Debug, Clone, Copy)]
pub struct AttnItem<'a> {
    /// The sequence's cache for this layer.
    pub kv: KvView<'a>,
    /// Its first query row in the batch.
    pub row0: usize,
    /// The position of that row.
    pub pos0: usize,
    /// Its rows (queries at `pos0..pos0 + tokens`).
    pub tokens: usize,
    /// Accumulate in llama.cpp's batch order (prompt tokens) rather than its single-token
    /// order (decode), whatever the number of rows in this call.
    pub batched_order: bool,
}

/// Attention for several sequences in one pool hand-off: `q` and `out` are
/// `rows x q_dim`, and each item owns its rows. Each query's result depends only on its
/// own row, its cache and its item's order, never on the other items.
pub fn attention_multi(
    pool: &ThreadPool,
    isa: Isa,
    shape: AttnShape,
    items: &[AttnItem<'_>],
    q: &[f32],
    scale: f32,
    out: &mut [f32],
) -> Result<(), KernelError> {
    let AttnShape {
        n_heads,
        n_kv_heads,
        head_dim,
    } = shape;
    let shape_err = |what, expected, got| KernelError::Shape {
        op: "attention",
        what,
        expected,
        got,
    };
    if n_kv_heads == 0 || !n_heads.is_multiple_of(n_kv_heads) {
        return Err(shape_err(
            "n_heads (a multiple of n_kv_heads)",
            n_kv_heads,
            n_heads,
        ));
    }
    let rows = q.len() / shape.q_dim().max(1);
    if q.len() != rows * shape.q_dim() || out.len() != q.len() {
        return Err(shape_err(
            "query/output length",
            rows * shape.q_dim(),
            q.len().max(out.len()),
        ));
    }
    let (x4_batched, x4_vector) = (
        f16_dots_x4(isa, F16Order::Batched),
        f16_dots_x4(isa, F16Order::Vector),
    );
    let group = n_heads / n_kv_heads;
    // The four-row products (AVX2) take the queries and the probabilities as f32 (the f16
    // values widened once, which is exact, so the bits stay), and a task runs all the query
    // heads of one key-value head, so each key and value row is widened once for all of
    // them. Otherwise a task is one query head. Single tokens (decode) are grouped so only
    // when there are enough of them to keep every thread busy: one sequence's decode would
    // otherwise be split over only `n_kv_heads` tasks.
    let x4_of = |it: &AttnItem<'_>| match it.batched_order {
        true if head_dim.is_multiple_of(8) => x4_batched,
        false if head_dim.is_multiple_of(32) => x4_vector,
        _ => None,
    };
    let decode_rows: usize = items
        .iter()
        .filter(|it| !it.batched_order)
        .map(|it| it.tokens)
        .sum();
    let group_decode = decode_rows * n_kv_heads >= 4 * pool.threads();
    let units_per_token = |it: &AttnItem<'_>| {
        if x4_of(it).is_some() && (it.batched_order || group_decode) {
            n_kv_heads
        } else {
            n_heads
        }
    };
    let mut tasks = 0;
    let mut rows_end = 0;
    for it in items {
        // Items must own disjoint rows, in order: the output writes below rely on it.
        if it.row0 < rows_end {
            return Err(shape_err(
                "first row of an item (after the previous item's rows)",
                rows_end,
                it.row0,
            ));
        }
        rows_end = it.row0 + it.tokens;
        let (block, kv) = (it.kv.block, it.kv);
        let block_len = block * shape.kv_dim();
        if block == 0
            || !block.is_multiple_of(KV_PAD)
            || !kv.k.len().is_multiple_of(block_len.max(1))
            || kv.vt.len() != kv.k.len()
        {
            return Err(shape_err(
                "cache storage (whole blocks)",
                block_len,
                kv.k.len(),
            ));
        }
        let n_blocks = kv.k.len() / block_len.max(1);
        if let Some(bad) = kv.table.iter().find(|b| **b as usize >= n_blocks) {
            return Err(shape_err(
                "block index (blocks in storage)",
                n_blocks,
                *bad as usize,
            ));
        }
        if it.pos0 + it.tokens > kv.capacity() {
            return Err(shape_err(
                "positions (blocks in the table)",
                kv.capacity(),
                it.pos0 + it.tokens,
            ));
        }
        if it.row0 + it.tokens > rows {
            return Err(shape_err("query rows", rows, it.row0 + it.tokens));
        }
        tasks += it.tokens * units_per_token(it);
    }
    // llama.cpp's dot products differ between one token and a batch; follow them.
    let dots = |order: F16Order| -> Result<_, KernelError> {
        let kq = f16_dot(
            isa,
            if head_dim.is_multiple_of(8) {
                order
            } else {
                F16Order::Vector
            },
        )?;
        Ok((kq, f16_dot_paged(isa, order)))
    };
    let (kq_batch, pv_batch) = dots(F16Order::Batched)?;
    let (kq_one, pv_one) = dots(F16Order::Vector)?;
    let kv_dim = shape.kv_dim();
    let dst = DisjointSlice::new(out);
    if tasks == 0 {
        return Ok(());
    }
    pool.run(tasks, &|task| {
        // Find the item of this task: items are few (the sequences of one step).
        let (mut rest, mut item) = (task, &items[0]);
        for it in items {
            if rest < it.tokens * units_per_token(it) {
                item = it;
                break;
            }
            rest -= it.tokens * units_per_token(it);
        }
        let x4 = x4_of(item);
        let units = units_per_token(item);
        // Query heads h0..h0 + nh, all of key-value head `kvh`.
        let (t, unit) = (rest / units, rest % units);
        let nh = n_heads / units;
        let h0 = unit * nh;
        let (kq_dot, pv_dot) = if item.batched_order {
            (kq_batch, pv_batch)
        } else {
            (kq_one, pv_one)
        };
        let kv = item.kv;
        let block = kv.block;
        let row = item.row0 + t;
        let kvh = h0 / group;
        let n_kv = item.pos0 + t + 1;
        let padded = n_kv.div_ceil(KV_PAD) * KV_PAD;
        let hd = head_dim;
        SCRATCH.with(|cell| {
            let mut guard = cell.borrow_mut();
            let Scratch {
                q16,
                q32,
                scores,
                p16,
                p32,
            } = &mut *guard;
            let qh = &q[row * shape.q_dim() + h0 * hd..][..nh * hd];
            // Slice conversions run eight values per instruction (F16C); the rounding is
            // the scalar one's.
            q16.resize(nh * hd, f16::ZERO);
            q16.convert_from_f32_slice(qh);
            if x4.is_some() {
                q32.resize(nh * hd, 0.0);
                q16.convert_to_f32_slice(q32);
            }
            scores.resize(nh * n_kv, 0.0);
            // Block by block: positions j..end live in block `b`, rows in order.
            let mut j = 0;
            for &b in kv.table {
                if j >= n_kv {
                    break;
                }
                let end = (j + block).min(n_kv);
                let base = b as usize * block * kv_dim + kvh * hd;
                let krow = |i: usize| f16_bytes(&kv.k[base + i * kv_dim..][..hd]);
                let mut i = 0;
                if let Some((scores4, _)) = x4 {
                    // Whole fours of this block's keys, for every query head at once.
                    i = (end - j) / 4 * 4;
                    if i > 0 {
                        let keys = f16_bytes(&kv.k[base..]);
                        for_query_groups(nh, hd, q32, |c0, ys| {
                            let out = &mut scores[c0 * n_kv + j..];
                            scores4(hd, keys, kv_dim, i, ys, scale, out, n_kv);
                        });
                    }
                }
                for (c, sc) in scores.chunks_exact_mut(n_kv).enumerate() {
                    let qc = f16_bytes(&q16[c * hd..(c + 1) * hd]);
                    for (i, s) in sc[j..end].iter_mut().enumerate().skip(i) {
                        *s = kq_dot(hd, krow(i), qc) * scale;
                    }
                }
                j = end;
            }
            p16.clear();
            p16.resize(nh * padded, f16::ZERO);
            for (sc, pc) in scores
                .chunks_exact_mut(n_kv)
                .zip(p16.chunks_exact_mut(padded))
            {
                vmath::softmax(isa, sc);
                pc[..n_kv].convert_from_f32_slice(sc);
            }
            // SAFETY: task (row, heads h0..h0 + nh) alone writes these heads' slice of row
            // `row`'s output: items own disjoint rows (checked above) and each unit of a
            // row is one task.
            let o = unsafe { dst.slice_mut(row * shape.q_dim() + h0 * hd, nh * hd) };
            let pieces = |d: usize| Pieces {
                table: kv.table,
                stride: kv_dim * block,
                offset: (kvh * hd + d) * block,
                piece: block,
            };
            let mut d = 0;
            if let Some((_, weighted4)) = x4 {
                p32.resize(nh * padded, 0.0);
                p16.convert_to_f32_slice(p32);
                // Whole fours of the channels, for every query head at once.
                d = hd / 4 * 4;
                for_query_groups(nh, padded, p32, |c0, ys| {
                    let out = &mut o[c0 * hd..];
                    weighted4(padded, f16_bytes(kv.vt), pieces(0), block, d, ys, out, hd);
                });
            }
            for (oc, pc) in o.chunks_exact_mut(hd).zip(p16.chunks_exact(padded)) {
                for (d, v) in oc.iter_mut().enumerate().skip(d) {
                    *v = pv_dot(padded, f16_bytes(kv.vt), pieces(d), f16_bytes(pc));
                }
            }
        });
    });
    Ok(())
}

/// Runs `f(first, rows)` over the `n` rows of `len` values in `data`, at most
/// [`MAX_QUERIES`] at a time (what one four-row product takes).
fn for_query_groups(n: usize, len: usize, data: &[f32], mut f: impl FnMut(usize, &[&[f32]])) {
    let mut c0 = 0;
    while c0 < n {
        let c = MAX_QUERIES.min(n - c0);
        let ys: [&[f32]; MAX_QUERIES] =
            std::array::from_fn(|k| data.get((c0 + k) * len..(c0 + k + 1) * len).unwrap_or(&[]));
        f(c0, &ys[..c]);
        c0 += c;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Straightforward f64 attention for one query against `n` positions.
    fn reference(q: &[f32], keys: &[Vec<f32>], values: &[Vec<f32>], scale: f64) -> Vec<f64> {
        let s: Vec<f64> = keys
            .iter()
            .map(|k| {
                k.iter()
                    .zip(q)
                    .map(|(a, b)| f64::from(*a) * f64::from(*b))
                    .sum::<f64>()
                    * scale
            })
            .collect();
        let m = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = s.iter().map(|v| (v - m).exp()).collect();
        let z: f64 = e.iter().sum();
        (0..q.len())
            .map(|d| {
                e.iter()
                    .zip(values)
                    .map(|(p, v)| p / z * f64::from(v[d]))
                    .sum()
            })
            .collect()
    }

    #[test]
    fn causal_gqa_matches_float64_reference() {
        let shape = AttnShape {
            n_heads: 4,
            n_kv_heads: 2,
            head_dim: 8,
        };
        let (cap, tokens) = (64usize, 37usize);
        let val =
            |i: usize, salt: usize| (((i * 2654435761 + salt * 97) % 1000) as f32 / 500.0) - 1.0;
        let mut k = vec![f16::ZERO; cap * shape.kv_dim()];
        let mut vt = vec![f16::ZERO; cap * shape.kv_dim()];
        let mut keys = vec![vec![vec![0f32; 8]; tokens]; 2];
        let mut vals = vec![vec![vec![0f32; 8]; tokens]; 2];
        for p in 0..tokens {
            for c in 0..shape.kv_dim() {
                let (kk, vv) = (
                    f16::from_f32(val(p * 16 + c, 1)),
                    f16::from_f32(val(p * 16 + c, 2)),
                );
                k[p * shape.kv_dim() + c] = kk;
                vt[c * cap + p] = vv;
                keys[c / 8][p][c % 8] = kk.to_f32();
                vals[c / 8][p][c % 8] = vv.to_f32();
            }
        }
        let q: Vec<f32> = (0..tokens * shape.q_dim()).map(|i| val(i, 3)).collect();
        let pool = ThreadPool::new(2);
        let mut out = vec![f32::NAN; q.len()];
        // One block of `cap` positions is the contiguous layout.
        let kv = KvView {
            k: &k,
            vt: &vt,
            block: cap,
            table: &[0],
        };
        attention(
            &pool,
            Isa::active(),
            shape,
            kv,
            &q,
            0,
            tokens,
            0.35,
            &mut out,
        )
        .unwrap();
        for t in [0usize, 1, 20, 36] {
            for h in 0..4 {
                let qh = &q[t * 32 + h * 8..][..8];
                let want = reference(qh, &keys[h / 2][..=t], &vals[h / 2][..=t], 0.35);
                for d in 0..8 {
                    let got = f64::from(out[t * 32 + h * 8 + d]);
                    assert!(
                        (got - want[d]).abs() < 5e-3,
                        "t={t} h={h} d={d}: {got} vs {}",
                        want[d]
                    );
                }
            }
        }
        // A single later token (decode) sees what the batched query at that position sees,
        // up to the accumulation order, which follows llama.cpp's and differs by design.
        let mut one = vec![0f32; shape.q_dim()];
        attention(
            &pool,
            Isa::active(),
            shape,
            kv,
            &q[36 * 32..],
            36,
            1,
            0.35,
            &mut one,
        )
        .unwrap();
        for (a, b) in one.iter().zip(&out[36 * 32..]) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
    }

    #[test]
    fn bad_shapes_are_errors() {
        let pool = ThreadPool::new(1);
        let shape = AttnShape {
            n_heads: 3,
            n_kv_heads: 2,
            head_dim: 4,
        };
        let kv = KvView {
            k: &[],
            vt: &[],
            block: KV_PAD,
            table: &[],
        };
        let mut out = vec![0.0; 12];
        assert!(
            attention(
                &pool,
                Isa::active(),
                shape,
                kv,
                &[0.0; 12],
                0,
                1,
                1.0,
                &mut out
            )
            .is_err()
        );
        let shape = AttnShape {
            n_heads: 2,
            n_kv_heads: 1,
            head_dim: 4,
        };
        let k = vec![f16::ZERO; 32 * 4];
        let kv = KvView {
            k: &k,
            vt: &k,
            block: 32,
            table: &[0],
        };
        let mut out = vec![0.0; 8];
        assert!(
            attention(
                &pool,
                Isa::active(),
                shape,
                kv,
                &[0.0; 8],
                32,
                1,
                1.0,
                &mut out
            )
            .is_err()
        );
    }

    /// Every query-head count per key-value head (one to five: the four-row products take
    /// up to three queries at a time, so 3 + 1 and 3 + 2 splits too), and head sizes where
    /// the single-token order has its four-row products (multiples of 32) and where not.
    #[test]
    fn blocks_in_any_order_and_every_isa_give_the_contiguous_bits() {
        for n_heads in 1..=5 {
            for head_dim in [16, 64] {
                contiguous_and_paged_agree(AttnShape {
                    n_heads,
                    n_kv_heads: 1,
                    head_dim,
                });
            }
        }
        contiguous_and_paged_agree(AttnShape {
            n_heads: 6,
            n_kv_heads: 2,
            head_dim: 32,
        });
    }

    fn contiguous_and_paged_agree(shape: AttnShape) {
        let kvd = shape.kv_dim();
        let (block, n_blocks, tokens) = (32usize, 5usize, 150usize);
        let val =
            |i: usize, salt: usize| (((i * 2654435761 + salt * 7919) % 997) as f32 / 498.0) - 1.0;
        // Contiguous: one block of n_blocks * block positions.
        let cap = n_blocks * block;
        let mut k1 = vec![f16::ZERO; cap * kvd];
        let mut v1 = vec![f16::ZERO; cap * kvd];
        // Paged: logical block b lives in physical block table[b], in a storage of 7 blocks.
        let table = [4u32, 0, 6, 2, 5];
        let mut k2 = vec![f16::ZERO; 7 * block * kvd];
        let mut v2 = vec![f16::ZERO; 7 * block * kvd];
        for p in 0..tokens {
            let (b, i) = (table[p / block] as usize, p % block);
            for c in 0..kvd {
                let (kk, vv) = (
                    f16::from_f32(val(p * kvd + c, 1)),
                    f16::from_f32(val(p * kvd + c, 2)),
                );
                k1[p * kvd + c] = kk;
                v1[c * cap + p] = vv;
                k2[(b * block + i) * kvd + c] = kk;
                v2[(b * kvd + c) * block + i] = vv;
            }
        }
        let q: Vec<f32> = (0..tokens * shape.q_dim()).map(|i| val(i, 3)).collect();
        let pool = ThreadPool::new(2);
        let whole = KvView {
            k: &k1,
            vt: &v1,
            block: cap,
            table: &[0],
        };
        let paged = KvView {
            k: &k2,
            vt: &v2,
            block,
            table: &table,
        };
        // Each case's output per instruction set: AVX2's four-row products and the
        // portable single ones must agree bit for bit.
        let mut by_isa: Vec<Vec<Vec<u32>>> = Vec::new();
        for isa in [Isa::active(), Isa::Portable] {
            let mut outs = Vec::new();
            // Each case is one call's items, `(pos0, tokens, batched order)`: a prompt, one
            // decode token at several depths (ungrouped: too few tasks), eight decode
            // tokens in one call (grouped per key-value head), prompt and decode mixed.
            let decodes: Vec<_> = [0usize, 3, 31, 32, 40, 77, 100, 149]
                .map(|p| (p, 1, false))
                .to_vec();
            let mut cases = vec![vec![(0usize, tokens, true)], vec![(100, 3, true)]];
            cases.extend([0usize, 5, 37, 149].map(|p| vec![(p, 1, false)]));
            cases.push(decodes.clone());
            cases.push([vec![(60, 7, true)], decodes].concat());
            for case in &cases {
                let rows: Vec<f32> = case
                    .iter()
                    .flat_map(|&(p, n, _)| &q[p * shape.q_dim()..(p + n) * shape.q_dim()])
                    .copied()
                    .collect();
                let mut a = vec![0f32; rows.len()];
                let mut b = vec![0f32; rows.len()];
                for (kv, out) in [(whole, &mut a), (paged, &mut b)] {
                    let mut row0 = 0;
                    let items: Vec<AttnItem<'_>> = case
                        .iter()
                        .map(|&(pos0, tokens, batched_order)| {
                            row0 += tokens;
                            AttnItem {
                                kv,
                                row0: row0 - tokens,
                                pos0,
                                tokens,
                                batched_order,
                            }
                        })
                        .collect();
                    attention_multi(&pool, isa, shape, &items, &rows, 0.25, out).unwrap();
                }
                let same = a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits());
                assert!(
                    same,
                    "{isa:?} {shape:?} {case:?}: paged attention changed bits"
                );
                outs.push(a.iter().map(|v| v.to_bits()).collect());
            }
            by_isa.push(outs);
        }
        assert!(
            by_isa.windows(2).all(|w| w[0] == w[1]),
            "{:?} and portable attention differ, {shape:?}",
            Isa::active()
        );
    }
}
