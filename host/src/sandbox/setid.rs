//! Defence in depth behind the seccomp filter: after bash calls, the host
//! looks for set-id files in the root dir and strips their set-id bits.
//!
//! The sandbox maps the host's uid onto itself, so a set-user-id file left in
//! the root dir would be a real set-id binary for anyone on the machine (the
//! root dir is `nosuid` only inside the sandbox). The seccomp filter refuses
//! every way of setting those bits; this sweep catches whatever a future
//! kernel or a missed system call lets through.
//!
//! Sweeps run on a blocking thread, one at a time, coalescing requests (a
//! burst of bash calls costs one sweep), and are bounded in entries and depth.
//! The walk never follows a symlink or crosses into another filesystem, and
//! every change goes through a descriptor opened without following links, so
//! a concurrent bash call swapping names for symlinks can never make the host
//! change a file outside the root dir. Names are logged escaped and cut.

use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};

/// Most directory entries one sweep looks at.
const MAX_ENTRIES: usize = 200_000;
/// Deepest directory one sweep descends into.
const MAX_DEPTH: usize = 64;
/// The set-user-id and set-group-id bits.
const SET_ID_BITS: u32 = libc::S_ISUID | libc::S_ISGID;

/// What one sweep did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SweepReport {
    /// Entries looked at.
    pub entries: usize,
    /// Files whose set-id bits were removed (paths relative to the root).
    pub stripped: Vec<String>,
    /// The walk stopped at its entry or depth bound.
    pub bounded: bool,
}

/// Coalescing background sweeps of one root dir.
#[derive(Debug, Default)]
pub struct SetIdSweeper {
    state: Mutex<SweepState>,
}

#[derive(Debug, Default)]
struct SweepState {
    running: bool,
    again: bool,
}

impl SetIdSweeper {
    /// Asks for a sweep of `root` soon. Returns at once; at most one sweep
    /// runs, and requests made while it runs cause exactly one more.
    pub fn request(self: &Arc<Self>, root: &Path) {
        {
            let mut state = self.state.lock().expect("sweeper state");
            if state.running {
                state.again = true;
                return;
            }
            state.running = true;
        }
        let sweeper = self.clone();
        let root = root.to_path_buf();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // Outside a runtime (a plain test): sweep in place.
            sweeper.sweep_until_clean(&root);
            return;
        };
        runtime.spawn_blocking(move || sweeper.sweep_until_clean(&root));
    }

    fn sweep_until_clean(&self, root: &Path) {
        loop {
            let report = sweep(root);
            for path in &report.stripped {
                tracing::warn!(
                    path = %path,
                    "stripped set-id bits from a file in the root dir (a sandboxed program \
                     set them, which the seccomp filter should have refused)"
                );
            }
            if report.bounded {
                tracing::debug!(
                    entries = report.entries,
                    "set-id sweep stopped at its bound"
                );
            }
            let mut state = self.state.lock().expect("sweeper state");
            if !state.again {
                state.running = false;
                return;
            }
            state.again = false;
        }
    }
}

/// Walks `root` (bounded) and removes set-id bits from every file that has
/// them. Errors on single entries are skipped: the sweep is best effort
/// behind the seccomp wall, and must never stop the host.
pub fn sweep(root: &Path) -> SweepReport {
    let mut report = SweepReport::default();
    let Ok(top) = rustix::fs::open(
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    ) else {
        return report;
    };
    let Ok(top_stat) = rustix::fs::fstat(&top) else {
        return report;
    };
    let mut stack: Vec<(OwnedFd, PathBuf, usize)> = vec![(top, PathBuf::new(), 0)];
    while let Some((dir, relative, depth)) = stack.pop() {
        let Ok(mut entries) = rustix::fs::Dir::read_from(&dir) else {
            continue;
        };
        while let Some(Ok(entry)) = entries.next() {
            let name = entry.file_name();
            if name == c"." || name == c".." {
                continue;
            }
            report.entries += 1;
            if report.entries > MAX_ENTRIES {
                report.bounded = true;
                return report;
            }
            let Ok(stat) = rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) else {
                continue;
            };
            let kind = FileType::from_raw_mode(stat.st_mode);
            if stat.st_dev != top_stat.st_dev {
                continue; // another filesystem mounted inside the root: not ours to walk
            }
            if stat.st_mode & SET_ID_BITS != 0 && kind != FileType::Symlink && strip(&dir, name) {
                report.stripped.push(display(&relative.join(os_name(name))));
            }
            if kind == FileType::Directory {
                if depth + 1 >= MAX_DEPTH {
                    report.bounded = true;
                    continue;
                }
                if let Ok(child) = rustix::fs::openat(
                    &dir,
                    name,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                ) {
                    stack.push((child, relative.join(os_name(name)), depth + 1));
                }
            }
        }
    }
    report
}

/// Removes the set-id bits of `name` in `dir` through a descriptor that
/// refers to the very inode that was checked (never through a path that a
/// symlink could redirect).
fn strip(dir: &impl AsFd, name: &CStr) -> bool {
    let Ok(fd) = rustix::fs::openat(
        dir,
        name,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    ) else {
        return false;
    };
    let Ok(stat) = rustix::fs::fstat(&fd) else {
        return false;
    };
    let kind = FileType::from_raw_mode(stat.st_mode);
    if kind == FileType::Symlink || stat.st_mode & SET_ID_BITS == 0 {
        return false;
    }
    // fchmod refuses O_PATH descriptors; the /proc magic link reaches the
    // same inode without resolving any name again.
    let Ok(link) = CString::new(format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(&fd)
    )) else {
        return false;
    };
    let mode = Mode::from_raw_mode((stat.st_mode & 0o7777) & !SET_ID_BITS);
    rustix::fs::chmod(link.as_c_str(), mode).is_ok()
}

fn os_name(name: &CStr) -> &std::ffi::OsStr {
    std::os::unix::ffi::OsStrExt::from_bytes(name.to_bytes())
}

/// A root-relative path for a log line: escaped and at most 200 characters.
fn display(path: &Path) -> String {
    let text = format!("{:?}", path);
    text.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path)
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    }

    #[test]
    fn set_id_files_are_stripped_and_nothing_else_changes() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let deep = root.path().join("a/b");
        std::fs::create_dir_all(&deep).unwrap();
        for (name, bits) in [("suid", 0o4755), ("sgid", 0o2755), ("plain", 0o755)] {
            let path = deep.join(name);
            std::fs::write(&path, b"#!/bin/sh\n").unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(bits)).unwrap();
        }
        // A set-id file outside, reachable only through a symlink in the root.
        let victim = outside.path().join("victim");
        std::fs::write(&victim, b"x").unwrap();
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o4755)).unwrap();
        std::os::unix::fs::symlink(&victim, root.path().join("link")).unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("dirlink")).unwrap();

        let report = sweep(root.path());
        assert_eq!(mode(&deep.join("suid")), 0o755);
        assert_eq!(mode(&deep.join("sgid")), 0o755);
        assert_eq!(mode(&deep.join("plain")), 0o755);
        assert_eq!(mode(&victim), 0o4755, "a symlink led the sweep outside");
        assert_eq!(report.stripped.len(), 2, "{report:?}");
        assert!(!report.bounded);
    }
}
