//! The encrypted template store of facegate. It owns the SQLite database in the state directory
//! (schema and migrations, WAL, `secure_delete`), the master key and the per-subject data keys
//! ([`keys`]), AES-256-GCM sealing of templates (ring), the consent ledger, enrollment,
//! withdrawal, deletion and the retention sweep ([`Store`]), the hash-chained processing record
//! of Art. 9 ([`audit`]), and the in-memory [`gallery`] for 1:1 verification and 1:N
//! identification. It never holds an image, and it never writes a template in clear: a template
//! reaches the disk only sealed under its subject's data key, with associated data binding it to
//! its template id, subject id, model id and seal version.
//!
//! Guarantees, and what they rest on:
//! - **No template without consent**: [`Store::enroll`] takes a [`facegate_policy::Consent`],
//!   which only the policy crate can construct, and refuses it unless it is live and not
//!   withdrawn since.
//! - **Withdrawal and expiry delete at once**: the subject's template rows *and its wrapped data
//!   key* are deleted in one transaction, `secure_delete` zeroes the freed cells, and the WAL is
//!   checkpointed and truncated. Ciphertext that survives anywhere (an old WAL frame, a free
//!   page, filesystem slack) is unreadable because the only key that opened it is gone from the
//!   database (crypto-shredding).
//! - **Backups**: a copy of the database made *before* a deletion still contains the wrapped
//!   data key. It is protected only by the master key in use when it was made: rotate the master
//!   key ([`Store::rotate_master_key`]) and destroy the retired key to put such copies out of
//!   reach. This crate cannot delete bytes it does not own.
//! - **Wrong key, tampered row**: a wrong master key is refused at open, naming both key ids; a
//!   row that does not open is reported naming its template and subject, and every other row
//!   still loads.
//! - Errors, logs and audit records carry ids, counts, scores and reasons, never template values.

pub mod audit;
mod error;
pub mod gallery;
pub mod keys;
pub mod schema;
mod seal;
mod store;

pub use audit::{
    AuditBreak, AuditEvent, AuditKind, AuditRecord, AuditVerification, BreakKind, PruneReport,
};
pub use error::StoreError;
pub use gallery::{Gallery, Hit, Identification, QueryTimings, RowRef, SearchMode, bench_queries};
pub use keys::{KeyId, KeySource, MasterKey, generate_key_file};
pub use store::{
    ConsentEntry, ConsentId, DB_FILE_NAME, GalleryLoad, RemovalReport, RotationReport, Store,
    StoreCounts, SubjectDetail, SubjectSummary, SweepReport, TemplateInfo,
};
