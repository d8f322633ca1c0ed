//! Local checkpoint directories: `config.json` plus one `*.safetensors` file, or several listed by
//! `model.safetensors.index.json`, plus whatever tokenizer files are there.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::SourceError;

/// The files of a directory that a conversion may read, by name.
pub(super) fn list(dir: &Path) -> Result<BTreeMap<String, PathBuf>, SourceError> {
    let io = |source| SourceError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let path = entry.path();
        if path.is_file()
            && let Some(name) = path.file_name().and_then(|n| n.to_str())
        {
            files.insert(name.to_string(), path.clone());
        }
    }
    Ok(files)
}
