//! A state dir held by a running server.
//!
//! One process uses a state dir at a time, so a local command (`run`,
//! `approve`, `status`, ...) cannot open the one a server holds. Before
//! trying, it asks who holds it; when that is a server that recorded its
//! address, the command stops with the `smithers-host client` command that
//! does the same over HTTP. Anything else (no holder, a holder that is not a
//! server) is left to opening the state dir, which reports it.

use std::path::{Path, PathBuf};

use super::local::RunArgs;
use super::{Command, EXIT_REFUSED};
use crate::state_dir::{ServerRecord, StateDir};

/// `Err(exit code)` after explaining, when `command` works on a state dir
/// (in the foreground, not as a server) and a server holds that state dir.
pub(super) fn refuse_if_served(command: &Command) -> Result<(), u8> {
    let host = match command {
        Command::Run(c) => &c.host,
        Command::Resume(c) | Command::Cancel(c) => &c.host,
        Command::Approve(c) | Command::Deny(c) => &c.host,
        Command::Signal(c) => &c.host,
        Command::Status(c) => &c.host,
        Command::Runs(c) => &c.host,
        Command::Preflight(c) => &c.host,
        Command::Gc(c) => &c.host,
        Command::Up(c) if !c.up.serves() => &c.host,
        Command::Serve(_)
        | Command::Up(_)
        | Command::Gateway(_)
        | Command::Client(_)
        | Command::Completions(_)
        | Command::New(_) => return Ok(()),
    };
    let Ok(root) = std::fs::canonicalize(&host.root_dir) else {
        return Ok(());
    };
    let state = match &host.state_dir {
        Some(path) => path.clone(),
        None => match StateDir::default_for(&root) {
            Ok(path) => path,
            Err(_) => return Ok(()),
        },
    };
    let Some(server) = StateDir::holder(&state).and_then(|holder| holder.server) else {
        return Ok(());
    };
    let state = std::fs::canonicalize(&state).unwrap_or(state);
    eprintln!("{}", explain(command, &root, &state, &server));
    Err(EXIT_REFUSED)
}

fn explain(command: &Command, root: &Path, state: &Path, server: &ServerRecord) -> String {
    let mut text = format!(
        "smithers-host: the state dir {} is held by a smithers-host server (pid {}) at {}; \
         only one process uses a state dir at a time.",
        state.display(),
        server.pid,
        server.url
    );
    match client_verb(command, root) {
        Advice::Client(verb) => {
            text.push_str(&format!(
                "\nAsk the server instead:\n  smithers-host client --url {} {verb}",
                server.url
            ));
            if server.auth {
                text.push_str("\n(it wants a token: add --api-key KEY or set SMITHERS_API_KEY)");
            }
        }
        Advice::Stop(why) => text.push_str(&format!("\n{why}")),
    }
    text
}

enum Advice {
    /// The `client` verb and arguments that do the same.
    Client(String),
    /// What to do when no client verb does it.
    Stop(&'static str),
}

fn client_verb(command: &Command, root: &Path) -> Advice {
    let iteration = |n: u32| {
        if n > 0 {
            format!(" --iteration {n}")
        } else {
            String::new()
        }
    };
    let w = |text: &str| shell_word(text);
    Advice::Client(match command {
        Command::Run(c) => start(&c.args, root),
        Command::Up(c) if !c.up.serves() => start(c.up.run_args(), root),
        Command::Resume(c) => format!("resume {}", w(&c.args.run)),
        Command::Cancel(c) => format!("cancel {}", w(&c.args.run)),
        Command::Status(c) => format!("status {}", w(&c.args.run)),
        Command::Runs(_) => "runs".into(),
        Command::Approve(c) | Command::Deny(c) => format!(
            "{} {} {}{}",
            if matches!(command, Command::Approve(_)) {
                "approve"
            } else {
                "deny"
            },
            w(&c.args.run),
            w(&c.args.node),
            iteration(c.args.iteration)
        ),
        Command::Signal(c) => format!("signal {} {}", w(&c.args.run), w(&c.args.name)),
        Command::Preflight(_) => {
            return Advice::Stop(
                "preflight has no client command: POST /v1/workflows/preflight on the server \
                 does the same check, or stop the server first.",
            );
        }
        Command::Gc(_) => {
            return Advice::Stop(
                "Stop the server to run gc, or let the server remove old runs itself \
                 (--retain AGE).",
            );
        }
        Command::Serve(_)
        | Command::Up(_)
        | Command::Gateway(_)
        | Command::Client(_)
        | Command::Completions(_)
        | Command::New(_) => return Advice::Stop("Stop the server first."),
    })
}

/// `start WORKFLOW --watch` with the run's input and id, the workflow named
/// as the server resolves it: relative to the root dir (on the command line
/// it is relative to the current directory).
fn start(run: &RunArgs, root: &Path) -> String {
    let workflow = &run.workflow;
    let relative = std::fs::canonicalize(workflow)
        .or_else(|_| std::path::absolute(workflow))
        .ok()
        .and_then(|path| path.strip_prefix(root).ok().map(PathBuf::from))
        .map_or_else(|| workflow.to_string(), |p| p.display().to_string());
    let mut verb = format!("start {} --watch", shell_word(&relative));
    for (flag, value) in [("--input", &run.input), ("--run-id", &run.run_id)] {
        if let Some(value) = value {
            verb.push_str(&format!(" {flag} {}", shell_word(value)));
        }
    }
    verb
}

/// A word the shell reads back as itself.
fn shell_word(text: &str) -> String {
    if !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+:@".contains(c))
    {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', "'\\''"))
    }
}
