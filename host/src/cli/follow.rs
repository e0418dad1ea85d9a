//! Following a run in the foreground: print its events until its driver
//! stops, then say how it ended and how to continue it.

use std::path::Path;
use std::pin::pin;

use futures::StreamExt;
use serde_json::Value;

use super::local::fail;
use super::print::Printer;
use super::{
    EXIT_CANCELLED, EXIT_FAILED, EXIT_FINISHED, EXIT_INTERNAL, EXIT_REFUSED, EXIT_WAITING_APPROVAL,
    EXIT_WAITING_SIGNAL,
};
use crate::app::App;
use crate::engine::events;
use crate::model::{NodeState, RunId, RunStatus};
use crate::store::{NodeRow, RunRow};

pub(super) async fn read_run(app: &App, run_id: &RunId) -> Result<(RunRow, Vec<NodeRow>), u8> {
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

pub(super) async fn last_seq(app: &App, run_id: &RunId) -> Result<i64, u8> {
    let (run, _) = read_run(app, run_id).await?;
    Ok(run.next_seq as i64 - 1)
}

/// Prints the run's events from `after_seq` until its driver stops, then
/// reports how the run ended and how to continue it. Ctrl-C leaves the run
/// durable and says how to resume it.
pub(super) async fn follow_until_idle(app: &App, run_id: &RunId, after_seq: i64, json: bool) -> u8 {
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
