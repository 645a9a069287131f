//! Time of one layer's attention on SmolLM2-135M's shape (9 query heads, 3 key-value
//! heads of 64) for a step of `SEQS` sequences decoding one token each at `DEPTH` positions
//! of paged cache, and for one `DEPTH`-token prompt: the best of `ROUNDS` (the least
//! disturbed by other work on the machine) and the median, in microseconds.
//! `OASIS_KERNELS=avx2` or `portable` picks a lesser instruction set, to compare.
//!
//! `cargo run --release -p kernels --example attn_bench -- [THREADS] [SEQS] [DEPTH] [ROUNDS]`

use std::time::Instant;

use kernels::{AttnItem, AttnShape, Isa, KV_PAD, KvView, ThreadPool, attention_multi, f16};

fn main() {
    let mut args = std::env::args().skip(1);
    let mut arg = |default: usize| args.next().and_then(|a| a.parse().ok()).unwrap_or(default);
    let (threads, seqs, depth, rounds) = (arg(1), arg(16), arg(512), arg(200));
    let shape = AttnShape {
        n_heads: 9,
        n_kv_heads: 3,
        head_dim: 64,
    };
    let (pool, isa) = (ThreadPool::new(threads), Isa::active());
    // Every sequence's own blocks of 256 positions, interleaved in one storage.
    let block = 8 * KV_PAD;
    let per_seq = (depth + 1).div_ceil(block);
    let storage = seqs * per_seq * block * shape.kv_dim();
    let mut seed = 0x9e37_79b9_u32;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        (seed as f32 / u32::MAX as f32) * 2.0 - 1.0
    };
    let k: Vec<f16> = (0..storage).map(|_| f16::from_f32(rnd())).collect();
    let vt: Vec<f16> = (0..storage).map(|_| f16::from_f32(rnd())).collect();
    let tables: Vec<Vec<u32>> = (0..seqs)
        .map(|s| (0..per_seq).map(|b| (b * seqs + s) as u32).collect())
        .collect();
    let view = |s: usize| KvView {
        k: &k,
        vt: &vt,
        block,
        table: &tables[s],
    };
    let time = |items: &[AttnItem<'_>], rows: usize| {
        let q: Vec<f32> = (0..rows * shape.q_dim())
            .map(|i| (i % 7) as f32 * 0.1)
            .collect();
        let mut out = vec![0f32; q.len()];
        let mut us: Vec<f64> = (0..rounds.max(1))
            .map(|_| {
                let t = Instant::now();
                if let Err(e) = attention_multi(&pool, isa, shape, items, &q, 0.125, &mut out) {
                    eprintln!("attention: {e}");
                }
                t.elapsed().as_secs_f64() * 1e6
            })
            .collect();
        us.sort_by(f64::total_cmp);
        (us[0], us[us.len() / 2])
    };
    let decode: Vec<AttnItem<'_>> = (0..seqs)
        .map(|s| AttnItem {
            kv: view(s),
            row0: s,
            pos0: depth,
            tokens: 1,
            batched_order: false,
        })
        .collect();
    let (best, median) = time(&decode, seqs);
    println!("{isa:?}, {threads} threads");
    println!("decode {seqs} x 1 token at depth {depth}: best {best:.1} us, median {median:.1} us");
    let prompt = [AttnItem {
        kv: view(0),
        row0: 0,
        pos0: 0,
        tokens: depth,
        batched_order: true,
    }];
    let (best, median) = time(&prompt, depth);
    println!("prompt of {depth} tokens: best {best:.1} us, median {median:.1} us");
}
