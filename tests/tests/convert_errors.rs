//! Every way a checkpoint can be wrong gives an error that names the tensor, file or option at fault,
//! and leaves nothing at the output path (nor any partial file beside it).

mod convert_support;

use std::path::Path;

use bitnet_convert::{ConvertError, ConvertOptions, EmbeddingsChoice, convert};
use bitnet_format::BitnetFile;
use convert_support::*;
use safetensors::Dtype;
use serde_json::{Value, json};

/// Convert `src`, expect failure, check that the message has every `needle` and nothing was left.
fn fails(src: &Path, needles: &[&str]) -> ConvertError {
    fails_with(src, |_| {}, needles)
}

/// As [`fails`], with options changed by `configure`.
fn fails_with(
    src: &Path,
    configure: impl FnOnce(&mut ConvertOptions),
    needles: &[&str],
) -> ConvertError {
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("out.bitnet");
    let mut o = options(src, &out);
    configure(&mut o);
    let error = convert(&o).expect_err("conversion must fail");
    let message = error.to_string();
    for needle in needles {
        assert!(message.contains(needle), "{needle:?} not in: {message}");
    }
    assert!(!out.exists(), "{message}: output left behind");
    assert!(
        dir_entries(out_dir.path()).is_empty(),
        "{message}: files left behind: {:?}",
        dir_entries(out_dir.path())
    );
    error
}

fn no_config_change(_: &mut Value) {}

#[test]
fn code_three_in_a_packed_weight_names_the_tensor_and_position() {
    let dir = tempfile::tempdir().unwrap();
    let src = bad_checkpoint(
        dir.path(),
        "bitnet-2b4t",
        |t| {
            // Packed [50, 96]; byte [7, 5], bits 5:4 -> logical row 2·50 + 7 = 107, column 5.
            let up = tensor_mut(t, "model.layers.1.mlp.up_proj.weight");
            up.data[7 * 96 + 5] = (up.data[7 * 96 + 5] & !0x30) | 0x30;
        },
        no_config_change,
    );
    let e = fails(
        &src,
        &[
            "model.layers.1.mlp.up_proj.weight",
            "model.safetensors",
            "code 3",
            "row 107, column 5",
        ],
    );
    assert!(matches!(e, ConvertError::Quantize(_)));
}

#[test]
fn a_row_count_not_divisible_by_four_is_refused_for_packed_weights() {
    let dir = tempfile::tempdir().unwrap();
    // intermediate_size 202: gate/up would have 202 rows, which pack_weights cannot have made.
    let src = bad_checkpoint(
        dir.path(),
        "bitnet-2b4t",
        |_| {},
        |c| c["intermediate_size"] = json!(202),
    );
    fails(
        &src,
        &[
            "model.layers.0.mlp.gate_proj.weight",
            "divisible by 4",
            "202",
        ],
    );
}

#[test]
fn a_missing_weight_scale_names_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let src = bad_checkpoint(
        dir.path(),
        "llama3-bitnet",
        |t| t.retain(|t| t.name != "model.layers.1.self_attn.k_proj.weight_scale"),
        no_config_change,
    );
    fails(
        &src,
        &[
            "model.layers.1.self_attn.k_proj.weight",
            "model.layers.1.self_attn.k_proj.weight_scale",
        ],
    );
}

#[test]
fn a_malformed_weight_scale_names_the_scale_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let name = "model.layers.0.self_attn.q_proj.weight_scale";
    type Edit = Box<dyn Fn(&mut OwnedTensor)>;
    let cases: [(&str, Edit, &str); 4] = [
        (
            "shape",
            Box::new(|s: &mut OwnedTensor| {
                s.shape = vec![2];
                s.data = [s.data.clone(), s.data.clone()].concat();
            }),
            "shape [2]",
        ),
        (
            "dtype",
            Box::new(|s: &mut OwnedTensor| {
                s.dtype = Dtype::U8;
                s.data = vec![s.data[0]];
            }),
            "dtype U8",
        ),
        (
            "zero",
            Box::new(|s: &mut OwnedTensor| s.data = vec![0, 0]),
            "finite and positive",
        ),
        (
            "nan",
            Box::new(|s: &mut OwnedTensor| s.data = half::bf16::NAN.to_le_bytes().to_vec()),
            "finite and positive",
        ),
    ];
    for (label, edit, needle) in cases {
        let sub = dir.path().join(label);
        std::fs::create_dir_all(&sub).unwrap();
        let src = bad_checkpoint(
            &sub,
            "bitnet-2b4t",
            |t| edit(tensor_mut(t, name)),
            no_config_change,
        );
        fails(&src, &[name, "weight_scale", needle]);
    }
}

#[test]
fn nan_or_infinity_anywhere_names_the_tensor_and_position() {
    let dir = tempfile::tempdir().unwrap();
    let nan = half::bf16::NAN.to_le_bytes();
    let inf = half::bf16::INFINITY.to_le_bytes();
    // A latent projection (absmean path), a norm (f32 conversion) and the embedding (kept as bf16).
    let cases = [
        (
            "model.layers.1.self_attn.v_proj.weight",
            3 * 96 + 7,
            nan,
            "row 3, column 7",
        ),
        ("model.layers.0.input_layernorm.weight", 5, inf, "element 5"),
        (
            "model.embed_tokens.weight",
            10 * 96 + 1,
            nan,
            "row 10, column 1",
        ),
    ];
    for (i, (name, index, value, position)) in cases.into_iter().enumerate() {
        let sub = dir.path().join(i.to_string());
        std::fs::create_dir_all(&sub).unwrap();
        let src = bad_checkpoint(
            &sub,
            "bitnet-2b4t-bf16",
            |t| tensor_mut(t, name).data[2 * index..2 * index + 2].copy_from_slice(&value),
            no_config_change,
        );
        fails(&src, &[name, "not finite", position]);
    }
    // And an f16 latent weight of the 1bitLLM family.
    let sub = dir.path().join("f16");
    std::fs::create_dir_all(&sub).unwrap();
    let src = bad_checkpoint(
        &sub,
        "bitnet-1bitllm",
        |t| {
            tensor_mut(t, "model.layers.0.mlp.down_proj.weight").data[0..2]
                .copy_from_slice(&half::f16::INFINITY.to_le_bytes())
        },
        no_config_change,
    );
    fails(
        &src,
        &[
            "model.layers.0.mlp.down_proj.weight",
            "inf",
            "row 0, column 0",
        ],
    );
}

#[test]
fn q4_embeddings_name_a_column_count_not_a_multiple_of_32_and_a_non_finite_value() {
    let q4 = |o: &mut ConvertOptions| o.embeddings = EmbeddingsChoice::Q4;
    // The 1bitLLM fixture's hidden size is 120.
    let e = fails_with(
        &fixture("bitnet-1bitllm"),
        q4,
        &["model.embed_tokens.weight", "multiple of 32", "120"],
    );
    assert!(matches!(e, ConvertError::Plan(_)), "{e:?}");
    let dir = tempfile::tempdir().unwrap();
    let src = bad_checkpoint(
        dir.path(),
        "bitnet-2b4t-bf16",
        |t| {
            tensor_mut(t, "model.embed_tokens.weight").data[2 * (10 * 96 + 1)..][..2]
                .copy_from_slice(&half::bf16::NAN.to_le_bytes())
        },
        no_config_change,
    );
    fails_with(
        &src,
        q4,
        &[
            "model.embed_tokens.weight",
            "not finite",
            "row 10, column 1",
        ],
    );
}

/// `fixture` with its config.json changed by `edit`, in a directory of its own under `dir`: the
/// conversion fails naming every needle.
fn config_fails(dir: &Path, fixture: &str, edit: impl FnOnce(&mut Value), needles: &[&str]) {
    let sub = tempfile::tempdir_in(dir).unwrap();
    fails(&bad_checkpoint(sub.path(), fixture, |_| {}, edit), needles);
}

#[test]
fn an_unsupported_architecture_is_named_with_the_supported_list() {
    let dir = tempfile::tempdir().unwrap();
    let unknown = |c: &mut Value| {
        c["architectures"] = json!(["GPTBigCodeForCausalLM"]);
        c["model_type"] = json!("gpt_bigcode");
    };
    let needles = [
        "GPTBigCodeForCausalLM",
        "gpt_bigcode",
        "supported",
        "BitNetForCausalLM",
        "BitnetForCausalLM",
        "Qwen3ForCausalLM",
    ];
    config_fails(dir.path(), "llama3-bitnet", unknown, &needles);
    // A decoder transformers can load with BitNet quantization, whose forward pass needs more than
    // the format describes: the missing piece is named.
    let phi = |c: &mut Value| {
        c["architectures"] = json!(["PhiForCausalLM"]);
        c["model_type"] = json!("phi");
    };
    config_fails(
        dir.path(),
        "llama3-bitnet",
        phi,
        &["PhiForCausalLM", "no LayerNorm"],
    );
    // A Llama checkpoint without BitNet quantization is not a BitNet model.
    let plain = |c: &mut Value| {
        c.as_object_mut().unwrap().remove("quantization_config");
    };
    config_fails(
        dir.path(),
        "llama3-bitnet",
        plain,
        &["LlamaForCausalLM", "quant_method"],
    );
}

#[test]
fn an_unsupported_activation_or_rope_scaling_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let gelu = |c: &mut Value| c["hidden_act"] = json!("gelu");
    config_fails(dir.path(), "falcon3-bitnet", gelu, &["hidden_act", "gelu"]);
    let yarn = |c: &mut Value| c["rope_scaling"] = json!({"rope_type": "yarn", "factor": 4.0});
    config_fails(
        dir.path(),
        "falcon3-bitnet",
        yarn,
        &["rope_scaling", "yarn"],
    );
}

#[test]
fn a_missing_tensor_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let src = bad_checkpoint(
        dir.path(),
        "bitnet-1bitllm",
        |t| t.retain(|t| t.name != "model.layers.1.mlp.ffn_layernorm.weight"),
        no_config_change,
    );
    fails(
        &src,
        &[
            "model.layers.1.mlp.ffn_layernorm.weight",
            "blk.1.ffn_sub_norm",
        ],
    );
    let sub = dir.path().join("untied");
    std::fs::create_dir_all(&sub).unwrap();
    let src = bad_checkpoint(
        &sub,
        "falcon3-bitnet",
        |t| t.retain(|t| t.name != "model.norm.weight"),
        no_config_change,
    );
    fails(&src, &["model.norm.weight", "output_norm"]);
}

#[test]
fn unknown_tensors_are_named_and_rotary_buffers_skipped_with_a_note() {
    let dir = tempfile::tempdir().unwrap();
    let extra = |name: &str| OwnedTensor {
        name: name.to_string(),
        dtype: Dtype::F32,
        shape: vec![4],
        data: vec![0; 16],
    };
    let src = bad_checkpoint(
        dir.path(),
        "llama3-bitnet",
        |t| {
            t.push(extra("model.layers.0.mlp.extra_proj.weight"));
            t.push(extra("model.layers.5.input_layernorm.weight"));
        },
        no_config_change,
    );
    fails(
        &src,
        &[
            "model.layers.0.mlp.extra_proj.weight",
            "model.layers.5.input_layernorm.weight",
        ],
    );

    let sub = dir.path().join("rotary");
    std::fs::create_dir_all(&sub).unwrap();
    let src = bad_checkpoint(
        &sub,
        "llama3-bitnet",
        |t| t.push(extra("model.layers.0.self_attn.rotary_emb.inv_freq")),
        no_config_change,
    );
    let out = sub.join("ok.bitnet");
    let report = convert_dir(&src, &out);
    assert!(
        report.notes.iter().any(|n| n.contains("inv_freq")),
        "{:?}",
        report.notes
    );
}

#[test]
fn latent_weights_with_a_weight_scale_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let src = bad_checkpoint(
        dir.path(),
        "bitnet-2b4t-bf16",
        |t| {
            t.push(OwnedTensor {
                name: "model.layers.0.self_attn.q_proj.weight_scale".into(),
                dtype: Dtype::BF16,
                shape: vec![1],
                data: half::bf16::ONE.to_le_bytes().to_vec(),
            })
        },
        no_config_change,
    );
    fails(
        &src,
        &["model.layers.0.self_attn.q_proj.weight_scale", "not packed"],
    );
}

#[test]
fn a_wrong_shape_or_dtype_names_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let src = bad_checkpoint(
        dir.path(),
        "llama3-bitnet",
        |_| {},
        |c| c["vocab_size"] = json!(400),
    );
    fails(
        &src,
        &["model.embed_tokens.weight", "[352, 96]", "[400, 96]"],
    );
    let sub = dir.path().join("dtype");
    std::fs::create_dir_all(&sub).unwrap();
    let src = bad_checkpoint(
        &sub,
        "llama3-bitnet",
        |t| {
            let n = tensor_mut(t, "model.norm.weight");
            n.dtype = Dtype::I16;
        },
        no_config_change,
    );
    fails(&src, &["model.norm.weight", "I16"]);
}

#[test]
fn tied_embeddings_follow_the_tensors_with_a_note() {
    let dir = tempfile::tempdir().unwrap();
    let src = bad_checkpoint(
        dir.path(),
        "llama3-bitnet",
        |_| {},
        |c| c["tie_word_embeddings"] = json!(true),
    );
    let out = dir.path().join("m.bitnet");
    let report = convert_dir(&src, &out);
    assert!(
        report
            .notes
            .iter()
            .any(|n| n.contains("tie_word_embeddings") && n.contains("lm_head")),
        "{:?}",
        report.notes
    );
    let file = BitnetFile::open(&out).unwrap();
    assert!(!file.header().model.tied_embeddings);
    assert!(file.tensor("output").is_ok());
}

#[test]
fn an_existing_output_is_kept_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("existing.bitnet");
    std::fs::write(&out, b"precious").unwrap();
    let src = fixture("falcon3-bitnet");
    let e = convert(&options(&src, &out)).unwrap_err();
    assert!(e.to_string().contains("existing.bitnet") && e.to_string().contains("--force"));
    assert_eq!(std::fs::read(&out).unwrap(), b"precious");
    // A failed forced conversion keeps the old file too.
    let bad = bad_checkpoint(
        dir.path(),
        "falcon3-bitnet",
        |_| {},
        |c| c["hidden_act"] = json!("gelu"),
    );
    let mut o = options(&bad, &out);
    o.force = true;
    assert!(convert(&o).is_err());
    assert_eq!(std::fs::read(&out).unwrap(), b"precious");
    let mut o = options(&src, &out);
    o.force = true;
    convert(&o).unwrap();
    BitnetFile::open(&out).unwrap().verify().unwrap();
    assert_eq!(
        dir_entries(dir.path()),
        ["existing.bitnet", "falcon3-bitnet-edited"]
    );
}

#[test]
fn missing_sources_and_bad_options_are_named() {
    use bitnet_convert::SourceSpec;
    let e = SourceSpec::parse("/no/such/dir", None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("/no/such/dir"), "{e}");
    let src = fixture("bitnet-2b4t");
    let e = SourceSpec::parse(src.to_str().unwrap(), Some("v1.0"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("--revision") && e.contains("v1.0"), "{e}");
    assert_eq!(
        SourceSpec::parse("microsoft/bitnet-b1.58-2B-4T", None).unwrap(),
        SourceSpec::Hub {
            repo: "microsoft/bitnet-b1.58-2B-4T".into(),
            revision: "main".into()
        }
    );
    let dir = tempfile::tempdir().unwrap();
    let gguf = dir.path().join("model.gguf");
    std::fs::write(&gguf, b"GGUF").unwrap();
    let e = SourceSpec::parse(gguf.to_str().unwrap(), None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("model.gguf") && e.contains("GGUF"), "{e}");
    // A directory without config.json.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    fails(&empty, &["config.json", "empty"]);
    // An output directory that does not exist, refused before anything is read.
    let e = convert(&options(&src, &dir.path().join("no/such/dir/m.bitnet")))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("no/such/dir") && e.contains("does not exist"),
        "{e}"
    );
    // An output "directory" that is a file.
    let file = dir.path().join("plain");
    std::fs::write(&file, b"x").unwrap();
    let e = convert(&options(&src, &file.join("m.bitnet")))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("plain") && e.contains("is a file, not a directory"),
        "{e}"
    );
    // --threads 0.
    let out = dir.path().join("t.bitnet");
    let mut o = options(&src, &out);
    o.threads = Some(0);
    assert!(convert(&o).unwrap_err().to_string().contains("--threads 0"));
}
