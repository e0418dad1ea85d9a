//! Orchestration overhead on the `fibo` workload: N sequential tasks, each
//! computing fibo(10). Prints total time, per-step overhead (total minus pure
//! task compute) and per-task instantiation time, for each SQLite
//! durability setting.
//!
//! Run: `cargo run --release -p smithers-bench --bin fibo [-- N]`

use std::hint::black_box;
use std::time::{Duration, Instant};

use serde_json::json;
use smithers_bench::{BenchHost, build_example, machine, ms, summarize, us};
use smithers_host::engine::StartRequest;
use smithers_host::model::RunStatus;
use smithers_host::store::Durability;

fn fibo(n: u64) -> u64 {
    let (mut a, mut b) = (0u64, 1u64);
    for _ in 0..n {
        (a, b) = (b, a + b);
    }
    a
}

async fn run_once(host: &BenchHost, n: u64) -> Duration {
    let engine = &host.app.engine;
    let started = Instant::now();
    let run = engine
        .start(StartRequest {
            workflow_path: "fibo.wasm".into(),
            input: Some(json!({ "n": n })),
            ..Default::default()
        })
        .await
        .expect("start");
    engine.wait_idle(&run).await;
    let elapsed = started.elapsed();
    let id = run.clone();
    let row = engine
        .store()
        .read(move |r| r.run(&id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.status, RunStatus::Finished, "fibo run did not finish");
    elapsed
}

#[tokio::main]
async fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(400);
    let component = build_example("fibo").await;
    println!("machine: {}", machine());
    println!("workload: fibo, {n} sequential tasks, each fibo(10)");

    // Pure task compute: fibo(10) natively, a lower bound of the guest's work.
    let reps = 1_000_000u32;
    let started = Instant::now();
    for _ in 0..reps {
        black_box(fibo(black_box(10)));
    }
    let compute = started.elapsed() / reps;

    for durability in [Durability::Normal, Durability::Full] {
        let host = BenchHost::open(&[("fibo", &component)], |c| c.durability = durability);
        // Warm-up: compiles the component and fills caches.
        run_once(&host, 10).await;
        let mut totals: Vec<Duration> = Vec::new();
        for _ in 0..5 {
            totals.push(run_once(&host, n).await);
        }
        let total = summarize(&mut totals);
        let loaded = host
            .app
            .engine
            .load_workflow("fibo.wasm")
            .await
            .expect("load")
            .1;
        let mut inst = Vec::new();
        for _ in 0..2000 {
            inst.push(
                host.app
                    .engine
                    .runtime()
                    .time_instantiation(&loaded.workflow)
                    .await
                    .unwrap(),
            );
        }
        let inst = summarize(&mut inst);
        let per_step = total.p50 / n as u32;
        let best_step = total.min / n as u32;
        let overhead = per_step.saturating_sub(compute);
        println!();
        println!("durability: {}", durability.describe());
        println!(
            "  total (median of 5 runs): {}  [min {}, max {}]",
            ms(total.p50),
            ms(total.min),
            ms(total.max)
        );
        println!(
            "  per step: {} (best run {})   pure compute per task: {} ns   orchestration overhead per step: {}",
            us(per_step),
            us(best_step),
            compute.as_nanos(),
            us(overhead)
        );
        println!(
            "  instantiation per task (median of 2000): {}  [p95 {}]",
            us(inst.p50),
            us(inst.p95)
        );
        host.app.close().await;
    }
}
