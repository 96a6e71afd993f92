//! [`Store`]: the database, the consent ledger, enrollment, withdrawal, deletion, retention,
//! master key rotation and the audit trail, with the gallery kept in step.
//!
//! The `impl Store` is split along its sections, one file each: `consent`, `removal`, `live_gallery`, `rotation`, `trail` (audit), `reading`, `transfer` (between terminals).

mod consent;
mod live_gallery;
mod reading;
mod removal;
mod rotation;
mod trail;
mod transfer;

pub use transfer::{ExportReport, ImportReport, NoticeOutcome, TransferDirection, TransferEntry};

use std::fs::DirBuilder;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use facegate_policy::{
    Consent, ConsentRecord, FilingStatus, PolicyConfig, VerifyOutcome, Withdrawal,
    verification_outcome,
};
use facegate_types::{Clock, Embedding, ErrorChain, SubjectId, TemplateId, UnixMillis};
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use serde_json::json;

use crate::audit::{
    self, AuditBreak, AuditEvent, AuditKey, AuditKind, AuditRecord, AuditVerification,
};
use crate::credentials::{self, CredentialKey};
use crate::files::{self, HeadFile, HeadRecord, OpenLock};
use crate::gallery::{Gallery, SearchMode};
use crate::keys::{KeyId, MasterKey};
use crate::ledger::{self, ConsentStatus, RowKey};
use crate::schema::{self, SCHEMA_VERSION};
use crate::seal::{self, Keks, SEAL_VERSION, Secret, TemplateBinding};
use crate::{PruneReport, StoreError};

/// The database file inside the state directory.
pub const DB_FILE_NAME: &str = "facegate.db";

const SETTING_KEY_ID: &str = "master_key_id";
const SETTING_AUDIT_KEY: &str = "audit_key";
const SETTING_CREATED: &str = "created_at";
const SETTING_FILING_ALERT_DAY: &str = "filing_alert_day";
const SETTING_NOTICE: &str = "notice_version_fingerprint";
const SETTING_EPOCH: &str = "subject_key_epoch";
/// Gallery load failures named in one alert record at most (the rest are counted), so the
/// record's size does not grow with the gallery.
pub const ALERT_FAILURES_LISTED: usize = 5;

/// The id of a row in the consent ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConsentId(pub i64);

/// One subject, as listed (ids, counts and dates; never template values).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectSummary {
    pub subject: SubjectId,
    pub age_years: u8,
    pub created_at: UnixMillis,
    pub templates: usize,
    pub last_enrolled_at: Option<UnixMillis>,
    /// The latest expiry among the subject's live (not withdrawn) consents.
    pub consent_expires_at: Option<UnixMillis>,
    pub withdrawn_at: Option<UnixMillis>,
    /// Whether the subject's data key exists (false once withdrawn, expired or deleted).
    pub has_key: bool,
}

/// One consent in the ledger.
#[derive(Debug, Clone)]
pub struct ConsentEntry {
    pub id: ConsentId,
    pub record: ConsentRecord,
    pub expires_at: UnixMillis,
    pub withdrawn_at: Option<UnixMillis>,
}

/// One stored template's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateInfo {
    pub template: TemplateId,
    pub consent: ConsentId,
    pub model_id: String,
    pub dim: usize,
    pub created_at: UnixMillis,
    pub expires_at: UnixMillis,
}

/// Everything stored about one subject except template values.
#[derive(Debug, Clone)]
pub struct SubjectDetail {
    pub summary: SubjectSummary,
    pub consents: Vec<ConsentEntry>,
    pub templates: Vec<TemplateInfo>,
}

/// Counts for reports and the Art. 15 filing threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreCounts {
    /// People whose face information is stored (at least one template): the Art. 15 count.
    pub subjects_with_templates: u64,
    pub templates: u64,
    /// Subjects with a row (including withdrawn ones kept for the consent ledger).
    pub subjects: u64,
    /// Consents neither withdrawn nor expired.
    pub live_consents: u64,
}

/// What a withdrawal or deletion removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RemovalReport {
    pub templates_deleted: usize,
    pub consents_affected: usize,
    pub key_destroyed: bool,
    /// The data keys were re-wrapped under a new epoch: copies of the database made before
    /// cannot open this subject's templates.
    pub copies_sealed: bool,
    /// The freed pages are gone from the database file and the WAL (false while a reader
    /// blocks the checkpoint; a background retry follows, see [`Store::clear_residue`]).
    pub residue_cleared: bool,
}

/// What a retention sweep did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SweepReport {
    pub templates_deleted: usize,
    pub subjects_affected: usize,
    /// Consents whose expiry the current policy brought forward.
    pub expiries_shortened: usize,
    pub keys_destroyed: usize,
    /// PIN, card and QR credentials past their own expiry.
    pub credentials_deleted: usize,
}

/// What a gallery load found.
#[derive(Debug, Default)]
pub struct GalleryLoad {
    pub loaded: usize,
    /// Templates left out because their consent is for another purpose, fails its integrity
    /// check or was withdrawn according to the audit chain (see [`Store::consent_status`]).
    pub not_matchable: usize,
    /// Rows that did not open (tampered, moved, wrong shape), each naming template and subject.
    /// The other rows are loaded regardless.
    pub failures: Vec<StoreError>,
    /// Live templates made by other models (model id, count): never matched against this
    /// model's probes (their scores are not comparable, e.g. fp32 and int8 embedders); their
    /// subjects must be re-enrolled under this model, or the config switched back.
    pub other_models: Vec<(String, usize)>,
}

/// What a master key rotation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationReport {
    pub keys_rewrapped: usize,
    pub old_key_id: KeyId,
    pub new_key_id: KeyId,
}

/// What [`Store::enroll_checked`] checks a new enrollment against.
#[derive(Debug, Clone, PartialEq)]
pub struct EnrollmentCheck {
    /// The 1:1 cosine threshold of the operating point (`facegate_policy::resolve_threshold`).
    pub threshold: f32,
    /// The operator's override for one known duplicate.
    pub allow_duplicate_of: Option<DuplicateOverride>,
}

/// An operator's decision that the new subject may match `subject` (twins, a second id the
/// site needs), with the reason recorded in the audit chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DuplicateOverride {
    pub subject: SubjectId,
    pub reason: String,
}

/// The sample (0-based) that fails to match the most others at `threshold`, the samples it
/// fails against and the lowest similarity among its failures; `None` when every pair matches.
/// Ties go to the later sample (the first photo is taken as the reference).
pub fn disagreeing_sample(
    samples: &[Embedding],
    threshold: f32,
) -> Option<(usize, Vec<usize>, f32)> {
    let n = samples.len();
    let mut worst: Option<(usize, Vec<usize>, f32)> = None;
    for i in 0..n {
        let mut against = Vec::new();
        let mut lowest = f32::INFINITY;
        for j in (0..n).filter(|&j| j != i) {
            let s = samples[i].cosine(&samples[j]);
            if verification_outcome(s, threshold) == VerifyOutcome::Reject {
                against.push(j);
                lowest = lowest.min(s);
            }
        }
        if !against.is_empty() && worst.as_ref().is_none_or(|w| against.len() >= w.1.len()) {
            worst = Some((i, against, lowest));
        }
    }
    worst
}

/// The encrypted template store. See the crate docs.
pub struct Store {
    pub(crate) conn: Connection,
    pub(crate) file: PathBuf,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) policy: PolicyConfig,
    key_id: KeyId,
    keks: Keks,
    audit_key: AuditKey,
    pub(crate) cred_key: CredentialKey,
    pub(crate) row_key: RowKey,
    /// Seals this terminal's transfer secret in `settings`; MACs `transfer_consents` rows.
    transfer_keys: TransferKeys,
    state_dir: PathBuf,
    head_file: HeadFile,
    /// Whether `audit.head` is kept for this store (a missing one is then evidence).
    head_kept: bool,
    last_head_seq: u64,
    /// The time of the newest audit record: the store's clock never runs behind it.
    last_audit_at: i64,
    /// A background checkpoint retry is running.
    checkpoint_retry: Arc<std::sync::atomic::AtomicBool>,
    read_only: bool,
    gallery: Option<Gallery>,
    /// Bumped at every change of the gallery (see [`Store::gallery_generation`]).
    gallery_generation: u64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("file", &self.file)
            .field("key_id", &self.key_id)
            .field("read_only", &self.read_only)
            .field("gallery", &self.gallery)
            .finish_non_exhaustive()
    }
}

/// What a write closure sees.
pub(crate) struct Ctx<'a> {
    file: &'a Path,
    keks: &'a Keks,
    audit: &'a AuditKey,
    rows: &'a RowKey,
    transfer_rows: &'a RowKey,
    transfer_register: &'a ring::hmac::Key,
    policy: &'a PolicyConfig,
    pub(crate) now: UnixMillis,
}

impl Ctx<'_> {
    pub(crate) fn err(&self, op: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError + '_ {
        StoreError::db_at(self.file, op)
    }

    pub(crate) fn audit(&self, conn: &Connection, event: &AuditEvent) -> Result<u64, StoreError> {
        audit::append(conn, self.file, self.audit, self.now, event)
    }
}

impl Store {
    /// Opens (creating if needed) the database `facegate.db` in `state_dir`, checks it, migrates
    /// it to the current schema and checks that `master_key` is the key it was sealed with.
    ///
    /// A database whose file is not writable opens read-only: reads (listing, the gallery, audit
    /// verification) work and every write fails with [`StoreError::ReadOnly`].
    ///
    /// Opening runs `PRAGMA quick_check` (it reads every page once, about as long as loading the
    /// gallery) so that a corrupted file is reported at start-up, naming the file, rather than
    /// in the middle of a decision.
    #[tracing::instrument(skip_all, fields(state_dir = %state_dir.display()))]
    pub fn open(
        state_dir: &Path,
        master_key: &MasterKey,
        clock: Arc<dyn Clock>,
        policy: &PolicyConfig,
    ) -> Result<Self, StoreError> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(state_dir)
            .map_err(|source| StoreError::Io {
                path: state_dir.to_path_buf(),
                source,
            })?;
        // One process at a time creates or migrates the store.
        let lock = OpenLock::take(state_dir)?;
        let file = state_dir.join(DB_FILE_NAME);
        let marker = files::read_marker(state_dir)?;
        if let Some(m) = &marker
            && std::fs::metadata(&file).map_or(true, |md| md.len() == 0)
        {
            return Err(StoreError::StoreMissing {
                file,
                key_id: m.key_id.clone(),
                created_at: UnixMillis(m.created_at).rfc3339(),
            });
        }
        files::prepare_db_files(&file, true)?;
        let mut conn = Connection::open(&file).map_err(StoreError::db_at(&file, "open"))?;
        let read_only = conn
            .is_readonly("main")
            .map_err(StoreError::db_at(&file, "open"))?;
        if read_only {
            tracing::warn!(file = %file.display(), "database is read-only: serving reads, refusing writes");
        }
        schema::configure(&conn, &file, read_only)?;
        quick_check(&conn, &file)?;

        let found = schema::user_version(&conn, &file)?;
        if found < SCHEMA_VERSION && read_only {
            return Err(StoreError::ReadOnly {
                file,
                op: "migrate",
            });
        }
        schema::migrate_to(&mut conn, &file, SCHEMA_VERSION)?;

        let keks = Keks::derive(master_key);
        let key_id = master_key.id();
        let stored_id = get_setting(&conn, &file, SETTING_KEY_ID)?;
        let SecretKeys {
            audit: audit_key,
            credentials: cred_key,
            rows: row_key,
            transfer: transfer_keys,
        } = match stored_id {
            Some(expected) if expected != key_id.as_str() => {
                return Err(StoreError::WrongMasterKey {
                    expected,
                    got: key_id.to_string(),
                });
            }
            Some(_) => load_audit_key(&conn, &file, &keks)?,
            None if read_only => {
                return Err(StoreError::ReadOnly {
                    file,
                    op: "initialise",
                });
            }
            None => initialise(&mut conn, &file, &keks, &key_id, clock.now())?,
        };
        // The subject KEK is bound to the epoch the database was last re-wrapped under.
        let (keks, needs_epoch) = match get_setting(&conn, &file, SETTING_EPOCH)? {
            Some(id) => (open_epoch(state_dir, &file, &keks, &id, read_only)?, false),
            None => (keks, !read_only),
        };

        // The audit head outside the database: made with the marker, never remade after.
        let head_file = HeadFile::open(
            state_dir,
            !read_only,
            marker.is_none() && !state_dir.join(files::MARKER_FILE).exists(),
        )?;
        let mut store = Self {
            conn,
            file,
            state_dir: state_dir.to_path_buf(),
            head_file,
            head_kept: marker.is_some(),
            last_head_seq: 0,
            last_audit_at: 0,
            checkpoint_retry: Arc::default(),
            clock,
            policy: policy.clone(),
            key_id,
            keks,
            audit_key,
            cred_key,
            row_key,
            transfer_keys,
            read_only,
            gallery: None,
            gallery_generation: 0,
        };
        if marker.is_none() && !store.read_only && !state_dir.join(files::MARKER_FILE).exists() {
            // First open of this store (new, or made before the marker existed): the head file
            // first, then the marker, so a crash between leaves a store that is simply opened
            // as new again.
            store.sync_head()?;
            let created_at = get_setting(&store.conn, &store.file, SETTING_CREATED)?
                .and_then(|v| v.parse().ok())
                .unwrap_or(store.clock.now().0);
            files::write_marker(
                state_dir,
                &files::Marker {
                    key_id: store.key_id.to_string(),
                    created_at,
                },
            )?;
            store.head_kept = true;
        }
        if needs_epoch {
            // A new store, or one made before epochs: its data keys move under a first epoch.
            store.rotate_epoch("facegate", "first epoch")?;
        }
        if !store.read_only {
            let sealed = ledger::seal_unsealed(&store.conn, &store.file, &store.row_key)?;
            if sealed > 0 {
                tracing::info!(
                    rows = sealed,
                    "consent ledger rows given their integrity MAC"
                );
            }
        }
        store.last_audit_at = store
            .conn
            .query_row("SELECT COALESCE(MAX(at), 0) FROM audit", [], |r| r.get(0))
            .map_err(StoreError::db_at(&store.file, "read audit"))?;
        store.check_notice(policy, "facegate")?;
        drop(lock);
        if let Some(behind) = store.clock_behind() {
            tracing::error!(
                behind_ms = behind,
                "the clock is earlier than the newest audit record: it was set back; audit \
                 times and retention follow the newest record until the clock catches up"
            );
        }
        if found > 0 && found < SCHEMA_VERSION {
            store.record(
                AuditEvent::new(AuditKind::StoreLifecycle, "facegate", "ok")
                    .details(json!({ "migrated_from": found, "migrated_to": SCHEMA_VERSION })),
            )?;
        }
        tracing::info!(
            file = %store.file.display(),
            schema = SCHEMA_VERSION,
            key_id = %store.key_id,
            read_only,
            "store opened"
        );
        Ok(store)
    }

    /// The store's time: the clock, but never earlier than the newest audit record, so that a
    /// clock set back neither makes audit times run backwards nor stretches retention (an
    /// expired consent does not come back to life).
    pub fn now(&self) -> UnixMillis {
        UnixMillis(self.clock.now().0.max(self.last_audit_at))
    }

    /// How many milliseconds the clock is behind the newest audit record, if it is: the clock
    /// was set back (the service and `facegate doctor` report it).
    pub fn clock_behind(&self) -> Option<i64> {
        let behind = self.last_audit_at - self.clock.now().0;
        (behind > 0).then_some(behind)
    }

    /// The database file.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// The id of the master key in use.
    pub fn master_key_id(&self) -> &KeyId {
        &self.key_id
    }

    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// The policy in force.
    pub fn policy(&self) -> &PolicyConfig {
        &self.policy
    }

    /// Replaces the policy in force (a config reload), records it, and returns nothing else:
    /// call [`Store::sweep_expired`] to apply a shortened retention to stored data.
    pub fn set_policy(&mut self, policy: &PolicyConfig, operator: &str) -> Result<(), StoreError> {
        self.check_notice(policy, operator)?;
        self.record(
            AuditEvent::new(AuditKind::ConfigChange, operator, "ok")
                .details(json!({ "change": "policy reloaded" })),
        )?;
        self.policy = policy.clone();
        Ok(())
    }

    /// Art. 5: compares the notice people are told with the one recorded at the last start. A
    /// changed text under the same version (or a lower version) is refused; a new version is
    /// recorded (with its fingerprint) and audited, and `pending_notice` lists who consented
    /// under an older one.
    fn check_notice(&mut self, policy: &PolicyConfig, operator: &str) -> Result<(), StoreError> {
        let fingerprint = policy.notice_fingerprint();
        let version = policy.notice().version();
        let recorded = get_setting(&self.conn, &self.file, SETTING_NOTICE)?.and_then(|v| {
            let (ver, fp) = v.split_once(' ')?;
            Some((ver.parse::<u32>().ok()?, fp.to_owned()))
        });
        let change = match &recorded {
            Some((v, fp)) => Some(
                policy
                    .check_notice_change(*v, fp)
                    .map_err(|source| StoreError::Notice { source })?,
            ),
            None => None,
        };
        if self.read_only || matches!(change, Some(facegate_policy::NoticeChange::Unchanged)) {
            return Ok(());
        }
        let previous = recorded.as_ref().map(|(v, _)| *v);
        self.write("record notice", |tx, ctx| {
            set_setting(
                tx,
                ctx.file,
                SETTING_NOTICE,
                &format!("{version} {fingerprint}"),
            )?;
            ctx.audit(
                tx,
                &AuditEvent::new(AuditKind::ConfigChange, operator, "ok").details(json!({
                    "change": "notice",
                    "notice_version": version,
                    "previous_version": previous,
                    "fingerprint": fingerprint,
                })),
            )
        })?;
        if let Some(prev) = previous {
            tracing::warn!(
                previous = prev,
                current = version,
                "notice version changed: inform the people who consented under the old one \
                 (`facegate consent pending`)"
            );
        }
        Ok(())
    }

    /// Subjects whose live consent was given under an older notice version than the current
    /// one (Art. 5: they must be told of the change), with the version each was shown.
    pub fn pending_notice(&self) -> Result<Vec<(SubjectId, u32)>, StoreError> {
        let current = self.policy.notice().version();
        let now = self.now();
        let mut stmt = self
            .conn
            .prepare(
                "SELECT subject_id, record FROM consents
                 WHERE withdrawn_at IS NULL AND expires_at > ?1 ORDER BY subject_id, id",
            )
            .map_err(StoreError::db_at(&self.file, "read consents"))?;
        let rows = stmt
            .query_map([now.0], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })
            .map_err(StoreError::db_at(&self.file, "read consents"))?;
        let mut newest: std::collections::BTreeMap<SubjectId, u32> =
            std::collections::BTreeMap::new();
        for row in rows {
            let (subject, json) = row.map_err(StoreError::db_at(&self.file, "read consents"))?;
            let Ok(subject) = SubjectId::new(subject) else {
                continue;
            };
            let record = parse_record(&subject, &json)?;
            let e = newest.entry(subject).or_insert(0);
            *e = (*e).max(record.notice_version);
        }
        Ok(newest.into_iter().filter(|(_, v)| *v < current).collect())
    }

    pub(crate) fn write<T>(
        &mut self,
        op: &'static str,
        f: impl FnOnce(&Transaction<'_>, &Ctx<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        if self.read_only {
            return Err(StoreError::ReadOnly {
                file: self.file.clone(),
                op,
            });
        }
        let ctx = Ctx {
            file: &self.file,
            keks: &self.keks,
            audit: &self.audit_key,
            rows: &self.row_key,
            transfer_rows: &self.transfer_keys.rows,
            transfer_register: &self.transfer_keys.register,
            policy: &self.policy,
            now: self.now(),
        };
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(StoreError::db_at(&self.file, op))?;
        let now = ctx.now;
        let out = f(&tx, &ctx)?;
        tx.commit().map_err(StoreError::db_at(&self.file, op))?;
        self.last_audit_at = self.last_audit_at.max(now.0);
        if let Err(e) = self.sync_head() {
            // The commit stands; verification will report the head file as behind or missing.
            tracing::error!(error = %ErrorChain(&e), "could not record the audit head beside the database");
        }
        Ok(out)
    }

    /// Copies the chain head into `audit.head` when it moved (fsynced).
    fn sync_head(&mut self) -> Result<(), StoreError> {
        let Some((seq, mac)) = audit::db_head(&self.conn, &self.file)? else {
            return Ok(());
        };
        if seq <= self.last_head_seq && self.last_head_seq != 0 {
            return Ok(());
        }
        // Never move the outside head over evidence: if the record it names is gone or
        // different (a tail was cut and written again), it stays where it is.
        if let Some(kept) = self.head_file.read()? {
            if kept.seq >= seq {
                return Ok(());
            }
            let stored: Option<Vec<u8>> = self
                .conn
                .query_row(
                    "SELECT mac FROM audit WHERE seq = ?1",
                    [i64::try_from(kept.seq).unwrap_or(i64::MAX)],
                    |r| r.get(0),
                )
                .optional()
                .map_err(StoreError::db_at(&self.file, "read audit"))?;
            let pruned = stored.is_none() && audit::anchor_seq(&self.conn, &self.file)? >= kept.seq;
            if !pruned && stored.as_deref() != Some(kept.mac.as_slice()) {
                tracing::error!(
                    kept = kept.seq,
                    head = seq,
                    "audit chain rolled back since audit.head was written; keeping it as evidence"
                );
                self.last_head_seq = seq;
                return Ok(());
            }
        }
        let tag = self.audit_key.head_file_tag(seq, &mac);
        self.head_file.advance(&HeadRecord {
            seq,
            mac,
            tag: tag.to_vec(),
        })?;
        self.last_head_seq = seq;
        Ok(())
    }

    /// Moves the WAL into the database and truncates it, so deleted rows leave no old page
    /// images in the database file or the `-wal`. Never waits for a reader: when one holds an
    /// older snapshot, a background thread with its own connection retries until it ends.
    /// Returns whether the residue is gone now.
    fn checkpoint(&self) -> bool {
        if try_checkpoint(&self.conn) {
            return true;
        }
        tracing::warn!("WAL checkpoint blocked by a reader; retrying in the background");
        self.retry_checkpoint_in_background();
        false
    }

    fn retry_checkpoint_in_background(&self) {
        if self
            .checkpoint_retry
            .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            return; // one is running already
        }
        let file = self.file.clone();
        let running = self.checkpoint_retry.clone();
        let spawned = std::thread::Builder::new()
            .name("checkpoint-retry".into())
            .spawn(move || {
                let done = Connection::open(&file).is_ok_and(|conn| {
                    let started = std::time::Instant::now();
                    while started.elapsed() < CHECKPOINT_RETRY_FOR {
                        if try_checkpoint(&conn) {
                            return true;
                        }
                        std::thread::sleep(std::time::Duration::from_millis(200));
                    }
                    false
                });
                if done {
                    tracing::info!("WAL checkpoint completed: deleted pages are gone from the files");
                } else {
                    tracing::error!("WAL checkpoint still blocked after 10 minutes; a reader keeps an old snapshot open");
                }
                running.store(false, std::sync::atomic::Ordering::SeqCst);
            });
        if spawned.is_err() {
            self.checkpoint_retry
                .store(false, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// Waits up to `timeout` for the residue of removed rows to leave the database file and
    /// the WAL (a checkpoint that no reader blocks). For commands that must not report a
    /// withdrawal done before it is (`facegate consent withdraw`).
    pub fn clear_residue(&self, timeout: std::time::Duration) -> bool {
        let started = std::time::Instant::now();
        loop {
            if try_checkpoint(&self.conn) {
                return true;
            }
            if started.elapsed() >= timeout {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

// ----- helpers -----------------------------------------------------------------------------

struct TemplateRow {
    template: TemplateId,
    subject: String,
    model_id: String,
    dim: i64,
    seal_version: i64,
    nonce: Vec<u8>,
    sealed: Vec<u8>,
    key_nonce: Option<Vec<u8>>,
    key_wrapped: Option<Vec<u8>>,
}

impl TemplateRow {
    fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            template: TemplateId(u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0)),
            subject: r.get(1)?,
            model_id: r.get(2)?,
            dim: r.get(3)?,
            seal_version: r.get(4)?,
            nonce: r.get(5)?,
            sealed: r.get(6)?,
            key_nonce: r.get(7)?,
            key_wrapped: r.get(8)?,
        })
    }
}

fn open_row(
    data_key: &Secret,
    row: &TemplateRow,
    subject: &SubjectId,
    dim: usize,
) -> Result<Embedding, StoreError> {
    let format = |reason| StoreError::TemplateFormat {
        template: row.template,
        subject: subject.clone(),
        reason,
    };
    if usize::try_from(row.dim).ok() != Some(dim) {
        return Err(format("dimension differs from the gallery's"));
    }
    let binding = TemplateBinding {
        template: row.template,
        subject,
        model_id: &row.model_id,
        seal_version: u32::try_from(row.seal_version).unwrap_or(u32::MAX),
    };
    let values = seal::open_template(data_key, binding, &row.nonce, &row.sealed).map_err(|_| {
        StoreError::TemplateOpen {
            template: row.template,
            subject: subject.clone(),
            model_id: row.model_id.clone(),
        }
    })?;
    if values.len() != dim {
        return Err(format("sealed length differs from its dimension"));
    }
    Embedding::from_raw(values.to_vec()).map_err(|_| format("not a valid embedding"))
}

/// `StoreError` is not `Clone` (it carries `io::Error`s); key errors are simple to rebuild.
fn clone_key_error(e: &StoreError, subject: &SubjectId) -> StoreError {
    match e {
        StoreError::NoSubjectKey { .. } => StoreError::NoSubjectKey {
            subject: subject.clone(),
        },
        _ => StoreError::SubjectKey {
            subject: subject.clone(),
        },
    }
}

pub(crate) fn parse_record(subject: &SubjectId, json: &str) -> Result<ConsentRecord, StoreError> {
    serde_json::from_str(json).map_err(|source| StoreError::ConsentRecord {
        subject: subject.clone(),
        source,
    })
}

/// Inserts the subject row if needed and the consent if this exact record is not in the ledger
/// yet (recording it in the audit trail). Returns the ledger id and the ledger's expiry.
fn upsert_consent(
    tx: &Transaction<'_>,
    ctx: &Ctx<'_>,
    consent: &Consent,
) -> Result<(ConsentId, UnixMillis), StoreError> {
    let record = consent.record();
    let subject = consent.subject();
    let json = serde_json::to_string(record).map_err(|source| StoreError::ConsentRecord {
        subject: subject.clone(),
        source,
    })?;
    tx.execute(
        "INSERT INTO subjects (id, age_years, created_at) VALUES (?1, ?2, ?3)
         ON CONFLICT(id) DO UPDATE SET age_years = excluded.age_years",
        params![subject.as_str(), record.age_years, ctx.now.0],
    )
    .map_err(ctx.err("insert subject"))?;
    let existing: Option<(i64, i64)> = tx
        .query_row(
            "SELECT id, expires_at FROM consents WHERE subject_id = ?1 AND record = ?2
             AND withdrawn_at IS NULL",
            params![subject.as_str(), json],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(ctx.err("read consent"))?;
    if let Some((id, expires_at)) = existing {
        // The ledger's expiry wins: it may have been shortened by a sweep, and it is never
        // lengthened (people were told the retention in force when they consented).
        return Ok((ConsentId(id), UnixMillis(expires_at)));
    }
    tx.execute(
        "INSERT INTO consents (subject_id, record, granted_at, expires_at) VALUES (?1, ?2, ?3, ?4)",
        params![
            subject.as_str(),
            json,
            record.granted_at.0,
            consent.expires_at().0
        ],
    )
    .map_err(ctx.err("insert consent"))?;
    let id = ConsentId(tx.last_insert_rowid());
    ledger::reseal_subject(tx, ctx.file, ctx.rows, subject.as_str())?;
    let expires_at = consent.expires_at();
    ctx.audit(
        tx,
        &AuditEvent::new(AuditKind::Consent, &record.operator, "ok")
            .subject(subject)
            .details(json!({
                "consent": id.0,
                "notice_version": record.notice_version,
                "method": record.method,
                "guardian": record.guardian.is_some(),
                "granted_at": record.granted_at.0,
                "expires_at": expires_at.0,
            })),
    )?;
    Ok((id, expires_at))
}

fn load_subject_key(
    conn: &Connection,
    file: &Path,
    keks: &Keks,
    subject: &SubjectId,
) -> Result<Option<Secret>, StoreError> {
    let row: Option<(Vec<u8>, Vec<u8>)> = conn
        .query_row(
            "SELECT nonce, wrapped FROM subject_keys WHERE subject_id = ?1",
            [subject.as_str()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(StoreError::db_at(file, "read data key"))?;
    let Some((nonce, wrapped)) = row else {
        return Ok(None);
    };
    keks.unwrap_subject_key(subject, &nonce, &wrapped)
        .map(Some)
        .map_err(|_| StoreError::SubjectKey {
            subject: subject.clone(),
        })
}

fn create_subject_key(
    tx: &Transaction<'_>,
    ctx: &Ctx<'_>,
    subject: &SubjectId,
) -> Result<Secret, StoreError> {
    let key = seal::random_secret().map_err(|_| StoreError::Random { what: "a data key" })?;
    let (nonce, wrapped) = ctx
        .keks
        .wrap_subject_key(subject, &key)
        .map_err(|_| StoreError::Random { what: "a nonce" })?;
    tx.execute(
        "INSERT INTO subject_keys (subject_id, nonce, wrapped, created_at) VALUES (?1, ?2, ?3, ?4)",
        params![subject.as_str(), nonce.as_slice(), wrapped, ctx.now.0],
    )
    .map_err(ctx.err("insert data key"))?;
    Ok(key)
}

fn remove_templates_and_key(
    tx: &Transaction<'_>,
    ctx: &Ctx<'_>,
    subject: &SubjectId,
) -> Result<RemovalReport, StoreError> {
    let templates_deleted = tx
        .execute(
            "DELETE FROM templates WHERE subject_id = ?1",
            [subject.as_str()],
        )
        .map_err(ctx.err("delete templates"))?;
    let keys = tx
        .execute(
            "DELETE FROM subject_keys WHERE subject_id = ?1",
            [subject.as_str()],
        )
        .map_err(ctx.err("delete data key"))?;
    Ok(RemovalReport {
        templates_deleted,
        consents_affected: 0,
        key_destroyed: keys > 0,
        copies_sealed: false,
        residue_cleared: false,
    })
}

/// The KEKs of the epoch `id` the database records: `epoch.key`, or `epoch.key.next` when a
/// re-wrap committed but the rename did not happen (it is completed now).
fn open_epoch(
    state_dir: &Path,
    file: &Path,
    base: &Keks,
    id: &str,
    read_only: bool,
) -> Result<Keks, StoreError> {
    if let Some(cur) = files::read_epoch(state_dir, files::EPOCH_FILE)?
        && seal::epoch_id(&cur) == id
    {
        if !read_only {
            files::discard_epoch_next(state_dir);
        }
        return Ok(base.for_epoch(&cur));
    }
    if let Some(next) = files::read_epoch(state_dir, files::EPOCH_NEXT_FILE)?
        && seal::epoch_id(&next) == id
    {
        if !read_only {
            files::promote_epoch(state_dir)?;
        }
        return Ok(base.for_epoch(&next));
    }
    Err(StoreError::EpochMismatch {
        file: file.to_path_buf(),
        epoch_file: state_dir.join(files::EPOCH_FILE),
    })
}

/// Re-wraps every subject data key from `from` to `to` (inside the caller's transaction).
fn rewrap_all(
    tx: &Transaction<'_>,
    file: &Path,
    from: &Keks,
    to: &Keks,
) -> Result<usize, StoreError> {
    let err = |op| StoreError::db_at(file, op);
    let keys: Vec<(String, Vec<u8>, Vec<u8>)> = {
        let mut stmt = tx
            .prepare("SELECT subject_id, nonce, wrapped FROM subject_keys")
            .map_err(err("read data keys"))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(err("read data keys"))?;
        rows.collect::<Result<_, _>>()
            .map_err(err("read data keys"))?
    };
    for (subject, nonce, wrapped) in &keys {
        let subject = SubjectId::new(subject.clone()).map_err(|_| StoreError::Setting {
            file: file.to_path_buf(),
            key: "subject_keys.subject_id",
            reason: "holds an invalid subject id",
        })?;
        let key = from
            .unwrap_subject_key(&subject, nonce, wrapped)
            .map_err(|_| StoreError::SubjectKey {
                subject: subject.clone(),
            })?;
        let (n, w) = to
            .wrap_subject_key(&subject, &key)
            .map_err(|_| StoreError::Random { what: "a nonce" })?;
        tx.execute(
            "UPDATE subject_keys SET nonce = ?2, wrapped = ?3 WHERE subject_id = ?1",
            params![subject.as_str(), n.as_slice(), w],
        )
        .map_err(err("re-wrap data key"))?;
    }
    Ok(keys.len())
}

/// How long a background checkpoint retry keeps trying.
const CHECKPOINT_RETRY_FOR: std::time::Duration = std::time::Duration::from_secs(600);

/// One `wal_checkpoint(TRUNCATE)` that does not wait for readers: true when it completed.
fn try_checkpoint(conn: &Connection) -> bool {
    let _ = conn.busy_timeout(std::time::Duration::ZERO);
    let r: rusqlite::Result<(i64, i64, i64)> =
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        });
    let _ = conn.busy_timeout(crate::schema::BUSY_TIMEOUT);
    match r {
        Ok((0, log, done)) => log == done || log <= 0,
        Ok(_) => false,
        Err(e) => {
            tracing::debug!(error = %ErrorChain(&e), "WAL checkpoint did not run");
            false
        }
    }
}

fn validate_model_id(id: &str) -> Result<(), StoreError> {
    if id.is_empty() {
        return Err(StoreError::InvalidModelId { reason: "empty" });
    }
    if id.len() > 64 {
        return Err(StoreError::InvalidModelId {
            reason: "longer than 64 characters",
        });
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-' | b'+'))
    {
        return Err(StoreError::InvalidModelId {
            reason: "character outside the allowed set",
        });
    }
    Ok(())
}

fn quick_check(conn: &Connection, file: &Path) -> Result<(), StoreError> {
    let msg: String = conn
        .query_row("PRAGMA quick_check(1)", [], |r| r.get(0))
        .map_err(StoreError::db_at(file, "quick_check"))?;
    if msg == "ok" {
        Ok(())
    } else {
        Err(StoreError::Corrupt {
            file: file.to_path_buf(),
            detail: msg,
        })
    }
}

fn get_setting(conn: &Connection, file: &Path, key: &str) -> Result<Option<String>, StoreError> {
    conn.query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| {
        r.get(0)
    })
    .optional()
    .map_err(StoreError::db_at(file, "read setting"))
}

fn set_setting(conn: &Connection, file: &Path, key: &str, value: &str) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO settings (key, value) VALUES (?1, ?2)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        params![key, value],
    )
    .map_err(StoreError::db_at(file, "write setting"))?;
    Ok(())
}

fn store_audit_secret(
    conn: &Connection,
    file: &Path,
    keks: &Keks,
    secret: &Secret,
) -> Result<(), StoreError> {
    let (nonce, wrapped) = keks
        .wrap_audit_key(secret)
        .map_err(|_| StoreError::Random { what: "a nonce" })?;
    let value = format!("{}:{}", hex::encode(nonce), hex::encode(wrapped));
    set_setting(conn, file, SETTING_AUDIT_KEY, &value)
}

fn unwrap_audit_secret(conn: &Connection, file: &Path, keks: &Keks) -> Result<Secret, StoreError> {
    let missing = |reason| StoreError::Setting {
        file: file.to_path_buf(),
        key: SETTING_AUDIT_KEY,
        reason,
    };
    let value = get_setting(conn, file, SETTING_AUDIT_KEY)?.ok_or(missing("is missing"))?;
    let (n, w) = value.split_once(':').ok_or(missing("is malformed"))?;
    let nonce = hex::decode(n).map_err(|_| missing("is malformed"))?;
    let wrapped = hex::decode(w).map_err(|_| missing("is malformed"))?;
    keks.unwrap_audit_key(&nonce, &wrapped)
        .map_err(|_| StoreError::AuditKey {
            file: file.to_path_buf(),
        })
}

/// The keys derived from the wrapped audit secret.
struct SecretKeys {
    audit: AuditKey,
    credentials: CredentialKey,
    rows: RowKey,
    transfer: TransferKeys,
}

/// The keys of the transfer section (see `store/transfer.rs`).
pub(crate) struct TransferKeys {
    pub(crate) wrap: ring::aead::LessSafeKey,
    pub(crate) rows: RowKey,
    /// MACs `transfers` rows.
    pub(crate) register: ring::hmac::Key,
}

impl SecretKeys {
    fn derive(secret: &Secret) -> Self {
        Self {
            audit: AuditKey::new(secret),
            credentials: CredentialKey::derive(secret),
            rows: RowKey::derive(secret),
            transfer: TransferKeys {
                wrap: seal::derived_aead_key(secret, b"facegate-store/terminal-key-wrap/v1"),
                rows: RowKey::derive_for(secret, b"facegate-transfer-consent-row/v1"),
                register: seal::derived_hmac_key(secret, b"facegate-transfer-register-row/v1"),
            },
        }
    }
}

/// The audit chain key, the credential digest key and the other keys of the audit secret.
fn load_audit_key(conn: &Connection, file: &Path, keks: &Keks) -> Result<SecretKeys, StoreError> {
    let secret = unwrap_audit_secret(conn, file, keks)?;
    Ok(SecretKeys::derive(&secret))
}

/// First open of a new database: key id, wrapped audit key, chain genesis, first record.
fn initialise(
    conn: &mut Connection,
    file: &Path,
    keks: &Keks,
    key_id: &KeyId,
    now: UnixMillis,
) -> Result<SecretKeys, StoreError> {
    let secret = seal::random_secret().map_err(|_| StoreError::Random {
        what: "the audit key",
    })?;
    let key = AuditKey::new(&secret);
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(StoreError::db_at(file, "initialise"))?;
    set_setting(&tx, file, SETTING_KEY_ID, key_id.as_str())?;
    set_setting(&tx, file, SETTING_CREATED, &now.0.to_string())?;
    store_audit_secret(&tx, file, keks, &secret)?;
    audit::init(&tx, file, &key)?;
    audit::append(
        &tx,
        file,
        &key,
        now,
        &AuditEvent::new(AuditKind::StoreLifecycle, "facegate", "ok").details(json!({
            "created": true,
            "schema_version": SCHEMA_VERSION,
            "master_key_id": key_id.as_str(),
        })),
    )?;
    tx.commit().map_err(StoreError::db_at(file, "initialise"))?;
    Ok(SecretKeys::derive(&secret))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn model_ids_are_validated() {
        assert!(validate_model_id("arcface-r100:v1.2").is_ok());
        assert!(validate_model_id("").is_err());
        assert!(validate_model_id("a b").is_err());
        assert!(validate_model_id(&"m".repeat(65)).is_err());
    }
}
