//! Replays the GGUF import fuzz target's committed corpus (`convert/fuzz/corpus/import`) and its
//! seeds (the GGUF files of `testdata/gguf`, which the fuzzer reads as a second corpus directory)
//! as an ordinary test, so every input that once found new behaviour, or once crashed the parser,
//! keeps being checked without the fuzzer.

use std::path::{Path, PathBuf};

use bitnet_convert::gguf::container::{self, array, string};
use bitnet_convert::gguf::fuzz::exercise_import;
use bitnet_convert::gguf::{GgufError, ImportOptions, import_bytes};
use gguf_rs_lib::format::metadata::MetadataValue;
use gguf_rs_lib::format::types::GGUFValueType;

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files(&path, out);
        } else {
            out.push(path);
        }
    }
}

#[test]
fn gguf_fuzz_corpus_never_panics() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut corpus = Vec::new();
    files(&root.join("fuzz/corpus/import"), &mut corpus);
    assert!(corpus.len() > 10, "the corpus is committed");
    let mut seeds = Vec::new();
    files(&root.join("../testdata/gguf"), &mut seeds);
    assert!(seeds.len() >= 5, "the seeds are committed");
    for path in corpus.iter().chain(&seeds) {
        exercise_import(&std::fs::read(path).unwrap());
    }
}

#[test]
fn the_corpus_seeds_import() {
    // The named seeds (tiny models with byte-level BPE, SentencePiece and verbatim tokenizers, and
    // those models as bitnet-convert exports them) import cleanly, so the fuzzer starts from inputs
    // that reach every stage of the import.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/import");
    let mut seeds = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if !path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("seed-")
        {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        if let Err(e) = import_bytes(&path, &bytes, &ImportOptions::new(&path, "x.bitnet")) {
            panic!("{}: {e}", path.display());
        }
        seeds += 1;
    }
    assert_eq!(seeds, 7);
}

/// A SentencePiece-style vocabulary with one piece of `len` bytes, as GGUF metadata of an
/// otherwise valid llama model without tensors.
fn long_piece_gguf(dir: &Path, len: usize) -> Vec<u8> {
    let u32s = |k: &str, v: u32| (k.to_string(), MetadataValue::U32(v));
    let tokens = ["<unk>".to_string(), "a".repeat(len), "a".into(), "b".into()];
    let meta = vec![
        ("general.architecture".to_string(), string("llama")),
        u32s("llama.context_length", 16),
        u32s("llama.embedding_length", 32),
        u32s("llama.block_count", 1),
        u32s("llama.feed_forward_length", 32),
        u32s("llama.attention.head_count", 2),
        u32s("llama.vocab_size", 4),
        (
            "llama.attention.layer_norm_rms_epsilon".to_string(),
            MetadataValue::F32(1e-5),
        ),
        ("tokenizer.ggml.model".to_string(), string("llama")),
        (
            "tokenizer.ggml.tokens".to_string(),
            array(GGUFValueType::String, tokens.iter().map(string).collect()),
        ),
        (
            "tokenizer.ggml.scores".to_string(),
            array(GGUFValueType::F32, vec![MetadataValue::F32(0.0); 4]),
        ),
        (
            "tokenizer.ggml.token_type".to_string(),
            array(
                GGUFValueType::I32,
                [2, 1, 1, 1].map(MetadataValue::I32).to_vec(),
            ),
        ),
    ];
    let path = dir.join("long.gguf");
    container::write::<GgufError>(&path, &meta, &[], |_| Ok(Vec::new())).unwrap();
    std::fs::read(path).unwrap()
}

#[test]
fn a_very_long_token_is_imported_in_linear_time() {
    // Found by review, not by the fuzzer (its inputs stay below a few hundred kB): building the
    // merges of a SentencePiece vocabulary looked up every split of every piece, quadratic in a
    // piece's length: this test ran for over five minutes before being stopped. Now it takes
    // milliseconds.
    let dir = tempfile::tempdir().unwrap();
    let bytes = long_piece_gguf(dir.path(), 4 << 20);
    let path = dir.path().join("long.gguf");
    let start = std::time::Instant::now();
    let err = import_bytes(&path, &bytes, &ImportOptions::new(&path, "x.bitnet"))
        .err()
        .unwrap()
        .to_string();
    // The tokenizer is rebuilt before the tensors are looked at: this model has none.
    assert!(
        err.contains("1 layers, but the file has only 0 tensors"),
        "{err}"
    );
    assert!(start.elapsed().as_secs() < 30, "{:?}", start.elapsed());
}

#[test]
fn a_huge_block_count_is_refused_before_anything_is_allocated_for_it() {
    // Found by review: the list of expected tensors was built from block_count alone, so a file of
    // a few kB claiming 2^32 - 1 layers asked for hundreds of GB.
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/gguf/bitnet_q4_0.gguf");
    let mut bytes = std::fs::read(&src).unwrap();
    let key = b"bitnet.block_count";
    let at = bytes.windows(key.len()).position(|w| w == key).unwrap() + key.len();
    assert_eq!(
        bytes[at..at + 8],
        [4, 0, 0, 0, 1, 0, 0, 0],
        "a u32 holding 1"
    );
    bytes[at + 4..at + 8].copy_from_slice(&u32::MAX.to_le_bytes());
    let err = import_bytes(&src, &bytes, &ImportOptions::new(&src, "x.bitnet"))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("bitnet.block_count: 4294967295 layers, but the file has only 13 tensors"),
        "{err}"
    );
}
