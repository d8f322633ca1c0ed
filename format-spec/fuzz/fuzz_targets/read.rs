//! Any byte string: opening, verifying and decoding must return `Ok` or `Err`, never panic.
//! Each input is also tried with its header checksum repaired, so that the fuzzer reaches the JSON
//! and directory validation behind the checksum.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    bitnet_format::fuzz::exercise_reader(data);
});
