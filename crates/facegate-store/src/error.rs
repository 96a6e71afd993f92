use std::path::{Path, PathBuf};

use facegate_types::{SubjectId, TemplateId, TypesError, UnixMillis};
use rusqlite::ErrorCode;

/// Everything the store can refuse or fail at.
///
/// Each variant names the file, the subject id or the template id concerned, and says what to do
/// when there is something to do. No variant ever carries template values, key bytes or images.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    // ----- files and the database ----------------------------------------------------------
    /// A file could not be read, written or created.
    #[error("{}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// SQLite reported an error that is none of the specific cases below.
    #[error("database {} ({op})", file.display())]
    Database {
        file: PathBuf,
        op: &'static str,
        #[source]
        source: rusqlite::Error,
    },

    /// The database file (or its directory) is not writable. Reads keep working.
    #[error(
        "database {} is read-only ({op} refused); reads keep working, writes need the file, its \
         -wal/-shm files and the state directory to be writable by the service user",
        file.display()
    )]
    ReadOnly { file: PathBuf, op: &'static str },

    /// SQLite found a malformed page.
    #[error(
        "database {} is corrupt ({detail}); stop the service, keep the file for inspection and \
         restore the latest sealed backup",
        file.display()
    )]
    Corrupt { file: PathBuf, detail: String },

    /// The disk (or the configured size limit) is full.
    #[error(
        "database {} could not grow: disk full ({op} refused); free space in the state \
         directory; committed data is intact",
        file.display()
    )]
    DiskFull { file: PathBuf, op: &'static str },

    /// The operating system refused a read or write of the database (a full disk on which
    /// SQLite got a short write, a file size limit, failing storage).
    #[error(
        "database {} could not be written or read ({op}: {detail}); check free space, the file \
         size limit (LimitFSIZE=) and the storage of the state directory; committed data is \
         intact",
        file.display()
    )]
    DiskIo {
        file: PathBuf,
        op: &'static str,
        detail: String,
    },

    /// The database was written by a newer facegate.
    #[error(
        "database {} has schema version {found}, this build understands up to {supported}; \
         upgrade facegate",
        file.display()
    )]
    SchemaTooNew {
        file: PathBuf,
        found: u32,
        supported: u32,
    },

    /// A migration step failed; the database stays at the previous version.
    #[error("database {}: migration to schema version {version} failed", file.display())]
    Migration {
        file: PathBuf,
        version: u32,
        #[source]
        source: rusqlite::Error,
    },

    /// A setting the store needs is missing or malformed.
    #[error("database {}: setting `{key}` {reason}", file.display())]
    Setting {
        file: PathBuf,
        key: &'static str,
        reason: &'static str,
    },

    // ----- keys ----------------------------------------------------------------------------
    /// The master key is not the one the database was sealed with.
    #[error(
        "wrong master key (expected key id {expected}, got {got}); use the key this database \
         was created or last rotated with"
    )]
    WrongMasterKey { expected: String, got: String },

    /// The key file is readable or writable by others.
    #[error(
        "key file {} has mode {mode:04o}, which lets other users read or change it; run \
         `chmod 600 {}`",
        path.display(), path.display()
    )]
    KeyFilePermissions { path: PathBuf, mode: u32 },

    /// The key file belongs to another user.
    #[error(
        "key file {} is owned by uid {owner}, but this process runs as uid {euid}; run \
         `chown <service-user> {}` (the user this service runs as)",
        path.display(), path.display()
    )]
    KeyFileOwner {
        path: PathBuf,
        owner: u32,
        euid: u32,
    },

    /// The key file does not hold a key.
    #[error("key file {}: {reason}", path.display())]
    KeyFormat { path: PathBuf, reason: &'static str },

    /// `generate_key_file` refuses to overwrite.
    #[error(
        "key file {} already exists; refusing to overwrite a master key (that would make the \
         database unreadable); move it away first if you really mean to replace it",
        path.display()
    )]
    KeyFileExists { path: PathBuf },

    /// The systemd credential is not available.
    #[error("systemd credential `{name}`: {reason}")]
    CredentialUnavailable { name: String, reason: String },

    /// The operating system's random generator failed.
    #[error("the system random number generator failed while generating {what}")]
    Random { what: &'static str },

    /// A subject's wrapped data key does not open (tampered, or copied from another subject).
    #[error(
        "data key of subject {subject} does not open under the master key (tampered or moved \
         row); the subject's templates are unreadable, re-enroll the subject"
    )]
    SubjectKey { subject: SubjectId },

    /// The subject has no data key (deleted, or never enrolled).
    #[error("subject {subject} has no data key (deleted or never enrolled)")]
    NoSubjectKey { subject: SubjectId },

    /// The wrapped audit key does not open.
    #[error("database {}: the audit key does not open under the master key (tampered)", file.display())]
    AuditKey { file: PathBuf },

    // ----- templates -----------------------------------------------------------------------
    /// A sealed template does not open: tampered, moved to another subject or template id, or
    /// labelled with another model id than it was sealed for.
    #[error(
        "template {template} of subject {subject} (model `{model_id}`) does not open: it was \
         tampered with, moved from another subject or row, or its model id was changed; \
         re-enroll the subject"
    )]
    TemplateOpen {
        template: TemplateId,
        subject: SubjectId,
        model_id: String,
    },

    /// A stored template has an impossible shape.
    #[error("template {template} of subject {subject}: {reason}")]
    TemplateFormat {
        template: TemplateId,
        subject: SubjectId,
        reason: &'static str,
    },

    /// The enrollment samples are unusable.
    #[error("enrollment of subject {subject}")]
    Embedding {
        subject: SubjectId,
        #[source]
        source: TypesError,
    },

    /// A model id that is empty, too long or has unexpected characters.
    #[error("invalid model id: {reason} (use 1 to 64 characters from A-Z a-z 0-9 . _ : - +)")]
    InvalidModelId { reason: &'static str },

    /// A probe or template has another dimension than the gallery.
    #[error("dimension mismatch: the gallery holds {expected}-d templates, got {got}-d")]
    DimensionMismatch { expected: usize, got: usize },

    // ----- enrollment checks ----------------------------------------------------------------
    /// A sample of one enrollment does not match the others at the operating point: the photos
    /// are not all of one person (or one of them is not usable). Samples count from 1.
    #[error(
        "enrollment of {subject} refused: sample {sample} does not match sample(s) {} at the \
         match threshold {threshold:.4} (lowest similarity {lowest:.4}); all samples of one \
         enrollment must show the same person",
        others.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
    )]
    SamplesDisagree {
        subject: SubjectId,
        sample: usize,
        others: Vec<usize>,
        lowest: f32,
        threshold: f32,
    },

    /// The new template already matches another enrolled subject: one person must not hold
    /// two ids (the first would be "unknown" for ever, the margin rule failing between them).
    #[error(
        "enrollment of {subject} refused: the face already matches enrolled subject {existing} \
         (similarity {score:.4}, threshold {threshold:.4}); re-enroll {existing} instead, or have \
         an operator allow the duplicate of {existing} with a reason"
    )]
    DuplicateFace {
        subject: SubjectId,
        existing: SubjectId,
        score: f32,
        threshold: f32,
    },

    /// An enrollment check was asked for with a threshold that is no cosine.
    #[error("enrollment check: threshold {threshold} is not a cosine in [-1, 1]")]
    InvalidThreshold { threshold: f32 },

    // ----- consent -------------------------------------------------------------------------
    /// Enrollment with a consent that is no longer live.
    #[error(
        "consent of subject {subject} is not live (expires at {expires_at}, now {now}); record \
         a new consent before enrolling"
    )]
    ConsentNotLive {
        subject: SubjectId,
        expires_at: UnixMillis,
        now: UnixMillis,
    },

    /// Enrollment with a consent that was withdrawn after it was granted.
    #[error(
        "subject {subject} withdrew consent at {withdrawn_at}, after this consent was granted; \
         record a new consent before enrolling"
    )]
    ConsentWithdrawn {
        subject: SubjectId,
        withdrawn_at: UnixMillis,
    },

    /// The notice changed in a way Art. 5 does not allow (text without a version bump, or a
    /// lower version than recorded).
    #[error(transparent)]
    Notice {
        source: facegate_policy::PolicyError,
    },

    /// The policy refused a stored consent.
    #[error("stored consent of subject {subject}")]
    Policy {
        subject: SubjectId,
        #[source]
        source: facegate_policy::PolicyError,
    },

    /// A stored consent record does not parse.
    #[error("stored consent of subject {subject} does not parse")]
    ConsentRecord {
        subject: SubjectId,
        #[source]
        source: serde_json::Error,
    },

    /// The database was last re-wrapped under an epoch that no file here holds: an older copy
    /// of the database (made before a withdrawal, deletion or expiry), or a lost epoch file.
    #[error(
        "database {} was sealed under another epoch than {} holds: it is an older copy (subjects \
         withdrawn or deleted since stay sealed for good) or the epoch file was lost. Put back the \
         current database, or the epoch file that belongs to it",
        file.display(),
        epoch_file.display()
    )]
    EpochMismatch { file: PathBuf, epoch_file: PathBuf },

    /// The state directory says a store was created here but its database is gone or empty.
    #[error(
        "database {} is missing or empty, but this state directory holds a store created at \
         {created_at} (master key {key_id}): refusing to start a new, empty store in its place. \
         Restore the database from the latest sealed backup; to really start afresh, move the \
         whole state directory away first",
        file.display()
    )]
    StoreMissing {
        file: PathBuf,
        key_id: String,
        created_at: String,
    },

    /// No such subject.
    #[error("unknown subject {subject}")]
    UnknownSubject { subject: SubjectId },

    // ----- credentials ---------------------------------------------------------------------
    /// A credential value the register refuses (the policy says why).
    #[error(transparent)]
    Credential {
        source: facegate_policy::PolicyError,
    },

    /// A credential label that is too long or holds control characters.
    #[error("credential label must be at most {max} printable characters")]
    CredentialLabel { max: usize },

    /// The value is already live for a holder.
    #[error(
        "this {kind} is already issued{} and still valid; choose another value (or revoke the \
         other one first)",
        if *same_holder { " to the same holder" } else { " to another holder" }
    )]
    CredentialInUse {
        kind: &'static str,
        same_holder: bool,
    },

    /// Nothing matched a revocation.
    #[error("holder {holder} has no live credential matching the request")]
    NoSuchCredential { holder: SubjectId },

    // ----- transfer between terminals ------------------------------------------------------
    /// A terminal public key line that does not parse.
    #[error("terminal public key {reason}")]
    TerminalKeyFormat { reason: &'static str },

    /// This terminal's stored transfer keys do not load.
    #[error(
        "this terminal's transfer keys: {reason} (tampered settings row); make new ones only after telling the site's other terminals"
    )]
    TerminalKeys { reason: &'static str },

    /// No transfer keys yet.
    #[error("this terminal has no transfer keys yet; make them with `facegate keygen --terminal`")]
    NoTerminalKeys,

    /// Transfer keys exist already; they are never replaced silently.
    #[error(
        "this terminal already has transfer keys (terminal {id}); they are kept, because the \
         site's other terminals know this terminal by them (`facegate keygen --terminal --show` \
         prints the public key)"
    )]
    TerminalKeysExist { id: facegate_policy::TerminalId },

    /// A transfer file that is not one, or of another version.
    #[error("transfer file {reason}")]
    TransferFormat { reason: String },

    /// The bundle is sealed to another terminal.
    #[error(
        "transfer {transfer} is addressed to terminal {receiver}, not to this terminal ({this}); \
         import it on the terminal it was made for"
    )]
    TransferNotForThisTerminal {
        transfer: String,
        receiver: facegate_policy::TerminalId,
        this: facegate_policy::TerminalId,
    },

    /// The bundle names another sender than the one the operator expects.
    #[error(
        "transfer {transfer} comes from terminal {found}, not from terminal {expected} named with \
         --from; refused"
    )]
    TransferSender {
        transfer: String,
        expected: facegate_policy::TerminalId,
        found: facegate_policy::TerminalId,
    },

    /// The signature or the seal does not hold: a changed byte, or not made by the sender.
    #[error(
        "transfer {transfer} does not verify: its signature or seal does not hold (the file was \
         changed or corrupted, or not made by the terminal it names); ask for a new export"
    )]
    TransferTampered { transfer: String },

    /// The bundle's contents are malformed although the seal holds.
    #[error("transfer {transfer}: {reason}")]
    TransferPayload {
        transfer: String,
        reason: &'static str,
    },

    /// The same transfer was imported already.
    #[error(
        "transfer {transfer} of subject {subject} was imported already (at {}); a duplicate is \
         refused",
        imported_at.rfc3339()
    )]
    TransferDuplicate {
        transfer: String,
        subject: SubjectId,
        imported_at: UnixMillis,
    },

    /// An older transfer than one already imported from the same sender (a replay).
    #[error(
        "transfer {transfer} of subject {subject} was made at {}, before transfer {newer} \
         already imported from the same terminal: an older transfer is refused (replay)",
        created_at.rfc3339()
    )]
    TransferSuperseded {
        transfer: String,
        subject: SubjectId,
        created_at: UnixMillis,
        newer: String,
    },

    /// The subject already has templates on this terminal.
    #[error(
        "subject {subject} is already enrolled on this terminal ({templates} template(s)); \
         delete them first (`facegate subjects delete {subject}`) to take the transferred ones"
    )]
    TransferAlreadyEnrolled {
        subject: SubjectId,
        templates: usize,
    },

    /// The consents the transfer carries do not allow it here.
    #[error("transfer {transfer} of subject {subject} is refused")]
    TransferRefused {
        transfer: String,
        subject: SubjectId,
        #[source]
        source: facegate_policy::PolicyError,
    },

    /// An export without a live transfer consent naming the receiver.
    #[error(
        "subject {subject} has no live transfer consent naming terminal {terminal} (Art. 6, 8 of \
         the Measures: a separate consent is needed for face information to leave this device); \
         record one with `facegate consent grant {subject} --transfer-to <its public key>`"
    )]
    NoTransferConsent {
        subject: SubjectId,
        terminal: facegate_policy::TerminalId,
    },

    /// An export of a subject without a live face consent.
    #[error(
        "subject {subject} has no live face consent here (it is {status}); nothing is exported"
    )]
    NoLiveConsent {
        subject: SubjectId,
        status: &'static str,
    },

    /// Nothing to export.
    #[error("subject {subject} has no live template of model {model_id} to export")]
    NoTemplates {
        subject: SubjectId,
        model_id: String,
    },

    /// A row of the transfer register was edited outside facegate.
    #[error(
        "transfer record {transfer} of subject {subject} fails its integrity check (edited outside \
         facegate); refused, because withdrawal notices are checked against the keys it holds"
    )]
    TransferRecordTampered {
        subject: SubjectId,
        transfer: String,
    },

    /// A withdrawal notice that is not one.
    #[error("withdrawal notice {reason}")]
    NoticeFormat { reason: String },

    /// A notice from a terminal this one never exchanged the person with.
    #[error(
        "withdrawal notice for subject {subject} is signed by terminal {issuer}, which this \
         terminal has no transfer of that subject with; refused (apply it on the terminals that \
         exchanged the person)"
    )]
    NoticeIssuerUnknown {
        subject: SubjectId,
        issuer: facegate_policy::TerminalId,
    },

    /// The notice's signature does not hold under the issuer's known key.
    #[error(
        "withdrawal notice for subject {subject} does not verify under the key of terminal \
         {issuer} known from the transfer (changed or forged); refused"
    )]
    NoticeSignature {
        subject: SubjectId,
        issuer: facegate_policy::TerminalId,
    },

    // ----- audit ---------------------------------------------------------------------------
    /// The audit chain is broken; pruning is refused so the evidence stays.
    #[error("audit chain broken at seq {seq}: {reason}; run `facegate audit verify`")]
    AuditBroken { seq: u64, reason: String },

    /// Pruning would remove records younger than the 3-year minimum of Art. 9.
    #[error(
        "refusing to prune audit records younger than {minimum_days} days (Art. 9 of the \
         Measures keeps processing records at least 3 years): cut-off {older_than} is after \
         {latest_allowed}"
    )]
    AuditRetention {
        older_than: UnixMillis,
        latest_allowed: UnixMillis,
        minimum_days: u32,
    },

    /// Audit details could not be encoded.
    #[error("audit record `{kind}`: details do not encode")]
    AuditDetails {
        kind: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

impl StoreError {
    /// Classifies a SQLite error: read-only, corrupt and full get their own variants.
    pub(crate) fn db(file: &Path, op: &'static str, source: rusqlite::Error) -> Self {
        let file = file.to_path_buf();
        match source.sqlite_error_code() {
            Some(ErrorCode::ReadOnly) => Self::ReadOnly { file, op },
            Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => Self::Corrupt {
                file,
                detail: format!("{op}: {source}"),
            },
            Some(ErrorCode::DiskFull) => Self::DiskFull { file, op },
            Some(ErrorCode::SystemIoFailure) => Self::DiskIo {
                file,
                op,
                detail: source.to_string(),
            },
            _ => Self::Database { file, op, source },
        }
    }

    /// A closure for `map_err` that classifies SQLite errors against `file`.
    pub(crate) fn db_at(file: &Path, op: &'static str) -> impl FnOnce(rusqlite::Error) -> Self {
        move |source| Self::db(file, op, source)
    }
}
