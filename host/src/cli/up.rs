//! `smithers-host up WORKFLOW [--serve]`: start one run; with `--serve`,
//! also serve it over HTTP (serve mode) until SIGINT or SIGTERM, as
//! Smithers' `up --serve` does. Without `--serve` it is `run`.

use clap::Args;

use super::local::{self, RunArgs};
use super::{EXIT_FINISHED, EXIT_REFUSED, EXIT_USAGE, shutdown_signal};
use crate::app::{App, AppConfig};
use crate::engine::{EngineError, StartRequest};
use crate::http::{self, ApiState, ServerConfig};
use crate::model::RunId;

#[derive(Debug, Args)]
pub struct UpArgs {
    #[command(flatten)]
    run: RunArgs,
    /// Serve the run over HTTP (`/`, `/events`, `/frames`, `/approve/:node`,
    /// `/deny/:node`, `/cancel`, `/signal/:name`, `/metrics`, `/health`) and
    /// stay up after it ends, until SIGINT or SIGTERM.
    #[arg(long)]
    serve: bool,
}

pub async fn up(config: AppConfig, server: ServerConfig, args: UpArgs) -> u8 {
    if !args.serve {
        return local::run(config, args.run).await;
    }
    if let Err(e) = server.validate() {
        return local::fail(e, EXIT_USAGE);
    }
    let app = match App::open(config) {
        Ok(app) => app,
        Err(e) => return local::fail(e, EXIT_REFUSED),
    };
    let bound = match http::bind(&server).await {
        Ok(bound) => bound,
        Err(e) => {
            eprintln!("smithers-host: {e}");
            app.close().await;
            return EXIT_REFUSED;
        }
    };
    let run_id = match start_or_resume(&app, &args.run).await {
        Ok(run_id) => run_id,
        Err(e) => {
            eprintln!("smithers-host: {e}");
            app.close().await;
            return EXIT_REFUSED;
        }
    };
    let state = ApiState::new(app.engine.clone(), &server);
    http::start_background(&state).await;
    let router = http::serve::router(state.clone(), server.access_policy(), run_id.clone());
    tracing::info!(run = %run_id, "serving one run");
    println!("smithers-host serving run {run_id}");
    http::run(
        app,
        bound,
        router,
        &state,
        server.connections,
        shutdown_signal(),
    )
    .await;
    EXIT_FINISHED
}

/// Starts the run, or resumes it when `--run-id` names a run this state dir
/// already has (so restarting `up --serve` continues where it stopped).
async fn start_or_resume(app: &App, args: &RunArgs) -> Result<RunId, EngineError> {
    let engine = &app.engine;
    if let Some(raw) = &args.run_id {
        let run_id = RunId::parse(raw).map_err(EngineError::InvalidRequest)?;
        match engine.resume(&run_id, None).await {
            Ok(_) => return Ok(run_id),
            Err(EngineError::RunNotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    let input = args.input_value().map_err(EngineError::InvalidRequest)?;
    engine
        .start(StartRequest {
            workflow_path: args.workflow_path().map_err(EngineError::InvalidRequest)?,
            input,
            run_id: args.run_id.clone(),
            ..StartRequest::default()
        })
        .await
}

impl UpArgs {
    /// True with `--serve` (the process is a server and logs like one).
    pub fn serves(&self) -> bool {
        self.serve
    }

    /// The run it starts.
    pub(super) fn run_args(&self) -> &RunArgs {
        &self.run
    }
}
