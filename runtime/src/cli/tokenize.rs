//! `bitnet-run tokenize [-m MODEL] -p TEXT`: the ids generation would run for a prompt, as one JSON
//! array on stdout, so a tokenizer can be checked against another implementation.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use bitnet_run::tokenizer::Tokenizer;
use clap::Args;

use super::open_file;

#[derive(Debug, Args)]
pub struct TokenizeArgs {
    /// The .bitnet model file (default: the bundled demo model).
    #[arg(short = 'm', long = "model")]
    model: Option<PathBuf>,
    /// The text to tokenize.
    #[arg(short = 'p', long = "prompt")]
    prompt: Option<String>,
    /// Read the text from this file instead.
    #[arg(short = 'f', long = "file", conflicts_with = "prompt")]
    file: Option<PathBuf>,
    /// Leave out the BOS token that generation puts first for models that want one.
    #[arg(long)]
    no_bos: bool,
}

pub fn run(args: TokenizeArgs) -> Result<()> {
    let text = match (&args.prompt, &args.file) {
        (Some(p), _) => p.clone(),
        (None, Some(f)) => {
            std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?
        }
        (None, None) => bail!("no text given: use -p TEXT or -f FILE"),
    };
    let (file, name) = open_file(args.model.as_deref())?;
    let tok = Tokenizer::from_info(file.header().tokenizer.as_ref())
        .with_context(|| format!("cannot tokenize with {name}"))?;
    let ids = if args.no_bos {
        tok.encode(&text, false)?
    } else {
        tok.encode_prompt(&text)?
    };
    println!("{}", serde_json::to_string(&ids)?);
    Ok(())
}
