//! OpenAI's wire format: the request bodies as clients send them and the responses and
//! stream chunks exactly as OpenAI returns them.
//!
//! The two request types repeat their shared fields rather than `#[serde(flatten)]` them:
//! flattening would lose the field path that a type error reports (`param`).
//!
//! Requests deserialise leniently (unknown fields are ignored, as OpenAI does; numbers are
//! taken wide so a bad value is reported with its bound rather than as a type error) and
//! are checked into engine requests by [`super::validate`].

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// `POST /v1/chat/completions`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ChatCompletionRequest {
    /// A model id from `GET /v1/models`.
    pub model: String,
    /// The conversation so far: `system`, `developer`, `user` and `assistant` messages.
    pub messages: Vec<ChatMessageIn>,
    /// The most tokens to generate [default: what the context leaves].
    pub max_tokens: Option<i64>,
    /// Newer name for `max_tokens`; wins when both are given.
    pub max_completion_tokens: Option<i64>,
    /// 0..=2; 0 is greedy [default 1].
    pub temperature: Option<f64>,
    /// (0, 1] [default 1].
    pub top_p: Option<f64>,
    /// Keep the k most likely tokens; 0 or -1 = off.
    pub top_k: Option<i64>,
    /// 0..=1 [default 0].
    pub min_p: Option<f64>,
    /// -2..=2 [default 0].
    pub presence_penalty: Option<f64>,
    /// -2..=2 [default 0].
    pub frequency_penalty: Option<f64>,
    /// (0, 10] [default 1 = off] (vLLM's extension; llama.cpp's `repeat_penalty` too).
    #[serde(alias = "repeat_penalty")]
    pub repetition_penalty: Option<f64>,
    /// Keep generating past end-of-generation tokens (vLLM's extension, for benchmarks).
    pub ignore_eos: Option<bool>,
    /// End-of-generation tokens are not sampled before this many tokens (vLLM's extension).
    pub min_tokens: Option<i64>,
    /// Same seed, same output.
    pub seed: Option<i64>,
    /// Up to 4 strings that end the output (not included).
    #[schema(value_type = Object)]
    pub stop: Option<Value>,
    /// Return the log-probability of each output token.
    pub logprobs: Option<bool>,
    /// With `logprobs`, also the most likely alternatives at each position (0..=20).
    pub top_logprobs: Option<i64>,
    /// Choices to generate per prompt (1..=16).
    pub n: Option<i64>,
    /// Stream the output as server-sent events.
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    /// The end user or team the request is for (fairness, metering).
    pub user: Option<String>,
}

/// `POST /v1/completions`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CompletionRequest {
    pub model: String,
    /// A string, a list of strings, a list of token ids, or a list of lists of token ids.
    #[schema(value_type = Object)]
    pub prompt: Value,
    /// The most tokens to generate [default: 16, as OpenAI].
    pub max_tokens: Option<i64>,
    /// 0..=2; 0 is greedy [default 1].
    pub temperature: Option<f64>,
    /// (0, 1] [default 1].
    pub top_p: Option<f64>,
    /// Keep the k most likely tokens; 0 or -1 = off.
    pub top_k: Option<i64>,
    /// 0..=1 [default 0].
    pub min_p: Option<f64>,
    /// -2..=2 [default 0].
    pub presence_penalty: Option<f64>,
    /// -2..=2 [default 0].
    pub frequency_penalty: Option<f64>,
    /// (0, 10] [default 1 = off] (vLLM's extension; llama.cpp's `repeat_penalty` too).
    #[serde(alias = "repeat_penalty")]
    pub repetition_penalty: Option<f64>,
    /// Keep generating past end-of-generation tokens (vLLM's extension, for benchmarks).
    pub ignore_eos: Option<bool>,
    /// End-of-generation tokens are not sampled before this many tokens (vLLM's extension).
    pub min_tokens: Option<i64>,
    /// Same seed, same output.
    pub seed: Option<i64>,
    /// Up to 4 strings that end the output (not included).
    #[schema(value_type = Object)]
    pub stop: Option<Value>,
    /// Return log-probabilities of the output tokens and this many alternatives (0..=5).
    pub logprobs: Option<i64>,
    /// Prepend the prompt to the completion text.
    pub echo: Option<bool>,
    /// Text after the completion (insertion); not supported, must be absent or empty.
    pub suffix: Option<String>,
    /// Choices to generate per prompt (1..=16).
    pub n: Option<i64>,
    /// Stream the output as server-sent events.
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    /// The end user or team the request is for (fairness, metering).
    pub user: Option<String>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct StreamOptions {
    /// Send a last chunk with the token usage.
    pub include_usage: Option<bool>,
}

/// One input message. `content` is a string or a list of `{"type": "text", "text"}` parts.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ChatMessageIn {
    pub role: String,
    #[schema(value_type = Object)]
    pub content: Option<Value>,
    pub name: Option<String>,
}

/// Tokens counted for a request.
#[derive(Debug, Clone, Copy, Default, Serialize, ToSchema)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
}

/// `chat.completion`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChatCompletion {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub system_fingerprint: String,
    pub choices: Vec<ChatChoice>,
    pub usage: Usage,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChatChoice {
    pub index: usize,
    pub message: ChatMessageOut,
    pub logprobs: Option<ChatLogprobs>,
    pub finish_reason: &'static str,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChatMessageOut {
    pub role: &'static str,
    pub content: String,
    pub refusal: Option<String>,
}

/// Log-probabilities of a chat choice's tokens.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct ChatLogprobs {
    pub content: Vec<TokenLogprob>,
    pub refusal: Option<Vec<TokenLogprob>>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TokenLogprob {
    pub token: String,
    pub logprob: f32,
    pub bytes: Vec<u8>,
    pub top_logprobs: Vec<TopLogprob>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TopLogprob {
    pub token: String,
    pub logprob: f32,
    pub bytes: Vec<u8>,
}

/// `chat.completion.chunk`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChatCompletionChunk {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub system_fingerprint: String,
    pub choices: Vec<ChatChunkChoice>,
    /// Present (null until the last chunk) only with `stream_options.include_usage`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Usage>)]
    pub usage: Option<Option<Usage>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChatChunkChoice {
    pub index: usize,
    pub delta: ChatDelta,
    pub logprobs: Option<ChatLogprobs>,
    pub finish_reason: Option<&'static str>,
}

#[derive(Debug, Default, Serialize, ToSchema)]
pub struct ChatDelta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

/// `text_completion`, whole or as one stream chunk.
#[derive(Debug, Serialize, ToSchema)]
pub struct Completion {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub system_fingerprint: String,
    pub choices: Vec<CompletionChoice>,
    /// Always present on a whole response; on stream chunks as for chat.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Usage>)]
    pub usage: Option<Option<Usage>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CompletionChoice {
    pub text: String,
    pub index: usize,
    pub logprobs: Option<CompletionLogprobs>,
    pub finish_reason: Option<&'static str>,
}

/// The legacy completions log-probability layout.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct CompletionLogprobs {
    pub tokens: Vec<String>,
    pub token_logprobs: Vec<f32>,
    #[schema(value_type = Vec<Object>)]
    pub top_logprobs: Vec<serde_json::Map<String, Value>>,
    pub text_offset: Vec<usize>,
}

/// `GET /v1/models`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelList {
    pub object: &'static str,
    pub data: Vec<ModelCard>,
}

/// One served model, with Oasis's catalog fields after OpenAI's four.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ModelCard {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub owned_by: &'static str,
    /// `gguf`.
    pub format: String,
    pub architecture: String,
    /// Number of weights.
    pub parameters: u64,
    pub context_length: usize,
    /// `sha256:<hex>` of the model file.
    pub digest: String,
    pub size_bytes: u64,
}
