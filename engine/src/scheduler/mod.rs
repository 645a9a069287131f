//! Continuous batching: one model, many sequences, one step at a time.
//!
//! Each [`Scheduler::step`] runs one forward pass over the batch: the decode token of each
//! sequence that is generating, plus chunks of prompts still being read, within a token
//! budget per step (`max_batch_tokens`) and a cap on running sequences. While some sequence
//! is generating, its stream waits for every step, so the step's prompt share is also held
//! to a time budget (`max_step_ms`) by the step times measured so far ([`budget`]). The weights are
//! read once per step for the whole batch. The keys and values live in a paged pool
//! ([`crate::model::KvPool`]): blocks are taken as sequences grow and given back when they
//! end; full prompt blocks are shared between sequences with the same prefix. Waiting
//! requests are admitted in weighted-fair order across tenants ([`fair`]) while blocks are
//! available; when a step needs more blocks than are left, the most recently admitted
//! sequence is preempted (its blocks freed, its tokens recomputed when it runs again)
//! rather than failing anyone.
//!
//! Results leave through each request's [`SeqSink`]; a sink that reports its consumer gone
//! takes its sequence out of the batch at the next step and frees its blocks.

mod budget;
pub mod fair;
pub mod lookup;
mod sequence;

use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

pub use self::budget::StepCost;
pub use self::fair::FairQueue;
pub use self::sequence::{Progress, Sequence};
use crate::error::{EngineError, Result};
use crate::generate::{FinishReason, GenerateRequest, TokenEvent};
use crate::model::{BatchSeq, Exec, KvPool, Logits, Model, blocks_for};

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
    /// The latency target of a step that carries generating sequences, in milliseconds:
    /// such a step takes prompt tokens only as far as the measured step times say fit
    /// (at least [`MIN_PREFILL_TOKENS`], so prompts always advance). `None`: every step
    /// may carry `max_batch_tokens`.
    pub max_step_ms: Option<u32>,
    /// How long a prompt may wait for its first token before the step budget grows for
    /// it, in milliseconds: once a running sequence still reading its prompt was
    /// submitted `k` times this long ago (`k >= 1`), the step's time budget is
    /// `2^k x max_step_ms`, at most four times the larger of `max_step_ms` and the decode
    /// tokens' own time (under load a fixed budget would starve prompts, and throughput
    /// with them; an unbounded one would stall every stream). `None`: never.
    pub ttft_target_ms: Option<u32>,
    /// The key/value cache (at least one sequence of `n_ctx` fits).
    pub kv: crate::model::KvBudget,
    /// Where the model runs.
    pub device: crate::device::DeviceSpec,
}

/// Prompt tokens a step may always carry beside its decode tokens, whatever the step-time
/// budget says: prompts advance even when decoding alone fills the budget.
pub const MIN_PREFILL_TOKENS: usize = 16;

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
    pub kv_blocks_total: AtomicUsize,
    /// Blocks referenced by running sequences.
    pub kv_blocks_used: AtomicUsize,
    /// Unreferenced blocks kept for their prefix.
    pub kv_blocks_cached: AtomicUsize,
    pub prefix_blocks_looked_up: AtomicU64,
    pub prefix_blocks_hit: AtomicU64,
    pub preempted_total: AtomicU64,
    pub steps_total: AtomicU64,
    pub requests_total: AtomicU64,
    pub prompt_tokens_total: AtomicU64,
    pub completion_tokens_total: AtomicU64,
    pub cancelled_total: AtomicU64,
    /// Prompt-lookup draft tokens verified, and of those kept.
    pub draft_tokens_total: AtomicU64,
    pub draft_accepted_total: AtomicU64,
    /// Set once the device failed under the engine (a GPU error mid-step): the engine has
    /// stopped and the model is unavailable, for this reason.
    pub broken: std::sync::OnceLock<String>,
}

/// One sequence's part of a step.
struct Picked {
    /// Its index in `running`.
    index: usize,
    /// Tokens it runs (with its draft).
    tokens: usize,
    wants_logits: bool,
    from_prompt: bool,
    /// Draft tokens verified.
    draft: usize,
}

/// A sequence with its consumer, waiting or running.
struct Entry {
    seq: Sequence,
    tenant: String,
    sink: Box<dyn SeqSink>,
    /// Admission order (preemption takes the newest).
    admitted: u64,
    /// `started` was sent (a preempted sequence is not announced twice).
    announced: bool,
    /// When it was submitted (for `ttft_target_ms`).
    since: std::time::Instant,
}

/// The batching loop's state.
pub struct Scheduler {
    model: Arc<Model>,
    /// The model's state on its device: threads and scratch, or weights and cache on a GPU.
    exec: Exec,
    config: SchedulerConfig,
    kv: KvPool,
    waiting: FairQueue<Entry>,
    running: Vec<Entry>,
    admissions: u64,
    stats: Arc<SchedulerStats>,
    /// What this scheduler last added to the shared gauges (waiting, running, blocks
    /// used, blocks cached, prefix lookups, prefix hits): several ranks share one
    /// [`SchedulerStats`], so each publishes its changes, not its values.
    published: [u64; 6],
    /// How long steps take by their token count (for `max_step_ms`).
    cost: StepCost,
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
    pub fn new(model: Arc<Model>, config: SchedulerConfig) -> Result<Scheduler> {
        Self::with_stats(model, config, Arc::new(SchedulerStats::default()))
    }

    /// A scheduler adding its counters to `stats` (shared by the ranks of a group).
    pub fn with_stats(
        model: Arc<Model>,
        config: SchedulerConfig,
        stats: Arc<SchedulerStats>,
    ) -> Result<Scheduler> {
        let exec = Exec::new(
            &model,
            &config.device,
            config.threads,
            config.kv,
            config.n_ctx,
        )?;
        let kv = exec.kv_pool(&model);
        stats
            .kv_blocks_total
            .fetch_add(kv.n_blocks(), Ordering::Relaxed);
        Ok(Scheduler {
            model,
            exec,
            config,
            kv,
            waiting: FairQueue::default(),
            running: Vec::new(),
            admissions: 0,
            stats,
            published: [0; 6],
            cost: StepCost::default(),
        })
    }

    /// Requests held, waiting or running.
    pub fn held(&self) -> usize {
        self.running.len() + self.waiting.len()
    }

    /// Fails every request held (the engine cannot go on).
    pub fn fail_all(&mut self, why: &str) {
        for mut e in self.running.drain(..) {
            e.seq.release(&mut self.kv);
            e.sink
                .failed(EngineError::Stopped(format!("engine stopped: {why}")));
        }
        while let Some((_, mut e)) = self.waiting.pop() {
            e.seq.release(&mut self.kv);
            e.sink
                .failed(EngineError::Stopped(format!("engine stopped: {why}")));
        }
        self.publish();
    }

    pub fn stats(&self) -> Arc<SchedulerStats> {
        self.stats.clone()
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
        let seq = match Sequence::new(&self.model, &request, self.config.n_ctx) {
            Ok(seq) => seq,
            Err(e) => return sink.failed(e),
        };
        let need = blocks_for(seq.prompt.len() + 1);
        if need > self.kv.n_blocks() {
            return sink.failed(EngineError::InvalidRequest(format!(
                "the prompt needs {need} cache blocks but the pool has {}",
                self.kv.n_blocks()
            )));
        }
        let active = self.running.iter().any(|r| r.tenant == tenant);
        let entry = Entry {
            seq,
            tenant: tenant.clone(),
            sink,
            admitted: 0,
            announced: false,
            since: std::time::Instant::now(),
        };
        self.waiting.push(&tenant, entry, active);
        self.publish();
    }

    /// Admits waiting sequences while places and blocks allow.
    fn admit(&mut self) {
        let gone = self.waiting.retain(|w| w.sink.alive());
        self.stats
            .cancelled_total
            .fetch_add(gone.len() as u64, Ordering::Relaxed);
        while self.running.len() < self.config.max_running {
            let Some((tenant, mut e)) = self.waiting.pop() else {
                break;
            };
            e.seq.attach_prefix(&mut self.kv);
            // Room for what it must compute now and its first generated token.
            let need = e.seq.blocks_needed(e.seq.uncomputed() + 1);
            if need > self.kv.available() && !self.running.is_empty() {
                e.seq.release(&mut self.kv);
                self.waiting.push_front(&tenant, e);
                break;
            }
            if !e.announced {
                if e.sink.started(e.seq.prompt.len()).is_break() {
                    e.seq.release(&mut self.kv);
                    self.stats.cancelled_total.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                e.announced = true;
            }
            self.admissions += 1;
            e.admitted = self.admissions;
            e.tenant = tenant;
            self.running.push(e);
        }
        let running = &self.running;
        self.waiting
            .forget_idle(&|t| running.iter().any(|r| r.tenant == t));
    }

    fn publish(&mut self) {
        let s = &self.stats;
        let now = [
            self.waiting.len() as u64,
            self.running.len() as u64,
            self.kv.used() as u64,
            self.kv.cached() as u64,
            self.kv.prefix_lookups,
            self.kv.prefix_hits,
        ];
        let usize_gauges = [
            &s.waiting,
            &s.running,
            &s.kv_blocks_used,
            &s.kv_blocks_cached,
        ];
        for (i, g) in usize_gauges.into_iter().enumerate() {
            let (new, old) = (now[i] as usize, self.published[i] as usize);
            if new >= old {
                g.fetch_add(new - old, Ordering::Relaxed);
            } else {
                g.fetch_sub(old - new, Ordering::Relaxed);
            }
        }
        for (i, g) in [(4, &s.prefix_blocks_looked_up), (5, &s.prefix_blocks_hit)] {
            g.fetch_add(now[i].saturating_sub(self.published[i]), Ordering::Relaxed);
        }
        self.published = now;
    }

    /// Tokens this step may carry: `max_batch_tokens`, or while some sequence is
    /// generating (its stream waits for the step), what fits in the step time that
    /// [`budget::StepCost::step_seconds`] allows for `max_step_ms` and the decode tokens,
    /// decode tokens plus at least [`MIN_PREFILL_TOKENS`]. Once a prompt being read has
    /// waited `ttft_target_ms`, the target doubles for every further `ttft_target_ms` it
    /// waits (within `step_seconds`' ceiling): under load the prompts catch up instead of
    /// starving, and no stream waits seconds for them.
    fn token_budget(&self) -> usize {
        let cap = self.config.max_batch_tokens.max(1);
        let Some(ms) = self.config.max_step_ms else {
            return cap;
        };
        let (mut decoding, mut streaming) = (0, false);
        for e in self.running.iter().filter(|e| e.seq.uncomputed() == 1) {
            decoding += 1;
            streaming |= !e.seq.output.is_empty();
        }
        if !streaming {
            return cap;
        }
        let mut growth = 1.0;
        if let Some(ttft) = self.config.ttft_target_ms {
            // The longest wait of a prompt still being read, in units of the target.
            let late = self
                .running
                .iter()
                .filter(|e| e.seq.output.is_empty() && e.seq.uncomputed() > 0)
                .map(|e| e.since.elapsed().as_secs_f64() * 1000.0 / f64::from(ttft.max(1)))
                .fold(0.0, f64::max);
            if late >= 1.0 {
                growth = late.min(20.0).exp2();
            }
        }
        let budget = self
            .cost
            .step_seconds(f64::from(ms) / 1000.0, growth, decoding);
        self.cost
            .tokens_within(budget, decoding + MIN_PREFILL_TOKENS, cap)
    }

    /// This step's inputs as (running index, tokens): decode tokens first, then chunks
    /// of prompts (and recomputations) in admission order, then draft tokens, within the
    /// token budget (a draft never takes a decode token's or a prompt's place).
    fn plan(&self) -> Vec<(usize, usize)> {
        let mut budget = self.token_budget();
        let mut order: Vec<usize> = (0..self.running.len()).collect();
        order.sort_by_key(|&i| {
            let e = &self.running[i];
            (e.seq.uncomputed() != 1, e.admitted)
        });
        let mut plan = Vec::with_capacity(order.len());
        for i in order {
            let take = self.running[i].seq.uncomputed().min(budget);
            if take == 0 {
                continue;
            }
            budget -= take;
            plan.push((i, take));
            if budget == 0 {
                break;
            }
        }
        for (i, take) in &mut plan {
            let seq = &self.running[*i].seq;
            let extra = (seq.wants() - seq.uncomputed()).min(budget);
            *take += extra;
            budget -= extra;
        }
        plan
    }

    /// Frees the newest running sequence's blocks and sends it back to wait.
    fn preempt_newest(&mut self) -> bool {
        let Some(i) = (0..self.running.len()).max_by_key(|&i| self.running[i].admitted) else {
            return false;
        };
        let mut e = self.running.swap_remove(i);
        e.seq.release(&mut self.kv);
        self.stats.preempted_total.fetch_add(1, Ordering::Relaxed);
        let tenant = e.tenant.clone();
        self.waiting.push_front(&tenant, e);
        true
    }

    /// One forward pass over the batch, then sampling for every sequence that got logits.
    pub fn step(&mut self) -> Result<()> {
        self.step_ep(None)
    }

    /// [`Scheduler::step`] as one rank of an expert-parallel group: the forward pass runs
    /// its MoE layers across the ranks, and a rank with nothing to run still takes part.
    pub fn step_ep(&mut self, ep: Option<&crate::parallel::EpCtx<'_>>) -> Result<()> {
        // Sequences whose consumer left go first, with their blocks.
        let mut i = 0;
        while i < self.running.len() {
            if self.running[i].sink.alive() {
                i += 1;
            } else {
                let mut e = self.running.swap_remove(i);
                e.seq.release(&mut self.kv);
                self.stats.cancelled_total.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.admit();
        for e in &mut self.running {
            e.seq.propose_draft();
        }
        // Make room: preempt the newest sequences until this step's blocks fit.
        let plan = loop {
            let plan = self.plan();
            let need: usize = plan
                .iter()
                .map(|&(i, n)| self.running[i].seq.blocks_needed(n))
                .sum();
            if need <= self.kv.available() || self.running.len() <= 1 {
                break plan;
            }
            self.preempt_newest();
        };
        // Admissions count before the pass: a client that saw its request start and then
        // reads the gauges finds it running, not waiting.
        self.publish();
        if plan.is_empty() {
            if let Some(ep) = ep {
                return self.exec.idle_step(&self.model, ep);
            }
            return Ok(());
        }
        // The grammar masks of constrained sequences are computed on a helper thread while
        // the forward pass runs (they depend only on the tokens so far), not after it.
        let mut masks: Vec<(usize, crate::grammar::Constraint)> = plan
            .iter()
            .filter_map(|&(i, _)| {
                self.running[i]
                    .seq
                    .take_unprepared_constraint()
                    .map(|c| (i, c))
            })
            .collect();
        let mut picked = Vec::with_capacity(plan.len());
        let started = std::time::Instant::now();
        {
            let mut slots: Vec<Option<&mut Entry>> = self.running.iter_mut().map(Some).collect();
            let mut batch: Vec<BatchSeq<'_>> = Vec::with_capacity(plan.len());
            for &(i, n) in &plan {
                let Some(e) = slots[i].take() else { continue };
                let Some(input) = e.seq.next_input(n) else {
                    continue;
                };
                picked.push(Picked {
                    index: i,
                    tokens: input.tokens.len(),
                    wants_logits: input.wants_logits,
                    from_prompt: input.from_prompt,
                    draft: input.draft,
                });
                batch.push(BatchSeq {
                    kv: input.kv,
                    tokens: input.tokens,
                    batched_order: input.batched_order,
                    logits: if input.draft > 0 {
                        Logits::All
                    } else if input.wants_logits {
                        Logits::Last
                    } else {
                        Logits::None
                    },
                });
            }
            let (exec, model, kv) = (&mut self.exec, &self.model, &mut self.kv);
            let result = if masks.is_empty() {
                exec.forward_batch(model, kv, &mut batch, ep)
            } else {
                std::thread::scope(|s| {
                    let helper = s.spawn(|| {
                        for (_, c) in masks.iter_mut() {
                            c.prepare();
                        }
                    });
                    let result = exec.forward_batch(model, kv, &mut batch, ep);
                    // A panic there leaves the masks to be computed when sampling.
                    let _ = helper.join();
                    result
                })
            };
            drop(batch);
            for (i, c) in masks.drain(..) {
                self.running[i].seq.put_constraint(c);
            }
            if let Err(e) = result {
                // A failed pass leaves these sequences' caches unknown: fail them.
                let mut failed: Vec<usize> = picked.iter().map(|p| p.index).collect();
                failed.sort_unstable_by(|a, b| b.cmp(a));
                for i in failed {
                    let mut entry = self.running.swap_remove(i);
                    entry.seq.release(&mut self.kv);
                    entry.sink.failed(e.for_each_sequence());
                }
                self.publish();
                return Err(e);
            }
        }
        self.stats.steps_total.fetch_add(1, Ordering::Relaxed);
        let vocab = self.model.config.vocab_size;
        let mut row = 0;
        let mut done: Vec<(usize, Progress)> = Vec::new();
        for p in &picked {
            let (i, n) = (p.index, p.tokens);
            let e = &mut self.running[i];
            e.seq.register_prefix(&mut self.kv);
            if p.from_prompt {
                self.stats
                    .prompt_tokens_total
                    .fetch_add(n as u64, Ordering::Relaxed);
            }
            self.waiting.charge(&e.tenant, n as u64);
            if !p.wants_logits {
                continue;
            }
            let rows = 1 + p.draft;
            let logits = &self.exec.logits()[row * vocab..(row + rows) * vocab];
            row += rows;
            let sink = &mut e.sink;
            let (progress, generated) = if p.draft > 0 {
                e.seq
                    .on_verified(&self.model, logits, &mut |ev| sink.token(ev))
            } else {
                let progress = e
                    .seq
                    .on_logits(&self.model, logits, &mut |ev| sink.token(ev));
                (progress, 1)
            };
            self.stats
                .completion_tokens_total
                .fetch_add(generated as u64, Ordering::Relaxed);
            if p.draft > 0 {
                let kept = p.draft.min(generated.saturating_sub(1));
                self.stats
                    .draft_tokens_total
                    .fetch_add(p.draft as u64, Ordering::Relaxed);
                self.stats
                    .draft_accepted_total
                    .fetch_add(kept as u64, Ordering::Relaxed);
            }
            if progress != Progress::Running {
                done.push((i, progress));
            }
        }
        // Remove finished sequences, highest index first so the others keep theirs.
        done.sort_by_key(|d| std::cmp::Reverse(d.0));
        let mut ended = Vec::with_capacity(done.len());
        for (i, progress) in done {
            let mut e = self.running.swap_remove(i);
            e.seq.release(&mut self.kv);
            self.stats.requests_total.fetch_add(1, Ordering::Relaxed);
            match progress {
                Progress::Finished(f) => e.sink.finished(f, e.seq.output.len()),
                Progress::Cancelled => {
                    self.stats.cancelled_total.fetch_add(1, Ordering::Relaxed);
                }
                Progress::Running => {}
            }
            ended.push(e);
        }
        let tokens = picked.iter().map(|p| p.tokens).sum();
        self.cost.observe(tokens, started.elapsed().as_secs_f64());
        // Counters first, then the sinks go: a client that sees its request end and then
        // reads the metrics finds it counted.
        self.publish();
        drop(ended);
        Ok(())
    }
}
