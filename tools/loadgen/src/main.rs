//! `bitnet-loadgen`: holds C concurrent streaming requests against an OpenAI-compatible server
//! (bitnet-serve, llama-server, ...) and reports, per concurrency level, aggregate generated
//! tokens/s and the p50/p99 time to first token and inter-token latency.

mod report;
mod request;

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, ValueEnum};
use reqwest::Url;

use report::Level;
use request::{Body, Outcome};

#[derive(Debug, Parser)]
#[command(
    name = "bitnet-loadgen",
    version,
    about = "Concurrent streaming load against an OpenAI-compatible server: tokens/s, TTFT, inter-token latency"
)]
struct Args {
    /// The server's base URL (the endpoints are URL/v1/...)
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Concurrency levels, run one after the other: C users, each sending its next request as
    /// soon as the previous one ends
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8,16",
          value_parser = clap::value_parser!(u64).range(1..=1024))]
    concurrency: Vec<u64>,
    /// Requests each user sends per level (every level sends C × this many)
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..))]
    requests_per_user: u64,
    /// Also stop starting requests this many seconds into a level (running ones finish)
    #[arg(long)]
    duration: Option<f64>,
    /// Requests sent one at a time before the first level, not measured (any failure stops the run)
    #[arg(long, default_value_t = 1)]
    warmup: u64,
    /// completions: a prompt of token ids (for every model, also those without a tokenizer);
    /// chat: a user message of that many words (needs a model with a tokenizer and chat template)
    #[arg(long, value_enum, default_value_t = Endpoint::Completions)]
    endpoint: Endpoint,
    /// Prompt length: token ids for completions, words for chat
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    prompt_tokens: u64,
    /// Tokens to generate per request
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    max_tokens: u64,
    /// Prompt token ids are drawn uniformly from 0..VOCAB
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    vocab: u32,
    /// Seed of the random prompts
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Send the same prompt every time (by default each request has its own, so that no server
    /// can serve a prompt from its cache)
    #[arg(long)]
    same_prompt: bool,
    /// Let generation stop at end-of-sequence (by default requests send `ignore_eos: true` and
    /// each must generate exactly --max-tokens, else it counts as an error)
    #[arg(long)]
    stop_at_eos: bool,
    /// Sampling temperature sent with every request
    #[arg(long, default_value_t = 0.0)]
    temperature: f64,
    /// `model` sent with every request
    #[arg(long)]
    model: Option<String>,
    /// Sent as `Authorization: Bearer KEY`
    #[arg(long)]
    api_key: Option<String>,
    /// Seconds one request may take before it counts as an error
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    /// Append one JSON object per level to this file
    #[arg(long)]
    json: Option<PathBuf>,
    /// KEY=VALUE put in every JSON object's `tags` (repeatable), e.g. --tag program=bitnet-serve
    #[arg(long = "tag", value_parser = parse_tag)]
    tags: Vec<(String, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Endpoint {
    Completions,
    Chat,
}

fn parse_tag(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

fn main() {
    let args = Args::parse();
    match run(&args) {
        Ok(0) => {}
        Ok(failed) => {
            eprintln!("error: {failed} requests failed (counted above)");
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("error: {}", bitnet_format::error_chain(e.as_ref()));
            std::process::exit(2);
        }
    }
}

/// Run every level; the number of failed requests.
#[tokio::main(flavor = "current_thread")]
async fn run(args: &Args) -> Result<u64> {
    let duration = match args.duration {
        None => None,
        Some(d) => match Duration::try_from_secs_f64(d) {
            Ok(d) if !d.is_zero() => Some(d),
            _ => bail!(
                "--duration {d}: must be a positive number of seconds, at most {}",
                u64::MAX
            ),
        },
    };
    let base = Url::parse(&args.url).with_context(|| format!("--url {:?}", args.url))?;
    if !matches!(base.scheme(), "http") {
        bail!("--url {}: only http:// is supported", args.url);
    }
    let path = match args.endpoint {
        Endpoint::Completions => "v1/completions",
        Endpoint::Chat => "v1/chat/completions",
    };
    let join = |p: &str| {
        let mut u = base.clone();
        u.set_path(&format!("{}/{p}", base.path().trim_end_matches('/')));
        u
    };
    let client = reqwest::Client::builder()
        // Measure the server, not a proxy named in the environment.
        .no_proxy()
        // A new connection per request: llama-server closes the connection after each streamed
        // response (while it announces keep-alive), and a request sent on a pooled connection
        // just before that close fails. Connecting over loopback costs well under a millisecond.
        .pool_max_idle_per_host(0)
        .connect_timeout(Duration::from_secs(10))
        .build()
        .context("cannot set up the HTTP client")?;
    let body = Body {
        endpoint: args.endpoint,
        prompt_len: args.prompt_tokens as usize,
        vocab: args.vocab,
        max_tokens: args.max_tokens,
        ignore_eos: !args.stop_at_eos,
        temperature: args.temperature,
        model: args.model.clone(),
    };
    let target = request::Target {
        client,
        url: join(path),
        api_key: args.api_key.clone(),
        timeout: Duration::from_secs(args.timeout.max(1)),
    };

    // A server that is down or not OpenAI-compatible fails here, with its own words.
    request::check_models(&target, join("v1/models")).await?;
    let mut next_prompt = 0u64;
    let mut prompt_seed = || {
        let seed = args.seed.wrapping_add(next_prompt);
        if !args.same_prompt {
            next_prompt += 1;
        }
        seed
    };
    for i in 0..args.warmup {
        match request::send(&target, &body, prompt_seed()).await {
            Outcome::Done(_) => {}
            Outcome::Failed(e) => bail!("warm-up request {} of {}: {e}", i + 1, args.warmup),
        }
    }

    report::print_header(&target.url, &body, args);
    let mut failed = 0;
    for &c in &args.concurrency {
        let seeds: Vec<Vec<u64>> = (0..c)
            .map(|_| (0..args.requests_per_user).map(|_| prompt_seed()).collect())
            .collect();
        let start = Instant::now();
        // A duration too long to add to a clock reading is no bound.
        let stop_at = duration.and_then(|d| start.checked_add(d));
        let users = seeds.into_iter().map(|seeds| {
            let (target, body) = (&target, &body);
            async move {
                let mut outcomes = Vec::with_capacity(seeds.len());
                for seed in seeds {
                    if stop_at.is_some_and(|t| Instant::now() >= t) {
                        break;
                    }
                    outcomes.push(request::send(target, body, seed).await);
                }
                outcomes
            }
        });
        let outcomes: Vec<Outcome> = futures_util::future::join_all(users)
            .await
            .into_iter()
            .flatten()
            .collect();
        let level = Level::new(c, start.elapsed(), outcomes);
        failed += level.errors();
        report::print_row(&level);
        if let Some(path) = &args.json {
            let line = report::json_line(&level, &target.url, &body, args);
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .and_then(|mut f| writeln!(f, "{line}"))
                .with_context(|| format!("cannot append to {}", path.display()))?;
        }
    }
    Ok(failed)
}
