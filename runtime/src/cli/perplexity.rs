//! `bitnet-run perplexity -m MODEL -f TEXT [-c CTX] [--json]`.
//!
//! The text is tokenized whole (with the model's BOS first, if it uses one) and cut into
//! non-overlapping windows of CTX tokens; in each window every token after the first is scored
//! given the ones before it (a final window needs at least 2 tokens). Perplexity is
//! `exp(mean negative log-likelihood)` over all scored tokens.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use bitnet_run::model::{Logits, Model, Session};
use bitnet_run::tokenizer::Tokenizer;
use clap::Args;

use super::{ModelArgs, context_size, load_model};

#[derive(Debug, Args)]
pub struct PerplexityArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The text file to score.
    #[arg(short = 'f', long = "file")]
    file: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// Total negative log-likelihood and the number of tokens scored.
pub fn score(model: &Model, ids: &[u32], ctx: usize) -> Result<(f64, usize)> {
    let vocab = model.config.vocab_size as usize;
    let mut session = Session::new(model, ctx);
    let (mut nll, mut count) = (0.0f64, 0usize);
    for window in ids.chunks(ctx).filter(|w| w.len() >= 2) {
        session.truncate(0);
        let logits = session.forward(window, Logits::All)?;
        for (i, &target) in window.iter().enumerate().skip(1) {
            let row = &logits[(i - 1) * vocab..i * vocab];
            let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
            let log_sum = row
                .iter()
                .map(|&v| (v as f64 - max).exp())
                .sum::<f64>()
                .ln()
                + max;
            nll += log_sum - row[target as usize] as f64;
            count += 1;
        }
    }
    Ok((nll, count))
}

pub fn run(args: PerplexityArgs) -> Result<()> {
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let model = load_model(&args.model)?;
    let tok = Tokenizer::from_info(model.file().header().tokenizer.as_ref())?;
    let ids = tok.encode_prompt(&text)?;
    // Windows need at least 2 tokens; by default at most 512, as llama.cpp's perplexity.
    let trained = model.config.context_length as usize;
    let ctx = context_size(&args.model, &model, 2, trained.min(512))?;
    if ids.len() < 2 {
        bail!("{} has fewer than 2 tokens", args.file.display());
    }
    let start = Instant::now();
    let (nll, count) = score(&model, &ids, ctx)?;
    let ppl = (nll / count as f64).exp();
    let secs = start.elapsed().as_secs_f64();
    if args.json {
        println!(
            "{}",
            serde_json::json!({"perplexity": ppl, "tokens": count, "ctx": ctx, "windows": ids.len().div_ceil(ctx), "seconds": secs})
        );
    } else {
        println!(
            "perplexity: {ppl:.4} over {count} scored tokens (windows of {ctx}, {:.1} s)",
            secs
        );
    }
    Ok(())
}
