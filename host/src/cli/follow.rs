//! Following a run in the foreground: show its events until its driver
//! stops (the shared live view, or NDJSON with `--json`, `NodeFinished`
//! carrying the node's `output`), list its outputs if it finished, then say
//! how it ended and how to continue it.

use std::path::Path;
use std::pin::pin;

use futures::StreamExt;
use serde_json::Value;
use std::io::Write;

use super::live::{self, ResultList, View};
use super::local::fail;
use super::{
    EXIT_CANCELLED, EXIT_FAILED, EXIT_FINISHED, EXIT_INTERNAL, EXIT_REFUSED, EXIT_WAITING_APPROVAL,
    EXIT_WAITING_SIGNAL,
};
use crate::app::App;
use crate::engine::events;
use crate::engine::outputs::Page;
use crate::model::{NodeState, RunId, RunStatus};
use crate::store::{NodeRow, RunRow, StoredEvent};

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
    // The exact local commands that continue a parked run come at the end.
    let mut view = (!json).then(|| View::new(run_id.as_str(), None));
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
                    show(app, run_id, &event, view.as_mut()).await;
                }
                Some(Err(e)) => {
                    if let Some(view) = &view {
                        view.finish();
                    }
                    return fail(e, EXIT_INTERNAL);
                }
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
                if let Some(view) = &view {
                    view.finish();
                }
                eprintln!(
                    "\ninterrupted: run {run_id} is saved; continue it with:\n  {}",
                    continue_command(app, &format!("resume {run_id}"))
                );
                return 130;
            }
        }
    }
    if let Some(view) = &view {
        view.finish();
    }
    let (run, nodes) = match read_run(app, run_id).await {
        Ok(found) => found,
        Err(code) => return code,
    };
    if let (Some(view), RunStatus::Finished) = (&view, run.status) {
        print_result(app, run_id, view).await;
    }
    report(app, &run, &nodes, json)
}

/// Shows one event: on the view with the output of a finished node under
/// its line, or as a JSON line (`NodeFinished` with `output` added).
async fn show(app: &App, run_id: &RunId, event: &StoredEvent, view: Option<&mut View>) {
    let output = match event.event_type.as_str() {
        "NodeFinished" => finished_output(app, run_id, &event.json).await,
        _ => None,
    };
    let Some(view) = view else {
        let line = live::with_output(&event.json, output.as_ref());
        let _ = writeln!(std::io::stdout().lock(), "{line}");
        return;
    };
    let Ok(body) = serde_json::from_str::<Value>(&event.json) else {
        return;
    };
    view.event(&smithers_client::Event::from_json(body, event.seq));
    if let Some(output) = &output {
        view.output(output);
    }
}

/// The committed output of the node a `NodeFinished` event is about.
async fn finished_output(app: &App, run_id: &RunId, event_json: &str) -> Option<Value> {
    let body: Value = serde_json::from_str(event_json).ok()?;
    let node_id = body.get("nodeId")?.as_str()?;
    let iteration = u32::try_from(body.get("iteration")?.as_u64()?).ok()?;
    let page = Page::first(Page::DEFAULT_MAX_BYTES);
    let node = app
        .engine
        .node(run_id, node_id, Some(iteration), page)
        .await
        .ok()?;
    node.iterations.into_iter().next()?.output
}

/// Lists the outputs of a finished run under `result`.
async fn print_result(app: &App, run_id: &RunId, view: &View) {
    let hint = continue_command(app, &format!("status {run_id}"));
    let mut list = ResultList::new(view, hint);
    let mut page = Page::first(Page::DEFAULT_MAX_BYTES);
    loop {
        let Ok(found) = app.engine.outputs(run_id, page).await else {
            return;
        };
        let entries = found
            .outputs
            .iter()
            .map(|o| (o.node_id.as_str(), o.iteration, &o.output));
        if !list.page(entries) {
            return;
        }
        match found.next_cursor {
            Some(cursor) => page.cursor = Some(cursor),
            None => return,
        }
    }
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
