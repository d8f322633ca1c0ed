//! What the `convert_*` end-to-end tests share: fixture paths, conversion with test options, a
//! `.npy` reader, rewriting a fixture's safetensors into a bad checkpoint, and the canonical tensor
//! list derived independently from `config.json`.

#![allow(dead_code)]

pub mod hub;

use std::path::{Path, PathBuf};

use bitnet_convert::gguf::vocab::Meta;
use bitnet_convert::tokenizer::sentencepiece::{self as sp, SentencePieceModel};
use bitnet_convert::{ConvertOptions, ConvertReport, HubOptions, SourceSpec};
use bitnet_format::{BitnetFile, Encoding, TokenizerInfo};
use bitnet_run::sampling::argmax;
use bitnet_run::tokenizer::Tokenizer;
use gguf_rs_lib::format::metadata::MetadataValue;
use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use serde_json::Value;
use serde_json::value::RawValue;

pub const FIXTURES: [&str; 9] = [
    "bitnet-2b4t",
    "bitnet-2b4t-bf16",
    "bitnet-1bitllm",
    "llama3-bitnet",
    "falcon3-bitnet",
    "falcon-e",
    "mistral-bitnet",
    "qwen2-bitnet",
    "qwen3-bitnet",
];

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/fixtures")
        .join(name)
}

pub fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The fixture directories under `testdata/{name}`, sorted.
pub fn testdata_dirs(name: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata")
        .join(name);
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    dirs.sort();
    dirs
}

/// A tokenizer entry holding only `json`: no chat template, special token ids or BOS.
pub fn bare_tokenizer(json: &Value) -> TokenizerInfo {
    TokenizerInfo {
        tokenizer_json: RawValue::from_string(json.to_string()).unwrap(),
        chat_template: None,
        bos_token_id: None,
        eos_token_ids: Vec::new(),
        pad_token_id: None,
        add_bos_token: false,
    }
}

/// `dir/tokenizer.model`, and the tokenizer.json the converter makes of it (without BOS or EOS).
pub fn sentencepiece_json(dir: &Path) -> (SentencePieceModel, Value) {
    let bytes = std::fs::read(dir.join("tokenizer.model")).unwrap();
    let model = SentencePieceModel::parse(&bytes).unwrap();
    let options = sp::ConvertOptions {
        add_bos: false,
        add_eos: false,
        ..Default::default()
    };
    let json = sp::to_tokenizer_json(&model, &options).unwrap();
    (model, json)
}

/// `decode` gives sentencepiece's text (`decoded`) for each of `cases` (`text`, `ids`), except
/// those with the unknown piece (printed as its own text here, ` ⁇ ` by sentencepiece) or whose
/// text starts with a literal `▁`; returns how many were compared.
pub fn assert_decodes_like_sentencepiece(
    decode: impl Fn(&[u32]) -> String,
    unk_id: u32,
    cases: &[Value],
    dir: &Path,
) -> usize {
    let mut compared = 0;
    for case in cases {
        let ids = ids(&case["ids"]);
        if ids.contains(&unk_id) || case["text"].as_str().unwrap().starts_with('\u{2581}') {
            continue;
        }
        assert_eq!(
            decode(&ids),
            case["decoded"].as_str().unwrap(),
            "{}",
            dir.display()
        );
        compared += 1;
    }
    compared
}

/// Every tensor of `a` equals `b`'s: the same shape, ternary values and scale (with `scale_map`
/// applied to `a`'s scale), other tensors' encoding and bytes.
pub fn assert_same_tensors(a: &Path, b: &Path, scale_map: impl Fn(f32) -> f32) {
    let (fa, fb) = (BitnetFile::open(a).unwrap(), BitnetFile::open(b).unwrap());
    assert_eq!(fa.tensors().len(), fb.tensors().len());
    for ta in fa.tensors() {
        let tb = fb
            .index()
            .get(&ta.name)
            .unwrap_or_else(|| panic!("{} missing", ta.name));
        assert_eq!(ta.shape, tb.shape, "{}", ta.name);
        let (va, vb) = (fa.view(ta), fb.view(tb));
        match ta.encoding {
            Encoding::Ternary(_) => {
                let (xa, sa) = va.unpack_ternary().unwrap();
                let (xb, sb) = vb.unpack_ternary().unwrap();
                assert!(xa == xb, "{}: ternary values differ", ta.name);
                assert_eq!(scale_map(sa).to_bits(), sb.to_bits(), "{}: scale", ta.name);
            }
            _ => {
                assert_eq!(ta.encoding, tb.encoding, "{}", ta.name);
                assert_eq!(va.data, vb.data, "{}: bytes", ta.name);
            }
        }
    }
}

/// The fixture's tokenizer example (with special tokens, as a prompt) and its rendered chat
/// (`chat.json`) encode to transformers' ids.
pub fn assert_tokenizes_like_transformers(tok: &Tokenizer, fixture_dir: &Path) {
    let example = &read_json(&fixture_dir.join("reference.json"))["tokenizer_example"];
    assert_eq!(
        tok.encode_prompt(example["text"].as_str().unwrap())
            .unwrap(),
        ids(&example["ids_with_special_tokens"])
    );
    let chat = read_json(&fixture_dir.join("chat.json"));
    assert_eq!(
        tok.encode(chat["rendered"].as_str().unwrap(), false)
            .unwrap(),
        ids(&chat["token_ids"])
    );
}

/// The fraction of positions whose argmax in `got` is transformers' (`want`).
pub fn argmax_agreement(got: &[f32], want: &[f64], vocab: usize) -> f64 {
    let positions = got.len() / vocab;
    let agree = (0..positions)
        .filter(|&t| {
            let w: Vec<f32> = want[t * vocab..(t + 1) * vocab]
                .iter()
                .map(|&v| v as f32)
                .collect();
            argmax(&got[t * vocab..(t + 1) * vocab]) == argmax(&w)
        })
        .count();
    agree as f64 / positions as f64
}

/// Every position's logits against transformers' with the family tests' bounds: max |Δ| < 1e-3
/// for up to 16 tokens; beyond, where an activation code may round the other way, argmax
/// agreement ≥ 0.9 and mean |Δ| < 1e-2. Prints the figures under `label`.
pub fn assert_logits_like_transformers(got: &[f32], want: &[f64], vocab: usize, label: &str) {
    assert_eq!(got.len(), want.len(), "{label}");
    let diffs: Vec<f64> = got
        .iter()
        .zip(want)
        .map(|(a, b)| (*a as f64 - b).abs())
        .collect();
    let max = diffs.iter().cloned().fold(0.0, f64::max);
    let mean = diffs.iter().sum::<f64>() / diffs.len() as f64;
    let agree = argmax_agreement(got, want, vocab);
    eprintln!("{label}: max |Δ| {max:.2e}, mean |Δ| {mean:.2e}, argmax agreement {agree:.3}");
    if got.len() / vocab <= 16 {
        assert!(max < 1e-3, "{label}: max |Δ| {max}");
    } else {
        assert!(agree >= 0.9, "{label}: argmax agreement {agree}");
        assert!(mean < 1e-2, "{label}: mean |Δ| {mean}");
    }
}

/// GGUF metadata as a map, for the tokenizer import.
pub struct Metadata(pub std::collections::HashMap<String, MetadataValue>);

impl Meta for Metadata {
    fn meta(&self, key: &str) -> Option<&MetadataValue> {
        self.0.get(key)
    }
}

/// A JSON array of token ids.
pub fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// Hub options that never touch the network or the user's cache.
pub fn offline_hub(cache: &Path) -> HubOptions {
    HubOptions {
        endpoint: "http://127.0.0.1:9".into(),
        cache_dir: cache.to_path_buf(),
        token: None,
        offline: true,
        progress: false,
        retries: 0,
    }
}

/// Options for converting a local directory, with the hub cut off.
pub fn options(source: &Path, out: &Path) -> ConvertOptions {
    let mut o = ConvertOptions::new(
        SourceSpec::Directory {
            path: source.to_path_buf(),
        },
        out,
    );
    o.hub = offline_hub(&std::env::temp_dir().join("bitnet-convert-tests-no-cache"));
    o
}

pub fn convert_dir(source: &Path, out: &Path) -> ConvertReport {
    bitnet_convert::convert(&options(source, out)).unwrap()
}

/// Every entry of a directory (to check that a failed conversion left nothing behind).
pub fn dir_entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// An int8 or float32 `.npy` array: `(shape, values as f64)`.
pub fn read_npy(path: &Path) -> (Vec<usize>, Vec<f64>) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..6], b"\x93NUMPY");
    let (header_len, start) = if bytes[6] == 1 {
        (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10)
    } else {
        (
            u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize,
            12,
        )
    };
    let header = std::str::from_utf8(&bytes[start..start + header_len]).unwrap();
    assert!(header.contains("'fortran_order': False"), "{header}");
    let shape_text = header
        .split("'shape': (")
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap();
    let shape: Vec<usize> = shape_text
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse().unwrap())
        .collect();
    let data = &bytes[start + header_len..];
    let values = if header.contains("'descr': '|i1'") {
        data.iter().map(|&b| b as i8 as f64).collect()
    } else if header.contains("'descr': '<f4'") {
        data.chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
            .collect()
    } else {
        panic!("unsupported npy dtype: {header}")
    };
    (shape, values)
}

/// A tensor read out of a safetensors file, owned so it can be changed.
#[derive(Clone, Debug)]
pub struct OwnedTensor {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

pub fn read_safetensors(path: &Path) -> Vec<OwnedTensor> {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut v: Vec<OwnedTensor> = st
        .tensors()
        .into_iter()
        .map(|(name, t)| OwnedTensor {
            name,
            dtype: t.dtype(),
            shape: t.shape().to_vec(),
            data: t.data().to_vec(),
        })
        .collect();
    v.sort_by(|a, b| a.name.cmp(&b.name));
    v
}

pub fn write_safetensors(path: &Path, tensors: &[OwnedTensor]) {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|t| {
            (
                t.name.clone(),
                TensorView::new(t.dtype, t.shape.clone(), &t.data).unwrap(),
            )
        })
        .collect();
    let bytes = safetensors::serialize(views, None).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// Copy the files of directory `from` (a fixture: no subdirectories) into `to`, creating it.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
    }
}

/// Copy a fixture to `dir/name`, letting `edit` change its tensors and `edit_config` its config.
pub fn bad_checkpoint(
    dir: &Path,
    fixture_name: &str,
    edit: impl FnOnce(&mut Vec<OwnedTensor>),
    edit_config: impl FnOnce(&mut Value),
) -> PathBuf {
    let src = fixture(fixture_name);
    let dst = dir.join(format!("{fixture_name}-edited"));
    copy_dir(&src, &dst);
    let mut tensors = read_safetensors(&dst.join("model.safetensors"));
    edit(&mut tensors);
    write_safetensors(&dst.join("model.safetensors"), &tensors);
    let mut config = read_json(&dst.join("config.json"));
    edit_config(&mut config);
    std::fs::write(
        dst.join("config.json"),
        serde_json::to_string_pretty(&config).unwrap(),
    )
    .unwrap();
    dst
}

pub fn tensor_mut<'a>(tensors: &'a mut [OwnedTensor], name: &str) -> &'a mut OwnedTensor {
    tensors
        .iter_mut()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("no tensor {name}"))
}

/// The canonical tensors a model with this config.json must have, with shapes, in file order,
/// written out independently of the converter.
pub fn canonical_tensors(config: &Value, sub_norms: bool, tied: bool) -> Vec<(String, Vec<u64>)> {
    let u = |k: &str| config[k].as_u64().unwrap();
    let (h, i, v, heads) = (
        u("hidden_size"),
        u("intermediate_size"),
        u("vocab_size"),
        u("num_attention_heads"),
    );
    let kv_heads = config["num_key_value_heads"].as_u64().unwrap_or(heads);
    let head_dim = config["head_dim"].as_u64().unwrap_or(h / heads);
    let (q, kv) = (heads * head_dim, kv_heads * head_dim);
    let mut out = vec![("token_embd".to_string(), vec![v, h])];
    for l in 0..u("num_hidden_layers") {
        let mut layer = vec![
            ("attn_norm", vec![h]),
            ("attn_q", vec![q, h]),
            ("attn_k", vec![kv, h]),
            ("attn_v", vec![kv, h]),
        ];
        // Qwen2 adds biases to q, k and v; Qwen3 normalises each query and key head.
        if config["model_type"] == "qwen2" {
            layer.extend([
                ("attn_q_bias", vec![q]),
                ("attn_k_bias", vec![kv]),
                ("attn_v_bias", vec![kv]),
            ]);
        }
        if config["model_type"] == "qwen3" {
            layer.extend([
                ("attn_q_norm", vec![head_dim]),
                ("attn_k_norm", vec![head_dim]),
            ]);
        }
        if sub_norms {
            layer.push(("attn_sub_norm", vec![q]));
        }
        layer.extend([
            ("attn_output", vec![h, q]),
            ("ffn_norm", vec![h]),
            ("ffn_gate", vec![i, h]),
            ("ffn_up", vec![i, h]),
        ]);
        if sub_norms {
            layer.push(("ffn_sub_norm", vec![i]));
        }
        layer.push(("ffn_down", vec![h, i]));
        out.extend(layer.into_iter().map(|(n, s)| (format!("blk.{l}.{n}"), s)));
    }
    out.push(("output_norm".to_string(), vec![h]));
    if !tied {
        out.push(("output".to_string(), vec![v, h]));
    }
    out
}

/// The Hugging Face name of a canonical projection of layer `l` (`q_proj`, ...).
pub fn hf_projection(l: usize, canonical_suffix: &str) -> String {
    let module = match canonical_suffix {
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        other => panic!("{other} is not a projection"),
    };
    format!("model.layers.{l}.{module}.weight")
}

pub const PROJECTIONS: [&str; 7] = [
    "attn_q",
    "attn_k",
    "attn_v",
    "attn_output",
    "ffn_gate",
    "ffn_up",
    "ffn_down",
];

/// A float tensor of the checkpoint as f32 values.
pub fn to_f32(t: &OwnedTensor) -> Vec<f32> {
    match t.dtype {
        Dtype::F32 => t
            .data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        Dtype::F16 => t
            .data
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => t
            .data
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        other => panic!("{other:?} is not a float dtype"),
    }
}

/// The ternary values and per-tensor multiplier a projection must get, computed here without the
/// converter (packed `U8` codes unpacked as transformers' `unpack_weights` does): the
/// stored `weight_scale` (autobitlinear multiplies), its reciprocal (bitlinear divides), or the f64
/// mean of |W| rounded once to f32 (latent weights).
pub fn projection_oracle(
    tensors: &[OwnedTensor],
    hf: &str,
    config: &Value,
    rows: usize,
    cols: usize,
) -> (Vec<i8>, f32) {
    let w = tensors.iter().find(|t| t.name == hf).unwrap();
    if w.dtype == safetensors::Dtype::U8 {
        let r = rows / 4;
        let mut values = vec![0i8; rows * cols];
        for pr in 0..r {
            for c in 0..cols {
                let byte = w.data[pr * cols + c];
                for q in 0..4 {
                    values[(q * r + pr) * cols + c] = ((byte >> (2 * q)) & 3) as i8 - 1;
                }
            }
        }
        let scale_name = hf.replace(".weight", ".weight_scale");
        let s = tensors.iter().find(|t| t.name == scale_name).unwrap();
        let stored = to_f32(s)[0];
        let multiply = config["quantization_config"]["linear_class"] == "autobitlinear";
        (values, if multiply { stored } else { 1.0 / stored })
    } else {
        let x = to_f32(w);
        let mean = x.iter().map(|v| v.abs() as f64).sum::<f64>() / x.len() as f64;
        let scale = (mean as f32).max(1e-5);
        let values = x
            .iter()
            .map(|v| (v / scale).round_ties_even().clamp(-1.0, 1.0) as i8)
            .collect();
        (values, scale)
    }
}
