//! OpenAI's wire format: the request bodies as clients send them and the responses and
//! stream chunks exactly as OpenAI returns them.
//!
//! The two request types repeat their shared fields rather than `#[serde(flatten)]` them:
//! flattening would lose the field path that a type error reports (`param`).
//!
//! Requests deserialise leniently (unknown fields are ignored, as OpenAI does; numbers are
//! taken wide so a bad value is reported with its bound rather than as a type error) and
//! are checked into engine requests by the daemon (`server::validate`).

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// Prompts one completions request may carry.
pub const MAX_PROMPTS: usize = 64;
/// Most texts in one embeddings request (OpenAI's limit).
pub const MAX_INPUTS: usize = 2048;
/// Stop sequences one request may carry (the engine's `sampling::MAX_STOPS`; a daemon
/// test holds them equal).
pub const MAX_STOPS: usize = 4;

/// `POST /v1/chat/completions`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ChatCompletionRequest {
    /// A model id from `GET /v1/models`.
    pub model: String,
    /// The conversation so far: `system`, `developer`, `user` and `assistant` messages.
    #[schema(min_items = 1)]
    pub messages: Vec<ChatMessageIn>,
    /// The most tokens to generate, at most the model's context [default: what the
    /// context leaves].
    #[schema(minimum = 1, maximum = 2147483647)]
    pub max_tokens: Option<i64>,
    /// Newer name for `max_tokens`; wins when both are given.
    #[schema(minimum = 1, maximum = 2147483647)]
    pub max_completion_tokens: Option<i64>,
    /// 0 is greedy [default 1].
    #[schema(minimum = 0, maximum = 2)]
    pub temperature: Option<f64>,
    /// Nucleus sampling [default 1].
    #[schema(exclusive_minimum = 0, maximum = 1)]
    pub top_p: Option<f64>,
    /// Keep the k most likely tokens; 0 or -1 = off.
    #[schema(minimum = -1, maximum = 2147483647)]
    pub top_k: Option<i64>,
    /// [default 0].
    #[schema(minimum = 0, maximum = 1)]
    pub min_p: Option<f64>,
    /// [default 0].
    #[schema(minimum = -2, maximum = 2)]
    pub presence_penalty: Option<f64>,
    /// [default 0].
    #[schema(minimum = -2, maximum = 2)]
    pub frequency_penalty: Option<f64>,
    /// [default 1 = off] (vLLM's extension; llama.cpp's `repeat_penalty` too).
    #[serde(alias = "repeat_penalty")]
    #[schema(exclusive_minimum = 0, maximum = 10)]
    pub repetition_penalty: Option<f64>,
    /// Keep generating past end-of-generation tokens (vLLM's extension, for benchmarks).
    pub ignore_eos: Option<bool>,
    /// End-of-generation tokens are not sampled before this many tokens (vLLM's
    /// extension); at most `max_tokens`.
    #[schema(minimum = 0, maximum = 2147483647)]
    pub min_tokens: Option<i64>,
    /// Prompt-lookup speculative decoding (an extension): each step also verifies up to
    /// this many draft tokens copied from earlier in the sequence; the output is the same
    /// as without it, faster when the answer copies from the prompt. 0: off [default:
    /// the deployment's `prompt_lookup`, else 0].
    #[schema(minimum = 0, maximum = 16)]
    pub prompt_lookup: Option<i64>,
    /// Same seed, same output.
    #[schema(minimum = -9223372036854775808i64, maximum = 9223372036854775807i64)]
    pub seed: Option<i64>,
    /// A string, or up to 4, that end the output (not included); each of 1 to 64
    /// characters.
    #[schema(schema_with = stop_schema)]
    pub stop: Option<Value>,
    /// Return the log-probability of each output token.
    pub logprobs: Option<bool>,
    /// With `logprobs`, also the most likely alternatives at each position.
    #[schema(minimum = 0, maximum = 20)]
    pub top_logprobs: Option<i64>,
    /// Choices to generate per prompt.
    #[schema(minimum = 1, maximum = 16)]
    pub n: Option<i64>,
    /// Stream the output as server-sent events.
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    /// The end user or team the request is for (fairness, metering).
    pub user: Option<String>,
    /// `{"type": "text"}` (the default), `{"type": "json_object"}` (any JSON object), or
    /// `{"type": "json_schema", "json_schema": {"name", "schema", "strict"}}`: the output is
    /// constrained to match (an unsupported or invalid schema is a 400 naming the problem).
    #[schema(value_type = Option<Object>)]
    pub response_format: Option<Value>,
    /// vLLM's extension: the output matches this JSON schema (an object, or its JSON text).
    #[schema(value_type = Option<Object>)]
    pub guided_json: Option<Value>,
    /// vLLM's extension: the output matches this regular expression (at most 4096 bytes).
    #[schema(max_length = 4096)]
    pub guided_regex: Option<String>,
    /// vLLM's extension: the output matches this Lark grammar (llguidance's dialect; at most
    /// 65536 bytes).
    #[schema(max_length = 65536)]
    pub guided_grammar: Option<String>,
    /// Functions the model may call (at most 128, names unique).
    #[schema(max_items = 128)]
    pub tools: Option<Vec<ToolIn>>,
    /// `none`, `auto` (the default with tools), `required` (at least one call), or
    /// `{"type": "function", "function": {"name"}}` (that function). With `required` or a
    /// named function the arguments are constrained to the function's schema.
    #[schema(schema_with = tool_choice_schema)]
    pub tool_choice: Option<Value>,
    /// Allow several calls in one answer [default true].
    pub parallel_tool_calls: Option<bool>,
}

/// A tool offered to the model.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ToolIn {
    /// `function`.
    #[serde(rename = "type")]
    #[schema(pattern = "^function$")]
    pub kind: String,
    pub function: FunctionIn,
}

/// A function's name, description and arguments' JSON schema.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct FunctionIn {
    /// 1 to 64 of `a-z A-Z 0-9 _ -`.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub name: String,
    pub description: Option<String>,
    /// The arguments' JSON schema (an object schema) [default: any object].
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<Value>,
    /// Accepted; the arguments are constrained whenever a call is forced.
    pub strict: Option<bool>,
}

/// A call an assistant message made.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ToolCallIn {
    pub id: String,
    /// `function`.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub function: FunctionCallIn,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct FunctionCallIn {
    pub name: String,
    /// The arguments as JSON text.
    pub arguments: String,
}

/// `POST /v1/completions`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CompletionRequest {
    pub model: String,
    /// A string, a list of strings, a list of token ids, or a list of lists of token ids
    /// (at most 64 prompts).
    #[schema(schema_with = prompt_schema)]
    pub prompt: Value,
    /// The most tokens to generate, at most the model's context [default: 16, as OpenAI].
    #[schema(minimum = 1, maximum = 2147483647)]
    pub max_tokens: Option<i64>,
    /// 0 is greedy [default 1].
    #[schema(minimum = 0, maximum = 2)]
    pub temperature: Option<f64>,
    /// Nucleus sampling [default 1].
    #[schema(exclusive_minimum = 0, maximum = 1)]
    pub top_p: Option<f64>,
    /// Keep the k most likely tokens; 0 or -1 = off.
    #[schema(minimum = -1, maximum = 2147483647)]
    pub top_k: Option<i64>,
    /// [default 0].
    #[schema(minimum = 0, maximum = 1)]
    pub min_p: Option<f64>,
    /// [default 0].
    #[schema(minimum = -2, maximum = 2)]
    pub presence_penalty: Option<f64>,
    /// [default 0].
    #[schema(minimum = -2, maximum = 2)]
    pub frequency_penalty: Option<f64>,
    /// [default 1 = off] (vLLM's extension; llama.cpp's `repeat_penalty` too).
    #[serde(alias = "repeat_penalty")]
    #[schema(exclusive_minimum = 0, maximum = 10)]
    pub repetition_penalty: Option<f64>,
    /// Keep generating past end-of-generation tokens (vLLM's extension, for benchmarks).
    pub ignore_eos: Option<bool>,
    /// End-of-generation tokens are not sampled before this many tokens (vLLM's
    /// extension); at most `max_tokens`.
    #[schema(minimum = 0, maximum = 2147483647)]
    pub min_tokens: Option<i64>,
    /// Prompt-lookup speculative decoding (an extension): each step also verifies up to
    /// this many draft tokens copied from earlier in the sequence; the output is the same
    /// as without it, faster when the answer copies from the prompt. 0: off [default:
    /// the deployment's `prompt_lookup`, else 0].
    #[schema(minimum = 0, maximum = 16)]
    pub prompt_lookup: Option<i64>,
    /// Same seed, same output.
    #[schema(minimum = -9223372036854775808i64, maximum = 9223372036854775807i64)]
    pub seed: Option<i64>,
    /// A string, or up to 4, that end the output (not included); each of 1 to 64
    /// characters.
    #[schema(schema_with = stop_schema)]
    pub stop: Option<Value>,
    /// Return log-probabilities of the output tokens and this many alternatives (not with
    /// `echo`).
    #[schema(minimum = 0, maximum = 5)]
    pub logprobs: Option<i64>,
    /// Prepend the prompt to the completion text.
    pub echo: Option<bool>,
    /// Text after the completion (insertion); not supported, must be absent or empty.
    #[schema(max_length = 0)]
    pub suffix: Option<String>,
    /// Choices to generate per prompt.
    #[schema(minimum = 1, maximum = 16)]
    pub n: Option<i64>,
    /// Stream the output as server-sent events.
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    /// The end user or team the request is for (fairness, metering).
    pub user: Option<String>,
    /// vLLM's extension: the output matches this JSON schema (an object, or its JSON text).
    #[schema(value_type = Option<Object>)]
    pub guided_json: Option<Value>,
    /// vLLM's extension: the output matches this regular expression (at most 4096 bytes).
    #[schema(max_length = 4096)]
    pub guided_regex: Option<String>,
    /// vLLM's extension: the output matches this Lark grammar (llguidance's dialect; at most
    /// 65536 bytes).
    #[schema(max_length = 65536)]
    pub guided_grammar: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
pub struct StreamOptions {
    /// Send a last chunk with the token usage.
    pub include_usage: Option<bool>,
}

/// One input message. `content` is a string or a list of `{"type": "text", "text"}` parts.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ChatMessageIn {
    #[schema(pattern = "^(system|developer|user|assistant|tool)$")]
    pub role: String,
    /// A string, a list of text parts, or null (empty).
    #[schema(schema_with = content_schema)]
    pub content: Option<Value>,
    pub name: Option<String>,
    /// An assistant message's calls.
    pub tool_calls: Option<Vec<ToolCallIn>>,
    /// A `tool` message: the id of the call it answers (from an earlier assistant message).
    pub tool_call_id: Option<String>,
}

/// Most characters in a stop string (at most 256 bytes of UTF-8).
pub const MAX_STOP_CHARS: usize = 64;

fn string_schema(min_length: Option<usize>, max_length: Option<usize>) -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::String)
        .min_length(min_length)
        .max_length(max_length)
        .build()
}

fn int_schema(min: i64, max: i64) -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::Integer)
        .minimum(Some(min))
        .maximum(Some(max))
        .build()
}

fn array_schema(
    item: impl Into<utoipa::openapi::Schema>,
    min: usize,
    max: Option<usize>,
) -> utoipa::openapi::Array {
    utoipa::openapi::ArrayBuilder::new()
        .items(utoipa::openapi::RefOr::T(item.into()))
        .min_items(Some(min))
        .max_items(max)
        .build()
}

fn null_schema() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::Null)
        .build()
}

/// `stop`: null, a string, or a list of at most 4 strings of 1 to 64 characters.
fn stop_schema() -> utoipa::openapi::Schema {
    let one = || string_schema(Some(1), Some(MAX_STOP_CHARS));
    utoipa::openapi::schema::OneOfBuilder::new()
        .item(null_schema())
        .item(one())
        .item(array_schema(one(), 0, Some(MAX_STOPS)))
        .build()
        .into()
}

/// `tool_choice`: `none`, `auto`, `required`, or a named function.
fn tool_choice_schema() -> utoipa::openapi::Schema {
    let named = utoipa::openapi::ObjectBuilder::new()
        .property(
            "type",
            utoipa::openapi::ObjectBuilder::new()
                .schema_type(utoipa::openapi::Type::String)
                .enum_values(Some(["function"])),
        )
        .property(
            "function",
            utoipa::openapi::ObjectBuilder::new()
                .property("name", string_schema(Some(1), Some(64)))
                .required("name"),
        )
        .required("type")
        .required("function")
        .build();
    utoipa::openapi::schema::OneOfBuilder::new()
        .item(null_schema())
        .item(
            utoipa::openapi::ObjectBuilder::new()
                .schema_type(utoipa::openapi::Type::String)
                .enum_values(Some(["none", "auto", "required"])),
        )
        .item(named)
        .build()
        .into()
}

/// A message's `content`: null, a string, or text parts.
fn content_schema() -> utoipa::openapi::Schema {
    let part = utoipa::openapi::ObjectBuilder::new()
        .property(
            "type",
            utoipa::openapi::ObjectBuilder::new()
                .schema_type(utoipa::openapi::Type::String)
                .enum_values(Some(["text"])),
        )
        .property("text", string_schema(None, None))
        .required("type")
        .required("text")
        .build();
    utoipa::openapi::schema::OneOfBuilder::new()
        .item(null_schema())
        .item(string_schema(None, None))
        .item(array_schema(part, 0, None))
        .build()
        .into()
}

/// A completions `prompt`: a non-empty string, 1 to 64 strings, token ids, or 1 to 64
/// lists of token ids.
fn prompt_schema() -> utoipa::openapi::Schema {
    let ids = || array_schema(int_schema(0, i64::from(u32::MAX)), 1, None);
    let max = Some(MAX_PROMPTS);
    utoipa::openapi::schema::OneOfBuilder::new()
        .item(string_schema(Some(1), None))
        .item(array_schema(string_schema(Some(1), None), 1, max))
        .item(ids())
        .item(array_schema(ids(), 1, max))
        .build()
        .into()
}

/// Tokens counted for a request.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, ToSchema)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
}

/// `chat.completion`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ChatCompletion {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub model: String,
    pub system_fingerprint: String,
    pub choices: Vec<ChatChoice>,
    pub usage: Usage,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ChatChoice {
    pub index: usize,
    pub message: ChatMessageOut,
    pub logprobs: Option<ChatLogprobs>,
    pub finish_reason: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ChatMessageOut {
    pub role: String,
    /// The answer's text; null when the answer is only calls.
    pub content: Option<String>,
    /// A thinking model's thinking (what it wrote in `<think>...</think>`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    pub refusal: Option<String>,
    /// The functions the model called.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCallOut>>,
}

/// One call in an answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ToolCallOut {
    /// `call_...`; the `tool` message with the result repeats it.
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub function: FunctionCallOut,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FunctionCallOut {
    pub name: String,
    /// The arguments as JSON text.
    pub arguments: String,
}

/// A piece of a call in a stream chunk: the first carries `id`, `type` and the name, the
/// following ones more of the arguments.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ToolCallDelta {
    pub index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    pub function: FunctionCallDelta,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct FunctionCallDelta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub arguments: String,
}

/// Log-probabilities of a chat choice's tokens.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
pub struct ChatLogprobs {
    pub content: Vec<TokenLogprob>,
    pub refusal: Option<Vec<TokenLogprob>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TokenLogprob {
    pub token: String,
    pub logprob: f32,
    pub bytes: Vec<u8>,
    pub top_logprobs: Vec<TopLogprob>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TopLogprob {
    pub token: String,
    pub logprob: f32,
    pub bytes: Vec<u8>,
}

/// `chat.completion.chunk`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ChatCompletionChunk {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub model: String,
    pub system_fingerprint: String,
    pub choices: Vec<ChatChunkChoice>,
    /// Present (null until the last chunk) only with `stream_options.include_usage`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Usage>)]
    pub usage: Option<Option<Usage>>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ChatChunkChoice {
    pub index: usize,
    pub delta: ChatDelta,
    pub logprobs: Option<ChatLogprobs>,
    pub finish_reason: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
pub struct ChatDelta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCallDelta>>,
}

/// `text_completion`, whole or as one stream chunk.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Completion {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub model: String,
    pub system_fingerprint: String,
    pub choices: Vec<CompletionChoice>,
    /// Always present on a whole response; on stream chunks as for chat.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Usage>)]
    pub usage: Option<Option<Usage>>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CompletionChoice {
    pub text: String,
    pub index: usize,
    pub logprobs: Option<CompletionLogprobs>,
    pub finish_reason: Option<String>,
}

/// The legacy completions log-probability layout.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
pub struct CompletionLogprobs {
    pub tokens: Vec<String>,
    pub token_logprobs: Vec<f32>,
    #[schema(value_type = Vec<Object>)]
    pub top_logprobs: Vec<serde_json::Map<String, Value>>,
    pub text_offset: Vec<usize>,
}

/// `GET /v1/models`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ModelList {
    pub object: String,
    pub data: Vec<ModelCard>,
}

/// One served model, with Oasis's catalog fields after OpenAI's four.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ModelCard {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub owned_by: String,
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

/// `POST /v1/embeddings`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EmbeddingRequest {
    /// An embedding model from `GET /v1/models`.
    pub model: String,
    /// A string or a list of 1 to 2048 strings (none empty). Texts longer than the model's
    /// limit are cut to it, as sentence-transformers cuts them.
    #[schema(schema_with = input_schema)]
    pub input: Value,
    /// `float` (the default) or `base64` (little-endian float32).
    #[schema(pattern = "^(float|base64)$")]
    pub encoding_format: Option<String>,
    /// The model's own dimension count (it cannot give others).
    #[schema(minimum = 1, maximum = 65536)]
    pub dimensions: Option<i64>,
    /// The end user or team the request is for.
    pub user: Option<String>,
}

fn input_schema() -> utoipa::openapi::Schema {
    let text = || {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::Type::String)
            .min_length(Some(1))
            .build()
    };
    utoipa::openapi::schema::OneOfBuilder::new()
        .item(text())
        .item(
            utoipa::openapi::ArrayBuilder::new()
                .items(utoipa::openapi::RefOr::T(text().into()))
                .min_items(Some(1))
                .max_items(Some(MAX_INPUTS))
                .build(),
        )
        .build()
        .into()
}

/// A vector: an array of numbers, or a base64 string.
fn vector_schema() -> utoipa::openapi::Schema {
    utoipa::openapi::schema::OneOfBuilder::new()
        .item(
            utoipa::openapi::ArrayBuilder::new().items(utoipa::openapi::RefOr::T(
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::Type::Number)
                    .build()
                    .into(),
            )),
        )
        .item(
            utoipa::openapi::ObjectBuilder::new()
                .schema_type(utoipa::openapi::Type::String)
                .build(),
        )
        .build()
        .into()
}

/// The vectors.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EmbeddingList {
    pub object: String,
    pub data: Vec<EmbeddingData>,
    pub model: String,
    pub usage: EmbeddingUsage,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EmbeddingData {
    pub object: String,
    pub index: usize,
    /// The vector: numbers, or with `encoding_format: base64` their little-endian float32
    /// bytes in base64.
    #[schema(schema_with = vector_schema)]
    pub embedding: Value,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EmbeddingUsage {
    pub prompt_tokens: usize,
    pub total_tokens: usize,
}
