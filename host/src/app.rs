//! Assembling a host: root dir, state dir, database, runtime and engine.
//!
//! Every front end (the CLI's local commands, server mode, serve mode, the
//! gateway, in-process tests) opens an [`App`] the same way, so the safety
//! checks (state dir outside the root, one process per state dir) and the
//! defaults live in one place.

use std::path::PathBuf;
use std::sync::Arc;

use crate::engine::{Engine, EngineConfig};
use crate::runtime::{GuestLimits, Runtime, RuntimeConfig};
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
    /// Deadlines and output caps of guests.
    pub limits: GuestLimits,
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
            limits: GuestLimits::default(),
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
        let store = Store::open(&state_dir.database(), config.durability)?;
        let runtime = Runtime::new(RuntimeConfig {
            max_memory_bytes: config.max_memory_mb * 1024 * 1024,
            limits: config.limits.clone(),
            cache_dir: Some(state_dir.cache_dir()),
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
                build_dir: config
                    .build_dir
                    .clone()
                    .unwrap_or_else(|| state_dir.build_dir()),
                max_concurrency: config.max_concurrency.max(1),
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
