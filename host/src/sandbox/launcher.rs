//! The sandbox launcher: the `smithers-host __sandbox-exec SPEC` entry point
//! that builds the namespaces, mounts and Landlock rules and execs bash.

/// Entry point of the launcher process.
pub fn main() -> std::process::ExitCode {
    eprintln!("smithers-host: the sandbox launcher is not implemented in this build");
    std::process::ExitCode::from(125)
}
