//! Precompiling workflows as they change, so the next start after an edit is
//! served from the cache instead of waiting for Cranelift.
//!
//! A `notify` watcher on the root dir reports changed files; after a quiet
//! period (debounce) changed `.wasm` components are loaded (compiled and
//! written to the disk cache) in the background. In dev mode, changes to the
//! sources of guest crates this host has built are rebuilt too. Failures are
//! logged; the next request that needs the workflow reports them itself, so
//! the watcher never has to be right and can never take the host down.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use super::Engine;

/// Quiet period after the last change before work starts.
const DEBOUNCE: Duration = Duration::from_millis(250);
/// Components larger than this are not precompiled speculatively.
const MAX_PRECOMPILE_BYTES: u64 = 64 * 1024 * 1024;

/// Keeps the watcher alive; dropping it stops watching.
pub struct WatchGuard {
    _watcher: notify::RecommendedWatcher,
}

impl Engine {
    /// Starts watching the root dir. `dev` also rebuilds guest crates this
    /// host has built when their sources change.
    pub fn watch(&self, dev: bool) -> Result<WatchGuard, notify::Error> {
        let (tx, rx) = mpsc::unbounded_channel::<PathBuf>();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                let Ok(event) = event else { return };
                if matches!(event.kind, EventKind::Create(_) | EventKind::Modify(_)) {
                    for path in event.paths {
                        let _ = tx.send(path);
                    }
                }
            })?;
        watcher.watch(self.root_dir(), RecursiveMode::Recursive)?;
        let engine = self.clone();
        tokio::spawn(async move { engine.precompile_loop(rx, dev).await });
        tracing::info!(root = %self.root_dir().display(), dev, "watching workflows for changes");
        Ok(WatchGuard { _watcher: watcher })
    }

    async fn precompile_loop(self, mut changes: mpsc::UnboundedReceiver<PathBuf>, dev: bool) {
        while let Some(first) = changes.recv().await {
            let mut batch = BTreeSet::from([first]);
            // Debounce: wait until the burst of events is over.
            loop {
                match tokio::time::timeout(DEBOUNCE, changes.recv()).await {
                    Ok(Some(path)) => {
                        batch.insert(path);
                    }
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
        let Ok(meta) = tokio::fs::metadata(path).await else {
            return;
        };
        if !meta.is_file() || meta.len() > MAX_PRECOMPILE_BYTES {
            return;
        }
        let Ok(bytes) = tokio::fs::read(path).await else {
            return;
        };
        match self.runtime().load(bytes).await {
            Ok(loaded) => tracing::info!(
                path = %path.display(),
                hash = %loaded.workflow.hash,
                source = loaded.source.as_str(),
                compile_ms = loaded.compile_ms,
                "precompiled changed workflow"
            ),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "changed workflow does not load")
            }
        }
    }

    async fn rebuild(&self, krate: &Path) {
        match self.inner.builder.build(krate).await {
            Ok(component) => self.precompile(&component).await,
            Err(e) => {
                tracing::warn!(krate = %krate.display(), error = %e, "guest crate does not build")
            }
        }
    }
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
}
