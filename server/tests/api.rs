//! `bitnet-serve` over HTTP on 127.0.0.1 (an OS-chosen port), with the bundled demo model: the
//! OpenAI wire format as clients read it, every error status, cancellation, prompt reuse,
//! batching exactness against `bitnet-run`, and graceful shutdown. All traffic is local and
//! bounded.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

struct Server {
    child: Child,
    base: String,
}

impl Server {
    fn start(args: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_bitnet-serve"))
            .args(["--port", "0"])
            .args(args)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let addr = loop {
            let line = lines
                .next()
                .expect("the server prints its address")
                .unwrap();
            if let Some(rest) = line.split("listening on http://").nth(1) {
                break rest.split_whitespace().next().unwrap().to_string();
            }
        };
        // Keep draining stderr so the server never blocks on it.
        std::thread::spawn(move || lines.for_each(drop));
        let server = Server {
            child,
            base: format!("http://{addr}"),
        };
        let start = Instant::now();
        while server.get("/health").0 != 200 {
            assert!(start.elapsed() < Duration::from_secs(30), "never healthy");
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        key: Option<&str>,
    ) -> (u16, String) {
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(60))
            .build();
        let mut req = agent.request(method, &format!("{}{path}", self.base));
        if let Some(k) = key {
            req = req.set("Authorization", &format!("Bearer {k}"));
        }
        let result = match body {
            Some(b) => req.set("Content-Type", "application/json").send_string(b),
            None => req.call(),
        };
        match result {
            Ok(r) => (r.status(), r.into_string().unwrap()),
            Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap()),
            Err(e) => panic!("{method} {path}: {e}"),
        }
    }

    fn get(&self, path: &str) -> (u16, String) {
        self.request("GET", path, None, None)
    }

    fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let (code, text) = self.request("POST", path, Some(&body.to_string()), None);
        (
            code,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// The `data:` payloads of a streamed response, in order.
    fn stream(&self, path: &str, body: &Value) -> Vec<String> {
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(60))
            .build();
        let r = agent
            .post(&format!("{}{path}", self.base))
            .send_json(body.clone())
            .unwrap();
        assert_eq!(r.header("content-type"), Some("text/event-stream"));
        BufReader::new(r.into_reader())
            .lines()
            .map(|l| l.unwrap())
            .filter_map(|l| l.strip_prefix("data: ").map(str::to_string))
            .collect()
    }

    fn metric(&self, name: &str) -> f64 {
        let (_, text) = self.get("/metrics");
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
            .parse()
            .unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn error_of(v: &Value) -> (&str, Option<&str>) {
    let e = &v["error"];
    assert!(e["message"].is_string() && e["type"].is_string(), "{v}");
    (e["message"].as_str().unwrap(), e["param"].as_str())
}

#[test]
fn models_chat_and_completions_carry_usage() {
    let s = Server::start(&[]);
    let (code, text) = s.get("/v1/models");
    assert_eq!(code, 200);
    let models: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(models["data"][0]["id"], "bitnet-demo");
    let (code, chat) = s.post(
        "/v1/chat/completions",
        &json!({"model": "x", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 5, "temperature": 0, "unknown_field": 1}),
    );
    assert_eq!(code, 200, "{chat}");
    assert_eq!(chat["object"], "chat.completion");
    assert_eq!(chat["choices"][0]["message"]["role"], "assistant");
    assert_eq!(chat["choices"][0]["finish_reason"], "length");
    let u = &chat["usage"];
    assert_eq!(u["completion_tokens"], 5);
    assert_eq!(
        u["total_tokens"].as_u64(),
        Some(u["prompt_tokens"].as_u64().unwrap() + 5)
    );
    // A prompt of token ids, with ignore_eos: exactly max_tokens.
    let (code, c) = s.post(
        "/v1/completions",
        &json!({"prompt": [1, 40, 41], "max_tokens": 7, "ignore_eos": true, "seed": 3}),
    );
    assert_eq!(code, 200, "{c}");
    assert_eq!(c["object"], "text_completion");
    assert_eq!(c["usage"]["prompt_tokens"], 3);
    assert_eq!(c["usage"]["completion_tokens"], 7);
    // n choices, each its own seed.
    let (code, c) = s.post(
        "/v1/completions",
        &json!({"prompt": "ROMEO:", "max_tokens": 6, "n": 3, "ignore_eos": true}),
    );
    assert_eq!(code, 200, "{c}");
    assert_eq!(c["choices"].as_array().unwrap().len(), 3);
    assert_eq!(c["usage"]["completion_tokens"], 18);
}

#[test]
fn streams_have_the_openai_chunk_order_and_one_id() {
    let s = Server::start(&[]);
    let events = s.stream(
        "/v1/chat/completions",
        &json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 6, "temperature": 0,
                "stream": true, "stream_options": {"include_usage": true}}),
    );
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let id = &chunks[0]["id"];
    assert!(
        chunks
            .iter()
            .all(|c| &c["id"] == id && c["object"] == "chat.completion.chunk")
    );
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"].as_array().unwrap().len(), 0);
    assert_eq!(usage["usage"]["completion_tokens"], 6);
    let finish = &chunks[chunks.len() - 2]["choices"][0];
    assert_eq!(finish["finish_reason"], "length");
    let content: Vec<&Value> = chunks[1..chunks.len() - 2]
        .iter()
        .map(|c| &c["choices"][0]["delta"]["content"])
        .collect();
    assert!(
        content.len() >= 2 && content.iter().all(|c| c.is_string()),
        "{chunks:?}"
    );
    // The streamed text equals the non-streamed one (same greedy request).
    let streamed: String = content.iter().map(|c| c.as_str().unwrap()).collect();
    let (_, whole) = s.post(
        "/v1/chat/completions",
        &json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 6, "temperature": 0}),
    );
    assert_eq!(whole["choices"][0]["message"]["content"], streamed.as_str());
}

#[test]
fn greedy_requests_alone_or_eight_at_once_match_bitnet_run() {
    let prompts = [
        "ROMEO:",
        "JULIET:\nO",
        "KING",
        "First Citizen:",
        "To be",
        "A",
        "O, what",
        "Now is the winter",
    ];
    // The reference: bitnet-run's own greedy continuation (its stdout is prompt + continuation).
    let bitnet_run =
        env!("CARGO_MANIFEST_DIR").to_string() + "/../target/" + profile() + "/bitnet-run";
    let reference: Vec<String> = prompts
        .iter()
        .map(|p| {
            let out = Command::new(&bitnet_run)
                .args(["-p", p, "-n", "16", "--temp", "0"])
                .output()
                .expect("bitnet-run is built by this workspace's tests");
            assert!(out.status.success());
            let text = String::from_utf8(out.stdout).unwrap();
            text.strip_prefix(p)
                .unwrap()
                .trim_end_matches('\n')
                .to_string()
        })
        .collect();
    let s = Server::start(&["-np", "8"]);
    let body = |p: &str| json!({"prompt": p, "max_tokens": 16, "temperature": 0});
    let complete = |p: &str| {
        let (code, c) = s.post("/v1/completions", &body(p));
        assert_eq!(code, 200, "{c}");
        c["choices"][0]["text"].as_str().unwrap().to_string()
    };
    let alone: Vec<String> = prompts.iter().map(|p| complete(p)).collect();
    let together: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = prompts
            .iter()
            .map(|p| scope.spawn(|| complete(p)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for ((r, a), t) in reference.iter().zip(&alone).zip(&together) {
        // bitnet-run stops at end-of-sequence as the server does, and prints the same text.
        assert_eq!(a.trim_end(), r.trim_end());
        assert_eq!(t, a);
    }
}

/// The directory cargo builds this test's binaries in (`debug` for the test profile).
fn profile() -> &'static str {
    let exe = env!("CARGO_BIN_EXE_bitnet-serve");
    if exe.contains("/release/") {
        "release"
    } else {
        "debug"
    }
}

#[test]
fn the_next_turn_of_a_chat_reports_cached_tokens() {
    let s = Server::start(&["-np", "1"]);
    let mut messages = vec![json!({"role": "user", "content": "Tell me of Rome."})];
    let (_, first) = s.post(
        "/v1/chat/completions",
        &json!({"messages": messages, "max_tokens": 8, "temperature": 0}),
    );
    assert_eq!(first["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
    let prompt_tokens = first["usage"]["prompt_tokens"].as_u64().unwrap();
    messages
        .push(json!({"role": "assistant", "content": first["choices"][0]["message"]["content"]}));
    messages.push(json!({"role": "user", "content": "And then?"}));
    let (_, second) = s.post(
        "/v1/chat/completions",
        &json!({"messages": messages, "max_tokens": 8, "temperature": 0}),
    );
    // The first turn's prompt is re-used up to where the re-rendered conversation tokenizes
    // differently (the generated reply re-tokenized as text may merge across its start).
    let cached = second["usage"]["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap();
    assert!(
        cached > prompt_tokens / 2 && cached < prompt_tokens + 8,
        "{second}"
    );
    // Re-use changes nothing: a server that never saw the first turn says the same.
    let fresh = Server::start(&["-np", "1"]);
    let (_, again) = fresh.post(
        "/v1/chat/completions",
        &json!({"messages": messages, "max_tokens": 8, "temperature": 0}),
    );
    assert_eq!(again["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
    assert_eq!(again["choices"], second["choices"]);
}

#[test]
fn bad_requests_get_400_with_the_field_named() {
    let s = Server::start(&["-c", "64"]);
    let (code, text) = s.request("POST", "/v1/chat/completions", Some("{not json"), None);
    assert_eq!(code, 400);
    let v: Value = serde_json::from_str(&text).unwrap();
    assert!(error_of(&v).0.contains("invalid JSON"));
    let cases = [
        ("/v1/chat/completions", json!({}), "messages"),
        ("/v1/chat/completions", json!({"messages": []}), "messages"),
        (
            "/v1/completions",
            json!({"prompt": "x", "temperature": 3}),
            "temperature",
        ),
        (
            "/v1/completions",
            json!({"prompt": "x", "top_p": 0}),
            "top_p",
        ),
        (
            "/v1/completions",
            json!({"prompt": "x", "max_tokens": 0}),
            "max_tokens",
        ),
        ("/v1/completions", json!({"prompt": "x", "n": 17}), "n"),
        (
            "/v1/completions",
            json!({"prompt": "x", "stop": ["a", "b", "c", "d", "e"]}),
            "stop",
        ),
        (
            "/v1/completions",
            json!({"prompt": "x", "presence_penalty": 9}),
            "presence_penalty",
        ),
        (
            "/v1/completions",
            json!({"prompt": "x", "logit_bias": {"nope": 1}}),
            "logit_bias",
        ),
        (
            "/v1/completions",
            json!({"prompt": [1, 99999999]}),
            "prompt",
        ),
        ("/v1/completions", json!({"max_tokens": 3}), "prompt"),
    ];
    for (path, body, param) in cases {
        let (code, v) = s.post(path, &body);
        assert_eq!(code, 400, "{body}: {v}");
        assert_eq!(error_of(&v).1, Some(param), "{body}: {v}");
    }
    // A prompt longer than the slot's context: the message names both.
    let long = "ROMEO: ".repeat(100);
    let (code, v) = s.post("/v1/completions", &json!({"prompt": long}));
    assert_eq!(code, 400);
    let message = error_of(&v).0;
    assert!(
        message.contains("tokens") && message.contains("context of 64"),
        "{message}"
    );
    // A body over the limit is refused from its Content-Length, before it is sent.
    let addr = s.base.strip_prefix("http://").unwrap();
    let mut conn = TcpStream::connect(addr).unwrap();
    write!(
        conn,
        "POST /v1/completions HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        5 << 20
    )
    .unwrap();
    let (head, body) = read_response(&mut conn);
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    error_of(&serde_json::from_str(&body).unwrap());
}

/// One HTTP/1.1 response from a raw connection: its head and its body (by Content-Length; the
/// server may keep the connection open).
fn read_response(conn: &mut TcpStream) -> (String, String) {
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut bytes = Vec::new();
    let mut byte = [0u8; 1];
    while !bytes.ends_with(b"\r\n\r\n") {
        conn.read_exact(&mut byte).unwrap();
        bytes.push(byte[0]);
    }
    let head = String::from_utf8(bytes).unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length: ")
                .map(|v| v.trim().parse().unwrap())
        })
        .expect("a Content-Length");
    let mut body = vec![0u8; length];
    conn.read_exact(&mut body).unwrap();
    (head, String::from_utf8(body).unwrap())
}

#[test]
fn the_api_key_guards_everything_but_health_and_models() {
    let s = Server::start(&["--api-key", "sesame"]);
    assert_eq!(s.get("/health").0, 200);
    assert_eq!(s.get("/v1/models").0, 200);
    let body = json!({"prompt": "x", "max_tokens": 1}).to_string();
    for key in [None, Some("wrong"), Some("sesame-and-more")] {
        let (code, text) = s.request("POST", "/v1/completions", Some(&body), key);
        assert_eq!(code, 401, "{key:?}");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["error"]["type"], "authentication_error");
    }
    assert_eq!(s.request("GET", "/metrics", None, None).0, 401);
    let (code, _) = s.request("POST", "/v1/completions", Some(&body), Some("sesame"));
    assert_eq!(code, 200);
}

/// Reads one SSE event from a raw connection, then drops it; the server must cancel the
/// request within a step and free the slot.
#[test]
fn a_client_that_disconnects_frees_its_slot() {
    // The scalar kernels on one thread: generating the 250 tokens takes long enough to look.
    let s = Server::start(&["-np", "1", "-t", "1", "--kernel", "scalar"]);
    let addr = s.base.strip_prefix("http://").unwrap();
    let body = json!({"prompt": "ROMEO:", "max_tokens": 250, "ignore_eos": true, "stream": true})
        .to_string();
    let mut conn = TcpStream::connect(addr).unwrap();
    write!(
        conn,
        "POST /v1/completions HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    // The headers go out once the request is queued; its first token shows it has the slot.
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("data: ") {
        let mut buf = [0u8; 256];
        let n = conn.read(&mut buf).unwrap();
        assert!(n > 0, "the stream ended early");
        seen.extend_from_slice(&buf[..n]);
    }
    assert!(String::from_utf8_lossy(&seen).contains("200 OK"));
    assert_eq!(s.metric("bitnet_slots_busy"), 1.0);
    drop(conn);
    let start = Instant::now();
    while s.metric("bitnet_slots_busy") != 0.0 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the slot stays busy"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(s.metric("bitnet_generated_tokens_total") < 250.0);
}

#[test]
fn a_full_queue_gets_429_with_retry_after() {
    let s = Server::start(&["-np", "1", "--queue", "1", "-t", "1", "--kernel", "scalar"]);
    let long = json!({"prompt": "ROMEO:", "max_tokens": 240, "ignore_eos": true});
    std::thread::scope(|scope| {
        // One request runs, one waits; the third is refused while both are there.
        let a = scope.spawn(|| s.post("/v1/completions", &long).0);
        let start = Instant::now();
        while s.metric("bitnet_slots_busy") != 1.0 {
            assert!(start.elapsed() < Duration::from_secs(10));
        }
        let b = scope.spawn(|| s.post("/v1/completions", &long).0);
        while s.metric("bitnet_requests_waiting") != 1.0 {
            assert!(start.elapsed() < Duration::from_secs(10));
        }
        let agent = ureq::agent();
        match agent
            .post(&format!("{}/v1/completions", s.base))
            .send_json(long.clone())
        {
            Err(ureq::Error::Status(429, r)) => {
                assert_eq!(r.header("retry-after"), Some("1"));
                let v: Value = r.into_json().unwrap();
                error_of(&v);
            }
            other => panic!("expected 429, got {other:?}"),
        }
        assert_eq!(a.join().unwrap(), 200);
        assert_eq!(b.join().unwrap(), 200);
    });
}

#[test]
fn stop_strings_and_tokenize_round_trip() {
    let s = Server::start(&[]);
    let (_, plain) = s.post(
        "/v1/completions",
        &json!({"prompt": "ROMEO:", "max_tokens": 30, "temperature": 0, "ignore_eos": true}),
    );
    let text = plain["choices"][0]["text"].as_str().unwrap();
    // Stop at a piece of the text seen: the reply is everything before it.
    let stop: String = text.chars().skip(6).take(3).collect();
    let (_, cut) = s.post(
        "/v1/completions",
        &json!({"prompt": "ROMEO:", "max_tokens": 30, "temperature": 0, "ignore_eos": true, "stop": stop}),
    );
    assert_eq!(cut["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        cut["choices"][0]["text"].as_str().unwrap(),
        &text[..text.find(&stop).unwrap()]
    );
    let (code, t) = s.post("/tokenize", &json!({"content": "ROMEO: hello"}));
    assert_eq!(code, 200);
    let (code, d) = s.post("/detokenize", &json!({"tokens": t["tokens"]}));
    assert_eq!(code, 200);
    assert_eq!(d["content"], "ROMEO: hello");
}

#[test]
fn sigterm_stops_the_server_with_exit_status_0() {
    let mut s = Server::start(&[]);
    let status = Command::new("kill")
        .args(["-TERM", &s.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let start = Instant::now();
    let exit = loop {
        if let Some(st) = s.child.try_wait().unwrap() {
            break st;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "still running");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(exit.code(), Some(0));
}

/// The model and every slot's KV cache must fit in the available memory (`BITNET_MEM_AVAILABLE`
/// stands in for `MemAvailable`): otherwise the server exits before loading, saying what is
/// needed, what is available and which options shrink it; `--no-memory-check` starts it anyway.
#[test]
fn slots_whose_caches_do_not_fit_in_memory_are_refused_at_start() {
    let file = bitnet_format::BitnetFile::open(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/demo/demo.bitnet"),
    )
    .unwrap();
    let tensors: u64 = file.tensors().iter().map(|t| t.length).sum();
    let m = &file.header().model;
    // 8 slots of 256 positions, f16 keys and values.
    let need =
        tensors + 8 * 256 * m.num_layers as u64 * m.num_kv_heads as u64 * m.head_dim as u64 * 4;
    let run = |available: u64, extra: &[&str]| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_bitnet-serve"))
            .args(["--port", "0", "-np", "8", "-c", "256"])
            .args(extra)
            .env("BITNET_MEM_AVAILABLE", available.to_string())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut text = String::new();
        let start = Instant::now();
        loop {
            assert!(start.elapsed() < Duration::from_secs(30), "{text}");
            let Some(line) = lines.next() else { break };
            let line = line.unwrap();
            text += &line;
            text.push('\n');
            if line.contains("ready:") {
                child.kill().unwrap();
                break;
            }
        }
        (child.wait().unwrap(), text)
    };
    let (status, text) = run(need - 1, &[]);
    assert_eq!(status.code(), Some(1), "{text}");
    for needle in [
        "for 8 slots of 256 positions in f16",
        "-np",
        "--no-memory-check",
    ] {
        assert!(text.contains(needle), "{needle}: {text}");
    }
    let (_, text) = run(need, &[]);
    assert!(
        text.contains("warning:") && text.contains("ready:"),
        "{text}"
    );
    let (_, text) = run(need - 1, &["--no-memory-check"]);
    assert!(
        text.contains("ready:") && !text.contains("warning:"),
        "{text}"
    );
}

#[test]
fn logprobs_come_with_each_token_in_both_shapes() {
    let s = Server::start(&["-np", "2"]);
    let msgs = json!([{"role": "user", "content": "Hello"}]);
    // Chat, not streamed: one entry per generated token, the greedy token the most likely one.
    let (code, v) = s.post(
        "/v1/chat/completions",
        &json!({"messages": msgs, "max_tokens": 6, "temperature": 0, "logprobs": true, "top_logprobs": 2}),
    );
    assert_eq!(code, 200, "{v}");
    let content = v["choices"][0]["logprobs"]["content"].as_array().unwrap();
    assert_eq!(
        content.len() as u64,
        v["usage"]["completion_tokens"].as_u64().unwrap()
    );
    for t in content {
        let top = t["top_logprobs"].as_array().unwrap();
        assert_eq!(top.len(), 2);
        assert_eq!(top[0]["token"], t["token"]);
        assert_eq!(top[0]["logprob"], t["logprob"]);
        assert!(top[0]["logprob"].as_f64() >= top[1]["logprob"].as_f64());
        let bytes: Vec<u8> = t["bytes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b.as_u64().unwrap() as u8)
            .collect();
        assert_eq!(bytes, t["token"].as_str().unwrap().as_bytes());
    }
    // Without the flag, `logprobs` is null.
    let (_, plain) = s.post(
        "/v1/chat/completions",
        &json!({"messages": msgs, "max_tokens": 2}),
    );
    assert!(plain["choices"][0]["logprobs"].is_null());

    // Chat, streamed: content chunks carry their tokens' entries; together one per token.
    let events = s.stream(
        "/v1/chat/completions",
        &json!({"messages": msgs, "max_tokens": 6, "temperature": 0, "stream": true,
                "logprobs": true, "stream_options": {"include_usage": true}}),
    );
    let chunks: Vec<Value> = events
        .iter()
        .filter(|e| *e != "[DONE]")
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let streamed: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["logprobs"]["content"].as_array())
        .flatten()
        .collect();
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(
        streamed.len() as u64,
        usage["completion_tokens"].as_u64().unwrap()
    );
    let tokens: Vec<&Value> = content.iter().map(|t| &t["token"]).collect();
    let again: Vec<&Value> = streamed.iter().map(|t| &t["token"]).collect();
    assert_eq!(tokens, again, "streamed and whole responses agree");

    // Completions: the legacy parallel arrays, offsets counting the tokens' characters.
    let (code, v) = s.post(
        "/v1/completions",
        &json!({"prompt": "ROMEO:", "max_tokens": 5, "temperature": 0, "logprobs": 3}),
    );
    assert_eq!(code, 200, "{v}");
    let lp = &v["choices"][0]["logprobs"];
    let toks: Vec<&str> = lp["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(toks.len(), 5);
    assert_eq!(lp["token_logprobs"].as_array().unwrap().len(), 5);
    let mut offset = 0;
    for (i, t) in toks.iter().enumerate() {
        assert_eq!(lp["text_offset"][i].as_u64().unwrap(), offset);
        offset += t.chars().count() as u64;
        let top = lp["top_logprobs"][i].as_object().unwrap();
        assert!(top.len() <= 3 && !top.is_empty());
        assert!(top.contains_key(*t), "the greedy token is among the top 3");
    }

    // Out of range or inconsistent requests name the field.
    for (path, body, param) in [
        (
            "/v1/chat/completions",
            json!({"messages": msgs, "top_logprobs": 2}),
            "top_logprobs",
        ),
        (
            "/v1/chat/completions",
            json!({"messages": msgs, "logprobs": true, "top_logprobs": 21}),
            "top_logprobs",
        ),
        (
            "/v1/chat/completions",
            json!({"messages": msgs, "logprobs": 3}),
            "logprobs",
        ),
        (
            "/v1/completions",
            json!({"prompt": "x", "logprobs": 6}),
            "logprobs",
        ),
        (
            "/v1/completions",
            json!({"prompt": "x", "logprobs": true}),
            "logprobs",
        ),
    ] {
        let (code, v) = s.post(path, &body);
        assert_eq!(code, 400, "{body}: {v}");
        assert_eq!(error_of(&v).1, Some(param), "{body}");
    }
}

/// The chat page: public even when the server has a key (its API calls are not), served with
/// its type and a CSP that allows only this server's own files, and every file it links to
/// loads, byte for byte the one in server/ui/.
#[test]
fn the_chat_page_and_its_files_are_public_with_a_strict_csp() {
    let s = Server::start(&["--api-key", "sesame"]);
    let get = |path: &str| {
        let r = ureq::get(&format!("{}{path}", s.base))
            .call()
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let header = |name| r.header(name).unwrap_or_default().to_string();
        let (ty, csp) = (header("content-type"), header("content-security-policy"));
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(
            r.header("x-content-type-options"),
            Some("nosniff"),
            "{path}"
        );
        (ty, csp, r.into_string().unwrap())
    };
    let (ty, csp, html) = get("/");
    assert_eq!(ty, "text/html; charset=utf-8");
    let directives: Vec<&str> = csp.split(';').map(str::trim).collect();
    assert!(directives.contains(&"default-src 'self'"), "{csp}");
    assert!(!csp.contains("unsafe-"), "{csp}");
    // Nothing the CSP would block: no inline script or style.
    assert_eq!(
        html.matches("<script").count(),
        html.matches("<script src=").count()
    );
    assert!(!html.contains("<style") && !html.contains(" style="));

    let mut linked: Vec<&str> = ["src=\"", "href=\""]
        .iter()
        .flat_map(|attr| html.split(attr).skip(1))
        .map(|rest| &rest[..rest.find('"').unwrap()])
        .collect();
    linked.sort_unstable();
    assert_eq!(linked, ["app.js", "favicon.svg", "style.css"]);
    for (file, want) in [
        ("app.js", "text/javascript; charset=utf-8"),
        ("favicon.svg", "image/svg+xml"),
        ("style.css", "text/css; charset=utf-8"),
    ] {
        let (ty, csp, body) = get(&format!("/{file}"));
        assert_eq!(ty, want, "{file}");
        assert!(csp.contains("default-src 'self'"), "{file}");
        let path = format!("{}/ui/{file}", env!("CARGO_MANIFEST_DIR"));
        assert_eq!(body, std::fs::read_to_string(&path).unwrap(), "{file}");
        // The script puts model output and user input into the page as text only: no HTML sink.
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
        ] {
            assert!(!body.contains(sink), "{file} uses {sink}");
        }
    }

    let body = json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1});
    let body = body.to_string();
    let chat = |key| {
        s.request("POST", "/v1/chat/completions", Some(&body), key)
            .0
    };
    assert_eq!(chat(None), 401);
    assert_eq!(chat(Some("sesame")), 200);
}

#[test]
fn a_bad_max_stall_is_refused_naming_the_option() {
    for bad in ["-5", "x", "NaN"] {
        let out = Command::new(env!("CARGO_BIN_EXE_bitnet-serve"))
            .args(["--port", "0", &format!("--max-stall={bad}")])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains("--max-stall") && err.contains(bad), "{err}");
    }
}
