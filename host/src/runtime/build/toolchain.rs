//! What a confined guest build may see: the Rust toolchain and the cargo
//! dependency cache (read-only), the operator's build sources (read-only)
//! and the target dir (read-write), and the environment cargo runs with.
//!
//! Discovery runs on the host, from `/` and with the host's environment (the
//! operator's), never from the root dir, so a `rust-toolchain.toml` or a
//! `.cargo/config.toml` planted there chooses nothing. This module decides
//! the build's view; it must never add a path that holds the state dir, the
//! cargo credentials or the root dir writable.

use std::path::{Path, PathBuf};

use tokio::process::Command;

use super::{BuildError, GUEST_PROFILE_ENV, GUEST_TARGET};
use crate::sandbox::Mount;

/// The operator's toolchain, as the sandbox will see it.
#[derive(Debug, Clone)]
pub(super) struct Toolchain {
    /// `rustc --print sysroot`.
    pub sysroot: PathBuf,
    /// The `cargo` executable of that toolchain.
    pub cargo: PathBuf,
    /// The `rustc` executable, when it is in the sysroot.
    pub rustc: Option<PathBuf>,
    /// `$CARGO_HOME`: only its `registry` and `git` caches are shown.
    pub cargo_home: PathBuf,
}

/// Directories a build runs in the shadow of (in the host's system dirs).
const SYSTEM_PREFIXES: [&str; 3] = ["/usr", "/bin", "/lib"];

impl Toolchain {
    /// Finds the host's toolchain and makes sure it has the guest target
    /// (installing it with rustup when it is missing).
    pub(super) async fn discover() -> Result<Self, BuildError> {
        let sysroot = host_output("rustc", &["--print", "sysroot"]).await?;
        let sysroot = canonical(Path::new(sysroot.trim()), "the toolchain's sysroot")?;
        if !sysroot.join("lib/rustlib").join(GUEST_TARGET).is_dir() {
            install_target().await?;
        }
        let cargo = if sysroot.join("bin/cargo").is_file() {
            sysroot.join("bin/cargo")
        } else {
            let which = host_output("sh", &["-c", "command -v cargo"]).await?;
            canonical(Path::new(which.trim()), "cargo")?
        };
        let rustc = Some(sysroot.join("bin/rustc")).filter(|p| p.is_file());
        let cargo_home = match std::env::var_os("CARGO_HOME") {
            Some(home) => PathBuf::from(home),
            None => directories::BaseDirs::new()
                .map(|b| b.home_dir().join(".cargo"))
                .ok_or_else(|| BuildError::tool("cargo", "no CARGO_HOME and no home dir"))?,
        };
        let cargo_home = canonical(&cargo_home, "CARGO_HOME")?;
        Ok(Self {
            sysroot,
            cargo,
            rustc,
            cargo_home,
        })
    }

    /// The build's mounts besides the root dir: the toolchain and the
    /// dependency cache read-only (with a throw-away `$CARGO_HOME` around the
    /// cache, so no config or credentials of the host are visible), the
    /// operator's sources read-only under a throw-away layer (like the root
    /// dir: cargo may rewrite a `Cargo.lock`, nothing reaches the disk) and
    /// the target dir read-write.
    pub(super) fn mounts(&self, sources: &[PathBuf], target_dir: &Path) -> Vec<Mount> {
        let mut mounts = Vec::new();
        let cargo_dir = self.cargo.parent().unwrap_or(&self.cargo);
        for dir in [self.sysroot.as_path(), cargo_dir] {
            let shown = SYSTEM_PREFIXES.iter().any(|p| dir.starts_with(p))
                || mounts.iter().any(|m: &Mount| dir.starts_with(m.path()));
            if !shown {
                mounts.push(Mount::ReadOnly(dir.to_path_buf()));
            }
        }
        mounts.push(Mount::Tmpfs(self.cargo_home.clone()));
        for cache in ["registry", "git"] {
            let dir = self.cargo_home.join(cache);
            if dir.is_dir() {
                mounts.push(Mount::ReadOnly(dir));
            }
        }
        mounts.extend(sources.iter().cloned().map(Mount::Overlay));
        mounts.push(Mount::ReadWrite(target_dir.to_path_buf()));
        mounts.dedup();
        mounts
    }

    /// cargo's whole environment: offline, no colours, our target dir and
    /// profile, `$CARGO_HOME` as on the host (so cached sources keep their
    /// paths and the host's own builds can be reused), and nothing else.
    pub(super) fn env(&self, target_dir: &Path) -> Vec<(String, String)> {
        let mut path = format!("{}/bin", self.sysroot.display());
        if let Some(dir) = self.cargo.parent() {
            path = format!("{path}:{}", dir.display());
        }
        let mut env = vec![
            (
                "PATH".into(),
                format!("{path}:/usr/local/bin:/usr/bin:/bin"),
            ),
            ("HOME".into(), "/tmp".into()),
            ("TMPDIR".into(), "/tmp".into()),
            ("LANG".into(), "C.UTF-8".into()),
            ("CARGO_HOME".into(), self.cargo_home.display().to_string()),
            ("CARGO_TARGET_DIR".into(), target_dir.display().to_string()),
            ("CARGO_NET_OFFLINE".into(), "true".into()),
            ("CARGO_TERM_COLOR".into(), "never".into()),
            ("CARGO_TERM_PROGRESS_WHEN".into(), "never".into()),
        ];
        if let Some(rustc) = &self.rustc {
            env.push(("RUSTC".into(), rustc.display().to_string()));
        }
        env.extend(
            GUEST_PROFILE_ENV
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        env
    }

    /// Refuses a view that would expose what builds must never see.
    pub(super) fn check_view(
        &self,
        sources: &[PathBuf],
        target_dir: &Path,
    ) -> Result<(), BuildError> {
        let credentials = &self.cargo_home;
        for source in sources {
            if credentials.starts_with(source) {
                return Err(BuildError::Config(format!(
                    "the build source {} holds CARGO_HOME ({}), whose credentials builds must \
                     not read",
                    source.display(),
                    credentials.display()
                )));
            }
        }
        for (what, dir) in [
            ("the toolchain", &self.sysroot),
            ("CARGO_HOME", credentials),
        ] {
            if dir.starts_with(target_dir) {
                return Err(BuildError::Config(format!(
                    "the build dir {} holds {what} ({}); builds would be able to change it",
                    target_dir.display(),
                    dir.display()
                )));
            }
        }
        Ok(())
    }
}

/// Checks the operator's build dir and sources against the root and state
/// dirs (all canonical): builds write only the build dir, which must be
/// neither in the root dir nor around it or the state dir; sources are read,
/// and must not hold the state dir.
pub fn check_settings(
    root_dir: &Path,
    state_dir: &Path,
    build_dir: &Path,
    sources: &[PathBuf],
) -> Result<(), BuildError> {
    let refuse = |why: String| Err(BuildError::Config(why));
    if build_dir.starts_with(root_dir) {
        return refuse(format!(
            "the build dir {} is inside the root dir {}: workflows could plant build output \
             the host loads; choose a --build-dir outside the project",
            build_dir.display(),
            root_dir.display()
        ));
    }
    if root_dir.starts_with(build_dir) || state_dir.starts_with(build_dir) {
        return refuse(format!(
            "the build dir {} holds the root dir or the state dir; builds may write all of it",
            build_dir.display()
        ));
    }
    for source in sources {
        if state_dir.starts_with(source) {
            return refuse(format!(
                "the build source {} holds the state dir {}; builds must not read the database",
                source.display(),
                state_dir.display()
            ));
        }
        if source == Path::new("/") {
            return refuse("the build source / would show builds the whole machine".into());
        }
    }
    Ok(())
}

fn canonical(path: &Path, what: &str) -> Result<PathBuf, BuildError> {
    std::fs::canonicalize(path)
        .map_err(|e| BuildError::tool("cargo", format!("{what} {}: {e}", path.display())))
}

/// Runs a toolchain query on the host, from `/` (no project file applies).
async fn host_output(program: &'static str, args: &[&str]) -> Result<String, BuildError> {
    let output = Command::new(program)
        .args(args)
        .current_dir("/")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| BuildError::tool(program, e.to_string()))?;
    if !output.status.success() {
        return Err(BuildError::tool(
            program,
            format!(
                "`{program} {}` failed ({}): {}",
                args.join(" "),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Installs the guest target with rustup (the operator's toolchain, from `/`).
async fn install_target() -> Result<(), BuildError> {
    tracing::info!("installing the {GUEST_TARGET} target with rustup");
    host_output("rustup", &["target", "add", GUEST_TARGET])
        .await
        .map(drop)
        .map_err(|e| {
            BuildError::tool(
                "rustup",
                format!("the toolchain lacks {GUEST_TARGET} and it could not be added: {e}"),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_dirs_and_sources_are_refused_where_builds_could_reach_host_state() {
        let root = Path::new("/p/root");
        let state = Path::new("/s/state");
        let ok = |build: &str, sources: &[&str]| {
            let sources: Vec<PathBuf> = sources.iter().map(PathBuf::from).collect();
            check_settings(root, state, Path::new(build), &sources).is_ok()
        };
        assert!(ok("/s/state/build", &[]));
        assert!(ok("/b", &["/p"]));
        assert!(!ok("/p/root/target", &[]), "inside the root");
        assert!(!ok("/p", &[]), "around the root");
        assert!(!ok("/s", &[]), "around the state dir");
        assert!(!ok("/b", &["/s"]), "a source holding the state dir");
        assert!(!ok("/b", &["/"]), "the whole machine");
    }
}
