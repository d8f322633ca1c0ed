//! `bitnet-loadgen` against the real `bitnet-serve` (the bundled demo model, 127.0.0.1, an
//! OS-chosen port): its report must agree with what was asked and with the server's own
//! /metrics counters. Every run is a few requests of a few tokens, each with a time limit.
//!
//! The server binary is the one cargo builds for bitnet-serve's own tests, found beside this
//! test's binary: run `cargo test --workspace` or `cargo test -p bitnet-loadgen -p bitnet-serve`
//! (not `-p bitnet-loadgen` alone, nor a filter such as `--test serve`, which leave it unbuilt or
//! as it was).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// `target/<profile>/bitnet-serve`, next to `target/<profile>/deps/<this test>`.
fn bitnet_serve() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps");
    let bin = dir.join(format!("bitnet-serve{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "{} is not built: run `cargo test -p bitnet-loadgen -p bitnet-serve` (or --workspace)",
        bin.display()
    );
    bin
}

struct Server {
    child: Child,
    base: String,
}

impl Server {
    fn start(args: &[&str]) -> Server {
        let mut child = Command::new(bitnet_serve())
            .args(["--port", "0", "-t", "1"])
            .args(args)
            .stderr(Stdio::piped())
            .spawn()
            .expect("bitnet-serve starts");
        let mut lines = BufReader::new(child.stderr.take().expect("piped")).lines();
        let addr = loop {
            let line = lines
                .next()
                .expect("bitnet-serve prints its address")
                .expect("stderr is text");
            if let Some(rest) = line.split("listening on http://").nth(1) {
                break rest
                    .split_whitespace()
                    .next()
                    .expect("an address")
                    .to_string();
            }
        };
        // Keep draining stderr so the server never blocks on it.
        std::thread::spawn(move || lines.for_each(drop));
        let server = Server {
            child,
            base: format!("http://{addr}"),
        };
        let start = Instant::now();
        while ureq::get(&format!("{}/health", server.base))
            .call()
            .is_err()
        {
            assert!(start.elapsed() < Duration::from_secs(60), "never healthy");
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    /// A counter of /metrics (`bitnet_requests_total` and the like).
    fn metric(&self, name: &str) -> f64 {
        let text = ureq::get(&format!("{}/metrics", self.base))
            .call()
            .expect("/metrics")
            .into_string()
            .expect("text");
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
            .parse()
            .expect("a number")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run bitnet-loadgen with `args`, killed if it takes more than two minutes.
fn loadgen(args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_bitnet-loadgen"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("bitnet-loadgen starts");
    let start = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if start.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("bitnet-loadgen {args:?} ran for more than two minutes");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

fn json_lines(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .expect("the --json file")
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect()
}

fn temp_path(name: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("bitnet-loadgen-{}-{name}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

fn ms(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} is not a number in {v}"))
}

#[test]
fn the_report_agrees_with_the_request_and_with_the_servers_metrics() {
    let s = Server::start(&["-np", "2"]);
    let before = [
        s.metric("bitnet_requests_total"),
        s.metric("bitnet_generated_tokens_total"),
        s.metric("bitnet_prompt_tokens_total"),
    ];
    let json = temp_path("report.jsonl");
    let out = loadgen(&[
        "--url",
        &s.base,
        "--concurrency",
        "1,2",
        "--requests-per-user",
        "2",
        "--prompt-tokens",
        "16",
        "--max-tokens",
        "8",
        "--vocab",
        "3000",
        "--warmup",
        "1",
        "--json",
        json.to_str().expect("UTF-8 path"),
        "--tag",
        "program=bitnet-serve",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let levels = json_lines(&json);
    assert_eq!(levels.len(), 2, "{levels:?}");
    for (level, c) in levels.iter().zip([1u64, 2]) {
        assert_eq!(level["concurrency"], c);
        assert_eq!(level["requests"], 2 * c);
        assert_eq!(level["errors"], 0);
        assert_eq!(level["generated_tokens"], 2 * c * 8);
        // One chunk per token: the demo model's replies here decode token by token (a piece
        // held back, such as part of a UTF-8 character, would make fewer chunks).
        assert_eq!(level["chunks"], 2 * c * 8);
        assert_eq!(level["tags"]["program"], "bitnet-serve");
        assert!(ms(level, "ttft_p50_ms") <= ms(level, "ttft_p99_ms"));
        assert!(ms(level, "itl_p50_ms") <= ms(level, "itl_p99_ms"));
        assert!(ms(level, "ttft_p50_ms") > 0.0 && ms(level, "itl_p50_ms") > 0.0);
        let rate = ms(level, "generated_tokens") / ms(level, "wall_s");
        assert!((ms(level, "tokens_per_s") - rate).abs() < 1e-6 * rate);
        // One table row per level.
        assert!(
            stdout
                .lines()
                .any(|l| l.split_whitespace().next() == Some(&c.to_string())),
            "{stdout}"
        );
    }
    // The server saw exactly the warm-up and the measured requests, with their prompt and
    // generated tokens.
    let requests = 1 + 2 + 4;
    let after = [
        s.metric("bitnet_requests_total"),
        s.metric("bitnet_generated_tokens_total"),
        s.metric("bitnet_prompt_tokens_total"),
    ];
    assert_eq!(after[0] - before[0], requests as f64);
    assert_eq!(after[1] - before[1], (requests * 8) as f64);
    assert_eq!(after[2] - before[2], (requests * 16) as f64);
    let _ = std::fs::remove_file(&json);
}

#[test]
fn chat_streams_are_measured_from_their_content() {
    let s = Server::start(&["-np", "2"]);
    let json = temp_path("chat.jsonl");
    let out = loadgen(&[
        "--url",
        &s.base,
        "--endpoint",
        "chat",
        "--concurrency",
        "2",
        "--requests-per-user",
        "1",
        "--prompt-tokens",
        "12",
        "--max-tokens",
        "6",
        "--warmup",
        "0",
        "--json",
        json.to_str().expect("UTF-8 path"),
    ]);
    assert!(out.status.success(), "{out:?}");
    let levels = json_lines(&json);
    assert_eq!(levels.len(), 1);
    assert_eq!(levels[0]["endpoint"], "chat");
    assert_eq!(levels[0]["errors"], 0);
    assert_eq!(levels[0]["generated_tokens"], 12);
    assert!(levels[0]["chunks"].as_u64().unwrap() >= 2);
    let _ = std::fs::remove_file(&json);
}

#[test]
fn failures_are_counted_by_kind_and_fail_the_run() {
    // The key guards the generation endpoints but not /v1/models: every request gets 401.
    let s = Server::start(&["--api-key", "sesame"]);
    let json = temp_path("401.jsonl");
    let out = loadgen(&[
        "--url",
        &s.base,
        "--concurrency",
        "2",
        "--requests-per-user",
        "2",
        "--warmup",
        "0",
        "--json",
        json.to_str().expect("UTF-8 path"),
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let level = &json_lines(&json)[0];
    assert_eq!(level["requests"], 4);
    assert_eq!(level["errors"], 4);
    assert_eq!(level["error_kinds"]["HTTP 401"], 4);
    assert_eq!(level["generated_tokens"], 0);
    assert!(level["ttft_p50_ms"].is_null());
    assert!(String::from_utf8_lossy(&out.stdout).contains("4 failed: HTTP 401"));

    // A request that cannot generate max_tokens (the slot's context is full first) is a
    // failure, not a shorter sample.
    let small = Server::start(&["-c", "24"]);
    let out = loadgen(&[
        "--url",
        &small.base,
        "--concurrency",
        "1",
        "--requests-per-user",
        "1",
        "--prompt-tokens",
        "16",
        "--max-tokens",
        "12",
        "--warmup",
        "0",
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("1 failed: token count"), "{stdout}");
    assert!(stdout.contains("not max_tokens = 12"), "{stdout}");
    let _ = std::fs::remove_file(&json);
}

#[test]
fn a_server_that_is_not_there_is_a_clear_error() {
    // A port that was free a moment ago: nothing listens on it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let out = loadgen(&["--url", &format!("http://127.0.0.1:{port}")]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot reach the server"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    for bad in ["not a url", "https://127.0.0.1:1"] {
        let out = loadgen(&["--url", bad]);
        assert_eq!(out.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&out.stderr).contains("--url"));
    }
}
