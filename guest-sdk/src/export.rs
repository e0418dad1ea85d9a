//! The only place that knows wit-bindgen: the generated bindings of `wit/workflow.wit` (the
//! package's own copy, so the crate builds wherever it is unpacked) and of `wasi:http`'s
//! outgoing handler (for [`tools::http`](crate::tools::http)), and
//! the three functions the [`workflow!`](crate::workflow) expansion delegates the world's
//! exports to. They translate between the wire types and the SDK's own, and nothing more:
//! every rule lives in the pure-Rust core.
//!
//! Public only so that the macro expansion in the author's crate can reach it; not API.

/// Generated bindings of the `smithers:workflow` world.
#[allow(clippy::too_many_arguments)] // the generated canonical-ABI adapters
pub mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "workflow",
        pub_export_macro: true,
        default_bindings_module: "smithers_sdk::__private::bindings",
    });
}

/// Generated bindings of `wasi:http/outgoing-handler` (the SDK's `wit-http/`: its world and
/// the WASI packages it needs, copied from the host's wasmtime-wasi-http; apart from the
/// workflow world so that each WIT root holds one package). Only what a task calls ends up
/// imported by the component.
#[cfg(target_arch = "wasm32")]
#[allow(clippy::too_many_arguments)] // the generated canonical-ABI adapters
pub mod http_bindings {
    wit_bindgen::generate!({
        path: "wit-http",
        world: "smithers:sdk/http-client",
        generate_all,
    });
}

pub use smithers_sdk_macros::workflow_impl;

use bindings::smithers::workflow::types as wit;

use crate::flat::{FlatKind, FlatNode};
use crate::node::{
    ApprovalOptions, Backoff, BuildOutput, LoopOptions, OnDeny, OnMaxReached, TaskOptions,
};
use crate::{Ctx, TaskCtx, TaskError};

/// `describe`: what the author wrote in `workflow!`; the schema comes from `input_schema` (a
/// string the author wrote) or from [`input_schema`] (derived from `input: Type`).
pub fn describe(name: &str, version: &str, input_schema: Option<String>) -> wit::WorkflowInfo {
    wit::WorkflowInfo {
        name: name.to_owned(),
        version: version.to_owned(),
        input_schema,
    }
}

/// [`crate::input_schema`] as JSON text: what `workflow!`'s `input: T` puts in `describe`.
pub fn input_schema<T: schemars::JsonSchema>() -> String {
    crate::input_schema::<T>().to_string()
}

/// `render`: builds the tree for this context and flattens it.
pub fn render<B: BuildOutput>(
    build: impl Fn(&Ctx) -> B,
    ctx: wit::RenderContext,
) -> Result<Vec<wit::Node>, String> {
    let ctx = ctx_from_wire(ctx);
    let nodes = build(&ctx).into_root()?.render(&ctx)?;
    Ok(nodes.into_iter().map(node_to_wire).collect())
}

/// `run-task`: builds the tree from the task's render context and runs the task's closure.
pub fn run_task<B: BuildOutput>(
    build: impl Fn(&Ctx) -> B,
    ctx: wit::TaskContext,
) -> Result<String, wit::TaskError> {
    let ctx = TaskCtx::new(
        ctx_from_wire(ctx.render),
        ctx.node_id,
        ctx.iteration,
        ctx.attempt,
    );
    build(ctx.render_ctx())
        .into_root()
        .map_err(|message| {
            TaskError::new(format!("the workflow failed to build: {message}"))
                .code("RENDER_FAILED")
                .not_retryable()
        })
        .and_then(|root| root.run_task_json(&ctx))
        .map_err(error_to_wire)
}

fn ctx_from_wire(ctx: wit::RenderContext) -> Ctx {
    Ctx::from_wire(
        ctx.run_id,
        ctx.input,
        ctx.outputs
            .into_iter()
            .map(|o| (o.node_id, o.iteration, o.value)),
        ctx.loops.into_iter().map(|l| (l.loop_id, l.iteration)),
        ctx.auth,
    )
}

fn error_to_wire(err: TaskError) -> wit::TaskError {
    wit::TaskError {
        code: err.code,
        message: err.message,
        retryable: err.retryable,
        details: err.details.map(|details| details.to_string()),
    }
}

fn node_to_wire(node: FlatNode) -> wit::Node {
    let kind = match node.kind {
        FlatKind::Task(options) => wit::NodeKind::Task(task_options(options)),
        FlatKind::Approval(options) => wit::NodeKind::Approval(approval_options(options)),
        FlatKind::WaitForSignal(signal) => wit::NodeKind::WaitForSignal(signal),
        FlatKind::Sequence => wit::NodeKind::Sequence,
        FlatKind::Parallel(max) => wit::NodeKind::Parallel(max),
        FlatKind::Loop(options) => wit::NodeKind::Loop(loop_options(options)),
    };
    wit::Node {
        id: node.id,
        parent: node.parent,
        kind,
    }
}

fn task_options(o: TaskOptions) -> wit::TaskOptions {
    wit::TaskOptions {
        retries: o.retries,
        backoff: match o.backoff {
            Backoff::Fixed => wit::Backoff::Fixed,
            Backoff::Linear => wit::Backoff::Linear,
            Backoff::Exponential => wit::Backoff::Exponential,
        },
        initial_delay_ms: o.initial_delay_ms,
        timeout_ms: o.timeout_ms,
        continue_on_fail: o.continue_on_fail,
        skip: o.skip,
        label: o.label,
        meta: o.meta.map(|meta| meta.to_string()),
    }
}

fn approval_options(o: ApprovalOptions) -> wit::ApprovalOptions {
    wit::ApprovalOptions {
        title: o.title,
        summary: o.summary,
        on_deny: match o.on_deny {
            OnDeny::Fail => wit::OnDeny::Fail,
            OnDeny::Continue => wit::OnDeny::Continue,
            OnDeny::Skip => wit::OnDeny::Skip,
        },
        allowed_scopes: o.allowed_scopes,
        allowed_users: o.allowed_users,
        meta: o.meta.map(|meta| meta.to_string()),
    }
}

fn loop_options(o: LoopOptions) -> wit::LoopOptions {
    wit::LoopOptions {
        max_iterations: o.max_iterations,
        until: o.until,
        on_max_reached: match o.on_max_reached {
            OnMaxReached::ReturnLast => wit::OnMaxReached::ReturnLast,
            OnMaxReached::Fail => wit::OnMaxReached::Fail,
        },
    }
}
