//! `smithers-host completions SHELL`: prints the shell's completion script
//! for every command and option, generated from the parser itself so it
//! never falls out of date.

use std::io::Write;

use clap::{Args, CommandFactory};
use clap_complete::Shell;

use super::{Cli, EXIT_FINISHED};

/// Options of `smithers-host completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell: bash, zsh, fish, elvish or powershell.
    shell: Shell,
}

/// Writes the script on stdout, e.g. `smithers-host completions bash >
/// ~/.local/share/bash-completion/completions/smithers-host`.
pub fn completions(args: CompletionsArgs) -> u8 {
    let mut command = Cli::command();
    // Generated into memory first: the generator panics on a write error
    // (a closed pipe), and a closed pipe is not worth a panic.
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, "smithers-host", &mut script);
    let _ = std::io::stdout().lock().write_all(&script);
    EXIT_FINISHED
}
