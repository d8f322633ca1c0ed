//! Any byte string as a GGUF file: parsing the container, metadata and tensor directory,
//! rebuilding the tokenizer and decoding every tensor must return `Ok` or `Err`, never panic, and
//! allocate only what the input's length can back.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    bitnet_convert::gguf::fuzz::exercise_import(data);
});
