//! Server-mode benchmarks, over HTTP against real server processes on
//! 127.0.0.1, measured with `smithers-client` (the same client code for
//! every server):
//!
//! * `server` (issue 5): our release binary alone. `POST /v1/runs` →
//!   `RunStarted` seen on SSE, approve → next `NodeStarted` on SSE, sustained
//!   `hello` runs/s, RSS with 10 000 parked approval runs.
//! * `server --peer` (issue 7): the same workloads side by side against the
//!   real Smithers server (`bench/peer`, installed by `bench/peer/run.sh`),
//!   plus per-step overhead of N sequential tasks, and a chart.
//!
//! Run: `bench/peer/run.sh` (the peer table), or
//! `cargo run --release -p smithers-bench --bin server [-- --write]` after
//! `cargo build --release -p smithers-host`. `--write` puts the figures into
//! bench/README.md (and the chart into bench/peer/results.svg). `--quick`
//! shrinks every sample for a smoke run. Every loop is bounded in count and
//! time; nothing listens beyond loopback.

mod measure;
mod report;
mod target;
mod workloads;

use std::path::PathBuf;
use std::time::Duration;

use smithers_bench::{build_example, machine, workspace_root};

use measure::{Figures, Plan, measure};
use report::{
    chart, commit, load_average, ours_alone_table, peer_rows, peer_table, reps, today,
    write_section,
};
use target::{Kind, Target};

/// Longest any single wait may take before the benchmark gives up.
pub(crate) const WAIT: Duration = Duration::from_secs(180);

#[tokio::main]
async fn main() {
    // One line per panic: a failed workload is reported by `bounded`.
    std::panic::set_hook(Box::new(|info| eprintln!("panic: {info}")));
    let args: Vec<String> = std::env::args().skip(1).collect();
    let peer = args.iter().any(|a| a == "--peer");
    let quick = args.iter().any(|a| a == "--quick");
    let write = args.iter().any(|a| a == "--write");
    let command = format!(
        "{}{}",
        if peer {
            "bench/peer/run.sh"
        } else {
            "cargo run --release -p smithers-bench --bin server --"
        },
        args.iter()
            .filter(|a| *a != "--peer")
            .map(|a| format!(" {a}"))
            .collect::<String>()
    );
    let components: Vec<(&str, PathBuf)> = vec![
        ("hello", build_example("hello").await),
        ("fibo", build_example("fibo").await),
        ("approval", build_example("approval").await),
    ];
    let load_before = load_average();
    let machine = machine();
    println!("machine: {machine}, load average {load_before}");

    if !peer {
        let figures = measure(Target::ours(&components), &Plan::ours_alone(quick)).await;
        let mut table = ours_alone_table(&figures);
        if let Err(why) = &figures.warm_up {
            table.push_str(&format!("\nwarm-up: {why}\n"));
        }
        println!("\n{table}");
        if write {
            write_section(
                "server-bench",
                "## Server mode over HTTP (issue 5)",
                &format!(
                    "```sh\ncargo build --release -p smithers-host\n{command}\n```\n\n\
                     The release binary on 127.0.0.1, driven by `smithers-client` from another process \
                     (2 cores shared by both). {} start and approve samples (each run waited to its end \
                     before the next), `hello` throughput for {} s per concurrency, durability `normal`. \
                     {} on {machine}, commit {}; 1-minute load average {load_before} before, {} after \
                     (other engineers' builds share the cores).\n\n{table}\n",
                    Plan::ours_alone(quick).start,
                    Plan::ours_alone(quick).throughput.as_secs(),
                    today(),
                    commit(),
                    load_average()
                ),
            );
        }
        return;
    }

    let peer_dir = workspace_root().join("bench/peer");
    let ours = measure(Target::ours(&components), &Plan::peer(quick, Kind::Ours)).await;
    let theirs = measure(
        Target::smithers(&peer_dir),
        &Plan::peer(quick, Kind::Smithers),
    )
    .await;
    let rows = peer_rows(&ours, &theirs);
    let mut table = peer_table(&rows);
    for (label, f) in [("smithers-host", &ours), ("Smithers", &theirs)] {
        if let Err(why) = &f.warm_up {
            table.push_str(&format!("\n{label}'s warm-up: {why}\n"));
        }
    }
    println!("\n{table}");
    for (label, f) in [("smithers-host", &ours), ("Smithers", &theirs)] {
        let walls: Vec<String> = f
            .steps
            .iter()
            .map(|(n, o)| match o {
                Ok((_, wall)) => format!("N={n}: {wall:.3} ms"),
                Err(why) => format!("N={n}: {why}"),
            })
            .collect();
        println!(
            "{label}: per-step wall clock (POST → end seen by the client, / N): {}",
            walls.join(", ")
        );
    }
    if write {
        let date = today();
        std::fs::write(
            peer_dir.join("results.svg"),
            chart(
                &rows,
                &format!("{date}, {machine}; blue: target met or none, orange: missed"),
            ),
        )
        .expect("write the chart");
        let walls = |f: &Figures| {
            f.steps
                .iter()
                .map(|(n, o)| match o {
                    Ok((_, wall)) => format!("N={n} {wall:.2} ms"),
                    Err(why) => format!("N={n} {why}"),
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        write_section(
            "peer-bench",
            "## Side by side with Smithers (issue 7)",
            &format!(
                "```sh\n{command}\n```\n\n\
                 One command installs the pinned Smithers (`bench/peer/package.json`, lock file, \
                 `npm install --no-save` into the git-ignored `bench/peer/node_modules`), builds the release binary and \
                 runs the same workloads against both servers on 127.0.0.1, one after the other, through \
                 the same Rust client. Smithers runs `bench/peer/server.ts` (`startServer`, no server db, \
                 `NODE_ENV=production`) with the TSX twins of `examples/hello`, `fibo` and `approval` in \
                 `bench/peer/workflows/`. Run on {date}, {machine}, commit {}; 1-minute load average {load_before} \
                 before, {} after (other engineers' builds share the cores).\n\n{table}\n\
                 ![ratios](peer/results.svg)\n\n\
                 How each figure is taken:\n\n\
                 - (a) time from sending `POST /v1/runs` (hello) to `RunStarted` read from \
                 `GET /v1/runs/:id/events`, opened as soon as the POST answers; {} samples each, one run at a time. \
                 Smithers answers the POST before its engine has written the run, and 404 until then: the \
                 stream is re-opened every 2 ms until it exists.\n\
                 - (b) `fibo` with N sequential tasks: the server's own record, `(finishedAtMs - startedAtMs) / N`, \
                 median of {} (ours) and {} (Smithers). Wall clock per step as the client saw it: \
                 ours {}; Smithers {}.\n\
                 - (c) with the approval run parked (`RunStatusChanged` to `waiting-approval` seen on SSE): \
                 time from sending approve (Smithers: approve, then `POST /v1/runs` with `resume: true`, \
                 since it does not continue by itself) to the next `NodeStarted` on the open SSE stream; {} samples. Smithers' SSE reads its \
                 database every 500 ms, which is most of its figure: that is when a client of its server learns \
                 that the run went on.\n\
                 - (d) C clients in a loop: start `hello`, wait until it ended (ours: the SSE stream's \
                 terminal event; Smithers: `GET /v1/runs/:id` every 20 ms per client, faster than its 500 ms SSE \
                 poll; 160 ms per client at C = 64, so that polls stay ≤ 400/s), for {} s per C.\n\
                 - (e) RSS (VmRSS of the server and its children) right after start, and after {} \
                 `approval` runs all parked at the gate.\n",
                commit(),
                load_average(),
                Plan::peer(quick, Kind::Ours).start,
                reps(&Plan::peer(quick, Kind::Ours)),
                reps(&Plan::peer(quick, Kind::Smithers)),
                walls(&ours),
                walls(&theirs),
                Plan::peer(quick, Kind::Ours).approve,
                Plan::peer(quick, Kind::Ours).throughput.as_secs(),
                Plan::peer(quick, Kind::Ours).parked,
            ),
        );
    }
}
