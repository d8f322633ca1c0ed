//! `bitnet-run batched-bench`: llama-batched-bench's measurement. B sequences, each with a KV
//! cache of its own, process a prompt of PP tokens each and then generate TG tokens each in
//! batched steps of one token per sequence: the engine's work at B concurrent requests, without
//! HTTP, sampling or a load generator beside it.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use bitnet_run::kernels::KernelPath;
use bitnet_run::model::memory::{MemoryNeed, PlacementArgs};
use bitnet_run::model::{KvCache, KvTypeArgs, Logits, Model, Runner, SeqStep, StepLogits};
use clap::Args;

use super::bench::{median, tokens};

/// Tokens per step while prompts are processed (llama-batched-bench's default `-b`).
const PROMPT_STEP_TOKENS: usize = 2048;

#[derive(Debug, Args)]
pub struct BatchedBenchArgs {
    /// The .bitnet model file (default: the bundled demo model).
    #[arg(short = 'm', long = "model")]
    model: Option<PathBuf>,
    /// Prompt tokens per sequence (comma-separated; llama-batched-bench's -npp).
    #[arg(long = "npp", value_delimiter = ',', default_value = "128")]
    prompt: Vec<usize>,
    /// Tokens generated per sequence (comma-separated; llama-batched-bench's -ntg).
    #[arg(long = "ntg", value_delimiter = ',', default_value = "64")]
    gen_tokens: Vec<usize>,
    /// Numbers of sequences run together (comma-separated; llama-batched-bench's -npl).
    #[arg(long = "npl", value_delimiter = ',', default_value = "1,2,4,8")]
    parallel: Vec<usize>,
    /// Threads (default: all cores).
    #[arg(short = 't', long = "threads")]
    threads: Option<usize>,
    /// Measured repetitions per test, after one warm-up; times are their medians.
    #[arg(short = 'r', long = "repetitions", default_value_t = 3)]
    reps: usize,
    /// One JSON object per line instead of a markdown table.
    #[arg(long)]
    json: bool,
    /// Kernel path (default: BITNET_KERNEL, else the fastest this CPU has).
    #[arg(long)]
    kernel: Option<String>,
    #[command(flatten)]
    cache: KvTypeArgs,
    #[command(flatten)]
    placement: PlacementArgs,
}

/// Seconds of one test: every sequence's prompt (in steps of at most [`PROMPT_STEP_TOKENS`]),
/// then `tg` steps of one token per sequence, each step's logits computed as generation needs.
fn run_once(
    runner: &mut Runner,
    out: &mut StepLogits,
    caches: &mut [KvCache],
    prompts: &[Vec<u32>],
    tg: &[u32],
) -> Result<(f64, f64)> {
    for cache in caches.iter_mut() {
        cache.truncate(0);
    }
    let pp = prompts.first().map_or(0, Vec::len);
    let chunk = (PROMPT_STEP_TOKENS / caches.len()).max(1);
    let start = Instant::now();
    for from in (0..pp).step_by(chunk) {
        let to = (from + chunk).min(pp);
        let logits = if to == pp { Logits::Last } else { Logits::None };
        let mut seqs: Vec<SeqStep> = caches
            .iter_mut()
            .zip(prompts)
            .map(|(cache, p)| SeqStep {
                cache,
                tokens: &p[from..to],
                logits,
            })
            .collect();
        runner.step(&mut seqs, out)?;
    }
    let prompt_seconds = start.elapsed().as_secs_f64();
    let start = Instant::now();
    for id in tg {
        let mut seqs: Vec<SeqStep> = caches
            .iter_mut()
            .map(|cache| SeqStep {
                cache,
                tokens: std::slice::from_ref(id),
                logits: Logits::Last,
            })
            .collect();
        runner.step(&mut seqs, out)?;
    }
    Ok((prompt_seconds, start.elapsed().as_secs_f64()))
}

/// One line of the results: llama-batched-bench's columns.
struct Row {
    pp: usize,
    tg: usize,
    b: usize,
    prompt_seconds: f64,
    gen_seconds: f64,
}

impl Row {
    /// Positions in the KV caches at the end.
    fn n_kv(&self) -> usize {
        self.b * (self.pp + self.tg)
    }

    fn prompt_rate(&self) -> f64 {
        (self.b * self.pp) as f64 / self.prompt_seconds
    }

    fn gen_rate(&self) -> f64 {
        (self.b * self.tg) as f64 / self.gen_seconds
    }

    fn total_rate(&self) -> f64 {
        self.n_kv() as f64 / (self.prompt_seconds + self.gen_seconds)
    }
}

pub fn run(args: BatchedBenchArgs) -> Result<()> {
    if args.reps == 0 {
        bail!("-r/--repetitions must be at least 1");
    }
    if args.threads == Some(0) {
        bail!("-t/--threads must be at least 1");
    }
    if args.parallel.contains(&0) {
        bail!("--npl values must be at least 1");
    }
    if args.prompt.contains(&0) && args.gen_tokens.contains(&0) {
        bail!("--npp and --ntg cannot both be 0: the test would run nothing");
    }
    let path = KernelPath::chosen(args.kernel.as_deref())?;
    let (threads, note) = bitnet_run::model::thread_count(args.threads);
    if let Some(note) = note {
        eprintln!("note: {note}");
    }
    let (file, name) = super::open_file(args.model.as_deref())?;
    let ctx = file.header().model.context_length as usize;
    let longest = |v: &[usize]| v.iter().copied().max().unwrap_or(0);
    let positions = longest(&args.prompt) + longest(&args.gen_tokens);
    if positions > ctx {
        bail!(
            "--npp {} plus --ntg {} exceeds {name}'s context of {ctx} tokens",
            longest(&args.prompt),
            longest(&args.gen_tokens)
        );
    }
    let cache = args.cache.types();
    let need = MemoryNeed::of(&file, path, positions, cache).with_slots(
        &file,
        path,
        longest(&args.parallel),
    );
    if !args.placement.no_memory_check {
        super::check_memory(
            &name,
            need,
            "use smaller --npp, --ntg or --npl (the KV caches)",
        )?;
    }
    let file = super::place(file, &need, args.placement.placement())
        .with_context(|| format!("cannot read {name} into memory"))?;
    let model = Model::load(file, path, threads).with_context(|| format!("cannot load {name}"))?;
    let vocab = model.config.vocab_size;
    let mut runner = Runner::new(&model);
    let mut out = StepLogits::default();
    let model_name = super::model_label(args.model.as_deref());
    let mut rows = Vec::new();
    for &pp in &args.prompt {
        // (0, 0) was refused above.
        for &tg in &args.gen_tokens {
            for &b in &args.parallel {
                let mut caches: Vec<KvCache> = (0..b)
                    .map(|_| KvCache::new(&model, pp + tg, cache))
                    .collect();
                // Each sequence its own prompt, as separate requests would have.
                let ids = tokens(b * pp + tg, vocab);
                let prompts: Vec<Vec<u32>> =
                    (0..b).map(|i| ids[i * pp..(i + 1) * pp].to_vec()).collect();
                let tg_ids = &ids[b * pp..];
                run_once(&mut runner, &mut out, &mut caches, &prompts, tg_ids)?;
                let samples: Vec<(f64, f64)> = (0..args.reps)
                    .map(|_| run_once(&mut runner, &mut out, &mut caches, &prompts, tg_ids))
                    .collect::<Result<_>>()?;
                let row = Row {
                    pp,
                    tg,
                    b,
                    prompt_seconds: median(samples.iter().map(|s| s.0)),
                    gen_seconds: median(samples.iter().map(|s| s.1)),
                };
                if args.json {
                    println!(
                        "{}",
                        serde_json::json!({
                            "model": model_name,
                            "kernel": path.name(),
                            "threads": threads,
                            "cache_type_k": cache.keys.name(),
                            "cache_type_v": cache.values.name(),
                            "pp": pp,
                            "tg": tg,
                            "b": b,
                            "n_kv": row.n_kv(),
                            "t_pp": row.prompt_seconds,
                            "speed_pp": (pp > 0).then(|| row.prompt_rate()),
                            "t_tg": row.gen_seconds,
                            "speed_tg": (tg > 0).then(|| row.gen_rate()),
                            "t": row.prompt_seconds + row.gen_seconds,
                            "speed": row.total_rate(),
                            "samples_t_pp": samples.iter().map(|s| s.0).collect::<Vec<_>>(),
                            "samples_t_tg": samples.iter().map(|s| s.1).collect::<Vec<_>>(),
                        })
                    );
                }
                rows.push(row);
            }
        }
    }
    if !args.json {
        println!(
            "{model_name}, kernel {}, {threads} threads, KV cache {}/{}, medians of {} run(s)\n",
            path.name(),
            cache.keys.name(),
            cache.values.name(),
            args.reps
        );
        println!("| PP | TG | B | N_KV | T_PP s | S_PP t/s | T_TG s | S_TG t/s | T s | S t/s |");
        println!("|---|---|---|---|---|---|---|---|---|---|");
        let rate = |ok: bool, r: f64| if ok { format!("{r:.2}") } else { String::new() };
        for r in &rows {
            println!(
                "| {} | {} | {} | {} | {:.3} | {} | {:.3} | {} | {:.3} | {:.2} |",
                r.pp,
                r.tg,
                r.b,
                r.n_kv(),
                r.prompt_seconds,
                rate(r.pp > 0, r.prompt_rate()),
                r.gen_seconds,
                rate(r.tg > 0, r.gen_rate()),
                r.prompt_seconds + r.gen_seconds,
                r.total_rate(),
            );
        }
    }
    Ok(())
}
