//! Building guest crates: the dev loop where `workflowPath` names a crate.
//!
//! Building a crate is running its author's code (build scripts, procedural
//! macros), and the crate is in the root dir, which a workflow can write. So
//! cargo runs **inside the sandbox** ([`crate::sandbox::run_confined`]): its
//! own namespaces, no network, Landlock and seccomp, an environment of our
//! making, the root dir read-only, the toolchain and the dependency cache
//! read-only, the operator's `--build-source` dirs read-only, and only the
//! build's target dir writable. cargo runs from `/tmp` with a throw-away
//! `$CARGO_HOME`, so no `.cargo/config.toml` of the root dir (or the host's)
//! applies. The root dir and the sources are read-only under a throw-away
//! writable layer, so cargo may resolve and write a `Cargo.lock` that never
//! reaches the disk. Builds are offline: dependencies must be in the host's
//! cargo cache, which the operator fills with `cargo fetch` (it runs no build
//! script); the host never downloads anything for a guest.
//!
//! The artifact is read back from the target dir without following anything
//! out of it and within the component size bound; compiler output reaches a
//! client only sanitized and bounded ([`output`]). Builds of one crate are
//! serialized.

mod output;
mod toolchain;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::sandbox::paths::{self, ReadError};
use crate::sandbox::{ConfinedCommand, ResourceLimits, SandboxPolicy, ToolErrorCode, run_confined};
pub use output::sanitize;
use toolchain::Toolchain;
pub use toolchain::check_settings;

/// The wasm target guests are built for.
pub const GUEST_TARGET: &str = "wasm32-wasip2";

/// Release-profile overrides for guest builds: no debug info (function names kept for trap messages), fat
/// LTO, one codegen unit, optimised for size. A guest shrinks from ~3.4 MB to
/// ~0.15 MB, which is what makes compiling a new version fast. They apply
/// only to the guest build's own target dir, never to the host's.
pub const GUEST_PROFILE_ENV: &[(&str, &str)] = &[
    ("CARGO_PROFILE_RELEASE_DEBUG", "false"),
    ("CARGO_PROFILE_RELEASE_STRIP", "debuginfo"),
    ("CARGO_PROFILE_RELEASE_LTO", "true"),
    ("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "1"),
    ("CARGO_PROFILE_RELEASE_OPT_LEVEL", "s"),
];

/// Default wall-clock limit of one guest build.
pub const DEFAULT_BUILD_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// Largest `Cargo.toml` the host reads to recognise a crate.
const MAX_MANIFEST_BYTES: u64 = 1 << 20;
/// Cap of cargo's JSON stdout and of its stderr.
const MAX_CARGO_OUTPUT: usize = 16 << 20;

/// Why a guest crate could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The directory has no `Cargo.toml` with a `[package]`.
    #[error("{0} is not a Rust crate (no Cargo.toml with a [package])")]
    NotACrate(String),
    /// The toolchain could not be found or prepared.
    #[error("cannot run {tool}: {message}")]
    Tool {
        /// The program.
        tool: &'static str,
        /// What went wrong.
        message: String,
    },
    /// The operator's build settings expose what builds must not see.
    #[error("guest build settings refused: {0}")]
    Config(String),
    /// The sandbox refused to start the build: builds fail closed.
    #[error("guest builds run in the sandbox, which refused: {0}")]
    Sandbox(String),
    /// The build ran past `--build-timeout`; its processes were killed.
    #[error(
        "building {krate} timed out after {seconds} s (--build-timeout); every process it started was killed"
    )]
    TimedOut {
        /// Crate directory.
        krate: String,
        /// The limit.
        seconds: u64,
    },
    /// The compiler rejected the crate (sanitized, bounded messages).
    #[error("building {krate} failed:\n{messages}")]
    Compile {
        /// Crate directory.
        krate: String,
        /// Compiler messages.
        messages: String,
    },
    /// The build succeeded but produced no usable `.wasm` component.
    #[error("building {krate} produced no usable .wasm component: {why}")]
    NoArtifact {
        /// Crate directory.
        krate: String,
        /// Why (missing, not a regular file, too large, outside the build dir).
        why: String,
    },
}

impl BuildError {
    fn tool(tool: &'static str, message: impl Into<String>) -> Self {
        Self::Tool {
            tool,
            message: message.into(),
        }
    }
}

/// The operator's choices for guest builds.
#[derive(Debug, Clone)]
pub struct BuildSettings {
    /// Cargo target dir (outside the root dir; the only place builds write).
    pub target_dir: PathBuf,
    /// Directories outside the root dir builds may read (e.g. the cargo
    /// workspace the root dir's crates belong to).
    pub sources: Vec<PathBuf>,
    /// Wall-clock limit of one build.
    pub timeout: Duration,
    /// Largest component a build may produce.
    pub max_component_bytes: u64,
}

/// The SDK of the checkout this binary was built from, if that checkout still
/// exists and still holds it. Guest builds may read it (it is the host's own,
/// public code), so crates made by `smithers-host new` resolve it by path.
pub fn host_sdk_dir() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()?
        .join("guest-sdk");
    let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).ok()?;
    let is_sdk = manifest.contains("name = \"smithers-sdk\"") && dir.join("wit").is_dir();
    is_sdk.then(|| std::fs::canonicalize(&dir).ok()).flatten()
}

/// Builds guest crates, confined, into a shared target dir.
pub struct GuestBuilder {
    settings: BuildSettings,
    sandbox: Arc<SandboxPolicy>,
    locks: Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>,
    toolchain: tokio::sync::OnceCell<Toolchain>,
}

impl GuestBuilder {
    /// A builder confined by `sandbox` (its root dir, launcher, Landlock setting).
    pub fn new(settings: BuildSettings, sandbox: Arc<SandboxPolicy>) -> Self {
        Self {
            settings,
            sandbox,
            locks: Mutex::new(HashMap::new()),
            toolchain: tokio::sync::OnceCell::new(),
        }
    }

    /// The crate this builder has built whose sources include `path`
    /// (a `.rs` file or a `Cargo.toml` outside its `target/`).
    pub fn crate_of(&self, path: &Path) -> Option<PathBuf> {
        let is_source = path.extension().is_some_and(|e| e == "rs")
            || path.file_name().is_some_and(|n| n == "Cargo.toml");
        if !is_source {
            return None;
        }
        let locks = self.locks.lock().expect("build locks");
        locks
            .keys()
            .find(|krate| path.starts_with(krate) && !path.starts_with(krate.join("target")))
            .cloned()
    }

    /// True when `dir` looks like a crate the builder can build.
    pub fn is_crate_dir(dir: &Path) -> bool {
        dir.is_dir() && dir.join("Cargo.toml").is_file()
    }

    /// Builds the crate in `crate_dir` (canonical, inside the root dir)
    /// and returns its component's bytes.
    pub async fn build(&self, crate_dir: &Path) -> Result<Vec<u8>, BuildError> {
        let root = &self.sandbox.root_dir;
        let manifest = crate_dir.join("Cargo.toml");
        let krate = crate_dir.display().to_string();
        let text = paths::read_beneath(root, &manifest, MAX_MANIFEST_BYTES)
            .map_err(|_| BuildError::NotACrate(krate.clone()))?;
        if !String::from_utf8_lossy(&text).contains("[package]") {
            return Err(BuildError::NotACrate(krate));
        }
        let toolchain = self.toolchain.get_or_try_init(Toolchain::discover).await?;
        let target_dir = &self.settings.target_dir;
        toolchain.check_view(&self.settings.sources, target_dir)?;
        std::fs::create_dir_all(target_dir)
            .map_err(|e| BuildError::tool("cargo", format!("build dir: {e}")))?;

        let gate = {
            let mut locks = self.locks.lock().expect("build locks");
            locks.entry(crate_dir.to_path_buf()).or_default().clone()
        };
        let _turn = gate.lock().await;
        let command = ConfinedCommand {
            program: toolchain.cargo.clone(),
            args: [
                "build",
                "--release",
                "--target",
                GUEST_TARGET,
                "--offline",
                "--message-format=json",
                "--manifest-path",
            ]
            .into_iter()
            .map(String::from)
            .chain([manifest.display().to_string()])
            .collect(),
            env: toolchain.env(target_dir),
            cwd: PathBuf::from("/tmp"),
            mounts: toolchain.mounts(&self.settings.sources, target_dir),
            limits: build_limits(),
            timeout: self.settings.timeout,
            max_output_bytes: MAX_CARGO_OUTPUT,
        };
        let started = std::time::Instant::now();
        let run = run_confined(&self.sandbox, command, CancellationToken::new())
            .await
            .map_err(|e| match e.code {
                ToolErrorCode::Timeout => BuildError::TimedOut {
                    krate: krate.clone(),
                    seconds: self.settings.timeout.as_secs(),
                },
                _ => BuildError::Sandbox(e.to_string()),
            })?;
        tracing::info!(
            krate = %krate,
            exit_code = run.exit_code,
            ms = started.elapsed().as_millis() as u64,
            "confined guest build finished"
        );
        let report = output::parse(&run.stdout, &manifest);
        if run.exit_code != 0 {
            let mut text = report.errors.join("\n");
            if text.trim().is_empty() {
                text = output::stderr_tail(&run.stderr, 40);
            }
            let hints = [
                output::hint(&run.stderr, &manifest),
                output::workspace_hint(&run.stderr, crate_dir, root),
            ];
            for hint in hints.into_iter().flatten() {
                text = format!("{text}\n{hint}");
            }
            return Err(BuildError::Compile {
                krate,
                messages: sanitize(&text, target_dir),
            });
        }
        let no_artifact = |why: String| BuildError::NoArtifact {
            krate: krate.clone(),
            why,
        };
        let artifact = report
            .artifact
            .ok_or_else(|| no_artifact("cargo named no .wasm file (is it a `cdylib`?)".into()))?;
        paths::read_beneath(target_dir, &artifact, self.settings.max_component_bytes).map_err(|e| {
            match e {
                ReadError::Escape => no_artifact("it lies outside the build dir".into()),
                other => no_artifact(other.to_string()),
            }
        })
    }
}

/// Limits of every process of a build: rustc and the linker need more than a
/// shell, and cargo runs several at once.
fn build_limits() -> ResourceLimits {
    ResourceLimits {
        address_space_bytes: 8 << 30,
        processes: 512,
        file_size_bytes: 4 << 30,
        open_files: 4096,
        tmp_size_bytes: 1 << 30,
    }
}
