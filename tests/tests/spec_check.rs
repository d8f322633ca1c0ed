//! The spec's independent reader (`tools/spec-check/read_bitnet.py`, written from SPEC.md alone, standard
//! library only) must decode the golden file and the test vectors exactly as the Rust crate does, and
//! reject the files of `testdata/format/reject` as the Rust crate does (`format-spec/tests/golden.rs`).

use std::path::{Path, PathBuf};
use std::process::Output;

use bitnet_e2e::python3;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `read_bitnet.py FILE ARGS...` run from the workspace root, or `None` without python3.
fn read_bitnet(file: &Path, args: &[&str]) -> Option<Output> {
    let out = python3()?
        .current_dir(root())
        .arg("tools/spec-check/read_bitnet.py")
        .arg(file)
        .args(args)
        .output()
        .unwrap();
    Some(out)
}

#[test]
fn independent_python_reader_agrees_with_the_golden_values() {
    let Some(out) = read_bitnet(
        Path::new("testdata/format/golden.bitnet"),
        &[
            "--golden",
            "testdata/format/golden.json",
            "--vectors",
            "format-spec/vectors",
        ],
    ) else {
        return;
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("ternary_tiled16"), "{stdout}");
}

#[test]
fn independent_python_reader_rejects_a_corrupted_file() {
    let mut bytes = std::fs::read(root().join("testdata/format/golden.bitnet")).unwrap();
    let n = bytes.len();
    bytes[n - 100] ^= 0x10;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("corrupt.bitnet");
    std::fs::write(&path, bytes).unwrap();
    let Some(out) = read_bitnet(&path, &[]) else {
        return;
    };
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("crc32 mismatch"), "{stdout}");
}

#[test]
fn independent_python_reader_rejects_every_reject_file_for_its_rule() {
    let dir = root().join("testdata/format/reject");
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("reject.json")).unwrap()).unwrap();
    let files = doc["files"].as_array().unwrap();
    assert!(files.len() >= 3, "the reject list is committed");
    for entry in files {
        let file = dir.join(entry["file"].as_str().unwrap());
        let rule = entry["rule"].as_str().unwrap();
        let Some(out) = read_bitnet(&file, &[]) else {
            return;
        };
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{}: {stdout}", file.display());
        assert!(
            stdout.starts_with("REJECT") && stdout.contains(rule),
            "{}: expected {rule:?}: {stdout}",
            file.display()
        );
    }
}
