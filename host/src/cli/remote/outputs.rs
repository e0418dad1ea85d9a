//! `client outputs RUN` and `client node RUN NODE`: what a run produced,
//! read from the host a page at a time, and the outputs listing `client
//! status` ends with.
//!
//! Outputs print as pretty JSON, cut to a screenful on a terminal and whole
//! elsewhere; `--json` prints the host's answer as it came. Everything the
//! workflow chose goes through `cli::pretty` before it reaches the terminal.

use clap::Args;
use serde_json::Value;
use smithers_client::{Client, IterationView, NodeQuery, OutputsPage, OutputsQuery};

use super::{Next, Outcome, print_json, print_line};
use crate::cli::live::duration;
use crate::cli::pretty::{self, Fit, node_label};

#[derive(Debug, Args)]
pub(super) struct OutputsArgs {
    /// Run id.
    run: String,
    /// Continue after an earlier page (the cursor it printed).
    #[arg(long)]
    cursor: Option<String>,
    /// Most outputs in the page (the host's default: 100).
    #[arg(long)]
    limit: Option<u32>,
}

#[derive(Debug, Args)]
pub(super) struct NodeArgs {
    /// Run id.
    run: String,
    /// Node id.
    node: String,
    /// Only this loop iteration.
    #[arg(long)]
    iteration: Option<u32>,
    /// Continue after an earlier page (the cursor it printed).
    #[arg(long)]
    cursor: Option<String>,
    /// Most iterations in the page (the host's default: 100).
    #[arg(long)]
    limit: Option<u32>,
}

fn print_lines(lines: &[String]) {
    for line in lines {
        print_line(line);
    }
}

/// Prints one page of outputs, each as pretty JSON under its node.
pub(super) async fn outputs(client: &Client, args: OutputsArgs, json: bool) -> Outcome {
    let page = client
        .outputs(
            &args.run,
            &OutputsQuery {
                cursor: args.cursor,
                limit: args.limit,
            },
        )
        .await?;
    if json {
        print_json(&page);
        return Ok(Next::Done);
    }
    if page.outputs.is_empty() {
        print_line("no outputs");
    }
    let fit = Fit::stdout();
    for item in &page.outputs {
        print_line(&node_label(&item.node_id, item.iteration));
        print_lines(&pretty::output_lines(&item.output, fit, "  "));
    }
    if let Some(cursor) = &page.next_cursor {
        print_line(&format!(
            "more: smithers-host client outputs {} --cursor {cursor}",
            pretty::safe(&args.run)
        ));
    }
    Ok(Next::Done)
}

/// Prints a node at each iteration: state, attempts, output, error.
pub(super) async fn node(client: &Client, args: NodeArgs, json: bool) -> Outcome {
    let view = client
        .node(
            &args.run,
            &args.node,
            &NodeQuery {
                iteration: args.iteration,
                cursor: args.cursor,
                limit: args.limit,
            },
        )
        .await?;
    if json {
        print_json(&view);
        return Ok(Next::Done);
    }
    let fit = Fit::stdout();
    for iteration in &view.iterations {
        print_lines(&iteration_lines(&view.node_id, iteration, fit));
    }
    if let Some(cursor) = &view.next_cursor {
        print_line(&format!(
            "more: smithers-host client node {} {} --cursor {cursor}",
            pretty::safe(&args.run),
            pretty::safe(&args.node)
        ));
    }
    Ok(Next::Done)
}

/// The lines of a node at one iteration.
fn iteration_lines(node_id: &str, it: &IterationView, fit: Fit) -> Vec<String> {
    let label = it
        .label
        .as_deref()
        .filter(|l| *l != node_id)
        .map(|l| format!(" ({})", pretty::safe(l)))
        .unwrap_or_default();
    let mut lines = vec![format!(
        "{}{label}  {}  {} attempt{}",
        node_label(node_id, it.iteration),
        it.state,
        it.attempt_count,
        if it.attempt_count == 1 { "" } else { "s" }
    )];
    if it.attempts.len() < it.attempt_count as usize {
        lines.push(format!(
            "  … {} earlier attempts",
            it.attempt_count as usize - it.attempts.len()
        ));
    }
    for attempt in &it.attempts {
        let took = match (attempt.started_at_ms, attempt.finished_at_ms) {
            (Some(start), Some(end)) => duration(end.saturating_sub(start)),
            _ => String::new(),
        };
        let why = attempt.error.as_ref().map(error_text).unwrap_or_default();
        lines.push(
            format!(
                "  attempt {:<3} {:<11} {took:>9}  {why}",
                attempt.attempt,
                attempt.state.as_str()
            )
            .trim_end()
            .to_string(),
        );
    }
    if let Some(output) = &it.output {
        lines.push("  output".to_string());
        lines.extend(pretty::output_lines(output, fit, "    "));
    }
    if let Some(error) = &it.error {
        lines.push(format!("  error   {}", error_text(error)));
    }
    lines
}

/// `CODE: message` of a stored error, safe and on one line.
fn error_text(error: &Value) -> String {
    let text = |key: &str| error.get(key).and_then(Value::as_str);
    let line = match (text("code"), text("message")) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (None, Some(message)) => message.to_string(),
        _ => error.to_string(),
    };
    pretty::safe(&line.replace('\n', " "))
}

/// The outputs listing of `client status`: one line each.
pub(super) fn print_listing(run: &str, page: &OutputsPage) {
    if page.outputs.is_empty() {
        return;
    }
    let fit = Fit::stdout();
    print_line("outputs");
    for item in &page.outputs {
        print_line(&pretty::output_entry(
            &item.node_id,
            item.iteration,
            &item.output,
            fit,
        ));
    }
    if page.next_cursor.is_some() {
        print_line(&format!(
            "  … more: smithers-host client outputs {}",
            pretty::safe(run)
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_node_reads_as_its_attempts_then_its_output() {
        let it: IterationView = serde_json::from_value(json!({
            "iteration": 0, "state": "finished", "label": null, "lastAttempt": 2,
            "updatedAtMs": 9, "output": {"ok": true}, "error": null, "attemptCount": 2,
            "attempts": [
                {"attempt": 1, "state": "failed", "startedAtMs": 0, "finishedAtMs": 12,
                 "error": {"code": "TASK_FAILED", "message": "boom\nagain"}},
                {"attempt": 2, "state": "finished", "startedAtMs": 20, "finishedAtMs": 30, "error": null}
            ]
        }))
        .unwrap();
        assert_eq!(
            iteration_lines("flaky", &it, Fit::Whole),
            [
                "flaky  finished  2 attempts".to_string(),
                format!(
                    "  attempt {:<3} {:<11} {:>9}  TASK_FAILED: boom again",
                    1, "failed", "12 ms"
                ),
                format!("  attempt {:<3} {:<11} {:>9}", 2, "finished", "10 ms"),
                "  output".to_string(),
                "    {".to_string(),
                "      \"ok\": true".to_string(),
                "    }".to_string(),
            ]
        );
    }
}
