//! `bitnet-convert` on the fixture of every BitNet b1.58 family: the right tensors in the right
//! encodings, ternary values and scales equal to independent oracles, full-precision tensors kept
//! exactly, tokenizer and provenance embedded, deterministic output, every layout and embedding
//! encoding.

mod convert_support;

use bitnet_convert::{EmbeddingsChoice, auto_layout, convert};
use bitnet_format::{BitnetFile, Encoding, Source, TernaryLayout};
use convert_support::*;
use serde_json::Value;
use sha2::{Digest, Sha256};

struct Expect {
    family: &'static str,
    tied: bool,
    sub_norms: bool,
    bos: u32,
    eos: &'static [u32],
    add_bos: bool,
}

fn other_decoder(family: &'static str, tied: bool) -> Expect {
    Expect {
        family,
        tied,
        sub_norms: false,
        bos: 342,
        eos: &[351],
        add_bos: true,
    }
}

fn expect(name: &str) -> Expect {
    match name {
        "bitnet-2b4t" | "bitnet-2b4t-bf16" => Expect {
            family: "bitnet-2b4t",
            tied: true,
            sub_norms: true,
            bos: 342,
            eos: &[343, 351],
            add_bos: true,
        },
        "bitnet-1bitllm" => Expect {
            family: "bitnet-1bitllm",
            tied: true,
            sub_norms: true,
            bos: 1,
            eos: &[2],
            add_bos: true,
        },
        "llama3-bitnet" => Expect {
            family: "llama-bitnet",
            tied: false,
            sub_norms: false,
            bos: 342,
            eos: &[351, 343],
            add_bos: true,
        },
        "falcon3-bitnet" => Expect {
            family: "falcon3-bitnet",
            tied: false,
            sub_norms: false,
            bos: 11,
            eos: &[11],
            add_bos: false,
        },
        // config.json eos, then generation_config.json's <|im_end|>; no BOS added (GPT-2-style
        // post-processor).
        "falcon-e" => Expect {
            family: "falcon-e",
            tied: false,
            sub_norms: false,
            bos: 0,
            eos: &[0, 2],
            add_bos: false,
        },
        // The other decoders with quant_method "bitnet", with the Llama-3-style tokenizer.
        "mistral-bitnet" => other_decoder("mistral-bitnet", false),
        "qwen2-bitnet" => other_decoder("qwen2-bitnet", true),
        "qwen3-bitnet" => other_decoder("qwen3-bitnet", false),
        other => panic!("unknown fixture {other}"),
    }
}

#[test]
fn every_family_converts_to_the_canonical_tensors_and_config() {
    let dir = tempfile::tempdir().unwrap();
    for name in FIXTURES {
        let src = fixture(name);
        let out = dir.path().join(format!("{name}.bitnet"));
        let report = convert_dir(&src, &out);
        let e = expect(name);
        assert_eq!(report.family, e.family, "{name}");
        let file = BitnetFile::open(&out).unwrap();
        file.check_contents().unwrap();
        let config = read_json(&src.join("config.json"));
        let m = &file.header().model;
        assert_eq!(m.family, e.family, "{name}");
        assert_eq!(m.tied_embeddings, e.tied, "{name}");
        assert_eq!(m.sub_norms, e.sub_norms, "{name}");
        assert_eq!(
            m.hidden_size as u64,
            config["hidden_size"].as_u64().unwrap()
        );
        assert_eq!(m.vocab_size as u64, config["vocab_size"].as_u64().unwrap());
        assert_eq!(
            m.num_layers as u64,
            config["num_hidden_layers"].as_u64().unwrap()
        );
        assert_eq!(
            m.rope_theta,
            config["rope_theta"].as_f64().unwrap(),
            "{name}"
        );
        assert_eq!(m.rms_norm_eps, config["rms_norm_eps"].as_f64().unwrap());
        assert_eq!(
            m.context_length as u64,
            config["max_position_embeddings"].as_u64().unwrap()
        );
        assert_eq!(m.attention_bias, name == "qwen2-bitnet", "{name}");
        assert_eq!(m.qk_norm, name == "qwen3-bitnet", "{name}");
        let act = format!("{:?}", m.activation).to_lowercase();
        assert_eq!(act, config["hidden_act"].as_str().unwrap(), "{name}");
        if name == "falcon3-bitnet" {
            assert_eq!(m.head_dim, 40);
        }

        let expected = canonical_tensors(&config, e.sub_norms, e.tied);
        let got: Vec<(String, Vec<u64>)> = file
            .tensors()
            .iter()
            .map(|t| (t.name.clone(), t.shape.clone()))
            .collect();
        assert_eq!(got, expected, "{name}: tensor names, order and shapes");
        let embedding_dtype = read_safetensors(&src.join("model.safetensors"))
            .into_iter()
            .find(|t| t.name == "model.embed_tokens.weight")
            .unwrap()
            .dtype;
        for t in file.tensors() {
            let suffix = t.name.rsplit('.').next().unwrap();
            let want = if PROJECTIONS.contains(&suffix) {
                Encoding::Ternary(auto_layout())
            } else if t.name == "token_embd" || t.name == "output" {
                match embedding_dtype {
                    safetensors::Dtype::BF16 => Encoding::Bf16,
                    safetensors::Dtype::F16 => Encoding::F16,
                    _ => Encoding::F32,
                }
            } else {
                Encoding::F32
            };
            assert_eq!(t.encoding, want, "{name}: {}", t.name);
        }
    }
}

#[test]
fn ternary_q0_and_its_scale_equal_the_fixture_reference() {
    let dir = tempfile::tempdir().unwrap();
    for name in FIXTURES {
        let src = fixture(name);
        let out = dir.path().join(format!("{name}.bitnet"));
        convert_dir(&src, &out);
        let file = BitnetFile::open(&out).unwrap();
        let (values, scale) = file
            .tensor("blk.0.attn_q")
            .unwrap()
            .unpack_ternary()
            .unwrap();
        let (shape, npy) = read_npy(&src.join("ternary_q0.npy"));
        assert_eq!(
            file.tensor("blk.0.attn_q").unwrap().info.shape,
            [shape[0] as u64, shape[1] as u64]
        );
        let npy: Vec<i8> = npy.iter().map(|&v| v as i8).collect();
        assert_eq!(values, npy, "{name}: ternary values of blk.0.attn_q");

        let q0 = &read_json(&src.join("reference.json"))["ternary_q0"];
        let expected = if let Some(hex) = q0["scale_f32_hex"].as_str() {
            f32::from_bits(u32::from_str_radix(hex, 16).unwrap())
        } else if let Some(m) = q0["multiplier_equivalent"].as_f64() {
            m as f32
        } else {
            let hex = q0["weight_scale_stored"]["f32_hex"].as_str().unwrap();
            f32::from_bits(u32::from_str_radix(hex, 16).unwrap())
        };
        assert_eq!(
            scale.to_bits(),
            expected.to_bits(),
            "{name}: scale {scale} vs {expected}"
        );
    }
}

#[test]
fn every_projection_equals_an_independent_oracle_and_the_reference_scales() {
    let dir = tempfile::tempdir().unwrap();
    for name in FIXTURES {
        let src = fixture(name);
        let out = dir.path().join(format!("{name}.bitnet"));
        convert_dir(&src, &out);
        let file = BitnetFile::open(&out).unwrap();
        let config = read_json(&src.join("config.json"));
        let reference = read_json(&src.join("reference.json"));
        let divisors = reference["all_projection_scales_semantics"]
            .as_str()
            .unwrap()
            .contains("divisor");
        let tensors = read_safetensors(&src.join("model.safetensors"));
        let layers = config["num_hidden_layers"].as_u64().unwrap() as usize;
        for l in 0..layers {
            for p in PROJECTIONS {
                let canonical = format!("blk.{l}.{p}");
                let view = file.tensor(&canonical).unwrap();
                let (rows, cols) = view.info.matrix_dims().unwrap();
                let (values, scale) = view.unpack_ternary().unwrap();
                let hf = hf_projection(l, p);
                let (want, want_scale) = projection_oracle(&tensors, &hf, &config, rows, cols);
                assert_eq!(values, want, "{name}: {canonical}");
                assert_eq!(scale.to_bits(), want_scale.to_bits(), "{name}: {canonical}");
                let listed = reference["all_projection_scales"][&hf].as_f64().unwrap() as f32;
                let listed = if divisors { 1.0 / listed } else { listed };
                assert_eq!(
                    scale.to_bits(),
                    listed.to_bits(),
                    "{name}: {canonical} vs reference.json"
                );
            }
        }
    }
}

#[test]
fn full_precision_tensors_keep_their_exact_values() {
    let dir = tempfile::tempdir().unwrap();
    for name in FIXTURES {
        let src = fixture(name);
        let out = dir.path().join(format!("{name}.bitnet"));
        convert_dir(&src, &out);
        let file = BitnetFile::open(&out).unwrap();
        let tensors = read_safetensors(&src.join("model.safetensors"));
        let get = |n: &str| tensors.iter().find(|t| t.name == n).unwrap();
        // Embeddings keep their dtype and bytes.
        let embd = file.tensor("token_embd").unwrap();
        assert_eq!(
            embd.data,
            get("model.embed_tokens.weight").data.as_slice(),
            "{name}"
        );
        if let Ok(output) = file.tensor("output") {
            assert_eq!(output.data, get("lm_head.weight").data.as_slice(), "{name}");
        }
        // Norms become f32 with the same values.
        let sub = if name == "bitnet-1bitllm" {
            "self_attn.inner_attn_ln"
        } else {
            "self_attn.attn_sub_norm"
        };
        let mut pairs = vec![
            ("output_norm", "model.norm.weight".to_string()),
            (
                "blk.1.attn_norm",
                "model.layers.1.input_layernorm.weight".to_string(),
            ),
            (
                "blk.0.ffn_norm",
                "model.layers.0.post_attention_layernorm.weight".to_string(),
            ),
        ];
        if file.header().model.sub_norms {
            pairs.push((
                "blk.1.attn_sub_norm",
                format!("model.layers.1.{sub}.weight"),
            ));
        }
        if file.header().model.attention_bias {
            pairs.extend([
                (
                    "blk.1.attn_q_bias",
                    "model.layers.1.self_attn.q_proj.bias".into(),
                ),
                (
                    "blk.1.attn_k_bias",
                    "model.layers.1.self_attn.k_proj.bias".into(),
                ),
                (
                    "blk.0.attn_v_bias",
                    "model.layers.0.self_attn.v_proj.bias".into(),
                ),
            ]);
        }
        if file.header().model.qk_norm {
            pairs.push((
                "blk.0.attn_q_norm",
                "model.layers.0.self_attn.q_norm.weight".to_string(),
            ));
            pairs.push((
                "blk.1.attn_k_norm",
                "model.layers.1.self_attn.k_norm.weight".to_string(),
            ));
        }
        for (canonical, hf) in pairs {
            let got = file.tensor(canonical).unwrap().to_f32().unwrap();
            assert_eq!(got, to_f32(get(&hf)), "{name}: {canonical}");
        }
    }
}

#[test]
fn tokenizer_chat_template_and_generation_defaults_are_embedded() {
    let dir = tempfile::tempdir().unwrap();
    for name in FIXTURES {
        let src = fixture(name);
        let out = dir.path().join(format!("{name}.bitnet"));
        convert_dir(&src, &out);
        let file = BitnetFile::open(&out).unwrap();
        let t = file.header().tokenizer.as_ref().expect("a tokenizer");
        let e = expect(name);
        assert_eq!(t.bos_token_id, Some(e.bos), "{name}");
        assert_eq!(t.eos_token_ids, e.eos, "{name}");
        assert_eq!(t.add_bos_token, e.add_bos, "{name}");
        let embedded: Value = serde_json::from_str(t.tokenizer_json.get()).unwrap();
        let tokenizer_config = read_json(&src.join("tokenizer_config.json"));
        if src.join("tokenizer.json").exists() {
            assert_eq!(embedded, read_json(&src.join("tokenizer.json")), "{name}");
            // Compact: no insignificant white space.
            assert!(!t.tokenizer_json.get().contains("\n"), "{name}");
        } else {
            assert_eq!(embedded["model"]["type"], "BPE");
            assert_eq!(embedded["model"]["byte_fallback"], true);
        }
        assert_eq!(
            t.chat_template.as_deref(),
            tokenizer_config["chat_template"].as_str(),
            "{name}"
        );
    }
    let file = BitnetFile::open(dir.path().join("llama3-bitnet.bitnet")).unwrap();
    let g = &file.header().generation;
    assert_eq!(
        (g.temperature, g.top_p, g.top_k),
        (Some(0.6), Some(0.9), None)
    );
}

#[test]
fn provenance_names_the_directory_the_files_and_the_options() {
    let dir = tempfile::tempdir().unwrap();
    let src = fixture("llama3-bitnet");
    let out = dir.path().join("m.bitnet");
    convert_dir(&src, &out);
    let file = BitnetFile::open(&out).unwrap();
    let p = &file.header().provenance;
    assert_eq!(
        p.source,
        Source::Directory {
            path: src.to_string_lossy().into_owned()
        }
    );
    assert!(p.converter.starts_with("bitnet-convert "));
    let names: Vec<&str> = p.files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "config.json",
            "generation_config.json",
            "model.safetensors",
            "tokenizer.json",
            "tokenizer_config.json"
        ]
    );
    let weights = std::fs::read(src.join("model.safetensors")).unwrap();
    let entry = p
        .files
        .iter()
        .find(|f| f.name == "model.safetensors")
        .unwrap();
    let sha: String = Sha256::digest(&weights)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        (entry.bytes, entry.sha256.as_str()),
        (weights.len() as u64, sha.as_str())
    );
    assert_eq!(p.options["layout"], auto_layout().label());
    assert_eq!(p.options["embeddings"], "source");
}

#[test]
fn converting_twice_gives_byte_identical_files() {
    let dir = tempfile::tempdir().unwrap();
    for name in FIXTURES {
        let src = fixture(name);
        let a = dir.path().join(format!("{name}-a.bitnet"));
        let b = dir.path().join(format!("{name}-b.bitnet"));
        convert_dir(&src, &a);
        let mut o = options(&src, &b);
        o.threads = Some(1);
        convert(&o).unwrap();
        assert!(
            std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(),
            "{name}: two conversions differ"
        );
    }
}

#[test]
fn every_layout_holds_the_same_ternary_values() {
    let dir = tempfile::tempdir().unwrap();
    let src = fixture("bitnet-2b4t");
    let mut reference = None;
    for label in [
        "tiled16", "tiled4", "tiled8", "tiled32", "i2s", "i2s64", "base3x16", "base3x4",
    ] {
        let out = dir.path().join(format!("{label}.bitnet"));
        let mut o = options(&src, &out);
        o.layout = TernaryLayout::from_label(label).unwrap();
        convert(&o).unwrap();
        let file = BitnetFile::open(&out).unwrap();
        assert_eq!(file.header().provenance.options["layout"], o.layout.label());
        let all: Vec<(Vec<i8>, u32)> = file
            .tensors()
            .iter()
            .filter(|t| matches!(t.encoding, Encoding::Ternary(l) if l == o.layout))
            .map(|t| {
                let (v, s) = file.view(t).unpack_ternary().unwrap();
                (v, s.to_bits())
            })
            .collect();
        assert_eq!(all.len(), 14);
        match &reference {
            None => reference = Some(all),
            Some(r) => assert!(r == &all, "{label} differs from tiled16"),
        }
    }
}

#[test]
fn embeddings_option_re_encodes_token_embd_and_output() {
    let dir = tempfile::tempdir().unwrap();
    let src = fixture("llama3-bitnet");
    let tensors = read_safetensors(&src.join("model.safetensors"));
    let source = |n: &str| to_f32(tensors.iter().find(|t| t.name == n).unwrap());
    let embed = source("model.embed_tokens.weight");
    let head = source("lm_head.weight");
    for (choice, encoding) in [
        (EmbeddingsChoice::F32, Encoding::F32),
        (EmbeddingsChoice::F16, Encoding::F16),
        (EmbeddingsChoice::Bf16, Encoding::Bf16),
        (EmbeddingsChoice::I8, Encoding::I8Row),
        (EmbeddingsChoice::Q4, Encoding::Q4B32),
    ] {
        let out = dir.path().join(format!("{}.bitnet", choice.label()));
        let mut o = options(&src, &out);
        o.embeddings = choice;
        convert(&o).unwrap();
        let file = BitnetFile::open(&out).unwrap();
        file.check_contents().unwrap();
        assert_eq!(
            file.header().provenance.options["embeddings"],
            choice.label()
        );
        for (name, want) in [("token_embd", &embed), ("output", &head)] {
            let view = file.tensor(name).unwrap();
            assert_eq!(view.info.encoding, encoding, "{name}");
            let got = view.to_f32().unwrap();
            let cols = 96;
            for (r, (g_row, w_row)) in got.chunks(cols).zip(want.chunks(cols)).enumerate() {
                let absmax = w_row.iter().fold(0f32, |m, v| m.max(v.abs()));
                for (c, (g, w)) in g_row.iter().zip(w_row).enumerate() {
                    let block = &w_row[c / 32 * 32..][..32];
                    let block_absmax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
                    let tolerance = match encoding {
                        Encoding::I8Row => absmax / 127.0 / 2.0 * 1.0001,
                        // At most one step of the coarsest candidate scale, |m| / 7 (f16-rounded).
                        Encoding::Q4B32 => block_absmax / 7.0 * 1.001,
                        // bf16 values are exact in f16 except the tiniest, which f16 holds as
                        // subnormals in steps of 2^-24.
                        Encoding::F16 => 2f32.powi(-25),
                        _ => 0.0,
                    };
                    assert!((g - w).abs() <= tolerance, "{name} row {r}: {g} vs {w}");
                }
            }
        }
    }
}

#[test]
fn inspect_lists_every_tensor_with_encoding_layout_shape_and_bytes() {
    let dir = tempfile::tempdir().unwrap();
    for name in FIXTURES {
        let out = dir.path().join(format!("{name}.bitnet"));
        convert_dir(&fixture(name), &out);
        let text = bitnet_convert::inspect::inspect(&out).unwrap();
        let file = BitnetFile::open(&out).unwrap();
        assert!(text.contains(&file.header().model.family), "{text}");
        assert!(
            text.contains("provenance") && text.contains("bitnet-convert"),
            "{text}"
        );
        for t in file.tensors() {
            let line = text
                .lines()
                .find(|l| l.split_whitespace().next() == Some(t.name.as_str()))
                .unwrap_or_else(|| panic!("{name}: {} not listed:\n{text}", t.name));
            assert!(line.contains(&t.length.to_string()), "{line}");
            assert!(line.contains(t.encoding.name()), "{line}");
            if let Encoding::Ternary(l) = t.encoding {
                assert!(line.contains(&l.label()), "{line}");
            }
        }
    }
}

#[test]
fn verify_accepts_converted_files_and_names_the_first_problem_of_a_corrupted_one() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.bitnet");
    // The header records the source's path, so its length (and the padding after it) depends on
    // where the repository is checked out. Convert from a copy under a name that leaves padding:
    // one character more moves the header's end by one byte, so one of two names does.
    let mut file = None;
    for name in ["src", "srcx"] {
        let source = dir.path().join(name);
        copy_dir(&fixture("bitnet-2b4t"), &source);
        convert_dir(&source, &out);
        let f = BitnetFile::open(&out).unwrap();
        let index = f.index();
        if index.data_start > bitnet_format::PREAMBLE_LEN + index.preamble.header_len {
            file = Some(f);
            break;
        }
    }
    let file = file.expect("one of the two source names leaves padding after the header");
    let summary = bitnet_convert::verify::verify_file(&out).unwrap();
    assert_eq!(summary.tensors, 24);

    let target = file.index().get("blk.1.ffn_up").unwrap().clone();
    let data_start = file.index().data_start;
    let last = file
        .tensors()
        .iter()
        .max_by_key(|t| t.offset)
        .unwrap()
        .clone();
    drop(file);
    let good = std::fs::read(&out).unwrap();

    let mut bytes = good.clone();
    bytes[(target.offset + 100) as usize] ^= 0x04;
    std::fs::write(&out, &bytes).unwrap();
    let e = bitnet_convert::verify::verify_file(&out)
        .unwrap_err()
        .to_string();
    assert!(e.contains("blk.1.ffn_up") && e.contains("checksum"), "{e}");

    // A non-zero byte in the padding between the header and the data (its last byte).
    let mut bytes = good.clone();
    bytes[data_start as usize - 1] = 1;
    std::fs::write(&out, &bytes).unwrap();
    let e = bitnet_convert::verify::verify_file(&out)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("padding") && e.contains(&(data_start - 1).to_string()),
        "{e}"
    );

    // Truncation.
    std::fs::write(&out, &good[..(last.offset + last.length / 2) as usize]).unwrap();
    assert!(bitnet_convert::verify::verify_file(&out).is_err());
}

/// Split a fixture's model.safetensors into two shards with a `model.safetensors.index.json`.
fn shard_fixture(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    let src = fixture(name);
    let dst = dir.join(format!("{name}-sharded"));
    std::fs::create_dir_all(&dst).unwrap();
    for entry in std::fs::read_dir(&src).unwrap() {
        let p = entry.unwrap().path();
        if p.file_name().unwrap() != "model.safetensors" {
            std::fs::copy(&p, dst.join(p.file_name().unwrap())).unwrap();
        }
    }
    let tensors = read_safetensors(&src.join("model.safetensors"));
    let (first, second): (Vec<OwnedTensor>, Vec<OwnedTensor>) = tensors
        .into_iter()
        .partition(|t| !t.name.contains("layers.1."));
    let files = [
        ("model-00001-of-00002.safetensors", &first),
        ("model-00002-of-00002.safetensors", &second),
    ];
    let mut weight_map = serde_json::Map::new();
    for (file, part) in files {
        write_safetensors(&dst.join(file), part);
        for t in part.iter() {
            weight_map.insert(t.name.clone(), Value::from(file));
        }
    }
    let index = serde_json::json!({"metadata": {"total_size": 0}, "weight_map": weight_map});
    std::fs::write(
        dst.join("model.safetensors.index.json"),
        serde_json::to_string_pretty(&index).unwrap(),
    )
    .unwrap();
    dst
}

#[test]
fn a_sharded_checkpoint_converts_like_a_single_file() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["bitnet-2b4t", "bitnet-1bitllm"] {
        let sharded = shard_fixture(dir.path(), name);
        // A stray safetensors file the index does not name is not read.
        std::fs::write(
            sharded.join("unrelated.safetensors"),
            b"not even safetensors",
        )
        .unwrap();
        let a = dir.path().join(format!("{name}-single.bitnet"));
        let b = dir.path().join(format!("{name}-sharded.bitnet"));
        convert_dir(&fixture(name), &a);
        convert_dir(&sharded, &b);
        let (a, b) = (BitnetFile::open(&a).unwrap(), BitnetFile::open(&b).unwrap());
        assert_eq!(a.tensors().len(), b.tensors().len());
        for (ta, tb) in a.tensors().iter().zip(b.tensors()) {
            assert_eq!((&ta.name, ta.crc32), (&tb.name, tb.crc32), "{name}");
        }
        let files: Vec<&str> = b
            .header()
            .provenance
            .files
            .iter()
            .map(|f| f.name.as_str())
            .collect();
        assert!(
            files.contains(&"model-00002-of-00002.safetensors"),
            "{files:?}"
        );
        assert!(files.contains(&"model.safetensors.index.json"), "{files:?}");
        assert!(!files.contains(&"unrelated.safetensors"), "{files:?}");
    }
}

#[test]
fn a_bad_shard_index_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let sharded = shard_fixture(dir.path(), "llama3-bitnet");
    let index_path = sharded.join("model.safetensors.index.json");
    let good = std::fs::read_to_string(&index_path).unwrap();
    let out = dir.path().join("m.bitnet");

    // The index names a shard that is not there.
    std::fs::remove_file(sharded.join("model-00002-of-00002.safetensors")).unwrap();
    let e = bitnet_convert::convert(&options(&sharded, &out))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("model.safetensors.index.json")
            && e.contains("model-00002-of-00002.safetensors"),
        "{e}"
    );
    // The index puts a tensor in the wrong shard.
    let sharded = shard_fixture(&dir.path().join("again"), "llama3-bitnet");
    let moved = good.replacen(
        "\"model.layers.1.mlp.up_proj.weight\": \"model-00002-of-00002.safetensors\"",
        "\"model.layers.1.mlp.up_proj.weight\": \"model-00001-of-00002.safetensors\"",
        1,
    );
    assert_ne!(moved, good);
    std::fs::write(sharded.join("model.safetensors.index.json"), moved).unwrap();
    let e = bitnet_convert::convert(&options(&sharded, &out))
        .unwrap_err()
        .to_string();
    assert!(e.contains("model.layers.1.mlp.up_proj.weight"), "{e}");
    assert!(!out.exists());
}

#[test]
fn the_independent_spec_reader_accepts_every_converted_file() {
    if bitnet_e2e::python3().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for (i, name) in FIXTURES.iter().enumerate() {
        let out = dir.path().join(format!("{name}.bitnet"));
        let mut o = options(&fixture(name), &out);
        // Vary the layout and the embedding encoding across the families.
        o.layout = TernaryLayout::from_label(
            [
                "tiled16", "i2s", "tiled4", "i2s64", "tiled32", "tiled8", "base3x16", "base3x4",
            ][i % 8],
        )
        .unwrap();
        if name.starts_with("llama3") {
            o.embeddings = EmbeddingsChoice::I8;
        }
        if name.starts_with("falcon3") {
            o.embeddings = EmbeddingsChoice::Q4;
        }
        convert(&o).unwrap();
        let run = bitnet_e2e::python3()
            .unwrap()
            .current_dir(&root)
            .arg("tools/spec-check/read_bitnet.py")
            .arg(&out)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&run.stdout);
        assert!(
            run.status.success() && stdout.starts_with("OK"),
            "{name}: {stdout}\n{}",
            String::from_utf8_lossy(&run.stderr)
        );
    }
}
