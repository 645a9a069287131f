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
use crate::model::{BLOCK_POSITIONS, KvPool, Model, SeqKv, chain_hash};
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
///
/// The model is fed from `history` (prompt, then generated tokens): whatever part of it is
/// not yet in the cache runs next. A fresh sequence runs its prompt (in chunks, if the
/// step's budget says so), a generating one its last sampled token, and one that was
/// preempted (its blocks taken back) recomputes everything it had.
#[derive(Debug)]
pub struct Sequence {
    /// The prompt's token ids.
    pub prompt: Vec<u32>,
    /// Prompt then generated tokens: what the penalties look at and what the model runs.
    history: Vec<u32>,
    /// The sequence's blocks in the pool.
    pub(crate) kv: SeqKv,
    /// Prefix hashes of the prompt's shareable blocks: full blocks that end before the
    /// last prompt token (which must run to give the first logits).
    block_hashes: Vec<u64>,
    /// Of those, how many are registered in (or were taken from) the pool.
    registered: usize,
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
    /// The grammar the output must match, and its scratch of masked logits.
    constraint: Option<crate::grammar::Constraint>,
    constrained: Vec<f32>,
    /// Prompt-lookup speculation ([`crate::scheduler::lookup`]): the most draft tokens a
    /// step may verify (0: off), the draft length now (it adapts to what is accepted),
    /// this step's draft, and the tokens the model runs to verify it.
    lookup_max: usize,
    lookup_len: usize,
    draft: Vec<u32>,
    verify: Vec<u32>,
}

impl Sequence {
    /// Checks `request` against `model` and a context of `n_ctx` positions and sets the
    /// sequence up (holding no blocks yet).
    pub fn new(model: &Model, request: &GenerateRequest, n_ctx: usize) -> Result<Sequence> {
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
        let shareable = (prompt.len() - 1) / BLOCK_POSITIONS;
        let mut block_hashes = Vec::with_capacity(shareable);
        let mut h = 0u64;
        for block in prompt.chunks_exact(BLOCK_POSITIONS).take(shareable) {
            h = chain_hash(h, block);
            block_hashes.push(h);
        }
        Ok(Sequence {
            history: prompt.clone(),
            prompt,
            kv: SeqKv::new(n_ctx),
            block_hashes,
            registered: 0,
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
            constraint: request.constraint.clone(),
            constrained: Vec::new(),
            lookup_max: request.prompt_lookup.min(super::lookup::MAX_DRAFT),
            lookup_len: request.prompt_lookup.min(super::lookup::MAX_DRAFT),
            draft: Vec::new(),
            verify: Vec::new(),
        })
    }

    /// History tokens not yet in the cache.
    pub fn uncomputed(&self) -> usize {
        self.history.len() - self.kv.len()
    }

    /// Tokens the next step would run: what is not yet in the cache, and the draft.
    pub fn wants(&self) -> usize {
        self.uncomputed() + self.draft.len()
    }

    /// Proposes this step's draft by prompt lookup: for a sequence generating without a
    /// grammar, the tokens that followed the latest earlier occurrence of its last few
    /// tokens, as many as the adaptive length, the `max_tokens` left after the next token
    /// and the context allow.
    pub(crate) fn propose_draft(&mut self) {
        self.draft.clear();
        if self.lookup_len == 0
            || self.uncomputed() != 1
            || self.output.is_empty()
            || self.constraint.is_some()
        {
            return;
        }
        let left = self.max_tokens.saturating_sub(self.output.len() + 1);
        let room = self.kv.max_len().saturating_sub(self.kv.len() + 1);
        let n = self.lookup_len.min(left).min(room);
        super::lookup::draft(&self.history, n, &mut self.draft);
    }

    /// Blocks the next `tokens` tokens need beyond those held.
    pub fn blocks_needed(&self, tokens: usize) -> usize {
        crate::model::blocks_for(self.kv.len() + tokens).saturating_sub(self.kv.table().len())
    }

    /// Takes what the pool has cached of this prompt's prefix (a fresh or preempted
    /// sequence holding no blocks).
    pub(crate) fn attach_prefix(&mut self, pool: &mut KvPool) {
        if !self.kv.table().is_empty() {
            return;
        }
        let mut n = 0;
        for &h in &self.block_hashes {
            if !pool.attach_cached(&mut self.kv, h) {
                break;
            }
            n += 1;
        }
        self.registered = n;
    }

    /// Registers the prompt blocks filled since the last call, for other sequences.
    pub(crate) fn register_prefix(&mut self, pool: &mut KvPool) {
        while self.registered < self.block_hashes.len()
            && self.kv.len() >= (self.registered + 1) * BLOCK_POSITIONS
        {
            pool.register(
                &self.kv,
                self.registered,
                self.block_hashes[self.registered],
            );
            self.registered += 1;
        }
    }

    /// Gives the sequence's blocks back (finish, cancel, preemption); a preempted
    /// sequence recomputes its history when it runs again.
    pub(crate) fn release(&mut self, pool: &mut KvPool) {
        pool.release(&mut self.kv);
        self.registered = 0;
    }

    /// The tokens to run next (at most `budget`), the blocks they go into, the attention
    /// order they take, and whether their last position needs logits. `None` when
    /// nothing is ready.
    pub(crate) fn next_input(&mut self, budget: usize) -> Option<NextInput<'_>> {
        self.draft.truncate(budget.saturating_sub(1));
        if !self.draft.is_empty() && self.uncomputed() == 1 {
            // The last token and the draft, each row in the single-token order a decode
            // step would use: every row's logits are those decoding would have given.
            self.verify.clear();
            self.verify.extend(self.history.last());
            self.verify.extend_from_slice(&self.draft);
            return Some(NextInput {
                tokens: &self.verify,
                kv: &mut self.kv,
                batched_order: false,
                from_prompt: false,
                wants_logits: true,
                draft: self.draft.len(),
            });
        }
        self.draft.clear();
        let start = self.kv.len();
        let end = self.history.len().min(start.saturating_add(budget));
        if end <= start {
            return None;
        }
        let prompt_len = self.prompt.len();
        // llama.cpp runs a prompt of two or more tokens as a batch, a lone token (a
        // one-token prompt, or a decode step) with its single-token order.
        let batched_order = end - start > 1 || (start < prompt_len && prompt_len >= 2);
        Some(NextInput {
            tokens: &self.history[start..end],
            kv: &mut self.kv,
            batched_order,
            from_prompt: start < prompt_len,
            wants_logits: end == self.history.len(),
            draft: 0,
        })
    }

    /// The grammar constraint whose next mask is not computed yet, taken out to be
    /// prepared beside the forward pass (put back with [`Sequence::put_constraint`]).
    pub(crate) fn take_unprepared_constraint(&mut self) -> Option<crate::grammar::Constraint> {
        if self.constraint.as_ref().is_some_and(|c| !c.is_prepared()) {
            self.constraint.take()
        } else {
            None
        }
    }

    pub(crate) fn put_constraint(&mut self, c: crate::grammar::Constraint) {
        self.constraint = Some(c);
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
        if self.output.len() < self.min_tokens && !self.ignore_eos {
            self.masked.clear();
            self.masked.extend_from_slice(logits);
            for &id in model.eog_ids() {
                if let Some(l) = self.masked.get_mut(id as usize) {
                    *l = f32::NEG_INFINITY;
                }
            }
            logits = &self.masked;
        }
        if let Some(c) = &mut self.constraint {
            if c.mask(logits, &mut self.constrained).is_err() {
                // Cannot happen with tokens the mask allowed; end the output cleanly.
                self.constrained.clear();
                self.constrained.resize(logits.len(), f32::NEG_INFINITY);
                for &id in model.eog_ids() {
                    if let Some(l) = self.constrained.get_mut(id as usize) {
                        *l = 0.0;
                    }
                }
            }
            logits = &self.constrained;
        }
        let picked = self.sampler.sample(logits, &self.history);
        let id = picked.token_id;
        // The grammar follows the token; nothing more can follow a complete output.
        let complete = match &mut self.constraint {
            Some(c) => c.consume(id).is_err() || c.is_done(),
            None => false,
        };
        let logprob = match self.logprobs {
            Some(k) => model_logprobs(logits, id, k, &mut self.top),
            None => picked.logprob,
        };
        self.output.push(id);
        self.history.push(id);
        let eog = !self.ignore_eos && model.is_eog(id);
        let mut delta = String::new();
        let mut stopped = false;
        // A model without a tokenizer gives token ids only: its text stays empty.
        if !eog && let Some(tokenizer) = model.tokenizer_opt() {
            let piece = self.detok.push(tokenizer, id);
            let out = self.stops.push(&piece);
            delta = out.emit;
            stopped = out.stopped;
        }
        let at_limit = self.output.len() >= self.max_tokens || self.kv.len() >= self.kv.max_len();
        let finish = if eog || stopped {
            Some(FinishReason::Stop)
        } else if at_limit {
            Some(FinishReason::Length)
        } else if complete {
            Some(FinishReason::Stop)
        } else {
            None
        };
        let grammar_end = complete && !eog && !stopped && !at_limit;
        if finish == Some(FinishReason::Length) || grammar_end {
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
            None => Progress::Running,
        }
    }

    /// Takes the logits of a verified draft (`1 + draft` rows, of the last token and of
    /// each draft token): samples from each row in turn exactly as decoding would, and
    /// keeps a draft token's cache position while the token sampled before it equals it.
    /// Returns the progress and the tokens generated (1 to `1 + draft`).
    pub fn on_verified(
        &mut self,
        model: &Model,
        logits: &[f32],
        on_token: &mut dyn FnMut(TokenEvent<'_>) -> ControlFlow<()>,
    ) -> (Progress, usize) {
        let vocab = model.config.vocab_size;
        let draft = std::mem::take(&mut self.draft);
        // The cache holds the last token and every draft token; keep the last token's.
        self.kv.truncate(self.kv.len().saturating_sub(draft.len()));
        let mut generated = 0;
        let mut progress = Progress::Running;
        for (i, row) in logits.chunks_exact(vocab).take(draft.len() + 1).enumerate() {
            progress = self.on_logits(model, row, on_token);
            generated += 1;
            if progress != Progress::Running {
                break;
            }
            match draft.get(i) {
                Some(&d) if self.history.last() == Some(&d) => self.kv.advance(1),
                _ => break,
            }
        }
        // Longer drafts while they are taken whole, shorter when they are not.
        let accepted = generated - 1;
        self.lookup_len = if accepted == draft.len() {
            (self.lookup_len + 2).min(self.lookup_max)
        } else {
            self.lookup_len.saturating_sub(1).max(1)
        };
        self.draft = draft;
        self.draft.clear();
        (progress, generated)
    }
}

/// What a sequence runs next.
#[derive(Debug)]
pub(crate) struct NextInput<'a> {
    pub tokens: &'a [u32],
    pub kv: &'a mut SeqKv,
    /// llama.cpp's batch order in attention rather than its single-token order.
    pub batched_order: bool,
    /// Starts inside the prompt (for the prompt-token counters).
    pub from_prompt: bool,
    pub wants_logits: bool,
    /// Draft tokens after the first token, each wanting its logits.
    pub draft: usize,
}
