use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Wall-clock time as milliseconds since the Unix epoch (UTC).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct UnixMillis(pub i64);

impl UnixMillis {
    pub const MS_PER_DAY: i64 = 86_400_000;

    /// `self + days`, saturating.
    #[must_use]
    pub fn plus_days(self, days: u32) -> Self {
        Self(self.0.saturating_add(i64::from(days) * Self::MS_PER_DAY))
    }

    /// `self - days`, saturating.
    #[must_use]
    pub fn minus_days(self, days: u32) -> Self {
        Self(self.0.saturating_sub(i64::from(days) * Self::MS_PER_DAY))
    }
}

/// A UTC calendar time (proleptic Gregorian), from [`UnixMillis::utc`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UtcTime {
    pub year: i64,
    pub month: u8,
    pub day: u8,
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
    pub millis: u16,
}

impl UnixMillis {
    /// The UTC calendar time (Howard Hinnant's days-to-civil algorithm).
    pub fn utc(self) -> UtcTime {
        let millis = self.0.rem_euclid(1000) as u16;
        let secs = self.0.div_euclid(1000);
        let days = secs.div_euclid(86_400);
        let sod = secs.rem_euclid(86_400);
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
        let month = (if mp < 10 { mp + 3 } else { mp - 9 }) as u8;
        UtcTime {
            year: yoe + era * 400 + i64::from(month <= 2),
            month,
            day,
            hour: (sod / 3600) as u8,
            minute: (sod % 3600 / 60) as u8,
            second: (sod % 60) as u8,
            millis,
        }
    }

    /// `YYYY-MM-DD HH:MM UTC`, for people.
    pub fn utc_minutes(self) -> String {
        let t = self.utc();
        format!(
            "{:04}-{:02}-{:02} {:02}:{:02} UTC",
            t.year, t.month, t.day, t.hour, t.minute
        )
    }

    /// RFC 3339 in UTC with milliseconds, for machines.
    pub fn rfc3339(self) -> String {
        let t = self.utc();
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            t.year, t.month, t.day, t.hour, t.minute, t.second, t.millis
        )
    }
}

impl fmt::Display for UnixMillis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0)
    }
}

/// The source of wall-clock time for every rule that depends on it (retention, consent, audit).
pub trait Clock: Send + Sync + fmt::Debug {
    fn now(&self) -> UnixMillis;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> UnixMillis {
        let ms = match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
            Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
        };
        UnixMillis(ms)
    }
}

/// A clock that moves only when told to (tests, property tests with clock jumps, replays).
/// Clones share the same time.
#[derive(Debug, Clone, Default)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    pub fn new(start: UnixMillis) -> Self {
        Self(Arc::new(AtomicI64::new(start.0)))
    }

    pub fn set(&self, t: UnixMillis) {
        self.0.store(t.0, Ordering::SeqCst);
    }

    pub fn advance_ms(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> UnixMillis {
        UnixMillis(self.0.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_clones_share_time() {
        let a = ManualClock::new(UnixMillis(1_000));
        let b = a.clone();
        a.advance_ms(UnixMillis::MS_PER_DAY);
        assert_eq!(b.now(), UnixMillis(1_000).plus_days(1));
        b.set(UnixMillis(5));
        assert_eq!(a.now(), UnixMillis(5));
    }

    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(UnixMillis(0).rfc3339(), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            UnixMillis(1_700_000_000_123).rfc3339(),
            "2023-11-14T22:13:20.123Z"
        );
        assert_eq!(
            UnixMillis(951_782_400_000).utc_minutes(),
            "2000-02-29 00:00 UTC"
        );
        assert_eq!(UnixMillis(-1).utc_minutes(), "1969-12-31 23:59 UTC");
        assert!(UnixMillis(i64::MAX).utc_minutes().ends_with("UTC"));
        assert!(UnixMillis(i64::MIN).utc_minutes().ends_with("UTC"));
    }

    #[test]
    fn system_clock_is_after_2025() {
        assert!(SystemClock.now().0 > 1_735_689_600_000);
    }
}
