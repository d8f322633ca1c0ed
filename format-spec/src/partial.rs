//! Temporary files of writers still in progress, so a Ctrl-C handler can remove them: an interrupted
//! conversion then leaves nothing behind, not even a hidden partial file.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

static PARTIAL: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Keeps a temporary file on the list for as long as it lives.
pub(crate) struct Registered(PathBuf);

impl Registered {
    pub(crate) fn new(path: &Path) -> Self {
        PARTIAL
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(path.to_path_buf());
        Registered(path.to_path_buf())
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        PARTIAL
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|p| p != &self.0);
    }
}

/// Delete the temporary files of every unfinished writer. Meant for signal handlers, just before exit.
pub fn remove_partial_files() {
    for path in PARTIAL.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
        let _ = std::fs::remove_file(path);
    }
}
