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

/// After the layers: copies the rows that get logits into `s.h`, normalised with `norm`.
/// Returns their count (logits cleared when there are none).
pub(crate) fn finish_rows(
    s: &mut Scratch,
    logit_rows: &[usize],
    d: usize,
    norm: &[f32],
    eps: f32,
) -> Result<usize> {
    let rows = logit_rows.len();
    if rows == 0 {
        s.logits.clear();
        return Ok(0);
    }
    let h = resize(&mut s.h, rows * d);
    for (dst, &r) in h.chunks_exact_mut(d).zip(logit_rows) {
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

/// A buffer of the dense forward pass, by its role (each backend keeps one of each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// The residual stream, `tokens x d_model`.
    X,
    /// A normalised copy of it.
    H,
    Q,
    K,
    V,
    /// Attention's output, `tokens x q_dim`.
    Attn,
    /// A projection's output added back into `X`.
    O,
    Gate,
    Up,
}

/// A layer's weight matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LayerMat {
    Q,
    K,
    V,
    O,
    Gate,
    Up,
    Down,
}

/// A layer's RMSNorm weights: before attention and the feed-forward block, and Qwen3's per
/// head on the queries and keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LayerNorm {
    Attn,
    Ffn,
    QHeads,
    KHeads,
}

/// What a batch's host bookkeeping decided, for the backends: each token's sequence and
/// position, and the rows that get logits.
#[derive(Debug)]
pub(crate) struct Layout<'a> {
    pub(crate) tokens: usize,
    pub(crate) row_seq: &'a [usize],
    pub(crate) row_pos: &'a [usize],
    pub(crate) logit_rows: &'a [usize],
}

/// The operations of the dense (Llama-family) forward pass, one implementation per device
/// (the CPU's in this file, the GPU's in `cuda.rs`). [`dense_forward`] is the forward pass,
/// written once against them.
pub(crate) trait DenseOps {
    /// `X` = the embedding rows of the batch's tokens, in batch order.
    fn embed(&mut self, seqs: &[BatchSeq<'_>], l: &Layout<'_>) -> Result<()>;
    /// `dst` = rmsnorm(`src`) * the layer's `norm` weights (row width from the weights).
    fn norm(
        &mut self,
        layer: usize,
        norm: LayerNorm,
        src: Role,
        dst: Role,
        l: &Layout<'_>,
    ) -> Result<()>;
    /// Each `(mat, out)`: `out` = `input` x `mat`ᵀ, over the batch's tokens.
    fn project(
        &mut self,
        layer: usize,
        input: Role,
        outs: &[(LayerMat, Role)],
        l: &Layout<'_>,
    ) -> Result<()>;
    /// Adds the layer's bias of `mat`, if it has one, to `buf`.
    fn bias(&mut self, layer: usize, mat: LayerMat, buf: Role, l: &Layout<'_>) -> Result<()>;
    /// Rotates `Q` and `K`, writes `K` and `V` into the cache at each token's position, and
    /// leaves attention's output in `Attn`.
    fn attend(
        &mut self,
        layer: usize,
        kv: &mut KvPool,
        seqs: &mut [BatchSeq<'_>],
        l: &Layout<'_>,
    ) -> Result<()>;
    /// `Gate` = silu(`Gate`) * `Up`.
    fn swiglu(&mut self, l: &Layout<'_>) -> Result<()>;
    /// `X` += `O`.
    fn residual(&mut self, l: &Layout<'_>) -> Result<()>;
    /// The final norm and the output head on the rows that get logits, into the host's
    /// logits (`rows x vocab`); returns the row count.
    fn head(&mut self, l: &Layout<'_>) -> Result<usize>;
}

/// Does this layer carry the given bias or norm (the architecture decides)?
pub(crate) fn has_qk_norm(w: &super::weights::Weights) -> bool {
    w.layers
        .first()
        .is_some_and(|l| l.q_norm.is_some() && l.k_norm.is_some())
}

/// The dense forward pass: embeddings, each layer's attention and feed-forward blocks,
/// the head. The same on every device.
pub(crate) fn dense_forward<B: DenseOps>(
    b: &mut B,
    n_layers: usize,
    qk_norm: bool,
    kv: &mut KvPool,
    seqs: &mut [BatchSeq<'_>],
    l: &Layout<'_>,
) -> Result<usize> {
    b.embed(seqs, l)?;
    for li in 0..n_layers {
        b.norm(li, LayerNorm::Attn, Role::X, Role::H, l)?;
        b.project(
            li,
            Role::H,
            &[
                (LayerMat::Q, Role::Q),
                (LayerMat::K, Role::K),
                (LayerMat::V, Role::V),
            ],
            l,
        )?;
        b.bias(li, LayerMat::Q, Role::Q, l)?;
        b.bias(li, LayerMat::K, Role::K, l)?;
        b.bias(li, LayerMat::V, Role::V, l)?;
        if qk_norm {
            b.norm(li, LayerNorm::QHeads, Role::Q, Role::Q, l)?;
            b.norm(li, LayerNorm::KHeads, Role::K, Role::K, l)?;
        }
        b.attend(li, kv, seqs, l)?;
        b.project(li, Role::Attn, &[(LayerMat::O, Role::O)], l)?;
        b.residual(l)?;
        b.norm(li, LayerNorm::Ffn, Role::X, Role::H, l)?;
        b.project(
            li,
            Role::H,
            &[(LayerMat::Gate, Role::Gate), (LayerMat::Up, Role::Up)],
            l,
        )?;
        b.swiglu(l)?;
        b.project(li, Role::Gate, &[(LayerMat::Down, Role::O)], l)?;
        b.residual(l)?;
    }
    for q in seqs.iter_mut() {
        q.kv.advance(q.tokens.len());
    }
    b.head(l)
}

/// The CPU's dense operations: llama.cpp's arithmetic through the `kernels` CPU path.
pub(crate) struct CpuDense<'a> {
    pub(crate) model: &'a Model,
    pub(crate) file: &'a GgufFile,
    pub(crate) weights: &'a super::weights::Weights,
    pub(crate) pool: &'a ThreadPool,
    pub(crate) isa: Isa,
    pub(crate) s: &'a mut Scratch,
}

impl CpuDense<'_> {
    fn buf(&mut self, r: Role) -> &mut Vec<f32> {
        let s = &mut *self.s;
        match r {
            Role::X => &mut s.x,
            Role::H => &mut s.h,
            Role::Q => &mut s.q,
            Role::K => &mut s.k,
            Role::V => &mut s.v,
            Role::Attn => &mut s.attn,
            Role::O => &mut s.o,
            Role::Gate => &mut s.gate,
            Role::Up => &mut s.up,
        }
    }
}

/// A layer's matrix by its name.
pub(crate) fn mat_of(lw: &LayerWeights, m: LayerMat) -> &Mat {
    match m {
        LayerMat::Q => &lw.wq,
        LayerMat::K => &lw.wk,
        LayerMat::V => &lw.wv,
        LayerMat::O => &lw.wo,
        LayerMat::Gate => &lw.w_gate,
        LayerMat::Up => &lw.w_up,
        LayerMat::Down => &lw.w_down,
    }
}

/// The width of a role's rows.
pub(crate) fn width(cfg: &super::ModelConfig, r: Role) -> usize {
    match r {
        Role::X | Role::H | Role::O => cfg.d_model,
        Role::Q | Role::Attn => cfg.q_dim(),
        Role::K | Role::V => cfg.kv_dim(),
        Role::Gate | Role::Up => cfg.ffn_dim,
    }
}

/// A layer's norm weights and the width they normalise.
pub(crate) fn norm_weights(l: &LayerWeights, norm: LayerNorm) -> Option<&[f32]> {
    match norm {
        LayerNorm::Attn => Some(&l.attn_norm),
        LayerNorm::Ffn => Some(&l.ffn_norm),
        LayerNorm::QHeads => l.q_norm.as_deref(),
        LayerNorm::KHeads => l.k_norm.as_deref(),
    }
}

/// A layer's bias of a matrix, if it has one.
pub(crate) fn bias_of(l: &LayerWeights, m: LayerMat) -> Option<&[f32]> {
    match m {
        LayerMat::Q => l.bq.as_deref(),
        LayerMat::K => l.bk.as_deref(),
        LayerMat::V => l.bv.as_deref(),
        _ => None,
    }
}

impl DenseOps for CpuDense<'_> {
    fn embed(&mut self, seqs: &[BatchSeq<'_>], l: &Layout<'_>) -> Result<()> {
        let cfg = &self.model.config;
        let d = cfg.d_model;
        let embd = self.weights.tok_embd.view(self.file)?;
        let x = resize(&mut self.s.x, l.tokens * d);
        let all_tokens = seqs.iter().flat_map(|q| q.tokens.iter());
        for (t, row) in all_tokens.zip(x.chunks_exact_mut(d)) {
            kernels::dequantize_row(embd.ty(), embd.row(*t as usize), row)?;
        }
        self.s.rope.resize_with(l.tokens, RopeCache::default);
        for (rc, pos) in self.s.rope.iter_mut().zip(l.row_pos) {
            rc.fill(&cfg.rope, *pos);
        }
        Ok(())
    }

    fn norm(
        &mut self,
        layer: usize,
        norm: LayerNorm,
        src: Role,
        dst: Role,
        l: &Layout<'_>,
    ) -> Result<()> {
        let cfg = &self.model.config;
        let n = l.tokens * width(cfg, src);
        let weights = self.weights;
        let Some(w) = norm_weights(&weights.layers[layer], norm) else {
            return Ok(());
        };
        let pool = self.pool;
        if src != dst {
            let input = std::mem::take(self.buf(src));
            let out = resize(self.buf(dst), n);
            let row = width(cfg, src);
            pool.run_rows(out, row, &|r0, rows| {
                let at = r0 * row;
                rows.copy_from_slice(&input[at..at + rows.len()]);
            });
            *self.buf(src) = input;
        }
        ops::rms_norm_rows(pool, &mut self.buf(dst)[..n], w, cfg.rms_eps)?;
        Ok(())
    }

    fn project(
        &mut self,
        layer: usize,
        input: Role,
        outs: &[(LayerMat, Role)],
        l: &Layout<'_>,
    ) -> Result<()> {
        // At most three outputs (Q, K, V): fixed arrays, so a step allocates nothing.
        let k = outs.len().min(3);
        let lw = &self.weights.layers[layer];
        let pick = |i: usize| mat_of(lw, outs.get(i).map_or(outs[0].0, |o| o.0));
        let mats = [pick(0), pick(1), pick(2)];
        let x = std::mem::take(self.buf(input));
        let cols = width(&self.model.config, input);
        let mut taken: [Vec<f32>; 3] = Default::default();
        for (slot, (_, r)) in taken.iter_mut().zip(outs) {
            *slot = std::mem::take(self.buf(*r));
        }
        let result = {
            let [a, b, c] = &mut taken;
            let mut refs = [a, b, c];
            project(
                self.pool,
                self.isa,
                self.file,
                &mut self.s.acts,
                &x[..l.tokens * cols],
                l.tokens,
                &mats[..k],
                &mut refs[..k],
            )
        };
        for (v, (_, r)) in taken.into_iter().zip(outs) {
            *self.buf(*r) = v;
        }
        *self.buf(input) = x;
        result
    }

    fn bias(&mut self, layer: usize, mat: LayerMat, buf: Role, l: &Layout<'_>) -> Result<()> {
        let weights = self.weights;
        let Some(b) = bias_of(&weights.layers[layer], mat) else {
            return Ok(());
        };
        let w = width(&self.model.config, buf);
        for row in self.buf(buf)[..l.tokens * w].chunks_exact_mut(w) {
            ops::add_assign(row, b)?;
        }
        Ok(())
    }

    fn attend(
        &mut self,
        li: usize,
        kv: &mut KvPool,
        seqs: &mut [BatchSeq<'_>],
        l: &Layout<'_>,
    ) -> Result<()> {
        let cfg = &self.model.config;
        let (hd, qd, kvd) = (cfg.head_dim, cfg.q_dim(), cfg.kv_dim());
        let n = l.tokens;
        let s = &mut *self.s;
        let (rope, style) = (&s.rope, cfg.rope.style);
        for (x, width) in [(&mut s.q[..n * qd], qd), (&mut s.k[..n * kvd], kvd)] {
            self.pool.run_rows(x, width, &|t0, rows| {
                for (rc, row) in rope[t0..].iter().zip(rows.chunks_exact_mut(width)) {
                    rc.apply(style, row, hd);
                }
            });
        }
        for t in 0..n {
            kv.write(
                seqs[l.row_seq[t]].kv,
                li,
                l.row_pos[t],
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
        attention_multi(
            self.pool,
            self.isa,
            shape,
            &items,
            &s.q[..n * qd],
            scale,
            attn,
        )?;
        Ok(())
    }

    fn swiglu(&mut self, l: &Layout<'_>) -> Result<()> {
        let ff = self.model.config.ffn_dim;
        let n = l.tokens * ff;
        let (gate, up) = (&mut self.s.gate[..n], &self.s.up[..n]);
        kernels::vmath::swiglu_rows(self.pool, self.isa, gate, up, ff);
        Ok(())
    }

    fn residual(&mut self, l: &Layout<'_>) -> Result<()> {
        let d = self.model.config.d_model;
        let n = l.tokens * d;
        ops::add_assign_rows(self.pool, &mut self.s.x[..n], &self.s.o[..n], d)?;
        Ok(())
    }

    fn head(&mut self, l: &Layout<'_>) -> Result<usize> {
        let cfg = &self.model.config;
        let d = cfg.d_model;
        let rows = finish_rows(
            self.s,
            l.logit_rows,
            d,
            &self.weights.output_norm,
            cfg.rms_eps,
        )?;
        if rows == 0 {
            return Ok(0);
        }
        let head = &self.weights.output;
        let s = &mut *self.s;
        project(
            self.pool,
            self.isa,
            self.file,
            &mut s.acts,
            &s.h[..rows * d],
            rows,
            &[head],
            &mut [&mut s.logits],
        )?;
        Ok(rows)
    }
}

impl Model {
    /// A step of an expert-parallel group in which this rank has no tokens: it still takes
    /// part in every layer's exchanges and computes the experts it holds for the others.
    pub(crate) fn idle_step_ep(
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

    /// Runs each sequence's next tokens through the model in one pass on the CPU, appending
    /// them to their blocks in `kv` (reserving blocks as needed: [`EngineError::KvCacheFull`]
    /// when the pool runs out), and leaves the requested logits in `s.logits`: one row per
    /// requested position, sequences in order. As one rank of an expert-parallel group,
    /// the routed experts of MoE layers run where `ep`'s placement puts them (dense models
    /// ignore `ep`).
    pub(crate) fn forward_batch_ep(
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
        let (row_seq, row_pos, logit_rows) = (
            std::mem::take(&mut s.row_seq),
            std::mem::take(&mut s.row_pos),
            std::mem::take(&mut s.logit_rows),
        );
        let layout = Layout {
            tokens: n,
            row_seq: &row_seq,
            row_pos: &row_pos,
            logit_rows: &logit_rows,
        };
        let mut cpu = CpuDense {
            model: self,
            file,
            weights,
            pool,
            isa,
            s,
        };
        let out = dense_forward(
            &mut cpu,
            weights.layers.len(),
            has_qk_norm(weights),
            kv,
            seqs,
            &layout,
        );
        let rows = match out {
            Ok(r) => r,
            Err(e) => {
                (s.row_seq, s.row_pos, s.logit_rows) = (row_seq, row_pos, logit_rows);
                return Err(e);
            }
        };
        if rows == 0 {
            s.logits.clear();
        }
        (s.row_seq, s.row_pos, s.logit_rows) = (row_seq, row_pos, logit_rows);
        Ok(())
    }

    /// Checks the batch, reserves its cache blocks and lays out its rows in `s`; returns
    /// the number of tokens.
    pub(crate) fn prepare(
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
}
