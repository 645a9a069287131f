//! One group of engine ranks per served model ([`RankGroup`]: a batching scheduler per
//! rank, each on its own OS thread), fed by a bounded queue.
//!
//! Jobs (the choices of one API request) enter over a channel and their tokens leave over
//! another, so the async runtime never runs model code. A router thread hands each choice
//! to the least loaded rank, which takes it in between steps. A job whose event receiver
//! is gone (the client disconnected or timed out) leaves the batch at the next step. The
//! waiting room is bounded: past it the caller answers 429.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use engine::Model;
use engine::parallel::EpShared;
use engine::serve::{EngineConfig, Handle, SchedulerStats, SeqSink, Submission};
use engine::{EngineError, FinishReason, GenerateRequest, TokenEvent};
use tokio::sync::mpsc;

/// Work for the engine: the choices of one API request.
#[derive(Debug)]
pub struct Job {
    pub requests: Vec<GenerateRequest>,
    /// Who the request is for: fairness between tenants.
    pub tenant: String,
    pub events: mpsc::UnboundedSender<Event>,
}

/// What a job reports, tagged with the choice it belongs to.
#[derive(Debug)]
pub enum Event {
    /// The choice was admitted to the batch; its tokens follow.
    Started { choice: usize },
    Token {
        choice: usize,
        token_id: u32,
        /// Text that became safe to show with this token (may be empty).
        text: String,
        /// The token's log-probability and the best alternatives, when asked for.
        logprob: f32,
        top_logprobs: Vec<(u32, f32)>,
    },
    Done {
        choice: usize,
        finish_reason: FinishReason,
        completion_tokens: usize,
    },
    /// The engine failed this choice.
    Failed { choice: usize, error: EngineError },
}

/// Live counters of one model's engine.
#[derive(Debug)]
pub struct WorkerStats {
    /// Jobs handed over and not yet taken in by the engine thread.
    pub queued: AtomicUsize,
    /// The schedulers' own counters, summed over the ranks.
    pub engine: Arc<SchedulerStats>,
}

impl WorkerStats {
    /// Requests waiting for a place in the batch (queued jobs plus waiting sequences).
    pub fn waiting(&self) -> usize {
        self.queued.load(Ordering::Relaxed) + self.engine.waiting.load(Ordering::Relaxed)
    }
}

/// The sending side of a model's queue.
#[derive(Debug, Clone)]
pub struct WorkerHandle {
    queue: mpsc::UnboundedSender<Job>,
    max_waiting: usize,
    pub stats: Arc<WorkerStats>,
    /// Ranks of the group.
    pub ranks: usize,
    /// Expert-parallel state (placement, loads) when the group has several ranks.
    pub ep: Option<Arc<EpShared>>,
    /// Where the engine runs: `cpu` or `cuda:N`, and its description.
    pub device: String,
    pub device_detail: String,
    /// Blocks of the engine's key/value cache (all ranks) and their bytes.
    pub kv_blocks: usize,
    pub kv_bytes: usize,
}

/// Why a job was not queued.
#[derive(Debug, PartialEq, Eq)]
pub enum SubmitError {
    Full,
    Stopped,
}

impl WorkerHandle {
    /// Starts the model's ranks and the router thread; at most `max_waiting` requests may
    /// wait for the batch.
    pub fn spawn(
        model: Arc<Model>,
        config: EngineConfig,
        id: &str,
        max_waiting: usize,
    ) -> anyhow::Result<WorkerHandle> {
        let (queue, rx) = mpsc::unbounded_channel();
        let group = engine::serve::spawn(model, config, id)?;
        let (device, device_detail) = (group.device().name(), group.device().describe());
        let (kv_blocks, kv_bytes) = (group.kv_blocks(), group.kv_bytes());
        let stats = Arc::new(WorkerStats {
            queued: AtomicUsize::new(0),
            engine: group.stats(),
        });
        let (ranks, ep) = (group.ranks(), group.ep().cloned());
        let thread_stats = stats.clone();
        std::thread::Builder::new()
            .name(format!("router-{id}"))
            .spawn(move || run(group, rx, &thread_stats))?;
        Ok(WorkerHandle {
            queue,
            max_waiting: max_waiting.max(1),
            stats,
            ranks,
            ep,
            device,
            device_detail,
            kv_blocks,
            kv_bytes,
        })
    }

    /// Queues a job without waiting.
    pub fn submit(&self, job: Job) -> Result<(), SubmitError> {
        if self.stats.waiting() >= self.max_waiting {
            return Err(SubmitError::Full);
        }
        self.stats.queued.fetch_add(1, Ordering::Relaxed);
        self.queue.send(job).map_err(|_| {
            self.stats.queued.fetch_sub(1, Ordering::Relaxed);
            SubmitError::Stopped
        })
    }
}

fn run(group: Handle, mut rx: mpsc::UnboundedReceiver<Job>, stats: &WorkerStats) {
    while let Some(job) = rx.blocking_recv() {
        take_in(&group, job, stats);
    }
    tracing::debug!("engine queue closed; the ranks finish their work and exit");
    drop(group);
}

fn take_in(group: &Handle, job: Job, stats: &WorkerStats) {
    for (choice, request) in job.requests.into_iter().enumerate() {
        let sub = Submission {
            request,
            tenant: job.tenant.clone(),
            sink: Box::new(ChoiceSink {
                choice,
                events: job.events.clone(),
                answered: false,
            }),
        };
        if let Err(sub) = group.submit(sub) {
            let why = match group.stats().broken.get() {
                Some(why) => format!("the engine has stopped: the GPU failed: {why}"),
                None => "the engine has stopped".into(),
            };
            let mut sink = sub.sink;
            sink.failed(EngineError::Stopped(why));
        }
    }
    // Counted as waiting until the ranks hold it (their own counters then do).
    stats.queued.fetch_sub(1, Ordering::Relaxed);
}

/// Sends one choice's results to the request's event channel.
struct ChoiceSink {
    choice: usize,
    events: mpsc::UnboundedSender<Event>,
    /// Set once the choice has finished or failed.
    answered: bool,
}

impl Drop for ChoiceSink {
    /// A choice dropped unanswered (its engine stopped while it was queued) fails rather
    /// than ending as an empty answer.
    fn drop(&mut self) {
        if !self.answered {
            let _ = self.events.send(Event::Failed {
                choice: self.choice,
                error: EngineError::Stopped("the engine stopped before answering".into()),
            });
        }
    }
}

impl ChoiceSink {
    fn send(&self, event: Event) -> ControlFlow<()> {
        match self.events.send(event) {
            Ok(()) => ControlFlow::Continue(()),
            Err(_) => ControlFlow::Break(()),
        }
    }
}

impl SeqSink for ChoiceSink {
    fn started(&mut self, _prompt_tokens: usize) -> ControlFlow<()> {
        self.send(Event::Started {
            choice: self.choice,
        })
    }

    fn token(&mut self, ev: TokenEvent<'_>) -> ControlFlow<()> {
        self.send(Event::Token {
            choice: self.choice,
            token_id: ev.token_id,
            text: ev.text.to_string(),
            logprob: ev.logprob,
            top_logprobs: ev.top_logprobs.to_vec(),
        })
    }

    fn finished(&mut self, finish_reason: FinishReason, completion_tokens: usize) {
        self.answered = true;
        let _ = self.send(Event::Done {
            choice: self.choice,
            finish_reason,
            completion_tokens,
        });
    }

    fn failed(&mut self, error: EngineError) {
        self.answered = true;
        let _ = self.send(Event::Failed {
            choice: self.choice,
            error,
        });
    }

    fn alive(&self) -> bool {
        !self.events.is_closed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sink() -> (ChoiceSink, mpsc::UnboundedReceiver<Event>) {
        let (events, rx) = mpsc::unbounded_channel();
        (
            ChoiceSink {
                choice: 2,
                events,
                answered: false,
            },
            rx,
        )
    }

    /// A choice its engine dropped unanswered (queued to a rank that then stopped) fails,
    /// rather than closing its channel and reading as an empty answer.
    #[test]
    fn a_choice_dropped_unanswered_fails() {
        let (s, mut rx) = sink();
        drop(s);
        match rx.try_recv() {
            Ok(Event::Failed { choice: 2, error }) => {
                assert!(matches!(error, EngineError::Stopped(_)), "{error}");
            }
            other => panic!("{other:?}"),
        }
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn an_answered_choice_sends_nothing_more_when_dropped() {
        let (mut s, mut rx) = sink();
        s.finished(FinishReason::Stop, 3);
        drop(s);
        assert!(matches!(rx.try_recv(), Ok(Event::Done { choice: 2, .. })));
        assert!(rx.try_recv().is_err());
        let (mut s, mut rx) = sink();
        s.failed(EngineError::Stopped("gone".into()));
        drop(s);
        assert!(matches!(rx.try_recv(), Ok(Event::Failed { .. })));
        assert!(rx.try_recv().is_err());
    }
}
