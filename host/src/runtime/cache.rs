//! Compiled components by content hash: in memory (LRU) and on disk.
//!
//! Loading a `.cwasm` is unsafe deserialization of machine code, so disk
//! entries live only in the host's state dir (never the root dir), are keyed
//! by the engine's configuration fingerprint (a directory per fingerprint)
//! and carry a header naming the component hash and a sha256 of the body:
//! a truncated, corrupted or swapped file is detected, deleted and recompiled.
//! Concurrent loads of one new hash wait for a single compilation.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use lru::LruCache;
use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use super::{LoadError, Workflow};
use crate::model::ComponentHash;

const HEADER_MAGIC: &str = "SMITHERS-CWASM v1";

/// Where a component came from on this load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadSource {
    /// Already compiled in this process.
    Memory,
    /// Deserialized from the state dir's cache.
    Disk,
    /// Compiled now.
    Compiled,
}

impl LoadSource {
    /// Wire name (`memory`, `disk`, `compiled`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Disk => "disk",
            Self::Compiled => "compiled",
        }
    }
}

/// Counters for `/metrics`.
#[derive(Debug, Clone, Copy, Default)]
pub struct CacheStats {
    /// Loads served from memory.
    pub memory_hits: u64,
    /// Loads served from the disk cache.
    pub disk_hits: u64,
    /// Compilations.
    pub compiles: u64,
    /// Disk entries found unusable and replaced.
    pub disk_rejects: u64,
}

struct Entry {
    component: Component,
    workflow: Option<Arc<Workflow>>,
}

pub(super) struct ComponentCache {
    engine: Engine,
    entries: Mutex<LruCache<ComponentHash, Entry>>,
    compiling: Mutex<HashMap<ComponentHash, Arc<tokio::sync::Mutex<()>>>>,
    dir: Option<PathBuf>,
    memory_hits: AtomicU64,
    disk_hits: AtomicU64,
    compiles: AtomicU64,
    disk_rejects: AtomicU64,
}

impl ComponentCache {
    pub(super) fn new(capacity: usize, cache_dir: Option<PathBuf>, engine: &Engine) -> Self {
        let dir = cache_dir.map(|root| root.join(engine_fingerprint(engine)));
        Self {
            engine: engine.clone(),
            entries: Mutex::new(LruCache::new(
                NonZeroUsize::new(capacity.max(1)).expect("non-zero"),
            )),
            compiling: Mutex::new(HashMap::new()),
            dir,
            memory_hits: AtomicU64::new(0),
            disk_hits: AtomicU64::new(0),
            compiles: AtomicU64::new(0),
            disk_rejects: AtomicU64::new(0),
        }
    }

    pub(super) fn stats(&self) -> CacheStats {
        CacheStats {
            memory_hits: self.memory_hits.load(Ordering::Relaxed),
            disk_hits: self.disk_hits.load(Ordering::Relaxed),
            compiles: self.compiles.load(Ordering::Relaxed),
            disk_rejects: self.disk_rejects.load(Ordering::Relaxed),
        }
    }

    fn in_memory(&self, hash: &ComponentHash) -> Option<Component> {
        let mut entries = self.entries.lock().expect("cache lock");
        entries.get(hash).map(|e| e.component.clone())
    }

    pub(super) fn loaded(&self, hash: &ComponentHash) -> Option<Arc<Workflow>> {
        let mut entries = self.entries.lock().expect("cache lock");
        entries.get(hash).and_then(|e| e.workflow.clone())
    }

    pub(super) fn remember_loaded(&self, hash: &ComponentHash, workflow: Arc<Workflow>) {
        let mut entries = self.entries.lock().expect("cache lock");
        if let Some(entry) = entries.get_mut(hash) {
            entry.workflow = Some(workflow);
        }
    }

    /// Returns the compiled component for `hash`, compiling `bytes` at most
    /// once however many callers ask at the same time.
    pub(super) async fn get_or_compile(
        &self,
        hash: &ComponentHash,
        bytes: Vec<u8>,
    ) -> Result<(Component, LoadSource, u64), LoadError> {
        if let Some(component) = self.in_memory(hash) {
            self.memory_hits.fetch_add(1, Ordering::Relaxed);
            return Ok((component, LoadSource::Memory, 0));
        }
        let gate = {
            let mut compiling = self.compiling.lock().expect("compiling lock");
            compiling.entry(hash.clone()).or_default().clone()
        };
        let _turn = gate.lock().await;
        let result = self.load_slow(hash, bytes).await;
        self.compiling.lock().expect("compiling lock").remove(hash);
        result
    }

    async fn load_slow(
        &self,
        hash: &ComponentHash,
        bytes: Vec<u8>,
    ) -> Result<(Component, LoadSource, u64), LoadError> {
        // Someone else may have finished while we waited for our turn.
        if let Some(component) = self.in_memory(hash) {
            self.memory_hits.fetch_add(1, Ordering::Relaxed);
            return Ok((component, LoadSource::Memory, 0));
        }
        let started = Instant::now();
        if let Some(path) = self.disk_path(hash) {
            let engine = self.engine.clone();
            let expected = hash.clone();
            let read = tokio::task::spawn_blocking(move || read_entry(&engine, &path, &expected))
                .await
                .map_err(|e| LoadError::Invalid(format!("cache task failed: {e}")))?;
            match read {
                Ok(Some(component)) => {
                    self.disk_hits.fetch_add(1, Ordering::Relaxed);
                    self.insert(hash, &component);
                    return Ok((component, LoadSource::Disk, elapsed_ms(started)));
                }
                Ok(None) => {}
                Err(reason) => {
                    self.disk_rejects.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%hash, %reason, "discarding unusable compiled-code cache entry");
                    if let Some(path) = self.disk_path(hash) {
                        let _ = std::fs::remove_file(path);
                    }
                }
            }
        }
        let engine = self.engine.clone();
        // `from_binary`, never `new`: the text format's parser echoes whole
        // lines of its input in errors (a 1 GB line of zeros became 9 GB).
        let component =
            tokio::task::spawn_blocking(move || Component::from_binary(&engine, &bytes))
                .await
                .map_err(|e| LoadError::Invalid(format!("compile task failed: {e}")))?
                .map_err(|e| LoadError::Invalid(super::clipped(format!("{e:#}"))))?;
        self.compiles.fetch_add(1, Ordering::Relaxed);
        let compile_ms = elapsed_ms(started);
        if let Some(path) = self.disk_path(hash) {
            let serialized = component.serialize();
            let hash = hash.clone();
            tokio::task::spawn_blocking(move || match serialized {
                Ok(body) => {
                    if let Err(e) = write_entry(&path, &hash, &body) {
                        tracing::warn!(%hash, error = %e, "cannot write the compiled-code cache");
                    }
                }
                Err(e) => {
                    tracing::warn!(%hash, error = %e, "cannot serialize a compiled component")
                }
            });
        }
        self.insert(hash, &component);
        Ok((component, LoadSource::Compiled, compile_ms))
    }

    fn insert(&self, hash: &ComponentHash, component: &Component) {
        let mut entries = self.entries.lock().expect("cache lock");
        entries.put(
            hash.clone(),
            Entry {
                component: component.clone(),
                workflow: None,
            },
        );
    }

    fn disk_path(&self, hash: &ComponentHash) -> Option<PathBuf> {
        self.dir
            .as_ref()
            .map(|dir| dir.join(format!("{}.cwasm", hash.as_str())))
    }
}

fn elapsed_ms(started: Instant) -> u64 {
    started.elapsed().as_millis() as u64
}

/// A stable name for the engine's code-generation settings: entries compiled
/// under other settings (or another wasmtime) live in another directory.
fn engine_fingerprint(engine: &Engine) -> String {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    env!("CARGO_PKG_VERSION").hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

/// Reads and checks a cache entry. `Ok(None)`: no entry. `Err`: unusable.
fn read_entry(
    engine: &Engine,
    path: &Path,
    hash: &ComponentHash,
) -> Result<Option<Component>, String> {
    let raw = match std::fs::read(path) {
        Ok(raw) => raw,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let newline = raw
        .iter()
        .position(|&b| b == b'\n')
        .ok_or("missing header")?;
    let header = std::str::from_utf8(&raw[..newline]).map_err(|_| "header is not text")?;
    let body = &raw[newline + 1..];
    let mut fields = header.rsplitn(3, ' ');
    let (digest, component_hash, magic) = (fields.next(), fields.next(), fields.next());
    if magic != Some(HEADER_MAGIC) {
        return Err("not a smithers cache entry".into());
    }
    if component_hash != Some(hash.as_str()) {
        return Err(format!(
            "entry belongs to component {}",
            component_hash.unwrap_or("?")
        ));
    }
    if digest != Some(hex::encode(Sha256::digest(body)).as_str()) {
        return Err("body digest mismatch (truncated or corrupted)".into());
    }
    // SAFETY: the bytes were produced by `Component::serialize` of an engine
    // with the same configuration fingerprint (the directory name), written
    // atomically into the host's private state dir, and their sha256 matches
    // the header written alongside them; wasmtime additionally checks the
    // format and engine compatibility before using them.
    let component =
        unsafe { Component::deserialize(engine, body) }.map_err(|e| format!("{e:#}"))?;
    Ok(Some(component))
}

fn write_entry(path: &Path, hash: &ComponentHash, body: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().expect("cache entries live in a directory");
    std::fs::create_dir_all(dir)?;
    let mut file = tempfile::NamedTempFile::new_in(dir)?;
    writeln!(
        file,
        "{HEADER_MAGIC} {} {}",
        hash.as_str(),
        hex::encode(Sha256::digest(body))
    )?;
    file.write_all(body)?;
    file.as_file().sync_all()?;
    file.persist(path).map_err(|e| e.error)?;
    Ok(())
}
