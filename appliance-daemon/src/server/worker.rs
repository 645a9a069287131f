//! One engine per served model, on its own OS thread, fed by a bounded queue.
//!
//! Requests enter over a channel and their tokens leave over another, so the async runtime
//! never runs model code. A job whose receiver is gone (the client disconnected or timed
//! out) stops at its next token; one that is still queued when its client leaves is
//! skipped. The queue is bounded: a full queue is the caller's cue to answer 503.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use engine::{Engine, EngineError, FinishReason, GenerateRequest};
use tokio::sync::mpsc;

/// Work for the engine: the choices of one API request, run one after another.
#[derive(Debug)]
pub struct Job {
    pub requests: Vec<GenerateRequest>,
    pub events: mpsc::UnboundedSender<Event>,
}

/// What a job reports, tagged with the choice it belongs to.
#[derive(Debug)]
pub enum Event {
    /// The choice's prompt has been read; its tokens follow.
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
    /// The engine failed; no more events follow for this job.
    Failed { choice: usize, error: EngineError },
}

/// Live counters of one model's engine.
#[derive(Debug, Default)]
pub struct WorkerStats {
    /// Jobs queued and not yet started.
    pub waiting: AtomicUsize,
    /// 1 while a job runs.
    pub running: AtomicUsize,
    /// Jobs finished since start (all choices run or the client gone).
    pub jobs_total: AtomicU64,
    pub prompt_tokens_total: AtomicU64,
    pub completion_tokens_total: AtomicU64,
}

/// The sending side of a model's queue.
#[derive(Debug, Clone)]
pub struct WorkerHandle {
    queue: mpsc::Sender<Job>,
    pub stats: Arc<WorkerStats>,
}

/// Why a job was not queued.
#[derive(Debug, PartialEq, Eq)]
pub enum SubmitError {
    Full,
    Stopped,
}

impl WorkerHandle {
    /// Starts the engine thread with room for `max_waiting` queued jobs.
    pub fn spawn(engine: Engine, id: &str, max_waiting: usize) -> std::io::Result<WorkerHandle> {
        let (queue, rx) = mpsc::channel(max_waiting.max(1));
        let stats = Arc::new(WorkerStats::default());
        let thread_stats = stats.clone();
        std::thread::Builder::new()
            .name(format!("engine-{id}"))
            .spawn(move || run(engine, rx, &thread_stats))?;
        Ok(WorkerHandle { queue, stats })
    }

    /// Queues a job without waiting.
    pub fn submit(&self, job: Job) -> Result<(), SubmitError> {
        self.stats.waiting.fetch_add(1, Ordering::Relaxed);
        self.queue.try_send(job).map_err(|e| {
            self.stats.waiting.fetch_sub(1, Ordering::Relaxed);
            match e {
                mpsc::error::TrySendError::Full(_) => SubmitError::Full,
                mpsc::error::TrySendError::Closed(_) => SubmitError::Stopped,
            }
        })
    }
}

fn run(mut engine: Engine, mut rx: mpsc::Receiver<Job>, stats: &WorkerStats) {
    while let Some(job) = rx.blocking_recv() {
        stats.waiting.fetch_sub(1, Ordering::Relaxed);
        if job.events.is_closed() {
            stats.jobs_total.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        stats.running.store(1, Ordering::Relaxed);
        run_job(&mut engine, &job, stats);
        stats.running.store(0, Ordering::Relaxed);
        stats.jobs_total.fetch_add(1, Ordering::Relaxed);
    }
    tracing::debug!("engine queue closed; worker exits");
}

fn run_job(engine: &mut Engine, job: &Job, stats: &WorkerStats) {
    for (choice, request) in job.requests.iter().enumerate() {
        if job.events.send(Event::Started { choice }).is_err() {
            return;
        }
        let mut gone = false;
        let result = engine.generate(request, &mut |ev| {
            stats
                .completion_tokens_total
                .fetch_add(1, Ordering::Relaxed);
            let event = Event::Token {
                choice,
                token_id: ev.token_id,
                text: ev.text.to_string(),
                logprob: ev.logprob,
                top_logprobs: ev.top_logprobs.to_vec(),
            };
            if job.events.send(event).is_err() {
                gone = true;
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        });
        match result {
            Ok(out) => {
                stats
                    .prompt_tokens_total
                    .fetch_add(out.prompt_token_ids.len() as u64, Ordering::Relaxed);
                if gone {
                    tracing::info!(
                        tokens = out.output_token_ids.len(),
                        "client went away; generation stopped"
                    );
                    return;
                }
                let done = Event::Done {
                    choice,
                    finish_reason: out.finish_reason,
                    completion_tokens: out.output_token_ids.len(),
                };
                if job.events.send(done).is_err() {
                    return;
                }
            }
            Err(error) => {
                let _ = job.events.send(Event::Failed { choice, error });
                return;
            }
        }
    }
}
