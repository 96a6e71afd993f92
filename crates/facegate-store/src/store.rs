//! [`Store`]: the database, the consent ledger, enrollment, withdrawal, deletion, retention,
//! master key rotation and the audit trail, with the gallery kept in step.

use facegate_types::ErrorChain;
use std::fs::DirBuilder;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use facegate_policy::{
    Consent, ConsentRecord, FilingStatus, PolicyConfig, VerifyOutcome, Withdrawal,
    verification_outcome,
};
use facegate_types::{Clock, Embedding, SubjectId, TemplateId, UnixMillis};
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
        let (audit_key, cred_key, row_key) = match stored_id {
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

    // ----- consent and enrollment ----------------------------------------------------------

    /// Records a consent in the ledger (Art. 6, 7), before or independently of enrollment.
    pub fn record_consent(&mut self, consent: &Consent) -> Result<ConsentId, StoreError> {
        let now = self.now();
        self.check_consent(consent, now, AuditKind::Consent)?;
        let subject = consent.subject().clone();
        let id = self.write("record consent", |tx, ctx| {
            let (id, _) = upsert_consent(tx, ctx, consent)?;
            Ok(id)
        })?;
        tracing::info!(subject = %subject, consent = id.0, "consent recorded");
        Ok(id)
    }

    /// Refuses a consent that is not live now or that the ledger shows as withdrawn later.
    fn check_consent(
        &mut self,
        consent: &Consent,
        now: UnixMillis,
        kind: AuditKind,
    ) -> Result<(), StoreError> {
        let subject = consent.subject().clone();
        let refusal = if !consent.is_live(now) {
            Some(StoreError::ConsentNotLive {
                subject: subject.clone(),
                expires_at: consent.expires_at(),
                now,
            })
        } else {
            let withdrawn: Option<i64> = self
                .conn
                .query_row(
                    "SELECT withdrawn_at FROM subjects WHERE id = ?1",
                    [subject.as_str()],
                    |r| r.get(0),
                )
                .optional()
                .map_err(StoreError::db_at(&self.file, "read subject"))?
                .flatten();
            withdrawn
                .filter(|&w| w >= consent.record().granted_at.0)
                .map(|w| StoreError::ConsentWithdrawn {
                    subject: subject.clone(),
                    withdrawn_at: UnixMillis(w),
                })
        };
        match refusal {
            None => Ok(()),
            Some(e) => {
                if !self.read_only {
                    let ev = AuditEvent::new(kind, &consent.record().operator, "refused")
                        .subject(&subject)
                        .details(json!({ "reason": ErrorChain(&e).to_string() }));
                    if let Err(a) = self.record(ev) {
                        tracing::warn!(subject = %subject, error = %ErrorChain(&a), "could not record a refused enrollment");
                    }
                }
                Err(e)
            }
        }
    }

    /// Enrolls one template for the consent's subject: the samples (one or several embeddings
    /// of the same person from one model) are fused into their renormalised mean.
    ///
    /// Refuses unless the consent is live now and not withdrawn since. The subject row, its data
    /// key (created on first enrollment), the consent and the sealed template are written in one
    /// transaction together with the audit record; the gallery is updated after the commit when
    /// it holds `model_id`. Returns the new template's id.
    ///
    /// This writes what it is given: an operator's enrollment goes through
    /// [`Store::enroll_checked`], which first checks the samples against each other and the
    /// gallery.
    #[tracing::instrument(skip_all, fields(subject = %consent.subject(), model_id))]
    pub fn enroll(
        &mut self,
        consent: &Consent,
        samples: &[Embedding],
        model_id: &str,
    ) -> Result<TemplateId, StoreError> {
        self.enroll_with(consent, samples, model_id, None)
    }

    /// Enrollment that cannot be poisoned: before [`Store::enroll`] writes anything,
    ///
    /// - every sample must match every other at `check.threshold` (the 1:1 operating point,
    ///   decided by `facegate_policy::verification_outcome` as a verification is), so photos of
    ///   two people never fuse into one template; otherwise [`StoreError::SamplesDisagree`]
    ///   names the sample that disagrees with the most others;
    /// - the fused template and each sample are identified against the gallery of `model_id`
    ///   (loaded if it is not): a match with *another* subject at the threshold is
    ///   [`StoreError::DuplicateFace`] naming that subject, unless `check.allow_duplicate_of`
    ///   names exactly that subject, in which case the enrollment goes ahead and its audit
    ///   record carries the subject, the similarity and the operator's reason. Matching the
    ///   subject's own templates (re-enrollment) is fine.
    ///
    /// Refusals are recorded in the audit chain like a refused consent.
    #[tracing::instrument(skip_all, fields(subject = %consent.subject(), model_id))]
    pub fn enroll_checked(
        &mut self,
        consent: &Consent,
        samples: &[Embedding],
        model_id: &str,
        check: &EnrollmentCheck,
    ) -> Result<TemplateId, StoreError> {
        validate_model_id(model_id)?;
        let t = check.threshold;
        if !(t.is_finite() && (-1.0..=1.0).contains(&t)) {
            return Err(StoreError::InvalidThreshold { threshold: t });
        }
        let subject = consent.subject().clone();
        let operator = consent.record().operator.clone();
        let refuse = |store: &mut Self, e: StoreError| {
            if !store.read_only {
                let ev = AuditEvent::new(AuditKind::Enroll, &operator, "refused")
                    .subject(&subject)
                    .details(json!({ "reason": ErrorChain(&e).to_string() }));
                if let Err(a) = store.record(ev) {
                    tracing::warn!(subject = %subject, error = %ErrorChain(&a), "could not record a refused enrollment");
                }
            }
            Err(e)
        };
        if let Some((sample, others, lowest)) = disagreeing_sample(samples, t) {
            let e = StoreError::SamplesDisagree {
                subject: subject.clone(),
                sample: sample + 1,
                others: others.iter().map(|o| o + 1).collect(),
                lowest,
                threshold: t,
            };
            return refuse(self, e);
        }
        let fused = Embedding::mean(samples).map_err(|source| StoreError::Embedding {
            subject: subject.clone(),
            source,
        })?;
        if self
            .gallery
            .as_ref()
            .is_none_or(|g| g.model_id() != model_id)
        {
            let load = self.load_gallery(model_id, fused.dim())?;
            for f in &load.failures {
                tracing::warn!(failure = %ErrorChain(f), "a template could not be opened for the duplicate search");
            }
        }
        let mut duplicate: Option<(SubjectId, f32)> = None;
        if let Some(g) = self.gallery.as_ref() {
            for probe in std::iter::once(&fused).chain(samples) {
                let found = g.identify(probe, 3, SearchMode::Exact)?;
                for hit in found.hits.iter().filter(|h| h.subject != subject) {
                    if verification_outcome(hit.score, t) == VerifyOutcome::Accept
                        && duplicate.as_ref().is_none_or(|(_, s)| hit.score > *s)
                    {
                        duplicate = Some((hit.subject.clone(), hit.score));
                    }
                }
            }
        }
        let extra = match duplicate {
            None => None,
            Some((existing, score)) => match &check.allow_duplicate_of {
                Some(o) if o.subject == existing => Some(json!({
                    "duplicate_of": existing,
                    "similarity": score,
                    "override_reason": o.reason,
                })),
                _ => {
                    let e = StoreError::DuplicateFace {
                        subject: subject.clone(),
                        existing,
                        score,
                        threshold: t,
                    };
                    return refuse(self, e);
                }
            },
        };
        self.enroll_with(consent, samples, model_id, extra)
    }

    fn enroll_with(
        &mut self,
        consent: &Consent,
        samples: &[Embedding],
        model_id: &str,
        extra: Option<serde_json::Value>,
    ) -> Result<TemplateId, StoreError> {
        validate_model_id(model_id)?;
        let subject = consent.subject().clone();
        let fused = Embedding::mean(samples).map_err(|source| StoreError::Embedding {
            subject: subject.clone(),
            source,
        })?;
        if let Some(g) = self.gallery.as_ref()
            && g.model_id() == model_id
            && g.dim() != fused.dim()
        {
            return Err(StoreError::DimensionMismatch {
                expected: g.dim(),
                got: fused.dim(),
            });
        }
        let now = self.now();
        self.check_consent(consent, now, AuditKind::Enroll)?;
        let record = consent.record();
        let expires_at = consent.expires_at().min(
            self.policy
                .retention_until(record.granted_at, record.age_years),
        );
        if expires_at <= now {
            return Err(StoreError::ConsentNotLive {
                subject,
                expires_at,
                now,
            });
        }

        let template = self.write("enroll", |tx, ctx| {
            let (consent_id, ledger_expiry) = upsert_consent(tx, ctx, consent)?;
            let expires_at = expires_at.min(ledger_expiry);
            if expires_at <= ctx.now {
                return Err(StoreError::ConsentNotLive {
                    subject: subject.clone(),
                    expires_at,
                    now: ctx.now,
                });
            }
            let data_key = match load_subject_key(tx, ctx.file, ctx.keks, &subject)? {
                Some(k) => k,
                None => create_subject_key(tx, ctx, &subject)?,
            };
            tx.execute(
                "INSERT INTO templates (subject_id, consent_id, model_id, dim, seal_version, nonce,
                                        sealed, created_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, x'', x'', ?6, ?7)",
                params![
                    subject.as_str(),
                    consent_id.0,
                    model_id,
                    fused.dim() as i64,
                    SEAL_VERSION,
                    ctx.now.0,
                    expires_at.0
                ],
            )
            .map_err(ctx.err("insert template"))?;
            let template = TemplateId(u64::try_from(tx.last_insert_rowid()).unwrap_or(0));
            let binding = TemplateBinding {
                template,
                subject: &subject,
                model_id,
                seal_version: SEAL_VERSION,
            };
            let (nonce, sealed) = seal::seal_template(&data_key, binding, fused.as_slice())
                .map_err(|_| StoreError::Random { what: "a nonce" })?;
            tx.execute(
                "UPDATE templates SET nonce = ?1, sealed = ?2 WHERE id = ?3",
                params![nonce.as_slice(), sealed, template.0 as i64],
            )
            .map_err(ctx.err("seal template"))?;
            let mut details = json!({
                "template": template.0,
                "consent": consent_id.0,
                "model_id": model_id,
                "samples": samples.len(),
                "expires_at": expires_at.0,
            });
            if let (Some(d), Some(serde_json::Value::Object(more))) =
                (details.as_object_mut(), extra.clone())
            {
                d.extend(more);
            }
            let outcome = if extra.is_some() {
                "ok_duplicate_allowed"
            } else {
                "ok"
            };
            ctx.audit(
                tx,
                &AuditEvent::new(AuditKind::Enroll, &record.operator, outcome)
                    .subject(&subject)
                    .details(details),
            )?;
            Ok(template)
        })?;

        if let Some(g) = self.gallery.as_mut().filter(|g| g.model_id() == model_id) {
            g.insert(&subject, template, &fused)?;
            self.gallery_generation += 1;
        }
        tracing::info!(subject = %subject, template = %template, model_id, "enrolled");
        Ok(template)
    }

    /// The subject's live consent from the ledger, rebuilt through the policy (for example to
    /// enroll another template without asking again). `None` if there is none.
    pub fn live_consent(&self, subject: &SubjectId) -> Result<Option<Consent>, StoreError> {
        Ok(match self.consent_status(subject)? {
            ConsentStatus::Live(c) => Some(c),
            _ => None,
        })
    }

    // ----- withdrawal, deletion, retention -------------------------------------------------

    /// Withdrawal (Art. 6): deletes the subject's templates and data key at once, marks its
    /// consents withdrawn (the ledger keeps them: earlier processing stays lawful), records it.
    #[tracing::instrument(skip_all, fields(subject = %withdrawal.subject))]
    pub fn withdraw(&mut self, withdrawal: &Withdrawal) -> Result<RemovalReport, StoreError> {
        let subject = withdrawal.subject.clone();
        self.require_subject(&subject)?;
        let details = json!({
            "at": withdrawal.at.0,
            "operator": withdrawal.operator,
            "method": withdrawal.method,
        });
        let report = self.write("withdraw", |tx, ctx| {
            let mut report = remove_templates_and_key(tx, ctx, &subject)?;
            report.consents_affected = tx
                .execute(
                    "UPDATE consents SET withdrawn_at = ?2, withdrawal = ?3
                     WHERE subject_id = ?1 AND withdrawn_at IS NULL",
                    params![subject.as_str(), withdrawal.at.0, details.to_string()],
                )
                .map_err(ctx.err("withdraw consent"))?;
            ledger::reseal_subject(tx, ctx.file, ctx.rows, subject.as_str())?;
            tx.execute(
                "UPDATE subjects SET withdrawn_at = MAX(COALESCE(withdrawn_at, ?2), ?2)
                 WHERE id = ?1",
                params![subject.as_str(), withdrawal.at.0],
            )
            .map_err(ctx.err("withdraw consent"))?;
            ctx.audit(
                tx,
                &AuditEvent::new(AuditKind::Withdrawal, &withdrawal.operator, "ok")
                    .subject(&subject)
                    .details(json!({
                        "templates_deleted": report.templates_deleted,
                        "consents_withdrawn": report.consents_affected,
                        "method": withdrawal.method,
                        "at": withdrawal.at.0,
                    })),
            )?;
            Ok(report)
        })?;
        let mut report = report;
        self.after_removal(&subject, &withdrawal.operator, &mut report);
        tracing::info!(
            subject = %subject,
            templates_deleted = report.templates_deleted,
            "consent withdrawn; templates and data key deleted"
        );
        Ok(report)
    }

    /// Erases a subject completely: templates, data key, consent ledger rows and the subject
    /// row. The audit trail keeps the processing record (ids only), as Art. 9 requires.
    #[tracing::instrument(skip_all, fields(subject = %subject))]
    pub fn delete_subject(
        &mut self,
        subject: &SubjectId,
        operator: &str,
        reason: &str,
    ) -> Result<RemovalReport, StoreError> {
        self.require_subject(subject)?;
        let report = self.write("delete subject", |tx, ctx| {
            let mut report = remove_templates_and_key(tx, ctx, subject)?;
            report.consents_affected = tx
                .execute(
                    "DELETE FROM consents WHERE subject_id = ?1",
                    [subject.as_str()],
                )
                .map_err(ctx.err("delete consents"))?;
            tx.execute("DELETE FROM subjects WHERE id = ?1", [subject.as_str()])
                .map_err(ctx.err("delete subject"))?;
            ctx.audit(
                tx,
                &AuditEvent::new(AuditKind::Deletion, operator, "ok")
                    .subject(subject)
                    .details(json!({
                        "templates_deleted": report.templates_deleted,
                        "consents_deleted": report.consents_affected,
                        "reason": reason,
                    })),
            )?;
            Ok(report)
        })?;
        let mut report = report;
        self.after_removal(subject, operator, &mut report);
        tracing::info!(subject = %subject, templates_deleted = report.templates_deleted, "subject deleted");
        Ok(report)
    }

    fn require_subject(&self, subject: &SubjectId) -> Result<(), StoreError> {
        let exists: bool = self
            .conn
            .query_row(
                "SELECT EXISTS(SELECT 1 FROM subjects WHERE id = ?1)",
                [subject.as_str()],
                |r| r.get(0),
            )
            .map_err(StoreError::db_at(&self.file, "read subject"))?;
        if exists {
            Ok(())
        } else {
            Err(StoreError::UnknownSubject {
                subject: subject.clone(),
            })
        }
    }

    /// After a withdrawal or deletion committed: out of the gallery, a new epoch (so copies
    /// of the database made before cannot open the subject), and the freed pages out of the
    /// files.
    fn after_removal(&mut self, subject: &SubjectId, operator: &str, report: &mut RemovalReport) {
        if let Some(g) = self.gallery.as_mut() {
            g.remove_subject(subject);
            self.gallery_generation += 1;
        }
        report.copies_sealed = match self.rotate_epoch(operator, "subject removed") {
            Ok(_) => true,
            Err(e) => {
                tracing::error!(subject = %subject, error = %ErrorChain(&e), "epoch rotation after a removal failed; older copies of the database still hold this subject's key");
                false
            }
        };
        report.residue_cleared = self.checkpoint();
    }

    /// Retention (Art. 8): re-evaluates every live consent's expiry under the current policy
    /// (a shortened retention applies to stored data), then deletes every template whose expiry
    /// has passed, and the data key of every subject left without templates. Run at start-up and
    /// on a schedule.
    #[tracing::instrument(skip_all)]
    pub fn sweep_expired(&mut self) -> Result<SweepReport, StoreError> {
        let (report, templates) = self.write("retention sweep", |tx, ctx| {
            let mut report = SweepReport::default();
            // 1. Bring live consents' expiries forward where the current policy is shorter. Each
            //    consent is judged by its own record (granted_at, age_years).
            let live: Vec<(i64, String, String, i64)> = {
                let mut stmt = tx
                    .prepare(
                        "SELECT c.id, c.subject_id, c.record, c.expires_at FROM consents c
                         WHERE c.withdrawn_at IS NULL AND c.expires_at > ?1",
                    )
                    .map_err(ctx.err("read consents"))?;
                let rows = stmt
                    .query_map([ctx.now.0], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                    })
                    .map_err(ctx.err("read consents"))?;
                rows.collect::<Result<_, _>>()
                    .map_err(ctx.err("read consents"))?
            };
            for (id, subject, json, expires_at) in live {
                let subject = SubjectId::new(subject).map_err(|_| StoreError::Setting {
                    file: ctx.file.to_path_buf(),
                    key: "consents.subject_id",
                    reason: "holds an invalid subject id",
                })?;
                let record = parse_record(&subject, &json)?;
                let now_until = ctx
                    .policy
                    .retention_until(record.granted_at, record.age_years);
                if now_until.0 < expires_at {
                    tx.execute(
                        "UPDATE consents SET expires_at = ?2 WHERE id = ?1",
                        params![id, now_until.0],
                    )
                    .map_err(ctx.err("shorten retention"))?;
                    ledger::reseal_subject(tx, ctx.file, ctx.rows, subject.as_str())?;
                    report.expiries_shortened += 1;
                }
            }
            // Templates never outlive their consent.
            tx.execute(
                "UPDATE templates SET expires_at =
                     (SELECT c.expires_at FROM consents c WHERE c.id = templates.consent_id)
                 WHERE expires_at >
                     (SELECT c.expires_at FROM consents c WHERE c.id = templates.consent_id)",
                [],
            )
            .map_err(ctx.err("shorten retention"))?;

            // 2. Delete expired templates.
            let expired: Vec<(String, i64)> = {
                let mut stmt = tx
                    .prepare(
                        "SELECT subject_id, id FROM templates WHERE expires_at <= ?1
                         ORDER BY subject_id, id",
                    )
                    .map_err(ctx.err("find expired"))?;
                let rows = stmt
                    .query_map([ctx.now.0], |r| Ok((r.get(0)?, r.get(1)?)))
                    .map_err(ctx.err("find expired"))?;
                rows.collect::<Result<_, _>>()
                    .map_err(ctx.err("find expired"))?
            };
            report.templates_deleted = tx
                .execute("DELETE FROM templates WHERE expires_at <= ?1", [ctx.now.0])
                .map_err(ctx.err("delete expired"))?;

            // 3. Crypto-shred the keys of subjects left without templates.
            report.keys_destroyed = tx
                .execute(
                    "DELETE FROM subject_keys
                     WHERE subject_id NOT IN (SELECT subject_id FROM templates)",
                    [],
                )
                .map_err(ctx.err("delete expired keys"))?;

            // 4. Credentials past their own retention.
            report.credentials_deleted = credentials::sweep(tx, ctx.file, ctx.now)?;

            // One record per subject, listing the template ids removed.
            let templates: Vec<TemplateId> = expired
                .iter()
                .map(|(_, id)| TemplateId(u64::try_from(*id).unwrap_or(0)))
                .collect();
            for group in expired.chunk_by(|a, b| a.0 == b.0) {
                let Ok(subject) = SubjectId::new(group[0].0.clone()) else {
                    continue;
                };
                let ids: Vec<i64> = group.iter().map(|(_, id)| *id).collect();
                ctx.audit(
                    tx,
                    &AuditEvent::new(AuditKind::Expiry, "retention-sweeper", "ok")
                        .subject(&subject)
                        .details(json!({ "templates_deleted": ids })),
                )?;
                report.subjects_affected += 1;
            }
            if report != SweepReport::default() {
                ctx.audit(
                    tx,
                    &AuditEvent::new(AuditKind::Expiry, "retention-sweeper", "ok").details(json!({
                        "templates_deleted": report.templates_deleted,
                        "subjects": report.subjects_affected,
                        "expiries_shortened": report.expiries_shortened,
                        "keys_destroyed": report.keys_destroyed,
                        "credentials_deleted": report.credentials_deleted,
                    })),
                )?;
            }
            Ok((report, templates))
        })?;
        if report.templates_deleted > 0 || report.keys_destroyed > 0 {
            // Only the expired templates leave the gallery: a subject may hold newer ones.
            if let Some(g) = self.gallery.as_mut() {
                self.gallery_generation += 1;
                for t in &templates {
                    g.remove_template(*t);
                }
            }
            if report.keys_destroyed > 0
                && let Err(e) = self.rotate_epoch("retention-sweeper", "expired subjects removed")
            {
                tracing::error!(error = %ErrorChain(&e), "epoch rotation after the sweep failed");
            }
            self.checkpoint();
        }
        tracing::info!(
            templates_deleted = report.templates_deleted,
            subjects = report.subjects_affected,
            expiries_shortened = report.expiries_shortened,
            "retention sweep done"
        );
        Ok(report)
    }

    // ----- gallery -------------------------------------------------------------------------

    /// Decrypts every live template of `model_id` into a new gallery (replacing any loaded one).
    /// Rows that do not open are skipped and reported in [`GalleryLoad::failures`], and recorded
    /// as an audit alert; every other subject still loads.
    #[tracing::instrument(skip_all, fields(model_id, dim))]
    pub fn load_gallery(&mut self, model_id: &str, dim: usize) -> Result<GalleryLoad, StoreError> {
        let now = self.now();
        let err = |op| StoreError::db_at(&self.file, op);
        let count: i64 = self
            .conn
            .query_row(
                "SELECT COUNT(*) FROM templates WHERE model_id = ?1 AND expires_at > ?2",
                params![model_id, now.0],
                |r| r.get(0),
            )
            .map_err(err("count templates"))?;
        let mut gallery = Gallery::new(model_id, dim, usize::try_from(count).unwrap_or(0));
        let mut load = GalleryLoad::default();
        // Only templates whose consent the gate may act on now: live, for this purpose, intact,
        // and not withdrawn according to the audit chain.
        let consents = self.matchable_consents()?;
        {
            let mut stmt = self
                .conn
                .prepare(
                    "SELECT t.id, t.subject_id, t.model_id, t.dim, t.seal_version, t.nonce,
                            t.sealed, k.nonce, k.wrapped, t.consent_id
                     FROM templates t LEFT JOIN subject_keys k ON k.subject_id = t.subject_id
                     WHERE t.model_id = ?1 AND t.expires_at > ?2
                     ORDER BY t.subject_id, t.id",
                )
                .map_err(err("read templates"))?;
            let mut rows = stmt
                .query(params![model_id, now.0])
                .map_err(err("read templates"))?;
            let mut current: Option<(SubjectId, Result<Secret, StoreError>)> = None;
            while let Some(r) = rows.next().map_err(err("read templates"))? {
                let row = TemplateRow::from_row(r).map_err(err("read templates"))?;
                let consent_id: i64 = r.get(9).map_err(err("read templates"))?;
                let Ok(subject) = SubjectId::new(row.subject.clone()) else {
                    load.failures.push(StoreError::Setting {
                        file: self.file.clone(),
                        key: "templates.subject_id",
                        reason: "holds an invalid subject id",
                    });
                    continue;
                };
                if current.as_ref().is_none_or(|(s, _)| *s != subject) {
                    let key = match (&row.key_nonce, &row.key_wrapped) {
                        (Some(n), Some(w)) => {
                            self.keks.unwrap_subject_key(&subject, n, w).map_err(|_| {
                                StoreError::SubjectKey {
                                    subject: subject.clone(),
                                }
                            })
                        }
                        _ => Err(StoreError::NoSubjectKey {
                            subject: subject.clone(),
                        }),
                    };
                    if let Err(e) = &key {
                        load.failures.push(clone_key_error(e, &subject));
                    }
                    current = Some((subject.clone(), key));
                }
                let Some((_, Ok(data_key))) = current.as_ref() else {
                    continue;
                };
                match open_row(data_key, &row, &subject, dim) {
                    // A row that opens is matched only under a consent the gate may act on.
                    Ok(_) if !consents.contains(&consent_id) => load.not_matchable += 1,
                    Ok(e) => {
                        gallery.insert(&subject, row.template, &e)?;
                        load.loaded += 1;
                    }
                    Err(e) => load.failures.push(e),
                }
            }
        }
        for f in &load.failures {
            tracing::error!(error = %ErrorChain(f), "template not loaded into the gallery");
        }
        if !load.failures.is_empty() && !self.read_only {
            // Bounded: the first few failures and a count, whatever the gallery's size.
            let what: Vec<String> = load
                .failures
                .iter()
                .take(ALERT_FAILURES_LISTED)
                .map(ToString::to_string)
                .collect();
            self.record(
                AuditEvent::new(AuditKind::Alert, "facegate", "failed").details(json!({
                    "gallery_load_failures": what,
                    "failures": load.failures.len(),
                })),
            )?;
        }
        tracing::info!(
            model_id,
            loaded = load.loaded,
            failed = load.failures.len(),
            locked = gallery.is_locked(),
            "gallery loaded"
        );
        self.gallery = Some(gallery);
        self.gallery_generation += 1;
        Ok(load)
    }

    /// Ids of the consents whose templates may be matched now.
    fn matchable_consents(&self) -> Result<std::collections::HashSet<i64>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT DISTINCT subject_id FROM templates")
            .map_err(StoreError::db_at(&self.file, "read templates"))?;
        let subjects: Vec<String> = stmt
            .query_map([], |r| r.get(0))
            .map_err(StoreError::db_at(&self.file, "read templates"))?
            .collect::<Result<_, _>>()
            .map_err(StoreError::db_at(&self.file, "read templates"))?;
        let mut out = std::collections::HashSet::new();
        for s in subjects {
            let Ok(subject) = SubjectId::new(s) else {
                continue;
            };
            out.extend(self.matchable_consent_ids(&subject)?);
        }
        Ok(out)
    }

    /// The loaded gallery, if any.
    pub fn gallery(&self) -> Option<&Gallery> {
        self.gallery.as_ref()
    }

    /// A number that changes whenever the gallery does (a load or reload, an enrollment, a
    /// withdrawal, a deletion, expired templates swept): a caller that decided on an earlier
    /// gallery (an `unknown` face) knows to look again.
    pub fn gallery_generation(&self) -> u64 {
        self.gallery_generation
    }

    // ----- keys ----------------------------------------------------------------------------

    /// Re-wraps every subject data key and the audit key under `new_key` in one transaction,
    /// without re-enrolling anyone, and records the rotation. Afterwards the database opens only
    /// with `new_key`.
    ///
    /// Why rotate: a byte copy of the database (a backup, a stolen disk image) taken *before* a
    /// subject was deleted still holds that subject's wrapped data key, so the old copy plus the
    /// master key in use at the time can still open the deleted subject's templates. Deleting a
    /// subject crypto-shreds it in the live database (its key row is gone, `secure_delete`
    /// zeroes the freed cells and the WAL is checkpointed and truncated), but it cannot reach
    /// into copies. After a rotation, old copies need the *retired* key: destroy the retired key
    /// (and keep backups sealed under the current one) and every subject deleted before the
    /// rotation is unreadable in every old copy too.
    #[tracing::instrument(skip_all)]
    pub fn rotate_master_key(
        &mut self,
        new_key: &MasterKey,
        operator: &str,
    ) -> Result<RotationReport, StoreError> {
        let new_keks = Keks::derive(new_key);
        let new_id = new_key.id();
        let old_id = self.key_id.clone();
        // The new master key's KEKs under the same epoch.
        let new_keks = match files::read_epoch(&self.state_dir, files::EPOCH_FILE)? {
            Some(e)
                if get_setting(&self.conn, &self.file, SETTING_EPOCH)?.as_deref()
                    == Some(seal::epoch_id(&e).as_str()) =>
            {
                new_keks.for_epoch(&e)
            }
            _ => new_keks,
        };
        let rewrapped = self.write("rotate master key", |tx, ctx| {
            let n = rewrap_all(tx, ctx.file, ctx.keks, &new_keks)?;
            let audit_secret = unwrap_audit_secret(tx, ctx.file, ctx.keks)?;
            store_audit_secret(tx, ctx.file, &new_keks, &audit_secret)?;
            set_setting(tx, ctx.file, SETTING_KEY_ID, new_id.as_str())?;
            ctx.audit(
                tx,
                &AuditEvent::new(AuditKind::KeyRotation, operator, "ok").details(json!({
                    "old_key_id": old_id.as_str(),
                    "new_key_id": new_id.as_str(),
                    "keys_rewrapped": n,
                })),
            )?;
            Ok(n)
        })?;
        self.keks = new_keks;
        self.key_id = new_id.clone();
        let _ = self.checkpoint();
        let created_at = get_setting(&self.conn, &self.file, SETTING_CREATED)?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        files::write_marker(
            &self.state_dir,
            &files::Marker {
                key_id: new_id.to_string(),
                created_at,
            },
        )?;
        tracing::info!(old_key_id = %old_id, new_key_id = %new_id, rewrapped, "master key rotated");
        Ok(RotationReport {
            keys_rewrapped: rewrapped,
            old_key_id: old_id,
            new_key_id: new_id,
        })
    }

    /// Replaces the epoch secret the data keys are wrapped under (see `crate::seal`): after a
    /// withdrawal, deletion or expiry, a copy of the database taken before it cannot open the
    /// removed subject's templates, even with the live master key. Records a key rotation.
    pub fn rotate_epoch(&mut self, operator: &str, reason: &str) -> Result<usize, StoreError> {
        let secret = seal::random_secret().map_err(|_| StoreError::Random {
            what: "an epoch secret",
        })?;
        let new_keks = self.keks.for_epoch(&secret);
        let id = seal::epoch_id(&secret);
        files::write_epoch_next(&self.state_dir, &secret)?;
        let result = self.write("rotate epoch", |tx, ctx| {
            let n = rewrap_all(tx, ctx.file, ctx.keks, &new_keks)?;
            set_setting(tx, ctx.file, SETTING_EPOCH, &id)?;
            ctx.audit(
                tx,
                &AuditEvent::new(AuditKind::KeyRotation, operator, "ok").details(json!({
                    "epoch": id,
                    "keys_rewrapped": n,
                    "reason": reason,
                })),
            )?;
            Ok(n)
        });
        let n = match result {
            Ok(n) => n,
            Err(e) => {
                files::discard_epoch_next(&self.state_dir);
                return Err(e);
            }
        };
        // Committed: the new file becomes the epoch (an open completes this if we stop here).
        files::promote_epoch(&self.state_dir)?;
        self.keks = new_keks;
        Ok(n)
    }

    // ----- audit ---------------------------------------------------------------------------

    /// Appends a record to the processing record (verification and identification decisions,
    /// config changes, authentication failures, ...).
    pub fn record(&mut self, event: AuditEvent) -> Result<u64, StoreError> {
        self.write("append audit record", |tx, ctx| ctx.audit(tx, &event))
    }

    /// Walks the whole audit chain and reports the first break (edited, removed, reordered,
    /// truncated) if any.
    pub fn verify_audit(&self) -> Result<AuditVerification, StoreError> {
        let head = self.head_file.read()?;
        let outside = match &head {
            Some(h) => audit::OutsideHead::Present {
                seq: h.seq,
                mac: &h.mac,
                tag: &h.tag,
            },
            None if self.head_kept || self.head_file.exists() => audit::OutsideHead::Missing,
            None => audit::OutsideHead::NotKept,
        };
        audit::verify(&self.conn, &self.file, &self.audit_key, outside)
    }

    /// Audit records with their chain links (for an export that can be checked later).
    pub fn audit_export(
        &self,
        from: u64,
        limit: usize,
    ) -> Result<Vec<audit::ChainedRecord>, StoreError> {
        audit::chained_records(&self.conn, &self.file, from, limit)
    }

    /// Checks an exported run of records with this store's audit key: every MAC, every link,
    /// consecutive numbers. `None` when the export holds.
    pub fn verify_export(&self, records: &[audit::ChainedRecord]) -> Option<AuditBreak> {
        audit::verify_chained(&self.audit_key, records)
    }

    /// The file that keeps the audit head outside the database.
    pub fn audit_head_file(&self) -> &Path {
        self.head_file.path()
    }

    /// Removes the longest prefix of audit records older than `older_than` and re-anchors the
    /// chain, recording the prune itself. Refuses cut-offs younger than 3 years (Art. 9) and a
    /// broken chain (the evidence stays).
    pub fn prune_audit(
        &mut self,
        older_than: UnixMillis,
        operator: &str,
    ) -> Result<PruneReport, StoreError> {
        let report = self.write("prune audit", |tx, ctx| {
            let report = audit::prune_prefix(tx, ctx.file, ctx.audit, ctx.now, older_than)?;
            if report.removed > 0 {
                ctx.audit(
                    tx,
                    &AuditEvent::new(AuditKind::AuditPrune, operator, "ok").details(json!({
                        "removed": report.removed,
                        "anchor_seq": report.anchor_seq,
                        "older_than": older_than.0,
                    })),
                )?;
            }
            Ok(report)
        })?;
        if report.removed > 0 {
            let _ = self.checkpoint();
        }
        Ok(report)
    }

    /// Audit records with `seq >= from`, at most `limit`.
    pub fn audit_records(&self, from: u64, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        audit::records(&self.conn, &self.file, from, limit)
    }

    /// Number of audit records per kind.
    pub fn audit_counts(&self) -> Result<std::collections::HashMap<String, u64>, StoreError> {
        audit::counts_by_kind(&self.conn, &self.file)
    }

    // ----- reading -------------------------------------------------------------------------

    /// Counts for reports and the Art. 15 filing threshold.
    pub fn counts(&self) -> Result<StoreCounts, StoreError> {
        let now = self.now();
        self.conn
            .query_row(
                "SELECT (SELECT COUNT(DISTINCT subject_id) FROM templates),
                        (SELECT COUNT(*) FROM templates),
                        (SELECT COUNT(*) FROM subjects),
                        (SELECT COUNT(*) FROM consents
                         WHERE withdrawn_at IS NULL AND expires_at > ?1)",
                [now.0],
                |r| {
                    let g = |i| r.get::<_, i64>(i).map(|v| u64::try_from(v).unwrap_or(0));
                    Ok(StoreCounts {
                        subjects_with_templates: g(0)?,
                        templates: g(1)?,
                        subjects: g(2)?,
                        live_consents: g(3)?,
                    })
                },
            )
            .map_err(StoreError::db_at(&self.file, "count"))
    }

    /// The Art. 15 filing status, pushed: when it is an alert it is logged every time, and
    /// recorded in the audit chain at most once per UTC day (enrollment and the service call
    /// this, so an operator is told without running `facegate doctor`).
    pub fn check_filing(&mut self) -> Result<(u64, FilingStatus), StoreError> {
        let stored = self.counts()?.subjects_with_templates;
        let status = FilingStatus::evaluate(stored, self.policy.filing().warn_fraction());
        if !status.is_alert() {
            return Ok((stored, status));
        }
        status.emit(stored);
        let day = (self.now().0 / UnixMillis::MS_PER_DAY).to_string();
        if self.read_only
            || get_setting(&self.conn, &self.file, SETTING_FILING_ALERT_DAY)?.as_deref()
                == Some(day.as_str())
        {
            return Ok((stored, status));
        }
        let reached = matches!(status, FilingStatus::Reached);
        self.write("filing alert", |tx, ctx| {
            set_setting(tx, ctx.file, SETTING_FILING_ALERT_DAY, &day)?;
            ctx.audit(
                tx,
                &AuditEvent::new(AuditKind::Alert, "facegate", "raised").details(json!({
                    "alert": if reached { "filing_threshold_reached" } else { "filing_threshold_near" },
                    "stored_subjects": stored,
                    "threshold": facegate_policy::ART15_FILING_THRESHOLD,
                })),
            )
        })?;
        Ok((stored, status))
    }

    /// Every subject, ordered by id.
    pub fn list_subjects(&self) -> Result<Vec<SubjectSummary>, StoreError> {
        self.summaries(None)
    }

    /// Everything stored about one subject, except template values.
    pub fn subject(&self, subject: &SubjectId) -> Result<Option<SubjectDetail>, StoreError> {
        let Some(summary) = self.summaries(Some(subject))?.into_iter().next() else {
            return Ok(None);
        };
        let err = |op| StoreError::db_at(&self.file, op);
        let consents = {
            let mut stmt = self
                .conn
                .prepare(
                    "SELECT id, record, expires_at, withdrawn_at FROM consents
                     WHERE subject_id = ?1 ORDER BY id",
                )
                .map_err(err("read consents"))?;
            let rows = stmt
                .query_map([subject.as_str()], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, Option<i64>>(3)?,
                    ))
                })
                .map_err(err("read consents"))?;
            let raw: Vec<_> = rows
                .collect::<Result<_, _>>()
                .map_err(err("read consents"))?;
            raw.into_iter()
                .map(|(id, json, exp, wd)| {
                    Ok(ConsentEntry {
                        id: ConsentId(id),
                        record: parse_record(subject, &json)?,
                        expires_at: UnixMillis(exp),
                        withdrawn_at: wd.map(UnixMillis),
                    })
                })
                .collect::<Result<Vec<_>, StoreError>>()?
        };
        let templates = {
            let mut stmt = self
                .conn
                .prepare(
                    "SELECT id, consent_id, model_id, dim, created_at, expires_at FROM templates
                     WHERE subject_id = ?1 ORDER BY id",
                )
                .map_err(err("read templates"))?;
            let rows = stmt
                .query_map([subject.as_str()], |r| {
                    Ok(TemplateInfo {
                        template: TemplateId(u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0)),
                        consent: ConsentId(r.get(1)?),
                        model_id: r.get(2)?,
                        dim: usize::try_from(r.get::<_, i64>(3)?).unwrap_or(0),
                        created_at: UnixMillis(r.get(4)?),
                        expires_at: UnixMillis(r.get(5)?),
                    })
                })
                .map_err(err("read templates"))?;
            rows.collect::<Result<Vec<_>, _>>()
                .map_err(err("read templates"))?
        };
        Ok(Some(SubjectDetail {
            summary,
            consents,
            templates,
        }))
    }

    fn summaries(&self, only: Option<&SubjectId>) -> Result<Vec<SubjectSummary>, StoreError> {
        let err = |op| StoreError::db_at(&self.file, op);
        let mut stmt = self
            .conn
            .prepare(
                "SELECT s.id, s.age_years, s.created_at, s.withdrawn_at,
                        (SELECT COUNT(*) FROM templates t WHERE t.subject_id = s.id),
                        (SELECT MAX(created_at) FROM templates t WHERE t.subject_id = s.id),
                        (SELECT MAX(expires_at) FROM consents c
                         WHERE c.subject_id = s.id AND c.withdrawn_at IS NULL),
                        EXISTS(SELECT 1 FROM subject_keys k WHERE k.subject_id = s.id)
                 FROM subjects s WHERE ?1 IS NULL OR s.id = ?1 ORDER BY s.id",
            )
            .map_err(err("list subjects"))?;
        let rows = stmt
            .query_map([only.map(SubjectId::as_str)], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, Option<i64>>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, Option<i64>>(5)?,
                    r.get::<_, Option<i64>>(6)?,
                    r.get::<_, bool>(7)?,
                ))
            })
            .map_err(err("list subjects"))?;
        let mut out = Vec::new();
        for row in rows {
            let (id, age, created, withdrawn, n, last, exp, has_key) =
                row.map_err(err("list subjects"))?;
            let Ok(subject) = SubjectId::new(id) else {
                continue;
            };
            out.push(SubjectSummary {
                subject,
                age_years: u8::try_from(age).unwrap_or(u8::MAX),
                created_at: UnixMillis(created),
                templates: usize::try_from(n).unwrap_or(0),
                last_enrolled_at: last.map(UnixMillis),
                consent_expires_at: exp.map(UnixMillis),
                withdrawn_at: withdrawn.map(UnixMillis),
                has_key,
            });
        }
        Ok(out)
    }

    /// Runs SQLite's full `integrity_check` and the foreign-key check.
    pub fn integrity_check(&self) -> Result<(), StoreError> {
        let err = |op| StoreError::db_at(&self.file, op);
        let msgs: Vec<String> = {
            let mut stmt = self
                .conn
                .prepare("PRAGMA integrity_check")
                .map_err(err("integrity_check"))?;
            let rows = stmt
                .query_map([], |r| r.get(0))
                .map_err(err("integrity_check"))?;
            rows.collect::<Result<_, _>>()
                .map_err(err("integrity_check"))?
        };
        if msgs.len() != 1 || msgs[0] != "ok" {
            return Err(StoreError::Corrupt {
                file: self.file.clone(),
                detail: msgs.into_iter().take(3).collect::<Vec<_>>().join("; "),
            });
        }
        let fk_violations: i64 = self
            .conn
            .query_row("SELECT COUNT(*) FROM pragma_foreign_key_check", [], |r| {
                r.get(0)
            })
            .map_err(err("foreign_key_check"))?;
        if fk_violations > 0 {
            return Err(StoreError::Corrupt {
                file: self.file.clone(),
                detail: format!("{fk_violations} foreign key violations"),
            });
        }
        Ok(())
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

/// The audit chain key and the credential digest key, both from the wrapped audit secret.
fn load_audit_key(
    conn: &Connection,
    file: &Path,
    keks: &Keks,
) -> Result<(AuditKey, CredentialKey, RowKey), StoreError> {
    let secret = unwrap_audit_secret(conn, file, keks)?;
    Ok((
        AuditKey::new(&secret),
        CredentialKey::derive(&secret),
        RowKey::derive(&secret),
    ))
}

/// First open of a new database: key id, wrapped audit key, chain genesis, first record.
fn initialise(
    conn: &mut Connection,
    file: &Path,
    keks: &Keks,
    key_id: &KeyId,
    now: UnixMillis,
) -> Result<(AuditKey, CredentialKey, RowKey), StoreError> {
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
    Ok((key, CredentialKey::derive(&secret), RowKey::derive(&secret)))
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
