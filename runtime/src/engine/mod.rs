//! The serving engine: many requests share one loaded model. Each running request owns a slot (a
//! KV cache); one thread runs continuous batching: every step takes one token from each generating
//! sequence plus prompt chunks of newly admitted ones (up to a token budget, and optionally, while
//! others generate, only as many as keep the step short: [`EngineConfig::stall`]) and runs them
//! as one batched forward ([`Runner::step`]), so each weight matrix is read once for all of them.
//! Requests join and leave between steps; each samples with its own parameters and seed. A slot
//! keeps its cache after its request, and a new request goes to the free slot sharing the longest
//! prefix with its prompt, which then runs only the rest.
//!
//! ```no_run
//! use std::sync::Arc;
//! use bitnet_run::engine::{Engine, EngineConfig, Event, Request};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let file = bitnet_format::BitnetFile::open("model.bitnet")?;
//! let model = bitnet_run::model::Model::load(file, bitnet_run::kernels::KernelPath::detect(), 2)?;
//! let engine = Engine::start(Arc::new(model), EngineConfig::default())?;
//! let request = Request::greedy(vec![1, 15043, 29892], 16);
//! for event in engine.submit(request)? {
//!     if let Event::Token { id, .. } = event {
//!         println!("{id}");
//!     }
//! }
//! # Ok(())
//! # }
//! ```

mod pace;
mod plan;

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Instant;

use crate::model::{KvCache, KvTypes, Logits, Model, ModelError, Runner, SeqStep, StepLogits};
use crate::sampling::{self, Logprobs, Sampler, SamplerConfig};

use pace::Pace;
use plan::{Work, choose_slot, plan_step, prompt_budget};

/// How the engine runs.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Sequences that can run at once, each with its own KV cache.
    pub slots: usize,
    /// Positions per slot.
    pub ctx: usize,
    /// Tokens per step: every generating sequence's one, then prompt chunks up to this.
    pub step_tokens: usize,
    /// While sequences generate, a step takes prompt tokens only as far as it then takes at most
    /// `1 + stall` times a step of all running sequences generating (by the costs of the steps
    /// run so far), so that a newcomer's prompt delays the running streams' next tokens by little,
    /// at the cost of its own first token; `None` (the default): only `step_tokens` limits them.
    pub stall: Option<f64>,
    /// Requests that may wait for a slot; more are refused ([`SubmitError::QueueFull`]).
    pub max_waiting: usize,
    /// Each slot's KV cache element types.
    pub cache: KvTypes,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            slots: 4,
            ctx: 4096,
            step_tokens: 32,
            stall: None,
            max_waiting: 64,
            cache: KvTypes::default(),
        }
    }
}

/// A generation request, in token ids.
#[derive(Debug, Clone)]
pub struct Request {
    pub prompt: Vec<u32>,
    /// Tokens to generate at most.
    pub max_tokens: usize,
    pub sampling: SamplerConfig,
    /// Ids that end generation when sampled (not emitted); empty: only `max_tokens` and the
    /// context end it.
    pub stop_ids: Vec<u32>,
    pub penalties: Penalties,
    /// Report each generated token's log-probability and this many most likely alternatives
    /// ([`Logprobs`]); `None` reports none.
    pub logprobs: Option<usize>,
}

/// OpenAI's logit adjustments, applied before sampling: each token's logit is lowered by
/// `frequency · count + presence · (count > 0)`, `count` being how often it was generated so
/// far (the prompt does not count), and raised by its `logit_bias`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Penalties {
    pub presence: f32,
    pub frequency: f32,
    pub logit_bias: Vec<(u32, f32)>,
}

impl Penalties {
    fn is_none(&self) -> bool {
        self.presence == 0.0 && self.frequency == 0.0 && self.logit_bias.is_empty()
    }

    /// `logits` adjusted for the tokens `generated` so far.
    fn apply(&self, logits: &[f32], generated: &[u32]) -> Vec<f32> {
        let mut out = logits.to_vec();
        let mut counts = std::collections::HashMap::<u32, usize>::new();
        for &id in generated {
            *counts.entry(id).or_default() += 1;
        }
        for (id, n) in counts {
            if let Some(l) = out.get_mut(id as usize) {
                *l -= self.frequency * n as f32 + self.presence;
            }
        }
        for &(id, bias) in &self.logit_bias {
            if let Some(l) = out.get_mut(id as usize) {
                *l += bias;
            }
        }
        out
    }
}

impl Request {
    /// Greedy decoding of up to `max_tokens` tokens, with no stop ids.
    pub fn greedy(prompt: Vec<u32>, max_tokens: usize) -> Self {
        Request {
            prompt,
            max_tokens,
            sampling: SamplerConfig {
                temperature: 0.0,
                ..SamplerConfig::default()
            },
            stop_ids: Vec::new(),
            penalties: Penalties::default(),
            logprobs: None,
        }
    }
}

/// What a request reports, in order: `Started`, then `Token`s, then `Finished`.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The request has a slot; `cached_tokens` of its prompt were already in that slot's cache.
    Started {
        cached_tokens: usize,
    },
    Token {
        id: u32,
        /// When the request asked for them.
        logprobs: Option<Logprobs>,
    },
    Finished {
        reason: FinishReason,
        usage: Usage,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum FinishReason {
    /// A stop id was sampled.
    Stop,
    /// `max_tokens` were generated, or the slot's context is full.
    Length,
    /// Cancelled by the client (or by the engine's shutdown).
    Cancelled,
    /// The forward pass failed (the message says why).
    Error(String),
}

/// Token counts of a request, as the OpenAI API reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: usize,
    /// Of `prompt_tokens`, those taken from the slot's cache instead of run.
    pub cached_tokens: usize,
    pub completion_tokens: usize,
}

/// Why a request was not accepted.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SubmitError {
    #[error("the prompt is empty")]
    EmptyPrompt,
    #[error(
        "the prompt is {tokens} tokens, which leaves no room to generate in the context of {ctx}"
    )]
    PromptTooLong { tokens: usize, ctx: usize },
    #[error("token id {id} is outside the vocabulary of {vocab}")]
    TokenOutOfRange { id: u32, vocab: u32 },
    #[error("{0}")]
    Sampling(String),
    #[error("{waiting} requests are already waiting for a slot; try again shortly")]
    QueueFull { waiting: usize },
    #[error("the engine is shutting down")]
    ShuttingDown,
}

/// Why the engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("an engine needs at least one slot and a context of at least 2 positions")]
    Config,
    #[error("could not start the engine thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// Counters for monitoring, updated by the engine thread.
#[derive(Debug, Default)]
pub struct EngineStats {
    pub waiting: AtomicUsize,
    pub running: AtomicUsize,
    pub requests_total: AtomicU64,
    /// Prompt tokens run (cached ones excluded).
    pub prompt_tokens_total: AtomicU64,
    pub cached_tokens_total: AtomicU64,
    pub generated_tokens_total: AtomicU64,
    pub steps_total: AtomicU64,
    /// Sum over steps of the sequences in the step (divide by `steps_total` for the mean batch).
    pub step_sequences_total: AtomicU64,
    /// Sequences in the last step.
    pub last_step_sequences: AtomicUsize,
}

/// Receives a request's events; returns false once nobody listens (the request is then cancelled).
pub type EventSink = Box<dyn FnMut(Event) -> bool + Send>;

struct Job {
    request: Request,
    sink: EventSink,
    cancel: Arc<AtomicBool>,
}

enum Message {
    Job(Job),
    /// Accept nothing more; cancel what still runs at `deadline`, then stop.
    Shutdown {
        deadline: Instant,
    },
}

/// A running engine: a thread that owns the slots and runs the steps.
pub struct Engine {
    tx: mpsc::Sender<Message>,
    /// Set once shutting down: submissions are refused.
    closed: AtomicBool,
    stats: Arc<EngineStats>,
    config: EngineConfig,
    vocab: u32,
    thread: Option<JoinHandle<()>>,
}

/// A submitted request's events; dropping it cancels the request.
pub struct RequestHandle {
    events: mpsc::Receiver<Event>,
    cancel: Arc<AtomicBool>,
    finished: bool,
}

impl RequestHandle {
    /// Ask the engine to stop this request; it ends with [`FinishReason::Cancelled`] within a step.
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }
}

impl Iterator for RequestHandle {
    type Item = Event;

    /// The next event, waiting for it; `None` after `Finished`.
    fn next(&mut self) -> Option<Event> {
        if self.finished {
            return None;
        }
        let event = self.events.recv().ok()?;
        self.finished = matches!(event, Event::Finished { .. });
        Some(event)
    }
}

impl Drop for RequestHandle {
    fn drop(&mut self) {
        self.cancel();
    }
}

impl Engine {
    pub fn start(model: Arc<Model>, config: EngineConfig) -> Result<Self, EngineError> {
        if config.slots == 0 || config.ctx < 2 {
            return Err(EngineError::Config);
        }
        model.prepare_for_batches(config.slots);
        let (tx, rx) = mpsc::channel();
        let stats = Arc::new(EngineStats::default());
        let vocab = model.config.vocab_size;
        let thread = {
            let (stats, config) = (Arc::clone(&stats), config.clone());
            std::thread::Builder::new()
                .name("bitnet-engine".into())
                .spawn(move || Scheduler::new(&model, &config, &stats).run(&rx))?
        };
        Ok(Engine {
            tx,
            closed: AtomicBool::new(false),
            stats,
            config,
            vocab,
            thread: Some(thread),
        })
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    pub fn stats(&self) -> &Arc<EngineStats> {
        &self.stats
    }

    /// Queue a request whose events go to `sink`; setting `cancel` stops it within a step.
    pub fn submit_to(
        &self,
        request: Request,
        cancel: Arc<AtomicBool>,
        sink: EventSink,
    ) -> Result<(), SubmitError> {
        let (tokens, ctx) = (request.prompt.len(), self.config.ctx);
        if tokens == 0 {
            return Err(SubmitError::EmptyPrompt);
        }
        if tokens >= ctx {
            return Err(SubmitError::PromptTooLong { tokens, ctx });
        }
        if let Some(&id) = request.prompt.iter().find(|&&id| id >= self.vocab) {
            return Err(SubmitError::TokenOutOfRange {
                id,
                vocab: self.vocab,
            });
        }
        request.sampling.validate().map_err(SubmitError::Sampling)?;
        if self.closed.load(Ordering::Acquire) {
            return Err(SubmitError::ShuttingDown);
        }
        let waiting = self.stats.waiting.fetch_add(1, Ordering::AcqRel);
        if waiting >= self.config.max_waiting {
            self.stats.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(SubmitError::QueueFull { waiting });
        }
        let job = Job {
            request,
            sink,
            cancel,
        };
        self.tx.send(Message::Job(job)).map_err(|_| {
            self.stats.waiting.fetch_sub(1, Ordering::AcqRel);
            SubmitError::ShuttingDown
        })
    }

    /// Queue a request and return its events.
    pub fn submit(&self, request: Request) -> Result<RequestHandle, SubmitError> {
        let (tx, rx) = mpsc::channel();
        let cancel = Arc::new(AtomicBool::new(false));
        let sink = Box::new(move |e| tx.send(e).is_ok());
        self.submit_to(request, Arc::clone(&cancel), sink)?;
        Ok(RequestHandle {
            events: rx,
            cancel,
            finished: false,
        })
    }

    /// Stop accepting requests, let running ones finish until `deadline`, cancel the rest, and
    /// wait for the engine thread.
    pub fn shutdown(mut self, deadline: Instant) {
        self.stop(deadline);
    }

    /// As [`Engine::shutdown`], without waiting: the engine refuses new requests from now on
    /// ([`SubmitError::ShuttingDown`]) and its thread ends by `deadline`.
    pub fn drain(&self, deadline: Instant) {
        self.closed.store(true, Ordering::Release);
        let _ = self.tx.send(Message::Shutdown { deadline });
    }

    fn stop(&mut self, deadline: Instant) {
        self.drain(deadline);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stop(Instant::now());
    }
}

/// A request in a slot.
struct Running {
    job: Job,
    sampler: Sampler,
    /// Prompt tokens not yet run (from `prompt_done` on).
    prompt_done: usize,
    /// The last sampled token, to run next.
    next: [u32; 1],
    /// Prompt and generated tokens (the repetition penalty's history).
    history: Vec<u32>,
    usage: Usage,
}

struct Slot {
    cache: KvCache,
    /// The tokens in `cache`, for prefix re-use.
    tokens: Vec<u32>,
    running: Option<Running>,
}

struct Scheduler<'m> {
    runner: Runner<'m>,
    /// The last step's logits, their buffer kept for the next step.
    logits: StepLogits,
    slots: Vec<Slot>,
    waiting: VecDeque<Job>,
    config: &'m EngineConfig,
    stats: &'m EngineStats,
    shutdown: Option<Instant>,
    pace: Pace,
}

impl<'m> Scheduler<'m> {
    fn new(model: &'m Model, config: &'m EngineConfig, stats: &'m EngineStats) -> Self {
        Scheduler {
            runner: Runner::new(model),
            logits: StepLogits::default(),
            slots: (0..config.slots)
                .map(|_| Slot {
                    cache: KvCache::new(model, config.ctx, config.cache),
                    tokens: Vec::new(),
                    running: None,
                })
                .collect(),
            waiting: VecDeque::new(),
            config,
            stats,
            shutdown: None,
            pace: Pace::default(),
        }
    }

    fn run(mut self, rx: &mpsc::Receiver<Message>) {
        loop {
            let idle = self.slots.iter().all(|s| s.running.is_none()) && self.waiting.is_empty();
            if idle {
                if self.shutdown.is_some() {
                    return;
                }
                match rx.recv() {
                    Ok(m) => self.receive(m),
                    Err(_) => return,
                }
            }
            while let Ok(m) = rx.try_recv() {
                self.receive(m);
            }
            if self.shutdown.is_some_and(|d| Instant::now() >= d) {
                self.cancel_all();
                return;
            }
            self.admit();
            self.step();
        }
    }

    fn receive(&mut self, message: Message) {
        match message {
            Message::Job(job) if self.shutdown.is_none() => self.waiting.push_back(job),
            Message::Job(job) => {
                self.stats.waiting.fetch_sub(1, Ordering::AcqRel);
                finish_job(job, FinishReason::Cancelled, Usage::default());
            }
            Message::Shutdown { deadline } => {
                self.shutdown = Some(deadline);
                for job in self.waiting.drain(..) {
                    self.stats.waiting.fetch_sub(1, Ordering::AcqRel);
                    finish_job(job, FinishReason::Cancelled, Usage::default());
                }
            }
        }
    }

    fn cancel_all(&mut self) {
        for i in 0..self.slots.len() {
            self.finish(i, FinishReason::Cancelled);
        }
    }

    /// Give free slots to waiting requests, first come first served.
    fn admit(&mut self) {
        while let Some(job) = self.waiting.pop_front() {
            self.stats.waiting.fetch_sub(1, Ordering::AcqRel);
            if job.cancel.load(Ordering::Relaxed) {
                finish_job(job, FinishReason::Cancelled, Usage::default());
                continue;
            }
            let free = self
                .slots
                .iter()
                .enumerate()
                .filter(|(_, s)| s.running.is_none())
                .map(|(i, s)| (i, &s.tokens[..]));
            let Some((i, keep)) = choose_slot(&job.request.prompt, free) else {
                self.stats.waiting.fetch_add(1, Ordering::AcqRel);
                self.waiting.push_front(job);
                return;
            };
            let slot = &mut self.slots[i];
            slot.cache.truncate(keep);
            slot.tokens.truncate(keep);
            let mut running = Running {
                sampler: Sampler::new(job.request.sampling.clone()),
                prompt_done: keep,
                next: [0],
                history: job.request.prompt.clone(),
                usage: Usage {
                    prompt_tokens: job.request.prompt.len(),
                    cached_tokens: keep,
                    completion_tokens: 0,
                },
                job,
            };
            self.stats.requests_total.fetch_add(1, Ordering::Relaxed);
            self.stats.running.fetch_add(1, Ordering::Relaxed);
            self.stats
                .cached_tokens_total
                .fetch_add(keep as u64, Ordering::Relaxed);
            let listening = (running.job.sink)(Event::Started {
                cached_tokens: keep,
            });
            if !listening {
                running.job.cancel.store(true, Ordering::Relaxed);
            }
            slot.running = Some(running);
        }
    }

    /// One batched forward over every running sequence's work, then sampling.
    fn step(&mut self) {
        for i in 0..self.slots.len() {
            if self.slots[i]
                .running
                .as_ref()
                .is_some_and(|r| r.job.cancel.load(Ordering::Relaxed))
            {
                self.finish(i, FinishReason::Cancelled);
            }
        }
        let pending: Vec<Option<usize>> = self
            .slots
            .iter()
            .map(|s| match &s.running {
                None => Some(0),
                Some(r) => {
                    let left = r.job.request.prompt.len() - r.prompt_done;
                    (left > 0).then_some(left)
                }
            })
            .collect();
        let decoding = pending.iter().filter(|p| p.is_none()).count();
        let running = self.slots.iter().filter(|s| s.running.is_some()).count();
        let mut prompt_tokens = prompt_budget(decoding, self.config.step_tokens);
        if let Some(limit) = self
            .config
            .stall
            .and_then(|stall| self.pace.prompt_limit(decoding, running, stall))
        {
            prompt_tokens = prompt_tokens.min(limit);
        }
        let plan = plan_step(&pending, prompt_tokens);
        let mut ran = Vec::new();
        let mut seqs = Vec::new();
        for (i, (slot, work)) in self.slots.iter_mut().zip(&plan).enumerate() {
            let (Some(work), Some(r)) = (work, &slot.running) else {
                continue;
            };
            let (tokens, logits) = match *work {
                Work::Decode => (&r.next[..], Logits::Last),
                Work::Prompt { len, last } => (
                    &r.job.request.prompt[r.prompt_done..r.prompt_done + len],
                    if last { Logits::Last } else { Logits::None },
                ),
            };
            slot.tokens.extend_from_slice(tokens);
            seqs.push(SeqStep {
                cache: &mut slot.cache,
                tokens,
                logits,
            });
            ran.push((i, *work));
        }
        if seqs.is_empty() {
            return;
        }
        let started = Instant::now();
        let mut logits = std::mem::take(&mut self.logits);
        let result = self.runner.step(&mut seqs, &mut logits);
        drop(seqs);
        self.stats.steps_total.fetch_add(1, Ordering::Relaxed);
        self.stats
            .step_sequences_total
            .fetch_add(ran.len() as u64, Ordering::Relaxed);
        self.stats
            .last_step_sequences
            .store(ran.len(), Ordering::Relaxed);
        if let Err(e) = result {
            self.logits = logits;
            return self.fail(&ran, &e);
        }
        let (decoded, prompted) = ran.iter().fold((0, 0), |(d, p), (_, work)| match work {
            Work::Decode => (d + 1, p),
            Work::Prompt { len, .. } => (d, p + len),
        });
        for (k, (i, work)) in ran.into_iter().enumerate() {
            if let Work::Prompt { len, .. } = work {
                let r = self.slots[i].running.as_mut().expect("ran");
                r.prompt_done += len;
                self.stats
                    .prompt_tokens_total
                    .fetch_add(len as u64, Ordering::Relaxed);
            }
            if !logits.get(k).is_empty() {
                self.sample(i, logits.get(k));
            }
        }
        self.logits = logits;
        self.pace
            .observe(decoded, prompted, started.elapsed().as_secs_f64());
    }

    /// Sample slot `i`'s next token and report it, or finish the request.
    fn sample(&mut self, i: usize, logits: &[f32]) {
        let slot = &mut self.slots[i];
        let ctx = slot.cache.context();
        let position = slot.cache.position();
        let r = slot.running.as_mut().expect("a running slot");
        let penalties = &r.job.request.penalties;
        let id = if penalties.is_none() {
            r.sampler.sample(logits, &r.history)
        } else {
            let generated = &r.history[r.job.request.prompt.len()..];
            r.sampler
                .sample(&penalties.apply(logits, generated), &r.history)
        };
        if r.job.request.stop_ids.contains(&id) {
            return self.finish(i, FinishReason::Stop);
        }
        r.history.push(id);
        r.next = [id];
        r.usage.completion_tokens += 1;
        self.stats
            .generated_tokens_total
            .fetch_add(1, Ordering::Relaxed);
        let logprobs = r
            .job
            .request
            .logprobs
            .map(|top| sampling::logprobs(logits, id, top));
        if !(r.job.sink)(Event::Token { id, logprobs }) {
            return self.finish(i, FinishReason::Cancelled);
        }
        // The sampled token needs a position to run at before the next one can be sampled.
        if r.usage.completion_tokens >= r.job.request.max_tokens || position >= ctx {
            self.finish(i, FinishReason::Length);
        }
    }

    fn fail(&mut self, ran: &[(usize, Work)], error: &ModelError) {
        for &(i, _) in ran {
            // The cache's contents are unknown after a failed step: start the slot afresh.
            self.slots[i].cache.truncate(0);
            self.slots[i].tokens.clear();
            self.finish(i, FinishReason::Error(error.to_string()));
        }
    }

    /// End slot `i`'s request (if any); the slot keeps its cache for the next.
    fn finish(&mut self, i: usize, reason: FinishReason) {
        let slot = &mut self.slots[i];
        if let Some(r) = slot.running.take() {
            // A prompt cut short by cancellation leaves its chunks in the cache: keep them.
            slot.tokens.truncate(slot.cache.position());
            self.stats.running.fetch_sub(1, Ordering::Relaxed);
            finish_job(r.job, reason, r.usage);
        }
    }
}

fn finish_job(mut job: Job, reason: FinishReason, usage: Usage) {
    (job.sink)(Event::Finished { reason, usage });
}

#[cfg(test)]
mod tests {
    use super::Penalties;

    #[test]
    fn penalties_follow_openais_formula() {
        let p = Penalties {
            presence: 0.5,
            frequency: 0.25,
            logit_bias: vec![(3, 2.0), (9, 1.0)],
        };
        let out = p.apply(&[1.0, 1.0, 1.0, 1.0], &[1, 1, 2, 1]);
        // id 1: 3 times → 1 − 0.75 − 0.5; id 2: once → 1 − 0.25 − 0.5; id 3: bias; id 9: absent.
        assert_eq!(out, [1.0, -0.25, 0.25, 3.0]);
        assert!(Penalties::default().is_none() && !p.is_none());
    }
}
