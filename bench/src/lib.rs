//! Shared helpers of the benchmark binaries: building the example guests,
//! opening a host on temporary dirs, and summarising samples.

use std::path::{Path, PathBuf};
use std::time::Duration;

use smithers_host::app::{App, AppConfig};
use smithers_host::runtime::build::{GUEST_PROFILE_ENV, GUEST_TARGET};

/// The repository root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Builds `examples/<name>` for wasm32-wasip2 (shared target dir) and returns
/// the component path. Our own examples are trusted: cargo runs on the host,
/// not in the sandbox the host gives root-dir crates.
pub async fn build_example(name: &str) -> PathBuf {
    build_package(&format!("example-{name}"), &format!("example_{name}")).await
}

/// Builds the workspace guest crate `package` (its library is `artifact`)
/// for wasm32-wasip2 and returns the component path.
pub async fn build_package(package: &str, artifact: &str) -> PathBuf {
    let target_dir = workspace_root().join("target").join("guests");
    let status = tokio::process::Command::new("cargo")
        .current_dir(workspace_root())
        .envs(GUEST_PROFILE_ENV.iter().copied())
        .args([
            "build",
            "--release",
            "--target",
            GUEST_TARGET,
            "-p",
            package,
        ])
        .arg("--target-dir")
        .arg(&target_dir)
        .status()
        .await
        .unwrap_or_else(|e| panic!("running cargo for {package}: {e}"));
    assert!(status.success(), "building {package} failed");
    target_dir
        .join(GUEST_TARGET)
        .join("release")
        .join(format!("{artifact}.wasm"))
}

/// A host on temporary root and state dirs, with `components` copied into
/// the root as `<name>.wasm`.
pub struct BenchHost {
    /// The host.
    pub app: App,
    /// Root dir (kept alive).
    pub root: tempfile::TempDir,
    /// State dir (kept alive).
    pub state: tempfile::TempDir,
}

impl BenchHost {
    /// Opens a host; `configure` may adjust the configuration.
    pub fn open(components: &[(&str, &Path)], configure: impl FnOnce(&mut AppConfig)) -> Self {
        let root = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        for (name, path) in components {
            std::fs::copy(path, root.path().join(format!("{name}.wasm"))).unwrap();
        }
        Self::reopen(root, state, configure)
    }

    /// Opens a host on existing dirs (as a restarted host would; the
    /// caller resumes what it left with `engine.recover()`).
    pub fn reopen(
        root: tempfile::TempDir,
        state: tempfile::TempDir,
        configure: impl FnOnce(&mut AppConfig),
    ) -> Self {
        let mut config = AppConfig::new(root.path());
        config.state_dir = Some(state.path().to_path_buf());
        configure(&mut config);
        let app = App::open(config).expect("open host");
        Self { app, root, state }
    }
}

/// Summary statistics of a sample.
#[derive(Debug, Clone, Copy)]
pub struct Summary {
    /// Smallest.
    pub min: Duration,
    /// Median.
    pub p50: Duration,
    /// 95th percentile.
    pub p95: Duration,
    /// Largest.
    pub max: Duration,
}

/// Summarises samples (sorted in place).
pub fn summarize(samples: &mut [Duration]) -> Summary {
    assert!(!samples.is_empty(), "no samples");
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    Summary {
        min: samples[0],
        p50: at(0.5),
        p95: at(0.95),
        max: samples[samples.len() - 1],
    }
}

/// Milliseconds with three decimals.
pub fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

/// Microseconds with one decimal.
pub fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

/// One line describing the machine (CPU model, cores, kernel).
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cpu}, {cores} cores, Linux {}", kernel.trim())
}
