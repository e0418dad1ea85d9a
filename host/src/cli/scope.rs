//! Which command an option belongs to.
//!
//! Each command takes only the options that apply to it, so its `--help`
//! lists only those and `client --port` is an error rather than a flag that
//! silently does nothing. With no command the binary is a server
//! (`smithers-host --root-dir X`), so the top level takes the options of
//! `serve`; an option given there *before* another command
//! (`smithers-host --port 0 --root-dir X up WF --serve`, as scripts written
//! for the old, global options do) is handed to that command when it takes
//! it, and refused with a clear error when it does not. An option given after
//! the command wins over the same one given before it.
//!
//! This module only parses: it never reads the options' values.

use std::ffi::OsString;

use clap::error::ErrorKind;
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches};

use super::Cli;

/// Parses the process's arguments; exits with clap's usage error (status 2)
/// on bad usage.
pub(super) fn parse() -> Cli {
    parse_from(std::env::args_os().collect()).unwrap_or_else(|e| e.exit())
}

fn parse_from(mut argv: Vec<OsString>) -> Result<Cli, clap::Error> {
    let mut command = Cli::command();
    let matches = command
        .try_get_matches_from_mut(&argv)
        .map_err(|e| explain_misplaced(&command, &argv, e))?;
    let forwarded = forwarded(&command, &matches)?;
    let matches = if forwarded.is_empty() {
        matches
    } else {
        // After the command's own options; before a `--` that ends them.
        let at = argv.iter().position(|a| a == "--").unwrap_or(argv.len());
        argv.splice(at..at, forwarded);
        command.try_get_matches_from_mut(&argv)?
    };
    Cli::from_arg_matches(&matches).map_err(|e| e.format(&mut command))
}

/// The top-level options given on the command line before a command, as
/// `--name=value` arguments for that command; an error for one it does not
/// take.
fn forwarded(command: &clap::Command, matches: &ArgMatches) -> Result<Vec<OsString>, clap::Error> {
    let Some((name, sub_matches)) = matches.subcommand() else {
        return Ok(Vec::new());
    };
    let sub = command
        .find_subcommand(name)
        .expect("clap matched this subcommand");
    let mut forwarded = Vec::new();
    for arg in command.get_arguments() {
        let id = arg.get_id();
        if matches.value_source(id.as_str()) != Some(ValueSource::CommandLine) {
            continue;
        }
        let Some(long) = arg.get_long() else {
            continue;
        };
        if !sub.get_arguments().any(|a| a.get_id() == id) {
            return Err(not_applicable(command, long, name));
        }
        if sub_matches.value_source(id.as_str()) == Some(ValueSource::CommandLine) {
            continue;
        }
        if !arg.get_action().takes_values() {
            forwarded.push(OsString::from(format!("--{long}")));
            continue;
        }
        for value in matches.get_raw(id.as_str()).into_iter().flatten() {
            let mut flag = OsString::from(format!("--{long}="));
            flag.push(value);
            forwarded.push(flag);
        }
    }
    Ok(forwarded)
}

/// An unknown option that some other command takes gets an error saying
/// whose option it is, instead of clap's tip to pass it as a value.
fn explain_misplaced(
    command: &clap::Command,
    argv: &[OsString],
    error: clap::Error,
) -> clap::Error {
    use clap::error::{ContextKind, ContextValue};
    if error.kind() != ErrorKind::UnknownArgument {
        return error;
    }
    let Some(ContextValue::String(arg)) = error.get(ContextKind::InvalidArg) else {
        return error;
    };
    let long = arg
        .trim_start_matches('-')
        .split('=')
        .next()
        .unwrap_or_default();
    let used = argv
        .iter()
        .skip(1)
        .find_map(|a| command.find_subcommand(a))
        .map(|sub| sub.get_name().to_string());
    match used {
        Some(used) if !owners(command, long).is_empty() => not_applicable(command, long, &used),
        _ => error,
    }
}

/// The commands that take `--long`.
fn owners<'a>(command: &'a clap::Command, long: &str) -> Vec<&'a str> {
    command
        .get_subcommands()
        .filter(|sub| {
            sub.get_arguments()
                .any(|a| a.get_long() == Some(long) && !a.is_hide_set())
        })
        .map(clap::Command::get_name)
        .collect()
}

fn not_applicable(command: &clap::Command, long: &str, used: &str) -> clap::Error {
    let owners = owners(command, long);
    let whose = match owners.as_slice() {
        [] => String::new(),
        [one] => format!("; it is an option of `{one}`"),
        [first, second] => format!("; it is an option of `{first}` and `{second}`"),
        _ => String::new(),
    };
    command.clone().error(
        ErrorKind::UnknownArgument,
        format!(
            "--{long} does not apply to `smithers-host {used}`{whose} \
             (see `smithers-host {used} --help`)"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Command;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        parse_from(
            std::iter::once("smithers-host")
                .chain(args.iter().copied())
                .map(OsString::from)
                .collect(),
        )
    }

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn no_command_is_server_mode_with_its_options() {
        let cli = parse(&["--root-dir", "/p", "--port", "0", "--no-watch"]).unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.serve.host.root_dir, std::path::Path::new("/p"));
        assert_eq!(cli.serve.server.port, 0);
        assert!(cli.serve.no_watch);
    }

    #[test]
    fn options_before_a_command_go_to_it_and_lose_to_its_own() {
        let cli = parse(&[
            "--port",
            "0",
            "--root-dir",
            "/before",
            "--build-source",
            "/a",
            "--build-source",
            "/b",
            "--insecure",
            "up",
            "wf",
            "--serve",
            "--root-dir",
            "/after",
        ])
        .unwrap();
        let Some(Command::Up(up)) = cli.command else {
            panic!("not up");
        };
        assert_eq!(up.server.port, 0);
        assert!(up.server.insecure);
        assert_eq!(up.host.root_dir, std::path::Path::new("/after"));
        assert_eq!(up.host.build_sources.len(), 2);
        assert!(up.up.serves());
    }

    #[test]
    fn a_server_option_is_refused_by_a_command_without_a_server() {
        for args in [
            &["run", "wf", "--port", "1"][..],
            &["--port", "1", "run", "wf"],
            &["--no-watch", "up", "wf"],
            &["gateway", "--config", "g.toml", "--port", "1"],
            &["client", "--root-dir", "/p", "runs"],
            &["--root-dir", "/p", "client", "runs"],
        ] {
            let err = parse(args).map(|_| ()).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::UnknownArgument, "{args:?}: {err}");
            assert!(err.to_string().contains("does not apply to"), "{err}");
        }
        let err = parse(&["run", "wf", "--port", "1"])
            .map(|_| ())
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("it is an option of `serve` and `up`"),
            "{err}"
        );
    }

    #[test]
    fn the_help_of_a_local_command_lists_no_server_option() {
        let mut command = Cli::command();
        let run = command.find_subcommand_mut("run").unwrap();
        let help = run.render_long_help().to_string();
        assert!(help.contains("--root-dir"), "{help}");
        for server_only in ["--port", "--auth-token", "--no-watch", "--max-body-bytes"] {
            assert!(!help.contains(server_only), "{server_only} in:\n{help}");
        }
    }
}
