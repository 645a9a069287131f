//! `POST /v1/embeddings`: text embeddings from a BERT-family encoder
//! ([`engine::embed::Embedder`]), served next to the chat models. Each embedding model has
//! one worker thread that batches: the texts of every request waiting when it starts a
//! batch go through the encoder together (up to [`MAX_BATCH_TOKENS`]), so concurrent
//! clients share the matrix products.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use engine::embed::Embedder;
use serde_json::Value;
use tokio::sync::oneshot;

use super::AppState;
use super::auth::Principal;
use super::error::{ApiError, ErrorBody};
use super::extract::JsonBody;
use crate::store::{DeploymentRecord, ModelRecord, unix_now};

pub use oasis_api::openai::{
    EmbeddingData, EmbeddingList, EmbeddingRequest, EmbeddingUsage, MAX_INPUTS,
};
/// Most tokens one encoder batch takes (the requests waiting are joined up to this).
pub const MAX_BATCH_TOKENS: usize = 16_384;

/// An embedding model being served: a deployment of a catalog model whose format is
/// [`crate::import::EMBEDDING_FORMAT`].
#[derive(Debug)]
pub struct EmbeddingModel {
    /// The served name (the deployment's).
    pub name: String,
    pub deployment: DeploymentRecord,
    pub record: ModelRecord,
    pub embedder: Arc<Embedder>,
    /// Requests queued or being encoded.
    waiting: Arc<AtomicUsize>,
    /// Requests answered, and their tokens, since the model was loaded.
    pub requests_total: AtomicU64,
    pub prompt_tokens_total: AtomicU64,
    queue: SyncSender<Batch>,
}

/// One request's texts, as token ids, and where its vectors go.
struct Batch {
    ids: Vec<Vec<u32>>,
    reply: oneshot::Sender<Result<Vec<Vec<f32>>, String>>,
}

impl EmbeddingModel {
    /// Loads catalog model `record` as deployment `deployment` and starts its worker
    /// (`waiting`: requests that may queue). The worker ends when the model is dropped
    /// (replaced or undeployed, once the requests holding it have finished).
    pub fn start(
        record: ModelRecord,
        deployment: DeploymentRecord,
        threads: usize,
        waiting: usize,
    ) -> anyhow::Result<EmbeddingModel> {
        let embedder = Arc::new(Embedder::open(&record.path, threads)?);
        let (queue, rx) = sync_channel::<Batch>(waiting.max(1));
        let worker = embedder.clone();
        let pending = Arc::new(AtomicUsize::new(0));
        let counter = pending.clone();
        std::thread::Builder::new()
            .name(format!("embed-{}", deployment.name))
            .spawn(move || run(&worker, &rx, &counter))?;
        Ok(EmbeddingModel {
            name: deployment.name.clone(),
            deployment,
            record,
            embedder,
            waiting: pending,
            requests_total: AtomicU64::new(0),
            prompt_tokens_total: AtomicU64::new(0),
            queue,
        })
    }

    /// Requests queued or being encoded now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }
}

/// The worker: takes a request, joins every request already waiting (within the token
/// budget), runs them as one batch and answers each.
fn run(embedder: &Embedder, rx: &Receiver<Batch>, waiting: &AtomicUsize) {
    while let Ok(first) = rx.recv() {
        let mut tokens: usize = first.ids.iter().map(Vec::len).sum();
        let mut batches = vec![first];
        while tokens < MAX_BATCH_TOKENS {
            match rx.try_recv() {
                Ok(b) => {
                    tokens += b.ids.iter().map(Vec::len).sum::<usize>();
                    batches.push(b);
                }
                Err(_) => break,
            }
        }
        let taken = batches.len();
        let _answered = Answered(waiting, taken);
        // Requests whose client has gone are dropped before the work.
        batches.retain(|b| !b.reply.is_closed());
        let all: Vec<Vec<u32>> = batches.iter().flat_map(|b| b.ids.iter().cloned()).collect();
        if all.is_empty() {
            continue;
        }
        // At most MAX_BATCH_TOKENS through the encoder at once, however large a request
        // is, so one client cannot make the worker take gigabytes.
        let mut vectors = Vec::with_capacity(all.len());
        let mut result = Ok(());
        let mut start = 0;
        while start < all.len() {
            let mut end = start + 1;
            let mut tokens = all[start].len();
            while end < all.len() && tokens + all[end].len() <= MAX_BATCH_TOKENS {
                tokens += all[end].len();
                end += 1;
            }
            match embedder.embed_ids(&all[start..end]) {
                Ok(v) => vectors.extend(v),
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
            start = end;
        }
        match result.map(|()| vectors) {
            Ok(vectors) => {
                let mut vectors = vectors.into_iter();
                for b in batches {
                    let mine: Vec<Vec<f32>> = vectors.by_ref().take(b.ids.len()).collect();
                    let _ = b.reply.send(Ok(mine));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "embedding batch failed");
                for b in batches {
                    let _ = b.reply.send(Err(e.to_string()));
                }
            }
        }
    }
}

/// Takes `.1` requests off the waiting count when a batch is done, however it ends.
struct Answered<'a>(&'a AtomicUsize, usize);

impl Drop for Answered<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(self.1, Ordering::Relaxed);
    }
}

/// The texts of `input`, checked.
fn texts(input: &Value) -> Result<Vec<String>, ApiError> {
    let list: Vec<&Value> = match input {
        Value::String(_) => vec![input],
        Value::Array(items) if !items.is_empty() && items.len() <= MAX_INPUTS => {
            items.iter().collect()
        }
        Value::Array(items) => {
            return Err(ApiError::invalid_param(
                "input",
                format!("`input` holds {} texts; 1 to {MAX_INPUTS}", items.len()),
            ));
        }
        _ => {
            return Err(ApiError::invalid_param(
                "input",
                "`input` must be a string or a list of strings",
            ));
        }
    };
    let mut out = Vec::with_capacity(list.len());
    for (i, v) in list.into_iter().enumerate() {
        match v {
            Value::String(s) if !s.is_empty() => out.push(s.clone()),
            Value::String(_) => {
                return Err(ApiError::invalid_param(
                    format!("input[{i}]"),
                    format!("`input[{i}]` is empty; every text needs at least one character"),
                ));
            }
            Value::Number(_) | Value::Array(_) => {
                return Err(ApiError::invalid_param(
                    "input",
                    "token-id input is not supported by this model's tokenizer; send text",
                ));
            }
            _ => {
                return Err(ApiError::invalid_param(
                    format!("input[{i}]"),
                    format!("`input[{i}]` must be a string"),
                ));
            }
        }
    }
    Ok(out)
}

/// Embed texts.
#[utoipa::path(post, path = "/v1/embeddings", request_body = EmbeddingRequest,
    responses(
        (status = 200, description = "One vector per text, in order", body = EmbeddingList),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
pub async fn embeddings(
    State(st): State<AppState>,
    who: Option<axum::Extension<Principal>>,
    JsonBody(req): JsonBody<EmbeddingRequest>,
) -> Result<Response, ApiError> {
    let arrived = Instant::now();
    if st.is_draining() {
        return Err(ApiError::overloaded(
            "The server is shutting down",
            Duration::from_secs(5),
        ));
    }
    let Some(model) = st.catalog.embedder(&req.model) else {
        if st.catalog.get(&req.model).is_some() {
            return Err(ApiError::invalid_param(
                "model",
                format!(
                    "`{}` is a chat model; embeddings need an embedding model (served: {})",
                    req.model,
                    list_or_none(&st.catalog.embedder_ids())
                ),
            ));
        }
        return Err(ApiError::model_not_found(&req.model, &st.catalog.all_ids()));
    };
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::invalid_param(
                "encoding_format",
                format!("`encoding_format` must be float or base64; got `{other}`"),
            ));
        }
    };
    let dims = model.embedder.dimensions();
    if let Some(d) = req.dimensions
        && d != dims as i64
    {
        return Err(ApiError::invalid_param(
            "dimensions",
            format!(
                "`{}` gives {dims} dimensions; it cannot give {d}",
                model.name
            ),
        ));
    }
    let texts = texts(&req.input)?;
    let embedder = model.embedder.clone();
    let ids = tokio::task::spawn_blocking(move || {
        texts
            .iter()
            .map(|t| embedder.tokenize(t))
            .collect::<Result<Vec<_>, _>>()
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(|e| ApiError::invalid_param("input", e.to_string()))?;
    let prompt_tokens: usize = ids.iter().map(Vec::len).sum();

    // The key's model list and limits, as for generation.
    let who = who.map(|w| w.0);
    let key = who.as_ref().and_then(|w| w.key.as_ref());
    let mut reservation = None;
    if let Some(key) = key {
        reservation = Some(super::completions::admit_key(
            &st,
            key,
            &[model.name.as_str()],
            prompt_tokens as u64,
            0,
            0,
        )?);
    }
    let settle = |failed: bool| {
        if let Some(r) = &reservation {
            st.keys
                .settle(r, if failed { 0 } else { prompt_tokens as u64 }, 0);
        }
        crate::metering::Record {
            day: crate::auth::day_of(unix_now()),
            key: key.map_or_else(|| "anonymous".to_string(), |k| k.id.clone()),
            model: model.name.clone(),
            counts: crate::metering::Counts {
                requests: 1,
                prompt_tokens: if failed { 0 } else { prompt_tokens as u64 },
                completion_tokens: 0,
                failed: u64::from(failed),
                latency_ms: arrived.elapsed().as_millis() as u64,
            },
        }
    };

    let count = ids.len();
    let (reply, answer) = oneshot::channel();
    model.waiting.fetch_add(1, Ordering::Relaxed);
    let sent = model.queue.try_send(Batch { ids, reply });
    if sent.is_err() {
        model.waiting.fetch_sub(1, Ordering::Relaxed);
    }
    match sent {
        Ok(()) => {}
        Err(TrySendError::Full(_)) => {
            st.meter.record(settle(true)).await;
            return Err(ApiError::queue_full(
                format!(
                    "The model `{}` has {} requests waiting, its limit; retry shortly",
                    model.name, st.config.max_waiting
                ),
                Duration::from_secs(1),
            ));
        }
        Err(TrySendError::Disconnected(_)) => {
            st.meter.record(settle(true)).await;
            return Err(ApiError::engine(&engine::EngineError::Stopped(format!(
                "the encoder of `{}` has stopped",
                model.name
            ))));
        }
    }
    let limit = st.config.request_timeout;
    let vectors = match tokio::time::timeout(limit, answer).await {
        Ok(Ok(Ok(v))) if v.len() == count => v,
        Ok(Ok(Err(e))) => {
            st.meter.record(settle(true)).await;
            return Err(ApiError::engine(&engine::EngineError::Internal(e)));
        }
        Ok(_) => {
            st.meter.record(settle(true)).await;
            return Err(ApiError::engine(&engine::EngineError::Stopped(format!(
                "the encoder of `{}` has stopped",
                model.name
            ))));
        }
        Err(_) => {
            st.meter.record(settle(true)).await;
            return Err(ApiError::timeout(limit));
        }
    };
    st.meter.record(settle(false)).await;
    model.requests_total.fetch_add(1, Ordering::Relaxed);
    model
        .prompt_tokens_total
        .fetch_add(prompt_tokens as u64, Ordering::Relaxed);
    let data = vectors
        .into_iter()
        .enumerate()
        .map(|(index, v)| EmbeddingData {
            object: "embedding".into(),
            index,
            embedding: if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                Value::from(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                Value::from(v)
            },
        })
        .collect();
    Ok(Json(EmbeddingList {
        object: "list".into(),
        data,
        model: model.name.clone(),
        usage: EmbeddingUsage {
            prompt_tokens,
            total_tokens: prompt_tokens,
        },
    })
    .into_response())
}

fn list_or_none(ids: &[String]) -> String {
    if ids.is_empty() {
        "none".to_string()
    } else {
        ids.join(", ")
    }
}
