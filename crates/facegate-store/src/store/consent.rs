//! Consent and enrollment: the ledger (Art. 6, 7), enrollment with its checks.

use super::*;

impl Store {
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
    pub(super) fn check_consent(
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
        let probes: Vec<&Embedding> = std::iter::once(&fused).chain(samples).collect();
        let duplicate = self.find_duplicate(&subject, &probes, model_id, t)?;
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

    /// The other subject (and the similarity) that any of `probes` matches at `threshold` in
    /// the gallery of `model_id` (loaded if it is not): one face must not stand for two ids.
    pub(super) fn find_duplicate(
        &mut self,
        subject: &SubjectId,
        probes: &[&Embedding],
        model_id: &str,
        threshold: f32,
    ) -> Result<Option<(SubjectId, f32)>, StoreError> {
        let Some(first) = probes.first() else {
            return Ok(None);
        };
        if self
            .gallery
            .as_ref()
            .is_none_or(|g| g.model_id() != model_id)
        {
            let load = self.load_gallery(model_id, first.dim())?;
            for f in &load.failures {
                tracing::warn!(failure = %ErrorChain(f), "a template could not be opened for the duplicate search");
            }
        }
        let mut duplicate: Option<(SubjectId, f32)> = None;
        if let Some(g) = self.gallery.as_ref() {
            for probe in probes {
                let found = g.identify(probe, 3, SearchMode::Exact)?;
                for hit in found.hits.iter().filter(|h| &h.subject != subject) {
                    if verification_outcome(hit.score, threshold) == VerifyOutcome::Accept
                        && duplicate.as_ref().is_none_or(|(_, s)| hit.score > *s)
                    {
                        duplicate = Some((hit.subject.clone(), hit.score));
                    }
                }
            }
        }
        Ok(duplicate)
    }

    pub(super) fn enroll_with(
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
            let template =
                insert_template(tx, ctx, &subject, consent_id, model_id, &fused, expires_at)?;
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
}

/// Inserts one sealed template of `subject` under its data key (created on first use), inside
/// the caller's transaction.
pub(super) fn insert_template(
    tx: &Transaction<'_>,
    ctx: &Ctx<'_>,
    subject: &SubjectId,
    consent_id: ConsentId,
    model_id: &str,
    template: &Embedding,
    expires_at: UnixMillis,
) -> Result<TemplateId, StoreError> {
    let data_key = match load_subject_key(tx, ctx.file, ctx.keks, subject)? {
        Some(k) => k,
        None => create_subject_key(tx, ctx, subject)?,
    };
    tx.execute(
        "INSERT INTO templates (subject_id, consent_id, model_id, dim, seal_version, nonce,
                                sealed, created_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, x'', x'', ?6, ?7)",
        params![
            subject.as_str(),
            consent_id.0,
            model_id,
            template.dim() as i64,
            SEAL_VERSION,
            ctx.now.0,
            expires_at.0
        ],
    )
    .map_err(ctx.err("insert template"))?;
    let id = TemplateId(u64::try_from(tx.last_insert_rowid()).unwrap_or(0));
    let binding = TemplateBinding {
        template: id,
        subject,
        model_id,
        seal_version: SEAL_VERSION,
    };
    let (nonce, sealed) = seal::seal_template(&data_key, binding, template.as_slice())
        .map_err(|_| StoreError::Random { what: "a nonce" })?;
    tx.execute(
        "UPDATE templates SET nonce = ?1, sealed = ?2 WHERE id = ?3",
        params![nonce.as_slice(), sealed, id.0 as i64],
    )
    .map_err(ctx.err("seal template"))?;
    Ok(id)
}
