//! Cost of one confined bash call: `bash -c true` through the full sandbox
//! (launcher re-exec, namespaces, new root, Landlock, capabilities, rlimits,
//! report protocol, teardown), measured end to end as a workflow sees it.
//!
//! This binary is its own launcher (it dispatches `__sandbox-exec` before
//! starting any thread, as `smithers-host` does), so no other binary needs
//! to be built.
//!
//! Run: `cargo run --release -p smithers-bench --bin bash_spawn [-- ITERATIONS]`

use std::path::PathBuf;
use std::time::{Duration, Instant};

use smithers_bench::{machine, ms, summarize};
use smithers_host::sandbox::{self, BashRequest, CancellationToken, SandboxPolicy};

const WARM_UP: usize = 20;
const DEFAULT_ITERATIONS: usize = 300;

fn main() {
    if std::env::args_os().nth(1).as_deref() == Some(std::ffi::OsStr::new(sandbox::LAUNCHER_ARG)) {
        std::process::exit(match sandbox::launcher::main() {
            code if code == std::process::ExitCode::SUCCESS => 0,
            _ => 125,
        });
    }
    let iterations: usize = std::env::args()
        .nth(1)
        .map(|n| n.parse().expect("ITERATIONS must be a number"))
        .unwrap_or(DEFAULT_ITERATIONS);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(bench(iterations));
}

async fn bench(iterations: usize) {
    let root = tempfile::tempdir().unwrap();
    let policy = SandboxPolicy::new(
        std::fs::canonicalize(root.path()).unwrap(),
        std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe")),
    );
    let status = sandbox::probe(&policy).await;
    println!("machine: {}", machine());
    println!("{status}");
    assert!(status.available, "the sandbox is unavailable on this host");

    let call = || {
        sandbox::run_bash(
            &policy,
            BashRequest {
                command: "true".into(),
                ..BashRequest::default()
            },
            CancellationToken::new(),
        )
    };
    for _ in 0..WARM_UP {
        call().await.expect("warm-up call");
    }
    let mut samples: Vec<Duration> = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let started = Instant::now();
        let outcome = call().await.expect("confined `true`");
        samples.push(started.elapsed());
        assert_eq!(outcome.exit_code, 0);
    }
    let s = summarize(&mut samples);
    println!(
        "confined `bash -c true` x{iterations} (after {WARM_UP} warm-up): median {} | p95 {} | min {} | max {}",
        ms(s.p50),
        ms(s.p95),
        ms(s.min),
        ms(s.max)
    );
}
