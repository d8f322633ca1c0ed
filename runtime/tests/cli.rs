//! The `bitnet-run` binary as a user runs it, on the bundled demo model (no -m) unless stated.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bitnet-run"))
        .args(args)
        .current_dir(root())
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Standard output as one JSON value per line (`--json` of the bench commands).
fn json_lines(o: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn reference() -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(root().join("testdata/demo/reference.json")).unwrap())
        .unwrap()
}

#[test]
fn bundled_demo_model_writes_text_and_reports_speed() {
    let o = run(&["-p", "ROMEO:", "-n", "40", "--seed", "3"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8(o.stdout.clone()).unwrap();
    assert!(text.starts_with("ROMEO:") && text.len() > 40, "{text:?}");
    let err = stderr(&o);
    assert!(
        err.contains("demo model") && err.contains("tokens/s"),
        "{err}"
    );
    // Same seed, same text.
    let again = run(&["-p", "ROMEO:", "-n", "40", "--seed", "3"]);
    assert_eq!(String::from_utf8(again.stdout).unwrap(), text);
}

#[test]
fn perplexity_on_held_out_text_matches_transformers_within_one_percent() {
    // The default kernel path; every path gives the same logits (tests/model_consistency.rs).
    let r = reference();
    let ctx = r["ctx"].as_u64().unwrap().to_string();
    let o = run(&[
        "perplexity",
        "-f",
        "testdata/demo/heldout.txt",
        "-c",
        &ctx,
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let got: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let ppl = got["perplexity"].as_f64().unwrap();
    let want = r["transformers"]["perplexity"].as_f64().unwrap();
    assert_eq!(
        got["tokens"], r["num_scored_tokens"],
        "same tokenization and windows"
    );
    assert!(
        (ppl / want - 1.0).abs() < 0.01,
        "perplexity {ppl} vs transformers {want}"
    );
}

#[test]
fn logits_command_writes_a_numpy_array() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("l.npy");
    let o = run(&[
        "logits",
        "--token-ids",
        "3056,2894,34,2025",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let bytes = std::fs::read(&out).unwrap();
    assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00");
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    assert_eq!((10 + header_len) % 64, 0);
    let header = std::str::from_utf8(&bytes[10..10 + header_len]).unwrap();
    assert!(
        header.contains("'descr': '<f4'") && header.contains("'shape': (4, 3072)"),
        "{header}"
    );
    assert_eq!(bytes.len(), 10 + header_len + 4 * 4 * 3072);
    let logits: Vec<f32> = bytes[10 + header_len..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert!(logits.iter().all(|v| v.is_finite()));
}

#[test]
fn chat_reads_turns_from_stdin() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_bitnet-run"))
        .args(["--chat", "-n", "12", "--temp", "0"])
        .current_dir(root())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"Who art thou?\nWhat news?\n")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let replies = String::from_utf8(o.stdout.clone()).unwrap();
    assert!(
        replies.lines().filter(|l| !l.is_empty()).count() >= 2,
        "{replies:?}"
    );
    // The last prompt, answered by the end of input, is not left open.
    assert!(stderr(&o).ends_with("> \n"), "{:?}", stderr(&o));

    let mut child = Command::new(env!("CARGO_BIN_EXE_bitnet-run"))
        .args(["--chat", "-n", "4", "--temp", "0"])
        .current_dir(root())
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"/exit\n").unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).ends_with("> \n"), "{:?}", stderr(&o));
}

/// A conversation that outgrows the context drops its oldest turns (with a note) and goes on.
#[test]
fn chat_drops_the_oldest_turns_when_the_context_fills() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_bitnet-run"))
        .args([
            "--chat",
            "-c",
            "96",
            "-n",
            "16",
            "--temp",
            "0",
            "--system",
            "Be brief.",
        ])
        .current_dir(root())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let turns = "Who art thou?\nWhat news from Verona?\nWhere is Romeo?\nWhat says the Prince?\n";
    child
        .stdin
        .take()
        .unwrap()
        .write_all(turns.as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("dropped the oldest"), "{err}");
    // A prompt for each turn and one more, answered by the end of input.
    assert_eq!(err.matches("> ").count(), 5, "{err}");
    assert!(!o.stdout.is_empty());
}

#[test]
fn user_errors_are_clear_and_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let corrupt = dir.path().join("corrupt.bitnet");
    let mut bytes = std::fs::read(root().join("testdata/demo/demo.bitnet")).unwrap();
    bytes[40] ^= 1;
    std::fs::write(&corrupt, bytes).unwrap();
    let long_prompt = "word ".repeat(50);
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["-m", "/nonexistent.bitnet", "-p", "x"],
            "/nonexistent.bitnet",
        ),
        (vec!["-m", corrupt.to_str().unwrap(), "-p", "x"], "checksum"),
        (vec!["-p", &long_prompt, "-c", "16"], "context"),
        (vec!["-p", "x", "--temp", "-1"], "--temp"),
        (vec!["-p", "x", "--top-p", "0"], "--top-p"),
        (vec!["-p", "x", "--min-p", "2"], "--min-p"),
        (vec!["-p", "x", "--repeat-penalty", "0"], "--repeat-penalty"),
        (vec!["-p", "x", "--kernel", "sse9"], "sse9"),
        (vec!["-p", "x", "-t", "0"], "--threads"),
        (vec!["-p", "x", "-c", "100000"], "context length"),
        (vec![], "-p PROMPT"),
        (
            vec!["perplexity", "-f", "/nonexistent.txt"],
            "/nonexistent.txt",
        ),
        (
            vec!["logits", "--token-ids", "1,99999", "-o", "/tmp/never.npy"],
            "99999",
        ),
    ];
    for (args, needle) in cases {
        let o = run(&args);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains(needle),
            "{args:?}: expected {needle:?} in {err}"
        );
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    assert!(!Path::new("/tmp/never.npy").exists());
}

/// A kernel path the CPU cannot run, forced by flag or by `BITNET_KERNEL`, is refused up front
/// naming what is missing, never run into an illegal instruction.
#[test]
fn a_forced_kernel_path_the_cpu_lacks_is_an_error() {
    let foreign = if cfg!(target_arch = "x86_64") {
        "neon-dot"
    } else {
        "avx512"
    };
    let o = run(&["-p", "ROMEO:", "-n", "2", "--kernel", foreign]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains(&format!("kernel {foreign} was requested")),
        "{err}"
    );
    assert!(err.contains("lacks"), "{err}");
    let o = Command::new(env!("CARGO_BIN_EXE_bitnet-run"))
        .args(["-p", "ROMEO:", "-n", "2"])
        .env("BITNET_KERNEL", foreign)
        .current_dir(root())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("lacks"), "{}", stderr(&o));
}

#[test]
fn a_chat_template_that_renders_to_nothing_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let model = demo_with_header(dir.path(), "silent.bitnet", |h| {
        h["tokenizer"]["chat_template"] = "{# nothing #}".into();
    });
    let mut child = Command::new(env!("CARGO_BIN_EXE_bitnet-run"))
        .arg("-m")
        .arg(&model)
        .args(["--chat", "-n", "4", "--temp", "0"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"Hello\n").unwrap();
    let o = child.wait_with_output().unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("renders this conversation to no tokens"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

/// llama.cpp's order, `-m MODEL` (and -t, -c, --kernel) before the subcommand, works as well as
/// after it; `bench` runs the demo model when no -m is given.
#[test]
fn model_options_go_before_or_after_the_subcommand() {
    let demo = "testdata/demo/demo.bitnet";
    let dir = tempfile::tempdir().unwrap();
    let npy = dir.path().join("l.npy");
    let npy = npy.to_str().unwrap();
    for args in [
        vec![
            "-m",
            demo,
            "-t",
            "1",
            "perplexity",
            "-f",
            "testdata/demo/heldout.txt",
            "-c",
            "64",
            "--json",
        ],
        vec![
            "perplexity",
            "-m",
            demo,
            "-t",
            "1",
            "-f",
            "testdata/demo/heldout.txt",
            "-c",
            "64",
            "--json",
        ],
    ] {
        let o = run(&args);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert!(v["perplexity"].as_f64().unwrap() > 1.0);
    }
    let o = run(&[
        "-m",
        demo,
        "--kernel",
        "scalar",
        "logits",
        "--token-ids",
        "1,2,3",
        "-o",
        npy,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(std::fs::metadata(npy).unwrap().len() > 0);
    for args in [
        vec!["bench", "-p", "8", "-n", "2", "-r", "1", "-t", "1"],
        vec![
            "-m", demo, "bench", "-p", "8", "-n", "2", "-r", "1", "-t", "1",
        ],
    ] {
        let o = run(&args);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        assert!(
            String::from_utf8_lossy(&o.stdout).contains("tg2"),
            "{args:?}"
        );
    }
    // A prompt that happens to be a subcommand's name stays a prompt.
    let o = run(&["-p", "bench", "-n", "2", "--seed", "1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("bench"));
}

#[test]
fn system_without_chat_is_an_error_naming_chat() {
    let o = run(&["-p", "ROMEO:", "--system", "Be brief.", "-n", "2"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--chat"), "{}", stderr(&o));
}

/// llama.cpp's KV cache flags: `-ctk`/`-ctv` before or after the subcommand, `bench -d` filling the
/// cache first; an unknown type is refused naming it.
#[test]
fn cache_types_and_bench_depth() {
    let o = run(&[
        "-ctk", "f32", "bench", "-p", "4", "-n", "2", "-d", "0,8", "-r", "1", "-t", "1", "--json",
        "-ctv", "f32",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let rows = json_lines(&o);
    let tests: Vec<(&str, u64)> = rows
        .iter()
        .map(|r| (r["test"].as_str().unwrap(), r["depth"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        tests,
        [("pp4", 0), ("tg2", 0), ("pp4 @ d8", 8), ("tg2 @ d8", 8)]
    );
    assert!(
        rows.iter()
            .all(|r| r["cache_type_k"] == "f32" && r["cache_type_v"] == "f32")
    );
    let o = run(&["-p", "x", "-n", "1", "-ctk", "q8_0"]);
    let err = stderr(&o);
    assert!(!o.status.success());
    assert!(err.contains("q8_0") && err.contains("f16 or f32"), "{err}");
}

/// `batched-bench` with llama-batched-bench's flags: one row per (PP, TG, B), its KV positions
/// `B · (PP + TG)`; bad values are refused naming their option.
#[test]
fn batched_bench_runs_every_combination_and_names_bad_options() {
    let o = run(&[
        "batched-bench",
        "-npp",
        "4,6",
        "-ntg",
        "2",
        "-npl",
        "1,3",
        "-r",
        "1",
        "-t",
        "1",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let rows = json_lines(&o);
    let combos: Vec<(u64, u64, u64, u64)> = rows
        .iter()
        .map(|r| {
            let n = |k: &str| r[k].as_u64().unwrap();
            (n("pp"), n("tg"), n("b"), n("n_kv"))
        })
        .collect();
    assert_eq!(
        combos,
        [(4, 2, 1, 6), (4, 2, 3, 18), (6, 2, 1, 8), (6, 2, 3, 24)]
    );
    for r in &rows {
        let (pp, tg, b) = (
            r["pp"].as_f64().unwrap(),
            r["tg"].as_f64().unwrap(),
            r["b"].as_f64().unwrap(),
        );
        let (t_pp, t_tg) = (r["t_pp"].as_f64().unwrap(), r["t_tg"].as_f64().unwrap());
        assert!(t_pp > 0.0 && t_tg > 0.0, "{r}");
        assert!((r["speed_tg"].as_f64().unwrap() - b * tg / t_tg).abs() < 1e-6 * b * tg / t_tg);
        assert!((r["speed_pp"].as_f64().unwrap() - b * pp / t_pp).abs() < 1e-6 * b * pp / t_pp);
    }
    let o = run(&[
        "batched-bench",
        "-npp",
        "4",
        "-ntg",
        "2",
        "-npl",
        "2",
        "-r",
        "1",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("| PP | TG | B | N_KV |"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    for (args, named) in [
        (vec!["batched-bench", "-npl", "0"], "--npl"),
        (vec!["batched-bench", "-npp", "0", "-ntg", "0"], "--npp"),
        (vec!["batched-bench", "-r", "0"], "--repetitions"),
        // The demo model's context is 256 tokens.
        (
            vec!["batched-bench", "-npp", "250", "-ntg", "10"],
            "context of 256",
        ),
    ] {
        let o = run(&args);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        assert!(stderr(&o).contains(named), "{args:?}: {}", stderr(&o));
    }
}

/// A full context shifts (llama.cpp's default) instead of stopping silently; `--no-context-shift`
/// and `-n -2` stop at it, the first with a note; llama.cpp's negative values are accepted and
/// others name their option.
#[test]
fn generation_shifts_a_full_context_or_says_why_it_stopped() {
    let generated = |o: &std::process::Output| -> usize {
        let err = stderr(o);
        let after = err.split("generation: ").nth(1).expect(&err);
        after.split(' ').next().unwrap().parse().unwrap()
    };
    // The demo model's context is 256 tokens.
    let o = run(&[
        "-p", "ROMEO:", "-n", "400", "--temp", "0", "--top-k", "-1", "--seed", "-1",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(generated(&o), 400);
    assert_eq!(
        stderr(&o).matches("is full: dropping the oldest").count(),
        1,
        "{}",
        stderr(&o)
    );
    let o = run(&[
        "-p",
        "ROMEO:",
        "-n",
        "400",
        "--temp",
        "0",
        "--no-context-shift",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("is full (--no-context-shift)"),
        "{}",
        stderr(&o)
    );
    let stopped = generated(&o);
    assert!(stopped < 256, "{stopped}");
    let o = run(&["-p", "ROMEO:", "-n", "-2", "--temp", "0"]);
    assert_eq!(
        generated(&o),
        stopped,
        "-n -2 runs until the context is full"
    );
    assert!(!stderr(&o).contains("note: stopped"), "{}", stderr(&o));
    let o = run(&["-p", "ROMEO:", "-n", "100", "-c", "64", "--temp", "0"]);
    assert_eq!(generated(&o), 100);
    let o = run(&["-p", "x", "-n", "2", "-t", "1000"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("-t 1000 is more than the"),
        "{}",
        stderr(&o)
    );
    for (flag, value) in [("-n", "-3"), ("--seed", "-3"), ("--top-k", "-2")] {
        let o = run(&["-p", "x", flag, value]);
        let err = stderr(&o);
        assert!(!o.status.success());
        assert!(
            err.contains(&format!("'{value}'")) && err.contains(flag.trim_start_matches('-')),
            "{err}"
        );
    }
}

/// Files that are not .bitnet models are named for what they are, and every cause is printed once.
#[test]
fn wrong_files_say_what_they_are_and_no_clause_repeats() {
    let dir = tempfile::tempdir().unwrap();
    let truncated = dir.path().join("t.bitnet");
    let bytes = std::fs::read(root().join("testdata/demo/demo.bitnet")).unwrap();
    std::fs::write(&truncated, &bytes[..1000]).unwrap();
    let truncated = truncated.to_str().unwrap().to_string();
    let cases = [
        ("nosuch.bitnet", "No such file"),
        (truncated.as_str(), "runs past the end"),
        ("testdata/gguf", "is a directory, not a .bitnet file"),
        ("testdata/gguf/bitnet_tq.gguf", "this is a GGUF file"),
        (
            "testdata/fixtures/bitnet-2b4t/model.safetensors",
            "this is a safetensors file",
        ),
    ];
    for (model, needle) in cases {
        let o = run(&["-m", model, "-p", "x"]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(err.contains(needle), "{model}: {err}");
        let line = err.lines().find_map(|l| l.strip_prefix("error: ")).unwrap();
        assert_eq!(bitnet_format::repeated_clause(line), None, "{line}");
    }
}

/// The demo model with its header changed by `edit`, written to `dir/name`.
fn demo_with_header(dir: &Path, name: &str, edit: impl FnOnce(&mut serde_json::Value)) -> PathBuf {
    let demo = std::fs::read(root().join("testdata/demo/demo.bitnet")).unwrap();
    let mut header: serde_json::Value =
        serde_json::from_str(bitnet_run::fuzz::header_text(&demo).unwrap()).unwrap();
    edit(&mut header);
    let path = dir.join(name);
    std::fs::write(
        &path,
        bitnet_run::fuzz::with_header(&demo, &header.to_string()).unwrap(),
    )
    .unwrap();
    path
}

/// `--token-ids` runs a prompt given as ids; a model without a tokenizer then prints ids, which
/// decode (with the demo's tokenizer) to the text the same model prints when it has one.
#[test]
fn token_ids_prompt_a_model_without_a_tokenizer() {
    let dir = tempfile::tempdir().unwrap();
    let bare = demo_with_header(dir.path(), "bare.bitnet", |h| {
        h.as_object_mut().unwrap().remove("tokenizer");
    });
    let bare = bare.to_str().unwrap();

    let o = run(&["-m", bare, "-p", "ROMEO:"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("--token-ids 1,2,3"), "{}", stderr(&o));
    let o = run(&["perplexity", "-m", bare, "-f", "testdata/demo/heldout.txt"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("`logits --token-ids` takes ids")
            && stderr(&o).contains("no tokenizer"),
        "{}",
        stderr(&o)
    );

    let info = bitnet_format::BitnetFile::open(root().join("testdata/demo/demo.bitnet"))
        .unwrap()
        .header()
        .tokenizer
        .clone();
    let tok = bitnet_run::tokenizer::Tokenizer::from_info(info.as_ref()).unwrap();
    let prompt = tok.encode_prompt("ROMEO:").unwrap();
    let ids_arg = prompt
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let greedy = ["-n", "12", "--temp", "0"];

    let o = run(&[&["-m", bare, "--token-ids", &ids_arg][..], &greedy].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("printing token ids"), "{}", stderr(&o));
    let printed: Vec<u32> = String::from_utf8(o.stdout)
        .unwrap()
        .split_whitespace()
        .map(|t| t.parse().unwrap())
        .collect();
    assert_eq!(printed.len(), prompt.len() + 12);
    assert_eq!(printed[..prompt.len()], prompt[..]);

    let o = run(&[&["--token-ids", &ids_arg][..], &greedy].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8(o.stdout).unwrap();
    let decoded = tok.decode(&printed).unwrap();
    assert!(
        decoded.starts_with(text.trim_end_matches('\n')),
        "{decoded:?} vs {text:?}"
    );
    let o = run(&["--token-ids", &ids_arg, "-p", "ROMEO:"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

/// `--verify` checks every tensor's checksum before running: a changed byte the load would not
/// notice (the low byte of a float) is refused naming the tensor.
#[test]
fn verify_finds_a_changed_byte_before_running() {
    let path = root().join("testdata/demo/demo.bitnet");
    let file = bitnet_format::BitnetFile::open(&path).unwrap();
    let norm = file
        .tensors()
        .iter()
        .find(|t| t.name.ends_with("attn_norm"))
        .unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[norm.offset as usize] ^= 1;
    let dir = tempfile::tempdir().unwrap();
    let changed = dir.path().join("changed.bitnet");
    std::fs::write(&changed, bytes).unwrap();
    let changed = changed.to_str().unwrap();
    let args = ["-m", changed, "-p", "ROMEO:", "-n", "2"];

    let o = run(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(&[&args[..], &["--verify"]].concat());
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("failed verification") && err.contains(&norm.name) && err.contains("checksum"),
        "{err}"
    );
    let o = run(&["-p", "ROMEO:", "-n", "2", "--verify"]);
    assert!(o.status.success(), "{}", stderr(&o));
}

/// `tokenize` prints the ids generation runs: for the held-out text, the ids transformers'
/// tokenizer gave when the reference was made (BOS first, 7855 in all).
#[test]
fn tokenize_prints_the_ids_transformers_gives() {
    let r = reference();
    let o = run(&["tokenize", "-f", "testdata/demo/heldout.txt"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let ids: Vec<u32> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(ids.len() as u64, r["num_tokens"].as_u64().unwrap());
    let expected: Vec<u32> =
        serde_json::from_value(r["heldout_logits"]["token_ids"].clone()).unwrap();
    assert_eq!(ids[..expected.len()], expected[..]);

    let o = run(&[
        "-m",
        "testdata/demo/demo.bitnet",
        "tokenize",
        "-p",
        "ROMEO:",
        "--no-bos",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let bare: Vec<u32> = serde_json::from_slice(&o.stdout).unwrap();
    let o = run(&["tokenize", "-p", "ROMEO:"]);
    let with_bos: Vec<u32> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(with_bos[0], r["bos_token_id"].as_u64().unwrap() as u32);
    assert_eq!(with_bos[1..], bare[..]);
    let o = run(&["tokenize"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("-p TEXT or -f FILE"), "{}", stderr(&o));
}

/// `logits -o` writes like every other output: an ordinary file under the umask (not a private
/// temporary), never over an existing file without `--force`.
#[cfg(unix)]
#[test]
fn logits_output_has_ordinary_permissions_and_needs_force_to_replace() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("l.npy");
    let logits = |force: bool| {
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg("umask 022 && exec \"$0\" \"$@\"")
            .arg(env!("CARGO_BIN_EXE_bitnet-run"))
            .args(["logits", "--token-ids", "3056,2894", "-o"])
            .arg(&out)
            .current_dir(root());
        if force {
            c.arg("--force");
        }
        c.output().unwrap()
    };
    let o = logits(false);
    assert!(o.status.success(), "{}", stderr(&o));
    let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644);

    std::fs::write(&out, b"keep me").unwrap();
    let o = logits(false);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains(out.to_str().unwrap()) && err.contains("--force"),
        "{err}"
    );
    assert_eq!(std::fs::read(&out).unwrap(), b"keep me");

    let o = logits(true);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(&std::fs::read(&out).unwrap()[..6], b"\x93NUMPY");
    let entries: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(entries.len(), 1, "no temporary file left");
}

/// A model that needs more memory than is available is refused before it is loaded, naming the
/// file, with a way out; close to the limit it runs with a warning. What it needs is computed here
/// from the file's tensor table (the demo's tiled16 tensors are read in place by every kernel path)
/// and configuration: its tensors plus a KV cache of the context (`-c`, else the model's) with
/// keys and values of `-ctk`/`-ctv`. `BITNET_MEM_AVAILABLE` stands in for `MemAvailable`.
#[test]
fn a_model_that_does_not_fit_in_memory_is_refused_before_loading() {
    let model = "testdata/demo/demo.bitnet";
    let file = bitnet_format::BitnetFile::open(root().join(model)).unwrap();
    let tensors: u64 = file.tensors().iter().map(|t| t.length).sum();
    let m = &file.header().model;
    let need = |ctx: u64, key: u64, value: u64| {
        tensors
            + m.num_layers as u64 * m.num_kv_heads as u64 * m.head_dim as u64 * (key + value) * ctx
    };
    let with = |available: &str, args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_bitnet-run"))
            .args(args)
            .current_dir(root())
            .env("BITNET_MEM_AVAILABLE", available)
            .output()
            .unwrap()
    };
    let base = ["-m", model, "-p", "ROMEO:", "-n", "2"];
    let full = need(m.context_length as u64, 2, 2);

    let o = with(&(full - 1).to_string(), &base);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(o.stdout.is_empty(), "nothing runs");
    for needle in [
        "error: testdata/demo/demo.bitnet needs 0.00 GiB of memory",
        &format!("for {} positions in f16", m.context_length),
        "but 0.00 GiB is available",
        "-c",
        "--no-memory-check",
    ] {
        assert!(err.contains(needle), "{needle}: {err}");
    }
    let o = with(&full.to_string(), &base);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("warning: testdata/demo/demo.bitnet needs"));
    let o = with(&(2 * full).to_string(), &base);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("warning"), "{}", stderr(&o));

    // A smaller context fits; f32 keys do not.
    let o = with(
        &(full - 1).to_string(),
        &[&base[..], &["-c", "128"]].concat(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(need(128, 2, 2) < full - 1);
    let f32_keys = [&base[..], &["-ctk", "f32"]].concat();
    let o = with(&full.to_string(), &f32_keys);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let o = with(&need(m.context_length as u64, 4, 2).to_string(), &f32_keys);
    assert!(o.status.success(), "{}", stderr(&o));
    // Perplexity's context is 512 at most by default.
    let o = with(
        &(need(m.context_length.min(512) as u64, 2, 2) - 1).to_string(),
        &[
            "perplexity",
            "-m",
            model,
            "-f",
            "testdata/demo/heldout.txt",
            "--json",
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));

    let o = with("1", &[&base[..], &["--no-memory-check"]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    // When the tensors alone do not fit, a shorter context is no way out: the smaller layout is.
    let o = with(
        &(tensors - 1).to_string(),
        &[&base[..], &["-c", "1"]].concat(),
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("its tensors alone do not fit"), "{err}");
    assert!(err.contains("--layout compact"), "{err}");
    assert!(!err.contains("lower the context"), "{err}");

    // bench caches the deepest test: depth + the longest of -p and -n.
    let bench = [
        "bench", "-m", model, "-p", "16", "-n", "8", "-d", "0,4", "-r", "1",
    ];
    let o = with(&(need(20, 2, 2) - 1).to_string(), &bench);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("-d"), "{}", stderr(&o));
    let o = with(&need(20, 2, 2).to_string(), &bench);
    assert!(o.status.success(), "{}", stderr(&o));

    let o = with("lots", &base);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("BITNET_MEM_AVAILABLE=\"lots\""),
        "{}",
        stderr(&o)
    );
}

#[test]
fn mapped_and_resident_models_generate_the_same_tokens() {
    let demo = "testdata/demo/demo.bitnet";
    let generate = |extra: &[&str]| {
        let mut args = vec!["-m", demo, "-p", "ROMEO:", "-n", "24", "--temp", "0"];
        args.extend_from_slice(extra);
        let o = run(&args);
        assert!(o.status.success(), "{extra:?}: {}", stderr(&o));
        o.stdout
    };
    let mapped = generate(&["--mmap"]);
    assert_eq!(generate(&["--no-mmap"]), mapped);
    // The default decides by the memory available: a copy for a large machine, the map for a
    // small one; the tokens are the same.
    for available in ["100000000000", "1000"] {
        let o = Command::new(env!("CARGO_BIN_EXE_bitnet-run"))
            .args(["-m", demo, "-p", "ROMEO:", "-n", "24", "--temp", "0"])
            .args(["--no-memory-check"])
            .env("BITNET_MEM_AVAILABLE", available)
            .current_dir(root())
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(o.stdout, mapped);
    }
    let o = run(&["-m", demo, "-p", "x", "--mmap", "--no-mmap"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--no-mmap"), "{}", stderr(&o));
}
