//! `bitnet-run perplexity -m MODEL -f TEXT [-c CTX] [--json]`.
//!
//! The text is tokenized whole (with the model's BOS first, if it uses one) and cut into
//! non-overlapping windows of CTX tokens; in each window every token after the first is scored
//! given the ones before it (a final window needs at least 2 tokens). Perplexity is
//! `exp(mean negative log-likelihood)` over all scored tokens.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use bitnet_run::model::negative_log_likelihood;
use bitnet_run::tokenizer::Tokenizer;
use clap::Args;

use super::{ModelArgs, load_model};

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

pub fn run(args: PerplexityArgs) -> Result<()> {
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    // Windows need at least 2 tokens; by default at most 512, as llama.cpp's perplexity.
    let (model, ctx) = load_model(&args.model, 2, |trained| trained.min(512))?;
    let tok = Tokenizer::from_info(model.file().header().tokenizer.as_ref()).context(
        "perplexity reads text with the model's tokenizer (`logits --token-ids` takes ids)",
    )?;
    let ids = tok.encode_prompt(&text)?;
    if ids.len() < 2 {
        bail!("{} has fewer than 2 tokens", args.file.display());
    }
    let start = Instant::now();
    let (nll, count) = negative_log_likelihood(&model, &ids, ctx, args.model.cache.types())?;
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
