//! Command-line options, named as llama-server names them.

use std::path::PathBuf;

use bitnet_run::model::KvTypeArgs;
use bitnet_run::model::memory::PlacementArgs;
use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "bitnet-serve",
    version,
    about = "OpenAI-compatible HTTP server for .bitnet models, with continuous batching"
)]
pub struct Args {
    /// The .bitnet model file (default: the bundled demo model)
    #[arg(short = 'm', long = "model")]
    pub model: Option<PathBuf>,
    /// Address to listen on
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on (0: any free port, printed at start)
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Sequences run at once (slots, each with its own KV cache); also `-np N`
    #[arg(long = "parallel", default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub parallel: u64,
    /// Context size per slot (default: the model's, at most 4096)
    #[arg(short = 'c', long = "ctx-size")]
    pub ctx: Option<usize>,
    /// Threads for the forward pass (default: all cores)
    #[arg(short = 't', long = "threads", value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub threads: Option<u64>,
    /// Kernel path (default: BITNET_KERNEL, else the fastest this CPU has)
    #[arg(long)]
    pub kernel: Option<String>,
    #[command(flatten)]
    pub cache: KvTypeArgs,
    /// Tokens per batched step: every generating sequence's one, then prompt chunks up to this;
    /// small, so a new prompt delays the running streams by little (see BENCHMARKS.md)
    #[arg(short = 'b', long = "batch-size", default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=65536))]
    pub batch_tokens: u64,
    /// While streams generate, read new prompts only as far as that lengthens a step by at most
    /// this percent of a step of all running streams (measured while serving); smoother streams,
    /// later first tokens (see README); `off`: only `-b` limits them
    #[arg(long = "max-stall", default_value = "off", value_parser = parse_stall)]
    pub max_stall: Stall,
    /// Requests that may wait for a free slot; more get 429
    #[arg(long = "queue", default_value_t = 64)]
    pub queue: usize,
    /// Seconds a request may take before it is cancelled
    #[arg(long = "timeout", default_value_t = 600)]
    pub timeout: u64,
    /// API key clients must send as `Authorization: Bearer KEY` (also BITNET_API_KEY)
    #[arg(long = "api-key", env = "BITNET_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// File holding the API key (first line)
    #[arg(long = "api-key-file", conflicts_with = "api_key")]
    pub api_key_file: Option<PathBuf>,
    #[command(flatten)]
    pub placement: PlacementArgs,
    /// Model name reported by /v1/models (default: the file name)
    #[arg(short = 'a', long = "alias")]
    pub alias: Option<String>,
}

/// `--max-stall`: a fraction, or none.
#[derive(Debug, Clone, Copy)]
pub struct Stall(pub Option<f64>);

fn parse_stall(value: &str) -> Result<Stall, String> {
    if value == "off" {
        return Ok(Stall(None));
    }
    match value.parse::<f64>() {
        Ok(percent) if percent.is_finite() && percent >= 0.0 => Ok(Stall(Some(percent / 100.0))),
        _ => Err(format!(
            "expected a percentage of 0 or more, or `off`; got `{value}`"
        )),
    }
}

/// llama.cpp spells some options with one dash and several letters (`-np 4`, `-ctk f16`); clap reads one
/// letter per dash, so those are rewritten to their long names first.
pub fn normalize(args: impl IntoIterator<Item = String>) -> Vec<String> {
    args.into_iter()
        .map(|a| match a.as_str() {
            "-np" => "--parallel".to_string(),
            "-ctk" => "--cache-type-k".to_string(),
            "-ctv" => "--cache-type-v".to_string(),
            _ => a,
        })
        .collect()
}
