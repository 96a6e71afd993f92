//! Withdrawal, deletion and the retention sweep: what removes a person and leaves no residue.

use super::*;

impl Store {
    /// Withdrawal (Art. 6): deletes the subject's templates and data key at once, marks its
    /// consents withdrawn (the ledger keeps them: earlier processing stays lawful), records it.
    #[tracing::instrument(skip_all, fields(subject = %withdrawal.subject))]
    pub fn withdraw(&mut self, withdrawal: &Withdrawal) -> Result<RemovalReport, StoreError> {
        self.withdraw_with(withdrawal, None)
    }

    /// [`Store::withdraw`], with `notice` the signed notice from another terminal that caused it
    /// (recorded in the same transaction, and named in the audit record).
    pub(super) fn withdraw_with(
        &mut self,
        withdrawal: &Withdrawal,
        notice: Option<&crate::transfer::WithdrawalNotice>,
    ) -> Result<RemovalReport, StoreError> {
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
            // The separate transfer consent goes with the face consent: nothing is left to send.
            transfer::withdraw_transfer_consents(tx, ctx, &subject, withdrawal.at)?;
            if let Some(n) = notice {
                transfer::record_notice(tx, ctx, n)?;
            }
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
                    .details(transfer::with_notice(
                        json!({
                            "templates_deleted": report.templates_deleted,
                            "consents_withdrawn": report.consents_affected,
                            "method": withdrawal.method,
                            "at": withdrawal.at.0,
                        }),
                        notice,
                    )),
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

    pub(super) fn require_subject(&self, subject: &SubjectId) -> Result<(), StoreError> {
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
    pub(super) fn after_removal(
        &mut self,
        subject: &SubjectId,
        operator: &str,
        report: &mut RemovalReport,
    ) {
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
}
