//! Reads for operators: subjects, consents, templates, counts.

use super::*;

impl Store {
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

    pub(super) fn summaries(
        &self,
        only: Option<&SubjectId>,
    ) -> Result<Vec<SubjectSummary>, StoreError> {
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
