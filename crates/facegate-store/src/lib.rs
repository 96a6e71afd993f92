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
//!   checkpointed and truncated, so neither the ciphertext nor the wrapped key can be read back
//!   through the database files (tested byte for byte). Ciphertext that survives elsewhere is
//!   unreadable with the live database's keys, because the only key that opened it is gone
//!   (crypto-shredding).
//! - **What crypto-shredding does not reach**: bytes outside the live files. A backup or disk
//!   image made *before* a deletion contains the wrapped data key; so may blocks the filesystem
//!   or the flash controller freed but did not erase (a truncated WAL, wear levelling). Such
//!   bytes are protected only by the master key in use when they were written: rotate the
//!   master key ([`Store::rotate_master_key`]) and destroy the retired key, and every subject
//!   deleted before the rotation is out of reach in all of them. Keep backups sealed under the
//!   current key and rotate on a schedule (for instance after each batch of deletions).
//! - **Wrong key, tampered row**: a wrong master key is refused at open, naming both key ids; a
//!   row that does not open is reported naming its template and subject, and every other row
//!   still loads.
//! - Errors, logs and audit records carry ids, counts, scores and reasons, never template values.

pub mod audit;
mod bench;
mod credentials;
mod error;
mod files;
pub mod gallery;
pub mod keys;
mod ledger;
pub mod schema;
mod seal;
mod store;
pub mod transfer;

pub use audit::{
    AuditBreak, AuditEvent, AuditKind, AuditRecord, AuditVerification, BreakKind, ChainedRecord,
    PruneReport,
};
pub use bench::{
    FaceModel, IMPOSTOR_TAIL, ModeReport, QueryTimings, ScoreProfile, bench_queries, compare_modes,
    quantile, score_profile,
};
pub use credentials::{CredentialCheck, CredentialId, CredentialInfo, MAX_LABEL_LEN};
pub use error::StoreError;
pub use gallery::{
    DEFAULT_CERTIFIED_MARGIN, Gallery, Hit, Identification, MatchRule, PrefilterStages, RowRef,
    SearchMode,
};
pub use keys::{KeyId, KeySource, MasterKey, generate_key_file};
pub use ledger::ConsentStatus;
pub use store::{
    ALERT_FAILURES_LISTED, ConsentEntry, ConsentId, DB_FILE_NAME, DuplicateOverride,
    EnrollmentCheck, GalleryLoad, RemovalReport, RotationReport, Store, StoreCounts, SubjectDetail,
    SubjectSummary, SweepReport, TemplateInfo, disagreeing_sample,
};
pub use store::{ExportReport, ImportReport, NoticeOutcome, TransferDirection, TransferEntry};
pub use transfer::{TerminalPublic, TransferHeader, WithdrawalNotice};
