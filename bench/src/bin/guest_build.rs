//! Cost of building a guest crate inside the sandbox, against the same cargo
//! command run directly on the host (how the host built crates before guest
//! builds were confined).
//!
//! The crate is a standalone copy of `examples/hello` in a temporary root
//! dir, depending on this repository's SDK by path (so builds get the
//! repository as a `--build-source`). Each mode has its own target dir:
//! a cold build (every dependency compiled), then no-op rebuilds, then
//! rebuilds after an edit of `src/lib.rs`.
//!
//! This binary is its own sandbox launcher (it dispatches `__sandbox-exec`
//! before starting any thread, as `smithers-host` does).
//!
//! Run: `cargo run --release -p smithers-bench --bin guest_build [-- ROUNDS]`

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use smithers_bench::{machine, ms, summarize, workspace_root};
use smithers_host::runtime::build::{
    BuildSettings, DEFAULT_BUILD_TIMEOUT, GUEST_PROFILE_ENV, GUEST_TARGET, GuestBuilder,
};
use smithers_host::sandbox::{self, SandboxPolicy};

const DEFAULT_ROUNDS: usize = 5;

const SOURCE: &str = r#"
use smithers_sdk::serde_json::json;
use smithers_sdk::{Ctx, Node, task};

fn build(_ctx: &Ctx) -> Node {
    task("greet", |_t| Ok(json!({ "greeting": "GREETING" })))
}

smithers_sdk::workflow!(name: "bench-hello", build: build);
"#;

fn main() {
    if std::env::args_os().nth(1).as_deref() == Some(std::ffi::OsStr::new(sandbox::LAUNCHER_ARG)) {
        std::process::exit(match sandbox::launcher::main() {
            code if code == std::process::ExitCode::SUCCESS => 0,
            _ => 125,
        });
    }
    let rounds: usize = std::env::args()
        .nth(1)
        .map(|n| n.parse().expect("ROUNDS must be a number"))
        .unwrap_or(DEFAULT_ROUNDS);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(bench(rounds));
}

/// Writes the crate (with `greeting` in its source) into `dir`.
fn write_crate(dir: &Path, greeting: &str) {
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::write(
        dir.join("Cargo.toml"),
        format!(
            "[package]\nname = \"bench-hello\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n\
             [lib]\ncrate-type = [\"cdylib\"]\n\n\
             [dependencies]\nsmithers-sdk = {{ path = {:?} }}\n\n[workspace]\n",
            workspace_root().join("guest-sdk").display().to_string()
        ),
    )
    .unwrap();
    std::fs::copy(workspace_root().join("Cargo.lock"), dir.join("Cargo.lock")).unwrap();
    std::fs::write(dir.join("src/lib.rs"), SOURCE.replace("GREETING", greeting)).unwrap();
}

/// One way of building the crate.
enum Mode {
    /// `GuestBuilder`: cargo through the sandbox launcher.
    Confined(Box<GuestBuilder>),
    /// The same cargo command on the host, with the host's environment.
    Direct(PathBuf),
}

impl Mode {
    async fn build(&self, krate: &Path) {
        match self {
            Mode::Confined(builder) => {
                builder.build(krate).await.expect("confined build");
            }
            Mode::Direct(target_dir) => {
                let status = tokio::process::Command::new("cargo")
                    .args(["build", "--release", "--target", GUEST_TARGET, "--offline"])
                    .arg("--message-format=json")
                    .arg("--manifest-path")
                    .arg(krate.join("Cargo.toml"))
                    .env("CARGO_TARGET_DIR", target_dir)
                    .envs(GUEST_PROFILE_ENV.iter().copied())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .status()
                    .await
                    .unwrap();
                assert!(status.success(), "direct build failed");
            }
        }
    }
}

async fn time(mode: &Mode, krate: &Path) -> Duration {
    let started = Instant::now();
    mode.build(krate).await;
    started.elapsed()
}

async fn bench(rounds: usize) {
    let root = tempfile::tempdir().unwrap();
    let root_dir = std::fs::canonicalize(root.path()).unwrap();
    let targets = tempfile::tempdir().unwrap();
    let krate = root_dir.join("hello");
    write_crate(&krate, "v0");
    let launcher = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"));
    let policy = Arc::new(SandboxPolicy::new(root_dir.clone(), launcher));
    let confined_dir = targets.path().join("confined");
    std::fs::create_dir_all(&confined_dir).unwrap();
    let builder = GuestBuilder::new(
        BuildSettings {
            target_dir: std::fs::canonicalize(&confined_dir).unwrap(),
            sources: vec![workspace_root()],
            timeout: DEFAULT_BUILD_TIMEOUT,
            max_component_bytes: 64 << 20,
        },
        policy,
    );
    let modes = [
        (
            "direct on the host (before)",
            Mode::Direct(targets.path().join("direct")),
        ),
        ("confined (after)", Mode::Confined(Box::new(builder))),
    ];
    println!("machine: {}", machine());
    println!("| build | mode | median | p95 | min |");
    println!("|---|---|---|---|---|");
    for (name, mode) in &modes {
        write_crate(&krate, "v0");
        let cold = time(mode, &krate).await;
        println!("| cold (every dependency) | {name} | {} | | |", ms(cold));
        let mut noop = Vec::new();
        for _ in 0..rounds {
            noop.push(time(mode, &krate).await);
        }
        let s = summarize(&mut noop);
        println!(
            "| no-op rebuild x{rounds} | {name} | {} | {} | {} |",
            ms(s.p50),
            ms(s.p95),
            ms(s.min)
        );
        let mut edits = Vec::new();
        for round in 0..rounds {
            write_crate(&krate, &format!("v{}", round + 1));
            edits.push(time(mode, &krate).await);
        }
        let s = summarize(&mut edits);
        println!(
            "| after an edit x{rounds} | {name} | {} | {} | {} |",
            ms(s.p50),
            ms(s.p95),
            ms(s.min)
        );
    }
}
