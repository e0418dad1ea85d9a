//! The `smithers-host` command line. Parses arguments and hands each command
//! to the module that owns it; no business logic lives here.

mod completions;
mod follow;
mod gc;
mod held;
mod limits;
mod live;
mod local;
mod new;
mod outbound;
mod pretty;
mod remote;
mod scan;
mod scope;
mod up;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::app::{App, AppConfig};
use crate::http::connections::ConnectionLimits;
use crate::http::subscribers::StreamLimits;
use crate::http::{self, ServerConfig};
use crate::store::Durability;

/// Exit status of a run that finished.
pub const EXIT_FINISHED: u8 = 0;
/// Exit status of a run that failed.
pub const EXIT_FAILED: u8 = 1;
/// Exit status of bad usage (clap's own).
pub const EXIT_USAGE: u8 = 2;
/// Exit status of a run parked at an approval.
pub const EXIT_WAITING_APPROVAL: u8 = 3;
/// Exit status of a run parked waiting for a signal.
pub const EXIT_WAITING_SIGNAL: u8 = 4;
/// Exit status of a cancelled run.
pub const EXIT_CANCELLED: u8 = 5;
/// Exit status of a request the host refused (unknown run, bad workflow...).
pub const EXIT_REFUSED: u8 = 6;
/// Exit status of an internal error (database, runtime).
pub const EXIT_INTERNAL: u8 = 70;

/// Durable workflow runtime for WebAssembly component workflows.
///
/// With no command it serves the HTTP API (server mode) and takes the
/// options of `serve`. Options given before a command go to that command.
#[derive(Debug, Parser)]
#[command(name = "smithers-host", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

/// Options of server mode (the default command, or `serve`).
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    host: HostArgs,
    #[command(flatten)]
    server: ServerArgs,
    /// Do not watch the root dir for changed `.wasm` files to precompile.
    #[arg(long, help_heading = "Server")]
    no_watch: bool,
    /// Dev mode: also rebuild guest crates this host has built when their
    /// sources change.
    #[arg(long, help_heading = "Server")]
    dev: bool,
    #[command(flatten)]
    retain: gc::RetainArgs,
}

/// A command that opens a state dir: its own options, then the host's.
#[derive(Debug, Args)]
pub struct Local<T: Args> {
    #[command(flatten)]
    args: T,
    #[command(flatten)]
    host: HostArgs,
}

/// `up`: a run, which `--serve` also serves over HTTP.
#[derive(Debug, Args)]
pub struct UpCommand {
    #[command(flatten)]
    up: up::UpArgs,
    #[command(flatten)]
    host: HostArgs,
    #[command(flatten)]
    server: ServerArgs,
}

/// How a server listens and whom it serves (`serve` and `up --serve`).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Server")]
pub struct ServerArgs {
    /// Interface to listen on. A non-loopback address needs --auth-token
    /// (or --insecure).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on; 0 picks a free port (printed on stdout).
    #[arg(long, default_value_t = 7331)]
    pub port: u16,
    /// Token clients must send (`Authorization: Bearer <token>` or
    /// `x-smithers-key`). `/health` never needs it.
    #[arg(long, env = "SMITHERS_API_KEY", hide_env_values = true)]
    pub auth_token: Option<String>,
    /// Largest accepted request body, in bytes.
    #[arg(long, default_value_t = 1_048_576)]
    pub max_body_bytes: usize,
    /// Allow a non-loopback bind without a token and accept any Host/Origin.
    #[arg(long)]
    pub insecure: bool,
    /// Close a connection with no request in flight for this long: before
    /// its first request is complete (silent, slow-header and partial h2c
    /// connections), between keep-alive requests, on HTTP/2 with no stream.
    #[arg(long, default_value_t = 30)]
    pub idle_timeout_secs: u64,
    /// Most open connections; at the limit a new one replaces the one idle
    /// the longest (or is closed when every one is busy).
    #[arg(long, default_value_t = 4096)]
    pub max_connections: usize,
    /// Most open SSE event streams (must be below --max-connections);
    /// beyond it, 429 TOO_MANY_STREAMS.
    #[arg(long, default_value_t = 1024)]
    pub max_sse_subscribers: usize,
    /// Most open SSE event streams from one client address.
    #[arg(long, default_value_t = 256)]
    pub max_sse_per_client: usize,
    /// Most bytes of outputs one answer of `/v1/runs/:id/outputs` or
    /// `/v1/runs/:id/nodes/:node` carries; the rest comes in later pages.
    #[arg(long, default_value_t = 4_194_304)]
    pub max_output_page_bytes: u64,
    #[command(flatten)]
    pub tls: TlsArgs,
}

/// HTTPS for a server or the gateway.
#[derive(Debug, Clone, Args)]
pub struct TlsArgs {
    /// Serve HTTPS with this certificate chain (PEM, leaf first); needs
    /// --tls-key. A non-loopback listener with a token but no TLS logs a
    /// warning: the token would cross the network in clear text.
    #[arg(
        long,
        value_name = "FILE",
        requires = "tls_key",
        env = "SMITHERS_TLS_CERT"
    )]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(
        long,
        value_name = "FILE",
        requires = "tls_cert",
        env = "SMITHERS_TLS_KEY"
    )]
    pub tls_key: Option<PathBuf>,
}

impl TlsArgs {
    /// The files, when both were given.
    pub fn files(&self) -> Option<crate::http::tls::TlsFiles> {
        crate::http::tls::TlsFiles::pair(self.tls_cert.as_ref(), self.tls_key.as_ref())
    }
}

impl ServerArgs {
    fn server_config(&self) -> ServerConfig {
        let trust_any_host = std::env::var("SMITHERS_SERVER_TRUST_ANY_HOST")
            .is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
        ServerConfig {
            host: self.host.clone(),
            port: self.port,
            auth_token: self.auth_token.clone().filter(|t| !t.is_empty()),
            max_body_bytes: self.max_body_bytes,
            insecure: self.insecure,
            trust_any_host,
            connections: ConnectionLimits {
                idle_timeout: std::time::Duration::from_secs(self.idle_timeout_secs),
                max_connections: self.max_connections,
            },
            streams: StreamLimits {
                max_total: self.max_sse_subscribers,
                max_per_client: self.max_sse_per_client,
            },
            max_output_page_bytes: self.max_output_page_bytes,
            tls: self.tls.files(),
        }
    }
}

/// Options shared by every command that opens a state dir.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Project and sandbox")]
pub struct HostArgs {
    /// Project directory: workflows live here and tasks can touch only this.
    #[arg(long, default_value = ".", env = "SMITHERS_ROOT_DIR")]
    pub root_dir: PathBuf,
    /// Where the host keeps its database and caches (must be outside the
    /// root dir). Default: a per-project directory under ~/.local/state.
    #[arg(long, env = "SMITHERS_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Give the bash tool the host's network (default: an empty network namespace).
    #[arg(long)]
    pub allow_network: bool,
    /// Run the bash tool without Landlock when the kernel lacks it
    /// (namespaces stay mandatory). Logged loudly.
    #[arg(long)]
    pub allow_missing_landlock: bool,
    /// Commit durability: `normal` survives process crashes, `full` fsyncs
    /// every commit and survives power loss.
    #[arg(long, value_enum, default_value = "normal")]
    pub durability: Durability,
    /// Linear memory limit of one workflow instance, in MiB.
    #[arg(long, default_value_t = 256)]
    pub max_memory_mb: u64,
    /// Default most tasks in flight per run.
    #[arg(long, default_value_t = 8)]
    pub max_concurrency: u32,
    /// Cargo target dir for guest crates the host builds (default: in the
    /// state dir). Sharing one across state dirs avoids rebuilds.
    #[arg(long, env = "SMITHERS_BUILD_DIR")]
    pub build_dir: Option<PathBuf>,
    /// A directory outside the root dir that guest builds may read, e.g. the
    /// cargo workspace the root dir's crates belong to (repeatable; builds
    /// see only the root dir, the toolchain and the cargo cache otherwise).
    #[arg(long = "build-source", value_name = "DIR")]
    pub build_sources: Vec<PathBuf>,
    /// Wall-clock limit of one guest build (e.g. `900s`, `15m`).
    #[arg(long, default_value = "15m", value_parser = limits::parse_duration)]
    pub build_timeout: std::time::Duration,
    /// Largest workflow component accepted (file or build output), in MiB.
    #[arg(long, default_value_t = 64)]
    pub max_component_mb: u64,
    #[command(flatten)]
    pub limits: limits::LimitArgs,
    #[command(flatten)]
    pub scan: scan::ScanArgs,
    /// The host's config file (TOML): its `[http]` table holds the outbound
    /// HTTP policy (`allow`, `timeout`, `max_response_bytes`). With
    /// `gateway`, the gateway's config file (which may hold `[http]` too).
    #[arg(long, env = "SMITHERS_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub http: outbound::HttpArgs,
}

impl HostArgs {
    /// `--config`, or in gateway mode also `SMITHERS_GATEWAY_CONFIG`.
    fn config_file(&self, gateway: bool) -> Option<PathBuf> {
        let from_env = || std::env::var_os("SMITHERS_GATEWAY_CONFIG").map(PathBuf::from);
        self.config
            .clone()
            .or_else(|| gateway.then(from_env).flatten())
    }

    /// The configuration every command opens its host with; refuses bad
    /// flags or a bad config file before anything is opened.
    fn app_config(&self, gateway: bool) -> Result<AppConfig, String> {
        let table = match &self.config_file(gateway) {
            Some(path) => outbound::read_config(path, gateway, &self.root_dir)?,
            None => outbound::HttpTable::default(),
        };
        let http = self.http.policy(table)?;
        let secrets = self.http.secrets()?;
        Ok(AppConfig {
            state_dir: self.state_dir.clone(),
            allow_network: self.allow_network,
            allow_missing_landlock: self.allow_missing_landlock,
            durability: self.durability,
            max_memory_mb: self.max_memory_mb,
            max_concurrency: self.max_concurrency,
            build_dir: self.build_dir.clone(),
            build_sources: self.build_sources.clone(),
            build_timeout: self.build_timeout,
            max_component_mb: self.max_component_mb,
            limits: self.limits.guest_limits(),
            scan: self.scan.limits(),
            http,
            secrets,
            ..AppConfig::new(self.root_dir.clone())
        })
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the HTTP API (the default when no command is given).
    Serve(ServeArgs),
    /// Run a workflow in the foreground until it finishes or parks.
    Run(Local<local::RunArgs>),
    /// Continue a parked, failed or interrupted run in the foreground.
    Resume(Local<local::RunRef>),
    /// Approve a node waiting for approval, then continue the run.
    Approve(Local<local::DecideArgs>),
    /// Deny a node waiting for approval, then continue the run.
    Deny(Local<local::DecideArgs>),
    /// Send a signal to a run, then continue it if it was waiting.
    Signal(Local<local::SignalArgs>),
    /// Cancel a run.
    Cancel(Local<local::RunRef>),
    /// Show a run's status.
    Status(Local<local::StatusArgs>),
    /// List runs, newest first.
    Runs(Local<local::ListArgs>),
    /// Check whether the current version of a workflow can continue every
    /// live run started from it (read-only).
    Preflight(Local<local::PreflightArgs>),
    /// Start one run; with --serve, serve it over HTTP (serve mode) and stay up.
    Up(UpCommand),
    /// Drive a remote host over HTTP (`--url`, `SMITHERS_URL`): start,
    /// status, watch, approvals, approve, deny, cancel, runs, frames...
    Client(remote::ClientArgs),
    /// Serve registered workflows as a Gateway (RPC, WebSocket, cron,
    /// webhooks) from a TOML config.
    Gateway(Local<GatewayArgs>),
    /// Remove runs that ended long ago (with their events, frames, outputs,
    /// attempts...) and give the space back; live and parked runs are kept.
    Gc(Local<gc::GcArgs>),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(completions::CompletionsArgs),
    /// Create a workflow crate of one's own (typed input, two tasks, an
    /// approval, a test) that builds outside this repository.
    New(new::NewArgs),
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = scope::parse();
    let server_mode = match &cli.command {
        None | Some(Command::Serve(_) | Command::Gateway(_)) => true,
        Some(Command::Up(command)) => command.up.serves(),
        _ => false,
    };
    init_tracing(if server_mode { "info" } else { "warn" });
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("smithers-host: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_INTERNAL);
        }
    };
    // The host configuration of a command, or its usage error (a bad
    // pattern, secret or config file stops the command before it opens).
    macro_rules! open {
        ($host:expr, $gateway:expr) => {
            match $host.app_config($gateway) {
                Ok(config) => config,
                Err(e) => return local::fail(e, EXIT_USAGE),
            }
        };
    }
    let code = runtime.block_on(async move {
        if let Some(command) = &cli.command
            && let Err(code) = held::refuse_if_served(command)
        {
            return code;
        }
        match cli.command {
            None => serve(cli.serve).await,
            Some(Command::Serve(args)) => serve(args).await,
            Some(Command::Run(c)) => local::run(open!(c.host, false), c.args).await,
            Some(Command::Resume(c)) => local::resume(open!(c.host, false), c.args).await,
            Some(Command::Approve(c)) => local::decide(open!(c.host, false), c.args, true).await,
            Some(Command::Deny(c)) => local::decide(open!(c.host, false), c.args, false).await,
            Some(Command::Signal(c)) => local::signal(open!(c.host, false), c.args).await,
            Some(Command::Cancel(c)) => local::cancel(open!(c.host, false), c.args).await,
            Some(Command::Status(c)) => local::status(open!(c.host, false), c.args).await,
            Some(Command::Runs(c)) => local::runs(open!(c.host, false), c.args).await,
            Some(Command::Preflight(c)) => local::preflight(open!(c.host, false), c.args).await,
            Some(Command::Client(args)) => remote::main(args).await,
            Some(Command::Gateway(c)) => {
                let file = c.host.config_file(true);
                gateway(open!(c.host, true), file, c.args).await
            }
            Some(Command::Up(c)) => {
                up::up(open!(c.host, false), c.server.server_config(), c.up).await
            }
            Some(Command::Gc(c)) => gc::gc(open!(c.host, false), c.args).await,
            Some(Command::Completions(args)) => completions::completions(args),
            Some(Command::New(args)) => new::new(args).await,
        }
    });
    // Guest calls may still be unwinding on worker threads; don't wait for them.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    ExitCode::from(code)
}

fn init_tracing(default_level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("SMITHERS_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new(default_level));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // One JSON object per line (with the event's fields and its spans) for
    // log shippers; text otherwise.
    let json = std::env::var("SMITHERS_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let _ = if json {
        logs.json().with_current_span(true).try_init()
    } else {
        logs.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init()
    };
}

/// Server mode: refuses an unsafe bind before opening anything, then serves
/// until SIGINT or SIGTERM.
async fn serve(args: ServeArgs) -> u8 {
    let config = match args.host.app_config(false) {
        Ok(config) => config,
        Err(e) => return local::fail(e, EXIT_USAGE),
    };
    let server = args.server.server_config();
    if let Err(e) = server.validate() {
        return local::fail(e, EXIT_USAGE);
    }
    let app = match App::open(config) {
        Ok(app) => app,
        Err(e) => return local::fail(e, EXIT_REFUSED),
    };
    args.retain.start(&app.engine);
    let _watch = if args.no_watch {
        None
    } else {
        app.engine
            .watch(args.dev)
            .map_err(|e| tracing::warn!(error = %e, "cannot watch the root dir; workflows compile on first use"))
            .ok()
    };
    match http::serve(app, server, shutdown_signal()).await {
        Ok(()) => EXIT_FINISHED,
        Err(e) => {
            eprintln!("smithers-host: {e}");
            EXIT_REFUSED
        }
    }
}

/// Resolves on the first SIGINT or SIGTERM.
pub(crate) async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
        _ = term.recv() => tracing::info!("SIGTERM received"),
    }
}

/// Options of `smithers-host gateway`: its configuration is
/// `--config FILE` (or `SMITHERS_GATEWAY_CONFIG`), see examples/gateway.toml.
#[derive(Debug, Args)]
pub struct GatewayArgs {
    #[command(flatten)]
    retain: gc::RetainArgs,
    /// Overrides the config's `listen.tls_cert`/`listen.tls_key`.
    #[command(flatten)]
    tls: TlsArgs,
}

/// Gateway mode: loads and checks the config before opening anything, then
/// serves until SIGINT or SIGTERM.
async fn gateway(config: AppConfig, file: Option<PathBuf>, args: GatewayArgs) -> u8 {
    let Some(file) = file else {
        return local::fail(
            "gateway needs --config FILE (see examples/gateway.toml)",
            EXIT_USAGE,
        );
    };
    let mut gateway_config = match crate::gateway::config::GatewayConfig::load(&file) {
        Ok(config) => config,
        Err(e) => return local::fail(e, EXIT_USAGE),
    };
    if let Some(files) = args.tls.files() {
        if gateway_config.listen.socket.is_some() {
            return local::fail(
                "--tls-cert applies to TCP; the config's listen.socket is served without TLS",
                EXIT_USAGE,
            );
        }
        gateway_config.listen.tls_cert = Some(files.cert);
        gateway_config.listen.tls_key = Some(files.key);
    }
    if let Some(Err(e)) = gateway_config.listen.tls().map(|files| files.acceptor()) {
        return local::fail(e, EXIT_USAGE);
    }
    let app = match App::open(config) {
        Ok(app) => app,
        Err(e) => return local::fail(e, EXIT_REFUSED),
    };
    args.retain.start(&app.engine);
    match crate::gateway::serve(app, gateway_config, Some(file), shutdown_signal()).await {
        Ok(()) => EXIT_FINISHED,
        Err(e) => {
            eprintln!("smithers-host: {e}");
            EXIT_REFUSED
        }
    }
}
