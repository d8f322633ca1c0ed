//! The `bitnet-convert` binary: convert, inspect and verify from the command line, its exit codes and
//! messages, and the Hugging Face environment variables (against a local stand-in for the Hub).

#[path = "../../tests/tests/convert_support/hub.rs"]
mod hub;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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
    let o = bin(dir.path())
        .arg(fixture("bitnet-1bitllm"))
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o).1);
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
