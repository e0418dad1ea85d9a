//! Privilege walls of the sandbox's processes: `no_new_privs`, securebits,
//! capabilities and resource limits.
//!
//! Runs inside the new namespaces, after the root is built (which needed the
//! namespace capabilities) and before the shell is executed. It must never
//! leave a capability in any set: even uid 0 inside (a host running as root)
//! gets nothing back on `exec`, because the bounding set is empty,
//! `SECBIT_NOROOT` is locked and `no_new_privs` makes setuid/file
//! capabilities inert.

use std::io;

use rustix::process::{Resource, Rlimit};
use rustix::thread::{CapabilitySet, CapabilitySets};

use super::launcher::{AtStep, SetupError, checkpoint};
use super::protocol::LaunchSpec;
use super::status::SetupStep;

/// `PR_SET_NO_NEW_PRIVS`: `execve` can never grant privileges again.
pub(crate) fn no_new_privs(spec: &LaunchSpec) -> Result<(), SetupError> {
    checkpoint(spec, SetupStep::NoNewPrivs)?;
    rustix::thread::set_no_new_privs(true).at(SetupStep::NoNewPrivs, "PR_SET_NO_NEW_PRIVS")
}

/// Locks the securebits so that uid 0 is not special on `exec`, empties the
/// bounding and ambient sets. Needs `CAP_SETPCAP` (in the new user
/// namespace), so it runs before [`drop_capabilities`].
pub(crate) fn lock_root_privileges(spec: &LaunchSpec) -> Result<(), SetupError> {
    checkpoint(spec, SetupStep::Capabilities)?;
    let bits = libc::SECBIT_NOROOT
        | libc::SECBIT_NOROOT_LOCKED
        | libc::SECBIT_NO_SETUID_FIXUP
        | libc::SECBIT_NO_SETUID_FIXUP_LOCKED
        | libc::SECBIT_KEEP_CAPS_LOCKED
        | libc::SECBIT_NO_CAP_AMBIENT_RAISE
        | libc::SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED;
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_SECUREBITS, bits as libc::c_ulong, 0, 0, 0) } < 0 {
        return Err(io::Error::last_os_error()).at(SetupStep::Capabilities, "PR_SET_SECUREBITS");
    }
    for cap in 0..64 {
        // SAFETY: prctl with integer arguments only.
        let dropped = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        if dropped < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINVAL) {
                break; // past the kernel's last capability
            }
            return Err(e).at(SetupStep::Capabilities, format!("PR_CAPBSET_DROP {cap}"));
        }
    }
    rustix::thread::clear_ambient_capability_set()
        .at(SetupStep::Capabilities, "PR_CAP_AMBIENT_CLEAR_ALL")
}

/// Empties the effective, permitted and inheritable sets and checks that
/// every set (bounding included) really is empty.
pub(crate) fn drop_capabilities(spec: &LaunchSpec) -> Result<(), SetupError> {
    checkpoint(spec, SetupStep::Capabilities)?;
    let none = CapabilitySets {
        effective: CapabilitySet::empty(),
        permitted: CapabilitySet::empty(),
        inheritable: CapabilitySet::empty(),
    };
    rustix::thread::set_capabilities(None, none).at(SetupStep::Capabilities, "capset(0)")?;
    let now = rustix::thread::capabilities(None).at(SetupStep::Capabilities, "capget")?;
    let still_bounded = (0..64).any(|cap| {
        // SAFETY: prctl with integer arguments only.
        unsafe { libc::prctl(libc::PR_CAPBSET_READ, cap as libc::c_ulong, 0, 0, 0) == 1 }
    });
    if !now.effective.is_empty()
        || !now.permitted.is_empty()
        || !now.inheritable.is_empty()
        || still_bounded
    {
        return Err(io::Error::from_raw_os_error(libc::EPERM))
            .at(SetupStep::Capabilities, "a capability survived the drop");
    }
    Ok(())
}

/// Applies the resource limits (soft = hard, so they cannot be raised; raising
/// a hard limit needs `CAP_SYS_RESOURCE` in the host's user namespace).
pub(crate) fn apply_rlimits(spec: &LaunchSpec) -> Result<(), SetupError> {
    checkpoint(spec, SetupStep::Rlimits)?;
    let l = &spec.limits;
    let limits = [
        (Resource::Cpu, spec.cpu_seconds, "RLIMIT_CPU"),
        (Resource::As, l.address_space_bytes, "RLIMIT_AS"),
        (Resource::Nproc, l.processes, "RLIMIT_NPROC"),
        (Resource::Fsize, l.file_size_bytes, "RLIMIT_FSIZE"),
        (Resource::Nofile, l.open_files, "RLIMIT_NOFILE"),
        (Resource::Core, 0, "RLIMIT_CORE"),
    ];
    for (resource, value, name) in limits {
        let limit = Rlimit {
            current: Some(value),
            maximum: Some(value),
        };
        rustix::process::setrlimit(resource, limit).at(SetupStep::Rlimits, name)?;
    }
    Ok(())
}

/// Default dispositions and an empty signal mask for the shell (the launcher
/// runs with `SIGPIPE` ignored, as every Rust program, and `exec` would keep
/// that).
pub(crate) fn reset_signals() {
    for signal in 1..libc::SIGRTMAX() {
        if signal == libc::SIGKILL || signal == libc::SIGSTOP {
            continue;
        }
        // SAFETY: resetting a disposition to SIG_DFL installs no handler.
        unsafe { libc::signal(signal, libc::SIG_DFL) };
    }
    // SAFETY: an empty, initialised set passed by pointer.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}
