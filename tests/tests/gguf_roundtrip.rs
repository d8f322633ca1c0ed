//! GGUF import and export end to end: every family fixture survives `.bitnet` → GGUF (I2_S) →
//! `.bitnet` with identical ternary tensors, scales, full-precision tensors, model configuration
//! and tokenizer (Qwen2 and Qwen3 as llama.cpp's `qwen2` and `qwen3`, biases and q/k norms under
//! llama.cpp's names); TQ2_0 and TQ1_0 round-trip a model whose K dimensions are multiples of 256 (with
//! scales rounded to f16, values exact), and refuse the fixtures' K naming the tensor; the
//! Llama-architecture RoPE row permutation is undone on import; `q4_b32` embeddings travel as Q4_0
//! and come back byte for byte; bad files fail with errors that name what is wrong, and the parser
//! survives truncated and corrupted input; a Falcon-E file laid out as bitnet.cpp publishes it
//! (`llama`, I2_S, f16 embeddings, `falcon_e` pre-tokenizer, no `tokenizer.huggingface.json`)
//! imports and gives transformers' logits and tokens.

mod convert_support;

use std::path::Path;

use bitnet_convert::EmbeddingsChoice;
use bitnet_convert::gguf::blocks::GGML_TYPE_Q4_0;
use bitnet_convert::gguf::container::{self, GgufFile, OutTensor};
use bitnet_convert::gguf::vocab::Meta;
use bitnet_convert::gguf::{self, ExportOptions, ExportType, ImportOptions};
use bitnet_format::{
    Activation, BitnetFile, Encoding, FileWriter, GenerationDefaults, Header, ModelConfig,
    Provenance, Source, TensorSpec, TernaryLayout, TokenizerInfo, ternary,
};
use convert_support::{
    FIXTURES, assert_logits_like_transformers, assert_same_tensors,
    assert_tokenizes_like_transformers, convert_dir, fixture, ids, options, read_json, read_npy,
};
use gguf_rs_lib::format::metadata::MetadataValue;

fn export(input: &Path, output: &Path, ty: ExportType) -> gguf::ExportReport {
    gguf::export_gguf(&ExportOptions::new(input, output, ty)).unwrap()
}

fn import(input: &Path, output: &Path) -> gguf::ImportReport {
    gguf::import_gguf(&ImportOptions::new(input, output)).unwrap()
}

#[test]
fn every_family_fixture_round_trips_through_i2s_bit_exactly() {
    let dir = tempfile::tempdir().unwrap();
    for name in FIXTURES {
        let src = dir.path().join(format!("{name}.bitnet"));
        convert_dir(&fixture(name), &src);
        let g = dir.path().join(format!("{name}.gguf"));
        let report = export(&src, &g, ExportType::I2s);
        // Qwen's biases and q/k norms under the architectures and names llama.cpp reads them by.
        let bytes = std::fs::read(&g).unwrap();
        let written = GgufFile::parse(&bytes).unwrap();
        let (bias, qk_norm) = (name == "qwen2-bitnet", name == "qwen3-bitnet");
        let arch = match (bias, qk_norm) {
            (true, _) => "qwen2",
            (_, true) => "qwen3",
            _ => report.architecture.as_str(),
        };
        assert_eq!(report.architecture, arch, "{name}");
        for (tensor, present) in [
            ("blk.0.attn_q.bias", bias),
            ("blk.1.attn_v.bias", bias),
            ("blk.0.attn_q_norm.weight", qk_norm),
            ("blk.1.attn_k_norm.weight", qk_norm),
        ] {
            assert_eq!(
                written.tensor(tensor).is_some(),
                present,
                "{name}: {tensor}"
            );
        }
        assert!(
            written
                .tensors
                .iter()
                .all(|t| !t.name.ends_with("_bias.weight")),
            "{name}"
        );
        let back = dir.path().join(format!("{name}.back.bitnet"));
        let imported = import(&g, &back);
        assert_eq!(imported.architecture, report.architecture, "{name}");
        assert_same_tensors(&src, &back, |s| s);
        let (ha, hb) = (
            BitnetFile::open(&src).unwrap().header().clone(),
            BitnetFile::open(&back).unwrap().header().clone(),
        );
        assert_eq!(ha.model, hb.model, "{name}: model configuration");
        assert_eq!(ha.generation, hb.generation, "{name}: generation defaults");
        let (ta, tb) = (ha.tokenizer.unwrap(), hb.tokenizer.unwrap());
        assert_eq!(ta.tokenizer_json.get(), tb.tokenizer_json.get(), "{name}");
        assert_eq!(
            (
                ta.chat_template,
                ta.bos_token_id,
                ta.eos_token_ids,
                ta.pad_token_id,
                ta.add_bos_token
            ),
            (
                tb.chat_template,
                tb.bos_token_id,
                tb.eos_token_ids,
                tb.pad_token_id,
                tb.add_bos_token
            ),
            "{name}"
        );
        assert!(matches!(hb.provenance.source, Source::Gguf { .. }));
        // The fixtures' K (96, 120, 136, 200) cannot be TQ-encoded: refused, naming the tensor.
        for ty in [ExportType::Tq2_0, ExportType::Tq1_0] {
            let err = gguf::export_gguf(&ExportOptions::new(&src, dir.path().join("x.gguf"), ty))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("blk.0.") && err.contains("not a multiple of 256"),
                "{err}"
            );
            assert!(!dir.path().join("x.gguf").exists());
        }
    }
}

/// tiiuae/Falcon-E-*-GGUF ships bitnet.cpp's `ggml-model-i2_s.gguf`: architecture `llama`, I2_S
/// projections, f16 `token_embd`/`output`, `tokenizer.ggml.pre = "falcon_e"` and no
/// `tokenizer.huggingface.json`. Our export of the Falcon-E fixture is written that way; imported
/// back, with the tokenizer rebuilt from `tokenizer.ggml.*`, it must give transformers' logits and
/// tokenize as transformers' tokenizer did.
#[test]
fn a_falcon_e_gguf_as_bitnet_cpp_writes_it_runs_like_transformers() {
    use bitnet_run::kernels::KernelPath;
    use bitnet_run::model::{KvType, KvTypes, Logits, Model, Session};
    use bitnet_run::tokenizer::Tokenizer;

    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("falcon-e.bitnet");
    let mut o = options(&fixture("falcon-e"), &src);
    o.embeddings = EmbeddingsChoice::F16;
    bitnet_convert::convert(&o).unwrap();
    let g = dir.path().join("ggml-model-i2_s.gguf");
    let mut e = ExportOptions::new(&src, &g, ExportType::I2s);
    e.embed_hf_tokenizer = false;
    let exported = gguf::export_gguf(&e).unwrap();
    assert!(
        exported.notes.iter().any(|n| n.contains("falcon_e")),
        "{:?}",
        exported.notes
    );
    let bytes = std::fs::read(&g).unwrap();
    let file = GgufFile::parse(&bytes).unwrap();
    let text = |k: &str| match file.get(k) {
        Some(MetadataValue::String(s)) => s.clone(),
        other => panic!("{k}: {other:?}"),
    };
    assert_eq!(text("general.architecture"), "llama");
    assert_eq!(text("tokenizer.ggml.model"), "gpt2");
    assert_eq!(text("tokenizer.ggml.pre"), "falcon_e");
    assert!(file.get("tokenizer.huggingface.json").is_none());
    assert_eq!(file.tensor("token_embd.weight").unwrap().ggml_type, 1);
    assert_eq!(file.tensor("output.weight").unwrap().ggml_type, 1);
    assert_eq!(file.tensor("blk.1.ffn_down.weight").unwrap().ggml_type, 36);
    drop(file);

    // The family comes from the pre-tokenizer, not from general.name.
    let renamed = dir.path().join("renamed.gguf");
    edited(&g, &renamed, |meta, _| {
        for (k, v) in meta.iter_mut() {
            if k == "general.name" {
                *v = container::string("ggml-model-i2_s");
            }
        }
    });
    let back = dir.path().join("back.bitnet");
    let imported = import(&renamed, &back);
    assert!(
        imported.summary.notes.iter().any(|n| n.contains("rebuilt")),
        "{:?}",
        imported.summary.notes
    );
    let file = BitnetFile::open(&back).unwrap();
    assert_eq!(file.header().model.family, "falcon-e");
    assert_eq!(
        file.header().model,
        BitnetFile::open(&src).unwrap().header().model
    );

    let reference = read_json(&fixture("falcon-e").join("reference.json"));
    let tok = Tokenizer::from_info(file.header().tokenizer.as_ref()).unwrap();
    assert_tokenizes_like_transformers(&tok, &fixture("falcon-e"));

    let f32_cache = KvTypes {
        keys: KvType::F32,
        values: KvType::F32,
    };
    for path in KernelPath::available() {
        let model = Model::load(BitnetFile::open(&back).unwrap(), path, 2).unwrap();
        let vocab = model.config.vocab_size as usize;
        for seq in reference["sequences"].as_array().unwrap() {
            let tokens = ids(&seq["token_ids"]);
            let (shape, want) =
                read_npy(&fixture("falcon-e").join(seq["logits_file"].as_str().unwrap()));
            assert_eq!(shape, [tokens.len(), vocab]);
            let got = Session::new(&model, tokens.len(), f32_cache)
                .forward(&tokens, Logits::All)
                .unwrap();
            let label = format!("{:?} {path:?}", seq["name"]);
            assert_logits_like_transformers(&got, &want, vocab, &label);
        }
    }
}

fn xorshift(seed: u64) -> impl FnMut() -> u64 {
    let mut s = seed | 1;
    move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    }
}

/// A small model whose every K is a multiple of 256: `bitnet` (sub-norms, ReLU², tied) or `llama`
/// (no sub-norms, SiLU, untied), with the 2B-4T fixture's tokenizer.
fn tq_model(path: &Path, llama: bool, scale: impl Fn(usize) -> f32) {
    let tok_src = tempfile::tempdir().unwrap();
    let tok_file = tok_src.path().join("t.bitnet");
    convert_dir(&fixture("bitnet-2b4t"), &tok_file);
    let tokenizer = BitnetFile::open(&tok_file)
        .unwrap()
        .header()
        .tokenizer
        .clone();
    tq_model_with(path, llama, tokenizer, scale);
}

fn tq_model_with(
    path: &Path,
    llama: bool,
    tokenizer: Option<TokenizerInfo>,
    scale: impl Fn(usize) -> f32,
) {
    let model = ModelConfig {
        family: if llama { "llama-bitnet" } else { "bitnet-2b4t" }.into(),
        hidden_size: 256,
        intermediate_size: 512,
        num_layers: 2,
        num_heads: 4,
        num_kv_heads: 2,
        head_dim: 64,
        vocab_size: 352,
        context_length: 128,
        rope_theta: 500000.0,
        rope_scaling: None,
        rms_norm_eps: 1e-5,
        activation: if llama {
            Activation::Silu
        } else {
            Activation::Relu2
        },
        sub_norms: !llama,
        tied_embeddings: !llama,
        attention_bias: false,
        qk_norm: false,
    };
    let tensors = bitnet_convert::plan::expected_tensors(&model, model.tied_embeddings);
    let layout = TernaryLayout::Tiled { tile_rows: 16 };
    let specs: Vec<TensorSpec> = tensors
        .iter()
        .map(|(n, shape)| {
            let e = if n.starts_with("blk.") && shape.len() == 2 {
                Encoding::Ternary(layout)
            } else if shape.len() == 2 {
                Encoding::F16
            } else {
                Encoding::F32
            };
            TensorSpec::new(n, e, shape)
        })
        .collect();
    let header = Header {
        model,
        tokenizer,
        generation: GenerationDefaults::default(),
        provenance: Provenance {
            source: Source::Synthetic {
                like: "test".into(),
                seed: 1,
            },
            files: vec![],
            converter: "test".into(),
            options: Default::default(),
        },
        tensors: vec![],
    };
    let w = FileWriter::create(path, header, &specs).unwrap();
    let mut rng = xorshift(7);
    for (i, s) in specs.iter().enumerate() {
        let n: u64 = s.shape.iter().product();
        let bytes = match s.encoding {
            Encoding::Ternary(l) => {
                let v: Vec<i8> = (0..n).map(|_| (rng() % 3) as i8 - 1).collect();
                ternary::pack(l, s.shape[0], s.shape[1], &v, scale(i)).unwrap()
            }
            Encoding::F16 => (0..n)
                .flat_map(|_| {
                    half::f16::from_f32((rng() % 1000) as f32 / 500.0 - 1.0).to_le_bytes()
                })
                .collect(),
            _ => (0..n)
                .flat_map(|_| (1.0 + (rng() % 100) as f32 / 1000.0).to_le_bytes())
                .collect(),
        };
        w.write_tensor(&s.name, &bytes).unwrap();
    }
    w.finish().unwrap();
}

#[test]
fn tq2_0_and_tq1_0_round_trip_values_exactly_and_scales_to_f16() {
    let dir = tempfile::tempdir().unwrap();
    for llama in [false, true] {
        // Scales not representable in f16 (the usual case: f32 mean|W|).
        let src = dir.path().join(format!("m{llama}.bitnet"));
        tq_model(&src, llama, |i| 0.0123457 + i as f32 * 1e-4);
        for ty in [ExportType::Tq2_0, ExportType::Tq1_0, ExportType::I2s] {
            let g = dir.path().join(format!("m{llama}{ty:?}.gguf"));
            let report = export(&src, &g, ty);
            let arch = match (llama, ty) {
                (true, _) => "llama",
                (false, ExportType::I2s) => "bitnet-b1.58",
                (false, _) => "bitnet",
            };
            assert_eq!(report.architecture, arch);
            let back = dir.path().join(format!("m{llama}{ty:?}.bitnet"));
            import(&g, &back);
            if ty == ExportType::I2s {
                assert_same_tensors(&src, &back, |s| s);
            } else {
                assert_same_tensors(&src, &back, |s| half::f16::from_f32(s).to_f32());
                // A TQ round trip of the re-imported file is exact (its scales are f16 already).
                let g2 = dir.path().join("again.gguf");
                export(&back, &g2, ty);
                let back2 = dir.path().join("again.bitnet");
                import(&g2, &back2);
                assert_same_tensors(&back, &back2, |s| s);
                std::fs::remove_file(&g2).unwrap();
                std::fs::remove_file(&back2).unwrap();
            }
        }
    }
}

#[test]
fn q4_embeddings_export_as_q4_0_and_import_back_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/demo");
    let src = dir.path().join("demo-q4.bitnet");
    let mut o = options(&demo, &src);
    o.embeddings = EmbeddingsChoice::Q4;
    bitnet_convert::convert(&o).unwrap();
    for ty in [ExportType::I2s, ExportType::Tq2_0] {
        let g = dir.path().join(format!("{ty:?}.gguf"));
        export(&src, &g, ty);
        let bytes = std::fs::read(&g).unwrap();
        let file = GgufFile::parse(&bytes).unwrap();
        assert_eq!(
            file.tensor("token_embd.weight").unwrap().ggml_type,
            GGML_TYPE_Q4_0
        );
        let back = dir.path().join(format!("{ty:?}.bitnet"));
        import(&g, &back);
        if ty == ExportType::I2s {
            assert_same_tensors(&src, &back, |s| s);
        } else {
            assert_same_tensors(&src, &back, |s| half::f16::from_f32(s).to_f32());
        }
    }

    // A float GGUF imported with --embeddings q4 quantizes exactly as converting the checkpoint.
    let plain = dir.path().join("demo.bitnet");
    convert_dir(&demo, &plain);
    let g = dir.path().join("plain.gguf");
    export(&plain, &g, ExportType::I2s);
    let back = dir.path().join("plain-q4.bitnet");
    let mut io = ImportOptions::new(&g, &back);
    io.embeddings = EmbeddingsChoice::Q4;
    gguf::import_gguf(&io).unwrap();
    let (a, b) = (
        BitnetFile::open(&src).unwrap(),
        BitnetFile::open(&back).unwrap(),
    );
    let (ta, tb) = (
        a.tensor("token_embd").unwrap(),
        b.tensor("token_embd").unwrap(),
    );
    assert_eq!(tb.info.encoding, Encoding::Q4B32);
    assert!(ta.data == tb.data, "token_embd bytes differ");

    // A hidden size that is not a multiple of 32 (the 1bitLLM fixture's 120) is refused by name.
    let odd = dir.path().join("1bitllm.bitnet");
    convert_dir(&fixture("bitnet-1bitllm"), &odd);
    let g = dir.path().join("1bitllm.gguf");
    export(&odd, &g, ExportType::I2s);
    let out = dir.path().join("1bitllm-q4.bitnet");
    let mut io = ImportOptions::new(&g, &out);
    io.embeddings = EmbeddingsChoice::Q4;
    let err = gguf::import_gguf(&io).unwrap_err().to_string();
    assert!(
        err.contains("token_embd.weight") && err.contains("multiple of 32, not 120"),
        "{err}"
    );
    assert!(!out.exists());
}

#[test]
fn relu2_exports_record_the_activation_and_warn_that_llama_cpp_ignores_it() {
    // tools/gguf/llama_cpp_check.sh found that llama.cpp runs `bitnet` with SiLU whatever the keys say.
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("m.bitnet");
    tq_model(&src, false, |_| 0.5);
    for (ty, arch, warns) in [
        (ExportType::Tq2_0, "bitnet", true),
        (ExportType::I2s, "bitnet-b1.58", false),
    ] {
        let g = dir.path().join(format!("m{ty:?}.gguf"));
        let report = export(&src, &g, ty);
        let warning = report.warnings.iter().any(|n| n.contains("SiLU"));
        assert_eq!(warning, warns, "{ty:?}: {:?}", report.warnings);
        let bytes = std::fs::read(&g).unwrap();
        let file = GgufFile::parse(&bytes).unwrap();
        let key = format!("{arch}.hidden_activation");
        assert_eq!(file.meta_str(&key), Some("relu2"), "{ty:?}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&g).unwrap().permissions().mode() & 0o777;
            assert_eq!(
                mode, 0o644,
                "{ty:?}: an ordinary readable file, not a private temporary"
            );
        }
    }
    let silu = dir.path().join("silu.bitnet");
    tq_model(&silu, true, |_| 0.5);
    let report = export(&silu, &dir.path().join("silu.gguf"), ExportType::Tq2_0);
    assert!(
        !report.warnings.iter().any(|n| n.contains("SiLU")),
        "{:?}",
        report.warnings
    );
}

#[test]
fn a_model_without_tokenizer_exports_as_no_vocab_and_imports_without_one() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("m.bitnet");
    tq_model_with(&src, false, None, |_| 0.5);
    let g = dir.path().join("m.gguf");
    export(&src, &g, ExportType::I2s);
    let bytes = std::fs::read(&g).unwrap();
    let file = GgufFile::parse(&bytes).unwrap();
    assert_eq!(file.meta_str("tokenizer.ggml.model"), Some("no_vocab"));
    let back = dir.path().join("back.bitnet");
    import(&g, &back);
    assert!(
        BitnetFile::open(&back)
            .unwrap()
            .header()
            .tokenizer
            .is_none()
    );
    assert_same_tensors(&src, &back, |s| s);
}

#[test]
fn llama_architecture_stores_q_and_k_in_interleaved_rope_order() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("m.bitnet");
    tq_model(&src, true, |_| 0.5);
    let g = dir.path().join("m.gguf");
    export(&src, &g, ExportType::Tq2_0);
    let bytes = std::fs::read(&g).unwrap();
    let file = GgufFile::parse(&bytes).unwrap();
    let bitnet = BitnetFile::open(&src).unwrap();
    let (orig, _) = bitnet
        .tensor("blk.0.attn_q")
        .unwrap()
        .unpack_ternary()
        .unwrap();
    let t = file.tensor("blk.0.attn_q.weight").unwrap();
    let (stored, _) = gguf::codec::decode_tq(gguf::codec::Tq::Tq2_0, file.data(t)).unwrap();
    let (d, cols) = (64usize, 256usize);
    // Row 2i + j of a head in the GGUF is row j·d/2 + i of the Hugging Face order.
    for (gg, hf) in [(1usize, 32usize), (2, 1), (3, 33), (64 + 5, 64 + 32 + 2)] {
        assert_eq!(
            &stored[gg * cols..(gg + 1) * cols],
            &orig[hf * cols..(hf + 1) * cols],
            "GGUF row {gg}"
        );
    }
    // attn_v is not permuted.
    let (v, _) = bitnet
        .tensor("blk.0.attn_v")
        .unwrap()
        .unpack_ternary()
        .unwrap();
    let t = file.tensor("blk.0.attn_v.weight").unwrap();
    assert_eq!(
        gguf::codec::decode_tq(gguf::codec::Tq::Tq2_0, file.data(t))
            .unwrap()
            .0,
        v
    );
    let _ = d;
}

/// Write a GGUF whose metadata and tensors are those of `src` with `edit` applied.
fn edited(
    src: &Path,
    dest: &Path,
    edit: impl Fn(&mut Vec<(String, MetadataValue)>, &mut Vec<(OutTensor, Vec<u8>)>),
) {
    let bytes = std::fs::read(src).unwrap();
    let file = GgufFile::parse(&bytes).unwrap();
    let mut meta = file.metadata.clone();
    let mut tensors: Vec<(OutTensor, Vec<u8>)> = file
        .tensors
        .iter()
        .map(|t| {
            (
                OutTensor {
                    name: t.name.clone(),
                    dims: t.dims.clone(),
                    ggml_type: t.ggml_type,
                },
                file.data(t).to_vec(),
            )
        })
        .collect();
    edit(&mut meta, &mut tensors);
    let (infos, datas): (Vec<OutTensor>, Vec<Vec<u8>>) = tensors.into_iter().unzip();
    container::write::<gguf::GgufError>(dest, &meta, &infos, |i| Ok(datas[i].clone())).unwrap();
}

fn import_err(input: &Path, dir: &Path) -> String {
    let out = dir.join("never.bitnet");
    let e = gguf::import_gguf(&ImportOptions::new(input, &out))
        .unwrap_err()
        .to_string();
    assert!(!out.exists(), "nothing is written on error");
    e
}

#[test]
fn unsupported_or_inconsistent_files_fail_naming_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("m.bitnet");
    tq_model(&src, false, |_| 0.25);
    let g = dir.path().join("m.gguf");
    export(&src, &g, ExportType::Tq2_0);

    let bad = dir.path().join("arch.gguf");
    edited(&g, &bad, |m, _| {
        m.iter_mut()
            .find(|(k, _)| k == "general.architecture")
            .unwrap()
            .1 = MetadataValue::String("gpt2".into());
    });
    let e = import_err(&bad, dir.path());
    assert!(e.contains("architecture \"gpt2\" is not supported"), "{e}");

    // Two blocks of one tensor with different scales.
    let bad = dir.path().join("scales.gguf");
    edited(&g, &bad, |_, t| {
        let (_, data) = t
            .iter_mut()
            .find(|(i, _)| i.name == "blk.1.ffn_up.weight")
            .unwrap();
        let d = half::f16::from_f32(0.5).to_le_bytes();
        data[64..66].copy_from_slice(&d);
    });
    let e = import_err(&bad, dir.path());
    assert!(
        e.contains("blk.1.ffn_up.weight") && e.contains("different scales"),
        "{e}"
    );

    // A k-quant projection.
    let bad = dir.path().join("q8.gguf");
    edited(&g, &bad, |_, t| {
        let (i, data) = t
            .iter_mut()
            .find(|(i, _)| i.name == "blk.0.attn_k.weight")
            .unwrap();
        i.ggml_type = 8; // Q8_0: 34 bytes per 32
        let n: u64 = i.dims.iter().product();
        *data = vec![0u8; (n / 32 * 34) as usize];
    });
    let e = import_err(&bad, dir.path());
    assert!(
        e.contains("blk.0.attn_k.weight") && e.contains("Q8_0"),
        "{e}"
    );

    // An unknown tensor type id.
    let mut bytes = std::fs::read(&g).unwrap();
    let file = GgufFile::parse(&bytes).unwrap();
    let name = b"blk.0.attn_q.weight";
    let at = bytes.windows(name.len()).position(|w| w == name).unwrap() + name.len();
    let n_dims = file.tensor("blk.0.attn_q.weight").unwrap().dims.len();
    let type_at = at + 4 + 8 * n_dims;
    bytes[type_at..type_at + 4].copy_from_slice(&77u32.to_le_bytes());
    let bad = dir.path().join("type.gguf");
    std::fs::write(&bad, &bytes).unwrap();
    let e = import_err(&bad, dir.path());
    assert!(
        e.contains("blk.0.attn_q.weight") && e.contains("unknown type 77"),
        "{e}"
    );

    // Not GGUF at all.
    let bad = dir.path().join("not.gguf");
    std::fs::write(&bad, b"PK\x03\x04 zip").unwrap();
    assert!(import_err(&bad, dir.path()).contains("not a GGUF file"));
}

/// bitnet.cpp's `llama-quantize` encodes an I2_S tensor in whole blocks of 128 only and stores
/// the scale right after the first n/4 bytes, so a tensor whose element count is not a multiple
/// of 128 loses its last values. Seen with its own build (microsoft/BitNet @ 1876a3e, x86) on the
/// 1bitLLM fixture (K = 120): blk.0.attn_q's 14400 elements give 112 whole blocks, bytes
/// 3584..3600 left zero and the scale at byte 3600. Such a file is refused, saying why.
#[test]
fn an_i2s_tensor_that_bitnet_cpp_cannot_write_whole_is_refused_saying_why() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("m.bitnet");
    convert_dir(&fixture("bitnet-1bitllm"), &src);
    let g = dir.path().join("m.gguf");
    export(&src, &g, ExportType::I2s);
    let bad = dir.path().join("bitnet_cpp.gguf");
    edited(&g, &bad, |_, tensors| {
        for (info, data) in tensors.iter_mut().filter(|(i, _)| i.ggml_type == 36) {
            let n = info.dims.iter().product::<u64>() as usize;
            if n.is_multiple_of(128) {
                continue;
            }
            // Our layout pads the last block (code 1) and puts the scale after it; bitnet.cpp's
            // leaves the partial block unwritten (zero) and puts the scale at n/4.
            let padded = n.div_ceil(128) * 32;
            let scale: [u8; 4] = data[padded..padded + 4].try_into().unwrap();
            data[n / 128 * 32..].fill(0);
            data[n / 4..n / 4 + 4].copy_from_slice(&scale);
        }
    });
    let e = import_err(&bad, dir.path());
    assert!(
        e.contains("blk.0.attn_q.weight")
            && e.contains("its 14400 elements are not a multiple of the I2_S block of 128")
            && e.contains("llama-quantize cannot write")
            && e.contains("the last 64 values are lost"),
        "{e}"
    );
}

#[test]
fn the_parser_survives_truncation_and_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("m.bitnet");
    convert_dir(&fixture("bitnet-2b4t"), &src);
    let g = dir.path().join("m.gguf");
    export(&src, &g, ExportType::I2s);
    let bytes = std::fs::read(&g).unwrap();
    let options = ImportOptions::new(&g, dir.path().join("unused.bitnet"));
    let mut cut = 0;
    while cut < bytes.len() {
        assert!(
            gguf::import_bytes(&g, &bytes[..cut], &options).is_err(),
            "prefix {cut}"
        );
        cut += 1 + cut / 16;
    }
    let mut rng = xorshift(99);
    for _ in 0..400 {
        let mut b = bytes.clone();
        for _ in 0..1 + rng() % 4 {
            let i = (rng() % b.len().min(40_000) as u64) as usize;
            b[i] = rng() as u8;
        }
        let _ = gguf::import_bytes(&g, &b, &options);
    }
}

/// A llama GGUF (no tokenizer) whose `token_embd` and `output` have 4100 rows of 256: more than
/// the import's 2^20-element pieces, so they are converted in two. `token_embd` holds `embd`
/// (ggml type `ty`), `output` the f32 values `out`. Written as `dir/name`.
fn large_embeddings_gguf(
    dir: &Path,
    name: &str,
    ty: u32,
    embd: Vec<u8>,
    out: &[f32],
) -> std::path::PathBuf {
    let small = dir.join("small.gguf");
    if !small.exists() {
        let src = dir.join("small.bitnet");
        tq_model_with(&src, true, None, |_| 0.5);
        export(&src, &small, ExportType::I2s);
    }
    let g = dir.join(name);
    let out: Vec<u8> = out.iter().flat_map(|x| x.to_le_bytes()).collect();
    edited(&small, &g, |_, tensors| {
        for (t, data) in tensors.iter_mut() {
            if t.name == "token_embd.weight" {
                (t.dims, t.ggml_type, *data) = (vec![256, 4100], ty, embd.clone());
            } else if t.name == "output.weight" {
                (t.dims, t.ggml_type, *data) = (vec![256, 4100], 0, out.clone());
            }
        }
    });
    g
}

#[test]
fn embeddings_larger_than_one_piece_import_as_whole_tensor_encoders_give() {
    use bitnet_convert::floats::{FloatKind, Floats};
    use bitnet_convert::quantize::{i8_row, q4_b32};
    let dir = tempfile::tempdir().unwrap();
    let (rows, cols) = (4100usize, 256usize);
    let mut rng = xorshift(11);
    let values: Vec<f32> = (0..rows * cols)
        .map(|_| (rng() % 20001) as f32 / 10000.0 - 1.0)
        .collect();
    let raw: Vec<u8> = values.iter().flat_map(|x| x.to_le_bytes()).collect();
    let whole = Floats::new(FloatKind::F32, &raw);
    // Q4_0 blocks with small finite scales for token_embd.
    let q4_0: Vec<u8> = (0..rows * cols / 32)
        .flat_map(|_| {
            let mut b = half::f16::from_f32((rng() % 100) as f32 / 1000.0)
                .to_le_bytes()
                .to_vec();
            b.extend((0..16).map(|_| rng() as u8));
            b
        })
        .collect();
    let g = large_embeddings_gguf(
        dir.path(),
        "q4_0.gguf",
        GGML_TYPE_Q4_0,
        q4_0.clone(),
        &values,
    );

    let i8_expected = {
        let scales = i8_row::row_scales(whole, rows, cols).unwrap();
        let mut out: Vec<u8> = scales.iter().flat_map(|s| s.to_le_bytes()).collect();
        out.resize(
            bitnet_format::align_up(4 * rows as u64).unwrap() as usize,
            0,
        );
        for (r, &s) in scales.iter().enumerate() {
            i8_row::quantize_row(whole.slice(r * cols, (r + 1) * cols), s, &mut out);
        }
        out
    };
    let q4_expected = {
        let scales = q4_b32::scales(whole, rows, cols).unwrap();
        let mut out = q4_b32::scale_bytes(&scales);
        let head = out.len();
        out.resize(head + rows * cols / 2, 0);
        q4_b32::pack_rows(whole, &scales, cols, 0..rows, &mut out[head..]);
        out
    };
    let narrow = |bf: bool| -> Vec<u8> {
        values
            .iter()
            .flat_map(|&x| {
                if bf {
                    half::bf16::from_f32(x).to_le_bytes()
                } else {
                    half::f16::from_f32(x).to_le_bytes()
                }
            })
            .collect()
    };
    for (choice, encoding, expected) in [
        (EmbeddingsChoice::Source, Encoding::F32, raw.clone()),
        (EmbeddingsChoice::F16, Encoding::F16, narrow(false)),
        (EmbeddingsChoice::Bf16, Encoding::Bf16, narrow(true)),
        (EmbeddingsChoice::I8, Encoding::I8Row, i8_expected),
        (EmbeddingsChoice::Q4, Encoding::Q4B32, q4_expected),
    ] {
        let back = dir.path().join(format!("{choice:?}.bitnet"));
        let mut io = ImportOptions::new(&g, &back);
        io.embeddings = choice;
        gguf::import_gguf(&io).unwrap();
        let file = BitnetFile::open(&back).unwrap();
        let output = file.tensor("output").unwrap();
        assert_eq!(output.info.encoding, encoding, "{choice:?}");
        assert!(
            output.data == expected.as_slice(),
            "{choice:?}: bytes differ"
        );
        if choice == EmbeddingsChoice::Source {
            // Q4_0 comes back as q4_b32 holding the same blocks.
            let embd = file.tensor("token_embd").unwrap();
            assert_eq!(embd.info.encoding, Encoding::Q4B32);
            assert!(gguf::blocks::q4_b32_to_q4_0(embd.data, rows, cols) == q4_0);
        }
    }

    // Errors name the element by its index in the whole tensor, and a NaN anywhere is reported
    // before an overflow in an earlier piece.
    let mut bad = values.clone();
    bad[3] = 1e10;
    bad[4096 * cols + 5] = f32::NAN;
    let embd: Vec<u8> = bad.iter().flat_map(|x| x.to_le_bytes()).collect();
    let g = large_embeddings_gguf(dir.path(), "nan.gguf", 0, embd, &values);
    for choice in [EmbeddingsChoice::F16, EmbeddingsChoice::Q4] {
        let out = dir.path().join("never.bitnet");
        let mut io = ImportOptions::new(&g, &out);
        io.embeddings = choice;
        let err = gguf::import_gguf(&io).unwrap_err().to_string();
        let nan_at = format!(
            "token_embd.weight (F32): element {} is NaN",
            4096 * cols + 5
        );
        assert!(err.contains(&nan_at), "{choice:?}: {err}");
        assert!(!out.exists());
    }
    bad[4096 * cols + 5] = 0.0;
    let embd: Vec<u8> = bad.iter().flat_map(|x| x.to_le_bytes()).collect();
    let g = large_embeddings_gguf(dir.path(), "overflow.gguf", 0, embd, &values);
    let mut io = ImportOptions::new(&g, dir.path().join("never.bitnet"));
    io.embeddings = EmbeddingsChoice::F16;
    let err = gguf::import_gguf(&io).unwrap_err().to_string();
    assert!(err.contains("element 3 overflows f16"), "{err}");
}
