//! One request from prompt to finish: tokenize, prefill, then sample and decode token by
//! token, streaming text that is safe to show (complete UTF-8, no part of a stop string).
//!
//! [`Engine`] owns a model, the compute threads and one sequence's cache. It serves one
//! request at a time; the batching scheduler that serves many at once builds on the same
//! forward pass.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Instant;

use kernels::{Isa, ThreadPool};
use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};
use crate::model::{ForwardCtx, KvCache, Logits, Model, Scratch};
use crate::sampling::{Sampler, SamplingParams, StopStrings};
use crate::tokenizer::{ChatMessage, Detokenizer};

/// How the engine runs.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Compute threads (the calling thread included).
    pub threads: usize,
    /// Context limit in tokens; the model's training context when `None`.
    pub max_context: Option<usize>,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            threads: default_threads(),
            max_context: None,
        }
    }
}

/// One thread per available core.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// What to generate from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Prompt {
    /// Text, tokenized as llama.cpp's completion API does: BOS where the model asks for it,
    /// special-token text (e.g. `<|im_start|>`) parsed as those tokens.
    Text(String),
    /// Chat messages, rendered with the model's chat template.
    Chat(Vec<ChatMessage>),
    /// Token ids, used as they are.
    Tokens(Vec<u32>),
}

/// A generation request.
#[derive(Debug, Clone)]
pub struct GenerateRequest {
    pub prompt: Prompt,
    /// The most tokens to generate (at least 1).
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    /// Text that ends generation; not included in the output.
    pub stop: Vec<String>,
    /// Keep going past end-of-generation tokens (benchmarks).
    pub ignore_eos: bool,
    /// Report each token's log-probability under the model (the log-softmax of the raw
    /// logits) and this many most likely alternatives; `None` reports the sampler's.
    pub logprobs: Option<usize>,
}

/// Why generation ended, in OpenAI's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FinishReason {
    /// An end-of-generation token or a stop string.
    Stop,
    /// `max_tokens` or the context limit.
    Length,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

/// One generated token, as it is streamed.
#[derive(Debug, Clone, Copy)]
pub struct TokenEvent<'a> {
    pub token_id: u32,
    /// Text that became safe to show with this token (may be empty).
    pub text: &'a str,
    /// The token's log-probability: under the model when the request asked for
    /// `logprobs`, else in the distribution it was sampled from.
    pub logprob: f32,
    /// With `logprobs`, the most likely tokens and their log-probabilities, best first.
    pub top_logprobs: &'a [(u32, f32)],
}

/// The result of a request.
#[derive(Debug, Clone, Serialize)]
pub struct GenerateOutput {
    pub prompt_token_ids: Vec<u32>,
    pub output_token_ids: Vec<u32>,
    pub text: String,
    pub finish_reason: FinishReason,
    /// Wall time of the prompt's forward pass.
    pub prefill_ms: f64,
    /// Wall time of everything after it.
    pub decode_ms: f64,
}

/// A model with its threads and one sequence's state.
#[derive(Debug)]
pub struct Engine {
    /// Shared with whoever tokenizes and checks requests for this engine.
    model: Arc<Model>,
    pool: ThreadPool,
    isa: Isa,
    cache: KvCache,
    scratch: Scratch,
}

impl Engine {
    pub fn new(model: impl Into<Arc<Model>>, options: &EngineOptions) -> Result<Engine> {
        let model = model.into();
        let n_ctx = options.max_context.unwrap_or(model.config.n_ctx_train);
        if n_ctx == 0 {
            return Err(EngineError::InvalidRequest(
                "the context limit must be at least 1 token".into(),
            ));
        }
        let cache = model.new_cache(n_ctx);
        Ok(Engine {
            model,
            pool: ThreadPool::new(options.threads),
            isa: Isa::active(),
            cache,
            scratch: Scratch::default(),
        })
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    /// Compute threads in use.
    pub fn threads(&self) -> usize {
        self.pool.threads()
    }

    /// The instruction set the kernels run on.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// The context limit in tokens.
    pub fn context_len(&self) -> usize {
        self.cache.max_len()
    }

    /// The token ids of `prompt`.
    pub fn tokenize(&self, prompt: &Prompt) -> Result<Vec<u32>> {
        tokenize(&self.model, prompt)
    }

    /// Forgets the current sequence.
    pub fn reset(&mut self) {
        self.cache.clear();
    }

    /// Appends `tokens` to the current sequence and returns the logits asked for
    /// (`rows x vocab`, row-major).
    pub fn forward(&mut self, tokens: &[u32], logits: Logits) -> Result<&[f32]> {
        let mut ctx = ForwardCtx {
            pool: &self.pool,
            isa: self.isa,
            cache: &mut self.cache,
            scratch: &mut self.scratch,
        };
        self.model.forward(&mut ctx, tokens, logits)?;
        Ok(&self.scratch.logits)
    }

    /// Runs `request` from a fresh sequence, calling `on_token` for every generated token;
    /// `on_token` returning `Break` stops generation (the client went away).
    pub fn generate(
        &mut self,
        request: &GenerateRequest,
        on_token: &mut dyn FnMut(TokenEvent<'_>) -> ControlFlow<()>,
    ) -> Result<GenerateOutput> {
        let sampling = request.sampling.validate()?;
        let mut stops = StopStrings::new(request.stop.clone())?;
        if request.max_tokens == 0 {
            return Err(EngineError::InvalidRequest(
                "`max_tokens` must be at least 1, got 0".into(),
            ));
        }
        let prompt_ids = self.tokenize(&request.prompt)?;
        if prompt_ids.is_empty() {
            return Err(EngineError::InvalidRequest("the prompt is empty".into()));
        }
        let n_ctx = self.cache.max_len();
        if prompt_ids.len() > n_ctx {
            return Err(EngineError::InvalidRequest(format!(
                "the prompt is {} tokens, but the context holds {n_ctx}",
                prompt_ids.len()
            )));
        }
        let vocab = self.model.config.vocab_size;
        if let Some(bad) = prompt_ids.iter().find(|t| **t as usize >= vocab) {
            return Err(EngineError::InvalidRequest(format!(
                "prompt token id {bad} is outside the vocabulary (size {vocab})"
            )));
        }

        let started = Instant::now();
        self.cache.clear();
        let mut sampler = Sampler::new(sampling);
        let mut history = prompt_ids.clone();
        let mut detok = Detokenizer::new();
        let mut text = String::new();
        let mut output = Vec::with_capacity(request.max_tokens.min(4096));
        let mut top = Vec::with_capacity(request.logprobs.unwrap_or(0) + 1);
        self.forward(&prompt_ids, Logits::Last)?;
        let prefill_ms = started.elapsed().as_secs_f64() * 1e3;
        let finish = loop {
            let picked = sampler.sample(&self.scratch.logits[..vocab], &history);
            let id = picked.token_id;
            let logprob = match request.logprobs {
                Some(k) => model_logprobs(&self.scratch.logits[..vocab], id, k, &mut top),
                None => picked.logprob,
            };
            output.push(id);
            history.push(id);
            let eog = !request.ignore_eos && self.model.tokenizer().is_eog(id);
            let mut delta = String::new();
            let mut stopped = false;
            if !eog {
                let piece = detok.push(self.model.tokenizer(), id);
                let out = stops.push(&piece);
                delta = out.emit;
                stopped = out.stopped;
            }
            let at_limit = output.len() >= request.max_tokens || self.cache.len() >= n_ctx;
            let finish = if eog || stopped {
                Some(FinishReason::Stop)
            } else if at_limit {
                Some(FinishReason::Length)
            } else {
                None
            };
            if finish == Some(FinishReason::Length) {
                // Nothing follows: release what was held back.
                let tail = detok.finish();
                let mut rest = stops.push(&tail);
                if !rest.stopped {
                    rest.emit.push_str(&stops.finish());
                }
                delta.push_str(&rest.emit);
            }
            text.push_str(&delta);
            let event = TokenEvent {
                token_id: id,
                text: &delta,
                logprob,
                top_logprobs: &top,
            };
            if on_token(event).is_break() {
                break FinishReason::Stop;
            }
            if let Some(f) = finish {
                break f;
            }
            self.forward(&[id], Logits::Last)?;
        };
        let decode_ms = started.elapsed().as_secs_f64() * 1e3 - prefill_ms;
        Ok(GenerateOutput {
            prompt_token_ids: prompt_ids,
            output_token_ids: output,
            text,
            finish_reason: finish,
            prefill_ms,
            decode_ms,
        })
    }
}

/// The token ids of `prompt` for `model`: text as llama.cpp's completion API tokenizes it,
/// chat messages through the model's template.
pub fn tokenize(model: &Model, prompt: &Prompt) -> Result<Vec<u32>> {
    let tok = model.tokenizer();
    match prompt {
        Prompt::Text(text) => Ok(tok.encode_prompt(text, true)?),
        Prompt::Chat(messages) => {
            let text = tok.render_chat(messages, true)?;
            // A template that writes the BOS text itself must not get a second BOS.
            let bos_text = tok.bos_id().and_then(|id| tok.token_text(id));
            match bos_text {
                Some(b) if tok.add_bos() && text.starts_with(b) => Ok(tok.encode(&text, true)?),
                _ => Ok(tok.encode_prompt(&text, true)?),
            }
        }
        Prompt::Tokens(ids) => Ok(ids.clone()),
    }
}

/// The log-softmax of `logits` at `id`, with the `k` most likely tokens (best first, ties
/// to the lower id) written to `top`.
pub fn model_logprobs(logits: &[f32], id: u32, k: usize, top: &mut Vec<(u32, f32)>) -> f32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits
        .iter()
        .map(|&l| f64::from(l - max).exp())
        .sum::<f64>();
    let log_z = f64::from(max) + sum.ln();
    let lp = |l: f32| (f64::from(l) - log_z) as f32;
    top.clear();
    if k > 0 {
        for (i, &l) in logits.iter().enumerate() {
            if top.len() == k && top.last().is_some_and(|&(_, worst)| l <= worst) {
                continue;
            }
            let at = top.partition_point(|&(_, v)| v >= l);
            top.insert(at, (i as u32, l));
            top.truncate(k);
        }
        for entry in top.iter_mut() {
            entry.1 = lp(entry.1);
        }
    }
    logits
        .get(id as usize)
        .map_or(f32::NEG_INFINITY, |&l| lp(l))
}

#[cfg(test)]
mod tests {
    use super::model_logprobs;

    #[test]
    fn model_logprobs_are_a_log_softmax_with_ordered_alternatives() {
        let logits = [1.0f32, 3.0, 2.0, 3.0, -1.0];
        let mut top = Vec::new();
        let lp = model_logprobs(&logits, 2, 3, &mut top);
        let z: f64 = logits.iter().map(|&l| f64::from(l).exp()).sum();
        assert!((f64::from(lp) - (2.0 - z.ln())).abs() < 1e-6);
        let ids: Vec<u32> = top.iter().map(|t| t.0).collect();
        assert_eq!(ids, [1, 3, 2]);
        assert!((f64::from(top[0].1) - (3.0 - z.ln())).abs() < 1e-6);
        model_logprobs(&logits, 0, 0, &mut top);
        assert!(top.is_empty());
    }
}
