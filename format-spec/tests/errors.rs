//! Every failure class of the reader and writer, each produced from a crafted file or call.

mod common;

use bitnet_format::{
    BitnetFile, Encoding, FileWriter, FormatError, MAX_HEADER_LEN, TensorSpec, TernaryLayout,
    ternary,
};
use common::*;

fn open(bytes: Vec<u8>) -> FormatError {
    BitnetFile::from_vec(bytes).expect_err("file should be rejected")
}

/// A valid file with one f32 tensor `v` of 4 elements; returns (bytes, header JSON, data).
fn valid() -> (Vec<u8>, String, Vec<u8>) {
    let data: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let mut padded = data.clone();
    padded.resize(64, 0);
    let json = header_json_with_tensors(&[f32_entry("v", 4, 0, &data)]);
    (assemble(&json, &padded), json, padded)
}

#[test]
fn valid_file_opens() {
    let (bytes, _, _) = valid();
    let file = BitnetFile::from_vec(bytes).unwrap();
    file.verify().unwrap();
    assert_eq!(
        file.tensor("v").unwrap().to_f32().unwrap(),
        [1.0, 2.0, 3.0, 4.0]
    );
}

#[test]
fn io_error_names_the_path() {
    let err = BitnetFile::open("/nonexistent/model.bitnet").unwrap_err();
    assert!(matches!(err, FormatError::Io { .. }));
    assert!(err.to_string().contains("/nonexistent/model.bitnet"));
}

#[test]
fn too_short() {
    assert!(matches!(
        open(vec![0x89; 10]),
        FormatError::TooShort { len: 10, .. }
    ));
}

#[test]
fn bad_magic() {
    let (mut bytes, _, _) = valid();
    bytes[1] = b'X';
    assert!(matches!(open(bytes), FormatError::BadMagic { .. }));
}

#[test]
fn gguf_and_safetensors_files_are_named() {
    let mut gguf = b"GGUF\x03\0\0\0".to_vec();
    gguf.resize(256, 0);
    assert!(matches!(
        open(gguf),
        FormatError::ForeignFormat { format: "GGUF", .. }
    ));
    let header = br#"{"__metadata__":{}}"#;
    let mut st = (header.len() as u64).to_le_bytes().to_vec();
    st.extend_from_slice(header);
    st.resize(256, 0);
    assert!(matches!(
        open(st),
        FormatError::ForeignFormat {
            format: "safetensors",
            ..
        }
    ));
}

#[test]
fn a_directory_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let err = BitnetFile::open(dir.path()).unwrap_err();
    assert!(matches!(err, FormatError::IsDirectory { .. }), "{err}");
}

#[test]
fn unknown_major_version_is_refused() {
    let (_, json, data) = valid();
    let err = open(assemble_with(&json, &data, 2, 0));
    assert!(matches!(
        err,
        FormatError::UnsupportedVersion { major: 2, .. }
    ));
}

#[test]
fn newer_minor_version_with_unknown_fields_is_read() {
    let (_, json, data) = valid();
    let mut h: serde_json::Value = serde_json::from_str(&json).unwrap();
    h["future_field"] = serde_json::json!({"anything": [1, 2]});
    h["model"]["future_knob"] = serde_json::json!(3);
    h["tensors"][0]["future_hint"] = serde_json::json!("x");
    let file = BitnetFile::from_vec(assemble_with(&h.to_string(), &data, 1, 7)).unwrap();
    assert_eq!(file.version(), (1, 7));
    file.verify().unwrap();
}

#[test]
fn reserved_bytes_must_be_zero() {
    let (mut bytes, _, _) = valid();
    bytes[30] = 1;
    assert!(matches!(open(bytes), FormatError::ReservedNotZero));
}

#[test]
fn header_length_is_bounded_before_anything_is_allocated() {
    let (mut bytes, _, _) = valid();
    bytes[16..24].copy_from_slice(&(MAX_HEADER_LEN + 1).to_le_bytes());
    assert!(matches!(open(bytes), FormatError::HeaderTooLarge { .. }));
    let (mut bytes, _, _) = valid();
    bytes[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(matches!(open(bytes), FormatError::HeaderTooLarge { .. }));
}

#[test]
fn header_past_end_of_file() {
    let (bytes, _, _) = valid();
    let header_len = u64::from_le_bytes(bytes[16..24].try_into().unwrap()) as usize;
    let err = open(bytes[..32 + header_len / 2].to_vec());
    assert!(matches!(err, FormatError::HeaderTruncated { .. }));
}

#[test]
fn flipped_header_byte_fails_the_checksum() {
    let (mut bytes, _, _) = valid();
    bytes[40] ^= 0x01;
    assert!(matches!(open(bytes), FormatError::HeaderChecksum { .. }));
    let (mut bytes, _, _) = valid();
    bytes[10] = 3; // the minor version is covered too
    assert!(matches!(open(bytes), FormatError::HeaderChecksum { .. }));
}

#[test]
fn invalid_json_header() {
    let err = open(assemble("{\"model\": ", &[]));
    assert!(matches!(err, FormatError::HeaderJson(_)));
    let err = open(assemble("{}", &[]));
    assert!(
        matches!(err, FormatError::HeaderJson(_)),
        "missing fields: {err}"
    );
}

#[test]
fn invalid_model_config() {
    let (_, json, data) = valid();
    let mut h: serde_json::Value = serde_json::from_str(&json).unwrap();
    h["model"]["num_kv_heads"] = serde_json::json!(3);
    let err = open(assemble(&h.to_string(), &data));
    assert!(
        matches!(err, FormatError::InvalidModel(ref m) if m.contains("num_kv_heads")),
        "{err}"
    );
}

#[test]
fn duplicate_tensor_names() {
    let data = [0u8; 128];
    let json = header_json_with_tensors(&[
        f32_entry("v", 4, 0, &data[..16]),
        f32_entry("v", 4, 64, &data[..16]),
    ]);
    assert!(matches!(
        open(assemble(&json, &data)),
        FormatError::DuplicateTensor { .. }
    ));
}

/// The valid file's header text with `find` (which must occur once) replaced by `replace`.
fn with_header_text(find: &str, replace: &str) -> Vec<u8> {
    let (_, json, data) = valid();
    assert_eq!(json.matches(find).count(), 1, "{find} in {json}");
    assemble(&json.replacen(find, replace, 1), &data)
}

fn duplicate_member(bytes: Vec<u8>) -> (String, String) {
    match open(bytes) {
        FormatError::DuplicateMember { key, path } => (key, path),
        other => panic!("expected a duplicate member, got {other}"),
    }
}

#[test]
fn duplicate_member_names_are_found_at_any_depth_and_located() {
    let cases = [
        // Inside an array element, and in a member the format does not know (ignored otherwise).
        (
            r#""tensors":[{"#,
            r#""tensors":[{"x":{"y":[0,{"k":1,"k":1}]},"#,
            ("k", "/tensors/0/x/y/1"),
        ),
        // Keys are compared after unescaping: `\u0061` is `a`.
        (
            r#""options":{}"#,
            r#""options":{"a":1,"\u0061":2}"#,
            ("a", "/provenance/options"),
        ),
        // The pointer escapes `~` and `/` (RFC 6901).
        (
            r#""options":{}"#,
            r#""options":{"a/b~c":{"z":1,"z":null}}"#,
            ("z", "/provenance/options/a~1b~0c"),
        ),
        // A member the typed parse knows, repeated.
        (
            r#""converter":"tests""#,
            r#""converter":"tests","converter":"tests""#,
            ("converter", "/provenance"),
        ),
    ];
    for (find, replace, (key, path)) in cases {
        assert_eq!(
            duplicate_member(with_header_text(find, replace)),
            (key.to_string(), path.to_string()),
            "{replace}"
        );
    }
    let err = open(with_header_text(
        r#""options":{}"#,
        r#""options":{"n":1,"n":2}"#,
    ));
    assert_eq!(
        err.to_string(),
        r#"header: member name "n" appears twice in the object at /provenance/options"#
    );
    // Equal values at different places, or different keys, are not duplicates.
    let same_key_elsewhere =
        with_header_text(r#""options":{}"#, r#""options":{"a":{"a":{"a":1}}}"#);
    BitnetFile::from_vec(same_key_elsewhere).unwrap();
    // Syntax errors stay JSON errors.
    let err = open(with_header_text(r#""options":{}"#, r#""options":{"a":1,}"#));
    assert!(matches!(err, FormatError::HeaderJson(_)), "{err}");
}

#[test]
fn writer_refuses_an_embedded_tokenizer_with_duplicate_members() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("m.bitnet");
    let mut h = header();
    h.tokenizer = Some(bitnet_format::TokenizerInfo {
        tokenizer_json: serde_json::value::RawValue::from_string(
            r#"{"model":{"vocab":{"a":0,"a":1}}}"#.into(),
        )
        .unwrap(),
        chat_template: None,
        bos_token_id: None,
        eos_token_ids: vec![],
        pad_token_id: None,
        add_bos_token: false,
    });
    let specs = [TensorSpec::new("a", Encoding::F32, &[2])];
    match FileWriter::create(&dest, h, &specs) {
        Err(FormatError::DuplicateMember { key, path }) => {
            assert_eq!(
                (key.as_str(), path.as_str()),
                ("a", "/tokenizer/tokenizer_json/model/vocab")
            );
        }
        other => panic!("expected a duplicate member, got {other:?}"),
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

fn with_entry_edit(edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    let (_, json, data) = valid();
    let mut h: serde_json::Value = serde_json::from_str(&json).unwrap();
    edit(&mut h["tensors"][0]);
    assemble(&h.to_string(), &data)
}

#[test]
fn ternary_tensor_must_be_a_matrix() {
    let bytes = with_entry_edit(|t| {
        t["encoding"] = "ternary".into();
        t["layout"] = serde_json::to_value(TernaryLayout::DEFAULT.params()).unwrap();
        t["shape"] = serde_json::json!([16]);
    });
    let err = open(bytes);
    assert!(
        matches!(err, FormatError::InvalidShape { ref name, .. } if name == "v"),
        "{err}"
    );
}

#[test]
fn unknown_encoding_or_layout_is_refused() {
    let err = open(with_entry_edit(|t| t["encoding"] = "q4_k".into()));
    assert!(
        matches!(err, FormatError::UnsupportedLayout { ref detail, .. } if detail.contains("q4_k"))
    );
    let err = open(with_entry_edit(|t| {
        t["encoding"] = "ternary".into();
        let mut p = serde_json::to_value(TernaryLayout::DEFAULT.params()).unwrap();
        p["tile_rows"] = 5.into();
        t["layout"] = p;
        t["shape"] = serde_json::json!([4, 4]);
    }));
    assert!(
        matches!(err, FormatError::UnsupportedLayout { ref detail, .. } if detail.contains("tile_rows"))
    );
    let err = open(with_entry_edit(|t| {
        t["encoding"] = "ternary".into();
        let mut p = serde_json::to_value(TernaryLayout::DEFAULT.params()).unwrap();
        p["code"] = "sign_magnitude".into();
        t["layout"] = p;
        t["shape"] = serde_json::json!([4, 4]);
    }));
    assert!(
        matches!(err, FormatError::UnsupportedLayout { ref detail, .. } if detail.contains("code"))
    );
}

#[test]
fn length_must_match_shape_and_encoding() {
    let err = open(with_entry_edit(|t| t["shape"] = serde_json::json!([5])));
    assert!(matches!(
        err,
        FormatError::LengthMismatch {
            expected: 20,
            actual: 16,
            ..
        }
    ));
}

#[test]
fn offsets_must_be_aligned() {
    let data = [0u8; 128];
    let json = header_json_with_tensors(&[f32_entry("v", 4, 8, &data[8..24])]);
    assert!(matches!(
        open(assemble(&json, &data)),
        FormatError::Misaligned { offset: 8, .. }
    ));
}

#[test]
fn truncated_file_is_out_of_bounds() {
    let (bytes, _, _) = valid();
    let err = open(bytes[..bytes.len() - 60].to_vec());
    assert!(matches!(err, FormatError::OutOfBounds { .. }), "{err}");
    let err = open(with_entry_edit(|t| {
        t["offset"] = serde_json::json!(u64::MAX - 63)
    }));
    assert!(matches!(err, FormatError::OutOfBounds { .. }), "{err}");
}

#[test]
fn overlapping_tensors() {
    let data = [0u8; 128];
    let json = header_json_with_tensors(&[
        f32_entry("a", 16, 0, &data[..64]),
        f32_entry("b", 4, 0, &data[..16]),
    ]);
    assert!(matches!(
        open(assemble(&json, &data[..64])),
        FormatError::Overlap { .. }
    ));
}

#[test]
fn checksum_field_must_be_eight_hex_digits() {
    for field in ["1234567", "ABCDEF01", "12345678a", "-1234567"] {
        let err = open(with_entry_edit(|t| t["crc32"] = field.into()));
        assert!(
            matches!(err, FormatError::BadChecksumField { .. }),
            "{field}: {err}"
        );
    }
}

#[test]
fn trailing_bytes_are_refused() {
    let (mut bytes, _, _) = valid();
    bytes.extend_from_slice(&[0u8; 64]);
    assert!(matches!(open(bytes), FormatError::FileSizeMismatch { .. }));
}

#[test]
fn verify_detects_a_flipped_tensor_byte() {
    let (mut bytes, _, _) = valid();
    let n = bytes.len();
    bytes[n - 64] ^= 0x40;
    let file = BitnetFile::from_vec(bytes).unwrap();
    let err = file.verify().unwrap_err();
    assert!(matches!(err, FormatError::TensorChecksum { ref name, .. } if name == "v"));
}

#[test]
fn verify_detects_non_zero_padding() {
    let (mut bytes, _, _) = valid();
    let n = bytes.len();
    bytes[n - 1] = 7; // tail padding after the 16-byte tensor
    let err = BitnetFile::from_vec(bytes.clone())
        .unwrap()
        .verify()
        .unwrap_err();
    assert!(
        matches!(err, FormatError::NonZeroPadding { value: 7, .. }),
        "{err}"
    );
    let (mut bytes, _, _) = valid();
    let header_len = u64::from_le_bytes(bytes[16..24].try_into().unwrap()) as usize;
    bytes[32 + header_len] = 1; // padding between header and data (if any)
    if !(32 + header_len).is_multiple_of(64) {
        let err = BitnetFile::from_vec(bytes).unwrap().verify().unwrap_err();
        assert!(matches!(err, FormatError::NonZeroPadding { .. }));
    }
}

#[test]
fn invalid_ternary_code_is_reported_with_the_tensor() {
    let layout = TernaryLayout::Tiled { tile_rows: 4 };
    let mut data = ternary::pack(layout, 4, 16, &[0; 64], 0.5).unwrap();
    data[64] |= 0b11;
    let entry = format!(
        r#"{{"name":"w","encoding":"ternary","shape":[4,16],"offset":0,"length":{},"crc32":"{:08x}","layout":{}}}"#,
        data.len(),
        crc32fast::hash(&data),
        serde_json::to_string(&layout.params()).unwrap()
    );
    data.resize(
        bitnet_format::align_up(data.len() as u64).unwrap() as usize,
        0,
    );
    let file = BitnetFile::from_vec(assemble(&header_json_with_tensors(&[entry]), &data)).unwrap();
    file.verify().unwrap();
    let err = file.tensor("w").unwrap().unpack_ternary().unwrap_err();
    assert!(
        matches!(err, FormatError::InvalidTensorData { ref name, .. } if name == "w"),
        "{err}"
    );
    let err = file.check_contents().unwrap_err();
    assert!(
        matches!(err, FormatError::InvalidTensorData { ref name, .. } if name == "w"),
        "{err}"
    );
}

#[test]
fn missing_tensor_and_wrong_encoding() {
    let (bytes, _, _) = valid();
    let file = BitnetFile::from_vec(bytes).unwrap();
    assert!(matches!(
        file.tensor("nope").unwrap_err(),
        FormatError::TensorNotFound { .. }
    ));
    let err = file.tensor("v").unwrap().unpack_ternary().unwrap_err();
    assert!(matches!(err, FormatError::WrongEncoding { .. }));
}

#[test]
fn writer_rejects_misuse_and_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("m.bitnet");
    let specs = [
        TensorSpec::new("a", Encoding::F32, &[2]),
        TensorSpec::new("b", Encoding::F16, &[3]),
    ];
    let dup = [specs[0].clone(), specs[0].clone()];
    assert!(matches!(
        FileWriter::create(&dest, header(), &dup),
        Err(FormatError::DuplicateTensor { .. })
    ));

    let w = FileWriter::create(&dest, header(), &specs).unwrap();
    assert!(matches!(
        w.write_tensor("zzz", &[0; 8]),
        Err(FormatError::Writer(_))
    ));
    assert!(matches!(
        w.write_tensor("a", &[0; 9]),
        Err(FormatError::LengthMismatch {
            expected: 8,
            actual: 9,
            ..
        })
    ));
    let mut part = w.begin_tensor("a").unwrap();
    part.write(&[0; 4]).unwrap();
    assert!(matches!(
        part.finish(),
        Err(FormatError::LengthMismatch {
            expected: 8,
            actual: 4,
            ..
        })
    ));
    w.write_tensor("a", &[0; 8]).unwrap();
    assert!(matches!(
        w.write_tensor("a", &[0; 8]),
        Err(FormatError::Writer(_))
    ));
    let err = w.finish().unwrap_err();
    assert!(err.to_string().contains("tensor b"), "{err}");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "no file, partial or final"
    );
}

#[test]
fn dropped_writer_leaves_nothing_and_finished_writer_replaces_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("m.bitnet");
    std::fs::write(&dest, b"old contents").unwrap();
    let specs = [TensorSpec::new("a", Encoding::F32, &[2])];
    let w = FileWriter::create(&dest, header(), &specs).unwrap();
    w.write_tensor("a", &[0; 8]).unwrap();
    drop(w);
    assert_eq!(std::fs::read(&dest).unwrap(), b"old contents");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

    let w = FileWriter::create(&dest, header(), &specs).unwrap();
    w.write_tensor("a", &1.5f32.to_le_bytes().repeat(2))
        .unwrap();
    w.finish().unwrap();
    let file = BitnetFile::open(&dest).unwrap();
    file.verify().unwrap();
    assert_eq!(file.tensor("a").unwrap().to_f32().unwrap(), [1.5, 1.5]);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

/// One value of every variant, and a match that stops compiling when a variant is added, so the
/// list below cannot fall behind.
fn every_variant() -> Vec<FormatError> {
    fn index(e: &FormatError) -> usize {
        use FormatError::*;
        match e {
            Io { .. } => 0,
            TooShort { .. } => 1,
            BadMagic { .. } => 2,
            ForeignFormat { .. } => 3,
            IsDirectory { .. } => 4,
            UnsupportedVersion { .. } => 5,
            ReservedNotZero => 6,
            HeaderTooLarge { .. } => 7,
            HeaderTruncated { .. } => 8,
            HeaderChecksum { .. } => 9,
            HeaderJson(_) => 10,
            DuplicateMember { .. } => 11,
            InvalidModel(_) => 12,
            DuplicateTensor { .. } => 13,
            InvalidShape { .. } => 14,
            UnsupportedLayout { .. } => 15,
            LengthMismatch { .. } => 16,
            Misaligned { .. } => 17,
            OutOfBounds { .. } => 18,
            Overlap { .. } => 19,
            BadChecksumField { .. } => 20,
            FileSizeMismatch { .. } => 21,
            TensorChecksum { .. } => 22,
            NonZeroPadding { .. } => 23,
            InvalidTensorData { .. } => 24,
            TensorNotFound { .. } => 25,
            WrongEncoding { .. } => 26,
            Writer(_) => 27,
        }
    }
    const VARIANTS: usize = 28;
    let name = || "blk.0.attn_q".to_string();
    let all = vec![
        BitnetFile::open("no/such/model.bitnet").unwrap_err(),
        FormatError::TooShort { len: 3, min: 64 },
        FormatError::BadMagic {
            found: *b"GGUF\x03\0\0\0",
        },
        BitnetFile::from_vec(b"GGUF\x03\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0".repeat(4))
            .unwrap_err(),
        BitnetFile::open(std::env::temp_dir()).unwrap_err(),
        FormatError::UnsupportedVersion {
            major: 2,
            minor: 0,
            known: 1,
        },
        FormatError::ReservedNotZero,
        FormatError::HeaderTooLarge {
            len: 1 << 40,
            max: 1 << 26,
        },
        FormatError::HeaderTruncated {
            len: 900,
            file_len: 100,
        },
        FormatError::HeaderChecksum {
            expected: 1,
            actual: 2,
        },
        FormatError::HeaderJson(serde_json::from_str::<u32>("{").unwrap_err()),
        FormatError::DuplicateMember {
            key: "model".into(),
            path: "/tokenizer".into(),
        },
        FormatError::InvalidModel("hidden_size: must be positive".into()),
        FormatError::DuplicateTensor { name: name() },
        FormatError::InvalidShape {
            name: name(),
            detail: "a ternary tensor must be a matrix".into(),
        },
        FormatError::UnsupportedLayout {
            name: name(),
            detail: "tile 7".into(),
        },
        FormatError::LengthMismatch {
            name: name(),
            expected: 64,
            actual: 60,
        },
        FormatError::Misaligned {
            name: name(),
            offset: 3,
        },
        FormatError::OutOfBounds {
            name: name(),
            begin: 0,
            end: 99,
            data_len: 64,
        },
        FormatError::Overlap {
            first: name(),
            second: "blk.0.attn_k".into(),
        },
        FormatError::BadChecksumField {
            name: name(),
            field: "XYZ".into(),
        },
        FormatError::FileSizeMismatch {
            expected: 128,
            actual: 64,
        },
        FormatError::TensorChecksum {
            name: name(),
            expected: 1,
            actual: 2,
        },
        FormatError::NonZeroPadding {
            offset: 70,
            value: 1,
        },
        FormatError::InvalidTensorData {
            name: name(),
            detail: "code 3 at element 5".into(),
        },
        FormatError::TensorNotFound { name: name() },
        FormatError::WrongEncoding {
            name: name(),
            encoding: "f16".into(),
        },
        FormatError::Writer("tensor blk.0.attn_q was never written".into()),
    ];
    let mut seen: Vec<usize> = all.iter().map(index).collect();
    seen.sort();
    assert_eq!(
        seen,
        (0..VARIANTS).collect::<Vec<_>>(),
        "one value per variant"
    );
    all
}

/// Printed as the binaries print errors, no message names a clause twice (e.g. a path, or a
/// cause that is both in the message and its source).
#[test]
fn every_variant_prints_each_clause_once() {
    for e in every_variant() {
        let line = bitnet_format::error_chain(&e);
        assert_eq!(
            bitnet_format::repeated_clause(&line),
            None,
            "{e:?} prints {line:?}"
        );
    }
}
