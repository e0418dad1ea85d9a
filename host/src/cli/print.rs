//! Rendering events for a terminal: one readable line per event, or the
//! event's JSON as one line (NDJSON) with `--json`.

use std::collections::HashMap;
use std::io::Write;

use serde_json::Value;

use crate::store::StoredEvent;

/// Prints events, remembering start times to report durations.
#[derive(Default)]
pub struct Printer {
    json: bool,
    started: HashMap<(String, u64), i64>,
}

impl Printer {
    /// A printer for human-readable lines, or NDJSON when `json`.
    pub fn new(json: bool) -> Self {
        Self {
            json,
            started: HashMap::new(),
        }
    }

    /// Prints one event to stdout.
    pub fn print(&mut self, event: &StoredEvent) {
        let mut out = std::io::stdout().lock();
        if self.json {
            let _ = writeln!(out, "{}", event.json);
            return;
        }
        let Ok(body) = serde_json::from_str::<Value>(&event.json) else {
            return;
        };
        if let Some(line) = self.describe(&body, event.timestamp_ms) {
            let _ = writeln!(out, "{} {line}", clock(event.timestamp_ms));
        }
    }

    fn describe(&mut self, e: &Value, at: i64) -> Option<String> {
        let s = |key: &str| e.get(key).and_then(Value::as_str).unwrap_or("").to_string();
        let n = |key: &str| e.get(key).and_then(Value::as_u64).unwrap_or(0);
        let node = || {
            let iteration = n("iteration");
            if iteration > 0 {
                format!("{}[{iteration}]", s("nodeId"))
            } else {
                s("nodeId")
            }
        };
        let key = || (s("nodeId"), n("iteration"));
        let line = match s("type").as_str() {
            "RunStarted" => format!(
                "run {} {} ({} {})",
                s("runId"),
                if e.get("resumed").and_then(Value::as_bool) == Some(true) {
                    "resumed"
                } else {
                    "started"
                },
                s("workflowName"),
                short(&s("workflowHash")),
            ),
            "WorkflowLoaded" => format!(
                "  loaded {} from {} in {} ms",
                short(&s("hash")),
                s("source"),
                n("compileMs")
            ),
            "NodeStarted" => {
                self.started.insert(key(), at);
                format!("  ▸ {} started (attempt {})", node(), n("attempt"))
            }
            "NodeFinished" => {
                let took = self
                    .started
                    .remove(&key())
                    .map(|t| format!(" in {} ms", at - t));
                format!("  ✓ {} finished{}", node(), took.unwrap_or_default())
            }
            "NodeFailed" => format!(
                "  ✗ {} failed (attempt {}): {}",
                node(),
                n("attempt"),
                e.pointer("/error/message")
                    .and_then(Value::as_str)
                    .unwrap_or("")
            ),
            "NodeRetrying" => format!(
                "  ↻ {} retrying (attempt {}) in {} ms",
                node(),
                n("attempt"),
                n("delayMs")
            ),
            "NodeSkipped" => format!("  – {} skipped", node()),
            "NodeCancelled" => format!("  ■ {} cancelled ({})", node(), s("reason")),
            "NodeWaitingApproval" => format!("  ? {} waiting for approval", node()),
            "NodeWaitingEvent" => {
                format!("  ? {} waiting for signal {:?}", node(), s("signalName"))
            }
            "ApprovalGranted" => format!("  ✓ {} approved{}", node(), by(e)),
            "ApprovalDenied" => format!("  ✗ {} denied{}", node(), by(e)),
            "SignalReceived" => format!(
                "  ⚑ signal {:?} received (seq {})",
                s("signalName"),
                n("signalSeq")
            ),
            "LoopIterationStarted" => {
                format!("  ⟳ loop {} iteration {}", s("nodeId"), n("iteration"))
            }
            "NodeOutput" => {
                let text = s("text");
                let text = text.trim_end();
                format!(
                    "  │ {} {}: {}",
                    node(),
                    s("stream"),
                    text.replace('\n', "\n             │ ")
                )
            }
            "ToolCallStarted" => {
                format!(
                    "  ⚙ {} {} call {} started",
                    node(),
                    s("toolName"),
                    n("toolCallSeq")
                )
            }
            "ToolCallFinished" => format!(
                "  ⚙ {} {} call {} {} in {} ms{}",
                node(),
                s("toolName"),
                n("toolCallSeq"),
                match e.get("exitCode").and_then(Value::as_i64) {
                    Some(code) => format!("exited {code}"),
                    None => s("status"),
                },
                n("durationMs"),
                if e.get("truncated").and_then(Value::as_bool) == Some(true) {
                    " (output truncated)"
                } else {
                    ""
                },
            ),
            "HttpDenied" => format!(
                "  ⊘ {} HTTP {} {}://{}:{} denied ({})",
                node(),
                s("method"),
                s("scheme"),
                s("host"),
                n("port"),
                s("reason")
            ),
            "RunStatusChanged" => format!("run is {}", s("status")),
            "RunFinished" => "run finished".to_string(),
            "RunFailed" => format!(
                "run failed: {} ({})",
                e.pointer("/error/message")
                    .and_then(Value::as_str)
                    .unwrap_or(""),
                e.pointer("/error/code")
                    .and_then(Value::as_str)
                    .unwrap_or("")
            ),
            "RunCancelled" => "run cancelled".to_string(),
            // Frames and pending markers are noise on a terminal.
            _ => return None,
        };
        Some(line)
    }
}

fn by(e: &Value) -> String {
    let who = e.get("decidedBy").and_then(Value::as_str);
    let note = e.get("note").and_then(Value::as_str);
    match (who, note) {
        (Some(who), Some(note)) => format!(" by {who}: {note}"),
        (Some(who), None) => format!(" by {who}"),
        (None, Some(note)) => format!(": {note}"),
        (None, None) => String::new(),
    }
}

fn short(hash: &str) -> &str {
    &hash[..hash.len().min(12)]
}

/// `HH:MM:SS.mmm` (UTC) of an epoch-ms timestamp.
fn clock(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let day = secs.rem_euclid(86_400);
    format!(
        "{:02}:{:02}:{:02}.{millis:03}",
        day / 3600,
        (day % 3600) / 60,
        day % 60
    )
}
