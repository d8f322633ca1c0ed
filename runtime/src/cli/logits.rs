//! `bitnet-run logits -m MODEL --token-ids 1,2,3 -o OUT.npy`: float32 logits `[T, vocab]`.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use bitnet_run::model::{Logits, Session};
use clap::Args;

use super::{ModelArgs, load_model, npy};

#[derive(Debug, Args)]
pub struct LogitsArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Comma-separated token ids, run as one prompt.
    #[arg(long, value_delimiter = ',', required = true)]
    token_ids: Vec<u32>,
    /// Output .npy file.
    #[arg(short = 'o', long)]
    output: PathBuf,
    /// Replace the output file if it exists.
    #[arg(long)]
    force: bool,
}

pub fn run(args: LogitsArgs) -> Result<()> {
    if args.token_ids.is_empty() {
        bail!("--token-ids is empty");
    }
    // Refused before the model runs, not after.
    if args.output.exists() && !args.force {
        bail!(
            "{} already exists; pass --force to replace it",
            args.output.display()
        );
    }
    ctrlc::set_handler(|| {
        bitnet_format::remove_partial_files();
        eprintln!("\ninterrupted: no output written");
        std::process::exit(130);
    })
    .context("installing the Ctrl-C handler")?;
    let (model, ctx) = load_model(&args.model, 1, |trained| trained)?;
    if args.token_ids.len() > ctx {
        bail!(
            "{} token ids do not fit in the context of {ctx} (-c)",
            args.token_ids.len()
        );
    }
    let mut session = Session::new(&model, ctx, args.model.cache.types());
    let logits = session.forward(&args.token_ids, Logits::All)?;
    let vocab = model.config.vocab_size as usize;
    npy::write_f32(&args.output, &[args.token_ids.len(), vocab], &logits)?;
    Ok(())
}
