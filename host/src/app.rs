//! Assembling a host: root dir, state dir, database, runtime and engine.
//!
//! Every front end (the CLI's local commands, server mode, serve mode, the
//! gateway, in-process tests) opens an [`App`] the same way, so the safety
//! checks (state dir outside the root, one process per state dir) and the
//! defaults live in one place.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::engine::workflows::ScanLimits;
use crate::engine::{Engine, EngineConfig};
use crate::runtime::build::{
    BuildError, BuildSettings, DEFAULT_BUILD_TIMEOUT, check_settings, host_sdk_dir,
};
use crate::runtime::http::{HttpPolicy, Secrets};
use crate::runtime::{DEFAULT_MAX_COMPONENT_BYTES, GuestLimits, Runtime, RuntimeConfig};
use crate::sandbox::SandboxPolicy;
use crate::state_dir::{StateDir, StateDirError};
use crate::store::{Durability, Store, StoreError};

/// What an operator chooses.
#[derive(Debug, Clone)]
pub struct AppConfig {
    /// Project directory: workflows live here, tasks see only this.
    pub root_dir: PathBuf,
    /// Host state (database, caches); default derived from the root dir.
    pub state_dir: Option<PathBuf>,
    /// Give the bash tool the host network.
    pub allow_network: bool,
    /// Run bash without Landlock when the kernel lacks it.
    pub allow_missing_landlock: bool,
    /// Commit durability.
    pub durability: Durability,
    /// Linear memory limit of a workflow instance, in MiB.
    pub max_memory_mb: u64,
    /// Default most tasks in flight per run.
    pub max_concurrency: u32,
    /// Sandbox launcher executable (default: this executable).
    pub launcher: Option<PathBuf>,
    /// Cargo target dir for guest crates (default: in the state dir).
    pub build_dir: Option<PathBuf>,
    /// Directories outside the root dir that guest builds may read.
    pub build_sources: Vec<PathBuf>,
    /// Wall-clock limit of one guest build.
    pub build_timeout: Duration,
    /// Largest component accepted, in MiB.
    pub max_component_mb: u64,
    /// Deadlines and output caps of guests.
    pub limits: GuestLimits,
    /// How much of the root dir listing the workflows may look at.
    pub scan: ScanLimits,
    /// Outbound HTTP of workflows (closed by default).
    pub http: Arc<HttpPolicy>,
    /// Secrets for outbound HTTP (none by default).
    pub secrets: Arc<Secrets>,
}

impl AppConfig {
    /// Defaults for a root dir.
    pub fn new(root_dir: impl Into<PathBuf>) -> Self {
        Self {
            root_dir: root_dir.into(),
            state_dir: None,
            allow_network: false,
            allow_missing_landlock: false,
            durability: Durability::Normal,
            max_memory_mb: 256,
            max_concurrency: 8,
            launcher: None,
            build_dir: None,
            build_sources: Vec::new(),
            build_timeout: DEFAULT_BUILD_TIMEOUT,
            max_component_mb: DEFAULT_MAX_COMPONENT_BYTES >> 20,
            limits: GuestLimits::default(),
            scan: ScanLimits::default(),
            http: Arc::new(HttpPolicy::default()),
            secrets: Arc::new(Secrets::default()),
        }
    }
}

/// Why a host could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The root dir is missing or unreadable.
    #[error("root dir {path}: {source}")]
    RootDir {
        /// As given.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The state dir is unusable.
    #[error(transparent)]
    StateDir(#[from] StateDirError),
    /// The database could not be opened.
    #[error("database: {0}")]
    Store(#[from] StoreError),
    /// The wasm runtime could not be created.
    #[error("wasm runtime: {0}")]
    Runtime(String),
    /// The guest build settings are unsafe or unusable.
    #[error(transparent)]
    Build(#[from] BuildError),
}

/// An opened host.
pub struct App {
    /// The engine (and through it the store and runtime).
    pub engine: Engine,
    /// The locked state dir.
    pub state_dir: StateDir,
    /// The configuration it was opened with (root dir canonicalised).
    pub config: AppConfig,
}

impl App {
    /// Opens the state dir, database, runtime and engine. Must run inside a
    /// tokio runtime.
    pub fn open(mut config: AppConfig) -> Result<Self, AppError> {
        let root_dir =
            std::fs::canonicalize(&config.root_dir).map_err(|source| AppError::RootDir {
                path: config.root_dir.display().to_string(),
                source,
            })?;
        if !root_dir.is_dir() {
            return Err(AppError::RootDir {
                path: root_dir.display().to_string(),
                source: std::io::Error::other("not a directory"),
            });
        }
        config.root_dir = root_dir.clone();
        let state_path = match &config.state_dir {
            Some(path) => path.clone(),
            None => StateDir::default_for(&root_dir)?,
        };
        let state_dir = StateDir::open(&state_path, &root_dir)?;
        config.state_dir = Some(state_dir.path().to_path_buf());
        let build = build_settings(&config, &root_dir, state_dir.path(), state_dir.build_dir())?;
        let store = Store::open(&state_dir.database(), config.durability)?;
        let runtime = Runtime::new(RuntimeConfig {
            max_memory_bytes: config.max_memory_mb * 1024 * 1024,
            limits: config.limits.clone(),
            cache_dir: Some(state_dir.cache_dir()),
            max_component_bytes: config.max_component_mb.max(1) << 20,
            http: config.http.clone(),
            secrets: config.secrets.clone(),
            ..RuntimeConfig::default()
        })
        .map_err(|e| AppError::Runtime(format!("{e:#}")))?;
        let launcher = match &config.launcher {
            Some(path) => path.clone(),
            None => std::env::current_exe().unwrap_or_else(|_| PathBuf::from("smithers-host")),
        };
        let mut policy = SandboxPolicy::new(root_dir.clone(), launcher);
        policy.allow_network = config.allow_network;
        policy.allow_missing_landlock = config.allow_missing_landlock;
        let engine = Engine::new(
            store,
            Arc::new(runtime),
            EngineConfig {
                root_dir,
                sandbox: Arc::new(policy),
                build,
                max_concurrency: config.max_concurrency.max(1),
                scan: config.scan,
            },
        );
        Ok(Self {
            engine,
            state_dir,
            config,
        })
    }

    /// Stops the engine's drivers and closes the database.
    pub async fn close(self) {
        self.engine.shutdown().await;
        self.engine.store().close();
    }
}

/// The guest build settings, canonical and checked: the build dir (created)
/// outside the root dir and not around it or the state dir, the sources
/// existing directories that do not hold the state dir.
fn build_settings(
    config: &AppConfig,
    root_dir: &Path,
    state_dir: &Path,
    default_build_dir: PathBuf,
) -> Result<BuildSettings, AppError> {
    let refuse = |why: String| AppError::Build(BuildError::Config(why));
    let build_dir = config.build_dir.clone().unwrap_or(default_build_dir);
    // Judge the path as given before creating it (a build dir inside the root
    // dir is refused, not made), then again once it exists and is canonical.
    let given = std::path::absolute(&build_dir)
        .map_err(|e| refuse(format!("build dir {}: {e}", build_dir.display())))?;
    check_settings(root_dir, state_dir, &given, &[])?;
    let target_dir = std::fs::create_dir_all(&build_dir)
        .and_then(|()| std::fs::canonicalize(&build_dir))
        .map_err(|e| refuse(format!("build dir {}: {e}", build_dir.display())))?;
    let mut sources = Vec::new();
    for source in &config.build_sources {
        let canonical = std::fs::canonicalize(source)
            .ok()
            .filter(|p| p.is_dir())
            .ok_or_else(|| {
                refuse(format!(
                    "build source {} is not a directory",
                    source.display()
                ))
            })?;
        sources.push(canonical);
    }
    // The host's own SDK (when its checkout is still there) is readable by
    // builds, so crates made by `smithers-host new` resolve it by path.
    if let Some(sdk) = host_sdk_dir().filter(|sdk| !sources.iter().any(|s| sdk.starts_with(s))) {
        sources.push(sdk);
    }
    check_settings(root_dir, state_dir, &target_dir, &sources)?;
    Ok(BuildSettings {
        target_dir,
        sources,
        timeout: config.build_timeout,
        max_component_bytes: config.max_component_mb.max(1) << 20,
    })
}

/// Whether `path` resolves (symlinks followed) to somewhere under `dir`: a
/// file there is one a workflow may have written, so the host must not take
/// its configuration from it.
pub(crate) fn resolves_inside(path: &Path, dir: &Path) -> bool {
    match (std::fs::canonicalize(path), std::fs::canonicalize(dir)) {
        (Ok(path), Ok(dir)) => path.starts_with(dir),
        _ => false,
    }
}
