//! The processing record of Art. 9: an append-only, keyed hash chain in the `audit` table.
//!
//! Each record stores `mac = HMAC-SHA256(audit_key, prev_mac || canonical(record))` and the
//! `prev_mac` it was chained to. The canonical bytes cover the time, kind, subject id, operator,
//! outcome and details (length-prefixed, so no field can bleed into another); the sequence number
//! is the row order and is checked for continuity separately. Without the audit key nobody can
//! produce a valid mac, so [`crate::Store::verify_audit`] tells apart a record whose content was **edited** (its mac
//! does not match), a record **removed** before it (its `prev_mac` is no mac in the table), and
//! records **reordered** (its `prev_mac` is the mac of another record than the one before it).
//! A keyed *head* marker in `settings` (last seq and mac) catches a cut-off tail; a keyed *anchor*
//! (the seq and mac of the last pruned record, initially 0 and zeros) is where the chain starts.
//!
//! What this does not catch: replacing the whole database by an older copy of itself (the old
//! copy is a valid chain). Export the head (`facegate audit verify` prints it) to somewhere else
//! if that matters.
//!
//! The audit key is a random 256-bit key stored wrapped under the master key (see `crate::seal`);
//! it is not derived from the master key directly, so that rotating the master key does not
//! invalidate three years of records. Records never hold template values or images: details are
//! small JSON objects of ids, counts, scores and reasons.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use facegate_types::{SubjectId, UnixMillis};
use ring::hmac;
use rusqlite::{Connection, OptionalExtension, params};

use crate::StoreError;
use crate::seal::Secret;

/// Minimum age of a record before it may be pruned: 3 years (Art. 9), counted as 1096 days.
pub const MIN_RETENTION_DAYS: u32 = 1096;

const CANON_TAG: &[u8] = b"facegate-audit/v1";
const SETTING_ANCHOR: &str = "audit_anchor";
const SETTING_HEAD: &str = "audit_head";
const SETTING_PRUNING: &str = "audit_prune_in_progress";
const GENESIS_MAC: [u8; 32] = [0u8; 32];

/// What happened. Stored as its `snake_case` name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AuditKind {
    /// A template was enrolled.
    Enroll,
    /// 1:1 verification (Art. 19: confirm a claimed identity).
    Verify,
    /// 1:N identification (Art. 19: find who someone is).
    Identify,
    /// A consent was recorded.
    Consent,
    /// A consent was withdrawn; templates and key deleted.
    Withdrawal,
    /// A subject was deleted on request.
    Deletion,
    /// Retention sweep removed expired templates.
    Expiry,
    /// An encrypted export (an enrollment sealed to another terminal).
    Export,
    /// An enrollment received from another terminal (a sealed transfer bundle).
    Import,
    /// Configuration changed (policy reload, retention).
    ConfigChange,
    /// The master key was rotated.
    KeyRotation,
    /// A failed authentication on an admin interface.
    AuthFailure,
    /// Audit records older than the minimum were pruned and the chain re-anchored.
    AuditPrune,
    /// The store was created or its schema migrated.
    StoreLifecycle,
    /// A tamper or integrity alert (broken row, chain break, permissions).
    Alert,
    /// A PIN, card or QR credential was issued (Art. 10 register).
    CredentialIssue,
    /// Credentials were revoked.
    CredentialRevoke,
    /// A credential was presented at the gate: its decision (no face processing).
    CredentialCheck,
    /// Failed attempts locked a terminal or a claimed identity out (once per lockout).
    Lockout,
}

impl AuditKind {
    pub const ALL: [AuditKind; 19] = [
        Self::Enroll,
        Self::Verify,
        Self::Identify,
        Self::Consent,
        Self::Withdrawal,
        Self::Deletion,
        Self::Expiry,
        Self::Export,
        Self::Import,
        Self::ConfigChange,
        Self::KeyRotation,
        Self::AuthFailure,
        Self::AuditPrune,
        Self::StoreLifecycle,
        Self::Alert,
        Self::CredentialIssue,
        Self::CredentialRevoke,
        Self::CredentialCheck,
        Self::Lockout,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enroll => "enroll",
            Self::Verify => "verify",
            Self::Identify => "identify",
            Self::Consent => "consent",
            Self::Withdrawal => "withdrawal",
            Self::Deletion => "deletion",
            Self::Expiry => "expiry",
            Self::Export => "export",
            Self::Import => "import",
            Self::ConfigChange => "config_change",
            Self::KeyRotation => "key_rotation",
            Self::AuthFailure => "auth_failure",
            Self::AuditPrune => "audit_prune",
            Self::StoreLifecycle => "store_lifecycle",
            Self::Alert => "alert",
            Self::CredentialIssue => "credential_issue",
            Self::CredentialRevoke => "credential_revoke",
            Self::CredentialCheck => "credential_check",
            Self::Lockout => "lockout",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for AuditKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A record to append. Build with [`AuditEvent::new`] and the setters.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    pub kind: AuditKind,
    pub subject: Option<SubjectId>,
    pub operator: String,
    /// `ok`, `refused`, `failed`, `match`, `no_match`, ...
    pub outcome: String,
    /// Small JSON object of ids, counts, scores, reasons. Never template values or images.
    pub details: serde_json::Value,
}

impl AuditEvent {
    pub fn new(kind: AuditKind, operator: impl Into<String>, outcome: impl Into<String>) -> Self {
        Self {
            kind,
            subject: None,
            operator: operator.into(),
            outcome: outcome.into(),
            details: serde_json::Value::Object(serde_json::Map::new()),
        }
    }

    #[must_use]
    pub fn subject(mut self, subject: &SubjectId) -> Self {
        self.subject = Some(subject.clone());
        self
    }

    #[must_use]
    pub fn details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }

    /// A 1:1 **verification** (Art. 19: confirming a claimed identity) and its decision. The
    /// record holds the claimed id, the best score (rounded to 4 decimals) and the decision.
    pub fn verification(
        claimed: &SubjectId,
        score: Option<f32>,
        accepted: bool,
        operator: impl Into<String>,
    ) -> Self {
        Self::new(
            AuditKind::Verify,
            operator,
            if accepted { "match" } else { "no_match" },
        )
        .subject(claimed)
        .details(serde_json::json!({ "score": score.map(round4) }))
    }

    /// A 1:N **identification** (Art. 19: finding who someone is within the gallery) and its
    /// decision: the identity accepted (if any), the best and second-identity scores and the
    /// number of templates searched.
    pub fn identification(
        result: &crate::Identification,
        accepted: Option<&SubjectId>,
        operator: impl Into<String>,
    ) -> Self {
        let ev = Self::new(
            AuditKind::Identify,
            operator,
            if accepted.is_some() {
                "match"
            } else {
                "unknown"
            },
        )
        .details(serde_json::json!({
            "best_score": result.best().map(|h| round4(h.score)),
            "second_identity_score": result.second_identity_score.map(round4),
            "searched": result.scanned,
        }));
        match accepted {
            Some(s) => ev.subject(s),
            None => ev,
        }
    }
}

fn round4(x: f32) -> f64 {
    (f64::from(x) * 1e4).round() / 1e4
}

/// A stored record, as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    pub seq: u64,
    pub at: UnixMillis,
    /// The kind's stored name (see [`AuditKind::as_str`]).
    pub kind: String,
    pub subject: Option<String>,
    pub operator: String,
    pub outcome: String,
    /// The details JSON, as stored.
    pub details: String,
}

/// Why the chain is broken at a position.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BreakKind {
    /// The record's content (or its link) was changed: its mac does not match.
    Edited,
    /// One or more records before this one were removed.
    Removed,
    /// Records were reordered: this record was chained after record `follows`.
    Reordered { follows: u64 },
    /// The sequence numbers were changed although the chain links are intact.
    Renumbered { expected: u64 },
    /// Records after this one were cut off: the head marker says the chain ran to `expected_last`.
    Truncated { expected_last: u64 },
    /// The anchor (start of the chain after a prune) was changed.
    AnchorTampered,
    /// The head marker was changed.
    HeadTampered,
    /// The chain was cut back and written again: the head kept outside the database
    /// (`audit.head`) names record `seq` with another MAC than the one in the database.
    RolledBack,
    /// The head kept outside the database is missing or was changed.
    HeadFileTampered,
}

/// The first place where the chain does not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditBreak {
    /// The sequence number of the first record that fails (for `Truncated`, the last one present).
    pub seq: u64,
    pub kind: BreakKind,
}

impl fmt::Display for AuditBreak {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let seq = self.seq;
        match &self.kind {
            BreakKind::Edited => write!(f, "record {seq} was edited (its mac does not match)"),
            BreakKind::Removed => write!(f, "record(s) removed before record {seq}"),
            BreakKind::Reordered { follows } => write!(
                f,
                "records reordered: record {seq} was written right after record {follows}"
            ),
            BreakKind::Renumbered { expected } => write!(
                f,
                "sequence numbers changed: record {seq} should be numbered {expected}"
            ),
            BreakKind::Truncated { expected_last } => write!(
                f,
                "records after {seq} were removed (the chain ran to {expected_last})"
            ),
            BreakKind::AnchorTampered => write!(f, "the chain anchor (seq {seq}) was changed"),
            BreakKind::HeadTampered => write!(f, "the chain head marker (seq {seq}) was changed"),
            BreakKind::RolledBack => write!(
                f,
                "the chain was rolled back: record {seq} differs from the one recorded in audit.head \
                 (records were removed and others written in their place, or an older copy of the \
                 database was put back)"
            ),
            BreakKind::HeadFileTampered => write!(
                f,
                "audit.head (the chain head kept beside the database, seq {seq}) is missing or was \
                 changed"
            ),
        }
    }
}

/// Result of [`crate::Store::verify_audit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditVerification {
    /// Records checked.
    pub records: u64,
    /// The seq of the last pruned record (0 if never pruned).
    pub anchor_seq: u64,
    /// The last seq present.
    pub last_seq: Option<u64>,
    /// The head mac, hex (to keep somewhere else, see the module docs).
    pub head_mac: String,
    /// The first break, if any.
    pub first_break: Option<AuditBreak>,
}

impl AuditVerification {
    pub fn is_intact(&self) -> bool {
        self.first_break.is_none()
    }
}

/// Result of a prune.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PruneReport {
    pub removed: u64,
    /// The new anchor: the seq of the last removed record.
    pub anchor_seq: u64,
}

/// The HMAC key of the chain.
pub(crate) struct AuditKey(hmac::Key);

impl fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuditKey(<redacted>)")
    }
}

impl AuditKey {
    pub(crate) fn new(secret: &Secret) -> Self {
        Self(hmac::Key::new(hmac::HMAC_SHA256, secret.as_slice()))
    }

    fn chain(&self, prev: &[u8], canon: &[u8]) -> [u8; 32] {
        let mut ctx = hmac::Context::with_key(&self.0);
        ctx.update(prev);
        ctx.update(canon);
        to32(ctx.sign().as_ref())
    }

    fn verify_chain(&self, prev: &[u8], canon: &[u8], mac: &[u8]) -> bool {
        let mut msg = Vec::with_capacity(prev.len() + canon.len());
        msg.extend_from_slice(prev);
        msg.extend_from_slice(canon);
        hmac::verify(&self.0, &msg, mac).is_ok()
    }

    fn marker_tag(&self, label: &[u8], seq: u64, mac: &[u8]) -> [u8; 32] {
        let mut ctx = hmac::Context::with_key(&self.0);
        ctx.update(label);
        ctx.update(&seq.to_be_bytes());
        ctx.update(mac);
        to32(ctx.sign().as_ref())
    }

    fn verify_marker_tag(&self, label: &[u8], seq: u64, mac: &[u8], tag: &[u8]) -> bool {
        let mut msg = Vec::with_capacity(label.len() + 8 + mac.len());
        msg.extend_from_slice(label);
        msg.extend_from_slice(&seq.to_be_bytes());
        msg.extend_from_slice(mac);
        hmac::verify(&self.0, &msg, tag).is_ok()
    }
}

impl AuditKey {
    /// The tag of the head as kept outside the database (`audit.head`).
    pub(crate) fn head_file_tag(&self, seq: u64, mac: &[u8]) -> [u8; 32] {
        self.marker_tag(b"head-file", seq, mac)
    }
}

fn to32(b: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(&b[..32]);
    out
}

/// Appends `field` after its length as a big-endian **u64**. Frozen on disk: every stored
/// record's MAC covers bytes laid out this way (the template AAD in `seal.rs` uses a u32 length
/// instead; the two must never be swapped). Pinned by `golden_audit_canonical_form_and_macs`.
fn push_u64_len_field(out: &mut Vec<u8>, field: &[u8]) {
    out.extend_from_slice(&(field.len() as u64).to_be_bytes());
    out.extend_from_slice(field);
}

/// The bytes a record's MAC covers: tag, time (i64 BE), kind, subject (0, or 1 and the id),
/// operator, outcome, details, each string u64-length-prefixed. Frozen on disk.
fn canonical(r: &AuditRecord) -> Vec<u8> {
    let mut out = Vec::with_capacity(96 + r.details.len());
    push_u64_len_field(&mut out, CANON_TAG);
    out.extend_from_slice(&r.at.0.to_be_bytes());
    push_u64_len_field(&mut out, r.kind.as_bytes());
    match &r.subject {
        Some(s) => {
            out.push(1);
            push_u64_len_field(&mut out, s.as_bytes());
        }
        None => out.push(0),
    }
    push_u64_len_field(&mut out, r.operator.as_bytes());
    push_u64_len_field(&mut out, r.outcome.as_bytes());
    push_u64_len_field(&mut out, r.details.as_bytes());
    out
}

/// A keyed position marker (anchor or head) stored in `settings` as `seq:mac_hex:tag_hex`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Marker {
    seq: u64,
    mac: Vec<u8>,
    tag: Vec<u8>,
}

impl Marker {
    fn encode(&self) -> String {
        format!(
            "{}:{}:{}",
            self.seq,
            hex::encode(&self.mac),
            hex::encode(&self.tag)
        )
    }

    fn decode(s: &str) -> Option<Self> {
        let mut it = s.split(':');
        let seq = it.next()?.parse().ok()?;
        let mac = hex::decode(it.next()?).ok()?;
        let tag = hex::decode(it.next()?).ok()?;
        if it.next().is_some() {
            return None;
        }
        Some(Self { seq, mac, tag })
    }
}

fn read_marker(
    conn: &Connection,
    file: &Path,
    key: &'static str,
) -> Result<Option<Marker>, StoreError> {
    let raw: Option<String> = conn
        .query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| {
            r.get(0)
        })
        .optional()
        .map_err(StoreError::db_at(file, "read audit marker"))?;
    match raw {
        None => Ok(None),
        Some(s) => Marker::decode(&s).map(Some).ok_or(StoreError::Setting {
            file: file.to_path_buf(),
            key,
            reason: "is malformed",
        }),
    }
}

fn write_marker(
    conn: &Connection,
    file: &Path,
    audit_key: &AuditKey,
    key: &'static str,
    label: &[u8],
    seq: u64,
    mac: &[u8],
) -> Result<(), StoreError> {
    let tag = audit_key.marker_tag(label, seq, mac);
    let m = Marker {
        seq,
        mac: mac.to_vec(),
        tag: tag.to_vec(),
    };
    conn.execute(
        "INSERT INTO settings (key, value) VALUES (?1, ?2)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        params![key, m.encode()],
    )
    .map_err(StoreError::db_at(file, "write audit marker"))?;
    Ok(())
}

/// Writes the genesis anchor of a new chain.
pub(crate) fn init(conn: &Connection, file: &Path, key: &AuditKey) -> Result<(), StoreError> {
    write_marker(conn, file, key, SETTING_ANCHOR, b"anchor", 0, &GENESIS_MAC)?;
    write_marker(conn, file, key, SETTING_HEAD, b"head", 0, &GENESIS_MAC)
}

/// Appends one record (inside the caller's transaction, if any). Returns its seq.
pub(crate) fn append(
    conn: &Connection,
    file: &Path,
    key: &AuditKey,
    at: UnixMillis,
    event: &AuditEvent,
) -> Result<u64, StoreError> {
    let details =
        serde_json::to_string(&event.details).map_err(|source| StoreError::AuditDetails {
            kind: event.kind.as_str(),
            source,
        })?;
    let last: Option<(i64, Vec<u8>)> = conn
        .query_row(
            "SELECT seq, mac FROM audit ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(StoreError::db_at(file, "read audit head"))?;
    let (prev_seq, prev_mac) = match last {
        Some((seq, mac)) => (u64::try_from(seq).unwrap_or(0), mac),
        None => {
            let anchor = read_marker(conn, file, SETTING_ANCHOR)?.ok_or(StoreError::Setting {
                file: file.to_path_buf(),
                key: SETTING_ANCHOR,
                reason: "is missing",
            })?;
            (anchor.seq, anchor.mac)
        }
    };
    let record = AuditRecord {
        seq: prev_seq + 1,
        at,
        kind: event.kind.as_str().to_owned(),
        subject: event.subject.as_ref().map(|s| s.as_str().to_owned()),
        operator: event.operator.clone(),
        outcome: event.outcome.clone(),
        details,
    };
    let mac = key.chain(&prev_mac, &canonical(&record));
    conn.execute(
        "INSERT INTO audit (seq, at, kind, subject_id, operator, outcome, details, prev_mac, mac)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            record.seq as i64,
            record.at.0,
            record.kind,
            record.subject,
            record.operator,
            record.outcome,
            record.details,
            prev_mac,
            mac.as_slice(),
        ],
    )
    .map_err(StoreError::db_at(file, "append audit record"))?;
    write_marker(conn, file, key, SETTING_HEAD, b"head", record.seq, &mac)?;
    Ok(record.seq)
}

struct Row {
    record: AuditRecord,
    prev_mac: Vec<u8>,
    mac: Vec<u8>,
}

fn row_from(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    Ok(Row {
        record: AuditRecord {
            seq: u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0),
            at: UnixMillis(r.get(1)?),
            kind: r.get(2)?,
            subject: r.get(3)?,
            operator: r.get(4)?,
            outcome: r.get(5)?,
            details: r.get(6)?,
        },
        prev_mac: r.get(7)?,
        mac: r.get(8)?,
    })
}

const ROW_COLUMNS: &str = "seq, at, kind, subject_id, operator, outcome, details, prev_mac, mac";

/// The head the chain has in the database (`settings.audit_head`): seq and mac.
pub(crate) fn db_head(
    conn: &Connection,
    file: &Path,
) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
    Ok(read_marker(conn, file, SETTING_HEAD)?.map(|m| (m.seq, m.mac)))
}

/// The seq of the last pruned record (0 when never pruned).
pub(crate) fn anchor_seq(conn: &Connection, file: &Path) -> Result<u64, StoreError> {
    Ok(read_marker(conn, file, SETTING_ANCHOR)?.map_or(0, |m| m.seq))
}

/// What the head kept outside the database says, for [`verify`].
#[derive(Debug, Clone, Copy)]
pub(crate) enum OutsideHead<'a> {
    /// Not kept for this store (a store created before the file existed, first open).
    NotKept,
    /// Kept, but the file is missing or empty.
    Missing,
    Present {
        seq: u64,
        mac: &'a [u8],
        tag: &'a [u8],
    },
}

/// Walks the whole chain and reports the first break, if any; then compares the chain with the
/// head kept outside the database.
pub(crate) fn verify(
    conn: &Connection,
    file: &Path,
    key: &AuditKey,
    outside: OutsideHead<'_>,
) -> Result<AuditVerification, StoreError> {
    let mut out = verify_inside(conn, file, key)?;
    if out.first_break.is_some() {
        return Ok(out);
    }
    let last = out.last_seq.unwrap_or(out.anchor_seq);
    match outside {
        OutsideHead::NotKept => {}
        OutsideHead::Missing => {
            out.first_break = Some(AuditBreak {
                seq: last,
                kind: BreakKind::HeadFileTampered,
            });
        }
        OutsideHead::Present { seq, mac, tag } => {
            if !key.verify_marker_tag(b"head-file", seq, mac, tag) {
                out.first_break = Some(AuditBreak {
                    seq,
                    kind: BreakKind::HeadFileTampered,
                });
            } else if seq > last {
                out.first_break = Some(AuditBreak {
                    seq: last,
                    kind: BreakKind::Truncated { expected_last: seq },
                });
            } else if seq > out.anchor_seq {
                let stored: Option<Vec<u8>> = conn
                    .query_row("SELECT mac FROM audit WHERE seq = ?1", [seq as i64], |r| {
                        r.get(0)
                    })
                    .optional()
                    .map_err(StoreError::db_at(file, "read audit"))?;
                if stored.as_deref() != Some(mac) {
                    out.first_break = Some(AuditBreak {
                        seq,
                        kind: BreakKind::RolledBack,
                    });
                }
            }
        }
    }
    Ok(out)
}

fn verify_inside(
    conn: &Connection,
    file: &Path,
    key: &AuditKey,
) -> Result<AuditVerification, StoreError> {
    let err = |op| StoreError::db_at(file, op);
    let anchor = read_marker(conn, file, SETTING_ANCHOR)?.ok_or(StoreError::Setting {
        file: file.to_path_buf(),
        key: SETTING_ANCHOR,
        reason: "is missing",
    })?;
    let mut out = AuditVerification {
        records: 0,
        anchor_seq: anchor.seq,
        last_seq: None,
        head_mac: hex::encode(&anchor.mac),
        first_break: None,
    };
    if !key.verify_marker_tag(b"anchor", anchor.seq, &anchor.mac, &anchor.tag) {
        out.first_break = Some(AuditBreak {
            seq: anchor.seq,
            kind: BreakKind::AnchorTampered,
        });
        return Ok(out);
    }

    let mut expected_prev = anchor.mac.clone();
    let mut expected_seq = anchor.seq + 1;
    let mut broken: Option<(u64, Vec<u8>, bool)> = None; // (seq, prev_mac, self_consistent)
    {
        let mut stmt = conn
            .prepare(&format!("SELECT {ROW_COLUMNS} FROM audit ORDER BY seq"))
            .map_err(err("read audit"))?;
        let mut rows = stmt.query([]).map_err(err("read audit"))?;
        while let Some(r) = rows.next().map_err(err("read audit"))? {
            let row = row_from(r).map_err(err("read audit"))?;
            let seq = row.record.seq;
            let self_ok = key.verify_chain(&row.prev_mac, &canonical(&row.record), &row.mac);
            if !self_ok || row.prev_mac != expected_prev {
                broken = Some((seq, row.prev_mac, self_ok));
                break;
            }
            if seq != expected_seq {
                out.first_break = Some(AuditBreak {
                    seq,
                    kind: BreakKind::Renumbered {
                        expected: expected_seq,
                    },
                });
                return Ok(out);
            }
            out.records += 1;
            out.last_seq = Some(seq);
            expected_prev = row.mac;
            expected_seq = seq + 1;
        }
    }
    if let Some((seq, prev_mac, self_ok)) = broken {
        let kind = if !self_ok {
            BreakKind::Edited
        } else {
            let follows: Option<i64> = conn
                .query_row(
                    "SELECT seq FROM audit WHERE mac = ?1 LIMIT 1",
                    [&prev_mac],
                    |r| r.get(0),
                )
                .optional()
                .map_err(err("read audit"))?;
            match follows {
                Some(f) => BreakKind::Reordered {
                    follows: u64::try_from(f).unwrap_or(0),
                },
                None => BreakKind::Removed,
            }
        };
        out.first_break = Some(AuditBreak { seq, kind });
        return Ok(out);
    }

    out.head_mac = hex::encode(&expected_prev);
    let last = out.last_seq.unwrap_or(anchor.seq);
    match read_marker(conn, file, SETTING_HEAD)? {
        None => {
            out.first_break = Some(AuditBreak {
                seq: last,
                kind: BreakKind::HeadTampered,
            });
        }
        Some(head) => {
            if !key.verify_marker_tag(b"head", head.seq, &head.mac, &head.tag) {
                out.first_break = Some(AuditBreak {
                    seq: head.seq,
                    kind: BreakKind::HeadTampered,
                });
            } else if head.seq > last {
                out.first_break = Some(AuditBreak {
                    seq: last,
                    kind: BreakKind::Truncated {
                        expected_last: head.seq,
                    },
                });
            } else if head.seq < last || head.mac != expected_prev {
                out.first_break = Some(AuditBreak {
                    seq: head.seq,
                    kind: BreakKind::HeadTampered,
                });
            }
        }
    }
    Ok(out)
}

/// Removes the longest prefix of records older than `older_than` and re-anchors the chain on the
/// last removed record, in the caller's transaction. The caller appends the prune record.
pub(crate) fn prune_prefix(
    conn: &Connection,
    file: &Path,
    key: &AuditKey,
    now: UnixMillis,
    older_than: UnixMillis,
) -> Result<PruneReport, StoreError> {
    let latest_allowed = now.minus_days(MIN_RETENTION_DAYS);
    if older_than > latest_allowed {
        return Err(StoreError::AuditRetention {
            older_than,
            latest_allowed,
            minimum_days: MIN_RETENTION_DAYS,
        });
    }
    let v = verify_inside(conn, file, key)?;
    if let Some(b) = v.first_break {
        return Err(StoreError::AuditBroken {
            seq: b.seq,
            reason: b.to_string(),
        });
    }
    let err = |op| StoreError::db_at(file, op);
    // The prefix ends before the first record that is not old enough (even if later records are
    // older again after a clock jump: only a whole prefix goes).
    let first_young: Option<i64> = conn
        .query_row(
            "SELECT MIN(seq) FROM audit WHERE at >= ?1",
            [older_than.0],
            |r| r.get(0),
        )
        .map_err(err("find audit prefix"))?;
    let last_removed: Option<(i64, Vec<u8>)> = match first_young {
        Some(fy) => conn.query_row(
            "SELECT seq, mac FROM audit WHERE seq < ?1 ORDER BY seq DESC LIMIT 1",
            [fy],
            |r| Ok((r.get(0)?, r.get(1)?)),
        ),
        None => conn.query_row(
            "SELECT seq, mac FROM audit ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        ),
    }
    .optional()
    .map_err(err("find audit prefix"))?;
    let Some((last_seq, last_mac)) = last_removed else {
        return Ok(PruneReport {
            removed: 0,
            anchor_seq: v.anchor_seq,
        });
    };
    conn.execute(
        "INSERT INTO settings (key, value) VALUES (?1, '1')",
        [SETTING_PRUNING],
    )
    .map_err(err("prune audit"))?;
    let removed = conn
        .execute("DELETE FROM audit WHERE seq <= ?1", [last_seq])
        .map_err(err("prune audit"))?;
    conn.execute("DELETE FROM settings WHERE key = ?1", [SETTING_PRUNING])
        .map_err(err("prune audit"))?;
    let anchor_seq = u64::try_from(last_seq).unwrap_or(0);
    write_marker(
        conn,
        file,
        key,
        SETTING_ANCHOR,
        b"anchor",
        anchor_seq,
        &last_mac,
    )?;
    Ok(PruneReport {
        removed: removed as u64,
        anchor_seq,
    })
}

/// Reads records with `seq >= from`, at most `limit`.
pub(crate) fn records(
    conn: &Connection,
    file: &Path,
    from: u64,
    limit: usize,
) -> Result<Vec<AuditRecord>, StoreError> {
    Ok(chained_records(conn, file, from, limit)?
        .into_iter()
        .map(|c| c.record)
        .collect())
}

/// A record with its chain links, as exported (`facegate audit export`): enough to check it
/// later with the audit key, away from the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainedRecord {
    pub record: AuditRecord,
    pub prev_mac: Vec<u8>,
    pub mac: Vec<u8>,
}

/// Records with `seq >= from` and their links, at most `limit`.
pub(crate) fn chained_records(
    conn: &Connection,
    file: &Path,
    from: u64,
    limit: usize,
) -> Result<Vec<ChainedRecord>, StoreError> {
    let err = |op| StoreError::db_at(file, op);
    let mut stmt = conn
        .prepare(&format!(
            "SELECT {ROW_COLUMNS} FROM audit WHERE seq >= ?1 ORDER BY seq LIMIT ?2"
        ))
        .map_err(err("read audit"))?;
    let rows = stmt
        .query_map(
            params![i64::try_from(from).unwrap_or(i64::MAX), limit as i64],
            row_from,
        )
        .map_err(err("read audit"))?;
    rows.map(|r| {
        r.map(|row| ChainedRecord {
            record: row.record,
            prev_mac: row.prev_mac,
            mac: row.mac,
        })
    })
    .collect::<Result<Vec<_>, _>>()
    .map_err(err("read audit"))
}

/// Checks an exported run of records: each MAC under the audit key, each link to the record
/// before it, consecutive sequence numbers. Returns the first break.
pub(crate) fn verify_chained(key: &AuditKey, records: &[ChainedRecord]) -> Option<AuditBreak> {
    let mut prev: Option<&ChainedRecord> = None;
    for r in records {
        let seq = r.record.seq;
        if !key.verify_chain(&r.prev_mac, &canonical(&r.record), &r.mac) {
            return Some(AuditBreak {
                seq,
                kind: BreakKind::Edited,
            });
        }
        if let Some(p) = prev {
            if r.prev_mac != p.mac {
                return Some(AuditBreak {
                    seq,
                    kind: BreakKind::Removed,
                });
            }
            if seq != p.record.seq + 1 {
                return Some(AuditBreak {
                    seq,
                    kind: BreakKind::Renumbered {
                        expected: p.record.seq + 1,
                    },
                });
            }
        }
        prev = Some(r);
    }
    None
}

/// Counts records per kind (for reports).
pub(crate) fn counts_by_kind(
    conn: &Connection,
    file: &Path,
) -> Result<HashMap<String, u64>, StoreError> {
    let err = |op| StoreError::db_at(file, op);
    let mut stmt = conn
        .prepare("SELECT kind, COUNT(*) FROM audit GROUP BY kind")
        .map_err(err("count audit"))?;
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
        .map_err(err("count audit"))?;
    rows.map(|r| r.map(|(k, n)| (k, u64::try_from(n).unwrap_or(0))))
        .collect::<Result<_, _>>()
        .map_err(err("count audit"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::schema;

    fn setup() -> (Connection, AuditKey) {
        let mut c = Connection::open_in_memory().unwrap();
        schema::migrate_to(&mut c, Path::new(":memory:"), schema::SCHEMA_VERSION).unwrap();
        let key = AuditKey::new(&zeroize::Zeroizing::new([9u8; 32]));
        init(&c, Path::new(":memory:"), &key).unwrap();
        (c, key)
    }

    fn add(c: &Connection, k: &AuditKey, n: i64) {
        let f = Path::new(":memory:");
        for i in 0..n {
            let e = AuditEvent::new(AuditKind::Enroll, "op", "ok")
                .subject(&SubjectId::new(format!("s{i}")).unwrap())
                .details(serde_json::json!({ "template": i }));
            append(c, f, k, UnixMillis(1_000 * i), &e).unwrap();
        }
    }

    fn unguard(c: &Connection) {
        c.execute_batch("DROP TRIGGER audit_no_update; DROP TRIGGER audit_prune_only;")
            .unwrap();
    }

    fn check(c: &Connection, k: &AuditKey) -> AuditVerification {
        verify(c, Path::new(":memory:"), k, OutsideHead::NotKept).unwrap()
    }

    /// Two records of a chain with a fixed key: their canonical bytes and MACs. The expected
    /// values were computed apart from this code (Python's `struct` and `hmac`, from the layout
    /// documented at `canonical`), so a change of field order, length width, tag or MAC input
    /// breaks the verification of every stored chain and fails here first.
    #[test]
    fn golden_audit_canonical_form_and_macs() {
        let key = AuditKey::new(&zeroize::Zeroizing::new([9u8; 32]));
        let first = AuditRecord {
            seq: 1,
            at: UnixMillis(1_700_000_000_123),
            kind: "verify".into(),
            subject: Some("emp-1".into()),
            operator: "gate-1".into(),
            outcome: "match".into(),
            details: r#"{"score":0.7123}"#.into(),
        };
        let second = AuditRecord {
            seq: 2,
            at: UnixMillis(1_700_000_000_456),
            kind: "alert".into(),
            subject: None,
            operator: "facegate".into(),
            outcome: "raised".into(),
            details: "{}".into(),
        };
        assert_eq!(hex::encode(canonical(&first)), GOLDEN_CANON_1);
        assert_eq!(hex::encode(canonical(&second)), GOLDEN_CANON_2);
        let m1 = key.chain(&GENESIS_MAC, &canonical(&first));
        assert_eq!(hex::encode(m1), GOLDEN_MAC_1);
        let m2 = key.chain(&m1, &canonical(&second));
        assert_eq!(hex::encode(m2), GOLDEN_MAC_2);
        assert!(key.verify_chain(&m1, &canonical(&second), &m2));
        // The sequence number is not in the MAC input (the chain links order the records).
        let renumbered = AuditRecord { seq: 9, ..first };
        assert_eq!(hex::encode(canonical(&renumbered)), GOLDEN_CANON_1);
    }

    const GOLDEN_CANON_1: &str = "000000000000001166616365676174652d61756469742f76310000018bcfe5687b0000000000000006766572696679010000000000000005656d702d310000000000000006676174652d3100000000000000056d6174636800000000000000107b2273636f7265223a302e373132337d";
    const GOLDEN_CANON_2: &str = "000000000000001166616365676174652d61756469742f76310000018bcfe569c80000000000000005616c6572740000000000000000086661636567617465000000000000000672616973656400000000000000027b7d";
    const GOLDEN_MAC_1: &str = "35c30985cb4f58cec07c55a2c721a48c832ff22f7c0f3f0c36ae301516e9303d";
    const GOLDEN_MAC_2: &str = "3c67b6be3e1b199d73a78ee4ed515468dd4b6907999cd92f5087c50fa002dbc0";

    #[test]
    fn decision_records_hold_ids_and_scores_only() {
        let e = AuditEvent::verification(
            &SubjectId::new("emp-1").unwrap(),
            Some(0.712_345),
            true,
            "gate-1",
        );
        assert_eq!(e.kind, AuditKind::Verify);
        assert_eq!(e.outcome, "match");
        assert_eq!(e.details.to_string(), r#"{"score":0.7123}"#);
    }

    #[test]
    fn intact_chain_verifies() {
        let (c, k) = setup();
        add(&c, &k, 5);
        let v = check(&c, &k);
        assert!(v.is_intact(), "{v:?}");
        assert_eq!(v.records, 5);
        assert_eq!(v.last_seq, Some(5));
    }

    #[test]
    fn edit_is_found() {
        let (c, k) = setup();
        add(&c, &k, 5);
        unguard(&c);
        c.execute("UPDATE audit SET outcome = 'refused' WHERE seq = 3", [])
            .unwrap();
        let b = check(&c, &k).first_break.unwrap();
        assert_eq!((b.seq, b.kind), (3, BreakKind::Edited));
    }

    #[test]
    fn removal_is_found() {
        let (c, k) = setup();
        add(&c, &k, 5);
        unguard(&c);
        c.execute("DELETE FROM audit WHERE seq = 2", []).unwrap();
        let b = check(&c, &k).first_break.unwrap();
        assert_eq!((b.seq, b.kind), (3, BreakKind::Removed));
    }

    #[test]
    fn reorder_is_found() {
        let (c, k) = setup();
        add(&c, &k, 5);
        unguard(&c);
        c.execute_batch(
            "UPDATE audit SET seq = 100 WHERE seq = 2;
             UPDATE audit SET seq = 2 WHERE seq = 3;
             UPDATE audit SET seq = 3 WHERE seq = 100;",
        )
        .unwrap();
        let b = check(&c, &k).first_break.unwrap();
        assert_eq!(b.seq, 2);
        assert_eq!(b.kind, BreakKind::Reordered { follows: 3 });
    }

    #[test]
    fn truncation_is_found() {
        let (c, k) = setup();
        add(&c, &k, 5);
        unguard(&c);
        c.execute("DELETE FROM audit WHERE seq >= 4", []).unwrap();
        let b = check(&c, &k).first_break.unwrap();
        assert_eq!(b.seq, 3);
        assert_eq!(b.kind, BreakKind::Truncated { expected_last: 5 });
    }

    #[test]
    fn another_key_sees_edits_everywhere() {
        let (c, _) = setup();
        let k = AuditKey::new(&zeroize::Zeroizing::new([9u8; 32]));
        add(&c, &k, 2);
        let other = AuditKey::new(&zeroize::Zeroizing::new([8u8; 32]));
        let b = check(&c, &other).first_break.unwrap();
        assert_eq!(b.kind, BreakKind::AnchorTampered);
    }

    #[test]
    fn guarded_against_update_and_delete() {
        let (c, k) = setup();
        add(&c, &k, 2);
        assert!(c.execute("UPDATE audit SET outcome = 'x'", []).is_err());
        assert!(c.execute("DELETE FROM audit", []).is_err());
    }

    #[test]
    fn prune_refuses_young_records_and_reanchors() {
        let (c, k) = setup();
        let f = Path::new(":memory:");
        add(&c, &k, 10); // at = 0 .. 9000 ms
        let now = UnixMillis(9_000).plus_days(MIN_RETENTION_DAYS);
        // Cut-off later than now - 3 years: refused.
        let err = prune_prefix(&c, f, &k, now, UnixMillis(9_001)).unwrap_err();
        assert!(matches!(err, StoreError::AuditRetention { .. }), "{err}");
        // Everything before 5000 ms goes: seq 1..=5.
        let r = prune_prefix(&c, f, &k, now, UnixMillis(5_000)).unwrap();
        assert_eq!(
            r,
            PruneReport {
                removed: 5,
                anchor_seq: 5
            }
        );
        let v = check(&c, &k);
        assert!(v.is_intact(), "{v:?}");
        assert_eq!((v.records, v.anchor_seq), (5, 5));
        add(&c, &k, 1);
        assert!(check(&c, &k).is_intact());
        // A forged anchor is caught.
        c.execute(
            "UPDATE settings SET value = replace(value, '5:', '6:') WHERE key = 'audit_anchor'",
            [],
        )
        .unwrap();
        assert_eq!(
            check(&c, &k).first_break.unwrap().kind,
            BreakKind::AnchorTampered
        );
    }
}
