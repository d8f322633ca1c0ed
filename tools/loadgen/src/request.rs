//! One streamed request: its body, and what came back when (server-sent events, read with
//! `eventsource-stream` from reqwest's byte stream).

use std::time::{Duration, Instant};

use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use reqwest::Url;
use serde_json::{Value, json};

use crate::Endpoint;

/// Where requests go.
pub struct Target {
    pub client: reqwest::Client,
    pub url: Url,
    pub api_key: Option<String>,
    pub timeout: Duration,
}

/// What every request asks for; the prompt itself comes from a seed.
pub struct Body {
    pub endpoint: Endpoint,
    pub prompt_len: usize,
    pub vocab: u32,
    pub max_tokens: u64,
    pub ignore_eos: bool,
    pub temperature: f64,
    pub model: Option<String>,
}

/// Chat prompts are made of these; each is one token for common tokenizers.
const WORDS: [&str; 32] = [
    "the", "of", "and", "to", "in", "is", "it", "that", "was", "for", "on", "are", "with", "as",
    "his", "they", "be", "at", "one", "have", "this", "from", "by", "hot", "word", "but", "what",
    "some", "we", "can", "out", "other",
];

impl Body {
    pub fn json(&self, seed: u64) -> Value {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut body = json!({
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "stream": true,
            "stream_options": {"include_usage": true},
            "ignore_eos": self.ignore_eos,
        });
        match self.endpoint {
            Endpoint::Completions => {
                let ids: Vec<u32> = (0..self.prompt_len)
                    .map(|_| rng.random_range(0..self.vocab))
                    .collect();
                body["prompt"] = json!(ids);
            }
            Endpoint::Chat => {
                let words: Vec<&str> = (0..self.prompt_len)
                    .map(|_| WORDS[rng.random_range(0..WORDS.len())])
                    .collect();
                body["messages"] = json!([{"role": "user", "content": words.join(" ")}]);
            }
        }
        if let Some(m) = &self.model {
            body["model"] = json!(m);
        }
        body
    }
}

/// A request that ran to its end.
#[derive(Debug)]
pub struct Done {
    /// From sending the request to the first chunk carrying generated output.
    pub ttft: Duration,
    /// Between consecutive chunks carrying generated output.
    pub gaps: Vec<Duration>,
    /// Generated tokens, as the server's final `usage` counts them.
    pub tokens: u64,
    /// Chunks carrying generated output (equal to `tokens` when the server streams one token per
    /// chunk; fewer when it holds some back, e.g. an incomplete UTF-8 character).
    pub chunks: u64,
}

#[derive(Debug)]
pub enum Outcome {
    Done(Done),
    /// Why the request failed, as a short kind (`HTTP 429`, `timeout`, ...) and the details.
    Failed(Failure),
}

#[derive(Debug)]
pub struct Failure {
    pub kind: String,
    pub detail: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind, self.detail)
    }
}

fn fail(kind: impl Into<String>, detail: impl Into<String>) -> Failure {
    Failure {
        kind: kind.into(),
        detail: detail.into(),
    }
}

fn with_key(target: &Target, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    match &target.api_key {
        Some(k) => req.bearer_auth(k),
        None => req,
    }
}

/// `GET /v1/models`: the server is up and speaks the OpenAI API.
pub async fn check_models(target: &Target, url: Url) -> anyhow::Result<()> {
    let r = with_key(target, target.client.get(url.clone()))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot reach the server at {url}: {}",
                bitnet_format::error_chain(&e)
            )
        })?;
    let status = r.status();
    let text = r.text().await.unwrap_or_default();
    if !status.is_success() {
        anyhow::bail!("GET {url}: HTTP {status}: {}", text.trim());
    }
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("GET {url}: not JSON ({e}): {}", text.trim()))?;
    if !v["data"].is_array() {
        anyhow::bail!("GET {url}: no model list (`data`) in {v}");
    }
    Ok(())
}

/// Send one request with the prompt of `seed` and follow its stream to the end.
pub async fn send(target: &Target, body: &Body, seed: u64) -> Outcome {
    match tokio::time::timeout(target.timeout, stream(target, body, seed)).await {
        Ok(Ok(done)) => Outcome::Done(done),
        Ok(Err(f)) => Outcome::Failed(f),
        Err(_) => Outcome::Failed(fail(
            "timeout",
            format!("no end within {} s", target.timeout.as_secs()),
        )),
    }
}

async fn stream(target: &Target, body: &Body, seed: u64) -> Result<Done, Failure> {
    let start = Instant::now();
    let response = with_key(target, target.client.post(target.url.clone()))
        .json(&body.json(seed))
        .send()
        .await
        .map_err(|e| fail("connection", bitnet_format::error_chain(&e)))?;
    let status = response.status();
    if !status.is_success() {
        let text = response.text().await.unwrap_or_default();
        return Err(fail(format!("HTTP {}", status.as_u16()), text.trim()));
    }
    let mut events = response.bytes_stream().eventsource();
    let mut last: Option<Instant> = None;
    let (mut ttft, mut gaps, mut chunks) = (Duration::ZERO, Vec::new(), 0u64);
    let mut usage: Option<u64> = None;
    let mut done = false;
    while let Some(event) = events.next().await {
        let now = Instant::now();
        let event = event.map_err(|e| fail("stream broken", bitnet_format::error_chain(&e)))?;
        // Read on to the end of the body: the response ends as the server sends it, before the
        // user's next request.
        if event.data == "[DONE]" {
            done = true;
            continue;
        }
        if done {
            return Err(fail(
                "bad chunk",
                format!("data after [DONE]: {}", event.data),
            ));
        }
        let v: Value = serde_json::from_str(&event.data)
            .map_err(|e| fail("bad chunk", format!("{e}: {}", event.data)))?;
        if v.get("error").is_some() {
            return Err(fail("error in stream", event.data));
        }
        if let Some(n) = v["usage"]["completion_tokens"].as_u64() {
            usage = Some(n);
        }
        if carries_output(&v, body.endpoint) {
            match last.replace(now) {
                None => ttft = now - start,
                Some(prev) => gaps.push(now - prev),
            }
            chunks += 1;
        }
    }
    if !done {
        return Err(fail(
            "stream dropped",
            format!("the stream ended without [DONE] after {chunks} chunks"),
        ));
    }
    let Some(tokens) = usage else {
        return Err(fail(
            "no usage",
            "the stream has no usage.completion_tokens (stream_options.include_usage ignored?)",
        ));
    };
    if chunks == 0 || chunks > tokens {
        return Err(fail(
            "token count",
            format!("{chunks} chunks carried output but usage counts {tokens} tokens"),
        ));
    }
    if body.ignore_eos && tokens != body.max_tokens {
        return Err(fail(
            "token count",
            format!(
                "{tokens} tokens generated with ignore_eos, not max_tokens = {}",
                body.max_tokens
            ),
        ));
    }
    Ok(Done {
        ttft,
        gaps,
        tokens,
        chunks,
    })
}

/// Whether a chunk carries generated output: text, or token ids (bitnet-serve sends the ids of
/// a model without a tokenizer in `tokens`, with empty text). Role-only chat deltas, finish
/// chunks and usage chunks do not.
fn carries_output(v: &Value, endpoint: Endpoint) -> bool {
    let choice = &v["choices"][0];
    let nonempty = |x: &Value| {
        x.as_str().is_some_and(|s| !s.is_empty()) || x.as_array().is_some_and(|a| !a.is_empty())
    };
    match endpoint {
        Endpoint::Completions => nonempty(&choice["text"]) || nonempty(&choice["tokens"]),
        Endpoint::Chat => nonempty(&choice["delta"]["content"]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(endpoint: Endpoint) -> Body {
        Body {
            endpoint,
            prompt_len: 5,
            vocab: 50,
            max_tokens: 3,
            ignore_eos: true,
            temperature: 0.0,
            model: None,
        }
    }

    #[test]
    fn prompts_follow_the_seed_and_the_limits() {
        let b = body(Endpoint::Completions);
        let ids = |seed| b.json(seed)["prompt"].as_array().unwrap().clone();
        assert_eq!(ids(7), ids(7));
        assert_ne!(ids(7), ids(8));
        assert_eq!(ids(7).len(), 5);
        assert!(ids(7).iter().all(|i| i.as_u64().unwrap() < 50));
        let v = b.json(1);
        assert_eq!(v["ignore_eos"], true);
        assert_eq!(v["stream_options"]["include_usage"], true);
        let chat = body(Endpoint::Chat).json(1);
        let text = chat["messages"][0]["content"].as_str().unwrap();
        assert_eq!(text.split(' ').count(), 5);
        assert!(chat.get("prompt").is_none());
    }

    #[test]
    fn output_chunks_are_told_from_the_others() {
        let c = Endpoint::Completions;
        assert!(carries_output(&json!({"choices": [{"text": "a"}]}), c));
        assert!(carries_output(
            &json!({"choices": [{"text": "", "tokens": [5]}]}),
            c
        ));
        assert!(!carries_output(
            &json!({"choices": [{"text": "", "finish_reason": "length"}]}),
            c
        ));
        assert!(!carries_output(
            &json!({"choices": [], "usage": {"completion_tokens": 3}}),
            c
        ));
        let chat = Endpoint::Chat;
        assert!(!carries_output(
            &json!({"choices": [{"delta": {"role": "assistant", "content": ""}}]}),
            chat
        ));
        assert!(carries_output(
            &json!({"choices": [{"delta": {"content": "hi"}}]}),
            chat
        ));
    }
}
