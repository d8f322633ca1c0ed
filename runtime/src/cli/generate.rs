//! `bitnet-run -m MODEL -p PROMPT`: stream a continuation to stdout, speeds to stderr.

use std::io::Write;
use std::time::Instant;

use anyhow::{Result, bail};
use bitnet_run::model::{Logits, Session};
use bitnet_run::sampling::Sampler;
use bitnet_run::tokenizer::{StreamDecoder, Tokenizer};

use super::{GenerateArgs, Limit, context_size, load_model};

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
    // The tokens in the cache (they differ from `history` once the context has shifted).
    let mut cached = ids.clone();
    let mut decoder = StreamDecoder::default();
    let gen_start = Instant::now();
    let mut generated = 0;
    let mut shifts = 0;
    let limit = args.n_predict;
    while limit.wants(generated) {
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
        if !limit.wants(generated) {
            break;
        }
        if session.position() < ctx {
            logits = session.forward(&[id], Logits::Last)?;
            cached.push(id);
            continue;
        }
        // The context is full: stop, or keep the start and the newer half of the rest and
        // continue from them (llama.cpp's context shift), re-running what is kept.
        if limit == Limit::ContextFull {
            break;
        }
        let bos = usize::from(tok.bos().is_some_and(|b| cached.first() == Some(&b)));
        let keep = (bos + args.keep).min(cached.len());
        let discard = (cached.len() - keep) / 2;
        if args.no_context_shift || discard == 0 {
            eprintln!(
                "\nnote: stopped after {generated} tokens: the context of {ctx} tokens (-c) is full{}",
                if args.no_context_shift {
                    " (--no-context-shift)"
                } else {
                    "; --keep leaves nothing to drop"
                }
            );
            break;
        }
        if shifts == 0 {
            eprintln!(
                "\nnote: the context of {ctx} tokens (-c) is full: dropping the oldest {discard} tokens after the first {keep} and continuing (--no-context-shift stops instead)"
            );
        }
        shifts += 1;
        cached.drain(keep..keep + discard);
        cached.push(id);
        session.truncate(keep);
        logits = session.forward(&cached[keep..], Logits::Last)?;
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
