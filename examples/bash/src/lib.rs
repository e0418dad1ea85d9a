//! `bash`: run a shell command in the host's sandbox.
//!
//! Input: `{"command": "echo hi", "cwd": "sub", "timeoutMs": 5000}` (`command` required).
//!
//! Task `run` outputs `{"exitCode", "stdout", "stderr", "truncated"}` and emits the same
//! value as a `NodeOutput` event. A non-zero exit is an output; a tool error (the sandbox is unavailable, the cwd escapes the root, the command
//! timed out, ...) fails the task with the tool error's code.
//!
//! Shows: `tools::bash_with` and `?` from a tool error to a task error.

use smithers_sdk::serde::Deserialize;
use smithers_sdk::serde_json::json;
use smithers_sdk::tools::{self, BashOptions};
use smithers_sdk::{Ctx, Node, task};

#[derive(Deserialize)]
#[serde(crate = "smithers_sdk::serde", rename_all = "camelCase")]
struct Input {
    command: String,
    #[serde(default)]
    cwd: Option<String>,
    #[serde(default)]
    timeout_ms: Option<u64>,
}

fn build(_ctx: &Ctx) -> Node {
    task("run", |t| {
        let input: Input = t.input()?;
        let mut options = BashOptions::new();
        options.cwd = input.cwd;
        options.timeout_ms = input.timeout_ms;
        let out = tools::bash_with(&input.command, options)?;
        let result = json!({
            "exitCode": out.exit_code,
            "stdout": out.stdout,
            "stderr": out.stderr,
            "truncated": out.truncated,
        });
        // Also stream it, so it shows in the run's event stream (`--json`,
        // SSE) as a NodeOutput event, not only as the committed output.
        tools::emit(&result)?;
        Ok(result)
    })
}

smithers_sdk::workflow!(name: "bash", build: build);

#[cfg(test)]
mod tests {
    use smithers_sdk::serde_json::Value;
    use smithers_sdk::{TaskCtx, TaskError};

    use super::*;

    fn run(input: Value) -> Result<Value, TaskError> {
        let ctx = Ctx::new(input);
        build(&ctx).run_task(&TaskCtx::new(ctx, "run", 0, 1))
    }

    #[test]
    fn a_command_is_required() {
        assert_eq!(run(json!({})).unwrap_err().code, "INVALID_INPUT");
    }

    #[test]
    fn a_tool_error_fails_the_task_with_its_code() {
        // Natively there is no host: the tool answers TOOL_UNAVAILABLE.
        assert_eq!(
            run(json!({"command": "true"})).unwrap_err().code,
            "TOOL_UNAVAILABLE"
        );
    }
}
