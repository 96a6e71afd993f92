//! The files beside the database in the state directory, and what they guard:
//!
//! - `facegate.lock`: held (an exclusive `flock`) while a process opens, migrates or creates the
//!   store, so two processes starting on a fresh directory cannot both initialise it (two audit
//!   keys, a broken chain) or race each other's migrations.
//! - `store.id`: written once the store exists (key id, creation time). It outlives the
//!   database file: a database that is later missing or empty is an error naming what was lost,
//!   never silently replaced by a new, empty store.
//! - `audit.head`: the audit chain's newest sequence number and MAC, keyed with the audit key and
//!   fsynced after each commit that appended a record. The chain inside the database cannot
//!   tell a cut-off or rolled-back tail from a shorter history; this file can.
//!
//! Every file here, and the database with its `-wal` and `-shm`, is created 0600 whatever the
//! directory's mode or the process umask, and an existing one with group or other bits is
//! tightened at open.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::StoreError;

pub(crate) const LOCK_FILE: &str = "facegate.lock";
pub(crate) const MARKER_FILE: &str = "store.id";
pub(crate) const HEAD_FILE: &str = "audit.head";

const MARKER_TAG: &str = "facegate-store v1";
const HEAD_TAG: &str = "facegate-audit-head v1";

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Opens (creating 0600) a file for reading and writing.
fn open_private(path: &Path, write: bool) -> Result<File, StoreError> {
    let mut o = OpenOptions::new();
    o.read(true);
    if write {
        o.write(true).create(true).mode(0o600);
    }
    let f = o.open(path).map_err(io(path))?;
    if write {
        tighten(path, &f)?;
    }
    Ok(f)
}

/// Removes group and other bits from an open file.
fn tighten(path: &Path, f: &File) -> Result<(), StoreError> {
    let mode = f.metadata().map_err(io(path))?.permissions().mode();
    if mode & 0o077 != 0 {
        tracing::warn!(file = %path.display(), mode = format!("{:o}", mode & 0o777), "file was readable by others; set to 0600");
        f.set_permissions(std::fs::Permissions::from_mode(mode & 0o700))
            .map_err(io(path))?;
    }
    Ok(())
}

/// Creates the database file 0600 if it is missing and tightens it and its `-wal`/`-shm`
/// companions if they exist (SQLite gives the companions the database file's mode).
pub(crate) fn prepare_db_files(db: &Path, read_only_ok: bool) -> Result<(), StoreError> {
    let mut names = vec![db.to_path_buf()];
    for suffix in ["-wal", "-shm"] {
        let mut s = db.as_os_str().to_owned();
        s.push(suffix);
        names.push(PathBuf::from(s));
    }
    for (i, p) in names.iter().enumerate() {
        let f = if i == 0 {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(p)
        } else {
            OpenOptions::new().read(true).write(true).open(p)
        };
        match f {
            Ok(f) => tighten(p, &f)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            // A read-only file or directory: the store opens read-only and says so.
            Err(e) if read_only_ok && e.kind() == std::io::ErrorKind::PermissionDenied => {}
            Err(e) => return Err(io(p)(e)),
        }
    }
    Ok(())
}

/// The open-time lock; released on drop.
#[derive(Debug)]
pub(crate) struct OpenLock {
    _file: File,
}

impl OpenLock {
    /// Waits for the exclusive lock of `state_dir`. A directory where the lock file cannot be
    /// created (read-only) gives `None`: such a store cannot be initialised or migrated anyway.
    pub(crate) fn take(state_dir: &Path) -> Result<Option<Self>, StoreError> {
        let path = state_dir.join(LOCK_FILE);
        let f = match OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
        {
            Ok(f) => f,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem
                ) =>
            {
                return Ok(None);
            }
            Err(e) => return Err(io(&path)(e)),
        };
        f.lock().map_err(io(&path))?;
        Ok(Some(Self { _file: f }))
    }
}

/// What `store.id` records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Marker {
    pub key_id: String,
    pub created_at: i64,
}

pub(crate) fn read_marker(state_dir: &Path) -> Result<Option<Marker>, StoreError> {
    let path = state_dir.join(MARKER_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        // Another user opening the store read-only (it cannot recreate anything either).
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            tracing::warn!(file = %path.display(), "store marker not readable by this user");
            return Ok(None);
        }
        Err(e) => return Err(io(&path)(e)),
    };
    let bad = || StoreError::Setting {
        file: path.clone(),
        key: "store.id",
        reason: "is malformed (it is written by facegate; restore it or the whole state directory)",
    };
    let mut lines = text.lines();
    if lines.next() != Some(MARKER_TAG) {
        return Err(bad());
    }
    let mut key_id = None;
    let mut created_at = None;
    for l in lines {
        match l.split_once('=') {
            Some(("key_id", v)) => key_id = Some(v.to_owned()),
            Some(("created_at", v)) => created_at = v.parse().ok(),
            _ => {}
        }
    }
    Ok(Some(Marker {
        key_id: key_id.ok_or_else(bad)?,
        created_at: created_at.ok_or_else(bad)?,
    }))
}

pub(crate) fn write_marker(state_dir: &Path, marker: &Marker) -> Result<(), StoreError> {
    let path = state_dir.join(MARKER_FILE);
    let tmp = state_dir.join(format!("{MARKER_FILE}.tmp"));
    let text = format!(
        "{MARKER_TAG}\nkey_id={}\ncreated_at={}\n",
        marker.key_id, marker.created_at
    );
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io(&tmp))?;
    f.write_all(text.as_bytes()).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    sync_dir(state_dir);
    Ok(())
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// The audit head as kept outside the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HeadRecord {
    pub seq: u64,
    pub mac: Vec<u8>,
    pub tag: Vec<u8>,
}

/// `audit.head`, kept open by a writable store.
#[derive(Debug)]
pub(crate) struct HeadFile {
    path: PathBuf,
    file: Option<File>,
}

impl HeadFile {
    /// Opens `audit.head`; `create` makes it when missing (only for a store that has never
    /// kept one: once kept, a missing file is evidence and must stay missing).
    pub(crate) fn open(state_dir: &Path, writable: bool, create: bool) -> Result<Self, StoreError> {
        let path = state_dir.join(HEAD_FILE);
        let opened = if writable && !create {
            OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(io(&path))
                .and_then(|f| tighten(&path, &f).map(|()| f))
        } else {
            open_private(&path, writable)
        };
        let file = match opened {
            Ok(f) => Some(f),
            Err(StoreError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound
                    || (!writable && source.kind() == std::io::ErrorKind::PermissionDenied) =>
            {
                None
            }
            Err(e) => return Err(e),
        };
        Ok(Self { path, file })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the file exists (it may still be empty).
    pub(crate) fn exists(&self) -> bool {
        self.file.is_some()
    }

    /// The recorded head; `None` when the file is missing or empty.
    pub(crate) fn read(&self) -> Result<Option<HeadRecord>, StoreError> {
        let Some(f) = self.file.as_ref() else {
            return Ok(None);
        };
        let mut buf = vec![0u8; 512];
        let n = f.read_at(&mut buf, 0).map_err(io(&self.path))?;
        buf.truncate(n);
        let text = String::from_utf8_lossy(&buf);
        if text.trim().is_empty() {
            return Ok(None);
        }
        let bad = || StoreError::Setting {
            file: self.path.clone(),
            key: "audit.head",
            reason: "is malformed",
        };
        let mut it = text.split_whitespace();
        if (it.next(), it.next()) != (Some("facegate-audit-head"), Some("v1")) {
            return Err(bad());
        }
        let seq = it.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
        let mac = it
            .next()
            .and_then(|s| hex::decode(s).ok())
            .ok_or_else(bad)?;
        let tag = it
            .next()
            .and_then(|s| hex::decode(s).ok())
            .ok_or_else(bad)?;
        Ok(Some(HeadRecord { seq, mac, tag }))
    }

    /// Records `head` unless the file already holds a later one (another process of the same
    /// store may have appended after us), under an exclusive lock, and fsyncs it. The line has
    /// a fixed length (the seq is zero-padded) and is written over the old one in place, so
    /// the file is never empty or half-written.
    pub(crate) fn advance(&self, head: &HeadRecord) -> Result<(), StoreError> {
        let Some(f) = self.file.as_ref() else {
            return Ok(());
        };
        f.lock().map_err(io(&self.path))?;
        let result = (|| {
            if let Some(cur) = self.read()?
                && cur.seq >= head.seq
            {
                return Ok(());
            }
            let line = format!(
                "{HEAD_TAG} {:020} {} {}\n",
                head.seq,
                hex::encode(&head.mac),
                hex::encode(&head.tag)
            );
            let Some(f) = self.file.as_ref() else {
                return Ok(());
            };
            f.write_all_at(line.as_bytes(), 0).map_err(io(&self.path))?;
            f.sync_data().map_err(io(&self.path))
        })();
        if let Some(f) = self.file.as_ref() {
            let _ = f.unlock();
        }
        result
    }
}

/// `epoch.key`: the secret the subject data keys are wrapped under, with the master key.
/// Replaced at every withdrawal, deletion and expiry (the new one is written as
/// `epoch.key.next`, the database re-wrapped and committed, then the new file renamed over
/// the old one), so a copy of the database taken before cannot open the removed subject.
pub(crate) const EPOCH_FILE: &str = "epoch.key";
pub(crate) const EPOCH_NEXT_FILE: &str = "epoch.key.next";

/// Reads an epoch file (`None` when missing).
pub(crate) fn read_epoch(
    state_dir: &Path,
    name: &str,
) -> Result<Option<crate::seal::Secret>, StoreError> {
    let path = state_dir.join(name);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(&path)(e)),
    };
    let bad = || StoreError::Setting {
        file: path.clone(),
        key: "epoch.key",
        reason: "is malformed (32 bytes in hex, written by facegate)",
    };
    let bytes = hex::decode(text.trim()).map_err(|_| bad())?;
    if bytes.len() != 32 {
        return Err(bad());
    }
    let mut out = zeroize::Zeroizing::new([0u8; 32]);
    out.copy_from_slice(&bytes);
    let mut bytes = bytes;
    zeroize::Zeroize::zeroize(&mut bytes);
    Ok(Some(out))
}

/// Writes `epoch.key.next` (0600, fsynced).
pub(crate) fn write_epoch_next(
    state_dir: &Path,
    secret: &crate::seal::Secret,
) -> Result<(), StoreError> {
    let path = state_dir.join(EPOCH_NEXT_FILE);
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .map_err(io(&path))?;
    let mut text = zeroize::Zeroizing::new(hex::encode(secret.as_slice()));
    text.push('\n');
    f.write_all(text.as_bytes()).map_err(io(&path))?;
    f.sync_all().map_err(io(&path))?;
    sync_dir(state_dir);
    Ok(())
}

/// Makes `epoch.key.next` the current epoch (rename over `epoch.key`, then fsync the directory).
pub(crate) fn promote_epoch(state_dir: &Path) -> Result<(), StoreError> {
    let next = state_dir.join(EPOCH_NEXT_FILE);
    let cur = state_dir.join(EPOCH_FILE);
    std::fs::rename(&next, &cur).map_err(io(&cur))?;
    sync_dir(state_dir);
    Ok(())
}

/// Removes a stale `epoch.key.next` (a re-wrap that did not commit).
pub(crate) fn discard_epoch_next(state_dir: &Path) {
    let _ = std::fs::remove_file(state_dir.join(EPOCH_NEXT_FILE));
}
