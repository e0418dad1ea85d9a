//! Host side of the `smithers:workflow/tools` interface.
//!
//! Tools exist only in `run-task` instances; `render` must be pure, so a tool
//! call from `render` is refused. Every call is attributed to its node and
//! attempt and reported as events (`ToolCallStarted`/`ToolCallFinished`,
//! `NodeOutput`) through the channel the engine gave the task.
//!
//! What a guest streams is bounded here, before it leaves the call: a `log`
//! message is cut to its cap, an `emit` over its cap or anything the run's
//! [`OutputBudget`] cannot hold traps the call with `OUTPUT_LIMIT_EXCEEDED`
//! (the WIT functions return nothing a refusal could be reported with).

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

use super::bindings::tools::{BashOptions, BashResult, Host, LogLevel, ToolError};
use super::http::Secrets;
use super::limits::{self, GuestLimits, LimitExceeded, OutputBudget};
use super::{HostState, TaskEnv};
use crate::model::{ErrorInfo, EventBody};
use crate::sandbox::{self, BashRequest, SandboxPolicy};

/// What a task's tool calls need.
pub(super) struct ToolContext {
    sandbox: Arc<SandboxPolicy>,
    events: UnboundedSender<EventBody>,
    cancel: CancellationToken,
    run_id: String,
    node_id: String,
    iteration: u32,
    attempt: u32,
    next_call: u32,
    budget: Arc<OutputBudget>,
    max_emit_bytes: usize,
    max_log_bytes: usize,
    /// Redacts secret values out of what a tool returns.
    secrets: Arc<Secrets>,
}

impl ToolContext {
    pub(super) fn new(env: TaskEnv, limits: &GuestLimits, secrets: Arc<Secrets>) -> Self {
        Self {
            sandbox: env.sandbox,
            events: env.events,
            cancel: env.cancel,
            run_id: env.run_id,
            node_id: env.node_id,
            iteration: env.iteration,
            attempt: env.attempt,
            next_call: 0,
            budget: env.budget,
            max_emit_bytes: limits.max_emit_bytes,
            max_log_bytes: limits.max_log_bytes,
            secrets,
        }
    }

    /// Charges the `NodeOutput` event carrying `text` to the run (what it
    /// will store, before it is stored) and streams it.
    fn stream(&self, what: &'static str, text: String, stream: &str) -> wasmtime::Result<()> {
        let event = EventBody::NodeOutput {
            node_id: self.node_id.clone(),
            iteration: self.iteration,
            attempt: self.attempt,
            text,
            stream: stream.into(),
        };
        self.budget
            .try_charge(what, limits::stored_event_bytes(&event, &self.run_id))?;
        let _ = self.events.send(event);
        Ok(())
    }
}

fn unavailable_in_render() -> ToolError {
    ToolError {
        code: "TOOL_UNAVAILABLE".into(),
        message:
            "tools can only be used inside tasks: render must be a pure function of its context"
                .into(),
    }
}

impl super::bindings::types::Host for HostState {}

impl Host for HostState {
    async fn bash(
        &mut self,
        command: String,
        options: BashOptions,
    ) -> Result<BashResult, ToolError> {
        let Some(tools) = self.tools.as_mut() else {
            return Err(unavailable_in_render());
        };
        let seq = tools.next_call;
        tools.next_call += 1;
        let tool_call_id = format!(
            "{}:{}:{}:{}:{}",
            tools.run_id, tools.node_id, tools.iteration, tools.attempt, seq
        );
        let _ = tools.events.send(EventBody::ToolCallStarted {
            node_id: tools.node_id.clone(),
            iteration: tools.iteration,
            attempt: tools.attempt,
            tool_call_id: tool_call_id.clone(),
            tool_name: "bash".into(),
            seq,
        });
        let request = BashRequest {
            command,
            cwd: options.cwd,
            timeout_ms: options.timeout_ms,
            max_output_bytes: options.max_output_bytes,
            env: options.env,
        };
        let started = Instant::now();
        let result = sandbox::run_bash(&tools.sandbox, request, tools.cancel.child_token()).await;
        let duration_ms = started.elapsed().as_millis() as u64;
        let (status, exit_code, truncated, error) = match &result {
            Ok(outcome) => ("success", Some(outcome.exit_code), outcome.truncated, None),
            Err(e) => (
                "error",
                None,
                false,
                Some(ErrorInfo::new(e.code.as_str(), e.message.clone())),
            ),
        };
        let _ = tools.events.send(EventBody::ToolCallFinished {
            node_id: tools.node_id.clone(),
            iteration: tools.iteration,
            attempt: tools.attempt,
            tool_call_id,
            tool_name: "bash".into(),
            seq,
            status: status.into(),
            exit_code,
            duration_ms,
            truncated,
            error,
        });
        // The shell never gets a secret's value (its environment is empty
        // but for what the guest passes, which holds placeholders at most);
        // redacting its output is the second wall.
        let secrets = &tools.secrets;
        match result {
            Ok(outcome) => Ok(BashResult {
                exit_code: outcome.exit_code,
                stdout: secrets.redact(outcome.stdout),
                stderr: secrets.redact(outcome.stderr),
                truncated: outcome.truncated,
                duration_ms: outcome.duration_ms,
            }),
            Err(e) => Err(ToolError {
                code: e.code.as_str().into(),
                message: e.message,
            }),
        }
    }

    async fn log(&mut self, level: LogLevel, mut message: String) -> wasmtime::Result<()> {
        let Some(tools) = self.tools.as_ref() else {
            tracing::debug!("log from render ignored");
            return Ok(());
        };
        // A log line is for people: its head is what matters, so it is cut
        // rather than refused (as captured stdout/stderr are).
        if limits::cut(&mut message, tools.max_log_bytes) {
            message.push_str(" [log message truncated]");
        }
        let (run, node) = (&tools.run_id, &tools.node_id);
        match level {
            LogLevel::Trace => tracing::trace!(run, node, "{message}"),
            LogLevel::Debug => tracing::debug!(run, node, "{message}"),
            LogLevel::Info => tracing::info!(run, node, "{message}"),
            LogLevel::Warn => tracing::warn!(run, node, "{message}"),
            LogLevel::Error => tracing::error!(run, node, "{message}"),
        }
        tools.stream("a log message", message, "log")
    }

    async fn emit(&mut self, data: String) -> wasmtime::Result<()> {
        let Some(tools) = self.tools.as_ref() else {
            return Ok(());
        };
        // Structured data cut in the middle is no longer data: an emit over
        // its cap fails the task instead.
        if data.len() > tools.max_emit_bytes {
            return Err(LimitExceeded::PerCall {
                what: "an emit",
                size: data.len(),
                limit: tools.max_emit_bytes,
            }
            .into());
        }
        // Only valid JSON is streamed: a client parsing `text` as JSON must
        // never be surprised.
        let text = match serde_json::from_str::<serde_json::Value>(&data) {
            Ok(_) => data,
            Err(e) => {
                serde_json::json!({ "invalidJson": data, "error": e.to_string() }).to_string()
            }
        };
        tools.stream("an emit", text, "emit")
    }
}
