//! The run input format: a tree of node specs (see README.md). Unknown fields are errors, so
//! a typo in a host test fails the render loudly instead of being ignored.

use std::collections::BTreeMap;

use smithers_sdk::serde::Deserialize;
use smithers_sdk::serde_json::Value;

/// The whole run input.
#[derive(Debug, Deserialize)]
#[serde(crate = "smithers_sdk::serde", deny_unknown_fields)]
pub struct Script {
    pub root: Spec,
}

/// One node.
#[derive(Debug, Deserialize)]
#[serde(crate = "smithers_sdk::serde", rename_all = "camelCase")]
pub enum Spec {
    Task(Box<TaskSpec>),
    Sequence(Vec<Spec>),
    Parallel(ParallelSpec),
    Loop(LoopSpec),
    Approval(ApprovalSpec),
    Signal(SignalSpec),
    If(Box<IfSpec>),
    AppendSequence(AppendSequenceSpec),
    RenderSpin(bool),
}

#[derive(Debug, Deserialize)]
#[serde(crate = "smithers_sdk::serde", deny_unknown_fields)]
pub struct ParallelSpec {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub max: Option<u32>,
    pub children: Vec<Spec>,
}

#[derive(Debug, Deserialize)]
#[serde(
    crate = "smithers_sdk::serde",
    rename_all = "camelCase",
    deny_unknown_fields
)]
pub struct LoopSpec {
    pub id: String,
    #[serde(default = "five")]
    pub max: u32,
    #[serde(default)]
    pub on_max: OnMaxSpec,
    #[serde(default)]
    pub until_node: Option<String>,
    #[serde(default)]
    pub until_path: String,
    #[serde(default = "json_true")]
    pub until_equals: Value,
    pub children: Vec<Spec>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(crate = "smithers_sdk::serde", rename_all = "kebab-case")]
pub enum OnMaxSpec {
    #[default]
    ReturnLast,
    Fail,
}

#[derive(Debug, Deserialize)]
#[serde(
    crate = "smithers_sdk::serde",
    rename_all = "camelCase",
    deny_unknown_fields
)]
pub struct ApprovalSpec {
    pub id: String,
    #[serde(default)]
    pub on_deny: OnDenySpec,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub summary: Option<String>,
    #[serde(default)]
    pub allowed_scopes: Vec<String>,
    #[serde(default)]
    pub allowed_users: Vec<String>,
    #[serde(default)]
    pub meta: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(crate = "smithers_sdk::serde", rename_all = "kebab-case")]
pub enum OnDenySpec {
    #[default]
    Fail,
    Continue,
    Skip,
}

#[derive(Debug, Deserialize)]
#[serde(crate = "smithers_sdk::serde", deny_unknown_fields)]
pub struct SignalSpec {
    pub id: String,
    pub name: String,
}

#[derive(Debug, Deserialize)]
#[serde(crate = "smithers_sdk::serde", deny_unknown_fields)]
pub struct IfSpec {
    pub node: String,
    #[serde(default)]
    pub path: String,
    #[serde(default = "json_true")]
    pub equals: Value,
    pub then: Spec,
    #[serde(default, rename = "else")]
    pub otherwise: Option<Spec>,
}

#[derive(Debug, Deserialize)]
#[serde(
    crate = "smithers_sdk::serde",
    rename_all = "camelCase",
    deny_unknown_fields
)]
pub struct AppendSequenceSpec {
    pub count: u32,
    pub path: String,
    #[serde(default)]
    pub sleep_ms: u64,
    #[serde(default = "step_prefix")]
    pub id_prefix: String,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(crate = "smithers_sdk::serde", rename_all = "kebab-case")]
pub enum BackoffSpec {
    Fixed,
    Linear,
    Exponential,
}

/// A task: its options, then its behaviours in the order they run.
#[derive(Debug, Default, Deserialize)]
#[serde(
    crate = "smithers_sdk::serde",
    rename_all = "camelCase",
    deny_unknown_fields,
    default
)]
pub struct TaskSpec {
    pub id: String,

    pub retries: Option<u32>,
    pub backoff: Option<BackoffSpec>,
    pub initial_delay_ms: Option<u64>,
    pub timeout_ms: Option<u64>,
    pub continue_on_fail: bool,
    pub skip: bool,
    pub label: Option<String>,
    pub meta: Option<Value>,

    pub repeat: Option<u32>,
    pub stdout: Option<String>,
    pub stderr: Option<String>,
    pub emit: Option<Value>,
    pub log: Option<String>,
    pub append_line: Option<AppendLineSpec>,
    pub sleep_ms: Option<u64>,
    pub fail_attempts: Option<u32>,
    pub fail: Option<String>,
    pub not_retryable: bool,
    pub spin: bool,
    pub alloc_mb: Option<u64>,
    pub alloc_forever: bool,
    pub recurse: bool,
    pub panic: Option<String>,
    pub read_file: Option<String>,
    pub write_file: Option<WriteFileSpec>,
    pub symlink: Option<SymlinkSpec>,
    pub list_dir: Option<String>,
    pub env: bool,
    pub bash: Option<BashSpec>,
    pub echo_outputs: Option<Vec<String>>,
    pub echo_auth: bool,
    pub output: Option<Value>,
    pub done_at_iteration: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(
    crate = "smithers_sdk::serde",
    rename_all = "camelCase",
    deny_unknown_fields
)]
pub struct AppendLineSpec {
    pub path: String,
    #[serde(default)]
    pub line: Option<String>,
    #[serde(default)]
    pub with_attempt: bool,
}

#[derive(Debug, Deserialize)]
#[serde(crate = "smithers_sdk::serde", deny_unknown_fields)]
pub struct WriteFileSpec {
    pub path: String,
    pub content: String,
}

#[derive(Debug, Deserialize)]
#[serde(crate = "smithers_sdk::serde", deny_unknown_fields)]
pub struct SymlinkSpec {
    pub target: String,
    pub link: String,
}

#[derive(Debug, Deserialize)]
#[serde(
    crate = "smithers_sdk::serde",
    rename_all = "camelCase",
    deny_unknown_fields
)]
pub struct BashSpec {
    pub command: String,
    #[serde(default)]
    pub cwd: Option<String>,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    #[serde(default)]
    pub max_output_bytes: Option<u64>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

fn five() -> u32 {
    5
}

fn json_true() -> Value {
    Value::Bool(true)
}

fn step_prefix() -> String {
    "step-".to_owned()
}
