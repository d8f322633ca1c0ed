//! GGUF files written by another program (the `gguf` Python package's writer and quantizers,
//! `tools/gguf/make_fixtures.py`) import: architecture, configuration, every ternary tensor with
//! one recovered scale, the tokenizer rebuilt from `tokenizer.ggml.*`, embeddings of GGML block
//! types (Q8_0, Q6_K exactly as f32; Q4_0 losslessly as `q4_b32`). The block dequantizers equal
//! `gguf.quants.dequantize` bit for bit on its own test vectors. CI additionally compares the
//! imported values with `gguf.quants`' own dequantization (`tools/gguf/check_gguf_py.py`).

mod convert_support;

use std::path::{Path, PathBuf};

use bitnet_convert::EmbeddingsChoice;
use bitnet_convert::gguf::blocks::{self, GGML_TYPE_Q4_0, GGML_TYPE_Q6_K, GGML_TYPE_Q8_0};
use bitnet_convert::gguf::container::{GgufFile, type_name};
use bitnet_convert::gguf::{self, ExportOptions, ExportType, ImportOptions};
use bitnet_format::{Activation, BitnetFile, Encoding};
use half::f16;

fn gguf_fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/gguf")
        .join(name)
}

#[test]
fn bitnet_architecture_tq_file_from_the_gguf_package_imports() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.bitnet");
    let report =
        gguf::import_gguf(&ImportOptions::new(gguf_fixture("bitnet_tq.gguf"), &out)).unwrap();
    assert_eq!(report.architecture, "bitnet");
    assert_eq!(report.ternary_types.get("TQ2_0"), Some(&4));
    assert_eq!(report.ternary_types.get("TQ1_0"), Some(&3));
    let f = BitnetFile::open(&out).unwrap();
    f.verify().unwrap();
    let m = &f.header().model;
    assert_eq!(
        (
            m.hidden_size,
            m.intermediate_size,
            m.num_heads,
            m.num_kv_heads,
            m.head_dim
        ),
        (256, 256, 4, 2, 64)
    );
    assert_eq!(
        m.activation,
        Activation::Relu2,
        "bitnet.hidden_act = relu2 is honoured"
    );
    assert!(m.sub_norms && m.tied_embeddings);
    assert_eq!(m.rms_norm_eps, 1e-5);
    // The fixture's scales are 0.0625 + i/64 (exact in f16); zero blocks carried d = 0.
    for (i, name) in [
        "attn_q",
        "attn_k",
        "attn_v",
        "attn_output",
        "ffn_gate",
        "ffn_up",
        "ffn_down",
    ]
    .iter()
    .enumerate()
    {
        let (v, s) = f
            .tensor(&format!("blk.0.{name}"))
            .unwrap()
            .unpack_ternary()
            .unwrap();
        assert_eq!(s, 0.0625 + i as f32 / 64.0, "{name}");
        assert!(v[..256].iter().all(|&x| x == 0), "{name}: the zeroed block");
        assert!(v.contains(&1) && v.contains(&-1));
    }
    let tk = f.header().tokenizer.clone().unwrap();
    assert_eq!(tk.bos_token_id, Some(342));
    assert!(tk.chat_template.unwrap().contains("Assistant: "));
    let tokenizer: serde_json::Value = serde_json::from_str(tk.tokenizer_json.get()).unwrap();
    let original: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(convert_support::fixture("bitnet-2b4t").join("tokenizer.json"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(tokenizer["model"]["vocab"], original["model"]["vocab"]);
    assert_eq!(tokenizer["pre_tokenizer"], original["pre_tokenizer"]);
}

#[test]
fn llama_architecture_float_ternary_file_from_the_gguf_package_imports() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.bitnet");
    let report = gguf::import_gguf(&ImportOptions::new(
        gguf_fixture("llama_f16_ternary.gguf"),
        &out,
    ))
    .unwrap();
    assert_eq!(report.architecture, "llama");
    let f = BitnetFile::open(&out).unwrap();
    let m = &f.header().model;
    assert_eq!(
        (m.hidden_size, m.num_heads, m.num_kv_heads, m.head_dim),
        (64, 2, 1, 40)
    );
    assert_eq!(m.activation, Activation::Silu);
    assert!(!m.sub_norms && !m.tied_embeddings);
    assert_eq!((m.rope_theta, m.rms_norm_eps), (1000042.0, 1e-6));
    assert_eq!(m.family, "falcon3-bitnet");
    for (i, name) in [
        "attn_q",
        "attn_k",
        "attn_v",
        "attn_output",
        "ffn_gate",
        "ffn_up",
        "ffn_down",
    ]
    .iter()
    .enumerate()
    {
        let s = f
            .tensor(&format!("blk.0.{name}"))
            .unwrap()
            .ternary_scale()
            .unwrap();
        assert_eq!(s, 0.5f32.powi(i as i32 + 1), "{name}");
    }
    assert_eq!(f.index().get("output").unwrap().encoding, Encoding::Bf16);
    let tk = f.header().tokenizer.clone().unwrap();
    assert_eq!(
        (tk.bos_token_id, tk.pad_token_id, tk.add_bos_token),
        (Some(1), Some(352), true)
    );
}

#[test]
fn block_dequantizers_equal_gguf_py_on_its_test_vectors() {
    let bytes = std::fs::read(gguf_fixture("blocks/dequant.gguf")).unwrap();
    let file = GgufFile::parse(&bytes).unwrap();
    let mut checked = Vec::new();
    for &ty in &blocks::TYPES {
        let name = type_name(ty);
        let q = file
            .tensor(&name)
            .unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!(q.ggml_type, ty);
        let want: Vec<u32> = file
            .data(file.tensor(&format!("{name}.f32")).unwrap())
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let mine: Vec<u32> = blocks::dequantize(ty, file.data(q))
            .unwrap()
            .iter()
            .map(|x| x.to_bits())
            .collect();
        assert_eq!(mine.len(), 512, "{name}");
        assert!(mine == want, "{name}: differs from gguf.quants.dequantize");
        checked.push(name);
    }
    assert_eq!(checked.len(), 8);
}

/// The raw bytes and type of a tensor of a GGUF file.
fn gguf_tensor(path: &Path, name: &str) -> (Vec<u8>, u32) {
    let bytes = std::fs::read(path).unwrap();
    let file = GgufFile::parse(&bytes).unwrap();
    let t = file.tensor(name).unwrap();
    (file.data(t).to_vec(), t.ggml_type)
}

#[test]
fn q8_0_and_q6_k_embeddings_import_as_their_exact_values() {
    let src = gguf_fixture("llama_q8_0_q6_k.gguf");
    let dir = tempfile::tempdir().unwrap();
    for (choice, encoding) in [
        (EmbeddingsChoice::Source, Encoding::F32),
        (EmbeddingsChoice::F16, Encoding::F16),
    ] {
        let out = dir.path().join(format!("{}.bitnet", choice.label()));
        let mut options = ImportOptions::new(&src, &out);
        options.embeddings = choice;
        let report = gguf::import_gguf(&options).unwrap();
        assert_eq!(report.architecture, "llama");
        let f = BitnetFile::open(&out).unwrap();
        f.verify().unwrap();
        assert!(!f.header().model.tied_embeddings);
        assert_eq!(f.header().model.vocab_size, 64);
        for (name, ty) in [("token_embd", GGML_TYPE_Q8_0), ("output", GGML_TYPE_Q6_K)] {
            let (data, file_ty) = gguf_tensor(&src, &format!("{name}.weight"));
            assert_eq!(file_ty, ty);
            let exact = blocks::dequantize(ty, &data).unwrap();
            let view = f.tensor(name).unwrap();
            assert_eq!(view.info.encoding, encoding, "{name}");
            assert_eq!(view.info.shape, vec![64, 256]);
            let want: Vec<u32> = match encoding {
                Encoding::F16 => exact
                    .iter()
                    .map(|&x| f16::from_f32(x).to_f32().to_bits())
                    .collect(),
                _ => exact.iter().map(|x| x.to_bits()).collect(),
            };
            let got: Vec<u32> = view.to_f32().unwrap().iter().map(|x| x.to_bits()).collect();
            assert!(got == want, "{name} as {encoding:?}");
        }
        let s = f.tensor("blk.0.attn_q").unwrap().ternary_scale().unwrap();
        assert_eq!(s, 0.25);
    }
}

#[test]
fn q4_0_embeddings_import_losslessly_as_q4_b32_and_export_back_to_the_same_blocks() {
    let src = gguf_fixture("bitnet_q4_0.gguf");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.bitnet");
    gguf::import_gguf(&ImportOptions::new(&src, &out)).unwrap();
    let f = BitnetFile::open(&out).unwrap();
    f.verify().unwrap();
    let (data, ty) = gguf_tensor(&src, "token_embd.weight");
    assert_eq!(ty, GGML_TYPE_Q4_0);
    let view = f.tensor("token_embd").unwrap();
    assert_eq!(view.info.encoding, Encoding::Q4B32);
    let want: Vec<u32> = blocks::dequantize(ty, &data)
        .unwrap()
        .iter()
        .map(|x| x.to_bits())
        .collect();
    let got: Vec<u32> = view.to_f32().unwrap().iter().map(|x| x.to_bits()).collect();
    assert!(got == want, "q4_b32 holds the Q4_0 values");

    // Back to GGUF: the very blocks the gguf package's quantizer wrote.
    let back = dir.path().join("m.gguf");
    gguf::export_gguf(&ExportOptions::new(&out, &back, ExportType::I2s)).unwrap();
    assert_eq!(
        gguf_tensor(&back, "token_embd.weight"),
        (data, GGML_TYPE_Q4_0)
    );

    // An explicit --embeddings choice converts the dequantized values instead.
    let f32_out = dir.path().join("f32.bitnet");
    let mut options = ImportOptions::new(&src, &f32_out);
    options.embeddings = EmbeddingsChoice::F32;
    gguf::import_gguf(&options).unwrap();
    let f = BitnetFile::open(&f32_out).unwrap();
    let view = f.tensor("token_embd").unwrap();
    assert_eq!(view.info.encoding, Encoding::F32);
    let got: Vec<u32> = view.to_f32().unwrap().iter().map(|x| x.to_bits()).collect();
    assert!(got == want);
}

#[test]
fn other_ggml_types_are_refused_naming_the_tensor_and_type() {
    // Retype token_embd (Q8_0, 17408 bytes) as Q2_K (5376 bytes for the same shape): the
    // container accepts it, the import must refuse it by name.
    let mut bytes = std::fs::read(gguf_fixture("llama_q8_0_q6_k.gguf")).unwrap();
    let name = b"token_embd.weight";
    let at = bytes.windows(name.len()).position(|w| w == name).unwrap() + name.len();
    let ty_at = at + 4 + 2 * 8;
    assert_eq!(bytes[ty_at..ty_at + 4], GGML_TYPE_Q8_0.to_le_bytes());
    bytes[ty_at..ty_at + 4].copy_from_slice(&10u32.to_le_bytes());
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("q2_k.gguf");
    std::fs::write(&src, &bytes).unwrap();
    let out = dir.path().join("m.bitnet");
    let err = gguf::import_gguf(&ImportOptions::new(&src, &out))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("token_embd.weight (Q2_K)") && err.contains("Q8_0, Q4_K, Q5_K, Q6_K"),
        "{err}"
    );
    assert!(!out.exists());
}
