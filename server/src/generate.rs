//! From engine events to what a client sees: text decoded token by token without splitting a
//! UTF-8 character, `stop` strings cut out (text that might begin one is held back until it
//! cannot), finish reasons, usage, and the latency metrics. One [`Generation`] per HTTP request;
//! dropping it cancels every choice still running.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use bitnet_run::engine::{Event, EventSink, FinishReason, Request, SubmitError};
use bitnet_run::tokenizer::StreamDecoder;
use tokio::sync::mpsc;

use crate::error::ApiError;
use crate::openai::{TokenLogprob, Usage};
use crate::state::AppState;

/// What a choice produced since the last call.
#[derive(Debug)]
pub enum Output {
    /// New text (possibly empty for models without a tokenizer) and the ids generated with it.
    Delta {
        index: usize,
        text: String,
        ids: Vec<u32>,
        /// One per id, when the request asked for log-probabilities.
        logprobs: Vec<TokenLogprob>,
    },
    /// The choice ended.
    Done {
        index: usize,
        finish_reason: &'static str,
    },
    /// The forward pass failed.
    Failed(ApiError),
}

struct Choice {
    decoder: StreamDecoder,
    /// Decoded text not yet released: it may be the start of a stop string.
    held: String,
    /// Ids generated since the last delta, and their log-probabilities if asked for.
    ids: Vec<u32>,
    logprobs: Vec<TokenLogprob>,
    /// Characters of the tokens' texts so far (completions' `text_offset`).
    offset: usize,
    /// A stop string ended the choice; the engine's own `Finished` is still awaited for usage.
    stopped: bool,
    finished: bool,
    last_token: Option<Instant>,
}

pub struct Generation {
    state: Arc<AppState>,
    events: mpsc::UnboundedReceiver<(usize, Event)>,
    cancel: Vec<Arc<AtomicBool>>,
    choices: Vec<Choice>,
    stop: Vec<String>,
    start: Instant,
    /// Outputs decided but not yet returned (a final delta and its `Done`).
    pending: VecDeque<Output>,
    pub usage: Usage,
}

impl Drop for Generation {
    fn drop(&mut self) {
        for c in &self.cancel {
            c.store(true, Ordering::Relaxed);
        }
    }
}

impl Generation {
    /// Submit `n` copies of `request` (choice `i` seeded `seed + i`).
    pub fn start(
        state: Arc<AppState>,
        request: Request,
        n: usize,
        stop: Vec<String>,
    ) -> Result<Self, ApiError> {
        let (tx, events) = mpsc::unbounded_channel();
        let loaded = state
            .loaded
            .get()
            .expect("handlers run once the model is loaded");
        let mut requests = Vec::with_capacity(n);
        let mut generation = Generation {
            state: Arc::clone(&state),
            events,
            cancel: Vec::with_capacity(n),
            choices: Vec::with_capacity(n),
            stop,
            start: Instant::now(),
            pending: VecDeque::new(),
            usage: Usage::default(),
        };
        for i in 0..n {
            let mut request = request.clone();
            request.sampling.seed = request.sampling.seed.wrapping_add(i as u64);
            let cancel = Arc::new(AtomicBool::new(false));
            let tx = tx.clone();
            let sink = Box::new(move |e| tx.send((i, e)).is_ok());
            requests.push((request, Arc::clone(&cancel), sink as EventSink));
            generation.cancel.push(cancel);
            generation.choices.push(Choice {
                decoder: StreamDecoder::default(),
                held: String::new(),
                ids: Vec::new(),
                logprobs: Vec::new(),
                offset: 0,
                stopped: false,
                finished: false,
                last_token: None,
            });
        }
        // Submitted only once all are set up, so that a refusal cancels the ones before it.
        for (request, cancel, sink) in requests {
            loaded
                .engine
                .submit_to(request, cancel, sink)
                .map_err(submit_error)?;
        }
        loaded.metrics.requests.inc();
        Ok(generation)
    }

    /// The next output; `None` once every choice is done (then `usage` is complete).
    pub async fn next(&mut self) -> Option<Output> {
        loop {
            if let Some(out) = self.pending.pop_front() {
                return Some(out);
            }
            if self.choices.iter().all(|c| c.finished) {
                return None;
            }
            let (index, event) = self.events.recv().await?;
            if let Some(out) = self.handle(index, event) {
                return Some(out);
            }
        }
    }

    fn handle(&mut self, index: usize, event: Event) -> Option<Output> {
        let state = Arc::clone(&self.state);
        let loaded = state.loaded.get().expect("loaded");
        let tok = loaded.tokenizer.as_ref();
        let metrics = &loaded.metrics;
        let choice = &mut self.choices[index];
        match event {
            Event::Started { .. } => None,
            Event::Token { .. } if choice.stopped => None,
            Event::Token { id, logprobs } => {
                let now = Instant::now();
                match choice.last_token.replace(now) {
                    None => metrics
                        .time_to_first_token
                        .observe((now - self.start).as_secs_f64()),
                    Some(prev) => metrics.inter_token.observe((now - prev).as_secs_f64()),
                }
                choice.ids.push(id);
                if let Some(lp) = logprobs {
                    let text = |id| token_text(tok, id);
                    let token = text(id);
                    let offset = choice.offset;
                    choice.offset += token.chars().count();
                    choice.logprobs.push(TokenLogprob {
                        token,
                        logprob: lp.logprob,
                        top: lp.top.iter().map(|&(id, l)| (text(id), l)).collect(),
                        offset,
                    });
                }
                let piece = match tok.map(|t| choice.decoder.push(t, id)) {
                    Some(Ok(p)) => p.unwrap_or_default(),
                    Some(Err(e)) => return Some(Output::Failed(ApiError::internal(e.to_string()))),
                    None => String::new(),
                };
                choice.held.push_str(&piece);
                let text = match release(&mut choice.held, &self.stop) {
                    Released::Text(text) => text,
                    Released::Stopped(text) => {
                        choice.stopped = true;
                        self.cancel[index].store(true, Ordering::Relaxed);
                        text
                    }
                };
                if text.is_empty() && tok.is_some() && !choice.stopped {
                    return None;
                }
                Some(Output::Delta {
                    index,
                    text,
                    ids: std::mem::take(&mut choice.ids),
                    logprobs: std::mem::take(&mut choice.logprobs),
                })
            }
            Event::Finished { reason, usage } => {
                choice.finished = true;
                self.usage.add(&usage);
                metrics.prompt_tokens.inc_by(usage.prompt_tokens as u64);
                metrics
                    .generated_tokens
                    .inc_by(usage.completion_tokens as u64);
                let finish_reason = match reason {
                    _ if choice.stopped => "stop",
                    FinishReason::Stop => "stop",
                    FinishReason::Length => "length",
                    FinishReason::Cancelled => "cancelled",
                    FinishReason::Error(e) => return Some(Output::Failed(ApiError::internal(e))),
                };
                if !choice.stopped
                    && let Some(t) = tok
                    && let Ok(Some(rest)) = choice.decoder.flush(t)
                {
                    choice.held.push_str(&rest);
                }
                let text = if choice.stopped {
                    String::new()
                } else {
                    match release(&mut choice.held, &self.stop) {
                        Released::Text(t) => t + &std::mem::take(&mut choice.held),
                        Released::Stopped(t) => t,
                    }
                };
                let ids = std::mem::take(&mut choice.ids);
                if !(text.is_empty() && ids.is_empty()) {
                    self.pending.push_back(Output::Delta {
                        index,
                        text,
                        ids,
                        logprobs: std::mem::take(&mut choice.logprobs),
                    });
                }
                self.pending.push_back(Output::Done {
                    index,
                    finish_reason,
                });
                self.pending.pop_front()
            }
        }
    }
}

/// A token's text decoded alone; its id in decimal for models without a tokenizer.
fn token_text(tok: Option<&bitnet_run::tokenizer::Tokenizer>, id: u32) -> String {
    match tok {
        Some(t) => t.decode(&[id]).unwrap_or_default(),
        None => id.to_string(),
    }
}

enum Released {
    /// Text that can no longer be part of a stop string.
    Text(String),
    /// A stop string appeared: the text before it (the rest is dropped).
    Stopped(String),
}

/// Take from `held` what can be shown: everything before a stop string if one appears, else all
/// but the longest tail that could still grow into one.
fn release(held: &mut String, stop: &[String]) -> Released {
    if let Some(at) = stop.iter().filter_map(|s| held.find(s.as_str())).min() {
        let text = held[..at].to_string();
        held.clear();
        return Released::Stopped(text);
    }
    let keep = stop
        .iter()
        .flat_map(|s| {
            (1..s.len())
                .rev()
                .filter(|&k| s.is_char_boundary(k) && held.ends_with(&s[..k]))
                .take(1)
        })
        .max()
        .unwrap_or(0);
    let text = held[..held.len() - keep].to_string();
    held.drain(..held.len() - keep);
    Released::Text(text)
}

fn submit_error(e: SubmitError) -> ApiError {
    match e {
        SubmitError::QueueFull { .. } => ApiError::queue_full(e.to_string()),
        SubmitError::ShuttingDown => ApiError::unavailable(e.to_string()),
        SubmitError::PromptTooLong { .. } | SubmitError::EmptyPrompt => {
            ApiError::invalid("prompt", e.to_string())
        }
        SubmitError::TokenOutOfRange { .. } => ApiError::invalid("prompt", e.to_string()),
        SubmitError::Sampling(m) => ApiError::bad_request(m),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(pieces: &[&str], stop: &[&str]) -> (String, bool) {
        let stop: Vec<String> = stop.iter().map(|s| s.to_string()).collect();
        let (mut held, mut out) = (String::new(), String::new());
        for p in pieces {
            held.push_str(p);
            match release(&mut held, &stop) {
                Released::Text(t) => out += &t,
                Released::Stopped(t) => return (out + &t, true),
            }
        }
        (out + &held, false)
    }

    #[test]
    fn stop_strings_are_cut_even_across_pieces_and_nothing_else_is_lost() {
        assert_eq!(
            run(&["Hello", " wor", "ld"], &["world"]),
            ("Hello ".into(), true)
        );
        assert_eq!(run(&["ab", "c\n", "\nd"], &["\n\n"]), ("abc".into(), true));
        assert_eq!(run(&["wor", "m"], &["world"]), ("worm".into(), false));
        assert_eq!(run(&["x", "END", "y"], &["END", "x"]), ("".into(), true));
        assert_eq!(run(&["naïve é"], &["é!"]), ("naïve é".into(), false));
        assert_eq!(run(&["a", "b"], &[]), ("ab".into(), false));
    }
}
