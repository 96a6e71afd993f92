//! Transfer between terminals (Art. 6, 8): this terminal's keys, the separate transfer consent,
//! export (seal an enrollment to another terminal), import (check and store one), withdrawal
//! notices (sign one, apply one), and where a person was sent.
//!
//! Rules, each enforced here and tested in `tests/store/transfer.rs`:
//! - export needs a live face consent *and* a live transfer consent naming the receiver;
//! - import needs a bundle addressed to this terminal, signed by the sender the operator names,
//!   unchanged; a transfer consent naming this terminal; a face consent for this terminal's
//!   purpose, still within the shorter of the two retentions; a subject not withdrawn since the
//!   consent (here, in the audit chain, or by an applied notice); a transfer id not seen before
//!   and no newer transfer from the same sender; no template of the subject here already; and
//!   a face that matches no other subject of this terminal;
//! - a withdrawal notice is applied only under the signing key of a terminal this one exchanged
//!   the person with (known from the transfer, never from the notice itself), once.
//!
//! Every export, import and applied notice is in the audit chain, refusals included.

use facegate_policy::{TerminalId, TransferConsent, TransferConsentRecord};
use zeroize::Zeroizing;

use super::consent::insert_template;
use super::*;
use crate::transfer::{self as wire, TerminalPublic, TerminalSecret, WithdrawalNotice};

const SETTING_TERMINAL_PUBLIC: &str = "terminal_public";
const SETTING_TERMINAL_SECRET: &str = "terminal_secret";
const AAD_TERMINAL_SECRET: &[u8] = b"facegate-store/terminal-secret/v1";

/// What an export produced: the bundle to hand to the receiver, and its ids.
#[derive(Debug)]
pub struct ExportReport {
    pub transfer: String,
    pub receiver: TerminalId,
    pub templates: usize,
    /// The bundle file's bytes (sealed; holds no template in clear).
    pub bundle: Vec<u8>,
}

/// What an import stored.
#[derive(Debug, Clone)]
pub struct ImportReport {
    pub transfer: String,
    pub subject: SubjectId,
    pub sender: TerminalId,
    pub sender_name: String,
    pub templates: Vec<TemplateId>,
    pub expires_at: UnixMillis,
}

/// What applying a withdrawal notice did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoticeOutcome {
    /// The person's templates and key were deleted here, their consents withdrawn.
    Applied(RemovalReport),
    /// Nothing of the person is stored here (deleted before); the notice is recorded, so an
    /// older transfer of them is refused from now on.
    NothingStored,
    /// This notice was applied before: nothing changed.
    AlreadyApplied,
}

/// Which way a transfer went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferDirection {
    /// Sent from this terminal.
    Out,
    /// Received by this terminal.
    In,
}

/// One transfer of a person, as recorded (ids, times, counts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferEntry {
    pub transfer: String,
    pub direction: TransferDirection,
    pub peer: TerminalId,
    pub peer_name: String,
    pub created_at: UnixMillis,
    pub recorded_at: UnixMillis,
    pub templates: usize,
    pub operator: String,
    /// The peer's full public key, as recorded (withdrawal notices are checked against it).
    pub peer_key: TerminalPublic,
}

/// A `transfer_consents` row: id, record, granted_at, withdrawn_at, mac.
type TransferConsentRow = (i64, String, i64, Option<i64>, Vec<u8>);
/// A `transfers` row: id, direction, peer, created_at, recorded_at, templates, operator, mac.
type TransferRow = (String, String, String, i64, i64, i64, String, Vec<u8>);

/// Longest metadata part of a bundle's payload, before the template values.
const META_MAX: usize = 64 * 1024;

impl Store {
    /// This terminal's public transfer key, if it has one.
    pub fn terminal_public(&self) -> Result<Option<TerminalPublic>, StoreError> {
        get_setting(&self.conn, &self.file, SETTING_TERMINAL_PUBLIC)?
            .map(|line| TerminalPublic::parse(&line))
            .transpose()
    }

    fn terminal_secret(&self) -> Result<TerminalSecret, StoreError> {
        let public = self.terminal_public()?.ok_or(StoreError::NoTerminalKeys)?;
        let bad = StoreError::TerminalKeys {
            reason: "the stored secret is malformed or does not open under the master key",
        };
        let value = get_setting(&self.conn, &self.file, SETTING_TERMINAL_SECRET)?.ok_or(
            StoreError::TerminalKeys {
                reason: "the secret half is missing",
            },
        )?;
        let (n, c) = value.split_once(':').ok_or(StoreError::TerminalKeys {
            reason: "the stored secret is malformed",
        })?;
        let (Ok(nonce), Ok(sealed)) = (hex::decode(n), hex::decode(c)) else {
            return Err(bad);
        };
        let aad = terminal_secret_aad(&public);
        let plain =
            seal::open_bytes(&self.transfer_keys.wrap, &aad, &nonce, &sealed).map_err(|_| bad)?;
        TerminalSecret::from_bytes(&plain, &public)
    }

    /// Makes this terminal's transfer keys (X25519 to receive, Ed25519 to sign), sealed in the
    /// database under a key of the master key's hierarchy, and records it. Refuses when keys
    /// exist: the site's other terminals know this terminal by them.
    pub fn create_terminal_keys(
        &mut self,
        name: &str,
        operator: &str,
    ) -> Result<TerminalPublic, StoreError> {
        if let Some(existing) = self.terminal_public()? {
            return Err(StoreError::TerminalKeysExist { id: existing.id() });
        }
        let secret = TerminalSecret::generate(name)?;
        let public = secret.public().clone();
        let (nonce, sealed) = seal::seal_bytes(
            &self.transfer_keys.wrap,
            &terminal_secret_aad(&public),
            &secret.to_bytes(),
        )
        .map_err(|_| StoreError::Random { what: "a nonce" })?;
        self.write("create terminal keys", |tx, ctx| {
            set_setting(tx, ctx.file, SETTING_TERMINAL_PUBLIC, &public.to_line())?;
            set_setting(
                tx,
                ctx.file,
                SETTING_TERMINAL_SECRET,
                &format!("{}:{}", hex::encode(nonce), hex::encode(&sealed)),
            )?;
            ctx.audit(
                tx,
                &AuditEvent::new(AuditKind::KeyRotation, operator, "ok").details(json!({
                    "terminal_keys": "created",
                    "terminal": public.id(),
                    "name": public.name(),
                })),
            )
        })?;
        tracing::info!(terminal = %public.id(), "terminal transfer keys created");
        Ok(public)
    }

    /// Records a separate transfer consent (Art. 6, 8). Refused when the subject withdrew after
    /// it was granted.
    pub fn record_transfer_consent(
        &mut self,
        consent: &TransferConsent,
    ) -> Result<i64, StoreError> {
        let record = consent.record();
        let subject = record.subject.clone();
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
        if let Some(w) = withdrawn.filter(|&w| w >= record.granted_at.0) {
            return Err(StoreError::ConsentWithdrawn {
                subject,
                withdrawn_at: UnixMillis(w),
            });
        }
        let id = self.write("record transfer consent", |tx, ctx| {
            insert_transfer_consent(tx, ctx, record)
        })?;
        tracing::info!(subject = %subject, consent = id, "transfer consent recorded");
        Ok(id)
    }

    /// The subject's live transfer consent naming `terminal`, if any (rows whose MAC fails,
    /// or granted before a withdrawal in the audit chain, never count).
    pub fn transfer_consent_for(
        &self,
        subject: &SubjectId,
        terminal: &TerminalId,
    ) -> Result<Option<TransferConsent>, StoreError> {
        let err = |op| StoreError::db_at(&self.file, op);
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, record, granted_at, withdrawn_at, mac FROM transfer_consents
                 WHERE subject_id = ?1 AND withdrawn_at IS NULL ORDER BY granted_at DESC, id DESC",
            )
            .map_err(err("read transfer consents"))?;
        let rows: Vec<TransferConsentRow> = stmt
            .query_map([subject.as_str()], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .map_err(err("read transfer consents"))?
            .collect::<Result<_, _>>()
            .map_err(err("read transfer consents"))?;
        for (id, json, granted_at, withdrawn_at, mac) in rows {
            let fields = ledger::RowFields {
                id,
                subject: subject.as_str(),
                record: &json,
                granted_at,
                expires_at: 0,
                withdrawn_at,
            };
            if !self.transfer_keys.rows.verify(&fields, &mac) {
                tracing::error!(subject = %subject, consent = id, "transfer consent row fails its integrity check");
                continue;
            }
            let Ok(record) = serde_json::from_str::<TransferConsentRecord>(&json) else {
                continue;
            };
            if record.granted_at.0 != granted_at
                || self.withdrawn_in_record(subject, record.granted_at)?
            {
                continue;
            }
            let consent =
                self.policy
                    .restore_transfer(record)
                    .map_err(|source| StoreError::Policy {
                        subject: subject.clone(),
                        source,
                    })?;
            if consent.allows(terminal) {
                return Ok(Some(consent));
            }
        }
        Ok(None)
    }

    /// Seals `subject`'s templates of `model_id`, its face consent (with the retention end) and
    /// its transfer consent to the terminal `to`, signed by this terminal, and records the
    /// export in the audit chain and the transfer register. Refused (and audited) without a
    /// live face consent or without a live transfer consent naming `to`.
    #[tracing::instrument(skip_all, fields(subject = %subject, receiver = %to.id()))]
    pub fn export_enrollment(
        &mut self,
        subject: &SubjectId,
        to: &TerminalPublic,
        model_id: &str,
        operator: &str,
    ) -> Result<ExportReport, StoreError> {
        validate_model_id(model_id)?;
        let me = self.terminal_secret()?;
        let receiver = to.id();
        let refuse = |store: &mut Self, e: StoreError| {
            let ev = AuditEvent::new(AuditKind::Export, operator, "refused")
                .subject(subject)
                .details(json!({ "receiver": receiver, "reason": ErrorChain(&e).to_string() }));
            if let Err(a) = store.record(ev) {
                tracing::warn!(subject = %subject, error = %ErrorChain(&a), "could not record a refused export");
            }
            Err(e)
        };
        if receiver == me.public().id() {
            return refuse(
                self,
                StoreError::TerminalKeyFormat {
                    reason: "is this terminal's own (an export goes to another terminal)",
                },
            );
        }
        let Some(consent) = self.live_consent(subject)? else {
            let status = self.consent_status(subject)?;
            let e = StoreError::NoLiveConsent {
                subject: subject.clone(),
                status: status_word(&status),
            };
            return refuse(self, e);
        };
        let Some(transfer_consent) = self.transfer_consent_for(subject, &receiver)? else {
            let e = StoreError::NoTransferConsent {
                subject: subject.clone(),
                terminal: receiver.clone(),
            };
            return refuse(self, e);
        };
        let templates = self.subject_templates(subject, model_id)?;
        if templates.is_empty() {
            let e = StoreError::NoTemplates {
                subject: subject.clone(),
                model_id: model_id.to_owned(),
            };
            return refuse(self, e);
        }
        let expires_at = consent.expires_at();
        let meta = json!({
            "consent": consent.record(),
            "consent_expires_at": expires_at.0,
            "transfer_consent": transfer_consent.record(),
            "templates": templates.iter().map(|t| json!({ "model_id": model_id, "dim": t.dim() })).collect::<Vec<_>>(),
        });
        let meta = serde_json::to_vec(&meta).map_err(|source| StoreError::ConsentRecord {
            subject: subject.clone(),
            source,
        })?;
        let mut payload = Zeroizing::new(Vec::with_capacity(
            4 + meta.len() + templates.iter().map(|t| 4 * t.dim()).sum::<usize>(),
        ));
        payload.extend_from_slice(&(meta.len() as u32).to_be_bytes());
        payload.extend_from_slice(&meta);
        for t in &templates {
            for v in t.as_slice() {
                payload.extend_from_slice(&v.to_le_bytes());
            }
        }
        let now = self.now();
        let (bundle, header) = wire::seal_bundle(&me, to, subject, now, &payload)?;
        let transfer = header.transfer_id();
        let n = templates.len();
        self.write("export enrollment", |tx, ctx| {
            insert_transfer(
                tx,
                ctx,
                &transfer,
                TransferDirection::Out,
                subject,
                to,
                now,
                n,
                operator,
            )?;
            ctx.audit(
                tx,
                &AuditEvent::new(AuditKind::Export, operator, "ok")
                    .subject(subject)
                    .details(json!({
                        "transfer": transfer,
                        "receiver": receiver,
                        "receiver_name": to.name(),
                        "templates": n,
                        "model_id": model_id,
                        "expires_at": expires_at.0,
                    })),
            )
        })?;
        tracing::info!(subject = %subject, transfer = %transfer, receiver = %receiver, templates = n, "enrollment exported");
        Ok(ExportReport {
            transfer,
            receiver,
            templates: n,
            bundle,
        })
    }

    /// The subject's matchable templates of `model_id`, opened (for an export).
    fn subject_templates(
        &self,
        subject: &SubjectId,
        model_id: &str,
    ) -> Result<Vec<Embedding>, StoreError> {
        let matchable = self.matchable_consent_ids(subject)?;
        let Some(key) = load_subject_key(&self.conn, &self.file, &self.keks, subject)? else {
            return Ok(Vec::new());
        };
        let err = |op| StoreError::db_at(&self.file, op);
        let mut stmt = self
            .conn
            .prepare(
                "SELECT t.id, t.subject_id, t.model_id, t.dim, t.seal_version, t.nonce, t.sealed,
                        NULL, NULL, t.consent_id
                 FROM templates t WHERE t.subject_id = ?1 AND t.model_id = ?2
                 AND t.expires_at > ?3 ORDER BY t.id",
            )
            .map_err(err("read templates"))?;
        let rows: Vec<(TemplateRow, i64)> = stmt
            .query_map(params![subject.as_str(), model_id, self.now().0], |r| {
                Ok((TemplateRow::from_row(r)?, r.get(9)?))
            })
            .map_err(err("read templates"))?
            .collect::<Result<_, _>>()
            .map_err(err("read templates"))?;
        let mut out = Vec::with_capacity(rows.len());
        for (row, consent) in rows.into_iter().filter(|(_, c)| matchable.contains(c)) {
            let _ = consent;
            let dim = usize::try_from(row.dim).unwrap_or(0);
            out.push(open_row(&key, &row, subject, dim)?);
        }
        Ok(out)
    }

    /// Checks a bundle made for this terminal by `from` and stores the enrollment with the same
    /// consent and the shorter retention (see the module docs for every refusal). `threshold`
    /// is this terminal's 1:1 operating point for the duplicate-face check.
    #[tracing::instrument(skip_all, fields(sender = %from.id()))]
    pub fn import_enrollment(
        &mut self,
        bundle: &[u8],
        from: &TerminalPublic,
        threshold: f32,
        operator: &str,
    ) -> Result<ImportReport, StoreError> {
        if !(threshold.is_finite() && (-1.0..=1.0).contains(&threshold)) {
            return Err(StoreError::InvalidThreshold { threshold });
        }
        let me = self.terminal_secret()?;
        // Who it claims to be for, to name the subject in a refusal's audit record.
        let claimed = wire::read_header(bundle).ok().map(|(h, _)| h);
        let refuse = |store: &mut Self, e: StoreError| {
            let mut ev = AuditEvent::new(AuditKind::Import, operator, "refused").details(json!({
                "sender": from.id(),
                "transfer": claimed.as_ref().map(|h| h.transfer_id()),
                "reason": ErrorChain(&e).to_string(),
            }));
            if let Some(h) = &claimed {
                ev = ev.subject(&h.subject);
            }
            if let Err(a) = store.record(ev) {
                tracing::warn!(error = %ErrorChain(&a), "could not record a refused import");
            }
            Err(e)
        };
        let (header, payload) = match wire::open_bundle(&me, from, bundle) {
            Ok(v) => v,
            Err(e) => return refuse(self, e),
        };
        let transfer = header.transfer_id();
        let subject = header.subject.clone();
        if let Err(e) = self.check_not_replayed(&header) {
            return refuse(self, e);
        }
        let (meta, templates) = match parse_payload(&transfer, &subject, &payload) {
            Ok(v) => v,
            Err(e) => return refuse(self, e),
        };
        let now = self.now();
        let (consent, transfer_consent) = match self.policy.receive(
            meta.consent,
            meta.expires_at,
            meta.transfer_consent,
            &me.public().id(),
            now,
        ) {
            Ok(v) => v,
            Err(source) => {
                let e = StoreError::TransferRefused {
                    transfer,
                    subject,
                    source,
                };
                return refuse(self, e);
            }
        };
        // Withdrawn since the consent: here (subject row), in the audit chain, or by a notice.
        self.check_consent(&consent, now, AuditKind::Import)?;
        let granted_at = consent.record().granted_at;
        let noticed: Option<i64> = self
            .conn
            .query_row(
                "SELECT MAX(withdrawn_at) FROM withdrawal_notices WHERE subject_id = ?1",
                [subject.as_str()],
                |r| r.get(0),
            )
            .map_err(StoreError::db_at(&self.file, "read withdrawal notices"))?;
        if let Some(w) = noticed.filter(|&w| w >= granted_at.0) {
            let e = StoreError::ConsentWithdrawn {
                subject: subject.clone(),
                withdrawn_at: UnixMillis(w),
            };
            return refuse(self, e);
        }
        if self.withdrawn_in_record(&subject, granted_at)? {
            let e = StoreError::ConsentWithdrawn {
                subject: subject.clone(),
                withdrawn_at: granted_at,
            };
            return refuse(self, e);
        }
        let existing: i64 = self
            .conn
            .query_row(
                "SELECT COUNT(*) FROM templates WHERE subject_id = ?1",
                [subject.as_str()],
                |r| r.get(0),
            )
            .map_err(StoreError::db_at(&self.file, "read templates"))?;
        if existing > 0 {
            let e = StoreError::TransferAlreadyEnrolled {
                subject: subject.clone(),
                templates: usize::try_from(existing).unwrap_or(0),
            };
            return refuse(self, e);
        }
        for (model_id, _) in &templates {
            validate_model_id(model_id)?;
        }
        for (model_id, t) in &templates {
            if let Some((other, score)) =
                self.find_duplicate(&subject, &[t], model_id, threshold)?
            {
                let e = StoreError::DuplicateFace {
                    subject: subject.clone(),
                    existing: other,
                    score,
                    threshold,
                };
                return refuse(self, e);
            }
        }
        let expires_at = consent.expires_at();
        let sender = header.sender.clone();
        let created_at = header.created_at;
        let ids = self.write("import enrollment", |tx, ctx| {
            let (consent_id, ledger_expiry) = upsert_consent(tx, ctx, &consent)?;
            let expires_at = expires_at.min(ledger_expiry);
            insert_transfer_consent(tx, ctx, transfer_consent.record())?;
            let mut ids = Vec::with_capacity(templates.len());
            for (model_id, t) in &templates {
                ids.push(insert_template(
                    tx, ctx, &subject, consent_id, model_id, t, expires_at,
                )?);
            }
            insert_transfer(
                tx,
                ctx,
                &transfer,
                TransferDirection::In,
                &subject,
                &sender,
                created_at,
                ids.len(),
                operator,
            )?;
            ctx.audit(
                tx,
                &AuditEvent::new(AuditKind::Import, operator, "ok")
                    .subject(&subject)
                    .details(json!({
                        "transfer": transfer,
                        "sender": sender.id(),
                        "sender_name": sender.name(),
                        "templates": ids.iter().map(|t| t.0).collect::<Vec<_>>(),
                        "consent": consent_id.0,
                        "created_at": created_at.0,
                        "expires_at": expires_at.0,
                    })),
            )?;
            Ok(ids)
        })?;
        for ((model_id, t), id) in templates.iter().zip(&ids) {
            if let Some(g) = self
                .gallery
                .as_mut()
                .filter(|g| g.model_id() == model_id.as_str())
            {
                g.insert(&subject, *id, t)?;
                self.gallery_generation += 1;
            }
        }
        tracing::info!(subject = %subject, transfer = %transfer, sender = %sender.id(), templates = ids.len(), "enrollment imported");
        Ok(ImportReport {
            transfer,
            subject,
            sender: sender.id(),
            sender_name: sender.name().to_owned(),
            templates: ids,
            expires_at,
        })
    }

    /// A transfer id seen before, or an older transfer than one already taken from the sender.
    fn check_not_replayed(&self, header: &wire::TransferHeader) -> Result<(), StoreError> {
        let transfer = header.transfer_id();
        let err = |op| StoreError::db_at(&self.file, op);
        let seen: Option<i64> = self
            .conn
            .query_row(
                "SELECT recorded_at FROM transfers WHERE id = ?1",
                [&transfer],
                |r| r.get(0),
            )
            .optional()
            .map_err(err("read transfers"))?;
        if let Some(at) = seen {
            return Err(StoreError::TransferDuplicate {
                transfer,
                subject: header.subject.clone(),
                imported_at: UnixMillis(at),
            });
        }
        let newer: Option<String> = self
            .conn
            .query_row(
                "SELECT id FROM transfers WHERE direction = 'in' AND subject_id = ?1
                 AND peer_id = ?2 AND created_at >= ?3 ORDER BY created_at DESC LIMIT 1",
                params![
                    header.subject.as_str(),
                    header.sender.id().as_str(),
                    header.created_at.0
                ],
                |r| r.get(0),
            )
            .optional()
            .map_err(err("read transfers"))?;
        if let Some(newer) = newer {
            return Err(StoreError::TransferSuperseded {
                transfer,
                subject: header.subject.clone(),
                created_at: header.created_at,
                newer,
            });
        }
        Ok(())
    }

    /// A withdrawal notice for `subject`, withdrawn at `withdrawn_at`, signed by this terminal:
    /// the file bytes for the site's other terminals (`apply_withdrawal_notice`).
    pub fn withdrawal_notice(
        &self,
        subject: &SubjectId,
        withdrawn_at: UnixMillis,
    ) -> Result<(Vec<u8>, WithdrawalNotice), StoreError> {
        wire::sign_notice(&self.terminal_secret()?, subject, withdrawn_at)
    }

    /// Applies a notice another terminal signed: checks the signature under the key of a
    /// terminal this one exchanged the person with, then withdraws the person here (templates
    /// and key deleted, consents withdrawn, audited naming the notice). Idempotent.
    pub fn apply_withdrawal_notice(
        &mut self,
        bytes: &[u8],
        operator: &str,
    ) -> Result<(WithdrawalNotice, NoticeOutcome), StoreError> {
        let notice = wire::open_notice(bytes, |subject, issuer| self.peer_key(subject, issuer))?;
        let subject = notice.subject.clone();
        let applied: bool = self
            .conn
            .query_row(
                "SELECT EXISTS(SELECT 1 FROM withdrawal_notices WHERE id = ?1)",
                [notice.notice_id()],
                |r| r.get(0),
            )
            .map_err(StoreError::db_at(&self.file, "read withdrawal notices"))?;
        if applied {
            return Ok((notice, NoticeOutcome::AlreadyApplied));
        }
        let exists: bool = self
            .conn
            .query_row(
                "SELECT EXISTS(SELECT 1 FROM subjects WHERE id = ?1)",
                [subject.as_str()],
                |r| r.get(0),
            )
            .map_err(StoreError::db_at(&self.file, "read subject"))?;
        if !exists {
            self.write("record withdrawal notice", |tx, ctx| {
                record_notice(tx, ctx, &notice)?;
                ctx.audit(
                    tx,
                    &AuditEvent::new(AuditKind::Withdrawal, operator, "ok_nothing_stored")
                        .subject(&subject)
                        .details(with_notice(
                            json!({ "templates_deleted": 0 }),
                            Some(&notice),
                        )),
                )
            })?;
            return Ok((notice, NoticeOutcome::NothingStored));
        }
        let withdrawal = Withdrawal {
            subject: subject.clone(),
            at: self.now(),
            operator: operator.to_owned(),
            method: facegate_policy::ConsentMethod::Electronic,
        };
        let report = self.withdraw_with(&withdrawal, Some(&notice))?;
        tracing::info!(subject = %subject, issuer = %notice.issuer.id(), templates_deleted = report.templates_deleted, "withdrawal notice applied");
        Ok((notice, NoticeOutcome::Applied(report)))
    }

    /// The public key of `peer` as recorded by a transfer of `subject` (either way).
    fn peer_key(
        &self,
        subject: &SubjectId,
        peer: &TerminalId,
    ) -> Result<Option<TerminalPublic>, StoreError> {
        Ok(self
            .transfers_of(subject)?
            .into_iter()
            .rev()
            .find(|t| &t.peer == peer)
            .map(|t| t.peer_key))
    }

    /// Every recorded transfer of `subject`, oldest first: the terminals it was sent to (and
    /// the one it came from). For `facegate subjects where` and for sending withdrawal notices.
    pub fn transfers_of(&self, subject: &SubjectId) -> Result<Vec<TransferEntry>, StoreError> {
        let err = |op| StoreError::db_at(&self.file, op);
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, direction, peer, created_at, recorded_at, templates, operator, mac
                 FROM transfers WHERE subject_id = ?1 ORDER BY recorded_at, id",
            )
            .map_err(err("read transfers"))?;
        let rows: Vec<TransferRow> = stmt
            .query_map([subject.as_str()], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                ))
            })
            .map_err(err("read transfers"))?
            .collect::<Result<_, _>>()
            .map_err(err("read transfers"))?;
        rows.into_iter()
            .map(|(id, dir, peer, created, recorded, n, operator, mac)| {
                let fields = RegisterFields {
                    id: &id,
                    direction: &dir,
                    subject: subject.as_str(),
                    peer: &peer,
                    created_at: created,
                    templates: n,
                };
                if ring::hmac::verify(&self.transfer_keys.register, &register_message(&fields), &mac)
                    .is_err()
                {
                    tracing::error!(subject = %subject, transfer = %id, "transfer record fails its integrity check");
                    return Err(StoreError::TransferRecordTampered {
                        subject: subject.clone(),
                        transfer: id,
                    });
                }
                let peer = TerminalPublic::parse(&peer)?;
                Ok(TransferEntry {
                    transfer: id,
                    direction: if dir == "out" {
                        TransferDirection::Out
                    } else {
                        TransferDirection::In
                    },
                    peer: peer.id(),
                    peer_name: peer.name().to_owned(),
                    created_at: UnixMillis(created),
                    recorded_at: UnixMillis(recorded),
                    templates: usize::try_from(n).unwrap_or(0),
                    operator,
                    peer_key: peer,
                })
            })
            .collect()
    }
}

fn terminal_secret_aad(public: &TerminalPublic) -> Vec<u8> {
    let mut aad = AAD_TERMINAL_SECRET.to_vec();
    aad.extend_from_slice(public.to_line().as_bytes());
    aad
}

fn status_word(s: &ConsentStatus) -> &'static str {
    match s {
        ConsentStatus::Live(_) => "live",
        ConsentStatus::OtherPurpose { .. } => "given for another purpose",
        ConsentStatus::Tampered { .. } => "failing its integrity check",
        ConsentStatus::WithdrawnInRecord => "withdrawn according to the audit chain",
        ConsentStatus::None => "absent, withdrawn or expired",
    }
}

/// What a bundle carries besides the template values.
struct Meta {
    consent: ConsentRecord,
    expires_at: UnixMillis,
    transfer_consent: TransferConsentRecord,
}

/// Splits an opened payload into its metadata and templates, checking their shapes.
fn parse_payload(
    transfer: &str,
    subject: &SubjectId,
    payload: &[u8],
) -> Result<(Meta, Vec<(String, Embedding)>), StoreError> {
    let bad = |reason| StoreError::TransferPayload {
        transfer: transfer.to_owned(),
        reason,
    };
    if payload.len() < 4 {
        return Err(bad("its contents are cut short"));
    }
    let n = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]) as usize;
    if n > META_MAX || payload.len() < 4 + n {
        return Err(bad("its contents are cut short"));
    }
    let meta: serde_json::Value =
        serde_json::from_slice(&payload[4..4 + n]).map_err(|_| bad("its metadata do not parse"))?;
    let consent: ConsentRecord = serde_json::from_value(meta["consent"].clone())
        .map_err(|_| bad("its consent record does not parse"))?;
    let transfer_consent: TransferConsentRecord =
        serde_json::from_value(meta["transfer_consent"].clone())
            .map_err(|_| bad("its transfer consent does not parse"))?;
    let expires_at = meta["consent_expires_at"]
        .as_i64()
        .ok_or(bad("it carries no retention end"))?;
    if &consent.subject != subject {
        return Err(bad(
            "its consent is for another subject than its header names",
        ));
    }
    let list = meta["templates"]
        .as_array()
        .ok_or(bad("it lists no templates"))?;
    if list.is_empty() || list.len() > 64 {
        return Err(bad("it carries no templates, or too many"));
    }
    let mut rest = &payload[4 + n..];
    let mut out = Vec::with_capacity(list.len());
    for t in list {
        let model_id = t["model_id"]
            .as_str()
            .ok_or(bad("a template has no model id"))?;
        let dim = t["dim"]
            .as_u64()
            .and_then(|d| usize::try_from(d).ok())
            .filter(|&d| (1..=4096).contains(&d))
            .ok_or(bad("a template has an implausible dimension"))?;
        if rest.len() < 4 * dim {
            return Err(bad("its templates are cut short"));
        }
        let (this, more) = rest.split_at(4 * dim);
        rest = more;
        let values: Vec<f32> = this
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let e =
            Embedding::from_raw(values).map_err(|_| bad("a template is not a valid embedding"))?;
        out.push((model_id.to_owned(), e));
    }
    if !rest.is_empty() {
        return Err(bad("it carries bytes after its templates"));
    }
    Ok((
        Meta {
            consent,
            expires_at: UnixMillis(expires_at),
            transfer_consent,
        },
        out,
    ))
}

fn insert_transfer_consent(
    tx: &Transaction<'_>,
    ctx: &Ctx<'_>,
    record: &TransferConsentRecord,
) -> Result<i64, StoreError> {
    let subject = &record.subject;
    let json = serde_json::to_string(record).map_err(|source| StoreError::ConsentRecord {
        subject: subject.clone(),
        source,
    })?;
    tx.execute(
        "INSERT INTO subjects (id, age_years, created_at) VALUES (?1, ?2, ?3)
         ON CONFLICT(id) DO NOTHING",
        params![subject.as_str(), record.age_years, ctx.now.0],
    )
    .map_err(ctx.err("insert subject"))?;
    tx.execute(
        "INSERT INTO transfer_consents (subject_id, record, granted_at, mac) VALUES (?1, ?2, ?3, x'')",
        params![subject.as_str(), json, record.granted_at.0],
    )
    .map_err(ctx.err("insert transfer consent"))?;
    let id = tx.last_insert_rowid();
    let mac = ctx.transfer_rows.tag(&ledger::RowFields {
        id,
        subject: subject.as_str(),
        record: &json,
        granted_at: record.granted_at.0,
        expires_at: 0,
        withdrawn_at: None,
    });
    tx.execute(
        "UPDATE transfer_consents SET mac = ?2 WHERE id = ?1",
        params![id, mac],
    )
    .map_err(ctx.err("seal transfer consent"))?;
    ctx.audit(
        tx,
        &AuditEvent::new(AuditKind::Consent, &record.operator, "ok")
            .subject(subject)
            .details(json!({
                "transfer_consent": id,
                "terminals": record.terminals,
                "notice_version": record.notice_version,
                "method": record.method,
                "guardian": record.guardian.is_some(),
                "granted_at": record.granted_at.0,
            })),
    )?;
    Ok(id)
}

/// Marks the subject's transfer consents withdrawn (inside a withdrawal's transaction).
pub(super) fn withdraw_transfer_consents(
    tx: &Transaction<'_>,
    ctx: &Ctx<'_>,
    subject: &SubjectId,
    at: UnixMillis,
) -> Result<(), StoreError> {
    let rows: Vec<(i64, String, i64)> = {
        let mut stmt = tx
            .prepare(
                "SELECT id, record, granted_at FROM transfer_consents
                 WHERE subject_id = ?1 AND withdrawn_at IS NULL",
            )
            .map_err(ctx.err("read transfer consents"))?;
        stmt.query_map([subject.as_str()], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .map_err(ctx.err("read transfer consents"))?
        .collect::<Result<_, _>>()
        .map_err(ctx.err("read transfer consents"))?
    };
    for (id, record, granted_at) in rows {
        let mac = ctx.transfer_rows.tag(&ledger::RowFields {
            id,
            subject: subject.as_str(),
            record: &record,
            granted_at,
            expires_at: 0,
            withdrawn_at: Some(at.0),
        });
        tx.execute(
            "UPDATE transfer_consents SET withdrawn_at = ?2, mac = ?3 WHERE id = ?1",
            params![id, at.0, mac],
        )
        .map_err(ctx.err("withdraw transfer consent"))?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn insert_transfer(
    tx: &Transaction<'_>,
    ctx: &Ctx<'_>,
    transfer: &str,
    direction: TransferDirection,
    subject: &SubjectId,
    peer: &TerminalPublic,
    created_at: UnixMillis,
    templates: usize,
    operator: &str,
) -> Result<(), StoreError> {
    let direction = match direction {
        TransferDirection::Out => "out",
        TransferDirection::In => "in",
    };
    let line = peer.to_line();
    let templates = templates as i64;
    let mac = register_mac(
        ctx.transfer_register,
        &RegisterFields {
            id: transfer,
            direction,
            subject: subject.as_str(),
            peer: &line,
            created_at: created_at.0,
            templates,
        },
    );
    tx.execute(
        "INSERT INTO transfers (id, direction, subject_id, peer_id, peer, created_at, recorded_at,
                                templates, operator, mac)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            transfer,
            direction,
            subject.as_str(),
            peer.id().as_str(),
            line,
            created_at.0,
            ctx.now.0,
            templates,
            operator,
            mac
        ],
    )
    .map_err(ctx.err("record transfer"))?;
    Ok(())
}

/// What a `transfers` row's MAC covers.
struct RegisterFields<'a> {
    id: &'a str,
    direction: &'a str,
    subject: &'a str,
    peer: &'a str,
    created_at: i64,
    templates: i64,
}

fn register_message(f: &RegisterFields<'_>) -> Vec<u8> {
    let mut m = Vec::with_capacity(256);
    for part in [f.id, f.direction, f.subject, f.peer] {
        m.extend_from_slice(&(part.len() as u64).to_be_bytes());
        m.extend_from_slice(part.as_bytes());
    }
    m.extend_from_slice(&f.created_at.to_be_bytes());
    m.extend_from_slice(&f.templates.to_be_bytes());
    m
}

fn register_mac(key: &ring::hmac::Key, f: &RegisterFields<'_>) -> Vec<u8> {
    ring::hmac::sign(key, &register_message(f))
        .as_ref()
        .to_vec()
}

/// Records an applied notice (inside the withdrawal's transaction).
pub(super) fn record_notice(
    tx: &Transaction<'_>,
    ctx: &Ctx<'_>,
    notice: &WithdrawalNotice,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO withdrawal_notices (id, subject_id, issuer_id, withdrawn_at, applied_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            notice.notice_id(),
            notice.subject.as_str(),
            notice.issuer.id().as_str(),
            notice.withdrawn_at.0,
            ctx.now.0
        ],
    )
    .map_err(ctx.err("record withdrawal notice"))?;
    Ok(())
}

/// A withdrawal's audit details, naming the notice that caused it if there is one.
pub(super) fn with_notice(
    mut details: serde_json::Value,
    notice: Option<&WithdrawalNotice>,
) -> serde_json::Value {
    if let (Some(n), Some(d)) = (notice, details.as_object_mut()) {
        d.insert("notice".into(), json!(n.notice_id()));
        d.insert("issuer".into(), json!(n.issuer.id()));
        d.insert("issuer_name".into(), json!(n.issuer.name()));
        d.insert("withdrawn_at_issuer".into(), json!(n.withdrawn_at.0));
    }
    details
}
