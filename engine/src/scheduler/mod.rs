//! Continuous batching: one model, many sequences, one step at a time.
//!
//! Each [`Scheduler::step`] runs one forward pass over every running sequence: the decode
//! token of each sequence that is generating, plus chunks of prompts still being read,
//! within a token budget per step (`max_batch_tokens`) and a cap on running sequences.
//! The weights are read once per step for the whole batch. Waiting requests are admitted
//! in weighted-fair order across tenants ([`fair`]) while the running sequences' worst-case
//! cache positions fit the KV budget, so a running sequence never has to be evicted.
//!
//! Results leave through each request's [`SeqSink`]; a sink that reports its consumer gone
//! takes its sequence out of the batch at the next step.

pub mod fair;
mod sequence;

use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use kernels::{Isa, ThreadPool};

pub use self::fair::FairQueue;
pub use self::sequence::{Progress, Sequence};
use crate::error::{EngineError, Result};
use crate::generate::{FinishReason, GenerateRequest, TokenEvent};
use crate::model::{BatchSeq, Logits, Model, Scratch};

/// Limits of one scheduler.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Compute threads.
    pub threads: usize,
    /// Context limit per sequence.
    pub n_ctx: usize,
    /// Tokens per forward pass (decode tokens plus prompt chunks).
    pub max_batch_tokens: usize,
    /// Sequences running at once.
    pub max_running: usize,
    /// Cache positions all running sequences may hold together; each is charged its
    /// worst case (prompt + max_tokens) when admitted.
    pub kv_budget_positions: usize,
}

/// Where a request's results go.
pub trait SeqSink: Send {
    /// The sequence was admitted and its prompt is `prompt_tokens` long.
    fn started(&mut self, prompt_tokens: usize) -> ControlFlow<()>;
    /// One generated token.
    fn token(&mut self, event: TokenEvent<'_>) -> ControlFlow<()>;
    /// The sequence ended.
    fn finished(&mut self, finish_reason: FinishReason, completion_tokens: usize);
    /// The request failed.
    fn failed(&mut self, error: EngineError);
    /// False once the consumer is gone (checked before each step).
    fn alive(&self) -> bool;
}

/// A request for the scheduler.
pub struct Submission {
    pub request: GenerateRequest,
    /// Who it is for (fairness).
    pub tenant: String,
    pub sink: Box<dyn SeqSink>,
}

impl std::fmt::Debug for Submission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Submission")
            .field("tenant", &self.tenant)
            .finish_non_exhaustive()
    }
}

/// Live counters, shared with whoever reports them.
#[derive(Debug, Default)]
pub struct SchedulerStats {
    pub waiting: AtomicUsize,
    pub running: AtomicUsize,
    pub kv_positions_reserved: AtomicUsize,
    pub steps_total: AtomicU64,
    pub requests_total: AtomicU64,
    pub prompt_tokens_total: AtomicU64,
    pub completion_tokens_total: AtomicU64,
    pub cancelled_total: AtomicU64,
}

struct Running {
    seq: Sequence,
    tenant: String,
    sink: Box<dyn SeqSink>,
    reserved: usize,
}

struct Waiting {
    seq: Sequence,
    sink: Box<dyn SeqSink>,
}

/// The batching loop's state.
pub struct Scheduler {
    model: Arc<Model>,
    pool: ThreadPool,
    isa: Isa,
    scratch: Scratch,
    config: SchedulerConfig,
    waiting: FairQueue<Waiting>,
    running: Vec<Running>,
    reserved: usize,
    stats: Arc<SchedulerStats>,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("config", &self.config)
            .field("waiting", &self.waiting.len())
            .field("running", &self.running.len())
            .finish_non_exhaustive()
    }
}

impl Scheduler {
    pub fn new(model: Arc<Model>, config: SchedulerConfig) -> Scheduler {
        Scheduler {
            model,
            pool: ThreadPool::new(config.threads.max(1)),
            isa: Isa::active(),
            scratch: Scratch::default(),
            config,
            waiting: FairQueue::default(),
            running: Vec::new(),
            reserved: 0,
            stats: Arc::new(SchedulerStats::default()),
        }
    }

    pub fn stats(&self) -> Arc<SchedulerStats> {
        self.stats.clone()
    }

    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }

    /// Nothing running and nothing waiting.
    pub fn is_idle(&self) -> bool {
        self.running.is_empty() && self.waiting.is_empty()
    }

    /// Queues a request; a request the engine cannot serve fails through its sink.
    pub fn submit(&mut self, sub: Submission) {
        let Submission {
            request,
            tenant,
            mut sink,
        } = sub;
        let cache = self.model.new_cache(self.config.n_ctx);
        match Sequence::new(&self.model, &request, cache) {
            Ok(seq) => {
                let active = self.running.iter().any(|r| r.tenant == tenant);
                self.waiting.push(&tenant, Waiting { seq, sink }, active);
                self.stats
                    .waiting
                    .store(self.waiting.len(), Ordering::Relaxed);
            }
            Err(e) => sink.failed(e),
        }
    }

    /// Admits waiting sequences while they fit.
    fn admit(&mut self) {
        let gone = self.waiting.retain(|w| w.sink.alive());
        self.stats
            .cancelled_total
            .fetch_add(gone.len() as u64, Ordering::Relaxed);
        while self.running.len() < self.config.max_running {
            let Some((tenant, mut w)) = self.waiting.pop() else {
                break;
            };
            let need = w.seq.max_positions();
            let fits = self.reserved + need <= self.config.kv_budget_positions;
            if !fits && !self.running.is_empty() {
                self.waiting.push_front(&tenant, w);
                break;
            }
            if w.sink.started(w.seq.prompt.len()).is_break() {
                self.stats.cancelled_total.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            self.reserved += need;
            self.running.push(Running {
                seq: w.seq,
                tenant,
                sink: w.sink,
                reserved: need,
            });
        }
        let running = &self.running;
        self.waiting
            .forget_idle(&|t| running.iter().any(|r| r.tenant == t));
        self.publish();
    }

    fn publish(&self) {
        self.stats
            .waiting
            .store(self.waiting.len(), Ordering::Relaxed);
        self.stats
            .running
            .store(self.running.len(), Ordering::Relaxed);
        self.stats
            .kv_positions_reserved
            .store(self.reserved, Ordering::Relaxed);
    }

    /// One forward pass over the batch, then sampling for every sequence that got logits.
    pub fn step(&mut self) -> Result<()> {
        // Sequences whose consumer left go first.
        let mut i = 0;
        while i < self.running.len() {
            if self.running[i].sink.alive() {
                i += 1;
            } else {
                let r = self.running.swap_remove(i);
                self.reserved -= r.reserved;
                self.stats.cancelled_total.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.admit();
        if self.running.is_empty() {
            return Ok(());
        }
        // Decode tokens first (one each), then prompt chunks in admission order.
        let mut budget = self.config.max_batch_tokens.max(1);
        let mut order: Vec<usize> = (0..self.running.len())
            .filter(|&i| self.running[i].seq.prompt_left() == 0)
            .collect();
        order.extend((0..self.running.len()).filter(|&i| self.running[i].seq.prompt_left() > 0));
        let mut picked = Vec::with_capacity(order.len());
        let mut batch: Vec<BatchSeq<'_>> = Vec::with_capacity(order.len());
        {
            // Hand out disjoint borrows of the chosen sequences.
            let mut slots: Vec<Option<&mut Running>> = self.running.iter_mut().map(Some).collect();
            for &i in &order {
                if budget == 0 {
                    break;
                }
                let Some(r) = slots[i].take() else { continue };
                let Some(input) = r.seq.next_input(budget) else {
                    continue;
                };
                budget -= input.tokens.len();
                picked.push((i, input.tokens.len(), input.wants_logits, input.from_prompt));
                batch.push(BatchSeq {
                    cache: input.cache,
                    tokens: input.tokens,
                    batched_order: input.prompt,
                    logits: if input.wants_logits {
                        Logits::Last
                    } else {
                        Logits::None
                    },
                });
            }
            if batch.is_empty() {
                return Ok(());
            }
            let result =
                self.model
                    .forward_batch(&self.pool, self.isa, &mut self.scratch, &mut batch);
            drop(batch);
            if let Err(e) = result {
                // A failed pass leaves the caches in an unknown state: fail the batch.
                let msg = e.to_string();
                let mut failed: Vec<usize> = picked.iter().map(|p| p.0).collect();
                failed.sort_unstable_by(|a, b| b.cmp(a));
                for i in failed {
                    let r = self.running.swap_remove(i);
                    self.reserved -= r.reserved;
                    let mut sink = r.sink;
                    sink.failed(EngineError::InvalidRequest(msg.clone()));
                }
                self.publish();
                return Err(e);
            }
        }
        self.stats.steps_total.fetch_add(1, Ordering::Relaxed);
        let vocab = self.model.config.vocab_size;
        let mut row = 0;
        let mut done: Vec<(usize, Progress)> = Vec::new();
        for &(i, n, wants_logits, from_prompt) in &picked {
            let r = &mut self.running[i];
            r.seq.consumed(n);
            if from_prompt {
                self.stats
                    .prompt_tokens_total
                    .fetch_add(n as u64, Ordering::Relaxed);
            }
            self.waiting.charge(&r.tenant, n as u64);
            if !wants_logits {
                continue;
            }
            let logits = &self.scratch.logits[row * vocab..(row + 1) * vocab];
            row += 1;
            let sink = &mut r.sink;
            let progress = r
                .seq
                .on_logits(&self.model, logits, &mut |ev| sink.token(ev));
            self.stats
                .completion_tokens_total
                .fetch_add(1, Ordering::Relaxed);
            if progress != Progress::Running {
                done.push((i, progress));
            }
        }
        // Remove finished sequences, highest index first so the others keep theirs.
        done.sort_by_key(|d| std::cmp::Reverse(d.0));
        for (i, progress) in done {
            let r = self.running.swap_remove(i);
            self.reserved -= r.reserved;
            self.stats.requests_total.fetch_add(1, Ordering::Relaxed);
            let mut sink = r.sink;
            match progress {
                Progress::Finished(f) => sink.finished(f, r.seq.output.len()),
                Progress::Cancelled => {
                    self.stats.cancelled_total.fetch_add(1, Ordering::Relaxed);
                }
                Progress::Running => {}
            }
        }
        self.publish();
        Ok(())
    }
}
