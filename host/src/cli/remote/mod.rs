//! `smithers-host client …`: the command line against a remote host.
//!
//! Every verb goes through [`smithers_client`] and nothing else: this module
//! never opens a state dir or touches the engine, so it works against any
//! host (or Smithers server) it can reach. The local verbs (`run`, `approve`,
//! …) of the parent module work on a state dir instead.
//!
//! Exit codes follow the local commands: 0 done, 1 a watched run failed,
//! 5 it was cancelled, 6 the server refused the request, 70 the server could
//! not be reached or answered nonsense.

mod outputs;
mod watch;
mod workflows;

use std::io::Write;

use clap::{Args, Subcommand};
use serde::Serialize;
use serde_json::Value;
use smithers_client::{
    Client, Decision, Error, FramesQuery, ListRuns, OutputsQuery, RunStatusView, RunWorkflow,
    Signal,
};

use super::{EXIT_FINISHED, EXIT_INTERNAL, EXIT_REFUSED, EXIT_USAGE};
use super::{live, pretty};
use crate::model::now_ms;

/// Where the host is and how to talk to it, then the verb.
#[derive(Debug, Args)]
pub struct ClientArgs {
    /// URL of the host.
    #[arg(long, env = "SMITHERS_URL", default_value = smithers_client::DEFAULT_BASE_URL)]
    url: String,
    /// Token sent as `Authorization: Bearer <key>`.
    #[arg(long, env = "SMITHERS_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Also trust this certificate (PEM) for an `https://` URL: the
    /// server's self-signed certificate or a private CA.
    #[arg(long, env = "SMITHERS_CA_CERT", value_name = "FILE")]
    ca_cert: Option<std::path::PathBuf>,
    /// Print the server's JSON instead of readable text (NDJSON for `watch`).
    #[arg(long, global = true)]
    json: bool,
    /// Not an option of the client: `--host` is where `serve` listens.
    /// Accepted only to refuse it with a pointer to --url.
    #[arg(long = "host", id = "bind_host", global = true, hide = true)]
    host: Option<String>,
    #[command(subcommand)]
    verb: Verb,
}

#[derive(Debug, Subcommand)]
enum Verb {
    /// Start a run; prints its id.
    Start(StartArgs),
    /// Show a run's status and its outputs.
    Status(RunArg),
    /// Show a run's outputs, a page at a time.
    Outputs(outputs::OutputsArgs),
    /// Show one node of a run: state, attempts, output and error at each iteration.
    Node(outputs::NodeArgs),
    /// Follow a run live until it ends: one line per node with its state and duration.
    Watch(RunArg),
    /// List pending approvals, oldest first.
    Approvals,
    /// Approve a node waiting for approval (the host then continues the run).
    Approve(DecideArgs),
    /// Deny a node waiting for approval.
    Deny(DecideArgs),
    /// Send a signal to a run.
    Signal(SignalArgs),
    /// Cancel a running or parked run.
    Cancel(RunArg),
    /// Resume a parked, failed or interrupted run.
    Resume(RunArg),
    /// List runs, newest first.
    Runs(RunsArgs),
    /// List a run's render frames, newest first.
    Frames(FramesArgs),
    /// List the workflows under the host's root dir, or show one (with its
    /// input schema).
    Workflows(workflows::WorkflowsArgs),
}

#[derive(Debug, Args)]
struct StartArgs {
    /// Workflow path on the host, relative to its root dir.
    workflow: String,
    /// Input: JSON text, or `@path` to read it from a file.
    #[arg(long)]
    input: Option<String>,
    /// Id for the new run (default: chosen by the host).
    #[arg(long)]
    run_id: Option<String>,
    /// Then follow the run like `watch`.
    #[arg(long)]
    watch: bool,
}

#[derive(Debug, Args)]
struct RunArg {
    /// Run id.
    run: String,
}

#[derive(Debug, Args)]
struct DecideArgs {
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
}

#[derive(Debug, Args)]
struct SignalArgs {
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
}

#[derive(Debug, Args)]
struct RunsArgs {
    /// Only runs with this status (`running`, `waiting-approval`, `failed`...).
    #[arg(long)]
    status: Option<String>,
    /// Only runs of this workflow.
    #[arg(long)]
    workflow: Option<String>,
    /// Most runs to list.
    #[arg(long, default_value_t = 50)]
    limit: u32,
}

#[derive(Debug, Args)]
struct FramesArgs {
    /// Run id.
    run: String,
    /// Most frames to list (the PI client's default tail).
    #[arg(long, default_value_t = 20)]
    limit: u32,
    /// Only frames numbered above this.
    #[arg(long)]
    after: Option<u64>,
}

/// Runs one verb against the host; returns the exit code.
pub async fn main(args: ClientArgs) -> u8 {
    if let Some(host) = &args.host {
        eprintln!("smithers-host: {}", refuse_host(host));
        return EXIT_USAGE;
    }
    let mut builder = Client::builder().base_url(&args.url);
    if let Some(key) = &args.api_key {
        builder = builder.api_key(key);
    }
    if let Some(path) = &args.ca_cert {
        match read_pem(path) {
            Ok(pem) => builder = builder.root_certificate_pem(pem),
            Err(e) => {
                eprintln!("smithers-host: --ca-cert {}: {e}", path.display());
                return EXIT_USAGE;
            }
        }
    }
    let client = match builder.build() {
        Ok(client) => client,
        Err(e) => return fail(&e),
    };
    let json = args.json;
    let result = match args.verb {
        Verb::Start(a) => start(&client, a, json).await,
        Verb::Status(a) => status(&client, &a.run, json).await,
        Verb::Outputs(a) => outputs::outputs(&client, a, json).await,
        Verb::Node(a) => outputs::node(&client, a, json).await,
        Verb::Watch(a) => return watch::watch(&client, &a.run, json).await,
        Verb::Approvals => approvals(&client, json).await,
        Verb::Approve(a) => decide(&client, a, true, json).await,
        Verb::Deny(a) => decide(&client, a, false, json).await,
        Verb::Signal(a) => signal(&client, a, json).await,
        Verb::Cancel(a) => cancel(&client, &a.run, json).await,
        Verb::Resume(a) => resume(&client, &a.run, json).await,
        Verb::Runs(a) => runs(&client, a, json).await,
        Verb::Frames(a) => frames(&client, a, json).await,
        Verb::Workflows(a) => workflows::workflows(&client, a, json).await,
    };
    match result {
        Ok(Next::Done) => EXIT_FINISHED,
        Ok(Next::Watch(run)) => watch::watch(&client, &run, json).await,
        Err(Failure::Client(e)) => fail(&e),
        Err(Failure::Usage(message)) => {
            eprintln!("smithers-host: {message}");
            EXIT_REFUSED
        }
    }
}

/// Why `client --host` is refused, with the --url to use instead (the host
/// echoed only when it looks like one, and never at length).
fn refuse_host(host: &str) -> String {
    let looks_like_a_host = !host.is_empty()
        && host.len() <= 253
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c));
    let host = if looks_like_a_host { host } else { "HOST" };
    format!(
        "the client has no --host: it reaches a server by URL. Use --url http://{host}:7331 \
         (or set SMITHERS_URL); --host is the address `smithers-host serve` listens on"
    )
}

/// What a verb asks for after it succeeded.
enum Next {
    Done,
    Watch(String),
}

enum Failure {
    Client(Error),
    Usage(String),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Self::Client(e)
    }
}

type Outcome = Result<Next, Failure>;

/// Reports a client error on stderr; 6 when the server refused, 70 when it
/// could not be reached or understood.
fn fail(e: &Error) -> u8 {
    eprintln!("smithers-host: {e}");
    match e {
        Error::Api { .. } | Error::Invalid(_) => EXIT_REFUSED,
        Error::Http { status, .. } if *status < 500 => EXIT_REFUSED,
        _ => EXIT_INTERNAL,
    }
}

fn print_json(value: &impl Serialize) {
    let text = serde_json::to_string_pretty(value).unwrap_or_else(|e| format!("\"{e}\""));
    let _ = writeln!(std::io::stdout().lock(), "{}", pretty::safe_json(&text));
}

fn print_line(line: &str) {
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

/// Reads `@file` or takes the text itself, then parses it as JSON.
fn json_arg(raw: &str, what: &str) -> Result<Value, Failure> {
    let text = match raw.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| Failure::Usage(format!("cannot read {what} from {path}: {e}")))?,
        None => raw.to_string(),
    };
    serde_json::from_str(&text)
        .map_err(|e| Failure::Usage(format!("{what} is not valid JSON: {e}")))
}

async fn start(client: &Client, args: StartArgs, json: bool) -> Outcome {
    let mut request = RunWorkflow::new(args.workflow);
    if let Some(input) = &args.input {
        request = request.input(json_arg(input, "--input")?);
    }
    if let Some(id) = args.run_id {
        request = request.run_id(id);
    }
    let accepted = client.run_workflow(&request).await?;
    if json && !args.watch {
        print_json(&accepted);
    } else if !json {
        print_line(&accepted.run_id);
    }
    Ok(if args.watch {
        Next::Watch(accepted.run_id)
    } else {
        Next::Done
    })
}

async fn status(client: &Client, run: &str, json: bool) -> Outcome {
    let mut view = client.get_status(run).await?;
    // A host without the outputs route (Smithers) still shows the status.
    let outputs = client.outputs(run, &OutputsQuery::default()).await.ok();
    if json {
        if let Some(page) = outputs {
            let listed = serde_json::to_value(&page.outputs).unwrap_or_default();
            view.extra.insert("outputs".into(), listed);
            if let Some(cursor) = page.next_cursor {
                view.extra.insert("outputsNextCursor".into(), cursor.into());
            }
        }
        print_json(&view);
    } else {
        print_status(&view);
        if let Some(page) = outputs {
            outputs::print_listing(run, &page);
        }
    }
    Ok(Next::Done)
}

fn print_status(view: &RunStatusView) {
    let state = view
        .run_state
        .as_ref()
        .map(|s| format!(" ({})", s.state))
        .unwrap_or_default();
    print_line(&format!("run       {}", view.run_id));
    print_line(&format!("workflow  {}", view.workflow_name));
    print_line(&format!("status    {}{state}", view.status));
    if let Some(blocked) = view.run_state.as_ref().and_then(|s| s.blocked.as_ref()) {
        let kind = blocked.get("kind").and_then(Value::as_str).unwrap_or("?");
        let node = blocked.get("nodeId").and_then(Value::as_str).unwrap_or("?");
        print_line(&format!("waiting   {kind} of {node}"));
    }
    match (view.started_at_ms, view.finished_at_ms) {
        (Some(start), Some(end)) => print_line(&format!(
            "took      {}",
            live::duration(end.saturating_sub(start))
        )),
        (Some(start), None) => print_line(&format!(
            "running   for {}",
            live::duration(now_ms().saturating_sub(start))
        )),
        _ => {}
    }
    let nodes: Vec<String> = view
        .summary
        .iter()
        .map(|(state, n)| format!("{state} {n}"))
        .collect();
    print_line(&format!("nodes     {}", nodes.join(", ")));
}

async fn approvals(client: &Client, json: bool) -> Outcome {
    let pending = client.list_approvals().await?;
    if json {
        print_json(&pending);
        return Ok(Next::Done);
    }
    if pending.is_empty() {
        print_line("no pending approvals");
        return Ok(Next::Done);
    }
    let rows = pending
        .iter()
        .map(|a| {
            let node = if a.iteration > 0 {
                format!("{}[{}]", a.node_id, a.iteration)
            } else {
                a.node_id.clone()
            };
            vec![
                a.run_id.clone(),
                node,
                a.workflow_name.clone(),
                live::duration(a.waiting_ms),
                a.request_title.clone().unwrap_or_default(),
            ]
        })
        .collect();
    print_table(&["RUN", "NODE", "WORKFLOW", "WAITING", "TITLE"], rows);
    Ok(Next::Done)
}

async fn decide(client: &Client, args: DecideArgs, approved: bool, json: bool) -> Outcome {
    let decision = Decision {
        iteration: args.iteration,
        note: args.note,
        decided_by: args.by.or_else(|| std::env::var("USER").ok()),
    };
    let accepted = if approved {
        client.approve(&args.run, &args.node, &decision).await?
    } else {
        client.deny(&args.run, &args.node, &decision).await?
    };
    if json {
        print_json(&accepted);
    } else {
        let verb = if approved { "approved" } else { "denied" };
        print_line(&format!("{verb} {} of run {}", args.node, accepted.run_id));
    }
    Ok(Next::Done)
}

async fn signal(client: &Client, args: SignalArgs, json: bool) -> Outcome {
    let data = match &args.data {
        Some(raw) => json_arg(raw, "--data")?,
        None => Value::Object(Default::default()),
    };
    let signal = Signal {
        data,
        correlation_id: args.correlation_id,
        received_by: std::env::var("USER").ok(),
    };
    let receipt = client.signal(&args.run, &args.name, &signal).await?;
    if json {
        print_json(&receipt);
    } else {
        print_line(&format!(
            "signal {:?} delivered to run {} (seq {})",
            receipt.signal_name, receipt.run_id, receipt.seq
        ));
    }
    Ok(Next::Done)
}

async fn cancel(client: &Client, run: &str, json: bool) -> Outcome {
    let outcome = client.cancel(run).await?;
    if json {
        print_json(&outcome);
    } else if outcome.won == Some(false) {
        print_line(&format!("run {} was already cancelled", outcome.run_id));
    } else {
        print_line(&format!("cancelled run {}", outcome.run_id));
    }
    Ok(Next::Done)
}

async fn resume(client: &Client, run: &str, json: bool) -> Outcome {
    let accepted = client.resume(run, None).await?;
    if json {
        print_json(&accepted);
    } else if accepted.status.is_some() {
        print_line(&format!("run {} is already running", accepted.run_id));
    } else {
        print_line(&format!("resumed run {}", accepted.run_id));
    }
    Ok(Next::Done)
}

async fn runs(client: &Client, args: RunsArgs, json: bool) -> Outcome {
    let runs = client
        .list_runs(&ListRuns {
            limit: Some(args.limit),
            status: args.status,
            workflow: args.workflow,
        })
        .await?;
    if json {
        print_json(&runs);
        return Ok(Next::Done);
    }
    if runs.is_empty() {
        print_line("no runs");
        return Ok(Next::Done);
    }
    let now = now_ms();
    let rows = runs
        .iter()
        .map(|r| {
            let took = match (r.started_at_ms, r.finished_at_ms) {
                (Some(s), Some(f)) => live::duration(f.saturating_sub(s)),
                (Some(s), None) => format!("{}…", live::duration(now.saturating_sub(s))),
                _ => String::new(),
            };
            let age = r
                .created_at_ms
                .map(|c| format!("{} ago", live::duration(now.saturating_sub(c))))
                .unwrap_or_default();
            vec![
                r.run_id.clone(),
                r.status.to_string(),
                r.workflow_name.clone(),
                age,
                took,
            ]
        })
        .collect();
    print_table(&["RUN", "STATUS", "WORKFLOW", "CREATED", "TOOK"], rows);
    Ok(Next::Done)
}

async fn frames(client: &Client, args: FramesArgs, json: bool) -> Outcome {
    let frames = client
        .get_frames(
            &args.run,
            &FramesQuery {
                limit: Some(args.limit),
                after_frame_no: args.after,
            },
        )
        .await?;
    if json {
        print_json(&frames);
        return Ok(Next::Done);
    }
    let rows = frames
        .iter()
        .map(|f| {
            let mounted = f
                .extra
                .get("mountedTaskIdsJson")
                .and_then(Value::as_str)
                .and_then(|t| serde_json::from_str::<Vec<Value>>(t).ok())
                .map_or(0, |ids| ids.len());
            let trigger = f
                .extra
                .get("note")
                .and_then(Value::as_str)
                .and_then(|t| serde_json::from_str::<Value>(t).ok())
                .and_then(|n| n.get("reason").and_then(Value::as_str).map(str::to_string))
                .unwrap_or_default();
            vec![
                f.frame_no.to_string(),
                f.xml_hash.chars().take(12).collect(),
                mounted.to_string(),
                trigger,
            ]
        })
        .collect();
    print_table(&["FRAME", "HASH", "TASKS", "TRIGGER"], rows);
    Ok(Next::Done)
}

/// Prints left-aligned columns separated by two spaces.
fn print_table(header: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.trim_end().to_string()
    };
    print_line(&line(header.to_vec()));
    for row in &rows {
        print_line(&line(row.iter().map(String::as_str).collect()));
    }
}

/// A certificate file, bounded (a PEM bundle is a few KiB).
fn read_pem(path: &std::path::Path) -> Result<Vec<u8>, String> {
    let size = std::fs::metadata(path).map_err(|e| e.to_string())?.len();
    if size > 1024 * 1024 {
        return Err("larger than 1 MiB".into());
    }
    std::fs::read(path).map_err(|e| e.to_string())
}
