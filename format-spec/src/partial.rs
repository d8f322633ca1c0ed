//! Outputs still being written, and how they are written: every output is made under a hidden
//! temporary name beside its destination and renamed into place when complete. The temporary files
//! and directories are registered so that a signal handler can remove them ([`remove_partial_files`]):
//! an interrupted or failed command then leaves nothing behind, not even a hidden partial file.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

struct Registry {
    paths: Vec<PathBuf>,
    /// Set by [`remove_partial_files`]: from then on nothing is created or moved into place, so a
    /// writer racing the handler cannot leave a file behind or finish an output after it ran.
    interrupted: bool,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    paths: Vec::new(),
    interrupted: false,
});

fn registry() -> MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

fn interrupted() -> io::Error {
    io::Error::new(io::ErrorKind::Interrupted, "interrupted")
}

fn remove(path: &Path) {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            // A writer may still be creating a file in it; a second pass catches that.
            for _ in 0..3 {
                if std::fs::remove_dir_all(path).is_ok() || !path.exists() {
                    break;
                }
            }
        }
        Ok(_) => {
            let _ = std::fs::remove_file(path);
        }
        Err(_) => {}
    }
}

/// Delete the temporary files and directories of every unfinished writer, and make every writer
/// still running fail instead of creating or finishing an output. Meant for signal handlers, just
/// before exit.
pub fn remove_partial_files() {
    let mut registry = registry();
    registry.interrupted = true;
    for path in registry.paths.drain(..) {
        remove(&path);
    }
}

/// The directory an output is written in, and its file name (an error for a path with none).
fn parent_and_name(dest: &Path) -> io::Result<(PathBuf, String)> {
    let name = dest.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a file path", dest.display()),
        )
    })?;
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok((parent, name.to_string_lossy().into_owned()))
}

/// Make the renames in `dir` durable; failure here cannot lose data, so it is not an error.
fn sync_dir(dir: &Path) {
    let _ = File::open(dir).and_then(|d| d.sync_all());
}

/// A registered temporary path, removed on drop unless persisted.
#[derive(Debug)]
struct Partial {
    path: PathBuf,
    persisted: bool,
}

impl Partial {
    /// Create the temporary item with `make` and register it, both under the registry's lock, so a
    /// signal cannot come between the two.
    fn create(make: impl FnOnce() -> io::Result<PathBuf>) -> io::Result<Self> {
        let mut registry = registry();
        if registry.interrupted {
            return Err(interrupted());
        }
        let path = make()?;
        registry.paths.push(path.clone());
        Ok(Partial {
            path,
            persisted: false,
        })
    }

    /// Run `commit` (the renames into place) under the registry's lock unless interrupted, and
    /// unregister the temporary path once it succeeded.
    fn commit(&mut self, commit: impl FnOnce(&Path) -> io::Result<()>) -> io::Result<()> {
        let mut registry = registry();
        if registry.interrupted {
            return Err(interrupted());
        }
        commit(&self.path)?;
        registry.paths.retain(|p| p != &self.path);
        self.persisted = true;
        Ok(())
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        if self.persisted {
            return;
        }
        let mut registry = registry();
        remove(&self.path);
        registry.paths.retain(|p| p != &self.path);
    }
}

/// A file being written for `dest`: `.NAME.XXXXXX.partial` beside it, deleted if dropped unpersisted.
#[derive(Debug)]
pub struct PartialFile(Partial);

impl PartialFile {
    /// Create the temporary file for `dest`, with the permissions of a file created normally (0666
    /// less the umask; temporary files are otherwise private, 0600). Fails with
    /// [`io::ErrorKind::Interrupted`] after [`remove_partial_files`].
    pub fn create(dest: &Path) -> io::Result<(File, PartialFile)> {
        let (parent, name) = parent_and_name(dest)?;
        let mut file = None;
        let partial = Partial::create(|| {
            let prefix = format!(".{name}.");
            let mut builder = tempfile::Builder::new();
            builder.prefix(&prefix).suffix(".partial");
            #[cfg(unix)]
            builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
            let (f, path) = builder.tempfile_in(&parent)?.into_parts();
            file = Some(f);
            path.keep().map_err(|e| e.error)
        })?;
        Ok((file.expect("set by create"), PartialFile(partial)))
    }

    /// Where the file is being written.
    pub fn path(&self) -> &Path {
        &self.0.path
    }

    /// Rename the file to `dest`, replacing what is there.
    pub fn persist(mut self, dest: &Path) -> io::Result<()> {
        self.0.commit(|path| std::fs::rename(path, dest))?;
        if let Some(dir) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(dir);
        }
        Ok(())
    }
}

/// A directory being filled for `dest`: `.NAME.XXXXXX.partial` beside it, deleted with its contents
/// if dropped unpersisted.
#[derive(Debug)]
pub struct PartialDir(Partial);

impl PartialDir {
    /// Create the temporary directory for `dest`, with the permissions of a directory created
    /// normally (0777 less the umask). Fails with [`io::ErrorKind::Interrupted`] after
    /// [`remove_partial_files`].
    pub fn create(dest: &Path) -> io::Result<PartialDir> {
        let (parent, name) = parent_and_name(dest)?;
        let partial = Partial::create(|| {
            let prefix = format!(".{name}.");
            let mut builder = tempfile::Builder::new();
            builder.prefix(&prefix).suffix(".partial");
            #[cfg(unix)]
            builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o777));
            Ok(builder.tempdir_in(&parent)?.keep())
        })?;
        Ok(PartialDir(partial))
    }

    /// Where the directory is being filled.
    pub fn path(&self) -> &Path {
        &self.0.path
    }

    /// Rename the directory to `dest`; if `dest` is an existing directory, move each entry into it
    /// instead (replacing entries of the same name, leaving the others), then remove the empty
    /// temporary directory.
    pub fn persist(mut self, dest: &Path) -> io::Result<()> {
        self.0.commit(|path| {
            if !dest.is_dir() {
                return std::fs::rename(path, dest);
            }
            for entry in std::fs::read_dir(path)? {
                let entry = entry?;
                std::fs::rename(entry.path(), dest.join(entry.file_name()))?;
            }
            std::fs::remove_dir(path)
        })?;
        if let Some(dir) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(dir);
        }
        sync_dir(dest);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn files_and_directories_appear_only_when_persisted() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.bin");
        let (mut file, partial) = PartialFile::create(&dest).unwrap();
        io::Write::write_all(&mut file, b"data").unwrap();
        let name = names(dir.path());
        assert!(
            name.len() == 1 && name[0].starts_with(".out.bin.") && name[0].ends_with(".partial"),
            "{name:?}"
        );
        drop(partial);
        assert!(names(dir.path()).is_empty());

        let (mut file, partial) = PartialFile::create(&dest).unwrap();
        io::Write::write_all(&mut file, b"data").unwrap();
        partial.persist(&dest).unwrap();
        assert_eq!(names(dir.path()), ["out.bin"]);
        assert_eq!(std::fs::read(&dest).unwrap(), b"data");

        let ckpt = dir.path().join("ckpt");
        let partial = PartialDir::create(&ckpt).unwrap();
        std::fs::write(partial.path().join("a"), b"1").unwrap();
        drop(partial);
        assert_eq!(names(dir.path()), ["out.bin"]);

        let partial = PartialDir::create(&ckpt).unwrap();
        std::fs::write(partial.path().join("a"), b"1").unwrap();
        partial.persist(&ckpt).unwrap();
        assert_eq!(names(&ckpt), ["a"]);
        // Into an existing directory: same names replaced, others kept.
        std::fs::write(ckpt.join("keep"), b"k").unwrap();
        let partial = PartialDir::create(&ckpt).unwrap();
        std::fs::write(partial.path().join("a"), b"2").unwrap();
        partial.persist(&ckpt).unwrap();
        assert_eq!(names(&ckpt), ["a", "keep"]);
        assert_eq!(std::fs::read(ckpt.join("a")).unwrap(), b"2");
        assert_eq!(names(dir.path()), ["ckpt", "out.bin"]);
    }

    #[cfg(unix)]
    #[test]
    fn permissions_are_those_of_a_normally_created_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain");
        File::create(&plain).unwrap();
        let dest = dir.path().join("out");
        let (_, partial) = PartialFile::create(&dest).unwrap();
        partial.persist(&dest).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dest), mode(&plain));
        let plain_dir = dir.path().join("plain_dir");
        std::fs::create_dir(&plain_dir).unwrap();
        let ckpt = dir.path().join("ckpt");
        PartialDir::create(&ckpt).unwrap().persist(&ckpt).unwrap();
        assert_eq!(mode(&ckpt), mode(&plain_dir));
    }
}
