//! The spec's independent reader (`tools/spec-check/read_bitnet.py`, written from SPEC.md alone, standard
//! library only) must decode the golden file and the test vectors exactly as the Rust crate does.

use std::path::PathBuf;
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn independent_python_reader_agrees_with_the_golden_values() {
    let Ok(out) = Command::new("python3").arg("--version").output() else {
        eprintln!("python3 not found: the independent spec check is skipped");
        return;
    };
    assert!(out.status.success());
    let out = Command::new("python3")
        .current_dir(root())
        .args([
            "tools/spec-check/read_bitnet.py",
            "testdata/format/golden.bitnet",
            "--golden",
            "testdata/format/golden.json",
            "--vectors",
            "format-spec/vectors",
        ])
        .output()
        .unwrap();
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
    if Command::new("python3").arg("--version").output().is_err() {
        return;
    }
    let mut bytes = std::fs::read(root().join("testdata/format/golden.bitnet")).unwrap();
    let n = bytes.len();
    bytes[n - 100] ^= 0x10;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("corrupt.bitnet");
    std::fs::write(&path, bytes).unwrap();
    let out = Command::new("python3")
        .current_dir(root())
        .arg("tools/spec-check/read_bitnet.py")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
}
