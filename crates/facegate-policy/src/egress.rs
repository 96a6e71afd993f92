//! The egress guard (Art. 8: face information stays in the device and is not sent over the
//! internet). Kernel-enforced, not a promise.
//!
//! [`install`] applies a seccomp-BPF filter to **every thread of the process** (TSYNC) after
//! which:
//!
//! - `socket()` and `socketpair()` fail with `EACCES` for every address family except `AF_UNIX`
//!   and `AF_NETLINK`. That covers `AF_INET`, `AF_INET6` and `AF_PACKET` (the ones Art. 8 is
//!   about) and also every other family that can carry data off the device (Bluetooth, CAN,
//!   vsock, XDP, TIPC, ...): an allow-list cannot forget a family.
//! - io_uring is closed entirely: `io_uring_setup()`, `io_uring_enter()` and
//!   `io_uring_register()` fail with `EACCES`, because io_uring can create sockets
//!   (`IORING_OP_SOCKET`) without the `socket()` system call the filter sees, and a ring made
//!   before the guard would otherwise keep working.
//! - No other process's descriptors or memory: `pidfd_getfd()` (take a socket out of another
//!   process of the same user), `ptrace()` and `process_vm_readv()`/`process_vm_writev()` (make
//!   another process send for us) fail with `EACCES`.
//! - No descriptors received: `recvmsg()` and `recvmmsg()` fail with `EACCES`. They are the only
//!   calls that accept `SCM_RIGHTS`, which could hand the process a connected network socket
//!   over a Unix socket. A filter cannot look inside the message to let Unix sockets through, so
//!   both calls are closed; nothing in facegate needs them (std reads sockets with `recvfrom`,
//!   sd_notify only sends, ONNX Runtime and SQLite use no sockets, and nothing uses netlink;
//!   glibc's nscd client falls back to plain reads when it cannot receive nscd's mapping).
//! - On x86_64 the x32-ABI numbers of those calls fail too, so the x32 entry points are not a
//!   way around the filter.
//!
//! Descriptors that exist before the guard are dealt with by [`close_inherited`], which the
//! binary runs first of all: it refuses to run with an inherited network socket and closes
//! every other inherited descriptor above standard error.
//!
//! Everything else is allowed. `AF_UNIX` stays open for the admin socket, journald and sd_notify.
//! `AF_NETLINK` stays open because it is a channel to the local kernel, not to a network (udev
//! hot-plug events for the camera and interface queries use it); without network sockets it
//! cannot move data off the device, and the service unit's `PrivateNetwork=yes` leaves the
//! process with only a loopback interface in any case.
//!
//! `EACCES` is chosen over `EPERM` so that [`status`] can tell this guard from other layers:
//! systemd's `RestrictAddressFamilies=` answers `EAFNOSUPPORT`, a missing capability `EPERM`.
//!
//! Rules for callers:
//!
//! - **Install it early**: before the inference thread pools start and before anything opens a
//!   network socket. Sockets that already exist when it is installed keep working, and a thread
//!   that runs its own, different seccomp filter makes TSYNC fail (install then reports it).
//! - **It is irreversible**: there is no uninstall; the filter lives until the process exits and
//!   is inherited by every child process, which is intended (a spawned `curl` cannot connect
//!   either). Installing twice is harmless.
//! - It also sets `PR_SET_NO_NEW_PRIVS`, so set-uid programs run from the process gain nothing.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

use crate::PolicyError;

/// The errno a blocked call fails with.
pub const DENY_ERRNO: i32 = libc::EACCES;

/// The address families that stay open.
pub const ALLOWED_FAMILIES: [i32; 2] = [libc::AF_UNIX, libc::AF_NETLINK];

/// The x32-ABI bit of x86_64 system call numbers.
const X32_SYSCALL_BIT: i64 = 0x4000_0000;

static INSTALLED: AtomicBool = AtomicBool::new(false);

/// The system call numbers the guard needs, per architecture. Spelled out rather than taken from
/// `libc::SYS_*`, which only know the architecture being compiled for.
#[derive(Debug, Clone, Copy)]
struct Syscalls {
    socket: i64,
    socketpair: i64,
    /// Denied whatever their arguments: io_uring, other processes' descriptors and memory,
    /// receiving descriptors.
    always: [i64; 9],
    /// x86_64 only: the x32-ABI numbers (without the x32 bit) of calls whose x32 entry differs
    /// from the 64-bit one (recvmsg, recvmmsg, ptrace, process_vm_readv/writev).
    x32_only: &'static [i64],
    /// x86_64 only: also deny the x32-ABI numbers.
    x32: bool,
}

/// The system calls denied whatever their arguments, in the order of the per-architecture
/// number tables.
pub const ALWAYS_DENIED: [&str; 9] = [
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "pidfd_getfd",
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "recvmsg",
    "recvmmsg",
];

fn syscalls(arch: &'static str) -> Result<(TargetArch, Syscalls), PolicyError> {
    match arch {
        "x86_64" => Ok((
            TargetArch::x86_64,
            Syscalls {
                socket: 41,
                socketpair: 53,
                always: [425, 426, 427, 438, 101, 310, 311, 47, 299],
                x32_only: &[519, 521, 537, 539, 540],
                x32: true,
            },
        )),
        "aarch64" => Ok((
            TargetArch::aarch64,
            Syscalls {
                socket: 198,
                socketpair: 199,
                always: [425, 426, 427, 438, 117, 270, 271, 212, 243],
                x32_only: &[],
                x32: false,
            },
        )),
        other => Err(PolicyError::EgressUnsupportedArch { arch: other }),
    }
}

fn build_error(e: seccompiler::BackendError) -> PolicyError {
    PolicyError::EgressInstall {
        stage: "building the filter",
        reason: e.to_string(),
    }
}

/// Builds the BPF program for `arch` (`std::env::consts::ARCH` spelling).
fn build_program(arch: &'static str) -> Result<BpfProgram, PolicyError> {
    let (target, nr) = syscalls(arch)?;
    // Domain (argument 0, an `int`) is none of the allowed families.
    let not_allowed = || -> Result<Vec<SeccompRule>, PolicyError> {
        let conditions = ALLOWED_FAMILIES
            .iter()
            .map(|&family| {
                SeccompCondition::new(
                    0,
                    SeccompCmpArgLen::Dword,
                    SeccompCmpOp::Ne,
                    // Families are small positive constants.
                    u64::from(family.unsigned_abs()),
                )
                .map_err(build_error)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(vec![SeccompRule::new(conditions).map_err(build_error)?])
    };
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    rules.insert(nr.socket, not_allowed()?);
    rules.insert(nr.socketpair, not_allowed()?);
    // An empty rule list matches unconditionally.
    for n in nr.always {
        rules.insert(n, Vec::new());
    }
    if nr.x32 {
        let all = [nr.socket, nr.socketpair]
            .into_iter()
            .chain(nr.always)
            .chain(nr.x32_only.iter().copied());
        for n in all {
            rules.insert(n | X32_SYSCALL_BIT, Vec::new());
        }
    }
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(DENY_ERRNO.unsigned_abs()),
        target,
    )
    .map_err(build_error)?;
    BpfProgram::try_from(filter).map_err(build_error)
}

/// Installs the egress guard on all threads of this process. Irreversible; see the module docs.
pub fn install() -> Result<(), PolicyError> {
    if INSTALLED.load(Ordering::SeqCst) {
        return Ok(());
    }
    let arch = std::env::consts::ARCH;
    let program = build_program(arch)?;
    seccompiler::apply_filter_all_threads(&program).map_err(|e| PolicyError::EgressInstall {
        stage: "applying the filter to all threads",
        reason: e.to_string(),
    })?;
    INSTALLED.store(true, Ordering::SeqCst);
    tracing::info!(
        arch,
        filter_instructions = program.len(),
        "egress guard installed: no network sockets in this process"
    );
    Ok(())
}

/// What [`close_inherited`] found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InheritedFds {
    /// Descriptors above standard error that were open at start and are now closed.
    pub closed: Vec<i32>,
}

/// The address family of `fd` when it is a socket, `None` when it is something else.
fn socket_family(fd: i32) -> Option<i32> {
    // SAFETY: an all-zero `stat` is a valid value for fstat to overwrite.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is valid for writes; a closed or bad `fd` only makes fstat fail.
    if unsafe { libc::fstat(fd, &raw mut st) } != 0 || st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return None;
    }
    let mut domain: libc::c_int = -1;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `domain` and `len` are valid for writes of the sizes given.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_DOMAIN,
            (&raw mut domain).cast(),
            &raw mut len,
        )
    };
    // A socket whose family cannot be read is treated as a network socket.
    Some(if rc == 0 { domain } else { -1 })
}

/// The open descriptors of this process, from `/proc/self/fd` (the directory's own descriptor,
/// closed when the listing ends, is left out).
fn open_fds() -> Result<Vec<i32>, PolicyError> {
    let dir = std::fs::read_dir("/proc/self/fd").map_err(|e| PolicyError::EgressInherited {
        fd: -1,
        reason: format!("cannot list /proc/self/fd: {e}"),
    })?;
    let mut fds: Vec<i32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    fds.sort_unstable();
    // The listing's own descriptor is closed by now: keep only what is still open.
    // SAFETY: F_GETFD takes no pointer; it only reports whether `fd` is open.
    fds.retain(|&fd| unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0);
    Ok(fds)
}

/// Run first of all, before any thread or descriptor of the process's own exists: refuses to go
/// on when any inherited descriptor (standard input, output and error included) is a socket of
/// a family other than [`ALLOWED_FAMILIES`], and closes every inherited descriptor above
/// standard error. The seccomp filter only stops *new* network sockets; a connected socket
/// handed over at `exec` (on fd 3, or as standard input in the inetd style) would otherwise
/// keep working, and every child the process starts would inherit it too.
pub fn close_inherited() -> Result<InheritedFds, PolicyError> {
    let fds = open_fds()?;
    for &fd in &fds {
        if let Some(family) = socket_family(fd)
            && !ALLOWED_FAMILIES.contains(&family)
        {
            return Err(PolicyError::EgressInherited {
                fd,
                reason: format!("it is an inherited network socket (address family {family})"),
            });
        }
    }
    let closed: Vec<i32> = fds.into_iter().filter(|&fd| fd > 2).collect();
    for &fd in &closed {
        // SAFETY: `fd` was inherited at exec and nothing in this process owns it yet (this runs
        // before anything else); closing it is the point.
        unsafe { libc::close(fd) };
    }
    Ok(InheritedFds { closed })
}

/// The `Seccomp:` field of `/proc/self/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeccompMode {
    Disabled,
    Strict,
    Filter,
    /// Not readable (no procfs, or an unknown value).
    Unknown,
}

/// The result of trying to create an unconnected socket of one family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// Refused with `EACCES` or `EPERM`: what the guard does.
    Denied { errno: i32 },
    /// A socket was created (and closed at once): no guard.
    Allowed,
    /// Refused for another reason (`EAFNOSUPPORT` from systemd's `RestrictAddressFamilies=` or a
    /// kernel without that family).
    OtherError { errno: i32 },
}

/// Whether the guard is active in this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EgressStatus {
    pub seccomp: SeccompMode,
    pub inet: Probe,
    pub inet6: Probe,
    /// [`install`] succeeded in this process (a child inherits the filter but not this flag).
    pub installed_here: bool,
}

impl EgressStatus {
    /// Seccomp filtering is on and both IPv4 and IPv6 sockets are refused with EACCES/EPERM.
    pub fn is_active(&self) -> bool {
        self.seccomp == SeccompMode::Filter
            && matches!(self.inet, Probe::Denied { .. })
            && matches!(self.inet6, Probe::Denied { .. })
    }
}

/// Reports whether the guard is active: reads `Seccomp:` from `/proc/self/status` and probes
/// `socket(AF_INET)` and `socket(AF_INET6)`. When the guard is active the probes create nothing;
/// without it they create an unconnected socket and close it at once (no packet is sent).
pub fn status() -> EgressStatus {
    EgressStatus {
        seccomp: read_seccomp_mode(),
        inet: probe(libc::AF_INET),
        inet6: probe(libc::AF_INET6),
        installed_here: INSTALLED.load(Ordering::SeqCst),
    }
}

fn read_seccomp_mode() -> SeccompMode {
    let Ok(text) = std::fs::read_to_string("/proc/self/status") else {
        return SeccompMode::Unknown;
    };
    text.lines()
        .find_map(|l| l.strip_prefix("Seccomp:"))
        .map_or(SeccompMode::Unknown, |v| match v.trim() {
            "0" => SeccompMode::Disabled,
            "1" => SeccompMode::Strict,
            "2" => SeccompMode::Filter,
            _ => SeccompMode::Unknown,
        })
}

fn probe(family: libc::c_int) -> Probe {
    // SAFETY: socket(2) takes plain integers and returns a new fd or -1; no memory is shared.
    let fd = unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd >= 0 {
        // SAFETY: `fd` was just returned by socket(2) and is owned by nobody else.
        unsafe { libc::close(fd) };
        return Probe::Allowed;
    }
    match std::io::Error::last_os_error().raw_os_error() {
        Some(e) if e == libc::EACCES || e == libc::EPERM => Probe::Denied { errno: e },
        Some(e) => Probe::OtherError { errno: e },
        None => Probe::OtherError { errno: 0 },
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn filter_builds_for_both_supported_arches() {
        let x86 = build_program("x86_64").unwrap();
        let arm = build_program("aarch64").unwrap();
        assert!(!x86.is_empty() && !arm.is_empty());
        // x86_64 also carries the x32 entries.
        assert!(x86.len() > arm.len());
        // Far from the kernel's 4096-instruction limit, and short enough to run on every call.
        assert!(x86.len() < 200, "{}", x86.len());
    }

    #[test]
    fn the_always_denied_tables_name_distinct_calls_on_both_arches() {
        for arch in ["x86_64", "aarch64"] {
            let (_, nr) = syscalls(arch).unwrap();
            let mut numbers = nr.always.to_vec();
            numbers.sort_unstable();
            numbers.dedup();
            assert_eq!(numbers.len(), ALWAYS_DENIED.len(), "{arch}");
            assert!(!numbers.contains(&nr.socket) && !numbers.contains(&nr.socketpair));
        }
        // The host's own numbers, from libc, agree with the table.
        let (_, host) = syscalls(std::env::consts::ARCH).unwrap();
        let libc_numbers = [
            libc::SYS_io_uring_setup,
            libc::SYS_io_uring_enter,
            libc::SYS_io_uring_register,
            libc::SYS_pidfd_getfd,
            libc::SYS_ptrace,
            libc::SYS_process_vm_readv,
            libc::SYS_process_vm_writev,
            libc::SYS_recvmsg,
            libc::SYS_recvmmsg,
        ];
        assert_eq!(host.always.to_vec(), libc_numbers.to_vec());
    }

    #[test]
    fn other_arches_are_refused_with_a_clear_error() {
        let err = build_program("riscv64").unwrap_err();
        assert!(matches!(
            err,
            PolicyError::EgressUnsupportedArch { arch: "riscv64" }
        ));
        assert!(err.to_string().contains("Art. 8"));
    }

    #[test]
    fn status_in_an_unguarded_test_process_is_inactive() {
        // The unit-test binary never installs the guard (the integration tests do, in children).
        let s = status();
        assert!(!s.installed_here);
        assert_ne!(s.inet, Probe::Denied { errno: DENY_ERRNO });
    }
}
