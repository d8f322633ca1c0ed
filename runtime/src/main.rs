//! `bitnet-run`: generate text, chat, dump logits and measure perplexity with a `.bitnet` model.

mod cli;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = cli::Cli::parse_from(cli::normalize_args(std::env::args()));
    match cli::run(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", bitnet_format::error_chain(e.as_ref()));
            std::process::ExitCode::FAILURE
        }
    }
}
