//! smithers-host: a durable workflow runtime whose workflows are WebAssembly
//! components, confined to a project directory and driven over HTTP.
//!
//! Crate map (dependencies point downwards):
//! - [`cli`]: the `smithers-host` command line (thin; parses and delegates).
//! - [`http`]: server mode, the Smithers-compatible HTTP API.
//! - [`gateway`]: the multi-workflow control plane (RPC, WebSocket, cron,
//!   webhooks, roles and scopes).
//! - [`engine`]: runs workflows durably (render → schedule → run → commit).
//! - [`runtime`]: wasmtime engine, component cache, host tools, guest builds.
//! - [`store`]: the SQLite database; the only module with SQL.
//! - [`sandbox`]: what a workflow may touch (WASI context, confined bash).
//! - [`model`]: identities, states and events shared by every layer.
//! - [`state_dir`]: where the host keeps its own files, outside the root dir.

pub mod app;
pub mod cli;
pub mod engine;
pub mod gateway;
pub mod http;
pub mod model;
pub mod runtime;
pub mod sandbox;
pub mod state_dir;
pub mod store;
