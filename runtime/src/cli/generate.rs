//! `bitnet-run -m MODEL -p PROMPT`: stream a continuation to stdout, speeds to stderr.
//! `--token-ids` gives the prompt as ids instead; a model without a tokenizer then prints ids.

use std::io::Write;
use std::time::Instant;

use anyhow::{Result, bail};
use bitnet_run::model::{Logits, Session};
use bitnet_run::sampling::Sampler;
use bitnet_run::tokenizer::{StreamDecoder, Tokenizer, TokenizerError};

use super::{GenerateArgs, Limit, load_model};

/// Writes tokens as text when the model has a tokenizer, else as space-separated ids.
enum Printer {
    Text(Box<Tokenizer>, StreamDecoder),
    Ids,
}

impl Printer {
    fn prompt(&self, ids: &[u32], text: Option<&str>) -> Result<String> {
        Ok(match (self, text) {
            (_, Some(text)) => text.to_string(),
            (Printer::Text(tok, _), None) => tok.decode(ids)?,
            (Printer::Ids, None) => ids.iter().map(|id| format!("{id} ")).collect(),
        })
    }

    fn token(&mut self, id: u32) -> Result<Option<String>> {
        Ok(match self {
            Printer::Text(tok, decoder) => decoder.push(tok, id)?,
            Printer::Ids => Some(format!("{id} ")),
        })
    }

    fn flush(&mut self) -> Result<Option<String>> {
        Ok(match self {
            Printer::Text(tok, decoder) => decoder.flush(tok)?,
            Printer::Ids => None,
        })
    }

    fn tokenizer(&self) -> Option<&Tokenizer> {
        match self {
            Printer::Text(tok, _) => Some(tok),
            Printer::Ids => None,
        }
    }
}

pub fn run(args: &GenerateArgs) -> Result<()> {
    if args.system.is_some() {
        bail!("--system is the system message of --chat: add --chat, or put the text in -p");
    }
    if args.prompt.is_none() && args.token_ids.is_none() {
        bail!("no prompt given: use -p PROMPT, --token-ids IDS or --chat");
    }
    let (model, ctx) = load_model(&args.model, 1, |trained| trained)?;
    let tokenizer = Tokenizer::from_info(model.file().header().tokenizer.as_ref());
    let (mut printer, ids) = match (tokenizer, &args.token_ids) {
        (Ok(tok), Some(ids)) => (
            Printer::Text(Box::new(tok), StreamDecoder::default()),
            ids.clone(),
        ),
        (Ok(tok), None) => {
            let ids = tok.encode_prompt(args.prompt.as_deref().unwrap_or_default())?;
            (Printer::Text(Box::new(tok), StreamDecoder::default()), ids)
        }
        (Err(TokenizerError::Missing), Some(ids)) => {
            eprintln!("note: this model file has no tokenizer: printing token ids");
            (Printer::Ids, ids.clone())
        }
        (Err(TokenizerError::Missing), None) => bail!(
            "this model file has no tokenizer: give the prompt as token ids (--token-ids 1,2,3)"
        ),
        (Err(e), _) => return Err(e.into()),
    };
    if ids.is_empty() {
        bail!("the prompt encodes to no tokens");
    }
    if ids.len() >= ctx {
        bail!(
            "the prompt is {} tokens, which leaves no room in the context of {ctx} (-c)",
            ids.len()
        );
    }
    let mut sampler = Sampler::new(args.sampling.config(&model)?);
    let mut session = Session::new(&model, ctx, args.model.cache.types());
    let mut out = std::io::stdout().lock();
    write!(out, "{}", printer.prompt(&ids, args.prompt.as_deref())?)?;
    out.flush()?;

    let start = Instant::now();
    let mut logits = session.forward(&ids, Logits::Last)?;
    let prompt_secs = start.elapsed().as_secs_f64();
    let mut history = ids.clone();
    // The tokens in the cache (they differ from `history` once the context has shifted).
    let mut cached = ids.clone();
    let gen_start = Instant::now();
    let mut generated = 0;
    let mut shifts = 0;
    let limit = args.n_predict;
    while limit.wants(generated) {
        let id = sampler.sample(&logits, &history);
        if printer.tokenizer().is_some_and(|t| t.is_eos(id)) {
            break;
        }
        history.push(id);
        generated += 1;
        if let Some(piece) = printer.token(id)?
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
        let bos = printer.tokenizer().and_then(Tokenizer::bos);
        let bos = usize::from(bos.is_some_and(|b| cached.first() == Some(&b)));
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
    if let Some(piece) = printer.flush()? {
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
