//! One request's life as a sequence: its prompt, its cache, and what happens each time
//! logits for its next position arrive (sample, detokenize, hold back stop strings,
//! decide whether it has finished).
//!
//! Both [`crate::Engine::generate`] (one sequence alone) and the batching
//! [`super::Scheduler`] drive sequences through this type, so a request gives the same
//! tokens whichever runs it.

use std::ops::ControlFlow;

use crate::error::{EngineError, Result};
use crate::generate::{FinishReason, GenerateRequest, TokenEvent, model_logprobs, tokenize};
use crate::model::{KvCache, Model};
use crate::sampling::{Sampler, StopStrings};
use crate::tokenizer::Detokenizer;

/// What one step did to a sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// It wants another step.
    Running,
    /// It finished for this reason.
    Finished(FinishReason),
    /// Its consumer went away.
    Cancelled,
}

/// A request being served.
#[derive(Debug)]
pub struct Sequence {
    /// The prompt's token ids.
    pub prompt: Vec<u32>,
    /// Prompt then generated tokens: what the penalties look at.
    history: Vec<u32>,
    /// The sequence's keys and values.
    pub(crate) cache: KvCache,
    /// Prompt tokens already in the cache.
    prefilled: usize,
    /// The last sampled token, not yet run through the model.
    pending: [u32; 1],
    has_pending: bool,
    sampler: Sampler,
    detok: Detokenizer,
    stops: StopStrings,
    max_tokens: usize,
    min_tokens: usize,
    ignore_eos: bool,
    logprobs: Option<usize>,
    /// Generated token ids.
    pub output: Vec<u32>,
    /// Text released so far.
    pub text: String,
    /// Scratch for the alternatives reported with each token.
    top: Vec<(u32, f32)>,
    /// Scratch: logits with end-of-generation tokens masked (before `min_tokens`).
    masked: Vec<f32>,
}

impl Sequence {
    /// Checks `request` against `model` and the context of `cache` and sets the sequence
    /// up; `cache` is cleared and becomes the sequence's.
    pub fn new(model: &Model, request: &GenerateRequest, mut cache: KvCache) -> Result<Sequence> {
        let sampling = request.sampling.validate()?;
        let stops = StopStrings::new(request.stop.clone())?;
        if request.max_tokens == 0 {
            return Err(EngineError::InvalidRequest(
                "`max_tokens` must be at least 1, got 0".into(),
            ));
        }
        let prompt = tokenize(model, &request.prompt)?;
        if prompt.is_empty() {
            return Err(EngineError::InvalidRequest("the prompt is empty".into()));
        }
        let n_ctx = cache.max_len();
        if prompt.len() > n_ctx {
            return Err(EngineError::InvalidRequest(format!(
                "the prompt is {} tokens, but the context holds {n_ctx}",
                prompt.len()
            )));
        }
        let vocab = model.config.vocab_size;
        if let Some(bad) = prompt.iter().find(|t| **t as usize >= vocab) {
            return Err(EngineError::InvalidRequest(format!(
                "prompt token id {bad} is outside the vocabulary (size {vocab})"
            )));
        }
        cache.clear();
        Ok(Sequence {
            history: prompt.clone(),
            prompt,
            cache,
            prefilled: 0,
            pending: [0],
            has_pending: false,
            sampler: Sampler::new(sampling),
            detok: Detokenizer::new(),
            stops,
            max_tokens: request.max_tokens,
            min_tokens: request.min_tokens,
            ignore_eos: request.ignore_eos,
            logprobs: request.logprobs,
            output: Vec::with_capacity(request.max_tokens.min(4096)),
            text: String::new(),
            top: Vec::with_capacity(request.logprobs.unwrap_or(0) + 1),
            masked: Vec::new(),
        })
    }

    /// The cache, back for reuse.
    pub fn into_cache(self) -> KvCache {
        self.cache
    }

    /// Prompt tokens not yet run.
    pub fn prompt_left(&self) -> usize {
        self.prompt.len() - self.prefilled
    }

    /// Positions this sequence may come to hold: its prompt and every token it may
    /// generate, within the context.
    pub fn max_positions(&self) -> usize {
        (self.prompt.len() + self.max_tokens).min(self.cache.max_len())
    }

    /// The tokens to run next (at most `budget` of the prompt, or the pending token), the
    /// cache they go into, whether they are prompt tokens, and whether their last position
    /// needs logits. `None` when nothing is ready.
    pub(crate) fn next_input(&mut self, budget: usize) -> Option<NextInput<'_>> {
        if self.has_pending {
            return Some(NextInput {
                tokens: &self.pending,
                cache: &mut self.cache,
                prompt: false,
                from_prompt: false,
                wants_logits: true,
            });
        }
        let left = self.prompt_left();
        if left == 0 || budget == 0 {
            return None;
        }
        let take = left.min(budget);
        let start = self.prefilled;
        Some(NextInput {
            tokens: &self.prompt[start..start + take],
            cache: &mut self.cache,
            // llama.cpp runs a prompt of two or more tokens as a batch, one token alone.
            prompt: self.prompt.len() >= 2,
            from_prompt: true,
            wants_logits: take == left,
        })
    }

    /// Records that the input from [`Self::next_input`] has run.
    pub(crate) fn consumed(&mut self, tokens: usize) {
        if self.has_pending {
            self.has_pending = false;
        } else {
            self.prefilled += tokens;
        }
    }

    /// Takes the logits of the sequence's last position: samples the next token, reports
    /// it to `on_token`, and says whether the sequence goes on.
    pub fn on_logits(
        &mut self,
        model: &Model,
        logits: &[f32],
        on_token: &mut dyn FnMut(TokenEvent<'_>) -> ControlFlow<()>,
    ) -> Progress {
        let vocab = model.config.vocab_size;
        let mut logits = &logits[..vocab.min(logits.len())];
        let tokenizer = model.tokenizer();
        if self.output.len() < self.min_tokens && !self.ignore_eos {
            self.masked.clear();
            self.masked.extend_from_slice(logits);
            for &id in tokenizer.eog_ids() {
                if let Some(l) = self.masked.get_mut(id as usize) {
                    *l = f32::NEG_INFINITY;
                }
            }
            logits = &self.masked;
        }
        let picked = self.sampler.sample(logits, &self.history);
        let id = picked.token_id;
        let logprob = match self.logprobs {
            Some(k) => model_logprobs(logits, id, k, &mut self.top),
            None => picked.logprob,
        };
        self.output.push(id);
        self.history.push(id);
        let eog = !self.ignore_eos && tokenizer.is_eog(id);
        let mut delta = String::new();
        let mut stopped = false;
        if !eog {
            let piece = self.detok.push(tokenizer, id);
            let out = self.stops.push(&piece);
            delta = out.emit;
            stopped = out.stopped;
        }
        let at_limit =
            self.output.len() >= self.max_tokens || self.cache.len() >= self.cache.max_len();
        let finish = if eog || stopped {
            Some(FinishReason::Stop)
        } else if at_limit {
            Some(FinishReason::Length)
        } else {
            None
        };
        if finish == Some(FinishReason::Length) {
            // Nothing follows: release what was held back.
            let tail = self.detok.finish();
            let mut rest = self.stops.push(&tail);
            if !rest.stopped {
                rest.emit.push_str(&self.stops.finish());
            }
            delta.push_str(&rest.emit);
        }
        self.text.push_str(&delta);
        let event = TokenEvent {
            token_id: id,
            text: &delta,
            logprob,
            top_logprobs: &self.top,
        };
        if on_token(event).is_break() {
            return Progress::Cancelled;
        }
        match finish {
            Some(f) => Progress::Finished(f),
            None => {
                self.pending = [id];
                self.has_pending = true;
                Progress::Running
            }
        }
    }
}

/// What a sequence runs next.
#[derive(Debug)]
pub(crate) struct NextInput<'a> {
    pub tokens: &'a [u32],
    pub cache: &'a mut KvCache,
    /// Prompt tokens (llama.cpp's batch order in attention) rather than a decode step.
    pub prompt: bool,
    /// Prompt tokens (as opposed to the pending generated token).
    pub from_prompt: bool,
    pub wants_logits: bool,
}
