//! The body of the GGUF import fuzz target (`convert/fuzz`), shared with the test that replays its
//! corpus (`convert/tests/gguf_fuzz_corpus.rs`).

use std::path::Path;

use super::{ImportOptions, import_bytes};
use crate::plan::EmbeddingsChoice;

/// Import `data` as a GGUF file in memory: container, metadata, tensor directory, tokenizer
/// rebuild, every tensor decoded and verified, everything [`super::import_gguf`] does before it
/// writes. Tried twice: with the defaults, then with I2_S blocks of 64 and the embeddings
/// re-quantized (to `i8_row` for inputs of even length, `q4_b32` for odd ones: both quantizers
/// are reached without a third pass). Never panics on any input (errors are fine); that is the
/// property the fuzz target and the corpus test check.
pub fn exercise_import(data: &[u8]) {
    let path = Path::new("fuzz.gguf");
    let mut options = ImportOptions::new(path, "fuzz.bitnet");
    let _ = import_bytes(path, data, &options);
    options.i2s_block = Some(64);
    options.embeddings = if data.len().is_multiple_of(2) {
        EmbeddingsChoice::I8
    } else {
        EmbeddingsChoice::Q4
    };
    let _ = import_bytes(path, data, &options);
}
