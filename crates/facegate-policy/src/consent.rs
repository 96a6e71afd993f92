//! Consent (Art. 6, 7) and retention (Art. 8): the [`Consent`] proof that only this crate can
//! construct, and the rules that decide when it expires.

use facegate_types::{SubjectId, UnixMillis};
use serde::{Deserialize, Serialize};

use crate::PolicyError;
use crate::config::{PolicyConfig, Purpose};

/// Under this age the consent of a parent or legal guardian is required (Art. 7).
pub const GUARDIAN_CONSENT_AGE_YEARS: u8 = 14;
/// Ages above this are refused as data-entry errors.
pub const MAX_PLAUSIBLE_AGE_YEARS: u8 = 130;
/// How far in the future a consent may be dated (terminal clocks drift).
pub const MAX_CLOCK_SKEW_MS: i64 = 5 * 60 * 1000;
/// Longest operator reference.
pub const MAX_OPERATOR_LEN: usize = 128;
/// Longest guardian identity reference.
pub const MAX_GUARDIAN_IDENTITY_LEN: usize = 128;

/// How the consent was given (Art. 6: written where the law requires it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsentMethod {
    /// A signed paper form, kept by the processor.
    Written,
    /// An electronic form or app, outside the terminal.
    Electronic,
    /// On the terminal's own screen, after the notice was shown there.
    Terminal,
}

impl ConsentMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            ConsentMethod::Written => "written",
            ConsentMethod::Electronic => "electronic",
            ConsentMethod::Terminal => "terminal",
        }
    }
}

/// Who consented for a child under 14 (Art. 7).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Guardian {
    /// A reference such as a document number or guardian id, 1..=128 characters.
    pub identity: String,
    pub relation: GuardianRelation,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GuardianRelation {
    Parent,
    LegalGuardian,
}

/// A consent as recorded: who, when, for what, after which notice, how, taken by whom.
/// This is data; [`Consent`] is the checked proof built from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentRecord {
    pub subject: SubjectId,
    /// From the enrollment record, never estimated from the face.
    pub age_years: u8,
    pub purpose: Purpose,
    /// The notice version shown before consent (Art. 5).
    pub notice_version: u32,
    pub method: ConsentMethod,
    /// Who took the consent (an operator id, or `self-service` for the terminal flow).
    pub operator: String,
    /// Required under 14.
    pub guardian: Option<Guardian>,
    pub granted_at: UnixMillis,
}

/// Proof that a valid, live, separate consent exists; only this crate can construct it.
///
/// Built by [`PolicyConfig::grant`] (a new consent) or [`PolicyConfig::restore`] (a stored one,
/// re-checked against the current config). It is deliberately not `Deserialize`: reading one back
/// from storage goes through `restore`.
#[derive(Debug, Clone)]
pub struct Consent {
    record: ConsentRecord,
    expires_at: UnixMillis,
}

impl Consent {
    pub fn subject(&self) -> &SubjectId {
        &self.record.subject
    }
    pub fn record(&self) -> &ConsentRecord {
        &self.record
    }
    /// When the consent and everything stored under it must be gone (Art. 8), computed from the
    /// retention in force when this value was built.
    pub fn expires_at(&self) -> UnixMillis {
        self.expires_at
    }
    /// `now < expires_at`.
    pub fn is_live(&self, now: UnixMillis) -> bool {
        now < self.expires_at
    }
    /// The same proof with an earlier end (a transferred enrollment keeps the shorter of two
    /// retentions); never a later one.
    pub(crate) fn with_expiry(self, expires_at: UnixMillis) -> Self {
        let expires_at = self.expires_at.min(expires_at);
        Self { expires_at, ..self }
    }
    /// Consumes the proof: after a withdrawal nothing may be written under it.
    pub fn withdraw(self, at: UnixMillis, operator: String, method: ConsentMethod) -> Withdrawal {
        Withdrawal {
            subject: self.record.subject,
            at,
            operator,
            method,
        }
    }
}

/// A withdrawal of consent (Art. 6): the store deletes the subject's templates at once and
/// records this. Earlier processing stays lawful, so audit records before `at` are kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Withdrawal {
    pub subject: SubjectId,
    pub at: UnixMillis,
    /// Who recorded it (an operator id, or `self-service`).
    pub operator: String,
    pub method: ConsentMethod,
}

impl PolicyConfig {
    /// Checks a new consent and returns the proof a template write needs.
    ///
    /// Refuses: another purpose than the configured one, a notice version other than the current
    /// one, no operator, under 14 without a guardian (or with an unusable guardian record), an
    /// implausible age, a date more than 5 minutes in the future, and a consent already past its
    /// retention period.
    pub fn grant(&self, record: ConsentRecord, now: UnixMillis) -> Result<Consent, PolicyError> {
        self.check_record(&record)?;
        let current = self.notice.version();
        if record.notice_version != current {
            return Err(PolicyError::StaleNotice {
                subject: record.subject,
                shown: record.notice_version,
                current,
            });
        }
        if record.granted_at.0 > now.0.saturating_add(MAX_CLOCK_SKEW_MS) {
            return Err(PolicyError::ConsentInFuture {
                subject: record.subject,
                granted_at: record.granted_at,
                now,
            });
        }
        let expires_at = self.retention_until(record.granted_at, record.age_years);
        if expires_at <= now {
            return Err(PolicyError::ConsentExpired {
                subject: record.subject,
                expires_at,
            });
        }
        tracing::debug!(
            subject = %record.subject,
            purpose = record.purpose.as_str(),
            notice_version = record.notice_version,
            method = record.method.as_str(),
            guardian = record.guardian.is_some(),
            "consent granted"
        );
        Ok(Consent { record, expires_at })
    }

    /// Re-checks a stored consent against the current config. The notice version may be older
    /// than the current one (people consented to what they were shown), but the purpose must
    /// match. The expiry is recomputed from the *current* retention, so shortening retention
    /// applies to existing data. An expired consent is returned (not refused) so that the
    /// sweeper can see it with [`PolicyConfig::expired`] and delete the data.
    pub fn restore(&self, record: ConsentRecord) -> Result<Consent, PolicyError> {
        self.check_record(&record)?;
        let current = self.notice.version();
        if record.notice_version == 0 || record.notice_version > current {
            return Err(PolicyError::UnknownNoticeVersion {
                subject: record.subject,
                shown: record.notice_version,
                current,
            });
        }
        let expires_at = self.retention_until(record.granted_at, record.age_years);
        Ok(Consent { record, expires_at })
    }

    /// The end of the retention period for a consent granted at `granted_at` to a subject of
    /// `age_years` (minors get `minor_days` when configured).
    pub fn retention_until(&self, granted_at: UnixMillis, age_years: u8) -> UnixMillis {
        self.retention.until(granted_at, age_years)
    }

    /// Whether the data under `consent` must be deleted now (Art. 8); for the store's sweeper.
    /// Uses the expiry recomputed from the current retention, so a `Consent` restored under an
    /// older, longer retention is judged by the current one too.
    pub fn expired(&self, consent: &Consent, now: UnixMillis) -> bool {
        let current = self.retention_until(consent.record.granted_at, consent.record.age_years);
        now >= consent.expires_at.min(current)
    }

    /// The checks shared by `grant` and `restore`.
    fn check_record(&self, record: &ConsentRecord) -> Result<(), PolicyError> {
        let configured = self.purpose();
        if record.purpose != configured {
            return Err(PolicyError::PurposeMismatch {
                subject: record.subject.clone(),
                consented: record.purpose,
                configured,
            });
        }
        self.check_person(
            &record.subject,
            &record.operator,
            record.age_years,
            record.guardian.as_ref(),
        )
    }

    /// The checks of who consents (operator, plausible age, a usable guardian under 14), shared
    /// by face and transfer consents.
    pub(crate) fn check_person(
        &self,
        subject: &SubjectId,
        operator: &str,
        age_years: u8,
        guardian: Option<&Guardian>,
    ) -> Result<(), PolicyError> {
        let operator = operator.trim();
        if operator.is_empty() || operator.len() > MAX_OPERATOR_LEN {
            return Err(PolicyError::MissingOperator {
                subject: subject.clone(),
                max: MAX_OPERATOR_LEN,
            });
        }
        if age_years > MAX_PLAUSIBLE_AGE_YEARS {
            return Err(PolicyError::ImplausibleAge {
                subject: subject.clone(),
                age: age_years,
                max: MAX_PLAUSIBLE_AGE_YEARS,
            });
        }
        match guardian {
            None if age_years < GUARDIAN_CONSENT_AGE_YEARS => {
                return Err(PolicyError::GuardianRequired {
                    subject: subject.clone(),
                    age: age_years,
                });
            }
            None => {}
            Some(guardian) => {
                let identity = guardian.identity.trim();
                if identity.is_empty() {
                    return Err(PolicyError::InvalidGuardian {
                        subject: subject.clone(),
                        reason: "the guardian identity is empty; record a document number or \
                                 guardian id",
                    });
                }
                if guardian.identity.chars().count() > MAX_GUARDIAN_IDENTITY_LEN {
                    return Err(PolicyError::InvalidGuardian {
                        subject: subject.clone(),
                        reason: "the guardian identity is longer than 128 characters; record a \
                                 reference, not a document",
                    });
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::config::RawPolicyConfig;

    const NOW: UnixMillis = UnixMillis(1_750_000_000_000);

    fn config() -> PolicyConfig {
        PolicyConfig::from_raw(RawPolicyConfig::example()).unwrap()
    }

    fn record(age: u8) -> ConsentRecord {
        ConsentRecord {
            subject: SubjectId::new("emp-00042").unwrap(),
            age_years: age,
            purpose: Purpose::AccessControl,
            notice_version: 1,
            method: ConsentMethod::Written,
            operator: "op-7".into(),
            guardian: None,
            granted_at: NOW,
        }
    }

    fn guardian() -> Guardian {
        Guardian {
            identity: "G-123456".into(),
            relation: GuardianRelation::Parent,
        }
    }

    #[test]
    fn adult_consent_is_granted_with_retention_expiry() {
        let c = config().grant(record(30), NOW).unwrap();
        assert_eq!(c.subject().as_str(), "emp-00042");
        assert_eq!(c.expires_at(), NOW.plus_days(365));
        assert!(c.is_live(NOW));
        assert!(!c.is_live(NOW.plus_days(365)));
        assert!(!config().expired(&c, NOW.plus_days(364)));
        assert!(config().expired(&c, NOW.plus_days(365)));
    }

    #[test]
    fn under_14_needs_a_guardian() {
        let err = config().grant(record(13), NOW).unwrap_err();
        assert!(matches!(err, PolicyError::GuardianRequired { age: 13, .. }));
        assert!(err.to_string().contains("Art. 7"));
        assert!(config().restore(record(13)).is_err());
        let mut r = record(13);
        r.guardian = Some(guardian());
        let c = config().grant(r, NOW).unwrap();
        assert_eq!(c.expires_at(), NOW.plus_days(180), "minor retention");
        assert!(config().grant(record(14), NOW).is_ok());
    }

    #[test]
    fn guardian_identity_is_checked() {
        for identity in [String::new(), "   ".into(), "x".repeat(129)] {
            let mut r = record(9);
            r.guardian = Some(Guardian {
                identity,
                relation: GuardianRelation::LegalGuardian,
            });
            assert!(matches!(
                config().grant(r, NOW).unwrap_err(),
                PolicyError::InvalidGuardian { .. }
            ));
        }
        let mut r = record(9);
        r.guardian = Some(Guardian {
            identity: "x".repeat(128),
            relation: GuardianRelation::LegalGuardian,
        });
        assert!(config().grant(r, NOW).is_ok());
    }

    #[test]
    fn purpose_must_match() {
        let mut r = record(30);
        r.purpose = Purpose::Attendance;
        let err = config().grant(r.clone(), NOW).unwrap_err();
        assert!(matches!(err, PolicyError::PurposeMismatch { .. }));
        assert!(err.to_string().contains("`attendance`"));
        assert!(matches!(
            config().restore(r).unwrap_err(),
            PolicyError::PurposeMismatch { .. }
        ));
    }

    #[test]
    fn notice_version_must_be_current_for_grant_and_known_for_restore() {
        let mut raw = RawPolicyConfig::example();
        raw.notice.version = 3;
        let c = PolicyConfig::from_raw(raw).unwrap();
        let mut r = record(30);
        r.notice_version = 2;
        assert!(matches!(
            c.grant(r.clone(), NOW).unwrap_err(),
            PolicyError::StaleNotice {
                shown: 2,
                current: 3,
                ..
            }
        ));
        assert!(
            c.restore(r.clone()).is_ok(),
            "older notice is fine for stored consent"
        );
        r.notice_version = 4;
        assert!(matches!(
            c.restore(r.clone()).unwrap_err(),
            PolicyError::UnknownNoticeVersion { .. }
        ));
        r.notice_version = 0;
        assert!(c.restore(r).is_err());
    }

    #[test]
    fn operator_is_required() {
        for op in ["", "  ", &"o".repeat(129)] {
            let mut r = record(30);
            r.operator = op.to_owned();
            assert!(matches!(
                config().grant(r, NOW).unwrap_err(),
                PolicyError::MissingOperator { .. }
            ));
        }
    }

    #[test]
    fn implausible_age_is_refused() {
        let mut r = record(131);
        r.guardian = Some(guardian());
        assert!(matches!(
            config().grant(r, NOW).unwrap_err(),
            PolicyError::ImplausibleAge { age: 131, .. }
        ));
    }

    #[test]
    fn future_dates_beyond_skew_are_refused() {
        let mut r = record(30);
        r.granted_at = UnixMillis(NOW.0 + MAX_CLOCK_SKEW_MS);
        assert!(config().grant(r.clone(), NOW).is_ok());
        r.granted_at = UnixMillis(NOW.0 + MAX_CLOCK_SKEW_MS + 1);
        assert!(matches!(
            config().grant(r, NOW).unwrap_err(),
            PolicyError::ConsentInFuture { .. }
        ));
    }

    #[test]
    fn already_expired_consent_is_refused_by_grant_but_restored_as_expired() {
        let mut r = record(30);
        r.granted_at = NOW.minus_days(365);
        assert!(matches!(
            config().grant(r.clone(), NOW).unwrap_err(),
            PolicyError::ConsentExpired { .. }
        ));
        let c = config().restore(r).unwrap();
        assert!(!c.is_live(NOW));
        assert!(config().expired(&c, NOW));
    }

    #[test]
    fn shortened_retention_applies_to_existing_consents() {
        let long = config();
        let c = long.grant(record(30), NOW).unwrap();
        let mut raw = RawPolicyConfig::example();
        raw.retention.days = 30;
        raw.retention.minor_days = None;
        let short = PolicyConfig::from_raw(raw).unwrap();
        // The old proof judged by the new config...
        assert!(short.expired(&c, NOW.plus_days(30)));
        // ...and a restore under the new config.
        let restored = short.restore(c.record().clone()).unwrap();
        assert_eq!(restored.expires_at(), NOW.plus_days(30));
    }

    #[test]
    fn withdrawal_consumes_the_proof() {
        let c = config().grant(record(30), NOW).unwrap();
        let w = c.withdraw(
            NOW.plus_days(1),
            "self-service".into(),
            ConsentMethod::Terminal,
        );
        assert_eq!(w.subject.as_str(), "emp-00042");
        assert_eq!(w.at, NOW.plus_days(1));
    }

    #[test]
    fn serde_spellings_are_snake_case() {
        let r = ConsentRecord {
            guardian: Some(Guardian {
                identity: "G-1".into(),
                relation: GuardianRelation::LegalGuardian,
            }),
            ..record(10)
        };
        let s = toml::to_string(&r).unwrap();
        assert!(s.contains("purpose = \"access_control\""), "{s}");
        assert!(s.contains("method = \"written\""), "{s}");
        assert!(s.contains("relation = \"legal_guardian\""), "{s}");
        let back: ConsentRecord = toml::from_str(&s).unwrap();
        assert_eq!(back, r);
    }
}
