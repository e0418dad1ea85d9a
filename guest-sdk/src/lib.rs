//! Write durable smithers workflows in Rust.
//!
//! A workflow is a function from the run's state ([`Ctx`]) to a tree of nodes ([`Node`]):
//! tasks whose bodies are Rust closures, sequences, parallel groups, loops, approvals and
//! waits for signals. [`workflow!`] exports it as a WebAssembly component that the smithers
//! host runs durably: every committed output is stored, a crashed or resumed run picks up
//! where it stopped, and a task that finished is never run again.
//!
//! ```
//! use smithers_sdk::serde_json::{json, Value};
//! use smithers_sdk::{Ctx, Node, TaskCtx, approval, sequence, task};
//!
//! fn build(_ctx: &Ctx) -> Node {
//!     sequence([
//!         task("greet", |t| {
//!             let input: Value = t.input()?;
//!             let name = input["name"].as_str().unwrap_or("world");
//!             Ok(json!({ "greeting": format!("Hello, {name}!") }))
//!         }),
//!         approval("ok").title("Was the greeting nice?"),
//!     ])
//! }
//!
//! smithers_sdk::workflow!(name: "hello", build: build);
//!
//! // A workflow can be tested natively, the way the host drives it:
//! let ctx = Ctx::new(json!({ "name": "Ada" }));
//! let nodes = build(&ctx).render(&ctx)?;
//! assert_eq!(nodes.iter().map(|n| n.id.as_str()).collect::<Vec<_>>(), ["$seq:0", "greet", "ok"]);
//! let output = build(&ctx).run_task(&TaskCtx::new(ctx, "greet", 0, 1))?;
//! assert_eq!(output, json!({ "greeting": "Hello, Ada!" }));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Build the crate (`crate-type = ["cdylib"]`) with `cargo build --release --target
//! wasm32-wasip2` and give the host the `.wasm` file.
//!
//! # How the host uses the tree
//!
//! * **`render` may run any number of times** and must be a deterministic function of its
//!   [`Ctx`]: the run input, the outputs committed so far and the current loop iterations.
//!   Branches are plain `if`s on that state; a node that is absent from the tree is not run.
//!   Do not read files, clocks or randomness in the build function.
//! * **Ids are the identity of work.** Outputs are stored under `(node id, iteration)` and
//!   survive resumes and new versions of the workflow, so keep task ids stable. Sequences and
//!   parallel groups get ids from their position (`$seq:0.1`) unless given one with
//!   [`Node::id`]; ids starting with `$` are reserved.
//! * **A task runs in a fresh instance.** The host rebuilds the tree from the render context
//!   the task was scheduled from and calls the closure of that id; the closure's value
//!   (anything [`serde::Serialize`]) becomes the output. Failures are [`TaskError`]s; a
//!   **panic traps** the instance and the host records the attempt as failed (and retries it
//!   if [`Node::retries`] allows).
//! * **Loops** ([`loop_`]) run their body once per iteration; outputs inside a loop are keyed
//!   by its iteration ([`TaskCtx::iteration`], [`Ctx::latest`]). Loops do not nest in this
//!   version.
//! * **An approval's output** is `{"approved": bool, "note": string|null, "decidedBy":
//!   string|null}` ([`ApprovalDecision`]); **a wait-for-signal's output** is the signal's
//!   payload.
//! * Tasks reach the outside world through WASI (a filesystem holding only the project's root
//!   directory, preopened at `/`; relative paths resolve from it; clocks; random; stdout and
//!   stderr go to the run's log) and through [`tools`] (confined `bash`, `log`, `emit`,
//!   HTTP through the host's policy with [`tools::http`], the placeholders of the operator's
//!   secrets with [`tools::secret`]). There are no sockets and no environment but those
//!   placeholders.
//!
//! # Typed input and outputs
//!
//! [`Ctx::input`], [`Ctx::output`] and [`Ctx::latest`] decode into any
//! [`serde::de::DeserializeOwned`] type; a value of the wrong shape is an `INVALID_INPUT` or
//! `INVALID_OUTPUT` error, never a panic. The SDK re-exports `serde` and `serde_json`, so a
//! workflow depends on this crate alone; derives then need to be told where serde is:
//!
//! ```
//! use smithers_sdk::serde::{Deserialize, Serialize};
//!
//! #[derive(Deserialize, Serialize)]
//! #[serde(crate = "smithers_sdk::serde")]
//! struct Plan {
//!     plan: String,
//!     steps: u32,
//! }
//! ```
//!
//! # The input schema
//!
//! Give [`workflow!`] the run input's type (`input: Input`) and the workflow describes itself
//! with that type's JSON Schema, derived by [`schemars`] (re-exported too): the host lists it
//! (`GET /v1/workflows`) and refuses a run whose input does not match it (`400
//! INVALID_INPUT` with the JSON pointer of the offending value) before anything runs. The
//! schema follows the serde attributes, so a field with a default is optional:
//!
//! ```
//! use smithers_sdk::schemars::JsonSchema;
//! use smithers_sdk::serde::Deserialize;
//! use smithers_sdk::{Ctx, Node, task};
//!
//! #[derive(Deserialize, JsonSchema)]
//! #[serde(crate = "smithers_sdk::serde")]
//! #[schemars(crate = "smithers_sdk::schemars")]
//! struct Input {
//!     /// Who to greet.
//!     name: String,
//!     #[serde(default)]
//!     times: u32,
//! }
//!
//! fn build(_ctx: &Ctx) -> Node {
//!     task("greet", |t| {
//!         let input: Input = t.input()?;
//!         Ok(format!("Hello, {}! x{}", input.name, input.times))
//!     })
//! }
//!
//! smithers_sdk::workflow!(name: "greet", build: build, input: Input);
//!
//! // What `describe` reports, to look at in a native test:
//! let schema = smithers_sdk::input_schema::<Input>();
//! assert_eq!(schema["required"], smithers_sdk::serde_json::json!(["name"]));
//! assert_eq!(schema["properties"]["name"]["type"], "string");
//! ```

#![deny(missing_docs)]

mod context;
mod error;
mod flat;
mod node;
pub mod tools;

#[doc(hidden)]
#[path = "export.rs"]
pub mod __private;

pub use context::{ApprovalDecision, Ctx, TaskCtx};
pub use error::TaskError;
pub use flat::{FlatKind, FlatNode};
pub use node::{
    ApprovalOptions, Backoff, BuildOutput, LoopOptions, Node, OnDeny, OnMaxReached, TaskOptions,
    approval, loop_, parallel, sequence, task, wait_for_signal,
};
pub use schemars;
pub use serde;
pub use serde_json;

/// The JSON Schema (draft 2020-12) of the input type `T`, as [`workflow!`]'s `input: T`
/// reports it from `describe`.
pub fn input_schema<T: schemars::JsonSchema>() -> serde_json::Value {
    schemars::schema_for!(T).to_value()
}

/// Exports a workflow: `workflow!(name: "...", build: build_fn)`.
///
/// * `name` (required): a string literal, the workflow's name as the host reports it.
/// * `build` (required): a function `fn(&Ctx) -> Node` or `fn(&Ctx) -> Result<Node, E>` with
///   `E: Display` (an error fails the render with that message).
/// * `version` (optional): a `&str` expression; defaults to the crate's
///   `CARGO_PKG_VERSION`.
/// * `input` (optional): the run input's type, deriving [`schemars::JsonSchema`]; `describe`
///   reports its JSON Schema and the host validates every run's input against it (see "The
///   input schema" above).
/// * `input_schema` (optional, instead of `input`): a `&str` expression holding a JSON Schema
///   of the run input, written by hand; a string literal is checked to be JSON at compile time.
///
/// Use it once per crate, at the top level. The crate must be a `cdylib` built for
/// `wasm32-wasip2`; it also compiles natively, so that `cargo test` can test the workflow.
///
/// ```
/// use smithers_sdk::{Ctx, Node, TaskError, task};
///
/// fn build(ctx: &Ctx) -> Result<Node, TaskError> {
///     let times: u32 = ctx.input()?;
///     Ok(task("count", move |_| Ok(times * 2)))
/// }
///
/// smithers_sdk::workflow!(
///     name: "count",
///     build: build,
///     version: "2.1.0",
///     input_schema: r#"{"type": "integer"}"#,
/// );
/// ```
#[macro_export]
macro_rules! workflow {
    ($($args:tt)*) => {
        $crate::__private::workflow_impl! { [$crate] $($args)* }
    };
}
