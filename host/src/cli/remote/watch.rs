//! `client watch RUN`: a run's progress, live, until it ends.
//!
//! The [`Board`] turns events into lines, one per node when it reaches a
//! state worth reporting (finished, failed, skipped, cancelled, waiting),
//! with the node's duration, plus a line for each run-level change. On a
//! terminal, nodes that are running show a spinner with their elapsed time
//! until their line replaces it; elsewhere (a pipe, a log) only the lines
//! are printed. `--json` prints each event as one JSON line instead.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::time::Duration;

use futures::StreamExt;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use smithers_client::{Client, Event, EventKind};

use super::fail;
use crate::cli::{EXIT_CANCELLED, EXIT_FAILED, EXIT_FINISHED, EXIT_INTERNAL};
use crate::model::now_ms;

/// Follows `run` until its terminal event; the exit code tells how it ended.
pub async fn watch(client: &Client, run: &str, json: bool) -> u8 {
    let mut events = client.stream_events(run);
    let mut board = Board::new(run);
    let spinners = (!json && std::io::stdout().is_terminal()).then(Spinners::new);
    let mut code = None;
    while let Some(event) = events.next().await {
        let event = match event {
            Ok(event) => event,
            Err(e) => {
                if let Some(spinners) = &spinners {
                    spinners.clear();
                }
                return fail(&e);
            }
        };
        if json {
            let _ = writeln!(std::io::stdout().lock(), "{}", event.json);
        } else {
            let lines = board.apply(&event);
            match &spinners {
                Some(spinners) => spinners.show(&board, &event, &lines),
                None => {
                    let mut out = std::io::stdout().lock();
                    for line in &lines {
                        let _ = writeln!(out, "{line}");
                    }
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
    if let Some(spinners) = &spinners {
        spinners.clear();
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

/// What is known of each node: when its current attempt started.
pub struct Board {
    run: String,
    started: HashMap<(String, u32), i64>,
    run_started_ms: Option<i64>,
}

impl Board {
    /// A board for `run`.
    pub fn new(run: &str) -> Self {
        Self {
            run: run.to_string(),
            started: HashMap::new(),
            run_started_ms: None,
        }
    }

    /// The lines an event adds (often none).
    pub fn apply(&mut self, event: &Event) -> Vec<String> {
        let at = event.timestamp_ms;
        let key = event.node().map(|(id, it)| (id.to_string(), it));
        let label = key.as_ref().map(|(id, it)| node_label(id, *it));
        let since = |started: Option<i64>| started.map(|s| duration(at.saturating_sub(s)));
        let line = |state: &str, label: &Option<String>, detail: String| {
            format!(
                "{state:<17} {:<28} {detail}",
                label.as_deref().unwrap_or("")
            )
            .trim_end()
            .to_string()
        };
        match &event.kind {
            EventKind::RunStarted {
                workflow_name,
                resumed,
            } => {
                self.run_started_ms.get_or_insert(at);
                let verb = if *resumed { "resumed" } else { "started" };
                let name = workflow_name
                    .as_deref()
                    .map(|n| format!(" ({n})"))
                    .unwrap_or_default();
                vec![format!("run {} {verb}{name}", self.run)]
            }
            EventKind::NodeStarted { .. } => {
                if let Some(key) = key {
                    self.started.insert(key, at);
                }
                Vec::new()
            }
            EventKind::NodeFinished { attempt, .. } => {
                let took = since(key.as_ref().and_then(|k| self.started.remove(k)));
                vec![line("finished", &label, attempt_detail(took, *attempt))]
            }
            EventKind::NodeFailed { attempt, error, .. } => {
                let took = since(key.as_ref().and_then(|k| self.started.remove(k)));
                let why = error.as_ref().map(|e| format!(": {e}")).unwrap_or_default();
                vec![line(
                    "failed",
                    &label,
                    format!("{}{why}", attempt_detail(took, *attempt)),
                )]
            }
            EventKind::NodeCancelled { .. } => {
                let took = since(key.as_ref().and_then(|k| self.started.remove(k)));
                vec![line("cancelled", &label, took.unwrap_or_default())]
            }
            EventKind::NodeSkipped { .. } => vec![line("skipped", &label, String::new())],
            EventKind::NodeWaitingApproval { node_id, iteration } => vec![
                line("waiting-approval", &label, String::new()),
                format!(
                    "  approve with: smithers-host client approve {} {node_id}{}",
                    self.run,
                    if *iteration > 0 {
                        format!(" --iteration {iteration}")
                    } else {
                        String::new()
                    }
                ),
            ],
            EventKind::NodeWaitingEvent { signal_name, .. } => vec![line(
                "waiting-signal",
                &label,
                signal_name.clone().unwrap_or_default(),
            )],
            EventKind::ApprovalGranted { note, .. } => {
                vec![line("approved", &label, note.clone().unwrap_or_default())]
            }
            EventKind::ApprovalDenied { note, .. } => {
                vec![line("denied", &label, note.clone().unwrap_or_default())]
            }
            EventKind::RunStatusChanged { status } => vec![format!("run is {status}")],
            EventKind::RunFinished {} => vec![format!("run finished{}", self.total(at))],
            EventKind::RunFailed { error } => vec![format!(
                "run failed{}{}",
                self.total(at),
                error.as_ref().map(|e| format!(": {e}")).unwrap_or_default()
            )],
            EventKind::RunCancelled {} => vec![format!("run cancelled{}", self.total(at))],
            _ => Vec::new(),
        }
    }

    /// Nodes running now: (label, started at ms).
    fn running(&self) -> impl Iterator<Item = (String, i64)> + '_ {
        self.started
            .iter()
            .map(|((id, it), at)| (node_label(id, *it), *at))
    }

    fn total(&self, at: i64) -> String {
        self.run_started_ms
            .map(|s| format!(" in {}", duration(at.saturating_sub(s))))
            .unwrap_or_default()
    }
}

fn node_label(id: &str, iteration: u32) -> String {
    if iteration > 0 {
        format!("{id}[{iteration}]")
    } else {
        id.to_string()
    }
}

fn attempt_detail(took: Option<String>, attempt: u32) -> String {
    let took = took.unwrap_or_default();
    if attempt > 1 {
        format!("{took:>9}  attempt {attempt}")
    } else {
        format!("{took:>9}")
    }
}

/// A duration in ms as `850 ms`, `12.3 s`, `4 m 05 s` or `2 h 03 m`.
pub fn duration(ms: i64) -> String {
    let ms = ms.max(0);
    match ms {
        0..=9_999 => format!("{ms} ms"),
        10_000..=59_999 => format!("{:.1} s", ms as f64 / 1000.0),
        60_000..=3_599_999 => format!("{} m {:02} s", ms / 60_000, (ms / 1000) % 60),
        _ => format!("{} h {:02} m", ms / 3_600_000, (ms / 60_000) % 60),
    }
}

/// Spinners for running nodes, above the printed lines.
struct Spinners {
    multi: MultiProgress,
    bars: std::sync::Mutex<HashMap<String, ProgressBar>>,
    style: ProgressStyle,
}

impl Spinners {
    fn new() -> Self {
        let style =
            ProgressStyle::with_template("{spinner} running          {prefix:<28} {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner());
        Self {
            multi: MultiProgress::new(),
            bars: std::sync::Mutex::new(HashMap::new()),
            style,
        }
    }

    /// Prints `lines` above the bars and makes the bars match the board.
    fn show(&self, board: &Board, _event: &Event, lines: &[String]) {
        let mut bars = self.bars.lock().expect("spinner lock");
        let running: HashMap<String, i64> = board.running().collect();
        bars.retain(|label, bar| {
            let keep = running.contains_key(label);
            if !keep {
                bar.finish_and_clear();
                self.multi.remove(bar);
            }
            keep
        });
        for line in lines {
            let _ = self.multi.println(line);
        }
        let now = now_ms();
        for (label, started) in running {
            bars.entry(label.clone()).or_insert_with(|| {
                let elapsed = Duration::from_millis(now.saturating_sub(started).max(0) as u64);
                let bar = self.multi.add(
                    ProgressBar::new_spinner()
                        .with_style(self.style.clone())
                        .with_prefix(label)
                        .with_elapsed(elapsed),
                );
                bar.enable_steady_tick(Duration::from_millis(100));
                bar
            });
        }
    }

    fn clear(&self) {
        let mut bars = self.bars.lock().expect("spinner lock");
        for (_, bar) in bars.drain() {
            bar.finish_and_clear();
        }
        let _ = self.multi.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(seq: u64, at: i64, body: serde_json::Value) -> Event {
        let mut json = body;
        json["runId"] = json!("r1");
        json["timestampMs"] = json!(at);
        Event::from_json(json, seq)
    }

    #[test]
    fn one_line_per_node_with_its_duration() {
        let mut board = Board::new("r1");
        let mut lines = Vec::new();
        for e in [
            event(0, 1000, json!({"type":"RunStarted","workflowName":"hello"})),
            event(
                1,
                1001,
                json!({"type":"NodePending","nodeId":"greet","iteration":0}),
            ),
            event(
                2,
                1002,
                json!({"type":"NodeStarted","nodeId":"greet","iteration":0,"attempt":1}),
            ),
            event(
                3,
                1045,
                json!({"type":"NodeFinished","nodeId":"greet","iteration":0,"attempt":1}),
            ),
            event(4, 1046, json!({"type":"RunFinished"})),
        ] {
            lines.extend(board.apply(&e));
        }
        assert_eq!(
            lines,
            vec![
                "run r1 started (hello)".to_string(),
                format!("{:<17} {:<28} {:>9}", "finished", "greet", "43 ms"),
                "run finished in 46 ms".to_string(),
            ]
        );
    }

    #[test]
    fn waiting_nodes_say_how_to_continue() {
        let mut board = Board::new("r1");
        let lines = board.apply(&event(
            5,
            1,
            json!({"type":"NodeWaitingApproval","nodeId":"gate","iteration":0,"request":{}}),
        ));
        assert!(lines[0].starts_with("waiting-approval  gate"));
        assert_eq!(
            lines[1],
            "  approve with: smithers-host client approve r1 gate"
        );
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(duration(850), "850 ms");
        assert_eq!(duration(12_345), "12.3 s");
        assert_eq!(duration(245_000), "4 m 05 s");
        assert_eq!(duration(7_380_000), "2 h 03 m");
    }
}
