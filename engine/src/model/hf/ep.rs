//! Expert parallelism inside a MoE layer: dispatch each token's hidden state once to every
//! rank holding one of its chosen experts, run the experts grouped where they live, send
//! the outputs back and combine them with the routing weights in expert order, exactly as
//! one rank alone adds them (so any number of ranks and any placement give the same bits).

use std::sync::atomic::Ordering;
use std::time::Instant;

use kernels::{Isa, ThreadPool};

use super::moe::{Choice, Groups};
use super::weights::{FfnWeights, MoeWeights};
use super::{HfModel, Phase};
use crate::error::{EngineError, Result};
use crate::model::forward::resize;
use crate::parallel::{EpCtx, Packet, Placement};

/// Per destination rank, the tokens it gets and which of their experts it runs: each token
/// at most once per destination, whatever number of its experts live there.
pub fn plan_dispatch(
    choices: &[Choice],
    placement: &Placement,
    layer: usize,
) -> Vec<Vec<(usize, Vec<usize>)>> {
    let ranks = placement.ranks;
    let mut load = vec![0usize; ranks];
    let mut plan: Vec<Vec<(usize, Vec<usize>)>> = vec![Vec::new(); ranks];
    for (t, c) in choices.iter().enumerate() {
        for &(e, _) in c {
            let r = placement.pick(layer, e, &mut load);
            match plan[r].last_mut() {
                Some((last, experts)) if *last == t => experts.push(e),
                _ => plan[r].push((t, vec![e])),
            }
        }
    }
    plan
}

impl HfModel {
    /// The routed experts of an expert-parallel group for this rank's `n` tokens (routed
    /// in `s.hf.choices`); the weighted sum lands in `s.hf.moe_out`.
    #[allow(clippy::too_many_arguments)] // one layer's context
    pub(super) fn experts_ep(
        &self,
        pool: &ThreadPool,
        isa: Isa,
        s: &mut crate::model::Scratch,
        m: &MoeWeights,
        li: usize,
        n: usize,
        ep: &EpCtx<'_>,
    ) -> Result<()> {
        let d = self.cfg.hidden;
        let t0 = Instant::now();
        let plan = plan_dispatch(&s.hf.choices, ep.placement, li);
        let mut send = Vec::with_capacity(plan.len());
        let (mut tokens, mut pairs) = (0u64, 0u64);
        for dest in &plan {
            let mut p = Packet::default();
            for (t, experts) in dest {
                p.ids.push(*t as u32);
                p.ids.push(experts.len() as u32);
                p.ids.extend(experts.iter().map(|e| *e as u32));
                p.vals.extend_from_slice(&s.h[t * d..(t + 1) * d]);
                tokens += 1;
                pairs += experts.len() as u64;
            }
            send.push(p);
        }
        ep.shared.tokens_sent.fetch_add(tokens, Ordering::Relaxed);
        ep.shared.pairs_routed.fetch_add(pairs, Ordering::Relaxed);
        self.count(Phase::Dispatch, t0);
        let back = self.exchange_layer(pool, isa, s, m, li, ep, send)?;
        // Combine: each token's expert outputs in expert order, as one rank adds them.
        let t0 = Instant::now();
        let mut contrib: Vec<(usize, usize, usize, usize)> = Vec::new();
        for (src, p) in back.iter().enumerate() {
            for (j, pair) in p.ids.chunks_exact(2).enumerate() {
                contrib.push((pair[0] as usize, pair[1] as usize, src, j));
            }
        }
        contrib.sort_unstable();
        let out = resize(&mut s.hf.moe_out, n * d);
        for (t, e, src, j) in contrib {
            let w =
                s.hf.choices
                    .get(t)
                    .and_then(|c| c.iter().find(|x| x.0 == e))
                    .map(|x| x.1);
            let (Some(w), Some(y)) = (w, back[src].vals.get(j * d..(j + 1) * d)) else {
                return Err(EngineError::Internal(format!(
                    "rank {} got an output for token {t}, expert {e} it did not send",
                    ep.rank
                )));
            };
            for (o, v) in out[t * d..(t + 1) * d].iter_mut().zip(y) {
                *o += w * v;
            }
        }
        self.count(Phase::Dispatch, t0);
        Ok(())
    }

    /// One layer's two exchanges: sends `send`, computes the experts asked of this rank
    /// for every source, and returns what came back (per source: `[token, expert]` pairs
    /// and the unweighted outputs).
    #[allow(clippy::too_many_arguments)] // one layer's context
    fn exchange_layer(
        &self,
        pool: &ThreadPool,
        isa: Isa,
        s: &mut crate::model::Scratch,
        m: &MoeWeights,
        li: usize,
        ep: &EpCtx<'_>,
        send: Vec<Packet>,
    ) -> Result<Vec<Packet>> {
        let d = self.cfg.hidden;
        let ne = self.cfg.moe.n_experts;
        let comm = &ep.shared.comm;
        let t0 = Instant::now();
        let recv = comm.all_to_all(ep.rank, send).map_err(comm_err)?;
        self.count(Phase::Dispatch, t0);
        // Unpack: rows in source order, with their experts.
        let t0 = Instant::now();
        let hf = &mut s.hf;
        let held = ep.placement.experts_on(li, ep.rank);
        let mut origin: Vec<(usize, u32)> = Vec::new();
        let mut row_choices: Vec<Choice> = Vec::new();
        hf.recv_h.clear();
        for (src, p) in recv.iter().enumerate() {
            let mut ids = p.ids.iter().copied();
            let mut at = 0;
            while let (Some(t), Some(k)) = (ids.next(), ids.next()) {
                let experts: Vec<(usize, f32)> = ids
                    .by_ref()
                    .take(k as usize)
                    .map(|e| (e as usize, 0.0))
                    .collect();
                let row = p.vals.get(at..at + d);
                let bad = experts.len() != k as usize
                    || experts.iter().any(|(e, _)| *e >= ne || !held.contains(e));
                let Some(row) = row.filter(|_| !bad) else {
                    return Err(EngineError::Internal(format!(
                        "rank {} got a malformed dispatch from rank {src} in layer {li}",
                        ep.rank
                    )));
                };
                hf.recv_h.extend_from_slice(row);
                origin.push((src, t));
                row_choices.push(experts);
                at += d;
            }
        }
        let rows = origin.len();
        ep.shared.rank_pairs[ep.rank].fetch_add(
            row_choices.iter().map(|c| c.len() as u64).sum(),
            Ordering::Relaxed,
        );
        let mut groups = Groups::default();
        groups.build(ne, &row_choices);
        let mut back = vec![Packet::default(); comm.ranks()];
        let recv_h = std::mem::take(&mut hf.recv_h);
        let mut xe = std::mem::take(&mut hf.xe);
        let mut result = Ok(());
        for (e, expert) in m.experts.iter().enumerate() {
            let rs = groups.of(e);
            if rs.is_empty() {
                continue;
            }
            let xs = resize(&mut xe, rs.len() * d);
            for (dst, (r, _)) in xs.chunks_exact_mut(d).zip(rs) {
                dst.copy_from_slice(&recv_h[r * d..(r + 1) * d]);
            }
            result = self.mlp(
                pool,
                isa,
                &mut s.acts,
                expert,
                &xe[..rs.len() * d],
                rs.len(),
                &mut s.hf,
            );
            if result.is_err() {
                break;
            }
            for (y, (r, _)) in s.hf.ye.chunks_exact(d).zip(rs) {
                let (src, t) = origin[*r];
                back[src].ids.extend([t, e as u32]);
                back[src].vals.extend_from_slice(y);
            }
        }
        s.hf.recv_h = recv_h;
        s.hf.xe = xe;
        debug_assert!(rows == 0 || !back.iter().all(Packet::is_empty) || result.is_err());
        self.count(Phase::Experts, t0);
        if let Err(e) = result {
            comm.abort(&e.to_string());
            return Err(e);
        }
        let t0 = Instant::now();
        let got = comm.all_to_all(ep.rank, back).map_err(comm_err)?;
        self.count(Phase::Dispatch, t0);
        Ok(got)
    }

    /// A step without tokens on this rank: every MoE layer's exchanges, computing what
    /// the other ranks send.
    pub(crate) fn idle_step(
        &self,
        pool: &ThreadPool,
        isa: Isa,
        s: &mut crate::model::Scratch,
        ep: &EpCtx<'_>,
    ) -> Result<()> {
        for (li, layer) in self.w.layers.iter().enumerate() {
            if let FfnWeights::Moe(m) = &layer.ffn {
                let empty = vec![Packet::default(); ep.shared.comm.ranks()];
                self.exchange_layer(pool, isa, s, m, li, ep, empty)?;
            }
        }
        Ok(())
    }
}

fn comm_err(e: crate::parallel::CommError) -> EngineError {
    EngineError::Stopped(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_goes_once_to_each_rank_holding_its_experts() {
        // 8 experts on 2 ranks (0-3, 4-7). Token 0 picks 1 and 2 (both rank 0): one entry.
        let p = Placement::round_robin(1, 8, 2, 0);
        let choices: Vec<Choice> = vec![
            vec![(1, 0.5), (2, 0.5)],
            vec![(1, 0.5), (6, 0.5)],
            vec![(5, 0.5), (7, 0.5)],
        ];
        let plan = plan_dispatch(&choices, &p, 0);
        assert_eq!(plan[0], vec![(0, vec![1, 2]), (1, vec![1])]);
        assert_eq!(plan[1], vec![(1, vec![6]), (2, vec![5, 7])]);
        for dest in &plan {
            let mut tokens: Vec<usize> = dest.iter().map(|x| x.0).collect();
            tokens.dedup();
            assert_eq!(tokens.len(), dest.len());
        }
    }
}
