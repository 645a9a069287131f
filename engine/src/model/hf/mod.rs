//! Mixture-of-experts models from Hugging Face checkpoints (safetensors + `config.json`):
//! Qwen3-MoE, Qwen2-MoE, Mixtral, DeepSeek-V2/V3 with multi-head latent attention and FP8
//! block-scaled weights.
//!
//! The forward pass computes in f32 what transformers computes in f32 (the reference the
//! tests hold it to), over the same batches, paged cache and scheduler as the GGUF models.
//! The cache holds f32 rows: keys then values per position, or MLA's compressed latent and
//! rotated key (`kv_lora_rank + qk_rope_head_dim` values, not the expanded heads).

pub mod config;
mod ep;
pub mod moe;
pub mod rope;
pub mod weights;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use kernels::attention_rows::dot;
use kernels::ops::{self, RopeCache};
use kernels::{Activations, Isa, MatmulTarget, RowAttn, RowItem, ThreadPool, attention_rows};

use config::AttnKind;
pub use config::{HfArch, HfConfig};
use moe::{Choice, Groups};
use rope::HfRope;
use weights::{AttnWeights, FfnWeights, HfWeights, Linear, LinearView, Mlp, MoeWeights};

use super::forward::{BatchSeq, finish_rows, resize};
use super::kv_cache::KvPool;
use crate::error::Result;
use crate::parallel::EpCtx;
use crate::safetensors::Checkpoint;

/// transformers' default epsilon of DeepSeek's `q_a_layernorm` / `kv_a_layernorm`, which
/// are built without the config's `rms_norm_eps`.
const MLA_NORM_EPS: f32 = 1e-6;

/// A loaded checkpoint.
#[derive(Debug)]
pub struct HfModel {
    ck: Checkpoint,
    pub cfg: HfConfig,
    w: HfWeights,
    rope: HfRope,
    attn_scale: f32,
    /// Tokens routed to each expert of each layer (`layer * n_experts + expert`) since load.
    expert_tokens: Vec<AtomicU64>,
    /// Nanoseconds spent in each [`Phase`] since load.
    phase_ns: [AtomicU64; Phase::ALL.len()],
}

/// Parts of the forward pass whose time is counted ([`HfModel::phase_seconds`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Attention: projections, RoPE, cache writes, scores and output projection.
    Attention,
    /// Router logits and the choice of experts.
    Routing,
    /// The routed experts, grouped by expert, and the weighted combine.
    Experts,
    /// Shared experts and dense feed-forward layers.
    DenseFfn,
    /// Expert parallelism: packing, the two all-to-all exchanges (dispatch and combine),
    /// and waiting in them for the other ranks.
    Dispatch,
}

impl Phase {
    pub const ALL: [Phase; 5] = [
        Phase::Attention,
        Phase::Routing,
        Phase::Experts,
        Phase::DenseFfn,
        Phase::Dispatch,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Phase::Attention => "attention",
            Phase::Routing => "routing",
            Phase::Experts => "experts",
            Phase::DenseFfn => "dense_ffn",
            Phase::Dispatch => "dispatch",
        }
    }
}

/// Buffers of the HF forward pass, reused between calls.
#[derive(Debug, Default)]
pub struct HfScratch {
    /// Expert parallelism: rows received from other ranks and their outputs.
    recv_h: Vec<f32>,
    q: Vec<f32>,
    qa: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    row: Vec<f32>,
    attn: Vec<f32>,
    o: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    moe_out: Vec<f32>,
    xe: Vec<f32>,
    ye: Vec<f32>,
    router: Vec<f32>,
    choices: Vec<Choice>,
    groups: Groups,
}

impl HfModel {
    /// The checkpoint's tensors (sizes for fit estimates).
    pub fn checkpoint(&self) -> &Checkpoint {
        &self.ck
    }

    /// Opens and checks the checkpoint in `dir`.
    pub fn load(dir: &Path) -> Result<HfModel> {
        let cfg = HfConfig::load(dir)?;
        let ck = Checkpoint::open(dir)?;
        let w = HfWeights::load(&ck, &cfg)?;
        let rope = HfRope::new(&cfg.rope);
        let attn_scale = match cfg.attn {
            AttnKind::Standard { head_dim, .. } => 1.0 / (head_dim as f64).sqrt(),
            AttnKind::Mla {
                qk_nope_dim,
                qk_rope_dim,
                ..
            } => {
                let mut s = 1.0 / ((qk_nope_dim + qk_rope_dim) as f64).sqrt();
                if let Some(y) = &cfg.rope.yarn
                    && y.mscale_all_dim != 0.0
                {
                    let m = rope::yarn_mscale(y.factor, y.mscale_all_dim);
                    s *= m * m;
                }
                s
            }
        } as f32;
        let counters = cfg.n_layers * cfg.moe.n_experts;
        Ok(HfModel {
            ck,
            cfg,
            w,
            rope,
            attn_scale,
            expert_tokens: (0..counters).map(|_| AtomicU64::new(0)).collect(),
            phase_ns: Default::default(),
        })
    }

    pub(crate) fn count(&self, phase: Phase, since: Instant) {
        let ns = since.elapsed().as_nanos() as u64;
        self.phase_ns[phase as usize].fetch_add(ns, Ordering::Relaxed);
    }

    /// Seconds spent in each phase since load.
    pub fn phase_seconds(&self) -> Vec<(Phase, f64)> {
        Phase::ALL
            .iter()
            .map(|p| {
                (
                    *p,
                    self.phase_ns[*p as usize].load(Ordering::Relaxed) as f64 * 1e-9,
                )
            })
            .collect()
    }

    /// Bytes of weights.
    pub fn weight_bytes(&self) -> u64 {
        self.ck.total_bytes()
    }

    /// Tokens routed to each expert, per layer (dense layers count nothing).
    pub fn expert_tokens(&self) -> Vec<Vec<u64>> {
        let e = self.cfg.moe.n_experts.max(1);
        self.expert_tokens
            .chunks(e)
            .map(|c| c.iter().map(|a| a.load(Ordering::Relaxed)).collect())
            .collect()
    }

    /// `out = x W^T` for `tokens` rows of `x`.
    #[allow(clippy::too_many_arguments)] // one product's inputs
    fn linear(
        &self,
        pool: &ThreadPool,
        isa: Isa,
        acts: &mut Activations,
        lin: &Linear,
        x: &[f32],
        tokens: usize,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        let out = resize(out, tokens * lin.rows());
        match lin.view(&self.ck)? {
            LinearView::Dense(m) => {
                acts.quantize(pool, m.ty(), x, tokens, m.cols())?;
                kernels::matmul(pool, isa, acts, &mut [MatmulTarget { weight: &m, out }])?;
            }
            LinearView::Fp8(m) => kernels::matmul_fp8(pool, &m, x, tokens, out)?,
        }
        Ok(())
    }

    /// Runs the batch (positions and cache blocks already prepared in `s`) and leaves the
    /// requested logits in `s.logits`.
    #[allow(clippy::too_many_arguments)] // the batch's context plus the rank's
    pub(crate) fn forward(
        &self,
        pool: &ThreadPool,
        isa: Isa,
        s: &mut super::Scratch,
        kv: &mut KvPool,
        seqs: &mut [BatchSeq<'_>],
        n: usize,
        ep: Option<&EpCtx<'_>>,
    ) -> Result<()> {
        let d = self.cfg.hidden;
        let embed = self.w.embed.view(&self.ck)?;
        let LinearView::Dense(embed) = embed else {
            return Err(crate::EngineError::Internal(
                "FP8 embeddings are not supported".into(),
            ));
        };
        let x = resize(&mut s.x, n * d);
        let all_tokens = seqs.iter().flat_map(|q| q.tokens.iter());
        for (t, row) in all_tokens.zip(x.chunks_exact_mut(d)) {
            kernels::dequantize_row(embed.ty(), embed.row(*t as usize), row)?;
        }
        s.rope.resize_with(n, RopeCache::default);
        for (rc, pos) in s.rope.iter_mut().zip(&s.row_pos) {
            self.rope.fill(rc, *pos);
        }
        for (li, layer) in self.w.layers.iter().enumerate() {
            let h = resize(&mut s.h, n * d);
            h.copy_from_slice(&s.x[..n * d]);
            ops::rms_norm_rows(pool, h, &layer.attn_norm, self.cfg.rms_eps)?;
            let t0 = Instant::now();
            match &layer.attn {
                AttnWeights::Standard { .. } => {
                    self.attn_standard(pool, isa, s, kv, seqs, li, n)?
                }
                AttnWeights::Mla { .. } => self.attn_mla(pool, isa, s, kv, seqs, li, n)?,
            }
            self.count(Phase::Attention, t0);
            ops::add_assign_rows(pool, &mut s.x[..n * d], &s.hf.o[..n * d], d)?;
            let h = resize(&mut s.h, n * d);
            h.copy_from_slice(&s.x[..n * d]);
            ops::rms_norm_rows(pool, h, &layer.ffn_norm, self.cfg.rms_eps)?;
            match &layer.ffn {
                FfnWeights::Dense(m) => {
                    let hf = &mut s.hf;
                    let t0 = Instant::now();
                    self.mlp(pool, isa, &mut s.acts, m, &s.h[..n * d], n, hf)?;
                    self.count(Phase::DenseFfn, t0);
                    ops::add_assign_rows(pool, &mut s.x[..n * d], &s.hf.ye[..n * d], d)?;
                }
                FfnWeights::Moe(m) => {
                    self.moe(pool, isa, s, m, li, n, ep)?;
                    ops::add_assign_rows(pool, &mut s.x[..n * d], &s.hf.moe_out[..n * d], d)?;
                }
            }
        }
        for q in seqs.iter_mut() {
            q.kv.advance(q.tokens.len());
        }
        let logit_rows = std::mem::take(&mut s.logit_rows);
        let rows = finish_rows(s, &logit_rows, d, &self.w.norm, self.cfg.rms_eps);
        s.logit_rows = logit_rows;
        let rows = rows?;
        if rows == 0 {
            return Ok(());
        }
        self.linear(
            pool,
            isa,
            &mut s.acts,
            &self.w.lm_head,
            &s.h[..rows * d],
            rows,
            &mut s.logits,
        )
    }

    /// The cache items of the batch's sequences for `layer`.
    fn row_items<'a>(kv: &'a KvPool, seqs: &'a [BatchSeq<'_>], layer: usize) -> Vec<RowItem<'a>> {
        let mut row0 = 0;
        seqs.iter()
            .map(|q| {
                let item = RowItem {
                    view: kv.rows_view(q.kv, layer),
                    row0,
                    pos0: q.kv.len(),
                    tokens: q.tokens.len(),
                };
                row0 += q.tokens.len();
                item
            })
            .collect()
    }

    #[allow(clippy::too_many_arguments)] // one layer's context
    fn attn_standard(
        &self,
        pool: &ThreadPool,
        isa: Isa,
        s: &mut super::Scratch,
        kv: &mut KvPool,
        seqs: &mut [BatchSeq<'_>],
        li: usize,
        n: usize,
    ) -> Result<()> {
        let AttnWeights::Standard {
            q,
            k,
            v,
            o,
            bias,
            qk_norm,
        } = &self.w.layers[li].attn
        else {
            return Ok(());
        };
        let AttnKind::Standard {
            n_kv_heads,
            head_dim,
            ..
        } = self.cfg.attn
        else {
            return Ok(());
        };
        let hf = &mut s.hf;
        let h = &s.h[..n * self.cfg.hidden];
        self.linear(pool, isa, &mut s.acts, q, h, n, &mut hf.q)?;
        self.linear(pool, isa, &mut s.acts, k, h, n, &mut hf.k)?;
        self.linear(pool, isa, &mut s.acts, v, h, n, &mut hf.v)?;
        let (qd, kvd) = (self.cfg.n_heads * head_dim, n_kv_heads * head_dim);
        if let Some([bq, bk, bv]) = bias {
            for (buf, b, w) in [
                (&mut hf.q, bq, qd),
                (&mut hf.k, bk, kvd),
                (&mut hf.v, bv, kvd),
            ] {
                for row in buf[..n * w].chunks_exact_mut(w) {
                    ops::add_assign(row, b)?;
                }
            }
        }
        if let Some([qn, kn]) = qk_norm {
            ops::rms_norm_rows(pool, &mut hf.q[..n * qd], qn, self.cfg.rms_eps)?;
            ops::rms_norm_rows(pool, &mut hf.k[..n * kvd], kn, self.cfg.rms_eps)?;
        }
        let row = resize(&mut hf.row, 2 * kvd);
        for t in 0..n {
            let rc = &s.rope[t];
            rc.apply(self.rope.style, &mut hf.q[t * qd..(t + 1) * qd], head_dim);
            rc.apply(self.rope.style, &mut hf.k[t * kvd..(t + 1) * kvd], head_dim);
            row[..kvd].copy_from_slice(&hf.k[t * kvd..(t + 1) * kvd]);
            row[kvd..].copy_from_slice(&hf.v[t * kvd..(t + 1) * kvd]);
            kv.write_row(seqs[s.row_seq[t]].kv, li, s.row_pos[t], row);
        }
        let kind = RowAttn::Gqa {
            n_heads: self.cfg.n_heads,
            n_kv_heads,
            head_dim,
        };
        let items = Self::row_items(kv, seqs, li);
        let attn = resize(&mut hf.attn, n * qd);
        attention_rows(pool, kind, &items, &hf.q[..n * qd], self.attn_scale, attn)?;
        self.linear(pool, isa, &mut s.acts, o, &hf.attn[..n * qd], n, &mut hf.o)
    }

    #[allow(clippy::too_many_arguments)] // one layer's context
    fn attn_mla(
        &self,
        pool: &ThreadPool,
        isa: Isa,
        s: &mut super::Scratch,
        kv: &mut KvPool,
        seqs: &mut [BatchSeq<'_>],
        li: usize,
        n: usize,
    ) -> Result<()> {
        let AttnWeights::Mla {
            q_a,
            q_b,
            kv_a,
            kv_a_norm,
            kv_b,
            o,
        } = &self.w.layers[li].attn
        else {
            return Ok(());
        };
        let AttnKind::Mla {
            kv_lora_rank: rank,
            qk_nope_dim: nope,
            qk_rope_dim: rope,
            v_head_dim,
            ..
        } = self.cfg.attn
        else {
            return Ok(());
        };
        let heads = self.cfg.n_heads;
        let hf = &mut s.hf;
        let h = &s.h[..n * self.cfg.hidden];
        match q_a {
            Some((qa, qa_norm)) => {
                self.linear(pool, isa, &mut s.acts, qa, h, n, &mut hf.qa)?;
                let r = qa.rows();
                ops::rms_norm(&mut hf.qa[..n * r], qa_norm, MLA_NORM_EPS)?;
                self.linear(pool, isa, &mut s.acts, q_b, &hf.qa[..n * r], n, &mut hf.q)?;
            }
            None => self.linear(pool, isa, &mut s.acts, q_b, h, n, &mut hf.q)?,
        }
        let cw = rank + rope;
        self.linear(pool, isa, &mut s.acts, kv_a, h, n, &mut hf.k)?;
        let qw = heads * (nope + rope);
        for t in 0..n {
            let rc = &s.rope[t];
            let latent = &mut hf.k[t * cw..(t + 1) * cw];
            let (c, k_pe) = latent.split_at_mut(rank);
            ops::rms_norm(c, kv_a_norm, MLA_NORM_EPS)?;
            rc.apply(self.rope.style, k_pe, rope);
            for head in hf.q[t * qw..(t + 1) * qw].chunks_exact_mut(nope + rope) {
                rc.apply(self.rope.style, &mut head[nope..], rope);
            }
            kv.write_row(
                seqs[s.row_seq[t]].kv,
                li,
                s.row_pos[t],
                &hf.k[t * cw..(t + 1) * cw],
            );
        }
        let kind = RowAttn::Mla {
            n_heads: heads,
            rank,
            rope,
            nope,
            v_dim: v_head_dim,
            w_kv_b: kv_b,
        };
        let items = Self::row_items(kv, seqs, li);
        let ow = heads * v_head_dim;
        let attn = resize(&mut hf.attn, n * ow);
        attention_rows(pool, kind, &items, &hf.q[..n * qw], self.attn_scale, attn)?;
        self.linear(pool, isa, &mut s.acts, o, &hf.attn[..n * ow], n, &mut hf.o)
    }

    /// SwiGLU block over `tokens` rows of `x`; the result is left in `hf.ye`.
    #[allow(clippy::too_many_arguments)] // one block's inputs
    pub(crate) fn mlp(
        &self,
        pool: &ThreadPool,
        isa: Isa,
        acts: &mut Activations,
        m: &Mlp,
        x: &[f32],
        tokens: usize,
        hf: &mut HfScratch,
    ) -> Result<()> {
        self.linear(pool, isa, acts, &m.gate, x, tokens, &mut hf.gate)?;
        self.linear(pool, isa, acts, &m.up, x, tokens, &mut hf.up)?;
        let ff = m.gate.rows();
        let (gate, up) = (&mut hf.gate[..tokens * ff], &hf.up[..tokens * ff]);
        kernels::vmath::swiglu_rows(pool, isa, gate, up, ff);
        let gate = std::mem::take(&mut hf.gate);
        let r = self.linear(
            pool,
            isa,
            acts,
            &m.down,
            &gate[..tokens * ff],
            tokens,
            &mut hf.ye,
        );
        hf.gate = gate;
        r
    }

    /// The MoE block over the normalised rows in `s.h`; the result is left in
    /// `s.hf.moe_out`.
    #[allow(clippy::too_many_arguments)] // one layer's context
    fn moe(
        &self,
        pool: &ThreadPool,
        isa: Isa,
        s: &mut super::Scratch,
        m: &MoeWeights,
        li: usize,
        n: usize,
        ep: Option<&EpCtx<'_>>,
    ) -> Result<()> {
        let d = self.cfg.hidden;
        let mc = &self.cfg.moe;
        let ne = mc.n_experts;
        let hf = &mut s.hf;
        let h = &s.h[..n * d];
        // Routing, in f32.
        let t0 = Instant::now();
        let logits = resize(&mut hf.router, n * ne);
        for (x, row) in h.chunks_exact(d).zip(logits.chunks_exact_mut(ne)) {
            for (l, w) in row.iter_mut().zip(m.router.chunks_exact(d)) {
                *l = dot(x, w);
            }
        }
        hf.choices.clear();
        for row in hf.router[..n * ne].chunks_exact(ne) {
            hf.choices.push(moe::route(mc, row, m.bias.as_deref()));
        }
        for c in &hf.choices {
            for &(e, _) in c {
                self.expert_tokens[li * ne + e].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count(Phase::Routing, t0);
        let out = resize(&mut hf.moe_out, n * d);
        out.fill(0.0);
        let result = match ep {
            Some(ep) => self.experts_ep(pool, isa, s, m, li, n, ep),
            None => self.experts_local(pool, isa, s, m, n),
        };
        let hf = &mut s.hf;
        let h = &s.h[..n * d];
        let mut moe_out = std::mem::take(&mut hf.moe_out);
        let mut result = result;
        let t0 = Instant::now();
        if let (Ok(()), Some(shared)) = (&result, &m.shared) {
            result = self.mlp(pool, isa, &mut s.acts, shared, h, n, hf);
            if result.is_ok() {
                for (t, y) in hf.ye[..n * d].chunks_exact(d).enumerate() {
                    let g = match &m.shared_gate {
                        Some(gw) => 1.0 / (1.0 + (-dot(&h[t * d..(t + 1) * d], gw)).exp()),
                        None => 1.0,
                    };
                    for (o, v) in moe_out[t * d..(t + 1) * d].iter_mut().zip(y) {
                        *o += g * v;
                    }
                }
            }
        }
        hf.moe_out = moe_out;
        self.count(Phase::DenseFfn, t0);
        result
    }

    /// The routed experts of this rank alone: tokens grouped by expert, one product per
    /// expert, each token's outputs added with its weights in expert order.
    fn experts_local(
        &self,
        pool: &ThreadPool,
        isa: Isa,
        s: &mut super::Scratch,
        m: &MoeWeights,
        n: usize,
    ) -> Result<()> {
        let d = self.cfg.hidden;
        let ne = self.cfg.moe.n_experts;
        let hf = &mut s.hf;
        let h = &s.h[..n * d];
        hf.groups.build(ne, &hf.choices);
        let t0 = Instant::now();
        // Each expert: one product over its tokens, then a weighted scatter-add.
        let mut moe_out = std::mem::take(&mut hf.moe_out);
        let mut xe = std::mem::take(&mut hf.xe);
        let groups = std::mem::take(&mut hf.groups);
        let mut result = Ok(());
        for (e, expert) in m.experts.iter().enumerate() {
            let rows = groups.of(e);
            if rows.is_empty() {
                continue;
            }
            let xs = resize(&mut xe, rows.len() * d);
            for (dst, (t, _)) in xs.chunks_exact_mut(d).zip(rows) {
                dst.copy_from_slice(&h[t * d..(t + 1) * d]);
            }
            result = self.mlp(
                pool,
                isa,
                &mut s.acts,
                expert,
                &xe[..rows.len() * d],
                rows.len(),
                hf,
            );
            if result.is_err() {
                break;
            }
            for (y, (t, w)) in hf.ye.chunks_exact(d).zip(rows) {
                for (o, v) in moe_out[t * d..(t + 1) * d].iter_mut().zip(y) {
                    *o += w * v;
                }
            }
        }
        hf.xe = xe;
        hf.groups = groups;
        hf.moe_out = moe_out;
        self.count(Phase::Experts, t0);
        result
    }
}
