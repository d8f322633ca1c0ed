//! `bitnet-run -m MODEL --chat`: multi-turn chat with the model's template, reusing the KV cache
//! for the part of the conversation that is already in it.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{Context, Result, bail};
use bitnet_run::chat::{ChatTemplate, Message};
use bitnet_run::model::{Logits, Session};
use bitnet_run::sampling::Sampler;
use bitnet_run::tokenizer::{StreamDecoder, Tokenizer};

use super::{GenerateArgs, load_model};

pub fn run(args: &GenerateArgs) -> Result<()> {
    let (model, ctx) = load_model(&args.model, 1, |trained| trained)?;
    let header = model.file().header();
    let info = header.tokenizer.as_ref();
    let tok = Tokenizer::from_info(info)
        .context("--chat needs the model's tokenizer (plain generation takes --token-ids)")?;
    let Some(template) = ChatTemplate::for_model(info, &tok)
        .context("the model's chat template does not compile")?
    else {
        bail!("this model has no chat template; use -p PROMPT instead of --chat");
    };
    let mut sampler = Sampler::new(args.sampling.config(&model)?);
    let mut session = Session::new(&model, ctx, args.model.cache.types());
    let mut cached: Vec<u32> = Vec::new();
    let mut messages: Vec<Message> = args
        .system
        .iter()
        .map(|s| Message::new("system", s))
        .collect();
    if let Some(p) = &args.prompt {
        messages.push(Message::new("user", p));
    }
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    let mut out = std::io::stdout().lock();
    loop {
        if messages.last().is_none_or(|m| m.role != "user") {
            eprint!("> ");
            // A terminal echoes the typed line's newline; at end of input, or with input from a
            // pipe, the prompt still needs one.
            let Some(line) = lines.next() else {
                eprintln!();
                break;
            };
            let line = line?;
            match line.trim() {
                "" => continue,
                "/exit" | "/quit" => {
                    if !std::io::stdin().is_terminal() {
                        eprintln!();
                    }
                    break;
                }
                text => messages.push(Message::new("user", text)),
            }
        }
        let render = |messages: &[Message]| -> Result<Vec<u32>> {
            let prompt = template
                .render(messages, true)
                .context("cannot render the chat template")?;
            Ok(tok.encode(&prompt, false)?)
        };
        let mut ids = render(&messages)?;
        if ids.is_empty() {
            bail!("the model's chat template renders this conversation to no tokens");
        }
        // Too long: drop the oldest turns (a user message and the reply to it), never the system
        // message or the new user message.
        let mut dropped = 0;
        while ids.len() >= ctx {
            let first = messages.iter().position(|m| m.role != "system");
            match first {
                Some(i) if i + 1 < messages.len() => {
                    let n = if messages[i + 1].role == "assistant" && i + 2 < messages.len() {
                        2
                    } else {
                        1
                    };
                    messages.drain(i..i + n);
                    dropped += n;
                    ids = render(&messages)?;
                }
                _ => bail!(
                    "the message is {} tokens with the system message, more than the context of {ctx} (-c)",
                    ids.len()
                ),
            }
        }
        if dropped > 0 {
            eprintln!(
                "note: the conversation outgrew the context of {ctx} tokens (-c): dropped the oldest {dropped} messages"
            );
        }
        // Reuse the cached prefix; run only what is new.
        let common = cached
            .iter()
            .zip(&ids)
            .take_while(|(a, b)| a == b)
            .count()
            .min(ids.len() - 1);
        session.truncate(common);
        cached.truncate(common);
        let mut logits = session.forward(&ids[common..], Logits::Last)?;
        cached.extend_from_slice(&ids[common..]);
        let mut decoder = StreamDecoder::default();
        let mut reply = Vec::new();
        while args.n_predict.wants(reply.len()) && session.position() < ctx {
            let id = sampler.sample(&logits, &cached);
            if tok.is_eos(id) {
                break;
            }
            reply.push(id);
            if let Some(piece) = decoder.push(&tok, id)? {
                write!(out, "{piece}")?;
                out.flush()?;
            }
            logits = session.forward(&[id], Logits::Last)?;
            cached.push(id);
        }
        if let Some(piece) = decoder.flush(&tok)? {
            write!(out, "{piece}")?;
        }
        writeln!(out)?;
        messages.push(Message::new("assistant", tok.decode(&reply)?.trim()));
    }
    Ok(())
}
