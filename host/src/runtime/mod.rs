//! Executing workflow components with wasmtime.
//!
//! One [`Runtime`] owns the wasmtime `Engine` (configured once: async, epoch
//! interruption, pooling allocator), the `Linker` (WASI without sockets,
//! `wasi:http`'s outgoing handler behind the operator's policy — see
//! `http/` — plus our `tools`) and the compiled-component cache. Every `describe`, `render`
//! and `run-task` call gets a fresh `Store` instantiated from a cached
//! `InstancePre`, with a memory limit and its own WASI context: no state leaks
//! between calls, and a guest that traps, loops or exhausts memory only fails
//! its own call. Every call has a deadline and every byte a guest sends back
//! is bounded by [`GuestLimits`] (see `limits.rs`).
//!
//! The runtime knows nothing about runs or the database: task-side events
//! (output, tool calls) leave through a channel the engine provides.

mod bindings;
pub mod build;
mod cache;
mod deadline;
mod errors;
pub mod http;
mod limits;
pub mod schema;
mod tools;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

pub use bindings::types::{
    ApprovalOptions, Backoff, LoopOptions, LoopState, Node, NodeKind, OnDeny, OnMaxReached, Output,
    RenderContext, TaskContext, TaskError, TaskOptions, WorkflowInfo,
};
pub use cache::{CacheStats, LoadSource};
pub(crate) use errors::escaped_prefix;
pub use errors::{GuestFault, LoadError};
pub use http::{CallJournal, JournalFuture, RecordedCall};
pub use limits::{GuestLimits, LimitExceeded, OUTPUT_LIMIT_EXCEEDED, OutputBudget};
pub use schema::{InputSchema, InputViolation};

use crate::model::{ComponentHash, EventBody};
use crate::sandbox::SandboxPolicy;
use crate::sandbox::wasi::CapturedOutput;
use deadline::{Call, with_deadline};
use errors::{clipped, fault_of};
use limits::{GuestLimiter, bounded_task_error, charge_output};

/// Linear memory kept mapped between instances of a pooled slot.
const RESIDENT_MEMORY_BYTES: usize = 8 * 1024 * 1024;

/// Interval of the epoch clock: the granularity of preemption and timeouts.
const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Default bound of a component's size (a Python component is ~18 MB).
pub const DEFAULT_MAX_COMPONENT_BYTES: u64 = 64 << 20;
/// The binary format's magic; the text format is not accepted.
const WASM_MAGIC: &[u8; 4] = b"\0asm";

/// Tunables of the runtime. `Default` is what `smithers-host` ships with.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Linear memory limit of one instance.
    pub max_memory_bytes: u64,
    /// Deadlines and output caps of guest calls.
    pub limits: GuestLimits,
    /// Use the pooling instance allocator (fast instantiation).
    pub pooling: bool,
    /// Where compiled components are cached on disk (`None`: memory only).
    pub cache_dir: Option<PathBuf>,
    /// Compiled components kept in memory.
    pub memory_cache_entries: usize,
    /// Most instances alive at once (pooling allocator capacity).
    pub max_instances: u32,
    /// Largest component accepted (files and build output alike).
    pub max_component_bytes: u64,
    /// The operator's outbound HTTP policy (closed by default).
    pub http: Arc<http::HttpPolicy>,
    /// The operator's secrets (none by default): placeholders for guests,
    /// values only in requests to where they are bound.
    pub secrets: Arc<http::Secrets>,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            max_memory_bytes: 256 * 1024 * 1024,
            limits: GuestLimits::default(),
            pooling: true,
            cache_dir: None,
            memory_cache_entries: 64,
            max_instances: 1000,
            max_component_bytes: DEFAULT_MAX_COMPONENT_BYTES,
            http: Arc::new(http::HttpPolicy::default()),
            secrets: Arc::new(http::Secrets::default()),
        }
    }
}

/// A loaded, instantiable workflow version.
pub struct Workflow {
    /// Content hash.
    pub hash: ComponentHash,
    /// What `describe()` returned.
    pub info: WorkflowInfo,
    /// `info.input_schema`, compiled: every run's input is checked against it.
    pub input_schema: Option<InputSchema>,
    pre: bindings::WorkflowPre<HostState>,
}

/// A workflow as returned by [`Runtime::load`], with where it came from.
pub struct Loaded {
    /// The workflow.
    pub workflow: Arc<Workflow>,
    /// Memory, disk or a fresh compile.
    pub source: LoadSource,
    /// Time spent compiling or deserializing.
    pub compile_ms: u64,
}

/// What a task call needs beyond its context.
pub struct TaskEnv {
    /// Directory preopened at `/`.
    pub root_dir: PathBuf,
    /// Policy of the bash tool.
    pub sandbox: Arc<SandboxPolicy>,
    /// Where `NodeOutput` / `ToolCall*` events go.
    pub events: UnboundedSender<EventBody>,
    /// Stops the call (and any tool it runs) when triggered.
    pub cancel: CancellationToken,
    /// Wall-clock limit of the call (see [`GuestLimits::task_deadline`]).
    pub timeout: Duration,
    /// What the run may still store; `emit`, `log`, captured output and
    /// the task's output are charged to it.
    pub budget: Arc<OutputBudget>,
    /// Node, iteration, attempt and run id for event attribution.
    pub node_id: String,
    /// Loop iteration.
    pub iteration: u32,
    /// Attempt number.
    pub attempt: u32,
    /// Run id (for tool call ids and logs).
    pub run_id: String,
    /// Where the attempt's outbound HTTP calls are journaled for replay.
    pub journal: Arc<dyn CallJournal>,
}

/// Per-store host state.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: GuestLimiter,
    tools: Option<tools::ToolContext>,
    http: http::HttpState,
}

impl wasmtime_wasi_http::WasiHttpView for HostState {
    fn http(&mut self) -> wasmtime_wasi_http::WasiHttpCtxView<'_> {
        wasmtime_wasi_http::WasiHttpCtxView {
            ctx: &mut self.http.ctx,
            table: &mut self.table,
            hooks: &mut self.http.hooks,
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// The wasmtime engine, linker and component cache.
pub struct Runtime {
    engine: Engine,
    linker: Linker<HostState>,
    cache: cache::ComponentCache,
    config: RuntimeConfig,
    ticker_stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Runtime {
    /// Builds the engine (falling back from the pooling allocator to on-demand
    /// allocation if the machine refuses its reservations) and the linker.
    pub fn new(config: RuntimeConfig) -> wasmtime::Result<Self> {
        let engine = match Engine::new(&engine_config(&config, config.pooling)) {
            Ok(engine) => engine,
            Err(e) if config.pooling => {
                tracing::warn!(error = %e, "pooling allocator unavailable, using on-demand allocation");
                Engine::new(&engine_config(&config, false))?
            }
            Err(e) => return Err(e),
        };
        let mut linker = Linker::<HostState>::new(&engine);
        add_wasi_without_sockets(&mut linker)?;
        http::add_to_linker(&mut linker)?;
        bindings::Workflow::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)?;
        let ticker_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        spawn_epoch_ticker(engine.clone(), ticker_stop.clone());
        let cache = cache::ComponentCache::new(
            config.memory_cache_entries,
            config.cache_dir.clone(),
            &engine,
        );
        Ok(Self {
            engine,
            linker,
            cache,
            config,
            ticker_stop,
        })
    }

    /// The runtime's configuration.
    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    /// The outbound HTTP policy and the secrets' names and bindings (never
    /// their values), as `/health` shows them.
    pub fn http_summary(&self) -> serde_json::Value {
        let mut summary = serde_json::to_value(self.config.http.summary()).unwrap_or_default();
        summary["secrets"] =
            serde_json::to_value(self.config.secrets.summary()).unwrap_or_default();
        summary
    }

    /// Cache hit/miss counters.
    pub fn cache_stats(&self) -> CacheStats {
        self.cache.stats()
    }

    /// Loads the component with these bytes: from memory, from the disk cache
    /// or by compiling it; checks its imports and exports and calls
    /// `describe`. Concurrent loads of one new hash compile it once.
    pub async fn load(&self, bytes: Vec<u8>) -> Result<Loaded, LoadError> {
        let limit = self.config.max_component_bytes;
        if bytes.len() as u64 > limit {
            return Err(LoadError::TooLarge {
                size: bytes.len() as u64,
                limit,
            });
        }
        if !bytes.starts_with(WASM_MAGIC) {
            return Err(LoadError::Invalid(
                "not a WebAssembly binary (it does not start with \\0asm; the text format is \
                 not accepted)"
                    .into(),
            ));
        }
        let hash = ComponentHash::of(&bytes);
        let (component, source, compile_ms) = self.cache.get_or_compile(&hash, bytes).await?;
        if let Some(workflow) = self.cache.loaded(&hash) {
            return Ok(Loaded {
                workflow,
                source,
                compile_ms,
            });
        }
        let workflow = Arc::new(self.prepare(hash.clone(), &component).await?);
        self.cache.remember_loaded(&hash, workflow.clone());
        Ok(Loaded {
            workflow,
            source,
            compile_ms,
        })
    }

    async fn prepare(
        &self,
        hash: ComponentHash,
        component: &Component,
    ) -> Result<Workflow, LoadError> {
        let instance_pre = self.linker.instantiate_pre(component).map_err(|e| {
            LoadError::UnsatisfiedImport(clipped(format!(
                "the component needs something this host does not provide \
                 (workflows get WASI files, clocks, random numbers and wasi:http's \
                 outgoing handler, and no sockets): {e:#}"
            )))
        })?;
        let pre = bindings::WorkflowPre::new(instance_pre).map_err(|e| {
            LoadError::MissingExports(clipped(format!(
                "the component does not implement the smithers:workflow world \
                 (exports describe, render, run-task): {e:#}"
            )))
        })?;
        let mut workflow = Workflow {
            hash,
            info: WorkflowInfo {
                name: String::new(),
                version: String::new(),
                input_schema: None,
            },
            input_schema: None,
            pre,
        };
        let (mut store, _out) = self.render_store();
        let result = with_deadline(
            Call::Describe,
            self.config.limits.render_timeout,
            &CancellationToken::new(),
            async {
                let instance = workflow.pre.instantiate_async(&mut store).await?;
                instance.call_describe(&mut store).await
            },
        )
        .await;
        workflow.info = match result {
            Ok(Ok(info)) => info,
            Ok(Err(e)) => return Err(LoadError::Describe(clipped(fault_of(&e, &store).message))),
            Err(fault) => return Err(LoadError::Describe(clipped(fault.message))),
        };
        // A schema that cannot check anything is the author's bug: refuse the
        // component, as for a describe that fails, rather than run unchecked.
        if let Some(text) = &workflow.info.input_schema {
            let schema = InputSchema::compile(text).map_err(|e| LoadError::Describe(clipped(e)))?;
            workflow.input_schema = Some(schema);
        }
        Ok(workflow)
    }

    fn render_store(&self) -> (Store<HostState>, (CapturedOutput, CapturedOutput)) {
        let stdout = CapturedOutput::new(self.config.limits.max_stdio_bytes);
        let stderr = CapturedOutput::new(self.config.limits.max_stdio_bytes);
        let wasi = crate::sandbox::wasi::render_context(&stdout, &stderr);
        let http = http::HttpState::closed(self.config.http.clone(), self.config.secrets.clone());
        (self.new_store(wasi, None, http), (stdout, stderr))
    }

    fn new_store(
        &self,
        wasi: WasiCtx,
        tools: Option<tools::ToolContext>,
        http: http::HttpState,
    ) -> Store<HostState> {
        let mut store = Store::new(
            &self.engine,
            HostState {
                wasi,
                table: ResourceTable::new(),
                limiter: GuestLimiter::new(self.config.max_memory_bytes),
                tools,
                http,
            },
        );
        store.limiter(|state| &mut state.limiter);
        // Every epoch tick the guest yields to the async executor: a busy loop
        // cannot starve other runs, and deadlines (enforced by dropping the
        // call's future) are observed within one tick.
        store.set_epoch_deadline(1);
        store.epoch_deadline_async_yield_and_update(1);
        store
    }

    /// Instantiates the workflow in a fresh store (as every call does) and
    /// returns how long that took; the instance is dropped unused. This is
    /// the per-call fixed cost the benchmarks report.
    pub async fn time_instantiation(&self, workflow: &Workflow) -> Result<Duration, GuestFault> {
        let (mut store, _out) = self.render_store();
        let started = Instant::now();
        workflow
            .pre
            .instantiate_async(&mut store)
            .await
            .map_err(|e| fault_of(&e, &store))?;
        Ok(started.elapsed())
    }

    /// Calls `render`. Guest-side `Err(message)` is returned as `Ok(Err(..))`,
    /// its message cut to 4 KiB; a render that
    /// outlives `render_timeout` is a `RENDER_TIMEOUT` fault.
    pub async fn render(
        &self,
        workflow: &Workflow,
        ctx: &RenderContext,
    ) -> Result<Result<Vec<Node>, String>, GuestFault> {
        let (mut store, _out) = self.render_store();
        let result = with_deadline(
            Call::Render,
            self.config.limits.render_timeout,
            &CancellationToken::new(),
            async {
                let instance = workflow.pre.instantiate_async(&mut store).await?;
                instance.call_render(&mut store, ctx).await
            },
        )
        .await?;
        match result {
            Ok(Err(mut message)) => {
                limits::cut(&mut message, limits::MAX_ERROR_MESSAGE_BYTES);
                Ok(Err(message))
            }
            other => other.map_err(|e| fault_of(&e, &store)),
        }
    }

    /// Calls `run-task` with the root dir preopened and the tools enabled.
    /// Captured stdout/stderr are sent as `NodeOutput` events before
    /// returning. Output that breaks a limit (see [`GuestLimits`]) turns
    /// the result into an `OUTPUT_LIMIT_EXCEEDED` fault and is not sent.
    pub async fn run_task(
        &self,
        workflow: &Workflow,
        ctx: &TaskContext,
        env: TaskEnv,
    ) -> Result<Result<String, TaskError>, GuestFault> {
        let limits = &self.config.limits;
        let stdout = CapturedOutput::new(limits.max_stdio_bytes);
        let stderr = CapturedOutput::new(limits.max_stdio_bytes);
        let guest_env = self.config.secrets.guest_env();
        let wasi = crate::sandbox::wasi::task_context(&env.root_dir, &stdout, &stderr, &guest_env)
            .map_err(|e| GuestFault::new("INSTANTIATION_FAILED", e.to_string()))?;
        let events = env.events.clone();
        let attribution = (env.node_id.clone(), env.iteration, env.attempt);
        let run_id = env.run_id.clone();
        let cancel = env.cancel.clone();
        let timeout = env.timeout;
        let budget = env.budget.clone();
        let http = http::HttpState::for_task(
            self.config.http.clone(),
            self.config.secrets.clone(),
            http::TaskAttribution {
                events: env.events.clone(),
                run_id: env.run_id.clone(),
                node_id: env.node_id.clone(),
                iteration: env.iteration,
                attempt: env.attempt,
                journal: env.journal.clone(),
            },
        );
        let tools = tools::ToolContext::new(env, limits, self.config.secrets.clone());
        let mut store = self.new_store(wasi, Some(tools), http);
        let result = with_deadline(Call::Task, timeout, &cancel, async {
            let instance = workflow.pre.instantiate_async(&mut store).await?;
            instance.call_run_task(&mut store, ctx).await
        })
        .await;
        let mut overflow = None;
        for (capture, stream) in [(&stdout, "stdout"), (&stderr, "stderr")] {
            let (mut text, truncated) = capture.take();
            if truncated {
                text.push_str("\n[output truncated]");
            }
            if text.is_empty() {
                continue;
            }
            let event = EventBody::NodeOutput {
                node_id: attribution.0.clone(),
                iteration: attribution.1,
                attempt: attribution.2,
                text,
                stream: stream.into(),
            };
            let size = limits::stored_event_bytes(&event, &run_id);
            match budget.try_charge("the captured output", size) {
                Ok(()) => {
                    let _ = events.send(event);
                }
                Err(e) => {
                    overflow.get_or_insert(e);
                }
            }
        }
        let result = result?.map_err(|e| fault_of(&e, &store))?;
        if let Some(e) = overflow {
            return Err(GuestFault::new(OUTPUT_LIMIT_EXCEEDED, e.to_string()));
        }
        match result {
            Ok(output) => {
                charge_output(limits, &budget, &output)?;
                Ok(Ok(output))
            }
            Err(error) => Ok(Err(bounded_task_error(error))),
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.ticker_stop
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

fn engine_config(config: &RuntimeConfig, pooling: bool) -> wasmtime::Config {
    let mut wasm = wasmtime::Config::new();
    wasm.wasm_component_model(true)
        .epoch_interruption(true)
        .parallel_compilation(true)
        .max_wasm_stack(1024 * 1024)
        .wasm_backtrace_max_frames(std::num::NonZeroUsize::new(32))
        .async_stack_size(4 * 1024 * 1024);
    if pooling {
        let mut pool = wasmtime::PoolingAllocationConfig::new();
        let instances = config.max_instances;
        pool.total_component_instances(instances)
            .total_core_instances(instances * 4)
            .total_memories(instances * 2)
            .total_tables(instances * 4)
            .total_stacks(instances)
            .max_memories_per_component(8)
            .max_tables_per_component(16)
            .max_core_instances_per_component(16)
            .max_memory_size(config.max_memory_bytes as usize)
            .max_unused_warm_slots(64)
            // Every call gets a fresh instance. Keeping the pages a call
            // dirtied resident (and resetting only those, found with
            // pagemap_scan where the kernel has it) saves the page faults
            // that otherwise dominate a short call's cost.
            .linear_memory_keep_resident(RESIDENT_MEMORY_BYTES)
            .table_keep_resident(64 * 1024)
            .async_stack_keep_resident(256 * 1024)
            .pagemap_scan(wasmtime::Enabled::Auto);
        wasm.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
    }
    wasm
}

/// Links WASI preview 2 except `wasi:sockets`: a component that imports
/// sockets fails to load with a clear message instead of getting a network.
fn add_wasi_without_sockets(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    use wasmtime_wasi::cli::{WasiCli, WasiCliView};
    use wasmtime_wasi::clocks::{WasiClocks, WasiClocksView};
    use wasmtime_wasi::filesystem::{WasiFilesystem, WasiFilesystemView};
    use wasmtime_wasi::p2::bindings::{cli, clocks, filesystem, random};
    use wasmtime_wasi::random::WasiRandom;

    struct HasIo;
    impl wasmtime::component::HasData for HasIo {
        type Data<'a> = &'a mut ResourceTable;
    }
    let l = linker;
    wasmtime_wasi_io::bindings::wasi::io::error::add_to_linker::<HostState, HasIo>(l, |t| {
        &mut t.table
    })?;
    wasmtime_wasi_io::bindings::wasi::io::poll::add_to_linker::<HostState, HasIo>(l, |t| {
        &mut t.table
    })?;
    wasmtime_wasi_io::bindings::wasi::io::streams::add_to_linker::<HostState, HasIo>(l, |t| {
        &mut t.table
    })?;
    clocks::wall_clock::add_to_linker::<HostState, WasiClocks>(
        l,
        <HostState as WasiClocksView>::clocks,
    )?;
    clocks::monotonic_clock::add_to_linker::<HostState, WasiClocks>(
        l,
        <HostState as WasiClocksView>::clocks,
    )?;
    filesystem::preopens::add_to_linker::<HostState, WasiFilesystem>(
        l,
        <HostState as WasiFilesystemView>::filesystem,
    )?;
    filesystem::types::add_to_linker::<HostState, WasiFilesystem>(
        l,
        <HostState as WasiFilesystemView>::filesystem,
    )?;
    random::random::add_to_linker::<HostState, WasiRandom>(l, |t| t.wasi.random())?;
    random::insecure::add_to_linker::<HostState, WasiRandom>(l, |t| t.wasi.random())?;
    random::insecure_seed::add_to_linker::<HostState, WasiRandom>(l, |t| t.wasi.random())?;
    cli::exit::add_to_linker::<HostState, WasiCli>(l, <HostState as WasiCliView>::cli)?;
    cli::environment::add_to_linker::<HostState, WasiCli>(l, <HostState as WasiCliView>::cli)?;
    cli::stdin::add_to_linker::<HostState, WasiCli>(l, <HostState as WasiCliView>::cli)?;
    cli::stdout::add_to_linker::<HostState, WasiCli>(l, <HostState as WasiCliView>::cli)?;
    cli::stderr::add_to_linker::<HostState, WasiCli>(l, <HostState as WasiCliView>::cli)?;
    cli::terminal_input::add_to_linker::<HostState, WasiCli>(l, <HostState as WasiCliView>::cli)?;
    cli::terminal_output::add_to_linker::<HostState, WasiCli>(l, <HostState as WasiCliView>::cli)?;
    cli::terminal_stdin::add_to_linker::<HostState, WasiCli>(l, <HostState as WasiCliView>::cli)?;
    cli::terminal_stdout::add_to_linker::<HostState, WasiCli>(l, <HostState as WasiCliView>::cli)?;
    cli::terminal_stderr::add_to_linker::<HostState, WasiCli>(l, <HostState as WasiCliView>::cli)?;
    Ok(())
}

fn spawn_epoch_ticker(engine: Engine, stop: Arc<std::sync::atomic::AtomicBool>) {
    // A plain thread: the tick must keep coming even when every async worker
    // is busy running guests.
    let _ = std::thread::Builder::new()
        .name("smithers-epoch".into())
        .spawn(move || {
            let mut next = Instant::now();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                next += EPOCH_TICK;
                let now = Instant::now();
                if next > now {
                    std::thread::sleep(next - now);
                } else {
                    next = now;
                }
                engine.increment_epoch();
            }
        });
}
