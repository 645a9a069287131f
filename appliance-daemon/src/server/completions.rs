//! `POST /v1/chat/completions` and `POST /v1/completions`: check the request, queue it on
//! the model's engine, and answer with one JSON document or a stream of server-sent events
//! in OpenAI's chunk format, ending with `data: [DONE]`.
//!
//! The engine's events are turned into OpenAI's shapes by [`Answer`], one per request,
//! which both the streaming and the whole-response paths drive. Dropping the event
//! receiver (client gone, timeout) stops the generation at its next token.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::AppState;
use super::auth::Principal;
use super::catalog::ServedModel;
use super::error::{ApiError, ErrorBody};
use super::extract::JsonBody;
use super::openai::*;
use super::validate::{self, Plan};
use super::worker::{Event, Job, SubmitError};
use crate::store::{random_hex, unix_now};

/// Which endpoint a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Chat,
    Text,
}

/// Generate a chat answer.
#[utoipa::path(post, path = "/v1/chat/completions", request_body = ChatCompletionRequest,
    responses(
        (status = 200, description = "A chat completion, or with `stream` a text/event-stream of chunks", body = ChatCompletion),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
pub async fn chat_completions(
    State(st): State<AppState>,
    who: Option<axum::Extension<Principal>>,
    JsonBody(req): JsonBody<ChatCompletionRequest>,
) -> Result<Response, ApiError> {
    let arrived = Instant::now();
    let served = st.generation_model(&req.model)?;
    // Off the async workers: tokenizing a long prompt, compiling a grammar.
    let (model, id) = (served.clone(), super::error::current_request_id());
    let plan = tokio::task::spawn_blocking(move || {
        super::error::REQUEST_ID.sync_scope(id, || validate::chat(&req, &model.model, model.n_ctx))
    })
    .await
    .map_err(ApiError::internal)??;
    let who = who.map(|w| w.0);
    start(&st, who.as_ref(), served, plan, Kind::Chat, arrived).await
}

/// Complete a prompt.
#[utoipa::path(post, path = "/v1/completions", request_body = CompletionRequest,
    responses(
        (status = 200, description = "A text completion, or with `stream` a text/event-stream of chunks", body = Completion),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
pub async fn completions(
    State(st): State<AppState>,
    who: Option<axum::Extension<Principal>>,
    JsonBody(req): JsonBody<CompletionRequest>,
) -> Result<Response, ApiError> {
    let arrived = Instant::now();
    let served = st.generation_model(&req.model)?;
    let (model, id) = (served.clone(), super::error::current_request_id());
    let plan = tokio::task::spawn_blocking(move || {
        super::error::REQUEST_ID
            .sync_scope(id, || validate::completion(&req, &model.model, model.n_ctx))
    })
    .await
    .map_err(ApiError::internal)??;
    let who = who.map(|w| w.0);
    start(&st, who.as_ref(), served, plan, Kind::Text, arrived).await
}

/// A key's model list and limits, checked before the request enters the engine. The
/// request's worst case (its prompt and every choice's `max_tokens`) is reserved against the
/// key's token limits; when less is left, the choices' `max_tokens` are lowered to fit (at
/// least one token each, else 429). The reservation is settled when the answer ends.
fn admit(
    st: &AppState,
    who: Option<&Principal>,
    served: &ServedModel,
    plan: &mut Plan,
) -> Result<Option<crate::auth::Reservation>, ApiError> {
    let Some(key) = who.and_then(|w| w.key.as_ref()) else {
        return Ok(None);
    };
    let prompt = plan.prompt_tokens_once() as u64;
    let choices = plan.requests.len() as u64;
    let wanted: u64 = plan.requests.iter().map(|r| r.max_tokens as u64).sum();
    let mut names = vec![served.name.as_str()];
    names.extend(served.deployment.aliases.iter().map(String::as_str));
    let reservation = admit_key(st, key, &names, prompt, choices, wanted)?;
    let cap = reservation.completion_cap(prompt);
    if cap < wanted {
        plan.cap_completion(cap as usize);
        tracing::debug!(key = %key.id, cap, wanted, "max_tokens lowered to the key's remaining tokens");
    }
    Ok(Some(reservation))
}

/// Checks that `key` may use the model known as any of `names` (the served name first),
/// and reserves `prompt` tokens and between `min_completion` and `max_completion` more
/// against its limits (403 for another model, 429 over a limit).
pub(super) fn admit_key(
    st: &AppState,
    key: &crate::auth::KeyRecord,
    names: &[&str],
    prompt: u64,
    min_completion: u64,
    max_completion: u64,
) -> Result<crate::auth::Reservation, ApiError> {
    if let Some(models) = &key.models
        && !models.iter().any(|m| names.contains(&m.as_str()))
    {
        let mut e = ApiError::invalid(format!(
            "Key `{}` may not use the model `{}` (it may use: {})",
            key.name,
            names.first().copied().unwrap_or_default(),
            models.join(", ")
        ))
        .with_param("model")
        .with_code("model_not_allowed");
        e.status = axum::http::StatusCode::FORBIDDEN;
        return Err(e);
    }
    st.keys
        .admit(key, prompt, min_completion, max_completion)
        .map_err(|o| {
            let code = if o.limit.starts_with("tokens_per_") {
                "insufficient_quota"
            } else {
                "rate_limit_exceeded"
            };
            tracing::info!(key = %key.id, limit = o.limit, "request over a limit");
            ApiError::queue_full(o.message, o.retry_after)
                .with_code(code)
                .with_param(o.limit)
        })
}

async fn start(
    st: &AppState,
    who: Option<&Principal>,
    served: Arc<ServedModel>,
    mut plan: Plan,
    kind: Kind,
    arrived: Instant,
) -> Result<Response, ApiError> {
    if st.is_draining() {
        return Err(ApiError::overloaded(
            "The server is shutting down",
            Duration::from_secs(5),
        ));
    }
    plan.default_prompt_lookup(served.deployment.prompt_lookup);
    let reservation = admit(st, who, &served, &mut plan)?;
    let tenant = who
        .and_then(Principal::tenant)
        .map(str::to_string)
        .or_else(|| plan.user.clone())
        .unwrap_or_default();
    let (tx, rx) = mpsc::unbounded_channel();
    let job = Job {
        requests: std::mem::take(&mut plan.requests),
        tenant,
        events: tx,
    };
    match served.worker.submit(job) {
        Ok(()) => {}
        Err(SubmitError::Full) => {
            return Err(ApiError::queue_full(
                format!(
                    "The model `{}` has {} requests waiting, its limit; retry shortly",
                    served.name, st.config.max_waiting
                ),
                Duration::from_secs(1),
            ));
        }
        Err(SubmitError::Stopped) => {
            return Err(ApiError::engine(&engine::EngineError::Stopped(format!(
                "the engine of `{}` has stopped",
                served.name
            ))));
        }
    }
    tracing::debug!(model = %served.name, choices = plan.prompt_tokens.len(), user = ?plan.user, "queued");
    let key = who
        .and_then(|w| w.key.as_ref())
        .map_or_else(|| "anonymous".to_string(), |k| k.id.clone());
    let mut answer = Answer::new(kind, served, &plan, st.clone(), arrived, key);
    answer.metering.reservation = reservation;
    if plan.stream {
        Ok(stream(answer, rx).into_response())
    } else {
        let limit = st.config.request_timeout;
        match tokio::time::timeout(limit, whole(answer, rx)).await {
            Ok(r) => r,
            Err(_) => Err(ApiError::timeout(limit)),
        }
    }
}

/// Collects every event, then answers with one document.
async fn whole(
    mut answer: Answer,
    mut rx: mpsc::UnboundedReceiver<Event>,
) -> Result<Response, ApiError> {
    while let Some(ev) = rx.recv().await {
        answer.absorb(ev)?;
    }
    let usage = answer.usage();
    if let Some(r) = answer.metering.finish(&usage, false) {
        answer.state.meter.record(r).await;
    }
    answer.into_response()
}

/// Streams chunks as the events arrive.
fn stream(
    answer: Answer,
    rx: mpsc::UnboundedReceiver<Event>,
) -> Sse<impl futures_util::Stream<Item = Result<SseEvent, Infallible>>> {
    let chunks = futures_util::stream::unfold(Some((answer, rx)), |state| async move {
        let (mut answer, mut rx) = state?;
        loop {
            match rx.recv().await {
                Some(ev) => {
                    let out = answer.chunks_for(ev);
                    if answer.failed {
                        return Some((out, None));
                    }
                    if !out.is_empty() {
                        return Some((out, Some((answer, rx))));
                    }
                }
                None => {
                    let usage = answer.usage();
                    if let Some(r) = answer.metering.finish(&usage, false) {
                        answer.state.meter.record(r).await;
                    }
                    return Some((answer.final_chunks(), None));
                }
            }
        }
    })
    .flat_map(futures_util::stream::iter)
    .map(Ok);
    Sse::new(chunks).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// One request's answer as it builds up.
struct Answer {
    kind: Kind,
    served: Arc<ServedModel>,
    id: String,
    created: u64,
    fingerprint: String,
    include_usage: bool,
    logprobs: Option<usize>,
    /// Prompt tokens counted once per prompt (not per choice), as OpenAI counts them.
    prompt_tokens: usize,
    choices: Vec<ChoiceState>,
    failed: bool,
    /// For the latency histograms.
    state: AppState,
    arrived: Instant,
    /// Counts the request's tokens when it ends, however it ends.
    metering: Metering,
}

/// A request's entry in the metering: written (and waited for) when the answer ends
/// normally, or written without waiting, as failed, when it is dropped before that.
struct Metering {
    state: AppState,
    key: String,
    model: String,
    arrived: Instant,
    prompt_tokens: u64,
    completion_tokens: u64,
    done: bool,
    /// What the key's limits hold for this request until it ends.
    reservation: Option<crate::auth::Reservation>,
}

impl Metering {
    fn record(&mut self, failed: bool) -> crate::metering::Record {
        self.done = true;
        if let Some(r) = self.reservation.take() {
            self.state
                .keys
                .settle(&r, self.prompt_tokens, self.completion_tokens);
        }
        crate::metering::Record {
            day: crate::auth::day_of(unix_now()),
            key: self.key.clone(),
            model: self.model.clone(),
            counts: crate::metering::Counts {
                requests: 1,
                prompt_tokens: self.prompt_tokens,
                completion_tokens: self.completion_tokens,
                failed: u64::from(failed),
                latency_ms: self.arrived.elapsed().as_millis() as u64,
            },
        }
    }

    /// The record of a request that ended with `usage`, once.
    fn finish(&mut self, usage: &Usage, failed: bool) -> Option<crate::metering::Record> {
        if self.done {
            return None;
        }
        self.prompt_tokens = usage.prompt_tokens as u64;
        self.completion_tokens = usage.completion_tokens as u64;
        Some(self.record(failed))
    }
}

impl Drop for Metering {
    fn drop(&mut self) {
        if !self.done {
            let r = self.record(true);
            self.state.meter.record_later(r);
        }
    }
}

#[derive(Default)]
struct ChoiceState {
    /// When the choice's last token arrived (inter-token latency).
    last_token: Option<Instant>,
    text: String,
    completion_tokens: usize,
    finish_reason: Option<&'static str>,
    chat_logprobs: Vec<TokenLogprob>,
    text_logprobs: CompletionLogprobs,
    /// Reads calls out of the output when tools are offered.
    tools: Option<engine::tools::ToolParser>,
    /// The calls read so far.
    calls: Vec<ToolCallOut>,
    /// Splits a thinking model's thinking from its answer.
    reasoning: Option<engine::reasoning::ReasoningParser>,
    /// The thinking so far (whole answers).
    thinking: String,
}

impl ChoiceState {
    /// Feeds output text through the thinking splitter and the tool parser (`None`: the
    /// output ended): the thinking, the answer text, and the call pieces (recorded in
    /// `calls` too). For a model without either, the text itself.
    fn split(&mut self, text: Option<&str>) -> (String, String, Vec<ToolCallDelta>) {
        let (reasoning, answer) = match (self.reasoning.as_mut(), text) {
            (Some(r), Some(t)) => {
                let s = r.push(t);
                (s.reasoning, s.content)
            }
            (Some(r), None) => {
                let s = r.finish();
                (s.reasoning, s.content)
            }
            (None, t) => (String::new(), t.unwrap_or_default().to_string()),
        };
        let Some(parser) = self.tools.as_mut() else {
            return (reasoning, answer, Vec::new());
        };
        let mut events = parser.push(&answer);
        if text.is_none() {
            events.extend(parser.finish());
        }
        let mut content = String::new();
        let mut deltas: Vec<ToolCallDelta> = Vec::new();
        for e in events {
            match e {
                engine::tools::ToolEvent::Text(t) => content.push_str(&t),
                engine::tools::ToolEvent::Call { index, name } => {
                    let id = format!("call_{}", random_hex(12));
                    self.calls.push(ToolCallOut {
                        id: id.clone(),
                        kind: "function".into(),
                        function: FunctionCallOut {
                            name: name.clone(),
                            arguments: String::new(),
                        },
                    });
                    deltas.push(ToolCallDelta {
                        index,
                        id: Some(id),
                        kind: Some("function".into()),
                        function: FunctionCallDelta {
                            name: Some(name),
                            arguments: String::new(),
                        },
                    });
                }
                engine::tools::ToolEvent::Arguments { index, delta } => {
                    if let Some(c) = self.calls.get_mut(index) {
                        c.function.arguments.push_str(&delta);
                    }
                    deltas.push(ToolCallDelta {
                        index,
                        id: None,
                        kind: None,
                        function: FunctionCallDelta {
                            name: None,
                            arguments: delta,
                        },
                    });
                }
            }
        }
        (reasoning, content, deltas)
    }

    /// The finish reason: `tool_calls` when the answer ended by calling.
    fn finish(&self, reason: &'static str) -> &'static str {
        if reason == "stop" && !self.calls.is_empty() {
            "tool_calls"
        } else {
            reason
        }
    }
}

impl Answer {
    fn new(
        kind: Kind,
        served: Arc<ServedModel>,
        plan: &Plan,
        state: AppState,
        arrived: Instant,
        key: String,
    ) -> Answer {
        let model = served.name.clone();
        let n_choices = plan.prompt_tokens.len();
        let prompt_tokens = plan.prompt_tokens_once();
        let choices = plan
            .echo
            .iter()
            .map(|e| ChoiceState {
                text: e.clone(),
                tools: plan
                    .tools
                    .map(|t| engine::tools::ToolParser::new(t.format, t.max_calls)),
                reasoning: plan.reasoning.map(engine::reasoning::ReasoningParser::new),
                ..ChoiceState::default()
            })
            .collect::<Vec<_>>();
        debug_assert_eq!(choices.len(), n_choices);
        let prefix = match kind {
            Kind::Chat => "chatcmpl-",
            Kind::Text => "cmpl-",
        };
        Answer {
            kind,
            fingerprint: format!("oasis-{}", env!("CARGO_PKG_VERSION")),
            served,
            id: format!("{prefix}{}", random_hex(12)),
            created: unix_now(),
            include_usage: plan.include_usage,
            logprobs: plan.logprobs,
            prompt_tokens,
            choices,
            failed: false,
            metering: Metering {
                state: state.clone(),
                key,
                model,
                arrived,
                prompt_tokens: prompt_tokens as u64,
                completion_tokens: 0,
                done: false,
                reservation: None,
            },
            state,
            arrived,
        }
    }

    /// Feeds the latency histograms with an event of choice `choice`.
    fn time(&mut self, ev: &Event) {
        let now = Instant::now();
        let lat = &self.state.latencies;
        match ev {
            Event::Token { choice, .. } => {
                self.metering.completion_tokens += 1;
                if let Some(c) = self.choices.get_mut(*choice) {
                    match c.last_token {
                        None => lat.ttft.observe(now - self.arrived),
                        Some(t) => lat.itl.observe(now - t),
                    }
                    c.last_token = Some(now);
                }
            }
            Event::Done { .. } => lat.e2e.observe(now - self.arrived),
            Event::Started { .. } | Event::Failed { .. } => {}
        }
    }

    fn usage(&self) -> Usage {
        let completion_tokens = self.choices.iter().map(|c| c.completion_tokens).sum();
        Usage {
            prompt_tokens: self.prompt_tokens,
            completion_tokens,
            total_tokens: self.prompt_tokens + completion_tokens,
        }
    }

    /// A token's text and bytes; `token_id:N` (vLLM's spelling with
    /// `return_tokens_as_token_ids`) for a model without a tokenizer.
    fn piece(&self, id: u32) -> (String, Vec<u8>) {
        let bytes = match self.served.model.tokenizer_opt() {
            Some(t) => t.token_piece(id, true).unwrap_or_default().to_vec(),
            None => format!("token_id:{id}").into_bytes(),
        };
        (String::from_utf8_lossy(&bytes).into_owned(), bytes)
    }

    /// The log-probability entry of one token, in the chat layout.
    fn token_logprob(&self, id: u32, logprob: f32, top: &[(u32, f32)]) -> TokenLogprob {
        let (token, bytes) = self.piece(id);
        TokenLogprob {
            token,
            logprob,
            bytes,
            top_logprobs: top
                .iter()
                .map(|&(t, lp)| {
                    let (token, bytes) = self.piece(t);
                    TopLogprob {
                        token,
                        logprob: lp,
                        bytes,
                    }
                })
                .collect(),
        }
    }

    /// Records one event (whole-response path).
    fn absorb(&mut self, ev: Event) -> Result<(), ApiError> {
        self.time(&ev);
        match ev {
            Event::Started { .. } => {}
            Event::Token {
                choice,
                token_id,
                text,
                logprob,
                top_logprobs,
            } => {
                let lp = self
                    .logprobs
                    .map(|_| self.token_logprob(token_id, logprob, &top_logprobs));
                let Some(c) = self.choices.get_mut(choice) else {
                    return Ok(());
                };
                c.completion_tokens += 1;
                if let Some(lp) = lp {
                    let offset = c.text.len();
                    c.text_logprobs.tokens.push(lp.token.clone());
                    c.text_logprobs.token_logprobs.push(lp.logprob);
                    c.text_logprobs.text_offset.push(offset);
                    c.text_logprobs.top_logprobs.push(top_map(&lp));
                    c.chat_logprobs.push(lp);
                }
                let (thinking, text, _) = c.split(Some(&text));
                c.thinking.push_str(&thinking);
                c.text.push_str(&text);
            }
            Event::Done {
                choice,
                finish_reason,
                ..
            } => {
                if let Some(c) = self.choices.get_mut(choice) {
                    let (thinking, text, _) = c.split(None);
                    c.thinking.push_str(&thinking);
                    c.text.push_str(&text);
                    c.finish_reason = Some(c.finish(finish_reason.as_str()));
                }
            }
            Event::Failed { error, .. } => {
                return Err(ApiError::engine(&error));
            }
        }
        Ok(())
    }

    fn into_response(self) -> Result<Response, ApiError> {
        let usage = self.usage();
        let want_lp = self.logprobs.is_some();
        let resp = match self.kind {
            Kind::Chat => Json(ChatCompletion {
                id: self.id,
                object: "chat.completion".into(),
                created: self.created,
                model: self.served.name.clone(),
                system_fingerprint: self.fingerprint,
                choices: self
                    .choices
                    .into_iter()
                    .enumerate()
                    .map(|(index, c)| ChatChoice {
                        index,
                        message: ChatMessageOut {
                            role: "assistant".into(),
                            content: (c.calls.is_empty() || !c.text.trim().is_empty())
                                .then_some(c.text),
                            reasoning_content: (!c.thinking.is_empty()).then_some(c.thinking),
                            refusal: None,
                            tool_calls: (!c.calls.is_empty()).then_some(c.calls),
                        },
                        logprobs: want_lp.then_some(ChatLogprobs {
                            content: c.chat_logprobs,
                            refusal: None,
                        }),
                        finish_reason: c.finish_reason.unwrap_or("stop").into(),
                    })
                    .collect(),
                usage,
            })
            .into_response(),
            Kind::Text => Json(Completion {
                id: self.id,
                object: "text_completion".into(),
                created: self.created,
                model: self.served.name.clone(),
                system_fingerprint: self.fingerprint,
                choices: self
                    .choices
                    .into_iter()
                    .enumerate()
                    .map(|(index, c)| CompletionChoice {
                        text: c.text,
                        index,
                        logprobs: want_lp.then_some(c.text_logprobs),
                        finish_reason: Some(c.finish_reason.unwrap_or("stop").into()),
                    })
                    .collect(),
                usage: Some(Some(usage)),
            })
            .into_response(),
        };
        Ok(resp)
    }

    fn usage_field(&self) -> Option<Option<Usage>> {
        self.include_usage.then_some(None)
    }

    fn sse<T: serde::Serialize>(value: &T) -> SseEvent {
        SseEvent::default().data(serde_json::to_string(value).unwrap_or_default())
    }

    fn chat_chunk(&self, choice: ChatChunkChoice) -> SseEvent {
        self.chat_chunk_with(vec![choice], self.usage_field())
    }

    fn text_chunk(&self, choice: CompletionChoice) -> SseEvent {
        self.text_chunk_with(vec![choice], self.usage_field())
    }

    fn chat_chunk_with(
        &self,
        choices: Vec<ChatChunkChoice>,
        usage: Option<Option<Usage>>,
    ) -> SseEvent {
        Self::sse(&ChatCompletionChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk".into(),
            created: self.created,
            model: self.served.name.clone(),
            system_fingerprint: self.fingerprint.clone(),
            choices,
            usage,
        })
    }

    fn text_chunk_with(
        &self,
        choices: Vec<CompletionChoice>,
        usage: Option<Option<Usage>>,
    ) -> SseEvent {
        Self::sse(&Completion {
            id: self.id.clone(),
            object: "text_completion".into(),
            created: self.created,
            model: self.served.name.clone(),
            system_fingerprint: self.fingerprint.clone(),
            choices,
            usage,
        })
    }

    /// The chunks one event produces (streaming path).
    fn chunks_for(&mut self, ev: Event) -> Vec<SseEvent> {
        self.time(&ev);
        match ev {
            Event::Started { choice } => match self.kind {
                // OpenAI opens each chat choice with the role and empty content.
                Kind::Chat => vec![self.chat_chunk(ChatChunkChoice {
                    index: choice,
                    delta: ChatDelta {
                        role: Some("assistant".into()),
                        content: Some(String::new()),
                        reasoning_content: None,
                        tool_calls: None,
                    },
                    logprobs: None,
                    finish_reason: None,
                })],
                Kind::Text => {
                    let echo = self
                        .choices
                        .get_mut(choice)
                        .map(|c| std::mem::take(&mut c.text))
                        .unwrap_or_default();
                    if echo.is_empty() {
                        Vec::new()
                    } else {
                        vec![self.text_chunk(CompletionChoice {
                            text: echo,
                            index: choice,
                            logprobs: None,
                            finish_reason: None,
                        })]
                    }
                }
            },
            Event::Token {
                choice,
                token_id,
                text,
                logprob,
                top_logprobs,
            } => {
                let (thinking, text, calls) = match self.choices.get_mut(choice) {
                    Some(c) => {
                        c.completion_tokens += 1;
                        c.split(Some(&text))
                    }
                    None => (String::new(), text, Vec::new()),
                };
                let lp = self
                    .logprobs
                    .map(|_| self.token_logprob(token_id, logprob, &top_logprobs));
                if text.is_empty() && thinking.is_empty() && calls.is_empty() && lp.is_none() {
                    return Vec::new();
                }
                match self.kind {
                    Kind::Chat => vec![
                        self.chat_chunk(ChatChunkChoice {
                            index: choice,
                            delta: ChatDelta {
                                role: None,
                                content: (!text.is_empty()
                                    || (calls.is_empty() && thinking.is_empty()))
                                .then_some(text),
                                reasoning_content: (!thinking.is_empty()).then_some(thinking),
                                tool_calls: (!calls.is_empty()).then_some(calls),
                            },
                            logprobs: lp.map(|l| ChatLogprobs {
                                content: vec![l],
                                refusal: None,
                            }),
                            finish_reason: None,
                        }),
                    ],
                    Kind::Text => {
                        let logprobs = lp.map(|l| CompletionLogprobs {
                            tokens: vec![l.token.clone()],
                            token_logprobs: vec![l.logprob],
                            top_logprobs: vec![top_map(&l)],
                            text_offset: vec![0],
                        });
                        vec![self.text_chunk(CompletionChoice {
                            text,
                            index: choice,
                            logprobs,
                            finish_reason: None,
                        })]
                    }
                }
            }
            Event::Done {
                choice,
                finish_reason,
                ..
            } => {
                let mut reason = finish_reason.as_str();
                match self.kind {
                    Kind::Chat => {
                        let mut out = Vec::new();
                        if let Some(c) = self.choices.get_mut(choice) {
                            let (thinking, text, calls) = c.split(None);
                            reason = c.finish(reason);
                            if !text.is_empty() || !thinking.is_empty() || !calls.is_empty() {
                                out.push(self.chat_chunk(ChatChunkChoice {
                                    index: choice,
                                    delta: ChatDelta {
                                        role: None,
                                        content: (!text.is_empty()).then_some(text),
                                        reasoning_content:
                                            (!thinking.is_empty()).then_some(thinking),
                                        tool_calls: (!calls.is_empty()).then_some(calls),
                                    },
                                    logprobs: None,
                                    finish_reason: None,
                                }));
                            }
                        }
                        out.push(self.chat_chunk(ChatChunkChoice {
                            index: choice,
                            delta: ChatDelta::default(),
                            logprobs: None,
                            finish_reason: Some(reason.into()),
                        }));
                        out
                    }
                    Kind::Text => vec![self.text_chunk(CompletionChoice {
                        text: String::new(),
                        index: choice,
                        logprobs: None,
                        finish_reason: Some(reason.into()),
                    })],
                }
            }
            Event::Failed { error, .. } => {
                self.failed = true;
                let err = ApiError::engine(&error);
                vec![Self::sse(&err.body()), SseEvent::default().data("[DONE]")]
            }
        }
    }

    /// The usage chunk (when asked for) and `[DONE]`.
    fn final_chunks(&self) -> Vec<SseEvent> {
        let mut out = Vec::new();
        if self.include_usage {
            let usage = Some(Some(self.usage()));
            out.push(match self.kind {
                Kind::Chat => self.chat_chunk_with(Vec::new(), usage),
                Kind::Text => self.text_chunk_with(Vec::new(), usage),
            });
        }
        out.push(SseEvent::default().data("[DONE]"));
        out
    }
}

/// The alternatives of one token in the completions layout: `{token: logprob}`.
fn top_map(lp: &TokenLogprob) -> serde_json::Map<String, serde_json::Value> {
    lp.top_logprobs
        .iter()
        .map(|t| (t.token.clone(), serde_json::Value::from(t.logprob)))
        .collect()
}
