//! Any byte string as a model file: opening it, binding its tensors for every kernel path and
//! running one forward pass must return `Ok` or `Err`, never panic. The header checksum is repaired
//! first, so that the fuzzer reaches the model configuration and tensor directory behind it.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    bitnet_run::fuzz::exercise_model(data);
});
