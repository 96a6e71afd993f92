//! Integration tests of facegate-policy, one binary: the example config, property tests of the
//! consent and retention rules, and the egress guard in real child processes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::Command;
use std::sync::mpsc;
use std::thread;

use facegate_policy::{
    ConsentMethod, ConsentRecord, EXAMPLE_TOML, Guardian, GuardianRelation, IdentifyOutcome,
    PolicyConfig, PolicyError, Purpose, RawAlternatives, RawPolicyConfig, SiteKind, egress,
    identification_outcome,
};
use facegate_types::{SubjectId, UnixMillis};
use proptest::prelude::*;

// ----- config --------------------------------------------------------------------------------

#[test]
fn example_toml_validates() {
    let raw: RawPolicyConfig = toml::from_str(EXAMPLE_TOML).unwrap();
    let c = PolicyConfig::from_raw(raw).unwrap();
    assert_eq!(c.purpose(), Purpose::AccessControl);
    assert_eq!(c.deployment().site_kind(), SiteKind::OfficeEntrance);
    assert_eq!(c.notice().default_language(), "zh-CN");
    assert_eq!(c.notice().texts().len(), 2);
    assert_eq!(c.retention().days(), 365);
    assert_eq!(c.retention().minor_days(), Some(180));
    assert_eq!(c.matching().fmr(), Some(1e-4));
    assert!((c.filing().warn_fraction() - 0.8).abs() < f64::EPSILON);
}

#[test]
fn unknown_keys_are_refused() {
    let bad = EXAMPLE_TOML.replace("mode = \"production\"", "mode = \"production\"\nmodde = 1");
    let err = toml::from_str::<RawPolicyConfig>(&bad).unwrap_err();
    assert!(err.to_string().contains("unknown field"), "{err}");
}

#[test]
fn forbidden_site_kind_in_toml_names_the_article() {
    let bad = EXAMPLE_TOML.replace(
        "site_kind = \"office_entrance\"",
        "site_kind = \"changing_room\"",
    );
    let raw: RawPolicyConfig = toml::from_str(&bad).unwrap();
    let err = PolicyConfig::from_raw(raw).unwrap_err();
    assert_eq!(
        err.to_string().split(" (").next().unwrap(),
        "site kind `changing_room` is forbidden by Art. 13 of the Measures"
    );
}

#[test]
fn missing_alternatives_section_values_are_refused() {
    let start = EXAMPLE_TOML.find("[alternatives]").unwrap();
    let end = EXAMPLE_TOML.find("[filing]").unwrap();
    let bad = format!(
        "{}[alternatives]\n\n{}",
        &EXAMPLE_TOML[..start],
        &EXAMPLE_TOML[end..]
    );
    let raw: RawPolicyConfig = toml::from_str(&bad).unwrap();
    assert!(matches!(
        PolicyConfig::from_raw(raw).unwrap_err(),
        PolicyError::NoAlternativeCredential
    ));
}

// ----- property tests ------------------------------------------------------------------------

const NOW: i64 = 1_750_000_000_000;
const DAY: i64 = UnixMillis::MS_PER_DAY;

fn config(purpose: Purpose, days: u32, minor_days: Option<u32>) -> PolicyConfig {
    let mut raw = RawPolicyConfig::example();
    raw.deployment.purpose = purpose;
    raw.retention.days = days;
    raw.retention.minor_days = minor_days;
    PolicyConfig::from_raw(raw).unwrap()
}

fn record(age: u8, purpose: Purpose, granted_at: i64, guardian: bool) -> ConsentRecord {
    ConsentRecord {
        subject: SubjectId::new("s-1").unwrap(),
        age_years: age,
        purpose,
        notice_version: 1,
        method: ConsentMethod::Terminal,
        operator: "op-1".into(),
        guardian: guardian.then(|| Guardian {
            identity: "G-42".into(),
            relation: GuardianRelation::Parent,
        }),
        granted_at: UnixMillis(granted_at),
    }
}

fn purpose() -> impl Strategy<Value = Purpose> {
    prop::sample::select(Purpose::ALL.to_vec())
}

/// `(days, minor_days)` as the validated config allows them.
fn retention() -> impl Strategy<Value = (u32, Option<u32>)> {
    (1u32..=3650).prop_flat_map(|days| (Just(days), prop::option::of(1u32..=days)))
}

proptest! {
    /// Art. 7: no consent for a subject under 14 without a guardian, whatever else is true;
    /// with a guardian (and everything else valid) it is granted.
    #[test]
    fn no_consent_under_14_without_guardian(
        age in 0u8..14,
        (days, minor) in retention(),
        ago_ms in 0i64..DAY,
    ) {
        let c = config(Purpose::AccessControl, days, minor);
        let r = record(age, Purpose::AccessControl, NOW - ago_ms, false);
        let is_guardian_required = |e: &PolicyError| matches!(e, PolicyError::GuardianRequired { .. });
        prop_assert!(is_guardian_required(&c.grant(r.clone(), UnixMillis(NOW)).unwrap_err()));
        prop_assert!(is_guardian_required(&c.restore(r).unwrap_err()));
        let with_guardian = record(age, Purpose::AccessControl, NOW - ago_ms, true);
        prop_assert!(c.grant(with_guardian, UnixMillis(NOW)).is_ok());
    }

    /// Art. 8: a consent never lives longer than the retention period that applies to the
    /// subject, and is expired from then on.
    #[test]
    fn expiry_never_exceeds_the_retention_period(
        age in 0u8..=130,
        (days, minor) in retention(),
        granted_ago in 0i64..(4000 * DAY),
        later in 0i64..(4000 * DAY),
    ) {
        let c = config(Purpose::Attendance, days, minor);
        let granted_at = NOW - granted_ago;
        let r = record(age, Purpose::Attendance, granted_at, age < 14);
        let limit = if age < 18 { minor.unwrap_or(days) } else { days };
        let consents = [c.restore(r.clone()).ok(), c.grant(r, UnixMillis(NOW)).ok()];
        prop_assert!(consents[0].is_some(), "restore of a valid record");
        for consent in consents.into_iter().flatten() {
            let lifetime = consent.expires_at().0 - granted_at;
            prop_assert!(lifetime <= i64::from(limit) * DAY);
            prop_assert!(lifetime <= i64::from(days) * DAY);
            let t = UnixMillis(granted_at + i64::from(limit) * DAY + later);
            prop_assert!(c.expired(&consent, t));
            prop_assert!(!consent.is_live(t));
        }
    }

    /// Art. 8: shortening retention (both the adult and the minor period) never lengthens any
    /// expiry, whether the consent is restored under the new config or judged by it.
    #[test]
    fn shortening_retention_never_lengthens_expiry(
        age in 0u8..=130,
        (long_days, long_minor) in retention(),
        short_frac in 0.0f64..=1.0,
        minor_frac in 0.0f64..=1.0,
        short_minor_none in any::<bool>(),
        granted_ago in 0i64..(4000 * DAY),
        t_offset in 0i64..(8000 * DAY),
    ) {
        let short_days = ((f64::from(long_days) * short_frac) as u32).clamp(1, long_days);
        let long_minor_eff = long_minor.unwrap_or(long_days);
        let cap = short_days.min(long_minor_eff);
        let short_minor = if short_minor_none && short_days <= long_minor_eff {
            None
        } else {
            Some(((f64::from(cap) * minor_frac) as u32).clamp(1, cap))
        };
        let long = config(Purpose::AccessControl, long_days, long_minor);
        let short = config(Purpose::AccessControl, short_days, short_minor);
        let r = record(age, Purpose::AccessControl, NOW - granted_ago, true);
        let under_long = long.restore(r.clone()).unwrap();
        let under_short = short.restore(r).unwrap();
        prop_assert!(under_short.expires_at() <= under_long.expires_at());
        let t = UnixMillis(NOW - granted_ago + t_offset);
        if long.expired(&under_long, t) {
            prop_assert!(short.expired(&under_long, t), "old proof judged by the new config");
            prop_assert!(short.expired(&under_short, t));
        }
    }

    /// Art. 6: restore never yields a consent that grant would refuse for a purpose mismatch.
    #[test]
    fn restore_never_accepts_another_purpose(
        configured in purpose(),
        consented in purpose(),
        age in 0u8..=130,
        guardian in any::<bool>(),
        ago in 0i64..(400 * DAY),
    ) {
        let c = config(configured, 365, None);
        let r = record(age, consented, NOW - ago, guardian);
        let granted = c.grant(r.clone(), UnixMillis(NOW));
        let restored = c.restore(r);
        let mismatch = |e: &PolicyError| matches!(e, PolicyError::PurposeMismatch { .. });
        if let Err(e) = &granted && mismatch(e) {
            prop_assert!(matches!(&restored, Err(e) if mismatch(e)));
        }
        if let Ok(consent) = &restored {
            prop_assert_eq!(consent.record().purpose, configured);
        }
        prop_assert_eq!(configured != consented, matches!(&restored, Err(e) if mismatch(e)));
    }

    /// Art. 13: a config validates iff its site kind is not forbidden.
    #[test]
    fn only_permitted_site_kinds_validate(kind in prop::sample::select(SiteKind::ALL.to_vec())) {
        let mut raw = RawPolicyConfig::example();
        raw.deployment.site_kind = kind;
        prop_assert_eq!(PolicyConfig::from_raw(raw).is_ok(), !kind.is_forbidden());
    }

    /// Art. 10: a config validates iff at least one alternative credential is on.
    #[test]
    fn some_alternative_is_always_required(
        pin in any::<bool>(), card in any::<bool>(), qr in any::<bool>(), op in any::<bool>(),
    ) {
        let mut raw = RawPolicyConfig::example();
        raw.alternatives = RawAlternatives { pin, card, qr, operator_override: op, credential_days: None };
        prop_assert_eq!(PolicyConfig::from_raw(raw).is_ok(), pin || card || qr || op);
    }

    /// Identification never says "match" below the threshold or within the margin.
    #[test]
    fn identification_match_clears_threshold_and_margin(
        best in -1.0f32..=1.0,
        second in prop::option::of(-1.0f32..=1.0),
        threshold in 0.0f32..1.0,
        margin in 0.0f32..0.5,
    ) {
        if identification_outcome(best, second, threshold, margin) == IdentifyOutcome::Match {
            prop_assert!(best >= threshold);
            if let Some(s) = second {
                prop_assert!(best - s >= margin);
            }
        }
    }
}

// ----- egress guard --------------------------------------------------------------------------

/// Set in a child process: `guarded` installs the guard, `control` does not, `inherited` is
/// spawned by a guarded child and only tries to connect.
const CHILD_MODE: &str = "FACEGATE_POLICY_EGRESS_CHILD";
/// The parent's TCP listener.
const CHILD_TARGET: &str = "FACEGATE_POLICY_EGRESS_TARGET";
const LINE_PREFIX: &str = "egress-check ";

fn report(name: &str, result: impl AsRef<str>) {
    println!("{LINE_PREFIX}{name} {}", result.as_ref());
}

fn io_outcome<T>(r: std::io::Result<T>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(e) => format!(
            "err errno={} kind={:?}",
            e.raw_os_error().unwrap_or(0),
            e.kind()
        ),
    }
}

fn raw_socket(domain: i32, ty: i32, protocol: i32) -> String {
    // SAFETY: plain integer syscall; the fd, if any, is closed at once.
    let fd = unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC, protocol) };
    if fd >= 0 {
        // SAFETY: we own `fd`.
        unsafe { libc::close(fd) };
        return "ok".into();
    }
    io_outcome::<()>(Err(std::io::Error::last_os_error()))
}

fn io_uring_setup() -> String {
    // io_uring_params is 120 bytes; zeroed is a valid request for a 1-entry ring.
    let mut params = [0u8; 120];
    // SAFETY: the kernel reads and writes `params` (120 bytes, the size of struct
    // io_uring_params); the fd, if any, is closed at once.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 1u32, params.as_mut_ptr()) };
    if fd >= 0 {
        // SAFETY: we own the fd.
        unsafe { libc::close(fd as i32) };
        return "ok".into();
    }
    io_outcome::<()>(Err(std::io::Error::last_os_error()))
}

/// A raw syscall result as a report: "ok" for a non-negative return, the errno otherwise.
fn syscall_outcome(rc: i64) -> String {
    if rc >= 0 {
        return "ok".into();
    }
    io_outcome::<()>(Err(std::io::Error::last_os_error()))
}

/// Descriptors and processes made before the guard, used after it.
struct PreGuard {
    /// An io_uring made before the guard (-1 when this kernel or sandbox refuses io_uring).
    ring: i32,
    /// A pidfd of this process.
    pidfd: i32,
    /// An unconnected IPv4 socket, to be passed over a Unix socket with SCM_RIGHTS.
    inet: i32,
    /// Both ends of a Unix stream pair.
    pair: (UnixStream, UnixStream),
    /// A sleeping child to ptrace.
    sleeper: std::process::Child,
}

fn pre_guard() -> PreGuard {
    let mut params = [0u8; 120];
    // SAFETY: as in `io_uring_setup`; the fd is kept and closed by the process's exit.
    let ring = unsafe { libc::syscall(libc::SYS_io_uring_setup, 4u32, params.as_mut_ptr()) };
    // SAFETY: pidfd_open takes plain integers.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, libc::getpid(), 0) };
    // SAFETY: plain integer syscall.
    let inet = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    assert!(pidfd >= 0 && inet >= 0, "pre-guard setup failed");
    PreGuard {
        ring: i32::try_from(ring).unwrap_or(-1),
        pidfd: i32::try_from(pidfd).unwrap(),
        inet,
        pair: UnixStream::pair().unwrap(),
        sleeper: Command::new("sleep").arg("30").spawn().unwrap(),
    }
}

fn io_uring_enter(ring: i32) -> String {
    // SAFETY: no sqes are submitted and no sigset is passed; the kernel only reads the fd.
    syscall_outcome(unsafe {
        libc::syscall(
            libc::SYS_io_uring_enter,
            ring,
            0u32,
            0u32,
            0u32,
            std::ptr::null::<libc::c_void>(),
            0usize,
        )
    })
}

fn io_uring_register(ring: i32) -> String {
    // IORING_UNREGISTER_BUFFERS (1) with no argument: harmless on a ring without buffers.
    // SAFETY: no pointer is passed.
    syscall_outcome(unsafe {
        libc::syscall(
            libc::SYS_io_uring_register,
            ring,
            1u32,
            std::ptr::null::<libc::c_void>(),
            0u32,
        )
    })
}

fn pidfd_getfd(pidfd: i32) -> String {
    // SAFETY: takes integers; the new fd, if any, is closed at once.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd, 1, 0u32) };
    if fd >= 0 {
        // SAFETY: we own the new fd.
        unsafe { libc::close(fd as i32) };
    }
    syscall_outcome(fd)
}

fn ptrace_attach(pid: u32) -> String {
    let pid = libc::pid_t::try_from(pid).unwrap();
    // SAFETY: PTRACE_ATTACH takes no pointers; on success the tracee is waited for and detached.
    let rc = unsafe { libc::ptrace(libc::PTRACE_ATTACH, pid, 0usize, 0usize) };
    if rc == 0 {
        let mut status = 0;
        // SAFETY: `status` is valid for writes.
        unsafe {
            libc::waitpid(pid, &raw mut status, 0);
            libc::ptrace(libc::PTRACE_DETACH, pid, 0usize, 0usize);
        }
    }
    syscall_outcome(rc)
}

fn process_vm_readv() -> String {
    let source = [7u8; 16];
    let mut dest = [0u8; 16];
    let local = libc::iovec {
        iov_base: dest.as_mut_ptr().cast(),
        iov_len: dest.len(),
    };
    let remote = libc::iovec {
        iov_base: source.as_ptr().cast_mut().cast(),
        iov_len: source.len(),
    };
    // SAFETY: both iovecs describe live buffers of 16 bytes in this process.
    let n = unsafe {
        libc::process_vm_readv(libc::getpid(), &raw const local, 1, &raw const remote, 1, 0)
    };
    syscall_outcome(n as i64)
}

fn process_vm_writev() -> String {
    let source = [7u8; 16];
    let mut dest = [0u8; 16];
    let local = libc::iovec {
        iov_base: source.as_ptr().cast_mut().cast(),
        iov_len: source.len(),
    };
    let remote = libc::iovec {
        iov_base: dest.as_mut_ptr().cast(),
        iov_len: dest.len(),
    };
    // SAFETY: both iovecs describe live buffers of 16 bytes in this process.
    let n = unsafe {
        libc::process_vm_writev(libc::getpid(), &raw const local, 1, &raw const remote, 1, 0)
    };
    syscall_outcome(n as i64)
}

/// Sends `fd` over `pair.0` with SCM_RIGHTS and receives it on `pair.1` with recvmsg.
fn pass_fd(pair: &(UnixStream, UnixStream), fd: i32) -> String {
    use std::os::unix::io::AsRawFd;
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<i32>() as u32) } as usize;
    let mut cbuf = vec![0u8; space];
    let mut byte = [1u8];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // SAFETY: an all-zero msghdr is valid; the pointers set below outlive the calls.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: `msg` points at `cbuf`, which has room for one cmsg carrying one int.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&raw const msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<i32>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<i32>(), fd);
    }
    // SAFETY: `msg` is fully initialised above.
    let sent = unsafe { libc::sendmsg(pair.0.as_raw_fd(), &raw const msg, 0) };
    if sent != 1 {
        return format!("send {}", syscall_outcome(sent as i64));
    }
    let mut rbuf = vec![0u8; space];
    // SAFETY: as above, with a fresh control buffer.
    let mut rmsg: libc::msghdr = unsafe { std::mem::zeroed() };
    rmsg.msg_iov = &raw mut iov;
    rmsg.msg_iovlen = 1;
    rmsg.msg_control = rbuf.as_mut_ptr().cast();
    rmsg.msg_controllen = space as _;
    // SAFETY: `rmsg` points at live buffers of the sizes given.
    let got = unsafe { libc::recvmsg(pair.1.as_raw_fd(), &raw mut rmsg, libc::MSG_CMSG_CLOEXEC) };
    syscall_outcome(got as i64)
}

fn recvmmsg(pair: &(UnixStream, UnixStream)) -> String {
    use std::os::unix::io::AsRawFd;
    // vlen 0 with MSG_DONTWAIT: returns at once where allowed.
    // SAFETY: no message vector is read for vlen 0.
    let n = unsafe {
        libc::recvmmsg(
            pair.1.as_raw_fd(),
            std::ptr::null_mut(),
            0,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        )
    };
    syscall_outcome(i64::from(n))
}

fn unix_socketpair_roundtrip() -> std::io::Result<()> {
    let (mut a, mut b) = UnixStream::pair()?;
    a.write_all(b"ping")?;
    let mut buf = [0u8; 4];
    b.read_exact(&mut buf)?;
    if &buf != b"ping" {
        return Err(std::io::Error::other("wrong bytes"));
    }
    Ok(())
}

fn unix_listener_roundtrip() -> std::io::Result<()> {
    let dir = std::env::temp_dir().join(format!("facegate-policy-egress-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("admin.sock");
    let _ = std::fs::remove_file(&path);
    let result = (|| {
        let listener = UnixListener::bind(&path)?;
        let mut client = UnixStream::connect(&path)?;
        let (mut server, _) = listener.accept()?;
        client.write_all(b"pong")?;
        let mut buf = [0u8; 4];
        server.read_exact(&mut buf)?;
        if &buf != b"pong" {
            return Err(std::io::Error::other("wrong bytes"));
        }
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn spawn_self(mode: &str, target: SocketAddr) -> std::process::Output {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "egress_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_MODE, mode)
        .env(CHILD_TARGET, target.to_string())
        .output()
        .unwrap()
}

fn parse_report(out: &std::process::Output) -> BTreeMap<String, String> {
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        // libtest prints "test egress_child ... " without a newline before the first report.
        .filter_map(|l| l.find(LINE_PREFIX).map(|i| &l[i + LINE_PREFIX.len()..]))
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// The child side; a no-op unless `CHILD_MODE` is set.
#[test]
fn egress_child() {
    let Ok(mode) = std::env::var(CHILD_MODE) else {
        return;
    };
    let target: SocketAddr = std::env::var(CHILD_TARGET).unwrap().parse().unwrap();
    if mode == "inherited" {
        report("main_tcp", io_outcome(TcpStream::connect(target)));
        return;
    }

    // A thread that exists before the guard is installed: TSYNC must cover it too.
    let (go, wait) = mpsc::channel::<()>();
    let early = thread::spawn(move || {
        wait.recv().unwrap();
        io_outcome(TcpStream::connect(target))
    });

    let mut pre = pre_guard();
    if mode == "guarded" {
        egress::install().unwrap();
        egress::install().unwrap(); // idempotent
    }
    let status = egress::status();
    report("status_active", status.is_active().to_string());
    report("installed_here", status.installed_here.to_string());

    report("main_tcp", io_outcome(TcpStream::connect(target)));
    go.send(()).unwrap();
    report("early_thread_tcp", early.join().unwrap());
    let late = thread::spawn(move || io_outcome(TcpStream::connect(target)));
    report("late_thread_tcp", late.join().unwrap());
    report("udp", io_outcome(UdpSocket::bind("127.0.0.1:0")));
    report(
        "tcp6",
        io_outcome(TcpStream::connect(SocketAddr::from((
            std::net::Ipv6Addr::LOCALHOST,
            target.port(),
        )))),
    );
    report("packet", raw_socket(libc::AF_PACKET, libc::SOCK_RAW, 0));
    report("vsock", raw_socket(libc::AF_VSOCK, libc::SOCK_STREAM, 0));
    report("io_uring", io_uring_setup());
    report(
        "netlink",
        raw_socket(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE),
    );
    report("io_uring_enter_early_ring", io_uring_enter(pre.ring));
    report("io_uring_register_early_ring", io_uring_register(pre.ring));
    report("pidfd_getfd", pidfd_getfd(pre.pidfd));
    report("ptrace_attach", ptrace_attach(pre.sleeper.id()));
    let _ = pre.sleeper.kill();
    let _ = pre.sleeper.wait();
    report("process_vm_readv", process_vm_readv());
    report("process_vm_writev", process_vm_writev());
    report("scm_rights_inet", pass_fd(&pre.pair, pre.inet));
    report("recvmmsg", recvmmsg(&pre.pair));
    report("unix_pair", io_outcome(unix_socketpair_roundtrip()));
    report("unix_listener", io_outcome(unix_listener_roundtrip()));

    // A process started by a guarded one inherits the filter.
    let grandchild = spawn_self("inherited", target);
    let inherited = parse_report(&grandchild);
    report(
        "inherited_tcp",
        inherited
            .get("main_tcp")
            .cloned()
            .unwrap_or_else(|| "missing".into()),
    );
}

#[test]
fn egress_guard_blocks_network_sockets_on_all_threads_and_keeps_unix_sockets() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let target = listener.local_addr().unwrap();

    let run = |mode: &str| {
        let out = spawn_self(mode, target);
        assert!(
            out.status.success(),
            "{mode} child failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let r = parse_report(&out);
        assert!(
            r.contains_key("unix_listener"),
            "{mode} child did not report: {r:?}"
        );
        r
    };
    let control = run("control");
    let guarded = run("guarded");

    // The control proves the environment lets this process reach the listener, so the guarded
    // failures below are the guard's doing.
    for check in [
        "main_tcp",
        "early_thread_tcp",
        "late_thread_tcp",
        "udp",
        "netlink",
        "unix_pair",
        "unix_listener",
        "inherited_tcp",
    ] {
        assert_eq!(control[check], "ok", "control {check}: {control:?}");
    }
    assert_eq!(control["status_active"], "false");
    assert_eq!(control["installed_here"], "false");
    assert!(!control["vsock"].contains("errno=13"), "{control:?}");
    assert!(!control["io_uring"].contains("errno=13"), "{control:?}");
    // Without the guard these work (or fail for the kernel's own reasons, never EACCES), so the
    // EACCES below is the guard's.
    for check in [
        "pidfd_getfd",
        "process_vm_readv",
        "process_vm_writev",
        "scm_rights_inet",
    ] {
        assert_eq!(control[check], "ok", "control {check}: {control:?}");
    }
    for check in [
        "io_uring_enter_early_ring",
        "io_uring_register_early_ring",
        "ptrace_attach",
        "recvmmsg",
    ] {
        assert!(
            !control[check].contains("errno=13"),
            "control {check}: {control:?}"
        );
    }

    let denied = "err errno=13 kind=PermissionDenied";
    for check in [
        "main_tcp",
        "early_thread_tcp",
        "late_thread_tcp",
        "udp",
        "tcp6",
        "packet",
        "vsock",
        "io_uring",
        "io_uring_enter_early_ring",
        "io_uring_register_early_ring",
        "pidfd_getfd",
        "ptrace_attach",
        "process_vm_readv",
        "process_vm_writev",
        "scm_rights_inet",
        "recvmmsg",
        "inherited_tcp",
    ] {
        assert_eq!(guarded[check], denied, "guarded {check}: {guarded:?}");
    }
    assert_eq!(guarded["status_active"], "true");
    assert_eq!(guarded["installed_here"], "true");
    for check in ["netlink", "unix_pair", "unix_listener"] {
        assert_eq!(guarded[check], "ok", "guarded {check}: {guarded:?}");
    }

    // Nothing from the guarded child arrived (the control's connections are in the backlog;
    // there must be exactly as many as the control made: 3, plus the control's grandchild).
    listener.set_nonblocking(true).unwrap();
    let accepted = std::iter::from_fn(|| listener.accept().ok()).count();
    assert_eq!(accepted, 4, "only the control child's connections arrive");
}
