//! A tiny stand-in for the Hugging Face Hub on 127.0.0.1, serving fixture repositories the way the
//! Hub's endpoints do for `hf-hub`: `GET /api/models/{repo}/revision/{rev}` (commit and file list)
//! and `GET /{repo}/resolve/{rev}/{file}` with `Range` support, `x-repo-commit`, `etag` and
//! `Content-Range`. It can refuse a gated repo without the right token (401), answer 404 for unknown
//! repos and files, and drop the connection halfway through a file. Standard library only (besides
//! sha2 for etags), so both the e2e tests and the CLI tests can include it.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use sha2::{Digest, Sha256};

/// One repository served by the mock.
#[derive(Clone, Debug)]
pub struct MockRepo {
    pub id: String,
    pub sha: String,
    pub files: BTreeMap<String, Vec<u8>>,
    /// Files are served only with `Authorization: Bearer <token>`; 401 otherwise.
    pub gated_token: Option<String>,
    /// Send only half of this file's body, then close the connection.
    pub drop_file: Option<String>,
    /// Listed in the repository information but answered with 404.
    pub vanished_file: Option<String>,
}

impl MockRepo {
    /// A repo holding every file of a fixture directory.
    pub fn from_dir(id: &str, dir: &Path) -> Self {
        let mut files = BTreeMap::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                files.insert(name, std::fs::read(&path).unwrap());
            }
        }
        MockRepo {
            id: id.to_string(),
            sha: "0123456789abcdef0123456789abcdef01234567".to_string(),
            files,
            gated_token: None,
            drop_file: None,
            vanished_file: None,
        }
    }
}

/// One request as the mock saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub range: Option<String>,
    pub authorization: Option<String>,
}

impl Seen {
    /// A request for file bytes (not the `bytes=0-0` probe hf-hub makes for metadata).
    pub fn is_download(&self) -> bool {
        self.path.contains("/resolve/") && self.range.as_deref() != Some("bytes=0-0")
    }
}

pub struct MockHub {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MockHub {
    pub fn start(repos: Vec<MockRepo>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let repos = Arc::new(repos);
        let thread = {
            let (seen, stop) = (seen.clone(), stop.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let (seen, repos) = (seen.clone(), repos.clone());
                    std::thread::spawn(move || serve(stream, &repos, &seen));
                }
            })
        };
        MockHub {
            port,
            seen,
            stop,
            thread: Some(thread),
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Requests that transferred file bytes.
    pub fn downloads(&self) -> Vec<String> {
        self.requests()
            .into_iter()
            .filter(Seen::is_download)
            .map(|s| s.path)
            .collect()
    }
}

impl Drop for MockHub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn respond(stream: &mut TcpStream, status: &str, headers: &[(&str, String)], body: &[u8]) {
    let mut head = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-length"))
    {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body);
    let _ = stream.flush();
}

fn error(stream: &mut TcpStream, status: &str, code: &str, message: &str) {
    let body = format!("{{\"error\":\"{message}\"}}");
    respond(
        stream,
        status,
        &[
            ("Content-Type", "application/json".into()),
            ("X-Error-Code", code.into()),
            ("X-Error-Message", message.into()),
        ],
        body.as_bytes(),
    );
}

fn serve(mut stream: TcpStream, repos: &[MockRepo], seen: &Mutex<Vec<Seen>>) {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() || line.is_empty() {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("").to_string();
    let mut headers = BTreeMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let path = target.split('?').next().unwrap_or("").to_string();
    seen.lock().unwrap().push(Seen {
        method: method.clone(),
        path: path.clone(),
        range: headers.get("range").cloned(),
        authorization: headers.get("authorization").cloned(),
    });

    if let Some(rest) = path.strip_prefix("/api/models/") {
        // {owner}/{name}/revision/{rev}
        let segments: Vec<&str> = rest.split('/').collect();
        let [owner, name, "revision", rev] = segments[..] else {
            return error(&mut stream, "404 Not Found", "RepoNotFound", "bad path");
        };
        let id = format!("{owner}/{name}");
        let Some(repo) = repos.iter().find(|r| r.id == id) else {
            return error(
                &mut stream,
                "404 Not Found",
                "RepoNotFound",
                "Repository not found",
            );
        };
        if rev != "main" && rev != repo.sha {
            return error(
                &mut stream,
                "404 Not Found",
                "RevisionNotFound",
                "Invalid rev id",
            );
        }
        let siblings: Vec<String> = repo
            .files
            .iter()
            .map(|(n, b)| format!("{{\"rfilename\":\"{n}\",\"size\":{}}}", b.len()))
            .collect();
        let body = format!(
            "{{\"id\":\"{id}\",\"sha\":\"{}\",\"siblings\":[{}]}}",
            repo.sha,
            siblings.join(",")
        );
        return respond(
            &mut stream,
            "200 OK",
            &[("Content-Type", "application/json".into())],
            body.as_bytes(),
        );
    }

    // /{owner}/{name}/resolve/{rev}/{file}
    let segments: Vec<&str> = path.trim_start_matches('/').splitn(5, '/').collect();
    let [owner, name, "resolve", rev, file] = segments[..] else {
        return error(&mut stream, "404 Not Found", "EntryNotFound", "bad path");
    };
    let id = format!("{owner}/{name}");
    let Some(repo) = repos.iter().find(|r| r.id == id) else {
        return error(
            &mut stream,
            "404 Not Found",
            "RepoNotFound",
            "Repository not found",
        );
    };
    if rev != "main" && rev != repo.sha {
        return error(
            &mut stream,
            "404 Not Found",
            "RevisionNotFound",
            "Invalid rev id",
        );
    }
    if let Some(token) = &repo.gated_token
        && headers.get("authorization") != Some(&format!("Bearer {token}"))
    {
        return error(
            &mut stream,
            "401 Unauthorized",
            "GatedRepo",
            "Access to this model is restricted",
        );
    }
    let body = match repo.files.get(file) {
        Some(b) if repo.vanished_file.as_deref() != Some(file) => b,
        _ => {
            return error(
                &mut stream,
                "404 Not Found",
                "EntryNotFound",
                "Entry not found",
            );
        }
    };
    let etag = Sha256::digest(body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>();
    let size = body.len();
    let (start, end) = match headers.get("range").and_then(|r| r.strip_prefix("bytes=")) {
        Some(spec) => {
            let (a, b) = spec.split_once('-').unwrap_or((spec, ""));
            let a: usize = a.parse().unwrap_or(0);
            let b: usize = b.parse().map(|b: usize| b + 1).unwrap_or(size);
            (a.min(size), b.min(size))
        }
        None => (0, size),
    };
    let ranged = headers.contains_key("range");
    let mut h = vec![
        ("x-repo-commit", repo.sha.clone()),
        ("ETag", format!("\"{etag}\"")),
        ("Content-Type", "application/octet-stream".into()),
        ("Content-Length", (end - start).to_string()),
    ];
    if ranged {
        h.push((
            "Content-Range",
            format!("bytes {start}-{}/{size}", end.saturating_sub(1)),
        ));
    }
    let status = if ranged {
        "206 Partial Content"
    } else {
        "200 OK"
    };
    let probe = headers.get("range").map(String::as_str) == Some("bytes=0-0");
    if repo.drop_file.as_deref() == Some(file) && !probe {
        // Promise the whole body, send half, hang up.
        let half = start + (end - start) / 2;
        let mut head = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
        for (k, v) in &h {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        let _ = stream.write_all(head.as_bytes());
        let _ = stream.write_all(&body[start..half]);
        let _ = stream.flush();
        let _ = stream.shutdown(Shutdown::Both);
        return;
    }
    respond(&mut stream, status, &h, &body[start..end]);
}
