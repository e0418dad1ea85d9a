//! The host's own directory: database, compiled-code cache, guest builds.
//!
//! It must live outside the root dir (a workflow must never be able to write
//! the database or plant compiled code the host would load), it is private to
//! the user (0700), and one host process holds it at a time (an exclusive
//! `flock` on `lock`), which is what lets the store assume a single writer.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Why the state dir cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StateDirError {
    /// It is the root dir or inside it.
    #[error(
        "the state dir {state} is inside the root dir {root}: workflows could write it; \
         choose a --state-dir outside the project"
    )]
    InsideRoot {
        /// State dir.
        state: String,
        /// Root dir.
        root: String,
    },
    /// Another process holds it.
    #[error("the state dir {path} is in use by another smithers-host process{pid}")]
    Locked {
        /// State dir.
        path: String,
        /// ` (pid N)` when known.
        pid: String,
    },
    /// No default location could be determined.
    #[error("cannot determine a default state dir (no HOME); pass --state-dir")]
    NoDefault,
    /// A filesystem error.
    #[error("state dir {path}: {source}")]
    Io {
        /// Path involved.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StateDirError + '_ {
    move |source| StateDirError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// An opened, locked state dir.
#[derive(Debug)]
pub struct StateDir {
    path: PathBuf,
    _lock: File,
}

impl StateDir {
    /// The default state dir for a root dir: under the user's state dir
    /// (`$XDG_STATE_HOME`, else `~/.local/state`), one per project.
    pub fn default_for(root_dir: &Path) -> Result<PathBuf, StateDirError> {
        use sha1::{Digest, Sha1};
        let base = directories::BaseDirs::new().ok_or(StateDirError::NoDefault)?;
        let base = base
            .state_dir()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| base.home_dir().join(".local/state"));
        let name = root_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "root".into());
        let digest = hex::encode(Sha1::digest(root_dir.as_os_str().as_encoded_bytes()));
        Ok(base
            .join("smithers-host")
            .join(format!("{name}-{}", &digest[..12])))
    }

    /// Creates (0700) and locks `path`, refusing a location inside `root_dir`.
    pub fn open(path: &Path, root_dir: &Path) -> Result<Self, StateDirError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
            .map_err(io(path))?;
        let path = std::fs::canonicalize(path).map_err(io(path))?;
        if path.starts_with(root_dir) {
            return Err(StateDirError::InsideRoot {
                state: path.display().to_string(),
                root: root_dir.display().to_string(),
            });
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700))
            .map_err(io(&path))?;
        let lock_path = path.join("lock");
        let mut lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        if rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
            let mut holder = String::new();
            let _ = lock.read_to_string(&mut holder);
            let holder = holder.trim();
            return Err(StateDirError::Locked {
                path: path.display().to_string(),
                pid: if holder.is_empty() {
                    String::new()
                } else {
                    format!(" (pid {holder})")
                },
            });
        }
        lock.set_len(0).map_err(io(&lock_path))?;
        lock.rewind().map_err(io(&lock_path))?;
        write!(lock, "{}", std::process::id()).map_err(io(&lock_path))?;
        for sub in ["cache", "build"] {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(path.join(sub))
                .map_err(io(&path))?;
        }
        Ok(Self { path, _lock: lock })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The database file.
    pub fn database(&self) -> PathBuf {
        self.path.join("smithers.db")
    }

    /// The compiled-code cache.
    pub fn cache_dir(&self) -> PathBuf {
        self.path.join("cache")
    }

    /// The cargo target dir for guest crates.
    pub fn build_dir(&self) -> PathBuf {
        self.path.join("build")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_a_state_dir_inside_the_root_and_a_second_holder() {
        let root = tempfile::tempdir().unwrap();
        let root_path = std::fs::canonicalize(root.path()).unwrap();
        let inside = root_path.join("state");
        assert!(matches!(
            StateDir::open(&inside, &root_path),
            Err(StateDirError::InsideRoot { .. })
        ));
        let outside = tempfile::tempdir().unwrap();
        let first = StateDir::open(outside.path(), &root_path).unwrap();
        let second = StateDir::open(outside.path(), &root_path);
        assert!(
            matches!(second, Err(StateDirError::Locked { .. })),
            "{second:?}"
        );
        drop(first);
        assert!(StateDir::open(outside.path(), &root_path).is_ok());
    }
}
