//! Resolving user-supplied paths under the root dir.
//!
//! Every path a client or a workflow names (a `workflowPath`, a bash `cwd`) is
//! checked twice: lexically (no `..` climbs out, absolute paths must start with
//! the root) and after the kernel resolves symlinks (the canonical path must
//! still be inside the canonical root). Either failure is an escape.

use std::path::{Component, Path, PathBuf};

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

#[cfg(test)]
mod tests {
    use super::*;

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
