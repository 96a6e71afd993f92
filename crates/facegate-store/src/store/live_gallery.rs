//! The in-memory gallery kept in step with the database: loading, reloading, matching.

use super::*;

impl Store {
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
        {
            let mut stmt = self
                .conn
                .prepare(
                    "SELECT model_id, COUNT(*) FROM templates
                     WHERE model_id != ?1 AND expires_at > ?2 GROUP BY model_id ORDER BY model_id",
                )
                .map_err(err("count templates"))?;
            load.other_models = stmt
                .query_map(params![model_id, now.0], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
                })
                .map_err(err("count templates"))?
                .map(|r| r.map(|(m, n)| (m, usize::try_from(n).unwrap_or(0))))
                .collect::<Result<_, _>>()
                .map_err(err("count templates"))?;
        }
        for (other, count) in &load.other_models {
            tracing::warn!(
                model_id,
                other_model = %other,
                templates = count,
                "templates of another model are not matched by this one: re-enroll their \
                 subjects under this model, or configure the model they were made with \
                 ([vision] precision)"
            );
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
    pub(super) fn matchable_consents(&self) -> Result<std::collections::HashSet<i64>, StoreError> {
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
}
