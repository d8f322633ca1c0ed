//! Replays the fuzz target's committed corpus (`format-spec/fuzz/corpus/read`) as an ordinary test, so
//! every input that once found new behaviour keeps being checked without the fuzzer.

use bitnet_format::{BitnetFile, fuzz::exercise_reader};

#[test]
fn fuzz_corpus_never_panics() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/read");
    let mut count = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        exercise_reader(&std::fs::read(entry.unwrap().path()).unwrap());
        count += 1;
    }
    assert!(count > 10, "the corpus is committed");
}

#[test]
fn the_corpus_seed_is_a_valid_file() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/read");
    BitnetFile::open(dir.join("golden"))
        .unwrap()
        .check_contents()
        .unwrap();
}
