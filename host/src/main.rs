//! The `smithers-host` binary: parses arguments and hands over to the library.

fn main() -> std::process::ExitCode {
    // The sandbox launcher must start before any thread exists (creating a user
    // namespace requires a single-threaded process), so it is dispatched here,
    // ahead of the async runtime and the argument parser.
    if std::env::args_os().nth(1).as_deref()
        == Some(std::ffi::OsStr::new(smithers_host::sandbox::LAUNCHER_ARG))
    {
        return smithers_host::sandbox::launcher::main();
    }
    smithers_host::cli::main()
}
