//! The sandbox's filesystem view, built inside the new mount namespace.
//!
//! A fresh tmpfs becomes `/`; into it go the system directories read-only
//! (symlinks such as `/bin -> usr/bin` are recreated as symlinks), a minimal
//! `/etc` written from scratch (generated `passwd`/`group`/`hosts`, a few
//! copied files, never `shadow`, never `resolv.conf` without network), a
//! `/dev` with only null, zero, full, random and urandom, a fresh read-only
//! `/proc` of the new pid namespace, a private `/tmp`, the root dir at its
//! host path (read-write for bash, read-only for guest builds) and the
//! launch's further mounts (a build's toolchain, dependency cache and target
//! dir). Then `pivot_root` and the old root is detached: nothing else of the
//! host exists inside.
//!
//! The host root is first staged away (a tmpfs on `/tmp` becomes the root and
//! the host root moves under `/oldroot`), so a root dir anywhere — including
//! under the host's `/tmp` — can be bound. This module must never bind a host
//! path that is not listed here, never leave the old root attached, and never
//! leave a mount writable except the root dir (when the spec says so), `/tmp`,
//! `/dev/shm` and the spec's read-write mounts.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use rustix::mount::{MountFlags, MountPropagationFlags, UnmountFlags};

use super::launcher::{AtStep, SANDBOX_HOSTNAME, SetupError, checkpoint};
use super::protocol::{LaunchSpec, Mount};
use super::status::SetupStep;

/// System directories visible read-only (where the host has them).
pub(crate) const SYSTEM_DIRS: [&str; 7] = [
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
];
/// Host `/etc` files copied (following symlinks) into the sandbox's `/etc`.
const ETC_COPIES: [&str; 6] = [
    "ld.so.cache",
    "ld.so.conf",
    "localtime",
    "protocols",
    "services",
    "os-release",
];
/// Host `/etc` directories bound read-only: public data only.
const ETC_BINDS: [&str; 4] = [
    "alternatives",
    "ssl/certs",
    "pki/tls/certs",
    "pki/ca-trust/extracted",
];
/// Device nodes bound from the host's `/dev`.
pub(crate) const DEV_NODES: [&str; 5] = ["null", "zero", "full", "random", "urandom"];

/// Where the host root is staged (a mount point that exists on every host;
/// what lies under it stays reachable through `/oldroot` until the pivot).
const STAGE: &str = "/tmp";
const OLD: &str = "/oldroot";
const NEW: &str = "/newroot";

const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;
const MOUNT_ATTR_NOEXEC: u64 = 0x8;

/// A system directory as found on the host.
enum SystemEntry {
    /// A real directory at this canonical host path.
    Dir(PathBuf),
    /// A symlink with this target (recreated as is).
    Symlink(PathBuf),
}

/// What the new root needs from the host, read before anything is mounted.
pub(crate) struct Survey {
    system: Vec<(&'static str, SystemEntry)>,
    etc_files: Vec<(&'static str, Vec<u8>)>,
    etc_dirs: Vec<(&'static str, PathBuf)>,
}

/// Facts about the built root that the status reports.
pub(crate) struct RootInfo {
    /// The namespace's `pid_max`, if the kernel lets a namespace set it.
    pub pid_max: Option<u64>,
    /// `user.max_user_namespaces` is 0 inside.
    pub nested_userns_blocked: bool,
}

/// Reads the host side: which system dirs exist (and whether they are
/// symlinks), and the `/etc` files to copy.
pub(crate) fn survey(spec: &LaunchSpec) -> Result<Survey, SetupError> {
    checkpoint(spec, SetupStep::Survey)?;
    let mut system = Vec::new();
    for dir in SYSTEM_DIRS {
        let Ok(meta) = fs::symlink_metadata(dir) else {
            continue;
        };
        let entry = if meta.file_type().is_symlink() {
            SystemEntry::Symlink(fs::read_link(dir).at(SetupStep::Survey, dir)?)
        } else if meta.is_dir() {
            SystemEntry::Dir(fs::canonicalize(dir).at(SetupStep::Survey, dir)?)
        } else {
            continue;
        };
        system.push((dir, entry));
    }
    let mut etc_files = Vec::new();
    let copies = ETC_COPIES
        .iter()
        .chain(spec.allow_network.then_some(&"resolv.conf"));
    for name in copies {
        let path = Path::new("/etc").join(name);
        match fs::read(&path) {
            Ok(bytes) if bytes.len() <= 4 << 20 => etc_files.push((*name, bytes)),
            _ => {}
        }
    }
    let mut etc_dirs = Vec::new();
    for name in ETC_BINDS {
        if let Ok(real) = fs::canonicalize(Path::new("/etc").join(name))
            && real.is_dir()
        {
            etc_dirs.push((name, real));
        }
    }
    Ok(Survey {
        system,
        etc_files,
        etc_dirs,
    })
}

/// Builds the new root and pivots into it. On return the process's `/` is
/// the sandbox root and the host's root is detached.
pub(crate) fn build(spec: &LaunchSpec, survey: &Survey) -> Result<RootInfo, SetupError> {
    use SetupStep as S;

    checkpoint(spec, S::MountPropagation)?;
    rustix::mount::mount_change(
        "/",
        MountPropagationFlags::PRIVATE | MountPropagationFlags::REC,
    )
    .at(S::MountPropagation, "make / rprivate")?;

    checkpoint(spec, S::StageRoot)?;
    mount_tmpfs(STAGE, "mode=0700,size=64k", S::StageRoot)?;
    for dir in ["oldroot", "newroot"] {
        fs::create_dir(Path::new(STAGE).join(dir)).at(S::StageRoot, dir)?;
    }
    rustix::process::pivot_root(STAGE, Path::new(STAGE).join("oldroot"))
        .at(S::StageRoot, "pivot_root into the staging tmpfs")?;
    rustix::process::chdir("/").at(S::StageRoot, "chdir /")?;

    checkpoint(spec, S::NewRoot)?;
    mount_tmpfs(NEW, "mode=0755,size=16m,nr_inodes=4096", S::NewRoot)?;

    checkpoint(spec, S::SystemDirs)?;
    for (dir, entry) in &survey.system {
        let target = new_path(dir);
        match entry {
            SystemEntry::Symlink(link) => symlink(link, &target).at(S::SystemDirs, *dir)?,
            SystemEntry::Dir(real) => {
                fs::create_dir(&target).at(S::SystemDirs, *dir)?;
                bind_read_only(&old_path(real), &target, S::SystemDirs)?;
            }
        }
    }

    checkpoint(spec, S::Etc)?;
    write_etc(spec, survey)?;

    checkpoint(spec, S::Dev)?;
    build_dev(spec)?;

    checkpoint(spec, S::Proc)?;
    let proc = new_path("/proc");
    fs::create_dir(&proc).at(S::Proc, "/proc")?;
    rustix::mount::mount(
        "proc",
        &proc,
        "proc",
        MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
        None,
    )
    .at(S::Proc, "mount proc")?;
    mask_proc_files(&proc)?;

    checkpoint(spec, S::NamespaceLimits)?;
    let info = limit_namespace(spec, &proc)?;
    set_mount_attrs(&proc, MOUNT_ATTR_RDONLY, false).at(S::Proc, "remount /proc read-only")?;

    checkpoint(spec, S::Tmp)?;
    let tmp = new_path("/tmp");
    fs::create_dir(&tmp).at(S::Tmp, "/tmp")?;
    let inodes = (spec.limits.tmp_size_bytes / 4096).clamp(1024, 1 << 20);
    mount_tmpfs(
        &tmp,
        &format!(
            "mode=1777,size={},nr_inodes={inodes}",
            spec.limits.tmp_size_bytes.max(4096)
        ),
        S::Tmp,
    )?;

    checkpoint(spec, S::RootDir)?;
    checkpoint(spec, S::Mounts)?;
    // Mounts holding the root dir first (a later bind of an ancestor would
    // hide it), then the root dir, then the rest, parents before children.
    let (holding, others): (Vec<&Mount>, Vec<&Mount>) = spec
        .mounts
        .iter()
        .partition(|m| spec.root_dir.starts_with(m.path()));
    for mount in holding {
        mount_extra(spec, mount)?;
    }
    let root = new_path(&spec.root_dir);
    fs::create_dir_all(&root).at(S::RootDir, "mount point")?;
    if spec.root_overlay {
        mount_overlay(spec, &spec.root_dir, S::RootDir)?;
    } else {
        rustix::mount::mount_bind_recursive(old_path(&spec.root_dir), &root)
            .at(S::RootDir, spec.root_dir.display().to_string())?;
        set_mount_attrs(&root, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, true)
            .at(S::RootDir, "nosuid,nodev")?;
    }
    for mount in others {
        mount_extra(spec, mount)?;
    }

    checkpoint(spec, S::SealRoot)?;
    set_mount_attrs(Path::new(NEW), MOUNT_ATTR_RDONLY, false).at(S::SealRoot, "/")?;

    checkpoint(spec, S::PivotRoot)?;
    pivot_into_new_root()?;
    Ok(info)
}

/// `/proc` files that show machine-wide state namespaces do not separate
/// (the descriptions of every key the uid can view, kernel timers and the
/// scheduler's view of every task), covered with an empty file as container
/// runtimes do.
const MASKED_PROC_FILES: [&str; 4] = ["keys", "key-users", "timer_list", "sched_debug"];

fn mask_proc_files(proc: &Path) -> Result<(), SetupError> {
    let empty = Path::new(OLD).join("dev/null");
    for name in MASKED_PROC_FILES {
        let target = proc.join(name);
        if target.exists() {
            rustix::mount::mount_bind(&empty, &target)
                .at(SetupStep::Proc, format!("mask /proc/{name}"))?;
        }
    }
    Ok(())
}

/// One of the launch's further mounts, at its host path.
fn mount_extra(spec: &LaunchSpec, mount: &Mount) -> Result<(), SetupError> {
    let step = SetupStep::Mounts;
    let target = new_path(mount.path());
    fs::create_dir_all(&target).at(step, format!("mount point {}", mount.path().display()))?;
    match mount {
        Mount::ReadOnly(path) => bind_read_only(&old_path(path), &target, step),
        Mount::ReadWrite(path) => {
            rustix::mount::mount_bind_recursive(old_path(path), &target)
                .at(step, format!("bind {}", path.display()))?;
            set_mount_attrs(&target, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, true)
                .at(step, format!("{} nosuid,nodev", path.display()))
        }
        Mount::Tmpfs(_) => mount_tmpfs(&target, "mode=0755,size=64m,nr_inodes=16384", step),
        Mount::Overlay(path) => mount_overlay(spec, path, step),
    }
}

/// Mounts `path` at its place in the new root as an overlay: the host
/// directory is the read-only lower layer, the upper layer is a tmpfs of the
/// launch's `/tmp` size in the staging root, which the final `pivot_root`
/// detaches (the overlay keeps its own reference), so nothing inside can
/// reach it and nothing written reaches the host.
fn mount_overlay(spec: &LaunchSpec, path: &Path, step: SetupStep) -> Result<(), SetupError> {
    let lower = old_path(path);
    let lower_text = lower.to_str().unwrap_or(",");
    if lower_text.contains([',', ':', '\\']) {
        return Err(io::Error::from(io::ErrorKind::InvalidInput)).at(
            step,
            format!(
                "{} cannot be an overlay layer (its path holds ',', ':' or '\\')",
                path.display()
            ),
        );
    }
    let scratch = Path::new("/").join(format!("overlay-{}", overlay_count()));
    fs::create_dir(&scratch).at(step, "overlay scratch dir")?;
    mount_tmpfs(
        &scratch,
        &format!("mode=0700,size={}", spec.limits.tmp_size_bytes.max(4096)),
        step,
    )?;
    for dir in ["upper", "work"] {
        fs::create_dir(scratch.join(dir)).at(step, "overlay layers")?;
    }
    let options = format!(
        "lowerdir={lower_text},upperdir={}/upper,workdir={}/work,userxattr",
        scratch.display(),
        scratch.display()
    );
    let data = CString::new(options)
        .map_err(io::Error::other)
        .at(step, "overlay options")?;
    let target = new_path(path);
    rustix::mount::mount(
        "overlay",
        &target,
        "overlay",
        MountFlags::NOSUID | MountFlags::NODEV,
        data.as_c_str(),
    )
    .at(step, format!("overlay on {}", path.display()))
}

/// A fresh number for each overlay's scratch dir within this launch.
fn overlay_count() -> usize {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Caps the number of tasks of the pid namespace and forbids nested user
/// namespaces (the only namespace an unprivileged process could still create,
/// and with it a fresh set of capabilities over it).
fn limit_namespace(spec: &LaunchSpec, proc: &Path) -> Result<RootInfo, SetupError> {
    fs::write(proc.join("sys/user/max_user_namespaces"), "0")
        .at(SetupStep::NamespaceLimits, "user.max_user_namespaces = 0")?;
    let pid_max = spec.limits.pid_max();
    let pid_max = match fs::write(proc.join("sys/kernel/pid_max"), pid_max.to_string()) {
        Ok(()) => Some(pid_max),
        // The kernel exempts the global root user from RLIMIT_NPROC, so for a
        // host running as root the namespace cap is the only process limit.
        Err(e) if rustix::process::getuid().is_root() => {
            return Err(e).at(
                SetupStep::NamespaceLimits,
                "kernel.pid_max of the pid namespace (Linux 6.14+): a host running as root is \
                 exempt from RLIMIT_NPROC, so without it nothing bounds the process count; run \
                 the host as an unprivileged user",
            );
        }
        Err(_) => None,
    };
    Ok(RootInfo {
        pid_max,
        nested_userns_blocked: true,
    })
}

fn write_etc(spec: &LaunchSpec, survey: &Survey) -> Result<(), SetupError> {
    let etc = new_path("/etc");
    fs::create_dir(&etc).at(SetupStep::Etc, "/etc")?;
    let uid = rustix::process::getuid().as_raw();
    let gid = rustix::process::getgid().as_raw();
    let home = spec.root_dir.display();
    let (user, group) = if uid == 0 {
        ("root", "root")
    } else {
        ("sandbox", "sandbox")
    };
    let mut passwd = format!("{user}:x:{uid}:{gid}:smithers sandbox:{home}:/bin/bash\n");
    let mut groups = format!("{group}:x:{gid}:\n");
    if uid != 0 {
        passwd = format!("root:x:0:0:root:/root:/usr/sbin/nologin\n{passwd}");
        groups = format!("root:x:0:\n{groups}");
    }
    passwd.push_str("nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n");
    groups.push_str("nogroup:x:65534:\n");
    let generated = [
        ("passwd", passwd),
        ("group", groups),
        (
            "hosts",
            format!("127.0.0.1\tlocalhost\n::1\tlocalhost\n127.0.1.1\t{SANDBOX_HOSTNAME}\n"),
        ),
        ("hostname", format!("{SANDBOX_HOSTNAME}\n")),
        (
            "nsswitch.conf",
            "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\nnetworks: files\n\
             protocols: files\nservices: files\n"
                .to_string(),
        ),
    ];
    for (name, text) in generated {
        fs::write(etc.join(name), text).at(SetupStep::Etc, name)?;
    }
    for (name, bytes) in &survey.etc_files {
        fs::write(etc.join(name), bytes).at(SetupStep::Etc, *name)?;
    }
    for (name, real) in &survey.etc_dirs {
        let target = etc.join(name);
        fs::create_dir_all(&target).at(SetupStep::Etc, *name)?;
        bind_read_only(&old_path(real), &target, SetupStep::Etc)?;
    }
    Ok(())
}

fn build_dev(spec: &LaunchSpec) -> Result<(), SetupError> {
    let dev = new_path("/dev");
    fs::create_dir(&dev).at(SetupStep::Dev, "/dev")?;
    for node in DEV_NODES {
        let target = dev.join(node);
        fs::write(&target, b"").at(SetupStep::Dev, node)?;
        rustix::mount::mount_bind(Path::new(OLD).join("dev").join(node), &target)
            .at(SetupStep::Dev, format!("bind /dev/{node}"))?;
        set_mount_attrs(&target, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC, false)
            .at(SetupStep::Dev, format!("/dev/{node} nosuid,noexec"))?;
    }
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        symlink(target, dev.join(name)).at(SetupStep::Dev, name)?;
    }
    let shm = dev.join("shm");
    fs::create_dir(&shm).at(SetupStep::Dev, "shm")?;
    let size = (spec.limits.tmp_size_bytes / 4).max(4096);
    mount_tmpfs(&shm, &format!("mode=1777,size={size}"), SetupStep::Dev)
}

/// `pivot_root` into `/newroot`, then detach the staging root and with it the
/// host's (the `pivot_root(".", ".")` idiom of bubblewrap and runc).
fn pivot_into_new_root() -> Result<(), SetupError> {
    use SetupStep::PivotRoot as P;
    rustix::mount::mount_change(
        OLD,
        MountPropagationFlags::PRIVATE | MountPropagationFlags::REC,
    )
    .at(P, "make /oldroot rprivate")?;
    rustix::mount::unmount(OLD, UnmountFlags::DETACH).at(P, "detach the host root")?;
    let stage = fs::File::open("/").at(P, "open the staging root")?;
    rustix::process::chdir(NEW).at(P, "chdir /newroot")?;
    rustix::process::pivot_root(".", ".").at(P, "pivot_root(., .)")?;
    rustix::process::fchdir(&stage).at(P, "fchdir(staging root)")?;
    rustix::mount::unmount(".", UnmountFlags::DETACH).at(P, "detach the staging root")?;
    drop(stage);
    rustix::process::chdir("/").at(P, "chdir /")?;
    Ok(())
}

fn mount_tmpfs(target: impl AsRef<Path>, options: &str, step: SetupStep) -> Result<(), SetupError> {
    let target = target.as_ref();
    let data = CString::new(options).expect("mount options contain no NUL");
    rustix::mount::mount(
        "tmpfs",
        target,
        "tmpfs",
        MountFlags::NOSUID | MountFlags::NODEV,
        data.as_c_str(),
    )
    .at(step, format!("mount tmpfs on {}", target.display()))
}

/// Recursive bind, then read-only, nosuid and nodev on every mount of the copy.
fn bind_read_only(source: &Path, target: &Path, step: SetupStep) -> Result<(), SetupError> {
    rustix::mount::mount_bind_recursive(source, target)
        .at(step, format!("bind {}", target.display()))?;
    set_mount_attrs(
        target,
        MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
        true,
    )
    .at(step, format!("{} read-only", target.display()))
}

/// `mount_setattr(2)` (Linux 5.12+): adds `attrs` to the mount at `path`, and
/// with `recursive` to every mount below it, which a plain remount cannot.
fn set_mount_attrs(path: &Path, attrs: u64, recursive: bool) -> io::Result<()> {
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    let attr = MountAttr {
        attr_set: attrs,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    let c_path = CString::new(path.as_os_str().as_bytes())?;
    let flags = if recursive { libc::AT_RECURSIVE } else { 0 };
    // SAFETY: `c_path` is NUL-terminated and `attr` is a valid `struct
    // mount_attr` whose size is passed; both outlive the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            c_path.as_ptr(),
            flags as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `path` (absolute, from the host's view) inside the new root.
fn new_path(path: impl AsRef<Path>) -> PathBuf {
    under(NEW, path.as_ref())
}

/// `path` (absolute, from the host's view) under the staged host root.
fn old_path(path: impl AsRef<Path>) -> PathBuf {
    under(OLD, path.as_ref())
}

fn under(base: &str, path: &Path) -> PathBuf {
    Path::new(base).join(path.strip_prefix("/").unwrap_or(path))
}
