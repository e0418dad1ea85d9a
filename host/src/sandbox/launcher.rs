//! The sandbox launcher: the `smithers-host __sandbox-exec` entry point.
//!
//! Three processes, each with one job:
//!
//! * the **launcher** (the host's child, still in the host's pid namespace)
//!   reads the [`LaunchSpec`], unshares the user, mount, pid, ipc, uts, cgroup
//!   and (unless allowed) network namespaces, maps the host uid/gid, forks the
//!   init and then supervises: when the host closes the control socket (a
//!   timeout, a cancel, a dropped future, or the host died) it kills the init
//!   and waits for it, which the kernel completes only once every process of
//!   the pid namespace is gone;
//! * the **init** (pid 1 of the new pid namespace) builds the new root
//!   ([`super::rootfs`]), confines itself ([`super::confine`],
//!   [`super::landlock`]), reports the walls, forks the shell and reaps; when
//!   the shell exits it reports the status and exits, and the kernel kills
//!   whatever the shell left behind (`setsid`, `nohup`, double forks);
//! * the **program** (`/bin/bash -c COMMAND` for the bash tool, `cargo` for a
//!   guest build) gets the resource limits, default signal dispositions and
//!   `/dev/null` as stdin, and is executed with the spec's environment only.
//!
//! Before anything else the launcher leaves the host's session keyring for a
//! fresh, empty one: keyrings are not separated by namespaces, and the host's
//! keys must not be reachable even if the seccomp filter were missing.
//!
//! Every step that can fail reports a [`SetupStep`] and the kernel's error on
//! the control socket before anything runs, so the host fails closed with a
//! precise message. This module must never start the shell when a step
//! failed, never let the shell inherit the control socket, and never run
//! multi-threaded (unsharing a user namespace needs a single thread; `main.rs`
//! dispatches here before anything else starts).

use std::convert::Infallible;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::process::ExitCode;

use rustix::process::{Pid, Signal};
use rustix::thread::UnshareFlags;

use super::protocol::{LaunchSpec, MAX_SPEC_BYTES, Report};
use super::status::{NetworkWall, SetupStep, Walls};
use super::{confine, landlock, rootfs, seccomp};

/// The hostname inside the sandbox (its own uts namespace).
pub(crate) const SANDBOX_HOSTNAME: &str = "smithers-sandbox";

/// A step of building the sandbox that failed, with the kernel's error.
#[derive(Debug, thiserror::Error)]
#[error("{step}: {detail}: {source}")]
pub(crate) struct SetupError {
    /// Which step.
    pub step: SetupStep,
    /// What exactly was attempted.
    pub detail: String,
    /// What the kernel said.
    #[source]
    pub source: io::Error,
}

impl SetupError {
    fn report(&self) -> Report {
        Report::SetupFailed {
            step: self.step,
            errno: self.source.raw_os_error(),
            detail: format!("{}: {}", self.detail, self.source),
        }
    }
}

/// Attaches a step and a description to an `io::Result`.
pub(crate) trait AtStep<T> {
    /// Maps the error into a [`SetupError`] of `step`.
    fn at(self, step: SetupStep, detail: impl Into<String>) -> Result<T, SetupError>;
}

impl<T> AtStep<T> for io::Result<T> {
    fn at(self, step: SetupStep, detail: impl Into<String>) -> Result<T, SetupError> {
        self.map_err(|source| SetupError {
            step,
            detail: detail.into(),
            source,
        })
    }
}

impl<T> AtStep<T> for rustix::io::Result<T> {
    fn at(self, step: SetupStep, detail: impl Into<String>) -> Result<T, SetupError> {
        self.map_err(io::Error::from).at(step, detail)
    }
}

/// The spec's test hook: fails `step` as if the kernel refused it.
pub(crate) fn checkpoint(spec: &LaunchSpec, step: SetupStep) -> Result<(), SetupError> {
    if spec.fail_at == Some(step) {
        return Err(io::Error::from_raw_os_error(libc::EPERM))
            .at(step, "refused by the policy's fault-injection hook");
    }
    Ok(())
}

/// Entry point of the launcher process.
pub fn main() -> ExitCode {
    let control = match take_control_socket() {
        Ok(control) => control,
        Err(e) => {
            // There is no channel to the host: stderr is all that is left,
            // and the host reports a launcher that exited without a report.
            eprintln!("smithers-host sandbox launcher: {e}");
            return ExitCode::from(125);
        }
    };
    match launch(&control) {
        Ok(code) => code,
        Err(e) => {
            send(control.as_fd(), &e.report());
            ExitCode::from(125)
        }
    }
}

/// Moves the control socket (stdin) to a close-on-exec descriptor, closes
/// everything else the host may have leaked, and puts `/dev/null` on stdin.
fn take_control_socket() -> Result<OwnedFd, SetupError> {
    // SAFETY: close_range only closes descriptors; nothing in this fresh
    // process owns a descriptor above 2 (std opens none before `main`).
    let closed = unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    if closed < 0 {
        return Err(io::Error::last_os_error()).at(SetupStep::Descriptors, "close_range(3..)");
    }
    // SAFETY: fd 0 is open (the host passed the control socket as stdin); the
    // borrow ends before fd 0 is replaced below.
    let stdin = unsafe { BorrowedFd::borrow_raw(0) };
    let control = rustix::io::fcntl_dupfd_cloexec(stdin, 3).at(
        SetupStep::Descriptors,
        "moving the control socket off stdin",
    )?;
    let null = std::fs::File::open("/dev/null").at(SetupStep::Descriptors, "open /dev/null")?;
    // SAFETY: dup2 onto fd 0 replaces stdin; both descriptors are valid.
    if unsafe { libc::dup2(null.as_raw_fd(), 0) } < 0 {
        return Err(io::Error::last_os_error()).at(SetupStep::Descriptors, "dup2(/dev/null, 0)");
    }
    Ok(control)
}

/// Sends one report to the host; a host that is gone is not an error here
/// (the supervisor notices the hang-up and tears the sandbox down).
pub(crate) fn send(control: BorrowedFd<'_>, report: &Report) {
    let line = report.to_line();
    let mut sent = 0;
    while sent < line.len() {
        // SAFETY: the buffer is valid for its length; MSG_NOSIGNAL turns a
        // closed peer into EPIPE instead of a signal.
        let n = unsafe {
            libc::send(
                control.as_raw_fd(),
                line[sent..].as_ptr().cast(),
                line.len() - sent,
                libc::MSG_NOSIGNAL,
            )
        };
        if n < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        sent += n as usize;
    }
}

fn read_spec(control: BorrowedFd<'_>) -> Result<LaunchSpec, SetupError> {
    let mut buf = Vec::with_capacity(16 << 10);
    let mut chunk = [0u8; 16 << 10];
    loop {
        let n = rustix::io::read(control, &mut chunk).at(SetupStep::ReadSpec, "read")?;
        if n == 0 {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof)).at(
                SetupStep::ReadSpec,
                "the host closed the socket before the spec ended",
            );
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.last() == Some(&b'\n') {
            break;
        }
        if buf.len() > MAX_SPEC_BYTES {
            return Err(io::Error::from(io::ErrorKind::InvalidData))
                .at(SetupStep::ReadSpec, "spec too long");
        }
    }
    serde_json::from_slice(&buf)
        .map_err(io::Error::other)
        .at(SetupStep::ReadSpec, "parse")
}

/// The launcher proper: namespaces, id maps, fork, supervision.
fn launch(control: &OwnedFd) -> Result<ExitCode, SetupError> {
    let spec = read_spec(control.as_fd())?;
    join_fresh_session_keyring(&spec)?;
    let uid = rustix::process::getuid().as_raw();
    let gid = rustix::process::getgid().as_raw();

    checkpoint(&spec, SetupStep::Unshare)?;
    let mut flags = UnshareFlags::NEWUSER
        | UnshareFlags::NEWNS
        | UnshareFlags::NEWPID
        | UnshareFlags::NEWIPC
        | UnshareFlags::NEWUTS
        | UnshareFlags::NEWCGROUP;
    if !spec.allow_network {
        flags |= UnshareFlags::NEWNET;
    }
    // SAFETY: the launcher is single-threaded (dispatched from `main` before
    // any thread starts) and FILES is not unshared, so no thread can observe
    // a descriptor table change.
    unsafe { rustix::thread::unshare_unsafe(flags) }.at(
        SetupStep::Unshare,
        "unshare(user, mount, pid, ipc, uts, cgroup, net namespaces)",
    )?;

    checkpoint(&spec, SetupStep::IdMap)?;
    // The host's own ids, mapped onto themselves: paths and owners inside
    // look as on the host, and nothing else is mapped.
    std::fs::write("/proc/self/setgroups", "deny").at(SetupStep::IdMap, "setgroups deny")?;
    std::fs::write("/proc/self/uid_map", format!("{uid} {uid} 1\n"))
        .at(SetupStep::IdMap, "uid_map")?;
    std::fs::write("/proc/self/gid_map", format!("{gid} {gid} 1\n"))
        .at(SetupStep::IdMap, "gid_map")?;

    checkpoint(&spec, SetupStep::Fork)?;
    // The init learns whether the launcher still lives through this pipe: a
    // hang-up means the launcher died before the death signal was armed.
    let (alive_read, alive_write) =
        rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).at(SetupStep::Fork, "pipe")?;
    // SAFETY: the process is single-threaded, so the child may run arbitrary
    // code (including allocation) after fork.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error()).at(SetupStep::Fork, "fork");
    }
    if pid == 0 {
        drop(alive_write);
        let Err(e) = init(&spec, control.as_fd(), alive_read);
        send(control.as_fd(), &e.report());
        // SAFETY: _exit ends the init without running the launcher's exit
        // handlers twice.
        unsafe { libc::_exit(1) }
    }
    drop(alive_read);
    let init_pid = Pid::from_raw(pid).expect("fork returned a positive pid");
    supervise(control.as_fd(), init_pid).inspect_err(|_| {
        // Whatever went wrong, the namespace must not outlive the launcher.
        let _ = rustix::process::kill_process(init_pid, Signal::KILL);
        let _ = wait_for(init_pid.as_raw_nonzero().get());
    })?;
    drop(alive_write);
    Ok(ExitCode::SUCCESS)
}

/// Replaces the session keyring inherited from the host by a new, anonymous
/// and empty one, so nothing in the sandbox possesses the host's keys.
fn join_fresh_session_keyring(spec: &LaunchSpec) -> Result<(), SetupError> {
    checkpoint(spec, SetupStep::Keyring)?;
    const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;
    // SAFETY: a null name asks the kernel for a new anonymous keyring; no
    // memory is passed.
    let joined = unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            KEYCTL_JOIN_SESSION_KEYRING,
            std::ptr::null::<libc::c_char>(),
        )
    };
    if joined < 0 {
        return Err(io::Error::last_os_error())
            .at(SetupStep::Keyring, "keyctl(KEYCTL_JOIN_SESSION_KEYRING)");
    }
    Ok(())
}

/// Waits until the init exits, or kills it when the host hangs up.
fn supervise(control: BorrowedFd<'_>, init: Pid) -> Result<(), SetupError> {
    let pidfd = rustix::process::pidfd_open(init, rustix::process::PidfdFlags::empty())
        .at(SetupStep::Supervise, "pidfd_open")?;
    loop {
        let mut fds = [
            libc::pollfd {
                fd: control.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: pidfd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: `fds` is a valid array of two pollfd for the whole call.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if ready < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e).at(SetupStep::Supervise, "poll");
        }
        if fds[1].revents != 0 {
            wait_for(init.as_raw_nonzero().get()).at(SetupStep::Supervise, "waitpid(init)")?;
            return Ok(());
        }
        if fds[0].revents != 0 && host_hung_up(control, fds[0].revents) {
            rustix::process::pidfd_send_signal(&pidfd, Signal::KILL)
                .at(SetupStep::Supervise, "kill(init)")?;
            // Returns once the init is reaped, which the kernel completes only
            // after every other process of the pid namespace is gone.
            wait_for(init.as_raw_nonzero().get()).at(SetupStep::Supervise, "waitpid(init)")?;
            return Ok(());
        }
    }
}

/// Whether the control socket says the host is gone or wants a kill. The host
/// never sends anything after the spec, so any readable state is a hang-up.
fn host_hung_up(control: BorrowedFd<'_>, revents: libc::c_short) -> bool {
    if revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 {
        return true;
    }
    let mut byte = [0u8; 64];
    !matches!(rustix::io::read(control, &mut byte), Ok(n) if n > 0)
}

/// `waitpid` until `pid` is reaped; returns its raw wait status.
fn wait_for(pid: libc::pid_t) -> io::Result<libc::c_int> {
    loop {
        let mut status = 0;
        // SAFETY: `status` is a valid out-pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::__WALL) };
        if r == pid {
            return Ok(status);
        }
        let e = io::Error::last_os_error();
        if r < 0 && e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Pid 1 of the new pid namespace: builds and enters the confinement, then
/// runs the shell and reports how it ended. Only returns on failure.
fn init(
    spec: &LaunchSpec,
    control: BorrowedFd<'_>,
    alive: OwnedFd,
) -> Result<Infallible, SetupError> {
    checkpoint(spec, SetupStep::DeathSignal)?;
    rustix::process::set_parent_process_death_signal(Some(Signal::KILL))
        .at(SetupStep::DeathSignal, "PR_SET_PDEATHSIG")?;
    let mut probe = [libc::pollfd {
        fd: alive.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    }];
    // SAFETY: a valid array of one pollfd; timeout 0 never blocks.
    let polled = unsafe { libc::poll(probe.as_mut_ptr(), 1, 0) };
    if polled != 0 {
        // The launcher already died (hang-up) or poll failed: nobody would
        // kill this namespace later, so stop here.
        // SAFETY: _exit ends the process immediately.
        unsafe { libc::_exit(1) }
    }
    drop(alive);
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o022));

    let survey = rootfs::survey(spec)?;
    let root = rootfs::build(spec, &survey)?;

    checkpoint(spec, SetupStep::Hostname)?;
    rustix::system::sethostname(SANDBOX_HOSTNAME.as_bytes())
        .at(SetupStep::Hostname, "sethostname")?;

    checkpoint(spec, SetupStep::Chdir)?;
    rustix::process::chdir(&spec.cwd).at(SetupStep::Chdir, spec.cwd.display().to_string())?;

    let filters = seccomp::compile(spec)?;
    confine::no_new_privs(spec)?;
    confine::lock_root_privileges(spec)?;
    let landlock = landlock::enforce(spec)?;
    confine::drop_capabilities(spec)?;
    // Not dumpable: the shell (same uid) can neither ptrace the init nor open
    // its /proc entries (and so not reach the control socket through them).
    rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
        .at(SetupStep::Capabilities, "PR_SET_DUMPABLE 0")?;
    let program = Program::new(spec)?;
    // Last: from here on the init itself only forks, waits and reports.
    let seccomp = seccomp::install(spec, filters)?;

    let mut namespaces = vec!["user", "mount", "pid", "ipc", "uts", "cgroup"];
    if !spec.allow_network {
        namespaces.push("net");
    }
    let walls = Walls {
        namespaces: namespaces.into_iter().map(String::from).collect(),
        network: if spec.allow_network {
            NetworkWall::Host
        } else {
            NetworkWall::Isolated
        },
        landlock,
        no_new_privs: true,
        capabilities_dropped: true,
        nested_userns_blocked: root.nested_userns_blocked,
        seccomp,
        session_keyring_isolated: true,
        pid_max: root.pid_max,
        limits: spec.limits,
        cpu_seconds: spec.cpu_seconds,
    };

    checkpoint(spec, SetupStep::Report)?;
    send(control, &Report::Enforced(walls));

    // SAFETY: the init is single-threaded, so the child may allocate.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error()).at(SetupStep::Fork, "fork(shell)");
    }
    if pid == 0 {
        let Err(e) = exec_program(spec, &program);
        send(control, &e.report());
        // SAFETY: _exit ends the would-be shell immediately.
        unsafe { libc::_exit(127) }
    }
    let status = reap_until(pid)?;
    let report = if libc::WIFSIGNALED(status) {
        Report::Signaled {
            signal: libc::WTERMSIG(status),
        }
    } else {
        Report::Exited {
            code: libc::WEXITSTATUS(status),
        }
    };
    send(control, &report);
    // Exiting as pid 1 makes the kernel kill every process left in the
    // namespace (background jobs, daemons, double forks).
    // SAFETY: _exit ends the init immediately.
    unsafe { libc::_exit(0) }
}

/// Reaps every child (orphans are re-parented to the init) until `shell` exits.
fn reap_until(shell: libc::pid_t) -> Result<libc::c_int, SetupError> {
    loop {
        let mut status = 0;
        // SAFETY: `status` is a valid out-pointer.
        let r = unsafe { libc::waitpid(-1, &mut status, libc::__WALL) };
        if r == shell {
            return Ok(status);
        }
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e).at(SetupStep::Supervise, "waitpid(shell)");
            }
        }
    }
}

/// The program, its arguments and environment, prepared before the fork.
struct Program {
    path: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
}

impl Program {
    fn new(spec: &LaunchSpec) -> Result<Self, SetupError> {
        let invalid = |what: &str| {
            Err(io::Error::from(io::ErrorKind::InvalidInput)).at(SetupStep::Exec, what)
        };
        let Ok(path) = CString::new(spec.program.as_os_str().as_bytes()) else {
            return invalid("the program path contains NUL");
        };
        let mut argv = Vec::with_capacity(spec.argv.len());
        for arg in &spec.argv {
            let Ok(arg) = CString::new(arg.as_str()) else {
                return invalid("an argument contains NUL");
            };
            argv.push(arg);
        }
        let mut envp = Vec::with_capacity(spec.env.len());
        for (name, value) in &spec.env {
            let Ok(entry) = CString::new(format!("{name}={value}")) else {
                return invalid("an environment entry contains NUL");
            };
            envp.push(entry);
        }
        Ok(Self { path, argv, envp })
    }
}

/// The program-to-be: resource limits, clean signal state, then `execve`.
fn exec_program(spec: &LaunchSpec, program: &Program) -> Result<Infallible, SetupError> {
    confine::apply_rlimits(spec)?;
    confine::reset_signals();
    checkpoint(spec, SetupStep::Exec)?;
    let mut argv: Vec<*const libc::c_char> = program.argv.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = program.envp.iter().map(|e| e.as_ptr()).collect();
    envp.push(std::ptr::null());
    // SAFETY: path, argv and envp are NUL-terminated strings in
    // NULL-terminated arrays that outlive the call; execve only returns on
    // failure.
    unsafe { libc::execve(program.path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    Err(io::Error::last_os_error()).at(
        SetupStep::Exec,
        format!("execve {}", spec.program.display()),
    )
}
