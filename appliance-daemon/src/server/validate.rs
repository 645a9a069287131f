//! The edge: raw OpenAI requests checked into a [`Plan`] the rest of the daemon trusts.
//! Every rejection is a 400 that names the field and states the bound.

use engine::grammar::GrammarSpec;
use engine::sampling::{
    MAX_STOP_LEN_BYTES as MAX_STOP_BYTES, MAX_STOPS as MAX_STOP, SamplingParams, StopStrings,
};
use engine::tokenizer::{ChatMessage, ToolCall};
use engine::tools::{ToolDef, ToolFormat, ToolSyntax};
use engine::{GenerateRequest, Model, Prompt};
use serde_json::Value;

use super::error::ApiError;
use super::openai::{ChatCompletionRequest, CompletionRequest, StreamOptions};

/// Most choices per prompt (`n`).
pub const MAX_N: usize = 16;
/// Most prompts in one completions request.
pub use oasis_api::openai::MAX_PROMPTS;
/// Most alternatives per position for chat (`top_logprobs`), as OpenAI.
pub const MAX_TOP_LOGPROBS: usize = 20;
/// Most alternatives per position for completions (`logprobs`), as OpenAI.
pub const MAX_COMPLETION_LOGPROBS: usize = 5;
/// Completions' default `max_tokens`, as OpenAI.
pub const DEFAULT_COMPLETION_MAX_TOKENS: usize = 16;

/// A checked request: what to run and how to answer.
#[derive(Debug)]
pub struct Plan {
    /// One engine request per (prompt, choice), prompt-major: choice index `i` of the
    /// answer is `requests[i]`.
    pub requests: Vec<GenerateRequest>,
    /// Prompt length in tokens for each request.
    pub prompt_tokens: Vec<usize>,
    /// The prompt text to prepend to each choice (`echo`), else empty.
    pub echo: Vec<String>,
    /// Alternatives per token when log-probabilities are asked for.
    pub logprobs: Option<usize>,
    /// Choices per prompt.
    pub n: usize,
    pub stream: bool,
    pub include_usage: bool,
    pub user: Option<String>,
    /// How to read calls out of the answers, when tools are offered.
    pub tools: Option<ToolPlan>,
    /// The model thinks in `<think>` tags: `Some(opened)`, where `opened` says the prompt
    /// left it inside its thinking.
    pub reasoning: Option<bool>,
    /// `prompt_lookup` was given (else the deployment's applies).
    pub prompt_lookup_given: bool,
}

/// Tools offered: the model's call syntax and how many calls an answer may make.
#[derive(Debug, Clone, Copy)]
pub struct ToolPlan {
    pub format: ToolFormat,
    pub max_calls: Option<usize>,
}

/// Most tools in one request.
pub const MAX_TOOLS: usize = 128;

/// What `tool_choice` asks for.
#[derive(Debug, Clone, PartialEq)]
enum ToolChoice {
    None,
    Auto,
    Required,
    Named(String),
}

impl Plan {
    /// Prompt-lookup speculation for every choice at the deployment's `draft` tokens,
    /// unless the request said otherwise.
    pub fn default_prompt_lookup(&mut self, draft: Option<usize>) {
        if self.prompt_lookup_given {
            return;
        }
        for r in &mut self.requests {
            r.prompt_lookup = draft.unwrap_or(0);
        }
    }

    /// Prompt tokens counted once per prompt (not per choice), as OpenAI counts them.
    pub fn prompt_tokens_once(&self) -> usize {
        self.prompt_tokens.iter().step_by(self.n.max(1)).sum()
    }

    /// Lowers the choices' `max_tokens` so that together they produce at most `cap`
    /// tokens (shared evenly; each keeps at least one when `cap` allows).
    pub fn cap_completion(&mut self, cap: usize) {
        let count = self.requests.len().max(1);
        let (each, extra) = (cap / count, cap % count);
        for (i, r) in self.requests.iter_mut().enumerate() {
            let share = each + usize::from(i < extra);
            r.max_tokens = r.max_tokens.min(share);
            r.min_tokens = r.min_tokens.min(r.max_tokens);
        }
    }
}

/// Fields both endpoints share, borrowed from either request.
struct Shared<'a> {
    temperature: Option<f64>,
    top_p: Option<f64>,
    top_k: Option<i64>,
    min_p: Option<f64>,
    presence_penalty: Option<f64>,
    frequency_penalty: Option<f64>,
    repetition_penalty: Option<f64>,
    ignore_eos: Option<bool>,
    min_tokens: Option<i64>,
    prompt_lookup: Option<i64>,
    seed: Option<i64>,
    stop: Option<&'a Value>,
    n: Option<i64>,
    stream: Option<bool>,
    stream_options: Option<&'a StreamOptions>,
    user: Option<&'a String>,
}

/// The [`Shared`] view of either request type (they name these fields alike).
macro_rules! shared {
    ($req:expr) => {
        Shared {
            temperature: $req.temperature,
            top_p: $req.top_p,
            top_k: $req.top_k,
            min_p: $req.min_p,
            presence_penalty: $req.presence_penalty,
            frequency_penalty: $req.frequency_penalty,
            repetition_penalty: $req.repetition_penalty,
            ignore_eos: $req.ignore_eos,
            min_tokens: $req.min_tokens,
            prompt_lookup: $req.prompt_lookup,
            seed: $req.seed,
            stop: $req.stop.as_ref(),
            n: $req.n,
            stream: $req.stream,
            stream_options: $req.stream_options.as_ref(),
            user: $req.user.as_ref(),
        }
    };
}

/// Checks a chat request against `model`.
pub fn chat(req: &ChatCompletionRequest, model: &Model, n_ctx: usize) -> Result<Plan, ApiError> {
    if req.messages.is_empty() {
        return Err(ApiError::invalid_param(
            "messages",
            "`messages` must hold at least one message",
        ));
    }
    let mut messages: Vec<ChatMessage> = Vec::with_capacity(req.messages.len());
    let mut call_ids: Vec<&str> = Vec::new();
    for (i, m) in req.messages.iter().enumerate() {
        let role = match m.role.as_str() {
            "system" | "developer" => "system",
            "user" => "user",
            "assistant" => "assistant",
            "tool" => "tool",
            other => {
                return Err(ApiError::invalid_param(
                    format!("messages[{i}].role"),
                    format!(
                        "`messages[{i}].role` must be one of system, developer, user, assistant, tool; got `{other}`"
                    ),
                ));
            }
        };
        let content = message_text(m.content.as_ref(), i)?;
        let mut message = ChatMessage::new(role, content);
        if let Some(calls) = &m.tool_calls {
            if role != "assistant" {
                return Err(ApiError::invalid_param(
                    format!("messages[{i}].tool_calls"),
                    "only assistant messages carry `tool_calls`",
                ));
            }
            for (j, c) in calls.iter().enumerate() {
                if c.kind.as_deref().is_some_and(|k| k != "function") {
                    return Err(ApiError::invalid_param(
                        format!("messages[{i}].tool_calls[{j}].type"),
                        "the only tool call type is `function`",
                    ));
                }
                if c.id.is_empty() || c.function.name.is_empty() {
                    return Err(ApiError::invalid_param(
                        format!("messages[{i}].tool_calls[{j}]"),
                        "a tool call needs an `id` and a `function.name`",
                    ));
                }
                call_ids.push(&c.id);
                message.tool_calls.push(ToolCall {
                    id: c.id.clone(),
                    name: c.function.name.clone(),
                    arguments: c.function.arguments.clone(),
                });
            }
        }
        if role == "tool" {
            let param = format!("messages[{i}].tool_call_id");
            let Some(id) = &m.tool_call_id else {
                return Err(ApiError::invalid_param(
                    param,
                    format!("`messages[{i}]` is a tool result without a `tool_call_id`"),
                ));
            };
            if !call_ids.contains(&id.as_str()) {
                return Err(ApiError::invalid_param(
                    param,
                    format!(
                        "`messages[{i}].tool_call_id` is `{id}`, which no earlier assistant message called"
                    ),
                ));
            }
            message.tool_call_id = Some(id.clone());
        }
        messages.push(message);
    }
    let tools = tool_defs(req)?;
    let choice = tool_choice(req.tool_choice.as_ref(), &tools)?;
    let active = !tools.is_empty() && choice != ToolChoice::None;
    let forced = matches!(choice, ToolChoice::Required | ToolChoice::Named(_));
    let tokenizer = model
        .tokenizer()
        .map_err(|e| ApiError::invalid(e.to_string()))?;
    let syntax = ToolSyntax::of(tokenizer);
    let (messages, listed) = syntax.prepare(messages, if active { &tools } else { &[] });
    let parallel = req.parallel_tool_calls.unwrap_or(true);
    let max_tokens = req.max_completion_tokens.or(req.max_tokens);
    let param = if req.max_completion_tokens.is_some() {
        "max_completion_tokens"
    } else {
        "max_tokens"
    };
    let top = if req.logprobs == Some(true) {
        Some(bounded(
            "top_logprobs",
            req.top_logprobs.unwrap_or(0),
            0,
            MAX_TOP_LOGPROBS,
        )?)
    } else if req.top_logprobs.is_some_and(|k| k > 0) {
        return Err(ApiError::invalid_param(
            "top_logprobs",
            "`top_logprobs` needs `logprobs` set to true",
        ));
    } else {
        None
    };
    let shared = shared!(req);
    let prompt = match listed {
        Some(tools) => Prompt::ChatWithTools { messages, tools },
        None => Prompt::Chat(messages),
    };
    let ids = tokenize(model, &prompt)?;
    let template = tokenizer.chat_template().map(|t| t.source());
    let reasoning = engine::reasoning::thinks(template).then(|| {
        let tail = &ids[ids.len().saturating_sub(8)..];
        engine::reasoning::prompt_opens_thinking(&tokenizer.decode_with_special(tail, true))
    });
    let mut grammar = grammar_of(
        req.response_format.as_ref(),
        req.guided_json.as_ref(),
        req.guided_regex.as_deref(),
        req.guided_grammar.as_deref(),
    )?;
    if forced {
        if let Some((_, param)) = &grammar {
            return Err(ApiError::invalid_param(
                *param,
                format!("`{param}` cannot be combined with a `tool_choice` that forces a call"),
            ));
        }
        // Each schema alone first, so that a bad one is named with its path.
        if let Ok(grammars) = model.grammars() {
            for (i, t) in tools.iter().enumerate() {
                if let Err(e) = grammars.constraint(&GrammarSpec::JsonSchema(t.parameters.clone()))
                {
                    return Err(ApiError::invalid_param(
                        format!("tools[{i}].function.parameters"),
                        format!("the schema of `{}` cannot be used: {e}", t.name),
                    ));
                }
            }
        }
        let (offered, parallel) = match &choice {
            ToolChoice::Named(name) => (
                tools.iter().filter(|t| t.name == *name).cloned().collect(),
                false,
            ),
            _ => (tools.clone(), parallel),
        };
        grammar = Some((syntax.grammar(&offered, parallel, tokenizer), "tools"));
    }
    // A thinking model thinks first, freely; the constraint holds for the answer after it.
    // A client's own Lark grammar (`guided_grammar`) covers the whole output, thinking and
    // all, as written.
    if let Some(opened) = reasoning {
        grammar = grammar.map(|(spec, param)| match param {
            "guided_grammar" => (spec, param),
            _ => (
                GrammarSpec::AfterThinking {
                    inner: Box::new(spec),
                    opened,
                },
                param,
            ),
        });
    }
    let mut plan = build(
        &shared,
        vec![(ids, String::new())],
        max_tokens,
        param,
        None,
        top,
        n_ctx,
    )?;
    constrain(&mut plan, model, grammar)?;
    plan.reasoning = reasoning;
    plan.tools = active.then_some(ToolPlan {
        format: syntax.format,
        max_calls: (!parallel || matches!(choice, ToolChoice::Named(_))).then_some(1),
    });
    Ok(plan)
}

/// The tools offered, checked: `type` function, names of 1 to 64 of `a-z A-Z 0-9 _ -`,
/// unique, parameters an object schema.
fn tool_defs(req: &ChatCompletionRequest) -> Result<Vec<ToolDef>, ApiError> {
    let Some(tools) = &req.tools else {
        return Ok(Vec::new());
    };
    if tools.len() > MAX_TOOLS {
        return Err(ApiError::invalid_param(
            "tools",
            format!("{} tools given; at most {MAX_TOOLS}", tools.len()),
        ));
    }
    let mut defs: Vec<ToolDef> = Vec::with_capacity(tools.len());
    for (i, t) in tools.iter().enumerate() {
        if t.kind != "function" {
            return Err(ApiError::invalid_param(
                format!("tools[{i}].type"),
                format!("the only tool type is `function`; got `{}`", t.kind),
            ));
        }
        let name = &t.function.name;
        let good = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !good {
            return Err(ApiError::invalid_param(
                format!("tools[{i}].function.name"),
                format!(
                    "`tools[{i}].function.name` must be 1 to 64 of a-z, A-Z, 0-9, _ and -; got {name:?}"
                ),
            ));
        }
        if defs.iter().any(|d| d.name == *name) {
            return Err(ApiError::invalid_param(
                format!("tools[{i}].function.name"),
                format!("two tools are named `{name}`"),
            ));
        }
        let parameters = match &t.function.parameters {
            None | Some(Value::Null) => serde_json::json!({"type": "object"}),
            Some(p @ Value::Object(_)) => p.clone(),
            Some(_) => {
                return Err(ApiError::invalid_param(
                    format!("tools[{i}].function.parameters"),
                    "`parameters` must be a JSON schema (an object)",
                ));
            }
        };
        if parameters.to_string().len() > MAX_GRAMMAR_BYTES {
            return Err(ApiError::invalid_param(
                format!("tools[{i}].function.parameters"),
                format!("the schema is over {MAX_GRAMMAR_BYTES} bytes"),
            ));
        }
        defs.push(ToolDef {
            name: name.clone(),
            description: t.function.description.clone(),
            parameters,
        });
    }
    Ok(defs)
}

fn tool_choice(choice: Option<&Value>, tools: &[ToolDef]) -> Result<ToolChoice, ApiError> {
    let default = if tools.is_empty() {
        ToolChoice::None
    } else {
        ToolChoice::Auto
    };
    let choice = match choice {
        None | Some(Value::Null) => return Ok(default),
        Some(Value::String(s)) => match s.as_str() {
            "none" => ToolChoice::None,
            "auto" => default,
            "required" => ToolChoice::Required,
            other => {
                return Err(ApiError::invalid_param(
                    "tool_choice",
                    format!(
                        "`tool_choice` must be none, auto, required or a named function; got `{other}`"
                    ),
                ));
            }
        },
        Some(v) => {
            let name = v
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str);
            match (v.get("type").and_then(Value::as_str), name) {
                (Some("function"), Some(name)) => {
                    if !tools.iter().any(|t| t.name == name) {
                        let known: Vec<&str> = tools.iter().map(|t| t.name.as_str()).collect();
                        return Err(ApiError::invalid_param(
                            "tool_choice",
                            format!(
                                "`tool_choice` names the function `{name}`, which is not among the tools ({})",
                                if known.is_empty() {
                                    "none given".to_string()
                                } else {
                                    known.join(", ")
                                }
                            ),
                        ));
                    }
                    ToolChoice::Named(name.to_string())
                }
                _ => {
                    return Err(ApiError::invalid_param(
                        "tool_choice",
                        "`tool_choice` must be none, auto, required or {\"type\": \"function\", \"function\": {\"name\": ...}}",
                    ));
                }
            }
        }
    };
    if choice == ToolChoice::Required && tools.is_empty() {
        return Err(ApiError::invalid_param(
            "tool_choice",
            "`tool_choice` is `required` but no `tools` are given",
        ));
    }
    Ok(choice)
}

/// Checks a completions request against `model`.
pub fn completion(req: &CompletionRequest, model: &Model, n_ctx: usize) -> Result<Plan, ApiError> {
    if req.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::invalid_param(
            "suffix",
            "`suffix` (insertion) is not supported by this model",
        ));
    }
    let logprobs = match req.logprobs {
        None => None,
        Some(k) => Some(bounded("logprobs", k, 0, MAX_COMPLETION_LOGPROBS)?),
    };
    let echo = req.echo == Some(true);
    if echo && logprobs.is_some() {
        return Err(ApiError::invalid_param(
            "echo",
            "`echo` together with `logprobs` is not supported",
        ));
    }
    let prompts = completion_prompts(&req.prompt)?;
    let mut tokenized = Vec::with_capacity(prompts.len());
    for p in prompts {
        let ids = tokenize(model, &p)?;
        let text = match (&p, echo) {
            (Prompt::Text(t), true) => t.clone(),
            (_, true) => model
                .tokenizer_opt()
                .map_or_else(String::new, |t| t.decode(&ids)),
            _ => String::new(),
        };
        tokenized.push((ids, text));
    }
    let shared = shared!(req);
    let grammar = grammar_of(
        None,
        req.guided_json.as_ref(),
        req.guided_regex.as_deref(),
        req.guided_grammar.as_deref(),
    )?;
    let mut plan = build(
        &shared,
        tokenized,
        req.max_tokens,
        "max_tokens",
        Some(DEFAULT_COMPLETION_MAX_TOKENS),
        logprobs,
        n_ctx,
    )?;
    constrain(&mut plan, model, grammar)?;
    Ok(plan)
}

/// Longest JSON schema or Lark grammar accepted, in bytes.
const MAX_GRAMMAR_BYTES: usize = 65_536;
/// Longest regular expression accepted, in bytes.
const MAX_REGEX_BYTES: usize = 4096;

/// What the output must match, from `response_format` or vLLM's `guided_*` fields (at most
/// one of them), with the field it came from.
fn grammar_of(
    response_format: Option<&Value>,
    guided_json: Option<&Value>,
    guided_regex: Option<&str>,
    guided_grammar: Option<&str>,
) -> Result<Option<(GrammarSpec, &'static str)>, ApiError> {
    let mut found: Vec<(GrammarSpec, &'static str)> = Vec::new();
    if let Some(rf) = response_format {
        let kind = rf.get("type").and_then(Value::as_str).ok_or_else(|| {
            ApiError::invalid_param(
                "response_format",
                "`response_format` must be an object with a `type`: text, json_object or json_schema",
            )
        })?;
        match kind {
            "text" => {}
            "json_object" => found.push((GrammarSpec::JsonObject, "response_format")),
            "json_schema" => {
                let schema = rf
                    .get("json_schema")
                    .and_then(|j| j.get("schema"))
                    .filter(|s| s.is_object() || s.is_boolean())
                    .ok_or_else(|| {
                        ApiError::invalid_param(
                            "response_format",
                            "`response_format.json_schema.schema` must be a JSON schema (an object)",
                        )
                    })?;
                found.push((schema_spec(schema, "response_format")?, "response_format"));
            }
            other => {
                return Err(ApiError::invalid_param(
                    "response_format",
                    format!(
                        "`response_format.type` must be text, json_object or json_schema; got `{other}`"
                    ),
                ));
            }
        }
    }
    if let Some(j) = guided_json {
        let schema = match j {
            Value::String(text) => serde_json::from_str(text).map_err(|e| {
                ApiError::invalid_param("guided_json", format!("`guided_json` is not JSON: {e}"))
            })?,
            other => other.clone(),
        };
        found.push((schema_spec(&schema, "guided_json")?, "guided_json"));
    }
    if let Some(r) = guided_regex {
        if r.len() > MAX_REGEX_BYTES {
            return Err(ApiError::invalid_param(
                "guided_regex",
                format!(
                    "`guided_regex` is {} bytes; at most {MAX_REGEX_BYTES}",
                    r.len()
                ),
            ));
        }
        found.push((GrammarSpec::Regex(r.to_string()), "guided_regex"));
    }
    if let Some(g) = guided_grammar {
        if g.len() > MAX_GRAMMAR_BYTES {
            return Err(ApiError::invalid_param(
                "guided_grammar",
                format!(
                    "`guided_grammar` is {} bytes; at most {MAX_GRAMMAR_BYTES}",
                    g.len()
                ),
            ));
        }
        found.push((GrammarSpec::Lark(g.to_string()), "guided_grammar"));
    }
    if found.len() > 1 {
        let names: Vec<&str> = found.iter().map(|(_, p)| *p).collect();
        return Err(ApiError::invalid_param(
            names[1],
            format!("give one of {} , not several", names.join(", ")),
        ));
    }
    Ok(found.pop())
}

fn schema_spec(schema: &Value, param: &'static str) -> Result<GrammarSpec, ApiError> {
    if !(schema.is_object() || schema.is_boolean()) {
        return Err(ApiError::invalid_param(
            param,
            format!("`{param}` must be a JSON schema (an object)"),
        ));
    }
    let len = schema.to_string().len();
    if len > MAX_GRAMMAR_BYTES {
        return Err(ApiError::invalid_param(
            param,
            format!("the schema is {len} bytes; at most {MAX_GRAMMAR_BYTES}"),
        ));
    }
    Ok(GrammarSpec::JsonSchema(schema.clone()))
}

/// Compiles the grammar for `model` (a 400 naming what is wrong with it) and gives every
/// choice its own copy.
fn constrain(
    plan: &mut Plan,
    model: &Model,
    grammar: Option<(GrammarSpec, &'static str)>,
) -> Result<(), ApiError> {
    let Some((spec, param)) = grammar else {
        return Ok(());
    };
    let grammars = model.grammars().map_err(|e| {
        ApiError::invalid_param(
            param,
            format!("structured output is not available for this model: {e}"),
        )
    })?;
    let constraint = grammars
        .constraint(&spec)
        .map_err(|e| ApiError::invalid_param(param, format!("`{param}` cannot be used: {e}")))?;
    for r in &mut plan.requests {
        r.constraint = Some(constraint.clone());
    }
    Ok(())
}

fn build(
    s: &Shared<'_>,
    prompts: Vec<(Vec<u32>, String)>,
    max_tokens: Option<i64>,
    max_tokens_param: &'static str,
    default_max_tokens: Option<usize>,
    logprobs: Option<usize>,
    n_ctx: usize,
) -> Result<Plan, ApiError> {
    let n = bounded("n", s.n.unwrap_or(1), 1, MAX_N)?;
    let max_tokens = match max_tokens {
        Some(m) => Some(bounded(max_tokens_param, m, 1, n_ctx)?),
        None => default_max_tokens,
    };
    let temperature = float("temperature", s.temperature.unwrap_or(1.0), 0.0, 2.0, true)?;
    let top_p = float("top_p", s.top_p.unwrap_or(1.0), 0.0, 1.0, false)?;
    let min_p = float("min_p", s.min_p.unwrap_or(0.0), 0.0, 1.0, true)?;
    let presence = float(
        "presence_penalty",
        s.presence_penalty.unwrap_or(0.0),
        -2.0,
        2.0,
        true,
    )?;
    let frequency = float(
        "frequency_penalty",
        s.frequency_penalty.unwrap_or(0.0),
        -2.0,
        2.0,
        true,
    )?;
    let repetition = float(
        "repetition_penalty",
        s.repetition_penalty.unwrap_or(1.0),
        0.0,
        engine::sampling::MAX_REPETITION_PENALTY.into(),
        false,
    )?;
    let top_k = match s.top_k.unwrap_or(0) {
        -1 | 0 => 0,
        k if k > 0 => u32::try_from(k).unwrap_or(u32::MAX),
        k => {
            return Err(ApiError::invalid_param(
                "top_k",
                format!("`top_k` must be -1, 0 (off) or positive, got {k}"),
            ));
        }
    };
    let stop = stop_strings(s.stop)?;
    let min_tokens = match s.min_tokens {
        None => 0,
        Some(m) => bounded("min_tokens", m, 0, max_tokens.unwrap_or(n_ctx))?,
    };
    let prompt_lookup = match s.prompt_lookup {
        None => None,
        Some(k) => Some(bounded(
            "prompt_lookup",
            k,
            0,
            engine::scheduler::lookup::MAX_DRAFT,
        )?),
    };
    let sampling = SamplingParams {
        temperature: temperature as f32,
        top_k,
        top_p: top_p as f32,
        min_p: min_p as f32,
        repetition_penalty: repetition as f32,
        presence_penalty: presence as f32,
        frequency_penalty: frequency as f32,
        // Reinterpreting the sign keeps every i64 seed distinct.
        seed: s.seed.map(|v| v as u64),
        ..SamplingParams::default()
    };
    sampling
        .validate()
        .map_err(|e| ApiError::invalid(e.to_string()))?;

    let mut requests = Vec::with_capacity(prompts.len() * n);
    let mut prompt_tokens = Vec::with_capacity(prompts.len() * n);
    let mut echo = Vec::with_capacity(prompts.len() * n);
    for (p, (ids, text)) in prompts.into_iter().enumerate() {
        if ids.is_empty() {
            return Err(ApiError::invalid_param("prompt", "the prompt is empty"));
        }
        if ids.len() >= n_ctx {
            return Err(ApiError::invalid_param(
                if max_tokens_param == "max_tokens" && default_max_tokens.is_some() {
                    "prompt"
                } else {
                    "messages"
                },
                format!(
                    "the prompt{} is {} tokens; this model's context holds {n_ctx}, so the prompt must be at most {} tokens to leave room for output",
                    if p > 0 { format!(" #{p}") } else { String::new() },
                    ids.len(),
                    n_ctx - 1
                ),
            ).with_code("context_length_exceeded"));
        }
        let room = n_ctx - ids.len();
        for choice in 0..n {
            let mut sampling = sampling.clone();
            sampling.seed = sampling.seed.map(|s| s.wrapping_add(choice as u64));
            requests.push(GenerateRequest {
                prompt: Prompt::Tokens(ids.clone()),
                max_tokens: max_tokens.unwrap_or(room).min(room),
                sampling,
                stop: stop.clone(),
                ignore_eos: s.ignore_eos == Some(true),
                min_tokens,
                logprobs,
                constraint: None,
                prompt_lookup: prompt_lookup.unwrap_or(0),
            });
            prompt_tokens.push(ids.len());
            echo.push(text.clone());
        }
    }
    Ok(Plan {
        requests,
        prompt_tokens,
        echo,
        logprobs,
        n,
        stream: s.stream == Some(true),
        include_usage: s
            .stream_options
            .and_then(|o| o.include_usage)
            .unwrap_or(false),
        user: s.user.cloned(),
        tools: None,
        reasoning: None,
        prompt_lookup_given: prompt_lookup.is_some(),
    })
}

fn tokenize(model: &Model, prompt: &Prompt) -> Result<Vec<u32>, ApiError> {
    let ids =
        engine::generate::tokenize(model, prompt).map_err(|e| ApiError::invalid(e.to_string()))?;
    let vocab = model.config.vocab_size;
    if let Some(bad) = ids.iter().find(|t| **t as usize >= vocab) {
        return Err(ApiError::invalid_param(
            "prompt",
            format!("token id {bad} is outside the vocabulary (ids must be below {vocab})"),
        ));
    }
    Ok(ids)
}

/// The text of message `i`: a string or a list of text parts.
fn message_text(content: Option<&Value>, i: usize) -> Result<String, ApiError> {
    let param = format!("messages[{i}].content");
    match content {
        Some(Value::String(s)) => Ok(s.clone()),
        // Absent or null: an empty message (the schema allows it for every role).
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for (j, part) in parts.iter().enumerate() {
                let kind = part.get("type").and_then(Value::as_str);
                match (kind, part.get("text").and_then(Value::as_str)) {
                    (Some("text"), Some(t)) => text.push_str(t),
                    (Some("text"), None) => {
                        return Err(ApiError::invalid_param(
                            format!("{param}[{j}].text"),
                            format!("`{param}[{j}].text` must be a string"),
                        ));
                    }
                    (Some(other), _) => {
                        return Err(ApiError::invalid_param(
                            format!("{param}[{j}].type"),
                            format!("content part type `{other}` is not supported; only `text` is"),
                        ));
                    }
                    (None, _) => {
                        return Err(ApiError::invalid_param(
                            format!("{param}[{j}]"),
                            format!("`{param}[{j}]` must be an object with `type` and `text`"),
                        ));
                    }
                }
            }
            Ok(text)
        }
        Some(_) => Err(ApiError::invalid_param(
            param.clone(),
            format!("`{param}` must be a string or a list of text parts"),
        )),
    }
}

/// The prompts of a completions request.
fn completion_prompts(prompt: &Value) -> Result<Vec<Prompt>, ApiError> {
    let bad = || {
        ApiError::invalid_param(
            "prompt",
            "`prompt` must be a string, a list of strings, a list of token ids or a list of lists of token ids",
        )
    };
    let ids = |v: &[Value]| -> Result<Vec<u32>, ApiError> {
        v.iter()
            .map(|x| {
                x.as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(bad)
            })
            .collect()
    };
    let prompts = match prompt {
        Value::String(s) => vec![Prompt::Text(s.clone())],
        Value::Array(items) if items.is_empty() => {
            return Err(ApiError::invalid_param("prompt", "the prompt is empty"));
        }
        Value::Array(items) => match &items[0] {
            Value::Number(_) => vec![Prompt::Tokens(ids(items)?)],
            Value::String(_) => items
                .iter()
                .map(|x| {
                    x.as_str()
                        .map(|s| Prompt::Text(s.to_string()))
                        .ok_or_else(bad)
                })
                .collect::<Result<_, _>>()?,
            Value::Array(_) => items
                .iter()
                .map(|x| {
                    x.as_array()
                        .ok_or_else(bad)
                        .and_then(|a| ids(a))
                        .map(Prompt::Tokens)
                })
                .collect::<Result<_, _>>()?,
            _ => return Err(bad()),
        },
        _ => return Err(bad()),
    };
    if prompts.len() > MAX_PROMPTS {
        return Err(ApiError::invalid_param(
            "prompt",
            format!(
                "at most {MAX_PROMPTS} prompts per request, got {}",
                prompts.len()
            ),
        ));
    }
    Ok(prompts)
}

fn stop_strings(stop: Option<&Value>) -> Result<Vec<String>, ApiError> {
    let list = match stop {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|x| {
                x.as_str().map(str::to_string).ok_or_else(|| {
                    ApiError::invalid_param("stop", "`stop` must be a string or a list of strings")
                })
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(ApiError::invalid_param(
                "stop",
                "`stop` must be a string or a list of strings",
            ));
        }
    };
    if list.len() > MAX_STOP {
        return Err(ApiError::invalid_param(
            "stop",
            format!("at most {MAX_STOP} stop strings, got {}", list.len()),
        ));
    }
    if let Some(s) = list
        .iter()
        .find(|s| s.chars().count() > super::openai::MAX_STOP_CHARS)
    {
        return Err(ApiError::invalid_param(
            "stop",
            format!(
                "stop strings may have at most {} characters, got {}",
                super::openai::MAX_STOP_CHARS,
                s.chars().count()
            ),
        ));
    }
    if let Some(s) = list.iter().find(|s| s.len() > MAX_STOP_BYTES) {
        return Err(ApiError::invalid_param(
            "stop",
            format!(
                "stop strings may be at most {MAX_STOP_BYTES} bytes, got {}",
                s.len()
            ),
        ));
    }
    StopStrings::new(list.clone()).map_err(|e| ApiError::invalid_param("stop", e.to_string()))?;
    Ok(list)
}

/// `got` as a count in `min..=max`.
fn bounded(param: &'static str, got: i64, min: usize, max: usize) -> Result<usize, ApiError> {
    usize::try_from(got)
        .ok()
        .filter(|v| (min..=max).contains(v))
        .ok_or_else(|| {
            ApiError::invalid_param(
                param,
                format!("`{param}` must be between {min} and {max}, got {got}"),
            )
        })
}

/// `got` in `[min, max]` (or `(min, max]` when `min_inclusive` is false).
fn float(
    param: &'static str,
    got: f64,
    min: f64,
    max: f64,
    min_inclusive: bool,
) -> Result<f64, ApiError> {
    let ok = got <= max && if min_inclusive { got >= min } else { got > min };
    if ok {
        Ok(got)
    } else {
        let open = if min_inclusive { "" } else { " (exclusive)" };
        Err(ApiError::invalid_param(
            param,
            format!("`{param}` must be between {min}{open} and {max}, got {got}"),
        ))
    }
}
