//! Hugging Face Hub repositories, fetched through `hf-hub` into the standard cache (`HF_HOME`), so a
//! second run downloads nothing; `HF_TOKEN` for gated repos, `HF_HUB_OFFLINE=1` for the cache alone,
//! `HF_ENDPOINT` for mirrors (and the tests' local server).

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use hf_hub::api::Progress;
use hf_hub::api::sync::{ApiBuilder, ApiError, ApiRepo};
use hf_hub::{Cache, Repo, RepoType};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Deserialize;

/// The public Hub.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Where and how to reach the Hub; [`HubOptions::from_env`] reads the standard variables.
#[derive(Debug, Clone)]
pub struct HubOptions {
    /// Base URL, without a trailing slash (`HF_ENDPOINT`).
    pub endpoint: String,
    /// The cache's `hub` directory (`$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
    /// `~/.cache/huggingface/hub`).
    pub cache_dir: PathBuf,
    /// Access token for gated and private repos (`HF_TOKEN`, else the token file of `HF_HOME`).
    pub token: Option<String>,
    /// Use only the cache, never the network (`HF_HUB_OFFLINE=1`).
    pub offline: bool,
    /// Draw progress bars on stderr.
    pub progress: bool,
    /// How many times a dropped download is resumed before giving up.
    pub retries: usize,
}

impl HubOptions {
    /// The options the environment asks for, as the Python `huggingface_hub` reads them. Progress
    /// bars are drawn only when stderr is a terminal.
    pub fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let hf_home = var("HF_HOME").map(PathBuf::from).unwrap_or_else(|| {
            let cache = var("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| var("HOME").map(|h| Path::new(&h).join(".cache")))
                .unwrap_or_else(|| PathBuf::from(".cache"));
            cache.join("huggingface")
        });
        let cache_dir = var("HF_HUB_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| hf_home.join("hub"));
        let token = var("HF_TOKEN").or_else(|| {
            std::fs::read_to_string(hf_home.join("token"))
                .ok()
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
        });
        let offline = var("HF_HUB_OFFLINE").is_some_and(|v| {
            matches!(v.to_ascii_lowercase().as_str(), "1" | "on" | "yes" | "true")
        });
        HubOptions {
            endpoint: var("HF_ENDPOINT")
                .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string())
                .trim_end_matches('/')
                .to_string(),
            cache_dir,
            token,
            offline,
            progress: std::io::stderr().is_terminal(),
            retries: 2,
        }
    }
}

/// Why a repository or one of its files could not be had.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error(
        "Hugging Face repo {repo} (revision {revision}) was not found at {endpoint} (and there is no local directory of that name); if it is private, set HF_TOKEN"
    )]
    RepoNotFound {
        repo: String,
        revision: String,
        endpoint: String,
    },
    #[error("Hugging Face repo {repo}: file {file} was not found (revision {revision})")]
    FileNotFound {
        repo: String,
        revision: String,
        file: String,
    },
    #[error(
        "Hugging Face repo {repo}: access to {what} denied (HTTP {status}): the repo is gated or private; accept its terms on the Hub and set HF_TOKEN to a token that has access"
    )]
    Unauthorized {
        repo: String,
        what: String,
        status: u16,
    },
    #[error("Hugging Face repo {repo}: {what}: HTTP {status} from {endpoint}{detail}")]
    Http {
        repo: String,
        what: String,
        status: u16,
        endpoint: String,
        detail: String,
    },
    #[error("Hugging Face repo {repo}: {what}: cannot reach {endpoint}: {detail}")]
    Network {
        repo: String,
        what: String,
        endpoint: String,
        detail: String,
    },
    #[error("Hugging Face repo {repo}: downloading {file} failed: {detail}")]
    Download {
        repo: String,
        file: String,
        detail: String,
    },
    #[error(
        "HF_HUB_OFFLINE is set and Hugging Face repo {repo} (revision {revision}) is not in the cache at {cache}"
    )]
    NotCached {
        repo: String,
        revision: String,
        cache: PathBuf,
    },
    #[error(
        "HF_HUB_OFFLINE is set and file {file} of Hugging Face repo {repo} is not in the cached snapshot {snapshot}"
    )]
    FileNotCached {
        repo: String,
        file: String,
        snapshot: PathBuf,
    },
    #[error("Hugging Face repo {repo}: {detail}")]
    BadResponse { repo: String, detail: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Deserialize)]
struct RepoInfoJson {
    sha: String,
    #[serde(default)]
    siblings: Vec<SiblingJson>,
}

#[derive(Deserialize)]
struct SiblingJson {
    rfilename: String,
    #[serde(default)]
    size: Option<u64>,
}

/// One revision of a Hub model repository: its commit, its files, and a way to fetch them.
pub struct HubRepo {
    repo: String,
    revision: String,
    sha: String,
    /// Files of the revision and their sizes where the Hub gave them.
    files: BTreeMap<String, Option<u64>>,
    snapshot: PathBuf,
    api: Option<ApiRepo>,
    options: HubOptions,
}

impl std::fmt::Debug for HubRepo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubRepo")
            .field("repo", &self.repo)
            .field("revision", &self.revision)
            .field("sha", &self.sha)
            .finish()
    }
}

impl HubRepo {
    /// Resolve `revision` of `repo` to a commit and list its files: one request to the Hub, or, when
    /// offline, a look at the cache only.
    pub fn open(repo: &str, revision: &str, options: &HubOptions) -> Result<Self, HubError> {
        let repo_dir = options
            .cache_dir
            .join(format!("models--{}", repo.replace('/', "--")));
        if options.offline {
            return Self::open_cached(repo, revision, options, &repo_dir);
        }
        let mut builder = ApiBuilder::from_cache(Cache::new(options.cache_dir.clone()))
            .with_endpoint(options.endpoint.clone())
            .with_progress(false)
            .with_retries(options.retries);
        if let Some(token) = &options.token {
            builder = builder.with_token(Some(token.clone()));
        }
        let api = builder.build().map_err(|e| HubError::Network {
            repo: repo.to_string(),
            what: "setting up the client".into(),
            endpoint: options.endpoint.clone(),
            detail: e.to_string(),
        })?;
        let api = api.repo(Repo::with_revision(
            repo.to_string(),
            RepoType::Model,
            revision.to_string(),
        ));
        let ctx = Ctx {
            repo,
            revision,
            endpoint: &options.endpoint,
        };
        let response = api
            .info_request()
            .query("blobs", "true")
            .call()
            .map_err(|e| ctx.http_error(e, None))?;
        let info: RepoInfoJson = response.into_json().map_err(|e| HubError::BadResponse {
            repo: repo.to_string(),
            detail: format!("the repository information is not valid JSON: {e}"),
        })?;
        if !is_commit_sha(&info.sha) {
            return Err(HubError::BadResponse {
                repo: repo.to_string(),
                detail: format!("the Hub gave {:?} as the commit of {revision}", info.sha),
            });
        }
        let files = info
            .siblings
            .into_iter()
            .map(|s| (s.rfilename, s.size))
            .collect();
        Ok(HubRepo {
            repo: repo.to_string(),
            revision: revision.to_string(),
            snapshot: repo_dir.join("snapshots").join(&info.sha),
            sha: info.sha,
            files,
            api: Some(api),
            options: options.clone(),
        })
    }

    fn open_cached(
        repo: &str,
        revision: &str,
        options: &HubOptions,
        repo_dir: &Path,
    ) -> Result<Self, HubError> {
        let not_cached = || HubError::NotCached {
            repo: repo.to_string(),
            revision: revision.to_string(),
            cache: options.cache_dir.clone(),
        };
        let sha = if is_commit_sha(revision) && repo_dir.join("snapshots").join(revision).is_dir() {
            revision.to_string()
        } else {
            std::fs::read_to_string(repo_dir.join("refs").join(revision))
                .map_err(|_| not_cached())?
                .trim()
                .to_string()
        };
        let snapshot = repo_dir.join("snapshots").join(&sha);
        if sha.is_empty() || !snapshot.is_dir() {
            return Err(not_cached());
        }
        let mut files = BTreeMap::new();
        list_files(&snapshot, &snapshot, &mut files).map_err(|source| HubError::Io {
            path: snapshot.clone(),
            source,
        })?;
        Ok(HubRepo {
            repo: repo.to_string(),
            revision: revision.to_string(),
            sha,
            files,
            snapshot,
            api: None,
            options: options.clone(),
        })
    }

    pub fn repo(&self) -> &str {
        &self.repo
    }

    /// The commit the revision resolved to.
    pub fn sha(&self) -> &str {
        &self.sha
    }

    pub fn revision(&self) -> &str {
        &self.revision
    }

    /// The cache directory holding this revision's files.
    pub fn snapshot_dir(&self) -> &Path {
        &self.snapshot
    }

    /// Whether the revision has a file of this name (offline: whether the cache has it).
    pub fn has(&self, file: &str) -> bool {
        self.files.contains_key(file)
    }

    /// Every file name of the revision.
    pub fn files(&self) -> impl Iterator<Item = &str> {
        self.files.keys().map(String::as_str)
    }

    /// Local paths of `names`, downloading those the cache lacks (with progress bars).
    pub fn fetch(&self, names: &[String]) -> Result<BTreeMap<String, PathBuf>, HubError> {
        let mut paths = BTreeMap::new();
        let mut missing = Vec::new();
        for name in names {
            let path = self.snapshot.join(name);
            if path.is_file() {
                paths.insert(name.clone(), path);
            } else if self.api.is_none() {
                return Err(HubError::FileNotCached {
                    repo: self.repo.clone(),
                    file: name.clone(),
                    snapshot: self.snapshot.clone(),
                });
            } else {
                missing.push(name.clone());
            }
        }
        let Some(api) = &self.api else {
            return Ok(paths);
        };
        if missing.is_empty() {
            return Ok(paths);
        }
        let bars = Bars::new(self.options.progress, &missing, |n| {
            self.files.get(n).copied().flatten()
        });
        for name in &missing {
            let result = api.download_with_progress(name, bars.file_progress());
            let path = result.map_err(|e| self.download_error(name, e))?;
            self.check_size(name, &path)?;
            paths.insert(name.clone(), path);
        }
        bars.finish();
        Ok(paths)
    }

    /// A completed download must have the size the Hub listed; a short one is removed from the cache
    /// so the next run fetches it again.
    fn check_size(&self, name: &str, path: &Path) -> Result<(), HubError> {
        let Some(expected) = self.files.get(name).copied().flatten() else {
            return Ok(());
        };
        let actual = std::fs::metadata(path)
            .map_err(|source| HubError::Io {
                path: path.to_path_buf(),
                source,
            })?
            .len();
        if actual == expected {
            return Ok(());
        }
        if let Ok(blob) = std::fs::canonicalize(path) {
            let _ = std::fs::remove_file(blob);
        }
        let _ = std::fs::remove_file(path);
        Err(HubError::Download {
            repo: self.repo.clone(),
            file: name.to_string(),
            detail: format!("received {actual} bytes, the Hub lists {expected}"),
        })
    }

    fn download_error(&self, file: &str, error: ApiError) -> HubError {
        let ctx = Ctx {
            repo: &self.repo,
            revision: &self.revision,
            endpoint: &self.options.endpoint,
        };
        let download = |detail: String| HubError::Download {
            repo: self.repo.clone(),
            file: file.to_string(),
            detail,
        };
        match error {
            ApiError::TooManyRetries(inner) => self.download_error(file, *inner),
            ApiError::RequestError(e) => ctx.http_error(*e, Some(file)),
            ApiError::IoError(e) => download(format!("the transfer broke off: {e}")),
            ApiError::MissingHeader(h) => download(format!("the server's response lacks {h}")),
            ApiError::InvalidHeader(h) => download(format!("the server sent an invalid {h}")),
            other => download(other.to_string()),
        }
    }
}

struct Ctx<'a> {
    repo: &'a str,
    revision: &'a str,
    endpoint: &'a str,
}

impl Ctx<'_> {
    fn http_error(&self, error: ureq::Error, file: Option<&str>) -> HubError {
        let what = match file {
            Some(f) => format!("file {f}"),
            None => "the repository information".to_string(),
        };
        match error {
            ureq::Error::Status(status, response) => {
                let code = response.header("x-error-code").unwrap_or("").to_string();
                let message = response.header("x-error-message").unwrap_or("").to_string();
                let repo_missing = code == "RepoNotFound" || code == "RevisionNotFound";
                match status {
                    404 if file.is_some() && !repo_missing => HubError::FileNotFound {
                        repo: self.repo.into(),
                        revision: self.revision.into(),
                        file: file.unwrap_or_default().into(),
                    },
                    404 => HubError::RepoNotFound {
                        repo: self.repo.into(),
                        revision: self.revision.into(),
                        endpoint: self.endpoint.into(),
                    },
                    401 | 403 if code == "RepoNotFound" => HubError::RepoNotFound {
                        repo: self.repo.into(),
                        revision: self.revision.into(),
                        endpoint: self.endpoint.into(),
                    },
                    401 | 403 => HubError::Unauthorized {
                        repo: self.repo.into(),
                        what,
                        status,
                    },
                    _ => HubError::Http {
                        repo: self.repo.into(),
                        what,
                        status,
                        endpoint: self.endpoint.into(),
                        detail: if message.is_empty() {
                            String::new()
                        } else {
                            format!(": {message}")
                        },
                    },
                }
            }
            ureq::Error::Transport(t) => HubError::Network {
                repo: self.repo.into(),
                what,
                endpoint: self.endpoint.into(),
                detail: t.to_string(),
            },
        }
    }
}

fn is_commit_sha(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn list_files(
    root: &Path,
    dir: &Path,
    out: &mut BTreeMap<String, Option<u64>>,
) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            list_files(root, &path, out)?;
        } else if path.is_file() {
            let name = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .to_string_lossy()
                .replace('\\', "/");
            out.insert(name, std::fs::metadata(&path).ok().map(|m| m.len()));
        }
    }
    Ok(())
}

/// Progress bars: one per file (bytes and rate) plus an overall one; hidden when not wanted.
struct Bars {
    multi: MultiProgress,
    overall: ProgressBar,
}

impl Bars {
    fn new(enabled: bool, files: &[String], size: impl Fn(&str) -> Option<u64>) -> Self {
        let target = if enabled {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let multi = MultiProgress::with_draw_target(target);
        let total: u64 = files.iter().filter_map(|f| size(f)).sum();
        let overall = multi.add(ProgressBar::new(total));
        overall.set_style(
            ProgressStyle::with_template(
                "{msg:>32} {bytes:>10}/{total_bytes:<10} {binary_bytes_per_sec:>12} [{wide_bar}] {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        overall.set_message(format!("total ({} files)", files.len()));
        Bars { multi, overall }
    }

    fn file_progress(&self) -> FileProgress {
        FileProgress {
            multi: self.multi.clone(),
            overall: self.overall.clone(),
            bar: None,
        }
    }

    fn finish(&self) {
        self.overall.finish_and_clear();
        let _ = self.multi.clear();
    }
}

impl Drop for Bars {
    fn drop(&mut self) {
        if !self.overall.is_finished() {
            self.overall.abandon();
        }
    }
}

struct FileProgress {
    multi: MultiProgress,
    overall: ProgressBar,
    bar: Option<ProgressBar>,
}

impl Progress for FileProgress {
    fn init(&mut self, size: usize, filename: &str) {
        let bar = self.bar.get_or_insert_with(|| {
            let bar = self
                .multi
                .insert_before(&self.overall, ProgressBar::new(size as u64));
            bar.set_style(
                ProgressStyle::with_template(
                    "{msg:>32} {bytes:>10}/{total_bytes:<10} {binary_bytes_per_sec:>12} [{wide_bar}] {eta}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            let short: String = if filename.chars().count() > 32 {
                let tail: Vec<char> = filename.chars().rev().take(30).collect();
                format!("..{}", tail.into_iter().rev().collect::<String>())
            } else {
                filename.to_string()
            };
            bar.set_message(short);
            bar
        });
        bar.set_length(size as u64);
        bar.set_position(0);
    }

    fn update(&mut self, size: usize) {
        if let Some(bar) = &self.bar {
            bar.inc(size as u64);
        }
        self.overall.inc(size as u64);
    }

    fn finish(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish();
        }
    }
}

impl Drop for FileProgress {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar
            && !bar.is_finished()
        {
            bar.abandon();
        }
    }
}
