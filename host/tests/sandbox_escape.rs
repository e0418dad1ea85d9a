//! Escape attempts against the confined bash tool, as data.
//!
//! Each [`Case`] is a command a hostile workflow could run, the host-side
//! fixtures it aims at, and what containment looks like. One runner
//! ([`run_case`]) prepares a fresh root and an "outside" directory next to it,
//! runs the command through `run_bash`, and then checks, for every case:
//! nothing secret leaked into the output (the outside file's content, a
//! secret variable of this test process), nothing outside changed, no host
//! marker file appeared, the host's hostname is unchanged, no listener the
//! test opened was reached (unless the case allows the network), no process
//! carrying the case's marker survived the call, and a plain `echo ok`
//! still works in the same root afterwards. Commands print `ESCAPED` when an
//! attempt that must fail succeeded.
//!
//! The table is plain data so that it can also be driven through a real
//! workflow over HTTP. Markers are only ever created in temp dirs; the only
//! host paths named are read-only probes and marker names that must *not*
//! appear (removed again if they ever do).

use std::io::ErrorKind;
use std::net::{TcpListener, UdpSocket};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use smithers_host::sandbox::{BashOutcome, BashRequest, SandboxPolicy, ToolError, run_bash};
use tokio_util::sync::CancellationToken;

/// Host-side fixture a case needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Setup {
    /// `{ROOT}/link` is a symlink to the outside dir.
    SymlinkOut,
    /// A TCP listener on 127.0.0.1:`{PORT}` (`{PORT_HEX}` in /proc/net form).
    Tcp,
    /// A UDP socket on 127.0.0.1:`{UPORT}`.
    Udp,
    /// A unix socket listening at `{SOCK}`, in the outside dir.
    UnixOutside,
    /// An abstract unix socket `@{ABSTRACT}` in the host's network namespace.
    Abstract,
    /// `RLIMIT_FSIZE` lowered to 16 MiB for this case.
    SmallFiles,
    /// A `user` key `{KEYDESC}` (id `{KEYID}`) holding a secret, in the
    /// session keyring (named `{KEYRING}`) the launcher inherits.
    HostKey,
}

/// What containment looks like for a case (on top of the universal checks).
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// The command ran to an exit (any code).
    Contained,
    /// The command ran and exited non-zero: the attempt itself failed.
    Refused,
    /// The call ended with this error code.
    Error(&'static str),
    /// The command ran and printed this.
    Prints(&'static str),
    /// Output was truncated at the default cap and the call still finished.
    Truncated,
}

struct Case {
    name: &'static str,
    setup: &'static [Setup],
    network: bool,
    timeout_ms: u64,
    command: &'static str,
    expect: Expect,
}

const fn case(name: &'static str, command: &'static str, expect: Expect) -> Case {
    Case {
        name,
        setup: &[],
        network: false,
        timeout_ms: 20_000,
        command,
        expect,
    }
}

impl Case {
    const fn with(mut self, setup: &'static [Setup]) -> Self {
        self.setup = setup;
        self
    }
    const fn network(mut self) -> Self {
        self.network = true;
        self
    }
    const fn timeout(mut self, ms: u64) -> Self {
        self.timeout_ms = ms;
        self
    }
}

use Expect::*;
use Setup::*;

/// The escape attempts.
fn cases() -> Vec<Case> {
    vec![
        // --- the filesystem outside the root dir
        case("dotdot_read", "cat ../outside/secret.txt; cat {ROOT}/../outside/secret.txt", Contained),
        case("dotdot_write", "echo pwned > ../outside/pwned && echo ESCAPED; mkdir ../outside/d && echo ESCAPED", Contained),
        case("dotdot_listing", "ls -a .. | grep -q outside && echo ESCAPED; ls -a {ROOT}/.. ", Contained),
        case("absolute_read", "cat {OUT}/secret.txt", Refused),
        case("absolute_write", "echo pwned > {OUT}/pwned && echo ESCAPED; touch {OUT}/t && echo ESCAPED", Contained),
        case("planted_symlink_read", "cat link/secret.txt; ls link/ && echo ESCAPED", Contained).with(&[SymlinkOut]),
        case("planted_symlink_write", "echo x > link/pwned && echo ESCAPED; mkdir link/d && echo ESCAPED", Contained).with(&[SymlinkOut]),
        case("own_symlink_out", "ln -s {OUT} mine; cat mine/secret.txt; echo x > mine/pwned && echo ESCAPED", Contained),
        case("own_symlink_to_slash", "ln -s / r; ls r/; cat r/etc/shadow && echo ESCAPED; ls r/root && echo ESCAPED; ls r/home && echo ESCAPED", Contained),
        case("own_symlink_climbing", "ln -s ../../../../../../../.. up; cat up{OUT}/secret.txt; ls up/ | grep -qx home && echo ESCAPED", Contained),
        case("hardlinks_across_the_wall", "ln {OUT}/secret.txt h1 && echo ESCAPED; ln /etc/passwd h2 && echo ESCAPED; ln /usr/bin/bash h3 && echo ESCAPED", Contained),
        case("proc_self_root", "cat /proc/self/root{OUT}/secret.txt; ls /proc/self/root/ | grep -qx home && echo ESCAPED", Contained),
        case("proc_1_root", "ls /proc/1/root/ && echo ESCAPED; cat /proc/1/root{OUT}/secret.txt; ls /proc/1/cwd/ && echo ESCAPED", Contained),
        case("launcher_binary_invisible", "test -e {LAUNCHER} && echo ESCAPED; ls {LAUNCHER_DIR} && echo ESCAPED", Contained),
        case("host_home_dirs", "ls -a /root && echo ESCAPED; ls /home && echo ESCAPED; ls /work && echo ESCAPED; ls /var && echo ESCAPED; ls /opt && echo ESCAPED", Contained),
        case("host_secrets_in_etc", "cat /etc/shadow && echo ESCAPED; cat /etc/gshadow && echo ESCAPED; ls /etc/ssl/private && echo ESCAPED; cat /etc/machine-id && echo ESCAPED", Contained),
        case("write_etc", "touch /etc/smithers-escape-{MARK} && echo ESCAPED; echo x > /etc/smithers-escape-{MARK} && echo ESCAPED", Contained),
        case("write_usr", "touch /usr/smithers-escape-{MARK} && echo ESCAPED; touch /usr/bin/smithers-escape-{MARK} && echo ESCAPED; cp /bin/true /usr/lib/smithers-escape-{MARK} && echo ESCAPED", Contained),
        case("overwrite_own_binary", "echo x > /proc/self/exe && echo ESCAPED; echo x >> /bin/bash && echo ESCAPED", Contained),
        case("host_tmp_marker", "echo {MARK} > /tmp/smithers-escape-{MARK} && cat /tmp/smithers-escape-{MARK}", Prints("{MARK}")),
        case("sys_absent", "ls /sys && echo ESCAPED; echo 1 > /sys/kernel/mm/ksm/run && echo ESCAPED; ls /sys/fs/cgroup && echo ESCAPED", Contained),
        case("proc_sys_writes", "v=$(cat /proc/sys/vm/swappiness); echo $v > /proc/sys/vm/swappiness && echo ESCAPED; c=$(cat /proc/sys/kernel/core_pattern); echo \"$c\" > /proc/sys/kernel/core_pattern && echo ESCAPED; : > /proc/sysrq-trigger && echo ESCAPED", Contained),
        case("proc_kcore", "head -c 16 /proc/kcore > /dev/null && echo ESCAPED; cat /proc/kmsg & sleep 0.2; kill %1", Contained),
        // --- devices, mounts, namespaces, privileges
        case("mknod_char", "mknod ./null2 c 1 3 && echo ESCAPED; mknod /tmp/null2 c 1 3 && echo ESCAPED", Contained),
        case("mknod_block", "mknod ./disk b 254 0 && echo ESCAPED; mknod /dev/shm/disk b 8 0 && echo ESCAPED", Contained),
        case("dev_is_minimal", "for f in /dev/* /dev/.[!.]*; do case $f in /dev/null|/dev/zero|/dev/full|/dev/random|/dev/urandom|/dev/fd|/dev/stdin|/dev/stdout|/dev/stderr|/dev/shm|'/dev/.[!.]*') ;; *) echo ESCAPED $f;; esac; done", Contained),
        case("mount_tmpfs", "mkdir -p m && mount -t tmpfs none m && echo ESCAPED; mount --bind / m && echo ESCAPED; mount -o remount,rw /usr && echo ESCAPED", Contained),
        case("umount_walls", "umount /usr && echo ESCAPED; umount -l /proc && echo ESCAPED; umount -l {ROOT} && echo ESCAPED", Contained),
        case("unshare_user_namespace", "unshare -U true && echo ESCAPED; unshare -r true && echo ESCAPED; unshare -Urm true && echo ESCAPED", Contained),
        case("unshare_other_namespaces", "unshare -m true && echo ESCAPED; unshare -n true && echo ESCAPED; unshare -pf true && echo ESCAPED", Contained),
        case("chroot_and_pivot", "chroot / true && echo ESCAPED; mkdir -p o && pivot_root . o && echo ESCAPED", Contained),
        case("ptrace_init", "python3 -c \"import ctypes; l=ctypes.CDLL(None); print('ESCAPED' if l.ptrace(16, 1, 0, 0) == 0 else 'denied')\"", Prints("denied")),
        case("proc_mem_of_init", "printf x | dd of=/proc/1/mem bs=1 seek=4096 conv=notrunc 2>/dev/null && echo ESCAPED; cat /proc/1/environ && echo ESCAPED; readlink /proc/1/fd/3 && echo ESCAPED; readlink /proc/1/exe && echo ESCAPED", Contained),
        case("kill_the_host", "kill -9 {HOSTPID} && echo ESCAPED; kill -9 -1; kill -9 1; echo still-here", Contained),
        case("setuid_copy", "cp /bin/cat ./c && chmod 4755 ./c && ./c /proc/self/status | grep -E '^Cap(Eff|Prm):[[:space:]]*0*[1-9a-f]' && echo ESCAPED", Contained),
        case("capabilities_are_empty", "grep -E '^Cap(Inh|Prm|Eff|Bnd|Amb):' /proc/self/status | grep -v 0000000000000000 && echo ESCAPED; grep -q 'NoNewPrivs:[[:space:]]*1' /proc/self/status && echo nnp", Prints("nnp")),
        case("setcap_file", "cp /bin/cat ./cc && /usr/sbin/setcap cap_dac_override+ep ./cc && echo ESCAPED; ./cc /proc/self/status | grep -E '^CapEff:[[:space:]]*0*[1-9a-f]' && echo ESCAPED", Contained),
        case("capsh_raise", "/usr/sbin/capsh --caps='cap_sys_admin+eip' -- -c true && echo ESCAPED; /usr/sbin/capsh --print | grep -i 'bounding set =[[:space:]]*cap_' && echo ESCAPED", Contained),
        case("raise_rlimits", "ulimit -Hn 1048576 && echo ESCAPED; ulimit -Hv unlimited && echo ESCAPED; ulimit -Hu unlimited && echo ESCAPED; ulimit -Hf unlimited && echo ESCAPED; ulimit -Ht unlimited && echo ESCAPED", Contained),
        case("hostname_change", "hostname pwned-{MARK} && echo ESCAPED; echo pwned > /proc/sys/kernel/hostname && echo ESCAPED; hostname", Prints("smithers-sandbox")),
        case("cgroup_view", "grep -v ':/$' /proc/self/cgroup && echo ESCAPED; echo cgroup-ok", Prints("cgroup-ok")),
        case("proc_fds_leak_nothing", "ls -l /proc/$$/fd/ | grep -E 'socket|anon_inode|/work|/root' && echo ESCAPED; echo fds-ok", Prints("fds-ok")),
        // --- kernel objects namespaces do not separate: the keyring
        case("keyring_read_host_key", "grep -q '{KEYDESC}' /proc/keys /proc/key-users && echo ESCAPED; python3 -c \"{PY}\nb=B(512); r=L.syscall(250, 11, {KEYID}, b, 512); print(b.raw[:max(r, 0)])\nS(250, 10, -3, b'user', b'{KEYDESC}', 0); S(250, 10, -4, b'user', b'{KEYDESC}', 0)\"", Prints("errno=1")).with(&[HostKey]),
        case("keyring_join_host_by_name", "python3 -c \"{PY}\nS(250, 1, b'{KEYRING}'); b=B(512); r=L.syscall(250, 11, {KEYID}, b, 512); print(b.raw[:max(r, 0)])\"", Prints("errno=1")).with(&[HostKey]),
        case("keyring_plant_keys", "python3 -c \"{PY}\nfor ring in (-3, -4, -5):\n  S(248, b'user', b'{KEYDESC}-planted', b'x', 1, ring)\"", Prints("errno=1")).with(&[HostKey]),
        case("keyring_revoke_and_clear", "python3 -c \"{PY}\nS(250, 3, {KEYID}); S(250, 7, -3); S(250, 9, {KEYID}, -3); S(250, 2, {KEYID}, 0, 0)\"", Prints("errno=1")).with(&[HostKey]),
        case("keyring_request_key", "python3 -c \"{PY}\nS(249, b'user', b'{KEYDESC}', 0, -3)\"", Prints("errno=1")).with(&[HostKey]),
        // --- set-id files left in the root dir for the rest of the machine
        case("setuid_chmod_variants", "cp /bin/sh s && for m in 4755 u+s 2755 g+s 6755; do chmod $m s 2>&1 | grep -q 'not permitted' && echo refused-$m; done; install -m 4755 /bin/sh s2 2>&1 | grep -q 'not permitted' && echo refused-install; python3 -c \"import os; os.chmod('s', 0o4755)\" 2>&1 | grep -q PermissionError && echo refused-python; stat -c '%a %n' s s2 2>/dev/null", Prints("refused-4755")),
        case("setuid_created_directly", "python3 -c \"{PY}\nimport stat\nfor f in (lambda: os.open('a', os.O_CREAT | os.O_WRONLY, 0o4755), lambda: os.mknod('b', stat.S_IFREG | 0o4755), lambda: os.open('.', os.O_TMPFILE | os.O_WRONLY, 0o2755), lambda: os.fchmod(os.open('c', os.O_CREAT | os.O_WRONLY, 0o755), 0o4755)):\n  try:\n    f(); print('ESCAPED')\n  except PermissionError: print('errno=1')\nS(85, b'd', 0o4755)\"; stat -c '%a %n' * 2>/dev/null", Prints("errno=1")),
        case("setuid_tar_and_cp_preserve", "tar -C /usr/bin -cf t.tar su passwd 2>/dev/null; mkdir -p x && tar -C x -xpf t.tar 2>/dev/null; cp -p /usr/bin/passwd p 2>/dev/null; stat -c '%a %n' x/* p 2>/dev/null; echo copied", Prints("copied")),
        // --- the seccomp filter: kernel surface the sandbox never needs
        case("seccomp_is_active", "grep -E '^Seccomp:[[:space:]]+2' /proc/self/status >/dev/null && echo filtered; grep Seccomp_filters /proc/self/status", Prints("filtered")),
        case("ptrace_traceme", "python3 -c \"{PY}\nS(101, 0, 0, 0, 0)\"", Prints("errno=1")),
        case("io_uring", "python3 -c \"{PY}\nS(425, 8, B(120))\"", Prints("errno=1")),
        case("userfaultfd", "python3 -c \"{PY}\nS(323, 0)\"", Prints("errno=1")),
        case("bpf_and_perf", "python3 -c \"{PY}\nS(321, 5, B(128), 128); S(298, B(128), 0, -1, -1, 0)\"", Prints("errno=1")),
        case("personality_disables_aslr", "python3 -c \"{PY}\nS(135, 0x0040000)\"; setarch -R true && echo ESCAPED", Prints("errno=1")),
        case("unshare_and_clone_namespaces", "python3 -c \"{PY}\nS(272, 0x10000000); S(272, 0x20000); S(56, 0x10000000 | 17, 0, 0, 0, 0)\"", Prints("errno=1")),
        case("clone3_and_openat2_fall_back", "python3 -c \"{PY}\nS(435, B(88), 88); S(437, -100, b'/', B(24), 24)\"; echo fallback-ok", Prints("errno=38")),
        case("x32_abi_numbers", "python3 -c \"{PY}\nS(0x40000000 | 39); S(0x40000000 | 250, 0, 0)\"", Prints("errno=1")),
        case("mount_api_and_setns", "python3 -c \"{PY}\nS(428, -100, b'/', 0); S(430, b'tmpfs', 0); S(308, 0, 0); S(161, b'/')\"", Prints("errno=1")),
        case("vsock_to_the_hypervisor", "python3 -c \"{PY}\nS(41, 40, 1, 0)\"", Prints("errno=1")),
        case("terminal_injection", "python3 -c \"{PY}\nS(16, 1, 0x5412, b'x'); S(16, 0, 0x541C, B(8))\"", Prints("errno=1")),
        case("clock_and_modules", "python3 -c \"{PY}\nS(227, 0, B(16)); S(175, B(16), 16, b''); S(313, 0, b'', 0); S(246, 0, 0, B(8), 0)\"", Prints("errno=1")),
        // --- environment
        case("host_env_secret", "env; printenv {SECRET_VAR} && echo ESCAPED; echo \"${SECRET_VAR}\"", Contained),
        case("environ_of_every_process", "for f in /proc/[0-9]*/environ; do tr '\\0' '\\n' < $f; done; echo scanned", Prints("scanned")),
        // --- network
        case("tcp_loopback_bash", "echo hi > /dev/tcp/127.0.0.1/{PORT} && echo ESCAPED", Refused).with(&[Tcp]),
        case("tcp_loopback_python", "python3 -c \"import socket; socket.create_connection(('127.0.0.1', {PORT}), 2); print('ESCAPED')\"", Refused).with(&[Tcp]),
        case("tcp_external", "echo hi > /dev/tcp/1.1.1.1/80 && echo ESCAPED", Refused),
        case("tcp_bind_denied_by_landlock", "python3 -c \"import socket; s=socket.socket(); s.bind(('0.0.0.0', 8080)); print('ESCAPED')\" 2>&1 | grep -q 'Permission denied' && echo landlock-denied", Prints("landlock-denied")),
        case("udp_loopback", "echo hi > /dev/udp/127.0.0.1/{UPORT} && echo ESCAPED", Refused).with(&[Udp]),
        case("udp_external", "python3 -c \"import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.sendto(b'x', ('1.1.1.1', 53)); print('ESCAPED')\"", Refused),
        case("dns_lookup", "getent hosts example.com && echo ESCAPED; test -e /etc/resolv.conf && echo ESCAPED; getent hosts localhost", Prints("localhost")),
        case("proc_net_hides_host_sockets", "grep -i ':{PORT_HEX} ' /proc/net/tcp && echo ESCAPED; echo net-ok", Prints("net-ok")).with(&[Tcp]),
        case("ip_link", "/usr/sbin/ip link set lo up && echo ESCAPED; /usr/sbin/ip link add d0 type dummy && echo ESCAPED; /usr/sbin/ip -o link | grep -v ': lo:' && echo ESCAPED; echo links-ok", Prints("links-ok")),
        case("unix_socket_outside", "python3 -c \"import socket; s=socket.socket(socket.AF_UNIX); s.connect('{SOCK}'); print('ESCAPED')\"", Refused).with(&[UnixOutside]),
        case("abstract_socket_isolated", "python3 -c \"import socket; s=socket.socket(socket.AF_UNIX); s.connect('\\0{ABSTRACT}'); print('ESCAPED')\"", Refused).with(&[Abstract]),
        case("abstract_socket_scoped_with_network", "python3 -c \"import socket; s=socket.socket(socket.AF_UNIX); s.connect('\\0{ABSTRACT}'); print('ESCAPED')\"", Refused).with(&[Abstract]).network(),
        case("tcp_connects_with_network_allowed", "echo hello > /dev/tcp/127.0.0.1/{PORT} && echo CONNECTED", Prints("CONNECTED")).with(&[Tcp]).network(),
        // --- processes that try to outlive the call
        case("setsid_survivor", "setsid bash -c 'exec -a {MARK} sleep 1000' & sleep 0.3; echo spawned", Prints("spawned")),
        case("nohup_survivor", "nohup bash -c 'exec -a {MARK} sleep 1000' > /dev/null 2>&1 & sleep 0.3; echo spawned", Prints("spawned")),
        case("double_fork_survivor", "( ( exec -a {MARK} sleep 1000 & ) & ); sleep 0.3; echo spawned", Prints("spawned")),
        case("disown_survivor", "bash -c 'exec -a {MARK} sleep 1000' & disown; sleep 0.3; echo spawned", Prints("spawned")),
        case("daemon_survivor", "setsid -f bash -c 'exec -a {MARK} sleep 1000' < /dev/null > /dev/null 2>&1; sleep 0.3; echo spawned", Prints("spawned")),
        case("survivor_past_timeout", "setsid bash -c 'exec -a {MARK} sleep 1000' & exec -a {MARK} sleep 1000", Error("PROCESS_TIMEOUT")).timeout(1_000),
        // --- resource exhaustion
        // The shell forks the bomb once (`b &`): were it to fork both halves of
        // the first pipeline itself, the first half could fill the namespace
        // before the second fork, and bash would retry that fork for 15 s.
        case("fork_bomb", ": {MARK}; b() { b | b & }; b & end=$((SECONDS + 3)); while (( SECONDS < end )); do :; done; shopt -s nullglob; p=(/proc/[0-9]*); echo procs=${#p[@]}; (( ${#p[@]} <= 557 )) && echo bounded", Prints("bounded")).timeout(15_000),
        case("memory_bomb_python", "python3 -c \"x = bytearray(3 << 30); print('ESCAPED')\"", Refused),
        case("memory_bomb_perl", "perl -e '$x = \"a\" x (3 << 30); print \"ESCAPED\\n\"'", Refused),
        case("disk_flood_past_fsize", "head -c 100M /dev/zero > big; echo rc=$?", Prints("rc=153")).with(&[SmallFiles]),
        case("tmp_flood_past_tmpfs", "head -c 400M /dev/zero > /tmp/big; echo rc=$?", Prints("rc=1")),
        case("output_flood", "yes {MARK} | head -c 50000000", Truncated),
        case("infinite_loop", ": {MARK}; while :; do :; done", Error("PROCESS_TIMEOUT")).timeout(1_500),
    ]
}

/// Fixtures of one case.
struct Fixture {
    _base: tempfile::TempDir,
    root: PathBuf,
    outside: PathBuf,
    secret: String,
    marker: String,
    tcp: Option<TcpListener>,
    udp: Option<UdpSocket>,
    unix: Option<UnixListener>,
    abstract_name: String,
    abstract_socket: Option<UnixListener>,
    key: Option<HostKey>,
}

/// A key in the test process's session keyring.
struct HostKey {
    id: i64,
    payload: String,
}

/// Python prelude of the system-call cases: `S(nr, *args)` calls the raw
/// system call and prints `ESCAPED` when it succeeded, `errno=N` otherwise;
/// `B(n)` is an n-byte buffer.
const PY_SYSCALL: &str = "import ctypes, os; L = ctypes.CDLL(None, use_errno=True); B = ctypes.create_string_buffer\n\
def S(*a): r = L.syscall(*[ctypes.c_long(x) if isinstance(x, int) else x for x in a]); print('ESCAPED' if r >= 0 else 'errno=%d' % ctypes.get_errno())";

const SECRET_FILE_NAME: &str = "secret.txt";

impl Fixture {
    fn new(case: &Case) -> Self {
        let base = tempfile::tempdir().unwrap();
        let base_path = std::fs::canonicalize(base.path()).unwrap();
        let root = base_path.join("root");
        let outside = base_path.join("outside");
        std::fs::create_dir(&root).unwrap();
        std::fs::create_dir(&outside).unwrap();
        let secret = format!("TOPSECRET-FILE-{}", uuid::Uuid::new_v4().simple());
        std::fs::write(outside.join(SECRET_FILE_NAME), &secret).unwrap();
        let marker = format!("smx{}", &uuid::Uuid::new_v4().simple().to_string()[..16]);
        if case.setup.contains(&SymlinkOut) {
            std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
        }
        let tcp = case.setup.contains(&Tcp).then(|| {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.set_nonblocking(true).unwrap();
            l
        });
        let udp = case.setup.contains(&Udp).then(|| {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            s.set_nonblocking(true).unwrap();
            s
        });
        let unix = case.setup.contains(&UnixOutside).then(|| {
            let l = UnixListener::bind(outside.join("s.sock")).unwrap();
            l.set_nonblocking(true).unwrap();
            l
        });
        let abstract_name = format!("smithers-escape-{marker}");
        let abstract_socket = case.setup.contains(&Abstract).then(|| {
            let addr = SocketAddr::from_abstract_name(abstract_name.as_bytes()).unwrap();
            let l = UnixListener::bind_addr(&addr).unwrap();
            l.set_nonblocking(true).unwrap();
            l
        });
        let key = case.setup.contains(&HostKey).then(|| {
            let payload = format!("TOPSECRET-KEY-{}", uuid::Uuid::new_v4().simple());
            let id = keys::add(
                &format!("smithers-escape-{marker}"),
                &payload,
                keys::SESSION,
            )
            .expect("add a key to the test's session keyring");
            HostKey { id, payload }
        });
        Self {
            _base: base,
            root,
            outside,
            secret,
            marker,
            tcp,
            udp,
            unix,
            abstract_name,
            abstract_socket,
            key,
        }
    }

    fn command(&self, case: &Case) -> String {
        let tcp_port = self
            .tcp
            .as_ref()
            .map_or(0, |l| l.local_addr().unwrap().port());
        let udp_port = self
            .udp
            .as_ref()
            .map_or(0, |s| s.local_addr().unwrap().port());
        let launcher = PathBuf::from(env!("CARGO_BIN_EXE_smithers-host"));
        self.expand(case.command)
            .replace("{PORT_HEX}", &format!("{tcp_port:04X}"))
            .replace("{PORT}", &tcp_port.to_string())
            .replace("{UPORT}", &udp_port.to_string())
            .replace(
                "{LAUNCHER_DIR}",
                &launcher.parent().unwrap().display().to_string(),
            )
            .replace("{LAUNCHER}", &launcher.display().to_string())
    }

    fn expand(&self, text: &str) -> String {
        text.replace("{ROOT}", &self.root.display().to_string())
            .replace("{OUT}", &self.outside.display().to_string())
            .replace("{SOCK}", &self.outside.join("s.sock").display().to_string())
            .replace("{ABSTRACT}", &self.abstract_name)
            .replace("{MARK}", &self.marker)
            .replace("{SECRET_VAR}", SECRET_VAR)
            .replace("{HOSTPID}", &std::process::id().to_string())
            .replace("{PY}", PY_SYSCALL)
            .replace(
                "{KEYID}",
                &self.key.as_ref().map_or(0, |k| k.id).to_string(),
            )
            .replace("{KEYDESC}", &self.key_description())
            .replace("{KEYRING}", &session_keyring_name())
    }

    fn key_description(&self) -> String {
        format!("smithers-escape-{}", self.marker)
    }

    fn policy(&self, case: &Case) -> SandboxPolicy {
        let mut policy = SandboxPolicy::new(
            self.root.clone(),
            PathBuf::from(env!("CARGO_BIN_EXE_smithers-host")),
        );
        policy.allow_network = case.network;
        if case.setup.contains(&SmallFiles) {
            policy.limits.file_size_bytes = 16 << 20;
        }
        policy
    }

    /// The universal containment checks; returns every violation found.
    fn violations(&self, case: &Case, output: &str) -> Vec<String> {
        let mut found = Vec::new();
        if output.contains("ESCAPED") {
            found.push("the command printed ESCAPED".to_string());
        }
        if output.contains(&self.secret) {
            found.push("the outside file's secret leaked".to_string());
        }
        if output.contains(&secret_value()) {
            found.push("the host's secret environment variable leaked".to_string());
        }
        let mut outside: Vec<String> = std::fs::read_dir(&self.outside)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        outside.sort();
        let mut expected = vec![SECRET_FILE_NAME.to_string()];
        if self.unix.is_some() {
            expected.push("s.sock".to_string());
        }
        expected.sort();
        if outside != expected {
            found.push(format!("the outside dir changed: {outside:?}"));
        }
        if std::fs::read_to_string(self.outside.join(SECRET_FILE_NAME)).unwrap() != self.secret {
            found.push("the outside file was modified".to_string());
        }
        for dir in ["/tmp", "/etc", "/usr", "/usr/bin", "/usr/lib"] {
            let marker = Path::new(dir).join(format!("smithers-escape-{}", self.marker));
            if marker.exists() {
                let _ = std::fs::remove_file(&marker);
                found.push(format!("{} appeared on the host", marker.display()));
            }
        }
        if host_hostname() != *HOSTNAME_AT_START.get().unwrap() {
            found.push("the host's hostname changed".to_string());
        }
        let network_positive = case.network && matches!(case.expect, Prints(_));
        if let Some(tcp) = &self.tcp {
            let accepted = count_accepts(|| tcp.accept().map(drop));
            if network_positive && accepted == 0 {
                found.push("the allowed TCP connection never arrived".to_string());
            }
            if !network_positive && accepted > 0 {
                found.push(format!(
                    "{accepted} TCP connection(s) reached the host listener"
                ));
            }
        }
        if let Some(udp) = &self.udp {
            let mut buf = [0u8; 64];
            if udp.recv(&mut buf).is_ok() {
                found.push("a UDP datagram reached the host socket".to_string());
            }
        }
        if let Some(unix) = &self.unix
            && count_accepts(|| unix.accept().map(drop)) > 0
        {
            found.push("the outside unix socket was reached".to_string());
        }
        if let Some(abs) = &self.abstract_socket
            && count_accepts(|| abs.accept().map(drop)) > 0
        {
            found.push("the host's abstract unix socket was reached".to_string());
        }
        if let Some(key) = &self.key {
            if output.contains(&key.payload) {
                found.push("the host key's payload leaked".to_string());
            }
            match keys::read(key.id) {
                Ok(payload) if payload == key.payload => {}
                other => found.push(format!("the host key was changed or revoked: {other:?}")),
            }
            let planted = format!("{}-planted", self.key_description());
            for ring in [keys::SESSION, keys::USER] {
                if let Ok(id) = keys::search(ring, &planted) {
                    let _ = keys::unlink(id, ring);
                    found.push(format!("a key was planted in host keyring {ring}"));
                }
            }
        }
        let set_id = set_id_files(&self.root);
        if !set_id.is_empty() {
            found.push(format!(
                "set-id files were left in the root dir: {set_id:?}"
            ));
        }
        let survivors = processes_with(&self.marker);
        if !survivors.is_empty() {
            found.push(format!("processes outlived the call: {survivors:?}"));
            for pid in survivors {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        found
    }
}

/// Files under `root` (not following symlinks) with a set-id bit.
fn set_id_files(root: &Path) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt;
    let mut found = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.path().symlink_metadata() else {
                continue;
            };
            if meta.file_type().is_symlink() {
                continue;
            }
            if meta.permissions().mode() & 0o6000 != 0 {
                found.push(format!(
                    "{} {:o}",
                    entry.path().display(),
                    meta.permissions().mode()
                ));
            }
            if meta.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    found
}

/// The Linux keyring, driven from the test process (the host's side).
mod keys {
    pub const SESSION: i64 = -3;
    pub const USER: i64 = -4;
    const JOIN_SESSION: i64 = 1;
    const UNLINK: i64 = 9;
    const SEARCH: i64 = 10;
    const READ: i64 = 11;

    fn check(r: libc::c_long) -> Result<i64, std::io::Error> {
        if r < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(r)
        }
    }

    fn c(text: &str) -> std::ffi::CString {
        std::ffi::CString::new(text).unwrap()
    }

    /// Joins (creating) the named session keyring.
    pub fn join_session(name: &str) -> Result<i64, std::io::Error> {
        let name = c(name);
        // SAFETY: a valid NUL-terminated name.
        check(unsafe { libc::syscall(libc::SYS_keyctl, JOIN_SESSION, name.as_ptr()) })
    }

    pub fn add(description: &str, payload: &str, ring: i64) -> Result<i64, std::io::Error> {
        let (kind, description) = (c("user"), c(description));
        // SAFETY: valid strings and a payload buffer of the given length.
        check(unsafe {
            libc::syscall(
                libc::SYS_add_key,
                kind.as_ptr(),
                description.as_ptr(),
                payload.as_ptr(),
                payload.len(),
                ring,
            )
        })
    }

    pub fn read(id: i64) -> Result<String, std::io::Error> {
        let mut buf = vec![0u8; 4096];
        // SAFETY: the buffer is valid for its length.
        let n = check(unsafe {
            libc::syscall(libc::SYS_keyctl, READ, id, buf.as_mut_ptr(), buf.len())
        })?;
        buf.truncate(n as usize);
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }

    pub fn search(ring: i64, description: &str) -> Result<i64, std::io::Error> {
        let (kind, description) = (c("user"), c(description));
        // SAFETY: valid NUL-terminated strings.
        check(unsafe {
            libc::syscall(
                libc::SYS_keyctl,
                SEARCH,
                ring,
                kind.as_ptr(),
                description.as_ptr(),
                0,
            )
        })
    }

    pub fn unlink(id: i64, ring: i64) -> Result<i64, std::io::Error> {
        // SAFETY: integer arguments only.
        check(unsafe { libc::syscall(libc::SYS_keyctl, UNLINK, id, ring) })
    }
}

fn session_keyring_name() -> String {
    format!("smithers-escape-keyring-{}", std::process::id())
}

fn count_accepts(mut accept: impl FnMut() -> std::io::Result<()>) -> usize {
    let mut n = 0;
    loop {
        match accept() {
            Ok(()) => n += 1,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return n,
            Err(_) => return n,
        }
    }
}

/// Pids whose command line contains `marker`.
fn processes_with(marker: &str) -> Vec<i32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline"))
            && String::from_utf8_lossy(&cmdline).contains(marker)
        {
            pids.push(pid);
        }
    }
    pids
}

fn host_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap()
}

static HOSTNAME_AT_START: std::sync::OnceLock<String> = std::sync::OnceLock::new();
static SECRET_VAR: &str = "SMITHERS_ESCAPE_SUITE_SECRET";

fn secret_value() -> String {
    format!("TOPSECRET-ENV-{}", std::process::id())
}

/// Runs one case; `Err` lists what went wrong.
async fn run_case(case: &Case) -> Result<String, Vec<String>> {
    let fixture = Fixture::new(case);
    let policy = fixture.policy(case);
    let request = BashRequest {
        command: fixture.command(case),
        timeout_ms: Some(case.timeout_ms),
        ..BashRequest::default()
    };
    let started = Instant::now();
    let result = run_bash(&policy, request, CancellationToken::new()).await;
    let elapsed = started.elapsed();
    let mut problems = Vec::new();
    let output = match &result {
        Ok(o) => format!("{}\n{}", o.stdout, o.stderr),
        Err(e) => e.to_string(),
    };
    let expectation = check_expectation(case, &fixture, &result, elapsed);
    if let Err(problem) = expectation {
        problems.push(problem);
    }
    problems.extend(fixture.violations(case, &output));

    // The sandbox still works afterwards, in the same root.
    let after = run_bash(
        &fixture.policy(case),
        BashRequest {
            command: "echo ok".into(),
            ..BashRequest::default()
        },
        CancellationToken::new(),
    )
    .await;
    match after {
        Ok(o) if o.exit_code == 0 && o.stdout == "ok\n" => {}
        other => problems.push(format!("`echo ok` afterwards failed: {other:?}")),
    }
    let summary = match &result {
        Ok(o) => format!("exit {} in {} ms", o.exit_code, elapsed.as_millis()),
        Err(e) => format!("{} in {} ms", e.code.as_str(), elapsed.as_millis()),
    };
    if problems.is_empty() {
        Ok(summary)
    } else {
        problems.push(format!("result: {summary}; output: {}", clip(&output)));
        Err(problems)
    }
}

fn check_expectation(
    case: &Case,
    fixture: &Fixture,
    result: &Result<BashOutcome, ToolError>,
    elapsed: Duration,
) -> Result<(), String> {
    // Whatever happens, the call ends promptly after its timeout.
    let bound = Duration::from_millis(case.timeout_ms) + Duration::from_secs(5);
    if elapsed > bound {
        return Err(format!("the call took {elapsed:?}, past {bound:?}"));
    }
    match (case.expect, result) {
        (Contained, Ok(_)) => Ok(()),
        (Refused, Ok(o)) if o.exit_code != 0 => Ok(()),
        (Error(code), Err(e)) if e.code.as_str() == code => Ok(()),
        (Prints(text), Ok(o)) if o.stdout.contains(&fixture.expand(text)) => Ok(()),
        (Truncated, Ok(o)) if o.truncated && o.stdout.len() == 200_000 => Ok(()),
        (expect, result) => Err(format!("expected {expect:?}, got {}", describe(result))),
    }
}

fn describe(result: &Result<BashOutcome, ToolError>) -> String {
    match result {
        Ok(o) => format!(
            "exit {} (truncated {}) stdout {:?} stderr {:?}",
            o.exit_code,
            o.truncated,
            clip(&o.stdout),
            clip(&o.stderr)
        ),
        Err(e) => e.to_string(),
    }
}

fn clip(text: &str) -> String {
    text.chars().take(600).collect()
}

#[test]
fn escape_attempts_are_contained() {
    // Set before any other thread of this test binary exists (this is its
    // only test), so no concurrent getenv can observe the change.
    // SAFETY: single-threaded at this point; see above.
    unsafe { std::env::set_var(SECRET_VAR, secret_value()) };
    HOSTNAME_AT_START.set(host_hostname()).unwrap();
    // A named session keyring of our own, joined before the runtime's threads
    // exist so that they (and the launchers they spawn) inherit it: the host
    // side of the keyring cases.
    keys::join_session(&session_keyring_name()).expect("join a session keyring");

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cases = cases();
    assert!(
        cases.len() >= 40,
        "the suite must keep at least 40 attempts"
    );
    let filter = std::env::var("ESCAPE_CASE").ok();
    let mut failures = Vec::new();
    for case in cases
        .iter()
        .filter(|c| filter.as_deref().is_none_or(|f| c.name.contains(f)))
    {
        match runtime.block_on(run_case(case)) {
            Ok(summary) => println!("PASS {:40} {summary}", case.name),
            Err(problems) => {
                println!("FAIL {:40} {}", case.name, problems.join(" | "));
                failures.push(case.name);
            }
        }
    }
    assert!(failures.is_empty(), "contained failures: {failures:?}");
}
