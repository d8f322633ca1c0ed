//! Where a checkpoint comes from (a Hugging Face repo or a local directory) and access to its files:
//! small JSON and tokenizer files read whole, weights memory-mapped. Every file read is recorded for
//! the provenance.

pub mod directory;
pub mod hub;
pub mod safetensors;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use bitnet_format::Source;
use serde_json::Value;

pub use hub::{HubError, HubOptions, HubRepo};
pub use safetensors::{SourceTensor, Weights};

/// The checkpoint's configuration.
pub const CONFIG: &str = "config.json";
/// Lists the shards of a sharded checkpoint.
pub const INDEX: &str = "model.safetensors.index.json";
/// Small files read when present, besides `config.json`.
pub const AUXILIARY_FILES: [&str; 8] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "generation_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    INDEX,
];

/// Why a checkpoint could not be found or read.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{arg}: no such file or directory, and not a Hugging Face repo id (owner/name)")]
    NotFound { arg: String },
    #[error(
        "{path}: not a checkpoint directory; give a directory with config.json and *.safetensors, or a Hugging Face repo id"
    )]
    NotADirectory { path: PathBuf },
    #[error("{path}: GGUF input is not supported yet; convert from the Hugging Face checkpoint")]
    GgufUnsupported { path: PathBuf },
    #[error(
        "--revision {revision}: only a Hugging Face repo has revisions, not the local directory {path}"
    )]
    RevisionForDirectory { revision: String, path: PathBuf },
    #[error("{where_}: no config.json (a checkpoint holds config.json and *.safetensors)")]
    NoConfig { where_: String },
    #[error("{where_}: no *.safetensors weights{hint}")]
    NoWeights { where_: String, hint: String },
    #[error("{file}: {detail}")]
    BadIndex { file: PathBuf, detail: String },
    #[error("{file}: not a valid JSON file: {detail}")]
    BadJson { file: PathBuf, detail: String },
    #[error("{file}: not a valid safetensors file: {detail}")]
    BadSafetensors { file: PathBuf, detail: String },
    #[error("tensor {name} appears in both {first} and {second}")]
    DuplicateTensor {
        name: String,
        first: String,
        second: String,
    },
    #[error(transparent)]
    Hub(#[from] HubError),
}

/// What the user named as the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    /// A Hugging Face model repository at a revision (branch, tag or commit).
    Hub { repo: String, revision: String },
    /// A local checkpoint directory, with the path as given on the command line.
    Directory { path: PathBuf },
}

impl SourceSpec {
    /// Interpret a command-line SOURCE: an existing directory, else a repo id `owner/name`.
    pub fn parse(arg: &str, revision: Option<&str>) -> Result<Self, SourceError> {
        let path = Path::new(arg);
        if path.is_dir() {
            if let Some(revision) = revision {
                return Err(SourceError::RevisionForDirectory {
                    revision: revision.to_string(),
                    path: path.to_path_buf(),
                });
            }
            return Ok(SourceSpec::Directory {
                path: path.to_path_buf(),
            });
        }
        if path.exists() {
            let is_gguf = path
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("gguf"));
            return Err(if is_gguf {
                SourceError::GgufUnsupported {
                    path: path.to_path_buf(),
                }
            } else {
                SourceError::NotADirectory {
                    path: path.to_path_buf(),
                }
            });
        }
        if is_repo_id(arg) {
            return Ok(SourceSpec::Hub {
                repo: arg.to_string(),
                revision: revision.unwrap_or("main").to_string(),
            });
        }
        Err(SourceError::NotFound {
            arg: arg.to_string(),
        })
    }
}

/// The part of a checkpoint directory's path that names the model: its own name, or for a Hugging
/// Face cache snapshot (`models--owner--name/snapshots/REV`) the `models--owner--name` above it.
/// The folders above say nothing about the model (a clone of this repository in a folder called
/// `falcon` must not make every checkpoint in it a Falcon).
fn directory_name_hint(path: &Path) -> String {
    let names: Vec<String> = path
        .components()
        .filter_map(|c| match c {
            std::path::Component::Normal(n) => Some(n.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect();
    match names.as_slice() {
        [.., repo, snapshots, _] if snapshots == "snapshots" && repo.starts_with("models--") => {
            repo.clone()
        }
        [.., last] => last.clone(),
        [] => String::new(),
    }
}

/// `owner/name` with the characters the Hub allows.
pub fn is_repo_id(s: &str) -> bool {
    let Some((owner, name)) = s.split_once('/') else {
        return false;
    };
    let part_ok = |p: &str| {
        !p.is_empty()
            && p != "."
            && p != ".."
            && !p.starts_with(['-', '.'])
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    };
    part_ok(owner) && part_ok(name)
}

/// A checkpoint's files, found locally or fetched from the Hub.
pub struct Checkpoint {
    provenance: Source,
    /// Where to say the files are in messages (`microsoft/x` or the directory).
    label: String,
    /// Files available locally, by their name in the checkpoint.
    files: BTreeMap<String, PathBuf>,
    shards: Vec<String>,
    weight_map: Option<BTreeMap<String, String>>,
    hub: Option<HubRepo>,
    read: Mutex<BTreeSet<String>>,
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint")
            .field("label", &self.label)
            .field("shards", &self.shards)
            .finish()
    }
}

impl Checkpoint {
    /// Find the checkpoint and make its configuration and tokenizer files available locally
    /// (downloading them if needed). The weights come with [`Checkpoint::fetch_weights`], so a
    /// checkpoint this converter cannot handle is refused before gigabytes are downloaded.
    pub fn open(spec: &SourceSpec, hub: &HubOptions) -> Result<Self, SourceError> {
        match spec {
            SourceSpec::Directory { path } => Self::open_directory(path),
            SourceSpec::Hub { repo, revision } => Self::open_hub(repo, revision, hub),
        }
    }

    fn open_directory(path: &Path) -> Result<Self, SourceError> {
        let files = directory::list(path)?;
        let label = path.display().to_string();
        let available: BTreeSet<&str> = files.keys().map(String::as_str).collect();
        let mut checkpoint = Checkpoint {
            provenance: Source::Directory {
                path: path.to_string_lossy().into_owned(),
            },
            label,
            files: BTreeMap::new(),
            shards: Vec::new(),
            weight_map: None,
            hub: None,
            read: Mutex::new(BTreeSet::new()),
        };
        let shard_candidates: Vec<String> = available
            .iter()
            .filter(|n| n.ends_with(".safetensors"))
            .map(|n| n.to_string())
            .collect();
        let has_gguf = available.iter().any(|n| n.ends_with(".gguf"));
        checkpoint.files = files;
        checkpoint.resolve_layout(&shard_candidates, has_gguf)?;
        Ok(checkpoint)
    }

    fn open_hub(repo: &str, revision: &str, options: &HubOptions) -> Result<Self, SourceError> {
        let hub = HubRepo::open(repo, revision, options)?;
        if !hub.has(CONFIG) {
            return Err(SourceError::NoConfig {
                where_: format!("Hugging Face repo {repo} (revision {revision})"),
            });
        }
        let small: Vec<String> = std::iter::once(CONFIG)
            .chain(AUXILIARY_FILES)
            .filter(|f| hub.has(f))
            .map(str::to_string)
            .collect();
        let files = hub.fetch(&small)?;
        let shard_candidates: Vec<String> = hub
            .files()
            .filter(|n| n.ends_with(".safetensors") && !n.contains('/'))
            .map(str::to_string)
            .collect();
        let has_gguf = hub.files().any(|n| n.ends_with(".gguf"));
        let mut checkpoint = Checkpoint {
            provenance: Source::HuggingFace {
                repo: repo.to_string(),
                revision: hub.sha().to_string(),
            },
            label: format!("Hugging Face repo {repo}"),
            files,
            shards: Vec::new(),
            weight_map: None,
            hub: Some(hub),
            read: Mutex::new(BTreeSet::new()),
        };
        checkpoint.resolve_layout(&shard_candidates, has_gguf)?;
        Ok(checkpoint)
    }

    /// Decide which safetensors files hold the weights: those of the index, or all of them.
    fn resolve_layout(&mut self, candidates: &[String], has_gguf: bool) -> Result<(), SourceError> {
        if !self.files.contains_key(CONFIG) {
            return Err(SourceError::NoConfig {
                where_: self.label.clone(),
            });
        }
        if let Some(index) = self.read_json(INDEX)? {
            let index_path = self.files[INDEX].clone();
            let bad = |detail: &str| SourceError::BadIndex {
                file: index_path.clone(),
                detail: detail.to_string(),
            };
            let map = index
                .get("weight_map")
                .and_then(Value::as_object)
                .ok_or_else(|| bad("no \"weight_map\" object"))?;
            let mut weight_map = BTreeMap::new();
            for (tensor, shard) in map {
                let shard = shard
                    .as_str()
                    .ok_or_else(|| bad(&format!("weight_map entry {tensor} is not a file name")))?;
                weight_map.insert(tensor.clone(), shard.to_string());
            }
            let shards: BTreeSet<&String> = weight_map.values().collect();
            for shard in &shards {
                let known = candidates.iter().any(|c| c == *shard);
                if !known || shard.contains("..") {
                    return Err(bad(&format!(
                        "names shard {shard}, which {} does not have",
                        self.label
                    )));
                }
            }
            self.shards = shards.into_iter().cloned().collect();
            self.weight_map = Some(weight_map);
        } else {
            self.shards = candidates.to_vec();
        }
        if self.shards.is_empty() {
            return Err(SourceError::NoWeights {
                where_: self.label.clone(),
                hint: if has_gguf {
                    " (it has GGUF files; GGUF input is not supported yet)".into()
                } else {
                    String::new()
                },
            });
        }
        Ok(())
    }

    /// Make the weight files available locally (downloading them from the Hub if needed).
    pub fn fetch_weights(&mut self) -> Result<(), SourceError> {
        if let Some(hub) = &self.hub {
            let missing: Vec<String> = self
                .shards
                .iter()
                .filter(|s| !self.files.contains_key(*s))
                .cloned()
                .collect();
            let fetched = hub.fetch(&missing)?;
            self.files.extend(fetched);
        }
        // A directory's shards were listed with its files.
        Ok(())
    }

    /// Map the weight files (after [`Checkpoint::fetch_weights`]).
    pub fn weights(&self) -> Result<Weights, SourceError> {
        let mut shards = Vec::with_capacity(self.shards.len());
        for name in &self.shards {
            let path = self
                .files
                .get(name)
                .cloned()
                .ok_or_else(|| SourceError::NoWeights {
                    where_: self.label.clone(),
                    hint: format!(" ({name} was not fetched)"),
                })?;
            self.mark_read(name);
            shards.push((name.clone(), path));
        }
        let index = self.weight_map.as_ref().map(|m| (INDEX, m));
        Weights::open(&shards, index)
    }

    /// The provenance source: the repo and resolved commit, or the directory as given.
    pub fn provenance(&self) -> &Source {
        &self.provenance
    }

    /// `Hugging Face repo owner/name` or the directory path, for messages.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The repo id for a Hub source, the directory name otherwise (used to recognise model names).
    pub fn name_hint(&self) -> String {
        match &self.provenance {
            Source::HuggingFace { repo, .. } => repo.clone(),
            Source::Directory { path } => directory_name_hint(Path::new(path)),
            _ => String::new(),
        }
    }

    /// Whether the checkpoint has this file.
    pub fn has(&self, name: &str) -> bool {
        self.files.contains_key(name)
    }

    /// The local path of a file, if the checkpoint has it.
    pub fn path(&self, name: &str) -> Option<&Path> {
        self.files.get(name).map(PathBuf::as_path)
    }

    fn mark_read(&self, name: &str) {
        self.read
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string());
    }

    /// The bytes of a file, or `None` if the checkpoint lacks it; recorded as read.
    pub fn read_bytes(&self, name: &str) -> Result<Option<Vec<u8>>, SourceError> {
        let Some(path) = self.files.get(name) else {
            return Ok(None);
        };
        let bytes = std::fs::read(path).map_err(|source| SourceError::Io {
            path: path.clone(),
            source,
        })?;
        self.mark_read(name);
        Ok(Some(bytes))
    }

    /// A JSON file parsed, or `None` if the checkpoint lacks it; recorded as read.
    pub fn read_json(&self, name: &str) -> Result<Option<Value>, SourceError> {
        let Some(bytes) = self.read_bytes(name)? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| SourceError::BadJson {
                file: self.files[name].clone(),
                detail: e.to_string(),
            })
    }

    /// Every file read so far, by name, with its local path (sorted by name).
    pub fn files_read(&self) -> Vec<(String, PathBuf)> {
        let read = self.read.lock().unwrap_or_else(|e| e.into_inner());
        read.iter()
            .filter_map(|n| self.files.get(n).map(|p| (n.clone(), p.clone())))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::directory_name_hint;
    use std::path::Path;

    #[test]
    fn a_directory_is_named_by_itself_or_by_its_hub_cache_repo() {
        for (path, hint) in [
            ("/work/falcon/ckpt/llama3-8b", "llama3-8b"),
            ("./my-checkpoint/", "my-checkpoint"),
            (
                "/c/hub/models--tiiuae--Falcon-E-1B-Instruct/snapshots/0123abcd",
                "models--tiiuae--Falcon-E-1B-Instruct",
            ),
            ("/tmp/snapshots/x", "x"),
            ("/", ""),
        ] {
            assert_eq!(directory_name_hint(Path::new(path)), hint, "{path}");
        }
    }
}
