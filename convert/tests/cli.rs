//! The `bitnet-convert` binary: convert, inspect and verify from the command line, its exit codes and
//! messages, and the Hugging Face environment variables (against a local stand-in for the Hub).

#[path = "../../tests/tests/convert_support/hub.rs"]
mod hub;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use bitnet_convert::gguf::container::{
    self, GGML_TYPE_F16, GGML_TYPE_F32, GGML_TYPE_I2_S, GgufFile, OutTensor, string,
};
use bitnet_convert::plan::expected_tensors;
use bitnet_format::{
    Activation, BitnetFile, Encoding, FileWriter, GenerationDefaults, Header, ModelConfig,
    Provenance, Source, TensorSpec, TernaryLayout, ternary,
};
use gguf_rs_lib::format::metadata::MetadataValue;
use hub::{MockHub, MockRepo};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/fixtures")
        .join(name)
}

/// The binary with a clean Hugging Face environment (no token, no endpoint, a private cache).
fn bin(hf_home: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_bitnet-convert"));
    for var in [
        "HF_TOKEN",
        "HF_ENDPOINT",
        "HF_HUB_OFFLINE",
        "HF_HUB_CACHE",
        "http_proxy",
        "https_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "all_proxy",
    ] {
        c.env_remove(var);
    }
    c.env("HF_HOME", hf_home);
    c
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn convert_prints_a_summary_then_inspect_and_verify_read_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("llama.bitnet");
    let o = bin(dir.path())
        .arg(fixture("llama3-bitnet"))
        .args([
            "-o",
            out.to_str().unwrap(),
            "--threads",
            "2",
            "--layout",
            "i2s",
        ])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "{stdout}\n{stderr}");
    for needle in [
        "tensors",
        "parameters",
        "bytes in",
        "bytes out",
        "bits per weight",
        "time",
        "llama-bitnet",
    ] {
        assert!(stdout.contains(needle), "{needle}: {stdout}");
    }

    let o = bin(dir.path()).arg("inspect").arg(&out).output().unwrap();
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "{stderr}");
    for needle in [
        "format      1.0",
        "hidden_size",
        "provenance",
        "directory",
        "token_embd",
        "blk.1.ffn_down",
        "i2s128",
        "output_norm",
        "output ",
        "layout",
        "eos_token_ids",
    ] {
        assert!(stdout.contains(needle), "{needle}: {stdout}");
    }

    let o = bin(dir.path()).arg("verify").arg(&out).output().unwrap();
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "{stderr}");
    assert!(stdout.contains("OK"), "{stdout}");
}

#[test]
fn an_existing_output_needs_force() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.bitnet");
    std::fs::write(&out, b"keep me").unwrap();
    let run = |force: bool| {
        let mut c = bin(dir.path());
        c.arg(fixture("falcon3-bitnet")).arg("-o").arg(&out);
        if force {
            c.arg("--force");
        }
        c.output().unwrap()
    };
    let o = run(false);
    let (_, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("m.bitnet") && stderr.contains("--force"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(&out).unwrap(), b"keep me");
    let o = run(true);
    assert!(o.status.success(), "{}", text(&o).1);
    assert_ne!(std::fs::read(&out).unwrap(), b"keep me");
}

#[test]
fn verify_exits_non_zero_naming_the_corrupted_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.bitnet");
    convert_fixture(dir.path(), "bitnet-1bitllm", &out);
    let file = bitnet_format::BitnetFile::open(&out).unwrap();
    let offset = file.index().get("blk.0.attn_v").unwrap().offset;
    drop(file);
    let mut bytes = std::fs::read(&out).unwrap();
    bytes[offset as usize + 80] ^= 0x01;
    std::fs::write(&out, bytes).unwrap();
    let o = bin(dir.path()).arg("verify").arg(&out).output().unwrap();
    let (_, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("blk.0.attn_v") && stderr.contains("checksum"),
        "{stderr}"
    );
}

#[test]
fn errors_name_the_culprit_and_leave_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.bitnet");
    // An unknown layout is refused by the argument parser.
    let o = bin(dir.path())
        .arg(fixture("bitnet-2b4t"))
        .args(["-o", out.to_str().unwrap(), "--layout", "tiled5"])
        .output()
        .unwrap();
    let (_, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--layout") && stderr.contains("tiled5"),
        "{stderr}"
    );
    // A source that is neither a directory nor a repo id.
    let o = bin(dir.path())
        .args(["./no/such/checkpoint", "-o", out.to_str().unwrap()])
        .output()
        .unwrap();
    let (_, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("./no/such/checkpoint"), "{stderr}");
    // Missing -o.
    let o = bin(dir.path())
        .arg(fixture("bitnet-2b4t"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(!out.exists());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn hugging_face_environment_variables_are_honoured() {
    let mut gated = MockRepo::from_dir(
        "tiiuae/Falcon3-1B-Instruct-1.58bit",
        &fixture("falcon3-bitnet"),
    );
    gated.gated_token = Some("hf_test_token".into());
    let hub = MockHub::start(vec![
        MockRepo::from_dir("microsoft/bitnet-b1.58-2B-4T", &fixture("bitnet-2b4t")),
        gated,
    ]);
    let home = tempfile::tempdir().unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let convert = |repo: &str, out: &str, extra: &[(&str, &str)]| {
        let mut c = bin(home.path());
        c.env("HF_ENDPOINT", hub.endpoint());
        for (k, v) in extra {
            c.env(k, v);
        }
        c.arg(repo).arg("-o").arg(out_dir.path().join(out));
        c.output().unwrap()
    };

    let o = convert("microsoft/bitnet-b1.58-2B-4T", "a.bitnet", &[]);
    assert!(o.status.success(), "{}", text(&o).1);
    assert!(
        home.path()
            .join("hub/models--microsoft--bitnet-b1.58-2B-4T/refs/main")
            .is_file()
    );
    // HF_HUB_OFFLINE=1: the cache alone, no request.
    let before = hub.requests().len();
    let o = convert(
        "microsoft/bitnet-b1.58-2B-4T",
        "b.bitnet",
        &[("HF_HUB_OFFLINE", "1")],
    );
    assert!(o.status.success(), "{}", text(&o).1);
    assert_eq!(hub.requests().len(), before);
    // A repo never fetched is not in the cache.
    let o = convert(
        "tiiuae/Falcon3-1B-Instruct-1.58bit",
        "c.bitnet",
        &[("HF_HUB_OFFLINE", "1")],
    );
    let (_, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr.contains("HF_HUB_OFFLINE") && stderr.contains("Falcon3"),
        "{stderr}"
    );
    // Gated: refused without HF_TOKEN, accepted with it.
    let o = convert("tiiuae/Falcon3-1B-Instruct-1.58bit", "c.bitnet", &[]);
    let (_, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr.contains("401") && stderr.contains("HF_TOKEN"),
        "{stderr}"
    );
    let o = convert(
        "tiiuae/Falcon3-1B-Instruct-1.58bit",
        "c.bitnet",
        &[("HF_TOKEN", "hf_test_token")],
    );
    assert!(o.status.success(), "{}", text(&o).1);
    let file = bitnet_format::BitnetFile::open(out_dir.path().join("c.bitnet")).unwrap();
    assert_eq!(file.header().model.family, "falcon3-bitnet");
    let mut names: Vec<String> = std::fs::read_dir(out_dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["a.bitnet", "b.bitnet", "c.bitnet"]);
}

#[test]
fn bundled_demo_model_is_exactly_what_the_converter_writes() {
    // bitnet-run embeds testdata/demo/demo.bitnet; it must stay the conversion of testdata/demo,
    // made from the repository root with the default options.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo.bitnet");
    let o = Command::new(env!("CARGO_BIN_EXE_bitnet-convert"))
        .current_dir(&root)
        .args(["testdata/demo", "-o"])
        .arg(&out)
        .args(["--layout", "tiled16"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        std::fs::read(&out).unwrap()
            == std::fs::read(root.join("testdata/demo/demo.bitnet")).unwrap(),
        "regenerate it: bitnet-convert testdata/demo -o testdata/demo/demo.bitnet --layout tiled16 --force"
    );
}

#[test]
fn demo_model_with_q4_embeddings_stays_within_the_quantization_bound() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo-q4.bitnet");
    let o = bin(dir.path())
        .current_dir(&root)
        .args(["testdata/demo", "-o"])
        .arg(&out)
        .args(["--embeddings", "q4"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o).1);

    let bytes = std::fs::read(root.join("testdata/demo/model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let src = st.tensor("model.embed_tokens.weight").unwrap();
    assert_eq!(src.dtype(), safetensors::Dtype::BF16);
    let want: Vec<f32> = src
        .data()
        .chunks_exact(2)
        .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
        .collect();
    let file = bitnet_format::BitnetFile::open(&out).unwrap();
    assert_eq!(file.header().provenance.options["embeddings"], "q4");
    let view = file.tensor("token_embd").unwrap();
    assert_eq!(view.info.encoding, bitnet_format::Encoding::Q4B32);
    let got = view.to_f32().unwrap();
    assert_eq!(got.len(), want.len());
    let mut worst = 0f32;
    for (g, w) in got.chunks(32).zip(want.chunks(32)) {
        // At most one step of the coarsest candidate scale, |m| / 7 (f16-rounded).
        let bound = w.iter().fold(0f32, |m, v| m.max(v.abs())) / 7.0 * 1.001;
        for (a, b) in g.iter().zip(w) {
            assert!((a - b).abs() <= bound, "{a} vs {b}, bound {bound}");
            worst = worst.max((a - b).abs() / bound);
        }
    }
    assert!(worst > 0.1, "the values were quantized");

    let o = bin(dir.path()).arg("inspect").arg(&out).output().unwrap();
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "{stderr}");
    let line = stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some("token_embd"))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(line.contains("q4_b32"), "{line}");
    let o = bin(dir.path()).arg("verify").arg(&out).output().unwrap();
    assert!(o.status.success(), "{}", text(&o).1);
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// A model at 2B-4T's width and depth `layers` (a small vocabulary): big enough that writing it
/// takes a moment, small enough to make in one.
fn wide_model(layers: u32) -> ModelConfig {
    ModelConfig {
        family: "bitnet-2b4t".into(),
        hidden_size: 2560,
        intermediate_size: 6912,
        num_layers: layers,
        num_heads: 20,
        num_kv_heads: 5,
        head_dim: 128,
        vocab_size: 352,
        context_length: 4096,
        rope_theta: 500000.0,
        rope_scaling: None,
        rms_norm_eps: 1e-5,
        activation: Activation::Relu2,
        sub_norms: true,
        tied_embeddings: true,
        attention_bias: false,
        qk_norm: false,
    }
}

fn is_projection(name: &str, shape: &[u64]) -> bool {
    name.starts_with("blk.") && shape.len() == 2
}

/// A `.bitnet` file of [`wide_model`] whose every byte is zero: valid (i2s128 codes 0 are -1,
/// with scale 0; zero floats), written in a blink. `bad` gets an invalid code (3) in its data.
fn zero_bitnet(path: &Path, layers: u32, bad: Option<&str>) {
    let model = wide_model(layers);
    let layout = TernaryLayout::I2s { block: 128 };
    let specs: Vec<TensorSpec> = expected_tensors(&model, true)
        .iter()
        .map(|(n, shape)| {
            let e = if is_projection(n, shape) {
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
        tokenizer: None,
        generation: GenerationDefaults::default(),
        provenance: Provenance {
            source: Source::Synthetic {
                like: "zero".into(),
                seed: 0,
            },
            files: vec![],
            converter: "test".into(),
            options: Default::default(),
        },
        tensors: vec![],
    };
    let w = FileWriter::create(path, header, &specs).unwrap();
    for s in &specs {
        let mut bytes = vec![0u8; s.encoding.byte_len(&s.shape).unwrap() as usize];
        if bad == Some(s.name.as_str()) {
            bytes[0] = 0xff;
        }
        w.write_tensor(&s.name, &bytes).unwrap();
    }
    w.finish().unwrap();
}

/// A bitnet.cpp-style GGUF (`bitnet-b1.58`, I2_S projections) of [`wide_model`], all zero bytes
/// (valid, as for [`zero_bitnet`]); `bad` (a GGUF tensor name) gets an invalid code.
fn zero_gguf(path: &Path, layers: u32, bad: Option<&str>) {
    let model = wide_model(layers);
    let arch = "bitnet-b1.58";
    let key = |k: &str| format!("{arch}.{k}");
    let meta = vec![
        ("general.architecture".to_string(), string(arch)),
        (
            key("embedding_length"),
            MetadataValue::U32(model.hidden_size),
        ),
        (
            key("feed_forward_length"),
            MetadataValue::U32(model.intermediate_size),
        ),
        (key("block_count"), MetadataValue::U32(model.num_layers)),
        (
            key("attention.head_count"),
            MetadataValue::U32(model.num_heads),
        ),
        (
            key("attention.head_count_kv"),
            MetadataValue::U32(model.num_kv_heads),
        ),
        (
            key("context_length"),
            MetadataValue::U32(model.context_length),
        ),
        (
            key("attention.layer_norm_rms_epsilon"),
            MetadataValue::F32(1e-5),
        ),
        (key("rope.freq_base"), MetadataValue::F32(500000.0)),
    ];
    let tensors: Vec<OutTensor> = expected_tensors(&model, true)
        .iter()
        .map(|(n, shape)| OutTensor {
            name: format!("{n}.weight"),
            dims: shape.iter().rev().copied().collect(),
            ggml_type: if is_projection(n, shape) {
                GGML_TYPE_I2_S
            } else if shape.len() == 2 {
                GGML_TYPE_F16
            } else {
                GGML_TYPE_F32
            },
        })
        .collect();
    container::write(path, &meta, &tensors, |i| {
        let t = &tensors[i];
        let mut bytes = vec![0u8; container::tensor_size(t.ggml_type, &t.dims)? as usize];
        if bad == Some(t.name.as_str()) {
            bytes[0] = 0xff;
        }
        Ok::<_, bitnet_convert::gguf::GgufError>(bytes)
    })
    .unwrap();
}

/// A Hugging Face checkpoint (the 2B-4T-bf16 fixture's config and tokenizer at [`wide_model`]'s
/// shape) whose bf16 weights are all zero, in a sparse file; `nan` names a tensor that gets a NaN.
fn zero_checkpoint(dir: &Path, layers: u32, nan: Option<&str>) {
    std::fs::create_dir(dir).unwrap();
    let src = fixture("bitnet-2b4t-bf16");
    for f in [
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    ] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    let m = wide_model(layers);
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(src.join("config.json")).unwrap()).unwrap();
    config["hidden_size"] = m.hidden_size.into();
    config["intermediate_size"] = m.intermediate_size.into();
    config["num_hidden_layers"] = m.num_layers.into();
    config["num_attention_heads"] = m.num_heads.into();
    config["num_key_value_heads"] = m.num_kv_heads.into();
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let (h, i, kv) = (2560u64, 6912u64, 640u64);
    let mut tensors = vec![("model.embed_tokens.weight".to_string(), vec![352, h])];
    for l in 0..layers {
        let p = format!("model.layers.{l}");
        for (name, shape) in [
            ("input_layernorm", vec![h]),
            ("self_attn.q_proj", vec![h, h]),
            ("self_attn.k_proj", vec![kv, h]),
            ("self_attn.v_proj", vec![kv, h]),
            ("self_attn.o_proj", vec![h, h]),
            ("self_attn.attn_sub_norm", vec![h]),
            ("post_attention_layernorm", vec![h]),
            ("mlp.gate_proj", vec![i, h]),
            ("mlp.up_proj", vec![i, h]),
            ("mlp.down_proj", vec![h, i]),
            ("mlp.ffn_sub_norm", vec![i]),
        ] {
            tensors.push((format!("{p}.{name}.weight"), shape));
        }
    }
    tensors.push(("model.norm.weight".to_string(), vec![h]));
    let mut header = serde_json::Map::new();
    let mut offset = 0u64;
    let mut nan_at = None;
    for (name, shape) in &tensors {
        let bytes = 2 * shape.iter().product::<u64>();
        if nan == Some(name.as_str()) {
            nan_at = Some(offset);
        }
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": "BF16", "shape": shape, "data_offsets": [offset, offset + bytes]}),
        );
        offset += bytes;
    }
    let mut header = serde_json::to_vec(&header).unwrap();
    header.resize(header.len().next_multiple_of(8), b' ');
    let mut file = std::fs::File::create(dir.join("model.safetensors")).unwrap();
    use std::io::{Seek, SeekFrom, Write};
    file.write_all(&(header.len() as u64).to_le_bytes())
        .unwrap();
    file.write_all(&header).unwrap();
    let start = 8 + header.len() as u64;
    file.set_len(start + offset).unwrap();
    if let Some(at) = nan_at {
        file.seek(SeekFrom::Start(start + at)).unwrap();
        file.write_all(&half::bf16::NAN.to_le_bytes()).unwrap();
    }
}

/// Run `bitnet-convert ARGS` in `dir`; once a hidden entry (the temporary output) appears there,
/// and a little later so that the command is writing, send `signal`. Returns its output.
fn interrupt(dir: &Path, args: &[&str], signal: &str) -> Output {
    let child = bin(dir)
        .current_dir(dir)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !entries(dir).iter().any(|n| n.starts_with('.')) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{args:?}: no temporary output appeared"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(150));
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    child.wait_with_output().unwrap()
}

/// Interrupt every command that writes, with SIGINT and with SIGTERM, while it writes: it says so,
/// exits with 130 and leaves nothing new in the directory, hidden or not.
#[cfg(unix)]
#[test]
fn every_writer_interrupted_by_a_signal_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    zero_bitnet(&d.join("in.bitnet"), 6, None);
    zero_gguf(&d.join("in.gguf"), 6, None);
    zero_checkpoint(&d.join("ckpt"), 6, None);
    let inputs = entries(d);
    let commands: [&[&str]; 5] = [
        &["ckpt", "-o", "out.bitnet"],
        &["in.gguf", "-o", "out.bitnet"],
        &[
            "export-gguf",
            "in.bitnet",
            "-o",
            "out.gguf",
            "--type",
            "i2_s",
        ],
        &["synthetic", "--like", "bitnet-2b4t", "-o", "out.bitnet"],
        &["synthetic", "--like", "bitnet-2b4t", "--hf", "-o", "out"],
    ];
    for args in commands {
        for signal in ["INT", "TERM"] {
            let o = interrupt(d, args, signal);
            let (stdout, stderr) = text(&o);
            assert_eq!(
                o.status.code(),
                Some(130),
                "{args:?} {signal}: {stdout}\n{stderr}"
            );
            assert!(
                stderr.contains("interrupted: no output written"),
                "{args:?} {signal}: {stderr}"
            );
            assert_eq!(entries(d), inputs, "{args:?} {signal}");
        }
    }
}

/// A tensor that fails half-way through the output (a NaN weight, an invalid ternary code) stops
/// the conversion, the GGUF import and the export naming it, and leaves nothing behind.
#[test]
fn a_failure_mid_write_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    zero_checkpoint(
        &d.join("ckpt"),
        3,
        Some("model.layers.1.mlp.down_proj.weight"),
    );
    zero_gguf(&d.join("in.gguf"), 3, Some("blk.1.ffn_down.weight"));
    zero_bitnet(&d.join("in.bitnet"), 3, Some("blk.1.ffn_down"));
    let inputs = entries(d);
    for (args, tensor) in [
        (
            &["ckpt", "-o", "out.bitnet"][..],
            "model.layers.1.mlp.down_proj.weight",
        ),
        (
            &["in.gguf", "-o", "out.bitnet"][..],
            "blk.1.ffn_down.weight",
        ),
        (
            &[
                "export-gguf",
                "in.bitnet",
                "-o",
                "out.gguf",
                "--type",
                "i2_s",
            ][..],
            "blk.1.ffn_down",
        ),
    ] {
        let o = bin(d).current_dir(d).args(args).output().unwrap();
        let (_, stderr) = text(&o);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(tensor), "{args:?}: {stderr}");
        assert_eq!(entries(d), inputs, "{args:?}");
    }
}

/// A GGUF file is recognised by its magic bytes, not its name.
#[test]
fn a_gguf_file_without_the_extension_is_imported() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("model.bin");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/gguf/bitnet_tq.gguf"),
        &src,
    )
    .unwrap();
    let out = dir.path().join("m.bitnet");
    let o = bin(dir.path())
        .arg(&src)
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "{stderr}");
    assert!(stdout.contains("GGUF bitnet"), "{stdout}");
    BitnetFile::open(&out).unwrap().verify().unwrap();
}

/// A GGUF import prints the conversion summary: tensors, parameters, bytes, bits per weight,
/// verification, time, with the GGUF architecture and ternary types in its first line.
#[test]
fn a_gguf_import_prints_the_conversion_summary() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.bitnet");
    let o = bin(dir.path())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/gguf/bitnet_tq.gguf"))
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "{stderr}");
    let first = stdout.lines().next().unwrap();
    assert!(
        first.contains("wrote") && first.contains("GGUF bitnet") && first.contains("4 TQ2_0"),
        "{stdout}"
    );
    for needle in [
        "  tensors ",
        "  parameters ",
        "  bytes in ",
        "  bytes out ",
        "  bits per weight ",
        "  verified        yes",
        "  time ",
    ] {
        assert!(stdout.contains(needle), "{needle}: {stdout}");
    }
    let bytes_out = std::fs::metadata(&out).unwrap().len();
    assert!(stdout.contains(&format!("({bytes_out})")), "{stdout}");
}

/// `bitnet-convert export-gguf SRC -o OUT --type i2_s` (bitnet.cpp's x86 layout, blocks of 128),
/// which must succeed; its stderr.
fn export_i2s(d: &Path, src: &Path, out: &Path) -> String {
    let o = bin(d)
        .arg("export-gguf")
        .arg(src)
        .arg("-o")
        .arg(out)
        .args(["--type", "i2_s"])
        .output()
        .unwrap();
    let (_, stderr) = text(&o);
    assert!(o.status.success(), "{stderr}");
    stderr
}

/// `bitnet-convert FIXTURE -o OUT`, which must succeed; its stderr.
fn convert_fixture(d: &Path, name: &str, out: &Path) -> String {
    let o = bin(d)
        .arg(fixture(name))
        .arg("-o")
        .arg(out)
        .output()
        .unwrap();
    let (_, stderr) = text(&o);
    assert!(o.status.success(), "{stderr}");
    stderr
}

/// Rewrite each I2_S tensor of the GGUF file `bytes` with `edit(tensor bytes)`.
fn edit_i2s(bytes: &mut [u8], mut edit: impl FnMut(&mut [u8])) {
    let ranges: Vec<_> = {
        let parsed = GgufFile::parse(bytes).unwrap();
        parsed
            .tensors
            .iter()
            .filter(|t| t.ggml_type == GGML_TYPE_I2_S)
            .map(|t| parsed.range(t))
            .collect()
    };
    assert!(!ranges.is_empty(), "the file has I2_S tensors");
    for range in ranges {
        edit(&mut bytes[range]);
    }
}

/// The I2_S GGUF `g128` (blocks of 128) re-blocked as bitnet.cpp's ARM builds store it, as `g64`.
fn reblock_to_64(g128: &Path, g64: &Path) {
    let mut bytes = std::fs::read(g128).unwrap();
    let dims: Vec<(u64, u64)> = GgufFile::parse(&bytes)
        .unwrap()
        .tensors
        .iter()
        .filter(|t| t.ggml_type == GGML_TYPE_I2_S)
        .map(|t| (t.dims[0], t.dims[1]))
        .collect();
    let mut dims = dims.into_iter();
    edit_i2s(&mut bytes, |data| {
        let (cols, rows) = dims.next().unwrap();
        let layout = |block| TernaryLayout::I2s { block };
        let (values, scale) = ternary::unpack(layout(128), rows, cols, data).unwrap();
        let repacked = ternary::pack(layout(64), rows, cols, &values, scale).unwrap();
        assert_eq!(repacked.len(), data.len());
        data.copy_from_slice(&repacked);
    });
    std::fs::write(g64, &bytes).unwrap();
}

/// `bitnet.cpp`'s I2_S of x86 (blocks of 128) and ARM (64) builds: the block size comes from the
/// data when it shows it (padding; the feed-forward units of a trained model), a contradicting
/// `--gguf-i2s-block` is refused naming the tensor, and data that cannot tell gives a warning.
#[test]
fn the_i2s_block_size_is_read_from_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let run = |src: &Path, out: &str, block: Option<&str>| {
        let mut c = bin(d);
        c.arg(src).arg("-o").arg(d.join(out));
        if let Some(b) = block {
            c.args(["--gguf-i2s-block", b]);
        }
        c.output().unwrap()
    };
    // The trained demo model, as bitnet.cpp's x86 build stores it, and re-blocked as ARM's does.
    let g128 = d.join("demo-128.gguf");
    export_i2s(d, &root.join("testdata/demo/demo.bitnet"), &g128);
    let g64 = d.join("demo-64.gguf");
    reblock_to_64(&g128, &g64);

    let reference = BitnetFile::open(root.join("testdata/demo/demo.bitnet")).unwrap();
    for (src, block, wrong) in [(&g128, "128", "64"), (&g64, "64", "128")] {
        let out = format!("from-{block}.bitnet");
        let o = run(src, &out, None);
        let (_, stderr) = text(&o);
        assert!(o.status.success(), "{stderr}");
        assert!(
            stderr.contains(&format!(
                "I2_S read in blocks of {block}, as blk.0.ffn_down.weight shows"
            )),
            "{stderr}"
        );
        assert!(!stderr.contains("warning:"), "{stderr}");
        let imported = BitnetFile::open(d.join(&out)).unwrap();
        let (want, _) = reference
            .tensor("blk.2.ffn_down")
            .unwrap()
            .unpack_ternary()
            .unwrap();
        let (got, _) = imported
            .tensor("blk.2.ffn_down")
            .unwrap()
            .unpack_ternary()
            .unwrap();
        assert!(want == got, "blocks of {block}: the demo's values");
        let o = run(src, "wrong.bitnet", Some(wrong));
        let (_, stderr) = text(&o);
        assert_eq!(o.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains("blk.0.ffn_down.weight")
                && stderr.contains(&format!("--gguf-i2s-block {wrong} contradicts the data")),
            "{stderr}"
        );
        assert!(!d.join("wrong.bitnet").exists());
    }

    // Random weights (a fixture's): nothing to tell the layouts apart by, so a warning.
    let fixture_bitnet = d.join("fixture.bitnet");
    convert_fixture(d, "bitnet-2b4t", &fixture_bitnet);
    let random = d.join("random.gguf");
    export_i2s(d, &fixture_bitnet, &random);
    let o = run(&random, "random.bitnet", None);
    let (_, stderr) = text(&o);
    assert!(o.status.success(), "{stderr}");
    assert!(
        stderr.contains("warning:")
            && stderr.contains("cannot tell")
            && stderr.contains("--gguf-i2s-block 64"),
        "{stderr}"
    );

    // Padding: the 1bitLLM fixture's 120 × 120 attn_q (14400 elements) only fits blocks of 128.
    let padded_bitnet = d.join("1bitllm.bitnet");
    convert_fixture(d, "bitnet-1bitllm", &padded_bitnet);
    let padded = d.join("1bitllm.gguf");
    export_i2s(d, &padded_bitnet, &padded);
    let o = run(&padded, "padded.bitnet", Some("64"));
    let (_, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("blk.0.attn_q.weight") && stderr.contains("padding"),
        "{stderr}"
    );

    // The flag is for GGUF input only.
    let o = run(&fixture("bitnet-2b4t"), "x.bitnet", Some("64"));
    let (_, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("--gguf-i2s-block") && stderr.contains("not a GGUF file"),
        "{stderr}"
    );
    assert!(!d.join("x.bitnet").exists());
    // A file that is not there is named as missing, whatever flags come with it.
    let o = run(&d.join("missing.gguf"), "y.bitnet", Some("64"));
    let (_, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("missing.gguf: no such file or directory"),
        "{stderr}"
    );
}

/// Every tensor of the `.bitnet` files `a` and `b` is the same: ternary values and scale bits,
/// other tensors byte for byte.
fn assert_same_tensors(a: &Path, b: &Path) {
    let (fa, fb) = (BitnetFile::open(a).unwrap(), BitnetFile::open(b).unwrap());
    assert_eq!(fa.tensors().len(), fb.tensors().len());
    for ta in fa.tensors() {
        let (va, vb) = (fa.view(ta), fb.tensor(&ta.name).unwrap());
        assert_eq!(va.info.encoding, vb.info.encoding, "{}", ta.name);
        match ta.encoding {
            Encoding::Ternary(_) => {
                let (xa, sa) = va.unpack_ternary().unwrap();
                let (xb, sb) = vb.unpack_ternary().unwrap();
                assert!(xa == xb, "{}: ternary values differ", ta.name);
                assert_eq!(sa.to_bits(), sb.to_bits(), "{}: scale", ta.name);
            }
            _ => assert!(va.data == vb.data, "{}: bytes differ", ta.name),
        }
    }
}

/// bitnet.cpp's `llama-quantize` leaves the 28 bytes after each I2_S scale uninitialised: files
/// whose tails hold arbitrary bytes (neither zero nor copies of the scale) import to exactly the
/// clean file's tensors, and their block size is still read from the data: the feed-forward units
/// of the demo model in both layouts, the padding of the 1bitLLM fixture's 120 × 120 matrices.
#[test]
fn i2s_tails_of_arbitrary_bytes_import_as_the_clean_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let g128 = d.join("demo-128.gguf");
    export_i2s(d, &root.join("testdata/demo/demo.bitnet"), &g128);
    let g64 = d.join("demo-64.gguf");
    reblock_to_64(&g128, &g64);
    let padded_bitnet = d.join("1bitllm.bitnet");
    convert_fixture(d, "bitnet-1bitllm", &padded_bitnet);
    let padded = d.join("1bitllm.gguf");
    export_i2s(d, &padded_bitnet, &padded);

    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut byte = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 24) as u8
    };
    for (clean, block, shown_by) in [
        (&g128, 128, "blk.0.ffn_down.weight"),
        (&g64, 64, "blk.0.ffn_down.weight"),
        (&padded, 128, "blk.0.attn_q.weight"),
    ] {
        let mut bytes = std::fs::read(clean).unwrap();
        edit_i2s(&mut bytes, |data| {
            let (codes, tail) = data.split_at_mut(data.len() - 28);
            tail.iter_mut().for_each(|b| *b = byte());
            let scale = &codes[codes.len() - 4..];
            assert!(tail.iter().any(|&b| b != 0) && tail[..4] != *scale);
        });
        let dirty = d.join(format!("dirty-{}", clean.file_name().unwrap().display()));
        std::fs::write(&dirty, &bytes).unwrap();
        let mut outputs = Vec::new();
        for src in [clean, &dirty] {
            let out = d.join(format!("{}.bitnet", src.file_name().unwrap().display()));
            let o = bin(d).arg(src).arg("-o").arg(&out).output().unwrap();
            let (_, stderr) = text(&o);
            assert!(o.status.success(), "{}: {stderr}", src.display());
            assert!(
                stderr.contains(&format!(
                    "I2_S read in blocks of {block}, as {shown_by} shows"
                )),
                "{}: {stderr}",
                src.display()
            );
            assert!(!stderr.contains("warning:"), "{}: {stderr}", src.display());
            outputs.push(out);
        }
        assert_same_tensors(&outputs[0], &outputs[1]);
    }
}

/// The file written is what the command writes, whatever the name: a name that says otherwise
/// gets a warning.
#[test]
fn an_output_name_with_the_wrong_extension_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let bitnet_as_gguf = d.join("x.gguf");
    let stderr = convert_fixture(d, "bitnet-2b4t", &bitnet_as_gguf);
    assert!(
        stderr.contains(&format!(
            "warning: {}: writing a .bitnet file, but its name ends in .gguf",
            bitnet_as_gguf.display()
        )),
        "{stderr}"
    );
    BitnetFile::open(&bitnet_as_gguf).unwrap();
    let gguf_as_bitnet = d.join("x.bitnet");
    let stderr = export_i2s(d, &bitnet_as_gguf, &gguf_as_bitnet);
    assert!(
        stderr.contains(&format!(
            "warning: {}: writing a .gguf file, but its name ends in .bitnet",
            gguf_as_bitnet.display()
        )),
        "{stderr}"
    );
    assert_eq!(&std::fs::read(&gguf_as_bitnet).unwrap()[..4], b"GGUF");
    // Matching names: no warning.
    let stderr = convert_fixture(d, "bitnet-2b4t", &d.join("y.bitnet"));
    assert!(!stderr.contains("warning:"), "{stderr}");
}

/// More threads than cores only take turns: capped, with a note.
#[test]
fn threads_beyond_the_cores_are_capped_with_a_note() {
    let dir = tempfile::tempdir().unwrap();
    let cores = std::thread::available_parallelism().unwrap().get();
    for args in [
        vec![fixture("bitnet-2b4t").display().to_string()],
        vec![
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../testdata/gguf/bitnet_tq.gguf")
                .display()
                .to_string(),
        ],
    ] {
        let o = bin(dir.path())
            .args(&args)
            .arg("-o")
            .arg(dir.path().join("m.bitnet"))
            .args(["-t", "1000", "--force"])
            .output()
            .unwrap();
        let (_, stderr) = text(&o);
        assert!(o.status.success(), "{stderr}");
        assert!(
            stderr.contains(&format!(
                "note: --threads 1000 is more than the {cores} cores this process may use; running {cores} threads"
            )),
            "{stderr}"
        );
    }
}

/// Export warnings are `warning:` lines, notes `note:` lines.
#[test]
fn export_warnings_and_notes_have_their_own_prefixes() {
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    // The demo model is ReLU² with every K a multiple of 256: TQ2_0 for llama.cpp, which runs SiLU.
    let o = bin(dir.path())
        .arg("export-gguf")
        .arg(root.join("testdata/demo/demo.bitnet"))
        .arg("-o")
        .arg(dir.path().join("m.gguf"))
        .args(["--type", "tq2_0"])
        .output()
        .unwrap();
    let (_, stderr) = text(&o);
    assert!(o.status.success(), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("warning: this model uses ReLU²")),
        "{stderr}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("note: TQ blocks store the scale as f16")),
        "{stderr}"
    );
    assert!(!stderr.contains("WARNING"), "{stderr}");
}

/// The ternary values of every projection of a `.bitnet` file, by name.
fn ternary_values(path: &Path) -> Vec<(String, Vec<i8>, f32)> {
    let file = BitnetFile::open(path).unwrap();
    file.tensors()
        .iter()
        .filter(|t| matches!(t.encoding, Encoding::Ternary(_)))
        .map(|t| {
            let (values, scale) = file.view(t).unpack_ternary().unwrap();
            (t.name.clone(), values, scale)
        })
        .collect()
}

/// `--layout compact` writes `base3` (SPEC.md §6.4) with the values of the default layout, from a
/// checkpoint and from llama.cpp's TQ1_0; `verify` checks it and `inspect` names it.
#[test]
fn the_compact_layout_holds_the_same_values_from_a_checkpoint_and_from_tq1_0() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (tiled, compact) = (d.join("tiled.bitnet"), d.join("compact.bitnet"));
    convert_fixture(d, "llama3-bitnet", &tiled);
    let o = bin(d)
        .arg(fixture("llama3-bitnet"))
        .arg("-o")
        .arg(&compact)
        .args(["--layout", "compact"])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "{stderr}");
    assert!(stdout.contains("bits per weight"), "{stdout}");
    let native = if cfg!(target_arch = "aarch64") {
        "base3x4"
    } else {
        "base3x16"
    };
    let o = bin(d).arg("inspect").arg(&compact).output().unwrap();
    assert!(text(&o).0.contains(native), "{}", text(&o).0);
    let o = bin(d).arg("verify").arg(&compact).output().unwrap();
    assert!(o.status.success(), "{}", text(&o).1);
    let (a, b) = (ternary_values(&tiled), ternary_values(&compact));
    assert!(!a.is_empty() && a == b, "the layouts hold different values");

    // A GGUF written by gguf-py with TQ1_0 and TQ2_0 projections: the same trits and scales in
    // either layout.
    let gguf = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/gguf/bitnet_tq.gguf");
    let (from_tq, from_tq_compact) = (d.join("tq.bitnet"), d.join("tq-compact.bitnet"));
    for (out, layout) in [(&from_tq, "auto"), (&from_tq_compact, "compact")] {
        let o = bin(d)
            .arg(&gguf)
            .arg("-o")
            .arg(out)
            .args(["--layout", layout])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o).1);
    }
    let (a, b) = (ternary_values(&from_tq), ternary_values(&from_tq_compact));
    assert!(!a.is_empty() && a == b, "TQ imports differ between layouts");
}

/// `inspect` reports bits per ternary weight and the memory the model needs to run, held here to
/// the figures the configuration gives: i2s128 stores each 128 weights in 32 bytes and a 32-byte
/// tail (SPEC.md §6.2); the tensors' bytes are the file's length less its header and the 32 bytes
/// of padding after each ternary tensor (every other length is a multiple of 64); the KV cache
/// holds a key and a value per layer, KV head and head dimension.
#[test]
fn inspect_reports_bits_per_weight_and_the_memory_to_run() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.bitnet");
    let layers = 2u64;
    zero_bitnet(&path, layers as u32, None);
    let o = bin(dir.path()).arg("inspect").arg(&path).output().unwrap();
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "{stderr}");

    let m = wide_model(layers as u32);
    let (h, i) = (m.hidden_size as u64, m.intermediate_size as u64);
    let q = (m.num_heads * m.head_dim) as u64;
    let kv = (m.num_kv_heads * m.head_dim) as u64;
    let shapes = [[q, h], [kv, h], [kv, h], [h, q], [i, h], [i, h], [h, i]];
    let weights: u64 = layers * shapes.iter().map(|[r, c]| r * c).sum::<u64>();
    let bytes: u64 = layers
        * shapes
            .iter()
            .map(|[r, c]| (r * c).div_ceil(128) * 32 + 32)
            .sum::<u64>();
    let file_len = std::fs::metadata(&path).unwrap().len();
    let data_start: u64 = stdout
        .split("data at offset ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{stdout}"));
    let tensors = file_len - data_start - 32 * 7 * layers;
    let per_token = |b: u64| 2 * layers * m.num_kv_heads as u64 * m.head_dim as u64 * b;
    let ctx = m.context_length as u64;

    let line = |key: &str| {
        stdout
            .lines()
            .find(|l| l.trim_start().starts_with(key))
            .unwrap_or_else(|| panic!("{key}: {stdout}"))
            .to_string()
    };
    let ternary = line("ternary ");
    let bits: f64 = ternary.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(
        (bits - bytes as f64 * 8.0 / weights as f64).abs() < 5e-4,
        "{ternary}"
    );
    assert!(
        ternary.contains(&format!("({bytes} bytes, {weights} weights)")),
        "{ternary}"
    );
    assert!(
        line("tensors ").contains(&format!(" {tensors} bytes (")),
        "{stdout}"
    );
    let kv_line = line("kv cache/token");
    assert!(
        kv_line.contains(&format!("f16 {} bytes", per_token(2)))
            && kv_line.contains(&format!("f32 {} bytes", per_token(4))),
        "{kv_line}"
    );
    let total = line(&format!("total at ctx {ctx} "));
    assert!(
        total.contains(&format!("f16 {} bytes", tensors + ctx * per_token(2)))
            && total.contains(&format!("f32 {} bytes", tensors + ctx * per_token(4))),
        "{total}"
    );
}
