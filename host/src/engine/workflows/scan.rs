//! Finding workflows under the root dir, and fingerprinting a guest crate's
//! sources, without trusting anything the root dir holds.
//!
//! A workflow may have written anything there (symlinks pointing anywhere,
//! FIFOs, millions of directories) and may still be changing it, so the walk
//! is bounded by [`ScanLimits`] (depth, entries read, workflows found) and
//! never follows a symlink: every directory is opened relative to the root
//! dir with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`, so a directory
//! swapped for a symlink between the listing and the open is refused, not
//! followed. Hidden directories, `target` and `node_modules` are skipped.
//! The only file read is a crate's `Cargo.toml` (through
//! [`paths::read_beneath`], at most [`MAX_MANIFEST_BYTES`]). Nothing here
//! loads or builds anything.

use std::collections::VecDeque;
use std::ffi::CStr;
use std::hash::{Hash, Hasher};
use std::os::fd::OwnedFd;
use std::path::Path;

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags, ResolveFlags};

use super::WorkflowKind;
use crate::sandbox::paths;

/// Directories never entered: build output and dependency trees.
const SKIPPED_DIRS: [&str; 2] = ["target", "node_modules"];
/// Largest `Cargo.toml` read to tell a workflow crate.
const MAX_MANIFEST_BYTES: u64 = 64 * 1024;
/// Most entries of one crate's sources a fingerprint covers.
const MAX_FINGERPRINT_ENTRIES: usize = 1024;
/// Deepest directory of a crate a fingerprint covers.
const MAX_FINGERPRINT_DEPTH: usize = 8;

/// How much of the root dir one listing may look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanLimits {
    /// Deepest directory read, in levels below the root dir (0: only the
    /// root dir's own entries).
    pub max_depth: usize,
    /// Most directory entries read in all.
    pub max_entries: usize,
    /// Most workflows listed (each `.wasm` is loaded).
    pub max_workflows: usize,
}

impl Default for ScanLimits {
    fn default() -> Self {
        Self {
            max_depth: 6,
            max_entries: 10_000,
            max_workflows: 200,
        }
    }
}

/// A workflow the walk found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Candidate {
    /// Relative to the root dir, `/`-separated; `.` is the root dir itself.
    pub path: String,
    pub kind: WorkflowKind,
}

/// What a walk found.
#[derive(Debug, Default)]
pub(super) struct Discovery {
    /// Sorted by path.
    pub candidates: Vec<Candidate>,
    /// A bound stopped the walk: there may be more.
    pub truncated: bool,
}

/// One directory read: its entries' names (UTF-8 only) and kinds.
struct Listing {
    entries: Vec<(String, FileType)>,
}

/// Opens `relative` (a directory under `root`) without following any
/// symlink, and reads at most `budget` of its entries; `None` if it cannot
/// be opened (gone, swapped for a symlink, unreadable).
fn read_dir(root: &OwnedFd, relative: &str, budget: &mut usize) -> Option<(Listing, bool)> {
    let fd = rustix::fs::openat2(
        root,
        relative,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    )
    .ok()?;
    let mut dir = Dir::new(fd).ok()?;
    let mut entries = Vec::new();
    let mut exhausted = false;
    while let Some(entry) = dir.read() {
        let Ok(entry) = entry else { break };
        let name = entry.file_name();
        if name == c"." || name == c".." {
            continue;
        }
        if *budget == 0 {
            exhausted = true;
            break;
        }
        *budget -= 1;
        let Ok(name) = name.to_str().map(str::to_owned) else {
            continue; // a path a client could not name back
        };
        let kind = match entry.file_type() {
            FileType::Unknown => kind_of(&dir, entry.file_name()),
            kind => kind,
        };
        entries.push((name, kind));
    }
    Some((Listing { entries }, exhausted))
}

/// The kind of `name` in `dir`, without following a symlink.
fn kind_of(dir: &Dir, name: &CStr) -> FileType {
    dir.fd()
        .and_then(|fd| rustix::fs::statat(fd, name, AtFlags::SYMLINK_NOFOLLOW))
        .map_or(FileType::Unknown, |stat| {
            FileType::from_raw_mode(stat.st_mode)
        })
}

fn join(dir: &str, name: &str) -> String {
    if dir == "." {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}

fn skipped(name: &str) -> bool {
    name.starts_with('.') || SKIPPED_DIRS.contains(&name)
}

fn open_root(root: &Path) -> Option<OwnedFd> {
    rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()
}

/// Walks the root dir breadth first (shallow workflows first) within
/// `limits` and returns the `.wasm` files (regular files, or symlinks that
/// the reader will refuse if they lead out) and workflow crates found.
pub(super) fn discover(root: &Path, limits: &ScanLimits) -> Discovery {
    let mut found = Discovery::default();
    let Some(root_fd) = open_root(root) else {
        return found;
    };
    let mut budget = limits.max_entries;
    let mut queue = VecDeque::from([(".".to_owned(), 0usize)]);
    while let Some((dir, depth)) = queue.pop_front() {
        let Some((listing, exhausted)) = read_dir(&root_fd, &dir, &mut budget) else {
            continue;
        };
        for (name, kind) in listing.entries {
            let path = join(&dir, &name);
            let candidate = match kind {
                FileType::Directory => {
                    if !skipped(&name) && depth < limits.max_depth {
                        queue.push_back((path, depth + 1));
                    }
                    None
                }
                FileType::RegularFile if name == "Cargo.toml" => is_workflow_crate(root, &path)
                    .then(|| Candidate {
                        path: dir.clone(),
                        kind: WorkflowKind::Crate,
                    }),
                FileType::RegularFile | FileType::Symlink if name.ends_with(".wasm") => {
                    Some(Candidate {
                        path,
                        kind: WorkflowKind::Component,
                    })
                }
                _ => None,
            };
            if let Some(candidate) = candidate {
                if found.candidates.len() == limits.max_workflows {
                    found.truncated = true;
                    break;
                }
                found.candidates.push(candidate);
            }
        }
        if exhausted || found.truncated {
            found.truncated = true;
            break;
        }
    }
    found.candidates.sort_by(|a, b| a.path.cmp(&b.path));
    found
}

/// A crate the host can build into a workflow: a `[package]` whose `[lib]`
/// is a `cdylib`.
fn is_workflow_crate(root: &Path, manifest: &str) -> bool {
    let Ok(bytes) = paths::read_beneath(root, Path::new(manifest), MAX_MANIFEST_BYTES) else {
        return false;
    };
    let Ok(table) = std::str::from_utf8(&bytes)
        .map_err(drop)
        .and_then(|text| text.parse::<toml::Table>().map_err(drop))
    else {
        return false;
    };
    let cdylib = table
        .get("lib")
        .and_then(|lib| lib.get("crate-type"))
        .and_then(|types| types.as_array())
        .is_some_and(|types| types.iter().any(|t| t.as_str() == Some("cdylib")));
    table.contains_key("package") && cdylib
}

/// A fingerprint of the crate at `krate` (relative to `root`): the names,
/// kinds, sizes and modification times of its files (hidden dirs, `target`
/// and `node_modules` excepted), in name order, up to
/// [`MAX_FINGERPRINT_ENTRIES`] entries and [`MAX_FINGERPRINT_DEPTH`] levels.
/// Equal fingerprints mean the sources did not change between two looks
/// (within the bound); nothing is read but directory entries and their
/// metadata.
pub(super) fn fingerprint(root: &Path, krate: &str) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    let Some(root_fd) = open_root(root) else {
        return hasher.finish();
    };
    let mut budget = MAX_FINGERPRINT_ENTRIES;
    let mut queue = VecDeque::from([(krate.to_owned(), 0usize)]);
    while let Some((dir, depth)) = queue.pop_front() {
        let Some((mut listing, exhausted)) = read_dir(&root_fd, &dir, &mut budget) else {
            "unreadable".hash(&mut hasher);
            continue;
        };
        listing.entries.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, kind) in listing.entries {
            let path = join(&dir, &name);
            if kind == FileType::Directory {
                if !skipped(&name) && depth < MAX_FINGERPRINT_DEPTH {
                    queue.push_back((path.clone(), depth + 1));
                }
                if skipped(&name) {
                    continue;
                }
            }
            path.hash(&mut hasher);
            if let Ok(stat) = rustix::fs::statat(&root_fd, path.as_str(), AtFlags::SYMLINK_NOFOLLOW)
            {
                (
                    stat.st_mode,
                    stat.st_size,
                    stat.st_mtime,
                    stat.st_mtime_nsec,
                )
                    .hash(&mut hasher);
            }
        }
        if exhausted {
            "truncated".hash(&mut hasher);
            break;
        }
    }
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    fn write_crate(dir: &Path, crate_type: &str) {
        fs::create_dir_all(dir.join("src")).unwrap();
        fs::write(
            dir.join("Cargo.toml"),
            format!("[package]\nname = \"w\"\n\n[lib]\ncrate-type = [\"{crate_type}\"]\n"),
        )
        .unwrap();
        fs::write(dir.join("src/lib.rs"), "").unwrap();
    }

    fn paths(found: &Discovery) -> Vec<(&str, WorkflowKind)> {
        found
            .candidates
            .iter()
            .map(|c| (c.path.as_str(), c.kind))
            .collect()
    }

    #[test]
    fn finds_components_and_cdylib_crates_but_not_build_output_or_hidden_dirs() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        fs::write(root.join("a.wasm"), b"\0asm").unwrap();
        write_crate(&root.join("flows/greet"), "cdylib");
        write_crate(&root.join("lib-only"), "rlib");
        fs::create_dir_all(root.join("flows/greet/target/release")).unwrap();
        fs::write(root.join("flows/greet/target/release/greet.wasm"), b"").unwrap();
        fs::create_dir_all(root.join(".git")).unwrap();
        fs::write(root.join(".git/x.wasm"), b"").unwrap();
        fs::create_dir_all(root.join("node_modules/m")).unwrap();
        fs::write(root.join("node_modules/m/x.wasm"), b"").unwrap();
        let found = discover(root, &ScanLimits::default());
        assert_eq!(
            paths(&found),
            [
                ("a.wasm", WorkflowKind::Component),
                ("flows/greet", WorkflowKind::Crate)
            ]
        );
        assert!(!found.truncated);
    }

    #[test]
    fn symlinked_dirs_are_not_entered_and_fifos_are_not_workflows() {
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("secret.wasm"), b"").unwrap();
        write_crate(&outside.path().join("krate"), "cdylib");
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        std::os::unix::fs::symlink(outside.path(), root.join("out")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret.wasm"), root.join("link.wasm"))
            .unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            root.join("x.wasm"),
            FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let found = discover(root, &ScanLimits::default());
        // The symlink is listed (loading it is refused as an escape); nothing
        // behind the directory symlink is.
        assert_eq!(paths(&found), [("link.wasm", WorkflowKind::Component)]);
    }

    #[test]
    fn every_bound_stops_the_walk_and_says_so() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        fs::write(root.join("top.wasm"), b"").unwrap();
        fs::create_dir_all(root.join("1/2/3")).unwrap();
        fs::write(root.join("1/2/3/deep.wasm"), b"").unwrap();
        for i in 0..50 {
            fs::create_dir_all(root.join(format!("junk/{i}"))).unwrap();
        }
        let shallow = ScanLimits {
            max_depth: 2,
            ..ScanLimits::default()
        };
        assert_eq!(
            paths(&discover(root, &shallow)),
            [("top.wasm", WorkflowKind::Component)]
        );
        let few_entries = ScanLimits {
            max_entries: 10,
            ..ScanLimits::default()
        };
        let found = discover(root, &few_entries);
        assert!(found.truncated);
        assert!(paths(&found).contains(&("top.wasm", WorkflowKind::Component)));
        let one = ScanLimits {
            max_workflows: 1,
            ..ScanLimits::default()
        };
        let found = discover(root, &one);
        assert_eq!(found.candidates.len(), 1);
        assert!(found.truncated);
    }

    #[test]
    fn a_fingerprint_changes_with_the_sources_only() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        write_crate(&root.join("w"), "cdylib");
        let before = fingerprint(root, "w");
        assert_eq!(fingerprint(root, "w"), before);
        fs::create_dir_all(root.join("w/target")).unwrap();
        fs::write(root.join("w/target/out"), b"build output").unwrap();
        assert_eq!(
            fingerprint(root, "w"),
            before,
            "build output is not a source"
        );
        fs::write(root.join("w/src/lib.rs"), "// edited").unwrap();
        assert_ne!(fingerprint(root, "w"), before);
    }
}
