//! What the sandbox enforced, as data: the setup steps that can fail, the
//! walls a launcher reports once they are all up, and the status the host
//! logs at start and shows in `/health`.
//!
//! The walls are reported by the launcher itself after it built them, never
//! inferred by the host from the policy, so the status cannot claim a wall the
//! kernel refused. This module only describes; it must never decide whether a
//! missing wall is acceptable (the launcher and [`super::bash`] do, closed).

use std::fmt;

use serde::{Deserialize, Serialize};

/// One step of building the sandbox. Every kernel refusal is reported with
/// the step it happened in, so an operator sees *which* wall is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SetupStep {
    /// Reading the launch spec from the host.
    ReadSpec,
    /// Closing inherited file descriptors and moving the control socket.
    Descriptors,
    /// Joining a fresh, empty session keyring (away from the host's keys).
    Keyring,
    /// `unshare` of the user, mount, pid, ipc, uts, cgroup (and network) namespaces.
    Unshare,
    /// Writing `/proc/self/setgroups`, `uid_map` and `gid_map`.
    IdMap,
    /// Forking the namespace's init process.
    Fork,
    /// Tying the init's life to the launcher (`PR_SET_PDEATHSIG`).
    DeathSignal,
    /// Reading what the new root needs from the host (system dirs, `/etc` files).
    Survey,
    /// Making every mount private so nothing propagates back to the host.
    MountPropagation,
    /// Mounting the staging tmpfs and pivoting into it.
    StageRoot,
    /// Mounting the tmpfs that becomes `/`.
    NewRoot,
    /// Bind-mounting the system directories read-only.
    SystemDirs,
    /// Writing the minimal `/etc`.
    Etc,
    /// Building the minimal `/dev`.
    Dev,
    /// Mounting a fresh `/proc` for the new pid namespace.
    Proc,
    /// Capping the namespace's process count and forbidding nested user namespaces.
    NamespaceLimits,
    /// Mounting the private `/tmp`.
    Tmp,
    /// Bind-mounting the root dir (read-write for bash, read-only for builds).
    RootDir,
    /// Mounting the further directories of the launch (toolchains, caches).
    Mounts,
    /// Remounting the new root read-only.
    SealRoot,
    /// `pivot_root` into the new root and detaching the old one.
    PivotRoot,
    /// Setting the sandbox hostname.
    Hostname,
    /// Changing into the working directory.
    Chdir,
    /// Setting resource limits.
    Rlimits,
    /// `PR_SET_NO_NEW_PRIVS`.
    NoNewPrivs,
    /// Locking the securebits and dropping every capability.
    Capabilities,
    /// Enforcing the Landlock ruleset.
    Landlock,
    /// Compiling and installing the seccomp filter.
    Seccomp,
    /// Reporting to the host.
    Report,
    /// Executing the program (the walls are up; the program itself is missing).
    Exec,
    /// Supervising the namespace (poll, wait).
    Supervise,
}

impl SetupStep {
    /// Every step in the order the launcher takes them.
    pub const ALL: [SetupStep; 31] = [
        Self::ReadSpec,
        Self::Descriptors,
        Self::Keyring,
        Self::Unshare,
        Self::IdMap,
        Self::Fork,
        Self::DeathSignal,
        Self::Survey,
        Self::MountPropagation,
        Self::StageRoot,
        Self::NewRoot,
        Self::SystemDirs,
        Self::Etc,
        Self::Dev,
        Self::Proc,
        Self::NamespaceLimits,
        Self::Tmp,
        Self::RootDir,
        Self::Mounts,
        Self::SealRoot,
        Self::PivotRoot,
        Self::Hostname,
        Self::Chdir,
        Self::Rlimits,
        Self::NoNewPrivs,
        Self::Capabilities,
        Self::Landlock,
        Self::Seccomp,
        Self::Report,
        Self::Exec,
        Self::Supervise,
    ];

    /// Human-readable name of the step.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ReadSpec => "reading the launch spec",
            Self::Descriptors => "closing inherited descriptors",
            Self::Keyring => "joining a fresh session keyring",
            Self::Unshare => "unsharing namespaces",
            Self::IdMap => "mapping uid/gid into the user namespace",
            Self::Fork => "forking the namespace init",
            Self::DeathSignal => "setting the parent-death signal",
            Self::Survey => "surveying host system directories",
            Self::MountPropagation => "making mounts private",
            Self::StageRoot => "staging the new root",
            Self::NewRoot => "mounting the new root tmpfs",
            Self::SystemDirs => "bind-mounting system directories read-only",
            Self::Etc => "writing the minimal /etc",
            Self::Dev => "building the minimal /dev",
            Self::Proc => "mounting /proc",
            Self::NamespaceLimits => "limiting processes and nested user namespaces",
            Self::Tmp => "mounting the private /tmp",
            Self::RootDir => "bind-mounting the root dir",
            Self::Mounts => "mounting toolchain and cache directories",
            Self::SealRoot => "remounting the new root read-only",
            Self::PivotRoot => "pivot_root into the new root",
            Self::Hostname => "setting the hostname",
            Self::Chdir => "changing into the working directory",
            Self::Rlimits => "setting resource limits",
            Self::NoNewPrivs => "setting no_new_privs",
            Self::Capabilities => "dropping capabilities",
            Self::Landlock => "enforcing Landlock",
            Self::Seccomp => "installing the seccomp filter",
            Self::Report => "reporting to the host",
            Self::Exec => "executing the program",
            Self::Supervise => "supervising the sandbox",
        }
    }
}

impl fmt::Display for SetupStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Resource limits of one bash call. Every process in the sandbox gets them;
/// the process cap also applies to the whole pid namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceLimits {
    /// `RLIMIT_AS` of every process.
    pub address_space_bytes: u64,
    /// `RLIMIT_NPROC`; the pid namespace is also capped (`pid_max`) at
    /// [`RESERVED_PIDS`](Self::RESERVED_PIDS) + this, which also binds a host
    /// running as root, whom the kernel exempts from `RLIMIT_NPROC`.
    pub processes: u64,
    /// `RLIMIT_FSIZE`: largest file a process may write (`SIGXFSZ` beyond).
    pub file_size_bytes: u64,
    /// `RLIMIT_NOFILE`.
    pub open_files: u64,
    /// Size of the private `/tmp` (and of `/dev/shm`, which is a quarter of it).
    pub tmp_size_bytes: u64,
}

impl ResourceLimits {
    /// Pids the kernel keeps below the wrap-around point of a pid namespace:
    /// once a namespace has used this many pids it allocates only above it, so
    /// `pid_max` must exceed it by the wanted number of processes.
    pub const RESERVED_PIDS: u64 = 300;

    /// The namespace's `pid_max` for these limits.
    pub fn pid_max(&self) -> u64 {
        Self::RESERVED_PIDS + self.processes.max(1) + 1
    }
}

impl Default for ResourceLimits {
    fn default() -> Self {
        Self {
            address_space_bytes: 2 << 30,
            processes: 256,
            file_size_bytes: 1 << 30,
            open_files: 1024,
            tmp_size_bytes: 256 << 20,
        }
    }
}

/// Whether the sandbox may reach any network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NetworkWall {
    /// A new, empty network namespace (not even loopback is up), plus Landlock
    /// TCP rules when the kernel has them.
    Isolated,
    /// The host's network (`--allow-network`).
    Host,
}

/// The Landlock part of the walls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LandlockWalls {
    /// Landlock ABI the ruleset was built for (the kernel's, capped at the
    /// newest ABI this host was tested with).
    pub abi: u8,
    /// TCP `bind`/`connect` are denied (ABI 4+, network isolated).
    pub tcp_denied: bool,
    /// Abstract unix sockets and signals are scoped to the sandbox (ABI 6+).
    pub scoped: bool,
}

/// The seccomp part of the walls.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SeccompWalls {
    /// Architecture the filter was built for.
    pub arch: String,
    /// System calls refused outright or by their arguments.
    pub denied_syscalls: u32,
    /// Other ABIs (x32 numbers, foreign architectures) are refused.
    pub foreign_abis_blocked: bool,
}

/// Every wall one launcher built, reported by the launcher just before it
/// executed the shell.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Walls {
    /// Namespaces the shell runs in (all new).
    pub namespaces: Vec<String>,
    /// Network reachability.
    pub network: NetworkWall,
    /// Landlock, or `None` when the kernel lacks it and the operator allowed that.
    pub landlock: Option<LandlockWalls>,
    /// `no_new_privs` is set.
    pub no_new_privs: bool,
    /// Bounding, ambient, effective, permitted and inheritable sets are empty
    /// and `SECBIT_NOROOT` is locked.
    pub capabilities_dropped: bool,
    /// Nested user namespaces are forbidden (`user.max_user_namespaces = 0`).
    pub nested_userns_blocked: bool,
    /// The seccomp filter installed before the program was executed.
    pub seccomp: SeccompWalls,
    /// The program's session keyring is a fresh, empty one, not the host's.
    pub session_keyring_isolated: bool,
    /// The namespace's `pid_max`, when the kernel lets a namespace set it.
    pub pid_max: Option<u64>,
    /// Resource limits applied.
    pub limits: ResourceLimits,
    /// `RLIMIT_CPU` applied (derived from the call's timeout).
    pub cpu_seconds: u64,
}

/// What the bash tool can do on this host, as measured by running a confined
/// `true` through the launcher.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxStatus {
    /// The confined bash tool works.
    pub available: bool,
    /// Why it does not, naming the missing wall.
    pub error: Option<String>,
    /// The walls, when available.
    pub walls: Option<Walls>,
}

impl fmt::Display for SandboxStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(walls) = self.walls.as_ref().filter(|_| self.available) else {
            let why = self.error.as_deref().unwrap_or("unknown reason");
            return write!(
                f,
                "bash sandbox UNAVAILABLE (bash calls fail closed): {why}"
            );
        };
        write!(
            f,
            "bash sandbox enforced: namespaces {}; pivot_root into a fresh root; ",
            walls.namespaces.join(",")
        )?;
        match walls.network {
            NetworkWall::Isolated => f.write_str("network isolated; ")?,
            NetworkWall::Host => f.write_str("HOST NETWORK (--allow-network); ")?,
        }
        match walls.landlock {
            Some(l) => write!(
                f,
                "landlock ABI {} (fs{}{}); ",
                l.abi,
                if l.tcp_denied { ", tcp" } else { "" },
                if l.scoped { ", scopes" } else { "" }
            )?,
            None => f.write_str("LANDLOCK MISSING (--allow-missing-landlock); ")?,
        }
        if walls.no_new_privs {
            f.write_str("no_new_privs; ")?;
        }
        if walls.capabilities_dropped {
            f.write_str("all capabilities dropped; ")?;
        }
        if walls.nested_userns_blocked {
            f.write_str("nested user namespaces blocked; ")?;
        }
        write!(
            f,
            "seccomp ({} syscalls refused, {}); ",
            walls.seccomp.denied_syscalls, walls.seccomp.arch
        )?;
        if walls.session_keyring_isolated {
            f.write_str("fresh session keyring; ")?;
        }
        let l = &walls.limits;
        write!(
            f,
            "rlimits as={}MiB nproc={} fsize={}MiB nofile={} cpu=timeout+1s; /tmp {}MiB",
            l.address_space_bytes >> 20,
            l.processes,
            l.file_size_bytes >> 20,
            l.open_files,
            l.tmp_size_bytes >> 20
        )?;
        match walls.pid_max {
            Some(max) => write!(f, "; pid_max {max}"),
            None => f.write_str("; no per-namespace pid_max (kernel < 6.14)"),
        }
    }
}
