//! `client watch RUN`: a run's progress, live, until it ends.
//!
//! Events come from the host's SSE stream and are shown by the shared live
//! view (`cli::live`): one line per node, spinners on a terminal, plain lines
//! elsewhere, each finished node's output under its line and the run's
//! outputs once it finished. `--json` prints each event as one JSON line
//! instead, `NodeFinished` with the node's `output` added.

use std::io::Write;

use futures::StreamExt;
use serde_json::Value;
use smithers_client::{Client, Event, EventKind, NodeQuery, OutputsQuery};

use super::fail;
use crate::cli::live::{self, ResultList, View};
use crate::cli::{EXIT_CANCELLED, EXIT_FAILED, EXIT_FINISHED, EXIT_INTERNAL};

/// Follows `run` until its terminal event; the exit code tells how it ended.
pub async fn watch(client: &Client, run: &str, json: bool) -> u8 {
    let mut events = client.stream_events(run);
    let mut view = (!json).then(|| View::new(run, Some(live::REMOTE_APPROVE)));
    let mut code = None;
    while let Some(event) = events.next().await {
        let event = match event {
            Ok(event) => event,
            Err(e) => {
                if let Some(view) = &view {
                    view.finish();
                }
                return fail(&e);
            }
        };
        let output = finished_output(client, run, &event).await;
        match &mut view {
            None => {
                let line = live::with_output(&event.json.to_string(), output.as_ref());
                let _ = writeln!(std::io::stdout().lock(), "{line}");
            }
            Some(view) => {
                view.event(&event);
                if let Some(output) = &output {
                    view.output(output);
                }
            }
        }
        code = match event.kind {
            EventKind::RunFinished {} => Some(EXIT_FINISHED),
            EventKind::RunFailed { .. } => Some(EXIT_FAILED),
            EventKind::RunCancelled {} => Some(EXIT_CANCELLED),
            EventKind::RunContinuedAsNew { .. } => Some(EXIT_FINISHED),
            _ => code,
        };
    }
    if let Some(view) = &view {
        view.finish();
        if code == Some(EXIT_FINISHED) {
            print_result(client, run, view).await;
        }
    }
    // The stream only ends early for a run that had already ended before
    // the watch began at a later seq; ask how.
    match code {
        Some(code) => code,
        None => match client.get_status(run).await {
            Ok(view) => match view.status.as_str() {
                "finished" | "continued" => EXIT_FINISHED,
                "failed" => EXIT_FAILED,
                "cancelled" => EXIT_CANCELLED,
                _ => EXIT_INTERNAL,
            },
            Err(e) => fail(&e),
        },
    }
}

/// The output of the node a `NodeFinished` is about. `None` for other
/// events, and when the host cannot tell (a Smithers server has no such route).
async fn finished_output(client: &Client, run: &str, event: &Event) -> Option<Value> {
    let EventKind::NodeFinished {
        node_id, iteration, ..
    } = &event.kind
    else {
        return None;
    };
    let node = client
        .node(run, node_id, &NodeQuery::iteration(*iteration))
        .await
        .ok()?;
    node.iterations.into_iter().next()?.output
}

/// Lists the run's outputs under `result` (a Smithers server has none to list).
async fn print_result(client: &Client, run: &str, view: &View) {
    let mut list = ResultList::new(view, format!("smithers-host client outputs {run}"));
    let mut query = OutputsQuery::default();
    loop {
        let Ok(page) = client.outputs(run, &query).await else {
            return;
        };
        let entries = page
            .outputs
            .iter()
            .map(|o| (o.node_id.as_str(), o.iteration, &o.output));
        if !list.page(entries) {
            return;
        }
        match page.next_cursor {
            Some(cursor) => query.cursor = Some(cursor),
            None => return,
        }
    }
}
