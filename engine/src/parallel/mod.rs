//! Expert parallelism: R ranks, each with its own requests and key/value cache (attention
//! data-parallel) and a share of the routed experts' physical slots, exchanging tokens at
//! every MoE layer through a [`Comm`].
//!
//! On the CPU a rank is a worker thread ([`group::RankGroup`]) and the ranks share the
//! memory-mapped weights: a rank "holds" an expert by the placement saying so, and only
//! ever computes the experts it holds. On GPUs each rank will own its copies; moving an
//! expert is then a copy at a step boundary, here a change of the map.

pub mod comm;
pub mod group;
pub mod placement;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

pub use comm::{Comm, CommError, LocalComm, Packet};
pub use group::{RankGroup, RankGroupConfig};
pub use placement::Placement;

/// Steps of expert loads kept for rebalancing.
pub const LOAD_WINDOW_STEPS: usize = 256;

/// What the ranks of one group share.
#[derive(Debug)]
pub struct EpShared {
    pub comm: Arc<dyn Comm>,
    current: RwLock<Arc<Placement>>,
    /// A placement waiting for the next step boundary.
    pending: Mutex<Option<Arc<Placement>>>,
    /// (token, expert) pairs each rank computed, since start.
    pub rank_pairs: Vec<AtomicU64>,
    /// Dispatch accounting: token copies sent (at most one per token and destination) and
    /// the (token, expert) pairs they carried.
    pub tokens_sent: AtomicU64,
    pub pairs_routed: AtomicU64,
    pub rebalances: AtomicU64,
    /// Snapshots of the cumulative per-layer, per-expert routing counts, one per step.
    window: Mutex<VecDeque<Vec<Vec<u64>>>>,
}

/// What a rebalance found: per layer, max over mean rank load under the old and the new
/// placement, on the window's loads.
#[derive(Debug, Clone, PartialEq)]
pub struct Rebalance {
    pub before: Vec<f64>,
    pub after: Vec<f64>,
    /// Routed (token, expert) pairs the loads add up to.
    pub tokens: u64,
}

/// One rank's view of the group during a step.
#[derive(Debug, Clone, Copy)]
pub struct EpCtx<'a> {
    pub rank: usize,
    pub shared: &'a EpShared,
    /// The placement of this step (the same for every rank).
    pub placement: &'a Placement,
}

impl EpShared {
    pub fn new(comm: Arc<dyn Comm>, placement: Placement) -> EpShared {
        let ranks = comm.ranks();
        EpShared {
            comm,
            current: RwLock::new(Arc::new(placement)),
            pending: Mutex::new(None),
            rank_pairs: (0..ranks).map(|_| AtomicU64::new(0)).collect(),
            tokens_sent: AtomicU64::new(0),
            pairs_routed: AtomicU64::new(0),
            rebalances: AtomicU64::new(0),
            window: Mutex::new(VecDeque::new()),
        }
    }

    /// The placement in force.
    pub fn placement(&self) -> Arc<Placement> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Installs `p` at the next step boundary.
    pub fn propose(&self, p: Placement) {
        *self.pending.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(p));
    }

    /// Makes a proposed placement current; called by one rank between two barriers, so
    /// every rank sees the same placement for the whole step. True if one was installed.
    pub(crate) fn install_pending(&self) -> bool {
        let next = self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        match next {
            Some(p) => {
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = p;
                self.rebalances.fetch_add(1, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    /// Records the cumulative routing counts after a step.
    pub(crate) fn record_loads(&self, cumulative: Vec<Vec<u64>>) {
        let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        if w.back() == Some(&cumulative) {
            return;
        }
        w.push_back(cumulative);
        while w.len() > LOAD_WINDOW_STEPS + 1 {
            w.pop_front();
        }
    }

    /// Tokens routed to each expert of each layer over the window (the last
    /// [`LOAD_WINDOW_STEPS`] steps that routed anything).
    pub fn window_loads(&self) -> Vec<Vec<u64>> {
        let w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        match (w.front(), w.back()) {
            (Some(first), Some(last)) if w.len() > 1 => last
                .iter()
                .zip(first)
                .map(|(l, f)| l.iter().zip(f).map(|(a, b)| a.saturating_sub(*b)).collect())
                .collect(),
            (_, Some(last)) => last.clone(),
            _ => Vec::new(),
        }
    }

    /// Computes a new placement with EPLB from the loads of the window and proposes it
    /// for the next step boundary. `n_group` is the model's expert group count (DeepSeek's
    /// `n_group`; 1 otherwise).
    pub fn rebalance(&self, n_group: usize) -> Result<Rebalance, String> {
        let loads = self.window_loads();
        let total: u64 = loads.iter().flatten().sum();
        if total == 0 {
            return Err("no expert load recorded yet: serve some requests first".into());
        }
        let cur = self.placement();
        let n_experts = loads.first().map_or(0, Vec::len);
        let num_replicas = cur.ranks * cur.slots_per_rank;
        let num_groups = if n_group > 0 && n_experts.is_multiple_of(n_group) {
            n_group
        } else {
            1
        };
        // Layers that routed nothing (dense ones) get an even load, so they keep a valid
        // placement.
        let weight: Vec<Vec<f64>> = loads
            .iter()
            .map(|l| {
                if l.iter().all(|x| *x == 0) {
                    vec![1.0; l.len()]
                } else {
                    l.iter().map(|x| *x as f64).collect()
                }
            })
            .collect();
        let p = crate::eplb::rebalance_experts(&weight, num_replicas, num_groups, 1, cur.ranks)
            .map_err(|e| e.to_string())?;
        let next = Placement::from_phy2log(p.phy2log, n_experts, cur.ranks)?;
        let report = Rebalance {
            before: cur.balance(&loads),
            after: next.balance(&loads),
            tokens: total,
        };
        self.propose(next);
        Ok(report)
    }

    /// Max over mean of the pairs each rank computed (1 = perfectly even).
    pub fn imbalance(&self) -> f64 {
        let loads: Vec<f64> = self
            .rank_pairs
            .iter()
            .map(|a| a.load(Ordering::Relaxed) as f64)
            .collect();
        let mean = loads.iter().sum::<f64>() / loads.len().max(1) as f64;
        if mean == 0.0 {
            return 1.0;
        }
        loads.iter().fold(0f64, |m, x| m.max(*x)) / mean
    }
}
