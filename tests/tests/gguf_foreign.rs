//! GGUF files written by another program (the `gguf` Python package's writer and quantizers,
//! `tools/gguf/make_fixtures.py`) import: architecture, configuration, every ternary tensor with
//! one recovered scale, the tokenizer rebuilt from `tokenizer.ggml.*`. CI additionally compares
//! the imported values with `gguf.quants`' own dequantization (`tools/gguf/check_gguf_py.py`).

mod convert_support;

use std::path::{Path, PathBuf};

use bitnet_convert::gguf::{self, ImportOptions};
use bitnet_format::{Activation, BitnetFile, Encoding};

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
