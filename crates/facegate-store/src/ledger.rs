//! Integrity of the consent ledger: each row carries a keyed MAC over what makes it live (id,
//! subject, the consent record, grant, expiry and withdrawal), so an edited row (a grant moved
//! into the future, an expiry pushed back, a withdrawal cleared) is refused instead of trusted;
//! and a row is never live for a subject the audit chain shows withdrawn or deleted after the
//! grant, so rows restored from an older copy do not bring a withdrawn person back.

use std::path::Path;

use facegate_policy::{Consent, Purpose};
use facegate_types::{SubjectId, UnixMillis};
use ring::hmac;
use rusqlite::{Connection, OptionalExtension, params};

use crate::seal::Secret;
use crate::{Store, StoreError};

const LABEL: &[u8] = b"facegate-consent-row/v1";

/// The MAC key of ledger rows, derived from the audit secret.
pub(crate) struct RowKey(hmac::Key);

impl std::fmt::Debug for RowKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RowKey(<redacted>)")
    }
}

/// The fields a row's MAC covers.
pub(crate) struct RowFields<'a> {
    pub id: i64,
    pub subject: &'a str,
    pub record: &'a str,
    pub granted_at: i64,
    pub expires_at: i64,
    pub withdrawn_at: Option<i64>,
}

impl RowKey {
    pub(crate) fn derive(audit_secret: &Secret) -> Self {
        Self(crate::seal::derived_hmac_key(audit_secret, LABEL))
    }

    /// The MAC key of another table's rows (same layout, independent key).
    pub(crate) fn derive_for(audit_secret: &Secret, label: &[u8]) -> Self {
        Self(crate::seal::derived_hmac_key(audit_secret, label))
    }

    fn message(f: &RowFields<'_>) -> Vec<u8> {
        let mut m = Vec::with_capacity(64 + f.record.len());
        m.extend_from_slice(&f.id.to_be_bytes());
        for part in [f.subject.as_bytes(), f.record.as_bytes()] {
            m.extend_from_slice(&(part.len() as u64).to_be_bytes());
            m.extend_from_slice(part);
        }
        m.extend_from_slice(&f.granted_at.to_be_bytes());
        m.extend_from_slice(&f.expires_at.to_be_bytes());
        match f.withdrawn_at {
            Some(w) => {
                m.push(1);
                m.extend_from_slice(&w.to_be_bytes());
            }
            None => m.push(0),
        }
        m
    }

    pub(crate) fn tag(&self, f: &RowFields<'_>) -> Vec<u8> {
        hmac::sign(&self.0, &Self::message(f)).as_ref().to_vec()
    }

    pub(crate) fn verify(&self, f: &RowFields<'_>, mac: &[u8]) -> bool {
        hmac::verify(&self.0, &Self::message(f), mac).is_ok()
    }
}

/// Recomputes the MAC of the consent rows of `subject` (after the store changed them).
pub(crate) fn reseal_subject(
    conn: &Connection,
    file: &Path,
    key: &RowKey,
    subject: &str,
) -> Result<(), StoreError> {
    reseal_where(conn, file, key, "subject_id = ?1", params![subject])
}

/// Gives every row without a MAC one (rows written before the ledger was MACed: trusted once,
/// at the upgrade).
pub(crate) fn seal_unsealed(
    conn: &Connection,
    file: &Path,
    key: &RowKey,
) -> Result<usize, StoreError> {
    let n: i64 = conn
        .query_row("SELECT COUNT(*) FROM consents WHERE mac IS NULL", [], |r| {
            r.get(0)
        })
        .map_err(StoreError::db_at(file, "read consents"))?;
    if n > 0 {
        reseal_where(conn, file, key, "mac IS NULL", params![])?;
    }
    Ok(usize::try_from(n).unwrap_or(0))
}

/// One ledger row with everything its MAC covers, and the MAC.
struct Row {
    id: i64,
    subject: String,
    record: String,
    granted_at: i64,
    expires_at: i64,
    withdrawn_at: Option<i64>,
    mac: Option<Vec<u8>>,
}

impl Row {
    fn fields(&self) -> RowFields<'_> {
        RowFields {
            id: self.id,
            subject: &self.subject,
            record: &self.record,
            granted_at: self.granted_at,
            expires_at: self.expires_at,
            withdrawn_at: self.withdrawn_at,
        }
    }
}

/// The consent rows matching `filter` (an SQL condition on `consents`, may end in ORDER BY).
fn read_rows(
    conn: &Connection,
    file: &Path,
    filter: &str,
    p: &[&dyn rusqlite::ToSql],
) -> Result<Vec<Row>, StoreError> {
    let err = |op| StoreError::db_at(file, op);
    let mut stmt = conn
        .prepare(&format!(
            "SELECT id, subject_id, record, granted_at, expires_at, withdrawn_at, mac \
             FROM consents WHERE {filter}"
        ))
        .map_err(err("read consents"))?;
    let it = stmt
        .query_map(p, |r| {
            Ok(Row {
                id: r.get(0)?,
                subject: r.get(1)?,
                record: r.get(2)?,
                granted_at: r.get(3)?,
                expires_at: r.get(4)?,
                withdrawn_at: r.get(5)?,
                mac: r.get(6)?,
            })
        })
        .map_err(err("read consents"))?;
    it.collect::<Result<_, _>>().map_err(err("read consents"))
}

fn reseal_where(
    conn: &Connection,
    file: &Path,
    key: &RowKey,
    filter: &str,
    p: &[&dyn rusqlite::ToSql],
) -> Result<(), StoreError> {
    for row in read_rows(conn, file, filter, p)? {
        let mac = key.tag(&row.fields());
        conn.execute(
            "UPDATE consents SET mac = ?2 WHERE id = ?1",
            params![row.id, mac],
        )
        .map_err(StoreError::db_at(file, "seal consent row"))?;
    }
    Ok(())
}

enum Judged {
    Live(Consent),
    OtherPurpose(Purpose),
    Tampered(i64),
    Withdrawn,
}

/// What the ledger says of a subject's consent now.
#[derive(Debug, Clone)]
pub enum ConsentStatus {
    /// A live consent for the configured purpose.
    Live(Consent),
    /// The only live consent is for another purpose than the configured one: never matched.
    OtherPurpose { consented: Purpose },
    /// A ledger row was edited outside facegate (its MAC does not hold), or its grant time lies
    /// in the future: refused, and worth an alert.
    Tampered { consent: i64 },
    /// The audit chain records a withdrawal or deletion after this consent's grant (the row
    /// came back from an older copy): refused.
    WithdrawnInRecord,
    /// No live consent.
    None,
}

impl Store {
    /// The subject's consent as the gate must judge it (see [`ConsentStatus`]).
    pub fn consent_status(&self, subject: &SubjectId) -> Result<ConsentStatus, StoreError> {
        let mut other = None;
        let mut live = None;
        for (_, j) in self.judge_rows(subject)? {
            match j {
                Judged::Tampered(id) => return Ok(ConsentStatus::Tampered { consent: id }),
                Judged::Withdrawn => return Ok(ConsentStatus::WithdrawnInRecord),
                Judged::OtherPurpose(p) => other = Some(p),
                Judged::Live(c) => {
                    if live.is_none() {
                        live = Some(c);
                    }
                }
            }
        }
        Ok(match (live, other) {
            (Some(c), _) => ConsentStatus::Live(c),
            (None, Some(consented)) => ConsentStatus::OtherPurpose { consented },
            (None, None) => ConsentStatus::None,
        })
    }

    /// The ids of the subject's consents whose templates may be matched now.
    pub(crate) fn matchable_consent_ids(
        &self,
        subject: &SubjectId,
    ) -> Result<Vec<i64>, StoreError> {
        let rows = self.judge_rows(subject)?;
        if rows
            .iter()
            .any(|(_, j)| matches!(j, Judged::Tampered(_) | Judged::Withdrawn))
        {
            return Ok(Vec::new());
        }
        Ok(rows
            .into_iter()
            .filter_map(|(id, j)| matches!(j, Judged::Live(_)).then_some(id))
            .collect())
    }

    /// Every unwithdrawn, unexpired ledger row of `subject`, judged, latest expiry first.
    fn judge_rows(&self, subject: &SubjectId) -> Result<Vec<(i64, Judged)>, StoreError> {
        let now = self.now();
        let rows = read_rows(
            &self.conn,
            &self.file,
            "subject_id = ?1 AND withdrawn_at IS NULL AND expires_at > ?2 ORDER BY expires_at DESC",
            params![subject.as_str(), now.0],
        )?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let (id, json, granted_at) = (row.id, &row.record, row.granted_at);
            let record = crate::store::parse_record(subject, json)?;
            if !row
                .mac
                .as_ref()
                .is_some_and(|m| self.row_key.verify(&row.fields(), m))
                || record.granted_at.0 != granted_at
                || granted_at > now.0.saturating_add(facegate_policy::MAX_CLOCK_SKEW_MS)
            {
                tracing::error!(subject = %subject, consent = id, "consent ledger row fails its integrity check");
                out.push((id, Judged::Tampered(id)));
                continue;
            }
            if self.withdrawn_in_record(subject, UnixMillis(granted_at))? {
                tracing::error!(subject = %subject, consent = id, "consent row of a subject the audit chain shows withdrawn");
                out.push((id, Judged::Withdrawn));
                continue;
            }
            if record.purpose != self.policy.purpose() {
                out.push((id, Judged::OtherPurpose(record.purpose)));
                continue;
            }
            let consent = self
                .policy
                .restore(record)
                .map_err(|source| StoreError::Policy {
                    subject: subject.clone(),
                    source,
                })?;
            if consent.is_live(now) {
                out.push((id, Judged::Live(consent)));
            }
        }
        Ok(out)
    }

    /// Whether the audit chain records a withdrawal or deletion of `subject` at or after `since`.
    pub(crate) fn withdrawn_in_record(
        &self,
        subject: &SubjectId,
        since: UnixMillis,
    ) -> Result<bool, StoreError> {
        self.conn
            .query_row(
                "SELECT 1 FROM audit WHERE subject_id = ?1 AND kind IN ('withdrawal', 'deletion')
                 AND outcome = 'ok' AND at >= ?2 LIMIT 1",
                params![subject.as_str(), since.0],
                |_| Ok(()),
            )
            .optional()
            .map(|o| o.is_some())
            .map_err(StoreError::db_at(&self.file, "read audit"))
    }

    /// Live templates whose consent was given for another purpose than the configured one:
    /// `(subject, consented purpose, templates)`. They are never matched; `facegate doctor`
    /// lists them (withdraw or re-consent them for the current purpose).
    pub fn other_purpose_templates(&self) -> Result<Vec<(SubjectId, String, u64)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT t.subject_id, json_extract(c.record, '$.purpose'), COUNT(*)
                 FROM templates t JOIN consents c ON c.id = t.consent_id
                 WHERE json_extract(c.record, '$.purpose') IS NOT ?1
                 GROUP BY t.subject_id, 2 ORDER BY t.subject_id",
            )
            .map_err(StoreError::db_at(&self.file, "read templates"))?;
        let rows = stmt
            .query_map([self.policy.purpose().as_str()], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, Option<String>>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })
            .map_err(StoreError::db_at(&self.file, "read templates"))?;
        let mut out = Vec::new();
        for r in rows {
            let (s, p, n) = r.map_err(StoreError::db_at(&self.file, "read templates"))?;
            if let Ok(s) = SubjectId::new(s) {
                out.push((s, p.unwrap_or_default(), u64::try_from(n).unwrap_or(0)));
            }
        }
        Ok(out)
    }
}
