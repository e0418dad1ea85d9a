//! Workflows as things the host knows: loading one from a `workflowPath`
//! (every start, resume and preflight goes through here), listing those
//! under the root dir, and remembering the last build of each guest crate.
//!
//! Listing must never turn into unbounded work that anyone who can reach the
//! API can trigger: the walk is bounded ([`ScanLimits`], see `scan`), one
//! listing runs at a time, a `.wasm` is loaded through the runtime (compiled
//! once per hash, then served from the cache), but a crate is **not** built
//! because someone listed it: the listing reports the outcome of the last
//! build of its current sources (a fingerprint of its files tells whether
//! they changed since), or that it was not built yet. Building is what
//! `GET /v1/workflows/:path`, a start, or `?build=true` asks for.

mod scan;

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use lru::LruCache;
use serde::Serialize;
use serde_json::Value;

pub use scan::ScanLimits;

use super::{Engine, EngineError, EngineInner};
use crate::runtime::build::GuestBuilder;
use crate::runtime::{LoadError, Loaded, Workflow, escaped_prefix};
use crate::sandbox::paths::{self, PathError, ReadError};

/// Crates whose last build is remembered.
const REMEMBERED_BUILDS: usize = 256;
/// Longest error message given in a listing.
const MAX_PROBLEM_CHARS: usize = 2000;
/// Longest part of a client's `workflowPath` quoted in an error.
const MAX_QUOTED_PATH_CHARS: usize = 256;

/// How a workflow is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WorkflowKind {
    /// A `.wasm` component file.
    Component,
    /// A guest crate directory the host builds.
    Crate,
}

/// What the host can say about a workflow now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WorkflowState {
    /// It loads: a component, or a crate built from its current sources.
    Ready,
    /// A crate this host has not built (listing does not build).
    NotBuilt,
    /// A crate whose sources changed since this host last built it.
    Outdated,
    /// It does not load, or the crate does not build: `error` says why.
    Failed,
}

/// Why a workflow does not load: the code a start would answer, and a
/// bounded message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WorkflowProblem {
    /// Error code (`WORKFLOW_BUILD_FAILED`, `WORKFLOW_INVALID_COMPONENT`, ...).
    pub code: &'static str,
    /// What went wrong (at most 2000 characters).
    pub message: String,
}

/// One workflow under the root dir.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowEntry {
    /// Relative to the root dir (`.` for the root dir itself): a
    /// `workflowPath` that starts it.
    pub path: String,
    /// Component or crate.
    pub kind: WorkflowKind,
    /// Ready, not built, outdated or failed.
    pub state: WorkflowState,
    /// Its `describe` name, when it is ready.
    pub name: Option<String>,
    /// Its `describe` version, when it is ready.
    pub version: Option<String>,
    /// The component's hash (what a run started now records), when ready.
    pub hash: Option<String>,
    /// The JSON Schema every run's input must match, when it declares one.
    pub input_schema: Option<Value>,
    /// Why it is not ready, when it failed.
    pub error: Option<WorkflowProblem>,
}

/// The workflows under the root dir.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowList {
    /// Sorted by path.
    pub workflows: Vec<WorkflowEntry>,
    /// A bound stopped the walk: there may be more (see [`ScanLimits`]).
    pub truncated: bool,
}

/// What a workflow described, kept after its build.
#[derive(Debug, Clone)]
struct Described {
    hash: String,
    name: String,
    version: String,
    input_schema: Option<Value>,
}

impl Described {
    fn of(workflow: &Workflow) -> Self {
        Self {
            hash: workflow.hash.to_string(),
            name: workflow.info.name.clone(),
            version: workflow.info.version.clone(),
            input_schema: workflow.input_schema.as_ref().map(|s| s.json().clone()),
        }
    }
}

/// The outcome of the last build of a crate, and the sources it started from.
struct BuildRecord {
    fingerprint: u64,
    outcome: Result<Described, WorkflowProblem>,
}

/// The engine's memory of workflows: the last build of each crate, and the
/// gate that keeps listings one at a time.
pub struct Catalog {
    builds: Mutex<LruCache<PathBuf, BuildRecord>>,
    listing: tokio::sync::Mutex<()>,
}

impl Default for Catalog {
    fn default() -> Self {
        Self {
            builds: Mutex::new(LruCache::new(
                NonZeroUsize::new(REMEMBERED_BUILDS).expect("non-zero"),
            )),
            listing: tokio::sync::Mutex::new(()),
        }
    }
}

impl WorkflowEntry {
    fn new(path: String, kind: WorkflowKind, state: WorkflowState) -> Self {
        Self {
            path,
            kind,
            state,
            name: None,
            version: None,
            hash: None,
            input_schema: None,
            error: None,
        }
    }

    fn of(path: String, kind: WorkflowKind, outcome: Result<Described, WorkflowProblem>) -> Self {
        match outcome {
            Ok(described) => Self {
                name: Some(described.name),
                version: Some(described.version),
                hash: Some(described.hash),
                input_schema: described.input_schema,
                ..Self::new(path, kind, WorkflowState::Ready)
            },
            Err(problem) => Self {
                error: Some(problem),
                ..Self::new(path, kind, WorkflowState::Failed)
            },
        }
    }
}

impl EngineError {
    /// The wire code of an error met while loading a workflow (the code the
    /// HTTP layer answers a start with; a test there keeps them equal).
    pub(crate) fn workflow_code(&self) -> &'static str {
        match self {
            Self::WorkflowLoad(e) => e.code(),
            Self::WorkflowBuild(_) => "WORKFLOW_BUILD_FAILED",
            Self::WorkflowNotFound(_) => "WORKFLOW_NOT_FOUND",
            Self::WorkflowPathOutsideRoot(_) => "WORKFLOW_PATH_OUTSIDE_ROOT",
            Self::InvalidRequest(_) => "INVALID_REQUEST",
            Self::ShuttingDown => "SHUTTING_DOWN",
            // Not met while loading.
            _ => "SERVER_ERROR",
        }
    }
}

/// At most [`MAX_QUOTED_PATH_CHARS`] characters of a path a client sent,
/// control characters escaped.
fn bounded_path(path: &str) -> String {
    escaped_prefix(path, MAX_QUOTED_PATH_CHARS)
}

fn problem(error: &EngineError) -> WorkflowProblem {
    let text = error.to_string();
    let mut message: String = text.chars().take(MAX_PROBLEM_CHARS).collect();
    if message.len() < text.len() {
        message.push_str("… (cut)");
    }
    WorkflowProblem {
        code: error.workflow_code(),
        message,
    }
}

fn outcome_of(result: &Result<Loaded, EngineError>) -> Result<Described, WorkflowProblem> {
    match result {
        Ok(loaded) => Ok(Described::of(&loaded.workflow)),
        Err(e) => Err(problem(e)),
    }
}

impl EngineInner {
    /// Resolves and loads a workflow: a component file is read (bounded,
    /// never through a symlink out), a crate directory is built (confined).
    pub(super) async fn load_workflow(
        &self,
        workflow_path: &str,
    ) -> Result<(PathBuf, Loaded), EngineError> {
        let path = self.resolve_workflow(workflow_path)?;
        let loaded = self.load_resolved(workflow_path, &path).await?;
        Ok((path, loaded))
    }

    /// `workflow_path` under the root dir, lexically and after symlinks.
    fn resolve_workflow(&self, workflow_path: &str) -> Result<PathBuf, EngineError> {
        if workflow_path.trim().is_empty() {
            return Err(EngineError::InvalidRequest(
                "workflowPath must be a string".into(),
            ));
        }
        // The path is the client's: errors quote a bounded, escaped prefix.
        paths::resolve_existing(&self.config.root_dir, workflow_path).map_err(|e| match e {
            PathError::Escape(p) => EngineError::WorkflowPathOutsideRoot(bounded_path(&p)),
            PathError::NotFound(p) => EngineError::WorkflowNotFound(bounded_path(&p)),
            PathError::Invalid(p) => {
                EngineError::InvalidRequest(format!("invalid workflowPath: {}", bounded_path(&p)))
            }
        })
    }

    async fn load_resolved(&self, workflow_path: &str, path: &Path) -> Result<Loaded, EngineError> {
        if path.is_dir() {
            if !GuestBuilder::is_crate_dir(path) {
                return Err(EngineError::WorkflowNotFound(format!(
                    "{} is a directory without a Cargo.toml",
                    bounded_path(workflow_path)
                )));
            }
            return self.load_crate(path).await;
        }
        let bytes = self.read_component(workflow_path, path)?;
        Ok(self.runtime.load(bytes).await?)
    }

    /// Builds and loads the crate at `krate` (canonical, under the root dir)
    /// and remembers the outcome with a fingerprint of the sources taken
    /// before the build: an edit during the build makes it outdated.
    pub(super) async fn load_crate(&self, krate: &Path) -> Result<Loaded, EngineError> {
        let fingerprint = self.fingerprint(krate).await;
        let result = match self.builder.build(krate).await {
            Ok(bytes) => self.runtime.load(bytes).await.map_err(EngineError::from),
            Err(e) => Err(e.into()),
        };
        let record = BuildRecord {
            fingerprint,
            outcome: outcome_of(&result),
        };
        self.catalog
            .builds
            .lock()
            .expect("build records")
            .put(krate.to_path_buf(), record);
        result
    }

    async fn fingerprint(&self, krate: &Path) -> u64 {
        let root = self.config.root_dir.clone();
        let relative = match krate.strip_prefix(&root) {
            Ok(p) if p.as_os_str().is_empty() => ".".to_owned(),
            Ok(p) => p.to_string_lossy().into_owned(),
            Err(_) => return 0,
        };
        tokio::task::spawn_blocking(move || scan::fingerprint(&root, &relative))
            .await
            .unwrap_or(0)
    }

    /// Reads a component file of the root dir: a regular file, within the
    /// size bound, reached without leaving the root dir (the path was checked,
    /// but a running workflow may swap in a symlink since).
    fn read_component(&self, workflow_path: &str, path: &Path) -> Result<Vec<u8>, EngineError> {
        let limit = self.runtime.config().max_component_bytes;
        let shown = || bounded_path(workflow_path);
        paths::read_beneath(&self.config.root_dir, path, limit).map_err(|e| match e {
            ReadError::Escape => EngineError::WorkflowPathOutsideRoot(shown()),
            ReadError::NotFound => EngineError::WorkflowNotFound(shown()),
            ReadError::TooLarge { size, limit } => {
                EngineError::WorkflowLoad(LoadError::TooLarge { size, limit })
            }
            other => EngineError::WorkflowNotFound(format!("{}: {other}", shown())),
        })
    }

    /// A listed crate without building it: the last build, if its sources
    /// are still the ones it started from.
    async fn known_crate(&self, path: String) -> WorkflowEntry {
        // The key `load_crate` used: the canonical path (the walk follows no
        // symlink, so joining is enough), the root dir itself for `.`.
        let root = &self.config.root_dir;
        let krate = if path == "." {
            root.clone()
        } else {
            root.join(&path)
        };
        let fingerprint = self.fingerprint(&krate).await;
        let builds = self.catalog.builds.lock().expect("build records");
        match builds.peek(&krate) {
            Some(record) if record.fingerprint == fingerprint => {
                WorkflowEntry::of(path, WorkflowKind::Crate, record.outcome.clone())
            }
            Some(_) => WorkflowEntry::new(path, WorkflowKind::Crate, WorkflowState::Outdated),
            None => WorkflowEntry::new(path, WorkflowKind::Crate, WorkflowState::NotBuilt),
        }
    }
}

impl Engine {
    /// Resolves and loads a workflow without starting anything: the
    /// validation `start` performs before accepting a run.
    pub async fn load_workflow(
        &self,
        workflow_path: &str,
    ) -> Result<(PathBuf, Loaded), EngineError> {
        self.inner.load_workflow(workflow_path).await
    }

    /// The workflows under the root dir, within the scan limits. Components
    /// are loaded (from the cache when their hash is known); crates are
    /// built only when `build` is set, otherwise reported from their last
    /// build.
    pub async fn workflows(&self, build: bool) -> Result<WorkflowList, EngineError> {
        let inner = &self.inner;
        inner.check_running()?;
        let _one_at_a_time = inner.catalog.listing.lock().await;
        let root = inner.config.root_dir.clone();
        let limits = inner.config.scan;
        let found = tokio::task::spawn_blocking(move || scan::discover(&root, &limits))
            .await
            .unwrap_or_default();
        let mut workflows = Vec::with_capacity(found.candidates.len());
        for candidate in found.candidates {
            let (path, kind) = (candidate.path, candidate.kind);
            let entry = if kind == WorkflowKind::Crate && !build {
                inner.known_crate(path).await
            } else {
                let outcome = outcome_of(&inner.load_workflow(&path).await.map(|(_, l)| l));
                WorkflowEntry::of(path, kind, outcome)
            };
            workflows.push(entry);
        }
        Ok(WorkflowList {
            workflows,
            truncated: found.truncated,
        })
    }

    /// One workflow, resolved like a start's `workflowPath`, loaded (a crate
    /// is built). A path that names no workflow is an error; one that does
    /// not load or build is an entry in state `failed`.
    pub async fn workflow(&self, workflow_path: &str) -> Result<WorkflowEntry, EngineError> {
        let inner = &self.inner;
        inner.check_running()?;
        let path = inner.resolve_workflow(workflow_path)?;
        let kind = if path.is_dir() {
            WorkflowKind::Crate
        } else {
            WorkflowKind::Component
        };
        let shown = match path.strip_prefix(&inner.config.root_dir) {
            Ok(p) if p.as_os_str().is_empty() => ".".to_owned(),
            Ok(p) => p.to_string_lossy().into_owned(),
            Err(_) => bounded_path(workflow_path),
        };
        match inner.load_resolved(workflow_path, &path).await {
            Ok(loaded) => Ok(WorkflowEntry::of(
                shown,
                kind,
                Ok(Described::of(&loaded.workflow)),
            )),
            Err(e @ (EngineError::WorkflowLoad(_) | EngineError::WorkflowBuild(_))) => {
                Ok(WorkflowEntry::of(shown, kind, Err(problem(&e))))
            }
            Err(e) => Err(e),
        }
    }
}
