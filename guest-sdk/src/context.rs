//! What a build function and a task see: the run input, the committed outputs and the loop
//! iterations, with typed accessors. Values stay JSON text until someone asks for them, so a
//! render that reads nothing decodes nothing. Decoding never panics: a value of the wrong
//! shape is a [`TaskError`].

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::TaskError;

/// The state a workflow is rendered from: run input, committed outputs, loop iterations.
///
/// The host hands one to the build function on every render, and the same one (as
/// [`TaskCtx::render_ctx`]) to a task. Build one yourself with [`Ctx::new`] to test a
/// workflow natively.
#[derive(Debug, Clone, Default)]
pub struct Ctx {
    run_id: String,
    /// JSON text of the run input.
    input: String,
    /// JSON text of each output, sorted by node id, then iteration (the
    /// host sends them sorted, so no map is built on every call).
    outputs: Vec<(String, u32, String)>,
    loops: Vec<(String, u32)>,
    auth: Option<Value>,
}

impl Ctx {
    /// A context for a native test: this input, run id `local`, no outputs, no loops.
    pub fn new(input: Value) -> Self {
        Ctx {
            run_id: "local".to_owned(),
            input: input.to_string(),
            ..Ctx::default()
        }
    }

    /// Sets the run id.
    #[must_use]
    pub fn with_run_id(mut self, run_id: impl Into<String>) -> Self {
        self.run_id = run_id.into();
        self
    }

    /// Adds a committed output of `node` at `iteration` (0 outside loops).
    #[must_use]
    pub fn with_output(mut self, node: impl Into<String>, iteration: u32, value: Value) -> Self {
        let node = node.into();
        match self.position(&node, iteration) {
            Ok(at) => self.outputs[at].2 = value.to_string(),
            Err(at) => self
                .outputs
                .insert(at, (node, iteration, value.to_string())),
        }
        self
    }

    /// Sets the current iteration of a loop.
    #[must_use]
    pub fn with_loop_iteration(mut self, loop_id: impl Into<String>, iteration: u32) -> Self {
        let loop_id = loop_id.into();
        self.loops.retain(|(id, _)| *id != loop_id);
        self.loops.push((loop_id, iteration));
        self
    }

    /// Sets who started the run (`{"triggeredBy","role","scopes"}`).
    #[must_use]
    pub fn with_auth(mut self, auth: Value) -> Self {
        self.auth = Some(auth);
        self
    }

    /// The context as the host sends it: JSON texts, unparsed.
    pub(crate) fn from_wire(
        run_id: String,
        input: String,
        outputs: impl IntoIterator<Item = (String, u32, String)>,
        loops: impl IntoIterator<Item = (String, u32)>,
        auth: Option<String>,
    ) -> Self {
        let mut outputs: Vec<(String, u32, String)> = outputs.into_iter().collect();
        if !outputs.is_sorted_by(|a, b| (&a.0, a.1) <= (&b.0, b.1)) {
            outputs.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        }
        Ctx {
            run_id,
            input,
            outputs,
            loops: loops.into_iter().collect(),
            // The host only sends JSON; anything else reads as "unknown".
            auth: auth.and_then(|text| serde_json::from_str(&text).ok()),
        }
    }

    /// The run id.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// The run input, decoded as `T`.
    ///
    /// A run started without input (`null`, or nothing) decodes like `{}` when `T` does not
    /// accept `null`, so an input struct whose fields all have defaults always decodes.
    /// Anything else of the wrong shape is an `INVALID_INPUT` error.
    pub fn input<T: DeserializeOwned>(&self) -> Result<T, TaskError> {
        let text = if self.input.trim().is_empty() {
            "null"
        } else {
            &self.input
        };
        serde_json::from_str(text).or_else(|err| {
            if text.trim() == "null" {
                serde_json::from_str("{}").map_err(|err| TaskError::invalid_input(&err))
            } else {
                Err(TaskError::invalid_input(&err))
            }
        })
    }

    /// The output of `node` at `iteration` (0 outside loops), decoded as `T`.
    ///
    /// `MISSING_OUTPUT` if there is none, `INVALID_OUTPUT` if it does not decode.
    pub fn output<T: DeserializeOwned>(&self, node: &str, iteration: u32) -> Result<T, TaskError> {
        let at = self
            .position(node, iteration)
            .map_err(|_| TaskError::missing_output(node, Some(iteration)))?;
        decode_output(node, iteration, &self.outputs[at].2)
    }

    /// The output of `node` at its highest iteration, decoded as `T`.
    ///
    /// `MISSING_OUTPUT` if `node` has no output at all, `INVALID_OUTPUT` if it does not
    /// decode.
    pub fn latest<T: DeserializeOwned>(&self, node: &str) -> Result<T, TaskError> {
        // The entry just before the first one of the next node id.
        let end = self
            .outputs
            .partition_point(|(id, _, _)| id.as_str() <= node);
        match end.checked_sub(1).map(|last| &self.outputs[last]) {
            Some((id, iteration, text)) if id == node => decode_output(node, *iteration, text),
            _ => Err(TaskError::missing_output(node, None)),
        }
    }

    /// Whether `node` has a committed output at `iteration` (0 outside loops).
    pub fn has_output(&self, node: &str, iteration: u32) -> bool {
        self.position(node, iteration).is_ok()
    }

    /// Where `(node, iteration)` is, or would be inserted, in `outputs`.
    fn position(&self, node: &str, iteration: u32) -> Result<usize, usize> {
        self.outputs
            .binary_search_by(|(id, it, _)| (id.as_str(), *it).cmp(&(node, iteration)))
    }

    /// The current iteration of the loop `loop_id` (0 before it starts).
    pub fn iteration(&self, loop_id: &str) -> u32 {
        self.loops
            .iter()
            .find(|(id, _)| id == loop_id)
            .map_or(0, |(_, iteration)| *iteration)
    }

    /// Who started the run (`{"triggeredBy","role","scopes"}`), when the host knows.
    pub fn auth(&self) -> Option<&Value> {
        self.auth.as_ref()
    }
}

fn decode_output<T: DeserializeOwned>(
    node: &str,
    iteration: u32,
    text: &str,
) -> Result<T, TaskError> {
    serde_json::from_str(text).map_err(|err| TaskError::invalid_output(node, iteration, &err))
}

/// What a task sees: the state it was scheduled from, its node id, loop iteration and
/// attempt.
#[derive(Debug, Clone)]
pub struct TaskCtx {
    ctx: Ctx,
    node_id: String,
    iteration: u32,
    attempt: u32,
}

impl TaskCtx {
    /// The context of attempt `attempt` (from 1) of `node_id` at loop iteration `iteration`
    /// (0 outside loops), scheduled from `ctx`. The host builds these; build one yourself to
    /// test a task natively.
    pub fn new(ctx: Ctx, node_id: impl Into<String>, iteration: u32, attempt: u32) -> Self {
        TaskCtx {
            ctx,
            node_id: node_id.into(),
            iteration,
            attempt,
        }
    }

    /// The run input, decoded as `T` (see [`Ctx::input`]).
    pub fn input<T: DeserializeOwned>(&self) -> Result<T, TaskError> {
        self.ctx.input()
    }

    /// The output of `node` at `iteration`, decoded as `T` (see [`Ctx::output`]).
    pub fn output<T: DeserializeOwned>(&self, node: &str, iteration: u32) -> Result<T, TaskError> {
        self.ctx.output(node, iteration)
    }

    /// The output of `node` at its highest iteration, decoded as `T` (see [`Ctx::latest`]).
    pub fn latest<T: DeserializeOwned>(&self, node: &str) -> Result<T, TaskError> {
        self.ctx.latest(node)
    }

    /// The loop iteration this task runs in (0 outside loops).
    pub fn iteration(&self) -> u32 {
        self.iteration
    }

    /// The attempt number, from 1.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The run id.
    pub fn run_id(&self) -> &str {
        self.ctx.run_id()
    }

    /// The id of the task being run.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The render context the task was scheduled from (loop iterations, auth, ...).
    pub fn render_ctx(&self) -> &Ctx {
        &self.ctx
    }
}

/// The output of an [`approval`](crate::approval) node once someone decided.
///
/// ```
/// use smithers_sdk::{ApprovalDecision, Ctx, serde_json::json};
///
/// let ctx = Ctx::new(json!({}))
///     .with_output("gate", 0, json!({"approved": true, "note": null, "decidedBy": "ada"}));
/// let decision: ApprovalDecision = ctx.latest("gate").unwrap();
/// assert!(decision.approved);
/// assert_eq!(decision.decided_by.as_deref(), Some("ada"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalDecision {
    /// Approved (true) or denied (false).
    pub approved: bool,
    /// The note given with the decision.
    #[serde(default)]
    pub note: Option<String>,
    /// Who decided, when known.
    #[serde(default)]
    pub decided_by: Option<String>,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Input {
        #[serde(default)]
        name: Option<String>,
    }

    #[test]
    fn missing_input_decodes_like_an_empty_object() {
        for text in ["", "null"] {
            let ctx = Ctx::from_wire("r".into(), text.into(), [], [], None);
            assert_eq!(ctx.input::<Input>().unwrap(), Input { name: None });
            assert_eq!(ctx.input::<Option<u32>>().unwrap(), None);
        }
    }

    #[test]
    fn input_of_the_wrong_shape_is_invalid_input() {
        let err = Ctx::new(json!({"name": 3})).input::<Input>().unwrap_err();
        assert_eq!(err.code, "INVALID_INPUT");
        assert!(!err.retryable);
    }

    #[test]
    fn latest_is_the_highest_iteration() {
        let ctx = Ctx::from_wire(
            "r".into(),
            "{}".into(),
            [
                ("d".into(), 2, "20".into()),
                ("d".into(), 10, "100".into()),
                ("d".into(), 0, "0".into()),
            ],
            [("l".into(), 10)],
            None,
        );
        assert_eq!(ctx.latest::<u32>("d").unwrap(), 100);
        assert_eq!(ctx.output::<u32>("d", 2).unwrap(), 20);
        assert!(ctx.has_output("d", 0));
        assert!(!ctx.has_output("d", 1));
        assert_eq!(ctx.iteration("l"), 10);
        assert_eq!(ctx.iteration("other"), 0);
    }

    #[test]
    fn absent_and_malformed_outputs_are_distinct_errors() {
        let ctx = Ctx::new(json!({})).with_output("a", 0, json!("text"));
        assert_eq!(
            ctx.output::<u32>("a", 1).unwrap_err().code,
            "MISSING_OUTPUT"
        );
        assert_eq!(ctx.latest::<u32>("b").unwrap_err().code, "MISSING_OUTPUT");
        let err = ctx.latest::<u32>("a").unwrap_err();
        assert_eq!(err.code, "INVALID_OUTPUT");
        assert!(err.message.contains("`a` (iteration 0)"), "{}", err.message);
    }

    #[test]
    fn auth_that_is_not_json_reads_as_unknown() {
        let ctx = Ctx::from_wire("r".into(), "{}".into(), [], [], Some("{oops".into()));
        assert!(ctx.auth().is_none());
        let ctx = Ctx::from_wire(
            "r".into(),
            "{}".into(),
            [],
            [],
            Some(r#"{"role":"x"}"#.into()),
        );
        assert_eq!(ctx.auth(), Some(&json!({"role": "x"})));
    }
}
