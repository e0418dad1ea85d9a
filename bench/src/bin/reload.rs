//! Cost of loading a workflow version on each path of the content-hash
//! cache, for `examples/hello`: a never-seen hash (compile), the first start
//! after a host restart (disk cache) and a warm start (memory cache).
//!
//! Run: `cargo run --release -p smithers-bench --bin reload`

use std::time::{Duration, Instant};

use smithers_bench::{BenchHost, build_example, machine, ms, summarize};
use smithers_host::app::App;

/// Time of `load_workflow` (read the file, hash it, fetch or compile, check
/// exports, describe) and the source the cache reports.
async fn load(app: &App) -> (Duration, &'static str) {
    let started = Instant::now();
    let (_, loaded) = app.engine.load_workflow("hello.wasm").await.expect("load");
    (started.elapsed(), loaded.source.as_str())
}

#[tokio::main]
async fn main() {
    let component = build_example("hello").await;
    println!("machine: {}", machine());
    println!(
        "component: examples/hello, {} bytes",
        std::fs::metadata(&component).unwrap().len()
    );
    let rounds = 10;
    let (mut compile, mut disk, mut warm) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        // A fresh state dir: the hash was never seen.
        let host = BenchHost::open(&[("hello", &component)], |_| {});
        let (t, source) = load(&host.app).await;
        assert_eq!(source, "compiled");
        compile.push(t);
        for _ in 0..20 {
            let (t, source) = load(&host.app).await;
            assert_eq!(source, "memory");
            warm.push(t);
        }
        // "Restart": close the host, open a new one on the same state dir.
        let BenchHost { app, root, state } = host;
        app.close().await;
        tokio::time::sleep(Duration::from_millis(100)).await; // the cache write is async
        let host = BenchHost {
            app: App::open({
                let mut c = smithers_host::app::AppConfig::new(root.path());
                c.state_dir = Some(state.path().to_path_buf());
                c
            })
            .unwrap(),
            root,
            state,
        };
        let (t, source) = load(&host.app).await;
        assert_eq!(source, "disk");
        disk.push(t);
        host.app.close().await;
    }
    for (name, samples) in [
        ("compile (new hash)", &mut compile),
        ("disk cache (after restart)", &mut disk),
        ("memory cache (warm)", &mut warm),
    ] {
        let s = summarize(samples);
        println!(
            "{name:<28} p50 {}  p95 {}  min {}  max {}  (n={})",
            ms(s.p50),
            ms(s.p95),
            ms(s.min),
            ms(s.max),
            samples.len()
        );
    }
}
