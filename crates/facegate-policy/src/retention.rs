//! Retention (Art. 8): how long a consent and the templates under it live. `[retention]` is
//! parsed here ([`RawRetention`]), validated into a [`RetentionPolicy`], and the expiry of every
//! consent is computed by [`RetentionPolicy::until`] and nowhere else.

use std::time::Duration;

use facegate_types::UnixMillis;
use serde::{Deserialize, Serialize};

use crate::PolicyError;

/// Under this age `[retention].minor_days` applies (minors in PRC law are under 18).
pub const MINOR_AGE_YEARS: u8 = 18;

/// Longest retention accepted (10 years). Art. 8 asks for the shortest time needed; anything
/// longer than this is a typo or a purpose the runtime is not built for.
pub const MAX_RETENTION_DAYS: u32 = 3650;
/// `[retention]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetention {
    /// Days a consent (and the templates under it) lives after it is granted.
    pub days: u32,
    /// Optional shorter period for minors (under 18).
    #[serde(default)]
    pub minor_days: Option<u32>,
    /// How often the sweeper deletes expired data (it also runs at start-up).
    #[serde(default = "default_sweep_minutes")]
    pub sweep_interval_minutes: u32,
}

fn default_sweep_minutes() -> u32 {
    60
}

/// `[retention]`, validated: `1 <= minor_days <= days <= MAX_RETENTION_DAYS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionPolicy {
    days: u32,
    minor_days: Option<u32>,
    sweep_interval_minutes: u32,
}

impl RetentionPolicy {
    pub fn from_raw(raw: RawRetention) -> Result<Self, PolicyError> {
        if raw.days == 0 || raw.days > MAX_RETENTION_DAYS {
            return Err(PolicyError::InvalidConfig {
                field: "[retention].days",
                reason: format!(
                    "{} is outside 1..={MAX_RETENTION_DAYS}; keep face data no longer than the \
                     purpose needs (Art. 8 of the Measures)",
                    raw.days
                ),
            });
        }
        if let Some(minor) = raw.minor_days
            && (minor == 0 || minor > raw.days)
        {
            return Err(PolicyError::InvalidConfig {
                field: "[retention].minor_days",
                reason: format!(
                    "{minor} must be between 1 and [retention].days ({}); minors never keep \
                     data longer than adults",
                    raw.days
                ),
            });
        }
        if raw.sweep_interval_minutes == 0 || raw.sweep_interval_minutes > 24 * 60 {
            return Err(PolicyError::InvalidConfig {
                field: "[retention].sweep_interval_minutes",
                reason: format!(
                    "{} is outside 1..=1440; expired data must be deleted at least daily",
                    raw.sweep_interval_minutes
                ),
            });
        }
        Ok(Self {
            days: raw.days,
            minor_days: raw.minor_days,
            sweep_interval_minutes: raw.sweep_interval_minutes,
        })
    }

    pub fn days(&self) -> u32 {
        self.days
    }
    pub fn minor_days(&self) -> Option<u32> {
        self.minor_days
    }
    /// The period that applies to a subject of this age at consent time.
    pub fn days_for_age(&self, age_years: u8) -> u32 {
        if age_years < MINOR_AGE_YEARS {
            self.minor_days.unwrap_or(self.days).min(self.days)
        } else {
            self.days
        }
    }
    /// The end of the retention period of a consent granted at `granted_at` to a subject of
    /// `age_years`: the one rule every expiry (grant, restore, sweep) is computed by.
    pub fn until(&self, granted_at: UnixMillis, age_years: u8) -> UnixMillis {
        granted_at.plus_days(self.days_for_age(age_years))
    }
    pub fn sweep_interval(&self) -> Duration {
        Duration::from_secs(u64::from(self.sweep_interval_minutes) * 60)
    }
}
