//! The host's own directory: database, compiled-code cache, guest builds.
//!
//! It must live outside the root dir (a workflow must never be able to write
//! the database or plant compiled code the host would load), it is private to
//! the user (0700), and one host process holds it at a time (an exclusive
//! `flock` on `lock`, which holds its pid), which is what lets the store
//! assume a single writer. A server also records where it listens
//! (`server.json`), so that a command the lock refuses can say which
//! `smithers-host client` command reaches that server instead.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rustix::fs::FlockOperation;

use serde::{Deserialize, Serialize};

/// File naming the server that holds the state dir.
const SERVER_RECORD: &str = "server.json";

/// Largest server record read (it is ours, but a bound costs nothing).
const MAX_RECORD_BYTES: u64 = 4096;

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
    #[error("the state dir {path} is in use by another smithers-host process{holder}")]
    Locked {
        /// State dir.
        path: String,
        /// ` (pid N)`, or ` (pid N, a server at URL)`, when known.
        holder: String,
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
    /// A server record was written (and is removed on drop).
    serving: AtomicBool,
}

/// Where the server holding a state dir listens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerRecord {
    /// The server's process.
    pub pid: u32,
    /// Its base URL, for `smithers-host client --url`.
    pub url: String,
    /// It wants a token.
    pub auth: bool,
}

/// The process holding a state dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// Its pid, when the lock file says.
    pub pid: Option<u32>,
    /// Where it serves the HTTP API, when it is a server that said so.
    pub server: Option<ServerRecord>,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.pid, &self.server) {
            (Some(pid), Some(server)) => write!(f, " (pid {pid}, a server at {})", server.url),
            (Some(pid), None) => write!(f, " (pid {pid})"),
            (None, _) => Ok(()),
        }
    }
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
        take_lock(&path, &mut lock)?;
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
        Ok(Self {
            path,
            _lock: lock,
            serving: AtomicBool::new(false),
        })
    }

    /// Who holds the state dir at `path`, or `None` when nobody does (or it
    /// does not exist). Creates nothing.
    pub fn holder(path: &Path) -> Option<Holder> {
        let mut lock = File::open(path.join("lock")).ok()?;
        // A shared lock is granted unless a holder has the exclusive one.
        if rustix::fs::flock(&lock, FlockOperation::NonBlockingLockShared).is_ok() {
            return None;
        }
        Some(holder_of(path, &mut lock))
    }

    /// Records that this process serves the HTTP API at `url`; the record
    /// goes when the state dir is closed.
    pub fn record_server(&self, url: &str, auth: bool) -> Result<(), StateDirError> {
        let record = ServerRecord {
            pid: std::process::id(),
            url: url.to_string(),
            auth,
        };
        let path = self.path.join(SERVER_RECORD);
        let text = serde_json::to_string(&record).expect("a record serializes");
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .and_then(|mut file| file.write_all(text.as_bytes()))
            .map_err(io(&path))?;
        self.serving.store(true, Ordering::SeqCst);
        Ok(())
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

impl Drop for StateDir {
    fn drop(&mut self) {
        if self.serving.load(Ordering::SeqCst) {
            let _ = std::fs::remove_file(self.path.join(SERVER_RECORD));
        }
    }
}

/// How long a start waits for a lock whose recorded holder has exited.
const RELEASE_GRACE: Duration = Duration::from_secs(3);

/// Takes the exclusive lock. A lock held although the process the lock file
/// names has exited is on its way out: the dead host's descriptor lives on
/// for a moment in a child caught between fork and exec, or in a process
/// that is still being torn down. A restart right after a kill waits for it
/// (briefly) instead of refusing; a live holder is refused at once.
fn take_lock(dir: &Path, lock: &mut File) -> Result<(), StateDirError> {
    let deadline = Instant::now() + RELEASE_GRACE;
    loop {
        if rustix::fs::flock(&*lock, FlockOperation::NonBlockingLockExclusive).is_ok() {
            return Ok(());
        }
        let holder = holder_of(dir, lock);
        let gone = holder.pid.is_some_and(|pid| !process_alive(pid));
        if !gone || Instant::now() >= deadline {
            return Err(StateDirError::Locked {
                path: dir.display().to_string(),
                holder: holder.to_string(),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether `pid` is a process that has not exited (a zombie has: its
/// descriptors are closed).
fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses and
        // may itself hold spaces or parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| !matches!(state, "Z" | "X" | "x")),
        Err(_) => false,
    }
}

/// The holder named by the lock file, and its server record if the record
/// is that process's (a record left by a killed server names another pid).
fn holder_of(dir: &Path, lock: &mut File) -> Holder {
    let mut text = String::new();
    let _ = lock.rewind();
    let _ = lock.take(64).read_to_string(&mut text);
    let pid = text.trim().parse::<u32>().ok();
    let server = File::open(dir.join(SERVER_RECORD))
        .ok()
        .and_then(|file| {
            let mut text = String::new();
            file.take(MAX_RECORD_BYTES).read_to_string(&mut text).ok()?;
            serde_json::from_str::<ServerRecord>(&text).ok()
        })
        .filter(|record| Some(record.pid) == pid);
    Holder { pid, server }
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

    /// The lock file as a dead host left it, its lock still held for
    /// `for_ms` by a descriptor the dead host shared with a child.
    fn held_by_a_dead_host(dir: &Path, pid: u32, for_ms: u64) -> std::thread::JoinHandle<()> {
        std::fs::create_dir_all(dir).unwrap();
        let mut lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.join("lock"))
            .unwrap();
        rustix::fs::flock(&lock, FlockOperation::NonBlockingLockExclusive).unwrap();
        write!(lock, "{pid}").unwrap();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(for_ms));
            drop(lock);
        })
    }

    #[test]
    fn a_restart_waits_for_a_dead_holders_lock_but_not_for_a_live_one() {
        let root = tempfile::tempdir().unwrap();
        let root_path = std::fs::canonicalize(root.path()).unwrap();
        let mut exited = std::process::Command::new("true").spawn().unwrap();
        let dead = exited.id();
        exited.wait().unwrap();

        let outside = tempfile::tempdir().unwrap();
        let release = held_by_a_dead_host(outside.path(), dead, 300);
        let started = Instant::now();
        let opened = StateDir::open(outside.path(), &root_path);
        assert!(opened.is_ok(), "{opened:?}");
        assert!(started.elapsed() >= Duration::from_millis(250));
        release.join().unwrap();

        let other = tempfile::tempdir().unwrap();
        let release = held_by_a_dead_host(other.path(), std::process::id(), 1000);
        let started = Instant::now();
        let refused = StateDir::open(other.path(), &root_path);
        assert!(
            matches!(refused, Err(StateDirError::Locked { .. })),
            "{refused:?}"
        );
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "a live holder was waited for"
        );
        release.join().unwrap();
    }

    #[test]
    fn the_holder_and_the_server_it_recorded_are_known_until_it_closes() {
        let root = tempfile::tempdir().unwrap();
        let root_path = std::fs::canonicalize(root.path()).unwrap();
        let outside = tempfile::tempdir().unwrap();
        assert_eq!(StateDir::holder(outside.path()), None);
        let held = StateDir::open(outside.path(), &root_path).unwrap();
        let pid = Some(std::process::id());
        assert_eq!(
            StateDir::holder(outside.path()),
            Some(Holder { pid, server: None })
        );
        held.record_server("http://127.0.0.1:1", true).unwrap();
        let holder = StateDir::holder(outside.path()).unwrap();
        assert_eq!(holder.server.as_ref().unwrap().url, "http://127.0.0.1:1");
        let refused = StateDir::open(outside.path(), &root_path).unwrap_err();
        assert!(
            refused
                .to_string()
                .contains("a server at http://127.0.0.1:1"),
            "{refused}"
        );
        drop(held);
        assert_eq!(StateDir::holder(outside.path()), None);
        assert!(!outside.path().join(SERVER_RECORD).exists());
    }
}
