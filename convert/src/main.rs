//! `bitnet-convert`: convert a BitNet b1.58 checkpoint to `.bitnet`, or inspect or verify one.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use bitnet_convert::{
    ConvertOptions, EmbeddingsChoice, HubOptions, SourceSpec, auto_layout, compact_layout, convert,
    gguf, inspect::inspect, remove_partial_files, synthetic, verify::verify_file,
};
use bitnet_format::{Encoding, TernaryLayout};
use clap::{Args, Parser, Subcommand, ValueEnum};

/// Convert BitNet b1.58 checkpoints (Hugging Face repos or local directories) to .bitnet files.
#[derive(Parser, Debug)]
#[command(
    name = "bitnet-convert",
    version,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    after_help = "Examples:\n  bitnet-convert microsoft/bitnet-b1.58-2B-4T -o bitnet-2b.bitnet\n  bitnet-convert ./my-checkpoint -o model.bitnet --layout i2s\n  bitnet-convert ggml-model-i2_s.gguf -o model.bitnet\n  bitnet-convert export-gguf model.bitnet -o model.gguf --type tq2_0\n  bitnet-convert inspect model.bitnet\n  bitnet-convert verify model.bitnet\n\nEnvironment: HF_HOME (cache), HF_TOKEN (gated repos), HF_HUB_OFFLINE=1 (cache only), HF_ENDPOINT (mirror)."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    convert: ConvertArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Show a .bitnet file's header, model configuration, provenance and tensors.
    Inspect {
        /// The .bitnet file to show.
        file: PathBuf,
    },
    /// Check every checksum, every padding byte and every tensor's encoding of a .bitnet file.
    Verify {
        /// The .bitnet file to check.
        file: PathBuf,
    },
    /// Write a random-weight model of a real checkpoint's shape, for benchmarks (nothing is downloaded).
    Synthetic(SyntheticArgs),
    /// Write a .bitnet file as GGUF for llama.cpp (tq2_0, tq1_0) or bitnet.cpp (i2_s).
    ExportGguf(ExportGgufArgs),
}

#[derive(Args, Debug)]
struct ExportGgufArgs {
    /// The .bitnet file to read.
    input: PathBuf,
    /// The GGUF file to write.
    #[arg(short, long, value_name = "OUT.gguf")]
    output: PathBuf,
    /// Ternary tensor type: tq2_0 or tq1_0 (mainline llama.cpp), i2_s (bitnet.cpp, x86 layout).
    #[arg(long = "type", value_enum)]
    ty: GgufTypeArg,
    /// Do not store the exact tokenizer.json as tokenizer.huggingface.json.
    #[arg(long)]
    no_hf_tokenizer: bool,
    /// Replace OUT if it exists.
    #[arg(long)]
    force: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum GgufTypeArg {
    #[value(name = "tq2_0")]
    Tq2_0,
    #[value(name = "tq1_0")]
    Tq1_0,
    #[value(name = "i2_s", alias = "i2s")]
    I2s,
}

#[derive(Args, Debug)]
struct SyntheticArgs {
    /// The shape: bitnet-2b4t, bitnet-large, bitnet-3b, llama3-8b-1.58, falcon3-1b, falcon3-3b,
    /// falcon3-7b, falcon3-10b, or bitnet.cpp's dummy bitnet-30b, bitnet-70b or bitnet-100b.
    #[arg(long, value_name = "SHAPE")]
    like: String,
    /// The .bitnet file to write; with --hf, the checkpoint directory.
    #[arg(short, long)]
    output: PathBuf,
    /// Ternary layout (as for conversion).
    #[arg(long, default_value = "auto", value_parser = parse_layout)]
    layout: LayoutArg,
    /// Encoding of token_embd and output (f16 as in bitnet.cpp's I2_S files).
    #[arg(long, value_enum, default_value = "f16")]
    embeddings: EmbeddingsArg,
    /// Write a Hugging Face checkpoint instead (bf16 latent, or packed for Llama-architecture shapes),
    /// to benchmark conversion on full-size input.
    #[arg(long)]
    hf: bool,
    /// Seed of the random weights.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Replace the output if it exists.
    #[arg(long)]
    force: bool,
}

#[derive(Args, Debug)]
struct ConvertArgs {
    /// A Hugging Face repo id (owner/name), a local checkpoint directory (config.json + *.safetensors), or a GGUF file (bitnet.cpp or llama.cpp; recognised by its content, whatever its name).
    #[arg(required = true)]
    source: Option<String>,
    /// The .bitnet file to write.
    #[arg(short, long, value_name = "OUT.bitnet", required = true)]
    output: Option<PathBuf>,
    /// Branch, tag or commit of a Hugging Face repo [default: main].
    #[arg(long, value_name = "REV")]
    revision: Option<String>,
    /// Ternary layout: auto (tiled16 on x86-64, tiled4 on AArch64), compact (1.6 bits per weight: base3x16 on x86-64, base3x4 on AArch64), tiled4, tiled8, tiled16, tiled32, base3x4, base3x8, base3x16, base3x32, i2s (= i2s128) or i2s64.
    #[arg(long, default_value = "auto", value_parser = parse_layout)]
    layout: LayoutArg,
    /// Encoding of token_embd and output [default: the checkpoint's dtype].
    #[arg(long, value_enum)]
    embeddings: Option<EmbeddingsArg>,
    /// Worker threads, at most one per core [default: one per core].
    #[arg(short = 't', long, value_name = "N")]
    threads: Option<usize>,
    /// GGUF input only: elements per I2_S block, 128 (x86 builds of bitnet.cpp, the files on the Hub) or 64 (ARM builds) [default: as the data shows, else 128 with a warning].
    #[arg(long, value_name = "N")]
    gguf_i2s_block: Option<u32>,
    /// Skip checking the packed tensors against the reference unpacker and re-reading the file.
    #[arg(long)]
    no_verify: bool,
    /// Replace OUT if it exists.
    #[arg(long)]
    force: bool,
}

#[derive(Clone, Copy, Debug)]
enum LayoutArg {
    Auto,
    Fixed(TernaryLayout),
}

fn parse_layout(s: &str) -> Result<LayoutArg, String> {
    match s {
        "auto" => return Ok(LayoutArg::Auto),
        "compact" => return Ok(LayoutArg::Fixed(compact_layout())),
        _ => {}
    }
    TernaryLayout::from_label(s).map(LayoutArg::Fixed).ok_or_else(|| {
        format!("unknown layout {s:?}: expected auto, compact, tiled4, tiled8, tiled16, tiled32, base3x4, base3x8, base3x16, base3x32, i2s, i2s128 or i2s64")
    })
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum EmbeddingsArg {
    F16,
    Bf16,
    F32,
    /// int8 with an f32 scale per row
    I8,
    /// 4-bit codes with an f16 scale per block of 32 columns (GGML's Q4_0 arithmetic)
    Q4,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", bitnet_format::error_chain(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

/// On Ctrl-C or SIGTERM, remove every temporary output (files and directories), say so, and exit
/// with 130, the status of a command interrupted by Ctrl-C.
fn exit_cleanly_on_interrupt() -> Result<()> {
    ctrlc::set_handler(|| {
        remove_partial_files();
        eprintln!("\ninterrupted: no output written");
        std::process::exit(130);
    })
    .context("installing the Ctrl-C handler")
}

/// A `warning:` when `output`'s name does not end in `.EXTENSION`: the file is `extension` whatever
/// its name, and a later reader going by the name would take it for something else.
fn warn_extension(output: &Path, extension: &str) {
    let actual = output
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase());
    if actual.as_deref() == Some(extension) {
        return;
    }
    let named = match actual {
        Some(e) => format!("its name ends in .{e}"),
        None => "its name has no extension".to_string(),
    };
    eprintln!(
        "warning: {}: writing a .{extension} file, but {named}",
        output.display()
    );
}

fn print_remarks(warnings: &[String], notes: &[String]) {
    for warning in warnings {
        eprintln!("warning: {warning}");
    }
    for note in notes {
        eprintln!("note: {note}");
    }
}

/// Whether `path` is a GGUF file, by its magic bytes (whatever its name).
fn is_gguf(path: &Path) -> bool {
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok_and(|()| &magic == b"GGUF")
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Some(Command::Inspect { file }) => {
            let text = inspect(&file).with_context(|| format!("{}", file.display()))?;
            print!("{text}");
            Ok(())
        }
        Some(Command::Verify { file }) => {
            let summary = verify_file(&file)?;
            println!(
                "{}: OK ({} tensors, {} bytes: checksums, padding and tensor encodings verified)",
                file.display(),
                summary.tensors,
                summary.bytes
            );
            Ok(())
        }
        Some(Command::Synthetic(args)) => synthetic_command(args),
        Some(Command::ExportGguf(args)) => export_gguf_command(args),
        None => convert_command(cli.convert),
    }
}

fn synthetic_command(args: SyntheticArgs) -> Result<()> {
    let shape = synthetic::Shape::find(&args.like)?;
    if args.output.exists() && !args.force {
        anyhow::bail!(
            "{} exists; use --force to replace it",
            args.output.display()
        );
    }
    if !args.hf {
        warn_extension(&args.output, "bitnet");
    }
    exit_cleanly_on_interrupt()?;
    let start = std::time::Instant::now();
    let written = if args.hf {
        synthetic::write_hf(&args.output, shape, args.seed)?
    } else {
        let layout = match args.layout {
            LayoutArg::Auto => auto_layout(),
            LayoutArg::Fixed(l) => l,
        };
        let embeddings = match args.embeddings {
            EmbeddingsArg::F16 => Encoding::F16,
            EmbeddingsArg::Bf16 => Encoding::Bf16,
            EmbeddingsArg::F32 => Encoding::F32,
            EmbeddingsArg::I8 => Encoding::I8Row,
            EmbeddingsArg::Q4 => Encoding::Q4B32,
        };
        synthetic::write_bitnet(&args.output, shape, layout, embeddings, args.seed)?
    };
    println!(
        "{}: {} shape, {} tensors, {:.2} G parameters, {:.2} GB, {:.1} s",
        args.output.display(),
        shape.name,
        written.tensors,
        written.parameters as f64 / 1e9,
        written.bytes as f64 / 1e9,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

fn export_gguf_command(args: ExportGgufArgs) -> Result<()> {
    let ty = match args.ty {
        GgufTypeArg::Tq2_0 => gguf::ExportType::Tq2_0,
        GgufTypeArg::Tq1_0 => gguf::ExportType::Tq1_0,
        GgufTypeArg::I2s => gguf::ExportType::I2s,
    };
    warn_extension(&args.output, "gguf");
    exit_cleanly_on_interrupt()?;
    let mut options = gguf::ExportOptions::new(args.input, args.output, ty);
    options.force = args.force;
    options.embed_hf_tokenizer = !args.no_hf_tokenizer;
    let report = gguf::export_gguf(&options)?;
    print_remarks(&report.warnings, &report.notes);
    println!("{report}");
    Ok(())
}

fn embeddings_choice(arg: Option<EmbeddingsArg>) -> EmbeddingsChoice {
    match arg {
        None => EmbeddingsChoice::Source,
        Some(EmbeddingsArg::F16) => EmbeddingsChoice::F16,
        Some(EmbeddingsArg::Bf16) => EmbeddingsChoice::Bf16,
        Some(EmbeddingsArg::F32) => EmbeddingsChoice::F32,
        Some(EmbeddingsArg::I8) => EmbeddingsChoice::I8,
        Some(EmbeddingsArg::Q4) => EmbeddingsChoice::Q4,
    }
}

fn convert_command(args: ConvertArgs) -> Result<()> {
    let (Some(source), Some(output)) = (args.source, args.output) else {
        anyhow::bail!("SOURCE and -o OUT.bitnet are required");
    };
    warn_extension(&output, "bitnet");
    exit_cleanly_on_interrupt()?;
    let source_path = Path::new(&source);
    // By content: a GGUF file keeps its magic whatever it is called; a name ending in .gguf still
    // goes to the GGUF reader, whose error then says what the file is not.
    if source_path.is_file()
        && (is_gguf(source_path) || source.to_ascii_lowercase().ends_with(".gguf"))
    {
        let mut options = gguf::ImportOptions::new(source_path, output);
        options.layout = match args.layout {
            LayoutArg::Auto => auto_layout(),
            LayoutArg::Fixed(l) => l,
        };
        options.embeddings = embeddings_choice(args.embeddings);
        options.i2s_block = args.gguf_i2s_block;
        options.threads = args.threads;
        options.verify = !args.no_verify;
        options.force = args.force;
        let report = gguf::import_gguf(&options)?;
        print_remarks(&report.summary.warnings, &report.summary.notes);
        println!("{report}");
        return Ok(());
    }
    // A source that is not there at all is named as such before the flag is judged.
    let spec = SourceSpec::parse(&source, args.revision.as_deref())?;
    if let Some(block) = args.gguf_i2s_block {
        anyhow::bail!(
            "--gguf-i2s-block {block} applies to GGUF input only, and {source} is not a GGUF file"
        );
    }
    let mut options = ConvertOptions::new(spec, output);
    options.hub = HubOptions::from_env();
    options.layout = match args.layout {
        LayoutArg::Auto => auto_layout(),
        LayoutArg::Fixed(l) => l,
    };
    options.embeddings = embeddings_choice(args.embeddings);
    options.threads = args.threads;
    options.verify = !args.no_verify;
    options.force = args.force;
    let report = convert(&options)?;
    print_remarks(&report.warnings, &report.notes);
    println!("{report}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every argument of every (sub)command says what it is in `--help`.
    #[test]
    fn every_argument_has_help() {
        fn check(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in command.get_arguments() {
                if arg.get_help().is_none() {
                    missing.push(format!("{path} {}", arg.get_id()));
                }
            }
            for sub in command.get_subcommands() {
                check(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        let command = Cli::command();
        check(&command, "bitnet-convert", &mut missing);
        assert!(missing.is_empty(), "arguments without help: {missing:?}");
        assert!(command.get_subcommands().count() >= 4);
    }
}
