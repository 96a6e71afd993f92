//! The admin API: JSON lines over a Unix socket only (`/run/facegate/admin.sock`), authorised by
//! the peer's kernel-reported credentials (SO_PEERCRED). Roles come from Unix groups: root and
//! members of `facegate-admin` are admins, members of `facegate-operator` operators; everybody
//! else is refused, and every refusal is recorded in the audit chain. A uid refused three times
//! within a minute is not even read for the next minute (throttling).
//!
//! Requests, one JSON object per line, answered by one JSON line:
//! `{"op":"status"}`, `{"op":"subjects"}`, `{"op":"reload_gallery","model_id":"…","dim":512}`, `{"op":"credential","kind":"pin|card|qr","value":"…"}`
//! and `{"op":"override"}` (operators); `{"op":"withdraw","subject":"…"}`,
//! `{"op":"delete","subject":"…","reason":"…"}`, `{"op":"audit_verify"}` (admins).

use std::collections::HashMap;
use std::ffi::CString;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::io::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use facegate_engine::{Credential, EngineHandle};
use facegate_policy::ConsentMethod;
use facegate_store::{AuditEvent, AuditKind};
use facegate_types::{Clock, SubjectId, SystemClock};
use serde_json::{Value, json};

/// What a peer may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Operator,
    Admin,
}

/// The peer's uid and gid, as the kernel saw them at `connect`.
pub fn peer_credentials(stream: &UnixStream) -> std::io::Result<(u32, u32, i32)> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writes of the sizes given; the fd is open.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&raw mut cred).cast(),
            &raw mut len,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((cred.uid, cred.gid, cred.pid))
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

/// Binds the socket (mode 0660, a stale socket replaced) and serves it on its own thread.
pub fn serve(path: &Path, handle: EngineHandle) -> Result<PathBuf> {
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
    let owned = path.to_path_buf();
    std::thread::Builder::new().name("admin".into()).spawn(move || {
        let mut failures: HashMap<u32, Vec<Instant>> = HashMap::new();
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let Ok((uid, gid, pid)) = peer_credentials(&stream) else { continue };
            let recent = failures.entry(uid).or_default();
            recent.retain(|t| t.elapsed() < Duration::from_secs(60));
            if recent.len() >= 3 {
                tracing::warn!(uid, "admin socket: throttled");
                continue;
            }
            match role_of(uid, gid) {
                Some(role) => {
                    let h = handle.clone();
                    let _ = std::thread::Builder::new().name("admin-conn".into()).spawn(move || session(stream, role, uid, &h));
                }
                None => {
                    recent.push(Instant::now());
                    tracing::warn!(uid, pid, "admin socket: refused (not in facegate-admin or facegate-operator)");
                    let ev = AuditEvent::new(AuditKind::AuthFailure, format!("uid:{uid}"), "refused").details(json!({ "interface": "admin_socket", "pid": pid }));
                    let _ = handle.with_store(move |s| s.record(ev), Duration::from_secs(5));
                    let mut s = stream;
                    let _ = send(&mut s, &json!({ "ok": false, "error": "not authorised: join facegate-operator or facegate-admin" }));
                }
            }
        }
    })?;
    Ok(owned)
}

/// Writes one JSON line in a single `write_all`, so a reader never sees half an answer.
fn send(out: &mut UnixStream, v: &Value) -> std::io::Result<()> {
    let mut line = v.to_string();
    line.push('\n');
    out.write_all(line.as_bytes())
}

fn session(stream: UnixStream, role: Role, uid: u32, handle: &EngineHandle) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let Ok(mut out) = stream.try_clone() else {
        return;
    };
    for line in BufReader::new(stream).lines() {
        let Ok(line) = line else { break };
        if line.len() > 4096 {
            let _ = send(
                &mut out,
                &json!({ "ok": false, "error": "request too long" }),
            );
            break;
        }
        let reply = match serde_json::from_str::<Value>(&line) {
            Ok(req) => answer(&req, role, uid, handle)
                .unwrap_or_else(|e| json!({ "ok": false, "error": format!("{e:#}") })),
            Err(e) => json!({ "ok": false, "error": format!("not JSON: {e}") }),
        };
        if send(&mut out, &reply).is_err() {
            break;
        }
    }
}

const STORE_WAIT: Duration = Duration::from_secs(10);

fn answer(req: &Value, role: Role, uid: u32, handle: &EngineHandle) -> Result<Value> {
    let op = req["op"].as_str().unwrap_or_default();
    let operator = format!("uid:{uid}");
    let need_admin = matches!(op, "withdraw" | "delete" | "audit_verify");
    if need_admin && role < Role::Admin {
        let ev = AuditEvent::new(AuditKind::AuthFailure, operator, "refused")
            .details(json!({ "interface": "admin_socket", "op": op }));
        let _ = handle.with_store(move |s| s.record(ev), STORE_WAIT);
        bail!("{op} needs the admin role (group facegate-admin)");
    }
    let subject = || -> Result<SubjectId> {
        Ok(SubjectId::new(
            req["subject"].as_str().unwrap_or_default().to_string(),
        )?)
    };
    Ok(match op {
        "status" => {
            let c = handle.with_store(
                |s| {
                    s.counts()
                        .map(|c| (c.subjects_with_templates, c.templates, c.live_consents))
                },
                STORE_WAIT,
            )??;
            json!({ "ok": true, "subjects": c.0, "templates": c.1, "live_consents": c.2 })
        }
        "subjects" => {
            let list = handle.with_store(|s| s.list_subjects(), STORE_WAIT)??;
            let v: Vec<Value> = list.iter().map(|s| json!({ "subject": s.subject, "templates": s.templates, "consent_expires_at": s.consent_expires_at, "withdrawn_at": s.withdrawn_at })).collect();
            json!({ "ok": true, "subjects": v })
        }
        "credential" => {
            let value = req["value"].as_str().unwrap_or_default().to_string();
            let c = match req["kind"].as_str() {
                Some("pin") => Credential::Pin(value),
                Some("card") => Credential::Card(value),
                Some("qr") => Credential::Qr(value),
                _ => bail!("kind must be pin, card or qr"),
            };
            handle.submit(c)?;
            json!({ "ok": true, "queued": true })
        }
        "reload_gallery" => {
            let (model, dim) = (
                req["model_id"].as_str().unwrap_or_default().to_string(),
                req["dim"].as_u64().unwrap_or(512) as usize,
            );
            let n = handle.with_store(
                move |s| s.load_gallery(&model, dim).map(|l| l.loaded),
                STORE_WAIT,
            )??;
            json!({ "ok": true, "loaded": n })
        }
        "override" => {
            handle.submit(Credential::OperatorOverride { operator })?;
            json!({ "ok": true, "queued": true })
        }
        "withdraw" => {
            let id = subject()?;
            let r = handle.with_store(
                move |s| -> Result<usize> {
                    let live = s
                        .live_consent(&id)?
                        .with_context(|| format!("{id} has no live consent"))?;
                    Ok(s.withdraw(&live.withdraw(
                        SystemClock.now(),
                        operator,
                        ConsentMethod::Terminal,
                    ))?
                    .templates_deleted)
                },
                STORE_WAIT,
            )??;
            json!({ "ok": true, "templates_deleted": r })
        }
        "delete" => {
            let id = subject()?;
            let reason = req["reason"]
                .as_str()
                .unwrap_or("operator request")
                .to_string();
            let r = handle.with_store(
                move |s| s.delete_subject(&id, &operator, &reason),
                STORE_WAIT,
            )??;
            json!({ "ok": true, "templates_deleted": r.templates_deleted })
        }
        "audit_verify" => {
            let v = handle.with_store(|s| s.verify_audit(), STORE_WAIT)??;
            json!({ "ok": true, "records": v.records, "intact": v.first_break.is_none(), "first_break": v.first_break.map(|b| b.to_string()) })
        }
        other => bail!("unknown op {other:?}"),
    })
}

/// Sends one request to a running service; `None` when no service listens at `path`.
pub fn request(path: &Path, req: &Value) -> Result<Option<Value>> {
    let Ok(mut stream) = UnixStream::connect(path) else {
        return Ok(None);
    };
    stream.set_read_timeout(Some(Duration::from_secs(20)))?;
    send(&mut stream, req)?;
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line)?;
    let v: Value = serde_json::from_str(&line).context("the service's answer")?;
    if v["ok"] != true {
        bail!(
            "the service refused: {}",
            v["error"].as_str().unwrap_or("unknown error")
        );
    }
    Ok(Some(v))
}
