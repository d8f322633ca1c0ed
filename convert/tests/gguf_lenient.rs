//! The GGUF import accepts what llama.cpp's reader accepts and refuses only what would change the
//! numbers: each case edits a file another program wrote (`testdata/gguf/bitnet_tq.gguf`, from the
//! `gguf` Python package) in a way that leaves the model the same, and the import must equal the
//! unedited file's; what would change the model is refused naming the key or tensor.

use std::path::{Path, PathBuf};

use bitnet_convert::gguf::container::{self, GgufFile, OutTensor, string};
use bitnet_convert::gguf::{GgufError, ImportOptions, Imported, import_bytes};
use bitnet_format::{Encoding, ternary};
use gguf_rs_lib::format::metadata::MetadataValue;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/gguf/bitnet_tq.gguf")
}

type Tensors = Vec<(OutTensor, Vec<u8>)>;
type Metadata = Vec<(String, MetadataValue)>;
/// A named edit of the metadata.
type Edit = (&'static str, Box<dyn Fn(&mut Metadata)>);

/// The fixture rewritten with `edit` applied to its metadata and tensors (tensor data aligned as
/// the metadata's `general.alignment` says).
fn edited(edit: impl FnOnce(&mut Metadata, &mut Tensors)) -> Vec<u8> {
    let bytes = std::fs::read(fixture()).unwrap();
    let file = GgufFile::parse(&bytes).unwrap();
    let mut meta = file.metadata.clone();
    let mut tensors: Tensors = file
        .tensors
        .iter()
        .map(|t| {
            let out = OutTensor {
                name: t.name.clone(),
                dims: t.dims.clone(),
                ggml_type: t.ggml_type,
            };
            (out, file.data(t).to_vec())
        })
        .collect();
    edit(&mut meta, &mut tensors);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edited.gguf");
    let (infos, data): (Vec<OutTensor>, Vec<Vec<u8>>) = tensors.into_iter().unzip();
    container::write::<GgufError>(&path, &meta, &infos, |i| Ok(data[i].clone())).unwrap();
    std::fs::read(&path).unwrap()
}

fn import(bytes: &[u8]) -> Result<Imported, GgufError> {
    let path = Path::new("edited.gguf");
    import_bytes(path, bytes, &ImportOptions::new(path, "unused.bitnet"))
}

fn set(meta: &mut Metadata, key: &str, value: MetadataValue) {
    match meta.iter_mut().find(|(k, _)| k == key) {
        Some((_, v)) => *v = value,
        None => meta.push((key.into(), value)),
    }
}

/// `b` holds the same model as `a`: configuration, tokenizer and every tensor's bytes.
fn assert_same_model(a: &Imported, b: &Imported) {
    assert_eq!(a.header.model, b.header.model);
    let (ta, tb) = (a.header.tokenizer.as_ref(), b.header.tokenizer.as_ref());
    assert_eq!(
        ta.map(|t| (t.tokenizer_json.get(), &t.eos_token_ids, t.bos_token_id)),
        tb.map(|t| (t.tokenizer_json.get(), &t.eos_token_ids, t.bos_token_id))
    );
    assert_same_tensors(a, b);
}

fn assert_same_tensors(a: &Imported, b: &Imported) {
    assert_eq!(a.tensors.len(), b.tensors.len());
    for ((sa, da), (sb, db)) in a.tensors.iter().zip(&b.tensors) {
        assert_eq!(
            (&sa.name, &sa.shape, sa.encoding),
            (&sb.name, &sb.shape, sb.encoding)
        );
        assert!(da == db, "{}: bytes differ", sa.name);
    }
}

fn reference() -> Imported {
    import(&std::fs::read(fixture()).unwrap()).unwrap()
}

/// Version 2 has version 3's layout (3 only added big-endian files); llama.cpp reads both.
#[test]
fn gguf_version_2_reads_as_version_3() {
    let mut bytes = std::fs::read(fixture()).unwrap();
    bytes[4..8].copy_from_slice(&2u32.to_le_bytes());
    assert_same_model(&reference(), &import(&bytes).unwrap());
    for (version, hint) in [(1u32, false), (4, false), (3 << 24, true)] {
        bytes[4..8].copy_from_slice(&version.to_le_bytes());
        let err = import(&bytes).err().unwrap().to_string();
        assert!(
            err.contains(&format!("GGUF version {version} is not supported")),
            "{err}"
        );
        assert_eq!(err.contains("big-endian"), hint, "{err}");
    }
}

/// `general.alignment` places the tensor data: any positive value of any integer type is read
/// (llama.cpp takes u32 powers of two, such as 4, which the GGUF text's "multiple of 8" excludes);
/// zero or a non-integer leaves the data nowhere and is refused by name.
#[test]
fn general_alignment_is_any_positive_integer() {
    let reference = reference();
    for value in [
        MetadataValue::U32(4),
        MetadataValue::U32(64),
        MetadataValue::U64(16),
        MetadataValue::I32(128),
        MetadataValue::U16(8),
    ] {
        let bytes = edited(|m, _| set(m, container::ALIGNMENT_KEY, value.clone()));
        let file = GgufFile::parse(&bytes).unwrap();
        assert_eq!(
            Some(file.alignment),
            container::integer(&value),
            "{value:?}"
        );
        assert_same_model(&reference, &import(&bytes).unwrap());
    }
    // The 4-aligned file's data starts where reading it with the default of 32 would not.
    let bytes = edited(|m, _| set(m, container::ALIGNMENT_KEY, MetadataValue::U32(4)));
    assert_ne!(GgufFile::parse(&bytes).unwrap().data_start % 32, 0);
    // Refused values, patched over a 4-byte u32 32 (type id, then value).
    let mut bytes = edited(|m, _| set(m, container::ALIGNMENT_KEY, MetadataValue::U32(32)));
    let key = container::ALIGNMENT_KEY.as_bytes();
    let at = bytes.windows(key.len()).position(|w| w == key).unwrap() + key.len();
    for (type_id, value) in [(4u32, 0u32), (5, (-32i32) as u32), (6, 32f32.to_bits())] {
        bytes[at..at + 4].copy_from_slice(&type_id.to_le_bytes());
        bytes[at + 4..at + 8].copy_from_slice(&value.to_le_bytes());
        let err = import(&bytes).err().unwrap().to_string();
        assert!(
            err.contains("general.alignment") && err.contains("positive integer"),
            "type {type_id}: {err}"
        );
    }
}

/// ggml pads every tensor to four dimensions with 1s, so llama.cpp reads `[K, N, 1, 1]` as the
/// matrix `[K, N]`, `[hidden, 1]` as the vector, and a tensor of no dimensions as one element
/// (here a `.scale`, which multiplies its projection's scale).
#[test]
fn unit_dimensions_and_scalars_read_as_llama_cpp_reads_them() {
    let reference = reference();
    let bytes = edited(|_, tensors| {
        for (t, _) in tensors.iter_mut() {
            if t.dims.len() < 4 && t.name.starts_with("blk.0.") {
                t.dims.push(1);
            }
            if t.name == "blk.0.attn_q.weight" {
                t.dims.push(1);
            }
        }
        let scale = OutTensor {
            name: "blk.0.attn_q.scale".into(),
            dims: vec![],
            ggml_type: container::GGML_TYPE_F32,
        };
        tensors.push((scale, 2.0f32.to_le_bytes().to_vec()));
    });
    let file = GgufFile::parse(&bytes).unwrap();
    assert_eq!(file.tensor("blk.0.attn_q.weight").unwrap().dims.len(), 4);
    assert_eq!(file.tensor("blk.0.attn_norm.weight").unwrap().dims.len(), 2);
    assert!(file.tensor("blk.0.attn_q.scale").unwrap().dims.is_empty());
    let imported = import(&bytes).unwrap();
    assert_eq!(imported.tensors.len(), reference.tensors.len());
    for ((spec, data), (_, want)) in imported.tensors.iter().zip(&reference.tensors) {
        if spec.name != "blk.0.attn_q" {
            assert!(data == want, "{}: bytes differ", spec.name);
            continue;
        }
        let Encoding::Ternary(layout) = spec.encoding else {
            panic!("{}: {:?}", spec.name, spec.encoding)
        };
        let (rows, cols) = (spec.shape[0], spec.shape[1]);
        let (v, s) = ternary::unpack(layout, rows, cols, data).unwrap();
        let (w, t) = ternary::unpack(layout, rows, cols, want).unwrap();
        assert!(v == w, "attn_q values");
        assert_eq!(s, 2.0 * t, "attn_q scale times its scalar .scale");
    }
    // A dimension other than 1 still changes the shape: refused naming the tensor.
    let bytes = edited(|_, tensors| {
        let (t, data) = tensors
            .iter_mut()
            .find(|(t, _)| t.name == "blk.0.attn_norm.weight")
            .unwrap();
        t.dims = vec![128, 2];
        assert_eq!(data.len(), 128 * 2 * 4);
    });
    let err = import(&bytes).err().unwrap().to_string();
    assert!(
        err.contains("blk.0.attn_norm.weight") && err.contains("shape [2, 128]"),
        "{err}"
    );
}

/// llama.cpp ignores a special token id outside the vocabulary ("bad special token") and loads
/// the file: so does the import, with a warning naming the key; the weights are the same.
#[test]
fn special_token_ids_outside_the_vocabulary_are_ignored_with_a_warning() {
    let reference = reference();
    let bytes = edited(|m, _| {
        set(m, "tokenizer.ggml.eot_token_id", MetadataValue::U32(9999));
        set(
            m,
            "tokenizer.ggml.padding_token_id",
            MetadataValue::U32(352),
        );
    });
    let imported = import(&bytes).unwrap();
    let warnings = &imported.report.summary.warnings;
    for (key, id) in [("eot", 9999), ("padding", 352)] {
        let text = format!("tokenizer.ggml.{key}_token_id {id} is outside the 352 tokens");
        assert!(warnings.iter().any(|w| w.contains(&text)), "{warnings:?}");
    }
    let tk = imported.header.tokenizer.as_ref().unwrap();
    assert!(!tk.eos_token_ids.contains(&9999) && tk.pad_token_id.is_none());
    let want = reference.header.tokenizer.as_ref().unwrap();
    assert_eq!(tk.tokenizer_json.get(), want.tokenizer_json.get());
    assert_eq!(tk.bos_token_id, want.bos_token_id);
    assert_same_tensors(&reference, &imported);
}

/// Metadata the import does not need changes nothing: `general.file_type` absent, odd or of
/// another type, `general.quantization_version`, keys no program knows (of every value type,
/// arrays of arrays included), and hyperparameters stored in another integer type than u32.
#[test]
fn metadata_the_import_does_not_need_is_ignored() {
    let reference = reference();
    let edits: [Edit; 5] = [
        (
            "file_type 9999",
            Box::new(|m| set(m, "general.file_type", MetadataValue::U32(9999))),
        ),
        (
            "file_type as a string",
            Box::new(|m| set(m, "general.file_type", string("MOSTLY_TQ2_0"))),
        ),
        (
            "quantization_version",
            Box::new(|m| set(m, "general.quantization_version", MetadataValue::I64(-7))),
        ),
        (
            "unknown keys",
            Box::new(|m| {
                use gguf_rs_lib::format::types::GGUFValueType as T;
                set(m, "some.tool.flag", MetadataValue::Bool(true));
                set(m, "some.tool.ratio", MetadataValue::F64(0.5));
                let inner = container::array(T::String, vec![string("a"), string("")]);
                set(
                    m,
                    "some.tool.nested",
                    container::array(T::Array, vec![inner]),
                );
                set(m, "bitnet.unknown_hparam", MetadataValue::I8(-1));
            }),
        ),
        (
            "hyperparameters as i32 and u64",
            Box::new(|m| {
                set(m, "bitnet.block_count", MetadataValue::I32(1));
                set(m, "bitnet.attention.head_count", MetadataValue::U64(4));
                set(m, "bitnet.context_length", MetadataValue::I64(128));
                set(m, "tokenizer.ggml.bos_token_id", MetadataValue::I32(342));
            }),
        ),
    ];
    for (what, edit) in edits {
        let bytes = edited(|m, _| edit(m));
        let imported = import(&bytes).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_same_model(&reference, &imported);
    }
    // A hyperparameter that is negative has no meaning: refused by name.
    let bytes = edited(|m, _| set(m, "bitnet.block_count", MetadataValue::I32(-1)));
    let err = import(&bytes).err().unwrap().to_string();
    assert!(err.contains("bitnet.block_count"), "{err}");
}
