//! Alternative credentials (Art. 10) as rules: which kinds exist, what a well-formed value is,
//! and the lockout that makes guessing one slow.
//!
//! A credential register entry belongs to a *holder*, who need not have any face consent: the
//! person who refuses face recognition is issued a PIN or a card and passes with it (Art. 10,
//! 12). This module holds no register (the store does); it only judges values and failures.

use std::fmt;
use std::str::FromStr;

use facegate_types::UnixMillis;
use serde::{Deserialize, Serialize};

use crate::PolicyError;

/// Longest credential value accepted (a QR payload can be long; anything longer is refused).
pub const MAX_CREDENTIAL_LEN: usize = 1024;
/// PIN length bounds (digits).
pub const PIN_DIGITS: std::ops::RangeInclusive<usize> = 4..=12;

/// The kinds of credential the register holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialKind {
    Pin,
    Card,
    Qr,
}

impl CredentialKind {
    pub const ALL: [CredentialKind; 3] = [Self::Pin, Self::Card, Self::Qr];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pin => "pin",
            Self::Card => "card",
            Self::Qr => "qr",
        }
    }

    /// Checks a presented or issued value and returns its canonical form (trimmed; card numbers
    /// upper-cased, so `04a1` and `04A1` are one card).
    pub fn canonical(self, value: &str) -> Result<String, PolicyError> {
        let v = value.trim();
        let bad = |reason: String| {
            Err(PolicyError::InvalidCredential {
                kind: self.as_str(),
                reason,
            })
        };
        if v.is_empty() {
            return bad("is empty".into());
        }
        if v.len() > MAX_CREDENTIAL_LEN {
            return bad(format!("is longer than {MAX_CREDENTIAL_LEN} bytes"));
        }
        match self {
            Self::Pin => {
                if !v.bytes().all(|b| b.is_ascii_digit()) {
                    return bad("must be digits only".into());
                }
                if !PIN_DIGITS.contains(&v.len()) {
                    return bad(format!(
                        "must have {} to {} digits",
                        PIN_DIGITS.start(),
                        PIN_DIGITS.end()
                    ));
                }
                Ok(v.to_owned())
            }
            Self::Card => {
                if v.len() > 64 || !v.bytes().all(|b| b.is_ascii_alphanumeric()) {
                    return bad("must be 1 to 64 letters or digits (the card number)".into());
                }
                Ok(v.to_ascii_uppercase())
            }
            Self::Qr => {
                if v.chars().any(char::is_control) {
                    return bad("must not contain control characters".into());
                }
                Ok(v.to_owned())
            }
        }
    }
}

impl fmt::Display for CredentialKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CredentialKind {
    type Err = PolicyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| PolicyError::InvalidCredential {
                kind: "kind",
                reason: format!("{s:?} is not one of pin, card, qr"),
            })
    }
}

/// `[lockout]`, as parsed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLockout {
    /// Failures (unknown, revoked or expired credential; a face that does not match a claim) in
    /// a row before a lockout.
    #[serde(default = "default_max_failures")]
    pub max_failures: u32,
    /// The first lockout; each further one doubles it up to `max_seconds`.
    #[serde(default = "default_base_seconds")]
    pub base_seconds: u32,
    #[serde(default = "default_max_seconds")]
    pub max_seconds: u32,
    /// A success, or this long without a failure, clears the back-off.
    #[serde(default = "default_reset_minutes")]
    pub reset_minutes: u32,
}

fn default_max_failures() -> u32 {
    5
}
fn default_base_seconds() -> u32 {
    30
}
fn default_max_seconds() -> u32 {
    3600
}
fn default_reset_minutes() -> u32 {
    24 * 60
}

impl Default for RawLockout {
    fn default() -> Self {
        Self {
            max_failures: default_max_failures(),
            base_seconds: default_base_seconds(),
            max_seconds: default_max_seconds(),
            reset_minutes: default_reset_minutes(),
        }
    }
}

/// `[lockout]`, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockoutPolicy {
    max_failures: u32,
    base_ms: i64,
    max_ms: i64,
    reset_ms: i64,
}

impl LockoutPolicy {
    pub fn from_raw(raw: RawLockout) -> Result<Self, PolicyError> {
        let bad = |field: &'static str, reason: &str| {
            Err(PolicyError::InvalidConfig {
                field,
                reason: reason.to_owned(),
            })
        };
        if !(1..=20).contains(&raw.max_failures) {
            return bad(
                "[lockout].max_failures",
                "must be 1 to 20 (a 4-digit PIN sweep must take days)",
            );
        }
        if !(1..=3600).contains(&raw.base_seconds) {
            return bad("[lockout].base_seconds", "must be 1 to 3600");
        }
        if raw.max_seconds < raw.base_seconds || raw.max_seconds > 7 * 86_400 {
            return bad(
                "[lockout].max_seconds",
                "must be at least base_seconds and at most 7 days",
            );
        }
        if !(1..=30 * 24 * 60).contains(&raw.reset_minutes) {
            return bad("[lockout].reset_minutes", "must be 1 minute to 30 days");
        }
        Ok(Self {
            max_failures: raw.max_failures,
            base_ms: i64::from(raw.base_seconds) * 1000,
            max_ms: i64::from(raw.max_seconds) * 1000,
            reset_ms: i64::from(raw.reset_minutes) * 60_000,
        })
    }

    pub fn max_failures(&self) -> u32 {
        self.max_failures
    }

    /// The length of lockout number `n` (0-based): base, doubled each time, capped.
    pub fn lockout_ms(&self, n: u32) -> i64 {
        let shift = n.min(30);
        self.base_ms.saturating_mul(1_i64 << shift).min(self.max_ms)
    }

    /// The shortest time in which `guesses` wrong values can be tried against one terminal
    /// under this policy (every `max_failures` failures cost a lockout). Pure; the figure the
    /// README quotes for a 10,000-PIN sweep.
    pub fn min_sweep_ms(&self, guesses: u64) -> i64 {
        let per = u64::from(self.max_failures);
        let lockouts = guesses.saturating_sub(1) / per;
        (0..lockouts).fold(0_i64, |acc, n| {
            acc.saturating_add(self.lockout_ms(u32::try_from(n).unwrap_or(u32::MAX)))
        })
    }
}

impl Default for LockoutPolicy {
    fn default() -> Self {
        match Self::from_raw(RawLockout::default()) {
            Ok(p) => p,
            Err(_) => unreachable!("the default lockout policy is valid"),
        }
    }
}

/// What a failure did to a [`LockoutState`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureEffect {
    /// Counted; `remaining` more failures before a lockout.
    Counted { remaining: u32 },
    /// This failure started lockout number `n` (1-based), lasting until `until`.
    LockedOut { until: UnixMillis, n: u32 },
}

/// The failures of one key (a terminal, or a claimed identity) under a [`LockoutPolicy`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LockoutState {
    failures: u32,
    lockouts: u32,
    locked_until: Option<UnixMillis>,
    last_failure: Option<UnixMillis>,
}

impl LockoutState {
    /// `Some(until)` while locked out at `now`.
    pub fn locked_until(&self, now: UnixMillis) -> Option<UnixMillis> {
        self.locked_until.filter(|&u| now < u)
    }

    /// Records a failure at `now` (callers do not count attempts made while locked out).
    pub fn failure(&mut self, policy: &LockoutPolicy, now: UnixMillis) -> FailureEffect {
        if self
            .last_failure
            .is_some_and(|t| now.0.saturating_sub(t.0) >= policy.reset_ms)
        {
            *self = Self::default();
        }
        self.last_failure = Some(now);
        self.failures += 1;
        if self.failures >= policy.max_failures {
            let until = UnixMillis(now.0.saturating_add(policy.lockout_ms(self.lockouts)));
            self.lockouts = self.lockouts.saturating_add(1);
            self.failures = 0;
            self.locked_until = Some(until);
            FailureEffect::LockedOut {
                until,
                n: self.lockouts,
            }
        } else {
            FailureEffect::Counted {
                remaining: policy.max_failures - self.failures,
            }
        }
    }

    /// A success clears the failures and the back-off.
    pub fn success(&mut self) {
        *self = Self::default();
    }

    /// Whether the state carries nothing (can be forgotten).
    pub fn is_clear(&self, policy: &LockoutPolicy, now: UnixMillis) -> bool {
        self.locked_until(now).is_none()
            && self
                .last_failure
                .is_none_or(|t| now.0.saturating_sub(t.0) >= policy.reset_ms)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn values_are_canonicalised_and_checked() {
        assert_eq!(CredentialKind::Pin.canonical(" 0042\n").unwrap(), "0042");
        assert!(CredentialKind::Pin.canonical("12a4").is_err());
        assert!(CredentialKind::Pin.canonical("123").is_err());
        assert!(CredentialKind::Pin.canonical(&"1".repeat(13)).is_err());
        assert_eq!(CredentialKind::Card.canonical("04a1b2").unwrap(), "04A1B2");
        assert!(CredentialKind::Card.canonical("04 a1").is_err());
        assert!(CredentialKind::Qr.canonical("a\u{7}b").is_err());
        assert!(CredentialKind::Qr.canonical(&"q".repeat(1025)).is_err());
        assert!(CredentialKind::Qr.canonical("").is_err());
        let err = "fingerprint".parse::<CredentialKind>().unwrap_err();
        assert!(err.to_string().contains("pin, card, qr"), "{err}");
    }

    #[test]
    fn lockout_backs_off_and_resets() {
        let p = LockoutPolicy::default();
        let mut s = LockoutState::default();
        let t0 = UnixMillis(1_000_000);
        for i in 0..4 {
            assert_eq!(
                s.failure(&p, t0),
                FailureEffect::Counted { remaining: 4 - i }
            );
        }
        let FailureEffect::LockedOut { until, n } = s.failure(&p, t0) else {
            panic!("fifth failure must lock out");
        };
        assert_eq!((until.0 - t0.0, n), (30_000, 1));
        assert_eq!(s.locked_until(UnixMillis(t0.0 + 29_999)), Some(until));
        assert_eq!(s.locked_until(until), None);
        // The next lockout doubles.
        for _ in 0..4 {
            s.failure(&p, until);
        }
        let FailureEffect::LockedOut { until: u2, n } = s.failure(&p, until) else {
            panic!()
        };
        assert_eq!((u2.0 - until.0, n), (60_000, 2));
        // A success clears it all.
        s.success();
        assert!(s.is_clear(&p, u2));
        assert_eq!(s.failure(&p, u2), FailureEffect::Counted { remaining: 4 });
        // A day without failures clears it too.
        let later = UnixMillis(u2.0 + 86_400_000);
        assert_eq!(
            s.failure(&p, later),
            FailureEffect::Counted { remaining: 4 }
        );
    }

    #[test]
    fn a_four_digit_pin_sweep_takes_weeks() {
        let p = LockoutPolicy::default();
        let days = p.min_sweep_ms(10_000) as f64 / 86_400_000.0;
        // 1,999 lockouts, all but the first seven at the one-hour cap.
        assert!(days > 80.0, "{days} days");
        assert_eq!(p.lockout_ms(0), 30_000);
        assert_eq!(p.lockout_ms(7), 3_600_000);
        assert_eq!(p.lockout_ms(40), 3_600_000);
    }

    #[test]
    fn implausible_lockout_configs_are_refused() {
        for raw in [
            RawLockout {
                max_failures: 0,
                ..RawLockout::default()
            },
            RawLockout {
                max_failures: 1000,
                ..RawLockout::default()
            },
            RawLockout {
                base_seconds: 0,
                ..RawLockout::default()
            },
            RawLockout {
                max_seconds: 1,
                ..RawLockout::default()
            },
        ] {
            let err = LockoutPolicy::from_raw(raw).unwrap_err().to_string();
            assert!(err.contains("[lockout]"), "{err}");
        }
    }
}
