//! The opt-in smaller output matrices (`--embeddings i8` and `q4`) on the trained demo model: their
//! held-out perplexity stays within 1% of the unquantized conversion's on every kernel path (measured
//! on this text: i8 +0.02%, q4 +0.8%; BENCHMARKS.md has the whole held-out file).

mod convert_support;

use std::path::Path;

use bitnet_convert::EmbeddingsChoice;
use bitnet_format::{BitnetFile, Encoding, names};
use bitnet_run::kernels::KernelPath;
use bitnet_run::model::{KvTypes, Model, negative_log_likelihood};
use bitnet_run::tokenizer::Tokenizer;
use convert_support::*;

fn demo() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/demo")
}

/// Perplexity of the first 2048 held-out tokens in windows of 128.
fn perplexity(file: &Path, path: KernelPath) -> f64 {
    let model = Model::load(BitnetFile::open(file).unwrap(), path, 2).unwrap();
    let tok = Tokenizer::from_info(model.file().header().tokenizer.as_ref()).unwrap();
    let text = std::fs::read_to_string(demo().join("heldout.txt")).unwrap();
    let ids = tok.encode_prompt(&text).unwrap();
    let (nll, count) =
        negative_log_likelihood(&model, &ids[..2048], 128, KvTypes::default()).unwrap();
    (nll / count as f64).exp()
}

#[test]
fn quantized_output_matrices_cost_under_one_percent_perplexity() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("bf16.bitnet");
    convert_dir(&demo(), &base);
    let reference = perplexity(&base, KernelPath::detect());
    for (choice, encoding) in [
        (EmbeddingsChoice::I8, Encoding::I8Row),
        (EmbeddingsChoice::Q4, Encoding::Q4B32),
    ] {
        let out = dir.path().join(format!("{}.bitnet", choice.label()));
        let mut o = options(&demo(), &out);
        o.embeddings = choice;
        bitnet_convert::convert(&o).unwrap();
        let file = BitnetFile::open(&out).unwrap();
        assert_eq!(
            file.tensor(names::TOKEN_EMBD).unwrap().info.encoding,
            encoding
        );
        for path in KernelPath::available() {
            let ppl = perplexity(&out, path);
            eprintln!("{} on {path:?}: {ppl:.3} vs {reference:.3}", choice.label());
            assert!(
                (ppl / reference - 1.0).abs() < 0.01,
                "{} on {path:?}: perplexity {ppl} vs {reference} unquantized",
                choice.label()
            );
        }
    }
}
