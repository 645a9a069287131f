//! One request from prompt to finish: tokenize, prefill, then sample and decode token by
//! token, streaming text that is safe to show (complete UTF-8, no part of a stop string).
//!
//! [`Engine`] owns a model, the compute threads and one sequence's cache. It serves one
//! request at a time; the batching scheduler that serves many at once builds on the same
//! forward pass.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Instant;

use kernels::Isa;
use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};
use crate::model::{BatchSeq, Exec, KvBudget, KvPool, Logits, Model, SeqKv, blocks_for};
use crate::sampling::SamplingParams;
use crate::scheduler::{Progress, Sequence};
use crate::tokenizer::ChatMessage;

/// How the engine runs.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Compute threads (the calling thread included).
    pub threads: usize,
    /// Context limit in tokens; the model's training context when `None`.
    pub max_context: Option<usize>,
    /// Where the model runs.
    pub device: crate::device::DeviceSpec,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            threads: default_threads(),
            max_context: None,
            device: crate::device::DeviceSpec::Cpu,
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
    /// Chat messages and the tools the template renders itself (a list of `{"type":
    /// "function", "function": {...}}`).
    ChatWithTools {
        messages: Vec<ChatMessage>,
        tools: serde_json::Value,
    },
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
    /// End-of-generation tokens cannot be sampled before this many tokens (vLLM's
    /// `min_tokens`).
    pub min_tokens: usize,
    /// Report each token's log-probability under the model (the log-softmax of the raw
    /// logits) and this many most likely alternatives; `None` reports the sampler's.
    pub logprobs: Option<usize>,
    /// What the output must match (structured output), checked and compiled before the
    /// request is queued: [`crate::Model::grammars`].
    pub constraint: Option<crate::grammar::Constraint>,
    /// Prompt-lookup speculative decoding: draft tokens verified per step at most (0: off;
    /// at most [`crate::scheduler::lookup::MAX_DRAFT`]). The output is the same with it.
    pub prompt_lookup: usize,
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
    /// The model's state on its device.
    exec: Exec,
    /// Blocks for one sequence of the full context.
    kv: KvPool,
    /// The sequence of [`Engine::forward`].
    seq: SeqKv,
    n_ctx: usize,
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
        let exec = Exec::new(
            &model,
            &options.device,
            options.threads,
            KvBudget::Blocks(blocks_for(n_ctx)),
            n_ctx,
        )?;
        let kv = exec.kv_pool(&model);
        Ok(Engine {
            model,
            exec,
            kv,
            seq: SeqKv::new(n_ctx),
            n_ctx,
        })
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    /// Compute threads in use.
    pub fn threads(&self) -> usize {
        self.exec.threads()
    }

    /// The CPU instruction set the kernels run on (none on a GPU).
    pub fn isa(&self) -> Option<Isa> {
        self.exec.isa()
    }

    /// `cpu` or `cuda:N`.
    pub fn device_name(&self) -> String {
        self.exec.device_name()
    }

    /// The context limit in tokens.
    pub fn context_len(&self) -> usize {
        self.n_ctx
    }

    /// The token ids of `prompt`.
    pub fn tokenize(&self, prompt: &Prompt) -> Result<Vec<u32>> {
        tokenize(&self.model, prompt)
    }

    /// Forgets the current sequence.
    pub fn reset(&mut self) {
        self.kv.release(&mut self.seq);
    }

    /// Appends `tokens` to the current sequence and returns the logits asked for
    /// (`rows x vocab`, row-major).
    pub fn forward(&mut self, tokens: &[u32], logits: Logits) -> Result<&[f32]> {
        let mut batch = [BatchSeq {
            kv: &mut self.seq,
            tokens,
            batched_order: tokens.len() >= 2,
            logits,
        }];
        self.exec
            .forward_batch(&self.model, &mut self.kv, &mut batch, None)?;
        Ok(self.exec.logits())
    }

    /// Runs `request` from a fresh sequence, calling `on_token` for every generated token;
    /// `on_token` returning `Break` stops generation (the client went away).
    pub fn generate(
        &mut self,
        request: &GenerateRequest,
        on_token: &mut dyn FnMut(TokenEvent<'_>) -> ControlFlow<()>,
    ) -> Result<GenerateOutput> {
        self.reset();
        let mut seq = Sequence::new(&self.model, request, self.n_ctx)?;
        let result = self.run_sequence(&mut seq, on_token);
        let prompt_token_ids = std::mem::take(&mut seq.prompt);
        let output_token_ids = std::mem::take(&mut seq.output);
        let text = std::mem::take(&mut seq.text);
        seq.release(&mut self.kv);
        let (finish_reason, prefill_ms, decode_ms) = result?;
        Ok(GenerateOutput {
            prompt_token_ids,
            output_token_ids,
            text,
            finish_reason,
            prefill_ms,
            decode_ms,
        })
    }

    /// Steps one sequence to its end: (finish reason, prefill ms, decode ms).
    fn run_sequence(
        &mut self,
        seq: &mut Sequence,
        on_token: &mut dyn FnMut(TokenEvent<'_>) -> ControlFlow<()>,
    ) -> Result<(FinishReason, f64, f64)> {
        let started = Instant::now();
        let mut prefill_ms = None;
        loop {
            let Some(input) = seq.next_input(usize::MAX) else {
                return Err(EngineError::InvalidRequest(
                    "sequence has nothing to run".into(),
                ));
            };
            let mut batch = [BatchSeq {
                kv: input.kv,
                tokens: input.tokens,
                batched_order: input.batched_order,
                logits: Logits::Last,
            }];
            self.exec
                .forward_batch(&self.model, &mut self.kv, &mut batch, None)?;
            let prefill = *prefill_ms.get_or_insert_with(|| started.elapsed().as_secs_f64() * 1e3);
            let done = |f| {
                let decode_ms = started.elapsed().as_secs_f64() * 1e3 - prefill;
                Ok((f, prefill, decode_ms))
            };
            match seq.on_logits(&self.model, self.exec.logits(), on_token) {
                Progress::Running => {}
                Progress::Finished(f) => return done(f),
                // The consumer left: what it received ends like a stop.
                Progress::Cancelled => return done(FinishReason::Stop),
            }
        }
    }
}

/// The token ids of `prompt` for `model`: text as llama.cpp's completion API tokenizes it,
/// chat messages through the model's template.
pub fn tokenize(model: &Model, prompt: &Prompt) -> Result<Vec<u32>> {
    if let Prompt::Tokens(ids) = prompt {
        return Ok(ids.clone());
    }
    let tok = model.tokenizer()?;
    let text = match prompt {
        Prompt::Text(text) => return Ok(tok.encode_prompt(text, true)?),
        Prompt::Tokens(ids) => return Ok(ids.clone()),
        Prompt::Chat(messages) => tok.render_chat(messages, true)?,
        Prompt::ChatWithTools { messages, tools } => {
            tok.render_chat_with_tools(messages, Some(tools), true)?
        }
    };
    // A template that writes the BOS text itself must not get a second BOS.
    let bos_text = tok.bos_id().and_then(|id| tok.token_text(id));
    match bos_text {
        Some(b) if tok.add_bos() && text.starts_with(b) => Ok(tok.encode(&text, true)?),
        _ => Ok(tok.encode_prompt(&text, true)?),
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
