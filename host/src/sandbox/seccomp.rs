//! The seccomp wall: system calls the sandbox never needs, refused by the
//! kernel before they reach the code they would exercise.
//!
//! Namespaces, `pivot_root`, Landlock and the capability drop decide *what* a
//! confined process can reach; this filter shrinks *how much kernel* it can
//! reach, as the container runtimes' default profiles do. It is a deny list
//! (programs inside are arbitrary: shells, compilers, interpreters), installed
//! by the namespace init on itself after `no_new_privs` and inherited by the
//! program it executes:
//!
//! * kernel objects namespaces do not separate: the keyring (`keyctl`,
//!   `add_key`, `request_key`), `bpf`, `perf_event_open`, `userfaultfd`,
//!   `io_uring_*` (whose operations also bypass seccomp), vsock sockets
//!   (which reach the hypervisor whatever the network namespace);
//! * whatever needs a privilege the sandbox never has, as a second wall
//!   behind the capability drop: the mount family, `setns`, kernel modules,
//!   `kexec`, clock setting, `reboot`, swap, `acct`, quotas, `syslog`,
//!   `open_by_handle_at`, x86 port I/O;
//! * creating namespaces (`unshare`/`clone` with a `CLONE_NEW*` flag);
//! * debugging other processes (`ptrace`, `process_vm_*`, `pidfd_getfd`, `kcmp`);
//! * `personality` other than the harmless ones (no ASLR switch-off);
//! * set-id bits: `chmod`/`fchmod`/`fchmodat`/`fchmodat2`, `mknod` and
//!   `open`/`creat` with `S_ISUID` or `S_ISGID` in the mode, so no set-id file
//!   is left in the root dir for anyone else on the machine;
//! * `TIOCSTI`/`TIOCLINUX` terminal injection.
//!
//! `clone3` and `openat2` carry their flags in a struct the filter cannot read,
//! so they answer `ENOSYS` (libc then falls back to `clone`/`openat`, which
//! are checked); everything else refused answers `EPERM`. On x86_64 the x32
//! system call numbers, which would otherwise slip past a list of x86_64
//! numbers, are refused as a whole, and a foreign architecture kills the
//! process. This module must never allow by omission what the tables above
//! name, and never install a partial filter: compiling or installing fails
//! the launch.

use std::collections::BTreeMap;
use std::io;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

use super::launcher::{AtStep, SetupError, checkpoint};
use super::protocol::LaunchSpec;
use super::status::{SeccompWalls, SetupStep};

/// Refused outright with `EPERM`.
const DENIED: &[(&str, i64)] = &[
    // Kernel objects shared across namespaces.
    ("keyctl", libc::SYS_keyctl),
    ("add_key", libc::SYS_add_key),
    ("request_key", libc::SYS_request_key),
    ("bpf", libc::SYS_bpf),
    ("perf_event_open", libc::SYS_perf_event_open),
    ("userfaultfd", libc::SYS_userfaultfd),
    ("io_uring_setup", libc::SYS_io_uring_setup),
    ("io_uring_enter", libc::SYS_io_uring_enter),
    ("io_uring_register", libc::SYS_io_uring_register),
    // Other processes.
    ("ptrace", libc::SYS_ptrace),
    ("process_vm_readv", libc::SYS_process_vm_readv),
    ("process_vm_writev", libc::SYS_process_vm_writev),
    ("pidfd_getfd", libc::SYS_pidfd_getfd),
    ("kcmp", libc::SYS_kcmp),
    // Mounts and namespaces.
    ("mount", libc::SYS_mount),
    ("umount2", libc::SYS_umount2),
    ("pivot_root", libc::SYS_pivot_root),
    ("chroot", libc::SYS_chroot),
    ("move_mount", libc::SYS_move_mount),
    ("open_tree", libc::SYS_open_tree),
    ("fsopen", libc::SYS_fsopen),
    ("fsconfig", libc::SYS_fsconfig),
    ("fsmount", libc::SYS_fsmount),
    ("fspick", libc::SYS_fspick),
    ("mount_setattr", libc::SYS_mount_setattr),
    ("setns", libc::SYS_setns),
    // The machine.
    ("init_module", libc::SYS_init_module),
    ("finit_module", libc::SYS_finit_module),
    ("delete_module", libc::SYS_delete_module),
    ("kexec_load", libc::SYS_kexec_load),
    ("kexec_file_load", libc::SYS_kexec_file_load),
    ("reboot", libc::SYS_reboot),
    ("swapon", libc::SYS_swapon),
    ("swapoff", libc::SYS_swapoff),
    ("acct", libc::SYS_acct),
    ("quotactl", libc::SYS_quotactl),
    ("quotactl_fd", libc::SYS_quotactl_fd),
    ("syslog", libc::SYS_syslog),
    ("vhangup", libc::SYS_vhangup),
    ("sethostname", libc::SYS_sethostname),
    ("setdomainname", libc::SYS_setdomainname),
    ("open_by_handle_at", libc::SYS_open_by_handle_at),
    ("fanotify_init", libc::SYS_fanotify_init),
    ("lookup_dcookie", libc::SYS_lookup_dcookie),
    // Time.
    ("settimeofday", libc::SYS_settimeofday),
    ("clock_settime", libc::SYS_clock_settime),
    ("clock_adjtime", libc::SYS_clock_adjtime),
    ("adjtimex", libc::SYS_adjtimex),
    #[cfg(target_arch = "x86_64")]
    ("iopl", libc::SYS_iopl),
    #[cfg(target_arch = "x86_64")]
    ("ioperm", libc::SYS_ioperm),
    #[cfg(target_arch = "x86_64")]
    ("modify_ldt", libc::SYS_modify_ldt),
    #[cfg(target_arch = "x86_64")]
    ("uselib", libc::SYS_uselib),
    #[cfg(target_arch = "x86_64")]
    ("ustat", libc::SYS_ustat),
    #[cfg(target_arch = "x86_64")]
    ("sysfs", libc::SYS_sysfs),
    #[cfg(target_arch = "x86_64")]
    ("_sysctl", libc::SYS__sysctl),
    #[cfg(target_arch = "x86_64")]
    ("nfsservctl", libc::SYS_nfsservctl),
];

/// Answer `ENOSYS`: their flags live in a struct the filter cannot inspect,
/// and libc falls back to the checked `clone`/`openat` on `ENOSYS`.
const UNAVAILABLE: &[(&str, i64)] = &[("clone3", libc::SYS_clone3), ("openat2", libc::SYS_openat2)];

/// Calls whose mode argument (by index) must carry neither set-id bit.
const SET_ID_MODES: &[(&str, i64, u8)] = &[
    #[cfg(target_arch = "x86_64")]
    ("chmod", libc::SYS_chmod, 1),
    ("fchmod", libc::SYS_fchmod, 1),
    ("fchmodat", libc::SYS_fchmodat, 2),
    ("fchmodat2", FCHMODAT2, 2),
    #[cfg(target_arch = "x86_64")]
    ("mknod", libc::SYS_mknod, 1),
    ("mknodat", libc::SYS_mknodat, 2),
    #[cfg(target_arch = "x86_64")]
    ("creat", libc::SYS_creat, 1),
];

/// Calls that create a file when their flags (by index) hold `O_CREAT` or
/// `O_TMPFILE`, with the mode at the next index.
const SET_ID_CREATES: &[(&str, i64, u8)] = &[
    #[cfg(target_arch = "x86_64")]
    ("open", libc::SYS_open, 1),
    ("openat", libc::SYS_openat, 2),
];

/// `fchmodat2` (Linux 6.6) has the same number on every architecture.
const FCHMODAT2: i64 = 452;

/// Namespace flags of `clone`/`unshare`: none may be set.
const NAMESPACE_FLAGS: [u64; 8] = [
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWCGROUP as u64,
    0x80, // CLONE_NEWTIME
];

/// `personality` values that change nothing security-relevant: PER_LINUX,
/// PER_LINUX32, UNAME26 variants, and the query `0xffffffff`.
const HARMLESS_PERSONALITIES: [u64; 5] = [0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

/// Terminal ioctls that inject input or poke the console.
const TERMINAL_INJECTION: [u64; 2] = [libc::TIOCSTI, 0x541C /* TIOCLINUX */];

/// x86_64's bit marking x32 system call numbers.
#[cfg(target_arch = "x86_64")]
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// The compiled filters, ready to install.
pub(crate) struct Filters {
    programs: Vec<BpfProgram>,
    walls: SeccompWalls,
}

/// Compiles the filters (before anything is confined, so allocation is fine).
pub(crate) fn compile(spec: &LaunchSpec) -> Result<Filters, SetupError> {
    checkpoint(spec, SetupStep::Seccomp)?;
    let arch = target_arch().at(SetupStep::Seccomp, "architecture")?;
    let built = |what: &str, e: seccompiler::BackendError| {
        Err::<Filters, _>(io::Error::other(e.to_string())).at(SetupStep::Seccomp, what)
    };

    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for (_, nr) in DENIED {
        rules.insert(*nr, Vec::new());
    }
    match deny_by_argument(&mut rules) {
        Ok(()) => {}
        Err(e) => return built("argument rules", e),
    }
    let denied_syscalls = (rules.len() + UNAVAILABLE.len()) as u32;
    let deny = match filter(rules, libc::EPERM, arch) {
        Ok(deny) => deny,
        Err(e) => return built("the EPERM filter", e),
    };
    let unavailable = UNAVAILABLE
        .iter()
        .map(|(_, nr)| (*nr, Vec::new()))
        .collect();
    let unavailable = match filter(unavailable, libc::ENOSYS, arch) {
        Ok(unavailable) => unavailable,
        Err(e) => return built("the ENOSYS filter", e),
    };
    #[allow(unused_mut)] // only x86_64 has a third ABI to refuse
    let mut programs = vec![deny, unavailable];
    #[cfg(target_arch = "x86_64")]
    programs.push(x32_guard());
    Ok(Filters {
        programs,
        walls: SeccompWalls {
            arch: std::env::consts::ARCH.to_string(),
            denied_syscalls,
            foreign_abis_blocked: true,
        },
    })
}

/// The rules that look at arguments: set-id modes, namespace flags,
/// personalities, vsock sockets, terminal injection. A system call already
/// refused outright stays refused outright.
fn deny_by_argument(
    rules: &mut BTreeMap<i64, Vec<SeccompRule>>,
) -> Result<(), seccompiler::BackendError> {
    let mut add = |nr: i64, chain: Vec<SeccompRule>| {
        rules.entry(nr).or_insert(chain);
    };
    for (_, nr, mode) in SET_ID_MODES {
        add(*nr, set_id_rules(*mode, None)?);
    }
    for (_, nr, flags) in SET_ID_CREATES {
        let mut chain = set_id_rules(*flags + 1, Some((*flags, libc::O_CREAT as u64)))?;
        chain.extend(set_id_rules(
            *flags + 1,
            Some((*flags, libc::O_TMPFILE as u64)),
        )?);
        add(*nr, chain);
    }
    let namespaces: Vec<SeccompRule> = NAMESPACE_FLAGS
        .iter()
        .map(|flag| rule(vec![masked(0, *flag, *flag)]))
        .collect::<Result<_, _>>()?;
    add(libc::SYS_unshare, namespaces.clone());
    add(libc::SYS_clone, namespaces);
    let personality = HARMLESS_PERSONALITIES
        .iter()
        .map(|p| condition(0, SeccompCmpOp::Ne, *p))
        .collect();
    add(libc::SYS_personality, vec![rule(personality)?]);
    let vsock = condition(0, SeccompCmpOp::Eq, libc::AF_VSOCK as u64);
    add(libc::SYS_socket, vec![rule(vec![vsock])?]);
    let ioctls = TERMINAL_INJECTION
        .iter()
        .map(|request| rule(vec![condition(1, SeccompCmpOp::Eq, *request)]))
        .collect::<Result<_, _>>()?;
    add(libc::SYS_ioctl, ioctls);
    Ok(())
}

/// Installs the filters on the calling thread (and so on what it executes).
/// Needs `no_new_privs`.
pub(crate) fn install(spec: &LaunchSpec, filters: Filters) -> Result<SeccompWalls, SetupError> {
    checkpoint(spec, SetupStep::Seccomp)?;
    for program in &filters.programs {
        seccompiler::apply_filter(program)
            .map_err(|e| io::Error::other(e.to_string()))
            .at(SetupStep::Seccomp, "seccomp(SECCOMP_SET_MODE_FILTER)")?;
    }
    Ok(filters.walls)
}

/// Names of every system call the filter refuses unconditionally, for the docs
/// and tests.
pub fn denied_names() -> Vec<&'static str> {
    DENIED
        .iter()
        .chain(UNAVAILABLE)
        .map(|(name, _)| *name)
        .collect()
}

fn target_arch() -> io::Result<TargetArch> {
    TargetArch::try_from(std::env::consts::ARCH).map_err(|_| {
        io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "no seccomp filter for the {} architecture (x86_64 and aarch64 are supported)",
                std::env::consts::ARCH
            ),
        )
    })
}

fn filter(
    rules: BTreeMap<i64, Vec<SeccompRule>>,
    errno: i32,
    arch: TargetArch,
) -> Result<BpfProgram, seccompiler::BackendError> {
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(errno as u32),
        arch,
    )?;
    filter.try_into()
}

fn condition(arg: u8, op: SeccompCmpOp, value: u64) -> SeccompCondition {
    SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op, value)
        .expect("argument indexes below 6 always make a condition")
}

fn masked(arg: u8, mask: u64, value: u64) -> SeccompCondition {
    condition(arg, SeccompCmpOp::MaskedEq(mask), value)
}

fn rule(conditions: Vec<SeccompCondition>) -> Result<SeccompRule, seccompiler::BackendError> {
    SeccompRule::new(conditions)
}

/// Rules matching a mode (argument `mode`) with `S_ISUID` or `S_ISGID`,
/// optionally only when argument `flags.0` has the bits `flags.1`.
fn set_id_rules(
    mode: u8,
    flags: Option<(u8, u64)>,
) -> Result<Vec<SeccompRule>, seccompiler::BackendError> {
    [libc::S_ISUID as u64, libc::S_ISGID as u64]
        .into_iter()
        .map(|bit| {
            let mut conditions = vec![masked(mode, bit, bit)];
            if let Some((index, bits)) = flags {
                conditions.push(masked(index, bits, bits));
            }
            rule(conditions)
        })
        .collect()
}

/// Refuses every x32 system call number (x86_64 numbers with bit 30 set),
/// which the other filters, keyed by x86_64 numbers, would let through.
#[cfg(target_arch = "x86_64")]
fn x32_guard() -> BpfProgram {
    use seccompiler::sock_filter;
    const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
    let stmt = |code: u32, k: u32| sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let jump = |code: u32, k: u32, jt: u8, jf: u8| sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    };
    vec![
        // seccomp_data.arch at offset 4, .nr at offset 0.
        stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 4),
        jump(
            libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
            AUDIT_ARCH_X86_64,
            1,
            0,
        ),
        stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_KILL_PROCESS),
        stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0),
        jump(
            libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K,
            X32_SYSCALL_BIT,
            0,
            1,
        ),
        stmt(
            libc::BPF_RET | libc::BPF_K,
            libc::SECCOMP_RET_ERRNO | libc::EPERM as u32,
        ),
        stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_compiles_into_filters_within_the_kernel_limit() {
        let spec: LaunchSpec = serde_json::from_value(serde_json::json!({
            "root_dir": "/r", "root_overlay": false, "mounts": [], "cwd": "/r",
            "program": "/bin/true", "argv": ["true"], "env": [],
            "allow_network": false, "allow_missing_landlock": false,
            "limits": crate::sandbox::ResourceLimits::default(), "cpu_seconds": 1, "fail_at": null
        }))
        .unwrap();
        let filters = compile(&spec).unwrap();
        for program in &filters.programs {
            assert!(program.len() < 4096, "{} instructions", program.len());
        }
        assert!(filters.walls.denied_syscalls as usize > DENIED.len());
        assert!(denied_names().contains(&"keyctl"));
    }
}
