//! The SQLite schema, its migrations, and the connection settings.
//!
//! The schema version lives in `PRAGMA user_version`. [`MIGRATIONS`] is the ordered list of steps;
//! step `i` takes the database from version `i` to `i + 1` and runs in its own transaction
//! together with the `user_version` bump, so a crash leaves the database at a whole version.
//!
//! No table holds an image. Templates are sealed blobs (see `crate::seal`); the audit table holds
//! ids, kinds, outcomes and small JSON details.

use std::path::Path;
use std::time::Duration;

use rusqlite::Connection;

use crate::StoreError;

/// One migration step.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// The version this step produces.
    pub version: u32,
    /// What it does, for logs.
    pub summary: &'static str,
    /// The SQL (a batch).
    pub sql: &'static str,
}

/// All migrations, in order. Never edit a released step; append a new one.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        summary: "subjects, data keys, consents, sealed templates, audit chain, settings",
        sql: r"
CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;

CREATE TABLE subjects (
    id          TEXT PRIMARY KEY,
    age_years   INTEGER NOT NULL,
    created_at  INTEGER NOT NULL
) STRICT;

-- Per-subject data keys, AES-256-GCM-wrapped under a key derived from the master key.
-- Deleting a row here crypto-shreds every template of the subject.
CREATE TABLE subject_keys (
    subject_id  TEXT PRIMARY KEY REFERENCES subjects(id) ON DELETE CASCADE,
    nonce       BLOB NOT NULL,
    wrapped     BLOB NOT NULL,
    created_at  INTEGER NOT NULL
) STRICT;

-- The consent ledger: the policy crate's ConsentRecord as JSON, plus columns to query on.
CREATE TABLE consents (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    subject_id    TEXT NOT NULL REFERENCES subjects(id) ON DELETE CASCADE,
    record        TEXT NOT NULL,
    granted_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    withdrawn_at  INTEGER,
    withdrawal    TEXT
) STRICT;
CREATE INDEX consents_subject ON consents(subject_id);

-- Sealed templates: never a vector or an image in clear.
CREATE TABLE templates (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    subject_id    TEXT NOT NULL REFERENCES subjects(id) ON DELETE CASCADE,
    consent_id    INTEGER NOT NULL REFERENCES consents(id) ON DELETE CASCADE,
    model_id      TEXT NOT NULL,
    dim           INTEGER NOT NULL,
    seal_version  INTEGER NOT NULL,
    nonce         BLOB NOT NULL,
    sealed        BLOB NOT NULL,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL
) STRICT;
CREATE INDEX templates_subject ON templates(subject_id);

-- The processing record (Art. 9): a keyed hash chain. subject_id is deliberately not a foreign
-- key: the record of processing outlives the subject.
CREATE TABLE audit (
    seq         INTEGER PRIMARY KEY,
    at          INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    subject_id  TEXT,
    operator    TEXT NOT NULL,
    outcome     TEXT NOT NULL,
    details     TEXT NOT NULL,
    prev_mac    BLOB NOT NULL,
    mac         BLOB NOT NULL
) STRICT;
",
    },
    Migration {
        version: 2,
        summary: "withdrawal marker on subjects, expiry indexes, append-only audit triggers",
        sql: r"
ALTER TABLE subjects ADD COLUMN withdrawn_at INTEGER;
CREATE INDEX templates_expiry ON templates(expires_at);
CREATE INDEX consents_expiry ON consents(expires_at) WHERE withdrawn_at IS NULL;

-- Audit records are never updated, and deleted only by a prune, which sets the marker setting
-- inside its own transaction. (Defence against mistakes, not against someone who can edit the
-- file: the keyed chain detects that.)
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
BEGIN
    SELECT RAISE(ABORT, 'audit records are append-only');
END;
CREATE TRIGGER audit_prune_only BEFORE DELETE ON audit
WHEN (SELECT value FROM settings WHERE key = 'audit_prune_in_progress') IS NULL
BEGIN
    SELECT RAISE(ABORT, 'audit records are removed only by an audit prune');
END;
",
    },
    Migration {
        version: 3,
        summary: "credential register (Art. 10), consent row MACs",
        sql: r"
-- PIN, card and QR credentials. holder is a person id, deliberately not a foreign key to
-- subjects: a person who refuses face recognition has credentials and no subject row. digest is
-- an HMAC of kind and value under a key wrapped by the master key; never the value.
CREATE TABLE credentials (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    holder      TEXT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('pin', 'card', 'qr')),
    digest      BLOB NOT NULL,
    label       TEXT NOT NULL DEFAULT '',
    issued_at   INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    revoked_at  INTEGER,
    operator    TEXT NOT NULL
) STRICT;
CREATE UNIQUE INDEX credentials_live ON credentials(kind, digest) WHERE revoked_at IS NULL;
CREATE INDEX credentials_holder ON credentials(holder);
CREATE INDEX credentials_expiry ON credentials(expires_at);

-- A keyed MAC over each consent row (id, subject, record, dates, withdrawal), so an edited
-- ledger row is refused instead of trusted.
ALTER TABLE consents ADD COLUMN mac BLOB;

-- Withdrawals and deletions are looked up per subject in the processing record.
CREATE INDEX audit_subject ON audit(subject_id, kind) WHERE subject_id IS NOT NULL;
",
    },
    Migration {
        version: 4,
        summary: "transfer consents, transfers between terminals, applied withdrawal notices",
        sql: r"
-- Transfer consents (Art. 6, 8): separate from the face consent, naming the receiving terminals
-- (the policy crate's TransferConsentRecord as JSON), each row with a keyed MAC.
CREATE TABLE transfer_consents (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    subject_id    TEXT NOT NULL REFERENCES subjects(id) ON DELETE CASCADE,
    record        TEXT NOT NULL,
    granted_at    INTEGER NOT NULL,
    withdrawn_at  INTEGER,
    mac           BLOB NOT NULL
) STRICT;
CREATE INDEX transfer_consents_subject ON transfer_consents(subject_id);

-- Enrollments sent to and received from other terminals: ids, peers, times and counts, never a
-- template. Deliberately not a foreign key to subjects: where a person went outlives their
-- data here, so that a later withdrawal still reaches those terminals. The keyed MAC covers
-- every column but recorded_at and operator: the peer's key decides which withdrawal notices
-- are believed, so an edited peer is refused, not trusted.
CREATE TABLE transfers (
    id           TEXT PRIMARY KEY,
    direction    TEXT NOT NULL CHECK (direction IN ('out', 'in')),
    subject_id   TEXT NOT NULL,
    peer_id      TEXT NOT NULL,
    peer         TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    recorded_at  INTEGER NOT NULL,
    templates    INTEGER NOT NULL,
    operator     TEXT NOT NULL,
    mac          BLOB NOT NULL
) STRICT;
CREATE INDEX transfers_subject ON transfers(subject_id, peer_id);

-- Signed withdrawal notices applied here: applying one twice changes nothing, and an older
-- transfer of a person withdrawn elsewhere is refused even if nothing of them was stored here.
CREATE TABLE withdrawal_notices (
    id            TEXT PRIMARY KEY,
    subject_id    TEXT NOT NULL,
    issuer_id     TEXT NOT NULL,
    withdrawn_at  INTEGER NOT NULL,
    applied_at    INTEGER NOT NULL
) STRICT;
CREATE INDEX withdrawal_notices_subject ON withdrawal_notices(subject_id);
",
    },
    Migration {
        version: 5,
        summary: "sealed card numbers in the credential register (Wiegand and OSDP outputs)",
        sql: r"
-- A card's number, AES-256-GCM-sealed (nonce || ciphertext) under a key derived from the audit
-- secret and bound to the row's holder, kind and digest: the gate outputs that report a grant
-- to a panel as a card read need the number back. NULL for PINs, QR codes and older cards.
ALTER TABLE credentials ADD COLUMN sealed_value BLOB;
",
    },
];

/// How long a writer waits for another one.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The schema version this build writes.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// Applies the connection settings: WAL, `secure_delete`, foreign keys, busy timeout, full sync.
pub(crate) fn configure(conn: &Connection, file: &Path, read_only: bool) -> Result<(), StoreError> {
    let err = |op| StoreError::db_at(file, op);
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(err("busy_timeout"))?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(err("foreign_keys"))?;
    // Overwrite deleted content with zeros, in the file and in the WAL frames written after it.
    conn.pragma_update(None, "secure_delete", "ON")
        .map_err(err("secure_delete"))?;
    conn.pragma_update(None, "cell_size_check", "ON")
        .map_err(err("cell_size_check"))?;
    if !read_only {
        let mode: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .map_err(err("journal_mode"))?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(journal_mode = %mode, "the database did not switch to WAL mode");
        }
        // A committed enrollment survives power loss, not just a killed process.
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(err("synchronous"))?;
    }
    Ok(())
}

/// The version recorded in the file.
pub fn user_version(conn: &Connection, file: &Path) -> Result<u32, StoreError> {
    conn.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))
        .map_err(StoreError::db_at(file, "read user_version"))
        .map(|v| u32::try_from(v).unwrap_or(u32::MAX))
}

/// Brings the database up to `target` (at most [`SCHEMA_VERSION`]), one transaction per step.
/// Returns the version it started from.
pub fn migrate_to(conn: &mut Connection, file: &Path, target: u32) -> Result<u32, StoreError> {
    let found = user_version(conn, file)?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            file: file.to_path_buf(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    for m in MIGRATIONS
        .iter()
        .filter(|m| m.version > found && m.version <= target)
    {
        let step = |conn: &mut Connection| -> Result<(), rusqlite::Error> {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            tx.execute_batch(m.sql)?;
            tx.pragma_update(None, "user_version", m.version)?;
            tx.commit()
        };
        step(conn).map_err(|source| match source.sqlite_error_code() {
            Some(
                rusqlite::ErrorCode::ReadOnly
                | rusqlite::ErrorCode::DatabaseCorrupt
                | rusqlite::ErrorCode::NotADatabase
                | rusqlite::ErrorCode::DiskFull,
            ) => StoreError::db(file, "migrate", source),
            _ => StoreError::Migration {
                file: file.to_path_buf(),
                version: m.version,
                source,
            },
        })?;
        tracing::info!(
            version = m.version,
            summary = m.summary,
            "applied schema migration"
        );
    }
    Ok(found)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn schema_of(conn: &Connection) -> Vec<(String, String)> {
        let mut stmt = conn
            .prepare("SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY name")
            .unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[test]
    fn versions_are_consecutive() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version as usize, i + 1);
        }
    }

    #[test]
    fn stepwise_equals_direct() {
        let file = Path::new(":memory:");
        let mut a = Connection::open_in_memory().unwrap();
        migrate_to(&mut a, file, SCHEMA_VERSION).unwrap();
        let mut b = Connection::open_in_memory().unwrap();
        for v in 1..=SCHEMA_VERSION {
            assert_eq!(migrate_to(&mut b, file, v).unwrap(), v - 1);
        }
        assert_eq!(schema_of(&a), schema_of(&b));
        assert_eq!(user_version(&b, file).unwrap(), SCHEMA_VERSION);
    }

    #[test]
    fn refuses_newer_schema() {
        let file = Path::new("x.db");
        let mut c = Connection::open_in_memory().unwrap();
        c.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        let err = migrate_to(&mut c, file, SCHEMA_VERSION).unwrap_err();
        assert!(matches!(err, StoreError::SchemaTooNew { .. }), "{err}");
        assert!(err.to_string().contains("x.db"));
    }
}
