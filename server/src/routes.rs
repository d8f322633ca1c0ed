//! The HTTP layer: routes, API-key check, request parsing and validation, and the response
//! bodies (JSON or server-sent events). Generation itself is the engine's.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Request as HttpRequest, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bitnet_run::chat::Message;
use bitnet_run::engine::{Penalties, Request};
use bitnet_run::sampling::SamplerConfig;
use serde::de::DeserializeOwned;
use subtle::ConstantTimeEq;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::error::ApiError;
use crate::generate::{Generation, Output};
use crate::openai::*;
use crate::state::{AppState, Loaded};

/// Request bodies larger than this get 413.
pub const BODY_LIMIT: usize = 4 << 20;

pub fn router(state: Arc<AppState>) -> Router {
    crate::ui::routes(Router::new())
        .route("/health", get(health))
        .route("/v1/models", get(models))
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/tokenize", post(tokenize))
        .route("/detokenize", post(detokenize))
        .route("/metrics", get(metrics))
        .layer(middleware::from_fn_with_state(Arc::clone(&state), auth))
        .layer(middleware::from_fn(declared_size))
        .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

/// Every route but these and the chat page's needs the API key, when the server has one.
const PUBLIC: [&str; 2] = ["/health", "/v1/models"];

async fn auth(State(state): State<Arc<AppState>>, request: HttpRequest, next: Next) -> Response {
    if let Some(key) = &state.api_key
        && !PUBLIC.contains(&request.uri().path())
        && !crate::ui::is_asset(request.uri().path())
    {
        let sent = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !bool::from(sent.as_bytes().ct_eq(key.as_bytes())) {
            return ApiError::unauthorized().into_response();
        }
    }
    next.run(request).await
}

/// A body declared larger than the limit is refused before it is read (one sent without a
/// length is cut off at the limit by `DefaultBodyLimit` instead; see [`parse`]).
async fn declared_size(request: HttpRequest, next: Next) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > BODY_LIMIT as u64) {
        return too_large().into_response();
    }
    next.run(request).await
}

fn too_large() -> ApiError {
    ApiError::too_large(format!(
        "the request body is larger than {} MiB",
        BODY_LIMIT >> 20
    ))
}

fn loaded(state: &AppState) -> Result<&Loaded, ApiError> {
    state
        .loaded
        .get()
        .ok_or_else(|| ApiError::unavailable("the model is still loading"))
}

/// A JSON body, with the parser's message (which names the field) as a 400, and 413 when too big.
fn parse<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let body = body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => too_large(),
        _ => ApiError::bad_request(e.body_text()),
    })?;
    serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

async fn health(State(state): State<Arc<AppState>>) -> Response {
    match state.loaded.get() {
        Some(_) => Json(serde_json::json!({"status": "ok"})).into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"status": "loading model"})),
        )
            .into_response(),
    }
}

async fn models(State(state): State<Arc<AppState>>) -> Result<Json<ModelList>, ApiError> {
    let l = loaded(&state)?;
    Ok(Json(ModelList {
        object: "list",
        data: vec![ModelCard {
            id: l.model_id.clone(),
            object: "model",
            created: l.created,
            owned_by: "bitnet-rs",
        }],
    }))
}

async fn metrics(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let l = loaded(&state)?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        l.metrics.render(),
    )
        .into_response())
}

async fn tokenize(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let l = loaded(&state)?;
    let req: TokenizeRequest = parse(body)?;
    let tok = tokenizer(l, "content")?;
    let ids = if req.add_special {
        tok.encode_prompt(&req.content)
    } else {
        tok.encode(&req.content, false)
    }
    .map_err(|e| ApiError::invalid("content", e.to_string()))?;
    Ok(Json(serde_json::json!({ "tokens": ids })))
}

async fn detokenize(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let l = loaded(&state)?;
    let req: DetokenizeRequest = parse(body)?;
    let tok = tokenizer(l, "tokens")?;
    check_ids(l, &req.tokens, "tokens")?;
    let text = tok
        .decode(&req.tokens)
        .map_err(|e| ApiError::invalid("tokens", e.to_string()))?;
    Ok(Json(serde_json::json!({ "content": text })))
}

fn tokenizer<'a>(
    l: &'a Loaded,
    param: &'static str,
) -> Result<&'a bitnet_run::tokenizer::Tokenizer, ApiError> {
    l.tokenizer.as_ref().ok_or_else(|| {
        ApiError::invalid(
            param,
            "this model has no tokenizer: send token ids (`prompt` as an array of integers to /v1/completions)",
        )
    })
}

fn check_ids(l: &Loaded, ids: &[u32], param: &'static str) -> Result<(), ApiError> {
    match ids.iter().find(|&&id| id >= l.vocab) {
        Some(id) => Err(ApiError::invalid(
            param,
            format!("token id {id} is outside the vocabulary of {}", l.vocab),
        )),
        None => Ok(()),
    }
}

/// A request's generation settings, validated; each error names its field.
struct Settings {
    request: Request,
    n: usize,
    stop: Vec<String>,
    stream: bool,
    include_usage: bool,
}

/// `logprobs` (and chat's `top_logprobs`): how many alternatives to report with each token, or
/// `None` for no log-probabilities.
fn logprobs(p: &Params, kind: Kind) -> Result<Option<usize>, ApiError> {
    use serde_json::Value;
    let count = |param: &'static str, v: i64, max: i64| match usize::try_from(v) {
        Ok(n) if v <= max => Ok(n),
        _ => Err(ApiError::invalid(
            param,
            format!("{param} is {v}; it must be between 0 and {max}"),
        )),
    };
    match (kind, &p.logprobs) {
        (Kind::Chat, None | Some(Value::Null) | Some(Value::Bool(false))) => match p.top_logprobs {
            Some(_) => Err(ApiError::invalid(
                "top_logprobs",
                "top_logprobs needs logprobs: true",
            )),
            None => Ok(None),
        },
        (Kind::Chat, Some(Value::Bool(true))) => {
            count("top_logprobs", p.top_logprobs.unwrap_or(0), 20).map(Some)
        }
        (Kind::Chat, Some(_)) => Err(ApiError::invalid(
            "logprobs",
            "logprobs must be true or false",
        )),
        (Kind::Completion, None | Some(Value::Null)) => Ok(None),
        (Kind::Completion, Some(v)) => match v.as_i64() {
            Some(n) => count("logprobs", n, 5).map(Some),
            None => Err(ApiError::invalid(
                "logprobs",
                "logprobs must be an integer between 0 and 5",
            )),
        },
    }
}

fn settings(l: &Loaded, p: &Params, kind: Kind, prompt: Vec<u32>) -> Result<Settings, ApiError> {
    let ctx = l.engine.config().ctx;
    let room = ctx.saturating_sub(prompt.len());
    if prompt.is_empty() {
        return Err(ApiError::invalid("prompt", "the prompt is empty"));
    }
    if room == 0 {
        return Err(ApiError::invalid(
            "messages",
            format!(
                "the prompt is {} tokens, which leaves no room to generate in the context of {ctx} tokens per slot (-c)",
                prompt.len()
            ),
        ));
    }
    let max_tokens = match p.max_completion_tokens.or(p.max_tokens) {
        None => room,
        Some(m) if m >= 1 => usize::try_from(m).unwrap_or(usize::MAX),
        Some(m) => {
            let param = if p.max_completion_tokens.is_some() {
                "max_completion_tokens"
            } else {
                "max_tokens"
            };
            return Err(ApiError::invalid(
                param,
                format!("{param} is {m}; it must be at least 1"),
            ));
        }
    };
    let range = |param: &'static str, v: Option<f32>, lo: f32, hi: f32| match v {
        Some(x) if !(x.is_finite() && (lo..=hi).contains(&x)) => Err(ApiError::invalid(
            param,
            format!("{param} is {x}; it must be between {lo} and {hi}"),
        )),
        _ => Ok(v),
    };
    let d = &l.defaults;
    let temperature = range("temperature", p.temperature, 0.0, 2.0)?.unwrap_or(d.temperature);
    let top_p = range("top_p", p.top_p, 0.0, 1.0)?.unwrap_or(d.top_p);
    if top_p == 0.0 {
        return Err(ApiError::invalid("top_p", "top_p must be greater than 0"));
    }
    let min_p = range("min_p", p.min_p, 0.0, 1.0)?.unwrap_or(d.min_p);
    let presence = range("presence_penalty", p.presence_penalty, -2.0, 2.0)?.unwrap_or(0.0);
    let frequency = range("frequency_penalty", p.frequency_penalty, -2.0, 2.0)?.unwrap_or(0.0);
    let top_k = match p.top_k {
        None => d.top_k,
        Some(k) if k <= 0 => 0,
        Some(k) => usize::try_from(k).unwrap_or(usize::MAX),
    };
    let n = match p.n {
        None => 1,
        Some(n @ 1..=16) => n as usize,
        Some(n) => {
            return Err(ApiError::invalid(
                "n",
                format!("n is {n}; it must be between 1 and 16"),
            ));
        }
    };
    let stop = match &p.stop {
        None => Vec::new(),
        Some(Stop::One(s)) => vec![s.clone()],
        Some(Stop::Many(v)) => v.clone(),
    };
    if stop.len() > 4 || stop.iter().any(|s| s.is_empty()) {
        return Err(ApiError::invalid(
            "stop",
            "stop takes up to 4 non-empty strings",
        ));
    }
    if !stop.is_empty() && l.tokenizer.is_none() {
        return Err(ApiError::invalid(
            "stop",
            "stop strings need a model with a tokenizer",
        ));
    }
    let mut logit_bias = Vec::new();
    for (key, &bias) in p.logit_bias.iter().flatten() {
        let id = key
            .parse::<u32>()
            .ok()
            .filter(|&id| id < l.vocab)
            .ok_or_else(|| {
                ApiError::invalid(
                    "logit_bias",
                    format!("logit_bias key {key:?} is not a token id below {}", l.vocab),
                )
            })?;
        range("logit_bias", Some(bias), -100.0, 100.0)?;
        logit_bias.push((id, bias));
    }
    let seed = p.seed.unwrap_or_else(bitnet_run::sampling::random_seed);
    let stop_ids = match (&l.tokenizer, p.ignore_eos) {
        (Some(tok), false) => tok.eos().to_vec(),
        _ => Vec::new(),
    };
    Ok(Settings {
        request: Request {
            prompt,
            max_tokens,
            sampling: SamplerConfig {
                temperature,
                top_k,
                top_p,
                min_p,
                seed,
                ..d.clone()
            },
            stop_ids,
            penalties: Penalties {
                presence,
                frequency,
                logit_bias,
            },
            logprobs: logprobs(p, kind)?,
        },
        n,
        stop,
        stream: p.stream,
        include_usage: p.stream_options.as_ref().is_some_and(|o| o.include_usage),
    })
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A response id: unique per server process.
fn response_id(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{prefix}-{:x}{:06x}",
        now(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

async fn chat(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let l = loaded(&state)?;
    let req: ChatRequest = parse(body)?;
    let Some(messages) = req.messages.filter(|m| !m.is_empty()) else {
        return Err(ApiError::invalid(
            "messages",
            "messages must be a non-empty array",
        ));
    };
    let tok = tokenizer(l, "messages")?;
    let Some(template) = &l.template else {
        return Err(ApiError::invalid(
            "messages",
            "this model has no chat template; use /v1/completions",
        ));
    };
    let messages: Vec<Message> = messages
        .iter()
        .map(|m| {
            let content = match &m.content {
                Content::Text(t) => t.clone(),
                Content::Parts(parts) => parts
                    .iter()
                    .filter(|p| p.kind == "text")
                    .map(|p| p.text.as_str())
                    .collect(),
            };
            Message::new(&m.role, &content)
        })
        .collect();
    let text = template
        .render(&messages, true)
        .map_err(|e| ApiError::invalid("messages", format!("the chat template failed: {e}")))?;
    let prompt = tok
        .encode(&text, false)
        .map_err(|e| ApiError::invalid("messages", e.to_string()))?;
    let s = settings(l, &req.params, Kind::Chat, prompt)?;
    let model = req.model.unwrap_or_else(|| l.model_id.clone());
    respond(Arc::clone(&state), s, Kind::Chat, model).await
}

async fn completions(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let l = loaded(&state)?;
    let req: CompletionRequest = parse(body)?;
    let prompt = match req.prompt {
        None => return Err(ApiError::invalid("prompt", "prompt is required")),
        Some(Prompt::Tokens(ids)) => {
            check_ids(l, &ids, "prompt")?;
            ids
        }
        Some(Prompt::Text(text)) => tokenizer(l, "prompt")?
            .encode_prompt(&text)
            .map_err(|e| ApiError::invalid("prompt", e.to_string()))?,
        Some(Prompt::Batch(texts)) => match texts.as_slice() {
            [text] => tokenizer(l, "prompt")?
                .encode_prompt(text)
                .map_err(|e| ApiError::invalid("prompt", e.to_string()))?,
            _ => {
                return Err(ApiError::invalid(
                    "prompt",
                    "several prompts in one request are not supported; send one request each",
                ));
            }
        },
    };
    let s = settings(l, &req.params, Kind::Completion, prompt)?;
    let model = req.model.unwrap_or_else(|| l.model_id.clone());
    respond(Arc::clone(&state), s, Kind::Completion, model).await
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Chat,
    Completion,
}

async fn respond(
    state: Arc<AppState>,
    s: Settings,
    kind: Kind,
    model: String,
) -> Result<Response, ApiError> {
    let deadline = Instant::now() + state.timeout;
    let with_ids = state.loaded.get().is_some_and(|l| l.tokenizer.is_none());
    let with_logprobs = s.request.logprobs.is_some();
    let mut generation = Generation::start(Arc::clone(&state), s.request, s.n, s.stop)?;
    let id = response_id(if kind == Kind::Chat {
        "chatcmpl"
    } else {
        "cmpl"
    });
    let created = now();
    if s.stream {
        let (tx, rx) = mpsc::channel::<Result<SseEvent, Infallible>>(64);
        let chunks = Chunks {
            id,
            created,
            model,
            kind,
            with_ids,
            with_logprobs,
        };
        let timeout = (deadline, timeout_error(&state));
        tokio::spawn(async move {
            stream(&mut generation, &chunks, s.n, s.include_usage, timeout, &tx).await;
        });
        return Ok(Sse::new(ReceiverStream::new(rx)).into_response());
    }
    let mut texts = vec![String::new(); s.n];
    let mut ids = vec![Vec::new(); s.n];
    let mut logprobs = vec![Vec::new(); s.n];
    let mut finish = vec!["length"; s.n];
    loop {
        let out = tokio::time::timeout_at(deadline.into(), generation.next())
            .await
            .map_err(|_| timeout_error(&state))?;
        match out {
            None => break,
            Some(Output::Delta {
                index,
                text,
                ids: i,
                logprobs: lp,
            }) => {
                texts[index] += &text;
                ids[index].extend(i);
                logprobs[index].extend(lp);
            }
            Some(Output::Done {
                index,
                finish_reason,
            }) => finish[index] = finish_reason,
            Some(Output::Failed(e)) => return Err(e),
        }
    }
    let usage = generation.usage;
    Ok(match kind {
        Kind::Chat => Json(ChatResponse {
            id,
            object: "chat.completion",
            created,
            model,
            choices: texts
                .into_iter()
                .zip(finish)
                .zip(logprobs)
                .enumerate()
                .map(|(index, ((content, finish_reason), lp))| ChatChoice {
                    index,
                    message: AssistantMessage {
                        role: "assistant",
                        content,
                    },
                    finish_reason,
                    logprobs: with_logprobs.then(|| ChatLogprobs::new(&lp)),
                })
                .collect(),
            usage,
        })
        .into_response(),
        Kind::Completion => Json(Completion {
            id,
            object: "text_completion",
            created,
            model,
            choices: texts
                .into_iter()
                .zip(finish)
                .zip(ids)
                .zip(logprobs)
                .enumerate()
                .map(
                    |(index, (((text, finish_reason), ids), lp))| CompletionChoice {
                        index,
                        text,
                        finish_reason: Some(finish_reason),
                        logprobs: with_logprobs.then(|| CompletionLogprobs::new(&lp)),
                        tokens: with_ids.then_some(ids),
                    },
                )
                .collect(),
            usage: Some(usage),
        })
        .into_response(),
    })
}

fn timeout_error(state: &AppState) -> ApiError {
    ApiError::timeout(format!(
        "the request took longer than the server's --timeout of {} s and was cancelled",
        state.timeout.as_secs()
    ))
}

/// How a stream's chunks are labelled.
struct Chunks {
    id: String,
    created: u64,
    model: String,
    kind: Kind,
    with_ids: bool,
    with_logprobs: bool,
}

impl Chunks {
    /// The chunk for choice `index` with `text` (or, for chat, the role when `role` is set).
    fn chunk(
        &self,
        index: usize,
        text: Option<String>,
        ids: Vec<u32>,
        logprobs: &[TokenLogprob],
        role: bool,
        finish_reason: Option<&'static str>,
    ) -> String {
        // Content chunks carry their tokens' log-probabilities when asked; role and finish
        // chunks carry none.
        let with_logprobs = self.with_logprobs && !role && finish_reason.is_none();
        match self.kind {
            Kind::Chat => serde_json::to_string(&ChatChunk {
                id: self.id.clone(),
                object: "chat.completion.chunk",
                created: self.created,
                model: self.model.clone(),
                choices: vec![ChatChunkChoice {
                    index,
                    delta: Delta {
                        role: role.then_some("assistant"),
                        content: text,
                    },
                    finish_reason,
                    logprobs: with_logprobs.then(|| ChatLogprobs::new(logprobs)),
                }],
                usage: None,
            }),
            Kind::Completion => serde_json::to_string(&Completion {
                id: self.id.clone(),
                object: "text_completion",
                created: self.created,
                model: self.model.clone(),
                choices: vec![CompletionChoice {
                    index,
                    text: text.unwrap_or_default(),
                    finish_reason,
                    logprobs: with_logprobs.then(|| CompletionLogprobs::new(logprobs)),
                    tokens: self.with_ids.then_some(ids),
                }],
                usage: None,
            }),
        }
        .expect("serializable")
    }

    fn usage(&self, usage: Usage) -> String {
        let object = match self.kind {
            Kind::Chat => "chat.completion.chunk",
            Kind::Completion => "text_completion",
        };
        serde_json::json!({
            "id": self.id, "object": object, "created": self.created, "model": self.model,
            "choices": [], "usage": usage,
        })
        .to_string()
    }
}

/// Drive a streaming generation into SSE events until it ends, the client goes away (the
/// generation is then dropped, which cancels it), or the deadline passes.
async fn stream(
    generation: &mut Generation,
    chunks: &Chunks,
    n: usize,
    include_usage: bool,
    (deadline, timed_out): (Instant, ApiError),
    tx: &mpsc::Sender<Result<SseEvent, Infallible>>,
) {
    let send =
        |data: String| async move { tx.send(Ok(SseEvent::default().data(data))).await.is_ok() };
    if chunks.kind == Kind::Chat {
        for index in 0..n {
            let role = chunks.chunk(index, Some(String::new()), Vec::new(), &[], true, None);
            if !send(role).await {
                return;
            }
        }
    }
    loop {
        let out = tokio::select! {
            out = generation.next() => out,
            _ = tx.closed() => return,
            _ = tokio::time::sleep_until(deadline.into()) => {
                let _ = send(timed_out.body()).await;
                return;
            }
        };
        let data = match out {
            None => break,
            Some(Output::Delta {
                index,
                text,
                ids,
                logprobs,
            }) => chunks.chunk(index, Some(text), ids, &logprobs, false, None),
            Some(Output::Done {
                index,
                finish_reason,
            }) => {
                let empty = match chunks.kind {
                    Kind::Chat => None,
                    Kind::Completion => Some(String::new()),
                };
                chunks.chunk(index, empty, Vec::new(), &[], false, Some(finish_reason))
            }
            Some(Output::Failed(e)) => {
                let _ = send(e.body()).await;
                return;
            }
        };
        if !send(data).await {
            return;
        }
    }
    if include_usage && !send(chunks.usage(generation.usage)).await {
        return;
    }
    let _ = send("[DONE]".to_string()).await;
}
