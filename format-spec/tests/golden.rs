//! The format compatibility check: the committed golden file and test vectors must decode to the
//! committed values with every version of this crate.

use std::path::PathBuf;

use bitnet_format::{BitnetFile, FormatError, LayoutParams, TernaryLayout, ternary};
use serde::Deserialize;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[derive(Deserialize)]
struct Expected {
    name: String,
    values: Vec<f64>,
    scale: Option<f32>,
}

#[test]
fn golden_file_decodes_to_the_committed_values() {
    let file = BitnetFile::open(root().join("testdata/format/golden.bitnet")).unwrap();
    file.check_contents().unwrap();
    assert_eq!(file.version(), (1, 0));
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root().join("testdata/format/golden.json")).unwrap())
            .unwrap();
    let expected: Vec<Expected> = serde_json::from_value(doc["tensors"].clone()).unwrap();
    assert_eq!(expected.len(), file.tensors().len());
    let mut layouts_seen = std::collections::HashSet::new();
    for want in expected {
        let view = file.tensor(&want.name).unwrap();
        let got: Vec<f64> = match want.scale {
            Some(scale) => {
                let (values, s) = view.unpack_ternary().unwrap();
                assert_eq!(s.to_bits(), scale.to_bits(), "{}", want.name);
                layouts_seen.insert(view.ternary_layout().unwrap());
                values.iter().map(|&v| v as f64).collect()
            }
            None => view.to_f32().unwrap().iter().map(|&v| v as f64).collect(),
        };
        assert_eq!(got, want.values, "{}", want.name);
    }
    assert_eq!(layouts_seen.len(), 10, "every ternary layout is covered");
    let tokenizer = file.header().tokenizer.as_ref().unwrap();
    assert!(tokenizer.tokenizer_json.get().contains("WordLevel"));
}

#[derive(Deserialize)]
struct Vector {
    layout: LayoutParams,
    rows: u64,
    cols: u64,
    scale: f32,
    values: Vec<Vec<i8>>,
    bytes_hex: String,
}

#[test]
fn test_vectors_pack_and_unpack_exactly() {
    let mut count = 0;
    for entry in std::fs::read_dir(root().join("format-spec/vectors")).unwrap() {
        let path = entry.unwrap().path();
        let v: Vector = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let layout = TernaryLayout::from_params(&v.layout).unwrap();
        let bytes: Vec<u8> = (0..v.bytes_hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&v.bytes_hex[i..i + 2], 16).unwrap())
            .collect();
        let flat: Vec<i8> = v.values.concat();
        assert_eq!(
            ternary::pack(layout, v.rows, v.cols, &flat, v.scale).unwrap(),
            bytes,
            "{path:?}"
        );
        let (values, scale) = ternary::unpack(layout, v.rows, v.cols, &bytes).unwrap();
        assert_eq!(values, flat, "{path:?}");
        assert_eq!(scale, v.scale);
        count += 1;
    }
    assert_eq!(count, 10);
}

#[derive(Deserialize)]
struct Reject {
    file: String,
    key: String,
    path: String,
}

/// The files every reader must reject (`testdata/format/reject/reject.json`; the Python reader runs
/// the same list in `tests/tests/spec_check.rs`): each is refused for its duplicated member.
#[test]
fn every_reject_file_is_refused_for_its_duplicate_member() {
    let dir = root().join("testdata/format/reject");
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("reject.json")).unwrap()).unwrap();
    let rejects: Vec<Reject> = serde_json::from_value(doc["files"].clone()).unwrap();
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name != "reject.json")
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = rejects.iter().map(|r| r.file.clone()).collect();
    listed.sort();
    assert_eq!(on_disk, listed, "every file in reject/ is listed");
    let paths: Vec<&str> = rejects.iter().map(|r| r.path.as_str()).collect();
    for needed in [
        "",
        "/provenance/options",
        "/tokenizer/tokenizer_json/model/vocab",
    ] {
        assert!(
            paths.contains(&needed),
            "a duplicate at {needed:?} is covered"
        );
    }
    for r in &rejects {
        match BitnetFile::open(dir.join(&r.file)) {
            Err(FormatError::DuplicateMember { key, path }) => {
                assert_eq!((&key, &path), (&r.key, &r.path), "{}", r.file);
            }
            Err(other) => panic!("{}: rejected for another reason: {other}", r.file),
            Ok(_) => panic!("{}: accepted", r.file),
        }
    }
}

#[test]
fn a_resident_copy_holds_the_same_bytes_and_survives_verification() {
    let path = root().join("testdata/format/golden.bitnet");
    let mapped = BitnetFile::open(&path).unwrap();
    assert!(!mapped.is_resident());
    let resident = BitnetFile::open(&path).unwrap().into_resident().unwrap();
    assert!(resident.is_resident());
    assert_eq!(resident.bytes(), std::fs::read(&path).unwrap());
    assert_eq!(resident.path(), Some(path.as_path()));
    // Verification drops a mapped file's pages after reading them; a resident copy must keep its
    // bytes through it (they would read back as zeros).
    resident.check_contents().unwrap();
    resident.check_contents().unwrap();
    assert_eq!(resident.bytes(), mapped.bytes());
    // Bytes given in memory stay as they are.
    let owned = BitnetFile::from_vec(std::fs::read(&path).unwrap())
        .unwrap()
        .into_resident()
        .unwrap();
    assert!(!owned.is_resident());
}
