//! Resolving user-supplied paths under the root dir, and reading files the
//! host did not write.
//!
//! Every path a client or a workflow names (a `workflowPath`, a bash `cwd`) is
//! checked twice: lexically (no `..` climbs out, absolute paths must start with
//! the root) and after the kernel resolves symlinks (the canonical path must
//! still be inside the canonical root). Either failure is an escape.
//!
//! Files in the root dir (and in a guest build's target dir) are written by a
//! workflow that may be hostile and may still be running: [`read_beneath`]
//! opens them relative to the directory with `openat2(RESOLVE_BENEATH)`, so a
//! symlink swapped in after the check cannot lead the host outside, without
//! blocking (a FIFO or device is refused, not read), and reads at most a
//! bound (a sparse 1 GB file is refused from its size, before any read).

use std::io::Read;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{FileType, Mode, OFlags, ResolveFlags};

/// Why a path was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PathError {
    /// The path leaves the root dir, lexically or through a symlink.
    #[error("path escapes the root directory: {0}")]
    Escape(String),
    /// The path is empty, not UTF-8, contains NUL or is otherwise unusable.
    #[error("invalid path: {0}")]
    Invalid(String),
    /// The path is inside the root but does not exist.
    #[error("no such file or directory: {0}")]
    NotFound(String),
}

/// Joins `user` onto `root` without touching the filesystem and rejects any
/// result that is not `root` itself or below it. `root` must be absolute and
/// normalised (as returned by [`std::fs::canonicalize`]).
pub fn resolve_lexically(root: &Path, user: &str) -> Result<PathBuf, PathError> {
    if user.is_empty() || user.contains('\0') {
        return Err(PathError::Invalid(format!("{user:?}")));
    }
    let candidate = Path::new(user);
    let joined = if candidate.is_absolute() {
        candidate.to_path_buf()
    } else {
        root.join(candidate)
    };
    let mut normal = PathBuf::new();
    for component in joined.components() {
        match component {
            Component::Prefix(_) => return Err(PathError::Invalid(user.to_string())),
            Component::RootDir => normal.push(Component::RootDir),
            Component::CurDir => {}
            Component::ParentDir => {
                if !normal.pop() {
                    return Err(PathError::Escape(user.to_string()));
                }
            }
            Component::Normal(part) => normal.push(part),
        }
    }
    if normal.starts_with(root) {
        Ok(normal)
    } else {
        Err(PathError::Escape(user.to_string()))
    }
}

/// Resolves `user` under `root` lexically, then canonicalises it and checks
/// again, so that a symlink inside the root pointing outside is an escape.
/// The target must exist.
pub fn resolve_existing(root: &Path, user: &str) -> Result<PathBuf, PathError> {
    let lexical = resolve_lexically(root, user)?;
    let real = std::fs::canonicalize(&lexical).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => PathError::NotFound(user.to_string()),
        _ => PathError::Invalid(format!("{user}: {e}")),
    })?;
    if real.starts_with(root) {
        Ok(real)
    } else {
        Err(PathError::Escape(format!("{user} (via symlink)")))
    }
}

/// Why a file the host wanted to read was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Nothing there.
    #[error("no such file")]
    NotFound,
    /// A directory, FIFO, socket or device.
    #[error("not a regular file (a {0})")]
    NotRegular(&'static str),
    /// Larger than the bound.
    #[error("{size} bytes, more than the limit of {limit}")]
    TooLarge {
        /// Its size (at least).
        size: u64,
        /// The bound.
        limit: u64,
    },
    /// It is reached only by leaving the directory (`..`, a symlink out).
    #[error("it lies outside its directory")]
    Escape,
    /// The kernel refused.
    #[error("{0}")]
    Io(std::io::Error),
}

/// Reads the regular file `path` (absolute, under `base`, or relative to it)
/// without following anything out of `base`, without blocking on special
/// files and without reading more than `limit` bytes.
pub fn read_beneath(base: &Path, path: &Path, limit: u64) -> Result<Vec<u8>, ReadError> {
    let relative = if path.is_absolute() {
        path.strip_prefix(base).map_err(|_| ReadError::Escape)?
    } else {
        path
    };
    let relative = if relative.as_os_str().is_empty() {
        Path::new(".")
    } else {
        relative
    };
    let dir = rustix::fs::open(
        base,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| ReadError::Io(e.into()))?;
    let fd = rustix::fs::openat2(
        &dir,
        relative,
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
    )
    .map_err(|e| match e {
        rustix::io::Errno::NOENT => ReadError::NotFound,
        rustix::io::Errno::XDEV | rustix::io::Errno::LOOP => ReadError::Escape,
        other => ReadError::Io(other.into()),
    })?;
    let stat = rustix::fs::fstat(&fd).map_err(|e| ReadError::Io(e.into()))?;
    let kind = FileType::from_raw_mode(stat.st_mode);
    if kind != FileType::RegularFile {
        return Err(ReadError::NotRegular(match kind {
            FileType::Directory => "directory",
            FileType::Fifo => "named pipe",
            FileType::Socket => "socket",
            FileType::CharacterDevice | FileType::BlockDevice => "device",
            _ => "special file",
        }));
    }
    let size = stat.st_size.max(0) as u64;
    if size > limit {
        return Err(ReadError::TooLarge { size, limit });
    }
    let mut bytes = Vec::with_capacity(size as usize);
    // The file may grow while it is read: never take more than the bound.
    std::fs::File::from(fd)
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(ReadError::Io)?;
    if bytes.len() as u64 > limit {
        return Err(ReadError::TooLarge {
            size: bytes.len() as u64,
            limit,
        });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_bounded_regular_and_beneath() {
        let outside = tempfile::tempdir().unwrap();
        let root_dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(root_dir.path()).unwrap();
        std::fs::write(outside.path().join("secret"), b"secret").unwrap();
        std::fs::write(root.join("small"), b"12345").unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), root.join("out")).unwrap();
        std::os::unix::fs::symlink("small", root.join("in")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            root.join("fifo"),
            FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let sparse = std::fs::File::create(root.join("sparse")).unwrap();
        sparse.set_len(1 << 30).unwrap();

        assert_eq!(
            read_beneath(&root, &root.join("small"), 5).unwrap(),
            b"12345"
        );
        assert_eq!(read_beneath(&root, Path::new("in"), 5).unwrap(), b"12345");
        assert!(matches!(
            read_beneath(&root, &root.join("small"), 4),
            Err(ReadError::TooLarge { .. })
        ));
        assert!(matches!(
            read_beneath(&root, &root.join("out"), 99),
            Err(ReadError::Escape)
        ));
        assert!(matches!(
            read_beneath(&root, &root.join("fifo"), 99),
            Err(ReadError::NotRegular("named pipe"))
        ));
        assert!(matches!(
            read_beneath(&root, &root, 99),
            Err(ReadError::NotRegular("directory"))
        ));
        assert!(
            matches!(read_beneath(&root, &root.join("sparse"), 1 << 20), Err(ReadError::TooLarge { size, .. }) if size == 1 << 30)
        );
        assert!(matches!(
            read_beneath(&root, &root.join("missing"), 9),
            Err(ReadError::NotFound)
        ));
        assert!(matches!(
            read_beneath(&root, outside.path(), 9),
            Err(ReadError::Escape)
        ));
    }

    #[test]
    fn relative_paths_land_under_the_root() {
        let root = Path::new("/srv/proj");
        assert_eq!(
            resolve_lexically(root, "a/./b").unwrap(),
            PathBuf::from("/srv/proj/a/b")
        );
        assert_eq!(
            resolve_lexically(root, ".").unwrap(),
            PathBuf::from("/srv/proj")
        );
    }

    #[test]
    fn dot_dot_and_foreign_absolute_paths_escape() {
        let root = Path::new("/srv/proj");
        assert!(matches!(
            resolve_lexically(root, "../x"),
            Err(PathError::Escape(_))
        ));
        assert!(matches!(
            resolve_lexically(root, "a/../../x"),
            Err(PathError::Escape(_))
        ));
        assert!(matches!(
            resolve_lexically(root, "/etc/passwd"),
            Err(PathError::Escape(_))
        ));
        assert!(matches!(
            resolve_lexically(root, "/srv/projector"),
            Err(PathError::Escape(_))
        ));
        assert!(resolve_lexically(root, "/srv/proj/a/../b").is_ok());
    }

    #[test]
    fn empty_and_nul_paths_are_invalid() {
        let root = Path::new("/srv/proj");
        assert!(matches!(
            resolve_lexically(root, ""),
            Err(PathError::Invalid(_))
        ));
        assert!(matches!(
            resolve_lexically(root, "a\0b"),
            Err(PathError::Invalid(_))
        ));
    }

    #[test]
    fn symlinks_out_of_the_root_escape() {
        let outside = tempfile::tempdir().unwrap();
        let root_dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(root_dir.path()).unwrap();
        std::os::unix::fs::symlink(outside.path(), root.join("link")).unwrap();
        std::fs::create_dir(root.join("inside")).unwrap();
        assert!(matches!(
            resolve_existing(&root, "link"),
            Err(PathError::Escape(_))
        ));
        assert_eq!(
            resolve_existing(&root, "inside").unwrap(),
            root.join("inside")
        );
        assert!(matches!(
            resolve_existing(&root, "missing"),
            Err(PathError::NotFound(_))
        ));
    }
}
