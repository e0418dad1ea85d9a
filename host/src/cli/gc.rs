//! Retention on the command line: `smithers-host gc` (one pass over a state
//! dir, then a report) and `--retain` (the periodic pass of a server). The
//! rules and the removing are the engine's (`engine::retention`); this
//! module parses and prints.

use std::time::Duration;

use clap::{Args, ValueEnum};

use super::local::fail;
use super::{EXIT_FINISHED, EXIT_INTERNAL, EXIT_REFUSED, limits};
use crate::app::{App, AppConfig};
use crate::engine::Engine;
use crate::engine::retention::{GcReport, Retention, Vacuum};
use crate::model::RunStatus;

/// Runs listed one by one in the readable report.
const PRINTED_RUNS: usize = 20;

/// Options of `smithers-host gc`.
#[derive(Debug, Args)]
pub struct GcArgs {
    /// Remove runs that ended at least this long ago (`30d`, `12h`, `0s` for
    /// every ended run).
    #[arg(long, value_parser = limits::parse_age)]
    older_than: Duration,
    /// Only runs with these statuses (comma-separated). Live and parked runs
    /// (running, waiting-approval, waiting-event) are never removed.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "finished,failed,cancelled"
    )]
    status: Vec<EndedStatus>,
    /// Say what would be removed; remove nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// A status a removed run may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum EndedStatus {
    Finished,
    Failed,
    Cancelled,
}

impl From<EndedStatus> for RunStatus {
    fn from(status: EndedStatus) -> Self {
        match status {
            EndedStatus::Finished => RunStatus::Finished,
            EndedStatus::Failed => RunStatus::Failed,
            EndedStatus::Cancelled => RunStatus::Cancelled,
        }
    }
}

/// Retention of a server (`serve`, `gateway`).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Retention")]
pub struct RetainArgs {
    /// Remove finished, failed and cancelled runs that ended longer ago than
    /// this (`30d`), when the server starts and then every
    /// --retain-interval. Live and parked runs are always kept. Off by
    /// default.
    #[arg(long, value_name = "AGE", value_parser = limits::parse_duration)]
    retain: Option<Duration>,
    /// How often --retain runs.
    #[arg(long, default_value = "1h", value_parser = limits::parse_duration)]
    retain_interval: Duration,
}

impl RetainArgs {
    /// Starts the periodic pass when --retain is set.
    pub(super) fn start(&self, engine: &Engine) {
        let Some(older_than) = self.retain else {
            return;
        };
        tracing::info!(
            older_than_ms = older_than.as_millis() as u64,
            every_ms = self.retain_interval.as_millis() as u64,
            "retention on"
        );
        engine.retain(
            Retention {
                older_than,
                statuses: Retention::TERMINAL.to_vec(),
                dry_run: false,
                exclusive: false,
            },
            self.retain_interval,
        );
    }
}

/// `smithers-host gc`: one pass, then what it removed.
pub async fn gc(config: AppConfig, args: GcArgs) -> u8 {
    let app = match App::open(config) {
        Ok(app) => app,
        Err(e) => return fail(e, EXIT_REFUSED),
    };
    let retention = Retention {
        older_than: args.older_than,
        statuses: args.status.iter().map(|s| RunStatus::from(*s)).collect(),
        dry_run: args.dry_run,
        exclusive: true,
    };
    let result = app.engine.collect(&retention).await;
    app.close().await;
    let report = match result {
        Ok(report) => report,
        Err(e) => return fail(e, EXIT_INTERNAL),
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("serializable")
        );
    } else {
        print_report(&report);
    }
    EXIT_FINISHED
}

fn print_report(report: &GcReport) {
    let removed = &report.removed;
    let runs = report.by_status.values().sum::<u64>();
    let verb = if report.dry_run {
        "would remove"
    } else {
        "removed"
    };
    let statuses: Vec<String> = report
        .by_status
        .iter()
        .map(|(status, n)| format!("{status} {n}"))
        .collect();
    let statuses = if statuses.is_empty() {
        String::new()
    } else {
        format!(" ({})", statuses.join(", "))
    };
    println!(
        "{verb} {runs} run{}{statuses}: {} events ({} frames), {} nodes with their outputs, \
         {} attempts, {} approvals, {} signals, {} loop states{}",
        if runs == 1 { "" } else { "s" },
        removed.events,
        removed.frames,
        removed.nodes,
        removed.attempts,
        removed.approvals,
        removed.signals,
        removed.loops,
        if report.dry_run {
            String::new()
        } else {
            format!(", {} frame trees", removed.frame_trees)
        }
    );
    for run in report.runs.iter().take(PRINTED_RUNS) {
        println!(
            "  {:<38} {:<10} {}",
            run.run_id.as_str(),
            run.status.as_str(),
            run.workflow_name
        );
    }
    let unprinted = runs.saturating_sub(PRINTED_RUNS.min(report.runs.len()) as u64);
    if unprinted > 0 {
        println!("  ... and {unprinted} more (--json lists up to 1000)");
    }
    if report.skipped_runs > 0 {
        println!(
            "kept {} run(s) that were resumed or busy meanwhile",
            report.skipped_runs
        );
    }
    match report.vacuum {
        Vacuum::Converted => println!(
            "converted the database to incremental auto-vacuum (a one-off full VACUUM); \
             later passes return space in small steps"
        ),
        Vacuum::NeedsConversion => println!(
            "the database was not converted to incremental auto-vacuum: {}",
            report
                .vacuum_error
                .as_deref()
                .unwrap_or("a server's pass never converts it")
        ),
        Vacuum::None | Vacuum::Incremental | Vacuum::Full => {}
    }
    let (before, after) = (
        report.database_before.total(),
        report.database_after.total(),
    );
    println!(
        "database {} -> {} ({} reclaimed)",
        mib(before),
        mib(after),
        mib(before.saturating_sub(after))
    );
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}
