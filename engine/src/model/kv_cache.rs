//! The paged key/value cache: one pool of fixed-size blocks per model, shared by every
//! sequence, each sequence holding a table of its blocks.
//!
//! Within a block the layout is llama.cpp's without flash attention (f16 keys one row per
//! position, values transposed), which keeps attention's arithmetic identical to the
//! reference's: `kernels::attention` walks the table and carries its accumulators from
//! block to block, so a paged sequence gets the same bits as a contiguous one.
//!
//! Prefix caching: a block filled entirely with prompt tokens can be registered under the
//! hash chain of the tokens up to its end. A later sequence whose prompt starts with the
//! same tokens takes a reference to it instead of recomputing it. Blocks nobody references
//! stay cached (and findable) until a free block is needed, then the least recently
//! released one is evicted.

use std::collections::{BTreeMap, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};

use half::slice::HalfBitsSliceExt;
use kernels::{KV_PAD, KvView, RowView, f16};

use crate::error::{EngineError, Result};

/// Positions per block: a multiple of [`KV_PAD`] so that attention's accumulation lanes
/// line up across blocks.
pub const BLOCK_POSITIONS: usize = 64;
const _: () = assert!(BLOCK_POSITIONS.is_multiple_of(KV_PAD));

/// One layer's storage: f16 bits for GGUF models (llama.cpp's layout), or f32 rows for
/// Hugging Face checkpoints ([`KvPool::new_rows`]). Zeroed vectors come from the
/// allocator's zeroed pages, so a large pool costs memory only as blocks are written.
#[derive(Debug)]
struct LayerStore {
    /// `blocks x BLOCK x kv_dim`.
    k: Vec<u16>,
    /// `blocks x kv_dim x BLOCK`.
    vt: Vec<u16>,
    /// `blocks x BLOCK x row_width`.
    rows: Vec<f32>,
}

/// The blocks of one model's cache.
#[derive(Debug)]
pub struct KvPool {
    layers: Vec<LayerStore>,
    kv_dim: usize,
    /// Width of an f32 row per position (0: f16 keys and values instead).
    row_width: usize,
    n_blocks: usize,
    /// Sequences referencing each block.
    refs: Vec<u32>,
    /// Unreferenced blocks holding nothing worth keeping.
    free: Vec<u32>,
    /// Each block's prefix hash while it is registered.
    hash: Vec<Option<u64>>,
    by_hash: HashMap<u64, u32>,
    /// Unreferenced registered blocks by release time: evicted oldest first.
    lru: BTreeMap<u64, u32>,
    /// Each unreferenced registered block's key in `lru`.
    lru_key: Vec<u64>,
    tick: u64,
    /// Prefix-cache lookups and hits, in blocks.
    pub prefix_lookups: u64,
    pub prefix_hits: u64,
}

/// One sequence's blocks.
#[derive(Debug, Default)]
pub struct SeqKv {
    table: Vec<u32>,
    len: usize,
    max_len: usize,
}

impl SeqKv {
    /// An empty sequence that may grow to `max_len` positions.
    pub fn new(max_len: usize) -> SeqKv {
        SeqKv {
            table: Vec::new(),
            len: 0,
            max_len,
        }
    }

    /// Positions filled.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The context limit.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// The blocks held, in position order.
    pub fn table(&self) -> &[u32] {
        &self.table
    }

    /// Marks `n` more positions as filled (after every layer has written them).
    pub fn advance(&mut self, n: usize) {
        self.len += n;
    }

    /// Forgets the positions from `len` on (a rejected draft's), keeping the blocks: the
    /// next tokens overwrite them. Positions past the end get zero attention weight.
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }
}

/// Blocks needed to hold `positions`.
pub fn blocks_for(positions: usize) -> usize {
    positions.div_ceil(BLOCK_POSITIONS)
}

/// The hash of a block's tokens following the block hashed `prev`.
pub fn chain_hash(prev: u64, tokens: &[u32]) -> u64 {
    let mut h = DefaultHasher::new();
    prev.hash(&mut h);
    tokens.hash(&mut h);
    h.finish()
}

impl KvPool {
    /// A pool of `n_blocks` blocks for `n_layers` layers of `kv_dim` values per position.
    /// The storage is zeroed memory, so the OS commits it only as blocks are used.
    pub fn new(n_layers: usize, kv_dim: usize, n_blocks: usize) -> KvPool {
        Self::with_layout(n_layers, kv_dim, 0, n_blocks)
    }

    /// A pool whose positions each hold one f32 row of `width` values per layer (keys then
    /// values, or MLA's latent), read through [`KvPool::rows_view`].
    pub fn new_rows(n_layers: usize, width: usize, n_blocks: usize) -> KvPool {
        Self::with_layout(n_layers, 0, width, n_blocks)
    }

    fn with_layout(n_layers: usize, kv_dim: usize, row_width: usize, n_blocks: usize) -> KvPool {
        let per_layer = n_blocks * BLOCK_POSITIONS * kv_dim;
        KvPool {
            layers: (0..n_layers)
                .map(|_| LayerStore {
                    k: vec![0u16; per_layer],
                    vt: vec![0u16; per_layer],
                    rows: vec![0f32; n_blocks * BLOCK_POSITIONS * row_width],
                })
                .collect(),
            kv_dim,
            row_width,
            n_blocks,
            refs: vec![0; n_blocks],
            free: (0..n_blocks as u32).rev().collect(),
            hash: vec![None; n_blocks],
            by_hash: HashMap::new(),
            lru: BTreeMap::new(),
            lru_key: vec![0; n_blocks],
            tick: 0,
            prefix_lookups: 0,
            prefix_hits: 0,
        }
    }

    /// Blocks in the pool.
    pub fn n_blocks(&self) -> usize {
        self.n_blocks
    }

    /// Blocks that can be handed out now (free or evictable).
    pub fn available(&self) -> usize {
        self.free.len() + self.lru.len()
    }

    /// Blocks referenced by at least one sequence.
    pub fn used(&self) -> usize {
        self.n_blocks - self.available()
    }

    /// Unreferenced blocks kept for their prefix.
    pub fn cached(&self) -> usize {
        self.lru.len()
    }

    /// Takes a block: a free one, else the least recently released cached one.
    fn take(&mut self) -> Option<u32> {
        let b = match self.free.pop() {
            Some(b) => b,
            None => {
                let (_, b) = self.lru.pop_first()?;
                if let Some(h) = self.hash[b as usize].take() {
                    self.by_hash.remove(&h);
                }
                b
            }
        };
        self.refs[b as usize] = 1;
        // Zero the values: attention multiplies positions past a sequence's end by zero
        // probabilities, and a stale value from another sequence must not be an inf.
        let span = self.kv_dim * BLOCK_POSITIONS;
        let at = b as usize * span;
        for layer in &mut self.layers {
            layer.vt[at..at + span].fill(0);
        }
        Some(b)
    }

    /// Grows `seq`'s table to hold `positions`; fails (keeping what it took) when the
    /// pool runs out or the context limit would be passed.
    pub fn reserve(&mut self, seq: &mut SeqKv, positions: usize) -> Result<()> {
        if positions > seq.max_len {
            return Err(EngineError::InvalidRequest(format!(
                "the sequence needs {positions} positions but the context holds {}",
                seq.max_len
            )));
        }
        while seq.table.len() < blocks_for(positions) {
            let b = self.take().ok_or(EngineError::KvCacheFull {
                blocks: self.n_blocks,
            })?;
            seq.table.push(b);
        }
        Ok(())
    }

    /// Gives back every block of `seq` and empties it.
    pub fn release(&mut self, seq: &mut SeqKv) {
        for b in seq.table.drain(..) {
            let r = &mut self.refs[b as usize];
            *r = r.saturating_sub(1);
            if *r == 0 {
                if self.hash[b as usize].is_some() {
                    self.tick += 1;
                    self.lru.insert(self.tick, b);
                    self.lru_key[b as usize] = self.tick;
                } else {
                    self.free.push(b);
                }
            }
        }
        seq.len = 0;
    }

    /// Appends the cached block registered under `hash` to `seq` (which must be filled
    /// exactly to a block boundary) and returns true, or returns false when there is none.
    pub fn attach_cached(&mut self, seq: &mut SeqKv, hash: u64) -> bool {
        self.prefix_lookups += 1;
        if seq.len != seq.table.len() * BLOCK_POSITIONS || seq.len + BLOCK_POSITIONS > seq.max_len {
            return false;
        }
        let Some(&b) = self.by_hash.get(&hash) else {
            return false;
        };
        let r = &mut self.refs[b as usize];
        if *r == 0 {
            self.lru.remove(&self.lru_key[b as usize]);
        }
        *r += 1;
        seq.table.push(b);
        seq.len += BLOCK_POSITIONS;
        self.prefix_hits += 1;
        true
    }

    /// Registers block `index` of `seq` (full, prompt tokens only) under `hash`, unless
    /// another block already holds that prefix.
    pub fn register(&mut self, seq: &SeqKv, index: usize, hash: u64) {
        let Some(&b) = seq.table.get(index) else {
            return;
        };
        if seq.len < (index + 1) * BLOCK_POSITIONS || self.hash[b as usize].is_some() {
            return;
        }
        if let std::collections::hash_map::Entry::Vacant(e) = self.by_hash.entry(hash) {
            e.insert(b);
            self.hash[b as usize] = Some(hash);
        }
    }

    /// Stores the keys and values of position `pos` of `layer` (rounded to f16); the
    /// position's block must be reserved.
    pub fn write(&mut self, seq: &SeqKv, layer: usize, pos: usize, k: &[f32], v: &[f32]) {
        let kv_dim = self.kv_dim;
        debug_assert!(k.len() == kv_dim && v.len() == kv_dim);
        let Some(&b) = seq.table.get(pos / BLOCK_POSITIONS) else {
            debug_assert!(false, "write past the reserved blocks");
            return;
        };
        let (b, i) = (b as usize, pos % BLOCK_POSITIONS);
        let store = &mut self.layers[layer];
        let at = (b * BLOCK_POSITIONS + i) * kv_dim;
        for (dst, x) in store.k[at..at + kv_dim].iter_mut().zip(k) {
            *dst = f16::from_f32(*x).to_bits();
        }
        let base = b * kv_dim * BLOCK_POSITIONS + i;
        for (c, x) in v.iter().enumerate() {
            store.vt[base + c * BLOCK_POSITIONS] = f16::from_f32(*x).to_bits();
        }
    }

    /// Stores the f32 row of position `pos` of `layer` (a pool made by
    /// [`KvPool::new_rows`]); the position's block must be reserved.
    pub fn write_row(&mut self, seq: &SeqKv, layer: usize, pos: usize, row: &[f32]) {
        let w = self.row_width;
        debug_assert!(row.len() == w);
        let Some(&b) = seq.table.get(pos / BLOCK_POSITIONS) else {
            debug_assert!(false, "write past the reserved blocks");
            return;
        };
        let at = (b as usize * BLOCK_POSITIONS + pos % BLOCK_POSITIONS) * w;
        self.layers[layer].rows[at..at + w].copy_from_slice(&row[..w]);
    }

    /// The f32 rows of `seq` in `layer` (a pool made by [`KvPool::new_rows`]).
    pub fn rows_view<'a>(&'a self, seq: &'a SeqKv, layer: usize) -> RowView<'a> {
        RowView {
            rows: &self.layers[layer].rows,
            block: BLOCK_POSITIONS,
            width: self.row_width,
            table: &seq.table,
        }
    }

    /// The attention view of `seq` in `layer`.
    pub fn view<'a>(&'a self, seq: &'a SeqKv, layer: usize) -> KvView<'a> {
        let store = &self.layers[layer];
        KvView {
            k: store.k.reinterpret_cast(),
            vt: store.vt.reinterpret_cast(),
            block: BLOCK_POSITIONS,
            table: &seq.table,
        }
    }

    /// Checks the pool's bookkeeping against the sequences that exist (tests): every
    /// block is exactly one of free, cached-unreferenced or referenced; reference counts
    /// equal the tables that hold the block; only registered blocks are shared.
    pub fn check(&self, seqs: &[&SeqKv]) -> std::result::Result<(), String> {
        let mut held = vec![0u32; self.n_blocks];
        for s in seqs {
            for &b in &s.table {
                held[b as usize] += 1;
            }
            if s.table.len() < blocks_for(s.len) {
                return Err(format!(
                    "a sequence of {} positions holds {} blocks",
                    s.len,
                    s.table.len()
                ));
            }
        }
        let mut seen = vec![0u8; self.n_blocks];
        for &b in &self.free {
            seen[b as usize] += 1;
        }
        for &b in self.lru.values() {
            seen[b as usize] += 1;
        }
        for b in 0..self.n_blocks {
            let referenced = u8::from(self.refs[b] > 0);
            if seen[b] + referenced != 1 {
                return Err(format!("block {b} is in {} places", seen[b] + referenced));
            }
            if self.refs[b] != held[b] {
                return Err(format!(
                    "block {b}: {} references, {} holders",
                    self.refs[b], held[b]
                ));
            }
            if held[b] > 1 && self.hash[b].is_none() {
                return Err(format!("block {b} is shared but not a registered prefix"));
            }
            if let Some(h) = self.hash[b]
                && self.by_hash.get(&h) != Some(&(b as u32))
            {
                return Err(format!("block {b}'s hash does not map back to it"));
            }
        }
        if self.free.iter().any(|&b| self.hash[b as usize].is_some()) {
            return Err("a free block is still registered".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampling::SplitMix64;

    #[test]
    fn writes_land_where_the_view_reads_them() {
        let mut pool = KvPool::new(1, 2, 4);
        let mut s = SeqKv::new(1000);
        pool.reserve(&mut s, BLOCK_POSITIONS + 3).unwrap();
        assert_eq!(s.table().len(), 2);
        let pos = BLOCK_POSITIONS + 2;
        pool.write(&s, 0, pos, &[1.5, 2.5], &[3.5, 4.5]);
        let v = pool.view(&s, 0);
        let b = s.table()[1] as usize;
        assert_eq!(v.k[(b * BLOCK_POSITIONS + 2) * 2 + 1].to_f32(), 2.5);
        assert_eq!(v.vt[(b * 2 + 1) * BLOCK_POSITIONS + 2].to_f32(), 4.5);
        assert!(pool.reserve(&mut s, 1001).is_err());
    }

    #[test]
    fn running_out_is_an_error_and_nothing_leaks() {
        let mut pool = KvPool::new(1, 2, 2);
        let mut a = SeqKv::new(10_000);
        let mut b = SeqKv::new(10_000);
        pool.reserve(&mut a, 2 * BLOCK_POSITIONS).unwrap();
        assert!(matches!(
            pool.reserve(&mut b, 1),
            Err(EngineError::KvCacheFull { .. })
        ));
        pool.release(&mut a);
        pool.reserve(&mut b, 1).unwrap();
        pool.check(&[&a, &b]).unwrap();
    }

    /// Random admit / grow / share / finish / cancel / preempt sequences keep every
    /// invariant of [`KvPool::check`].
    #[test]
    fn random_operations_keep_the_books() {
        for seed in 0..40u64 {
            let mut rng = SplitMix64::new(seed);
            let mut pick = |n: u64| (rng.next_u64() % n.max(1)) as usize;
            let mut pool = KvPool::new(1, 2, 24);
            let mut seqs: Vec<(SeqKv, Vec<u64>)> = Vec::new();
            for _ in 0..400 {
                match pick(6) {
                    // Admit, attaching what the cache has of one of 3 shared prefixes.
                    0 | 1 => {
                        let mut s = SeqKv::new(20 * BLOCK_POSITIONS);
                        let family = pick(3) as u64;
                        let mut hashes = Vec::new();
                        let mut h = family;
                        for i in 0..pick(4) {
                            h = chain_hash(h, &[i as u32]);
                            hashes.push(h);
                        }
                        for &h in &hashes {
                            if !pool.attach_cached(&mut s, h) {
                                break;
                            }
                        }
                        let attached = s.table().len();
                        let want = (hashes.len() * BLOCK_POSITIONS).max(s.len()) + 1;
                        if pool.reserve(&mut s, want).is_ok() {
                            s.len = want;
                            for (i, &h) in hashes.iter().enumerate().skip(attached) {
                                pool.register(&s, i, h);
                            }
                            seqs.push((s, hashes));
                        } else {
                            pool.release(&mut s);
                        }
                    }
                    // Grow one by a few positions (decode).
                    2 | 3 if !seqs.is_empty() => {
                        let i = pick(seqs.len() as u64);
                        let s = &mut seqs[i].0;
                        let want = s.len() + 1 + pick(70);
                        if want <= s.max_len() && pool.reserve(s, want).is_ok() {
                            s.len = want;
                        }
                    }
                    // Finish, cancel or preempt: all give the blocks back.
                    _ if !seqs.is_empty() => {
                        let i = pick(seqs.len() as u64);
                        let (mut s, _) = seqs.swap_remove(i);
                        pool.release(&mut s);
                    }
                    _ => {}
                }
                let live: Vec<&SeqKv> = seqs.iter().map(|(s, _)| s).collect();
                if let Err(e) = pool.check(&live) {
                    panic!("seed {seed}: {e}");
                }
            }
            for (mut s, _) in seqs.drain(..) {
                pool.release(&mut s);
            }
            pool.check(&[]).unwrap();
            assert_eq!(pool.available(), pool.n_blocks());
        }
    }
}
