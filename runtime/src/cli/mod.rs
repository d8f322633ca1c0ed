//! Command-line interface, following llama.cpp's conventions (`-m`, `-p`, `-n`, `-t`, `-c`, ...).

mod batched_bench;
mod bench;
mod chat;
mod generate;
mod logits;
mod npy;
mod perplexity;
mod tokenize;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use bitnet_format::{BitnetFile, ModelConfig};
use bitnet_run::kernels::KernelPath;
use bitnet_run::model::memory::{self, MemoryNeed, Placement, PlacementArgs};
use bitnet_run::model::{KvTypeArgs, Model};
use bitnet_run::sampling::SamplerConfig;
use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "bitnet-run",
    version,
    about = "Run BitNet b1.58 .bitnet models on CPUs",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    generate: GenerateArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run token ids as one prompt and write the logits of every position as a .npy file.
    Logits(logits::LogitsArgs),
    /// Perplexity of a text file over non-overlapping windows of the context size.
    Perplexity(perplexity::PerplexityArgs),
    /// Prompt-processing and generation speed, llama-bench style.
    Bench(bench::BenchArgs),
    /// Several sequences' prompts and generation in batched steps, llama-batched-bench style.
    BatchedBench(batched_bench::BatchedBenchArgs),
    /// Print the token ids of a text as one JSON array (llama.cpp's llama-tokenize).
    Tokenize(tokenize::TokenizeArgs),
}

/// Options shared by every command that loads a model.
#[derive(Debug, Args)]
pub struct ModelArgs {
    /// The .bitnet model file (default: the bundled demo model).
    #[arg(short = 'm', long = "model")]
    model: Option<PathBuf>,
    /// Threads (default: all cores).
    #[arg(short = 't', long = "threads")]
    threads: Option<usize>,
    /// Context size in tokens (default: the model's).
    #[arg(short = 'c', long = "ctx-size")]
    ctx: Option<usize>,
    /// Kernel path: scalar, avx2, avxvnni, avx512, neon or neon-dot (default: BITNET_KERNEL, else
    /// the fastest this CPU has).
    #[arg(long)]
    kernel: Option<String>,
    #[command(flatten)]
    cache: KvTypeArgs,
    /// Check every tensor's checksum before running (what `bitnet-convert verify` checks, minus
    /// decoding every tensor); reads the whole file once.
    #[arg(long)]
    verify: bool,
    #[command(flatten)]
    placement: PlacementArgs,
}

#[derive(Debug, Args)]
struct GenerateArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The prompt.
    #[arg(short = 'p', long = "prompt")]
    prompt: Option<String>,
    /// The prompt as comma-separated token ids instead of text; a model without a tokenizer then
    /// prints the generated ids.
    #[arg(long, value_delimiter = ',', conflicts_with = "prompt")]
    token_ids: Option<Vec<u32>>,
    /// Tokens to generate at most; -1: no limit, -2: until the context is full.
    #[arg(short = 'n', long = "n-predict", default_value = "256", allow_negative_numbers = true, value_parser = parse_n_predict)]
    n_predict: Limit,
    /// When the context is full, stop instead of dropping the oldest half (after --keep) and
    /// continuing.
    #[arg(long)]
    no_context_shift: bool,
    /// Prompt tokens a context shift keeps at the start (besides a leading BOS token).
    #[arg(long, default_value_t = 0)]
    keep: usize,
    /// Interactive multi-turn chat with the model's chat template.
    #[arg(long)]
    chat: bool,
    /// System message for --chat.
    #[arg(long)]
    system: Option<String>,
    #[command(flatten)]
    sampling: SamplingArgs,
}

#[derive(Debug, Args)]
struct SamplingArgs {
    /// Temperature; 0 is greedy (default: the model's, else 0.8).
    #[arg(long = "temp", allow_negative_numbers = true)]
    temperature: Option<f32>,
    /// Keep the K most likely tokens; 0 or -1 keeps all (default: the model's, else 40).
    #[arg(long, allow_negative_numbers = true, value_parser = parse_top_k)]
    top_k: Option<usize>,
    /// Keep the most likely tokens up to this total probability (default: the model's, else 0.95).
    #[arg(long, allow_negative_numbers = true)]
    top_p: Option<f32>,
    /// Drop tokens less likely than this fraction of the most likely one (default 0.05).
    #[arg(long, allow_negative_numbers = true)]
    min_p: Option<f32>,
    /// Penalty for tokens among the last --repeat-last-n (default: the model's, else 1.0 = none).
    #[arg(long, allow_negative_numbers = true)]
    repeat_penalty: Option<f32>,
    /// Recent tokens the repeat penalty looks at.
    #[arg(long, default_value_t = 64)]
    repeat_last_n: usize,
    /// Random seed; -1 (the default) picks a new one each run.
    #[arg(long, allow_negative_numbers = true, value_parser = parse_seed)]
    seed: Option<Seed>,
}

/// How many tokens to generate (`-n`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Tokens(usize),
    /// `-n -1`: until an end token (shifting the context as it fills).
    Unlimited,
    /// `-n -2`: until the context is full.
    ContextFull,
}

impl Limit {
    /// Whether `generated` tokens are not yet enough.
    fn wants(self, generated: usize) -> bool {
        match self {
            Limit::Tokens(n) => generated < n,
            Limit::Unlimited | Limit::ContextFull => true,
        }
    }
}

/// llama.cpp's `-n`: a count, -1 (no limit) or -2 (until the context is full).
fn parse_n_predict(s: &str) -> Result<Limit, String> {
    match s.parse::<i64>() {
        Ok(-1) => Ok(Limit::Unlimited),
        Ok(-2) => Ok(Limit::ContextFull),
        Ok(n) if n >= 0 => Ok(Limit::Tokens(n as usize)),
        _ => Err(format!(
            "{s:?} is not a token count (a number, -1 for no limit, -2 for until the context is full)"
        )),
    }
}

/// llama.cpp's `--top-k`: a count; 0 or -1 keeps every token.
fn parse_top_k(s: &str) -> Result<usize, String> {
    match s.parse::<i64>() {
        Ok(-1) => Ok(0),
        Ok(k) if k >= 0 => Ok(k as usize),
        _ => Err(format!(
            "{s:?} is not a count (a number; 0 or -1 keeps every token)"
        )),
    }
}

/// `--seed`: a number, or none for a random one.
#[derive(Debug, Clone, Copy)]
pub struct Seed(Option<u64>);

/// llama.cpp's `--seed`: a number, or -1 for a random seed.
fn parse_seed(s: &str) -> Result<Seed, String> {
    match s {
        "-1" => Ok(Seed(None)),
        _ => s
            .parse::<u64>()
            .map(|n| Seed(Some(n)))
            .map_err(|_| format!("{s:?} is not a seed (a number from 0, or -1 for a random one)")),
    }
}

/// llama.cpp's tools take `-m MODEL` before the subcommand (`bitnet-run -m x.bitnet perplexity
/// ...`); clap wants a subcommand's options after it. Model options (`-m`, `-t`, `-c`, `--kernel`,
/// with their values) that come before a subcommand's name are moved after it; anything else is
/// left for clap to judge. llama.cpp's multi-letter flags (`-ctk`/`-ctv`, llama-batched-bench's
/// `-npp`/`-ntg`/`-npl`) become their long names.
pub fn normalize_args(args: impl IntoIterator<Item = String>) -> Vec<String> {
    const SUBCOMMANDS: [&str; 5] = ["logits", "perplexity", "bench", "batched-bench", "tokenize"];
    const WITH_VALUE: [&str; 9] = [
        "-m",
        "--model",
        "-t",
        "--threads",
        "-c",
        "--ctx-size",
        "--kernel",
        "--cache-type-k",
        "--cache-type-v",
    ];
    let args: Vec<String> = args
        .into_iter()
        .map(|a| match a.as_str() {
            "-ctk" => "--cache-type-k".to_string(),
            "-ctv" => "--cache-type-v".to_string(),
            "-npp" => "--npp".to_string(),
            "-ntg" => "--ntg".to_string(),
            "-npl" => "--npl".to_string(),
            _ => a,
        })
        .collect();
    let mut i = 1;
    while i < args.len() {
        let a = args[i].as_str();
        if SUBCOMMANDS.contains(&a) {
            if i == 1 {
                break;
            }
            let mut out = vec![args[0].clone(), args[i].clone()];
            out.extend_from_slice(&args[1..i]);
            out.extend_from_slice(&args[i + 1..]);
            return out;
        }
        let is_model_option = WITH_VALUE.contains(&a)
            || WITH_VALUE
                .iter()
                .any(|o| o.starts_with("--") && a.starts_with(&format!("{o}=")));
        if !is_model_option {
            break;
        }
        i += if a.contains('=') { 1 } else { 2 };
    }
    args
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Some(Command::Logits(args)) => logits::run(args),
        Some(Command::Perplexity(args)) => perplexity::run(args),
        Some(Command::Bench(args)) => bench::run(args),
        Some(Command::BatchedBench(args)) => batched_bench::run(args),
        Some(Command::Tokenize(args)) => tokenize::run(args),
        None if cli.generate.chat => chat::run(&cli.generate),
        None => generate::run(&cli.generate),
    }
}

/// Open and validate the model the arguments name, check that it fits in memory, and bind it; with
/// its context size: `-c` if given (at least `min_ctx`, at most the model's), else `default_ctx` of
/// the model's.
fn load_model(
    args: &ModelArgs,
    min_ctx: usize,
    default_ctx: impl FnOnce(usize) -> usize,
) -> Result<(Model, usize)> {
    let path = KernelPath::chosen(args.kernel.as_deref())?;
    if args.threads == Some(0) {
        bail!("-t/--threads must be at least 1");
    }
    let (threads, note) = bitnet_run::model::thread_count(args.threads);
    if let Some(note) = note {
        eprintln!("note: {note}");
    }
    let (file, name) = open_file(args.model.as_deref())?;
    let ctx = context_size(args.ctx, &file.header().model, min_ctx, default_ctx)?;
    let need = MemoryNeed::of(&file, path, ctx, args.cache.types());
    if !args.placement.no_memory_check {
        check_memory(&name, need, "lower the context with -c (its KV cache)")?;
    }
    if args.verify {
        file.verify()
            .with_context(|| format!("{name} failed verification"))?;
    }
    let file = place(file, &need, args.placement.placement())
        .with_context(|| format!("cannot read {name} into memory"))?;
    let model = Model::load(file, path, threads).with_context(|| format!("cannot load {name}"))?;
    if let Some((name, layout)) = model.weights.repacked.first() {
        eprintln!(
            "note: {} ternary tensors (e.g. {name}, layout {}) repacked to {} for the {} kernels",
            model.weights.repacked.len(),
            layout.label(),
            path.preferred_layout().label(),
            path.name()
        );
    }
    Ok((model, ctx))
}

/// Refuse a model that needs more memory than is available, with `smaller_cache` on how to shrink
/// its KV cache, and warn when it needs more than 90% of it ([`bitnet_run::model::memory`]). Where
/// the available memory is unknown (not Linux), nothing is checked.
fn check_memory(name: &str, need: MemoryNeed, smaller_cache: &str) -> Result<()> {
    if let Some(warning) = memory::check_system(name, &need, smaller_cache)? {
        eprintln!("warning: {warning}");
    }
    Ok(())
}

/// `file` mapped or read into memory as `placement` says ([`memory::place`]).
fn place(file: BitnetFile, need: &MemoryNeed, placement: Placement) -> Result<BitnetFile> {
    Ok(memory::place(file, need, placement, memory::available()?)?)
}

/// How the bench commands label a model in their tables: the file's name, or `demo`.
fn model_label(model: Option<&Path>) -> String {
    match model {
        Some(p) => p
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
        None => "demo".to_string(),
    }
}

/// The model file `-m` names, else the bundled demo model (with a note); and its name for messages.
fn open_file(model: Option<&Path>) -> Result<(BitnetFile, String)> {
    if model.is_none() {
        eprintln!("note: {}", bitnet_run::demo::NOTE);
    }
    open_file_quietly(model)
}

/// [`open_file`] without the demo model's note, for opening the same model again.
fn open_file_quietly(model: Option<&Path>) -> Result<(BitnetFile, String)> {
    match model {
        Some(path) => {
            let name = path.display().to_string();
            let file =
                BitnetFile::open(path).with_context(|| format!("cannot open model {name}"))?;
            Ok((file, name))
        }
        None => Ok((
            bitnet_run::demo::open()?,
            "the bundled demo model".to_string(),
        )),
    }
}

/// The context size: `ctx` (`-c`) if given (at least `min`, at most the model's), else `default` of
/// the model's.
fn context_size(
    ctx: Option<usize>,
    config: &ModelConfig,
    min: usize,
    default: impl FnOnce(usize) -> usize,
) -> Result<usize> {
    let trained = config.context_length as usize;
    match ctx {
        Some(c) if c < min => bail!("-c/--ctx-size must be at least {min}"),
        Some(c) if c > trained => {
            bail!("-c/--ctx-size {c} exceeds the model's context length {trained}")
        }
        Some(c) => Ok(c),
        None => Ok(default(trained)),
    }
}

impl SamplingArgs {
    /// The sampler options: flags, else the model's generation defaults, else llama.cpp's defaults.
    fn config(&self, model: &Model) -> Result<SamplerConfig> {
        let d = SamplerConfig::for_file(&model.file().header().generation);
        let seed = self
            .seed
            .and_then(|s| s.0)
            .unwrap_or_else(bitnet_run::sampling::random_seed);
        let config = SamplerConfig {
            temperature: self.temperature.unwrap_or(d.temperature),
            top_k: self.top_k.unwrap_or(d.top_k),
            top_p: self.top_p.unwrap_or(d.top_p),
            min_p: self.min_p.unwrap_or(d.min_p),
            repeat_penalty: self.repeat_penalty.unwrap_or(d.repeat_penalty),
            repeat_last_n: self.repeat_last_n,
            seed,
        };
        config.validate().map_err(anyhow::Error::msg)?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every subcommand, option and argument says what it is in `--help`.
    #[test]
    fn everything_in_help_has_a_description() {
        fn check(cmd: &clap::Command, path: &str) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if ["help", "version"].contains(&id) {
                    continue;
                }
                assert!(arg.get_help().is_some(), "{path}: {id} has no help text");
            }
            for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
                assert!(
                    sub.get_about().is_some(),
                    "{path} {}: no about",
                    sub.get_name()
                );
                check(sub, &format!("{path} {}", sub.get_name()));
            }
        }
        let mut cmd = super::Cli::command();
        cmd.build();
        check(&cmd, "bitnet-run");
    }
}
