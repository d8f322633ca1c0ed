//! `bitnet-run -m MODEL -p PROMPT`: stream a continuation to stdout, speeds to stderr.

use std::io::Write;
use std::time::Instant;

use anyhow::{Result, bail};
use bitnet_run::model::{Logits, Session};
use bitnet_run::sampling::Sampler;
use bitnet_run::tokenizer::{StreamDecoder, Tokenizer};

use super::{GenerateArgs, context_size, load_model};

pub fn run(args: &GenerateArgs) -> Result<()> {
    if args.system.is_some() {
        bail!("--system is the system message of --chat: add --chat, or put the text in -p");
    }
    let Some(prompt) = &args.prompt else {
        bail!("no prompt given: use -p PROMPT (or --chat)");
    };
    let model = load_model(&args.model)?;
    let tok = Tokenizer::from_info(model.file().header().tokenizer.as_ref())?;
    let ids = tok.encode_prompt(prompt)?;
    if ids.is_empty() {
        bail!("the prompt encodes to no tokens");
    }
    let ctx = context_size(&args.model, &model, 1, model.config.context_length as usize)?;
    if ids.len() >= ctx {
        bail!(
            "the prompt is {} tokens, which leaves no room in the context of {ctx} (-c)",
            ids.len()
        );
    }
    let mut sampler = Sampler::new(args.sampling.config(&model)?);
    let mut session = Session::new(&model, ctx, args.model.cache_types());
    let mut out = std::io::stdout().lock();
    write!(out, "{prompt}")?;
    out.flush()?;

    let start = Instant::now();
    let mut logits = session.forward(&ids, Logits::Last)?;
    let prompt_secs = start.elapsed().as_secs_f64();
    let mut history = ids.clone();
    let mut decoder = StreamDecoder::default();
    let gen_start = Instant::now();
    let mut generated = 0;
    while generated < args.n_predict && session.position() < ctx {
        let id = sampler.sample(&logits, &history);
        if tok.is_eos(id) {
            break;
        }
        history.push(id);
        generated += 1;
        if let Some(piece) = decoder.push(&tok, id)?
            && write!(out, "{piece}").and_then(|_| out.flush()).is_err()
        {
            return Ok(()); // stdout closed (e.g. piped into `head`): stop quietly
        }
        if generated < args.n_predict && session.position() < ctx {
            logits = session.forward(&[id], Logits::Last)?;
        }
    }
    if let Some(piece) = decoder.flush(&tok)? {
        write!(out, "{piece}")?;
    }
    writeln!(out)?;
    let gen_secs = gen_start.elapsed().as_secs_f64();
    eprintln!(
        "prompt: {} tokens in {:.2} s ({:.1} tokens/s) | generation: {} tokens in {:.2} s ({:.1} tokens/s) | {} threads, {} kernels",
        ids.len(),
        prompt_secs,
        ids.len() as f64 / prompt_secs,
        generated,
        gen_secs,
        generated as f64 / gen_secs.max(1e-9),
        model.threads(),
        model.path.name()
    );
    Ok(())
}
