//! Commands that work directly on a state dir, in the foreground:
//! `run`, `resume`, `approve`, `deny`, `signal`, `cancel`, `status`, `runs`,
//! `preflight`.

use clap::Args;
use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::{Value, json};

use std::io::Write;

use super::follow::{follow_until_idle, last_seq, read_run};
use super::pretty;
use super::{EXIT_FAILED, EXIT_FINISHED, EXIT_INTERNAL, EXIT_REFUSED};
use crate::app::{App, AppConfig};
use crate::engine::outputs::{OutputView, Page};
use crate::engine::{ApprovalDecision, EngineError, StartRequest};
use crate::model::RunId;
use crate::store::NodeRow;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// A `.wasm` component or a guest crate directory, under the root dir.
    pub(super) workflow: String,
    /// Run input: JSON text, or `@path` to read it from a file.
    #[arg(long)]
    pub(super) input: Option<String>,
    /// Id for the new run (default: a random UUID).
    #[arg(long)]
    pub(super) run_id: Option<String>,
    /// Print events as NDJSON instead of readable lines.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct RunRef {
    /// Run id.
    pub(super) run: String,
    /// Print events as NDJSON instead of readable lines.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct DecideArgs {
    /// Run id.
    pub(super) run: String,
    /// Approval node id.
    pub(super) node: String,
    /// Note recorded with the decision.
    #[arg(long)]
    note: Option<String>,
    /// Loop iteration of the node.
    #[arg(long, default_value_t = 0)]
    pub(super) iteration: u32,
    /// Who decides (default: $USER).
    #[arg(long)]
    by: Option<String>,
    /// Print events as NDJSON instead of readable lines.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct SignalArgs {
    /// Run id.
    pub(super) run: String,
    /// Signal name.
    pub(super) name: String,
    /// Payload: JSON text, or `@path` to read it from a file.
    #[arg(long)]
    data: Option<String>,
    /// Correlation id.
    #[arg(long)]
    correlation_id: Option<String>,
    /// Print events as NDJSON instead of readable lines.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Run id.
    pub(super) run: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only runs with this status.
    #[arg(long)]
    status: Option<String>,
    /// Most runs to list.
    #[arg(long, default_value_t = 50)]
    limit: u32,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct PreflightArgs {
    /// The workflow's new version: a `.wasm` component or a guest crate
    /// directory, at the path its runs were started from.
    workflow: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub(super) fn fail(message: impl std::fmt::Display, code: u8) -> u8 {
    eprintln!("smithers-host: {message}");
    code
}

fn exit_for(e: &EngineError) -> u8 {
    match e {
        EngineError::Store(_) => EXIT_INTERNAL,
        _ => EXIT_REFUSED,
    }
}

/// Reads `@file` or takes the text itself, then parses it as JSON.
fn read_json(raw: &str, what: &str) -> Result<Value, String> {
    let text = match raw.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {what} from {path}: {e}"))?,
        None => raw.to_string(),
    };
    serde_json::from_str(&text).map_err(|e| format!("{what} is not valid JSON: {e}"))
}

/// [`read_json`], reporting a failure on stderr.
fn json_arg(raw: &str, what: &str) -> Result<Value, u8> {
    read_json(raw, what).map_err(|e| fail(e, EXIT_REFUSED))
}

impl RunArgs {
    /// The `--input` value, if any.
    pub(super) fn input_value(&self) -> Result<Option<Value>, String> {
        self.input
            .as_deref()
            .map(|raw| read_json(raw, "--input"))
            .transpose()
    }

    /// The workflow path, absolute: on the command line a path is relative
    /// to the current directory.
    pub(super) fn workflow_path(&self) -> Result<String, String> {
        std::path::absolute(&self.workflow)
            .map(|path| path.display().to_string())
            .map_err(|e| format!("{}: {e}", self.workflow))
    }
}

fn run_id(raw: &str) -> Result<RunId, u8> {
    RunId::parse(raw).map_err(|e| fail(e, EXIT_REFUSED))
}

/// Opens the state dir, runs `command` on it and closes it again. A command
/// answers its exit status; `Err` means it already reported why it failed.
async fn with_app<F>(config: AppConfig, command: F) -> u8
where
    F: for<'a> FnOnce(&'a App) -> BoxFuture<'a, Result<u8, u8>>,
{
    let app = match App::open(config) {
        Ok(app) => app,
        Err(e) => return fail(e, EXIT_REFUSED),
    };
    let code = command(&app).await.unwrap_or_else(|code| code);
    app.close().await;
    code
}

fn engine_failure(e: EngineError) -> u8 {
    fail(e.to_string(), exit_for(&e))
}

pub async fn run(config: AppConfig, args: RunArgs) -> u8 {
    with_app(config, |app| {
        async move {
            let input = args.input_value().map_err(|e| fail(e, EXIT_REFUSED))?;
            let workflow = args.workflow_path().map_err(|e| fail(e, EXIT_REFUSED))?;
            let run_id = app
                .engine
                .start(StartRequest {
                    workflow_path: workflow,
                    input,
                    run_id: args.run_id,
                    ..StartRequest::default()
                })
                .await
                .map_err(engine_failure)?;
            Ok(follow_until_idle(app, &run_id, -1, args.json).await)
        }
        .boxed()
    })
    .await
}

pub async fn resume(config: AppConfig, args: RunRef) -> u8 {
    with_app(config, |app| {
        async move {
            let run_id = run_id(&args.run)?;
            let after = last_seq(app, &run_id).await?;
            app.engine
                .resume(&run_id, None)
                .await
                .map_err(engine_failure)?;
            Ok(follow_until_idle(app, &run_id, after, args.json).await)
        }
        .boxed()
    })
    .await
}

pub async fn decide(config: AppConfig, args: DecideArgs, approved: bool) -> u8 {
    with_app(config, |app| {
        async move {
            let run_id = run_id(&args.run)?;
            let after = last_seq(app, &run_id).await?;
            let decision = ApprovalDecision {
                node_id: args.node,
                iteration: args.iteration,
                approved,
                note: args.note,
                decided_by: args.by.or_else(|| std::env::var("USER").ok()),
            };
            app.engine
                .decide(&run_id, decision)
                .await
                .map_err(engine_failure)?;
            Ok(follow_until_idle(app, &run_id, after, args.json).await)
        }
        .boxed()
    })
    .await
}

pub async fn signal(config: AppConfig, args: SignalArgs) -> u8 {
    with_app(config, |app| {
        async move {
            let run_id = run_id(&args.run)?;
            let data = match args.data.as_deref() {
                Some(raw) => json_arg(raw, "--data")?,
                None => json!({}),
            };
            let after = last_seq(app, &run_id).await?;
            let sender = std::env::var("USER").ok();
            app.engine
                .signal(&run_id, &args.name, data, args.correlation_id, sender)
                .await
                .map_err(engine_failure)?;
            Ok(follow_until_idle(app, &run_id, after, args.json).await)
        }
        .boxed()
    })
    .await
}

pub async fn cancel(config: AppConfig, args: RunRef) -> u8 {
    with_app(config, |app| {
        async move {
            let run_id = run_id(&args.run)?;
            let outcome = app.engine.cancel(&run_id).await.map_err(engine_failure)?;
            if args.json {
                println!("{}", serde_json::to_string(&outcome).expect("serializable"));
            } else if outcome.won {
                println!("run {run_id} cancelled");
            } else {
                println!("run {run_id} was already cancelled");
            }
            Ok(EXIT_FINISHED)
        }
        .boxed()
    })
    .await
}

pub async fn status(config: AppConfig, args: StatusArgs) -> u8 {
    with_app(config, |app| {
        async move {
            let run_id = run_id(&args.run)?;
            let (run, nodes) = read_run(app, &run_id).await?;
            let mut out = std::io::stdout();
            if args.json {
                let head = json!({
                    "runId": run.run_id,
                    "workflowName": run.workflow_name,
                    "status": run.status,
                    "startedAtMs": run.started_at_ms,
                    "finishedAtMs": run.finished_at_ms,
                    "workflowHash": run.workflow_hash,
                    "summary": summary(&nodes),
                })
                .to_string();
                // The outputs go out a page at a time, never all in memory.
                let head = pretty::safe_json(&head);
                let _ = write!(out, "{},\"outputs\":[", &head[..head.len() - 1]);
                let mut first = true;
                each_output(app, &run_id, |item| {
                    let comma = if std::mem::take(&mut first) { "" } else { "," };
                    let item = serde_json::to_string(item).expect("serializable");
                    let _ = write!(out, "{comma}{}", pretty::safe_json(&item));
                })
                .await?;
                let _ = writeln!(out, "]}}");
            } else {
                let _ = writeln!(out, "run       {}", run.run_id);
                let _ = writeln!(
                    out,
                    "workflow  {} ({})",
                    pretty::safe(&run.workflow_name),
                    run.workflow_path
                );
                let _ = writeln!(out, "status    {}", run.status);
                for node in &nodes {
                    let _ = writeln!(
                        out,
                        "  {:<14} {}",
                        node.state.as_str(),
                        pretty::node_label(&node.key.node_id, node.key.iteration)
                    );
                }
                let fit = pretty::Fit::stdout();
                let mut first = true;
                each_output(app, &run_id, |item| {
                    if std::mem::take(&mut first) {
                        let _ = writeln!(out, "outputs");
                    }
                    let entry =
                        pretty::output_entry(&item.node_id, item.iteration, &item.output, fit);
                    let _ = writeln!(out, "{entry}");
                })
                .await?;
            }
            Ok(EXIT_FINISHED)
        }
        .boxed()
    })
    .await
}

/// Calls `each` on every output of the run, reading them a page at a time.
async fn each_output(
    app: &App,
    run_id: &RunId,
    mut each: impl FnMut(&OutputView),
) -> Result<(), u8> {
    let mut page = Page::first(Page::DEFAULT_MAX_BYTES);
    loop {
        let found = app
            .engine
            .outputs(run_id, page)
            .await
            .map_err(engine_failure)?;
        found.outputs.iter().for_each(&mut each);
        match found.next_cursor {
            Some(cursor) => page.cursor = Some(cursor),
            None => return Ok(()),
        }
    }
}

pub async fn runs(config: AppConfig, args: ListArgs) -> u8 {
    with_app(config, |app| {
        async move {
            let (limit, status) = (args.limit.max(1), args.status.clone());
            let runs = app
                .engine
                .store()
                .read(move |r| r.runs(limit, status.as_deref(), None))
                .await
                .map_err(|e| fail(e, EXIT_INTERNAL))?;
            if args.json {
                println!("{}", serde_json::to_string(&runs).expect("serializable"));
            }
            for run in runs.iter().filter(|_| !args.json) {
                println!(
                    "{:<38} {:<17} {}",
                    run.run_id,
                    run.status.as_str(),
                    run.workflow_name
                );
            }
            Ok(EXIT_FINISHED)
        }
        .boxed()
    })
    .await
}

/// Exit 0 when every live run is compatible with the new version, 1 when
/// some would diverge.
pub async fn preflight(config: AppConfig, args: PreflightArgs) -> u8 {
    with_app(config, |app| {
        async move {
            let workflow = std::path::absolute(&args.workflow)
                .map(|path| path.display().to_string())
                .map_err(|e| fail(format!("{}: {e}", args.workflow), EXIT_REFUSED))?;
            let report = app
                .engine
                .preflight(&workflow)
                .await
                .map_err(engine_failure)?;
            if args.json {
                println!("{}", serde_json::to_string(&report).expect("serializable"));
            } else {
                println!(
                    "{} ({}) new version {}",
                    report.workflow_path, report.workflow_name, report.hash
                );
                if report.runs.is_empty() {
                    println!("  no live runs");
                }
                for run in &report.runs {
                    let verdict = match &run.reason {
                        None => "compatible".to_string(),
                        Some(reason) => format!("divergent: {reason}"),
                    };
                    println!("  {:<38} {:<17} {verdict}", run.run_id, run.status.as_str());
                }
            }
            Ok(if report.all_compatible() {
                EXIT_FINISHED
            } else {
                EXIT_FAILED
            })
        }
        .boxed()
    })
    .await
}

fn summary(nodes: &[NodeRow]) -> std::collections::BTreeMap<&'static str, u64> {
    let mut summary = std::collections::BTreeMap::new();
    for node in nodes {
        *summary.entry(node.state.as_str()).or_insert(0) += 1;
    }
    summary
}
