//! The forward pass of a Llama-family decoder over a batch of tokens from one or more
//! sequences.
//!
//! One call takes the next tokens of each sequence in the batch (a prompt or a chunk of
//! one, or one token while decoding), runs every layer over all of them at once (each
//! weight matrix read once per call, multiplied with all tokens' activations; attention per
//! sequence over its own cache) and leaves logits for the positions asked for. Every
//! token's result depends only on its own sequence: the products compute each row alone,
//! and attention follows the order its sequence asks for, so batching never changes an
//! answer. Scratch buffers live in [`Scratch`] and are reused, so decoding allocates
//! nothing.

use kernels::ops::{self, RopeCache};
use kernels::{
    Activations, AttnItem, AttnShape, Isa, MatmulTarget, ThreadPool, attention_multi, matmul,
};

use super::Model;
use super::kv_cache::{KvPool, SeqKv};
use super::weights::{LayerWeights, Mat};
use crate::error::{EngineError, Result};
use crate::gguf::GgufFile;

/// Which positions get logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    /// Only the last token's (generation).
    Last,
    /// Every token's (scoring, tests against teacher-forced references).
    All,
    /// None (a prompt chunk that does not end the prompt).
    None,
}

/// One sequence's part of a batched forward pass.
#[derive(Debug)]
pub struct BatchSeq<'a> {
    /// The sequence's blocks; the tokens are appended to it.
    pub kv: &'a mut SeqKv,
    /// Its next tokens.
    pub tokens: &'a [u32],
    /// Attention in llama.cpp's batch accumulation order (prompt tokens) rather than its
    /// single-token order (decode).
    pub batched_order: bool,
    /// Which of its positions get logits.
    pub logits: Logits,
}

/// Reusable buffers of the forward pass.
#[derive(Debug, Default)]
pub struct Scratch {
    pub(crate) x: Vec<f32>,
    pub(crate) h: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    attn: Vec<f32>,
    o: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    /// Quantized activations, reused by every product.
    pub(crate) acts: Activations,
    /// One RoPE table per token of the batch.
    pub(crate) rope: Vec<RopeCache>,
    /// Per token of the batch: its sequence (index in the batch) and position.
    pub(crate) row_seq: Vec<usize>,
    pub(crate) row_pos: Vec<usize>,
    /// Rows whose logits are computed, in order.
    pub(crate) logit_rows: Vec<usize>,
    /// Buffers of the Hugging Face checkpoints' forward pass.
    pub(crate) hf: super::hf::HfScratch,
    /// The logits of the positions asked for, `rows x vocab`.
    pub logits: Vec<f32>,
}

/// What a forward pass needs besides the model: threads, instruction set, the cache pool
/// and the sequence's blocks in it, and scratch memory.
#[derive(Debug)]
pub struct ForwardCtx<'a> {
    pub pool: &'a ThreadPool,
    pub isa: Isa,
    pub kv: &'a mut KvPool,
    pub seq: &'a mut SeqKv,
    pub scratch: &'a mut Scratch,
}

/// After the layers: advances every sequence past its tokens, and copies the rows that
/// get logits into `s.h`, normalised with `norm`. Returns their count (logits cleared when
/// there are none).
pub(crate) fn finish_rows(
    s: &mut Scratch,
    seqs: &mut [BatchSeq<'_>],
    d: usize,
    norm: &[f32],
    eps: f32,
) -> Result<usize> {
    for q in seqs.iter_mut() {
        q.kv.advance(q.tokens.len());
    }
    let rows = s.logit_rows.len();
    if rows == 0 {
        s.logits.clear();
        return Ok(0);
    }
    let h = resize(&mut s.h, rows * d);
    for (dst, &r) in h.chunks_exact_mut(d).zip(&s.logit_rows) {
        dst.copy_from_slice(&s.x[r * d..(r + 1) * d]);
    }
    ops::rms_norm(h, norm, eps)?;
    Ok(rows)
}

pub(crate) fn resize(buf: &mut Vec<f32>, len: usize) -> &mut [f32] {
    buf.resize(len, 0.0);
    &mut buf[..len]
}

/// Runs `x` (`tokens x cols`) through each matrix of `mats` into the matching `outs`,
/// quantizing `x` once per distinct activation type.
#[allow(clippy::too_many_arguments)] // the inputs of one grouped product
fn project(
    pool: &ThreadPool,
    isa: Isa,
    file: &GgufFile,
    acts: &mut Activations,
    x: &[f32],
    tokens: usize,
    mats: &[&Mat],
    outs: &mut [&mut Vec<f32>],
) -> Result<()> {
    let cols = mats.first().map_or(0, |m| m.cols);
    for (m, out) in mats.iter().zip(outs.iter_mut()) {
        resize(out, tokens * m.rows);
    }
    let mut done = [false; kernels::MAX_TARGETS];
    for i in 0..mats.len() {
        if done[i] {
            continue;
        }
        let act_ty = mats[i].ty.vec_dot_type();
        acts.quantize(pool, mats[i].ty, x, tokens, cols)?;
        let mut group: [Option<kernels::QMatrix<'_>>; kernels::MAX_TARGETS] =
            [None; kernels::MAX_TARGETS];
        for j in i..mats.len() {
            if !done[j] && mats[j].ty.vec_dot_type() == act_ty {
                group[j] = Some(mats[j].view(file)?);
                done[j] = true;
            }
        }
        let mut targets: [Option<MatmulTarget<'_, '_>>; kernels::MAX_TARGETS] = Default::default();
        let mut n = 0;
        for (w, out) in group.iter().zip(outs.iter_mut()) {
            if let Some(w) = w {
                targets[n] = Some(MatmulTarget {
                    weight: w,
                    out: &mut out[..],
                });
                n += 1;
            }
        }
        run_targets(pool, isa, acts, &mut targets[..n])?;
    }
    Ok(())
}

fn run_targets(
    pool: &ThreadPool,
    isa: Isa,
    acts: &Activations,
    targets: &mut [Option<MatmulTarget<'_, '_>>],
) -> Result<()> {
    // Move the targets into a contiguous array for `matmul` without allocating.
    let mut it = targets.iter_mut().filter_map(Option::take);
    match (it.next(), it.next(), it.next()) {
        (Some(a), None, _) => matmul(pool, isa, acts, &mut [a])?,
        (Some(a), Some(b), None) => matmul(pool, isa, acts, &mut [a, b])?,
        (Some(a), Some(b), Some(c)) => match it.next() {
            None => matmul(pool, isa, acts, &mut [a, b, c])?,
            Some(d) => matmul(pool, isa, acts, &mut [a, b, c, d])?,
        },
        (None, _, _) => {}
    }
    Ok(())
}

impl Model {
    /// Runs `tokens` (the sequence's next tokens) through the model, appending them to
    /// `ctx.cache`, and leaves the requested logits in `ctx.scratch.logits`.
    pub fn forward(&self, ctx: &mut ForwardCtx<'_>, tokens: &[u32], logits: Logits) -> Result<()> {
        let mut seq = [BatchSeq {
            kv: &mut *ctx.seq,
            tokens,
            batched_order: tokens.len() >= 2,
            logits,
        }];
        self.forward_batch(ctx.pool, ctx.isa, ctx.scratch, ctx.kv, &mut seq)
    }

    /// A step of an expert-parallel group in which this rank has no tokens: it still takes
    /// part in every layer's exchanges and computes the experts it holds for the others.
    pub fn idle_step_ep(
        &self,
        pool: &ThreadPool,
        isa: Isa,
        s: &mut Scratch,
        ep: &crate::parallel::EpCtx<'_>,
    ) -> Result<()> {
        match &self.source {
            super::Source::Hf(hf) => hf.idle_step(pool, isa, s, ep),
            super::Source::Gguf { .. } => Ok(()),
        }
    }

    /// Runs each sequence's next tokens through the model in one pass, appending them to
    /// their blocks in `kv` (reserving blocks as needed: [`EngineError::KvCacheFull`] when
    /// the pool runs out), and leaves the requested logits in `scratch.logits`: one row
    /// per requested position, sequences in order.
    pub fn forward_batch(
        &self,
        pool: &ThreadPool,
        isa: Isa,
        s: &mut Scratch,
        kv: &mut KvPool,
        seqs: &mut [BatchSeq<'_>],
    ) -> Result<()> {
        self.forward_batch_ep(pool, isa, s, kv, seqs, None)
    }

    /// [`Model::forward_batch`] as one rank of an expert-parallel group: the routed experts
    /// of MoE layers run where `ep`'s placement puts them (dense models ignore `ep`).
    pub fn forward_batch_ep(
        &self,
        pool: &ThreadPool,
        isa: Isa,
        s: &mut Scratch,
        kv: &mut KvPool,
        seqs: &mut [BatchSeq<'_>],
        ep: Option<&crate::parallel::EpCtx<'_>>,
    ) -> Result<()> {
        let n = self.prepare(s, kv, seqs)?;
        let (file, weights) = match &self.source {
            super::Source::Gguf { file, weights } => (file, weights),
            super::Source::Hf(hf) => return hf.forward(pool, isa, s, kv, seqs, n, ep),
        };
        let cfg = &self.config;
        let d = cfg.d_model;

        // Token embeddings.
        let embd = weights.tok_embd.view(file)?;
        let x = resize(&mut s.x, n * d);
        let all_tokens = seqs.iter().flat_map(|q| q.tokens.iter());
        for (t, row) in all_tokens.zip(x.chunks_exact_mut(d)) {
            kernels::dequantize_row(embd.ty(), embd.row(*t as usize), row)?;
        }
        s.rope.resize_with(n, RopeCache::default);
        for (rc, pos) in s.rope.iter_mut().zip(&s.row_pos) {
            rc.fill(&cfg.rope, *pos);
        }
        for (li, layer) in weights.layers.iter().enumerate() {
            self.attention_block(file, pool, isa, kv, seqs, s, li, layer, n)?;
            self.ffn_block(file, pool, isa, s, layer, n)?;
        }
        // Final norm and output head on the rows asked for.
        let rows = finish_rows(s, seqs, d, &weights.output_norm, cfg.rms_eps)?;
        if rows == 0 {
            return Ok(());
        }
        let head = &weights.output;
        project(
            pool,
            isa,
            file,
            &mut s.acts,
            &s.h[..rows * d],
            rows,
            &[head],
            &mut [&mut s.logits],
        )?;
        Ok(())
    }

    /// Checks the batch, reserves its cache blocks and lays out its rows in `s`; returns
    /// the number of tokens.
    fn prepare(
        &self,
        s: &mut Scratch,
        kv: &mut KvPool,
        seqs: &mut [BatchSeq<'_>],
    ) -> Result<usize> {
        let cfg = &self.config;
        let n: usize = seqs.iter().map(|q| q.tokens.len()).sum();
        if n == 0 || seqs.iter().any(|q| q.tokens.is_empty()) {
            return Err(EngineError::Internal("no tokens to run".into()));
        }
        for q in seqs.iter_mut() {
            if let Some(bad) = q.tokens.iter().find(|t| **t as usize >= cfg.vocab_size) {
                return Err(EngineError::InvalidRequest(format!(
                    "token id {bad} is outside the vocabulary (size {})",
                    cfg.vocab_size
                )));
            }
            kv.reserve(q.kv, q.kv.len() + q.tokens.len())?;
        }
        s.row_seq.clear();
        s.row_pos.clear();
        s.logit_rows.clear();
        for (i, q) in seqs.iter().enumerate() {
            let (row0, pos0, len) = (s.row_seq.len(), q.kv.len(), q.tokens.len());
            s.row_seq.extend(std::iter::repeat_n(i, len));
            s.row_pos.extend(pos0..pos0 + len);
            match q.logits {
                Logits::Last => s.logit_rows.push(row0 + len - 1),
                Logits::All => s.logit_rows.extend(row0..row0 + len),
                Logits::None => {}
            }
        }

        Ok(n)
    }

    #[allow(clippy::too_many_arguments)] // one layer's worth of context; bundling would only rename it
    fn attention_block(
        &self,
        file: &GgufFile,
        pool: &ThreadPool,
        isa: Isa,
        kv: &mut KvPool,
        seqs: &mut [BatchSeq<'_>],
        s: &mut Scratch,
        li: usize,
        l: &LayerWeights,
        n: usize,
    ) -> Result<()> {
        let cfg = &self.config;
        let (d, hd) = (cfg.d_model, cfg.head_dim);
        let (qd, kvd) = (cfg.q_dim(), cfg.kv_dim());
        let h = resize(&mut s.h, n * d);
        h.copy_from_slice(&s.x[..n * d]);
        ops::rms_norm(h, &l.attn_norm, cfg.rms_eps)?;
        project(
            pool,
            isa,
            file,
            &mut s.acts,
            &s.h[..n * d],
            n,
            &[&l.wq, &l.wk, &l.wv],
            &mut [&mut s.q, &mut s.k, &mut s.v],
        )?;
        for (bias, buf, width) in [
            (&l.bq, &mut s.q, qd),
            (&l.bk, &mut s.k, kvd),
            (&l.bv, &mut s.v, kvd),
        ] {
            if let Some(b) = bias {
                for row in buf[..n * width].chunks_exact_mut(width) {
                    ops::add_assign(row, b)?;
                }
            }
        }
        if let (Some(qn), Some(kn)) = (&l.q_norm, &l.k_norm) {
            ops::rms_norm(&mut s.q[..n * qd], qn, cfg.rms_eps)?;
            ops::rms_norm(&mut s.k[..n * kvd], kn, cfg.rms_eps)?;
        }
        for t in 0..n {
            let rope = &s.rope[t];
            rope.apply(cfg.rope.style, &mut s.q[t * qd..(t + 1) * qd], hd);
            rope.apply(cfg.rope.style, &mut s.k[t * kvd..(t + 1) * kvd], hd);
            kv.write(
                seqs[s.row_seq[t]].kv,
                li,
                s.row_pos[t],
                &s.k[t * kvd..(t + 1) * kvd],
                &s.v[t * kvd..(t + 1) * kvd],
            );
        }
        let shape = AttnShape {
            n_heads: cfg.n_heads,
            n_kv_heads: cfg.n_kv_heads,
            head_dim: hd,
        };
        let scale = 1.0 / (hd as f32).sqrt();
        let attn = resize(&mut s.attn, n * qd);
        let mut row0 = 0;
        let items: Vec<AttnItem<'_>> = seqs
            .iter()
            .map(|q| {
                let item = AttnItem {
                    kv: kv.view(q.kv, li),
                    row0,
                    pos0: q.kv.len(),
                    tokens: q.tokens.len(),
                    batched_order: q.batched_order,
                };
                row0 += q.tokens.len();
                item
            })
            .collect();
        attention_multi(pool, isa, shape, &items, &s.q[..n * qd], scale, attn)?;
        project(
            pool,
            isa,
            file,
            &mut s.acts,
            &s.attn[..n * qd],
            n,
            &[&l.wo],
            &mut [&mut s.o],
        )?;
        ops::add_assign(&mut s.x[..n * d], &s.o[..n * d])?;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)] // as above
    fn ffn_block(
        &self,
        file: &GgufFile,
        pool: &ThreadPool,
        isa: Isa,
        s: &mut Scratch,
        l: &LayerWeights,
        n: usize,
    ) -> Result<()> {
        let cfg = &self.config;
        let (d, ff) = (cfg.d_model, cfg.ffn_dim);
        let h = resize(&mut s.h, n * d);
        h.copy_from_slice(&s.x[..n * d]);
        ops::rms_norm(h, &l.ffn_norm, cfg.rms_eps)?;
        project(
            pool,
            isa,
            file,
            &mut s.acts,
            &s.h[..n * d],
            n,
            &[&l.w_gate, &l.w_up],
            &mut [&mut s.gate, &mut s.up],
        )?;
        kernels::vmath::swiglu(isa, &mut s.gate[..n * ff], &s.up[..n * ff]);
        project(
            pool,
            isa,
            file,
            &mut s.acts,
            &s.gate[..n * ff],
            n,
            &[&l.w_down],
            &mut [&mut s.o],
        )?;
        ops::add_assign(&mut s.x[..n * d], &s.o[..n * d])?;
        Ok(())
    }
}
