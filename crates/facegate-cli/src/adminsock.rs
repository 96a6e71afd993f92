//! The admin API: JSON lines over a Unix socket only (`/run/facegate/admin.sock`), authorised by
//! the peer's kernel-reported credentials (SO_PEERCRED). Roles come from Unix groups: root and
//! members of `facegate-admin` are admins, members of `facegate-operator` operators; everybody
//! else is refused, and every refusal is recorded in the audit chain. A uid refused three times
//! within a minute is not even read for the next minute (throttling).
//!
//! Requests, one JSON object per line, answered by one JSON line:
//! `{"op":"status"}`, `{"op":"subjects"}`, `{"op":"reload_gallery"}`, `{"op":"credential","kind":"pin|card|qr","value":"…"}`
//! and `{"op":"override"}` (operators); `{"op":"withdraw","subject":"…"}`,
//! `{"op":"delete","subject":"…","reason":"…"}`, `{"op":"audit_verify"}` (admins);
//! `{"op":"notice","lang":"en"}` (operators: the notice for the terminal's screen);
//! `{"op":"enroll",...}` (operators: an enrollment at the service's own camera, its count-down
//! and progress on the events stream, or from photos whose bytes follow the line, each bounded
//! by [`crate::adminproto::MAX_PHOTO_BYTES`]). The line format and its parsing are in
//! [`crate::adminproto`]; the commands send the same typed [`Request`].
//!
//! One peer must never stop the gate, so everything a peer can make the service hold is bounded:
//! - a request line is at most [`MAX_LINE`] bytes, checked while it is read;
//! - a fixed pool of [`WORKERS`] threads serves connections; at most [`QUEUED`] more wait, and
//!   one uid has at most [`PER_UID`] connections served or waiting. Anything beyond is told
//!   `busy` and closed at once, so idle connections cannot pile up descriptors;
//! - a connection must send a complete request within [`REQUEST_TIME`] of the previous answer
//!   (of connecting, for the first), or it is closed;
//! - each uid may make [`RATE_BURST`] requests at once and [`RATE_PER_SEC`] a second after that;
//! - `accept` failing for want of descriptors backs off instead of spinning.
//!
//! Every request is validated against the running gallery and policy before it touches
//! anything: `reload_gallery` rebuilds the live gallery from the store for the running model
//! only; a `model_id` or `dim` that is not the running model's is an error, never an allocation.

use std::collections::HashMap;
use std::ffi::CString;
use std::io::{BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use facegate_engine::{Credential, EngineHandle, peer_credentials};
use facegate_policy::ConsentMethod;
use facegate_store::{AuditEvent, AuditKind};
use facegate_types::{Clock, SubjectId, SystemClock};
use serde_json::{Value, json};

use crate::adminproto::{CredentialKind, Line, MAX_LINE, Request, read_line};

/// Threads serving admin connections.
pub const WORKERS: usize = 4;
/// Connections waiting for a worker, at most.
pub const QUEUED: usize = 8;
/// Connections of one uid, served or waiting, at most.
pub const PER_UID: usize = 2;
/// Time a connection has for each complete request line.
pub const REQUEST_TIME: Duration = Duration::from_secs(3);
/// Requests one uid may make at once.
pub const RATE_BURST: f64 = 20.0;
/// Requests one uid may make each second after the burst.
pub const RATE_PER_SEC: f64 = 10.0;

/// What a peer may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Operator,
    Admin,
}

fn group_gid(name: &str) -> Option<u32> {
    let cname = CString::new(name).ok()?;
    // SAFETY: getgrnam returns a pointer into static storage or null; read once, immediately.
    let gr = unsafe { libc::getgrnam(cname.as_ptr()) };
    if gr.is_null() {
        return None;
    }
    // SAFETY: non-null pointer from getgrnam.
    Some(unsafe { (*gr).gr_gid })
}

/// The groups of `uid` (primary `gid` included), from the user database.
fn groups_of(uid: u32, gid: u32) -> Vec<u32> {
    // SAFETY: getpwuid returns static storage or null; the name is copied before any other call.
    let name = unsafe {
        let pw = libc::getpwuid(uid);
        if pw.is_null() {
            return vec![gid];
        }
        std::ffi::CStr::from_ptr((*pw).pw_name).to_owned()
    };
    let mut n: libc::c_int = 64;
    let mut groups = vec![0 as libc::gid_t; n as usize];
    // SAFETY: `groups` holds `n` entries; getgrouplist writes at most `n` and updates it.
    let rc = unsafe { libc::getgrouplist(name.as_ptr(), gid, groups.as_mut_ptr(), &raw mut n) };
    if rc < 0 {
        groups.resize(n.max(0) as usize, 0);
        // SAFETY: as above, with the size the first call asked for.
        unsafe { libc::getgrouplist(name.as_ptr(), gid, groups.as_mut_ptr(), &raw mut n) };
    }
    groups.truncate(n.max(0) as usize);
    groups
}

/// The role of a peer: root and `facegate-admin` are admins, `facegate-operator` operators.
pub fn role_of(uid: u32, gid: u32) -> Option<Role> {
    if uid == 0 {
        return Some(Role::Admin);
    }
    let groups = groups_of(uid, gid);
    let member = |name: &str| group_gid(name).is_some_and(|g| groups.contains(&g));
    if member("facegate-admin") {
        Some(Role::Admin)
    } else if member("facegate-operator") {
        Some(Role::Operator)
    } else {
        None
    }
}

/// Whether a peer may subscribe to the events socket: root, the service's own uid, and members
/// of `facegate-events` (the site connector's group), `facegate-operator` or `facegate-admin`.
pub fn may_subscribe(uid: u32, gid: u32) -> bool {
    // SAFETY: geteuid has no preconditions.
    if uid == 0 || uid == unsafe { libc::geteuid() } {
        return true;
    }
    let groups = groups_of(uid, gid);
    ["facegate-events", "facegate-operator", "facegate-admin"]
        .iter()
        .any(|name| group_gid(name).is_some_and(|g| groups.contains(&g)))
}

/// What the admin API serves: the running engine, and what an enrollment at the service needs
/// to know of its configuration.
#[derive(Debug, Clone)]
pub struct Site {
    pub handle: EngineHandle,
    pub enroll: crate::cmd::enroll::ServiceEnrollment,
}

/// Binds the socket (mode 0660, a stale socket replaced) and serves it: one accept thread and a
/// fixed pool of [`WORKERS`] threads.
pub fn serve(path: &Path, site: Site) -> Result<PathBuf> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        if !meta.file_type().is_socket() {
            bail!(
                "admin socket {}: a file that is not a socket is in the way",
                path.display()
            );
        }
        std::fs::remove_file(path)
            .with_context(|| format!("removing stale socket {}", path.display()))?;
    }
    let listener = UnixListener::bind(path)
        .with_context(|| format!("binding admin socket {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("chmod {}", path.display()))?;
    let peers = Arc::new(Peers::default());
    let (tx, rx) = sync_channel::<Conn>(QUEUED);
    let rx = Arc::new(Mutex::new(rx));
    let site = Arc::new(site);
    for i in 0..WORKERS {
        let (rx, site, peers) = (Arc::clone(&rx), Arc::clone(&site), Arc::clone(&peers));
        std::thread::Builder::new()
            .name(format!("admin-{i}"))
            .spawn(move || worker(&rx, &site, &peers))?;
    }
    let owned = path.to_path_buf();
    std::thread::Builder::new()
        .name("admin".into())
        .spawn(move || accept_loop(&listener, &tx, &site.handle, &peers))?;
    Ok(owned)
}

/// A connection handed to a worker; dropping it releases its uid's slot.
struct Conn {
    stream: UnixStream,
    role: Role,
    uid: u32,
    peers: Arc<Peers>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.peers.release(self.uid);
    }
}

/// What the service keeps per peer uid: open connections and a request token bucket.
#[derive(Default)]
struct Peers(Mutex<HashMap<u32, PeerState>>);

struct PeerState {
    connections: usize,
    tokens: f64,
    refilled: Instant,
}

impl Peers {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, PeerState>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn state(map: &mut HashMap<u32, PeerState>, uid: u32) -> &mut PeerState {
        map.entry(uid).or_insert_with(|| PeerState {
            connections: 0,
            tokens: RATE_BURST,
            refilled: Instant::now(),
        })
    }

    /// Takes a connection slot for `uid`, or says why not.
    fn admit(&self, uid: u32) -> Result<(), &'static str> {
        let mut map = self.lock();
        let total: usize = map.values().map(|p| p.connections).sum();
        if total >= WORKERS + QUEUED {
            return Err("busy: too many admin connections, try again");
        }
        let p = Self::state(&mut map, uid);
        if p.connections >= PER_UID {
            return Err("busy: too many admin connections from this uid, try again");
        }
        p.connections += 1;
        Ok(())
    }

    fn release(&self, uid: u32) {
        let mut map = self.lock();
        if let Some(p) = map.get_mut(&uid) {
            p.connections = p.connections.saturating_sub(1);
            // Forget idle peers whose bucket is full again, so the map stays small.
            let full = p.tokens + p.refilled.elapsed().as_secs_f64() * RATE_PER_SEC >= RATE_BURST;
            if p.connections == 0 && full {
                map.remove(&uid);
            }
        }
    }

    /// Takes one request token of `uid`; `false` when its rate is exceeded.
    fn take_token(&self, uid: u32) -> bool {
        let mut map = self.lock();
        let p = Self::state(&mut map, uid);
        let now = Instant::now();
        let refill = now.duration_since(p.refilled).as_secs_f64() * RATE_PER_SEC;
        p.tokens = (p.tokens + refill).min(RATE_BURST);
        p.refilled = now;
        if p.tokens >= 1.0 {
            p.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

fn accept_loop(
    listener: &UnixListener,
    tx: &SyncSender<Conn>,
    handle: &EngineHandle,
    peers: &Arc<Peers>,
) {
    let mut failures: HashMap<u32, Vec<Instant>> = HashMap::new();
    let mut last_warning: Option<Instant> = None;
    loop {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors (EMFILE/ENFILE) or memory: the pending connection stays in
                // the backlog; wait instead of spinning on it, and say so at most once a minute.
                if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                    tracing::warn!(error = %e, "admin socket: accept failed; backing off");
                    last_warning = Some(Instant::now());
                }
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        let Ok((uid, gid, pid)) = peer_credentials(&stream) else {
            continue;
        };
        failures.retain(|_, v| {
            v.retain(|t| t.elapsed() < Duration::from_secs(60));
            !v.is_empty()
        });
        let recent = failures.entry(uid).or_default();
        if recent.len() >= 3 {
            tracing::warn!(uid, "admin socket: throttled");
            continue;
        }
        let Some(role) = role_of(uid, gid) else {
            recent.push(Instant::now());
            tracing::warn!(
                uid,
                pid,
                "admin socket: refused (not in facegate-admin or facegate-operator)"
            );
            let ev = AuditEvent::new(AuditKind::AuthFailure, format!("uid:{uid}"), "refused")
                .details(json!({ "interface": "admin_socket", "pid": pid }));
            let _ = handle.with_store(move |s| s.record(ev), Duration::from_secs(5));
            let mut s = stream;
            let _ = send(
                &mut s,
                &json!({ "ok": false, "error": "not authorised: join facegate-operator or facegate-admin" }),
            );
            continue;
        };
        let mut stream = stream;
        if let Err(why) = peers.admit(uid) {
            let _ = stream.set_write_timeout(Some(Duration::from_millis(100)));
            let _ = send(&mut stream, &json!({ "ok": false, "error": why }));
            continue;
        }
        let conn = Conn {
            stream,
            role,
            uid,
            peers: Arc::clone(peers),
        };
        if let Err(TrySendError::Full(mut c) | TrySendError::Disconnected(mut c)) =
            tx.try_send(conn)
        {
            let _ = c.stream.set_write_timeout(Some(Duration::from_millis(100)));
            let _ = send(
                &mut c.stream,
                &json!({ "ok": false, "error": "busy: too many admin connections, try again" }),
            );
        }
    }
}

fn worker(rx: &Mutex<Receiver<Conn>>, site: &Site, peers: &Peers) {
    loop {
        let next = rx
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .recv();
        let Ok(conn) = next else { return };
        session(conn, site, peers);
    }
}

/// Reads the bodies that follow a request line, each exactly as long as declared (each size
/// was bounded when the line was parsed).
fn read_bodies<R: std::io::BufRead>(
    reader: &mut R,
    sizes: &[u64],
    before_read: &mut dyn FnMut() -> std::io::Result<()>,
) -> std::io::Result<Vec<Vec<u8>>> {
    let mut bodies = Vec::with_capacity(sizes.len());
    for &n in sizes {
        let mut body = vec![0u8; usize::try_from(n).map_err(std::io::Error::other)?];
        let mut got = 0;
        while got < body.len() {
            before_read()?;
            match reader.read(&mut body[got..]) {
                Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                Ok(k) => got += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        bodies.push(body);
    }
    Ok(bodies)
}

/// Writes one JSON line in a single `write_all`, so a reader never sees half an answer.
fn send(out: &mut UnixStream, v: &Value) -> std::io::Result<()> {
    let mut line = v.to_string();
    line.push('\n');
    out.write_all(line.as_bytes())
}

fn session(conn: Conn, site: &Site, peers: &Peers) {
    let Ok(mut out) = conn.stream.try_clone() else {
        return;
    };
    // A peer that stops reading cannot hold the worker either.
    let _ = out.set_write_timeout(Some(REQUEST_TIME));
    let Ok(read_side) = conn.stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::with_capacity(MAX_LINE, read_side);
    loop {
        let deadline = Instant::now() + REQUEST_TIME;
        let sock = &conn.stream;
        let mut before_read = || {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(std::io::ErrorKind::TimedOut.into());
            }
            sock.set_read_timeout(Some(left))
        };
        let line = match read_line(&mut reader, MAX_LINE, &mut before_read) {
            Ok(Line::Complete(line)) => line,
            Ok(Line::Closed) | Err(_) => return,
            Ok(Line::TooLong) => {
                let _ = send(
                    &mut out,
                    &json!({ "ok": false, "error": format!("request too long (more than {MAX_LINE} bytes)") }),
                );
                return;
            }
        };
        let reply = if !peers.take_token(conn.uid) {
            json!({ "ok": false, "error": format!("rate limited: at most {RATE_PER_SEC} requests a second per uid") })
        } else {
            match Request::parse(&line) {
                Ok(Request::Enroll(req)) => {
                    // The photos' bytes follow the line, as many as it declared.
                    let sock = &conn.stream;
                    let mut before_read = || {
                        let left = deadline.saturating_duration_since(Instant::now());
                        sock.set_read_timeout(Some(left.max(Duration::from_millis(1))))
                    };
                    match read_bodies(&mut reader, &req.photo_bytes, &mut before_read) {
                        Ok(photos) => crate::cmd::enroll::at_service(
                            &site.enroll,
                            &site.handle,
                            req,
                            photos,
                            conn.uid,
                        )
                        .unwrap_or_else(|e| json!({ "ok": false, "error": format!("{e:#}") })),
                        // The stream is out of step with its framing: answer and close.
                        Err(e) => {
                            let _ = send(
                                &mut out,
                                &json!({ "ok": false, "error": format!("reading the photos: {e}") }),
                            );
                            return;
                        }
                    }
                }
                Ok(req) => answer(&req, conn.role, conn.uid, site)
                    .unwrap_or_else(|e| json!({ "ok": false, "error": format!("{e:#}") })),
                Err(e) => json!({ "ok": false, "error": e }),
            }
        };
        if send(&mut out, &reply).is_err() {
            return;
        }
    }
}

const STORE_WAIT: Duration = Duration::from_secs(10);

fn answer(req: &Request, role: Role, uid: u32, site: &Site) -> Result<Value> {
    let handle = &site.handle;
    let op = req.op();
    let operator = format!("uid:{uid}");
    if req.needs_admin() && role < Role::Admin {
        let ev = AuditEvent::new(AuditKind::AuthFailure, operator, "refused")
            .details(json!({ "interface": "admin_socket", "op": op }));
        let _ = handle.with_store(move |s| s.record(ev), STORE_WAIT);
        bail!("{op} needs the admin role (group facegate-admin)");
    }
    Ok(match req.clone() {
        Request::Status {} => {
            let c = handle.with_store(
                |s| {
                    let g = s.gallery().map(|g| (g.model_id().to_string(), g.len()));
                    s.counts()
                        .map(|c| (c.subjects_with_templates, c.templates, c.live_consents, g))
                },
                STORE_WAIT,
            )??;
            let (model, in_gallery) = c.3.unzip();
            json!({ "ok": true, "subjects": c.0, "templates": c.1, "live_consents": c.2,
                    "gallery_model": model, "gallery_templates": in_gallery,
                    "source": site.enroll.source })
        }
        Request::Subjects {} => {
            let list = handle.with_store(|s| s.list_subjects(), STORE_WAIT)??;
            let v: Vec<Value> = list.iter().map(|s| json!({ "subject": s.subject, "templates": s.templates, "consent_expires_at": s.consent_expires_at, "withdrawn_at": s.withdrawn_at })).collect();
            json!({ "ok": true, "subjects": v })
        }
        Request::Credential { kind, value } => {
            let c = match kind {
                CredentialKind::Pin => Credential::Pin(value),
                CredentialKind::Card => Credential::Card(value),
                CredentialKind::Qr => Credential::Qr(value),
            };
            handle.submit(c)?;
            json!({ "ok": true, "queued": true })
        }
        Request::ReloadGallery { model_id, dim } => {
            let r = handle.with_store(
                move |s| -> Result<(usize, usize)> {
                    // Checked against the live gallery before anything is built: the request
                    // can only ask for the running model's gallery to be read again.
                    let Some(g) = s.gallery() else {
                        bail!("no gallery is loaded; restart the service");
                    };
                    let (model, live_dim) = (g.model_id().to_string(), g.dim());
                    if let Some(m) = model_id.filter(|m| *m != model) {
                        bail!(
                            "model_id {m:?} is not the running model {model:?}: a reload rebuilds the live gallery from the store and cannot replace it"
                        );
                    }
                    if let Some(d) = dim.filter(|&d| u64::try_from(live_dim).ok() != Some(d)) {
                        bail!("dim {d} is not the running model's {live_dim}");
                    }
                    let load = s.load_gallery(&model, live_dim)?;
                    Ok((load.loaded, load.failures.len()))
                },
                STORE_WAIT,
            )??;
            json!({ "ok": true, "loaded": r.0, "failed": r.1 })
        }
        Request::Override {} => {
            handle.submit(Credential::OperatorOverride { operator })?;
            json!({ "ok": true, "queued": true })
        }
        Request::Withdraw { subject } => {
            let id = SubjectId::new(subject)?;
            let r = handle.with_store(
                move |s| -> Result<facegate_store::RemovalReport> {
                    let live = s
                        .live_consent(&id)?
                        .with_context(|| format!("{id} has no live consent"))?;
                    Ok(s.withdraw(&live.withdraw(
                        SystemClock.now(),
                        operator,
                        ConsentMethod::Terminal,
                    ))?)
                },
                STORE_WAIT,
            )??;
            json!({ "ok": true, "templates_deleted": r.templates_deleted,
                    "copies_sealed": r.copies_sealed, "residue_cleared": r.residue_cleared })
        }
        Request::Delete { subject, reason } => {
            let id = SubjectId::new(subject)?;
            let reason = reason.unwrap_or_else(|| "operator request".to_string());
            let r = handle.with_store(
                move |s| s.delete_subject(&id, &operator, &reason),
                STORE_WAIT,
            )??;
            json!({ "ok": true, "templates_deleted": r.templates_deleted,
                    "copies_sealed": r.copies_sealed, "residue_cleared": r.residue_cleared })
        }
        Request::Notice { lang } => handle.with_store(
            move |s| {
                let p = s.policy();
                let n = p.notice();
                let lang = lang.unwrap_or_else(|| n.default_language().to_owned());
                if !n.texts().contains_key(&lang) {
                    bail!(
                        "the notice has no text in {lang:?}; it has: {}",
                        n.texts().keys().cloned().collect::<Vec<_>>().join(", ")
                    );
                }
                Ok(json!({ "ok": true, "version": n.version(),
                           "fingerprint": p.notice_fingerprint(), "language": lang,
                           "text": n.text(&lang), "signage": n.signage(),
                           "retention": n.retention_statement(),
                           "processor": p.deployment().processor_name(),
                           "contact": p.deployment().processor_contact() }))
            },
            STORE_WAIT,
        )??,
        Request::Enroll(_) => bail!("enroll is answered with its photos (session)"),
        Request::AuditVerify {} => {
            let v = handle.with_store(|s| s.verify_audit(), STORE_WAIT)??;
            json!({ "ok": true, "records": v.records, "intact": v.first_break.is_none(), "first_break": v.first_break.map(|b| b.to_string()) })
        }
    })
}

/// Sends one request to a running service; `None` when no service listens at `path`. A `busy`
/// answer (all connection slots taken, or this uid's previous connection not yet released) is
/// retried for up to 3 s.
pub fn request(path: &Path, req: &Request) -> Result<Option<Value>> {
    request_with(path, req, &[], Duration::from_secs(20))
}

/// [`request`] with bodies sent after the line (an enrollment's photos) and a longer wait for
/// the answer (an enrollment at the camera takes up to about 35 s).
pub fn request_with(
    path: &Path,
    req: &Request,
    bodies: &[Vec<u8>],
    wait: Duration,
) -> Result<Option<Value>> {
    let start = Instant::now();
    loop {
        match request_once(path, req, bodies, wait) {
            Err(e)
                if format!("{e:#}").contains("refused: busy")
                    && start.elapsed() < Duration::from_secs(3) =>
            {
                std::thread::sleep(Duration::from_millis(100));
            }
            other => return other,
        }
    }
}

fn request_once(
    path: &Path,
    req: &Request,
    bodies: &[Vec<u8>],
    wait: Duration,
) -> Result<Option<Value>> {
    let Ok(mut stream) = UnixStream::connect(path) else {
        return Ok(None);
    };
    stream.set_read_timeout(Some(wait))?;
    // A busy service answers and closes before it reads: the answer is still there to read.
    let req = serde_json::to_value(req).context("encoding the request")?;
    if send(&mut stream, &req).is_ok() {
        for b in bodies {
            if stream.write_all(b).is_err() {
                break;
            }
        }
    }
    // The service's answers are trusted but still bounded (a subject list of 100,000 people
    // is about 10 MB).
    let line = match read_line(&mut BufReader::new(&stream), 64 << 20, &mut || Ok(()))? {
        Line::Complete(line) => line,
        Line::Closed => bail!("the service closed the admin connection without an answer"),
        Line::TooLong => bail!("the service's answer is longer than 64 MiB"),
    };
    let v: Value = serde_json::from_slice(&line).context("the service's answer")?;
    if v["ok"] != true {
        bail!(
            "the service refused: {}",
            v["error"].as_str().unwrap_or("unknown error")
        );
    }
    Ok(Some(v))
}
