//! The live view of a run on stdout, shared by the local commands that
//! follow a run (`run`, `resume`, `approve`, ...) and by `client watch`.
//!
//! The [`Board`] turns events into lines, one per node when it reaches a
//! state worth reporting (finished, failed, skipped, cancelled, waiting),
//! with the node's duration, plus the text tasks wrote and a line for each
//! run-level change. The [`View`] prints them: on a terminal, nodes that are
//! running show a spinner with their elapsed time until their line replaces
//! it, and outputs are cut to a screenful; elsewhere (a pipe, a log) only the
//! lines are printed, whole. Both print each finished node's output under
//! its line and the run's outputs when it finishes. The view never fetches
//! anything: its callers hand it events and outputs, from the engine or
//! over HTTP. Every line goes through [`pretty::safe`] first.

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde_json::Value;
use smithers_client::{Event, EventKind};

use super::pretty::{self, Fit, node_label};
use crate::model::now_ms;

/// How to approve a node over HTTP.
pub const REMOTE_APPROVE: &str = "smithers-host client approve";

/// Outputs listed under `result` on a terminal before pointing elsewhere.
pub const TTY_RESULT_ENTRIES: usize = 20;

/// An event's JSON line (as stored or as sent) with `output` added last
/// when the node has one: how `--json` shows outputs on `NodeFinished`,
/// every other field unchanged.
pub fn with_output(event_json: &str, output: Option<&Value>) -> String {
    let trimmed = event_json.trim_end();
    match (output, trimmed.strip_suffix('}')) {
        (Some(output), Some(head)) if trimmed.starts_with('{') => {
            let separator = if head.trim_end().ends_with('{') {
                ""
            } else {
                ","
            };
            format!("{head}{separator}\"output\":{output}}}")
        }
        _ => trimmed.to_string(),
    }
}

/// Prints a run's progress to stdout.
pub struct View {
    board: Board,
    spinners: Option<Spinners>,
    fit: Fit,
}

impl View {
    /// A view of `run`: live on a terminal, plain lines otherwise.
    /// `approve_with` is the command that approves a waiting node, shown
    /// under it (`None` when the caller says how itself).
    pub fn new(run: &str, approve_with: Option<&str>) -> Self {
        let fit = Fit::stdout();
        let mut board = Board::new(run);
        board.approve_with = approve_with.map(str::to_string);
        Self {
            board,
            spinners: matches!(fit, Fit::Terminal(_)).then(Spinners::new),
            fit,
        }
    }

    /// Prints what `event` adds.
    pub fn event(&mut self, event: &Event) {
        let lines = self.board.apply(event);
        match &self.spinners {
            Some(spinners) => spinners.show(&self.board, &self.fitted(&lines)),
            None => self.print(&lines),
        }
    }

    /// Prints a finished node's output under its line.
    pub fn output(&self, output: &Value) {
        self.print(&pretty::output_lines(output, self.fit, "  "));
    }

    /// Prints lines above the spinners (or just prints them).
    pub fn print(&self, lines: &[String]) {
        let lines = self.fitted(lines);
        match &self.spinners {
            Some(spinners) => {
                for line in &lines {
                    let _ = spinners.multi.println(line);
                }
            }
            None => {
                let mut out = std::io::stdout().lock();
                for line in &lines {
                    let _ = writeln!(out, "{line}");
                }
            }
        }
    }

    /// Lines made safe, and cut on a terminal.
    fn fitted(&self, lines: &[String]) -> Vec<String> {
        lines
            .iter()
            .map(|line| self.fit.line(&pretty::safe(line)))
            .collect()
    }

    /// Removes the spinners (before the final report, or on interrupt).
    pub fn finish(&self) {
        if let Some(spinners) = &self.spinners {
            spinners.clear();
        }
    }
}

/// The run's outputs under `result`, one line each, fed a page at a time.
pub struct ResultList<'v> {
    view: &'v View,
    shown: usize,
    more_hint: String,
}

impl<'v> ResultList<'v> {
    /// A listing on `view`; `more_hint` says where to see every output when
    /// a terminal shows only the first [`TTY_RESULT_ENTRIES`].
    pub fn new(view: &'v View, more_hint: impl Into<String>) -> Self {
        Self {
            view,
            shown: 0,
            more_hint: more_hint.into(),
        }
    }

    /// Prints one page of outputs (node id, iteration, output). False once
    /// the terminal's share is shown: then the hint is printed instead and
    /// no further page is wanted.
    pub fn page<'a>(
        &mut self,
        outputs: impl IntoIterator<Item = (&'a str, u32, &'a Value)>,
    ) -> bool {
        for (node_id, iteration, output) in outputs {
            if self.view.fit != Fit::Whole && self.shown == TTY_RESULT_ENTRIES {
                self.view
                    .print(&[format!("  … more outputs: {}", self.more_hint)]);
                return false;
            }
            if self.shown == 0 {
                self.view.print(&["result".to_string()]);
            }
            self.view.print(&[pretty::output_entry(
                node_id,
                iteration,
                output,
                self.view.fit,
            )]);
            self.shown += 1;
        }
        true
    }
}

/// What is known of each node: when its current attempt started.
pub struct Board {
    run: String,
    started: HashMap<(String, u32), i64>,
    run_started_ms: Option<i64>,
    /// The command that approves a node, shown under a waiting one.
    approve_with: Option<String>,
}

impl Board {
    /// A board for `run`, with the remote command to approve a waiting node.
    pub fn new(run: &str) -> Self {
        Self {
            run: run.to_string(),
            started: HashMap::new(),
            run_started_ms: None,
            approve_with: Some(REMOTE_APPROVE.to_string()),
        }
    }

    /// The lines an event adds (often none).
    pub fn apply(&mut self, event: &Event) -> Vec<String> {
        let at = event.timestamp_ms;
        let key = event.node().map(|(id, it)| (id.to_string(), it));
        let label = key.as_ref().map(|(id, it)| node_label(id, *it));
        let since = |started: Option<i64>| started.map(|s| duration(at.saturating_sub(s)));
        let number = |name: &str| event.json.get(name).and_then(Value::as_i64);
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
            EventKind::NodeRetrying { attempt, .. } => {
                let delay =
                    number("delayMs").map_or(String::new(), |ms| format!(" in {}", duration(ms)));
                vec![line(
                    "retrying",
                    &label,
                    format!("attempt {attempt}{delay}"),
                )]
            }
            EventKind::NodeCancelled { .. } => {
                let took = since(key.as_ref().and_then(|k| self.started.remove(k)));
                vec![line("cancelled", &label, took.unwrap_or_default())]
            }
            EventKind::NodeSkipped { .. } => vec![line("skipped", &label, String::new())],
            EventKind::NodeWaitingApproval { node_id, iteration } => {
                let mut lines = vec![line("waiting-approval", &label, String::new())];
                if let Some(command) = &self.approve_with {
                    lines.push(format!(
                        "  approve with: {command} {} {node_id}{}",
                        self.run,
                        if *iteration > 0 {
                            format!(" --iteration {iteration}")
                        } else {
                            String::new()
                        }
                    ));
                }
                lines
            }
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
            EventKind::SignalReceived { signal_name } => {
                vec![format!("signal {signal_name:?} received")]
            }
            EventKind::LoopIterationStarted { node_id, iteration } => {
                vec![line(
                    "loop",
                    &Some(node_label(node_id, 0)),
                    format!("iteration {iteration}"),
                )]
            }
            EventKind::NodeOutput { text, stream, .. } => text
                .trim_end()
                .lines()
                .map(|l| format!("  │ {} {stream}: {l}", label.as_deref().unwrap_or("")))
                .collect(),
            EventKind::ToolCallFinished {
                tool_name, status, ..
            } => {
                let outcome = number("exitCode").map_or(status.clone(), |c| format!("exited {c}"));
                let took = number("durationMs")
                    .map_or(String::new(), |ms| format!(" in {}", duration(ms)));
                vec![line("tool", &label, format!("{tool_name} {outcome}{took}"))]
            }
            EventKind::HttpDenied {
                method,
                host,
                port,
                reason,
                ..
            } => vec![line(
                "http-denied",
                &label,
                format!("{method} {host}:{port} ({reason})"),
            )],
            EventKind::HttpReplayDiverged {
                call_seq, replayed, ..
            } => vec![line(
                "http-replay",
                &label,
                format!("diverged at call {call_seq} after {replayed} replayed"),
            )],
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

/// Spinners for running nodes, below the printed lines.
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
    fn show(&self, board: &Board, lines: &[String]) {
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
                        .with_prefix(pretty::cut(&label, 28))
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
    fn retries_task_text_and_tool_calls_get_lines_too() {
        let mut board = Board::new("r1");
        let retry = board.apply(&event(
            1,
            1,
            json!({"type":"NodeRetrying","nodeId":"flaky","iteration":0,"attempt":2,"delayMs":1500}),
        ));
        assert_eq!(
            retry,
            [format!(
                "{:<17} {:<28} attempt 2 in 1500 ms",
                "retrying", "flaky"
            )]
        );
        let text = board.apply(&event(
            2,
            2,
            json!({"type":"NodeOutput","nodeId":"draft","iteration":2,"attempt":1,"text":"one\ntwo\n","stream":"stdout"}),
        ));
        assert_eq!(
            text,
            ["  │ draft[2] stdout: one", "  │ draft[2] stdout: two"]
        );
        let tool = board.apply(&event(
            3,
            3,
            json!({"type":"ToolCallFinished","nodeId":"sh","iteration":0,"attempt":1,"toolCallId":"x",
                   "toolName":"bash","toolCallSeq":0,"status":"success","exitCode":0,"durationMs":12,"truncated":false}),
        ));
        assert_eq!(
            tool,
            [format!(
                "{:<17} {:<28} bash exited 0 in 12 ms",
                "tool", "sh"
            )]
        );
    }

    #[test]
    fn a_node_id_cannot_drive_the_terminal() {
        let mut board = Board::new("r1");
        let lines = board.apply(&event(
            1,
            1,
            json!({"type":"NodeSkipped","nodeId":"x\u{1b}]0;owned\u{7}","iteration":0}),
        ));
        assert!(!lines[0].chars().any(char::is_control), "{lines:?}");
    }

    #[test]
    fn json_lines_gain_the_output_last_and_keep_every_other_field() {
        let line = r#"{"type":"NodeFinished","runId":"r","nodeId":"greet","iteration":0,"attempt":1,"seq":4}"#;
        let with = with_output(line, Some(&json!({"greeting": "hi"})));
        assert!(with.starts_with(&line[..line.len() - 1]), "{with}");
        let parsed: Value = serde_json::from_str(&with).unwrap();
        assert_eq!(parsed["output"], json!({"greeting": "hi"}));
        assert_eq!(parsed["seq"], 4);
        assert_eq!(with_output(line, None), line);
        assert_eq!(with_output("{}", Some(&json!(1))), r#"{"output":1}"#);
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(duration(850), "850 ms");
        assert_eq!(duration(12_345), "12.3 s");
        assert_eq!(duration(245_000), "4 m 05 s");
        assert_eq!(duration(7_380_000), "2 h 03 m");
    }
}
