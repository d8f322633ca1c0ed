//! `bitnet-run bench`: llama-bench-style prompt-processing (ppN) and generation (tgN) speed, with the
//! memory roofline for generation.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use bitnet_run::kernels::{KernelPath, bandwidth};
use bitnet_run::model::memory::{MemoryNeed, PlacementArgs};
use bitnet_run::model::{KvTypeArgs, Logits, Model, Session};
use clap::Args;

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The .bitnet model file (default: the bundled demo model).
    #[arg(short = 'm', long = "model")]
    model: Option<PathBuf>,
    /// Prompt lengths to process (comma-separated; 0 skips).
    #[arg(
        short = 'p',
        long = "n-prompt",
        value_delimiter = ',',
        default_value = "128"
    )]
    prompt: Vec<usize>,
    /// Token counts to generate (comma-separated; 0 skips).
    #[arg(
        short = 'n',
        long = "n-gen",
        value_delimiter = ',',
        default_value = "64"
    )]
    gen_tokens: Vec<usize>,
    /// Depths: tokens already in the KV cache when each test starts (comma-separated).
    #[arg(
        short = 'd',
        long = "n-depth",
        value_delimiter = ',',
        default_value = "0"
    )]
    depth: Vec<usize>,
    /// Thread counts (comma-separated; default: all cores).
    #[arg(short = 't', long = "threads", value_delimiter = ',')]
    threads: Vec<usize>,
    /// Measured repetitions per test, after one warm-up.
    #[arg(short = 'r', long = "repetitions", default_value_t = 5)]
    reps: usize,
    /// One JSON object per line instead of a markdown table.
    #[arg(long)]
    json: bool,
    /// Kernel path (default: BITNET_KERNEL, else the fastest this CPU has).
    #[arg(long)]
    kernel: Option<String>,
    #[command(flatten)]
    cache: KvTypeArgs,
    /// Also measure the machine's read bandwidth and report generation against it.
    #[arg(long)]
    bandwidth: bool,
    #[command(flatten)]
    placement: PlacementArgs,
}

struct Row {
    test: String,
    threads: usize,
    mean: f64,
    stddev: f64,
    /// Bytes of weights and KV cache read per second (generation only).
    gbs: Option<f64>,
    /// Fraction of the measured read bandwidth (generation with --bandwidth).
    roofline: Option<f64>,
}

/// `1.18 GB`, `2.4 MB`.
fn human_bytes(b: f64) -> String {
    if b >= 1e9 {
        format!("{:.2} GB", b / 1e9)
    } else {
        format!("{:.1} MB", b / 1e6)
    }
}

fn mean_std(samples: &[f64]) -> (f64, f64) {
    let n = samples.len() as f64;
    let mean = samples.iter().sum::<f64>() / n;
    let var = samples.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    (mean, var.sqrt())
}

/// The median of `samples` (the mean of the middle two for an even count).
pub(super) fn median(samples: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = samples.collect();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Deterministic pseudo-random token ids.
pub(super) fn tokens(n: usize, vocab: u32) -> Vec<u32> {
    let mut s = 0x2545F4914F6CDD1Du64;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s % vocab as u64) as u32
        })
        .collect()
}

/// Seconds for one run of test `pp` (prompt of `n`) or `tg` (`n` tokens one at a time) on
/// `session`, whose first `depth` positions are kept and the rest forgotten first.
fn run_once(session: &mut Session, depth: usize, prompt: bool, ids: &[u32]) -> Result<f64> {
    session.truncate(depth);
    let start = Instant::now();
    if prompt {
        session.forward(ids, Logits::Last)?;
    } else {
        for &id in ids {
            session.forward(&[id], Logits::Last)?;
        }
    }
    Ok(start.elapsed().as_secs_f64())
}

pub fn run(args: BenchArgs) -> Result<()> {
    if args.reps == 0 {
        bail!("-r/--repetitions must be at least 1");
    }
    let path = KernelPath::chosen(args.kernel.as_deref())?;
    let threads = if args.threads.is_empty() {
        vec![std::thread::available_parallelism().map_or(1, |n| n.get())]
    } else {
        args.threads.clone()
    };
    if threads.contains(&0) {
        bail!("-t/--threads values must be at least 1");
    }
    if args.model.is_none() {
        eprintln!("note: {}", bitnet_run::demo::NOTE);
    }
    let name = super::model_label(args.model.as_deref());
    let cache = args.cache.types();
    let mut rows = Vec::new();
    let mut bytes_per_token = 0;
    let mut file_bytes = 0;
    let mut memory_checked = args.placement.no_memory_check;
    // The KV cache holds the deepest test: depth plus the longest prompt or generation.
    let longest = args.prompt.iter().chain(&args.gen_tokens).max();
    let positions = args.depth.iter().max().unwrap_or(&0) + longest.unwrap_or(&0);
    let placement = args.placement.placement();
    for &t in &threads {
        // Loading takes the file: opened again for each thread count, the note said once above.
        let (file, file_name) = super::open_file_quietly(args.model.as_deref())?;
        file_bytes = file.bytes().len();
        let need = MemoryNeed::of(&file, path, positions, cache);
        if !memory_checked {
            memory_checked = true;
            super::check_memory(&file_name, need, "use smaller -p, -n and -d (the KV cache)")?;
        }
        let file = super::place(file, &need, placement)
            .with_context(|| format!("cannot read {file_name} into memory"))?;
        let model = Model::load(file, path, t)?;
        bytes_per_token = model.weights.bytes_per_token();
        let kv_bytes = cache.bytes_per_position(&model.config) as usize;
        let ctx = model.config.context_length as usize;
        let bw = args.bandwidth.then(|| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(t)
                .build()
                .expect("thread pool");
            pool.install(|| bandwidth::measure(path, 1 << 30, 10))
        });
        if let Some(bw) = bw.filter(|_| !args.json) {
            eprintln!("read bandwidth, {t} threads: {:.1} GB/s", bw / 1e9);
        }
        let tests = args
            .prompt
            .iter()
            .map(|&n| (true, n))
            .chain(args.gen_tokens.iter().map(|&n| (false, n)));
        let tests: Vec<(bool, usize)> = tests.filter(|&(_, n)| n > 0).collect();
        for &depth in &args.depth {
            for &(_, n) in &tests {
                if depth + n > ctx {
                    bail!(
                        "test of {n} tokens at depth {depth} exceeds the model's context of {ctx}"
                    );
                }
            }
            // The depth is filled once per thread count; each run forgets what it added.
            let longest = tests.iter().map(|&(_, n)| n).max().unwrap_or(0);
            let mut session = Session::new(&model, depth + longest, cache);
            let vocab = model.config.vocab_size;
            session.forward(&tokens(depth, vocab), Logits::None)?;
            for &(prompt, n) in &tests {
                let ids = tokens(n, vocab);
                run_once(&mut session, depth, prompt, &ids)?;
                let samples: Vec<f64> = (0..args.reps)
                    .map(|_| run_once(&mut session, depth, prompt, &ids).map(|s| n as f64 / s))
                    .collect::<Result<_>>()?;
                let (mean, stddev) = mean_std(&samples);
                // Generation reads the weights and, on average, depth + n/2 cached positions.
                let read = bytes_per_token + (depth + n / 2) * kv_bytes;
                let gbs = (!prompt).then(|| mean * read as f64 / 1e9);
                let test = format!("{}{n}", if prompt { "pp" } else { "tg" });
                let test = if depth > 0 {
                    format!("{test} @ d{depth}")
                } else {
                    test
                };
                let row = Row {
                    test,
                    threads: t,
                    mean,
                    stddev,
                    gbs,
                    roofline: gbs.zip(bw).map(|(g, b)| g * 1e9 / b),
                };
                if args.json {
                    println!(
                        "{}",
                        serde_json::json!({
                            "model": name,
                            "test": row.test,
                        "depth": depth,
                        "cache_type_k": cache.keys.name(),
                        "cache_type_v": cache.values.name(),
                            "threads": t,
                            "kernel": path.name(),
                            "tokens_per_second": mean,
                            "stddev": stddev,
                            "samples": samples,
                            "bytes_per_token": bytes_per_token,
                            "gb_per_second_read": row.gbs,
                            "read_bandwidth_gb_per_second": bw.map(|b| b / 1e9),
                            "fraction_of_bandwidth": row.roofline,
                        })
                    );
                }
                rows.push(row);
            }
        }
    }
    if !args.json {
        println!(
            "| model | file size | weights read/token | kernel | threads | test | t/s | GB/s read | of bandwidth |"
        );
        println!("|---|---|---|---|---|---|---|---|---|");
        for r in rows {
            println!(
                "| {name} | {} | {} | {} | {} | {} | {:.2} ± {:.2} | {} | {} |",
                human_bytes(file_bytes as f64),
                human_bytes(bytes_per_token as f64),
                path.name(),
                r.threads,
                r.test,
                r.mean,
                r.stddev,
                r.gbs.map_or_else(String::new, |g| format!("{g:.1}")),
                r.roofline
                    .map_or_else(String::new, |f| format!("{:.0}%", f * 100.0)),
            );
        }
    }
    Ok(())
}
