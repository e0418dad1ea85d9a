//! Landlock: the second wall, enforced by the init on itself (and so on the
//! shell) after `pivot_root`.
//!
//! Even if a mount were writable by mistake, Landlock allows writes only under
//! the root dir (unless the launch makes it read-only), `/tmp`, `/dev/shm`,
//! the launch's writable mounts and the five device nodes; reads and
//! execution under the system dirs, `/etc` and the launch's read-only mounts;
//! reads of `/proc`; directory listing everywhere (the mount namespace already decides what exists). With
//! the network isolated and ABI 4+, TCP `bind`/`connect` are denied too; with
//! ABI 6+, abstract unix sockets and signals are scoped to the sandbox.
//!
//! The ruleset is built for the kernel's ABI capped at [`TESTED_ABI`] with the
//! crate's *hard requirement* level, so nothing is dropped silently; what was
//! enforced is reported in [`LandlockWalls`]. This module must never fall back
//! to best effort: a kernel without Landlock fails the launch unless the
//! operator passed `--allow-missing-landlock`.

use std::io;
use std::path::Path;

use landlock::{
    ABI, Access, AccessFs, AccessNet, CompatLevel, Compatible, PathBeneath, PathFd, Ruleset,
    RulesetAttr, RulesetCreatedAttr, RulesetStatus, Scope,
};

use super::launcher::{AtStep, SetupError, checkpoint};
use super::protocol::LaunchSpec;
use super::rootfs::{DEV_NODES, SYSTEM_DIRS};
use super::status::{LandlockWalls, SetupStep};

/// Newest Landlock ABI whose access rights this module was written and
/// tested against (newer kernels are used at this level).
pub(crate) const TESTED_ABI: i32 = 6;

/// The kernel's Landlock ABI version, or the errno saying why there is none.
pub(crate) fn kernel_abi() -> Result<i32, io::Error> {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: with the VERSION flag the kernel ignores the (null) attribute
    // pointer and size and only returns the ABI version.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    if v < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(v as i32)
}

/// Restricts the calling process. `Ok(None)` only when the kernel lacks
/// Landlock and the spec allows that.
pub(crate) fn enforce(spec: &LaunchSpec) -> Result<Option<LandlockWalls>, SetupError> {
    checkpoint(spec, SetupStep::Landlock)?;
    let version = match kernel_abi() {
        Ok(v) if v >= 1 => v,
        Ok(_) | Err(_) if spec.allow_missing_landlock => return Ok(None),
        Ok(v) => {
            return Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP)).at(
                SetupStep::Landlock,
                format!("kernel reports Landlock ABI {v}"),
            );
        }
        Err(e) => {
            return Err(e).at(
                SetupStep::Landlock,
                "the kernel has no usable Landlock (build with CONFIG_SECURITY_LANDLOCK and add \
                 `landlock` to the lsm= boot list, or pass --allow-missing-landlock)",
            );
        }
    };
    let level = version.min(TESTED_ABI);
    let abi = ABI::from(level);
    let tcp_denied = !spec.allow_network && abi >= ABI::V4;
    let scoped = abi >= ABI::V6;
    build(spec, abi, tcp_denied, scoped)
        .map_err(io::Error::other)
        .at(SetupStep::Landlock, format!("ruleset for ABI {level}"))?;
    Ok(Some(LandlockWalls {
        abi: level as u8,
        tcp_denied,
        scoped,
    }))
}

fn build(
    spec: &LaunchSpec,
    abi: ABI,
    tcp_denied: bool,
    scoped: bool,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let all = AccessFs::from_all(abi);
    let read_exec = AccessFs::from_read(abi);
    let device = AccessFs::from_file(abi) & !AccessFs::Execute;

    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::HardRequirement)
        .handle_access(all)?;
    if tcp_denied {
        ruleset = ruleset.handle_access(AccessNet::from_all(abi))?;
    }
    if scoped {
        ruleset = ruleset.scope(Scope::from_all(abi))?;
    }
    let mut ruleset = ruleset
        .create()?
        .add_rule(PathBeneath::new(PathFd::new("/")?, AccessFs::ReadDir))?
        .add_rule(PathBeneath::new(PathFd::new("/etc")?, read_exec))?
        .add_rule(PathBeneath::new(
            PathFd::new("/proc")?,
            AccessFs::ReadFile | AccessFs::ReadDir,
        ))?;
    for dir in SYSTEM_DIRS.iter().filter(|d| Path::new(d).exists()) {
        ruleset = ruleset.add_rule(PathBeneath::new(PathFd::new(dir)?, read_exec))?;
    }
    for node in DEV_NODES {
        let fd = PathFd::new(Path::new("/dev").join(node))?;
        ruleset = ruleset.add_rule(PathBeneath::new(fd, device))?;
    }
    for dir in [Path::new("/tmp"), Path::new("/dev/shm")] {
        ruleset = ruleset.add_rule(PathBeneath::new(PathFd::new(dir)?, all))?;
    }
    // An overlaid root dir is writable only in its throw-away layer.
    let root_access = all;
    ruleset = ruleset.add_rule(PathBeneath::new(PathFd::new(&spec.root_dir)?, root_access))?;
    for mount in &spec.mounts {
        let access = if mount.writable() { all } else { read_exec };
        ruleset = ruleset.add_rule(PathBeneath::new(PathFd::new(mount.path())?, access))?;
    }
    let status = ruleset.restrict_self()?;
    if status.ruleset != RulesetStatus::FullyEnforced {
        return Err(format!("ruleset only {:?}", status.ruleset).into());
    }
    Ok(())
}
