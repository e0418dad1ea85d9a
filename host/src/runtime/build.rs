//! Building guest crates: the dev loop where `workflowPath` names a crate.
//!
//! The host runs `cargo build --release --target wasm32-wasip2` on the crate
//! (installing the target with rustup first if it is missing), with a target
//! dir in the host's state dir and a lean release profile
//! ([`GUEST_PROFILE_ENV`]), and returns the component it produced.
//! Builds of one crate are serialized; a failed build returns the compiler's
//! own messages.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::process::Command;

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

/// Why a guest crate could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The directory has no `Cargo.toml` with a `[package]`.
    #[error("{0} is not a Rust crate (no Cargo.toml with a [package])")]
    NotACrate(String),
    /// `cargo` or `rustup` could not be run.
    #[error("cannot run {tool}: {message}")]
    Tool {
        /// The program.
        tool: &'static str,
        /// What went wrong.
        message: String,
    },
    /// The compiler rejected the crate.
    #[error("building {krate} failed:\n{messages}")]
    Compile {
        /// Crate directory.
        krate: String,
        /// Rendered compiler messages.
        messages: String,
    },
    /// The build succeeded but produced no `.wasm` component.
    #[error("building {0} produced no .wasm component (is it a `cdylib`?)")]
    NoArtifact(String),
}

/// Builds guest crates into a shared target dir.
pub struct GuestBuilder {
    target_dir: PathBuf,
    locks: Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>,
    target_checked: tokio::sync::OnceCell<()>,
}

impl GuestBuilder {
    /// A builder whose cargo target dir is `target_dir`.
    pub fn new(target_dir: PathBuf) -> Self {
        Self {
            target_dir,
            locks: Mutex::new(HashMap::new()),
            target_checked: tokio::sync::OnceCell::new(),
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

    /// Builds the crate in `crate_dir` and returns the path of its component.
    pub async fn build(&self, crate_dir: &Path) -> Result<PathBuf, BuildError> {
        let manifest = crate_dir.join("Cargo.toml");
        let text = std::fs::read_to_string(&manifest)
            .map_err(|_| BuildError::NotACrate(crate_dir.display().to_string()))?;
        if !text.contains("[package]") {
            return Err(BuildError::NotACrate(crate_dir.display().to_string()));
        }
        self.target_checked
            .get_or_try_init(ensure_target_installed)
            .await?;
        let gate = {
            let mut locks = self.locks.lock().expect("build locks");
            locks.entry(crate_dir.to_path_buf()).or_default().clone()
        };
        let _turn = gate.lock().await;
        let output = Command::new("cargo")
            .args(["build", "--release", "--target", GUEST_TARGET])
            .arg("--manifest-path")
            .arg(&manifest)
            .arg("--message-format=json-render-diagnostics")
            .env("CARGO_TARGET_DIR", &self.target_dir)
            .envs(GUEST_PROFILE_ENV.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|e| BuildError::Tool {
                tool: "cargo",
                message: e.to_string(),
            })?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let mut artifact = None;
        let mut messages = Vec::new();
        let wanted_manifest = std::fs::canonicalize(&manifest).unwrap_or(manifest.clone());
        for line in stdout.lines() {
            let Ok(message) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            match message.get("reason").and_then(Value::as_str) {
                Some("compiler-message") => {
                    if let Some(rendered) =
                        message.pointer("/message/rendered").and_then(Value::as_str)
                    {
                        messages.push(rendered.to_string());
                    }
                }
                Some("compiler-artifact") => {
                    let from_manifest = message
                        .get("manifest_path")
                        .and_then(Value::as_str)
                        .map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| PathBuf::from(p)));
                    if from_manifest.as_deref() != Some(wanted_manifest.as_path()) {
                        continue;
                    }
                    if let Some(files) = message.get("filenames").and_then(Value::as_array) {
                        artifact = files
                            .iter()
                            .filter_map(Value::as_str)
                            .find(|f| f.ends_with(".wasm"))
                            .map(PathBuf::from)
                            .or(artifact);
                    }
                }
                _ => {}
            }
        }
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let mut text = messages.join("\n");
            if text.trim().is_empty() {
                text = stderr
                    .lines()
                    .rev()
                    .take(40)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n");
            }
            return Err(BuildError::Compile {
                krate: crate_dir.display().to_string(),
                messages: text,
            });
        }
        artifact.ok_or_else(|| BuildError::NoArtifact(crate_dir.display().to_string()))
    }
}

/// Installs the guest target with rustup when the toolchain lacks it.
async fn ensure_target_installed() -> Result<(), BuildError> {
    let listed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .await;
    match listed {
        Ok(out)
            if String::from_utf8_lossy(&out.stdout)
                .lines()
                .any(|l| l.trim() == GUEST_TARGET) =>
        {
            Ok(())
        }
        Ok(_) => {
            tracing::info!("installing the {GUEST_TARGET} target with rustup");
            let status = Command::new("rustup")
                .args(["target", "add", GUEST_TARGET])
                .status()
                .await
                .map_err(|e| BuildError::Tool {
                    tool: "rustup",
                    message: e.to_string(),
                })?;
            if status.success() {
                Ok(())
            } else {
                Err(BuildError::Tool {
                    tool: "rustup",
                    message: format!("`rustup target add {GUEST_TARGET}` failed ({status})"),
                })
            }
        }
        // No rustup (a distribution toolchain): let cargo report what is missing.
        Err(_) => Ok(()),
    }
}
