//! A level's figures, printed as a table row and as one JSON object.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::Url;
use serde_json::json;

use crate::request::{Body, Outcome};
use crate::{Args, Endpoint};

/// What one concurrency level measured.
pub struct Level {
    pub concurrency: u64,
    pub wall: Duration,
    pub requests: u64,
    pub tokens: u64,
    pub chunks: u64,
    pub ttft: Vec<Duration>,
    pub gaps: Vec<Duration>,
    /// Failed requests by kind, and the first one's details.
    pub errors: BTreeMap<String, u64>,
    pub first_error: Option<String>,
}

impl Level {
    pub fn new(concurrency: u64, wall: Duration, outcomes: Vec<Outcome>) -> Level {
        let mut level = Level {
            concurrency,
            wall,
            requests: outcomes.len() as u64,
            tokens: 0,
            chunks: 0,
            ttft: Vec::new(),
            gaps: Vec::new(),
            errors: BTreeMap::new(),
            first_error: None,
        };
        for o in outcomes {
            match o {
                Outcome::Done(d) => {
                    level.tokens += d.tokens;
                    level.chunks += d.chunks;
                    level.ttft.push(d.ttft);
                    level.gaps.extend(d.gaps);
                }
                Outcome::Failed(f) => {
                    *level.errors.entry(f.kind.clone()).or_default() += 1;
                    level.first_error.get_or_insert_with(|| f.to_string());
                }
            }
        }
        level.ttft.sort();
        level.gaps.sort();
        level
    }

    pub fn errors(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Generated tokens of the requests that succeeded, per second of the level's wall time.
    pub fn tokens_per_second(&self) -> f64 {
        self.tokens as f64 / self.wall.as_secs_f64()
    }
}

/// The nearest-rank percentile `p` (0 < p ≤ 100) of sorted samples, in milliseconds.
fn percentile_ms(sorted: &[Duration], p: f64) -> Option<f64> {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted
        .get(rank.max(1) - 1)
        .map(|d| d.as_secs_f64() * 1000.0)
}

pub fn print_header(url: &Url, body: &Body, args: &Args) {
    let prompt = match body.endpoint {
        Endpoint::Completions => {
            format!("{} random token ids below {}", body.prompt_len, body.vocab)
        }
        Endpoint::Chat => format!("{} random words", body.prompt_len),
    };
    let same = if args.same_prompt {
        ", the same for every request"
    } else {
        ""
    };
    let eos = if body.ignore_eos { ", ignore_eos" } else { "" };
    let bound = match args.duration {
        Some(d) => format!(
            "requests per user: {} (or {d} s per level)",
            args.requests_per_user
        ),
        None => format!("requests per user: {}", args.requests_per_user),
    };
    println!(
        "{url}: prompt of {prompt} (seed {}{same}), max_tokens {}{eos}, {bound}",
        args.seed, body.max_tokens
    );
    println!(
        "{:>5} {:>9} {:>7} {:>9} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "C",
        "requests",
        "errors",
        "tokens",
        "tokens/s",
        "TTFT p50",
        "TTFT p99",
        "ITL p50",
        "ITL p99"
    );
}

pub fn print_row(l: &Level) {
    let ms = |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{x:.1} ms"));
    println!(
        "{:>5} {:>9} {:>7} {:>9} {:>10.2} {:>10} {:>10} {:>10} {:>10}",
        l.concurrency,
        l.requests,
        l.errors(),
        l.tokens,
        l.tokens_per_second(),
        ms(percentile_ms(&l.ttft, 50.0)),
        ms(percentile_ms(&l.ttft, 99.0)),
        ms(percentile_ms(&l.gaps, 50.0)),
        ms(percentile_ms(&l.gaps, 99.0)),
    );
    for (kind, n) in &l.errors {
        println!("      {n} failed: {kind}");
    }
    if let Some(e) = &l.first_error {
        println!("      first failure: {e}");
    }
    if l.chunks < l.tokens {
        println!(
            "      note: {} tokens came in {} chunks: ITL is measured between chunks",
            l.tokens, l.chunks
        );
    }
}

pub fn json_line(l: &Level, url: &Url, body: &Body, args: &Args) -> String {
    json!({
        "url": url.as_str(),
        "endpoint": match body.endpoint { Endpoint::Completions => "completions", Endpoint::Chat => "chat" },
        "prompt_tokens": body.prompt_len,
        "max_tokens": body.max_tokens,
        "ignore_eos": body.ignore_eos,
        "same_prompt": args.same_prompt,
        "concurrency": l.concurrency,
        "requests": l.requests,
        "errors": l.errors(),
        "error_kinds": l.errors,
        "generated_tokens": l.tokens,
        "chunks": l.chunks,
        "wall_s": l.wall.as_secs_f64(),
        "tokens_per_s": l.tokens_per_second(),
        "ttft_p50_ms": percentile_ms(&l.ttft, 50.0),
        "ttft_p99_ms": percentile_ms(&l.ttft, 99.0),
        "itl_p50_ms": percentile_ms(&l.gaps, 50.0),
        "itl_p99_ms": percentile_ms(&l.gaps, 99.0),
        "tags": args.tags.iter().cloned().collect::<BTreeMap<String, String>>(),
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let ms =
            |v: &[u64]| -> Vec<Duration> { v.iter().map(|&x| Duration::from_millis(x)).collect() };
        assert_eq!(percentile_ms(&[], 50.0), None);
        assert_eq!(percentile_ms(&ms(&[7]), 99.0), Some(7.0));
        let hundred: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile_ms(&ms(&hundred), 50.0), Some(50.0));
        assert_eq!(percentile_ms(&ms(&hundred), 99.0), Some(99.0));
        assert_eq!(percentile_ms(&ms(&[1, 2, 3]), 50.0), Some(2.0));
        assert_eq!(percentile_ms(&ms(&[1, 2, 3]), 99.0), Some(3.0));
    }
}
