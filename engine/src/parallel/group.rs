//! A group of ranks serving one model: one scheduler per rank (its own requests, its own
//! key/value pool, its own compute threads), all stepping in lockstep so that every MoE
//! layer's exchanges meet.
//!
//! Each step begins with an all-gather of every rank's state (has work, queue closed, the
//! wake-up epoch it saw). If any rank has work, every rank steps: the ones without tokens
//! still take part in each layer's exchanges and compute the experts they hold. At that
//! boundary a proposed placement (a rebalance) is installed between two barriers, so the
//! whole step runs on one placement. If nobody has work, all wait for a submission.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, TryRecvError};
use std::sync::{Arc, Condvar, Mutex};

use super::{EpCtx, EpShared, LocalComm, Placement};
use crate::model::Model;
use crate::scheduler::{Scheduler, SchedulerConfig, SchedulerStats, Submission};

/// How a group is laid out.
#[derive(Debug, Clone)]
pub struct RankGroupConfig {
    /// Ranks (at least 1). Only MoE checkpoints use more than one; other models run one.
    pub ranks: usize,
    /// Extra physical expert slots per MoE layer (replicas of hot experts).
    pub redundant_experts: usize,
    /// Per-group limits: `threads` and `kv_blocks` are split over the ranks,
    /// `max_running` and `max_batch_tokens` apply to each rank.
    pub scheduler: SchedulerConfig,
}

/// Wakes idle ranks when work arrives.
#[derive(Debug, Default)]
struct Wake {
    epoch: Mutex<u64>,
    cv: Condvar,
}

impl Wake {
    fn epoch(&self) -> u64 {
        *self.epoch.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn bump(&self) {
        *self.epoch.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.cv.notify_all();
    }

    /// Waits until the epoch passes `seen`.
    fn wait(&self, seen: u64) {
        let mut e = self.epoch.lock().unwrap_or_else(|p| p.into_inner());
        while *e <= seen {
            e = self.cv.wait(e).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// The ranks serving one model.
#[derive(Debug)]
pub struct RankGroup {
    senders: Vec<mpsc::Sender<Submission>>,
    wake: Arc<Wake>,
    stats: Arc<SchedulerStats>,
    ep: Option<Arc<EpShared>>,
    /// Requests each rank holds (waiting or running), for spreading new ones.
    load: Vec<Arc<AtomicUsize>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl RankGroup {
    /// Starts the ranks' threads (named `engine-{name}-{rank}`). Each rank sets up its
    /// device state on its own thread (a GPU context belongs to the thread that uses it);
    /// this returns once every rank is ready, or with the first rank's error.
    pub fn spawn(model: Arc<Model>, cfg: RankGroupConfig, name: &str) -> crate::Result<RankGroup> {
        let moe = model.hf().map(|h| (h.cfg.n_layers, h.cfg.moe.n_experts));
        let ranks = if moe.is_some() { cfg.ranks.max(1) } else { 1 };
        let stats = Arc::new(SchedulerStats::default());
        let ep = match moe {
            Some((layers, experts)) if ranks > 1 => Some(Arc::new(EpShared::new(
                Arc::new(LocalComm::new(ranks)),
                Placement::round_robin(layers, experts, ranks, cfg.redundant_experts),
            ))),
            _ => None,
        };
        let wake = Arc::new(Wake::default());
        let mut senders = Vec::with_capacity(ranks);
        let mut load = Vec::with_capacity(ranks);
        let mut threads = Vec::with_capacity(ranks);
        let (ready_tx, ready_rx) = mpsc::channel::<crate::Result<()>>();
        for rank in 0..ranks {
            let mut sc = cfg.scheduler.clone();
            sc.threads = (sc.threads / ranks).max(1);
            sc.kv = match sc.kv {
                crate::model::KvBudget::Blocks(b) => crate::model::KvBudget::Blocks(b / ranks),
                crate::model::KvBudget::Bytes(b) => crate::model::KvBudget::Bytes(b / ranks),
                crate::model::KvBudget::Sequences(n) => {
                    crate::model::KvBudget::Sequences(n.div_ceil(ranks))
                }
                f => f,
            };
            let (tx, rx) = mpsc::channel();
            let l = Arc::new(AtomicUsize::new(0));
            let (m, w, e, ll, st, ready) = (
                model.clone(),
                wake.clone(),
                ep.clone(),
                l.clone(),
                stats.clone(),
                ready_tx.clone(),
            );
            let spawned = std::thread::Builder::new()
                .name(format!("engine-{name}-{rank}"))
                .spawn(move || {
                    let scheduler = match Scheduler::with_stats(m.clone(), sc, st.clone()) {
                        Ok(s) => s,
                        Err(err) => {
                            let _ = ready.send(Err(err));
                            return;
                        }
                    };
                    let _ = ready.send(Ok(()));
                    Rank {
                        rank,
                        scheduler,
                        rx,
                        wake: w,
                        ep: e,
                        load: ll,
                        model: m,
                        stats: st,
                    }
                    .run();
                });
            match spawned {
                Ok(t) => threads.push(t),
                Err(err) => {
                    return Err(crate::EngineError::Internal(format!(
                        "cannot start an engine thread: {err}"
                    )));
                }
            }
            senders.push(tx);
            load.push(l);
        }
        drop(ready_tx);
        for _ in 0..ranks {
            let ready = ready_rx.recv().unwrap_or_else(|_| {
                Err(crate::EngineError::Internal(
                    "an engine rank stopped while starting".into(),
                ))
            });
            if let Err(err) = ready {
                // The started ranks see their queues close and leave.
                senders.clear();
                wake.bump();
                for t in threads {
                    let _ = t.join();
                }
                return Err(err);
            }
        }
        Ok(RankGroup {
            senders,
            wake,
            stats,
            ep,
            load,
            threads,
        })
    }

    pub fn ranks(&self) -> usize {
        self.senders.len()
    }

    /// Counters summed over the ranks.
    pub fn stats(&self) -> Arc<SchedulerStats> {
        self.stats.clone()
    }

    /// The expert-parallel state, when the group has more than one rank.
    pub fn ep(&self) -> Option<&Arc<EpShared>> {
        self.ep.as_ref()
    }

    /// Hands a request to the least loaded rank (the lowest on ties). Gives it back when
    /// the ranks have stopped.
    pub fn submit(&self, sub: Submission) -> Result<(), Box<Submission>> {
        if self.stats.broken.get().is_some() {
            return Err(Box::new(sub));
        }
        let rank = (0..self.load.len())
            .min_by_key(|&r| self.load[r].load(Ordering::Relaxed))
            .unwrap_or(0);
        self.load[rank].fetch_add(1, Ordering::Relaxed);
        // Counted as waiting while it sits in the rank's queue (the rank's scheduler counts
        // it once taken in), so a burst never looks smaller than it is.
        self.stats.waiting.fetch_add(1, Ordering::Relaxed);
        let sent = self.senders[rank].send(sub).map_err(|e| Box::new(e.0));
        if sent.is_err() {
            self.stats.waiting.fetch_sub(1, Ordering::Relaxed);
        }
        self.wake.bump();
        sent
    }
}

impl Drop for RankGroup {
    fn drop(&mut self) {
        // Closing the queues lets each rank finish its work and leave.
        self.senders.clear();
        self.wake.bump();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// One rank's thread.
struct Rank {
    rank: usize,
    scheduler: Scheduler,
    rx: mpsc::Receiver<Submission>,
    wake: Arc<Wake>,
    ep: Option<Arc<EpShared>>,
    load: Arc<AtomicUsize>,
    model: Arc<Model>,
    stats: Arc<SchedulerStats>,
}

const BUSY: u64 = 1;
const CLOSED: u64 = 2;

impl Rank {
    /// Takes in queued submissions; true once the queue is closed.
    fn drain(&mut self) -> bool {
        loop {
            match self.rx.try_recv() {
                Ok(sub) => {
                    self.scheduler.submit(sub);
                    self.stats.waiting.fetch_sub(1, Ordering::Relaxed);
                }
                Err(TryRecvError::Empty) => return false,
                Err(TryRecvError::Disconnected) => return true,
            }
        }
    }

    /// Fails every request this rank holds or has queued, then leaves: nothing handed to
    /// a stopped rank is dropped unanswered. (A submission that arrives after this has
    /// emptied the queue finds the queue closed once the rank is gone, and the caller
    /// fails it; one caught in between is dropped with its sink, which reports that.)
    fn stop(mut self, why: &str) {
        self.scheduler.fail_all(why);
        while let Ok(sub) = self.rx.try_recv() {
            self.stats.waiting.fetch_sub(1, Ordering::Relaxed);
            let mut sink = sub.sink;
            sink.failed(crate::EngineError::Stopped(format!(
                "engine stopped: {why}"
            )));
        }
    }

    fn run(mut self) {
        loop {
            let seen = self.wake.epoch();
            let closed = self.drain();
            self.load.store(self.scheduler.held(), Ordering::Relaxed);
            let busy = !self.scheduler.is_idle();
            let Some(ep) = self.ep.clone() else {
                if busy {
                    if let Err(e) = self.scheduler.step() {
                        tracing_error(self.rank, &e.to_string());
                        if let crate::EngineError::Device(why) = &e {
                            // The GPU failed: its cache and buffers are in doubt. The rank
                            // fails what it holds and what is still queued for it, and
                            // stops; the model reports why.
                            let _ = self.stats.broken.set(why.clone());
                            return self.stop(&format!("the GPU failed: {why}"));
                        }
                    }
                } else if closed {
                    return;
                } else {
                    self.wake.wait(seen);
                }
                continue;
            };
            let mine = u64::from(busy) * BUSY + u64::from(closed) * CLOSED + (seen << 2);
            let all = match ep.comm.all_gather(self.rank, mine) {
                Ok(all) => all,
                Err(e) => return self.stop(&e.to_string()),
            };
            if all.iter().any(|v| v & BUSY != 0) {
                if let Err(e) = self.lockstep_step(&ep) {
                    // The other ranks may be waiting in an exchange this one will never
                    // reach: stop the whole group rather than hang it.
                    tracing_error(self.rank, &e);
                    ep.comm.abort(&e);
                    return self.stop(&e);
                }
            } else if all.iter().all(|v| v & CLOSED != 0) {
                return;
            } else {
                let min_seen = all.iter().map(|v| v >> 2).min().unwrap_or(seen);
                self.wake.wait(min_seen);
            }
        }
    }

    /// One step of every rank: the placement switch, then this rank's step.
    fn lockstep_step(&mut self, ep: &Arc<EpShared>) -> Result<(), String> {
        ep.comm.barrier().map_err(|e| e.to_string())?;
        if self.rank == 0 {
            ep.install_pending();
        }
        ep.comm.barrier().map_err(|e| e.to_string())?;
        let placement = ep.placement();
        let ctx = EpCtx {
            rank: self.rank,
            shared: ep,
            placement: &placement,
        };
        let result = self
            .scheduler
            .step_ep(Some(&ctx))
            .map_err(|e| e.to_string());
        if self.rank == 0
            && let Some(counts) = self.model.expert_tokens()
        {
            ep.record_loads(counts);
        }
        result
    }
}

fn tracing_error(rank: usize, e: &str) {
    // The engine has no logger of its own; stderr reaches the daemon's log.
    eprintln!("engine rank {rank}: step failed: {e}");
}
