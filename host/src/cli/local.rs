//! Commands that work directly on a state dir, in the foreground:
//! `run`, `resume`, `approve`, `deny`, `signal`, `cancel`, `status`, `runs`.

use std::path::Path;
use std::pin::pin;

use clap::Args;
use futures::StreamExt;
use serde_json::{Value, json};

use super::print::Printer;
use super::{
    EXIT_CANCELLED, EXIT_FAILED, EXIT_FINISHED, EXIT_INTERNAL, EXIT_REFUSED, EXIT_WAITING_APPROVAL,
    EXIT_WAITING_SIGNAL,
};
use crate::app::{App, AppConfig};
use crate::engine::{ApprovalDecision, EngineError, StartRequest, events};
use crate::model::{NodeState, RunId, RunStatus};
use crate::store::{NodeRow, RunRow};

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
    run: String,
    /// Print events as NDJSON instead of readable lines.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct DecideArgs {
    /// Run id.
    run: String,
    /// Approval node id.
    node: String,
    /// Note recorded with the decision.
    #[arg(long)]
    note: Option<String>,
    /// Loop iteration of the node.
    #[arg(long, default_value_t = 0)]
    iteration: u32,
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
    run: String,
    /// Signal name.
    name: String,
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
    run: String,
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

fn fail(message: impl std::fmt::Display, code: u8) -> u8 {
    eprintln!("smithers-host: {message}");
    code
}

fn open(config: AppConfig) -> Result<App, u8> {
    App::open(config).map_err(|e| fail(e, EXIT_REFUSED))
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

pub async fn run(config: AppConfig, args: RunArgs) -> u8 {
    let app = match open(config) {
        Ok(app) => app,
        Err(code) => return code,
    };
    let code = run_inner(&app, args).await;
    app.close().await;
    code
}

async fn run_inner(app: &App, args: RunArgs) -> u8 {
    let input = match args.input_value() {
        Ok(input) => input,
        Err(e) => return fail(e, EXIT_REFUSED),
    };
    let workflow = match args.workflow_path() {
        Ok(path) => path,
        Err(e) => return fail(e, EXIT_REFUSED),
    };
    let started = app
        .engine
        .start(StartRequest {
            workflow_path: workflow,
            input,
            run_id: args.run_id,
            ..StartRequest::default()
        })
        .await;
    match started {
        Ok(run_id) => follow_until_idle(app, &run_id, -1, args.json).await,
        Err(e) => fail(e.to_string(), exit_for(&e)),
    }
}

pub async fn resume(config: AppConfig, args: RunRef) -> u8 {
    let app = match open(config) {
        Ok(app) => app,
        Err(code) => return code,
    };
    let code = async {
        let run_id = run_id(&args.run)?;
        let after = last_seq(&app, &run_id).await?;
        app.engine
            .resume(&run_id, None)
            .await
            .map_err(|e| fail(e.to_string(), exit_for(&e)))?;
        Ok::<u8, u8>(follow_until_idle(&app, &run_id, after, args.json).await)
    }
    .await
    .unwrap_or_else(|code| code);
    app.close().await;
    code
}

pub async fn decide(config: AppConfig, args: DecideArgs, approved: bool) -> u8 {
    let app = match open(config) {
        Ok(app) => app,
        Err(code) => return code,
    };
    let code = async {
        let run_id = run_id(&args.run)?;
        let after = last_seq(&app, &run_id).await?;
        let decided_by = args.by.or_else(|| std::env::var("USER").ok());
        app.engine
            .decide(
                &run_id,
                ApprovalDecision {
                    node_id: args.node,
                    iteration: args.iteration,
                    approved,
                    note: args.note,
                    decided_by,
                },
            )
            .await
            .map_err(|e| fail(e.to_string(), exit_for(&e)))?;
        Ok::<u8, u8>(follow_until_idle(&app, &run_id, after, args.json).await)
    }
    .await
    .unwrap_or_else(|code| code);
    app.close().await;
    code
}

pub async fn signal(config: AppConfig, args: SignalArgs) -> u8 {
    let app = match open(config) {
        Ok(app) => app,
        Err(code) => return code,
    };
    let code = async {
        let run_id = run_id(&args.run)?;
        let data = match args.data.as_deref() {
            Some(raw) => json_arg(raw, "--data")?,
            None => json!({}),
        };
        let after = last_seq(&app, &run_id).await?;
        app.engine
            .signal(
                &run_id,
                &args.name,
                data,
                args.correlation_id,
                std::env::var("USER").ok(),
            )
            .await
            .map_err(|e| fail(e.to_string(), exit_for(&e)))?;
        Ok::<u8, u8>(follow_until_idle(&app, &run_id, after, args.json).await)
    }
    .await
    .unwrap_or_else(|code| code);
    app.close().await;
    code
}

pub async fn cancel(config: AppConfig, args: RunRef) -> u8 {
    let app = match open(config) {
        Ok(app) => app,
        Err(code) => return code,
    };
    let code = async {
        let run_id = run_id(&args.run)?;
        let outcome = app
            .engine
            .cancel(&run_id)
            .await
            .map_err(|e| fail(e.to_string(), exit_for(&e)))?;
        if args.json {
            println!("{}", serde_json::to_string(&outcome).expect("serializable"));
        } else if outcome.won {
            println!("run {run_id} cancelled");
        } else {
            println!("run {run_id} was already cancelled");
        }
        Ok::<u8, u8>(EXIT_FINISHED)
    }
    .await
    .unwrap_or_else(|code| code);
    app.close().await;
    code
}

pub async fn status(config: AppConfig, args: StatusArgs) -> u8 {
    let app = match open(config) {
        Ok(app) => app,
        Err(code) => return code,
    };
    let code = async {
        let run_id = run_id(&args.run)?;
        let (run, nodes) = read_run(&app, &run_id).await?;
        if args.json {
            let summary = summary(&nodes);
            println!(
                "{}",
                json!({
                    "runId": run.run_id,
                    "workflowName": run.workflow_name,
                    "status": run.status,
                    "startedAtMs": run.started_at_ms,
                    "finishedAtMs": run.finished_at_ms,
                    "workflowHash": run.workflow_hash,
                    "summary": summary,
                })
            );
        } else {
            println!("run       {}", run.run_id);
            println!("workflow  {} ({})", run.workflow_name, run.workflow_path);
            println!("status    {}", run.status);
            for node in &nodes {
                println!(
                    "  {:<14} {}{}",
                    node.state.as_str(),
                    node.key.node_id,
                    iteration_suffix(node)
                );
            }
        }
        Ok::<u8, u8>(EXIT_FINISHED)
    }
    .await
    .unwrap_or_else(|code| code);
    app.close().await;
    code
}

pub async fn runs(config: AppConfig, args: ListArgs) -> u8 {
    let app = match open(config) {
        Ok(app) => app,
        Err(code) => return code,
    };
    let (limit, status) = (args.limit.max(1), args.status.clone());
    let result = app
        .engine
        .store()
        .read(move |r| r.runs(limit, status.as_deref(), None))
        .await;
    let code = match result {
        Ok(runs) if args.json => {
            println!("{}", serde_json::to_string(&runs).expect("serializable"));
            EXIT_FINISHED
        }
        Ok(runs) => {
            for run in runs {
                println!(
                    "{:<38} {:<17} {}",
                    run.run_id,
                    run.status.as_str(),
                    run.workflow_name
                );
            }
            EXIT_FINISHED
        }
        Err(e) => fail(e, EXIT_INTERNAL),
    };
    app.close().await;
    code
}

/// Exit 0 when every live run is compatible with the new version, 1 when
/// some would diverge.
pub async fn preflight(config: AppConfig, args: PreflightArgs) -> u8 {
    let app = match open(config) {
        Ok(app) => app,
        Err(code) => return code,
    };
    let workflow = match std::path::absolute(&args.workflow) {
        Ok(path) => path.display().to_string(),
        Err(e) => return fail(format!("{}: {e}", args.workflow), EXIT_REFUSED),
    };
    let code = match app.engine.preflight(&workflow).await {
        Ok(report) => {
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
                    match &run.reason {
                        None => println!(
                            "  {:<38} {:<17} compatible",
                            run.run_id,
                            run.status.as_str()
                        ),
                        Some(reason) => {
                            println!(
                                "  {:<38} {:<17} divergent: {reason}",
                                run.run_id,
                                run.status.as_str()
                            )
                        }
                    }
                }
            }
            if report.all_compatible() {
                EXIT_FINISHED
            } else {
                EXIT_FAILED
            }
        }
        Err(e) => fail(e.to_string(), exit_for(&e)),
    };
    app.close().await;
    code
}

fn iteration_suffix(node: &NodeRow) -> String {
    if node.key.iteration > 0 {
        format!(" [iteration {}]", node.key.iteration)
    } else {
        String::new()
    }
}

fn summary(nodes: &[NodeRow]) -> std::collections::BTreeMap<&'static str, u64> {
    let mut summary = std::collections::BTreeMap::new();
    for node in nodes {
        *summary.entry(node.state.as_str()).or_insert(0) += 1;
    }
    summary
}

async fn read_run(app: &App, run_id: &RunId) -> Result<(RunRow, Vec<NodeRow>), u8> {
    let id = run_id.clone();
    let found = app
        .engine
        .store()
        .read(move |r| Ok(r.run(&id)?.map(|run| (run, r.nodes(&id)))))
        .await
        .map_err(|e| fail(e, EXIT_INTERNAL))?;
    match found {
        Some((run, Ok(nodes))) => Ok((run, nodes)),
        Some((_, Err(e))) => Err(fail(e, EXIT_INTERNAL)),
        None => Err(fail(format!("run {run_id} not found"), EXIT_REFUSED)),
    }
}

async fn last_seq(app: &App, run_id: &RunId) -> Result<i64, u8> {
    let (run, _) = read_run(app, run_id).await?;
    Ok(run.next_seq as i64 - 1)
}

/// Prints the run's events from `after_seq` until its driver stops, then
/// reports how the run ended and how to continue it. Ctrl-C leaves the run
/// durable and says how to resume it.
async fn follow_until_idle(app: &App, run_id: &RunId, after_seq: i64, json: bool) -> u8 {
    let mut printer = Printer::new(json);
    let mut stream = pin!(events::follow(
        app.engine.store().clone(),
        run_id.clone(),
        after_seq
    ));
    let mut idle = pin!(app.engine.wait_idle(run_id));
    let mut idle_seen = false;
    let mut printed = after_seq;
    let mut target: Option<i64> = None;
    loop {
        if target.is_some_and(|t| printed >= t) {
            break;
        }
        tokio::select! {
            item = stream.next() => match item {
                Some(Ok(event)) => {
                    printed = event.seq as i64;
                    printer.print(&event);
                }
                Some(Err(e)) => return fail(e, EXIT_INTERNAL),
                None => break,
            },
            _ = &mut idle, if !idle_seen => {
                idle_seen = true;
                match read_run(app, run_id).await {
                    Ok((run, _)) => target = Some(run.next_seq as i64 - 1),
                    Err(code) => return code,
                }
            }
            _ = tokio::signal::ctrl_c() => {
                eprintln!(
                    "\ninterrupted: run {run_id} is saved; continue it with:\n  {}",
                    continue_command(app, &format!("resume {run_id}"))
                );
                return 130;
            }
        }
    }
    let (run, nodes) = match read_run(app, run_id).await {
        Ok(found) => found,
        Err(code) => return code,
    };
    report(app, &run, &nodes, json)
}

fn report(app: &App, run: &RunRow, nodes: &[NodeRow], json: bool) -> u8 {
    let say = |line: String| {
        if !json {
            eprintln!("{line}");
        }
    };
    match run.status {
        RunStatus::Finished => EXIT_FINISHED,
        RunStatus::Failed => EXIT_FAILED,
        RunStatus::Cancelled => EXIT_CANCELLED,
        RunStatus::WaitingApproval => {
            say(format!(
                "run {} is waiting for approval; decide with:",
                run.run_id
            ));
            for node in nodes
                .iter()
                .filter(|n| n.state == NodeState::WaitingApproval)
            {
                let iteration = if node.key.iteration > 0 {
                    format!(" --iteration {}", node.key.iteration)
                } else {
                    String::new()
                };
                say(format!(
                    "  {}",
                    continue_command(
                        app,
                        &format!("approve {} {}{iteration}", run.run_id, node.key.node_id)
                    )
                ));
                say(format!(
                    "  {}",
                    continue_command(
                        app,
                        &format!("deny {} {}{iteration}", run.run_id, node.key.node_id)
                    )
                ));
            }
            EXIT_WAITING_APPROVAL
        }
        RunStatus::WaitingEvent => {
            say(format!(
                "run {} is waiting for a signal; send it with:",
                run.run_id
            ));
            let waiting = app
                .engine
                .store()
                .read_blocking(|r| {
                    let rows = r.events_after(&run.run_id, -1, u32::MAX)?;
                    Ok(rows
                        .into_iter()
                        .filter(|e| e.event_type == "NodeWaitingEvent")
                        .filter_map(|e| serde_json::from_str::<Value>(&e.json).ok())
                        .filter_map(|v| {
                            Some((
                                v.get("nodeId")?.as_str()?.to_string(),
                                v.get("signalName")?.as_str()?.to_string(),
                            ))
                        })
                        .collect::<Vec<_>>())
                })
                .unwrap_or_default();
            for (node, name) in waiting {
                if nodes
                    .iter()
                    .any(|n| *n.key.node_id == *node && n.state == NodeState::WaitingEvent)
                {
                    say(format!(
                        "  {}",
                        continue_command(
                            app,
                            &format!("signal {} {name} --data '{{}}'", run.run_id)
                        )
                    ));
                }
            }
            EXIT_WAITING_SIGNAL
        }
        RunStatus::Running => {
            say(format!(
                "run {} stopped before finishing; continue it with:\n  {}",
                run.run_id,
                continue_command(app, &format!("resume {}", run.run_id))
            ));
            EXIT_INTERNAL
        }
    }
}

/// The exact command line that continues with `verb_and_args`.
fn continue_command(app: &App, verb_and_args: &str) -> String {
    let quote = |p: &Path| shell_quote(&p.display().to_string());
    let state = app.state_dir.path();
    format!(
        "smithers-host {verb_and_args} --root-dir {} --state-dir {}",
        quote(&app.config.root_dir),
        quote(state)
    )
}

fn shell_quote(text: &str) -> String {
    if text
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+:@".contains(c))
    {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', "'\\''"))
    }
}
