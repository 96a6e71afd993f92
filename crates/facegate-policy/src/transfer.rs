//! Transfer of an enrollment between terminals (Art. 6, 8): the separate consent it needs, and
//! the consent a receiving terminal stores.
//!
//! Art. 8 keeps face information on the device unless the person *separately* consents. A
//! [`TransferConsent`] is that separate consent: its own record (who, when, how, taken by whom,
//! after which notice), naming the receiving terminals by [`TerminalId`]; a face consent never
//! implies it. Only this crate constructs it ([`PolicyConfig::grant_transfer`],
//! [`PolicyConfig::restore_transfer`]), and the store's export takes one that
//! [`TransferConsent::allows`] the receiver. On the receiving side
//! [`PolicyConfig::receive`] rebuilds the face consent with the *shorter* of the two
//! retentions (the sender's and its own), so a transfer never extends how long a face is kept.

use std::fmt;

use facegate_types::{SubjectId, UnixMillis};
use serde::{Deserialize, Serialize};

use crate::PolicyError;
use crate::config::PolicyConfig;
use crate::consent::{Consent, ConsentMethod, ConsentRecord, Guardian, MAX_CLOCK_SKEW_MS};

/// Most terminals one transfer consent may name.
pub const MAX_TRANSFER_TERMINALS: usize = 64;

/// The public fingerprint of a terminal's transfer keys: 32 lowercase hex digits (the first 16
/// bytes of a SHA-256 over its public keys, computed by the store). Safe to log and print.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TerminalId(String);

impl TerminalId {
    /// Length in hex digits.
    pub const LEN: usize = 32;

    pub fn new(id: impl Into<String>) -> Result<Self, PolicyError> {
        let id = id.into();
        if id.len() != Self::LEN || !id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(PolicyError::InvalidTerminalId {
                id: id.chars().take(80).collect(),
            });
        }
        Ok(Self(id))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TerminalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for TerminalId {
    type Error = PolicyError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl From<TerminalId> for String {
    fn from(t: TerminalId) -> Self {
        t.0
    }
}

/// A transfer consent as recorded: separate from the face consent (Art. 6), naming the
/// terminals the person agreed their enrollment may be sealed to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferConsentRecord {
    pub subject: SubjectId,
    /// From the enrollment record (a guardian consents under 14, as for the face consent).
    pub age_years: u8,
    /// The receiving terminals, by fingerprint; at least one.
    pub terminals: Vec<TerminalId>,
    /// The notice version shown before this consent (Art. 5).
    pub notice_version: u32,
    pub method: ConsentMethod,
    pub operator: String,
    pub guardian: Option<Guardian>,
    pub granted_at: UnixMillis,
}

/// Proof that a valid separate transfer consent exists; only this crate constructs it.
#[derive(Debug, Clone)]
pub struct TransferConsent {
    record: TransferConsentRecord,
}

impl TransferConsent {
    pub fn record(&self) -> &TransferConsentRecord {
        &self.record
    }
    pub fn subject(&self) -> &SubjectId {
        &self.record.subject
    }
    /// Whether the person consented to their enrollment going to `terminal`.
    pub fn allows(&self, terminal: &TerminalId) -> bool {
        self.record.terminals.iter().any(|t| t == terminal)
    }
}

impl PolicyConfig {
    /// Checks a new transfer consent: the same person checks as a face consent (operator, age,
    /// guardian under 14), the current notice, a date not in the future, and 1 to
    /// [`MAX_TRANSFER_TERMINALS`] distinct terminals.
    pub fn grant_transfer(
        &self,
        record: TransferConsentRecord,
        now: UnixMillis,
    ) -> Result<TransferConsent, PolicyError> {
        let current = self.notice().version();
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
        self.restore_transfer(record)
    }

    /// Re-checks a stored (or received) transfer consent against this config.
    pub fn restore_transfer(
        &self,
        record: TransferConsentRecord,
    ) -> Result<TransferConsent, PolicyError> {
        self.check_person(
            &record.subject,
            &record.operator,
            record.age_years,
            record.guardian.as_ref(),
        )?;
        let n = record.terminals.len();
        let mut sorted = record.terminals.clone();
        sorted.sort();
        sorted.dedup();
        if n == 0 || n > MAX_TRANSFER_TERMINALS || sorted.len() != n {
            return Err(PolicyError::TransferTerminals {
                subject: record.subject,
                max: MAX_TRANSFER_TERMINALS,
            });
        }
        Ok(TransferConsent { record })
    }

    /// What a receiving terminal (`this_terminal`) stores for a transferred enrollment: the
    /// sender's face consent re-checked against this config (same purpose; a notice version
    /// this terminal knows), with the retention end the *earlier* of the sender's
    /// (`sender_expires_at`) and this terminal's own; and the transfer consent, which must name
    /// this terminal and the same person. Refuses a consent already past either retention.
    pub fn receive(
        &self,
        consent: ConsentRecord,
        sender_expires_at: UnixMillis,
        transfer: TransferConsentRecord,
        this_terminal: &TerminalId,
        now: UnixMillis,
    ) -> Result<(Consent, TransferConsent), PolicyError> {
        if transfer.subject != consent.subject {
            return Err(PolicyError::TransferSubjectMismatch {
                subject: consent.subject,
                transfer: transfer.subject,
            });
        }
        let transfer = self.restore_transfer(transfer)?;
        if !transfer.allows(this_terminal) {
            return Err(PolicyError::TransferNotConsented {
                subject: consent.subject,
                terminal: this_terminal.clone(),
            });
        }
        let restored = self.restore(consent)?;
        let expires_at = restored.expires_at().min(sender_expires_at);
        let consent = restored.with_expiry(expires_at);
        if !consent.is_live(now) {
            return Err(PolicyError::ConsentExpired {
                subject: consent.subject().clone(),
                expires_at,
            });
        }
        Ok((consent, transfer))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::config::{Purpose, RawPolicyConfig};
    use proptest::prelude::*;

    const NOW: UnixMillis = UnixMillis(1_750_000_000_000);

    fn config() -> PolicyConfig {
        PolicyConfig::from_raw(RawPolicyConfig::example()).unwrap()
    }

    fn terminal(c: char) -> TerminalId {
        TerminalId::new(c.to_string().repeat(32)).unwrap()
    }

    fn transfer(terminals: Vec<TerminalId>) -> TransferConsentRecord {
        TransferConsentRecord {
            subject: SubjectId::new("emp-1").unwrap(),
            age_years: 30,
            terminals,
            notice_version: 1,
            method: ConsentMethod::Written,
            operator: "op".into(),
            guardian: None,
            granted_at: NOW,
        }
    }

    fn face() -> ConsentRecord {
        ConsentRecord {
            subject: SubjectId::new("emp-1").unwrap(),
            age_years: 30,
            purpose: Purpose::AccessControl,
            notice_version: 1,
            method: ConsentMethod::Written,
            operator: "op".into(),
            guardian: None,
            granted_at: NOW,
        }
    }

    #[test]
    fn terminal_ids_are_32_lowercase_hex_digits() {
        assert!(TerminalId::new("0123456789abcdef0123456789abcdef").is_ok());
        for bad in [
            "",
            "0123",
            &"A".repeat(32),
            &"g".repeat(32),
            &"a".repeat(33),
        ] {
            assert!(matches!(
                TerminalId::new(bad).unwrap_err(),
                PolicyError::InvalidTerminalId { .. }
            ));
        }
    }

    #[test]
    fn a_transfer_consent_names_its_terminals_and_checks_the_person() {
        let c = config()
            .grant_transfer(transfer(vec![terminal('a')]), NOW)
            .unwrap();
        assert!(c.allows(&terminal('a')));
        assert!(!c.allows(&terminal('b')));
        for t in [vec![], vec![terminal('a'), terminal('a')]] {
            assert!(matches!(
                config().grant_transfer(transfer(t), NOW).unwrap_err(),
                PolicyError::TransferTerminals { .. }
            ));
        }
        let mut child = transfer(vec![terminal('a')]);
        child.age_years = 9;
        assert!(matches!(
            config().grant_transfer(child, NOW).unwrap_err(),
            PolicyError::GuardianRequired { .. }
        ));
        let mut future = transfer(vec![terminal('a')]);
        future.granted_at = UnixMillis(NOW.0 + MAX_CLOCK_SKEW_MS + 1);
        assert!(config().grant_transfer(future, NOW).is_err());
    }

    #[test]
    fn the_receiver_keeps_the_shorter_retention_and_must_be_named() {
        let c = config();
        let sender_end = NOW.plus_days(10);
        let (consent, t) = c
            .receive(
                face(),
                sender_end,
                transfer(vec![terminal('b')]),
                &terminal('b'),
                NOW,
            )
            .unwrap();
        assert_eq!(consent.expires_at(), sender_end);
        assert!(t.allows(&terminal('b')));
        // A longer sender retention is cut to this terminal's own (365 days in the example).
        let (consent, _) = c
            .receive(
                face(),
                NOW.plus_days(9999),
                transfer(vec![terminal('b')]),
                &terminal('b'),
                NOW,
            )
            .unwrap();
        assert_eq!(consent.expires_at(), NOW.plus_days(365));
        assert!(matches!(
            c.receive(
                face(),
                sender_end,
                transfer(vec![terminal('a')]),
                &terminal('b'),
                NOW
            )
            .unwrap_err(),
            PolicyError::TransferNotConsented { .. }
        ));
        assert!(matches!(
            c.receive(
                face(),
                NOW.plus_days(1),
                transfer(vec![terminal('b')]),
                &terminal('b'),
                NOW.plus_days(1)
            )
            .unwrap_err(),
            PolicyError::ConsentExpired { .. }
        ));
        let mut other = transfer(vec![terminal('b')]);
        other.subject = SubjectId::new("emp-2").unwrap();
        assert!(matches!(
            c.receive(face(), sender_end, other, &terminal('b'), NOW)
                .unwrap_err(),
            PolicyError::TransferSubjectMismatch { .. }
        ));
    }

    proptest! {
        /// No terminal receives a person without a transfer consent naming it, and a received
        /// consent never outlives the sender's retention or this terminal's.
        #[test]
        fn no_transfer_without_consent_and_never_a_longer_retention(
            named in proptest::collection::btree_set(0u8..16, 1..5),
            receiver in 0u8..16,
            sender_days in 1u32..2000,
        ) {
            let hexd = |d: u8| char::from_digit(u32::from(d), 16).unwrap();
            let terminals: Vec<_> = named.iter().map(|&d| terminal(hexd(d))).collect();
            let me = terminal(hexd(receiver));
            let got = config().receive(
                face(), NOW.plus_days(sender_days), transfer(terminals), &me, NOW,
            );
            match got {
                Ok((c, t)) => {
                    prop_assert!(named.contains(&receiver));
                    prop_assert!(t.allows(&me));
                    prop_assert!(c.expires_at() <= NOW.plus_days(sender_days));
                    prop_assert!(c.expires_at() <= NOW.plus_days(365));
                }
                Err(e) => prop_assert!(
                    !named.contains(&receiver),
                    "refused although consented: {e}"
                ),
            }
        }
    }
}
