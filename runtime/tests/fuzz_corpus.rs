//! Replays the model fuzz target's committed corpus (`runtime/fuzz/corpus/model_load`) as an
//! ordinary test, so every input that once found new behaviour keeps being checked without the
//! fuzzer, and runs seeded mutations of its seeds: header numbers set to edge values, truncations
//! and flipped bytes. Loading and one forward pass must return `Ok` or `Err`, never panic.
//!
//! The seeds `seed-*` come from `cargo run -p bitnet-run --example make_fuzz_seeds`, except
//! `seed-fixture-bitnet-2b4t-i2s64-i8`: `bitnet-convert testdata/fixtures/bitnet-2b4t --layout i2s64
//! --embeddings i8`.

mod common;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use bitnet_format::BitnetFile;
use bitnet_run::fuzz::{exercise_model, header_text, with_header};
use bitnet_run::kernels::KernelPath;
use bitnet_run::model::{KvTypes, Logits, Model, Session};
use common::Rng;
use serde_json::Value;

fn corpus() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/model_load");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

fn seeds() -> Vec<PathBuf> {
    corpus()
        .into_iter()
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("seed-")
        })
        .collect()
}

#[test]
fn fuzz_corpus_never_panics() {
    let files = corpus();
    assert!(files.len() > seeds().len(), "the corpus is committed");
    for path in files {
        exercise_model(&std::fs::read(path).unwrap());
    }
}

#[test]
fn the_corpus_seeds_load_and_run_on_every_path() {
    let seeds = seeds();
    assert_eq!(seeds.len(), 6);
    for seed in &seeds {
        for path in KernelPath::available() {
            let model = Model::load(BitnetFile::open(seed).unwrap(), path, 1)
                .unwrap_or_else(|e| panic!("{}: {e}", seed.display()));
            let vocab = model.config.vocab_size;
            let logits = Session::new(&model, 2, KvTypes::default())
                .forward(&[0, vocab - 1], Logits::All)
                .unwrap();
            assert_eq!(logits.len(), 2 * vocab as usize);
            assert!(logits.iter().all(|v| v.is_finite()), "{}", seed.display());
        }
    }
}

/// Every number in the header's `model` object and tensor directory, as a JSON Pointer.
fn numbers(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Number(_) => out.push(at),
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                numbers(x, format!("{at}/{i}"), out);
            }
        }
        Value::Object(o) => {
            for (k, x) in o {
                numbers(x, format!("{at}/{k}"), out);
            }
        }
        _ => {}
    }
}

/// Values a hostile header might hold in place of `n`.
fn replacements(n: &Value) -> Vec<Value> {
    let mut out: Vec<Value> = [
        0u64,
        1,
        2,
        3,
        64,
        1 << 16,
        1 << 31,
        u32::MAX as u64,
        1 << 32,
        1 << 48,
        u64::MAX,
    ]
    .into_iter()
    .map(Value::from)
    .collect();
    out.extend([Value::from(-1), Value::from(0.5), Value::from(1e300)]);
    if let Some(n) = n.as_u64() {
        out.extend([n / 2, n * 2, n + 1, n.saturating_sub(1)].map(Value::from));
    }
    out
}

/// Run `exercise_model` on `bytes`; a panic is recorded as `what` instead of ending the test, so
/// that one run lists every failing mutation.
fn check(bytes: &[u8], what: impl FnOnce() -> String, failures: &mut Vec<String>) {
    if catch_unwind(AssertUnwindSafe(|| exercise_model(bytes))).is_err() {
        failures.push(what());
    }
}

#[test]
fn seeded_mutations_of_the_seeds_never_panic() {
    let mut failures = Vec::new();
    let mut count = 0;
    let mut rng = Rng(0x5eed);
    for seed in seeds() {
        let name = seed.file_name().unwrap().to_string_lossy().into_owned();
        let bytes = std::fs::read(&seed).unwrap();
        let header: Value = serde_json::from_str(header_text(&bytes).unwrap()).unwrap();
        let mut fields = Vec::new();
        numbers(&header["model"], "/model".into(), &mut fields);
        numbers(&header["tensors"], "/tensors".into(), &mut fields);
        for field in fields {
            for value in replacements(header.pointer(&field).unwrap()) {
                let mut h = header.clone();
                *h.pointer_mut(&field).unwrap() = value.clone();
                let mutated = with_header(&bytes, &h.to_string()).unwrap();
                check(
                    &mutated,
                    || format!("{name}: {field} = {value}"),
                    &mut failures,
                );
                count += 1;
            }
        }
        for _ in 0..200 {
            let len = rng.next() as usize % bytes.len();
            check(
                &bytes[..len],
                || format!("{name}: cut to {len} bytes"),
                &mut failures,
            );
            let mut flipped = bytes.clone();
            let at = rng.next() as usize % bytes.len();
            flipped[at] ^= 1 << (rng.next() % 8);
            check(
                &flipped,
                || format!("{name}: byte {at} flipped"),
                &mut failures,
            );
            count += 2;
        }
    }
    assert!(count > 5000, "{count} mutations");
    assert!(
        failures.is_empty(),
        "{} of {count} mutations panicked: {failures:#?}",
        failures.len()
    );
}
