//! Precompiling workflows as they change, so the next start after an edit is
//! served from the cache instead of waiting for Cranelift.
//!
//! The root dir belongs to the workflows, so everything here treats it as
//! hostile and bounded. Directories are watched one by one (never with a
//! recursive watch that follows whatever a workflow creates): at most
//! [`MAX_WATCHED_DIRS`] of them, at most [`MAX_DEPTH`] levels deep, skipping
//! hidden dirs and build output, because inotify watches are a per-user
//! resource shared with the rest of the machine. After a quiet period
//! (debounce), changed `.wasm` components are read (regular files only,
//! within the size bound, never through a symlink out of the root) and
//! loaded into the cache in the background; in dev mode, changes to the
//! sources of guest crates this host has built rebuild them (confined, like
//! every build). Failures are logged in one bounded line; the next request
//! that needs the workflow reports them itself, so the watcher never has to
//! be right and can never take the host down.

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use super::Engine;
use crate::sandbox::paths;

/// Quiet period after the last change before work starts.
const DEBOUNCE: Duration = Duration::from_millis(250);
/// Components larger than this are not precompiled speculatively.
const MAX_PRECOMPILE_BYTES: u64 = 64 * 1024 * 1024;
/// Most directories watched (one inotify watch each).
pub const MAX_WATCHED_DIRS: usize = 512;
/// Deepest directory watched below the root dir.
pub const MAX_DEPTH: usize = 6;
/// Longest error quoted in a watcher log line.
const MAX_LOGGED_ERROR_CHARS: usize = 1000;
/// Directories never watched: build output and dependency trees.
const SKIPPED_DIRS: [&str; 2] = ["target", "node_modules"];

/// Keeps the watcher alive; dropping it stops watching.
pub struct WatchGuard {
    _watches: Arc<Mutex<Watches>>,
}

/// The watcher and the set of directories it watches.
struct Watches {
    watcher: notify::RecommendedWatcher,
    root: PathBuf,
    watched: HashSet<PathBuf>,
    warned_full: bool,
}

impl Watches {
    /// Watches `dir` if it qualifies and the bound allows; returns whether
    /// it is watched now.
    fn add(&mut self, dir: &Path) -> bool {
        if self.watched.contains(dir) || !watchable(&self.root, dir) {
            return false;
        }
        if self.watched.len() >= MAX_WATCHED_DIRS {
            if !self.warned_full {
                self.warned_full = true;
                tracing::warn!(
                    limit = MAX_WATCHED_DIRS,
                    "the root dir has more directories than the watcher follows; changes in \
                     the others are not precompiled (requests still load the current version)"
                );
            }
            return false;
        }
        match self.watcher.watch(dir, RecursiveMode::NonRecursive) {
            Ok(()) => {
                self.watched.insert(dir.to_path_buf());
                true
            }
            Err(_) => false,
        }
    }

    /// Watches `top` and the directories below it, breadth first, within the
    /// bounds.
    fn add_tree(&mut self, top: &Path) {
        let mut queue = VecDeque::from([top.to_path_buf()]);
        while let Some(dir) = queue.pop_front() {
            if !self.add(&dir) && dir != self.root {
                continue;
            }
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten().take(MAX_WATCHED_DIRS) {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    queue.push_back(entry.path());
                }
            }
        }
    }

    fn forget(&mut self, path: &Path) {
        if self.watched.remove(path) {
            let _ = self.watcher.unwatch(path);
        }
    }
}

impl Engine {
    /// Starts watching the root dir. `dev` also rebuilds guest crates this
    /// host has built when their sources change.
    pub fn watch(&self, dev: bool) -> Result<WatchGuard, notify::Error> {
        let (tx, rx) = mpsc::unbounded_channel::<notify::Event>();
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if let Ok(event) = event {
                let _ = tx.send(event);
            }
        })?;
        let watches = Arc::new(Mutex::new(Watches {
            watcher,
            root: self.root_dir().to_path_buf(),
            watched: HashSet::new(),
            warned_full: false,
        }));
        {
            let mut watches = watches.lock().expect("watches");
            let root = self.root_dir().to_path_buf();
            watches.watcher.watch(&root, RecursiveMode::NonRecursive)?;
            watches.watched.insert(root.clone());
            watches.add_tree(&root);
        }
        let engine = self.clone();
        let loop_watches = watches.clone();
        tokio::spawn(async move { engine.precompile_loop(rx, loop_watches, dev).await });
        tracing::info!(root = %self.root_dir().display(), dev, "watching workflows for changes");
        Ok(WatchGuard { _watches: watches })
    }

    async fn precompile_loop(
        self,
        mut events: mpsc::UnboundedReceiver<notify::Event>,
        watches: Arc<Mutex<Watches>>,
        dev: bool,
    ) {
        while let Some(first) = events.recv().await {
            let mut batch = BTreeSet::new();
            let mut take = |event: notify::Event| {
                let mut watches = watches.lock().expect("watches");
                for path in event.paths {
                    match event.kind {
                        EventKind::Create(_) => {
                            if std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
                                watches.add_tree(&path);
                            }
                            batch.insert(path);
                        }
                        EventKind::Modify(_) => {
                            batch.insert(path);
                        }
                        EventKind::Remove(_) => watches.forget(&path),
                        _ => {}
                    }
                }
            };
            take(first);
            // Debounce: wait until the burst of events is over.
            loop {
                match tokio::time::timeout(DEBOUNCE, events.recv()).await {
                    Ok(Some(event)) => take(event),
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            let mut crates = BTreeSet::new();
            for path in &batch {
                if is_component(self.root_dir(), path) {
                    self.precompile(path).await;
                } else if dev && let Some(krate) = self.inner.builder.crate_of(path) {
                    crates.insert(krate);
                }
            }
            for krate in crates {
                self.rebuild(&krate).await;
            }
        }
    }

    async fn precompile(&self, path: &Path) {
        let root = self.root_dir().to_path_buf();
        let file = path.to_path_buf();
        let read = tokio::task::spawn_blocking(move || {
            paths::read_beneath(&root, &file, MAX_PRECOMPILE_BYTES)
        })
        .await;
        let Ok(Ok(bytes)) = read else {
            return; // not a regular file, too large, gone or outside: not ours to load
        };
        self.precompile_bytes(path, bytes).await;
    }

    async fn precompile_bytes(&self, path: &Path, bytes: Vec<u8>) {
        match self.runtime().load(bytes).await {
            Ok(loaded) => tracing::info!(
                path = %shown(path),
                hash = %loaded.workflow.hash,
                source = loaded.source.as_str(),
                compile_ms = loaded.compile_ms,
                "precompiled changed workflow"
            ),
            Err(e) => tracing::warn!(
                path = %shown(path),
                error = %bounded(&e.to_string()),
                "changed workflow does not load"
            ),
        }
    }

    /// Rebuilds a crate as a start would (so its listing shows the outcome).
    async fn rebuild(&self, krate: &Path) {
        match self.inner.load_crate(krate).await {
            Ok(loaded) => tracing::info!(
                krate = %shown(krate),
                hash = %loaded.workflow.hash,
                source = loaded.source.as_str(),
                compile_ms = loaded.compile_ms,
                "rebuilt changed guest crate"
            ),
            Err(e @ super::EngineError::WorkflowBuild(_)) => tracing::warn!(
                krate = %shown(krate),
                error = %bounded(&e.to_string()),
                "guest crate does not build"
            ),
            Err(e) => tracing::warn!(
                path = %shown(krate),
                error = %bounded(&e.to_string()),
                "changed workflow does not load"
            ),
        }
    }
}

/// A directory the watcher may follow: below the root (within the depth
/// bound), not hidden, not build output.
fn watchable(root: &Path, dir: &Path) -> bool {
    let Ok(relative) = dir.strip_prefix(root) else {
        return false;
    };
    let depth = relative.components().count();
    depth <= MAX_DEPTH
        && !relative.components().any(|c| {
            let c = c.as_os_str().to_string_lossy();
            SKIPPED_DIRS.contains(&c.as_ref()) || (c.starts_with('.') && c.len() > 1)
        })
}

/// A `.wasm` file under `root`, outside build output and hidden directories.
fn is_component(root: &Path, path: &Path) -> bool {
    let Ok(relative) = path.strip_prefix(root) else {
        return false;
    };
    relative.extension().is_some_and(|e| e == "wasm")
        && !relative.components().any(|c| {
            let c = c.as_os_str().to_string_lossy();
            c == "target" || (c.starts_with('.') && c.len() > 1)
        })
}

/// A path named by a workflow, for a log line: escaped and bounded.
fn shown(path: &Path) -> String {
    bounded(&format!("{:?}", path))
}

/// At most [`MAX_LOGGED_ERROR_CHARS`] characters of `text`.
fn bounded(text: &str) -> String {
    let mut out: String = text.chars().take(MAX_LOGGED_ERROR_CHARS).collect();
    if out.len() < text.len() {
        out.push_str("… (cut)");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_components_outside_build_output_are_precompiled() {
        let root = Path::new("/tmp/.tmpXyZ/proj");
        assert!(is_component(root, &root.join("flows/a.wasm")));
        assert!(!is_component(
            root,
            &root.join("flows/target/wasm32-wasip2/release/a.wasm")
        ));
        assert!(!is_component(root, &root.join(".git/a.wasm")));
        assert!(!is_component(root, &root.join("flows/a.rs")));
        assert!(!is_component(root, Path::new("/elsewhere/a.wasm")));
    }

    #[test]
    fn watched_dirs_are_shallow_visible_and_not_build_output() {
        let root = Path::new("/r");
        assert!(watchable(root, Path::new("/r/a/b")));
        assert!(!watchable(root, Path::new("/r/a/target/x")));
        assert!(!watchable(root, Path::new("/r/.git")));
        assert!(!watchable(root, Path::new("/r/node_modules")));
        assert!(!watchable(root, Path::new("/r/1/2/3/4/5/6/7")));
        assert!(!watchable(root, Path::new("/elsewhere")));
        assert_eq!(
            bounded(&"x".repeat(5000)).chars().count(),
            MAX_LOGGED_ERROR_CHARS + 7
        );
    }
}
